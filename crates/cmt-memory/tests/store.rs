//! The store's behaviour without faults: round trips, batches, segment roll-over, deletes,
//! compaction, locking, readers beside the writer, and search over a bank.
mod common;
use cmt_memory::topk::slow;
use cmt_memory::{Bank, Error, Expect, MemDtype, MemView, NewEntry, OpenOptions, Verify};
use common::*;

#[test]
fn append_get_reopen_both_dtypes() {
    for dtype in [MemDtype::F32, MemDtype::Bf16] {
        let dir = tempfile::tempdir().unwrap();
        let mut bank = Bank::create(dir.path(), &config(3, 5, 7, dtype)).unwrap();
        let ids = append_n(&mut bank, 10);
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        check_all(&bank, &ids);
        drop(bank);
        for verify in [Verify::Full, Verify::Heads] {
            let opts = OpenOptions {
                verify,
                ..Default::default()
            };
            let bank = Bank::open(dir.path(), &opts).unwrap();
            check_all(&bank, &ids);
            let s = bank.stats();
            assert_eq!(
                (s.live, s.records, s.deleted, s.mem_dtype),
                (10, 10, 0, dtype)
            );
            assert_eq!(s.base_model_hash, HASH);
        }
    }
}

#[test]
fn metadata_is_cut_at_a_char_boundary_and_bad_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = Bank::create(dir.path(), &config(1, 2, 3, MemDtype::F32)).unwrap();
    let long = "é".repeat(30); // 60 bytes, the title field holds 40
    let e = NewEntry {
        key: &[1.0, 2.0, 3.0],
        memory: MemView::F32(&[4.0, 5.0]),
        source: "s",
        title: &long,
        timestamp: 0,
        text_hash: [0; 32],
    };
    let id = bank.append(&e).unwrap();
    assert_eq!(bank.get(id).unwrap().unwrap().title, "é".repeat(20));
    for bad in [
        NewEntry {
            key: &[1.0, 2.0],
            ..e
        },
        NewEntry {
            memory: MemView::F32(&[1.0]),
            ..e
        },
        NewEntry {
            key: &[1.0, f32::NAN, 3.0],
            ..e
        },
        NewEntry {
            memory: MemView::F32(&[f32::INFINITY, 0.0]),
            ..e
        },
    ] {
        assert!(matches!(bank.append(&bad), Err(Error::Invalid(_))));
    }
    assert_eq!(bank.stats().records, 1);
}

#[test]
fn batches_roll_over_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2, 4, 8, MemDtype::Bf16);
    cfg.segment_capacity = 3;
    let mut bank = Bank::create(dir.path(), &cfg).unwrap();
    let owned: Vec<Owned> = (1..=11).map(|id| Owned::new(id, &bank)).collect();
    let entries: Vec<NewEntry> = owned.iter().map(Owned::entry).collect();
    let ids = bank.append_batch(&entries).unwrap();
    assert_eq!(ids, (1..=11).collect::<Vec<_>>());
    let more = append_n(&mut bank, 2);
    assert_eq!(bank.stats().segments, 5);
    drop(bank);
    let bank = Bank::open_reader(dir.path()).unwrap();
    check_all(&bank, &ids);
    check_all(&bank, &more);
    assert_eq!(bank.stats().segments, 5);
}

#[test]
fn deletes_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2, 3, 4, MemDtype::F32);
    cfg.segment_capacity = 4;
    let mut bank = Bank::create(dir.path(), &cfg).unwrap();
    let ids = append_n(&mut bank, 12);
    assert!(bank.delete(3).unwrap());
    assert!(!bank.delete(3).unwrap());
    assert!(!bank.delete(999).unwrap());
    assert_eq!(bank.delete_batch(&[5, 6, 6, 12, 1000]).unwrap(), 3);
    assert!(bank.get(3).unwrap().is_none());
    let live: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|i| ![3, 5, 6, 12].contains(i))
        .collect();
    assert_eq!(bank.live_ids(), live);
    let q: Vec<f32> = common::content(3, 4, 0).0; // the deleted entry's own key
    let before = bank.search(&q, 64, 0.5).unwrap();
    assert!(!before[0].ids.contains(&3) && before[0].ids.len() == live.len());

    let reader = Bank::open_reader(dir.path()).unwrap(); // a snapshot of generation 1
    let st = bank.compact().unwrap();
    assert_eq!((st.live, st.removed), (8, 4));
    assert!(st.bytes_after < st.bytes_before);
    let s = bank.stats();
    assert_eq!(
        (s.generation, s.records, s.deleted, s.segments),
        (2, 8, 0, 2)
    );
    assert_eq!(bank.search(&q, 64, 0.5).unwrap(), before);
    check_all(&bank, &live);
    // Ids are never reused, even though the highest one (12) was compacted away.
    assert_eq!(bank.next_id(), 13);
    drop(bank);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("seg-00000001-") && !n.starts_with("tomb-00000001")),
        "{names:?}"
    );
    let mut bank = Bank::open_writer(dir.path()).unwrap();
    assert_eq!(bank.append(&Owned::new(13, &bank).entry()).unwrap(), 13);
    // The old reader still serves its snapshot from the unlinked files.
    check_all(&reader, &[1, 2, 4, 11]);
    assert!(reader.get(12).unwrap().is_none());
}

