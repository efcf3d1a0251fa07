//! Completion may run in a device interrupt: `IoRequest::complete` neither allocates
//! nor frees heap memory, and never drops the last reference to a vnode (DESIGN.md §4).
//!
//! A counting global allocator counts, per thread, the allocations and frees made while
//! the thread is inside `IoRequest::complete`. A test device captures every request, so
//! each test completes them itself — on its own thread or on another one, out of order,
//! after the submitter has returned — and checks the counts for each kind of completion:
//! a synchronous read fault, a synchronous flush, an asynchronous flush that frees its
//! pages, read-ahead, and a direct transfer. What completion leaves behind is freed by
//! `reap_completions` in thread context.

mod capture;
mod heap;

use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;

use capture::{PAGES, capture, dirty_all, file, none_busy};
use genpager::buf::{Direction, IoRequest};
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::{
    Fault, PAGE_SIZE, PageCache, PutFlags, Vnode, getpages, putpages, reap_completions,
};
use heap::{Heap, counted};

// ---- the counting allocator ------------------------------------------------------------

/// Completes `request` with `result`, counting what the call allocates and frees.
fn complete(request: IoRequest, result: genpager::Result) -> Heap {
    counted(|| request.complete(result))
}

/// Taken by every test here: a reap on another test's thread could take this test's
/// finished transfers off the completed stack, and still be freeing them when this
/// test's own reap returns and it counts the file's references.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Completes `requests` last first on this thread; returns what the calls did.
fn complete_here(requests: Vec<IoRequest>) -> Heap {
    requests
        .into_iter()
        .rev()
        .map(|request| complete(request, Ok(())))
        .fold(Heap::default(), |sum, heap| sum + heap)
}

/// Completes `requests` last first on a thread of their own, as a device would.
fn complete_elsewhere(requests: Vec<IoRequest>) -> Heap {
    thread::spawn(move || complete_here(requests))
        .join()
        .unwrap()
}

// ---- the five kinds of completion ------------------------------------------------------

#[test]
fn a_synchronous_read_fault_completes_without_the_heap() {
    let _serial = serial();
    let file = file();
    capture(&file, true);
    let faulting = {
        let file = file.clone();
        thread::spawn(move || {
            let fetched = getpages(&file, Fault::read(0, PAGES as usize)).unwrap();
            drop(fetched);
        })
    };
    let heap = complete_here(file.device.take(PAGES as usize));
    faulting.join().unwrap();
    assert_eq!(heap, Heap::default(), "a synchronous read's completion");
    assert!(none_busy(&file));
    reap_completions();
    assert_eq!(Arc::strong_count(&file), 1);
}

#[test]
fn a_synchronous_flush_completes_without_the_heap() {
    let _serial = serial();
    let file = file();
    dirty_all(&file);
    capture(&file, true);
    let flushing = {
        let file = file.clone();
        thread::spawn(move || {
            putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
        })
    };
    let heap = complete_elsewhere(file.device.take(PAGES as usize));
    flushing.join().unwrap();
    assert_eq!(heap, Heap::default(), "a synchronous write's completion");
    reap_completions();
    assert_eq!(Arc::strong_count(&file), 1);
}

#[test]
fn an_asynchronous_flush_that_frees_its_pages_completes_without_the_heap_or_the_vnode() {
    let _serial = serial();
    for elsewhere in [false, true] {
        let file = file();
        let teardown = file.teardown.clone();
        dirty_all(&file);
        capture(&file, true);
        putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
        let requests = file.device.take(PAGES as usize);
        // The completion's references are now the only ones to the file.
        drop(file);
        assert!(
            !teardown.dropped.load(Ordering::SeqCst),
            "the writes hold the file"
        );
        let heap = if elsewhere {
            complete_elsewhere(requests)
        } else {
            complete_here(requests)
        };
        assert!(
            !teardown.inside_complete.load(Ordering::SeqCst),
            "the file was dropped inside complete"
        );
        assert_eq!(
            heap,
            Heap::default(),
            "asynchronous FREE writes' completion (on another thread: {elsewhere})"
        );
        reap_completions();
        assert!(
            teardown.dropped.load(Ordering::SeqCst),
            "reaping drops the file"
        );
        assert!(!teardown.inside_complete.load(Ordering::SeqCst));
    }
}

