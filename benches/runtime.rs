//! Forward-pass throughput of cmt's CPU runtime against candle (DESIGN §6), side by side in
//! one run, on the default model (SmolLM2-135M-Instruct) in f32 with 2 threads:
//!
//! - `prefill_128`: one sequence of 128 tokens into an empty cache, logits for the last
//!   position only.
//! - `decode_32_ctx16`: 32 single-token steps with a KV cache, after a 16-token prompt
//!   (so the context grows 16 → 48 in every iteration). The prompt prefill is not timed.
//!
//! Both engines load the same HF directory (f32 safetensors), written once from the default
//! GGUF by `cmt_runtime::convert::gguf_to_hf` into `$CMT_HOME/bench/smollm2-hf`. Before
//! timing, the bench checks that both pick the same next token (and prints the largest
//! logit difference), so they do the same work. candle's forward runs under
//! `Device::with_context` (its warm private pool); cmt's is called as its API is.
//!
//! Run: `cargo bench --bench runtime`.
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as cl;
use cmt_runtime::{Backend, CpuBackend, Logits, Model, SeqInput, Session};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const THREADS: usize = 2;
const PREFILL: usize = 128;
const PROMPT: usize = 16;
const DECODE: usize = 32;

const TEXT: &str = "The history of the printing press begins in the fifteenth century, when \
Johannes Gutenberg combined movable metal type, oil-based ink and a screw press adapted from \
wine making. Before that, books in Europe were copied by hand, mostly in monasteries, and a \
single Bible could take a scribe several years. Within fifty years of Gutenberg's first \
printed Bible, presses were working in more than two hundred cities, and millions of books \
had been printed. Cheaper books spread literacy, standardised spelling and grammar, and let \
scholars compare the same text in distant places. The Reformation, the scientific revolution \
and the growth of newspapers all depended on the press. Later inventions such as the steam \
powered rotary press, the linotype machine and offset lithography made printing faster and \
cheaper still, until digital typesetting and the internet changed publishing once more.";

/// The default GGUF, converted once to an HF directory both engines can load.
fn model_dir() -> PathBuf {
    let dir = cmt_runtime::fetch::cmt_home()
        .join("bench")
        .join("smollm2-hf");
    if dir.join("config.json").exists() && dir.join("model.safetensors").exists() {
        return dir;
    }
    let gguf = cmt_runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}"))
        .expect("fetching the default model");
    eprintln!("converting {} -> {}", gguf.display(), dir.display());
    cmt_runtime::convert::gguf_to_hf(&gguf, &dir).expect("converting GGUF to an HF directory");
    dir
}

struct Candle {
    model: cl::Llama,
    /// An empty cache (rotary tables built); cloned for every fresh sequence.
    empty: cl::Cache,
    dev: Device,
}

impl Candle {
    fn load(dir: &Path) -> Candle {
        let json = std::fs::read_to_string(dir.join("config.json")).expect("reading config.json");
        let raw: serde_json::Value = serde_json::from_str(&json).expect("parsing config.json");
        let lc: cl::LlamaConfig = serde_json::from_value(raw.clone()).expect("candle LlamaConfig");
        let cfg = lc.into_config(false);
        // candle's llama derives head_dim as hidden / heads; make sure that is the model's.
        let head_dim = raw["head_dim"].as_u64().expect("head_dim in config.json") as usize;
        assert_eq!(
            cfg.hidden_size / cfg.num_attention_heads,
            head_dim,
            "candle's llama cannot express this head_dim"
        );
        assert!(cfg.tie_word_embeddings && cfg.rope_scaling.is_none());
        let dev = Device::Cpu;
        // SAFETY: the safetensors file is not modified while the bench runs.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &dev)
        }
        .expect("mmapping model.safetensors");
        let model = cl::Llama::load(vb, &cfg).expect("loading candle llama");
        let empty = cl::Cache::new(true, DType::F32, &cfg, &dev).expect("candle cache");
        Candle { model, empty, dev }
    }

    /// Feeds `ids` at `pos` and returns the last position's logits. The forward runs under
    /// `Device::with_context`, candle's documented way to keep its CPU pool warm across the
    /// many short parallel sections of a forward pass (measured ~2-13% faster than without).
    fn forward(&self, cache: &mut cl::Cache, ids: &[u32], pos: usize) -> Tensor {
        let x = Tensor::new(ids, &self.dev)
            .and_then(|t| t.unsqueeze(0))
            .expect("input tensor");
        self.dev
            .with_context(|| self.model.forward(&x, pos, cache))
            .expect("candle forward")
    }
}

fn candle_logits(t: &Tensor) -> Vec<f32> {
    t.i(0)
        .and_then(|r| r.to_vec1::<f32>())
        .expect("logits to host")
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn cmt_forward<'s>(
    m: &Model<CpuBackend>,
    sess: &'s mut Session<CpuBackend>,
    ids: &[u32],
) -> &'s [f32] {
    m.forward(sess, &[SeqInput::tokens(0, ids)], Logits::Last, None)
        .expect("cmt forward")
}

