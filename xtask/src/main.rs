//! `cargo xtask <task>`: developer tasks. Kernel tasks (`build-kernels`, `check-kernels`)
//! arrive with the CUDA toolchain issue.
fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        None | Some("help") | Some("--help") => {
            println!("usage: cargo xtask <task>\n\ntasks:\n  help    this text");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown xtask `{other}` (run `cargo xtask help`)"),
    }
}
