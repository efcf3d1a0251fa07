//! Interrupts on every CPU: the kernel's own GDT and IDT, the local APIC (timer,
//! spurious vector, EOI), the I/O APIC for device lines, the xv6-style
//! `push_off`/`pop_off` nesting genpager's spin locks mask interrupts through
//! ([`INTERRUPTS`]), and a spin lock that masks them the same way ([`IrqMutex`]).
//!
//! Every vector enters through a 16-byte stub (`isr_stubs` + 16 × vector) that pushes
//! a dummy error code where the CPU pushes none, then the vector, and jumps to one
//! common entry that saves the caller-saved registers and calls [`dispatch`]. The
//! kernel has no SSE (the UEFI target is soft-float), so no vector state is saved.
//!
//! The push_off state and the in-interrupt depth are per CPU ([`percpu`]); the
//! tables (GDT, IDT) are shared, each CPU loads them; device lines go to the boot CPU;
//! the reschedule IPI ([`RESCHED_VECTOR`]) only ends a `hlt`.

use core::arch::{asm, global_asm};
use core::ops::{Deref, DerefMut};
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use genpager::sync::Interrupts;

use crate::arch::{ExitCode, exit_qemu, outb};
use crate::{kprintln, percpu, sched, time};

/// The LAPIC timer's vector.
pub const TIMER_VECTOR: u8 = 0x20;
/// The reschedule IPI's vector: wakes an idle CPU from `hlt` (the handler only EOIs;
/// the idle loop then looks for work).
pub const RESCHED_VECTOR: u8 = 0x21;
/// The first device vector: GSI `n` arrives on `IRQ_BASE + n`.
pub const IRQ_BASE: u8 = 0x30;
/// I/O APIC inputs (GSIs) routable with [`route_irq`].
pub const IRQ_LINES: usize = 24;
/// The LAPIC's spurious-interrupt vector (low nibble all ones, as old APICs need).
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Milliseconds between two timer ticks: each tick may preempt the running thread.
/// 4 ms keeps TCG's overhead low while a spin-waiting test still finishes quickly.
pub const TICK_MS: u32 = 4;

/// The I/O APIC's registers, where QEMU (and OVMF's MADT) put it.
const IOAPIC_BASE: usize = 0xfec0_0000;
/// The local APIC base MSR.
const IA32_APIC_BASE: u32 = 0x1b;
/// The local APIC's ID register (the ID in bits 24-31).
pub const LAPIC_ID: usize = 0x20;
const LAPIC_TPR: usize = 0x80;
const LAPIC_EOI: usize = 0xb0;
const LAPIC_ICR_LOW: usize = 0x300;
const LAPIC_ICR_HIGH: usize = 0x310;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_TIMER_INITIAL: usize = 0x380;
const LAPIC_TIMER_CURRENT: usize = 0x390;
const LAPIC_TIMER_DIVIDE: usize = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

// ---- push_off / pop_off ---------------------------------------------------------------

// The nesting depth and `intena` live in this CPU's [`percpu::Cpu`]; they are read
// only with interrupts masked, when the thread cannot move to another CPU.

/// The CPU's interrupt masking, with xv6's `push_off`/`pop_off` semantics:
/// registered with [`genpager::sync::set_interrupts`].
pub struct PushOff;

/// The one instance.
pub static INTERRUPTS: PushOff = PushOff;

/// Whether RFLAGS.IF is set.
fn enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack; touches nothing else.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
    flags & (1 << 9) != 0
}

/// `cli`. Not `nomem`: it orders the memory accesses around it (a compiler barrier).
fn cli() {
    // SAFETY: clearing IF cannot break memory safety.
    unsafe { asm!("cli", options(nostack)) }
}

/// `sti`. Not `nomem`, as for [`cli`].
fn sti() {
    // SAFETY: setting IF lets handlers run; every vector has one (see `init`).
    unsafe { asm!("sti", options(nostack)) }
}

impl Interrupts for PushOff {
    fn disable(&self) {
        let were_on = enabled();
        cli();
        // Masked: this thread stays on this CPU until the matching `enable`.
        let cpu = percpu::this();
        if cpu.depth.fetch_add(1, Ordering::Relaxed) == 0 {
            cpu.intena.store(were_on, Ordering::Relaxed);
        }
    }

