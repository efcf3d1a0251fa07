//! Adversarial probes of issue 15's restructuring ("behaviour unchanged"), written by a
//! reviewer from the docs and the diff. Each test passes only if the documented
//! behaviour holds. The `gp` / `cgp` helpers are the only place that speaks the fault
//! API, so the same probes ran against the old seven-argument API too.
//!
//! What they found, fixed since: faults called `Vnode::mark_update` without the object
//! lock; `Fault::check` reported a wrapping range with a refused flag combination as
//! `Invalid` where the old check said `TooBig`; `scripts/layers.sh` missed upward
//! imports through `super::`, root re-exports, a crate alias and an early
//! `#[cfg(test)]` item. Decided the other way, with the docs changed to match:
//! `BlockMap::size` is called under the object lock (as the reference calls
//! `GOP_SIZE`); a `BUSYFAIL | SYNCIO` flush still waits for writes in flight; and
//! compat checks a fault in the same order as `getpages` (a refused flag combination
//! is `Invalid` before a dead vnode is `Dead`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering as AtOrd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use genpager::cache::DefaultCache;
use genpager::compat::{ByteIo, NoBlocks};
use genpager::directio::{AddressSpace, DirectFlags, Fallback, IoVec, Uio, directio};
use genpager::testing::{Direction, Layout, MemDisk, MemFile};
use genpager::{
    Access, Advice, BlockMap, DirtyStatus, Error, Fetched, GetFlags, MAX_FILE_SIZE, Mapping,
    PAGE_SIZE, PageCache, PageFlags, PutFlags, SizeKind, Update, VmObject, Vnode, VnodeKind,
    getpages, putpages, read, setsize, write,
};

const P: u64 = PAGE_SIZE as u64;
const SYNC: GetFlags = GetFlags::SYNCIO;
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);

// ---- the fault API, in one place ----------------------------------------------------

fn gp<V: Vnode>(
    file: &Arc<V>,
    offset: u64,
    count: usize,
    center: usize,
    access: Access,
    flags: GetFlags,
) -> genpager::Result<Fetched<'_, V>> {
    getpages(
        file,
        genpager::Fault {
            offset,
            count,
            center,
            access,
            advice: Advice::Normal,
            flags,
        },
    )
}

fn cgp<V: Vnode>(
    file: &Arc<V>,
    offset: u64,
    count: usize,
    center: usize,
    access: Access,
    flags: GetFlags,
) -> genpager::Result<Fetched<'_, V>> {
    genpager::compat::getpages(
        file,
        genpager::Fault {
            offset,
            count,
            center,
            access,
            advice: Advice::Normal,
            flags,
        },
    )
}

/// The error of a fault, or `None` if it succeeded (its pages released).
fn err_of<V: Vnode>(r: genpager::Result<Fetched<'_, V>>) -> Option<Error> {
    r.err()
}

// ---- a vnode that watches which hooks run under the object lock ----------------------

/// Whether another thread can take `file`'s object lock now (so nobody holds it).
fn object_lock_is_free(file: &Arc<MemFile>) -> bool {
    let (tx, rx) = mpsc::channel();
    let other = file.clone();
    thread::spawn(move || {
        drop(other.object().lock());
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_millis(300)).is_ok()
}

/// A MemFile whose `mark_update` and `BlockMap::size` record whether the object lock
/// was held when they ran.
struct Watched {
    inner: Arc<MemFile>,
    mark_update_unlocked: AtomicUsize,
    mark_update_locked: AtomicUsize,
    size_locked: AtomicUsize,
    size_unlocked: AtomicUsize,
}

impl Watched {
    fn new(inner: Arc<MemFile>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            mark_update_unlocked: AtomicUsize::new(0),
            mark_update_locked: AtomicUsize::new(0),
            size_locked: AtomicUsize::new(0),
            size_unlocked: AtomicUsize::new(0),
        })
    }
}

impl BlockMap for Watched {
    fn bmap(&self, lbn: u64) -> genpager::Result<Mapping> {
        BlockMap::bmap(&*self.inner, lbn)
    }
    fn alloc(&self, offset: u64, len: u64) -> genpager::Result {
        BlockMap::alloc(&*self.inner, offset, len)
    }
    fn max_size(&self) -> u64 {
        BlockMap::max_size(&*self.inner)
    }
    fn size(&self, size: u64, kind: SizeKind) -> u64 {
        if object_lock_is_free(&self.inner) {
            self.size_unlocked.fetch_add(1, AtOrd::SeqCst);
        } else {
            self.size_locked.fetch_add(1, AtOrd::SeqCst);
        }
        BlockMap::size(&*self.inner, size, kind)
    }
}

