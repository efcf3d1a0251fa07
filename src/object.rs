//! The memory object of one vnode: its pages, sizes, flags and locks.
//!
//! [`VmObject`] bundles what the reference spreads over the vnode, its genfs node and
//! its uvm_object: the object lock (an [`RwLock`] over [`ObjectState`]), the node
//! lock (a [`SleepRwLock`] held across read I/O and block allocation) and the wait
//! queue on which busy-page and in-flight-write waiters sleep.

use core::ops::Range;

use bitflags::bitflags;

use crate::error::{Error, Result};
use crate::hooks::{PageCache, Protection};
use crate::page::{DirtyStatus, PageFlags, PageQueue, PageRef};
use crate::sync::{ReadGuard, RwLock, SleepRwLock, Wait, WaitQueue, WriteGuard};

bitflags! {
    /// Vnode state bits kept under the object lock (the reference's `v_iflag` bits
    /// that the pager reads and writes).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct ObjectFlags: u32 {
        /// On the syncer's work list: it may have dirty pages.
        const ON_WORKLIST = 1 << 0;
        /// Mapped writable somewhere.
        const WRITE_MAPPED = 1 << 1;
        /// Mapped writable and possibly written through that mapping since the last
        /// flush (its mtime must be updated when flushed).
        const WRITE_MAPPED_DIRTY = 1 << 2;
        /// Mapped into some address space (direct I/O falls back).
        const MAPPED = 1 << 3;
    }
}

/// Everything protected by the object lock.
pub struct ObjectState<C> {
    cache: C,
    size: u64,
    write_size: u64,
    flags: ObjectFlags,
    writes_in_flight: u32,
    dirty_generation: u64,
    write_error: Option<Error>,
}

/// One vnode's memory object. Embed one in each vnode and return it from
/// [`Vnode::object`](crate::Vnode::object).
///
/// ```
/// use genpager::{VmObject, cache::DefaultCache};
/// let object = VmObject::new(DefaultCache::new(), 10_000);
/// assert_eq!(object.size(), 10_000);
/// ```
pub struct VmObject<C> {
    state: RwLock<ObjectState<C>>,
    node_lock: SleepRwLock,
    waiters: WaitQueue,
}

/// A write counted in flight on its object ([`ObjectState::start_write`]), with the
/// write size when it was counted. Whoever completes the write ends the count
/// ([`ObjectState::end_write`]); until then a synchronous flush waits for it.
#[must_use = "a counted write must be ended, or synchronous flushes wait for it forever"]
#[derive(Debug)]
pub(crate) struct InFlight {
    write_size: u64,
}

impl InFlight {
    /// The write size when the write was counted: nothing past it is written.
    pub(crate) fn write_size(&self) -> u64 {
        self.write_size
    }
}

impl<C: PageCache> VmObject<C> {
    /// A new object of `size` bytes with no resident pages.
    pub fn new(cache: C, size: u64) -> Self {
        Self {
            state: RwLock::new(ObjectState {
                cache,
                size,
                write_size: size,
                flags: ObjectFlags::empty(),
                writes_in_flight: 0,
                dirty_generation: 0,
                write_error: None,
            }),
            node_lock: SleepRwLock::new(),
            waiters: WaitQueue::new(),
        }
    }

