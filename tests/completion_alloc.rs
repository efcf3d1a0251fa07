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

mod heap;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use genpager::buf::{Direction, IoRequest};
use genpager::cache::DefaultCache;
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::{
    BlockMap, Fault, Mapping, PAGE_SIZE, PageCache, PutFlags, Strategy, VmObject, Vnode, getpages,
    putpages, reap_completions,
};
use heap::{Heap, counted};

// ---- the counting allocator ------------------------------------------------------------

/// Completes `request` with `result`, counting what the call allocates and frees.
fn complete(request: IoRequest, result: genpager::Result) -> Heap {
    counted(|| request.complete(result))
}

// ---- a file whose device hands its requests to the test --------------------------------

const SECTORS_PER_PAGE: u64 = (PAGE_SIZE / 512) as u64;

/// A RAM disk that serves requests inline until told to capture them.
struct Device {
    bytes: Mutex<Vec<u8>>,
    capturing: AtomicBool,
    captured: Mutex<Vec<IoRequest>>,
}

impl Device {
    /// Moves the request's data (outside any counting).
    fn transfer(&self, request: &mut IoRequest) {
        let mut disk = self.bytes.lock().unwrap();
        let at = request.block() as usize * 512;
        let bytes = &mut disk[at..at + request.len()];
        match request.direction() {
            Direction::Read => request.fill(bytes).unwrap(),
            Direction::Write => request.gather(bytes).unwrap(),
        }
    }

    /// Waits until `n` requests are captured and takes them, data moved.
    fn take(&self, n: usize) -> Vec<IoRequest> {
        let taken = self.take_at_least(n);
        assert_eq!(taken.len(), n, "requests captured");
        taken
    }

    /// Waits until some request is captured and takes all there are, data moved.
    fn take_some(&self) -> Vec<IoRequest> {
        self.take_at_least(1)
    }

