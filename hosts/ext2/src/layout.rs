//! The on-disk formats: superblock, group descriptors, inodes, directory entries.
//! Parsing checks every field the host relies on, so a corrupt image is an
//! [`Ext2Error`], never a panic or an out-of-range access.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::error::{Ext2Error, Result};

/// Byte offset of the primary superblock in the image.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock record.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// The superblock magic.
pub const EXT2_MAGIC: u16 = 0xEF53;
/// The root directory's inode number.
pub const ROOT_INO: u32 = 2;
/// Direct block pointers in an inode.
pub const NDIR: usize = 12;
/// Size of a group descriptor without the `64bit` feature.
pub const GROUP_DESC_SIZE: usize = 32;

/// `s_feature_incompat`: directory entries carry a file type byte.
pub const INCOMPAT_FILETYPE: u32 = 0x0002;
/// `s_feature_ro_compat`: superblock backups only in some groups.
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
/// `s_feature_ro_compat`: files may exceed 2 GiB.
pub const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
/// `s_feature_ro_compat`: the never-used B-tree directory flag.
pub const RO_COMPAT_BTREE_DIR: u32 = 0x0004;

/// Incompatible features this host reads and writes.
const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE;
/// Read-only-compatible features this host also writes correctly.
const RO_COMPAT_WRITABLE: u32 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;

/// Names of incompatible feature bits, for messages.
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (0x0001, "compression"),
    (0x0002, "filetype"),
    (0x0004, "needs_recovery"),
    (0x0008, "journal_dev"),
    (0x0010, "meta_bg"),
    (0x0040, "extent"),
    (0x0080, "64bit"),
    (0x0100, "mmp"),
    (0x0200, "flex_bg"),
    (0x0400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];

/// Names of read-only-compatible feature bits, for messages.
const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (0x0001, "sparse_super"),
    (0x0002, "large_file"),
    (0x0004, "btree_dir"),
    (0x0008, "huge_file"),
    (0x0010, "uninit_bg"),
    (0x0020, "dir_nlink"),
    (0x0040, "extra_isize"),
    (0x0100, "quota"),
    (0x0200, "bigalloc"),
    (0x0400, "metadata_csum"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x8000, "verity"),
];

/// Names the bits of `mask` per `names`, unknown bits in hex.
fn feature_names(mask: u32, names: &[(u32, &str)]) -> String {
    let mut out = Vec::new();
    let mut rest = mask;
    for &(bit, name) in names {
        if mask & bit != 0 {
            out.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        out.push(format!("{rest:#x}"));
    }
    out.join(", ")
}

pub(crate) fn le16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn le32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

pub(crate) fn put16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

pub(crate) fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// The checked geometry and features of a filesystem, from its superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// Inodes in the filesystem.
    pub inodes_count: u32,
    /// Blocks in the filesystem.
    pub blocks_count: u32,
    /// Free blocks, as the superblock records them.
    pub free_blocks: u32,
    /// Free inodes, as the superblock records them.
    pub free_inodes: u32,
    /// The first block the groups cover (1 for 1 KiB blocks, else 0).
    pub first_data_block: u32,
    /// `log2` of the block size.
    pub block_shift: u32,
    /// Blocks per group.
    pub blocks_per_group: u32,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// The revision: 0 (original) or 1 (dynamic).
    pub rev_level: u32,
    /// The first inode number available to files.
    pub first_ino: u32,
    /// Bytes per on-disk inode record.
    pub inode_size: u32,
    /// Compatible features.
    pub feature_compat: u32,
    /// Incompatible features.
    pub feature_incompat: u32,
    /// Read-only-compatible features.
    pub feature_ro_compat: u32,
}