    /// Takes the object lock exclusively.
    pub fn lock(&self) -> WriteGuard<'_, ObjectState<C>> {
        self.state.write()
    }

    /// Takes the object lock shared.
    pub fn read(&self) -> ReadGuard<'_, ObjectState<C>> {
        self.state.read()
    }

    /// The node lock (the reference's genfs node lock): held shared across read I/O
    /// and exclusively while blocks may be allocated or the file truncated.
    pub fn node_lock(&self) -> &SleepRwLock {
        &self.node_lock
    }

    /// The file size.
    pub fn size(&self) -> u64 {
        self.state.read().size
    }

    /// Wakes every thread sleeping on a page or on in-flight writes of this object.
    pub(crate) fn wake(&self) {
        self.waiters.notify_all();
    }

    /// Marks the page at `offset` wanted, drops the object lock and sleeps until some
    /// page of the object is unbusied. The caller re-takes the lock and looks again.
    pub(crate) fn sleep_on_page(&self, mut state: WriteGuard<'_, ObjectState<C>>, offset: u64) {
        if let Some(page) = state.cache.lookup_mut(offset) {
            page.flags |= PageFlags::WANTED;
        }
        let ticket = self.waiters.ticket();
        drop(state);
        self.waiters.wait(ticket);
    }

    /// Sleeps until no write of this object is in flight (the reference's
    /// `vflushbuf`-style wait on `v_numoutput`). Returns with the lock held.
    pub(crate) fn wait_for_writes<'a>(
        &'a self,
        mut state: WriteGuard<'a, ObjectState<C>>,
    ) -> WriteGuard<'a, ObjectState<C>> {
        while state.writes_in_flight > 0 {
            let ticket = self.waiters.ticket();
            drop(state);
            self.waiters.wait(ticket);
            state = self.state.write();
        }
        state
    }

    /// Makes busy the pages at `start`, `start + PAGE_SIZE`, … (`count` of them) in
    /// ascending order, allocating absent ones as `FAKE` (the reference's
    /// `uvn_findpages`).
    ///
    /// With `wait`, a busy page is waited for (dropping and re-taking the lock);
    /// without it, a busy page ends the search with [`Error::Busy`]. On any error the
    /// pages busied so far are released and nothing is returned.
    pub(crate) fn find_pages<'a>(
        &'a self,
        mut state: WriteGuard<'a, ObjectState<C>>,
        start: u64,
        count: usize,
        wait: Wait,
        pages: &mut alloc::vec::Vec<PageRef>,
    ) -> (WriteGuard<'a, ObjectState<C>>, Result) {
        let first = pages.len();
        if let Err(err) = pages.try_reserve(count) {
            let _ = err;
            return (state, Err(Error::NoMemory));
        }
        let mut offset = start;
        // Cannot overflow: `pages` only grows past `first` (or is truncated back to it).
        #[allow(clippy::arithmetic_side_effects)]
        while pages.len() - first < count {
            let found = match state.cache.lookup_mut(offset) {
                Some(page) if page.is_busy() => None,
                Some(page) => {
                    page.flags |= PageFlags::BUSY;
                    Some(page.frame())
                }
                None => match state.cache.alloc(offset) {
                    Ok(page) => Some(page.frame()),
                    Err(err) => {
                        let wake = state.release_pages(&pages[first..]);
                        pages.truncate(first);
                        self.wake_if(wake);
                        return (state, Err(err));
                    }
                },
            };
            match found {
                Some(frame) => {
                    pages.push(PageRef { offset, frame });
                    // Cannot overflow: callers' ranges end at a checked `request_end`
                    // (or are one page below `max_file_size`).
                    #[allow(clippy::arithmetic_side_effects)]
                    {
                        offset += crate::page::PAGE_SIZE as u64;
                    }
                }
                None if wait == Wait::Sleep => {
                    self.sleep_on_page(state, offset);
                    state = self.state.write();
                }
                None => {
                    let wake = state.release_pages(&pages[first..]);
                    pages.truncate(first);
                    self.wake_if(wake);
                    return (state, Err(Error::Busy));
                }
            }
        }
        (state, Ok(()))
    }

    /// Frees every resident page in `range`, waiting for the busy ones, and discards
    /// their data (dirty or not). For a truncate and a direct write: a synchronous
    /// `putpages` skips pages another thread holds busy (a fault whose caller still
    /// holds them, a read-ahead, someone else's write), which must not survive as stale
    /// copies once released. The caller keeps new pages from appearing in `range`; the
    /// threads holding pages busy release them without any lock but the object lock.
    pub(crate) fn free_range_waiting(&self, range: Range<u64>) {
        loop {
            let mut state = self.state.write();
            let next = state
                .cache
                .range(range.clone())
                .next()
                .map(|page| (page.offset(), page.is_busy()));
            match next {
                None => return,
                Some((at, true)) => self.sleep_on_page(state, at),
                Some((at, false)) => {
                    state.cache.protect(at, Protection::None);
                    state.cache.free(at);
                }
            }
        }
    }

    /// Releases busy pages that did not become valid ([`ObjectState::release_pages`]),
    /// drops the object lock, and wakes whoever waits for them: how a fault gives back
    /// what it collected when it fails or starts over.
    pub(crate) fn release(&self, mut state: WriteGuard<'_, ObjectState<C>>, pages: &[PageRef]) {
        let wake = state.release_pages(pages);
        drop(state);
        self.wake_if(wake);
    }

    pub(crate) fn wake_if(&self, wake: bool) {
        if wake {
            self.wake();
        }
    }
}

impl<C: PageCache> ObjectState<C> {
    /// The resident pages.
    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// The resident pages, for changing them (a host emulating its MMU, or a test).
    pub fn cache_mut(&mut self) -> &mut C {
        &mut self.cache
    }

