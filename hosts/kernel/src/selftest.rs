//! The boot-time self-test: genpager driven through this kernel's hooks, checked
//! against what the RAM disk and the frame allocator really hold.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Display;

use genpager::Fault;
use genpager::buf::Direction;
use genpager::{
    Access, Advice, DirtyStatus, Error, PAGE_SIZE, PageCache, PageFlags, PutFlags, Tag, Vnode,
    getpages, putpages, read, write,
};

use crate::fs::{RamFile, RamFs};
use crate::{frames, kprintln, park};

/// What one test returns: `Err` carries the reason it failed.
type Outcome = Result<(), String>;

/// Fails the test with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("line {}: {}", line!(), format!($($msg)+)));
        }
    };
}

/// Fails the test unless the two values are equal.
macro_rules! ensure_eq {
    ($left:expr, $right:expr) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(format!(
                "line {}: {} is {:?}, expected {:?}",
                line!(),
                stringify!($left),
                left,
                right
            ));
        }
    }};
}

/// Turns a genpager error into a test failure naming the step.
trait Context<T> {
    /// The value, or a failure message `what: error`.
    fn context(self, what: &str) -> Result<T, String>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Result<T, String> {
        self.map_err(|err| format!("{what}: {err}"))
    }
}

/// One test: its name and its body.
type Test = (&'static str, fn() -> Outcome);

/// Every test, in the order they run.
const TESTS: &[Test] = &[
    (
        "frames: the kernel's frames are handed out poisoned and come back",
        frames_round_trip,
    ),
    (
        "read: a file with holes and scattered 1 KiB blocks reads back exactly",
        read_whole_file,
    ),
    (
        "read: cached pages live in kernel frames and re-reads do no I/O",
        cached_reread,
    ),
    (
        "read: unaligned reads and reads at end of file",
        unaligned_and_eof_reads,
    ),
    (
        "hole: reads as zeroes, its resident page is RDONLY",
        hole_reads_zero_rdonly,
    ),
    (
        "hole: a write fault calls BlockMap::alloc, page turns writable and dirty",
        hole_write_fault,
    ),
    (
        "read-ahead: an asynchronous fault completes inline",
        read_ahead,
    ),
    (
        "error: a failed device read is reported and leaves no page",
        read_error,
    ),
    (
        "error: no free frame is NoMemory and leaves nothing busy",
        frame_exhaustion,
    ),
    (
        "write: buffered write then putpages(SYNCIO) puts the bytes on disk",
        write_and_flush,
    ),
    (
        "write: putpages(FREE) evicts, getpages reads the file back",
        evict_and_read_back,
    ),
    (
        "write: a write past EOF leaves a hole that reads as zeroes",
        sparse_write,
    ),
    (
        "hole: a buffered write into a hole allocates, page turns writable and dirty",
        hole_buffered_write,
    ),
    (
        "error: a failed device write fails putpages(SYNCIO), data stays dirty",
        write_error,
    ),
    (
        "truncate: setsize frees pages past the end, regrown tail reads zero",
        truncate_and_regrow,
    ),
    (
        "truncate: a write inside the cut last page allocates the freed blocks again",
        truncate_then_write_in_the_last_page,
    ),
    (
        "write: 8 KiB blocks (two pages each) round-trip through a hole",
        large_blocks,
    ),
    ("park: nothing ever waited on this single CPU", never_parked),
    (
        "frames: dropping the files returned every frame",
        no_frame_leak,
    ),
];

/// Runs every test, printing one line each; returns `(passed, failed)`.
pub fn run() -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in TESTS {
        match test() {
            Ok(()) => {
                passed += 1;
                kprintln!("ok - {name}");
            }
            Err(why) => {
                failed += 1;
                kprintln!("FAILED - {name}: {why}");
            }
        }
    }
    (passed, failed)
}

