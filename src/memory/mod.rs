//! Memory as a kernel runs it: where page frames come from ([`FrameSource`]), the
//! ready-made source for kernels with only a heap ([`ChunkPool`]), and the budget every
//! cache of a [`Memory`] domain is counted against, with its resident, dirty and
//! writeback page counts and dirty thresholds.
//!
//! A kernel with a physical frame allocator implements [`FrameSource`] over it and
//! makes one [`Memory`] (usually a `static`) with the number of frames it lends the
//! page cache; every [`DefaultCache`](crate::cache::DefaultCache) built
//! [`in`](crate::cache::DefaultCache::in_memory) that memory takes its frames from the
//! source and counts its pages in the memory's counters. Without one, caches share
//! [`Memory::shared`]: the process-wide [`ChunkPool`] with no budget.
//!
//! The counters are atomics updated as pages change state, so summing them needs no
//! lock and reading them is O(1). The page cache keeps them exact under the object
//! lock of each file; a reader sees a sum that was true at some instant of each
//! counter, which is what a page daemon's and a writer's thresholds need.

mod chunk;

use core::ptr::NonNull;

use chunk::{FrameId, FramePool};

use crate::error::{Error, Result};
use crate::page::{PAGE_SIZE, PageCounts};
use crate::sync::LeafMutex;
// Core's atomics even under loom: the counters are statistics and thresholds that
// order nothing (each page's state is kept under its object lock), and core's atomics
// let the shared pool and memory be `const` statics.
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One page frame: `PAGE_SIZE` bytes a [`FrameSource`] lends a cache until it is given
/// back, and a cookie the source chose to find the frame again (a frame number, an
/// index into its own tables; the source's to interpret).
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    bytes: NonNull<u8>,
    cookie: usize,
}

impl Frame {
    /// A frame at `bytes`, found again by `cookie`.
    ///
    /// # Safety
    ///
    /// `bytes` must point to `PAGE_SIZE` writable, initialized bytes (any values),
    /// aligned to `PAGE_SIZE`, which nothing but the holder of this `Frame` touches
    /// until the frame is given back to its source.
    pub unsafe fn new(bytes: NonNull<u8>, cookie: usize) -> Self {
        Self { bytes, cookie }
    }

    /// The frame's first byte.
    pub fn bytes(&self) -> NonNull<u8> {
        self.bytes
    }

    /// The cookie the source gave the frame.
    pub fn cookie(&self) -> usize {
        self.cookie
    }
}

/// Where page frames come from: the kernel's physical frame allocator, or
/// [`ChunkPool`] for a kernel (or a `std` program) with only a heap.
///
/// # Safety
///
/// [`FrameSource::alloc_frame`] must return frames satisfying [`Frame::new`]'s
/// contract, each lent to one caller at a time until it comes back through
/// [`FrameSource::free_frame`].
pub unsafe trait FrameSource: Send + Sync {
    /// Lends a frame, or `None` when none can be had. Called under a cache's object
    /// lock in thread context: must not sleep.
    fn alloc_frame(&self) -> Option<Frame>;

    /// Takes back a frame lent by [`FrameSource::alloc_frame`]. May run in an
    /// interrupt handler (a write completion freeing a page): must not sleep, allocate
    /// or free heap memory.
    fn free_frame(&self, frame: Frame);
}

/// A [`FrameSource`] over the heap: frames carved from 256 KiB chunks (`chunk.rs`),
/// shared by every cache that takes from it, the lowest free frame first. A freed
/// frame stays in the pool for the next file that needs one, as a kernel keeps free
/// pages on its free lists; whole chunks none of whose frames is lent go back to the
/// heap at [`ChunkPool::trim`], which the kernel's page daemon calls once it has freed
/// pages (or any thread, when the heap is wanted for something else). Returning them
/// as they empty would make a file evicted and read again pay for fresh memory (page
/// faults and zeroing, under `std` an `mmap` per chunk): perf_report's cold reads ran
/// 3-5x slower so. Giving a frame back never frees heap memory, so it is safe in an
/// interrupt handler.
pub struct ChunkPool {
    frames: LeafMutex<FramePool>,
}

impl Default for ChunkPool {
    fn default() -> Self {
        Self::new()
    }
}

static SHARED_POOL: ChunkPool = ChunkPool::new();

