//! I/O requests: what the pager hands a [`Strategy`](crate::Strategy), and the master
//! that collects a group of them (the reference's `nestiobuf_setup` /
//! `nestiobuf_done` / `biowait`).
//!
//! A transfer of one byte range becomes one *master* and one [`IoRequest`] per
//! contiguous device run. The master counts its outstanding requests plus one hold
//! for the submitter; it completes exactly once, when the submitter has said it is
//! done building (`Nest::finish`, with the bytes it skipped over holes) and the last
//! request has completed, carrying the first error any of them reported.
//!
//! ## Completion touches no heap
//!
//! [`IoRequest::complete`] may run in a device interrupt, so it neither allocates nor
//! frees heap memory, and never drops what the master's callback captured (a vnode's
//! last reference among it). Everything completion needs is made at submission: the
//! requests' segment lists are parked in their master (a request only points at its
//! list), the asynchronous callback is called through `&mut` and kept, and when a
//! completion gives up the last reference to a master it does not free it: it pushes
//! the master onto a global lock-free stack of completed masters, through a link inside
//! the master's own allocation. [`reap_completions`], which the kernel calls from a
//! thread that holds nothing, frees them; genpager never calls it itself (see its
//! docs).

use alloc::alloc::Layout;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::mem::ManuallyDrop;
use core::ops::Deref;
use core::ptr::{self, NonNull};

use crate::error::{Error, Result};
use crate::page::PageRef;
use crate::page::{PAGE_MASK, PAGE_SIZE};
use crate::sync::{AtomicPtr, AtomicUsize, Mutex, Ordering, WaitQueue};

/// Which way data moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Device to memory.
    Read,
    /// Memory to device.
    Write,
}

/// How urgent a request is (the reference's `BPRIO_*`), for the device's queueing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Someone waits for it now (synchronous faults and flushes).
    TimeCritical,
    /// Should complete soon (read-ahead, the page daemon).
    TimeLimited,
    /// Background (asynchronous and lazy writeback).
    TimeNonCritical,
}

/// One piece of memory a request transfers to or from: part of a page frame, or part
/// of a wired user buffer.
#[derive(Clone, Copy)]
pub struct Segment {
    ptr: NonNull<u8>,
    len: usize,
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Segment({:p}+{})", self.ptr, self.len)
    }
}

impl Segment {
    /// The segment's first byte, for a device that programs DMA from it.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The segment's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment is empty (never true for segments genpager builds).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What a master reports when it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The first error of any request, or of building them.
    pub result: Result,
    /// Bytes the device transferred.
    pub transferred: usize,
    /// Bytes skipped without I/O (holes, pages already valid, a bmap error's rest).
    pub skipped: usize,
}

impl Outcome {
    /// A transfer that failed with `error` before anything moved.
    fn failed(error: Error) -> Self {
        Self {
            result: Err(error),
            transferred: 0,
            skipped: 0,
        }
    }
}

/// An asynchronous master's completion: called once, through `&mut`, so that nothing
/// it captures is dropped where it runs (possibly an interrupt); it is dropped with the
/// master, in thread context.
type Callback = Box<dyn FnMut(Outcome) + Send>;

enum Done {
    /// Post the outcome for the [`BioWait`] of a synchronous transfer.
    Wake,
    Call(Callback),
}

struct MasterState {
    /// Outstanding requests, plus one while the submitter is still building.
    pending: usize,
    result: Result,
    transferred: usize,
    skipped: usize,
    done: Option<Done>,
    /// The outcome, once complete, of a master whose submitter waits for it.
    posted: Option<Outcome>,
    /// The segment lists of the requests built, parked here by the submitter
    /// (`Nest::finish`) and freed with the master, so that a request's completion frees
    /// none: each request points into its list.
    segments: Parked,
}

/// Segment lists kept only to be freed with their master. The first is kept inline:
/// most transfers are one request, and parking its list then allocates nothing.
#[derive(Default)]
struct Parked {
    first: Option<Vec<Segment>>,
    rest: Vec<Vec<Segment>>,
}

impl Parked {
    /// Keeps `list` (moving a `Vec` leaves its elements in place) and returns where its
    /// segments are; or [`Error::NoMemory`] when there is no room to keep it.
    fn park(&mut self, list: Vec<Segment>) -> Result<NonNull<[Segment]>> {
        let segments = NonNull::from(list.as_slice());
        if self.first.is_none() {
            self.first = Some(list);
        } else {
            self.rest.try_reserve(1).map_err(|_| Error::NoMemory)?;
            self.rest.push(list);
        }
        Ok(segments)
    }
}

