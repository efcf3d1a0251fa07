//! The pager for filesystems without a block map (the reference's
//! `genfs_compat_getpages` and `genfs_compat_gop_write`).
//!
//! Such a filesystem reads and writes file bytes itself, like `VOP_READ` and
//! `VOP_WRITE`: it implements [`ByteIo`] and returns it from [`Vnode::byte_io`]. Faults
//! go through [`getpages`] here, which fills each not-yet-valid page with one
//! [`ByteIo::read_at`]; [`putpages`](crate::putpages) then writes clusters through
//! [`ByteIo::write_vectored_at`] and completes them exactly as a device write completes
//! (a failed write keeps its pages dirty and latches the error). [`NoBlocks`] fills the
//! vnode's block-map and device slots.
//!
//! Where this departs from the reference: a read fault leaves its pages clean (the
//! reference marks every page "maybe dirty"), and a write stops at the write size
//! instead of writing whole pages past the end of file.

use alloc::vec::Vec;

use crate::buf::IoRequest;
use crate::error::{Error, Result};
use crate::getpages::{
    Bounds, Fault, Fetched, GetFlags, Handout, Settle, fast_path, fault_limit, finish,
};
use crate::hooks::{Access, BlockMap, Mapping, PageCache, SizeKind, Strategy, Vnode};
use crate::object::{InFlight, ObjectState, PageRef};
use crate::page::{PAGE_SHIFT, PAGE_SIZE, PageFlags, round_page};

use crate::putpages::{PutFlags, complete_write};
use crate::sync::Arc;
use crate::sync::WriteGuard;

/// Byte-addressed file I/O for a filesystem without a block map.
///
/// Both methods are called with no genpager spin lock held and may sleep; `read_at` is
/// called with the node lock held shared (so it must not take it), `write_at` from a
/// flush, with the pages being written busy.
pub trait ByteIo: Send + Sync {
    /// Reads file bytes from `offset` into `buf` and returns how many it read; fewer
    /// than `buf.len()` means the file ends there. Bytes of `buf` past the count may
    /// be left in any state: the pager zeroes them.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// Writes all of `data` at file `offset`, or fails.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result;

    /// Writes the concatenation of `data` at file `offset`, or fails (a uio with
    /// several segments). The default writes the pieces one after the other.
    fn write_vectored_at(&self, offset: u64, data: &[&[u8]]) -> Result {
        let mut at = offset;
        for piece in data {
            let next = u64::try_from(piece.len())
                .ok()
                .and_then(|len| at.checked_add(len))
                .ok_or(Error::TooBig)?;
            self.write_at(at, piece)?;
            at = next;
        }
        Ok(())
    }
}

/// A block map and device for a vnode that has neither: every block is unmapped and
/// every request fails. Use it as [`Vnode::Map`] and [`Vnode::Dev`] of a filesystem
/// served through [`ByteIo`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NoBlocks;

impl BlockMap for NoBlocks {
    fn bmap(&self, lbn: u64) -> Result<Mapping> {
        let _ = lbn;
        Err(Error::Invalid)
    }
}

impl Strategy for NoBlocks {
    fn submit(&self, request: IoRequest) {
        request.complete(Err(Error::Io));
    }
}

/// Faults in `count` pages from `offset` (page aligned) of a vnode served through its
/// [`Vnode::byte_io`]; `center` indexes the page the caller needs (the reference's
/// `genfs_compat_getpages`). Takes the same [`Fault`] as [`crate::getpages`]; its `advice`
/// is only traced.
///
/// - [`GetFlags::LOCKED`]: the fast path of [`crate::getpages`] (resident, valid,
///   non-busy pages; never sleeps; [`Error::Busy`] when the center page is missing).
/// - without [`GetFlags::SYNCIO`]: nothing is read; `Ok(Fetched::Started)` at once, as
///   the reference answers read-ahead (a write fault without it is [`Error::Invalid`]).
/// - synchronous: the pages up to the end of file come back busy; each one not yet
///   valid is filled by one [`ByteIo::read_at`], its tail past a short read zeroed. A
///   write access starts dirty tracking of the returned pages.
///
/// [`GetFlags::PASTEOF`] lets pages past the end of file be made; other flags are
/// ignored.
///
/// Errors: [`Error::Invalid`] for an unaligned offset, a zero count, a center outside
/// the range, a center page past the end of file, or (unless `LOCKED`) a vnode whose
/// [`Vnode::byte_io`] is `None`; [`Error::TooBig`] for a range reaching past the page
/// holding the file's last addressable byte ([`BlockMap::max_size`]); [`Error::Dead`]; the error of `read_at`, after which no page
/// it was filling stays resident.
pub fn getpages<'a, V: Vnode>(vnode: &'a Arc<V>, fault: Fault) -> Result<Fetched<'a, V>> {
    let Fault {
        offset,
        count,
        center,
        access,
        advice,
        flags,
    } = fault;
    let request_end = crate::getpages::request_end(offset, count, center)?;
    if request_end > fault_limit(&**vnode) {
        return Err(Error::TooBig);
    }
    if vnode.is_dead() {
        return Err(Error::Dead);
    }
    let memwrite = access == Access::Write;
    if memwrite && !flags.intersects(GetFlags::LOCKED | GetFlags::SYNCIO) {
        // As for `crate::getpages`: a write fault hands back its pages before it returns.
        return Err(Error::Invalid);
    }
    log::trace!(
        "compat getpages off {offset:#x} count {count} center {center} {access:?} {advice:?} {flags:?}"
    );
    if flags.contains(GetFlags::LOCKED) {
        return fast_path(vnode, offset, count, center, memwrite, flags).map(Fetched::Resident);
    }

    let io = vnode.byte_io().ok_or(Error::Invalid)?;
    let object = vnode.object();
    // A truncation holds the node lock exclusively while it frees pages, so holding it
    // shared keeps the size from shrinking under the read.
    let _node = (!flags.contains(GetFlags::GLOCKHELD)).then(|| object.node_lock().read());
    let state = object.lock();
    let memeof = Bounds::new(vnode.block_map(), state.size(), request_end, flags).memeof;
    // Cannot overflow: the center page lies before `request_end` (checked).
    #[allow(clippy::arithmetic_side_effects)]
    let center_offset = offset + (center * PAGE_SIZE) as u64;
    if center_offset >= memeof {
        return Err(Error::Invalid);
    }
    if !flags.contains(GetFlags::SYNCIO) {
        return Ok(Fetched::Started);
    }
    // Cannot overflow: `offset` is page aligned and below `memeof`, so at most
    // `round_page(memeof)` (which saturates at `trunc_page(u64::MAX)`).
    #[allow(clippy::arithmetic_side_effects)]
    let wanted = ((round_page(memeof) - offset) >> PAGE_SHIFT).min(count as u64) as usize;
    let mut pages = Vec::new();
    let (state, found) = object.find_pages(state, offset, wanted, true, &mut pages);
    found?;
    let fake_pages: Vec<PageRef> = match collect_fake(&state, &pages) {
        Ok(list) => list,
        Err(error) => {
            object.release(state, &pages);
            return Err(error);
        }
    };
    drop(state);

    let result = fake_pages.iter().try_for_each(|page| fill(io, page));
    let state = object.lock();
    match result {
        Ok(()) => {
            let handout = if memwrite {
                Handout::Writable
            } else {
                Handout::ReadOnly
            };
            let settle = Settle {
                keep: 0..wanted,
                handout,
                dirty_tracking: memwrite,
                overwrite: false,
            };
            Ok(finish(vnode, state, pages, settle))
        }
        Err(error) => {
            log::trace!("compat getpages: read_at failed: {error}");
            object.release(state, &pages);
            Err(error)
        }
    }
}