    /// Waits until at least `n` requests are captured and takes all there are, data
    /// moved.
    fn take_at_least(&self, n: usize) -> Vec<IoRequest> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            {
                let mut captured = self.captured.lock().unwrap();
                if captured.len() >= n {
                    let mut taken: Vec<IoRequest> = captured.drain(..).collect();
                    for request in &mut taken {
                        self.transfer(request);
                    }
                    return taken;
                }
            }
            assert!(Instant::now() < deadline, "{n} requests never came");
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Strategy for Device {
    fn submit(&self, mut request: IoRequest) {
        if self.capturing.load(Ordering::SeqCst) {
            self.captured.lock().unwrap().push(request);
        } else {
            self.transfer(&mut request);
            request.complete(Ok(()));
        }
    }
}

/// A file of `pages` pages, one page per block, each block a run of its own (so every
/// page is a request of its own), laid out every other page on the disk.
struct File {
    object: VmObject<DefaultCache>,
    device: Device,
    pages: u64,
    /// Set by `Drop`: whether the file was dropped, and whether inside `complete`.
    dropped: Arc<AtomicBool>,
    dropped_inside_complete: Arc<AtomicBool>,
    /// A file its teardown reads, as a filesystem's teardown may do I/O.
    reads_when_dropped: Mutex<Option<Arc<File>>>,
}

impl BlockMap for File {
    fn bmap(&self, lbn: u64) -> genpager::Result<Mapping> {
        if lbn >= self.pages {
            return Ok(Mapping::hole(0));
        }
        Ok(Mapping::mapped(2 * lbn * SECTORS_PER_PAGE, 0))
    }
}

impl Vnode for File {
    type Cache = DefaultCache;
    type Map = Self;
    type Dev = Device;
    fn object(&self) -> &VmObject<DefaultCache> {
        &self.object
    }
    fn block_map(&self) -> &Self {
        self
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn fs_bshift(&self) -> u32 {
        genpager::page::PAGE_SHIFT
    }
}

impl Drop for File {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
        if heap::counting() {
            self.dropped_inside_complete.store(true, Ordering::SeqCst);
        }
        if let Some(other) = self.reads_when_dropped.lock().unwrap().take() {
            drop(getpages(&other, Fault::read(0, 1)).unwrap());
        }
    }
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

const PAGES: u64 = 4;
const P: u64 = PAGE_SIZE as u64;

fn file() -> Arc<File> {
    let disk: Vec<u8> = (0..2 * PAGES as usize * PAGE_SIZE)
        .map(|i| (i / 512) as u8 | 1)
        .collect();
    Arc::new(File {
        object: VmObject::new(DefaultCache::new(), PAGES * P),
        device: Device {
            bytes: Mutex::new(disk),
            capturing: AtomicBool::new(false),
            captured: Mutex::new(Vec::with_capacity(16)),
        },
        pages: PAGES,
        dropped: Arc::new(AtomicBool::new(false)),
        dropped_inside_complete: Arc::new(AtomicBool::new(false)),
        reads_when_dropped: Mutex::new(None),
    })
}

fn capture(file: &File) {
    file.device.capturing.store(true, Ordering::SeqCst);
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

/// Dirties every page of `file` through write faults served inline.
fn dirty_all(file: &Arc<File>) {
    let fetched = getpages(file, Fault::write(0, PAGES as usize)).unwrap();
    let mut pages = fetched.into_writable().unwrap();
    for i in 0..PAGES as usize {
        pages.bytes_mut(i)[0] = 0xee;
    }
}

/// No page of `file` is busy.
fn none_busy(file: &File) -> bool {
    let state = file.object().read();
    (0..PAGES).all(|i| {
        state
            .cache()
            .lookup(i * P)
            .is_none_or(|page| !page.flags.contains(genpager::PageFlags::BUSY))
    })
}

// ---- the five kinds of completion ------------------------------------------------------

#[test]
fn a_synchronous_read_fault_completes_without_the_heap() {
    let _serial = serial();
    let file = file();
    capture(&file);
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
    capture(&file);
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
        let (dropped, inside) = (file.dropped.clone(), file.dropped_inside_complete.clone());
        dirty_all(&file);
        capture(&file);
        putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
        let requests = file.device.take(PAGES as usize);
        // The completion's references are now the only ones to the file.
        drop(file);
        assert!(!dropped.load(Ordering::SeqCst), "the writes hold the file");
        let heap = if elsewhere {
            complete_elsewhere(requests)
        } else {
            complete_here(requests)
        };
        assert!(
            !inside.load(Ordering::SeqCst),
            "the file was dropped inside complete"
        );
        assert_eq!(
            heap,
            Heap::default(),
            "asynchronous FREE writes' completion (on another thread: {elsewhere})"
        );
        reap_completions();
        assert!(dropped.load(Ordering::SeqCst), "reaping drops the file");
        assert!(!inside.load(Ordering::SeqCst));
    }
}

#[test]
fn the_freed_pages_of_an_asynchronous_flush_are_gone_and_nothing_lingers() {
    let _serial = serial();
    let file = file();
    dirty_all(&file);
    capture(&file);
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
        capture(&file);
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
        assert!(!file.dropped_inside_complete.load(Ordering::SeqCst));
    }
}

/// Page-aligned memory for direct I/O.
#[repr(C, align(65536))]
struct Aligned([u8; 2 * 65536]);

#[test]
fn a_direct_transfer_completes_without_the_heap() {
    let _serial = serial();
    let file = file();
    capture(&file);
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
    let dropped = file.dropped.clone();
    dirty_all(&file);
    capture(&file);
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
    let requests = file.device.take(PAGES as usize);
    drop(file);
    assert_eq!(complete_elsewhere(requests), Heap::default());
    reap_completions();
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(
        other.object().read().cache().resident_pages(),
        1,
        "the teardown's read"
    );
    reap_completions();
    assert_eq!(Arc::strong_count(&other), 1);
}