impl ChunkPool {
    /// An empty pool.
    pub const fn new() -> Self {
        Self {
            frames: LeafMutex::new(FramePool::new()),
        }
    }

    /// The process-wide pool [`Memory::shared`] lends from.
    pub fn shared() -> &'static ChunkPool {
        &SHARED_POOL
    }

    /// Returns every chunk none of whose frames is lent to the heap; returns how many
    /// chunks it returned. Call it from thread context (the page daemon, after
    /// reclaiming): it frees heap memory.
    pub fn trim(&self) -> usize {
        let mut frames = self.frames.lock();
        let before = frames.chunks();
        frames.trim();
        // Cannot underflow: trimming only removes chunks.
        before.saturating_sub(frames.chunks())
    }

    /// How many chunks have no frame lent: what [`ChunkPool::trim`] would return.
    pub fn idle_chunks(&self) -> usize {
        self.frames.lock().empty_chunks()
    }

    /// How many frames the pool holds that are not lent.
    pub fn spare_frames(&self) -> usize {
        self.frames.lock().spare()
    }

    /// How many bytes of heap the pool holds in chunks.
    pub fn heap_bytes(&self) -> usize {
        self.frames
            .lock()
            .chunks()
            .saturating_mul(chunk::CHUNK_FRAMES)
            .saturating_mul(PAGE_SIZE)
    }
}

// SAFETY: frames come from `FramePool::take`: PAGE_SIZE zeroed-then-used bytes, page
// aligned, inside a live chunk that is freed only once all its frames are back (`trim`
// frees only chunks whose frames are all free), lent to one caller until `free_frame`.
unsafe impl FrameSource for ChunkPool {
    fn alloc_frame(&self) -> Option<Frame> {
        let (id, bytes) = self.frames.lock().take().ok()?;
        // SAFETY: see the impl's comment: the frame is this caller's alone.
        Some(unsafe { Frame::new(bytes, id.cookie()) })
    }

    fn free_frame(&self, frame: Frame) {
        self.frames.lock().give(FrameId::from_cookie(frame.cookie));
    }
}

/// A memory domain: a [`FrameSource`], the number of frames its caches may hold (the
/// budget), the resident, dirty and writeback pages of all of them, and the dirty
/// thresholds writers are held to. See the module docs.
pub struct Memory {
    source: &'static dyn FrameSource,
    budget: AtomicUsize,
    resident: AtomicUsize,
    dirty: AtomicUsize,
    writeback: AtomicUsize,
    /// Percent of the budget: dirty and writeback pages above it start writeback.
    background_percent: AtomicUsize,
    /// Percent of the budget: a writer above it waits for its writeback.
    hard_percent: AtomicUsize,
    /// Whether `write` starts writeback of each cluster whose end it reaches.
    write_behind: AtomicBool,
}

static SHARED_MEMORY: Memory = Memory::new(&SHARED_POOL, usize::MAX).without_write_behind();

/// The default background dirty threshold: 10% of the budget.
pub const DEFAULT_BACKGROUND_PERCENT: usize = 10;
/// The default hard dirty threshold: 20% of the budget.
pub const DEFAULT_HARD_PERCENT: usize = 20;

impl Memory {
    /// A domain lending frames from `source`, at most `budget` of them at once, with
    /// the default dirty thresholds (10% and 20% of the budget) and write-behind on.
    pub const fn new(source: &'static dyn FrameSource, budget: usize) -> Self {
        Self {
            source,
            budget: AtomicUsize::new(budget),
            resident: AtomicUsize::new(0),
            dirty: AtomicUsize::new(0),
            writeback: AtomicUsize::new(0),
            background_percent: AtomicUsize::new(DEFAULT_BACKGROUND_PERCENT),
            hard_percent: AtomicUsize::new(DEFAULT_HARD_PERCENT),
            write_behind: AtomicBool::new(true),
        }
    }

    const fn without_write_behind(self) -> Self {
        Self {
            write_behind: AtomicBool::new(false),
            ..self
        }
    }

