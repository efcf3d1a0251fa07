//! read(2) through the page cache: batches of pages from the fast path, or from a
//! synchronous fault when some are missing, copied out up to the end of file; each
//! batch fed to read-ahead, the reader's own or the object's.

use crate::error::{Error, Result};
use crate::fault::{Fault, Fetched};
use crate::getpages::ahead::{self, Reading};
use crate::getpages::{getpages, getpages_with};
use crate::hooks::{Access, max_file_size};
use crate::object::UsedBy;
use crate::page::{PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, round_page, trunc_page};
use crate::readahead::{Found, ReadAhead};
use crate::sync::Arc;
use crate::vnode::{Vnode, max_transfer};

/// Reads file bytes from `offset` into `buf` through the page cache — what a kernel's
/// read(2) calls. Faults pages in a batch at a time (the fast path first, a
/// synchronous fault for what is missing), stops at end of file, and returns how many
/// bytes it copied (0 at or past the end of file).
///
/// Read-ahead follows the object's own [`ReadAhead`] state
/// ([`VmObject::read_ahead`](crate::VmObject::read_ahead)), shared by every reader of
/// the file that brings none, with the advice set there; a kernel with a state per
/// open file calls [`read_with`] instead.
///
/// Errors: [`Error::Invalid`] for an offset past the file's
/// [`BlockMap::max_size`](crate::BlockMap::max_size) (a negative `off_t` to a kernel);
/// any fault error. A failed read-ahead is not the reader's error: pages it did not
/// bring are read by the reader's own fault, which reports what that read meets.
pub fn read<V: Vnode>(vnode: &Arc<V>, offset: u64, buf: &mut [u8]) -> Result<usize> {
    read_through(vnode, None, offset, buf)
}

/// [`read`] with the reader's own read-ahead state — the one a kernel keeps in each
/// open file description, with its `fadvise` advice ([`ReadAhead::set_advice`]) — so
/// that two readers of one file each keep their own window.
///
/// ```
/// # use genpager::testing::{MemDisk, MemFs, Layout};
/// use genpager::{Advice, ReadAhead, read_with, PAGE_SIZE};
/// # let disk = MemDisk::new(4096);
/// # let fs = MemFs::new(disk.clone(), genpager::page::PAGE_SHIFT, Layout::Contiguous);
/// # let file = fs.create(&vec![7u8; 64 * PAGE_SIZE]).unwrap();
/// let mut ahead = ReadAhead::new();
/// ahead.set_advice(Advice::Sequential);
/// let mut buf = [0u8; 4096];
/// let mut offset = 0;
/// while let n @ 1.. = read_with(&file, &mut ahead, offset, &mut buf).unwrap() {
///     offset += n as u64;
/// }
/// assert_eq!(offset, 64 * PAGE_SIZE as u64);
/// // One request per 64 KiB transfer, not one per page.
/// let transfers = 64 * PAGE_SIZE / genpager::DEFAULT_MAX_TRANSFER;
/// assert!(disk.stats().requests as usize <= transfers);
/// ```
///
/// Errors: as [`read`].
pub fn read_with<V: Vnode>(
    vnode: &Arc<V>,
    ahead: &mut ReadAhead,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    read_through(vnode, Some(ahead), offset, buf)
}

/// The read: batches until `buf` is full or the file ends, each fed to read-ahead
/// (`own`, or the object's).
// Cannot overflow: `offset <= max_file_size` (< 2^63, checked) and `done <= buf.len()`
// (< 2^63), so `pos` fits.
#[allow(clippy::arithmetic_side_effects)]
fn read_through<V: Vnode>(
    vnode: &Arc<V>,
    mut own: Option<&mut ReadAhead>,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    if offset > max_file_size(vnode.block_map()) {
        return Err(Error::Invalid);
    }
    let batch_pages = (max_transfer(&**vnode) / PAGE_SIZE).min(16);
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
        let batch = Batch::new(pos, buf.len() - restart, size, batch_pages);
        let Some(copied) = copy_batch(vnode, own.as_deref_mut(), &batch, &mut buf[restart..])?
        else {
            // The file shrank under us: what is left is past the end.
            break;
        };
        let reached = restart + copied;
        if reached <= done {
            // No further than before (the file shrank meanwhile): the read ends there.
            done = reached;
            break;
        }
        done = reached;
    }
    vnode
        .object()
        .used_once(offset, offset + done as u64, UsedBy::Read);
    Ok(done)
}

