//! [`Ext2File`]: one ext2 inode as a genpager vnode, with its block map.
//!
//! The file's data moves only through genpager: reads through `getpages` (via
//! [`genpager::read`]), writes through write faults and a synchronous `putpages`.
//! This type implements the hooks genpager calls back: [`BlockMap::bmap`] walks the
//! inode's direct and indirect pointers, [`BlockMap::alloc`] fills holes.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use genpager::cache::DefaultCache;
use genpager::page::trunc_page;
use genpager::sync::{Mutex, SleepGuard, SleepRwLock};
use genpager::{
    BlockMap, DEV_BSHIFT, Mapping, MountFlags, PageCache, PutFlags, SizeKind, Update, VmObject,
    Vnode, VnodeKind,
};

#[cfg(feature = "std")]
use crate::device::ImageDevice;
use crate::disk::Disk;
use crate::error::{Ext2Error, Result};
use crate::fs::Ext2Fs;
use crate::layout::{FileKind, Inode};
use crate::lock::{SleepMutex, SleepMutexGuard};

/// What the pager asked of one file's block map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileStats {
    /// `bmap` calls.
    pub bmap_calls: u64,
    /// `bmap` calls that found a hole.
    pub holes_met: u64,
    /// Blocks of hole those calls reported below end of file (the block asked for
    /// plus its run).
    pub hole_blocks: u64,
    /// `alloc` calls (write faults over holes).
    pub alloc_calls: u64,
}

/// How a file's blocks lie, from walking its block map up to end of file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapSummary {
    /// Blocks below end of file that are allocated.
    pub mapped_blocks: u64,
    /// Blocks below end of file that are holes.
    pub hole_blocks: u64,
    /// Runs of physically contiguous mapped blocks.
    pub extents: u64,
    /// Runs of hole blocks.
    pub holes: u64,
}

/// Bytes per device sector.
const SECTOR: u64 = 1 << DEV_BSHIFT;

#[derive(Default)]
struct Counters {
    bmap_calls: AtomicU64,
    holes_met: AtomicU64,
    hole_blocks: AtomicU64,
    alloc_calls: AtomicU64,
}

macro_rules! ext2file {
    ($($default:tt)*) => {
        /// One file of an [`Ext2Fs`]: a genpager [`Vnode`] and its own [`BlockMap`],
        /// on the filesystem's [`Disk`] `D`.
        ///
        /// Get one from [`Ext2Fs::open_file`]. Its page cache lives as long as the
        /// vnode.
        ///
        /// Lock order, outer to inner: the filesystem's `opening` lock (taken only
        /// to build a vnode, with no other lock held), `io`, genpager's node lock,
        /// `inode`, the filesystem's metadata lock; the spin locks (`error`,
        /// genpager's object lock) innermost and never across a wait.
        pub struct Ext2File<D: Disk $($default)*> {
            fs: Arc<Ext2Fs<D>>,
            ino: u32,
            kind: FileKind,
            object: VmObject<DefaultCache>,
            /// The inode record. A sleeping lock: `bmap` and `alloc` (genpager
            /// calls them under the node lock, with no spin lock held) hold it while
            /// they read indirect blocks and bitmaps and write metadata back, and
            /// `sync` while it writes the inode.
            inode: SleepMutex<Inode>,
            modified: AtomicBool,
            /// The inode record in memory may differ from the one on disk: a block
            /// allocation or release failed part way (its write-back may not have
            /// reached the inode). The next sync writes the inode.
            unwritten: AtomicBool,
            /// Blocks were allocated past the inode's size since the last sync.
            alloc_past_eof: AtomicBool,
            /// Serializes writes, syncs and size changes of the file (the vnode
            /// lock). A sleeping lock: held across `genpager::write`, `putpages`
            /// and `setsize`, which wait for the disk.
            io: SleepRwLock,
            /// The detailed error behind the last failed hook. A spin lock: held
            /// only to store or take the value.
            error: Mutex<Option<Ext2Error>>,
            counters: Counters,
        }
    };
}

#[cfg(feature = "std")]
ext2file!(= ImageDevice);
#[cfg(not(feature = "std"))]
ext2file!();

impl<D: Disk> Ext2File<D> {
    pub(crate) fn new(fs: Arc<Ext2Fs<D>>, inode: Inode) -> Self {
        let cache = DefaultCache::in_memory(fs.memory());
        Self {
            ino: inode.ino,
            kind: inode.kind(),
            object: VmObject::new(cache, inode.size()),
            inode: SleepMutex::new(inode),
            modified: AtomicBool::new(false),
            unwritten: AtomicBool::new(false),
            alloc_past_eof: AtomicBool::new(false),
            io: SleepRwLock::new(),
            error: Mutex::new(None),
            counters: Counters::default(),
            fs,
        }
    }

