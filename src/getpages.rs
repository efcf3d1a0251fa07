//! getpages: the read-fault and write-fault path (the reference's `genfs_getpages`
//! and `genfs_getpages_read`).
//!
//! A fault asks for `count` pages from `offset`, the one it really needs at
//! `center`. Three ways through:
//! - [`GetFlags::LOCKED`]: the fast path. Only resident, valid, non-busy pages; never
//!   sleeps; the pages come back under the object lock ([`ResidentPages`]), shared for
//!   reads, so cached reads run in parallel.
//! - synchronous ([`GetFlags::SYNCIO`]): every page comes back busy ([`BusyPages`]),
//!   read from the device as needed. When the filesystem block is larger than a page
//!   the read widens to whole blocks, releasing what it holds and re-collecting from
//!   the lowest offset so pages are always taken in ascending order.
//! - asynchronous (no `SYNCIO`): read-ahead. Returns at once without sleeping (a busy
//!   page is [`Error::Busy`], memory that cannot be had [`Error::NoMemory`], and
//!   either way no page is left behind); the request's completion
//!   settles the pages.

use alloc::vec::Vec;
use core::ops::Range;

use crate::bmap::{Geometry, extent_at, is_allocated};
use crate::buf::{BioWait, Direction, Nest, Outcome, Priority, page_segments};
use crate::error::{Error, Result};
use crate::fault::{
    Bounds, Fault, Fetched, GetFlags, Handout, Settle, fast_path, mark_timestamps, settle,
};
use crate::hooks::{BlockMap, PageCache, Strategy, max_file_size};
use crate::object::ObjectState;
use crate::page::{
    DirtyStatus, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PageFlags, round_page, trunc_page,
};
use crate::page::{PageRef, zero_file_range};
use crate::sync::Wait;
use crate::sync::{Arc, SleepGuard, WriteGuard};
use crate::transaction::Transaction;
use crate::vnode::{Vnode, geometry, max_transfer, note_dirty};

/// Faults in the pages `fault` names from `vnode`. See the module docs for the three
/// ways through.
///
/// A synchronous write fault allocates the blocks under its pages (unless
/// [`GetFlags::NOBLOCKALLOC`]) whatever state the pages are in, and hands them back
/// writable ([`Fetched::Writable`]); a read fault's pages ([`Fetched::Busy`]) cannot be
/// written through the handle. Pages handed out are write-protected first if some
/// mapping could store to them.
///
/// Errors: [`Error::Invalid`] for an unaligned offset, a zero count, a center outside
/// the range, a center page past the end of file without [`GetFlags::PASTEOF`], an
/// [`GetFlags::OVERWRITE`] read fault, or an asynchronous write fault (only reads are
/// started ahead; a write fault must allocate before it returns);
/// [`Error::TooBig`] for a range reaching past the page (or filesystem block, if
/// larger) holding the file's last addressable byte
/// ([`BlockMap::max_size`](crate::BlockMap::max_size)); [`Error::Dead`] for a reclaimed
/// vnode; [`Error::Busy`] from the fast path when the center page is not resident and
/// from read-ahead when it would have to sleep; [`Error::NoMemory`]; the host's error
/// from the transaction hooks, `bmap`, `alloc` or the device. On error no page is left
/// busy, no page this call allocated stays resident, and the transaction is left.
pub fn getpages<'a, V: Vnode>(vnode: &'a Arc<V>, fault: Fault) -> Result<Fetched<'a, V>> {
    let request_end = fault.check(&**vnode)?;
    log::trace!("getpages {fault:?}");
    if fault.flags.contains(GetFlags::LOCKED) {
        return fast_path(vnode, &fault, request_end).map(Fetched::Resident);
    }
    let job = FaultJob::new(vnode, fault, request_end)?;
    let _transaction = job.enter_transaction()?;
    if vnode.is_dead() {
        return Err(Error::Dead);
    }
    loop {
        if let Attempt::Done(result) = job.attempt() {
            return result;
        }
    }
}

/// A sleeping fault (the synchronous and read-ahead ways through), checked.
struct FaultJob<'a, V: Vnode> {
    vnode: &'a Arc<V>,
    fault: Fault,
    geometry: Geometry,
    request_end: u64,
}

