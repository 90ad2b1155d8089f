//! `Model::forward_hidden` (one checkpoint of the residual stream) against the full
//! capture of `Model::forward`, on a small random model.
mod common;
use cmt_runtime::{HiddenLayer, Logits, SeqInput};
use common::tiny::{model, tiny_config, tiny_weights};

#[test]
fn single_layer_capture_equals_full_capture() {
    let cfg = tiny_config(4, 2, 6, true, false);
    let src = tiny_weights(&cfg, 7);
    let m = model(&cfg, &src);
    let a: Vec<u32> = vec![3, 9, 1, 30, 7];
    let b: Vec<u32> = vec![11, 2];
    let inputs = [SeqInput::tokens(0, &a), SeqInput::tokens(1, &b)];
    let mut sess = m.session(2, 16).unwrap();
    let mut all = Vec::new();
    m.forward(&mut sess, &inputs, Logits::None, Some(&mut all))
        .unwrap();
    assert_eq!(all.len(), cfg.layers + 2);
    let mut layers: Vec<HiddenLayer> = (0..=cfg.layers).map(HiddenLayer::Residual).collect();
    layers.push(HiddenLayer::FinalNorm);
    for (i, layer) in layers.into_iter().enumerate() {
        sess.reset_all();
        let mut one = vec![f32::NAN; 3];
        m.forward_hidden(&mut sess, &inputs, layer, &mut one)
            .unwrap();
        assert_eq!(one.len(), (a.len() + b.len()) * cfg.hidden, "{layer:?}");
        let same = one
            .iter()
            .zip(&all[i])
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(
            same,
            "{layer:?}: differs from entry {i} of the full capture"
        );
    }
    sess.reset_all();
    let err = m
        .forward_hidden(
            &mut sess,
            &inputs,
            HiddenLayer::Residual(cfg.layers + 1),
            &mut Vec::new(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
}