impl Vnode for Watched {
    type Cache = DefaultCache;
    type Map = Watched;
    type Dev = MemDisk;
    fn object(&self) -> &VmObject<DefaultCache> {
        self.inner.object()
    }
    fn block_map(&self) -> &Watched {
        self
    }
    fn device(&self) -> &MemDisk {
        self.inner.device()
    }
    fn fs_bshift(&self) -> u32 {
        self.inner.fs_bshift()
    }
    fn max_transfer(&self) -> usize {
        self.inner.max_transfer()
    }
    fn mark_update(&self, what: Update) {
        let _ = what;
        if object_lock_is_free(&self.inner) {
            self.mark_update_unlocked.fetch_add(1, AtOrd::SeqCst);
        } else {
            self.mark_update_locked.fetch_add(1, AtOrd::SeqCst);
        }
    }
}

/// `Vnode::mark_update` is documented "Called under the object lock". The old slow path
/// marked the timestamps with the object lock held; the rewritten `measure` step drops
/// it first.
#[test]
fn r15_mark_update_is_called_under_the_object_lock_on_a_read_fault() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 1));
    let watched = Watched::new(file);
    let pages = gp(&watched, 0, 2, 0, Access::Read, SYNC).unwrap();
    drop(pages);
    assert!(
        watched.mark_update_locked.load(AtOrd::SeqCst)
            + watched.mark_update_unlocked.load(AtOrd::SeqCst)
            > 0
    );
    assert_eq!(
        watched.mark_update_unlocked.load(AtOrd::SeqCst),
        0,
        "mark_update ran without the object lock (documented: called under it)"
    );
}

#[test]
fn r15_mark_update_is_called_under_the_object_lock_on_a_write_fault() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 2));
    let watched = Watched::new(file);
    let pages = gp(&watched, P, 1, 0, Access::Write, SYNC).unwrap();
    drop(pages);
    assert_eq!(
        watched.mark_update_unlocked.load(AtOrd::SeqCst),
        0,
        "mark_update ran without the object lock (documented: called under it)"
    );
}

/// `BlockMap::size` (GOP_SIZE) is documented as called under the object lock; the
/// other methods without it. A fault asks `size` under the lock only.
#[test]
fn r15_blockmap_size_is_called_under_the_object_lock() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 3));
    let watched = Watched::new(file);
    drop(gp(&watched, 0, 1, 0, Access::Read, SYNC).unwrap());
    drop(gp(&watched, 0, 1, 0, Access::Read, GetFlags::LOCKED).unwrap());
    assert!(watched.size_locked.load(AtOrd::SeqCst) > 0);
    assert_eq!(
        watched.size_unlocked.load(AtOrd::SeqCst),
        0,
        "BlockMap::size ran without the object lock"
    );
}

// ---- Fault argument checks ------------------------------------------------------------

#[test]
fn r15_fault_argument_edge_cases() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 4));
    let e = |o, c, ce, a, f| err_of(gp(&file, o, c, ce, a, f));
    assert_eq!(
        e(0, 0, 0, Access::Read, SYNC),
        Some(Error::Invalid),
        "count 0"
    );
    assert_eq!(
        e(0, 2, 2, Access::Read, SYNC),
        Some(Error::Invalid),
        "center == count"
    );
    assert_eq!(
        e(1, 1, 0, Access::Read, SYNC),
        Some(Error::Invalid),
        "unaligned"
    );
    assert_eq!(
        e(0, 1, 0, Access::Write, GetFlags::empty()),
        Some(Error::Invalid),
        "async write"
    );
    assert_eq!(
        e(0, 1, 0, Access::Read, SYNC | GetFlags::OVERWRITE),
        Some(Error::Invalid)
    );
    let top = !(P - 1);
    assert_eq!(e(top, 1, 0, Access::Read, SYNC), Some(Error::TooBig));
    assert_eq!(
        e(top, 2, 0, Access::Read, SYNC),
        Some(Error::TooBig),
        "wraps"
    );
    assert_eq!(e(0, usize::MAX, 0, Access::Read, SYNC), Some(Error::TooBig));
    assert_eq!(
        e(8 * P, 1, 0, Access::Read, SYNC),
        Some(Error::Invalid),
        "past EOF"
    );
    // LOCKED | SYNCIO: the fast path wins; nothing resident yet.
    assert_eq!(
        e(0, 1, 0, Access::Read, GetFlags::LOCKED | SYNC),
        Some(Error::Busy)
    );
    assert!(!any_busy(&file));
}