    fn enable(&self) {
        assert!(!enabled(), "pop_off with interrupts on");
        let cpu = percpu::this();
        let depth = cpu.depth.load(Ordering::Relaxed);
        assert!(depth > 0, "pop_off without push_off");
        cpu.depth.store(depth - 1, Ordering::Relaxed);
        if depth == 1 && cpu.intena.load(Ordering::Relaxed) {
            sti();
        }
    }
}

/// The push_off state of the running thread: saved by the context switch before it
/// leaves a thread and restored when the thread runs again (xv6 keeps `intena` in
/// the thread's stack frame across `swtch` the same way), so one thread's masking
/// never leaks into another's. On SMP the thread may resume on another CPU: `restore`
/// writes the state into the CPU it runs on then, whose own state belonged to the
/// thread that left it (and was saved by that thread).
#[derive(Clone, Copy, Debug)]
pub struct Saved {
    depth: usize,
    intena: bool,
}

impl Saved {
    /// What a new thread starts with: the one `disable` the switch into it holds,
    /// with interrupts to come on when the thread undoes it.
    pub const NEW_THREAD: Saved = Saved {
        depth: 1,
        intena: true,
    };
}

/// This CPU's push_off state (call with interrupts masked, around a switch).
pub fn save() -> Saved {
    assert!(!enabled(), "push_off state saved with interrupts on");
    let cpu = percpu::this();
    Saved {
        depth: cpu.depth.load(Ordering::Relaxed),
        intena: cpu.intena.load(Ordering::Relaxed),
    }
}

/// Puts back a state from [`save`] into the CPU the caller runs on now (interrupts
/// masked).
pub fn restore(saved: Saved) {
    assert!(!enabled(), "push_off state restored with interrupts on");
    let cpu = percpu::this();
    cpu.depth.store(saved.depth, Ordering::Relaxed);
    cpu.intena.store(saved.intena, Ordering::Relaxed);
}

/// Interrupts masked while this lives (one `push_off`, undone on drop).
pub struct NoIrq(());

impl NoIrq {
    /// Masks interrupts (nesting).
    pub fn new() -> Self {
        INTERRUPTS.disable();
        NoIrq(())
    }
}

impl Default for NoIrq {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoIrq {
    fn drop(&mut self) {
        INTERRUPTS.enable();
    }
}

/// A spin lock that masks interrupts while held, so a thread holding it is never
/// preempted (a preempted holder would leave a masked spinner on its CPU spinning
/// forever) and an interrupt handler may take it. The spin lock is what makes it
/// exclusive between CPUs; the masking is what makes it safe within one.
pub struct IrqMutex<T>(spin::Mutex<T>);

/// The guard of an [`IrqMutex`]: unlocks, then unmasks.
pub struct IrqGuard<'a, T> {
    // Declared first so it drops first: the lock is released before interrupts can
    // come back on.
    guard: spin::MutexGuard<'a, T>,
    _masked: NoIrq,
}

impl<T> IrqMutex<T> {
    /// A new unlocked lock.
    pub const fn new(value: T) -> Self {
        Self(spin::Mutex::new(value))
    }

    /// Masks interrupts, then takes the lock.
    pub fn lock(&self) -> IrqGuard<'_, T> {
        let masked = NoIrq::new();
        IrqGuard {
            guard: self.0.lock(),
            _masked: masked,
        }
    }
}

impl<T> IrqMutex<T> {
    /// Masks interrupts and takes the lock if it is free; `None` (interrupts as they
    /// were) if it is held.
    pub fn try_lock(&self) -> Option<IrqGuard<'_, T>> {
        let masked = NoIrq::new();
        self.0.try_lock().map(|guard| IrqGuard {
            guard,
            _masked: masked,
        })
    }

    /// Releases the lock without a guard, leaving the push_off state alone.
    ///
    /// # Safety
    ///
    /// The lock must be held, by a guard that will never be dropped or whose owner
    /// handed the lock over to the caller (the scheduler's lock across a switch into a
    /// new thread), and nothing may use the value through that guard afterwards.
    pub unsafe fn force_unlock(&self) {
        // SAFETY: the caller owns the held lock (this function's contract).
        unsafe { self.0.force_unlock() }
    }
}

