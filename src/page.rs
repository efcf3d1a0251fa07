//! Pages: their flags, dirty status and metadata, and the busy protocol.
//!
//! A page is *busy* while one thread owns it for I/O or for a caller that asked for
//! it through `getpages`. `BUSY` is set and cleared only under the object lock; the
//! owner may then touch the page's bytes without that lock. A thread that finds a page
//! busy and must wait sets `WANTED`, takes a ticket from the object's wait queue, drops
//! the object lock and sleeps; whoever clears `BUSY` on a `WANTED` page wakes the queue.
//! Pages are made busy in ascending offset order only, so two threads collecting
//! overlapping ranges cannot deadlock.

use core::fmt;
use core::ptr::NonNull;

use bitflags::bitflags;
use static_assertions::const_assert;

#[cfg(all(feature = "page-16k", feature = "page-64k"))]
compile_error!("features `page-16k` and `page-64k` are mutually exclusive: pick one page size");

/// `log2(PAGE_SIZE)`: 12 (4 KiB) by default, 14 with the `page-16k` feature, 16 with
/// `page-64k`.
#[cfg(not(any(feature = "page-16k", feature = "page-64k")))]
pub const PAGE_SHIFT: u32 = 12;
/// `log2(PAGE_SIZE)`: 12 (4 KiB) by default, 14 with the `page-16k` feature, 16 with
/// `page-64k`.
#[cfg(all(feature = "page-16k", not(feature = "page-64k")))]
pub const PAGE_SHIFT: u32 = 14;
/// `log2(PAGE_SIZE)`: 12 (4 KiB) by default, 14 with the `page-16k` feature, 16 with
/// `page-64k`.
#[cfg(feature = "page-64k")]
pub const PAGE_SHIFT: u32 = 16;
/// Bytes in one page (a build-time choice: see [`PAGE_SHIFT`]). Offsets handed to the
/// crate are multiples of this.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// Mask of the offset inside a page.
pub const PAGE_MASK: u64 = PAGE_SIZE as u64 - 1;

/// Rounds `offset` down to a page boundary.
pub const fn trunc_page(offset: u64) -> u64 {
    offset & !PAGE_MASK
}

/// Rounds `offset` up to a page boundary.
pub const fn round_page(offset: u64) -> u64 {
    offset.saturating_add(PAGE_MASK) & !PAGE_MASK
}

bitflags! {
    /// State bits of a resident page.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PageFlags: u16 {
        /// Owned by one thread for I/O or by a caller; the busy lock bit.
        const BUSY = 1 << 0;
        /// Someone sleeps waiting for `BUSY` to clear.
        const WANTED = 1 << 1;
        /// Contents not valid yet (never read or zeroed).
        const FAKE = 1 << 2;
        /// Free the page as soon as it is unbusied.
        const RELEASED = 1 << 3;
        /// Being written by the page daemon.
        const PAGEOUT = 1 << 4;
        /// Backs a hole: mapped read-only so that the first write faults again.
        const RDONLY = 1 << 5;
    }
}

/// Whether a page's bytes differ from the backing store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DirtyStatus {
    /// Known to equal the backing store.
    #[default]
    Clean,
    /// Known to differ from the backing store.
    Dirty,
    /// Possibly written through a writable mapping: ask the MMU's modified bit.
    Unknown,
}

/// The per-page tags an object keeps an index of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tag {
    /// The page is dirty or possibly dirty (status not [`DirtyStatus::Clean`]).
    Dirty,
    /// The page is being written to the backing store.
    Writeback,
}

/// The page-replacement queue a page sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PageQueue {
    /// On no queue (busy pages and wired pages).
    #[default]
    None,
    /// Recently used.
    Active,
    /// Candidate for reclaim.
    Inactive,
}

/// Metadata of one resident page, owned by the [`PageCache`](crate::PageCache).
///
/// Dirty status and tags move together, so only the cache changes the dirty status
/// (through [`PageCache::set_dirty`](crate::PageCache::set_dirty)); flags belong to
/// whoever holds the object lock.
#[derive(Debug)]
pub struct Page {
    offset: u64,
    frame: NonNull<u8>,
    /// The page's state bits.
    pub flags: PageFlags,
    dirty: DirtyStatus,
    writeback: bool,
    queue: PageQueue,
    /// How many wirings keep the page resident.
    pub wire_count: u16,
}

/// The size of [`Page`] in bytes: what genpager keeps per resident page, besides the
/// cache's own index and queue links (8 more bytes in the default cache).
pub const PAGE_METADATA_BYTES: usize = core::mem::size_of::<Page>();
const_assert!(PAGE_METADATA_BYTES <= 64);

// SAFETY: the frame pointer is only dereferenced under the busy protocol or the object
// lock (see `PageCache`'s implementation safety), so moving metadata between threads is
// no different from moving the index that holds it.
unsafe impl Send for Page {}
// SAFETY: as above; shared references to `Page` never dereference `frame`.
unsafe impl Sync for Page {}

impl Page {
    /// Metadata for a new page at `offset` whose bytes live at `frame`: busy, not yet
    /// valid (`FAKE`), clean, on no queue.
    ///
    /// `frame` must point to `PAGE_SIZE` bytes aligned to `PAGE_SIZE` that stay valid
    /// until the cache frees the page (see [`PageCache`](crate::PageCache)).
    pub fn new(offset: u64, frame: NonNull<u8>) -> Self {
        debug_assert_eq!(offset & PAGE_MASK, 0);
        Self {
            offset,
            frame,
            flags: PageFlags::BUSY | PageFlags::FAKE,
            dirty: DirtyStatus::Clean,
            writeback: false,
            queue: PageQueue::None,
            wire_count: 0,
        }
    }

