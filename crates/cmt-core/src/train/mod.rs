//! Training of the trainable parts (DESIGN §1.8). θ stays frozen: gradients stop at its
//! inputs (the key/value prefix).
pub mod chain;
pub mod optim;