/// Filesystem block size of the test filesystem: 1 KiB, a quarter page.
const BSHIFT: u32 = 10;
/// Size of the sample file: eleven pages and 1000 bytes, so EOF falls mid-page and
/// mid-block.
const SAMPLE_SIZE: u64 = 11 * PAGE_SIZE as u64 + 1000;
/// The page of the sample file that is entirely a hole.
const HOLE_PAGE: u64 = 4 * PAGE_SIZE as u64;
/// The page of the sample file whose second block is a hole.
const PARTIAL_HOLE_PAGE: u64 = 10 * PAGE_SIZE as u64;

/// The sample file's block placement: runs out of order, a whole-page hole and a
/// one-block hole inside a page.
fn sample_layout() -> Vec<Option<u64>> {
    let mut layout = Vec::new();
    layout.extend((64..80).map(Some)); // pages 0-3
    layout.extend([None; 4]); // page 4: a hole
    layout.extend((200..212).map(Some)); // pages 5-7
    layout.extend((100..108).map(Some)); // pages 8-9, below the previous run
    layout.extend([Some(300), None, Some(301), Some(302)]); // page 10: 1 KiB hole
    layout.push(Some(303)); // page 11, up to EOF
    layout
}

/// The byte at file offset `offset` of a file written with `seed`.
fn pattern(seed: u8, offset: u64) -> u8 {
    (offset.wrapping_mul(0x9e37_79b1) >> 11) as u8 ^ seed
}

/// `len` bytes of pattern `seed` starting at file offset `from`.
fn patterned(seed: u8, from: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(seed, from + i)).collect()
}

/// A fresh 1 MiB filesystem of 1 KiB blocks.
fn filesystem() -> Arc<RamFs> {
    RamFs::new(1024, BSHIFT)
}

/// The sample file on a fresh filesystem, and the bytes it must read as.
fn sample() -> (Arc<RamFile>, Vec<u8>) {
    let file = filesystem().create(SAMPLE_SIZE, &sample_layout());
    let mut expected = patterned(7, 0, SAMPLE_SIZE as usize);
    file.write_disk(0, &expected);
    // Garbage after EOF in the last block: the pager must not show it.
    file.write_disk(SAMPLE_SIZE, &[0xee; 24]);
    for (lbn, block) in sample_layout().iter().enumerate() {
        if block.is_none() {
            expected[lbn << BSHIFT..(lbn + 1) << BSHIFT].fill(0);
        }
    }
    (file, expected)
}

/// The flags and dirty status of the resident page at `offset`, if any.
fn page_state(file: &RamFile, offset: u64) -> Option<(PageFlags, DirtyStatus)> {
    let state = file.object().read();
    state
        .cache()
        .lookup(offset)
        .map(|page| (page.flags, page.dirty()))
}

/// How many pages of `file` are resident.
fn resident(file: &RamFile) -> usize {
    file.object().read().cache().resident_pages()
}

/// Fails unless no page of `file` is busy.
fn none_busy(file: &RamFile) -> Outcome {
    let state = file.object().read();
    match state.cache().range(0..u64::MAX).find(|page| page.is_busy()) {
        Some(page) => Err(format!("page {:#x} left busy", page.offset())),
        None => Ok(()),
    }
}

/// Test: frames: the kernel's frames are handed out poisoned and come back.
fn frames_round_trip() -> Outcome {
    let before = frames::free_frames();
    ensure!(
        before > 0 && before == frames::total_frames(),
        "{before} of {} frames free at boot",
        frames::total_frames()
    );
    let frame = frames::alloc().ok_or("no frame")?;
    ensure!(
        frames::contains(frame),
        "frame {frame:p} outside the region"
    );
    ensure_eq!(frame.as_ptr() as usize % PAGE_SIZE, 0);
    // SAFETY: the frame was just allocated and is ours: PAGE_SIZE readable bytes.
    let bytes = unsafe { core::slice::from_raw_parts(frame.as_ptr(), PAGE_SIZE) };
    ensure!(
        bytes.iter().all(|&b| b == frames::POISON),
        "frame not poisoned"
    );
    ensure_eq!(frames::free_frames(), before - 1);
    // SAFETY: allocated above, no reference to it remains (`bytes` is dead).
    unsafe { frames::free(frame) };
    ensure_eq!(frames::free_frames(), before);
    Ok(())
}

