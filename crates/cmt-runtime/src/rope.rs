//! Rotary frequency scaling: which one a model uses, its inverse frequencies (HF
//! transformers' equations, in f32 as HF computes them), and its config.json form.
//!
//! Parsing of config.json lives in `rope_hf`, of GGUF metadata in `gguf::config`. Anything
//! a file asks for that is not one of these variants is refused there, never run as
//! default rotary.
use crate::error::{Error, Result};
use std::path::Path;

/// How the rotary inverse frequencies are derived from the default θ^(−2i/d).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RopeScaling {
    /// HF's `default`: no scaling.
    #[default]
    None,
    /// HF's `linear`: every inverse frequency divided by `factor`
    /// (`_compute_linear_scaling_rope_parameters`).
    Linear { factor: f64 },
    /// HF's `llama3` (`_compute_llama3_parameters`): wavelengths above
    /// `original_max_position_embeddings / low_freq_factor` divided by `factor`, those below
    /// `original_max_position_embeddings / high_freq_factor` kept, a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors, inv_freq[i] / d[i]: a GGUF's `rope_freqs.weight` (how
    /// llama.cpp's converter stores Llama-3 scaling). One value per frequency (head_dim/2).
    Divisors(Vec<f32>),
}

/// Moves rotary keys to other positions: `k` holds groups of `p` rows of `head_dim`
/// (a [`crate::KvPrefix`]'s [layers, kv_heads, p, head_dim]), and row j of every group is
/// rotated by `shift[j]` positions (negative undoes rotary). Rotations compose, so a key
/// rotated for position t and shifted by s − t is the key rotated for s, up to f32
/// rounding; the angle of each shift is computed in f64 to keep that rounding small.
pub fn shift_key_positions(
    k: &mut [f32],
    p: usize,
    head_dim: usize,
    inv_freq: &[f32],
    shift: &[f64],
) -> Result<()> {
    let half = head_dim / 2;
    if shift.len() != p
        || inv_freq.len() != half
        || p == 0
        || head_dim == 0
        || !k.len().is_multiple_of(p * head_dim)
    {
        return Err(Error::Invalid(format!(
            "shift_key_positions: {} keys, p = {p}, head_dim = {head_dim}, {} shifts, {} \
             frequencies do not fit together",
            k.len(),
            shift.len(),
            inv_freq.len()
        )));
    }
    let (cos, sin): (Vec<f32>, Vec<f32>) = shift
        .iter()
        .flat_map(|&s| inv_freq.iter().map(move |&f| s * f as f64))
        .map(|a| (a.cos() as f32, a.sin() as f32))
        .unzip();
    for group in k.chunks_exact_mut(p * head_dim) {
        for (j, row) in group.chunks_exact_mut(head_dim).enumerate() {
            let (a, b) = row.split_at_mut(half);
            let (c, s) = (
                &cos[j * half..(j + 1) * half],
                &sin[j * half..(j + 1) * half],
            );
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * c[i] - x2 * s[i];
                b[i] = x2 * c[i] + x1 * s[i];
            }
        }
    }
    Ok(())
}

