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
//!   page or an allocation failure is [`Error::Busy`]); the request's completion
//!   settles the pages.

use alloc::vec::Vec;

use bitflags::bitflags;

use crate::bmap::{Geometry, extent_at, is_allocated};
use crate::buf::{Direction, Nest, Outcome, Priority, page_segments};
use crate::busy::{BusyPages, Frames, ObjectGuard, ResidentPages};
use crate::error::{Error, Result};
use crate::hooks::{
    Access, BlockMap, DEV_BSHIFT, MountFlags, PageCache, SizeKind, Strategy, Update, Vnode,
    VnodeKind,
};
use crate::object::{ObjectState, PageRef};
use crate::page::{
    DirtyStatus, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PageFlags, round_page, trunc_page,
};
use crate::sync::Arc;

bitflags! {
    /// Options of a [`getpages`] call (the reference's `PGO_*` flags).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct GetFlags: u32 {
        /// Fast path: resident pages only, never sleep.
        const LOCKED = 1 << 0;
        /// Wait for the pages; without it the call is asynchronous read-ahead.
        const SYNCIO = 1 << 1;
        /// The caller will overwrite the pages whole: do not read them. The caller
        /// must have allocated their blocks first (as [`write()`](crate::write) does):
        /// an overwrite fault neither reads nor allocates, and one that meets a page
        /// known to back a hole fails with [`Error::Invalid`].
        const OVERWRITE = 1 << 2;
        /// Pages past the end of file may be created (the caller is extending it).
        const PASTEOF = 1 << 3;
        /// Do not update timestamps.
        const NOTIMESTAMP = 1 << 4;
        /// The caller already holds the node lock exclusively.
        const GLOCKHELD = 1 << 5;
        /// The caller is already inside a journal transaction.
        const JOURNALLOCKED = 1 << 6;
        /// A write fault that must not allocate blocks over holes.
        const NOBLOCKALLOC = 1 << 7;
    }
}

/// The access pattern the faulting mapping announced (passed through, for hosts that
/// log or tune by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Advice {
    /// No particular pattern.
    #[default]
    Normal,
    /// Random access.
    Random,
    /// Sequential access.
    Sequential,
}

/// What [`getpages`] hands back.
#[must_use = "the pages are busy or the object lock is held until this is dropped"]
pub enum Fetched<'a, V: Vnode> {
    /// Synchronous fault: the requested pages, busy.
    Busy(BusyPages<'a, V>),
    /// Fast path: resident pages under the object lock.
    Resident(ResidentPages<'a, V>),
    /// Asynchronous read-ahead started (or nothing needed reading); the pages will be
    /// resident and unbusy once it completes.
    Started,
}

impl<'a, V: Vnode> Fetched<'a, V> {
    /// The busy pages of a synchronous fault.
    pub fn into_busy(self) -> Option<BusyPages<'a, V>> {
        match self {
            Fetched::Busy(pages) => Some(pages),
            _ => None,
        }
    }

    /// The resident pages of the fast path.
    pub fn into_resident(self) -> Option<ResidentPages<'a, V>> {
        match self {
            Fetched::Resident(pages) => Some(pages),
            _ => None,
        }
    }
}

/// Leaves the mount transaction and journal on every way out.
struct Transaction<'a, V: Vnode> {
    vnode: &'a V,
    journal: bool,
}

impl<V: Vnode> Drop for Transaction<'_, V> {
    fn drop(&mut self) {
        if self.journal {
            self.vnode.journal_end();
        }
        self.vnode.trans_end();
    }
}

/// The block geometry a vnode's I/O uses: block devices address their own sectors.
pub(crate) fn geometry<V: Vnode>(vnode: &V) -> Result<Geometry> {
    match vnode.kind() {
        VnodeKind::BlockDevice => Geometry::new(DEV_BSHIFT, DEV_BSHIFT),
        _ => Geometry::new(vnode.fs_bshift(), vnode.dev_bshift()),
    }
}

