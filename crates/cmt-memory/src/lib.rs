//! The memory bank of cmt (DESIGN §1 steps 4–6, §4, §7): a persistent store of
//! (id, key k_d, memory M_d, metadata) entries, and the fused self-matching / top-k
//! aggregation kernel over it.
//!
//! - [`Bank`] (module [`store`]): a directory with a versioned header, append-only segments
//!   of fixed-size checksummed records, tombstones, compaction, one writer at a time through
//!   an OS file lock, readers through memory maps. Appends are durable when they return;
//!   damage is reported with the file and byte offset; an interrupted append loses only
//!   itself. The file formats and the recovery rules are documented in the `store`
//!   submodules (`header`, `logfile`, `record`, `tombstone`).
//! - [`topk`]: scan → candidates → combine, with the backward pass for training and the
//!   brute-force reference.
//!
//! The on-disk format is little-endian and read in place, and the lock and durability
//! protocol use Unix calls (`flock`, `fdatasync`, `pwrite`): the crate builds for
//! little-endian Unix targets only.
#[cfg(not(all(unix, target_endian = "little")))]
compile_error!("cmt-memory reads its little-endian format in place and needs a Unix target");

pub mod error;
pub mod keys;
mod lock;
pub mod store;
pub mod topk;
pub mod types;

pub use error::{Error, Result};
pub use keys::{KeyDtype, KeyMatrix};
pub use store::{Bank, BankConfig, EntryMeta, Expect, OpenOptions, Stats, Verify};
pub use topk::{Candidate, Candidates, Kernel, MemorySource, TopK, MAX_K};
pub use types::{EntryRef, MemDtype, MemView, NewEntry, TextHash};
