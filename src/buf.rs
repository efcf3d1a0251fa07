//! I/O requests: what the pager hands a [`Strategy`](crate::Strategy), and the master
//! that collects a group of them (the reference's `nestiobuf_setup` /
//! `nestiobuf_done` / `biowait`).
//!
//! A transfer of one byte range becomes one *master* and one [`IoRequest`] per
//! contiguous device run. The master counts its outstanding requests plus one hold
//! for the submitter; it completes exactly once, when the submitter has said it is
//! done building (`Nest::finish`, with the bytes it skipped over holes) and the last
//! request has completed, carrying the first error any of them reported.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use crate::error::{Error, Result};
use crate::object::PageRef;
use crate::page::{PAGE_MASK, PAGE_SIZE};
use crate::sync::{Arc, Mutex, WaitQueue};

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

type Callback = Box<dyn FnOnce(Outcome) + Send>;

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
}

struct Master {
    total: usize,
    state: Mutex<MasterState>,
    /// Where a synchronous submitter sleeps until `posted` is set.
    waiters: WaitQueue,
}

impl Master {
    /// A master for `total` bytes, held once for its submitter.
    fn new(total: usize, done: Done) -> Arc<Self> {
        Arc::new(Master {
            total,
            state: Mutex::new(MasterState {
                pending: 1,
                result: Ok(()),
                transferred: 0,
                skipped: 0,
                done: Some(done),
                posted: None,
            }),
            waiters: WaitQueue::new(),
        })
    }

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
            Some((Done::Wake, _)) => self.waiters.notify_all(),
            Some((Done::Call(callback), outcome)) => callback(outcome),
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
    segments: Vec<Segment>,
    master: Option<Arc<Master>>,
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
            .field("segments", &self.segments.len())
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
        &self.segments
    }

    /// Copies `data` (exactly [`IoRequest::len`] bytes, read from the device) into the
    /// segments: what a memory-backed device does for a read.
    pub fn fill(&mut self, data: &[u8]) -> Result {
        if data.len() != self.len {
            return Err(Error::Invalid);
        }
        let mut at = 0;
        for segment in &self.segments {
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
            at += segment.len;
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
        for segment in &self.segments {
            // SAFETY: as in `fill`; the segments are only read here.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    segment.ptr.as_ptr(),
                    out[at..].as_mut_ptr(),
                    segment.len,
                );
            }
            at += segment.len;
        }
        Ok(())
    }

    /// Reports the transfer finished: `Ok` when every byte moved, or the device's
    /// error. Consumes the request, so it completes at most once; a request dropped
    /// without completing completes with [`Error::Io`], so no page stays busy forever.
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
pub(crate) struct BioWait(Arc<Master>);

impl BioWait {
    /// Sleeps until the master completes and returns its outcome.
    pub(crate) fn wait(&self) -> Outcome {
        let master = &self.0;
        loop {
            let ticket = {
                let state = master.state.lock();
                if let Some(outcome) = state.posted {
                    return outcome;
                }
                master.waiters.ticket()
            };
            master.waiters.wait(ticket);
        }
    }
}

/// The submitter's side of a master: builds its requests, then finishes it.
#[must_use = "a nest must be finished, or its master never completes"]
pub(crate) struct Nest {
    master: Option<Arc<Master>>,
    direction: Direction,
    priority: Priority,
    device_may_modify: bool,
    submitted: usize,
}

impl Nest {
    fn over(master: Arc<Master>, direction: Direction, priority: Priority) -> Self {
        Self {
            master: Some(master),
            direction,
            priority,
            device_may_modify: false,
            submitted: 0,
        }
    }

    /// A master for `total` bytes that a thread will wait for with the returned waiter.
    pub(crate) fn synchronous(
        total: usize,
        direction: Direction,
        priority: Priority,
    ) -> (Self, BioWait) {
        let master = Master::new(total, Done::Wake);
        (
            Self::over(master.clone(), direction, priority),
            BioWait(master),
        )
    }

