//! `build-kernels` / `check-kernels`: kernels/*.cu → NVRTC (compute_80 PTX) → ptxas check
//! for sm_80 and sm_90 → kernels/ptx/<stem>.ptx + manifest.json.
use crate::ptxas;
use crate::wheels::{self, Toolkit};
use anyhow::{bail, Context, Result};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// PTX is built for the oldest target we support; code that needs sm_90 must sit under
/// `#if __CUDA_ARCH__ >= 900` and is compiled out of this PTX (a compute_90 build of such a
/// file would be a second manifest entry).
pub const ARCH: &str = "compute_80";
/// The archs ptxas must accept the PTX for (A100 class and H100 class).
pub const SASS_CHECKS: &[&str] = &["sm_80", "sm_90"];
/// Flags besides the include paths, recorded in the manifest.
const FLAGS: &[&str] = &["-std=c++17", "--fmad=true"];

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub generator: String,
    pub nvrtc_version: String,
    pub wheels: BTreeMap<String, String>,
    pub arch: String,
    pub flags: Vec<String>,
    /// sha256 of every kernels/*.cu and kernels/*.cuh (what root build.rs checks).
    pub sources: BTreeMap<String, String>,
    pub modules: BTreeMap<String, Module>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Module {
    pub source: String,
    pub ptx: String,
    pub ptx_sha256: String,
    pub entries: Vec<String>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels")
}

/// Sorted kernels/*.cu and *.cuh.
fn sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if matches!(p.extension().and_then(|x| x.to_str()), Some("cu" | "cuh")) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn nvrtc_version() -> Result<String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: nvrtcVersion only writes two ints through valid pointers; the library was
    // found by `is_culib_present` before this is called.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if r != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        bail!("nvrtcVersion failed: {r:?}");
    }
    Ok(format!("{major}.{minor}"))
}

/// Compiles every kernel into `out` (ptx files + manifest.json); prints ptxas resources.
pub fn build(tk: &Toolkit, out: &Path, verbose: bool) -> Result<Manifest> {
    // SAFETY: only probes dlopen; nothing is called through the library yet.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        bail!(
            "libnvrtc.so.12 not loadable from {} (LD_LIBRARY_PATH)",
            tk.nvrtc_lib_dir().display()
        );
    }
    let dir = kernels_dir();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut manifest = Manifest {
        generator: "cargo xtask build-kernels".into(),
        nvrtc_version: nvrtc_version()?,
        wheels: wheels::WHEELS
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        arch: ARCH.into(),
        flags: FLAGS.iter().map(|s| s.to_string()).collect(),
        sources: BTreeMap::new(),
        modules: BTreeMap::new(),
    };
    let mut include_paths = vec![wheels::display(&dir)];
    include_paths.extend(tk.include_dirs().iter().map(|p| wheels::display(p)));
    let mut report = Vec::new();
    for src in sources(&dir)? {
        let text =
            std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
        let name = file_name(&src);
        manifest
            .sources
            .insert(name.clone(), sha256_hex(text.as_bytes()));
        if !name.ends_with(".cu") {
            continue;
        }
        let stem = name.trim_end_matches(".cu").to_string();
        let opts = CompileOptions {
            arch: Some(ARCH),
            include_paths: include_paths.clone(),
            options: FLAGS.iter().map(|s| s.to_string()).collect(),
            name: Some(name.clone()),
            ..Default::default()
        };
        let ptx = match compile_ptx_with_opts(&text, opts) {
            Ok(p) => p.to_src(),
            Err(cudarc::nvrtc::CompileError::CompileError { log, .. }) => {
                bail!("NVRTC failed on {name}:\n{}", log.to_string_lossy())
            }
            Err(e) => bail!("NVRTC failed on {name}: {e}"),
        };
        let ptx_name = format!("{stem}.ptx");
        let ptx_path = out.join(&ptx_name);
        std::fs::write(&ptx_path, &ptx)
            .with_context(|| format!("writing {}", ptx_path.display()))?;
        for sm in SASS_CHECKS {
            report.extend(ptxas::check(&tk.ptxas(), &ptx_path, sm)?);
        }
        let entries = ptx
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
            .map(|l| l.split('(').next().unwrap_or(l).trim().to_string())
            .collect();
        manifest.modules.insert(
            stem,
            Module {
                source: name,
                ptx: ptx_name,
                ptx_sha256: sha256_hex(ptx.as_bytes()),
                entries,
            },
        );
    }
    if manifest.modules.is_empty() {
        bail!("no kernels/*.cu found in {}", dir.display());
    }
    let json = serde_json::to_string_pretty(&manifest)? + "\n";
    std::fs::write(out.join("manifest.json"), json)?;
    if verbose {
        ptxas::print_table(&report);
    }
    Ok(manifest)
}

/// Rebuilds into a temp dir and compares with kernels/ptx byte for byte.
pub fn check(tk: &Toolkit) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    build(tk, tmp.path(), false)?;
    let committed = kernels_dir().join("ptx");
    let mut stale = Vec::new();
    let names = |d: &Path| -> Result<Vec<String>> {
        let mut v = Vec::new();
        if d.is_dir() {
            for e in std::fs::read_dir(d)? {
                v.push(file_name(&e?.path()));
            }
        }
        v.sort();
        Ok(v)
    };
    let fresh = names(tmp.path())?;
    for n in &fresh {
        let a = std::fs::read(tmp.path().join(n))?;
        match std::fs::read(committed.join(n)) {
            Ok(b) if a == b => {}
            Ok(_) => stale.push(format!("{n}: differs from a fresh build")),
            Err(_) => stale.push(format!("{n}: missing from kernels/ptx")),
        }
    }
    for n in names(&committed)? {
        if !fresh.contains(&n) {
            stale.push(format!("{n}: in kernels/ptx but no longer generated"));
        }
    }
    if !stale.is_empty() {
        bail!(
            "kernels/ptx is stale (run `cargo xtask build-kernels` and commit):\n  {}",
            stale.join("\n  ")
        );
    }
    println!("kernels/ptx is up to date ({} files)", fresh.len());
    Ok(())
}
