//! The page cache's memory: genpager's [`FrameSource`] over the kernel's own frame
//! allocator ([`crate::frames`]), and one [`Memory`] domain with a frame budget that
//! every ext2 file's cache counts in. The page daemon thread of the workload keeps the
//! domain under its budget; genpager's dirty limits and write-behind hold the writers.

use genpager::memory::{Frame, FrameSource, Memory};

use crate::frames;

/// Frames the ext2 files may hold at once: 4 MiB, a fraction of what the workload
/// reads and writes, so the page daemon must free pages while it runs.
pub const BUDGET_FRAMES: usize = 1024;

/// The kernel's frames as genpager's frame source.
pub struct KernelFrames;

// SAFETY: `frames::alloc` hands out PAGE_SIZE-aligned frames of the region the kernel
// took at boot, each to one caller until `frames::free`, initialized (poisoned); the
// cookie is unused.
unsafe impl FrameSource for KernelFrames {
    fn alloc_frame(&self) -> Option<Frame> {
        let bytes = frames::alloc()?;
        // SAFETY: the frame just left the allocator's free list: PAGE_SIZE aligned,
        // initialized bytes nobody else touches until it is freed (see above).
        Some(unsafe { Frame::new(bytes, 0) })
    }

    fn free_frame(&self, frame: Frame) {
        // SAFETY: genpager gives back only frames `alloc_frame` lent, once each, and
        // touches them no more (the trait's contract).
        unsafe { frames::free(frame.bytes()) }
    }
}

static SOURCE: KernelFrames = KernelFrames;
static DOMAIN: Memory = Memory::new(&SOURCE, BUDGET_FRAMES);

/// The domain of the workload's page caches.
pub fn domain() -> &'static Memory {
    &DOMAIN
}

/// The kernel's frames with no budget, no dirty thresholds and no write-behind: the
/// domain of the kernel's own test files (`cache.rs`), which count their frames
/// against the allocator itself.
pub fn frames_only() -> &'static Memory {
    FRAMES_ONLY.call_once(|| {
        let memory = Memory::new(&SOURCE, usize::MAX);
        memory.set_write_behind(false);
        memory
    })
}

static FRAMES_ONLY: spin::Once<Memory> = spin::Once::new();