/// Test: read: a file with holes and scattered 1 KiB blocks reads back exactly.
fn read_whole_file() -> Outcome {
    let (file, expected) = sample();
    let mut buf = vec![0u8; SAMPLE_SIZE as usize + 5000];
    let got = read(&file, 0, &mut buf).context("read")?;
    ensure_eq!(got, SAMPLE_SIZE as usize);
    if let Some(at) = (0..got).find(|&i| buf[i] != expected[i]) {
        return Err(format!(
            "byte {at:#x} is {:#x}, expected {:#x}",
            buf[at], expected[at]
        ));
    }
    ensure_eq!(resident(&file), 12);
    none_busy(&file)
}

/// Test: read: cached pages live in kernel frames and re-reads do no I/O.
fn cached_reread() -> Outcome {
    let (file, expected) = sample();
    let mut buf = vec![0u8; SAMPLE_SIZE as usize];
    read(&file, 0, &mut buf).context("first read")?;
    let reads = file.device().requests(Direction::Read);
    ensure!(reads > 0, "the first read did no device I/O");
    buf.fill(0);
    ensure_eq!(
        read(&file, 0, &mut buf).context("second read")?,
        SAMPLE_SIZE as usize
    );
    ensure!(buf == expected, "second read differs");
    ensure_eq!(file.device().requests(Direction::Read), reads);
    {
        let state = file.object().read();
        for page in state.cache().range(0..u64::MAX) {
            ensure!(
                frames::contains(page.frame()),
                "page {:#x} is not in a kernel frame",
                page.offset()
            );
        }
    }
    let fetched = getpages(&file, Fault::resident(0, 4, Access::Read)).context("fast path")?;
    let pages = fetched
        .into_resident()
        .ok_or("fast path returned no resident pages")?;
    ensure!(pages.is_complete(), "fast path missed a cached page");
    ensure!(
        pages.bytes(3) == Some(&expected[3 * PAGE_SIZE..4 * PAGE_SIZE]),
        "fast-path bytes differ"
    );
    Ok(())
}

/// Test: read: unaligned reads and reads at end of file.
fn unaligned_and_eof_reads() -> Outcome {
    let (file, expected) = sample();
    let mut buf = [0u8; 3000];
    // Across a page boundary and three block boundaries.
    ensure_eq!(read(&file, 4090, &mut buf).context("read at 4090")?, 3000);
    ensure!(buf[..] == expected[4090..7090], "bytes at 4090 differ");
    // Past end of file: a short read, then nothing.
    ensure_eq!(
        read(&file, SAMPLE_SIZE - 100, &mut buf).context("read near EOF")?,
        100
    );
    ensure!(
        buf[..100] == expected[SAMPLE_SIZE as usize - 100..],
        "tail differs"
    );
    ensure_eq!(
        read(&file, SAMPLE_SIZE, &mut buf).context("read at EOF")?,
        0
    );
    // The last page holds zeroes after EOF, not the disk's garbage or the poison.
    let last = 11 * PAGE_SIZE as u64;
    let fetched = getpages(&file, Fault::read(last, 1)).context("getpages")?;
    let pages = fetched.into_busy().ok_or("no busy pages")?;
    ensure!(
        pages.bytes(0)[1000..].iter().all(|&b| b == 0),
        "bytes past EOF are not zero"
    );
    drop(pages);
    none_busy(&file)
}

