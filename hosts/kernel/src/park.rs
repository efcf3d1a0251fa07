//! Waiting, as a kernel with one CPU and no threads does it.
//!
//! genpager sleeps in three places: on a busy page, on the node lock, and on a
//! synchronous request (`biowait`). Here the RAM disk completes every request inline,
//! before `submit` returns, and nothing else runs, so by the time genpager would wait
//! the condition already holds and [`Scheduler::block`] is never reached. If it ever
//! were, only an interrupt could wake it: `block` spins until its permit is set (by a
//! `wake` before or during it), and after a long spell of pauses with no permit it
//! panics, turning a silent single-CPU deadlock into a reported failure.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Once;

use genpager::sync::{Scheduler, Token};

/// Pauses in a row, with no wakeup between, taken as a deadlock.
const DEADLOCK_PAUSES: u64 = 10_000_000;

/// Pre-interrupt stand-in: a function `block` calls on every turn of its spin, so a
/// device whose completions nothing delivers yet (interrupts are masked) is polled
/// while genpager waits for it (the virtio disks' synchronous reads and flushes do
/// reach `block`). Goes away when device interrupts are routed.
static IDLE_POLL: Once<fn()> = Once::new();

/// Registers the function [`Scheduler::block`] polls while it spins (first wins).
pub fn set_idle_poll(poll: fn()) {
    IDLE_POLL.call_once(|| poll);
}

/// The [`Scheduler`] of a single-CPU kernel without threads: the one thread is token 0.
pub struct SingleCpu {
    /// Set by `wake`, consumed by `block` (std's park/unpark permit).
    permit: AtomicBool,
    /// Every `block` call so far.
    blocks: AtomicU64,
}

/// The one instance, registered with [`genpager::sync::set_scheduler`] at boot.
pub static SCHEDULER: SingleCpu = SingleCpu {
    permit: AtomicBool::new(false),
    blocks: AtomicU64::new(0),
};

impl SingleCpu {
    /// How many times genpager has blocked (zero on this kernel, or something waited
    /// for a condition that only another context could have made true).
    pub fn blocks(&self) -> u64 {
        self.blocks.load(Ordering::Relaxed)
    }
}

impl Scheduler for SingleCpu {
    fn current(&self) -> Token {
        Token(0)
    }

    fn block(&self, _token: Token) {
        self.blocks.fetch_add(1, Ordering::Relaxed);
        let mut pauses = 0u64;
        while !self.permit.swap(false, Ordering::Acquire) {
            pauses += 1;
            assert!(
                pauses < DEADLOCK_PAUSES,
                "genpager blocked for {pauses} pauses with nothing else to run: deadlock"
            );
            if let Some(poll) = IDLE_POLL.get() {
                poll();
            }
            core::hint::spin_loop();
        }
    }

    fn wake(&self, _token: Token) {
        self.permit.store(true, Ordering::Release);
    }
}