/// Faults in `count` pages from `offset` (page aligned) of `vnode`; `center` indexes
/// the page the caller needs. See the module docs for the three ways through.
///
/// Errors: [`Error::Invalid`] for an unaligned offset, a zero count, a center outside
/// the range, or a center page past the end of file without [`GetFlags::PASTEOF`];
/// [`Error::Dead`] for a reclaimed vnode; [`Error::Busy`] from the fast path when the
/// center page is not resident and from read-ahead when it would have to sleep; the
/// host's error from `bmap`, `alloc` or the device. On error no page is left busy and
/// no page this call allocated stays resident.
pub fn getpages<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    offset: u64,
    count: usize,
    center: usize,
    access: Access,
    advice: Advice,
    flags: GetFlags,
) -> Result<Fetched<'a, V>> {
    let request_end = request_end(offset, count, center)?;
    let memwrite = access == Access::Write;
    let overwrite = flags.contains(GetFlags::OVERWRITE);
    if overwrite && !memwrite {
        return Err(Error::Invalid);
    }
    if vnode.is_dead() {
        return Err(Error::Dead);
    }
    log::trace!(
        "getpages off {offset:#x} count {count} center {center} {access:?} {advice:?} {flags:?}"
    );
    if flags.contains(GetFlags::LOCKED) {
        return fast_path(vnode, offset, count, center, memwrite, flags).map(Fetched::Resident);
    }
    let geometry = geometry(&**vnode)?;
    let _transaction = Transaction {
        vnode: &**vnode,
        journal: false,
    };
    vnode.trans_begin(true)?;
    if vnode.is_dead() {
        return Err(Error::Dead);
    }
    let blockalloc = memwrite && !flags.contains(GetFlags::NOBLOCKALLOC);
    let mut transaction = _transaction;
    if blockalloc && vnode.has_journal() && !flags.contains(GetFlags::JOURNALLOCKED) {
        vnode.journal_begin()?;
        transaction.journal = true;
    }
    let object = vnode.object();
    let map = vnode.block_map();
    loop {
        let state = object.lock();
        let original_size = state.size();
        let bounds = Bounds::new(map, original_size, request_end, flags);
        if offset + (center * PAGE_SIZE) as u64 >= bounds.memeof {
            log::trace!("getpages {offset:#x}+{count} past EOF {:#x}", bounds.memeof);
            return Err(Error::Invalid);
        }
        mark_timestamps(&**vnode, memwrite, flags);
        drop(state);

        let async_io = !flags.contains(GetFlags::SYNCIO);
        let requested = ((round_page(bounds.memeof - offset) >> PAGE_SHIFT) as usize).min(count);
        let block_mask = geometry.block_size() - 1;
        let start = offset & !block_mask;
        let end = round_page((offset + (requested * PAGE_SIZE) as u64 + block_mask) & !block_mask)
            .min(round_page(bounds.memeof));
        let ridx = ((offset - start) >> PAGE_SHIFT) as usize;

        let node = object.node_lock();
        let node_guard = match (flags.contains(GetFlags::GLOCKHELD), blockalloc) {
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
            continue;
        }
        let mut pages = Vec::new();
        let (mut state, found) = object.find_pages(state, offset, requested, !async_io, &mut pages);
        found?;

        if overwrite {
            drop(node_guard);
            let over_hole = pages.iter().any(|page| {
                state
                    .cache()
                    .lookup(page.offset)
                    .is_some_and(|p| p.flags.contains(PageFlags::RDONLY))
            });
            if over_hole && blockalloc {
                // The caller must allocate before overwriting; a page known to back a
                // hole proves it did not, and its data would never be written.
                let wake = state.release_pages(&pages);
                drop(state);
                object.wake_if(wake);
                return Err(Error::Invalid);
            }
            for page in &pages {
                if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                    resident.flags.remove(PageFlags::RDONLY);
                }
                state.mark(page.offset, DirtyStatus::Dirty);
            }
            return Ok(finish(
                vnode, state, pages, 0, requested, async_io, memwrite, true,
            ));
        }

        let needs_io = pages.iter().any(|page| {
            state.cache().lookup(page.offset).is_some_and(|p| {
                p.flags.contains(PageFlags::FAKE)
                    || (blockalloc && p.flags.contains(PageFlags::RDONLY))
            })
        });
        if !needs_io {
            drop(node_guard);
            log::trace!("getpages: all {requested} pages resident");
            return Ok(finish(
                vnode, state, pages, 0, requested, async_io, memwrite, false,
            ));
        }

        let total = ((end - start) >> PAGE_SHIFT) as usize;
        let ridx_in_pages = if start != offset || total != requested {
            // Pages below `offset` are needed: taking them while holding higher ones
            // could deadlock against another fault, so let go and collect afresh.
            let wake = state.release_pages(&pages);
            object.wake_if(wake);
            pages.clear();
            let (again, found) = object.find_pages(state, start, total, !async_io, &mut pages);
            state = again;
            found?;
            ridx
        } else {
            0
        };
        if state.size() != original_size {
            // Waiting for a busy page let an extending write publish its size: bytes
            // past the old end may be on the disk now, so the old disk end is stale.
            log::trace!("getpages: size changed while waiting for pages, starting over");
            let wake = state.release_pages(&pages);
            drop(state);
            object.wake_if(wake);
            continue;
        }
        let status: Vec<(bool, bool)> = pages
            .iter()
            .map(|page| {
                let flags = state
                    .cache()
                    .lookup(page.offset)
                    .map_or(PageFlags::FAKE, |p| p.flags);
                (
                    flags.contains(PageFlags::FAKE),
                    flags.contains(PageFlags::RDONLY),
                )
            })
            .collect();
        drop(state);

        let read = ReadJob {
            vnode,
            geometry,
            start,
            diskeof: bounds.diskeof,
            blockalloc,
        };
        let result = read.run(pages, &status, async_io);
        drop(node_guard);
        return match result {
            Ok(None) => Ok(Fetched::Started),
            Ok(Some(pages)) => {
                let state = object.lock();
                Ok(finish(
                    vnode,
                    state,
                    pages,
                    ridx_in_pages,
                    requested,
                    false,
                    memwrite,
                    false,
                ))
            }
            Err(err) => Err(err),
        };
    }
}

