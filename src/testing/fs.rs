//! [`MemFs`] and [`MemFile`]: a toy filesystem on a [`MemDisk`] whose files are
//! vnodes with settable knobs and counted hooks.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;
use std::collections::HashMap;
use std::thread::ThreadId;

use super::disk::{MemDisk, SECTOR_SIZE, next_random};
use crate::cache::DefaultCache;
use crate::error::{Error, Result};
use crate::hooks::{
    BlockMap, DEFAULT_MAX_TRANSFER, DEV_BSHIFT, MAX_FILE_SIZE, Mapping, MountFlags, Update,
    VnodeKind,
};
use crate::memory::Memory;
use crate::object::VmObject;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::vnode::Vnode;

/// The longest run [`MemFile`]'s `bmap` reports, whatever the maximum transfer: an
/// extent is at most this many blocks and one more.
pub const MAX_RUN: u64 = 256;

/// How [`MemFs`] places the blocks of a new file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// One physically contiguous, ascending stretch (the first free one that fits).
    #[default]
    Contiguous,
    /// Runs of `run` contiguous blocks (the last may be shorter), placed in free
    /// slots separated by at least one block and assigned to the runs in a
    /// deterministic shuffled order: `bmap` reports exactly one run per `run` blocks.
    /// `run == 0` is taken as 1.
    Fragmented {
        /// Blocks per contiguous run.
        run: u64,
    },
    /// Every block directly below the previous one: no two logical neighbours are
    /// physically contiguous.
    Reversed,
}

/// The free-block map of a [`MemFs`].
struct Allocator {
    used: Vec<bool>,
    free: u64,
    /// Seed of the next fragmented placement, so different files differ.
    seed: u64,
}

impl Allocator {
    fn blocks(&self) -> u64 {
        self.used.len() as u64
    }

    fn is_free(&self, block: u64) -> bool {
        self.used.get(block as usize).is_some_and(|used| !used)
    }

    fn take(&mut self, block: u64) {
        debug_assert!(self.is_free(block));
        self.used[block as usize] = true;
        self.free -= 1;
    }

    /// Returns `block` to the free pool.
    fn give(&mut self, block: u64) {
        debug_assert!(!self.is_free(block));
        self.used[block as usize] = false;
        self.free += 1;
    }

    /// The first block `>= from` starting `len` free blocks.
    fn find_run(&self, from: u64, len: u64) -> Option<u64> {
        let mut start = from;
        let mut have = 0;
        let mut block = from;
        while block < self.blocks() {
            if self.is_free(block) {
                if have == 0 {
                    start = block;
                }
                have += 1;
                if have == len {
                    return Some(start);
                }
            } else {
                have = 0;
            }
            block += 1;
        }
        None
    }

    /// The first `n` free blocks in ascending order (the caller checked there are).
    fn first_free(&self, n: u64) -> Vec<u64> {
        (0..self.blocks())
            .filter(|&b| self.is_free(b))
            .take(n as usize)
            .collect()
    }

    /// Chooses `n` blocks for a new file per `layout` and marks them used. Either all
    /// are allocated or none ([`Error::NoSpace`]).
    fn place(&mut self, n: u64, layout: Layout) -> Result<Vec<u64>> {
        if n > self.free {
            return Err(Error::NoSpace);
        }
        let blocks = match layout {
            Layout::Contiguous => match self.find_run(0, n) {
                Some(base) => (base..base + n).collect(),
                None => self.first_free(n),
            },
            Layout::Reversed => {
                let mut blocks = match self.find_run(0, n) {
                    Some(base) => (base..base + n).collect(),
                    None => self.first_free(n),
                };
                blocks.reverse();
                blocks
            }
            Layout::Fragmented { run } => self.fragmented(n, run.max(1)),
        };
        debug_assert_eq!(blocks.len() as u64, n);
        for &block in &blocks {
            self.take(block);
        }
        Ok(blocks)
    }

    /// Runs of `run` blocks in shuffled slots with gaps, or the first free blocks
    /// when there are not enough such slots.
    fn fragmented(&mut self, n: u64, run: u64) -> Vec<u64> {
        let chunks = n.div_ceil(run);
        let mut slots = Vec::new();
        let mut from = 0;
        while (slots.len() as u64) < chunks {
            let Some(slot) = self.find_run(from, run) else {
                break;
            };
            slots.push(slot);
            from = slot + run + 1;
        }
        if (slots.len() as u64) < chunks {
            return self.first_free(n);
        }
        self.seed = self.seed.wrapping_add(1);
        let mut rng = self.seed;
        for i in (1..slots.len()).rev() {
            let j = (next_random(&mut rng) % (i as u64 + 1)) as usize;
            slots.swap(i, j);
        }
        (0..n)
            .map(|i| slots[(i / run) as usize] + i % run)
            .collect()
    }

    /// One free block for a hole, preferring `prefer` in order, else the lowest free.
    fn take_near(&mut self, prefer: &[Option<u64>]) -> Option<u64> {
        let block = prefer
            .iter()
            .flatten()
            .copied()
            .find(|&b| self.is_free(b))
            .or_else(|| (0..self.blocks()).find(|&b| self.is_free(b)))?;
        self.take(block);
        Some(block)
    }
}

/// A toy filesystem: whole blocks of `1 << fs_bshift` bytes allocated out of a
/// [`MemDisk`] (every block of the disk may hold data; no metadata lives on disk).
pub struct MemFs {
    disk: MemDisk,
    fs_bshift: u32,
    layout: Layout,
    allocator: Mutex<Allocator>,
    /// The memory domain of the caches of files created from now on.
    memory: Mutex<&'static Memory>,
}

impl MemFs {
    /// A filesystem of `1 << fs_bshift`-byte blocks over the whole of `disk`, placing
    /// new files per `layout`.
    ///
    /// # Panics
    ///
    /// If `fs_bshift` is outside `9..=20` (512 B to 1 MiB; the pager is tested from
    /// 512 B to 64 KiB).
    pub fn new(disk: MemDisk, fs_bshift: u32, layout: Layout) -> Arc<MemFs> {
        assert!(
            (9..=20).contains(&fs_bshift),
            "fs_bshift {fs_bshift} outside 9..=20"
        );
        let blocks = (disk.sectors() * SECTOR_SIZE as u64) >> fs_bshift;
        Arc::new(MemFs {
            disk,
            fs_bshift,
            layout,
            allocator: Mutex::new(Allocator {
                used: vec![false; blocks as usize],
                free: blocks,
                seed: 0,
            }),
            memory: Mutex::new(Memory::shared()),
        })
    }

    /// Files created from now on take their frames from `memory` (and count their
    /// pages there) instead of [`Memory::shared`].
    pub fn set_memory(&self, memory: &'static Memory) {
        *self.memory.lock() = memory;
    }

    /// The disk under the filesystem.
    pub fn disk(&self) -> &MemDisk {
        &self.disk
    }

    /// `log2` of the block size.
    pub fn fs_bshift(&self) -> u32 {
        self.fs_bshift
    }

    /// The block size in bytes.
    pub fn block_size(&self) -> u64 {
        1 << self.fs_bshift
    }

    /// How new files are laid out.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How many blocks the filesystem has in all.
    pub fn total_blocks(&self) -> u64 {
        self.allocator.lock().blocks()
    }

    /// How many blocks are free.
    pub fn free_blocks(&self) -> u64 {
        self.allocator.lock().free
    }

    /// The first sector of filesystem block `block`.
    fn sector_of(&self, block: u64) -> u64 {
        block << (self.fs_bshift - DEV_BSHIFT)
    }

