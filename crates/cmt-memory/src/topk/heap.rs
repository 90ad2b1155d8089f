//! The bounded candidate queue of one question: at most k (score, id) pairs, best first.
//!
//! Order (the crate's one tie rule, followed by the fused kernel, the merge across threads
//! and shards, and the brute-force reference alike): a higher raw score is better; among
//! equal scores the lower id is better. Insertions are rare after the queue fills (the scan
//! only offers scores ≥ the current k-th best), so a sorted array beats a binary heap here.
use super::Candidate;

#[inline]
pub(crate) fn better(a: &Candidate, b: &Candidate) -> bool {
    a.score > b.score || (a.score == b.score && a.id < b.id)
}

#[derive(Clone, Debug)]
pub(crate) struct TopKHeap {
    k: usize,
    items: Vec<Candidate>,
}

impl TopKHeap {
    pub(crate) fn new(k: usize) -> Self {
        TopKHeap {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    /// The score a candidate must reach (≥) to possibly enter: −∞ until the queue is full.
    #[inline]
    pub(crate) fn threshold(&self) -> f32 {
        if self.items.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.items[self.k - 1].score
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, c: Candidate) {
        if c.score.is_nan() || self.k == 0 {
            return;
        }
        if self.items.len() == self.k {
            if !better(&c, &self.items[self.k - 1]) {
                return;
            }
            self.items.pop();
        }
        let pos = self.items.partition_point(|x| better(x, &c));
        self.items.insert(pos, c);
    }

    pub(crate) fn into_sorted(self) -> Vec<Candidate> {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_with_lower_id_on_ties() {
        let mut h = TopKHeap::new(3);
        for (s, id) in [
            (1.0, 5),
            (2.0, 9),
            (2.0, 3),
            (0.5, 1),
            (2.0, 4),
            (3.0, 10),
            (2.0, 2),
        ] {
            h.push(Candidate { score: s, id });
        }
        let v: Vec<_> = h.into_sorted().iter().map(|c| (c.score, c.id)).collect();
        assert_eq!(v, vec![(3.0, 10), (2.0, 2), (2.0, 3)]);
    }
}
