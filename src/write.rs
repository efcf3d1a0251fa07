//! What a kernel's write(2) and truncate(2) call: the buffered write helper, block
//! allocation ahead of a write, and `setsize`.
//!
//! A write goes a batch of pages at a time. Ranges with holes, and ranges past the end
//! of file, get their blocks first the way a filesystem's write path does (the
//! reference's `ufs_balloc_range`): the whole filesystem blocks are faulted in without
//! allocating, allocated, and their pages marked dirty, so zeroes around the written
//! bytes reach the disk too. Pages the write covers whole are faulted with
//! [`GetFlags::OVERWRITE`] and never read; partial pages are read first.

use crate::bmap::{Geometry, is_allocated};
use crate::error::{Error, Result};
use crate::getpages::{Advice, GetFlags, geometry, getpages};
use crate::hooks::{Access, PageCache, Vnode};
use crate::page::{PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, round_page, trunc_page};
use crate::putpages::{PutFlags, putpages};
use crate::sync::Arc;

/// Writes `data` at `offset` of `vnode` through the page cache and returns how many
/// bytes were written (all of them, unless an error stops it part-way: then the error).
/// The file grows when the write ends past its end. The pages are left dirty: a
/// [`putpages`] with [`PutFlags::CLEANIT`] writes them back.
///
/// Errors: [`Error::TooBig`] when `offset + data.len()` overflows; the filesystem's
/// [`Error::NoSpace`] when blocks cannot be allocated; any fault error.
pub fn write<V: Vnode>(vnode: &Arc<V>, offset: u64, data: &[u8]) -> Result<usize> {
    if data.is_empty() {
        return Ok(0);
    }
    let end = offset.checked_add(data.len() as u64).ok_or(Error::TooBig)?;
    round_page(end)
        .checked_add(PAGE_SIZE as u64)
        .ok_or(Error::TooBig)?;
    let geometry = geometry(&**vnode)?;
    let object = vnode.object();
    let (old_size, old_write_size) = {
        let mut state = object.lock();
        let (size, write_size) = (state.size(), state.write_size());
        // Faults may reach the new end while the write is under way.
        state.set_sizes(size, write_size.max(end));
        (size, write_size)
    };
    let written = write_batches(vnode, geometry, old_size, offset, data);
    if written.is_err() {
        // The end the write announced was never reached: take it back, or later
        // flushes would write past the end of file.
        let mut state = object.lock();
        let size = state.size();
        state.set_sizes(size, old_write_size.max(size));
    }
    written
}

fn write_batches<V: Vnode>(
    vnode: &Arc<V>,
    geometry: Geometry,
    old_size: u64,
    offset: u64,
    data: &[u8],
) -> Result<usize> {
    let end = offset + data.len() as u64;
    zero_old_tail(vnode, geometry, old_size, offset)?;
    let batch_pages = (vnode.max_transfer() / PAGE_SIZE).clamp(1, 16) as u64;
    let mut done = 0usize;
    while done < data.len() {
        let pos = offset + done as u64;
        let batch_end = (trunc_page(pos) + batch_pages * PAGE_SIZE as u64).min(end);
        let len = (batch_end - pos) as usize;
        write_batch(vnode, geometry, pos, &data[done..done + len])?;
        done += len;
    }
    Ok(done)
}

/// Before the file grows from `old_size` to past `upto`: the old last block may hold
/// stale bytes past the old end (a truncation's zeroes are never written past the new
/// end); once the file grows over them they must read as zero, so zeroes are written
/// over them, up to `upto`. Grows the size as it goes.
fn zero_old_tail<V: Vnode>(vnode: &Arc<V>, geometry: Geometry, old_size: u64, upto: u64) -> Result {
    let block_mask = geometry.block_size() - 1;
    if upto <= old_size || old_size & block_mask == 0 {
        return Ok(());
    }
    let gap_end = upto.min((old_size | block_mask) + 1);
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
fn write_batch<V: Vnode>(vnode: &Arc<V>, geometry: Geometry, pos: u64, bytes: &[u8]) -> Result {
    let end = pos + bytes.len() as u64;
    let first = trunc_page(pos);
    let count = ((round_page(end) - first) >> PAGE_SHIFT) as usize;
    let object = vnode.object();
    let size = object.size();
    let extending = end > size;
    if extending || !is_allocated(vnode.block_map(), geometry, pos, end.min(size))? {
        allocate_range(vnode, geometry, pos, end)?;
    }
    let whole_pages = pos == first && (end & PAGE_MASK == 0 || end >= size);
    let mut flags = GetFlags::SYNCIO;
    flags.set(GetFlags::PASTEOF, extending);
    flags.set(GetFlags::OVERWRITE, whole_pages);
    let mut pages = getpages(
        vnode,
        first,
        count,
        0,
        Access::Write,
        Advice::Sequential,
        flags,
    )?
    .into_busy()
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
fn allocate_range<V: Vnode>(vnode: &Arc<V>, geometry: Geometry, start: u64, end: u64) -> Result {
    let block_mask = geometry.block_size() - 1;
    let first = trunc_page(start & !block_mask);
    let last = round_page((end + block_mask) & !block_mask);
    let count = ((last - first) >> PAGE_SHIFT) as usize;
    let flags = GetFlags::SYNCIO | GetFlags::PASTEOF | GetFlags::NOTIMESTAMP;
    getpages(vnode, first, count, 0, Access::Write, Advice::Normal, flags)?
        .into_busy()
        .ok_or(Error::Invalid)?
        .release();
    Ok(())
}

/// Changes the file size (the reference's `uvm_vnp_setsize`, with the zeroing a
/// filesystem's truncate does). Growing records the size, after writing zeroes over
/// the rest of the old last block (as [`write()`] does when it extends a file), so that
/// bytes a truncation left on the disk past the old end read as zero; for a vnode with
/// a block map only ([`Vnode::byte_io`] hosts extend their own files). Shrinking frees
/// the cached pages wholly past the new end (discarding their dirty data), waits for
/// busy ones, and zeroes the tail of the new last page if it is resident. Freeing the
/// blocks is the filesystem's job.
///
/// Holds the node lock exclusively throughout (after the zeroing of a grow), so faults
/// and the fast path see either the old size with its pages or the new one.
///
/// Errors: growing can fail as [`write()`] does (the size then stays where the zeroing
/// got to).
pub fn setsize<V: Vnode>(vnode: &Arc<V>, size: u64) -> Result {
    let object = vnode.object();
    let old_size = object.size();
    if size > old_size && vnode.byte_io().is_none() {
        zero_old_tail(vnode, geometry(&**vnode)?, old_size, size)?;
    }
    let _node = object.node_lock().write();
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
        putpages(
            vnode,
            round_page(size),
            0,
            PutFlags::FREE | PutFlags::SYNCIO,
        )?;
        // It skips pages other threads hold busy: wait for those and free them too.
        object.free_range_waiting(round_page(size)..u64::MAX);
    }
    let tail = size & PAGE_MASK;
    let resident = object.read().cache().lookup(trunc_page(size)).is_some();
    if tail != 0 && resident {
        let flags =
            GetFlags::SYNCIO | GetFlags::NOBLOCKALLOC | GetFlags::NOTIMESTAMP | GetFlags::GLOCKHELD;
        let mut pages = getpages(
            vnode,
            trunc_page(size),
            1,
            0,
            Access::Write,
            Advice::Normal,
            flags,
        )?
        .into_busy()
        .ok_or(Error::Invalid)?;
        // Stays read-only if it backs a hole: this fault allocated nothing.
        pages.bytes_mut(0)[tail as usize..].fill(0);
    }
    Ok(())
}
