//! What a kernel's write(2) and truncate(2) call: the buffered write helper, block
//! allocation ahead of a write, and `setsize`.
//!
//! Both run inside the mount transaction (and journal) and hold the node lock
//! exclusively from start to end, in that order (DESIGN.md §4): writes and size
//! changes of one file happen one at a time, as a kernel's vnode lock makes them, so
//! an extending write never zeroes past an end of file another write has moved, and
//! no fault reads a block while it is being allocated. Faults they make themselves
//! pass [`GetFlags::GLOCKHELD`] and [`GetFlags::JOURNALLOCKED`].
//!
//! A write goes a batch of pages at a time. Ranges with holes, and ranges past the end
//! of file, get their blocks first the way a filesystem's write path does (the
//! reference's `ufs_balloc_range`): the whole filesystem blocks are faulted in with a
//! write fault, which allocates every block under them, and their pages marked dirty,
//! so zeroes around the written bytes reach the disk too. Pages the write covers whole
//! are faulted with [`GetFlags::OVERWRITE`] and never read; partial pages are read
//! first.

use crate::bmap::{Geometry, is_allocated};
use crate::error::{Error, Result};

use crate::fault::{Fault, GetFlags};
use crate::getpages::getpages;
use crate::hooks::{PageCache, Protection, max_file_size};
use crate::object::UsedBy;
use crate::page::PageRef;
use crate::page::{PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PageFlags, round_page, trunc_page};
use crate::putpages::{PutFlags, TransactionHeld, after_write_batch, flush};
use crate::readahead::Advice;
use crate::sync::{Arc, Wait};
use crate::transaction::Transaction;
use crate::vnode::{Vnode, geometry, max_transfer, note_dirty};

/// Flags of every fault made under the write's own transaction and node lock.
const HELD: GetFlags = GetFlags::GLOCKHELD.union(GetFlags::JOURNALLOCKED);

/// Writes `data` at `offset` of `vnode` through the page cache and returns how many
/// bytes were written. The file grows when the write ends past its end. The pages are
/// left dirty: a [`putpages`](crate::putpages) with [`PutFlags::CLEANIT`] writes them
/// back.
///
/// When the file's cache counts its pages in a [`Memory`](crate::memory::Memory)
/// domain ([`PageCache::memory`]), the write also keeps dirty memory in bounds, a
/// batch of up to 64 KiB at a time: with write-behind on (the default for a domain
/// made with [`Memory::new`](crate::memory::Memory::new)) it starts asynchronous
/// writeback of each cluster (the vnode's largest transfer) whose end a batch
/// reaches; above the domain's background threshold it starts writeback of every
/// dirty page of its file; above the hard threshold it then waits until its file has
/// no write in flight. Caches of [`Memory::shared`](crate::memory::Memory::shared) do none of
/// this.
///
/// A write that fails part-way returns the bytes it wrote before the failure (a short
/// write: `Ok(n)` with `n < data.len()`), and the file has grown by exactly those. A
/// write that fails before writing anything returns the error and leaves the size as
/// it was. Writes, [`setsize`] and faults that allocate on one file run one at a time
/// (each holds the node lock exclusively); writes that do not overlap never lose each
/// other's bytes, and overlapping ones land in some serial order.
///
/// Errors: [`Error::TooBig`] when the write would end past the file's
/// [`BlockMap::max_size`](crate::BlockMap::max_size); the filesystem's
/// [`Error::NoSpace`] when blocks cannot be allocated; the transaction hooks' errors;
/// any fault error.
pub fn write<V: Vnode>(vnode: &Arc<V>, offset: u64, data: &[u8]) -> Result<usize> {
    if data.is_empty() {
        return Ok(0);
    }
    let end = u64::try_from(data.len())
        .ok()
        .and_then(|len| offset.checked_add(len))
        .ok_or(Error::TooBig)?;
    if end > max_file_size(vnode.block_map()) {
        return Err(Error::TooBig);
    }
    let geometry = geometry(&**vnode)?;
    let mut transaction = Transaction::begin(&**vnode, Wait::Sleep)?;
    transaction.begin_journal()?;
    let object = vnode.object();
    let _node = object.node_lock().write();
    let (old_size, old_write_size) = {
        let mut state = object.lock();
        let (size, write_size) = (state.size(), state.write_size());
        // Faults may reach the new end while the write is under way.
        state.set_sizes(size, write_size.max(end));
        (size, write_size)
    };
    let (written, result) = write_batches(vnode, geometry, old_size, offset, data);
    match result {
        Ok(()) => Ok(written),
        Err(error) if written > 0 => {
            log::trace!("write: short write of {written:#x} bytes at {offset:#x}: {error}");
            // The size already covers what was written; the rest was never reached.
            let size = object.size();
            end_growth_at(vnode, size, old_write_size.max(size));
            Ok(written)
        }
        Err(error) => {
            log::trace!("write at {offset:#x} failed: {error}");
            end_growth_at(vnode, old_size, old_write_size);
            Err(error)
        }
    }
}

