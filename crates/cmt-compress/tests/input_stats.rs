//! Input standardisation: the statistics against a plain f64 computation (first rows and
//! padding left out), the compressor with statistics against the compressor without them
//! fed the standardised states (forward, parameter gradients, and dL/dH = dL/dH' ⊙ scale),
//! and the checks and serde defaults that keep old checkpoints loading.
use cmt_compress::attention::DocBatch;
use cmt_compress::{Compressor, CompressorConfig, InputStats, Params};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn config(stats: Option<InputStats>) -> CompressorConfig {
    CompressorConfig {
        d: 6,
        mem_tokens: 3,
        blocks: 2,
        heads: 2,
        head_dim: 3,
        mlp_hidden: 7,
        key_dim: 4,
        eps: 1e-6,
        input_stats: stats,
    }
}

/// `[docs, n_max, d]` with a large shared offset per dimension (as θ's states have) and
/// padding rows poisoned.
fn hidden(rng: &mut StdRng, n_max: usize, lens: &[usize], d: usize) -> Vec<f32> {
    let offset: Vec<f32> = (0..d).map(|i| 10.0 * i as f32 - 20.0).collect();
    let mut h = vec![0.0; lens.len() * n_max * d];
    for (doc, &len) in lens.iter().enumerate() {
        for t in 0..n_max {
            for i in 0..d {
                h[(doc * n_max + t) * d + i] = if t < len {
                    offset[i] + (1.0 + i as f32) * rng.random_range(-1.0f32..1.0)
                } else {
                    1e4
                };
            }
        }
    }
    h
}

#[test]
fn statistics_match_a_plain_computation() {
    let mut rng = StdRng::seed_from_u64(1);
    let (d, n_max, lens) = (6, 5, [5usize, 3, 4]);
    let h = hidden(&mut rng, n_max, &lens, d);
    let b = DocBatch {
        h: &h,
        n_max,
        lens: &lens,
    };
    let s = InputStats::measure([b], d).unwrap();
    let rows: Vec<&[f32]> = lens
        .iter()
        .enumerate()
        .flat_map(|(doc, &len)| (1..len).map(move |t| (doc, t)))
        .map(|(doc, t)| &h[(doc * n_max + t) * d..(doc * n_max + t + 1) * d])
        .collect();
    assert_eq!(s.rows, rows.len());
    for i in 0..d {
        let xs: Vec<f64> = rows.iter().map(|r| r[i] as f64).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt();
        assert!(
            (s.mean[i] as f64 - m).abs() < 1e-4 * (1.0 + m.abs()),
            "mean[{i}]"
        );
        assert!((s.scale[i] as f64 * sd - 1.0).abs() < 1e-4, "scale[{i}]");
    }
    // Standardised rows have mean 0 and unit variance per dimension; padding stays zero.
    let z = s.apply(&b);
    for (doc, &len) in lens.iter().enumerate() {
        for t in len..n_max {
            assert!(z[(doc * n_max + t) * d..(doc * n_max + t + 1) * d]
                .iter()
                .all(|&v| v == 0.0));
        }
    }
}

#[test]
fn compressor_with_statistics_is_the_compressor_on_standardised_states() {
    let mut rng = StdRng::seed_from_u64(2);
    let (d, n_max, lens) = (6, 5, [5usize, 2]);
    let h = hidden(&mut rng, n_max, &lens, d);
    let b = DocBatch {
        h: &h,
        n_max,
        lens: &lens,
    };
    let stats = InputStats::measure([b], d).unwrap();
    let z = stats.apply(&b);
    let zb = DocBatch { h: &z, ..b };
    let params = Params::init(&config(None), 3).unwrap();
    let with = Compressor::new(config(Some(stats.clone())), params.clone()).unwrap();
    let plain = Compressor::new(config(None), params).unwrap();

    let (cw, tw) = with.forward_train(&b).unwrap();
    let (cp, tp) = plain.forward_train(&zb).unwrap();
    assert_eq!(cw, cp);

    let r = lens.len() * 3;
    let d_mem: Vec<f32> = (0..r * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let d_key: Vec<f32> = (0..lens.len() * 4)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let (mut gw, mut gp) = (Params::zeros(&with.cfg), Params::zeros(&plain.cfg));
    // Accumulation: both start from the same nonzero dL/dH.
    let start: Vec<f32> = (0..h.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let (mut dhw, mut dhp) = (start.clone(), vec![0.0; h.len()]);
    with.backward(&b, &tw, Some(&d_mem), Some(&d_key), &mut gw, Some(&mut dhw))
        .unwrap();
    plain
        .backward(
            &zb,
            &tp,
            Some(&d_mem),
            Some(&d_key),
            &mut gp,
            Some(&mut dhp),
        )
        .unwrap();
    assert_eq!(gw, gp);
    for (i, ((&w, &p), &s0)) in dhw.iter().zip(&dhp).zip(&start).enumerate() {
        let want = s0 + p * stats.scale[i % d];
        assert!(
            (w - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "dH[{i}]: {w} vs {want}"
        );
    }
    // And without a dH buffer the parameter gradients are the same.
    let mut g2 = Params::zeros(&with.cfg);
    with.backward(&b, &tw, Some(&d_mem), Some(&d_key), &mut g2, None)
        .unwrap();
    assert_eq!(g2, gp);
}

#[test]
fn bad_statistics_are_refused_and_old_configs_load() {
    let good = InputStats {
        mean: vec![0.0; 6],
        scale: vec![1.0; 6],
        rows: 10,
    };
    assert!(config(Some(good.clone())).validate().is_ok());
    let short = InputStats {
        mean: vec![0.0; 5],
        ..good.clone()
    };
    let e = config(Some(short)).validate().unwrap_err().to_string();
    assert!(e.contains("input_stats") && e.contains("width is 6"), "{e}");
    let mut zero = good.clone();
    zero.scale[2] = 0.0;
    let e = config(Some(zero)).validate().unwrap_err().to_string();
    assert!(e.contains("input_stats.scale[2]"), "{e}");
    let mut nan = good.clone();
    nan.mean[4] = f32::NAN;
    let e = config(Some(nan)).validate().unwrap_err().to_string();
    assert!(e.contains("input_stats.mean[4]"), "{e}");

    // A config written before the option has no field: it reads as None, and None is not
    // written out, so old checkpoints' metadata stays byte-identical.
    let old = serde_json::to_value(config(None)).unwrap();
    assert!(old.get("input_stats").is_none(), "{old}");
    let back: CompressorConfig = serde_json::from_value(old).unwrap();
    assert_eq!(back.input_stats, None);
    let with = config(Some(good));
    let v = serde_json::to_string(&with).unwrap();
    assert_eq!(serde_json::from_str::<CompressorConfig>(&v).unwrap(), with);
}

#[test]
fn too_few_rows_for_statistics_is_an_error() {
    let h = vec![1.0; 6];
    let b = DocBatch {
        h: &h,
        n_max: 1,
        lens: &[1],
    };
    let e = InputStats::measure([b], 6).unwrap_err().to_string();
    assert!(e.contains("at least 2 rows"), "{e}");
}
