//! The CLI of the CMT pipeline on a tiny random model: `checkpoint init|show`, `ingest`
//! (JSONL and SQuAD files, bad records, a real kill -9 mid-ingest), `ask --json`, `bank
//! stats|verify|delete|compact`.
mod cli_support;
#[path = "../crates/cmt-core/tests/common/mod.rs"]
mod common;
use cli_support::{cmt, ok};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    ckpt: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = common::write_tiny_model(&root, 16, 3);
    let ckpt = root.join("ckpt.safetensors");
    let m = model.to_str().unwrap();
    let out = cmt()
        .args(["checkpoint", "init", "--model", m, "--out"])
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
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out, "checkpoint init");
    assert!(err.contains("G_ω") && err.contains("% of θ"), "{err}");
    Env {
        _dir: dir,
        root,
        model,
        ckpt,
    }
}

impl Env {
    fn with<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.arg("--model")
            .arg(&self.model)
            .arg("--checkpoint")
            .arg(&self.ckpt)
    }
}

fn write_jsonl(path: &Path, n: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    for i in 0..n {
        writeln!(
            f,
            r#"{{"id": "d{i}", "title": "T{i}", "text": "Document {i} says the code word is w{i}.", "timestamp": {}}}"#,
            1_600_000_000 + i
        )
        .unwrap();
    }
}

fn stats(bank: &Path) -> serde_json::Value {
    let out = cmt()
        .args(["bank", "stats", "--json", "--bank"])
        .arg(bank)
        .output()
        .unwrap();
    serde_json::from_str(&ok(out, "bank stats")).unwrap()
}

#[test]
fn ingest_ask_delete_compact_through_the_cli() {
    let e = env();
    let bank = e.root.join("bank");
    let docs = e.root.join("docs.jsonl");
    write_jsonl(&docs, 5);
    // A bad line is reported with file and line and the rest goes on.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&docs)
        .unwrap()
        .write_all(b"{not json\n")
        .unwrap();
    let out = e
        .with(cmt().args(["ingest", "--bank"]).arg(&bank))
        .arg(&docs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out, "ingest");
    assert!(err.contains("docs.jsonl:6"), "{err}");
    assert!(err.contains("ingested 5 documents"), "{err}");
    // --strict makes it fatal.
    let out = e
        .with(cmt().args(["ingest", "--strict", "--bank"]).arg(&bank))
        .arg(&docs)
        .output()
        .unwrap();
    assert!(!out.status.success());

    let s = stats(&bank);
    assert_eq!(s["live"], 5);
    assert_eq!(s["deleted"], 0);
    assert_eq!(s["T"], 4);
    assert_eq!(s["r"], 16);
    let sha = cmt_runtime::fetch::sha256_file(&e.ckpt).unwrap();
    assert_eq!(s["checkpoint"], sha.as_str());
    assert!(s["bytes"].as_u64().unwrap() > 0);

    let ask = |extra: &[&str]| -> Vec<serde_json::Value> {
        let out = e
            .with(cmt().args(["ask", "--json", "--bank"]).arg(&bank))
            .args(extra)
            .output()
            .unwrap();
        ok(out, "ask")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let a = ask(&["What is the code word of document 2?"]);
    assert_eq!(a.len(), 1);
    let mems = a[0]["memories"].as_array().unwrap();
    assert_eq!(mems.len(), 3);
    for m in mems {
        let id = m["id"].as_str().unwrap();
        assert!(
            id.starts_with('d') && id[1..].parse::<usize>().unwrap() < 5,
            "{id}"
        );
        assert_eq!(m["title"].as_str().unwrap(), format!("T{}", &id[1..]));
        assert!(m["score"].is_number() && m["weight"].is_number());
    }
    assert!(a[0]["answer"].is_string());
    for stage in ["encode_s", "search_s", "prefix_s", "generate_s"] {
        assert!(a[0]["timings"][stage].is_number(), "{stage}");
    }
    // A time window: documents 1..=2 only.
    let w = ask(&[
        "--since",
        "1600000001",
        "--until",
        "2020-09-13T12:26:42Z",
        "code word?",
    ]);
    for m in w[0]["memories"].as_array().unwrap() {
        assert!(["d1", "d2"].contains(&m["id"].as_str().unwrap()), "{m}");
    }
    // Many questions from a file.
    let qs = e.root.join("q.jsonl");
    std::fs::write(
        &qs,
        "{\"id\": \"q1\", \"question\": \"one?\"}\n{\"question\": \"two?\"}\n",
    )
    .unwrap();
    let many = ask(&["--questions", qs.to_str().unwrap()]);
    assert_eq!(many.len(), 2);
    assert_eq!(many[0]["id"], "q1");

    // Delete: the document's memories never come back.
    ok(
        cmt()
            .args(["bank", "delete", "--bank"])
            .arg(&bank)
            .args(["d0", "d3"])
            .output()
            .unwrap(),
        "delete",
    );
    let before = ask(&["--k", "5", "code word?"]);
    let ids: Vec<&str> = before[0]["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&"d0") && !ids.contains(&"d3"), "{ids:?}");
    assert_eq!(stats(&bank)["deleted"], 2);
    ok(
        cmt()
            .args(["bank", "compact", "--bank"])
            .arg(&bank)
            .output()
            .unwrap(),
        "compact",
    );
    let after = ask(&["--k", "5", "code word?"]);
    assert_eq!(before[0]["answer"], after[0]["answer"]);
    assert_eq!(before[0]["memories"], after[0]["memories"]);
    assert_eq!(stats(&bank)["deleted"], 0);
    ok(
        cmt()
            .args(["bank", "verify", "--bank"])
            .arg(&bank)
            .output()
            .unwrap(),
        "verify",
    );

    // A damaged record: verify exits non-zero naming the file.
    let seg = std::fs::read_dir(&bank)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let out = cmt()
        .args(["bank", "verify", "--bank"])
        .arg(&bank)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("seg-") && err.contains("offset"), "{err}");

    // checkpoint show prints the metadata.
    let out = cmt()
        .args(["checkpoint", "show", "--json"])
        .arg(&e.ckpt)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(out, "show")).unwrap();
    assert_eq!(
        (
            v["T"].as_u64(),
            v["p"].as_u64(),
            v["r"].as_u64(),
            v["k"].as_u64()
        ),
        (Some(4), Some(4), Some(16), Some(3))
    );
    assert_eq!(v["sha256"], sha.as_str());
}

