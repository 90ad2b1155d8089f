//! The bank's search on the device (cmt_memory::topk::device::DeviceBank: kernels/
//! topk_aggregate.cu over an uploaded copy of a bank) against the bank's own CPU search, on
//! the emulator: same entries selected in the same order, same scores, weights and
//! aggregated memory, for f32 and bf16 keys and memories, with deleted entries, ties, and an
//! empty bank refused alike.
use cmt_kernel_check::emu::Emu;
use cmt_memory::topk::device::DeviceBank;
use cmt_memory::{Bank, BankConfig, Error, KeyDtype, MemDtype, MemView, NewEntry};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn bank(dir: &std::path::Path, keys: KeyDtype, mem: MemDtype, n: usize, ties: bool) -> Bank {
    let (t, d, r) = (3, 8, 16);
    let mut cfg = BankConfig::new(t, d, r, mem, "test-model");
    cfg.key_dtype = keys;
    let mut b = Bank::create(dir, &cfg).unwrap();
    let mut rng = Rng(7);
    for i in 0..n {
        // With ties, keys take few distinct values so that many entries score alike.
        let key: Vec<f32> = (0..r)
            .map(|_| {
                if ties {
                    (rng.next() * 2.0).round()
                } else {
                    rng.next()
                }
            })
            .collect();
        let m: Vec<f32> = (0..t * d).map(|_| rng.next()).collect();
        b.append(&NewEntry {
            key: &key,
            memory: MemView::F32(&m),
            source: "s",
            title: &format!("doc {i}"),
            timestamp: 0,
            text_hash: [0; 32],
        })
        .unwrap();
    }
    // Delete every fifth entry: the scan must skip them.
    for id in (1..=n as u64).step_by(5) {
        b.delete(id).unwrap();
    }
    b
}

fn same_search(keys: KeyDtype, mem: MemDtype, n: usize, k: usize, ties: bool) {
    let dir = tempfile::tempdir().unwrap();
    let b = bank(dir.path(), keys, mem, n, ties);
    let mut rng = Rng(99);
    let queries: Vec<f32> = (0..3 * 16).map(|_| rng.next()).collect();
    let tau = 0.7;
    let want = b.search(&queries, k, tau).unwrap();
    let dev = DeviceBank::upload(Emu, &b).unwrap();
    let got = dev.search(&queries, k, tau).unwrap();
    assert_eq!(got.len(), want.len());
    for (q, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.ids, w.ids, "question {q}: selected entries");
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-5 + 1e-5 * y.abs(),
                    "question {q} {what}: {x} vs {y}"
                );
            }
        };
        close(&g.scores, &w.scores, "scores");
        close(&g.weights, &w.weights, "weights");
        close(&g.aggregate, &w.aggregate, "aggregate");
    }
}

#[test]
fn device_search_matches_the_bank_f32() {
    same_search(KeyDtype::F32, MemDtype::F32, 300, 4, false);
}

#[test]
fn device_search_matches_the_bank_bf16_keys_and_memories_with_ties() {
    same_search(KeyDtype::Bf16, MemDtype::Bf16, 537, 7, true);
}

#[test]
fn device_search_of_an_empty_bank_is_refused_as_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let b = bank(dir.path(), KeyDtype::F32, MemDtype::Bf16, 1, false);
    let q = vec![0.5f32; 16];
    assert!(matches!(b.search(&q, 2, 1.0), Err(Error::Empty { .. })));
    let dev = DeviceBank::upload(Emu, &b).unwrap();
    assert!(matches!(dev.search(&q, 2, 1.0), Err(Error::Empty { .. })));
}
