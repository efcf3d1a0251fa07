//! Threads in the model: 2–4 threads run short random sequences of operations on one
//! `MemFile` at once, every operation recorded with its arguments, its result and a
//! start and end stamp from one global counter. Afterwards the file is flushed and
//! evicted (`putpages(CLEANIT | FREE | SYNCIO)`) and the checker looks for a serial
//! order of all the operations that
//!
//! - respects real time: when operation A ended before operation B started (A's end
//!   stamp is below B's start stamp), A comes first; operations of one thread keep
//!   their order; overlapping operations may go either way;
//! - explains every result when the operations are replayed one at a time, in that
//!   order, on a byte vector (the file as it must read), starting from the initial
//!   contents: every byte a read, a read fault or a direct read returned, every size
//!   a fault saw, and every error (a fault past the end of file is `Invalid`);
//! - ends with exactly the file the disk holds after the final flush (bytes and size).
//!
//! That is linearizability of the file's contents and size, with every operation
//! taking effect at one instant between its start and its end. What the checker
//! accepts, precisely:
//!
//! - `write()` (of at most a few pages here, so one batch), `setsize`, a synchronous
//!   write fault with the bytes stored through its `WritablePages` before release, a
//!   direct write (node lock held exclusively throughout): atomic;
//! - a synchronous read fault, a direct read: atomic too;
//! - `read()`: genpager's contract is weaker — a `read` concurrent with a `write` may
//!   see a mix. `read` runs without the node lock (the fast path reads under the
//!   object lock only), a page (batch) at a time, and a write extending the file
//!   first zeroes the old last block, growing the size, then stores its data. So the
//!   checker takes a `read` as one read per page it returned, each at its own instant
//!   within the read's start and end, in file order, then (when it stopped short)
//!   the end of file it met; and each page may match the file between operations or
//!   part-way through one `write` it overlaps in real time (that write's zeroes and
//!   data done below some offset, a multiple of 512 bytes or its end, the size grown
//!   to it; or only its first phase, zeroing from the old end of file up to such an
//!   offset, before data it will store over them). It does not accept bytes within
//!   one page from two instants, bytes of a
//!   write that ended before the read began missing, nor bytes no write wrote (such
//!   as zeroes past a truncation's new end returned as data);
//! - a direct transfer may move fewer bytes than asked (it falls back at a chunk past
//!   the end of file, over a hole, …): it is replayed as what it moved, which must lie
//!   within the file;
//! - `putpages` changes nothing a reader sees and must succeed (no faults injected).
//!
//! Writes that do not overlap must never lose each other's bytes, and overlapping ones
//! land in some serial order: both follow from the above.
//!
//! The search is a depth-first walk over the orders the real-time order allows,
//! memoized on (operations done per thread, contents), stopping at the first order
//! that explains everything. Files are a few pages, 3–5 operations per thread.
//!
//! It found two bugs in `read()`, both fixed: it clipped what it copied to the size it
//! read before faulting the pages in, so racing a shrinking `setsize` it returned the
//! zeroed tail of the new last page as data past the new end (seeds 48, 83, 174, in
//! about one run in three); and a batch that stopped at the end of file inside a page
//! left that page observed at two instants once a write had grown the file (seeds 6,
//! 36, 155). Seeds name trials, but thread timing varies from run to run.
//!
//! Not in CI (`#[ignore]`): about one trial in 1,500 fails because `MemFile` does not
//! do a filesystem's half of a truncate. After `setsize` shrinks the file, its blocks
//! past the new end stay allocated with the old bytes; when another thread then grows
//! the file, genpager zeroes the old last block and page, and reads the blocks beyond
//! from the disk — the old bytes (seed 36: a shrink to 257 bytes and a growth to
//! 10,258 racing, old bytes back at 0x1000..0x26ca). genpager's contract puts freeing
//! those blocks on the filesystem, under its own lock, after `setsize`; the test's
//! host would have to do that atomically with the shrink, which the rig cannot yet.
//!
//! 200 trials by default (`MODEL_THREADS_TRIALS`, or else `PROPTEST_CASES`, scales
//! it), seeded deterministically; `MODEL_THREADS_SEED` replays from another seed. A
//! failure names the trial's seed: rerun with `MODEL_THREADS_SEED=<seed>
//! MODEL_THREADS_TRIALS=1`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use genpager::Fault;
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::testing::{Direction, Layout, MemDisk, MemFile, MemFs, SECTOR_SIZE};
use genpager::{
    Error, Fetched, PAGE_SIZE, PutFlags, Vnode, getpages, putpages, read, setsize, write,
};

