//! One read of a fault's busy pages from the device (the reference's
//! `genfs_getpages_read`): the sectors it covers, the requests it builds from the
//! extent walker, and how its pages settle when it completes.

use alloc::vec::Vec;

use crate::bmap::{Geometry, extent_at, is_allocated};
use crate::buf::{BioWait, Direction, Nest, Outcome, Priority, page_segments};
use crate::error::{Error, Result};
use crate::hooks::{BlockMap, PageCache, Strategy};
use crate::object::{ObjectState, Wakeup};
use crate::page::{
    DirtyStatus, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PageFlags, PageRef, round_page, trunc_page,
    zero_file_range,
};
use crate::sync::Arc;
use crate::vnode::{Vnode, max_transfer, note_dirty};

/// Whether each collected page still needs reading (`FAKE`) and whether it backs a
/// hole (`RDONLY`), read once under the object lock.
#[derive(Clone, Copy)]
pub(super) struct PageStatus {
    fake: bool,
    read_only: bool,
}

impl PageStatus {
    pub(super) fn of<C: PageCache>(
        state: &ObjectState<C>,
        pages: &[PageRef],
    ) -> Result<Vec<PageStatus>> {
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
pub(super) struct ReadJob<'a, V: Vnode> {
    pub(super) vnode: &'a Arc<V>,
    pub(super) geometry: Geometry,
    pub(super) start: u64,
    pub(super) diskeof: u64,
    /// Read-ahead: the read's completion settles the pages; nobody waits.
    pub(super) ahead: bool,
    /// A write fault that allocates the blocks under its pages.
    pub(super) allocates: bool,
    /// Some block under the pages is a hole that a write fault must allocate, even if
    /// no page needs reading.
    pub(super) must_allocate: bool,
    /// The end of the blocks a write fault allocates (from `start`): where the file's
    /// data ends.
    pub(super) alloc_end: u64,
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
    pub(super) fn run(
        &self,
        pages: Vec<PageRef>,
        status: &[PageStatus],
    ) -> Result<Option<Vec<PageRef>>> {
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
        let sector_mask = self.geometry.sector_mask();
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
                Err(err) => {
                    self.vnode.object().io().read_error();
                    Err(self.abandon(pages, err))
                }
            };
        }
        let mut settled = Vec::new();
        if settled.try_reserve_exact(pages.len()).is_err() {
            // Read-ahead that cannot be had is no error, but its pages must not stay
            // busy (and it counts as a failed read, as it does when its group cannot
            // be had: then its completion runs with the error).
            self.vnode.object().io().read_error();
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
        self.vnode.object().io().hole(len);
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
        let request = nest.request(block, offset, segments)?;
        self.vnode.object().io().read(request.len());
        self.vnode.device().submit(request);
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
        if result.is_err() {
            self.vnode.object().io().read_error();
        }
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
        Ok(()) => settled.iter().fold(Wakeup::NONE, |wake, page| {
            if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                resident.flags.remove(PageFlags::FAKE);
            }
            wake | state.settle(page.offset)
        }),
        Err(err) => {
            object.io().read_error();
            log::trace!("read-ahead failed: {err}");
            state.release_pages(settled)
        }
    };
    drop(state);
    object.wake_if(wake);
}
