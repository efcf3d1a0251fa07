//! The kernel heap behind `alloc`: a first-fit linked-list allocator over one region
//! of memory the kernel owns (taken from the firmware once, at boot).
//!
//! Its spin lock is taken with interrupts masked: a thread preempted while holding it
//! would otherwise leave any thread that allocates with interrupts masked (under a
//! genpager spin lock, say) spinning forever on its CPU. The spin lock (`spin::Mutex`
//! inside [`LockedHeap`]) is what excludes the other CPUs.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};

use linked_list_allocator::LockedHeap;

use crate::interrupts::NoIrq;

/// [`LockedHeap`], used with interrupts masked.
struct KernelHeap(LockedHeap);

/// Allocations and frees made in interrupt context: none, ever, if the completion
/// path (genpager's `IoRequest::complete`, the page cache's settling methods, the
/// driver's handler, the scheduler's `wake`) keeps its promise. The self-test checks.
static IN_INTERRUPT: AtomicU64 = AtomicU64::new(0);

/// Counts a heap call if it runs in interrupt context.
fn note_context() {
    if crate::interrupts::in_interrupt() {
        IN_INTERRUPT.fetch_add(1, Ordering::Relaxed);
    }
}

/// Heap allocations and frees made in interrupt context so far.
pub fn calls_in_interrupt() -> u64 {
    IN_INTERRUPT.load(Ordering::Relaxed)
}

// SAFETY: forwards to `LockedHeap`'s implementation, which upholds the contract;
// masking interrupts around it changes nothing about the memory handed out.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _masked = NoIrq::new();
        note_context();
        // SAFETY: the caller's contract is `GlobalAlloc::alloc`'s, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _masked = NoIrq::new();
        note_context();
        // SAFETY: the caller's contract is `GlobalAlloc::dealloc`'s, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(LockedHeap::empty());

/// Hands `size` bytes at `start` to the global allocator.
///
/// # Safety
///
/// The region must be writable memory used by nothing else for the rest of the
/// kernel's life, and this must be called once, before the first allocation.
pub unsafe fn init(start: *mut u8, size: usize) {
    let _masked = NoIrq::new();
    // SAFETY: the caller gives the region to the heap for good (this function's
    // contract), and calls this once.
    unsafe { HEAP.0.lock().init(start, size) }
}

/// Bytes of the heap in use right now.
pub fn used() -> usize {
    let _masked = NoIrq::new();
    HEAP.0.lock().used()
}