const PAGE: u64 = PAGE_SIZE as u64;
/// The largest file the trials make.
const MAX_FILE: u64 = 6 * PAGE;

/// xorshift64*: deterministic and good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        // Never zero, so bytes written are told from holes and truncated tails.
        (0..len).map(|_| (self.next() as u8) | 1).collect()
    }
}

/// One operation and its arguments.
#[derive(Clone, Debug)]
enum Op {
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    SetSize {
        size: u64,
    },
    Flush {
        sync: bool,
    },
    ReadFault {
        page: u64,
    },
    WriteFault {
        page: u64,
        at: usize,
        data: Vec<u8>,
    },
    DirectRead {
        offset: u64,
        len: usize,
    },
    DirectWrite {
        offset: u64,
        data: Vec<u8>,
    },
    /// For the checker: what a `Read` returned within one page, `bytes` from `offset`.
    ReadChunk {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// For the checker: a `Read` stopped short at `at`, the end of file then.
    ReadEof {
        at: u64,
    },
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// Bytes read (a read, or a direct read's moved bytes).
    Bytes(Vec<u8>),
    /// Bytes written (a write's count, a direct write's moved bytes).
    Wrote(usize),
    /// A fault: the size it saw while holding its page, and the page's bytes (read
    /// fault) or the range of the page it stored `data` into (write fault).
    Page {
        size: u64,
        bytes: Vec<u8>,
        stored: (usize, usize),
    },
    Done,
    Failed(Error),
}

#[derive(Clone, Debug)]
struct Record {
    op: Op,
    outcome: Outcome,
    start: u64,
    end: u64,
}

fn sector_buffer(len: usize) -> (Vec<u8>, usize) {
    let backing = vec![0u8; len + SECTOR_SIZE];
    let at = backing.as_ptr().align_offset(SECTOR_SIZE);
    (backing, at)
}

fn run_op(file: &Arc<MemFile>, op: &Op) -> Outcome {
    match op {
        Op::Read { offset, len } => {
            let mut buf = vec![0u8; *len];
            match read(file, *offset, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    Outcome::Bytes(buf)
                }
                Err(e) => Outcome::Failed(e),
            }
        }
        Op::Write { offset, data } => match write(file, *offset, data) {
            Ok(n) => Outcome::Wrote(n),
            Err(e) => Outcome::Failed(e),
        },
        Op::SetSize { size } => {
            let old = file.object().size();
            match setsize(file, *size) {
                Ok(()) => {
                    if *size < old {
                        free_blocks_past_end(file);
                    }
                    Outcome::Done
                }
                Err(e) => Outcome::Failed(e),
            }
        }
        Op::Flush { sync } => {
            let flags = if *sync {
                PutFlags::CLEANIT | PutFlags::SYNCIO
            } else {
                PutFlags::CLEANIT
            };
            match putpages(file, 0, 0, flags) {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed(e),
            }
        }
        Op::ReadFault { page } => {
            let at = page * PAGE;
            match getpages(file, Fault::read(at, 1)) {
                Ok(Fetched::Busy(pages)) => {
                    let size = file.object().size();
                    Outcome::Page {
                        size,
                        bytes: pages.bytes(0).to_vec(),
                        stored: (0, 0),
                    }
                }
                Ok(_) => panic!("a synchronous read fault gave no busy pages"),
                Err(e) => Outcome::Failed(e),
            }
        }
        Op::WriteFault { page, at, data } => {
            let offset = page * PAGE;
            match getpages(file, Fault::write(offset, 1)) {
                Ok(Fetched::Writable(mut pages)) => {
                    // A shrink waits for the busy page and a growth zeroes the old
                    // tail through it: the size is stable for what this page holds.
                    let size = file.object().size();
                    let room = (size.saturating_sub(offset)).min(PAGE) as usize;
                    let from = (*at).min(room);
                    let to = (at + data.len()).min(room);
                    pages.bytes_mut(0)[from..to].copy_from_slice(&data[..to - from]);
                    Outcome::Page {
                        size,
                        bytes: Vec::new(),
                        stored: (from, to),
                    }
                }
                Ok(_) => panic!("a synchronous write fault gave no writable pages"),
                Err(e) => Outcome::Failed(e),
            }
        }
        Op::DirectRead { offset, len } => {
            let (mut backing, at) = sector_buffer(*len);
            let moved = {
                let buf = &mut backing[at..at + len];
                let mut uio = Uio::new(
                    *offset,
                    Direction::Read,
                    AddressSpace::User,
                    vec![IoVec::new(buf)],
                )
                .unwrap();
                directio(file, &mut uio, DirectFlags::empty()).map(|p| p.transferred)
            };
            match moved {
                Ok(n) => Outcome::Bytes(backing[at..at + n].to_vec()),
                Err(e) => Outcome::Failed(e),
            }
        }
        Op::ReadChunk { .. } | Op::ReadEof { .. } => unreachable!("checker only"),
        Op::DirectWrite { offset, data } => {
            let (mut backing, at) = sector_buffer(data.len());
            backing[at..at + data.len()].copy_from_slice(data);
            let buf = &mut backing[at..at + data.len()];
            let mut uio = Uio::new(
                *offset,
                Direction::Write,
                AddressSpace::User,
                vec![IoVec::new(buf)],
            )
            .unwrap();
            match directio(file, &mut uio, DirectFlags::empty()) {
                Ok(p) => Outcome::Wrote(p.transferred),
                Err(e) => Outcome::Failed(e),
            }
        }
    }
}

