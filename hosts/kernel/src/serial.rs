//! COM1, the 16550 UART at port 0x3F8: the kernel's console. QEMU's `-serial stdio`
//! copies it to its standard output.

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::{inb, outb};

const COM1: u16 = 0x3f8;
/// Line status register: bit 5 set when the transmit holding register is empty.
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 1 << 5;

/// Programs COM1 for 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on,
/// interrupts off (the kernel polls).
pub fn init() {
    const SETUP: [(u16, u8); 7] = [
        (COM1 + 1, 0x00), // no interrupts
        (COM1 + 3, 0x80), // DLAB on: the next two writes set the divisor
        (COM1, 0x01),     // divisor 1 = 115200 baud
        (COM1 + 1, 0x00),
        (COM1 + 3, 0x03), // DLAB off, 8N1
        (COM1 + 2, 0xc7), // FIFOs on and cleared, 14-byte threshold
        (COM1 + 4, 0x03), // DTR, RTS
    ];
    for (port, value) in SETUP {
        // SAFETY: these are COM1's registers, which this kernel owns (the firmware
        // only shares it as a console, and re-programming it the same way is harmless).
        unsafe { outb(port, value) };
    }
}

/// Sends one byte, waiting for room in the transmitter.
fn send(byte: u8) {
    // Bounded, so a missing UART cannot hang the kernel.
    for _ in 0..100_000 {
        // SAFETY: reading COM1's line status register has no side effects.
        if unsafe { inb(LINE_STATUS) } & TRANSMIT_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: COM1's transmit register; the kernel owns the port.
    unsafe { outb(COM1, byte) };
}

/// The serial console as a [`fmt::Write`] sink; `\n` goes out as `\r\n`.
pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            if byte == b'\n' {
                send(b'\r');
            }
            send(byte);
        }
        Ok(())
    }
}

/// Taken around each print, so two CPUs' lines do not interleave.
static LOCK: AtomicBool = AtomicBool::new(false);

/// Writes `args` to the console under [`LOCK`], with interrupts masked (a handler's
/// print on this CPU cannot find the lock held under it) by saving and restoring
/// RFLAGS.IF directly rather than through push_off: this works before the per-CPU
/// state exists and from the exception and panic paths. The wait for the lock is
/// bounded, so a CPU that died holding it (a panic mid-print) cannot silence the rest.
pub fn print(args: fmt::Arguments<'_>) {
    let flags: u64;
    // SAFETY: saves RFLAGS through the stack and masks interrupts; IF is restored
    // below to what it was.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags) };
    let mut locked = false;
    for _ in 0..20_000_000u32 {
        if LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            locked = true;
            break;
        }
        core::hint::spin_loop();
    }
    let _ = fmt::Write::write_fmt(&mut Serial, args);
    if locked {
        LOCK.store(false, Ordering::Release);
    }
    if flags & (1 << 9) != 0 {
        // SAFETY: interrupts were on when this function was called.
        unsafe { asm!("sti", options(nostack)) };
    }
}

/// Prints formatted text to the serial console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => {{
        $crate::serial::print(format_args!($($arg)*));
    }};
}

/// Prints formatted text and a newline to the serial console (one locked write).
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => {{
        $crate::serial::print(format_args!("{}\n", format_args!($($arg)*)));
    }};
}
