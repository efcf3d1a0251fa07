//! Loom models of the places where genpager drops a lock and re-checks, and of the
//! lock order of DESIGN.md §4, with the device completing requests on a loom thread
//! of its own.
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom -C debug_assertions" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release --test loom
//! ```
//!
//! Each model is small (one or two pages, a tiny file) and ends by checking the state
//! it leaves: no page busy or wanted, tags agreeing with page states, nothing in
//! flight, no latched error, and the file's bytes (in the cache and on the disk)
//! agreeing with a model. Each model was shown to fail when the protection it guards
//! is removed from `src/` (see the report of issue #6).
//!
//! In every model the file's transaction and journal hooks also check the lock order
//! (no node lock held by the calling thread, the journal inside a transaction, each
//! begin ended once on its own thread), counting node-lock guards per loom thread with
//! `genpager::sync::sleep_locks_held_by_this_thread`.
//!
//! Every model runs genpager's own locks and wait channels (under `--cfg loom` they are
//! built on loom's atomics and tracked cells) with the hooks a kernel would register:
//! a [`Scheduler`] over loom's thread parker ([`ModelScheduler`]) and an [`Interrupts`]
//! hook ([`ModelInterrupts`]) that delivers a device's interrupt on the thread playing
//! CPU 0 wherever that CPU has interrupts enabled. Stand-ins under loom: the lock word
//! of `sync::Mutex` is loom's mutex (still masking interrupts through the hook, its
//! data still a tracked cell), a spin wait on the `RwLock` blocks on a loom condition
//! variable instead of spinning, and `ThreadParker` is a permit under a loom mutex.
//! The object lock (`RwLock`, its word and orderings), the `WaitQueue` and the
//! `Scheduler`/`Interrupts` calls are the code the kernel runs.
//!
//! L12 to L15 model those pieces directly:
//! - L12: a wake racing a sleeper between its check and its block is not lost, and no
//!   wake names the sleeper after it left its wait.
//! - L13: a wake for one key wakes only the threads sleeping on that key.
//! - L14: a completion delivered as an interrupt on CPU 0's thread (at a `disable` with
//!   the count at 0, at an `enable` bringing it back to 0, at a halted CPU's block)
//!   never lands while CPU 0 holds a spin lock: no deadlock, and the submitter asleep
//!   on its request is woken.
//! - L15: a waiting writer is not starved by a stream of overlapping readers, and no
//!   reader sees a write half done.
//!
//! L18 models the page daemon's reclaim (issue 18) against a fault and a truncate.
//!
//! L16 and L17 model read-ahead (issue 17), whose pages stay busy until its request's
//! completion runs on the device thread:
//! - L16: a synchronous read fault of a page read-ahead holds busy waits for that
//!   request instead of reading the page again, and a truncate below or through the
//!   page waits for it before it frees pages or zeroes the new last page's tail.
//! - L17: two readers feeding the object's one read-ahead state read each page once,
//!   and the read-ahead lock stays a leaf under the object lock (no deadlock beside a
//!   thread taking the object lock exclusively).
#![cfg(loom)]

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;

use genpager::buf::{Direction, IoRequest};
use genpager::cache::{DefaultCache, MapState};
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::sync::{
    Interrupts, Mutex as SpinMutex, RwLock as SpinRwLock, Scheduler, ThreadParker, Token,
    WaitQueue, set_interrupts, set_scheduler,
};
use genpager::{
    Access, BlockMap, DEFAULT_MAX_TRANSFER, DirtyStatus, Error, Fetched, Mapping, PAGE_SIZE,
    PageCache, PageFlags, PutFlags, Strategy, Tag, VmObject, Vnode, getpages, putpages, setsize,
    write,
};
use genpager::{Fault, GetFlags};
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

const P: u64 = PAGE_SIZE as u64;
const SECTOR: usize = 512;
/// What the syncer asks for: the dirty pages written back asynchronously.
const SYNCER: PutFlags = PutFlags::CLEANIT;
/// What fsync asks for: every dirty page written, synchronously.
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
/// [`FLUSH`], and the pages freed once written.
const FLUSH_AND_FREE: PutFlags = FLUSH.union(PutFlags::FREE);

// ---- the loom rig: a device completing on its own thread, and a file over it ----

/// Requests waiting for the device thread, and whether it should stop once idle.
#[derive(Default)]
struct Queue {
    requests: VecDeque<IoRequest>,
    closed: bool,
}

/// A RAM disk whose requests are completed by a loom thread ([`Device::run`]).
///
/// The queue is loom-modelled, so loom explores every point at which a completion can
/// land. The bytes and the statistics are only touched by the device thread while the
/// model runs (and by the main thread after joining it), so they need no modelling.
struct Device {
    queue: Mutex<Queue>,
    ready: Condvar,
    bytes: StdMutex<Vec<u8>>,
    /// How many times each sector was read.
    sector_reads: StdMutex<Vec<u32>>,
    /// (direction, file offset, length) of every request serviced.
    log: StdMutex<Vec<(Direction, u64, usize)>>,
}

impl Device {
    fn new(bytes: Vec<u8>) -> Self {
        let sectors = bytes.len() / SECTOR;
        Self {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            bytes: StdMutex::new(bytes),
            sector_reads: StdMutex::new(vec![0; sectors]),
            log: StdMutex::new(Vec::new()),
        }
    }

    /// The device thread: completes queued requests in order until closed and idle.
    fn run(&self) {
        loop {
            let mut queue = self.queue.lock().unwrap();
            while queue.requests.is_empty() && !queue.closed {
                queue = self.ready.wait(queue).unwrap();
            }
            let Some(request) = queue.requests.pop_front() else {
                return;
            };
            drop(queue);
            self.service(request);
        }
    }

    fn service(&self, mut request: IoRequest) {
        let at = request.block() as usize * SECTOR;
        let range = at..at + request.len();
        let result = {
            let mut bytes = self.bytes.lock().unwrap();
            match request.direction() {
                Direction::Read => {
                    let mut reads = self.sector_reads.lock().unwrap();
                    for sector in range.start / SECTOR..range.end.div_ceil(SECTOR) {
                        reads[sector] += 1;
                    }
                    request.fill(&bytes[range])
                }
                Direction::Write => request.gather(&mut bytes[range]),
            }
        };
        self.log
            .lock()
            .unwrap()
            .push((request.direction(), request.file_offset(), request.len()));
        request.complete(result);
    }

    fn close(&self) {
        self.queue.lock().unwrap().closed = true;
        self.ready.notify_all();
    }

    fn max_sector_reads(&self) -> u32 {
        self.sector_reads
            .lock()
            .unwrap()
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
    }

    fn requests(&self, direction: Direction) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|r| r.0 == direction).count()
    }
}

impl Strategy for Device {
    fn submit(&self, request: IoRequest) {
        self.queue.lock().unwrap().requests.push_back(request);
        self.ready.notify_all();
    }
}

/// A mount transaction that may sleep: one holder at a time (a deliberately strict
/// model of fstrans, so that taking it under the object lock deadlocks in loom).
#[derive(Default)]
struct Transaction {
    held: Mutex<bool>,
    released: Condvar,
}

impl Transaction {
    fn begin(&self) {
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        *held = true;
    }

    fn end(&self) {
        *self.held.lock().unwrap() = false;
        self.released.notify_all();
    }
}

/// How deep the calling loom thread is in the mount transaction and the journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Depth {
    transaction: u32,
    journal: u32,
}

loom::thread_local! {
    static DEPTH: std::cell::Cell<Depth> = std::cell::Cell::new(Depth::default());
}

fn depth() -> Depth {
    DEPTH.with(std::cell::Cell::get)
}

fn set_depth(depth: Depth) {
    DEPTH.with(|cell| cell.set(depth));
}

/// Every transaction and journal the calling thread began, it ended.
fn check_left_everything(who: &str) {
    assert_eq!(
        depth(),
        Depth::default(),
        "{who} left a transaction or the journal open"
    );
}

/// One file whose blocks lie contiguously from sector 0 of its [`Device`].
///
/// Its transaction and journal hooks check the lock order on every call, whether or
/// not the transaction is modelled: no node lock held by the calling thread, the
/// journal only inside a transaction, and each end matching a begin of the same
/// thread (the depths are per loom thread; [`spawn`] and [`Rig::finish`] check that
/// each thread ends with nothing open).
struct File {
    object: VmObject<DefaultCache>,
    device: Device,
    fs_bshift: u32,
    /// The device's largest transfer, in bytes.
    max_transfer: usize,
    transaction: Option<Transaction>,
    journal: bool,
    /// Broken lock-order rules, asserted empty by [`Rig::finish`]. Recorded rather
    /// than panicked on in the hook: a panic there unwinds through the node-lock guard
    /// the caller holds, whose drop then runs outside the model and aborts the run.
    violations: StdMutex<Vec<String>>,
}

