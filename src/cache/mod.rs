//! The default [`PageCache`]: what a host uses until it has a page allocator of its
//! own.
//!
//! Resident pages live in a slab indexed by a 64-way radix tree from page index to
//! slot (`radix.rs`): a lookup is one step per level. The DIRTY and WRITEBACK tags
//! are bitmaps in the tree's nodes: "any tagged?" reads the root (O(1)) and "next
//! tagged at or after x" descends only into tagged subtrees (O(height)), so dirty-only
//! scans never touch clean pages.
//!
//! Frames come from the cache's [`Memory`]: its [`FrameSource`](crate::memory::FrameSource)
//! lends them (by default the process-wide [`ChunkPool`](crate::memory::ChunkPool),
//! shared by every cache), within its budget, and the cache counts its resident, dirty
//! and writeback pages in the memory's counters as they change. A freed frame goes
//! back to the source at once, so memory one file frees serves the next.
//!
//! The page queues are doubly linked lists threaded through the slab by slot
//! index: O(1) to move a page, and no `unsafe` — an intrusive list of heap nodes would
//! need raw-pointer removal proofs for the same result, which is why this cache does
//! not use `intrusive-collections` for them.
//!
//! It also emulates an MMU for hosts and tests that map pages: a per-page mapping state
//! and modified bit, behind [`PageCache::protect`] and [`PageCache::clear_modified`],
//! and [`DefaultCache::write_through_mapping`] to store into a page as a user
//! mapping would.

pub(crate) mod clock;
mod radix;

use alloc::vec::Vec;
use core::ops::Range;

use radix::{Radix, reserve};

use crate::error::{Error, Result};
use crate::hooks::{PageCache, Protection};
use crate::memory::{Frame, Memory};
use crate::page::{
    DirtyStatus, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, Page, PageCounts, PageQueue, Tag,
};
use crate::pdpolicy::Clock;

const NIL: u32 = u32::MAX;

/// Pages a cache frees of its own when its memory domain's budget is spent: a batch,
/// so that a reader or writer streaming through a file does not sweep for every page.
const DOMAIN_SWEEP: usize = 16;

fn tag_index(tag: Tag) -> usize {
    match tag {
        Tag::Dirty => 0,
        Tag::Writeback => 1,
    }
}

fn page_index(offset: u64) -> u64 {
    offset >> PAGE_SHIFT
}

/// How an emulated user mapping reaches a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MapState {
    /// Not mapped.
    #[default]
    Unmapped,
    /// Mapped read-only: a store faults.
    ReadOnly,
    /// Mapped writable: a store lands and sets the modified bit.
    Writable,
}

impl MapState {
    /// The mapping left after `protection` is applied to this one.
    fn protected(self, protection: Protection) -> Self {
        match (protection, self) {
            (Protection::None, _) => MapState::Unmapped,
            (Protection::ReadOnly, MapState::Writable) => MapState::ReadOnly,
            (Protection::ReadOnly, other) => other,
        }
    }
}

struct Slot {
    page: Page,
    /// The cookie of the page's frame (`Page::frame` holds its bytes).
    frame_cookie: usize,
    prev: u32,
    next: u32,
    map: MapState,
    modified: bool,
    /// The emulated MMU's referenced (accessed) bit.
    referenced: bool,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// The crate's ready-made page cache. See the module docs.
pub struct DefaultCache {
    index: Radix,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<u32>,
    active: List,
    inactive: List,
    memory: &'static Memory,
    limit: usize,
    /// Resident pages mapped writable: while none is, `is_writable_mapped` answers
    /// without a lookup (the fast path asks it of every page it hands out).
    writable_mapped: usize,
}

impl Default for DefaultCache {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultCache {
    /// An empty cache taking frames from [`Memory::shared`], with no limit of its own.
    pub fn new() -> Self {
        Self::in_memory(Memory::shared())
    }

    /// An empty cache taking frames from `memory` (and counted against its budget),
    /// with no limit of its own. When the budget is spent, `alloc` first frees pages of
    /// this cache as [`DefaultCache::with_limit`] does at its limit.
    pub fn in_memory(memory: &'static Memory) -> Self {
        Self {
            index: Radix::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            active: List::EMPTY,
            inactive: List::EMPTY,
            memory,
            limit: usize::MAX,
            writable_mapped: 0,
        }
    }

