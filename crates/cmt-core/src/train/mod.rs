//! Training of the trainable parts (DESIGN §1.8). θ stays frozen: gradients stop at its
//! inputs (the key/value prefix).
pub mod data;
pub mod input_stats;
pub mod objective;
pub mod optim;
pub mod run;
pub mod state;

pub use input_stats::measure_input_stats;
pub use run::{train, DevLog, Ended, RunOptions, StepLog, TermsConf, TrainEvent, Trajectory};