/// How one attempt at a fault ends: over again, or with a result.
enum Attempt<'a, V: Vnode> {
    /// The size changed while the object lock was dropped: start over.
    Retry,
    Done(Result<Fetched<'a, V>>),
}

/// Why an attempt's step ends the attempt early.
enum Stop {
    /// The size changed while the object lock was dropped: start over.
    Retry,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Failed(error)
    }
}

/// What one step of an attempt makes, or why the attempt ends early.
type Step<T> = core::result::Result<T, Stop>;

/// The object lock, held exclusively, over a vnode's object.
type Locked<'a, V> = WriteGuard<'a, ObjectState<<V as Vnode>::Cache>>;

/// The byte ranges one attempt works on, fixed by the size it saw.
struct Span {
    /// The file size the attempt saw; if it changes while the object lock is dropped,
    /// the attempt starts over.
    size: u64,
    /// Disk EOF, as the block map gave it.
    diskeof: u64,
    /// Pages asked for that lie before memory EOF.
    requested: usize,
    /// The whole filesystem blocks around them, clipped to memory EOF's page:
    /// `start .. end`.
    start: u64,
    end: u64,
    /// Where file data ends within `start .. end`: the size, or the write size a
    /// write in progress announced, rounded up to its block. A write fault allocates
    /// the blocks up to here; blocks past it (under the last page, with blocks
    /// smaller than a page) are not data, and stay holes until the file grows over
    /// them, which allocates them then.
    data_end: u64,
}

impl Span {
    /// How many pages `start .. end` holds.
    // Cannot overflow: `start <= end` (`span` clips the end no lower than the center
    // page's end), and the range is a fault's, which fits in `usize` pages.
    #[allow(clippy::arithmetic_side_effects)]
    fn pages(&self) -> usize {
        ((self.end - self.start) >> PAGE_SHIFT) as usize
    }
}

/// What the requested pages need before they can be handed out.
struct Needs {
    /// Some page is not valid yet, or backs a hole a write fault must allocate.
    read: bool,
    /// Some block under the pages is a hole that a write fault must allocate, even if
    /// no page needs reading.
    allocation: bool,
}

impl<'a, V: Vnode> FaultJob<'a, V> {
    fn new(vnode: &'a Arc<V>, fault: Fault, request_end: u64) -> Result<Self> {
        Ok(Self {
            vnode,
            fault,
            geometry: geometry(&**vnode)?,
            request_end,
        })
    }

    /// Read-ahead: starts the reads and returns without sleeping.
    fn is_async(&self) -> bool {
        !self.fault.flags.contains(GetFlags::SYNCIO)
    }

    /// Whether the fault sleeps for busy pages (read-ahead does not).
    fn wait(&self) -> Wait {
        if self.is_async() {
            Wait::DontSleep
        } else {
            Wait::Sleep
        }
    }

    /// A write fault that allocates the blocks under its pages.
    fn allocates(&self) -> bool {
        self.fault.is_write() && !self.fault.flags.contains(GetFlags::NOBLOCKALLOC)
    }