impl File {
    fn violated(&self, rule: impl Into<String>) {
        let rule = rule.into();
        eprintln!("lock order: {rule} ({:?})", thread::current().id());
        self.violations.lock().unwrap().push(rule);
    }

    /// The lock order (README "Lock order"): the transaction and the journal come
    /// before the node lock, so neither may be begun by a thread holding it.
    fn check_no_node_lock(&self, hook: &str) {
        let held = genpager::sync::sleep_locks_held_by_this_thread();
        if held > 0 {
            self.violated(format!("{hook} on a thread holding {held} node lock(s)"));
        }
    }

    fn check_lock_order(&self) {
        let violations = self.violations.lock().unwrap();
        assert!(violations.is_empty(), "lock order broken: {violations:?}");
    }
}

impl BlockMap for File {
    fn bmap(&self, lbn: u64) -> genpager::Result<Mapping> {
        let blocks = (self.device.bytes.lock().unwrap().len() as u64) >> self.fs_bshift;
        if lbn >= blocks {
            return Ok(Mapping::hole(0));
        }
        Ok(Mapping::mapped(
            lbn << (self.fs_bshift - 9),
            blocks - lbn - 1,
        ))
    }

    fn alloc(&self, offset: u64, len: u64) -> genpager::Result {
        let capacity = self.device.bytes.lock().unwrap().len() as u64;
        if offset + len > capacity {
            return Err(Error::NoSpace);
        }
        Ok(())
    }
}

impl Vnode for File {
    type Cache = DefaultCache;
    type Map = File;
    type Dev = Device;

    fn object(&self) -> &VmObject<DefaultCache> {
        &self.object
    }

    fn block_map(&self) -> &File {
        self
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn fs_bshift(&self) -> u32 {
        self.fs_bshift
    }

    fn max_transfer(&self) -> usize {
        self.max_transfer
    }

    fn trans_begin(&self, wait: bool) -> genpager::Result {
        self.check_no_node_lock("trans_begin");
        let mut depth = depth();
        if depth.journal > 0 && depth.transaction == 0 {
            self.violated("trans_begin inside the journal");
        }
        if let Some(transaction) = &self.transaction {
            assert!(wait, "only the page daemon asks not to wait");
            // Nested entry by the same thread does not wait (as fstrans).
            if depth.transaction == 0 {
                transaction.begin();
            }
        }
        depth.transaction += 1;
        set_depth(depth);
        Ok(())
    }

    fn trans_end(&self) {
        let mut depth = depth();
        if depth.transaction == 0 {
            self.violated("trans_end without a trans_begin");
            return;
        }
        if depth.transaction == 1 && depth.journal > 0 {
            self.violated("the last trans_end before the journal's end");
        }
        depth.transaction -= 1;
        set_depth(depth);
        if let Some(transaction) = &self.transaction {
            if depth.transaction == 0 {
                transaction.end();
            }
        }
    }

    fn has_journal(&self) -> bool {
        self.journal
    }

    fn journal_begin(&self) -> genpager::Result {
        self.check_no_node_lock("journal_begin");
        let mut depth = depth();
        if depth.transaction == 0 {
            self.violated("journal_begin outside a transaction");
        }
        if depth.journal > 0 {
            self.violated("journal_begin inside the journal (JOURNALLOCKED not passed on)");
        }
        depth.journal += 1;
        set_depth(depth);
        Ok(())
    }

    fn journal_end(&self) {
        let mut depth = depth();
        if depth.journal == 0 {
            self.violated("journal_end without a journal_begin");
            return;
        }
        depth.journal -= 1;
        set_depth(depth);
    }
}

/// A running model: the file, the device thread, and the bytes the file should hold.
struct Rig {
    file: Arc<File>,
    device: Option<thread::JoinHandle<()>>,
}

/// Options of a rig.
struct Setup {
    fs_bshift: u32,
    /// The file's size and initial bytes (on the disk).
    data: Vec<u8>,
    /// Disk capacity in bytes (whole blocks; at least the file).
    capacity: usize,
    /// The device's largest transfer, in bytes.
    max_transfer: usize,
    /// Model the mount transaction as one holder at a time.
    transaction: bool,
    /// The mount has a journal (begun by writes, truncations and direct I/O).
    journal: bool,
}

impl Setup {
    fn new(fs_bshift: u32, data: Vec<u8>) -> Self {
        let block = 1usize << fs_bshift;
        let capacity = data.len().div_ceil(block).max(1) * block;
        Self {
            fs_bshift,
            data,
            capacity,
            max_transfer: DEFAULT_MAX_TRANSFER,
            transaction: false,
            journal: false,
        }
    }

    /// A disk of `bytes` (whole blocks; at least the file).
    fn capacity(self, bytes: usize) -> Self {
        Self {
            capacity: bytes,
            ..self
        }
    }

    /// A device whose largest transfer is `bytes` (a page: each page of a read-ahead
    /// window past the reader's own is a transfer of its own, read asynchronously).
    fn max_transfer(self, bytes: usize) -> Self {
        Self {
            max_transfer: bytes,
            ..self
        }
    }

    /// The mount transaction modelled as one holder at a time.
    fn with_transaction(self) -> Self {
        Self {
            transaction: true,
            ..self
        }
    }

    /// A mount with a journal.
    fn with_journal(self) -> Self {
        Self {
            journal: true,
            ..self
        }
    }

    fn start(self) -> Rig {
        let mut bytes = self.data.clone();
        bytes.resize(self.capacity, 0);
        let file = Arc::new(File {
            object: VmObject::new(DefaultCache::new(), self.data.len() as u64),
            device: Device::new(bytes),
            fs_bshift: self.fs_bshift,
            max_transfer: self.max_transfer,
            transaction: self.transaction.then(Transaction::default),
            journal: self.journal,
            violations: StdMutex::new(Vec::new()),
        });
        let device = {
            let file = file.clone();
            thread::spawn(move || file.device.run())
        };
        Rig {
            file,
            device: Some(device),
        }
    }
}

impl Rig {
    /// Flushes everything synchronously, stops the device once idle, and checks the
    /// final state: invariants of every resident page, and the disk against `model`.
    fn finish(mut self, model: &[u8]) -> Arc<File> {
        putpages(&self.file, 0, 0, FLUSH).expect("the final flush reports no error");
        check_left_everything("the model's main thread");
        self.file.check_lock_order();
        self.stop();
        check_invariants(&self.file);
        check_cache(&self.file, model);
        assert!(
            disk_bytes(&self.file) == model,
            "the disk does not hold the model"
        );
        self.file.clone()
    }

    /// Stops the device thread after it has completed everything queued.
    fn stop(&mut self) {
        self.file.device.close();
        if let Some(device) = self.device.take() {
            device.join().unwrap();
        }
    }
}

/// The file's bytes on the disk, up to its size.
fn disk_bytes(file: &File) -> Vec<u8> {
    let size = file.object.size() as usize;
    file.device.bytes.lock().unwrap()[..size].to_vec()
}

/// Position-dependent, never-zero bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) | 1)
        .collect()
}

/// With the device idle: no page busy, wanted, released, paged out or never read; no
/// page wholly past EOF; tags agree with page states; nothing in flight or latched.
fn check_invariants(file: &File) {
    let state = file.object().read();
    let cache = state.cache();
    let eof = state.size().div_ceil(P) * P;
    assert_eq!(state.writes_in_flight(), 0, "no write in flight");
    assert_eq!(
        state.pending_write_error(),
        None,
        "no error swallowed or left latched"
    );
    for page in cache.range(0..u64::MAX) {
        let at = page.offset();
        assert!(
            !page.flags.intersects(
                PageFlags::BUSY
                    | PageFlags::WANTED
                    | PageFlags::RELEASED
                    | PageFlags::PAGEOUT
                    | PageFlags::FAKE
            ),
            "page {at:#x} left {:?}",
            page.flags
        );
        assert!(at < eof, "page {at:#x} resident past EOF {eof:#x}");
        assert!(!page.in_writeback(), "page {at:#x} still in writeback");
        let tagged = cache.next_tagged(Tag::Dirty, at) == Some(at);
        assert_eq!(
            tagged,
            page.dirty() != DirtyStatus::Clean,
            "dirty tag of page {at:#x} disagrees with {:?}",
            page.dirty()
        );
    }
    assert!(
        !cache.any_tagged(Tag::Writeback),
        "a writeback tag outlived its write"
    );
    if let Some(at) = cache.next_tagged(Tag::Dirty, 0) {
        assert!(
            cache.lookup(at).is_some(),
            "dirty tag on a page that is gone"
        );
    }
}

