//! The training loop (nanoGPT-style: one readable loop, every knob an option, a log record
//! per step, checkpoints that resume exactly). θ's hidden states of documents and
//! questions come from the on-disk hidden-state cache, so epochs after the first never
//! run θ over a document again.
use super::data::{prepare, Prepared, Schedule, TrainDoc};
use super::objective::{self, Queue, Terms, TrainBatch};
use super::optim::{AdamW, AdamWConfig};
use super::state::{self, TrainState};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::eval::{self, Engine, EvalOptions, Method};
use crate::model::CmtModel;
use crate::params::CmtParams;
use cmt_compress::cache::{CacheKey, HiddenCache};
use cmt_compress::encode::{EncodedBatch, Encoder, Progress};
use cmt_runtime::CpuBackend;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Everything that shapes the parameters' trajectory (a resumed run must match it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Optimizer steps of the whole run (the schedule's length).
    pub steps: u64,
    /// Documents per micro-batch.
    pub batch_docs: usize,
    /// Questions per document per micro-batch.
    pub questions_per_doc: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    pub accum: usize,
    /// Earlier memories kept as constant distractors.
    pub queue: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Warmup steps.
    pub warmup: u64,
    /// Final learning rate of the cosine decay.
    pub min_lr: f32,
    /// Global gradient-norm clip (0 = off).
    pub clip: f32,
    /// AdamW weight decay (not on norm gains, biases or τ).
    pub weight_decay: f32,
    /// The terms of the objective.
    pub terms: TermsConf,
    /// Longest L_rec window (tokens).
    pub rec_tokens: usize,
    /// Steps at the start with L_qa off (reconstruction pretraining of C_φ and G_ω).
    pub pretrain_steps: u64,
    /// The schedule's seed.
    pub seed: u64,
}

impl Trajectory {
    /// The optimizer's settings of this run.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            warmup: self.warmup,
            total: self.steps,
            min_lr: self.min_lr,
            clip: self.clip,
            weight_decay: self.weight_decay,
            ..AdamWConfig::default()
        }
    }
}

/// [`Terms`] in serialisable form.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TermsConf {
    /// λ_rec (0 = off).
    pub lambda_rec: f32,
    /// λ_match (0 = off).
    pub lambda_match: f32,
}

/// Options that do not change the trajectory.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Where the checkpoint goes (its training state beside it, `<out>.state`).
    pub out: PathBuf,
    /// Save every this many steps (0: only at the end).
    pub save_every: u64,
    /// Evaluate on the dev subset every this many steps (0: never).
    pub eval_every: u64,
    /// Dev documents in the subset (the first ones, with their questions).
    pub eval_docs: usize,
    /// Stop (with a checkpoint) after this step, as if interrupted.
    pub stop_at: Option<u64>,
    /// Root of the hidden-state cache (None: encode every time).
    pub cache: Option<PathBuf>,
    /// Continue from `<out>` and `<out>.state`.
    pub resume: bool,
    /// The command line, recorded in the checkpoint.
    pub command: String,
}

/// One step's record (the JSONL log line).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepLog {
    /// 1-based optimizer step.
    pub step: u64,
    /// Of this many.
    pub steps: u64,
    /// Objective, mean over the micro-batches.
    pub loss: f64,
    /// L_qa.
    pub qa: f64,
    /// L_rec.
    pub rec: f64,
    /// L_match.
    pub matching: f64,
    /// Gold document among the selected memories (fraction of questions).
    pub recall: f64,
    /// Learning rate of the step.
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// τ after the step.
    pub tau: f32,
    /// θ tokens (forward + backward) in the step.
    pub theta_tokens: usize,
    /// Seconds of the step.
    pub seconds: f64,
    /// Of those, seconds inside θ (forward and backward to its inputs); the rest is the
    /// CMT parts, the cache and the optimizer.
    pub theta_seconds: f64,
    /// Document / question hidden states read from the cache, and encoded.
    pub cache_hits: usize,
    /// Encoded (cache misses).
    pub cache_misses: usize,
}