/// Checks a fault's arguments (page-aligned offset, at least one page, the center
/// inside the range, no overflow) and returns the end of the requested range.
pub(crate) fn request_end(offset: u64, count: usize, center: usize) -> Result<u64> {
    if offset & PAGE_MASK != 0 || count == 0 || center >= count {
        return Err(Error::Invalid);
    }
    u64::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(PAGE_SIZE as u64))
        .and_then(|span| offset.checked_add(span))
        .ok_or(Error::Invalid)
}

/// Memory EOF and disk EOF of one fault attempt (the reference's `GOP_SIZE` pair).
pub(crate) struct Bounds {
    pub(crate) diskeof: u64,
    pub(crate) memeof: u64,
}

impl Bounds {
    pub(crate) fn new<M: BlockMap>(map: &M, size: u64, request_end: u64, flags: GetFlags) -> Self {
        let diskeof = map.size(size, SizeKind::Disk);
        let memeof = if flags.contains(GetFlags::PASTEOF) {
            map.size(size.max(request_end), SizeKind::Memory)
        } else {
            map.size(size, SizeKind::Memory)
        };
        Self { diskeof, memeof }
    }
}

fn mark_timestamps<V: Vnode>(vnode: &V, memwrite: bool, flags: GetFlags) {
    if flags.contains(GetFlags::NOTIMESTAMP)
        || (vnode.kind() == VnodeKind::BlockDevice
            && vnode.mount_flags().contains(MountFlags::NO_DEV_MTIME))
    {
        return;
    }
    let mut update = Update::empty();
    if !vnode.mount_flags().contains(MountFlags::NO_ATIME) {
        update |= Update::ACCESSED;
    }
    if memwrite {
        update |= Update::MODIFIED;
    }
    if !update.is_empty() {
        vnode.mark_update(update);
    }
}

