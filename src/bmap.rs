//! The one extent walker: "walk the block map over a byte range".
//!
//! The reference repeats this loop in its read path, its write path and direct I/O;
//! genpager has it once. A walk turns a byte range of a file into [`Extent`]s: runs of
//! bytes that are either one physically contiguous stretch of the device or a hole,
//! using [`BlockMap::bmap`]'s run lengths so that a contiguous file costs one `bmap`
//! call per run, not per block. Block sizes above and below the page size both work:
//! extents are in bytes and may start and end anywhere inside a page.
//!
//! Callers that must stop an extent early (the read path stops at a page that is
//! already valid) use [`extent_at`] and ask again from where they stopped; the rest
//! iterate [`Extents`].

use crate::error::{Error, Result};
use crate::hooks::BlockMap;

/// A run of file bytes with one placement on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Extent {
    /// File offset of the first byte.
    pub offset: u64,
    /// Length in bytes (never zero).
    pub len: u64,
    /// Device block (512-byte units) holding the first byte, or `None` for a hole.
    pub block: Option<u64>,
}

impl Extent {
    /// The file offset just past the extent.
    pub fn end(&self) -> u64 {
        // The walker's extents end at most at the end of the walk; saturating keeps a
        // hand-made one from wrapping.
        self.offset.saturating_add(self.len)
    }

    /// Whether the extent is a hole.
    pub fn is_hole(&self) -> bool {
        self.block.is_none()
    }
}

/// How a file's blocks are sized: the vnode's `fs_bshift` and `dev_bshift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// `log2` of the filesystem block size.
    pub fs_bshift: u32,
    /// `log2` of the device block size.
    pub dev_bshift: u32,
}

impl Geometry {
    /// Checks the shifts: device blocks no larger than filesystem blocks, filesystem
    /// blocks from 512 bytes to 1 MiB.
    pub fn new(fs_bshift: u32, dev_bshift: u32) -> Result<Self> {
        if !(9..=20).contains(&fs_bshift) || dev_bshift > fs_bshift {
            return Err(Error::Invalid);
        }
        Ok(Self {
            fs_bshift,
            dev_bshift,
        })
    }

    /// The filesystem block size in bytes.
    pub fn block_size(&self) -> u64 {
        1 << self.fs_bshift
    }

    /// The mask of an offset's bytes within its filesystem block.
    pub fn block_mask(&self) -> u64 {
        !(u64::MAX << self.fs_bshift)
    }

    /// The mask of an offset's bytes within its device block (sector).
    pub fn sector_mask(&self) -> u64 {
        !(u64::MAX << self.dev_bshift)
    }
}

/// The extent that starts at `offset` and ends at the end of its `bmap` run or at
/// `end`, whichever comes first. `offset < end` is required.
pub fn extent_at<M: BlockMap + ?Sized>(
    map: &M,
    geometry: Geometry,
    offset: u64,
    end: u64,
) -> Result<Extent> {
    if offset >= end {
        return Err(Error::Invalid);
    }
    let shift = geometry.fs_bshift;
    let lbn = offset >> shift;
    let mapping = map.bmap(lbn)?;
    let run_end = lbn
        .saturating_add(1)
        .saturating_add(mapping.run)
        .checked_shl(shift)
        .filter(|e| e >> shift == lbn.saturating_add(1).saturating_add(mapping.run))
        .unwrap_or(u64::MAX);
    // `run_end > offset`: it is `u64::MAX` or the end of block `lbn` or a later one.
    let len = run_end.min(end).checked_sub(offset).ok_or(Error::Invalid)?;
    let block = match mapping.block {
        Some(block) => {
            let within = (offset & !(u64::MAX << shift)) >> geometry.dev_bshift;
            Some(block.checked_add(within).ok_or(Error::Invalid)?)
        }
        None => None,
    };
    log::trace!(
        "bmap lbn {lbn:#x} -> {:?} run {} ({offset:#x}+{len:#x})",
        mapping.block,
        mapping.run
    );
    Ok(Extent { offset, len, block })
}

