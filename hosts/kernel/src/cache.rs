//! [`KernelCache`]: the kernel's [`PageCache`], whose pages live in frames from the
//! kernel's own frame allocator ([`crate::frames`]) rather than the heap.
//!
//! Resident pages are a `BTreeMap` from offset to [`Page`]; the dirty and writeback
//! tags are ordered sets of offsets, so "any tagged?" is O(1) and "next tagged from
//! x" is one O(log n) range query. The kernel has no page daemon, so the page queues
//! are only recorded in each page, not kept as lists, and no page is ever mapped into
//! a user address space, so the MMU hooks keep their defaults.

use alloc::collections::btree_map::Entry;
use alloc::collections::{BTreeMap, BTreeSet};
use core::ops::Range;

use genpager::{DirtyStatus, Error, Page, PageCache, PageQueue, Result, Tag};

use crate::frames;

/// The resident pages of one file. Dropping it returns every frame to the allocator.
#[derive(Default)]
pub struct KernelCache {
    pages: BTreeMap<u64, Page>,
    dirty: BTreeSet<u64>,
    writeback: BTreeSet<u64>,
}

impl KernelCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

// SAFETY: every page's frame comes from `frames::alloc`: PAGE_SIZE bytes, page aligned,
// handed to nobody else until `frames::free`. The frame is freed only in `free` (after
// the page is removed from the map) or when the whole cache is dropped (when no page
// can be busy: the object owning the cache is gone). Moving a `Page` inside the map
// moves its metadata, not the frame, so `Page::frame` stays valid while resident, and
// lookups go through the map keyed by exact offset.
unsafe impl PageCache for KernelCache {
    fn lookup(&self, offset: u64) -> Option<&Page> {
        self.pages.get(&offset)
    }

    fn lookup_mut(&mut self, offset: u64) -> Option<&mut Page> {
        self.pages.get_mut(&offset)
    }

    fn range(&self, range: Range<u64>) -> impl Iterator<Item = &Page> {
        self.pages.range(range).map(|(_, page)| page)
    }

    fn alloc(&mut self, offset: u64) -> Result<&mut Page> {
        match self.pages.entry(offset) {
            Entry::Occupied(_) => Err(Error::Invalid),
            Entry::Vacant(slot) => {
                let frame = frames::alloc().ok_or(Error::NoMemory)?;
                Ok(slot.insert(Page::new(offset, frame)))
            }
        }
    }

    fn free(&mut self, offset: u64) {
        let Some(page) = self.pages.remove(&offset) else {
            return;
        };
        self.dirty.remove(&offset);
        self.writeback.remove(&offset);
        // SAFETY: the frame came from `frames::alloc` in `alloc`, and its page has just
        // left the cache, so nothing reaches the frame any more.
        unsafe { frames::free(page.frame()) };
    }

    fn set_dirty(&mut self, offset: u64, status: DirtyStatus) {
        let Some(page) = self.pages.get_mut(&offset) else {
            return;
        };
        page.set_dirty_status(status);
        if status == DirtyStatus::Clean {
            self.dirty.remove(&offset);
        } else {
            self.dirty.insert(offset);
        }
    }

    fn set_writeback(&mut self, offset: u64, writeback: bool) {
        let Some(page) = self.pages.get_mut(&offset) else {
            return;
        };
        page.set_writeback_status(writeback);
        if writeback {
            self.writeback.insert(offset);
        } else {
            self.writeback.remove(&offset);
        }
    }

    fn next_tagged(&self, tag: Tag, from: u64) -> Option<u64> {
        let set = match tag {
            Tag::Dirty => &self.dirty,
            Tag::Writeback => &self.writeback,
        };
        set.range(from..).next().copied()
    }

    fn any_tagged(&self, tag: Tag) -> bool {
        match tag {
            Tag::Dirty => !self.dirty.is_empty(),
            Tag::Writeback => !self.writeback.is_empty(),
        }
    }

    fn set_queue(&mut self, offset: u64, queue: PageQueue) {
        if let Some(page) = self.pages.get_mut(&offset) {
            page.set_queue_status(queue);
        }
    }

    fn resident_pages(&self) -> usize {
        self.pages.len()
    }
}

impl Drop for KernelCache {
    fn drop(&mut self) {
        for page in self.pages.values() {
            // SAFETY: the cache is going away with its object, so no page can be busy
            // or referenced; each frame came from `frames::alloc` and is freed once.
            unsafe { frames::free(page.frame()) };
        }
    }
}