/// Ends a failed write's growth at `size` (and `write_size`): what it zeroed or
/// faulted past that end is not file data, so no page wholly past it stays (blocks
/// allocated there stay allocated, as a truncation leaves them to the filesystem).
fn end_growth_at<V: Vnode>(vnode: &Arc<V>, size: u64, write_size: u64) {
    let object = vnode.object();
    object.lock().set_sizes(size, write_size);
    object.free_range_waiting(round_page(size)..u64::MAX);
}

/// Writes `data` at `offset` a batch at a time; returns how many bytes were written
/// and the error that stopped it.
// Cannot overflow: `offset + data.len() <= max_file_size` (< 2^63), checked by `write`.
#[allow(clippy::arithmetic_side_effects)]
fn write_batches<V: Vnode>(
    vnode: &Arc<V>,
    geometry: Geometry,
    old_size: u64,
    offset: u64,
    data: &[u8],
) -> (usize, Result) {
    if let Err(error) = zero_old_tail(vnode, geometry, old_size, offset) {
        return (0, Err(error));
    }
    let end = offset + data.len() as u64;
    let batch_pages = (max_transfer(&**vnode) / PAGE_SIZE).min(16) as u64;
    let mut done = 0usize;
    while done < data.len() {
        let pos = offset + done as u64;
        let batch_end = (trunc_page(pos) + batch_pages * PAGE_SIZE as u64).min(end);
        let len = (batch_end - pos) as usize;
        if let Err(error) = write_batch(vnode, geometry, pos, &data[done..done + len]) {
            return (done, Err(error));
        }
        done += len;
        // Pages written through age as read ones do, so that once written back they
        // are the first a bounded cache or the page daemon takes.
        vnode.object().used_once(pos, batch_end, UsedBy::Write);
        after_write_batch(vnode, pos..batch_end);
    }
    (done, Ok(()))
}

/// Before the file grows from `old_size` to past `upto`: the old last block may hold
/// stale bytes past the old end on the disk (a truncation's zeroes are never written
/// past the new end), and the old last page stale bytes in memory (a store through a
/// mapping past the end); once the file grows over them they must read as zero, so
/// zeroes are written over them, up to `upto`. Grows the size as it goes.
///
/// `upto` is at most `max_file_size`; `old_size` may be anything the host set (up to
/// `u64::MAX`), and then there is nothing to zero.
// Cannot overflow: past the early return `old_size < upto <= max_file_size` (< 2^63),
// so the end of its block fits, and `old_size <= at < gap_end`.
#[allow(clippy::arithmetic_side_effects)]
fn zero_old_tail<V: Vnode>(vnode: &Arc<V>, geometry: Geometry, old_size: u64, upto: u64) -> Result {
    let block_mask = geometry.block_mask();
    if upto <= old_size || old_size & block_mask == 0 && old_size & PAGE_MASK == 0 {
        return Ok(());
    }
    let tail_end = ((old_size | block_mask) + 1).max(round_page(old_size));
    let gap_end = upto.min(tail_end);
    let zeroes = [0u8; 512];
    let mut at = old_size;
    while at < gap_end {
        let len = (gap_end - at).min(zeroes.len() as u64) as usize;
        write_batch(vnode, geometry, at, &zeroes[..len])?;
        at += len as u64;
    }
    Ok(())
}

