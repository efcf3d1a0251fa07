//! A naive vnode pager: the baseline a hobby kernel writes by hand (issue 8), for
//! `examples/perf_report.rs` to measure genpager against.
//!
//! - The page cache is a `BTreeMap` from page index to a frame and a dirty bit.
//!   Frames are page aligned, as a kernel's page allocator hands them out (and as
//!   genpager's are), carved out of chunks of 64 the pager owns. Freed frames go on a
//!   free list and are reused, as a kernel's page allocator would.
//! - A page fault asks the filesystem's [`BlockMap::bmap`] for its one block and
//!   moves that one page from the device: one bmap and one device request per page,
//!   no clustering, no read-ahead, the `run` of the mapping ignored.
//! - Writeback walks every resident page in offset order and writes each dirty one
//!   with its own bmap and its own request.
//! - Direct I/O moves the caller's buffer a page at a time, one bmap and one request
//!   per page.
//!
//! How it reaches the device: genpager's `IoRequest` can only be built inside the
//! crate, so nothing outside it can call [`Strategy::submit`](genpager::Strategy).
//! The naive pager therefore moves each page with [`MemDisk::read_request`] /
//! [`MemDisk::write_request`]: one synchronous request each, which the disk logs,
//! counts, costs and transfers through the same code and locks as an inline
//! `submit` of genpager's (so both pagers pay the same device bookkeeping per request;
//! with `read_raw`, which bypasses it, the naive pager skipped 50-170 ns per page
//! that genpager paid). It also keeps its own count, one request per page costed with
//! the disk's own [`LatencyModel::cost_ns`], read from [`NaivePager::stats`] (the
//! report checks that it agrees with `MemDisk::stats`).
//!
//! Only filesystems whose block is one page (`fs_bshift == PAGE_SHIFT`) are supported, and it
//! never allocates blocks: a write-back over a hole fails.

use std::collections::BTreeMap;
use std::ptr::NonNull;

use genpager::page::PAGE_SHIFT;
use genpager::testing::{LatencyModel, MemDisk};
use genpager::{BlockMap, Error, PAGE_SIZE, Result};

/// The bytes of one page frame, page aligned like genpager's frames and the disk
/// image. A plain `Box<[u8; PAGE_SIZE]>` starts 16 bytes into its allocation, at an
/// offset that varies from frame to frame; on this project's AMD EPYC machine a 4 KiB
/// copy runs 3-6 times slower or not depending on such offsets, so the naive pager's
/// copies were faster or slower than genpager's for where its heap put each frame, not
/// for anything it does. (A `Box` of this type each would do, but glibc's aligned
/// allocation spaces such boxes 8 KiB apart: twice the memory for the million-page
/// flush row.) `align` takes a literal only, hence one attribute per page size.
#[cfg_attr(
    not(any(feature = "page-16k", feature = "page-64k")),
    repr(C, align(4096))
)]
#[cfg_attr(feature = "page-16k", repr(C, align(16384)))]
#[cfg_attr(feature = "page-64k", repr(C, align(65536)))]
pub struct PageBytes(pub [u8; PAGE_SIZE]);

const _: () = assert!(core::mem::align_of::<PageBytes>() == PAGE_SIZE);

/// One page frame: a handle to a [`PageBytes`] in its pager's arena, which outlives it
/// (a frame lives in its pager's map or free list, and the arena is freed only with
/// the pager).
pub struct Frame(NonNull<PageBytes>);

impl std::ops::Deref for Frame {
    type Target = [u8; PAGE_SIZE];
    fn deref(&self) -> &[u8; PAGE_SIZE] {
        // SAFETY: the frame points into a live chunk of its pager's arena, and only
        // this handle reaches those bytes (each frame is handed out once).
        unsafe { &self.0.as_ref().0 }
    }
}

impl std::ops::DerefMut for Frame {
    fn deref_mut(&mut self) -> &mut [u8; PAGE_SIZE] {
        // SAFETY: as for `deref`; `&mut self` makes the access exclusive.
        unsafe { &mut self.0.as_mut().0 }
    }
}

/// Frames per arena chunk.
const CHUNK_FRAMES: usize = 64;

/// The chunks frames are carved out of, freed only with the pager.
#[derive(Default)]
struct Arena {
    /// Each from `Box::leak` of a boxed slice of `CHUNK_FRAMES` frames, so that
    /// no owning `Box` claims the bytes the handles reach.
    chunks: Vec<NonNull<[PageBytes]>>,
}

impl Arena {
    /// `CHUNK_FRAMES` new zeroed frames.
    fn grow(&mut self) -> impl Iterator<Item = Frame> + use<> {
        let chunk: Box<[PageBytes]> = (0..CHUNK_FRAMES)
            .map(|_| PageBytes([0; PAGE_SIZE]))
            .collect();
        let chunk = NonNull::from(Box::leak(chunk));
        self.chunks.push(chunk);
        let first = chunk.cast::<PageBytes>();
        // SAFETY: `i < CHUNK_FRAMES`, the chunk's length.
        (0..CHUNK_FRAMES).map(move |i| Frame(unsafe { first.add(i) }))
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        for chunk in self.chunks.drain(..) {
            // SAFETY: from `Box::leak` in `grow`, freed only here; the frames' handles
            // live in the pager, which is being dropped.
            drop(unsafe { Box::from_raw(chunk.as_ptr()) });
        }
    }
}

