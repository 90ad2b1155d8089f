//! ingest → bank → ask with θ and the bank search on the device backend (every op a kernel of
//! kernels/*.cu, run by the CPU emulator) gives the answers and memories of the same model on
//! the CPU backend: the CMT inference commands run θ and the search on `--device cuda` through
//! this path.
mod common;
use cmt_core::model::BaseLm;
use cmt_core::{AskOptions, Cmt, Document, IngestOptions};
use cmt_kernel_check::emu::Emu;
use cmt_runtime::backend::DeviceBackend;
use cmt_runtime::WeightFormat;

fn docs() -> Vec<Document> {
    [
        "The Zorblat festival of Quillby is held every March.",
        "Veltronic launched the Moonfish phone in 2020.",
        "Harrowgate bridge was rebuilt in 2019 after the flood.",
        "The mayor of Quillby is Odessa Flint.",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| Document::new(format!("doc{i}"), *t))
    .collect()
}

#[test]
fn ingest_and_ask_with_theta_on_the_emulated_device_match_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::write_tiny_model(dir.path(), 16, 7);
    let ckpt = dir.path().join("ckpt.safetensors");
    let base = BaseLm::load(&model).unwrap();
    cmt_core::init_checkpoint(
        &base,
        &common::tiny_cmt_config(16),
        "plain",
        3,
        "test",
        &ckpt,
    )
    .unwrap();
    let questions: Vec<String> = ["Who is the mayor of Quillby?", "What did Veltronic launch?"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let opts = AskOptions {
        max_new_tokens: 5,
        ..Default::default()
    };

    let cpu = Cmt::open(&model, &ckpt).unwrap();
    let mut cpu_bank = cpu.open_bank_writer(&dir.path().join("cpu")).unwrap();
    cpu.ingest(&mut cpu_bank, &docs(), &IngestOptions::default(), |_| {})
        .unwrap();
    let want = cpu.ask(Some(&cpu_bank), &questions, &opts).unwrap();

    let be = DeviceBackend::new(Emu, "emulated device");
    let dev = Cmt::open_on(&model, &ckpt, be, WeightFormat::F32).unwrap();
    let mut dev_bank = dev.open_bank_writer(&dir.path().join("dev")).unwrap();
    let rep = dev
        .ingest(&mut dev_bank, &docs(), &IngestOptions::default(), |_| {})
        .unwrap();
    assert_eq!(rep.added, 4);
    let got = dev.ask(Some(&dev_bank), &questions, &opts).unwrap();

    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.answer, w.answer, "{}", w.question);
        let ids =
            |a: &cmt_core::ask::Answer| a.memories.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(g), ids(w), "{}: memories used", w.question);
        for (mg, mw) in g.memories.iter().zip(&w.memories) {
            assert!(
                (mg.weight - mw.weight).abs() <= 1e-4 && (mg.score - mw.score).abs() <= 1e-3,
                "{}: {} weight {} vs {}, score {} vs {}",
                w.question,
                mw.id,
                mg.weight,
                mw.weight,
                mg.score,
                mw.score
            );
        }
    }
}
