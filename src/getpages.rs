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
use crate::buf::{Direction, Nest, Outcome, Priority, page_segments};
use crate::error::{Error, Result};
use crate::fault::{
    Advice, Bounds, Fault, Fetched, GetFlags, Handout, Settle, fast_path, mark_timestamps, settle,
};
use crate::hooks::{Access, BlockMap, PageCache, Strategy, max_file_size};
use crate::object::ObjectState;
use crate::page::{
    DirtyStatus, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PageFlags, round_page, trunc_page,
};
use crate::page::{PageRef, zero_file_range};
use crate::sync::{Arc, WriteGuard};
use crate::transaction::{Transaction, Wait};
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
    let Fault {
        offset,
        count,
        center,
        flags,
        ..
    } = fault;
    let memwrite = fault.is_write();
    let job = FaultJob {
        vnode,
        geometry: geometry(&**vnode)?,
        offset,
        count,
        center,
        request_end,
        memwrite,
        blockalloc: memwrite && !flags.contains(GetFlags::NOBLOCKALLOC),
        flags,
    };
    // The caller that holds the node lock holds the transaction and journal too: they
    // come before it in the lock order.
    let _transaction = if flags.contains(GetFlags::GLOCKHELD) {
        None
    } else {
        let mut transaction = Transaction::begin(&**vnode, Wait::Sleep)?;
        if job.blockalloc && !flags.contains(GetFlags::JOURNALLOCKED) {
            transaction.begin_journal()?;
        }
        Some(transaction)
    };
    if vnode.is_dead() {
        return Err(Error::Dead);
    }
    loop {
        if let Attempt::Done(result) = job.attempt() {
            return result;
        }
    }
}

/// A sleeping fault's checked arguments (the synchronous and read-ahead ways through).
struct FaultJob<'a, V: Vnode> {
    vnode: &'a Arc<V>,
    geometry: Geometry,
    offset: u64,
    count: usize,
    center: usize,
    request_end: u64,
    memwrite: bool,
    /// A write fault that allocates the blocks under its pages.
    blockalloc: bool,
    flags: GetFlags,
}

/// How one attempt at a fault ended.
enum Attempt<'a, V: Vnode> {
    /// The size changed while the object lock was dropped: start over.
    Retry,
    Done(Result<Fetched<'a, V>>),
}

/// The byte ranges one attempt works on, fixed by the size it saw.
struct Span {
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

impl<'a, V: Vnode> FaultJob<'a, V> {
    fn async_io(&self) -> bool {
        !self.flags.contains(GetFlags::SYNCIO)
    }

    /// Works out the attempt's span from the size now (`None`: the center page is past
    /// memory EOF).
    // Cannot overflow: `offset + count` pages is `request_end` (checked), `memeof` is
    // clipped to `max_file_size` (< 2^63), and a block (<= 1 MiB) more fits.
    #[allow(clippy::arithmetic_side_effects)]
    fn span(&self, size: u64, write_size: u64) -> Option<Span> {
        let map = self.vnode.block_map();
        let bounds = Bounds::new(map, size, self.request_end, self.flags);
        let memeof = bounds.memeof.min(max_file_size(map));
        let center = self.offset + (self.center * PAGE_SIZE) as u64;
        if center >= memeof {
            log::trace!(
                "getpages {:#x}+{} past EOF {memeof:#x}",
                self.offset,
                self.count
            );
            return None;
        }
        let requested = ((round_page(memeof - self.offset) >> PAGE_SHIFT) as usize).min(self.count);
        let block_mask = self.geometry.block_size() - 1;
        let start = self.offset & !block_mask;
        let end =
            round_page((self.offset + (requested * PAGE_SIZE) as u64 + block_mask) & !block_mask)
                .min(round_page(memeof));
        let data_eof = size.max(write_size).min(max_file_size(map));
        let data_end = ((data_eof + block_mask) & !block_mask).clamp(start, end);
        Some(Span {
            diskeof: bounds.diskeof,
            requested,
            start,
            end,
            data_end,
        })
    }

    /// One pass: collect the pages, read and allocate what they need, settle them.
    fn attempt(&self) -> Attempt<'a, V> {
        let vnode = self.vnode;
        let object = vnode.object();
        let state = object.lock();
        let original_size = state.size();
        let Some(span) = self.span(original_size, state.write_size()) else {
            return Attempt::Done(Err(Error::Invalid));
        };
        mark_timestamps(&**vnode, self.memwrite, self.flags);
        drop(state);

