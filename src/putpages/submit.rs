//! The pipeline's *submit* step, the write path under putpages: the reference's
//! `gop_write` (also `genfs_gop_write_rwmap`), its `genfs_do_io` for a block device and
//! `genfs_compat_gop_write` for a vnode served through [`Vnode::byte_io`].

use alloc::vec::Vec;

use super::settle::{PageWrite, complete_write, settle_locked};
use super::{Flush, Guard, PutFlags};
use crate::bmap::extents;
use crate::buf::{Direction, Nest, Priority, page_segments};
use crate::error::{Error, Result};
use crate::hooks::{BlockMap, ByteIo, DEV_BSHIFT, SizeKind, Strategy};
use crate::object::InFlight;
use crate::page::{PAGE_SIZE, PageRef, zero_file_range};
use crate::sync::Arc;
use crate::vnode::{Vnode, geometry};

impl<'a, V: Vnode> Flush<'a, V> {
    /// The pipeline's *submit* step: counts the cluster's write in flight before the
    /// object lock is dropped (so a synchronous flush that takes the lock next waits for
    /// it) and writes it ([`gop_write`]). Returns with the lock held again.
    pub(super) fn submit(
        &mut self,
        mut state: Guard<'a, V>,
        flags: PutFlags,
    ) -> (Guard<'a, V>, Result) {
        let write = state.start_write_in(self.attempt);
        drop(state);
        let (state, written) = gop_write(self.vnode, &self.pages, flags, write);
        self.pages.clear();
        (state, written)
    }
}

/// Writes busy, consecutive `pages` (the reference's `genfs_gop_write`, or with
/// [`PutFlags::WRITE_RWMAP`] its `genfs_gop_write_rwmap`, for a device that may change
/// the written data in place), whose write the caller has counted in flight; see
/// [`do_io`]. Returns with the object lock held.
fn gop_write<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    pages: &[PageRef],
    flags: PutFlags,
    write: InFlight,
) -> (Guard<'a, V>, Result) {
    if let Some(io) = vnode.byte_io() {
        return gop_write_bytes(&**vnode, io, pages, flags, write);
    }
    log::trace!("gop_write {} pages flags {flags:?}", pages.len());
    do_io(vnode, pages, flags, write)
}

/// Writes busy, consecutive `pages` through `io` and completes them exactly as a
/// device write completes (the reference's `genfs_compat_gop_write`, for a vnode served through [`Vnode::byte_io`]): clean on
/// success; on failure kept resident and dirty, with the error recorded for every
/// cursor to report. The caller has counted the write in flight (`write`); nothing
/// past the write size seen then is written. Synchronous whatever `flags` say; returns
/// the write's result with the object lock held, the pages settled.
fn gop_write_bytes<'a, V: Vnode>(
    vnode: &'a V,
    io: &dyn ByteIo,
    pages: &[PageRef],
    flags: PutFlags,
    write: InFlight,
) -> (Guard<'a, V>, Result) {
    let first = pages.first().map_or(0, |page| page.offset);
    let eof = disk_eof(vnode, &write);
    let bytes = usize::try_from(eof.saturating_sub(first))
        .unwrap_or(usize::MAX)
        .min(pages.len().saturating_mul(PAGE_SIZE));
    log::trace!(
        "compat gop_write {first:#x}+{} pages ({bytes:#x} bytes) {flags:?}",
        pages.len()
    );
    if bytes != 0 {
        vnode.object().io().write(bytes);
    }
    let result = write_pages(io, pages, first, bytes);
    if result.is_err() {
        vnode.object().io().write_error();
    }
    let written = PageWrite {
        first,
        count: pages.len(),
        write,
    };
    settle_locked(vnode, written, result)
}