/// Same next token from both engines, after a full prefill and after prompt + one decode step.
fn sanity_check(m: &Model<CpuBackend>, c: &Candle, ids: &[u32]) {
    let compare = |what: &str, a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len(), "{what}: vocab sizes differ");
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        let (ta, tb) = (argmax(a), argmax(b));
        eprintln!("sanity {what}: argmax cmt {ta} candle {tb}, max |logit diff| {diff:.3e}");
        assert_eq!(ta, tb, "{what}: cmt and candle disagree on the next token");
    };
    let mut sess = m.session(1, PREFILL).expect("session");
    let a = cmt_forward(m, &mut sess, ids).to_vec();
    let mut cache = c.empty.clone();
    let b = candle_logits(&c.forward(&mut cache, ids, 0));
    compare("prefill 128", &a, &b);

    sess.reset(0);
    cmt_forward(m, &mut sess, &ids[..PROMPT]);
    let a = cmt_forward(m, &mut sess, &ids[PROMPT..PROMPT + 1]).to_vec();
    let mut cache = c.empty.clone();
    c.forward(&mut cache, &ids[..PROMPT], 0);
    let b = candle_logits(&c.forward(&mut cache, &ids[PROMPT..PROMPT + 1], PROMPT));
    compare("prompt 16 + 1 decode step", &a, &b);
}

fn bench(crit: &mut Criterion, m: &Model<CpuBackend>, c: &Candle, ids: &[u32]) {
    let prompt = &ids[..PROMPT];
    // Decode feeds a fixed token sequence, so both engines do identical work; the argmax
    // is still taken every step, as a greedy decoder would.
    let steps = &ids[PROMPT..PROMPT + DECODE];

    let mut g = crit.benchmark_group("prefill_128");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(PREFILL as u64));
    let mut sess = m.session(1, PREFILL).expect("session");
    g.bench_function(BenchmarkId::from_parameter("cmt"), |b| {
        b.iter(|| {
            sess.reset(0);
            black_box(argmax(cmt_forward(m, &mut sess, ids)))
        })
    });
    g.bench_function(BenchmarkId::from_parameter("candle"), |b| {
        b.iter(|| {
            let mut cache = c.empty.clone();
            black_box(argmax(&candle_logits(&c.forward(&mut cache, ids, 0))))
        })
    });
    g.finish();

    let mut g = crit.benchmark_group("decode_32_ctx16");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(DECODE as u64));
    let mut sess = m.session(1, PROMPT + DECODE).expect("session");
    g.bench_function(BenchmarkId::from_parameter("cmt"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                sess.reset(0);
                cmt_forward(m, &mut sess, prompt);
                let t0 = Instant::now();
                for tok in steps {
                    black_box(argmax(cmt_forward(m, &mut sess, std::slice::from_ref(tok))));
                }
                total += t0.elapsed();
            }
            total
        })
    });
    let mut prompted = c.empty.clone();
    c.forward(&mut prompted, prompt, 0);
    g.bench_function(BenchmarkId::from_parameter("candle"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Cloning shares the prompt's K/V tensors; candle's decode appends by
                // concatenating into new tensors, so `prompted` itself never changes.
                let mut cache = prompted.clone();
                let t0 = Instant::now();
                for (i, tok) in steps.iter().enumerate() {
                    let l = c.forward(&mut cache, std::slice::from_ref(tok), PROMPT + i);
                    black_box(argmax(&candle_logits(&l)));
                }
                total += t0.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn main() {
    // Before any thread pool exists. candle sizes its private rayon pool and its gemm calls
    // from RAYON_NUM_THREADS (else the physical core count) and its barrier pool from
    // CANDLE_NUM_THREADS (else the former); cmt uses the global rayon pool built below.
    // For one-row matmuls (decode) candle's gemm takes its gemv path, which is
    // single-threaded whatever the setting.
    std::env::set_var("RAYON_NUM_THREADS", THREADS.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", THREADS.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build_global()
        .expect("building the global rayon pool");
    assert_eq!(rayon::current_num_threads(), THREADS);
    assert_eq!(candle_core::utils::get_num_threads(), THREADS);

    let dir = model_dir();
    let (model, tok) =
        cmt_runtime::load_model(&dir, CpuBackend).expect("loading the model into cmt");
    let candle = Candle::load(&dir);
    eprintln!(
        "model {} ({} layers, hidden {}), f32; cmt on {}, candle on {} threads (avx {})",
        dir.display(),
        model.cfg.layers,
        model.cfg.hidden,
        model.backend.name(),
        candle_core::utils::get_num_threads(),
        candle_core::utils::with_avx(),
    );

    let mut ids = Vec::new();
    while ids.len() < PREFILL {
        ids.extend(tok.encode(TEXT, false).expect("tokenising"));
    }
    ids.truncate(PREFILL);
    sanity_check(&model, &candle, &ids);

    let mut crit = Criterion::default().configure_from_args();
    bench(&mut crit, &model, &candle, &ids);
    crit.final_summary();
}
