//! Rotary scaling in hand-written config.json files: each accepted layout (top-level
//! `rope_scaling` with `rope_type` or `type`, transformers 5 `rope_parameters`), and each
//! refusal (unknown type, unknown key, bad value) as an error naming the file, the field
//! and the value.
use cmt_runtime::{ModelConfig, RopeScaling};
use serde_json::{json, Value};

/// A small Llama config.json with `extra` merged in at the top level.
fn parse(extra: Value) -> (tempfile::TempDir, cmt_runtime::Result<ModelConfig>) {
    let mut v = json!({
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "max_position_embeddings": 1024,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.json");
    std::fs::write(&p, v.to_string()).unwrap();
    let r = ModelConfig::from_hf_json(&p);
    (dir, r)
}

fn ok(extra: Value) -> ModelConfig {
    let (_d, r) = parse(extra.clone());
    r.unwrap_or_else(|e| panic!("{extra} refused: {e}"))
}

/// The error for `extra`; it must name config.json, `field` and every one of `words`.
fn refused(extra: Value, field: &str, words: &[&str]) {
    let (_d, r) = parse(extra.clone());
    let e = match r {
        Ok(c) => panic!("{extra} accepted as {:?}", c.rope_scaling),
        Err(e) => e.to_string(),
    };
    eprintln!("{e}");
    assert!(e.contains("config.json"), "{extra}: no file in `{e}`");
    assert!(
        e.contains(&format!("config field `{field}`")),
        "{extra}: field `{field}` not in `{e}`"
    );
    for w in words {
        assert!(e.contains(w), "{extra}: `{w}` not in `{e}`");
    }
}

fn llama3() -> Value {
    json!({
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    })
}

const LLAMA3: RopeScaling = RopeScaling::Llama3 {
    factor: 32.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
};

fn with(mut v: Value, k: &str, x: Value) -> Value {
    v[k] = x;
    v
}

fn without(mut v: Value, k: &str) -> Value {
    v.as_object_mut().unwrap().remove(k);
    v
}

#[test]
fn no_scaling_is_default_rope() {
    let c = ok(json!({}));
    assert_eq!(
        (c.rope_scaling, c.rope_theta),
        (RopeScaling::None, 10_000.0)
    );
    let c = ok(json!({"rope_scaling": null, "rope_theta": 1e6}));
    assert_eq!((c.rope_scaling, c.rope_theta), (RopeScaling::None, 1e6));
    let c = ok(json!({"rope_scaling": {"rope_type": "default"}}));
    assert_eq!(c.rope_scaling, RopeScaling::None);
}

#[test]
fn top_level_rope_scaling_llama3_and_linear() {
    // Llama 3.x checkpoints: top-level rope_scaling and rope_theta.
    let c = ok(json!({"rope_scaling": llama3(), "rope_theta": 500000.0}));
    assert_eq!((c.rope_scaling, c.rope_theta), (LLAMA3, 500_000.0));
    // The older `type` key.
    let c = ok(json!({"rope_scaling": {"type": "linear", "factor": 2.0}}));
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    let c = ok(json!({"rope_scaling": {"type": "linear", "rope_type": "linear", "factor": 2}}));
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 2.0 });
    // original_max_position_embeddings at the top level (HF reads it there too).
    let c = ok(json!({
        "rope_scaling": without(llama3(), "original_max_position_embeddings"),
        "original_max_position_embeddings": 8192,
    }));
    assert_eq!(c.rope_scaling, LLAMA3);
}

