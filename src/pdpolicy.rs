//! The page daemon's policy (the reference's `uvm_pdpolicy` interface): how large the
//! inactive queue should be, and what to do with one inactive page the scan looks at.
//!
//! The mechanism around it — balancing the queues, walking the inactive queue, freeing,
//! starting page-outs — is the same for every policy and lives in `cache/clock.rs`
//! (one object's queues) and `reclaim.rs` (across objects). A policy only decides, so a
//! kernel can change the decisions without touching locks or I/O. [`Clock`] is the
//! default: NetBSD's two-list CLOCK (`uvm_pdpolicy_clock.c`).

/// What the scan saw of one inactive page, for [`Policy::judge`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Busy (someone holds it: a fault, a read, a write in flight): it cannot be freed.
    pub busy: bool,
    /// Wired: it must stay resident.
    pub wired: bool,
    /// Used since the page daemon last looked: its referenced bit was set (and has been
    /// cleared by looking). Only asked of pages neither busy nor wired.
    pub referenced: bool,
    /// Holds data not on the device (dirty, or possibly dirty through a mapping).
    pub dirty: bool,
    /// Some user mapping reaches it.
    pub mapped: bool,
}

/// What to do with one inactive page ([`Policy::judge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Leave it where it is (busy or wired pages must get this).
    Skip,
    /// Give it a second chance: back to the active queue.
    Reactivate,
    /// Free it (the scan checks the MMU first: a page written through a mapping since
    /// it was last cleaned is written back instead).
    Free,
    /// Write it back, freeing it when the write completes (dirty pages must get this or
    /// `Skip`: the scan never discards data, whatever the policy says).
    Clean,
}

/// A page-replacement policy: the two decisions the page daemon's scan asks of it.
/// Implementations are called under an object lock: they must not sleep or lock.
pub trait Policy: Send + Sync {
    /// How many of an object's `resident` pages the inactive queue should hold: the
    /// scan first moves pages from the head of the active queue to the inactive queue
    /// (clearing their referenced bits) until it holds this many or the active pages
    /// run out.
    fn inactive_target(&self, resident: usize) -> usize;
    /// What to do with the inactive page `page`.
    fn judge(&self, page: &Scanned) -> Verdict;
}

/// NetBSD's CLOCK policy: keep a third of the pages inactive; an inactive page
/// referenced since it was deactivated gets a second chance, a clean one is freed, a
/// dirty one is cleaned; busy and wired pages are skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock;

impl Policy for Clock {
    fn inactive_target(&self, resident: usize) -> usize {
        // The reference's default `uvmpd.inactivepct` of 33 %.
        resident / 3
    }

    fn judge(&self, page: &Scanned) -> Verdict {
        if page.busy || page.wired {
            Verdict::Skip
        } else if page.referenced {
            Verdict::Reactivate
        } else if page.dirty {
            Verdict::Clean
        } else {
            Verdict::Free
        }
    }
}
