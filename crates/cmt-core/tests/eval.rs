//! The evaluation harness end to end on a tiny random model and a tiny hand-made dataset:
//! every method's plumbing (counts, summary fields, predictions, a retention curve of the
//! right length with distractors, recall in range and exact where retrieval is under the
//! test's control), the predictions file, the plot, and the ask-side helpers the harness
//! adds (`match_questions`, `ask_with_entries`). Figures are meaningless on a random model.
mod common;
use cmt_core::ask::{self, AskOptions};
use cmt_core::data::{Dataset, Question};
use cmt_core::eval::{self, Engine, EvalOptions, EvalOutput, EvalProgress, Method, Pass};
use cmt_core::model::BaseLm;
use cmt_core::template::Template;
use cmt_core::{Cmt, Document, IngestOptions};
use std::path::PathBuf;

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cmt: Cmt,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = common::write_tiny_model(&root, 16, 11);
    let ckpt = root.join("ckpt.safetensors");
    let base = BaseLm::load(&model).unwrap();
    cmt_core::init_checkpoint(
        &base,
        &common::tiny_cmt_config(16),
        "plain",
        5,
        "test",
        &ckpt,
    )
    .unwrap();
    let cmt = Cmt::open(&model, &ckpt).unwrap();
    Setup {
        _dir: dir,
        root,
        cmt,
    }
}

/// Four documents, each with a word no other document (or distractor) has; questions that
/// name that word (so BM25 finds the gold document first), and one question that shares
/// no word with any document (BM25 finds nothing for it).
fn dataset() -> Dataset {
    let docs = [
        ("alpha", "Zorblat festivals happen in Quillby every March."),
        ("beta", "Veltronic launched the Moonfish phone in 2020."),
        ("gamma", "Harrowgate bridge was rebuilt after the flood."),
        ("delta", "Odessa Flint is mayor of Kexholm."),
    ];
    let qs = [
        ("q0", "When do Zorblat festivals happen?", "March", "alpha"),
        (
            "q1",
            "What did Veltronic launch?",
            "the Moonfish phone",
            "beta",
        ),
        ("q2", "Which Zorblat town?", "Quillby", "alpha"),
        (
            "q3",
            "What happened to Harrowgate bridge?",
            "rebuilt",
            "gamma",
        ),
        ("q4", "Who is mayor of Kexholm?", "Odessa Flint", "delta"),
        ("q5", "Moonfish year?", "2020", "beta"),
        ("q6", "Xyzzy plugh?", "nothing", "gamma"),
    ];
    Dataset {
        documents: docs.iter().map(|(id, t)| Document::new(*id, *t)).collect(),
        questions: qs
            .iter()
            .map(|(id, q, a, d)| Question {
                id: id.to_string(),
                question: q.to_string(),
                answers: vec![a.to_string(), format!("{a}.")],
                doc_id: d.to_string(),
                timestamp: None,
            })
            .collect(),
    }
}

fn distractors() -> Vec<Document> {
    (0..5)
        .map(|i| {
            Document::new(
                format!("x{i}"),
                format!("Distractor number {i} mentions rivers and hills."),
            )
        })
        .collect()
}

fn opts(method: Method) -> EvalOptions {
    EvalOptions {
        method,
        retention_every: 3,
        retention_sample: 10,
        max_new_tokens: 4,
        batch: 3,
        ..Default::default()
    }
}

fn run(
    s: &Setup,
    method: Method,
    data: &Dataset,
    distr: &[Document],
) -> (EvalOutput, Vec<EvalProgress>) {
    let engine = if method.needs_checkpoint() {
        Engine::Cmt(&s.cmt.model)
    } else {
        Engine::Base {
            lm: &s.cmt.model.base,
            template: Template::Plain,
        }
    };
    let mut events = Vec::new();
    let out = eval::evaluate(&engine, data, distr, &opts(method), |p| events.push(p)).unwrap();
    (out, events)
}