/// Every resident page holds the model's bytes, and zeroes past EOF.
fn check_cache(file: &File, model: &[u8]) {
    let state = file.object().read();
    for page in state.cache().range(0..u64::MAX) {
        let at = page.offset() as usize;
        // SAFETY: the page is resident and not busy (checked by `check_invariants`),
        // and this thread holds the object lock, so nothing writes its bytes.
        let bytes = unsafe { std::slice::from_raw_parts(page.frame().as_ptr(), PAGE_SIZE) };
        let valid = model.len().saturating_sub(at).min(PAGE_SIZE);
        assert!(
            bytes[..valid] == model[at..at + valid],
            "page {at:#x} does not hold the model"
        );
        assert!(
            bytes[valid..].iter().all(|&b| b == 0),
            "page {at:#x} is zero past EOF"
        );
    }
}

// ---- the kernel hooks every model runs with ------------------------------------------

/// Tokens whose thread has left its last wait: waking one is a use after free in a
/// kernel (the waiter's stack and thread may be gone), so [`ModelScheduler`] refuses
/// to. Keyed by token; a token is forgotten when its thread (or a later thread at the
/// same address) names itself again.
static RETIRED: StdMutex<std::collections::BTreeSet<usize>> =
    StdMutex::new(std::collections::BTreeSet::new());

/// The [`Scheduler`] of the models: loom's thread parker, which also takes pending
/// interrupts (on the thread playing CPU 0) before it blocks, as a halted CPU does.
struct ModelScheduler;

impl Scheduler for ModelScheduler {
    fn current(&self) -> Token {
        let token = ThreadParker.current();
        RETIRED.lock().unwrap().remove(&token.0);
        token
    }

    fn block(&self, token: Token) {
        interrupt_point();
        ThreadParker.block(token);
    }

    fn wake(&self, token: Token) {
        assert!(
            !RETIRED.lock().unwrap().contains(&token.0),
            "woke a thread after it had left its wait"
        );
        ThreadParker.wake(token);
    }
}

/// Marks the calling thread as done waiting: a later wake of it is a bug.
fn retire_this_thread() {
    let token = ThreadParker.current();
    RETIRED.lock().unwrap().insert(token.0);
}

/// A device's interrupt line to one CPU: a pending flag, the handler to run, and the
/// CPU's thread (unparked when the interrupt is raised, as an interrupt wakes a halted
/// CPU).
struct Irq {
    pending: AtomicBool,
    handler: StdMutex<Option<Box<dyn FnOnce() + Send>>>,
    cpu: Token,
}

impl Irq {
    /// The interrupt line of the calling thread, which becomes its CPU.
    fn this_cpu() -> std::sync::Arc<Self> {
        let irq = std::sync::Arc::new(Self {
            pending: AtomicBool::new(false),
            handler: StdMutex::new(None),
            cpu: ThreadParker.current(),
        });
        CPU.with(|cpu| cpu.borrow_mut().irq = Some(irq.clone()));
        irq
    }

    /// Raises the interrupt (from the device's thread): `handler` runs on the CPU at
    /// its next point with interrupts enabled.
    fn raise(&self, handler: impl FnOnce() + Send + 'static) {
        *self.handler.lock().unwrap() = Some(Box::new(handler));
        // A read-modify-write, not a store. Loom orders the stores of one atomic only
        // partially: a plain store here is concurrent with the CPU's own swaps, and
        // each swap of the CPU may read the CPU's previous swap instead, forever. That
        // was why L14's interrupt never landed (the CPU polled past loom's branch
        // limit). A swap reads the CPU's newest swap, so its `true` is ordered after
        // it and the CPU's next swap must read it.
        self.pending.swap(true, Ordering::SeqCst);
        ThreadParker.wake(self.cpu);
    }
}

/// One loom thread's CPU: how deep its interrupts are disabled, and the interrupt line
/// it takes interrupts from (only the thread playing CPU 0 has one).
#[derive(Default)]
struct Cpu {
    depth: usize,
    irq: Option<std::sync::Arc<Irq>>,
}

loom::thread_local! {
    static CPU: std::cell::RefCell<Cpu> = std::cell::RefCell::new(Cpu::default());
}

/// Where an interrupt may land: if the calling thread is a CPU with interrupts enabled
/// and one pending, its handler runs here (with interrupts disabled, as in a handler).
/// The models also call it between their own steps: a real interrupt can land at any
/// instruction.
fn interrupt_point() {
    let irq = CPU.with(|cpu| {
        let cpu = cpu.borrow();
        if cpu.depth == 0 {
            cpu.irq.clone()
        } else {
            None
        }
    });
    let Some(irq) = irq else { return };
    if !irq.pending.swap(false, Ordering::SeqCst) {
        return;
    }
    let handler = irq
        .handler
        .lock()
        .unwrap()
        .take()
        .expect("a raised interrupt");
    CPU.with(|cpu| cpu.borrow_mut().depth += 1);
    handler();
    CPU.with(|cpu| cpu.borrow_mut().depth -= 1);
}

/// The [`Interrupts`] hook of the models: xv6's push_off/pop_off nesting per loom
/// thread; interrupts land when the count is zero at `disable` and when it returns to
/// zero at `enable`.
struct ModelInterrupts;

impl Interrupts for ModelInterrupts {
    fn disable(&self) {
        interrupt_point();
        CPU.with(|cpu| cpu.borrow_mut().depth += 1);
    }

    fn enable(&self) {
        CPU.with(|cpu| {
            let mut cpu = cpu.borrow_mut();
            assert!(cpu.depth > 0, "enable without disable");
            cpu.depth -= 1;
        });
        interrupt_point();
    }
}

/// Interrupts disabled on the calling thread right now.
fn interrupt_depth() -> usize {
    CPU.with(|cpu| cpu.borrow().depth)
}

/// Runs `f` under loom with the preemption bound of the environment, or 2.
fn model(f: impl Fn() + Sync + Send + 'static) {
    model_with_branches(100_000, f);
}

/// [`model`] with at most `max_branches` branches per execution.
fn model_with_branches(max_branches: usize, f: impl Fn() + Sync + Send + 'static) {
    set_scheduler(&ModelScheduler);
    set_interrupts(&ModelInterrupts);
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    builder.max_branches = builder.max_branches.max(max_branches);
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f()
    });
    eprintln!(
        "explored {} executions",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn read_busy(file: &Arc<File>, offset: u64, count: usize) -> genpager::Result<Vec<Vec<u8>>> {
    let fetched = getpages(file, Fault::read(offset, count))?;
    let pages = fetched
        .into_busy()
        .expect("a synchronous fault returns busy pages");
    Ok((0..pages.len()).map(|i| pages.bytes(i).to_vec()).collect())
}

/// Spawns a loom thread running `f` on a clone of the rig's file.
fn spawn<T: Send + 'static>(
    rig: &Rig,
    f: impl FnOnce(Arc<File>) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let file = rig.file.clone();
    thread::spawn(move || {
        let result = f(file);
        check_left_everything("a model thread");
        result
    })
}

// ---- what the models do again and again -----------------------------------------

/// The rig most models use: a file of one-page blocks holding `data`, its disk just
/// large enough, no transaction modelled, no journal.
fn rig(data: &[u8]) -> Rig {
    Setup::new(12, data.to_vec()).start()
}

/// Writes `len` bytes of pattern `seed` at offset 0 through the buffered write helper,
/// leaving their pages dirty, and returns them.
fn write_dirty(file: &Arc<File>, len: usize, seed: u8) -> Vec<u8> {
    let bytes = pattern(len, seed);
    write(file, 0, &bytes).expect("buffered write");
    bytes
}

/// Spawns the syncer: an asynchronous flush of the whole file.
fn spawn_syncer(rig: &Rig) -> thread::JoinHandle<genpager::Result> {
    spawn(rig, |file| putpages(&file, 0, 0, SYNCER))
}

/// Stores `bytes` at `at` of the page at `offset` after a synchronous write fault of
/// it, as a store through a mapping is retried after its fault.
fn store_after_write_fault(file: &Arc<File>, offset: u64, at: usize, bytes: &[u8]) {
    let fetched = getpages(file, Fault::write(offset, 1));
    let mut pages = fetched
        .expect("write fault")
        .into_writable()
        .expect("writable page");
    pages.bytes_mut(0)[at..at + bytes.len()].copy_from_slice(bytes);
}