    /// The filesystem block starting at `sector`.
    fn block_of(&self, sector: u64) -> u64 {
        sector >> (self.fs_bshift - DEV_BSHIFT)
    }

    /// A new file holding `data`, every block allocated per the layout and written
    /// straight to the disk (the last one zero-padded), bypassing the request log.
    pub fn create(self: &Arc<Self>, data: &[u8]) -> Result<Arc<MemFile>> {
        self.create_sparse(data.len() as u64, data, &[])
    }

    /// A new file of `size` bytes whose logical blocks listed in `holes` are left
    /// unallocated: they read as zeroes and `bmap` reports them as holes (bytes of
    /// `data` falling there are dropped). The other blocks are allocated per the
    /// layout, in logical order, and hold `data` (zero-padded, or cut, to `size`).
    /// Fails with [`Error::NoSpace`], allocating nothing, when the blocks do not fit.
    pub fn create_sparse(
        self: &Arc<Self>,
        size: u64,
        data: &[u8],
        holes: &[u64],
    ) -> Result<Arc<MemFile>> {
        self.create_sparse_at(0, size, data, holes)
    }

    /// A file of `size` bytes whose blocks below byte `base` (a multiple of the block
    /// size, at most `size`) are holes that stay holes, as in a huge sparse file:
    /// only `base..size` is stored, so `base` may be near
    /// [`MAX_FILE_SIZE`](crate::MAX_FILE_SIZE). `data` holds the bytes from `base` on
    /// and `holes` lists logical blocks counted from `base` (as
    /// [`MemFs::create_sparse`]'s, which is this with `base == 0`). `alloc` below
    /// `base` fails with [`Error::NoSpace`]; [`MemFile::block_table`] and
    /// [`MemFile::disk_contents_from`] cover the blocks from `base` on.
    ///
    /// # Panics
    ///
    /// If `base` is not a multiple of the block size or is past `size`.
    pub fn create_sparse_at(
        self: &Arc<Self>,
        base: u64,
        size: u64,
        data: &[u8],
        holes: &[u64],
    ) -> Result<Arc<MemFile>> {
        let bsize = self.block_size();
        assert!(
            base % bsize == 0 && base <= size,
            "base {base:#x} not block aligned or past size {size:#x}"
        );
        let nblocks = (size - base).div_ceil(bsize);
        let mapped: Vec<u64> = (0..nblocks).filter(|lbn| !holes.contains(lbn)).collect();
        let placed = self
            .allocator
            .lock()
            .place(mapped.len() as u64, self.layout)?;
        let mut table = vec![None; nblocks as usize];
        let mut block = vec![0; bsize as usize];
        let window = size - base;
        for (&lbn, &physical) in mapped.iter().zip(&placed) {
            let start = (lbn * bsize).min(data.len() as u64) as usize;
            let end = ((lbn + 1) * bsize).min(window).min(data.len() as u64) as usize;
            let len = end.saturating_sub(start);
            block[..len].copy_from_slice(&data[start..start + len]);
            block[len..].fill(0);
            let sector = self.sector_of(physical);
            self.disk.write_raw(sector * SECTOR_SIZE as u64, &block);
            table[lbn as usize] = Some(sector);
        }
        let mut file = MemFile::new(self.clone(), size, table);
        file.base_lbn = base >> self.fs_bshift;
        Ok(Arc::new(file))
    }
}

/// How many times the pager called each counted hook of a [`MemFile`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HookCounts {
    /// `mark_update` calls asking for the access time.
    pub mark_update_accessed: u64,
    /// `mark_update` calls asking for the modification time.
    pub mark_update_modified: u64,
    /// Successful `trans_begin` calls (refusals are not counted, so a balanced pager
    /// has `trans_begin == trans_end`).
    pub trans_begin: u64,
    /// `trans_end` calls.
    pub trans_end: u64,
    /// `journal_begin` calls that entered the journal (refusals are not counted).
    pub journal_begin: u64,
    /// `journal_end` calls.
    pub journal_end: u64,
    /// `worklist_add` calls.
    pub worklist_add: u64,
    /// `worklist_remove` calls.
    pub worklist_remove: u64,
    /// `preempt` calls.
    pub preempt: u64,
    /// `bmap` calls, failed ones included.
    pub bmap_calls: u64,
    /// `alloc` calls, failed ones included.
    pub alloc_calls: u64,
}

/// The counters behind [`HookCounts`].
#[derive(Default)]
struct Counters {
    mark_update_accessed: AtomicU64,
    mark_update_modified: AtomicU64,
    trans_begin: AtomicU64,
    trans_end: AtomicU64,
    journal_begin: AtomicU64,
    journal_end: AtomicU64,
    worklist_add: AtomicU64,
    worklist_remove: AtomicU64,
    preempt: AtomicU64,
    bmap_calls: AtomicU64,
    alloc_calls: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn each(&self) -> [&AtomicU64; 11] {
        [
            &self.mark_update_accessed,
            &self.mark_update_modified,
            &self.trans_begin,
            &self.trans_end,
            &self.journal_begin,
            &self.journal_end,
            &self.worklist_add,
            &self.worklist_remove,
            &self.preempt,
            &self.bmap_calls,
            &self.alloc_calls,
        ]
    }

    fn snapshot(&self) -> HookCounts {
        let [a, b, c, d, e, f, g, h, i, j, k] =
            self.each().map(|counter| counter.load(Ordering::Relaxed));
        HookCounts {
            mark_update_accessed: a,
            mark_update_modified: b,
            trans_begin: c,
            trans_end: d,
            journal_begin: e,
            journal_end: f,
            worklist_add: g,
            worklist_remove: h,
            preempt: i,
            bmap_calls: j,
            alloc_calls: k,
        }
    }
}

/// What a [`MemFile`]'s mount-transaction and journal hooks saw, checked against the
/// lock order (mount transaction, then journal, then node lock): see
/// [`MemFile::ledger`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// `trans_begin` calls that entered a transaction (refusals are not entries).
    pub trans_begins: u64,
    /// `trans_end` calls.
    pub trans_ends: u64,
    /// `journal_begin` calls that entered the journal.
    pub journal_begins: u64,
    /// `journal_end` calls.
    pub journal_ends: u64,
    /// One line per thread still inside a transaction or the journal now.
    pub open: Vec<String>,
    /// One line per broken rule, in the order they happened: an end with nothing to
    /// end on that thread, a transaction first entered inside the journal, or a
    /// transaction or the journal begun while the thread held a node lock.
    pub violations: Vec<String>,
}

impl Ledger {
    /// Whether no thread is inside a transaction or the journal and no rule was
    /// broken: what dropping a [`MemFile`] checks.
    pub fn is_clean(&self) -> bool {
        self.open.is_empty() && self.violations.is_empty()
    }
}

/// How deep one thread is in a file's mount transaction and journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Depth {
    transaction: u64,
    journal: u64,
}

