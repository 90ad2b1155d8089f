//! AdamW (decoupled weight decay, Loshchilov & Hutter) with linear warmup and cosine decay,
//! and global gradient-norm clipping: the optimiser of `cmt train` (DESIGN §2). Its state
//! (moments, step) is plain data so that a checkpoint resumes bit-exactly.
use crate::error::{Error, Result};

/// Hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f32,
    /// Exponential decay of the first and second moments.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the root of the second moment.
    pub eps: f32,
    /// Decoupled weight decay (applied as `p -= lr·wd·p`).
    pub weight_decay: f32,
    /// Steps of linear warmup from 0 to `lr`.
    pub warmup: u64,
    /// Total steps; the rate decays by a cosine from `lr` to `min_lr` after warmup.
    pub total: u64,
    /// Floor of the cosine.
    pub min_lr: f32,
    /// Clip the global gradient L2 norm to this (0 = off).
    pub clip: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup: 100,
            total: 1000,
            min_lr: 1e-5,
            clip: 1.0,
        }
    }
}

impl AdamWConfig {
    /// The learning rate of step `t` (1-based).
    pub fn lr_at(&self, t: u64) -> f32 {
        if t <= self.warmup {
            return self.lr * t as f32 / self.warmup.max(1) as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let frac = ((t - self.warmup) as f64 / span as f64).min(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * frac).cos());
        (self.min_lr as f64 + (self.lr - self.min_lr) as f64 * cos) as f32
    }
}

/// The optimiser's state for a list of tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    /// Hyper-parameters.
    pub cfg: AdamWConfig,
    /// Steps taken.
    pub step: u64,
    /// First moments, one per tensor.
    pub m: Vec<Vec<f32>>,
    /// Second moments, one per tensor.
    pub v: Vec<Vec<f32>>,
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepInfo {
    /// The learning rate used.
    pub lr: f32,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
}

impl AdamW {
    /// Zero state for tensors of these lengths.
    pub fn new(cfg: AdamWConfig, lens: &[usize]) -> Self {
        AdamW {
            cfg,
            step: 0,
            m: lens.iter().map(|&n| vec![0.0; n]).collect(),
            v: lens.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One update of `params` with `grads` (same tensors, same order). `decay[i]` says
    /// whether tensor i takes weight decay (norm gains and τ usually do not).
    pub fn step(
        &mut self,
        params: &mut [&mut Vec<f32>],
        grads: &[&[f32]],
        decay: &[bool],
    ) -> Result<StepInfo> {
        let n = self.m.len();
        if params.len() != n || grads.len() != n || decay.len() != n {
            return Err(Error::Shape(format!(
                "AdamW over {n} tensors got {} parameters, {} gradients, {} decay flags",
                params.len(),
                grads.len(),
                decay.len()
            )));
        }
        for (i, ((p, g), m)) in params.iter().zip(grads).zip(&self.m).enumerate() {
            if p.len() != m.len() || g.len() != m.len() {
                return Err(Error::Shape(format!(
                    "AdamW tensor {i}: {} values, gradient {}, state {}",
                    p.len(),
                    g.len(),
                    m.len()
                )));
            }
        }
        let sq: f64 = grads
            .iter()
            .flat_map(|g| g.iter())
            .map(|&x| x as f64 * x as f64)
            .sum();
        let grad_norm = sq.sqrt() as f32;
        if !grad_norm.is_finite() {
            return Err(Error::Invalid(format!(
                "gradient norm is {grad_norm}: refusing the step"
            )));
        }
        let c = &self.cfg;
        let scale = if c.clip > 0.0 && grad_norm > c.clip {
            c.clip / grad_norm
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step;
        let lr = c.lr_at(t);
        let bc1 = 1.0 - (c.beta1 as f64).powi(t as i32);
        let bc2 = 1.0 - (c.beta2 as f64).powi(t as i32);
        for (i, p) in params.iter_mut().enumerate() {
            let wd = if decay[i] { c.weight_decay } else { 0.0 };
            let (m, v, g) = (&mut self.m[i], &mut self.v[i], grads[i]);
            for j in 0..p.len() {
                let gj = g[j] * scale;
                m[j] = c.beta1 * m[j] + (1.0 - c.beta1) * gj;
                v[j] = c.beta2 * v[j] + (1.0 - c.beta2) * gj * gj;
                let mhat = m[j] as f64 / bc1;
                let vhat = v[j] as f64 / bc2;
                let upd = mhat / (vhat.sqrt() + c.eps as f64);
                p[j] -= lr * (wd * p[j] + upd as f32);
            }
        }
        Ok(StepInfo { lr, grad_norm })
    }
}
