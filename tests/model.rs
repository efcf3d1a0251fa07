//! Model tests (DESIGN.md §8): random sequences of faults, stores through mappings,
//! flushes with random flags, truncates, buffered and direct I/O and device faults,
//! checked after every step against a byte-vector model of the file
//! (`genpager::testing::model`, shared with the fuzz target in `fuzz/`).
//!
//! 256 cases per property by default (1 under Miri); `PROPTEST_CASES` overrides. A failure shrinks to
//! a short sequence and is recorded under `proptest-regressions/model.txt`, which is
//! replayed first on every run.

use genpager::testing::Layout;
use genpager::testing::model::{self, DiskMode, Op, ReadMode, Setup, WriteMode};
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

/// Sizes: anywhere, or within a few bytes of a sector boundary (not a multiple of it
/// but for a few).
fn size(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0..=max,
        1 => (0..=max / 512, -3i64..=3).prop_map(move |(sectors, skew)| {
            (sectors * 512).saturating_add_signed(skew).min(max)
        }),
    ]
}

/// What largest size (the block map's `max_size`) the file gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Largest {
    /// The default ([`genpager::MAX_FILE_SIZE`]), or sometimes (block files) one
    /// aligned to 64 KiB (every block size) near the file, or the file in the last
    /// bytes below the default.
    Aligned,
    /// Any size near the file, never aligned to 64 KiB.
    Unaligned,
}

fn setup(compat: bool, largest: Largest) -> impl Strategy<Value = Setup> {
    let block = !compat && largest == Largest::Aligned;
    let max_size = match largest {
        Largest::Aligned if block => {
            prop::option::weighted(0.15, any::<u32>().prop_map(|m| m & !0xffff)).boxed()
        }
        Largest::Aligned => Just(None).boxed(),
        Largest::Unaligned => any::<u32>()
            .prop_map(|m| Some(if m % 0x10000 == 0 { m | 0x200 } else { m }))
            .boxed(),
    };
    (
        (
            9u32..=16,
            layout(),
            // Under Miri, small files: the checker compares every byte after every step.
            size(if cfg!(miri) {
                8 * genpager::PAGE_SIZE as u64
            } else {
                model::MAX_SIZE
            }),
            prop::collection::vec(0u64..64, 0..6),
        ),
        any::<u64>(),
        prop_oneof![
            4 => Just(DiskMode::Inline),
            1 => Just(DiskMode::Threaded),
            1 => Just(DiskMode::Reordered),
        ],
        1u8..=16,
        any::<u8>(),
        (
            any::<bool>(),
            if block {
                prop::bool::weighted(0.15).boxed()
            } else {
                Just(false).boxed()
            },
            max_size,
            if block {
                prop::bool::weighted(0.25).boxed()
            } else {
                Just(false).boxed()
            },
        ),
    )
        .prop_map(
            move |(
                (fs_bshift, layout, size, holes),
                spare_blocks,
                disk,
                max_transfer_pages,
                seed,
                (journal, high, max_size, dirty_limits),
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
                journal,
                high,
                max_size,
                dirty_limits,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    let read_mode = prop_oneof![
        Just(ReadMode::Locked),
        Just(ReadMode::Sync),
        Just(ReadMode::Async)
    ];
    let write_mode = prop_oneof![
        6 => Just(WriteMode::Sync),
        2 => Just(WriteMode::Overwrite),
        2 => Just(WriteMode::NoBlockAlloc),
        2 => Just(WriteMode::Locked),
        1 => Just(WriteMode::Async),
    ];
    prop_oneof![
        3 => (any::<u16>(), any::<u8>(), any::<u8>(), read_mode)
            .prop_map(|(page, count, center, mode)| Op::ReadFault { page, count, center, mode }),
        4 => (any::<u16>(), any::<u8>(), write_mode, any::<u16>(), any::<u16>(), any::<u8>())
            .prop_map(|(page, count, mode, at, len, seed)| Op::WriteFault {
                page, count, mode, at, len, seed,
            }),
        2 => (any::<u16>(), any::<u16>(), any::<u16>(), any::<u8>())
            .prop_map(|(page, at, len, seed)| Op::MapStore { page, at, len, seed }),
        1 => Just(Op::Unmap),
        5 => (any::<u16>(), any::<u8>(), 1u8..32)
            .prop_map(|(start, len, flags)| Op::Put { start, len, flags }),
        2 => any::<u32>().prop_map(|size| Op::SetSize { size }),
        1 => (0u32..=model::MAX_SIZE as u32 / 512, 0u32..8).prop_map(|(sectors, skew)| Op::SetSize {
            size: (sectors * 512).wrapping_add(skew).wrapping_sub(4),
        }),
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
        2 => any::<u8>().prop_map(|pages| Op::Reclaim { pages }),
        2 => (any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(hook, calls, error)| Op::FailHook { hook, calls, error }),
        1 => (any::<u8>(), any::<u32>()).prop_map(|(what, delta)| Op::Beyond { what, delta }),
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
    fn block_files_match_the_model(setup in setup(false, Largest::Aligned), ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        check(&setup, &ops)?;
    }

    /// Block files whose largest size (`BlockMap::max_size`) is near their size and not
    /// a multiple of 64 KiB (so sometimes of neither the block nor the page size).
    #[test]
    fn files_with_an_unaligned_largest_size_match_the_model(setup in setup(false, Largest::Unaligned), ops in prop::collection::vec(op(), 1..MAX_OPS)) {
        check(&setup, &ops)?;
    }

    /// Files served through `ByteIo` and the compat pager (no direct I/O there).
    #[test]
    fn compat_files_match_the_model(setup in setup(true, Largest::Aligned), ops in prop::collection::vec(op(), 1..MAX_OPS)) {
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