    /// The file size (the reference's `v_size`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The size up to which writes may go (`v_writesize`); at least [`Self::size`].
    pub fn write_size(&self) -> u64 {
        self.write_size
    }

    /// Sets both sizes. Use the crate's `setsize` helper rather than this when pages
    /// past a shrunk end of file may be resident.
    pub fn set_sizes(&mut self, size: u64, write_size: u64) {
        self.size = size;
        self.write_size = write_size.max(size);
    }

    /// The vnode state bits.
    pub fn flags(&self) -> ObjectFlags {
        self.flags
    }

    /// Sets or clears vnode state bits (the host does this when it maps the file).
    pub fn set_flags(&mut self, flags: ObjectFlags, on: bool) {
        self.flags.set(flags, on);
    }

    /// How many writes of this object are in flight (`v_numoutput`).
    pub fn writes_in_flight(&self) -> u32 {
        self.writes_in_flight
    }

    /// The write error waiting to be reported to the next synchronous flush.
    pub fn pending_write_error(&self) -> Option<Error> {
        self.write_error
    }

    pub(crate) fn take_write_error(&mut self) -> Option<Error> {
        self.write_error.take()
    }

    pub(crate) fn latch_write_error(&mut self, error: Error) {
        self.write_error.get_or_insert(error);
    }

    pub(crate) fn dirty_generation(&self) -> u64 {
        self.dirty_generation
    }

    /// Counts one write in flight, from before the lock is dropped for it, and notes
    /// the write size it must not write past.
    pub(crate) fn start_write(&mut self) -> InFlight {
        // Cannot overflow: each write in flight holds a busy page (a flush's) or a
        // waiting thread (direct I/O), far fewer than 2^32.
        #[allow(clippy::arithmetic_side_effects)]
        {
            self.writes_in_flight += 1;
        }
        debug_assert!(self.size <= self.write_size);
        InFlight {
            write_size: self.write_size,
        }
    }

    /// Ends the count of `write`; returns whether waiters must be woken (the last
    /// write in flight is done).
    pub(crate) fn end_write(&mut self, write: &InFlight) -> bool {
        let InFlight { .. } = write;
        debug_assert!(self.writes_in_flight > 0);
        // Cannot underflow: `write` is the token of a `start_write`, consumed here.
        #[allow(clippy::arithmetic_side_effects)]
        {
            self.writes_in_flight -= 1;
        }
        self.writes_in_flight == 0
    }

    pub(crate) fn set_flag(&mut self, flag: ObjectFlags, on: bool) {
        self.flags.set(flag, on);
    }

    /// Records that pages of the object became dirty (the reference's
    /// `genfs_markdirty`): bumps the dirty generation and notes a write through a
    /// writable mapping. Returns whether the vnode must join the syncer's work list
    /// (`vnode::note_dirty` does that).
    #[must_use = "a vnode that becomes dirty joins the work list"]
    pub(crate) fn note_dirty(&mut self) -> bool {
        // A generation, only compared for change: wrapping is harmless.
        self.dirty_generation = self.dirty_generation.wrapping_add(1);
        if self.flags & (ObjectFlags::WRITE_MAPPED | ObjectFlags::WRITE_MAPPED_DIRTY)
            == ObjectFlags::WRITE_MAPPED
        {
            self.flags |= ObjectFlags::WRITE_MAPPED_DIRTY;
        }
        let joins = !self.flags.contains(ObjectFlags::ON_WORKLIST);
        self.flags |= ObjectFlags::ON_WORKLIST;
        joins
    }

    /// Unbusies one page (the reference's `uvm_page_unbusy`): frees it if it was
    /// released, otherwise clears `BUSY` and `WANTED`. Returns whether a waiter must
    /// be woken.
    pub(crate) fn unbusy(&mut self, offset: u64) -> bool {
        self.unbusy_onto(offset, None, PageFlags::RELEASED)
    }

    /// [`Self::unbusy`] for a page whose write succeeded: one the page daemon was
    /// paging out (`PAGEOUT`) is freed too.
    pub(crate) fn unbusy_written(&mut self, offset: u64) -> bool {
        self.unbusy_onto(offset, None, PageFlags::RELEASED | PageFlags::PAGEOUT)
    }