#[test]
fn squad_files_ingest_one_document_per_paragraph() {
    let e = env();
    let bank = e.root.join("bank");
    let squad = e.root.join("s.json");
    std::fs::write(
        &squad,
        r#"{"version": "1.1", "data": [{"title": "Art", "paragraphs": [
            {"context": "Alpha beta.", "qas": [{"id": "q1", "question": "What?", "answers": [{"text": "Alpha", "answer_start": 0}]}]},
            {"context": "Gamma delta.", "qas": []}]}]}"#,
    )
    .unwrap();
    ok(
        e.with(cmt().args(["ingest", "--bank"]).arg(&bank))
            .arg(&squad)
            .output()
            .unwrap(),
        "ingest squad",
    );
    assert_eq!(stats(&bank)["documents"], 2);
    let out = e
        .with(
            cmt()
                .args(["ask", "--json", "--k", "2", "--bank"])
                .arg(&bank),
        )
        .arg("What?")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(ok(out, "ask").trim()).unwrap();
    let mut ids: Vec<&str> = v["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["Art#0", "Art#1"]);
}

#[test]
fn kill_9_mid_ingest_then_verify_and_resume_to_exactly_200() {
    let e = env();
    let bank = e.root.join("bank");
    let docs = e.root.join("docs.jsonl");
    write_jsonl(&docs, 200);
    let mut child = e
        .with(cmt().args(["ingest", "--batch", "1", "--bank"]).arg(&bank))
        .arg(&docs)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some documents are in, then kill -9 while it is still appending.
    let t0 = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(5));
        let n = std::fs::read_dir(&bank)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
                    .map(|e| e.metadata().map_or(0, |m| m.len()))
                    .sum::<u64>()
            })
            .unwrap_or(0);
        if n > 20_000 || t0.elapsed().as_secs() > 60 {
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "ingest finished before the kill"
    );
    // SAFETY: kill(2) on our own child's pid, which has not been reaped (try_wait said it
    // is still running).
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let status = child.wait().unwrap();
    assert!(!status.success());
    ok(
        cmt()
            .args(["bank", "verify", "--bank"])
            .arg(&bank)
            .output()
            .unwrap(),
        "verify after kill",
    );
    let live = stats(&bank)["live"].as_u64().unwrap();
    assert!(live > 0 && live < 200, "{live} entries after the kill");
    let out = e
        .with(cmt().args(["ingest", "--bank"]).arg(&bank))
        .arg(&docs)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out, "second ingest");
    assert!(
        err.contains(&format!("skipped {live} already present")),
        "{err}"
    );
    let s = stats(&bank);
    assert_eq!(
        (s["live"].as_u64(), s["documents"].as_u64()),
        (Some(200), Some(200))
    );
}

#[test]
fn ingest_refuses_a_bank_of_another_checkpoint() {
    let e = env();
    let bank = e.root.join("bank");
    let docs = e.root.join("docs.jsonl");
    write_jsonl(&docs, 2);
    ok(
        e.with(cmt().args(["ingest", "--bank"]).arg(&bank))
            .arg(&docs)
            .output()
            .unwrap(),
        "ingest",
    );
    let other = e.root.join("other.safetensors");
    ok(
        cmt()
            .args(["checkpoint", "init", "--seed", "9", "--model"])
            .arg(&e.model)
            .arg("--out")
            .arg(&other)
            .args(["--mem-tokens", "4", "--key-dim", "16", "--prefix-rank", "4"])
            .output()
            .unwrap(),
        "init other",
    );
    let out = cmt()
        .args(["ingest", "--model"])
        .arg(&e.model)
        .arg("--checkpoint")
        .arg(&other)
        .arg("--bank")
        .arg(&bank)
        .arg(&docs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to") && err.contains("other.safetensors"),
        "{err}"
    );
}

#[test]
fn checkpoint_show_without_a_file_shows_the_default_or_says_there_is_none() {
    if let Some(path) = cmt_core::default_checkpoint_path() {
        // The committed default checkpoint: trained, shipped in bf16, for the default model.
        let out = cmt()
            .args(["checkpoint", "show", "--json"])
            .env_remove("CMT_CHECKPOINT")
            .output()
            .unwrap();
        let text = ok(out, "checkpoint show");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["file"], path.display().to_string());
        assert_eq!(v["dtype"], "bf16");
        assert!(v["extra"]["train_step"].as_u64().unwrap_or(0) > 0, "{v}");
        assert_eq!(
            v["base_model"]["sha256"],
            cmt_runtime::fetch::DEFAULT_SHA256,
            "the default checkpoint belongs to the default model"
        );
        return;
    }
    let out = cmt()
        .args(["checkpoint", "show"])
        .env_remove("CMT_CHECKPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no default checkpoint yet"), "{err}");
    // And ask without --checkpoint says the same.
    let e = env();
    let out = cmt()
        .args(["ask", "--bank"])
        .arg(e.root.join("bank"))
        .arg("--model")
        .arg(&e.model)
        .arg("q?")
        .env_remove("CMT_CHECKPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no default checkpoint yet"), "{err}");
}
