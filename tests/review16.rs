//! Adversarial review of the sync16/completion16 change (`git diff 47e4182 HEAD`): the
//! `Scheduler` and `Interrupts` hooks, keyed waits, the writer-preferring object lock
//! and heap-free completion with `reap_completions`.
//!
//! This binary registers, before anything in it takes a lock or waits:
//! - a counting [`Interrupts`] hook (one "CPU" per thread: a per-thread nesting depth),
//!   which also counts `enable`s without a matching `disable`;
//! - a [`Scheduler`] around the std [`ThreadParker`] whose `block` returns spuriously
//!   every other call (allowed by the contract), which logs every wake and counts the
//!   blocks made with interrupts masked (a kernel cannot sleep with them masked);
//! - a counting global allocator (per thread, only while a test says so);
//! - the hook's nesting depth as the depth probe of the capture rig (`tests/capture`),
//!   whose files record it when they are torn down.
//!
//! FINDINGS are tests that failed on the reviewed code (each comment says how) and pass
//! since the fixes that followed; PASSING PROBES passed from the start.
#![cfg(not(loom))]

mod capture;
mod common;
mod heap;

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use capture::{PAGES, capture, dirty_all, file, none_busy};
use common::*;
use genpager::buf::{Direction, IoRequest};
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::sync::{
    Interrupts, RwLock, Scheduler, ThreadParker, Token, set_interrupts, set_scheduler,
};
use genpager::testing::{Layout, MemDisk, MemFs};
use genpager::{
    Error, Fault, Fetched, GetFlags, PAGE_SIZE, PutFlags, getpages, putpages, reap_completions,
};

const P: u64 = PAGE_SIZE as u64;

// ---- the hooks of this binary ------------------------------------------------------

std::thread_local! {
    /// This "CPU"'s interrupt-disable nesting depth.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

static UNMATCHED_ENABLES: AtomicUsize = AtomicUsize::new(0);
static BLOCKS_MASKED: AtomicUsize = AtomicUsize::new(0);
static BLOCK_CALLS: AtomicUsize = AtomicUsize::new(0);

fn depth() -> usize {
    DEPTH.with(Cell::get)
}

struct CountingInterrupts;

impl Interrupts for CountingInterrupts {
    fn disable(&self) {
        let _ = DEPTH.try_with(|d| d.set(d.get() + 1));
    }
    fn enable(&self) {
        let _ = DEPTH.try_with(|d| {
            if d.get() == 0 {
                UNMATCHED_ENABLES.fetch_add(1, Ordering::SeqCst);
            } else {
                d.set(d.get() - 1);
            }
        });
    }
}

/// ThreadParker with spurious returns from `block` and a log of wakes.
struct Spurious {
    parker: ThreadParker,
    wakes: Mutex<Vec<Token>>,
}

impl Scheduler for Spurious {
    fn current(&self) -> Token {
        self.parker.current()
    }
    fn block(&self, token: Token) {
        if depth() != 0 {
            BLOCKS_MASKED.fetch_add(1, Ordering::SeqCst);
        }
        if BLOCK_CALLS.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
            return; // spurious
        }
        self.parker.block(token);
    }
    fn wake(&self, token: Token) {
        // The log is the test's, not genpager's: its growth is not counted against
        // the completion that wakes.
        heap::uncounted(|| {
            self.wakes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(token)
        });
        self.parker.wake(token);
    }
}

static INTERRUPTS: CountingInterrupts = CountingInterrupts;
static SCHED: Spurious = Spurious {
    parker: ThreadParker,
    wakes: Mutex::new(Vec::new()),
};

/// Registers the hooks and the depth probe (first thing in every test) and serialises the tests of this
/// binary (a reap on one test's thread must not free another test's completions, and
/// the wake log is global).
fn init() -> std::sync::MutexGuard<'static, ()> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        set_interrupts(&INTERRUPTS);
        set_scheduler(&SCHED);
        let _ = capture::DEPTH_PROBE.set(depth);
    });
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn wakes_logged() -> usize {
    SCHED.wakes.lock().unwrap().len()
}

