//! The [`Scheduler`] genpager is given: the kernel's own ([`sched::SCHEDULER`]),
//! counting the sleeps and wake-ups of genpager's waits (a busy page, writes in
//! flight, a synchronous request, the node lock), so the log can tell them from the
//! driver's and the scheduler's own. Only real ones count: a `block` that returns at
//! once on a permit did not sleep, and a `wake` of a thread not asleep woke nobody.

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
    /// Times a genpager wait put its thread to sleep.
    pub fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }

    /// Times genpager woke a sleeping thread.
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Relaxed)
    }
}

impl Scheduler for Counted {
    fn current(&self) -> Token {
        sched::SCHEDULER.current()
    }

    fn block(&self, token: Token) {
        if sched::SCHEDULER.block_slept(token) {
            self.blocks.fetch_add(1, Ordering::Relaxed);
        }
    }

    // May run in an interrupt handler: an atomic add and the scheduler's own
    // interrupt-safe wake, nothing else.
    fn wake(&self, token: Token) {
        if sched::SCHEDULER.wake_sleeper(token) {
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }
}