/// Test: hole: reads as zeroes, its resident page is RDONLY.
fn hole_reads_zero_rdonly() -> Outcome {
    let (file, expected) = sample();
    let fetched = getpages(&file, Fault::read(HOLE_PAGE, 1)).context("getpages hole")?;
    let pages = fetched.into_busy().ok_or("no busy pages")?;
    ensure!(
        pages.bytes(0).iter().all(|&b| b == 0),
        "hole page is not zero"
    );
    drop(pages);
    let (flags, dirty) = page_state(&file, HOLE_PAGE).ok_or("hole page not resident")?;
    ensure!(
        flags.contains(PageFlags::RDONLY),
        "hole page flags {flags:?} lack RDONLY"
    );
    ensure_eq!(dirty, DirtyStatus::Clean);
    // A page that is only partly a hole is read-only too, and zero only over the hole.
    let mut buf = vec![0u8; PAGE_SIZE];
    read(&file, PARTIAL_HOLE_PAGE, &mut buf).context("read partial hole")?;
    ensure!(
        buf[..] == expected[PARTIAL_HOLE_PAGE as usize..][..PAGE_SIZE],
        "partial-hole page differs"
    );
    ensure!(
        buf[1024..2048].iter().all(|&b| b == 0),
        "partial hole not zero"
    );
    let (flags, _) =
        page_state(&file, PARTIAL_HOLE_PAGE).ok_or("partial-hole page not resident")?;
    ensure!(
        flags.contains(PageFlags::RDONLY),
        "partial-hole page flags {flags:?} lack RDONLY"
    );
    // A fully mapped page is not.
    read(&file, 0, &mut buf).context("read page 0")?;
    let (flags, _) = page_state(&file, 0).ok_or("page 0 not resident")?;
    ensure!(!flags.contains(PageFlags::RDONLY), "mapped page is RDONLY");
    ensure_eq!(file.alloc_calls(), 0);
    Ok(())
}

/// Test: hole: a write fault calls BlockMap::alloc, page turns writable and dirty.
fn hole_write_fault() -> Outcome {
    let (file, _) = sample();
    let mut buf = vec![0u8; PAGE_SIZE];
    read(&file, HOLE_PAGE, &mut buf).context("read hole")?;
    ensure!(
        page_state(&file, HOLE_PAGE).is_some_and(|(f, _)| f.contains(PageFlags::RDONLY)),
        "not RDONLY"
    );
    let lbn = HOLE_PAGE >> BSHIFT;
    ensure!(file.block_of(lbn).is_none(), "hole already has a block");
    let fetched = getpages(&file, Fault::write(HOLE_PAGE, 1)).context("write fault")?;
    let mut pages = fetched.into_writable().ok_or("no writable pages")?;
    ensure_eq!(file.alloc_calls(), 1);
    for block in lbn..lbn + 4 {
        ensure!(
            file.block_of(block).is_some(),
            "block {block} still a hole after alloc"
        );
    }
    pages.bytes_mut(0)[100..105].copy_from_slice(b"hello");
    drop(pages);
    let (flags, dirty) = page_state(&file, HOLE_PAGE).ok_or("page gone")?;
    ensure!(
        !flags.contains(PageFlags::RDONLY),
        "page still RDONLY: {flags:?}"
    );
    ensure_eq!(dirty, DirtyStatus::Dirty);
    // The page is writable now: the write fast path hands it out without a fault.
    let fetched =
        getpages(&file, Fault::resident(HOLE_PAGE, 1, Access::Write)).context("write fast path")?;
    let pages = fetched.into_resident().ok_or("no resident page")?;
    ensure!(
        pages.bytes(0).is_some_and(|b| &b[100..105] == b"hello"),
        "written bytes lost"
    );
    drop(pages);
    none_busy(&file)
}

/// Test: read-ahead: an asynchronous fault completes inline.
fn read_ahead() -> Outcome {
    let (file, expected) = sample();
    let fetched = getpages(
        &file,
        Fault::read_ahead(0, 4).with_advice(Advice::Sequential),
    )
    .context("read-ahead")?;
    ensure!(
        matches!(fetched, genpager::Fetched::Started),
        "read-ahead did not report Started"
    );
    drop(fetched);
    ensure_eq!(resident(&file), 4);
    none_busy(&file)?;
    for index in 0..4u64 {
        let (flags, _) = page_state(&file, index * PAGE_SIZE as u64).ok_or("page missing")?;
        ensure!(!flags.contains(PageFlags::FAKE), "page {index} still FAKE");
    }
    let fetched = getpages(&file, Fault::resident(0, 4, Access::Read)).context("fast path")?;
    let pages = fetched.into_resident().ok_or("no resident pages")?;
    ensure!(
        pages.is_complete(),
        "read-ahead pages not found by the fast path"
    );
    ensure!(
        pages.bytes(2) == Some(&expected[2 * PAGE_SIZE..3 * PAGE_SIZE]),
        "read-ahead bytes differ"
    );
    Ok(())
}