fn wakes_to_since(token: Token, since: usize) -> usize {
    SCHED.wakes.lock().unwrap()[since..]
        .iter()
        .filter(|t| **t == token)
        .count()
}

/// Completes `request`, returning (allocations, frees) made inside the call.
fn complete_counted(request: IoRequest, result: genpager::Result) -> (usize, usize) {
    let heap = heap::counted(|| request.complete(result));
    (heap.allocs, heap.frees)
}

/// Asserts this thread has nothing masked and no hook misuse was seen.
fn assert_clean(what: &str) {
    assert_eq!(depth(), 0, "{what}: interrupts left masked on this thread");
    assert_eq!(
        UNMATCHED_ENABLES.load(Ordering::SeqCst),
        0,
        "{what}: an enable without a disable"
    );
    assert_eq!(
        BLOCKS_MASKED.load(Ordering::SeqCst),
        0,
        "{what}: a thread blocked with interrupts masked"
    );
}

// =====================================================================================
// FINDINGS
// =====================================================================================

/// FINDING 1 — promise: "the object lock (`sync::RwLock`) is writer-preferring: once a
/// writer waits, no new reader enters, so readers cannot starve it" (src/sync.rs module
/// docs, README "Waiting and interrupts").
///
/// The `RW_WRITER_WAITING` bit is set by a waiting writer only once, before it starts to
/// spin (src/sync.rs `RwLock::write`, the `fetch_or` before `spin.wait`), and it is
/// *cleared* by whichever writer next takes the lock (the compare-exchange to
/// `RW_WRITER`). A second writer that was already spinning inside `spin.wait` does not
/// set it again until it sees the word at 0. So: writer A holds the lock, writer B
/// spins (its bit was cleared by A's acquisition), readers wait; A releases, readers get
/// in, and as long as their read sections overlap the word never reads 0, B never leaves
/// `spin.wait`, never re-announces itself — starved for as long as readers keep coming.
///
/// Observed: the second writer never gets the lock while two readers hand it to each
/// other (each waits at most 5 ms for the other before it releases, so with the writer
/// announced the readers stop within 5 ms).
#[test]

fn finding_rwlock_second_writer_starved_by_overlapping_readers() {
    let _serial = init();
    within_for("the writers", Duration::from_secs(60), || {
        for round in 0..100 {
            if let Some(message) = rwlock_round() {
                panic!("round {round}: {message}");
            }
        }
    });
}

