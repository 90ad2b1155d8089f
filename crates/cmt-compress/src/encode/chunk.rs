//! Splitting documents into chunks of at most `max_doc_tokens` tokens.
//!
//! Boundaries: with stride `s = max_doc_tokens − overlap`, chunk `i` of a document of `n`
//! tokens covers `[i·s, min(i·s + max_doc_tokens, n))`, and chunks stop at the first one
//! that reaches `n`. So every chunk but the last holds exactly `max_doc_tokens` tokens,
//! consecutive chunks share `overlap` tokens, the last chunk may be shorter (never empty,
//! and always holding at least one token the previous chunk does not), and a document of
//! at most `max_doc_tokens` tokens is one chunk. Example, 10 tokens, max 4, overlap 1:
//! `0..4, 3..7, 6..10`.
use crate::error::{Error, Result};
use std::ops::Range;

/// How documents are cut into memory entries (DESIGN §1 step 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Chunking {
    max_doc_tokens: usize,
    overlap: usize,
}

impl Chunking {
    /// Errors unless `max_doc_tokens ≥ 1` and `overlap < max_doc_tokens`.
    pub fn new(max_doc_tokens: usize, overlap: usize) -> Result<Chunking> {
        if max_doc_tokens == 0 {
            return Err(Error::Config("max_doc_tokens must be at least 1".into()));
        }
        if overlap >= max_doc_tokens {
            return Err(Error::Config(format!(
                "chunk overlap {overlap} must be smaller than max_doc_tokens {max_doc_tokens}"
            )));
        }
        Ok(Chunking {
            max_doc_tokens,
            overlap,
        })
    }

    pub fn max_doc_tokens(&self) -> usize {
        self.max_doc_tokens
    }

    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// The token ranges of the chunks of a document of `n` tokens (see the module docs).
    /// `doc` only names the document in the error for an empty one.
    pub fn ranges(&self, doc: usize, n: usize) -> Result<Vec<Range<usize>>> {
        if n == 0 {
            return Err(Error::Shape(format!(
                "document {doc} is empty: there is nothing to encode"
            )));
        }
        let stride = self.max_doc_tokens - self.overlap;
        let mut out = Vec::with_capacity(n.div_ceil(stride));
        let mut start = 0;
        loop {
            let end = (start + self.max_doc_tokens).min(n);
            out.push(start..end);
            if end == n {
                return Ok(out);
            }
            start += stride;
        }
    }
}

impl Default for Chunking {
    /// 512 tokens, no overlap.
    fn default() -> Self {
        Chunking {
            max_doc_tokens: 512,
            overlap: 0,
        }
    }
}
