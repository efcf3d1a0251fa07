//! The kernel self-test's workload, shared by the two sides that must agree on it: the
//! host tool that builds the ext2 images and later checks them (`examples/kernel_image.rs`,
//! std), and the kernel that runs the workload over a virtio disk (`hosts/kernel`,
//! `no_std`).
//!
//! - The **read-only tree** ([`READ_ONLY`]): files of assorted sizes, with holes, and a
//!   sparse file whose data lies past the double-indirect threshold of both 1 KiB and
//!   4 KiB blocks. The host writes it, `mke2fs -d` copies it into the image, and the host
//!   writes a [`manifest`] of extents and checksums into the image beside it. The kernel's
//!   readers check every file against the manifest read from the image: they trust
//!   nothing of this module but the checksum function and the manifest format.
//! - The **writers' files** ([`WRITTEN`]): each begins with known contents and is changed
//!   by one kernel thread running [`ops`]: overwrites, appends, writes into holes, writes
//!   far past the end, `setsize` down and up. A file has one writer, so its final
//!   contents do not depend on how the threads interleave: [`expected`] computes them,
//!   and the host compares them with what `debugfs` dumps from the image after shutdown.
//!
//! Every function here is deterministic and allocation-light; nothing depends on the
//! block size, so the same plan runs on both images.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;

/// The byte at `offset` of data written with `seed`: a hash of both, never zero, so a
/// hole (zeroes) read where data was written, or data from another offset, stands out.
pub fn pattern_byte(seed: u32, offset: u64) -> u8 {
    let mut x = (offset >> 3)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(seed).wrapping_mul(0x0000_0100_0000_01B3));
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    match (x >> ((offset & 7) * 8)) as u8 {
        0 => 0x5a,
        byte => byte,
    }
}

/// Fills `buf` with the pattern of `seed` as it lies at `offset..offset + buf.len()`
/// (which the caller keeps inside `u64`).
pub fn fill_pattern(seed: u32, offset: u64, buf: &mut [u8]) {
    // The buffer first: the offsets are not taken one past its end (which could be
    // one past u64::MAX).
    for (byte, at) in buf.iter_mut().zip(offset..) {
        *byte = pattern_byte(seed, at);
    }
}

/// FNV-1a (64-bit) of `bytes`, continuing from `hash` (start from [`FNV_START`]).
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// The FNV-1a offset basis.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A file of the generated tree: its path in the image, its size, and where its data
/// lies (everything else is a hole). Extent `i` holds the pattern of seed `seed + i`.
#[derive(Clone, Copy, Debug)]
pub struct FileSpec {
    /// Absolute path in the image.
    pub path: &'static str,
    /// Size in bytes.
    pub size: u64,
    /// `(offset, len)` of each data extent, ascending, not overlapping, inside `size`.
    pub extents: &'static [(u64, u64)],
    /// The pattern seed of the first extent.
    pub seed: u32,
}

impl FileSpec {
    /// The bytes of `offset..offset + len` of the file as generated: zeroes outside its
    /// extents (and at offsets past `u64::MAX`, where no file has bytes).
    pub fn bytes(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        let end = offset.saturating_add(len as u64);
        for (index, &(at, extent_len)) in self.extents.iter().enumerate() {
            let from = at.max(offset);
            let to = at.saturating_add(extent_len).min(end);
            if from < to {
                let slice = &mut out[(from - offset) as usize..(to - offset) as usize];
                fill_pattern(self.seed + index as u32, from, slice);
            }
        }
        out
    }