impl<T> Deref for IrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for IrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// True while running in an interrupt handler on this CPU.
pub fn in_interrupt() -> bool {
    // Masked, so the CPU read is the one the caller runs on.
    let _masked = NoIrq::new();
    percpu::this().irq_depth.load(Ordering::Relaxed) > 0
}

/// Turns interrupts on for the boot thread, once everything is set up.
pub fn enable_now() {
    assert_eq!(
        percpu::this().depth.load(Ordering::Relaxed),
        0,
        "enable_now inside push_off"
    );
    sti();
}

// ---- descriptor tables -----------------------------------------------------------------

/// Null, 64-bit code (selector 0x08), data (0x10). The accessed bits are preset so
/// the CPU never writes to the table (it may sit in a read-only section).
static GDT: [u64; 3] = [0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
const KERNEL_CS: u16 = 0x08;

/// The operand of `lgdt`/`lidt`.
#[repr(C, packed)]
struct TablePointer {
    limit: u16,
    base: u64,
}

/// 256 gates of 16 bytes.
#[repr(C, align(16))]
struct Idt([u64; 512]);

static IDT: spin::Once<Idt> = spin::Once::new();

/// The base and limit of [`GDT`], for a CPU that loads it itself (the AP trampoline).
pub fn gdt() -> (u64, u16) {
    (
        GDT.as_ptr() as u64,
        (core::mem::size_of_val(&GDT) - 1) as u16,
    )
}

/// Loads [`GDT`] and reloads every segment register from it; the GS base (this CPU's
/// [`percpu`] pointer), which loading GS zeroes, is put back.
fn load_gdt() {
    let gs_base = percpu::gs_base();
    let pointer = TablePointer {
        limit: (core::mem::size_of_val(&GDT) - 1) as u16,
        base: GDT.as_ptr() as u64,
    };
    // SAFETY: the GDT is static and holds flat 64-bit code and data descriptors
    // equivalent to the firmware's; the far return reloads CS with the new code
    // selector and execution continues at the next label; interrupts are masked.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, 0x10",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            "mov fs, {tmp:e}",
            "mov gs, {tmp:e}",
            ptr = in(reg) &pointer,
            cs = const KERNEL_CS as u64,
            tmp = out(reg) _,
        )
    }
    // SAFETY: the value read before the reload: this CPU's entry once `install` ran.
    unsafe { percpu::set_gs_base(gs_base) };
}

unsafe extern "sysv64" {
    /// The first of 256 16-byte entry stubs (see the module comment); not callable.
    fn isr_stubs();
}

/// Builds the IDT once (every vector through its stub, interrupt gates: IF cleared on
/// entry) and loads it on this CPU.
pub fn load_idt() {
    let idt = IDT.call_once(|| {
        let mut gates = [0u64; 512];
        let stubs = isr_stubs as *const () as usize as u64;
        for vector in 0..256u64 {
            let handler = stubs + 16 * vector;
            gates[2 * vector as usize] = (handler & 0xffff)
                | (u64::from(KERNEL_CS) << 16)
                | (0x8e << 40)
                | ((handler >> 16) & 0xffff) << 48;
            gates[2 * vector as usize + 1] = handler >> 32;
        }
        Idt(gates)
    });
    let pointer = TablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: idt.0.as_ptr() as u64,
    };
    // SAFETY: the IDT is in a static that lives forever, its gates point at the stubs
    // below, and the code selector is the GDT's.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack)) };
}