/// The old getpages checked the range (overflow: TooBig) before the access/flag
/// combination; `Fault::check` now reports an asynchronous write fault whose range
/// wraps past u64::MAX as Invalid instead.
#[test]
fn r15_wrapping_async_write_fault_is_toobig_as_before() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 5));
    let top = !(P - 1);
    assert_eq!(
        err_of(gp(&file, top, 2, 0, Access::Write, GetFlags::empty())),
        Some(Error::TooBig)
    );
    assert_eq!(
        err_of(gp(
            &file,
            top,
            2,
            0,
            Access::Read,
            GetFlags::OVERWRITE | SYNC
        )),
        Some(Error::TooBig)
    );
}

// ---- compat ---------------------------------------------------------------------------

struct ByteFile {
    object: VmObject<DefaultCache>,
    data: Mutex<Vec<u8>>,
    dead: std::sync::atomic::AtomicBool,
    fail_write: std::sync::atomic::AtomicBool,
}

impl ByteFile {
    fn new(data: &[u8]) -> Arc<Self> {
        Arc::new(Self {
            object: VmObject::new(DefaultCache::new(), data.len() as u64),
            data: Mutex::new(data.to_vec()),
            dead: false.into(),
            fail_write: false.into(),
        })
    }
}

impl ByteIo for ByteFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> genpager::Result<usize> {
        buf.fill(0xAB);
        let data = self.data.lock().unwrap();
        let start = (offset as usize).min(data.len());
        let n = (data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }
    fn write_at(&self, offset: u64, bytes: &[u8]) -> genpager::Result {
        if self.fail_write.load(AtOrd::SeqCst) {
            return Err(Error::Io);
        }
        let mut data = self.data.lock().unwrap();
        let end = offset as usize + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[offset as usize..end].copy_from_slice(bytes);
        Ok(())
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
        PAGE_SHIFT
    }
    fn is_dead(&self) -> bool {
        self.dead.load(AtOrd::SeqCst)
    }
    fn byte_io(&self) -> Option<&dyn ByteIo> {
        Some(self)
    }
}

/// compat checks a fault in the order `getpages` does (`Fault::check`): a refused
/// access/flag combination is `Invalid` before a dead vnode is `Dead`; a valid fault on
/// a dead vnode is `Dead`.
#[test]
fn r15_compat_checks_a_fault_in_the_order_getpages_does() {
    let file = ByteFile::new(&pattern(4 * PAGE_SIZE, 6));
    file.dead.store(true, AtOrd::SeqCst);
    assert_eq!(
        err_of(cgp(&file, 0, 1, 0, Access::Write, GetFlags::empty())),
        Some(Error::Invalid)
    );
    assert_eq!(
        err_of(cgp(&file, 0, 1, 0, Access::Read, SYNC)),
        Some(Error::Dead)
    );
}

/// compat::getpages refuses OVERWRITE on a read fault, as its docs and getpages say.
#[test]
fn r15_compat_refuses_overwrite_on_a_read_fault_as_documented() {
    let data = pattern(4 * PAGE_SIZE, 7);
    let file = ByteFile::new(&data);
    let result = cgp(&file, 0, 1, 0, Access::Read, SYNC | GetFlags::OVERWRITE);
    assert_eq!(err_of(result), Some(Error::Invalid));
    assert!(file.object().read().cache().resident_pages() == 0);
}

