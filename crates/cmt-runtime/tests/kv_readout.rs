//! `Session::read_kv` and `rope::shift_key_positions` against plain compositions: a read
//! cache put back as a prefix continues the sequence exactly as one forward over the whole
//! text does, and shifting rotary keys equals rotating them at the new position.
mod common;
use cmt_runtime::backend::RopeTable;
use cmt_runtime::rope::{shift_key_positions, RopeScaling};
use cmt_runtime::{Backend, CpuBackend, Logits, SeqInput};
use common::tiny::{model, tiny_config, tiny_weights, Rng};

#[test]
fn read_cache_as_prefix_continues_the_sequence() {
    for (qkv_bias, tie) in [(true, false), (false, true)] {
        let cfg = tiny_config(4, 2, 6, qkv_bias, tie);
        let m = model(&cfg, &tiny_weights(&cfg, 3));
        let v = cfg.vocab;
        let (doc, question) = ([4u32, 8, 1, 13, 6], [9u32, 2, 11]);
        let whole: Vec<u32> = doc.iter().chain(&question).copied().collect();
        let mut s1 = m.session(1, whole.len()).unwrap();
        let want = m
            .forward(&mut s1, &[SeqInput::tokens(0, &whole)], Logits::All, None)
            .unwrap()[doc.len() * v..]
            .to_vec();

        // Slot 1 of a two-slot session, so the slot offset of the read is exercised.
        let mut s2 = m.session(2, doc.len()).unwrap();
        let inp = [
            SeqInput::tokens(0, &question[..2]),
            SeqInput::tokens(1, &doc),
        ];
        m.forward(&mut s2, &inp, Logits::None, None).unwrap();
        let kv = s2.read_kv(&cfg, &m.backend, 1).unwrap();
        assert_eq!(kv.len, doc.len());
        assert_eq!(
            kv.k.len(),
            cfg.layers * cfg.kv_heads * doc.len() * cfg.head_dim
        );

        let mut s3 = m.session(1, whole.len()).unwrap();
        s3.set_prefix(&cfg, &m.backend, 0, &kv).unwrap();
        let got = m
            .forward(
                &mut s3,
                &[SeqInput::tokens(0, &question)],
                Logits::All,
                None,
            )
            .unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{a} vs {b}");
        }
        assert!(s2.read_kv(&cfg, &m.backend, 2).is_err());
    }
}

#[test]
fn position_offset_keeps_relative_positions_of_a_moved_prefix() {
    // Rotary depends only on position differences: a cached document moved c positions
    // later (keys shifted by c), continued at offset c, gives the logits of the plain
    // sequence. Without the offset the question would sit c positions too early.
    let cfg = tiny_config(4, 2, 6, false, false);
    let m = model(&cfg, &tiny_weights(&cfg, 9));
    let v = cfg.vocab;
    let (doc, question) = ([3u32, 12, 7, 1], [5u32, 10]);
    let whole: Vec<u32> = doc.iter().chain(&question).copied().collect();
    let mut s1 = m.session(1, whole.len()).unwrap();
    let want = m
        .forward(&mut s1, &[SeqInput::tokens(0, &whole)], Logits::All, None)
        .unwrap()[doc.len() * v..]
        .to_vec();
    let mut s2 = m.session(1, doc.len()).unwrap();
    m.forward(&mut s2, &[SeqInput::tokens(0, &doc)], Logits::None, None)
        .unwrap();
    let mut moved = s2.read_kv(&cfg, &m.backend, 0).unwrap();
    let c = 7usize;
    let inv = cfg.rope_scaling.inv_freq(cfg.head_dim, cfg.rope_theta);
    let shift = vec![c as f64; doc.len()];
    shift_key_positions(&mut moved.k, doc.len(), cfg.head_dim, &inv, &shift).unwrap();
    for offset in [c, 0] {
        let mut s3 = m.session(1, whole.len()).unwrap();
        s3.set_prefix(&cfg, &m.backend, 0, &moved).unwrap();
        s3.set_position_offset(0, offset).unwrap();
        let got = m
            .forward(
                &mut s3,
                &[SeqInput::tokens(0, &question)],
                Logits::All,
                None,
            )
            .unwrap();
        let close = got
            .iter()
            .zip(&want)
            .all(|(a, b)| (a - b).abs() <= 1e-5 + 1e-4 * b.abs());
        assert_eq!(close, offset == c, "offset {offset}");
    }
    let mut s4 = m.session(1, 2).unwrap();
    assert!(s4.set_position_offset(1, 3).is_err());
}

/// Keys rotated by the backend's rotary at each of `positions`.
fn rotated(keys: &[f32], positions: &[u32], hd: usize, table: &RopeTable<CpuBackend>) -> Vec<f32> {
    let mut k = keys.to_vec();
    CpuBackend
        .rope(&mut k, positions, 1, hd, table)
        .expect("positions inside the table");
    k
}

#[test]
fn shifted_keys_equal_keys_rotated_at_the_new_position() {
    let hd = 16;
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    };
    for scaling in [RopeScaling::None, llama3] {
        let theta = 10_000.0;
        let table = RopeTable::scaled(&CpuBackend, hd, theta, &scaling, 600).unwrap();
        let inv = scaling.inv_freq(hd, theta);
        let (from, to) = ([0u32, 7, 130, 511], [3u32, 1, 0, 590]);
        // [groups = 2, p = 4, hd]: the same shifts apply to every group.
        let raw = Rng(5).vec(2 * from.len() * hd, 1.0);
        let rows = |pos: &[u32]| -> Vec<u32> { pos.iter().chain(pos).copied().collect() };
        let mut k = rotated(&raw, &rows(&from), hd, &table);
        let shift: Vec<f64> = from
            .iter()
            .zip(&to)
            .map(|(&f, &t)| t as f64 - f as f64)
            .collect();
        shift_key_positions(&mut k, from.len(), hd, &inv, &shift).unwrap();
        let want = rotated(&raw, &rows(&to), hd, &table);
        for (a, b) in k.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 + 1e-4 * b.abs(), "{a} vs {b}");
        }
        // Shifting back by −position undoes rotary.
        let back: Vec<f64> = to.iter().map(|&t| -(t as f64)).collect();
        shift_key_positions(&mut k, to.len(), hd, &inv, &back).unwrap();
        for (a, b) in k.iter().zip(&raw) {
            assert!((a - b).abs() <= 1e-4 + 1e-4 * b.abs(), "{a} vs {b}");
        }
    }
}

#[test]
fn shift_refuses_mismatched_shapes() {
    let inv = RopeScaling::None.inv_freq(8, 10_000.0);
    let mut k = vec![0.0; 3 * 8];
    assert!(shift_key_positions(&mut k, 2, 8, &inv, &[1.0, 2.0]).is_err());
    assert!(shift_key_positions(&mut k, 3, 8, &inv, &[1.0]).is_err());
    assert!(shift_key_positions(&mut k, 3, 8, &inv[..2], &[0.0; 3]).is_err());
}
