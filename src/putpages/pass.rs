//! The passes of a flush: entering the mount transaction, scanning the range until the
//! call is done (a reclaim until the vnode is clean, or no pass changes anything), the
//! bookkeeping after each scan (timestamps, the work list, waiting for writes in
//! flight) and the call's result.

use super::{Flush, Guard, PutError, PutFlags, ScanEnd};
use crate::error::{Error, Result};
use crate::hooks::{MountFlags, PageCache, Update, VnodeKind};
use crate::object::{ObjectFlags, ObjectState};
use crate::page::Tag;
use crate::sync::Wait;
use crate::transaction::Transaction;
use crate::vnode::Vnode;

impl<'a, V: Vnode> Flush<'a, V> {
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

    pub(super) fn run(mut self) -> core::result::Result<(), PutError> {
        let vnode: &'a V = self.vnode;
        let object = vnode.object();
        let mut state = object.lock();
        loop {
            debug_assert!(
                state.flags().contains(ObjectFlags::ON_WORKLIST)
                    || !state.flags().contains(ObjectFlags::WRITE_MAPPED_DIRTY)
            );
            // A failed object's dirty pages are not written again; a flush that only
            // cleans returns its error at once (after the writes in flight, if it
            // waits for them), one that frees or deactivates skips them ([`visit`]).
            //
            // [`visit`]: Flush::visit
            let failed = state.failed_error();
            if let Some(error) = failed.filter(|_| self.cleans_only()) {
                return self.failed_at_once(state, error);
            }
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
                if let Some(error) = self.reporter.take(&mut state) {
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

    /// The result of a call that only cleans, on an object failed by `error`: nothing
    /// is written; a synchronous call waits for the writes in flight first.
    fn failed_at_once(
        &mut self,
        mut state: Guard<'a, V>,
        error: Error,
    ) -> core::result::Result<(), PutError> {
        log::trace!("putpages: object failed by {error:?}; nothing written");
        if !self.asynchronous() {
            (state, _) = self.wait_for_writes(state);
        }
        let end = ScanEnd {
            error: Some(error.into()),
            write_failed: true,
            ..ScanEnd::default()
        };
        self.report(&mut state, end)
    }

    /// Whether the call cleans and does nothing else: only dirty pages concern it.
    fn cleans_only(&self) -> bool {
        self.dirty_only && self.flags.contains(PutFlags::CLEANIT)
    }

    /// The result of the call. A synchronous cleaning flush also reports the write
    /// error its cursor has not seen (moving the cursor on), unless it fails for an
    /// unrelated reason (then the error waits for the next); freeing or deactivating
    /// without cleaning leaves it for the next flush.
    fn report(
        &mut self,
        state: &mut ObjectState<V::Cache>,
        end: ScanEnd,
    ) -> core::result::Result<(), PutError> {
        // Whatever the call did, a failed object whose kept pages are all gone (freed
        // without cleaning) is failed no longer: a reclaimer asking sees it so.
        let _still_failed = state.failed_error();
        let flush = self.flags.contains(PutFlags::CLEANIT | PutFlags::SYNCIO);
        let take = flush && (end.error.is_none() || end.write_failed);
        let unseen = if take {
            self.reporter.take(state)
        } else {
            None
        };
        match (end.error, unseen) {
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
