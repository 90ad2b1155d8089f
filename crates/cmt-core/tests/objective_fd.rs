//! The whole objective's gradient — L_qa (answer loss → prefix → G_ω → ψ → (w, A) → scores
//! → (k_x, k_d) → C_φ), L_rec (document tokens → G_ω(M_d) → C_φ) and L_match (InfoNCE over
//! the training bank with a queue) — against central differences of the loss, for every
//! trainable tensor, with G_ω in either prefix mode, on a tiny random model
//! (straight-through: the test checks that the selection is the same at both ends of every
//! difference).
mod common;
use cmt_compress::encode::{EncodeOptions, Encoder, Progress};
use cmt_core::params::{BaseDims, CmtParams};
use cmt_core::train::objective::{loss, Queue, Terms, TrainBatch};
use common::Rng;

#[test]
fn objective_gradient_matches_finite_differences_for_every_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_tiny_model(dir.path(), 16, 3);
    let (theta, _) = cmt_runtime::load_model(&path, cmt_runtime::CpuBackend).unwrap();
    let base = BaseDims::of(&theta.cfg);
    // (ψ on, top-k on), (ψ off), (top-k off: the whole training bank aggregated), and the
    // soft-row prefix (θ's own layers make the keys and values).
    for (aggregator, topk, soft) in [
        (true, true, false),
        (false, true, false),
        (true, false, false),
        (true, true, true),
    ] {
        let mut cfg = common::tiny_cmt_config(16);
        cfg.aggregator = aggregator;
        cfg.topk = topk;
        if soft {
            cfg.prefix_mode = cmt_core::config::PrefixMode::Soft;
            cfg.soft_scale = 0.5;
        }
        let mut params = CmtParams::init(&cfg, &base, 11).unwrap();
        let mut rng = Rng(5);
        for (name, t) in params.tensors_mut() {
            if name != "tau.log" {
                t.iter_mut().for_each(|x| *x += 0.2 * rng.next());
            }
        }
        let enc = Encoder::new(
            &theta,
            EncodeOptions {
                progress: Progress::Never,
                ..Default::default()
            },
        )
        .unwrap();
        let toks = |n: usize, rng: &mut Rng| -> Vec<u32> {
            (0..n)
                .map(|_| ((rng.next() + 1.0) * 120.0) as u32)
                .collect()
        };
        let docs: Vec<Vec<u32>> = (0..4).map(|i| toks(5 + i, &mut rng)).collect();
        let qs: Vec<Vec<u32>> = (0..2).map(|i| toks(3 + i, &mut rng)).collect();
        let hd = enc.encode(&docs).unwrap();
        let hq = enc.encode(&qs).unwrap();
        let seqs: Vec<(Vec<u32>, Vec<i32>)> = (0..2)
            .map(|_| {
                let ids = toks(7, &mut rng);
                let labels = ids
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| if i >= 4 { t as i32 } else { -100 })
                    .collect();
                (ids, labels)
            })
            .collect();
        let (r, td) = (cfg.r(), cfg.t() * 16);
        let qkeys: Vec<f32> = (0..2)
            .flat_map(|_| {
                let k = rng.vec(r, 1.0);
                let n = k.iter().map(|x| x * x).sum::<f32>().sqrt();
                k.into_iter().map(move |x| x / n)
            })
            .collect();
        let qmems = rng.vec(2 * td, 1.0);
        let rec: Vec<(Vec<u32>, Vec<i32>)> = docs
            .iter()
            .map(|d| (d.clone(), d.iter().map(|&t| t as i32).collect()))
            .collect();
        let gold = [1usize, 3];
        let batch = TrainBatch {
            docs: hd.doc_batch(),
            questions: hq.doc_batch(),
            qa: &seqs,
            gold: &gold,
            rec: &rec,
            queue: Some(Queue {
                keys: &qkeys,
                memories: &qmems,
            }),
        };
        let mut grads = CmtParams::zeros(&cfg, &base);
        let terms = Terms {
            qa: true,
            lambda_rec: 0.7,
            lambda_match: 0.5,
        };
        let out = loss(&theta, &cfg, &params, &batch, &terms, Some(&mut grads)).unwrap();
        assert!(out.total.is_finite() && out.qa > 0.0 && out.rec > 0.0 && out.matching > 0.0);
        let want = out.qa + 0.7f32 as f64 * out.rec + 0.5 * out.matching;
        assert!((out.total - want).abs() < 1e-9, "{} vs {want}", out.total);
        let chosen: Vec<Vec<u64>> = out.selections.iter().map(|s| s.ids.clone()).collect();
        let k = if topk { cfg.k } else { 6 };
        assert!(chosen.iter().all(|c| c.len() == k), "{chosen:?}");

        let names: Vec<String> = params.tensors().into_iter().map(|(n, _)| n).collect();
        let gvals: Vec<Vec<f32>> = grads
            .tensors()
            .into_iter()
            .map(|(_, t)| t.to_vec())
            .collect();
        let mut checked = 0;
        for (ti, name) in names.iter().enumerate() {
            if !aggregator && name.starts_with("aggregator.") {
                assert!(gvals[ti].iter().all(|&g| g == 0.0), "{name}: ψ is off");
                continue;
            }
            // A random unit direction in this tensor.
            let n = gvals[ti].len();
            let mut v = rng.vec(n, 1.0);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            let analytic: f64 = gvals[ti]
                .iter()
                .zip(&v)
                .map(|(g, d)| *g as f64 * *d as f64)
                .sum();
            let eps = 5e-3f32;
            let at = |sign: f32| {
                let mut p = params.clone();
                let (_, t) = p.tensors_mut().into_iter().nth(ti).unwrap();
                t.iter_mut().zip(&v).for_each(|(x, d)| *x += sign * eps * d);
                let o = loss(&theta, &cfg, &p, &batch, &terms, None).unwrap();
                let ids: Vec<Vec<u64>> = o.selections.iter().map(|s| s.ids.clone()).collect();
                assert_eq!(ids, chosen, "{name}: the selection moved within ±eps");
                o.total
            };
            let numeric = (at(1.0) - at(-1.0)) / (2.0 * eps as f64);
            // Directional derivatives here are 1e-4..1e-1. The f32 loss (~5.5) carries
            // ~1e-6 of rounding, i.e. ~1e-4 in a difference over 2·eps; eps² terms add ~1%.
            let tol = 1.5e-4 + 2e-2 * numeric.abs();
            assert!(
                (numeric - analytic).abs() <= tol,
                "aggregator={aggregator} topk={topk} soft={soft} {name}: analytic {analytic:.6e}, numeric {numeric:.6e}"
            );
            checked += 1;
        }
        assert!(checked >= 20, "{checked}");
    }
}
