//! Compressor C_φ (DESIGN §1 steps 1–3): turns a document's hidden states into T memory
//! vectors and a matching key.
pub mod attention;
pub mod blocks;
pub mod cache;
pub mod compressor;
pub mod config;
pub mod encode;
pub mod error;
pub mod input_stats;
pub mod linalg;
pub mod params;

pub use compressor::{Compressed, Compressor, Tape};
pub use config::CompressorConfig;
pub use error::{Error, Result};
pub use input_stats::InputStats;
pub use params::{BlockParams, Params};
