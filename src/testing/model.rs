//! A model checker for the whole pager: random operation sequences over a [`MemFs`]
//! file (or a [`ByteIo`] file for the compat pager), checked after every step against a
//! plain byte vector holding what the file must read as.
//!
//! The same [`Setup`] and [`Op`] drive the proptest state machine (`tests/model.rs`)
//! and the cargo-fuzz target (`fuzz/`), which decodes them from raw bytes with
//! [`decode`]. [`run`] applies the operations one by one and, after each (with the
//! device quiesced), checks:
//!
//! - no page is busy, `WANTED`, `RELEASED`, `PAGEOUT` or `FAKE`; nothing is in flight and
//!   no page carries the writeback tag; the dirty tag is set exactly on pages whose
//!   status is not clean; a page mapped writable is never clean; a vnode with a dirty
//!   page is on the work list;
//! - the sizes: the file size is the model's length and the write size equals it;
//! - every resident page equals the model within the end of file and is zero past it;
//!   every clean page equals the backing store; every other byte of the file equals
//!   the backing store (so nothing acknowledged was lost);
//! - the latched write error (what the object's own error cursor has not reported,
//!   [`pending_write_error`](crate::ObjectState::pending_write_error)): a write that
//!   fails sets it, exactly the next `CLEANIT | SYNCIO` flush (or direct I/O, whose
//!   flush is one) reports it, once;
//! - the transaction and journal ledger of the [`MemFile`]: nothing left open, the
//!   lock order kept.
//!
//! Beyond I/O faults, a run injects what a kernel's filesystem does: hook failures
//! ([`Op::FailHook`]: `trans_begin` even when the caller would wait, `journal_begin`,
//! `alloc` with any error, `bmap`), asynchronous write faults (refused with
//! `Invalid`), faults over holes with every access and flag, files in the last bytes
//! below [`MAX_FILE_SIZE`] ([`Setup::high`]) or with a small largest size
//! ([`Setup::max_size`]), and calls past the largest size or near `u64::MAX`
//! ([`Op::Beyond`]), which must fail with `TooBig` or `Invalid` and change nothing.
//! An operation that meets an injected hook failure must fail cleanly with its error:
//! one refused on entry (`trans_begin`, `journal_begin`) changes nothing and reports
//! nothing; a `bmap` failure in a flush fails the write of its cluster as the device
//! would.
//!
//! What a failed operation may change, precisely:
//! - a failed fault (read or write, any flags) changes no byte of the file;
//! - a failed [`write()`] leaves a prefix of its work done, at its batch boundaries (the
//!   zeroing of the old last block in 512-byte pieces, then batches of up to 16 pages):
//!   the size and the bytes are those of one such prefix;
//! - a failed [`directio`] write has moved exactly what its uio says, except that later
//!   requests of the failing chunk may or may not have reached the device (each byte
//!   there is the old or the new one);
//! - a failed flush changes no byte: its pages stay dirty;
//! - [`PutFlags::FREE`] without [`PutFlags::CLEANIT`] discards dirty pages: the file
//!   reads what the backing store holds there (the reference's semantics).
//!
//! At the end every fault is cleared and a `CLEANIT | SYNCIO` flush must succeed (or
//! report the latched error, once, and have written everything anyway): the backing
//! store then equals the model byte for byte, and every write error raised along the
//! way was reported to exactly one synchronous flush.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::ops::Range;
use std::sync::{Mutex, MutexGuard};

use super::disk::{LoggedRequest, MemDisk, SECTOR_SIZE};
use super::fs::{Hook, Layout, MemFile, MemFs};
use crate::buf::Direction;
use crate::cache::{DefaultCache, MapState};
use crate::compat::{self, ByteIo, NoBlocks};
use crate::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use crate::error::{Error, Result};
use crate::memory::{ChunkPool, Memory};

use crate::fault::{Fault, Fetched, GetFlags};
use crate::getpages::getpages;
use crate::hooks::{Access, MAX_FILE_SIZE, PageCache, Protection};
use crate::object::{ObjectFlags, VmObject};
use crate::page::{DirtyStatus, PAGE_SIZE, PageFlags, Tag, trunc_page};
use crate::putpages::{PutFlags, putpages};
use crate::read::read;
use crate::readahead::Advice;
use crate::reclaim::Reclaimer;
use crate::vnode::Vnode;
use crate::write::{setsize, write};

const PAGE: u64 = PAGE_SIZE as u64;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

type Check = core::result::Result<(), String>;

/// The largest file the model makes: 40 pages.
pub const MAX_SIZE: u64 = 40 * PAGE;

/// The window a [`Setup::high`] file is modelled in: its last bytes below
/// [`MAX_FILE_SIZE`], which is the file's largest size (a multiple of 64 KiB, so the
/// window starts on a block of every size).
pub const HIGH_WINDOW: u64 = 48 * PAGE;

/// Pages the buffered write helper handles per batch at most.
const WRITE_BATCH_PAGES: u64 = 16;

/// How the disk completes requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskMode {
    /// Inside `submit`, on the submitting thread.
    Inline,
    /// On a completion thread, first come first served.
    Threaded,
    /// On a completion thread, in a shuffled order.
    Reordered,
}

/// The file a run starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// `log2` of the filesystem block size, 9 ..= 16.
    pub fs_bshift: u32,
    /// How the file's blocks are placed.
    pub layout: Layout,
    /// Initial size in bytes (at most [`MAX_SIZE`]).
    pub size: u64,
    /// Logical blocks left as holes (taken modulo the block count).
    pub holes: Vec<u64>,
    /// Free blocks on the filesystem beyond the file's: few make `alloc` fail with
    /// ENOSPC.
    pub spare_blocks: u64,
    /// How the disk completes requests.
    pub disk: DiskMode,
    /// The vnode's maximum transfer in pages, 1 ..= 16.
    pub max_transfer_pages: u8,
    /// Serve the file through [`ByteIo`] and the compat pager instead of a block map.
    pub compat: bool,
    /// Seed of the initial contents.
    pub seed: u8,
    /// The mount has a journal (`journal_begin` is called, and can be made to fail).
    pub journal: bool,
    /// Block files only: the file lies in the last [`HIGH_WINDOW`] bytes below
    /// [`MAX_FILE_SIZE`] (everything below is a hole no step touches), so offsets
    /// and sizes are near 2^63 and writes and `setsize` reach the largest size.
    pub high: bool,
    /// Block files only (and not `high`): the block map's `max_size`, modulo
    /// [`HIGH_WINDOW`] + 64 KiB, raised to the initial size (rounded up to 64 KiB
    /// when the value is a multiple of that) (`None`: the default).
    pub max_size: Option<u32>,
    /// Block files only: the file's cache is in a memory domain of its own (over the
    /// shared frame pool, an ample budget) with write-behind on and both dirty
    /// thresholds at 0%, so every batch of every `write` starts writeback of what it
    /// wrote and waits for it: the dirty limits under the model's faults.
    pub dirty_limits: bool,
}

/// How a write fault is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// [`GetFlags::SYNCIO`]: allocates, hands back [`Fetched::Writable`].
    Sync,
    /// `SYNCIO | OVERWRITE`, the pages filled whole. Over a page known to back a hole
    /// (resident, read-only) it must fail with `Invalid`; over a hole no page shows it
    /// is taken without `OVERWRITE` (the caller must allocate first, and a fault that
    /// cannot tell would hand out pages whose stores are lost).
    Overwrite,
    /// `SYNCIO | NOBLOCKALLOC`: read-only pages ([`Fetched::Busy`]), nothing stored.
    NoBlockAlloc,
    /// [`GetFlags::LOCKED`]: the fast path, stores through
    /// [`ResidentPages::bytes_mut`](crate::ResidentPages::bytes_mut).
    Locked,
    /// Neither: an asynchronous write fault, which must fail with `Invalid` and
    /// change nothing.
    Async,
}

/// How a read fault is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// [`GetFlags::LOCKED`]: the fast path.
    Locked,
    /// [`GetFlags::SYNCIO`].
    Sync,
    /// Read-ahead: neither.
    Async,
}