// SAFETY: the master never reaches the memory the segments point at (its requests do,
// and are `Send` on their own terms); it only frees the lists, on any thread, which
// the global allocator allows.
unsafe impl Send for Parked {}

struct Master {
    total: usize,
    state: Mutex<MasterState>,
    /// Where a synchronous submitter sleeps until `posted` is set.
    waiters: WaitQueue,
}

/// `value` in a box, or `value` given back when the heap has no room for it:
/// `Box::new` aborts instead, which a kernel cannot afford, and `Box::try_new` is not
/// stable.
fn try_box<T>(value: T) -> core::result::Result<Box<T>, T> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        // A zero-sized box allocates nothing, so it cannot fail.
        return Ok(Box::new(value));
    }
    // SAFETY: the layout's size is not zero.
    let raw = unsafe { alloc::alloc::alloc(layout) }.cast::<T>();
    let Some(raw) = NonNull::new(raw) else {
        return Err(value);
    };
    // SAFETY: `raw` was just allocated with `T`'s layout: aligned, valid for a write
    // of one `T`, and not yet initialised (`write` drops nothing there).
    unsafe { raw.as_ptr().write(value) };
    // SAFETY: the global allocator gave the memory for `Layout::new::<T>()` and it
    // holds an initialised `T`: exactly what a `Box<T>` owns and later frees.
    Ok(unsafe { Box::from_raw(raw.as_ptr()) })
}

/// A master and the count of the references to it.
struct Counted {
    references: AtomicUsize,
    /// The next master down the [`COMPLETED`] stack, once this one is on it.
    next: AtomicPtr<Counted>,
    master: Master,
}

/// Frees `counted`, in thread context: its callback (and what that captured), its
/// segment lists, its allocation.
///
/// # Safety
///
/// - `counted` came from `MasterRef::try_new` and no reference to it is left.
unsafe fn free(counted: NonNull<Counted>) {
    // SAFETY: the caller promises the allocation is a `Box<Counted>` nothing else
    // reaches any more.
    drop(unsafe { Box::from_raw(counted.as_ptr()) });
}

/// Masters whose last reference a completion gave up, waiting for [`reap_completions`]
/// to free them: a lock-free stack (Treiber's), linked through `Counted::next`.
/// Completions push one master at a time; a reaper takes the whole stack at once with
/// a swap, so no node is ever popped alone and a pushed node cannot come back while a
/// push is reading the head (no ABA). Reapers need no lock between them: each frees the
/// stack it took. Nor does a reaper hold anything while it frees, so a vnode whose
/// teardown (run by the free) starts I/O, and so reaps again, cannot deadlock.
struct Completed {
    head: AtomicPtr<Counted>,
}