/// What a filesystem's truncate does after `setsize` shrank the file: free the blocks
/// wholly past the end (MemFs never frees, so zero them, as a freed and later
/// reallocated block reads). Under the node lock, so no write extends the file
/// meanwhile.
fn free_blocks_past_end(file: &Arc<MemFile>) {
    let object = file.object();
    let _node = object.node_lock().write();
    let size = object.size();
    let bsize = 1u64 << file.fs_bshift();
    let disk = file.fs().disk();
    for sector in file
        .block_table()
        .iter()
        .skip(size.div_ceil(bsize) as usize)
        .flatten()
    {
        disk.write_raw(sector * SECTOR_SIZE as u64, &vec![0; bsize as usize]);
    }
}

/// Replays `record` on `model`; `None` if its result cannot come from that state.
fn replay(model: &[u8], record: &Record) -> Option<Vec<u8>> {
    let size = model.len() as u64;
    match (&record.op, &record.outcome) {
        (Op::Read { offset, len }, Outcome::Bytes(bytes)) => {
            let from = (*offset).min(size) as usize;
            let to = (offset + *len as u64).min(size) as usize;
            (model[from..to] == bytes[..]).then(|| model.to_vec())
        }
        (Op::Write { offset, data }, Outcome::Wrote(n)) if *n == data.len() => {
            let mut m = model.to_vec();
            let end = *offset as usize + data.len();
            if m.len() < end {
                m.resize(end, 0);
            }
            m[*offset as usize..end].copy_from_slice(data);
            Some(m)
        }
        (Op::SetSize { size: new }, Outcome::Done) => {
            let mut m = model.to_vec();
            m.resize(*new as usize, 0);
            Some(m)
        }
        (Op::Flush { .. }, Outcome::Done) => Some(model.to_vec()),
        (Op::ReadChunk { offset, bytes }, Outcome::Done) => {
            let end = offset + bytes.len() as u64;
            (end <= size && model[*offset as usize..end as usize] == bytes[..])
                .then(|| model.to_vec())
        }
        (Op::ReadEof { at }, Outcome::Done) => (size <= *at).then(|| model.to_vec()),
        (Op::ReadFault { page } | Op::WriteFault { page, .. }, Outcome::Failed(Error::Invalid)) => {
            (page * PAGE >= size).then(|| model.to_vec())
        }
        (Op::ReadFault { page }, Outcome::Page { bytes, .. }) => {
            // The size the fault saw proves nothing: a shrink sets the size before it
            // waits for the busy pages past it.
            let at = page * PAGE;
            if at >= size {
                return None;
            }
            let end = (at + PAGE).min(size);
            let within = (end - at) as usize;
            let ok = bytes[..within] == model[at as usize..end as usize]
                && bytes[within..].iter().all(|&b| b == 0);
            ok.then(|| model.to_vec())
        }
        (
            Op::WriteFault { page, data, .. },
            Outcome::Page {
                stored: (from, to), ..
            },
        ) => {
            // The fault clipped its store at the size it saw holding the page; a
            // shrink may have set a smaller one meanwhile (and zeroes the tail once
            // the page is released), a growth cannot pass the page it holds.
            let at = page * PAGE;
            if at >= size || (to > from && at + *to as u64 > size) {
                return None;
            }
            if to <= from {
                // Nothing stored (the size it saw ended before the bytes it meant to
                // store): the fault changed no byte.
                return Some(model.to_vec());
            }
            let mut m = model.to_vec();
            let start = at as usize + from;
            m[start..at as usize + to].copy_from_slice(&data[..to - from]);
            Some(m)
        }
        (Op::DirectRead { offset, .. }, Outcome::Bytes(bytes)) => {
            let end = offset + bytes.len() as u64;
            (bytes.is_empty()
                || (end <= size && model[*offset as usize..end as usize] == bytes[..]))
                .then(|| model.to_vec())
        }
        (Op::DirectWrite { offset, data }, Outcome::Wrote(n)) => {
            let end = offset + *n as u64;
            if *n == 0 {
                return Some(model.to_vec());
            }
            if end > size {
                return None;
            }
            let mut m = model.to_vec();
            m[*offset as usize..end as usize].copy_from_slice(&data[..*n]);
            Some(m)
        }
        _ => None,
    }
}

