//! putpages: cleaning and freeing an object's pages (the reference's
//! `genfs_putpages` / `genfs_do_putpages`), the write path under it (`gop_write`, which
//! is also `genfs_gop_write_rwmap`, and `do_io`) and the write half of the I/O
//! completion (the reference's `uvm_aio_aiodone`).
//!
//! A flush walks the pages of a byte range in offset order. When it only cleans
//! ([`PutFlags::CLEANIT`] without [`PutFlags::FREE`] or [`PutFlags::DEACTIVATE`]) it
//! visits only pages carrying the dirty tag (and, for a synchronous flush, the
//! writeback tag), never a clean resident page. Each dirty page found seeds a
//! *cluster*: the dirty, non-busy neighbours before and after it, bounded by the
//! vnode's maximum transfer and the filesystem's [`BlockMap::putrange`]. The cluster
//! is made busy, tagged writeback, and written with the object lock dropped: one device
//! request per contiguous run of blocks, holes skipped, nothing past the write size.
//!
//! Where genpager departs from the reference:
//! - a failed write loses nothing: its pages stay resident and dirty, and the error is
//!   reported errseq-style: once to each [`ErrorCursor`] (one per open file description)
//!   made before it, by the next [`fsync`] through that cursor, and once to the next
//!   synchronous cleaning [`putpages`] (which brings no cursor: it reports through the
//!   object's own), so neither hides it from the other;
//! - a device that keeps failing does not pin dirty pages in a loop of rewrites: after
//!   [a limit](crate::VmObject::set_write_failure_limit) of failed flushes in a row the
//!   object is *failed*: its dirty pages stay resident and dirty but are no longer
//!   written, every cleaning flush returns the error at once, until the kernel calls
//!   [`VmObject::clear_failed`](crate::VmObject::clear_failed) (or the pages are
//!   discarded);
//! - the priority hint is what [`PutFlags::LAZY`] means, not its inverse;
//! - a reclaiming flush that keeps failing ends with the error instead of looping;
//! - the work list is left only when nothing is dirty *and* nothing is in writeback,
//!   so a write that fails later cannot leave dirty pages off the list.
//!
//! ## The writeback pipeline
//!
//! [`flush`] resolves the call into a [`Flush`], which makes passes over the range until
//! it is done (`pass.rs`: the transaction, the work list, waiting for writes in flight,
//! the result). Each pass scans the range once, and a small [`Scan`] state (the pass's
//! flags, the cursor, how the scan ended so far) carries a page that must be written
//! through these steps, one module each:
//!
//! 1. **scan** (`scan.rs`): find the next page to visit, offer the CPU now and then,
//!    wait for or skip a busy page, and drive the steps below;
//! 2. **prepare** (`prepare.rs`): protect the page and move its dirty status on, which
//!    says whether it must be written: the seed first, then each neighbour as the
//!    cluster takes it (a neighbour that needs no write ends the cluster there);
//! 3. **gather cluster** (`cluster.rs`): the seed's dirty, idle neighbours within the
//!    maximum transfer and the filesystem's bound, made busy; the cluster is tagged for
//!    writeback and, when the call frees or deactivates, its pages marked so;
//! 4. **submit** (`submit.rs`): count the write in flight and hand the cluster to the
//!    device, one request per contiguous run of blocks, or to the vnode's byte I/O;
//! 5. **settle** (`settle.rs`): when the write completes, on this thread or from the
//!    device's completion, unbusy, free or re-dirty its pages and end the count; a
//!    failed write ends the scan.
//!
//! [`BlockMap::putrange`]: crate::BlockMap::putrange

mod behind;
mod cluster;
mod pass;
mod prepare;
mod scan;
mod settle;
mod submit;

use alloc::vec::Vec;
use core::fmt;

use bitflags::bitflags;

