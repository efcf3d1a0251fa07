//! [`MemDisk`]: a RAM block device with a request log, fault injection, a latency
//! model (counted, or taken in real time), and optional completion on another thread.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::buf::{Direction, IoRequest, Priority};
use crate::error::{Error, Result};
use crate::hooks::Strategy;
use crate::page::PAGE_SIZE;

/// The sector size of a [`MemDisk`], in bytes. Device block numbers count these.
pub const SECTOR_SIZE: usize = 512;

/// One request as the disk saw it when it was submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Which way the data moves.
    pub direction: Direction,
    /// The first sector.
    pub block: u64,
    /// Bytes to transfer.
    pub len: usize,
    /// The urgency hint.
    pub priority: Priority,
    /// The file offset of the first byte.
    pub file_offset: u64,
}

/// What a [`MemDisk`] has done since it was made or since [`MemDisk::reset_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Requests submitted (counted at submission, failed ones included).
    pub requests: u64,
    /// Bytes read successfully (counted when transferred).
    pub bytes_read: u64,
    /// Bytes written successfully (counted when transferred).
    pub bytes_written: u64,
    /// Modelled device time of every submitted request, in nanoseconds
    /// ([`LatencyModel::cost_ns`]); the disk takes that time only when realtime
    /// ([`MemDisk::set_realtime`]).
    pub device_time_ns: u64,
    /// Requests that were not a whole, non-zero number of sectors: completed with
    /// [`Error::Invalid`] without touching the disk (see
    /// [`MemDisk::expect_malformed_requests`]).
    pub malformed_requests: u64,
}

/// How long a request would take on a real device: a fixed cost per request plus a
/// cost per byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyModel {
    /// Fixed cost of one request, in nanoseconds.
    pub per_request_ns: u64,
    /// Transfer bandwidth in bytes per second; zero means transfers cost nothing.
    pub bytes_per_sec: u64,
}

impl Default for LatencyModel {
    /// 10 µs per request and 3 GB/s: a fast NVMe device.
    fn default() -> Self {
        Self {
            per_request_ns: 10_000,
            bytes_per_sec: 3_000_000_000,
        }
    }
}

impl LatencyModel {
    /// The modelled time of one request of `bytes` bytes, in nanoseconds (the
    /// per-byte part rounded down).
    pub fn cost_ns(&self, bytes: u64) -> u64 {
        let transfer = match self.bytes_per_sec {
            0 => 0,
            rate => u128::from(bytes) * 1_000_000_000 / u128::from(rate),
        };
        self.per_request_ns
            .saturating_add(u64::try_from(transfer).unwrap_or(u64::MAX))
    }
}

/// A submitted request waiting for service, with the fault decided at submission.
struct Entry {
    request: IoRequest,
    fault: Option<Error>,
    submitted: Option<Submitted>,
}

/// When a request of a realtime disk ([`MemDisk::set_realtime`]) was submitted, and
/// its modelled device time.
#[derive(Clone, Copy)]
struct Submitted {
    at: Instant,
    cost_ns: u64,
}

struct State {
    held: bool,
    shutdown: bool,
    queue: VecDeque<Entry>,
    /// Requests taken off the queue (or never queued) whose completion has not returned.
    in_service: usize,
    /// Requests submitted so far (the sequence number of the last one).
    submitted: u64,
    /// `(sequence number, error)`: fail exactly that request.
    nth_faults: Vec<(u64, Error)>,
    /// Fail every request whose sectors overlap the range.
    range_faults: Vec<(Range<u64>, Error)>,
    log: Vec<LoggedRequest>,
    stats: DiskStats,
    latency: LatencyModel,
    rng: u64,
    /// Threads waiting on `changed`: with none, a change signals nobody (and costs no
    /// system call, which would otherwise dominate the per-request cost).
    sleepers: usize,
    /// Set by [`MemDisk::expect_malformed_requests`]: dropping the disk after a
    /// malformed request is then not a test failure.
    malformed_expected: bool,
    /// Malformed requests ever submitted: unlike the stats, never reset, so a test
    /// cannot hide one from the check at drop by resetting the counters.
    malformed_seen: u64,
    /// [`MemDisk::set_realtime`]: requests complete no earlier than modelled.
    realtime: bool,
    /// When the modelled device finishes the last request scheduled on it.
    device_free_at: Option<Instant>,
    /// When the disk was last released: a held request cannot start before that.
    released_at: Option<Instant>,
}

/// Requests the log and the queue have room for from the start, so that submitting
/// allocates nothing until a disk has seen that many: the allocation-failure sweep
/// (`tests/alloc_sweep.rs`) fails the submitting thread's allocations, and the rig's own
/// bookkeeping must not be among them (with one-page requests at 64 KiB pages, a sweep
/// case submits more requests than an empty log would hold without growing).
const ROOM: usize = 256;