/// One round: writer A holds the lock; writers B and C queue behind it; two readers
/// queue too and, once in, hand the lock to each other. A releases. Returns a message
/// if B or C has not had the lock 2 s later.
fn rwlock_round() -> Option<String> {
    let lock = Arc::new(RwLock::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicUsize::new(0));
    let a = lock.write();
    let writers_done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (lock, done) = (lock.clone(), writers_done.clone());
            thread::spawn(move || {
                let mut guard = lock.write();
                *guard += 1;
                drop(guard);
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(10));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (lock, stop, held) = (lock.clone(), stop.clone(), held.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let guard = lock.read();
                    held.fetch_add(1, Ordering::SeqCst);
                    let until = Instant::now() + Duration::from_millis(5);
                    while held.load(Ordering::SeqCst) < 2 && Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    held.fetch_sub(1, Ordering::SeqCst);
                    drop(guard);
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(10));
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(2);
    while writers_done.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    let done = writers_done.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
    for writer in writers {
        writer.join().unwrap();
    }
    (done < 2).then(|| {
        format!(
            "only {done} of 2 waiting writers had the lock in 2 s while readers that \
             arrived after them kept it (writer-preference lost)"
        )
    })
}

/// FINDING 2 — promise (`reap_completions` docs, README "Waiting and interrupts"):
/// reaping frees what completions left, dropping vnodes, "from thread context only,
/// where dropping a vnode is allowed and no spin lock is held"; genpager calls it "when a
/// synchronous wait ends". Also the lock order: the object lock is "never held across
/// ... any sleep", and a kernel cannot sleep with interrupts masked.
///
/// A synchronous flush (`putpages(CLEANIT | SYNCIO)`) drops its `BioWait` — whose `Drop`
/// reaps — only after `settle_locked` has re-taken the object lock: the waiter is a local
/// of `DeviceWrite::write_synchronously` (src/putpages/submit.rs:221-228), dropped after
/// the tail expression `settle_locked(..)` returned the object `WriteGuard`
/// (src/buf.rs:612-617 `impl Drop for BioWait`). So a vnode whose last reference an
/// asynchronous write completion left behind is torn down *under another file's object
/// lock with interrupts masked*; a teardown that does I/O on that file spins forever on
/// the lock its own thread holds.
///
/// Observed: file B (whose only reference was its async write's completion) is dropped
/// with interrupt depth 1 on the flushing thread of file A. With B's teardown reading A,
/// the flush of A never returns (deadlock on A's object lock).
#[test]

fn finding_sync_flush_reaps_under_its_object_lock() {
    let _serial = init();
    for teardown_reads_a in [true, false] {
        let a = file();
        let b = file();
        if teardown_reads_a {
            *b.reads_when_dropped.lock().unwrap() = Some(a.clone());
        }
        let b_teardown = b.teardown.clone();
        // B: an asynchronous flush whose completion holds B's last reference.
        dirty_all(&b);
        capture(&b, true);
        putpages(&b, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
        let b_requests = b.device.take_at_least(PAGES as usize);
        drop(b);
        // A: a synchronous flush whose requests the test holds.
        dirty_all(&a);
        capture(&a, true);
        let flushing = {
            let a = a.clone();
            thread::spawn(move || {
                putpages(&a, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
                depth()
            })
        };
        let a_requests = a.device.take_at_least(PAGES as usize);
        // B's writes complete (B's group goes on the completed stack), then A's: A's
        // flusher wakes, settles under A's object lock, and drops its waiter.
        thread::spawn(move || {
            for request in b_requests {
                request.complete(Ok(()));
            }
        })
        .join()
        .unwrap();
        assert!(!b_teardown.dropped.load(Ordering::SeqCst));
        capture(&a, false);
        for request in a_requests {
            request.complete(Ok(()));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(flushing.join());
        });
        let flushed = rx.recv_timeout(Duration::from_secs(5));
        reap_completions();
        assert!(
            flushed.is_ok(),
            "the flush of A hung: B's teardown, run by the reap in BioWait::drop under A's \
             object lock, waits for A's object lock (teardown reads A: {teardown_reads_a})"
        );
        assert!(b_teardown.dropped.load(Ordering::SeqCst));
        assert_eq!(
            b_teardown.depth_at_drop.load(Ordering::SeqCst),
            0,
            "B was torn down by a reap holding a spin lock (interrupts masked)"
        );
        let _ = flushed.unwrap();
    }
}

/// FINDING 3 — promise (README "Waiting and interrupts", src/sync.rs docs): "an unbusy
/// wakes only the threads waiting for that page".
///
/// `Wakeup` (src/object.rs:62-120) keeps only the first and last offset of the pages to
/// wake, and `VmObject::wake_if` wakes every key in between. A fault on one page of a
/// 64 KiB block reads the whole block and hands out only the requested page, settling
/// the others (src/fault.rs `settle`): the settle's wakeup spans the block, so the
/// waiter of the handed-out page — which stays busy — is woken too (it re-checks and
/// sleeps again: a spurious wake, not a hang).
///
/// Observed: the thread waiting for page 5 receives a wake while page 5 is still held
/// busy by the faulting thread.
#[test]

fn finding_large_block_settle_wakes_the_waiter_of_the_page_still_held() {
    let _serial = init();
    if PAGE_SIZE > 4096 {
        return; // needs 16 pages per 64 KiB block
    }
    within("large block", || {
        let (disk, file) = file_with(16, Layout::Contiguous, &pattern(16 * PAGE_SIZE, 3));
        disk.hold();
        let holder = {
            let file = file.clone();
            thread::spawn(move || {
                let fetched = getpages(&file, Fault::read(5 * P, 1)).unwrap();
                let Fetched::Busy(pages) = fetched else {
                    panic!("not busy pages")
                };
                assert_eq!(pages.offset(0), 5 * P);
                // Hold page 5 while the test looks.
                thread::sleep(Duration::from_millis(300));
                drop(pages);
            })
        };
        while disk.pending() == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        let waiter = |page: u64| {
            let file = file.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let handle = thread::spawn(move || {
                tx.send(SCHED.current()).unwrap();
                drop(getpages(&file, Fault::read(page * P, 1)).unwrap());
            });
            (rx.recv().unwrap(), handle)
        };
        let (_t0, w0) = waiter(0);
        let (t5, w5) = waiter(5);
        let (_t15, w15) = waiter(15);
        // Let them link their wait nodes.
        thread::sleep(Duration::from_millis(100));
        let since = wakes_logged();
        disk.release();
        w0.join().unwrap();
        w15.join().unwrap();
        // Page 5 is still held by `holder` for a while here.
        let early = wakes_to_since(t5, since);
        holder.join().unwrap();
        w5.join().unwrap();
        assert_eq!(
            early, 0,
            "the waiter of page 5 was woken {early} time(s) while page 5 stayed busy"
        );
    });
}

// =====================================================================================
// PASSING PROBES
// =====================================================================================

/// Interrupts are unmasked (nesting back at 0) on the calling thread after every public
/// operation, error paths included, and no thread blocked with interrupts masked.
#[test]
fn probe_interrupts_balanced_after_public_operations_and_errors() {
    let _serial = init();
    within("interrupt balance", || {
        let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(8 * PAGE_SIZE, 1));
        // Plain fault, fast path, write, flush, read, setsize.
        drop(getpages(&file, Fault::read(0, 2)).unwrap());
        assert_clean("read fault");
        {
            let resident = getpages(&file, Fault::resident(0, 2, genpager::Access::Read)).unwrap();
            assert!(depth() >= 1, "a ResidentPages holds the object lock shared");
            drop(resident);
        }
        assert_clean("fast path");
        genpager::write(&file, 100, b"hello").unwrap();
        assert_clean("write");
        putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
        assert_clean("sync flush");
        let mut buf = vec![0u8; 3 * PAGE_SIZE];
        genpager::read(&file, 0, &mut buf).unwrap();
        assert_clean("read");
        genpager::setsize(&file, 3 * P).unwrap();
        assert_clean("setsize");
        // Device error on a read fault.
        putpages(&file, 0, 0, PutFlags::FREE).unwrap();
        disk.fail_nth(0, Error::Io);
        // The fault's own read (with read-ahead, a failed read along is retried with
        // the fault's pages alone, and this one-shot failure would pass).
        let fault = Fault::read(0, 1).with_flags(genpager::GetFlags::NOREADAHEAD);
        assert!(getpages(&file, fault).is_err());
        assert_clean("read fault, device error");
        disk.clear_faults();
        // Device error on a sync flush.
        genpager::write(&file, 0, b"dirty").unwrap();
        disk.fail_nth(0, Error::Io);
        assert!(putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).is_err());
        assert_clean("sync flush, device error");
        disk.clear_faults();
        // Device error on an async flush and on read-ahead.
        genpager::write(&file, 0, b"dirty").unwrap();
        disk.fail_nth(0, Error::Io);
        let _ = putpages(&file, 0, 0, PutFlags::CLEANIT);
        assert_clean("async flush, device error");
        disk.clear_faults();
        putpages(
            &file,
            0,
            0,
            PutFlags::CLEANIT | PutFlags::SYNCIO | PutFlags::FREE,
        )
        .unwrap_or(());
        disk.fail_nth(0, Error::Io);
        let _ = getpages(&file, Fault::read_ahead(0, 2));
        assert_clean("read-ahead, device error");
        disk.clear_faults();
        // bmap error.
        putpages(
            &file,
            0,
            0,
            PutFlags::CLEANIT | PutFlags::SYNCIO | PutFlags::FREE,
        )
        .unwrap_or(());
        file.fail_bmap(Some(1));
        assert!(getpages(&file, Fault::read(P, 1)).is_err());
        assert_clean("bmap error");
        file.fail_bmap(None);
        // Busy: the fast path on a page held busy by another fault.
        let held = getpages(&file, Fault::read(0, 1)).unwrap();
        let busy = getpages(&file, Fault::resident(0, 1, genpager::Access::Read));
        if let Ok(Fetched::Resident(resident)) = &busy {
            assert!(!resident.is_complete());
        }
        drop(busy);
        assert_clean("fast path on a busy page");
        drop(held);
        // Past EOF.
        assert!(getpages(&file, Fault::read(100 * P, 1)).is_err());
        assert_clean("fault past EOF");
        // A dead vnode.
        file.set_dead(true);
        let _ = getpages(&file, Fault::read(0, 1));
        let _ = putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO);
        assert_clean("dead vnode");
        file.set_dead(false);
        // A mount transaction that is busy (page daemon flush).
        genpager::write(&file, 0, b"dirty").unwrap();
        file.set_trans_busy(true);
        file.set_pagedaemon(true);
        let _ = putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE);
        assert_clean("transaction busy");
        file.set_pagedaemon(false);
        file.set_trans_busy(false);
        // NoSpace: a write needing blocks past the allocation limit.
        file.set_alloc_limit(Some(0));
        let _ = genpager::write(&file, 20 * P, &pattern(2 * PAGE_SIZE, 9));
        assert_clean("write out of space");
        file.set_alloc_limit(None);
        disk.quiesce();
        reap_completions();
        assert_clean("end");
    });
    assert_clean("test thread");
}

