//! Page frames of the default cache: page-aligned heap allocations.

use core::alloc::Layout;
use core::ptr::NonNull;

use crate::error::{Error, Result};
use crate::page::PAGE_SIZE;

/// One page-aligned, page-sized heap allocation; freed on drop.
pub(crate) struct Frame(NonNull<u8>);

// SAFETY: a frame is plain memory owned by one cache; which thread frees it is
// irrelevant.
unsafe impl Send for Frame {}
// SAFETY: `&Frame` only exposes the pointer value.
unsafe impl Sync for Frame {}

const LAYOUT: Layout = match Layout::from_size_align(PAGE_SIZE, PAGE_SIZE) {
    Ok(layout) => layout,
    Err(_) => panic!("page layout"),
};

impl Frame {
    /// A zeroed frame, or [`Error::NoMemory`] when the allocator has none.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: LAYOUT has a non-zero size.
        let ptr = unsafe { alloc::alloc::alloc_zeroed(LAYOUT) };
        NonNull::new(ptr).map(Frame).ok_or(Error::NoMemory)
    }

    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.0
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `alloc_zeroed(LAYOUT)` and is freed only here.
        unsafe { alloc::alloc::dealloc(self.0.as_ptr(), LAYOUT) }
    }
}