    /// The domain caches use unless given another: [`ChunkPool::shared`], no budget
    /// (so no dirty thresholds either) and no write-behind: written pages stay dirty
    /// until a flush is asked for.
    pub fn shared() -> &'static Memory {
        &SHARED_MEMORY
    }

    /// The frame source.
    pub fn source(&self) -> &'static dyn FrameSource {
        self.source
    }

    /// How many frames the domain's caches may hold at once.
    pub fn budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }

    /// Changes the budget. Caches holding more keep their pages; they get no new frame
    /// until they are under it again.
    pub fn set_budget(&self, frames: usize) {
        self.budget.store(frames, Ordering::Relaxed);
    }

    /// Sets the dirty thresholds, in percent of the budget: above `background`,
    /// [`write`](crate::write()) starts writeback of what it wrote; above `hard`, it
    /// waits for that writeback. Fails with [`Error::Invalid`] unless
    /// `background <= hard <= 100`.
    pub fn set_dirty_percent(&self, background: usize, hard: usize) -> Result {
        if background > hard || hard > 100 {
            return Err(Error::Invalid);
        }
        self.background_percent.store(background, Ordering::Relaxed);
        self.hard_percent.store(hard, Ordering::Relaxed);
        Ok(())
    }

    /// The dirty thresholds in pages: `(background, hard)`.
    pub fn dirty_thresholds(&self) -> (usize, usize) {
        let budget = self.budget();
        let share = |percent: &AtomicUsize| {
            let percent = percent.load(Ordering::Relaxed);
            // Cannot overflow: percent <= 100, and the product is done in u128.
            #[allow(clippy::arithmetic_side_effects)]
            let pages = budget as u128 * percent as u128 / 100;
            usize::try_from(pages).unwrap_or(usize::MAX)
        };
        (share(&self.background_percent), share(&self.hard_percent))
    }

    /// The domain's page counts now.
    pub fn counts(&self) -> PageCounts {
        let load = |counter: &AtomicUsize| counter.load(Ordering::Relaxed) as u64;
        PageCounts {
            resident: load(&self.resident),
            dirty: load(&self.dirty),
            writeback: load(&self.writeback),
        }
    }

    /// Pages the writers' thresholds count: dirty ones and ones in writeback (both
    /// hold memory a writer made unfreeable until the disk has it).
    pub fn unwritten(&self) -> usize {
        let load = |counter: &AtomicUsize| counter.load(Ordering::Relaxed);
        load(&self.dirty).saturating_add(load(&self.writeback))
    }

    /// Whether dirty and writeback pages are above the background threshold.
    pub fn over_background(&self) -> bool {
        self.unwritten() > self.dirty_thresholds().0
    }

    /// Whether dirty and writeback pages are above the hard threshold.
    pub fn over_hard(&self) -> bool {
        self.unwritten() > self.dirty_thresholds().1
    }

    /// Whether [`write`](crate::write()) starts asynchronous writeback of each cluster
    /// (the vnode's largest transfer) whose end one of its batches reaches, as NetBSD's
    /// write-behind does when a write crosses a boundary.
    pub fn write_behind(&self) -> bool {
        self.write_behind.load(Ordering::Relaxed)
    }

    /// Turns write-behind on or off.
    pub fn set_write_behind(&self, on: bool) {
        self.write_behind.store(on, Ordering::Relaxed);
    }

    /// Lends a frame within the budget, counted resident, or fails with
    /// [`Error::NoMemory`].
    pub(crate) fn take_frame(&self) -> Result<Frame> {
        let budget = self.budget();
        self.resident
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |resident| {
                (resident < budget).then(|| resident.saturating_add(1))
            })
            .map_err(|_| Error::NoMemory)?;
        match self.source.alloc_frame() {
            Some(frame) => Ok(frame),
            None => {
                self.resident.fetch_sub(1, Ordering::Relaxed);
                Err(Error::NoMemory)
            }
        }
    }

    /// Gives back a frame from [`Memory::take_frame`].
    pub(crate) fn give_frame(&self, frame: Frame) {
        self.source.free_frame(frame);
        self.resident.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a page turning dirty (`true`) or clean (`false`).
    pub(crate) fn count_dirty(&self, dirty: bool) {
        count(&self.dirty, dirty);
    }

    /// Counts a page entering (`true`) or leaving (`false`) writeback.
    pub(crate) fn count_writeback(&self, writeback: bool) {
        count(&self.writeback, writeback);
    }
}

fn count(counter: &AtomicUsize, up: bool) {
    if up {
        counter.fetch_add(1, Ordering::Relaxed);
    } else {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}