global_asm!(
    ".global isr_stubs",
    ".balign 16",
    "isr_stubs:",
    ".set gk_vector, 0",
    ".rept 256",
    ".balign 16",
    // The CPU pushes an error code for these exceptions; for the rest the stub pushes
    // a zero, so every frame looks the same.
    ".if (gk_vector == 8) || (gk_vector == 10) || (gk_vector == 11) || (gk_vector == 12) || (gk_vector == 13) || (gk_vector == 14) || (gk_vector == 17) || (gk_vector == 21) || (gk_vector == 29) || (gk_vector == 30)",
    ".else",
    "pushq $0",
    ".endif",
    "pushq $gk_vector",
    "jmp isr_common",
    ".set gk_vector, gk_vector + 1",
    ".endr",
    "isr_common:",
    "cld",
    "pushq %rax",
    "pushq %rcx",
    "pushq %rdx",
    "pushq %rsi",
    "pushq %rdi",
    "pushq %r8",
    "pushq %r9",
    "pushq %r10",
    "pushq %r11",
    // 5 words of CPU frame + error + vector + 9 registers: 128 bytes on a stack the
    // CPU aligned to 16, so the call below sees the ABI's alignment.
    "movq %rsp, %rdi",
    "call {dispatch}",
    "popq %r11",
    "popq %r10",
    "popq %r9",
    "popq %r8",
    "popq %rdi",
    "popq %rsi",
    "popq %rdx",
    "popq %rcx",
    "popq %rax",
    "addq $16, %rsp",
    "iretq",
    dispatch = sym dispatch,
    options(att_syntax)
);

