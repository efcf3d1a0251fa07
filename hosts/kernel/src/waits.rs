//! The [`Scheduler`] genpager is given: the kernel's own ([`sched::SCHEDULER`]),
//! counting the blocks and wakes that come from genpager's waits (a busy page, writes
//! in flight, a synchronous request, the node lock), so the log can tell them from the
//! driver's and the scheduler's own sleeps.

use core::sync::atomic::{AtomicU64, Ordering};

use genpager::sync::{Scheduler, Token};

use crate::sched;

/// The kernel scheduler, counted.
pub struct Counted {
    blocks: AtomicU64,
    wakes: AtomicU64,
}

/// The instance registered with `genpager::sync::set_scheduler`.
pub static GENPAGER: Counted = Counted {
    blocks: AtomicU64::new(0),
    wakes: AtomicU64::new(0),
};

impl Counted {
    /// Times a genpager wait blocked its thread.
    pub fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }

    /// Times genpager woke a waiting thread.
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }
}

impl Scheduler for Counted {
    fn current(&self) -> Token {
        sched::SCHEDULER.current()
    }

    fn block(&self, token: Token) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
        sched::SCHEDULER.block(token);
    }

    // May run in an interrupt handler: an atomic add and the scheduler's own
    // interrupt-safe wake, nothing else.
    fn wake(&self, token: Token) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        sched::SCHEDULER.wake(token);
    }
}
