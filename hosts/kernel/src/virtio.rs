//! [`VirtioBlk`]: a genpager [`Strategy`] over a virtio-blk PCI device.
//!
//! virtio-drivers' own `VirtIOBlk` moves one buffer per request, but a genpager
//! [`IoRequest`] is a scatter list of page pieces. So this driver uses the crate's
//! lower pieces — [`PciTransport`] and [`VirtQueue`] — and builds each request as ONE
//! descriptor chain: the 16-byte request header (device-readable), every segment of
//! the request as its own descriptor (device-readable for a write, device-writable for
//! a read; no bounce buffer), and the 1-byte status (device-writable).
//!
//! Requests in flight live in a table indexed by the chain's head descriptor until the
//! device hands the chain back; requests the ring has no room for wait in a software
//! queue that the completion path starts as descriptors free up. Everything the
//! completion path touches is allocated at probe time: it never allocates, so it can
//! run in an interrupt handler ([`VirtioBlk::interrupt`]).
//!
//! **Completion by interrupt.** Each device raises legacy INTx, routed through the I/O
//! APIC (`main.rs` routes [`VirtioBlk::gsi`] to [`interrupt_all`]); the handler reads the
//! device's ISR status (which acknowledges it), takes every finished chain off the used
//! ring and completes it there, in interrupt context. A thread waiting for one of the
//! driver's own synchronous transfers ([`VirtioBlk::read_bytes`] and friends, the
//! filesystem's metadata) sleeps on the scheduler and is woken by the completion.

use alloc::alloc::{alloc_zeroed, dealloc};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use genpager::buf::{Direction, IoRequest};
use genpager::sync::{Mutex, Token};

use crate::sched::SCHEDULER;
use genpager::{DEV_BSHIFT, Error, Strategy};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::pci;

/// Bytes in one device sector.
const SECTOR: u64 = 1 << DEV_BSHIFT;
/// Descriptors in the ring (the device offers 256; a power of two is required).
const QUEUE_SIZE: usize = 128;
/// Data descriptors one chain may have: a request with more segments is refused with
/// [`Error::Invalid`] (genpager's default maximum transfer, 64 KiB, is 16 pages).
pub const MAX_SEGMENTS: usize = 64;
/// Chains that can be in flight at once: each has at least two descriptors.
const SLOTS: usize = QUEUE_SIZE / 2;
/// Requests the software queue holds without growing.
const PENDING_CAPACITY: usize = 256;

/// virtio-blk request types and status.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const S_OK: u8 = 0;

bitflags::bitflags! {
    /// The features this driver negotiates.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Features: u64 {
        /// VIRTIO_BLK_F_FLUSH: the device takes flush requests.
        const FLUSH = 1 << 9;
        /// VIRTIO_F_VERSION_1: the modern interface (must be taken when offered).
        const VERSION_1 = 1 << 32;
    }
}

// ---- DMA --------------------------------------------------------------------------

/// virtio-drivers' [`Hal`] for a UEFI kernel: the firmware's identity mapping stays
/// (physical = virtual), so DMA memory is heap memory and sharing a buffer is taking
/// its address.
pub struct DmaHal;

