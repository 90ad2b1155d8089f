//! Whole-model checks for the device backend on a real GPU (`gpu-check --model ...`):
//! the golden fixtures of HF transformers on `--device cuda` (DESIGN §5 step 1 on the
//! GPU), and prefill/decode speed of random-weight models of the default model's shape and of
//! a Llama-7B shape. Generic over the executor, so the same code runs on the emulator.
use cmt_runtime::backend::{Backend, DeviceBackend};
use cmt_runtime::bench::{measure, BenchOptions, BenchReport};
use cmt_runtime::cuda::Exec;
use cmt_runtime::weights::{TensorSource, Weights};
use cmt_runtime::{
    generate, Arch, GenerateOptions, Logits, Model, ModelConfig, SeqInput, WeightFormat,
};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// The golden fixtures (`../shared/fixtures/smollm2-135m/smollm2_golden.safetensors`).
pub struct Fixtures {
    bytes: Vec<u8>,
}

impl Fixtures {
    pub fn load(dir: &Path) -> Result<Self, String> {
        let p = dir.join("smollm2_golden.safetensors");
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(Fixtures { bytes })
    }
    fn raw(&self, name: &str, dt: Dtype) -> Result<Vec<[u8; 4]>, String> {
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| e.to_string())?;
        let t = st
            .tensor(name)
            .map_err(|_| format!("fixture tensor {name} missing"))?;
        if t.dtype() != dt {
            return Err(format!("fixture tensor {name} is {:?}", t.dtype()));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect())
    }
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, String> {
        Ok(self
            .raw(name, Dtype::F32)?
            .into_iter()
            .map(f32::from_le_bytes)
            .collect())
    }
    pub fn ids(&self, name: &str) -> Result<Vec<u32>, String> {
        Ok(self
            .raw(name, Dtype::I32)?
            .into_iter()
            .map(|b| i32::from_le_bytes(b) as u32)
            .collect())
    }
}

/// One line of the golden report.
pub struct GoldenLine {
    pub what: String,
    pub value: f64,
    pub bound: f64,
    pub passed: bool,
}

/// The bars of issue 14 for `weights`: f32 logits within 1e-3 of HF and every greedy token
/// identical; bf16 logits within 5e-2 and the first 8 greedy tokens identical. `native` on
/// the device backend keeps the default model's Q8_0 / Q4_1 blocks and multiplies exactly the
/// f32 path's weights, so it takes the f32 bars (on the CPU backend, whose native path
/// quantises activations, it would not).
pub fn golden<B: Backend>(
    model: &Model<B>,
    fx: &Fixtures,
    weights: WeightFormat,
) -> Result<Vec<GoldenLine>, String> {
    let (logit_bound, greedy_n) = match weights {
        WeightFormat::F32 | WeightFormat::Native => (1e-3, usize::MAX),
        WeightFormat::Bf16 => (5e-2, 8),
    };
    let err = |e: cmt_runtime::Error| e.to_string();
    let mut lines = Vec::new();
    for i in 0..3 {
        let ids = fx.ids(&format!("prompt{i}.ids"))?;
        let want = fx.f32(&format!("prompt{i}.logits"))?;
        let mut sess = model.session(1, ids.len()).map_err(err)?;
        let got = model
            .forward(&mut sess, &[SeqInput::tokens(0, &ids)], Logits::All, None)
            .map_err(err)?;
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| f64::from((a - b).abs()))
            .fold(
                if got.len() == want.len() {
                    0.0
                } else {
                    f64::NAN
                },
                f64::max,
            );
        lines.push(GoldenLine {
            what: format!(
                "{weights} prompt{i}: max |Δlogit| over {} positions",
                ids.len()
            ),
            value: d,
            bound: logit_bound,
            passed: d <= logit_bound,
        });
        let greedy = fx.ids(&format!("prompt{i}.greedy"))?;
        let mut sess = model.session(1, ids.len() + greedy.len()).map_err(err)?;
        let opts = GenerateOptions {
            max_new_tokens: greedy.len(),
            ..Default::default()
        };
        let got = generate(model, &mut sess, &[ids], None, &opts, |_, _| Ok(true)).map_err(err)?;
        let same = got[0]
            .iter()
            .zip(&greedy)
            .take_while(|(a, b)| a == b)
            .count();
        let need = greedy_n.min(greedy.len());
        lines.push(GoldenLine {
            what: format!(
                "{weights} prompt{i}: greedy tokens equal to HF's (of {})",
                greedy.len()
            ),
            value: same as f64,
            bound: need as f64,
            passed: same >= need,
        });
    }
    Ok(lines)
}

/// Random weights for any config, made on the fly (no file): uniform in ±0.02, norms 1;
/// with `blocks`, every matrix is also offered as random Q4_1 blocks (`--weights native`).
pub struct SyntheticSource {
    cfg: ModelConfig,
    seed: u64,
    blocks: bool,
}

impl SyntheticSource {
    pub fn new(cfg: ModelConfig, seed: u64, blocks: bool) -> Self {
        SyntheticSource { cfg, seed, blocks }
    }
}

