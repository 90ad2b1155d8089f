//! Damaged and foreign banks: each case is either an error naming the file and the byte
//! offset, or (only for an unacknowledged tail) a recovery that keeps every acknowledged
//! record. Kill -9 and a full disk, which need a real process, are in `crash.rs`.
mod common;
use cmt_memory::{Bank, Error, MemDtype, OpenOptions, Verify};
use common::*;
use std::fs::OpenOptions as FsOpen;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const T: usize = 2;
const D: usize = 8;
const R: usize = 16;

fn bank_with(n: usize) -> (tempfile::TempDir, Vec<u64>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Bank::create(dir.path(), &config(T, D, R, MemDtype::Bf16)).unwrap();
    let ids = append_n(&mut b, n);
    let rs = b.stats().record_size;
    (dir, ids, rs)
}

fn seg0(dir: &Path) -> PathBuf {
    seg_path(dir, 1, 0)
}

fn flip(path: &Path, off: u64) {
    let f = FsOpen::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], off).unwrap();
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

fn write_at(path: &Path, off: u64, b: &[u8]) {
    FsOpen::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(b, off)
        .unwrap();
}

fn truncate(path: &Path, len: u64) {
    FsOpen::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn open(dir: &Path, verify: Verify, write: bool) -> cmt_memory::Result<Bank> {
    Bank::open(
        dir,
        &OpenOptions {
            write,
            verify,
            expect: None,
        },
    )
}

/// The error names `path` and an offset in `lo..hi`.
fn assert_at(e: &Error, path: &Path, lo: u64, hi: u64) {
    let s = e.to_string();
    let prefix = format!("{}: at byte offset ", path.display());
    let rest = s
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{s:?} does not start with {prefix:?}"));
    let off: u64 = rest.split(':').next().unwrap().parse().unwrap();
    assert!(
        (lo..hi).contains(&off),
        "offset {off} not in {lo}..{hi}: {s}"
    );
}

#[test]
fn torn_tail_is_dropped_and_the_writer_continues() {
    let (dir, ids, rs) = bank_with(5);
    let seg = seg0(dir.path());
    let committed = 64 + 5 * rs;
    // A crash in the middle of the sixth record: part of it reached the file.
    let partial = read_at(&seg, 64, rs as usize / 2);
    write_at(&seg, committed, &partial);
    for verify in [Verify::Full, Verify::Heads] {
        let b = open(dir.path(), verify, false).unwrap();
        check_all(&b, &ids);
        assert_eq!(b.stats().records, 5);
    }
    let mut w = open(dir.path(), Verify::Full, true).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), committed);
    assert_eq!(append_n(&mut w, 1), vec![6]);
    drop(w);
    check_all(&Bank::open_reader(dir.path()).unwrap(), &[1, 2, 3, 4, 5, 6]);
}

#[test]
fn complete_but_unacknowledged_record_is_dropped() {
    let (dir, ids, _) = bank_with(5);
    let seg = seg0(dir.path());
    let header5 = read_at(&seg, 0, 64);
    let mut w = Bank::open_writer(dir.path()).unwrap();
    append_n(&mut w, 1);
    drop(w);
    // Killed after the record's fsync but before the commit count was rewritten.
    write_at(&seg, 0, &header5);
    let b = Bank::open_reader(dir.path()).unwrap();
    assert_eq!(b.stats().records, 5);
    check_all(&b, &ids);
    assert!(b.get(6).unwrap().is_none());
}

#[test]
fn flipped_memory_byte_full_and_lazy_detection() {
    let (dir, _, rs) = bank_with(6);
    assert_eq!(rs, 256);
    let seg = seg0(dir.path());
    let rec2 = 64 + 2 * rs;
    flip(&seg, rec2 + 200); // inside record 2's memory (id 3): bytes [192, 224)
    let e = open(dir.path(), Verify::Full, false).unwrap_err();
    assert!(e.to_string().contains("memory checksum mismatch"), "{e}");
    assert_at(&e, &seg, rec2, rec2 + rs);
    // With head-only checks the bank opens, but the damaged memory is never handed out.
    let b = open(dir.path(), Verify::Heads, false).unwrap();
    assert_at(&b.get(3).unwrap_err(), &seg, rec2, rec2 + rs);
    check_all(&b, &[1, 2, 4, 5, 6]);
    let q = content(3, R, 0).0;
    let err = b.search(&q, 6, 1.0).unwrap_err();
    assert_at(&err, &seg, rec2, rec2 + rs);
}