    /// An empty cache of [`Memory::shared`] that holds at most `limit` pages. At the
    /// limit, `alloc` first makes room the way the page daemon would, within what it
    /// may do under the object lock with no I/O: it frees clean, idle, unwired,
    /// unmapped, unreferenced pages from the head of its inactive queue, per the
    /// [`Clock`] policy (it does not deactivate active pages: see `Scope::Cache` in
    /// `cache/clock.rs`) ([`Reclaimer`](crate::reclaim::Reclaimer) does the same across
    /// objects, and also writes dirty pages back). Only when none can go does `alloc`
    /// fail with [`Error::NoMemory`] (how tests model memory pressure).
    pub fn with_limit(limit: usize) -> Self {
        let mut cache = Self::new();
        cache.limit = limit;
        cache
    }

    /// The memory domain the cache's frames come from.
    pub fn memory_domain(&self) -> &'static Memory {
        self.memory
    }

    /// Changes the resident-page limit.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Pages on `queue`, from the head (most recently queued last).
    pub fn queue_len(&self, queue: PageQueue) -> usize {
        match queue {
            // Cannot overflow: the queues hold distinct resident pages.
            #[allow(clippy::arithmetic_side_effects)]
            PageQueue::None => self.index.len() - self.active.len - self.inactive.len,
            PageQueue::Active => self.active.len,
            PageQueue::Inactive => self.inactive.len,
        }
    }

    /// The offsets on `queue` in queue order (for tests and the page daemon).
    pub fn queue_offsets(&self, queue: PageQueue) -> Vec<u64> {
        let mut out = Vec::new();
        let mut cursor = match queue {
            PageQueue::None => return out,
            PageQueue::Active => self.active.head,
            PageQueue::Inactive => self.inactive.head,
        };
        while let Some(slot) = self.slot(cursor) {
            out.push(slot.page.offset());
            cursor = slot.next;
        }
        out
    }

    /// Maps the resident page at `offset` as a user mapping would (`MapState`).
    pub fn map(&mut self, offset: u64, state: MapState) {
        self.remap(offset, |_| state);
    }

    /// Moves the emulated mapping of the page at `offset` to `next` of the current one,
    /// keeping the count of writable mappings. Returns whether the page is resident.
    fn remap(&mut self, offset: u64, next: impl FnOnce(MapState) -> MapState) -> bool {
        let Some(slot) = self.slot_at_mut(offset) else {
            return false;
        };
        let was = slot.map;
        slot.map = next(was);
        let now = slot.map;
        match (was == MapState::Writable, now == MapState::Writable) {
            (false, true) => self.writable_mapped = self.writable_mapped.saturating_add(1),
            (true, false) => self.writable_mapped = self.writable_mapped.saturating_sub(1),
            _ => {}
        }
        true
    }

    /// The emulated mapping state of the page at `offset`.
    pub fn map_state(&self, offset: u64) -> MapState {
        self.slot_at(offset)
            .map_or(MapState::Unmapped, |slot| slot.map)
    }

