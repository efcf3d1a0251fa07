//! The writeback pipeline's first step: one walk over the range in offset order,
//! handing each page to the next steps (see the module above). It offers the CPU every
//! [`PREEMPT_INTERVAL`] pages, waits for, skips or stops at busy pages, and frees or
//! deactivates the pages that need no write.

use core::ops::{ControlFlow, Range};

use super::cluster::pages_at;
use super::{Flush, Guard, PutError, PutFlags, Scan, ScanEnd, Seen, Visit};
use crate::error::{Error, Result};
use crate::hooks::{PageCache, Protection};
use crate::object::{ObjectFlags, ObjectState};
use crate::page::{DirtyStatus, PAGE_SIZE, PageFlags, PageQueue, Tag};
use crate::vnode::Vnode;

/// How many pages one hold of the object lock may examine before the flush offers the
/// CPU (the reference's preemption point).
const PREEMPT_INTERVAL: u32 = 64;

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

impl Scan {
    /// The last step of a cluster's way through the pipeline, on the scan's side: a
    /// failed write (its pages already settled dirty, the error recorded by
    /// [`complete_write`](super::settle::complete_write)) ends the scan with that error.
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

impl<'a, V: Vnode> Flush<'a, V> {
    /// Walks the range once, cleaning, deactivating and freeing pages per `flags`: the
    /// writeback pipeline's first step, which hands each page it finds to
    /// [`visit`](Self::visit).
    pub(super) fn scan(
        &mut self,
        mut state: Guard<'a, V>,
        flags: PutFlags,
    ) -> (Guard<'a, V>, ScanEnd) {
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
        if let Some(error) = self.failed_keeps(&state, seen) {
            // Neither written nor freed: the data stays, dirty, for after recovery.
            scan.end.error = Some(error.into());
            scan.end.write_failed = true;
            return (state, ControlFlow::Continue(()));
        }
        if self.prepare_page(&mut state, scan, seen) {
            return self.write_cluster(state, scan, offset);
        }
        self.free_or_deactivate(&mut state, scan, offset..scan.next, false);
        (state, ControlFlow::Continue(()))
    }

    /// The error of a failed object if the page `seen` holds data a cleaning call
    /// would write: such a page is left alone (not written, not freed, not
    /// deactivated).
    fn failed_keeps(&self, state: &ObjectState<V::Cache>, seen: Seen) -> Option<Error> {
        if !self.flags.contains(PutFlags::CLEANIT) || seen.status == DirtyStatus::Clean {
            return None;
        }
        state.failed_error_now()
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