/// The fast path (G1).
pub(crate) fn fast_path<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    offset: u64,
    count: usize,
    center: usize,
    memwrite: bool,
    flags: GetFlags,
) -> Result<ResidentPages<'a, V>> {
    let object = vnode.object();
    let mut guard = if memwrite {
        ObjectGuard::Exclusive(object.lock())
    } else {
        ObjectGuard::Shared(object.read())
    };
    let state: &ObjectState<V::Cache> = match &guard {
        ObjectGuard::Shared(state) => state,
        ObjectGuard::Exclusive(state) => state,
    };
    let map = vnode.block_map();
    let request_end = offset + (count * PAGE_SIZE) as u64;
    let memeof = Bounds::new(map, state.size(), request_end, flags).memeof;
    if offset + (center * PAGE_SIZE) as u64 >= memeof {
        return Err(Error::Invalid);
    }
    mark_timestamps(&**vnode, memwrite, flags);
    let mut frames = Frames::with_len(count)?;
    let mut found = 0;
    let end = request_end.min(round_page(memeof));
    for page in state.cache().range(offset..end) {
        let rdonly_for_write = memwrite && page.flags.contains(PageFlags::RDONLY);
        let usable =
            !(page.flags.intersects(PageFlags::BUSY | PageFlags::FAKE) || rdonly_for_write);
        if usable {
            frames.as_mut_slice()[((page.offset() - offset) >> PAGE_SHIFT) as usize] =
                Some(page.frame());
            found += 1;
        }
    }
    if found == 0 {
        return Err(Error::Busy);
    }
    // A truncation holds the node lock exclusively while it frees pages; if one is
    // under way, hand back nothing rather than pages that are about to go.
    if object.node_lock().is_write_locked() {
        return Err(Error::Busy);
    }
    if frames.as_slice()[center].is_none() {
        return Err(Error::Busy);
    }
    if memwrite {
        if let ObjectGuard::Exclusive(state) = &mut guard {
            for (index, frame) in frames.as_slice().iter().enumerate() {
                let page_offset = offset + (index * PAGE_SIZE) as u64;
                let clean = state
                    .cache()
                    .lookup(page_offset)
                    .is_some_and(|p| p.dirty() == DirtyStatus::Clean);
                if frame.is_some() && clean {
                    state.mark(page_offset, DirtyStatus::Unknown);
                }
            }
            state.note_dirty(&**vnode);
        }
    }
    Ok(ResidentPages {
        vnode: &**vnode,
        guard,
        start: offset,
        frames,
    })
}

/// Settles the pages of a fault that succeeded (the reference's `out:` block): valid
/// pages lose FAKE, pages outside the request (and all of them for read-ahead) are
/// unbusied and queued, requested pages of a write fault start dirty tracking.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    mut state: crate::sync::WriteGuard<'a, ObjectState<V::Cache>>,
    pages: Vec<PageRef>,
    ridx: usize,
    requested: usize,
    async_io: bool,
    memwrite: bool,
    overwrite: bool,
) -> Fetched<'a, V> {
    let mut wake = false;
    let keep = ridx..ridx + requested;
    let mut next_index = 0;
    // The caller's pages are kept in place: no allocation on the way out.
    let mut kept = pages;
    kept.retain(|page| {
        let index = next_index;
        next_index += 1;
        let Some(resident) = state.cache_mut().lookup_mut(page.offset) else {
            return false;
        };
        if !overwrite {
            resident.flags.remove(PageFlags::FAKE);
        }
        if !keep.contains(&index) || async_io {
            if resident.flags.contains(PageFlags::FAKE) {
                // An overwrite fault's extra page was never read: it holds nothing.
                zero(page, 0, PAGE_SIZE);
                resident.flags.remove(PageFlags::FAKE);
            }
            wake |= state.settle(page.offset);
            false
        } else {
            if memwrite && !overwrite && resident.dirty() == DirtyStatus::Clean {
                state.mark(page.offset, DirtyStatus::Unknown);
            }
            true
        }
    });
    if memwrite {
        state.note_dirty(&**vnode);
    }
    drop(state);
    vnode.object().wake_if(wake);
    if async_io {
        Fetched::Started
    } else {
        Fetched::Busy(BusyPages::new(&**vnode, kept))
    }
}

