//! Rotary scaling against HF transformers: tiny random Llama models with `llama3` scaling
//! (top-level `rope_scaling`, the Llama 3.x layout) and `linear` scaling (`rope_parameters`,
//! the transformers 5 layout), loaded through the runtime's HF loader; their f32 logits
//! must match HF's within 1e-4. The fixtures (tests/fixtures/rope_scaling/, ~90 KB each)
//! come from scripts/make_rope_scaling_fixture.py (torch 2.15.0, transformers 5.24.0); the
//! sequence runs past the scaled wavelengths, so with the scaling ignored the logits move
//! by about 7 (`rope_scaling_matters` checks that the test would see it).
mod common;
use cmt_runtime::weights::{SafetensorsSource, Weights};
use cmt_runtime::{CpuBackend, Logits, Model, ModelConfig, RopeScaling, SeqInput};
use common::max_abs_diff;
use safetensors::{Dtype, SafeTensors};
use std::path::PathBuf;

const TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rope_scaling")
        .join(name)
}

/// HF's token ids and f32 logits ([ids.len() × vocab]) for fixture `name`.
fn hf_logits(name: &str) -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(fixture(name).join("logits.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("ids").unwrap();
    assert_eq!(ids.dtype(), Dtype::I32);
    let logits = st.tensor("logits").unwrap();
    assert_eq!(logits.dtype(), Dtype::F32);
    let ids = ids
        .data()
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
        .collect();
    let logits = bytemuck::pod_collect_to_vec::<u8, f32>(logits.data());
    (ids, logits)
}

/// The runtime's logits for fixture `name`, with `cfg` (normally the one from config.json).
fn runtime_logits(name: &str, cfg: &ModelConfig, ids: &[u32]) -> Vec<f32> {
    let src = SafetensorsSource::open(&fixture(name)).unwrap();
    let w = Weights::load(cfg, &src, &CpuBackend).unwrap();
    let model = Model::new(cfg.clone(), CpuBackend, w).unwrap();
    let mut sess = model.session(1, ids.len()).unwrap();
    model
        .forward(&mut sess, &[SeqInput::tokens(0, ids)], Logits::All, None)
        .unwrap()
        .to_vec()
}

fn config(name: &str) -> ModelConfig {
    ModelConfig::from_hf_json(&fixture(name).join("config.json")).unwrap()
}

fn check(name: &str, want_scaling: RopeScaling) {
    let cfg = config(name);
    assert_eq!(cfg.rope_scaling, want_scaling, "{name}: parsed scaling");
    let (ids, want) = hf_logits(name);
    let got = runtime_logits(name, &cfg, &ids);
    let diff = max_abs_diff(&got, &want);
    eprintln!(
        "{name}: max |runtime − HF| = {diff:e} over {} logits",
        got.len()
    );
    assert!(
        diff <= TOL,
        "{name}: max abs logit difference {diff} > {TOL}"
    );
}

#[test]
fn llama3_rope_scaling_matches_hf() {
    check(
        "llama3",
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        },
    );
}

#[test]
fn linear_rope_parameters_match_hf() {
    let cfg = config("linear");
    assert_eq!(cfg.rope_theta, 50_000.0, "rope_theta from rope_parameters");
    check("linear", RopeScaling::Linear { factor: 4.0 });
}

/// The reference test can fail: with the scaling dropped, the logits are far from HF's.
#[test]
fn rope_scaling_matters() {
    for name in ["llama3", "linear"] {
        let mut cfg = config(name);
        cfg.rope_scaling = RopeScaling::None;
        let (ids, want) = hf_logits(name);
        let diff = max_abs_diff(&runtime_logits(name, &cfg, &ids), &want);
        assert!(diff > 1.0, "{name}: unscaled logits only {diff} from HF's");
    }
}

/// `to_hf_json` writes the scaling back out, so a config.json round trip keeps it.
#[test]
fn scaling_survives_a_config_json_round_trip() {
    for name in ["llama3", "linear"] {
        let cfg = config(name);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, cfg.to_hf_json().unwrap().to_string()).unwrap();
        assert_eq!(ModelConfig::from_hf_json(&p).unwrap(), cfg, "{name}");
    }
}