/// `bytes` padded with zeroes to a whole page: what the page holding them, and the end
/// of file after them, reads as.
fn page_of(bytes: &[u8]) -> Vec<u8> {
    let mut page = bytes.to_vec();
    page.resize(PAGE_SIZE, 0);
    page
}

/// The bytes of the resident, idle page at `at`, if there is one.
fn cached_page(file: &File, at: u64) -> Option<Vec<u8>> {
    let state = file.object().read();
    let page = state.cache().lookup(at)?;
    assert!(
        !page.flags.intersects(PageFlags::BUSY | PageFlags::FAKE),
        "page {at:#x} left {:?}",
        page.flags
    );
    // SAFETY: the page is resident and neither busy nor unread, and this thread holds
    // the object lock, so nothing writes its bytes.
    let bytes = unsafe { std::slice::from_raw_parts(page.frame().as_ptr(), PAGE_SIZE) };
    Some(bytes.to_vec())
}

/// The device's requests so far, for a failure message: the order in which the
/// reads and writes reached the disk.
fn device_log(file: &File) -> Vec<(Direction, u64, usize)> {
    file.device.log.lock().unwrap().clone()
}

/// Sector-aligned memory for a direct transfer.
#[repr(C, align(4096))]
struct Aligned([u8; PAGE_SIZE]);

impl Aligned {
    /// A page of pattern `seed`.
    fn pattern(seed: u8) -> Box<Self> {
        Box::new(Aligned(pattern(PAGE_SIZE, seed).try_into().unwrap()))
    }
}

/// A direct write of `bytes` (aligned user memory) at offset 0 that moves every byte.
fn direct_write(file: &Arc<File>, bytes: &[u8]) {
    let iov = vec![IoVec::readonly(bytes)];
    let mut uio = Uio::new(0, Direction::Write, AddressSpace::User, iov).expect("uio");
    let progress = directio(file, &mut uio, DirectFlags::empty()).expect("directio");
    assert_eq!(progress.transferred, bytes.len(), "{:?}", progress.fallback);
}

/// A direct read into `buf` (aligned user memory) from offset 0 that fills it.
fn direct_read(file: &Arc<File>, buf: &mut [u8]) {
    let len = buf.len();
    let iov = vec![IoVec::new(buf)];
    let mut uio = Uio::new(0, Direction::Read, AddressSpace::User, iov).expect("uio");
    let progress = directio(file, &mut uio, DirectFlags::empty()).expect("directio");
    assert_eq!(progress.transferred, len, "{:?}", progress.fallback);
}

/// What a fault racing an extending write (L10) may see of the old last page: the end
/// of file before the write (`old`) or after it (`new`), zeroes past it.
fn assert_old_or_new_end(page: &[u8], old: &[u8], new: &[u8]) {
    assert!(
        page == page_of(old) || page == page_of(new),
        "the fault saw neither the old nor the new end of file"
    );
}

// ---- L1: read fault vs truncate ------------------------------------------------

/// A synchronous read fault computes its range from the size, drops the object lock
/// for the node lock, and must start over when a truncate shrank the file meanwhile
/// (G5): no page past the new EOF may be left resident and valid, and the tail of the
/// last page reads as zero.
#[test]
fn l1_read_fault_racing_truncate_starts_over_and_leaves_nothing_past_eof() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 1);
        let rig = rig(&data);
        let truncate = spawn(&rig, |file| setsize(&file, 100));
        let pages = read_busy(&rig.file, 0, 2).expect("page 0 stays inside the file");
        truncate.join().unwrap().expect("setsize");
        match pages.len() {
            // Faulted before the truncate: both pages as they were.
            2 => assert!(pages.concat() == data),
            // After it: the page holds the new EOF, zero beyond it.
            1 => assert!(pages[0] == data[..PAGE_SIZE] || pages[0] == page_of(&data[..100])),
            n => panic!("{n} pages"),
        }
        rig.finish(&data[..100]);
    });
}

// ---- L2: overlapping faults on a block larger than a page ----------------------

/// Two faults on one 8 KiB block while the syncer writes its first page back: a fault
/// of the second page widens to the whole block, which needs the first page, busy under
/// the write. It must let go of the second page before it waits and re-collect from the
/// lowest offset (G9): holding it while waiting deadlocks against the other fault,
/// which takes both pages in ascending order. Each page is read at most once.
#[test]
fn l2_overlapping_faults_on_a_large_block_take_pages_in_order_and_read_once() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 2);
        let rig = Setup::new(13, data.clone()).start();
        let newer = write_dirty(&rig.file, PAGE_SIZE, 22); // page 0 only
        let model_bytes = [&newer[..], &data[PAGE_SIZE..]].concat();
        let syncer = spawn_syncer(&rig);
        let whole = spawn(&rig, |file| read_busy(&file, 0, 2));
        let high = read_busy(&rig.file, P, 1).expect("fault of the second page");
        assert!(high == [data[PAGE_SIZE..].to_vec()], "second page data");
        let whole = whole.join().unwrap().expect("fault of the block");
        assert!(whole.concat() == model_bytes, "block data");
        syncer.join().unwrap().expect("syncer");
        let file = rig.finish(&model_bytes);
        assert!(
            file.device.max_sector_reads() <= 1,
            "a sector was read twice"
        );
        assert!(
            file.device.requests(Direction::Read) <= 1,
            "the second page was read twice"
        );
    });
}

// ---- L3: fault vs putpages(FREE) -----------------------------------------------

/// A flush that writes and frees pages while a fault holds (or waits for) them: the
/// flush must leave busy pages alone (they are the fault's), the fault must see the
/// newest data whether it comes from the cache or back from the disk, and nothing
/// written may be lost.
#[test]
fn l3_fault_racing_putpages_free_sees_the_data_and_frees_only_idle_pages() {
    model(|| {
        let rig = rig(&pattern(2 * PAGE_SIZE, 3));
        let newer = write_dirty(&rig.file, 2 * PAGE_SIZE, 33);
        let free = spawn(&rig, |file| putpages(&file, 0, 0, FLUSH_AND_FREE));
        let pages = read_busy(&rig.file, 0, 2).expect("fault");
        assert!(
            pages.concat() == newer,
            "the fault does not see the newest bytes"
        );
        free.join().unwrap().expect("flush and free");
        rig.finish(&newer);
    });
}

// ---- L4: SYNCIO waits for another thread's writeback ---------------------------

/// A synchronous flush that finds a page in writeback under someone else's
/// asynchronous write must wait for it (P15: the WRITEBACK tag keeps it from quick
/// exit, the in-flight count is waited for): when it returns, the data is on disk.
#[test]
fn l4_syncio_flush_waits_for_another_threads_async_writeback() {
    model(|| {
        let rig = rig(&pattern(PAGE_SIZE, 4));
        let newer = write_dirty(&rig.file, PAGE_SIZE, 44);
        let lazy = spawn_syncer(&rig);
        putpages(&rig.file, 0, 0, FLUSH).expect("fsync");
        assert!(
            disk_bytes(&rig.file) == newer,
            "fsync returned before the data was on disk"
        );
        lazy.join().unwrap().expect("async flush");
        rig.finish(&newer);
    });
}

// ---- L5: re-dirtied through a mapping while its write is in flight -------------

/// A page mapped writable is flushed asynchronously while another thread stores into
/// it through the mapping (or, when the store faults because the page is busy or
/// write-protected, through a write fault). Whatever the order, the store is never
/// lost: once the write has settled, the page is either clean with the store on the
/// disk, or still dirty.
#[test]
fn l5_store_through_a_mapping_during_writeback_leaves_the_page_dirty() {
    model(|| {
        let rig = rig(&pattern(PAGE_SIZE, 5));
        let older = write_dirty(&rig.file, PAGE_SIZE, 55);
        rig.file
            .object()
            .lock()
            .cache_mut()
            .map(0, MapState::Writable);
        let flush = spawn_syncer(&rig);

        let store = b"late";
        let stored = rig
            .file
            .object()
            .lock()
            .cache_mut()
            .write_through_mapping(0, 10, store);
        if stored.is_err() {
            // The store faulted: a write fault, then the store, as the kernel retries it.
            store_after_write_fault(&rig.file, 0, 10, store);
        }
        flush.join().unwrap().expect("async flush");
        let mut model_bytes = older.clone();
        model_bytes[10..14].copy_from_slice(store);

        // Once the write has settled (the page idle and out of writeback), the store
        // is on the disk or the page is still dirty.
        let settled = {
            let state = rig.file.object().read();
            let page = state.cache().lookup(0).expect("the page stays resident");
            let idle = !page.is_busy() && !page.in_writeback();
            let dirty = page.dirty() == DirtyStatus::Dirty
                || (page.dirty() == DirtyStatus::Unknown && state.cache().is_modified(0));
            idle.then_some((dirty, page.dirty()))
        };
        if let Some((dirty, status)) = settled {
            let on_disk = disk_bytes(&rig.file) == model_bytes;
            assert!(
                on_disk || dirty,
                "the store is neither on disk nor dirty: lost ({status:?})"
            );
        }
        rig.finish(&model_bytes);
    });
}

