//! ingest → bank → ask on a tiny random model: memories come from the bank, deletes are
//! final, compaction changes no answer, a resumed ingest equals a straight one, and banks
//! or checkpoints of other models are refused.
mod common;
use cmt_core::model::BaseLm;
use cmt_core::{AskOptions, Cmt, Document, IngestOptions};
use std::path::{Path, PathBuf};

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
    ckpt: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = common::write_tiny_model(&root, 16, 7);
    let ckpt = root.join("ckpt.safetensors");
    make_ckpt(&model, &ckpt, 1);
    Setup {
        _dir: dir,
        root,
        model,
        ckpt,
    }
}

fn make_ckpt(model: &Path, out: &Path, seed: u64) {
    let base = BaseLm::load(model).unwrap();
    let cfg = common::tiny_cmt_config(16);
    cmt_core::init_checkpoint(&base, &cfg, "plain", seed, "test", out).unwrap();
}

fn docs() -> Vec<Document> {
    let texts = [
        "The Zorblat festival of Quillby is held every March.",
        "Veltronic launched the Moonfish phone in 2020.",
        "Harrowgate bridge was rebuilt in 2019 after the flood.",
        "The mayor of Quillby is Odessa Flint.",
        "Quillby's river is called the Mirrow.",
        "In 2021 the Mirrow froze for the first time in a century.",
    ];
    let years = [2018u64, 2020, 2019, 2020, 2021, 2021];
    texts
        .iter()
        .zip(years)
        .enumerate()
        .map(|(i, (t, y))| {
            let mut d = Document::new(format!("doc{i}"), *t);
            d.title = Some(format!("title {i}"));
            d.timestamp = Some((y - 1970) * 31_556_952);
            d
        })
        .collect()
}