/// The file part-way through `write(offset, data)` on `model`, the size grown to `k`
/// at least: with `stored`, everything the write does below `k` (zero past the old
/// end, store the data); without, only its first phase (zeroing from the old end of
/// file to `k`, before any data).
fn write_prefix(model: &[u8], offset: u64, data: &[u8], k: u64, stored: bool) -> Vec<u8> {
    let mut m = model.to_vec();
    let k = k.min(offset + data.len() as u64) as usize;
    if m.len() < k {
        m.resize(k, 0);
    }
    let offset = offset as usize;
    if stored && k > offset {
        m[offset..k].copy_from_slice(&data[..k - offset]);
    }
    m
}

/// Replaces each `read()` by what it returned page by page ([`Op::ReadChunk`]s, each
/// taking effect at its own instant, in order) and, when it stopped short, the end of
/// file it met ([`Op::ReadEof`]), all within the read's start and end.
fn split_reads(records: &[Record]) -> Vec<Record> {
    let mut out = Vec::new();
    for r in records {
        let (Op::Read { offset, len }, Outcome::Bytes(bytes)) = (&r.op, &r.outcome) else {
            out.push(r.clone());
            continue;
        };
        let piece = |op| Record {
            op,
            outcome: Outcome::Done,
            start: r.start,
            end: r.end,
        };
        let mut at = *offset;
        let end = offset + bytes.len() as u64;
        while at < end {
            let to = ((at / PAGE + 1) * PAGE).min(end);
            let from = (at - offset) as usize;
            out.push(piece(Op::ReadChunk {
                offset: at,
                bytes: bytes[from..from + (to - at) as usize].to_vec(),
            }));
            at = to;
        }
        if bytes.len() < *len {
            out.push(piece(Op::ReadEof { at: end }));
        }
    }
    out
}

