//! [`Ext2Fs`]: an opened image — superblock, group descriptors, bitmaps, inodes,
//! directories and block maps. Everything here is metadata, read and written
//! directly on the image; file data only ever moves through genpager (see
//! [`Ext2File`]).

use alloc::collections::btree_map::Entry;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::{Arc, Weak};
use alloc::vec;
use alloc::vec::Vec;

use genpager::memory::Memory;
use genpager::sync::Mutex;

#[cfg(feature = "std")]
use crate::device::{Completion, ImageDevice};
use crate::disk::Disk;
use crate::error::{Ext2Error, Result};
use crate::file::Ext2File;
use crate::layout::{
    DirEntry, FileKind, GROUP_DESC_SIZE, GroupDesc, INODE_EXTENTS_FL, INODE_INLINE_DATA_FL, Inode,
    NDIR, RO_COMPAT_LARGE_FILE, ROOT_INO, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock,
    parse_dir_block, put16, put32,
};
use crate::lock::{SleepMutex, SleepMutexGuard};

/// The longest run of physically contiguous blocks `bmap` reports.
pub const MAX_RUN: u64 = 1024;
/// The longest run of hole blocks `bmap` reports.
pub const MAX_HOLE_RUN: u64 = 1 << 16;
/// Symbolic links followed while resolving one path before giving up.
pub const MAX_SYMLINKS: u32 = 40;
/// Bytes of indirect blocks kept cached before the cache is emptied.
const INDIRECT_CACHE_BYTES: usize = 32 << 20;

/// How to open an image file (`std` only).
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OpenOptions {
    /// Open the image for writing (block allocation, file writes).
    pub writable: bool,
    /// Where device requests complete.
    pub completion: Completion,
}

#[cfg(feature = "std")]
impl OpenOptions {
    /// Read-only, inline completion.
    pub fn read_only() -> Self {
        Self::default()
    }

    /// Read-write, inline completion.
    pub fn read_write() -> Self {
        Self {
            writable: true,
            ..Self::default()
        }
    }

    /// The same options with requests completed per `completion`.
    pub fn completion(self, completion: Completion) -> Self {
        Self { completion, ..self }
    }
}

/// A summary of the filesystem, from the superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in all.
    pub blocks: u32,
    /// Free blocks.
    pub free_blocks: u32,
    /// Inodes in all.
    pub inodes: u32,
    /// Block groups.
    pub groups: u32,
    /// Revision (0 or 1).
    pub revision: u32,
}

/// One file found by [`Ext2Fs::walk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkEntry {
    /// Its absolute path.
    pub path: String,
    /// Its inode.
    pub ino: u32,
    /// Its type.
    pub kind: FileKind,
}

/// Where one run of logical blocks starts, as the block-map walk finds it.
enum Stretch {
    /// The pointers of consecutive logical blocks in one array (the inode's direct
    /// pointers or one indirect block), the first wanted one at `index`.
    Pointers { table: Arc<Vec<u32>>, index: usize },
    /// `len` blocks of hole, under a missing indirect block.
    Hole { len: u64 },
}

/// Where a block pointer being changed lives.
#[derive(Clone, Copy)]
enum Slot {
    Inode(usize),
    Table(u32, usize),
}

/// Mutable metadata, under one lock: free counts, bitmaps, the indirect-block
/// cache, and what must be written back.
pub(crate) struct Meta {
    free_blocks: u32,
    group_free: Vec<u16>,
    feature_ro_compat: u32,
    bitmaps: BTreeMap<u32, Vec<u8>>,
    indirect: BTreeMap<u32, Arc<Vec<u32>>>,
    indirect_bytes: usize,
    dirty_bitmaps: BTreeSet<u32>,
    dirty_groups: BTreeSet<u32>,
    dirty_indirect: BTreeSet<u32>,
    /// The indirect blocks of `dirty_indirect` that were allocated since they were
    /// last written (never on disk yet): written before the other indirect blocks
    /// and the inode, which may point to them.
    fresh_indirect: BTreeSet<u32>,
    dirty_super: bool,
}

/// In what order [`Ext2Fs::commit`] writes what is dirty, so that a write failing
/// (or a crash) part way leaves the image with at worst blocks marked in use that
/// nothing points to (which e2fsck reclaims), never a pointer to a free block or to
/// a block whose contents were never written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// After blocks were taken: bitmaps and counts first (the new blocks marked in
    /// use), then the pointers to them.
    Alloc,
    /// After blocks were given back (and for a plain write-back): pointers first
    /// (indirect blocks, then the inode), then bitmaps and counts. (What an earlier
    /// failed commit left dirty is written in the order of the commit that finds
    /// it: the image is consistent again once one commit succeeds.)
    Free,
}

/// The vnode table: inode number to the live vnode.
type Vnodes<D> = BTreeMap<u32, Weak<Ext2File<D>>>;

/// The clock of a build without `std`, until [`Ext2Fs::set_clock`]: always 0.
#[cfg(not(feature = "std"))]
fn no_clock() -> u32 {
    0
}

/// The clock of the `std` build: seconds since the Unix epoch from `SystemTime`.
#[cfg(feature = "std")]
fn system_clock() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

