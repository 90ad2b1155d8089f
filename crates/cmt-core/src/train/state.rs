//! What a training run needs to resume exactly, beside its checkpoint: the step, AdamW's
//! moments, the queue of recent documents and the run's trajectory settings, in
//! `<checkpoint>.state` (safetensors, f32 moments, so that nothing is rounded). Both files carry
//! the step; a pair that disagrees (a crash between the two writes) is refused.
use super::optim::AdamW;
use super::run::{StepLog, Trajectory};
use crate::checkpoint::{self, CkptDtype};
use crate::error::{Error, Result};
use crate::model::CmtModel;
use crate::params::CmtParams;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// The `format` of a state file.
pub const STATE_FORMAT: &str = "cmt-train-state";

/// The resumable state.
pub struct TrainState {
    /// Optimizer steps done.
    pub step: u64,
    /// AdamW with its moments.
    pub optim: AdamW,
    /// Recent documents (the queue's distractors), oldest first.
    pub queue: VecDeque<usize>,
    /// The run's settings.
    pub trajectory: Trajectory,
    /// Training documents the run was started on.
    pub docs: usize,
}

/// `<checkpoint>.state`.
pub fn state_path(ckpt: &Path) -> PathBuf {
    let mut s = ckpt.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes the checkpoint (f32) and its state file.
pub fn save(
    out: &Path,
    model: &CmtModel,
    st: &TrainState,
    names: &[String],
    command: &str,
    last: &StepLog,
) -> Result<()> {
    let mut meta = model.ckpt.meta.clone();
    meta.dtype = CkptDtype::F32;
    meta.command = command.to_string();
    meta.created = unix_now();
    meta.extra = serde_json::json!({
        "train_step": st.step,
        "trajectory": st.trajectory,
        "last_step": last,
    });
    let mut bytes: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let len = st.optim.m[i].len();
        bytes.push((
            format!("m.{n}"),
            vec![len],
            Dtype::F32,
            f32_bytes(&st.optim.m[i]),
        ));
        bytes.push((
            format!("v.{n}"),
            vec![len],
            Dtype::F32,
            f32_bytes(&st.optim.v[i]),
        ));
    }
    let docs: Vec<u8> = st
        .queue
        .iter()
        .flat_map(|&d| (d as u64).to_le_bytes())
        .collect();
    bytes.push(("queue.docs".into(), vec![st.queue.len()], Dtype::U64, docs));
    let path = state_path(out);
    let views = bytes
        .iter()
        .map(|(n, s, d, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::checkpoint(&path, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut md = HashMap::new();
    md.insert("format".to_string(), STATE_FORMAT.to_string());
    md.insert("step".to_string(), st.step.to_string());
    md.insert("adam_step".to_string(), st.optim.step.to_string());
    md.insert("docs".to_string(), st.docs.to_string());
    md.insert(
        "trajectory".to_string(),
        serde_json::to_string(&st.trajectory)
            .map_err(|e| Error::checkpoint(&path, e.to_string()))?,
    );
    let data = safetensors::serialize(views, Some(md))
        .map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, &data).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    checkpoint::save(out, &meta, &model.ckpt.params)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice::<f32, u8>(v).to_vec()
}

/// Reads `out` and `<out>.state` back; every tensor is checked against `model`'s shapes.
pub fn load(out: &Path, model: &CmtModel, names: &[String]) -> Result<(CmtParams, TrainState)> {
    let ckpt = checkpoint::load(out)?;
    ckpt.check_base_model(&model.base.sha256, &model.base.dims())?;
    if ckpt.meta.config != *model.cfg() {
        return Err(Error::checkpoint(
            out,
            "its configuration differs from the run's (resume with the same --config)",
        ));
    }
    let path = state_path(out);
    let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let bad = |m: String| Error::checkpoint(&path, m);
    let (_, md) = SafeTensors::read_metadata(&data).map_err(|e| bad(e.to_string()))?;
    let md = md.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        md.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("no \"{k}\" field")))
    };
    if get("format")? != STATE_FORMAT {
        return Err(bad("not a cmt training state".into()));
    }
    let num = |k: &str| {
        get(k)?
            .parse::<u64>()
            .map_err(|e| bad(format!("field \"{k}\": {e}")))
    };
    let step = num("step")?;
    let ck_step = ckpt.meta.extra.get("train_step").and_then(|v| v.as_u64());
    if ck_step != Some(step) {
        return Err(bad(format!(
            "it is at step {step} but {} is at step {ck_step:?}: the pair was not written together",
            out.display()
        )));
    }
    let trajectory: Trajectory =
        serde_json::from_str(&get("trajectory")?).map_err(|e| bad(format!("trajectory: {e}")))?;
    let st = SafeTensors::deserialize(&data).map_err(|e| bad(e.to_string()))?;
    let f32s = |n: &str, len: Option<usize>| -> Result<Vec<f32>> {
        let t = st.tensor(n).map_err(|_| bad(format!("no tensor {n}")))?;
        if t.dtype() != Dtype::F32 || len.is_some_and(|l| t.data().len() != 4 * l) {
            return Err(bad(format!("tensor {n}: wrong dtype or size")));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(bad(format!("tensor {n} holds a non-finite value")));
        }
        Ok(v)
    };
    let lens: Vec<usize> = ckpt.params.tensors().iter().map(|(_, t)| t.len()).collect();
    let adam = trajectory.adamw();
    let mut optim = AdamW::new(adam, &lens);
    optim.step = num("adam_step")?;
    for (i, n) in names.iter().enumerate() {
        optim.m[i] = f32s(&format!("m.{n}"), Some(lens[i]))?;
        optim.v[i] = f32s(&format!("v.{n}"), Some(lens[i]))?;
    }
    let dt = st
        .tensor("queue.docs")
        .map_err(|_| bad("no tensor queue.docs".into()))?;
    if dt.dtype() != Dtype::U64 {
        return Err(bad("tensor queue.docs: wrong dtype".into()));
    }
    let queue = dt
        .data()
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .collect();
    Ok((
        ckpt.params,
        TrainState {
            step,
            optim,
            queue,
            trajectory,
            docs: num("docs")? as usize,
        },
    ))
}