/// A serial order: (thread, index in the thread's records) in turn.
type Order = Vec<(usize, usize)>;

/// Looks for a serial order (see the module docs).
fn linearize(initial: &[u8], threads: &[Vec<Record>], fin: &[u8]) -> Result<Order, String> {
    struct Search<'a> {
        threads: &'a [Vec<Record>],
        fin: &'a [u8],
        seen: HashSet<(Vec<usize>, Vec<u8>)>,
        order: Order,
        /// The first complete order that explained every result but not the final
        /// file, and what it ended with (for the failure message).
        near_miss: Option<(Order, Vec<u8>)>,
        /// The longest order placed, for the failure message.
        deepest: Order,
    }
    impl Search<'_> {
        fn go(&mut self, done: &mut Vec<usize>, model: Vec<u8>) -> bool {
            if done.iter().zip(self.threads).all(|(&d, t)| d == t.len()) {
                if model != self.fin && self.near_miss.is_none() {
                    self.near_miss = Some((self.order.clone(), model.clone()));
                }
                return model == self.fin;
            }
            if !self.seen.insert((done.clone(), model.clone())) {
                return false;
            }
            if self.order.len() > self.deepest.len() {
                self.deepest = self.order.clone();
            }
            for t in 0..self.threads.len() {
                let Some(candidate) = self.threads[t].get(done[t]) else {
                    continue;
                };
                // Nothing still to place may have ended before this one started.
                let blocked = (0..self.threads.len()).any(|u| {
                    u != t
                        && self.threads[u]
                            .get(done[u])
                            .is_some_and(|other| other.end < candidate.start)
                });
                if blocked {
                    continue;
                }
                let next = replay(&model, candidate).or_else(|| {
                    // A read may see part of a write it overlaps (not yet placed).
                    matches!(candidate.op, Op::ReadChunk { .. } | Op::ReadEof { .. })
                        .then(|| self.read_mid_write(&model, done, candidate))
                        .flatten()
                });
                let Some(next) = next else {
                    continue;
                };
                done[t] += 1;
                self.order.push((t, done[t] - 1));
                if self.go(done, next) {
                    return true;
                }
                self.order.pop();
                done[t] -= 1;
            }
            false
        }

        /// `read`'s result read from the middle of a write of another thread that
        /// overlaps it in real time and comes later in the order: `model` if so.
        fn read_mid_write(&self, model: &[u8], done: &[usize], read: &Record) -> Option<Vec<u8>> {
            for (u, records) in self.threads.iter().enumerate() {
                // Only the next write of each thread can be under way.
                let Some(w) = records.get(done[u]) else {
                    continue;
                };
                let Op::Write { offset, data } = &w.op else {
                    continue;
                };
                if std::ptr::eq(w, read) || w.start > read.end || read.start > w.end {
                    continue;
                }
                let end = offset + data.len() as u64;
                let from = (model.len() as u64).min(*offset) & !511;
                let explains = (from..=end).step_by(512).chain([end]).any(|k| {
                    [false, true].into_iter().any(|stored| {
                        replay(&write_prefix(model, *offset, data, k, stored), read).is_some()
                    })
                });
                if explains {
                    return Some(model.to_vec());
                }
            }
            None
        }
    }
    let mut search = Search {
        threads,
        fin,
        seen: HashSet::new(),
        order: Vec::new(),
        near_miss: None,
        deepest: Vec::new(),
    };
    let mut done = vec![0; threads.len()];
    if search.go(&mut done, initial.to_vec()) {
        return Ok(search.order);
    }
    Err(match search.near_miss {
        None => format!(
            "no order explains every result; the longest order placed is {:?}",
            search.deepest
        ),
        Some((order, model)) => {
            let diff = (0..model.len().max(fin.len()))
                .find(|&i| model.get(i) != fin.get(i))
                .unwrap_or(0);
            let last = (0..model.len().max(fin.len()))
                .rev()
                .find(|&i| model.get(i) != fin.get(i))
                .unwrap_or(0);
            format!(
                "the order {order:?} explains every result but ends with {:#x} bytes, \
                 first differing from the final file ({:#x} bytes) at {diff:#x} \
                 (model {:?}, disk {:?}), last at {last:#x}",
                model.len(),
                fin.len(),
                model.get(diff),
                fin.get(diff)
            )
        }
    })
}

