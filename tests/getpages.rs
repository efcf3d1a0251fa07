//! Scenario tests for getpages, one or more per catalogue row G1–G16 (DESIGN.md §6).

mod common;

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use genpager::cache::MapState;
use genpager::testing::{Direction, Layout, MAX_RUN, MemDisk, MemFile, MemFs, Priority};
use genpager::{
    Access, DirtyStatus, Error, Fetched, GetFlags, MountFlags, PAGE_SIZE, PageCache, PageFlags,
    PageQueue, Vnode, VnodeKind, getpages, read,
};

const P: u64 = PAGE_SIZE as u64;
const SYNC: GetFlags = GetFlags::SYNCIO;

fn fault(
    file: &Arc<MemFile>,
    offset: u64,
    count: usize,
    center: usize,
    access: Access,
    flags: GetFlags,
) -> genpager::Result<Fetched<'_, MemFile>> {
    getpages(file, fault_of(offset, count, center, access, flags))
}

fn read_fault(file: &Arc<MemFile>, offset: u64, count: usize) -> genpager::BusyPages<'_, MemFile> {
    fault(file, offset, count, 0, Access::Read, SYNC)
        .expect("fault")
        .into_busy()
        .expect("busy pages")
}

// ---- G1: the locked fast path -------------------------------------------------

#[test]
fn g01_locked_fast_path_returns_resident_pages_without_io() {
    let data = pattern(8 * PAGE_SIZE, 1);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    read_fault(&file, 0, 4).release();
    disk.clear_log();
    let pages = fault(&file, 0, 4, 1, Access::Read, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    assert!(pages.is_complete());
    assert_eq!(pages.bytes(2).unwrap(), &data[2 * PAGE_SIZE..3 * PAGE_SIZE]);
    drop(pages);
    assert!(disk.log().is_empty(), "the fast path never does I/O");
    assert!(!any_busy(&file), "the fast path busies nothing");
}

#[test]
fn g01_locked_fast_path_missing_center_is_ebusy_and_allocates_nothing() {
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(8 * PAGE_SIZE, 2));
    // Page 0 alone: no read-ahead brings its neighbours.
    let no_ahead = SYNC | GetFlags::NOREADAHEAD;
    drop(fault(&file, 0, 1, 0, Access::Read, no_ahead).unwrap());
    let result = fault(&file, 0, 4, 2, Access::Read, GetFlags::LOCKED);
    assert!(matches!(result, Err(Error::Busy)));
    assert_eq!(resident(&file), [0]);
    let result = fault(&file, 4 * P, 2, 0, Access::Read, GetFlags::LOCKED);
    assert!(
        matches!(result, Err(Error::Busy)),
        "nothing resident at all"
    );
    assert_eq!(disk.log().len(), 1);
}

#[test]
fn g01_locked_fast_path_skips_busy_pages_and_never_sleeps() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(8 * PAGE_SIZE, 3));
    read_fault(&file, 0, 4).release();
    let held = read_fault(&file, P, 1);
    let pages = fault(&file, 0, 4, 0, Access::Read, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    assert!(pages.bytes(0).is_some());
    assert!(
        pages.bytes(1).is_none(),
        "a busy page is left out, not waited for"
    );
    assert!(pages.bytes(3).is_some());
    drop(pages);
    assert!(matches!(
        fault(&file, P, 1, 0, Access::Read, GetFlags::LOCKED),
        Err(Error::Busy)
    ));
    held.release();
}

#[test]
fn g01_locked_fast_path_backs_off_while_a_truncation_holds_the_node_lock() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 4));
    read_fault(&file, 0, 4).release();
    let truncating = file.object().node_lock().write();
    assert!(matches!(
        fault(&file, 0, 4, 0, Access::Read, GetFlags::LOCKED),
        Err(Error::Busy)
    ));
    drop(truncating);
    assert!(fault(&file, 0, 4, 0, Access::Read, GetFlags::LOCKED).is_ok());
}