/// The busy pages among `pages` that hold nothing valid yet.
fn collect_fake<C: PageCache>(state: &ObjectState<C>, pages: &[PageRef]) -> Result<Vec<PageRef>> {
    let mut fake = Vec::new();
    fake.try_reserve_exact(pages.len())
        .map_err(|_| Error::NoMemory)?;
    fake.extend(pages.iter().filter(|page| {
        state
            .cache()
            .lookup(page.offset)
            .is_some_and(|p| p.flags.contains(PageFlags::FAKE))
    }));
    Ok(fake)
}

/// Reads one page through `io`, zeroing what a short read left.
fn fill(io: &dyn ByteIo, page: &PageRef) -> Result {
    // SAFETY: the page is busy and owned by this fault (the busy protocol keeps every
    // other thread, device and mapping store off its bytes), and the cache keeps its
    // frame of PAGE_SIZE bytes until the page is freed, which cannot happen while it is
    // busy. The slice lives only for this call.
    let frame = unsafe { core::slice::from_raw_parts_mut(page.frame.as_ptr(), PAGE_SIZE) };
    let read = io.read_at(page.offset, frame)?.min(PAGE_SIZE);
    frame[read..].fill(0);
    Ok(())
}

/// Writes busy, consecutive `pages` through `io` and completes them exactly as a
/// device write completes (the reference's `genfs_compat_gop_write`): clean on
/// success; on failure kept resident and dirty, with the error latched for the next
/// synchronous flush. The caller has counted the write in flight (`write`); nothing
/// past the write size seen then is written. Synchronous whatever `flags` say; returns
/// the write's result with the object lock held, the pages settled.
pub(crate) fn gop_write<'a, V: Vnode>(
    vnode: &'a V,
    io: &dyn ByteIo,
    pages: &[PageRef],
    flags: PutFlags,
    write: InFlight,
) -> (WriteGuard<'a, ObjectState<V::Cache>>, Result) {
    let object = vnode.object();
    let first = pages.first().map_or(0, |page| page.offset);
    let eof = vnode.block_map().size(write.write_size(), SizeKind::Disk);
    let bytes = usize::try_from(eof.saturating_sub(first))
        .unwrap_or(usize::MAX)
        .min(pages.len().saturating_mul(PAGE_SIZE));
    log::trace!(
        "compat gop_write {first:#x}+{} pages ({bytes:#x} bytes) {flags:?}",
        pages.len()
    );
    let result = write_pages(io, pages, first, bytes);
    let mut state = object.lock();
    let wake = complete_write(&mut state, vnode, first, pages.len(), write, result);
    object.wake_if(wake);
    (state, result)
}

/// Hands the first `bytes` of `pages` to `io` as one vectored write.
fn write_pages(io: &dyn ByteIo, pages: &[PageRef], offset: u64, bytes: usize) -> Result {
    let mut data: Vec<&[u8]> = Vec::new();
    data.try_reserve_exact(bytes.div_ceil(PAGE_SIZE))
        .map_err(|_| Error::NoMemory)?;
    let mut left = bytes;
    for page in pages {
        if left == 0 {
            break;
        }
        let len = left.min(PAGE_SIZE);
        // SAFETY: the page is busy, owned by the flush that is writing it, so nothing
        // changes its bytes through genpager, and its frame of PAGE_SIZE bytes stays
        // until the page is freed, which waits for the write's completion; the slices
        // do not outlive this call.
        data.push(unsafe { core::slice::from_raw_parts(page.frame.as_ptr(), len) });
        left = left.saturating_sub(len); // `len <= left`: never saturates.
    }
    if data.is_empty() {
        return Ok(());
    }
    io.write_vectored_at(offset, &data)
}
