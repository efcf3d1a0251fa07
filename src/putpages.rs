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
//!   latched on the object and returned, once, by the next synchronous flush;
//! - the priority hint is what [`PutFlags::LAZY`] means, not its inverse;
//! - a reclaiming flush that keeps failing ends with the error instead of looping;
//! - the work list is left only when nothing is dirty *and* nothing is in writeback,
//!   so a write that fails later cannot leave dirty pages off the list.

use alloc::vec::Vec;
use core::fmt;
use core::ops::{ControlFlow, Range};

use bitflags::bitflags;

use crate::bmap::extents;
use crate::buf::{Direction, Nest, Priority, page_segments};
use crate::error::{Error, Result};
use crate::hooks::{
    BlockMap, ByteIo, DEV_BSHIFT, MountFlags, PageCache, Protection, SizeKind, Strategy, Update,
    VnodeKind,
};
use crate::object::{InFlight, ObjectFlags, ObjectState};
use crate::page::{
    DirtyStatus, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PageFlags, PageQueue, Tag, round_page,
    trunc_page,
};
use crate::page::{PageRef, zero_file_range};
use crate::sync::{Arc, WriteGuard};
use crate::transaction::{Transaction, Wait};
use crate::vnode::{Vnode, geometry, note_dirty};

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
        /// [`CLEANIT`](Self::CLEANIT), report a latched write error and wait for
        /// dirty pages of the range that other threads hold busy, so that every page
        /// dirty when the call began is on the device when it returns `Ok` (a thread
        /// must release the pages of its own faults before it flushes). Without it
        /// writes are started and the call returns. Clean busy pages are skipped, not
        /// waited for, unless [`RECLAIM`](Self::RECLAIM) is given.
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
        /// being freed or paged out; [`putpages_busy`] reports that page.
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
///   ([`PutFlags::CLEANIT`] | [`PutFlags::SYNCIO`]: an fsync) returns the write error
///   latched on the object since the last such call, once, even if its own writes
///   succeeded. Asynchronous writes that fail latch their error there.
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
    let max_pages = (vnode.max_transfer() / PAGE_SIZE).max(1);
    let mut pages = Vec::new();
    pages
        .try_reserve_exact(max_pages)
        .map_err(|_| Error::NoMemory)?;
    log::trace!(
        "putpages {start:#x}..{end:#x} flags {flags:?} resident {}",
        vnode.object().read().cache().resident_pages()
    );
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
        pagedaemon: vnode.is_pagedaemon(),
        dirty_only: !flags.intersects(PutFlags::FREE | PutFlags::DEACTIVATE),
        max_pages,
        pages,
        transaction: None,
        caller_in_transaction: held == TransactionHeld::ByCaller,
    }
    .run()
}

/// How many pages one hold of the object lock may examine before the flush offers the
/// CPU (the reference's preemption point).
const PREEMPT_INTERVAL: u32 = 64;

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

/// The first page to visit at or after `from`, below `end`.
fn next_page<C: PageCache>(cache: &C, from: u64, end: u64, visit: Visit) -> Option<u64> {
    if from >= end {
        // The last cluster written reached past the range.
        return None;
    }
    let next = match visit {
        Visit::All => cache.range(from..end).next().map(|page| page.offset()),
        Visit::Dirty => cache.next_tagged(Tag::Dirty, from),
        Visit::DirtyOrWriteback => {
            let dirty = cache.next_tagged(Tag::Dirty, from);
            let writeback = cache.next_tagged(Tag::Writeback, from);
            dirty.into_iter().chain(writeback).min()
        }
    };
    next.filter(|&offset| offset < end)
}

/// How a page about to be written is kept from changing unseen through a mapping.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mappings {
    /// Write-protect it now: a store during or after the write faults and dirties it
    /// again, so it can be marked clean as its write starts.
    WriteProtect,
    /// Already unmapped (it is being freed): it too can be marked clean.
    Unmapped,
    /// Wired: it stays mapped writable and can only become "unknown", its modified
    /// bit telling the next flush whether it changed.
    Wired,
}

