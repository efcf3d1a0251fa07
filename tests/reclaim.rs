//! The page daemon's reclaimer (issue 18): `Reclaimer::reclaim` across registered files
//! and the bounded `DefaultCache` making room through the same CLOCK policy.

mod common;

use std::sync::Arc;

use common::*;
use genpager::cache::MapState;
use genpager::reclaim::{BATCH, Reclaimer};
use genpager::testing::{Layout, MemDisk, MemFile};
use genpager::{
    Fault, Fetched, PAGE_SIZE, PageCache, PageQueue, PutFlags, Vnode, getpages, putpages, read,
    write,
};

const P: u64 = PAGE_SIZE as u64;

/// Reads the whole file through the page cache and returns its bytes.
fn read_all(file: &Arc<MemFile>) -> Vec<u8> {
    let size = file.object().size() as usize;
    let mut out = vec![0u8; size];
    let mut at = 0;
    while at < size {
        let n = read(file, at as u64, &mut out[at..]).expect("read");
        assert!(n > 0, "read stopped early at {at}");
        at += n;
    }
    out
}

fn resident_count(file: &MemFile) -> usize {
    file.object().read().cache().resident_pages()
}

fn file_of(pages: usize, seed: u8) -> (MemDisk, Arc<MemFile>, Vec<u8>) {
    let data = pattern(pages * PAGE_SIZE, seed);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    (disk, file, data)
}

/// Clean pages are freed, as many as asked, and the file reads the same afterwards.
#[test]
fn clean_pages_are_freed_and_read_back_the_same() {
    let (disk, file, data) = file_of(48, 1);
    assert!(read_all(&file) == data);
    disk.quiesce();
    let before = resident_count(&file);
    assert_eq!(before, 48);
    let reclaimer = Reclaimer::new();
    reclaimer.register(&file).unwrap();
    let done = reclaimer.reclaim(10);
    assert_eq!(done.freed, 10, "{done:?}");
    assert_eq!(done.writing, 0);
    assert_eq!(resident_count(&file), before - 10);
    assert!(read_all(&file) == data);
    assert!(!any_busy(&file));
}

/// Dirty pages are written back (page-out), never discarded: after reclaiming
/// everything and a sync, the disk holds what was written, and a re-read returns it.
/// Blocks of 512 B, 1 KiB, a page and 64 KiB.
#[test]
fn dirty_pages_are_written_not_discarded_at_every_block_size() {
    for bshift in [9u32, 10, PAGE_SHIFT, 16] {
        let pages = 40;
        let mut data = pattern(pages * PAGE_SIZE, 2);
        let (disk, file) = file_with(bshift, Layout::Contiguous, &data);
        let new = pattern(20 * PAGE_SIZE + 100, 77);
        let at = 7 * PAGE_SIZE + 13;
        assert_eq!(write(&file, at as u64, &new).unwrap(), new.len());
        data[at..at + new.len()].copy_from_slice(&new);
        // Everything resident is fair game: ask for more than there is.
        let reclaimer = Reclaimer::new();
        reclaimer.register(&file).unwrap();
        let mut freed = 0;
        for _ in 0..20 {
            let done = reclaimer.reclaim(1000);
            disk.quiesce();
            freed += done.freed;
            if resident_count(&file) == 0 {
                break;
            }
        }
        assert_eq!(resident_count(&file), 0, "bshift {bshift}: all reclaimed");
        assert!(freed > 0);
        assert!(
            file.disk_contents() == data,
            "bshift {bshift}: disk holds the data"
        );
        putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
        assert!(read_all(&file) == data, "bshift {bshift}: re-read");
    }
}

/// A page written through a writable mapping (clean status, modified bit set) is
/// written back, not freed with its new bytes.
#[test]
fn a_page_modified_through_its_mapping_is_written_not_freed() {
    let (disk, file, mut data) = file_of(12, 3);
    assert!(read_all(&file) == data);
    {
        let mut state = file.object().lock();
        let cache = state.cache_mut();
        for i in 0..12 {
            cache.map(i * P, MapState::Writable);
        }
        cache
            .write_through_mapping(5 * P, 10, b"mapped store")
            .unwrap();
    }
    data[5 * PAGE_SIZE + 10..5 * PAGE_SIZE + 22].copy_from_slice(b"mapped store");
    let reclaimer = Reclaimer::new();
    reclaimer.register(&file).unwrap();
    for _ in 0..20 {
        reclaimer.reclaim(1000);
        disk.quiesce();
    }
    assert_eq!(resident_count(&file), 0);
    assert!(file.disk_contents() == data);
    assert!(read_all(&file) == data);
}