    /// Stores `data` at byte `at` of the page at `offset` as a CPU store through a
    /// writable user mapping would: it lands and sets the modified bit. Returns
    /// [`Error::Busy`] when the store would fault instead (page absent, busy, or not
    /// mapped writable): the caller then takes a write fault through `getpages`.
    pub fn write_through_mapping(&mut self, offset: u64, at: usize, data: &[u8]) -> Result {
        if at.checked_add(data.len()).is_none_or(|end| end > PAGE_SIZE) {
            return Err(Error::Invalid);
        }
        let slot = self.slot_at_mut(offset).ok_or(Error::Busy)?;
        if slot.page.is_busy() || slot.map != MapState::Writable {
            return Err(Error::Busy);
        }
        // SAFETY: the page is resident and not busy, and the caller holds the object
        // lock exclusively (it has `&mut` to the cache), so no busy owner, device or
        // shared-lock reader is touching these bytes; `at + len <= PAGE_SIZE`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                slot.page.frame().as_ptr().add(at),
                data.len(),
            );
        }
        slot.modified = true;
        slot.referenced = true;
        Ok(())
    }

    /// An access to the page at `offset` through a user mapping, as an MMU records it:
    /// sets the page's referenced bit (a load through [`DefaultCache::mapped_bytes`]
    /// cannot, as it borrows the cache shared). Returns whether the page is resident.
    pub fn touch(&mut self, offset: u64) -> bool {
        self.slot_at_mut(offset)
            .map(|slot| slot.referenced = true)
            .is_some()
    }

    /// Whether the referenced bit of the page at `offset` is set.
    pub fn is_referenced(&self, offset: u64) -> bool {
        self.slot_at(offset).is_some_and(|slot| slot.referenced)
    }

    /// Makes room for one more page at the limit: frees up to the excess plus one of
    /// the pages the page daemon would free without I/O. Returns whether there is room.
    fn make_room(&mut self) -> bool {
        let resident = self.index.len();
        if resident < self.limit {
            return true;
        }
        // Cannot overflow: `resident >= limit`, and at most `usize::MAX` pages exist.
        #[allow(clippy::arithmetic_side_effects)]
        let want = resident - self.limit + 1;
        clock::sweep(self, &Clock, want, clock::Scope::Cache, &mut |_| false);
        self.index.len() < self.limit
    }

    /// The bytes of the resident, valid page at `offset` as a user mapping would read
    /// them, or `None` if it is absent, busy or not valid. Unlike the fast path, this
    /// sees pages mapped writable too: in this cache a store through a mapping
    /// ([`DefaultCache::write_through_mapping`]) needs `&mut self`, so none can land
    /// while the returned slice lives.
    pub fn mapped_bytes(&self, offset: u64) -> Option<&[u8]> {
        let slot = self.slot_at(offset)?;
        if slot.page.is_busy() || slot.page.flags.contains(crate::page::PageFlags::FAKE) {
            return None;
        }
        // SAFETY: the page is resident, valid and not busy: no device request and no
        // busy owner touches its bytes, and stores through this cache's emulated
        // mappings take `&mut self`, which the borrow of `self` excludes for the
        // slice's life; the frame holds PAGE_SIZE bytes while the page is resident.
        Some(unsafe { core::slice::from_raw_parts(slot.page.frame().as_ptr(), PAGE_SIZE) })
    }

    #[inline]
    fn slot(&self, index: u32) -> Option<&Slot> {
        self.slots.get(index as usize)?.as_ref()
    }

    #[inline]
    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot> {
        self.slots.get_mut(index as usize)?.as_mut()
    }

    #[inline]
    fn slot_at(&self, offset: u64) -> Option<&Slot> {
        self.slot(self.index.get(page_index(offset))?)
    }

    #[inline]
    fn slot_at_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        let index = self.index.get_remembered(page_index(offset))?;
        self.slot_mut(index)
    }

    fn list_mut(&mut self, queue: PageQueue) -> Option<&mut List> {
        match queue {
            PageQueue::None => None,
            PageQueue::Active => Some(&mut self.active),
            PageQueue::Inactive => Some(&mut self.inactive),
        }
    }

    fn unlink(&mut self, index: u32) {
        let Some(slot) = self.slot(index) else { return };
        let (queue, prev, next) = (slot.page.queue(), slot.prev, slot.next);
        if queue == PageQueue::None {
            return;
        }
        match self.slot_mut(prev) {
            Some(p) => p.next = next,
            None => {
                if let Some(list) = self.list_mut(queue) {
                    list.head = next;
                }
            }
        }
        match self.slot_mut(next) {
            Some(n) => n.prev = prev,
            None => {
                if let Some(list) = self.list_mut(queue) {
                    list.tail = prev;
                }
            }
        }
        if let Some(list) = self.list_mut(queue) {
            // Never saturates: the page was on this list.
            list.len = list.len.saturating_sub(1);
        }
        if let Some(slot) = self.slot_mut(index) {
            slot.prev = NIL;
            slot.next = NIL;
            slot.page.set_queue_status(PageQueue::None);
        }
    }

    fn push_tail(&mut self, index: u32, queue: PageQueue) {
        let Some(list) = self.list_mut(queue) else {
            return;
        };
        let old_tail = list.tail;
        list.tail = index;
        if list.head == NIL {
            list.head = index;
        }
        // Never saturates: the list holds distinct resident pages.
        list.len = list.len.saturating_add(1);
        if let Some(tail) = self.slot_mut(old_tail) {
            tail.next = index;
        }
        if let Some(slot) = self.slot_mut(index) {
            slot.prev = old_tail;
            slot.next = NIL;
            slot.page.set_queue_status(queue);
        }
    }
}