/// Zeroes `len` bytes from byte `at` of a busy page this thread owns.
fn zero(page: &PageRef, at: usize, len: usize) {
    debug_assert!(at + len <= PAGE_SIZE);
    // SAFETY: the page is busy and owned by this call, so no other thread reads or
    // writes these bytes (a device request of this call may be filling *other* bytes
    // of the same page, which is why this writes the exact range through a raw
    // pointer instead of forming a slice over the whole page); `at + len <= PAGE_SIZE`
    // keeps the write inside the frame.
    unsafe { core::ptr::write_bytes(page.frame.as_ptr().add(at), 0, len) }
}

/// Zeroes file bytes `from .. to` in `pages` (consecutive from `pages[0]`).
fn zero_file_range(pages: &[PageRef], from: u64, to: u64) {
    let base = pages[0].offset;
    let mut at = from;
    while at < to {
        let page = &pages[((at - base) >> PAGE_SHIFT) as usize];
        let within = (at & PAGE_MASK) as usize;
        let len = (PAGE_SIZE - within).min((to - at) as usize);
        zero(page, within, len);
        at += len as u64;
    }
}

/// One read of busy pages from the device (the reference's `genfs_getpages_read`).
struct ReadJob<'a, V: Vnode> {
    vnode: &'a Arc<V>,
    geometry: Geometry,
    start: u64,
    diskeof: u64,
    blockalloc: bool,
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

    /// Reads the `FAKE` pages among `pages`. Synchronous: returns the pages once
    /// read, or frees them and returns the error. Asynchronous: returns `None` once
    /// the requests are started; their completion settles the pages.
    fn run(
        &self,
        pages: Vec<PageRef>,
        status: &[(bool, bool)],
        async_io: bool,
    ) -> Result<Option<Vec<PageRef>>> {
        let total = (pages.len() * PAGE_SIZE) as u64;
        let bytes = total.min(self.diskeof.saturating_sub(self.start));
        // Bytes past disk EOF are zero; pages already valid keep their contents.
        let mut tail = self.start + bytes;
        while tail < self.start + total {
            let index = ((tail - self.start) >> PAGE_SHIFT) as usize;
            let page_end = trunc_page(tail) + PAGE_SIZE as u64;
            if status[index].0 {
                zero(
                    &pages[index],
                    (tail & PAGE_MASK) as usize,
                    (page_end - tail) as usize,
                );
            }
            tail = page_end;
        }

        let built = if async_io {
            let vnode = (*self.vnode).clone();
            let mut settled = Vec::new();
            settled
                .try_reserve_exact(pages.len())
                .map_err(|_| Error::Busy)?;
            settled.extend_from_slice(&pages);
            Nest::asynchronous(
                bytes as usize,
                Direction::Read,
                Priority::TimeLimited,
                move |outcome: Outcome| {
                    let object = vnode.object();
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
            Err(err) => {
                let object = self.vnode.object();
                let mut state = object.lock();
                let wake = state.release_pages(&pages);
                drop(state);
                object.wake_if(wake);
                return Err(err);
            }
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
            while !status[index].0 {
                saw_hole |= status[index].1;
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
            let mut len = extent.len.min(self.vnode.max_transfer() as u64);
            if offset + len > round_page(offset + 1) {
                let fake_run = status[index..].iter().take_while(|s| s.0).count() as u64;
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
        let (past, span_end) = (self.start + bytes, self.start + total);
        if error.is_ok()
            && past < span_end
            && matches!(is_allocated(map, self.geometry, past, span_end), Ok(false))
        {
            saw_hole = true;
            if !self.blockalloc {
                let fresh = pages.iter().zip(status);
                self.mark_read_only(
                    fresh
                        .filter(|(page, s)| s.0 && page.offset + PAGE_SIZE as u64 > past)
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
        if result.is_ok() && saw_hole && self.blockalloc {
            result = self
                .vnode
                .block_map()
                .alloc(self.start, (pages.len() * PAGE_SIZE) as u64);
            log::trace!(
                "getpages: alloc {:#x}+{:#x} -> {result:?}",
                self.start,
                pages.len() * PAGE_SIZE
            );
            if result.is_ok() {
                let mut state = self.vnode.object().lock();
                for page in &pages {
                    if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                        resident.flags.remove(PageFlags::RDONLY);
                    }
                    state.mark(page.offset, DirtyStatus::Dirty);
                }
            }
        }
        match result {
            Ok(()) => Ok(Some(pages)),
            Err(err) => {
                let object = self.vnode.object();
                let mut state = object.lock();
                let wake = state.release_pages(&pages);
                drop(state);
                object.wake_if(wake);
                Err(err)
            }
        }
    }
}

/// Reads file bytes from `offset` into `buf` through the page cache — what a kernel's
/// read(2) calls. Faults pages in a batch at a time (the fast path first, a
/// synchronous fault for what is missing), stops at end of file, and returns how many
/// bytes it copied.
pub fn read<V: Vnode>(vnode: &Arc<V>, offset: u64, buf: &mut [u8]) -> Result<usize> {
    let batch_pages = (vnode.max_transfer() / PAGE_SIZE).clamp(1, 16);
    let mut done = 0;
    while done < buf.len() {
        let pos = offset + done as u64;
        let size = vnode.object().size();
        if pos >= size {
            break;
        }
        let want_end = (pos + (buf.len() - done) as u64).min(size);
        let first = trunc_page(pos);
        let count = (((round_page(want_end) - first) >> PAGE_SHIFT) as usize).min(batch_pages);
        let batch_end = (first + (count * PAGE_SIZE) as u64).min(want_end);
        let cached = match getpages(
            vnode,
            first,
            count,
            0,
            Access::Read,
            Advice::Sequential,
            GetFlags::LOCKED,
        ) {
            Ok(Fetched::Resident(pages)) if pages.is_complete() => Some(copy_out(
                |i| pages.bytes(i).unwrap_or(&[]),
                first,
                pos,
                batch_end,
                &mut buf[done..],
            )),
            Ok(_) | Err(Error::Busy) => None,
            Err(Error::Invalid) => break,
            Err(err) => return Err(err),
        };
        let copied = match cached {
            Some(copied) => copied,
            None => match getpages(
                vnode,
                first,
                count,
                0,
                Access::Read,
                Advice::Sequential,
                GetFlags::SYNCIO,
            ) {
                Ok(Fetched::Busy(pages)) => {
                    let valid_end = batch_end.min(first + (pages.len() * PAGE_SIZE) as u64);
                    copy_out(|i| pages.bytes(i), first, pos, valid_end, &mut buf[done..])
                }
                Ok(_) => 0,
                // The file shrank under us: what is left is past the end.
                Err(Error::Invalid) => break,
                Err(err) => return Err(err),
            },
        };
        if copied == 0 {
            break;
        }
        done += copied;
    }
    Ok(done)
}

/// Copies file bytes `pos .. end` out of the pages starting at file offset `first`.
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
