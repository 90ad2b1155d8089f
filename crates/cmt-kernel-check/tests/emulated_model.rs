//! The whole transformer on the device backend, every op a kernel of kernels/*.cu run by the
//! CPU emulator, against the same model on the CPU backend (itself checked against HF's golden
//! fixtures): small random Llama (GQA) and Qwen2 (q/k/v biases, tied embeddings) models,
//! a batch of two sequences of different lengths in one step, one of them behind a key/value
//! prefix of 70 positions, then greedy decoding step by step (split attention + combine).
use cmt_kernel_check::emu::Emu;
use cmt_runtime::backend::{Backend, CpuBackend, DeviceBackend, MatData};
use cmt_runtime::quant::{QType, QuantMatrix};
use cmt_runtime::weights::{TensorSource, Weights};
use cmt_runtime::{
    generate, Arch, GenerateOptions, KvPrefix, Logits, Model, ModelConfig, Result, SeqInput,
    WeightFormat,
};
use std::collections::HashMap;
use std::path::Path;

struct MapSource(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl TensorSource for MapSource {
    fn path(&self) -> &Path {
        Path::new("<memory>")
    }
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = &self.0[name];
        assert_eq!(s, shape, "{name}");
        Ok(v.clone())
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn config(qwen: bool) -> ModelConfig {
    ModelConfig {
        arch: if qwen { Arch::Qwen2 } else { Arch::Llama },
        hidden: 40,
        intermediate: 56,
        layers: 2,
        heads: 4,
        kv_heads: if qwen { 4 } else { 2 },
        head_dim: if qwen { 10 } else { 36 },
        vocab: 61,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: Default::default(),
        tie_embeddings: qwen,
        qkv_bias: qwen,
        max_positions: 128,
        bos_token: None,
        eos_tokens: vec![],
    }
}

fn weights(cfg: &ModelConfig, seed: u64) -> MapSource {
    let mut rng = Rng(seed);
    let mut m = HashMap::new();
    for (name, shape) in cmt_runtime::convert::hf_tensor_shapes(cfg) {
        let n: usize = shape.iter().product();
        let v = if name.ends_with("norm.weight") {
            rng.vec(n, 0.3).into_iter().map(|x| 1.0 + x).collect()
        } else {
            rng.vec(n, 0.5)
        };
        m.insert(name, (shape, v));
    }
    MapSource(m)
}

fn model<B: Backend>(
    cfg: &ModelConfig,
    src: &dyn TensorSource,
    be: B,
    wf: WeightFormat,
) -> Model<B> {
    let w = Weights::load_as(cfg, src, &be, wf).expect("weights load");
    Model::new(cfg.clone(), be, w).expect("model builds")
}

fn prefix(cfg: &ModelConfig, len: usize, seed: u64) -> KvPrefix {
    let mut rng = Rng(seed);
    let n = cfg.layers * cfg.kv_heads * len * cfg.head_dim;
    KvPrefix {
        len,
        k: rng.vec(n, 1.0),
        v: rng.vec(n, 1.0),
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= 1e-4 + 1e-4 * w.abs(),
            "{what}[{i}]: device {g}, cpu {w} (|diff| {err})"
        );
    }
}

/// Logits of every row of a two-sequence step (slot 1 behind a prefix), then of one more
/// token each.
fn batched_logits<B: Backend>(m: &Model<B>, pre: &KvPrefix) -> (Vec<f32>, Vec<f32>) {
    let mut sess = m.session(2, 128).expect("session");
    sess.set_prefix(&m.cfg, &m.backend, 1, pre).expect("prefix");
    let a: Vec<u32> = vec![3, 17, 5, 60, 2, 9, 33, 1, 44, 8, 12];
    let b: Vec<u32> = vec![7, 7, 21, 0, 58];
    let step = [SeqInput::tokens(0, &a), SeqInput::tokens(1, &b)];
    let first = m
        .forward(&mut sess, &step, Logits::All, None)
        .expect("forward")
        .to_vec();
    let step = [SeqInput::tokens(1, &[40]), SeqInput::tokens(0, &[11])];
    let second = m
        .forward(&mut sess, &step, Logits::Last, None)
        .expect("forward")
        .to_vec();
    (first, second)
}

fn greedy<B: Backend>(m: &Model<B>, pre: &KvPrefix) -> Vec<Vec<u32>> {
    let mut sess = m.session(2, 128).expect("session");
    let prompts = vec![vec![5u32, 9, 13, 2], vec![30u32, 1]];
    let prefixes = [None, Some(pre.clone())];
    let opts = GenerateOptions {
        max_new_tokens: 8,
        ..GenerateOptions::default()
    };
    generate(m, &mut sess, &prompts, Some(&prefixes), &opts, |_, _| {
        Ok(true)
    })
    .expect("generates")
}

/// `wf` on both backends: f32 weights, or bf16 ones (host bf16 on the CPU, resident bf16 and
/// the portable bf16 kernels on the device; both multiply the same rounded weights in f32).
fn device_matches_cpu(qwen: bool, wf: WeightFormat) {
    let cfg = config(qwen);
    let src = weights(&cfg, 11 + u64::from(qwen));
    let cpu = model(&cfg, &src, CpuBackend, wf);
    let be = DeviceBackend::new(Emu, "emulated device").without_tensor_cores();
    let dev = model(&cfg, &src, be, wf);
    if wf == WeightFormat::Bf16 {
        assert!(
            matches!(dev.weights.layers[0].wq.data, MatData::Device(..)),
            "bf16 weights stay resident as bf16 on the device"
        );
    }
    // 70 prefix positions: decode attention over > 64 positions splits (flash-decoding).
    let pre = prefix(&cfg, 70, 5);
    let (c1, c2) = batched_logits(&cpu, &pre);
    let (d1, d2) = batched_logits(&dev, &pre);
    assert_close("prefill logits", &d1, &c1);
    assert_close("next-token logits", &d2, &c2);
    let (gc, gd) = (greedy(&cpu, &pre), greedy(&dev, &pre));
    assert_eq!(gd, gc, "greedy continuations");
    assert!(gc.iter().all(|g| g.len() == 8), "8 tokens each: {gc:?}");
}

#[test]
fn llama_with_gqa_on_the_emulated_device_matches_the_cpu() {
    device_matches_cpu(false, WeightFormat::F32);
}

#[test]
fn llama_with_bf16_weights_on_the_emulated_device_matches_the_cpu() {
    device_matches_cpu(false, WeightFormat::Bf16);
}

#[test]
fn qwen2_with_biases_and_tied_embeddings_on_the_emulated_device_matches_the_cpu() {
    device_matches_cpu(true, WeightFormat::F32);
}

/// Tied embeddings in bf16: the lookup widens bf16 rows to f32 (embedding_forward_bf16_f32)
/// and the LM head runs the bf16 matmul over the same buffer.
#[test]
fn qwen2_with_bf16_tied_embeddings_on_the_emulated_device_matches_the_cpu() {
    device_matches_cpu(true, WeightFormat::Bf16);
}

/// A token id outside the vocabulary is an error naming it, as on the CPU, not a wild read.
#[test]
fn out_of_vocabulary_id_is_an_error() {
    let cfg = config(false);
    let dev = model(
        &cfg,
        &weights(&cfg, 3),
        DeviceBackend::new(Emu, "emulated device"),
        WeightFormat::F32,
    );
    let mut sess = dev.session(1, 8).expect("session");
    let err = dev
        .forward(
            &mut sess,
            &[SeqInput::tokens(0, &[1, 61])],
            Logits::Last,
            None,
        )
        .expect_err("id 61 of a 61-token vocabulary");
    assert!(err.to_string().contains("row 61 is out of range"), "{err}");
}

/// bf16 weights with the tensor-core prefill (the emulator's model of mma.sync): the same
/// model as the CPU's bf16 one except that prefill matmul inputs are rounded to bf16 too
/// (2^-9 relative each), so logits agree to a bf16-activation bound instead of f32's.
#[test]
fn tensor_core_prefill_on_the_emulated_device_stays_within_bf16_rounding_of_the_cpu() {
    let cfg = config(false);
    let src = weights(&cfg, 11);
    let cpu = model(&cfg, &src, CpuBackend, WeightFormat::Bf16);
    let be = DeviceBackend::new(Emu, "emulated device");
    assert!(
        be.tensor_cores(),
        "the emulated mma passes the backend's self-test"
    );
    let dev = model(&cfg, &src, be, WeightFormat::Bf16);
    let pre = prefix(&cfg, 70, 5);
    let (c1, _) = batched_logits(&cpu, &pre);
    let (d1, _) = batched_logits(&dev, &pre);
    let scale = c1.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let diff = d1
        .iter()
        .zip(&c1)
        .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
    eprintln!("tensor-core prefill: max |Δlogit| {diff:.3e}, max |logit| {scale:.2}");
    assert!(
        diff > 0.0,
        "bf16 activations should differ from the f32 ones somewhere"
    );
    assert!(
        diff <= 2e-2 * scale,
        "max |Δlogit| {diff} against a scale of {scale}"
    );
}

/// GGUF blocks of a tensor: Q8_0 (d = max|x|/127) or Q4_1 (d = (max − min)/15, m = min), 32
/// values a block, as a file would hold them.
fn quantize(ty: QType, rows: usize, cols: usize, x: &[f32]) -> QuantMatrix {
    let mut data = Vec::new();
    for blk in x.chunks_exact(32) {
        let f16b = |v: f32| half::f16::from_f32(v).to_le_bytes();
        match ty {
            QType::Q8_0 => {
                let amax = blk.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let d = half::f16::from_f32(amax / 127.0).to_f32();
                data.extend(f16b(d));
                data.extend(
                    blk.iter()
                        .map(|v| (v / d).round().clamp(-127.0, 127.0) as i8 as u8),
                );
            }
            QType::Q4_1 => {
                let lo = blk.iter().fold(f32::MAX, |a, &v| a.min(v));
                let hi = blk.iter().fold(f32::MIN, |a, &v| a.max(v));
                let d = half::f16::from_f32((hi - lo) / 15.0).to_f32();
                let m = half::f16::from_f32(lo).to_f32();
                data.extend(f16b(d));
                data.extend(f16b(m));
                let q = |v: f32| ((v - m) / d).round().clamp(0.0, 15.0) as u8;
                data.extend((0..16).map(|j| q(blk[j]) | (q(blk[j + 16]) << 4)));
            }
            _ => unreachable!("the test quantises Q8_0 and Q4_1 only"),
        }
    }
    QuantMatrix::new(ty, rows, cols, data).expect("whole blocks")
}

/// A model file's view: matrices as GGUF blocks (the embedding Q8_0, the rest Q4_1, as in
/// the default model), `load` giving their exact dequantised values (the f32 path's weights).
struct BlockSource {
    quant: HashMap<String, QuantMatrix>,
    dense: MapSource,
}

impl TensorSource for BlockSource {
    fn path(&self) -> &Path {
        Path::new("<blocks>")
    }
    fn has(&self, name: &str) -> bool {
        self.dense.has(name)
    }
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.quant.get(name) {
            Some(q) => {
                let mut v = vec![0.0; q.rows * q.cols];
                q.dequantize_rows(0, q.rows, &mut v);
                Ok(v)
            }
            None => self.dense.load(name, shape),
        }
    }
    fn load_quant(&self, name: &str, _shape: [usize; 2]) -> Result<Option<QuantMatrix>> {
        Ok(self.quant.get(name).cloned())
    }
}

