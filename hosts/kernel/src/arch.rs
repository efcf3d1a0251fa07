//! The little x86_64 this kernel needs: port I/O, interrupt masking, and leaving
//! QEMU with a status code.

use core::arch::asm;

/// Writes one byte to an I/O port.
///
/// # Safety
///
/// Port writes reach hardware directly: the caller must own `port` and know what
/// the byte does there.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller owns the port (this function's contract); `out` touches no
    // memory and no stack.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes one 32-bit word to an I/O port.
///
/// # Safety
///
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: as in `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads one byte from an I/O port.
///
/// # Safety
///
/// As for [`outb`]: some device registers change state when read.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller owns the port; `in` touches no memory and no stack.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Masks maskable interrupts on this CPU, right after leaving boot services: the
/// firmware's handlers are no longer ours to run, and ours are not installed yet
/// (`interrupts::init` does that; `interrupts::enable_now` unmasks).
pub fn disable_interrupts() {
    // SAFETY: `cli` only clears IF; masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

/// How the kernel leaves QEMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Every self-test passed: QEMU exits with status `(0x10 << 1) | 1 = 33`.
    Success = 0x10,
    /// Some self-test failed or the kernel panicked: QEMU exits with status 35.
    Failure = 0x11,
}

/// The `isa-debug-exit` device's port (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Ends the QEMU run with `code` through `isa-debug-exit`. If that device is absent
/// (another machine, or QEMU started without it), shuts down through the firmware's
/// runtime services instead, and as a last resort halts forever.
pub fn exit_qemu(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is the isa-debug-exit device QEMU is started with; where it is
    // absent the write goes nowhere.
    unsafe { outl(DEBUG_EXIT_PORT, code as u32) };
    let status = match code {
        ExitCode::Success => uefi::Status::SUCCESS,
        ExitCode::Failure => uefi::Status::ABORTED,
    };
    uefi::runtime::reset(uefi::runtime::ResetType::SHUTDOWN, status, None)
}
