//! The figures of a run ([`EvalSummary`]): scores, recall, retention, cost and speed; the
//! human table, the JSON summary and the predictions file.
use super::{EvalOutput, Method, Prediction};
use crate::error::{Error, Result};
use crate::metrics::{AnswerScore, Scores};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// One point of the retention curve (and of recall against bank size).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetentionPoint {
    /// Documents streamed when the sample was answered (distractors included).
    pub docs: usize,
    /// F1 (percent) on the retention sample.
    pub f1: f64,
    /// EM (percent) on the retention sample.
    pub em: f64,
    /// `f1` relative to the first point's F1 (None when that is 0).
    pub relative: Option<f64>,
    /// Recall@1 (percent) of the gold document on the sample, where the method retrieves.
    pub recall_at_1: Option<f64>,
    /// Recall@k (percent) on the sample, where the method retrieves.
    pub recall_at_k: Option<f64>,
}

/// Everything a run measured. Percentages are 0–100; rates are per second of wall time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalSummary {
    /// The method.
    pub method: Method,
    /// The question template (`plain` or `chat`).
    pub template: String,
    /// θ's file or directory name.
    pub model: String,
    /// The checkpoint file, when one was used.
    pub checkpoint: Option<String>,
    /// Documents of the dataset (after `--limit-docs`).
    pub n_docs: usize,
    /// Distractor documents streamed after them.
    pub n_distractors: usize,
    /// Questions answered in the final pass.
    pub n_questions: usize,
    /// Memories per question (cmt methods) and the k of recall@k.
    pub k: usize,
    /// Strict exact match, percent.
    pub em: f64,
    /// MAC's prefix exact match, percent.
    pub prefix_em: f64,
    /// Token F1, percent.
    pub f1: f64,
    /// Gold document retrieved first, percent (cmt, rag, cmt-keys-rag; else None).
    pub recall_at_1: Option<f64>,
    /// Gold document among the k retrieved, percent (cmt, rag, cmt-keys-rag; else None).
    pub recall_at_k: Option<f64>,
    /// The retention curve's final relative value (None: no curve, or first F1 of 0).
    pub retention: Option<f64>,
    /// The retention curve (None for closed-book and oracle, which stream nothing).
    pub retention_curve: Option<Vec<RetentionPoint>>,
    /// Questions in the retention sample.
    pub retention_sample: usize,
    /// Streamed documents between retention points.
    pub retention_every: usize,
    /// Questions answered with a memory prefix (prefix methods; else None).
    pub with_memory: Option<usize>,
    /// Mean context tokens per question: the prefix length p for cmt and cmt-shuffled, the
    /// prompt tokens for the others.
    pub context_tokens: f64,
    /// Mean prompt tokens per question (template, question and any context text).
    pub prompt_tokens: f64,
    /// Mean tokens per prediction (re-encoded; the stop token not counted).
    pub answer_tokens: f64,
    /// Memory per streamed document: bank record bytes (cmt methods) or raw text (rag).
    pub memory_bytes_per_doc: Option<f64>,
    /// Raw UTF-8 text bytes per streamed document.
    pub raw_text_bytes_per_doc: f64,
    /// The bank's bytes on disk at the end (cmt methods).
    pub bank_bytes: Option<u64>,
    /// Seconds spent streaming (bank appends, or building the final BM25 index).
    pub stream_s: Option<f64>,
    /// Streamed documents per second.
    pub docs_per_s: Option<f64>,
    /// Seconds of the final answering pass.
    pub answer_s: f64,
    /// Questions per second in the final pass.
    pub questions_per_s: f64,
    /// Seconds spent on the intermediate retention passes.
    pub retention_s: f64,
    /// Peak resident set size of the process (VmHWM), bytes, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Seed of the retention sample and of cmt-shuffled's draws.
    pub seed: u64,
}

/// EM, prefix-EM and F1 (percent) of predictions.
pub(crate) fn scores<'a>(preds: impl IntoIterator<Item = &'a Prediction>) -> Scores {
    let mut s = Scores::new();
    for p in preds {
        s.add_score(AnswerScore {
            em: p.em,
            prefix_em: p.prefix_em,
            f1: p.f1,
        });
    }
    s
}