impl TensorSource for SyntheticSource {
    fn path(&self) -> &Path {
        Path::new("<random weights>")
    }
    fn has(&self, name: &str) -> bool {
        cmt_runtime::convert::hf_tensor_shapes(&self.cfg)
            .iter()
            .any(|(n, _)| n == name)
    }
    fn load(&self, name: &str, shape: &[usize]) -> cmt_runtime::Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        if name.ends_with("norm.weight") {
            return Ok(vec![1.0; n]);
        }
        let seed = name.bytes().fold(self.seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut out = vec![0.0f32; n];
        // Large matrices: fill chunks on all cores (a 7B stack is 6.7e9 values).
        let chunk = n.div_ceil(16).max(1 << 16);
        std::thread::scope(|s| {
            for (c, part) in out.chunks_mut(chunk).enumerate() {
                s.spawn(move || {
                    let mut x = seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    for v in part {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        *v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04;
                    }
                });
            }
        });
        Ok(out)
    }
    fn load_quant(
        &self,
        name: &str,
        shape: [usize; 2],
    ) -> cmt_runtime::Result<Option<cmt_runtime::quant::QuantMatrix>> {
        use cmt_runtime::quant::{QType, QuantMatrix};
        if !self.blocks || !shape[1].is_multiple_of(32) {
            return Ok(None);
        }
        let n_blocks = shape[0] * shape[1] / 32;
        let mut data = vec![0u8; n_blocks * 20];
        let mut x = self.seed ^ name.len() as u64 ^ 0x2545_f491_4f6c_dd1d;
        for b in data.chunks_exact_mut(20) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b[..2].copy_from_slice(&half::f16::from_f32(0.002).to_le_bytes());
            b[2..4].copy_from_slice(&half::f16::from_f32(-0.015).to_le_bytes());
            for (i, q) in b[4..].iter_mut().enumerate() {
                *q = (x >> (i % 8 * 8)) as u8;
            }
        }
        QuantMatrix::new(QType::Q4_1, shape[0], shape[1], data)
            .map(Some)
            .map_err(|e| cmt_runtime::Error::Invalid(format!("{name}: {e}")))
    }
}

/// The default model's shape (SmolLM2-135M) and a Llama-7B shape (Llama 2 7B: 32 layers,
/// 4096 wide, 32 heads of 128, MLP 11008, vocabulary 32000).
pub fn shape(name: &str) -> Option<ModelConfig> {
    let base = ModelConfig {
        arch: Arch::Llama,
        hidden: 576,
        intermediate: 1536,
        layers: 30,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        vocab: 49_152,
        rms_eps: 1e-5,
        rope_theta: 100_000.0,
        rope_scaling: Default::default(),
        tie_embeddings: true,
        qkv_bias: false,
        max_positions: 8192,
        bos_token: None,
        eos_tokens: vec![],
    };
    match name {
        "smollm2-135m" => Some(base),
        "llama-7b" => Some(ModelConfig {
            hidden: 4096,
            intermediate: 11_008,
            layers: 32,
            heads: 32,
            kv_heads: 32,
            head_dim: 128,
            vocab: 32_000,
            rope_theta: 10_000.0,
            tie_embeddings: false,
            max_positions: 4096,
            ..base
        }),
        _ => None,
    }
}

/// One speed row: tokens/s and the decode's achieved weight-read bandwidth.
pub struct SpeedRow {
    pub shape: String,
    pub weights: WeightFormat,
    pub report: BenchReport,
    pub matrix_bytes: usize,
}

impl SpeedRow {
    /// Bytes of weight matrices read per decoded token × tokens/s.
    pub fn decode_gb_s(&self) -> f64 {
        self.matrix_bytes as f64 * self.report.decode_tok_s / 1e9
    }
}

/// Loads `shape` with random weights on `exec` and measures it.
pub fn speed<E: Exec>(
    exec: E,
    name: &str,
    shape_name: &str,
    weights: WeightFormat,
    opts: &BenchOptions,
) -> Result<SpeedRow, String> {
    let cfg = shape(shape_name).ok_or_else(|| format!("no shape `{shape_name}`"))?;
    let be = DeviceBackend::new(exec, name);
    let src = SyntheticSource::new(cfg.clone(), 7, weights == WeightFormat::Native);
    let w = Weights::load_as(&cfg, &src, &be, weights).map_err(|e| e.to_string())?;
    let model = Model::new(cfg, be, w).map_err(|e| e.to_string())?;
    let report = measure(&model, opts).map_err(|e| e.to_string())?;
    Ok(SpeedRow {
        shape: shape_name.to_string(),
        weights,
        matrix_bytes: model.weights.matrix_bytes(),
        report,
    })
}

/// Where gpu-check looks for the default model and the fixtures when not told: staged beside
/// the binary by scripts/gpu-check.sh (`target/gpu-check/`).
pub fn staged(bin_dir: &Path) -> (PathBuf, PathBuf) {
    (
        bin_dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        bin_dir.join("fixtures"),
    )
}