impl DefaultCache {
    /// Gives the frame of `slot`, whose page is gone from the index, back to the
    /// memory, uncounting the page's dirty and writeback states with it.
    fn give_frame(&self, slot: &Slot) {
        if slot.page.dirty() != DirtyStatus::Clean {
            self.memory.count_dirty(false);
        }
        if slot.page.in_writeback() {
            self.memory.count_writeback(false);
        }
        // SAFETY: the bytes and cookie are those of the frame `alloc` took for this
        // slot's page, which is gone: nothing else holds the frame.
        let frame = unsafe { Frame::new(slot.page.frame(), slot.frame_cookie) };
        self.memory.give_frame(frame);
    }
}

impl Drop for DefaultCache {
    fn drop(&mut self) {
        for slot in self.slots.iter().flatten() {
            self.give_frame(slot);
        }
    }
}

// SAFETY: every page's frame comes from the cache's `Memory`, whose `FrameSource`
// lends PAGE_SIZE initialized bytes, page aligned, to one page at a time; the cache
// gives a frame back only in `free` (or a failed `alloc`), after the page is gone from
// the index, or when the cache is dropped, so `Page::frame` stays valid while the page
// is resident.
unsafe impl PageCache for DefaultCache {
    #[inline]
    fn lookup(&self, offset: u64) -> Option<&Page> {
        self.slot_at(offset).map(|slot| &slot.page)
    }

    #[inline]
    fn lookup_mut(&mut self, offset: u64) -> Option<&mut Page> {
        self.slot_at_mut(offset).map(|slot| &mut slot.page)
    }

    fn range(&self, range: Range<u64>) -> impl Iterator<Item = &Page> {
        let mut next = page_index(range.start.saturating_add(PAGE_MASK));
        let end = page_index(range.end.saturating_add(PAGE_MASK));
        core::iter::from_fn(move || {
            let (index, slot) = self
                .index
                .next_present(next)
                .filter(|&(index, _)| index < end)?;
            // Cannot overflow: a page index (below 2^52).
            #[allow(clippy::arithmetic_side_effects)]
            {
                next = index + 1;
            }
            self.slot(slot).map(|slot| &slot.page)
        })
    }

    fn alloc(&mut self, offset: u64) -> Result<&mut Page> {
        debug_assert!(self.index.get(page_index(offset)).is_none());
        if !self.make_room() {
            return Err(Error::NoMemory);
        }
        let frame = match self.memory.take_frame() {
            Ok(frame) => frame,
            // The domain's budget is spent: free some of this cache's clean pages (no
            // I/O, no MMU work), balancing its queues if need be, and try once more.
            Err(_) => {
                let scope = clock::Scope::SpentBudget;
                clock::sweep(self, &Clock, DOMAIN_SWEEP, scope, &mut |_| false);
                self.memory.take_frame()?
            }
        };
        let page = Page::new(offset, frame.bytes());
        let slot = Slot {
            page,
            frame_cookie: frame.cookie(),
            prev: NIL,
            next: NIL,
            map: MapState::Unmapped,
            modified: false,
            referenced: false,
        };
        let index = match self.free_slots.pop() {
            Some(index) => {
                self.slots[index as usize] = Some(slot);
                index
            }
            None => {
                // Room in the free-slot list for every slot, so that `free` (the page
                // daemon's step, when memory is short) never allocates; the list is
                // empty here (`pop` found nothing).
                // Cannot overflow: a `Vec`'s length is below `isize::MAX`.
                #[allow(clippy::arithmetic_side_effects)]
                let room = self.slots.len() + 1;
                if reserve(&mut self.slots, 1).is_err()
                    || reserve(&mut self.free_slots, room).is_err()
                {
                    self.memory.give_frame(frame);
                    return Err(Error::NoMemory);
                }
                self.slots.push(Some(slot));
                // Cannot overflow: just pushed, so not empty.
                #[allow(clippy::arithmetic_side_effects)]
                let last = (self.slots.len() - 1) as u32;
                last
            }
        };
        if let Err(err) = self.index.insert(page_index(offset), index) {
            if let Some(slot) = self.slots[index as usize].take() {
                self.give_frame(&slot);
            }
            self.free_slots.push(index);
            return Err(err);
        }
        let slot = self.slot_mut(index).ok_or(Error::NoMemory)?;
        Ok(&mut slot.page)
    }