#[test]
fn every_method_end_to_end_with_distractors() {
    let s = setup();
    let data = dataset();
    let distr = distractors();
    let out_root = s.root.join("out");
    for method in Method::ALL {
        let (out, events) = run(&s, method, &data, &distr);
        let sum = &out.summary;
        let what = method.name();
        assert_eq!(sum.method, method);
        assert_eq!(
            (sum.n_docs, sum.n_distractors, sum.n_questions),
            (4, 5, 7),
            "{what}"
        );
        // The checkpoint's k for the cmt methods, 4 for the baselines (θ alone).
        let k = if method.needs_checkpoint() { 2 } else { 4 };
        assert_eq!(sum.k, k, "{what}");
        let ids: Vec<&str> = out.predictions.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["q0", "q1", "q2", "q3", "q4", "q5", "q6"], "{what}");
        for v in [sum.em, sum.prefix_em, sum.f1] {
            assert!((0.0..=100.0).contains(&v), "{what}: {v}");
        }
        assert!(sum.prefix_em >= sum.em, "{what}");
        // JSON carries at least the fields.
        let j = serde_json::to_value(sum).unwrap();
        for f in [
            "method",
            "n_docs",
            "n_questions",
            "em",
            "prefix_em",
            "f1",
            "recall_at_1",
            "recall_at_k",
            "retention",
            "retention_curve",
        ] {
            assert!(j.get(f).is_some(), "{what}: no field {f}");
        }
        assert_eq!(j["method"], what);
        // Recall where the method retrieves, null elsewhere.
        assert_eq!(sum.recall_at_1.is_some(), method.retrieves(), "{what}");
        for r in [sum.recall_at_1, sum.recall_at_k].into_iter().flatten() {
            assert!((0.0..=100.0).contains(&r), "{what}: {r}");
        }
        // Retention: 9 streamed documents, a point every 3 -> points at 3, 6 and 9; the
        // sample is every question about the first 3 documents (alpha, beta, gamma).
        assert_eq!(sum.retention_sample, 6, "{what}");
        match &sum.retention_curve {
            Some(curve) => {
                assert!(method.streams(), "{what}");
                let docs: Vec<usize> = curve.iter().map(|p| p.docs).collect();
                assert_eq!(docs, [3, 6, 9], "{what}");
                if let Some(r) = curve[0].relative {
                    assert!(
                        (r - 1.0).abs() < 1e-12,
                        "{what}: first point is 1 by definition"
                    );
                }
                assert_eq!(sum.retention, curve[2].relative, "{what}");
                assert!(sum.docs_per_s.is_some_and(|x| x > 0.0), "{what}");
                let retention_passes = events
                    .iter()
                    .filter(|e| {
                        matches!(
                            e,
                            EvalProgress::Answer {
                                pass: Pass::Retention { .. },
                                ..
                            }
                        )
                    })
                    .count();
                assert!(retention_passes >= 2, "{what}: answered at 3 and 6");
            }
            None => {
                assert!(!method.streams(), "{what}");
                assert!(sum.retention.is_none() && sum.docs_per_s.is_none());
            }
        }
        assert!(events.iter().any(|e| matches!(
            e,
            EvalProgress::Answer {
                pass: Pass::Final,
                done: 7,
                total: 7
            }
        )));
        // Per-method plumbing.
        for p in &out.predictions {
            assert!(p.prompt_tokens > 0);
            match method {
                Method::ClosedBook => assert!(p.context_doc.is_none() && p.documents.is_empty()),
                Method::Oracle => assert_eq!(p.context_doc.as_deref(), Some(p.doc_id.as_str())),
                Method::Rag | Method::CmtKeysRag => {
                    assert_eq!(p.context_doc, p.documents.first().map(|d| d.id.clone()));
                    assert!(p.documents.len() <= k && !p.with_memory);
                }
                Method::Cmt => {
                    assert!(p.with_memory);
                    assert_eq!(p.memories.len(), 2);
                    assert_eq!(p.context_tokens, s.cmt.model.cfg().p());
                }
                Method::CmtShuffled => {
                    assert!(p.with_memory);
                    assert_eq!(p.memories.len(), 2);
                    assert!(p.memories.iter().all(|m| m.id != p.doc_id), "{p:?}");
                    assert!(p.documents.is_empty());
                }
            }
        }
        if method.needs_checkpoint() {
            // Each short document is one entry of 3 × 16 bf16 values plus key and metadata.
            assert!(sum.memory_bytes_per_doc.is_some_and(|b| b > 96.0));
            assert!(sum.bank_bytes.is_some());
        }
        // The predictions file: one line per question with its id, prediction, gold answers
        // and memories.
        let dir = out_root.join(what);
        eval::write_outputs(&dir, &out).unwrap();
        // Retention passes: the sample at every point, retrieving only from what had been
        // streamed by then.
        let order: Vec<String> = data
            .documents
            .iter()
            .chain(&distr)
            .map(|d| d.id.clone())
            .collect();
        let pos = |id: &str| order.iter().position(|x| x == id).unwrap();
        if method.streams() {
            let docs: Vec<usize> = out.retention.iter().map(|p| p.docs).collect();
            assert_eq!(docs, [3, 6, 9], "{what}");
            for pass in &out.retention {
                let ids: Vec<&str> = pass.predictions.iter().map(|p| p.id.as_str()).collect();
                assert_eq!(ids, ["q0", "q1", "q2", "q3", "q5", "q6"], "{what}");
                for p in &pass.predictions {
                    let seen = p
                        .documents
                        .iter()
                        .map(|d| d.id.as_str())
                        .chain(p.memories.iter().map(|m| m.id.as_str()))
                        .chain(p.context_doc.as_deref());
                    for id in seen {
                        assert!(pos(id) < pass.docs, "{what}: {id} at {}", pass.docs);
                    }
                }
            }
        } else {
            assert!(out.retention.is_empty(), "{what}");
        }
        let lines = std::fs::read_to_string(dir.join("retention.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), if method.streams() { 18 } else { 0 }, "{what}");
        if let Some(l) = lines.first() {
            assert_eq!(
                (l["docs"].as_u64(), l["id"].as_str()),
                (Some(3), Some("q0"))
            );
        }
        let text = std::fs::read_to_string(dir.join("predictions.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 7);
        for (l, p) in lines.iter().zip(&out.predictions) {
            assert_eq!(l["id"], p.id.as_str());
            assert_eq!(l["prediction"], p.prediction.as_str());
            assert_eq!(l["answers"].as_array().unwrap().len(), 2);
            assert!(l["memories"].is_array());
        }
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                .unwrap();
        // (floats may differ in the last digit: serde_json parses without exact round trip)
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&back), keys(&j));
        for f in [
            "method",
            "n_docs",
            "n_questions",
            "retention_curve",
            "recall_at_1",
        ] {
            assert_eq!(back[f].is_null(), j[f].is_null(), "{what}: {f}");
        }
        assert_eq!(back["n_questions"], 7);
        assert!(!sum.table().is_empty() && sum.table().contains("F1"));
    }
    // Oracle prompts hold the gold document: longer than closed-book's.
    let (cb, _) = run(&s, Method::ClosedBook, &data, &distr);
    let (or, _) = run(&s, Method::Oracle, &data, &distr);
    assert!(or.summary.prompt_tokens > cb.summary.prompt_tokens + 20.0);
}

#[test]
fn rag_recall_is_exact_when_the_words_decide() {
    let s = setup();
    let data = dataset();
    let (out, _) = run(&s, Method::Rag, &data, &distractors());
    // Six questions name their document's unique word; q6 matches nothing.
    assert_eq!(out.summary.recall_at_1, Some(600.0 / 7.0));
    assert_eq!(out.summary.recall_at_k, Some(600.0 / 7.0));
    assert!(out.predictions[6].documents.is_empty() && out.predictions[6].context_doc.is_none());
    // On the retention sample (q0, q1, q2, q3, q5, q6) at 3 documents: 5 of 6.
    let curve = out.summary.retention_curve.unwrap();
    for p in &curve {
        assert_eq!(p.recall_at_1, Some(500.0 / 6.0), "{p:?}");
    }
}

#[test]
fn cmt_recall_is_exact_when_the_bank_leaves_no_choice() {
    let s = setup();
    // One document: every match is the gold one.
    let one = dataset().limit_docs(1);
    assert_eq!(one.questions.len(), 2);
    for method in [Method::Cmt, Method::CmtKeysRag] {
        let (out, _) = run(&s, method, &one, &[]);
        assert_eq!(out.summary.recall_at_1, Some(100.0), "{method}");
        assert_eq!(out.summary.recall_at_k, Some(100.0), "{method}");
    }
    // cmt-shuffled has no other document to draw from: answered without memory.
    let (out, _) = run(&s, Method::CmtShuffled, &one, &[]);
    assert_eq!(out.summary.with_memory, Some(0));
    assert!(out
        .predictions
        .iter()
        .all(|p| !p.with_memory && p.memories.is_empty()));
    // k = every entry of a four-document bank: recall@k is 100 whatever the keys.
    let data = dataset();
    let engine = Engine::Cmt(&s.cmt.model);
    let o = EvalOptions {
        k: Some(4),
        ..opts(Method::Cmt)
    };
    let out = eval::evaluate(&engine, &data, &[], &o, |_| {}).unwrap();
    assert_eq!(out.summary.recall_at_k, Some(100.0));
    // recall@1 is what the top memory says, question by question.
    let hits = out
        .predictions
        .iter()
        .filter(|p| p.memories[0].id == p.doc_id)
        .count();
    assert_eq!(out.summary.recall_at_1, Some(100.0 * hits as f64 / 7.0));
}

#[test]
fn shuffled_draws_are_seeded() {
    let s = setup();
    let data = dataset();
    let distr = distractors();
    let (a, _) = run(&s, Method::CmtShuffled, &data, &distr);
    let (b, _) = run(&s, Method::CmtShuffled, &data, &distr);
    let ents = |o: &EvalOutput| -> Vec<Vec<u64>> {
        o.predictions
            .iter()
            .map(|p| p.memories.iter().map(|m| m.entry).collect())
            .collect()
    };
    assert_eq!(ents(&a), ents(&b));
    assert_eq!(
        a.predictions
            .iter()
            .map(|p| &p.prediction)
            .collect::<Vec<_>>(),
        b.predictions
            .iter()
            .map(|p| &p.prediction)
            .collect::<Vec<_>>()
    );
    let engine = Engine::Cmt(&s.cmt.model);
    let seeds: Vec<Vec<Vec<u64>>> = (1..4)
        .map(|seed| {
            let o = EvalOptions {
                seed,
                ..opts(Method::CmtShuffled)
            };
            ents(&eval::evaluate(&engine, &data, &distr, &o, |_| {}).unwrap())
        })
        .collect();
    assert!(
        seeds.iter().any(|e| *e != ents(&a)),
        "another seed, other draws"
    );
}

#[test]
fn refusals() {
    let s = setup();
    let data = dataset();
    let base = Engine::Base {
        lm: &s.cmt.model.base,
        template: Template::Plain,
    };
    let e = eval::evaluate(&base, &data, &[], &opts(Method::Cmt), |_| {}).unwrap_err();
    assert!(e.to_string().contains("checkpoint"), "{e}");
    let mut clash = distractors();
    clash[2].id = "beta".into();
    let e = eval::evaluate(&base, &data, &clash, &opts(Method::Rag), |_| {}).unwrap_err();
    assert!(e.to_string().contains("\"beta\""), "{e}");
    let e = eval::evaluate(
        &base,
        &data.clone().limit_docs(0),
        &[],
        &opts(Method::Oracle),
        |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("no questions"), "{e}");
    assert!("bm25".parse::<Method>().is_err());
    assert_eq!(
        "cmt-keys-rag".parse::<Method>().unwrap(),
        Method::CmtKeysRag
    );
}

#[test]
fn plot_draws_a_png_for_streaming_methods_only() {
    let s = setup();
    let data = dataset();
    let distr = distractors();
    let (rag, _) = run(&s, Method::Rag, &data, &distr);
    let png = s.root.join("rag.png");
    eval::plot_png(&rag.summary, &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let (cb, _) = run(&s, Method::ClosedBook, &data, &distr);
    assert!(eval::plot_png(&cb.summary, &s.root.join("cb.png")).is_err());
}

#[test]
fn ask_with_entries_reproduces_ask_given_its_selection() {
    let s = setup();
    let cmt = &s.cmt;
    let mut bank = cmt.open_bank_writer(&s.root.join("bank")).unwrap();
    cmt.ingest(
        &mut bank,
        &dataset().documents,
        &IngestOptions::default(),
        |_| {},
    )
    .unwrap();
    let qs: Vec<String> = dataset()
        .questions
        .iter()
        .map(|q| q.question.clone())
        .collect();
    let o = AskOptions {
        max_new_tokens: 4,
        ..Default::default()
    };
    let asked = cmt.ask(Some(&bank), &qs, &o).unwrap();
    let matched = ask::match_questions(&cmt.model, &bank, &qs, 2).unwrap();
    let sel: Vec<Vec<u64>> = asked
        .iter()
        .map(|a| a.memories.iter().map(|m| m.entry).collect())
        .collect();
    // The same selection, handed over in reverse order, through the same prefix path.
    let rev: Vec<Vec<u64>> = sel
        .iter()
        .map(|v| v.iter().rev().copied().collect())
        .collect();
    let again = ask::ask_with_entries(&cmt.model, &bank, &qs, &rev, &o).unwrap();
    for ((a, b), m) in asked.iter().zip(&again).zip(&matched) {
        assert_eq!(a.answer, b.answer);
        assert!(b.with_memory);
        let ids = |v: &[ask::UsedMemory]| v.iter().map(|m| m.entry).collect::<Vec<_>>();
        assert_eq!(ids(&a.memories), ids(&b.memories), "best first again");
        assert_eq!(
            ids(&a.memories),
            ids(m),
            "match_questions ranks as ask selects"
        );
        for (x, y) in a.memories.iter().zip(&b.memories) {
            assert!((x.score - y.score).abs() < 1e-4 && (x.weight - y.weight).abs() < 1e-4);
        }
    }
    // No entries: answered without memory; an unknown entry is an error.
    let none = ask::ask_with_entries(&cmt.model, &bank, &qs[..1], &[vec![]], &o).unwrap();
    assert!(!none[0].with_memory && none[0].memories.is_empty());
    assert!(ask::ask_with_entries(&cmt.model, &bank, &qs[..1], &[vec![999]], &o).is_err());
    assert!(ask::ask_with_entries(&cmt.model, &bank, &qs[..2], &[vec![]], &o).is_err());
}

/// The prompts behind docs/results.md: the default model's chat template renders ChatML
/// with its default system turn, the question as the user turn, and the assistant turn
/// open. Skips without the default model.
#[test]
fn default_model_chat_prompt_is_chatml() {
    let path = cmt_core::runtime::fetch::default_model_path();
    if !path.exists() {
        eprintln!(
            "skipped: the default model is not fetched ({})",
            path.display()
        );
        return;
    }
    let t = Template::for_model("chat", &path).unwrap();
    let s = t.render("Who?", Some("Ada wrote it.")).unwrap();
    assert!(s.starts_with("<|im_start|>system\n"), "{s:?}");
    assert!(
        s.contains("<|im_start|>user\nContext: Ada wrote it.\n\nQuestion: Who?<|im_end|>\n"),
        "{s:?}"
    );
    assert!(s.ends_with("<|im_start|>assistant\n"), "{s:?}");
    assert_eq!(
        Template::Plain.render("Who?", None).unwrap(),
        "Question: Who?\nAnswer:"
    );
}
