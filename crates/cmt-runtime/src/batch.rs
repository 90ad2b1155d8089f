//! Padded batches: the [batch, width] token layout with an attention mask that callers
//! (tokenised datasets, HF-style code) hand around, left- or right-padded. The runtime
//! itself works on ragged sequences, so padding is stripped on the way in and restored on
//! the way out: pad positions cost no compute and receive zero logits.
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Logits, Model, SeqInput};
use crate::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadSide {
    Left,
    Right,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    pub batch: usize,
    pub width: usize,
    /// [batch, width] token ids; pad positions hold `pad_id`.
    pub ids: Vec<u32>,
    /// [batch, width], 1 = real token, 0 = padding.
    pub mask: Vec<u8>,
}

impl PaddedBatch {
    /// Pads `seqs` to the longest one on `side`.
    pub fn new(seqs: &[Vec<u32>], side: PadSide, pad_id: u32) -> PaddedBatch {
        let width = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * width);
        let mut mask = Vec::with_capacity(seqs.len() * width);
        for s in seqs {
            let pad = width - s.len();
            if side == PadSide::Left {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                mask.extend(std::iter::repeat_n(0u8, pad));
            }
            ids.extend_from_slice(s);
            mask.extend(std::iter::repeat_n(1u8, s.len()));
            if side == PadSide::Right {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                mask.extend(std::iter::repeat_n(0u8, pad));
            }
        }
        PaddedBatch {
            batch: seqs.len(),
            width,
            ids,
            mask,
        }
    }

    /// The real tokens of row `b` as a range of columns. Errors if the mask is not one
    /// contiguous run of ones (padding in the middle of a sequence).
    pub fn span(&self, b: usize) -> Result<std::ops::Range<usize>> {
        let row = &self.mask[b * self.width..(b + 1) * self.width];
        let start = row.iter().position(|&m| m != 0).unwrap_or(self.width);
        let end = row.iter().rposition(|&m| m != 0).map_or(start, |e| e + 1);
        if row[start..end].contains(&0) {
            return Err(Error::Invalid(format!(
                "batch row {b}: attention mask has padding inside the sequence (only left or right padding is supported)"
            )));
        }
        Ok(start..end)
    }

    fn validate(&self) -> Result<()> {
        let n = self.batch * self.width;
        if self.ids.len() != n || self.mask.len() != n {
            return Err(Error::Invalid(format!(
                "padded batch {}×{} needs {n} ids and mask values, got {} and {}",
                self.batch,
                self.width,
                self.ids.len(),
                self.mask.len()
            )));
        }
        Ok(())
    }
}

impl<B: Backend> Model<B> {
    /// Logits for every position of a padded batch: [batch, width, vocab], zeros at pad
    /// positions. Row b uses session slot b from an empty cache (or from a prefix the caller
    /// put there), so its first real token sits at the slot's current position whatever the
    /// padding: left padding never shifts rotary positions.
    pub fn forward_padded(&self, sess: &mut Session<B>, batch: &PaddedBatch) -> Result<Vec<f32>> {
        batch.validate()?;
        let spans = (0..batch.batch)
            .map(|b| batch.span(b))
            .collect::<Result<Vec<_>>>()?;
        let inputs: Vec<SeqInput> = spans
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .map(|(b, s)| {
                SeqInput::tokens(
                    b,
                    &batch.ids[b * batch.width + s.start..b * batch.width + s.end],
                )
            })
            .collect();
        let v = self.cfg.vocab;
        let mut out = vec![0.0f32; batch.batch * batch.width * v];
        if inputs.is_empty() {
            return Ok(out);
        }
        let logits = self.forward(sess, &inputs, Logits::All, None)?;
        let mut row = 0;
        for (b, s) in spans.iter().enumerate() {
            for col in s.clone() {
                let dst = (b * batch.width + col) * v;
                out[dst..dst + v].copy_from_slice(&logits[row * v..(row + 1) * v]);
                row += 1;
            }
        }
        Ok(out)
    }
}