fn questions() -> Vec<String> {
    [
        "When is the Zorblat festival?",
        "Who is the mayor of Quillby?",
        "What did Veltronic launch?",
        "What froze in 2021?",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn opts() -> AskOptions {
    AskOptions {
        max_new_tokens: 6,
        ..Default::default()
    }
}

#[test]
fn ingest_ask_delete_compact() {
    let s = setup();
    let cmt = Cmt::open(&s.model, &s.ckpt).unwrap();
    let bank_dir = s.root.join("bank");
    let mut bank = cmt.open_bank_writer(&bank_dir).unwrap();
    let rep = cmt
        .ingest(&mut bank, &docs(), &IngestOptions::default(), |_| {})
        .unwrap();
    assert_eq!((rep.added, rep.entries, rep.skipped), (6, 6, 0));

    let answers = cmt.ask(Some(&bank), &questions(), &opts()).unwrap();
    // A reader opened now keeps answering from its snapshot while the writer deletes and
    // compacts below.
    let early_reader = cmt.open_bank_reader(&bank_dir).unwrap();
    let ids: Vec<String> = docs().iter().map(|d| d.id.clone()).collect();
    for a in &answers {
        assert!(a.with_memory);
        assert_eq!(a.memories.len(), cmt.model.cfg().k);
        let wsum: f32 = a.memories.iter().map(|m| m.weight).sum();
        assert!((wsum - 1.0).abs() < 1e-5, "{wsum}");
        for m in &a.memories {
            assert!(ids.contains(&m.id), "{}", m.id);
            assert_eq!(m.title, format!("title {}", &m.id[3..]));
        }
        // Scores are best first.
        assert!(a.memories.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // The memories used are the bank's top k by k_x·k_d: the same question asked with
    // k = 6 (every entry) lists the k = 2 selection first.
    let all = cmt
        .ask(
            Some(&bank),
            &questions(),
            &AskOptions {
                k: Some(6),
                ..opts()
            },
        )
        .unwrap();
    for (a, b) in answers.iter().zip(&all) {
        let top: Vec<u64> = b.memories.iter().take(2).map(|m| m.entry).collect();
        assert_eq!(a.memories.iter().map(|m| m.entry).collect::<Vec<_>>(), top);
    }

    // A time window: only 2020's memories.
    let y = |y: u64| (y - 1970) * 31_556_952;
    let win = AskOptions {
        since: Some(y(2020)),
        until: Some(y(2020)),
        ..opts()
    };
    for a in cmt.ask(Some(&bank), &questions(), &win).unwrap() {
        let got: Vec<&str> = a.memories.iter().map(|m| m.id.as_str()).collect();
        assert!(
            got.iter().all(|id| ["doc1", "doc3"].contains(id)),
            "{got:?}"
        );
    }

    // Delete two documents: they never come back, whatever is asked.
    let (n, missing) = cmt
        .delete(&mut bank, &["doc0".into(), "doc3".into(), "nope".into()])
        .unwrap();
    assert_eq!((n, missing), (2, vec!["nope".to_string()]));
    let after = cmt
        .ask(
            Some(&bank),
            &questions(),
            &AskOptions {
                k: Some(6),
                ..opts()
            },
        )
        .unwrap();
    for a in &after {
        assert_eq!(a.memories.len(), 4);
        assert!(a.memories.iter().all(|m| m.id != "doc0" && m.id != "doc3"));
    }
    // Compaction changes no answer, memory or weight.
    bank.compact().unwrap();
    let compacted = cmt
        .ask(
            Some(&bank),
            &questions(),
            &AskOptions {
                k: Some(6),
                ..opts()
            },
        )
        .unwrap();
    for (a, b) in after.iter().zip(&compacted) {
        assert_eq!(a.answer, b.answer);
        assert_eq!(a.memories, b.memories);
    }
    // The early reader still works, and still answers from its snapshot (the first ask).
    let snap = cmt.ask(Some(&early_reader), &questions(), &opts()).unwrap();
    for (a, b) in answers.iter().zip(&snap) {
        assert_eq!(a.memories, b.memories);
        assert_eq!(a.answer, b.answer);
    }
    // A reader opened now sees the same.
    drop(bank);
    let reader = cmt.open_bank_reader(&bank_dir).unwrap();
    let again = cmt
        .ask(
            Some(&reader),
            &questions(),
            &AskOptions {
                k: Some(6),
                ..opts()
            },
        )
        .unwrap();
    assert_eq!(
        again.iter().map(|a| &a.memories).collect::<Vec<_>>(),
        compacted.iter().map(|a| &a.memories).collect::<Vec<_>>()
    );
}

#[test]
fn resume_skips_present_documents_and_reports_changed_ones() {
    let s = setup();
    let cmt = Cmt::open(&s.model, &s.ckpt).unwrap();
    let all = docs();
    let straight_dir = s.root.join("straight");
    let mut straight = cmt.open_bank_writer(&straight_dir).unwrap();
    cmt.ingest(&mut straight, &all, &IngestOptions::default(), |_| {})
        .unwrap();
    let resumed_dir = s.root.join("resumed");
    {
        let mut b = cmt.open_bank_writer(&resumed_dir).unwrap();
        cmt.ingest(&mut b, &all[..3], &IngestOptions::default(), |_| {})
            .unwrap();
    }
    let mut resumed = cmt.open_bank_writer(&resumed_dir).unwrap();
    let rep = cmt
        .ingest(&mut resumed, &all, &IngestOptions::default(), |_| {})
        .unwrap();
    assert_eq!((rep.added, rep.skipped), (3, 3));
    let by_doc = |b: &cmt_memory::Bank| {
        let mut v: Vec<(String, Vec<f32>, Vec<f32>)> = cmt_core::bank::doc_entries(b)
            .unwrap()
            .into_iter()
            .map(|e| {
                let r = b.get(e.meta.id).unwrap().unwrap();
                (e.doc.doc_id, r.key.to_vec(), r.memory.to_f32_vec())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    // The same documents with the same memories. θ's encoding is batch-invariant and the
    // memories are stored in bf16, so they match exactly; the f32 keys come out of the
    // compressor's batched GEMMs and vary in the last bit with the batch's other rows.
    let (a, b) = (by_doc(&straight), by_doc(&resumed));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, &x.2), (&y.0, &y.2));
        for (p, q) in x.1.iter().zip(&y.1) {
            assert!((p - q).abs() <= 1e-6, "{}: key {p} vs {q}", x.0);
        }
    }

    // The same id with another text: reported, not replaced…
    let mut changed = all[1].clone();
    changed.text = "Veltronic cancelled the Moonfish phone.".into();
    let rep = cmt
        .ingest(
            &mut resumed,
            &[changed.clone()],
            &IngestOptions::default(),
            |_| {},
        )
        .unwrap();
    assert_eq!(rep.conflicts, vec!["doc1".to_string()]);
    assert_eq!(resumed.live_count(), 6);
    // …unless asked to.
    let rep = cmt
        .ingest(
            &mut resumed,
            &[changed],
            &IngestOptions {
                replace: true,
                ..Default::default()
            },
            |_| {},
        )
        .unwrap();
    assert_eq!((rep.replaced, rep.added), (1, 1));
    assert_eq!(resumed.live_count(), 6);
}

#[test]
fn other_models_checkpoints_and_banks_are_refused() {
    let s = setup();
    let cmt = Cmt::open(&s.model, &s.ckpt).unwrap();
    let bank_dir = s.root.join("bank");
    let mut bank = cmt.open_bank_writer(&bank_dir).unwrap();
    cmt.ingest(&mut bank, &docs()[..2], &IngestOptions::default(), |_| {})
        .unwrap();
    drop(bank);

    // The checkpoint on another base model.
    let other = common::write_tiny_model(&s.root, 16, 8);
    let err = Cmt::open(&other, &s.ckpt)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("ckpt.safetensors") && err.contains("made for base model"),
        "{err}"
    );

    // The bank with another checkpoint (same model).
    let ckpt2 = s.root.join("ckpt2.safetensors");
    make_ckpt(&s.model, &ckpt2, 2);
    let cmt2 = Cmt::open(&s.model, &ckpt2).unwrap();
    for err in [
        cmt2.open_bank_reader(&bank_dir).expect_err("refused"),
        cmt2.open_bank_writer(&bank_dir).expect_err("refused"),
    ] {
        let msg = err.to_string();
        assert!(
            msg.contains("belongs to") && msg.contains("ckpt2.safetensors"),
            "{msg}"
        );
    }

    // A damaged checkpoint names the file.
    let bytes = std::fs::read(&s.ckpt).unwrap();
    let bad = s.root.join("bad.safetensors");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let msg = Cmt::open(&s.model, &bad)
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("bad.safetensors"), "{msg}");
    // A foreign safetensors file (the model's weights) too.
    let msg = Cmt::open(&s.model, &s.model.join("model.safetensors"))
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("not a cmt-checkpoint file"), "{msg}");
}

#[test]
fn an_empty_bank_answers_without_memory() {
    let s = setup();
    let cmt = Cmt::open(&s.model, &s.ckpt).unwrap();
    let bank = cmt.open_bank_writer(&s.root.join("empty")).unwrap();
    let a = cmt.ask(Some(&bank), &questions()[..1], &opts()).unwrap();
    assert!(!a[0].with_memory && a[0].memories.is_empty());
    // …which is the frozen model's closed-book answer.
    let closed = cmt.ask(None, &questions()[..1], &opts()).unwrap();
    assert_eq!(a[0].answer, closed[0].answer);
}

#[test]
fn checkpoint_round_trips_in_bf16_and_f32() {
    let s = setup();
    let ck = cmt_core::checkpoint::load(&s.ckpt).unwrap();
    for dtype in [
        cmt_core::checkpoint::CkptDtype::F32,
        cmt_core::checkpoint::CkptDtype::Bf16,
    ] {
        let mut meta = ck.meta.clone();
        meta.dtype = dtype;
        let out = s.root.join(format!("rt-{dtype:?}.safetensors"));
        cmt_core::checkpoint::save(&out, &meta, &ck.params).unwrap();
        let back = cmt_core::checkpoint::load(&out).unwrap();
        assert_eq!(back.meta, meta);
        for ((n, a), (_, b)) in ck.params.tensors().iter().zip(back.params.tensors()) {
            for (x, y) in a.iter().zip(b) {
                let tol = match dtype {
                    cmt_core::checkpoint::CkptDtype::F32 => 0.0,
                    cmt_core::checkpoint::CkptDtype::Bf16 => x.abs() / 256.0,
                };
                assert!((x - y).abs() <= tol, "{n}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn without_topk_every_entry_is_aggregated_with_the_scores_of_the_scan() {
    let s = setup();
    let base = BaseLm::load(&s.model).unwrap();
    let mut cfg = common::tiny_cmt_config(16);
    cfg.topk = false;
    let dense_ckpt = s.root.join("dense.safetensors");
    cmt_core::init_checkpoint(&base, &cfg, "plain", 1, "test", &dense_ckpt).unwrap();
    let dense = Cmt::open(&s.model, &dense_ckpt).unwrap();
    let mut bank = dense.open_bank_writer(&s.root.join("b")).unwrap();
    dense
        .ingest(&mut bank, &docs(), &IngestOptions::default(), |_| {})
        .unwrap();
    let got = dense.ask(Some(&bank), &questions(), &opts()).unwrap();
    for (q, a) in got.iter().enumerate() {
        assert_eq!(a.memories.len(), 6);
        let wsum: f32 = a.memories.iter().map(|m| m.weight).sum();
        assert!((wsum - 1.0).abs() < 1e-5, "{wsum}");
        // Weights are the softmax of the scores.
        let mx = a.memories.iter().map(|m| m.score).fold(f32::MIN, f32::max);
        let z: f32 = a.memories.iter().map(|m| (m.score - mx).exp()).sum();
        for m in &a.memories {
            assert!(
                (m.weight - (m.score - mx).exp() / z).abs() < 1e-5,
                "question {q}"
            );
        }
    }
}
