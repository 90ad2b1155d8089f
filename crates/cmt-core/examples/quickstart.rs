//! cmt-core end to end: load θ and a checkpoint, create a bank, ingest two documents, ask,
//! delete one, ask again.
//!
//! ```sh
//! cargo run --release -p cmt-core --example quickstart -- CHECKPOINT [MODEL]
//! ```
//! CHECKPOINT: a CMT checkpoint for the model (`cmt checkpoint init --out ckpt.safetensors`
//! makes an untrained one); MODEL: a GGUF file or HF directory (default: the default model,
//! fetched if absent).
use cmt_core::{AskOptions, Cmt, Document, IngestOptions};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let ckpt = PathBuf::from(args.next().ok_or("usage: quickstart CHECKPOINT [MODEL]")?);
    let model = match args.next() {
        Some(m) => PathBuf::from(m),
        None => cmt_core::runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}"))?,
    };
    let cmt = Cmt::open(&model, &ckpt)?;

    let dir = std::env::temp_dir().join(format!("cmt-quickstart-{}", std::process::id()));
    let mut bank = cmt.open_bank_writer(&dir)?;
    let docs = [
        Document::new(
            "quillby",
            "The Zorblat festival of Quillby is held every March.",
        ),
        Document::new(
            "veltronic",
            "Veltronic launched the Moonfish phone in June 2031.",
        ),
    ];
    let report = cmt.ingest(&mut bank, &docs, &IngestOptions::default(), |_| {})?;
    println!(
        "ingested {} documents ({} entries)",
        report.added, report.entries
    );

    let questions = vec!["When is the Zorblat festival held?".to_string()];
    for a in cmt.ask(Some(&bank), &questions, &AskOptions::default())? {
        println!("Q: {}\nA: {}", a.question, a.answer);
        for m in &a.memories {
            println!(
                "   memory {} (score {:.2}, weight {:.2})",
                m.id, m.score, m.weight
            );
        }
    }

    // A deleted document's memories are never used again.
    cmt.delete(&mut bank, &["quillby".to_string()])?;
    let a = &cmt.ask(Some(&bank), &questions, &AskOptions::default())?[0];
    assert!(a.memories.iter().all(|m| m.id != "quillby"));
    println!("after deleting quillby: {}", a.answer);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