    /// Enters the mount transaction (and, for an allocating fault, the journal), unless
    /// the caller holds the node lock: then it holds them too, as they come before it
    /// in the lock order.
    fn enter_transaction(&self) -> Result<Option<Transaction<'a, V>>> {
        let flags = self.fault.flags;
        if flags.contains(GetFlags::GLOCKHELD) {
            return Ok(None);
        }
        let mut transaction = Transaction::begin(&**self.vnode, Wait::Sleep)?;
        if self.allocates() && !flags.contains(GetFlags::JOURNALLOCKED) {
            transaction.begin_journal()?;
        }
        Ok(Some(transaction))
    }

    /// One pass: measure the span → lock the node → collect the requested pages →
    /// see what they need → widen to whole blocks → read and allocate → settle.
    fn attempt(&self) -> Attempt<'a, V> {
        match self.try_attempt() {
            Ok(fetched) => Attempt::Done(Ok(fetched)),
            Err(Stop::Retry) => Attempt::Retry,
            Err(Stop::Failed(error)) => Attempt::Done(Err(error)),
        }
    }

    fn try_attempt(&self) -> Step<Fetched<'a, V>> {
        let object = self.vnode.object();
        let span = self.measure()?;
        let node_guard = self.lock_node();
        let state = object.lock();
        // A shrink would leave pages past the new end; a growth would zero-fill, as
        // past the old disk end, bytes a writer has meanwhile put there (and that a
        // flush may have written and evicted). The reference checks only the former.
        self.check_size(&state, &span)?;
        let (state, pages) = self.collect(state, self.fault.offset, span.requested)?;
        if self.fault.flags.contains(GetFlags::OVERWRITE) {
            drop(node_guard);
            return Ok(self.overwrite(state, pages, span.requested)?);
        }
        let (state, needs) = self.needs(state, &pages, &span)?;
        if !needs.read {
            drop(node_guard);
            log::trace!("getpages: all {} pages resident", span.requested);
            return Ok(self.settle(state, pages, 0..span.requested));
        }
        let (state, pages) = self.widen_to_blocks(state, pages, &span)?;
        let status = match PageStatus::of(&state, &pages) {
            Ok(status) => status,
            Err(error) => {
                object.release(state, &pages);
                return Err(error.into());
            }
        };
        drop(state);
        let read = ReadJob {
            vnode: self.vnode,
            geometry: self.geometry,
            start: span.start,
            diskeof: span.diskeof,
            ahead: self.is_async(),
            allocates: self.allocates(),
            must_allocate: needs.allocation,
            alloc_end: span.data_end,
        };
        let result = read.run(pages, &status);
        drop(node_guard);
        match result? {
            None => Ok(Fetched::Started),
            Some(pages) => Ok(self.settle(object.lock(), pages, self.requested_among(&span))),
        }
    }

    /// Under the object lock, reads the size, works out the attempt's span from it and
    /// marks the timestamps. A center page past memory EOF is [`Error::Invalid`].
    fn measure(&self) -> Step<Span> {
        let state = self.vnode.object().lock();
        let span = self
            .span(state.size(), state.write_size())
            .ok_or(Error::Invalid)?;
        // `Vnode::mark_update` is called under the object lock.
        mark_timestamps(&**self.vnode, &self.fault);
        drop(state);
        Ok(span)
    }

    /// Works out the attempt's span from the size now (`None`: the center page is past
    /// memory EOF).
    // Cannot overflow: `offset + count` pages is `request_end` (checked), `memeof` is
    // clipped to `max_file_size` (< 2^63), and a block (<= 1 MiB) more fits.
    #[allow(clippy::arithmetic_side_effects)]
    fn span(&self, size: u64, write_size: u64) -> Option<Span> {
        let map = self.vnode.block_map();
        let bounds = Bounds::new(map, size, self.request_end, self.fault.flags);
        let memeof = bounds.memeof.min(max_file_size(map));
        let offset = self.fault.offset;
        if self.fault.center_offset() >= memeof {
            log::trace!("getpages {offset:#x} past EOF {memeof:#x}");
            return None;
        }
        let requested =
            ((round_page(memeof - offset) >> PAGE_SHIFT) as usize).min(self.fault.count);
        let block_mask = self.geometry.block_size() - 1;
        let start = offset & !block_mask;
        let end = round_page((offset + (requested * PAGE_SIZE) as u64 + block_mask) & !block_mask)
            .min(round_page(memeof));
        let data_eof = size.max(write_size).min(max_file_size(map));
        let data_end = ((data_eof + block_mask) & !block_mask).clamp(start, end);
        Some(Span {
            size,
            diskeof: bounds.diskeof,
            requested,
            start,
            end,
            data_end,
        })
    }

    /// Takes the node lock, unless the caller holds it: exclusively for a fault that
    /// allocates, shared otherwise (held across the read, so a truncation cannot free
    /// the pages or blocks under it).
    fn lock_node(&self) -> Option<SleepGuard<'a>> {
        let node = self.vnode.object().node_lock();
        if self.fault.flags.contains(GetFlags::GLOCKHELD) {
            None
        } else if self.allocates() {
            Some(node.write())
        } else {
            Some(node.read())
        }
    }

    /// Starts the attempt over if the size is no longer the one its span was made from.
    fn check_size(&self, state: &ObjectState<V::Cache>, span: &Span) -> Step<()> {
        if state.size() == span.size {
            return Ok(());
        }
        log::trace!(
            "getpages: size changed to {:#x}, starting over",
            state.size()
        );
        Err(Stop::Retry)
    }

    /// Collects `count` pages from `offset`, busy, in ascending order, making the ones
    /// not resident (waiting for busy ones unless reading ahead).
    fn collect(
        &self,
        state: Locked<'a, V>,
        offset: u64,
        count: usize,
    ) -> Step<(Locked<'a, V>, Vec<PageRef>)> {
        let mut pages = Vec::new();
        let object = self.vnode.object();
        let (state, found) = object.find_pages(state, offset, count, self.wait(), &mut pages);
        found?;
        Ok((state, pages))
    }

    /// What the collected pages need: a read if any is not valid (or, for an allocating
    /// fault, backs a hole), and an allocation if a block under them is a hole. Valid,
    /// writable pages can still lie over holes (blocks smaller than a page past an old
    /// end of file, blocks a truncation freed): a write fault makes sure every block
    /// under the bytes it hands out exists, whatever the state of the pages (as
    /// `ufs_balloc_range` always calls `GOP_ALLOC`).
    fn needs(
        &self,
        state: Locked<'a, V>,
        pages: &[PageRef],
        span: &Span,
    ) -> Step<(Locked<'a, V>, Needs)> {
        let read = pages.iter().any(|page| {
            state.cache().lookup(page.offset).is_some_and(|p| {
                p.flags.contains(PageFlags::FAKE)
                    || (self.allocates() && p.flags.contains(PageFlags::RDONLY))
            })
        });
        if read || !self.allocates() {
            let allocation = false;
            return Ok((state, Needs { read, allocation }));
        }
        drop(state);
        let map = self.vnode.block_map();
        let checked = is_allocated(map, self.geometry, span.start, span.data_end);
        let state = self.vnode.object().lock();
        match checked {
            Ok(all) => Ok((
                state,
                Needs {
                    read: !all,
                    allocation: !all,
                },
            )),
            Err(error) => {
                self.vnode.object().release(state, pages);
                Err(error.into())
            }
        }
    }

    /// Makes `pages` the whole blocks of the span. Pages below the fault's offset are
    /// needed when blocks are larger than pages: taking them while holding higher ones
    /// could deadlock against another fault, so this lets go and collects afresh.
    fn widen_to_blocks(
        &self,
        mut state: Locked<'a, V>,
        mut pages: Vec<PageRef>,
        span: &Span,
    ) -> Step<(Locked<'a, V>, Vec<PageRef>)> {
        let object = self.vnode.object();
        if span.start != self.fault.offset || span.pages() != span.requested {
            let wake = state.release_pages(&pages);
            object.wake_if(wake);
            drop(pages);
            (state, pages) = self.collect(state, span.start, span.pages())?;
        }
        if state.size() != span.size {
            // Waiting for a busy page let an extending write publish its size: bytes
            // past the old end may be on the disk now, so the old disk end is stale.
            log::trace!("getpages: size changed while waiting for pages, starting over");
            object.release(state, &pages);
            return Err(Stop::Retry);
        }
        Ok((state, pages))
    }

    /// Where the requested pages lie among the span's.
    // Cannot overflow: `span.start <= offset` and the requested pages are among the
    // span's.
    #[allow(clippy::arithmetic_side_effects)]
    fn requested_among(&self, span: &Span) -> Range<usize> {
        let first = ((self.fault.offset - span.start) >> PAGE_SHIFT) as usize;
        first..first + span.requested
    }

    /// An overwrite fault: the caller allocated the blocks and will fill the pages
    /// whole, so nothing is read; the pages start dirty.
    fn overwrite(
        &self,
        mut state: Locked<'a, V>,
        pages: Vec<PageRef>,
        requested: usize,
    ) -> Result<Fetched<'a, V>> {
        let object = self.vnode.object();
        let over_hole = pages.iter().any(|page| {
            state
                .cache()
                .lookup(page.offset)
                .is_some_and(|p| p.flags.contains(PageFlags::RDONLY))
        });
        if over_hole && self.allocates() {
            // The caller must allocate before overwriting; a page known to back a
            // hole proves it did not, and its data would never be written.
            object.release(state, &pages);
            return Err(Error::Invalid);
        }
        for page in &pages {
            if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                resident.flags.remove(PageFlags::RDONLY);
            }
            state.mark(page.offset, DirtyStatus::Dirty);
        }
        Ok(settle(
            self.vnode,
            state,
            pages,
            Settle {
                keep: 0..requested,
                handout: self.handout(),
                dirty_tracking: true,
                overwrite: true,
            },
        ))
    }

    /// Settles the pages of a successful attempt; `keep` indexes the requested ones.
    fn settle(
        &self,
        state: Locked<'a, V>,
        pages: Vec<PageRef>,
        keep: Range<usize>,
    ) -> Fetched<'a, V> {
        let settling = Settle {
            keep,
            handout: self.handout(),
            dirty_tracking: self.fault.is_write(),
            overwrite: false,
        };
        settle(self.vnode, state, pages, settling)
    }

    fn handout(&self) -> Handout {
        if self.is_async() {
            Handout::Started
        } else if self.allocates() {
            Handout::Writable
        } else {
            Handout::ReadOnly
        }
    }
}

