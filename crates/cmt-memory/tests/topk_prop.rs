//! The fused scan → merge → combine against the brute-force composition (`topk::slow`), on
//! random banks: many exact ties, deletes, k larger than the live count, empty banks,
//! several question groups, f32 and bf16 memories, both kernels, and shards.
use cmt_memory::topk::{self, slow, Kernel};
use cmt_memory::{Error, KeyMatrix, MemView, MemorySource, TopK};
use half::bf16;
use proptest::prelude::*;
use std::collections::HashMap;

struct Mems {
    len: usize,
    f32s: HashMap<u64, Vec<f32>>,
    bf16s: HashMap<u64, Vec<bf16>>,
}

impl MemorySource for Mems {
    fn memory_len(&self) -> usize {
        self.len
    }
    fn memory(&self, id: u64) -> cmt_memory::Result<MemView<'_>> {
        if let Some(v) = self.f32s.get(&id) {
            return Ok(MemView::F32(v));
        }
        self.bf16s
            .get(&id)
            .map(|v| MemView::Bf16(v))
            .ok_or_else(|| Error::Invalid(format!("no memory {id}")))
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

struct Case {
    r: usize,
    keys: Vec<f32>,
    ids: Vec<u64>,
    live: Vec<bool>,
    queries: Vec<f32>,
    mems: Mems,
}

fn build(r: usize, n: usize, nq: usize, ties: bool, del_pct: u64, bf: bool, seed: u64) -> Case {
    let mut g = Rng(seed | 1);
    let val = |g: &mut Rng| {
        if ties {
            ((g.next() % 5) as f32 - 2.0) * 0.5
        } else {
            g.unit()
        }
    };
    let keys: Vec<f32> = (0..n * r).map(|_| val(&mut g)).collect();
    let queries: Vec<f32> = (0..nq * r).map(|_| val(&mut g)).collect();
    let mut ids = Vec::with_capacity(n);
    let mut id = g.next() % 5;
    for _ in 0..n {
        id += 1 + g.next() % 3;
        ids.push(id);
    }
    let live: Vec<bool> = (0..n).map(|_| g.next() % 100 >= del_pct).collect();
    let len = 1 + (g.next() % 20) as usize;
    let mut mems = Mems {
        len,
        f32s: HashMap::new(),
        bf16s: HashMap::new(),
    };
    for &id in &ids {
        let m: Vec<f32> = (0..len).map(|_| g.unit() * 3.0).collect();
        if bf {
            mems.bf16s
                .insert(id, m.iter().map(|&x| bf16::from_f32(x)).collect());
        } else {
            mems.f32s.insert(id, m);
        }
    }
    Case {
        r,
        keys,
        ids,
        live,
        queries,
        mems,
    }
}

fn matrix(c: &Case, rows: impl Iterator<Item = usize>) -> KeyMatrix {
    let mut m = KeyMatrix::new(c.r);
    for i in rows {
        m.push(c.ids[i], &c.keys[i * c.r..(i + 1) * c.r]).unwrap();
        if !c.live[i] {
            m.remove(c.ids[i]);
        }
    }
    m
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
        let scale = w.aggregate.iter().fold(0.0f32, |m, x| m.max(x.abs())) + 1.0;
        for (a, b) in g.aggregate.iter().zip(&w.aggregate) {
            prop_assert!((a - b).abs() <= 1e-5 * scale, "aggregate {a} vs {b}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn fused_matches_brute_force(
        r in 1usize..40,
        n in prop_oneof![0usize..70, 70usize..400, 2000usize..2600],
        nq in prop_oneof![1usize..3, 3usize..30],
        k in 1usize..=64,
        tau in 0.05f32..2.0,
        ties: bool,
        del_pct in prop_oneof![Just(0u64), 0u64..60, Just(100u64)],
        bf: bool,
        shards in 1usize..4,
        seed: u64,
    ) {
        let c = build(r, n, nq, ties, del_pct, bf, seed);
        let want = slow::search_slow(&c.keys, r, &c.ids, &c.live, &c.queries, k, tau, &c.mems);
        let km = matrix(&c, 0..n);
        for kernel in [Kernel::Auto, Kernel::Portable] {
            let got = topk::scan_with(&km, &c.queries, k, "test", kernel)
                .and_then(|cand| topk::combine(&cand, tau, &c.mems));
            match (&got, &want) {
                (Ok(g), Ok(w)) => {
                    let live = c.live.iter().filter(|&&l| l).count();
                    for t in g {
                        prop_assert_eq!(t.ids.len(), k.min(live));
                        prop_assert!(t.ids.iter().all(|id| c.live[c.ids.binary_search(id).unwrap()]));
                    }
                    assert_same(g, w)?;
                }
                (Err(Error::Empty { .. }), Err(Error::Empty { .. })) => {
                    prop_assert!(c.live.iter().all(|&l| !l));
                }
                _ => prop_assert!(false, "fused {:?} vs reference {:?}", got.err(), want.err()),
            }
        }
        // Shards by row residue: each returns its own top-k, the merge is the global top-k.
        if let Ok(w) = &want {
            let parts: Vec<_> = (0..shards)
                .map(|s| matrix(&c, (0..n).filter(move |i| i % shards == s)))
                .filter(|m| m.live_count() > 0)
                .map(|m| topk::scan(&m, &c.queries, k, "shard").unwrap())
                .collect();
            let merged = topk::merge(&parts, k).unwrap();
            let got = topk::combine(&merged, tau, &c.mems).unwrap();
            assert_same(&got, w)?;
        }
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let c = build(4, 10, 1, false, 0, false, 7);
    let km = matrix(&c, 0..10);
    assert!(matches!(
        topk::scan(&km, &c.queries, 0, "b"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        topk::scan(&km, &c.queries, 65, "b"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        topk::scan(&km, &c.queries[..3], 1, "b"),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        topk::scan(&km, &[], 1, "b"),
        Err(Error::Invalid(_))
    ));
    let nan = [f32::NAN, 0.0, 0.0, 0.0];
    assert!(matches!(
        topk::scan(&km, &nan, 1, "b"),
        Err(Error::Invalid(_))
    ));
    let cand = topk::scan(&km, &c.queries, 3, "b").unwrap();
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            topk::combine(&cand, tau, &c.mems),
            Err(Error::Invalid(_))
        ));
    }
    let empty = KeyMatrix::new(4);
    let e = topk::scan(&empty, &c.queries, 3, "/banks/b").unwrap_err();
    assert_eq!(
        e.to_string(),
        "memory bank /banks/b: no live entries to search"
    );
}
