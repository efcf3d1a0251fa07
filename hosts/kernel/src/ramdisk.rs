//! [`RamDisk`]: a block device in kernel memory whose [`Strategy`] completes every
//! request inline, before `submit` returns. It can fail one chosen request on
//! purpose, so the self-test can watch genpager report device errors.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::interrupts::IrqMutex as Mutex;
use genpager::buf::{Direction, IoRequest};
use genpager::{DEV_BSHIFT, Error, Strategy};

/// Bytes in one device sector (genpager's device block, `1 << DEV_BSHIFT`).
pub const SECTOR_SIZE: usize = 1 << DEV_BSHIFT;

/// A RAM disk of 512-byte sectors.
pub struct RamDisk {
    bytes: Mutex<Vec<u8>>,
    /// Fail the next request going this way with [`Error::Io`] (one shot).
    fail_next: Mutex<Option<Direction>>,
    reads: AtomicU32,
    writes: AtomicU32,
}

impl RamDisk {
    /// A zero-filled disk of `sectors` sectors.
    pub fn new(sectors: usize) -> Self {
        Self {
            bytes: Mutex::new(vec![0; sectors * SECTOR_SIZE]),
            fail_next: Mutex::new(None),
            reads: AtomicU32::new(0),
            writes: AtomicU32::new(0),
        }
    }

    /// Makes the next request in `direction` fail with [`Error::Io`] without
    /// transferring anything.
    pub fn fail_next(&self, direction: Direction) {
        *self.fail_next.lock() = Some(direction);
    }

    /// Whether a failure armed by [`RamDisk::fail_next`] is still waiting.
    pub fn failure_armed(&self) -> bool {
        self.fail_next.lock().is_some()
    }

    /// Requests submitted so far in `direction`, failed ones included.
    pub fn requests(&self, direction: Direction) -> u32 {
        match direction {
            Direction::Read => self.reads.load(Ordering::Relaxed),
            Direction::Write => self.writes.load(Ordering::Relaxed),
        }
    }

    /// Copies bytes from byte `at` of the disk, bypassing the pager (what a test
    /// inspects, or a boot loader reads).
    pub fn peek(&self, at: usize, out: &mut [u8]) {
        out.copy_from_slice(&self.bytes.lock()[at..at + out.len()]);
    }

    /// Stores bytes at byte `at` of the disk, bypassing the pager (what `mkfs` does).
    pub fn poke(&self, at: usize, data: &[u8]) {
        self.bytes.lock()[at..at + data.len()].copy_from_slice(data);
    }
}

impl Strategy for RamDisk {
    fn submit(&self, mut request: IoRequest) {
        let direction = request.direction();
        let counter = match direction {
            Direction::Read => &self.reads,
            Direction::Write => &self.writes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let injected = {
            let mut armed = self.fail_next.lock();
            *armed == Some(direction) && armed.take().is_some()
        };
        if injected {
            request.complete(Err(Error::Io));
            return;
        }
        let mut disk = self.bytes.lock();
        let at = request.block() as usize * SECTOR_SIZE;
        let result = match disk.get_mut(at..at + request.len()) {
            None => Err(Error::Io),
            Some(bytes) => match direction {
                Direction::Read => request.fill(bytes),
                Direction::Write => request.gather(bytes),
            },
        };
        // Complete with no lock of ours held: completion wakes waiters and may run
        // the pager's callbacks, which take the object lock.
        drop(disk);
        request.complete(result);
    }
}
