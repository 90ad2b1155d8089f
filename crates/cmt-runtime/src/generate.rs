//! Token generation: greedy by default, temperature / top-p sampling with a seed, stop on
//! EOS, a callback per token for streaming. Batched: every prompt gets its own cache slot
//! and all unfinished sequences decode together.
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Logits, Model, SeqInput};
use crate::session::{KvPrefix, Session};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// Nucleus sampling mass (1.0 = off). Only used when temperature > 0.
    pub top_p: f32,
    pub seed: u64,
    /// Token ids that end a sequence (not included in the output).
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
        }
    }
}

/// Picks the next token from one row of logits.
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    rng: StdRng,
    probs: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(opts: &GenerateOptions) -> Result<Self> {
        if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
            return Err(Error::Invalid(format!(
                "temperature {} must be >= 0",
                opts.temperature
            )));
        }
        if !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "top-p {} must be in (0, 1]",
                opts.top_p
            )));
        }
        Ok(Sampler {
            temperature: opts.temperature,
            top_p: opts.top_p,
            rng: StdRng::seed_from_u64(opts.seed),
            probs: Vec::new(),
        })
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.probs.clear();
        let mut sum = 0.0f32;
        for (i, &l) in logits.iter().enumerate() {
            let p = ((l - max) / self.temperature).exp();
            sum += p;
            self.probs.push((p, i as u32));
        }
        let mut mass = sum;
        if self.top_p < 1.0 {
            self.probs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            let mut acc = 0.0;
            let mut keep = self.probs.len();
            for (i, (p, _)) in self.probs.iter().enumerate() {
                acc += p / sum;
                if acc >= self.top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.probs.truncate(keep);
            mass = self.probs.iter().map(|p| p.0).sum();
        }
        let mut r = self.rng.random::<f32>() * mass;
        for &(p, id) in &self.probs {
            if r < p {
                return id;
            }
            r -= p;
        }
        self.probs.last().map_or(0, |p| p.1)
    }
}

/// Index of the largest value; the first one on ties (as torch.argmax).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Generates a continuation for each prompt. `prefixes`, if given, holds one optional
/// key/value prefix per prompt. `on_token(seq, id)` is called for every generated token
/// (stop tokens excluded); return `false` to stop that sequence. Returns the generated ids.
pub fn generate<B: Backend>(
    model: &Model<B>,
    sess: &mut Session<B>,
    prompts: &[Vec<u32>],
    prefixes: Option<&[Option<KvPrefix>]>,
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32) -> Result<bool>,
) -> Result<Vec<Vec<u32>>> {
    let b = prompts.len();
    if b > sess.slots {
        return Err(Error::Invalid(format!(
            "{b} prompts but the session has {} slots",
            sess.slots
        )));
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::Invalid(format!(
            "prompt {i} is empty: nothing to condition on"
        )));
    }
    let mut sampler = Sampler::new(opts)?;
    for slot in 0..b {
        match prefixes.and_then(|p| p.get(slot)).and_then(|p| p.as_ref()) {
            Some(pre) => sess.set_prefix(&model.cfg, &model.backend, slot, pre)?,
            None => sess.reset(slot),
        }
    }
    let mut out = vec![Vec::with_capacity(opts.max_new_tokens); b];
    let mut active: Vec<usize> = (0..b).collect();
    let mut next = vec![0u32; b];
    if opts.max_new_tokens == 0 {
        return Ok(out);
    }
    // Prefill all prompts in one step.
    let inputs: Vec<SeqInput> = prompts
        .iter()
        .enumerate()
        .map(|(s, p)| SeqInput::tokens(s, p))
        .collect();
    let logits = model.forward(sess, &inputs, Logits::Last, None)?;
    let v = model.cfg.vocab;
    for s in 0..b {
        next[s] = sampler.sample(&logits[s * v..(s + 1) * v]);
    }
    let mut step_ids: Vec<[u32; 1]> = vec![[0]; b];
    let mut spare: Vec<SeqInput<'static>> = Vec::with_capacity(b);
    loop {
        active.retain(|&s| {
            let id = next[s];
            !opts.stop_tokens.contains(&id) && out[s].len() < opts.max_new_tokens
        });
        // Emit each surviving token; keep the sequences that may go on (in place: the
        // decode loop allocates nothing per token).
        let mut keep = 0;
        for i in 0..active.len() {
            let s = active[i];
            out[s].push(next[s]);
            if on_token(s, next[s])?
                && out[s].len() < opts.max_new_tokens
                && sess.len(s) < sess.capacity
            {
                active[keep] = s;
                keep += 1;
            }
        }
        active.truncate(keep);
        if active.is_empty() {
            break;
        }
        for &s in &active {
            step_ids[s] = [next[s]];
        }
        let mut inputs = recycle(std::mem::take(&mut spare));
        inputs.extend(active.iter().map(|&s| SeqInput::tokens(s, &step_ids[s])));
        let logits = model.forward(sess, &inputs, Logits::Last, None)?;
        for (i, &s) in active.iter().enumerate() {
            next[s] = sampler.sample(&logits[i * v..(i + 1) * v]);
        }
        spare = recycle(inputs);
    }
    Ok(out)
}

/// Empties a Vec of inputs and hands its allocation back with a fresh lifetime, so the
/// decode loop reuses one buffer instead of allocating a new one per token. (An empty
/// `into_iter().collect()` into a same-layout type reuses the allocation in place.)
fn recycle<'a, 'b>(mut v: Vec<SeqInput<'a>>) -> Vec<SeqInput<'b>> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn top_p_tiny_is_greedy_and_seed_repeats() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        let opts = GenerateOptions {
            temperature: 1.0,
            top_p: 1e-6,
            ..Default::default()
        };
        let mut s = Sampler::new(&opts).unwrap();
        for _ in 0..20 {
            assert_eq!(s.sample(&logits), 1);
        }
        let opts = GenerateOptions {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(&opts).unwrap();
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        let mut s = Sampler::new(&opts).unwrap();
        let b: Vec<u32> = (0..50).map(|_| s.sample(&logits)).collect();
        assert_eq!(a, b);
        assert!(
            a.contains(&2),
            "sampling at T=1 should sometimes pick the runner-up"
        );
    }

    #[test]
    fn bad_options_are_errors() {
        let bad_t = GenerateOptions {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(Sampler::new(&bad_t).is_err());
        let bad_p = GenerateOptions {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(Sampler::new(&bad_p).is_err());
    }
}
