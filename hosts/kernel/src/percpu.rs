//! Per-CPU state, found through the GS base.
//!
//! Each CPU's `IA32_GS_BASE` MSR points at its own [`Cpu`] in [`CPUS`], whose first
//! field is the CPU's index, so `mov reg, gs:[0]` names the CPU in one instruction.
//! Why GS rather than the LAPIC ID register: `push_off`/`pop_off` run on every
//! genpager spin lock, and the LAPIC ID is an MMIO read (under TCG a trip through the
//! device emulation, under the big QEMU lock), while a GS-relative load is an ordinary
//! memory access. The kernel never runs user code, so it never `swapgs`es and GS base
//! stays what [`install`] wrote (the GDT reload in `interrupts::init` puts it back:
//! loading GS zeroes the base).
//!
//! The index read is only meaningful while the thread cannot migrate: with
//! interrupts masked (a context switch happens only from a masked state, by the
//! thread itself or by the timer interrupt). Callers read it inside push_off or in an
//! interrupt handler.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// CPUs this kernel can run on (QEMU is started with `-smp 2`).
pub const MAX_CPUS: usize = 2;

const IA32_GS_BASE: u32 = 0xc000_0101;

/// One CPU's state. `repr(C)` with `index` first: `gs:[0]` is the index.
#[repr(C)]
pub struct Cpu {
    /// This CPU's index in [`CPUS`] (0: the boot CPU).
    index: usize,
    /// `push_off` calls not yet undone on this CPU (xv6's `noff`).
    pub depth: AtomicUsize,
    /// Whether interrupts were on at this CPU's outermost `push_off` (xv6's `intena`).
    pub intena: AtomicBool,
    /// Interrupt handlers running on this CPU (0 or 1: handlers never unmask).
    pub irq_depth: AtomicUsize,
    /// Context switches this CPU made.
    pub switches: AtomicU64,
    /// The CPU's local APIC ID (for IPIs).
    pub apic_id: AtomicU32,
    /// Whether the CPU takes part in scheduling.
    pub online: AtomicBool,
}

impl Cpu {
    const fn new(index: usize) -> Cpu {
        Cpu {
            index,
            depth: AtomicUsize::new(0),
            intena: AtomicBool::new(false),
            irq_depth: AtomicUsize::new(0),
            switches: AtomicU64::new(0),
            apic_id: AtomicU32::new(0),
            online: AtomicBool::new(false),
        }
    }
}

/// Every CPU's state, by index.
pub static CPUS: [Cpu; MAX_CPUS] = [Cpu::new(0), Cpu::new(1)];

/// Points this CPU's GS base at `CPUS[index]`. Call first thing on each CPU, with
/// interrupts masked, before any `push_off`.
pub fn install(index: usize) {
    assert!(index < MAX_CPUS, "CPU index {index} beyond MAX_CPUS");
    // SAFETY: it now points at this CPU's entry, a static that lives forever.
    unsafe { set_gs_base(&CPUS[index] as *const Cpu as u64) };
}

/// The GS base as written by [`install`] (for the GDT reload to put it back).
pub fn gs_base() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: reading IA32_GS_BASE has no side effects.
    unsafe {
        asm!("rdmsr", in("ecx") IA32_GS_BASE, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    };
    u64::from(high) << 32 | u64::from(low)
}

/// Writes IA32_GS_BASE: what [`install`] points at this CPU's entry, and what a
/// segment reload (which zeroes it) must put back.
///
/// # Safety
///
/// `base` must be the address of this CPU's entry of `CPUS` (what [`gs_base`] read
/// after [`install`]), or — before [`install`] — anything: only this module's
/// GS-relative reads depend on it, and [`id`] and [`this`] trust it.
pub unsafe fn set_gs_base(base: u64) {
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; writing it changes only what
    // GS-relative accesses reach, which the caller vouches for.
    unsafe {
        asm!(
            "wrmsr",
            in("ecx") IA32_GS_BASE,
            in("eax") base as u32,
            in("edx") (base >> 32) as u32,
            options(nostack, preserves_flags)
        )
    };
}

/// This CPU's index. Stable only while the caller cannot migrate (interrupts masked).
pub fn id() -> usize {
    let index: usize;
    // SAFETY: GS base points at this CPU's `Cpu` (`install` ran first on every CPU),
    // whose first field is its index.
    unsafe { asm!("mov {}, gs:[0]", out(reg) index, options(readonly, nostack, preserves_flags)) };
    index
}

/// This CPU's state (see [`id`] for when it stays this CPU's).
pub fn this() -> &'static Cpu {
    &CPUS[id()]
}

/// Each CPU's context switches so far.
pub fn switches() -> [u64; MAX_CPUS] {
    core::array::from_fn(|index| CPUS[index].switches.load(Ordering::Relaxed))
}
