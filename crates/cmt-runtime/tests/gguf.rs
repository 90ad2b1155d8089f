//! GGUF loading on files written here: every supported tensor type, llama q/k row order,
//! config and tokenizer from metadata, and damaged files (truncated at every header byte,
//! bad magic/version/type, tensors past the end, NaN weights) giving errors, not panics.
mod common;
use cmt_runtime::{CpuBackend, Logits, ModelConfig, SeqInput};
use common::gguf_writer::{Meta, Ty, Writer};
use common::tiny::{assert_close, reference_logits, MapSource};
use std::collections::HashMap;

const TYPES: [Ty; 6] = [Ty::F32, Ty::F16, Ty::BF16, Ty::Q8_0, Ty::Q4_0, Ty::Q4_1];

fn tiny_cfg() -> ModelConfig {
    ModelConfig {
        arch: cmt_runtime::Arch::Llama,
        hidden: 64,
        intermediate: 96,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        vocab: 40,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: Default::default(),
        tie_embeddings: false,
        qkv_bias: false,
        max_positions: 64,
        bos_token: None,
        eos_tokens: vec![0],
    }
}

/// llama.cpp's convert permute of q/k rows: per head [2, hd/2] -> [hd/2, 2].
fn permute(w: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for j in 0..hd / 2 {
            for t in 0..2 {
                let (dst, src) = (h * hd + j * 2 + t, h * hd + t * hd / 2 + j);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// A tiny llama GGUF whose matrices cycle through all tensor types. Returns the file bytes
/// and the weights as the file holds them, in HF layout (the reference's input).
fn tiny_gguf(cfg: &ModelConfig, seed: u64) -> (Vec<u8>, MapSource) {
    tiny_gguf_with(cfg, seed, |_| {})
}

/// `tiny_gguf` with more metadata or tensors added by `extra`.
fn tiny_gguf_with(
    cfg: &ModelConfig,
    seed: u64,
    extra: impl FnOnce(&mut Writer),
) -> (Vec<u8>, MapSource) {
    tiny_gguf_typed(cfg, seed, &TYPES, extra)
}

/// `tiny_gguf_with`, its matrices stored in `matrix_types` in turn.
fn tiny_gguf_typed(
    cfg: &ModelConfig,
    seed: u64,
    matrix_types: &[Ty],
    extra: impl FnOnce(&mut Writer),
) -> (Vec<u8>, MapSource) {
    let mut rng = common::tiny::Rng(seed);
    let mut w = Writer::new();
    let a = "llama";
    for (k, v) in [
        ("block_count", cfg.layers),
        ("embedding_length", cfg.hidden),
        ("feed_forward_length", cfg.intermediate),
        ("attention.head_count", cfg.heads),
        ("attention.head_count_kv", cfg.kv_heads),
        ("context_length", cfg.max_positions),
    ] {
        w.meta(&format!("{a}.{k}"), Meta::U32(v as u32));
    }
    w.meta("general.architecture", Meta::Str(a.into()));
    w.meta(&format!("{a}.rope.freq_base"), Meta::F32(cfg.rope_theta));
    w.meta(
        &format!("{a}.attention.layer_norm_rms_epsilon"),
        Meta::F32(cfg.rms_eps),
    );
    let mut tokens: Vec<String> = ["<|endoftext|>", "a", "b", "c", "Ġ", "ab", "Ġa", "Ġab"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    while tokens.len() < cfg.vocab {
        tokens.push(format!("t{}", tokens.len()));
    }
    let mut types = vec![1i32; cfg.vocab];
    types[0] = 3;
    w.meta("tokenizer.ggml.model", Meta::Str("gpt2".into()));
    w.meta("tokenizer.ggml.tokens", Meta::StrArray(tokens));
    w.meta("tokenizer.ggml.token_type", Meta::I32Array(types));
    w.meta(
        "tokenizer.ggml.merges",
        Meta::StrArray(vec!["Ġ a".into(), "a b".into(), "Ġa b".into()]),
    );
    w.meta("tokenizer.ggml.eos_token_id", Meta::U32(0));
    w.meta("tokenizer.ggml.add_bos_token", Meta::Bool(false));
    let mut hf = HashMap::new();
    for (i, (name, shape)) in cmt_runtime::convert::hf_tensor_shapes(cfg)
        .into_iter()
        .enumerate()
    {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = if shape.len() == 1 {
            rng.vec(n, 0.2).into_iter().map(|x| 1.0 + x).collect()
        } else {
            rng.vec(n, 0.4)
        };
        let ty = if shape.len() == 1 {
            Ty::F32
        } else {
            matrix_types[i % matrix_types.len()]
        };
        let gname = cmt_runtime::gguf::gguf_name(&name).unwrap();
        // Quantisation works within rows, so the stored values in HF order are the
        // round-trip of the HF-order rows even when the file holds them permuted.
        let (_, stored) = common::gguf_writer::encode(ty, &v);
        let on_disk = if name.ends_with("q_proj.weight") {
            permute(&v, cfg.heads, shape[0], shape[1])
        } else if name.ends_with("k_proj.weight") {
            permute(&v, cfg.kv_heads, shape[0], shape[1])
        } else {
            v
        };
        w.tensor(&gname, &shape, ty, &on_disk);
        hf.insert(name, (shape, stored));
    }
    extra(&mut w);
    (w.to_bytes(), MapSource(hf))
}

fn write_tmp(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.gguf");
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

#[test]
fn tiny_gguf_of_every_type_matches_reference() {
    let cfg = tiny_cfg();
    let (bytes, stored) = tiny_gguf(&cfg, 5);
    let (_d, path) = write_tmp(&bytes);
    let (model, tok) = cmt_runtime::load_model(&path, CpuBackend).unwrap();
    assert_eq!(model.cfg, cfg, "config from GGUF metadata");
    assert_eq!(tok.encode("ab ab", false).unwrap(), vec![5, 7]);
    assert_eq!(tok.encode("<|endoftext|>a", false).unwrap(), vec![0, 1]);
    assert_eq!(tok.decode(&[5, 7]).unwrap(), "ab ab");
    let ids = [1u32, 5, 9, 30, 2, 2, 17];
    let mut sess = model.session(1, 16).unwrap();
    let got = model
        .forward(&mut sess, &[SeqInput::tokens(0, &ids)], Logits::All, None)
        .unwrap();
    assert_close(
        got,
        &reference_logits(&cfg, &stored, None, &[], &ids),
        "tiny GGUF",
    );
}

#[test]
fn tiny_gguf_converts_to_an_identical_hf_directory() {
    let cfg = tiny_cfg();
    let (bytes, _) = tiny_gguf(&cfg, 9);
    let (d, path) = write_tmp(&bytes);
    let out = d.path().join("hf");
    cmt_runtime::convert::gguf_to_hf(&path, &out).unwrap();
    let (a, ta) = cmt_runtime::load_model(&path, CpuBackend).unwrap();
    let (b, tb) = cmt_runtime::load_model(&out, CpuBackend).unwrap();
    assert_eq!(a.cfg, b.cfg);
    assert_eq!(
        ta.encode("ab ab <|endoftext|>", false).unwrap(),
        tb.encode("ab ab <|endoftext|>", false).unwrap()
    );
    let ids = [3u32, 1, 4, 1, 5, 9, 2, 6];
    let mut sa = a.session(1, 16).unwrap();
    let mut sb = b.session(1, 16).unwrap();
    let la = a
        .forward(&mut sa, &[SeqInput::tokens(0, &ids)], Logits::All, None)
        .unwrap();
    let lb = b
        .forward(&mut sb, &[SeqInput::tokens(0, &ids)], Logits::All, None)
        .unwrap();
    assert_eq!(la, lb, "logits must be bit-identical");
}

fn open_err(bytes: &[u8]) -> String {
    let (_d, path) = write_tmp(bytes);
    match cmt_runtime::gguf::GgufFile::open(&path) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncation_anywhere_is_a_clear_error() {
    let (bytes, _) = tiny_gguf(&tiny_cfg(), 1);
    let (_d, full) = write_tmp(&bytes);
    let g = cmt_runtime::gguf::GgufFile::open(&full).unwrap();
    let data_start = g.tensors.iter().map(|t| t.offset).min().unwrap() as usize;
    // every cut inside the header and directory, then a stride through the data
    let cuts = (0..data_start).chain((data_start..bytes.len()).step_by(97));
    for cut in cuts {
        let e = open_err(&bytes[..cut]);
        assert!(
            e.contains("model.gguf"),
            "cut at {cut}: error must name the file: {e:?}"
        );
        assert!(
            e.contains("offset") || e.contains("truncated") || e.contains("past the end"),
            "cut at {cut}: unexpected message {e:?}"
        );
    }
}

#[test]
fn damaged_headers_are_named_errors() {
    let (bytes, _) = tiny_gguf(&tiny_cfg(), 2);
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(open_err(&b).contains("not a GGUF file"));
    let mut b = bytes.clone();
    b[4..8].copy_from_slice(&99u32.to_le_bytes());
    assert!(open_err(&b).contains("version 99"));
    let mut b = bytes.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_err(&b).contains("cannot fit"), "{}", open_err(&b));
    // First metadata key length -> absurd.
    let mut b = bytes.clone();
    b[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(open_err(&b).contains("cannot fit"));
    // A tensor type nobody knows: patch the first tensor's type field.
    let (_d, p) = write_tmp(&bytes);
    let g = cmt_runtime::gguf::GgufFile::open(&p).unwrap();
    let name = &g.tensors[0].name;
    let at = bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap()
        + name.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let ty_at = at + 4 + 8 * n_dims;
    let mut b = bytes.clone();
    b[ty_at..ty_at + 4].copy_from_slice(&77u32.to_le_bytes());
    let e = open_err(&b);
    assert!(e.contains(name) && e.contains("77"), "{e}");
    // Offset pointing past the end of the file.
    let mut b = bytes.clone();
    b[ty_at + 4..ty_at + 12].copy_from_slice(&(1u64 << 33).to_le_bytes());
    assert!(open_err(&b).contains("past the end"));
}

#[test]
fn nan_weight_is_reported_with_its_tensor() {
    let cfg = tiny_cfg();
    let (bytes, _) = tiny_gguf(&cfg, 3);
    // One NaN in an F32 norm weight, patched in place.
    let (_d, p) = write_tmp(&bytes);
    let g = cmt_runtime::gguf::GgufFile::open(&p).unwrap();
    let t = g.tensor("blk.1.ffn_norm.weight").unwrap();
    let mut b = bytes.clone();
    let o = t.offset as usize + 4 * 3;
    b[o..o + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let (_d2, p2) = write_tmp(&b);
    let e = cmt_runtime::load_model(&p2, CpuBackend)
        .err()
        .expect("NaN weight must fail")
        .to_string();
    assert!(
        e.contains("post_attention_layernorm") || e.contains("ffn_norm"),
        "{e}"
    );
    assert!(e.contains("element 3"), "{e}");
}

#[test]
fn not_a_model_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("notes.txt");
    std::fs::write(&p, "hello").unwrap();
    let e = cmt_runtime::load_model(&p, CpuBackend)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("notes.txt") && e.contains("neither a GGUF"),
        "{e}"
    );
    let e = cmt_runtime::load_model(d.path(), CpuBackend)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
    let e = cmt_runtime::load_model(&d.path().join("missing.gguf"), CpuBackend)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.gguf"), "{e}");
}

/// `cfg` with rotary scaling, and ids long enough (60 of 64 positions) for it to matter.
fn scaled_cfg(scaling: cmt_runtime::RopeScaling) -> (ModelConfig, Vec<u32>) {
    let cfg = ModelConfig {
        rope_scaling: scaling,
        ..tiny_cfg()
    };
    let ids = (0..60u32).map(|i| (i * 7 + 3) % cfg.vocab as u32).collect();
    (cfg, ids)
}

fn logits_of(model: &cmt_runtime::Model<CpuBackend>, ids: &[u32]) -> Vec<f32> {
    let mut sess = model.session(1, ids.len()).unwrap();
    model
        .forward(&mut sess, &[SeqInput::tokens(0, ids)], Logits::All, None)
        .unwrap()
        .to_vec()
}

/// Checks the runtime against the f64 reference with `cfg`'s scaling, and that the same
/// reference without scaling is far off (so the check can fail).
fn assert_scaled_reference(got: &[f32], cfg: &ModelConfig, w: &MapSource, ids: &[u32]) {
    assert_close(got, &reference_logits(cfg, w, None, &[], ids), "scaled");
    let plain = ModelConfig {
        rope_scaling: Default::default(),
        ..cfg.clone()
    };
    let off = reference_logits(&plain, w, None, &[], ids)
        .iter()
        .zip(got)
        .map(|(a, b)| (a - *b as f64).abs())
        .fold(0.0, f64::max);
    assert!(off > 1e-2, "unscaled reference only {off} away");
}

#[test]
fn gguf_linear_rope_scaling_applies_and_converts() {
    let (cfg, ids) = scaled_cfg(cmt_runtime::RopeScaling::Linear { factor: 4.0 });
    let (bytes, stored) = tiny_gguf_with(&cfg, 21, |w| {
        w.meta("llama.rope.scaling.type", Meta::Str("linear".into()));
        w.meta("llama.rope.scaling.factor", Meta::F32(4.0));
    });
    let (d, path) = write_tmp(&bytes);
    let (model, _) = cmt_runtime::load_model(&path, CpuBackend).unwrap();
    assert_eq!(model.cfg, cfg);
    let got = logits_of(&model, &ids);
    assert_scaled_reference(&got, &cfg, &stored, &ids);
    let out = d.path().join("hf");
    cmt_runtime::convert::gguf_to_hf(&path, &out).unwrap();
    let (hf, _) = cmt_runtime::load_model(&out, CpuBackend).unwrap();
    assert_eq!(hf.cfg, cfg, "convert keeps the scaling");
    assert_eq!(logits_of(&hf, &ids), got);
}

/// llama.cpp's converter: Llama-3 scaling as per-frequency divisors, computed in f64 from
/// the f32 default frequencies.
fn llama3_divisors(hd: usize, theta: f32, factor: f64, lo: f64, hi: f64, old: f64) -> Vec<f32> {
    (0..hd / 2)
        .map(|i| {
            let f = (1.0 / theta.powf((2 * i) as f32 / hd as f32)) as f64;
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < old / hi {
                1.0
            } else if wavelen > old / lo {
                factor as f32
            } else {
                let s = (old / wavelen - lo) / (hi - lo);
                (1.0 / ((1.0 - s) / factor + s)) as f32
            }
        })
        .collect()
}

#[test]
fn gguf_rope_freqs_apply_as_divisors_and_convert_as_llama3() {
    let llama3 = cmt_runtime::RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    };
    let divisors = llama3_divisors(16, 10_000.0, 8.0, 1.0, 4.0, 64.0);
    assert!(divisors.iter().filter(|&&d| d != 1.0 && d != 8.0).count() >= 2);
    let (cfg, ids) = scaled_cfg(cmt_runtime::RopeScaling::Divisors(divisors.clone()));
    let (bytes, stored) = tiny_gguf_with(&cfg, 23, |w| {
        w.tensor("rope_freqs.weight", &[8], Ty::F32, &divisors);
    });
    let (d, path) = write_tmp(&bytes);
    let (model, _) = cmt_runtime::load_model(&path, CpuBackend).unwrap();
    assert_eq!(model.cfg, cfg, "rope_freqs.weight read as divisors");
    let got = logits_of(&model, &ids);
    let as_llama3 = ModelConfig {
        rope_scaling: llama3.clone(),
        ..cfg.clone()
    };
    assert_scaled_reference(&got, &as_llama3, &stored, &ids);
    let out = d.path().join("hf");
    cmt_runtime::convert::gguf_to_hf(&path, &out).unwrap();
    let (hf, _) = cmt_runtime::load_model(&out, CpuBackend).unwrap();
    assert_eq!(hf.cfg, as_llama3, "converted as the llama3 parameters");
    let diff = common::max_abs_diff(&logits_of(&hf, &ids), &got);
    // The two loads differ only in their rotary tables' last bits (stored divisors against
    // the llama3 formula); that difference, amplified through the layers, is the whole
    // diff: 7.7e-6 with per-row attention, 1.24e-5 since prefill attention runs as GEMMs
    // (another summation order), on logits up to ~6 (2e-6 relative).
    let scale = got.iter().fold(1f32, |a, v| a.max(v.abs()));
    assert!(
        diff < 3e-6 * scale,
        "converted model's logits moved by {diff} (largest logit {scale})"
    );
}

#[test]
fn gguf_rope_scaling_refusals_name_the_key() {
    type Extra = Box<dyn FnOnce(&mut Writer)>;
    let cases: Vec<(Extra, &str, &str)> = vec![
        (
            Box::new(|w| w.meta("llama.rope.scaling.type", Meta::Str("yarn".into()))),
            "llama.rope.scaling.type",
            "yarn",
        ),
        (
            Box::new(|w| w.meta("llama.rope.scaling.attn_factor", Meta::F32(0.5))),
            "llama.rope.scaling.attn_factor",
            "0.5",
        ),
        (
            Box::new(|w| {
                w.meta("llama.rope.scaling.type", Meta::Str("none".into()));
                w.meta("llama.rope.scaling.factor", Meta::F32(2.0));
            }),
            "llama.rope.scaling.factor",
            "none",
        ),
        (
            Box::new(|w| w.meta("llama.rope.scaling.factor", Meta::F32(-4.0))),
            "llama.rope.scaling.factor",
            "-4",
        ),
        (
            Box::new(|w| {
                w.tensor("rope_freqs.weight", &[4], Ty::F32, &[1.0; 4]);
            }),
            "rope_freqs.weight",
            "4 values",
        ),
        (
            Box::new(|w| {
                w.tensor(
                    "rope_freqs.weight",
                    &[8],
                    Ty::F32,
                    &[1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                );
            }),
            "rope_freqs.weight",
            "not a positive",
        ),
        (
            Box::new(|w| {
                w.meta("llama.rope.scaling.factor", Meta::F32(2.0));
                w.tensor("rope_freqs.weight", &[8], Ty::F32, &[1.0; 8]);
            }),
            "rope_freqs.weight",
            "linear",
        ),
    ];
    for (extra, key, word) in cases {
        let (bytes, _) = tiny_gguf_with(&tiny_cfg(), 3, extra);
        let (_d, path) = write_tmp(&bytes);
        let e = cmt_runtime::load_model(&path, CpuBackend)
            .err()
            .unwrap_or_else(|| panic!("{key}: accepted"))
            .to_string();
        eprintln!("{e}");
        assert!(
            e.contains("model.gguf") && e.contains(key) && e.contains(word),
            "{e}"
        );
    }
}

/// Divisors that are not Llama-3 scaling run as given, but `cmt convert` refuses them
/// (config.json cannot say them) and writes nothing.
#[test]
fn convert_refuses_divisors_config_json_cannot_express() {
    let divisors = [1.0, 3.0, 1.5, 2.0, 7.0, 1.0, 2.0, 5.0];
    let (cfg, ids) = scaled_cfg(cmt_runtime::RopeScaling::Divisors(divisors.to_vec()));
    let (bytes, stored) = tiny_gguf_with(&cfg, 29, |w| {
        w.tensor("rope_freqs.weight", &[8], Ty::F32, &divisors);
    });
    let (d, path) = write_tmp(&bytes);
    let (model, _) = cmt_runtime::load_model(&path, CpuBackend).unwrap();
    assert_scaled_reference(&logits_of(&model, &ids), &cfg, &stored, &ids);
    let out = d.path().join("hf");
    let e = cmt_runtime::convert::gguf_to_hf(&path, &out)
        .expect_err("convert refuses")
        .to_string();
    assert!(
        e.contains("model.gguf") && e.contains("rope_freqs.weight"),
        "{e}"
    );
    assert!(!out.exists(), "nothing written");
}

/// A tiny model whose every matrix is a k-quant (Q4_K, Q5_K, Q6_K in turn), loaded with its
/// blocks kept (`--weights native`) against the f32 path of the same file: a few tokens at
/// a time (the int8 path, two activation planes) and a longer prefill (dequantised tiles).
/// Covers the loader's kept k-quants end to end: q/k rows reordered in blocks, the
/// embedding and LM head read from blocks. Skips where the CPU lacks AVX-512 VNNI (the
/// k-quants then load as f32, which the last assertion checks).
#[test]
fn kquant_model_native_matches_its_f32_path() {
    let cfg = ModelConfig {
        hidden: 256,
        intermediate: 512,
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
        ..tiny_cfg()
    };
    let (bytes, _) = tiny_gguf_typed(&cfg, 11, &[Ty::Q4K, Ty::Q5K, Ty::Q6K], |_| {});
    let (_d, path) = write_tmp(&bytes);
    let load = |f| cmt_runtime::load_model_as(&path, CpuBackend, f).unwrap().0;
    let (native, dense) = (
        load(cmt_runtime::WeightFormat::Native),
        load(cmt_runtime::WeightFormat::F32),
    );
    let kept = native.weights.layers[0].w_up.quant().is_some();
    let fast = cmt_runtime::quant::dot::DotKernel::best().level()
        == cmt_runtime::quant::dot::SimdLevel::Avx512Vnni;
    assert_eq!(
        kept, fast,
        "k-quants are kept exactly where their AVX-512 kernel runs"
    );
    if !kept {
        eprintln!("SKIPPED: no AVX-512 VNNI here; the k-quants loaded as f32");
        return;
    }
    assert!(
        native.weights.embed.quant().is_some() && native.weights.layers[1].wq.quant().is_some()
    );
    let ids: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 40).collect();
    let run = |m: &cmt_runtime::Model<CpuBackend>, step: usize| -> Vec<f32> {
        let mut sess = m.session(1, ids.len()).unwrap();
        let mut out = Vec::new();
        for chunk in ids.chunks(step) {
            out.extend_from_slice(
                m.forward(&mut sess, &[SeqInput::tokens(0, chunk)], Logits::All, None)
                    .unwrap(),
            );
        }
        out
    };
    let want = run(&dense, 20);
    let scale = want.iter().fold(0.0f32, |a, &b| a.max(b.abs()));
    for step in [1, 4, 20] {
        let got = run(&native, step);
        let d = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
        eprintln!(
            "k-quant model, {step} tokens a step: max |Δlogit| {d:.2e} (logit scale {scale:.2})"
        );
        assert!(
            d <= 1e-3 * scale + 1e-4,
            "{step} tokens a step: {d} vs scale {scale}"
        );
    }
}