/// Decides whether the page at `offset`, whose dirty status is `status`, must be
/// written, and moves that status on (the reference's `uvm_pagecheckdirty`, with the
/// page protected per `mappings`): a protected page becomes clean, a wired one
/// [`DirtyStatus::Unknown`], and either way its modified bit is cleared. A clean page
/// is left alone; an `Unknown` one needs writing only if its modified bit was set.
///
/// The reference write-protects only the first page of the first cluster of a flush
/// and leaves the other pages of a cluster "unknown", so a file needs a second flush
/// to come out clean. Protecting each page written (as Linux's `page_mkclean` does)
/// lets one synchronous flush leave the file clean and off the work list.
fn prepare_for_write<C: PageCache>(
    state: &mut ObjectState<C>,
    offset: u64,
    status: DirtyStatus,
    mappings: Mappings,
) -> bool {
    if status == DirtyStatus::Clean {
        return false;
    }
    let cache = state.cache_mut();
    let (modified, next) = match mappings {
        Mappings::WriteProtect => (
            cache.write_protect_and_clear_modified(offset),
            DirtyStatus::Clean,
        ),
        Mappings::Unmapped => (cache.clear_modified(offset), DirtyStatus::Clean),
        Mappings::Wired => (cache.clear_modified(offset), DirtyStatus::Unknown),
    };
    if next != status {
        state.mark(offset, next);
    }
    status == DirtyStatus::Dirty || modified
}

/// Whether a vnode may leave the work list: nothing dirty, nothing being written, and
/// (after a scan) nothing dirtied since the scan began.
fn leave_worklist_if_clean<V: Vnode>(state: &mut Guard<'_, V>, vnode: &V, generation: Option<u64>) {
    let clean = !state.cache().any_tagged(Tag::Dirty)
        && !state.cache().any_tagged(Tag::Writeback)
        && generation.is_none_or(|g| g == state.dirty_generation());
    if clean && state.flags().contains(ObjectFlags::ON_WORKLIST) {
        log::trace!("putpages: leaving the work list");
        state.set_flag(ObjectFlags::WRITE_MAPPED_DIRTY, false);
        state.set_flag(ObjectFlags::ON_WORKLIST, false);
        vnode.worklist_remove();
    }
}

/// How one scan over the range ended.
#[derive(Default)]
struct ScanEnd {
    /// The error that stopped it, with the busy page for [`Error::Deadlock`].
    error: Option<PutError>,
    /// Whether the error came from writing pages (so it was also latched).
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

impl Scan {
    /// The last step of a cluster's way through the pipeline, on the scan's side: a
    /// failed write (its pages already settled dirty, the error latched by
    /// [`complete_write`]) ends the scan with that error.
    fn settle(&mut self, written: Result) -> ControlFlow<()> {
        match written {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                log::trace!("putpages: write failed: {error:?}");
                self.end.error = Some(error.into());
                self.end.write_failed = true;
                ControlFlow::Break(())
            }
        }
    }
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
}

impl<'a, V: Vnode> Flush<'a, V> {
    fn asynchronous(&self) -> bool {
        !self.flags.contains(PutFlags::SYNCIO)
    }

    fn in_transaction(&self) -> bool {
        self.transaction.is_some() || self.caller_in_transaction
    }