/// Where a write counted in flight stops: disk EOF for the write size it saw (nothing
/// past it is written).
fn disk_eof<V: Vnode>(vnode: &V, write: &InFlight) -> u64 {
    vnode.block_map().size(write.write_size(), SizeKind::Disk)
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

/// The device-priority hint of a transfer made with `flags`.
fn priority<V: Vnode>(vnode: &V, flags: PutFlags) -> Priority {
    if vnode.is_pagedaemon() {
        Priority::TimeLimited
    } else if !flags.contains(PutFlags::SYNCIO) || flags.contains(PutFlags::LAZY) {
        Priority::TimeNonCritical
    } else {
        Priority::TimeCritical
    }
}

/// Writes busy, consecutive `pages` (the reference's `genfs_do_io`) and returns with
/// the object lock held: the pipeline's *submit* step for a block device.
///
/// The caller has counted the write in flight (`write`), under the object lock, and
/// dropped the lock. The transfer is clipped at the disk end of the write size seen
/// then ([`clip_to_eof`]); the block map is walked once, holes are skipped, and each
/// contiguous run becomes one device request (a single one when the run covers
/// everything). A `bmap` error abandons the rest. The completion settles the pages and
/// ends the count ([`complete_write`]).
///
/// Without [`PutFlags::SYNCIO`] this returns `Ok` once the requests are submitted and
/// the completion runs from the device's; with it, it waits, settles the pages on this
/// thread, under the lock it returns, and returns the write's result.
fn do_io<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    pages: &[PageRef],
    flags: PutFlags,
    write: InFlight,
) -> (Guard<'a, V>, Result) {
    let object = vnode.object();
    let Some(first) = pages.first().map(|page| page.offset) else {
        let mut state = object.lock();
        let wake = state.end_write(&write);
        object.wake_if(wake);
        return (state, Ok(()));
    };
    let written = PageWrite {
        first,
        count: pages.len(),
        write,
    };
    let cluster = DeviceWrite {
        pages,
        first,
        bytes: clip_to_eof(&**vnode, pages, &written),
        flags,
        priority: priority(&**vnode, flags),
    };
    log::trace!(
        "do_io {first:#x}+{:#x} (of {} pages) {:?}",
        cluster.bytes,
        pages.len(),
        cluster.priority
    );
    if flags.contains(PutFlags::SYNCIO) {
        cluster.write_synchronously(vnode, written)
    } else {
        cluster.write_asynchronously(vnode, written)
    }
}

/// How many bytes of the cluster `written` go to the device: those up to the disk end
/// of the write size seen when the write was counted, in whole device sectors (the
/// last one written to its end, past the end of file, with zeroes there).
///
/// A store through a mapping past the end of file may have left bytes there; they are
/// zeroed here, as they must not reach the disk, where a later growth of the file would
/// find them (as Linux zeroes the page straddling the size on every writeback).
fn clip_to_eof<V: Vnode>(vnode: &V, pages: &[PageRef], written: &PageWrite) -> usize {
    let first = written.first;
    // Cannot overflow: a cluster is at most `max_transfer` bytes (`take_neighbours`).
    #[allow(clippy::arithmetic_side_effects)]
    let len = written.count * PAGE_SIZE;
    let eof = disk_eof(vnode, &written.write);
    let sector_mask = geometry(vnode).map_or(!(u64::MAX << DEV_BSHIFT), |g| g.sector_mask());
    let to_eof = eof.saturating_sub(first).min(len as u64);
    // Cannot overflow: `to_eof <= len` (a `usize`), and a sector (<= 1 MiB) more fits.
    #[allow(clippy::arithmetic_side_effects)]
    let bytes = (((to_eof + sector_mask) & !sector_mask) as usize).min(len);
    // (The cluster ends below `trunc_page(u64::MAX)`: the sums never saturate.)
    zero_file_range(
        pages,
        first.saturating_add(to_eof),
        first.saturating_add(bytes as u64),
    );
    bytes
}

/// A cluster on its way to the device ([`do_io`]): its busy pages from `first`, how
/// many bytes of them to write ([`clip_to_eof`]), the flush's flags and the device
/// priority they give.
struct DeviceWrite<'p> {
    pages: &'p [PageRef],
    first: u64,
    bytes: usize,
    flags: PutFlags,
    priority: Priority,
}

