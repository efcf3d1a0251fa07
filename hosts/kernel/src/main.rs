#![no_std]
#![no_main]
#![deny(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]
//! A freestanding x86_64 kernel that hosts genpager and tests it at boot.
//!
//! The firmware (OVMF under QEMU) loads this UEFI application. It takes two regions
//! of pages from the firmware — one for the heap behind `alloc`, one for the page
//! frames of the page cache — leaves boot services for good, masks interrupts, and
//! from then on owns the machine: COM1 for output, its own GDT and IDT, the local
//! and I/O APICs, a periodic timer that preempts kernel threads, its own frame
//! allocator, a RAM disk, a small filesystem, and genpager between them. It runs
//! the self-test,
//! prints `genpager kernel self-test: N passed, M failed` on COM1, and leaves QEMU
//! through the `isa-debug-exit` device (status 33 for success, 35 for failure).

extern crate alloc;

mod arch;
mod cache;
mod disk;
mod frames;
mod fs;
mod heap;
mod interrupts;
mod memory;
mod pci;
mod percpu;
mod ramdisk;
mod review_selftest;
mod sched;
mod selftest;
mod serial;
mod smp;
mod time;
mod virtio;
mod virtio_selftest;
mod waits;
mod workload;

use core::ptr::NonNull;

use genpager::PAGE_SIZE;
use uefi::boot::{AllocateType, MemoryType};
use uefi::mem::memory_map::MemoryMap;

use arch::ExitCode;

/// Pages of the heap: 16 MiB.
const HEAP_PAGES: usize = 4096;
/// Page frames for the page cache: 8 MiB.
const FRAME_PAGES: usize = 2048;

#[uefi::entry]
fn main() -> uefi::Status {
    serial::init();
    kprintln!();
    kprintln!("genpager kernel: loaded by UEFI firmware");
    let heap = take_pages(HEAP_PAGES);
    let frames = take_pages(FRAME_PAGES);
    smp::reserve_page();

    // SAFETY: the kernel holds nothing of the firmware's: no protocol, no pool
    // allocation, no console handle (output goes straight to COM1), so nothing can
    // reach boot-services state once they are gone.
    let map = unsafe { uefi::boot::exit_boot_services(None) };
    arch::disable_interrupts();
    // Before the first push_off (the heap's lock): this is CPU 0.
    percpu::install(0);
    let free_pages: u64 = map
        .entries()
        .filter(|entry| entry.ty == MemoryType::CONVENTIONAL)
        .map(|entry| entry.page_count)
        .sum();
    let free_mib = (free_pages * PAGE_SIZE as u64) >> 20;
    kprintln!("genpager kernel: left boot services ({free_mib} MiB free elsewhere)");

    // SAFETY: `heap` is HEAP_PAGES pages of LOADER_DATA from the firmware, which after
    // ExitBootServices is ours alone; handed to the heap once, before any allocation.
    unsafe { heap::init(heap.as_ptr(), HEAP_PAGES * PAGE_SIZE) };
    // SAFETY: as for the heap: FRAME_PAGES page-aligned pages used only by the frame
    // allocator from now on.
    unsafe { frames::init(frames, FRAME_PAGES) };
    // Before genpager takes any lock or waits: its spin locks mask interrupts
    // through INTERRUPTS, its waits sleep through SCHEDULER.
    genpager::sync::set_interrupts(&interrupts::INTERRUPTS);
    genpager::sync::set_scheduler(&waits::GENPAGER);
    interrupts::init();
    sched::init();
    interrupts::start_timer();
    interrupts::enable_now();
    kprintln!(
        "genpager kernel: interrupts on, preemptive scheduler running ({} ms since calibration)",
        time::now_us() / 1000
    );
    kprintln!(
        "genpager kernel: heap {} MiB at {:p}, {} page frames at {:p}",
        (HEAP_PAGES * PAGE_SIZE) >> 20,
        heap,
        FRAME_PAGES,
        frames
    );

    for disk in virtio::probe_all() {
        kprintln!(
            "genpager kernel: virtio-blk at 00:{:02x}.0, {} KiB, GSI {}",
            disk.slot(),
            disk.capacity_bytes() >> 10,
            disk.gsi()
        );
        // Level-triggered INTx through the I/O APIC: the handler completes the
        // device's finished requests in interrupt context.
        interrupts::route_irq(disk.gsi(), virtio::interrupt_all);
    }

    let started = time::now_us();
    let (passed, failed) = selftest::run();
    kprintln!(
        "genpager kernel: self-test took {} ms: {} switches, {} preemptions, {} sleeps, {} wakes, {} ticks, {} spurious",
        (time::now_us() - started) / 1000,
        sched::switches(),
        sched::preemptions(),
        sched::sleeps(),
        sched::wakes(),
        interrupts::ticks(),
        interrupts::spurious()
    );
    let per_cpu = sched::cpu_switches();
    kprintln!(
        "genpager kernel: CPU 0 ran {} switches, CPU 1 ran {} switches ({} reschedule IPIs)",
        per_cpu[0],
        per_cpu[1],
        interrupts::resched_ipis()
    );
    kprintln!(
        "genpager kernel: {} KiB of heap in use after the tests",
        heap::used() >> 10
    );
    // The evidence that the run exercised a real kernel's paths, on the line before
    // the verdict: requests went to the virtio disks and completed in interrupt
    // context, and threads slept (in genpager's waits among others) and were woken.
    let (requests, in_interrupt) = virtio::probe_all()
        .iter()
        .map(|disk| disk.stats())
        .fold((0, 0), |(r, i), stats| {
            (r + stats.submitted, i + stats.completed_in_interrupt)
        });
    kprintln!(
        "genpager kernel: requests {requests}, completions in interrupt context {in_interrupt}, sleeps {}, wakes {}, genpager sleeps {}, genpager wakes {}",
        sched::sleeps(),
        sched::wakes(),
        waits::GENPAGER.blocks(),
        waits::GENPAGER.wakes()
    );
    kprintln!("genpager kernel self-test: {passed} passed, {failed} failed");
    arch::exit_qemu(if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

/// Takes `count` pages from the firmware (while boot services still run), or ends
/// the run: without its memory the kernel cannot test anything.
fn take_pages(count: usize) -> NonNull<u8> {
    match uefi::boot::allocate_pages(AllocateType::AnyPages, MemoryType::LOADER_DATA, count) {
        Ok(pages) => pages,
        Err(err) => {
            kprintln!("genpager kernel: cannot allocate {count} pages: {err:?}");
            kprintln!("genpager kernel self-test: 0 passed, 1 failed");
            arch::exit_qemu(ExitCode::Failure)
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    kprintln!();
    kprintln!("genpager kernel: PANIC: {info}");
    kprintln!("genpager kernel self-test: aborted by a panic");
    arch::exit_qemu(ExitCode::Failure)
}