fn random_op(rng: &mut Rng, bsize: u64) -> Op {
    let offset = rng.below(4 * PAGE + 1);
    match rng.below(16) {
        0..=2 => Op::Read {
            offset,
            len: 1 + rng.below(2 * PAGE) as usize,
        },
        3..=5 => {
            let len = 1 + rng.below(2 * PAGE) as usize;
            Op::Write {
                offset,
                data: rng.bytes(len),
            }
        }
        6 => Op::SetSize {
            size: rng.below(MAX_FILE - 2 * PAGE),
        },
        7 | 8 => Op::Flush {
            sync: rng.below(2) == 0,
        },
        9 | 10 => Op::ReadFault { page: rng.below(5) },
        11 | 12 => {
            let at = rng.below(PAGE) as usize;
            let len = 1 + rng.below(PAGE / 2) as usize;
            Op::WriteFault {
                page: rng.below(5),
                at,
                data: rng.bytes(len),
            }
        }
        13 => Op::DirectRead {
            offset: offset & !(SECTOR_SIZE as u64 - 1),
            len: SECTOR_SIZE * (1 + rng.below(8) as usize),
        },
        _ => {
            // Whole blocks when they are small, so some transfers are direct.
            let unit = bsize.min(PAGE);
            let len = SECTOR_SIZE * (1 + rng.below(8) as usize);
            Op::DirectWrite {
                offset: offset & !(unit - 1),
                data: rng.bytes(len),
            }
        }
    }
}