/// Test: error: a failed device read is reported and leaves no page.
fn read_error() -> Outcome {
    let (file, expected) = sample();
    let frames_before = frames::free_frames();
    file.device().fail_next(Direction::Read);
    let mut buf = vec![0u8; 2 * PAGE_SIZE];
    ensure_eq!(read(&file, 0, &mut buf), Err(Error::Io));
    ensure!(
        !file.device().failure_armed(),
        "the failure was never injected"
    );
    ensure_eq!(resident(&file), 0);
    ensure_eq!(frames::free_frames(), frames_before);
    ensure_eq!(
        read(&file, 0, &mut buf).context("read after the error")?,
        2 * PAGE_SIZE
    );
    ensure!(
        buf[..] == expected[..2 * PAGE_SIZE],
        "bytes after the error differ"
    );
    none_busy(&file)
}

/// Test: error: no free frame is NoMemory and leaves nothing busy.
fn frame_exhaustion() -> Outcome {
    let (file, expected) = sample();
    let mut hoard = Vec::new();
    while let Some(frame) = frames::alloc() {
        hoard.push(frame);
    }
    let mut buf = vec![0u8; PAGE_SIZE];
    let result = read(&file, 0, &mut buf);
    for frame in hoard {
        // SAFETY: each frame came from `frames::alloc` above and was never used.
        unsafe { frames::free(frame) };
    }
    ensure_eq!(result, Err(Error::NoMemory));
    ensure_eq!(resident(&file), 0);
    ensure_eq!(
        read(&file, 0, &mut buf).context("read after frames returned")?,
        PAGE_SIZE
    );
    ensure!(buf[..] == expected[..PAGE_SIZE], "bytes differ");
    none_busy(&file)
}

/// Flush and evict: what a kernel's fsync and "drop this vnode's pages" call.
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
const EVICT: PutFlags = PutFlags::CLEANIT
    .union(PutFlags::SYNCIO)
    .union(PutFlags::FREE);

/// Size of the file the write tests create: three pages and 500 bytes.
const WRITTEN_SIZE: usize = 3 * PAGE_SIZE + 500;

/// A new empty file on a fresh filesystem, written through the buffered write helper,
/// and the bytes written.
fn written_file() -> Result<(Arc<RamFile>, Vec<u8>), String> {
    let file = filesystem().create(0, &[]);
    let data = patterned(3, 0, WRITTEN_SIZE);
    ensure_eq!(write(&file, 0, &data).context("write")?, WRITTEN_SIZE);
    Ok((file, data))
}

/// Fails unless the disk holds `expected` at file offset 0.
fn disk_holds(file: &RamFile, expected: &[u8]) -> Outcome {
    let mut disk = vec![0u8; expected.len()];
    file.read_disk(0, &mut disk);
    match (0..expected.len()).find(|&i| disk[i] != expected[i]) {
        Some(at) => Err(format!(
            "disk byte {at:#x} is {:#x}, expected {:#x}",
            disk[at], expected[at]
        )),
        None => Ok(()),
    }
}

