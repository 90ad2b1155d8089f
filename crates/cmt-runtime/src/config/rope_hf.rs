//! Rotary scaling from an HF config.json, in both layouts: top-level `rope_scaling`
//! (transformers 4, Llama 3.x checkpoints) and `rope_parameters` (transformers 5, which
//! also holds `rope_theta`). Every rope type and key the runtime does not implement is an
//! error naming the file, the field and the value: a model is never run with a rotary
//! other than the one its config asks for.
use crate::error::{Error, Result};
use crate::rope::RopeScaling;
use serde_json::{Map, Value};
use std::path::Path;

/// What config.json says about rotary.
pub(super) struct HfRope {
    pub scaling: RopeScaling,
    /// θ: top-level `rope_theta`, or the one inside `rope_parameters`/`rope_scaling`.
    pub theta: Option<f64>,
}

/// Keys every rope type may carry (values of `partial_rotary_factor`/`attention_factor`
/// other than 1 are refused when read).
const COMMON: [&str; 5] = [
    "rope_type",
    "type",
    "rope_theta",
    "partial_rotary_factor",
    "attention_factor",
];

pub(super) fn parse(path: &Path, v: &Value) -> Result<HfRope> {
    let present = |k: &str| v.get(k).filter(|x| !x.is_null());
    let top_theta = number(path, "rope_theta", present("rope_theta"))?;
    if let Some(p) = number(
        path,
        "partial_rotary_factor",
        present("partial_rotary_factor"),
    )? {
        if p != 1.0 {
            return Err(Error::config(
                path,
                "partial_rotary_factor",
                format!("{p}: partial rotary is not supported"),
            ));
        }
    }
    let mut found: Vec<(&str, RopeScaling, Option<f64>)> = Vec::new();
    for field in ["rope_scaling", "rope_parameters"] {
        if let Some(obj) = present(field) {
            let obj = obj.as_object().ok_or_else(|| {
                Error::config(path, field, format!("expected an object, got {obj}"))
            })?;
            let (s, t) = parse_object(path, field, obj, v)?;
            found.push((field, s, t));
        }
    }
    if let [(_, a, ta), (_, b, tb)] = &found[..] {
        if a != b || (ta.is_some() && tb.is_some() && ta != tb) {
            return Err(Error::config(
                path,
                "rope_parameters",
                "both `rope_scaling` and `rope_parameters` are given and they differ; \
                 refusing to guess which one the model was trained with",
            ));
        }
    }
    let mut theta = top_theta;
    for (field, _, t) in &found {
        match (theta, t) {
            (Some(a), Some(b)) if a != *b => {
                return Err(Error::config(
                    path,
                    &format!("{field}.rope_theta"),
                    format!("{b} differs from the top-level rope_theta {a}"),
                ))
            }
            (None, Some(b)) => theta = Some(*b),
            _ => {}
        }
    }
    let scaling = found.into_iter().next().map(|f| f.1).unwrap_or_default();
    Ok(HfRope { scaling, theta })
}

/// One `rope_scaling` / `rope_parameters` object; `top` is the whole config (for a
/// top-level `original_max_position_embeddings`, which HF prefers when present).
fn parse_object(
    path: &Path,
    field: &str,
    obj: &Map<String, Value>,
    top: &Value,
) -> Result<(RopeScaling, Option<f64>)> {
    let name = |k: &str| format!("{field}.{k}");
    let err = |k: &str, msg: String| Error::config(path, &name(k), msg);
    let kind = |k: &str| -> Result<Option<&str>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(x) => Err(err(k, format!("expected a string, got {x}"))),
        }
    };
    let rope_type = match (kind("rope_type")?, kind("type")?) {
        (Some(a), Some(b)) if a != b => {
            return Err(err("type", format!("`{b}` differs from rope_type `{a}`")));
        }
        (a, b) => a.or(b).unwrap_or("default"),
    };
    let type_field = if obj.contains_key("rope_type") {
        "rope_type"
    } else {
        "type"
    };
    let extra: &[&str] = match rope_type {
        "default" => &[],
        "linear" => &["factor"],
        "llama3" => &[
            "factor",
            "low_freq_factor",
            "high_freq_factor",
            "original_max_position_embeddings",
        ],
        other => {
            return Err(err(
                type_field,
                format!(
                    "`{other}` is not implemented (default, linear, llama3 are); refusing \
                     rather than running the model with a different rotary"
                ),
            ))
        }
    };
    for (k, x) in obj {
        if !COMMON.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
            return Err(err(
                k,
                format!(
                    "key not implemented for rope_type `{rope_type}` (value {x}); refusing \
                     rather than ignoring it"
                ),
            ));
        }
    }
    let num = |k: &str| number(path, &name(k), obj.get(k).filter(|x| !x.is_null()));
    let need = |k: &str| num(k)?.ok_or_else(|| err(k, format!("missing (rope_type {rope_type})")));
    for k in ["partial_rotary_factor", "attention_factor"] {
        if let Some(x) = num(k)? {
            if x != 1.0 {
                return Err(err(k, format!("{x}: only 1 is implemented")));
            }
        }
    }
    let theta = num("rope_theta")?;
    let scaling = match rope_type {
        "linear" => RopeScaling::Linear {
            factor: need("factor")?,
        },
        "llama3" => {
            let k = "original_max_position_embeddings";
            let nested = integer(path, &name(k), obj.get(k).filter(|x| !x.is_null()))?;
            let outer = integer(path, k, top.get(k).filter(|x| !x.is_null()))?;
            let old = match (nested, outer) {
                (Some(a), Some(b)) if a != b => {
                    return Err(err(k, format!("{a} differs from the top-level {k} {b}")));
                }
                (a, b) => a
                    .or(b)
                    .ok_or_else(|| err(k, "missing (rope_type llama3)".into()))?,
            };
            RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: old,
            }
        }
        _ => RopeScaling::None,
    };
    scaling.validate(path, 0).map_err(|e| match e {
        // Name the layout the file used, not the canonical `rope_scaling`.
        Error::Config {
            path,
            field: f,
            msg,
        } => Error::Config {
            path,
            field: f.replacen("rope_scaling", field, 1),
            msg,
        },
        e => e,
    })?;
    Ok((scaling, theta))
}

fn number(path: &Path, field: &str, x: Option<&Value>) -> Result<Option<f64>> {
    match x {
        None => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::config(path, field, format!("expected a number, got {x}"))),
    }
}

fn integer(path: &Path, field: &str, x: Option<&Value>) -> Result<Option<usize>> {
    match x {
        None => Ok(None),
        Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            Error::config(
                path,
                field,
                format!("expected a non-negative integer, got {x}"),
            )
        }),
    }
}