/// Recall@1 and recall@k (percent) of the gold document; 0 for no predictions.
pub(crate) fn recall<'a>(preds: impl IntoIterator<Item = &'a Prediction>, k: usize) -> (f64, f64) {
    let (mut n, mut at1, mut atk) = (0usize, 0usize, 0usize);
    for p in preds {
        n += 1;
        at1 += usize::from(p.documents.first().is_some_and(|d| d.id == p.doc_id));
        atk += usize::from(p.documents.iter().take(k).any(|d| d.id == p.doc_id));
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    (100.0 * at1 as f64 / n as f64, 100.0 * atk as f64 / n as f64)
}

/// Peak resident set size of this process, from `VmHWM` in `/proc/self/status` (None where
/// there is no such file, as off Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

impl EvalSummary {
    /// The human table printed by `cmt eval`.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let rows: Vec<(&str, String)> = vec![
            ("method", self.method.to_string()),
            ("template", self.template.clone()),
            ("model", self.model.clone()),
            (
                "checkpoint",
                self.checkpoint.clone().unwrap_or_else(|| "-".into()),
            ),
            (
                "documents",
                format!("{} + {} distractors", self.n_docs, self.n_distractors),
            ),
            ("questions", self.n_questions.to_string()),
            ("EM", format!("{:.2}", self.em)),
            ("prefix-EM", format!("{:.2}", self.prefix_em)),
            ("F1", format!("{:.2}", self.f1)),
            ("recall@1", opt(self.recall_at_1, 2)),
            (
                "recall@k",
                format!("{} (k = {})", opt(self.recall_at_k, 2), self.k),
            ),
            ("retention", opt(self.retention, 3)),
            (
                "with memory",
                self.with_memory
                    .map_or_else(|| "-".into(), |n| format!("{n} / {}", self.n_questions)),
            ),
            ("context tokens", format!("{:.1}", self.context_tokens)),
            ("prompt tokens", format!("{:.1}", self.prompt_tokens)),
            ("answer tokens", format!("{:.1}", self.answer_tokens)),
            (
                "memory / doc",
                format!(
                    "{} B (raw text {:.0} B)",
                    opt(self.memory_bytes_per_doc, 0),
                    self.raw_text_bytes_per_doc
                ),
            ),
            ("docs/s", opt(self.docs_per_s, 2)),
            ("questions/s", format!("{:.2}", self.questions_per_s)),
            (
                "peak RSS",
                self.peak_rss_bytes.map_or_else(
                    || "-".into(),
                    |b| format!("{:.0} MiB", b as f64 / 1048576.0),
                ),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(t, "{k:<16} {v}");
        }
        if let Some(curve) = &self.retention_curve {
            let _ = writeln!(
                t,
                "\nretention ({} questions of the first {} documents)",
                self.retention_sample, self.retention_every
            );
            let _ = writeln!(
                t,
                "{:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
                "docs", "F1", "EM", "relative", "R@1", "R@k"
            );
            for p in curve {
                let _ = writeln!(
                    t,
                    "{:>8} {:>8.2} {:>8.2} {:>9} {:>9} {:>9}",
                    p.docs,
                    p.f1,
                    p.em,
                    opt(p.relative, 3),
                    opt(p.recall_at_1, 2),
                    opt(p.recall_at_k, 2)
                );
            }
        }
        t
    }
}

/// One line of `retention.jsonl`: a retention-sample prediction and its stream point.
#[derive(Serialize)]
struct RetentionLine<'a> {
    docs: usize,
    #[serde(flatten)]
    prediction: &'a Prediction,
}

fn write_jsonl<T: Serialize>(path: &Path, rows: impl IntoIterator<Item = T>) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::new(file);
    for row in rows {
        let line = serde_json::to_string(&row)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        writeln!(w, "{line}").map_err(|e| Error::io(path, e))?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

/// Writes into `dir` (created if missing): `predictions.jsonl` (one [`Prediction`] per
/// question of the final pass), `retention.jsonl` (the retention sample's predictions at
/// every point, each line with its `docs`; empty for closed-book and oracle) and
/// `summary.json`.
pub fn write_outputs(dir: &Path, out: &EvalOutput) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_jsonl(&dir.join("predictions.jsonl"), &out.predictions)?;
    write_jsonl(
        &dir.join("retention.jsonl"),
        out.retention.iter().flat_map(|pass| {
            pass.predictions.iter().map(|prediction| RetentionLine {
                docs: pass.docs,
                prediction,
            })
        }),
    )?;
    let path = dir.join("summary.json");
    let text = serde_json::to_string_pretty(&out.summary)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))
}
