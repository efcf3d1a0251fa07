//! A small filesystem on the [`RamDisk`]: [`RamFs`] allocates blocks of
//! `1 << bshift` bytes (1 KiB in the self-test: smaller than a page, so a page spans
//! four blocks and a hole can cover part of a page), and each [`RamFile`] keeps a
//! table from logical block to filesystem block. A file is a genpager [`Vnode`] and
//! its own [`BlockMap`]; missing table entries are holes, filled by
//! [`BlockMap::alloc`] on a write fault.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::interrupts::IrqMutex as Mutex;
use genpager::{BlockMap, DEV_BSHIFT, Error, Mapping, Result, VmObject, Vnode};

use crate::cache::{KernelCache, kernel_cache};
use crate::ramdisk::{RamDisk, SECTOR_SIZE};

/// The longest run `bmap` reports, in blocks.
const MAX_RUN: u64 = 256;

/// The filesystem: a disk and its block-allocation bitmap.
pub struct RamFs {
    disk: RamDisk,
    bshift: u32,
    used: Mutex<Vec<bool>>,
}

impl RamFs {
    /// A filesystem of `blocks` blocks of `1 << bshift` bytes on a fresh RAM disk.
    pub fn new(blocks: usize, bshift: u32) -> Arc<Self> {
        let sectors = (blocks << bshift) / SECTOR_SIZE;
        Arc::new(Self {
            disk: RamDisk::new(sectors),
            bshift,
            used: Mutex::new(vec![false; blocks]),
        })
    }

    /// Bytes in one filesystem block.
    pub fn block_size(&self) -> usize {
        1 << self.bshift
    }

    /// Blocks not yet allocated.
    pub fn free_blocks(&self) -> usize {
        self.used.lock().iter().filter(|used| !**used).count()
    }

    /// Creates a file of `size` bytes whose logical block `i` lives in filesystem
    /// block `layout[i]` (`None`: a hole). Blocks past the layout are holes too.
    ///
    /// # Panics
    ///
    /// If a block of the layout is outside the disk or already in use.
    pub fn create(self: &Arc<Self>, size: u64, layout: &[Option<u64>]) -> Arc<RamFile> {
        let mut used = self.used.lock();
        for &block in layout.iter().flatten() {
            let slot = &mut used[block as usize];
            assert!(!*slot, "block {block} allocated twice");
            *slot = true;
        }
        drop(used);
        Arc::new(RamFile {
            fs: self.clone(),
            object: VmObject::new(kernel_cache(), size),
            blocks: Mutex::new(layout.to_vec()),
            alloc_calls: AtomicU32::new(0),
        })
    }

    /// Takes a free block, `prefer` if it is free (so appends stay contiguous).
    fn take_block(&self, prefer: Option<u64>) -> Option<u64> {
        let mut used = self.used.lock();
        let block = prefer
            .filter(|&b| used.get(b as usize) == Some(&false))
            .or_else(|| used.iter().position(|used| !used).map(|b| b as u64))?;
        used[block as usize] = true;
        Some(block)
    }

    fn release_block(&self, block: u64) {
        self.used.lock()[block as usize] = false;
    }

    /// The first device sector of filesystem block `block`.
    fn sector(&self, block: u64) -> u64 {
        block << (self.bshift - DEV_BSHIFT)
    }
}

/// One file: its memory object and its block table.
pub struct RamFile {
    fs: Arc<RamFs>,
    object: VmObject<KernelCache>,
    blocks: Mutex<Vec<Option<u64>>>,
    alloc_calls: AtomicU32,
}

impl RamFile {
    /// The filesystem the file lives on.
    pub fn filesystem(&self) -> &Arc<RamFs> {
        &self.fs
    }

    /// The filesystem block holding logical block `lbn`, or `None` for a hole.
    pub fn block_of(&self, lbn: u64) -> Option<u64> {
        self.blocks.lock().get(lbn as usize).copied().flatten()
    }

    /// How many times genpager called [`BlockMap::alloc`].
    pub fn alloc_calls(&self) -> u32 {
        self.alloc_calls.load(Ordering::Relaxed)
    }

    /// The file's bytes `offset .. offset + out.len()` as the disk holds them,
    /// bypassing the page cache (holes read as zeroes).
    pub fn read_disk(&self, offset: u64, out: &mut [u8]) {
        self.walk(offset, out.len(), |at, range, block| match block {
            Some(_) => self.fs.disk.peek(at, &mut out[range]),
            None => out[range].fill(0),
        });
    }

