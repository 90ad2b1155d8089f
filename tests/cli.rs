//! The CLI contract (issue: runtime): `generate` prints only the generated text, `score` a
//! bare number; bad input gives a one-line error naming what is wrong.
use std::path::PathBuf;
use std::process::Command;

fn cmt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cmt"))
}

fn fixtures() -> Option<serde_json::Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/smollm2-135m/smollm2_golden.json");
    let text = std::fs::read_to_string(p).ok()?;
    serde_json::from_str(&text).ok()
}

fn model_path() -> Option<PathBuf> {
    match cmt_runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}")) {
        Ok(p) => Some(p),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: default model unavailable: {e}");
            None
        }
        Err(e) => panic!("CI: default model unavailable: {e}"),
    }
}

#[test]
fn generate_prints_exactly_the_greedy_continuation() {
    let (Some(fx), Some(model)) = (fixtures(), model_path()) else {
        eprintln!("SKIPPED: ../shared or the model is absent");
        return;
    };
    for p in fx["prompts"].as_array().unwrap() {
        let out = cmt()
            .args([
                "generate",
                "--weights",
                "f32",
                "--threads",
                "2",
                "--max-new-tokens",
                "24",
                "--model",
            ])
            .arg(&model)
            .arg("--prompt")
            .arg(p["text"].as_str().unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            p["greedy_text"].as_str().unwrap()
        );
    }
}

#[test]
fn score_prints_the_mean_cross_entropy() {
    let (Some(_), Some(model)) = (fixtures(), model_path()) else {
        eprintln!("SKIPPED: ../shared or the model is absent");
        return;
    };
    // The fixture paragraph and its HF loss (smollm2_golden.safetensors `ppl.loss`).
    let text = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France. \
                They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who, under their leader Rollo, \
                agreed to swear fealty to King Charles III of West Francia.";
    // f32 meets HF to 1e-4. Native keeps the same weight values but rounds activations to
    // 16 bits on AVX-512 VNNI CPUs (the packed kernel; measured 1.2e-4 from HF's loss here,
    // the bound for native being 1%), elsewhere it runs prefill on exactly
    // dequantised tiles: 5e-4 covers both.
    for (weights, tol) in [("f32", 1e-4), ("native", 5e-4)] {
        let out = cmt()
            .args(["score", "--weights", weights, "--model"])
            .arg(&model)
            .args(["--text", text])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).unwrap();
        let loss: f64 = s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a bare number: {s:?}"));
        assert!((loss - 2.755764).abs() < tol, "--weights {weights}: {loss}");
    }
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let out = cmt()
        .args([
            "generate",
            "--model",
            "/nonexistent/model.gguf",
            "--prompt",
            "hi",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = cmt()
        .args(["generate", "--threads", "0", "--prompt", "hi"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
    let out = cmt()
        .args(["generate", "--weights", "q2", "--prompt", "hi"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--weights") && err.contains("native"),
        "{err}"
    );
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00\x01").unwrap();
    let out = cmt()
        .args(["score", "--text", "a b c", "--model"])
        .arg(&junk)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("junk.gguf") && err.contains("offset"),
        "{err}"
    );
}

#[test]
fn help_explains_the_commands() {
    let out = cmt().arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    for cmd in ["fetch-model", "generate", "score", "bench", "convert"] {
        assert!(s.contains(cmd), "--help lacks {cmd}: {s}");
    }
}

#[test]
fn bench_reports_prefill_and_decode_rates() {
    let Some(model) = model_path() else {
        return;
    };
    let out = cmt()
        .args(["bench", "--threads", "2", "--json", "--prompt-tokens", "16"])
        .args([
            "--new-tokens",
            "4",
            "--warmup",
            "0",
            "--runs",
            "3",
            "--model",
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["prefill_tok_s", "decode_tok_s", "prefill_s", "decode_s"] {
        let x = v[key].as_f64().unwrap_or(-1.0);
        assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    }
    // The rates are the medians' token counts over their times.
    let (p, d) = (
        v["prefill_s"].as_f64().unwrap(),
        v["decode_s"].as_f64().unwrap(),
    );
    assert!((v["prefill_tok_s"].as_f64().unwrap() * p - 16.0).abs() < 1e-6);
    assert!((v["decode_tok_s"].as_f64().unwrap() * d - 4.0).abs() < 1e-6);
    assert_eq!(v["runs_s"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        v["weights"], "native",
        "native is the default for inference"
    );
    // The default model's Q4_1/Q8_0 blocks (with their scale tables) are kept: well under
    // a third of the f32 bytes.
    let (mb, f32_mb) = (
        v["matrix_mb"].as_f64().unwrap(),
        v["matrix_mb_f32"].as_f64().unwrap(),
    );
    assert!(mb > 0.0 && mb < f32_mb / 3.0, "{mb} MB vs f32 {f32_mb} MB");
    assert_eq!(v["threads"], 2);
    assert!(v["model"].as_str().is_some_and(|m| m.ends_with(".gguf")));

    let out = cmt()
        .args(["bench", "--new-tokens", "0", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("new token"), "{err}");
}

/// `--weights native` (the default of the inference commands) keeps the GGUF's blocks with
/// the same weight values as f32 and 16-bit activations: on the committed checkpoint it
/// must give the f32 path's answers (the whole first 20 dev paragraphs agreed, 94 of 94;
/// docs/perf.md). Three paragraphs here.
#[test]
fn eval_on_native_weights_gives_the_f32_paths_answers() {
    let Some(model) = model_path() else {
        return;
    };
    let dev = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/squad/dev.json");
    if !dev.exists() {
        assert!(std::env::var_os("CI").is_none(), "CI: ../shared is absent");
        eprintln!("SKIPPED: ../shared is absent");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |weights: &str| -> Vec<(String, String)> {
        let out_dir = dir.path().join(weights);
        let out = cmt()
            .args([
                "eval",
                "--method",
                "cmt",
                "--limit-docs",
                "3",
                "--weights",
                weights,
            ])
            .arg("--data")
            .arg(&dev)
            .arg("--model")
            .arg(&model)
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "eval --weights {weights}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(out_dir.join("predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["id"].to_string(), v["prediction"].to_string())
            })
            .collect()
    };
    let (native, f32) = (run("native"), run("f32"));
    assert!(native.len() >= 10, "{} questions", native.len());
    assert_eq!(native, f32);
}
