//! Review 18: adversarial probes of memory domains, write-behind, dirty thresholds,
//! the page daemon's Reclaimer, errseq fsync and the failed-object state, and page
//! counts. `finding_*` tests demonstrate a broken promise; `holds_*` ones a kept one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use genpager::memory::{ChunkPool, FrameSource, Memory};
use genpager::reclaim::Reclaimer;
use genpager::testing::{Hook, Layout, MemDisk, MemFile, MemFs};
use genpager::{
    Error, PAGE_SIZE, PageCache, PageCounts, PutFlags, Vnode, flush_expired, fsync, putpages, read,
    setsize, write,
};

const P: u64 = PAGE_SIZE as u64;

/// An empty file in `memory` on a fresh disk of `sectors`.
fn empty_file(memory: &'static Memory, bshift: u32, disk: MemDisk) -> Arc<MemFile> {
    let fs = fs_in(memory, bshift, disk);
    let file = fs.create(&[]).expect("file");
    file.set_max_transfer(TEST_MAX_TRANSFER);
    file
}

fn counts_of(file: &MemFile) -> PageCounts {
    file.object().read().cache().page_counts()
}

fn walk_of(file: &MemFile) -> PageCounts {
    PageCounts::by_walk(file.object().read().cache())
}

fn sync_all(file: &Arc<MemFile>) -> genpager::Result {
    putpages(file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO)
}

// ---------------------------------------------------------------------------------
// flush_expired

/// "No page stays dirty longer than `max_age` plus a period": a due flush whose start
/// fails (a transaction refused once) forgets the note, so the next call only notes
/// `now` again and the page waits another whole `max_age`.
#[test]
fn finding_flush_expired_forgets_the_age_when_starting_writeback_fails() {
    let memory = domain(1024);
    memory.set_write_behind(false);
    let file = empty_file(memory, PAGE_SHIFT, MemDisk::new(8192));
    write(&file, 0, &pattern(PAGE_SIZE, 1)).unwrap();
    // period 10, max_age 30
    assert_eq!(flush_expired(&file, 0, 30), Ok(false)); // notes 0
    assert_eq!(flush_expired(&file, 10, 30), Ok(false));
    assert_eq!(flush_expired(&file, 20, 30), Ok(false));
    file.fail_hook(Hook::TransBegin, 1, Error::Busy);
    let due = flush_expired(&file, 30, 30);
    assert!(due.is_err(), "{due:?}");
    file.clear_hook_failures();
    // The page has been dirty since 0; at 40 it is past max_age + one period.
    let next = flush_expired(&file, 40, 30);
    assert_eq!(
        next,
        Ok(true),
        "a page dirty since t=0 is not written at t=40 with max_age 30, period 10"
    );
}

/// A due flush that starts but whose pages are busy (held device: the pages are in
/// writeback of an earlier flush, redirtied since) must not reset the clock either.
#[test]
fn holds_flush_expired_writes_after_max_age() {
    let memory = domain(1024);
    memory.set_write_behind(false);
    let disk = MemDisk::new(8192);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    write(&file, 0, &pattern(4 * PAGE_SIZE, 1)).unwrap();
    assert_eq!(flush_expired(&file, 5, 0), Ok(false));
    assert_eq!(flush_expired(&file, 5, 0), Ok(true));
    disk.quiesce();
    assert_eq!(counts_of(&file).dirty, 0);
    assert_eq!(flush_expired(&file, u64::MAX, u64::MAX), Ok(false));
}

// ---------------------------------------------------------------------------------
// bad inputs

#[test]
fn holds_set_dirty_percent_rejects_bad_thresholds() {
    let memory = domain(100);
    assert_eq!(memory.set_dirty_percent(50, 10), Err(Error::Invalid));
    assert_eq!(memory.set_dirty_percent(0, 101), Err(Error::Invalid));
    assert_eq!(
        memory.set_dirty_percent(usize::MAX, usize::MAX),
        Err(Error::Invalid)
    );
    assert_eq!(memory.set_dirty_percent(100, 100), Ok(()));
    assert_eq!(memory.dirty_thresholds(), (100, 100));
    memory.set_budget(usize::MAX);
    assert_eq!(memory.dirty_thresholds(), (usize::MAX, usize::MAX));
}

/// Budgets of 0 and 1 give an error or work, never a panic or a hang.
#[test]
fn holds_budgets_of_zero_and_one_never_panic() {
    for budget in [0usize, 1, 2] {
        within(&format!("budget {budget}"), move || {
            let memory = domain(budget);
            let fs = fs_in(memory, PAGE_SHIFT, MemDisk::new(8192));
            let data = pattern(8 * PAGE_SIZE, 3);
            let file = fs.create(&data).unwrap();
            file.set_max_transfer(TEST_MAX_TRANSFER);
            let mut buf = vec![0u8; 8 * PAGE_SIZE];
            let r = read(&file, 0, &mut buf);
            match r {
                Ok(n) => {
                    assert_eq!(n, buf.len());
                    assert_eq!(buf, data);
                }
                Err(e) => assert_eq!(e, Error::NoMemory, "budget {budget}"),
            }
            let w = write(&file, 0, &pattern(8 * PAGE_SIZE, 4));
            if budget == 0 {
                assert!(w.is_err());
            }
            let _ = sync_all(&file);
            assert!(memory.counts().resident <= budget as u64);
        });
    }
}

/// A write near u64::MAX in a domain: an error, never a panic.
#[test]
fn holds_writes_near_u64_max_in_a_domain_error() {
    let memory = domain(64);
    let file = empty_file(memory, PAGE_SHIFT, MemDisk::new(8192));
    for offset in [u64::MAX, u64::MAX - 1, u64::MAX - P, u64::MAX - 2 * P + 1] {
        let r = write(&file, offset, &[1u8; 16]);
        assert!(r.is_err(), "{offset:#x}: {r:?}");
    }
    assert_eq!(memory.counts(), PageCounts::default());
}

// ---------------------------------------------------------------------------------
// budget and other files

/// "A freed frame goes back to the source at once, so memory one file frees serves
/// the next": but a read of file B fails with NoMemory while the domain is full of
/// file A's clean, idle, inactive pages that could be freed without I/O.
#[test]
#[ignore = "DOCUMENTED: a cache whose budget other files spent frees only its own pages; \
            the kernel's page daemon (Reclaimer::reclaim) takes other files' (README, Memory)"]
fn finding_a_read_fails_while_another_files_clean_pages_fill_the_budget() {
    let memory = domain(64);
    let fs = fs_in(memory, PAGE_SHIFT, MemDisk::new(65536));
    let a_data = pattern(64 * PAGE_SIZE, 1);
    let b_data = pattern(8 * PAGE_SIZE, 2);
    let a = fs.create(&a_data).unwrap();
    let b = fs.create(&b_data).unwrap();
    a.set_max_transfer(TEST_MAX_TRANSFER);
    b.set_max_transfer(TEST_MAX_TRANSFER);
    let mut buf = vec![0u8; 64 * PAGE_SIZE];
    // Read A in pieces so it reaches the budget.
    for i in 0..64 {
        let _ = read(&a, i * P, &mut buf[..PAGE_SIZE]);
    }
    assert_eq!(memory.counts().resident, 64, "A fills the budget");
    assert_eq!(memory.counts().dirty, 0);
    let mut small = vec![0u8; PAGE_SIZE];
    assert_eq!(
        read(&b, 0, &mut small),
        Ok(PAGE_SIZE),
        "B's read fails though A's 64 pages are clean and idle"
    );
    assert_eq!(small, b_data[..PAGE_SIZE]);
}

/// Writer of another file on a held device must not stall this writer.
#[test]
fn holds_a_writer_never_waits_for_another_files_held_writeback() {
    let memory = domain(256);
    let held = MemDisk::threaded(65536, false);
    let a = empty_file(memory, PAGE_SHIFT, held.clone());
    held.hold();
    // A: over the hard threshold, all in writeback on a held device.
    memory.set_dirty_percent(100, 100).unwrap();
    memory.set_write_behind(false);
    write(&a, 0, &pattern(80 * PAGE_SIZE, 1)).unwrap();
    let _ = putpages(&a, 0, 0, PutFlags::CLEANIT);
    memory.set_dirty_percent(10, 20).unwrap();
    memory.set_write_behind(true);
    assert!(memory.over_hard(), "{:?}", memory.counts());
    let b = empty_file(memory, PAGE_SHIFT, MemDisk::new(65536));
    let b2 = b.clone();
    let r = within("B's write while A's writeback is held", move || {
        write(&b2, 0, &pattern(32 * PAGE_SIZE, 2))
    });
    held.release();
    held.quiesce();
    assert_eq!(r, Ok(32 * PAGE_SIZE));
}