#[test]
fn r15_compat_fault_edges_and_failed_write_keeps_data() {
    let data = pattern(3 * PAGE_SIZE + 100, 8);
    let file = ByteFile::new(&data);
    assert_eq!(
        err_of(cgp(&file, 0, 0, 0, Access::Read, SYNC)),
        Some(Error::Invalid)
    );
    assert_eq!(
        err_of(cgp(&file, 0, 2, 5, Access::Read, SYNC)),
        Some(Error::Invalid)
    );
    assert_eq!(
        err_of(cgp(&file, 8 * P, 1, 0, Access::Read, SYNC)),
        Some(Error::Invalid)
    );
    assert!(matches!(
        cgp(&file, 0, 1, 0, Access::Read, GetFlags::empty()),
        Ok(Fetched::Started)
    ));
    // The last page, partly past EOF: its tail is zero.
    let pages = cgp(&file, 3 * P, 1, 0, Access::Read, SYNC)
        .unwrap()
        .into_busy()
        .unwrap();
    assert!(pages.bytes(0)[100..].iter().all(|&b| b == 0));
    drop(pages);
    let mut w = cgp(&file, 0, 2, 0, Access::Write, SYNC)
        .unwrap()
        .into_writable()
        .unwrap();
    w.bytes_mut(1)[0] = 0x5A;
    w.mark_all_written();
    drop(w);
    file.fail_write.store(true, AtOrd::SeqCst);
    assert_eq!(putpages(&file, 0, 0, FLUSH), Err(Error::Io));
    {
        let state = file.object.read();
        let page = state.cache().lookup(P).unwrap();
        assert_eq!(
            page.dirty(),
            DirtyStatus::Dirty,
            "a failed write keeps the page dirty"
        );
        assert!(!page.is_busy());
    }
    file.fail_write.store(false, AtOrd::SeqCst);
    putpages(&file, 0, 0, FLUSH).unwrap();
    assert_eq!(file.data.lock().unwrap()[PAGE_SIZE], 0x5A);
}

// ---- read() -----------------------------------------------------------------------------

#[test]
fn r15_read_across_and_past_eof() {
    let size = 3 * PAGE_SIZE + 777;
    let data = pattern(size, 9);
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Fragmented { run: 1 }, &data);
    let mut buf = vec![0u8; 2 * PAGE_SIZE];
    let at = size as u64 - 50;
    assert_eq!(read(&file, at, &mut buf).unwrap(), 50);
    assert_eq!(&buf[..50], &data[size - 50..]);
    assert_eq!(read(&file, size as u64, &mut buf).unwrap(), 0);
    assert_eq!(read(&file, size as u64 + 5 * P, &mut buf).unwrap(), 0);
    assert_eq!(
        read(&file, MAX_FILE_SIZE + 1, &mut buf),
        Err(Error::Invalid)
    );
    let mut all = vec![0u8; size + 3000];
    assert_eq!(read(&file, 0, &mut all).unwrap(), size);
    assert_eq!(&all[..size], &data[..]);
    assert!(!any_busy(&file));
}

// ---- putpages ranges and errors -----------------------------------------------------

fn dirty_all(file: &Arc<MemFile>, len: usize, seed: u8) -> Vec<u8> {
    let data = pattern(len, seed);
    assert_eq!(write(file, 0, &data), Ok(len));
    data
}

#[test]
fn r15_putpages_range_arguments() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(8 * PAGE_SIZE, 10));
    assert_eq!(
        putpages(&file, 2 * P, P, FLUSH),
        Err(Error::Invalid),
        "start > end"
    );
    assert_eq!(
        putpages(&file, 1, 0, FLUSH),
        Err(Error::Invalid),
        "unaligned"
    );
    assert_eq!(
        putpages(&file, 0, 0, PutFlags::SYNCIO),
        Err(Error::Invalid),
        "no action"
    );
    assert_eq!(putpages(&file, P, P, FLUSH), Ok(()), "empty range");
    let data = dirty_all(&file, 8 * PAGE_SIZE, 11);
    // end == 0: to the end of the object (a cluster may reach behind the start).
    putpages(&file, 3 * P, 0, FLUSH).unwrap();
    for i in 3..8u64 {
        let (_, status, _) = page(&file, i * P).unwrap();
        assert_eq!(status, DirtyStatus::Clean, "page {i}");
    }
    putpages(&file, 0, 0, FLUSH | PutFlags::FREE).unwrap();
    assert!(resident(&file).is_empty());
    assert_eq!(&file.disk_contents()[..data.len()], &data[..]);
}

#[test]
fn r15_putpages_free_without_cleanit_discards_and_cleanit_free_writes() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 12));
    let before = file.disk_contents();
    dirty_all(&file, 4 * PAGE_SIZE, 13);
    putpages(&file, 0, 2 * P, PutFlags::FREE).unwrap();
    assert_eq!(resident(&file), [2 * P, 3 * P]);
    assert_eq!(
        &file.disk_contents()[..2 * PAGE_SIZE],
        &before[..2 * PAGE_SIZE]
    );
    let after = dirty_all(&file, 4 * PAGE_SIZE, 14);
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
    // Asynchronous: wait for the writes with a synchronous flush.
    putpages(&file, 0, 0, FLUSH).unwrap();
    assert!(resident(&file).is_empty());
    assert_eq!(&file.disk_contents()[..4 * PAGE_SIZE], &after[..]);
}

