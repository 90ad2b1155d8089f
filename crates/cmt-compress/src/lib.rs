//! Compressor C_φ (DESIGN §1 steps 1–3): turns a document's hidden states into T memory
//! vectors and a matching key. Not built yet: see the issue "The compressor and the fused
//! compression kernel".
