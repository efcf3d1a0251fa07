//! The pipeline's *prepare* step: before a page is written it is protected from
//! changing unseen through a mapping and its dirty status moves on, which decides
//! whether it needs writing at all (the reference's `uvm_pagecheckdirty`).

use super::{Flush, PutFlags, Scan, Seen};
use crate::hooks::{PageCache, Protection};
use crate::object::{ObjectFlags, ObjectState};
use crate::page::{DirtyStatus, PageFlags, PageRef};
use crate::vnode::Vnode;

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

impl<'a, V: Vnode> Flush<'a, V> {
    /// The pipeline's *prepare* step for an idle page the scan found: protects it and
    /// moves its dirty status on ([`prepare_for_write`]), and says whether it must be
    /// written. A freeing scan unmaps it first, whether or not it cleans.
    pub(super) fn prepare_page(
        &self,
        state: &mut ObjectState<V::Cache>,
        scan: &Scan,
        seen: Seen,
    ) -> bool {
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
}

/// Takes the page at `at` for a write cluster if it is resident, not busy and needs
/// writing (the reference's `uvn_findpages` with NOWAIT | NOALLOC | DIRTYONLY).
pub(super) fn take_dirty_neighbour<C: PageCache>(
    state: &mut ObjectState<C>,
    at: u64,
) -> Option<PageRef> {
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