/// What the entry stub leaves on the stack.
#[repr(C)]
#[derive(Debug)]
struct Frame {
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

/// A device handler for each GSI.
type Handlers = [Option<fn()>; IRQ_LINES];

/// Device handlers by GSI.
static HANDLERS: IrqMutex<Handlers> = IrqMutex::new([None; IRQ_LINES]);
/// Spurious interrupts seen.
static SPURIOUS: AtomicU64 = AtomicU64::new(0);
/// Timer ticks so far (all CPUs).
static TICKS: AtomicU64 = AtomicU64::new(0);
/// Reschedule IPIs received (all CPUs).
static RESCHED_IPIS: AtomicU64 = AtomicU64::new(0);

/// Every vector lands here, interrupts masked (interrupt gates).
extern "sysv64" fn dispatch(frame: &mut Frame) {
    let vector = frame.vector as u8;
    match vector {
        0..=31 => exception(frame),
        TIMER_VECTOR => {
            let cpu = percpu::this();
            cpu.irq_depth.fetch_add(1, Ordering::Relaxed);
            TICKS.fetch_add(1, Ordering::Relaxed);
            sched::tick();
            eoi();
            cpu.irq_depth.fetch_sub(1, Ordering::Relaxed);
            // xv6's yield from the timer interrupt: after the EOI (the next tick can
            // come to whichever thread runs) and outside the handler's depth (the
            // thread switched to is not in an interrupt). Interrupts were on in the
            // interrupted code, so it held no spin lock.
            sched::preempt();
        }
        RESCHED_VECTOR => {
            // Only to end an idle CPU's `hlt`: its idle loop looks for work next.
            RESCHED_IPIS.fetch_add(1, Ordering::Relaxed);
            eoi();
        }
        SPURIOUS_VECTOR => {
            // No EOI for a spurious interrupt.
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
        }
        _ if (IRQ_BASE..IRQ_BASE + IRQ_LINES as u8).contains(&vector) => {
            let cpu = percpu::this();
            cpu.irq_depth.fetch_add(1, Ordering::Relaxed);
            let handler = HANDLERS.lock()[usize::from(vector - IRQ_BASE)];
            match handler {
                Some(handler) => handler(),
                None => kprintln!("genpager kernel: unrouted device vector {vector:#x}"),
            }
            eoi();
            cpu.irq_depth.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {
            kprintln!("genpager kernel: unexpected vector {vector:#x}");
            eoi();
        }
    }
}

/// A CPU exception: report it and end the run (the kernel has no way to recover).
fn exception(frame: &Frame) -> ! {
    const NAMES: [&str; 32] = [
        "#DE divide error",
        "#DB debug",
        "NMI",
        "#BP breakpoint",
        "#OF overflow",
        "#BR bound range",
        "#UD invalid opcode",
        "#NM device not available",
        "#DF double fault",
        "coprocessor segment overrun",
        "#TS invalid TSS",
        "#NP segment not present",
        "#SS stack fault",
        "#GP general protection",
        "#PF page fault",
        "reserved 15",
        "#MF x87 error",
        "#AC alignment check",
        "#MC machine check",
        "#XM SIMD error",
        "#VE virtualization",
        "#CP control protection",
        "reserved 22",
        "reserved 23",
        "reserved 24",
        "reserved 25",
        "reserved 26",
        "reserved 27",
        "#HV hypervisor injection",
        "#VC VMM communication",
        "#SX security",
        "reserved 31",
    ];
    kprintln!();
    kprintln!(
        "genpager kernel: EXCEPTION {} ({}) error {:#x} at rip {:#x} rsp {:#x} rflags {:#x}",
        frame.vector,
        NAMES[frame.vector as usize % 32],
        frame.error,
        frame.rip,
        frame.rsp,
        frame.rflags
    );
    if frame.vector == 14 {
        let cr2: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
        kprintln!("genpager kernel: page fault address (cr2) {cr2:#x}");
    }
    kprintln!("genpager kernel self-test: aborted by a CPU exception");
    exit_qemu(ExitCode::Failure)
}

// ---- local APIC and I/O APIC -------------------------------------------------------------

/// Base of the local APIC's registers (identity mapped by the firmware).
static LAPIC_BASE: AtomicUsize = AtomicUsize::new(0xfee0_0000);
/// LAPIC timer counts (divide by 16) per millisecond, from calibration.
static LAPIC_PER_MS: AtomicU64 = AtomicU64::new(0);

/// Reads a register of this CPU's local APIC.
pub fn lapic_read(register: usize) -> u32 {
    // SAFETY: the local APIC's MMIO page, identity mapped; a 32-bit aligned register.
    unsafe { ptr::read_volatile((LAPIC_BASE.load(Ordering::Relaxed) + register) as *const u32) }
}

/// Writes a register of this CPU's local APIC.
pub fn lapic_write(register: usize, value: u32) {
    // SAFETY: as for `lapic_read`; the kernel owns the local APIC.
    unsafe {
        ptr::write_volatile(
            (LAPIC_BASE.load(Ordering::Relaxed) + register) as *mut u32,
            value,
        )
    }
}

/// Ends the current interrupt at the local APIC.
fn eoi() {
    lapic_write(LAPIC_EOI, 0);
}

fn ioapic_write(register: u32, value: u32) {
    // SAFETY: IOREGSEL and IOWIN of the I/O APIC at its fixed address (identity
    // mapped); callers hold `HANDLERS` with interrupts masked, so the select-then-write
    // pair is not interleaved.
    unsafe {
        ptr::write_volatile(IOAPIC_BASE as *mut u32, register);
        ptr::write_volatile((IOAPIC_BASE + 0x10) as *mut u32, value);
    }
}

/// Routes I/O APIC input `gsi` to the boot CPU as level-triggered, active-high, fixed
/// delivery on vector `IRQ_BASE + gsi`, whose handler calls `handler` and then
/// writes the local APIC's EOI. `handler` runs with interrupts masked and
/// [`in_interrupt`] true; it must acknowledge the device (a level-triggered line
/// still asserted fires again at once).
pub fn route_irq(gsi: u8, handler: fn()) {
    assert!(
        usize::from(gsi) < IRQ_LINES,
        "GSI {gsi} beyond the I/O APIC"
    );
    let mut handlers = HANDLERS.lock();
    handlers[usize::from(gsi)] = Some(handler);
    // Device lines go to the boot CPU, whichever CPU routes them.
    let apic_id = percpu::CPUS[0].apic_id.load(Ordering::Relaxed);
    let register = 0x10 + 2 * u32::from(gsi);
    ioapic_write(register + 1, apic_id << 24);
    // Fixed delivery, physical destination, active high (bit 13 clear), level (bit
    // 15), unmasked (bit 16 clear).
    ioapic_write(register, u32::from(IRQ_BASE + gsi) | 1 << 15);
}

/// Masks I/O APIC input `gsi` again and forgets its handler.
pub fn unroute_irq(gsi: u8) {
    assert!(
        usize::from(gsi) < IRQ_LINES,
        "GSI {gsi} beyond the I/O APIC"
    );
    let mut handlers = HANDLERS.lock();
    handlers[usize::from(gsi)] = None;
    ioapic_write(0x10 + 2 * u32::from(gsi), 1 << 16);
}

/// Raises the vector of `gsi` by software (`int`), as if the line had fired: runs
/// its handler through the same path as a device interrupt (the EOI it writes finds
/// nothing in service and is ignored). For the self-test.
pub fn raise_irq(gsi: u8) {
    assert!(
        usize::from(gsi) < IRQ_LINES,
        "GSI {gsi} beyond the I/O APIC"
    );
    macro_rules! raise {
        ($($line:literal)*) => {
            match gsi {
                $($line => {
                    // SAFETY: a software interrupt to a vector whose gate and stub
                    // `init` installed; the handler returns with `iretq`.
                    unsafe { asm!("int {v}", v = const IRQ_BASE as u32 + $line) }
                })*
                _ => unreachable!(),
            }
        };
    }
    raise!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23);
}

fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading it has no effect.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    }
    u64::from(high) << 32 | u64::from(low)
}