/// Iterator over the extents covering a byte range; stops after the first error.
pub struct Extents<'a, M: ?Sized> {
    map: &'a M,
    geometry: Geometry,
    at: u64,
    end: u64,
}

/// The extents covering `start..end`, in order.
///
/// ```
/// use genpager::{BlockMap, Mapping, Result, bmap::{extents, Extent, Geometry}};
/// struct Every2ndHole;
/// impl BlockMap for Every2ndHole {
///     fn bmap(&self, lbn: u64) -> Result<Mapping> {
///         Ok(if lbn % 2 == 0 { Mapping::mapped(lbn * 8, 0) } else { Mapping::hole(0) })
///     }
/// }
/// let geometry = Geometry::new(12, 9).unwrap();
/// let runs: Vec<Extent> = extents(&Every2ndHole, geometry, 0, 12288).collect::<Result<_>>().unwrap();
/// assert_eq!(runs.len(), 3);
/// assert!(runs[1].is_hole());
/// assert_eq!(runs[2].block, Some(16));
/// ```
pub fn extents<M: BlockMap + ?Sized>(
    map: &M,
    geometry: Geometry,
    start: u64,
    end: u64,
) -> Extents<'_, M> {
    Extents {
        map,
        geometry,
        at: start,
        end,
    }
}

impl<M: BlockMap + ?Sized> Iterator for Extents<'_, M> {
    type Item = Result<Extent>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.end {
            return None;
        }
        let extent = extent_at(self.map, self.geometry, self.at, self.end);
        self.at = match &extent {
            Ok(extent) => extent.end(),
            Err(_) => self.end,
        };
        Some(extent)
    }
}