impl Completed {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Self {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Loom's atomics have no `const` constructor (the stack is a lazy static there).
    #[cfg(loom)]
    fn new() -> Self {
        Self {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Pushes `counted`, which no reference reaches any more. Lock-free, allocates
    /// nothing: fit for an interrupt.
    fn push(&self, counted: NonNull<Counted>) {
        // SAFETY: the allocation stays until a reaper takes it off the stack, which it
        // joins below; until then only this push touches its link.
        let link = unsafe { &counted.as_ref().next };
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            link.store(head, Ordering::Relaxed);
            // Release: the master's last use (and its link) happen before a reaper,
            // which acquires the head, frees it.
            match self.head.compare_exchange(
                head,
                counted.as_ptr(),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Frees every master on the stack.
    fn reap(&self) {
        // A look first, so that the common case (nothing completed since the last
        // reap) writes no shared cache line: a kernel may call this very often.
        if self.head.load(Ordering::Relaxed).is_null() {
            return;
        }
        // Acquire: see each pushed master's last use and link (later pushes continue
        // the release sequence of the earlier ones on the head).
        let mut next = self.head.swap(ptr::null_mut(), Ordering::Acquire);
        while let Some(counted) = NonNull::new(next) {
            // SAFETY: the swap made this reaper the only owner of the taken stack.
            next = unsafe { counted.as_ref() }.next.load(Ordering::Relaxed);
            // SAFETY: a master is pushed only once its last reference is gone
            // (`MasterRef::drop`), and taken off the stack only here.
            unsafe { free(counted) };
        }
    }
}

impl Drop for Completed {
    /// Under loom the stack is a lazy static, dropped at the end of each execution:
    /// what is left on it is freed then, so no model leaks into the next.
    fn drop(&mut self) {
        self.reap();
    }
}

#[cfg(not(loom))]
static COMPLETED: Completed = Completed::new();

#[cfg(loom)]
crate::sync::lazy_static! {
    static ref COMPLETED: Completed = Completed::new();
}

/// Frees what I/O completions left behind: the request groups whose last request
/// completed, with their segment lists and their asynchronous callbacks, and the
/// references those callbacks hold — among them references to vnodes, so this may drop
/// the last reference to a vnode and run its teardown.
///
/// [`IoRequest::complete`] may run in an interrupt, where freeing memory or tearing a
/// file down is not allowed, so it leaves that work here. Call this from a thread that
/// holds nothing — no genpager page, lock or transaction and no lock of the kernel's a
/// vnode teardown could need: a kernel worker woken after interrupts, or the idle loop
/// (NetBSD defers `vrele` from `biodone` to a thread of its own for the same reason).
/// A teardown run here may do I/O on any file.
///
/// genpager never calls it itself: in the middle of any call it cannot know what its
/// caller holds (a `read` copying out to a user buffer mapped from another file
/// faults that file while holding pages of the first, and a teardown reading the first
/// would wait for itself). Until it is called, each finished asynchronous transfer
/// keeps its request group and a reference to its vnode.
///
/// Lock-free, and it holds nothing while it frees (a vnode teardown it runs may start
/// I/O, which reaps again). A call that returns has freed everything completed before
/// it began, except what a concurrent call took first, which that call frees.
pub fn reap_completions() {
    COMPLETED.reap();
}

/// A counted reference to a [`Master`] that is shared by its submitter, its waiter
/// and its requests (which complete on any thread): an `Arc` whose allocation can
/// fail. `Arc::new` aborts when the heap is out of room and `Arc::try_new` is not
/// stable; the count uses the lock facade's atomics, so loom models it.
///
/// The submitter's and the waiter's references live in thread context, and the last of
/// them frees the master where it is dropped. A request holds a [`RequestRef`]
/// instead, which may be dropped in an interrupt.
struct MasterRef {
    counted: NonNull<Counted>,
}

/// A request's reference to its [`Master`]: dropped where the request completes,
/// perhaps in an interrupt, so when it is the last it puts the master on the
/// [`COMPLETED`] stack, for [`reap_completions`], instead of freeing it.
struct RequestRef(ManuallyDrop<MasterRef>);

// SAFETY: a `MasterRef` hands out only `&Master` (Sync: a lock, a wait queue and a
// `Send` callback), and the last one, on whatever thread, frees it; like
// `Arc<Master>`, it may be sent and shared between threads.
unsafe impl Send for MasterRef {}
// SAFETY: as for `Send`: shared access reaches only the `Sync` master and the atomic
// count.
unsafe impl Sync for MasterRef {}

static_assertions::assert_impl_all!(Master: Send, Sync);

impl MasterRef {
    /// A master for `total` bytes, held once for its submitter; or, when the heap has
    /// no room for it, `done` given back.
    fn try_new(total: usize, done: Done) -> core::result::Result<Self, Done> {
        let Ok(counted) = try_box(Counted {
            references: AtomicUsize::new(1),
            next: AtomicPtr::new(ptr::null_mut()),
            master: Master {
                total,
                state: Mutex::new(MasterState {
                    pending: 1,
                    result: Ok(()),
                    transferred: 0,
                    skipped: 0,
                    // Set once the master exists, so a refusal can give `done` back.
                    done: None,
                    posted: None,
                    segments: Parked::default(),
                }),
                waiters: WaitQueue::new(),
            },
        }) else {
            return Err(done);
        };
        counted.master.state.lock().done = Some(done);
        Ok(Self {
            counted: NonNull::from(Box::leak(counted)),
        })
    }

    /// Another reference, for a request: one that may be dropped in an interrupt.
    fn for_request(&self) -> RequestRef {
        RequestRef(ManuallyDrop::new(self.clone()))
    }

    /// Gives up this reference; returns the master's allocation when it was the last,
    /// for the caller to free or to leave on the completed stack.
    fn release(&self) -> Option<NonNull<Counted>> {
        // AcqRel: every other holder's use of the master happens before its
        // decrement (release), and the last holder sees them all (acquire) before
        // it frees the master.
        (self.counted().references.fetch_sub(1, Ordering::AcqRel) == 1).then_some(self.counted)
    }

    fn counted(&self) -> &Counted {
        // SAFETY: the allocation lives while any reference does, and this is one.
        unsafe { self.counted.as_ref() }
    }
}

impl Clone for MasterRef {
    fn clone(&self) -> Self {
        // Relaxed, as in `Arc`: a new reference is made from an existing one, which
        // already keeps the master alive; no other memory is published by it.
        self.counted().references.fetch_add(1, Ordering::Relaxed);
        Self {
            counted: self.counted,
        }
    }
}

impl Deref for MasterRef {
    type Target = Master;
    fn deref(&self) -> &Master {
        &self.counted().master
    }
}

impl Drop for MasterRef {
    fn drop(&mut self) {
        if let Some(last) = self.release() {
            // SAFETY: that was the last reference: nothing else can reach the
            // allocation, which `try_new` made from a `Box<Counted>`.
            unsafe { free(last) };
        }
    }
}

impl Deref for RequestRef {
    type Target = Master;
    fn deref(&self) -> &Master {
        &self.0
    }
}

impl Drop for RequestRef {
    fn drop(&mut self) {
        // Perhaps in an interrupt: the last reference leaves the freeing to thread
        // context. (The inner `MasterRef` is never dropped, so it frees nothing.)
        if let Some(last) = self.0.release() {
            COMPLETED.push(last);
        }
    }
}

impl Master {
    // Cannot overflow: the bytes reported are disjoint parts of `total` (a `usize`), and
    // `pending` counts requests built and not yet put, each put once.
    #[allow(clippy::arithmetic_side_effects)]
    fn put(&self, bytes_done: usize, skipped: usize, result: Result) {
        let finished = {
            let mut state = self.state.lock();
            state.transferred += bytes_done;
            state.skipped += skipped;
            if state.result.is_ok() {
                state.result = result;
            }
            state.pending -= 1;
            if state.pending == 0 {
                let outcome = Outcome {
                    result: state.result,
                    transferred: state.transferred,
                    skipped: state.skipped,
                };
                debug_assert!(
                    outcome.result.is_err() || outcome.transferred + outcome.skipped == self.total,
                    "master accounted {} + {} of {} bytes",
                    outcome.transferred,
                    outcome.skipped,
                    self.total
                );
                let done = state.done.take();
                if let Some(Done::Wake) = done {
                    state.posted = Some(outcome);
                }
                done.map(|done| (done, outcome))
            } else {
                None
            }
        };
        match finished {
            Some((Done::Wake, _)) => {
                self.waiters.wake_all();
            }
            Some((Done::Call(mut callback), outcome)) => {
                callback(outcome);
                // Kept, not dropped: what it captured goes with the master, in thread
                // context.
                self.state.lock().done = Some(Done::Call(callback));
            }
            None => {}
        }
    }
}

/// A request handed to [`Strategy::submit`](crate::Strategy::submit).
#[must_use = "a request must be completed exactly once"]
pub struct IoRequest {
    direction: Direction,
    block: u64,
    file_offset: u64,
    len: usize,
    priority: Priority,
    device_may_modify: bool,
    /// The request's segment list, owned by its nest until it finishes and then by its
    /// master (`MasterState::segments`), which `master` keeps alive: completing the
    /// request frees nothing.
    segments: NonNull<[Segment]>,
    master: Option<RequestRef>,
}

// SAFETY: the segments point at busy pages or wired buffers that the request owns
// until it completes (see `IoRequest::fill`); no other thread touches them meanwhile,
// so the request may complete on any thread.
unsafe impl Send for IoRequest {}

impl fmt::Debug for IoRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoRequest")
            .field("direction", &self.direction)
            .field("block", &self.block)
            .field("len", &self.len)
            .field("priority", &self.priority)
            .field("segments", &self.segments().len())
            .finish()
    }
}

impl IoRequest {
    /// Which way the data moves.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The first device block, in 512-byte units (the reference's `b_blkno`).
    pub fn block(&self) -> u64 {
        self.block
    }

    /// The file offset of the first byte (for tracing).
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Bytes to transfer: the sum of the segments' lengths.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the request transfers nothing (never true for requests genpager builds).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The urgency hint.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Whether the device may change the data of a write in place (the reference's
    /// `gop_write_rwmap`, for filesystems whose strategy rewrites buffers).
    pub fn device_may_modify(&self) -> bool {
        self.device_may_modify
    }

    /// The memory to transfer, in order.
    pub fn segments(&self) -> &[Segment] {
        // SAFETY: the list is parked in the nest and then the master, and freed only
        // with the master, which this request's reference keeps alive; a parked list is
        // never changed (moving its `Vec` leaves its elements in place).
        unsafe { self.segments.as_ref() }
    }

    /// Copies `data` (exactly [`IoRequest::len`] bytes, read from the device) into the
    /// segments: what a memory-backed device does for a read.
    pub fn fill(&mut self, data: &[u8]) -> Result {
        if data.len() != self.len {
            return Err(Error::Invalid);
        }
        let mut at = 0;
        for segment in self.segments() {
            // SAFETY: each segment is memory the request owns until it completes: a
            // busy page's frame range (the busy protocol keeps every other thread off
            // it) or a wired buffer; the lengths sum to `self.len == data.len()`.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    data[at..].as_ptr(),
                    segment.ptr.as_ptr(),
                    segment.len,
                );
            }
            // Cannot overflow: the segments' lengths sum to `self.len`.
            #[allow(clippy::arithmetic_side_effects)]
            {
                at += segment.len;
            }
        }
        Ok(())
    }