    /// Stores file bytes straight into the file's mapped blocks, bypassing the page
    /// cache: how `mkfs` lays down initial contents. Bytes over holes are dropped.
    pub fn write_disk(&self, offset: u64, data: &[u8]) {
        self.walk(offset, data.len(), |at, range, block| {
            if block.is_some() {
                self.fs.disk.poke(at, &data[range]);
            }
        });
    }

    /// truncate(2): sets the size through genpager (which drops the cached pages past
    /// the new end and zeroes the tail of the last one), then frees the blocks wholly
    /// past it and zeroes the rest of the last block on disk, so growing the file
    /// again shows zeroes.
    pub fn truncate(self: &Arc<Self>, size: u64) -> Result {
        genpager::setsize(self, size)?;
        let block_size = self.fs.block_size() as u64;
        let keep = size.div_ceil(block_size) as usize;
        let mut blocks = self.blocks.lock();
        for block in blocks.iter_mut().skip(keep) {
            if let Some(block) = block.take() {
                self.fs.release_block(block);
            }
        }
        drop(blocks);
        let tail = (keep as u64 * block_size).saturating_sub(size) as usize;
        self.write_disk(size, &vec![0; tail]);
        Ok(())
    }

    /// Calls `each(disk byte, buffer range, block)` for each block-sized piece of
    /// file bytes `offset .. offset + len`.
    fn walk(
        &self,
        offset: u64,
        len: usize,
        mut each: impl FnMut(usize, core::ops::Range<usize>, Option<u64>),
    ) {
        let size = self.fs.block_size();
        let mut done = 0;
        while done < len {
            let pos = offset as usize + done;
            let within = pos % size;
            let step = (size - within).min(len - done);
            let block = self.block_of((pos / size) as u64);
            let at = block.map_or(0, |b| self.fs.sector(b) as usize * SECTOR_SIZE + within);
            each(at, done..done + step, block);
            done += step;
        }
    }
}

impl BlockMap for RamFile {
    fn bmap(&self, lbn: u64) -> Result<Mapping> {
        let blocks = self.blocks.lock();
        let at = |i: u64| blocks.get(i as usize).copied().flatten();
        let run = |same: &dyn Fn(u64) -> bool| {
            (1..=MAX_RUN).take_while(|&i| same(lbn + i)).count() as u64
        };
        Ok(match at(lbn) {
            Some(block) => Mapping::mapped(
                self.fs.sector(block),
                run(&|i| at(i) == Some(block + (i - lbn))),
            ),
            None => Mapping::hole(run(&|i| at(i).is_none())),
        })
    }

    fn alloc(&self, offset: u64, len: u64) -> Result {
        self.alloc_calls.fetch_add(1, Ordering::Relaxed);
        let shift = self.fs.bshift;
        let (first, end) = (
            (offset >> shift) as usize,
            (offset + len).div_ceil(1 << shift) as usize,
        );
        let mut blocks = self.blocks.lock();
        if blocks.len() < end {
            blocks.resize(end, None);
        }
        let zeroes = vec![0u8; self.fs.block_size()];
        let mut taken: Vec<usize> = Vec::new();
        for lbn in first..end {
            if blocks[lbn].is_some() {
                continue;
            }
            let prefer = lbn
                .checked_sub(1)
                .and_then(|prev| blocks[prev])
                .map(|b| b + 1);
            let Some(block) = self.fs.take_block(prefer) else {
                // Undo this call's allocations: nothing may stay half-allocated.
                for &undo in &taken {
                    if let Some(block) = blocks[undo].take() {
                        self.fs.release_block(block);
                    }
                }
                return Err(Error::NoSpace);
            };
            self.fs
                .disk
                .poke(self.fs.sector(block) as usize * SECTOR_SIZE, &zeroes);
            blocks[lbn] = Some(block);
            taken.push(lbn);
        }
        Ok(())
    }
}

impl Vnode for RamFile {
    type Cache = KernelCache;
    type Map = Self;
    type Dev = RamDisk;

    fn object(&self) -> &VmObject<KernelCache> {
        &self.object
    }
    fn block_map(&self) -> &Self {
        self
    }
    fn device(&self) -> &RamDisk {
        &self.fs.disk
    }
    fn fs_bshift(&self) -> u32 {
        self.fs.bshift
    }
}