/// One batch of a read: file bytes `pos .. end`, in `count` pages from `first`.
struct Batch {
    first: u64,
    count: usize,
    pos: u64,
    end: u64,
}

impl Batch {
    /// The batch that copies up to `len` bytes from `pos` (below `size`), at most
    /// `max_pages` pages.
    // Cannot overflow: `pos < size <= max_file_size`, 2^63 at most, so one buffer more
    // cannot wrap; the pages end at most at `round_page(want_end)`.
    #[allow(clippy::arithmetic_side_effects)]
    fn new(pos: u64, len: usize, size: u64, max_pages: usize) -> Self {
        let want_end = pos.saturating_add(len as u64).min(size);
        let first = trunc_page(pos);
        let count = (((round_page(want_end) - first) >> PAGE_SHIFT) as usize).min(max_pages);
        let end = (first + (count * PAGE_SIZE) as u64).min(want_end);
        Self {
            first,
            count,
            pos,
            end,
        }
    }
}

/// Copies one batch into `out`: from the cache if every page is resident, otherwise
/// through a synchronous fault; either way feeds the batch to read-ahead (after the
/// copy from the cache, whose pages hold the object lock; through the fault, which
/// reads the rest of its transfer along and starts the next ones first). Returns
/// how many bytes it copied, or `None` if the file has shrunk below the batch.
// Cannot overflow: the fault's pages lie inside the batch's range.
#[allow(clippy::arithmetic_side_effects)]
fn copy_batch<V: Vnode>(
    vnode: &Arc<V>,
    mut own: Option<&mut ReadAhead>,
    batch: &Batch,
    out: &mut [u8],
) -> Result<Option<usize>> {
    let (first, count) = (batch.first, batch.count);
    // The reader's advice, or the object's (a kernel without a state per open file
    // sets fadvise there).
    let advice = match own {
        Some(ref ahead) => ahead.advice(),
        None => vnode.object().read_ahead().advice(),
    };
    let access = |found| Reading {
        first: first >> PAGE_SHIFT,
        count: count as u64,
        found,
        advice,
    };
    let cached = Fault::resident(first, count, Access::Read).with_advice(advice);
    match getpages(vnode, cached) {
        // The size is read again with the pages in hand: a truncation may have shrunk
        // the file (and zeroed the new last page's tail) since the batch was planned,
        // and bytes past the end it set are not data.
        Ok(Fetched::Resident(pages)) if pages.is_complete() => {
            let end = batch.end.min(pages.size());
            let bytes = |i| pages.bytes(i).unwrap_or(&[]);
            let copied = copy_out(bytes, first, batch.pos, end, out);
            drop(pages);
            ahead::read_ahead(vnode, own.as_deref_mut(), access(Found::Resident));
            return Ok(Some(copied));
        }
        Ok(_) | Err(Error::Busy) => {}
        Err(Error::Invalid) => return Ok(None),
        Err(err) => return Err(err),
    }
    // The fault feeds the miss to read-ahead itself: it reads the rest of its transfer
    // along with its pages, and starts the transfers after it.
    let fault = Fault::read(first, count).with_advice(advice);
    match getpages_with(vnode, fault, own) {
        Ok(Fetched::Busy(pages)) => {
            // As above; the pages are busy, so a truncation waits for them before it
            // frees or zeroes any, and the size now tells whether it has begun (then
            // what it leaves is what the pages hold up to it).
            let end = batch
                .end
                .min(first + (pages.len() * PAGE_SIZE) as u64)
                .min(vnode.object().size());
            Ok(Some(copy_out(
                |i| pages.bytes(i),
                first,
                batch.pos,
                end,
                out,
            )))
        }
        Ok(_) => Ok(Some(0)),
        Err(Error::Invalid) => Ok(None),
        Err(err) => Err(err),
    }
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
