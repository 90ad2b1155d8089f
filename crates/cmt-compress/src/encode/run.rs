//! The forward steps of [`Encoder`]: grouping chunks by the token budget, one session per
//! step, progress bar.
use super::{ChunkInfo, Encoder, Progress};
use crate::error::Result;
use cmt_runtime::backend::cpu::SKINNY_MAX_M;
use cmt_runtime::{Backend, SeqInput};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Groups `order` (chunk indices, longest first) into forward steps, returned as ranges
/// into `order`. Every step of `c` chunks whose longest has `m` tokens has `c·m ≤ budget`.
///
/// With `invariant` (bit-reproducible encoding), a chunk's bits must not depend on the other
/// chunks of its step. The CPU matmuls are not row-invariant across step sizes: the
/// streaming kernel (steps of at most `SKINNY_MAX_M` rows) and the packed gemm sum in
/// different orders, and gemm's blocking of the rows changes with their count. So chunks
/// longer than `SKINNY_MAX_M` get a step each (gemm sees exactly the shapes of a lone
/// encode), and shorter ones share a step only while it holds at most `SKINNY_MAX_M` rows
/// (the streaming kernel computes each row on its own). Without `invariant`, chunks are
/// packed by the budget alone; results then differ from a lone encode in the last bits.
fn steps(
    order: &[usize],
    len: impl Fn(usize) -> usize,
    budget: usize,
    invariant: bool,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let longest = len(order[start]).max(1);
        let mut end = start + 1;
        let mut rows = longest;
        while end < order.len() && (end + 1 - start) * longest <= budget {
            let n = len(order[end]);
            if invariant && rows + n > SKINNY_MAX_M {
                break;
            }
            rows += n;
            end += 1;
        }
        out.push((start, end));
        start = end;
    }
    out
}

impl<B: Backend> Encoder<'_, B> {
    fn progress_bar(&self, tokens: usize) -> ProgressBar {
        let show = match self.opts.progress {
            Progress::Never => false,
            Progress::Always => true,
            Progress::Auto => {
                tokens >= Progress::AUTO_MIN_TOKENS && std::io::stderr().is_terminal()
            }
        };
        if !show {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(tokens as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "encoding {bar:30} {pos}/{len} tokens [{elapsed_precise} < {eta}] {per_sec}",
        ) {
            bar.set_style(style);
        }
        bar
    }

    /// Encodes chunks `which` (indices into `chunks`) of `docs` and hands each chunk's
    /// `[len, d]` rows to `sink(chunk index, rows)`, in an unspecified order.
    pub(crate) fn encode_chunks<D: AsRef<[u32]>>(
        &self,
        docs: &[D],
        chunks: &[ChunkInfo],
        which: &[usize],
        mut sink: impl FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let len = |c: usize| chunks[c].tokens.len();
        let mut order = which.to_vec();
        order.sort_by_key(|&c| std::cmp::Reverse(len(c)));
        let total: usize = order.iter().map(|&c| len(c)).sum();
        let bar = self.progress_bar(total);
        let d = self.dim();
        let mut rows = Vec::new();
        for (a, b) in steps(
            &order,
            len,
            self.opts.max_batch_tokens,
            self.opts.batch_invariant,
        ) {
            let step = &order[a..b];
            let capacity = len(step[0]);
            let mut sess = self.model.session(step.len(), capacity)?;
            let inputs: Vec<SeqInput> = step
                .iter()
                .enumerate()
                .map(|(slot, &c)| {
                    let ch = &chunks[c];
                    SeqInput::tokens(slot, &docs[ch.doc].as_ref()[ch.tokens.clone()])
                })
                .collect();
            self.model
                .forward_hidden(&mut sess, &inputs, self.opts.layer, &mut rows)?;
            let mut off = 0;
            for &c in step {
                let n = len(c) * d;
                sink(c, &rows[off..off + n])?;
                off += n;
            }
            bar.inc(step.iter().map(|&c| len(c) as u64).sum());
        }
        bar.finish_and_clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{steps, SKINNY_MAX_M};

    #[test]
    fn steps_respect_the_budget_and_cover_everything() {
        assert_eq!(
            SKINNY_MAX_M, 8,
            "the cases below assume the bound of 8 rows"
        );
        let lens = [12usize, 12, 9, 9, 9, 8, 5, 3, 3, 2, 1];
        let order: Vec<usize> = (0..lens.len()).collect();
        let len = |c: usize| lens[c];
        // Budget only: 2·12, 3·9 ≤ 30, then 8+5+3 (3·8 ≤ 30), then the rest.
        let loose = steps(&order, len, 30, false);
        assert_eq!(loose, vec![(0, 2), (2, 5), (5, 8), (8, 11)]);
        // Invariant: long chunks alone, short ones while the step holds ≤ 8 rows.
        let exact = steps(&order, len, 30, true);
        let want = vec![
            (0, 1),
            (1, 2),
            (2, 3),
            (3, 4),
            (4, 5),
            (5, 6),
            (6, 8),
            (8, 11),
        ];
        assert_eq!(exact, want);
        for s in [loose, exact] {
            for &(a, b) in &s {
                assert!((b - a) * lens[a] <= 30);
            }
        }
        // A budget below one chunk still makes progress one chunk at a time.
        assert_eq!(steps(&order[..2], len, 4, false), vec![(0, 1), (1, 2)]);
    }
}