    /// [`Self::unbusy`], putting a kept page that is on no queue onto `queue`, and
    /// freeing it if it carries any of `free_if`.
    fn unbusy_onto(&mut self, offset: u64, queue: Option<PageQueue>, free_if: PageFlags) -> bool {
        let Some(page) = self.cache.lookup_mut(offset) else {
            debug_assert!(false, "unbusy of a page that is not resident");
            return false;
        };
        debug_assert!(page.is_busy());
        let wanted = page.flags.contains(PageFlags::WANTED);
        if page.flags.intersects(free_if) {
            self.cache.free(offset);
            return wanted;
        }
        page.flags.remove(PageFlags::BUSY | PageFlags::WANTED);
        if let Some(queue) = queue.filter(|_| page.queue() == PageQueue::None) {
            self.cache.set_queue(offset, queue);
        }
        wanted
    }

    /// Releases busy pages that did not become valid: never-read (`FAKE`) pages are
    /// freed, the rest unbusied (the reference's `genfs_rel_pages`). Returns whether a
    /// waiter must be woken.
    pub(crate) fn release_pages(&mut self, pages: &[PageRef]) -> bool {
        let mut wake = false;
        for page in pages {
            if let Some(resident) = self.cache.lookup_mut(page.offset) {
                if resident.flags.contains(PageFlags::FAKE) {
                    resident.flags |= PageFlags::RELEASED;
                }
            }
            wake |= self.unbusy(page.offset);
        }
        wake
    }

    /// Unbusies a page that now holds valid data and puts it on a page queue.
    pub(crate) fn settle(&mut self, offset: u64) -> bool {
        self.unbusy_onto(offset, Some(PageQueue::Active), PageFlags::RELEASED)
    }

    /// Sets a page's dirty status, going through the cache so tags follow.
    pub(crate) fn mark(&mut self, offset: u64, status: DirtyStatus) {
        self.cache.set_dirty(offset, status);
    }
}

#[cfg(all(test, not(loom), feature = "std"))]
mod tests {
    use super::*;
    use crate::cache::DefaultCache;
    use crate::page::PAGE_SIZE;
    use alloc::vec::Vec;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    const P: u64 = PAGE_SIZE as u64;

    #[test]
    fn busy_page_waiter_sleeps_and_is_woken_on_unbusy() {
        let object = Arc::new(VmObject::new(DefaultCache::new(), 8 * P));
        let mut held = Vec::new();
        let (state, found) = object.find_pages(object.lock(), P, 2, Wait::Sleep, &mut held);
        found.unwrap();
        drop(state);
        let waiter = {
            let object = object.clone();
            thread::spawn(move || {
                let mut pages = Vec::new();
                let (mut state, found) =
                    object.find_pages(object.lock(), 0, 3, Wait::Sleep, &mut pages);
                found.unwrap();
                let offsets: Vec<u64> = pages.iter().map(|p| p.offset).collect();
                let wake = state.release_pages(&pages);
                drop(state);
                object.wake_if(wake);
                offsets
            })
        };
        thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "the waiter sleeps on the busy page");
        {
            let state = object.read();
            assert!(
                state.cache().lookup(0).unwrap().is_busy(),
                "it holds page 0, ascending"
            );
            assert!(
                state
                    .cache()
                    .lookup(P)
                    .unwrap()
                    .flags
                    .contains(PageFlags::WANTED)
            );
        }
        let mut state = object.lock();
        for page in &held {
            state
                .cache_mut()
                .lookup_mut(page.offset)
                .unwrap()
                .flags
                .remove(PageFlags::FAKE);
        }
        let wake = held
            .iter()
            .fold(false, |wake, page| wake | state.settle(page.offset));
        drop(state);
        assert!(wake, "unbusying a WANTED page asks for a wakeup");
        object.wake_if(wake);
        assert_eq!(waiter.join().unwrap(), [0, P, 2 * P]);
        assert_eq!(
            object
                .read()
                .cache()
                .range(0..u64::MAX)
                .filter(|p| p.is_busy())
                .count(),
            0
        );
    }

    #[test]
    fn find_pages_without_waiting_gives_busy_and_releases_what_it_took() {
        let object = VmObject::new(DefaultCache::new(), 8 * P);
        let mut held = Vec::new();
        let (state, found) = object.find_pages(object.lock(), 2 * P, 1, Wait::Sleep, &mut held);
        found.unwrap();
        let mut pages = Vec::new();
        let (state, found) = object.find_pages(state, 0, 4, Wait::DontSleep, &mut pages);
        assert_eq!(found, Err(Error::Busy));
        assert!(pages.is_empty());
        assert_eq!(
            state.cache().resident_pages(),
            1,
            "pages 0 and 1 were made and freed again"
        );
    }
}