/// Bytes in one virtio-drivers page.
const DMA_PAGE: usize = virtio_drivers::PAGE_SIZE;

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory owned by the caller
// until `dma_dealloc`; its address is its physical address (identity mapping). MMIO
// addresses are identity mapped by the firmware's page tables. `share` returns the
// buffer's own address, which the device can reach for the same reason; `unshare`
// copies nothing because nothing was copied.
unsafe impl Hal for DmaHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Ok(layout) = Layout::from_size_align(pages * DMA_PAGE, DMA_PAGE) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: the layout has a non-zero size (virtio-drivers asks for >= 1 page).
        let ptr = unsafe { alloc_zeroed(layout) };
        match NonNull::new(ptr) {
            Some(ptr) => (ptr.as_ptr() as PhysAddr, ptr),
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Ok(layout) = Layout::from_size_align(pages * DMA_PAGE, DMA_PAGE) else {
            return -1;
        };
        // SAFETY: the caller passes what `dma_alloc` returned for `pages` pages, which
        // allocated it with this layout.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO at physical address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.cast::<u8>().as_ptr() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

// ---- jobs ---------------------------------------------------------------------------

/// A synchronous metadata transfer, owned by the thread waiting in
/// [`VirtioBlk::wait_until`] (on its stack), which does not return before `done`.
struct SyncOp {
    kind: u32,
    sector: u64,
    /// The bounce buffer (empty for a flush).
    buf: NonNull<[u8]>,
    /// The outcome: [`RESULT_OK`] or an [`Error`] code, valid once `done` is set.
    result: AtomicU8,
    done: AtomicBool,
    /// Who to wake (a scheduler token), read by the completion before it sets `done`.
    waiter: usize,
}

const RESULT_OK: u8 = 0;
const RESULT_IO: u8 = 1;
const RESULT_NOMEM: u8 = 2;
const RESULT_INVALID: u8 = 3;

fn encode(result: Result<(), Error>) -> u8 {
    match result {
        Ok(()) => RESULT_OK,
        Err(Error::NoMemory) => RESULT_NOMEM,
        Err(Error::Invalid) => RESULT_INVALID,
        Err(_) => RESULT_IO,
    }
}

fn decode(code: u8) -> Result<(), Error> {
    match code {
        RESULT_OK => Ok(()),
        RESULT_NOMEM => Err(Error::NoMemory),
        RESULT_INVALID => Err(Error::Invalid),
        _ => Err(Error::Io),
    }
}

/// One request to the device.
enum Job {
    /// A genpager request: its segments go to the device as they are.
    Pager(IoRequest),
    /// A metadata transfer through a bounce buffer.
    Sync(NonNull<SyncOp>),
}

// SAFETY: `IoRequest` is `Send`; a `SyncOp` is only read through shared atomics and
// the buffer its waiter lent to the device, and outlives the job (its waiter waits for
// `done`), so the job may complete on any CPU.
unsafe impl Send for Job {}

impl Job {
    fn kind(&self) -> u32 {
        match self {
            Job::Pager(request) => match request.direction() {
                Direction::Read => T_IN,
                Direction::Write => T_OUT,
            },
            // SAFETY: the op outlives its job (see `SyncOp`).
            Job::Sync(op) => unsafe { op.as_ref() }.kind,
        }
    }

    fn sector(&self) -> u64 {
        match self {
            Job::Pager(request) => request.block(),
            // SAFETY: as in `kind`.
            Job::Sync(op) => unsafe { op.as_ref() }.sector,
        }
    }

    /// Calls `each(start, len)` for every non-empty data buffer, in order.
    fn for_each_buffer(&self, mut each: impl FnMut(*mut u8, usize)) {
        match self {
            Job::Pager(request) => request
                .segments()
                .iter()
                .filter(|segment| !segment.is_empty())
                .for_each(|segment| each(segment.as_ptr().as_ptr(), segment.len())),
            Job::Sync(op) => {
                // SAFETY: as in `kind`.
                let buf = unsafe { op.as_ref() }.buf;
                if !buf.is_empty() {
                    each(buf.cast::<u8>().as_ptr(), buf.len());
                }
            }
        }
    }

    fn buffers(&self) -> usize {
        let mut count = 0;
        self.for_each_buffer(|_, _| count += 1);
        count
    }

    /// Reports the outcome. Runs with no lock of the driver held.
    fn finish(self, result: Result<(), Error>) {
        match self {
            Job::Pager(request) => request.complete(result),
            Job::Sync(op) => {
                // SAFETY: the op is alive until `done` is set (its waiter waits for it);
                // nothing of it is touched after that store.
                let op = unsafe { op.as_ref() };
                let waiter = op.waiter;
                op.result.store(encode(result), Ordering::Relaxed);
                op.done.store(true, Ordering::Release);
                // The waiter may already have seen `done` and left: a wake of a thread
                // not blocked leaves a permit its next wait consumes as a spurious
                // return, which every wait tolerates.
                SCHEDULER.wake_sleeper(Token(waiter));
            }
        }
    }
}

// ---- the driver ---------------------------------------------------------------------

/// The header and status of one chain: read and written by the device.
#[repr(C, align(32))]
struct SlotBuf {
    header: [u8; 16],
    status: u8,
}

/// What the lock guards.
struct Inner {
    transport: PciTransport,
    queue: VirtQueue<DmaHal, QUEUE_SIZE>,
    /// Header and status buffers, one per slot; never moves (a boxed slice).
    slot_bufs: Box<[SlotBuf]>,
    /// Free slot numbers.
    free_slots: Vec<u16>,
    /// By head descriptor: the chain's slot and job.
    in_flight: Vec<Option<(u16, Job)>>,
    /// Requests waiting for ring space, oldest first.
    pending: VecDeque<Job>,
}

/// How `chain` uses the queue.
enum ChainOp {
    Add,
    Pop(u16),
}

/// Why a job was not started.
enum StartError {
    /// No room in the ring now: keep it pending.
    Full(Job),
    /// It can never be started.
    Failed(Job, Error),
}

impl Inner {
    /// Adds `job` to the ring or, for `ChainOp::Pop`, takes its used chain back.
    ///
    /// # Safety
    ///
    /// For `Add`, `job`'s buffers must stay valid and untouched by the CPU until the
    /// chain is popped; for `Pop(head)`, `job` and `slot` must be the ones added with
    /// head `head`.
    unsafe fn chain(&mut self, slot: u16, job: &Job, op: ChainOp) -> virtio_drivers::Result<u32> {
        let kind = job.kind();
        let buf: *mut SlotBuf = &mut self.slot_bufs[usize::from(slot)];
        // SAFETY: `buf` points into the boxed slot array, which lives as long as the
        // driver; the slot is this chain's alone, and the device is not using it while
        // these references exist (Add: before the chain is published; Pop: after it
        // came back).
        let (header, status) = unsafe {
            (
                &*core::ptr::addr_of!((*buf).header),
                &mut *core::ptr::addr_of_mut!((*buf).status),
            )
        };
        let header: &[u8] = header;
        let status = core::slice::from_mut(status);
        let mut ins: [&[u8]; MAX_SEGMENTS + 1] = [&[]; MAX_SEGMENTS + 1];
        let mut outs: [&mut [u8]; MAX_SEGMENTS + 1] = core::array::from_fn(|_| Default::default());
        ins[0] = header;
        let (mut n_in, mut n_out) = (1, 0);
        job.for_each_buffer(|start, len| {
            if kind == T_OUT {
                // SAFETY: the job owns the buffer until it completes (an IoRequest's
                // segment, or the waiter's bounce buffer); the device only reads it.
                ins[n_in] = unsafe { core::slice::from_raw_parts(start, len) };
                n_in += 1;
            } else {
                // SAFETY: as above; nothing else reads or writes it meanwhile.
                outs[n_out] = unsafe { core::slice::from_raw_parts_mut(start, len) };
                n_out += 1;
            }
        });
        outs[n_out] = status;
        n_out += 1;
        match op {
            ChainOp::Add => {
                // SAFETY: the caller keeps the buffers valid until the pop.
                let head = unsafe { self.queue.add(&ins[..n_in], &mut outs[..n_out]) };
                head.map(u32::from)
            }
            // SAFETY: the caller passes the job and slot that were added with `head`.
            ChainOp::Pop(head) => unsafe {
                self.queue.pop_used(head, &ins[..n_in], &mut outs[..n_out])
            },
        }
    }

    /// Starts `job` on the device.
    fn start(&mut self, job: Job) -> Result<(), StartError> {
        let Some(&slot) = self.free_slots.last() else {
            return Err(StartError::Full(job));
        };
        if self.queue.available_desc() < job.buffers() + 2 {
            return Err(StartError::Full(job));
        }
        {
            let header = &mut self.slot_bufs[usize::from(slot)];
            header.header[0..4].copy_from_slice(&job.kind().to_le_bytes());
            header.header[4..8].fill(0);
            header.header[8..16].copy_from_slice(&job.sector().to_le_bytes());
            header.status = 0xff;
        }
        // SAFETY: the job's buffers stay valid until completion (it is kept in
        // `in_flight` until its chain is popped), and the CPU does not touch them
        // meanwhile.
        match unsafe { self.chain(slot, &job, ChainOp::Add) } {
            Ok(head) => {
                self.free_slots.pop();
                self.in_flight[head as usize] = Some((slot, job));
                if self.queue.should_notify() {
                    self.transport.notify(0);
                }
                Ok(())
            }
            Err(virtio_drivers::Error::QueueFull) => Err(StartError::Full(job)),
            Err(_) => Err(StartError::Failed(job, Error::Invalid)),
        }
    }

    /// Queues `job` behind the others; on failure to grow the queue, hands it back.
    fn pend(&mut self, job: Job) -> Option<(Job, Error)> {
        if self.pending.len() == self.pending.capacity() && self.pending.try_reserve(1).is_err() {
            return Some((job, Error::NoMemory));
        }
        self.pending.push_back(job);
        None
    }

    /// Starts pending jobs in order while the ring has room; returns one that failed.
    fn start_pending(&mut self) -> Option<(Job, Error)> {
        while let Some(job) = self.pending.pop_front() {
            match self.start(job) {
                Ok(()) => {}
                Err(StartError::Full(job)) => {
                    self.pending.push_front(job);
                    return None;
                }
                Err(StartError::Failed(job, error)) => return Some((job, error)),
            }
        }
        None
    }

    /// Takes one used chain back from the device: its job and outcome.
    fn pop_one(&mut self) -> Option<(Job, Result<(), Error>)> {
        let head = self.queue.peek_used()?;
        let (slot, job) = self.in_flight.get_mut(usize::from(head))?.take()?;
        // SAFETY: `slot` and `job` were stored under `head` when it was added.
        let popped = unsafe { self.chain(slot, &job, ChainOp::Pop(head)) };
        // SAFETY: the chain is back: the device no longer writes the status.
        let status = unsafe { core::ptr::read_volatile(&self.slot_bufs[usize::from(slot)].status) };
        self.free_slots.push(slot);
        let result = match (popped, status) {
            (Ok(_), S_OK) => Ok(()),
            _ => Err(Error::Io),
        };
        Some((job, result))
    }
}

/// Counters of one device.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Requests submitted (genpager's and metadata ones).
    pub submitted: u64,
    /// Requests completed.
    pub completed: u64,
    /// Completed in interrupt context (from [`VirtioBlk::interrupt`] in the I/O APIC
    /// handler).
    pub completed_in_interrupt: u64,
    /// Completed with an error.
    pub errors: u64,
    /// The most data segments one genpager request had.
    pub max_segments: usize,
    /// Requests that waited in the software queue for ring space.
    pub queued: u64,
}

