//! The default model with its GGUF blocks kept (`--weights native`) against HF's golden
//! values and the f32 path: greedy continuations, the perplexity paragraph's loss (scored
//! both in one prefill step, the dequantised-tile GEMM, and token by token, the int8 decode
//! path), and a Q8_0 copy of the model written by gguf-py.
mod common;
use cmt_runtime::quant::matmul::prefill_reads_packed;
use cmt_runtime::quant::QType;
use cmt_runtime::score::text_loss;
use cmt_runtime::{CpuBackend, GenerateOptions, Logits, Model, SeqInput, WeightFormat};
use common::{require, Fixtures};
use std::path::Path;
use std::sync::OnceLock;

fn load(path: &Path, format: WeightFormat) -> Model<CpuBackend> {
    cmt_runtime::load_model_as(path, CpuBackend, format)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .0
}

fn native_default() -> Option<&'static Model<CpuBackend>> {
    static M: OnceLock<Option<Model<CpuBackend>>> = OnceLock::new();
    M.get_or_init(|| Some(load(&common::default_model_path()?, WeightFormat::Native)))
        .as_ref()
}

/// Mean next-token cross-entropy fed one token per step (every matmul on the int8 path).
fn stepwise_loss(model: &Model<CpuBackend>, ids: &[u32]) -> f64 {
    let mut sess = model.session(1, ids.len()).unwrap();
    let mut total = 0.0f64;
    for t in 0..ids.len() - 1 {
        let logits = model
            .forward(
                &mut sess,
                &[SeqInput::tokens(0, &ids[t..t + 1])],
                Logits::Last,
                None,
            )
            .unwrap();
        let mx = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = mx
            + logits
                .iter()
                .map(|&l| (l as f64 - mx).exp())
                .sum::<f64>()
                .ln();
        total += lse - logits[ids[t + 1] as usize] as f64;
    }
    total / (ids.len() - 1) as f64
}

#[test]
fn default_model_keeps_its_blocks_in_place() {
    let m = require!(native_default(), "default model");
    let f32_bytes = m.cfg.vocab * m.cfg.hidden * 4;
    let w = &m.weights;
    // token_embd is Q8_0 (the tied LM head), every layer matrix Q4_1; q/k are reordered
    // (llama.cpp's head permutation) and so owned, the rest read from the file's map.
    assert_eq!(w.embed.quant().map(|q| q.ty), Some(QType::Q8_0));
    for l in &w.layers {
        for (name, mat) in [
            ("wv", &l.wv),
            ("wo", &l.wo),
            ("w_gate", &l.w_gate),
            ("w_down", &l.w_down),
        ] {
            let q = mat
                .quant()
                .unwrap_or_else(|| panic!("{name} was dequantised"));
            assert_eq!(q.ty, QType::Q4_1, "{name}");
            assert!(q.is_mapped(), "{name} was copied");
        }
        assert!(l.wq.quant().is_some_and(|q| !q.is_mapped()));
    }
    let bytes = w.matrix_bytes();
    eprintln!(
        "native matrices: {bytes} bytes ({:.1}% of f32's)",
        100.0 * bytes as f64 / (w.matrix_bytes_f32() as f64)
    );
    assert!(bytes < f32_bytes * 2, "{bytes} bytes");
}

#[test]
fn greedy_continuations_agree_with_hf_for_16_tokens() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(native_default(), "default model");
    for i in 0..3 {
        let ids = fx.ids(&format!("prompt{i}.ids"));
        let want = fx.ids(&format!("prompt{i}.greedy"));
        let mut sess = m.session(1, ids.len() + want.len()).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let got =
            cmt_runtime::generate(m, &mut sess, &[ids], None, &opts, |_, _| Ok(true)).unwrap();
        let same = got[0].iter().zip(&want).take_while(|(a, b)| a == b).count();
        eprintln!(
            "prompt{i}: native greedy agrees with HF for {same} of {} tokens",
            want.len()
        );
        assert!(
            same >= 16,
            "prompt{i}: diverges at token {same}: {:?} vs {:?}",
            got[0],
            want
        );
    }
}

/// Prefill's own check. Where prefill runs the packed kernel (AVX-512 VNNI CPUs: 16-bit
/// activations, each row quantised on its own) it equals token by token up to summation
/// order, and both carry the activation rounding. Prefill attention runs as GEMMs and
/// decode as per-row dots, so the orders differ there, and a last-bit difference in an
/// activation can move its 16-bit rounding by a step: measured 3.4e-5 on the Q8_0 copy
/// (below 1e-5 on the default Q4_1 file), so the bar is bf16's 1e-4. Elsewhere prefill dequantises tiles to
/// the exact f32 values and meets `exact` (the f32 path's figure, `what`) to 1e-4.
fn assert_prefill_path(m: &Model<CpuBackend>, prefill: f64, stepwise: f64, exact: f64, what: &str) {
    let packed = m.weights.layers[0]
        .w_up
        .quant()
        .is_some_and(|q| q.packed.is_some());
    if packed && prefill_reads_packed() {
        assert!(
            (prefill - stepwise).abs() <= 1e-4,
            "packed prefill {prefill} vs token by token {stepwise}"
        );
    } else {
        assert!(
            (prefill - exact).abs() <= 1e-4,
            "prefill {prefill} vs {what} {exact}"
        );
    }
}