    /// Copies the segments (exactly [`IoRequest::len`] bytes, to be written) into
    /// `out`: what a memory-backed device does for a write.
    pub fn gather(&self, out: &mut [u8]) -> Result {
        if out.len() != self.len {
            return Err(Error::Invalid);
        }
        let mut at = 0;
        for segment in self.segments() {
            // SAFETY: as in `fill`; the segments are only read here.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    segment.ptr.as_ptr(),
                    out[at..].as_mut_ptr(),
                    segment.len,
                );
            }
            // Cannot overflow: the segments' lengths sum to `self.len`.
            #[allow(clippy::arithmetic_side_effects)]
            {
                at += segment.len;
            }
        }
        Ok(())
    }

    /// Reports the transfer finished: `Ok` when every byte moved, or the device's
    /// error. Consumes the request, so it completes at most once; a request dropped
    /// without completing completes with [`Error::Io`], so no page stays busy forever.
    ///
    /// May be called from an interrupt handler: it takes only short spin locks (the
    /// request group's and, when the group completes, the object's through the
    /// [`PageCache`](crate::PageCache) calls that settle its pages), never sleeps,
    /// never allocates or frees heap memory, and never drops a vnode. What it leaves
    /// (the finished group, what its completion captured) is freed in thread context by
    /// [`reap_completions`], which the kernel calls from a thread that holds nothing.
    pub fn complete(mut self, result: Result) {
        if let Some(master) = self.master.take() {
            let bytes = if result.is_ok() { self.len } else { 0 };
            drop(self);
            master.put(bytes, 0, result);
        }
    }
}