/// A virtio block device.
pub struct VirtioBlk {
    inner: Mutex<Inner>,
    slot: u8,
    gsi: u8,
    capacity_sectors: u64,
    flush: bool,
    submitted: AtomicU64,
    completed: AtomicU64,
    completed_in_interrupt: AtomicU64,
    errors: AtomicU64,
    max_segments: AtomicUsize,
    queued: AtomicU64,
}

/// The devices, probed once.
static DEVICES: spin::Once<Vec<&'static VirtioBlk>> = spin::Once::new();

/// Finds and starts every virtio-blk device on PCI bus 0 (once; later calls return
/// the same devices), in slot order. The drivers live for the rest of the run.
pub fn probe_all() -> &'static [&'static VirtioBlk] {
    DEVICES.call_once(|| {
        pci::virtio_block_functions()
            .into_iter()
            .filter_map(|function| {
                let (slot, fun) = (function.slot, function.function);
                match VirtioBlk::new(function) {
                    Ok(device) => Some(&*Box::leak(Box::new(device))),
                    Err(err) => {
                        crate::kprintln!(
                            "genpager kernel: virtio-blk 00:{slot:02x}.{fun}: {err:?}"
                        );
                        None
                    }
                }
            })
            .collect()
    })
}

/// Times a thread slept in a synchronous transfer (the filesystem's metadata) until
/// its completion interrupt woke it.
static SYNC_SLEEPS: AtomicU64 = AtomicU64::new(0);