/// Writes `bytes` at `pos`, all within one batch of pages.
// Cannot overflow: `pos + bytes.len()` is inside a write or a zeroing that ends at most
// at `max_file_size` (< 2^63); `from..to` lies in both the page and `bytes`.
#[allow(clippy::arithmetic_side_effects)]
fn write_batch<V: Vnode>(vnode: &Arc<V>, geometry: Geometry, pos: u64, bytes: &[u8]) -> Result {
    let end = pos + bytes.len() as u64;
    let first = trunc_page(pos);
    let count = ((round_page(end) - first) >> PAGE_SHIFT) as usize;
    let object = vnode.object();
    let size = object.size();
    let extending = end > size;
    if extending || !is_allocated(vnode.block_map(), geometry, pos, end)? {
        allocate_range(vnode, geometry, pos, end)?;
    }
    // A page the write ends inside is read first even at the end of file: the blocks
    // past the end under it may be holes, which an overwrite fault refuses.
    let whole_pages = pos == first && end & PAGE_MASK == 0;
    let mut flags = GetFlags::SYNCIO | HELD;
    flags.set(GetFlags::PASTEOF, extending);
    flags.set(GetFlags::OVERWRITE, whole_pages);
    let mut pages = getpages(
        vnode,
        Fault::write(first, count)
            .with_advice(Advice::Sequential)
            .with_flags(flags),
    )?
    .into_writable()
    .ok_or(Error::Invalid)?;
    for index in 0..pages.len() {
        let page_start = pages.offset(index);
        let from = pos.max(page_start);
        let to = end.min(page_start + PAGE_SIZE as u64);
        let frame = pages.bytes_mut(index);
        let within = (from - page_start) as usize..(to - page_start) as usize;
        frame[within.clone()].copy_from_slice(&bytes[(from - pos) as usize..(to - pos) as usize]);
        if whole_pages {
            // An overwritten page was never read: what the write does not cover lies
            // past the end of file and must be zero.
            frame[within.end..].fill(0);
        }
    }
    if extending {
        // Grown before the pages are released: once a flush may write and free them, a
        // fault of the old last page must read the written bytes back from the disk,
        // not zero-fill them as lying past the old end.
        let mut state = object.lock();
        let (size, write_size) = (state.size().max(end), state.write_size().max(end));
        state.set_sizes(size, write_size);
    }
    drop(pages);
    Ok(())
}

/// Gives `start..end` backing blocks before a write (the reference's
/// `ufs_balloc_range`): a write fault over the whole filesystem blocks around it, which
/// zero-fills holes and bytes past the end, allocates every block under its pages and
/// leaves them dirty, so the zeroes around the written bytes reach the disk too.
// Cannot overflow: `start <= end <= max_file_size` (< 2^63), and a block (<= 1 MiB)
// more fits.
#[allow(clippy::arithmetic_side_effects)]
fn allocate_range<V: Vnode>(vnode: &Arc<V>, geometry: Geometry, start: u64, end: u64) -> Result {
    let block_mask = geometry.block_mask();
    let first = trunc_page(start & !block_mask);
    let last = round_page((end + block_mask) & !block_mask);
    let count = ((last - first) >> PAGE_SHIFT) as usize;
    let flags = GetFlags::SYNCIO | GetFlags::PASTEOF | GetFlags::NOTIMESTAMP | HELD;
    getpages(vnode, Fault::write(first, count).with_flags(flags))?
        .into_writable()
        .ok_or(Error::Invalid)?
        .release();
    Ok(())
}