#[test]
fn g01_locked_write_fault_skips_read_only_pages_and_starts_dirty_tracking() {
    let mut data = pattern(4 * PAGE_SIZE, 5);
    data[PAGE_SIZE..2 * PAGE_SIZE].fill(0);
    let (_disk, file) = sparse_file(PAGE_SHIFT, &data, &[1]);
    read_fault(&file, 0, 4).release();
    assert!(page(&file, P).unwrap().0.contains(PageFlags::RDONLY));
    let mut pages = fault(&file, 0, 4, 0, Access::Write, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    assert!(
        pages.bytes(1).is_none(),
        "a hole page must fault again for write"
    );
    pages.bytes_mut(0).unwrap()[0] = 0xEE;
    drop(pages);
    assert_eq!(
        page(&file, 0).unwrap().1,
        DirtyStatus::Dirty,
        "written page is dirty"
    );
    assert_eq!(
        page(&file, 2 * P).unwrap().1,
        DirtyStatus::Unknown,
        "others start dirty tracking"
    );
    assert_eq!(page(&file, P).unwrap().1, DirtyStatus::Clean);
    assert_eq!(file.hooks().worklist_add, 1);
}

#[test]
fn g01_cached_reads_share_the_object_lock() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 6));
    read_fault(&file, 0, 4).release();
    let first = fault(&file, 0, 4, 0, Access::Read, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    // A second reader gets in while the first still holds its pages.
    let other = file.clone();
    let second = thread::spawn(move || {
        let pages = fault(&other, 0, 4, 0, Access::Read, GetFlags::LOCKED)
            .unwrap()
            .into_resident()
            .unwrap();
        pages.is_complete()
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(second.join().unwrap()).unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    drop(first);
}

// ---- G2: bounds and PASTEOF -----------------------------------------------------

#[test]
fn g02_bad_arguments_are_invalid_and_leave_nothing_behind() {
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(3 * PAGE_SIZE, 7));
    for (offset, count, center) in [
        (1, 1, 0),
        (0, 0, 0),
        (0, 2, 2),
        (3 * P, 1, 0),
        (2 * P, 2, 1),
    ] {
        for flags in [SYNC, GetFlags::empty(), GetFlags::LOCKED] {
            let result = fault(&file, offset, count, center, Access::Read, flags);
            assert!(
                matches!(result, Err(Error::Invalid)),
                "{offset} {count} {center} {flags:?}"
            );
        }
    }
    // A range past the largest file is too big, whichever way through.
    for (offset, count) in [(!(P - 1), 4), (genpager::MAX_FILE_SIZE, 1)] {
        for flags in [SYNC, GetFlags::empty(), GetFlags::LOCKED] {
            let result = fault(&file, offset, count, 0, Access::Read, flags);
            assert!(
                matches!(result, Err(Error::TooBig)),
                "{offset:#x} {flags:?}"
            );
        }
    }
    assert!(matches!(
        fault(&file, 0, 1, 0, Access::Read, SYNC | GetFlags::OVERWRITE),
        Err(Error::Invalid)
    ));
    assert!(resident(&file).is_empty());
    assert!(disk.log().is_empty());
}

#[test]
fn g02_request_straddling_eof_returns_only_pages_before_it() {
    let (_disk, file) = file_with(
        PAGE_SHIFT,
        Layout::Contiguous,
        &pattern(2 * PAGE_SIZE + 10, 8),
    );
    let pages = read_fault(&file, 0, 8);
    assert_eq!(pages.len(), 3, "pages past memory EOF are not made");
    drop(pages);
    assert_eq!(resident(&file), [0, P, 2 * P]);
}

#[test]
fn g02_pasteof_creates_zeroed_pages_past_eof() {
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(PAGE_SIZE, 9));
    let pages = fault(
        &file,
        2 * P,
        2,
        0,
        Access::Write,
        SYNC | GetFlags::PASTEOF | GetFlags::NOBLOCKALLOC,
    )
    .unwrap()
    .into_busy()
    .unwrap();
    assert_eq!(pages.len(), 2);
    assert!(pages.bytes(0).iter().all(|&b| b == 0));
    assert!(pages.bytes(1).iter().all(|&b| b == 0));
    drop(pages);
    assert!(disk.log().is_empty(), "nothing past disk EOF is read");
}

// ---- G3: timestamps ----------------------------------------------------------

#[test]
fn g03_faults_mark_access_and_modification_times() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 10));
    read_fault(&file, 0, 1).release();
    let hooks = file.hooks();
    assert_eq!(
        (hooks.mark_update_accessed, hooks.mark_update_modified),
        (1, 0)
    );
    fault(&file, 0, 1, 0, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap()
        .release();
    let hooks = file.hooks();
    assert_eq!(
        (hooks.mark_update_accessed, hooks.mark_update_modified),
        (2, 1)
    );
    fault(&file, 0, 1, 0, Access::Read, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap()
        .release();
    assert_eq!(
        file.hooks().mark_update_accessed,
        3,
        "the fast path marks too"
    );
}

#[test]
fn g03_mount_flags_and_notimestamp_suppress_updates() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 11));
    file.set_mount_flags(MountFlags::NO_ATIME);
    read_fault(&file, 0, 1).release();
    assert_eq!(file.hooks().mark_update_accessed, 0);
    fault(&file, 0, 1, 0, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap()
        .release();
    assert_eq!(
        file.hooks().mark_update_modified,
        1,
        "NO_ATIME still updates mtime"
    );
    file.set_mount_flags(MountFlags::empty());
    fault(&file, 0, 1, 0, Access::Write, SYNC | GetFlags::NOTIMESTAMP)
        .unwrap()
        .into_busy()
        .unwrap()
        .release();
    assert_eq!(file.hooks().mark_update_modified, 1);
    assert_eq!(file.hooks().mark_update_accessed, 0);
    file.set_kind(VnodeKind::BlockDevice);
    file.set_mount_flags(MountFlags::NO_DEV_MTIME);
    fault(&file, 0, 1, 0, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap()
        .release();
    assert_eq!(
        file.hooks().mark_update_modified,
        1,
        "block devices on NO_DEV_MTIME mounts"
    );
}

// ---- G4: dead vnode -------------------------------------------------------------

#[test]
fn g04_dead_vnode_fails_every_way_through() {
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 12));
    file.set_dead(true);
    for flags in [SYNC, GetFlags::empty(), GetFlags::LOCKED] {
        assert!(matches!(
            fault(&file, 0, 1, 0, Access::Read, flags),
            Err(Error::Dead)
        ));
    }
    assert!(resident(&file).is_empty());
    assert!(disk.log().is_empty());
    let hooks = file.hooks();
    assert_eq!(hooks.trans_begin, hooks.trans_end);
}