/// How many times threads slept waiting for the driver's synchronous transfers.
pub fn sync_sleeps() -> u64 {
    SYNC_SLEEPS.load(Ordering::Relaxed)
}

/// The interrupt handler of every probed device: `main.rs` routes each device's GSI
/// here. Each device's ISR status says whether it raised the line (the lines are
/// level-triggered and may be shared), and reading it acknowledges the interrupt.
pub fn interrupt_all() {
    if let Some(devices) = DEVICES.get() {
        for device in devices {
            device.interrupt();
        }
    }
}

impl VirtioBlk {
    fn new(function: pci::BlockFunction) -> virtio_drivers::Result<Self> {
        let gsi = function.q35_gsi();
        let slot = function.slot;
        let mut transport = function.transport;
        let features = transport.begin_init(Features::FLUSH | Features::VERSION_1);
        let low: u32 = transport.read_config_space(0)?;
        let high: u32 = transport.read_config_space(4)?;
        let queue = VirtQueue::new(&mut transport, 0, false, false)?;
        transport.finish_init();
        let mut pending = VecDeque::new();
        pending
            .try_reserve(PENDING_CAPACITY)
            .map_err(|_| virtio_drivers::Error::DmaError)?;
        let slot_bufs = (0..SLOTS)
            .map(|_| SlotBuf {
                header: [0; 16],
                status: 0,
            })
            .collect();
        Ok(Self {
            inner: Mutex::new(Inner {
                transport,
                queue,
                slot_bufs,
                free_slots: (0..SLOTS as u16).rev().collect(),
                in_flight: (0..QUEUE_SIZE).map(|_| None).collect(),
                pending,
            }),
            slot,
            gsi,
            capacity_sectors: u64::from(high) << 32 | u64::from(low),
            flush: features.contains(Features::FLUSH),
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            completed_in_interrupt: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            max_segments: AtomicUsize::new(0),
            queued: AtomicU64::new(0),
        })
    }

