//! The backward of the aggregation against central finite differences of an f64 forward,
//! with the selected set held fixed (straight-through).
use cmt_memory::topk::backward;
use cmt_memory::MemView;
use half::bf16;
use proptest::prelude::*;

/// L = ⟨G, A⟩ with A = Σ softmax(q·k_i/τ)_i M_i, all in f64.
fn loss(q: &[f64], keys: &[Vec<f64>], mems: &[Vec<f64>], tau: f64, g: &[f64]) -> f64 {
    let s: Vec<f64> = keys
        .iter()
        .map(|k| k.iter().zip(q).map(|(a, b)| a * b).sum::<f64>() / tau)
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f64 = e.iter().sum();
    mems.iter()
        .zip(&e)
        .map(|(mi, ei)| ei / z * mi.iter().zip(g).map(|(a, b)| a * b).sum::<f64>())
        .sum()
}

/// f32 forward values (scores, weights) against an f64 finite difference.
fn close(got: f32, want: f64) -> bool {
    (got as f64 - want).abs() <= 2e-5 * (1.0 + want.abs())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn gradients_match_finite_differences(
        r in 1usize..12,
        k in 1usize..7,
        len in 1usize..10,
        tau in 0.2f64..2.0,
        bf: bool,
        vals in proptest::collection::vec(-1.0f32..1.0, 300),
    ) {
        let mut it = vals.iter().cycle().copied();
        let mut take = |n: usize| -> Vec<f32> { (0..n).map(|_| it.next().unwrap()).collect() };
        let q = take(r);
        let keys: Vec<Vec<f32>> = (0..k).map(|_| take(r)).collect();
        let mut mems: Vec<Vec<f32>> = (0..k).map(|_| take(len)).collect();
        if bf {
            for m in &mut mems {
                m.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32());
            }
        }
        let g = take(len);
        let mb: Vec<Vec<bf16>> = mems.iter().map(|m| m.iter().map(|&x| bf16::from_f32(x)).collect()).collect();
        let views: Vec<MemView> = if bf {
            mb.iter().map(|m| MemView::Bf16(m)).collect()
        } else {
            mems.iter().map(|m| MemView::F32(m)).collect()
        };
        let tau32 = tau as f32;
        let tau = tau32 as f64;
        // Forward values as the kernel returns them.
        let s: Vec<f32> = keys.iter().map(|kk| kk.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>() / tau32).collect();
        let mx = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = s.iter().map(|&x| (x as f64 - mx).exp()).collect();
        let z: f64 = e.iter().sum();
        let w: Vec<f32> = e.iter().map(|x| (x / z) as f32).collect();
        let key_refs: Vec<&[f32]> = keys.iter().map(|x| x.as_slice()).collect();
        let grads = backward(&q, &key_refs, &views, &s, &w, tau32, &g).unwrap();

        let f64v = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let (q64, g64) = (f64v(&q), f64v(&g));
        let k64: Vec<Vec<f64>> = keys.iter().map(|x| f64v(x)).collect();
        let m64: Vec<Vec<f64>> = mems.iter().map(|x| f64v(x)).collect();
        let h = 1e-6;
        for j in 0..r {
            let (mut qp, mut qm) = (q64.clone(), q64.clone());
            qp[j] += h;
            qm[j] -= h;
            let fd = (loss(&qp, &k64, &m64, tau, &g64) - loss(&qm, &k64, &m64, tau, &g64)) / (2.0 * h);
            prop_assert!(close(grads.d_query[j], fd), "dq[{j}] {} vs {fd}", grads.d_query[j]);
        }
        for i in 0..k {
            for j in 0..r {
                let (mut kp, mut km) = (k64.clone(), k64.clone());
                kp[i][j] += h;
                km[i][j] -= h;
                let fd = (loss(&q64, &kp, &m64, tau, &g64) - loss(&q64, &km, &m64, tau, &g64)) / (2.0 * h);
                prop_assert!(close(grads.d_keys[i][j], fd), "dk[{i}][{j}] {} vs {fd}", grads.d_keys[i][j]);
            }
            for t in 0..len {
                let (mut mp, mut mm) = (m64.clone(), m64.clone());
                mp[i][t] += h;
                mm[i][t] -= h;
                let fd = (loss(&q64, &k64, &mp, tau, &g64) - loss(&q64, &k64, &mm, tau, &g64)) / (2.0 * h);
                prop_assert!(close(grads.d_memories[i][t], fd), "dM[{i}][{t}] {} vs {fd}", grads.d_memories[i][t]);
            }
        }
        let fd = (loss(&q64, &k64, &m64, tau + h, &g64) - loss(&q64, &k64, &m64, tau - h, &g64)) / (2.0 * h);
        prop_assert!(close(grads.d_tau, fd), "dτ {} vs {fd}", grads.d_tau);
    }
}

#[test]
fn mismatched_lengths_are_errors() {
    let q = [1.0f32, 2.0];
    let k = [1.0f32, 0.0];
    let m = [1.0f32, 2.0, 3.0];
    let v = [MemView::F32(&m)];
    assert!(backward(&q, &[&k], &v, &[1.0], &[1.0], 1.0, &[1.0, 1.0]).is_err());
    assert!(backward(&q, &[&k[..1]], &v, &[1.0], &[1.0], 1.0, &[1.0; 3]).is_err());
    assert!(backward(&q, &[&k], &v, &[1.0, 2.0], &[1.0], 1.0, &[1.0; 3]).is_err());
    assert!(backward(&q, &[&k], &v, &[1.0], &[1.0], 0.0, &[1.0; 3]).is_err());
    assert!(backward(&q, &[&k], &v, &[1.0], &[1.0], 1.0, &[1.0; 3]).is_ok());
}
