//! [`ImageDevice`]: a genpager [`Strategy`] over an image file, with positioned reads
//! and writes that complete inline or on a worker thread, and counters of what the
//! pager asked of it.

use std::prelude::rust_2024::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use genpager::buf::{Direction, IoRequest};
use genpager::{DEV_BSHIFT, Error, PAGE_SIZE, Strategy};

use crate::disk::{Disk, DiskError};

/// Where an [`ImageDevice`] completes its requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Completion {
    /// In `submit`, before it returns.
    #[default]
    Inline,
    /// On a worker thread, in submission order, after `submit` has returned.
    Worker,
}

/// What the pager asked of the device: counted by [`ImageDevice`] as requests pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Read requests.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests by the number of pages they span (rounded up), reads and writes.
    pub pages_per_request: BTreeMap<u64, u64>,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
    written_bytes: AtomicU64,
    errors: AtomicU64,
    histogram: Mutex<BTreeMap<u64, u64>>,
}

// The device's own locks are std mutexes: this device exists only with `std`, on
// host threads, where genpager's spin locks mask nothing and completions never run
// in an interrupt. None is held across a call into genpager but `submit`'s queue
// lock, which only sends.
struct Worker {
    queue: Mutex<Option<Sender<IoRequest>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A block device over an image file: device block `n` (512-byte units) is byte
/// `n * 512` of the file. The [`Disk`] of the `std` build.
///
/// Only genpager's requests go through [`Strategy::submit`]; the filesystem reads
/// and writes its metadata with [`ImageDevice::read_meta`] and
/// [`ImageDevice::write_meta`] (through [`Disk`]), which do not count as device
/// requests.
pub struct ImageDevice {
    file: Arc<File>,
    writable: bool,
    counters: Arc<Counters>,
    worker: Option<Worker>,
}

impl ImageDevice {
    /// A device over `file`, completing requests per `completion`. `writable` says
    /// whether `file` was opened for writing (write requests fail otherwise).
    pub fn new(file: File, writable: bool, completion: Completion) -> std::io::Result<Self> {
        let file = Arc::new(file);
        let counters = Arc::new(Counters::default());
        let worker = match completion {
            Completion::Inline => None,
            Completion::Worker => {
                let (queue, requests) = mpsc::channel::<IoRequest>();
                let (file, counters) = (file.clone(), counters.clone());
                let thread = std::thread::Builder::new()
                    .name("ext2-image-io".into())
                    .spawn(move || {
                        for request in requests {
                            transfer(&file, writable, &counters, request);
                        }
                    })?;
                Some(Worker {
                    queue: Mutex::new(Some(queue)),
                    thread: Mutex::new(Some(thread)),
                })
            }
        };
        Ok(Self {
            file,
            writable,
            counters,
            worker,
        })
    }

    /// Whether the image was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// How requests complete.
    pub fn completion(&self) -> Completion {
        if self.worker.is_some() {
            Completion::Worker
        } else {
            Completion::Inline
        }
    }

    /// The image length in bytes.
    pub fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads metadata bytes at image byte `offset` (superblock, descriptors,
    /// bitmaps, inodes, directories, indirect blocks). Never file data.
    pub fn read_meta(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes metadata bytes at image byte `offset`. Never file data.
    pub fn write_meta(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        if !self.writable {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "image opened read-only",
            ));
        }
        self.file.write_all_at(buf, offset)
    }

    /// Flushes the image file to stable storage.
    pub fn sync(&self) -> std::io::Result<()> {
        if self.writable {
            self.file.sync_data()
        } else {
            Ok(())
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> DeviceStats {
        let c = &self.counters;
        DeviceStats {
            reads: c.reads.load(Ordering::Relaxed),
            read_bytes: c.read_bytes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            written_bytes: c.written_bytes.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            pages_per_request: c
                .histogram
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        let c = &self.counters;
        for counter in [
            &c.reads,
            &c.read_bytes,
            &c.writes,
            &c.written_bytes,
            &c.errors,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        c.histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for ImageDevice {
    fn drop(&mut self) {
        if let Some(worker) = &self.worker {
            drop(
                worker
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
            let thread = worker
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            // The last reference may go in a completion running on the worker itself;
            // the worker then ends on its own once the queue is closed.
            let current = std::thread::current().id();
            if let Some(thread) = thread.filter(|t| t.thread().id() != current) {
                let _ = thread.join();
            }
        }
    }
}

/// Moves one request's bytes and completes it.
fn transfer(file: &File, writable: bool, counters: &Counters, mut request: IoRequest) {
    let Some(at) = request.block().checked_mul(1 << DEV_BSHIFT) else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        request.complete(Err(Error::Io));
        return;
    };
    let len = request.len();
    if len % (1 << DEV_BSHIFT) != 0 {
        // A disk moves whole sectors; so does this device, to keep the pager honest.
        counters.errors.fetch_add(1, Ordering::Relaxed);
        request.complete(Err(Error::Invalid));
        return;
    }
    let mut bytes = vec![0u8; len];
    let result = match request.direction() {
        Direction::Read => match file.read_exact_at(&mut bytes, at) {
            Ok(()) => {
                counters.reads.fetch_add(1, Ordering::Relaxed);
                counters.read_bytes.fetch_add(len as u64, Ordering::Relaxed);
                request.fill(&bytes)
            }
            Err(_) => Err(Error::Io),
        },
        Direction::Write if !writable => Err(Error::ReadOnly),
        Direction::Write => match request.gather(&mut bytes) {
            Ok(()) => match file.write_all_at(&bytes, at) {
                Ok(()) => {
                    counters.writes.fetch_add(1, Ordering::Relaxed);
                    counters
                        .written_bytes
                        .fetch_add(len as u64, Ordering::Relaxed);
                    Ok(())
                }
                Err(_) => Err(Error::Io),
            },
            Err(err) => Err(err),
        },
    };
    if result.is_ok() {
        let pages = ((request.file_offset() % PAGE_SIZE as u64) as usize + len)
            .div_ceil(PAGE_SIZE)
            .max(1) as u64;
        *counters
            .histogram
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(pages)
            .or_insert(0) += 1;
    } else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    request.complete(result);
}

impl Strategy for ImageDevice {
    fn submit(&self, request: IoRequest) {
        match &self.worker {
            None => transfer(&self.file, self.writable, &self.counters, request),
            Some(worker) => {
                let queue = worker.queue.lock().unwrap_or_else(PoisonError::into_inner);
                match queue.as_ref() {
                    // A send only fails if the worker is gone; the request comes back
                    // and completes with an error.
                    Some(queue) => {
                        if let Err(mpsc::SendError(request)) = queue.send(request) {
                            request.complete(Err(Error::Io));
                        }
                    }
                    None => request.complete(Err(Error::Io)),
                }
            }
        }
    }
}

impl Disk for ImageDevice {
    fn read_meta(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        Ok(ImageDevice::read_meta(self, offset, buf)?)
    }

    fn write_meta(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError> {
        Ok(ImageDevice::write_meta(self, offset, buf)?)
    }

    fn sync(&self) -> Result<(), DiskError> {
        Ok(ImageDevice::sync(self)?)
    }

    /// The image file's length now; 0 if the file's metadata cannot be read (the
    /// filesystem then reports an image too short to hold a superblock).
    fn len(&self) -> u64 {
        ImageDevice::len(self).unwrap_or(0)
    }

    fn writable(&self) -> bool {
        self.writable
    }
}