/// One step. Numbers are raw and reduced against the file as it is when the step runs,
/// so every sequence is valid and shrinking keeps steps meaningful.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A read fault of `count` pages from page `page`, needing page `center`.
    ReadFault {
        /// First page (modulo the file's pages plus one, so sometimes past EOF).
        page: u16,
        /// Pages asked for, 1 + `count % 8`.
        count: u8,
        /// The page needed, modulo the count.
        center: u8,
        /// Which way through.
        mode: ReadMode,
    },
    /// A write fault, then bytes written into the returned pages.
    WriteFault {
        /// First page (modulo the file's pages).
        page: u16,
        /// Pages asked for, 1 + `count % 4`.
        count: u8,
        /// Which way through, and what is stored.
        mode: WriteMode,
        /// Where in each page to write (modulo the page size).
        at: u16,
        /// How much to write per page (modulo the page size, plus one).
        len: u16,
        /// Seed of the bytes.
        seed: u8,
    },
    /// A store through a user mapping of one page; faults (and maps the page writable)
    /// first when the mapping does not allow it, as an MMU would.
    MapStore {
        /// The page (modulo the file's pages).
        page: u16,
        /// Where in the page.
        at: u16,
        /// How many bytes (modulo the page size, plus one).
        len: u16,
        /// Seed of the bytes.
        seed: u8,
    },
    /// munmap: removes every mapping of the file.
    Unmap,
    /// putpages over pages `start .. end` with flags from `flags` (bits: CLEANIT,
    /// SYNCIO, FREE, DEACTIVATE, ALLPAGES).
    Put {
        /// First page.
        start: u16,
        /// Length in pages, or 0 for "to the end of the object".
        len: u8,
        /// Flag bits.
        flags: u8,
    },
    /// [`setsize`]: truncate or extend.
    SetSize {
        /// The new size, modulo [`MAX_SIZE`] + 1.
        size: u32,
    },
    /// The buffered write helper [`write()`].
    Write {
        /// Where (modulo a little past the end of file).
        offset: u32,
        /// How much (modulo 64 KiB, plus one).
        len: u32,
        /// Seed of the bytes.
        seed: u8,
    },
    /// The buffered read helper [`read`].
    Read {
        /// Where (modulo a little past the end of file).
        offset: u32,
        /// How much (modulo 64 KiB, plus one).
        len: u32,
    },
    /// [`directio`] from or to a user buffer.
    Direct {
        /// Where (rounded down to a sector unless `misalign`).
        offset: u32,
        /// Sectors (modulo 160, plus one).
        sectors: u8,
        /// Write instead of read.
        write: bool,
        /// Make the offset or the memory unaligned.
        misalign: bool,
        /// Seed of the bytes.
        seed: u8,
    },
    /// Make the `n`-th next device request (or `ByteIo` call) fail, 1 + `n % 6`.
    FailNth {
        /// Which one.
        n: u8,
    },
    /// Make every request touching logical blocks `lbn ..` fail until cleared.
    FailBlocks {
        /// First logical block (modulo the file's blocks).
        lbn: u16,
        /// Blocks, 1 + `count % 3`.
        count: u8,
    },
    /// Disarm every injected fault.
    ClearFaults,
    /// Limit the cache to its resident pages plus `extra % 8` (`None`: no limit).
    CacheLimit {
        /// Pages allowed beyond those resident.
        extra: Option<u8>,
    },
    /// The page daemon: a [`Reclaimer`] over this file asked for 1 + `pages % 32`
    /// pages. It frees clean pages and pages dirty ones out (asynchronously, as the
    /// page daemon, so a refused transaction only leaves them dirty): the file's bytes
    /// must not change, and a failed page-out latches its error like any asynchronous
    /// write.
    Reclaim {
        /// How many pages to ask for.
        pages: u8,
    },
    /// Make the next 1 + `calls % 3` calls of a filesystem hook fail (block files
    /// only): `hook % 4` picks `trans_begin` (even when the caller would wait),
    /// `journal_begin`, `alloc` or `bmap`; `error` picks the error (`bmap` fails with
    /// `Io` only, so that its failures in a flush are write errors like the device's).
    /// The operations that meet it must fail cleanly with it: nothing busy, the
    /// ledger balanced, the file unchanged (a write: a prefix).
    FailHook {
        /// Which hook.
        hook: u8,
        /// How many calls.
        calls: u8,
        /// Which error.
        error: u8,
    },
    /// A call past the largest file size or near `u64::MAX` (`what % 6`: a read
    /// fault, a write fault, a write, a setsize, a read, a locked read fault), at a
    /// distance from it set by `delta`: each must fail with `TooBig` or `Invalid` (a
    /// read at or past the end of file and within the largest size reads nothing)
    /// and change nothing.
    Beyond {
        /// Which call.
        what: u8,
        /// How far.
        delta: u32,
    },
}

/// The errors [`Op::FailHook`] injects into `trans_begin`, `journal_begin` and
/// `alloc`, by `error % 5`.
const HOOK_ERRORS: [Error; 5] = [
    Error::Io,
    Error::Again,
    Error::Dead,
    Error::Host(70),
    Error::NoSpace,
];

/// The hooks, by [`Op::FailHook`]'s `hook % 4`.
const HOOKS: [Hook; 4] = [
    Hook::TransBegin,
    Hook::JournalBegin,
    Hook::Alloc,
    Hook::Bmap,
];

/// What a run saw, for statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operations applied.
    pub ops: usize,
    /// Operations that returned an error.
    pub failed_ops: usize,
    /// Failed page writes (device requests or `ByteIo` writes).
    pub write_failures: u64,
    /// Times the latched write error went from clear to set.
    pub error_epochs: u64,
    /// Synchronous flushes (and direct transfers) that reported it.
    pub reports: u64,
}

/// Reads raw bytes as the fields of a [`Setup`] and [`Op`]s; zero once exhausted.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

/// Decodes fuzzer bytes into a setup and at most 64 operations.
pub fn decode(data: &[u8]) -> (Setup, Vec<Op>) {
    let mut b = Bytes(data);
    let fs_bshift = 9 + u32::from(b.u8() % 8);
    let layout = match b.u8() % 4 {
        0 | 1 => Layout::Contiguous,
        2 => Layout::Fragmented {
            run: 1 + u64::from(b.u8() % 4),
        },
        _ => Layout::Reversed,
    };
    let size = u64::from(b.u32()) % (MAX_SIZE + 1);
    let holes = (0..b.u8() % 4).map(|_| u64::from(b.u8())).collect();
    let spare_blocks = u64::from(b.u8());
    let disk = match b.u8() % 8 {
        6 => DiskMode::Threaded,
        7 => DiskMode::Reordered,
        _ => DiskMode::Inline,
    };
    let max_transfer_pages = 1 + b.u8() % 16;
    let compat = b.u8() % 8 == 0;
    let seed = b.u8();
    let bits = b.u8();
    let max_size = (bits & 4 != 0).then(|| b.u32());
    let setup = Setup {
        fs_bshift,
        layout,
        size,
        holes,
        spare_blocks,
        disk,
        max_transfer_pages,
        compat,
        seed,
        journal: bits & 1 != 0,
        high: bits & 2 != 0,
        max_size,
        dirty_limits: bits & 8 != 0,
    };
    let mut ops = Vec::new();
    while !b.0.is_empty() && ops.len() < 64 {
        let op = match b.u8() % 16 {
            0 => Op::ReadFault {
                page: b.u16(),
                count: b.u8(),
                center: b.u8(),
                mode: match b.u8() % 3 {
                    0 => ReadMode::Locked,
                    1 => ReadMode::Sync,
                    _ => ReadMode::Async,
                },
            },
            1 => {
                let mode = match b.u8() % 8 {
                    0..=2 => WriteMode::Sync,
                    3 => WriteMode::Overwrite,
                    4 => WriteMode::NoBlockAlloc,
                    5 | 6 => WriteMode::Locked,
                    _ => WriteMode::Async,
                };
                Op::WriteFault {
                    page: b.u16(),
                    count: b.u8(),
                    mode,
                    at: b.u16(),
                    len: b.u16(),
                    seed: b.u8(),
                }
            }
            2 => Op::MapStore {
                page: b.u16(),
                at: b.u16(),
                len: b.u16(),
                seed: b.u8(),
            },
            3 => Op::Unmap,
            4 | 5 => Op::Put {
                start: b.u16(),
                len: b.u8(),
                flags: b.u8(),
            },
            6 => Op::SetSize { size: b.u32() },
            7 | 8 => Op::Write {
                offset: b.u32(),
                len: b.u32(),
                seed: b.u8(),
            },
            9 => Op::Read {
                offset: b.u32(),
                len: b.u32(),
            },
            10 => {
                let bits = b.u8();
                Op::Direct {
                    offset: b.u32(),
                    sectors: b.u8(),
                    write: bits & 1 != 0,
                    misalign: bits & 6 == 6,
                    seed: b.u8(),
                }
            }
            11 => Op::FailNth { n: b.u8() },
            12 => match b.u8() % 4 {
                0 => Op::ClearFaults,
                3 => Op::Reclaim { pages: b.u8() },
                1 => Op::FailBlocks {
                    lbn: b.u16(),
                    count: b.u8(),
                },
                _ => Op::CacheLimit {
                    extra: Some(b.u8()),
                },
            },
            13 => Op::CacheLimit { extra: None },
            14 => Op::FailHook {
                hook: b.u8(),
                calls: b.u8(),
                error: b.u8(),
            },
            _ => Op::Beyond {
                what: b.u8(),
                delta: b.u32(),
            },
        };
        ops.push(op);
    }
    (setup, ops)
}

/// Deterministic bytes; `seed` shifts them so different writes differ.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8).wrapping_mul(13).wrapping_add((i >> 9) as u8) ^ seed.wrapping_mul(0x9d) | 1
        })
        .collect()
}

/// Applies `ops` to a file made per `setup`, checking the invariants of the module
/// docs after every step and at the end. The error says which step broke what, with
/// the trace of the steps before it.
pub fn run(setup: &Setup, ops: &[Op]) -> core::result::Result<Summary, String> {
    if setup.compat {
        let backend = CompatBackend::new(setup);
        Harness::new(backend, setup).run(ops)
    } else {
        let backend = BlockBackend::new(setup)?;
        Harness::new(backend, setup).run(ops)
    }
}

// ---------------------------------------------------------------------------------
// Backends: where the file's bytes live and how faults are injected there.

/// What the harness needs from where the file's bytes live.
trait Backend {
    type V: Vnode<Cache = DefaultCache>;
    fn vnode(&self) -> &Arc<Self::V>;
    /// The backing store's view of the file: `size` bytes.
    fn stored(&self) -> Vec<u8>;
    /// Waits until nothing is in flight.
    fn quiesce(&self);
    fn fail_nth(&self, n: u64);
    fn fail_blocks(&self, lbns: Range<u64>);
    fn clear_faults(&self);
    /// Failed (reads, writes) so far, counted after quiescing.
    fn failures(&self) -> (u64, u64);
    /// Whether every block under `range` has storage.
    fn allocated(&self, range: Range<u64>) -> bool;
    /// What the file holds when the run starts.
    fn initial(&self) -> Vec<u8>;
    /// What the filesystem does around a size change (the compat host truncates or
    /// extends its store).
    fn resized(&self, size: u64);
    fn block_shift(&self) -> u32;
    /// Where the modelled window of the file starts (0 but for [`Setup::high`]).
    fn base(&self) -> u64 {
        0
    }
    /// The largest file size the pager allows (the block map's `max_size`).
    fn max_size(&self) -> u64 {
        MAX_FILE_SIZE
    }
    /// Arms [`Op::FailHook`] (block files only).
    fn fail_hook(&self, _hook: Hook, _calls: u64, _error: Error) {}
    /// Hook failures still armed, by [`HOOKS`] index.
    fn hooks_left(&self) -> [u64; 4] {
        [0; 4]
    }
    /// Whether the transaction and journal ledger is balanced and in order.
    fn ledger(&self) -> Check {
        Ok(())
    }
}