/// Whether every byte of `start..end` has backing blocks (no hole), walking the map
/// once per run. Writes that must not meet a hole (an overwrite that reads nothing,
/// direct I/O) ask this first.
pub fn is_allocated<M: BlockMap + ?Sized>(
    map: &M,
    geometry: Geometry,
    start: u64,
    end: u64,
) -> Result<bool> {
    for extent in extents(map, geometry, start, end) {
        if extent?.is_hole() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Mapping;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Blocks in a table: `Some(dev block)` or `None` for a hole; run computed from
    /// neighbours, as a real filesystem would.
    struct Table(Vec<Option<u64>>, u64);

    impl BlockMap for Table {
        fn bmap(&self, lbn: u64) -> Result<Mapping> {
            let blocks = self.0.get(lbn as usize).ok_or(Error::Io)?;
            let per = self.1;
            let mut run = 0;
            let mut next = lbn as usize + 1;
            while let Some(&b) = self.0.get(next) {
                let contiguous = match (blocks, b) {
                    (Some(first), Some(b)) => b == first + per * (next as u64 - lbn),
                    (None, None) => true,
                    _ => false,
                };
                if !contiguous {
                    break;
                }
                run += 1;
                next += 1;
            }
            Ok(Mapping {
                block: *blocks,
                run,
            })
        }
    }

    fn walk(table: &Table, fs_bshift: u32, start: u64, end: u64) -> Result<Vec<Extent>> {
        extents(table, Geometry::new(fs_bshift, 9).unwrap(), start, end).collect()
    }

    #[test]
    fn contiguous_file_is_one_extent() {
        let table = Table((0..16).map(|i| Some(100 + i * 8)).collect(), 8);
        let runs = walk(&table, 12, 0, 16 * 4096).unwrap();
        assert_eq!(
            runs,
            [Extent {
                offset: 0,
                len: 16 * 4096,
                block: Some(100)
            }]
        );
    }

    #[test]
    fn fragmented_file_gives_one_extent_per_fragment() {
        // Runs of two 4 KiB blocks, placed far apart and in reverse order.
        let blocks = (0..8u64)
            .map(|i| Some(1000 - (i / 2) * 100 + (i % 2) * 8))
            .collect();
        let runs = walk(&Table(blocks, 8), 12, 0, 8 * 4096).unwrap();
        assert_eq!(runs.len(), 4);
        assert!(runs.iter().all(|e| e.len == 8192));
        assert_eq!(runs[1].block, Some(900));
    }

    #[test]
    fn holes_are_reported_as_holes() {
        let table = Table(vec![Some(8), None, None, Some(80)], 8);
        let runs = walk(&table, 12, 0, 4 * 4096).unwrap();
        assert_eq!(
            runs,
            [
                Extent {
                    offset: 0,
                    len: 4096,
                    block: Some(8)
                },
                Extent {
                    offset: 4096,
                    len: 8192,
                    block: None
                },
                Extent {
                    offset: 12288,
                    len: 4096,
                    block: Some(80)
                },
            ]
        );
    }

    #[test]
    fn small_blocks_inside_one_page() {
        // 512-byte blocks: one page = 8 blocks, the 4th a hole.
        let blocks = (0..8u64)
            .map(|i| if i == 3 { None } else { Some(50 + i) })
            .collect();
        let runs = walk(&Table(blocks, 1), 9, 0, 4096).unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(
            runs[0],
            Extent {
                offset: 0,
                len: 1536,
                block: Some(50)
            }
        );
        assert_eq!(
            runs[1],
            Extent {
                offset: 1536,
                len: 512,
                block: None
            }
        );
        assert_eq!(
            runs[2],
            Extent {
                offset: 2048,
                len: 2048,
                block: Some(54)
            }
        );
    }

    #[test]
    fn big_blocks_start_mid_block() {
        // 64 KiB blocks: a walk from the second page of block 1 starts 8 sectors in.
        let table = Table(vec![Some(0), Some(128), None], 128);
        let runs = walk(&table, 16, 65536 + 4096, 3 * 65536).unwrap();
        assert_eq!(
            runs[0],
            Extent {
                offset: 65536 + 4096,
                len: 61440,
                block: Some(136)
            }
        );
        assert_eq!(
            runs[1],
            Extent {
                offset: 131072,
                len: 65536,
                block: None
            }
        );
    }

    #[test]
    fn clipping_restarts_inside_a_run() {
        let table = Table((0..4).map(|i| Some(8 * i)).collect(), 8);
        let geometry = Geometry::new(12, 9).unwrap();
        let first = extent_at(&table, geometry, 0, 4096 * 4).unwrap();
        assert_eq!(first.len, 4 * 4096);
        // The caller stopped after one page; asking again resumes at the right block.
        let again = extent_at(&table, geometry, 4096, 4096 * 4).unwrap();
        assert_eq!(
            again,
            Extent {
                offset: 4096,
                len: 3 * 4096,
                block: Some(8)
            }
        );
    }

    #[test]
    fn bmap_error_surfaces_and_stops_the_walk() {
        let table = Table(vec![Some(0), Some(8)], 8);
        let mut walk = extents(&table, Geometry::new(12, 9).unwrap(), 0, 4 * 4096);
        assert!(walk.next().unwrap().is_ok());
        assert_eq!(walk.next().unwrap(), Err(Error::Io));
        assert!(walk.next().is_none());
    }

    #[test]
    fn allocation_check_finds_holes() {
        let table = Table(vec![Some(8), None, Some(80)], 8);
        let geometry = Geometry::new(12, 9).unwrap();
        assert!(is_allocated(&table, geometry, 0, 4096).unwrap());
        assert!(!is_allocated(&table, geometry, 0, 8192).unwrap());
        assert!(is_allocated(&table, geometry, 8192, 12288).unwrap());
        assert_eq!(
            is_allocated(&table, geometry, 8192, 5 * 4096),
            Err(Error::Io)
        );
    }

    #[test]
    fn bad_geometry_and_empty_range_are_invalid() {
        assert_eq!(Geometry::new(8, 9), Err(Error::Invalid));
        assert_eq!(Geometry::new(12, 13), Err(Error::Invalid));
        let table = Table(vec![Some(0)], 8);
        assert_eq!(
            extent_at(&table, Geometry::new(12, 9).unwrap(), 10, 10),
            Err(Error::Invalid)
        );
    }
}