/// Turns this CPU's local APIC on (spurious vector, all priorities accepted).
pub fn enable_lapic() {
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
}

/// Sets up the GDT, the IDT, the 8259s (masked), the local APIC and the time base.
/// Interrupts stay masked; [`start_timer`] and [`enable_now`] come later.
pub fn init() {
    cli();
    load_gdt();
    load_idt();
    for port in [0x21, 0xa1] {
        // SAFETY: the 8259s' data ports: all lines masked; the kernel uses the APICs.
        unsafe { outb(port, 0xff) };
    }
    LAPIC_BASE.store(
        (rdmsr(IA32_APIC_BASE) & 0xf_ffff_f000) as usize,
        Ordering::Relaxed,
    );
    enable_lapic();
    percpu::this()
        .apic_id
        .store(lapic_read(LAPIC_ID) >> 24, Ordering::Relaxed);
    time::calibrate();
    // The LAPIC timer against the (now calibrated) TSC, 10 ms of counting down.
    lapic_write(LAPIC_TIMER_DIVIDE, 0b0011); // divide by 16
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    lapic_write(LAPIC_TIMER_INITIAL, u32::MAX);
    let start = time::now_us();
    while time::now_us() - start < 10_000 {
        core::hint::spin_loop();
    }
    let counted = u32::MAX - lapic_read(LAPIC_TIMER_CURRENT);
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    LAPIC_PER_MS.store(u64::from(counted / 10).max(1), Ordering::Relaxed);
    kprintln!(
        "genpager kernel: TSC {} ticks/us, LAPIC timer {} counts/ms, tick {} ms",
        time::tsc_per_us(),
        counted / 10,
        TICK_MS
    );
}

/// Starts the periodic LAPIC timer (one tick every [`TICK_MS`]).
pub fn start_timer() {
    let count = LAPIC_PER_MS.load(Ordering::Relaxed) * u64::from(TICK_MS);
    lapic_write(LAPIC_TIMER_DIVIDE, 0b0011);
    lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | u32::from(TIMER_VECTOR));
    lapic_write(LAPIC_TIMER_INITIAL, count.min(u64::from(u32::MAX)) as u32);
}

/// Timer ticks so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Sends the reschedule IPI to the CPU with local APIC ID `apic_id` (fixed delivery,
/// physical destination). Call with interrupts masked (the ICR pair is per CPU).
pub fn send_resched(apic_id: u32) {
    lapic_write(LAPIC_ICR_HIGH, apic_id << 24);
    lapic_write(LAPIC_ICR_LOW, u32::from(RESCHED_VECTOR) | 1 << 14);
}

/// Reschedule IPIs received so far.
pub fn resched_ipis() -> u64 {
    RESCHED_IPIS.load(Ordering::Relaxed)
}

/// Spurious interrupts so far.
pub fn spurious() -> u64 {
    SPURIOUS.load(Ordering::Relaxed)
}
