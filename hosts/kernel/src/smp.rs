//! A second CPU, started with INIT-SIPI (the recipe in KERNEL-NOTES).
//!
//! A page below 1 MiB, reserved before boot services end, receives a trampoline
//! that goes from real mode straight to long mode with the boot CPU's page tables,
//! CR4, CR0 and EFER (without LMA), loads the kernel's GDT, switches to a stack from
//! the heap and calls [`ap_main`].
//!
//! Once in Rust the application processor (AP) points its GS base at its per-CPU
//! state ([`percpu`]), loads the IDT, turns its local APIC on with the same periodic
//! timer as the boot CPU (the calibration is shared), and becomes CPU 1's idle
//! thread ([`sched::run_ap`]): from then on it runs the kernel's threads like the boot
//! CPU. Device lines stay routed to the boot CPU.

use alloc::vec;
use core::arch::{asm, global_asm};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use uefi::boot::{AllocateType, MemoryType};

use crate::interrupts::{self, LAPIC_ID, NoIrq, lapic_read, lapic_write};
use crate::{percpu, sched, time};

/// Bytes of the AP's stack: its idle thread's, where interrupts taken in the idle
/// loop run too.
const AP_STACK: usize = 64 * 1024;
/// The AP's per-CPU index.
const AP_CPU: usize = 1;
const LAPIC_ICR_LOW: usize = 0x300;
const LAPIC_ICR_HIGH: usize = 0x310;
/// ICR: destination shorthand "all excluding self", level assert.
const ICR_ALL_BUT_SELF: u32 = 0b11 << 18 | 1 << 14;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_PENDING: u32 = 1 << 12;

/// The trampoline page (0: none).
static PAGE: AtomicU64 = AtomicU64::new(0);
/// Set by the AP once it runs Rust code.
static ALIVE: AtomicBool = AtomicBool::new(false);
/// The AP's local APIC ID.
static AP_ID: AtomicU32 = AtomicU32::new(u32::MAX);

/// Reserves the trampoline page: executable (LOADER_CODE: OVMF maps LOADER_DATA
/// no-execute) and below 1 MiB (a SIPI vector names a page there). Call before
/// leaving boot services; without the page, [`start`] reports that no AP started.
pub fn reserve_page() {
    if let Ok(page) = uefi::boot::allocate_pages(
        AllocateType::MaxAddress(0x9_ffff),
        MemoryType::LOADER_CODE,
        1,
    ) {
        PAGE.store(page.as_ptr() as u64, Ordering::Relaxed);
    }
}

global_asm!(
    ".global ap_tramp_start",
    ".global ap_tramp_end",
    ".global ap_gdtr",
    ".global ap_far",
    ".global ap_cr3",
    ".global ap_cr4",
    ".global ap_cr0",
    ".global ap_efer",
    ".global ap_stack",
    ".global ap_entry",
    ".balign 16",
    "ap_tramp_start:",
    ".code16",
    "cli",
    "cld",
    // CS is the page's segment (SIPI vector << 8): the data below is DS-relative.
    "movw %cs, %ax",
    "movw %ax, %ds",
    "lgdtl (ap_gdtr - ap_tramp_start)",
    "movl (ap_cr4 - ap_tramp_start), %eax",
    "movl %eax, %cr4",
    "movl (ap_cr3 - ap_tramp_start), %eax",
    "movl %eax, %cr3",
    "movl $0xc0000080, %ecx",
    "movl (ap_efer - ap_tramp_start), %eax",
    "xorl %edx, %edx",
    "wrmsr",
    // PE and PG at once: with EFER.LME set this enters long mode (compatibility
    // mode until the far jump loads the 64-bit code segment).
    "movl (ap_cr0 - ap_tramp_start), %eax",
    "movl %eax, %cr0",
    "ljmpl *(ap_far - ap_tramp_start)",
    ".code64",
    "ap_long:",
    "movw $0x10, %ax",
    "movw %ax, %ds",
    "movw %ax, %es",
    "movw %ax, %ss",
    "movw %ax, %fs",
    "movw %ax, %gs",
    "movq ap_stack(%rip), %rsp",
    "movq ap_entry(%rip), %rax",
    "callq *%rax",
    "ud2",
    ".balign 8",
    "ap_gdtr: .word 0",
    ".long 0",
    ".word 0",
    // Far pointer: offset (patched: page + this offset), selector 0x08.
    "ap_far: .long ap_long - ap_tramp_start",
    ".word 0x08",
    ".word 0",
    "ap_cr3: .long 0",
    "ap_cr4: .long 0",
    "ap_cr0: .long 0",
    "ap_efer: .long 0",
    "ap_stack: .quad 0",
    "ap_entry: .quad 0",
    "ap_tramp_end:",
    options(att_syntax)
);

unsafe extern "sysv64" {
    // Labels in the trampoline; only their addresses are used.
    fn ap_tramp_start();
    fn ap_tramp_end();
    fn ap_gdtr();
    fn ap_far();
    fn ap_cr3();
    fn ap_cr4();
    fn ap_cr0();
    fn ap_efer();
    fn ap_stack();
    fn ap_entry();
}

