//! cmt-core, the orchestrator (DESIGN §2): binds the frozen model (`cmt-runtime`), the
//! compressor (`cmt-compress`) and the memory bank (`cmt-memory`) into CMT — ingest, ask,
//! checkpoints — and is what downstream crates link. The `cmt` CLI is a thin layer over it.
//!
//! ```no_run
//! use cmt_core::{Cmt, Document};
//! # fn main() -> cmt_core::Result<()> {
//! let cmt = Cmt::open_default(None)?; // default model + default checkpoint
//! let mut bank = cmt.create_or_open_bank(std::path::Path::new("bank"))?;
//! let docs = vec![Document::new("d1", "The Zorblat festival is held every March in Quillby.")];
//! cmt.ingest(&mut bank, &docs, &Default::default(), |_| {})?;
//! let answers = cmt.ask(Some(&bank), &["When is the Zorblat festival?".to_string()], &Default::default())?;
//! println!("{}", answers[0].answer);
//! # Ok(()) }
//! ```
pub mod aggregator;
mod api;
pub mod ask;
pub mod bank;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod ingest;
mod init;
pub mod metrics;
pub mod model;
pub mod params;
pub mod prefix;
pub mod template;
pub mod train;

pub use cmt_runtime as runtime;
pub use api::{base_param_count, default_checkpoint_path, default_template, init_checkpoint, Cmt, DEFAULT_CHECKPOINT};
pub use ask::{Answer, AskOptions};
pub use config::CmtConfig;
pub use data::Document;
pub use ingest::{IngestOptions, IngestReport};
pub use error::{Error, Result};
