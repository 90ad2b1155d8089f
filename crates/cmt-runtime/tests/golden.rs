//! The runtime against HF transformers' golden values (DESIGN §5 step 1):
//! `../shared/fixtures/smollm2-135m/`, produced by its `gen_golden.py`.
mod common;
use cmt_runtime::score::{sequence_loss, text_loss, IGNORE};
use cmt_runtime::{GenerateOptions, Logits, SeqInput};
use common::{max_abs_diff, require, Fixtures};

#[test]
fn tokenizer_matches_hf() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(common::default_model(), "default model");
    let cases = fx.meta["tokenizer"].as_array().expect("tokenizer cases");
    assert!(cases.len() >= 8);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let ids = |k: &str| -> Vec<u32> {
            c[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let no_special = m.tok.encode(text, false).unwrap();
        assert_eq!(
            no_special,
            ids("ids_no_special"),
            "ids without special tokens for {text:?}"
        );
        assert_eq!(
            m.tok.encode(text, true).unwrap(),
            ids("ids_default"),
            "default ids for {text:?}"
        );
        assert_eq!(
            m.tok.decode(&no_special).unwrap(),
            c["decoded"].as_str().unwrap(),
            "decode of {text:?}"
        );
    }
}

#[test]
fn logits_of_every_prompt_position_match() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(common::default_model(), "default model");
    for i in 0..3 {
        let ids = fx.ids(&format!("prompt{i}.ids"));
        let (want, shape) = fx.f32(&format!("prompt{i}.logits"));
        assert_eq!(shape, vec![ids.len(), m.model.cfg.vocab]);
        let mut sess = m.model.session(1, ids.len()).unwrap();
        let got = m
            .model
            .forward(&mut sess, &[SeqInput::tokens(0, &ids)], Logits::All, None)
            .unwrap();
        let d = max_abs_diff(got, &want);
        eprintln!("prompt{i}: {} positions, max |Δlogit| = {d:.2e}", ids.len());
        assert!(d <= 1e-3, "prompt{i}: max abs logit diff {d}");
    }
}

#[test]
fn hidden_state_checkpoints_match() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(common::default_model(), "default model");
    let ids = fx.ids("prompt0.ids");
    let mut sess = m.model.session(1, ids.len()).unwrap();
    let mut hidden = Vec::new();
    m.model
        .forward(
            &mut sess,
            &[SeqInput::tokens(0, &ids)],
            Logits::None,
            Some(&mut hidden),
        )
        .unwrap();
    assert_eq!(hidden.len(), m.model.cfg.layers + 2);
    // fixture index N: 0 = embeddings, N = output of layer N-1, 30 = final norm output; our
    // list has the final-norm output after the 30 layer outputs.
    for (fx_idx, ours) in [(0, 0), (1, 1), (15, 15), (29, 29), (30, 31)] {
        let (want, _) = fx.f32(&format!("prompt0.hidden{fx_idx}"));
        let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = max_abs_diff(&hidden[ours], &want);
        eprintln!("hidden{fx_idx}: max |Δ| = {d:.2e} (max |ref| = {scale:.1})");
        assert!(
            d <= 1e-4 + 1e-5 * scale,
            "hidden{fx_idx}: max abs diff {d} vs scale {scale}"
        );
    }
}

#[test]
fn greedy_continuations_are_identical() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(common::default_model(), "default model");
    for i in 0..3 {
        let ids = fx.ids(&format!("prompt{i}.ids"));
        let want = fx.ids(&format!("prompt{i}.greedy"));
        let mut sess = m.model.session(1, ids.len() + want.len()).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let got = cmt_runtime::generate(&m.model, &mut sess, &[ids], None, &opts, |_, _| Ok(true))
            .unwrap();
        assert_eq!(got[0], want, "prompt{i}: greedy tokens");
        let text = m.tok.decode(&got[0]).unwrap();
        assert_eq!(text, fx.meta["prompts"][i]["greedy_text"].as_str().unwrap());
    }
}

#[test]
fn batched_greedy_equals_one_by_one() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(common::default_model(), "default model");
    let prompts: Vec<Vec<u32>> = (0..3).map(|i| fx.ids(&format!("prompt{i}.ids"))).collect();
    let mut sess = m.model.session(3, 64).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 24,
        ..Default::default()
    };
    let got =
        cmt_runtime::generate(&m.model, &mut sess, &prompts, None, &opts, |_, _| Ok(true)).unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(
            g,
            &fx.ids(&format!("prompt{i}.greedy")),
            "prompt{i} in a batch of 3"
        );
    }
}

#[test]
fn perplexity_loss_matches() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(common::default_model(), "default model");
    let ids = fx.ids("ppl.ids");
    let (want, _) = fx.f32("ppl.loss");
    let mut sess = m.model.session(1, ids.len()).unwrap();
    let got = text_loss(&m.model, &mut sess, &ids).unwrap();
    eprintln!("ppl loss {got:.6} vs {:.6}", want[0]);
    assert!((got - want[0] as f64).abs() <= 1e-4, "{got} vs {}", want[0]);
}

#[test]
fn kv_prefix_logits_and_loss_match() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(common::default_model(), "default model");
    let (prefix, ids, labels) = fx.kv_prefix_case();
    let p = prefix.len;
    let mut sess = m.model.session(1, p + ids.len()).unwrap();
    sess.set_prefix(&m.model.cfg, &m.model.backend, 0, &prefix)
        .unwrap();
    let got = m
        .model
        .forward(&mut sess, &[SeqInput::tokens(0, &ids)], Logits::All, None)
        .unwrap()
        .to_vec();
    let (want, _) = fx.f32("kvprefix.logits");
    let d = max_abs_diff(&got, &want);
    eprintln!("kvprefix: max |Δlogit| = {d:.2e}");
    assert!(d <= 1e-3, "kvprefix logits diff {d}");
    let loss = sequence_loss(&m.model, &mut sess, Some(&prefix), &[], &ids, &labels).unwrap();
    let (want_loss, _) = fx.f32("kvprefix.loss");
    assert!(
        (loss - want_loss[0] as f64).abs() <= 1e-4,
        "kvprefix loss {loss} vs {}",
        want_loss[0]
    );
}

#[test]
fn soft_prefix_loss_matches() {
    let fx = require!(Fixtures::load(), "../shared fixtures");
    let m = require!(common::default_model(), "default model");
    let ids = fx.ids("kvprefix.ids");
    let (e, eshape) = fx.f32("softprefix.e");
    let p = eshape[0];
    let mut labels = vec![IGNORE; p];
    labels.extend(fx.i32("kvprefix.labels"));
    let mut sess = m.model.session(1, p + ids.len()).unwrap();
    let loss = sequence_loss(&m.model, &mut sess, None, &e, &ids, &labels).unwrap();
    let (want, _) = fx.f32("softprefix.loss");
    eprintln!("softprefix loss {loss:.6} vs {:.6}", want[0]);
    assert!(
        (loss - want[0] as f64).abs() <= 1e-4,
        "softprefix loss {loss} vs {}",
        want[0]
    );
}
