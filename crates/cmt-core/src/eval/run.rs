//! [`evaluate`]: the protocol's driver — stream, measure retention along the way, answer
//! everything, summarise.
use super::answer::{answer_questions, Memory};
use super::report::{recall, scores, EvalSummary, RetentionPoint};
use super::retention::{relative, RetentionPlan};
use super::{
    stream_of, Bm25Index, Engine, EvalOptions, EvalOutput, EvalProgress, Method, Pass, Prediction,
    RetentionPass,
};
use crate::bank;
use crate::data::{Dataset, Document, Question};
use crate::error::{Error, Result};
use crate::ingest::{self, IngestOptions};
use cmt_memory::MAX_K;
use cmt_runtime::Backend;
use std::collections::HashMap;
use std::time::Instant;

/// Runs `opts.method` on `data` with `distractors` streamed after its documents (their
/// questions, if any, are not asked), and returns the summary and every prediction.
///
/// The CMT methods stream into a fresh bank in a temporary directory (removed at the
/// end); `rag` indexes the streamed documents with BM25; closed-book and oracle stream
/// nothing. `progress` is called as documents stream and questions are answered.
pub fn evaluate<B: Backend>(
    engine: &Engine<'_, B>,
    data: &Dataset,
    distractors: &[Document],
    opts: &EvalOptions,
    mut progress: impl FnMut(EvalProgress),
) -> Result<EvalOutput> {
    let method = opts.method;
    if method.needs_checkpoint() && engine.cmt().is_none() {
        return Err(Error::Invalid(format!(
            "method {method} needs a CMT checkpoint (--checkpoint)"
        )));
    }
    if data.questions.is_empty() {
        return Err(Error::Invalid(
            "the dataset has no questions to ask (after --limit-docs)".into(),
        ));
    }
    let stream = stream_of(data, distractors)?;
    let by_id: HashMap<&str, usize> = stream
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    if let Some(q) = data
        .questions
        .iter()
        .find(|q| !by_id.contains_key(q.doc_id.as_str()))
    {
        return Err(Error::Invalid(format!(
            "question {:?} is about document {:?}, which is not in the data",
            q.id, q.doc_id
        )));
    }
    let k = opts.k.unwrap_or(engine.cmt().map_or(4, |m| m.cfg().k));
    if k == 0 || k > MAX_K {
        return Err(Error::Invalid(format!("k = {k}: must be in 1..={MAX_K}")));
    }
    let n = stream.len();
    let ids: Vec<&str> = stream.iter().map(|d| d.id.as_str()).collect();
    let plan = RetentionPlan::new(
        n,
        opts.retention_every,
        opts.retention_sample,
        opts.seed,
        &data.questions,
        &ids,
    );
    let all: Vec<(usize, &Question)> = data.questions.iter().enumerate().collect();
    let sample: Vec<(usize, &Question)> = plan
        .sample
        .iter()
        .map(|&i| (i, &data.questions[i]))
        .collect();

    let mut stream_s = 0.0;
    let mut retention_s = 0.0;
    let mut curve: Vec<(usize, Vec<Prediction>)> = Vec::new();
    let mut bank_bytes = None;
    let mut memory_bytes_per_doc = None;
    let raw_bytes = stream.iter().map(|d| d.text.len()).sum::<usize>() as f64 / n.max(1) as f64;
    let progress: &mut dyn FnMut(EvalProgress) = &mut progress;
    let answer = |mem: &Memory,
                  qs: &[(usize, &Question)],
                  pass: Pass,
                  progress: &mut dyn FnMut(EvalProgress)| {
        let t = Instant::now();
        let preds = answer_questions(engine, opts, k, mem, qs, &mut |done, total| {
            progress(EvalProgress::Answer { pass, done, total })
        })?;
        Ok::<_, Error>((preds, t.elapsed().as_secs_f64()))
    };
    let last = plan.points.len().saturating_sub(1);
    let (final_preds, answer_s) = match method {
        Method::ClosedBook | Method::Oracle => {
            let mem = Memory {
                bank: None,
                bm25: None,
                stream: &stream,
                by_id: &by_id,
            };
            answer(&mem, &all, Pass::Final, progress)?
        }
        Method::Rag => {
            let texts: Vec<&str> = stream.iter().map(|d| d.text.as_str()).collect();
            for &c in &plan.points[..last] {
                let idx = Bm25Index::new(&texts[..c]);
                let mem = Memory {
                    bank: None,
                    bm25: Some(&idx),
                    stream: &stream,
                    by_id: &by_id,
                };
                let (p, s) = answer(&mem, &sample, Pass::Retention { docs: c }, progress)?;
                retention_s += s;
                curve.push((c, p));
            }
            let t = Instant::now();
            let idx = Bm25Index::new(&texts);
            stream_s = t.elapsed().as_secs_f64();
            memory_bytes_per_doc = Some(raw_bytes);
            let mem = Memory {
                bank: None,
                bm25: Some(&idx),
                stream: &stream,
                by_id: &by_id,
            };
            answer(&mem, &all, Pass::Final, progress)?
        }
        Method::Cmt | Method::CmtKeysRag | Method::CmtShuffled => {
            let model = engine
                .cmt()
                .ok_or_else(|| Error::Invalid(format!("method {method} needs a checkpoint")))?;
            let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
            let mut bank = bank::open_writer(dir.path(), model)?;
            let ingest_opts = IngestOptions {
                replace: false,
                batch_docs: opts.ingest_batch.max(1),
            };
            let mut done = 0;
            for (j, &c) in plan.points.iter().enumerate() {
                let t = Instant::now();
                for (part, base) in segments(data, distractors, done, c) {
                    let rep = ingest::ingest(model, &mut bank, part, &ingest_opts, |p| {
                        progress(EvalProgress::Stream {
                            done: base + p.done,
                            total: n,
                        })
                    })?;
                    if let Some(id) = rep.conflicts.first() {
                        return Err(Error::Invalid(format!(
                            "document {id:?}: streamed twice with different texts"
                        )));
                    }
                }
                stream_s += t.elapsed().as_secs_f64();
                done = c;
                if j < last {
                    let mem = Memory {
                        bank: Some(&bank),
                        bm25: None,
                        stream: &stream,
                        by_id: &by_id,
                    };
                    let (p, s) = answer(&mem, &sample, Pass::Retention { docs: c }, progress)?;
                    retention_s += s;
                    curve.push((c, p));
                }
            }
            let mem = Memory {
                bank: Some(&bank),
                bm25: None,
                stream: &stream,
                by_id: &by_id,
            };
            let out = answer(&mem, &all, Pass::Final, progress)?;
            let st = bank.stats();
            bank_bytes = Some(st.bytes_on_disk);
            memory_bytes_per_doc = Some((st.record_size * st.live) as f64 / n.max(1) as f64);
            out
        }
    };
    // The last retention point is the final pass itself, on the sample's questions.
    if method.streams() {
        curve.push((
            n,
            plan.sample
                .iter()
                .map(|&i| final_preds[i].clone())
                .collect(),
        ));
    }
    let retention_curve = method.streams().then(|| {
        let f1s: Vec<f64> = curve.iter().map(|(_, p)| scores(p).f1).collect();
        curve
            .iter()
            .zip(relative(&f1s))
            .map(|((docs, p), rel)| {
                let s = scores(p);
                let (r1, rk) = recall(p, k);
                RetentionPoint {
                    docs: *docs,
                    f1: s.f1,
                    em: s.em,
                    relative: rel,
                    recall_at_1: method.retrieves().then_some(r1),
                    recall_at_k: method.retrieves().then_some(rk),
                }
            })
            .collect::<Vec<_>>()
    });
    let s = scores(&final_preds);
    let (r1, rk) = recall(&final_preds, k);
    let nq = final_preds.len();
    let mean = |f: &dyn Fn(&Prediction) -> usize| {
        final_preds.iter().map(f).sum::<usize>() as f64 / nq.max(1) as f64
    };
    let summary = EvalSummary {
        method,
        template: engine.template().name().to_string(),
        model: engine
            .lm()
            .path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned()),
        checkpoint: engine.cmt().map(|m| m.ckpt.path.display().to_string()),
        n_docs: data.documents.len(),
        n_distractors: distractors.len(),
        n_questions: nq,
        k,
        em: s.em,
        prefix_em: s.prefix_em,
        f1: s.f1,
        recall_at_1: method.retrieves().then_some(r1),
        recall_at_k: method.retrieves().then_some(rk),
        retention: retention_curve
            .as_ref()
            .and_then(|c| c.last())
            .and_then(|p| p.relative),
        retention_curve,
        retention_sample: plan.sample.len(),
        retention_every: opts.retention_every.max(1),
        with_memory: method
            .uses_prefix()
            .then(|| final_preds.iter().filter(|p| p.with_memory).count()),
        context_tokens: mean(&|p| p.context_tokens),
        prompt_tokens: mean(&|p| p.prompt_tokens),
        answer_tokens: mean(&|p| p.answer_tokens),
        memory_bytes_per_doc,
        raw_text_bytes_per_doc: raw_bytes,
        bank_bytes,
        stream_s: method.streams().then_some(stream_s),
        docs_per_s: method.streams().then(|| n as f64 / stream_s.max(1e-9)),
        answer_s,
        questions_per_s: nq as f64 / answer_s.max(1e-9),
        retention_s,
        peak_rss_bytes: super::peak_rss_bytes(),
        seed: opts.seed,
    };
    Ok(EvalOutput {
        summary,
        predictions: final_preds,
        retention: curve
            .into_iter()
            .map(|(docs, predictions)| RetentionPass { docs, predictions })
            .collect(),
    })
}

/// The stream positions `from..to` as slices of the data's documents and of the
/// distractors, each with the stream position of its first document.
fn segments<'d>(
    data: &'d Dataset,
    distractors: &'d [Document],
    from: usize,
    to: usize,
) -> Vec<(&'d [Document], usize)> {
    let nd = data.documents.len();
    let mut out = Vec::new();
    if from < nd {
        out.push((&data.documents[from..to.min(nd)], from));
    }
    if to > nd {
        let a = from.max(nd) - nd;
        out.push((&distractors[a..to - nd], from.max(nd)));
    }
    out
}
