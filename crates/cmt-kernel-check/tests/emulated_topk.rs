//! kernels/topk_aggregate.cu on the CPU emulator against the brute-force reference
//! (`cmt_memory::topk::slow`), on proptest banks: exact ties, deleted rows, k above the live
//! count, an all-deleted bank, several scan blocks and several tiles per block, sizes that
//! are not multiples of the block, more than one group of 32 questions, f32 and bf16 keys
//! and memories, poisoned outputs with guard zones.
use cmt_kernel_check::cases::topk::{gpu_suite_n, print_report, topk_aggregate, Spec};
use cmt_kernel_check::emu::Emu;
use cmt_runtime::cuda::DType;
use proptest::prelude::*;

fn check(s: &Spec) -> Result<(), TestCaseError> {
    let outs = topk_aggregate(&Emu, s).map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
    for o in outs {
        o.check().map_err(TestCaseError::fail)?;
    }
    Ok(())
}

fn dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::Bf16)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, failure_persistence: None, ..ProptestConfig::default() })]

    /// Small banks: one to a few blocks, any k, ties and deletes.
    #[test]
    fn small_banks(
        n in 1usize..700, r in 1usize..20, nq in 1usize..6, k in 1usize..=64, td in 1usize..40,
        key_dt in dtype(), mem_dt in dtype(), ties: bool, del in 0usize..3, seed: u64,
    ) {
        let deleted = [0.0, 0.3, 0.9][del];
        check(&Spec { n, r, nq, k, td, key_dt, mem_dt, deleted, ties, tiles_per_block: None, seed })?;
    }

    /// Several tiles per block (the production split only does that past 262,144 rows),
    /// key widths past the 128 dimensions staged at a time, and two question groups.
    #[test]
    fn tiles_wide_keys_and_question_groups(
        n in 200usize..1400, r in prop_oneof![Just(4usize), 120usize..140], nq in prop_oneof![1usize..4, 30usize..40],
        k in 1usize..=20, tiles in 1usize..4, key_dt in dtype(), ties: bool, seed: u64,
    ) {
        check(&Spec { n, r, nq, k, td: 8, key_dt, mem_dt: DType::Bf16, deleted: 0.2, ties, tiles_per_block: Some(tiles), seed })?;
    }
}

#[test]
fn k_above_live_count_and_empty_bank() {
    for (n, deleted, k) in [(40, 0.9, 64), (300, 1.0, 5), (1, 0.0, 3), (257, 0.99, 16)] {
        for key_dt in DType::ALL {
            let s = Spec {
                n,
                r: 7,
                nq: 3,
                k,
                td: 5,
                key_dt,
                mem_dt: DType::F32,
                deleted,
                ties: false,
                tiles_per_block: Some(1),
                seed: n as u64,
            };
            check(&s).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Hundreds of rows per score (keys from 5 values, r = 1 and 3): among equal scores the
/// lower ids must win, in every block and in the combine.
#[test]
fn massive_ties() {
    let s = Spec {
        n: 900,
        r: 3,
        nq: 2,
        k: 64,
        td: 3,
        key_dt: DType::Bf16,
        mem_dt: DType::Bf16,
        deleted: 0.5,
        ties: true,
        tiles_per_block: Some(2),
        seed: 7,
    };
    check(&s).unwrap_or_else(|e| panic!("{e}"));
    check(&Spec { r: 1, ..s }).unwrap_or_else(|e| panic!("{e}"));
}

/// The gpu-check suite (r = 128, 1 and 32 questions, k = 16, T·D = 9216 bf16 memories, f32
/// and bf16 keys) on a bank small enough to emulate, through the same report.
#[test]
fn gpu_suite_on_a_small_bank() {
    let outs = gpu_suite_n(&Emu, 600).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outs.len(), 8);
    assert_eq!(print_report(&outs), 0, "a case failed");
}