// ---- G5: truncation race ---------------------------------------------------------

#[test]
fn g05_file_shrinking_while_unlocked_makes_the_fault_start_over() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(8 * PAGE_SIZE, 13));
    // Play the truncating thread: hold the node lock while the fault computes its
    // bounds (8 pages: it wants pages 5, 6 and 7), shrink the file to 6.5 pages, then
    // let it go. Only a fault that starts over sees that page 7 is gone.
    let truncate = file.object().node_lock().write();
    let faulting = {
        let file = file.clone();
        thread::spawn(move || {
            let pages = fault(&file, 5 * P, 3, 0, Access::Read, SYNC)
                .unwrap()
                .into_busy()
                .unwrap();
            (0..pages.len())
                .map(|i| pages.offset(i))
                .collect::<Vec<_>>()
        })
    };
    while file.hooks().trans_begin == 0 {
        thread::yield_now();
    }
    thread::sleep(Duration::from_millis(50));
    file.object().lock().set_sizes(6 * P + 100, 6 * P + 100);
    drop(truncate);
    assert_eq!(
        faulting.join().unwrap(),
        [5 * P, 6 * P],
        "no page past the new EOF"
    );
    assert_eq!(
        file.hooks().mark_update_accessed,
        2,
        "the bounds were computed twice"
    );
    assert!(page(&file, 7 * P).is_none());
}

// ---- G6: async + busy → EBUSY ------------------------------------------------------

#[test]
fn g06_read_ahead_meeting_a_busy_page_fails_at_once() {
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(8 * PAGE_SIZE, 14));
    let held = read_fault(&file, 2 * P, 1);
    disk.clear_log();
    let result = fault(&file, 0, 4, 0, Access::Read, GetFlags::empty());
    assert!(matches!(result, Err(Error::Busy)));
    assert_eq!(
        resident(&file),
        [2 * P],
        "pages the read-ahead made are gone again"
    );
    assert!(disk.log().is_empty());
    held.release();
    assert!(!any_busy(&file));
}

#[test]
fn g06_read_ahead_out_of_memory_is_ebusy() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(8 * PAGE_SIZE, 15));
    file.object().lock().cache_mut().set_limit(2);
    assert!(matches!(
        fault(&file, 0, 4, 0, Access::Read, GetFlags::empty()),
        Err(Error::Busy | Error::NoMemory)
    ));
    assert!(resident(&file).is_empty());
    assert!(matches!(
        fault(&file, 0, 4, 0, Access::Read, SYNC),
        Err(Error::NoMemory)
    ));
    assert!(resident(&file).is_empty());
}

// ---- G7: overwrite -------------------------------------------------------------------

#[test]
fn g07_overwrite_reads_nothing_and_pages_start_dirty() {
    let (disk, file) = file_with(
        PAGE_SHIFT + 2,
        Layout::Contiguous,
        &pattern(8 * PAGE_SIZE, 16),
    );
    let mut pages = fault(&file, P, 2, 0, Access::Write, SYNC | GetFlags::OVERWRITE)
        .unwrap()
        .into_writable()
        .unwrap();
    assert_eq!(pages.len(), 2, "no widening to the four-page block");
    assert!(disk.log().is_empty(), "overwrite reads nothing");
    pages.bytes_mut(0).fill(0xAB);
    pages.bytes_mut(1).fill(0xCD);
    drop(pages);
    assert_eq!(resident(&file), [P, 2 * P]);
    for offset in [P, 2 * P] {
        let (flags, dirty, _) = page(&file, offset).unwrap();
        assert_eq!(dirty, DirtyStatus::Dirty);
        assert!(!flags.intersects(PageFlags::FAKE | PageFlags::BUSY));
    }
    let mut buf = vec![0u8; PAGE_SIZE];
    read(&file, P, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xAB));
}

#[test]
fn g07_overwrite_page_left_unwritten_is_not_kept_as_valid() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 17));
    fault(&file, 0, 1, 0, Access::Write, SYNC | GetFlags::OVERWRITE)
        .unwrap()
        .into_busy()
        .unwrap()
        .release();
    assert!(
        resident(&file).is_empty(),
        "a never-filled page must not survive as valid"
    );
}

#[test]
fn g07_overwrite_over_a_known_hole_is_invalid() {
    let (_disk, file) = sparse_file(PAGE_SHIFT, &pattern(4 * PAGE_SIZE, 38), &[1]);
    read_fault(&file, 0, 4).release();
    assert!(page(&file, P).unwrap().0.contains(PageFlags::RDONLY));
    let result = fault(&file, P, 1, 0, Access::Write, SYNC | GetFlags::OVERWRITE);
    assert!(
        matches!(result, Err(Error::Invalid)),
        "the caller did not allocate first"
    );
    assert!(!any_busy(&file));
    let (flags, dirty, _) = page(&file, P).unwrap();
    assert!(flags.contains(PageFlags::RDONLY));
    assert_eq!(dirty, DirtyStatus::Clean);
}