impl Drop for IoRequest {
    fn drop(&mut self) {
        if let Some(master) = self.master.take() {
            master.put(0, 0, Err(Error::Io));
        }
    }
}

/// A synchronous waiter for a master (the reference's `biowait`).
pub(crate) struct BioWait(MasterRef);

impl BioWait {
    /// Sleeps until the master completes and returns its outcome.
    pub(crate) fn wait(&self) -> Outcome {
        let master = &self.0;
        loop {
            let state = master.state.lock();
            if let Some(outcome) = state.posted {
                return outcome;
            }
            master.waiters.sleep(0, state);
        }
    }
}

/// The submitter's side of a master: builds its requests, then finishes it.
#[must_use = "a nest must be finished, or its master never completes"]
pub(crate) struct Nest {
    master: Option<MasterRef>,
    direction: Direction,
    priority: Priority,
    device_may_modify: bool,
    submitted: usize,
    /// The segment lists of the requests built so far, parked in the master when the
    /// nest finishes.
    segments: Parked,
}

impl Nest {
    fn over(master: MasterRef, direction: Direction, priority: Priority) -> Self {
        Self {
            master: Some(master),
            direction,
            priority,
            device_may_modify: false,
            submitted: 0,
            segments: Parked::default(),
        }
    }

    /// A master for `total` bytes that a thread will wait for with the returned waiter,
    /// or [`Error::NoMemory`] when the heap has no room for it.
    pub(crate) fn synchronous(
        total: usize,
        direction: Direction,
        priority: Priority,
    ) -> Result<(Self, BioWait)> {
        let master = MasterRef::try_new(total, Done::Wake).map_err(|_| Error::NoMemory)?;
        Ok((
            Self::over(master.clone(), direction, priority),
            BioWait(master),
        ))
    }