/// Changes the file size (the reference's `uvm_vnp_setsize`, with the zeroing a
/// filesystem's truncate does). Growing records the size, after writing zeroes over
/// the rest of the old last block and page (as [`write()`] does when it extends a
/// file), so that bytes a truncation left past the old end read as zero; for a vnode
/// with a block map only ([`Vnode::byte_io`] hosts extend their own files). Shrinking
/// frees the cached pages wholly past the new end (discarding their dirty data),
/// waits for busy ones, and zeroes the tail of the new last page if it is resident.
/// Freeing the blocks is the filesystem's job, after `setsize` returns; a later write
/// or write fault allocates again whatever it needs, whatever pages are cached.
///
/// Runs inside the mount transaction and journal, and holds the node lock exclusively
/// throughout, so faults and the fast path see either the old size with its pages or
/// the new one.
///
/// Errors: [`Error::TooBig`] for a size past the file's
/// [`BlockMap::max_size`](crate::BlockMap::max_size); the transaction hooks' errors;
/// growing can fail as [`write()`] does, and then the size stays as it was.
pub fn setsize<V: Vnode>(vnode: &Arc<V>, size: u64) -> Result {
    if size > max_file_size(vnode.block_map()) {
        return Err(Error::TooBig);
    }
    let mut transaction = Transaction::begin(&**vnode, Wait::Sleep)?;
    transaction.begin_journal()?;
    let object = vnode.object();
    let _node = object.node_lock().write();
    let (old_size, old_write_size) = {
        let state = object.lock();
        (state.size(), state.write_size())
    };
    if size > old_size && vnode.byte_io().is_none() {
        if let Err(error) = zero_old_tail(vnode, geometry(&**vnode)?, old_size, size) {
            end_growth_at(vnode, old_size, old_write_size);
            return Err(error);
        }
    }
    let old = {
        let mut state = object.lock();
        let old = state.size();
        let write_size = if size >= old {
            state.write_size().max(size)
        } else {
            size
        };
        state.set_sizes(size, write_size);
        old
    };
    if size >= old {
        return Ok(());
    }
    if round_page(size) < round_page(old) {
        let free = PutFlags::FREE | PutFlags::SYNCIO;
        flush(vnode, round_page(size), 0, free, TransactionHeld::ByCaller)?;
        // It skips pages other threads hold busy: wait for those and free them too.
        object.free_range_waiting(round_page(size)..u64::MAX);
        // If they were the dirty pages a failed object kept, it is failed no longer.
        let _still_failed = object.lock().failed_error();
    }
    zero_resident_tail(vnode, size)
}

/// Zeroes the bytes past `size` of the resident page holding it (a shrink's new last
/// page), waiting for it if it is busy. They are past the end of file, but a later
/// growth must find them zero, and a write of the page covers them up to the end of
/// its last sector.
fn zero_resident_tail<V: Vnode>(vnode: &Arc<V>, size: u64) -> Result {
    let within = (size & PAGE_MASK) as usize;
    let at = trunc_page(size);
    let object = vnode.object();
    let state = object.lock();
    if within == 0 || state.cache().lookup(at).is_none() {
        return Ok(());
    }
    let mut page = alloc::vec::Vec::new();
    let (mut state, found) = object.find_pages(state, at, 1, Wait::Sleep, &mut page);
    found?;
    let page: &PageRef = &page[0];
    let valid = state
        .cache()
        .lookup(at)
        .is_some_and(|p| !p.flags.contains(PageFlags::FAKE));
    if valid {
        if state.cache().is_writable_mapped(at) {
            state.cache_mut().protect(at, Protection::ReadOnly);
        }
        #[allow(clippy::arithmetic_side_effects)] // Cannot overflow: `within < PAGE_SIZE`.
        page.zero(within, PAGE_SIZE - within);
        // Dirty, so the zeroes reach the disk with the rest of the last sector.
        state.mark(at, crate::page::DirtyStatus::Dirty);
        note_dirty(&mut *state, &**vnode);
    }
    object.release(state, core::slice::from_ref(page));
    Ok(())
}