/// A [`MemFile`] on a [`MemDisk`]. The disk fails requests; which ones failed is
/// replayed from its log against the faults armed when each was submitted.
struct BlockBackend {
    file: Arc<MemFile>,
    initial: Vec<u8>,
    disk: MemDisk,
    tracker: Mutex<Tracker>,
    /// Where the modelled window starts.
    base: u64,
}

#[derive(Default)]
struct Tracker {
    /// Log entries already accounted for.
    seen: usize,
    /// Sequence numbers of armed one-shot faults.
    nth: Vec<u64>,
    /// Armed sector ranges.
    ranges: Vec<Range<u64>>,
    failed_reads: u64,
    failed_writes: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl BlockBackend {
    fn new(setup: &Setup) -> core::result::Result<Self, String> {
        let bshift = setup.fs_bshift.clamp(9, 16);
        let bsize = 1u64 << bshift;
        let size = setup.size.min(MAX_SIZE);
        let base = if setup.high {
            MAX_FILE_SIZE - HIGH_WINDOW
        } else {
            0
        };
        let nblocks = size.div_ceil(bsize);
        let holes: Vec<u64> = setup
            .holes
            .iter()
            .filter(|_| nblocks > 0)
            .map(|h| h % nblocks.max(1))
            .collect();
        let mut mapped = nblocks;
        for lbn in 0..nblocks {
            if holes.contains(&lbn) {
                mapped -= 1;
            }
        }
        let most = (HIGH_WINDOW + 16 * PAGE).div_ceil(bsize) + 1;
        // Mostly room for the whole file; sometimes just a few blocks more.
        let spare = match setup.spare_blocks % 4 {
            0 => setup.spare_blocks % 3,
            _ => most,
        };
        let sectors = ((mapped + spare).max(1) * bsize) / SECTOR_SIZE as u64;
        let disk = match setup.disk {
            DiskMode::Inline => MemDisk::new(sectors),
            DiskMode::Threaded => MemDisk::threaded(sectors, false),
            DiskMode::Reordered => MemDisk::threaded(sectors, true),
        };
        let fs = MemFs::new(disk.clone(), bshift, setup.layout);
        if setup.dirty_limits {
            let memory = alloc::boxed::Box::leak(alloc::boxed::Box::new(Memory::new(
                ChunkPool::shared(),
                1 << 20,
            )));
            memory
                .set_dirty_percent(0, 0)
                .map_err(|e| format!("setup: thresholds: {e:?}"))?;
            fs.set_memory(memory);
        }
        let mut data = pattern(size as usize, setup.seed);
        for &lbn in &holes {
            let from = (lbn * bsize) as usize;
            let to = (from + bsize as usize).min(data.len());
            data[from..to].fill(0);
        }
        let file = fs
            .create_sparse_at(base, base + size, &data, &holes)
            .map_err(|e| format!("setup: create_sparse failed: {e}"))?;
        file.set_max_transfer(usize::from(setup.max_transfer_pages.clamp(1, 16)) * PAGE_SIZE);
        // The model's device faults are transient: every failed write is written again
        // by a later flush. The failed state of an object whose device keeps failing
        // (no flush writes it any more) is tested on its own, in `tests/errseq.rs`.
        file.object().set_write_failure_limit(None);
        file.set_journal(setup.journal);
        if let (Some(max), false) = (setup.max_size, setup.high) {
            // Never below the file; a largest size aligned to 64 KiB (every block
            // size) stays aligned.
            let max = u64::from(max) % (HIGH_WINDOW + 16 * PAGE);
            let floor = if max % (16 * PAGE) == 0 {
                size.next_multiple_of(16 * PAGE)
            } else {
                size
            };
            file.set_max_size(Some(max.max(floor)));
        }
        Ok(Self {
            file,
            initial: data,
            disk,
            tracker: Mutex::new(Tracker::default()),
            base,
        })
    }

    /// Accounts for the log entries since the last call.
    fn account(&self) {
        let log: Vec<LoggedRequest> = self.disk.log();
        let mut t = lock(&self.tracker);
        for (index, request) in log.iter().enumerate().skip(t.seen) {
            let sequence = index as u64 + 1;
            let mut failed = false;
            if let Some(at) = t.nth.iter().position(|&n| n == sequence) {
                t.nth.swap_remove(at);
                failed = true;
            }
            let sectors = (request.len as u64).div_ceil(SECTOR_SIZE as u64).max(1);
            let span = request.block..request.block + sectors;
            failed |= t
                .ranges
                .iter()
                .any(|r| r.start < span.end && span.start < r.end);
            if failed {
                match request.direction {
                    Direction::Read => t.failed_reads += 1,
                    Direction::Write => t.failed_writes += 1,
                }
            }
        }
        t.seen = log.len();
    }
}

impl Backend for BlockBackend {
    type V = MemFile;

    fn vnode(&self) -> &Arc<MemFile> {
        &self.file
    }

    fn stored(&self) -> Vec<u8> {
        self.file.disk_contents_from(self.base)
    }

    fn quiesce(&self) {
        self.disk.quiesce();
        self.account();
    }

    fn fail_nth(&self, n: u64) {
        self.account();
        let submitted = self.disk.log().len() as u64;
        lock(&self.tracker).nth.push(submitted + n);
        self.disk.fail_nth(n as usize, Error::Io);
    }

    fn fail_blocks(&self, lbns: Range<u64>) {
        self.account();
        let table = self.file.block_table();
        let per_block = 1u64 << (self.file.fs_bshift() - 9);
        for lbn in lbns {
            if let Some(Some(sector)) = table.get(lbn as usize) {
                let range = *sector..sector + per_block;
                lock(&self.tracker).ranges.push(range.clone());
                self.disk.fail_blocks(range, Error::Io);
            }
        }
    }

    fn clear_faults(&self) {
        self.account();
        let mut t = lock(&self.tracker);
        t.nth.clear();
        t.ranges.clear();
        self.disk.clear_faults();
        self.file.clear_hook_failures();
    }

    fn failures(&self) -> (u64, u64) {
        self.account();
        let t = lock(&self.tracker);
        (t.failed_reads, t.failed_writes)
    }

    fn initial(&self) -> Vec<u8> {
        self.initial.clone()
    }

    fn allocated(&self, range: Range<u64>) -> bool {
        let shift = self.file.fs_bshift();
        let (start, end) = (self.base + range.start, self.base + range.end);
        (start >> shift..end.div_ceil(1 << shift)).all(|lbn| !self.file.is_hole(lbn))
    }

    fn resized(&self, size: u64) {
        // A filesystem frees the blocks wholly past the new end on a truncate (MemFs
        // does not free blocks): zero them, as a freed and later reallocated block is.
        let bsize = 1u64 << self.file.fs_bshift();
        let table = self.file.block_table();
        for sector in table.iter().skip(size.div_ceil(bsize) as usize).flatten() {
            self.disk
                .write_raw(sector * SECTOR_SIZE as u64, &vec![0; bsize as usize]);
        }
    }

    fn block_shift(&self) -> u32 {
        self.file.fs_bshift()
    }

    fn base(&self) -> u64 {
        self.base
    }

    fn max_size(&self) -> u64 {
        crate::hooks::BlockMap::max_size(&*self.file).min(MAX_FILE_SIZE)
    }

    fn fail_hook(&self, hook: Hook, calls: u64, error: Error) {
        self.file.fail_hook(hook, calls, error);
    }

    fn hooks_left(&self) -> [u64; 4] {
        HOOKS.map(|hook| self.file.hook_failures_left(hook))
    }