/// `--weights native` on the device keeps Q8_0 / Q4_1 blocks and dequantises them in the
/// kernels to exactly the f32 path's weights: logits and greedy tokens as the CPU's f32 path
/// on the dequantised values, to f32 accuracy.
#[test]
fn native_blocks_on_the_emulated_device_match_the_cpus_f32_path() {
    let cfg = ModelConfig {
        hidden: 64,
        intermediate: 96,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        tie_embeddings: true,
        ..config(false)
    };
    let dense = weights(&cfg, 23);
    let mut quant = HashMap::new();
    for (name, (shape, v)) in &dense.0 {
        if shape.len() == 2 {
            let ty = if name.contains("embed") {
                QType::Q8_0
            } else {
                QType::Q4_1
            };
            quant.insert(name.clone(), quantize(ty, shape[0], shape[1], v));
        }
    }
    let src = BlockSource { quant, dense };
    let cpu = model(&cfg, &src, CpuBackend, WeightFormat::F32);
    let dev = model(
        &cfg,
        &src,
        DeviceBackend::new(Emu, "emulated device"),
        WeightFormat::Native,
    );
    assert!(
        matches!(dev.weights.layers[0].w_up.data, MatData::Device(_, b) if b == 96 * 64 / 32 * 20),
        "Q4_1 blocks kept on the device as the file holds them"
    );
    let pre = prefix(&cfg, 70, 5);
    let (c1, c2) = batched_logits(&cpu, &pre);
    let (d1, d2) = batched_logits(&dev, &pre);
    assert_close("prefill logits", &d1, &c1);
    assert_close("next-token logits", &d2, &c2);
    assert_eq!(
        greedy(&dev, &pre),
        greedy(&cpu, &pre),
        "greedy continuations"
    );
}