/// Busy pages (a caller holds a fault's pages) and wired pages stay, whatever is asked.
#[test]
fn busy_and_wired_pages_are_skipped() {
    let (disk, file, data) = file_of(30, 4);
    assert!(read_all(&file) == data);
    disk.quiesce();
    {
        let mut state = file.object().lock();
        state.cache_mut().lookup_mut(20 * P).unwrap().wire_count = 1;
    }
    let held = match getpages(&file, Fault::read(3 * P, 2)).unwrap() {
        Fetched::Busy(pages) => pages,
        _ => panic!("a synchronous read fault hands back busy pages"),
    };
    let reclaimer = Reclaimer::new();
    reclaimer.register(&file).unwrap();
    for _ in 0..10 {
        reclaimer.reclaim(1000);
    }
    let left = resident(&file);
    assert_eq!(
        left,
        vec![3 * P, 4 * P, 20 * P],
        "only the held and wired pages stay"
    );
    held.release();
    file.object()
        .lock()
        .cache_mut()
        .lookup_mut(20 * P)
        .unwrap()
        .wire_count = 0;
    reclaimer.reclaim(1000);
    reclaimer.reclaim(1000);
    assert_eq!(resident_count(&file), 0);
}

/// A page used after it was deactivated gets a second chance: the scan sends it back
/// to the active queue and frees an unused one instead.
#[test]
fn referenced_pages_get_a_second_chance() {
    let (disk, file, data) = file_of(30, 5);
    assert!(read_all(&file) == data);
    disk.quiesce();
    {
        // Read through once, the pages went to the inactive queue (use-once): as if
        // they had been used since, all active again.
        let mut state = file.object().lock();
        for i in 0..30 {
            state.cache_mut().set_queue(i * P, PageQueue::Active);
        }
    }
    let reclaimer = Reclaimer::new();
    reclaimer.register(&file).unwrap();
    // The first call deactivates a third (clearing their bits) and frees one.
    assert_eq!(reclaimer.reclaim(1).freed, 1);
    let inactive = file
        .object()
        .read()
        .cache()
        .queue_offsets(PageQueue::Inactive);
    assert_eq!(inactive.len(), 9);
    let touched = &inactive[..3];
    {
        let mut state = file.object().lock();
        for &at in touched {
            assert!(state.cache_mut().touch(at));
        }
    }
    assert_eq!(reclaimer.reclaim(3).freed, 3);
    let state = file.object().read();
    for &at in touched {
        assert_eq!(
            state.cache().lookup(at).map(|p| p.queue()),
            Some(PageQueue::Active),
            "page {at:#x} was used: reactivated, not freed"
        );
    }
    for &at in &inactive[3..6] {
        assert!(state.cache().lookup(at).is_none(), "page {at:#x} freed");
    }
}

/// A fault that hands out a page already resident marks it used, as a mapping's
/// access would.
#[test]
fn a_fault_over_a_resident_page_marks_it_referenced() {
    let (_disk, file, data) = file_of(8, 6);
    assert!(read_all(&file) == data);
    file.object().lock().cache_mut().clear_referenced(2 * P);
    assert!(!file.object().read().cache().is_referenced(2 * P));
    match getpages(&file, Fault::read(2 * P, 1)).unwrap() {
        Fetched::Busy(pages) => pages.release(),
        _ => panic!("busy pages"),
    }
    assert!(file.object().read().cache().is_referenced(2 * P));
}

