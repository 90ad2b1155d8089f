//! The backward pass on small random models against central finite differences of the
//! plain f64 reference forward (tests/common/tiny.rs): batches mixing GQA, q/k/v bias,
//! prefixes of different lengths, soft embeddings and unlabelled rows.
mod common;
use cmt_runtime::score::IGNORE;
use cmt_runtime::train::{ragged_from_padded, Tape, TrainSeq};
use cmt_runtime::{KvPrefix, ModelConfig, PadSide, PaddedBatch};
use common::tiny::{model, reference_logits_f64, tiny_config, tiny_weights, MapSource, Rng};
use proptest::prelude::*;

struct Seq {
    p: usize,
    pk: Vec<f64>,
    pv: Vec<f64>,
    soft: Vec<f64>,
    ids: Vec<u32>,
    labels: Vec<i32>,
}

/// Batch loss in f64: mean over all labelled tokens of −log softmax(logits[t])[labels[t+1]].
fn batch_loss(cfg: &ModelConfig, w: &MapSource, seqs: &[Seq]) -> f64 {
    let (mut sum, mut n) = (0.0, 0);
    for s in seqs {
        let pf = (s.p > 0).then_some((s.p, &s.pk[..], &s.pv[..]));
        let logits = reference_logits_f64(cfg, w, pf, &s.soft, &s.ids);
        let v = cfg.vocab;
        for t in 0..s.labels.len() - 1 {
            let y = s.labels[t + 1];
            if y == IGNORE {
                continue;
            }
            let row = &logits[t * v..(t + 1) * v];
            let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = row.iter().map(|z| (z - mx).exp()).sum::<f64>().ln() + mx;
            sum += lse - row[y as usize];
            n += 1;
        }
    }
    sum / n as f64
}

fn check(name: &str, got: &[f32], fd: &[f64]) {
    let scale = fd.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    for (i, (g, r)) in got.iter().zip(fd).enumerate() {
        assert!(
            (*g as f64 - r).abs() <= 2e-3 * scale + 1e-5,
            "{name}[{i}]: analytic {g} vs finite difference {r} (scale {scale})"
        );
    }
}