    /// The whole file as generated (only for files small enough to hold in memory).
    pub fn contents(&self) -> Vec<u8> {
        self.bytes(0, self.size as usize)
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Where the data of [`READ_ONLY`]'s far file lies: past the double-indirect
/// threshold of 4 KiB blocks (12 + 1024 + 1024² blocks, just over 4 GiB), and so of
/// 1 KiB blocks too (12 + 256 + 256² blocks, about 64 MiB): triple indirect in both.
pub const FAR_OFFSET: u64 = 4 * GIB + 64 * MIB + 3 * KIB + 17;

/// The read-only tree the readers verify.
pub const READ_ONLY: &[FileSpec] = &[
    FileSpec {
        path: "/ro/empty",
        size: 0,
        extents: &[],
        seed: 1,
    },
    FileSpec {
        path: "/ro/one",
        size: 1,
        extents: &[(0, 1)],
        seed: 2,
    },
    FileSpec {
        path: "/ro/sector",
        size: 511,
        extents: &[(0, 511)],
        seed: 3,
    },
    FileSpec {
        path: "/ro/page-1",
        size: 4095,
        extents: &[(0, 4095)],
        seed: 4,
    },
    FileSpec {
        path: "/ro/page",
        size: 4096,
        extents: &[(0, 4096)],
        seed: 5,
    },
    FileSpec {
        path: "/ro/page+1",
        size: 4097,
        extents: &[(0, 4097)],
        seed: 6,
    },
    // Past the 12 direct blocks of a 1 KiB filesystem.
    FileSpec {
        path: "/ro/direct",
        size: 30_001,
        extents: &[(0, 30_001)],
        seed: 7,
    },
    // Into the double-indirect blocks of a 1 KiB filesystem (12 + 256 blocks).
    FileSpec {
        path: "/ro/indirect",
        size: 300 * KIB + 5,
        extents: &[(0, 300 * KIB + 5)],
        seed: 8,
    },
    // Holes covering whole pages, parts of pages and single blocks.
    FileSpec {
        path: "/ro/holes",
        size: 200 * KIB,
        extents: &[
            (0, 5000),
            (12 * KIB, 1024),
            (70_000, 3000),
            (150_000, 50 * KIB),
        ],
        seed: 9,
    },
    // A file that ends in a hole.
    FileSpec {
        path: "/ro/tail-hole",
        size: 64 * KIB,
        extents: &[(0, 8 * KIB)],
        seed: 14,
    },
    // A contiguous megabyte: clustered reads.
    FileSpec {
        path: "/ro/mib",
        size: MIB,
        extents: &[(0, MIB)],
        seed: 15,
    },
    // Data past the double-indirect threshold of both block sizes.
    FileSpec {
        path: "/ro/far",
        size: FAR_OFFSET + 12 * KIB,
        extents: &[(0, 2 * KIB), (65 * MIB, 4 * KIB), (FAR_OFFSET, 12 * KIB)],
        seed: 16,
    },
];

/// The files the writer threads change, one thread per file: `WRITTEN[0]` and
/// `WRITTEN[1]` by writers, `WRITTEN[2]` by the `setsize` thread.
pub const WRITTEN: &[FileSpec] = &[
    FileSpec {
        path: "/w/dense",
        size: 40 * KIB,
        extents: &[(0, 40 * KIB)],
        seed: 101,
    },
    FileSpec {
        path: "/w/sparse",
        size: 104_000,
        extents: &[(0, 3000), (100_000, 4000)],
        seed: 102,
    },
    FileSpec {
        path: "/w/resized",
        size: 20_000,
        extents: &[(0, 20_000)],
        seed: 103,
    },
];

/// Steps in each writer's script, in the kernel and in the host's check.
pub const ROUNDS: usize = 120;

/// One step of a writer's script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write `len` bytes of the pattern of `seed` at `offset`.
    Write {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u32,
        /// Pattern seed.
        seed: u32,
    },
    /// Set the file's size (truncate or extend with a hole).
    SetSize(u64),
    /// Flush the file (fsync).
    Sync,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The script of the thread that owns `WRITTEN[file]`, `rounds` steps long.
///
/// Files 0 and 1 are written: overwrites inside the file, appends across the end,
/// writes into its holes, and a rare write far past the end (leaving a hole). File 2
/// is also resized: truncations into the middle of a page and of a block, and
/// extensions that leave a hole, each followed by writes near the new end.
pub fn ops(file: usize, rounds: usize) -> Vec<Op> {
    let spec = &WRITTEN[file];
    let mut rng = Rng(0x9E37_79B9 ^ (file as u64 + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
    let mut size = spec.size;
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let seed = 1000 * (file as u32 + 1) + round as u32;
        let choice = rng.below(16);
        let op = match (file, choice) {
            (_, 0) => Op::Sync,
            (2, 1..=3) => {
                // Shrink to a random point of the file's first part, or grow with a hole.
                let new_size = if rng.below(2) == 0 {
                    rng.below(size.max(1))
                } else {
                    size + rng.below(3 * 4096) + 1
                };
                Op::SetSize(new_size)
            }
            (_, 1) => {
                // Far past the end: a hole between.
                let offset = size + 64 * KIB + rng.below(8192);
                Op::Write {
                    offset,
                    len: 1 + rng.below(3000) as u32,
                    seed,
                }
            }
            (_, 2..=5) => {
                // Append across the end.
                let offset = size.saturating_sub(rng.below(2048));
                Op::Write {
                    offset,
                    len: 1 + rng.below(9000) as u32,
                    seed,
                }
            }
            _ => {
                // Overwrite or fill a hole inside.
                let offset = rng.below(size.max(1));
                Op::Write {
                    offset,
                    len: 1 + rng.below(12_000) as u32,
                    seed,
                }
            }
        };
        size = match op {
            Op::Write { offset, len, .. } => size.max(offset + u64::from(len)),
            Op::SetSize(new_size) => new_size,
            Op::Sync => size,
        };
        out.push(op);
    }
    out
}

/// The contents of `WRITTEN[file]` after its script of `rounds` steps.
pub fn expected(file: usize, rounds: usize) -> Vec<u8> {
    let mut contents = WRITTEN[file].contents();
    for op in ops(file, rounds) {
        let applied = apply(&mut contents, op);
        debug_assert!(applied, "ops() makes only writes that fit in memory");
    }
    contents
}

/// What `op` does to a file's contents held in memory. Returns `false`, with the
/// contents unchanged, for an op whose file would not fit in memory (its end past
/// `usize`, or more than can be allocated); [`ops`] makes none.
pub fn apply(contents: &mut Vec<u8>, op: Op) -> bool {
    let end = match op {
        Op::Write { offset, len, .. } => offset.checked_add(u64::from(len)),
        Op::SetSize(size) => Some(size),
        Op::Sync => return true,
    };
    let Some(end) = end.and_then(|end| usize::try_from(end).ok()) else {
        return false;
    };
    if end > contents.len() && contents.try_reserve(end - contents.len()).is_err() {
        return false;
    }
    match op {
        Op::Write { offset, seed, .. } => {
            if contents.len() < end {
                contents.resize(end, 0);
            }
            // `offset <= end`, which fits in usize.
            fill_pattern(seed, offset, &mut contents[offset as usize..end]);
        }
        Op::SetSize(_) => contents.resize(end, 0),
        Op::Sync => {}
    }
    true
}

/// One file of the manifest: its path and size, and the checksum of each data extent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFile {
    /// Absolute path in the image.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `(offset, len, fnv1a)` of each data extent; the rest of the file reads zero.
    pub extents: Vec<(u64, u64, u64)>,
}

/// The manifest of the read-only tree, as the text stored at `/MANIFEST` in the image:
///
/// ```text
/// genpager-manifest 1
/// file /ro/holes 204800 4
/// extent 0 5000 1b2c3d4e5f607182
/// ...
/// ```
///
/// `checksum(spec, offset, len)` gives each extent's FNV-1a; the host computes it from
/// the files it wrote (so the manifest records what is on disk, not what this module
/// meant to write).
pub fn manifest(mut checksum: impl FnMut(&FileSpec, u64, u64) -> u64) -> String {
    let mut text = String::from("genpager-manifest 1\n");
    for spec in READ_ONLY {
        let _ = writeln!(
            text,
            "file {} {} {}",
            spec.path,
            spec.size,
            spec.extents.len()
        );
        for &(offset, len) in spec.extents {
            let sum = checksum(spec, offset, len);
            let _ = writeln!(text, "extent {offset} {len} {sum:016x}");
        }
    }
    text
}

/// Parses a manifest written by [`manifest`]; `None` if it is malformed: a line not in
/// the format (words missing or left over, numbers that do not parse), or extents out
/// of order, overlapping, or past the file's size. What it returns can be read
/// without overflow: every extent ends inside its file.
pub fn parse_manifest(text: &str) -> Option<Vec<ManifestFile>> {
    let mut lines = text.lines();
    if lines.next()? != "genpager-manifest 1" {
        return None;
    }
    let mut files = Vec::new();
    while let Some(line) = lines.next() {
        let [path, size, count] = fields(line, "file")?;
        let size: u64 = size.parse().ok()?;
        let count: usize = count.parse().ok()?;
        // No room reserved from `count`: a damaged manifest could name any count, and
        // each extent needs a line of its own anyway.
        let mut extents = Vec::new();
        let mut free_from = 0;
        for _ in 0..count {
            let [offset, len, sum] = fields(lines.next()?, "extent")?;
            let offset: u64 = offset.parse().ok()?;
            let len: u64 = len.parse().ok()?;
            let sum = u64::from_str_radix(sum, 16).ok()?;
            let end = offset.checked_add(len)?;
            if offset < free_from || end > size {
                return None;
            }
            free_from = end;
            extents.push((offset, len, sum));
        }
        files.push(ManifestFile {
            path: String::from(path),
            size,
            extents,
        });
    }
    Some(files)
}

/// The three words after `keyword` on `line`, if it has exactly those.
fn fields<'a>(line: &'a str, keyword: &str) -> Option<[&'a str; 3]> {
    let mut words = line.split(' ');
    if words.next()? != keyword {
        return None;
    }
    let fields = [words.next()?, words.next()?, words.next()?];
    words.next().is_none().then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_never_zero_and_depends_on_seed_and_offset() {
        let a: Vec<u8> = (0..4096).map(|at| pattern_byte(7, at)).collect();
        let b: Vec<u8> = (0..4096).map(|at| pattern_byte(8, at)).collect();
        let c: Vec<u8> = (4096..8192).map(|at| pattern_byte(7, at)).collect();
        assert!(a.iter().all(|&byte| byte != 0));
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_manifest_parses_back() {
        let text =
            manifest(|spec, offset, len| fnv1a(FNV_START, &spec.bytes(offset, len as usize)));
        let files = parse_manifest(&text).unwrap();
        assert_eq!(files.len(), READ_ONLY.len());
        let holes = files.iter().find(|file| file.path == "/ro/holes").unwrap();
        assert_eq!(holes.size, 200 * 1024);
        assert_eq!(holes.extents.len(), 4);
        assert_eq!(holes.extents[2].0, 70_000);
        assert!(parse_manifest("genpager-manifest 2\n").is_none());
        assert!(parse_manifest("genpager-manifest 1\nfile /x 1 1\n").is_none());
    }

    #[test]
    fn scripts_are_deterministic_and_do_what_they_say() {
        for file in 0..WRITTEN.len() {
            assert_eq!(ops(file, 60), ops(file, 60));
            let ops = ops(file, 200);
            assert!(ops.iter().any(|op| matches!(op, Op::Write { .. })));
            assert!(ops.contains(&Op::Sync));
            assert_eq!(ops.iter().any(|op| matches!(op, Op::SetSize(_))), file == 2);
        }
        let mut contents = vec![1u8; 10];
        assert!(apply(&mut contents, Op::SetSize(4)));
        let write = |offset, len| Op::Write {
            offset,
            len,
            seed: 3,
        };
        assert!(apply(&mut contents, write(6, 2)));
        assert_eq!(&contents[..6], &[1, 1, 1, 1, 0, 0]);
        assert_eq!(contents[6], pattern_byte(3, 6));
        assert_eq!(contents.len(), 8);
        // A write past what memory holds changes nothing.
        assert!(!apply(&mut contents, write(u64::MAX, 1)));
        assert!(!apply(&mut contents, Op::SetSize(u64::MAX)));
        assert_eq!(contents.len(), 8);
    }

    #[test]
    fn the_far_file_reaches_past_double_indirect_at_both_block_sizes() {
        for (block, per) in [(1024u64, 256u64), (4096, 1024)] {
            let threshold = (12 + per + per * per) * block;
            assert!(FAR_OFFSET > threshold, "{block}");
        }
    }
}