    /// A master for `total` bytes that runs `callback` when it completes, on whichever
    /// thread completes the last request (possibly the submitter's), possibly in an
    /// interrupt. The callback is called once, through `&mut`: what it captures is
    /// dropped with the master, in thread context ([`reap_completions`]), so it may
    /// hold a vnode; it must take what it settles by reference.
    ///
    /// When the heap has no room for the master, `callback` runs at once, on this
    /// thread, with [`Error::NoMemory`] and nothing transferred — as if every request
    /// had failed — and this returns that error. The callback is where an
    /// asynchronous transfer settles its pages and ends its counts, so it is run
    /// rather than dropped: its owner needs no second failure path, and nothing it
    /// holds is left busy or counted forever. (A device may complete inline, so the
    /// callback already runs on the submitter's thread before the call returns.)
    pub(crate) fn asynchronous<F>(
        total: usize,
        direction: Direction,
        priority: Priority,
        callback: F,
    ) -> Result<Self>
    where
        F: FnMut(Outcome) + Send + 'static,
    {
        let boxed = match try_box(callback) {
            Ok(boxed) => boxed,
            Err(mut callback) => {
                callback(Outcome::failed(Error::NoMemory));
                return Err(Error::NoMemory);
            }
        };
        match MasterRef::try_new(total, Done::Call(boxed)) {
            Ok(master) => Ok(Self::over(master, direction, priority)),
            Err(done) => {
                if let Done::Call(mut callback) = done {
                    callback(Outcome::failed(Error::NoMemory));
                }
                Err(Error::NoMemory)
            }
        }
    }

    /// Lets the device change written data in place (`gop_write_rwmap`).
    pub(crate) fn allow_device_modify(&mut self) {
        self.device_may_modify = true;
    }

    /// How many requests were built so far.
    #[cfg(test)]
    pub(crate) fn submitted(&self) -> usize {
        self.submitted
    }

    /// A request for `segments` at device `block`, counted against the master; or
    /// [`Error::NoMemory`] when the heap has no room to park the segment list (the
    /// request's completion must not free it), with nothing counted.
    pub(crate) fn request(
        &mut self,
        block: u64,
        file_offset: u64,
        segments: Vec<Segment>,
    ) -> Result<IoRequest> {
        let len = segments.iter().map(|s| s.len).sum();
        let list = self.segments.park(segments)?;
        let master = self
            .master
            .as_ref()
            .expect("nest used after finish")
            .for_request();
        // Cannot overflow: each request built covers at least one byte of the nest's
        // `total` (a `usize`).
        #[allow(clippy::arithmetic_side_effects)]
        {
            master.state.lock().pending += 1;
            self.submitted += 1;
        }
        Ok(IoRequest {
            direction: self.direction,
            block,
            file_offset,
            len,
            priority: self.priority,
            device_may_modify: self.device_may_modify,
            segments: list,
            master: Some(master),
        })
    }

    /// Ends building (the reference's `nestiobuf_done`): `skipped` bytes needed no
    /// I/O, and `result` is the error building met, if any.
    pub(crate) fn finish(mut self, skipped: usize, result: Result) {
        self.end(skipped, result);
    }

    /// Parks the segment lists in the master, then gives up the submitter's hold.
    fn end(&mut self, skipped: usize, result: Result) {
        if let Some(master) = self.master.take() {
            let parked = core::mem::take(&mut self.segments);
            master.state.lock().segments = parked;
            master.put(0, skipped, result);
        }
    }
}

impl Drop for Nest {
    fn drop(&mut self) {
        self.end(0, Err(Error::Io));
    }
}

/// The segments covering file bytes `offset .. offset + len` of `pages`, which hold
/// consecutive pages starting at `pages[0].offset`.
pub(crate) fn page_segments(pages: &[PageRef], offset: u64, len: usize) -> Result<Vec<Segment>> {
    let base = pages.first().ok_or(Error::Invalid)?.offset;
    let first = offset
        .checked_sub(base)
        .and_then(|from| usize::try_from(from >> crate::page::PAGE_SHIFT).ok())
        .ok_or(Error::Invalid)?;
    let span = ((offset & PAGE_MASK) as usize)
        .checked_add(len)
        .ok_or(Error::Invalid)?
        .div_ceil(PAGE_SIZE);
    let end = u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len))
        .ok_or(Error::Invalid)?;
    let covered = first
        .checked_add(span)
        .and_then(|last| pages.get(first..last))
        .ok_or(Error::Invalid)?;
    let mut segments = Vec::new();
    segments
        .try_reserve_exact(span)
        .map_err(|_| Error::NoMemory)?;
    let mut at = offset;
    for page in covered {
        let within = (at & PAGE_MASK) as usize;
        // Cannot overflow: `within < PAGE_SIZE`, and `at <= end` (the `span` pages
        // cover `offset .. end` exactly).
        #[allow(clippy::arithmetic_side_effects)]
        let take = (PAGE_SIZE - within).min((end - at) as usize);
        // SAFETY: `within < PAGE_SIZE`, so the pointer stays inside the frame.
        let ptr = unsafe { page.frame.add(within) };
        segments.push(Segment { ptr, len: take });
        // Never saturates: `at + take <= end`.
        at = at.saturating_add(take as u64);
    }
    debug_assert_eq!(at, end);
    Ok(segments)
}