    /// Enters the transaction a cleaning flush writes inside. The page daemon does not
    /// wait for it and takes no journal; everyone else waits, and begins the journal
    /// unless the caller holds it.
    fn enter_transaction(&self) -> Result<Transaction<'a, V>> {
        let vnode: &'a V = self.vnode;
        let wait = if self.pagedaemon {
            Wait::DontSleep
        } else {
            Wait::Sleep
        };
        let mut transaction = Transaction::begin(vnode, wait)?;
        if !self.pagedaemon && !self.flags.contains(PutFlags::JOURNALLOCKED) {
            transaction.begin_journal()?;
        }
        Ok(transaction)
    }

    fn run(mut self) -> core::result::Result<(), PutError> {
        let vnode: &'a V = self.vnode;
        let object = vnode.object();
        let mut state = object.lock();
        loop {
            debug_assert!(
                state.flags().contains(ObjectFlags::ON_WORKLIST)
                    || !state.flags().contains(ObjectFlags::WRITE_MAPPED_DIRTY)
            );
            if self.nothing_to_do(&state) {
                leave_worklist_if_clean(&mut state, vnode, None);
                let result = self.report(&mut state, ScanEnd::default());
                drop(state);
                return result;
            }
            if !self.in_transaction() && self.flags.contains(PutFlags::CLEANIT) {
                drop(state);
                self.transaction = Some(self.enter_transaction()?);
                state = object.lock();
                continue;
            }

            let (next, end) = self.pass(state);
            state = next;
            let on_worklist = state.flags().contains(ObjectFlags::ON_WORKLIST);
            if self.flags.contains(PutFlags::RECLAIM) && on_worklist && end.error.is_none() {
                // A reclaim must leave the vnode clean, but not retry forever against a
                // device that keeps failing, nor when another pass would find exactly
                // what this one found (say, a wired page that cannot be protected).
                if let Some(error) = state.take_write_error() {
                    log::trace!("putpages: reclaim stopped by write error {error:?}");
                    return Err(error.into());
                }
                if end.progressed {
                    continue;
                }
                log::trace!("putpages: reclaim makes no progress; stopping");
            }
            let result = self.report(&mut state, end);
            drop(state);
            return result;
        }
    }

    /// The quick exit: no pages, or only cleaning and nothing dirty (and, for a
    /// synchronous flush, nothing in writeback to wait for).
    fn nothing_to_do(&self, state: &ObjectState<V::Cache>) -> bool {
        let cache = state.cache();
        cache.resident_pages() == 0
            || (self.dirty_only
                && !cache.any_tagged(Tag::Dirty)
                && (self.asynchronous() || !cache.any_tagged(Tag::Writeback)))
    }

    /// The result of the call. A synchronous cleaning flush also collects the latched
    /// write error, unless it fails for an unrelated reason (then the latch waits);
    /// freeing or deactivating without cleaning leaves it for the next flush.
    fn report(
        &self,
        state: &mut ObjectState<V::Cache>,
        end: ScanEnd,
    ) -> core::result::Result<(), PutError> {
        let flush = self.flags.contains(PutFlags::CLEANIT | PutFlags::SYNCIO);
        let take = flush && (end.error.is_none() || end.write_failed);
        let latched = if take { state.take_write_error() } else { None };
        match (end.error, latched) {
            (Some(error), _) => Err(error),
            (None, Some(error)) => Err(error.into()),
            (None, None) => Ok(()),
        }
    }

    /// One pass over the range ([`scan`](Self::scan)), then the bookkeeping after it:
    /// timestamps, the work list, and waiting for writes in flight.
    fn pass(&mut self, mut state: Guard<'a, V>) -> (Guard<'a, V>, ScanEnd) {
        let vnode: &'a V = self.vnode;
        let mut flags = self.flags;
        let writes_before = state.writes_in_flight() != 0;
        let mut end = ScanEnd::default();
        let on_worklist = state.flags().contains(ObjectFlags::ON_WORKLIST);
        let generation = state.dirty_generation();
        if !on_worklist {
            // Known to have no dirty page: nothing to clean (the scan cleans again if a
            // page is dirtied while it has the lock dropped).
            flags.remove(PutFlags::CLEANIT);
        }
        if on_worklist || !self.dirty_only {
            (state, end) = self.scan(state, flags);
            let write_mapped = state.flags().contains(ObjectFlags::WRITE_MAPPED_DIRTY);
            let device_exempt = vnode.kind() == VnodeKind::BlockDevice
                && vnode.mount_flags().contains(MountFlags::NO_DEV_MTIME);
            if end.wrote && write_mapped && !device_exempt {
                vnode.mark_update(Update::MODIFIED);
            }
            leave_worklist_if_clean(&mut state, vnode, Some(generation));
        }
        if (writes_before || end.must_wait) && !self.asynchronous() {
            let waited;
            (state, waited) = self.wait_for_writes(state);
            if waited {
                end.progressed = true;
                // Everything this flush waited for is settled: it may leave the list now.
                leave_worklist_if_clean(&mut state, vnode, Some(generation));
            }
        }
        end.progressed |= state.dirty_generation() != generation;
        (state, end)
    }

    /// A synchronous flush's wait for the writes it may have missed. Another flush tags
    /// its seed page for writeback before it counts the write in flight (it asks the
    /// filesystem for the cluster's bounds in between, without the object lock): first
    /// wait for the pages of the range tagged for writeback, then for every write in
    /// flight. Returns whether it waited at all.
    fn wait_for_writes(&self, mut state: Guard<'a, V>) -> (Guard<'a, V>, bool) {
        let vnode: &'a V = self.vnode;
        let object = vnode.object();
        let mut waited = false;
        loop {
            let tagged = state
                .cache()
                .next_tagged(Tag::Writeback, self.start)
                .filter(|&at| at < self.end);
            let busy = tagged.filter(|&at| state.cache().lookup(at).is_some_and(|p| p.is_busy()));
            if let Some(at) = busy {
                log::trace!("putpages: waiting for the write of page {at:#x}");
                object.sleep_on_page(state, at);
                state = object.lock();
            } else if state.writes_in_flight() != 0 {
                log::trace!("putpages: waiting for {} writes", state.writes_in_flight());
                state = object.wait_for_writes(state);
            } else {
                return (state, waited);
            }
            waited = true;
        }
    }

    /// Walks the range once, cleaning, deactivating and freeing pages per `flags`: the
    /// writeback pipeline's first step, which hands each page it finds to
    /// [`visit`](Self::visit).
    fn scan(&mut self, mut state: Guard<'a, V>, flags: PutFlags) -> (Guard<'a, V>, ScanEnd) {
        let mut scan = self.begin_scan(flags);
        while let Some(offset) = next_page(state.cache(), scan.next, self.end, scan.visit) {
            let step;
            (state, step) = self.visit(state, &mut scan, offset);
            if step.is_break() {
                break;
            }
        }
        (state, scan.end)
    }

    /// A scan with `flags` from the start of the range. A flush that only cleans visits
    /// the dirty pages (a synchronous one those in writeback too, to wait for them).
    fn begin_scan(&self, flags: PutFlags) -> Scan {
        let visit = match (self.dirty_only, self.asynchronous()) {
            (false, _) => Visit::All,
            (true, true) => Visit::Dirty,
            (true, false) => Visit::DirtyOrWriteback,
        };
        let free_flag = if self.pagedaemon {
            PageFlags::PAGEOUT
        } else {
            PageFlags::RELEASED
        };
        Scan {
            flags,
            visit,
            free_flag,
            next: self.start,
            streak: 0,
            end: ScanEnd::default(),
        }
    }

    /// Visits the page at `offset`: offers the CPU every [`PREEMPT_INTERVAL`] pages,
    /// leaves a busy page to [`busy_page`](Self::busy_page), and otherwise prepares the
    /// page ([`prepare_page`](Self::prepare_page)) and writes the cluster it seeds
    /// ([`write_cluster`](Self::write_cluster)) if it must be written, or only
    /// deactivates or frees it. `Break` ends the scan.
    fn visit(
        &mut self,
        mut state: Guard<'a, V>,
        scan: &mut Scan,
        offset: u64,
    ) -> (Guard<'a, V>, ControlFlow<()>) {
        // Cannot overflow: reset to 0 past `PREEMPT_INTERVAL`.
        #[allow(clippy::arithmetic_side_effects)]
        {
            scan.streak += 1;
        }
        if scan.streak > PREEMPT_INTERVAL {
            return (
                self.offer_cpu(state, scan, offset),
                ControlFlow::Continue(()),
            );
        }
        let Some(page) = state.cache().lookup(offset) else {
            debug_assert!(false, "visited page {offset:#x} is not resident");
            return (state, ControlFlow::Break(()));
        };
        let seen = Seen {
            offset,
            flags: page.flags,
            wired: page.wire_count != 0,
            status: page.dirty(),
        };
        debug_assert!(
            !seen
                .flags
                .intersects(PageFlags::RELEASED | PageFlags::PAGEOUT)
                || seen.flags.contains(PageFlags::BUSY)
        );
        if seen.flags.contains(PageFlags::BUSY) {
            return self.busy_page(state, scan, seen);
        }
        // `offset < self.end <= trunc_page(u64::MAX)`: never saturates.
        scan.next = offset.saturating_add(PAGE_SIZE as u64);
        if self.prepare_page(&mut state, scan, seen) {
            return self.write_cluster(state, scan, offset);
        }
        self.free_or_deactivate(&mut state, scan, offset..scan.next, false);
        (state, ControlFlow::Continue(()))
    }

    /// Drops the object lock at the host's preemption point and takes it again; the
    /// page at `offset` is then visited afresh.
    fn offer_cpu(&self, state: Guard<'a, V>, scan: &mut Scan, offset: u64) -> Guard<'a, V> {
        let vnode: &'a V = self.vnode;
        drop(state);
        vnode.preempt();
        scan.streak = 0;
        scan.next = offset;
        vnode.object().lock()
    }

    /// A busy page in the scan's way. Under [`PutFlags::BUSYFAIL`] one being freed or
    /// paged out fails the flush; the page daemon stops at any (it never sleeps); a
    /// synchronous flush skips one that holds no data it must write (it waits for the
    /// writes in flight afterwards); otherwise the scan sleeps until the page is
    /// released and visits it again.
    fn busy_page(
        &self,
        state: Guard<'a, V>,
        scan: &mut Scan,
        seen: Seen,
    ) -> (Guard<'a, V>, ControlFlow<()>) {
        let offset = seen.offset;
        log::trace!("putpages: page {offset:#x} busy");
        if seen
            .flags
            .intersects(PageFlags::RELEASED | PageFlags::PAGEOUT)
            && scan.flags.contains(PutFlags::BUSYFAIL)
        {
            scan.end.error = Some(PutError {
                error: Error::Deadlock,
                busy_page: Some(offset),
            });
            return (state, ControlFlow::Break(()));
        }
        if self.pagedaemon {
            // Taken by someone else while the lock was dropped; never sleep.
            return (state, ControlFlow::Break(()));
        }
        // A dirty page busy in someone else's hands (a fault reading around it,
        // read-ahead, a caller holding a fault's pages) holds data a synchronous
        // clean must write: wait for it. The reference skips it, reasoning that a
        // page busy for a read cannot be dirty; here a read busies valid pages
        // too. A page being written has had its dirty status moved on and is
        // covered by the wait for writes in flight.
        let dirty_data =
            self.flags.contains(PutFlags::CLEANIT) && seen.status != DirtyStatus::Clean;
        if !self.asynchronous() && !scan.flags.contains(PutFlags::RECLAIM) && !dirty_data {
            scan.end.must_wait = true;
            scan.next = offset.saturating_add(PAGE_SIZE as u64);
            return (state, ControlFlow::Continue(()));
        }
        let vnode: &'a V = self.vnode;
        let object = vnode.object();
        scan.next = offset;
        object.sleep_on_page(state, offset);
        scan.streak = 0;
        scan.end.progressed = true;
        (object.lock(), ControlFlow::Continue(()))
    }

    /// The pipeline's *prepare* step for an idle page the scan found: protects it and
    /// moves its dirty status on ([`prepare_for_write`]), and says whether it must be
    /// written. A freeing scan unmaps it first, whether or not it cleans.
    fn prepare_page(&self, state: &mut ObjectState<V::Cache>, scan: &Scan, seen: Seen) -> bool {
        // Off the work list at the start, the scan does not clean; but a page dirtied
        // while it had the lock dropped (waiting on a busy page) put the vnode back
        // on the list, and must be written rather than freed with its data.
        let cleanit = scan.flags.contains(PutFlags::CLEANIT)
            || (self.flags.contains(PutFlags::CLEANIT)
                && state.flags().contains(ObjectFlags::ON_WORKLIST));
        let mappings = if scan.flags.contains(PutFlags::FREE) {
            state.cache_mut().protect(seen.offset, Protection::None);
            Mappings::Unmapped
        } else if seen.wired {
            Mappings::Wired
        } else {
            Mappings::WriteProtect
        };
        cleanit && prepare_for_write(state, seen.offset, seen.status, mappings)
    }

    /// Writes the cluster seeded by the prepared page at `seed`, the rest of the
    /// pipeline: [`gather_cluster`](Self::gather_cluster), tag it for writeback and
    /// deactivate or free its pages ([`free_or_deactivate`](Self::free_or_deactivate)),
    /// [`submit`](Self::submit) it, and [`settle`](Scan::settle) the scan on the result.
    fn write_cluster(
        &mut self,
        state: Guard<'a, V>,
        scan: &mut Scan,
        seed: u64,
    ) -> (Guard<'a, V>, ControlFlow<()>) {
        debug_assert!(state.flags().contains(ObjectFlags::ON_WORKLIST));
        scan.end.must_wait = true;
        let mut state = self.gather_cluster(state, seed);
        let cluster = pages_at(self.pages[0].offset, self.pages.len());
        state.cache_mut().set_writeback_range(cluster.clone(), true);
        self.free_or_deactivate(&mut state, scan, cluster.clone(), true);
        scan.end.wrote = true;
        scan.end.progressed = true;
        scan.next = cluster.end;
        let (state, written) = self.submit(state, scan.flags);
        scan.streak = 0;
        (state, scan.settle(written))
    }

    /// Gathers the write cluster around the prepared `seed` into `self.pages`. The seed
    /// is made busy and tagged for writeback, then the filesystem is asked for its bound
    /// on the cluster ([`BlockMap::putrange`]) without the object lock (the seed is ours
    /// meanwhile), then the neighbours are taken ([`take_neighbours`](Self::take_neighbours)).
    fn gather_cluster(&mut self, mut state: Guard<'a, V>, seed: u64) -> Guard<'a, V> {
        let vnode: &'a V = self.vnode;
        if let Some(page) = state.cache_mut().lookup_mut(seed) {
            page.flags |= PageFlags::BUSY;
        }
        // Tagged before the lock is dropped: its dirty status is already moved on, so a
        // synchronous flush of another thread finds it (and waits for it) only through
        // the writeback tag.
        state.cache_mut().set_writeback(seed, true);
        drop(state);
        let range = vnode.block_map().putrange(seed);
        let mut state = vnode.object().lock();
        let reach = self.cluster_reach(seed, range);
        self.take_neighbours(&mut state, seed, reach);
        state
    }

    /// How many pages the cluster around `seed` may take behind it, and ahead of it
    /// (`None`: as many as the maximum transfer allows): at most half the maximum
    /// transfer behind, and nothing outside the filesystem's `range` (`None` bounds
    /// nothing, an end of 0 nothing above).
    // Cannot overflow: `low <= seed < high` and `seed < trunc_page(u64::MAX)` (the seed
    // is inside a flush range), and `max_pages` pages (`max_transfer` bytes, a `usize`)
    // fit in a `u64`.
    #[allow(clippy::arithmetic_side_effects)]
    fn cluster_reach(&self, seed: u64, range: Option<Range<u64>>) -> (usize, Option<usize>) {
        let page = PAGE_SIZE as u64;
        let (fs_low, fs_high) = match range {
            Some(range) => {
                debug_assert!(range.start <= seed && (range.end == 0 || seed < range.end));
                let low = trunc_page(range.start).min(seed);
                let high = (range.end != 0).then(|| round_page(range.end).max(seed + page));
                (low, high)
            }
            None => (0, None),
        };
        let general_low = seed.saturating_sub((self.max_pages / 2) as u64 * page);
        let low = fs_low.max(general_low);
        let behind = ((seed - low) >> PAGE_SHIFT) as usize;
        let ahead = fs_high.map(|high| ((high - seed - 1) >> PAGE_SHIFT) as usize);
        (behind, ahead)
    }

    /// Builds the write cluster around the busy, dirty `seed` into `self.pages`: dirty,
    /// non-busy resident neighbours, backward then forward, within `max_pages` and
    /// `reach` ([`cluster_reach`](Self::cluster_reach)), each prepared for writing as it
    /// is taken ([`take_dirty_neighbour`]). Each page taken is made busy (without
    /// waiting, so taking them out of order cannot deadlock). The cluster ends at most
    /// at `trunc_page(u64::MAX)` (a page there, which no fault makes, is left out).
    // Cannot overflow: the offsets behind are at or above the reach's low end; `behind
    // <= max_pages / 2 < max_pages`, and `max_pages` pages fit in a `u64`.
    #[allow(clippy::arithmetic_side_effects)]
    fn take_neighbours(
        &mut self,
        state: &mut ObjectState<V::Cache>,
        seed: u64,
        (most_behind, ahead): (usize, Option<usize>),
    ) {
        let page = PAGE_SIZE as u64;
        self.pages.clear();
        self.take_run(state, (1..=most_behind as u64).map(|i| seed - i * page));
        self.pages.reverse();
        let behind = self.pages.len();
        let frame = state
            .cache()
            .lookup(seed)
            .map(|p| p.frame())
            .expect("the seed page is busy and resident");
        self.pages.push(PageRef {
            offset: seed,
            frame,
        });
        let most_ahead = (self.max_pages - behind - 1).min(ahead.unwrap_or(usize::MAX));
        let last = trunc_page(u64::MAX);
        let offsets = (1..=most_ahead as u64)
            .map_while(|i| seed.checked_add(i * page).filter(|&at| at < last));
        self.take_run(state, offsets);
        log::trace!(
            "putpages: cluster {:#x}+{} pages around {seed:#x}",
            self.pages[0].offset,
            self.pages.len()
        );
    }

    /// Appends to the cluster the pages at `offsets`, in order, up to the first that is
    /// not a resident, idle page needing a write.
    fn take_run(&mut self, state: &mut ObjectState<V::Cache>, offsets: impl Iterator<Item = u64>) {
        for at in offsets {
            match take_dirty_neighbour(state, at) {
                Some(found) => self.pages.push(found),
                None => break,
            }
        }
    }

    /// The pipeline's *submit* step: counts the cluster's write in flight before the
    /// object lock is dropped (so a synchronous flush that takes the lock next waits for
    /// it) and writes it ([`gop_write`]). Returns with the lock held again.
    fn submit(&mut self, mut state: Guard<'a, V>, flags: PutFlags) -> (Guard<'a, V>, Result) {
        let write = state.start_write();
        drop(state);
        let (state, written) = gop_write(self.vnode, &self.pages, flags, write);
        self.pages.clear();
        (state, written)
    }

    /// Deactivates or frees, per the scan's flags, the pages of `cluster` inside the
    /// range: `writing` says they are the scan's own, busy for their write.
    fn free_or_deactivate(
        &self,
        state: &mut ObjectState<V::Cache>,
        scan: &Scan,
        cluster: Range<u64>,
        writing: bool,
    ) {
        if !scan.flags.intersects(PutFlags::FREE | PutFlags::DEACTIVATE) {
            return;
        }
        for at in cluster.step_by(PAGE_SIZE) {
            if (self.start..self.end).contains(&at) {
                self.apply(state, scan, at, writing);
            }
        }
    }

    /// Deactivates or frees the page at `at` (inside the range) per the scan's flags.
    fn apply(&self, state: &mut ObjectState<V::Cache>, scan: &Scan, at: u64, writing: bool) {
        let Some(page) = state.cache().lookup(at) else {
            return;
        };
        let (wired, busy) = (page.wire_count != 0, page.is_busy());
        if scan.flags.contains(PutFlags::DEACTIVATE) && !wired {
            state.cache_mut().set_queue(at, PageQueue::Inactive);
        } else if scan.flags.contains(PutFlags::FREE) {
            state.cache_mut().protect(at, Protection::None);
            if busy {
                // Ours, about to be written: freed when the write completes.
                if let Some(page) = state.cache_mut().lookup_mut(at) {
                    page.flags |= scan.free_flag;
                }
                if self.pagedaemon {
                    state.cache_mut().set_queue(at, PageQueue::None);
                }
            } else {
                debug_assert!(!writing);
                state.cache_mut().free(at);
            }
        }
    }
}

/// The offsets of `count` consecutive pages from `first`, a cluster's.
// Cannot overflow: a cluster holds at most `max_transfer` bytes (a `usize`) and ends at
// most at `trunc_page(u64::MAX)` (`Flush::take_neighbours`).
#[allow(clippy::arithmetic_side_effects)]
fn pages_at(first: u64, count: usize) -> Range<u64> {
    first..first + (count * PAGE_SIZE) as u64
}

/// Takes the page at `at` for a write cluster if it is resident, not busy and needs
/// writing (the reference's `uvn_findpages` with NOWAIT | NOALLOC | DIRTYONLY).
fn take_dirty_neighbour<C: PageCache>(state: &mut ObjectState<C>, at: u64) -> Option<PageRef> {
    let page = state.cache_mut().lookup_mut(at)?;
    if page.is_busy() || page.dirty() == DirtyStatus::Clean {
        return None;
    }
    let (status, wired, frame) = (page.dirty(), page.wire_count != 0, page.frame());
    // Taken at once, the common case, and given back if its write turns out needless
    // (an "unknown" page whose modified bit is clear); nobody sees it in between.
    page.flags |= PageFlags::BUSY;
    let mappings = if wired {
        Mappings::Wired
    } else {
        Mappings::WriteProtect
    };
    if !prepare_for_write(state, at, status, mappings) {
        if let Some(page) = state.cache_mut().lookup_mut(at) {
            page.flags.remove(PageFlags::BUSY);
        }
        return None;
    }
    Some(PageRef { offset: at, frame })
}

/// Writes busy, consecutive `pages` (the reference's `genfs_gop_write`, or with
/// [`PutFlags::WRITE_RWMAP`] its `genfs_gop_write_rwmap`, for a device that may change
/// the written data in place), whose write the caller has counted in flight; see
/// [`do_io`]. Returns with the object lock held.
pub(crate) fn gop_write<'a, V: Vnode>(
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
/// success; on failure kept resident and dirty, with the error latched for the next
/// synchronous flush. The caller has counted the write in flight (`write`); nothing
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
    let eof = vnode.block_map().size(write.write_size(), SizeKind::Disk);
    let bytes = usize::try_from(eof.saturating_sub(first))
        .unwrap_or(usize::MAX)
        .min(pages.len().saturating_mul(PAGE_SIZE));
    log::trace!(
        "compat gop_write {first:#x}+{} pages ({bytes:#x} bytes) {flags:?}",
        pages.len()
    );
    let result = write_pages(io, pages, first, bytes);
    let written = PageWrite {
        first,
        count: pages.len(),
        write,
    };
    settle_locked(vnode, written, result)
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
pub(crate) fn do_io<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    pages: &[PageRef],
    flags: PutFlags,
    write: InFlight,
) -> (Guard<'a, V>, Result) {
    let object = vnode.object();
    let Some(first) = pages.first().map(|page| page.offset) else {
        let mut state = object.lock();
        let wake = state.end_write(write);
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

/// A page write counted in flight: its `count` pages from `first`, settled together,
/// and the count ended, when it completes ([`complete_write`]).
pub(crate) struct PageWrite {
    first: u64,
    count: usize,
    write: InFlight,
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
    let eof = vnode
        .block_map()
        .size(written.write.write_size(), SizeKind::Disk);
    let dev_bshift = geometry(vnode).map_or(DEV_BSHIFT, |geometry| geometry.dev_bshift);
    let sector_mask = !(u64::MAX << dev_bshift);
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
            Err(error) => return settle_locked(&**vnode, written, Err(error)),
        };
        self.submit(&**vnode, nest);
        let result = waiter.wait().result;
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
                let mut state = object.lock();
                let wake = complete_write(&mut state, &*owner, written, outcome.result);
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
        let request = nest.request(block, extent.offset, segments);
        vnode.device().submit(request);
    }
    (skipped, Ok(()))
}

