//! Compiles every kernels/*.cu, unchanged, as host C++ behind emu/cmt_emu.h into one static
//! library for the tests. bf16 comes from the real cuda_bf16.h of the CUDA 12.4 pip wheels
//! (the cache `cargo xtask build-kernels` fills; if absent this script pip-installs the three
//! header wheels into its own cache) or, when that is impossible (offline, no pip, or
//! CMT_EMU_SHIM=1), from emu/shim. Never fails for lack of CUDA.
use std::path::{Path, PathBuf};
use std::process::Command;

const HEADER_WHEELS: &[&str] = &[
    "nvidia-cuda-runtime-cu12==12.4.127",
    "nvidia-cuda-cccl-cu12==12.4.127.post1",
    "nvidia-cuda-nvcc-cu12==12.4.131",
];

fn cmt_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CMT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("cmt")
}

/// Include dirs that make `#include <cuda_bf16.h>` work in host C++, if all are present.
fn header_dirs(root: &Path) -> Option<Vec<PathBuf>> {
    let n = root.join("nvidia");
    let dirs = vec![
        n.join("cuda_runtime/include"),
        n.join("cuda_nvcc/include"),
        n.join("cuda_cccl/include"),
    ];
    let ok = dirs[0].join("cuda_bf16.h").is_file()
        && dirs[1].join("crt/host_defines.h").is_file()
        && dirs[2].join("nv/target").is_file();
    ok.then_some(dirs)
}

fn wheel_headers() -> Result<Vec<PathBuf>, String> {
    let xtask_cache = std::env::var_os("CMT_CUDA_WHEELS")
        .filter(|d| !d.is_empty())
        .map_or_else(|| cmt_home().join("cuda-wheels-12.4"), PathBuf::from);
    if let Some(d) = header_dirs(&xtask_cache) {
        return Ok(d);
    }
    // A separate dir: `pip install --target` replaces the shared `nvidia/` package dir, so
    // installing a subset into the xtask's cache would delete its NVRTC.
    let own = cmt_home().join("cuda-headers-12.4");
    if let Some(d) = header_dirs(&own) {
        return Ok(d);
    }
    if std::env::var_os("CMT_EMU_NO_PIP").is_some() {
        return Err("CMT_EMU_NO_PIP is set".into());
    }
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--upgrade", "--target"])
        .arg(&own)
        .args(HEADER_WHEELS)
        .output()
        .map_err(|e| format!("running pip: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("pip failed: {}", err.lines().last().unwrap_or("")));
    }
    header_dirs(&own).ok_or_else(|| "pip succeeded but the headers are missing".into())
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let kernels = manifest.join("../../kernels");
    let emu = manifest.join("emu");
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-changed={}", emu.display());
    println!("cargo:rerun-if-changed=build.rs");
    for v in [
        "CMT_EMU_SHIM",
        "CMT_EMU_NO_PIP",
        "CMT_HOME",
        "CMT_CUDA_WHEELS",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    sources.retain(|p| p.extension().is_some_and(|x| x == "cu"));
    sources.sort();
    let mut tu = String::from("#include \"cmt_emu.h\"\n");
    for s in &sources {
        tu.push_str(&format!("#include \"{}\"\n", s.display()));
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let tu_path = out.join("emu_all.cpp");
    std::fs::write(&tu_path, tu).expect("writing the emulation translation unit");

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .file(&tu_path)
        .include(&emu)
        .include(&kernels)
        .flag_if_supported("-pthread")
        .flag_if_supported("-Wno-unused-parameter");
    let real = if std::env::var_os("CMT_EMU_SHIM").is_some() {
        Err("CMT_EMU_SHIM is set".to_string())
    } else {
        wheel_headers()
    };
    match real {
        Ok(dirs) => {
            for d in dirs {
                build.include(d);
            }
            println!("cargo:rustc-cfg=cmt_emu_real_headers");
        }
        Err(why) => {
            println!("cargo:warning=kernel emulation uses the bf16 shim header ({why})");
            build.include(emu.join("shim"));
        }
    }
    println!("cargo::rustc-check-cfg=cfg(cmt_emu_real_headers)");
    build.compile("cmt_kernel_emu");
}
