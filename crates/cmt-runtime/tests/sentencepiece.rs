//! SentencePiece GGUF tokenizers (`tokenizer.ggml.model = llama`) against the
//! `sentencepiece` package itself: `scripts/make_spm_gguf.py` trains a tiny BPE model with
//! Llama 2's settings, writes it into a GGUF with gguf-py's writer, and encodes the
//! tokenizer test texts (the golden fixtures' awkward strings and a few whitespace cases)
//! with SentencePiece. The rebuilt tokenizer must give the same ids, with BOS exactly when
//! asked, and decode them back to SentencePiece's decoding. Skips with a message where
//! python3 lacks `sentencepiece`/`gguf` (on CI that is a failure: `.ci/run` installs them).
mod common;
use cmt_runtime::gguf::GgufFile;
use std::path::Path;
use std::process::Command;

fn texts() -> Vec<String> {
    let mut t: Vec<String> = match common::fixtures_dir() {
        Some(d) => {
            let meta: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(d.join("smollm2_golden.json")).unwrap(),
            )
            .unwrap();
            meta["tokenizer"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["text"].as_str().unwrap().to_string())
                .collect()
        }
        None => Vec::new(),
    };
    for extra in [
        "Hello world!",
        "hello  world",
        " x",
        "ends with space ",
        "tab\tand\nnewline",
        "emoji 🙂 and 東京",
        "In 2016, the Denver Broncos won Super Bowl 50.",
    ] {
        t.push(extra.to_string());
    }
    t
}

fn reference(dir: &Path, texts: &[String]) -> Option<serde_json::Value> {
    let texts_path = dir.join("texts.json");
    std::fs::write(&texts_path, serde_json::to_string(texts).unwrap()).unwrap();
    let args = [dir.as_os_str(), texts_path.as_os_str()];
    let out = common::run_script("make_spm_gguf.py", &args, "sentencepiece gguf")?;
    Some(serde_json::from_slice(&out).expect("the script prints JSON"))
}

#[test]
fn ids_and_decoding_match_sentencepiece() {
    let dir = tempfile::tempdir().unwrap();
    let texts = texts();
    let Some(r) = reference(dir.path(), &texts) else {
        return;
    };
    eprintln!("sentencepiece {}", r["sentencepiece"]);
    let tok = GgufFile::open(dir.path().join("spm.gguf"))
        .unwrap()
        .tokenizer()
        .unwrap();
    let bos = r["bos"].as_u64().unwrap() as u32;
    for case in r["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, want, "{text:?} without specials");
        let with = tok.encode(text, true).unwrap();
        assert_eq!(with[0], bos, "{text:?}: BOS first");
        assert_eq!(&with[1..], &want[..], "{text:?} with specials");
        assert_eq!(
            tok.decode(&got).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?}: decoding"
        );
    }
}

#[test]
fn an_unknown_tokenizer_model_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    let script = "import gguf,sys\nw=gguf.GGUFWriter(sys.argv[1],'llama')\nw.add_tokenizer_model('rwkv')\nw.add_token_list(['a','b'])\nw.write_header_to_file();w.write_kv_data_to_file();w.write_tensors_to_file();w.close()";
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: python3 with gguf is not available");
        return;
    }
    let Err(e) = GgufFile::open(&path).unwrap().tokenizer() else {
        panic!("an rwkv tokenizer was accepted");
    };
    let err = e.to_string();
    assert!(
        err.contains("rwkv") && err.contains("tokenizer.ggml.model"),
        "{err}"
    );
}