        let node = object.node_lock();
        let node_guard = match (self.flags.contains(GetFlags::GLOCKHELD), self.blockalloc) {
            (true, _) => None,
            (false, true) => Some(node.write()),
            (false, false) => Some(node.read()),
        };
        let state = object.lock();
        // A shrink would leave pages past the new end; a growth would zero-fill, as
        // past the old disk end, bytes a writer has meanwhile put there (and that a
        // flush may have written and evicted). The reference checks only the former.
        if state.size() != original_size {
            log::trace!(
                "getpages: size changed to {:#x} while unlocked, starting over",
                state.size()
            );
            return Attempt::Retry;
        }
        let mut pages = Vec::new();
        let (state, found) = object.find_pages(
            state,
            self.offset,
            span.requested,
            !self.async_io(),
            &mut pages,
        );
        if let Err(error) = found {
            return Attempt::Done(Err(error));
        }
        if self.flags.contains(GetFlags::OVERWRITE) {
            drop(node_guard);
            return Attempt::Done(self.overwrite(state, pages, span.requested));
        }
        let mut needs_io = pages.iter().any(|page| {
            state.cache().lookup(page.offset).is_some_and(|p| {
                p.flags.contains(PageFlags::FAKE)
                    || (self.blockalloc && p.flags.contains(PageFlags::RDONLY))
            })
        });
        let mut state = state;
        let mut allocated = true;
        if self.blockalloc && !needs_io {
            // Valid, writable pages can still lie over holes (blocks smaller than a
            // page past an old end of file, blocks a truncation freed): a write fault
            // makes sure every block under the bytes it hands out exists, whatever the
            // state of the pages (as `ufs_balloc_range` always calls `GOP_ALLOC`).
            drop(state);
            let checked = is_allocated(vnode.block_map(), self.geometry, span.start, span.data_end);
            state = object.lock();
            match checked {
                Ok(all) => allocated = all,
                Err(error) => {
                    object.release(state, &pages);
                    return Attempt::Done(Err(error));
                }
            }
            needs_io = !allocated;
        }
        if !needs_io {
            drop(node_guard);
            log::trace!("getpages: all {} pages resident", span.requested);
            return Attempt::Done(Ok(self.settle(state, pages, 0..span.requested)));
        }

        // Cannot overflow: `span.start <= offset < span.end` (`span` clips the end no
        // lower than the center page's end).
        #[allow(clippy::arithmetic_side_effects)]
        let (total, first_requested) = (
            ((span.end - span.start) >> PAGE_SHIFT) as usize,
            ((self.offset - span.start) >> PAGE_SHIFT) as usize,
        );
        if span.start != self.offset || total != span.requested {
            // Pages below `offset` are needed: taking them while holding higher ones
            // could deadlock against another fault, so let go and collect afresh.
            let wake = state.release_pages(&pages);
            object.wake_if(wake);
            pages.clear();
            let (again, found) =
                object.find_pages(state, span.start, total, !self.async_io(), &mut pages);
            state = again;
            if let Err(error) = found {
                return Attempt::Done(Err(error));
            }
        }
        if state.size() != original_size {
            // Waiting for a busy page let an extending write publish its size: bytes
            // past the old end may be on the disk now, so the old disk end is stale.
            log::trace!("getpages: size changed while waiting for pages, starting over");
            object.release(state, &pages);
            return Attempt::Retry;
        }
        let status = match PageStatus::of(&state, &pages) {
            Ok(status) => status,
            Err(error) => {
                object.release(state, &pages);
                return Attempt::Done(Err(error));
            }
        };
        drop(state);

        let read = ReadJob {
            vnode,
            geometry: self.geometry,
            start: span.start,
            diskeof: span.diskeof,
            blockalloc: self.blockalloc,
            must_allocate: !allocated,
            alloc_end: span.data_end,
        };
        let result = read.run(pages, &status, self.async_io());
        drop(node_guard);
        Attempt::Done(match result {
            Ok(None) => Ok(Fetched::Started),
            Ok(Some(pages)) => {
                // Cannot overflow: both index the `total` pages collected.
                #[allow(clippy::arithmetic_side_effects)]
                let keep = first_requested..first_requested + span.requested;
                Ok(self.settle(object.lock(), pages, keep))
            }
            Err(err) => Err(err),
        })
    }

