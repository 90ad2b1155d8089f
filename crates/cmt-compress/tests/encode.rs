//! Document encoding through the frozen model: chunk boundaries, batching independence
//! (batched vs one chunk at a time through the plain `Model::forward`), padding, layer
//! selection, errors, and the HF golden hidden states on the default model.
mod enc_common;
use cmt_compress::encode::{Chunking, EncodeOptions, Encoder, HiddenLayer, Progress};
use cmt_runtime::{PadSide, PaddedBatch};
use enc_common::{bits_equal, doc, max_abs_diff, reference_rows, require, tiny_model};
use proptest::prelude::*;

fn opts(max: usize, overlap: usize, budget: usize, layer: HiddenLayer) -> EncodeOptions {
    EncodeOptions {
        layer,
        chunking: Chunking::new(max, overlap).unwrap(),
        max_batch_tokens: budget,
        batch_invariant: true,
        progress: Progress::Never,
    }
}

#[test]
fn chunk_boundaries_are_the_documented_ones() {
    let c = Chunking::new(4, 1).unwrap();
    assert_eq!(c.ranges(0, 10).unwrap(), vec![0..4, 3..7, 6..10]);
    assert_eq!(c.ranges(0, 11).unwrap(), vec![0..4, 3..7, 6..10, 9..11]);
    assert_eq!(c.ranges(0, 4).unwrap(), vec![0..4]);
    assert_eq!(c.ranges(0, 1).unwrap(), vec![0..1]);
    let c = Chunking::new(4, 0).unwrap();
    assert_eq!(c.ranges(0, 9).unwrap(), vec![0..4, 4..8, 8..9]);
    let c = Chunking::new(5, 3).unwrap();
    assert_eq!(c.ranges(0, 9).unwrap(), vec![0..5, 2..7, 4..9]);
}

#[test]
fn bad_chunking_and_empty_documents_are_clear_errors() {
    let e = Chunking::new(4, 4).unwrap_err().to_string();
    assert!(
        e.contains("overlap 4") && e.contains("max_doc_tokens 4"),
        "{e}"
    );
    let e = Chunking::new(4, 9).unwrap_err().to_string();
    assert!(e.contains("overlap 9"), "{e}");
    let e = Chunking::new(0, 0).unwrap_err().to_string();
    assert!(e.contains("max_doc_tokens must be at least 1"), "{e}");
    let m = tiny_model(1);
    let enc = Encoder::new(&m, opts(8, 2, 64, HiddenLayer::FinalNorm)).unwrap();
    let docs = vec![doc(5, 0, 61), vec![], doc(3, 1, 61)];
    let e = enc.encode(&docs).unwrap_err().to_string();
    assert!(e.contains("document 1 is empty"), "{e}");
}

#[test]
fn encoder_options_are_checked_against_the_model() {
    let m = tiny_model(1);
    let e = Encoder::new(&m, opts(8, 0, 64, HiddenLayer::Residual(4)))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("hidden layer 4 out of range"), "{e}");
    assert!(Encoder::new(&m, opts(8, 0, 64, HiddenLayer::Residual(3))).is_ok());
    let e = Encoder::new(&m, opts(65, 0, 128, HiddenLayer::FinalNorm))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("exceeds the model's context of 64"), "{e}");
    let e = Encoder::new(&m, opts(16, 0, 8, HiddenLayer::FinalNorm))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("max_batch_tokens 8 is smaller"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Chunks cover the document in order, hold at most `max` tokens, and consecutive
    /// chunks share exactly `overlap` tokens.
    #[test]
    fn chunks_cover_the_document(max in 1usize..20, ov in 0usize..20, n in 1usize..200) {
        prop_assume!(ov < max);
        let r = Chunking::new(max, ov).unwrap().ranges(3, n).unwrap();
        prop_assert_eq!(r[0].start, 0);
        prop_assert_eq!(r.last().unwrap().end, n);
        for (i, c) in r.iter().enumerate() {
            prop_assert!(!c.is_empty() && c.len() <= max);
            if i + 1 < r.len() {
                prop_assert_eq!(c.len(), max);
                prop_assert_eq!(c.end - r[i + 1].start, ov);
                prop_assert!(r[i + 1].end > c.end);
            }
        }
    }

    /// Batched encoding (several chunks per step, several steps) gives every chunk the
    /// same bits as running it alone through `Model::forward`, for every layer.
    #[test]
    fn batched_equals_one_chunk_at_a_time(
        lens in prop::collection::vec(1usize..40, 1..6),
        max in 3usize..16, ov_frac in 0usize..3, budget_mul in 1usize..5,
        layer in 0usize..5, seed in 0usize..1000,
    ) {
        let m = tiny_model(7);
        let ov = (max * ov_frac) / 4;
        let layer = if layer == 4 { HiddenLayer::FinalNorm } else { HiddenLayer::Residual(layer) };
        let idx = layer.capture_index(3).unwrap();
        let enc = Encoder::new(&m, opts(max, ov, max * budget_mul, layer)).unwrap();
        let docs: Vec<Vec<u32>> = lens.iter().enumerate().map(|(i, &n)| doc(n, seed + i, 61)).collect();
        let out = enc.encode(&docs).unwrap();
        let d = 24;
        prop_assert_eq!(out.d, d);
        prop_assert_eq!(out.h.len(), out.num_chunks() * out.n_max * d);
        prop_assert_eq!(&out.chunks, &enc.plan(&docs).unwrap());
        let db = out.doc_batch();
        prop_assert_eq!(db.docs(), out.num_chunks());
        for (c, ch) in out.chunks.iter().enumerate() {
            prop_assert_eq!(out.lens[c], ch.tokens.len());
            let want = reference_rows(&m, &docs[ch.doc][ch.tokens.clone()], idx);
            prop_assert!(bits_equal(out.rows(c), &want), "chunk {} of doc {}", c, ch.doc);
            let pad = &out.h[(c * out.n_max + out.lens[c]) * d..(c + 1) * out.n_max * d];
            prop_assert!(pad.iter().all(|&x| x == 0.0));
        }
        // Packing by the budget alone: same chunks, equal to the lone encode up to the
        // golden tolerance (the summation order of the matmuls changes).
        let mut o = *enc.options();
        o.batch_invariant = false;
        let loose = Encoder::new(&m, o).unwrap().encode(&docs).unwrap();
        prop_assert_eq!(&loose.lens, &out.lens);
        let scale = out.h.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let diff = max_abs_diff(&loose.h, &out.h);
        prop_assert!(diff <= 1e-4 + 1e-5 * scale, "loose packing: {} (scale {})", diff, scale);
    }
}