/// A resident page: its frame and whether it differs from the disk.
pub struct NaivePage {
    /// The page's bytes.
    pub frame: Frame,
    /// Set by writes, cleared by write-back.
    pub dirty: bool,
}

/// What the naive pager asked of the filesystem and the (modelled) device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NaiveStats {
    /// Device requests (one per page moved).
    pub requests: u64,
    /// Modelled device time of those requests, in nanoseconds.
    pub device_time_ns: u64,
    /// `bmap` calls.
    pub bmap_calls: u64,
    /// Bytes read from the device.
    pub bytes_read: u64,
    /// Bytes written to the device.
    pub bytes_written: u64,
}

/// The device side: the disk, its latency model and the counters.
struct Device {
    disk: MemDisk,
    latency: LatencyModel,
    stats: NaiveStats,
}

impl Device {
    fn account(&mut self, bytes: usize) {
        self.stats.requests += 1;
        self.stats.device_time_ns += self.latency.cost_ns(bytes as u64);
    }

    /// The first sector of logical block `lbn`, or `None` for a hole.
    fn locate(&mut self, map: &impl BlockMap, lbn: u64) -> Result<Option<u64>> {
        self.stats.bmap_calls += 1;
        Ok(map.bmap(lbn)?.block)
    }

    /// One device request reading page `lbn` into `buf` (zeroes for a hole).
    fn read_page(&mut self, map: &impl BlockMap, lbn: u64, buf: &mut [u8]) -> Result {
        match self.locate(map, lbn)? {
            Some(sector) => {
                self.account(buf.len());
                self.disk.read_request(sector, lbn << PAGE_SHIFT, buf)?;
                self.stats.bytes_read += buf.len() as u64;
            }
            None => buf.fill(0),
        }
        Ok(())
    }

    /// One device request writing `data` to page `lbn`.
    fn write_page(&mut self, map: &impl BlockMap, lbn: u64, data: &[u8]) -> Result {
        let sector = self.locate(map, lbn)?.ok_or(Error::NoSpace)?;
        self.account(data.len());
        self.disk.write_request(sector, lbn << PAGE_SHIFT, data)?;
        self.stats.bytes_written += data.len() as u64;
        Ok(())
    }
}

/// The naive pager over one file: its block map `M` on `disk`. See the module docs.
pub struct NaivePager<'a, M: BlockMap> {
    map: &'a M,
    device: Device,
    size: u64,
    pages: BTreeMap<u64, NaivePage>,
    spare: Vec<Frame>,
    arena: Arena,
}

impl<'a, M: BlockMap> NaivePager<'a, M> {
    /// A pager with an empty cache for a file of `size` bytes mapped by `map` on
    /// `disk`, whose filesystem blocks are `1 << fs_bshift` bytes.
    ///
    /// # Panics
    ///
    /// If the block is not exactly one page.
    pub fn new(map: &'a M, disk: MemDisk, fs_bshift: u32, size: u64) -> Self {
        assert_eq!(1usize << fs_bshift, PAGE_SIZE, "one block per page only");
        let latency = disk.latency();
        Self {
            map,
            device: Device {
                disk,
                latency,
                stats: NaiveStats::default(),
            },
            size,
            pages: BTreeMap::new(),
            spare: Vec::new(),
            arena: Arena::default(),
        }
    }

    /// The counters since creation or [`NaivePager::reset_stats`].
    pub fn stats(&self) -> NaiveStats {
        self.device.stats
    }

    /// Zeroes the counters.
    pub fn reset_stats(&mut self) {
        self.device.stats = NaiveStats::default();
    }

    /// How many pages are resident.
    pub fn resident_pages(&self) -> usize {
        self.pages.len()
    }

    fn frame(&mut self) -> Frame {
        if self.spare.is_empty() {
            // Handed out lowest first, as genpager's pool does.
            let fresh: Vec<Frame> = self.arena.grow().collect();
            self.spare.extend(fresh.into_iter().rev());
        }
        self.spare.pop().expect("a chunk of frames was just added")
    }

    /// A page fault: page `index`, read from the device (one bmap, one request) if
    /// it is not resident.
    pub fn fault(&mut self, index: u64) -> Result<&mut NaivePage> {
        if !self.pages.contains_key(&index) {
            if index << PAGE_SHIFT >= self.size {
                return Err(Error::Invalid);
            }
            let mut frame = self.frame();
            if let Err(err) = self.device.read_page(self.map, index, &mut frame[..]) {
                self.spare.push(frame);
                return Err(err);
            }
            self.pages.insert(
                index,
                NaivePage {
                    frame,
                    dirty: false,
                },
            );
        }
        Ok(self.pages.get_mut(&index).expect("just made resident"))
    }

