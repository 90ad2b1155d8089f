//! HF model directories: single-file and sharded safetensors, f32 / f16 / bf16 weights,
//! config.json parsing, and the real default model converted from GGUF.
mod common;
use cmt_runtime::weights::{SafetensorsSource, Weights};
use cmt_runtime::{CpuBackend, Logits, Model, ModelConfig, SeqInput};
use common::tiny::{assert_close, reference_logits, tiny_config, tiny_weights, MapSource};
use common::{max_abs_diff, require};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::path::Path;

/// Writes `src` as an HF directory in `dtype`, split over `shards` files; returns the
/// weights rounded to that dtype (what a correct loader must produce).
fn write_hf_dir(
    dir: &Path,
    cfg: &ModelConfig,
    src: &MapSource,
    dtype: Dtype,
    shards: usize,
) -> MapSource {
    std::fs::write(
        dir.join("config.json"),
        cfg.to_hf_json().unwrap().to_string(),
    )
    .unwrap();
    let mut names: Vec<&String> = src.0.keys().collect();
    names.sort();
    let mut rounded = std::collections::HashMap::new();
    let mut encoded = Vec::new();
    for name in &names {
        let (shape, v) = &src.0[*name];
        let (bytes, back): (Vec<u8>, Vec<f32>) = match dtype {
            Dtype::F32 => (bytemuck::cast_slice(v).to_vec(), v.clone()),
            Dtype::F16 => {
                let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
                (
                    h.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    h.iter().map(|x| x.to_f32()).collect(),
                )
            }
            Dtype::BF16 => {
                let h: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
                (
                    h.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    h.iter().map(|x| x.to_f32()).collect(),
                )
            }
            _ => unreachable!(),
        };
        rounded.insert((*name).clone(), (shape.clone(), back));
        encoded.push(((*name).clone(), shape.clone(), bytes));
    }
    let per = encoded.len().div_ceil(shards);
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in encoded.chunks(per).enumerate() {
        let file = if shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, shards)
        };
        let views: Vec<(String, TensorView)> = chunk
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
            .collect();
        for (n, _, _) in chunk {
            weight_map.insert(n.clone(), file.clone().into());
        }
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
    }
    if shards > 1 {
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
    MapSource(rounded)
}

#[test]
fn sharded_and_half_precision_directories_load_exactly() {
    for (dtype, shards, qkv_bias) in [
        (Dtype::F32, 1, false),
        (Dtype::BF16, 3, true),
        (Dtype::F16, 2, false),
    ] {
        let cfg = tiny_config(4, 2, 6, qkv_bias, shards == 1);
        let src = tiny_weights(&cfg, 21);
        let d = tempfile::tempdir().unwrap();
        let stored = write_hf_dir(d.path(), &cfg, &src, dtype, shards);
        let parsed = ModelConfig::from_hf_json(&d.path().join("config.json")).unwrap();
        assert_eq!(parsed, cfg, "config.json round trip");
        let st = SafetensorsSource::open(d.path()).unwrap();
        let m = Model::new(
            cfg.clone(),
            CpuBackend,
            Weights::load(&cfg, &st, &CpuBackend).unwrap(),
        )
        .unwrap();
        let ids = [1u32, 2, 3, 5, 8, 13];
        let mut sess = m.session(1, 8).unwrap();
        let got = m
            .forward(&mut sess, &[SeqInput::tokens(0, &ids)], Logits::All, None)
            .unwrap();
        assert_close(
            got,
            &reference_logits(&cfg, &stored, None, &[], &ids),
            &format!("{dtype:?} × {shards}"),
        );
    }
}

#[test]
fn bad_directories_name_the_file_and_field() {
    let cfg = tiny_config(2, 1, 4, false, true);
    let d = tempfile::tempdir().unwrap();
    write_hf_dir(d.path(), &cfg, &tiny_weights(&cfg, 1), Dtype::F32, 1);
    // A tensor with the wrong shape.
    let st = SafetensorsSource::open(d.path()).unwrap();
    let mut wrong = cfg.clone();
    wrong.intermediate += 1;
    let e = Weights::load(&wrong, &st, &CpuBackend)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("mlp.gate_proj.weight") && e.contains("shape"),
        "{e}"
    );
    // config.json problems.
    let cfg_path = d.path().join("config.json");
    std::fs::write(&cfg_path, r#"{"model_type": "gpt_neox"}"#).unwrap();
    let e = ModelConfig::from_hf_json(&cfg_path)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("config.json") && e.contains("model_type") && e.contains("gpt_neox"),
        "{e}"
    );
    std::fs::write(
        &cfg_path,
        r#"{"model_type": "llama", "hidden_size": "big"}"#,
    )
    .unwrap();
    let e = ModelConfig::from_hf_json(&cfg_path)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("hidden_size"), "{e}");
    std::fs::write(&cfg_path, "{not json").unwrap();
    assert!(ModelConfig::from_hf_json(&cfg_path)
        .err()
        .unwrap()
        .to_string()
        .contains("not valid JSON"));
    // A truncated safetensors file.
    let f = d.path().join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = SafetensorsSource::open(d.path()).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

/// DESIGN/issue: the default model written by `cmt convert` as an HF directory gives
/// identical logits to the GGUF path.
#[test]
fn default_model_converted_to_hf_gives_identical_logits() {
    let path = require!(common::default_model_path(), "default model");
    let m = require!(common::default_model(), "default model");
    let d = tempfile::tempdir().unwrap();
    cmt_runtime::convert::gguf_to_hf(&path, d.path()).unwrap();
    let (hf, tok) = cmt_runtime::load_model(d.path(), CpuBackend).unwrap();
    assert_eq!(hf.cfg, m.model.cfg);
    let text = "Super Bowl 50 was an American football game <|im_end|> 東京 🙂";
    let ids = m.tok.encode(text, false).unwrap();
    assert_eq!(
        tok.encode(text, false).unwrap(),
        ids,
        "tokenizer.json round trip"
    );
    let mut s1 = m.model.session(1, ids.len()).unwrap();
    let mut s2 = hf.session(1, ids.len()).unwrap();
    let a = m
        .model
        .forward(&mut s1, &[SeqInput::tokens(0, &ids)], Logits::All, None)
        .unwrap();
    let b = hf
        .forward(&mut s2, &[SeqInput::tokens(0, &ids)], Logits::All, None)
        .unwrap();
    assert_eq!(
        max_abs_diff(a, b),
        0.0,
        "GGUF and converted HF logits differ"
    );
}
