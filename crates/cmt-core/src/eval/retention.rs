//! The retention schedule (DESIGN §1 step 9): when to measure, and on which questions.
//!
//! - Points: after every `every` streamed documents (distractors included) and at the end
//!   of the stream: `every, 2·every, …` below the stream's length, then the length itself.
//!   A stream of n documents has ⌈n / every⌉ points.
//! - Sample: the questions about the first block (the first `every` documents of the
//!   stream), at most `sample` of them, drawn with the seed and kept in dataset order.
//! - Value: F1 on the sample at each point, relative to the first point (the sample's
//!   documents were all just streamed then); undefined (None) when the first F1 is 0.
use crate::data::Question;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashSet;

/// When retention is measured and on which questions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Stream lengths after which the sample is answered, ascending; the last is the
    /// stream's length.
    pub points: Vec<usize>,
    /// Indices (into the dataset's questions) of the sample, ascending.
    pub sample: Vec<usize>,
}

impl RetentionPlan {
    /// The plan for a stream of `n_stream` documents with ids `stream_ids` (in stream
    /// order), a point every `every` documents, a sample of at most `sample` of
    /// `questions` drawn with `seed`.
    pub fn new(
        n_stream: usize,
        every: usize,
        sample: usize,
        seed: u64,
        questions: &[Question],
        stream_ids: &[&str],
    ) -> RetentionPlan {
        let every = every.max(1);
        let mut points: Vec<usize> = (1..)
            .map(|j| j * every)
            .take_while(|&c| c < n_stream)
            .collect();
        if n_stream > 0 {
            points.push(n_stream);
        }
        let block: HashSet<&str> = stream_ids.iter().take(every).copied().collect();
        let eligible: Vec<usize> = questions
            .iter()
            .enumerate()
            .filter(|(_, q)| block.contains(q.doc_id.as_str()))
            .map(|(i, _)| i)
            .collect();
        let mut picked: Vec<usize> = if eligible.len() <= sample {
            eligible
        } else {
            let mut rng = StdRng::seed_from_u64(seed);
            rand::seq::index::sample(&mut rng, eligible.len(), sample)
                .into_iter()
                .map(|j| eligible[j])
                .collect()
        };
        picked.sort_unstable();
        RetentionPlan {
            points,
            sample: picked,
        }
    }
}

/// Each point's F1 relative to the first point's (None where the first is 0).
pub fn relative(f1s: &[f64]) -> Vec<Option<f64>> {
    let first = f1s.first().copied().unwrap_or(0.0);
    f1s.iter()
        .map(|&f| (first > 0.0).then(|| f / first))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(i: usize, doc: &str) -> Question {
        Question {
            id: format!("q{i}"),
            question: "?".into(),
            answers: vec!["a".into()],
            doc_id: doc.into(),
            timestamp: None,
        }
    }

    #[test]
    fn points_every_block_and_at_the_end() {
        let ids = ["a", "b", "c", "d", "e"];
        let qs = [q(0, "a"), q(1, "d"), q(2, "b"), q(3, "a")];
        let p = RetentionPlan::new(5, 2, 10, 0, &qs, &ids);
        assert_eq!(p.points, [2, 4, 5]);
        assert_eq!(p.sample, [0, 2, 3]);
        let p = RetentionPlan::new(4, 2, 10, 0, &qs, &ids[..4]);
        assert_eq!(p.points, [2, 4]);
        let p = RetentionPlan::new(5, 200, 10, 0, &qs, &ids);
        assert_eq!(p.points, [5]);
        assert_eq!(p.sample, [0, 1, 2, 3]);
    }

    #[test]
    fn sample_is_bounded_seeded_and_sorted() {
        let ids: Vec<String> = (0..50).map(|i| format!("d{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let qs: Vec<Question> = (0..100).map(|i| q(i, ids[i % 50])).collect();
        let a = RetentionPlan::new(50, 20, 7, 3, &qs, &ids);
        let b = RetentionPlan::new(50, 20, 7, 3, &qs, &ids);
        assert_eq!(a, b);
        assert_eq!(a.sample.len(), 7);
        assert!(a.sample.windows(2).all(|w| w[0] < w[1]));
        assert!(a.sample.iter().all(|&i| i % 50 < 20));
    }

    #[test]
    fn relative_to_the_first_point() {
        assert_eq!(relative(&[50.0, 25.0]), [Some(1.0), Some(0.5)]);
        assert_eq!(relative(&[0.0, 25.0]), [None, None]);
        assert!(relative(&[]).is_empty());
    }
}
