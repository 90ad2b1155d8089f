//! Soft input rows turned into a key/value prefix by θ itself: the prefix a sequence would
//! see if the rows stood before it in its input. Generation then reuses the ordinary
//! prefix path ([`Session::set_prefix`]), so a prefix made here behaves exactly as the soft
//! rows themselves: keys carry rotary at positions 0..p, and the sequence after the prefix
//! starts at position p.
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Logits, Model, SeqInput};
use crate::session::{KvPrefix, Session};

impl<B: Backend> Model<B> {
    /// Runs `soft` (`[n, p, hidden]`) as n sequences of p soft rows at positions 0..p and
    /// returns each sequence's key/value cache as a [`KvPrefix`] of length p.
    pub fn soft_prefixes(&self, soft: &[f32], p: usize) -> Result<Vec<KvPrefix>> {
        let d = self.cfg.hidden;
        if p == 0 || soft.is_empty() || !soft.len().is_multiple_of(p * d) {
            return Err(Error::Invalid(format!(
                "soft prefix rows: {} values is not a whole number of p·hidden = {}·{d}",
                soft.len(),
                p
            )));
        }
        let n = soft.len() / (p * d);
        let mut sess = self.session(n, p)?;
        let inputs: Vec<SeqInput> = soft
            .chunks_exact(p * d)
            .enumerate()
            .map(|(slot, rows)| SeqInput {
                slot,
                soft: rows,
                ids: &[],
            })
            .collect();
        self.forward(&mut sess, &inputs, Logits::None, None)?;
        (0..n)
            .map(|slot| self.read_prefix(&sess, slot, p))
            .collect()
    }

    /// The first `p` cached positions of `slot`, in [`KvPrefix`] layout.
    fn read_prefix(&self, sess: &Session<B>, slot: usize, p: usize) -> Result<KvPrefix> {
        let (l_n, g_n, hd) = (self.cfg.layers, self.cfg.kv_heads, self.cfg.head_dim);
        let mut k = vec![0.0; l_n * g_n * p * hd];
        let mut v = vec![0.0; l_n * g_n * p * hd];
        for l in 0..l_n {
            for g in 0..g_n {
                // Cache layout: [slot, kv_head, capacity, head_dim] per layer.
                let src = ((slot * g_n + g) * sess.capacity) * hd;
                let dst = ((l * g_n + g) * p) * hd;
                self.backend
                    .download(&sess.k[l], src, &mut k[dst..dst + p * hd])?;
                self.backend
                    .download(&sess.v[l], src, &mut v[dst..dst + p * hd])?;
            }
        }
        Ok(KvPrefix { len: p, k, v })
    }

    /// Root mean square of θ's input embedding table: the scale soft rows should start at
    /// to look like token embeddings.
    pub fn embedding_rms(&self) -> Result<f32> {
        let e = &self.weights.embed;
        let mut row = vec![0.0; e.cols];
        let mut ss = 0.0f64;
        for r in 0..e.rows {
            e.row_to_host(&self.backend, r, &mut row)?;
            ss += row.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        }
        Ok((ss / (e.rows * e.cols).max(1) as f64).sqrt() as f32)
    }
}