/// A dev evaluation during training.
#[derive(Clone, Debug, Serialize)]
pub struct DevLog {
    /// After this step.
    pub step: u64,
    /// Questions asked.
    pub questions: usize,
    /// cmt F1 (none during reconstruction pretraining, when L_qa has not been trained).
    pub f1: Option<f64>,
    /// cmt EM.
    pub em: Option<f64>,
    /// recall@k of self-matching.
    pub recall_at_k: Option<f64>,
    /// cmt-shuffled F1 (the same prefix path, random other memories).
    pub shuffled_f1: Option<f64>,
    /// L_rec of the dev documents (their first `rec_tokens` tokens, each given the prefix
    /// of its own memory): below `rec_no_memory` only if memories of unseen documents
    /// carry their content.
    pub rec: f64,
    /// The same windows, each given the prefix of another dev document's memory (the next
    /// one, cyclically): what the prefix path gives whatever memory it reads.
    pub rec_shuffled: f64,
    /// θ alone on the same windows.
    pub rec_no_memory: f64,
    /// Seconds of the evaluation.
    pub seconds: f64,
}

/// What the loop reports.
pub enum TrainEvent<'a> {
    /// The data was tokenized.
    Prepared(&'a Prepared),
    /// Resumed at this step.
    Resumed(u64),
    /// A step finished.
    Step(&'a StepLog),
    /// A dev evaluation finished.
    Dev(&'a DevLog),
    /// A checkpoint was written.
    Saved(u64),
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every step done.
    Finished,
    /// Stopped early (interrupt or `stop_at`) after this step, with a checkpoint.
    Stopped(u64),
}

/// Trains `model.ckpt.params` in place on `train`, reporting through `on_event`.
/// `interrupt` is polled between steps: when set, a checkpoint is written and the loop ends.
pub fn train(
    model: &mut CmtModel,
    train: &Dataset,
    dev: Option<&Dataset>,
    traj: &Trajectory,
    run: &RunOptions,
    interrupt: &AtomicBool,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<Ended> {
    check(traj)?;
    let (docs, prepared) = prepare(model, train)?;
    on_event(TrainEvent::Prepared(&prepared));
    let names: Vec<String> = model
        .params()
        .tensors()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    let lens: Vec<usize> = model
        .params()
        .tensors()
        .iter()
        .map(|(_, t)| t.len())
        .collect();
    let decay: Vec<bool> = names.iter().map(|n| takes_decay(n)).collect();
    let adam = traj.adamw();
    let mut st = TrainState {
        step: 0,
        optim: AdamW::new(adam, &lens),
        queue: VecDeque::new(),
        trajectory: traj.clone(),
        docs: docs.len(),
    };
    if run.resume {
        let (ckpt, s) = state::load(&run.out, model, &names)?;
        if s.trajectory != *traj {
            return Err(Error::Invalid(format!(
                "{}: the run was started with other settings ({}); resume with the same ones",
                state::state_path(&run.out).display(),
                serde_json::to_string(&s.trajectory).unwrap_or_default()
            )));
        }
        if s.docs != docs.len() {
            return Err(Error::Invalid(format!(
                "{}: the run was started on {} training documents, this data has {}",
                state::state_path(&run.out).display(),
                s.docs,
                docs.len()
            )));
        }
        model.ckpt.params = ckpt;
        st = s;
        on_event(TrainEvent::Resumed(st.step));
    }
    let cfg = model.cfg().clone();
    let sched = Schedule {
        batch_docs: traj.batch_docs,
        questions_per_doc: traj.questions_per_doc,
        rec_tokens: traj.rec_tokens,
        seed: traj.seed,
    };
    let mut caches = Caches::open(model, run.cache.as_deref())?;
    let dev = dev.map(|d| d.clone().limit_docs(run.eval_docs));
    let dev_rec = match &dev {
        Some(d) if run.eval_every > 0 => Some(DevRec::new(model, d, traj.rec_tokens)?),
        _ => None,
    };
    while st.step < traj.steps {
        let t0 = Instant::now();
        let lr_step = st.step + 1;
        let terms = Terms {
            qa: lr_step > traj.pretrain_steps,
            lambda_rec: traj.terms.lambda_rec,
            lambda_match: traj.terms.lambda_match,
        };
        let mut grads = CmtParams::zeros(&cfg, &model.base.dims());
        let mut log = StepLog {
            step: lr_step,
            steps: traj.steps,
            loss: 0.0,
            qa: 0.0,
            rec: 0.0,
            matching: 0.0,
            recall: 0.0,
            lr: 0.0,
            grad_norm: 0.0,
            tau: 0.0,
            theta_tokens: 0,
            seconds: 0.0,
            theta_seconds: 0.0,
            cache_hits: 0,
            cache_misses: 0,
        };
        for a in 0..traj.accum {
            let m = st.step * traj.accum as u64 + a as u64;
            let plan = sched.micro(&docs, m);
            let (hd, hq) = caches.encode(model, &docs, &plan, &mut log)?;
            let mut qa = Vec::new();
            let mut gold = Vec::new();
            for (row, qs) in plan.questions.iter().enumerate() {
                for &q in qs {
                    qa.push(docs[plan.docs[row]].questions[q].qa.clone());
                    gold.push(row);
                }
            }
            let rec: Vec<_> = if terms.lambda_rec != 0.0 {
                plan.docs
                    .iter()
                    .zip(&plan.rec)
                    .map(|(&d, w)| rec_window(&docs[d].ids[w.clone()]))
                    .collect()
            } else {
                Vec::new()
            };
            // The queue holds other documents only: a memory of a batch document would be a
            // negative for its own questions. Its memories are recomputed with the current
            // parameters (hidden states from the cache, no gradient): memories kept from the
            // step that made them let the matching tell fresh keys from stale ones instead of
            // matching questions to documents (measured: training recall 1.0, dev recall at
            // chance).
            let live: Vec<usize> = st
                .queue
                .iter()
                .copied()
                .filter(|d| !plan.docs.contains(d))
                .collect();
            let (qkeys, qmems) = if live.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                let hq = caches.encode_docs(model, &docs, &live, &mut log)?;
                let c = model.params().compressor.forward(&hq.doc_batch())?;
                (c.keys, c.memories)
            };
            let batch = TrainBatch {
                docs: hd.doc_batch(),
                questions: hq.doc_batch(),
                qa: &qa,
                gold: &gold,
                rec: &rec,
                queue: (!live.is_empty()).then_some(Queue {
                    keys: &qkeys,
                    memories: &qmems,
                }),
            };
            let out = objective::loss(
                &model.base.model,
                &cfg,
                model.params(),
                &batch,
                &terms,
                Some(&mut grads),
            )?;
            let w = 1.0 / traj.accum as f64;
            log.loss += w * out.total;
            log.qa += w * out.qa;
            log.rec += w * out.rec;
            log.matching += w * out.matching;
            log.recall += w * out.recall;
            log.theta_tokens += out.theta_tokens;
            log.theta_seconds += out.theta_seconds;
            st.queue.extend(plan.docs.iter().copied());
            while st.queue.len() > traj.queue {
                st.queue.pop_front();
            }
        }
        let scale = 1.0 / traj.accum as f32;
        let gt: Vec<Vec<f32>> = grads
            .tensors()
            .iter()
            .map(|(_, g)| g.iter().map(|x| x * scale).collect())
            .collect();
        let grefs: Vec<&[f32]> = gt.iter().map(Vec::as_slice).collect();
        let params = &mut model.ckpt.params;
        let mut prefs: Vec<&mut Vec<f32>> =
            params.tensors_mut().into_iter().map(|(_, t)| t).collect();
        let info = st.optim.step(&mut prefs, &grefs, &decay)?;
        st.step += 1;
        log.lr = info.lr;
        log.grad_norm = info.grad_norm;
        log.tau = model.params().tau(&cfg);
        log.seconds = t0.elapsed().as_secs_f64();
        on_event(TrainEvent::Step(&log));

        let step = st.step;
        let done = step == traj.steps;
        if let (Some(dev), Some(dev_rec)) = (&dev, &dev_rec) {
            if step.is_multiple_of(run.eval_every) || done {
                let qa_trained = step > traj.pretrain_steps;
                let d = dev_eval(model, dev, dev_rec, &mut caches, step, qa_trained)?;
                on_event(TrainEvent::Dev(&d));
            }
        }
        let stop = interrupt.load(Ordering::SeqCst) || run.stop_at == Some(step);
        if done || stop || (run.save_every > 0 && step.is_multiple_of(run.save_every)) {
            state::save(&run.out, model, &st, &names, &run.command, &log)?;
            on_event(TrainEvent::Saved(step));
        }
        if stop && !done {
            return Ok(Ended::Stopped(step));
        }
    }
    Ok(Ended::Finished)
}

fn check(t: &Trajectory) -> Result<()> {
    let bad = |m: &str| Err(Error::Invalid(m.to_string()));
    if t.steps == 0 {
        return bad("--steps must be at least 1");
    }
    if t.batch_docs == 0 || t.questions_per_doc == 0 || t.accum == 0 {
        return bad("--batch-docs, --questions-per-doc and --accum must be at least 1");
    }
    if !(t.lr > 0.0 && t.lr.is_finite()) || t.min_lr < 0.0 || t.min_lr > t.lr {
        return bad("the learning rate must be positive, and --min-lr in [0, --lr]");
    }
    if t.terms.lambda_rec < 0.0 || t.terms.lambda_match < 0.0 {
        return bad("--lambda-rec and --lambda-match must be ≥ 0");
    }
    if t.terms.lambda_rec > 0.0 && t.rec_tokens < 2 {
        return bad("--rec-tokens must be at least 2 with L_rec on");
    }
    if t.pretrain_steps > 0 && t.terms.lambda_rec == 0.0 {
        return bad("--pretrain-steps trains L_rec alone: it needs L_rec on");
    }
    Ok(())
}

/// Norm gains, biases and τ take no weight decay.
fn takes_decay(name: &str) -> bool {
    !(name.contains("norm") || name.ends_with("bias") || name == "tau.log" || name.contains(".g_"))
}

/// An L_rec sequence: every token of the window is a target.
fn rec_window(ids: &[u32]) -> objective::Labelled {
    (ids.to_vec(), ids.iter().map(|&t| t as i32).collect())
}

/// The dev subset's reconstruction windows: each document's first `rec_tokens` tokens, and
/// θ's loss on them without memory (computed once).
struct DevRec {
    docs: Vec<TrainDoc>,
    windows: Vec<objective::Labelled>,
    no_memory: f64,
}

impl DevRec {
    fn new(model: &CmtModel, dev: &Dataset, rec_tokens: usize) -> Result<DevRec> {
        let (docs, _) = prepare(model, dev)?;
        let windows: Vec<objective::Labelled> = docs
            .iter()
            .map(|d| rec_window(&d.ids[..d.ids.len().min(rec_tokens.max(2))]))
            .collect();
        if windows.is_empty() {
            return Err(Error::Invalid(
                "--dev: no document of the evaluation subset has a usable question".into(),
            ));
        }
        let no_memory = objective::no_memory_loss(&model.base.model, &windows)?;
        Ok(DevRec {
            docs,
            windows,
            no_memory,
        })
    }
}

/// The dev subset: dev L_rec, and once L_qa is trained, cmt and cmt-shuffled through the
/// eval harness.
fn dev_eval(
    model: &CmtModel,
    dev: &Dataset,
    rec: &DevRec,
    caches: &mut Caches,
    step: u64,
    qa_trained: bool,
) -> Result<DevLog> {
    let t = Instant::now();
    let mut scratch = StepLog::default();
    let all: Vec<usize> = (0..rec.docs.len()).collect();
    let h = caches.encode_docs(model, &rec.docs, &all, &mut scratch)?;
    let c = model.params().compressor.forward(&h.doc_batch())?;
    let rec_with = |memories: &[f32]| {
        objective::reconstruction_loss(
            &model.base.model,
            model.cfg(),
            model.params(),
            memories,
            &rec.windows,
        )
    };
    let rec_loss = rec_with(&c.memories)?;
    // Document i reads the memory of document i + 1 (mod n): with one document this is its
    // own memory again, so the control needs at least two.
    let td = c.memories.len() / rec.docs.len();
    let mut rotated = c.memories[td..].to_vec();
    rotated.extend_from_slice(&c.memories[..td]);
    let rec_shuffled = rec_with(&rotated)?;
    let mut log = DevLog {
        step,
        questions: 0,
        f1: None,
        em: None,
        recall_at_k: None,
        shuffled_f1: None,
        rec: rec_loss,
        rec_shuffled,
        rec_no_memory: rec.no_memory,
        seconds: 0.0,
    };
    if qa_trained {
        let engine = Engine::Cmt(model);
        let run = |method| {
            let opts = EvalOptions {
                method,
                retention_every: usize::MAX,
                ..EvalOptions::default()
            };
            eval::evaluate(&engine, dev, &[], &opts, |_| {})
        };
        let cmt = run(Method::Cmt)?;
        let shuffled = run(Method::CmtShuffled)?;
        log.questions = cmt.summary.n_questions;
        log.f1 = Some(cmt.summary.f1);
        log.em = Some(cmt.summary.em);
        log.recall_at_k = cmt.summary.recall_at_k;
        log.shuffled_f1 = Some(shuffled.summary.f1);
    }
    log.seconds = t.elapsed().as_secs_f64();
    Ok(log)
}

/// The document and question hidden-state caches (or none).
struct Caches {
    docs: Option<HiddenCache>,
    questions: Option<HiddenCache>,
}

impl Caches {
    fn open(model: &CmtModel, root: Option<&Path>) -> Result<Caches> {
        let Some(root) = root else {
            return Ok(Caches {
                docs: None,
                questions: None,
            });
        };
        let c = model.cfg();
        let open = |enc: &Encoder<CpuBackend>| -> Result<HiddenCache> {
            let key = CacheKey::for_encoder(model.base.sha256.clone(), enc);
            Ok(HiddenCache::open_writer(root, &key)?)
        };
        let de = model.encoder(c.max_doc_tokens, c.chunk_overlap, Progress::Never)?;
        let qe = model.encoder(c.max_question_tokens, 0, Progress::Never)?;
        Ok(Caches {
            docs: Some(open(&de)?),
            questions: Some(open(&qe)?),
        })
    }

    fn encode(
        &mut self,
        model: &CmtModel,
        docs: &[TrainDoc],
        plan: &super::data::MicroPlan,
        log: &mut StepLog,
    ) -> Result<(EncodedBatch, EncodedBatch)> {
        let hd = self.encode_docs(model, docs, &plan.docs, log)?;
        let qe = model.encoder(model.cfg().max_question_tokens, 0, Progress::Never)?;
        let q_ids: Vec<&[u32]> = plan
            .docs
            .iter()
            .zip(&plan.questions)
            .flat_map(|(&d, qs)| {
                qs.iter()
                    .map(move |&q| docs[d].questions[q].match_ids.as_slice())
            })
            .collect();
        let hq = encode_with(&qe, &q_ids, &mut self.questions, log)?;
        Ok((hd, hq))
    }

    /// Hidden states of documents `which`.
    fn encode_docs(
        &mut self,
        model: &CmtModel,
        docs: &[TrainDoc],
        which: &[usize],
        log: &mut StepLog,
    ) -> Result<EncodedBatch> {
        let c = model.cfg();
        let de = model.encoder(c.max_doc_tokens, c.chunk_overlap, Progress::Never)?;
        let ids: Vec<&[u32]> = which.iter().map(|&d| docs[d].ids.as_slice()).collect();
        encode_with(&de, &ids, &mut self.docs, log)
    }
}

/// `ids` through `cache` when there is one.
fn encode_with(
    enc: &Encoder<CpuBackend>,
    ids: &[&[u32]],
    cache: &mut Option<HiddenCache>,
    log: &mut StepLog,
) -> Result<EncodedBatch> {
    Ok(match cache {
        Some(cache) => {
            let (b, s) = enc.encode_cached(ids, cache)?;
            log.cache_hits += s.hits;
            log.cache_misses += s.misses;
            b
        }
        None => {
            log.cache_misses += ids.len();
            enc.encode(ids)?
        }
    })
}