// ---------------------------------------------------------------------------------
// ChunkPool::free_frame must not allocate or free heap memory

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
std::thread_local! {
    static ARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if ARMED.with(|a| a.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if ARMED.with(|a| a.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn holds_chunk_pool_free_frame_touches_no_heap() {
    let pool = ChunkPool::new();
    let mut frames: Vec<_> = (0..1000).map(|_| pool.alloc_frame().unwrap()).collect();
    let before = ALLOCS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let mut n = 0;
    while let Some(frame) = frames.pop() {
        pool.free_frame(frame);
        n += 1;
    }
    ARMED.with(|a| a.set(false));
    drop(frames);
    assert_eq!(n, 1000);
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        before,
        "free_frame touched the heap"
    );
    // Freed frames stay pooled until trim returns the idle chunks, whole.
    let held = pool.heap_bytes();
    let f = pool.alloc_frame().unwrap();
    assert_eq!(pool.heap_bytes(), held, "lending a frame trims nothing");
    pool.trim();
    assert!(pool.heap_bytes() <= 256 * 1024, "{}", pool.heap_bytes());
    pool.free_frame(f);
    pool.trim();
    assert_eq!(pool.heap_bytes(), 0);
}

// ---------------------------------------------------------------------------------
// page counts

fn check_counts(memory: &Memory, files: &[&Arc<MemFile>], what: &str) {
    let mut sum = PageCounts::default();
    for file in files {
        let cache = counts_of(file);
        let walk = walk_of(file);
        let stats = file.object().stats().pages;
        assert_eq!(cache, walk, "{what}: page_counts vs walk");
        assert_eq!(stats, walk, "{what}: stats vs walk");
        sum.add(&walk);
    }
    assert_eq!(
        memory.counts(),
        sum,
        "{what}: Memory::counts vs sum of files"
    );
}

/// Page counts stay exact through write, failed write, truncate, direct I/O, reclaim
/// and drop, at 512 B, 1 KiB, 4 KiB and 64 KiB blocks.
#[test]
fn holds_page_counts_exact_through_every_operation() {
    use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
    use genpager::testing::Direction;
    for bshift in [9u32, 10, PAGE_SHIFT, 16] {
        let memory = domain(4096);
        memory.set_write_behind(false);
        let disk = MemDisk::new(1 << 16);
        let a = empty_file(memory, bshift, disk.clone());
        let b = empty_file(memory, bshift, disk.clone());
        let files = [&a, &b];
        let what = |s: &str| format!("bshift {bshift}: {s}");
        write(&a, 0, &pattern(40 * PAGE_SIZE + 100, 1)).unwrap();
        write(&b, 3, &pattern(5 * PAGE_SIZE, 2)).unwrap();
        check_counts(memory, &files, &what("after writes"));
        // A failed write: pages back to dirty.
        disk.fail_nth(0, Error::Io);
        let _ = sync_all(&a);
        disk.clear_faults();
        check_counts(memory, &files, &what("after a failed flush"));
        // A partial flush.
        putpages(&a, 0, 8 * P, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
        check_counts(memory, &files, &what("after a partial flush"));
        // Truncate mid-page and extend again.
        setsize(&a, 20 * P + 77).unwrap();
        check_counts(memory, &files, &what("after truncate"));
        setsize(&a, 30 * P).unwrap();
        check_counts(memory, &files, &what("after extend"));
        // Direct write over cached dirty pages, direct read.
        let mut buf = Buffer::with(&pattern(8 * PAGE_SIZE, 9));
        let mut uio = Uio::new(
            4 * P,
            Direction::Write,
            AddressSpace::User,
            vec![IoVec::new(buf.get_mut())],
        )
        .unwrap();
        directio(&a, &mut uio, DirectFlags::empty()).unwrap();
        check_counts(memory, &files, &what("after direct write"));
        let mut rbuf = Buffer::aligned(8 * PAGE_SIZE);
        let mut uio = Uio::new(
            0,
            Direction::Read,
            AddressSpace::User,
            vec![IoVec::new(rbuf.get_mut())],
        )
        .unwrap();
        directio(&b, &mut uio, DirectFlags::empty()).unwrap();
        check_counts(memory, &files, &what("after direct read"));
        // Reclaim.
        let daemon = Reclaimer::new();
        daemon.register(&a).unwrap();
        daemon.register(&b).unwrap();
        daemon.reclaim(1000);
        disk.quiesce();
        check_counts(memory, &files, &what("after reclaim"));
        let mut buf = vec![0u8; 30 * PAGE_SIZE];
        read(&a, 0, &mut buf).unwrap();
        check_counts(memory, &files, &what("after read"));
        write(&a, 0, &pattern(2 * PAGE_SIZE, 3)).unwrap();
        daemon.unregister(&a);
        daemon.unregister(&b);
        // Drop of a file with dirty pages: its cache is dropped.
        let _ = files;
        drop(a);
        check_counts(memory, &[&b], &what("after dropping A"));
        drop(b);
        assert_eq!(
            memory.counts(),
            PageCounts::default(),
            "bshift {bshift}: all dropped"
        );
    }
}

// ---------------------------------------------------------------------------------
// errseq and fsync

/// Each cursor sees an asynchronous write error exactly once; a cursor made after it
/// never; a synchronous putpages without a cursor moves no cursor.
#[test]
fn holds_fsync_reports_each_error_once_per_cursor() {
    let memory = domain(1024);
    memory.set_write_behind(false);
    let disk = MemDisk::new(8192);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let data = pattern(8 * PAGE_SIZE, 5);
    write(&file, 0, &data).unwrap();
    let mut c1 = file.object().error_cursor();
    let mut c2 = file.object().error_cursor();
    disk.fail_nth(0, Error::Io);
    // An asynchronous flush fails (the syncer's).
    let _ = putpages(&file, 0, 0, PutFlags::CLEANIT);
    disk.quiesce();
    disk.clear_faults();
    let mut c3 = file.object().error_cursor();
    // The object's own synchronous flush reports it (once) and moves no cursor.
    let own = sync_all(&file);
    assert_eq!(own, Err(Error::Io));
    assert_eq!(sync_all(&file), Ok(()));
    // A bad range leaves the cursor where it was.
    let bad = fsync(&file, &mut c1, 10 * P, 2 * P);
    assert!(bad.is_err());
    assert_eq!(fsync(&file, &mut c1, 0, 0), Err(Error::Io));
    assert_eq!(fsync(&file, &mut c1, 0, 0), Ok(()));
    assert_eq!(file.object().check_errors(&mut c2), Err(Error::Io));
    assert_eq!(fsync(&file, &mut c2, 0, 0), Ok(()));
    assert_eq!(fsync(&file, &mut c3, 0, 0), Ok(()));
    assert_eq!(file.disk_contents(), data);
}

/// An error of write-behind (asynchronous, started by `write` itself) is reported by
/// the next fsync of a cursor opened before it.
#[test]
fn holds_fsync_reports_a_write_behind_error() {
    let memory = domain(4096);
    let disk = MemDisk::threaded(65536, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let mut cursor = file.object().error_cursor();
    disk.fail_nth(0, Error::Io);
    let data = pattern(3 * TEST_MAX_TRANSFER, 6);
    write(&file, 0, &data).unwrap();
    disk.quiesce();
    disk.clear_faults();
    assert!(!disk.log().is_empty());
    assert_eq!(fsync(&file, &mut cursor, 0, 0), Err(Error::Io));
    assert_eq!(fsync(&file, &mut cursor, 0, 0), Ok(()));
    assert_eq!(file.disk_contents(), data);
}

// ---------------------------------------------------------------------------------
// the failed object

/// One flush of many failing clusters counts once towards the failure limit; a
/// success starts the count again.
#[test]
fn holds_failure_limit_counts_flushes_not_clusters() {
    use std::num::NonZeroU32;
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::new(65536);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    file.object().set_write_failure_limit(NonZeroU32::new(2));
    let data = pattern(8 * TEST_MAX_TRANSFER, 7);
    write(&file, 0, &data).unwrap();
    let table_first = sector_of(&file, 0).unwrap();
    disk.fail_blocks(table_first..table_first + (1 << 20), Error::Io);
    assert_eq!(sync_all(&file), Err(Error::Io));
    assert!(
        !file.object().is_failed(),
        "one flush of 8 failing clusters counted more than once"
    );
    disk.clear_faults();
    assert_eq!(sync_all(&file), Ok(()));
    write(&file, 0, &pattern(PAGE_SIZE, 8)).unwrap();
    disk.fail_blocks(table_first..table_first + (1 << 20), Error::Io);
    assert_eq!(sync_all(&file), Err(Error::Io));
    assert!(
        !file.object().is_failed(),
        "a success did not reset the count"
    );
    assert_eq!(sync_all(&file), Err(Error::Io));
    assert!(file.object().is_failed());
    disk.clear_faults();
}

/// The failed object keeps its dirty pages through reclaim and write pressure; a
/// writer over the hard threshold on a failed object does not hang; after
/// `clear_failed` everything reaches the disk.
#[test]
fn holds_failed_object_keeps_dirty_data_through_reclaim_and_pressure() {
    use std::num::NonZeroU32;
    let memory = domain(512);
    let disk = MemDisk::threaded(65536, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    file.object().set_write_failure_limit(NonZeroU32::new(1));
    disk.fail_blocks(0..u64::MAX, Error::Io);
    let data = pattern(64 * PAGE_SIZE, 9);
    let f2 = file.clone();
    let d2 = data.clone();
    within("writes to a failing file", move || {
        for i in 0..64 {
            let at = i * PAGE_SIZE;
            let _ = write(&f2, at as u64, &d2[at..at + PAGE_SIZE]);
        }
    });
    disk.quiesce();
    let _ = sync_all(&file);
    assert!(file.object().is_failed());
    // Write more while failed, above the hard threshold (20% of 512 = 102).
    let more = pattern(128 * PAGE_SIZE, 10);
    let f3 = file.clone();
    let m2 = more.clone();
    let r = within(
        "writes to a failed file over the hard threshold",
        move || write(&f3, 64 * P, &m2),
    );
    assert_eq!(r, Ok(128 * PAGE_SIZE));
    let daemon = Reclaimer::new();
    daemon.register(&file).unwrap();
    for _ in 0..5 {
        daemon.reclaim(1000);
    }
    disk.quiesce();
    assert_eq!(counts_of(&file).dirty, 192, "{:?}", counts_of(&file));
    check_counts(memory, &[&file], "failed object");
    disk.clear_faults();
    file.object().clear_failed();
    let mut cursor = file.object().error_cursor();
    assert_eq!(fsync(&file, &mut cursor, 0, 0), Ok(()));
    let mut all = data.clone();
    all.extend_from_slice(&more);
    assert_eq!(file.disk_contents(), all);
    daemon.unregister(&file);
}

/// The failed state ends when a truncation discards every dirty page.
#[test]
fn holds_failed_state_ends_when_truncation_discards_dirty_pages() {
    use std::num::NonZeroU32;
    let memory = domain(512);
    memory.set_write_behind(false);
    let disk = MemDisk::new(65536);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    file.object().set_write_failure_limit(NonZeroU32::new(1));
    write(&file, 0, &pattern(8 * PAGE_SIZE, 1)).unwrap();
    disk.fail_blocks(0..u64::MAX, Error::Io);
    assert_eq!(sync_all(&file), Err(Error::Io));
    assert!(file.object().is_failed());
    // Truncation keeping some dirty pages: still failed.
    setsize(&file, 4 * P).unwrap();
    assert!(file.object().is_failed());
    setsize(&file, 0).unwrap();
    assert!(
        !file.object().is_failed(),
        "no dirty page left but still failed"
    );
    disk.clear_faults();
    write(&file, 0, &pattern(2 * PAGE_SIZE, 2)).unwrap();
    assert_eq!(sync_all(&file), Ok(()));
    assert_eq!(file.disk_contents(), pattern(2 * PAGE_SIZE, 2));
}

/// A budget of one frame and a one-page read: the read needs a single frame, and
/// "failing a read is worse than reading a page ahead twice".
#[test]
fn holds_one_page_reads_work_in_a_budget_of_a_few_pages() {
    for budget in [1usize, 2, 4, 8, 16] {
        let memory = domain(budget);
        let fs = fs_in(memory, PAGE_SHIFT, MemDisk::new(8192));
        let data = pattern(64 * PAGE_SIZE, 3);
        let file = fs.create(&data).unwrap();
        file.set_max_transfer(TEST_MAX_TRANSFER);
        let mut buf = vec![0u8; PAGE_SIZE];
        for i in 0..64 {
            let r = read(&file, i * P, &mut buf);
            assert_eq!(r, Ok(PAGE_SIZE), "budget {budget}, page {i}");
            assert_eq!(buf, data[i as usize * PAGE_SIZE..][..PAGE_SIZE]);
        }
    }
}

// ---------------------------------------------------------------------------------
// write-behind

/// Sequential one-page writes: write-behind writes each whole cluster once the writer
/// has left it, as one request, and nothing of the cluster the writer is in.
#[test]
fn holds_write_behind_writes_whole_clusters_behind_the_writer() {
    for bshift in [9u32, 10, PAGE_SHIFT, 16] {
        let memory = domain(1 << 16);
        let disk = MemDisk::new(1 << 16);
        let file = empty_file(memory, bshift, disk.clone());
        let cluster = TEST_MAX_TRANSFER;
        let data = pattern(2 * cluster + 3 * PAGE_SIZE, 4);
        for (i, piece) in data.chunks(PAGE_SIZE).enumerate() {
            write(&file, (i * PAGE_SIZE) as u64, piece).unwrap();
        }
        disk.quiesce();
        let log = disk.log();
        let lens: Vec<usize> = log.iter().map(|r| r.len).collect();
        assert_eq!(
            lens,
            vec![cluster, cluster],
            "bshift {bshift}: {:?}",
            blocks_and_lens(&log)
        );
        if bshift <= PAGE_SHIFT {
            assert_eq!(counts_of(&file).dirty, 3, "bshift {bshift}");
        }
    }
}

/// A writer that writes only the last page of a cluster has not "left behind a whole
/// cluster": write-behind still starts a one-page request for it at once.
#[test]
#[ignore = "DOCUMENTED: write-behind starts each cluster whose end a batch reaches, as \
            NetBSD's does on crossing a boundary, whatever the writer wrote of it before"]
fn finding_write_behind_writes_a_lone_page_at_a_cluster_end() {
    let memory = domain(1 << 16);
    let disk = MemDisk::new(1 << 16);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let cluster = TEST_MAX_TRANSFER as u64;
    // Random single-page writes, each the last page of some cluster.
    for c in [5u64, 2, 7] {
        write(&file, (c + 1) * cluster - P, &pattern(PAGE_SIZE, c as u8)).unwrap();
    }
    disk.quiesce();
    let log = disk.log();
    assert!(
        log.is_empty(),
        "write-behind wrote clusters the writer never filled: {:?}",
        blocks_and_lens(&log)
    );
}

// ---------------------------------------------------------------------------------
// dirty thresholds

/// One writer on a late, reordering device: dirty + writeback never exceed the hard
/// threshold by more than one batch (64 KiB), sampled throughout.
#[test]
fn holds_a_writer_is_held_to_the_hard_threshold() {
    for bshift in [9u32, PAGE_SHIFT, 16] {
        let budget = 512;
        let memory = domain(budget);
        memory.set_write_behind(false);
        let disk = MemDisk::threaded(1 << 18, true);
        let file = empty_file(memory, bshift, disk.clone());
        let (_, hard) = memory.dirty_thresholds();
        let batch = 64 * 1024 / PAGE_SIZE;
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (stop, max) = (stop.clone(), max.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    max.fetch_max(memory.unwritten(), Ordering::Relaxed);
                    std::thread::yield_now();
                }
            })
        };
        let data = pattern(4 * budget * PAGE_SIZE, 7);
        let f = file.clone();
        let d = data.clone();
        let r = within_for("writer", Duration::from_secs(20), move || {
            for (i, piece) in d.chunks(3 * PAGE_SIZE + 100).enumerate() {
                write(&f, (i * (3 * PAGE_SIZE + 100)) as u64, piece)?;
            }
            Ok::<(), Error>(())
        });
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        assert_eq!(r, Ok(()), "bshift {bshift}");
        let seen = max.load(Ordering::Relaxed);
        assert!(
            seen <= hard + batch + 1,
            "bshift {bshift}: unwritten reached {seen}, hard {hard} + batch {batch}"
        );
        assert_eq!(sync_all(&file), Ok(()));
        disk.quiesce();
        assert!(
            file.disk_contents() == data,
            "bshift {bshift}: disk differs"
        );
    }
}

/// Four threads writing one file (disjoint ranges) in a small domain on a late,
/// reordering device: every write completes, the budget holds, nothing is lost.
#[test]
fn holds_threads_on_one_file_in_a_small_domain() {
    let budget = 128;
    let memory = domain(budget);
    let disk = MemDisk::threaded(1 << 18, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let per = 2 * budget * PAGE_SIZE;
    setsize(&file, (4 * per) as u64).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let over = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, over) = (stop.clone(), over.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                over.fetch_max(memory.counts().resident as usize, Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    let f = file.clone();
    let results = within_for("four writers", Duration::from_secs(30), move || {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let data = pattern(per, t as u8);
                    for (i, piece) in data.chunks(5000).enumerate() {
                        let at = (t * per + i * 5000) as u64;
                        if let Err(e) = write(&f, at, piece) {
                            return Err((at, e));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    for r in &results {
        assert_eq!(*r, Ok(()));
    }
    assert!(over.load(Ordering::Relaxed) <= budget);
    assert_eq!(sync_all(&file), Ok(()));
    disk.quiesce();
    let mut want = Vec::new();
    for t in 0..4 {
        want.extend_from_slice(&pattern(per, t as u8));
    }
    assert!(file.disk_contents() == want, "disk differs");
    check_counts(memory, &[&file], "after four writers");
}

// ---------------------------------------------------------------------------------
// the Reclaimer

fn read_all(file: &Arc<MemFile>, len: usize) {
    let mut buf = vec![0u8; len];
    assert_eq!(read(file, 0, &mut buf), Ok(len));
}

/// Round robin: two files with the same clean pages each give some.
#[test]
fn holds_reclaim_takes_from_every_file() {
    let memory = domain(4096);
    let fs = fs_in(memory, PAGE_SHIFT, MemDisk::new(1 << 16));
    let files: Vec<_> = (0..3)
        .map(|i| {
            let f = fs.create(&pattern(64 * PAGE_SIZE, i)).unwrap();
            f.set_max_transfer(TEST_MAX_TRANSFER);
            read_all(&f, 64 * PAGE_SIZE);
            f
        })
        .collect();
    let daemon = Reclaimer::new();
    for f in &files {
        daemon.register(f).unwrap();
        daemon.register(f).unwrap();
    }
    assert_eq!(daemon.len(), 3);
    let before = memory.counts().resident;
    let done = daemon.reclaim(48);
    assert_eq!(done.freed, 48, "{done:?}");
    assert_eq!(memory.counts().resident, before - 48);
    for f in &files {
        assert!(
            counts_of(f).resident < 64,
            "a file gave nothing: {:?}",
            counts_of(f)
        );
    }
    assert_eq!(daemon.reclaim(0).freed, 0);
    for f in &files {
        assert!(daemon.unregister(f));
    }
    assert_eq!(daemon.reclaim(10), Default::default());
}

/// Dirty pages paged out on a device failing a few times are never lost; `freed`
/// counts exactly the pages that left.
#[test]
fn holds_reclaim_of_dirty_pages_on_a_failing_device_loses_nothing() {
    for bshift in [9u32, PAGE_SHIFT, 16] {
        let memory = domain(4096);
        memory.set_write_behind(false);
        let disk = MemDisk::threaded(1 << 16, true);
        let file = empty_file(memory, bshift, disk.clone());
        let data = pattern(96 * PAGE_SIZE, 11);
        write(&file, 0, &data).unwrap();
        let daemon = Reclaimer::new();
        daemon.register(&file).unwrap();
        for n in 0..3 {
            disk.fail_nth(n, Error::Io);
        }
        let mut total = 0;
        for _ in 0..20 {
            let before = counts_of(&file).resident;
            let done = daemon.reclaim(32);
            disk.quiesce();
            let after = counts_of(&file).resident;
            total += done.freed;
            assert!(
                done.freed as u64 <= before - after + done.writing as u64,
                "bshift {bshift}: freed {done:?}, {before} -> {after}"
            );
            check_counts(memory, &[&file], "reclaim on a failing device");
        }
        let _ = total;
        disk.clear_faults();
        assert!(!file.object().is_failed());
        let _ = sync_all(&file);
        assert_eq!(sync_all(&file), Ok(()));
        assert!(file.disk_contents() == data, "bshift {bshift}: data lost");
        let mut buf = vec![0u8; data.len()];
        read(&file, 0, &mut buf).unwrap();
        assert!(buf == data, "bshift {bshift}: cache lost data");
        daemon.unregister(&file);
    }
}

/// A page daemon thread reclaiming hard while writers, readers, fsyncs and truncates
/// run on the same files: no deadlock, no lost write, counts exact at the end.
#[test]
fn holds_reclaim_races_writers_fsync_and_truncate_without_deadlock() {
    let memory = domain(256);
    let disk = MemDisk::threaded(1 << 18, true);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let files: Vec<_> = (0..2)
        .map(|_| {
            let f = fs.create(&[]).unwrap();
            f.set_max_transfer(TEST_MAX_TRANSFER);
            f
        })
        .collect();
    let daemon = Arc::new(Reclaimer::new());
    for f in &files {
        daemon.register(f).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pd = {
        let (daemon, stop) = (daemon.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                daemon.reclaim(64);
                std::thread::yield_now();
            }
        })
    };
    let fs2 = files.clone();
    let results = within_for(
        "writers with a page daemon",
        Duration::from_secs(40),
        move || {
            let handles: Vec<_> = fs2
                .iter()
                .enumerate()
                .map(|(t, f)| {
                    let f = f.clone();
                    std::thread::spawn(move || -> Result<Vec<u8>, (usize, Error)> {
                        let len = 600 * PAGE_SIZE;
                        let data = pattern(len, t as u8 + 40);
                        let mut cursor = f.object().error_cursor();
                        for round in 0..2 {
                            for (i, piece) in data.chunks(7000).enumerate() {
                                write_retrying(&f, (i * 7000) as u64, piece).map_err(|e| (i, e))?;
                                if i % 50 == 0 {
                                    fsync(&f, &mut cursor, 0, 0).map_err(|e| (i, e))?;
                                    let mut b = vec![0u8; 9000];
                                    let _ = read(&f, (i * 7000 / 2) as u64, &mut b);
                                }
                            }
                            if round == 0 {
                                setsize(&f, 100 * P + 5).map_err(|e| (0, e))?;
                            }
                        }
                        fsync(&f, &mut cursor, 0, 0).map_err(|e| (usize::MAX, e))?;
                        Ok(data)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        },
    );
    stop.store(true, Ordering::Relaxed);
    pd.join().unwrap();
    disk.quiesce();
    for (f, r) in files.iter().zip(results) {
        let data = r.expect("every write completes");
        assert!(f.disk_contents() == data, "lost data");
        daemon.unregister(f);
    }
    check_counts(memory, &[&files[0], &files[1]], "after the race");
    assert!(memory.counts().resident <= 256);
}

// ---------------------------------------------------------------------------------
// more: counts under writeback races, failing writers, errseq with the failed state

/// A truncate freeing pages whose writeback completes later (a held device released
/// from another thread): the domain's writeback count must come back to zero, not
/// underflow or leak.
#[test]
fn holds_counts_exact_when_truncate_races_held_writeback() {
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::threaded(1 << 16, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    write(&file, 0, &pattern(32 * PAGE_SIZE, 1)).unwrap();
    disk.hold();
    putpages(&file, 0, 0, PutFlags::CLEANIT).unwrap();
    assert!(memory.counts().writeback > 0, "{:?}", memory.counts());
    // redirty some of them while in writeback
    let f = file.clone();
    let t = std::thread::spawn(move || {
        let _ = write(&f, 2 * P, &pattern(3 * PAGE_SIZE, 2));
        setsize(&f, 5 * P + 1)
    });
    std::thread::sleep(Duration::from_millis(100));
    disk.release();
    assert_eq!(t.join().unwrap(), Ok(()));
    disk.quiesce();
    check_counts(memory, &[&file], "after truncate vs writeback");
    assert_eq!(memory.counts().writeback, 0);
    assert_eq!(sync_all(&file), Ok(()));
    let mut want = pattern(32 * PAGE_SIZE, 1);
    want[2 * PAGE_SIZE..5 * PAGE_SIZE].copy_from_slice(&pattern(3 * PAGE_SIZE, 2));
    want.truncate(5 * PAGE_SIZE + 1);
    assert!(file.disk_contents() == want);
    drop(file);
    assert_eq!(memory.counts(), PageCounts::default());
}

/// A writer on a device that fails every write, in a small domain: it ends (an error
/// or success), never hangs, and keeps the budget.
#[test]
fn holds_a_writer_on_a_failing_device_never_hangs() {
    let memory = domain(128);
    let disk = MemDisk::threaded(1 << 16, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    disk.fail_blocks(0..u64::MAX, Error::Io);
    let f = file.clone();
    let r = within_for(
        "writer on failing device",
        Duration::from_secs(10),
        move || {
            let data = pattern(4 * 128 * PAGE_SIZE, 3);
            let mut last = Ok(0);
            for (i, piece) in data.chunks(PAGE_SIZE).enumerate() {
                last = write(&f, (i * PAGE_SIZE) as u64, piece);
                if last.is_err() {
                    return (i, last);
                }
            }
            (usize::MAX, last)
        },
    );
    disk.quiesce();
    assert!(memory.counts().resident <= 128);
    // Whatever was acknowledged is still there after recovery.
    disk.clear_faults();
    file.object().clear_failed();
    eprintln!("writer ended at page {} with {:?}", r.0, r.1);
    let _ = sync_all(&file);
    assert_eq!(sync_all(&file), Ok(()));
    let acked = r.0.min(4 * 128) * PAGE_SIZE;
    let data = pattern(4 * 128 * PAGE_SIZE, 3);
    assert!(file.disk_contents()[..acked] == data[..acked]);
    check_counts(memory, &[&file], "after failing writer");
}

/// Cursors around the failed state: one opened during it reports it while failed and
/// nothing after recovery; one opened before and unused reports it once after.
#[test]
fn holds_cursors_around_the_failed_state() {
    use std::num::NonZeroU32;
    let memory = domain(512);
    memory.set_write_behind(false);
    let disk = MemDisk::new(65536);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    file.object().set_write_failure_limit(NonZeroU32::new(2));
    let data = pattern(8 * PAGE_SIZE, 1);
    write(&file, 0, &data).unwrap();
    let mut before_unused = file.object().error_cursor();
    let mut before = file.object().error_cursor();
    disk.fail_blocks(0..u64::MAX, Error::Io);
    assert_eq!(fsync(&file, &mut before, 0, 0), Err(Error::Io));
    assert_eq!(fsync(&file, &mut before, 0, 0), Err(Error::Io));
    assert!(file.object().is_failed());
    let requests = disk.log().len();
    let mut during = file.object().error_cursor();
    assert_eq!(fsync(&file, &mut during, 0, 0), Err(Error::Io));
    assert_eq!(fsync(&file, &mut before, 0, 0), Err(Error::Io));
    assert_eq!(
        disk.log().len(),
        requests,
        "a failed object's fsync reached the device"
    );
    disk.clear_faults();
    file.object().clear_failed();
    assert_eq!(fsync(&file, &mut during, 0, 0), Ok(()));
    assert_eq!(fsync(&file, &mut before, 0, 0), Ok(()));
    assert_eq!(fsync(&file, &mut before_unused, 0, 0), Err(Error::Io));
    assert_eq!(fsync(&file, &mut before_unused, 0, 0), Ok(()));
    assert_eq!(file.disk_contents(), data);
}

/// I/O statistics agree with the disk's log under write-behind, thresholds and
/// reclaim, and failed write transfers are counted.
#[test]
fn holds_io_stats_match_the_disk_under_write_behind_and_reclaim() {
    use genpager::testing::Direction;
    let memory = domain(128);
    let disk = MemDisk::threaded(1 << 16, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let daemon = Reclaimer::new();
    daemon.register(&file).unwrap();
    disk.fail_nth(3, Error::Io);
    let data = pattern(300 * PAGE_SIZE, 5);
    for (i, piece) in data.chunks(10_000).enumerate() {
        write(&file, (i * 10_000) as u64, piece).unwrap();
        if i % 7 == 0 {
            daemon.reclaim(20);
        }
    }
    let _ = sync_all(&file);
    disk.quiesce();
    let io = file.object().stats().io;
    let log = disk.log();
    let writes = log
        .iter()
        .filter(|r| r.direction == Direction::Write)
        .count() as u64;
    let wbytes: u64 = log
        .iter()
        .filter(|r| r.direction == Direction::Write)
        .map(|r| r.len as u64)
        .sum();
    assert_eq!(io.write_requests, writes);
    assert_eq!(io.write_bytes, wbytes);
    assert_eq!(io.write_errors, 1);
    assert_eq!(io.write_sizes.iter().sum::<u64>(), writes);
    daemon.unregister(&file);
    assert!(file.disk_contents() == data);
}

/// Odd maximum transfers (not a power of two, not page multiples, below a page):
/// write-behind's clusters must not panic or write unaligned ranges; data intact.
#[test]
fn holds_write_behind_with_odd_max_transfers() {
    for max in [1usize, 5000, 3 * PAGE_SIZE, 3 * PAGE_SIZE + 512, 1 << 20] {
        let memory = domain(1024);
        let disk = MemDisk::threaded(1 << 16, true);
        let file = empty_file(memory, 9, disk.clone());
        file.set_max_transfer(max);
        let data = pattern(40 * PAGE_SIZE + 77, 8);
        let f = file.clone();
        let d = data.clone();
        let r = within(&format!("max {max}"), move || {
            for (i, piece) in d.chunks(1500).enumerate() {
                write(&f, (i * 1500) as u64, piece)?;
            }
            Ok::<(), Error>(())
        });
        assert_eq!(r, Ok(()), "max {max}");
        assert_eq!(sync_all(&file), Ok(()), "max {max}");
        disk.quiesce();
        assert!(file.disk_contents() == data, "max {max}");
        check_counts(memory, &[&file], "odd max");
    }
}

/// A budget set to 0 and back while files hold pages: errors, no panic, and the
/// thresholds of a zero budget do not wedge a writer.
#[test]
fn holds_budget_changed_to_zero_and_back() {
    let memory = domain(256);
    let disk = MemDisk::threaded(1 << 16, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let data = pattern(64 * PAGE_SIZE, 8);
    write(&file, 0, &data).unwrap();
    memory.set_budget(0);
    let f = file.clone();
    let r = within("writes at budget 0", move || {
        let a = write(&f, 0, &pattern(PAGE_SIZE, 9));
        let b = write(&f, 100 * P, &pattern(PAGE_SIZE, 9));
        (a, b)
    });
    assert_eq!(r.1, Err(Error::NoMemory));
    let _ = r.0;
    memory.set_budget(256);
    let mut want = data.clone();
    if r.0.is_ok() {
        want[..PAGE_SIZE].copy_from_slice(&pattern(PAGE_SIZE, 9));
    }
    assert_eq!(sync_all(&file), Ok(()));
    disk.quiesce();
    assert!(file.disk_contents()[..want.len()] == want[..]);
    check_counts(memory, &[&file], "budget 0 and back");
}

/// Use-once with a hot page: a page read again and again survives a sequential scan
/// of 4x the budget through the same file (its referenced bit gives it a second
/// chance), so it is read from the disk once.
#[test]
fn holds_a_hot_page_survives_a_use_once_scan() {
    let budget = 64;
    let memory = domain(budget);
    let disk = MemDisk::new(1 << 16);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let data = pattern(4 * budget * PAGE_SIZE + PAGE_SIZE, 2);
    let file = fs.create(&data).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    file.object()
        .read_ahead()
        .set_advice(genpager::Advice::Random);
    let mut buf = vec![0u8; PAGE_SIZE];
    let hot_sector = sector_of(&file, 0).unwrap();
    for i in 1..=(4 * budget) as u64 {
        read(&file, 0, &mut buf).unwrap();
        read(&file, 0, &mut buf).unwrap();
        read(&file, i * P, &mut buf).unwrap();
    }
    let hot_reads = disk
        .log()
        .iter()
        .filter(|r| r.block <= hot_sector && hot_sector < r.block + r.len as u64 / 512)
        .count();
    assert_eq!(hot_reads, 1, "the hot page was evicted by a use-once scan");
}

/// "In a memory domain a window is at most a sixteenth of the domain's budget": no
/// read request of a sequential reader of twice `budget` pages, one page at a time,
/// is larger than budget/16 pages.
fn assert_read_requests_within_a_sixteenth_of(budget: usize) {
    use genpager::testing::Direction;
    let memory = domain(budget);
    let disk = MemDisk::new(1 << 16);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let data = pattern(2 * budget * PAGE_SIZE, 2);
    let file = fs.create(&data).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    let mut buf = vec![0u8; PAGE_SIZE];
    for i in 0..(2 * budget) as u64 {
        assert_eq!(read(&file, i * P, &mut buf), Ok(PAGE_SIZE));
    }
    let window = (budget / 16).max(1) * PAGE_SIZE;
    for r in disk.log().iter().filter(|r| r.direction == Direction::Read) {
        assert!(
            r.len <= window,
            "budget {budget}: a read of {} bytes",
            r.len
        );
    }
}

#[test]
fn holds_read_ahead_windows_bounded_by_a_sixteenth_of_a_large_budget() {
    for budget in [256usize, 1024] {
        assert_read_requests_within_a_sixteenth_of(budget);
    }
}

/// Below 256 pages of budget, the window is one whole transfer (a quarter of a
/// 64-page budget), not "at most a sixteenth" as the README says.
#[test]
#[ignore = "DOCUMENTED: a window is at most a sixteenth of the budget but at least one \
            transfer (a 64-page budget with 16-page transfers reads whole transfers)"]
fn finding_read_ahead_window_exceeds_a_sixteenth_of_a_small_budget() {
    assert_read_requests_within_a_sixteenth_of(64);
}

/// Several failures between two fsyncs are reported as one, the latest; an fsync whose
/// transaction is refused leaves the cursor where it was.
#[test]
fn holds_latest_error_once_and_refused_fsync_keeps_cursor() {
    let memory = domain(512);
    memory.set_write_behind(false);
    let disk = MemDisk::new(65536);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let mut cursor = file.object().error_cursor();
    write(&file, 0, &pattern(PAGE_SIZE, 1)).unwrap();
    disk.fail_nth(0, Error::Io);
    let _ = putpages(&file, 0, 0, PutFlags::CLEANIT);
    disk.clear_faults();
    disk.fail_nth(0, Error::NoSpace);
    let _ = putpages(&file, 0, 0, PutFlags::CLEANIT);
    disk.clear_faults();
    file.fail_hook(Hook::TransBegin, 1, Error::Busy);
    let refused = fsync(&file, &mut cursor, 0, 0);
    file.clear_hook_failures();
    assert_ne!(refused, Ok(()));
    assert_eq!(fsync(&file, &mut cursor, 0, 0), Err(Error::NoSpace));
    assert_eq!(fsync(&file, &mut cursor, 0, 0), Ok(()));
    assert_eq!(file.disk_contents(), pattern(PAGE_SIZE, 1));
}

/// A failed object: the page daemon's CLEANIT|FREE frees only clean pages, and
/// wired/busy/dirty pages survive a reclaim.
#[test]
fn holds_failed_object_free_flush_keeps_dirty_pages() {
    use std::num::NonZeroU32;
    let memory = domain(512);
    memory.set_write_behind(false);
    let disk = MemDisk::new(65536);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let file = fs.create(&pattern(16 * PAGE_SIZE, 3)).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    file.object().set_write_failure_limit(NonZeroU32::new(1));
    read_all(&file, 16 * PAGE_SIZE);
    write(&file, 4 * P, &pattern(4 * PAGE_SIZE, 4)).unwrap();
    disk.fail_blocks(0..u64::MAX, Error::Io);
    assert_eq!(sync_all(&file), Err(Error::Io));
    assert!(file.object().is_failed());
    let r = putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::FREE);
    assert!(r.is_err());
    assert_eq!(counts_of(&file).resident, 4, "{:?}", counts_of(&file));
    assert_eq!(counts_of(&file).dirty, 4);
    assert!(file.object().is_failed());
    disk.clear_faults();
    file.object().clear_failed();
    let _ = sync_all(&file);
    let mut want = pattern(16 * PAGE_SIZE, 3);
    want[4 * PAGE_SIZE..8 * PAGE_SIZE].copy_from_slice(&pattern(4 * PAGE_SIZE, 4));
    assert_eq!(file.disk_contents(), want);
}

/// Wired pages are never freed by the page daemon, nor by a cache whose budget is
/// spent.
#[test]
fn holds_wired_pages_survive_reclaim_and_spent_budget() {
    let memory = domain(32);
    let disk = MemDisk::new(65536);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let file = fs.create(&pattern(64 * PAGE_SIZE, 3)).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    let mut buf = vec![0u8; PAGE_SIZE];
    for i in 0..8 {
        read(&file, i * P, &mut buf).unwrap();
    }
    {
        let mut state = file.object().lock();
        for i in 0..8 {
            state.cache_mut().lookup_mut(i * P).unwrap().wire_count = 1;
        }
    }
    for i in 8..64 {
        let _ = read(&file, i * P, &mut buf);
    }
    let daemon = Reclaimer::new();
    daemon.register(&file).unwrap();
    daemon.reclaim(100);
    for i in 0..8 {
        assert!(
            file.object().read().cache().lookup(i * P).is_some(),
            "wired page {i} freed"
        );
    }
    {
        let mut state = file.object().lock();
        for i in 0..8 {
            state.cache_mut().lookup_mut(i * P).unwrap().wire_count = 0;
        }
    }
    daemon.unregister(&file);
}

/// The same as the read: a write to file B fails with NoMemory while the budget is
/// full of file A's clean idle pages (no page daemon running).
#[test]
#[ignore = "DOCUMENTED: as the read above: other files' pages are the page daemon's to take"]
fn finding_a_write_fails_while_another_files_clean_pages_fill_the_budget() {
    let memory = domain(64);
    let fs = fs_in(memory, PAGE_SHIFT, MemDisk::new(65536));
    let a = fs.create(&pattern(64 * PAGE_SIZE, 1)).unwrap();
    let b = fs.create(&[]).unwrap();
    a.set_max_transfer(TEST_MAX_TRANSFER);
    b.set_max_transfer(TEST_MAX_TRANSFER);
    let mut buf = vec![0u8; PAGE_SIZE];
    for i in 0..64 {
        let _ = read(&a, i * P, &mut buf);
    }
    assert_eq!(memory.counts().resident, 64);
    assert_eq!(
        write(&b, 0, &pattern(PAGE_SIZE, 2)),
        Ok(PAGE_SIZE),
        "B's write fails though A's pages are clean and idle"
    );
}

/// Three writers of three files, each writing in single large calls: dirty +
/// writeback stays within hard + one batch per writer.
#[test]
fn holds_three_writers_in_large_calls_are_held_to_the_hard_threshold() {
    let budget = 1024;
    let memory = domain(budget);
    let disk = MemDisk::threaded(1 << 19, true);
    let fs = fs_in(memory, 16, disk.clone());
    let files: Vec<_> = (0..3)
        .map(|_| {
            let f = fs.create(&[]).unwrap();
            f.set_max_transfer(TEST_MAX_TRANSFER);
            f
        })
        .collect();
    let (_, hard) = memory.dirty_thresholds();
    let batch = 64 * 1024 / PAGE_SIZE;
    let stop = Arc::new(AtomicBool::new(false));
    let max = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max) = (stop.clone(), max.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max.fetch_max(memory.unwritten(), Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };
    let daemon = Arc::new(Reclaimer::new());
    for f in &files {
        daemon.register(f).unwrap();
    }
    let pd = {
        let (daemon, stop) = (daemon.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if memory.counts().resident as usize + 128 > budget {
                    daemon.reclaim(64);
                }
                std::thread::yield_now();
            }
        })
    };
    let fs2 = files.clone();
    let r = within_for("three writers", Duration::from_secs(30), move || {
        let hs: Vec<_> = fs2
            .into_iter()
            .enumerate()
            .map(|(t, f)| {
                std::thread::spawn(move || {
                    let data = pattern(2 * budget * PAGE_SIZE, t as u8);
                    for (i, piece) in data.chunks(1 << 20).enumerate() {
                        write_retrying(&f, (i << 20) as u64, piece)?;
                    }
                    Ok::<Vec<u8>, Error>(data)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    pd.join().unwrap();
    let seen = max.load(Ordering::Relaxed);
    for (f, data) in files.iter().zip(r) {
        daemon.unregister(f);
        let data = data.expect("write completes");
        assert_eq!(sync_all(f), Ok(()));
        disk.quiesce();
        let got = f.disk_contents();
        assert_eq!(got.len(), data.len());
        let bad = got.iter().zip(&data).position(|(a, b)| a != b);
        assert_eq!(
            bad,
            None,
            "disk's first differing byte; counts {:?}, log tail {:?}",
            counts_of(f),
            disk.log().len()
        );
    }
    // The sampler's `unwritten` loads dirty and writeback one after the other, so a
    // page moving between them may count twice: one batch of slack for that.
    assert!(
        seen <= hard + 4 * batch,
        "unwritten {seen} > hard {hard} + 3 batches (+1 slack)"
    );
}

/// Write `data` at `at`, retrying NoMemory (as a kernel would after the page daemon
/// ran); rewriting the same bytes is idempotent.
fn write_retrying(f: &Arc<MemFile>, at: u64, data: &[u8]) -> genpager::Result {
    let mut done = 0;
    let mut tries = 0;
    while done < data.len() {
        match write(f, at + done as u64, &data[done..]) {
            Ok(n) => done += n,
            Err(Error::NoMemory) if tries < 100_000 => {
                tries += 1;
                std::thread::yield_now();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Three writers of three files (64 KiB blocks) with a page daemon thread in one
/// domain, writes retried on NoMemory: after a synchronous flush, every file's disk
/// blocks equal its data. Repeated to catch a rare race.
#[test]
fn holds_three_writers_and_a_page_daemon_lose_nothing() {
    three_writers(&[16, PAGE_SHIFT, 9], 512, 300_000, 64);
}

/// The same with 1 MiB writes and a 1024-page budget (where a mismatch was seen once).
#[test]
fn holds_three_writers_in_1mib_calls_and_a_page_daemon_lose_nothing() {
    three_writers(&[16, 16, 16], 1024, 1 << 20, 128);
}

fn three_writers(shifts: &[u32], budget: usize, chunk: usize, slack: usize) {
    for &bshift in shifts {
        {
            let memory = domain(budget);
            let disk = MemDisk::threaded(1 << 19, true);
            let fs = fs_in(memory, bshift, disk.clone());
            let files: Vec<_> = (0..3)
                .map(|_| {
                    let f = fs.create(&[]).unwrap();
                    f.set_max_transfer(TEST_MAX_TRANSFER);
                    f
                })
                .collect();
            let daemon = Arc::new(Reclaimer::new());
            for f in &files {
                daemon.register(f).unwrap();
            }
            let stop = Arc::new(AtomicBool::new(false));
            let pd = {
                let (daemon, stop) = (daemon.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if memory.counts().resident as usize + slack > budget {
                            daemon.reclaim(64);
                        }
                        std::thread::yield_now();
                    }
                })
            };
            let fs2 = files.clone();
            let r = within_for("three writers", Duration::from_secs(30), move || {
                let hs: Vec<_> = fs2
                    .into_iter()
                    .enumerate()
                    .map(|(t, f)| {
                        std::thread::spawn(move || {
                            let data = pattern(2 * budget * PAGE_SIZE, t as u8 + 17);
                            for (i, piece) in data.chunks(chunk).enumerate() {
                                write_retrying(&f, (i * chunk) as u64, piece)?;
                            }
                            Ok::<Vec<u8>, Error>(data)
                        })
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            });
            stop.store(true, Ordering::Relaxed);
            pd.join().unwrap();
            for (t, (f, data)) in files.iter().zip(r).enumerate() {
                daemon.unregister(f);
                let data = data.expect("write completes");
                let _ = sync_all(f);
                assert_eq!(sync_all(f), Ok(()));
                disk.quiesce();
                let got = f.disk_contents();
                assert_eq!(got.len(), data.len());
                let bad = got.iter().zip(&data).position(|(a, b)| a != b);
                assert_eq!(
                    bad,
                    None,
                    "bshift {bshift} file {t}: disk differs from the acknowledged data at this byte; counts {:?}",
                    counts_of(f)
                );
            }
        }
    }
}

/// One reclaim call over a file on a device failing inline (completion inside
/// `submit`) ends after a round: it does not try the same pages again and again, each
/// try an attempt towards the failed state.
#[test]
#[allow(clippy::single_element_loop)] // The threaded case was dropped as unstable.
fn finding_one_reclaim_call_fails_an_object_on_an_inline_failing_device() {
    // (On a threaded device completing quickly the same happens, timing permitting.)
    for threaded in [false] {
        let memory = domain(4096);
        memory.set_write_behind(false);
        let disk = if threaded {
            MemDisk::threaded(1 << 16, false)
        } else {
            MemDisk::new(1 << 16)
        };
        let file = empty_file(memory, PAGE_SHIFT, disk.clone());
        write(&file, 0, &pattern(64 * PAGE_SIZE, 1)).unwrap();
        let daemon = Reclaimer::new();
        daemon.register(&file).unwrap();
        disk.fail_blocks(0..u64::MAX, Error::Io);
        let d2 = disk.clone();
        let f2 = file.clone();
        let done = within("reclaim on failing device", move || {
            let done = daemon.reclaim(1000);
            d2.quiesce();
            daemon.unregister(&f2);
            done
        });
        let attempts = file.object().read().failed_writes_in_a_row();
        assert!(
            !file.object().is_failed() && attempts <= 2,
            "threaded {threaded}: one reclaim call made {attempts} failed attempts ({done:?}), {} requests",
            disk.log().len()
        );
        disk.clear_faults();
        let _ = sync_all(&file);
        assert_eq!(file.disk_contents(), pattern(64 * PAGE_SIZE, 1));
    }
}

/// On a device completing inline, `freed` is exactly what left the cache.
#[test]
fn holds_reclaimed_freed_is_exact_on_an_inline_device() {
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::new(1 << 16);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let file = fs.create(&pattern(64 * PAGE_SIZE, 3)).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    read_all(&file, 64 * PAGE_SIZE);
    write(&file, 8 * P, &pattern(20 * PAGE_SIZE, 4)).unwrap();
    let daemon = Reclaimer::new();
    daemon.register(&file).unwrap();
    for target in [5usize, 16, 17, 40, 100] {
        let before = counts_of(&file).resident;
        let done = daemon.reclaim(target);
        let after = counts_of(&file).resident;
        assert_eq!(done.writing, 0);
        assert_eq!(
            done.freed as u64,
            before - after,
            "target {target}: {done:?}"
        );
        assert!(
            done.freed >= target.min(before as usize),
            "target {target}: {done:?} of {before}"
        );
    }
    daemon.unregister(&file);
    let mut want = pattern(64 * PAGE_SIZE, 3);
    want[8 * PAGE_SIZE..28 * PAGE_SIZE].copy_from_slice(&pattern(20 * PAGE_SIZE, 4));
    assert_eq!(file.disk_contents(), want);
}

/// The shared memory has no budget, thresholds nor write-behind: pages stay dirty
/// until flushed.
#[test]
fn holds_shared_memory_has_no_write_behind() {
    let disk = MemDisk::new(1 << 16);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create(&[]).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    write(&file, 0, &pattern(4 * TEST_MAX_TRANSFER, 1)).unwrap();
    assert!(disk.log().is_empty());
    assert_eq!(Memory::shared().dirty_thresholds().0, usize::MAX / 10);
}

/// Fairness: successive small reclaim calls take their batch from successive files,
/// so no one file is always the victim.
#[test]
fn holds_successive_reclaims_rotate_over_files() {
    let memory = domain(4096);
    let fs = fs_in(memory, PAGE_SHIFT, MemDisk::new(1 << 16));
    let files: Vec<_> = (0..3)
        .map(|i| {
            let f = fs.create(&pattern(64 * PAGE_SIZE, i)).unwrap();
            f.set_max_transfer(TEST_MAX_TRANSFER);
            read_all(&f, 64 * PAGE_SIZE);
            f
        })
        .collect();
    let daemon = Reclaimer::new();
    for f in &files {
        daemon.register(f).unwrap();
    }
    for _ in 0..3 {
        assert_eq!(
            daemon.reclaim(genpager::reclaim::BATCH).freed,
            genpager::reclaim::BATCH
        );
    }
    for (i, f) in files.iter().enumerate() {
        assert_eq!(
            counts_of(f).resident,
            64 - 16,
            "file {i} after three batch-sized calls"
        );
    }
    // Unregistering the file under the hand keeps the rotation going.
    daemon.unregister(&files[0]);
    daemon.reclaim(16);
    daemon.reclaim(16);
    assert_eq!(counts_of(&files[1]).resident, 32);
    assert_eq!(counts_of(&files[2]).resident, 32);
    daemon.unregister(&files[1]);
    daemon.unregister(&files[2]);
}

/// Register/unregister racing reclaim calls from several threads: no deadlock, no
/// panic.
#[test]
fn holds_register_unregister_race_reclaim() {
    let memory = domain(4096);
    let fs = fs_in(memory, PAGE_SHIFT, MemDisk::threaded(1 << 16, true));
    let files: Vec<_> = (0..4)
        .map(|i| {
            let f = fs.create(&pattern(32 * PAGE_SIZE, i)).unwrap();
            f.set_max_transfer(TEST_MAX_TRANSFER);
            f
        })
        .collect();
    let daemon = Arc::new(Reclaimer::new());
    within_for("register race", Duration::from_secs(10), move || {
        let hs: Vec<_> = (0..3)
            .map(|t| {
                let daemon = daemon.clone();
                let files = files.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let f = &files[(i + t) % 4];
                        match (i + t) % 3 {
                            0 => daemon.register(f).unwrap(),
                            1 => {
                                daemon.unregister(f);
                            }
                            _ => {
                                let mut b = vec![0u8; 8 * PAGE_SIZE];
                                let _ = read(f, 0, &mut b);
                                let _ = write(f, 4 * P, &b[..PAGE_SIZE]);
                                daemon.reclaim(8);
                            }
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
}

/// A sequential reader of 4x a domain's budget, alone in it: every byte is read from
/// the disk once (read-ahead it has yet to reach is not evicted to read further).
#[test]
fn holds_sequential_reader_in_a_small_domain_reads_each_byte_once() {
    use genpager::testing::Direction;
    for budget in [64usize, 272] {
        let memory = domain(budget);
        let disk = MemDisk::new(1 << 16);
        let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
        let len = 4 * budget * PAGE_SIZE;
        let data = pattern(len, 6);
        let file = fs.create(&data).unwrap();
        file.set_max_transfer(TEST_MAX_TRANSFER);
        let mut buf = vec![0u8; 4096];
        let mut at = 0;
        while at < len {
            let n = read(&file, at as u64, &mut buf).unwrap();
            assert_eq!(buf[..n], data[at..at + n]);
            at += n;
        }
        let bytes: usize = disk
            .log()
            .iter()
            .filter(|r| r.direction == Direction::Read)
            .map(|r| r.len)
            .sum();
        assert_eq!(
            bytes, len,
            "budget {budget}: read {bytes} bytes for a {len}-byte file"
        );
    }
}

/// A page-out by the page daemon that fails is reported to an fsync cursor opened
/// before it, once.
#[test]
fn holds_page_daemon_write_error_reaches_fsync_once() {
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::threaded(1 << 16, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let data = pattern(32 * PAGE_SIZE, 2);
    write(&file, 0, &data).unwrap();
    let mut cursor = file.object().error_cursor();
    let daemon = Reclaimer::new();
    daemon.register(&file).unwrap();
    disk.fail_nth(0, Error::Io);
    daemon.reclaim(64);
    disk.quiesce();
    disk.clear_faults();
    let mut late = file.object().error_cursor();
    assert_eq!(fsync(&file, &mut cursor, 0, 0), Err(Error::Io));
    assert_eq!(fsync(&file, &mut cursor, 0, 0), Ok(()));
    assert_eq!(fsync(&file, &mut late, 0, 0), Ok(()));
    assert_eq!(file.disk_contents(), data);
    daemon.unregister(&file);
}

/// Counts stay exact through write faults, pages modified through a writable mapping
/// and cleaned by a flush or the page daemon.
#[test]
fn holds_counts_exact_through_write_faults_and_mappings() {
    use genpager::cache::MapState;
    use genpager::{Access, GetFlags, getpages};
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::new(1 << 16);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let file = fs.create(&pattern(16 * PAGE_SIZE, 1)).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    for i in 0..4u64 {
        let got = getpages(
            &file,
            fault_of(i * 4 * P, 4, 0, Access::Write, GetFlags::SYNCIO),
        );
        assert!(got.is_ok(), "{:?}", got.err());
        drop(got);
        check_counts(memory, &[&file], "after write fault");
    }
    {
        let mut state = file.object().lock();
        for i in 0..16u64 {
            state.cache_mut().map(i * P, MapState::Writable);
        }
        for i in 0..8u64 {
            let _ = state.cache_mut().write_through_mapping(i * P, 5, b"hello");
        }
    }
    check_counts(memory, &[&file], "after mapped stores");
    let daemon = Reclaimer::new();
    daemon.register(&file).unwrap();
    daemon.reclaim(6);
    check_counts(memory, &[&file], "after reclaim of mapped pages");
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
    check_counts(memory, &[&file], "after flush of mapped pages");
    daemon.reclaim(100);
    check_counts(memory, &[&file], "after reclaim");
    daemon.unregister(&file);
    let mut want = pattern(16 * PAGE_SIZE, 1);
    for i in 0..8 {
        want[i * PAGE_SIZE + 5..i * PAGE_SIZE + 10].copy_from_slice(b"hello");
    }
    assert_eq!(
        file.disk_contents(),
        want,
        "a store through a mapping was lost"
    );
    drop(file);
    assert_eq!(memory.counts(), PageCounts::default());
}

/// A store through a writable mapping after a flush: the syncer's `flush_expired` and
/// `fsync` must both get it to the disk (the page is "maybe dirty" while mapped
/// writable, or the flush write-protected it so the store faults).
#[test]
fn holds_a_store_through_a_mapping_after_a_flush_reaches_the_disk() {
    use genpager::cache::MapState;
    use genpager::{Access, GetFlags, getpages};
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::new(1 << 16);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let file = fs.create(&pattern(4 * PAGE_SIZE, 1)).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    drop(getpages(&file, fault_of(0, 4, 0, Access::Write, GetFlags::SYNCIO)).unwrap());
    file.object().lock().cache_mut().map(0, MapState::Writable);
    file.object()
        .lock()
        .cache_mut()
        .write_through_mapping(0, 0, b"first")
        .unwrap();
    let mut cursor = file.object().error_cursor();
    fsync(&file, &mut cursor, 0, 0).unwrap();
    assert_eq!(&file.disk_contents()[..5], b"first");
    // The store after the flush: lands only if the page is still mapped writable.
    let landed = file
        .object()
        .lock()
        .cache_mut()
        .write_through_mapping(0, 0, b"again")
        .is_ok();
    if landed {
        assert_eq!(
            flush_expired(&file, 0, 10),
            Ok(false),
            "notes the dirty file"
        );
        assert_eq!(
            flush_expired(&file, 10, 10),
            Ok(true),
            "the syncer did not see the store"
        );
        fsync(&file, &mut cursor, 0, 0).unwrap();
        assert_eq!(
            &file.disk_contents()[..5],
            b"again",
            "a store through a mapping was lost"
        );
    }
}

struct Hostile(genpager::reclaim::Verdict, usize);
impl genpager::reclaim::Policy for Hostile {
    fn inactive_target(&self, _resident: usize) -> usize {
        self.1
    }
    fn judge(&self, _page: &genpager::reclaim::Scanned) -> genpager::reclaim::Verdict {
        self.0
    }
}

/// Hostile policies (free everything, reactivate everything, clean everything, an
/// inactive target of usize::MAX or 0): the reclaim call ends, never discards dirty
/// data and never frees a wired page.
#[test]
fn holds_hostile_policies_end_and_discard_nothing() {
    use genpager::reclaim::Verdict;
    for verdict in [
        Verdict::Free,
        Verdict::Reactivate,
        Verdict::Clean,
        Verdict::Skip,
    ] {
        for target in [0usize, usize::MAX] {
            let memory = domain(4096);
            memory.set_write_behind(false);
            let disk = MemDisk::threaded(1 << 16, true);
            let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
            let file = fs.create(&pattern(64 * PAGE_SIZE, 1)).unwrap();
            file.set_max_transfer(TEST_MAX_TRANSFER);
            read_all(&file, 64 * PAGE_SIZE);
            write(&file, 0, &pattern(32 * PAGE_SIZE, 2)).unwrap();
            file.object()
                .lock()
                .cache_mut()
                .lookup_mut(40 * P)
                .unwrap()
                .wire_count = 1;
            let daemon = Reclaimer::with_policy(Hostile(verdict, target));
            daemon.register(&file).unwrap();
            let d2 = disk.clone();
            let f2 = file.clone();
            within(&format!("{verdict:?} {target}"), move || {
                for _ in 0..3 {
                    daemon.reclaim(10_000);
                    daemon.reclaim(1000);
                }
                d2.quiesce();
                daemon.unregister(&f2);
            });
            assert!(
                file.object().read().cache().lookup(40 * P).is_some(),
                "{verdict:?}: wired page freed"
            );
            file.object()
                .lock()
                .cache_mut()
                .lookup_mut(40 * P)
                .unwrap()
                .wire_count = 0;
            let _ = sync_all(&file);
            let mut want = pattern(64 * PAGE_SIZE, 1);
            want[..32 * PAGE_SIZE].copy_from_slice(&pattern(32 * PAGE_SIZE, 2));
            assert!(
                file.disk_contents() == want,
                "{verdict:?} {target}: data lost"
            );
            let mut buf = vec![0u8; want.len()];
            read(&file, 0, &mut buf).unwrap();
            assert!(buf == want, "{verdict:?} {target}: cache lost data");
            check_counts(memory, &[&file], "hostile policy");
        }
    }
}

/// `set_write_failure_limit(None)`: never failed, however many flushes fail.
#[test]
fn holds_no_failure_limit_never_fails_the_object() {
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::new(1 << 16);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    file.object().set_write_failure_limit(None);
    write(&file, 0, &pattern(4 * PAGE_SIZE, 1)).unwrap();
    disk.fail_blocks(0..u64::MAX, Error::Io);
    for _ in 0..20 {
        assert_eq!(sync_all(&file), Err(Error::Io));
    }
    assert!(!file.object().is_failed());
    disk.clear_faults();
    assert_eq!(sync_all(&file), Ok(()));
    assert_eq!(file.disk_contents(), pattern(4 * PAGE_SIZE, 1));
}

/// A reclaim call's bound on visits grows with its target ("two rounds per batch
/// wanted"), so with a target near usize::MAX a file whose pages keep moving (here a
/// policy reactivating every page; with Clock, pages re-referenced by a busy reader as
/// fast as the hand clears them) is visited forever: the call never returns.
/// Fixed: a visit that only moves pages between the queues is no progress; two
/// rounds of those end the call.
#[test]
fn finding_reclaim_with_a_huge_target_never_ends_while_pages_keep_moving() {
    use genpager::reclaim::Verdict;
    let memory = domain(4096);
    let fs = fs_in(memory, PAGE_SHIFT, MemDisk::new(1 << 16));
    let file = fs.create(&pattern(64 * PAGE_SIZE, 1)).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    read_all(&file, 64 * PAGE_SIZE);
    let daemon = Reclaimer::with_policy(Hostile(Verdict::Reactivate, 0));
    daemon.register(&file).unwrap();
    within_for("reclaim(usize::MAX)", Duration::from_secs(3), move || {
        daemon.reclaim(usize::MAX)
    });
}

/// Three writers (64 KiB blocks, 1 MiB calls, no retry: a writer stops at its first
/// error) with a page daemon: every acknowledged call's bytes are on the disk after a
/// synchronous flush. (A mismatch was seen once in this shape.)
#[test]
fn holds_three_writers_stopping_at_nomemory_lose_no_acknowledged_write() {
    for round in 0..2 {
        let budget = 1024;
        let memory = domain(budget);
        let disk = MemDisk::threaded(1 << 19, true);
        let fs = fs_in(memory, 16, disk.clone());
        let files: Vec<_> = (0..3)
            .map(|_| {
                let f = fs.create(&[]).unwrap();
                f.set_max_transfer(TEST_MAX_TRANSFER);
                f
            })
            .collect();
        let daemon = Arc::new(Reclaimer::new());
        for f in &files {
            daemon.register(f).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let pd = {
            let (daemon, stop) = (daemon.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if memory.counts().resident as usize + 128 > budget {
                        daemon.reclaim(64);
                    }
                    std::thread::yield_now();
                }
            })
        };
        let fs2 = files.clone();
        let r = within_for("three writers", Duration::from_secs(30), move || {
            let hs: Vec<_> = fs2
                .into_iter()
                .enumerate()
                .map(|(t, f)| {
                    std::thread::spawn(move || {
                        let data = pattern(2 * budget * PAGE_SIZE, t as u8);
                        let mut acked = 0usize;
                        for (i, piece) in data.chunks(1 << 20).enumerate() {
                            match write(&f, (i << 20) as u64, piece) {
                                Ok(n) if n == piece.len() => acked += n,
                                _ => break,
                            }
                        }
                        (data, acked)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        stop.store(true, Ordering::Relaxed);
        pd.join().unwrap();
        for (t, (f, (data, acked))) in files.iter().zip(r).enumerate() {
            daemon.unregister(f);
            let _ = sync_all(f);
            assert_eq!(sync_all(f), Ok(()));
            disk.quiesce();
            let got = f.disk_contents();
            let bad = got[..acked]
                .iter()
                .zip(&data[..acked])
                .position(|(a, b)| a != b);
            assert_eq!(
                bad, None,
                "round {round} file {t}: acked {acked} bytes, disk differs at"
            );
        }
    }
}

/// A writer over the hard threshold on its own held device waits, and resumes when
/// the device is released from another thread.
#[test]
fn holds_a_writer_held_by_its_own_device_resumes_on_release() {
    let memory = domain(256);
    let disk = MemDisk::threaded(1 << 16, true);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    disk.hold();
    let d2 = disk.clone();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        d2.release();
    });
    let f = file.clone();
    let data = pattern(150 * PAGE_SIZE, 3);
    let d = data.clone();
    let r = within("writer on a held device", move || {
        for (i, piece) in d.chunks(PAGE_SIZE).enumerate() {
            write(&f, (i * PAGE_SIZE) as u64, piece)?;
        }
        Ok::<(), Error>(())
    });
    releaser.join().unwrap();
    assert_eq!(r, Ok(()));
    assert_eq!(sync_all(&file), Ok(()));
    disk.quiesce();
    assert!(file.disk_contents() == data);
}

/// ChunkPool bookkeeping: trim returns every empty chunk; spare frames add up.
#[test]
fn holds_chunk_pool_trim_and_spares() {
    let pool = ChunkPool::new();
    let mut frames: Vec<_> = (0..200).map(|_| pool.alloc_frame().unwrap()).collect();
    let heap = pool.heap_bytes();
    assert!(heap >= 200 * PAGE_SIZE);
    assert_eq!(pool.spare_frames(), heap / PAGE_SIZE - 200);
    while let Some(f) = frames.pop() {
        pool.free_frame(f);
    }
    assert_eq!(pool.spare_frames(), heap / PAGE_SIZE);
    assert!(pool.trim() >= 1);
    assert_eq!(pool.heap_bytes(), 0);
    assert_eq!(pool.spare_frames(), 0);
    let f = pool.alloc_frame().unwrap();
    pool.free_frame(f);
}

/// Busy pages (held by a fault on another thread) are never freed by the page daemon
/// nor by a cache whose budget is spent; the reclaim call does not wait for them.
#[test]
fn holds_busy_pages_survive_reclaim_and_spent_budget() {
    use genpager::{Access, GetFlags, getpages};
    let memory = domain(32);
    let disk = MemDisk::new(1 << 16);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let data = pattern(64 * PAGE_SIZE, 5);
    let file = fs.create(&data).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    let f = file.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let fetched = getpages(&f, fault_of(0, 4, 0, Access::Read, GetFlags::SYNCIO)).unwrap();
        let busy = fetched.into_busy().expect("busy pages");
        let first = busy.bytes(0).to_vec();
        tx.send(first).unwrap();
        done_rx.recv().unwrap();
        busy.release();
    });
    let first = rx.recv().unwrap();
    assert_eq!(first, data[..PAGE_SIZE]);
    let f2 = file.clone();
    within("reclaim and reads around busy pages", move || {
        let daemon = Reclaimer::new();
        daemon.register(&f2).unwrap();
        let mut buf = vec![0u8; PAGE_SIZE];
        for i in 8..64 {
            let _ = read(&f2, i * P, &mut buf);
        }
        daemon.reclaim(100);
        for i in 0..4 {
            assert!(
                f2.object().read().cache().lookup(i * P).is_some(),
                "busy page {i} freed"
            );
        }
        daemon.unregister(&f2);
    });
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    check_counts(memory, &[&file], "after busy");
}

/// A cursor of another object: nonsense, never a panic.
#[test]
fn holds_foreign_cursor_never_panics() {
    let memory = domain(64);
    memory.set_write_behind(false);
    let disk = MemDisk::new(1 << 16);
    let a = empty_file(memory, PAGE_SHIFT, disk.clone());
    let b = empty_file(memory, PAGE_SHIFT, disk.clone());
    write(&a, 0, &[1u8; 100]).unwrap();
    disk.fail_nth(0, Error::Io);
    let _ = sync_all(&a);
    disk.clear_faults();
    let mut ca = a.object().error_cursor();
    let _ = b.object().check_errors(&mut ca);
    let _ = fsync(&b, &mut ca, 0, 0);
}

/// A writer of many small files (one page each) in a domain: each call leaves its
/// batch's last page dirty (the writeback it starts covers only the pages before it),
/// so over the hard threshold every call still adds a dirty page and the domain ends
/// far more than one batch above the threshold.
#[test]
fn finding_a_writer_of_many_small_files_is_not_held_to_the_hard_threshold() {
    let budget = 512;
    let memory = domain(budget);
    let disk = MemDisk::new(1 << 18);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let (_, hard) = memory.dirty_thresholds();
    let batch = 64 * 1024 / PAGE_SIZE;
    let mut files = Vec::new();
    let mut worst = 0;
    for i in 0..300 {
        let f = fs.create(&[]).unwrap();
        f.set_max_transfer(TEST_MAX_TRANSFER);
        write(&f, 0, &pattern(PAGE_SIZE, i as u8)).unwrap();
        worst = worst.max(memory.unwritten());
        files.push(f);
    }
    assert!(
        worst <= hard + batch,
        "after a write call, unwritten {worst} > hard {hard} + one batch {batch}"
    );
}

/// Writes one page at each of `pages`, in that order, into a new file of `memory`,
/// and fails unless after every write call the domain's unwritten pages are within
/// the hard threshold plus one 64 KiB batch.
fn assert_one_page_writer_held_to_hard_threshold(
    memory: &'static Memory,
    pages: impl IntoIterator<Item = u64>,
) {
    let disk = MemDisk::new(1 << 18);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let (_, hard) = memory.dirty_thresholds();
    let batch = 64 * 1024 / PAGE_SIZE;
    let mut worst = 0;
    for i in pages {
        write(&file, i * P, &pattern(PAGE_SIZE, i as u8)).unwrap();
        worst = worst.max(memory.unwritten());
    }
    assert!(
        worst <= hard + batch,
        "after a write call, unwritten {worst} > hard {hard} + one batch {batch}"
    );
}

/// The same in one file: a writer going backwards (or randomly) writes each page
/// below the ones it wrote before, and the writeback it starts over the threshold
/// covers only `0..` the start of its last page, never the pages above: dirty memory
/// grows without bound.
#[test]
fn holds_a_backward_writer_is_held_to_the_hard_threshold_with_write_behind() {
    assert_one_page_writer_held_to_hard_threshold(domain(512), (0..300u64).rev());
}
/// (Write-behind off, as `Memory::set_write_behind(false)` allows.) The same in one file: a writer going backwards (or randomly) writes each page
/// below the ones it wrote before, and the writeback it starts over the threshold
/// covers only `0..` the start of its last page, never the pages above: dirty memory
/// grows without bound.
#[test]
fn finding_a_backward_writer_without_write_behind_is_not_held_to_the_hard_threshold() {
    let memory = domain(512);
    memory.set_write_behind(false);
    assert_one_page_writer_held_to_hard_threshold(memory, (0..300u64).rev());
}

/// With write-behind on (the default), a writer going backwards that never writes a
/// cluster's last page (a random writer can do the same): nothing starts writeback of
/// the pages above its last one, dirty memory grows past hard + one batch.
#[test]
fn finding_a_backward_writer_skipping_cluster_ends_is_not_held_to_the_hard_threshold() {
    let per_cluster = (TEST_MAX_TRANSFER / PAGE_SIZE) as u64;
    let pages = (0..320u64)
        .rev()
        .filter(|i| i % per_cluster != per_cluster - 1);
    assert_one_page_writer_held_to_hard_threshold(domain(512), pages);
}

/// Its consequence: alone in its domain, with default settings, such a writer fills
/// the budget with dirty pages and its writes fail with NoMemory (the cache can free
/// only clean pages), though the thresholds were meant to hold it at 20%.
#[test]
fn finding_a_backward_writer_fills_the_budget_with_dirty_pages_and_gets_nomemory() {
    let budget = 128;
    let memory = domain(budget);
    let disk = MemDisk::new(1 << 18);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    let per_cluster = (TEST_MAX_TRANSFER / PAGE_SIZE) as u64;
    for i in (0..320u64)
        .rev()
        .filter(|i| i % per_cluster != per_cluster - 1)
    {
        let r = write(&file, i * P, &pattern(PAGE_SIZE, i as u8));
        assert_eq!(r, Ok(PAGE_SIZE), "page {i}: {:?}", memory.counts());
    }
}

/// A cursor opened while a write is in flight sees that write's later failure.
#[test]
fn holds_cursor_opened_during_a_failing_write_sees_it() {
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::threaded(1 << 16, false);
    let file = empty_file(memory, PAGE_SHIFT, disk.clone());
    write(&file, 0, &pattern(4 * PAGE_SIZE, 1)).unwrap();
    disk.hold();
    disk.fail_nth(0, Error::Io);
    putpages(&file, 0, 0, PutFlags::CLEANIT).unwrap();
    let mut during = file.object().error_cursor();
    disk.release();
    disk.quiesce();
    disk.clear_faults();
    let mut after = file.object().error_cursor();
    assert_eq!(fsync(&file, &mut during, 0, 0), Err(Error::Io));
    assert_eq!(fsync(&file, &mut after, 0, 0), Ok(()));
    assert_eq!(file.disk_contents(), pattern(4 * PAGE_SIZE, 1));
}

/// Direct I/O over a failed object's dirty range fails with its error: a direct read
/// must not return the disk's stale bytes, a direct write must not be overtaken later
/// by the kept dirty pages.
#[test]
fn holds_direct_io_over_a_failed_objects_dirty_pages_fails() {
    use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
    use genpager::testing::Direction;
    use std::num::NonZeroU32;
    let memory = domain(4096);
    memory.set_write_behind(false);
    let disk = MemDisk::new(1 << 16);
    let fs = fs_in(memory, PAGE_SHIFT, disk.clone());
    let file = fs.create(&pattern(8 * PAGE_SIZE, 1)).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    file.object().set_write_failure_limit(NonZeroU32::new(1));
    write(&file, 0, &pattern(2 * PAGE_SIZE, 2)).unwrap();
    disk.fail_blocks(0..u64::MAX, Error::Io);
    assert_eq!(sync_all(&file), Err(Error::Io));
    disk.clear_faults();
    assert!(file.object().is_failed());
    let mut rbuf = Buffer::aligned(4 * PAGE_SIZE);
    let mut uio = Uio::new(
        0,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::new(rbuf.get_mut())],
    )
    .unwrap();
    let r = directio(&file, &mut uio, DirectFlags::empty());
    if r.is_ok() {
        assert_eq!(
            &rbuf.get()[..2 * PAGE_SIZE],
            &pattern(2 * PAGE_SIZE, 2)[..],
            "direct read returned stale disk bytes"
        );
    }
    let mut wbuf = Buffer::with(&pattern(PAGE_SIZE, 3));
    let mut uio = Uio::new(
        0,
        Direction::Write,
        AddressSpace::User,
        vec![IoVec::new(wbuf.get_mut())],
    )
    .unwrap();
    let w = directio(&file, &mut uio, DirectFlags::empty());
    file.object().clear_failed();
    let _ = sync_all(&file);
    let _ = sync_all(&file);
    let disk_now = file.disk_contents();
    if w.is_ok() {
        assert_eq!(
            &disk_now[..PAGE_SIZE],
            &pattern(PAGE_SIZE, 3)[..],
            "a direct write was overtaken by kept dirty pages"
        );
    } else {
        assert_eq!(&disk_now[..PAGE_SIZE], &pattern(PAGE_SIZE, 2)[..]);
    }
}