    fn ledger(&self) -> Check {
        let ledger = self.file.ledger();
        ensure!(
            ledger.is_clean(),
            "transaction/journal ledger: open {:?}, violations {:?}",
            ledger.open,
            ledger.violations
        );
        Ok(())
    }
}

/// A file of a filesystem without a block map: its bytes in a vector reached through
/// [`ByteIo`], with one-shot and range faults of its own.
pub struct CompatFile {
    object: VmObject<DefaultCache>,
    store: Mutex<CompatStore>,
}

struct CompatStore {
    data: Vec<u8>,
    calls: u64,
    nth: Vec<u64>,
    ranges: Vec<Range<u64>>,
    failed_reads: u64,
    failed_writes: u64,
}

impl CompatStore {
    fn faulty(&mut self, range: Range<u64>) -> bool {
        self.calls += 1;
        let calls = self.calls;
        let nth = match self.nth.iter().position(|&n| n == calls) {
            Some(at) => {
                self.nth.swap_remove(at);
                true
            }
            None => false,
        };
        nth || self
            .ranges
            .iter()
            .any(|r| r.start < range.end && range.start < r.end)
    }
}

impl ByteIo for CompatFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        // A filesystem reads up to its file size, which is the vnode's.
        let size = self.object.size();
        let mut store = lock(&self.store);
        if store.faulty(offset..offset + buf.len() as u64) {
            store.failed_reads += 1;
            return Err(Error::Io);
        }
        let end = (offset + buf.len() as u64).min(size);
        let n = end.saturating_sub(offset) as usize;
        for (i, byte) in buf[..n].iter_mut().enumerate() {
            *byte = store.data.get(offset as usize + i).copied().unwrap_or(0);
        }
        Ok(n)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result {
        let mut store = lock(&self.store);
        if store.faulty(offset..offset + data.len() as u64) {
            store.failed_writes += 1;
            return Err(Error::Io);
        }
        let end = offset as usize + data.len();
        if store.data.len() < end {
            store.data.resize(end, 0);
        }
        store.data[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

impl Vnode for CompatFile {
    type Cache = DefaultCache;
    type Map = NoBlocks;
    type Dev = NoBlocks;

    fn object(&self) -> &VmObject<DefaultCache> {
        &self.object
    }

    fn block_map(&self) -> &NoBlocks {
        &NoBlocks
    }

    fn device(&self) -> &NoBlocks {
        &NoBlocks
    }

    fn fs_bshift(&self) -> u32 {
        12
    }

    fn byte_io(&self) -> Option<&dyn ByteIo> {
        Some(self)
    }
}

struct CompatBackend {
    file: Arc<CompatFile>,
    seed: u8,
}

impl CompatBackend {
    fn new(setup: &Setup) -> Self {
        let size = setup.size.min(MAX_SIZE);
        let file = Arc::new(CompatFile {
            object: VmObject::new(DefaultCache::new(), size),
            store: Mutex::new(CompatStore {
                data: pattern(size as usize, setup.seed),
                calls: 0,
                nth: Vec::new(),
                ranges: Vec::new(),
                failed_reads: 0,
                failed_writes: 0,
            }),
        });
        // Transient faults, as for the block-map files (see `BlockBackend::new`).
        file.object.set_write_failure_limit(None);
        Self {
            file,
            seed: setup.seed,
        }
    }
}

impl Backend for CompatBackend {
    type V = CompatFile;

    fn vnode(&self) -> &Arc<CompatFile> {
        &self.file
    }

    fn stored(&self) -> Vec<u8> {
        let size = self.file.object.size() as usize;
        let store = lock(&self.file.store);
        let mut out = vec![0; size];
        let n = size.min(store.data.len());
        out[..n].copy_from_slice(&store.data[..n]);
        out
    }

    fn quiesce(&self) {}

    fn fail_nth(&self, n: u64) {
        let mut store = lock(&self.file.store);
        let at = store.calls + n;
        store.nth.push(at);
    }

    fn fail_blocks(&self, lbns: Range<u64>) {
        lock(&self.file.store)
            .ranges
            .push(lbns.start * PAGE..lbns.end * PAGE);
    }

    fn clear_faults(&self) {
        let mut store = lock(&self.file.store);
        store.nth.clear();
        store.ranges.clear();
    }

    fn failures(&self) -> (u64, u64) {
        let store = lock(&self.file.store);
        (store.failed_reads, store.failed_writes)
    }

    fn allocated(&self, _range: Range<u64>) -> bool {
        true
    }

    fn initial(&self) -> Vec<u8> {
        pattern(self.file.object.size() as usize, self.seed)
    }

    fn resized(&self, size: u64) {
        // ftruncate of the backing file.
        lock(&self.file.store).data.resize(size as usize, 0);
    }

    fn block_shift(&self) -> u32 {
        12
    }
}

// ---------------------------------------------------------------------------------
// The harness.

struct Harness<B: Backend> {
    b: B,
    compat: bool,
    /// [`Setup::dirty_limits`]: `write` writes to the device.
    dirty_limits: bool,
    model: Vec<u8>,
    /// A write failed and no synchronous flush has reported it yet.
    pending: bool,
    summary: Summary,
    failures: (u64, u64),
    trace: String,
    /// Where the modelled window starts: `model[i]` is file byte `base + i`.
    base: u64,
    /// The largest size the pager allows, from `base` (window coordinates).
    limit: u64,
    /// The largest size steps aim for, from `base`: a little past `limit` when that
    /// is near, so that some reach past it.
    cap: u64,
    /// The error each hook was last armed with, by [`HOOKS`] index.
    hook_errors: [Error; 4],
}

/// What the observable state of the file was before a step, for steps whose effect
/// depends on it.
struct Before {
    pending: bool,
    failures: (u64, u64),
    /// Hook failures armed, by [`HOOKS`] index.
    hooks: [u64; 4],
}

fn page_count(size: u64) -> u64 {
    size.div_ceil(PAGE)
}

fn is_error(result: &Result, allowed: &[Error]) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => allowed.contains(e),
    }
}

impl<B: Backend> Harness<B> {
    fn new(b: B, setup: &Setup) -> Self {
        let base = b.base();
        let limit = b.max_size() - base;
        let cap = if limit <= HIGH_WINDOW {
            limit + 2 * PAGE
        } else {
            MAX_SIZE
        };
        Self {
            model: b.initial(),
            b,
            compat: setup.compat,
            dirty_limits: setup.dirty_limits && !setup.compat,
            pending: false,
            summary: Summary::default(),
            failures: (0, 0),
            trace: String::new(),
            base,
            limit,
            cap,
            hook_errors: [Error::Io; 4],
        }
    }

    fn v(&self) -> &Arc<B::V> {
        self.b.vnode()
    }

    /// The file size, from `base`.
    fn size(&self) -> u64 {
        self.v().object().size() - self.base
    }

    fn before(&self) -> Before {
        Before {
            pending: self.pending,
            failures: self.failures,
            hooks: self.b.hooks_left(),
        }
    }

    /// The hook failures injected since `before`, with their errors.
    fn injected(&self, before: &Before) -> Vec<(Hook, Error)> {
        let left = self.b.hooks_left();
        let mut out = Vec::new();
        for i in 0..HOOKS.len() {
            for _ in left[i]..before.hooks[i] {
                out.push((HOOKS[i], self.hook_errors[i]));
            }
        }
        out
    }

    /// `allowed` and the errors of the hook failures injected since `before`.
    fn allowed(&self, before: &Before, allowed: &[Error]) -> Vec<Error> {
        let mut out = allowed.to_vec();
        out.extend(self.injected(before).into_iter().map(|(_, e)| e));
        out
    }

    /// Whether a hook failed with `Io` since `before` (an `Io` no device raised).
    fn injected_io(&self, before: &Before) -> bool {
        self.injected(before).iter().any(|&(_, e)| e == Error::Io)
    }

    /// Whether `trans_begin` or `journal_begin` failed since `before`: the step
    /// failed on entry, before doing anything.
    fn refused_entry(&self, before: &Before) -> bool {
        self.injected(before)
            .iter()
            .any(|&(hook, _)| matches!(hook, Hook::TransBegin | Hook::JournalBegin))
    }

    /// `bmap` failures since `before` (in a flush, each is a failed write).
    fn bmap_failures(&self, before: &Before) -> u64 {
        self.injected(before)
            .iter()
            .filter(|&&(hook, _)| hook == Hook::Bmap)
            .count() as u64
    }

    fn run(mut self, ops: &[Op]) -> core::result::Result<Summary, String> {
        let _ = writeln!(
            self.trace,
            "setup: size {:#x}, bshift {}, compat {}, base {:#x}, limit {:#x}",
            self.model.len(),
            self.b.block_shift(),
            self.compat,
            self.base,
            self.limit
        );
        self.check().map_err(|e| self.fail("setup", e))?;
        for (i, op) in ops.iter().enumerate() {
            let before = self.before();
            let outcome = self.apply(op, &before);
            self.summary.ops += 1;
            let step = format!("step {i}: {op:?}");
            let _ = writeln!(self.trace, "{step} -> {outcome:?}");
            match outcome {
                Ok(true) => self.summary.failed_ops += 1,
                Ok(false) => {}
                Err(e) => return Err(self.fail(&step, e)),
            }
            self.check().map_err(|e| self.fail(&step, e))?;
        }
        self.finish().map_err(|e| self.fail("final flush", e))?;
        Ok(self.summary)
    }

    fn fail(&self, step: &str, error: String) -> String {
        format!("{step}: {error}\ntrace:\n{}", self.trace)
    }

    /// Quiesces the device and folds new write failures into the latch model.
    /// Returns how many reads and writes failed since `before`.
    fn settle(&mut self, before: &Before) -> (u64, u64) {
        self.b.quiesce();
        self.failures = self.b.failures();
        let reads = self.failures.0 - before.failures.0;
        let writes = self.failures.1 - before.failures.1;
        self.summary.write_failures += writes;
        (reads, writes)
    }

    /// A step whose writes (if any) latch without being reported.
    fn latch(&mut self, writes: u64) {
        if writes > 0 && !self.pending {
            self.pending = true;
            self.summary.error_epochs += 1;
        }
    }

    /// A synchronous flush returned `result` (its writes failed `writes` times).
    fn flushed(&mut self, before: &Before, writes: u64, result: Result) -> Check {
        match result {
            Ok(()) => {
                ensure!(
                    !before.pending && writes == 0,
                    "flush succeeded though a write error was pending ({}) or one of its writes failed ({writes})",
                    before.pending
                );
            }
            Err(Error::Io) => {
                ensure!(
                    before.pending || writes > 0,
                    "flush reported an error no write raised"
                );
                if !before.pending {
                    self.summary.error_epochs += 1;
                }
                self.summary.reports += 1;
            }
            Err(e) => return Err(format!("flush failed with {e:?}")),
        }
        self.pending = false;
        Ok(())
    }

    /// The bytes of the resident page at `offset` through the fast path.
    fn page_bytes(&self, offset: u64) -> Option<Vec<u8>> {
        let offset = self.base + offset;
        let flags = GetFlags::LOCKED | GetFlags::PASTEOF | GetFlags::NOTIMESTAMP;
        match getpages(
            self.v(),
            Fault {
                offset,
                count: 1,
                center: 0,
                access: Access::Read,
                advice: Advice::Normal,
                flags,
            },
        ) {
            Ok(Fetched::Resident(pages)) if pages.bytes(0).is_some() => {
                pages.bytes(0).map(<[u8]>::to_vec)
            }
            // The fast path leaves out pages mapped writable: read them as the mapping
            // would. It refuses a page reaching past the largest size: read that one
            // from the cache too.
            result => {
                let state = self.v().object().read();
                let writable = state.cache().map_state(offset) == MapState::Writable;
                (writable || matches!(result, Err(Error::TooBig)))
                    .then(|| state.cache().mapped_bytes(offset).map(<[u8]>::to_vec))
                    .flatten()
            }
        }
    }

    /// The file as a reader would see it: resident pages over the backing store.
    fn observed(&self) -> Vec<u8> {
        let mut out = self.b.stored();
        let size = out.len() as u64;
        let offsets: Vec<u64> = {
            let state = self.v().object().read();
            state
                .cache()
                .range(self.base..u64::MAX)
                .map(|p| p.offset() - self.base)
                .collect()
        };
        for offset in offsets.into_iter().filter(|&o| o < size) {
            if let Some(bytes) = self.page_bytes(offset) {
                let n = (size - offset).min(PAGE) as usize;
                out[offset as usize..offset as usize + n].copy_from_slice(&bytes[..n]);
            }
        }
        out
    }

