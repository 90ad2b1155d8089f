//! Shared test support: locating `../shared`, fetching the default model, reading fixtures.
#![allow(dead_code)]
pub mod gguf_writer;
pub mod tiny;

use cmt_runtime::{CpuBackend, Model, Tokenizer};
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;
use std::sync::OnceLock;

/// `../shared` beside the checkout (or `$CMT_SHARED`).
pub fn shared_dir() -> Option<PathBuf> {
    let p = match std::env::var_os("CMT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    p.join("DESIGN.md").exists().then_some(p)
}

pub fn fixtures_dir() -> Option<PathBuf> {
    let d = shared_dir()?.join("fixtures/smollm2-135m");
    d.join("smollm2_golden.safetensors").exists().then_some(d)
}

/// Skips (returns None with a message) when something the test needs is absent. On CI
/// (`CI` set) a missing model is a failure, since CI is expected to have fetched it.
#[allow(unused_macros)]
macro_rules! require {
    ($e:expr, $what:expr) => {
        match $e {
            Some(v) => v,
            None => {
                eprintln!("SKIPPED: {} not available", $what);
                return;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use require;

pub fn default_model_path() -> Option<PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(
        || match cmt_runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}")) {
            Ok(p) => Some(p),
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("CI: the default model could not be fetched: {e}");
                }
                eprintln!("cannot fetch the default model: {e}");
                None
            }
        },
    )
    .clone()
}

pub struct Loaded {
    pub model: Model<CpuBackend>,
    pub tok: Tokenizer,
}

/// The default model loaded once per test binary.
pub fn default_model() -> Option<&'static Loaded> {
    static M: OnceLock<Option<Loaded>> = OnceLock::new();
    M.get_or_init(|| {
        let path = default_model_path()?;
        let (model, tok) = cmt_runtime::load_model(&path, CpuBackend).expect("default model loads");
        Some(Loaded { model, tok })
    })
    .as_ref()
}

pub struct Fixtures {
    bytes: Vec<u8>,
    pub meta: serde_json::Value,
}

impl Fixtures {
    pub fn load() -> Option<Fixtures> {
        let d = fixtures_dir()?;
        let bytes = std::fs::read(d.join("smollm2_golden.safetensors")).ok()?;
        let meta =
            serde_json::from_str(&std::fs::read_to_string(d.join("smollm2_golden.json")).ok()?)
                .ok()?;
        Some(Fixtures { bytes, meta })
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("fixture safetensors parses")
    }

    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture {name} missing"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (v, t.shape().to_vec())
    }

    pub fn i32(&self, name: &str) -> Vec<i32> {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture {name} missing"));
        assert_eq!(t.dtype(), Dtype::I32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// The `kvprefix.*` case: its key/value prefix, token ids and labels.
    pub fn kv_prefix_case(&self) -> (cmt_runtime::KvPrefix, Vec<u32>, Vec<i32>) {
        let (k, kshape) = self.f32("kvprefix.k");
        let (v, _) = self.f32("kvprefix.v");
        let prefix = cmt_runtime::KvPrefix {
            len: kshape[2],
            k,
            v,
        };
        (
            prefix,
            self.ids("kvprefix.ids"),
            self.i32("kvprefix.labels"),
        )
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        self.i32(name).into_iter().map(|x| x as u32).collect()
    }
}

/// max |a - b|
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `scripts/<name>` with python3 and returns its stdout, or None (with a SKIPPED line
/// saying what to install, `needs`) where it fails. On CI (`CI` set) a failure panics:
/// `.ci/run` installs the packages the scripts use.
pub fn run_script(name: &str, args: &[&std::ffi::OsStr], needs: &str) -> Option<Vec<u8>> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("python3 runs");
    if out.status.success() {
        return Some(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if std::env::var_os("CI").is_some() {
        panic!("CI: {name} failed: {err}");
    }
    eprintln!("SKIPPED: {name} failed (pip install {needs}?): {err}");
    None
}