/// A broken rule, kept without allocating: the pager may be running with the heap
/// exhausted (the allocation-failure sweep), and the ledger must not abort it.
#[derive(Clone, Copy, Debug)]
enum Broken {
    /// This hook ended what the thread had not begun.
    EndWithoutBegin(&'static str),
    /// This hook began while the thread held so many node locks.
    UnderNodeLock(&'static str, usize),
    /// A transaction first entered inside the journal, at this journal depth.
    TransactionInsideJournal(u64),
}

/// How many broken rules the ledger keeps (room reserved up front); more are counted.
const VIOLATIONS_KEPT: usize = 32;
/// Threads the ledger has room for without allocating.
const THREADS_KEPT: usize = 64;

/// Hashes a [`ThreadId`] (whose `Hash` writes one `u64`, a counter) with one multiply
/// instead of SipHash: the ledger is looked up on every `trans_begin` and `trans_end`,
/// twice per fault, and the default hasher plus `thread::current()` made the rig's
/// transaction hooks about a tenth of a random 4 KiB fault's time in perf_report, a
/// cost no kernel's transaction pays and the naive pager it is compared with does
/// not pay at all. Thread ids are not chosen by an adversary.
#[derive(Default)]
struct ThreadIdHasher(u64);

impl core::hash::Hasher for ThreadIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type ThreadIdMap<T> = HashMap<ThreadId, T, core::hash::BuildHasherDefault<ThreadIdHasher>>;

/// The calling thread's id, without cloning its `Thread` handle each time.
fn this_thread() -> ThreadId {
    std::thread_local! {
        static ID: ThreadId = std::thread::current().id();
    }
    ID.with(|id| *id)
}

/// The state behind [`Ledger`]: depths per thread, since each thread enters and
/// leaves on its own. Nothing here allocates on the pager's path once made.
struct LedgerState {
    depths: ThreadIdMap<Depth>,
    trans_begins: u64,
    trans_ends: u64,
    journal_begins: u64,
    journal_ends: u64,
    violations: Vec<(ThreadId, Broken)>,
    /// Violations beyond [`VIOLATIONS_KEPT`].
    violations_dropped: u64,
}

impl Default for LedgerState {
    fn default() -> Self {
        Self {
            depths: ThreadIdMap::with_capacity_and_hasher(THREADS_KEPT, Default::default()),
            trans_begins: 0,
            trans_ends: 0,
            journal_begins: 0,
            journal_ends: 0,
            violations: Vec::with_capacity(VIOLATIONS_KEPT),
            violations_dropped: 0,
        }
    }
}

/// `thread` as violation reports name it: by name when it is the calling thread.
fn describe_thread(thread: ThreadId) -> String {
    let current = std::thread::current();
    match current.name() {
        Some(name) if current.id() == thread => format!("thread {name:?}"),
        _ => format!("{thread:?}"),
    }
}

/// Node-lock guards the calling thread (a loom thread, under loom) holds.
fn node_locks_held() -> usize {
    crate::sync::sleep_locks_held_by_this_thread()
}

impl LedgerState {
    fn depth(&mut self) -> &mut Depth {
        self.depths.entry(this_thread()).or_default()
    }

    fn broke(&mut self, broken: Broken) {
        if self.violations.len() < self.violations.capacity() {
            self.violations.push((this_thread(), broken));
        } else {
            self.violations_dropped += 1;
        }
    }

    /// Records a begin of `what` that succeeded, after checking the locks held.
    fn begin(&mut self, what: &'static str, journal: bool) {
        let held = node_locks_held();
        if held > 0 {
            self.broke(Broken::UnderNodeLock(what, held));
        }
        let depth = self.depth();
        let before = *depth;
        if journal {
            depth.journal += 1;
            self.journal_begins += 1;
        } else {
            depth.transaction += 1;
            self.trans_begins += 1;
        }
        // Entering the journal first and the transaction second inverts the order. A
        // thread already in a transaction that enters it again only nests (as
        // NetBSD's fstrans does), so that is not counted here.
        if !journal && before.journal > 0 && before.transaction == 0 {
            self.broke(Broken::TransactionInsideJournal(before.journal));
        }
    }

    /// Records an end of `what`, which must close a begin of the same thread.
    fn end(&mut self, what: &'static str, journal: bool) {
        let depth = self.depth();
        let level = if journal {
            &mut depth.journal
        } else {
            &mut depth.transaction
        };
        let was = *level;
        *level = was.saturating_sub(1);
        if journal {
            self.journal_ends += 1;
        } else {
            self.trans_ends += 1;
        }
        if was == 0 {
            self.broke(Broken::EndWithoutBegin(what));
        }
    }

    fn snapshot(&self) -> Ledger {
        let mut open: Vec<String> = self
            .depths
            .iter()
            .filter(|(_, depth)| **depth != Depth::default())
            .map(|(thread, depth)| {
                format!(
                    "{thread:?}: transaction depth {}, journal depth {}",
                    depth.transaction, depth.journal
                )
            })
            .collect();
        open.sort();
        let mut violations: Vec<String> = self
            .violations
            .iter()
            .map(|&(thread, broken)| {
                let on = describe_thread(thread);
                match broken {
                    Broken::EndWithoutBegin(what) => format!("{what} on {on} with nothing begun"),
                    Broken::UnderNodeLock(what, held) => {
                        format!("{what} on {on} while it held {held} node lock(s)")
                    }
                    Broken::TransactionInsideJournal(depth) => format!(
                        "trans_begin on {on} inside the journal (depth {depth}) and outside \
                         any transaction"
                    ),
                }
            })
            .collect();
        if self.violations_dropped > 0 {
            violations.push(format!("… and {} more", self.violations_dropped));
        }
        Ledger {
            trans_begins: self.trans_begins,
            trans_ends: self.trans_ends,
            journal_begins: self.journal_begins,
            journal_ends: self.journal_ends,
            open,
            violations,
        }
    }
}

/// The settable behaviour of a [`MemFile`]. Atomics rather than one locked struct:
/// the pager reads several of them per cluster, where a real filesystem reads plain
/// fields, and a lock each time would be the rig's cost showing up in benchmarks.
struct Knobs {
    dead: AtomicBool,
    pagedaemon: AtomicBool,
    mount_flags: AtomicU64,
    max_transfer: AtomicUsize,
    /// A [`VnodeKind`] by [`kind_code`].
    kind: AtomicU64,
    journal: AtomicBool,
    trans_busy: AtomicBool,
    /// [`NONE`] for no constraint.
    putrange: AtomicU64,
    /// [`NONE`] when disarmed.
    fail_bmap: AtomicU64,
    /// [`NONE`] for the default ([`MAX_FILE_SIZE`]).
    max_size: AtomicU64,
    /// [`NONE`] for no limit.
    alloc_limit: AtomicU64,
    /// Whether any [`Hook`] failure is armed (the fast check before the lock).
    hook_faults_armed: AtomicBool,
    /// Per [`Hook`]: how many more calls fail, and with what.
    hook_faults: Mutex<[(u64, Error); HOOKS]>,
}

/// A hook of [`MemFile`] that [`MemFile::fail_hook`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `trans_begin`, whether or not the caller would wait.
    TransBegin,
    /// `journal_begin`.
    JournalBegin,
    /// `alloc` (before it allocates anything).
    Alloc,
    /// `bmap`.
    Bmap,
}

const HOOKS: usize = 4;

/// An unset optional knob.
const NONE: u64 = u64::MAX;

const KINDS: [VnodeKind; 4] = [
    VnodeKind::Regular,
    VnodeKind::Directory,
    VnodeKind::Symlink,
    VnodeKind::BlockDevice,
];

fn kind_code(kind: VnodeKind) -> u64 {
    KINDS.iter().position(|&k| k == kind).unwrap_or(0) as u64
}

/// One knob's relaxed load and store: knobs are set before the behaviour they change
/// is exercised, never raced against it.
trait Knob<T> {
    fn get(&self) -> T;
    fn set(&self, value: T);
}

impl Knob<bool> for AtomicBool {
    fn get(&self) -> bool {
        self.load(Ordering::Relaxed)
    }
    fn set(&self, value: bool) {
        self.store(value, Ordering::Relaxed);
    }
}

impl Knob<usize> for AtomicUsize {
    fn get(&self) -> usize {
        self.load(Ordering::Relaxed)
    }
    fn set(&self, value: usize) {
        self.store(value, Ordering::Relaxed);
    }
}

impl Knob<Option<u64>> for AtomicU64 {
    fn get(&self) -> Option<u64> {
        Some(self.load(Ordering::Relaxed)).filter(|&value| value != NONE)
    }
    fn set(&self, value: Option<u64>) {
        self.store(value.unwrap_or(NONE), Ordering::Relaxed);
    }
}

/// One file of a [`MemFs`]: a [`Vnode`] (and its own [`BlockMap`]) on the
/// filesystem's [`MemDisk`], with a [`DefaultCache`] page cache.
///
/// The knobs (`set_*`) change what its hooks report; [`MemFile::hooks`] counts the
/// calls the pager made.
///
/// [`MemFile::ledger`] follows the mount transaction and the journal per thread.
/// Dropping the file checks the ledger, so every test using one checks that the
/// pager left no transaction or journal open and kept the lock order; a test failure
/// (a panic) names what went wrong.
pub struct MemFile {
    fs: Arc<MemFs>,
    object: VmObject<DefaultCache>,
    /// Logical block → first sector of its physical block, `None` for a hole.
    table: Mutex<Vec<Option<u64>>>,
    knobs: Knobs,
    /// Logical blocks below this are holes outside `table` (see
    /// [`MemFs::create_sparse_at`]); `table[i]` is logical block `base_lbn + i`.
    base_lbn: u64,
    counts: Counters,
    ledger: Mutex<LedgerState>,
}

impl MemFile {
    fn new(fs: Arc<MemFs>, size: u64, table: Vec<Option<u64>>) -> Self {
        let memory = *fs.memory.lock();
        Self {
            fs,
            object: VmObject::new(DefaultCache::in_memory(memory), size),
            table: Mutex::new(table),
            knobs: Knobs {
                dead: AtomicBool::new(false),
                pagedaemon: AtomicBool::new(false),
                mount_flags: AtomicU64::new(0),
                max_transfer: AtomicUsize::new(DEFAULT_MAX_TRANSFER),
                kind: AtomicU64::new(kind_code(VnodeKind::Regular)),
                journal: AtomicBool::new(false),
                trans_busy: AtomicBool::new(false),
                putrange: AtomicU64::new(NONE),
                fail_bmap: AtomicU64::new(NONE),
                max_size: AtomicU64::new(NONE),
                alloc_limit: AtomicU64::new(NONE),
                hook_faults_armed: AtomicBool::new(false),
                hook_faults: Mutex::new([(0, Error::Io); HOOKS]),
            },
            base_lbn: 0,
            counts: Counters::default(),
            ledger: Mutex::new(LedgerState::default()),
        }
    }

