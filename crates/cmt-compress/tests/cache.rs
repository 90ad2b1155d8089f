//! The on-disk hidden-state cache: round trip, reopen, commits and readers, the writer
//! lock, key separation, damage (truncation, bad magic, flipped bytes) reported with file
//! and offset, and encode-with-cache against a fresh encode.
mod enc_common;
use cmt_compress::cache::{CacheKey, HiddenCache, DATA_FILE};
use cmt_compress::encode::{Chunking, EncodeOptions, Encoder, HiddenLayer, Progress};
use cmt_compress::Error;
use enc_common::{bits_equal, doc, require, tiny_model};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const D: usize = 24;

fn key(layer: HiddenLayer) -> CacheKey {
    CacheKey {
        model_hash: "tiny-model-7".into(),
        layer,
        chunking: Chunking::new(8, 2).unwrap(),
        d: D,
    }
}

fn rows(n: usize, seed: u32) -> Vec<f32> {
    (0..n * D)
        .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 * 1e-9 - 2.0)
        .collect()
}

fn data_path(root: &Path, k: &CacheKey) -> PathBuf {
    root.join(k.dir_name()).join(DATA_FILE)
}

/// A cache holding three committed entries; returns (ids, rows) per entry.
fn filled(root: &Path) -> Vec<(Vec<u32>, Vec<f32>)> {
    let mut c = HiddenCache::open_writer(root, &key(HiddenLayer::FinalNorm)).unwrap();
    let entries: Vec<(Vec<u32>, Vec<f32>)> = [(3usize, 1u32), (8, 2), (1, 3)]
        .iter()
        .map(|&(n, s)| (doc(n, s as usize, 61), rows(n, s)))
        .collect();
    for (ids, r) in &entries {
        c.insert(ids, r).unwrap();
    }
    c.commit().unwrap();
    entries
}

fn format_err(e: Error) -> (PathBuf, String) {
    match e {
        Error::Format { path, msg } => (path, msg),
        other => panic!("expected a format error, got {other}"),
    }
}

#[test]
fn round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let entries = filled(dir.path());
    for reopen in [false, true] {
        let mut c = if reopen {
            HiddenCache::open_reader(dir.path(), &key(HiddenLayer::FinalNorm)).unwrap()
        } else {
            HiddenCache::open_writer(dir.path(), &key(HiddenLayer::FinalNorm)).unwrap()
        };
        assert_eq!(c.len(), 3);
        c.verify().unwrap();
        for (ids, r) in &entries {
            let got = c.get(ids).unwrap().expect("entry present");
            assert!(bits_equal(got, r));
        }
        assert!(c.get(&doc(4, 99, 61)).unwrap().is_none());
        // Same tokens minus one: another chunk.
        assert!(c.get(&entries[0].0[..2]).unwrap().is_none());
    }
}

#[test]
fn inserts_are_visible_after_commit_and_readers_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(HiddenLayer::FinalNorm);
    let mut w = HiddenCache::open_writer(dir.path(), &k).unwrap();
    let mut r = HiddenCache::open_reader(dir.path(), &k).unwrap();
    let ids = doc(5, 1, 61);
    w.insert(&ids, &rows(5, 1)).unwrap();
    w.insert(&ids, &rows(5, 1)).unwrap(); // duplicate: skipped
    assert!(w.get(&ids).unwrap().is_none(), "not committed yet");
    // A reader opened mid-append sees the committed state and no error.
    let mut mid = HiddenCache::open_reader(dir.path(), &k).unwrap();
    assert!(mid.is_empty() && mid.get(&ids).unwrap().is_none());
    w.commit().unwrap();
    assert_eq!(w.len(), 1);
    assert!(bits_equal(w.get(&ids).unwrap().unwrap(), &rows(5, 1)));
    assert!(
        r.get(&ids).unwrap().is_none(),
        "the reader's view predates the commit"
    );
    r.refresh().unwrap();
    assert!(bits_equal(r.get(&ids).unwrap().unwrap(), &rows(5, 1)));
    let e = w.insert(&ids[..2], &rows(3, 1)).unwrap_err().to_string();
    assert!(e.contains("for 2 tokens"), "{e}");
    let e = r
        .insert(&doc(2, 2, 61), &rows(2, 2))
        .unwrap_err()
        .to_string();
    assert!(e.contains("read-only"), "{e}");
}

