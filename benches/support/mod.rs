//! Shared bench helpers: a counting allocator, segmented-memcpy limits, files.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use genpager::PAGE_SIZE;
use genpager::testing::{MemDisk, MemFile};

/// Counts heap allocations, so a bench can show a path allocates nothing.
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the counter is a
// relaxed atomic with no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Heap allocations so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// One page frame for a limit: page aligned, as a kernel's frames and genpager's are
/// (a `Box<[u8; PAGE_SIZE]>` starts 16 bytes into an allocation, so each of its copies
/// straddles two pages and runs ~10% slower, which would flatter the pager).
/// `align` takes a literal only, hence one attribute per page size.
#[cfg_attr(
    not(any(feature = "page-16k", feature = "page-64k")),
    repr(C, align(4096))
)]
#[cfg_attr(feature = "page-16k", repr(C, align(16384)))]
#[cfg_attr(feature = "page-64k", repr(C, align(65536)))]
pub struct PageFrame(pub [u8; PAGE_SIZE]);

const _: () = assert!(core::mem::align_of::<PageFrame>() == PAGE_SIZE);

/// `count` contiguous page frames filled with `byte`.
pub fn page_frames(count: usize, byte: u8) -> Vec<PageFrame> {
    (0..count).map(|_| PageFrame([byte; PAGE_SIZE])).collect()
}

/// The physical limit of moving a file's bytes between its disk and page-sized
/// buffers: one memcpy per page, as a device's DMA into or out of page frames would
/// be, through the disk's own memory (so that where the allocator placed a buffer does
/// not count against the pager). The file's blocks must be one page each.
pub struct SegmentedCopy {
    disk: MemDisk,
    /// Disk byte offset of each page of the file.
    plan: Vec<usize>,
    frames: Vec<PageFrame>,
}

impl SegmentedCopy {
    pub fn new(file: &MemFile) -> Self {
        assert_eq!(
            file.fs().block_size() as usize,
            PAGE_SIZE,
            "one block per page"
        );
        let plan: Vec<usize> = file
            .block_table()
            .iter()
            .map(|sector| sector.expect("no holes") as usize * 512)
            .collect();
        let frames = page_frames(plan.len(), 1);
        Self {
            disk: file.fs().disk().clone(),
            plan,
            frames,
        }
    }

    /// Median of `rounds` timings of one full copy from the disk into the buffers,
    /// the direction of a read (the same statistic the benches use for genpager, so
    /// the ratio compares like with like).
    pub fn time(&mut self, rounds: usize) -> Duration {
        let Self { disk, plan, frames } = self;
        disk.with_image(|image| {
            median(rounds, || {
                let start = Instant::now();
                for (frame, &at) in frames.iter_mut().zip(plan.iter()) {
                    frame.0.copy_from_slice(&image[at..at + PAGE_SIZE]);
                }
                black_box(&frames);
                start.elapsed()
            })
        })
    }

    /// [`SegmentedCopy::time`] the other way, buffers into the disk: the direction
    /// of a writeback. Like a writeback of data just written, each round starts from
    /// buffers just filled with `data` (untimed), so both pay for moving freshly
    /// written cache lines. Leaves those bytes on the disk.
    pub fn time_gather(&mut self, rounds: usize, data: &[u8]) -> Duration {
        let Self { disk, plan, frames } = self;
        disk.with_image(|image| {
            median(rounds, || {
                for (frame, bytes) in frames.iter_mut().zip(data.chunks_exact(PAGE_SIZE)) {
                    frame.0.copy_from_slice(bytes);
                }
                let start = Instant::now();
                for (frame, &at) in frames.iter().zip(plan.iter()) {
                    image[at..at + PAGE_SIZE].copy_from_slice(&frame.0);
                }
                black_box(&image);
                start.elapsed()
            })
        })
    }
}

/// `rounds` interleaved runs of `a` and `b`, each timed by itself: both medians, and
/// the median of the per-round ratios `a / b`. Each round compares runs made next to
/// each other, so a slow spell of the machine weighs on both sides of the ratio.
pub fn interleaved(
    rounds: usize,
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> (Duration, Duration, f64) {
    let (mut first, mut second): (Vec<Duration>, Vec<Duration>) =
        (0..rounds).map(|_| (a(), b())).unzip();
    let mut ratios: Vec<f64> = first
        .iter()
        .zip(&second)
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    first.sort();
    second.sort();
    ratios.sort_by(f64::total_cmp);
    (first[rounds / 2], second[rounds / 2], ratios[rounds / 2])
}

/// Median of `rounds` runs of `f`, each timed by `f` itself.
pub fn median(rounds: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..rounds).map(|_| f()).collect();
    times.sort();
    times[rounds / 2]
}
