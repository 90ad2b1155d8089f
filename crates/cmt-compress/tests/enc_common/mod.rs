//! Support for the encoding and cache tests: a small random model (fast, always there),
//! the default model and the HF golden fixtures (skipped with a message when absent).
#![allow(dead_code)]
use cmt_runtime::weights::{TensorSource, Weights};
use cmt_runtime::{Arch, CpuBackend, Model, ModelConfig, Tokenizer};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

struct MapSource(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl TensorSource for MapSource {
    fn path(&self) -> &Path {
        Path::new("<memory>")
    }
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn load(&self, name: &str, shape: &[usize]) -> cmt_runtime::Result<Vec<f32>> {
        let (s, v) = &self.0[name];
        assert_eq!(s, shape, "{name}");
        Ok(v.clone())
    }
}

/// A 3-layer model of width 24 with random weights (deterministic in `seed`).
pub fn tiny_model(seed: u64) -> Model<CpuBackend> {
    let cfg = ModelConfig {
        arch: Arch::Llama,
        hidden: 24,
        intermediate: 40,
        layers: 3,
        heads: 4,
        kv_heads: 2,
        head_dim: 6,
        vocab: 61,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: Default::default(),
        tie_embeddings: true,
        qkv_bias: false,
        max_positions: 64,
        bos_token: None,
        eos_tokens: vec![],
    };
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut m = HashMap::new();
    for (name, shape) in cmt_runtime::convert::hf_tensor_shapes(&cfg) {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = if name.ends_with("norm.weight") {
            (0..n).map(|_| 1.0 + 0.3 * next()).collect()
        } else {
            (0..n).map(|_| 0.5 * next()).collect()
        };
        m.insert(name, (shape, v));
    }
    let w = Weights::load(&cfg, &MapSource(m), &CpuBackend).unwrap();
    Model::new(cfg, CpuBackend, w).unwrap()
}

/// Deterministic pseudo-random token ids in `0..vocab` (documents of different seeds share
/// no chunk in practice).
pub fn doc(len: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|t| {
            let mut x = (seed as u64) << 32 | t as u64;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
            ((x ^ (x >> 31)) % vocab as u64) as u32
        })
        .collect()
}

/// `../shared` beside the checkout (or `$CMT_SHARED`).
pub fn shared_dir() -> Option<PathBuf> {
    let p = match std::env::var_os("CMT_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    p.join("DESIGN.md").exists().then_some(p)
}

pub struct Loaded {
    pub model: Model<CpuBackend>,
    pub tok: Tokenizer,
}

/// The default model, fetched if needed and loaded once per test binary. On CI (`CI`
/// set) a missing model is a failure.
pub fn default_model() -> Option<&'static Loaded> {
    static M: OnceLock<Option<Loaded>> = OnceLock::new();
    M.get_or_init(|| {
        let path = match cmt_runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}")) {
            Ok(p) => p,
            Err(e) => {
                if std::env::var_os("CI").is_some() {
                    panic!("CI: the default model could not be fetched: {e}");
                }
                eprintln!("cannot fetch the default model: {e}");
                return None;
            }
        };
        let (model, tok) = cmt_runtime::load_model(&path, CpuBackend).expect("default model loads");
        Some(Loaded { model, tok })
    })
    .as_ref()
}

/// The HF golden fixtures of the default model.
pub struct Fixtures {
    bytes: Vec<u8>,
}

impl Fixtures {
    pub fn load() -> Option<Fixtures> {
        let p = shared_dir()?.join("fixtures/smollm2-135m/smollm2_golden.safetensors");
        Some(Fixtures {
            bytes: std::fs::read(p).ok()?,
        })
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).expect("fixture safetensors parses");
        let t = st.tensor(name).expect("fixture tensor present");
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).expect("fixture safetensors parses");
        let t = st.tensor(name).expect("fixture tensor present");
        assert_eq!(t.dtype(), Dtype::I32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
            .collect()
    }
}

/// The hidden states of one chunk computed the plain way: a fresh session, the whole
/// chunk as one sequence, `Model::forward`'s full capture, entry `capture_index`.
pub fn reference_rows(model: &Model<CpuBackend>, ids: &[u32], capture_index: usize) -> Vec<f32> {
    let mut sess = model.session(1, ids.len()).unwrap();
    let mut all = Vec::new();
    model
        .forward(
            &mut sess,
            &[cmt_runtime::SeqInput::tokens(0, ids)],
            cmt_runtime::Logits::None,
            Some(&mut all),
        )
        .unwrap();
    all.swap_remove(capture_index)
}

pub fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
