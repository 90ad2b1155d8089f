//! `cmt train`, `cmt checkpoint export` and `cmt demo` on a tiny random model: a run
//! stopped with `--stop-at` and continued with `--resume` writes the same parameters as a
//! straight run, the JSONL log has a line per step, a resume with other settings is
//! refused, the bf16 export loads, and the demo prints its side-by-side answers and the
//! summary line.
mod cli_support;
#[path = "../crates/cmt-core/tests/common/mod.rs"]
mod common;
use cli_support::{cmt, ok};
use std::path::Path;
use std::process::Command;

fn write_squad(path: &Path) {
    let v = serde_json::json!({"version": "1.1", "data": [
        {"title": "Quillby", "paragraphs": [
            {"context": "The Zorblat festival of Quillby is held every March.", "qas": [
                {"id": "a1", "question": "When is the Zorblat festival?",
                 "answers": [{"text": "every March", "answer_start": 40}]},
                {"id": "a2", "question": "Where is the Zorblat festival?",
                 "answers": [{"text": "Quillby", "answer_start": 25}]}]},
            {"context": "The mayor of Quillby is Odessa Flint.", "qas": [
                {"id": "a3", "question": "Who is the mayor?",
                 "answers": [{"text": "Odessa Flint", "answer_start": 24}]}]},
            {"context": "Veltronic launched the Moonfish phone in 2020.", "qas": [
                {"id": "b1", "question": "What did Veltronic launch?",
                 "answers": [{"text": "the Moonfish phone", "answer_start": 19}]}]}]}]});
    std::fs::write(path, v.to_string()).unwrap();
}

/// A fresh tiny run: the architecture flags, then the schedule of [`resume_cmd`].
fn train_cmd(model: &Path, data: &Path, out: &Path) -> Command {
    let mut c = resume_cmd(model, data, out);
    c.args(["--mem-tokens", "4", "--key-dim", "16", "--prefix-rank", "4"])
        .args(["--topk", "2"]);
    c
}

/// The schedule only (a resumed run takes its architecture from the checkpoint).
fn resume_cmd(model: &Path, data: &Path, out: &Path) -> Command {
    let mut c = cmt();
    c.args(["train", "--model"])
        .arg(model)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--steps", "4", "--batch-docs", "2", "--queue", "2"])
        .args(["--eval-every", "0", "--save-every", "0", "--cache", "none"]);
    c
}

/// The tensors of a safetensors file (name → bytes), metadata left out.
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// A temporary folder with a tiny random model (hidden 16) and the SQuAD file above.
fn tiny_setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(dir.path(), 16, 4);
    let data = dir.path().join("squad.json");
    write_squad(&data);
    (dir, model, data)
}