use crate::error::{Error, Result};
use crate::errseq::{ErrorCursor, WriteAttempt};
use crate::hooks::PageCache;
use crate::object::ObjectState;
use crate::page::{DirtyStatus, PAGE_MASK, PAGE_SIZE, PageFlags, PageRef, trunc_page};
use crate::sync::{Arc, WriteGuard};
use crate::transaction::Transaction;
use crate::vnode::{Vnode, max_transfer};

pub(crate) use behind::after_write_batch;
pub use behind::flush_expired;

bitflags! {
    /// Options of a [`putpages`] call (the reference's `PGO_*` flags).
    ///
    /// At least one of [`CLEANIT`](Self::CLEANIT), [`FREE`](Self::FREE) and
    /// [`DEACTIVATE`](Self::DEACTIVATE) must be given.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct PutFlags: u32 {
        /// Write dirty pages back.
        const CLEANIT = 1 << 0;
        /// Wait for the writes (and for writes already in flight) to finish; with
        /// [`CLEANIT`](Self::CLEANIT), report a write error not yet reported through
        /// the object's own cursor ([`putpages`]; [`fsync`] reports through the
        /// caller's) and wait for dirty pages of the range that other threads hold
        /// busy, so that every page dirty when the call began is on the device when
        /// it returns `Ok` (a thread must release the pages of its own faults before
        /// it flushes). Without it writes are started and the call returns. Clean busy
        /// pages are skipped, not waited for, unless [`RECLAIM`](Self::RECLAIM) is
        /// given.
        const SYNCIO = 1 << 1;
        /// Free the pages of the range (busy ones when their write completes). Dirty
        /// pages are written first only with [`CLEANIT`](Self::CLEANIT): without it
        /// their data is discarded (what a truncation wants). A page daemon reclaiming
        /// memory passes `CLEANIT | FREE`, as NetBSD's does.
        const FREE = 1 << 2;
        /// Move the unwired pages of the range to the inactive queue.
        const DEACTIVATE = 1 << 3;
        /// Treat the range as reaching to the end of the object.
        const ALLPAGES = 1 << 4;
        /// The vnode is being reclaimed: repeat until it is off the work list (or a
        /// write fails).
        const RECLAIM = 1 << 5;
        /// Fail with [`Error::Deadlock`] instead of waiting on a page that is busy
        /// being freed or paged out; [`putpages_busy`] reports that page. The flush
        /// stops there, but with [`PutFlags::SYNCIO`] it still waits for the writes
        /// already in flight, as the reference does, before it returns.
        const BUSYFAIL = 1 << 6;
        /// Background writeback: hint the device that the writes are not urgent.
        const LAZY = 1 << 7;
        /// The caller already holds the journal: do not begin a journal transaction.
        const JOURNALLOCKED = 1 << 8;
        /// Write with the reference's `genfs_gop_write_rwmap` semantics: the device may
        /// change the data of the write in place (filesystems whose strategy rewrites
        /// buffers).
        const WRITE_RWMAP = 1 << 9;
    }
}

/// Why [`putpages_busy`] failed, and which page stopped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PutError {
    /// The error [`putpages`] would return.
    pub error: Error,
    /// With [`Error::Deadlock`] (from [`PutFlags::BUSYFAIL`]): the offset of the busy
    /// page that stopped the flush. `None` for every other error.
    pub busy_page: Option<u64>,
}

impl From<Error> for PutError {
    fn from(error: Error) -> Self {
        Self {
            error,
            busy_page: None,
        }
    }
}

impl From<PutError> for Error {
    fn from(error: PutError) -> Self {
        error.error
    }
}

impl fmt::Display for PutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.busy_page {
            Some(offset) => write!(f, "{} (page at {offset:#x})", self.error),
            None => fmt::Display::fmt(&self.error, f),
        }
    }
}

impl core::error::Error for PutError {}