/// One trial; `Err` describes what broke.
fn trial(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let bshift = [9, 10, 12, 16][rng.below(4) as usize];
    let sectors = 8192;
    let disk = match rng.below(3) {
        0 => MemDisk::new(sectors),
        1 => MemDisk::threaded(sectors, false),
        _ => MemDisk::threaded(sectors, true),
    };
    let fs = MemFs::new(disk.clone(), bshift, Layout::Contiguous);
    let size = rng.below(3 * PAGE + 1) as usize;
    let initial = rng.bytes(size);
    let file = fs.create(&initial).map_err(|e| format!("create: {e}"))?;
    let nthreads = 2 + rng.below(3) as usize;
    let plans: Vec<Vec<Op>> = (0..nthreads)
        .map(|_| {
            (0..3 + rng.below(3))
                .map(|_| random_op(&mut rng, 1 << bshift))
                .collect()
        })
        .collect();
    let clock = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = plans
        .into_iter()
        .map(|plan| {
            let file = file.clone();
            let clock = clock.clone();
            thread::spawn(move || {
                plan.into_iter()
                    .map(|op| {
                        let start = clock.fetch_add(1, Ordering::SeqCst);
                        let outcome = run_op(&file, &op);
                        let end = clock.fetch_add(1, Ordering::SeqCst);
                        Record {
                            op,
                            outcome,
                            start,
                            end,
                        }
                    })
                    .collect::<Vec<Record>>()
            })
        })
        .collect();
    let threads: Vec<Vec<Record>> = handles
        .into_iter()
        .map(|h| h.join().map_err(|_| "a thread panicked".to_string()))
        .collect::<Result<_, _>>()?;
    let describe = || {
        let mut s = format!("bshift {bshift}, initial size {size:#x}\n");
        for (t, records) in threads.iter().enumerate() {
            for r in records {
                let outcome = match (&r.op, &r.outcome) {
                    (
                        Op::Read { offset, .. } | Op::DirectRead { offset, .. },
                        Outcome::Bytes(b),
                    ) => {
                        // Where the bytes differ from the initial contents.
                        let o = *offset as usize;
                        let differ: Vec<usize> = (0..b.len())
                            .filter(|&i| initial.get(o + i) != Some(&b[i]))
                            .collect();
                        match (differ.first(), differ.last()) {
                            (Some(a), Some(z)) => format!(
                                "Bytes({:#x}), differing from the initial file at {:#x}..={:#x} ({} bytes, {} zero)",
                                b.len(),
                                o + a,
                                o + z,
                                differ.len(),
                                differ.iter().filter(|&&i| b[i] == 0).count()
                            ),
                            _ => format!("Bytes({:#x}), as the initial file", b.len()),
                        }
                    }
                    (_, Outcome::Bytes(b)) => format!("Bytes({:#x})", b.len()),
                    (_, Outcome::Page { size, stored, .. }) => {
                        format!("Page {{ size: {size:#x}, stored: {stored:x?} }}")
                    }
                    (_, other) => format!("{other:?}"),
                };
                let op = match &r.op {
                    Op::Write { offset, data } => format!("Write {offset:#x}+{:#x}", data.len()),
                    Op::WriteFault { page, at, data } => {
                        format!("WriteFault page {page} at {at:#x}+{:#x}", data.len())
                    }
                    Op::DirectWrite { offset, data } => {
                        format!("DirectWrite {offset:#x}+{:#x}", data.len())
                    }
                    other => format!("{other:?}"),
                };
                s += &format!("  thread {t} [{}..{}] {op} -> {outcome}\n", r.start, r.end);
            }
        }
        s
    };
    for r in threads.iter().flatten() {
        if let Outcome::Failed(e) = r.outcome {
            let fault_past_eof =
                matches!(r.op, Op::ReadFault { .. } | Op::WriteFault { .. }) && e == Error::Invalid;
            if !fault_past_eof {
                return Err(format!("{:?} failed with {e:?}\n{}", r.op, describe()));
            }
        }
    }
    let flush = PutFlags::CLEANIT | PutFlags::FREE | PutFlags::SYNCIO;
    putpages(&file, 0, 0, flush).map_err(|e| format!("final flush: {e:?}\n{}", describe()))?;
    disk.quiesce();
    let fin = file.disk_contents();
    let split: Vec<Vec<Record>> = threads.iter().map(|t| split_reads(t)).collect();
    if let Err(why) = linearize(&initial, &split, &fin) {
        return Err(format!(
            "no serial order explains the results and the final file: {why}\n{}",
            describe()
        ));
    }
    Ok(())
}

fn trials() -> u64 {
    let from = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    from("MODEL_THREADS_TRIALS")
        .or_else(|| from("PROPTEST_CASES"))
        .unwrap_or(if cfg!(miri) { 1 } else { 200 })
}

#[test]
#[ignore = "the rig's filesystem frees no blocks on a shrinking setsize, so a racing growth can read a stale block back (see the file docs); run with --ignored"]
fn concurrent_operations_are_linearizable() {
    let first: u64 = std::env::var("MODEL_THREADS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for seed in first..first + trials() {
        if let Err(e) = trial(seed) {
            panic!("trial seed {seed} (MODEL_THREADS_SEED={seed} MODEL_THREADS_TRIALS=1): {e}");
        }
    }
}