#[test]
fn one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(HiddenLayer::FinalNorm);
    let w = HiddenCache::open_writer(dir.path(), &k).unwrap();
    match HiddenCache::open_writer(dir.path(), &k) {
        Err(Error::Locked { path }) => assert!(path.ends_with("LOCK"), "{path:?}"),
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    HiddenCache::open_reader(dir.path(), &k).unwrap();
    drop(w);
    HiddenCache::open_writer(dir.path(), &k).unwrap();
}

#[test]
fn keys_are_separated_and_foreign_caches_refused() {
    let dir = tempfile::tempdir().unwrap();
    let entries = filled(dir.path());
    let final_key = key(HiddenLayer::FinalNorm);
    let mut others = vec![key(HiddenLayer::Residual(2))];
    others.push(CacheKey {
        model_hash: "another-model".into(),
        ..final_key.clone()
    });
    others.push(CacheKey {
        chunking: Chunking::new(8, 0).unwrap(),
        ..final_key.clone()
    });
    for k in &others {
        assert_ne!(k.dir_name(), final_key.dir_name());
        let mut c = HiddenCache::open_writer(dir.path(), k).unwrap();
        assert!(c.is_empty(), "{k:?} sees another key's entries");
        assert!(c.get(&entries[0].0).unwrap().is_none());
    }
    // A directory built for one key, put where another key's cache belongs: refused.
    let foreign = key(HiddenLayer::Residual(1));
    std::fs::rename(
        dir.path().join(final_key.dir_name()),
        dir.path().join(foreign.dir_name()),
    )
    .unwrap();
    let e = HiddenCache::open_reader(dir.path(), &foreign)
        .err()
        .unwrap();
    let (path, msg) = format_err(e);
    assert!(path.ends_with(DATA_FILE));
    assert!(msg.contains("layer is 4294967295, expected 1"), "{msg}");
    let e = HiddenCache::open_writer(dir.path(), &foreign)
        .err()
        .unwrap();
    assert!(format_err(e).1.contains("refusing to reuse"));
}

#[test]
fn damage_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(HiddenLayer::FinalNorm);
    let entries = filled(dir.path());
    let path = data_path(dir.path(), &k);
    let good = std::fs::read(&path).unwrap();
    let restore = || std::fs::write(&path, &good).unwrap();
    let flip = |at: usize| {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[good[at] ^ 0x10], at as u64).unwrap();
    };
    let open_err = || format_err(HiddenCache::open_reader(dir.path(), &k).err().unwrap());

    // Truncation inside the committed records.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(good.len() as u64 - 10).unwrap();
    let (p, msg) = open_err();
    assert_eq!(p, path);
    assert!(
        msg.contains(&format!("offset {}", good.len() - 10)) && msg.contains("truncated"),
        "{msg}"
    );
    // Truncation inside the header.
    f.set_len(100).unwrap();
    assert!(open_err().1.contains("offset 100"));
    restore();

    flip(0);
    let msg = open_err().1;
    assert!(
        msg.contains("offset 0") && msg.contains("bad magic"),
        "{msg}"
    );
    restore();

    flip(13); // hidden size inside the checksummed header
    let msg = open_err().1;
    assert!(
        msg.contains("offset 288") && msg.contains("header checksum"),
        "{msg}"
    );
    restore();

    // A flipped byte in the second record's rows: open works (headers are fine), reading
    // that record names its offset.
    let rec1 = 1024 + 48 + 3 * D * 4;
    flip(rec1 + 48 + 17);
    let mut c = HiddenCache::open_reader(dir.path(), &k).unwrap();
    assert!(bits_equal(
        c.get(&entries[0].0).unwrap().unwrap(),
        &entries[0].1
    ));
    let (p, msg) = format_err(c.get(&entries[1].0).unwrap_err());
    assert_eq!(p, path);
    assert!(
        msg.contains(&format!("offset {rec1}")) && msg.contains("checksum"),
        "{msg}"
    );
    let msg = format_err(c.verify().unwrap_err()).1;
    assert!(msg.contains(&format!("offset {rec1}")), "{msg}");
    restore();

    // A flipped record magic: the index scan stops there.
    flip(rec1);
    let msg = open_err().1;
    assert!(
        msg.contains(&format!("offset {rec1}")) && msg.contains("record magic"),
        "{msg}"
    );
    restore();

    // Both commit slots damaged.
    flip(512);
    flip(544);
    let msg = open_err().1;
    assert!(msg.contains("commit slots"), "{msg}");
    restore();
    HiddenCache::open_reader(dir.path(), &k)
        .unwrap()
        .verify()
        .unwrap();
}