/// Test: write: buffered write then putpages(SYNCIO) puts the bytes on disk.
fn write_and_flush() -> Outcome {
    let (file, data) = written_file()?;
    ensure_eq!(file.object().size(), WRITTEN_SIZE as u64);
    ensure!(file.alloc_calls() > 0, "the write allocated no block");
    ensure!(
        file.object().read().cache().any_tagged(Tag::Dirty),
        "nothing dirty after the write"
    );
    ensure_eq!(file.device().requests(Direction::Write), 0);
    putpages(&file, 0, 0, FLUSH).context("putpages(CLEANIT|SYNCIO)")?;
    let writes = file.device().requests(Direction::Write);
    ensure!(writes > 0, "the flush wrote nothing");
    disk_holds(&file, &data)?;
    // Every page written was write-protected and marked clean (genpager departs from
    // the reference here, which leaves a cluster's later pages "unknown"): one fsync
    // leaves the file clean and off the work list.
    ensure!(
        !file.object().read().cache().any_tagged(Tag::Dirty),
        "pages still tagged dirty after one flush"
    );
    for index in 0..4u64 {
        let (_, dirty) = page_state(&file, index * PAGE_SIZE as u64).ok_or("page missing")?;
        ensure_eq!(dirty, DirtyStatus::Clean);
    }
    putpages(&file, 0, 0, FLUSH).context("second flush")?;
    ensure_eq!(file.device().requests(Direction::Write), writes);
    ensure!(
        !file.object().read().cache().any_tagged(Tag::Dirty),
        "pages still tagged dirty"
    );
    for index in 0..4u64 {
        let (_, dirty) = page_state(&file, index * PAGE_SIZE as u64).ok_or("page missing")?;
        ensure_eq!(dirty, DirtyStatus::Clean);
    }
    disk_holds(&file, &data)?;
    none_busy(&file)
}

/// Test: write: putpages(FREE) evicts, getpages reads the file back.
fn evict_and_read_back() -> Outcome {
    let frames_before = frames::free_frames();
    let (file, data) = written_file()?;
    putpages(&file, 0, 0, FLUSH).context("flush")?;
    putpages(&file, 0, 0, EVICT).context("putpages(FREE)")?;
    ensure_eq!(resident(&file), 0);
    ensure_eq!(frames::free_frames(), frames_before);
    let reads = file.device().requests(Direction::Read);
    let fetched = getpages(&file, Fault::read(0, 4)).context("getpages")?;
    let pages = fetched.into_busy().ok_or("no busy pages")?;
    ensure_eq!(pages.len(), 4);
    for index in 0..4 {
        let have = &pages.bytes(index)[..PAGE_SIZE.min(WRITTEN_SIZE - index * PAGE_SIZE)];
        ensure!(
            have == &data[index * PAGE_SIZE..][..have.len()],
            "page {index} differs after eviction"
        );
    }
    ensure!(
        pages.bytes(3)[500..].iter().all(|&b| b == 0),
        "bytes past EOF are not zero"
    );
    drop(pages);
    ensure!(
        file.device().requests(Direction::Read) > reads,
        "read back without device I/O"
    );
    let mut buf = vec![0u8; WRITTEN_SIZE + 100];
    ensure_eq!(read(&file, 0, &mut buf).context("read")?, WRITTEN_SIZE);
    ensure!(
        buf[..WRITTEN_SIZE] == data[..],
        "read(2) differs after eviction"
    );
    none_busy(&file)
}

/// Test: write: a write past EOF leaves a hole that reads as zeroes.
fn sparse_write() -> Outcome {
    let file = filesystem().create(0, &[]);
    let at = 5 * PAGE_SIZE as u64 + 10;
    ensure_eq!(write(&file, at, b"tail").context("write")?, 4);
    ensure_eq!(file.object().size(), at + 4);
    ensure!(
        file.block_of(0).is_none() && file.block_of(19).is_none(),
        "blocks before the write allocated"
    );
    ensure!(
        file.block_of(at >> BSHIFT).is_some(),
        "the written block is a hole"
    );
    putpages(&file, 0, 0, EVICT).context("evict")?;
    ensure_eq!(resident(&file), 0);
    let mut buf = vec![0xffu8; at as usize + 4];
    ensure_eq!(read(&file, 0, &mut buf).context("read")?, at as usize + 4);
    ensure!(
        buf[..at as usize].iter().all(|&b| b == 0),
        "the hole before the write is not zero"
    );
    ensure!(&buf[at as usize..] == b"tail", "written bytes differ");
    let (flags, _) = page_state(&file, 0).ok_or("page 0 not resident")?;
    ensure!(flags.contains(PageFlags::RDONLY), "hole page 0 not RDONLY");
    none_busy(&file)
}