    fn free(&mut self, offset: u64) {
        let Some(index) = self.index.get(page_index(offset)) else {
            return;
        };
        self.unlink(index);
        self.index.remove(page_index(offset));
        if let Some(slot) = self.slots[index as usize].take() {
            if slot.map == MapState::Writable {
                self.writable_mapped = self.writable_mapped.saturating_sub(1);
            }
            self.give_frame(&slot);
        }
        self.free_slots.push(index);
    }

    #[inline]
    fn set_dirty(&mut self, offset: u64, status: DirtyStatus) {
        let dirty = status != DirtyStatus::Clean;
        let tagged = self
            .index
            .set_tag(page_index(offset), tag_index(Tag::Dirty), dirty);
        if let Some(slot) = tagged.and_then(|index| self.slot_mut(index)) {
            let was_dirty = slot.page.dirty() != DirtyStatus::Clean;
            slot.page.set_dirty_status(status);
            if was_dirty != dirty {
                self.memory.count_dirty(dirty);
            }
        }
    }

    #[inline]
    fn set_writeback(&mut self, offset: u64, writeback: bool) {
        let tagged = self
            .index
            .set_tag(page_index(offset), tag_index(Tag::Writeback), writeback);
        if let Some(slot) = tagged.and_then(|index| self.slot_mut(index)) {
            let was = slot.page.in_writeback();
            slot.page.set_writeback_status(writeback);
            if was != writeback {
                self.memory.count_writeback(writeback);
            }
        }
    }

    fn set_writeback_range(&mut self, range: Range<u64>, writeback: bool) {
        let pages = page_index(range.start)..page_index(range.end);
        let Self {
            index,
            slots,
            memory,
            ..
        } = self;
        index.set_tag_range(pages, tag_index(Tag::Writeback), writeback, |slot| {
            if let Some(Some(slot)) = slots.get_mut(slot as usize) {
                if slot.page.in_writeback() != writeback {
                    memory.count_writeback(writeback);
                }
                slot.page.set_writeback_status(writeback);
            }
        });
    }

    fn next_tagged(&self, tag: Tag, from: u64) -> Option<u64> {
        let from = page_index(from.checked_add(PAGE_MASK)?);
        self.index
            .next_tagged(tag_index(tag), from)
            .map(|index| index << PAGE_SHIFT)
    }

    fn any_tagged(&self, tag: Tag) -> bool {
        self.index.any_tagged(tag_index(tag))
    }

    fn set_queue(&mut self, offset: u64, queue: PageQueue) {
        let Some(index) = self.index.get(page_index(offset)) else {
            return;
        };
        self.unlink(index);
        self.push_tail(index, queue);
    }

    fn resident_pages(&self) -> usize {
        self.index.len()
    }