/// The overwrite fault's own allocations must not hide the evidence: at the cache's
/// limit, making room for the page below the known hole freed that clean, read-only
/// page, and the fault then handed out a fresh page over the hole (found by the model
/// test).
#[test]
fn g07_overwrite_over_a_known_hole_is_invalid_at_the_cache_limit() {
    let (_disk, file) = sparse_file(PAGE_SHIFT, &pattern(4 * PAGE_SIZE, 39), &[1]);
    // Reads leave the pages clean and inactive, the hole's first: the first the cache
    // frees at its limit.
    read(&file, P, &mut [0u8; PAGE_SIZE]).unwrap();
    read(&file, 3 * P, &mut [0u8; PAGE_SIZE]).unwrap();
    assert_eq!(resident(&file), [P, 3 * P]);
    let (flags, _, queue) = page(&file, P).unwrap();
    assert!(flags.contains(PageFlags::RDONLY));
    assert_eq!(queue, PageQueue::Inactive);
    {
        // Their second chances spent (as after a clock pass), and no room for more.
        let mut state = file.object().lock();
        state.cache_mut().clear_referenced(P);
        state.cache_mut().clear_referenced(3 * P);
        state.cache_mut().set_limit(2);
    }
    let result = fault(&file, 0, 2, 0, Access::Write, SYNC | GetFlags::OVERWRITE);
    assert!(
        matches!(result, Err(Error::Invalid)),
        "the caller did not allocate first: {:?}",
        result.map(|_| ())
    );
    assert!(!any_busy(&file));
    assert!(file.is_hole(1));
    let (flags, dirty, _) = page(&file, P).unwrap();
    assert!(flags.contains(PageFlags::RDONLY));
    assert_eq!(dirty, DirtyStatus::Clean);
}

// ---- G8: all resident → no I/O ----------------------------------------------------------

#[test]
fn g08_resident_pages_need_no_io() {
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(8 * PAGE_SIZE, 18));
    read_fault(&file, 0, 8).release();
    disk.clear_log();
    let pages = read_fault(&file, 2 * P, 4);
    assert_eq!(pages.len(), 4);
    drop(pages);
    fault(&file, 0, 8, 3, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap()
        .release();
    assert!(disk.log().is_empty());
}

#[test]
fn g08_hole_page_under_write_fault_still_needs_work() {
    let (disk, file) = sparse_file(PAGE_SHIFT, &pattern(4 * PAGE_SIZE, 19), &[2]);
    read_fault(&file, 0, 4).release();
    assert!(page(&file, 2 * P).unwrap().0.contains(PageFlags::RDONLY));
    disk.clear_log();
    let alloc_before = file.hooks().alloc_calls;
    fault(&file, 2 * P, 1, 0, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap()
        .release();
    assert_eq!(file.hooks().alloc_calls, alloc_before + 1);
    assert!(!file.is_hole(2));
    let (flags, dirty, _) = page(&file, 2 * P).unwrap();
    assert!(!flags.contains(PageFlags::RDONLY));
    assert_eq!(dirty, DirtyStatus::Dirty);
    assert!(
        disk.log().is_empty(),
        "the page was resident: only allocation, no read"
    );
}

// ---- G9: widening to whole filesystem blocks ---------------------------------------------

#[test]
fn g09_block_larger_than_page_reads_the_whole_block() {
    // Blocks of four and sixteen pages (16 and 64 KiB at 4 KiB pages), each read in one
    // request (the maximum transfer is raised to a block if smaller).
    for bshift in [PAGE_SHIFT + 2, PAGE_SHIFT + 4] {
        let bsize = 1usize << bshift;
        let data = pattern(4 * bsize, 20);
        let (disk, file) = file_with(bshift, Layout::Reversed, &data);
        file.set_max_transfer(TEST_MAX_TRANSFER.max(bsize));
        let pages = read_fault(&file, (bsize + PAGE_SIZE) as u64, 1);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages.offset(0), (bsize + PAGE_SIZE) as u64);
        assert_eq!(
            pages.bytes(0),
            &data[bsize + PAGE_SIZE..bsize + 2 * PAGE_SIZE]
        );
        let log = disk.log();
        assert_eq!(
            blocks_and_lens(&log),
            [(sector_of(&file, bsize as u64).unwrap(), bsize)],
            "{bshift}"
        );
        assert_eq!(log[0].direction, Direction::Read);
        drop(pages);
        let per_block = bsize / PAGE_SIZE;
        let expected: Vec<u64> = (per_block..2 * per_block)
            .map(|i| (i * PAGE_SIZE) as u64)
            .collect();
        assert_eq!(resident(&file), expected);
        assert!(!any_busy(&file));
    }
}

#[test]
fn g09_widened_read_skips_a_dirty_page_inside_the_block() {
    let data = pattern(8 * PAGE_SIZE, 21);
    let (disk, file) = file_with(PAGE_SHIFT + 2, Layout::Contiguous, &data);
    // Dirty page 2 of block 0 with new bytes.
    let mut pages = fault(
        &file,
        2 * P,
        1,
        0,
        Access::Write,
        SYNC | GetFlags::OVERWRITE,
    )
    .unwrap()
    .into_writable()
    .unwrap();
    pages.bytes_mut(0).fill(0x5A);
    drop(pages);
    disk.clear_log();
    // The fault's own widening, without read-ahead's windows.
    drop(fault(&file, 0, 1, 0, Access::Read, SYNC | GetFlags::NOREADAHEAD).unwrap());
    // Pages 0–1 and page 3 are read; page 2 keeps its dirty bytes.
    let base = sector_of(&file, 0).unwrap();
    assert_eq!(
        blocks_and_lens(&disk.log()),
        [(base, 2 * PAGE_SIZE), (base + 3 * P / 512, PAGE_SIZE)]
    );
    let mut buf = vec![0u8; 4 * PAGE_SIZE];
    read(&file, 0, &mut buf).unwrap();
    assert_eq!(&buf[..2 * PAGE_SIZE], &data[..2 * PAGE_SIZE]);
    assert!(buf[2 * PAGE_SIZE..3 * PAGE_SIZE].iter().all(|&b| b == 0x5A));
    assert_eq!(&buf[3 * PAGE_SIZE..], &data[3 * PAGE_SIZE..4 * PAGE_SIZE]);
    assert_eq!(page(&file, 2 * P).unwrap().1, DirtyStatus::Dirty);
}