    /// The I/O APIC input (GSI) of the device's legacy INTx on q35.
    pub fn gsi(&self) -> u8 {
        self.gsi
    }

    /// The device's PCI slot on bus 0.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The device's size in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_sectors * SECTOR
    }

    /// The driver's counters.
    pub fn stats(&self) -> Stats {
        Stats {
            submitted: self.submitted.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            completed_in_interrupt: self.completed_in_interrupt.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            max_segments: self.max_segments.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
        }
    }

    /// The interrupt handler's body: acknowledges the device's interrupt, completes
    /// every finished request, and starts waiting ones.
    pub fn interrupt(&self) {
        self.complete_used(crate::interrupts::in_interrupt());
    }

    /// Completes every request whose chain the device has returned, starting pending
    /// requests as room frees up. Each completion runs with the driver's lock dropped.
    fn complete_used(&self, from_irq: bool) {
        // Reading the ISR status acknowledges (and deasserts) the interrupt; done
        // before draining, so a completion after the drain raises it again.
        let _ = self.inner.lock().transport.ack_interrupt();
        loop {
            let mut inner = self.inner.lock();
            let done = inner.pop_one();
            let failed = inner.start_pending();
            drop(inner);
            let progressed = done.is_some() || failed.is_some();
            if let Some((job, result)) = done {
                self.finish(job, result, from_irq);
            }
            if let Some((job, error)) = failed {
                self.finish(job, Err(error), from_irq);
            }
            if !progressed {
                break;
            }
        }
    }

    /// Counts and reports one finished job (no lock held).
    fn finish(&self, job: Job, result: Result<(), Error>, from_irq: bool) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if from_irq {
            self.completed_in_interrupt.fetch_add(1, Ordering::Relaxed);
        }
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        job.finish(result);
    }

    /// Starts `job`, or queues it if the ring is full (or others already wait).
    fn enqueue(&self, job: Job) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.inner.lock();
        let failed = if inner.pending.is_empty() {
            match inner.start(job) {
                Ok(()) => None,
                Err(StartError::Full(job)) => {
                    self.queued.fetch_add(1, Ordering::Relaxed);
                    inner.pend(job)
                }
                Err(StartError::Failed(job, error)) => Some((job, error)),
            }
        } else {
            self.queued.fetch_add(1, Ordering::Relaxed);
            inner.pend(job)
        };
        drop(inner);
        if let Some((job, error)) = failed {
            self.finish(job, Err(error), false);
        }
    }

    /// Sleeps until `done` is set by the op's completion, which wakes this thread (the
    /// op's `waiter`). A wake that comes before the block leaves a permit, so none is
    /// lost between the check and the sleep.
    fn wait_until(&self, done: &AtomicBool) {
        let me = crate::sched::current();
        while !done.load(Ordering::Acquire) {
            if SCHEDULER.block_slept(me) {
                SYNC_SLEEPS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs one synchronous request of `kind` at `sector` over `buf` and waits for it.
    fn transfer(&self, kind: u32, sector: u64, buf: &mut [u8]) -> Result<(), Error> {
        let op = SyncOp {
            kind,
            sector,
            buf: NonNull::from(&mut *buf),
            result: AtomicU8::new(RESULT_IO),
            done: AtomicBool::new(false),
            waiter: crate::sched::current().0,
        };
        self.enqueue(Job::Sync(NonNull::from(&op)));
        self.wait_until(&op.done);
        decode(op.result.load(Ordering::Relaxed))
    }

    /// The sector-aligned bounce buffer covering bytes `offset .. offset + len`, and
    /// its first sector.
    fn bounce(&self, offset: u64, len: usize) -> Result<(u64, Vec<u8>), Error> {
        let end = offset.checked_add(len as u64).ok_or(Error::Invalid)?;
        let first = offset / SECTOR;
        let bytes = (end.div_ceil(SECTOR) - first) * SECTOR;
        let mut buf = Vec::new();
        buf.try_reserve_exact(bytes as usize)
            .map_err(|_| Error::NoMemory)?;
        buf.resize(bytes as usize, 0);
        Ok((first, buf))
    }

    /// Reads `buf.len()` bytes at byte `offset` of the device (any alignment), and
    /// waits for them: metadata I/O for a filesystem.
    pub fn read_bytes(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        if buf.is_empty() {
            return Ok(());
        }
        let (first, mut bounce) = self.bounce(offset, buf.len())?;
        self.transfer(T_IN, first, &mut bounce)?;
        let at = (offset - first * SECTOR) as usize;
        buf.copy_from_slice(&bounce[at..at + buf.len()]);
        Ok(())
    }

    /// Writes `data` at byte `offset` of the device (any alignment: partial sectors
    /// are read first), and waits until the device has it.
    pub fn write_bytes(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let (first, mut bounce) = self.bounce(offset, data.len())?;
        let at = (offset - first * SECTOR) as usize;
        if at != 0 || !(at + data.len()).is_multiple_of(SECTOR as usize) {
            self.transfer(T_IN, first, &mut bounce)?;
        }
        bounce[at..at + data.len()].copy_from_slice(data);
        self.transfer(T_OUT, first, &mut bounce)
    }

    /// Asks the device to make written data durable (VIRTIO_BLK_T_FLUSH), if it
    /// offers that; otherwise there is nothing to do.
    pub fn flush(&self) -> Result<(), Error> {
        if !self.flush {
            return Ok(());
        }
        self.transfer(T_FLUSH, 0, &mut [])
    }

    /// Submits `count` reads of one sector each at `sector` without waiting between
    /// them, then waits for all: more chains than the ring holds at once, so some
    /// wait in the software queue. Returns each read's outcome and bytes.
    pub fn read_burst(&self, sector: u64, count: usize) -> Vec<(Result<(), Error>, Vec<u8>)> {
        let mut bufs: Vec<Vec<u8>> = (0..count).map(|_| vec![0; SECTOR as usize]).collect();
        let ops: Vec<SyncOp> = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| SyncOp {
                kind: T_IN,
                sector: sector + i as u64,
                buf: NonNull::from(buf.as_mut_slice()),
                result: AtomicU8::new(RESULT_IO),
                done: AtomicBool::new(false),
                waiter: crate::sched::current().0,
            })
            .collect();
        {
            // Interrupts masked while enqueueing, so no completion frees descriptors
            // meanwhile: the ring fills and the rest must wait in the software queue.
            let _masked = crate::interrupts::NoIrq::new();
            for op in &ops {
                self.enqueue(Job::Sync(NonNull::from(op)));
            }
        }
        for op in &ops {
            self.wait_until(&op.done);
        }
        let results: Vec<_> = ops
            .iter()
            .map(|op| decode(op.result.load(Ordering::Relaxed)))
            .collect();
        drop(ops);
        results.into_iter().zip(bufs).collect()
    }
}

impl Strategy for VirtioBlk {
    fn submit(&self, request: IoRequest) {
        let segments = request.segments().iter().filter(|s| !s.is_empty()).count();
        self.max_segments.fetch_max(segments, Ordering::Relaxed);
        if segments == 0 {
            request.complete(Ok(()));
            return;
        }
        if segments > MAX_SEGMENTS {
            self.submitted.fetch_add(1, Ordering::Relaxed);
            self.finish(Job::Pager(request), Err(Error::Invalid), false);
            return;
        }
        self.enqueue(Job::Pager(request));
    }
}