#[test]
fn left_and_right_padding_give_the_same_batch() {
    let m = tiny_model(3);
    let enc = Encoder::new(&m, opts(8, 2, 20, HiddenLayer::FinalNorm)).unwrap();
    let docs: Vec<Vec<u32>> = [5usize, 13, 1, 8].iter().map(|&n| doc(n, n, 61)).collect();
    let plain = enc.encode(&docs).unwrap();
    let left = enc
        .encode_padded(&PaddedBatch::new(&docs, PadSide::Left, 0))
        .unwrap();
    let right = enc
        .encode_padded(&PaddedBatch::new(&docs, PadSide::Right, 0))
        .unwrap();
    assert_eq!(left.chunks, plain.chunks);
    assert!(bits_equal(&left.h, &plain.h));
    assert!(bits_equal(&right.h, &plain.h));
    assert_eq!(left.lens, right.lens);
    // A row with no tokens is an empty document.
    let mut pb = PaddedBatch::new(&docs, PadSide::Left, 0);
    pb.mask[..pb.width].fill(0);
    let e = enc.encode_padded(&pb).unwrap_err().to_string();
    assert!(e.contains("document 0 is empty"), "{e}");
}

#[test]
fn golden_final_norm_hidden_states_match_hf() {
    let fx = require!(enc_common::Fixtures::load(), "../shared fixtures");
    let m = require!(enc_common::default_model(), "default model");
    let ids = fx.ids("prompt0.ids");
    // Fixture index N: 0 = embeddings, N = output of layer N-1, 30 = final norm.
    for (layer, name) in [
        (HiddenLayer::FinalNorm, "prompt0.hidden30"),
        (HiddenLayer::Residual(15), "prompt0.hidden15"),
        (HiddenLayer::Residual(0), "prompt0.hidden0"),
    ] {
        let enc = Encoder::new(&m.model, opts(ids.len(), 0, ids.len(), layer)).unwrap();
        // Encoded next to another document: the batch must not change the result.
        let other = doc(40, 5, 49152);
        let out = enc.encode(&[other.clone(), ids.clone()]).unwrap();
        let last = out.num_chunks() - 1;
        assert!(last >= 2, "the other document spans several chunks");
        assert_eq!(out.chunks[last].doc, 1);
        assert_eq!(out.chunks[last].tokens, 0..ids.len());
        let want = fx.f32(name);
        let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let d = max_abs_diff(out.rows(last), &want);
        eprintln!("{name}: max |Δ| = {d:.2e} (max |ref| = {scale:.1})");
        assert!(
            d <= 1e-4 + 1e-5 * scale,
            "{name}: max abs diff {d} vs scale {scale}"
        );
    }
}

#[test]
fn default_model_batched_equals_one_at_a_time() {
    let m = require!(enc_common::default_model(), "default model");
    let text = "Super Bowl 50 was an American football game to determine the champion of the \
                National Football League (NFL) for the 2015 season. The American Football \
                Conference (AFC) champion Denver Broncos defeated the National Football \
                Conference (NFC) champion Carolina Panthers 24–10 to earn their third title.";
    let a = m.tok.encode(text, false).unwrap();
    let docs = vec![
        a.clone(),
        a[..20].to_vec(),
        a[7..].to_vec(),
        doc(90, 3, 49152),
    ];
    let enc = Encoder::new(&m.model, opts(32, 8, 100, HiddenLayer::FinalNorm)).unwrap();
    let out = enc.encode(&docs).unwrap();
    let idx = HiddenLayer::FinalNorm
        .capture_index(m.model.cfg.layers)
        .unwrap();
    for (c, ch) in out.chunks.iter().enumerate() {
        let want = reference_rows(&m.model, &docs[ch.doc][ch.tokens.clone()], idx);
        assert!(bits_equal(out.rows(c), &want), "chunk {c} ({ch:?})");
    }
    let mut o = *enc.options();
    o.batch_invariant = false;
    let loose = Encoder::new(&m.model, o).unwrap().encode(&docs).unwrap();
    let scale = out.h.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = max_abs_diff(&loose.h, &out.h);
    eprintln!("packed by budget vs lone chunks: max |Δ| = {d:.2e} (scale {scale:.1})");
    assert!(d <= 1e-4 + 1e-5 * scale, "{d} vs scale {scale}");
}