/// Cleans, deactivates or frees the resident pages of `vnode` in `start..end` (page
/// aligned; `end == 0` means to the end of the object).
///
/// This is [`putpages_busy`] without the busy page; see it for the contract.
pub fn putpages<V: Vnode>(vnode: &Arc<V>, start: u64, end: u64, flags: PutFlags) -> Result {
    putpages_busy(vnode, start, end, flags).map_err(Error::from)
}

/// Cleans, deactivates or frees the resident pages of `vnode` in `start..end` (page
/// aligned; `end == 0` means to the end of the object; `start == end` does nothing).
///
/// - [`PutFlags::CLEANIT`] writes dirty pages back in clusters; pages in the range are
///   write-protected (when the vnode may leave the work list) and their modified bits
///   cleared, so a store through a mapping during the write leaves them dirty.
/// - [`PutFlags::FREE`] removes the mappings of the range's pages and frees them, busy
///   ones once their write completes; [`PutFlags::DEACTIVATE`] moves them to the
///   inactive queue instead.
/// - Without [`PutFlags::SYNCIO`] writes are started and the call returns; with it the
///   call also waits for writes other threads have in flight, and a cleaning call
///   ([`PutFlags::CLEANIT`] | [`PutFlags::SYNCIO`]) returns the latest write error
///   since the last such call, once, even if its own writes succeeded (the object's
///   own cursor, [`ObjectState::pending_write_error`]: a kernel without cursors per open
///   file uses this as its fsync). Such a call never consumes what an [`ErrorCursor`]
///   of an open file reports: a syncer flushing this way hides nothing from [`fsync`].
/// - On a failed object ([`VmObject::is_failed`]) a cleaning call writes nothing: it
///   returns the error that failed the object at once (a freeing or deactivating one
///   still handles the clean pages, and leaves the dirty ones resident and dirty).
///
/// [`VmObject::is_failed`]: crate::VmObject::is_failed
///
/// The vnode leaves the work list when the flush leaves it with no dirty page and no
/// write in flight. The page daemon (per [`Vnode::is_pagedaemon`]) never sleeps on the
/// mount transaction (it gets [`Error::Busy`]) nor on a busy page (it stops there).
///
/// Errors: [`Error::Invalid`] for an unaligned range, `start > end` with `end != 0`,
/// or no action flag; [`Error::Deadlock`] with the busy page's offset under
/// [`PutFlags::BUSYFAIL`]; the transaction or journal hooks' errors; the error of a
/// synchronous write (its pages stay dirty); [`Error::NoMemory`]. A failed write never
/// loses data: its pages stay resident and dirty.
pub fn putpages_busy<V: Vnode>(
    vnode: &Arc<V>,
    start: u64,
    end: u64,
    flags: PutFlags,
) -> core::result::Result<(), PutError> {
    flush(vnode, start, end, flags, TransactionHeld::No)
}

/// Writes back the dirty pages of `vnode` in `start..end` (page aligned; `end == 0`
/// means to the end of the object) and waits for them, as
/// [`putpages`]`(CLEANIT | SYNCIO)` does, then reports the write errors that happened
/// since `cursor` last reported one (or was made, by
/// [`VmObject::error_cursor`](crate::VmObject::error_cursor)), once: the fsync of one
/// open file description, which keeps `cursor`.
///
/// Every description whose cursor was made before a write failed sees that failure in
/// its next `fsync`, whoever flushed the pages (an asynchronous writeback, the syncer,
/// another description's fsync, a [`putpages`]); one made after it does not. Several
/// failures since the last report are reported as one, the latest. The flush's own
/// write error is reported so too, once. An error that is not a write's (the
/// transaction refused, [`Error::NoMemory`], [`Error::Invalid`]) is returned without
/// moving `cursor` on: the write errors it has not reported wait for the next call.
/// On a failed object ([`VmObject::is_failed`](crate::VmObject::is_failed)) every
/// `fsync` returns the error that failed it, and writes nothing.
///
/// `Ok` means every page of the range dirty when the call began is on the device and
/// no write of the file failed since the cursor's last report.
pub fn fsync<V: Vnode>(vnode: &Arc<V>, cursor: &mut ErrorCursor, start: u64, end: u64) -> Result {
    let flags = PutFlags::CLEANIT | PutFlags::SYNCIO;
    let caller = Caller {
        held: TransactionHeld::No,
        reporter: Reporter::Cursor(cursor),
        pagedaemon: vnode.is_pagedaemon(),
    };
    flush_for(vnode, start, end, flags, caller).map_err(Error::from)
}