#[test]
fn an_interrupted_append_is_cut_off_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(HiddenLayer::FinalNorm);
    let entries = filled(dir.path());
    let path = data_path(dir.path(), &k);
    let committed = std::fs::metadata(&path).unwrap().len();
    // Bytes past the committed length, as left by a writer killed mid-append.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"HREC\x05\0\0\0 torn", committed).unwrap();
    let mut r = HiddenCache::open_reader(dir.path(), &k).unwrap();
    assert_eq!(r.len(), 3);
    assert!(bits_equal(
        r.get(&entries[2].0).unwrap().unwrap(),
        &entries[2].1
    ));
    let mut w = HiddenCache::open_writer(dir.path(), &k).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), committed);
    w.insert(&doc(6, 9, 61), &rows(6, 9)).unwrap();
    w.commit().unwrap();
    drop(w);
    let mut r = HiddenCache::open_reader(dir.path(), &k).unwrap();
    assert_eq!(r.len(), 4);
    r.verify().unwrap();
}

fn tiny_encoder_opts() -> EncodeOptions {
    EncodeOptions {
        layer: HiddenLayer::FinalNorm,
        chunking: Chunking::new(8, 2).unwrap(),
        max_batch_tokens: 24,
        batch_invariant: true,
        progress: Progress::Never,
    }
}

#[test]
fn encode_with_cache_hits_give_the_fresh_bits() {
    let m = tiny_model(7);
    let enc = Encoder::new(&m, tiny_encoder_opts()).unwrap();
    let k = CacheKey::for_encoder("tiny-model-7", &enc);
    assert_eq!(k, key(HiddenLayer::FinalNorm));
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<Vec<u32>> = [3usize, 20, 9, 1, 30]
        .iter()
        .map(|&n| doc(n, n, 61))
        .collect();
    let fresh = enc.encode(&docs).unwrap();
    let mut c = HiddenCache::open_writer(dir.path(), &k).unwrap();
    let (first, s1) = enc.encode_cached(&docs[..3], &mut c).unwrap();
    assert_eq!(s1.hits, 0);
    assert_eq!(s1.misses, first.num_chunks());
    // Some chunks seen, some new; then everything seen.
    let (second, s2) = enc.encode_cached(&docs, &mut c).unwrap();
    assert_eq!(s2.hits, first.num_chunks());
    assert_eq!(s2.hits + s2.misses, fresh.num_chunks());
    assert_eq!(second, fresh);
    assert!(bits_equal(&second.h, &fresh.h));
    drop(c);
    let mut r = HiddenCache::open_reader(dir.path(), &k).unwrap();
    let (third, s3) = enc.encode_cached(&docs, &mut r).unwrap();
    assert_eq!((s3.hits, s3.misses), (fresh.num_chunks(), 0));
    assert!(bits_equal(&third.h, &fresh.h));
    // A read-only cache cannot take the misses.
    let e = enc
        .encode_cached(&[doc(5, 77, 61)], &mut r)
        .unwrap_err()
        .to_string();
    assert!(e.contains("read-only"), "{e}");
    // A cache of another layer is not used for this encoder.
    let mut other = HiddenCache::open_writer(dir.path(), &key(HiddenLayer::Residual(1))).unwrap();
    let e = enc
        .encode_cached(&docs, &mut other)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cache opened for"), "{e}");
}

#[test]
fn default_model_cache_hits_are_bit_identical() {
    let m = require!(enc_common::default_model(), "default model");
    let opts = EncodeOptions {
        chunking: Chunking::new(64, 16).unwrap(),
        max_batch_tokens: 256,
        progress: Progress::Never,
        ..EncodeOptions::default()
    };
    let enc = Encoder::new(&m.model, opts).unwrap();
    let docs: Vec<Vec<u32>> = (0..3).map(|i| doc(100 + 30 * i, i, 49152)).collect();
    let fresh = enc.encode(&docs).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = CacheKey::for_encoder(cmt_runtime::fetch::DEFAULT_SHA256, &enc);
    let mut c = HiddenCache::open_writer(dir.path(), &k).unwrap();
    let (a, sa) = enc.encode_cached(&docs[1..], &mut c).unwrap();
    assert_eq!(sa.hits, 0);
    assert!(a.num_chunks() > 2);
    let (b, sb) = enc.encode_cached(&docs, &mut c).unwrap();
    assert_eq!(sb.hits, a.num_chunks());
    assert!(bits_equal(&b.h, &fresh.h));
    assert_eq!(b.lens, fresh.lens);
}