    /// Every invariant of the module docs, with the device quiesced.
    fn check(&self) -> Check {
        let object = self.v().object();
        let size = self.model.len() as u64;
        struct Seen {
            offset: u64,
            flags: PageFlags,
            dirty: DirtyStatus,
            writeback: bool,
            map: MapState,
        }
        let (pages, tagged, any_dirty, any_writeback) = {
            let state = object.read();
            ensure!(
                state.size() == self.base + size,
                "file size {:#x}, model {size:#x} (from {:#x})",
                state.size(),
                self.base
            );
            ensure!(
                state.write_size() == state.size(),
                "write size {:#x} != size {:#x}",
                state.write_size(),
                state.size()
            );
            ensure!(
                state.writes_in_flight() == 0,
                "{} writes in flight on a quiesced device",
                state.writes_in_flight()
            );
            ensure!(
                state.pending_write_error().is_some() == self.pending,
                "latched write error {:?}, model says pending {}",
                state.pending_write_error(),
                self.pending
            );
            let cache = state.cache();
            let pages: Vec<Seen> = cache
                .range(0..u64::MAX)
                .map(|p| Seen {
                    offset: p.offset().wrapping_sub(self.base),
                    flags: p.flags,
                    dirty: p.dirty(),
                    writeback: p.in_writeback(),
                    map: cache.map_state(p.offset()),
                })
                .collect();
            let mut tagged = Vec::new();
            let mut from = 0;
            while let Some(at) = cache.next_tagged(Tag::Dirty, from) {
                tagged.push(at.wrapping_sub(self.base));
                from = at + PAGE;
            }
            let any_dirty = cache.any_tagged(Tag::Dirty);
            let any_writeback = cache.any_tagged(Tag::Writeback);
            if any_dirty {
                ensure!(
                    state.flags().contains(ObjectFlags::ON_WORKLIST),
                    "dirty pages but not on the work list"
                );
            }
            (pages, tagged, any_dirty, any_writeback)
        };
        ensure!(!any_writeback, "writeback tag set with nothing in flight");
        let dirty: Vec<u64> = pages
            .iter()
            .filter(|p| p.dirty != DirtyStatus::Clean)
            .map(|p| p.offset)
            .collect();
        ensure!(
            tagged == dirty,
            "dirty tag on {tagged:x?}, dirty status on {dirty:x?}"
        );
        ensure!(any_dirty != dirty.is_empty(), "any_tagged(Dirty) disagrees");
        self.b.ledger()?;
        let bad = PageFlags::BUSY
            | PageFlags::WANTED
            | PageFlags::RELEASED
            | PageFlags::PAGEOUT
            | PageFlags::FAKE;
        for p in &pages {
            ensure!(
                p.offset <= self.cap.max(size) + 16 * PAGE,
                "page {:#x} resident outside the modelled window",
                p.offset.wrapping_add(self.base)
            );
            ensure!(
                !p.flags.intersects(bad),
                "page {:#x} left with {:?}",
                p.offset,
                p.flags
            );
            ensure!(!p.writeback, "page {:#x} in writeback", p.offset);
            ensure!(
                p.map != MapState::Writable || p.dirty != DirtyStatus::Clean,
                "page {:#x} mapped writable but clean: a store would be lost",
                p.offset
            );
        }

        let stored = self.b.stored();
        ensure!(
            stored.len() as u64 == size,
            "backing store view has the wrong size"
        );
        let mut covered = vec![false; page_count(size) as usize];
        for p in &pages {
            let Some(bytes) = self.page_bytes(p.offset) else {
                return Err(format!("resident page {:#x} not reachable", p.offset));
            };
            for (i, &byte) in bytes.iter().enumerate() {
                let at = p.offset + i as u64;
                if at < size {
                    let want = self.model[at as usize];
                    ensure!(
                        byte == want,
                        "page {:#x} byte {at:#x} is {byte:#x}, model {want:#x} ({:?}, {:?})",
                        p.offset,
                        p.dirty,
                        p.flags
                    );
                    if p.dirty == DirtyStatus::Clean {
                        let disk = stored[at as usize];
                        ensure!(
                            byte == disk,
                            "clean page {:#x} byte {at:#x} is {byte:#x}, backing store {disk:#x}",
                            p.offset
                        );
                    }
                } else {
                    ensure!(
                        byte == 0,
                        "page {:#x} byte {at:#x} past EOF {size:#x} is {byte:#x}",
                        p.offset
                    );
                }
            }
            if let Some(c) = covered.get_mut((p.offset / PAGE) as usize) {
                *c = true;
            }
        }
        for (index, _) in covered.iter().enumerate().filter(|(_, c)| !**c) {
            let start = index * PAGE_SIZE;
            let end = (start + PAGE_SIZE).min(size as usize);
            if let Some(at) = (start..end).find(|&at| stored[at] != self.model[at]) {
                return Err(format!(
                    "byte {at:#x} of non-resident page {start:#x}: backing store {:#x}, model {:#x} (lost write?)",
                    stored[at], self.model[at]
                ));
            }
        }
        Ok(())
    }

    /// A fault through the pager of this backend.
    fn fault(
        &self,
        offset: u64,
        count: usize,
        center: usize,
        access: Access,
        flags: GetFlags,
    ) -> Result<Fetched<'_, B::V>> {
        let fault = Fault {
            offset: self.base + offset,
            count,
            center,
            access,
            advice: Advice::Normal,
            flags,
        };
        if self.compat {
            compat::getpages(self.v(), fault)
        } else {
            getpages(self.v(), fault)
        }
    }

    /// Checks `bytes` of the page at `offset` against the model.
    fn check_page(&self, offset: u64, bytes: &[u8]) -> Check {
        let size = self.model.len() as u64;
        for (i, &byte) in bytes.iter().enumerate() {
            let at = offset + i as u64;
            let want = if at < size {
                self.model[at as usize]
            } else {
                0
            };
            ensure!(
                byte == want,
                "faulted page {offset:#x} byte {at:#x} is {byte:#x}, want {want:#x}"
            );
        }
        Ok(())
    }

