//! `cargo xtask <task>`: developer tasks.
mod kernels;
mod ptxas;
mod wheels;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  build-kernels   compile kernels/*.cu with NVRTC 12.4 (compute_80), check with ptxas for
                  sm_80/sm_90, print registers/smem/spills, write kernels/ptx/ + manifest.json
                  (installs the pinned CUDA 12.4 pip wheels into $CMT_HOME/cuda-wheels-12.4
                  when absent)
  check-kernels   rebuild into a temp dir; fail if the committed kernels/ptx is stale
  help            this text";

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        None | Some("help") | Some("--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(t @ ("build-kernels" | "check-kernels")) => {
            let tk = wheels::ensure()?;
            if let Some(code) = wheels::reexec_with_nvrtc(&tk)? {
                std::process::exit(code);
            }
            if t == "build-kernels" {
                let out = kernels::kernels_dir().join("ptx");
                let m = kernels::build(&tk, &out, true)?;
                println!(
                    "wrote {} modules to {} (NVRTC {}, {})",
                    m.modules.len(),
                    out.display(),
                    m.nvrtc_version,
                    m.arch
                );
                Ok(())
            } else {
                kernels::check(&tk)
            }
        }
        Some(other) => anyhow::bail!("unknown xtask `{other}` (run `cargo xtask help`)"),
    }
}
