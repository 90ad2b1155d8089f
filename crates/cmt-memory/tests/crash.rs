//! Crash tests with real processes. The test binary re-executes itself as the child (the
//! `crash_child` test does nothing unless `CMT_MEMORY_CRASH_CHILD` is set): the child
//! appends in a loop and prints `ACK <id>` after each append returns; the parent kills it
//! with SIGKILL mid-way, reads every ACK that made it out, reopens the bank and checks that
//! every acknowledged record is there, intact. A second child runs under a file size limit
//! (RLIMIT_FSIZE, the unprivileged stand-in for a full disk: the write is cut short and then
//! fails with EFBIG, just as it would with ENOSPC).
mod common;
use cmt_memory::{Bank, Error, MemDtype, NewEntry};
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "CMT_MEMORY_CRASH_CHILD";
const DIR_ENV: &str = "CMT_MEMORY_CRASH_DIR";
const LIMIT_ENV: &str = "CMT_MEMORY_CRASH_FSIZE";

#[test]
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR_ENV).expect("bank dir"));
    if mode == "fsize" {
        let limit: u64 = std::env::var(LIMIT_ENV)
            .expect("limit")
            .parse()
            .expect("limit");
        // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ makes an oversized
        // write fail with EFBIG instead of killing the process.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
    }
    let mut bank = Bank::open_writer(&dir).expect("child opens the writer");
    let out = std::io::stdout();
    let deadline = Instant::now() + Duration::from_secs(30); // never outlive a dead parent
    let mut errors = 0;
    while Instant::now() < deadline && errors < 3 {
        let batch = if mode == "batch" { 5 } else { 1 };
        let owned: Vec<Owned> = (0..batch)
            .map(|i| Owned::new(bank.next_id() + i, &bank))
            .collect();
        let entries: Vec<NewEntry> = owned.iter().map(Owned::entry).collect();
        let mut o = out.lock();
        match bank.append_batch(&entries) {
            Ok(ids) => {
                for id in ids {
                    writeln!(o, "ACK {id}").unwrap();
                }
            }
            Err(e) => {
                errors += 1;
                writeln!(o, "ERR {e}").unwrap();
            }
        }
        o.flush().unwrap();
    }
}

/// Kills the child on drop, so a failing parent never leaves it running.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mode: &str, dir: &Path, limit: Option<u64>) -> Guard {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(l) = limit {
        cmd.env(LIMIT_ENV, l.to_string());
    }
    Guard(cmd.spawn().unwrap())
}

/// libtest prints `test crash_child ... ` without a newline before the child's first line.
fn parse(line: &str, acked: &mut Vec<u64>, errs: &mut Vec<String>) {
    let line = line.trim_start_matches("test crash_child ... ");
    if let Some(id) = line.strip_prefix("ACK ") {
        acked.push(id.parse().unwrap());
    } else if let Some(e) = line.strip_prefix("ERR ") {
        errs.push(e.to_string());
    }
}

#[test]
fn kill_9_mid_append_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(16, 256, 64, MemDtype::F32); // ~17 KB records
    cfg.segment_capacity = 40;
    drop(Bank::create(dir.path(), &cfg).unwrap());
    let mut acked: Vec<u64> = Vec::new();
    let (mut tails, mut extra) = (0, 0);
    for round in 0..6 {
        let mode = if round % 2 == 0 { "single" } else { "batch" };
        let mut child = spawn(mode, dir.path(), None);
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        let target = acked.len() + 8 + 5 * round;
        let mut errs = Vec::new();
        let mut checked_lock = false;
        while acked.len() < target {
            let line = lines.next().expect("child ended early").unwrap();
            parse(&line, &mut acked, &mut errs);
            if !checked_lock && acked.len() >= target - 4 {
                // While the child writes: a second writer is refused, a reader sees every
                // record acknowledged so far.
                checked_lock = true;
                let e = Bank::open_writer(dir.path()).unwrap_err();
                assert!(matches!(e, Error::Locked { .. }), "{e}");
                let seen = acked.clone();
                check_all(&Bank::open_reader(dir.path()).unwrap(), &seen);
            }
        }
        child.0.kill().unwrap();
        for line in lines {
            parse(&line.unwrap(), &mut acked, &mut errs);
        }
        child.0.wait().unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        // Before the writer trims it: did the kill leave bytes past the last commit?
        let r = Bank::open_reader(dir.path()).unwrap().stats();
        let last_seg = seg_path(dir.path(), 1, r.segments - 1);
        let in_last = r.records - (r.segments - 1) * cfg.segment_capacity;
        let len = std::fs::metadata(&last_seg).unwrap().len();
        tails += (len > 64 + in_last * r.record_size) as usize;
        let bank = Bank::open_writer(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&last_seg).unwrap().len(),
            64 + in_last * r.record_size
        );
        check_all(&bank, &acked);
        // Ids are contiguous from 1: nothing acknowledged is missing, and at most the
        // appends in flight at the kill (unacknowledged) made it in addition.
        let live = bank.live_ids();
        assert_eq!(live[..acked.len()], acked[..]);
        assert!(
            live.len() <= acked.len() + 5,
            "{} vs {}",
            live.len(),
            acked.len()
        );
        extra += (live.len() > acked.len()) as usize;
        acked = live; // whatever survived counts from now on
    }
    eprintln!(
        "kill -9 rounds that left an uncommitted tail: {tails}/6; where a committed but \
         unacknowledged append survived: {extra}/6"
    );
}

#[test]
fn file_size_limit_mid_append_rolls_back_and_keeps_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(16, 256, 64, MemDtype::F32);
    let bank = Bank::create(dir.path(), &cfg).unwrap();
    let rs = bank.stats().record_size;
    drop(bank);
    let seg = seg_path(dir.path(), 1, 0);
    // Room for 7 records and half of the 8th.
    let limit = 64 + 7 * rs + rs / 2;
    let mut child = spawn("fsize", dir.path(), Some(limit));
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let (mut acked, mut errs) = (Vec::new(), Vec::new());
    for line in out.lines() {
        parse(&line.unwrap(), &mut acked, &mut errs);
    }
    assert!(child.0.wait().unwrap().success());
    assert_eq!(acked, (1..=7).collect::<Vec<u64>>());
    assert_eq!(errs.len(), 3, "{errs:?}");
    let want = format!(
        "{}: at byte offset {}: File too large",
        seg.display(),
        64 + 7 * rs
    );
    assert!(errs[0].starts_with(&want), "{} vs {want}", errs[0]);
    // The partial eighth record was cut off by the writer itself.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 64 + 7 * rs);
    let mut bank = Bank::open_writer(dir.path()).unwrap();
    check_all(&bank, &acked);
    assert_eq!(append_n(&mut bank, 2), vec![8, 9]);
}
