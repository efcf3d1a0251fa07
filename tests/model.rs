//! Model tests (DESIGN.md §8): random sequences of faults, stores through mappings,
//! flushes with random flags, truncates, buffered and direct I/O and device faults,
//! checked after every step against a byte-vector model of the file
//! (`genpager::testing::model`, shared with the fuzz target in `fuzz/`).
//!
//! 256 cases per property by default (1 under Miri); `PROPTEST_CASES` overrides. A failure shrinks to
//! a short sequence and is recorded under `proptest-regressions/model.txt`, which is
//! replayed first on every run.

use genpager::testing::Layout;
use genpager::testing::model::{self, DiskMode, Op, ReadMode, Setup};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError};

fn cases() -> u32 {
    // Under Miri (isolated: no environment, no files) a reduced suite.
    let default = if cfg!(miri) { 1 } else { 256 };
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

fn config() -> Config {
    Config {
        cases: cases(),
        max_shrink_iters: if cfg!(miri) { 0 } else { 4096 },
        failure_persistence: if cfg!(miri) {
            None
        } else {
            Some(Box::new(FileFailurePersistence::Direct(
                "proptest-regressions/model.txt",
            )))
        },
        ..Config::default()
    }
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        2 => Just(Layout::Contiguous),
        1 => (1u64..4).prop_map(|run| Layout::Fragmented { run }),
        1 => Just(Layout::Reversed),
    ]
}

fn setup(compat: impl Strategy<Value = bool>) -> impl Strategy<Value = Setup> {
    (
        9u32..=16,
        layout(),
        // Under Miri, small files: the checker compares every byte after every step.
        0..=if cfg!(miri) {
            8 * 4096
        } else {
            model::MAX_SIZE
        },
        prop::collection::vec(0u64..64, 0..3),
        any::<u64>(),
        prop_oneof![
            4 => Just(DiskMode::Inline),
            1 => Just(DiskMode::Threaded),
            1 => Just(DiskMode::Reordered),
        ],
        1u8..=16,
        compat,
        any::<u8>(),
    )
        .prop_map(
            |(
                fs_bshift,
                layout,
                size,
                holes,
                spare_blocks,
                disk,
                max_transfer_pages,
                compat,
                seed,
            )| Setup {
                fs_bshift,
                layout,
                size,
                holes,
                spare_blocks,
                disk,
                max_transfer_pages,
                compat,
                seed,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let read_mode = prop_oneof![
        Just(ReadMode::Locked),
        Just(ReadMode::Sync),
        Just(ReadMode::Async)
    ];
    prop_oneof![
        3 => (any::<u16>(), any::<u8>(), any::<u8>(), read_mode)
            .prop_map(|(page, count, center, mode)| Op::ReadFault { page, count, center, mode }),
        3 => (any::<u16>(), any::<u8>(), any::<bool>(), prop::bool::weighted(0.2), any::<u16>(), any::<u16>(), any::<u8>())
            .prop_map(|(page, count, overwrite, locked, at, len, seed)| Op::WriteFault {
                page, count, overwrite, locked, at, len, seed,
            }),
        2 => (any::<u16>(), any::<u16>(), any::<u16>(), any::<u8>())
            .prop_map(|(page, at, len, seed)| Op::MapStore { page, at, len, seed }),
        1 => Just(Op::Unmap),
        5 => (any::<u16>(), any::<u8>(), 1u8..32)
            .prop_map(|(start, len, flags)| Op::Put { start, len, flags }),
        2 => any::<u32>().prop_map(|size| Op::SetSize { size }),
        4 => (any::<u32>(), any::<u32>(), any::<u8>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        2 => (any::<u32>(), any::<u32>()).prop_map(|(offset, len)| Op::Read { offset, len }),
        3 => (any::<u32>(), any::<u8>(), any::<bool>(), prop::bool::weighted(0.15), any::<u8>())
            .prop_map(|(offset, sectors, write, misalign, seed)| Op::Direct {
                offset, sectors, write, misalign, seed,
            }),
        2 => any::<u8>().prop_map(|n| Op::FailNth { n }),
        1 => (any::<u16>(), any::<u8>()).prop_map(|(lbn, count)| Op::FailBlocks { lbn, count }),
        2 => Just(Op::ClearFaults),
        1 => prop::option::weighted(0.7, any::<u8>()).prop_map(|extra| Op::CacheLimit { extra }),
    ]
}

/// Operations per case (fewer under Miri).
const MAX_OPS: usize = if cfg!(miri) { 10 } else { 40 };

fn check(setup: &Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    model::run(setup, ops)
        .map(drop)
        .map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(config())]

    /// Files on a block map (MemFs over MemDisk), every operation.
    #[test]
    fn block_files_match_the_model(setup in setup(Just(false)), ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        check(&setup, &ops)?;
    }

    /// Files served through `ByteIo` and the compat pager (no direct I/O there).
    #[test]
    fn compat_files_match_the_model(setup in setup(Just(true)), ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        check(&setup, &ops)?;
    }
}

/// The fuzz target's decoder yields valid runs for any input (a smoke test that keeps
/// it compiling and in step with the model).
#[test]
fn fuzz_decoder_runs_arbitrary_bytes() {
    for seed in 0u8..if cfg!(miri) { 1 } else { 16 } {
        let bytes: Vec<u8> = (0..if cfg!(miri) { 40u32 } else { 200 })
            .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
            .collect();
        let (setup, ops) = model::decode(&bytes);
        if let Err(e) = model::run(&setup, &ops) {
            panic!("seed {seed}: {e}");
        }
    }
}
