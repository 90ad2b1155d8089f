//! cmt-runtime: the lowest layer of cmt. Loads a frozen decoder LLM (HF safetensors
//! directory or GGUF), tokenises, runs the transformer forward pass on a `Backend` (CPU now),
//! generates text, and scores text.
pub mod backend;
pub mod batch;
pub mod bench;
pub mod config;
pub mod convert;
pub mod cuda;
pub mod device;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod loader;
pub mod model;
pub mod quant;
pub mod rope;
pub mod score;
pub mod session;
pub mod soft_prefix;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use backend::{Backend, CpuBackend};
pub use batch::{PadSide, PaddedBatch};
pub use config::{Arch, ModelConfig};
pub use error::{Error, Result};
pub use generate::{generate, GenerateOptions};
pub use loader::{load_model, load_model_as};
pub use model::{HiddenLayer, Logits, Model, SeqInput};
pub use rope::RopeScaling;
pub use session::{KvPrefix, Session};
pub use tokenizer::Tokenizer;
pub use weights::WeightFormat;