#[test]
fn train_resume_export_and_demo() {
    let (dir, model, data) = tiny_setup();
    let root = dir.path();

    let a = root.join("a.safetensors");
    ok(
        train_cmd(&model, &data, &a).output().unwrap(),
        "straight run",
    );
    let log = std::fs::read_to_string(root.join("a.safetensors.log.jsonl")).unwrap();
    let steps = log
        .lines()
        .filter(|l| l.contains(r#""kind":"step""#))
        .count();
    assert_eq!(steps, 4, "{log}");

    let b = root.join("b.safetensors");
    let out = train_cmd(&model, &data, &b)
        .args(["--stop-at", "2"])
        .output()
        .unwrap();
    ok(out, "run stopped at step 2");
    let out = resume_cmd(&model, &data, &b)
        .arg("--resume")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out, "resumed run");
    assert!(err.contains("resumed at step 2"), "{err}");
    assert_eq!(tensors(&a), tensors(&b), "resumed parameters differ");

    // Other settings on resume are refused, naming the state file.
    let out = resume_cmd(&model, &data, &b)
        .args(["--resume", "--lr", "0.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.safetensors.state") && err.contains("other settings"),
        "{err}"
    );

    // Export to bf16: half the tensor bytes, loadable, same metadata plus the figures.
    let c = root.join("c.safetensors");
    let figures = root.join("figures.json");
    std::fs::write(&figures, r#"{"dev": {"cmt": {"f1": 12.5}}}"#).unwrap();
    ok(
        cmt()
            .args(["checkpoint", "export"])
            .arg(&a)
            .arg(&c)
            .arg("--results")
            .arg(&figures)
            .output()
            .unwrap(),
        "export",
    );
    let show = ok(
        cmt()
            .args(["checkpoint", "show", "--json"])
            .arg(&c)
            .output()
            .unwrap(),
        "show",
    );
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["dtype"], "bf16");
    assert_eq!(v["extra"]["train_step"], 4);
    assert_eq!(v["extra"]["results"]["dev"]["cmt"]["f1"], 12.5);
    let half: usize = tensors(&c).iter().map(|(_, t)| t.len()).sum();
    let full: usize = tensors(&a).iter().map(|(_, t)| t.len()).sum();
    assert_eq!(2 * half, full);

    // The demo on the trained tiny checkpoint: 24 bundled questions, each answered twice.
    let out = cmt()
        .args(["demo", "--model"])
        .arg(&model)
        .arg("--checkpoint")
        .arg(&c)
        .output()
        .unwrap();
    let text = ok(out, "demo");
    assert_eq!(text.matches("closed-book: ").count(), 24 + 1, "{text}");
    assert_eq!(text.matches("with memory: ").count(), 24 + 1, "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("with memory: ") && last.contains("/24 correct, closed-book: "),
        "{last}"
    );
}

/// Soft mode end to end: trains, resumes exactly, and the demo answers through θ's own
/// keys and values of the soft rows.
#[test]
fn soft_prefix_mode_trains_resumes_and_answers() {
    let (dir, model, data) = tiny_setup();
    let root = dir.path();
    let a = root.join("a.safetensors");
    ok(
        train_cmd(&model, &data, &a)
            .args(["--prefix-mode", "soft"])
            .output()
            .unwrap(),
        "soft run",
    );
    let b = root.join("b.safetensors");
    ok(
        train_cmd(&model, &data, &b)
            .args(["--prefix-mode", "soft", "--stop-at", "2"])
            .output()
            .unwrap(),
        "soft run stopped at 2",
    );
    ok(
        resume_cmd(&model, &data, &b)
            .arg("--resume")
            .output()
            .unwrap(),
        "soft run resumed",
    );
    // Architecture flags with --resume (or --init) are refused, not ignored.
    let out = resume_cmd(&model, &data, &b)
        .args(["--resume", "--no-aggregator"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--no-aggregator") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(tensors(&a), tensors(&b), "resumed parameters differ");
    // The soft generator's up-projection is [D, R] = [16, 4] f32 (the key/value one would
    // be [L, 2, n_kv·h, R]).
    let up = tensors(&a).into_iter().find(|(n, _)| n == "prefix.up");
    assert_eq!(up.map(|(_, t)| t.len()), Some(16 * 4 * 4));
    let show = ok(
        cmt()
            .args(["checkpoint", "show", "--json"])
            .arg(&a)
            .output()
            .unwrap(),
        "show",
    );
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["config"]["prefix_mode"], "soft", "{v}");
    let text = ok(
        cmt()
            .args(["demo", "--model"])
            .arg(&model)
            .arg("--checkpoint")
            .arg(&a)
            .output()
            .unwrap(),
        "soft demo",
    );
    assert!(
        text.lines().last().unwrap().contains("/24 correct"),
        "{text}"
    );
}

/// The periodic dev evaluation: dev L_rec (own memory, other memories, θ alone) at every
/// evaluation, and F1 / recall once L_qa has been trained (not during pretraining).
#[test]
fn dev_evaluation_logs_reconstruction_and_answers() {
    let (dir, model, data) = tiny_setup();
    let out_path = dir.path().join("d.safetensors");
    let out = cmt()
        .args(["train", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out_path)
        .args(["--steps", "4", "--batch-docs", "2", "--queue", "2"])
        .args(["--mem-tokens", "4", "--key-dim", "16", "--prefix-rank", "4"])
        .args(["--topk", "2", "--standardize-input", "3", "--cache", "none"])
        .args(["--save-every", "0", "--pretrain-steps", "2", "--dev"])
        .arg(&data)
        .args(["--eval-every", "2", "--eval-docs", "3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out, "run with dev evaluation");
    let log = std::fs::read_to_string(dir.path().join("d.safetensors.log.jsonl")).unwrap();
    let devs: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "dev")
        .map(|v| v["dev"].clone())
        .collect();
    assert_eq!(devs.len(), 2, "{log}");
    for d in &devs {
        for f in ["rec", "rec_shuffled", "rec_no_memory"] {
            let x = d[f].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite() && x > 0.0, "{f} in {d}");
        }
    }
    assert_eq!(devs[0]["rec_no_memory"], devs[1]["rec_no_memory"]);
    assert!(
        devs[0]["f1"].is_null() && devs[0]["shuffled_f1"].is_null(),
        "{}",
        devs[0]
    );
    assert_eq!(devs[1]["questions"], 4, "{}", devs[1]);
    assert!(
        devs[1]["f1"].is_f64() && devs[1]["shuffled_f1"].is_f64(),
        "{}",
        devs[1]
    );
    assert!(
        err.contains("step 2: dev L_rec") && err.contains("step 4: dev (4 questions)"),
        "{err}"
    );
    assert!(err.contains("input statistics from"), "{err}");

    // The statistics are in the checkpoint's config (16 = the tiny model's width), and a
    // continued run refuses to re-measure them.
    let show = ok(
        cmt()
            .args(["checkpoint", "show", "--json"])
            .arg(&out_path)
            .output()
            .unwrap(),
        "show",
    );
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    let stats = &v["config"]["compressor"]["input_stats"];
    assert_eq!(stats["scale"].as_array().map(Vec::len), Some(16), "{v}");
    assert!(stats["rows"].as_u64().unwrap_or(0) > 0, "{v}");
    let out = resume_cmd(&model, &data, &out_path)
        .args(["--resume", "--standardize-input", "3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--standardize-input"), "{err}");

    // A run from --init into a folder that does not exist yet keeps the statistics.
    let next = dir.path().join("chain").join("e.safetensors");
    let mut c = cmt();
    c.args(["train", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--init")
        .arg(&out_path)
        .arg("--out")
        .arg(&next)
        .args(["--steps", "1", "--batch-docs", "2", "--queue", "2"])
        .args(["--eval-every", "0", "--save-every", "0", "--cache", "none"]);
    ok(c.output().unwrap(), "run from --init into a new folder");
    let show = ok(
        cmt()
            .args(["checkpoint", "show", "--json"])
            .arg(&next)
            .output()
            .unwrap(),
        "show",
    );
    let w: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(w["config"]["compressor"]["input_stats"], *stats);
}