#[test]
fn perplexity_within_one_percent_of_hf() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(native_default(), "default model");
    let ids = fx.ids("ppl.ids");
    let hf = fx.f32("ppl.loss").0[0] as f64;
    let mut sess = m.session(1, ids.len()).unwrap();
    let prefill = text_loss(m, &mut sess, &ids).unwrap();
    let stepwise = stepwise_loss(m, &ids);
    eprintln!(
        "ppl loss: HF {hf:.6}, native prefill {prefill:.6}, native token by token {stepwise:.6}"
    );
    assert_prefill_path(m, prefill, stepwise, hf, "HF");
    for (what, v) in [("prefill", prefill), ("token by token", stepwise)] {
        assert!((v - hf).abs() <= 0.01 * hf, "{what} {v} vs HF {hf}");
    }
}

/// The default model rewritten by gguf-py with every Q4_1 matrix requantised to Q8_0
/// (`scripts/requantize_gguf.py`), or None (with a message) where python3 with `gguf`
/// is missing; on CI a missing package is a failure.
fn q8_0_copy(dir: &Path) -> Option<std::path::PathBuf> {
    let src = common::default_model_path()?;
    let out = dir.join("smollm2-q8_0.gguf");
    let args = [src.as_os_str(), out.as_os_str(), "Q8_0".as_ref()];
    common::run_script("requantize_gguf.py", &args, "gguf numpy")?;
    Some(out)
}

/// The reference for the Q8_0 copy is the f32 path on the same file: its weights are not
/// the golden Q4_1 ones (requantising moves the loss by ~0.2% by itself), and the f32 path
/// is HF's loss to 1e-4 on the golden weights (`golden.rs`).
#[test]
fn q8_0_copy_within_0_2_percent_of_the_f32_path() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let dir = tempfile::tempdir().unwrap();
    let path = require!(q8_0_copy(dir.path()), "a Q8_0 copy of the default model");
    let m = load(&path, WeightFormat::Native);
    assert_eq!(
        m.weights.layers[0].w_up.quant().map(|q| q.ty),
        Some(QType::Q8_0)
    );
    let ids = fx.ids("ppl.ids");
    let reference = {
        let f = load(&path, WeightFormat::F32);
        let mut sess = f.session(1, ids.len()).unwrap();
        text_loss(&f, &mut sess, &ids).unwrap()
    };
    let stepwise = stepwise_loss(&m, &ids);
    let mut sess = m.session(1, ids.len()).unwrap();
    let prefill = text_loss(&m, &mut sess, &ids).unwrap();
    eprintln!(
        "Q8_0 copy ppl loss: f32 path {reference:.6} (HF on the Q4_1 weights {:.6}), native prefill {prefill:.6}, token by token {stepwise:.6}",
        fx.f32("ppl.loss").0[0]
    );
    assert_prefill_path(&m, prefill, stepwise, reference, "f32");
    for (what, v) in [("prefill", prefill), ("token by token", stepwise)] {
        assert!(
            (v - reference).abs() <= 0.002 * reference,
            "{what} {v} vs f32 {reference}"
        );
    }
}

/// `--weights bf16` rounds the golden Q4_1 values to bf16 (8 mantissa bits), so the loss
/// moves a little from HF's; decode keeps f32 activations, so token by token equals prefill
/// up to summation order.
#[test]
fn bf16_storage_within_one_percent_of_hf() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let path = require!(common::default_model_path(), "default model");
    let m = load(&path, WeightFormat::Bf16);
    assert_eq!(m.weights.matrix_bytes() * 2, m.weights.matrix_bytes_f32());
    let ids = fx.ids("ppl.ids");
    let hf = fx.f32("ppl.loss").0[0] as f64;
    let mut sess = m.session(1, ids.len()).unwrap();
    let prefill = text_loss(&m, &mut sess, &ids).unwrap();
    let stepwise = stepwise_loss(&m, &ids);
    eprintln!("bf16 ppl loss: HF {hf:.6}, prefill {prefill:.6}, token by token {stepwise:.6}");
    assert!(
        (prefill - hf).abs() <= 0.01 * hf,
        "prefill {prefill} vs HF {hf}"
    );
    assert!(
        (stepwise - prefill).abs() <= 1e-4,
        "token by token {stepwise} vs prefill {prefill}"
    );
}
