//! A file whose device hands its requests to the test, for the tests that complete
//! requests themselves (tests/completion_alloc.rs, tests/review16.rs): a RAM disk
//! [`Device`] that serves requests inline until [`capture`] tells it to hold them, and a
//! [`File`] of [`PAGES`] pages on it that records in its [`Teardown`] what it saw when it
//! was dropped. A binary that declares `mod capture;` declares `mod heap;` too (the
//! teardown asks [`crate::heap::counting`] whether it runs inside a counted call).
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use genpager::buf::{Direction, IoRequest};
use genpager::cache::DefaultCache;
use genpager::{
    BlockMap, Fault, Mapping, PAGE_SIZE, PageCache, Strategy, VmObject, Vnode, getpages,
};

pub const SECTORS_PER_PAGE: u64 = (PAGE_SIZE / 512) as u64;
pub const PAGES: u64 = 4;
const P: u64 = PAGE_SIZE as u64;

/// The interrupt nesting depth of the calling thread, as the binary's `Interrupts` hook
/// counts it: a binary that has one sets this before it makes a [`File`]. Without it a
/// teardown records depth 0.
pub static DEPTH_PROBE: OnceLock<fn() -> usize> = OnceLock::new();

/// A RAM disk that serves requests inline until told to capture them.
pub struct Device {
    pub bytes: Mutex<Vec<u8>>,
    pub capturing: AtomicBool,
    pub captured: Mutex<Vec<IoRequest>>,
}

impl Device {
    /// Moves the request's data (outside any counting).
    pub fn transfer(&self, request: &mut IoRequest) {
        let mut disk = self.bytes.lock().unwrap();
        let at = request.block() as usize * 512;
        let bytes = &mut disk[at..at + request.len()];
        match request.direction() {
            Direction::Read => request.fill(bytes).unwrap(),
            Direction::Write => request.gather(bytes).unwrap(),
        }
    }

    /// Waits until `n` requests are captured and takes them, data moved.
    pub fn take(&self, n: usize) -> Vec<IoRequest> {
        let taken = self.take_at_least(n);
        assert_eq!(taken.len(), n, "requests captured");
        taken
    }

    /// Waits until some request is captured and takes all there are, data moved.
    pub fn take_some(&self) -> Vec<IoRequest> {
        self.take_at_least(1)
    }

    /// Waits (bounded) until at least `n` requests are captured and takes all there
    /// are, data moved.
    pub fn take_at_least(&self, n: usize) -> Vec<IoRequest> {
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

/// What a [`File`] saw when it was torn down.
#[derive(Default)]
pub struct Teardown {
    /// Set last: whether the file was dropped.
    pub dropped: AtomicBool,
    /// Whether it was dropped inside a counted call (`IoRequest::complete`).
    pub inside_complete: AtomicBool,
    /// The interrupt nesting depth of the dropping thread (spin locks it held), by
    /// [`DEPTH_PROBE`].
    pub depth_at_drop: AtomicUsize,
}

/// A file of `pages` pages, one page per block, each block a run of its own (so every
/// page is a request of its own), laid out every other page on the disk.
pub struct File {
    pub object: VmObject<DefaultCache>,
    pub device: Device,
    pub pages: u64,
    /// Set by `Drop`.
    pub teardown: Arc<Teardown>,
    /// A file its teardown reads one page of (a filesystem's teardown may do I/O).
    pub reads_when_dropped: Mutex<Option<Arc<File>>>,
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
        let depth = DEPTH_PROBE.get().map_or(0, |probe| probe());
        self.teardown.depth_at_drop.store(depth, Ordering::SeqCst);
        if crate::heap::counting() {
            self.teardown.inside_complete.store(true, Ordering::SeqCst);
        }
        self.teardown.dropped.store(true, Ordering::SeqCst);
        if let Some(other) = self.reads_when_dropped.lock().unwrap().take() {
            drop(getpages(&other, Fault::read(0, 1)).unwrap());
        }
    }
}

/// A [`File`] of [`PAGES`] pages on a disk of twice that, whose device serves inline.
pub fn file() -> Arc<File> {
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
        teardown: Arc::new(Teardown::default()),
        reads_when_dropped: Mutex::new(None),
    })
}

/// Makes `file`'s device capture the requests it is given (`on`) or serve them inline.
pub fn capture(file: &File, on: bool) {
    file.device.capturing.store(on, Ordering::SeqCst);
}

/// Dirties every page of `file` through write faults served inline.
pub fn dirty_all(file: &Arc<File>) {
    let fetched = getpages(file, Fault::write(0, PAGES as usize)).unwrap();
    let mut pages = fetched.into_writable().unwrap();
    for i in 0..PAGES as usize {
        pages.bytes_mut(i)[0] = 0xee;
    }
}

/// No page of `file` is busy.
pub fn none_busy(file: &File) -> bool {
    let state = file.object().read();
    (0..PAGES).all(|i| {
        state
            .cache()
            .lookup(i * P)
            .is_none_or(|page| !page.flags.contains(genpager::PageFlags::BUSY))
    })
}