/// A device failure in the middle of a multi-request cluster: the call fails, nothing
/// stays busy, every page stays dirty and resident (nothing lost), the next flush
/// succeeds and writes the data.
#[test]
fn r15_putpages_device_fails_mid_cluster_loses_nothing() {
    for flags in [
        FLUSH,
        FLUSH | PutFlags::FREE,
        PutFlags::CLEANIT | PutFlags::FREE,
    ] {
        let (disk, file) = file_with(
            PAGE_SHIFT,
            Layout::Fragmented { run: 1 },
            &pattern(8 * PAGE_SIZE, 15),
        );
        let data = dirty_all(&file, 8 * PAGE_SIZE, 16);
        disk.fail_nth(3, Error::Io);
        let r = putpages(&file, 0, 0, flags);
        if flags.contains(PutFlags::SYNCIO) {
            assert_eq!(r, Err(Error::Io), "{flags:?}");
        }
        putpages(&file, 0, 0, PutFlags::SYNCIO | PutFlags::CLEANIT).ok();
        assert!(!any_busy(&file));
        putpages(&file, 0, 0, FLUSH).unwrap();
        assert_eq!(&file.disk_contents()[..data.len()], &data[..], "{flags:?}");
    }
}

// ---- directio --------------------------------------------------------------------------

#[test]
fn r15_directio_short_chunks_fall_back_untouched() {
    let data = pattern(16 * PAGE_SIZE, 17);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let mut buf = Buffer::aligned(300);
    let mut uio = Uio::new(
        0,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::new(buf.get_mut())],
    )
    .unwrap();
    let progress = directio(&file, &mut uio, DirectFlags::empty()).unwrap();
    assert_eq!(
        (progress.transferred, progress.fallback),
        (0, Some(Fallback::ShortSegment))
    );
    assert_eq!(uio.resid(), 300);
    // One sector and a bit: the sector moves, the bit falls back.
    let mut buf = Buffer::aligned(512 + 100);
    let mut uio = Uio::new(
        0,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::new(buf.get_mut())],
    )
    .unwrap();
    let progress = directio(&file, &mut uio, DirectFlags::empty()).unwrap();
    assert_eq!(progress.transferred, 512);
    assert_eq!(uio.offset(), 512);
    drop(uio);
    assert_eq!(&buf.get()[..512], &data[..512]);
    let _ = disk;
}

// ---- page geometry: mid-page EOF with blocks smaller and larger than a page ----------

fn roundtrip(bshift: u32, size: usize) {
    let data = pattern(size, bshift as u8);
    let (_disk, file) = file_with(bshift, Layout::Fragmented { run: 2 }, &data);
    let mut back = vec![0u8; size + PAGE_SIZE];
    assert_eq!(
        read(&file, 0, &mut back).unwrap(),
        size,
        "bshift {bshift} size {size}"
    );
    assert_eq!(&back[..size], &data[..]);
    // The last page, read whole through a fault: zero past EOF.
    let last = (size as u64 - 1) & !(P - 1);
    let pages = gp(&file, last, 1, 0, Access::Read, SYNC)
        .unwrap()
        .into_busy()
        .unwrap();
    let within = size - last as usize;
    assert!(
        pages.bytes(0)[within..].iter().all(|&b| b == 0),
        "tail past EOF"
    );
    drop(pages);
    // Extend by a write crossing the page end, flush, evict, read back from the disk.
    let tail = pattern(PAGE_SIZE + 333, 99);
    assert_eq!(write(&file, size as u64 - 10, &tail), Ok(tail.len()));
    putpages(&file, 0, 0, FLUSH | PutFlags::FREE).unwrap();
    assert!(resident(&file).is_empty());
    let new_size = size - 10 + tail.len();
    let mut expect = data.clone();
    expect.truncate(size - 10);
    expect.extend_from_slice(&tail);
    let mut back = vec![0u8; new_size + 10];
    assert_eq!(read(&file, 0, &mut back).unwrap(), new_size);
    assert_eq!(&back[..new_size], &expect[..], "bshift {bshift}");
    // Shrink to mid-page, grow again: the bytes between are zero.
    setsize(&file, size as u64 - 100).unwrap();
    // The filesystem's part of the truncation.
    file.free_blocks_past(size as u64 - 100);
    setsize(&file, new_size as u64).unwrap();
    putpages(&file, 0, 0, FLUSH | PutFlags::FREE).unwrap();
    let mut back = vec![0u8; new_size];
    assert_eq!(read(&file, 0, &mut back).unwrap(), new_size);
    assert_eq!(&back[..size - 100], &data[..size - 100]);
    assert!(
        back[size - 100..].iter().all(|&b| b == 0),
        "bshift {bshift}: regrown bytes zero"
    );
    assert!(!any_busy(&file));
}

