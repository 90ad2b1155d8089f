//! Compressor checkpoints: safetensors round trip and the errors for damaged or foreign
//! files (each names the file and what is wrong).
use cmt_compress::params::{load, save, shapes};
use cmt_compress::{CompressorConfig, Params};
use std::collections::HashMap;
use std::path::Path;

fn cfg() -> CompressorConfig {
    CompressorConfig {
        d: 8,
        mem_tokens: 2,
        blocks: 2,
        heads: 2,
        head_dim: 3,
        mlp_hidden: 5,
        key_dim: 4,
        eps: 1e-6,
        input_stats: None,
    }
}

/// Writes a safetensors file from (name, shape, values) and metadata, bypassing `save`.
fn write_raw(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: HashMap<String, String>,
) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, s, v)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                s.clone(),
                bytemuck::cast_slice(v),
            )
            .expect("view");
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, Some(meta), path).expect("write");
}

fn good_meta(cfg: &CompressorConfig) -> HashMap<String, String> {
    HashMap::from([
        ("format".into(), "cmt-compressor".into()),
        ("version".into(), "1".into()),
        ("config".into(), serde_json::to_string(cfg).expect("json")),
    ])
}

fn raw_tensors(cfg: &CompressorConfig, p: &Params) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    shapes(cfg)
        .into_iter()
        .zip(p.tensors())
        .map(|((n, s), (_, t))| (n, s, t.to_vec()))
        .collect()
}

#[test]
fn round_trip_is_bit_identical_and_keeps_metadata() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("c.safetensors");
    let cfg = cfg();
    let p = Params::init(&cfg, 11).expect("init");
    save(&path, &cfg, &p, &[("base_model_sha256", "abc123")]).expect("save");
    let back = load(&path).expect("load");
    assert_eq!(back.cfg, cfg);
    assert_eq!(back.params, p);
    assert_eq!(
        back.metadata.get("base_model_sha256").map(String::as_str),
        Some("abc123")
    );
    // Independent check of the layout: the file read with the safetensors crate directly.
    let bytes = std::fs::read(&path).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let w = st.tensor("blocks.1.wo").expect("blocks.1.wo");
    assert_eq!(w.shape(), &[8, 6]);
    let first = f32::from_le_bytes(w.data()[..4].try_into().expect("4 bytes"));
    assert_eq!(first, p.blocks[1].wo[0]);
}

#[test]
fn init_is_deterministic_and_seed_dependent() {
    let cfg = cfg();
    let a = Params::init(&cfg, 1).expect("init");
    assert_eq!(a, Params::init(&cfg, 1).expect("init"));
    assert_ne!(a, Params::init(&cfg, 2).expect("init"));
    assert!(a.blocks.iter().all(|b| b.norm_q.iter().all(|&g| g == 1.0)));
    let n: usize = shapes(&cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(a.num_params(), n);
}

#[test]
fn damaged_and_foreign_checkpoints_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = cfg();
    let p = Params::init(&cfg, 3).expect("init");
    let case = |name: &str, tensors: Vec<(String, Vec<usize>, Vec<f32>)>, meta, want: &str| {
        let path = dir.path().join(name);
        write_raw(&path, &tensors, meta);
        let err = match load(&path) {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(name),
            "{name}: error does not name the file: {err}"
        );
        assert!(err.contains(want), "{name}: expected \"{want}\" in: {err}");
    };
    let mut missing = raw_tensors(&cfg, &p);
    missing.retain(|(n, _, _)| n != "blocks.0.wk");
    case(
        "missing.st",
        missing,
        good_meta(&cfg),
        "blocks.0.wk is missing",
    );

    let mut reshaped = raw_tensors(&cfg, &p);
    reshaped[2].1 = vec![4, 2];
    case("shape.st", reshaped, good_meta(&cfg), "expected F32 [8]");

    let mut nan = raw_tensors(&cfg, &p);
    nan[1].2[3] = f32::NAN;
    case("nan.st", nan, good_meta(&cfg), "w_key[3] is NaN");

    let mut meta = good_meta(&cfg);
    meta.remove("format");
    case(
        "foreign.st",
        raw_tensors(&cfg, &p),
        meta,
        "not a cmt-compressor checkpoint",
    );

    let mut meta = good_meta(&cfg);
    meta.insert("version".into(), "9".into());
    case(
        "version.st",
        raw_tensors(&cfg, &p),
        meta,
        "checkpoint version 9",
    );

    let mut meta = good_meta(&cfg);
    meta.insert("config".into(), "{\"d\": 8}".into());
    case(
        "config.st",
        raw_tensors(&cfg, &p),
        meta,
        "metadata \"config\"",
    );

    // A truncated file.
    let path = dir.path().join("cut.st");
    save(&path, &cfg, &p, &[]).expect("save");
    let len = std::fs::metadata(&path).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len - 7).expect("truncate");
    let err = load(&path)
        .err()
        .expect("truncated file loaded")
        .to_string();
    assert!(err.contains("cut.st"), "{err}");
}
