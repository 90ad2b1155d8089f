//! The writer lock: an exclusive, non-blocking `flock(2)` on `<cache dir>/LOCK` (the same
//! scheme as the memory bank's). The lock belongs to the open file description, so a second
//! writer is refused whether in another process or this one, and it goes away with the
//! process however it dies. Readers take no lock.
use crate::error::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

pub(crate) const LOCK_FILE: &str = "LOCK";

#[derive(Debug)]
pub(crate) struct WriterLock {
    /// Held open for the lifetime of the writer; closing it releases the lock.
    _file: File,
}

impl WriterLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let io = |e| Error::Io {
            path: path.clone(),
            source: e,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // std's try_lock is flock(LOCK_EX | LOCK_NB) on Unix: the semantics above.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(WriterLock { _file: file })
    }
}
