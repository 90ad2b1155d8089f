//! Rotary scaling from GGUF: `{arch}.rope.scaling.type` / `.factor` (or the older
//! `{arch}.rope.scale_linear`), and `rope_freqs.weight`, the per-frequency divisors
//! llama.cpp's converter writes for Llama-3 scaling, which are applied as given
//! (inv_freq[i] / rope_freqs[i], as llama.cpp does). Anything else is refused.
use super::GgufFile;
use crate::error::{Error, Result};
use crate::rope::RopeScaling;

pub(super) fn rope_scaling(f: &GgufFile, arch: &str) -> Result<RopeScaling> {
    let key = |k: &str| format!("{arch}.{k}");
    let float = |k: &str| f.f64_meta(&key(k));
    let kind = match f.get(&key("rope.scaling.type")) {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| {
            Error::config(
                &f.path,
                &key("rope.scaling.type"),
                format!("expected a string, got {v:?}"),
            )
        })?),
    };
    if let Some(a) = float("rope.scaling.attn_factor")? {
        if a != 1.0 {
            return Err(Error::config(
                &f.path,
                &key("rope.scaling.attn_factor"),
                format!("{a}: only 1 is implemented"),
            ));
        }
    }
    // llama.cpp: the factor applies whatever the type (linear when none is given); 0 = unset.
    let factor = match float("rope.scaling.factor")? {
        Some(x) if x != 0.0 => Some((x, "rope.scaling.factor")),
        _ => float("rope.scale_linear")?
            .filter(|&x| x != 0.0)
            .map(|x| (x, "rope.scale_linear")),
    }
    .filter(|&(x, _)| x != 1.0);
    if let Some((x, k)) = factor {
        if !(x > 0.0 && x.is_finite()) {
            return Err(Error::config(
                &f.path,
                &key(k),
                format!("{x} is not a positive number"),
            ));
        }
    }
    let scaling = match (kind, factor) {
        (None | Some("linear"), Some((factor, _))) => RopeScaling::Linear { factor },
        (None | Some("linear") | Some("none"), None) => RopeScaling::None,
        (Some("none"), Some((x, k))) => {
            return Err(Error::config(
                &f.path,
                &key(k),
                format!("{x} with rope.scaling.type `none`: refusing to guess whether it applies"),
            ))
        }
        (Some(other), _) => {
            return Err(Error::config(
                &f.path,
                &key("rope.scaling.type"),
                format!(
                    "`{other}` is not implemented (none, linear are); refusing rather than \
                     running the model with a different rotary"
                ),
            ))
        }
    };
    let Some(info) = f.tensor("rope_freqs.weight") else {
        return Ok(scaling);
    };
    if scaling != RopeScaling::None {
        return Err(Error::tensor(
            &f.path,
            "rope_freqs.weight",
            "per-frequency rotary divisors together with linear scaling are not implemented",
        ));
    }
    Ok(RopeScaling::Divisors(f.dequantize(info)?))
}
