//! Time since boot from the TSC, calibrated once against PIT channel 2 (the PC
//! speaker channel, which can be polled without interrupts: its gate and output show
//! in port 0x61).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{inb, outb};

/// The PIT's input clock.
const PIT_HZ: u64 = 1_193_182;
/// The calibration window: 10 ms.
const WINDOW_MS: u64 = 10;
/// Used if the PIT never answers (QEMU's measured value, see KERNEL-NOTES).
const FALLBACK_PER_US: u64 = 2600;

/// TSC ticks per millisecond (0 before [`calibrate`]).
static TSC_PER_MS: AtomicU64 = AtomicU64::new(0);
/// The TSC at calibration: time zero.
static TSC_BASE: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: `rdtsc` only reads the counter (CR4.TSD is clear in ring 0 anyway).
    unsafe {
        asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    u64::from(high) << 32 | u64::from(low)
}

/// Measures the TSC against a 10 ms one-shot count of PIT channel 2. Call once, with
/// interrupts masked, before [`now_us`].
pub fn calibrate() {
    let count = PIT_HZ * WINDOW_MS / 1000;
    // SAFETY: ports 0x61 (speaker gate) and 0x42/0x43 (PIT channel 2) belong to the
    // kernel; channel 2 drives nothing but the silent speaker (its enable bit is kept
    // clear).
    let ticks = unsafe {
        let gate = inb(0x61);
        outb(0x61, gate & !0x03); // gate low: channel 2 holds
        outb(0x43, 0b1011_0000); // channel 2, low then high byte, mode 0, binary
        outb(0x42, count as u8);
        outb(0x42, (count >> 8) as u8);
        let start = rdtsc();
        outb(0x61, (gate & !0x02) | 0x01); // gate high: counting starts
        let mut polls = 0u64;
        while inb(0x61) & 0x20 == 0 && polls < 50_000_000 {
            polls += 1;
        }
        let end = rdtsc();
        outb(0x61, gate & !0x03);
        if polls >= 50_000_000 {
            None
        } else {
            Some(end - start)
        }
    };
    let per_ms = ticks.map_or(FALLBACK_PER_US * 1000, |ticks| ticks / WINDOW_MS);
    TSC_PER_MS.store(per_ms.max(1), Ordering::Relaxed);
    TSC_BASE.store(rdtsc(), Ordering::Relaxed);
}

/// The latest time [`now_us`] returned, on any CPU.
static LATEST_US: AtomicU64 = AtomicU64::new(0);

/// Microseconds since [`calibrate`]. Never less than a value it returned before, on
/// any CPU: the CPUs' TSCs may disagree a little, and a thread that moves between
/// CPUs computes `now_us() - earlier` (an underflow would panic).
pub fn now_us() -> u64 {
    let per_ms = TSC_PER_MS.load(Ordering::Relaxed).max(1);
    let elapsed = rdtsc().saturating_sub(TSC_BASE.load(Ordering::Relaxed));
    let now = (u128::from(elapsed) * 1000 / u128::from(per_ms)) as u64;
    LATEST_US.fetch_max(now, Ordering::Relaxed).max(now)
}

/// TSC ticks per microsecond, as calibrated.
pub fn tsc_per_us() -> u64 {
    TSC_PER_MS.load(Ordering::Relaxed) / 1000
}
