//! `train::train` on a tiny random model: steps lower the loss on a fixed batch, a run
//! stopped and resumed equals a straight run bit for bit (optimizer state, queue, data
//! position, cache), and a damaged or mismatched training state is refused.
mod common;
use cmt_core::checkpoint;
use cmt_core::data::{Dataset, Document, Question};
use cmt_core::model::{BaseLm, CmtModel};
use cmt_core::train::state::state_path;
use cmt_core::train::{self, Ended, RunOptions, StepLog, TermsConf, TrainEvent, Trajectory};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn dataset(n: usize) -> Dataset {
    let facts = [
        (
            "Quillby",
            "The Zorblat festival of Quillby is held every March.",
            "March",
        ),
        (
            "Veltronic",
            "Veltronic launched the Moonfish phone in 2020.",
            "2020",
        ),
        (
            "Harrowgate",
            "Harrowgate bridge was rebuilt in 2019 after the flood.",
            "2019",
        ),
        (
            "mayor",
            "The mayor of Quillby is Odessa Flint.",
            "Odessa Flint",
        ),
        (
            "river",
            "Quillby's river is called the Mirrow.",
            "the Mirrow",
        ),
    ];
    let mut d = Dataset::default();
    for (i, (topic, text, answer)) in facts.iter().take(n).enumerate() {
        d.documents.push(Document::new(format!("d{i}"), *text));
        for j in 0..2 {
            d.questions.push(Question {
                id: format!("q{i}.{j}"),
                question: format!("What about {topic}, part {j}?"),
                answers: vec![answer.to_string()],
                doc_id: format!("d{i}"),
                timestamp: None,
            });
        }
    }
    d
}

fn traj(steps: u64, batch_docs: usize, queue: usize) -> Trajectory {
    Trajectory {
        steps,
        batch_docs,
        questions_per_doc: 1,
        accum: 2,
        queue,
        lr: 3e-3,
        warmup: 2,
        min_lr: 1e-4,
        clip: 1.0,
        weight_decay: 0.01,
        terms: TermsConf {
            lambda_rec: 0.5,
            lambda_match: 0.5,
        },
        rec_tokens: 24,
        pretrain_steps: 1,
        seed: 9,
    }
}

fn run_opts(out: &Path, cache: &Path, stop_at: Option<u64>, resume: bool) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        save_every: 0,
        eval_every: 0,
        eval_docs: 0,
        stop_at,
        cache: Some(cache.to_path_buf()),
        resume,
        command: "test".into(),
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let model = common::write_tiny_model(&root, 16, 4);
    Setup {
        _dir: dir,
        root,
        model,
    }
}

/// A fresh model with an untrained checkpoint written to `out`.
fn fresh(s: &Setup, out: &Path) -> CmtModel {
    let base = BaseLm::load(&s.model).unwrap();
    let cfg = common::tiny_cmt_config(16);
    cmt_core::init_checkpoint(&base, &cfg, "plain", 3, "test", out).unwrap();
    CmtModel::new(base, checkpoint::load(out).unwrap()).unwrap()
}

fn run(
    model: &mut CmtModel,
    data: &Dataset,
    t: &Trajectory,
    o: &RunOptions,
) -> cmt_core::Result<(Ended, Vec<StepLog>)> {
    let mut logs = Vec::new();
    let never = AtomicBool::new(false);
    let ended = train::train(model, data, None, t, o, &never, |e| {
        if let TrainEvent::Step(l) = e {
            logs.push(l.clone());
        }
    })?;
    Ok((ended, logs))
}

fn tensors(p: &cmt_core::params::CmtParams) -> Vec<Vec<f32>> {
    p.tensors().into_iter().map(|(_, t)| t.to_vec()).collect()
}

#[test]
fn steps_lower_the_loss_on_a_fixed_batch() {
    let s = setup();
    let out = s.root.join("fixed.safetensors");
    let mut model = fresh(&s, &out);
    // Two documents in batches of two, one question each, no queue and no pretraining:
    // every step sees the same documents (the question subset and windows vary little).
    let mut t = traj(80, 2, 0);
    t.lr = 2e-2;
    t.min_lr = 1e-3;
    t.accum = 1;
    t.pretrain_steps = 0;
    t.questions_per_doc = 2;
    t.rec_tokens = 1000;
    let data = dataset(2);
    let (ended, logs) = run(
        &mut model,
        &data,
        &t,
        &run_opts(&out, &s.root.join("c"), None, false),
    )
    .unwrap();
    assert_eq!(ended, Ended::Finished);
    assert_eq!(logs.len(), 80);
    let first = logs[0].loss;
    let last = logs[79].loss;
    assert!(logs
        .iter()
        .all(|l| l.loss.is_finite() && l.qa > 0.0 && l.rec > 0.0));
    assert!(last < 0.75 * first, "loss {first} → {last}");
    // Each term falls: the answers, the reconstruction and the matching.
    let (a, z) = (&logs[0], &logs[79]);
    assert!(z.qa < 0.85 * a.qa, "L_qa {} → {}", a.qa, z.qa);
    assert!(z.rec < 0.95 * a.rec, "L_rec {} → {}", a.rec, z.rec);
    assert!(
        z.matching < 0.01 && a.matching > 0.3,
        "L_match {} → {}",
        a.matching,
        z.matching
    );
    // The written checkpoint is the trained one.
    let back = checkpoint::load(&out).unwrap();
    assert_eq!(tensors(&back.params), tensors(model.params()));
    assert_eq!(back.meta.extra["train_step"], 80);
}

