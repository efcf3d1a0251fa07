//! [`VirtioDisk`]: a virtio-blk device as the disk of an ext2 filesystem
//! (`genpager_ext2::Disk`): genpager's requests go straight to the driver's
//! [`Strategy`], and the filesystem's metadata through the driver's synchronous byte
//! transfers, which sleep until the completion interrupt.

use genpager::Strategy;
use genpager::buf::IoRequest;
use genpager::sync::SleepRwLock;
use genpager_ext2::{Disk, DiskError};

use crate::virtio::VirtioBlk;

/// A virtio-blk device under a filesystem.
pub struct VirtioDisk {
    device: &'static VirtioBlk,
    /// Held exclusively across a metadata write: the driver writes whole sectors, so an
    /// unaligned write reads, patches and writes back, and two of them (two files'
    /// inodes in one sector) must not interleave. Shared by reads, which then never
    /// see half of one. A sleeping lock: it is held across I/O.
    sectors: SleepRwLock,
}

impl VirtioDisk {
    /// The filesystem disk over `device`.
    pub fn new(device: &'static VirtioBlk) -> Self {
        Self {
            device,
            sectors: SleepRwLock::new(),
        }
    }
}

impl Strategy for VirtioDisk {
    fn submit(&self, request: IoRequest) {
        self.device.submit(request);
    }
}

impl Disk for VirtioDisk {
    fn read_meta(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let _shared = self.sectors.read();
        self.device
            .read_bytes(offset, buf)
            .map_err(|_| DiskError::Io)
    }

    fn write_meta(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        let _exclusive = self.sectors.write();
        self.device
            .write_bytes(offset, buf)
            .map_err(|_| DiskError::Io)
    }

    fn sync(&self) -> Result<(), DiskError> {
        self.device.flush().map_err(|_| DiskError::Io)
    }

    fn len(&self) -> u64 {
        self.device.capacity_bytes()
    }

    fn writable(&self) -> bool {
        true
    }
}