/// A file whose object lock another thread holds is passed over, not waited for: the
/// call returns, having taken pages from the other files.
#[test]
fn locked_objects_are_skipped_not_waited_on() {
    let (_d1, a, data_a) = file_of(32, 7);
    let (_d2, b, data_b) = file_of(32, 8);
    assert!(read_all(&a) == data_a && read_all(&b) == data_b);
    let reclaimer = Arc::new(Reclaimer::new());
    reclaimer.register(&a).unwrap();
    reclaimer.register(&b).unwrap();
    let guard = a.object().lock();
    let done = {
        let reclaimer = reclaimer.clone();
        within("reclaim with a locked file", move || reclaimer.reclaim(20))
    };
    drop(guard);
    assert!(done.skipped_locked >= 1, "{done:?}");
    assert_eq!(done.freed, 20);
    assert_eq!(resident_count(&a), 32, "the locked file was not touched");
    assert_eq!(resident_count(&b), 12);
}

/// The clock hand moves across files: equal files give equal shares, and the next call
/// starts where the last one stopped.
#[test]
fn reclaim_is_round_robin_across_files() {
    let files: Vec<_> = (0..3).map(|i| file_of(64, 10 + i)).collect();
    let reclaimer = Reclaimer::new();
    for (_, file, data) in &files {
        assert!(read_all(file) == *data);
        reclaimer.register(file).unwrap();
    }
    assert_eq!(reclaimer.reclaim(3 * BATCH).freed, 3 * BATCH);
    for (_, file, _) in &files {
        assert_eq!(resident_count(file), 64 - BATCH);
    }
    // One batch more: the hand is back at the first file.
    assert_eq!(reclaimer.reclaim(BATCH).freed, BATCH);
    assert_eq!(resident_count(&files[0].1), 64 - 2 * BATCH);
    assert_eq!(resident_count(&files[1].1), 64 - BATCH);
}

/// Unregistered files are left alone; registering twice registers once.
#[test]
fn unregister_removes_a_file() {
    let (_d1, a, data_a) = file_of(16, 20);
    let (_d2, b, data_b) = file_of(16, 21);
    assert!(read_all(&a) == data_a && read_all(&b) == data_b);
    let reclaimer = Reclaimer::new();
    reclaimer.register(&a).unwrap();
    reclaimer.register(&a).unwrap();
    reclaimer.register(&b).unwrap();
    assert_eq!(reclaimer.len(), 2);
    assert!(reclaimer.unregister(&a));
    assert!(!reclaimer.unregister(&a));
    assert_eq!(reclaimer.len(), 1);
    reclaimer.reclaim(1000);
    reclaimer.reclaim(1000);
    assert_eq!(resident_count(&a), 16);
    assert_eq!(resident_count(&b), 0);
    assert!(reclaimer.unregister(&b));
    assert!(reclaimer.is_empty());
    assert_eq!(reclaimer.reclaim(10).freed, 0);
    // The registry held references; they are gone.
    assert_eq!(Arc::strong_count(&a), 1);
}

/// The request count of a cold read of the whole file, through an unbounded cache.
fn cold_read_requests(data: &[u8], bshift: u32) -> u64 {
    let (disk, file) = file_with(bshift, Layout::Contiguous, data);
    sequential_read(&file, data, usize::MAX);
    disk.quiesce();
    disk.stats().requests
}

fn sequential_read(file: &Arc<MemFile>, data: &[u8], bound: usize) {
    let mut buf = vec![0u8; 30000];
    let mut at = 0usize;
    while at < data.len() {
        let n = read(file, at as u64, &mut buf).expect("read");
        assert!(n > 0);
        assert!(buf[..n] == data[at..at + n], "bytes at {at}");
        at += n;
        assert!(
            resident_count(file) <= bound,
            "resident {} over {bound}",
            resident_count(file)
        );
    }
}

/// A budget that holds two of the largest read-ahead windows (8 transfers each) and a
/// transfer: the window the reader is in, the one started at its marker, and the
/// transfer being read (as `tests/readahead.rs` finds). Below that, read-ahead meets
/// the bound and stops early, and the rest of its window costs extra requests.
const BUDGET: usize = 17 * TEST_MAX_TRANSFER / PAGE_SIZE;