impl Superblock {
    /// Parses and checks the 1024-byte superblock record. `image_len` is the image
    /// file's length, checked against the block count.
    pub fn parse(raw: &[u8], image_len: u64) -> Result<Self> {
        if raw.len() < SUPERBLOCK_SIZE {
            return Err(Ext2Error::Corrupt(format!(
                "image is {image_len} bytes, too short to hold a superblock"
            )));
        }
        let magic = le16(raw, 56);
        if magic != EXT2_MAGIC {
            return Err(Ext2Error::BadMagic(magic));
        }
        let rev_level = le32(raw, 76);
        if rev_level > 1 {
            return Err(Ext2Error::Unsupported(format!(
                "revision {rev_level} (only 0 and 1 exist)"
            )));
        }
        let log_block = le32(raw, 24);
        if log_block > 6 {
            return Err(Ext2Error::Unsupported(format!(
                "block size 2^{} bytes (1 KiB to 64 KiB supported)",
                u64::from(log_block) + 10
            )));
        }
        let block_shift = log_block + 10;
        let block_size = 1u32 << block_shift;
        let log_frag = le32(raw, 28);
        if log_frag != log_block {
            return Err(Ext2Error::Unsupported(format!(
                "fragment size {} differs from block size {block_size}",
                1u64 << (u64::from(log_frag).min(40) + 10)
            )));
        }
        let (first_ino, inode_size, compat, incompat, ro_compat) = if rev_level == 0 {
            (11, 128, 0, 0, 0)
        } else {
            (
                le32(raw, 84),
                u32::from(le16(raw, 88)),
                le32(raw, 92),
                le32(raw, 96),
                le32(raw, 100),
            )
        };
        let unsupported = incompat & !INCOMPAT_SUPPORTED;
        if unsupported != 0 {
            return Err(Ext2Error::Unsupported(format!(
                "incompatible feature flags: {}",
                feature_names(unsupported, INCOMPAT_NAMES)
            )));
        }
        let sb = Superblock {
            inodes_count: le32(raw, 0),
            blocks_count: le32(raw, 4),
            free_blocks: le32(raw, 12),
            free_inodes: le32(raw, 16),
            first_data_block: le32(raw, 20),
            block_shift,
            blocks_per_group: le32(raw, 32),
            inodes_per_group: le32(raw, 40),
            rev_level,
            first_ino,
            inode_size,
            feature_compat: compat,
            feature_incompat: incompat,
            feature_ro_compat: ro_compat,
        };
        sb.check(image_len)?;
        Ok(sb)
    }

    fn check(&self, image_len: u64) -> Result {
        let corrupt = |what: String| Err(Ext2Error::Corrupt(format!("superblock: {what}")));
        let bits = 8 * self.block_size();
        if self.blocks_per_group == 0 || self.blocks_per_group > bits {
            return corrupt(format!(
                "{} blocks per group (1 to {bits})",
                self.blocks_per_group
            ));
        }
        if self.inodes_per_group == 0 || self.inodes_per_group > bits {
            return corrupt(format!(
                "{} inodes per group (1 to {bits})",
                self.inodes_per_group
            ));
        }
        if !self.inode_size.is_power_of_two()
            || self.inode_size < 128
            || self.inode_size > self.block_size()
        {
            return corrupt(format!("inode size {}", self.inode_size));
        }
        let expected_first = u32::from(self.block_shift == 10);
        if self.first_data_block != expected_first {
            return corrupt(format!(
                "first data block {} (expected {expected_first} for {}-byte blocks)",
                self.first_data_block,
                self.block_size()
            ));
        }
        if self.blocks_count <= self.first_data_block + 2 {
            return corrupt(format!("{} blocks", self.blocks_count));
        }
        let groups = self.groups();
        if u64::from(self.inodes_count) > u64::from(groups) * u64::from(self.inodes_per_group)
            || self.inodes_count < ROOT_INO
        {
            return corrupt(format!(
                "{} inodes for {groups} groups of {}",
                self.inodes_count, self.inodes_per_group
            ));
        }
        if self.rev_level == 1 && (self.first_ino <= ROOT_INO || self.first_ino > self.inodes_count)
        {
            return corrupt(format!("first inode {}", self.first_ino));
        }
        let needed = u64::from(self.blocks_count) << self.block_shift;
        if image_len < needed {
            return corrupt(format!(
                "{} blocks of {} bytes need {needed} bytes but the image has {image_len}",
                self.blocks_count,
                self.block_size()
            ));
        }
        let gdt_end = u64::from(self.first_data_block) + 1 + self.gdt_blocks();
        if gdt_end > u64::from(self.blocks_count) {
            return corrupt(format!("group descriptors of {groups} groups do not fit"));
        }
        Ok(())
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.block_shift
    }