/// Whether each collected page still needs reading (`FAKE`) and whether it backs a
/// hole (`RDONLY`), read once under the object lock.
#[derive(Clone, Copy)]
struct PageStatus {
    fake: bool,
    read_only: bool,
}

impl PageStatus {
    fn of<C: PageCache>(state: &ObjectState<C>, pages: &[PageRef]) -> Result<Vec<PageStatus>> {
        let mut status = Vec::new();
        status
            .try_reserve_exact(pages.len())
            .map_err(|_| Error::NoMemory)?;
        status.extend(pages.iter().map(|page| {
            let flags = state
                .cache()
                .lookup(page.offset)
                .map_or(PageFlags::FAKE, |p| p.flags);
            PageStatus {
                fake: flags.contains(PageFlags::FAKE),
                read_only: flags.contains(PageFlags::RDONLY),
            }
        }));
        Ok(status)
    }
}

/// One read of busy pages from the device (the reference's `genfs_getpages_read`):
/// work out the sectors → zero what no sector brings → start the request group →
/// walk the extents, submitting runs and zeroing holes → note holes past the disk
/// end → wait (synchronous) and allocate for a write fault.
struct ReadJob<'a, V: Vnode> {
    vnode: &'a Arc<V>,
    geometry: Geometry,
    start: u64,
    diskeof: u64,
    /// Read-ahead: the read's completion settles the pages; nobody waits.
    ahead: bool,
    /// A write fault that allocates the blocks under its pages.
    allocates: bool,
    /// Some block under the pages is a hole that a write fault must allocate, even if
    /// no page needs reading.
    must_allocate: bool,
    /// The end of the blocks a write fault allocates (from `start`): where the file's
    /// data ends.
    alloc_end: u64,
}