impl RopeScaling {
    /// The inverse frequencies for a head of `head_dim` with base `theta`, `head_dim / 2`
    /// of them. The default path is HF's `1 / θ^(2i/d)` in f32, unchanged by scaling.
    pub fn inv_freq(&self, head_dim: usize, theta: f32) -> Vec<f32> {
        let half = head_dim / 2;
        let default = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32));
        match self {
            RopeScaling::None => default.collect(),
            RopeScaling::Linear { factor } => default.map(|f| f / *factor as f32).collect(),
            RopeScaling::Divisors(d) => default.zip(d).map(|(f, &d)| f / d).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor: lo,
                high_freq_factor: hi,
                original_max_position_embeddings: old,
            } => {
                // f32 throughout, in HF's order of operations; Python scalars that HF
                // combines in f64 first (old/lo, old/hi, hi−lo) are combined in f64 here.
                let factor = *factor as f32;
                let low_wavelen = (*old as f64 / lo) as f32;
                let high_wavelen = (*old as f64 / hi) as f32;
                let span = (hi - lo) as f32;
                let (old, lo) = (*old as f32, *lo as f32);
                default
                    .map(|f| {
                        let wavelen = (1.0 / f) * std::f32::consts::TAU;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        if wavelen < high_wavelen || wavelen > low_wavelen {
                            return scaled;
                        }
                        let smooth = ((1.0 / wavelen) * old - lo) / span;
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    })
                    .collect()
            }
        }
    }

    /// Checks values a caller or a file could get wrong; `src` names the file for errors.
    pub fn validate(&self, src: &Path, head_dim: usize) -> Result<()> {
        let bad = |field: &str, msg: String| Err(Error::config(src, field, msg));
        let positive = |field: &str, v: f64| -> Result<()> {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                bad(field, format!("{v} is not a positive number"))
            }
        };
        match self {
            RopeScaling::None => Ok(()),
            RopeScaling::Linear { factor } => positive("rope_scaling.factor", *factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("rope_scaling.factor", *factor)?;
                positive("rope_scaling.low_freq_factor", *low_freq_factor)?;
                positive("rope_scaling.high_freq_factor", *high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return bad(
                        "rope_scaling.high_freq_factor",
                        format!(
                            "{high_freq_factor} is not above low_freq_factor {low_freq_factor}"
                        ),
                    );
                }
                if *original_max_position_embeddings == 0 {
                    return bad(
                        "rope_scaling.original_max_position_embeddings",
                        "must be > 0".into(),
                    );
                }
                Ok(())
            }
            RopeScaling::Divisors(d) => {
                if d.len() != head_dim / 2 {
                    return Err(Error::tensor(
                        src,
                        "rope_freqs.weight",
                        format!("{} values, expected head_dim/2 = {}", d.len(), head_dim / 2),
                    ));
                }
                match d.iter().find(|x| !(**x > 0.0 && x.is_finite())) {
                    Some(x) => Err(Error::tensor(
                        src,
                        "rope_freqs.weight",
                        format!("{x} is not a positive rotary frequency divisor"),
                    )),
                    None => Ok(()),
                }
            }
        }
    }

    /// The `rope_scaling` object of an HF config.json (`None` for default rotary).
    /// Divisors are written as the Llama-3 parameters that reproduce them (see
    /// [`RopeScaling::divisors_as_llama3`]); divisors that no Llama-3 parameters reproduce
    /// have no config.json form and are an error.
    pub fn to_hf_json(&self, head_dim: usize, theta: f32) -> Result<Option<serde_json::Value>> {
        Ok(match self {
            RopeScaling::None => None,
            RopeScaling::Linear { factor } => Some(serde_json::json!({
                "rope_type": "linear",
                "factor": factor,
            })),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => Some(serde_json::json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            })),
            RopeScaling::Divisors(_) => match self.divisors_as_llama3(head_dim, theta) {
                Some(s) => s.to_hf_json(head_dim, theta)?,
                None => {
                    return Err(Error::Invalid(
                        "the rotary frequency divisors (GGUF `rope_freqs.weight`) are not \
                         Llama-3 scaling and have no config.json form; refusing to write a \
                         config that would run default rotary"
                            .into(),
                    ))
                }
            },
        })
    }

    /// For `Divisors`: the Llama-3 (or no) scaling whose inverse frequencies match them
    /// within 1e-5 relative, if any. Llama-3's divisors depend on its parameters only
    /// through `factor`, `old/(high−low)` and `low/(high−low)`, so `low_freq_factor` is
    /// taken as 1 (every Llama 3.x checkpoint's value) and the other two solved from the
    /// blended frequencies; at least two blended frequencies are needed.
    pub fn divisors_as_llama3(&self, head_dim: usize, theta: f32) -> Option<RopeScaling> {
        let RopeScaling::Divisors(d) = self else {
            return None;
        };
        let matches = |s: &RopeScaling| {
            let base = RopeScaling::None.inv_freq(head_dim, theta);
            let got = s.inv_freq(head_dim, theta);
            base.iter().zip(&got).zip(d).all(|((b, g), want)| {
                let div = (*b as f64) / (*g as f64);
                (div - *want as f64).abs() <= 1e-5 * (*want as f64).abs()
            })
        };
        if matches(&RopeScaling::None) {
            return Some(RopeScaling::None);
        }
        let factor = d.iter().copied().fold(f32::MIN, f32::max) as f64;
        let base = RopeScaling::None.inv_freq(head_dim, theta);
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs();
        // (1/wavelen, smooth) of the blended frequencies: 1/d = (1 − s)/factor + s.
        let mids: Vec<(f64, f64)> = base
            .iter()
            .zip(d)
            .map(|(&f, &dv)| (f as f64, dv as f64))
            .filter(|&(_, dv)| !near(dv, 1.0) && !near(dv, factor))
            .map(|(f, dv)| {
                let s = (1.0 / dv - 1.0 / factor) / (1.0 - 1.0 / factor);
                (f / std::f64::consts::TAU, s)
            })
            .collect();
        let (&(x0, s0), &(x1, s1)) = (mids.first()?, mids.last()?);
        if mids.len() < 2 || x0 == x1 {
            return None;
        }
        // s = a·(1/wavelen) − b with a = old/(high−low), b = low/(high−low) = 1/(high−1).
        let a = (s1 - s0) / (x1 - x0);
        let b = a * x0 - s0;
        if !(a > 0.0 && b > 0.0) {
            return None;
        }
        let high = 1.0 + 1.0 / b;
        let old = (a / b).round();
        let fit = RopeScaling::Llama3 {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: (high * 1e6).round() / 1e6,
            original_max_position_embeddings: old as usize,
        };
        matches(&fit).then_some(fit)
    }
}

