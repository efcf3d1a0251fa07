//! PCI bus 0 through the legacy configuration ports (0xCF8/0xCFC), enough to find the
//! virtio block devices QEMU attaches and to hand virtio-drivers a transport for each.
//!
//! OVMF has assigned the BARs and left memory decoding and bus mastering enabled when
//! the kernel leaves boot services, so nothing here programs a BAR.

use alloc::vec::Vec;
use core::arch::asm;

use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};

use crate::arch;
use crate::virtio::DmaHal;

/// The configuration-address port.
const CONFIG_ADDRESS: u16 = 0xcf8;
/// The configuration-data port.
const CONFIG_DATA: u16 = 0xcfc;
/// The virtio vendor ID (Red Hat / Qumranet).
const VIRTIO_VENDOR: u16 = 0x1af4;
/// virtio-blk: transitional (0x1001) and modern-only (0x1042, `disable-legacy=on`).
const VIRTIO_BLK_IDS: [u16; 2] = [0x1001, 0x1042];
/// The configuration register holding Interrupt Line (bits 0-7) and Pin (bits 8-15).
const INTERRUPT_REGISTER: u8 = 0x3c;

/// Legacy port configuration access (mechanism #1). It holds no state: every access
/// writes the address port then touches the data port.
pub struct PortCam;

impl PortCam {
    /// The CONFIG_ADDRESS word selecting `register` of `function`.
    fn address(function: DeviceFunction, register: u8) -> u32 {
        0x8000_0000
            | u32::from(function.bus) << 16
            | u32::from(function.device) << 11
            | u32::from(function.function) << 8
            | u32::from(register & 0xfc)
    }
}

/// Reads one 32-bit word from an I/O port.
///
/// # Safety
///
/// The caller must own `port`; a read may change device state.
unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller owns the port; `in` touches no memory and no stack.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, function: DeviceFunction, register: u8) -> u32 {
        // SAFETY: 0xCF8/0xCFC are the PCI configuration ports, which only this module
        // touches; the kernel runs the probe on one CPU with interrupts masked, so the
        // address/data pair is not interleaved with another access.
        unsafe {
            arch::outl(CONFIG_ADDRESS, Self::address(function, register));
            inl(CONFIG_DATA)
        }
    }

    fn write_word(&mut self, function: DeviceFunction, register: u8, data: u32) {
        // SAFETY: as in `read_word`.
        unsafe {
            arch::outl(CONFIG_ADDRESS, Self::address(function, register));
            arch::outl(CONFIG_DATA, data);
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// One virtio block device found on bus 0.
pub struct BlockFunction {
    /// Its PCI slot (device number).
    pub slot: u8,
    /// Its PCI function number.
    pub function: u8,
    /// Its Interrupt Pin (1 = INTA .. 4 = INTD; 0: none).
    pub pin: u8,
    /// The modern virtio transport over its BARs.
    pub transport: PciTransport,
}

impl BlockFunction {
    /// The I/O APIC input its legacy INTx arrives on, on QEMU's q35 (ICH9 PIRQ E-H):
    /// `20 + (slot + pin - 1) % 4`. The Interrupt Line register (written by OVMF for
    /// the 8259s) is useless there.
    pub fn q35_gsi(&self) -> u8 {
        let pin = self.pin.max(1);
        20 + (self.slot + pin - 1) % 4
    }
}

/// Every virtio-blk function on bus 0, in slot order, each with its transport.
/// Functions whose transport cannot be built (no modern capabilities) are skipped.
pub fn virtio_block_functions() -> Vec<BlockFunction> {
    let mut root = PciRoot::new(PortCam);
    let found: Vec<_> = root
        .enumerate_bus(0)
        .filter(|(_, info)| {
            info.vendor_id == VIRTIO_VENDOR && VIRTIO_BLK_IDS.contains(&info.device_id)
        })
        .map(|(function, _)| function)
        .collect();
    let mut devices = Vec::new();
    for function in found {
        let pin = (root_read(function, INTERRUPT_REGISTER) >> 8) as u8;
        match PciTransport::new::<DmaHal, _>(&mut root, function) {
            Ok(transport) => devices.push(BlockFunction {
                slot: function.device,
                function: function.function,
                pin,
                transport,
            }),
            Err(err) => crate::kprintln!(
                "genpager kernel: pci 00:{:02x}.{}: no virtio transport: {err:?}",
                function.device,
                function.function
            ),
        }
    }
    devices
}

/// Reads a configuration word outside of a [`PciRoot`].
fn root_read(function: DeviceFunction, register: u8) -> u32 {
    PortCam.read_word(function, register)
}