#[test]
fn transformers5_rope_parameters() {
    let c = ok(json!({"rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}}));
    assert_eq!(
        (c.rope_scaling, c.rope_theta),
        (RopeScaling::None, 100_000.0)
    );
    let c = ok(json!({"rope_parameters": with(llama3(), "rope_theta", json!(500000.0))}));
    assert_eq!((c.rope_scaling, c.rope_theta), (LLAMA3, 500_000.0));
    let c = ok(json!({"rope_parameters": {
        "rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0,
        "partial_rotary_factor": 1.0, "attention_factor": 1.0,
    }}));
    assert_eq!(c.rope_scaling, RopeScaling::Linear { factor: 4.0 });
    // Both layouts saying the same thing, and the same θ at the top level.
    let c = ok(json!({
        "rope_scaling": llama3(),
        "rope_parameters": with(llama3(), "rope_theta", json!(500000.0)),
        "rope_theta": 500000.0,
    }));
    assert_eq!((c.rope_scaling, c.rope_theta), (LLAMA3, 500_000.0));
}

#[test]
fn unimplemented_rope_types_are_refused() {
    for t in ["yarn", "dynamic", "longrope", "proportional", "su"] {
        refused(
            json!({"rope_scaling": {"rope_type": t, "factor": 4.0}}),
            "rope_scaling.rope_type",
            &[t, "not implemented"],
        );
        refused(
            json!({"rope_parameters": {"rope_type": t, "factor": 4.0, "rope_theta": 1e4}}),
            "rope_parameters.rope_type",
            &[t],
        );
    }
    refused(
        json!({"rope_scaling": {"type": "yarn", "factor": 4.0}}),
        "rope_scaling.type",
        &["yarn"],
    );
    refused(
        json!({"rope_scaling": {"type": "yarn", "rope_type": "linear", "factor": 4.0}}),
        "rope_scaling.type",
        &["yarn", "linear"],
    );
    refused(
        json!({"rope_scaling": {"rope_type": 3}}),
        "rope_scaling.rope_type",
        &["expected a string", "3"],
    );
}

#[test]
fn unimplemented_keys_are_refused() {
    refused(
        json!({"rope_parameters": {"rope_type": "linear", "factor": 4.0, "beta_fast": 32}}),
        "rope_parameters.beta_fast",
        &["32", "linear"],
    );
    refused(
        json!({"rope_scaling": with(llama3(), "mscale", json!(0.7))}),
        "rope_scaling.mscale",
        &["0.7"],
    );
    // A factor on default rotary would be ignored by HF; it is refused here.
    refused(
        json!({"rope_parameters": {"rope_type": "default", "factor": 8.0}}),
        "rope_parameters.factor",
        &["8.0", "default"],
    );
    refused(
        json!({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "attention_factor": 0.5}}),
        "rope_parameters.attention_factor",
        &["0.5"],
    );
    refused(
        json!({"rope_scaling": with(llama3(), "partial_rotary_factor", json!(0.5))}),
        "rope_scaling.partial_rotary_factor",
        &["0.5"],
    );
    refused(
        json!({"partial_rotary_factor": 0.25}),
        "partial_rotary_factor",
        &["0.25", "partial rotary"],
    );
    // Per-layer-type rotary (nested objects) is not implemented.
    refused(
        json!({"rope_parameters": {"full_attention": {"rope_type": "default"}}}),
        "rope_parameters.full_attention",
        &["rope_type"],
    );
}

#[test]
fn bad_values_are_refused() {
    let s = |v: Value| json!({ "rope_scaling": v });
    refused(
        s(with(llama3(), "factor", json!("32"))),
        "rope_scaling.factor",
        &["expected a number", "\"32\""],
    );
    refused(
        json!({"rope_parameters": {"rope_type": "linear", "factor": 0}}),
        "rope_parameters.factor",
        &["0", "not a positive number"],
    );
    refused(
        s(json!({"rope_type": "linear", "factor": -2.0})),
        "rope_scaling.factor",
        &["-2"],
    );
    refused(
        s(json!({"rope_type": "linear"})),
        "rope_scaling.factor",
        &["missing"],
    );
    refused(
        s(without(llama3(), "low_freq_factor")),
        "rope_scaling.low_freq_factor",
        &["missing"],
    );
    refused(
        s(with(llama3(), "high_freq_factor", json!(1.0))),
        "rope_scaling.high_freq_factor",
        &["1", "low_freq_factor"],
    );
    refused(
        s(with(
            llama3(),
            "original_max_position_embeddings",
            json!(8192.5),
        )),
        "rope_scaling.original_max_position_embeddings",
        &["8192.5"],
    );
    refused(
        json!({"rope_parameters": with(llama3(), "original_max_position_embeddings", json!(0))}),
        "rope_parameters.original_max_position_embeddings",
        &["> 0"],
    );
    refused(
        s(without(llama3(), "original_max_position_embeddings")),
        "rope_scaling.original_max_position_embeddings",
        &["missing"],
    );
    refused(
        json!({"rope_scaling": llama3(), "original_max_position_embeddings": 4096}),
        "rope_scaling.original_max_position_embeddings",
        &["8192", "4096"],
    );
    refused(
        json!({"rope_scaling": "linear"}),
        "rope_scaling",
        &["expected an object", "linear"],
    );
    refused(
        json!({"rope_scaling": llama3(), "rope_parameters": {"rope_type": "linear", "factor": 2}}),
        "rope_parameters",
        &["differ"],
    );
    refused(
        json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}, "rope_theta": 1e4}),
        "rope_parameters.rope_theta",
        &["1000000", "10000"],
    );
    refused(
        json!({"rope_parameters": {"rope_type": "default", "rope_theta": "big"}}),
        "rope_parameters.rope_theta",
        &["expected a number", "big"],
    );
}