    /// The resident page `index`, if any (a cached fault).
    pub fn lookup(&self, index: u64) -> Option<&NaivePage> {
        self.pages.get(&index)
    }

    /// read(2): copies file bytes from `offset` into `buf`, faulting pages in one at a
    /// time; stops at end of file and returns the bytes copied.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let end = (offset + buf.len() as u64).min(self.size);
        let mut at = offset;
        while at < end {
            let within = (at % PAGE_SIZE as u64) as usize;
            let len = (PAGE_SIZE - within).min((end - at) as usize);
            let done = (at - offset) as usize;
            let page = self.fault(at / PAGE_SIZE as u64)?;
            buf[done..done + len].copy_from_slice(&page.frame[within..within + len]);
            at += len as u64;
        }
        Ok(end.saturating_sub(offset) as usize)
    }

    /// write(2): copies `data` into the pages from `offset` and marks them dirty. A page
    /// written whole is not read first; a partial one is. Grows the file.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<usize> {
        let end = offset + data.len() as u64;
        let mut at = offset;
        while at < end {
            let index = at / PAGE_SIZE as u64;
            let within = (at % PAGE_SIZE as u64) as usize;
            let len = (PAGE_SIZE - within).min((end - at) as usize);
            let done = (at - offset) as usize;
            if !self.pages.contains_key(&index) {
                if len == PAGE_SIZE || index << PAGE_SHIFT >= self.size {
                    // Overwritten whole, or past the end of file: nothing to read.
                    let mut frame = self.frame();
                    if len < PAGE_SIZE {
                        frame.fill(0);
                    }
                    let page = NaivePage {
                        frame,
                        dirty: false,
                    };
                    self.pages.insert(index, page);
                } else {
                    self.fault(index)?;
                }
            }
            let page = self.pages.get_mut(&index).expect("resident");
            page.frame[within..within + len].copy_from_slice(&data[done..done + len]);
            page.dirty = true;
            at += len as u64;
        }
        self.size = self.size.max(end);
        Ok(data.len())
    }

    /// Makes page `index` resident and clean without reading it (a page another path
    /// already filled), for building a large clean cache cheaply.
    pub fn insert_clean(&mut self, index: u64) {
        let frame = self.frame();
        self.pages.insert(
            index,
            NaivePage {
                frame,
                dirty: false,
            },
        );
        self.size = self.size.max((index + 1) * PAGE_SIZE as u64);
    }

    /// Marks resident page `index` dirty (a store through a mapping).
    pub fn mark_dirty(&mut self, index: u64) {
        if let Some(page) = self.pages.get_mut(&index) {
            page.dirty = true;
        }
    }

    /// fsync(2): walks every resident page and writes each dirty one back, one bmap
    /// and one request per page. Returns how many pages it wrote.
    pub fn flush(&mut self) -> Result<usize> {
        let mut written = 0;
        for (&index, page) in self.pages.iter_mut() {
            if page.dirty {
                self.device.write_page(self.map, index, &page.frame[..])?;
                page.dirty = false;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Writes back every dirty page, then drops every page (frames to the free list):
    /// the next access is cold.
    pub fn invalidate(&mut self) -> Result {
        self.flush()?;
        let pages = std::mem::take(&mut self.pages);
        self.spare
            .extend(pages.into_values().map(|page| page.frame));
        Ok(())
    }

    /// Direct read of `buf.len()` bytes (page multiple) at page-aligned `offset`,
    /// straight into `buf`: one bmap and one request per page. A dirty cached page of
    /// the range is written back first.
    pub fn direct_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        Self::check_direct(offset, buf.len())?;
        for (i, chunk) in buf.chunks_exact_mut(PAGE_SIZE).enumerate() {
            let index = offset / PAGE_SIZE as u64 + i as u64;
            if let Some(page) = self.pages.get_mut(&index).filter(|page| page.dirty) {
                self.device.write_page(self.map, index, &page.frame[..])?;
                page.dirty = false;
            }
            self.device.read_page(self.map, index, chunk)?;
        }
        Ok(buf.len())
    }

    /// Direct write of `data` (page multiple) at page-aligned `offset`, straight from
    /// `data`: one bmap and one request per page. A cached page of the range is dropped.
    pub fn direct_write(&mut self, offset: u64, data: &[u8]) -> Result<usize> {
        Self::check_direct(offset, data.len())?;
        for (i, chunk) in data.chunks_exact(PAGE_SIZE).enumerate() {
            let index = offset / PAGE_SIZE as u64 + i as u64;
            if let Some(page) = self.pages.remove(&index) {
                self.spare.push(page.frame);
            }
            self.device.write_page(self.map, index, chunk)?;
        }
        Ok(data.len())
    }

    fn check_direct(offset: u64, len: usize) -> Result {
        if offset % PAGE_SIZE as u64 != 0 || len % PAGE_SIZE != 0 {
            return Err(Error::Invalid);
        }
        Ok(())
    }
}
