//! [`TestDisk`]: the `genpager_ext2::Disk` the tests open filesystems over with
//! `Ext2Fs::with_device` (the route a kernel takes with its own disk): an image in
//! memory that can complete genpager's requests late, newest first, from a thread of
//! its own, and fail or slow its metadata transfers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use genpager::buf::{Direction, IoRequest};
use genpager::{DEV_BSHIFT, Error, Strategy};
use genpager_ext2::{Disk, DiskError};

/// How the test disk misbehaves (`Faults::default()`: not at all).
#[derive(Default)]
pub struct Faults {
    /// Genpager requests are queued and completed by a thread of the disk's own,
    /// newest first, after a short delay.
    pub late: bool,
    /// Metadata transfers left before every one fails (negative: never fail).
    pub meta_left: Option<AtomicI64>,
    /// `write_meta` reads, patches and writes back whole 512-byte sectors, with a
    /// pause between, under a sleeping lock of its own (what the trait asks).
    pub sector_rmw: bool,
    /// Genpager write requests fail with `Error::Io` while set.
    pub fail_data_writes: AtomicBool,
    /// `Disk::writable` answers false.
    pub read_only: bool,
    /// The `write_meta` call of this number (from 0) fails, once; -1: none.
    pub fail_write_meta_at: Option<AtomicI64>,
    pub write_meta_calls: AtomicI64,
    /// `read_meta` sleeps this many microseconds first (widens lookup-to-table races).
    pub slow_meta_reads_us: u64,
}

/// A disk in memory for `Ext2Fs::with_device`: genpager's requests and the
/// filesystem's metadata transfers both land in one `Vec<u8>`, misbehaving as its
/// [`Faults`] say. Counts what it was asked.
pub struct TestDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// How it misbehaves.
    pub faults: Faults,
    queue: Arc<(Mutex<VecDeque<IoRequest>>, Condvar)>,
    stop: Arc<AtomicBool>,
    rmw: Mutex<()>,
    /// Genpager requests submitted.
    pub requests: AtomicU64,
    /// Metadata reads and writes asked for.
    pub meta_reads: AtomicU64,
    pub meta_writes: AtomicU64,
}

fn range(len_total: usize, offset: u64, len: usize) -> Result<std::ops::Range<usize>, DiskError> {
    let start = usize::try_from(offset).map_err(|_| DiskError::Io)?;
    let end = start.checked_add(len).ok_or(DiskError::Io)?;
    if end > len_total {
        return Err(DiskError::OutOfRange { offset, len });
    }
    Ok(start..end)
}

fn serve(bytes: &Mutex<Vec<u8>>, mut request: IoRequest) {
    let len = request.len();
    let Some(at) = request.block().checked_mul(1 << DEV_BSHIFT) else {
        request.complete(Err(Error::Io));
        return;
    };
    let mut disk = bytes.lock().unwrap_or_else(PoisonError::into_inner);
    let Ok(r) = range(disk.len(), at, len) else {
        drop(disk);
        request.complete(Err(Error::Io));
        return;
    };
    let result = match request.direction() {
        Direction::Read => {
            let copy = disk[r].to_vec();
            drop(disk);
            request.fill(&copy)
        }
        Direction::Write => {
            let mut copy = vec![0u8; len];
            let result = request.gather(&mut copy);
            if result.is_ok() {
                disk[r].copy_from_slice(&copy);
            }
            drop(disk);
            result
        }
    };
    request.complete(result);
}

impl TestDisk {
    /// A disk over `bytes`, misbehaving as `faults` say.
    pub fn new(bytes: Arc<Mutex<Vec<u8>>>, faults: Faults) -> Self {
        let queue: Arc<(Mutex<VecDeque<IoRequest>>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        if faults.late {
            let queue = queue.clone();
            let stop = stop.clone();
            let bytes = bytes.clone();
            std::thread::spawn(move || {
                let (lock, cvar) = &*queue;
                loop {
                    let mut q = lock.lock().unwrap();
                    while q.is_empty() && !stop.load(Ordering::Relaxed) {
                        q = cvar.wait_timeout(q, Duration::from_millis(50)).unwrap().0;
                    }
                    if q.is_empty() {
                        return;
                    }
                    drop(q);
                    // Let more requests pile up, then complete newest first.
                    std::thread::sleep(Duration::from_micros(300));
                    let batch: Vec<IoRequest> = lock.lock().unwrap().drain(..).rev().collect();
                    for request in batch {
                        serve(&bytes, request);
                    }
                }
            });
        }
        Self {
            bytes,
            faults,
            queue,
            stop,
            rmw: Mutex::new(()),
            requests: AtomicU64::new(0),
            meta_reads: AtomicU64::new(0),
            meta_writes: AtomicU64::new(0),
        }
    }

    fn charge_meta(&self) -> Result<(), DiskError> {
        if let Some(left) = &self.faults.meta_left
            && left.fetch_sub(1, Ordering::SeqCst) <= 0
        {
            return Err(DiskError::Io);
        }
        Ok(())
    }
}

impl Drop for TestDisk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.queue.1.notify_all();
    }
}

impl Strategy for TestDisk {
    fn submit(&self, request: IoRequest) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.faults.fail_data_writes.load(Ordering::SeqCst)
            && request.direction() == Direction::Write
        {
            request.complete(Err(Error::Io));
            return;
        }
        if self.faults.late {
            let (lock, cvar) = &*self.queue;
            lock.lock().unwrap().push_back(request);
            cvar.notify_one();
        } else {
            serve(&self.bytes, request);
        }
    }
}

impl Disk for TestDisk {
    fn read_meta(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.meta_reads.fetch_add(1, Ordering::Relaxed);
        self.charge_meta()?;
        if self.faults.slow_meta_reads_us > 0 {
            std::thread::sleep(Duration::from_micros(self.faults.slow_meta_reads_us));
        }
        let disk = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        let r = range(disk.len(), offset, buf.len())?;
        buf.copy_from_slice(&disk[r]);
        Ok(())
    }

    fn write_meta(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        if self.faults.read_only {
            panic!("write_meta on a read-only disk");
        }
        self.meta_writes.fetch_add(1, Ordering::Relaxed);
        self.charge_meta()?;
        let call = self.faults.write_meta_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(at) = &self.faults.fail_write_meta_at
            && at.load(Ordering::SeqCst) == call
        {
            return Err(DiskError::Io);
        }
        if !self.faults.sector_rmw {
            let mut disk = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
            let r = range(disk.len(), offset, buf.len())?;
            disk[r].copy_from_slice(buf);
            return Ok(());
        }
        // Sector read-modify-write, serialized by the disk's own lock (the trait's
        // promise to ext2), with a pause between read and write-back.
        let _rmw = self.rmw.lock().unwrap_or_else(PoisonError::into_inner);
        let first = offset / 512 * 512;
        let end = (offset + buf.len() as u64).div_ceil(512) * 512;
        let mut sectors = {
            let disk = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
            let r = range(disk.len(), first, (end - first) as usize)?;
            disk[r].to_vec()
        };
        std::thread::sleep(Duration::from_micros(50));
        let at = (offset - first) as usize;
        sectors[at..at + buf.len()].copy_from_slice(buf);
        let mut disk = self.bytes.lock().unwrap_or_else(PoisonError::into_inner);
        disk[first as usize..end as usize].copy_from_slice(&sectors);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64
    }

    fn writable(&self) -> bool {
        !self.faults.read_only
    }
}
