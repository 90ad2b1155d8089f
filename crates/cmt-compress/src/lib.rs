//! Compressor C_φ (DESIGN §1 steps 1–3): turns a document's hidden states into T memory
//! vectors and a matching key.
pub mod attention;
pub mod error;

pub use error::{Error, Result};
