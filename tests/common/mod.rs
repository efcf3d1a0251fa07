//! Helpers shared by the scenario tests.
#![allow(dead_code)]

use std::sync::Arc;

use genpager::memory::{ChunkPool, Memory};
use genpager::testing::{Layout, LoggedRequest, MemDisk, MemFile, MemFs};
use genpager::{
    Access, DEFAULT_MAX_TRANSFER, DirtyStatus, Fault, GetFlags, PAGE_SIZE, PageCache, PageFlags,
    PageQueue, Vnode,
};

/// `log2` of the page size (12 at the default 4 KiB pages; see the `page-16k` and
/// `page-64k` features): the `fs_bshift` of a filesystem whose blocks are one page.
/// Tests that mean "one block per page" use it, not 12.
pub const PAGE_SHIFT: u32 = genpager::page::PAGE_SHIFT;

/// Deterministic, position-dependent bytes, so a misplaced page shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            ((i / 7) as u8)
                .wrapping_mul(31)
                .wrapping_add(i as u8)
                .wrapping_add(seed)
                | 1
        })
        .collect()
}

/// The maximum transfer of the files made here: the default (64 KiB), but at least four
/// pages, so that a cluster spans several pages at every page size (the default is a
/// single page at 64 KiB pages). The same as the default up to 16 KiB pages.
pub const TEST_MAX_TRANSFER: usize = if DEFAULT_MAX_TRANSFER > 4 * PAGE_SIZE {
    DEFAULT_MAX_TRANSFER
} else {
    4 * PAGE_SIZE
};

/// A disk big enough for a few files of `bytes` each.
pub fn disk_for(bytes: usize) -> MemDisk {
    MemDisk::new(((bytes as u64 * 4) / 512).max(4096) + 1024)
}

/// A file holding `data` on a fresh filesystem, its maximum transfer [`TEST_MAX_TRANSFER`].
pub fn file_with(fs_bshift: u32, layout: Layout, data: &[u8]) -> (MemDisk, Arc<MemFile>) {
    let disk = disk_for(data.len());
    let fs = MemFs::new(disk.clone(), fs_bshift, layout);
    let file = fs.create(data).expect("file fits");
    file.set_max_transfer(TEST_MAX_TRANSFER);
    (disk, file)
}

/// A sparse file: `holes` are logical block numbers. Its maximum transfer is
/// [`TEST_MAX_TRANSFER`].
pub fn sparse_file(fs_bshift: u32, data: &[u8], holes: &[u64]) -> (MemDisk, Arc<MemFile>) {
    let disk = disk_for(data.len());
    let fs = MemFs::new(disk.clone(), fs_bshift, Layout::Contiguous);
    let file = fs
        .create_sparse(data.len() as u64, data, holes)
        .expect("file fits");
    file.set_max_transfer(TEST_MAX_TRANSFER);
    (disk, file)
}

/// A fault as the scenario tests spell it out: `count` pages from `offset`, the caller
/// needing the `center`-th, with `access` and `flags` as given and normal advice.
pub fn fault_of(
    offset: u64,
    count: usize,
    center: usize,
    access: Access,
    flags: GetFlags,
) -> Fault {
    Fault {
        center,
        access,
        flags,
        ..Fault::read(offset, count)
    }
}

/// Flags, dirty status and queue of the resident page at `offset`.
pub fn page(file: &MemFile, offset: u64) -> Option<(PageFlags, DirtyStatus, PageQueue)> {
    let state = file.object().read();
    state
        .cache()
        .lookup(offset)
        .map(|p| (p.flags, p.dirty(), p.queue()))
}

/// Whether any resident page of the file is busy.
pub fn any_busy(file: &MemFile) -> bool {
    let state = file.object().read();
    state.cache().range(0..u64::MAX).any(|p| p.is_busy())
}

/// Resident page offsets.
pub fn resident(file: &MemFile) -> Vec<u64> {
    let state = file.object().read();
    state
        .cache()
        .range(0..u64::MAX)
        .map(|p| p.offset())
        .collect()
}

/// The disk's log as (block, len) pairs.
pub fn blocks_and_lens(log: &[LoggedRequest]) -> Vec<(u64, usize)> {
    log.iter().map(|r| (r.block, r.len)).collect()
}

/// Sector of byte `offset` of the file according to its block table.
pub fn sector_of(file: &MemFile, offset: u64) -> Option<u64> {
    let bshift = file.fs_bshift();
    let table = file.block_table();
    let start = (*table.get((offset >> bshift) as usize)?)?;
    Some(start + ((offset & ((1 << bshift) - 1)) >> 9))
}

/// Pages in `len` bytes.
pub fn pages(len: usize) -> usize {
    len.div_ceil(PAGE_SIZE)
}

/// A heap buffer whose usable part starts at an address that is `skew` bytes past a
/// page boundary (direct I/O memory; `skew` 0 for an aligned one).
pub struct Buffer {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buffer {
    pub fn new(len: usize, skew: usize, fill: u8) -> Self {
        let bytes = vec![fill; len + 2 * PAGE_SIZE];
        let start = bytes.as_ptr().align_offset(PAGE_SIZE) + skew;
        Self { bytes, start, len }
    }

    pub fn aligned(len: usize) -> Self {
        Self::new(len, 0, 0xEE)
    }

    pub fn with(data: &[u8]) -> Self {
        let mut buf = Self::aligned(data.len());
        buf.get_mut().copy_from_slice(data);
        buf
    }

    pub fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    pub fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// How long a scenario may take before a test calls it hung.
pub const HANG: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `f` on its own thread and returns what it returns; fails the test if it has
/// not returned within [`HANG`] (the thread is left behind), and passes a panic on.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    within_for(what, HANG, f)
}

/// [`within`] with its own time limit.
pub fn within_for<T: Send + 'static>(
    what: &str,
    limit: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            let _ = handle.join();
            value
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sent nothing and did not panic"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: hung (no return in {limit:?})")
        }
    }
}

/// A memory domain of its own for one test, over a frame pool of its own (leaked: a
/// domain is a kernel's `static`).
pub fn domain(budget: usize) -> &'static Memory {
    let pool: &'static ChunkPool = Box::leak(Box::new(ChunkPool::new()));
    Box::leak(Box::new(Memory::new(pool, budget)))
}

/// A filesystem of `1 << bshift`-byte blocks whose files count their pages in `memory`.
pub fn fs_in(memory: &'static Memory, bshift: u32, disk: MemDisk) -> Arc<MemFs> {
    let fs = MemFs::new(disk, bshift, Layout::Contiguous);
    fs.set_memory(memory);
    fs
}