    /// The inode lock (sleeping).
    fn inode(&self) -> SleepMutexGuard<'_, Inode> {
        self.inode.lock()
    }

    /// The file's I/O lock (sleeping), exclusively.
    fn io(&self) -> SleepGuard<'_> {
        self.io.write()
    }

    /// The filesystem the file is on.
    pub fn fs(&self) -> &Arc<Ext2Fs<D>> {
        &self.fs
    }

    /// The inode number.
    pub fn ino(&self) -> u32 {
        self.ino
    }

    /// The file size as the pager sees it (the object size).
    pub fn size(&self) -> u64 {
        self.object.size()
    }

    /// The size recorded in the inode (differs from [`Ext2File::size`] only between
    /// a write past end of file and the next [`Ext2File::sync`]).
    pub fn inode_size(&self) -> u64 {
        self.inode().size()
    }

    /// `i_blocks` of the inode: 512-byte sectors held.
    pub fn sectors(&self) -> u32 {
        self.inode().sectors()
    }

    /// The counters of the pager's calls into this file's block map.
    pub fn stats(&self) -> FileStats {
        let c = &self.counters;
        FileStats {
            bmap_calls: c.bmap_calls.load(Ordering::Relaxed),
            holes_met: c.holes_met.load(Ordering::Relaxed),
            hole_blocks: c.hole_blocks.load(Ordering::Relaxed),
            alloc_calls: c.alloc_calls.load(Ordering::Relaxed),
        }
    }

    /// Keeps `err` for [`Ext2File::pager_error`] and returns its genpager form: a
    /// hook can only hand genpager an errno-like error.
    fn record(&self, err: Ext2Error) -> genpager::Error {
        let pager = err.to_pager();
        let old = self.error.lock().replace(err);
        // Dropped with the spin lock released.
        drop(old);
        pager
    }

    /// Turns a genpager error into the detailed one a hook of this file recorded,
    /// if it recorded one that genpager passed on.
    fn pager_error(&self, err: genpager::Error) -> Ext2Error {
        let recorded = self.error.lock().take();
        match recorded {
            Some(detail) if detail.to_pager() == err => detail,
            _ => err.into(),
        }
    }

    /// Reads file bytes from `offset` into `buf` through genpager's page cache;
    /// returns how many bytes were read (fewer at end of file).
    pub fn read_at(self: &Arc<Self>, offset: u64, buf: &mut [u8]) -> Result<usize> {
        genpager::read(self, offset, buf).map_err(|err| self.pager_error(err))
    }

    /// Reads the whole file through genpager.
    pub fn read_to_vec(self: &Arc<Self>) -> Result<Vec<u8>> {
        let size = usize::try_from(self.size()).map_err(|_| Ext2Error::TooBig)?;
        let mut data = Vec::new();
        data.try_reserve_exact(size)
            .map_err(|_| Ext2Error::TooBig)?;
        data.resize(size, 0);
        let mut done = 0;
        while done < size {
            let n = self.read_at(done as u64, &mut data[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        data.truncate(done);
        Ok(data)
    }

    /// How many pages of the file are resident in its page cache.
    pub fn resident_pages(&self) -> usize {
        self.object.read().cache().resident_pages()
    }

    /// Drops the cached pages wholly below `upto` (flushing any that are dirty
    /// first), so that streaming a large file does not keep it all in memory.
    pub fn drop_cached(self: &Arc<Self>, upto: u64) -> Result {
        let end = trunc_page(upto);
        if end == 0 {
            return Ok(());
        }
        let flags = PutFlags::CLEANIT | PutFlags::FREE | PutFlags::SYNCIO;
        genpager::putpages(self, 0, end, flags).map_err(|err| self.pager_error(err))
    }

    /// Writes `data` at `offset` through genpager: write faults fill the pages,
    /// [`BlockMap::alloc`] gives holes and the range past end of file their blocks,
    /// and the file grows when the write ends past its end. The pages stay dirty in
    /// the cache until [`Ext2File::sync`], which must follow before the vnode is
    /// dropped.
    pub fn write_at(self: &Arc<Self>, offset: u64, data: &[u8]) -> Result<usize> {
        self.fs.check_writable()?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Ext2Error::TooBig)?;
        if end > self.fs.max_file_size() {
            return Err(Ext2Error::TooBig);
        }
        let _io = self.io();
        self.write_locked(offset, data)
    }

    fn write_locked(self: &Arc<Self>, offset: u64, data: &[u8]) -> Result<usize> {
        genpager::write(self, offset, data).map_err(|err| self.pager_error(err))
    }

    /// Flushes the file: writes every dirty page with a synchronous `putpages`,
    /// then records the size (from the object, which a write past end of file grew)
    /// and the modification time in the inode.
    pub fn sync(self: &Arc<Self>) -> Result {
        let _io = self.io();
        self.sync_locked()
    }

    fn sync_locked(self: &Arc<Self>) -> Result {
        let flags = PutFlags::CLEANIT | PutFlags::SYNCIO;
        genpager::putpages(self, 0, 0, flags).map_err(|err| self.pager_error(err))?;
        let size = self.object.size();
        if self.alloc_past_eof.swap(false, Ordering::Relaxed) {
            // A write that failed after its blocks were allocated leaves them past the
            // end of file, where e2fsck would object: give them back.
            let _node = self.object.node_lock().write();
            let keep = size.div_ceil(1 << self.fs.block_shift());
            if let Err(err) = self.free_blocks_from(&mut self.inode(), keep) {
                // Still to do: the next sync tries again.
                self.alloc_past_eof.store(true, Ordering::Relaxed);
                return Err(err);
            }
        }
        // The flags are cleared before the inode is written (a write fault setting
        // `modified` meanwhile is then kept for the next sync) and set again if the
        // write fails, so that the next sync does it again.
        let modified = self.modified.swap(false, Ordering::Relaxed);
        let unwritten = self.unwritten.swap(false, Ordering::Relaxed);
        let result = self.write_inode_back(size, modified, unwritten);
        if result.is_err() {
            if modified {
                self.modified.store(true, Ordering::Relaxed);
            }
            if unwritten {
                self.unwritten.store(true, Ordering::Relaxed);
            }
        }
        result
    }

    /// Records `size` (and, if `modified`, the modification time) in the inode and
    /// writes it back if that changes it or if it is `unwritten`. The record in
    /// memory changes only once the write succeeded: after a failure it still
    /// differs from `size`, and the next sync writes it.
    fn write_inode_back(&self, size: u64, modified: bool, unwritten: bool) -> Result {
        let mut inode = self.inode();
        let resized = inode.size() != size;
        if !resized && !modified && !unwritten {
            return Ok(());
        }
        let mut new = inode.clone();
        if resized {
            self.fs.note_size(size)?;
            new.set_size(size);
        }
        if resized || modified {
            new.touch(self.fs.now());
        }
        self.fs.write_back(&new)?;
        *inode = new;
        Ok(())
    }

    /// [`Ext2Fs::free_blocks_from`], noting on failure that the inode in memory may
    /// be ahead of the one on disk and that blocks may be left past `keep` (the
    /// next sync frees them and writes the inode).
    fn free_blocks_from(&self, inode: &mut Inode, keep: u64) -> Result {
        let result = self.fs.free_blocks_from(inode, keep);
        if result.is_err() {
            self.unwritten.store(true, Ordering::Relaxed);
            self.alloc_past_eof.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Sets the file size, as truncate(2) does: shrinking drops the cached pages past
    /// the new end (genpager's `setsize`) and frees the blocks past it; growing
    /// leaves a hole. Flushed and recorded in the inode before returning.
    pub fn set_len(self: &Arc<Self>, size: u64) -> Result {
        self.fs.check_writable()?;
        if size > self.fs.max_file_size() {
            return Err(Ext2Error::TooBig);
        }
        let _io = self.io();
        let old = self.size();
        let block_mask = (1u64 << self.fs.block_shift()) - 1;
        if size < old {
            genpager::setsize(self, size).map_err(|err| self.pager_error(err))?;
            let _node = self.object.node_lock().write();
            let mut inode = self.inode();
            self.free_blocks_from(&mut inode, size.div_ceil(block_mask + 1))?;
        } else if size > old {
            // The old last block may hold bytes past the old end; growing over them
            // must show zeroes, written through the pager like any data.
            let last_mapped = old & block_mask != 0 && {
                let inode = self.inode().clone();
                matches!(
                    self.fs
                        .map(&mut self.fs.meta(), &inode, old >> self.fs.block_shift()),
                    Ok((Some(_), _))
                )
            };
            if last_mapped {
                let gap = (((old | block_mask) + 1).min(size) - old) as usize;
                self.write_locked(old, &vec![0u8; gap])?;
            }
            genpager::setsize(self, size).map_err(|err| self.pager_error(err))?;
        }
        self.modified.store(true, Ordering::Relaxed);
        self.sync_locked()
    }

    /// Walks the block map up to end of file and summarizes it (a metadata walk:
    /// no file data is read).
    pub fn map_summary(&self) -> Result<MapSummary> {
        let inode = self.inode().clone();
        let blocks = self.size().div_ceil(1 << self.fs.block_shift());
        let mut summary = MapSummary::default();
        let mut lbn = 0;
        while lbn < blocks {
            let (block, run) = self.fs.map(&mut self.fs.meta(), &inode, lbn)?;
            let len = (run + 1).min(blocks - lbn);
            if block.is_some() {
                summary.mapped_blocks += len;
                summary.extents += 1;
            } else {
                summary.hole_blocks += len;
                summary.holes += 1;
            }
            lbn += len;
        }
        Ok(summary)
    }
}

// genpager calls these with no spin lock held (the node lock, a sleeping lock, may
// be held): `bmap` and `alloc` take the inode and metadata locks, both sleeping, and
// may read and write metadata on the disk. `size` is called under the object lock (a
// spin lock) and takes no lock at all.
impl<D: Disk> BlockMap for Ext2File<D> {
    /// What the inode's block tree and size fields can address: genpager refuses
    /// writes, faults and sizes past it.
    fn max_size(&self) -> u64 {
        self.fs.max_file_size()
    }

    fn bmap(&self, lbn: u64) -> genpager::Result<Mapping> {
        self.counters.bmap_calls.fetch_add(1, Ordering::Relaxed);
        let inode = self.inode();
        let (block, run) = self
            .fs
            .map(&mut self.fs.meta(), &inode, lbn)
            .map_err(|err| self.record(err))?;
        Ok(match block {
            Some(block) => Mapping::mapped(
                u64::from(block) << (self.fs.block_shift() - DEV_BSHIFT),
                run,
            ),
            None => {
                // Count the hole up to end of file: the run may go on past it.
                let eof_blocks = inode.size().div_ceil(1 << self.fs.block_shift());
                self.counters.holes_met.fetch_add(1, Ordering::Relaxed);
                self.counters.hole_blocks.fetch_add(
                    (run + 1).min(eof_blocks.saturating_sub(lbn)),
                    Ordering::Relaxed,
                );
                Mapping::hole(run)
            }
        })
    }

    fn alloc(&self, offset: u64, len: u64) -> genpager::Result {
        self.counters.alloc_calls.fetch_add(1, Ordering::Relaxed);
        if len == 0 {
            return Ok(());
        }
        let shift = self.fs.block_shift();
        let last = offset.checked_add(len - 1).ok_or(genpager::Error::TooBig)?;
        let mut inode = self.inode();
        if last >= inode.size() {
            self.alloc_past_eof.store(true, Ordering::Relaxed);
        }
        self.fs
            .alloc_blocks(&mut inode, offset >> shift, last >> shift)
            .map_err(|err| {
                // Undone in memory when it can be; when not, the next sync writes
                // the inode as it is.
                self.unwritten.store(true, Ordering::Relaxed);
                self.record(err)
            })
    }

    fn size(&self, size: u64, kind: SizeKind) -> u64 {
        match kind {
            // The device moves whole sectors: the one holding end of file is read
            // and written whole (its bytes past the end are never shown).
            SizeKind::Disk => size.div_ceil(SECTOR) * SECTOR,
            SizeKind::Memory => size,
        }
    }
}

// `mark_update` is called under the object lock: it only stores an atomic.
impl<D: Disk> Vnode for Ext2File<D> {
    type Cache = DefaultCache;
    type Map = Self;
    type Dev = D;

    fn object(&self) -> &VmObject<DefaultCache> {
        &self.object
    }

    fn block_map(&self) -> &Self {
        self
    }

    fn device(&self) -> &D {
        self.fs.device()
    }

    fn fs_bshift(&self) -> u32 {
        self.fs.block_shift()
    }

    fn kind(&self) -> VnodeKind {
        match self.kind {
            FileKind::Directory => VnodeKind::Directory,
            FileKind::Symlink => VnodeKind::Symlink,
            _ => VnodeKind::Regular,
        }
    }

    fn mount_flags(&self) -> MountFlags {
        // Access times are not kept: reading an image never writes it.
        MountFlags::NO_ATIME
    }

    fn mark_update(&self, what: Update) {
        if what.contains(Update::MODIFIED) {
            self.modified.store(true, Ordering::Relaxed);
        }
    }
}