macro_rules! ext2fs {
    ($($default:tt)*) => {
        /// An opened ext2 filesystem on a [`Disk`] `D` (with `std`, by default an
        /// `ImageDevice`).
        ///
        /// Opening reads and checks the superblock and the group descriptors; inodes,
        /// directories, bitmaps and indirect blocks are read on demand. Files are
        /// opened as [`Ext2File`]s, genpager vnodes; opening a file twice gives the
        /// same vnode while it is alive, so both share one page cache.
        pub struct Ext2Fs<D: Disk $($default)*> {
            device: D,
            sb: Superblock,
            groups: Vec<GroupDesc>,
            read_only_reason: Option<String>,
            /// Free counts, bitmaps, the indirect-block cache and what to write back.
            /// A sleeping lock: held across metadata reads and writes on the disk
            /// (loading a bitmap or an indirect block, committing), which sleep in a
            /// kernel. Taken inside a file's inode lock, never the other way round.
            meta: SleepMutex<Meta>,
            /// Serializes building vnodes: held while the inode of a file with no
            /// live vnode is read from the disk and its vnode inserted in `vnodes`,
            /// so that no vnode is ever built from an inode read before the last
            /// vnode of the file wrote it back. A sleeping lock (held across the
            /// inode read); taken with no other lock of the filesystem or of a file
            /// held, so it is outermost: `opening`, then a file's `io`, genpager's
            /// node lock, the file's `inode`, `meta` (only `vnodes` and the device's
            /// own locks are taken under it).
            opening: SleepMutex<()>,
            /// Inode number to live vnode. A spin lock: held only to look up or insert
            /// (no I/O, no genpager call, no vnode dropped under it).
            vnodes: Mutex<Vnodes<D>>,
            /// Seconds since the Unix epoch, for inode timestamps. A spin lock: held
            /// only to copy the function out.
            clock: Mutex<fn() -> u32>,
            /// The memory domain new vnodes' page caches count in. A spin lock: held
            /// only to copy the reference out.
            memory: Mutex<&'static Memory>,
        }
    };
}

#[cfg(feature = "std")]
ext2fs!(= ImageDevice);
#[cfg(not(feature = "std"))]
ext2fs!();

#[cfg(feature = "std")]
impl Ext2Fs<ImageDevice> {
    /// Opens the image file at `path` (`std` only).
    pub fn open(
        path: impl AsRef<std::path::Path>,
        options: OpenOptions,
    ) -> Result<Arc<Ext2Fs<ImageDevice>>> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(options.writable)
            .open(path)
            .map_err(|err| {
                Ext2Error::Io(std::io::Error::new(
                    err.kind(),
                    format!("{}: {err}", path.display()),
                ))
            })?;
        let device = ImageDevice::new(file, options.writable, options.completion)?;
        Self::with_device(device)
    }
}