#[test]
fn a_resumed_run_equals_a_straight_one_bit_for_bit() {
    let s = setup();
    let data = dataset(5);
    // 5 documents in batches of 2: batches straddle epochs, the queue fills and drops.
    let t = traj(6, 2, 3);
    let a = s.root.join("a.safetensors");
    let mut ma = fresh(&s, &a);
    let (ea, la) = run(
        &mut ma,
        &data,
        &t,
        &run_opts(&a, &s.root.join("ca"), None, false),
    )
    .unwrap();
    assert_eq!(ea, Ended::Finished);

    let b = s.root.join("b.safetensors");
    let mut mb = fresh(&s, &b);
    let cb = s.root.join("cb");
    let (eb, lb1) = run(&mut mb, &data, &t, &run_opts(&b, &cb, Some(3), false)).unwrap();
    assert_eq!(eb, Ended::Stopped(3));
    assert_eq!(lb1.len(), 3);
    // A new process: a fresh model object, everything else read back from disk.
    let mut mb2 = fresh(&s, &s.root.join("scratch.safetensors"));
    let (eb2, lb2) = run(&mut mb2, &data, &t, &run_opts(&b, &cb, None, true)).unwrap();
    assert_eq!(eb2, Ended::Finished);
    assert_eq!(lb2.len(), 3);
    assert!(lb2[0].cache_hits > 0, "the resumed run read the cache");
    assert_eq!(tensors(mb2.params()), tensors(ma.params()));
    let losses = |l: &[StepLog]| l.iter().map(|x| x.loss).collect::<Vec<_>>();
    assert_eq!(losses(&[lb1, lb2].concat()), losses(&la));
    let (ca, cb) = (checkpoint::load(&a).unwrap(), checkpoint::load(&b).unwrap());
    assert_eq!(tensors(&ca.params), tensors(&cb.params));
}

#[test]
fn a_damaged_or_mismatched_state_is_refused() {
    let s = setup();
    let data = dataset(3);
    let t = traj(4, 2, 2);
    let out = s.root.join("m.safetensors");
    let cache = s.root.join("c");
    let mut m = fresh(&s, &out);
    run(&mut m, &data, &t, &run_opts(&out, &cache, Some(2), false)).unwrap();
    let err = |t: &Trajectory, data: &Dataset| {
        let mut m = fresh(&s, &s.root.join("scratch.safetensors"));
        match run(&mut m, data, t, &run_opts(&out, &cache, None, true)) {
            Ok(_) => panic!("resume was accepted"),
            Err(e) => e.to_string(),
        }
    };
    // Other settings.
    let mut other = t.clone();
    other.lr = 1e-2;
    let e = err(&other, &data);
    assert!(
        e.contains("other settings") && e.contains("m.safetensors.state"),
        "{e}"
    );
    // Other data.
    let e = err(&t, &dataset(2));
    assert!(e.contains("training documents"), "{e}");
    // A truncated state file.
    let sp = state_path(&out);
    let bytes = std::fs::read(&sp).unwrap();
    std::fs::write(&sp, &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&t, &data);
    assert!(e.contains("m.safetensors.state"), "{e}");
    // A state of another step than its checkpoint (a crash between the two writes).
    std::fs::write(&sp, &bytes).unwrap();
    let mut later = fresh(&s, &s.root.join("scratch.safetensors"));
    let o3 = run_opts(&s.root.join("n.safetensors"), &cache, Some(3), false);
    run(&mut later, &data, &t, &o3).unwrap();
    std::fs::copy(s.root.join("n.safetensors"), &out).unwrap();
    let e = err(&t, &data);
    assert!(e.contains("not written together"), "{e}");
    // A damaged checkpoint.
    std::fs::write(&out, b"not a checkpoint").unwrap();
    let e = err(&t, &data);
    assert!(e.contains("m.safetensors"), "{e}");
}
