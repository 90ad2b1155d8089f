//! The transformer's matmul, kv_write and attention kernels (kernels/matmul.cu,
//! kernels/attention.cu) on the CPU emulator against their references, on proptest shapes:
//! tile and warp edges, k not a multiple of 4 (the scalar-load kernels) and of 16, GQA groups,
//! head sizes below and above a warp, sequences at cache positions > 0 (a prefix or earlier
//! tokens), split and unsplit attention.
use cmt_kernel_check::cases::transformer::{self, dense, Batch};
use cmt_kernel_check::{cases, emu::Emu, CheckError};
use cmt_runtime::cuda::launch::transformer::{
    attention_splits, MatmulKernel, WeightType, GEMV_MAX_M,
};
use cmt_runtime::cuda::DType;
use proptest::prelude::*;

fn assert_ok(r: Result<cases::Outcome, CheckError>) -> Result<(), TestCaseError> {
    let o = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
    o.check().map_err(TestCaseError::fail)?;
    Ok(())
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::Bf16)]
}

fn block_type() -> impl Strategy<Value = WeightType> {
    prop_oneof![
        Just(WeightType::Q8_0),
        Just(WeightType::Q4_0),
        Just(WeightType::Q4_1)
    ]
}

/// (heads, kv_heads, head_dim, capacity, slots, [(slot, pos, rows)]).
fn batch() -> impl Strategy<Value = Batch> {
    (1usize..4, 1usize..4, 1usize..80, 1usize..5).prop_flat_map(|(kvh, group, hd, n_seq)| {
        let slots = n_seq + 1;
        (
            Just((kvh, group, hd, slots)),
            prop::collection::vec((0usize..30, 1usize..7), n_seq),
            Just(n_seq),
            any::<u64>(),
        )
            .prop_map(|((kvh, group, hd, slots), seqs, n_seq, shuffle)| {
                let capacity = seqs.iter().map(|&(p, r)| p + r).max().unwrap_or(1);
                // Distinct slots in a shuffled order, one left unused.
                let mut order: Vec<usize> = (0..slots).collect();
                order.rotate_left((shuffle % slots as u64) as usize);
                let seqs: Vec<(usize, usize, usize)> = seqs
                    .iter()
                    .zip(&order[..n_seq])
                    .map(|(&(p, r), &s)| (s, p, r))
                    .collect();
                Batch::new(kvh * group, kvh, hd, capacity, slots, &seqs)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn matmul_tiled(dt in dtype(), m in 1usize..140, n in 1usize..140, k in 1usize..70, bias: bool, seed: u64) {
        assert_ok(transformer::matmul(&Emu, dense(dt), MatmulKernel::Tiled, m, n, k, bias, seed))?;
    }

    #[test]
    fn matmul_gemv(dt in dtype(), m in 1usize..=GEMV_MAX_M, n in 1usize..40, k in 1usize..300, bias: bool, seed: u64) {
        assert_ok(transformer::matmul(&Emu, dense(dt), MatmulKernel::Gemv, m, n, k, bias, seed))?;
    }

    /// The tensor-core kernel (bf16 weights) through the emulator's model of mma.sync's
    /// fragment layout: ragged m, n, k around the 64×64×32 tile.
    #[test]
    fn matmul_tensor_core(m in 1usize..140, n in 1usize..140, k in 1usize..80, bias: bool, seed: u64) {
        assert_ok(transformer::matmul(&Emu, WeightType::Bf16, MatmulKernel::TensorCore, m, n, k, bias, seed))?;
    }

    /// GGUF blocks read in place (`--weights native` on the device), both kernels, k a whole
    /// number of 32-element blocks.
    #[test]
    fn matmul_blocks(wt in block_type(), m in 1usize..80, n in 1usize..80, kb in 1usize..4, bias: bool, seed: u64) {
        let kernel = if m <= GEMV_MAX_M { MatmulKernel::Gemv } else { MatmulKernel::Tiled };
        assert_ok(transformer::matmul(&Emu, wt, kernel, m, n, 32 * kb, bias, seed))?;
        assert_ok(transformer::matmul(&Emu, wt, MatmulKernel::Tiled, m, n, 32 * kb, bias, seed))?;
    }

    #[test]
    fn embedding_blocks(wt in block_type(), n in 1usize..12, db in 1usize..4, vocab in 1usize..20, seed: u64) {
        assert_ok(transformer::embedding_blocks(&Emu, wt, n, 32 * db, vocab, seed))?;
    }

    /// k % 4 == 0: the 4-wide-load kernels.
    #[test]
    fn matmul_vector_loads(dt in dtype(), m in 1usize..80, n in 1usize..80, k4 in 1usize..40, bias: bool, seed: u64) {
        let kernel = if m <= GEMV_MAX_M { MatmulKernel::Gemv } else { MatmulKernel::Tiled };
        assert_ok(transformer::matmul(&Emu, dense(dt), kernel, m, n, 4 * k4, bias, seed))?;
        assert_ok(transformer::matmul(&Emu, dense(dt), MatmulKernel::Tiled, m, n, 4 * k4, bias, seed))?;
    }

    #[test]
    fn kv_write(dt in dtype(), bt in batch(), seed: u64) {
        assert_ok(transformer::kv_write(&Emu, dt, &bt, seed))?;
    }

    /// The prefix path's gradient: dq written, dk/dv accumulated over rows and GQA heads.
    #[test]
    fn attention_backward(dt in dtype(), bt in batch(), seed: u64) {
        assert_ok(transformer::attention_backward(&Emu, dt, &bt, seed))?;
    }

    #[test]
    fn attention(dt in dtype(), bt in batch(), splits in 1usize..6, seed: u64) {
        assert_ok(transformer::attention(&Emu, dt, &bt, splits, seed))?;
    }
}

/// The split count the backend picks for decode (one row per sequence, long caches) and the
/// unsplit prefill path give the same answer as the CPU.
#[test]
fn attention_with_the_backends_split_choice() {
    let bt = Batch::new(4, 2, 64, 300, 3, &[(2, 290, 1), (0, 17, 1)]);
    let splits = attention_splits(bt.rows(), 4, 291);
    assert!(
        splits > 1,
        "decode over 291 positions should split, got {splits}"
    );
    for dt in DType::ALL {
        for s in [1, splits] {
            let o = transformer::attention(&Emu, dt, &bt, s, 7).expect("runs");
            assert!(o.passed(), "{} {}: {:?}", o.kernel, o.shape, o.failures);
        }
    }
}
