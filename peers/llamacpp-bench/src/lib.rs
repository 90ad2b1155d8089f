//! llama.cpp as a side-by-side peer (through `src/shim.c`): open a GGUF, empty the context,
//! decode a batch and get the argmax of its last logits.
use std::ffi::{c_char, c_int, CString};
use std::path::Path;

#[repr(C)]
struct RawPeer {
    _private: [u8; 0],
}

extern "C" {
    fn peer_open(path: *const c_char, threads: c_int, n_ctx: c_int, n_batch: c_int)
        -> *mut RawPeer;
    fn peer_vocab(p: *const RawPeer) -> c_int;
    fn peer_reset(p: *mut RawPeer);
    fn peer_eval(p: *mut RawPeer, ids: *mut i32, n: c_int) -> c_int;
    fn peer_close(p: *mut RawPeer);
}

/// A llama.cpp model and context.
pub struct Peer {
    raw: *mut RawPeer,
}

impl Peer {
    /// Loads `path` with a context of `n_ctx` positions, batches of up to `n_batch` tokens
    /// and `threads` threads for both prompt and generation.
    pub fn open(path: &Path, threads: usize, n_ctx: usize, n_batch: usize) -> Result<Peer, String> {
        let c = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| format!("{}: a NUL in the path", path.display()))?;
        let int =
            |v: usize, what: &str| c_int::try_from(v).map_err(|_| format!("{what} {v} too large"));
        // SAFETY: c is a NUL-terminated string that outlives the call; the shim checks every
        // llama.cpp result and returns NULL on failure.
        let raw = unsafe {
            peer_open(
                c.as_ptr(),
                int(threads, "threads")?,
                int(n_ctx, "n_ctx")?,
                int(n_batch, "n_batch")?,
            )
        };
        if raw.is_null() {
            return Err(format!("llama.cpp could not load {}", path.display()));
        }
        Ok(Peer { raw })
    }

    pub fn vocab(&self) -> usize {
        // SAFETY: raw is a live peer (made by peer_open, freed only in Drop).
        unsafe { peer_vocab(self.raw) as usize }
    }

    /// Empties the context.
    pub fn reset(&mut self) {
        // SAFETY: as in `vocab`; &mut self: no other call runs on this context.
        unsafe { peer_reset(self.raw) }
    }

    /// Decodes `ids` after what the context holds; the argmax of the last logits.
    pub fn eval(&mut self, ids: &[u32]) -> Result<u32, String> {
        let mut v: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let n = c_int::try_from(v.len()).map_err(|_| "batch too long".to_string())?;
        // SAFETY: v holds n tokens and outlives the call (llama.cpp reads, does not keep, the
        // batch); &mut self: no other call runs on this context.
        let r = unsafe { peer_eval(self.raw, v.as_mut_ptr(), n) };
        u32::try_from(r).map_err(|_| "llama_decode failed".to_string())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: raw was made by peer_open and is freed exactly once, here.
        unsafe { peer_close(self.raw) }
    }
}