    /// The filesystem holding the file.
    pub fn fs(&self) -> &Arc<MemFs> {
        &self.fs
    }

    /// Makes the vnode dead (reclaimed) or alive again.
    pub fn set_dead(&self, dead: bool) {
        self.knobs.dead.set(dead);
    }

    /// Makes `is_pagedaemon` report `pagedaemon` (for every thread).
    pub fn set_pagedaemon(&self, pagedaemon: bool) {
        self.knobs.pagedaemon.set(pagedaemon);
    }

    /// Sets the mount options reported by `mount_flags`.
    pub fn set_mount_flags(&self, flags: MountFlags) {
        self.knobs
            .mount_flags
            .store(u64::from(flags.bits()), Ordering::Relaxed);
    }

    /// Sets the largest device transfer reported by `max_transfer` (a multiple of the
    /// page size; the default is [`DEFAULT_MAX_TRANSFER`]).
    pub fn set_max_transfer(&self, bytes: usize) {
        self.knobs.max_transfer.set(bytes);
    }

    /// Sets the kind of file reported by `kind`.
    pub fn set_kind(&self, kind: VnodeKind) {
        self.knobs.kind.store(kind_code(kind), Ordering::Relaxed);
    }

    /// Makes the mount have a journal (`has_journal`) or not.
    pub fn set_journal(&self, journal: bool) {
        self.knobs.journal.set(journal);
    }

    /// While `busy`, `trans_begin(false)` fails with [`Error::Busy`];
    /// `trans_begin(true)` always succeeds.
    pub fn set_trans_busy(&self, busy: bool) {
        self.knobs.trans_busy.set(busy);
    }

    /// With `Some(g)`, `putrange(offset)` is the aligned `g`-byte range around
    /// `offset`; with `None` (or `Some(0)`) it reports no constraint.
    pub fn set_putrange_granularity(&self, granularity: Option<u64>) {
        self.knobs.putrange.set(granularity);
    }

    /// With `Some(lbn)`, `bmap(lbn)` fails with [`Error::Io`]; `None` disarms it.
    pub fn fail_bmap(&self, lbn: Option<u64>) {
        self.knobs.fail_bmap.set(lbn);
    }

    /// Makes the next `calls` calls of `hook` fail with `error` (`calls == 0`
    /// disarms it). A failing `trans_begin` or `journal_begin` enters nothing (the
    /// ledger does not count it); a failing `alloc` allocates nothing.
    pub fn fail_hook(&self, hook: Hook, calls: u64, error: Error) {
        let mut faults = self.knobs.hook_faults.lock();
        faults[hook as usize] = (calls, error);
        let armed = faults.iter().any(|&(left, _)| left > 0);
        self.knobs.hook_faults_armed.set(armed);
    }

    /// How many more calls of `hook` will fail (see [`MemFile::fail_hook`]).
    pub fn hook_failures_left(&self, hook: Hook) -> u64 {
        self.knobs.hook_faults.lock()[hook as usize].0
    }

    /// Disarms every [`MemFile::fail_hook`] failure.
    pub fn clear_hook_failures(&self) {
        for hook in [
            Hook::TransBegin,
            Hook::JournalBegin,
            Hook::Alloc,
            Hook::Bmap,
        ] {
            self.fail_hook(hook, 0, Error::Io);
        }
    }

    /// The error this call of `hook` must fail with, if one is armed.
    fn hook_fault(&self, hook: Hook) -> Option<Error> {
        if !self.knobs.hook_faults_armed.get() {
            return None;
        }
        let mut faults = self.knobs.hook_faults.lock();
        let (left, error) = &mut faults[hook as usize];
        if *left == 0 {
            return None;
        }
        *left -= 1;
        Some(*error)
    }

    /// With `Some(max)`, `max_size` reports `max` (the pager refuses sizes, writes and
    /// faults past it with [`Error::TooBig`]); `None` restores [`MAX_FILE_SIZE`].
    pub fn set_max_size(&self, max: Option<u64>) {
        self.knobs.max_size.set(max);
    }

    /// With `Some(blocks)`, `alloc` of a range reaching logical block `blocks` or past
    /// it fails with [`Error::NoSpace`], allocating nothing (a filesystem that
    /// addresses no more blocks); `None` (the default) removes the limit. The block
    /// table is dense, so without a limit an allocation near a huge offset tries to
    /// grow it to that many entries.
    pub fn set_alloc_limit(&self, blocks: Option<u64>) {
        self.knobs.alloc_limit.set(blocks);
    }