    fn memory(&self) -> Option<&'static Memory> {
        Some(self.memory)
    }

    /// Exact and O(1): the index counts every tag change and every removal of a
    /// tagged page.
    fn page_counts(&self) -> PageCounts {
        PageCounts {
            resident: self.index.len() as u64,
            dirty: self.index.tagged(tag_index(Tag::Dirty)) as u64,
            writeback: self.index.tagged(tag_index(Tag::Writeback)) as u64,
        }
    }

    fn is_mapped(&self, offset: u64) -> bool {
        self.map_state(offset) != MapState::Unmapped
    }

    fn mark_referenced(&mut self, offset: u64) {
        self.touch(offset);
    }

    fn clear_referenced(&mut self, offset: u64) -> bool {
        self.slot_at_mut(offset)
            .is_some_and(|slot| core::mem::take(&mut slot.referenced))
    }

    fn queue_len(&self, queue: PageQueue) -> usize {
        DefaultCache::queue_len(self, queue)
    }

    fn queue_first(&self, queue: PageQueue) -> Option<u64> {
        let head = match queue {
            PageQueue::None => return None,
            PageQueue::Active => self.active.head,
            PageQueue::Inactive => self.inactive.head,
        };
        self.slot(head).map(|slot| slot.page.offset())
    }

    fn queue_next(&self, offset: u64) -> Option<u64> {
        let slot = self.slot_at(offset)?;
        if slot.page.queue() == PageQueue::None {
            return None;
        }
        self.slot(slot.next).map(|slot| slot.page.offset())
    }

    #[inline]
    fn is_writable_mapped(&self, offset: u64) -> bool {
        self.writable_mapped != 0 && self.map_state(offset) == MapState::Writable
    }

    #[inline]
    fn protect(&mut self, offset: u64, protection: Protection) {
        self.remap(offset, |map| map.protected(protection));
    }

    #[inline]
    fn write_protect_and_clear_modified(&mut self, offset: u64) -> bool {
        // One lookup (this is writeback's step for every page it writes): `remap`'s
        // bookkeeping, inline.
        let Some(slot) = self.slot_at_mut(offset) else {
            return false;
        };
        let was_writable = slot.map == MapState::Writable;
        slot.map = slot.map.protected(Protection::ReadOnly);
        let modified = core::mem::take(&mut slot.modified);
        if was_writable {
            self.writable_mapped = self.writable_mapped.saturating_sub(1);
        }
        modified
    }

    #[inline]
    fn clear_modified(&mut self, offset: u64) -> bool {
        self.slot_at_mut(offset)
            .is_some_and(|slot| core::mem::take(&mut slot.modified))
    }

    fn is_modified(&self, offset: u64) -> bool {
        self.slot_at(offset).is_some_and(|slot| slot.modified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::PageFlags;

    const P: u64 = PAGE_SIZE as u64;

    fn cache_with(pages: u64) -> DefaultCache {
        let mut cache = DefaultCache::new();
        for i in 0..pages {
            cache.alloc(i * P).unwrap();
        }
        cache
    }

    #[test]
    fn writable_mappings_are_counted_through_every_transition() {
        let mut cache = cache_with(3);
        assert!(!cache.is_writable_mapped(0));
        cache.map(0, MapState::Writable);
        cache.map(P, MapState::Writable);
        cache.map(2 * P, MapState::ReadOnly);
        assert!(cache.is_writable_mapped(0) && cache.is_writable_mapped(P));
        assert!(!cache.is_writable_mapped(2 * P));
        cache.protect(0, Protection::ReadOnly);
        assert!(!cache.is_writable_mapped(0) && cache.is_writable_mapped(P));
        cache.map(0, MapState::Writable);
        cache.write_protect_and_clear_modified(0);
        assert!(!cache.is_writable_mapped(0));
        cache.free(P);
        assert_eq!(
            cache.writable_mapped, 0,
            "a freed page takes its mapping along"
        );
        cache.alloc(P).unwrap();
        assert!(!cache.is_writable_mapped(P));
        cache.map(P, MapState::Writable);
        assert!(cache.is_writable_mapped(P));
        assert_eq!(cache.writable_mapped, 1);
    }

    #[test]
    fn page_counts_agree_with_a_walk_through_random_transitions() {
        let mut cache = DefaultCache::new();
        let mut seed = 0x9e37_79b9_u64;
        let mut next = |bound: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % bound
        };
        // Each step walks the cache: fewer steps under Miri, which runs this ~100x slower.
        let steps = if cfg!(miri) { 300 } else { 4000 };
        for _ in 0..steps {
            let at = next(300) * P;
            match next(7) {
                0 | 1 => {
                    if cache.lookup(at).is_none() {
                        cache.alloc(at).unwrap();
                    }
                }
                2 => cache.free(at),
                3 => {
                    let status = [DirtyStatus::Clean, DirtyStatus::Dirty, DirtyStatus::Unknown]
                        [next(3) as usize];
                    cache.set_dirty(at, status);
                }
                4 => cache.set_writeback(at, next(2) == 0),
                _ => cache.set_writeback_range(at..at + next(40) * P, next(2) == 0),
            }
            assert_eq!(cache.page_counts(), PageCounts::by_walk(&cache));
        }
        let counts = cache.page_counts();
        assert!(counts.dirty > 0 && counts.writeback > 0, "{counts:?}");
        let offsets: Vec<u64> = cache.range(0..u64::MAX).map(|p| p.offset()).collect();
        for at in offsets {
            cache.free(at);
        }
        assert_eq!(cache.page_counts(), PageCounts::default());
    }

    #[test]
    fn frames_are_page_aligned_and_distinct() {
        let cache = cache_with(4);
        let frames: Vec<usize> = cache
            .range(0..u64::MAX)
            .map(|p| p.frame().as_ptr() as usize)
            .collect();
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| f % PAGE_SIZE == 0));
        let mut sorted = frames.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
    }

    #[test]
    fn tags_follow_dirty_status_and_next_tagged_is_ordered() {
        let mut cache = cache_with(10);
        assert!(!cache.any_tagged(Tag::Dirty));
        for off in [7 * P, 2 * P, 5 * P] {
            cache.set_dirty(off, DirtyStatus::Dirty);
        }
        cache.set_dirty(P, DirtyStatus::Unknown);
        assert!(cache.any_tagged(Tag::Dirty));
        let mut seen = Vec::new();
        let mut from = 0;
        while let Some(off) = cache.next_tagged(Tag::Dirty, from) {
            seen.push(off / P);
            from = off + P;
        }
        assert_eq!(seen, [1, 2, 5, 7]);
        cache.set_dirty(2 * P, DirtyStatus::Clean);
        assert_eq!(cache.next_tagged(Tag::Dirty, 2 * P), Some(5 * P));
        cache.free(5 * P);
        assert_eq!(cache.next_tagged(Tag::Dirty, 2 * P), Some(7 * P));
        cache.set_writeback(3 * P, true);
        assert!(cache.lookup(3 * P).unwrap().in_writeback());
        assert_eq!(cache.next_tagged(Tag::Writeback, 0), Some(3 * P));
        cache.set_writeback(3 * P, false);
        assert!(!cache.any_tagged(Tag::Writeback));
    }

    #[test]
    fn writeback_range_tags_exactly_the_resident_pages_of_the_range() {
        let mut cache = cache_with(300);
        for hole in [70u64, 128, 200] {
            cache.free(hole * P);
        }
        // Crosses three leaves of the index, and starts and ends mid-leaf.
        let range = 60 * P..210 * P;
        cache.set_writeback_range(range.clone(), true);
        let mut tagged = Vec::new();
        let mut from = 0;
        while let Some(at) = cache.next_tagged(Tag::Writeback, from) {
            tagged.push(at / P);
            from = at + P;
        }
        let expected: Vec<u64> = (60..210).filter(|i| ![70, 128, 200].contains(i)).collect();
        assert_eq!(tagged, expected);
        for page in cache.range(0..300 * P) {
            assert_eq!(page.in_writeback(), range.contains(&page.offset()));
        }
        cache.set_writeback_range(range, false);
        assert!(!cache.any_tagged(Tag::Writeback));
        assert!(cache.range(0..300 * P).all(|page| !page.in_writeback()));
    }

    #[test]
    fn queues_move_pages_in_constant_steps() {
        let mut cache = cache_with(5);
        for i in 0..5 {
            cache.set_queue(i * P, PageQueue::Active);
        }
        cache.set_queue(2 * P, PageQueue::Inactive);
        cache.set_queue(0, PageQueue::Inactive);
        assert_eq!(cache.queue_offsets(PageQueue::Active), [P, 3 * P, 4 * P]);
        assert_eq!(cache.queue_offsets(PageQueue::Inactive), [2 * P, 0]);
        cache.free(3 * P);
        assert_eq!(cache.queue_offsets(PageQueue::Active), [P, 4 * P]);
        cache.set_queue(P, PageQueue::None);
        assert_eq!(cache.queue_len(PageQueue::Active), 1);
        assert_eq!(cache.queue_len(PageQueue::None), 1);
        assert_eq!(cache.lookup(4 * P).unwrap().queue(), PageQueue::Active);
    }

    #[test]
    fn limit_refuses_allocation_and_slots_are_reused() {
        let mut cache = DefaultCache::with_limit(2);
        cache.alloc(0).unwrap();
        cache.alloc(P).unwrap();
        assert_eq!(cache.alloc(2 * P).err(), Some(Error::NoMemory));
        cache.free(0);
        let page = cache.alloc(2 * P).unwrap();
        assert!(page.flags.contains(PageFlags::BUSY | PageFlags::FAKE));
        assert_eq!(cache.resident_pages(), 2);
    }

    #[test]
    fn at_its_limit_the_cache_frees_only_idle_clean_unmapped_unreferenced_inactive_pages() {
        let mut cache = DefaultCache::with_limit(6);
        for i in 0..6 {
            cache
                .alloc(i * P)
                .unwrap()
                .flags
                .remove(PageFlags::BUSY | PageFlags::FAKE);
            cache.set_queue(i * P, PageQueue::Inactive);
        }
        cache.lookup_mut(0).unwrap().flags |= PageFlags::BUSY;
        cache.set_dirty(P, DirtyStatus::Dirty);
        cache.map(2 * P, MapState::ReadOnly);
        cache.touch(3 * P);
        cache.lookup_mut(4 * P).unwrap().wire_count = 1;
        cache.set_queue(5 * P, PageQueue::Active);
        assert_eq!(cache.queue_first(PageQueue::Inactive), Some(0));
        assert_eq!(cache.queue_next(0), Some(P));
        // Nothing can go: the referenced page gets its second chance (reactivated).
        assert_eq!(cache.alloc(6 * P).err(), Some(Error::NoMemory));
        assert_eq!(cache.lookup(3 * P).unwrap().queue(), PageQueue::Active);
        assert!(!cache.is_referenced(3 * P));
        // An idle, clean, unmapped page on the inactive queue makes room.
        cache.set_queue(3 * P, PageQueue::Inactive);
        cache.alloc(6 * P).unwrap();
        assert!(cache.lookup(3 * P).is_none());
        assert_eq!(cache.resident_pages(), 6);
    }

    #[test]
    fn mapping_store_sets_modified_and_respects_protection() {
        let mut cache = cache_with(1);
        assert_eq!(
            cache.write_through_mapping(0, 0, b"x"),
            Err(Error::Busy),
            "busy page faults"
        );
        cache.lookup_mut(0).unwrap().flags.remove(PageFlags::BUSY);
        assert_eq!(
            cache.write_through_mapping(0, 0, b"x"),
            Err(Error::Busy),
            "unmapped page faults"
        );
        cache.map(0, MapState::Writable);
        cache.write_through_mapping(0, 10, b"hi").unwrap();
        assert!(cache.is_modified(0));
        cache.protect(0, Protection::ReadOnly);
        assert_eq!(cache.write_through_mapping(0, 0, b"x"), Err(Error::Busy));
        assert!(cache.clear_modified(0));
        assert!(!cache.clear_modified(0));
        assert_eq!(
            cache.write_through_mapping(0, PAGE_SIZE - 1, b"xy"),
            Err(Error::Invalid)
        );
    }

    #[test]
    fn write_protect_and_clear_modified_is_protect_then_clear() {
        let mut cache = cache_with(3);
        for offset in [0, P, 2 * P] {
            cache
                .lookup_mut(offset)
                .unwrap()
                .flags
                .remove(PageFlags::BUSY);
        }
        cache.map(0, MapState::Writable);
        cache.write_through_mapping(0, 0, b"x").unwrap();
        cache.map(P, MapState::Writable);
        assert!(cache.write_protect_and_clear_modified(0));
        assert!(!cache.write_protect_and_clear_modified(P));
        assert!(!cache.write_protect_and_clear_modified(2 * P));
        assert_eq!(cache.map_state(0), MapState::ReadOnly);
        assert_eq!(cache.map_state(P), MapState::ReadOnly);
        assert_eq!(
            cache.map_state(2 * P),
            MapState::Unmapped,
            "not mapped by it"
        );
        assert_eq!(cache.write_through_mapping(0, 0, b"x"), Err(Error::Busy));
        assert!(!cache.write_protect_and_clear_modified(0));
    }
}
