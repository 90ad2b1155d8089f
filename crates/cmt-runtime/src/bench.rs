//! Prefill and decode throughput of a loaded model on this machine (`cmt bench`): warm-up
//! runs, then the median of timed runs. Each run starts from an empty session, prefills a
//! fixed prompt in one step and then decodes one token per step (greedy, EOS ignored) so
//! that every run does the same work.
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::generate::argmax;
use crate::model::{Logits, Model, SeqInput};
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Prompt tokens prefilled in one forward step.
    pub prompt_tokens: usize,
    /// Tokens decoded one step at a time after the prompt.
    pub new_tokens: usize,
    /// Untimed runs first (page faults, allocator, caches).
    pub warmup: usize,
    /// Timed runs; the report holds their medians.
    pub runs: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            prompt_tokens: 128,
            new_tokens: 64,
            warmup: 1,
            runs: 5,
        }
    }
}

/// Medians over the timed runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Prompt tokens per second of the one-step prefill.
    pub prefill_tok_s: f64,
    /// Generated tokens per second of the decode loop (one token per step).
    pub decode_tok_s: f64,
    /// Median seconds of the prefill step.
    pub prefill_s: f64,
    /// Median seconds of the whole decode loop.
    pub decode_s: f64,
    /// Every timed run's (prefill, decode) seconds, in run order.
    pub runs_s: Vec<(f64, f64)>,
}

/// The prompt: a fixed, tokenizer-independent id sequence spread over the vocabulary.
pub fn bench_prompt(len: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Runs the benchmark of `opts` on `model`.
pub fn measure<B: Backend>(model: &Model<B>, opts: &BenchOptions) -> Result<BenchReport> {
    let (n, m) = (opts.prompt_tokens, opts.new_tokens);
    if n == 0 || m == 0 || opts.runs == 0 {
        return Err(Error::Invalid(format!(
            "bench needs at least one prompt token, one new token and one timed run \
             (got {n}, {m}, {})",
            opts.runs
        )));
    }
    if n + m > model.cfg.max_positions {
        return Err(Error::Invalid(format!(
            "{n} prompt tokens + {m} new tokens exceed the model's context of {}",
            model.cfg.max_positions
        )));
    }
    let prompt = bench_prompt(n, model.cfg.vocab);
    let mut sess = model.session(1, n + m)?;
    let mut runs = Vec::with_capacity(opts.runs);
    for run in 0..opts.warmup + opts.runs {
        sess.reset_all();
        let t0 = Instant::now();
        let logits = model.forward(
            &mut sess,
            &[SeqInput::tokens(0, &prompt)],
            Logits::Last,
            None,
        )?;
        let mut next = argmax(logits);
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for _ in 0..m {
            let ids = [next];
            let logits =
                model.forward(&mut sess, &[SeqInput::tokens(0, &ids)], Logits::Last, None)?;
            next = argmax(logits);
        }
        let decode = t1.elapsed().as_secs_f64();
        if run >= opts.warmup {
            runs.push((prefill, decode));
        }
    }
    let prefill_s = median(runs.iter().map(|r| r.0).collect());
    let decode_s = median(runs.iter().map(|r| r.1).collect());
    Ok(BenchReport {
        prefill_tok_s: n as f64 / prefill_s,
        decode_tok_s: m as f64 / decode_s,
        prefill_s,
        decode_s,
        runs_s: runs,
    })
}