#[test]
fn the_freed_pages_of_an_asynchronous_flush_are_gone_and_nothing_lingers() {
    let _serial = serial();
    let file = file();
    dirty_all(&file);
    capture(&file, true);
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
    let requests = file.device.take(PAGES as usize);
    assert!(Arc::strong_count(&file) > 1, "the writes hold the file");
    assert_eq!(complete_elsewhere(requests), Heap::default());
    assert_eq!(file.object().read().cache().resident_pages(), 0);
    reap_completions();
    assert_eq!(
        Arc::strong_count(&file),
        1,
        "nothing holds the file once reaped"
    );
}

#[test]
fn read_ahead_completes_without_the_heap() {
    let _serial = serial();
    for elsewhere in [false, true] {
        let file = file();
        capture(&file, true);
        let started = getpages(&file, Fault::read_ahead(0, PAGES as usize)).unwrap();
        assert!(matches!(started, genpager::Fetched::Started));
        let requests = file.device.take(PAGES as usize);
        let heap = if elsewhere {
            complete_elsewhere(requests)
        } else {
            complete_here(requests)
        };
        assert_eq!(
            heap,
            Heap::default(),
            "read-ahead's completion ({elsewhere})"
        );
        assert!(none_busy(&file));
        assert_eq!(
            file.object().read().cache().resident_pages(),
            PAGES as usize
        );
        reap_completions();
        assert_eq!(Arc::strong_count(&file), 1);
        assert!(!file.teardown.inside_complete.load(Ordering::SeqCst));
    }
}

/// Page-aligned memory for direct I/O.
#[repr(C, align(65536))]
struct Aligned([u8; 2 * 65536]);

#[test]
fn a_direct_transfer_completes_without_the_heap() {
    let _serial = serial();
    let file = file();
    capture(&file, true);
    let mut buffer = Box::new(Aligned([0; 2 * 65536]));
    let len = 2 * PAGE_SIZE;
    let address = NonNull::from(&mut buffer.0[0]).as_ptr() as usize;
    let reading = {
        let file = file.clone();
        thread::spawn(move || {
            let buf = &mut buffer.0[..len];
            let mut uio = Uio::new(
                0,
                Direction::Read,
                AddressSpace::User,
                vec![IoVec::new(buf)],
            )
            .unwrap();
            let progress = directio(&file, &mut uio, DirectFlags::empty()).unwrap();
            assert_eq!(progress.transferred, len);
            buffer
        })
    };
    // Two pages, each a run of its own: two requests.
    let (mut heap, mut completed) = (Heap::default(), 0);
    while completed < 2 {
        let requests = file.device.take_some();
        completed += requests.len();
        heap = heap + complete_here(requests);
    }
    let buffer = reading.join().unwrap();
    assert_eq!(NonNull::from(&buffer.0[0]).as_ptr() as usize, address);
    assert_eq!(buffer.0[0], 1);
    assert_eq!(heap, Heap::default(), "a direct read's completion");
    reap_completions();
    assert_eq!(Arc::strong_count(&file), 1);
}

/// A vnode torn down by `reap_completions` may start I/O, which reaps again: nothing
/// deadlocks, and the read is served.
#[test]
fn a_vnode_whose_teardown_does_io_can_be_reaped() {
    let _serial = serial();
    let other = file();
    let file = file();
    *file.reads_when_dropped.lock().unwrap() = Some(other.clone());
    let teardown = file.teardown.clone();
    dirty_all(&file);
    capture(&file, true);
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
    let requests = file.device.take(PAGES as usize);
    drop(file);
    assert_eq!(complete_elsewhere(requests), Heap::default());
    reap_completions();
    assert!(teardown.dropped.load(Ordering::SeqCst));
    // The teardown's read of page 0 (which read-ahead, starting at page 0, widens to
    // the file's few pages).
    assert!(
        other.object().read().cache().lookup(0).is_some(),
        "the teardown's read"
    );
    reap_completions();
    assert_eq!(Arc::strong_count(&other), 1);
}
