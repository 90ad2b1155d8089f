//! `cmt eval` on a tiny random model: `--json --out --plot` with distractors for a cmt
//! method, a baseline without a checkpoint (the table), the JSONL dataset layout, and the
//! refusals that come before any work.
mod cli_support;
#[path = "../crates/cmt-core/tests/common/mod.rs"]
mod common;
use cli_support::{cmt, ok};
use std::io::Write;
use std::path::{Path, PathBuf};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    ckpt: PathBuf,
    squad: PathBuf,
    distractors: PathBuf,
}

/// A SQuAD file of 2 articles, 5 paragraphs (one without questions), 7 questions.
fn write_squad(path: &Path) {
    let v = serde_json::json!({"version": "1.1", "data": [
        {"title": "Quillby", "paragraphs": [
            {"context": "The Zorblat festival of Quillby is held every March.", "qas": [
                {"id": "a1", "question": "When is the Zorblat festival?",
                 "answers": [{"text": "every March", "answer_start": 40},
                             {"text": "March", "answer_start": 46}]},
                {"id": "a2", "question": "Where is the Zorblat festival?",
                 "answers": [{"text": "Quillby", "answer_start": 25}]}]},
            {"context": "The mayor of Quillby is Odessa Flint.", "qas": [
                {"id": "a3", "question": "Who is the mayor?",
                 "answers": [{"text": "Odessa Flint", "answer_start": 24}]}]},
            {"context": "Quillby has no airport.", "qas": []}]},
        {"title": "Veltronic", "paragraphs": [
            {"context": "Veltronic launched the Moonfish phone in 2020.", "qas": [
                {"id": "b1", "question": "What did Veltronic launch?",
                 "answers": [{"text": "the Moonfish phone", "answer_start": 19}]},
                {"id": "b2", "question": "When was the Moonfish launched?",
                 "answers": [{"text": "2020", "answer_start": 41}]}]},
            {"context": "Veltronic is based in Harrowgate.", "qas": [
                {"id": "b3", "question": "Where is Veltronic based?",
                 "answers": [{"text": "Harrowgate", "answer_start": 22}]},
                {"id": "b4", "question": "What is based in Harrowgate?",
                 "answers": [{"text": "Veltronic", "answer_start": 0}]}]}]}]});
    std::fs::write(path, v.to_string()).unwrap();
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = common::write_tiny_model(&root, 16, 4);
    let ckpt = root.join("ckpt.safetensors");
    ok(
        cmt()
            .args(["checkpoint", "init", "--model"])
            .arg(&model)
            .arg("--out")
            .arg(&ckpt)
            .args([
                "--mem-tokens",
                "4",
                "--key-dim",
                "16",
                "--prefix-rank",
                "4",
                "--k",
                "3",
            ])
            .output()
            .unwrap(),
        "checkpoint init",
    );
    let squad = root.join("squad.json");
    write_squad(&squad);
    let distractors = root.join("distractors.jsonl");
    let mut f = std::fs::File::create(&distractors).unwrap();
    for i in 0..4 {
        writeln!(
            f,
            r#"{{"id": "x{i}", "text": "Distractor {i} is about hills."}}"#
        )
        .unwrap();
    }
    Env {
        _dir: dir,
        root,
        model,
        ckpt,
        squad,
        distractors,
    }
}