#[test]
fn g09_widening_waits_for_a_busy_lower_page_in_ascending_order() {
    let data = pattern(4 * PAGE_SIZE, 22);
    let (_disk, file) = file_with(PAGE_SHIFT + 2, Layout::Contiguous, &data);
    let held = fault(&file, 0, 1, 0, Access::Write, SYNC | GetFlags::OVERWRITE)
        .unwrap()
        .into_writable()
        .unwrap();
    let faulting = {
        let file = file.clone();
        thread::spawn(move || {
            let pages = fault(&file, 3 * P, 1, 0, Access::Read, SYNC)
                .unwrap()
                .into_busy()
                .unwrap();
            pages.bytes(0).to_vec()
        })
    };
    thread::sleep(Duration::from_millis(30));
    assert!(
        !faulting.is_finished(),
        "the fault waits for page 0, which it needs to widen"
    );
    let mut held = held;
    held.bytes_mut(0).fill(1);
    drop(held);
    assert_eq!(faulting.join().unwrap(), &data[3 * PAGE_SIZE..]);
}

// ---- G10: one request per contiguous run ---------------------------------------------------

fn expected_runs(file: &MemFile, start: u64, end: u64, max: u64) -> Vec<(u64, usize)> {
    // The rig's bmap reports at most MAX_RUN more blocks, so no request is longer (only
    // shorter than the maximum transfer with small blocks and large transfers).
    let max = max.min((MAX_RUN + 1) << file.fs_bshift());
    let mut runs: Vec<(u64, usize)> = Vec::new();
    let mut at = start;
    while at < end {
        let bsize = 1u64 << file.fs_bshift();
        let step = (bsize - (at & (bsize - 1))).min(end - at);
        let sector = sector_of(file, at).expect("mapped");
        match runs.last_mut() {
            Some((first, len))
                if *first + (*len as u64 >> 9) == sector && (*len as u64) + step <= max =>
            {
                *len += step as usize
            }
            _ => runs.push((sector, step as usize)),
        }
        at += step;
    }
    runs
}

#[test]
fn g10_one_request_per_contiguous_run_for_every_block_size_and_layout() {
    for bshift in [9u32, 10, 12, 14, 16] {
        for layout in [
            Layout::Contiguous,
            Layout::Fragmented { run: 3 },
            Layout::Reversed,
        ] {
            // 200,000 bytes at 4 KiB pages; the fault's window ends well before EOF.
            let size = 48 * PAGE_SIZE + 3392;
            let data = pattern(size, bshift as u8);
            let (disk, file) = file_with(bshift, layout, &data);
            let bsize = 1u64 << bshift;
            let start = 5 * P;
            let count = 16;
            let pages = read_fault(&file, start, count);
            let wstart = start & !(bsize - 1);
            let wend = ((start + count as u64 * P + bsize - 1) & !(bsize - 1))
                .min((size as u64).div_ceil(P) * P);
            let log = disk.log();
            assert_eq!(
                blocks_and_lens(&log),
                expected_runs(
                    &file,
                    wstart,
                    wend.min(size as u64),
                    TEST_MAX_TRANSFER as u64
                ),
                "bshift {bshift} {layout:?}"
            );
            assert!(log.iter().all(|r| r.direction == Direction::Read && r.priority == Priority::TimeCritical));
            for i in 0..count {
                let at = start as usize + i * PAGE_SIZE;
                assert_eq!(
                    pages.bytes(i),
                    &data[at..at + PAGE_SIZE],
                    "bshift {bshift} {layout:?} page {i}"
                );
            }
        }
    }
}

#[test]
fn g10_whole_file_reads_back_through_every_geometry() {
    for bshift in [9u32, 10, 12, 14, 16] {
        for layout in [Layout::Contiguous, Layout::Fragmented { run: 8 }] {
            let data = pattern(300_001, 3 + bshift as u8);
            let (_disk, file) = file_with(bshift, layout, &data);
            let mut buf = vec![0u8; data.len() + 100];
            assert_eq!(read(&file, 0, &mut buf).unwrap(), data.len());
            assert!(buf[..data.len()] == data[..], "bshift {bshift} {layout:?}");
            assert!(!any_busy(&file));
        }
    }
}

#[test]
fn g10_reads_never_exceed_the_max_transfer() {
    let data = pattern(64 * PAGE_SIZE, 23);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    file.set_max_transfer(4 * PAGE_SIZE);
    let pages = read_fault(&file, 0, 32);
    drop(pages);
    let lens: Vec<usize> = disk.log().iter().map(|r| r.len).collect();
    assert_eq!(lens, [4 * PAGE_SIZE; 8]);
}