// ---- L6: putpages drops the object lock for its transaction --------------------

/// A cleaning flush must enter the mount transaction without the object lock (lock
/// order: transaction before object lock) and look again after re-taking it, while
/// another thread, inside its own transactions, dirties one page by a write fault and
/// flushes and frees the other.
#[test]
fn l6_putpages_takes_its_transaction_unlocked_and_retries_while_pages_change() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 6);
        let rig = Setup::new(12, data).with_transaction().start();
        let older = write_dirty(&rig.file, 2 * PAGE_SIZE, 66);
        let flush = spawn(&rig, |file| putpages(&file, 0, 0, FLUSH));

        store_after_write_fault(&rig.file, P, 0, b"new!");
        putpages(&rig.file, 0, P, FLUSH_AND_FREE).expect("flush and free page 0");
        flush.join().unwrap().expect("flush");

        let mut model_bytes = older.clone();
        model_bytes[PAGE_SIZE..PAGE_SIZE + 4].copy_from_slice(b"new!");
        assert!(
            disk_bytes(&rig.file)[..PAGE_SIZE] == older[..PAGE_SIZE],
            "page 0 was not written"
        );
        rig.finish(&model_bytes);
    });
}

// ---- L7: async completion vs a sleeper on a WANTED page ------------------------

/// Read-ahead leaves a page busy until its completion runs on the device thread; a
/// synchronous fault of the same page marks it WANTED and sleeps. The completion must
/// wake it (no lost wakeup), the sleeper must see the data, and the page is read once.
#[test]
fn l7_async_completion_wakes_a_thread_sleeping_on_a_wanted_page() {
    model(|| {
        let data = pattern(PAGE_SIZE, 7);
        let rig = rig(&data);
        let ahead = spawn(&rig, |file| {
            match getpages(&file, Fault::read_ahead(0, 1)) {
                Ok(Fetched::Started) | Err(Error::Busy) => {}
                Ok(_) => panic!("read-ahead returned pages"),
                Err(err) => panic!("read-ahead failed: {err}"),
            }
        });
        let pages = read_busy(&rig.file, 0, 1).expect("fault");
        assert!(pages == [data.clone()], "the sleeper sees the data");
        ahead.join().unwrap();
        let file = rig.finish(&data);
        assert_eq!(file.device.max_sector_reads(), 1, "no sector read twice");
    });
}

// ---- L8: directio vs a cached dirty page ---------------------------------------

/// A direct write over a page that is cached dirty while the syncer starts writing it
/// back asynchronously. The direct write flushes and invalidates the cached page first
/// (D6), which must include waiting for the syncer's write in flight: otherwise the
/// stale page lands on the disk after the direct write, or stays cached over it.
#[test]
fn l8_directio_write_over_a_dirty_page_in_writeback_is_not_overwritten() {
    model(|| {
        let rig = rig(&pattern(PAGE_SIZE, 8));
        write_dirty(&rig.file, PAGE_SIZE, 88);
        let syncer = spawn_syncer(&rig);

        let direct = Aligned::pattern(188);
        direct_write(&rig.file, &direct.0);
        assert!(
            disk_bytes(&rig.file) == direct.0,
            "the direct write is on the disk"
        );
        syncer.join().unwrap().expect("syncer");
        rig.finish(&direct.0);
    });
}

/// A direct read over a page that is cached dirty while the syncer writes it back:
/// the direct read flushes the range first, which must wait for the syncer's write in
/// flight (P15), or the read returns the disk's old bytes.
#[test]
fn l8_directio_read_waits_for_a_writeback_in_flight() {
    model(|| {
        let rig = rig(&pattern(PAGE_SIZE, 18));
        let newer = write_dirty(&rig.file, PAGE_SIZE, 118);
        let syncer = spawn_syncer(&rig);

        let mut buffer = Box::new(Aligned([0; PAGE_SIZE]));
        direct_read(&rig.file, &mut buffer.0);
        assert!(
            buffer.0[..] == newer[..],
            "the direct read missed the cached write"
        );
        syncer.join().unwrap().expect("syncer");
        rig.finish(&newer);
    });
}

/// A buffered read of a page racing a direct write of it. The direct write holds the
/// node lock exclusively from before its flush until its transfer is done, so the
/// read either finishes first (and its page is then flushed and freed) or reads after
/// the transfer. With the lock taken only around the transfer (shared), a fault
/// between the invalidation and the transfer caches the old bytes, and the cache
/// keeps serving them after the direct write has returned.
#[test]
fn l8_read_racing_a_direct_write_caches_no_stale_bytes() {
    model(|| {
        let data = pattern(PAGE_SIZE, 28);
        let rig = rig(&data);
        let reader = spawn(&rig, |file| {
            let mut buf = vec![0; PAGE_SIZE];
            let n = genpager::read(&file, 0, &mut buf).expect("buffered read");
            assert_eq!(n, PAGE_SIZE, "a whole page inside the file");
            buf
        });

        let direct = Aligned::pattern(128);
        direct_write(&rig.file, &direct.0);
        let seen = reader.join().unwrap();
        assert!(
            seen == data || seen == direct.0,
            "the read saw neither the old bytes nor the direct write's"
        );

        // The direct write has returned: neither the cache nor a new read may show
        // the bytes it replaced.
        if let Some(cached) = cached_page(&rig.file, 0) {
            assert!(
                cached == direct.0,
                "a stale page outlived the direct write (read saw {}; device: {:?})",
                if seen == data { "old" } else { "new" },
                device_log(&rig.file)
            );
        }
        let mut again = vec![0; PAGE_SIZE];
        genpager::read(&rig.file, 0, &mut again).expect("read again");
        assert!(
            again == direct.0,
            "a read after the direct write returned old bytes (device: {:?})",
            device_log(&rig.file)
        );
        rig.finish(&direct.0);
    });
}

/// A buffered write of a few bytes of a page racing a direct write of another part
/// (the first sector) of the same page. Both hold the node lock exclusively, so they
/// run one after the other: the write's page is flushed before the direct write, or
/// read back after it. With the direct write holding it only around its transfer, the
/// buffered write can fault the page between the invalidation and the transfer
/// (reading the old first sector), dirty it, and its later write-back puts the old
/// first sector over the direct write's.
#[test]
fn l8_buffered_write_racing_a_direct_write_of_the_same_page_keeps_both() {
    model(|| {
        let data = pattern(PAGE_SIZE, 38);
        let rig = rig(&data);
        let buffered = b"buff";
        let writer = spawn(&rig, move |file| write(&file, 1000, buffered));

        let direct = Aligned::pattern(138);
        direct_write(&rig.file, &direct.0[..SECTOR]);
        assert_eq!(writer.join().unwrap().expect("buffered write"), 4);

        putpages(&rig.file, 0, 0, FLUSH_AND_FREE).expect("flush and evict");
        let mut model_bytes = data.clone();
        model_bytes[..SECTOR].copy_from_slice(&direct.0[..SECTOR]);
        model_bytes[1000..1004].copy_from_slice(buffered);
        let disk = disk_bytes(&rig.file);
        assert!(
            disk[..SECTOR] == model_bytes[..SECTOR],
            "the direct write was overwritten by the old sector (device: {:?})",
            device_log(&rig.file)
        );
        assert!(
            disk[1000..1004] == buffered[..],
            "the buffered write was lost (device: {:?})",
            device_log(&rig.file)
        );
        rig.finish(&model_bytes);
    });
}

// ---- L9: the locked fast path vs truncate --------------------------------------

