//! bf16 keys: the fused scan over a bf16 key matrix (AVX-512 widening on the fly and the
//! portable kernel) against the brute force over the same keys rounded to bf16 by
//! `half::bf16` (round to nearest even), and a bank created with bf16 keys: the header keeps
//! the dtype across reopen and compaction, records hold the rounded keys, a search equals
//! the brute force, a key beyond bf16's range is refused before anything is written.
mod common;

use cmt_memory::topk::{self, slow, Kernel};
use cmt_memory::{
    Bank, Error, KeyDtype, KeyMatrix, MemDtype, MemView, MemorySource, NewEntry, TopK,
};
use half::bf16;
use proptest::prelude::*;

struct Mems {
    len: usize,
    ids: Vec<u64>,
    data: Vec<f32>,
}

impl MemorySource for Mems {
    fn memory_len(&self) -> usize {
        self.len
    }
    fn memory(&self, id: u64) -> cmt_memory::Result<MemView<'_>> {
        let row = self
            .ids
            .binary_search(&id)
            .map_err(|_| Error::Invalid(format!("no memory {id}")))?;
        Ok(MemView::F32(
            &self.data[row * self.len..(row + 1) * self.len],
        ))
    }
}

/// xorshift; values in [-1, 1) with 23 random mantissa bits (most round in bf16), or a few
/// small integers when `ties`.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn val(&mut self, ties: bool) -> f32 {
        if ties {
            (self.next() % 5) as f32 - 2.0
        } else {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }
}

fn rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

fn assert_same(got: &[TopK], want: &[TopK]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        prop_assert_eq!(&g.ids, &w.ids);
        prop_assert_eq!(&g.scores, &w.scores);
        for (a, b) in g.weights.iter().zip(&w.weights) {
            prop_assert!(
                (a - b).abs() <= 1e-6,
                "weights {:?} vs {:?}",
                g.weights,
                w.weights
            );
        }
        for (a, b) in g.aggregate.iter().zip(&w.aggregate) {
            prop_assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "aggregate {a} vs {b}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn bf16_scan_matches_brute_force_on_rounded_keys(
        r in 1usize..40,
        n in prop_oneof![1usize..70, 70usize..400, 1000usize..1300],
        nq in prop_oneof![1usize..3, 3usize..20],
        k in 1usize..=64,
        tau in 0.05f32..2.0,
        ties: bool,
        del_pct in prop_oneof![Just(0u64), 0u64..60],
        shards in 1usize..3,
        seed: u64,
    ) {
        let mut g = Rng(seed | 1);
        let keys: Vec<f32> = (0..n * r).map(|_| g.val(ties)).collect();
        let queries: Vec<f32> = (0..nq * r).map(|_| g.val(ties)).collect();
        let ids: Vec<u64> = (0..n as u64).map(|i| 3 * i + 1 + g.next() % 3).collect();
        let live: Vec<bool> = (0..n).map(|_| g.next() % 100 >= del_pct).collect();
        let len = 1 + (g.next() % 17) as usize;
        let mems = Mems { len, ids: ids.clone(), data: (0..n * len).map(|_| g.val(false)).collect() };
        let matrix = |rows: &mut dyn Iterator<Item = usize>| {
            let mut m = KeyMatrix::with_dtype(r, n, KeyDtype::Bf16);
            for i in rows {
                m.push(ids[i], &keys[i * r..(i + 1) * r]).unwrap();
                if !live[i] {
                    m.remove(ids[i]);
                }
            }
            m
        };
        let km = matrix(&mut (0..n));
        prop_assert_eq!(km.key(n - 1), rounded(&keys[(n - 1) * r..]));
        let want = slow::search_slow(&rounded(&keys), r, &ids, &live, &queries, k, tau, &mems);
        for kernel in [Kernel::Auto, Kernel::Portable] {
            let got = topk::scan_with(&km, &queries, k, "bf16", kernel)
                .and_then(|c| topk::combine(&c, tau, &mems));
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_same(g, w)?,
                (Err(Error::Empty { .. }), Err(Error::Empty { .. })) => {}
                _ => prop_assert!(false, "fused {:?} vs reference {:?}", got.err(), want.err()),
            }
        }
        if let Ok(w) = &want {
            let parts: Vec<_> = (0..shards)
                .map(|s| matrix(&mut (0..n).filter(|i| i % shards == s)))
                .filter(|m| m.live_count() > 0)
                .map(|m| topk::scan(&m, &queries, k, "shard").unwrap())
                .collect();
            let got = topk::combine(&topk::merge(&parts, k).unwrap(), tau, &mems).unwrap();
            assert_same(&got, w)?;
        }
    }
}

#[test]
fn bank_with_bf16_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (r, t, d) = (20, 2, 3);
    let mut cfg = common::config(t, d, r, MemDtype::F32);
    cfg.key_dtype = KeyDtype::Bf16;
    let mut bank = Bank::create(dir.path(), &cfg).unwrap();
    let mut g = Rng(99);
    let mut keys = Vec::new();
    let mut mems = Vec::new();
    for _ in 0..300 {
        keys.push((0..r).map(|_| g.val(false)).collect::<Vec<f32>>());
        mems.push((0..t * d).map(|_| g.val(false)).collect::<Vec<f32>>());
    }
    let entries: Vec<NewEntry> = keys
        .iter()
        .zip(&mems)
        .map(|(k, m)| NewEntry {
            key: k,
            memory: MemView::F32(m),
            source: "s",
            title: "t",
            timestamp: 1,
            text_hash: [0; 32],
        })
        .collect();
    let ids = bank.append_batch(&entries).unwrap();
    // Beyond bf16's range: refused before the append, the bank unchanged.
    let mut huge = keys[0].clone();
    huge[3] = f32::MAX;
    let e = bank
        .append(&NewEntry {
            key: &huge,
            ..entries[0]
        })
        .unwrap_err();
    assert!(
        e.to_string().contains("overflows the bank's bf16 keys"),
        "{e}"
    );
    assert_eq!(bank.live_count(), 300);
    bank.delete_batch(&ids[10..20]).unwrap();
    bank.compact().unwrap();
    drop(bank);

    let bank = Bank::open_reader(dir.path()).unwrap();
    assert_eq!(bank.stats().key_dtype, KeyDtype::Bf16);
    assert_eq!(bank.keys().dtype(), KeyDtype::Bf16);
    assert_eq!(
        bank.get(ids[5]).unwrap().unwrap().key,
        rounded(&keys[5]).as_slice()
    );
    let live: Vec<bool> = (0..300).map(|i| !(10..20).contains(&i)).collect();
    let flat: Vec<f32> = keys.iter().flat_map(|k| rounded(k)).collect();
    let src = Mems {
        len: t * d,
        ids: ids.clone(),
        data: mems.concat(),
    };
    let queries: Vec<f32> = (0..3 * r).map(|_| g.val(false)).collect();
    let got = bank.search(&queries, 7, 0.3).unwrap();
    let want = slow::search_slow(&flat, r, &ids, &live, &queries, 7, 0.3, &src).unwrap();
    assert_same(&got, &want).unwrap();
}