#[test]
fn flipped_bytes_in_heads_keys_and_the_last_acknowledged_record() {
    let (dir, _, rs) = bank_with(4);
    assert_eq!(rs, 256);
    let seg = seg0(dir.path());
    // Records are 256 bytes here: id at 8, text hash at 24, key at [128, 192), head CRC last.
    for (rec, within) in [(1u64, 8u64), (1, 30), (2, 130), (3, 0), (3, rs - 1)] {
        let off = 64 + rec * rs + within;
        flip(&seg, off);
        for verify in [Verify::Full, Verify::Heads] {
            let e = open(dir.path(), verify, false).unwrap_err();
            assert_at(&e, &seg, 64 + rec * rs, 64 + (rec + 1) * rs);
            let e = open(dir.path(), verify, true).unwrap_err();
            assert_at(&e, &seg, 64 + rec * rs, 64 + (rec + 1) * rs);
        }
        flip(&seg, off);
    }
    check_all(&Bank::open_writer(dir.path()).unwrap(), &[1, 2, 3, 4]);
}

#[test]
fn flipped_bytes_in_file_headers_and_tombstones() {
    let (dir, _, _) = bank_with(3);
    let mut w = Bank::open_writer(dir.path()).unwrap();
    w.delete(2).unwrap();
    drop(w);
    let header = dir.path().join("HEADER");
    let tomb = dir.path().join("tomb-00000001.dat");
    let seg = seg0(dir.path());
    for (path, off, lo, hi) in [
        (&seg, 3, 0, 64),
        (&seg, 50, 0, 64),
        (&header, 20, 0, 512),
        (&header, 100, 0, 512),
        (&tomb, 10, 0, 64),
        (&tomb, 64 + 3, 64, 96),
    ] {
        flip(path, off);
        let e = Bank::open_reader(dir.path()).unwrap_err();
        assert_at(&e, path, lo, hi);
        flip(path, off);
    }
    let b = Bank::open_reader(dir.path()).unwrap();
    assert!(b.get(2).unwrap().is_none());
}

#[test]
fn truncated_files_are_errors() {
    let (dir, _, rs) = bank_with(4);
    assert_eq!(rs, 256);
    let seg = seg0(dir.path());
    let header = dir.path().join("HEADER");
    let full = 64 + 4 * rs;
    for (path, len) in [
        (&seg, full - 1),    // into the last acknowledged record
        (&seg, 64 + 2 * rs), // two whole records gone
        (&seg, 64),          // every record gone
        (&seg, 40),          // into the file header
        (&header, 300),
        (&header, 0),
    ] {
        let keep = std::fs::read(path).unwrap();
        truncate(path, len);
        for write in [false, true] {
            let e = open(dir.path(), Verify::Full, write).unwrap_err();
            assert_at(&e, path, len.min(40), len + 1);
        }
        std::fs::write(path, &keep).unwrap();
    }
    check_all(&Bank::open_reader(dir.path()).unwrap(), &[1, 2, 3, 4]);
}

#[test]
fn missing_and_foreign_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(T, D, R, MemDtype::F32);
    cfg.segment_capacity = 2;
    let mut b = Bank::create(dir.path(), &cfg).unwrap();
    append_n(&mut b, 5); // segments 0, 1, 2
    drop(b);
    for idx in [1, 2] {
        let p = seg_path(dir.path(), 1, idx);
        let keep = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        let e = Bank::open_reader(dir.path()).unwrap_err();
        assert!(e.to_string().starts_with(&p.display().to_string()), "{e}");
        std::fs::write(&p, keep).unwrap();
    }
    // A segment of another bank with the same dimensions.
    let other = tempfile::tempdir().unwrap();
    let mut ob = Bank::create(other.path(), &cfg).unwrap();
    append_n(&mut ob, 2);
    drop(ob);
    let p = seg0(dir.path());
    std::fs::copy(seg0(other.path()), &p).unwrap();
    let e = Bank::open_reader(dir.path()).unwrap_err();
    assert!(e.to_string().contains("belongs to another bank"), "{e}");
    assert_at(&e, &p, 16, 17);
    // Not a bank at all.
    let junk = tempfile::tempdir().unwrap();
    let e = Bank::open_reader(junk.path()).unwrap_err();
    assert!(e
        .to_string()
        .starts_with(&junk.path().join("HEADER").display().to_string()));
    std::fs::write(junk.path().join("HEADER"), vec![7u8; 512]).unwrap();
    let e = Bank::open_reader(junk.path()).unwrap_err();
    assert!(e.to_string().contains("bad magic"), "{e}");
}

#[test]
fn writer_removes_leftovers_readers_ignore_them() {
    let (dir, ids, _) = bank_with(3);
    let junk = [
        "HEADER.tmp",
        "seg-00000002-00000000.dat",
        "seg-00000001-00000001.tmp",
        "tomb-00000002.dat",
    ];
    for name in junk {
        std::fs::write(dir.path().join(name), b"half-written").unwrap();
    }
    check_all(&Bank::open_reader(dir.path()).unwrap(), &ids);
    check_all(&Bank::open_writer(dir.path()).unwrap(), &ids);
    for name in junk {
        assert!(!dir.path().join(name).exists(), "{name} left behind");
    }
}
