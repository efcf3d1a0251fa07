//! Waiting, as a kernel with one CPU and no threads does it.
//!
//! genpager sleeps in three places: on a busy page, on the node lock, and on a
//! synchronous request (`biowait`). Here the RAM disk completes every request inline,
//! before `submit` returns, and nothing else runs, so by the time genpager would wait
//! the condition already holds and [`Park::park`] is never reached. If it ever were,
//! no other context could wake it: `park` just pauses the CPU, and after a long
//! spell of pauses with no `unpark_all` it panics, turning a silent single-CPU
//! deadlock into a reported failure. `unpark_all` has nobody to wake.

use core::sync::atomic::{AtomicU64, Ordering};

use genpager::sync::Park;

/// Pauses in a row, with no wakeup between, taken as a deadlock.
const DEADLOCK_PAUSES: u64 = 10_000_000;

/// The [`Park`] hook of a single-CPU kernel without threads.
pub struct SingleCpuPark {
    /// Every `park` call so far.
    parks: AtomicU64,
    /// `park` calls since the last `unpark_all`.
    since_wakeup: AtomicU64,
}

/// The one instance, registered with [`genpager::sync::set_park`] at boot.
pub static PARK: SingleCpuPark = SingleCpuPark {
    parks: AtomicU64::new(0),
    since_wakeup: AtomicU64::new(0),
};

impl SingleCpuPark {
    /// How many times genpager has parked (zero on this kernel, or something waited
    /// for a condition that only another context could have made true).
    pub fn parks(&self) -> u64 {
        self.parks.load(Ordering::Relaxed)
    }
}

impl Park for SingleCpuPark {
    fn park(&self) {
        self.parks.fetch_add(1, Ordering::Relaxed);
        let waited = self.since_wakeup.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(
            waited < DEADLOCK_PAUSES,
            "genpager parked {waited} times with nothing else to run: deadlock"
        );
        core::hint::spin_loop();
    }

    fn unpark_all(&self) {
        self.since_wakeup.store(0, Ordering::Relaxed);
    }
}
