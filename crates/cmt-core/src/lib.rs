#![warn(missing_docs)]
//! cmt-core, the orchestrator (DESIGN §2): binds the frozen model (`cmt-runtime`), the
//! compressor (`cmt-compress`) and the memory bank (`cmt-memory`) into CMT — ingest, ask,
//! checkpoints — and is what downstream crates link. The `cmt` CLI is a thin layer over it.
//!
//! The library API in one place:
//! - [`Cmt::open`] loads θ (a GGUF file or HF directory) and a checkpoint
//!   ([`checkpoint`]); a checkpoint made for another θ is refused;
//! - [`Cmt::open_bank_writer`] / [`Cmt::open_bank_reader`] open (or create) a bank bound to
//!   that checkpoint ([`bank`]);
//! - [`Cmt::ingest`] compresses [`Document`]s into the bank ([`ingest`]), resumably;
//! - [`Cmt::ask`] answers questions, one or a batch, with the memories it used ([`ask`]);
//! - [`Cmt::delete`] removes documents' memories for good.
//!
//! `examples/quickstart.rs` runs all of it in a few dozen lines. Training-side pieces:
//! [`train::chain`] (the differentiable QA path), [`params`], [`aggregator`], [`prefix`].
pub mod aggregator;
mod api;
pub mod ask;
pub mod bank;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod ingest;
mod init;
pub mod metrics;
pub mod model;
pub mod params;
pub mod prefix;
pub mod search;
pub mod soft_prefix;
pub mod template;
pub mod train;

pub use api::{
    base_param_count, default_checkpoint_path, default_template, init_checkpoint, Cmt,
    DEFAULT_CHECKPOINT,
};
pub use ask::{Answer, AskOptions};
pub use cmt_runtime as runtime;
pub use config::CmtConfig;
pub use data::Document;
pub use error::{Error, Result};
pub use ingest::{IngestOptions, IngestReport};