// ---- G11: zero past disk EOF ---------------------------------------------------------------

#[test]
fn g11_eof_mid_page_and_mid_block_is_zero_filled() {
    for bshift in [PAGE_SHIFT, PAGE_SHIFT + 2] {
        // EOF 1,904 bytes into the second page of the second four-page stretch (6,000
        // bytes past it at 4 KiB pages).
        let (four, tail) = (4 * PAGE_SIZE, PAGE_SIZE + 1904);
        let size = four + tail;
        let mut data = pattern(size, 24);
        let (disk, file) = file_with(bshift, Layout::Contiguous, &data);
        // Garbage on the disk past EOF must not show through.
        let after = sector_of(&file, four as u64).unwrap() * 512 + tail as u64;
        disk.write_raw(after, &vec![0xFF; 2 * PAGE_SIZE - tail]);
        let pages = read_fault(&file, four as u64 + P, 1);
        data.resize(four + 2 * PAGE_SIZE, 0);
        assert_eq!(
            pages.bytes(0),
            &data[four + PAGE_SIZE..four + 2 * PAGE_SIZE],
            "bshift {bshift}"
        );
        drop(pages);
        let read_bytes: usize = disk.log().iter().map(|r| r.len).sum();
        assert!(
            read_bytes <= tail.next_multiple_of(512) + four,
            "nothing past EOF is read"
        );
    }
}

// ---- G12: holes ---------------------------------------------------------------------------------

#[test]
fn g12_read_fault_on_hole_maps_page_read_only_and_reads_nothing_there() {
    let data = pattern(6 * PAGE_SIZE, 25);
    let (disk, file) = sparse_file(PAGE_SHIFT, &data, &[2, 3]);
    let pages = read_fault(&file, 0, 6);
    assert!(pages.bytes(2).iter().all(|&b| b == 0));
    assert!(pages.bytes(3).iter().all(|&b| b == 0));
    assert_eq!(pages.bytes(4), &data[4 * PAGE_SIZE..5 * PAGE_SIZE]);
    drop(pages);
    let base0 = sector_of(&file, 0).unwrap();
    let base4 = sector_of(&file, 4 * P).unwrap();
    assert_eq!(
        blocks_and_lens(&disk.log()),
        [(base0, 2 * PAGE_SIZE), (base4, 2 * PAGE_SIZE)],
        "a hole mid-cluster"
    );
    for i in 0..6 {
        let (flags, dirty, _) = page(&file, i * P).unwrap();
        assert_eq!(
            flags.contains(PageFlags::RDONLY),
            i == 2 || i == 3,
            "page {i}"
        );
        assert_eq!(dirty, DirtyStatus::Clean);
    }
}

