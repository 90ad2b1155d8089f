//! `Model::soft_prefixes` against the plain composition: tokens after the prefix θ makes of
//! soft rows get the logits they get after the same soft rows in their own input.
mod common;
use cmt_runtime::{Logits, SeqInput};
use common::tiny::{model, tiny_config, tiny_weights, Rng};

#[test]
fn soft_prefix_equals_soft_rows_in_the_input() {
    for (qkv_bias, tie) in [(true, false), (false, true)] {
        let cfg = tiny_config(4, 2, 6, qkv_bias, tie);
        let m = model(&cfg, &tiny_weights(&cfg, 7));
        let (d, p, v) = (cfg.hidden, 3, cfg.vocab);
        let soft = Rng(11).vec(2 * p * d, 0.5);
        let ids = [5u32, 9, 2, 11];
        let prefixes = m.soft_prefixes(&soft, p).unwrap();
        assert_eq!(prefixes.len(), 2);
        for (i, pre) in prefixes.iter().enumerate() {
            let rows = &soft[i * p * d..(i + 1) * p * d];
            let mut s1 = m.session(1, p + ids.len()).unwrap();
            let inp = [SeqInput {
                slot: 0,
                soft: rows,
                ids: &ids,
            }];
            let whole = m.forward(&mut s1, &inp, Logits::All, None).unwrap()[p * v..].to_vec();
            let mut s2 = m.session(1, p + ids.len()).unwrap();
            s2.set_prefix(&cfg, &m.backend, 0, pre).unwrap();
            let after = m
                .forward(&mut s2, &[SeqInput::tokens(0, &ids)], Logits::All, None)
                .unwrap()
                .to_vec();
            assert_eq!(whole.len(), after.len());
            for (a, b) in whole.iter().zip(&after) {
                assert!((a - b).abs() <= 1e-5 + 1e-4 * a.abs(), "{a} vs {b}");
            }
            // and the prefix is not trivially empty: without it the logits differ
            let mut s3 = m.session(1, ids.len()).unwrap();
            let bare = m
                .forward(&mut s3, &[SeqInput::tokens(0, &ids)], Logits::All, None)
                .unwrap();
            assert!(bare.iter().zip(&after).any(|(a, b)| (a - b).abs() > 1e-3));
        }
    }
}

#[test]
fn soft_prefix_rejects_ragged_rows() {
    let cfg = tiny_config(4, 2, 6, true, false);
    let m = model(&cfg, &tiny_weights(&cfg, 7));
    let err = m
        .soft_prefixes(&vec![0.0; 2 * cfg.hidden + 1], 2)
        .unwrap_err();
    assert!(err.to_string().contains("soft prefix rows"), "{err}");
}