/// Through which cursor a synchronous cleaning flush reports write errors.
pub(crate) enum Reporter<'c> {
    /// The object's own ([`ObjectState::pending_write_error`]): flushes that bring
    /// none.
    Object,
    /// An open file's.
    Cursor(&'c mut ErrorCursor),
}

impl Reporter<'_> {
    /// The write error not yet reported through this cursor, moving it on (a failed
    /// object's error every time).
    fn take<C: PageCache>(&mut self, state: &mut ObjectState<C>) -> Option<Error> {
        match self {
            Reporter::Object => state.take_write_error(),
            Reporter::Cursor(cursor) => state.check_errors(cursor).err(),
        }
    }
}

/// Whether the caller of a flush is already inside the mount transaction (and
/// journal): then it holds the node lock too, and the flush must not enter them again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransactionHeld {
    /// The flush enters the transaction itself when it cleans.
    No,
    /// The caller holds it (and may hold the node lock).
    ByCaller,
}

/// [`putpages_busy`] for a caller that may already be inside the transaction.
pub(crate) fn flush<V: Vnode>(
    vnode: &Arc<V>,
    start: u64,
    end: u64,
    flags: PutFlags,
    held: TransactionHeld,
) -> core::result::Result<(), PutError> {
    flush_for(
        vnode,
        start,
        end,
        flags,
        Caller {
            held,
            reporter: Reporter::Object,
            pagedaemon: vnode.is_pagedaemon(),
        },
    )
}

/// The page daemon's page-out of `start..end`: an asynchronous `CLEANIT | FREE` flush
/// run as the page daemon whatever thread calls it (so it never sleeps on the mount
/// transaction or a busy page, and its pages are freed as their writes complete).
pub(crate) fn pageout<V: Vnode>(vnode: &Arc<V>, start: u64, end: u64) -> Result {
    let caller = Caller {
        held: TransactionHeld::No,
        reporter: Reporter::Object,
        pagedaemon: true,
    };
    flush_for(
        vnode,
        start,
        end,
        PutFlags::CLEANIT | PutFlags::FREE,
        caller,
    )
    .map_err(Error::from)
}

/// Who asks for a flush: whether it holds the transaction, through which cursor it
/// hears of write errors, and whether it is the page daemon.
pub(crate) struct Caller<'c> {
    held: TransactionHeld,
    reporter: Reporter<'c>,
    pagedaemon: bool,
}

/// [`flush`] for `caller`.
fn flush_for<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    start: u64,
    end: u64,
    flags: PutFlags,
    caller: Caller<'a>,
) -> core::result::Result<(), PutError> {
    let Caller {
        held,
        reporter,
        pagedaemon,
    } = caller;
    let actions = PutFlags::CLEANIT | PutFlags::FREE | PutFlags::DEACTIVATE;
    if start & PAGE_MASK != 0
        || end & PAGE_MASK != 0
        || (end != 0 && start > end)
        || !flags.intersects(actions)
    {
        return Err(Error::Invalid.into());
    }
    if end != 0 && start == end {
        return Ok(());
    }
    let max_pages = max_transfer(&**vnode) / PAGE_SIZE;
    let mut pages = Vec::new();
    pages
        .try_reserve_exact(max_pages)
        .map_err(|_| Error::NoMemory)?;
    let attempt = {
        let state = vnode.object().read();
        log::trace!(
            "putpages {start:#x}..{end:#x} flags {flags:?} resident {}",
            state.cache().resident_pages()
        );
        state.write_attempt()
    };
    let end = if end == 0 || flags.contains(PutFlags::ALLPAGES) {
        trunc_page(u64::MAX)
    } else {
        end
    };
    Flush {
        vnode,
        start,
        end,
        flags,
        pagedaemon,
        dirty_only: !flags.intersects(PutFlags::FREE | PutFlags::DEACTIVATE),
        max_pages,
        pages,
        transaction: None,
        caller_in_transaction: held == TransactionHeld::ByCaller,
        reporter,
        attempt,
    }
    .run()
}