#[test]
fn g12_write_fault_on_hole_allocates_then_page_is_dirty_and_writable() {
    let data = pattern(4 * PAGE_SIZE, 26);
    let (disk, file) = sparse_file(PAGE_SHIFT, &data, &[1]);
    let pages = fault(&file, P, 1, 0, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap();
    assert!(pages.bytes(0).iter().all(|&b| b == 0));
    drop(pages);
    assert_eq!(file.hooks().alloc_calls, 1);
    assert!(!file.is_hole(1));
    let (flags, dirty, _) = page(&file, P).unwrap();
    assert!(!flags.contains(PageFlags::RDONLY));
    assert_eq!(dirty, DirtyStatus::Dirty);
    assert!(disk.log().is_empty());
}

#[test]
fn g12_write_fault_on_hole_in_sub_page_block_filesystem() {
    // 512-byte blocks; block 3 (bytes 1536..2048 of page 0) is a hole.
    let data = pattern(2 * PAGE_SIZE, 27);
    let (disk, file) = sparse_file(9, &data, &[3]);
    let pages = fault(&file, 0, 1, 0, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap();
    assert_eq!(&pages.bytes(0)[..1536], &data[..1536]);
    assert!(pages.bytes(0)[1536..2048].iter().all(|&b| b == 0));
    assert_eq!(&pages.bytes(0)[2048..], &data[2048..PAGE_SIZE]);
    drop(pages);
    let s0 = sector_of(&file, 0).unwrap();
    let s4 = sector_of(&file, 2048).unwrap();
    assert_eq!(
        blocks_and_lens(&disk.log()),
        [(s0, 1536), (s4, PAGE_SIZE - 2048)]
    );
    assert!(!file.is_hole(3), "the hole was allocated");
    assert_eq!(page(&file, 0).unwrap().1, DirtyStatus::Dirty);
}

#[test]
fn g12_write_fault_on_hole_with_full_filesystem_is_enospc_and_frees_pages() {
    let data = pattern(4 * PAGE_SIZE, 28);
    let disk = MemDisk::new(4 * P / 512);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create_sparse(data.len() as u64, &data, &[1]).unwrap();
    assert_eq!(fs.free_blocks(), 1);
    let _filler = fs.create(&vec![1u8; PAGE_SIZE]).unwrap();
    let result = fault(&file, P, 1, 0, Access::Write, SYNC);
    assert!(matches!(result, Err(Error::NoSpace)));
    assert!(!any_busy(&file));
    assert!(page(&file, P).is_none(), "no never-valid page stays");
}

// ---- G13: bmap error ----------------------------------------------------------------------------

#[test]
fn g13_bmap_error_frees_the_pages_and_is_returned() {
    let (disk, file) = file_with(
        PAGE_SHIFT,
        Layout::Fragmented { run: 1 },
        &pattern(8 * PAGE_SIZE, 29),
    );
    file.fail_bmap(Some(2));
    // The fault's own pages (at 16 KiB pages read-ahead would start the next transfer's,
    // which stay).
    let result = fault(&file, 0, 4, 0, Access::Read, SYNC | GetFlags::NOREADAHEAD);
    assert!(matches!(result, Err(Error::Io)));
    assert!(resident(&file).is_empty());
    assert!(
        !disk.log().is_empty(),
        "blocks before the failure were read (then discarded)"
    );
    file.fail_bmap(None);
    assert_eq!(read_fault(&file, 0, 4).len(), 4);
}

// ---- G14: device error ---------------------------------------------------------------------------

#[test]
fn g14_device_error_on_second_of_three_requests_frees_every_page() {
    let data = pattern(6 * PAGE_SIZE, 30);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Fragmented { run: 2 }, &data);
    disk.fail_nth(2, Error::Io);
    // The fault's own requests (read-ahead would read these pages first, and its
    // failure is not the fault's: the fault reads again).
    let result = fault(&file, 0, 6, 0, Access::Read, SYNC | GetFlags::NOREADAHEAD);
    assert!(matches!(result, Err(Error::Io)));
    assert_eq!(disk.log().len(), 3);
    assert!(resident(&file).is_empty(), "no never-read data stays valid");
    assert!(!any_busy(&file));
    let pages = read_fault(&file, 0, 6);
    assert_eq!(pages.bytes(5), &data[5 * PAGE_SIZE..]);
}

#[test]
fn g14_device_error_keeps_previously_valid_pages() {
    let data = pattern(4 * PAGE_SIZE, 31);
    let (disk, file) = file_with(PAGE_SHIFT + 2, Layout::Contiguous, &data);
    read_fault(&file, 2 * P, 1).release();
    assert_eq!(
        resident(&file),
        (0..4).map(|i| i * P).collect::<Vec<_>>(),
        "the whole block was read"
    );
    disk.fail_nth(1, Error::Io);
    let mut state = file.object().lock();
    for i in [0, 1, 3] {
        state.cache_mut().free(i * P);
    }
    drop(state);
    assert!(matches!(
        fault(&file, 0, 1, 0, Access::Read, SYNC),
        Err(Error::Io)
    ));
    assert_eq!(
        resident(&file),
        [2 * P],
        "valid page 2 survives the failed widened read"
    );
}

// ---- G15: settle ------------------------------------------------------------------------------------

#[test]
fn g15_extra_pages_are_unbusied_and_queued_requested_ones_returned_busy() {
    let (_disk, file) = file_with(
        PAGE_SHIFT + 2,
        Layout::Contiguous,
        &pattern(4 * PAGE_SIZE, 32),
    );
    let pages = read_fault(&file, P, 2);
    for i in 0..4 {
        let (flags, _, queue) = page(&file, i * P).unwrap();
        let requested = i == 1 || i == 2;
        assert_eq!(flags.contains(PageFlags::BUSY), requested, "page {i}");
        assert!(!flags.contains(PageFlags::FAKE));
        if !requested {
            assert_eq!(queue, PageQueue::Active);
        }
    }
    drop(pages);
    assert!(!any_busy(&file));
    assert_eq!(file.object().read().cache().queue_len(PageQueue::Active), 4);
}

#[test]
fn g15_write_fault_starts_dirty_tracking_and_joins_the_work_list() {
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &pattern(4 * PAGE_SIZE, 33));
    let pages = fault(&file, 0, 2, 0, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap();
    assert_eq!(page(&file, 0).unwrap().1, DirtyStatus::Unknown);
    assert!(
        file.object()
            .read()
            .flags()
            .contains(genpager::ObjectFlags::ON_WORKLIST)
    );
    drop(pages);
    assert_eq!(file.hooks().worklist_add, 1);
    let hooks = file.hooks();
    assert_eq!(hooks.trans_begin, hooks.trans_end);
}

#[test]
fn g15_journal_is_entered_for_allocating_faults_only() {
    let (_disk, file) = sparse_file(PAGE_SHIFT, &pattern(4 * PAGE_SIZE, 34), &[1]);
    file.set_journal(true);
    read_fault(&file, 0, 1).release();
    assert_eq!(file.hooks().journal_begin, 0);
    fault(&file, P, 1, 0, Access::Write, SYNC)
        .unwrap()
        .into_busy()
        .unwrap()
        .release();
    let hooks = file.hooks();
    assert_eq!((hooks.journal_begin, hooks.journal_end), (1, 1));
    fault(
        &file,
        2 * P,
        1,
        0,
        Access::Write,
        SYNC | GetFlags::JOURNALLOCKED,
    )
    .unwrap()
    .into_busy()
    .unwrap()
    .release();
    assert_eq!(file.hooks().journal_begin, 1);
}

// ---- G16: asynchronous read-ahead ----------------------------------------------------------------------

#[test]
fn g16_read_ahead_returns_at_once_and_completion_settles_pages() {
    let data = pattern(8 * PAGE_SIZE, 35);
    let disk = MemDisk::threaded(8192, true);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Fragmented { run: 2 });
    let file = fs.create(&data).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    disk.hold();
    let started = fault(&file, 0, 8, 0, Access::Read, GetFlags::empty()).unwrap();
    assert!(matches!(started, Fetched::Started));
    assert_eq!(disk.pending(), 4, "one request per run, still in flight");
    assert!(
        resident(&file)
            .iter()
            .all(|&off| page(&file, off).unwrap().0.contains(PageFlags::BUSY))
    );
    assert!(
        disk.log()
            .iter()
            .all(|r| r.priority == Priority::TimeLimited)
    );
    disk.release();
    disk.quiesce();
    // The completion ran on the disk's thread; a sync fault now finds everything.
    while any_busy(&file) {
        thread::yield_now();
    }
    for i in 0..8u64 {
        let (flags, dirty, queue) = page(&file, i * P).unwrap();
        assert!(!flags.intersects(PageFlags::FAKE | PageFlags::BUSY));
        assert_eq!((dirty, queue), (DirtyStatus::Clean, PageQueue::Active));
    }
    let pages = fault(&file, 0, 8, 0, Access::Read, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    assert_eq!(pages.bytes(7).unwrap(), &data[7 * PAGE_SIZE..]);
}

#[test]
fn g16_failed_read_ahead_frees_its_pages() {
    let disk = MemDisk::threaded(8192, false);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create(&pattern(4 * PAGE_SIZE, 36)).unwrap();
    disk.fail_nth(1, Error::Io);
    assert!(matches!(
        fault(&file, 0, 4, 0, Access::Read, GetFlags::empty()),
        Ok(Fetched::Started)
    ));
    disk.quiesce();
    while !resident(&file).is_empty() {
        thread::yield_now();
    }
    assert_eq!(read_fault(&file, 0, 4).len(), 4);
}

#[test]
fn g16_a_sync_fault_waits_for_read_ahead_in_flight() {
    let data = pattern(4 * PAGE_SIZE, 37);
    let disk = MemDisk::threaded(8192, false);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create(&data).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    disk.hold();
    assert!(matches!(
        fault(&file, 0, 4, 0, Access::Read, GetFlags::empty()),
        Ok(Fetched::Started)
    ));
    let waiter = {
        let file = file.clone();
        thread::spawn(move || read_fault(&file, P, 1).bytes(0).to_vec())
    };
    thread::sleep(Duration::from_millis(30));
    assert!(!waiter.is_finished());
    disk.release();
    assert_eq!(waiter.join().unwrap(), &data[PAGE_SIZE..2 * PAGE_SIZE]);
    assert_eq!(disk.log().len(), 1, "the waiting fault did not read again");
}

// ---- outside the catalogue: page bytes and real MMUs -----------------------------------
//
// No slice over a page some mapping can store to: a fault write-protects what it hands
// out, and the shared fast path leaves out pages mapped writable.

/// Maps the resident page at `offset` as a user mapping would (the emulated MMU).
fn map_page(file: &MemFile, offset: u64, state: MapState) {
    file.object().lock().cache_mut().map(offset, state);
}

fn map_state(file: &MemFile, offset: u64) -> MapState {
    file.object().read().cache().map_state(offset)
}

#[test]
fn a_fault_write_protects_a_writable_mapped_page_before_handing_out_its_bytes() {
    let data = pattern(4 * PAGE_SIZE, 41);
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    for access in [Access::Read, Access::Write] {
        read_fault(&file, 0, 2).release();
        map_page(&file, 0, MapState::Writable);
        map_page(&file, P, MapState::Writable);
        let pages = fault(&file, 0, 1, 0, access, SYNC).unwrap();
        assert_eq!(
            map_state(&file, 0),
            MapState::ReadOnly,
            "{access:?}: handed out"
        );
        assert_eq!(
            map_state(&file, P),
            MapState::Writable,
            "{access:?}: a page not handed out keeps its mapping"
        );
        // While the handle lives, a store through the old mapping faults instead.
        let stored = file
            .object()
            .lock()
            .cache_mut()
            .write_through_mapping(0, 0, &[1]);
        assert_eq!(stored, Err(Error::Busy), "{access:?}");
        drop(pages);
    }
}

#[test]
fn the_shared_fast_path_leaves_out_pages_mapped_writable_and_the_exclusive_one_protects_them() {
    let data = pattern(4 * PAGE_SIZE, 42);
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    read_fault(&file, 0, 2).release();
    map_page(&file, P, MapState::Writable);
    {
        let pages = fault(&file, 0, 2, 0, Access::Read, GetFlags::LOCKED)
            .unwrap()
            .into_resident()
            .unwrap();
        assert!(pages.bytes(0).is_some());
        assert!(
            pages.bytes(1).is_none(),
            "a page another CPU may store to is not handed out under the shared lock"
        );
    }
    assert_eq!(map_state(&file, P), MapState::Writable);
    let mut pages = fault(&file, 0, 2, 0, Access::Write, GetFlags::LOCKED)
        .unwrap()
        .into_resident()
        .unwrap();
    assert!(pages.bytes_mut(1).is_some());
    drop(pages);
    assert_eq!(
        map_state(&file, P),
        MapState::ReadOnly,
        "the write fast path write-protects what it hands out"
    );
}