    /// The page's byte offset in its object.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Where the page's bytes live.
    pub fn frame(&self) -> NonNull<u8> {
        self.frame
    }

    /// The page's dirty status.
    pub fn dirty(&self) -> DirtyStatus {
        self.dirty
    }

    /// Whether the page carries the writeback tag.
    pub fn in_writeback(&self) -> bool {
        self.writeback
    }

    /// The queue the page sits on.
    pub fn queue(&self) -> PageQueue {
        self.queue
    }

    /// Whether the page is busy.
    pub fn is_busy(&self) -> bool {
        self.flags.contains(PageFlags::BUSY)
    }

    /// Sets the dirty status. For [`PageCache`](crate::PageCache) implementations,
    /// which must update their [`Tag::Dirty`] index in the same step.
    pub fn set_dirty_status(&mut self, status: DirtyStatus) {
        self.dirty = status;
    }

    /// Sets the writeback bit. For [`PageCache`](crate::PageCache) implementations,
    /// which must update their [`Tag::Writeback`] index in the same step.
    pub fn set_writeback_status(&mut self, writeback: bool) {
        self.writeback = writeback;
    }

    /// Records the queue the page is on. For [`PageCache`](crate::PageCache)
    /// implementations.
    pub fn set_queue_status(&mut self, queue: PageQueue) {
        self.queue = queue;
    }
}

/// A page made busy by the crate: its offset and its frame, captured under the object
/// lock so that the owner can reach its bytes without it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageRef {
    pub(crate) offset: u64,
    pub(crate) frame: NonNull<u8>,
}

impl PageRef {
    /// Zeroes `len` bytes from byte `at` of the page, which the caller owns busy (and
    /// which no mapping can store to: a fault write-protects pages before handing
    /// them out, and a page being read was never handed out).
    pub(crate) fn zero(&self, at: usize, len: usize) {
        assert!(
            at.checked_add(len).is_some_and(|end| end <= PAGE_SIZE),
            "zeroing past the frame"
        );
        // SAFETY: the page is busy and owned by the caller, so no other thread reads or
        // writes these bytes (a device request of the caller may be filling *other*
        // bytes of the same page, which is why this writes the exact range through a
        // raw pointer instead of forming a slice over the whole page); the assertion
        // keeps the write inside the frame of PAGE_SIZE bytes.
        unsafe { core::ptr::write_bytes(self.frame.as_ptr().add(at), 0, len) }
    }
}

/// Zeroes file bytes `from .. to` of `pages`: busy pages the caller owns, consecutive
/// from `pages[0]`, holding the range.
// Cannot overflow: `pages[0].offset <= from <= to <=` the pages' end, a fault's or a
// cluster's range, and `within < PAGE_SIZE`.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn zero_file_range(pages: &[PageRef], from: u64, to: u64) {
    let Some(base) = pages.first().map(|page| page.offset) else {
        return;
    };
    let mut at = from;
    while at < to {
        let page = &pages[((at - base) >> PAGE_SHIFT) as usize];
        let within = (at & PAGE_MASK) as usize;
        let len = (PAGE_SIZE - within).min((to - at) as usize);
        page.zero(within, len);
        at += len as u64;
    }
}

// SAFETY: a `PageRef` is a capability to a busy page's frame; the busy protocol makes
// its holder the only user of those bytes, whichever thread it is on.
unsafe impl Send for PageRef {}
// SAFETY: shared `PageRef`s only read the pointer value, never the bytes.
unsafe impl Sync for PageRef {}

/// How many of an object's (or a memory domain's) pages are resident, dirty and under writeback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageCounts {
    /// Pages resident in the object's cache (valid or being read).
    pub resident: u64,
    /// Resident pages carrying the [`Tag::Dirty`] tag: dirty, or
    /// maybe written through a mapping.
    pub dirty: u64,
    /// Resident pages carrying the [`Tag::Writeback`] tag: on
    /// their way to the device.
    pub writeback: u64,
}

impl PageCounts {
    /// Adds `other`'s counts to these (saturating).
    pub fn add(&mut self, other: &PageCounts) {
        self.resident = self.resident.saturating_add(other.resident);
        self.dirty = self.dirty.saturating_add(other.dirty);
        self.writeback = self.writeback.saturating_add(other.writeback);
    }
}

impl fmt::Display for PageCounts {
    /// `resident=… dirty=… writeback=…`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "resident={} dirty={} writeback={}",
            self.resident, self.dirty, self.writeback
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        let page = PAGE_SIZE as u64;
        assert_eq!(trunc_page(page + 1), page);
        assert_eq!(round_page(page + 1), 2 * page);
        assert_eq!(round_page(2 * page), 2 * page);
        assert_eq!(round_page(u64::MAX), trunc_page(u64::MAX));
    }

    #[test]
    fn new_page_is_busy_fake_clean() {
        let mut byte = 0u8;
        let page = Page::new(2 * PAGE_SIZE as u64, NonNull::from(&mut byte));
        assert!(page.is_busy());
        assert!(page.flags.contains(PageFlags::FAKE));
        assert_eq!(page.dirty(), DirtyStatus::Clean);
        assert_eq!(page.queue(), PageQueue::None);
        const { assert!(PAGE_METADATA_BYTES <= 64) };
    }
}