type Guard<'a, V> = WriteGuard<'a, ObjectState<<V as Vnode>::Cache>>;

/// Which pages a scan visits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    /// Every resident page (freeing or deactivating).
    All,
    /// Pages tagged dirty.
    Dirty,
    /// Pages tagged dirty or writeback (a synchronous clean waits on the latter).
    DirtyOrWriteback,
}

/// How one scan over the range ended.
#[derive(Default)]
struct ScanEnd {
    /// The error that stopped it, with the busy page for [`Error::Deadlock`].
    error: Option<PutError>,
    /// Whether the error came from writing pages (so it was also recorded for every
    /// cursor to report), or is a failed object's.
    write_failed: bool,
    /// Whether any page was written.
    wrote: bool,
    /// Whether another pass could find things changed: the pass wrote, slept, or saw
    /// pages dirtied meanwhile.
    progressed: bool,
    /// Whether it left something a synchronous flush waits for before it returns: a
    /// busy page it skipped, or a write it started.
    must_wait: bool,
}

/// One scan over the range in progress: what its pass asked for and where it stands.
/// The steps of the writeback pipeline ([`Flush::visit`] and those it calls) move it on.
struct Scan {
    /// The pass's flags: the call's, less [`PutFlags::CLEANIT`] for a vnode that was off
    /// the work list ([`Flush::pass`]).
    flags: PutFlags,
    /// Which pages it visits.
    visit: Visit,
    /// The flag that has a busy page freed once its write completes: `PAGEOUT` for the
    /// page daemon, `RELEASED` for everyone else.
    free_flag: PageFlags,
    /// Where to look for the next page to visit.
    next: u64,
    /// Pages examined since the object lock was last taken.
    streak: u32,
    /// How it ended, so far.
    end: ScanEnd,
}

/// What a scan saw of a page, read under the object lock.
#[derive(Clone, Copy)]
struct Seen {
    offset: u64,
    flags: PageFlags,
    wired: bool,
    status: DirtyStatus,
}

/// One putpages call in progress.
struct Flush<'a, V: Vnode> {
    vnode: &'a Arc<V>,
    start: u64,
    /// Exclusive end of the range, resolved (never 0).
    end: u64,
    flags: PutFlags,
    pagedaemon: bool,
    dirty_only: bool,
    max_pages: usize,
    /// The cluster being built; reserved up front so the scan never allocates.
    pages: Vec<PageRef>,
    transaction: Option<Transaction<'a, V>>,
    /// The caller entered the transaction (and journal) before taking the node lock:
    /// entering it here, under that lock, would invert the lock order.
    caller_in_transaction: bool,
    /// Through which cursor a synchronous cleaning flush reports write errors.
    reporter: Reporter<'a>,
    /// The attempt its writes make: however many fail, it counts once towards the
    /// object's failed state.
    attempt: WriteAttempt,
}

impl<'a, V: Vnode> Flush<'a, V> {
    fn asynchronous(&self) -> bool {
        !self.flags.contains(PutFlags::SYNCIO)
    }

    fn in_transaction(&self) -> bool {
        self.transaction.is_some() || self.caller_in_transaction
    }
}