/// The fast path never sleeps, so it cannot wait for a truncate; it must back off
/// (EBUSY) while one holds the node lock (G1). Otherwise it could hand out the new
/// last page after the size shrank but before its tail was zeroed: bytes past EOF
/// would show through a mapping.
#[test]
fn l9_locked_fast_path_backs_off_while_a_truncate_is_under_way() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 9);
        let rig = rig(&data);
        read_busy(&rig.file, 0, 2).expect("make both pages resident");
        let truncate = spawn(&rig, |file| setsize(&file, 100));
        match getpages(&rig.file, Fault::resident(0, 2, Access::Read)) {
            Ok(Fetched::Resident(pages)) => {
                // The size cannot be read under the handle (loom's RwLock is not
                // recursive), but the handle shows it: the fast path only looks below
                // the memory EOF, and page 1 is resident and idle for as long as the
                // size is 8 KiB (setsize shrinks the size before it frees page 1).
                let size = if pages.bytes(1).is_some() {
                    2 * PAGE_SIZE
                } else {
                    100
                };
                let bytes = pages.bytes(0).expect("the center page");
                let valid = size.min(PAGE_SIZE);
                assert!(bytes[..valid] == data[..valid], "fast path data");
                assert!(
                    bytes[valid..].iter().all(|&b| b == 0),
                    "the fast path handed out stale bytes past EOF {size}"
                );
            }
            Ok(_) => panic!("the fast path returns resident pages"),
            Err(Error::Busy) => {}
            Err(err) => panic!("fast path: {err}"),
        }
        truncate.join().unwrap().expect("setsize");
        rig.finish(&data[..100]);
    });
}

// ---- L10: a fault of the old last page vs an extending write -------------------

/// Issue #6: a write that extends the file fills the old last page past the old end,
/// releases it dirty, and only then raised the size. In that window a flush could
/// write the page and free it, and a fault of it (still inside the old size) read it
/// back from the disk only up to the old end, zero-filling the rest as past the disk
/// end: the write's bytes were lost from the cache (and from the disk once the page
/// was dirtied again). The size must grow before the written pages are released, and
/// a fault that slept for a page must look at the size again before reading.
#[test]
fn l10_fault_racing_an_extending_write_sees_the_written_bytes_past_the_old_end() {
    model(|| {
        let data = pattern(100, 10);
        let rig = Setup::new(12, data.clone()).capacity(PAGE_SIZE).start();
        let newer = pattern(200, 110);
        let other = spawn(&rig, |file| {
            putpages(&file, 0, 0, FLUSH_AND_FREE).expect("flush and free");
            read_busy(&file, 0, 1).expect("page 0 is inside the file")
        });
        write(&rig.file, 100, &newer).expect("extending write");
        let page = other.join().unwrap().remove(0);
        let model_bytes = [&data[..], &newer[..]].concat();
        assert_old_or_new_end(&page, &data, &model_bytes);
        rig.finish(&model_bytes);
    });
}

/// The other half of L10: a fault that computed its bounds from the old size and then
/// slept on the old last page while the extending write held it, must not read that
/// page with the old disk end once it wakes: a flush may have written and freed the
/// page in between, and the write's bytes are then on the disk past the old end.
#[test]
fn l10_fault_waking_after_an_extending_write_looks_at_the_size_again() {
    model(|| {
        let data = pattern(100, 11);
        let rig = Setup::new(12, data.clone()).capacity(PAGE_SIZE).start();
        let newer = pattern(200, 111);
        let flush = spawn(&rig, |file| {
            putpages(&file, 0, 0, FLUSH_AND_FREE).expect("flush and free")
        });
        let fault = spawn(&rig, |file| {
            read_busy(&file, 0, 1).expect("page 0 is inside the file")
        });
        write(&rig.file, 100, &newer).expect("extending write");
        let page = fault.join().unwrap().remove(0);
        flush.join().unwrap();
        let model_bytes = [&data[..], &newer[..]].concat();
        assert_old_or_new_end(&page, &data, &model_bytes);
        rig.finish(&model_bytes);
    });
}

// ---- L11: the lock order of a truncate racing a fault -------------------------

/// A shrink to the middle of a resident page (setsize zeroes the page's tail) racing
/// a read fault of it, on a mount with a journal. The rig's hooks check the lock
/// order in every interleaving: setsize enters the transaction and the journal before
/// it takes the node lock exclusively, and nothing it calls under that lock (the tail
/// zeroing, a fault with `GLOCKHELD`) enters them again; the fault enters the
/// transaction before it takes the node lock shared; every begin has one end on the
/// same thread. The transaction itself is not modelled as exclusive here, so the two
/// really race on the node lock.
#[test]
fn l11_truncate_to_mid_page_racing_a_read_fault_keeps_the_lock_order() {
    model(|| {
        let data = pattern(PAGE_SIZE, 12);
        let rig = Setup::new(12, data.clone()).with_journal().start();
        read_busy(&rig.file, 0, 1).expect("make the page resident");
        let truncate = spawn(&rig, |file| setsize(&file, 100));
        let pages = read_busy(&rig.file, 0, 1).expect("page 0 stays inside the file");
        truncate.join().unwrap().expect("setsize");
        assert!(
            pages[0] == data || pages[0] == page_of(&data[..100]),
            "the fault saw a half-zeroed page"
        );
        rig.finish(&data[..100]);
    });
}

// ---- the waiting and interrupt machinery itself ----------------------------------
//
// Each of L12-L15 fails when the protection it checks is removed from src/sync.rs
// (mutation applied, model run, mutation reverted; issue 16):
//
// | model | mutation                                            | loom's report                                   |
// |-------|-----------------------------------------------------|-------------------------------------------------|
// | L12   | `sleep_unless` asks `ready` (drops the caller's     | `deadlock; threads = [(Id(0), Blocked), (Id(1), |
// |       | guard) before linking the node                      | Blocked)]`: the wake found no node, lost        |
// | L13   | `wake_where` ignores the key filter                 | "a sleeper was woken by another key's wake"     |
// | L14   | `RwLock::write` does not call `Interrupts::disable` | `deadlock; threads = [(Id(0), Blocked),         |
// |       |                                                     | (Id(1), Terminated)]`: the handler spins on the |
// |       |                                                     | object lock its own CPU holds                   |
// | L15   | readers ignore the writer-waiting bit               | "Model exceeded maximum number of branches":    |
// |       |                                                     | the reader stream never lets the writer in      |

/// The key the channel models sleep on (any key would do).
const KEY: u64 = 3;

/// A condition under a genpager spin lock and the channel its waiters sleep on.
struct Condition<T> {
    state: SpinMutex<T>,
    channel: WaitQueue,
}

impl<T> Condition<T> {
    fn new(state: T) -> Arc<Self> {
        Arc::new(Self {
            state: SpinMutex::new(state),
            channel: WaitQueue::new(),
        })
    }

    /// Sleeps on `key` until `ready` holds; returns how many times it slept.
    fn wait_until(&self, key: u64, ready: impl Fn(&T) -> bool) -> usize {
        let mut sleeps = 0;
        loop {
            let state = self.state.lock();
            if ready(&state) {
                return sleeps;
            }
            sleeps += 1;
            self.channel.sleep(key, state);
        }
    }
}

#[test]
fn l12_a_wake_racing_a_sleeper_between_its_check_and_its_block_is_not_lost() {
    model(|| {
        let condition = Condition::new(false);
        let waiter = {
            let condition = condition.clone();
            thread::spawn(move || {
                condition.wait_until(KEY, |&set| set);
                // From here on the thread may be gone: no wake may name it any more.
                retire_this_thread();
            })
        };
        *condition.state.lock() = true;
        condition.channel.wake(KEY);
        waiter.join().unwrap();
        assert_eq!(condition.channel.sleepers(KEY), 0);
    });
}

#[test]
fn l13_a_wake_for_one_key_wakes_only_the_threads_sleeping_on_it() {
    model(|| {
        let condition = Condition::new([false; 2]);
        let sleepers: Vec<_> = (0..2)
            .map(|key| {
                let condition = condition.clone();
                thread::spawn(move || condition.wait_until(key as u64, |set| set[key]))
            })
            .collect();
        let mut sleeps = Vec::new();
        for (key, sleeper) in sleepers.into_iter().enumerate() {
            condition.state.lock()[key] = true;
            assert!(condition.channel.wake(key as u64) <= 1);
            sleeps.push(sleeper.join().unwrap());
        }
        // Each sleeper sleeps at most once: only the wake of its own key ends a
        // sleep, and that comes after its condition holds.
        assert!(
            sleeps.iter().all(|&count| count <= 1),
            "a sleeper was woken by another key's wake: slept {sleeps:?} times"
        );
    });
}

/// The object lock, a request's state and its wait channel, as a completion sees them.
struct Completion {
    object: SpinRwLock<u32>,
    request: Condition<bool>,
}

