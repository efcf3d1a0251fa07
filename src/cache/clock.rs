//! One object's share of a page-daemon scan, over any [`PageCache`]: balance the
//! queues, then walk the inactive queue from its head asking the [`Policy`] about each
//! page. The [`Reclaimer`](crate::reclaim::Reclaimer) runs it under an object lock it
//! took without waiting; [`DefaultCache`](super::DefaultCache) runs it on itself when
//! an allocation meets its limit. Nothing here sleeps, allocates or starts I/O: dirty
//! pages are handed to the caller, which writes them once it has dropped the lock.

use crate::hooks::{PageCache, Protection};
use crate::page::{DirtyStatus, PageQueue};
use crate::pdpolicy::{Policy, Scanned, Verdict};

/// What a sweep may do beyond freeing clean, unmapped pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A cache making room for its own allocation: no MMU work and no I/O, so mapped
    /// and dirty pages stay; and no balancing, so only pages already inactive go (a
    /// page still on the active queue may be read-ahead the reader has yet to reach:
    /// evicting it to read further ahead would read it twice). Pages become inactive
    /// when a reader has read them through ([`read`](crate::read)'s use-once
    /// demotion), by [`DEACTIVATE`](crate::PutFlags::DEACTIVATE) flushes and by the
    /// page daemon.
    Cache,
    /// A cache making room when its memory domain's budget is spent: as
    /// [`Scope::Cache`], but when its inactive queue falls short it balances the queues
    /// as the page daemon does. Failing the allocation would fail a read or write
    /// outright, which reading a page ahead twice does not.
    SpentBudget,
    /// The page daemon: mapped pages are unmapped (and written if they were modified
    /// through the mapping), dirty pages handed to the caller to page out.
    PageDaemon,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Pages freed.
    pub(crate) freed: usize,
    /// Pages moved from the active to the inactive queue, or back.
    pub(crate) moved: usize,
    /// Whether a clean page turned out modified through a mapping and was marked
    /// dirty: the object must be on the syncer's work list (the caller's business).
    pub(crate) dirtied: bool,
}

/// Walks the inactive queue from its head until `want` pages are freed or offered for
/// cleaning: busy and wired pages stay, referenced ones go back to the active queue,
/// clean ones are freed, and dirty ones (in [`Scope::PageDaemon`]) are offered to
/// `clean`, which returns `false` when it can take no more. The page daemon then, if
/// that fell short, balances the queues to the policy's inactive target and walks the
/// pages it deactivated (the reference scans before it balances too): pages a reader
/// has read through wait on the inactive queue (`read`'s use-once), so a reader's
/// read-ahead is deactivated only when they are not enough. Every page is looked at
/// once per walk at most.
pub(crate) fn sweep<C: PageCache + ?Sized>(
    cache: &mut C,
    policy: &dyn Policy,
    want: usize,
    scope: Scope,
    clean: &mut dyn FnMut(u64) -> bool,
) -> Swept {
    let mut swept = Swept::default();
    let mut offered = 0usize;
    walk_inactive(cache, policy, want, scope, clean, &mut swept, &mut offered);
    if scope != Scope::Cache && swept.freed.saturating_add(offered) < want {
        balance(cache, policy, want, &mut swept);
        walk_inactive(cache, policy, want, scope, clean, &mut swept, &mut offered);
    }
    swept
}

/// One walk of the inactive queue from its head (see [`sweep`]); `offered` counts the
/// dirty pages `clean` took.
fn walk_inactive<C: PageCache + ?Sized>(
    cache: &mut C,
    policy: &dyn Policy,
    want: usize,
    scope: Scope,
    clean: &mut dyn FnMut(u64) -> bool,
    swept: &mut Swept,
    offered: &mut usize,
) {
    let mut left = cache.queue_len(PageQueue::Inactive);
    let mut cursor = cache.queue_first(PageQueue::Inactive);
    let mut room = true;
    // Offers the dirty page at `at` to `clean` while it has room.
    fn offer(at: u64, clean: &mut dyn FnMut(u64) -> bool, room: &mut bool, offered: &mut usize) {
        if *room && clean(at) {
            *offered = offered.saturating_add(1);
        } else {
            *room = false;
        }
    }
    while let Some(at) = cursor {
        if left == 0 || swept.freed.saturating_add(*offered) >= want {
            break;
        }
        left = left.saturating_sub(1);
        // Taken before the page moves or goes.
        cursor = cache.queue_next(at);
        let Some(page) = cache.lookup(at) else {
            continue;
        };
        let mut seen = Scanned {
            // A page in writeback is busy too; asked anyway, as a host cache may tag
            // before it busies.
            busy: page.is_busy() || page.in_writeback(),
            wired: page.wire_count != 0,
            referenced: false,
            dirty: page.dirty() != DirtyStatus::Clean,
            mapped: false,
        };
        if !seen.busy && !seen.wired {
            seen.referenced = cache.clear_referenced(at);
            seen.mapped = cache.is_mapped(at);
        }
        let mut verdict = policy.judge(&seen);
        // Whatever the policy says, a busy or wired page is never freed, and dirty data
        // is never discarded.
        if seen.busy || seen.wired {
            verdict = Verdict::Skip;
        } else if seen.dirty && verdict == Verdict::Free {
            verdict = Verdict::Clean;
        }
        match verdict {
            Verdict::Skip => {}
            Verdict::Reactivate => {
                cache.set_queue(at, PageQueue::Active);
                swept.moved = swept.moved.saturating_add(1);
            }
            Verdict::Free if scope != Scope::PageDaemon && seen.mapped => {}
            Verdict::Free => {
                if seen.mapped {
                    // Unmapped first, so no store lands after the modified bit is read.
                    cache.protect(at, Protection::None);
                    if cache.clear_modified(at) {
                        cache.set_dirty(at, DirtyStatus::Dirty);
                        swept.dirtied = true;
                        offer(at, clean, &mut room, offered);
                        continue;
                    }
                }
                cache.free(at);
                swept.freed = swept.freed.saturating_add(1);
            }
            Verdict::Clean if scope != Scope::PageDaemon => {}
            Verdict::Clean => offer(at, clean, &mut room, offered),
        }
    }
}

/// Moves pages from the head of the active queue to the inactive queue, clearing their
/// referenced bits, until the inactive queue holds the policy's share of the resident
/// pages, or `want` if more (CLOCK's hand sweeping the active list). Busy and wired
/// pages go to the active queue's tail instead. Each active page is looked at once at
/// most.
fn balance<C: PageCache + ?Sized>(
    cache: &mut C,
    policy: &dyn Policy,
    want: usize,
    swept: &mut Swept,
) {
    // At least as many inactive pages as the caller wants freed, or a small object
    // (whose policy share rounds to nothing) could never give any.
    let resident = cache.resident_pages();
    let target = policy.inactive_target(resident).max(want.min(resident));
    let mut left = cache.queue_len(PageQueue::Active);
    while left > 0 && cache.queue_len(PageQueue::Inactive) < target {
        left = left.saturating_sub(1);
        let Some(at) = cache.queue_first(PageQueue::Active) else {
            break;
        };
        let stays = cache
            .lookup(at)
            .is_none_or(|page| page.is_busy() || page.wire_count != 0);
        if stays {
            cache.set_queue(at, PageQueue::Active);
            continue;
        }
        // Deactivated pages start unreferenced: a use from now on earns the second
        // chance.
        cache.clear_referenced(at);
        cache.set_queue(at, PageQueue::Inactive);
        swept.moved = swept.moved.saturating_add(1);
    }
}
