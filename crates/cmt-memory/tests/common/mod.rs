//! Helpers shared by the store tests: deterministic entries derived from their id, so any
//! entry read back can be checked without remembering what was written.
#![allow(dead_code)]
use cmt_memory::{Bank, BankConfig, EntryRef, MemDtype, MemView, NewEntry};
use std::path::Path;

pub const HASH: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

pub fn config(t: usize, d: usize, r: usize, dtype: MemDtype) -> BankConfig {
    let mut c = BankConfig::new(t, d, r, dtype, HASH);
    c.source_max = 24;
    c.title_max = 40;
    c
}

/// Key and memory of entry `id` (values exactly representable in bf16).
pub fn content(id: u64, r: usize, len: usize) -> (Vec<f32>, Vec<f32>) {
    let f = |i: usize, salt: u64| {
        let h = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (i as u64 + salt).wrapping_mul(0xBF58_476D_1CE4_E5B9))
            >> 56;
        (h as f32 - 128.0) / 64.0
    };
    (
        (0..r).map(|i| f(i, 1)).collect(),
        (0..len).map(|i| f(i, 7777)).collect(),
    )
}

pub struct Owned {
    pub key: Vec<f32>,
    pub mem: Vec<f32>,
    pub title: String,
    pub hash: [u8; 32],
    pub id: u64,
}

impl Owned {
    pub fn new(id: u64, bank: &Bank) -> Self {
        let s = bank.stats();
        let (key, mem) = content(id, s.r, s.t * s.d);
        Owned {
            key,
            mem,
            title: format!("doc {id} — título"),
            hash: [(id % 251) as u8; 32],
            id,
        }
    }
    pub fn entry(&self) -> NewEntry<'_> {
        NewEntry {
            key: &self.key,
            memory: MemView::F32(&self.mem),
            source: "squad/dev",
            title: &self.title,
            timestamp: 1_700_000_000 + self.id,
            text_hash: self.hash,
        }
    }
}

/// Appends `n` entries one by one; returns their ids.
pub fn append_n(bank: &mut Bank, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let o = Owned::new(bank.next_id(), bank);
            let id = bank.append(&o.entry()).unwrap();
            assert_eq!(id, o.id);
            id
        })
        .collect()
}

/// Checks that `e` is exactly what `Owned::new(e.id)` wrote.
pub fn check_entry(e: &EntryRef<'_>, r: usize, len: usize) {
    let (key, mem) = content(e.id, r, len);
    assert_eq!(e.key, &key[..], "key of {}", e.id);
    assert_eq!(e.memory.to_f32_vec(), mem, "memory of {}", e.id);
    assert_eq!(e.title, format!("doc {} — título", e.id));
    assert_eq!(e.source, "squad/dev");
    assert_eq!(e.timestamp, 1_700_000_000 + e.id);
    assert_eq!(e.text_hash, [(e.id % 251) as u8; 32]);
}

pub fn check_all(bank: &Bank, ids: &[u64]) {
    let s = bank.stats();
    for &id in ids {
        let e = bank
            .get(id)
            .unwrap()
            .unwrap_or_else(|| panic!("entry {id} missing"));
        check_entry(&e, s.r, s.t * s.d);
    }
}

pub fn seg_path(dir: &Path, generation: u64, idx: u64) -> std::path::PathBuf {
    dir.join(format!("seg-{generation:08}-{idx:08}.dat"))
}