#[test]
fn r15_geometry_512b_blocks_mid_page_eof() {
    roundtrip(9, 2 * PAGE_SIZE + 1000);
    roundtrip(9, 5 * PAGE_SIZE + 513);
}

#[test]
fn r15_geometry_1k_blocks_mid_page_eof() {
    roundtrip(10, 2 * PAGE_SIZE + 1000);
    roundtrip(10, 3 * PAGE_SIZE + 1);
}

#[test]
fn r15_geometry_64k_blocks_mid_page_eof() {
    roundtrip(16, 2 * PAGE_SIZE + 1000);
    roundtrip(16, 70_000);
}

/// A sparse file with sub-page blocks: a read fault zero-fills the holes and leaves
/// their pages read-only; a write fault allocates them; the data survives a flush.
#[test]
fn r15_sparse_sub_page_blocks_read_then_write_fault() {
    for bshift in [9u32, 10] {
        let size = 4 * PAGE_SIZE + 700;
        let data = pattern(size, 20);
        let per_page = PAGE_SIZE as u64 >> bshift;
        let holes: Vec<u64> = vec![1, per_page + 2, 3 * per_page];
        let (_disk, file) = sparse_file(bshift, &data, &holes);
        let mut expect = data.clone();
        for &h in &holes {
            let s = (h << bshift) as usize;
            expect[s..(s + (1 << bshift)).min(size)].fill(0);
        }
        let mut back = vec![0u8; size];
        assert_eq!(read(&file, 0, &mut back).unwrap(), size);
        assert_eq!(back, expect, "bshift {bshift}");
        let (flags, ..) = page(&file, 0).unwrap();
        assert!(
            flags.contains(PageFlags::RDONLY),
            "a page over a hole is read-only"
        );
        let mut w = gp(&file, 0, 2, 0, Access::Write, SYNC)
            .unwrap()
            .into_writable()
            .unwrap();
        w.bytes_mut(0)[(1 << bshift) + 5] = 0x77;
        w.mark_all_written();
        drop(w);
        expect[(1 << bshift) + 5] = 0x77;
        assert!(!file.is_hole(1), "the write fault allocated the hole");
        putpages(&file, 0, 0, FLUSH | PutFlags::FREE).unwrap();
        let mut back = vec![0u8; size];
        assert_eq!(read(&file, 0, &mut back).unwrap(), size);
        assert_eq!(back, expect, "bshift {bshift} after flush");
    }
}

/// Read-ahead and widening with blocks larger than a page, ending mid-block.
#[test]
fn r15_read_ahead_widens_and_settles() {
    let size = 3 * (64 << 10) / 2 + 100;
    let data = pattern(size, 21);
    let (disk, file) = file_with(16, Layout::Fragmented { run: 1 }, &data);
    let offset = (70_000u64) & !(P - 1);
    assert!(matches!(
        gp(&file, offset, 1, 0, Access::Read, GetFlags::empty()),
        Ok(Fetched::Started)
    ));
    disk.quiesce();
    assert!(!any_busy(&file));
    let pages = gp(&file, offset, 1, 0, Access::Read, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    let end = (offset as usize + PAGE_SIZE).min(size);
    let bytes = pages.bytes(0).unwrap();
    assert_eq!(&bytes[..end - offset as usize], &data[offset as usize..end]);
    assert!(bytes[end - offset as usize..].iter().all(|&b| b == 0));
}

/// A failing bmap part-way through a synchronous read fault: error, nothing busy, no
/// page left resident that the call made.
#[test]
fn r15_bmap_failure_mid_read_leaves_nothing() {
    let data = pattern(8 * PAGE_SIZE, 22);
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Fragmented { run: 1 }, &data);
    file.fail_bmap(Some(3));
    assert!(gp(&file, 0, 6, 0, Access::Read, SYNC).is_err());
    assert!(!any_busy(&file));
    assert!(resident(&file).is_empty(), "{:?}", resident(&file));
    file.fail_bmap(None);
    drop(gp(&file, 0, 6, 0, Access::Read, SYNC).unwrap());
}

