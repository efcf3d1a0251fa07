//! The pager for filesystems without a block map (the reference's
//! `genfs_compat_getpages`; its `genfs_compat_gop_write` is putpages' write through
//! [`ByteIo`]).
//!
//! Such a filesystem reads and writes file bytes itself, like `VOP_READ` and
//! `VOP_WRITE`: it implements [`ByteIo`] and returns it from [`Vnode::byte_io`]. Faults
//! go through [`getpages`] here, which fills each not-yet-valid page with one
//! [`ByteIo::read_at`]; [`putpages`](crate::putpages) then writes clusters through
//! [`ByteIo::write_vectored_at`] and completes them exactly as a device write completes
//! (a failed write keeps its pages dirty and records the error for every cursor). [`NoBlocks`] fills the
//! vnode's block-map and device slots.
//!
//! Where this departs from the reference: a read fault leaves its pages clean (the
//! reference marks every page "maybe dirty"), and a write stops at the write size
//! instead of writing whole pages past the end of file.

use alloc::vec::Vec;

use crate::buf::IoRequest;
use crate::error::{Error, Result};
use crate::fault::{Bounds, Fault, Fetched, GetFlags, Handout, Settle, fast_path, settle};
pub use crate::hooks::ByteIo;
use crate::hooks::{BlockMap, Mapping, PageCache, Strategy};
use crate::object::{ObjectState, VmObject};
use crate::page::PageRef;
use crate::page::{PAGE_SHIFT, PAGE_SIZE, PageFlags, round_page};

use crate::sync::{Arc, Wait, WriteGuard};
use crate::vnode::Vnode;

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
/// [`GetFlags::PASTEOF`] lets pages past the end of file be made, and
/// [`GetFlags::GLOCKHELD`] says the caller holds the node lock; other flags are ignored,
/// except that the combinations [`crate::getpages`] refuses are refused here too.
///
/// Errors: [`Error::Invalid`] for an unaligned offset, a zero count, a center outside
/// the range, a center page past the end of file, an [`GetFlags::OVERWRITE`] read fault,
/// an asynchronous write fault, or (unless `LOCKED`) a vnode whose
/// [`Vnode::byte_io`] is `None`; [`Error::TooBig`] for a range reaching past the page
/// holding the file's last addressable byte ([`BlockMap::max_size`]); [`Error::Dead`]; the error of `read_at`, after which no page
/// it was filling stays resident.
pub fn getpages<'a, V: Vnode>(vnode: &'a Arc<V>, fault: Fault) -> Result<Fetched<'a, V>> {
    let request_end = fault.check(&**vnode)?;
    log::trace!("compat getpages {fault:?}");
    if fault.flags.contains(GetFlags::LOCKED) {
        return fast_path(vnode, &fault, request_end).map(Fetched::Resident);
    }
    let io = vnode.byte_io().ok_or(Error::Invalid)?;
    let object = vnode.object();
    // A truncation holds the node lock exclusively while it frees pages, so holding it
    // shared keeps the size from shrinking under the read.
    let _node = (!fault.flags.contains(GetFlags::GLOCKHELD)).then(|| object.node_lock().read());
    let state = object.lock();
    let memeof = Bounds::new(vnode.block_map(), state.size(), request_end, fault.flags).memeof;
    if fault.center_offset() >= memeof {
        return Err(Error::Invalid);
    }
    if !fault.flags.contains(GetFlags::SYNCIO) {
        return Ok(Fetched::Started);
    }
    let (state, pages) = collect_to_eof(object, state, &fault, memeof)?;
    let state = fill_fake_pages(io, object, state, &pages)?;
    let settling = handout(&fault, pages.len());
    Ok(settle(vnode, state, pages, settling))
}

/// Collects the fault's pages up to memory EOF, busy, in ascending order.
fn collect_to_eof<'a, C: PageCache>(
    object: &'a VmObject<C>,
    state: WriteGuard<'a, ObjectState<C>>,
    fault: &Fault,
    memeof: u64,
) -> Result<(WriteGuard<'a, ObjectState<C>>, Vec<PageRef>)> {
    // Cannot overflow: `offset` is page aligned and below `memeof`, so at most
    // `round_page(memeof)` (which saturates at `trunc_page(u64::MAX)`).
    #[allow(clippy::arithmetic_side_effects)]
    let wanted = ((round_page(memeof) - fault.offset) >> PAGE_SHIFT).min(fault.count as u64);
    let mut pages = Vec::new();
    let (state, found) = object.find_pages(
        state,
        fault.offset,
        wanted as usize,
        Wait::Sleep,
        &mut pages,
    );
    found.map(|()| (state, pages))
}

/// Fills each page among `pages` not valid yet with one [`ByteIo::read_at`], without
/// the object lock; returns with it. On error every page is released.
fn fill_fake_pages<'a, C: PageCache>(
    io: &dyn ByteIo,
    object: &'a VmObject<C>,
    state: WriteGuard<'a, ObjectState<C>>,
    pages: &[PageRef],
) -> Result<WriteGuard<'a, ObjectState<C>>> {
    let fake_pages = match collect_fake(&state, pages) {
        Ok(list) => list,
        Err(error) => {
            object.release(state, pages);
            return Err(error);
        }
    };
    drop(state);
    let result = fake_pages.iter().try_for_each(|page| {
        object.io().read(PAGE_SIZE);
        fill(io, page)
    });
    let state = object.lock();
    match result {
        Ok(()) => Ok(state),
        Err(error) => {
            object.io().read_error();
            log::trace!("compat getpages: read_at failed: {error}");
            object.release(state, pages);
            Err(error)
        }
    }
}

/// How the fault's `count` pages are handed out. Every block is the filesystem's own
/// business here: a write fault's pages are always writable.
fn handout(fault: &Fault, count: usize) -> Settle {
    Settle {
        keep: 0..count,
        handout: if fault.is_write() {
            Handout::Writable
        } else {
            Handout::ReadOnly
        },
        dirty_tracking: fault.is_write(),
        overwrite: false,
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