/// Reading a file four times a bounded cache sequentially keeps the resident pages
/// within the bound (the cache frees its own clean inactive pages to make room) and
/// issues no more device requests than a cold read of the whole file.
#[test]
fn a_sequential_read_of_four_times_a_bounded_cache_stays_within_it() {
    let budget = BUDGET;
    for bshift in [9u32, PAGE_SHIFT, 16] {
        let data = pattern(4 * budget * PAGE_SIZE, 30);
        let cold = cold_read_requests(&data, bshift);
        let (disk, file) = file_with(bshift, Layout::Contiguous, &data);
        file.object().lock().cache_mut().set_limit(budget);
        sequential_read(&file, &data, budget);
        disk.quiesce();
        assert!(
            disk.stats().requests <= cold,
            "bshift {bshift}: {} requests, a cold read takes {cold}",
            disk.stats().requests
        );
    }
}

/// The same read with the kernel's page daemon reclaiming after each read instead of a
/// cache limit: resident pages come back under the budget each time, the bytes are
/// right, and there are no more requests than a cold read: the page daemon takes the
/// pages the reader has read through (inactive, use-once) before it deactivates any
/// read-ahead the reader has yet to reach.
#[test]
fn a_sequential_read_with_a_page_daemon_stays_near_its_budget() {
    let budget = BUDGET;
    let data = pattern(4 * budget * PAGE_SIZE, 31);
    let cold = cold_read_requests(&data, PAGE_SHIFT);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let reclaimer = Reclaimer::new();
    reclaimer.register(&file).unwrap();
    let mut buf = vec![0u8; 30000];
    let mut at = 0usize;
    while at < data.len() {
        let n = read(&file, at as u64, &mut buf).expect("read");
        assert!(buf[..n] == data[at..at + n]);
        at += n;
        disk.quiesce();
        let over = resident_count(&file).saturating_sub(budget);
        if over > 0 {
            reclaimer.reclaim(over);
        }
        assert!(resident_count(&file) <= budget);
    }
    assert!(
        disk.stats().requests <= cold,
        "page daemon at a budget of {budget}: {} requests, a cold read takes {cold}",
        disk.stats().requests
    );
}

/// With the page-daemon flag set on the file the reclaimer's page-outs never wait for
/// a mount transaction that would sleep: the pages stay dirty and resident.
#[test]
fn a_page_out_gives_up_when_the_transaction_would_sleep() {
    let (disk, file, mut data) = file_of(8, 40);
    let new = pattern(3 * PAGE_SIZE, 41);
    write(&file, 0, &new).unwrap();
    data[..new.len()].copy_from_slice(&new);
    file.set_trans_busy(true);
    let reclaimer = Reclaimer::new();
    reclaimer.register(&file).unwrap();
    within("reclaim against a busy transaction", move || {
        for _ in 0..5 {
            reclaimer.reclaim(1000);
        }
        reclaimer
    });
    disk.quiesce();
    assert_eq!(resident_count(&file), 3, "the dirty pages stay");
    file.set_trans_busy(false);
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
    assert!(file.disk_contents() == data);
}

/// A page-out in flight counts as `writing`, not `freed`: its pages stay resident,
/// marked `PAGEOUT` and busy, until the write completes and frees them. Nothing is
/// lost.
#[test]
fn page_outs_in_flight_count_as_writing_until_their_writes_complete() {
    let (disk, file, mut data) = file_of(16, 50);
    let new = pattern(4 * PAGE_SIZE, 51);
    write(&file, 0, &new).unwrap();
    data[..new.len()].copy_from_slice(&new);
    // Only the four dirty pages resident.
    assert_eq!(resident(&file), [0, P, 2 * P, 3 * P]);
    let reclaimer = Reclaimer::new();
    reclaimer.register(&file).unwrap();
    disk.hold();
    let done = reclaimer.reclaim(4);
    assert_eq!((done.freed, done.writing), (0, 4), "{done:?}");
    assert_eq!(resident_count(&file), 4, "in flight, still resident");
    assert!(any_busy(&file));
    disk.release();
    disk.quiesce();
    assert_eq!(resident_count(&file), 0, "freed by the completions");
    assert!(file.disk_contents() == data);
    assert!(read_all(&file) == data);
}
