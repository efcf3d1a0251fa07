//! The memory object of one vnode: its pages, sizes, flags and locks.
//!
//! [`VmObject`] bundles what the reference spreads over the vnode, its genfs node and
//! its uvm_object: the object lock (an [`RwLock`] over [`ObjectState`]), the node
//! lock (a [`SleepRwLock`] held across read I/O and block allocation) and the wait
//! channel on which busy-page waiters (keyed by the page's offset) and in-flight-write
//! waiters (keyed by [`IN_FLIGHT`]) sleep.

use core::num::NonZeroU32;
use core::ops::{BitOr, BitOrAssign, Range};

use bitflags::bitflags;

use crate::error::{Error, Result};
use crate::errseq::{ErrorCursor, WriteAttempt, WriteErrors};
use crate::hooks::{PageCache, Protection};
use crate::page::{
    DirtyStatus, PAGE_SIZE, PageFlags, PageQueue, PageRef, Tag, round_page, trunc_page,
};
use crate::readahead::ReadAhead;
use crate::stats::{IoCounters, IoStats, ObjectStats};
use crate::sync::{Mutex, MutexGuard, ReadGuard, RwLock, SleepRwLock, Wait, WaitQueue, WriteGuard};

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
    write_errors: WriteErrors,
    /// When the syncer first found the object dirty ([`flush_expired`](crate::flush_expired)).
    dirty_seen: Option<u64>,
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
    /// The read-ahead of readers that bring none of their own ([`read`](crate::read),
    /// synchronous read faults). A leaf lock: nothing is taken while it is held.
    read_ahead: Mutex<ReadAhead>,
    /// What the object's I/O did: relaxed atomics, bumped without any lock.
    io: IoCounters,
}

/// Who went through the pages [`VmObject::used_once`] ages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UsedBy {
    /// A read: a page read again gets a second chance.
    Read,
    /// A write: its own faults are one use.
    Write,
}

/// The wait key of a thread waiting for an object's writes in flight: no page offset
/// (a multiple of the page size below the largest file size) takes it.
const IN_FLIGHT: u64 = u64::MAX;

/// Whom a change under the object lock must wake, once the lock may be dropped: the
/// waiters for the pages in a covering range of offsets, and those for the writes in
/// flight. Made by unbusying wanted pages ([`ObjectState::settle`] and friends) and by
/// ending the last write in flight ([`ObjectState::end_write`]); combined with `|`;
/// handed to [`VmObject::wake_if`]. The default wakes nobody.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "the waiters a change concerns must be woken (VmObject::wake_if)"]
pub(crate) struct Wakeup {
    /// The first and last offsets of the pages waited for, if any.
    pages: Option<(u64, u64)>,
    /// Whether the waiters for the writes in flight are concerned.
    writes: bool,
}

impl Wakeup {
    /// Nobody to wake.
    pub(crate) const NONE: Self = Self {
        pages: None,
        writes: false,
    };

    /// The waiters for the page at `offset`.
    pub(crate) fn page(offset: u64) -> Self {
        Self {
            pages: Some((offset, offset)),
            writes: false,
        }
    }

    /// The waiters for the writes in flight.
    fn writes() -> Self {
        Self {
            pages: None,
            writes: true,
        }
    }

    /// Whether nobody is to be woken.
    pub(crate) fn is_none(self) -> bool {
        self == Self::NONE
    }
}

impl BitOr for Wakeup {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        let pages = match (self.pages, other.pages) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (pages, None) | (None, pages) => pages,
        };
        Self {
            pages,
            writes: self.writes || other.writes,
        }
    }
}

impl BitOrAssign for Wakeup {
    fn bitor_assign(&mut self, other: Self) {
        *self = *self | other;
    }
}

/// A write counted in flight on its object ([`ObjectState::start_write`]), with the
/// write size when it was counted. Whoever completes the write ends the count
/// ([`ObjectState::end_write`]); until then a synchronous flush waits for it.
#[must_use = "a counted write must be ended, or synchronous flushes wait for it forever"]
#[derive(Debug)]
pub(crate) struct InFlight {
    write_size: u64,
    /// The attempt it belongs to, for counting failed attempts.
    attempt: WriteAttempt,
}

impl InFlight {
    /// The write size when the write was counted: nothing past it is written.
    pub(crate) fn write_size(&self) -> u64 {
        self.write_size
    }

