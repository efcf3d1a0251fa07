//! The kernel heap behind `alloc`: a first-fit linked-list allocator over one region
//! of memory the kernel owns (taken from the firmware once, at boot).

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hands `size` bytes at `start` to the global allocator.
///
/// # Safety
///
/// The region must be writable memory used by nothing else for the rest of the
/// kernel's life, and this must be called once, before the first allocation.
pub unsafe fn init(start: *mut u8, size: usize) {
    // SAFETY: the caller gives the region to the heap for good (this function's
    // contract), and calls this once.
    unsafe { HEAP.lock().init(start, size) }
}

/// Bytes of the heap in use right now.
pub fn used() -> usize {
    HEAP.lock().used()
}
