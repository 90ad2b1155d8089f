//! The writer lock: an exclusive, non-blocking `flock(2)` on `<bank>/LOCK`.
//!
//! `flock` locks belong to the open file description, so a second writer is refused whether
//! it lives in another process or is a second handle in this one, and the lock goes away with
//! the process however it dies (kill -9 included): there is no stale lock file to clean up.
//! Readers take no lock at all. (`flock` is advisory and not reliable on some network file
//! systems; a bank belongs on a local disk.)
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

pub(crate) const LOCK_FILE: &str = "LOCK";

#[derive(Debug)]
pub(crate) struct WriterLock {
    /// Held open for the lifetime of the writer; closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    /// Takes the writer lock of the bank in `dir`, or fails at once with [`Error::Locked`].
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // std's try_lock is flock(LOCK_EX | LOCK_NB) on Unix: the semantics above.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        Ok(WriterLock { _file: file, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