    /// A master for `total` bytes that runs `callback` when it completes, on whichever
    /// thread completes the last request (possibly the submitter's).
    pub(crate) fn asynchronous(
        total: usize,
        direction: Direction,
        priority: Priority,
        callback: impl FnOnce(Outcome) + Send + 'static,
    ) -> Self {
        let master = Master::new(total, Done::Call(Box::new(callback)));
        Self::over(master, direction, priority)
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

    /// A request for `segments` at device `block`, counted against the master.
    pub(crate) fn request(
        &mut self,
        block: u64,
        file_offset: u64,
        segments: Vec<Segment>,
    ) -> IoRequest {
        let master = self
            .master
            .as_ref()
            .expect("nest used after finish")
            .clone();
        master.state.lock().pending += 1;
        self.submitted += 1;
        IoRequest {
            direction: self.direction,
            block,
            file_offset,
            len: segments.iter().map(|s| s.len).sum(),
            priority: self.priority,
            device_may_modify: self.device_may_modify,
            segments,
            master: Some(master),
        }
    }

    /// Ends building (the reference's `nestiobuf_done`): `skipped` bytes needed no
    /// I/O, and `result` is the error building met, if any.
    pub(crate) fn finish(mut self, skipped: usize, result: Result) {
        if let Some(master) = self.master.take() {
            master.put(0, skipped, result);
        }
    }
}

impl Drop for Nest {
    fn drop(&mut self) {
        if let Some(master) = self.master.take() {
            master.put(0, 0, Err(Error::Io));
        }
    }
}

/// The segments covering file bytes `offset .. offset + len` of `pages`, which hold
/// consecutive pages starting at `pages[0].offset`.
pub(crate) fn page_segments(pages: &[PageRef], offset: u64, len: usize) -> Result<Vec<Segment>> {
    let base = pages.first().ok_or(Error::Invalid)?.offset;
    let mut segments = Vec::new();
    let first = ((offset - base) >> crate::page::PAGE_SHIFT) as usize;
    let span = ((offset & PAGE_MASK) as usize + len).div_ceil(PAGE_SIZE);
    segments
        .try_reserve_exact(span)
        .map_err(|_| Error::NoMemory)?;
    let mut at = offset;
    let end = offset + len as u64;
    for page in pages.get(first..first + span).ok_or(Error::Invalid)? {
        let within = (at & PAGE_MASK) as usize;
        let take = (PAGE_SIZE - within).min((end - at) as usize);
        // SAFETY: `within < PAGE_SIZE`, so the pointer stays inside the frame.
        let ptr = unsafe { page.frame.add(within) };
        segments.push(Segment { ptr, len: take });
        at += take as u64;
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
    use alloc::vec;
    use core::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;

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
        };
        let mut buffers = vec![vec![0u8; 512]; 3];
        let requests: Vec<IoRequest> = buffers
            .iter_mut()
            .enumerate()
            .map(|(i, buf)| nest.request(i as u64, i as u64 * 512, segment_over(buf)))
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
        let (mut nest, waiter) = Nest::synchronous(1024, Direction::Write, Priority::TimeCritical);
        let mut a = vec![1u8; 512];
        let mut b = vec![2u8; 512];
        let first = nest.request(0, 0, segment_over(&mut a));
        let second = nest.request(1, 512, segment_over(&mut b));
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
        let (mut nest, waiter) = Nest::synchronous(512, Direction::Read, Priority::TimeCritical);
        let mut a = vec![0u8; 512];
        nest.request(3, 0, segment_over(&mut a)).complete(Ok(()));
        nest.finish(0, Err(Error::Invalid));
        assert_eq!(
            waiter.wait().result,
            Err(Error::Invalid),
            "a build error is reported"
        );
    }

    #[test]
    fn dropped_request_completes_with_io_error() {
        let (mut nest, waiter) = Nest::synchronous(512, Direction::Read, Priority::TimeCritical);
        let mut a = vec![0u8; 512];
        drop(nest.request(0, 0, segment_over(&mut a)));
        nest.finish(0, Ok(()));
        assert_eq!(waiter.wait().result, Err(Error::Io));
    }

    #[test]
    fn fill_and_gather_check_lengths() {
        let (mut nest, _waiter) = Nest::synchronous(8, Direction::Read, Priority::TimeCritical);
        let mut a = vec![0u8; 8];
        let mut request = nest.request(0, 0, segment_over(&mut a));
        assert_eq!(request.fill(&[0u8; 4]), Err(Error::Invalid));
        assert_eq!(request.gather(&mut [0u8; 9]), Err(Error::Invalid));
        assert_eq!(request.len(), 8);
        request.complete(Ok(()));
        nest.finish(0, Ok(()));
    }

    #[test]
    fn page_segments_split_at_page_boundaries() {
        let frames: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; PAGE_SIZE]).collect();
        let pages: Vec<PageRef> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| PageRef {
                offset: 8192 + (i * PAGE_SIZE) as u64,
                frame: NonNull::new(f.as_ptr() as *mut u8).unwrap(),
            })
            .collect();
        let segments = page_segments(&pages, 8192 + 3584, 4096 + 1024).unwrap();
        let lens: Vec<usize> = segments.iter().map(Segment::len).collect();
        assert_eq!(lens, [512, 4096, 512]);
        assert_eq!(
            segments[0].as_ptr().as_ptr() as usize,
            frames[0].as_ptr() as usize + 3584
        );
        assert_eq!(
            page_segments(&pages, 8192, 4 * PAGE_SIZE).err(),
            Some(Error::Invalid)
        );
    }
}