impl<D: Disk> Ext2Fs<D> {
    /// Opens the filesystem on `device`: reads and checks the superblock and the
    /// group descriptors. Read-write if [`Disk::writable`] and the image's features
    /// allow it, else read-only.
    pub fn with_device(device: D) -> Result<Arc<Ext2Fs<D>>> {
        let image_len = device.len();
        let mut raw = vec![0u8; SUPERBLOCK_SIZE];
        if image_len < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Err(Ext2Error::Corrupt(format!(
                "image is {image_len} bytes, too short to hold a superblock"
            )));
        }
        device.read_meta(SUPERBLOCK_OFFSET, &mut raw)?;
        let sb = Superblock::parse(&raw, image_len)?;
        let mut table = vec![0u8; (sb.gdt_blocks() << sb.block_shift) as usize];
        device.read_meta(
            u64::from(sb.first_data_block + 1) << sb.block_shift,
            &mut table,
        )?;
        let groups: Vec<GroupDesc> = (0..sb.groups())
            .map(|g| GroupDesc::parse(&table[g as usize * GROUP_DESC_SIZE..]))
            .collect();
        for (g, desc) in groups.iter().enumerate() {
            desc.check(g as u32, &sb)?;
        }
        let read_only_reason = if !device.writable() {
            Some("the image was opened read-only".to_string())
        } else {
            sb.writable().err()
        };
        let meta = Meta {
            free_blocks: sb.free_blocks,
            group_free: groups.iter().map(|g| g.free_blocks).collect(),
            feature_ro_compat: sb.feature_ro_compat,
            bitmaps: BTreeMap::new(),
            indirect: BTreeMap::new(),
            indirect_bytes: 0,
            dirty_bitmaps: BTreeSet::new(),
            dirty_groups: BTreeSet::new(),
            dirty_indirect: BTreeSet::new(),
            fresh_indirect: BTreeSet::new(),
            dirty_super: false,
        };
        Ok(Arc::new(Ext2Fs {
            device,
            sb,
            groups,
            read_only_reason,
            meta: SleepMutex::new(meta),
            opening: SleepMutex::new(()),
            vnodes: Mutex::new(BTreeMap::new()),
            #[cfg(feature = "std")]
            clock: Mutex::new(system_clock),
            #[cfg(not(feature = "std"))]
            clock: Mutex::new(no_clock),
            memory: Mutex::new(Memory::shared()),
        }))
    }

    /// The device under the filesystem (an `ImageDevice`'s
    /// request counters, for one).
    pub fn device(&self) -> &D {
        &self.device
    }

    /// Sets the clock inode timestamps are taken from: seconds since the Unix epoch.
    /// The default is `SystemTime` with `std` and a clock stuck at 0 without; a
    /// kernel sets its own. `clock` is called with no genpager spin lock held.
    pub fn set_clock(&self, clock: fn() -> u32) {
        *self.clock.lock() = clock;
    }

    /// Sets the memory domain (frame source, budget, dirty limits) the page caches of
    /// files opened from now on count in. The default, [`Memory::shared`], has no
    /// budget. A kernel gives its own domain before opening files, so that genpager's
    /// dirty limits hold its writers and its page daemon sees every page.
    pub fn set_memory(&self, memory: &'static Memory) {
        *self.memory.lock() = memory;
    }

    /// The memory domain of [`Ext2Fs::set_memory`].
    pub(crate) fn memory(&self) -> &'static Memory {
        *self.memory.lock()
    }

    /// The time now by the clock of [`Ext2Fs::set_clock`].
    pub(crate) fn now(&self) -> u32 {
        let clock = *self.clock.lock();
        clock()
    }

    /// Flushes the disk's write cache ([`Disk::sync`]): after [`Ext2File::sync`],
    /// what makes the file's data and metadata durable.
    pub fn sync_disk(&self) -> Result {
        Ok(self.device.sync()?)
    }

    /// The checked superblock as read at open.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Block size, counts and revision.
    pub fn info(&self) -> FsInfo {
        FsInfo {
            block_size: self.sb.block_size(),
            blocks: self.sb.blocks_count,
            free_blocks: self.meta().free_blocks,
            inodes: self.sb.inodes_count,
            groups: self.sb.groups(),
            revision: self.sb.rev_level,
        }
    }

    /// `log2` of the block size.
    pub fn block_shift(&self) -> u32 {
        self.sb.block_shift
    }

    /// Whether files may be written, or why not.
    pub fn check_writable(&self) -> Result {
        match &self.read_only_reason {
            None => Ok(()),
            Some(why) => Err(Ext2Error::ReadOnly(why.clone())),
        }
    }

    /// The metadata lock (sleeping: see [`Ext2Fs::meta`]'s field).
    pub(crate) fn meta(&self) -> SleepMutexGuard<'_, Meta> {
        self.meta.lock()
    }

    // ---- inodes ----

    /// Where inode `ino`'s record is in the image.
    fn inode_offset(&self, ino: u32) -> Result<u64> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Ext2Error::Corrupt(format!(
                "inode number {ino} out of range (1..={})",
                self.sb.inodes_count
            )));
        }
        let group = (ino - 1) / self.sb.inodes_per_group;
        let index = (ino - 1) % self.sb.inodes_per_group;
        let desc = self.groups.get(group as usize).ok_or_else(|| {
            Ext2Error::Corrupt(format!(
                "inode {ino} is in group {group}, past the last group"
            ))
        })?;
        Ok((u64::from(desc.inode_table) << self.sb.block_shift)
            + u64::from(index) * u64::from(self.sb.inode_size))
    }

    /// Reads inode `ino`, checking that it is in use and mapped by indirect blocks.
    pub fn read_inode(&self, ino: u32) -> Result<Inode> {
        let at = self.inode_offset(ino)?;
        let mut raw = vec![0u8; self.sb.inode_size as usize];
        self.device.read_meta(at, &mut raw)?;
        let inode = Inode { ino, raw };
        if inode.mode() == 0 || inode.links() == 0 {
            return Err(Ext2Error::Corrupt(format!(
                "inode {ino} is referenced but not in use"
            )));
        }
        if inode.flags() & (INODE_EXTENTS_FL | INODE_INLINE_DATA_FL) != 0 {
            return Err(Ext2Error::Unsupported(format!(
                "inode {ino} uses extents or inline data"
            )));
        }
        Ok(inode)
    }

    /// Writes `inode`'s record back.
    pub(crate) fn write_inode(&self, inode: &Inode) -> Result {
        self.check_writable()?;
        let at = self.inode_offset(inode.ino)?;
        self.device.write_meta(at, &inode.raw)?;
        Ok(())
    }

    // ---- block maps ----

    /// Blocks the inode's pointers can address (12 direct, then 1, 2, 3 levels).
    pub fn max_blocks(&self) -> u64 {
        let apb = self.sb.addrs_per_block();
        NDIR as u64 + apb + apb * apb + apb * apb * apb
    }

    /// The largest file size the block map and the size fields allow.
    pub fn max_file_size(&self) -> u64 {
        let by_map = self.max_blocks() << self.sb.block_shift;
        let by_fields = if self.sb.rev_level == 0 {
            (1 << 31) - 1
        } else {
            u64::MAX
        };
        by_map.min(by_fields)
    }

    /// The pointer slot of `lbn`: (index in `i_block`, depth, indices per level).
    fn path(&self, lbn: u64) -> Result<(usize, usize, [u64; 3])> {
        let apb = self.sb.addrs_per_block();
        if lbn < NDIR as u64 {
            return Ok((lbn as usize, 0, [0; 3]));
        }
        let mut rest = lbn - NDIR as u64;
        if rest < apb {
            return Ok((NDIR, 1, [rest, 0, 0]));
        }
        rest -= apb;
        if rest < apb * apb {
            return Ok((NDIR + 1, 2, [rest / apb, rest % apb, 0]));
        }
        rest -= apb * apb;
        if rest < apb * apb * apb {
            return Ok((
                NDIR + 2,
                3,
                [rest / (apb * apb), (rest / apb) % apb, rest % apb],
            ));
        }
        Err(Ext2Error::TooBig)
    }

    /// Checks that a pointer of inode `ino` names a block of the filesystem.
    fn check_block(&self, ino: u32, block: u32, what: &str) -> Result {
        if block < self.sb.first_data_block || block >= self.sb.blocks_count {
            return Err(Ext2Error::Corrupt(format!(
                "inode {ino}: {what} pointer {block} out of range ({}..{})",
                self.sb.first_data_block, self.sb.blocks_count
            )));
        }
        Ok(())
    }

    /// The pointers of indirect block `block`, through the cache.
    fn indirect(&self, meta: &mut Meta, block: u32) -> Result<Arc<Vec<u32>>> {
        if let Some(table) = meta.indirect.get(&block) {
            return Ok(table.clone());
        }
        let mut raw = vec![0u8; self.sb.block_size() as usize];
        self.device
            .read_meta(u64::from(block) << self.sb.block_shift, &mut raw)?;
        let table: Arc<Vec<u32>> = Arc::new(
            raw.chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
        if meta.indirect_bytes + raw.len() > INDIRECT_CACHE_BYTES && meta.dirty_indirect.is_empty()
        {
            meta.indirect.clear();
            meta.indirect_bytes = 0;
        }
        meta.indirect_bytes += raw.len();
        meta.indirect.insert(block, table.clone());
        Ok(table)
    }

    /// The stretch of pointers (or hole) that logical block `lbn` starts in.
    fn stretch(&self, meta: &mut Meta, inode: &Inode, lbn: u64) -> Result<Stretch> {
        let (root, depth, idx) = self.path(lbn)?;
        if depth == 0 {
            let table = (0..NDIR).map(|i| inode.block(i)).collect();
            return Ok(Stretch::Pointers {
                table: Arc::new(table),
                index: root,
            });
        }
        let apb = self.sb.addrs_per_block();
        let mut ptr = inode.block(root);
        for level in 0..depth {
            if ptr == 0 {
                let span = apb.pow((depth - level) as u32);
                let within = (level..depth).fold(0, |acc, l| acc * apb + idx[l]);
                return Ok(Stretch::Hole { len: span - within });
            }
            self.check_block(inode.ino, ptr, "indirect block")?;
            let table = self.indirect(meta, ptr)?;
            let index = idx[level] as usize;
            if level + 1 == depth {
                return Ok(Stretch::Pointers { table, index });
            }
            ptr = table[index];
        }
        unreachable!("the loop returns at the last level")
    }

    /// Maps `lbn` of `inode` to a filesystem block (`None` for a hole) and counts the
    /// following blocks that continue it: physically contiguous blocks, or holes.
    pub(crate) fn map(
        &self,
        meta: &mut Meta,
        inode: &Inode,
        lbn: u64,
    ) -> Result<(Option<u32>, u64)> {
        let first = self.stretch(meta, inode, lbn)?;
        let target = match &first {
            Stretch::Hole { .. } => None,
            Stretch::Pointers { table, index } => Some(table[*index]).filter(|&p| p != 0),
        };
        if let Some(block) = target {
            self.check_block(inode.ino, block, "data block")?;
        }
        let cap = if target.is_some() {
            MAX_RUN
        } else {
            MAX_HOLE_RUN
        };
        let max = self.max_blocks();
        let mut run = 0u64;
        let mut stretch = first;
        let mut consumed = 1u64;
        loop {
            match &stretch {
                Stretch::Hole { len } => {
                    if target.is_some() {
                        break;
                    }
                    let more = (len - consumed).min(cap - run);
                    run += more;
                    if run >= cap {
                        break;
                    }
                }
                Stretch::Pointers { table, index } => {
                    for &next in &table[index + consumed as usize..] {
                        if run >= cap {
                            break;
                        }
                        let continues = match target {
                            None => next == 0,
                            Some(block) => {
                                next != 0
                                    && u64::from(next) == u64::from(block) + run + 1
                                    && next < self.sb.blocks_count
                            }
                        };
                        if !continues {
                            return Ok((target, run));
                        }
                        run += 1;
                    }
                    if run >= cap {
                        break;
                    }
                }
            }
            let next = lbn + run + 1;
            if next >= max {
                break;
            }
            // A corrupt pointer further on ends the run; mapping that block itself
            // reports it.
            stretch = match self.stretch(meta, inode, next) {
                Ok(stretch) => stretch,
                Err(_) => break,
            };
            consumed = 0;
        }
        Ok((target, run))
    }

    // ---- allocation ----

    /// The block bitmap of `group`, loaded on first use.
    fn bitmap<'m>(&self, meta: &'m mut Meta, group: u32) -> Result<&'m mut Vec<u8>> {
        match meta.bitmaps.entry(group) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => {
                let mut raw = vec![0u8; self.sb.block_size() as usize];
                let block = self.groups[group as usize].block_bitmap;
                self.device
                    .read_meta(u64::from(block) << self.sb.block_shift, &mut raw)?;
                Ok(entry.insert(raw))
            }
        }
    }

    /// Takes one free block, the first free at or after `goal` (wrapping around the
    /// groups).
    fn take_block(&self, meta: &mut Meta, goal: u32) -> Result<u32> {
        let sb = &self.sb;
        let goal = if goal < sb.first_data_block || goal >= sb.blocks_count {
            sb.first_data_block
        } else {
            goal
        };
        let groups = sb.groups();
        let g0 = (goal - sb.first_data_block) / sb.blocks_per_group;
        let bit0 = (goal - sb.first_data_block) % sb.blocks_per_group;
        for step in 0..=groups {
            let group = (g0 + step) % groups;
            if meta.group_free[group as usize] == 0 {
                continue;
            }
            let (from, to) = match step {
                0 => (bit0, sb.blocks_in_group(group)),
                s if s == groups => (0, bit0),
                _ => (0, sb.blocks_in_group(group)),
            };
            let bitmap = self.bitmap(meta, group)?;
            if let Some(bit) = first_clear(bitmap, from, to) {
                bitmap[(bit / 8) as usize] |= 1 << (bit % 8);
                meta.group_free[group as usize] -= 1;
                meta.free_blocks = meta.free_blocks.saturating_sub(1);
                meta.dirty_bitmaps.insert(group);
                meta.dirty_groups.insert(group);
                meta.dirty_super = true;
                return Ok(sb.first_data_block + group * sb.blocks_per_group + bit);
            }
        }
        Err(Ext2Error::NoSpace)
    }

    /// Returns `block` to its group's bitmap.
    fn free_block(&self, meta: &mut Meta, block: u32) -> Result {
        let sb = &self.sb;
        let group = (block - sb.first_data_block) / sb.blocks_per_group;
        let bit = (block - sb.first_data_block) % sb.blocks_per_group;
        let bitmap = self.bitmap(meta, group)?;
        let (byte, mask) = ((bit / 8) as usize, 1u8 << (bit % 8));
        if bitmap[byte] & mask == 0 {
            return Err(Ext2Error::Corrupt(format!(
                "freeing block {block}, which is already free"
            )));
        }
        bitmap[byte] &= !mask;
        meta.group_free[group as usize] += 1;
        meta.free_blocks += 1;
        meta.dirty_bitmaps.insert(group);
        meta.dirty_groups.insert(group);
        meta.dirty_super = true;
        if meta.indirect.remove(&block).is_some() {
            meta.indirect_bytes = meta.indirect_bytes.saturating_sub(sb.block_size() as usize);
        }
        meta.dirty_indirect.remove(&block);
        meta.fresh_indirect.remove(&block);
        Ok(())
    }

    /// Sets a block pointer.
    fn set_slot(&self, meta: &mut Meta, inode: &mut Inode, slot: Slot, block: u32) -> Result {
        match slot {
            Slot::Inode(index) => inode.set_block(index, block),
            Slot::Table(table, index) => {
                let mut pointers = self.indirect(meta, table)?;
                Arc::make_mut(&mut pointers)[index] = block;
                meta.indirect.insert(table, pointers);
                meta.dirty_indirect.insert(table);
            }
        }
        Ok(())
    }

    /// Adds (or with a negative count removes) `blocks` blocks to `i_blocks`.
    fn account(&self, inode: &mut Inode, blocks: i64) -> Result {
        let per_block = i64::from(self.sb.block_size() >> 9);
        let sectors = i64::from(inode.sectors()) + blocks * per_block;
        let sectors = u32::try_from(sectors).map_err(|_| {
            if sectors < 0 {
                Ext2Error::Corrupt(format!(
                    "inode {}: i_blocks below the blocks it holds",
                    inode.ino
                ))
            } else {
                Ext2Error::TooBig
            }
        })?;
        inode.set_sectors(sectors);
        Ok(())
    }

    /// Where a file with no neighbouring block to follow should start: its inode's
    /// group.
    fn home_goal(&self, ino: u32) -> u32 {
        let group = (ino - 1) / self.sb.inodes_per_group;
        self.sb.first_data_block + group * self.sb.blocks_per_group
    }

    /// Allocates the data block of `lbn` (and the indirect blocks leading to it) if
    /// it is a hole. `goal` is where the next block should preferably go; it is
    /// moved past whatever block `lbn` ends up in. Every block taken is pushed on
    /// `taken` with the slot that now points to it, parents before children.
    fn alloc_block(
        &self,
        meta: &mut Meta,
        inode: &mut Inode,
        lbn: u64,
        goal: &mut u32,
        taken: &mut Vec<(Slot, u32)>,
    ) -> Result {
        let (root, depth, idx) = self.path(lbn)?;
        let mut slot = Slot::Inode(root);
        let mut ptr = inode.block(root);
        for level in 0..=depth {
            // Below an indirect block, the index of the next pointer in it.
            let next_index = idx[..depth].get(level).map(|&i| i as usize);
            if ptr == 0 {
                // Check i_blocks has room before taking the block.
                self.account(inode, 1)?;
                let block = match self.take_block(meta, *goal) {
                    Ok(block) => block,
                    Err(err) => {
                        self.account(inode, -1)?;
                        return Err(err);
                    }
                };
                if next_index.is_some() {
                    // A new indirect block: all holes.
                    let zero = Arc::new(vec![0u32; self.sb.addrs_per_block() as usize]);
                    meta.indirect_bytes += self.sb.block_size() as usize;
                    meta.indirect.insert(block, zero);
                    meta.dirty_indirect.insert(block);
                    meta.fresh_indirect.insert(block);
                }
                self.set_slot(meta, inode, slot, block)?;
                taken.push((slot, block));
                ptr = block;
            } else {
                let what = if next_index.is_some() {
                    "indirect block"
                } else {
                    "data block"
                };
                self.check_block(inode.ino, ptr, what)?;
            }
            *goal = ptr.saturating_add(1);
            if let Some(index) = next_index {
                let table = self.indirect(meta, ptr)?;
                slot = Slot::Table(ptr, index);
                ptr = table[index];
            }
        }
        Ok(())
    }

    /// Allocates every hole among logical blocks `first..=last` of `inode`, then
    /// writes back what changed (bitmaps, descriptors, superblock, indirect blocks,
    /// the inode). All or nothing: on error every block this call took is given
    /// back, so the block map reads as before.
    pub(crate) fn alloc_blocks(&self, inode: &mut Inode, first: u64, last: u64) -> Result {
        self.check_writable()?;
        if last >= self.max_blocks() {
            return Err(Ext2Error::TooBig);
        }
        let mut meta = self.meta();
        let mut goal = self.home_goal(inode.ino);
        if first > 0 {
            if let Ok((Some(block), _)) = self.map(&mut meta, inode, first - 1) {
                goal = block.saturating_add(1);
            }
        }
        let before = inode.clone();
        let mut taken = Vec::new();
        let mut result = Ok(());
        for lbn in first..=last {
            if let Err(err) = self.alloc_block(&mut meta, inode, lbn, &mut goal, &mut taken) {
                result = Err(err);
                break;
            }
        }
        if result.is_ok() {
            let changed = *inode != before;
            match self.commit(&mut meta, changed.then_some(&*inode), Order::Alloc) {
                Ok(()) => return Ok(()),
                // The inode is written last, so it is not on disk: undo in memory
                // too, and write the undoing back (what this commit did not write
                // stays dirty for the next commit).
                Err(err) => result = Err(err),
            }
        }
        // Children were pushed after their parents: undo in reverse.
        for &(slot, block) in taken.iter().rev() {
            if let Err(err) = self.untake(&mut meta, inode, slot, block) {
                result = result.and(Err(err));
                break;
            }
        }
        let changed = *inode != before;
        let written = self.commit(&mut meta, changed.then_some(&*inode), Order::Free);
        result.and(written)
    }

    /// Gives back a block [`Ext2Fs::alloc_block`] took and clears its slot.
    fn untake(&self, meta: &mut Meta, inode: &mut Inode, slot: Slot, block: u32) -> Result {
        self.set_slot(meta, inode, slot, 0)?;
        self.free_block(meta, block)?;
        self.account(inode, -1)
    }

    /// Frees every block of `inode` at logical block `keep` and above (and the
    /// indirect blocks left empty), then writes back what changed.
    pub(crate) fn free_blocks_from(&self, inode: &mut Inode, keep: u64) -> Result {
        self.check_writable()?;
        let mut meta = self.meta();
        let before = inode.clone();
        let result = self.free_tail(&mut meta, inode, keep);
        let changed = *inode != before;
        let written = self.commit(&mut meta, changed.then_some(&*inode), Order::Free);
        result.and(written)
    }

    fn free_tail(&self, meta: &mut Meta, inode: &mut Inode, keep: u64) -> Result {
        for index in (keep.min(NDIR as u64) as usize)..NDIR {
            let block = inode.block(index);
            if block != 0 {
                self.check_block(inode.ino, block, "data block")?;
                self.free_block(meta, block)?;
                inode.set_block(index, 0);
                self.account(inode, -1)?;
            }
        }
        let apb = self.sb.addrs_per_block();
        let mut base = NDIR as u64;
        for depth in 1..=3u32 {
            let span = apb.pow(depth);
            let root = NDIR + depth as usize - 1;
            let block = inode.block(root);
            if keep < base + span && block != 0 {
                self.check_block(inode.ino, block, "indirect block")?;
                let from = keep.saturating_sub(base);
                if self.free_subtree(meta, inode, block, depth, from)? {
                    self.free_block(meta, block)?;
                    inode.set_block(root, 0);
                    self.account(inode, -1)?;
                }
            }
            base += span;
        }
        Ok(())
    }

    /// Frees the blocks at index `from` and above under indirect block `block` of
    /// `depth` levels; returns whether the block is now all holes.
    fn free_subtree(
        &self,
        meta: &mut Meta,
        inode: &mut Inode,
        block: u32,
        depth: u32,
        from: u64,
    ) -> Result<bool> {
        let apb = self.sb.addrs_per_block();
        let span = apb.pow(depth - 1);
        let table = self.indirect(meta, block)?;
        for index in (from / span) as usize..apb as usize {
            let child = table[index];
            if child == 0 {
                continue;
            }
            let child_base = index as u64 * span;
            let whole = child_base >= from;
            let freed = if depth == 1 {
                self.check_block(inode.ino, child, "data block")?;
                whole
            } else {
                self.check_block(inode.ino, child, "indirect block")?;
                self.free_subtree(
                    meta,
                    inode,
                    child,
                    depth - 1,
                    from.saturating_sub(child_base),
                )?
            };
            if freed {
                self.free_block(meta, child)?;
                self.account(inode, -1)?;
                self.set_slot(meta, inode, Slot::Table(block, index), 0)?;
            }
        }
        Ok(self.indirect(meta, block)?.iter().all(|&p| p == 0))
    }

    /// Notes that the filesystem now holds a file of `size` bytes (sets the
    /// `large_file` feature when needed).
    pub(crate) fn note_size(&self, size: u64) -> Result {
        if size < 1 << 31 {
            return Ok(());
        }
        if self.sb.rev_level == 0 {
            return Err(Ext2Error::TooBig);
        }
        let mut meta = self.meta();
        if meta.feature_ro_compat & RO_COMPAT_LARGE_FILE == 0 {
            meta.feature_ro_compat |= RO_COMPAT_LARGE_FILE;
            meta.dirty_super = true;
            self.commit(&mut meta, None, Order::Free)?;
        }
        Ok(())
    }

    /// Writes `inode` back with whatever metadata is still dirty (left by a commit
    /// that failed part way), pointers before counts ([`Order::Free`]).
    pub(crate) fn write_back(&self, inode: &Inode) -> Result {
        self.check_writable()?;
        let mut meta = self.meta();
        self.commit(&mut meta, Some(inode), Order::Free)
    }

    /// Writes back dirty bitmaps, group descriptor counts, superblock counts,
    /// indirect blocks and `inode`, in `order`.
    ///
    /// An item leaves its dirty set only once its write succeeded: when one write
    /// fails, the error is returned and everything not yet written stays dirty, for
    /// the next commit (a retried operation, the next sync) to write. `inode` is
    /// always written after the indirect blocks, and indirect blocks never written
    /// before (`fresh_indirect`) before the others, so that no pointer on disk ever
    /// leads to an indirect block whose contents are not there yet.
    fn commit(&self, meta: &mut Meta, inode: Option<&Inode>, order: Order) -> Result {
        match order {
            Order::Alloc => {
                self.commit_counts(meta)?;
                self.commit_pointers(meta, inode)
            }
            Order::Free => {
                self.commit_pointers(meta, inode)?;
                self.commit_counts(meta)
            }
        }
    }

    /// Writes back the dirty bitmaps, group free counts and superblock fields.
    fn commit_counts(&self, meta: &mut Meta) -> Result {
        let shift = self.sb.block_shift;
        while let Some(&group) = meta.dirty_bitmaps.first() {
            let block = self.groups[group as usize].block_bitmap;
            self.device
                .write_meta(u64::from(block) << shift, &meta.bitmaps[&group])?;
            meta.dirty_bitmaps.remove(&group);
        }
        let table = u64::from(self.sb.first_data_block + 1) << shift;
        while let Some(&group) = meta.dirty_groups.first() {
            let mut count = [0u8; 2];
            put16(&mut count, 0, meta.group_free[group as usize]);
            self.device.write_meta(
                table + u64::from(group) * GROUP_DESC_SIZE as u64 + 12,
                &count,
            )?;
            meta.dirty_groups.remove(&group);
        }
        if meta.dirty_super {
            let mut count = [0u8; 4];
            put32(&mut count, 0, meta.free_blocks);
            self.device.write_meta(SUPERBLOCK_OFFSET + 12, &count)?;
            if self.sb.rev_level >= 1 {
                put32(&mut count, 0, meta.feature_ro_compat);
                self.device.write_meta(SUPERBLOCK_OFFSET + 100, &count)?;
            }
            meta.dirty_super = false;
        }
        Ok(())
    }

    /// Writes back the dirty indirect blocks, the new ones first (only the others
    /// and the inode can point to them), then `inode`.
    fn commit_pointers(&self, meta: &mut Meta, inode: Option<&Inode>) -> Result {
        let shift = self.sb.block_shift;
        loop {
            let next = meta
                .fresh_indirect
                .first()
                .or_else(|| meta.dirty_indirect.first());
            let Some(&block) = next else {
                break;
            };
            let bytes: Vec<u8> = meta.indirect[&block]
                .iter()
                .flat_map(|p| p.to_le_bytes())
                .collect();
            self.device.write_meta(u64::from(block) << shift, &bytes)?;
            meta.fresh_indirect.remove(&block);
            meta.dirty_indirect.remove(&block);
        }
        if let Some(inode) = inode {
            self.write_inode(inode)?;
        }
        Ok(())
    }

    // ---- directories and paths ----

    /// The entries of directory inode `dir` (`.` and `..` included), read block by
    /// block through its block map.
    pub fn read_dir_inode(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        if dir.kind() != FileKind::Directory {
            return Err(Ext2Error::NotADirectory(format!("inode {}", dir.ino)));
        }
        let bsize = u64::from(self.sb.block_size());
        let blocks = dir.size().div_ceil(bsize);
        let mut entries = Vec::new();
        let mut raw = vec![0u8; bsize as usize];
        for lbn in 0..blocks {
            let (block, _) = self.map(&mut self.meta(), dir, lbn)?;
            let Some(block) = block else {
                return Err(Ext2Error::Corrupt(format!(
                    "directory inode {} has a hole at block {lbn}",
                    dir.ino
                )));
            };
            self.device
                .read_meta(u64::from(block) << self.sb.block_shift, &mut raw)?;
            let where_ = || format!("directory inode {} block {lbn}", dir.ino);
            parse_dir_block(
                &raw,
                self.sb.has_filetype(),
                self.sb.inodes_count,
                &where_,
                &mut entries,
            )?;
        }
        Ok(entries)
    }

    /// The inode `path` names, following symbolic links (the last one too when
    /// `follow_last`). Paths are taken from the root; `.` and `..` work as usual.
    pub fn lookup(self: &Arc<Self>, path: &str, follow_last: bool) -> Result<Inode> {
        let mut pending: VecDeque<Vec<u8>> = components(path.as_bytes());
        let mut dir = self.read_inode(ROOT_INO)?;
        let mut walked = String::new();
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if dir.kind() != FileKind::Directory {
                return Err(Ext2Error::NotADirectory(display_path(&walked)));
            }
            walked.push('/');
            walked.push_str(&String::from_utf8_lossy(&name));
            let entries = self.read_dir_inode(&dir)?;
            let entry = entries
                .iter()
                .find(|e| e.name == name)
                .ok_or_else(|| Ext2Error::NotFound(display_path(&walked)))?;
            let child = self.read_inode(entry.ino)?;
            if child.kind() == FileKind::Symlink && (follow_last || !pending.is_empty()) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Ext2Error::SymlinkLoop(display_path(path)));
                }
                let target = self.symlink_target(&child)?;
                let mut parts = components(&target);
                parts.extend(pending);
                pending = parts;
                pop_component(&mut walked);
                if target.first() == Some(&b'/') {
                    dir = self.read_inode(ROOT_INO)?;
                    walked.clear();
                }
                continue;
            }
            if name == b".." {
                pop_component(&mut walked);
                pop_component(&mut walked);
            }
            dir = child;
        }
        Ok(dir)
    }

    /// The target of a symbolic link: in the inode for a fast link, otherwise its
    /// data, read through genpager like any file data.
    pub fn symlink_target(self: &Arc<Self>, link: &Inode) -> Result<Vec<u8>> {
        let size = link.size();
        let acl_sectors = if link.file_acl() != 0 {
            self.sb.block_size() >> 9
        } else {
            0
        };
        if size < 60 && link.sectors().saturating_sub(acl_sectors) == 0 {
            return Ok(link.block_bytes()[..size as usize].to_vec());
        }
        if size > u64::from(self.sb.block_size()) {
            return Err(Ext2Error::Corrupt(format!(
                "symbolic link inode {} is {size} bytes long",
                link.ino
            )));
        }
        self.vnode(link.ino)?.read_to_vec()
    }

    /// The entries of the directory at `path`, without `.` and `..`.
    pub fn read_dir(self: &Arc<Self>, path: &str) -> Result<Vec<DirEntry>> {
        let dir = self.lookup(path, true)?;
        if dir.kind() != FileKind::Directory {
            return Err(Ext2Error::NotADirectory(display_path(path)));
        }
        let mut entries = self.read_dir_inode(&dir)?;
        entries.retain(|e| e.name != b"." && e.name != b"..");
        Ok(entries)
    }

    /// Every file and directory under the directory at `path` (itself excluded),
    /// depth first. A directory met twice is a loop: an error.
    pub fn walk(self: &Arc<Self>, path: &str) -> Result<Vec<WalkEntry>> {
        let top = self.lookup(path, true)?;
        if top.kind() != FileKind::Directory {
            return Err(Ext2Error::NotADirectory(display_path(path)));
        }
        let mut seen = BTreeSet::from([top.ino]);
        let mut out = Vec::new();
        let base = path.trim_end_matches('/').to_string();
        let mut stack = vec![(base, top)];
        while let Some((dir_path, dir)) = stack.pop() {
            for entry in self.read_dir_inode(&dir)? {
                if entry.name == b"." || entry.name == b".." {
                    continue;
                }
                let child_path = format!("{dir_path}/{}", entry.name_lossy());
                let child = self.read_inode(entry.ino)?;
                let kind = child.kind();
                if kind == FileKind::Directory {
                    if !seen.insert(child.ino) {
                        return Err(Ext2Error::Corrupt(format!(
                            "directory loop: {child_path} is directory inode {}, met before",
                            child.ino
                        )));
                    }
                    stack.push((child_path.clone(), child));
                }
                out.push(WalkEntry {
                    path: child_path,
                    ino: entry.ino,
                    kind,
                });
            }
        }
        Ok(out)
    }

    /// Opens the regular file at `path` (symbolic links followed) as a vnode.
    pub fn open_file(self: &Arc<Self>, path: &str) -> Result<Arc<Ext2File<D>>> {
        let inode = self.lookup(path, true)?;
        match inode.kind() {
            FileKind::Regular => self.vnode(inode.ino),
            FileKind::Directory => Err(Ext2Error::IsADirectory(display_path(path))),
            _ => Err(Ext2Error::NotAFile(display_path(path))),
        }
    }

    /// The live vnode of inode `ino`, if there is one.
    fn live_vnode(&self, ino: u32) -> Option<Arc<Ext2File<D>>> {
        self.vnodes.lock().get(&ino).and_then(Weak::upgrade)
    }

    /// The vnode of inode `ino`: the live one if the inode is already open, else a
    /// new one built from the inode as it is on the disk now.
    ///
    /// The inode is read only under `opening`, after the table showed no live
    /// vnode: an inode read earlier (by `lookup`, say) may predate what the last
    /// vnode wrote back before it went away, and a vnode built from it would write
    /// the old block map and size back on its next sync. A vnode whose last handle
    /// is gone has finished with its inode (its owner synced it before dropping it),
    /// and none can come back to life, so the inode read under `opening` is current
    /// until the new vnode is in the table. The table's lock is a spin lock, so the
    /// vnode is built outside it and none is ever dropped under it.
    pub(crate) fn vnode(self: &Arc<Self>, ino: u32) -> Result<Arc<Ext2File<D>>> {
        if let Some(vnode) = self.live_vnode(ino) {
            return Ok(vnode);
        }
        let _opening = self.opening.lock();
        if let Some(vnode) = self.live_vnode(ino) {
            return Ok(vnode);
        }
        let inode = self.read_inode(ino)?;
        let fresh = Arc::new(Ext2File::new(self.clone(), inode));
        let mut vnodes = self.vnodes.lock();
        vnodes.retain(|_, v| v.strong_count() > 0);
        vnodes.insert(ino, Arc::downgrade(&fresh));
        drop(vnodes);
        Ok(fresh)
    }
}

/// The first clear bit in `from..to` of `bitmap`.
fn first_clear(bitmap: &[u8], from: u32, to: u32) -> Option<u32> {
    let mut bit = from;
    while bit < to {
        let byte = bitmap[(bit / 8) as usize];
        if bit % 8 == 0 && byte == 0xFF {
            bit += 8;
            continue;
        }
        if byte & (1 << (bit % 8)) == 0 {
            return Some(bit);
        }
        bit += 1;
    }
    None
}

/// The non-empty, non-`.` components of `path`.
fn components(path: &[u8]) -> VecDeque<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// Drops the last `/name` of `path`.
fn pop_component(path: &mut String) {
    path.truncate(path.rfind('/').unwrap_or(0));
}

/// `path` as shown in messages: absolute, `/` for the root.
fn display_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}