#[test]
fn eval_json_out_plot_with_distractors() {
    let e = env();
    let out_dir = e.root.join("out");
    let png = e.root.join("curve.png");
    let stdout = ok(
        cmt()
            .args([
                "eval",
                "--method",
                "cmt",
                "--json",
                "--retention-every",
                "3",
                "--data",
            ])
            .arg(&e.squad)
            .arg("--model")
            .arg(&e.model)
            .arg("--checkpoint")
            .arg(&e.ckpt)
            .arg("--distractors")
            .arg(&e.distractors)
            .arg("--out")
            .arg(&out_dir)
            .arg("--plot")
            .arg(&png)
            .output()
            .unwrap(),
        "eval cmt",
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["method"], "cmt");
    assert_eq!(
        (v["n_docs"].as_u64(), v["n_distractors"].as_u64()),
        (Some(5), Some(4))
    );
    assert_eq!(v["n_questions"], 7);
    assert_eq!(v["k"], 3);
    for f in ["em", "prefix_em", "f1", "recall_at_1", "recall_at_k"] {
        let x = v[f].as_f64().unwrap_or_else(|| panic!("{f}: {v}"));
        assert!((0.0..=100.0).contains(&x), "{f} = {x}");
    }
    assert!(v.get("retention").is_some());
    // 9 streamed documents, a point every 3: at 3, 6 and 9.
    let docs: Vec<u64> = v["retention_curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["docs"].as_u64().unwrap())
        .collect();
    assert_eq!(docs, [3, 6, 9]);
    // The retention sample: the questions of the first 3 paragraphs (a1, a2, a3).
    assert_eq!(v["retention_sample"], 3);
    let preds = std::fs::read_to_string(out_dir.join("predictions.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = preds
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[0]["id"], "a1");
    assert_eq!(lines[0]["doc_id"], "Quillby#0");
    assert_eq!(
        lines[0]["answers"],
        serde_json::json!(["every March", "March"])
    );
    assert_eq!(lines[0]["memories"].as_array().unwrap().len(), 3);
    // The retention sample (3 questions) at each of the 3 points.
    let ret = std::fs::read_to_string(out_dir.join("retention.jsonl")).unwrap();
    assert_eq!(ret.lines().count(), 9);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["method"], "cmt");
    assert_eq!(summary["n_questions"], 7);
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
}

#[test]
fn baseline_without_checkpoint_prints_the_table() {
    let e = env();
    let stdout = ok(
        cmt()
            .args([
                "eval",
                "--method",
                "oracle",
                "--template",
                "plain",
                "--limit-docs",
                "2",
                "--data",
            ])
            .arg(&e.squad)
            .arg("--model")
            .arg(&e.model)
            .env("CMT_CHECKPOINT", e.root.join("absent.safetensors"))
            .output()
            .unwrap(),
        "eval oracle",
    );
    assert!(
        stdout.contains("oracle") && stdout.contains("F1"),
        "{stdout}"
    );
    // --limit-docs 2: the first two paragraphs and their three questions.
    assert!(stdout.contains("2 + 0 distractors"), "{stdout}");
    let q = stdout.lines().find(|l| l.starts_with("questions")).unwrap();
    assert!(q.ends_with(" 3"), "{q}");
    assert!(
        !stdout.contains("retention ("),
        "oracle has no retention curve: {stdout}"
    );
}

#[test]
fn jsonl_layout_and_rag() {
    let e = env();
    let docs = e.root.join("docs.jsonl");
    std::fs::write(
        &docs,
        "{\"id\": \"d1\", \"text\": \"Kexholm has a red lighthouse.\"}\n\
         {\"id\": \"d2\", \"text\": \"Mirrow river froze in 2021.\"}\n",
    )
    .unwrap();
    let qs = e.root.join("questions.jsonl");
    std::fs::write(
        &qs,
        "{\"id\": \"1\", \"question\": \"What colour is the Kexholm lighthouse?\", \"answers\": [\"red\"], \"doc_id\": \"d1\"}\n\
         {\"id\": \"2\", \"question\": \"When did the Mirrow river freeze?\", \"answers\": [\"2021\"], \"doc_id\": \"d2\"}\n",
    )
    .unwrap();
    let stdout = ok(
        cmt()
            .args(["eval", "--method", "rag", "--json", "--data"])
            .arg(&docs)
            .arg("--questions")
            .arg(&qs)
            .arg("--model")
            .arg(&e.model)
            .output()
            .unwrap(),
        "eval rag",
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["n_questions"], 2);
    // Each question names its document's own words: BM25 ranks it first.
    assert_eq!(v["recall_at_1"], 100.0);
    assert_eq!(v["retention_curve"].as_array().unwrap().len(), 1);
}

#[test]
fn refusals_before_any_work() {
    let e = env();
    let run = |args: &[&str]| {
        let out = cmt()
            .arg("eval")
            .args(args)
            .arg("--data")
            .arg(&e.squad)
            .arg("--model")
            .arg(&e.model)
            .env("CMT_CHECKPOINT", e.root.join("absent.safetensors"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--method", "closed-book", "--plot", "x.png"]);
    assert!(err.contains("no retention curve"), "{err}");
    let err = run(&["--method", "bm25"]);
    assert!(err.contains("unknown method"), "{err}");
    let err = run(&["--method", "cmt"]);
    assert!(err.contains("checkpoint"), "{err}");
    let err = run(&[
        "--method",
        "cmt-shuffled",
        "--template",
        "plain",
        "--checkpoint",
    ]);
    assert!(!err.is_empty());
    let ck = e.ckpt.to_str().unwrap();
    let err = run(&[
        "--method",
        "cmt-shuffled",
        "--template",
        "chat",
        "--checkpoint",
        ck,
    ]);
    assert!(err.contains("--template is for the baselines"), "{err}");
}