    /// An overwrite fault: the caller allocated the blocks and will fill the pages
    /// whole, so nothing is read; the pages start dirty.
    fn overwrite(
        &self,
        mut state: WriteGuard<'a, ObjectState<V::Cache>>,
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
        if over_hole && self.blockalloc {
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
        state: WriteGuard<'a, ObjectState<V::Cache>>,
        pages: Vec<PageRef>,
        keep: Range<usize>,
    ) -> Fetched<'a, V> {
        let settling = Settle {
            keep,
            handout: self.handout(),
            dirty_tracking: self.memwrite,
            overwrite: false,
        };
        settle(self.vnode, state, pages, settling)
    }

    fn handout(&self) -> Handout {
        if self.async_io() {
            Handout::Started
        } else if self.blockalloc {
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

/// One read of busy pages from the device (the reference's `genfs_getpages_read`).
struct ReadJob<'a, V: Vnode> {
    vnode: &'a Arc<V>,
    geometry: Geometry,
    start: u64,
    diskeof: u64,
    blockalloc: bool,
    /// Some block under the pages is a hole that a write fault must allocate, even if
    /// no page needs reading.
    must_allocate: bool,
    /// The end of the blocks a write fault allocates (from `start`): where the file's
    /// data ends.
    alloc_end: u64,
}

impl<V: Vnode> ReadJob<'_, V> {
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

    /// Reads the `FAKE` pages among `pages`. Synchronous: returns the pages once
    /// read, or frees them and returns the error. Asynchronous: returns `None` once
    /// the requests are started; their completion settles the pages.
    ///
    /// Requests cover whole device sectors: the read of the last one runs past the
    /// disk end of file, and what it brings from there is zeroed when it lands.
    // Cannot overflow: every offset lies in `start .. start + total`, the fault's span,
    // which ends at most at `round_page(max_file_size)` (< 2^63); lengths and counts are
    // bounded by `total`, sectors by `Geometry` (<= 1 MiB).
    #[allow(clippy::arithmetic_side_effects)]
    fn run(
        &self,
        pages: Vec<PageRef>,
        status: &[PageStatus],
        async_io: bool,
    ) -> Result<Option<Vec<PageRef>>> {
        let total = (pages.len() * PAGE_SIZE) as u64;
        let to_eof = total.min(self.diskeof.saturating_sub(self.start));
        let sector_mask = (1u64 << self.geometry.dev_bshift) - 1;
        let bytes = ((to_eof + sector_mask) & !sector_mask).min(total);
        // What the last sector brings from past the disk end of file (a truncation's
        // leftovers, not file data): zeroed once the read lands.
        let past_eof = (to_eof < bytes && status[(to_eof >> PAGE_SHIFT) as usize].fake)
            .then_some((self.start + to_eof, self.start + bytes));
        // Bytes past the last sector read are zero; pages already valid keep their
        // contents.
        let mut tail = self.start + bytes;
        while tail < self.start + total {
            let index = ((tail - self.start) >> PAGE_SHIFT) as usize;
            let page_end = trunc_page(tail) + PAGE_SIZE as u64;
            if status[index].fake {
                pages[index].zero((tail & PAGE_MASK) as usize, (page_end - tail) as usize);
            }
            tail = page_end;
        }

        let built = if async_io {
            let vnode = (*self.vnode).clone();
            let mut settled = Vec::new();
            if settled.try_reserve_exact(pages.len()).is_err() {
                // Read-ahead that cannot be had is no error, but its pages must not
                // stay busy.
                return Err(self.abandon(&pages, Error::NoMemory));
            }
            settled.extend_from_slice(&pages);
            Nest::asynchronous(
                bytes as usize,
                Direction::Read,
                Priority::TimeLimited,
                move |outcome: Outcome| {
                    let object = vnode.object();
                    if let (Ok(()), Some((from, to))) = (outcome.result, past_eof) {
                        zero_file_range(&settled, from, to);
                    }
                    let mut state = object.lock();
                    let wake = match outcome.result {
                        Ok(()) => settled.iter().fold(false, |wake, page| {
                            if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                                resident.flags.remove(PageFlags::FAKE);
                            }
                            wake | state.settle(page.offset)
                        }),
                        Err(err) => {
                            log::trace!("read-ahead failed: {err}");
                            state.release_pages(&settled)
                        }
                    };
                    drop(state);
                    object.wake_if(wake);
                },
            )
            .map(|nest| (nest, None))
        } else {
            Nest::synchronous(bytes as usize, Direction::Read, Priority::TimeCritical)
                .map(|(nest, waiter)| (nest, Some(waiter)))
        };
        let (mut nest, waiter) = match built {
            Ok(built) => built,
            // The read-ahead's completion has already run with the error and released
            // the pages.
            Err(err) if async_io => return Err(err),
            Err(err) => return Err(self.abandon(&pages, err)),
        };

        let map = self.vnode.block_map();
        let device = self.vnode.device();
        let mut offset = self.start;
        let end = self.start + bytes;
        let mut skipped = 0u64;
        let mut saw_hole = false;
        let mut error = Ok(());
        'walk: while offset < end {
            let mut index = ((offset - self.start) >> PAGE_SHIFT) as usize;
            while !status[index].fake {
                saw_hole |= status[index].read_only;
                let step = (PAGE_SIZE as u64).min(end - offset);
                offset += step;
                skipped += step;
                index += 1;
                if offset >= end {
                    break 'walk;
                }
            }
            let extent = match extent_at(map, self.geometry, offset, end) {
                Ok(extent) => extent,
                Err(err) => {
                    log::trace!("getpages: bmap at {offset:#x} failed: {err}");
                    skipped += end - offset;
                    error = Err(err);
                    break;
                }
            };
            let mut len = extent.len.min(max_transfer(&**self.vnode) as u64);
            if offset + len > round_page(offset + 1) {
                let fake_run = status[index..].iter().take_while(|s| s.fake).count() as u64;
                len = len.min(fake_run * PAGE_SIZE as u64 - (offset & PAGE_MASK));
            }
            let Some(block) = extent.block else {
                log::trace!("getpages: hole at {offset:#x}+{len:#x}");
                saw_hole = true;
                zero_file_range(&pages, offset, offset + len);
                skipped += len;
                if !self.blockalloc {
                    let span = trunc_page(offset)..round_page(offset + len);
                    self.mark_read_only(span.step_by(PAGE_SIZE));
                }
                offset += len;
                continue;
            };
            let first_index = ((trunc_page(offset) - self.start) >> PAGE_SHIFT) as usize;
            let segments = match page_segments(&pages[first_index..], offset, len as usize) {
                Ok(segments) => segments,
                Err(err) => {
                    skipped += end - offset;
                    error = Err(err);
                    break;
                }
            };
            log::trace!("getpages: read {len:#x} bytes at {offset:#x} from block {block:#x}");
            device.submit(nest.request(block, offset, segments));
            offset += len;
        }
        // Nothing is read past the disk end, but the blocks there under these pages may
        // be holes too (blocks smaller than a page, or pages past the end of file): such
        // a page must not become writable without allocating them, or what is stored
        // there later is never written.
        let (past, span_end) = (self.start + to_eof, self.start + total);
        if error.is_ok()
            && past < span_end
            && matches!(is_allocated(map, self.geometry, past, span_end), Ok(false))
        {
            saw_hole = true;
            if !self.blockalloc {
                let fresh = pages.iter().zip(status);
                self.mark_read_only(
                    fresh
                        .filter(|(page, s)| s.fake && page.offset + PAGE_SIZE as u64 > past)
                        .map(|(page, _)| page.offset),
                );
            }
        }
        nest.finish(skipped as usize, error);