/// The device sectors a read covers, from the job's `start`.
#[derive(Clone, Copy)]
struct Sectors {
    /// The pages' bytes.
    total: u64,
    /// The bytes before disk EOF.
    to_eof: u64,
    /// Whole sectors from `start`: `to_eof` rounded up to a sector, at most `total`.
    bytes: u64,
    /// What the last sector brings from past disk EOF (a truncation's leftovers, not
    /// file data), as a file range: zeroed once the read lands.
    past_eof: Option<(u64, u64)>,
}

/// What walking the extents found and did.
struct Walk {
    /// Bytes no request covers (valid pages, holes, what an error left).
    skipped: u64,
    /// Some page backs a hole.
    saw_hole: bool,
    /// The first error building the requests.
    error: Result,
}

impl Walk {
    fn new() -> Self {
        Self {
            skipped: 0,
            saw_hole: false,
            error: Ok(()),
        }
    }

    /// Ends the walk with `error`, the bytes from `offset` to `end` left unread.
    // Cannot overflow: `offset <= end`, and `skipped` counts bytes of the same range.
    #[allow(clippy::arithmetic_side_effects)]
    fn fail(&mut self, offset: u64, end: u64, error: Error) {
        self.skipped += end - offset;
        self.error = Err(error);
    }
}