    /// Number of block groups.
    pub fn groups(&self) -> u32 {
        (self.blocks_count - self.first_data_block).div_ceil(self.blocks_per_group)
    }

    /// Blocks the group descriptor table occupies.
    pub fn gdt_blocks(&self) -> u64 {
        (u64::from(self.groups()) * GROUP_DESC_SIZE as u64).div_ceil(u64::from(self.block_size()))
    }

    /// Blocks actually in group `group` (the last may be short).
    pub fn blocks_in_group(&self, group: u32) -> u32 {
        let start = self.first_data_block + group * self.blocks_per_group;
        (self.blocks_count - start).min(self.blocks_per_group)
    }

    /// Whether the image may be written, or why not.
    pub fn writable(&self) -> core::result::Result<(), String> {
        let unknown = self.feature_ro_compat & !RO_COMPAT_WRITABLE;
        if unknown != 0 {
            return Err(format!(
                "read-only-compatible features {} are not supported for writing",
                feature_names(unknown, RO_COMPAT_NAMES)
            ));
        }
        Ok(())
    }

    /// Whether directory entries carry a file type.
    pub fn has_filetype(&self) -> bool {
        self.feature_incompat & INCOMPAT_FILETYPE != 0
    }

    /// Addresses per indirect block.
    pub fn addrs_per_block(&self) -> u64 {
        u64::from(self.block_size() / 4)
    }
}

/// One group descriptor (the fields this host uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupDesc {
    /// Block of the block bitmap.
    pub block_bitmap: u32,
    /// Block of the inode bitmap.
    pub inode_bitmap: u32,
    /// First block of the inode table.
    pub inode_table: u32,
    /// Free blocks in the group.
    pub free_blocks: u16,
    /// Free inodes in the group.
    pub free_inodes: u16,
    /// Directories in the group.
    pub used_dirs: u16,
}

impl GroupDesc {
    /// Parses descriptor bytes (at least 32).
    pub fn parse(raw: &[u8]) -> Self {
        GroupDesc {
            block_bitmap: le32(raw, 0),
            inode_bitmap: le32(raw, 4),
            inode_table: le32(raw, 8),
            free_blocks: le16(raw, 12),
            free_inodes: le16(raw, 14),
            used_dirs: le16(raw, 16),
        }
    }

    /// Checks the descriptor of group `group` against the superblock.
    pub fn check(&self, group: u32, sb: &Superblock) -> Result {
        let table_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size))
            .div_ceil(u64::from(sb.block_size()));
        let in_range = |block: u32, len: u64| {
            block >= sb.first_data_block && u64::from(block) + len <= u64::from(sb.blocks_count)
        };
        if !in_range(self.block_bitmap, 1)
            || !in_range(self.inode_bitmap, 1)
            || !in_range(self.inode_table, table_blocks)
        {
            return Err(Ext2Error::Corrupt(format!(
                "group {group}: bitmap or inode table out of range (block bitmap {}, inode bitmap {}, inode table {})",
                self.block_bitmap, self.inode_bitmap, self.inode_table
            )));
        }
        if u32::from(self.free_blocks) > sb.blocks_in_group(group) {
            return Err(Ext2Error::Corrupt(format!(
                "group {group}: {} free blocks of {}",
                self.free_blocks,
                sb.blocks_in_group(group)
            )));
        }
        Ok(())
    }
}

/// File types of the inode mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A device node, FIFO or socket.
    Other,
}

impl FileKind {
    /// The kind of an inode with mode `mode`.
    pub fn from_mode(mode: u16) -> Self {
        match mode & 0xF000 {
            0x8000 => FileKind::Regular,
            0x4000 => FileKind::Directory,
            0xA000 => FileKind::Symlink,
            _ => FileKind::Other,
        }
    }
}

/// `i_flags`: the file uses extents (ext4), which this host does not read.
pub const INODE_EXTENTS_FL: u32 = 0x0008_0000;
/// `i_flags`: data stored inline in the inode (ext4).
pub const INODE_INLINE_DATA_FL: u32 = 0x1000_0000;

/// One inode: its raw record (kept whole so unknown fields survive a rewrite) and
/// accessors for the fields the host uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// The inode number.
    pub ino: u32,
    /// The on-disk record (`inode_size` bytes).
    pub raw: Vec<u8>,
}

