//! The forward pass on small random models against a plain f64 re-implementation of the HF
//! Llama/Qwen2 equations (DESIGN §5 step 2): GQA, q/k/v bias, tied and untied heads, key/value
//! prefixes, soft input embeddings, ragged and padded batches, incremental decoding.
mod common;
use cmt_runtime::backend::CpuBackend;
use cmt_runtime::{KvPrefix, Logits, ModelConfig, PadSide, PaddedBatch, Result, SeqInput};
use common::tiny::{assert_close, model, reference_logits, tiny_config, tiny_weights, Rng};
use proptest::prelude::*;

fn random_prefix(cfg: &ModelConfig, p: usize, rng: &mut Rng) -> KvPrefix {
    let n = cfg.layers * cfg.kv_heads * p * cfg.head_dim;
    KvPrefix {
        len: p,
        k: rng.vec(n, 1.0),
        v: rng.vec(n, 1.0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A ragged batch (each sequence with its own prefix length, soft rows and tokens)
    /// against the reference run one sequence at a time.
    #[test]
    fn ragged_batch_matches_reference(
        heads in prop::sample::select(vec![2usize, 4, 6]),
        group in prop::sample::select(vec![1usize, 2]),
        head_dim in prop::sample::select(vec![4usize, 6, 8]),
        qkv_bias: bool, tie: bool, seed in 0u64..10_000,
        lens in prop::collection::vec((0usize..4, 0usize..3, 1usize..7), 1..4),
    ) {
        let cfg = tiny_config(heads, group, head_dim, qkv_bias, tie);
        let src = tiny_weights(&cfg, seed);
        let m = model(&cfg, &src);
        let mut rng = Rng(seed ^ 0xdead_beef);
        let mut sess = m.session(lens.len(), 32).unwrap();
        let mut seqs = Vec::new();
        for (slot, &(p, s, n)) in lens.iter().enumerate() {
            let prefix = (p > 0).then(|| random_prefix(&cfg, p, &mut rng));
            match &prefix {
                Some(pf) => sess.set_prefix(&cfg, &CpuBackend, slot, pf).unwrap(),
                None => sess.reset(slot),
            }
            let soft = rng.vec(s * cfg.hidden, 0.5);
            let ids: Vec<u32> = (0..n).map(|_| ((rng.next() + 1.0) * 18.0) as u32 % cfg.vocab as u32).collect();
            seqs.push((prefix, soft, ids));
        }
        let inputs: Vec<SeqInput> = seqs.iter().enumerate().map(|(slot, (_, soft, ids))| SeqInput { slot, soft, ids }).collect();
        let got = m.forward(&mut sess, &inputs, Logits::All, None).unwrap().to_vec();
        let mut want = Vec::new();
        for (prefix, soft, ids) in &seqs {
            want.extend(reference_logits(&cfg, &src, prefix.as_ref(), soft, ids));
        }
        assert_close(&got, &want, "ragged batch");
    }

    /// Feeding a sequence in pieces through the KV cache gives the same logits as one pass.
    #[test]
    fn incremental_decode_matches_one_pass(seed in 0u64..10_000, split in 1usize..8, qkv_bias: bool) {
        let cfg = tiny_config(4, 2, 6, qkv_bias, false);
        let src = tiny_weights(&cfg, seed);
        let m = model(&cfg, &src);
        let mut rng = Rng(seed);
        let ids: Vec<u32> = (0..10).map(|_| ((rng.next() + 1.0) * 18.0) as u32 % 37).collect();
        let prefix = random_prefix(&cfg, 3, &mut rng);
        let want = reference_logits(&cfg, &src, Some(&prefix), &[], &ids);
        let mut sess = m.session(1, 16).unwrap();
        sess.set_prefix(&cfg, &CpuBackend, 0, &prefix).unwrap();
        let mut got = m.forward(&mut sess, &[SeqInput::tokens(0, &ids[..split])], Logits::All, None).unwrap().to_vec();
        for t in split..ids.len() {
            got.extend_from_slice(m.forward(&mut sess, &[SeqInput::tokens(0, &ids[t..t + 1])], Logits::Last, None).unwrap());
        }
        assert_close(&got, &want, "incremental");
    }
}

#[test]
fn left_and_right_padding_give_the_unpadded_logits() {
    let cfg = tiny_config(4, 2, 4, true, true);
    let src = tiny_weights(&cfg, 11);
    let m = model(&cfg, &src);
    let seqs = vec![vec![3u32, 5, 7, 9, 11], vec![2, 4], vec![1, 1, 8]];
    for side in [PadSide::Left, PadSide::Right] {
        let b = PaddedBatch::new(&seqs, side, 0);
        let mut sess = m.session(3, 8).unwrap();
        let out = m.forward_padded(&mut sess, &b).unwrap();
        let v = cfg.vocab;
        for (i, s) in seqs.iter().enumerate() {
            let want = reference_logits(&cfg, &src, None, &[], s);
            let span = b.span(i).unwrap();
            assert_eq!(span.len(), s.len());
            let got = &out[(i * b.width + span.start) * v..(i * b.width + span.end) * v];
            assert_close(got, &want, &format!("{side:?}-padded row {i}"));
            for col in (0..b.width).filter(|c| !span.contains(c)) {
                assert!(out[(i * b.width + col) * v..(i * b.width + col + 1) * v]
                    .iter()
                    .all(|&x| x == 0.0));
            }
        }
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let cfg = tiny_config(2, 1, 4, false, true);
    let m = model(&cfg, &tiny_weights(&cfg, 1));
    let mut sess = m.session(2, 4).unwrap();
    let err = |r: Result<&[f32]>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err(m.forward(&mut sess, &[SeqInput::tokens(0, &[99])], Logits::All, None))
            .contains("vocabulary")
    );
    assert!(
        err(m.forward(&mut sess, &[SeqInput::tokens(5, &[1])], Logits::All, None)).contains("slot")
    );
    assert!(err(m.forward(
        &mut sess,
        &[SeqInput::tokens(0, &[1, 2, 3, 4, 5])],
        Logits::All,
        None
    ))
    .contains("capacity"));
    assert!(
        err(m.forward(&mut sess, &[SeqInput::tokens(0, &[])], Logits::All, None)).contains("empty")
    );
    let two = [SeqInput::tokens(1, &[1]), SeqInput::tokens(1, &[2])];
    assert!(err(m.forward(&mut sess, &two, Logits::All, None)).contains("twice"));
    let soft = [0.0f32; 7];
    let bad_soft = SeqInput {
        slot: 0,
        soft: &soft,
        ids: &[1],
    };
    assert!(err(m.forward(&mut sess, &[bad_soft], Logits::All, None)).contains("multiple"));
    let holes = PaddedBatch {
        batch: 1,
        width: 3,
        ids: vec![1, 0, 1],
        mask: vec![1, 0, 1],
    };
    assert!(m.forward_padded(&mut sess, &holes).is_err());
    assert!(
        m.session(1, 1000).is_err(),
        "capacity beyond the context must be refused"
    );
}