/// Test: hole: a buffered write into a hole allocates, page turns writable and dirty.
fn hole_buffered_write() -> Outcome {
    let (file, mut expected) = sample();
    let mut buf = vec![0u8; PAGE_SIZE];
    read(&file, HOLE_PAGE, &mut buf).context("read hole")?;
    ensure!(
        page_state(&file, HOLE_PAGE).is_some_and(|(f, _)| f.contains(PageFlags::RDONLY)),
        "not RDONLY"
    );
    let at = HOLE_PAGE as usize + 100;
    ensure_eq!(
        write(&file, at as u64, b"hello, kernel").context("write into the hole")?,
        13
    );
    ensure!(file.alloc_calls() >= 1, "BlockMap::alloc was not called");
    ensure!(
        file.block_of(HOLE_PAGE >> BSHIFT).is_some(),
        "the written block is still a hole"
    );
    let (flags, dirty) = page_state(&file, HOLE_PAGE).ok_or("page gone")?;
    ensure!(
        !flags.contains(PageFlags::RDONLY),
        "page still RDONLY: {flags:?}"
    );
    ensure_eq!(dirty, DirtyStatus::Dirty);
    expected[at..at + 13].copy_from_slice(b"hello, kernel");
    putpages(&file, 0, 0, FLUSH).context("flush")?;
    disk_holds(&file, &expected)?;
    putpages(&file, 0, 0, EVICT).context("evict")?;
    let mut all = vec![0u8; SAMPLE_SIZE as usize];
    ensure_eq!(
        read(&file, 0, &mut all).context("read back")?,
        SAMPLE_SIZE as usize
    );
    ensure!(all == expected, "file differs after the hole write");
    none_busy(&file)
}

/// Test: error: a failed device write fails putpages(SYNCIO), data stays dirty.
fn write_error() -> Outcome {
    let (file, data) = written_file()?;
    file.device().fail_next(Direction::Write);
    ensure_eq!(putpages(&file, 0, 0, FLUSH), Err(Error::Io));
    ensure!(
        !file.device().failure_armed(),
        "the failure was never injected"
    );
    ensure_eq!(resident(&file), 4);
    for index in 0..4u64 {
        let offset = index * PAGE_SIZE as u64;
        let (flags, dirty) = page_state(&file, offset).ok_or("page evicted by the failure")?;
        ensure!(!flags.contains(PageFlags::BUSY), "page {index} left busy");
        ensure!(
            dirty == DirtyStatus::Dirty,
            "page {index} is {dirty:?} after the failed write"
        );
    }
    ensure!(
        file.object().read().cache().any_tagged(Tag::Dirty),
        "dirty tag lost"
    );
    // The data survived: the next flush writes it, and reports nothing stale.
    putpages(&file, 0, 0, FLUSH).context("retry flush")?;
    disk_holds(&file, &data)?;
    putpages(&file, 0, 0, FLUSH).context("third flush")?;
    none_busy(&file)
}

/// Test: truncate: setsize frees pages past the end, regrown tail reads zero.
fn truncate_and_regrow() -> Outcome {
    let (file, data) = written_file()?;
    putpages(&file, 0, 0, FLUSH).context("flush")?;
    let size = PAGE_SIZE as u64 + 100;
    let free_blocks = file.filesystem().free_blocks();
    file.truncate(size).context("truncate")?;
    // The write allocated the blocks under its bytes (a write fault allocates up to
    // where the data ends; a later growth allocates the rest); 5 hold the first 4196.
    let block = 1024;
    let freed = WRITTEN_SIZE.div_ceil(block) - (size as usize).div_ceil(block);
    ensure_eq!(file.filesystem().free_blocks(), free_blocks + freed);
    ensure_eq!(file.object().size(), size);
    ensure!(
        resident(&file) <= 2,
        "{} pages resident past the new end",
        resident(&file)
    );
    let mut buf = vec![0u8; WRITTEN_SIZE];
    ensure_eq!(read(&file, 0, &mut buf).context("read")?, size as usize);
    ensure!(
        buf[..size as usize] == data[..size as usize],
        "kept bytes differ"
    );
    // Grown again, the old bytes past the cut must not come back: not from the cached
    // tail page, and not from the disk after eviction.
    file.truncate(2 * PAGE_SIZE as u64).context("grow")?;
    for pass in ["cached", "evicted"] {
        buf.fill(0xff);
        ensure_eq!(
            read(&file, 0, &mut buf).context("read grown")?,
            2 * PAGE_SIZE
        );
        ensure!(
            buf[..size as usize] == data[..size as usize],
            "{pass}: kept bytes differ"
        );
        ensure!(
            buf[size as usize..2 * PAGE_SIZE].iter().all(|&b| b == 0),
            "{pass}: old bytes came back"
        );
        putpages(&file, 0, 0, EVICT).context("evict")?;
    }
    none_busy(&file)
}