/// The completion thread of a threaded disk ends every completion with nothing masked,
/// and a threaded workload leaves every thread's nesting at zero.
#[test]
fn probe_interrupts_balanced_on_completion_thread_and_workers() {
    let _serial = init();
    within("threaded", || {
        let disk = MemDisk::threaded(1 << 16, true);
        let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
        let file = fs.create(&pattern(16 * PAGE_SIZE, 2)).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let file = file.clone();
                thread::spawn(move || {
                    for round in 0..30u64 {
                        let page = (round * 3 + t) % 16;
                        match round % 4 {
                            0 => drop(getpages(&file, Fault::read(page * P, 2)).unwrap()),
                            1 => {
                                genpager::write(&file, page * P + 7, b"xyz").unwrap();
                            }
                            2 => putpages(&file, 0, 0, PutFlags::CLEANIT).unwrap(),
                            _ => {
                                putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap()
                            }
                        }
                        assert_eq!(depth(), 0, "worker {t} round {round}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        disk.quiesce();
        reap_completions();
    });
    assert_clean("threaded");
}

/// A synchronous flush that meets an asynchronous write in flight waits for it and is
/// woken when the device completes it (no lost wakeup), for both orders of completion.
#[test]
fn probe_sync_flush_waits_for_async_write_in_flight() {
    let _serial = init();
    for rounds in 0..20 {
        let f = file();
        dirty_all(&f);
        capture(&f, true);
        putpages(&f, 0, 0, PutFlags::CLEANIT).unwrap();
        let requests = f.device.take_at_least(PAGES as usize);
        // Dirty again while the writes are in flight? The pages are busy: just flush.
        let flushing = {
            let f = f.clone();
            thread::spawn(move || putpages(&f, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO))
        };
        thread::sleep(Duration::from_millis(if rounds % 2 == 0 { 5 } else { 0 }));
        let completer = thread::spawn(move || {
            for request in requests.into_iter().rev() {
                request.complete(Ok(()));
            }
        });
        completer.join().unwrap();
        // Any new requests from the sync flush (none expected: all clean now).
        capture(&f, false);
        for request in f.device.captured.lock().unwrap().drain(..) {
            request.complete(Ok(()));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(flushing.join());
        });
        let result = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the sync flush was never woken");
        result.unwrap().unwrap();
        assert!(none_busy(&f));
        reap_completions();
    }
    assert_clean("sync flush vs async");
}

/// Many waiters on one page, released and re-taken over and over: nobody is lost.
#[test]
fn probe_many_waiters_one_page_no_lost_wakeup() {
    let _serial = init();
    within("many waiters", || {
        let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 5));
        drop(disk);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let file = file.clone();
                thread::spawn(move || {
                    for _ in 0..300 {
                        let pages = getpages(&file, Fault::read(P, 1)).unwrap();
                        drop(pages);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    assert_clean("many waiters");
}

/// Completion heap use for kinds tests/completion_alloc.rs does not cover: a failed
/// asynchronous write, a failed read-ahead, a failed synchronous read, and a direct
/// write. None allocates or frees inside `complete`; reaping frees the file.
#[test]
fn probe_failed_and_directio_write_completions_touch_no_heap() {
    let _serial = init();
    // Failed asynchronous write, completed on another thread.
    let f = file();
    dirty_all(&f);
    capture(&f, true);
    putpages(&f, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
    let requests = f.device.take_at_least(PAGES as usize);
    let teardown = f.teardown.clone();
    drop(f);
    let heap = thread::spawn(move || {
        requests
            .into_iter()
            .map(|r| complete_counted(r, Err(Error::Io)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
    .join()
    .unwrap();
    assert_eq!(heap, (0, 0), "failed async write completion");
    assert!(!teardown.dropped.load(Ordering::SeqCst));
    reap_completions();
    assert!(teardown.dropped.load(Ordering::SeqCst), "reaped");
    assert_eq!(teardown.depth_at_drop.load(Ordering::SeqCst), 0);

    // Failed read-ahead.
    let f = file();
    capture(&f, true);
    assert!(matches!(
        getpages(&f, Fault::read_ahead(0, PAGES as usize)).unwrap(),
        Fetched::Started
    ));
    let requests = f.device.take_at_least(PAGES as usize);
    let heap = requests
        .into_iter()
        .rev()
        .map(|r| complete_counted(r, Err(Error::Io)))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(heap, (0, 0), "failed read-ahead completion");
    assert!(none_busy(&f));
    reap_completions();
    assert_eq!(Arc::strong_count(&f), 1);

    // Failed synchronous read fault.
    let faulting = {
        let f = f.clone();
        thread::spawn(move || getpages(&f, Fault::read(0, PAGES as usize)).map(drop))
    };
    let requests = f.device.take_at_least(1);
    let heap = requests
        .into_iter()
        .map(|r| complete_counted(r, Err(Error::Io)))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    // More requests may come if the fault retries; fail them too.
    let result = loop {
        if faulting.is_finished() {
            break faulting.join().unwrap();
        }
        for r in f.device.captured.lock().unwrap().drain(..) {
            r.complete(Err(Error::Io));
        }
        thread::sleep(Duration::from_millis(1));
    };
    assert!(result.is_err());
    assert_eq!(heap, (0, 0), "failed synchronous read completion");
    assert!(none_busy(&f));

    // Direct write.
    #[repr(C, align(65536))]
    struct Aligned([u8; 2 * 65536]);
    let mut buffer = Box::new(Aligned([7; 2 * 65536]));
    let len = 2 * PAGE_SIZE;
    let _ = NonNull::from(&mut buffer.0[0]);
    let writing = {
        let f = f.clone();
        thread::spawn(move || {
            let buf = &mut buffer.0[..len];
            let mut uio = Uio::new(
                0,
                Direction::Write,
                AddressSpace::User,
                vec![IoVec::new(buf)],
            )
            .unwrap();
            directio(&f, &mut uio, DirectFlags::empty()).map(|p| p.transferred)
        })
    };
    let (mut heap, mut done) = ((0, 0), 0);
    while done < 2 {
        let requests = f.device.take_at_least(1);
        done += requests.len();
        for r in requests {
            let h = complete_counted(r, Ok(()));
            heap = (heap.0 + h.0, heap.1 + h.1);
        }
    }
    assert_eq!(writing.join().unwrap().unwrap(), len);
    assert_eq!(heap, (0, 0), "direct write completion");
    reap_completions();
    assert_eq!(Arc::strong_count(&f), 1);
    assert_clean("completions");
}

/// A request dropped by the device without `complete` completes with `Io`: the fault
/// fails, no page stays busy, nothing stays masked.
#[test]
fn probe_dropped_request_completes_with_io() {
    let _serial = init();
    let f = file();
    capture(&f, true);
    let faulting = {
        let f = f.clone();
        // The fault's own request (no read-ahead's, whose failure the fault would
        // not report but read again).
        let fault = Fault::read(0, 1).with_flags(GetFlags::NOREADAHEAD);
        thread::spawn(move || getpages(&f, fault).map(drop))
    };
    let requests = f.device.take_at_least(1);
    thread::spawn(move || drop(requests)).join().unwrap();
    let result = within("dropped request", move || faulting.join().unwrap());
    assert_eq!(result, Err(Error::Io));
    assert!(none_busy(&f));
    reap_completions();
    assert_eq!(Arc::strong_count(&f), 1);
    assert_clean("dropped request");
}

/// `reap_completions` from many threads at once while asynchronous writes complete on
/// others: every file is torn down exactly once, in thread context, nothing masked.
#[test]
fn probe_concurrent_reapers() {
    let _serial = init();
    within("reapers", || {
        let stop = Arc::new(AtomicBool::new(false));
        let reapers: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        reap_completions();
                        assert_eq!(depth(), 0);
                    }
                })
            })
            .collect();
        let mut teardowns = Vec::new();
        for _ in 0..30 {
            let f = file();
            dirty_all(&f);
            capture(&f, true);
            putpages(&f, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
            let requests = f.device.take_at_least(PAGES as usize);
            teardowns.push(f.teardown.clone());
            drop(f);
            thread::spawn(move || {
                for r in requests {
                    r.complete(Ok(()));
                }
            })
            .join()
            .unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        for r in reapers {
            r.join().unwrap();
        }
        reap_completions();
        for t in &teardowns {
            assert!(t.dropped.load(Ordering::SeqCst));
            assert_eq!(t.depth_at_drop.load(Ordering::SeqCst), 0);
        }
    });
    assert_clean("reapers");
}

/// Large blocks (512 B to 64 KiB) with waiters on pages of one block and of the next:
/// every waiter gets its page once the reads complete on the disk's own thread.
#[test]
fn probe_large_block_waiters_all_woken() {
    let _serial = init();
    within("large blocks", || {
        for bshift in [9u32, 12, 14, 16] {
            let disk = MemDisk::threaded(1 << 16, true);
            let fs = MemFs::new(disk.clone(), bshift, Layout::Contiguous);
            let file = fs.create(&pattern(40 * PAGE_SIZE, 4)).unwrap();
            file.set_max_transfer(TEST_MAX_TRANSFER);
            let threads: Vec<_> = (0..8u64)
                .map(|t| {
                    let file = file.clone();
                    thread::spawn(move || {
                        for round in 0..10u64 {
                            let page = (t * 5 + round * 7) % 40;
                            drop(getpages(&file, Fault::read(page * P, 1)).unwrap());
                            if round % 3 == 0 {
                                let _ = putpages(&file, 0, 0, PutFlags::FREE);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            disk.quiesce();
        }
        reap_completions();
    });
    assert_clean("large blocks");
}

/// GetFlags sanity: a write fault through the locked fast path on a held page reports
/// busy rather than sleeping, with nothing masked after.
#[test]
fn probe_locked_write_fault_on_busy_page() {
    let _serial = init();
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 6));
    let held = getpages(&file, Fault::read(0, 1)).unwrap();
    let other = {
        let file = file.clone();
        thread::spawn(move || {
            let r = getpages(&file, Fault::write(0, 1).with_flags(GetFlags::LOCKED)).map(|_| ());
            (r, depth())
        })
    };
    let (result, d) = within("locked write fault", move || other.join().unwrap());
    drop(held);
    assert_eq!(d, 0);
    let _ = result;
    assert_clean("locked");
}