    /// The filesystem's part of a truncation to `size`, as a filesystem does after
    /// [`setsize`](crate::setsize) shrank the file: every block wholly past `size`
    /// goes back to the filesystem's free pool (later allocations may reuse it) and
    /// becomes a hole, and the bytes of the last kept block past `size` are zeroed on
    /// the disk (bypassing the request log). The file's size is not changed. Blocks
    /// below [`MemFile::block_table_base`] stay holes.
    pub fn free_blocks_past(&self, size: u64) {
        let bsize = self.fs.block_size();
        let first = size.div_ceil(bsize);
        let mut table = self.table.lock();
        let keep = first.saturating_sub(self.base_lbn) as usize;
        if keep < table.len() {
            let mut allocator = self.fs.allocator.lock();
            for sector in table.drain(keep..).flatten() {
                allocator.give(self.fs.block_of(sector));
            }
        }
        let tail = size % bsize;
        if tail != 0 {
            let entry = (size / bsize)
                .checked_sub(self.base_lbn)
                .and_then(|index| table.get(index as usize).copied().flatten());
            if let Some(sector) = entry {
                self.fs
                    .disk
                    .zero_raw(sector * SECTOR_SIZE as u64 + tail, (bsize - tail) as usize);
            }
        }
    }

    /// The first logical block [`MemFile::block_table`] describes (0 unless made by
    /// [`MemFs::create_sparse_at`]).
    pub fn block_table_base(&self) -> u64 {
        self.base_lbn
    }

    /// How many times each counted hook has been called.
    pub fn hooks(&self) -> HookCounts {
        self.counts.snapshot()
    }

    /// What the transaction and journal hooks saw so far (not reset by
    /// [`MemFile::reset_hooks`]).
    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().snapshot()
    }