/// Test: truncate: a write inside the cut last page allocates the freed blocks again.
///
/// The truncate recipe with 1 KiB blocks: the last page stays cached (valid, writable)
/// while the filesystem frees the blocks under it past the new end; a write there
/// later must allocate them again, or writeback skips them as holes and the bytes are
/// lost once the page is evicted.
fn truncate_then_write_in_the_last_page() -> Outcome {
    let (file, data) = written_file()?;
    putpages(&file, 0, 0, FLUSH).context("flush")?;
    let mut buf = vec![0u8; PAGE_SIZE];
    ensure_eq!(read(&file, 0, &mut buf).context("read")?, PAGE_SIZE);
    file.truncate(1000).context("truncate")?;
    let bytes = patterned(21, 0, 100);
    ensure_eq!(write(&file, 2600, &bytes).context("write")?, 100);
    putpages(&file, 0, 0, EVICT).context("evict")?;
    ensure_eq!(resident(&file), 0);
    let mut back = vec![0xffu8; 2700];
    ensure_eq!(read(&file, 0, &mut back).context("read back")?, 2700);
    ensure!(back[..1000] == data[..1000], "kept bytes differ");
    ensure!(
        back[1000..2600].iter().all(|&b| b == 0),
        "the gap is not zero"
    );
    ensure!(back[2600..] == bytes[..], "the written bytes were lost");
    none_busy(&file)
}

/// Test: write: 8 KiB blocks (two pages each) round-trip through a hole.
fn large_blocks() -> Outcome {
    // 8 KiB blocks: block 0 mapped, block 1 a hole, block 2 mapped, 20 KiB file.
    let fs = RamFs::new(128, 13);
    let size = 20 * 1024;
    let file = fs.create(size, &[Some(5), None, Some(9)]);
    let mut expected = patterned(9, 0, size as usize);
    file.write_disk(0, &expected);
    expected[8192..16384].fill(0);
    let mut buf = vec![0u8; size as usize];
    ensure_eq!(read(&file, 0, &mut buf).context("read")?, size as usize);
    ensure!(buf == expected, "8 KiB-block file differs");
    for page in [2u64, 3] {
        let (flags, _) = page_state(&file, page * PAGE_SIZE as u64).ok_or("hole page missing")?;
        ensure!(
            flags.contains(PageFlags::RDONLY),
            "hole page {page} not RDONLY"
        );
    }
    // A write into the second page of the hole block allocates the whole block.
    let at = 3 * PAGE_SIZE + 7;
    ensure_eq!(write(&file, at as u64, b"big block").context("write")?, 9);
    expected[at..at + 9].copy_from_slice(b"big block");
    ensure!(file.alloc_calls() >= 1, "BlockMap::alloc was not called");
    ensure!(file.block_of(1).is_some(), "the hole block is still a hole");
    putpages(&file, 0, 0, EVICT).context("evict")?;
    ensure_eq!(resident(&file), 0);
    disk_holds(&file, &expected)?;
    buf.fill(0xff);
    ensure_eq!(
        read(&file, 0, &mut buf).context("read back")?,
        size as usize
    );
    ensure!(buf == expected, "8 KiB-block file differs after the write");
    none_busy(&file)
}

/// Test: park: nothing ever waited on this single CPU.
fn never_parked() -> Outcome {
    ensure_eq!(park::PARK.parks(), 0);
    Ok(())
}

/// Test: frames: dropping the files returned every frame.
fn no_frame_leak() -> Outcome {
    ensure_eq!(frames::free_frames(), frames::total_frames());
    Ok(())
}