/// The pipeline's *settle* step, on this thread: takes the object lock, completes
/// `written` with `result` ([`complete_write`]) and wakes its waiters; returns the lock
/// with the result.
fn settle_locked<V: Vnode>(
    vnode: &V,
    written: PageWrite,
    result: Result,
) -> (Guard<'_, V>, Result) {
    let object = vnode.object();
    let mut state = object.lock();
    let wake = complete_write(&mut state, vnode, written, result);
    object.wake_if(wake);
    (state, result)
}

/// Completes a page write under the object lock (the pipeline's *settle* step): settles
/// its pages ([`settle_written`]) and ends its in-flight count. Returns whether waiters
/// must be woken.
pub(crate) fn complete_write<V: Vnode>(
    state: &mut ObjectState<V::Cache>,
    vnode: &V,
    written: PageWrite,
    result: Result,
) -> bool {
    let PageWrite {
        first,
        count,
        write,
    } = written;
    let wake = settle_written(state, vnode, first, count, result);
    state.end_write(write) | wake
}

/// Settles `count` busy pages from `first` after their write (the write half of the
/// reference's `uvm_aio_aiodone`), under the object lock. Returns whether waiters must
/// be woken.
///
/// On success each page leaves writeback and is unbusied; pages marked `RELEASED` (or
/// `PAGEOUT`, by the page daemon) are freed. The dirty status is left as the flush set
/// it, so a store through a mapping meanwhile still shows. On failure nothing is lost:
/// each page stays resident and becomes dirty again, loses `RELEASED`/`PAGEOUT`, is
/// requeued and unbusied; the error is latched for the next synchronous flush and the
/// vnode goes back on the work list.
pub(crate) fn settle_written<V: Vnode>(
    state: &mut ObjectState<V::Cache>,
    vnode: &V,
    first: u64,
    count: usize,
    result: Result,
) -> bool {
    let mut wake = false;
    let cluster = pages_at(first, count);
    state
        .cache_mut()
        .set_writeback_range(cluster.clone(), false);
    for at in cluster.step_by(PAGE_SIZE) {
        match result {
            // Paged out or released: freed now that the data is on disk.
            Ok(()) => wake |= state.unbusy_written(at),
            Err(_) => {
                let Some(page) = state.cache_mut().lookup_mut(at) else {
                    debug_assert!(false, "written page {at:#x} is not resident");
                    continue;
                };
                page.flags.remove(PageFlags::RELEASED | PageFlags::PAGEOUT);
                state.mark(at, DirtyStatus::Dirty);
                wake |= state.settle(at);
            }
        }
    }
    if let Err(error) = result {
        log::trace!("write of {first:#x}+{count} pages failed: {error:?}; kept dirty");
        if count != 0 {
            state.latch_write_error(error);
            note_dirty(&mut *state, vnode);
        }
    }
    wake
}
