//! Every kernel of kernels/*.cu, compiled as host C++ and run on the CPU emulator, against
//! the CPU references, on proptest shapes: sizes that are not multiples of the block or the
//! warp, poisoned outputs with guard zones. Small shapes: the emulator runs one OS thread
//! per CUDA thread.
use cmt_kernel_check::{cases, emu, emu::Emu, CheckError, Exec};
use cmt_runtime::cuda::{CudaError, DType, Launch};
use proptest::prelude::*;

fn assert_ok(r: Result<cases::Outcome, CheckError>) -> Result<(), TestCaseError> {
    let o = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
    o.check().map_err(TestCaseError::fail)?;
    Ok(())
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::Bf16)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn embedding(dt in dtype(), n in 1usize..20, d in 1usize..70, vocab in 1usize..40, seed: u64) {
        assert_ok(cases::embedding(&Emu, dt, n, d, vocab, seed))?;
    }

    #[test]
    fn rmsnorm(dt in dtype(), rows in 1usize..20, d in 1usize..150, seed: u64) {
        for o in cases::rmsnorm(&Emu, dt, rows, d, seed).map_err(|e| TestCaseError::fail(e.to_string()))? {
            assert_ok(Ok(o))?;
        }
    }

    #[test]
    fn rope(dt in dtype(), rows in 1usize..12, heads in 1usize..4, half in 1usize..20, bwd: bool, seed: u64) {
        assert_ok(cases::rope(&Emu, dt, rows, heads, 2 * half, bwd, seed))?;
    }

    #[test]
    fn swiglu(dt in dtype(), n in 1usize..1200, seed: u64) {
        for o in cases::swiglu(&Emu, dt, n, seed).map_err(|e| TestCaseError::fail(e.to_string()))? {
            assert_ok(Ok(o))?;
        }
    }

    #[test]
    fn residual(dt in dtype(), n in 1usize..1200, seed: u64) {
        assert_ok(cases::residual(&Emu, dt, n, seed))?;
    }

    #[test]
    fn cross_entropy(dt in dtype(), rows in 1usize..6, vocab in 1usize..1100, seed: u64) {
        assert_ok(cases::cross_entropy(&Emu, dt, rows, vocab, seed))?;
    }
}

/// Runs launches with at most `max_grid` blocks: the grid-stride kernels must still cover
/// every element (on a GPU the grid is capped at 65 535 blocks, too big to emulate).
struct CappedGrid(u32);

impl Exec for CappedGrid {
    type Buf = <Emu as Exec>::Buf;
    fn alloc(&self, bytes: usize) -> Result<Self::Buf, CudaError> {
        Emu.alloc(bytes)
    }
    fn upload(&self, bytes: &[u8]) -> Result<Self::Buf, CudaError> {
        Emu.upload(bytes)
    }
    fn download(&self, buf: &Self::Buf) -> Result<Vec<u8>, CudaError> {
        Emu.download(buf)
    }
    fn bytes(&self, buf: &Self::Buf) -> usize {
        Emu.bytes(buf)
    }
    fn read(&self, buf: &Self::Buf, offset: usize, out: &mut [u8]) -> Result<(), CudaError> {
        Emu.read(buf, offset, out)
    }
    fn write(&self, buf: &mut Self::Buf, offset: usize, data: &[u8]) -> Result<(), CudaError> {
        Emu.write(buf, offset, data)
    }
    fn ptr(&self, buf: &Self::Buf) -> u64 {
        Emu.ptr(buf)
    }
    unsafe fn launch(&self, l: &Launch) -> Result<(), CudaError> {
        let mut l = l.clone();
        l.grid[0] = l.grid[0].min(self.0);
        // SAFETY: same buffers and shapes as the caller's launch; only fewer blocks.
        unsafe { Emu.launch(&l) }
    }
}

#[test]
fn grid_stride_kernels_cover_more_than_their_grid() {
    let g = CappedGrid(2);
    for dt in DType::ALL {
        let mut outs = vec![
            cases::residual(&g, dt, 5000, 1).expect("runs"),
            cases::embedding(&g, dt, 30, 70, 9, 2).expect("runs"),
            cases::rope(&g, dt, 9, 3, 40, false, 3).expect("runs"),
        ];
        outs.extend(cases::swiglu(&g, dt, 3000, 4).expect("runs"));
        for o in outs {
            assert!(
                o.failures.is_empty(),
                "{} {}: {:?}",
                o.kernel,
                o.shape,
                o.failures
            );
        }
    }
}

/// Every entry point in the committed PTX has an emulated twin, and the runtime embeds
/// every module of the manifest.
#[test]
fn emulator_covers_every_ptx_entry() {
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../kernels/ptx/manifest.json"
    ))
    .expect("kernels/ptx/manifest.json");
    let names = emu::kernel_names();
    let mut modules = 0;
    for (module, ptx) in cmt_runtime::cuda::ptx::MODULES {
        assert!(
            manifest.contains(&format!("\"{module}\": {{")),
            "module {module} not in the manifest"
        );
        modules += 1;
        for entry in ptx
            .lines()
            .filter_map(|l| l.trim().strip_prefix(".visible .entry "))
        {
            let entry = entry.split('(').next().unwrap_or(entry);
            assert!(names.iter().any(|n| n == entry), "{entry} is not emulated");
        }
    }
    assert_eq!(
        modules,
        manifest.matches("\"ptx\":").count(),
        "embedded modules differ from the manifest"
    );
    eprintln!(
        "{} emulated kernels, real cuda_bf16.h: {}",
        names.len(),
        emu::REAL_HEADERS
    );
}
