//! `cmt bank stats|verify|delete|compact`: the bank without the model.
use anyhow::{Context, Result};
use clap::Subcommand;
use cmt_core::bank::doc_entries;
use cmt_memory::{Bank, OpenOptions, Verify};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BankCmd {
    /// Counts, sizes, dimensions and the checkpoint the bank belongs to.
    Stats {
        #[arg(long)]
        bank: PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check every record's checksums; exits non-zero naming the damage.
    Verify {
        #[arg(long)]
        bank: PathBuf,
    },
    /// Delete documents (all their entries) by document id: their memories are never
    /// used again.
    Delete {
        #[arg(long)]
        bank: PathBuf,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Reclaim the space of deleted entries (readers keep working meanwhile).
    Compact {
        #[arg(long)]
        bank: PathBuf,
    },
}

fn open(dir: &Path, write: bool, verify: Verify) -> Result<Bank> {
    Bank::open(
        dir,
        &OpenOptions {
            write,
            verify,
            expect: None,
        },
    )
    .with_context(|| format!("opening bank {}", dir.display()))
}

pub fn run(cmd: BankCmd) -> Result<()> {
    match cmd {
        BankCmd::Stats { bank, json } => {
            let b = open(&bank, false, Verify::Heads)?;
            let s = b.stats();
            let docs: std::collections::BTreeSet<String> =
                doc_entries(&b)?.into_iter().map(|e| e.doc.doc_id).collect();
            let obj = serde_json::json!({
                "bank": bank.display().to_string(),
                "live": s.live,
                "deleted": s.deleted,
                "documents": docs.len(),
                "bytes": s.bytes_on_disk,
                "reclaimable_bytes": s.reclaimable_bytes,
                "record_bytes": s.record_size,
                "segments": s.segments,
                "generation": s.generation,
                "T": s.t, "D": s.d, "r": s.r,
                "memory_dtype": s.mem_dtype.name(),
                "key_dtype": s.key_dtype.name(),
                "checkpoint": s.base_model_hash.strip_prefix("cmt-ckpt:").unwrap_or(&s.base_model_hash),
                "created": s.created,
            });
            if json {
                println!("{obj}");
            } else {
                println!("{}", serde_json::to_string_pretty(&obj)?);
            }
            Ok(())
        }
        BankCmd::Verify { bank } => {
            let b = open(&bank, false, Verify::Full)?;
            let s = b.stats();
            println!(
                "{}: ok ({} records, {} live, every checksum verified)",
                bank.display(),
                s.records,
                s.live
            );
            Ok(())
        }
        BankCmd::Delete { bank, ids } => {
            let mut b = open(&bank, true, Verify::Heads)?;
            let (n, missing) = cmt_core::ingest::delete_documents(&mut b, &ids)?;
            for m in &missing {
                eprintln!("not in the bank: {m}");
            }
            println!(
                "deleted {n} entries of {} documents",
                ids.len() - missing.len()
            );
            Ok(())
        }
        BankCmd::Compact { bank } => {
            let mut b = open(&bank, true, Verify::Heads)?;
            let s = b.compact()?;
            println!(
                "compacted {}: {} live entries kept, {} deleted removed, {} -> {} bytes",
                bank.display(),
                s.live,
                s.removed,
                s.bytes_before,
                s.bytes_after
            );
            Ok(())
        }
    }
}
