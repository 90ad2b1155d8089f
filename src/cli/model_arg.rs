//! `--model`: an explicit path, or the default model fetched on first use.
use anyhow::Result;
use std::path::PathBuf;

pub fn resolve(model: Option<PathBuf>) -> Result<PathBuf> {
    match model {
        Some(p) => {
            if !p.exists() {
                anyhow::bail!("--model {}: no such file or directory", p.display());
            }
            Ok(p)
        }
        None => Ok(cmt_runtime::fetch::fetch_default_model(&mut |line| {
            eprintln!("{line}")
        })?),
    }
}
