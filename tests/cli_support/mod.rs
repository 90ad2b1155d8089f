//! Shared by the CMT CLI tests: the `cmt` binary on one thread, and a check that a run
//! succeeded (its stderr and stdout in the failure message).
use std::process::{Command, Output};

/// The `cmt` binary under test, with `--threads 1`.
pub fn cmt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cmt"));
    c.args(["--threads", "1"]);
    c
}

/// The stdout of a successful run; panics with `what` and both streams otherwise.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}
