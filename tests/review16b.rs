//! Adversarial review of 573971b (reap_completions moved to the entry points, the
//! writer-preferring RwLock's re-set waiting bit, settle's wake_except) and 0c19efe
//! (Parked keeps the first segment list inline).
//!
//! The FINDING failed (hung) on the reviewed code and passes since genpager stopped
//! reaping on its own (only the kernel's `reap_completions`, from a thread that holds
//! nothing, frees what completions left); the rest are passing probes, adjusted to
//! that contract. The tests serialise on one lock: the completed-group
//! stack is global, and a reap on one test's thread must not tear down another's file.
#![cfg(not(loom))]

mod capture;
mod common;
mod heap;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use capture::{PAGES, capture, dirty_all, file};
use common::*;
use genpager::sync::RwLock;
use genpager::testing::Layout;
use genpager::{Fault, Fetched, PAGE_SIZE, PutFlags, getpages, putpages, read, reap_completions};

const P: u64 = PAGE_SIZE as u64;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes `z`'s last reference the captured completion of an asynchronous flush, and
/// completes it on another thread: `z` then waits on the completed stack for a reap.
/// Returns whether `z` was torn down (flag).
fn park_on_completed_stack(z: Arc<capture::File>) -> Arc<capture::Teardown> {
    let teardown = z.teardown.clone();
    dirty_all(&z);
    capture(&z, true);
    putpages(&z, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
    let requests = z.device.take_at_least(PAGES as usize);
    drop(z);
    thread::spawn(move || {
        for request in requests {
            request.complete(Ok(()));
        }
    })
    .join()
    .unwrap();
    assert!(
        !teardown.dropped.load(Ordering::SeqCst),
        "completion dropped the vnode"
    );
    teardown
}

/// FINDING — promise (`reap_completions` docs, README "Waiting and interrupts"):
/// genpager reaps "first thing in each entry point that holds nothing of the caller's
/// ... Never from the middle of a transfer, where this thread holds a node lock, busy
/// pages or the object lock", and "a vnode teardown run there may start I/O on any
/// file". The only documented restriction on a thread holding its fault's pages is
/// that it must not flush, write or truncate *the same* file.
///
/// A thread holding busy pages of file X (a fault handed out, or `genpager::read(X)`
/// copying out into a user buffer that is itself mapped from file Y) faults file Y:
/// that fault has no GLOCKHELD/LOCKED (it is another file), so `reap_unless_nested`
/// (src/fault.rs:315-322, called at src/getpages/mod.rs:81) reaps there, in the middle
/// of X's transfer. A teardown (of Z, whose last reference its async write completion
/// held) that reads X then sleeps on X's page, busy by its own thread: deadlock.
///
/// Observed: the fault of Y never returns (hang), Z's teardown sleeping on X page 0.
#[test]
fn finding_reap_in_fault_of_other_file_while_holding_busy_pages() {
    let _serial = serial();
    reap_completions();
    let x = file();
    let y = file();
    let z = file();
    *z.reads_when_dropped.lock().unwrap() = Some(x.clone());
    static STAGE: AtomicUsize = AtomicUsize::new(0);
    let teardown = z.teardown.clone();
    let probe = teardown.clone();
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        within("fault of Y holding X's busy page", move || {
            // X's page 0 handed out busy (as read(2) holds it while it copies out).
            let x_pages = getpages(&x, Fault::read(0, 1)).unwrap();
            assert!(matches!(x_pages, Fetched::Busy(_)));
            // Meanwhile Z's asynchronous write completes, holding Z's last reference.
            park_on_completed_stack(z);
            STAGE.store(1, Ordering::SeqCst);
            // The copy-out faults a page of Y (a user buffer mapped from Y).
            drop(getpages(&y, Fault::read(0, 1)).unwrap());
            drop(x_pages);
            true
        })
    }));
    if done.is_err() {
        // Hung in the fault of Y, with Z's teardown started there (it sleeps on X's
        // page 0, busy by its own thread).
        assert_eq!(STAGE.load(Ordering::SeqCst), 1);
        assert!(probe.dropped.load(Ordering::SeqCst), "teardown not started");
    }
    assert!(done.unwrap());
    assert!(
        !teardown.dropped.load(Ordering::SeqCst),
        "nothing in the faults reaped"
    );
    // The kernel's reap, from a thread holding nothing: Z's teardown reads X.
    reap_completions();
    assert!(teardown.dropped.load(Ordering::SeqCst));
}

