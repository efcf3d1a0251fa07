//! Scenario tests for the compat pager (filesystems without a block map), catalogue rows
//! C1 (getpages through `read_at`) and C2 (gop_write through `write_at`, then the normal
//! write completion).

mod common;

use std::sync::{Arc, Mutex};

use common::{fault_of, pattern};
use genpager::cache::DefaultCache;
use genpager::compat::{ByteIo, NoBlocks, getpages};
use genpager::{
    Access, BusyPages, DirtyStatus, Error, Fetched, GetFlags, ObjectFlags, PAGE_SIZE, PageCache,
    PageFlags, PutFlags, VmObject, Vnode, fsync, putpages,
};

const P: u64 = PAGE_SIZE as u64;
const SYNC: GetFlags = GetFlags::SYNCIO;
/// What fsync asks for: every dirty page written, synchronously.
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
/// [`FLUSH`], and the pages freed once written.
const FLUSH_AND_FREE: PutFlags = FLUSH.union(PutFlags::FREE);

/// One call the pager made into the filesystem: (`"read"` or `"write"`, offset, length).
type Call = (&'static str, u64, usize);

/// A file whose bytes live in a vector, reached only through [`ByteIo`].
struct ByteFile {
    object: VmObject<DefaultCache>,
    data: Mutex<Vec<u8>>,
    calls: Mutex<Vec<Call>>,
    fail_read_at: Mutex<Option<u64>>,
    fail_writes: Mutex<bool>,
}

impl ByteFile {
    fn new(data: &[u8]) -> Arc<Self> {
        Arc::new(Self {
            object: VmObject::new(DefaultCache::new(), data.len() as u64),
            data: Mutex::new(data.to_vec()),
            calls: Mutex::new(Vec::new()),
            fail_read_at: Mutex::new(None),
            fail_writes: Mutex::new(false),
        })
    }

    /// The calls made since the last look, forgotten.
    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Makes `read_at` fail at `offset` (or nowhere, with `None`).
    fn fail_read_at(&self, offset: Option<u64>) {
        *self.fail_read_at.lock().unwrap() = offset;
    }

    /// Makes every `write_at` fail (or none).
    fn fail_writes(&self, fail: bool) {
        *self.fail_writes.lock().unwrap() = fail;
    }

    fn contents(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }

    fn page(&self, offset: u64) -> Option<(PageFlags, DirtyStatus)> {
        let state = self.object.read();
        state.cache().lookup(offset).map(|p| (p.flags, p.dirty()))
    }

    fn resident(&self) -> Vec<u64> {
        let state = self.object.read();
        state
            .cache()
            .range(0..u64::MAX)
            .map(|p| p.offset())
            .collect()
    }
}

impl ByteIo for ByteFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> genpager::Result<usize> {
        self.calls.lock().unwrap().push(("read", offset, buf.len()));
        if *self.fail_read_at.lock().unwrap() == Some(offset) {
            return Err(Error::Io);
        }
        // Scribble over the whole buffer first: the pager must zero what is not read.
        buf.fill(0xAB);
        let data = self.data.lock().unwrap();
        let start = (offset as usize).min(data.len());
        let n = (data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> genpager::Result {
        self.calls
            .lock()
            .unwrap()
            .push(("write", offset, data.len()));
        if *self.fail_writes.lock().unwrap() {
            return Err(Error::Io);
        }
        let mut file = self.data.lock().unwrap();
        let end = offset as usize + data.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn write_vectored_at(&self, offset: u64, data: &[&[u8]]) -> genpager::Result {
        // One call for the whole cluster, like a VOP_WRITE with several iovecs.
        let joined: Vec<u8> = data.concat();
        self.write_at(offset, &joined)
    }
}

impl Vnode for ByteFile {
    type Cache = DefaultCache;
    type Map = NoBlocks;
    type Dev = NoBlocks;

    fn object(&self) -> &VmObject<DefaultCache> {
        &self.object
    }
    fn block_map(&self) -> &NoBlocks {
        &NoBlocks
    }
    fn device(&self) -> &NoBlocks {
        &NoBlocks
    }
    fn fs_bshift(&self) -> u32 {
        12
    }
    fn max_transfer(&self) -> usize {
        // The default 64 KiB, but at least four pages (the default is a single page at
        // 64 KiB pages), so a cluster spans several pages at every page size.
        genpager::DEFAULT_MAX_TRANSFER.max(4 * PAGE_SIZE)
    }
    fn byte_io(&self) -> Option<&dyn ByteIo> {
        Some(self)
    }
}

fn fault(
    file: &Arc<ByteFile>,
    offset: u64,
    count: usize,
    center: usize,
    access: Access,
    flags: GetFlags,
) -> genpager::Result<Fetched<'_, ByteFile>> {
    getpages(file, fault_of(offset, count, center, access, flags))
}

/// The busy pages of a synchronous read fault of `count` pages from `offset`, the
/// caller needing the `center`-th.
fn read_fault(
    file: &Arc<ByteFile>,
    offset: u64,
    count: usize,
    center: usize,
) -> BusyPages<'_, ByteFile> {
    fault(file, offset, count, center, Access::Read, SYNC)
        .unwrap()
        .into_busy()
        .unwrap()
}

/// Makes `count` pages from `offset` resident and valid (a read fault, released) and
/// forgets the calls that took.
fn make_resident(file: &Arc<ByteFile>, offset: u64, count: usize) {
    read_fault(file, offset, count, 0).release();
    file.calls();
}

/// A synchronous write fault of the first `count` pages that stores each
/// `(page, at, byte)` and releases them dirty; the calls it made are forgotten.
fn write_fault_storing(file: &Arc<ByteFile>, count: usize, stores: &[(usize, usize, u8)]) {
    let mut pages = fault(file, 0, count, 0, Access::Write, SYNC)
        .unwrap()
        .into_writable()
        .unwrap();
    for &(page, at, byte) in stores {
        pages.bytes_mut(page)[at] = byte;
    }
    drop(pages);
    file.calls();
}

/// What a write fault leaves behind: dirty tracking started on the first page (its
/// status unknown) and the vnode on the work list.
fn assert_dirty_tracking_started(file: &ByteFile) {
    assert_eq!(file.page(0).unwrap().1, DirtyStatus::Unknown);
    assert!(
        file.object
            .read()
            .flags()
            .contains(ObjectFlags::ON_WORKLIST)
    );
}

/// What a finished flush leaves behind: the pages at `offsets` neither busy nor in
/// writeback, and no write in flight.
fn assert_settled(file: &ByteFile, offsets: &[u64]) {
    let state = file.object.read();
    for &offset in offsets {
        let page = state.cache().lookup(offset).unwrap();
        assert!(!page.is_busy() && !page.in_writeback());
    }
    assert_eq!(state.writes_in_flight(), 0);
}

// ---- C1: getpages through read_at ----------------------------------------------------

#[test]
fn c01_reads_each_fake_page_and_zeroes_the_short_tail() {
    let data = pattern(2 * PAGE_SIZE + 1000, 1);
    let file = ByteFile::new(&data);
    let pages = read_fault(&file, 0, 8, 0);
    assert_eq!(pages.len(), 3, "no page wholly past EOF");
    assert_eq!(pages.bytes(0), &data[..PAGE_SIZE]);
    assert_eq!(pages.bytes(1), &data[PAGE_SIZE..2 * PAGE_SIZE]);
    assert_eq!(&pages.bytes(2)[..1000], &data[2 * PAGE_SIZE..]);
    assert!(
        pages.bytes(2)[1000..].iter().all(|&b| b == 0),
        "the tail past EOF is zeroed"
    );
    drop(pages);
    assert_eq!(
        file.calls(),
        [
            ("read", 0, PAGE_SIZE),
            ("read", P, PAGE_SIZE),
            ("read", 2 * P, PAGE_SIZE)
        ]
    );
    for offset in [0, P, 2 * P] {
        let (flags, dirty) = file.page(offset).unwrap();
        assert!(
            !flags.intersects(PageFlags::BUSY | PageFlags::FAKE),
            "{flags:?}"
        );
        assert_eq!(dirty, DirtyStatus::Clean, "a read fault leaves pages clean");
    }
}

#[test]
fn c01_valid_pages_are_not_read_again() {
    let data = pattern(4 * PAGE_SIZE, 2);
    let file = ByteFile::new(&data);
    make_resident(&file, P, 1);
    let pages = read_fault(&file, 0, 3, 1);
    assert_eq!(pages.bytes(1), &data[PAGE_SIZE..2 * PAGE_SIZE]);
    drop(pages);
    assert_eq!(
        file.calls(),
        [("read", 0, PAGE_SIZE), ("read", 2 * P, PAGE_SIZE)]
    );
}

#[test]
fn c01_locked_fast_path_serves_resident_pages_without_io() {
    let data = pattern(4 * PAGE_SIZE, 3);
    let file = ByteFile::new(&data);
    make_resident(&file, 0, 2);
    let pages = fault(&file, 0, 2, 1, Access::Read, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    assert!(pages.is_complete());
    assert_eq!(pages.bytes(1).unwrap(), &data[PAGE_SIZE..2 * PAGE_SIZE]);
    drop(pages);
    assert!(
        matches!(
            fault(&file, 0, 4, 3, Access::Read, GetFlags::LOCKED),
            Err(Error::Busy)
        ),
        "center missing"
    );
    assert!(file.calls().is_empty());
    assert_eq!(file.resident(), [0, P], "the fast path allocates nothing");

    // A locked write fault starts dirty tracking and puts the vnode on the work list.
    let pages = fault(&file, 0, 2, 0, Access::Write, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    drop(pages);
    assert_dirty_tracking_started(&file);
}

#[test]
fn c01_past_eof_is_invalid_and_async_answers_without_io() {
    let data = pattern(2 * PAGE_SIZE, 4);
    let file = ByteFile::new(&data);
    for flags in [SYNC, GetFlags::empty(), GetFlags::LOCKED] {
        assert!(
            matches!(
                fault(&file, 2 * P, 1, 0, Access::Read, flags),
                Err(Error::Invalid)
            ),
            "{flags:?}"
        );
        assert!(
            matches!(
                fault(&file, 0, 3, 2, Access::Read, flags),
                Err(Error::Invalid)
            ),
            "{flags:?}"
        );
    }
    assert!(matches!(
        fault(&file, 1, 1, 0, Access::Read, SYNC),
        Err(Error::Invalid)
    ));
    assert!(matches!(
        fault(&file, 0, 0, 0, Access::Read, SYNC),
        Err(Error::Invalid)
    ));
    assert!(matches!(
        fault(&file, 0, 2, 0, Access::Read, GetFlags::empty()),
        Ok(Fetched::Started)
    ));
    assert!(file.calls().is_empty());
    assert!(
        file.resident().is_empty(),
        "read-ahead is answered without I/O or pages"
    );
    // PASTEOF lets a writer extend the file.
    let pages = fault(&file, 2 * P, 1, 0, Access::Write, SYNC | GetFlags::PASTEOF)
        .unwrap()
        .into_busy()
        .unwrap();
    assert!(pages.bytes(0).iter().all(|&b| b == 0));
}

#[test]
fn c01_refuses_the_combinations_getpages_refuses_without_io() {
    let data = pattern(2 * PAGE_SIZE, 4);
    let file = ByteFile::new(&data);
    let overwrite_read = fault(&file, 0, 1, 0, Access::Read, SYNC | GetFlags::OVERWRITE);
    assert!(matches!(overwrite_read, Err(Error::Invalid)));
    let async_write = fault(&file, 0, 1, 0, Access::Write, GetFlags::empty());
    assert!(matches!(async_write, Err(Error::Invalid)));
    assert!(file.calls().is_empty());
    assert!(file.resident().is_empty());
}

#[test]
fn c01_read_error_releases_the_pages() {
    let data = pattern(4 * PAGE_SIZE, 5);
    let file = ByteFile::new(&data);
    make_resident(&file, 0, 1);
    file.fail_read_at(Some(2 * P));
    let result = fault(&file, 0, 4, 0, Access::Read, SYNC);
    assert!(matches!(result, Err(Error::Io)));
    assert_eq!(
        file.resident(),
        [0],
        "never-read pages are freed, the valid one stays"
    );
    assert!(!file.page(0).unwrap().0.contains(PageFlags::BUSY));
    file.fail_read_at(None);
    let pages = read_fault(&file, 0, 4, 0);
    assert_eq!(pages.bytes(3), &data[3 * PAGE_SIZE..]);
}

#[test]
fn c01_write_fault_starts_dirty_tracking() {
    let data = pattern(2 * PAGE_SIZE, 6);
    let file = ByteFile::new(&data);
    let pages = fault(&file, 0, 2, 0, Access::Write, SYNC)
        .unwrap()
        .into_writable()
        .unwrap();
    drop(pages);
    assert_dirty_tracking_started(&file);
}

// ---- C2: gop_write through write_at, then the normal completion ------------------------

#[test]
fn c02_flush_writes_through_write_at_up_to_the_write_size() {
    let data = pattern(2 * PAGE_SIZE + 1000, 7);
    let file = ByteFile::new(&data);
    write_fault_storing(&file, 3, &[(0, 10, 0x11), (1, 20, 0x55), (2, 999, 0x22)]);
    assert_eq!(putpages(&file, 0, 0, FLUSH), Ok(()));
    assert_eq!(
        file.calls(),
        [("write", 0, 2 * PAGE_SIZE + 1000)],
        "one cluster, clipped at the write size"
    );
    let mut expect = data.clone();
    expect[10] = 0x11;
    expect[PAGE_SIZE + 20] = 0x55;
    expect[2 * PAGE_SIZE + 999] = 0x22;
    assert_eq!(file.contents(), expect, "the file did not grow");
    assert_settled(&file, &[0, P, 2 * P]);
    for offset in [0, P, 2 * P] {
        let dirty = file.page(offset).unwrap().1;
        assert_ne!(dirty, DirtyStatus::Dirty, "settled as written");
    }
    assert_eq!(putpages(&file, 0, 0, FLUSH), Ok(()));
    assert!(file.calls().is_empty(), "nothing left to write");
}

#[test]
fn c02_flush_and_free() {
    let data = pattern(2 * PAGE_SIZE, 8);
    let file = ByteFile::new(&data);
    write_fault_storing(&file, 2, &[(1, 0, 0x33)]);
    assert_eq!(putpages(&file, 0, 0, FLUSH_AND_FREE), Ok(()));
    assert!(file.resident().is_empty());
    assert_eq!(file.contents()[PAGE_SIZE], 0x33);
}

#[test]
fn c02_failed_write_keeps_the_data_dirty_and_reports_once() {
    let data = pattern(2 * PAGE_SIZE, 9);
    let file = ByteFile::new(&data);
    write_fault_storing(&file, 2, &[(0, 0, 0x44)]);
    file.fail_writes(true);

    // An asynchronous flush (the syncer): the error is latched for the next fsync.
    assert_eq!(putpages(&file, 0, 0, PutFlags::CLEANIT), Err(Error::Io));
    assert_settled(&file, &[0]);
    {
        let state = file.object.read();
        assert_eq!(state.pending_write_error(), Some(Error::Io));
        assert_eq!(
            state.cache().lookup(0).unwrap().dirty(),
            DirtyStatus::Dirty,
            "no acknowledged write is lost"
        );
        assert!(state.flags().contains(ObjectFlags::ON_WORKLIST));
    }
    assert_eq!(file.contents(), data);

    // Freeing while the device keeps failing frees nothing dirty.
    assert_eq!(putpages(&file, 0, 0, FLUSH_AND_FREE), Err(Error::Io));
    assert_eq!(file.resident(), [0, P]);
    assert_eq!(file.page(0).unwrap().1, DirtyStatus::Dirty);

    // That synchronous flush reported the error; once the device recovers the data
    // reaches the file and nothing is reported again.
    assert_eq!(file.object.read().pending_write_error(), None);
    file.fail_writes(false);
    assert_eq!(putpages(&file, 0, 0, FLUSH), Ok(()));
    assert_eq!(file.contents()[0], 0x44);
    assert_ne!(file.page(0).unwrap().1, DirtyStatus::Dirty);
    assert_eq!(file.object.read().pending_write_error(), None);
}

// ---- Statistics: one request per ByteIo call ------------------------------------------

#[test]
fn stats_count_one_request_per_byte_io_call() {
    let data = pattern(2 * PAGE_SIZE + 1000, 10);
    let file = ByteFile::new(&data);
    read_fault(&file, 0, 3, 0).release();
    let reads = file.calls();
    assert_eq!(reads.len(), 3, "one read_at per page");
    let io = file.object.io_stats();
    assert_eq!(
        (io.read_requests, io.read_bytes, io.read_sizes[0]),
        (3, 3 * P, 3),
        "a page's worth asked of each read_at"
    );
    write_fault_storing(&file, 3, &[(2, 0, 0x66)]);
    assert_eq!(putpages(&file, 0, 0, FLUSH), Ok(()));
    // Only the stored-to last page is dirty: one write_at, clipped at the write size.
    assert_eq!(file.calls(), [("write", 2 * P, 1000)]);
    let io = file.object.io_stats();
    assert_eq!(
        (io.write_requests, io.write_bytes, io.write_sizes[0]),
        (1, 1000, 1)
    );
    assert_eq!((io.read_errors, io.write_errors), (0, 0));

    file.fail_read_at(Some(P));
    let mut state = file.object.lock();
    state.cache_mut().free(P);
    drop(state);
    assert!(fault(&file, 0, 2, 0, Access::Read, SYNC).is_err());
    file.fail_writes(true);
    write_fault_storing(&file, 1, &[(0, 1, 0x77)]);
    assert_eq!(putpages(&file, 0, 0, FLUSH), Err(Error::Io));
    let io = file.object.io_stats();
    assert_eq!((io.read_errors, io.write_errors), (1, 1));
}

/// C2 with errseq reporting: a write through `ByteIo` that fails is reported once to
/// each open file's cursor, and a filesystem that keeps failing fails the object
/// (nothing more is written, every fsync reports) until it is cleared.
#[test]
fn c02_failed_writes_reach_every_cursor_and_fail_the_object() {
    let data = pattern(2 * PAGE_SIZE, 9);
    let file = ByteFile::new(&data);
    file.object
        .set_write_failure_limit(std::num::NonZeroU32::new(2));
    let mut first = file.object.error_cursor();
    let mut second = file.object.error_cursor();
    write_fault_storing(&file, 2, &[(0, 0, 0x44)]);
    file.fail_writes(true);
    assert_eq!(putpages(&file, 0, 0, PutFlags::CLEANIT), Err(Error::Io));
    assert!(!file.object.is_failed());
    assert_eq!(
        fsync(&file, &mut first, 0, 0),
        Err(Error::Io),
        "its own rewrite"
    );
    assert!(file.object.is_failed(), "two failed attempts");
    assert!(!file.calls().is_empty(), "the two attempts wrote");
    assert_eq!(fsync(&file, &mut first, 0, 0), Err(Error::Io));
    assert_eq!(putpages(&file, 0, 0, FLUSH), Err(Error::Io));
    assert_eq!(file.calls(), [], "nothing more written");
    assert_eq!(file.page(0).unwrap().1, DirtyStatus::Dirty);

    file.fail_writes(false);
    file.object.clear_failed();
    assert_eq!(fsync(&file, &mut first, 0, 0), Ok(()));
    assert_eq!(file.contents()[0], 0x44);
    assert_eq!(
        fsync(&file, &mut second, 0, 0),
        Err(Error::Io),
        "once, to it too"
    );
    assert_eq!(fsync(&file, &mut second, 0, 0), Ok(()));
}
