//! The page cache of the kernel's own test files (the RAM-disk files and the raw
//! virtio disk's file): genpager's [`DefaultCache`] with its frames from the kernel's
//! frame allocator, through [`memory::frames_only`] (no budget).
//!
//! This kernel once had a `PageCache` of its own, a `BTreeMap` of pages with
//! `BTreeSet` tag indexes. It broke the trait's contract: a completion settles pages
//! in interrupt context (`free`, `set_dirty`, `set_writeback_range`), where the cache
//! must neither allocate nor free heap memory, and B-tree inserts and removals do
//! both. `DefaultCache` reserves at `alloc` whatever freeing needs, so a kernel that
//! wants its own frames implements [`genpager::memory::FrameSource`] (a few lines,
//! `memory.rs`) rather than the cache.

use genpager::cache::DefaultCache;

use crate::memory;

/// The cache type of the kernel's test files.
pub type KernelCache = DefaultCache;

/// An empty cache whose frames come from the kernel's frame allocator.
pub fn kernel_cache() -> KernelCache {
    DefaultCache::in_memory(memory::frames_only())
}
