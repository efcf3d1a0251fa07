//! A file of resident clean pages over a device that is never read: the setting of a
//! dirty-only flush, where only the one dirty page may be touched. Shared by
//! `benches/putpages.rs` and `examples/perf_report.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use genpager::cache::DefaultCache;
use genpager::page::PAGE_SHIFT;
use genpager::testing::MemDisk;
use genpager::{
    BlockMap, DEFAULT_MAX_TRANSFER, Mapping, PAGE_SIZE, PageCache, PageFlags, PageQueue, Result,
    VmObject, Vnode,
};

/// Blocks are one page each, of this many 512-byte sectors.
const SECTORS_PER_PAGE: u64 = (PAGE_SIZE / 512) as u64;

pub struct Resident {
    pub object: VmObject<DefaultCache>,
    pub disk: MemDisk,
    pub max_transfer: AtomicUsize,
}

impl Resident {
    /// A file of `size` bytes with no resident page.
    pub fn new(size: u64) -> Self {
        Self {
            object: VmObject::new(DefaultCache::new(), size),
            disk: MemDisk::new(1024 * SECTORS_PER_PAGE + 64),
            max_transfer: AtomicUsize::new(DEFAULT_MAX_TRANSFER),
        }
    }
}

impl BlockMap for Resident {
    fn bmap(&self, lbn: u64) -> Result<Mapping> {
        Ok(Mapping::mapped((lbn % 1024) * SECTORS_PER_PAGE, 0))
    }
}

impl Vnode for Resident {
    type Cache = DefaultCache;
    type Map = Self;
    type Dev = MemDisk;
    fn object(&self) -> &VmObject<DefaultCache> {
        &self.object
    }
    fn block_map(&self) -> &Self {
        self
    }
    fn device(&self) -> &MemDisk {
        &self.disk
    }
    fn fs_bshift(&self) -> u32 {
        PAGE_SHIFT
    }
    fn max_transfer(&self) -> usize {
        self.max_transfer.load(Ordering::Relaxed)
    }
}

/// A file of `pages` resident, clean, queued pages.
pub fn resident(pages: u64) -> Arc<Resident> {
    let file = Arc::new(Resident::new(pages * PAGE_SIZE as u64));
    {
        let mut state = file.object.lock();
        let cache = state.cache_mut();
        for i in 0..pages {
            let offset = i * PAGE_SIZE as u64;
            let page = cache.alloc(offset).unwrap();
            page.flags.remove(PageFlags::BUSY | PageFlags::FAKE);
            cache.set_queue(offset, PageQueue::Active);
        }
    }
    file
}