#[test]
fn one_writer_many_readers() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Bank::create(dir.path(), &config(1, 4, 4, MemDtype::F32)).unwrap();
    let ids = append_n(&mut w, 3);
    let err = Bank::open_writer(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }));
    let lock = dir.path().join("LOCK");
    assert!(
        err.to_string().contains(&lock.display().to_string()),
        "{err}"
    );
    assert_eq!(w.lock_path(), Some(lock.as_path()));
    let mut r = Bank::open_reader(dir.path()).unwrap();
    assert!(matches!(
        r.append(&Owned::new(9, &r).entry()),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(r.delete(1), Err(Error::ReadOnly { .. })));
    check_all(&r, &ids);
    let more = append_n(&mut w, 2);
    w.delete(1).unwrap();
    assert_eq!(r.live_count(), 3);
    r.refresh().unwrap();
    assert_eq!(r.live_count(), 4);
    check_all(&r, &more);
    drop(w);
    Bank::open_writer(dir.path()).unwrap();
}

#[test]
fn expectations_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    drop(Bank::create(dir.path(), &config(2, 3, 4, MemDtype::Bf16)).unwrap());
    let open = |t, d, r, h: &str| {
        let opts = OpenOptions {
            expect: Some(Expect {
                t,
                d,
                r,
                base_model_hash: h.into(),
            }),
            ..Default::default()
        };
        Bank::open(dir.path(), &opts)
    };
    open(2, 3, 4, HASH).unwrap();
    let header = dir.path().join("HEADER").display().to_string();
    for (res, off, field) in [
        (open(4, 3, 4, HASH), 16, "T"),
        (open(2, 6, 4, HASH), 20, "D"),
        (open(2, 3, 8, HASH), 24, "r"),
        (open(2, 3, 4, "another-model"), 96, "base-model hash"),
    ] {
        let e = res.unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, Error::Mismatch { .. }), "{s}");
        assert!(
            s.starts_with(&format!(
                "{header}: at byte offset {off}: bank was written with {field} = "
            )),
            "{s}"
        );
    }
    assert!(Bank::create(dir.path(), &config(2, 3, 4, MemDtype::F32)).is_err());
}

#[test]
fn bank_search_matches_reference_and_backward_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2, 3, 8, MemDtype::Bf16);
    cfg.segment_capacity = 7;
    let mut bank = Bank::create(dir.path(), &cfg).unwrap();
    let ids = append_n(&mut bank, 40);
    bank.delete_batch(&[2, 9, 33]).unwrap();
    let keys: Vec<f32> = ids
        .iter()
        .flat_map(|&id| common::content(id, 8, 0).0)
        .collect();
    let live: Vec<bool> = ids.iter().map(|id| ![2, 9, 33].contains(id)).collect();
    let queries: Vec<f32> = [5u64, 9, 100]
        .iter()
        .flat_map(|&i| common::content(i, 8, 0).0)
        .collect();
    let got = bank.search(&queries, 5, 0.25).unwrap();
    let want = slow::search_slow(&keys, 8, &ids, &live, &queries, 5, 0.25, &bank).unwrap();
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.ids, &g.scores), (&w.ids, &w.scores));
        assert!(g
            .aggregate
            .iter()
            .zip(&w.aggregate)
            .all(|(a, b)| (a - b).abs() < 1e-5));
    }
    let d_a = vec![1.0f32; 6];
    let g = bank.backward(&queries[..8], &got[0], 0.25, &d_a).unwrap();
    assert_eq!((g.d_query.len(), g.d_memories.len()), (8, 5));
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = Bank::create(empty_dir.path(), &cfg).unwrap();
    let e = empty.search(&queries, 5, 0.25).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
}

#[test]
fn search_where_equals_the_brute_force_over_the_kept_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2, 3, 8, MemDtype::F32);
    cfg.segment_capacity = 7;
    let mut bank = Bank::create(dir.path(), &cfg).unwrap();
    let ids = append_n(&mut bank, 30);
    bank.delete_batch(&[4, 20]).unwrap();
    let keys: Vec<f32> = ids
        .iter()
        .flat_map(|&id| common::content(id, 8, 0).0)
        .collect();
    let queries: Vec<f32> = [3u64, 17]
        .iter()
        .flat_map(|&i| common::content(i, 8, 0).0)
        .collect();
    // Timestamps are 1_700_000_000 + id: keep ids 6..=25 (minus the deleted 20).
    let (lo, hi) = (1_700_000_006, 1_700_000_025);
    let got = bank
        .search_where(&queries, 4, 0.5, |m| m.timestamp >= lo && m.timestamp <= hi)
        .unwrap();
    let live: Vec<bool> = ids
        .iter()
        .map(|&id| (6..=25).contains(&id) && id != 20)
        .collect();
    let want = slow::search_slow(&keys, 8, &ids, &live, &queries, 4, 0.5, &bank).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((&g.ids, &g.scores), (&w.ids, &w.scores));
    }
    // Keeping everything is the plain search; keeping nothing is an empty bank.
    assert_eq!(
        bank.search_where(&queries, 4, 0.5, |_| true).unwrap(),
        bank.search(&queries, 4, 0.5).unwrap()
    );
    let e = bank.search_where(&queries, 4, 0.5, |_| false).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    // Metadata of live entries only.
    let metas = bank.live_metas().unwrap();
    assert_eq!(metas.len(), 28);
    assert!(metas.iter().all(|m| m.id != 4 && m.id != 20));
    assert_eq!(
        bank.meta(5).unwrap().unwrap().title,
        Owned::new(5, &bank).title
    );
    assert!(bank.meta(4).unwrap().is_none());
}