/// Where the AP enters Rust, on its own stack, interrupts masked.
extern "sysv64" fn ap_main() -> ! {
    // First: every push_off (any lock) finds its CPU through GS.
    percpu::install(AP_CPU);
    interrupts::load_idt();
    interrupts::enable_lapic();
    let apic_id = lapic_read(LAPIC_ID) >> 24;
    percpu::CPUS[AP_CPU]
        .apic_id
        .store(apic_id, Ordering::Relaxed);
    AP_ID.store(apic_id, Ordering::Relaxed);
    interrupts::start_timer();
    sched::run_ap(AP_CPU, "idle-1", || ALIVE.store(true, Ordering::Release))
}

fn read_cr(which: u8) -> u64 {
    let value: u64;
    // SAFETY: reading a control register has no side effects.
    unsafe {
        match which {
            0 => asm!("mov {}, cr0", out(reg) value, options(nomem, nostack, preserves_flags)),
            3 => asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)),
            _ => asm!("mov {}, cr4", out(reg) value, options(nomem, nostack, preserves_flags)),
        }
    }
    value
}

fn read_efer() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: EFER exists on every x86_64 CPU; reading it has no effect.
    unsafe {
        asm!("rdmsr", in("ecx") 0xc000_0080u32, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags))
    }
    u64::from(high) << 32 | u64::from(low)
}

/// Sends an IPI to every other CPU and waits until the local APIC has sent it.
fn send_ipi(command: u32) {
    // The ICR pair must not be interleaved with a reschedule IPI from a handler.
    let _masked = NoIrq::new();
    lapic_write(LAPIC_ICR_HIGH, 0);
    lapic_write(LAPIC_ICR_LOW, ICR_ALL_BUT_SELF | command);
    let start = time::now_us();
    while lapic_read(LAPIC_ICR_LOW) & ICR_PENDING != 0 && time::now_us() - start < 10_000 {
        core::hint::spin_loop();
    }
}

/// Copies the trampoline, fills in its data and starts the other CPU with INIT, a
/// 10 ms sleep and up to two SIPIs. Returns the AP's local APIC ID once it runs
/// Rust code. Call from a thread, with interrupts on (it sleeps).
pub fn start() -> Result<u32, &'static str> {
    let page = PAGE.load(Ordering::Relaxed);
    if page == 0 {
        return Err("no trampoline page below 1 MiB");
    }
    let (gdt_base, gdt_limit) = interrupts::gdt();
    let cr3 = read_cr(3);
    if cr3 >> 32 != 0 || gdt_base >> 32 != 0 {
        return Err("page tables or GDT above 4 GiB: unreachable from real mode");
    }
    let start = ap_tramp_start as *const () as usize;
    let length = ap_tramp_end as *const () as usize - start;
    assert!(length <= 4096, "trampoline of {length} bytes");
    let stack = vec![0u8; AP_STACK].leak();
    let stack_top = (stack.as_mut_ptr() as usize + AP_STACK) & !15;
    let field =
        |label: unsafe extern "sysv64" fn()| page as usize + (label as *const () as usize - start);
    // SAFETY: `page` is a page of LOADER_CODE the firmware gave us (identity mapped,
    // executable, ours since boot services ended) and nothing else uses it; the
    // trampoline fits (asserted); every field lies inside the copied bytes, and is
    // written with an unaligned write.
    unsafe {
        ptr::copy_nonoverlapping(start as *const u8, page as *mut u8, length);
        ptr::write_unaligned(field(ap_gdtr) as *mut u16, gdt_limit);
        ptr::write_unaligned((field(ap_gdtr) + 2) as *mut u32, gdt_base as u32);
        let far = field(ap_far) as *mut u32;
        ptr::write_unaligned(far, ptr::read_unaligned(far) + page as u32);
        ptr::write_unaligned(field(ap_cr3) as *mut u32, cr3 as u32);
        ptr::write_unaligned(field(ap_cr4) as *mut u32, read_cr(4) as u32);
        ptr::write_unaligned(field(ap_cr0) as *mut u32, read_cr(0) as u32);
        // LMA is the CPU's to set; LME, NXE and the rest as on this CPU.
        ptr::write_unaligned(field(ap_efer) as *mut u32, read_efer() as u32 & !(1 << 10));
        ptr::write_unaligned(field(ap_stack) as *mut u64, stack_top as u64);
        ptr::write_unaligned(field(ap_entry) as *mut u64, ap_main as *const () as u64);
    }
    send_ipi(ICR_INIT);
    sched::sleep_us(10_000);
    for _ in 0..2 {
        send_ipi(ICR_STARTUP | (page >> 12) as u32);
        let sent = time::now_us();
        while time::now_us() - sent < 100_000 {
            if ALIVE.load(Ordering::Acquire) {
                return Ok(AP_ID.load(Ordering::Relaxed));
            }
            sched::yield_now();
        }
    }
    Err("the AP never reached Rust")
}
