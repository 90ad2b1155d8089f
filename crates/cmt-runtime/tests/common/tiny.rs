//! Small random models and a plain f64 re-implementation of the HF Llama/Qwen2 forward,
//! the independent reference for the runtime's forward pass.
#![allow(dead_code)]
use cmt_runtime::backend::CpuBackend;
use cmt_runtime::weights::{TensorSource, Weights};
use cmt_runtime::{Arch, KvPrefix, Model, ModelConfig, Result, RopeScaling};
use std::collections::HashMap;
use std::path::Path;

/// Tensors held in memory under HF names.
pub struct MapSource(pub HashMap<String, (Vec<usize>, Vec<f32>)>);

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

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

pub fn tiny_config(
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
        rope_scaling: Default::default(),
        tie_embeddings: tie,
        qkv_bias,
        max_positions: 64,
        bos_token: None,
        eos_tokens: vec![],
    }
}

pub fn tiny_weights(cfg: &ModelConfig, seed: u64) -> MapSource {
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

/// HF's rotary inverse frequencies in f64, scaling included (the equations of transformers'
/// `_compute_linear_scaling_rope_parameters` / `_compute_llama3_parameters`).
pub fn inv_freq_f64(cfg: &ModelConfig) -> Vec<f64> {
    let hd = cfg.head_dim;
    let base = (0..hd / 2).map(|i| 1.0 / (cfg.rope_theta as f64).powf(2.0 * i as f64 / hd as f64));
    match &cfg.rope_scaling {
        RopeScaling::None => base.collect(),
        RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
        RopeScaling::Divisors(d) => base.zip(d).map(|(f, &d)| f / d as f64).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor: lo,
            high_freq_factor: hi,
            original_max_position_embeddings: old,
        } => base
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let old = *old as f64;
                if wavelen < old / hi {
                    f
                } else if wavelen > old / lo {
                    f / factor
                } else {
                    let s = (old / wavelen - lo) / (hi - lo);
                    (1.0 - s) * f / factor + s * f
                }
            })
            .collect(),
    }
}

/// The HF equations, one sequence, f64, written for clarity rather than speed.
pub fn reference_logits(
    cfg: &ModelConfig,
    w: &MapSource,
    prefix: Option<&KvPrefix>,
    soft: &[f32],
    ids: &[u32],
) -> Vec<f64> {
    let to64 = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
    let pf = prefix.map(|p| (p.len, to64(&p.k), to64(&p.v)));
    reference_logits_f64(
        cfg,
        w,
        pf.as_ref().map(|(p, k, v)| (*p, &k[..], &v[..])),
        &to64(soft),
        ids,
    )
}

/// `reference_logits` with the prefix ((p, k, v), [layers, kv_heads, p, hd]) and soft
/// embeddings in f64, for finite differences.
pub fn reference_logits_f64(
    cfg: &ModelConfig,
    w: &MapSource,
    prefix: Option<(usize, &[f64], &[f64])>,
    soft: &[f64],
    ids: &[u32],
) -> Vec<f64> {
    let g = |n: &str| -> Vec<f64> { w.0[n].1.iter().map(|&x| x as f64).collect() };
    let (d, hd, nh, nkv) = (cfg.hidden, cfg.head_dim, cfg.heads, cfg.kv_heads);
    let p = prefix.map_or(0, |p| p.0);
    let emb = g("model.embed_tokens.weight");
    let mut x: Vec<Vec<f64>> = soft.chunks(d).map(|r| r.to_vec()).collect();
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
    let inv = inv_freq_f64(cfg);
    let rope = |v: &mut [f64], pos: usize| {
        let half = hd / 2;
        for h in v.chunks_mut(hd) {
            for (i, &f) in inv.iter().enumerate() {
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
        if let Some((_, pk, pv)) = prefix {
            for gi in 0..nkv {
                for t in 0..p {
                    let o = ((l * nkv + gi) * p + t) * hd;
                    keys[gi].push(pk[o..o + hd].to_vec());
                    vals[gi].push(pv[o..o + hd].to_vec());
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

pub fn model(cfg: &ModelConfig, src: &MapSource) -> Model<CpuBackend> {
    let w = Weights::load(cfg, src, &CpuBackend).unwrap();
    Model::new(cfg.clone(), CpuBackend, w).unwrap()
}

pub fn assert_close(got: &[f32], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 + 1e-4 * w.abs(),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}