#[test]
fn l14_a_completion_in_an_interrupt_never_spins_on_a_lock_its_cpu_holds() {
    model(|| {
        let shared = Arc::new(Completion {
            object: SpinRwLock::new(0),
            request: Condition {
                state: SpinMutex::new(false),
                channel: WaitQueue::new(),
            },
        });
        // This thread is CPU 0; the device raises its interrupt from its own thread.
        let irq = Irq::this_cpu();
        let device = {
            let shared = shared.clone();
            thread::spawn(move || {
                irq.raise(move || {
                    // The completion, in the handler: settles the pages under the
                    // object lock, posts the outcome and wakes the submitter.
                    *shared.object.write() += 1;
                    *shared.request.state.lock() = true;
                    shared.request.channel.wake(KEY);
                });
            })
        };
        // CPU 0 takes the object lock both ways while the interrupt may be pending:
        // an interrupt can land at any instruction, but not while a lock masks it.
        {
            let mut object = shared.object.write();
            interrupt_point();
            *object += 10;
        }
        {
            let object = shared.object.read();
            interrupt_point();
            assert!(*object >= 10);
        }
        // The submitter sleeps on its request (the WaitQueue and the Scheduler hook):
        // the completion lands at an interrupt point of the wait (a lock's last
        // enable, or the block, where a halted CPU takes interrupts) and wakes it.
        let sleeps = shared.request.wait_until(KEY, |&posted| posted);
        assert!(sleeps <= 1, "woken only by the completion");
        assert_eq!(interrupt_depth(), 0, "every disable was undone");
        device.join().unwrap();
        assert_eq!(*shared.object.read(), 11, "the handler ran once");
        CPU.with(|cpu| cpu.borrow_mut().irq = None);
    });
}

#[test]
fn l15_a_waiting_writer_is_not_starved_by_a_stream_of_readers() {
    // With readers preferred the stream never lets the writer in: the model then
    // spins until loom's branch limit, so keep the limit small.
    model_with_branches(20_000, || {
        let lock = Arc::new(SpinRwLock::new((0u32, 0u32)));
        let first = lock.read();
        let writer = {
            let lock = lock.clone();
            thread::spawn(move || {
                let mut pair = lock.write();
                pair.0 += 1;
                pair.1 += 1;
            })
        };
        let stream = {
            let lock = lock.clone();
            thread::spawn(move || {
                // Readers overlapping one another: each read starts while the one
                // before (held across a yield) may still be held.
                let mut reads = 0;
                loop {
                    let pair = lock.read();
                    thread::yield_now();
                    assert_eq!(pair.0, pair.1, "a reader saw a write half done");
                    reads += 1;
                    if pair.0 == 1 {
                        return reads;
                    }
                }
            })
        };
        thread::yield_now();
        drop(first);
        writer.join().unwrap();
        assert!(stream.join().unwrap() >= 1);
        assert_eq!(*lock.read(), (1, 1));
    });
}

// ---- read-ahead: pages busy under an asynchronous read ---------------------------
//
// What the bound covers (LOOM_MAX_PREEMPTIONS=2): a two-page file of one-page blocks,
// one read-ahead request group (both pages in L16; page 1 alone in L17's readers,
// whose device transfers a page at a time; none in L17's lock order, whose first read
// reads both pages along in one synchronous request), one fault, read or truncate per
// thread, at most two preemptions per execution (any number of switches where a
// thread blocks), the device completing in order on its own thread. Each of L16-L17
// fails when a protection it checks is removed from src/ (mutation applied, model
// run, mutation reverted; issue 17). M2 and M3 first trip the library's own debug
// assertion (an unbusy of a page its caller does not hold); their second report is
// with `RUSTFLAGS="--cfg loom"`, without debug assertions, where the models' own
// checks fire.
//
// | mutation                                    | model       | report                                       |
// |---------------------------------------------|-------------|----------------------------------------------|
// | M1 `read_ahead_done` wakes nobody (its      | L16 (both)  | `deadlock`: B, C and the idle device blocked |
// |    `wake_if` dropped)                       | L17 readers | `deadlock`: the reader of page 1 and the     |
// |                                             |             | idle device blocked                          |
// |                                             | L17 order   | passes: its first read reads page 1 along    |
// |                                             |             | with page 0, no read-ahead completes         |
// | M2 read-ahead clears `BUSY` on the pages it | L16, L17    | debug: `assertion failed: page.is_busy()`    |
// |    collected (still `FAKE`) before reading  | readers     |                                              |
// |                                             | L16 (both)  | "page 1 was read twice" (device: [(Read, 0,  |
// |                                             |             | 8192), (Read, 4096, 4096), ...])             |
// |                                             | L17 readers | "a sector was read twice" (device: [(Read,   |
// |                                             |             | 4096, 4096), (Read, 0, 4096), (Read, 4096,   |
// |                                             |             | 4096)])                                      |
// |                                             | L17 order   | passes (no asynchronous read-ahead)          |
// | M3 `find_pages` with `Wait::Sleep` takes a  | all four    | debug: `assertion failed: page.is_busy()`    |
// |    busy page without waiting for it         | L16 (both)  | "page 1 was read twice"                      |
// |                                             | L17 readers | "a sector was read twice"                    |
// |                                             | L17 order   | passes (its pages are valid: taken twice,    |
// |                                             |             | nothing is read again)                       |
// | M4 `setsize` leaves busy pages past the new | L16 below   | "page 0x1000 resident past EOF 0x1000"       |
// |    end (no `free_range_waiting`)            | others      | pass (L16 through frees no page, L17 does    |
// |                                             |             | not truncate)                                |
// | M5 `zero_resident_tail` skips a busy new    | L16 through | "page 0x1000 is zero past EOF" fails: the    |
// |    last page                                |             | completion put old bytes past the new end    |
// |                                             | L16 below   | passes: page 0 settles with page 1, which    |
// |                                             |             | setsize has waited for before the zeroing    |
// |                                             | L17 (both)  | pass (no truncate)                           |
// | M6 `plan`'s quiet check takes the object    | L17 order   | `deadlock`: all four threads blocked         |
// |    lock (`size()`) under the read-ahead     | others      | pass: no third thread takes the object lock  |
// |    lock                                     |             | exclusively while both readers plan          |
// | M7 `read_ahead_done` does not zero what the | L16 below   | "page 0x0 is zero past EOF" fails: read-     |
// |    last sector brought from past disk EOF   |             | ahead after the truncate cached old bytes    |
// |                                             | others      | pass (no read-ahead past a shrunk end)       |

/// The device's read requests that covered any byte of the page at `offset`.
fn reads_of_page(file: &File, offset: u64) -> usize {
    let log = file.device.log.lock().unwrap();
    log.iter()
        .filter(|&&(direction, at, len)| {
            direction == Direction::Read && at < offset + P && offset < at + len as u64
        })
        .count()
}

/// What read-ahead's `start` issues for one transfer of a window: pages 0 and 1, read
/// asynchronously. Busy: a fault held page 1, and read-ahead left the transfer to it.
fn read_ahead_both_pages(file: &Arc<File>) {
    let fault = Fault::read_ahead(0, 2).with_flags(GetFlags::NOREADAHEAD | GetFlags::NOTIMESTAMP);
    match getpages(file, fault) {
        Ok(Fetched::Started) | Err(Error::Busy) => {}
        Ok(_) => panic!("read-ahead returned pages"),
        Err(err) => panic!("read-ahead failed: {err}"),
    }
}

/// L16's synchronous read fault of page 1 (no read-ahead of its own), racing a
/// truncate to `new_size`: before the truncate it sees the page as it was; after it,
/// the new end of file and zeroes past it, or [`Error::Invalid`] if the page now lies
/// past the end of file (G5).
fn fault_page_1_racing_truncate(file: &Arc<File>, data: &[u8], new_size: usize) {
    let fault = Fault::read(P, 1).with_flags(GetFlags::NOREADAHEAD);
    let new_end = (new_size > PAGE_SIZE).then(|| page_of(&data[PAGE_SIZE..new_size]));
    match getpages(file, fault) {
        Ok(Fetched::Busy(pages)) => assert!(
            pages.bytes(0) == &data[PAGE_SIZE..] || Some(pages.bytes(0)) == new_end.as_deref(),
            "the fault of page 1 saw neither the file's bytes nor its new end (device: {:?})",
            device_log(file)
        ),
        Ok(_) => panic!("a synchronous read fault returns busy pages"),
        Err(Error::Invalid) if new_size <= PAGE_SIZE => {}
        Err(err) => panic!("fault of page 1: {err}"),
    }
}

/// L16's end: nothing busy, nothing past the new end resident, the cache and the disk
/// holding the truncated file, and page 1 read by one request at most (a fault that
/// found it under read-ahead waited for that request instead of reading it again).
fn finish_l16(rig: Rig, data: &[u8], new_size: usize) {
    let file = rig.finish(&data[..new_size]);
    assert!(
        reads_of_page(&file, P) <= 1,
        "page 1 was read twice: the fault read a page read-ahead held busy (device: {:?})",
        device_log(&file)
    );
    assert!(
        file.device.max_sector_reads() <= 1,
        "a sector was read twice (device: {:?})",
        device_log(&file)
    );
}