/// PASSING PROBE — a teardown run by the kernel's reap reads X, and a read of X
/// afterwards gets the right bytes; `read` itself reaps nothing.
#[test]
fn teardown_reaped_by_read_reads_the_same_file() {
    let _serial = serial();
    reap_completions();
    let x = file();
    let z = file();
    *z.reads_when_dropped.lock().unwrap() = Some(x.clone());
    let teardown = park_on_completed_stack(z);
    let got = within(
        "a reap tearing down Z reading X, then a read of X",
        move || {
            reap_completions();
            let mut buf = vec![0u8; 2 * PAGE_SIZE];
            let n = read(&x, 0, &mut buf).unwrap();
            (n, buf[0], buf[PAGE_SIZE])
        },
    );
    assert_eq!(got.0, 2 * PAGE_SIZE);
    // The capture rig's disk: byte i is (i / 512) | 1; page n at sector 2n*spp.
    assert_eq!(got.1, 1);
    assert!(teardown.dropped.load(Ordering::SeqCst));
}

/// PASSING PROBE (documented) — when only completions happen and genpager is never
/// called again, what they left stays until someone reaps: the docs say a kernel
/// calls `reap_completions` from a worker or idle loop.
#[test]
fn completions_alone_leave_the_vnode_until_a_reap() {
    let _serial = serial();
    reap_completions();
    let z = file();
    let teardown = park_on_completed_stack(z);
    thread::sleep(Duration::from_millis(20));
    assert!(!teardown.dropped.load(Ordering::SeqCst));
    reap_completions();
    assert!(teardown.dropped.load(Ordering::SeqCst));
}

/// PASSING PROBE — a synchronous read fault whose group has one request per page
/// (Parked's `rest` path) completed in reverse order, then in an interleaved order:
/// the fault returns with the right bytes, the group is freed by the next reap.
#[test]
fn multi_request_group_completes_out_of_order() {
    let _serial = serial();
    reap_completions();
    for order in [[3usize, 2, 1, 0], [1, 3, 0, 2]] {
        let x = file();
        capture(&x, true);
        let faulting = {
            let x = x.clone();
            thread::spawn(move || {
                let fetched = getpages(&x, Fault::read(0, PAGES as usize)).unwrap();
                let Fetched::Busy(pages) = fetched else {
                    panic!("not busy")
                };
                (0..PAGES as usize)
                    .map(|i| pages.bytes(i)[0])
                    .collect::<Vec<u8>>()
            })
        };
        let mut requests: Vec<Option<_>> = x
            .device
            .take(PAGES as usize)
            .into_iter()
            .map(Some)
            .collect();
        requests.sort_by_key(|r| r.as_ref().unwrap().block());
        for &i in &order {
            requests[i].take().unwrap().complete(Ok(()));
        }
        let firsts = faulting.join().unwrap();
        let spp = (PAGE_SIZE / 512) as u64;
        let want: Vec<u8> = (0..PAGES).map(|n| (2 * n * spp) as u8 | 1).collect();
        assert_eq!(firsts, want, "order {order:?}");
        capture(&x, false);
    }
}