#[cfg(test)]
mod tests {
    use super::RopeScaling;

    /// Llama 3.1 8B's rotary: θ = 500000, head_dim 128.
    const LLAMA31: RopeScaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };

    #[test]
    fn default_inv_freq_is_the_old_expression_bit_for_bit() {
        for (hd, theta) in [(64, 10_000.0f32), (128, 500_000.0), (6, 1e6)] {
            let old: Vec<f32> = (0..hd / 2)
                .map(|i| 1.0 / theta.powf((2 * i) as f32 / hd as f32))
                .collect();
            assert_eq!(RopeScaling::None.inv_freq(hd, theta), old);
        }
    }

    #[test]
    fn llama3_regions_and_blend() {
        let base = RopeScaling::None.inv_freq(128, 500_000.0);
        let got = LLAMA31.inv_freq(128, 500_000.0);
        let (mut kept, mut divided, mut blended) = (0, 0, 0);
        for (b, g) in base.iter().zip(&got) {
            let wavelen = std::f64::consts::TAU / *b as f64;
            let want = if wavelen < 2048.0 {
                kept += 1;
                *b as f64
            } else if wavelen > 8192.0 {
                divided += 1;
                *b as f64 / 8.0
            } else {
                blended += 1;
                let s = (8192.0 / wavelen - 1.0) / 3.0;
                (1.0 - s) * *b as f64 / 8.0 + s * *b as f64
            };
            assert!((*g as f64 - want).abs() <= 1e-6 * want, "{g} vs {want}");
        }
        assert!(
            kept > 0 && divided > 0 && blended >= 2,
            "{kept} {divided} {blended}"
        );
    }

    #[test]
    fn llama3_divisors_are_recognised_and_others_are_not() {
        let base = RopeScaling::None.inv_freq(128, 500_000.0);
        let scaled = LLAMA31.inv_freq(128, 500_000.0);
        let d: Vec<f32> = base.iter().zip(&scaled).map(|(b, s)| b / s).collect();
        let fit = RopeScaling::Divisors(d.clone()).divisors_as_llama3(128, 500_000.0);
        assert_eq!(fit, Some(LLAMA31));
        let ones = RopeScaling::Divisors(vec![1.0; 64]);
        assert_eq!(
            ones.divisors_as_llama3(128, 500_000.0),
            Some(RopeScaling::None)
        );
        let mut odd = d;
        odd[3] *= 1.5;
        let odd = RopeScaling::Divisors(odd);
        assert_eq!(odd.divisors_as_llama3(128, 500_000.0), None);
        assert!(odd.to_hf_json(128, 500_000.0).is_err());
    }
}
