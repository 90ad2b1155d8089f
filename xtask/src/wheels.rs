//! The CUDA 12.4 pieces the kernel toolchain needs, from PyPI wheels installed with
//! `pip install --target` into a cache dir: NVRTC (libnvrtc + builtins), the runtime headers
//! (cuda_bf16.h, cuda_fp16.h), CCCL (<nv/target>, needed by those headers) and ptxas.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Exact pins: the PTX version (8.4 for NVRTC 12.4) decides the oldest driver (≥ 550) that
/// can load the kernels, and the committed PTX must be reproducible byte for byte.
pub const WHEELS: &[(&str, &str)] = &[
    ("nvidia-cuda-nvrtc-cu12", "12.4.127"),
    ("nvidia-cuda-runtime-cu12", "12.4.127"),
    ("nvidia-cuda-cccl-cu12", "12.4.127.post1"),
    ("nvidia-cuda-nvcc-cu12", "12.4.131"),
];

pub struct Toolkit {
    pub root: PathBuf,
}

/// `$CMT_CUDA_WHEELS`, else `$CMT_HOME/cuda-wheels-12.4`, else `~/.cache/cmt/cuda-wheels-12.4`
/// (the emulation harness's build script looks in the same place).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CMT_CUDA_WHEELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("CMT_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let h = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            h.join(".cache").join("cmt")
        });
    home.join("cuda-wheels-12.4")
}

impl Toolkit {
    pub fn nvrtc_lib_dir(&self) -> PathBuf {
        self.root.join("nvidia/cuda_nvrtc/lib")
    }
    pub fn ptxas(&self) -> PathBuf {
        self.root.join("nvidia/cuda_nvcc/bin/ptxas")
    }
    /// Include dirs for NVRTC, in search order.
    pub fn include_dirs(&self) -> Vec<PathBuf> {
        ["cuda_runtime", "cuda_nvcc", "cuda_cccl"]
            .iter()
            .map(|p| self.root.join("nvidia").join(p).join("include"))
            .collect()
    }
    fn complete(&self) -> bool {
        let marker = |(name, ver): &(&str, &str)| {
            let dist = format!("{}-{}.dist-info", name.replace('-', "_"), ver);
            self.root.join(dist).is_dir()
        };
        WHEELS.iter().all(marker)
            && self.nvrtc_lib_dir().join("libnvrtc.so.12").is_file()
            && self.ptxas().is_file()
    }
}

/// Returns the toolkit, installing the pinned wheels with pip first when any is missing.
pub fn ensure() -> Result<Toolkit> {
    let tk = Toolkit { root: cache_dir() };
    if tk.complete() {
        return Ok(tk);
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("--version").output().is_ok())
        .context("no python3 found: pip is needed to install the CUDA 12.4 wheels")?;
    eprintln!(
        "installing the CUDA 12.4 wheels (NVRTC, headers, ptxas, ≈150 MB) into {}",
        tk.root.display()
    );
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ])
    .args(["--no-deps", "--upgrade", "--target"])
    .arg(&tk.root);
    for (name, ver) in WHEELS {
        cmd.arg(format!("{name}=={ver}"));
    }
    let status = cmd.status().context("running pip")?;
    if !status.success() {
        bail!(
            "pip install of the CUDA wheels into {} failed ({status})",
            tk.root.display()
        );
    }
    if !tk.complete() {
        bail!(
            "pip finished but {} lacks libnvrtc.so.12 or ptxas; delete the directory and retry",
            tk.root.display()
        );
    }
    Ok(tk)
}

/// NVRTC dlopens libnvrtc-builtins from the library search path, which the dynamic loader
/// reads only at process start: so the xtask re-executes itself with LD_LIBRARY_PATH set.
/// Returns `Some(exit code)` when it re-executed (the caller exits with it).
pub fn reexec_with_nvrtc(tk: &Toolkit) -> Result<Option<i32>> {
    const MARK: &str = "CMT_XTASK_NVRTC_ENV";
    if std::env::var_os(MARK).is_some() {
        return Ok(None);
    }
    let lib = tk.nvrtc_lib_dir();
    let path = match std::env::var_os("LD_LIBRARY_PATH") {
        Some(old) if !old.is_empty() => {
            let mut p = lib.into_os_string();
            p.push(":");
            p.push(old);
            p
        }
        _ => lib.into_os_string(),
    };
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let status = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", path)
        .env(MARK, "1")
        .status()
        .context("re-running the xtask with NVRTC on LD_LIBRARY_PATH")?;
    Ok(Some(status.code().unwrap_or(1)))
}

pub fn display(p: &Path) -> String {
    p.display().to_string()
}