    /// Applies one step. `Ok(true)` when the operation failed as allowed.
    fn apply(&mut self, op: &Op, before: &Before) -> core::result::Result<bool, String> {
        let size = self.size();
        let npages = page_count(size);
        match *op {
            Op::ReadFault {
                page,
                count,
                center,
                mode,
            } => {
                let first = u64::from(page) % (npages + 1);
                let count = 1 + usize::from(count % 8);
                let center = usize::from(center) % count;
                let offset = first * PAGE;
                let past_eof = offset + (center as u64) * PAGE >= size;
                let too_big = offset + count as u64 * PAGE > self.fault_limit();
                let flags = match mode {
                    ReadMode::Locked => GetFlags::LOCKED,
                    ReadMode::Sync => GetFlags::SYNCIO,
                    ReadMode::Async => GetFlags::empty(),
                };
                let base = self.base;
                let result = match self.fault(offset, count, center, Access::Read, flags) {
                    Ok(Fetched::Busy(pages)) => {
                        let want = count.min((page_count(size) - first) as usize);
                        ensure!(pages.len() == want, "{} pages, want {want}", pages.len());
                        for i in 0..pages.len() {
                            self.check_page(pages.offset(i) - base, pages.bytes(i))?;
                        }
                        Ok(())
                    }
                    Ok(Fetched::Resident(mut pages)) => {
                        for i in 0..pages.len() {
                            if let Some(bytes) = pages.bytes(i) {
                                self.check_page(pages.offset(i) - base, bytes)?;
                            }
                            ensure!(
                                pages.bytes_mut(i).is_none(),
                                "a read fault's resident page {i} was writable"
                            );
                        }
                        Ok(())
                    }
                    Ok(Fetched::Started) => Ok(()),
                    Ok(Fetched::Writable(_)) => {
                        return Err("a read fault handed out writable pages".into());
                    }
                    Err(e) => Err(e),
                };
                let (reads, writes) = self.settle(before);
                ensure!(writes == 0, "a read fault wrote");
                if too_big {
                    ensure!(
                        result == Err(Error::TooBig),
                        "a fault past the largest size gave {result:?}"
                    );
                    return Ok(true);
                }
                if past_eof {
                    // The transaction is entered first (but for the fast path).
                    let refused =
                        self.refused_entry(before) && is_error(&result, &self.allowed(before, &[]));
                    ensure!(
                        result == Err(Error::Invalid) || refused,
                        "past EOF gave {result:?}"
                    );
                    return Ok(true);
                }
                let allowed = self.allowed(
                    before,
                    match mode {
                        ReadMode::Locked => &[Error::Busy],
                        ReadMode::Sync => &[Error::Io, Error::NoMemory],
                        ReadMode::Async => &[Error::Busy, Error::NoMemory, Error::Io],
                    },
                );
                ensure!(is_error(&result, &allowed), "read fault: {result:?}");
                if result == Err(Error::Io) && mode == ReadMode::Sync {
                    ensure!(
                        reads > 0 || self.injected_io(before),
                        "EIO without a failed read"
                    );
                }
                Ok(result.is_err())
            }
            Op::WriteFault {
                page,
                count,
                mode,
                at,
                len,
                seed,
            } => {
                if npages == 0 {
                    return Ok(false);
                }
                let first = u64::from(page) % npages;
                let count = 1 + usize::from(count % 4);
                let offset = first * PAGE;
                let at = usize::from(at) % PAGE_SIZE;
                let len = 1 + usize::from(len) % PAGE_SIZE;
                let last = (first + count as u64).min(npages) * PAGE;
                // OVERWRITE neither reads nor allocates: as in the reference, the
                // caller must have given the pages' blocks storage first (write does).
                let allocated = self.b.allocated(offset..last);
                // A page known to back a hole: resident and read-only.
                let known_hole = {
                    let state = self.v().object().read();
                    state
                        .cache()
                        .range(self.base + offset..self.base + last)
                        .any(|p| p.flags.contains(PageFlags::RDONLY))
                };
                let too_big = offset + count as u64 * PAGE > self.fault_limit();
                let flags = match mode {
                    WriteMode::Sync => GetFlags::SYNCIO,
                    // Over a hole no page shows, the caller breaking the contract would
                    // leave pages writable over it (their stores lost): not modelled.
                    WriteMode::Overwrite if !allocated && !known_hole => GetFlags::SYNCIO,
                    WriteMode::Overwrite => GetFlags::SYNCIO | GetFlags::OVERWRITE,
                    WriteMode::NoBlockAlloc => GetFlags::SYNCIO | GetFlags::NOBLOCKALLOC,
                    WriteMode::Locked => GetFlags::LOCKED,
                    WriteMode::Async => GetFlags::empty(),
                };
                let base = self.base;
                let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
                let result = match self.fault(offset, count, 0, Access::Write, flags) {
                    Ok(Fetched::Writable(mut pages)) => {
                        ensure!(
                            matches!(mode, WriteMode::Sync | WriteMode::Overwrite)
                                || (mode == WriteMode::NoBlockAlloc && self.compat),
                            "a {mode:?} write fault handed out writable pages"
                        );
                        let want = count.min((npages - first) as usize);
                        ensure!(pages.len() == want, "{} pages, want {want}", pages.len());
                        let overwrite = flags.contains(GetFlags::OVERWRITE);
                        if mode == WriteMode::Sync && seed % 5 == 0 {
                            // Marked written and nothing stored: dirty as they are.
                            pages.mark_all_written();
                        } else {
                            for i in 0..pages.len() {
                                let page_at = pages.offset(i) - base;
                                let room = (size - page_at).min(PAGE) as usize;
                                let (from, to) = if overwrite {
                                    (0, room)
                                } else {
                                    (at.min(room), (at + len).min(room))
                                };
                                let data = pattern(to - from, seed.wrapping_add(i as u8));
                                let bytes = pages.bytes_mut(i);
                                bytes[from..to].copy_from_slice(&data);
                                if overwrite {
                                    bytes[room..].fill(0);
                                }
                                writes.push((page_at + from as u64, data));
                            }
                        }
                        Ok(())
                    }
                    Ok(Fetched::Busy(pages)) => {
                        ensure!(
                            mode == WriteMode::NoBlockAlloc,
                            "a {mode:?} write fault handed out read-only pages"
                        );
                        for i in 0..pages.len() {
                            self.check_page(pages.offset(i) - base, pages.bytes(i))?;
                        }
                        Ok(())
                    }
                    Ok(Fetched::Resident(mut pages)) => {
                        ensure!(
                            mode == WriteMode::Locked,
                            "a {mode:?} write fault took the fast path"
                        );
                        for i in 0..pages.len() {
                            let page_at = pages.offset(i) - base;
                            if page_at >= size {
                                continue;
                            }
                            let room = (size - page_at).min(PAGE) as usize;
                            let (from, to) = (at.min(room), (at + len).min(room));
                            let data = pattern(to - from, seed.wrapping_add(i as u8));
                            if let Some(bytes) = pages.bytes_mut(i) {
                                bytes[from..to].copy_from_slice(&data);
                                writes.push((page_at + from as u64, data));
                            }
                        }
                        Ok(())
                    }
                    Ok(Fetched::Started) => {
                        return Err(format!("a {mode:?} write fault started read-ahead"));
                    }
                    Err(e) => Err(e),
                };
                let (reads, w) = self.settle(before);
                ensure!(w == 0, "a write fault wrote");
                for (at, data) in writes {
                    self.model[at as usize..at as usize + data.len()].copy_from_slice(&data);
                }
                if mode == WriteMode::Async {
                    ensure!(
                        result == Err(Error::Invalid),
                        "an asynchronous write fault gave {result:?}"
                    );
                    return Ok(true);
                }
                if too_big && !self.compat {
                    ensure!(
                        result == Err(Error::TooBig),
                        "a write fault past the largest size gave {result:?}"
                    );
                    return Ok(true);
                }
                let allowed = self.allowed(
                    before,
                    match mode {
                        WriteMode::Locked => &[Error::Busy],
                        WriteMode::Overwrite if known_hole => &[Error::Invalid, Error::NoMemory],
                        _ => &[Error::Io, Error::NoMemory, Error::NoSpace],
                    },
                );
                ensure!(is_error(&result, &allowed), "write fault: {result:?}");
                ensure!(
                    !(mode == WriteMode::Overwrite && known_hole && result.is_ok()),
                    "an overwrite fault over a page known to back a hole succeeded"
                );
                if result == Err(Error::Io) {
                    ensure!(
                        reads > 0 || self.injected_io(before),
                        "EIO without a failed read"
                    );
                }
                Ok(result.is_err())
            }
            Op::MapStore {
                page,
                at,
                len,
                seed,
            } => {
                if npages == 0 {
                    return Ok(false);
                }
                let offset = (u64::from(page) % npages) * PAGE;
                let room = (size - offset).min(PAGE) as usize;
                let at = usize::from(at) % room;
                let len = (1 + usize::from(len) % PAGE_SIZE).min(room - at);
                let data = pattern(len, seed);
                let mut result = Ok(());
                let abs = self.base + offset;
                for attempt in 0..2 {
                    let stored = {
                        let mut state = self.v().object().lock();
                        state.cache_mut().write_through_mapping(abs, at, &data)
                    };
                    match stored {
                        Ok(()) => {
                            self.model[offset as usize + at..offset as usize + at + len]
                                .copy_from_slice(&data);
                            result = Ok(());
                            break;
                        }
                        Err(Error::Busy) if attempt == 0 => {
                            // The store faults: a write fault, then the fault handler
                            // maps the page writable before releasing it.
                            match self.fault(offset, 1, 0, Access::Write, GetFlags::SYNCIO) {
                                Ok(Fetched::Writable(pages)) => {
                                    let mut state = self.v().object().lock();
                                    state.cache_mut().map(abs, MapState::Writable);
                                    state.set_flags(
                                        ObjectFlags::MAPPED | ObjectFlags::WRITE_MAPPED,
                                        true,
                                    );
                                    drop(state);
                                    drop(pages);
                                }
                                Ok(_) => return Err("write fault gave no busy page".into()),
                                Err(e) => {
                                    result = Err(e);
                                    break;
                                }
                            }
                        }
                        Err(e) => return Err(format!("store through the mapping: {e:?}")),
                    }
                }
                let (reads, writes) = self.settle(before);
                ensure!(writes == 0, "a store wrote");
                if offset + PAGE > self.fault_limit() && !self.compat {
                    ensure!(
                        result == Err(Error::TooBig),
                        "a fault past the largest size gave {result:?}"
                    );
                    return Ok(true);
                }
                let allowed = self.allowed(before, &[Error::Io, Error::NoMemory, Error::NoSpace]);
                ensure!(is_error(&result, &allowed), "mapping fault: {result:?}");
                if result == Err(Error::Io) {
                    ensure!(
                        reads > 0 || self.injected_io(before),
                        "EIO without a failed read"
                    );
                }
                Ok(result.is_err())
            }
            Op::Unmap => {
                let mut state = self.v().object().lock();
                let offsets: Vec<u64> = state
                    .cache()
                    .range(0..u64::MAX)
                    .map(|p| p.offset())
                    .collect();
                for offset in offsets {
                    state.cache_mut().protect(offset, Protection::None);
                }
                state.set_flags(ObjectFlags::MAPPED | ObjectFlags::WRITE_MAPPED, false);
                Ok(false)
            }
            Op::Put { start, len, flags } => self.put(start, len, flags, before),
            Op::SetSize { size: new } => {
                let new = u64::from(new) % (self.cap + 1);
                let old = self.model.clone();
                let result = setsize(self.v(), self.base + new);
                let (_, writes) = self.settle(before);
                ensure!(writes == 0, "setsize wrote");
                if new > self.limit {
                    ensure!(
                        result == Err(Error::TooBig),
                        "setsize past the largest size gave {result:?}"
                    );
                    return Ok(true);
                }
                if let Err(e) = result {
                    if self.refused_entry(before) {
                        ensure!(
                            self.allowed(before, &[]).contains(&e),
                            "setsize refused entry with {e:?}"
                        );
                        ensure!(self.observed() == old, "a refused setsize changed the file");
                        return Ok(true);
                    }
                }
                match result {
                    Ok(()) => {
                        if new < size {
                            self.b.resized(new);
                        }
                        self.model.resize(new as usize, 0);
                        Ok(false)
                    }
                    Err(e) => {
                        // Growing zeroes the old last block first, as write does; it
                        // may fail part-way, leaving the size where it got to.
                        ensure!(
                            new > size
                                && self
                                    .allowed(before, &[Error::Io, Error::NoMemory, Error::NoSpace])
                                    .contains(&e),
                            "setsize({new:#x}) from {size:#x}: {e:?}"
                        );
                        let seen = self.observed();
                        ensure!(
                            seen.len() >= old.len()
                                && seen[..old.len()] == old[..]
                                && seen[old.len()..].iter().all(|&b| b == 0),
                            "failed setsize changed the file"
                        );
                        self.model = seen;
                        Ok(true)
                    }
                }
            }
            Op::Write { offset, len, seed } => {
                let span = (size + 3 * PAGE).min(self.cap);
                let offset = u64::from(offset) % span;
                let len = (1 + u64::from(len) % (64 * 1024))
                    .min(self.cap - offset)
                    .max(1);
                let data = pattern(len as usize, seed);
                if self.compat {
                    self.compat_write(offset, &data, before)
                } else {
                    self.buffered_write(offset, &data, before)
                }
            }
            Op::Read { offset, len } => {
                let offset = u64::from(offset) % (size + 2 * PAGE);
                let len = 1 + (len % (64 * 1024)) as usize;
                let mut buf = vec![0u8; len];
                let result = if self.compat {
                    self.compat_read(offset, &mut buf)
                } else {
                    read(self.v(), self.base + offset, &mut buf)
                };
                let (reads, writes) = self.settle(before);
                ensure!(writes == 0, "a read wrote");
                if offset > self.limit && !self.compat {
                    ensure!(
                        result == Err(Error::Invalid),
                        "a read past the largest size gave {result:?}"
                    );
                    return Ok(true);
                }
                match result {
                    Ok(n) => {
                        let want = (size.saturating_sub(offset) as usize).min(len);
                        ensure!(n == want, "read {n} bytes, want {want}");
                        let from = (offset as usize).min(self.model.len());
                        let model = &self.model[from..from + n];
                        if let Some(at) = (0..n).find(|&i| buf[i] != model[i]) {
                            return Err(format!(
                                "read byte {:#x} is {:#x}, model {:#x}",
                                offset + at as u64,
                                buf[at],
                                model[at]
                            ));
                        }
                        Ok(false)
                    }
                    Err(e) => {
                        ensure!(
                            self.allowed(before, &[Error::Io, Error::NoMemory])
                                .contains(&e),
                            "read failed with {e:?}"
                        );
                        if e == Error::Io {
                            ensure!(
                                reads > 0 || self.injected_io(before),
                                "EIO without a failed read"
                            );
                        }
                        Ok(true)
                    }
                }
            }
            Op::Direct {
                offset,
                sectors,
                write,
                misalign,
                seed,
            } => {
                if self.compat {
                    return Ok(false);
                }
                self.direct(offset, sectors, write, misalign, seed, before)
            }
            Op::FailNth { n } => {
                self.b.fail_nth(1 + u64::from(n % 6));
                Ok(false)
            }
            Op::FailBlocks { lbn, count } => {
                let blocks = size.div_ceil(1 << self.b.block_shift()).max(1);
                let first = u64::from(lbn) % blocks;
                self.b.fail_blocks(first..first + 1 + u64::from(count % 3));
                Ok(false)
            }
            Op::ClearFaults => {
                self.b.clear_faults();
                Ok(false)
            }
            Op::CacheLimit { extra } => {
                let mut state = self.v().object().lock();
                let limit = match extra {
                    Some(extra) => state.cache().resident_pages() + usize::from(extra % 8),
                    None => usize::MAX,
                };
                state.cache_mut().set_limit(limit);
                Ok(false)
            }
            Op::Reclaim { pages } => {
                let reclaimer = Reclaimer::new();
                reclaimer
                    .register(self.v())
                    .map_err(|e| format!("register: {e:?}"))?;
                let old = self.observed();
                reclaimer.reclaim(1 + usize::from(pages % 32));
                ensure!(reclaimer.unregister(self.v()), "registered");
                let (_, writes) = self.settle(before);
                // A bmap failure fails the write of its cluster, as the device would.
                let writes = writes + self.bmap_failures(before);
                self.latch(writes);
                ensure!(self.observed() == old, "reclaim changed the file");
                Ok(false)
            }
            Op::FailHook { hook, calls, error } => {
                let index = usize::from(hook % 4);
                let error = if HOOKS[index] == Hook::Bmap {
                    Error::Io
                } else {
                    HOOK_ERRORS[usize::from(error) % HOOK_ERRORS.len()]
                };
                self.hook_errors[index] = error;
                self.b
                    .fail_hook(HOOKS[index], 1 + u64::from(calls % 3), error);
                Ok(false)
            }
            Op::Beyond { what, delta } => self.beyond(what, delta, before),
        }
    }

