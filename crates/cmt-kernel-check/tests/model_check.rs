//! The golden bars gpu-check applies on a GPU, applied here to the CPU backend: with a
//! backend that matches HF they pass (f32; bf16 but for the logit bound, see below), so a
//! failure on the GPU is the GPU's.
//! Skips when `../shared` or the default model is absent (CI has both).
use cmt_kernel_check::model_check::{golden, Fixtures};
use cmt_runtime::{CpuBackend, WeightFormat};
use std::path::PathBuf;

fn fixtures() -> Option<Fixtures> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/smollm2-135m");
    Fixtures::load(&d).ok()
}

#[test]
fn golden_bars_on_the_cpu_backend_in_f32_and_bf16() {
    let Some(fx) = fixtures() else {
        eprintln!("SKIPPED: ../shared fixtures not available");
        return;
    };
    let path = match cmt_runtime::fetch::fetch_default_model(&mut |l| eprintln!("{l}")) {
        Ok(p) => p,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: default model: {e}");
            return;
        }
        Err(e) => panic!("CI: the default model could not be fetched: {e}"),
    };
    for wf in [WeightFormat::F32, WeightFormat::Bf16] {
        let (m, _) = cmt_runtime::load_model_as(&path, CpuBackend, wf).expect("loads");
        for l in golden(&m, &fx, wf).expect("fixtures read") {
            eprintln!("{} = {:.3e} (bound {:.1e})", l.what, l.value, l.bound);
            // bf16 weights miss issue 14's logit bar (5e-2) by themselves: rounding the
            // default model's weights to bf16 moves its logits by 0.153–0.160 on this CPU
            // backend (f32 math), so the GPU cannot meet it in bf16 either; gpu-check reports
            // that line as failed. Every other bar must hold here.
            let bf16_logits = wf == WeightFormat::Bf16 && l.what.contains("logit");
            assert!(
                l.passed || bf16_logits,
                "{}: {} against {}",
                l.what,
                l.value,
                l.bound
            );
        }
    }
}