impl DeviceWrite<'_> {
    /// Submits the requests, waits for the device, and settles the pages on this
    /// thread ([`settle_locked`]): returns the write's result with the lock held.
    fn write_synchronously<'a, V: Vnode>(
        &self,
        vnode: &'a Arc<V>,
        written: PageWrite,
    ) -> (Guard<'a, V>, Result) {
        let (nest, waiter) = match Nest::synchronous(self.bytes, Direction::Write, self.priority) {
            Ok(made) => made,
            Err(error) => {
                vnode.object().io().write_error();
                return settle_locked(&**vnode, written, Err(error));
            }
        };
        self.submit(&**vnode, nest);
        let result = waiter.wait().result;
        if result.is_err() {
            vnode.object().io().write_error();
        }
        log::trace!("do_io: done {result:?}");
        settle_locked(&**vnode, written, result)
    }

    /// Submits the requests with a completion that settles the pages from the device's
    /// ([`complete_write`]), and returns `Ok` with the lock held.
    fn write_asynchronously<'a, V: Vnode>(
        &self,
        vnode: &'a Arc<V>,
        written: PageWrite,
    ) -> (Guard<'a, V>, Result) {
        let owner = vnode.clone();
        let nest = Nest::asynchronous(
            self.bytes,
            Direction::Write,
            self.priority,
            move |outcome| {
                let object = owner.object();
                if outcome.result.is_err() {
                    object.io().write_error();
                }
                let mut state = object.lock();
                let wake = complete_write(&mut state, &*owner, &written, outcome.result);
                drop(state);
                object.wake_if(wake);
            },
        );
        // On failure the completion above has already run with the error.
        if let Ok(nest) = nest {
            self.submit(&**vnode, nest);
        }
        (vnode.object().lock(), Ok(()))
    }

    /// Hands the device one request per mapped run of the cluster ([`submit_runs`])
    /// and closes `nest` with what was skipped and the error that stopped the walk.
    fn submit<V: Vnode>(&self, vnode: &V, mut nest: Nest) {
        if self.flags.contains(PutFlags::WRITE_RWMAP) {
            nest.allow_device_modify();
        }
        let (skipped, built) = submit_runs(vnode, &mut nest, self.pages, self.first, self.bytes);
        if skipped != 0 || built.is_err() {
            log::trace!("do_io: skipped {skipped:#x} bytes, build {built:?}");
        }
        nest.finish(skipped, built);
    }
}

/// Builds and submits one write request per mapped run of `offset .. offset + bytes`.
/// Returns the bytes skipped (holes, and everything after an error) and the error
/// that stopped the walk.
// Cannot overflow: `offset + bytes` is the cluster's end (at most
// `trunc_page(u64::MAX)`), and the extents and what is skipped lie inside it.
#[allow(clippy::arithmetic_side_effects)]
fn submit_runs<V: Vnode>(
    vnode: &V,
    nest: &mut Nest,
    pages: &[PageRef],
    offset: u64,
    bytes: usize,
) -> (usize, Result) {
    let end = offset + bytes as u64;
    if bytes == 0 {
        return (0, Ok(()));
    }
    let geometry = match geometry(vnode) {
        Ok(geometry) => geometry,
        Err(error) => return (bytes, Err(error)),
    };
    let mut skipped = 0;
    let mut at = offset;
    for extent in extents(vnode.block_map(), geometry, offset, end) {
        let extent = match extent {
            Ok(extent) => extent,
            Err(error) => return (skipped + (end - at) as usize, Err(error)),
        };
        at = extent.end();
        let Some(block) = extent.block else {
            skipped += extent.len as usize;
            continue;
        };
        let segments = match page_segments(pages, extent.offset, extent.len as usize) {
            Ok(segments) => segments,
            Err(error) => return (skipped + (end - extent.offset) as usize, Err(error)),
        };
        log::trace!(
            "do_io: write {:#x}+{:#x} at block {block:#x}",
            extent.offset,
            extent.len
        );
        let request = match nest.request(block, extent.offset, segments) {
            Ok(request) => request,
            Err(error) => return (skipped + (end - extent.offset) as usize, Err(error)),
        };
        vnode.object().io().write(request.len());
        vnode.device().submit(request);
    }
    (skipped, Ok(()))
}