    /// [`Op::Beyond`].
    /// How far a fault may reach: the largest size rounded up to a whole page and
    /// block, so the page holding the last addressable byte can be faulted whole.
    fn fault_limit(&self) -> u64 {
        let unit = PAGE.max(1 << self.b.block_shift());
        self.limit.div_ceil(unit).saturating_mul(unit)
    }

    fn beyond(
        &mut self,
        what: u8,
        delta: u32,
        before: &Before,
    ) -> core::result::Result<bool, String> {
        let max = self.b.max_size();
        let end_of_file = self.base + self.size();
        let delta = u64::from(delta);
        // Near the top of the address space, or just past the largest size.
        let near = if delta % 2 == 0 {
            u64::MAX - delta
        } else {
            max.saturating_add(delta / 2 + 1)
        };
        let page_near = trunc_page(near);
        let old = self.observed();
        let (result, want): (Result, &[Error]) = match what % 6 {
            0 | 5 => {
                let flags = if what % 6 == 0 {
                    GetFlags::SYNCIO
                } else {
                    GetFlags::LOCKED
                };
                let count = 1 + (delta % 4) as usize;
                let found = self
                    .fault(page_near - self.base, count, 0, Access::Read, flags)
                    .map(drop);
                (found, &[Error::TooBig, Error::Invalid])
            }
            1 => {
                // Whole pages ending just past the largest size.
                let count = 1 + (delta % 4) as usize;
                let offset = trunc_page(max.saturating_sub(delta % (count as u64 * PAGE)))
                    .max(trunc_page(end_of_file) + PAGE);
                if offset + count as u64 * PAGE <= max {
                    return Ok(false);
                }
                let found = self
                    .fault(
                        offset - self.base,
                        count,
                        0,
                        Access::Write,
                        GetFlags::SYNCIO,
                    )
                    .map(drop);
                // Past the end of file without PASTEOF (Invalid), and reaching past the
                // page holding the last addressable byte unless the largest size is
                // not page aligned (TooBig): either answer refuses it.
                (found, &[Error::TooBig, Error::Invalid])
            }
            2 => {
                if self.compat {
                    return Ok(false);
                }
                // Ending past the largest size (or past u64::MAX).
                let offset = max.saturating_sub(delta % 8192);
                let data = pattern(8192 + 1 + (delta % 100) as usize, delta as u8);
                let offset = if delta % 3 == 0 { near } else { offset };
                (write(self.v(), offset, &data).map(drop), &[Error::TooBig])
            }
            3 => {
                let new = max.saturating_add(1 + delta);
                (setsize(self.v(), new), &[Error::TooBig])
            }
            _ => {
                if self.compat {
                    return Ok(false);
                }
                let mut buf = [0u8; 600];
                if delta % 3 == 0 {
                    // Past the end of file and within the largest size: nothing.
                    let offset = max - (delta % (max - end_of_file + 1));
                    let n = read(self.v(), offset, &mut buf);
                    ensure!(n == Ok(0), "read at {offset:#x} past EOF gave {n:?}");
                    (Ok(()), &[])
                } else {
                    let n = read(self.v(), near.max(max + 1), &mut buf);
                    (n.map(drop), &[Error::Invalid])
                }
            }
        };
        let (_, writes) = self.settle(before);
        ensure!(writes == 0, "a call past the largest size wrote");
        // A hook failure armed before may be met first (a fault enters the transaction
        // before it looks at the end of file).
        let want = if want.is_empty() {
            Vec::new()
        } else {
            self.allowed(before, want)
        };
        ensure!(
            want.is_empty() || matches!(result, Err(e) if want.contains(&e)),
            "call {} at {near:#x} (largest size {max:#x}) gave {result:?}, want one of {want:?}",
            what % 6
        );
        ensure!(
            self.observed() == old && self.size() as usize == old.len(),
            "a call past the largest size changed the file"
        );
        Ok(result.is_err())
    }

    fn put(
        &mut self,
        start: u16,
        len: u8,
        bits: u8,
        before: &Before,
    ) -> core::result::Result<bool, String> {
        let size = self.size();
        let base = self.base;
        let start = base + (u64::from(start) % (page_count(size) + 2)) * PAGE;
        let end = match len % 10 {
            0 => 0,
            n => start + u64::from(n) * PAGE,
        };
        let mut flags = PutFlags::empty();
        for (bit, flag) in [
            PutFlags::CLEANIT,
            PutFlags::SYNCIO,
            PutFlags::FREE,
            PutFlags::DEACTIVATE,
            PutFlags::ALLPAGES,
        ]
        .into_iter()
        .enumerate()
        {
            if bits & (1 << bit) != 0 {
                flags |= flag;
            }
        }
        let range_end = if end == 0 || flags.contains(PutFlags::ALLPAGES) {
            u64::MAX
        } else {
            end
        };
        // DEACTIVATE wins over FREE, as in the reference.
        let discarding = flags.contains(PutFlags::FREE)
            && !flags.intersects(PutFlags::CLEANIT | PutFlags::DEACTIVATE);
        let dirty_in_range: Vec<u64> = {
            let state = self.v().object().read();
            state
                .cache()
                .range(start..range_end)
                .filter(|p| p.dirty() != DirtyStatus::Clean)
                .map(|p| p.offset() - base)
                .collect()
        };
        let old = self.observed();
        let result = putpages(self.v(), start, end, flags);
        let (_, writes) = self.settle(before);
        if !flags.intersects(PutFlags::CLEANIT | PutFlags::FREE | PutFlags::DEACTIVATE) {
            ensure!(
                result == Err(Error::Invalid),
                "no action flag gave {result:?}"
            );
            return Ok(true);
        }
        if let Err(e) = result {
            if self.refused_entry(before) {
                // Refused the transaction: nothing written, nothing reported.
                ensure!(
                    self.allowed(before, &[]).contains(&e),
                    "a flush refused entry with {e:?}"
                );
                ensure!(writes == 0, "a flush refused entry but wrote");
                ensure!(
                    self.observed() == old,
                    "a flush refused entry but changed the file"
                );
                return Ok(true);
            }
        }
        // A bmap failure fails the write of its cluster, as the device would.
        let writes = writes + self.bmap_failures(before);
        if flags.contains(PutFlags::CLEANIT | PutFlags::SYNCIO) {
            self.flushed(before, writes, result)?;
        } else {
            ensure!(
                result.is_ok() || (result == Err(Error::Io) && writes > 0),
                "putpages {flags:?}: {result:?}"
            );
            if !flags.contains(PutFlags::CLEANIT) {
                ensure!(writes == 0, "putpages without CLEANIT wrote");
            }
            self.latch(writes);
        }
        if discarding {
            // Dirty pages freed without cleaning: the file reads the backing store.
            let stored = self.b.stored();
            let resident: Vec<u64> = {
                let state = self.v().object().read();
                state
                    .cache()
                    .range(base..u64::MAX)
                    .map(|p| p.offset() - base)
                    .collect()
            };
            for offset in dirty_in_range {
                ensure!(!resident.contains(&offset), "FREE kept page {offset:#x}");
                let from = offset.min(size) as usize;
                let to = (offset + PAGE).min(size) as usize;
                self.model[from..to].copy_from_slice(&stored[from..to]);
            }
        }
        Ok(result.is_err())
    }

