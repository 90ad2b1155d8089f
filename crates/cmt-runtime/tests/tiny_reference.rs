//! The forward pass on small random models against a plain f64 re-implementation of the HF
//! Llama/Qwen2 equations (DESIGN §5 step 2): GQA, q/k/v bias, tied and untied heads, key/value
//! prefixes, soft input embeddings, ragged and padded batches, incremental decoding.
use cmt_runtime::backend::CpuBackend;
use cmt_runtime::weights::{TensorSource, Weights};
use cmt_runtime::{
    Arch, KvPrefix, Logits, Model, ModelConfig, PadSide, PaddedBatch, Result, SeqInput,
};
use proptest::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// Tensors held in memory under HF names.
struct MapSource(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl TensorSource for MapSource {
    fn path(&self) -> &Path {
        Path::new("<memory>")
    }
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, v) = &self.0[name];
        assert_eq!(s, shape, "{name}");
        Ok(v.clone())
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn tiny_config(
    heads: usize,
    group: usize,
    head_dim: usize,
    qkv_bias: bool,
    tie: bool,
) -> ModelConfig {
    ModelConfig {
        arch: if qkv_bias { Arch::Qwen2 } else { Arch::Llama },
        hidden: 20,
        intermediate: 28,
        layers: 2,
        heads,
        kv_heads: heads / group,
        head_dim,
        vocab: 37,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_embeddings: tie,
        qkv_bias,
        max_positions: 64,
        bos_token: None,
        eos_tokens: vec![],
    }
}

fn tiny_weights(cfg: &ModelConfig, seed: u64) -> MapSource {
    let mut rng = Rng(seed);
    let mut m = HashMap::new();
    for (name, shape) in cmt_runtime::convert::hf_tensor_shapes(cfg) {
        let n: usize = shape.iter().product();
        let v = if name.ends_with("norm.weight") {
            rng.vec(n, 0.3).into_iter().map(|x| 1.0 + x).collect()
        } else {
            rng.vec(n, 0.5)
        };
        m.insert(name, (shape, v));
    }
    MapSource(m)
}

/// The HF equations, one sequence, f64, written for clarity rather than speed.
fn reference_logits(
    cfg: &ModelConfig,
    w: &MapSource,
    prefix: Option<&KvPrefix>,
    soft: &[f32],
    ids: &[u32],
) -> Vec<f64> {
    let g = |n: &str| -> Vec<f64> { w.0[n].1.iter().map(|&x| x as f64).collect() };
    let (d, hd, nh, nkv) = (cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads);
    let p = prefix.map_or(0, |p| p.len);
    let emb = g("model.embed_tokens.weight");
    let mut x: Vec<Vec<f64>> = soft
        .chunks(d)
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    x.extend(
        ids.iter()
            .map(|&t| emb[t as usize * d..(t as usize + 1) * d].to_vec()),
    );
    let n = x.len();
    let rms = |v: &[f64], w: &[f64]| -> Vec<f64> {
        let r = 1.0
            / (v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64 + cfg.rms_eps as f64).sqrt();
        v.iter().zip(w).map(|(a, b)| a * r * b).collect()
    };
    let lin = |v: &[f64], w: &[f64], b: Option<&[f64]>, out: usize| -> Vec<f64> {
        (0..out)
            .map(|j| {
                (0..v.len()).map(|k| v[k] * w[j * v.len() + k]).sum::<f64>()
                    + b.map_or(0.0, |b| b[j])
            })
            .collect()
    };
    let rope = |v: &mut [f64], pos: usize| {
        let half = hd / 2;
        for h in v.chunks_mut(hd) {
            for i in 0..half {
                let f = 1.0 / (cfg.rope_theta as f64).powf(2.0 * i as f64 / hd as f64);
                let (c, s) = ((pos as f64 * f).cos(), (pos as f64 * f).sin());
                let (a, b) = (h[i], h[i + half]);
                h[i] = a * c - b * s;
                h[i + half] = b * c + a * s;
            }
        }
    };
    for l in 0..cfg.layers {
        let pre = |s: &str| format!("model.layers.{l}.{s}");
        let bias = |s: &str| cfg.qkv_bias.then(|| g(&pre(s)));
        let (bq, bk, bv) = (
            bias("self_attn.q_proj.bias"),
            bias("self_attn.k_proj.bias"),
            bias("self_attn.v_proj.bias"),
        );
        // keys/values per kv head: prefix slots first, then this sequence's rows
        let mut keys = vec![Vec::<Vec<f64>>::new(); nkv];
        let mut vals = vec![Vec::<Vec<f64>>::new(); nkv];
        if let Some(pf) = prefix {
            for gi in 0..nkv {
                for t in 0..p {
                    let o = ((l * nkv + gi) * p + t) * hd;
                    keys[gi].push(pf.k[o..o + hd].iter().map(|&v| v as f64).collect());
                    vals[gi].push(pf.v[o..o + hd].iter().map(|&v| v as f64).collect());
                }
            }
        }
        let mut qs = Vec::new();
        for (i, xi) in x.iter().enumerate() {
            let h = rms(xi, &g(&pre("input_layernorm.weight")));
            let mut q = lin(
                &h,
                &g(&pre("self_attn.q_proj.weight")),
                bq.as_deref(),
                nh * hd,
            );
            let mut k = lin(
                &h,
                &g(&pre("self_attn.k_proj.weight")),
                bk.as_deref(),
                nkv * hd,
            );
            let v = lin(
                &h,
                &g(&pre("self_attn.v_proj.weight")),
                bv.as_deref(),
                nkv * hd,
            );
            rope(&mut q, p + i);
            rope(&mut k, p + i);
            for gi in 0..nkv {
                keys[gi].push(k[gi * hd..(gi + 1) * hd].to_vec());
                vals[gi].push(v[gi * hd..(gi + 1) * hd].to_vec());
            }
            qs.push(q);
        }
        let mut new_x = Vec::new();
        for (i, xi) in x.iter().enumerate() {
            let mut att = vec![0.0; nh * hd];
            for h in 0..nh {
                let gi = h / (nh / nkv);
                let q = &qs[i][h * hd..(h + 1) * hd];
                let sc: Vec<f64> = (0..=p + i)
                    .map(|t| {
                        q.iter().zip(&keys[gi][t]).map(|(a, b)| a * b).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = sc.iter().map(|s| (s - mx).exp()).sum();
                for (t, s) in sc.iter().enumerate() {
                    for j in 0..hd {
                        att[h * hd + j] += (s - mx).exp() / z * vals[gi][t][j];
                    }
                }
            }
            let o = lin(&att, &g(&pre("self_attn.o_proj.weight")), None, d);
            let r: Vec<f64> = xi.iter().zip(&o).map(|(a, b)| a + b).collect();
            let h = rms(&r, &g(&pre("post_attention_layernorm.weight")));
            let gate = lin(&h, &g(&pre("mlp.gate_proj.weight")), None, cfg.intermediate);
            let up = lin(&h, &g(&pre("mlp.up_proj.weight")), None, cfg.intermediate);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(a, u)| a / (1.0 + (-a).exp()) * u)
                .collect();
            let down = lin(&act, &g(&pre("mlp.down_proj.weight")), None, d);
            new_x.push(
                r.iter()
                    .zip(&down)
                    .map(|(a, b)| a + b)
                    .collect::<Vec<f64>>(),
            );
        }
        x = new_x;
    }
    let head = if cfg.tie_embeddings {
        emb
    } else {
        g("lm_head.weight")
    };
    let mut out = Vec::with_capacity(n * cfg.vocab);
    for xi in &x {
        out.extend(lin(
            &rms(xi, &g("model.norm.weight")),
            &head,
            None,
            cfg.vocab,
        ));
    }
    out
}

fn model(cfg: &ModelConfig, src: &MapSource) -> Model<CpuBackend> {
    let w = Weights::load(cfg, src, &CpuBackend).unwrap();
    Model::new(cfg.clone(), CpuBackend, w).unwrap()
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 + 1e-4 * w.abs(),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

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