    /// Zeroes the hook counters.
    pub fn reset_hooks(&self) {
        for counter in self.counts.each() {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// The block table: for each logical block (from
    /// [`MemFile::block_table_base`] on), the first sector of its physical block, or
    /// `None` for a hole.
    pub fn block_table(&self) -> Vec<Option<u64>> {
        self.table.lock().clone()
    }

    /// Whether logical block `lbn` has no storage (blocks past the table are holes).
    pub fn is_hole(&self, lbn: u64) -> bool {
        let Some(index) = lbn.checked_sub(self.base_lbn) else {
            return true;
        };
        self.table
            .lock()
            .get(index as usize)
            .is_none_or(Option::is_none)
    }

    /// The file's bytes as the disk holds them now, through the block table (holes
    /// and blocks past the table read as zeroes): `object().size()` bytes.
    pub fn disk_contents(&self) -> Vec<u8> {
        self.disk_contents_from(0)
    }

    /// The file's bytes from `start` (a multiple of the block size, at least
    /// [`MemFile::block_table_base`]'s first byte) to the end of file as the disk
    /// holds them now: what [`MemFile::disk_contents`] returns past `start`, for files
    /// too large to hold whole.
    ///
    /// # Panics
    ///
    /// If `start` is unaligned or below the table's base.
    pub fn disk_contents_from(&self, start: u64) -> Vec<u8> {
        let size = self.object.size();
        let bsize = self.fs.block_size();
        assert!(
            start % bsize == 0 && start >> self.fs.fs_bshift >= self.base_lbn,
            "disk_contents_from({start:#x}): unaligned or below the table"
        );
        let skip = ((start >> self.fs.fs_bshift) - self.base_lbn) as usize;
        let table = self.block_table();
        let mut contents = vec![0; size.saturating_sub(start) as usize];
        for (chunk, entry) in contents
            .chunks_mut(bsize as usize)
            .zip(table.into_iter().skip(skip))
        {
            if let Some(sector) = entry {
                self.fs.disk.read_raw(sector * SECTOR_SIZE as u64, chunk);
            }
        }
        contents
    }

    /// The lowest and highest logical block touched by `offset..offset + len`.
    fn block_span(&self, offset: u64, len: u64) -> Result<Range<u64>> {
        let end = offset.checked_add(len).ok_or(Error::Invalid)?;
        let shift = self.fs.fs_bshift;
        Ok(offset >> shift..end.div_ceil(1 << shift))
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        let ledger = self.ledger.lock().snapshot();
        if !ledger.is_clean() {
            super::fail_at_drop(format_args!(
                "MemFile dropped with its transaction/journal ledger unbalanced or \
                 a lock-order violation: {ledger:#?}"
            ));
        }
    }
}

impl BlockMap for MemFile {
    fn bmap(&self, lbn: u64) -> Result<Mapping> {
        bump(&self.counts.bmap_calls);
        if self.knobs.fail_bmap.get() == Some(lbn) {
            return Err(Error::Io);
        }
        if let Some(error) = self.hook_fault(Hook::Bmap) {
            return Err(error);
        }
        // Like a real filesystem (ufs: `mnt_maxphys / block size - 1`), look no
        // further than one transfer can use.
        let max_run = ((self.knobs.max_transfer.get() >> self.fs.fs_bshift) as u64)
            .saturating_sub(1)
            .min(MAX_RUN);
        if lbn < self.base_lbn {
            return Ok(Mapping::hole((self.base_lbn - lbn - 1).min(max_run)));
        }
        let index = (lbn - self.base_lbn) as usize;
        let table = self.table.lock();
        let Some(&entry) = table.get(index) else {
            return Ok(Mapping::hole(0));
        };
        let step = 1 << (self.fs.fs_bshift - DEV_BSHIFT);
        let following = table[index + 1..].iter().take(max_run as usize);
        let run = match entry {
            Some(sector) => following
                .enumerate()
                .take_while(|&(i, next)| *next == Some(sector + (i as u64 + 1) * step))
                .count(),
            None => following.take_while(|next| next.is_none()).count(),
        };
        Ok(Mapping {
            block: entry,
            run: run as u64,
        })
    }

    fn alloc(&self, offset: u64, len: u64) -> Result {
        bump(&self.counts.alloc_calls);
        if let Some(error) = self.hook_fault(Hook::Alloc) {
            return Err(error);
        }
        let span = self.block_span(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if self
            .knobs
            .alloc_limit
            .get()
            .is_some_and(|limit| span.end > limit)
        {
            return Err(Error::NoSpace);
        }
        if span.start < self.base_lbn {
            return Err(Error::NoSpace);
        }
        let span = span.start - self.base_lbn..span.end - self.base_lbn;
        // Like a kernel filesystem, this hook reports a full heap as NoMemory rather
        // than aborting (the allocation-failure sweep runs the pager with one).
        let mut table = self.table.lock();
        let is_hole = |lbn: &u64| table.get(*lbn as usize).is_none_or(Option::is_none);
        let mut holes = Vec::new();
        holes
            .try_reserve_exact(span.clone().filter(is_hole).count())
            .map_err(|_| Error::NoMemory)?;
        holes.extend(span.clone().filter(is_hole));
        if holes.is_empty() {
            return Ok(());
        }
        let mut allocator = self.fs.allocator.lock();
        if (holes.len() as u64) > allocator.free {
            return Err(Error::NoSpace);
        }
        let mut fresh = Vec::new();
        fresh
            .try_reserve_exact(holes.len())
            .map_err(|_| Error::NoMemory)?;
        let grow = (span.end as usize).saturating_sub(table.len());
        table.try_reserve(grow).map_err(|_| Error::NoMemory)?;
        if grow > 0 {
            table.resize(span.end as usize, None);
        }
        for lbn in holes {
            let at = lbn as usize;
            let after_previous = at
                .checked_sub(1)
                .and_then(|p| table[p])
                .map(|s| self.fs.block_of(s) + 1);
            let before_next = table
                .get(at + 1)
                .copied()
                .flatten()
                .and_then(|s| self.fs.block_of(s).checked_sub(1));
            let block = allocator
                .take_near(&[after_previous, before_next])
                .ok_or(Error::NoSpace)?;
            let sector = self.fs.sector_of(block);
            table[at] = Some(sector);
            fresh.push(sector);
        }
        drop(allocator);
        drop(table);
        for sector in fresh {
            self.fs
                .disk
                .zero_raw(sector * SECTOR_SIZE as u64, self.fs.block_size() as usize);
        }
        Ok(())
    }

    fn max_size(&self) -> u64 {
        self.knobs.max_size.get().unwrap_or(MAX_FILE_SIZE)
    }

    fn putrange(&self, offset: u64) -> Option<Range<u64>> {
        let granularity = self.knobs.putrange.get().filter(|&g| g > 0)?;
        let start = offset - offset % granularity;
        Some(start..start.saturating_add(granularity))
    }
}

impl Vnode for MemFile {
    type Cache = DefaultCache;
    type Map = MemFile;
    type Dev = MemDisk;

    fn object(&self) -> &VmObject<DefaultCache> {
        &self.object
    }

    fn block_map(&self) -> &MemFile {
        self
    }

    fn device(&self) -> &MemDisk {
        &self.fs.disk
    }

    fn fs_bshift(&self) -> u32 {
        self.fs.fs_bshift
    }

    fn kind(&self) -> VnodeKind {
        KINDS[self.knobs.kind.load(Ordering::Relaxed) as usize % KINDS.len()]
    }

    fn mount_flags(&self) -> MountFlags {
        MountFlags::from_bits_truncate(self.knobs.mount_flags.load(Ordering::Relaxed) as u32)
    }

    fn max_transfer(&self) -> usize {
        self.knobs.max_transfer.get()
    }

    fn is_dead(&self) -> bool {
        self.knobs.dead.get()
    }

    fn mark_update(&self, what: Update) {
        if what.contains(Update::ACCESSED) {
            bump(&self.counts.mark_update_accessed);
        }
        if what.contains(Update::MODIFIED) {
            bump(&self.counts.mark_update_modified);
        }
    }

    fn trans_begin(&self, wait: bool) -> Result {
        if !wait && self.knobs.trans_busy.get() {
            return Err(Error::Busy);
        }
        if let Some(error) = self.hook_fault(Hook::TransBegin) {
            return Err(error);
        }
        bump(&self.counts.trans_begin);
        self.ledger.lock().begin("trans_begin", false);
        Ok(())
    }

    fn trans_end(&self) {
        bump(&self.counts.trans_end);
        self.ledger.lock().end("trans_end", false);
    }

    fn has_journal(&self) -> bool {
        self.knobs.journal.get()
    }

    fn journal_begin(&self) -> Result {
        if let Some(error) = self.hook_fault(Hook::JournalBegin) {
            return Err(error);
        }
        bump(&self.counts.journal_begin);
        self.ledger.lock().begin("journal_begin", true);
        Ok(())
    }

    fn journal_end(&self) {
        bump(&self.counts.journal_end);
        self.ledger.lock().end("journal_end", true);
    }

    fn worklist_add(&self) {
        bump(&self.counts.worklist_add);
    }

    fn worklist_remove(&self) {
        bump(&self.counts.worklist_remove);
    }

    fn is_pagedaemon(&self) -> bool {
        self.knobs.pagedaemon.get()
    }

    fn preempt(&self) {
        bump(&self.counts.preempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// The runs `bmap` reports walking the whole table: `(first lbn, run)`.
    fn runs(file: &MemFile) -> Vec<(u64, u64)> {
        let blocks = file.block_table().len() as u64;
        let mut lbn = 0;
        let mut out = Vec::new();
        while lbn < blocks {
            let mapping = file.bmap(lbn).unwrap();
            out.push((lbn, mapping.run));
            lbn += 1 + mapping.run;
        }
        out
    }

    #[test]
    fn contiguous_file_is_one_run() {
        let fs = MemFs::new(MemDisk::new(1024), 12, Layout::Contiguous);
        assert_eq!(fs.total_blocks(), 128);
        let data = pattern(10 * 4096 - 100);
        let file = fs.create(&data).unwrap();
        assert_eq!(fs.free_blocks(), 118);
        assert_eq!(file.object().size(), data.len() as u64);
        assert_eq!(file.bmap(0).unwrap(), Mapping::mapped(0, 9));
        assert_eq!(file.bmap(3).unwrap(), Mapping::mapped(24, 6));
        assert_eq!(runs(&file), [(0, 9)]);
        assert_eq!(file.disk_contents(), data);
        // The padding of the last block is zero on disk.
        let mut tail = [0xff; 100];
        fs.disk().read_raw(10 * 4096 - 100, &mut tail);
        assert_eq!(tail, [0; 100]);
        // The next file follows it.
        let second = fs.create(&pattern(4096)).unwrap();
        assert_eq!(second.block_table(), [Some(80)]);
        assert!(
            fs.disk().log().is_empty(),
            "creation bypasses the request log"
        );
    }

    #[test]
    fn fragmented_file_has_one_run_per_k_blocks() {
        let fs = MemFs::new(MemDisk::new(4096), 12, Layout::Fragmented { run: 3 });
        let data = pattern(11 * 4096);
        let file = fs.create(&data).unwrap();
        assert_eq!(runs(&file), [(0, 2), (3, 2), (6, 2), (9, 1)]);
        assert_eq!(file.bmap(2).unwrap().run, 0, "a run ends at its chunk");
        let table = file.block_table();
        let starts: Vec<u64> = [0, 3, 6, 9].iter().map(|&i| table[i].unwrap()).collect();
        let mut sorted = starts.clone();
        sorted.sort_unstable();
        assert_ne!(starts, sorted, "chunks are shuffled");
        assert_eq!(file.disk_contents(), data);
        assert_eq!(fs.free_blocks(), fs.total_blocks() - 11);

        let one = MemFs::new(MemDisk::new(4096), 9, Layout::Fragmented { run: 0 });
        let file = one.create(&pattern(5 * 512)).unwrap();
        assert_eq!(runs(&file), [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]);
    }

    #[test]
    fn reversed_file_has_no_runs() {
        let fs = MemFs::new(MemDisk::new(1024), 10, Layout::Reversed);
        let data = pattern(6 * 1024);
        let file = fs.create(&data).unwrap();
        assert_eq!(
            file.block_table(),
            [Some(10), Some(8), Some(6), Some(4), Some(2), Some(0)]
        );
        assert!(runs(&file).iter().all(|&(_, run)| run == 0));
        assert_eq!(file.disk_contents(), data);
    }

    #[test]
    fn large_blocks_count_sectors() {
        let fs = MemFs::new(MemDisk::new(1024), 16, Layout::Contiguous);
        assert_eq!(fs.total_blocks(), 8);
        let data = pattern(3 * 65536 + 5);
        let file = fs.create(&data).unwrap();
        assert_eq!(
            file.block_table(),
            [Some(0), Some(128), Some(256), Some(384)]
        );
        assert_eq!(file.fs_bshift(), 16);
        assert_eq!(file.disk_contents(), data);
    }

    #[test]
    fn runs_are_capped() {
        let fs = MemFs::new(MemDisk::new(4096), 9, Layout::Contiguous);
        let file = fs.create(&pattern(2000 * 512)).unwrap();
        // One 64 KiB transfer is 128 blocks of 512 bytes: the first and 127 more.
        assert_eq!(file.bmap(0).unwrap().run, 127);
        file.set_max_transfer(1 << 20);
        assert_eq!(file.bmap(0).unwrap().run, MAX_RUN);
        assert_eq!(file.bmap(1800).unwrap().run, 199);
        let sparse = fs
            .create_sparse(1500 * 512, &[], &(0..1500).collect::<Vec<_>>())
            .unwrap();
        sparse.set_max_transfer(1 << 20);
        assert_eq!(sparse.bmap(0).unwrap(), Mapping::hole(MAX_RUN));
    }

    #[test]
    fn holes_read_as_zero_and_map_as_holes() {
        let fs = MemFs::new(MemDisk::new(1024), 12, Layout::Contiguous);
        let data = pattern(6 * 4096);
        let file = fs.create_sparse(6 * 4096, &data, &[1, 3, 4, 17]).unwrap();
        assert_eq!(fs.free_blocks(), fs.total_blocks() - 3);
        assert_eq!(file.bmap(0).unwrap(), Mapping::mapped(0, 0));
        assert_eq!(file.bmap(1).unwrap(), Mapping::hole(0));
        assert_eq!(file.bmap(2).unwrap(), Mapping::mapped(8, 0));
        assert_eq!(file.bmap(3).unwrap(), Mapping::hole(1));
        assert_eq!(file.bmap(5).unwrap(), Mapping::mapped(16, 0));
        assert_eq!(file.bmap(6).unwrap(), Mapping::hole(0), "past the table");
        assert_eq!(file.bmap(1 << 40).unwrap(), Mapping::hole(0));
        assert!(file.is_hole(1) && file.is_hole(4) && file.is_hole(6));
        assert!(!file.is_hole(0) && !file.is_hole(5));

        let mut expect = data.clone();
        for lbn in [1, 3, 4] {
            expect[lbn * 4096..(lbn + 1) * 4096].fill(0);
        }
        assert_eq!(file.disk_contents(), expect);

        // A size beyond the data is zero-filled; a size below it cuts it.
        let longer = fs.create_sparse(3 * 4096, &data[..5000], &[]).unwrap();
        let mut expect = data[..5000].to_vec();
        expect.resize(3 * 4096, 0);
        assert_eq!(longer.disk_contents(), expect);
        let shorter = fs.create_sparse(100, &data, &[]).unwrap();
        assert_eq!(shorter.disk_contents(), data[..100]);
        let empty = fs.create(&[]).unwrap();
        assert!(empty.block_table().is_empty());
        assert!(empty.disk_contents().is_empty());
    }

    #[test]
    fn alloc_fills_holes_near_their_neighbours() {
        let fs = MemFs::new(MemDisk::new(1024), 12, Layout::Contiguous);
        let file = fs
            .create_sparse(4 * 4096, &pattern(4 * 4096), &[1, 2])
            .unwrap();
        let _other = fs.create(&pattern(4096)).unwrap();
        assert_eq!(file.block_table(), [Some(0), None, None, Some(8)]);
        // Garbage in the free blocks must not show through newly allocated ones.
        fs.disk().write_raw(3 * 4096, &[0xee; 2 * 4096]);
        let free = fs.free_blocks();

        // Blocks 1 (after lbn 0) and 0 (before lbn 3) are taken: lbn 1 goes to the
        // lowest free block, lbn 2 right after it.
        file.alloc(4096 + 10, 4096).unwrap();
        assert_eq!(file.block_table(), [Some(0), Some(24), Some(32), Some(8)]);
        assert_eq!(fs.free_blocks(), free - 2);
        assert_eq!(file.bmap(1).unwrap(), Mapping::mapped(24, 1));
        let contents = file.disk_contents();
        assert!(contents[4096..3 * 4096].iter().all(|&b| b == 0));
        assert_eq!(contents[..4096], pattern(4096)[..]);
        assert_eq!(file.hooks().alloc_calls, 1);

        // Allocating over mapped blocks does nothing; a zero length does nothing.
        file.alloc(0, 4 * 4096).unwrap();
        file.alloc(10 * 4096, 0).unwrap();
        assert_eq!(fs.free_blocks(), free - 2);

        // Past the end of the table, the table grows (holes in between stay holes).
        file.alloc(6 * 4096, 4096).unwrap();
        let table = file.block_table();
        assert_eq!(table.len(), 7);
        assert_eq!(table[4..6], [None, None]);
        assert!(table[6].is_some());
        assert_eq!(fs.free_blocks(), free - 3);
        assert_eq!(file.hooks().alloc_calls, 4);

        // A hole after a mapped block takes the block after it when free (the
        // fragmented layout leaves a free gap after each run).
        let fs = MemFs::new(MemDisk::new(1024), 12, Layout::Fragmented { run: 1 });
        let file = fs.create_sparse(3 * 4096, &[], &[1]).unwrap();
        file.alloc(4096, 4096).unwrap();
        let table = file.block_table();
        assert_eq!(table[1], table[0].map(|sector| sector + 8));
        assert!(file.bmap(0).unwrap().run >= 1);
        assert_eq!(file.alloc(u64::MAX, 2), Err(Error::Invalid));
    }

    #[test]
    fn take_near_prefers_the_neighbours_in_order() {
        let mut allocator = Allocator {
            used: vec![false; 8],
            free: 8,
            seed: 0,
        };
        allocator.take(3);
        assert_eq!(
            allocator.take_near(&[Some(3), Some(5)]),
            Some(5),
            "3 is taken"
        );
        assert_eq!(allocator.take_near(&[Some(6), Some(7)]), Some(6));
        assert_eq!(
            allocator.take_near(&[None, Some(100)]),
            Some(0),
            "lowest free"
        );
        assert_eq!(allocator.free, 4);
        for _ in 0..4 {
            assert!(allocator.take_near(&[]).is_some());
        }
        assert_eq!(allocator.take_near(&[]), None);
    }

    #[test]
    fn free_blocks_past_frees_zeroes_the_tail_and_blocks_are_reused() {
        let fs = MemFs::new(MemDisk::new(64), 10, Layout::Contiguous);
        let data = pattern(4 * 1024);
        let file = fs.create(&data).unwrap();
        let free = fs.free_blocks();
        let filler = fs.create(&pattern(1024 * free as usize)).unwrap();
        assert_eq!(fs.free_blocks(), 0);
        crate::setsize(&file, 1000).unwrap();
        file.free_blocks_past(1000);
        assert_eq!(fs.free_blocks(), 3, "blocks 1..4 are free again");
        assert_eq!(file.block_table().len(), 1);
        assert!((1..4).all(|lbn| file.is_hole(lbn)));
        assert_eq!(file.bmap(1).unwrap().block, None);
        let mut model = data[..1000].to_vec();
        assert!(file.disk_contents() == model);
        let mut block = vec![0xAA; 1024];
        let sector = file.block_table()[0].unwrap();
        fs.disk().read_raw(sector * SECTOR_SIZE as u64, &mut block);
        assert!(block[..1000] == data[..1000] && block[1000..].iter().all(|&b| b == 0));
        // The freed blocks are allocated again, zeroed.
        crate::setsize(&file, 4 * 1024).unwrap();
        file.alloc(1024, 3 * 1024).unwrap();
        assert_eq!(fs.free_blocks(), 0);
        model.resize(4 * 1024, 0);
        assert!(file.disk_contents() == model);
        drop(filler);
    }

    #[test]
    fn full_filesystem_reports_enospc_and_allocates_nothing() {
        let fs = MemFs::new(MemDisk::new(64), 12, Layout::Contiguous);
        assert_eq!(fs.total_blocks(), 8);
        let file = fs.create_sparse(7 * 4096, &[], &[1, 2, 3]).unwrap();
        assert_eq!(fs.free_blocks(), 4);
        assert!(matches!(fs.create(&pattern(5 * 4096)), Err(Error::NoSpace)));
        assert_eq!(fs.free_blocks(), 4);

        let _filler = fs.create(&pattern(2 * 4096)).unwrap();
        assert_eq!(fs.free_blocks(), 2);
        let before = file.block_table();
        assert_eq!(file.alloc(4096, 3 * 4096), Err(Error::NoSpace));
        assert_eq!(file.block_table(), before, "nothing half-allocated");
        assert_eq!(fs.free_blocks(), 2);
        file.alloc(4096, 2 * 4096).unwrap();
        assert_eq!(fs.free_blocks(), 0);
        assert_eq!(file.alloc(3 * 4096, 1), Err(Error::NoSpace));

        // Fragmented and reversed placements fall back when no slot fits.
        for layout in [Layout::Fragmented { run: 4 }, Layout::Reversed] {
            let fs = MemFs::new(MemDisk::new(64), 12, layout);
            let _a = fs.create(&pattern(4096)).unwrap();
            let _b = fs.create_sparse(4096 * 2, &[], &[0]).unwrap();
            let c = fs.create(&pattern(5 * 4096)).unwrap();
            assert_eq!(fs.free_blocks(), 1);
            assert_eq!(c.disk_contents(), pattern(5 * 4096));
        }
    }

    #[test]
    fn knobs_and_hook_counters() {
        let fs = MemFs::new(MemDisk::new(64), 12, Layout::Contiguous);
        let file = fs.create(&pattern(8192)).unwrap();
        assert!(!file.is_dead());
        file.set_dead(true);
        assert!(file.is_dead());
        file.set_pagedaemon(true);
        assert!(file.is_pagedaemon());
        file.set_mount_flags(MountFlags::NO_ATIME);
        assert_eq!(file.mount_flags(), MountFlags::NO_ATIME);
        assert_eq!(file.max_transfer(), DEFAULT_MAX_TRANSFER);
        file.set_max_transfer(16384);
        assert_eq!(file.max_transfer(), 16384);
        file.set_kind(VnodeKind::BlockDevice);
        assert_eq!(file.kind(), VnodeKind::BlockDevice);
        assert!(!file.has_journal());
        file.set_journal(true);
        assert!(file.has_journal());
        assert_eq!(file.dev_bshift(), DEV_BSHIFT);
        assert!(core::ptr::eq(file.block_map(), &*file));
        assert_eq!(file.device().sectors(), 64);

        assert_eq!(file.putrange(5000), None);
        file.set_putrange_granularity(Some(16384));
        assert_eq!(file.putrange(20000), Some(16384..32768));
        file.set_putrange_granularity(Some(0));
        assert_eq!(file.putrange(20000), None);
        assert_eq!(file.size(100, crate::SizeKind::Disk), 100);

        file.set_trans_busy(true);
        assert_eq!(file.trans_begin(false), Err(Error::Busy));
        assert_eq!(file.trans_begin(true), Ok(()));
        file.set_trans_busy(false);
        assert_eq!(file.trans_begin(false), Ok(()));
        file.trans_end();
        file.trans_end();
        file.mark_update(Update::ACCESSED | Update::MODIFIED);
        file.mark_update(Update::MODIFIED);
        file.journal_begin().unwrap();
        file.journal_end();
        file.worklist_add();
        file.worklist_remove();
        file.worklist_remove();
        file.preempt();

        file.fail_bmap(Some(1));
        assert_eq!(file.bmap(0).unwrap(), Mapping::mapped(0, 1));
        assert_eq!(file.bmap(1), Err(Error::Io));
        file.fail_bmap(None);
        assert_eq!(file.bmap(1).unwrap(), Mapping::mapped(8, 0));

        assert_eq!(
            file.hooks(),
            HookCounts {
                mark_update_accessed: 1,
                mark_update_modified: 2,
                trans_begin: 2,
                trans_end: 2,
                journal_begin: 1,
                journal_end: 1,
                worklist_add: 1,
                worklist_remove: 2,
                preempt: 1,
                bmap_calls: 3,
                alloc_calls: 0,
            }
        );
        file.reset_hooks();
        assert_eq!(file.hooks(), HookCounts::default());
    }

    #[test]
    fn ledger_balances_per_thread_and_ignores_refused_begins() {
        let fs = MemFs::new(MemDisk::new(64), 12, Layout::Contiguous);
        let file = fs.create(&pattern(100)).unwrap();
        file.set_trans_busy(true);
        assert_eq!(file.trans_begin(false), Err(Error::Busy));
        assert_eq!(file.ledger(), Ledger::default(), "a refusal enters nothing");
        file.set_trans_busy(false);

        file.trans_begin(true).unwrap();
        file.journal_begin().unwrap();
        let ledger = file.ledger();
        assert_eq!(ledger.open.len(), 1, "{ledger:?}");
        assert!(ledger.open[0].contains("transaction depth 1, journal depth 1"));
        // Another thread has depths of its own: it cannot end this thread's.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                file.trans_begin(true).unwrap();
                file.trans_end();
            });
        });
        file.journal_end();
        file.trans_end();
        let ledger = file.ledger();
        assert!(ledger.is_clean(), "{ledger:?}");
        assert_eq!(
            (ledger.trans_begins, ledger.trans_ends),
            (2, 2),
            "both threads counted"
        );
        assert_eq!((ledger.journal_begins, ledger.journal_ends), (1, 1));
    }

    #[test]
    fn ledger_reports_unmatched_ends_and_lock_order_violations() {
        let fs = MemFs::new(MemDisk::new(64), 12, Layout::Contiguous);
        let file = fs.create(&pattern(100)).unwrap();
        file.trans_end();
        file.journal_end();
        {
            let _node = file.object().node_lock().read();
            file.trans_begin(true).unwrap();
            file.journal_begin().unwrap();
            file.journal_end();
            file.trans_end();
        }
        file.journal_begin().unwrap();
        file.trans_begin(true).unwrap();
        file.trans_end();
        file.journal_end();
        let ledger = file.ledger();
        assert!(ledger.open.is_empty(), "{ledger:?}");
        let violations = ledger.violations.join("\n");
        assert_eq!(ledger.violations.len(), 5, "{violations}");
        assert!(
            ledger.violations[0].starts_with("trans_end on ")
                && violations.contains("nothing begun")
        );
        assert!(ledger.violations[1].starts_with("journal_end on "));
        assert!(
            ledger.violations[2].starts_with("trans_begin on ")
                && ledger.violations[2].ends_with("held 1 node lock(s)")
        );
        assert!(
            ledger.violations[3].starts_with("journal_begin on ")
                && ledger.violations[3].ends_with("held 1 node lock(s)")
        );
        assert!(ledger.violations[4].contains("inside the journal (depth 1)"));
        // Re-entering a transaction the thread is already in only nests.
        file.trans_begin(true).unwrap();
        file.journal_begin().unwrap();
        file.trans_begin(true).unwrap();
        file.trans_end();
        file.journal_end();
        file.trans_end();
        assert_eq!(file.ledger().violations.len(), 5);
        assert!(!ledger.is_clean());

        // Dropping a file with an unclean ledger fails the test that dropped it.
        let dropped = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| drop(file)));
        let message = dropped.expect_err("the drop checks the ledger");
        let message = message
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(message.contains("lock-order violation"), "{message}");
    }

    #[test]
    fn page_cache_limit_is_reachable() {
        let fs = MemFs::new(MemDisk::new(64), 12, Layout::Contiguous);
        let file = fs.create(&pattern(100)).unwrap();
        file.object().lock().cache_mut().set_limit(0);
        assert!(Arc::ptr_eq(file.fs(), &fs));
        assert_eq!(fs.layout(), Layout::Contiguous);
        assert_eq!(fs.block_size(), 4096);
    }
}