    /// genpager's buffered write; on error the file must show one of its prefixes.
    fn buffered_write(
        &mut self,
        offset: u64,
        data: &[u8],
        before: &Before,
    ) -> core::result::Result<bool, String> {
        let old = self.model.clone();
        let old_size = old.len() as u64;
        let result = write(self.v(), self.base + offset, data);
        let (_, writes) = self.settle(before);
        if offset + data.len() as u64 > self.limit {
            ensure!(
                result == Err(Error::TooBig),
                "a write past the largest size gave {result:?}"
            );
            ensure!(
                self.observed() == old && self.size() == old_size,
                "a write past the largest size changed the file"
            );
            return Ok(true);
        }
        if self.dirty_limits {
            // Write-behind and the thresholds write what `write` wrote: a failure
            // waits for the next synchronous flush, as any asynchronous write's.
            self.latch(writes);
        } else {
            ensure!(writes == 0, "write(2) wrote to the device");
        }
        let complete = |upto: u64| {
            let mut m = old.clone();
            if (m.len() as u64) < upto {
                m.resize(upto as usize, 0);
            }
            let n = (upto.max(offset) - offset) as usize;
            m[offset as usize..offset as usize + n].copy_from_slice(&data[..n]);
            m
        };
        match result {
            Ok(n) => {
                // A short write (something failed part-way) wrote exactly its prefix.
                ensure!(
                    n > 0 && n <= data.len(),
                    "write returned {n} of {}",
                    data.len()
                );
                self.model = complete(offset + n as u64);
                ensure!(
                    self.size() == self.model.len() as u64,
                    "write of {n} bytes left size {:#x}, want {:#x}",
                    self.size(),
                    self.model.len()
                );
                Ok(n < data.len())
            }
            Err(e) => {
                ensure!(
                    self.allowed(before, &[Error::Io, Error::NoMemory, Error::NoSpace])
                        .contains(&e),
                    "write failed with {e:?}"
                );
                // A write that fails before writing anything leaves the file as it was.
                let seen = self.observed();
                ensure!(
                    seen == old && self.size() == old_size,
                    "failed write ({e:?}) changed the file ({:#x} bytes, was {old_size:#x})",
                    seen.len()
                );
                Ok(true)
            }
        }
    }

    /// A compat filesystem's write(2) within the file: write faults a batch at a time.
    fn compat_write(
        &mut self,
        offset: u64,
        data: &[u8],
        before: &Before,
    ) -> core::result::Result<bool, String> {
        let size = self.size();
        let end = (offset + data.len() as u64).min(size);
        let mut pos = offset;
        let mut result = Ok(());
        let mut written = Vec::new();
        while pos < end {
            let first = trunc_page(pos);
            let batch_end = (first + WRITE_BATCH_PAGES * PAGE).min(end);
            let count = page_count(batch_end - first) as usize;
            match self.fault(first, count, 0, Access::Write, GetFlags::SYNCIO) {
                Ok(Fetched::Writable(mut pages)) => {
                    for i in 0..pages.len() {
                        let page_at = pages.offset(i) - self.base;
                        let from = pos.max(page_at);
                        let to = batch_end.min(page_at + PAGE);
                        if from >= to {
                            continue;
                        }
                        let src = &data[(from - offset) as usize..(to - offset) as usize];
                        pages.bytes_mut(i)[(from - page_at) as usize..(to - page_at) as usize]
                            .copy_from_slice(src);
                        written.push((from, to));
                    }
                }
                Ok(_) => return Err("compat write fault gave no busy pages".into()),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            pos = batch_end;
        }
        for (from, to) in written {
            self.model[from as usize..to as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
        }
        let (reads, writes) = self.settle(before);
        ensure!(writes == 0, "a compat write fault wrote");
        ensure!(
            is_error(&result, &[Error::Io, Error::NoMemory]),
            "compat write: {result:?}"
        );
        if result == Err(Error::Io) {
            ensure!(reads > 0, "EIO without a failed read");
        }
        Ok(result.is_err())
    }

    /// A compat filesystem's read(2): read faults a batch at a time.
    fn compat_read(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let size = self.size();
        let end = (offset + buf.len() as u64).min(size);
        let mut pos = offset;
        while pos < end {
            let first = trunc_page(pos);
            let batch_end = (first + WRITE_BATCH_PAGES * PAGE).min(end);
            let count = page_count(batch_end - first) as usize;
            let pages = match self.fault(first, count, 0, Access::Read, GetFlags::SYNCIO)? {
                Fetched::Busy(pages) => pages,
                _ => return Err(Error::Invalid),
            };
            for i in 0..pages.len() {
                let page_at = pages.offset(i) - self.base;
                let from = pos.max(page_at);
                let to = batch_end.min(page_at + PAGE);
                if from < to {
                    buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                        &pages.bytes(i)[(from - page_at) as usize..(to - page_at) as usize],
                    );
                }
            }
            pos = batch_end;
        }
        Ok(end.saturating_sub(offset) as usize)
    }

    fn direct(
        &mut self,
        offset: u32,
        sectors: u8,
        writing: bool,
        misalign: bool,
        seed: u8,
        before: &Before,
    ) -> core::result::Result<bool, String> {
        let size = self.size();
        let span = (size + PAGE).max(512);
        let mut offset = u64::from(offset) % span;
        let mut len = 512 * (1 + usize::from(sectors % 160));
        let mut skew = 0;
        if misalign {
            match seed % 3 {
                0 => skew = 1 + usize::from(seed % 7),
                1 => len += 1 + usize::from(seed % 100),
                _ => {}
            }
        } else {
            offset &= !511;
        }
        let mut backing = vec![0u8; len + 1024];
        let base = backing.as_ptr().align_offset(512).min(512) + skew;
        let buf = &mut backing[base..base + len];
        let data = pattern(len, seed);
        if writing {
            buf.copy_from_slice(&data);
        }
        let direction = if writing {
            Direction::Write
        } else {
            Direction::Read
        };
        let old = self.model.clone();
        let (result, done) = {
            let at = self.base + offset;
            let mut uio = Uio::new(at, direction, AddressSpace::User, vec![IoVec::new(buf)])
                .map_err(|e| format!("Uio::new: {e:?}"))?;
            let result = directio(self.v(), &mut uio, DirectFlags::empty());
            let done = (uio.offset() - at) as usize;
            (result, done)
        };
        let buf = &backing[base..base + len];
        let (_, writes) = self.settle(before);
        if let Ok(progress) = &result {
            ensure!(
                progress.transferred == done,
                "progress {progress:?}, uio moved {done}"
            );
        }
        ensure!(
            done == 0 || offset + done as u64 <= size,
            "direct I/O went past EOF"
        );
        ensure!(self.size() == size, "direct I/O changed the size");
        if done == 0 {
        } else if writing {
            self.model[offset as usize..offset as usize + done].copy_from_slice(&data[..done]);
        } else if let Some(at) = (0..done).find(|&i| buf[i] != self.model[offset as usize + i]) {
            return Err(format!(
                "direct read byte {:#x} is {:#x}, model {:#x}",
                offset + at as u64,
                buf[at],
                self.model[offset as usize + at]
            ));
        }
        match result {
            Ok(_) => {
                ensure!(
                    writes == 0 || !before.pending,
                    "direct I/O flushed over a pending error"
                );
                ensure!(writes == 0, "direct I/O succeeded though a write failed");
            }
            Err(e) if self.refused_entry(before) => {
                // Refused the transaction before its flush: nothing moved, nothing
                // reported.
                ensure!(
                    self.allowed(before, &[]).contains(&e) && done == 0 && writes == 0,
                    "direct I/O refused entry with {e:?}, moved {done}, {writes} failed writes"
                );
            }
            Err(e) => {
                ensure!(
                    self.allowed(before, &[Error::Io, Error::NoMemory])
                        .contains(&e),
                    "direct I/O failed with {e:?}"
                );
                let latched = self.v().object().read().pending_write_error().is_some();
                if self.bmap_failures(before) > 0 {
                    // A bmap failure may have stopped it before its flush (the latched
                    // error then stays for the next one), or in its flush (a write
                    // error, reported there): take what the object says.
                    if before.pending && !latched {
                        self.summary.reports += 1;
                    }
                    self.pending = latched;
                } else {
                    if before.pending {
                        // Its first flush reported the latched error.
                        self.summary.reports += 1;
                    }
                    self.pending = false;
                }
                if writing {
                    // Requests of the failing chunk after the failed one may have
                    // reached the device: each byte there is old or new.
                    let seen = self.observed();
                    let chunk = (self.v().max_transfer() & !511).max(512);
                    let from = offset as usize + done;
                    let to = (from + chunk).min(offset as usize + len).min(size as usize);
                    for at in from..to {
                        let (was, new) = (old[at], data[at - offset as usize]);
                        ensure!(
                            seen[at] == was || seen[at] == new,
                            "failed direct write left byte {at:#x} as {:#x} (old {was:#x}, new {new:#x})",
                            seen[at]
                        );
                        self.model[at] = seen[at];
                    }
                }
            }
        }
        Ok(result.is_err())
    }

    /// Clears every fault, flushes, and compares the backing store with the model.
    fn finish(&mut self) -> Check {
        self.b.clear_faults();
        self.v().object().lock().cache_mut().set_limit(usize::MAX);
        let before = self.before();
        let flush = PutFlags::CLEANIT | PutFlags::SYNCIO;
        let result = putpages(self.v(), 0, 0, flush);
        let (_, writes) = self.settle(&before);
        ensure!(writes == 0, "a write failed with every fault cleared");
        self.flushed(&before, writes, result)?;
        self.check()?;
        let mut again = self.before();
        again.pending = false;
        let result = putpages(self.v(), 0, 0, flush);
        self.settle(&again);
        ensure!(result.is_ok(), "second final flush: {result:?}");
        {
            let state = self.v().object().read();
            ensure!(
                !state.cache().any_tagged(Tag::Dirty),
                "dirty pages after a successful flush"
            );
        }
        let stored = self.b.stored();
        if let Some(at) = (0..stored.len()).find(|&at| stored[at] != self.model[at]) {
            return Err(format!(
                "after the final flush, byte {at:#x} on disk is {:#x}, model {:#x}",
                stored[at], self.model[at]
            ));
        }
        ensure!(
            self.summary.reports == self.summary.error_epochs,
            "{} write-error epochs but {} reports",
            self.summary.error_epochs,
            self.summary.reports
        );
        Ok(())
    }
}