        let Some(waiter) = waiter else {
            return Ok(None);
        };
        let outcome = waiter.wait();
        let mut result = outcome.result;
        if let (Ok(()), Some((from, to))) = (result, past_eof) {
            zero_file_range(&pages, from, to);
        }
        if result.is_ok() && (saw_hole || self.must_allocate) && self.blockalloc {
            result = self.allocate(&pages);
        }
        match result {
            Ok(()) => Ok(Some(pages)),
            Err(err) => Err(self.abandon(&pages, err)),
        }
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

/// Reads file bytes from `offset` into `buf` through the page cache — what a kernel's
/// read(2) calls. Faults pages in a batch at a time (the fast path first, a
/// synchronous fault for what is missing), stops at end of file, and returns how many
/// bytes it copied (0 at or past the end of file).
///
/// Errors: [`Error::Invalid`] for an offset past the file's
/// [`BlockMap::max_size`](crate::BlockMap::max_size) (a negative `off_t` to a kernel);
/// any fault error.
// Cannot overflow: `offset <= max_file_size` (< 2^63, checked) and `done <= buf.len()`
// (< 2^63), so `pos` fits; pages and batches end at most at `round_page(want_end)`.
#[allow(clippy::arithmetic_side_effects)]
pub fn read<V: Vnode>(vnode: &Arc<V>, offset: u64, buf: &mut [u8]) -> Result<usize> {
    if offset > max_file_size(vnode.block_map()) {
        return Err(Error::Invalid);
    }
    let batch_pages = (vnode.max_transfer() / PAGE_SIZE).clamp(1, 16);
    let mut done = 0;
    while done < buf.len() {
        let size = vnode.object().size();
        if offset + done as u64 >= size {
            break;
        }
        // A batch that stopped at the end of file inside a page copied part of it; the
        // file has grown since, and the page is copied again from its start (or the
        // read's), so that every page's bytes come from one instant.
        let pos = trunc_page(offset + done as u64).max(offset);
        let restart = (pos - offset) as usize;
        // `pos < size <= max_file_size`, 2^63 at most: one buffer more cannot wrap.
        let want_end = pos.saturating_add((buf.len() - restart) as u64).min(size);
        let first = trunc_page(pos);
        let count = (((round_page(want_end) - first) >> PAGE_SHIFT) as usize).min(batch_pages);
        let batch_end = (first + (count * PAGE_SIZE) as u64).min(want_end);
        let cached = match getpages(
            vnode,
            Fault::resident(first, count, Access::Read).with_advice(Advice::Sequential),
        ) {
            // The size is read again with the pages in hand: a truncation may have
            // shrunk the file (and zeroed the new last page's tail) since it was read
            // above, and bytes past the end it set are not data.
            Ok(Fetched::Resident(pages)) if pages.is_complete() => Some(copy_out(
                |i| pages.bytes(i).unwrap_or(&[]),
                first,
                pos,
                batch_end.min(pages.size()),
                &mut buf[restart..],
            )),
            Ok(_) | Err(Error::Busy) => None,
            Err(Error::Invalid) => break,
            Err(err) => return Err(err),
        };
        let copied = match cached {
            Some(copied) => copied,
            None => match getpages(
                vnode,
                Fault::read(first, count).with_advice(Advice::Sequential),
            ) {
                Ok(Fetched::Busy(pages)) => {
                    // As above; the pages are busy, so a truncation waits for them
                    // before it frees or zeroes any, and the size now tells whether it
                    // has begun (then what it leaves is what the pages hold up to it).
                    let valid_end = batch_end
                        .min(first + (pages.len() * PAGE_SIZE) as u64)
                        .min(vnode.object().size());
                    copy_out(
                        |i| pages.bytes(i),
                        first,
                        pos,
                        valid_end,
                        &mut buf[restart..],
                    )
                }
                Ok(_) => 0,
                // The file shrank under us: what is left is past the end.
                Err(Error::Invalid) => break,
                Err(err) => return Err(err),
            },
        };
        let reached = restart + copied;
        if reached <= done {
            // No further than before (the file shrank meanwhile): the read ends there.
            done = reached;
            break;
        }
        done = reached;
    }
    Ok(done)
}

/// Copies file bytes `pos .. end` out of the pages starting at file offset `first`.
// Cannot overflow: `first <= pos <= at < end` and `written <= out.len()`; `within + len`
// is at most `PAGE_SIZE`.
#[allow(clippy::arithmetic_side_effects)]
fn copy_out<'p>(
    page: impl Fn(usize) -> &'p [u8],
    first: u64,
    pos: u64,
    end: u64,
    out: &mut [u8],
) -> usize {
    let mut at = pos;
    let mut written = 0;
    while at < end && written < out.len() {
        let bytes = page(((at - first) >> PAGE_SHIFT) as usize);
        let within = (at & PAGE_MASK) as usize;
        let len = (PAGE_SIZE - within)
            .min((end - at) as usize)
            .min(out.len() - written);
        if bytes.len() < within + len {
            break;
        }
        out[written..written + len].copy_from_slice(&bytes[within..within + len]);
        written += len;
        at += len as u64;
    }
    written
}
