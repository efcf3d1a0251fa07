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
//!
//! ## The fault pipeline
//!
//! [`getpages`] checks the [`Fault`] (`Fault::check`, shared with the compat pager in
//! `fault.rs`), takes the fast path or, for a synchronous read fault, first feeds
//! read-ahead (`ahead.rs`: the pages it reads along with its own, and the transfers to
//! start after it), enters the transaction, then makes attempts until one ends with a
//! result, and last starts read-ahead's transfers. An attempt is a run of small steps over a `FaultJob`,
//! each returning its product or why the attempt stops (start over when the size moved
//! under it, or fail):
//!
//! 1. **measure**: under the object lock, the span the size allows (whole blocks
//!    around the requested pages, clipped to memory EOF) and the timestamps;
//! 2. **lock_node**: shared, or exclusive for a fault that allocates;
//! 3. **collect**: the requested pages, busy, in ascending order;
//! 4. **needs**: whether any must be read, or a block under them allocated;
//! 5. **widen_to_blocks**: let go and collect the span's whole blocks afresh when they
//!    reach below the fault or beyond it;
//! 6. **read** (`read_job.rs`): zero what no sector brings, start the requests, walk
//!    the extents (submit mapped runs, zero holes), wait, allocate for a write fault;
//! 7. **settle** (`fault.rs`): pages lose `FAKE`, the ones outside the request are
//!    unbusied, the requested ones handed out.

use alloc::vec::Vec;
use core::ops::Range;

use crate::bmap::{Geometry, is_allocated};
use crate::error::{Error, Result};
use crate::fault::{
    Bounds, Fault, Fetched, GetFlags, Handout, Settle, fast_path, mark_timestamps, settle,
};
use crate::hooks::{PageCache, max_file_size};
use crate::object::ObjectState;
use crate::page::PageRef;
use crate::page::{DirtyStatus, PAGE_SHIFT, PAGE_SIZE, PageFlags, round_page};
use crate::readahead::{Advice, ReadAhead};
use crate::sync::Wait;
use crate::sync::{Arc, SleepGuard, WriteGuard};
use crate::transaction::Transaction;
use crate::vnode::{Vnode, geometry};

pub(crate) mod ahead;
mod read_job;

use read_job::{PageStatus, ReadJob};

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
    getpages_with(vnode, fault, None)
}

/// [`getpages`] with the reader's own read-ahead state (`own`) for a synchronous read
/// fault, instead of the object's.
pub(crate) fn getpages_with<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    fault: Fault,
    own: Option<&mut ReadAhead>,
) -> Result<Fetched<'a, V>> {
    let request_end = fault.check(&**vnode)?;
    log::trace!("getpages {fault:?}");
    if fault.flags.contains(GetFlags::LOCKED) {
        return fast_path(vnode, &fault, request_end).map(Fetched::Resident);
    }
    let mut job = FaultJob::new(vnode, fault, request_end)?;
    let ahead = job.plan_read_ahead(own);
    ahead::start(vnode, ahead.now);
    let result = job.run();
    if result.is_ok() {
        ahead::start(vnode, ahead.later);
    }
    result
}