/// Read-ahead (thread A) collects pages 0 and 1 busy, submits one request for both and
/// returns; the request's completion, on the device thread, makes them valid and
/// unbusies them. A synchronous read fault of page 1 (this thread, B, `NOREADAHEAD`)
/// racing it must wait for that request rather than read the page itself (page 1 is
/// read by one request at most); if it holds page 1 first, read-ahead backs off. A
/// truncate to 100 bytes (thread C), which drops page 1 and cuts through page 0, must
/// wait for the read-ahead's pages before it frees page 1 and zeroes page 0's tail: a
/// completion landing after either would fill a freed frame or put old bytes past the
/// new end. Read-ahead that runs after the truncate (or measured the size before it
/// and starts over) reads page 0 alone, and zeroes what its sector brings from past
/// the new end (the disk still holds the old bytes there). The fault sees page 1 whole (it ran
/// before the truncate) or gets [`Error::Invalid`] (after); nothing stays busy and
/// nothing past the new end stays resident.
#[test]
fn l16_read_fault_under_read_ahead_racing_truncate_below_it() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 16);
        let rig = rig(&data);
        let ahead = spawn(&rig, |file| read_ahead_both_pages(&file));
        let truncate = spawn(&rig, |file| setsize(&file, 100));
        fault_page_1_racing_truncate(&rig.file, &data, 100);
        ahead.join().unwrap();
        truncate.join().unwrap().expect("setsize");
        finish_l16(rig, &data, 100);
    });
}

/// L16 with the truncate cutting through page 1, the page the fault wants, once
/// read-ahead of both pages has started (its request in flight or done): no page is
/// freed, so the truncate's only wait for read-ahead is its zeroing of the new last
/// page's tail, which must not run while that page's read is in flight (the
/// completion would put the old bytes back past the new end). The fault sees page 1
/// whole, or its first 100 bytes and zeroes. Read-ahead starts on this thread before
/// the others: the race of read-ahead with the fault is the model above's.
#[test]
fn l16_read_fault_under_read_ahead_racing_truncate_through_it() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 26);
        let rig = rig(&data);
        let new_size = PAGE_SIZE + 100;
        read_ahead_both_pages(&rig.file);
        let truncate = spawn(&rig, move |file| setsize(&file, new_size as u64));
        fault_page_1_racing_truncate(&rig.file, &data, new_size);
        truncate.join().unwrap().expect("setsize");
        finish_l16(rig, &data, new_size);
    });
}

/// Reads the page at `offset` through [`read`](genpager::read), which feeds the
/// object's read-ahead; the page lies inside the file.
fn read_page(file: &Arc<File>, offset: u64) -> Vec<u8> {
    let mut buf = vec![0; PAGE_SIZE];
    let n = genpager::read(file, offset, &mut buf).expect("read");
    assert_eq!(n, PAGE_SIZE, "page {offset:#x} lies inside the file");
    buf
}

/// Two readers of adjacent pages through [`read`](genpager::read), neither page
/// resident, both feeding the object's one read-ahead state, on a device whose
/// largest transfer is one page. Whichever plans first from page 0 opens a window
/// over both pages: its fault reads page 0, and once it is done, read-ahead starts
/// page 1 as a transfer of its own, asynchronously (its completion, on the device
/// thread, takes the object lock exclusively). The reader of page 1 plans too (the
/// marker, a random miss or nothing), then waits for page 1 if read-ahead holds it,
/// or reads it itself (read-ahead then backs off from the busy page, or skips it
/// resident). No interleaving deadlocks, each reader gets its page's bytes, and no
/// page is read twice.
#[test]
fn l17_two_readers_feeding_the_objects_read_ahead_read_each_page_once() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 17);
        let rig = Setup::new(12, data.clone()).max_transfer(PAGE_SIZE).start();
        let first = spawn(&rig, |file| read_page(&file, 0));
        assert!(
            read_page(&rig.file, P) == data[PAGE_SIZE..],
            "page 1 read other bytes"
        );
        assert!(
            first.join().unwrap() == data[..PAGE_SIZE],
            "page 0 read other bytes"
        );
        let file = rig.finish(&data);
        assert!(
            file.device.max_sector_reads() <= 1,
            "a sector was read twice (device: {:?})",
            device_log(&file)
        );
    });
}

/// The lock order of the object's read-ahead state: planning takes the object lock
/// (shared) and then the read-ahead lock, a leaf; an access that needs no plan takes
/// the read-ahead lock alone. Both pages are resident after a first read (which opened
/// a window over them with its marker at page 1, and read page 1 along with page 0).
/// This thread reads page 1, reaching
/// the marker, so it plans (the next window would lie past the end of file); another
/// reader reads page 0, a quiet access; a synchronous fault of page 0 takes the object
/// lock exclusively, and while it waits, new shared takers wait behind it (the object
/// lock prefers writers). Were the read-ahead lock ever held while taking the object
/// lock, the quiet reader could hold it waiting behind the fault, which waits for the
/// planner, which waits for the read-ahead lock.
#[test]
fn l17_readers_planning_read_ahead_beside_an_exclusive_fault_keep_the_lock_order() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 27);
        let rig = rig(&data);
        read_page(&rig.file, 0);
        assert_eq!(rig.file.object().read_ahead().window(), 0..2);
        let quiet = spawn(&rig, |file| read_page(&file, 0));
        let exclusive = spawn(&rig, |file| {
            let fault = Fault::read(0, 1).with_flags(GetFlags::NOREADAHEAD);
            let Ok(Fetched::Busy(pages)) = getpages(&file, fault) else {
                panic!("a synchronous read fault returns busy pages");
            };
            pages.bytes(0).to_vec()
        });
        assert!(
            read_page(&rig.file, P) == data[PAGE_SIZE..],
            "page 1 read other bytes"
        );
        assert!(
            quiet.join().unwrap() == data[..PAGE_SIZE],
            "page 0 read other bytes"
        );
        assert!(
            exclusive.join().unwrap() == data[..PAGE_SIZE],
            "the fault saw other bytes"
        );
        assert_eq!(
            rig.file.object().read_ahead().window(),
            0..2,
            "the marker found the end of file: no window past it"
        );
        let file = rig.finish(&data);
        assert_eq!(
            file.device.requests(Direction::Read),
            1,
            "the first read's window was the only read"
        );
    });
}

// ---- L18: the page daemon's reclaim (issue 18) -------------------------------------

/// The page daemon reclaims a two-page file (page 0 resident and clean) while a read
/// fault takes page 0 and a truncate cuts the file to 100 bytes (busying page 0 to
/// zero its tail). The reclaimer only try-locks the object and skips busy pages, so no
/// interleaving deadlocks; the fault sees the file's bytes (from the cache or read
/// back after the page was freed), and no page is freed under its holder or left
/// behind (the final checks: no page busy, released or paged out, tags agreeing with
/// states, cache and disk equal to the model). Dirty page-outs are left to the stress
/// test: with a write in the model it explores 180,000 executions (70 s), too many.
///
/// Mutation (issue 18): in `src/cache/clock.rs`, `balance` and `walk_inactive` both
/// reading every page as not busy (only one of them is not enough: a busy page is never
/// deactivated, so the walk never meets one) — loom fails in 1.5 s, the fault's
/// release finding its page freed under it ("unbusy of a page that is not resident",
/// `src/object.rs`).
#[test]
fn l18_reclaim_racing_a_fault_and_a_truncate_never_deadlocks_nor_loses_a_page() {
    model(|| {
        let data = pattern(2 * PAGE_SIZE, 18);
        let rig = rig(&data);
        read_busy(&rig.file, 0, 1).expect("page 0 resident");
        let before = data.clone();
        let reclaimer = std::sync::Arc::new(genpager::reclaim::Reclaimer::new());
        reclaimer.register(&rig.file).expect("register");
        let daemon = {
            let reclaimer = reclaimer.clone();
            spawn(&rig, move |_| reclaimer.reclaim(2))
        };
        let truncate = spawn(&rig, |file| setsize(&file, 100));
        let pages = read_busy(&rig.file, 0, 1).expect("page 0 stays inside the file");
        assert!(
            pages[0] == before[..PAGE_SIZE] || pages[0] == page_of(&before[..100]),
            "the fault saw bytes never written"
        );
        truncate.join().unwrap().expect("setsize");
        daemon.join().unwrap();
        assert!(reclaimer.unregister(&rig.file));
        rig.finish(&before[..100]);
    });
}