/// PASSING PROBE — an asynchronous multi-request group (a flush of four one-page
/// requests) whose requests complete out of order, one failing: the failure latches
/// on the object (the next fsync reports it) and the vnode whose last reference the
/// completion held is torn down by the next entry point's reap.
#[test]
fn async_multi_request_group_out_of_order_with_error() {
    let _serial = serial();
    reap_completions();
    let z = file();
    let teardown = z.teardown.clone();
    dirty_all(&z);
    capture(&z, true);
    putpages(&z, 0, 0, PutFlags::CLEANIT).unwrap();
    let mut requests = z.device.take_at_least(PAGES as usize);
    requests.reverse();
    let weak_probe = z.clone();
    drop(z);
    let last = requests.pop().unwrap();
    for request in requests {
        request.complete(Ok(()));
    }
    last.complete(Err(genpager::Error::Io));
    capture(&weak_probe, false);
    let fsync = putpages(&weak_probe, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO);
    assert!(fsync.is_err(), "latched error not reported: {fsync:?}");
    drop(weak_probe);
    // The group held a reference: the kernel's reap frees it all.
    assert!(!teardown.dropped.load(Ordering::SeqCst));
    reap_completions();
    assert!(teardown.dropped.load(Ordering::SeqCst));
}

/// PASSING PROBE — the writer fix with three writers and overlapping readers: every
/// writer gets the lock its number of times within the limit (none starved), and the
/// counter is exact.
#[test]
fn rwlock_three_writers_and_overlapping_readers() {
    let _serial = serial();
    let lock = Arc::new(RwLock::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (lock, stop) = (lock.clone(), stop.clone());
            thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let guard = lock.read();
                    // Hold a while so readers overlap.
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_micros(50) {
                        std::hint::spin_loop();
                    }
                    let _ = *guard;
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|_| {
            let (lock, done) = (lock.clone(), done.clone());
            thread::spawn(move || {
                for _ in 0..200 {
                    *lock.write() += 1;
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let finished = done.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(finished, 3, "a writer starved behind overlapping readers");
    for w in writers {
        w.join().unwrap();
    }
    assert_eq!(*lock.read(), 600);
}

/// PASSING PROBE — wake_except: with blocks from 512 B to 64 KiB a fault hands out
/// pages in the middle of those it settles; threads waiting on the first and the last
/// handed-out page sleep on, and wake (return) once the pages are released; a thread
/// waiting on a settled neighbour returns.
#[test]
fn wake_except_waiters_of_handed_out_pages_wake_on_release() {
    let _serial = serial();
    for bshift in [9u32, 12, 14, 16] {
        let len = 8 * PAGE_SIZE.max(1 << bshift);
        let data = pattern(len, 7);
        let (_disk, f) = file_with(bshift, Layout::Contiguous, &data);
        let blocks_pages = ((1usize << bshift) / PAGE_SIZE).max(1);
        // Request pages in the middle of a block run so the fault widens around them.
        let first = if blocks_pages >= 4 { 1 } else { 2 };
        let count = 2usize;
        let f2 = f.clone();
        let data2 = data.clone();
        within(&format!("bshift {bshift}"), move || {
            let held = getpages(&f2, Fault::read(first as u64 * P, count)).unwrap();
            let Fetched::Busy(pages) = held else {
                panic!("not busy")
            };
            let returned = Arc::new(AtomicUsize::new(0));
            let waiters: Vec<_> = [first, first + count - 1]
                .into_iter()
                .map(|pg| {
                    let (f, returned, data) = (f2.clone(), returned.clone(), data2.clone());
                    thread::spawn(move || {
                        let got = getpages(&f, Fault::read(pg as u64 * P, 1)).unwrap();
                        let Fetched::Busy(p) = got else {
                            panic!("not busy")
                        };
                        assert_eq!(p.bytes(0), &data[pg * PAGE_SIZE..(pg + 1) * PAGE_SIZE]);
                        drop(p);
                        returned.fetch_add(1, Ordering::SeqCst);
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(30));
            assert_eq!(
                returned.load(Ordering::SeqCst),
                0,
                "a waiter ran past a busy page"
            );
            for i in 0..count {
                assert_eq!(
                    pages.bytes(i),
                    &data2[(first + i) * PAGE_SIZE..(first + i + 1) * PAGE_SIZE]
                );
            }
            drop(pages);
            for w in waiters {
                w.join().unwrap();
            }
            assert_eq!(returned.load(Ordering::SeqCst), 2);
        });
    }
}
