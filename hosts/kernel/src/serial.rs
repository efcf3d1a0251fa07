//! COM1, the 16550 UART at port 0x3F8: the kernel's console. QEMU's `-serial stdio`
//! copies it to its standard output.

use core::fmt;

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

/// Prints formatted text to the serial console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::serial::Serial, format_args!($($arg)*));
    }};
}

/// Prints formatted text and a newline to the serial console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => {{
        $crate::kprint!($($arg)*);
        $crate::kprint!("\n");
    }};
}