/// The disk's bytes, starting on a page boundary.
///
/// A `Vec<u8>` of this size comes from `mmap` and starts 16 bytes into its first page
/// (the allocator's header). Every sector-aligned request then copied to or from an
/// address 16 bytes off a cache line, and on this project's AMD EPYC machine a 4 KiB
/// copy *to* such an address ran 3 to 6 times slower than to an aligned one: a
/// writeback of page-aligned frames onto the image paid it on every page, while the
/// naive pager's heap frames (at varying offsets) often did not, and beat the memcpy
/// limit. A kernel's RAM disk (and a device's DMA) moves whole, aligned pages; so does
/// this one. The vector is one page longer than the disk, so the aligned bytes fit
/// whatever the allocator's offset, and stays zeroed lazily (`calloc`).
struct Image {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl Image {
    fn zeroed(len: usize) -> Self {
        let bytes = vec![
            0;
            len.checked_add(PAGE_SIZE)
                .expect("disk size fits in memory")
        ];
        let start = bytes.as_ptr().align_offset(PAGE_SIZE);
        Self { bytes, start, len }
    }
}

impl core::ops::Deref for Image {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

impl core::ops::DerefMut for Image {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// What the disk and its completion thread share.
struct Shared {
    sectors: u64,
    threaded: bool,
    reorder: bool,
    storage: Mutex<Image>,
    state: Mutex<State>,
    /// Signalled when work arrives, the hold is released, a request completes or the
    /// disk shuts down; the worker and `quiesce` wait on it.
    changed: Condvar,
}

/// Owned by the handles only: when the last handle goes, the disk shuts down.
struct Handle {
    shared: Arc<Shared>,
}

/// A RAM block device of 512-byte sectors implementing [`Strategy`].
///
/// Cloning gives another handle to the same disk. Requests are logged and counted at
/// submission, then serviced: inline inside [`Strategy::submit`] ([`MemDisk::new`]) or
/// on a completion thread ([`MemDisk::threaded`]). While the disk is held
/// ([`MemDisk::hold`]) requests stay pending in either mode. By default a request
/// completes as soon as its bytes are copied, and its [`LatencyModel`] time is only
/// counted; a realtime disk ([`MemDisk::set_realtime`], [`MemDisk::timed`]) also takes
/// that time, as a serial device.
///
/// A request reaching past the last sector completes with [`Error::Io`]; an injected
/// fault ([`MemDisk::fail_nth`], [`MemDisk::fail_blocks`]) completes with its error.
/// A failed request transfers nothing: a failed write leaves the disk unchanged and a
/// failed read leaves the request's memory untouched.
///
/// Like a real block device, the disk moves whole sectors only: a request whose
/// length is zero or not a multiple of [`SECTOR_SIZE`] is malformed. It is logged,
/// completes with [`Error::Invalid`] and is counted in
/// [`DiskStats::malformed_requests`]; and, so that every test checks the pager never
/// issues one, dropping the last handle of a disk that saw one panics (unless the
/// thread is already panicking, or the test called
/// [`MemDisk::expect_malformed_requests`]).
#[derive(Clone)]
pub struct MemDisk {
    handle: Arc<Handle>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// splitmix64: a small deterministic generator for shuffles.
pub(super) fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl MemDisk {
    fn build(sectors: u64, threaded: bool, reorder: bool) -> Self {
        let bytes = sectors
            .checked_mul(SECTOR_SIZE as u64)
            .and_then(|bytes| usize::try_from(bytes).ok())
            .expect("disk size fits in memory");
        let shared = Arc::new(Shared {
            sectors,
            threaded,
            reorder,
            storage: Mutex::new(Image::zeroed(bytes)),
            state: Mutex::new(State {
                held: false,
                shutdown: false,
                queue: VecDeque::with_capacity(ROOM),
                in_service: 0,
                submitted: 0,
                nth_faults: Vec::new(),
                range_faults: Vec::new(),
                log: Vec::with_capacity(ROOM),
                stats: DiskStats::default(),
                latency: LatencyModel::default(),
                rng: 0x5eed_d15c,
                sleepers: 0,
                malformed_expected: false,
                malformed_seen: 0,
                realtime: false,
                device_free_at: None,
                released_at: None,
            }),
            changed: Condvar::new(),
        });
        if threaded {
            let worker = shared.clone();
            std::thread::Builder::new()
                .name(super::COMPLETION_THREAD.into())
                .spawn(move || worker.work())
                .expect("spawn the MemDisk completion thread");
        }
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// A zeroed disk of `sectors` sectors that completes each request inside
    /// [`Strategy::submit`], on the submitting thread (unless held).
    pub fn new(sectors: u64) -> MemDisk {
        Self::build(sectors, false, false)
    }

    /// A zeroed disk of `sectors` sectors whose requests complete on a completion
    /// thread of their own. With `reorder`, the thread picks the next request among
    /// those queued in a deterministic shuffled order instead of first come, first
    /// served (hold the disk, submit, release, to get several queued at once).
    ///
    /// The thread exits when the last handle is dropped, after servicing whatever was
    /// still queued.
    pub fn threaded(sectors: u64, reorder: bool) -> MemDisk {
        Self::build(sectors, true, reorder)
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Declares that this test submits malformed requests on purpose (to check how
    /// they fail): dropping the disk then does not panic over them. They still
    /// complete with [`Error::Invalid`] and are still counted.
    pub fn expect_malformed_requests(&self) {
        lock(&self.shared().state).malformed_expected = true;
    }

    /// The disk size in sectors.
    pub fn sectors(&self) -> u64 {
        self.shared().sectors
    }

    /// Keeps every request submitted from now on pending until [`MemDisk::release`].
    pub fn hold(&self) {
        lock(&self.shared().state).held = true;
    }

    /// Lets pending requests complete. On an inline disk they complete on the calling
    /// thread before this returns, in submission order, and what they leave is reaped
    /// there (`reap_completions`: the test's thread holds nothing of genpager's here);
    /// on a threaded disk the completion thread takes them (use [`MemDisk::quiesce`]
    /// to wait).
    pub fn release(&self) {
        let shared = self.shared();
        {
            let mut state = lock(&shared.state);
            state.held = false;
            if state.realtime {
                state.released_at = Some(Instant::now());
            }
        }
        shared.changed.notify_all();
        if !shared.threaded {
            shared.run_ready();
            crate::buf::reap_completions();
        }
    }

    /// How many requests have been submitted and not yet completed.
    pub fn pending(&self) -> usize {
        let state = lock(&self.shared().state);
        state.queue.len() + state.in_service
    }

    /// Blocks until no request is pending and every completion has returned. Call it
    /// after [`MemDisk::release`]: while the disk is held it waits for another thread
    /// to release it.
    pub fn quiesce(&self) {
        let shared = self.shared();
        let mut state = lock(&shared.state);
        while !state.queue.is_empty() || state.in_service > 0 {
            state.sleepers += 1;
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
            state.sleepers -= 1;
        }
    }

    /// Every request submitted since the disk was made or since
    /// [`MemDisk::clear_log`], in submission order.
    pub fn log(&self) -> Vec<LoggedRequest> {
        lock(&self.shared().state).log.clone()
    }

    /// Empties the request log.
    pub fn clear_log(&self) {
        lock(&self.shared().state).log.clear();
    }

    /// Makes the `n`-th request submitted from now on (1 = the next one) fail with
    /// `error`, transferring nothing. `n == 0` is taken as 1. Several such faults may
    /// be armed at once.
    pub fn fail_nth(&self, n: usize, error: Error) {
        let mut state = lock(&self.shared().state);
        let at = state.submitted + n.max(1) as u64;
        state.nth_faults.push((at, error));
    }

    /// Makes every request whose sectors overlap `blocks` fail with `error`, until
    /// [`MemDisk::clear_faults`].
    pub fn fail_blocks(&self, blocks: Range<u64>, error: Error) {
        lock(&self.shared().state)
            .range_faults
            .push((blocks, error));
    }

    /// Disarms every injected fault.
    pub fn clear_faults(&self) {
        let mut state = lock(&self.shared().state);
        state.nth_faults.clear();
        state.range_faults.clear();
    }

    /// The counters.
    pub fn stats(&self) -> DiskStats {
        lock(&self.shared().state).stats
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        lock(&self.shared().state).stats = DiskStats::default();
    }

    /// Changes the latency model used for [`DiskStats::device_time_ns`] from the next
    /// request on.
    pub fn set_latency(&self, model: LatencyModel) {
        lock(&self.shared().state).latency = model;
    }

    /// The current latency model.
    pub fn latency(&self) -> LatencyModel {
        lock(&self.shared().state).latency
    }

    /// Makes the disk take its time (`true`) or not (`false`, the default), from the
    /// next request submitted on.
    ///
    /// A realtime disk is a serial device of the current [`LatencyModel`]: each
    /// request starts when it has been submitted, the request serviced before it is
    /// done and the disk is not held ([`MemDisk::hold`]), whichever is last, and is done
    /// [`LatencyModel::cost_ns`] of its length later. The thread that services it (the
    /// completion thread of a [`MemDisk::threaded`] disk; the submitting thread of an
    /// inline one, inside [`Strategy::submit`], as a polled device would) waits until
    /// then, spinning on [`Instant::now`] (a sleep oversleeps by more than a small
    /// request's whole cost), and only then moves the data and completes it. Failed
    /// requests take their time too. [`MemDisk::read_request`] and
    /// [`MemDisk::write_request`] are serviced the same way on the calling thread.
    ///
    /// What it is for: measuring a reader that overlaps its copies with read-ahead
    /// against a device that is busy while they run. On a threaded disk only the
    /// completion thread spins; the submitter goes on. Completion can be later than
    /// modelled (the completion thread has to be scheduled), never earlier.
    pub fn set_realtime(&self, on: bool) {
        lock(&self.shared().state).realtime = on;
    }

    /// A zeroed, threaded, first-come-first-served disk of `sectors` sectors that
    /// takes its time: [`MemDisk::threaded`] with [`MemDisk::set_realtime`] on.
    pub fn timed(sectors: u64) -> MemDisk {
        let disk = Self::threaded(sectors, false);
        disk.set_realtime(true);
        disk
    }

    /// Copies disk bytes from `byte_offset` into `buf`, bypassing the log, the
    /// counters and the faults.
    ///
    /// # Panics
    ///
    /// If the range reaches past the end of the disk.
    pub fn read_raw(&self, byte_offset: u64, buf: &mut [u8]) {
        let storage = lock(&self.shared().storage);
        let range = byte_range(byte_offset, buf.len(), storage.len())
            .expect("read_raw past the end of the disk");
        buf.copy_from_slice(&storage[range]);
    }

    /// Copies `data` onto the disk at `byte_offset`, bypassing the log, the counters
    /// and the faults.
    ///
    /// # Panics
    ///
    /// If the range reaches past the end of the disk.
    pub fn write_raw(&self, byte_offset: u64, data: &[u8]) {
        let mut storage = lock(&self.shared().storage);
        let range = byte_range(byte_offset, data.len(), storage.len())
            .expect("write_raw past the end of the disk");
        storage[range].copy_from_slice(data);
    }

    /// Runs `f` over the whole disk image, bypassing the log, the counters and the
    /// faults: what a benchmark's memcpy limit copies to and from, so that it moves
    /// bytes through the same memory the device does. The image starts on a page
    /// boundary.
    pub fn with_image<R>(&self, f: impl FnOnce(&mut [u8]) -> R) -> R {
        f(&mut lock(&self.shared().storage))
    }

    /// Zeroes `len` bytes of the disk at `byte_offset`, bypassing everything (what a
    /// filesystem does to a newly allocated block).
    pub(super) fn zero_raw(&self, byte_offset: u64, len: usize) {
        let mut storage = lock(&self.shared().storage);
        let range =
            byte_range(byte_offset, len, storage.len()).expect("zero_raw past the end of the disk");
        storage[range].fill(0);
    }
}

/// `offset .. offset + len` as indices into a store of `size` bytes, if it fits.
fn byte_range(offset: u64, len: usize, size: usize) -> Option<Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

impl Strategy for MemDisk {
    fn submit(&self, request: IoRequest) {
        let shared = self.shared();
        let mut state = lock(&shared.state);
        let (fault, submitted) = state.admit(LoggedRequest {
            direction: request.direction(),
            block: request.block(),
            len: request.len(),
            priority: request.priority(),
            file_offset: request.file_offset(),
        });
        let entry = Entry {
            request,
            fault,
            submitted,
        };
        if state.held || shared.threaded {
            state.queue.push_back(entry);
            let wake = state.sleepers > 0;
            drop(state);
            if wake {
                shared.changed.notify_all();
            }
        } else {
            state.in_service += 1;
            let due = state.schedule(entry.submitted);
            drop(state);
            shared.service(entry, due);
        }
    }
}

impl MemDisk {
    /// One synchronous read request of `buf.len()` bytes from sector `block`, for a
    /// caller that cannot build an [`IoRequest`] (they are made only inside the crate):
    /// a baseline pager in a benchmark. It is logged (at [`Priority::TimeCritical`],
    /// with `file_offset`), counted, costed, fault-injected and transferred exactly as
    /// [`Strategy::submit`] does an inline request of that size, through the same code
    /// and the same locks, so that such a pager pays the device's bookkeeping that
    /// genpager pays; then it is serviced at once on the calling thread, whether the
    /// disk is held or threaded. A failed read leaves `buf` untouched.
    pub fn read_request(&self, block: u64, file_offset: u64, buf: &mut [u8]) -> Result {
        self.shared()
            .raw_request(Direction::Read, block, file_offset, buf.len(), |sectors| {
                buf.copy_from_slice(sectors);
            })
    }

    /// [`MemDisk::read_request`] the other way: writes `data` at sector `block`. A
    /// failed write leaves the disk unchanged.
    pub fn write_request(&self, block: u64, file_offset: u64, data: &[u8]) -> Result {
        self.shared().raw_request(
            Direction::Write,
            block,
            file_offset,
            data.len(),
            |sectors| {
                sectors.copy_from_slice(data);
            },
        )
    }
}

impl State {
    /// Logs and counts a request as it is submitted, and decides how it fails, if it
    /// does: the bookkeeping every request pays, whoever submits it. On a realtime
    /// disk, also when it was submitted and what it costs.
    fn admit(&mut self, logged: LoggedRequest) -> (Option<Error>, Option<Submitted>) {
        self.submitted += 1;
        let sequence = self.submitted;
        let (block, len) = (logged.block, logged.len);
        self.log.push(logged);
        self.stats.requests += 1;
        let cost = self.latency.cost_ns(len as u64);
        self.stats.device_time_ns = self.stats.device_time_ns.saturating_add(cost);
        let mut fault = self.fault_for(sequence, block, len);
        if len == 0 || len % SECTOR_SIZE != 0 {
            self.stats.malformed_requests += 1;
            self.malformed_seen += 1;
            fault = Some(Error::Invalid);
        }
        let submitted = self.realtime.then(|| Submitted {
            at: Instant::now(),
            cost_ns: cost,
        });
        (fault, submitted)
    }

    /// Puts a realtime request on the modelled device as it is taken for service: a
    /// serial device, which starts it once it is submitted, the previous request is
    /// done and the disk is not held, and takes its cost. Returns when it is done
    /// (`None` for a request that is not realtime).
    fn schedule(&mut self, submitted: Option<Submitted>) -> Option<Instant> {
        let Submitted { at, cost_ns } = submitted?;
        let start = [self.device_free_at, self.released_at]
            .into_iter()
            .flatten()
            .fold(at, Instant::max);
        let done = start + Duration::from_nanos(cost_ns);
        self.device_free_at = Some(done);
        Some(done)
    }

    /// The injected error for request number `sequence` covering `len` bytes from
    /// sector `block`, if any (consuming a matching one-shot fault).
    fn fault_for(&mut self, sequence: u64, block: u64, len: usize) -> Option<Error> {
        let mut fault = None;
        if let Some(at) = self.nth_faults.iter().position(|&(n, _)| n == sequence) {
            fault = Some(self.nth_faults.swap_remove(at).1);
        }
        let sectors = (len as u64).div_ceil(SECTOR_SIZE as u64).max(1);
        let span = block..block.saturating_add(sectors);
        fault.or_else(|| {
            self.range_faults
                .iter()
                .find(|(range, _)| range.start < span.end && span.start < range.end)
                .map(|&(_, error)| error)
        })
    }
}

impl Shared {
    /// Transfers and completes one request, then retires it from `in_service` (which
    /// the caller has already counted it in). Holds no lock while completing. A
    /// realtime request waits for its modelled completion, `due`, first.
    fn service(&self, entry: Entry, due: Option<Instant>) {
        let Entry {
            mut request, fault, ..
        } = entry;
        wait_until(due);
        let direction = request.direction();
        let result =
            match fault {
                Some(error) => Err(error),
                None => self.transfer(direction, request.block(), request.len(), |sectors| {
                    match direction {
                        Direction::Read => request.fill(sectors),
                        Direction::Write => request.gather(sectors),
                    }
                }),
            };
        request.complete(result);
        self.retire();
    }

    /// The request of [`MemDisk::read_request`] and [`MemDisk::write_request`]: admitted,
    /// transferred by `copy` (between the caller's memory and the request's sectors)
    /// and retired as [`Shared::service`] does an inline request.
    fn raw_request(
        &self,
        direction: Direction,
        block: u64,
        file_offset: u64,
        len: usize,
        copy: impl FnOnce(&mut [u8]),
    ) -> Result {
        let (fault, due) = {
            let mut state = lock(&self.state);
            let (fault, submitted) = state.admit(LoggedRequest {
                direction,
                block,
                len,
                priority: Priority::TimeCritical,
                file_offset,
            });
            state.in_service += 1;
            (fault, state.schedule(submitted))
        };
        wait_until(due);
        let result = match fault {
            Some(error) => Err(error),
            None => self.transfer(direction, block, len, |sectors| {
                copy(sectors);
                Ok(())
            }),
        };
        self.retire();
        result
    }

    /// A request has completed: it leaves `in_service`, and whoever waits is told.
    fn retire(&self) {
        let mut state = lock(&self.state);
        state.in_service -= 1;
        if state.sleepers > 0 {
            self.changed.notify_all();
        }
    }

    /// Moves `len` bytes at sector `block` by `copy` (given those bytes of the disk),
    /// and counts them.
    fn transfer(
        &self,
        direction: Direction,
        block: u64,
        len: usize,
        copy: impl FnOnce(&mut [u8]) -> Result,
    ) -> Result {
        {
            let mut storage = lock(&self.storage);
            let range = block
                .checked_mul(SECTOR_SIZE as u64)
                .and_then(|offset| byte_range(offset, len, storage.len()))
                .ok_or(Error::Io)?;
            copy(&mut storage[range])?;
        }
        let mut state = lock(&self.state);
        match direction {
            Direction::Read => state.stats.bytes_read += len as u64,
            Direction::Write => state.stats.bytes_written += len as u64,
        }
        Ok(())
    }

    /// Takes the next serviceable request off the queue (counting it in service, and
    /// scheduling it on a realtime disk: it comes with when it is due), or `None` when
    /// the queue is empty or held (a shut-down disk ignores the hold).
    fn next_ready(&self, state: &mut State) -> Option<(Entry, Option<Instant>)> {
        if state.held && !state.shutdown {
            return None;
        }
        let at = match state.queue.len() {
            0 => return None,
            len if self.reorder => (next_random(&mut state.rng) % len as u64) as usize,
            _ => 0,
        };
        let entry = state.queue.remove(at)?;
        state.in_service += 1;
        let due = state.schedule(entry.submitted);
        Some((entry, due))
    }

    /// Services queued requests on this thread until none is ready.
    fn run_ready(&self) {
        loop {
            let Some((entry, due)) = self.next_ready(&mut lock(&self.state)) else {
                return;
            };
            self.service(entry, due);
        }
    }

    /// The completion thread: service what is ready, sleep until something changes,
    /// exit once shut down with nothing queued.
    fn work(&self) {
        let mut state = lock(&self.state);
        loop {
            if let Some((entry, due)) = self.next_ready(&mut state) {
                drop(state);
                self.service(entry, due);
                // The completion thread holds nothing between requests: it is the
                // kernel's worker that frees what completions left (and so the rig's
                // files and disks are dropped, and checked, as the test expects).
                crate::buf::reap_completions();
                state = lock(&self.state);
                continue;
            }
            if state.shutdown && state.queue.is_empty() {
                return;
            }
            state.sleepers += 1;
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
            state.sleepers -= 1;
        }
    }
}

/// Waits on this thread until `due` (if any) by spinning on the clock:
/// `thread::sleep` oversleeps by tens of microseconds or more, longer than a 4 KiB
/// request's whole modelled time (11 µs at the default model).
fn wait_until(due: Option<Instant>) {
    if let Some(due) = due {
        while Instant::now() < due {
            core::hint::spin_loop();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let (malformed, expected) = {
            let mut state = lock(&self.shared.state);
            state.shutdown = true;
            (state.malformed_seen, state.malformed_expected)
        };
        self.shared.changed.notify_all();
        if !self.shared.threaded {
            self.shared.run_ready();
        }
        // Checked here, at the last handle, so that every test using the disk checks
        // it without saying so.
        if malformed > 0 && !expected {
            super::fail_at_drop(format_args!(
                "MemDisk saw {malformed} request(s) that were not a whole, non-zero \
                 number of {SECTOR_SIZE}-byte sectors (see the request log; call \
                 MemDisk::expect_malformed_requests if the test means to)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::{Nest, Outcome, Segment, raw_segment};
    use core::ptr::NonNull;
    use std::sync::mpsc;
    use std::thread::{self, ThreadId};
    use std::time::{Duration, Instant};

    fn segment(buf: &mut [u8]) -> Segment {
        raw_segment(NonNull::from(&mut *buf).cast(), buf.len())
    }

    /// One synchronous request over `buf`, as the pager would issue it.
    fn sync_io(disk: &MemDisk, direction: Direction, block: u64, buf: &mut [u8]) -> Result {
        let (mut nest, wait) =
            Nest::synchronous(buf.len(), direction, Priority::TimeCritical).unwrap();
        let request = nest
            .request(block, block.wrapping_mul(512), vec![segment(buf)])
            .unwrap();
        disk.submit(request);
        nest.finish(0, Ok(()));
        wait.wait().result
    }

    /// One asynchronous request over `buf`; `done` runs where the request completes.
    /// The caller keeps `buf` alive until the disk is quiesced.
    fn async_io(
        disk: &MemDisk,
        direction: Direction,
        block: u64,
        buf: &mut [u8],
        done: impl FnMut(Outcome) + Send + 'static,
    ) {
        let mut nest =
            Nest::asynchronous(buf.len(), direction, Priority::TimeNonCritical, done).unwrap();
        let request = nest.request(block, 0, vec![segment(buf)]).unwrap();
        disk.submit(request);
        nest.finish(0, Ok(()));
    }

    #[test]
    fn write_then_read_round_trips_and_is_logged() {
        let disk = MemDisk::new(64);
        let mut data: Vec<u8> = (0..2048u32).map(|i| i as u8).collect();
        sync_io(&disk, Direction::Write, 8, &mut data).unwrap();
        let mut raw = vec![0; 2048];
        disk.read_raw(8 * 512, &mut raw);
        assert_eq!(raw, data);

        let mut back = vec![0; 1024];
        sync_io(&disk, Direction::Read, 9, &mut back).unwrap();
        assert_eq!(back, data[512..1536]);

        assert_eq!(
            disk.log(),
            [
                LoggedRequest {
                    direction: Direction::Write,
                    block: 8,
                    len: 2048,
                    priority: Priority::TimeCritical,
                    file_offset: 8 * 512,
                },
                LoggedRequest {
                    direction: Direction::Read,
                    block: 9,
                    len: 1024,
                    priority: Priority::TimeCritical,
                    file_offset: 9 * 512,
                },
            ]
        );
        let stats = disk.stats();
        assert_eq!(
            (stats.requests, stats.bytes_written, stats.bytes_read),
            (2, 2048, 1024)
        );
        disk.clear_log();
        disk.reset_stats();
        assert!(disk.log().is_empty());
        assert_eq!(disk.stats(), DiskStats::default());
    }

    #[test]
    fn raw_access_bypasses_log_and_counters() {
        let disk = MemDisk::new(4);
        disk.write_raw(100, b"abc");
        let mut out = [0; 3];
        disk.read_raw(100, &mut out);
        assert_eq!(&out, b"abc");
        assert_eq!(disk.sectors(), 4);
        assert!(disk.log().is_empty());
        assert_eq!(disk.stats(), DiskStats::default());
    }

    #[test]
    fn raw_requests_pay_what_submitted_ones_do() {
        let disk = MemDisk::new(64);
        let data: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
        disk.write_request(4, 4 * 512, &data).unwrap();
        let mut back = vec![0; 1024];
        disk.read_request(4, 4 * 512, &mut back).unwrap();
        assert_eq!(back, data);
        // The same bytes through `submit`: the log and the counters cannot tell.
        let mut submitted = vec![0; 1024];
        sync_io(&disk, Direction::Read, 4, &mut submitted).unwrap();
        assert_eq!(submitted, data);
        let log = disk.log();
        assert_eq!(log.len(), 3);
        assert_eq!(log[1], log[2], "logged as a submitted request is");
        let stats = disk.stats();
        assert_eq!(
            (stats.requests, stats.bytes_read, stats.bytes_written),
            (3, 2048, 1024)
        );
        assert_eq!(stats.device_time_ns, 3 * disk.latency().cost_ns(1024));
        // Faults apply; a failed read fills nothing, a failed write writes nothing.
        disk.fail_nth(1, Error::Host(5));
        let mut untouched = vec![0x77; 512];
        assert_eq!(disk.read_request(0, 0, &mut untouched), Err(Error::Host(5)));
        assert!(untouched.iter().all(|&b| b == 0x77));
        disk.fail_blocks(4..5, Error::Io);
        assert_eq!(disk.write_request(4, 0, &[0; 512]), Err(Error::Io));
        disk.clear_faults();
        assert_eq!(
            disk.read_request(63, 0, &mut [0; 1024]),
            Err(Error::Io),
            "past the end"
        );
        disk.read_request(4, 0, &mut back).unwrap();
        assert_eq!(back, data);
        // Serviced at once, even on a held disk, and retired.
        disk.hold();
        disk.read_request(4, 0, &mut back).unwrap();
        assert_eq!(disk.pending(), 0);
        disk.release();
    }

    #[test]
    fn request_past_the_end_fails_with_eio() {
        let disk = MemDisk::new(4);
        let mut buf = vec![0x55; 1024];
        assert_eq!(sync_io(&disk, Direction::Read, 3, &mut buf), Err(Error::Io));
        assert!(buf.iter().all(|&b| b == 0x55), "failed read filled nothing");
        assert_eq!(
            sync_io(&disk, Direction::Write, u64::MAX, &mut buf),
            Err(Error::Io)
        );
        assert_eq!(sync_io(&disk, Direction::Read, 2, &mut buf), Ok(()));
        assert_eq!(disk.stats().bytes_read, 1024);
    }

    #[test]
    fn fail_nth_fails_exactly_that_request_and_keeps_the_disk() {
        let disk = MemDisk::new(16);
        let mut old = vec![0x11; 512];
        sync_io(&disk, Direction::Write, 0, &mut old).unwrap();

        disk.fail_nth(2, Error::Host(77));
        let mut new = vec![0x22; 512];
        assert_eq!(sync_io(&disk, Direction::Write, 1, &mut new), Ok(()));
        assert_eq!(
            sync_io(&disk, Direction::Write, 0, &mut new),
            Err(Error::Host(77))
        );
        let mut raw = vec![0; 512];
        disk.read_raw(0, &mut raw);
        assert_eq!(raw, old, "failed write changed nothing");
        assert_eq!(
            sync_io(&disk, Direction::Write, 0, &mut new),
            Ok(()),
            "one-shot"
        );
        assert_eq!(disk.stats().requests, 4);
        assert_eq!(disk.stats().bytes_written, 3 * 512);

        disk.fail_nth(1, Error::Io);
        disk.fail_nth(3, Error::NoSpace);
        let mut buf = vec![0; 512];
        assert_eq!(sync_io(&disk, Direction::Read, 0, &mut buf), Err(Error::Io));
        assert_eq!(sync_io(&disk, Direction::Read, 0, &mut buf), Ok(()));
        assert_eq!(
            sync_io(&disk, Direction::Read, 0, &mut buf),
            Err(Error::NoSpace)
        );

        disk.fail_nth(2, Error::Io);
        disk.clear_faults();
        for _ in 0..3 {
            assert_eq!(sync_io(&disk, Direction::Read, 0, &mut buf), Ok(()));
        }
    }

    #[test]
    fn fail_blocks_fails_overlapping_requests_until_cleared() {
        let disk = MemDisk::new(64);
        disk.write_raw(10 * 512, &[0x33; 512]);
        disk.fail_blocks(10..12, Error::Io);

        let mut buf = vec![0xaa; 1024];
        assert_eq!(
            sync_io(&disk, Direction::Read, 9, &mut buf),
            Err(Error::Io),
            "overlaps 10"
        );
        assert!(buf.iter().all(|&b| b == 0xaa), "failed read filled nothing");
        assert_eq!(
            sync_io(&disk, Direction::Read, 11, &mut buf),
            Err(Error::Io)
        );
        assert_eq!(
            sync_io(&disk, Direction::Read, 8, &mut buf),
            Ok(()),
            "8..10 is clear"
        );
        assert_eq!(sync_io(&disk, Direction::Read, 12, &mut buf), Ok(()));

        let mut new = vec![0x44; 512];
        assert_eq!(
            sync_io(&disk, Direction::Write, 10, &mut new),
            Err(Error::Io)
        );
        let mut raw = vec![0; 512];
        disk.read_raw(10 * 512, &mut raw);
        assert!(
            raw.iter().all(|&b| b == 0x33),
            "failed write changed nothing"
        );
        assert_eq!(disk.stats().bytes_written, 0);

        disk.clear_faults();
        assert_eq!(sync_io(&disk, Direction::Write, 10, &mut new), Ok(()));
        disk.read_raw(10 * 512, &mut raw);
        assert_eq!(raw, new);
    }

    #[test]
    fn partial_and_empty_requests_fail_as_invalid_and_touch_nothing() {
        let disk = MemDisk::new(16);
        disk.expect_malformed_requests();
        disk.write_raw(0, &[0x66; 1024]);
        let mut short = vec![0x77; 100];
        assert_eq!(
            sync_io(&disk, Direction::Read, 0, &mut short),
            Err(Error::Invalid)
        );
        assert!(short.iter().all(|&b| b == 0x77), "nothing was read");
        let mut ragged = vec![0x88; 700];
        assert_eq!(
            sync_io(&disk, Direction::Write, 0, &mut ragged),
            Err(Error::Invalid)
        );
        assert_eq!(
            sync_io(&disk, Direction::Write, 0, &mut []),
            Err(Error::Invalid)
        );
        let mut raw = vec![0; 1024];
        disk.read_raw(0, &mut raw);
        assert!(raw.iter().all(|&b| b == 0x66), "nothing was written");
        let stats = disk.stats();
        assert_eq!((stats.requests, stats.malformed_requests), (3, 3));
        assert_eq!((stats.bytes_read, stats.bytes_written), (0, 0));
        assert_eq!(disk.log().len(), 3, "malformed requests are logged");
        // Whole sectors still work.
        assert_eq!(sync_io(&disk, Direction::Read, 0, &mut raw), Ok(()));
    }

    #[test]
    #[should_panic(expected = "not a whole, non-zero number of 512-byte sectors")]
    fn dropping_a_disk_that_saw_a_malformed_request_panics() {
        let disk = MemDisk::threaded(16, false);
        let other = disk.clone();
        let mut short = vec![0; 513];
        assert_eq!(
            sync_io(&disk, Direction::Read, 0, &mut short),
            Err(Error::Invalid)
        );
        disk.reset_stats();
        drop(disk);
        // The last handle is the one that checks, even after the stats were reset.
        drop(other);
    }

    #[test]
    fn latency_model_arithmetic() {
        let model = LatencyModel::default();
        assert_eq!(
            model,
            LatencyModel {
                per_request_ns: 10_000,
                bytes_per_sec: 3_000_000_000
            }
        );
        assert_eq!(model.cost_ns(0), 10_000);
        assert_eq!(model.cost_ns(3_000), 11_000);
        assert_eq!(model.cost_ns(4096), 10_000 + 1365, "rounded down");
        let free_transfer = LatencyModel {
            per_request_ns: 7,
            bytes_per_sec: 0,
        };
        assert_eq!(free_transfer.cost_ns(1 << 20), 7);

        let disk = MemDisk::new(1024);
        disk.set_latency(LatencyModel {
            per_request_ns: 1_000,
            bytes_per_sec: 1_000_000,
        });
        assert_eq!(disk.latency().bytes_per_sec, 1_000_000);
        let mut buf = vec![0; 4096];
        sync_io(&disk, Direction::Read, 0, &mut buf).unwrap();
        sync_io(&disk, Direction::Write, 8, &mut buf[..512]).unwrap();
        // 1 µs + 4096 µs, then 1 µs + 512 µs.
        assert_eq!(
            disk.stats().device_time_ns,
            1_000 + 4_096_000 + 1_000 + 512_000
        );
        // Failed requests still occupy the device.
        disk.fail_nth(1, Error::Io);
        let _ = sync_io(&disk, Direction::Read, 0, &mut buf[..512]);
        assert_eq!(disk.stats().device_time_ns, 4_610_000 + 513_000);
    }

    /// A model whose every request takes `ms` milliseconds, whatever its length:
    /// long enough that scheduling noise cannot make a completion look early.
    fn slow(ms: u64) -> LatencyModel {
        LatencyModel {
            per_request_ns: ms * 1_000_000,
            bytes_per_sec: 0,
        }
    }

    #[test]
    fn timed_disk_completes_no_earlier_than_a_serial_device() {
        let cost = Duration::from_millis(3);
        let disk = MemDisk::timed(64);
        disk.set_latency(slow(3));
        let (tx, rx) = mpsc::channel();
        let mut bufs = vec![vec![0u8; 512]; 3];
        let start = Instant::now();
        for (i, buf) in bufs.iter_mut().enumerate() {
            let tx = tx.clone();
            async_io(&disk, Direction::Read, i as u64, buf, move |outcome| {
                assert_eq!(outcome.result, Ok(()));
                tx.send((i, Instant::now())).unwrap();
            });
        }
        disk.quiesce();
        let done: Vec<(usize, Instant)> = rx.try_iter().collect();
        assert_eq!(done.len(), 3);
        for (k, &(i, at)) in done.iter().enumerate() {
            assert_eq!(i, k, "FIFO");
            // Serial: the k-th is done k + 1 costs after the first submission at the
            // earliest. Only "not earlier" is checked: a loaded machine may be late.
            assert!(
                at.duration_since(start) >= cost * (k as u32 + 1),
                "request {k} completed {:?} after the start, before its modelled {:?}",
                at.duration_since(start),
                cost * (k as u32 + 1)
            );
        }
        // A request submitted once the device is idle starts when submitted.
        let mut buf = vec![0u8; 512];
        let before = Instant::now();
        sync_io(&disk, Direction::Read, 0, &mut buf).unwrap();
        assert!(before.elapsed() >= cost);

        // A held request starts no earlier than the release.
        disk.hold();
        let (tx, rx) = mpsc::channel();
        async_io(&disk, Direction::Read, 0, &mut buf, move |_| {
            tx.send(Instant::now()).unwrap();
        });
        thread::sleep(Duration::from_millis(10));
        let released = Instant::now();
        disk.release();
        disk.quiesce();
        let at = rx.try_recv().expect("completed");
        assert!(at.duration_since(released) >= cost);

        // Counting is unchanged.
        assert_eq!(disk.stats().device_time_ns, 5 * 3_000_000);
    }

    #[test]
    fn realtime_inline_disk_and_raw_requests_wait_on_the_caller() {
        let cost = Duration::from_millis(2);
        let disk = MemDisk::new(64);
        disk.set_latency(slow(2));
        disk.set_realtime(true);
        let mut buf = vec![0u8; 512];
        let start = Instant::now();
        sync_io(&disk, Direction::Write, 1, &mut buf).unwrap();
        assert!(start.elapsed() >= cost, "inline submit waited");
        disk.read_request(1, 0, &mut buf).unwrap();
        disk.write_request(2, 0, &buf).unwrap();
        assert!(start.elapsed() >= cost * 3, "serially, on the caller");
        // A failed request occupies the device too.
        disk.fail_nth(1, Error::Io);
        let before = Instant::now();
        assert_eq!(disk.read_request(1, 0, &mut buf), Err(Error::Io));
        assert!(before.elapsed() >= cost);
    }

    #[test]
    fn inline_hold_keeps_requests_pending_until_release() {
        let disk = MemDisk::new(16);
        disk.write_raw(0, &[9; 512]);
        disk.hold();
        let (tx, rx) = mpsc::channel();
        let mut buf = vec![0; 512];
        async_io(&disk, Direction::Read, 0, &mut buf, move |outcome| {
            tx.send((outcome, thread::current().id())).unwrap();
        });
        assert_eq!(disk.pending(), 1);
        assert!(rx.try_recv().is_err(), "held request did not complete");
        assert_eq!(disk.log().len(), 1, "logged at submission");
        disk.release();
        let (outcome, on) = rx.try_recv().expect("release completes inline");
        assert_eq!(outcome.result, Ok(()));
        assert_eq!(outcome.transferred, 512);
        assert_eq!(on, thread::current().id());
        assert_eq!(disk.pending(), 0);
        disk.quiesce();
        assert_eq!(buf, [9; 512]);
    }

    #[test]
    fn threaded_disk_completes_on_its_own_thread() {
        let disk = MemDisk::threaded(64, false);
        let mut data = vec![0x5a; 1024];
        sync_io(&disk, Direction::Write, 4, &mut data).unwrap();
        let mut back = vec![0; 1024];
        sync_io(&disk, Direction::Read, 4, &mut back).unwrap();
        assert_eq!(back, data);

        disk.hold();
        let (tx, rx) = mpsc::channel::<(u64, ThreadId)>();
        let mut bufs = vec![vec![0u8; 512]; 4];
        for (i, buf) in bufs.iter_mut().enumerate() {
            let tx = tx.clone();
            async_io(&disk, Direction::Read, i as u64, buf, move |outcome| {
                assert_eq!(outcome.result, Ok(()));
                tx.send((i as u64, thread::current().id())).unwrap();
            });
        }
        thread::sleep(Duration::from_millis(20));
        assert_eq!(disk.pending(), 4);
        assert!(rx.try_recv().is_err(), "held requests stay pending");
        disk.release();
        disk.quiesce();
        assert_eq!(disk.pending(), 0);
        let done: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            done.iter().map(|d| d.0).collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "FIFO"
        );
        assert!(done.iter().all(|d| d.1 != thread::current().id()));
    }

    #[test]
    fn reordering_disk_completes_in_a_shuffled_order() {
        let disk = MemDisk::threaded(64, true);
        disk.hold();
        let (tx, rx) = mpsc::channel();
        let mut bufs = vec![vec![0u8; 512]; 16];
        for (i, buf) in bufs.iter_mut().enumerate() {
            buf.fill(i as u8);
            let tx = tx.clone();
            async_io(&disk, Direction::Write, i as u64, buf, move |outcome| {
                assert_eq!(outcome.result, Ok(()));
                tx.send(i).unwrap();
            });
        }
        disk.release();
        disk.quiesce();
        let order: Vec<usize> = rx.try_iter().collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..16).collect::<Vec<_>>(), "each completed once");
        assert_ne!(order, sorted, "completion order was shuffled");
        for i in 0..16u64 {
            let mut raw = [0; 512];
            disk.read_raw(i * 512, &mut raw);
            assert_eq!(raw, [i as u8; 512]);
        }
        // The log keeps submission order.
        let blocks: Vec<u64> = disk.log().iter().map(|r| r.block).collect();
        assert_eq!(blocks, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn quiesce_waits_for_a_release_from_another_thread() {
        let disk = MemDisk::threaded(8, false);
        disk.hold();
        let (tx, rx) = mpsc::channel();
        let mut buf = vec![0; 512];
        async_io(&disk, Direction::Read, 0, &mut buf, move |_| {
            tx.send(()).unwrap()
        });
        let releaser = {
            let disk = disk.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                disk.release();
            })
        };
        disk.quiesce();
        assert!(rx.try_recv().is_ok());
        releaser.join().unwrap();
    }

    #[test]
    fn completion_thread_exits_when_the_last_handle_goes() {
        let disk = MemDisk::threaded(8, false);
        let other = disk.clone();
        let shared = Arc::downgrade(&disk.handle.shared);
        drop(disk);
        let mut buf = vec![0; 512];
        sync_io(&other, Direction::Read, 0, &mut buf).unwrap();
        drop(other);
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.upgrade().is_some() {
            assert!(Instant::now() < deadline, "completion thread did not exit");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn dropping_a_held_disk_still_completes_its_requests() {
        let (tx, rx) = mpsc::channel();
        let mut buf = vec![0; 512];
        for disk in [MemDisk::new(8), MemDisk::threaded(8, true)] {
            disk.hold();
            let tx = tx.clone();
            async_io(&disk, Direction::Read, 0, &mut buf, move |o| {
                tx.send(o.result).unwrap()
            });
            drop(disk);
            let result = rx.recv_timeout(Duration::from_secs(5)).expect("completed");
            assert_eq!(result, Ok(()));
        }
    }
}
