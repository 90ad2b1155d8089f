//! The dev-time L_rec measure (`objective::reconstruction_loss`, `objective::no_memory_loss`)
//! against the runtime's independent scoring path (`score::sequence_loss`, one sequence at
//! a time, from G_ω's prefix or soft rows), in both prefix modes, on a tiny random model.
mod common;
use cmt_core::config::PrefixMode;
use cmt_core::params::{prefix_dims, BaseDims, CmtParams};
use cmt_core::train::objective::{no_memory_loss, reconstruction_loss};
use cmt_core::{prefix, soft_prefix};
use cmt_runtime::score::{sequence_loss, IGNORE};
use common::Rng;

#[test]
fn reconstruction_loss_matches_one_sequence_at_a_time_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_tiny_model(dir.path(), 16, 3);
    let (theta, _) = cmt_runtime::load_model(&path, cmt_runtime::CpuBackend).unwrap();
    let base = BaseDims::of(&theta.cfg);
    let mut rng = Rng(9);
    // Ragged windows: the batch loss is the mean over every labelled token of the batch.
    let windows: Vec<(Vec<u32>, Vec<i32>)> = [5usize, 7, 6]
        .iter()
        .map(|&n| {
            let ids: Vec<u32> = (0..n)
                .map(|_| ((rng.next() + 1.0) * 120.0) as u32)
                .collect();
            let labels = ids.iter().map(|&t| t as i32).collect();
            (ids, labels)
        })
        .collect();

    let mut sess = theta.session(1, 64).unwrap();
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (ids, labels) in &windows {
        let l = sequence_loss(&theta, &mut sess, None, &[], ids, labels).unwrap();
        sum += l * (ids.len() - 1) as f64;
        n += ids.len() - 1;
    }
    let alone = no_memory_loss(&theta, &windows).unwrap();
    assert!(
        (alone - sum / n as f64).abs() < 1e-4,
        "{alone} vs {}",
        sum / n as f64
    );

    for mode in [PrefixMode::Kv, PrefixMode::Soft] {
        let mut cfg = common::tiny_cmt_config(16);
        cfg.prefix_mode = mode;
        cfg.soft_scale = 0.5;
        let mut params = CmtParams::init(&cfg, &base, 4).unwrap();
        // Away from the init (zero value projections would make the kv prefix read nothing).
        for (_, t) in params.tensors_mut() {
            t.iter_mut().for_each(|x| *x += 0.3 * rng.next());
        }
        let pdims = prefix_dims(&cfg, &base);
        let td = cfg.t() * 16;
        let memories = rng.vec(windows.len() * td, 1.0);
        let got = reconstruction_loss(&theta, &cfg, &params, &memories, &windows).unwrap();

        let (mut sum, mut n) = (0.0f64, 0usize);
        for (i, (ids, labels)) in windows.iter().enumerate() {
            let m = &memories[i * td..(i + 1) * td];
            let (l, scored) = match mode {
                PrefixMode::Kv => {
                    let (pre, _) = prefix::forward(&pdims, &params.prefix, m).unwrap();
                    let l = sequence_loss(&theta, &mut sess, Some(&pre[0]), &[], ids, labels);
                    (l.unwrap(), ids.len() - 1)
                }
                PrefixMode::Soft => {
                    // The soft rows sit before the window; the last one predicts its first token.
                    let (rows, _) = soft_prefix::forward(&pdims, &params.prefix, m).unwrap();
                    let all: Vec<i32> = std::iter::repeat_n(IGNORE, cfg.p())
                        .chain(labels.iter().copied())
                        .collect();
                    let l = sequence_loss(&theta, &mut sess, None, &rows, ids, &all);
                    (l.unwrap(), ids.len())
                }
            };
            sum += l * scored as f64;
            n += scored;
        }
        let want = sum / n as f64;
        assert!((got - want).abs() < 1e-4, "{mode:?}: {got} vs {want}");
        // The memories matter: another window's memory gives another loss.
        let mut rotated = memories[td..].to_vec();
        rotated.extend_from_slice(&memories[..td]);
        let other = reconstruction_loss(&theta, &cfg, &params, &rotated, &windows).unwrap();
        assert!(
            (other - got).abs() > 1e-6,
            "{mode:?}: the memory changed nothing"
        );
    }
}