/// A segment over caller memory (direct I/O), which the caller keeps wired and
/// untouched until the request completes.
pub(crate) fn raw_segment(ptr: NonNull<u8>, len: usize) -> Segment {
    Segment { ptr, len }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::vec;
    use core::cell::Cell;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::alloc::{GlobalAlloc, System};
    use std::thread;

    /// The test binary's allocator: `System`, except that a thread can make one of its
    /// own coming allocations fail, and it counts each thread's live allocations.
    struct FailingAllocator;

    std::thread_local! {
        /// Allocations to let through before failing one; 0 = disarmed.
        static FAIL_IN: Cell<usize> = const { Cell::new(0) };
        /// Allocations minus deallocations made by this thread.
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    // SAFETY: every call is forwarded to `System` unchanged, except that an armed
    // thread may get null from `alloc`, which `GlobalAlloc` allows.
    unsafe impl GlobalAlloc for FailingAllocator {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let fail = FAIL_IN.with(|fail_in| match fail_in.get() {
                0 => false,
                1 => {
                    fail_in.set(0);
                    true
                }
                n => {
                    fail_in.set(n - 1);
                    false
                }
            });
            if fail {
                return core::ptr::null_mut();
            }
            LIVE.with(|live| live.set(live.get() + 1));
            // SAFETY: forwarded with the caller's own guarantees.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.with(|live| live.set(live.get() - 1));
            // SAFETY: `ptr` came from `System` via `alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: FailingAllocator = FailingAllocator;

    /// Runs `f` with the `n`-th allocation this thread makes failing, and returns
    /// what it returned and how many allocations it left live.
    fn failing_nth<R>(n: usize, f: impl FnOnce() -> R) -> (R, isize) {
        let before = LIVE.with(Cell::get);
        FAIL_IN.with(|fail_in| fail_in.set(n));
        let result = f();
        FAIL_IN.with(|fail_in| fail_in.set(0));
        (result, LIVE.with(Cell::get) - before)
    }

    fn segment_over(buf: &mut [u8]) -> Vec<Segment> {
        vec![raw_segment(
            NonNull::new(buf.as_mut_ptr()).unwrap(),
            buf.len(),
        )]
    }

    #[test]
    fn nested_requests_complete_master_once_from_another_thread() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(None));
        let mut nest = {
            let (calls, seen) = (calls.clone(), seen.clone());
            Nest::asynchronous(
                3 * 512 + 100,
                Direction::Read,
                Priority::TimeLimited,
                move |outcome| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    *seen.lock() = Some(outcome);
                },
            )
            .unwrap()
        };
        let mut buffers = vec![vec![0u8; 512]; 3];
        let requests: Vec<IoRequest> = buffers
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| {
                nest.request(i as u64, i as u64 * 512, segment_over(buf))
                    .unwrap()
            })
            .collect();
        assert_eq!(nest.submitted(), 3);
        nest.finish(100, Ok(()));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "requests still outstanding"
        );
        let device = thread::spawn(move || {
            for mut request in requests {
                request.fill(&[7u8; 512]).unwrap();
                request.complete(Ok(()));
            }
        });
        device.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let outcome = seen.lock().unwrap();
        assert_eq!(
            outcome,
            Outcome {
                result: Ok(()),
                transferred: 1536,
                skipped: 100
            }
        );
        assert!(buffers.iter().all(|b| b.iter().all(|&x| x == 7)));
    }

    #[test]
    fn first_error_wins_and_waiter_is_woken() {
        let (mut nest, waiter) =
            Nest::synchronous(1024, Direction::Write, Priority::TimeCritical).unwrap();
        let mut a = vec![1u8; 512];
        let mut b = vec![2u8; 512];
        let first = nest.request(0, 0, segment_over(&mut a)).unwrap();
        let second = nest.request(1, 512, segment_over(&mut b)).unwrap();
        nest.finish(0, Ok(()));
        let device = thread::spawn(move || {
            let mut out = [0u8; 512];
            second.gather(&mut out).unwrap();
            assert_eq!(out, [2u8; 512]);
            second.complete(Err(Error::Io));
            first.complete(Err(Error::NoSpace));
        });
        let outcome = waiter.wait();
        device.join().unwrap();
        assert_eq!(outcome.result, Err(Error::Io));
        assert_eq!(outcome.transferred, 0);
    }

    #[test]
    fn completion_before_finish_waits_for_the_submitter() {
        let (mut nest, waiter) =
            Nest::synchronous(512, Direction::Read, Priority::TimeCritical).unwrap();
        let mut a = vec![0u8; 512];
        nest.request(3, 0, segment_over(&mut a))
            .unwrap()
            .complete(Ok(()));
        nest.finish(0, Err(Error::Invalid));
        assert_eq!(
            waiter.wait().result,
            Err(Error::Invalid),
            "a build error is reported"
        );
    }

    #[test]
    fn dropped_request_completes_with_io_error() {
        let (mut nest, waiter) =
            Nest::synchronous(512, Direction::Read, Priority::TimeCritical).unwrap();
        let mut a = vec![0u8; 512];
        drop(nest.request(0, 0, segment_over(&mut a)).unwrap());
        nest.finish(0, Ok(()));
        assert_eq!(waiter.wait().result, Err(Error::Io));
    }

    #[test]
    fn a_master_the_heap_cannot_hold_is_no_memory_and_leaks_nothing() {
        for n in 1..=3 {
            // Room for the one outcome made beforehand, so recording it allocates nothing.
            let seen = Arc::new(Mutex::new(Vec::with_capacity(1)));
            let captured = seen.clone();
            let (nest, live) = failing_nth(n, move || {
                Nest::asynchronous(
                    512,
                    Direction::Write,
                    Priority::TimeNonCritical,
                    move |outcome| {
                        captured.lock().push(outcome);
                    },
                )
            });
            match n {
                // The callback's box, then the master's: the callback runs with the
                // error, so whatever it settles is settled.
                1 | 2 => {
                    assert_eq!(nest.err(), Some(Error::NoMemory), "failing allocation {n}");
                    assert_eq!(live, 0, "nothing leaked when allocation {n} failed");
                    assert_eq!(*seen.lock(), [Outcome::failed(Error::NoMemory)]);
                }
                // Two allocations in all: the third is never made.
                _ => {
                    assert_eq!(live, 2);
                    nest.unwrap().finish(512, Ok(()));
                    assert_eq!(
                        *seen.lock(),
                        [Outcome {
                            result: Ok(()),
                            transferred: 0,
                            skipped: 512
                        }]
                    );
                }
            }
            assert_eq!(Arc::strong_count(&seen), 1, "the callback is gone");
        }

        let (sync, live) = failing_nth(1, || {
            Nest::synchronous(512, Direction::Read, Priority::TimeCritical)
        });
        assert_eq!(sync.err(), Some(Error::NoMemory));
        assert_eq!(live, 0);
        let (sync, live) = failing_nth(2, || {
            Nest::synchronous(512, Direction::Read, Priority::TimeCritical)
        });
        let (nest, waiter) = sync.expect("one allocation is all a synchronous master needs");
        assert_eq!(live, 1);
        nest.finish(512, Ok(()));
        assert_eq!(waiter.wait().result, Ok(()));
    }

    #[test]
    fn fill_and_gather_check_lengths() {
        let (mut nest, _waiter) =
            Nest::synchronous(8, Direction::Read, Priority::TimeCritical).unwrap();
        let mut a = vec![0u8; 8];
        let mut request = nest.request(0, 0, segment_over(&mut a)).unwrap();
        assert_eq!(request.fill(&[0u8; 4]), Err(Error::Invalid));
        assert_eq!(request.gather(&mut [0u8; 9]), Err(Error::Invalid));
        assert_eq!(request.len(), 8);
        request.complete(Ok(()));
        nest.finish(0, Ok(()));
    }

    #[test]
    fn page_segments_split_at_page_boundaries() {
        const P: u64 = PAGE_SIZE as u64;
        let frames: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; PAGE_SIZE]).collect();
        let pages: Vec<PageRef> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| PageRef {
                offset: (2 + i) as u64 * P,
                frame: NonNull::new(f.as_ptr() as *mut u8).unwrap(),
            })
            .collect();
        let segments = page_segments(&pages, 3 * P - 512, PAGE_SIZE + 1024).unwrap();
        let lens: Vec<usize> = segments.iter().map(Segment::len).collect();
        assert_eq!(lens, [512, PAGE_SIZE, 512]);
        assert_eq!(
            segments[0].as_ptr().as_ptr() as usize,
            frames[0].as_ptr() as usize + PAGE_SIZE - 512
        );
        assert_eq!(
            page_segments(&pages, 2 * P, 4 * PAGE_SIZE).err(),
            Some(Error::Invalid)
        );
    }
}