/// A sleeping fault (the synchronous and read-ahead ways through), checked.
struct FaultJob<'a, V: Vnode> {
    vnode: &'a Arc<V>,
    fault: Fault,
    geometry: Geometry,
    request_end: u64,
    /// Where the pages this fault reads along with its own end (the rest of the first
    /// transfer of a read-ahead window, at or past `request_end`): read in the fault's
    /// own request and unbusied once read; a failed attempt drops them (`run`).
    read_along: u64,
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
    /// The whole filesystem blocks around them and the pages read along with them
    /// (`FaultJob::read_along`), clipped to memory EOF's page: `start .. end`.
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
            read_along: request_end,
        })
    }

    /// Inside the transaction, attempts until one ends with a result. A fault that
    /// reads pages along with its own and fails — out of memory, a block it cannot
    /// map past its own, a device error on a request holding them — tries once more
    /// with its own pages alone, and that attempt's result is the reader's: a bad
    /// sector or corrupt pointer past the reader's pages never fails its read, and an
    /// error on its own pages is reported if it happens again.
    fn run(&mut self) -> Result<Fetched<'a, V>> {
        let _transaction = self.enter_transaction()?;
        if self.vnode.is_dead() {
            return Err(Error::Dead);
        }
        loop {
            match self.attempt() {
                // Any failure of a read that went along (memory, a block map error, a
                // device error on the one request holding the fault's pages and the
                // pages along) is tried once more with the fault's own pages alone:
                // read-ahead never makes a read fail that would succeed without it.
                Attempt::Done(Err(_)) if self.read_along > self.request_end => {
                    self.read_along = self.request_end;
                }
                Attempt::Done(result) => return result,
                Attempt::Retry => {}
            }
        }
    }

    /// A synchronous read fault feeds read-ahead — the reader's own state, or the
    /// object's (as `uvn_get` calls `uvm_ra_request` before `VOP_GETPAGES`) — before
    /// its transaction, sets the pages it reads along with its own (`read_along`), and
    /// returns the rest of the window to start before and after it ([`ahead::split`]).
    /// Nothing with the node lock held, nor when the caller opts out or advises random
    /// access.
    fn plan_read_ahead(&mut self, own: Option<&mut ReadAhead>) -> ahead::Split {
        let request = (self.fault.offset >> PAGE_SHIFT)..(self.request_end >> PAGE_SHIFT);
        let nothing = ahead::Split {
            along: request.end..request.end,
            now: request.end..request.end,
            later: request.end..request.end,
        };
        let flags = self.fault.flags;
        let opted_out = GetFlags::GLOCKHELD | GetFlags::NOREADAHEAD | GetFlags::OVERWRITE;
        let random = self.fault.advice == Advice::Random;
        if self.is_async() || self.fault.is_write() || flags.intersects(opted_out) || random {
            return nothing;
        }
        let object = self.vnode.object();
        let reading = ahead::Reading {
            first: request.start,
            count: self.fault.count as u64,
            found: ahead::found(&object.read(), self.fault.offset..self.request_end),
            advice: self.fault.advice,
        };
        let Some(window) = ahead::plan(self.vnode, own, reading) else {
            return nothing;
        };
        let split = ahead::split(self.vnode, window, request);
        self.read_along = split.along.end << PAGE_SHIFT;
        split
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
        // Read-ahead never sleeps, not even to enter the transaction.
        let mut transaction = Transaction::begin(&**self.vnode, self.wait())?;
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
        let node_guard = self.lock_node()?;
        let state = object.lock();
        // A shrink would leave pages past the new end; a growth would zero-fill, as
        // past the old disk end, bytes a writer has meanwhile put there (and that a
        // flush may have written and evicted). The reference checks only the former.
        self.check_size(&state, &span)?;
        let overwrite = self.fault.flags.contains(GetFlags::OVERWRITE);
        // Looked for before collecting too: making room for the fault's absent pages
        // at the cache's limit may free an idle, clean page known to back a hole among
        // them, and its fresh replacement would hide the caller's mistake. (A busy one
        // cannot be freed: `overwrite` sees it once it is collected.)
        if overwrite && self.over_known_hole(&state, span.requested) {
            return Err(Error::Invalid.into());
        }
        let (state, pages) = self.collect(state, self.fault.offset, span.requested)?;
        if overwrite {
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
    // clipped to `max_file_size` (< 2^63), `read_along` lies below the end of file's
    // page, and a block (<= 1 MiB) more fits.
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
        let block_mask = self.geometry.block_mask();
        let start = offset & !block_mask;
        let own = offset + (requested * PAGE_SIZE) as u64;
        let along = self.read_along.max(own);
        let end = round_page((along + block_mask) & !block_mask).min(round_page(memeof));
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
    fn lock_node(&self) -> Step<Option<SleepGuard<'a>>> {
        let node = self.vnode.object().node_lock();
        Ok(if self.fault.flags.contains(GetFlags::GLOCKHELD) {
            None
        } else if self.allocates() {
            Some(node.write())
        } else if self.is_async() {
            // Read-ahead never sleeps: a writer holding the lock makes it give up.
            Some(node.try_read().ok_or(Error::Busy)?)
        } else {
            Some(node.read())
        })
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
        // Waiting for a busy page may have let an extending write publish its size:
        // bytes past the old end may be on the disk now, so the old disk end is stale.
        if let Err(stop) = self.check_size(&state, span) {
            object.release(state, &pages);
            return Err(stop);
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

    /// Whether an allocating fault's `requested` pages include an idle one known to
    /// back a hole (resident, not busy and read-only): an overwrite fault there is the
    /// caller's mistake.
    // Cannot overflow: the requested pages end at the checked `request_end`.
    #[allow(clippy::arithmetic_side_effects)]
    fn over_known_hole(&self, state: &ObjectState<V::Cache>, requested: usize) -> bool {
        let offset = self.fault.offset;
        let end = offset + (requested * PAGE_SIZE) as u64;
        self.allocates()
            && state
                .cache()
                .range(offset..end)
                .any(|p| p.flags.contains(PageFlags::RDONLY) && !p.is_busy())
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