/// Block devices address their own sectors.
#[test]
fn r15_block_device_fault() {
    let data = pattern(4 * PAGE_SIZE, 23);
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    file.set_kind(VnodeKind::BlockDevice);
    let _ = gp(&file, 0, 1, 0, Access::Read, SYNC).map(drop);
    assert!(!any_busy(&file));
}

// ---- scripts/layers.sh -------------------------------------------------------------------

/// A copy of `src/` and `scripts/layers.sh` in a fresh directory, with `edit` applied to
/// the named file; returns whether the layer check passes it.
fn layers_pass_with(tag: &str, path: &str, edit: impl FnOnce(String) -> String) -> (bool, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = std::env::temp_dir().join(format!("genpager-layers-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("scripts")).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(root.join("src"))
        .arg(tmp.join("src"))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::copy(
        root.join("scripts/layers.sh"),
        tmp.join("scripts/layers.sh"),
    )
    .unwrap();
    let target = tmp.join("src").join(path);
    let text = std::fs::read_to_string(&target).unwrap();
    let edited = edit(text.clone());
    assert_ne!(text, edited, "the edit changed nothing");
    std::fs::write(&target, edited).unwrap();
    let out = std::process::Command::new("bash")
        .arg(tmp.join("scripts/layers.sh"))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Inserts `line` after the first line starting with `after`.
fn insert_after(text: String, after: &str, line: &str) -> String {
    let at = text.find(&format!("\n{after}")).expect("anchor") + 1;
    let eol = at + text[at..].find('\n').unwrap() + 1;
    format!("{}{line}\n{}", &text[..eol], &text[eol..])
}

#[test]
fn r15_layers_control_a_plain_upward_import_is_caught() {
    let (pass, out) = layers_pass_with("control", "fault.rs", |t| {
        insert_after(
            t,
            "use crate::vnode::",
            "use crate::getpages::getpages as _up;",
        )
    });
    assert!(!pass, "{out}");
}

/// In a top-level module `super` is the crate root: `use super::getpages::…` is the
/// same upward edge as `use crate::getpages::…`.
#[test]
fn r15_layers_catches_an_upward_import_through_super() {
    let (pass, out) = layers_pass_with("super", "fault.rs", |t| {
        insert_after(
            t,
            "use crate::vnode::",
            "use super::getpages::getpages as _up;",
        )
    });
    assert!(
        !pass,
        "fault (6) -> getpages (7) through `super::` slipped past: {out}"
    );
}

/// From a submodule, `super::super::` is the crate root too.
#[test]
fn r15_layers_catches_an_upward_import_through_super_super() {
    let (pass, out) = layers_pass_with("supersuper", "putpages/scan.rs", |t| {
        insert_after(
            t,
            "use crate::vnode::",
            "use super::super::write::setsize as _up;",
        )
    });
    assert!(
        !pass,
        "putpages (7) -> write (8) through `super::super::` slipped past: {out}"
    );
}

/// The crate root re-exports items of every layer: `crate::Fetched` is `fault`'s.
#[test]
fn r15_layers_catches_an_upward_import_through_a_root_reexport() {
    let (pass, out) = layers_pass_with("reexport", "busy.rs", |t| {
        insert_after(
            t,
            "use crate::vnode::",
            "#[allow(unused_imports)]\nuse crate::Fetched as _Up;",
        )
    });
    assert!(
        !pass,
        "busy (5) -> fault (6) through `crate::Fetched` slipped past: {out}"
    );
}

/// The scan stops at the first `#[cfg(test)]` line, wherever it is: a test-only item
/// near the top hides every import below it.
#[test]
fn r15_layers_catches_an_upward_import_below_an_early_cfg_test_item() {
    let (pass, out) = layers_pass_with("cfgtest", "fault.rs", |t| {
        let t = insert_after(
            t,
            "use core::ops::Range;",
            "#[cfg(test)]\nconst _T: u8 = 0;",
        );
        insert_after(
            t,
            "use crate::vnode::",
            "use crate::getpages::getpages as _up;",
        )
    });
    assert!(
        !pass,
        "an import after an early #[cfg(test)] item slipped past: {out}"
    );
}

/// `use crate as root;` then `root::getpages::…`.
#[test]
fn r15_layers_catches_an_upward_import_through_a_crate_alias() {
    let (pass, out) = layers_pass_with("alias", "fault.rs", |t| {
        insert_after(
            t,
            "use crate::vnode::",
            "use crate as root;\nuse root::getpages::getpages as _up;",
        )
    });
    assert!(
        !pass,
        "an upward import through `use crate as root` slipped past: {out}"
    );
}

// ---- more fault paths that must leave nothing behind ---------------------------------

/// An overwrite fault over a page known to back a hole is Invalid, and releases what it
/// collected.
#[test]
fn r15_overwrite_fault_over_a_hole_is_invalid_and_releases() {
    let data = pattern(4 * PAGE_SIZE, 30);
    let (_disk, file) = sparse_file(PAGE_SHIFT, &data, &[1]);
    drop(gp(&file, P, 1, 0, Access::Read, SYNC).unwrap());
    let (flags, ..) = page(&file, P).unwrap();
    assert!(flags.contains(PageFlags::RDONLY));
    assert_eq!(
        err_of(gp(
            &file,
            0,
            3,
            0,
            Access::Write,
            SYNC | GetFlags::OVERWRITE
        )),
        Some(Error::Invalid)
    );
    assert!(!any_busy(&file));
    assert_eq!(resident(&file), [P], "pages the call made are gone");
}

/// Read-ahead meeting a busy page: Busy, nothing left busy or made.
#[test]
fn r15_read_ahead_over_a_busy_page_is_busy_and_leaves_nothing() {
    let data = pattern(8 * PAGE_SIZE, 31);
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let held = gp(&file, 2 * P, 1, 0, Access::Read, SYNC)
        .unwrap()
        .into_busy()
        .unwrap();
    assert_eq!(
        err_of(gp(&file, 0, 4, 0, Access::Read, GetFlags::empty())),
        Some(Error::Busy)
    );
    assert_eq!(resident(&file), [2 * P]);
    drop(held);
    assert!(!any_busy(&file));
}

/// A device error in a synchronous read fault: the error, no page left busy or resident.
#[test]
fn r15_device_error_mid_read_fault_leaves_nothing() {
    let data = pattern(8 * PAGE_SIZE, 32);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Fragmented { run: 1 }, &data);
    disk.fail_nth(2, Error::Io);
    assert_eq!(
        err_of(gp(
            &file,
            0,
            6,
            0,
            Access::Read,
            SYNC | GetFlags::NOREADAHEAD
        )),
        Some(Error::Io)
    );
    assert!(!any_busy(&file));
    assert!(resident(&file).is_empty(), "{:?}", resident(&file));
    // And the same for a write fault over a hole whose allocation fails.
    let (_disk, file) = sparse_file(PAGE_SHIFT, &data, &[2, 3]);
    file.set_alloc_limit(Some(0));
    assert!(gp(&file, 2 * P, 2, 0, Access::Write, SYNC).is_err());
    assert!(!any_busy(&file));
    assert!(resident(&file).is_empty(), "{:?}", resident(&file));
}

/// BUSYFAIL: a page busy being freed stops the flush with Deadlock and its offset
/// (asynchronous flush: nothing to wait for).
#[test]
fn r15_putpages_busyfail_reports_the_page() {
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 33));
    dirty_all(&file, 4 * PAGE_SIZE, 34);
    disk.hold();
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
    let r = genpager::putpages_busy(&file, 0, 0, PutFlags::FREE | PutFlags::BUSYFAIL);
    assert_eq!(
        r.map_err(|e| (e.error, e.busy_page)),
        Err((Error::Deadlock, Some(0)))
    );
    disk.release();
    disk.quiesce();
    putpages(&file, 0, 0, FLUSH).unwrap();
    assert!(resident(&file).is_empty());
}

/// PutFlags::BUSYFAIL: the flush stops at a page busy being paged out with
/// `Deadlock` and reports it, but with SYNCIO it still waits for the writes already in
/// flight (that page's too) before it returns, as the reference does.
#[test]
fn r15_putpages_busyfail_syncio_reports_the_page_once_writes_in_flight_end() {
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 35));
    dirty_all(&file, 4 * PAGE_SIZE, 36);
    disk.hold();
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE).unwrap();
    let (tx, rx) = mpsc::channel();
    let flusher = {
        let file = file.clone();
        thread::spawn(move || {
            let r = genpager::putpages_busy(&file, 0, 0, FLUSH | PutFlags::BUSYFAIL);
            let _ = tx.send(r.map_err(|e| (e.error, e.busy_page)));
        })
    };
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "returned while a write was still in flight"
    );
    disk.release();
    disk.quiesce();
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the flush returns");
    flusher.join().unwrap();
    assert_eq!(result, Err((Error::Deadlock, Some(0))));
}