/// Central differences of `batch_loss` for each coordinate of one field of one sequence.
fn fd_grad(
    cfg: &ModelConfig,
    w: &MapSource,
    seqs: &mut [Seq],
    si: usize,
    field: usize,
) -> Vec<f64> {
    let h = 1e-5;
    let len = match field {
        0 => seqs[si].pk.len(),
        1 => seqs[si].pv.len(),
        _ => seqs[si].soft.len(),
    };
    (0..len)
        .map(|i| {
            fn at(s: &mut Seq, field: usize, i: usize) -> &mut f64 {
                match field {
                    0 => &mut s.pk[i],
                    1 => &mut s.pv[i],
                    _ => &mut s.soft[i],
                }
            }
            let x0 = *at(&mut seqs[si], field, i);
            *at(&mut seqs[si], field, i) = x0 + h;
            let up = batch_loss(cfg, w, seqs);
            *at(&mut seqs[si], field, i) = x0 - h;
            let down = batch_loss(cfg, w, seqs);
            *at(&mut seqs[si], field, i) = x0;
            (up - down) / (2.0 * h)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn prefix_and_soft_gradients_match_finite_differences(
        group in prop::sample::select(vec![1usize, 2]),
        qkv_bias: bool, seed in 0u64..10_000,
        shapes in prop::collection::vec((0usize..4, 0usize..3, 2usize..6), 1..4),
    ) {
        let cfg = tiny_config(4, group, 6, qkv_bias, seed % 2 == 0);
        let w = tiny_weights(&cfg, seed);
        let m = model(&cfg, &w);
        let mut rng = Rng(seed + 99);
        let kv = cfg.layers * cfg.kv_heads * cfg.head_dim;
        let mut seqs: Vec<Seq> = shapes.iter().map(|&(p, s, n)| {
            let rows = s + n;
            // Label about half the targets; keep at least one.
            let mut labels: Vec<i32> = (0..rows).map(|_| if rng.next() > 0.0 { ((rng.next() + 1.0) * 18.0) as i32 % 37 } else { IGNORE }).collect();
            labels[rows - 1] = 5;
            Seq {
                p,
                pk: (0..p * kv).map(|_| rng.next() as f64).collect(),
                pv: (0..p * kv).map(|_| rng.next() as f64).collect(),
                soft: (0..s * cfg.hidden).map(|_| rng.next() as f64 * 0.5).collect(),
                ids: (0..n).map(|_| ((rng.next() + 1.0) * 18.0) as u32 % 37).collect(),
                labels,
            }
        }).collect();
        let prefixes: Vec<KvPrefix> = seqs.iter().map(|s| KvPrefix {
            len: s.p,
            k: s.pk.iter().map(|&x| x as f32).collect(),
            v: s.pv.iter().map(|&x| x as f32).collect(),
        }).collect();
        let soft32: Vec<Vec<f32>> = seqs.iter().map(|s| s.soft.iter().map(|&x| x as f32).collect()).collect();
        let batch: Vec<TrainSeq> = seqs.iter().enumerate().map(|(i, s)| TrainSeq {
            prefix: (s.p > 0).then_some(&prefixes[i]),
            soft: &soft32[i],
            ids: &s.ids,
            labels: &s.labels,
        }).collect();
        let mut sess = m.session(seqs.len(), 16).unwrap();
        let mut tape = Tape::default();
        let loss = m.forward_train(&mut sess, &batch, &mut tape).unwrap();
        let want = batch_loss(&cfg, &w, &seqs);
        prop_assert!((loss - want).abs() <= 1e-4 * (1.0 + want.abs()), "loss {loss} vs {want}");
        let grads = m.backward(&sess, &tape).unwrap();
        for (si, g) in grads.iter().enumerate() {
            check(&format!("seq {si} prefix k"), &g.prefix_k, &fd_grad(&cfg, &w, &mut seqs, si, 0));
            check(&format!("seq {si} prefix v"), &g.prefix_v, &fd_grad(&cfg, &w, &mut seqs, si, 1));
            check(&format!("seq {si} soft"), &g.soft, &fd_grad(&cfg, &w, &mut seqs, si, 2));
        }
    }
}

/// A left- or right-padded batch trains exactly like the same sequences unpadded.
#[test]
fn padded_batches_give_the_ragged_loss_and_gradients() {
    let cfg = tiny_config(4, 2, 6, true, false);
    let w = tiny_weights(&cfg, 3);
    let m = model(&cfg, &w);
    let seqs = vec![vec![3u32, 5, 7, 9, 11], vec![2, 4], vec![1, 1, 8]];
    let mut rng = Rng(5);
    let kv = cfg.layers * cfg.kv_heads * cfg.head_dim;
    let prefix = KvPrefix {
        len: 2,
        k: rng.vec(2 * kv, 1.0),
        v: rng.vec(2 * kv, 1.0),
    };
    let ragged_labels: Vec<Vec<i32>> = seqs
        .iter()
        .map(|s| s.iter().map(|&t| t as i32).collect())
        .collect();
    let run = |batch: &[TrainSeq]| {
        let mut sess = m.session(3, 8).unwrap();
        let mut tape = Tape::default();
        let loss = m.forward_train(&mut sess, batch, &mut tape).unwrap();
        (loss, m.backward(&sess, &tape).unwrap())
    };
    let ragged: Vec<TrainSeq> = seqs
        .iter()
        .zip(&ragged_labels)
        .map(|(s, l)| TrainSeq {
            prefix: Some(&prefix),
            soft: &[],
            ids: s,
            labels: l,
        })
        .collect();
    let (want_loss, want_grads) = run(&ragged);
    for side in [PadSide::Left, PadSide::Right] {
        let b = PaddedBatch::new(&seqs, side, 0);
        let labels: Vec<i32> = b
            .ids
            .iter()
            .zip(&b.mask)
            .map(|(&t, &m)| if m == 1 { t as i32 } else { IGNORE })
            .collect();
        let rows = ragged_from_padded(&b, &labels).unwrap();
        let batch: Vec<TrainSeq> = rows
            .iter()
            .map(|(ids, l)| TrainSeq {
                prefix: Some(&prefix),
                soft: &[],
                ids,
                labels: l,
            })
            .collect();
        let (loss, grads) = run(&batch);
        assert_eq!(loss, want_loss, "{side:?}");
        assert_eq!(grads, want_grads, "{side:?}");
    }
}