impl Inode {
    /// The mode (type and permission bits).
    pub fn mode(&self) -> u16 {
        le16(&self.raw, 0)
    }

    /// The file type.
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode())
    }

    /// The link count.
    pub fn links(&self) -> u16 {
        le16(&self.raw, 26)
    }

    /// The size in bytes (`i_size_high` counts for regular files only).
    pub fn size(&self) -> u64 {
        let low = u64::from(le32(&self.raw, 4));
        if self.kind() == FileKind::Regular {
            low | (u64::from(le32(&self.raw, 108)) << 32)
        } else {
            low
        }
    }

    /// Sets the size (both halves for a regular file).
    pub fn set_size(&mut self, size: u64) {
        put32(&mut self.raw, 4, size as u32);
        if self.kind() == FileKind::Regular {
            put32(&mut self.raw, 108, (size >> 32) as u32);
        }
    }

    /// `i_blocks`: 512-byte sectors held, indirect and xattr blocks included.
    pub fn sectors(&self) -> u32 {
        le32(&self.raw, 28)
    }

    /// Sets `i_blocks`.
    pub fn set_sectors(&mut self, sectors: u32) {
        put32(&mut self.raw, 28, sectors);
    }

    /// `i_flags`.
    pub fn flags(&self) -> u32 {
        le32(&self.raw, 32)
    }

    /// Block pointer `index` of `i_block` (0..15).
    pub fn block(&self, index: usize) -> u32 {
        le32(&self.raw, 40 + 4 * index)
    }

    /// Sets block pointer `index` of `i_block`.
    pub fn set_block(&mut self, index: usize, block: u32) {
        put32(&mut self.raw, 40 + 4 * index, block);
    }

    /// The 60 bytes of `i_block` (a fast symlink's target lives there).
    pub fn block_bytes(&self) -> &[u8] {
        &self.raw[40..100]
    }

    /// The extended-attribute block, if any.
    pub fn file_acl(&self) -> u32 {
        le32(&self.raw, 104)
    }

    /// Sets the modification and change times.
    pub fn touch(&mut self, now: u32) {
        put32(&mut self.raw, 12, now);
        put32(&mut self.raw, 16, now);
    }
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DirEntry {
    /// The entry's inode.
    pub ino: u32,
    /// The entry's name (raw bytes; ext2 names need not be UTF-8).
    pub name: Vec<u8>,
    /// The type byte when the filesystem records one, else `None`.
    pub file_type: Option<u8>,
}

impl DirEntry {
    /// The name, lossily decoded as UTF-8.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Parses the entries of one directory block, appending the live ones to `out`.
/// `where_` names the block in error messages.
pub fn parse_dir_block(
    block: &[u8],
    filetype: bool,
    inodes_count: u32,
    where_: &dyn Fn() -> String,
    out: &mut Vec<DirEntry>,
) -> Result {
    let mut at = 0;
    while at < block.len() {
        let corrupt = |what: &str| {
            Err(Ext2Error::Corrupt(format!(
                "{}, offset {at}: {what}",
                where_()
            )))
        };
        if block.len() - at < 8 {
            return corrupt("truncated directory entry");
        }
        let ino = le32(block, at);
        let rec_len = usize::from(le16(block, at + 4));
        let (name_len, file_type) = if filetype {
            (usize::from(block[at + 6]), Some(block[at + 7]))
        } else {
            (usize::from(le16(block, at + 6)), None)
        };
        if rec_len < 8 || rec_len % 4 != 0 || rec_len > block.len() - at {
            return corrupt(&format!("bad record length {rec_len}"));
        }
        if ino != 0 {
            if 8 + name_len > rec_len || name_len == 0 {
                return corrupt(&format!(
                    "name length {name_len} does not fit record length {rec_len}"
                ));
            }
            if ino > inodes_count {
                return corrupt(&format!("inode {ino} out of range (1..={inodes_count})"));
            }
            out.push(DirEntry {
                ino,
                name: block[at + 8..at + 8 + name_len].to_vec(),
                file_type,
            });
        }
        at += rec_len;
    }
    Ok(())
}
