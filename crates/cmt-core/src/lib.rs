//! Orchestrator: ingest / ask / train / eval (DESIGN §2). For now it re-exports the runtime
//! entry points the CLI needs; the CMT pipeline lands with its own issues.
pub use cmt_runtime as runtime;