impl<V: Vnode> ReadJob<'_, V> {
    /// Reads the `FAKE` pages among `pages`. Synchronous: returns the pages once
    /// read, or frees them and returns the error. Asynchronous: returns `None` once
    /// the requests are started; their completion settles the pages.
    ///
    /// Requests cover whole device sectors: the read of the last one runs past the
    /// disk end of file, and what it brings from there is zeroed when it lands.
    fn run(&self, pages: Vec<PageRef>, status: &[PageStatus]) -> Result<Option<Vec<PageRef>>> {
        let sectors = self.sectors(pages.len(), status);
        self.zero_past_sectors(&pages, status, sectors);
        let (mut nest, waiter) = self.start_requests(&pages, sectors)?;
        let mut walk = self.submit_extents(&pages, status, &mut nest, sectors.bytes);
        if walk.error.is_ok() {
            walk.saw_hole |= self.holes_past_eof(&pages, status, sectors);
        }
        nest.finish(walk.skipped as usize, walk.error);
        let Some(waiter) = waiter else {
            return Ok(None);
        };
        self.await_read(waiter, pages, sectors, walk.saw_hole)
            .map(Some)
    }

    /// The sectors a read of `count` pages covers.
    // Cannot overflow: the pages are a fault's span, which ends at most at
    // `round_page(max_file_size)` (< 2^63); sectors are at most 1 MiB (`Geometry`).
    #[allow(clippy::arithmetic_side_effects)]
    fn sectors(&self, count: usize, status: &[PageStatus]) -> Sectors {
        let total = (count * PAGE_SIZE) as u64;
        let to_eof = total.min(self.diskeof.saturating_sub(self.start));
        let sector_mask = (1u64 << self.geometry.dev_bshift) - 1;
        let bytes = ((to_eof + sector_mask) & !sector_mask).min(total);
        let past_eof = (to_eof < bytes && status[(to_eof >> PAGE_SHIFT) as usize].fake)
            .then_some((self.start + to_eof, self.start + bytes));
        Sectors {
            total,
            to_eof,
            bytes,
            past_eof,
        }
    }

    /// Zeroes the bytes of unread pages past the last sector read; pages already valid
    /// keep their contents.
    // Cannot overflow: as in `sectors`; `tail` stays inside the pages.
    #[allow(clippy::arithmetic_side_effects)]
    fn zero_past_sectors(&self, pages: &[PageRef], status: &[PageStatus], sectors: Sectors) {
        let mut tail = self.start + sectors.bytes;
        while tail < self.start + sectors.total {
            let index = ((tail - self.start) >> PAGE_SHIFT) as usize;
            let page_end = trunc_page(tail) + PAGE_SIZE as u64;
            if status[index].fake {
                pages[index].zero((tail & PAGE_MASK) as usize, (page_end - tail) as usize);
            }
            tail = page_end;
        }
    }

    /// Starts the group of requests that reads `sectors.bytes`: a synchronous one with
    /// the waiter to sleep on, or read-ahead whose completion settles the pages. On
    /// error no page stays busy.
    fn start_requests(
        &self,
        pages: &[PageRef],
        sectors: Sectors,
    ) -> Result<(Nest, Option<BioWait>)> {
        let bytes = sectors.bytes as usize;
        if !self.ahead {
            return match Nest::synchronous(bytes, Direction::Read, Priority::TimeCritical) {
                Ok((nest, waiter)) => Ok((nest, Some(waiter))),
                Err(err) => Err(self.abandon(pages, err)),
            };
        }
        let mut settled = Vec::new();
        if settled.try_reserve_exact(pages.len()).is_err() {
            // Read-ahead that cannot be had is no error, but its pages must not stay
            // busy.
            return Err(self.abandon(pages, Error::NoMemory));
        }
        settled.extend_from_slice(pages);
        let vnode = (*self.vnode).clone();
        let past_eof = sectors.past_eof;
        let completion = move |outcome: Outcome| {
            read_ahead_done(&*vnode, &settled, past_eof, outcome.result);
        };
        // On error the completion has already run with it and released the pages.
        Nest::asynchronous(bytes, Direction::Read, Priority::TimeLimited, completion)
            .map(|nest| (nest, None))
    }

    /// Walks the extents under the unread pages up to `bytes` from `start`: submits a
    /// request for each mapped run (at most one transfer, unread pages only) and
    /// zero-fills each hole.
    // Cannot overflow: every offset lies in `start .. start + bytes`, the fault's span,
    // which ends below 2^63; lengths are bounded by `bytes`.
    #[allow(clippy::arithmetic_side_effects)]
    fn submit_extents(
        &self,
        pages: &[PageRef],
        status: &[PageStatus],
        nest: &mut Nest,
        bytes: u64,
    ) -> Walk {
        let mut walk = Walk::new();
        let end = self.start + bytes;
        let mut offset = self.skip_valid(status, self.start, end, &mut walk);
        while offset < end {
            let extent = match extent_at(self.vnode.block_map(), self.geometry, offset, end) {
                Ok(extent) => extent,
                Err(err) => {
                    log::trace!("getpages: bmap at {offset:#x} failed: {err}");
                    walk.fail(offset, end, err);
                    break;
                }
            };
            let len = self.run_length(status, offset, extent.len);
            match extent.block {
                None => self.fill_hole(pages, offset, len, &mut walk),
                Some(block) => {
                    if let Err(err) = self.submit_run(pages, nest, block, offset, len) {
                        walk.fail(offset, end, err);
                        break;
                    }
                }
            }
            offset = self.skip_valid(status, offset + len, end, &mut walk);
        }
        walk
    }

    /// The first offset from `offset` (below `end`) in a page that needs reading, or
    /// `end`; the valid pages passed over count as skipped (and as holes if read-only).
    // Cannot overflow: `offset < end` inside the loop, and `end` is below 2^63.
    #[allow(clippy::arithmetic_side_effects)]
    fn skip_valid(&self, status: &[PageStatus], mut offset: u64, end: u64, walk: &mut Walk) -> u64 {
        while offset < end {
            let page = status[((offset - self.start) >> PAGE_SHIFT) as usize];
            if page.fake {
                break;
            }
            walk.saw_hole |= page.read_only;
            let step = (PAGE_SIZE as u64).min(end - offset);
            offset += step;
            walk.skipped += step;
        }
        offset
    }

    /// How much of an extent of `extent_len` bytes at `offset` one request reads: at
    /// most one transfer, and only over pages that need reading.
    // Cannot overflow: `offset` lies in the span; the run of unread pages from its page
    // covers at least the rest of that page.
    #[allow(clippy::arithmetic_side_effects)]
    fn run_length(&self, status: &[PageStatus], offset: u64, extent_len: u64) -> u64 {
        let len = extent_len.min(max_transfer(&**self.vnode) as u64);
        if offset + len <= round_page(offset + 1) {
            return len;
        }
        let index = ((offset - self.start) >> PAGE_SHIFT) as usize;
        let fake_run = status[index..].iter().take_while(|s| s.fake).count() as u64;
        len.min(fake_run * PAGE_SIZE as u64 - (offset & PAGE_MASK))
    }

    /// Zero-fills a hole of `len` bytes at `offset`; unless this fault allocates it,
    /// its pages become read-only, so that a store faults again and allocates.
    // Cannot overflow: the hole lies in the span.
    #[allow(clippy::arithmetic_side_effects)]
    fn fill_hole(&self, pages: &[PageRef], offset: u64, len: u64, walk: &mut Walk) {
        log::trace!("getpages: hole at {offset:#x}+{len:#x}");
        walk.saw_hole = true;
        zero_file_range(pages, offset, offset + len);
        walk.skipped += len;
        if !self.allocates {
            let span = trunc_page(offset)..round_page(offset + len);
            self.mark_read_only(span.step_by(PAGE_SIZE));
        }
    }

    /// Submits one request reading `len` bytes at file `offset` from device `block`.
    // Cannot overflow: `offset` lies in the span, at or after `start`.
    #[allow(clippy::arithmetic_side_effects)]
    fn submit_run(
        &self,
        pages: &[PageRef],
        nest: &mut Nest,
        block: u64,
        offset: u64,
        len: u64,
    ) -> Result {
        let first_index = ((trunc_page(offset) - self.start) >> PAGE_SHIFT) as usize;
        let segments = page_segments(&pages[first_index..], offset, len as usize)?;
        log::trace!("getpages: read {len:#x} bytes at {offset:#x} from block {block:#x}");
        self.vnode
            .device()
            .submit(nest.request(block, offset, segments));
        Ok(())
    }

    /// Whether blocks past the disk end under these pages are holes (blocks smaller
    /// than a page, or pages past the end of file). Nothing is read there, but such a
    /// page must not become writable without allocating them, or what is stored there
    /// later is never written: unless this fault allocates, the unread ones become
    /// read-only.
    // Cannot overflow: as in `sectors`.
    #[allow(clippy::arithmetic_side_effects)]
    fn holes_past_eof(&self, pages: &[PageRef], status: &[PageStatus], sectors: Sectors) -> bool {
        let (past, span_end) = (self.start + sectors.to_eof, self.start + sectors.total);
        let map = self.vnode.block_map();
        if past >= span_end
            || !matches!(is_allocated(map, self.geometry, past, span_end), Ok(false))
        {
            return false;
        }
        if !self.allocates {
            let fresh = pages.iter().zip(status);
            self.mark_read_only(
                fresh
                    .filter(|(page, s)| s.fake && page.offset + PAGE_SIZE as u64 > past)
                    .map(|(page, _)| page.offset),
            );
        }
        true
    }

    /// Waits for a synchronous read, zeroes what its last sector brought from past disk
    /// EOF, and allocates for a write fault that met a hole. On error the pages are
    /// released.
    fn await_read(
        &self,
        waiter: BioWait,
        pages: Vec<PageRef>,
        sectors: Sectors,
        saw_hole: bool,
    ) -> Result<Vec<PageRef>> {
        let mut result = waiter.wait().result;
        if let (Ok(()), Some((from, to))) = (result, sectors.past_eof) {
            zero_file_range(&pages, from, to);
        }
        if result.is_ok() && (saw_hole || self.must_allocate) && self.allocates {
            result = self.allocate(&pages);
        }
        match result {
            Ok(()) => Ok(pages),
            Err(err) => Err(self.abandon(&pages, err)),
        }
    }

    /// Marks the resident pages at `offsets` read-only: they back holes this fault
    /// does not allocate, so a store must fault again.
    fn mark_read_only(&self, offsets: impl Iterator<Item = u64>) {
        let mut state = self.vnode.object().lock();
        for offset in offsets {
            if let Some(page) = state.cache_mut().lookup_mut(offset) {
                page.flags |= PageFlags::RDONLY;
            }
        }
    }

    /// Releases the pages of a read that did not happen; returns `error`.
    fn abandon(&self, pages: &[PageRef], error: Error) -> Error {
        let object = self.vnode.object();
        object.release(object.lock(), pages);
        error
    }

    /// Allocates the blocks under `pages` (read, holes zero-filled) up to where the
    /// file's data ends, for a write fault, and marks the pages dirty and writable, so
    /// the zeroes around the bytes the caller writes reach the disk too.
    fn allocate(&self, pages: &[PageRef]) -> Result {
        let len = self.alloc_end.saturating_sub(self.start);
        if len != 0 {
            let result = self.vnode.block_map().alloc(self.start, len);
            log::trace!("getpages: alloc {:#x}+{len:#x} -> {result:?}", self.start);
            result?;
        }
        let mut state = self.vnode.object().lock();
        for page in pages {
            if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                resident.flags.remove(PageFlags::RDONLY);
            }
            state.mark(page.offset, DirtyStatus::Dirty);
        }
        note_dirty(&mut *state, &**self.vnode);
        Ok(())
    }
}

/// The completion of a read-ahead: on success the pages become valid (what the last
/// sector brought from past disk EOF zeroed first) and are unbusied; on error they are
/// released. Runs wherever the device completes, possibly in interrupt context.
fn read_ahead_done<V: Vnode>(
    vnode: &V,
    settled: &[PageRef],
    past_eof: Option<(u64, u64)>,
    result: Result,
) {
    let object = vnode.object();
    if let (Ok(()), Some((from, to))) = (result, past_eof) {
        zero_file_range(settled, from, to);
    }
    let mut state = object.lock();
    let wake = match result {
        Ok(()) => settled.iter().fold(false, |wake, page| {
            if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                resident.flags.remove(PageFlags::FAKE);
            }
            wake | state.settle(page.offset)
        }),
        Err(err) => {
            log::trace!("read-ahead failed: {err}");
            state.release_pages(settled)
        }
    };
    drop(state);
    object.wake_if(wake);
}