    /// The attempt the write belongs to.
    pub(crate) fn attempt(&self) -> WriteAttempt {
        self.attempt
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
                write_errors: WriteErrors::new(),
                dirty_seen: None,
            }),
            node_lock: SleepRwLock::new(),
            waiters: WaitQueue::new(),
            read_ahead: Mutex::new(ReadAhead::new()),
            io: IoCounters::new(),
        }
    }

    /// A snapshot of the object's figures: its page counts, taken under the object
    /// lock (held shared, briefly: [`PageCache::page_counts`]), and its I/O counters
    /// (see [`stats`](crate::stats)). Sum them over objects with
    /// [`Stats::add`](crate::stats::Stats::add).
    pub fn stats(&self) -> ObjectStats {
        let pages = self.state.read().cache.page_counts();
        ObjectStats {
            pages,
            io: self.io_stats(),
        }
    }

    /// The object's I/O counters alone, without taking any lock.
    pub fn io_stats(&self) -> IoStats {
        self.io.snapshot()
    }

    /// The live I/O counters, for the paths that count.
    pub(crate) fn io(&self) -> &IoCounters {
        &self.io
    }

    /// Takes the object lock exclusively.
    pub fn lock(&self) -> WriteGuard<'_, ObjectState<C>> {
        self.state.write()
    }

    /// Takes the object lock exclusively if it is free, without waiting (the page
    /// daemon's `rw_tryenter`: it never waits for an object a fault holds).
    pub fn try_lock(&self) -> Option<WriteGuard<'_, ObjectState<C>>> {
        self.state.try_write()
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

    /// The object's own read-ahead state, used by [`read`](crate::read) and by
    /// synchronous read faults that bring none (a leaf lock: take nothing while
    /// holding it). A kernel may reset it, set its maximum window, or set its advice
    /// (`fadvise` for a kernel without a state per open file: [`read`](crate::read)
    /// follows it; a fault follows its own [`Fault::advice`](crate::Fault::advice)).
    pub fn read_ahead(&self) -> MutexGuard<'_, ReadAhead> {
        self.read_ahead.lock()
    }

    /// Ages the pages a read or write has gone through, `from .. to` (the
    /// reference's sequential advice deactivating the pages behind a fault; Linux's
    /// use-once): a page used for the first time since it was queued moves to the
    /// inactive queue, where a bounded cache, a cache whose memory budget is spent, or
    /// the page daemon frees it first (once clean); one used again (already inactive)
    /// is marked referenced, so the page daemon gives it a second chance; one the MMU
    /// or a fault marked referenced stays active. Only pages gone through to their end
    /// (or to the end of file) count. A write ([`UsedBy::Write`]) deactivates every
    /// page it wrote through and clears its referenced bit: the write's own faults
    /// (one allocating blocks, one copying, one per batch a page straddles) are one
    /// use. A hint: skipped when another thread holds the object lock.
    // Cannot overflow: `to <= size <= max_file_size`.
    #[allow(clippy::arithmetic_side_effects)]
    pub(crate) fn used_once(&self, from: u64, to: u64, by: UsedBy) {
        if from >= to {
            return;
        }
        let Some(mut state) = self.try_lock() else {
            return;
        };
        let end = if to >= state.size() {
            round_page(to)
        } else {
            trunc_page(to)
        };
        let cache = state.cache_mut();
        let mut at = trunc_page(from);
        while at < end {
            let idle = cache
                .lookup(at)
                .filter(|page| !page.is_busy() && page.wire_count == 0)
                .map(|page| page.queue());
            match (idle, by) {
                (Some(PageQueue::None) | None, _) => {}
                (Some(_), UsedBy::Write) => {
                    cache.clear_referenced(at);
                    cache.set_queue(at, PageQueue::Inactive);
                }
                (Some(PageQueue::Active), UsedBy::Read) => {
                    if cache.clear_referenced(at) {
                        cache.mark_referenced(at);
                    } else {
                        cache.set_queue(at, PageQueue::Inactive);
                    }
                }
                (Some(PageQueue::Inactive), UsedBy::Read) => cache.mark_referenced(at),
            }
            at += PAGE_SIZE as u64;
        }
    }

    /// The file size.
    pub fn size(&self) -> u64 {
        self.state.read().size
    }

    /// A cursor on this object's write errors that reports those from now on: what a
    /// kernel keeps in each open file description, sampled when the file is opened,
    /// and passes to [`fsync`](crate::fsync) and [`Self::check_errors`]. A write that
    /// failed before it was made is not reported through it.
    pub fn error_cursor(&self) -> ErrorCursor {
        self.state.read().write_errors.cursor()
    }

    /// Reports through `cursor` the latest write failure it has not seen and moves it
    /// on, without flushing anything (what [`fsync`](crate::fsync) does after its
    /// flush; a kernel may call it where it reports write errors without one). A
    /// failed object ([`Self::is_failed`]) reports its error every time.
    pub fn check_errors(&self, cursor: &mut ErrorCursor) -> Result {
        self.state.read().write_errors.check(cursor)
    }

    /// Whether the object is failed ([`ObjectState::is_failed`]): a reclaimer skips it
    /// (its dirty pages cannot be cleaned; a `CLEANIT | FREE` flush would free only its
    /// clean pages and return the error).
    pub fn is_failed(&self) -> bool {
        self.state.read().is_failed()
    }

    /// Ends the failed state ([`ObjectState::is_failed`]) and the count of failed
    /// attempts in a row: the next flush writes the dirty pages again. A kernel calls it
    /// once the device has recovered. Does nothing to an object that is not failed.
    pub fn clear_failed(&self) {
        self.state.write().write_errors.clear_failed();
    }

    /// Sets how many failed attempts in a row to write its pages mark the object failed
    /// ([`DEFAULT_WRITE_FAILURE_LIMIT`](crate::DEFAULT_WRITE_FAILURE_LIMIT) until set;
    /// `None`: never). An attempt is one flush: however many of its writes fail, it
    /// counts once; a write that succeeds starts the count again. An object already
    /// failed stays so.
    pub fn set_write_failure_limit(&self, limit: Option<NonZeroU32>) {
        self.state.write().write_errors.set_limit(limit);
    }

    /// Marks the busy page at `offset` wanted, drops the object lock and sleeps until
    /// that page is unbusied (or freed). The caller re-takes the lock and looks again;
    /// if the page is no longer resident and busy, this returns at once.
    pub(crate) fn sleep_on_page(&self, mut state: WriteGuard<'_, ObjectState<C>>, offset: u64) {
        match state.cache.lookup_mut(offset) {
            Some(page) if page.is_busy() => page.flags |= PageFlags::WANTED,
            _ => return,
        }
        self.waiters.sleep(offset, state);
    }

    /// Sleeps until no write of this object is in flight (the reference's
    /// `vflushbuf`-style wait on `v_numoutput`). Returns with the lock held.
    pub(crate) fn wait_for_writes<'a>(
        &'a self,
        mut state: WriteGuard<'a, ObjectState<C>>,
    ) -> WriteGuard<'a, ObjectState<C>> {
        while state.writes_in_flight > 0 {
            self.waiters.sleep(IN_FLIGHT, state);
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

    /// Wakes the threads `wake` names: those sleeping on a page in its range, and
    /// those waiting for the writes in flight if it says so. Never sleeps nor
    /// allocates: a completion may call it in an interrupt handler.
    pub(crate) fn wake_if(&self, wake: Wakeup) {
        self.wake_except(wake, &[]);
    }

    /// [`VmObject::wake_if`], leaving asleep the waiters of `still_busy` (ascending
    /// offsets inside the wakeup's covering range that stay busy: the pages a fault
    /// hands out between pages it settles).
    pub(crate) fn wake_except(&self, wake: Wakeup, still_busy: &[PageRef]) {
        if wake.is_none() {
            return;
        }
        let pages = wake.pages.map_or(0..0, |(first, last)| {
            // Offsets stay below `IN_FLIGHT`, so the range never reaches it.
            first..last.saturating_add(1)
        });
        let busy = |key: u64| {
            still_busy
                .binary_search_by_key(&key, |page| page.offset)
                .is_ok()
        };
        self.waiters.wake_where(|key| {
            (pages.contains(&key) && !busy(key)) || (wake.writes && key == IN_FLIGHT)
        });
    }

    /// How many threads sleep on the page at `offset` right now (for tests).
    #[cfg(test)]
    pub(crate) fn sleepers_on_page(&self, offset: u64) -> usize {
        self.waiters.sleepers(offset)
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

    /// When the syncer first found the object dirty, on its clock
    /// ([`flush_expired`](crate::flush_expired)).
    pub(crate) fn dirty_seen(&self) -> Option<u64> {
        self.dirty_seen
    }

    pub(crate) fn set_dirty_seen(&mut self, seen: Option<u64>) {
        self.dirty_seen = seen;
    }

    /// The write error waiting to be reported to the next synchronous cleaning flush
    /// that brings no cursor of its own ([`putpages`](crate::putpages) with
    /// `CLEANIT | SYNCIO`): the latest failure the object's own cursor has not reported.
    /// Cursors of open files ([`VmObject::error_cursor`]) report independently of it.
    pub fn pending_write_error(&self) -> Option<Error> {
        self.write_errors.pending_for_flusher()
    }

    /// Whether the object is failed: attempts to write it failed [the limit's worth of
    /// times](VmObject::set_write_failure_limit) in a row, so flushes no longer write
    /// its dirty pages (they stay resident and dirty, and every cleaning flush and
    /// every [`fsync`](crate::fsync) returns the error) until
    /// [`VmObject::clear_failed`], or until none of its pages is dirty or in writeback
    /// any more when a flush or a truncation looks (the failed data was discarded).
    pub fn is_failed(&self) -> bool {
        self.write_errors.failed().is_some()
    }

    /// How many attempts to write the object's pages failed in a row (since the last
    /// write that succeeded or [`VmObject::clear_failed`]): each flush with a failed
    /// write counts once, however many of its writes failed.
    pub fn failed_writes_in_a_row(&self) -> u32 {
        self.write_errors.consecutive()
    }

    /// How many failed attempts in a row mark the object failed (`None`: never).
    pub fn write_failure_limit(&self) -> Option<NonZeroU32> {
        self.write_errors.limit()
    }

    /// Reports to the object's own cursor the failure it has not seen, moving it on.
    pub(crate) fn take_write_error(&mut self) -> Option<Error> {
        self.write_errors.take_for_flusher()
    }

    /// Reports to `cursor` the failure it has not seen, moving it on (a failed
    /// object's error every time).
    pub(crate) fn check_errors(&self, cursor: &mut ErrorCursor) -> Result {
        self.write_errors.check(cursor)
    }

    /// Records the outcome of `write` of the object's pages: a failure for every
    /// cursor to report, counted towards the failed state if it is the first of its
    /// attempt; a success restarts the count.
    pub(crate) fn note_write_result(&mut self, write: &InFlight, result: Result) {
        match result {
            Ok(()) => self.write_errors.write_succeeded(),
            Err(error) => self.write_errors.write_failed(error, write.attempt()),
        }
    }

    /// The error of a failed object, if it is.
    pub(crate) fn failed_error_now(&self) -> Option<Error> {
        self.write_errors.failed()
    }

    /// The error of a failed object, after ending the failed state if nothing it
    /// stopped writing is left (no page dirty or in writeback: truncated or freed
    /// without cleaning).
    pub(crate) fn failed_error(&mut self) -> Option<Error> {
        let failed = self.write_errors.failed()?;
        if self.cache.any_tagged(Tag::Dirty) || self.cache.any_tagged(Tag::Writeback) {
            return Some(failed);
        }
        log::trace!("object failed by {failed:?} has nothing dirty left: no longer failed");
        self.write_errors.clear_failed();
        None
    }

    pub(crate) fn dirty_generation(&self) -> u64 {
        self.dirty_generation
    }

    /// Counts one write in flight, an attempt of its own, from before the lock is
    /// dropped for it, and notes the write size it must not write past.
    pub(crate) fn start_write(&mut self) -> InFlight {
        let attempt = self.write_attempt();
        self.start_write_in(attempt)
    }

    /// The attempt a flush starting now makes ([`Self::start_write_in`]).
    pub(crate) fn write_attempt(&self) -> WriteAttempt {
        self.write_errors.attempt()
    }

    /// [`Self::start_write`] for one of the writes of `attempt` (a flush's clusters):
    /// however many of them fail, the attempt counts once towards the failed state.
    pub(crate) fn start_write_in(&mut self, attempt: WriteAttempt) -> InFlight {
        // Cannot overflow: each write in flight holds a busy page (a flush's) or a
        // waiting thread (direct I/O), far fewer than 2^32.
        #[allow(clippy::arithmetic_side_effects)]
        {
            self.writes_in_flight += 1;
        }
        debug_assert!(self.size <= self.write_size);
        InFlight {
            write_size: self.write_size,
            attempt,
        }
    }

    /// Ends the count of `write`; returns whom to wake: the waiters for the writes in
    /// flight once the last is done.
    pub(crate) fn end_write(&mut self, write: &InFlight) -> Wakeup {
        let InFlight { .. } = write;
        debug_assert!(self.writes_in_flight > 0);
        // Cannot underflow: `write` is the token of a `start_write`, consumed here.
        #[allow(clippy::arithmetic_side_effects)]
        {
            self.writes_in_flight -= 1;
        }
        if self.writes_in_flight == 0 {
            Wakeup::writes()
        } else {
            Wakeup::NONE
        }
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
    /// released, otherwise clears `BUSY` and `WANTED`. Returns whom to wake: the page's
    /// waiters if it was wanted.
    pub(crate) fn unbusy(&mut self, offset: u64) -> Wakeup {
        self.unbusy_onto(offset, None, PageFlags::RELEASED)
    }

    /// [`Self::unbusy`] for a page whose write succeeded: one the page daemon was
    /// paging out (`PAGEOUT`) is freed too.
    pub(crate) fn unbusy_written(&mut self, offset: u64) -> Wakeup {
        self.unbusy_onto(offset, None, PageFlags::RELEASED | PageFlags::PAGEOUT)
    }

    /// [`Self::unbusy`], putting a kept page that is on no queue onto `queue`, and
    /// freeing it if it carries any of `free_if`.
    fn unbusy_onto(&mut self, offset: u64, queue: Option<PageQueue>, free_if: PageFlags) -> Wakeup {
        let Some(page) = self.cache.lookup_mut(offset) else {
            debug_assert!(false, "unbusy of a page that is not resident");
            return Wakeup::NONE;
        };
        debug_assert!(page.is_busy());
        let wanted = if page.flags.contains(PageFlags::WANTED) {
            Wakeup::page(offset)
        } else {
            Wakeup::NONE
        };
        if page.flags.intersects(free_if) {
            self.cache.free(offset);
            return wanted;
        }
        page.flags.remove(PageFlags::BUSY | PageFlags::WANTED);
        match queue {
            Some(queue) if page.queue() == PageQueue::None => self.cache.set_queue(offset, queue),
            // A resident page handed out again (a fault over it): used since it was
            // queued, which the page daemon's policy weighs as the MMU's referenced bit.
            Some(_) => self.cache.mark_referenced(offset),
            None => {}
        }
        wanted
    }

    /// Releases busy pages that did not become valid: never-read (`FAKE`) pages are
    /// freed, the rest unbusied (the reference's `genfs_rel_pages`). Returns whom to
    /// wake.
    pub(crate) fn release_pages(&mut self, pages: &[PageRef]) -> Wakeup {
        let mut wake = Wakeup::NONE;
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
    /// Returns whom to wake.
    pub(crate) fn settle(&mut self, offset: u64) -> Wakeup {
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
            .fold(Wakeup::NONE, |wake, page| wake | state.settle(page.offset));
        drop(state);
        assert_eq!(
            wake,
            Wakeup::page(P),
            "unbusying a WANTED page asks for a wakeup of that page"
        );
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
    fn threaded_unbusy_wakes_only_the_waiters_of_that_page() {
        let object = Arc::new(VmObject::new(DefaultCache::new(), 8 * P));
        let mut held = Vec::new();
        let (state, found) = object.find_pages(object.lock(), 0, 3, Wait::Sleep, &mut held);
        found.unwrap();
        drop(state);
        // Two waiters on page 0, one on page 2; page 1 is busy with nobody waiting.
        let waiters: Vec<_> = [0, 0, 2]
            .into_iter()
            .map(|page| {
                let object = object.clone();
                thread::spawn(move || {
                    let mut pages = Vec::new();
                    let (state, found) =
                        object.find_pages(object.lock(), page * P, 1, Wait::Sleep, &mut pages);
                    found.unwrap();
                    object.release(state, &pages);
                })
            })
            .collect();
        while object.sleepers_on_page(0) != 2 || object.sleepers_on_page(2 * P) != 1 {
            thread::sleep(Duration::from_millis(1));
        }
        let mut state = object.lock();
        assert!(state.unbusy(P).is_none(), "nobody wanted page 1");
        let wake = state.unbusy(2 * P);
        drop(state);
        assert_eq!(wake, Wakeup::page(2 * P));
        object.wake_if(wake);
        assert_eq!(object.sleepers_on_page(0), 2, "page 0's waiters sleep on");
        let mut state = object.lock();
        let wake = state.unbusy(0);
        let write = state.start_write();
        assert_eq!(
            wake | Wakeup::NONE | state.end_write(&write),
            Wakeup::page(0) | Wakeup::writes()
        );
        drop(state);
        object.wake_if(wake);
        for waiter in waiters {
            waiter.join().unwrap();
        }
        assert_eq!(object.sleepers_on_page(0), 0);
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
