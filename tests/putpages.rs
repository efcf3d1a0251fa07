//! Scenario tests for putpages, gop_write and do_io: one test per row P1–P16 and
//! W1–W7 of DESIGN.md §6 (some rows have several), over the MemDisk / MemFs rig.
//!
//! Pages are made resident and dirty directly through the page cache (as a fault or a
//! buffered write would leave them), so these tests depend on nothing but putpages.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use genpager::Fault;
use genpager::buf::IoRequest;
use genpager::cache::{DefaultCache, MapState};
use genpager::testing::{Direction, Layout, MemDisk, MemFile, MemFs, Priority};
use genpager::{
    DirtyStatus, Error, MountFlags, ObjectFlags, PAGE_SIZE, PageCache, PageFlags, PageQueue,
    PutError, PutFlags, Strategy, VmObject, Vnode, VnodeKind, putpages, putpages_busy,
};

const PG: u64 = PAGE_SIZE as u64;
const SYNC: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
const ASYNC: PutFlags = PutFlags::CLEANIT;

/// A disk of 1024 pages (4 MiB at 4 KiB pages), a filesystem of one-page blocks on it,
/// and a file of `pages` pages whose page `i` holds the byte `i` everywhere. Its maximum
/// transfer is [`RIG_MAX_TRANSFER`].
fn rig(pages: u64) -> (MemDisk, Arc<MemFile>) {
    rig_on(MemDisk::new(DISK_SECTORS), Layout::Contiguous, pages)
}

/// The rig's disk: 1024 pages of sectors.
const DISK_SECTORS: u64 = 1024 * PG / 512;

/// `log2` of the page size: the rig's blocks are one page each.
const PAGE_SHIFT: u32 = genpager::page::PAGE_SHIFT;

/// The rig's maximum transfer: 16 pages, the default 64 KiB at 4 KiB pages, so that a
/// cluster holds as many pages at every page size.
const RIG_MAX_TRANSFER: usize = 16 * PAGE_SIZE;

fn rig_on(disk: MemDisk, layout: Layout, pages: u64) -> (MemDisk, Arc<MemFile>) {
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, layout);
    let file = fs.create(&original(pages)).unwrap();
    file.set_max_transfer(RIG_MAX_TRANSFER);
    (disk, file)
}

fn original(pages: u64) -> Vec<u8> {
    (0..pages * PG).map(|at| (at / PG) as u8).collect()
}

/// Makes page `index` resident, valid and not busy, filled with `fill`, with dirty
/// status `status`; a non-clean page puts the vnode on the work list (as `note_dirty`
/// would).
fn resident(file: &MemFile, index: u64, fill: u8, status: DirtyStatus) {
    let offset = index * PG;
    let mut state = file.object().lock();
    let cache = state.cache_mut();
    if cache.lookup(offset).is_none() {
        cache.alloc(offset).unwrap();
    }
    let page = cache.lookup_mut(offset).unwrap();
    // SAFETY: the page is resident and either freshly allocated (busy, ours) or not
    // busy (tests never leave I/O running on pages they refill), and the object lock is
    // held exclusively, so no device, busy owner or mapping touches the frame; the frame
    // holds PAGE_SIZE bytes.
    unsafe { std::ptr::write_bytes(page.frame().as_ptr(), fill, PAGE_SIZE) };
    page.flags.remove(PageFlags::BUSY | PageFlags::FAKE);
    cache.set_dirty(offset, status);
    cache.set_queue(offset, PageQueue::Active);
    if status != DirtyStatus::Clean {
        state.set_flags(ObjectFlags::ON_WORKLIST, true);
    }
}

/// Pages `range` resident and dirty, page `i` filled with `0x80 + i`.
fn dirty(file: &MemFile, range: std::ops::Range<u64>) {
    for index in range {
        resident(file, index, fill_of(index), DirtyStatus::Dirty);
    }
}

fn fill_of(index: u64) -> u8 {
    0x80u8.wrapping_add(index as u8)
}

/// Pages `range` resident and clean, holding what the disk holds.
fn clean(file: &MemFile, range: std::ops::Range<u64>) {
    for index in range {
        resident(file, index, index as u8, DirtyStatus::Clean);
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Seen {
    flags: PageFlags,
    dirty: DirtyStatus,
    writeback: bool,
    queue: PageQueue,
}

fn page(file: &MemFile, index: u64) -> Option<Seen> {
    let state = file.object().read();
    state.cache().lookup(index * PG).map(|page| Seen {
        flags: page.flags,
        dirty: page.dirty(),
        writeback: page.in_writeback(),
        queue: page.queue(),
    })
}

fn status(file: &MemFile, index: u64) -> DirtyStatus {
    page(file, index).expect("page resident").dirty
}

fn set_page_flags(file: &MemFile, index: u64, flags: PageFlags, on: bool) {
    let mut state = file.object().lock();
    let page = state.cache_mut().lookup_mut(index * PG).unwrap();
    page.flags.set(flags, on);
}

fn with_cache<R>(file: &MemFile, f: impl FnOnce(&mut DefaultCache) -> R) -> R {
    f(file.object().lock().cache_mut())
}

fn object_flags(file: &MemFile) -> ObjectFlags {
    file.object().read().flags()
}

/// The first sector of the block holding page `index` (blocks of one page).
fn sector(file: &MemFile, index: u64) -> u64 {
    file.block_table()[index as usize].expect("mapped block")
}

/// Writes the disk saw: (first sector, length).
fn writes(disk: &MemDisk) -> Vec<(u64, usize)> {
    disk.log()
        .iter()
        .filter(|r| r.direction == Direction::Write)
        .map(|r| (r.block, r.len))
        .collect()
}

/// What the file should hold on disk: the original bytes, with page `i` of `written`
/// holding `fill_of(i)`.
fn expected(pages: u64, written: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut bytes = original(pages);
    for index in written {
        let at = (index * PG) as usize;
        bytes[at..at + PAGE_SIZE].fill(fill_of(index));
    }
    bytes
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting for {what}");
}

// ---- outside the catalogue: caller errors, refused before P1 ------------------------

#[test]
fn caller_errors_are_invalid() {
    let (disk, file) = rig(4);
    dirty(&file, 0..1);
    assert_eq!(putpages(&file, 100, 0, SYNC), Err(Error::Invalid));
    assert_eq!(putpages(&file, 0, 4097, SYNC), Err(Error::Invalid));
    assert_eq!(putpages(&file, 2 * PG, PG, SYNC), Err(Error::Invalid));
    assert_eq!(putpages(&file, 0, 0, PutFlags::SYNCIO), Err(Error::Invalid));
    assert_eq!(
        putpages(&file, 0, 0, PutFlags::SYNCIO | PutFlags::LAZY),
        Err(Error::Invalid)
    );
    assert_eq!(
        putpages(&file, PG, PG, SYNC),
        Ok(()),
        "an empty range does nothing"
    );
    assert!(disk.log().is_empty());
    assert_eq!(status(&file, 0), DirtyStatus::Dirty);
    assert_eq!(Error::from(PutError::from(Error::Io)), Error::Io);
}

// ---- P1 quick exit ----------------------------------------------------------------

#[test]
fn p01_nothing_to_do_exits_early_and_leaves_the_work_list() {
    let (disk, file) = rig(4);
    file.object().lock().set_flags(
        ObjectFlags::ON_WORKLIST | ObjectFlags::WRITE_MAPPED_DIRTY,
        true,
    );
    putpages(&file, 0, 0, SYNC).unwrap();
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
    assert!(!object_flags(&file).contains(ObjectFlags::WRITE_MAPPED_DIRTY));
    assert_eq!(file.hooks().worklist_remove, 1);
    assert_eq!(file.hooks().trans_begin, 0, "no transaction for nothing");

    // Clean resident pages: still nothing to clean.
    clean(&file, 0..4);
    putpages(&file, 0, 0, SYNC).unwrap();
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert!(disk.log().is_empty());
    assert_eq!(file.hooks().trans_begin, 0);
    assert_eq!(file.object().read().cache().resident_pages(), 4);
}

// ---- P2 transaction ---------------------------------------------------------------

#[test]
fn p02_transaction_and_journal_around_the_flush() {
    let (disk, file) = rig(4);
    file.set_journal(true);
    dirty(&file, 0..1);
    putpages(&file, 0, 0, SYNC).unwrap();
    let hooks = file.hooks();
    assert_eq!((hooks.trans_begin, hooks.trans_end), (1, 1));
    assert_eq!((hooks.journal_begin, hooks.journal_end), (1, 1));

    // The caller holds the journal: no journal transaction of our own.
    dirty(&file, 1..2);
    putpages(&file, 0, 0, SYNC | PutFlags::JOURNALLOCKED).unwrap();
    let hooks = file.hooks();
    assert_eq!((hooks.trans_begin, hooks.trans_end), (2, 2));
    assert_eq!((hooks.journal_begin, hooks.journal_end), (1, 1));
    assert_eq!(writes(&disk).len(), 2);

    // Freeing without cleaning takes no transaction.
    putpages(&file, 0, 0, PutFlags::FREE).unwrap();
    assert_eq!(file.hooks().trans_begin, 2);
}

#[test]
fn p02_page_daemon_never_sleeps_on_the_transaction() {
    let (disk, file) = rig(4);
    dirty(&file, 0..2);
    file.set_pagedaemon(true);
    file.set_trans_busy(true);
    assert_eq!(putpages(&file, 0, 0, ASYNC), Err(Error::Busy));
    assert!(disk.log().is_empty());
    assert_eq!(status(&file, 0), DirtyStatus::Dirty);
    assert_eq!(page(&file, 0).unwrap().flags, PageFlags::empty());
    assert_eq!(file.hooks().trans_end, 0);

    file.set_trans_busy(false);
    putpages(&file, 0, 0, ASYNC | PutFlags::FREE).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 0), 2 * PAGE_SIZE)]);
    assert_eq!(
        file.object().read().cache().resident_pages(),
        0,
        "paged out"
    );
    assert_eq!(file.disk_contents(), expected(4, 0..2));
    assert_eq!((file.hooks().trans_begin, file.hooks().trans_end), (1, 1));
}

// ---- P3 ranges --------------------------------------------------------------------

#[test]
fn p03_whole_object_and_partial_ranges() {
    let (disk, file) = rig(12);
    dirty(&file, 0..1);
    dirty(&file, 5..6);
    dirty(&file, 10..11);
    // A range covering only page 5.
    putpages(&file, 5 * PG, 6 * PG, SYNC).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 5), PAGE_SIZE)]);
    assert_eq!(status(&file, 0), DirtyStatus::Dirty);
    assert_eq!(status(&file, 10), DirtyStatus::Dirty);

    // ALLPAGES ignores the end of the range.
    disk.clear_log();
    putpages(&file, 0, PG, SYNC | PutFlags::ALLPAGES).unwrap();
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 0), PAGE_SIZE),
            (sector(&file, 10), PAGE_SIZE)
        ]
    );
    assert_eq!(file.disk_contents(), expected(12, [0, 5, 10]));

    // end == 0: to the end of the object.
    dirty(&file, 11..12);
    disk.clear_log();
    putpages(&file, 8 * PG, 0, SYNC).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 11), PAGE_SIZE)]);
}

#[test]
fn p03_cluster_reaches_outside_the_range() {
    let (disk, file) = rig(12);
    dirty(&file, 3..8);
    putpages(&file, 5 * PG, 6 * PG, SYNC).unwrap();
    // Backward to 3, forward to 7, as the reference clusters.
    assert_eq!(writes(&disk), [(sector(&file, 3), 5 * PAGE_SIZE)]);
    assert_eq!(file.disk_contents(), expected(12, 3..8));
}

// ---- P4 skip the scan -------------------------------------------------------------

#[test]
fn p04_vnode_off_the_work_list_is_not_scanned() {
    let (disk, file) = rig(4);
    dirty(&file, 1..2);
    file.object()
        .lock()
        .set_flags(ObjectFlags::ON_WORKLIST, false);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert!(disk.log().is_empty(), "known clean: no scan, no write");
    assert_eq!(status(&file, 1), DirtyStatus::Dirty);

    // Freeing still visits every page, but does not clean.
    putpages(&file, 0, 0, SYNC | PutFlags::FREE).unwrap();
    assert!(disk.log().is_empty());
    assert_eq!(file.object().read().cache().resident_pages(), 0);
}

// ---- P5 dirty-only scans ----------------------------------------------------------

#[test]
fn p05_cleaning_visits_only_tagged_pages() {
    let (disk, file) = rig(1000);
    clean(&file, 0..1000);
    dirty(&file, 700..701);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 700), PAGE_SIZE)]);
    assert_eq!(
        file.hooks().preempt,
        0,
        "a thousand clean pages were never visited"
    );
}

// ---- P6 preemption ----------------------------------------------------------------

#[test]
fn p06_long_scans_offer_the_cpu() {
    let (disk, file) = rig(200);
    clean(&file, 0..200);
    putpages(&file, 0, 0, PutFlags::DEACTIVATE).unwrap();
    assert_eq!(file.hooks().preempt, 3, "once every 64 pages");
    let inactive = with_cache(&file, |cache| cache.queue_offsets(PageQueue::Inactive));
    assert_eq!(inactive, (0..200).map(|i| i * PG).collect::<Vec<_>>());
    assert!(disk.log().is_empty());
}

// ---- P7 busy pages ----------------------------------------------------------------

#[test]
fn p07_busyfail_reports_the_busy_page() {
    let (disk, file) = rig(4);
    clean(&file, 0..4);
    set_page_flags(&file, 2, PageFlags::BUSY | PageFlags::RELEASED, true);
    let err = putpages_busy(&file, 0, 0, PutFlags::FREE | PutFlags::BUSYFAIL).unwrap_err();
    assert_eq!(
        err,
        PutError {
            error: Error::Deadlock,
            busy_page: Some(2 * PG)
        }
    );
    assert_eq!(
        putpages(&file, 0, 0, PutFlags::FREE | PutFlags::BUSYFAIL),
        Err(Error::Deadlock)
    );
    assert_eq!(Error::Deadlock.errno(), err.error.errno());
    // Pages before the busy one were freed; the busy one and those after stay.
    assert!(page(&file, 0).is_none() && page(&file, 1).is_none());
    assert!(page(&file, 2).is_some() && page(&file, 3).is_some());
    assert!(disk.log().is_empty());
}

#[test]
fn p07_synchronous_flush_skips_clean_busy_pages_cluster_stops_there() {
    let (disk, file) = rig(8);
    dirty(&file, 0..3);
    clean(&file, 3..4);
    dirty(&file, 4..7);
    set_page_flags(&file, 3, PageFlags::BUSY, true);
    // Not RELEASED: BUSYFAIL does not apply; a clean busy page holds nothing to write,
    // and a synchronous flush skips it.
    putpages(&file, 0, 0, SYNC | PutFlags::BUSYFAIL).unwrap();
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 0), 3 * PAGE_SIZE),
            (sector(&file, 4), 3 * PAGE_SIZE)
        ]
    );
    let busy = page(&file, 3).unwrap();
    assert_eq!(busy.flags, PageFlags::BUSY);
    assert_eq!(busy.dirty, DirtyStatus::Clean);
}

/// Departure from the reference, which skips every busy page: a dirty page another
/// thread holds busy (here a read fault's caller) holds data the flush must write, so
/// a synchronous clean waits for it instead of returning `Ok` without it.
#[test]
fn p07_synchronous_flush_waits_for_a_dirty_page_busy_elsewhere() {
    let (disk, file) = rig(8);
    dirty(&file, 0..7);
    let held = genpager::getpages(
        &file,
        Fault {
            offset: 3 * PG,
            count: 1,
            center: 0,
            access: genpager::Access::Read,
            advice: genpager::Advice::Normal,
            flags: genpager::GetFlags::SYNCIO,
        },
    )
    .unwrap()
    .into_busy()
    .unwrap();
    let flush = {
        let file = file.clone();
        thread::spawn(move || putpages(&file, 0, 0, SYNC))
    };
    thread::sleep(Duration::from_millis(50));
    assert!(
        !flush.is_finished(),
        "the flush waits for the dirty busy page"
    );
    drop(held);
    flush.join().unwrap().unwrap();
    assert_eq!(status(&file, 3), DirtyStatus::Clean);
    let written: usize = writes(&disk).iter().map(|&(_, len)| len).sum();
    assert_eq!(written, 7 * PAGE_SIZE, "every dirty page written once");
    assert_eq!(file.disk_contents(), expected(8, 0..7));
}

#[test]
fn p07_page_daemon_stops_at_a_busy_page() {
    let (disk, file) = rig(4);
    dirty(&file, 0..4);
    set_page_flags(&file, 1, PageFlags::BUSY, true);
    file.set_pagedaemon(true);
    // The scan writes page 0, then meets busy page 1 and stops.
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 0), PAGE_SIZE)]);
    assert_eq!(status(&file, 2), DirtyStatus::Dirty);
    assert_eq!(status(&file, 3), DirtyStatus::Dirty);
}

#[test]
fn p07_asynchronous_flush_waits_for_a_busy_page() {
    let (disk, file) = rig(4);
    dirty(&file, 0..2);
    disk.hold();
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(disk.pending(), 1);
    assert!(page(&file, 0).unwrap().flags.contains(PageFlags::BUSY));

    let waiter = {
        let file = file.clone();
        thread::spawn(move || putpages(&file, 0, 0, PutFlags::FREE))
    };
    thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "the free waits for the busy pages");
    disk.release();
    waiter.join().unwrap().unwrap();
    assert_eq!(file.object().read().cache().resident_pages(), 0);
    assert_eq!(file.disk_contents(), expected(4, 0..2));
}

// ---- P8 / P9 mappings and the modified bit ----------------------------------------

#[test]
fn p08_cleaning_write_protects_and_free_unmaps() {
    let (disk, file) = rig(4);
    dirty(&file, 0..2);
    with_cache(&file, |cache| {
        cache.map(0, MapState::Writable);
        cache.map(PG, MapState::Writable);
    });
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 0), 2 * PAGE_SIZE)]);
    with_cache(&file, |cache| {
        // Every page written was write-protected first and is clean now (genpager
        // protects each page of a cluster, where the reference protects only the
        // first and leaves the rest "unknown").
        for offset in [0, PG] {
            assert_eq!(cache.map_state(offset), MapState::ReadOnly);
            assert_eq!(cache.lookup(offset).unwrap().dirty(), DirtyStatus::Clean);
            assert!(!cache.is_modified(offset));
            // A store through the read-only mapping faults.
            assert_eq!(
                cache.write_through_mapping(offset, 0, b"x"),
                Err(Error::Busy)
            );
        }
    });
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));

    // FREE removes mappings, of busy pages too (they are freed at completion).
    dirty(&file, 2..3);
    with_cache(&file, |cache| cache.map(2 * PG, MapState::Writable));
    disk.hold();
    putpages(&file, 2 * PG, 3 * PG, ASYNC | PutFlags::FREE).unwrap();
    let held = page(&file, 2).unwrap();
    assert!(held.flags.contains(PageFlags::BUSY | PageFlags::RELEASED));
    assert_eq!(
        with_cache(&file, |cache| cache.map_state(2 * PG)),
        MapState::Unmapped
    );
    disk.release();
    assert!(page(&file, 2).is_none());
}

#[test]
fn p08_wired_pages_are_not_protected_and_keep_the_vnode_listed() {
    let (_disk, file) = rig(4);
    dirty(&file, 0..1);
    with_cache(&file, |cache| {
        cache.map(0, MapState::Writable);
        cache.lookup_mut(0).unwrap().wire_count = 1;
    });
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(
        with_cache(&file, |cache| cache.map_state(0)),
        MapState::Writable
    );
    assert_eq!(status(&file, 0), DirtyStatus::Unknown);
    assert!(object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
}

#[test]
fn p09_unknown_pages_are_written_only_when_modified() {
    let (disk, file) = rig(4);
    // Two pages a write fault left "unknown": mapped writable, possibly stored to.
    resident(&file, 0, fill_of(0), DirtyStatus::Unknown);
    resident(&file, 1, fill_of(1), DirtyStatus::Unknown);
    with_cache(&file, |cache| {
        cache.map(0, MapState::Writable);
        cache.map(PG, MapState::Writable);
    });
    // A store through the mapping into page 1 only: the MMU sets its modified bit.
    with_cache(&file, |cache| cache.write_through_mapping(PG, 7, b"late")).unwrap();
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(
        writes(&disk),
        [(sector(&file, 1), PAGE_SIZE)],
        "only the modified page"
    );
    let mut want = original(4);
    want[PAGE_SIZE..2 * PAGE_SIZE].fill(fill_of(1));
    want[PAGE_SIZE + 7..PAGE_SIZE + 11].copy_from_slice(b"late");
    assert_eq!(file.disk_contents(), want);
    assert_eq!(
        status(&file, 0),
        DirtyStatus::Clean,
        "unmodified: clean without a write"
    );
    assert_eq!(status(&file, 1), DirtyStatus::Clean);
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
}

// ---- P10 clusters -----------------------------------------------------------------

#[test]
fn p10_clusters_are_bounded_by_the_maximum_transfer() {
    let (disk, file) = rig(24);
    dirty(&file, 0..20);
    putpages(&file, 0, 0, SYNC).unwrap();
    // The rig's 16 pages, then 4.
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 0), 16 * PAGE_SIZE),
            (sector(&file, 16), 4 * PAGE_SIZE)
        ]
    );
    assert_eq!(file.disk_contents(), expected(24, 0..20));

    let (disk, file) = rig(8);
    file.set_max_transfer(2 * PAGE_SIZE);
    dirty(&file, 0..5);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 0), 2 * PAGE_SIZE),
            (sector(&file, 2), 2 * PAGE_SIZE),
            (sector(&file, 4), PAGE_SIZE)
        ]
    );
}

#[test]
fn p10_backward_growth_is_half_the_maximum_transfer() {
    let (disk, file) = rig(10);
    file.set_max_transfer(4 * PAGE_SIZE);
    dirty(&file, 0..9);
    putpages(&file, 6 * PG, 0, SYNC).unwrap();
    // Two pages back, the seed, one ahead; then what is left after the cluster.
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 4), 4 * PAGE_SIZE),
            (sector(&file, 8), PAGE_SIZE)
        ]
    );
    assert_eq!(status(&file, 3), DirtyStatus::Dirty);
}

#[test]
fn p10_clusters_are_bounded_by_putrange() {
    let (disk, file) = rig(12);
    file.set_putrange_granularity(Some(4 * PG));
    dirty(&file, 1..10);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 1), 3 * PAGE_SIZE),
            (sector(&file, 4), 4 * PAGE_SIZE),
            (sector(&file, 8), 2 * PAGE_SIZE)
        ]
    );
    // Backward growth stops at the putrange start too.
    dirty(&file, 4..8);
    disk.clear_log();
    putpages(&file, 6 * PG, 0, SYNC).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 4), 4 * PAGE_SIZE)]);
}

#[test]
fn p10_dirty_page_among_clean_ones_and_clusters_stop_at_clean_pages() {
    let (disk, file) = rig(10);
    clean(&file, 0..10);
    dirty(&file, 5..6);
    dirty(&file, 7..9);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 5), PAGE_SIZE),
            (sector(&file, 7), 2 * PAGE_SIZE)
        ]
    );
    for index in [0, 4, 6, 9] {
        assert_eq!(status(&file, index), DirtyStatus::Clean);
    }
    assert_eq!(file.disk_contents(), expected(10, [5, 7, 8]));
}

// ---- P11 writeback tag, DEACTIVATE, FREE ------------------------------------------

#[test]
fn p11_pages_in_flight_carry_the_writeback_tag() {
    let (disk, file) = rig(4);
    dirty(&file, 0..3);
    disk.hold();
    putpages(&file, 0, 0, ASYNC).unwrap();
    for index in 0..3 {
        let seen = page(&file, index).unwrap();
        assert!(seen.writeback && seen.flags.contains(PageFlags::BUSY));
    }
    assert_eq!(
        with_cache(&file, |cache| cache
            .next_tagged(genpager::Tag::Writeback, 0)),
        Some(0)
    );
    disk.release();
    for index in 0..3 {
        let seen = page(&file, index).unwrap();
        assert!(!seen.writeback);
        assert_eq!(seen.flags, PageFlags::empty());
    }
    assert!(!with_cache(&file, |cache| cache.any_tagged(genpager::Tag::Writeback)));
}

#[test]
fn p11_deactivate_cleans_and_moves_pages_to_the_inactive_queue() {
    let (disk, file) = rig(6);
    clean(&file, 0..6);
    dirty(&file, 2..4);
    with_cache(&file, |cache| {
        cache.lookup_mut(5 * PG).unwrap().wire_count = 1
    });
    putpages(&file, PG, 0, SYNC | PutFlags::DEACTIVATE).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 2), 2 * PAGE_SIZE)]);
    let inactive = with_cache(&file, |cache| cache.queue_offsets(PageQueue::Inactive));
    assert_eq!(
        inactive,
        [PG, 2 * PG, 3 * PG, 4 * PG],
        "not page 0 (outside), not the wired page 5"
    );
    assert_eq!(file.object().read().cache().resident_pages(), 6);
}

#[test]
fn p11_free_frees_clean_pages_now_and_written_pages_at_completion() {
    let (disk, file) = rig(6);
    clean(&file, 0..6);
    dirty(&file, 2..4);
    disk.hold();
    putpages(&file, 0, 0, ASYNC | PutFlags::FREE).unwrap();
    // Clean pages are gone; the pages being written wait for their completion.
    assert_eq!(file.object().read().cache().resident_pages(), 2);
    for index in 2..4 {
        assert!(
            page(&file, index)
                .unwrap()
                .flags
                .contains(PageFlags::BUSY | PageFlags::RELEASED)
        );
    }
    assert!(
        object_flags(&file).contains(ObjectFlags::ON_WORKLIST),
        "writes in flight keep the vnode listed"
    );
    disk.release();
    assert_eq!(file.object().read().cache().resident_pages(), 0);
    assert_eq!(file.disk_contents(), expected(6, 2..4));
    // The next flush finds nothing at all and takes the vnode off the list.
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
}

// ---- P12 writes without the object lock; errors stop the scan ---------------------

#[test]
fn p12_a_failed_synchronous_write_stops_the_scan() {
    let (disk, file) = rig(8);
    dirty(&file, 0..1);
    dirty(&file, 5..6);
    disk.fail_nth(1, Error::Io);
    // The inline device completes inside submit; the completion takes the object
    // lock, so this returning at all shows the write ran without it.
    assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io));
    assert_eq!(writes(&disk).len(), 1, "the scan stopped at the error");
    assert_eq!(status(&file, 0), DirtyStatus::Dirty);
    assert_eq!(status(&file, 5), DirtyStatus::Dirty);
    assert_eq!(
        file.object().read().pending_write_error(),
        None,
        "reported already"
    );
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(file.disk_contents(), expected(8, [0, 5]));
}

// ---- P13 mtime for write-mapped files ---------------------------------------------

#[test]
fn p13_write_mapped_dirty_files_get_their_mtime_marked() {
    let (_disk, file) = rig(4);
    dirty(&file, 0..1);
    file.object().lock().set_flags(
        ObjectFlags::WRITE_MAPPED | ObjectFlags::WRITE_MAPPED_DIRTY,
        true,
    );
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(file.hooks().mark_update_modified, 1);
    assert!(!object_flags(&file).contains(ObjectFlags::WRITE_MAPPED_DIRTY));
    assert!(object_flags(&file).contains(ObjectFlags::WRITE_MAPPED));

    // Not dirtied through the mapping: no update.
    dirty(&file, 1..2);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(file.hooks().mark_update_modified, 1);

    // Block devices on a NO_DEV_MTIME mount: no update.
    file.set_kind(VnodeKind::BlockDevice);
    file.set_mount_flags(MountFlags::NO_DEV_MTIME);
    dirty(&file, 2..3);
    file.object()
        .lock()
        .set_flags(ObjectFlags::WRITE_MAPPED_DIRTY, true);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(file.hooks().mark_update_modified, 1);
}

// ---- P14 leave the work list ------------------------------------------------------

#[test]
fn p14_the_work_list_is_left_when_the_last_dirty_page_is_cleaned() {
    let (_disk, file) = rig(4);
    dirty(&file, 2..3);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
    assert_eq!(file.hooks().worklist_remove, 1);

    // A cluster of three: one synchronous flush leaves every page clean and the
    // vnode off the list (the reference needs a second flush for the neighbours).
    dirty(&file, 0..3);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
    assert_eq!(file.hooks().worklist_remove, 2);
    assert!((0..3).all(|i| status(&file, i) == DirtyStatus::Clean));
}

#[test]
fn p14_no_leaving_while_writes_are_in_flight() {
    let (disk, file) = rig(4);
    dirty(&file, 0..1);
    disk.hold();
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert!(object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
    disk.release();
    // The next flush finds nothing dirty and nothing in flight.
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
}

// ---- P15 SYNCIO waits for writes in flight ----------------------------------------

#[test]
fn p15_synchronous_flush_waits_for_another_threads_writeback() {
    let (disk, file) = rig_on(
        MemDisk::threaded(DISK_SECTORS, false),
        Layout::Contiguous,
        8,
    );
    dirty(&file, 0..4);
    disk.hold();
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(file.object().read().writes_in_flight(), 1);

    let fsync = {
        let file = file.clone();
        thread::spawn(move || putpages(&file, 0, 0, SYNC))
    };
    thread::sleep(Duration::from_millis(50));
    assert!(!fsync.is_finished(), "fsync waits for the write in flight");
    disk.release();
    fsync.join().unwrap().unwrap();
    assert_eq!(file.object().read().writes_in_flight(), 0);
    assert_eq!(writes(&disk).len(), 1, "nothing written twice");
    assert_eq!(file.disk_contents(), expected(8, 0..4));
    disk.quiesce();
}

#[test]
fn p15_synchronous_flush_reports_another_threads_failed_write() {
    let (disk, file) = rig_on(
        MemDisk::threaded(DISK_SECTORS, false),
        Layout::Contiguous,
        4,
    );
    dirty(&file, 0..1);
    disk.hold();
    disk.fail_nth(1, Error::Io);
    putpages(&file, 0, 0, ASYNC).unwrap();
    let fsync = {
        let file = file.clone();
        thread::spawn(move || putpages(&file, 0, 0, SYNC))
    };
    thread::sleep(Duration::from_millis(20));
    disk.release();
    assert_eq!(fsync.join().unwrap(), Err(Error::Io));
    assert_eq!(status(&file, 0), DirtyStatus::Dirty);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(file.disk_contents(), expected(4, [0]));
}

// ---- P16 RECLAIM ------------------------------------------------------------------

#[test]
fn p16_reclaim_repeats_until_clean() {
    let (disk, file) = rig_on(
        MemDisk::threaded(DISK_SECTORS, false),
        Layout::Contiguous,
        40,
    );
    clean(&file, 0..40);
    dirty(&file, 3..30);
    let reclaim = PutFlags::CLEANIT | PutFlags::FREE | PutFlags::ALLPAGES | PutFlags::RECLAIM;
    putpages(&file, 0, 0, reclaim).unwrap();
    assert_eq!(file.object().read().cache().resident_pages(), 0);
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
    disk.quiesce();
    assert_eq!(file.disk_contents(), expected(40, 3..30));
}

#[test]
fn p16_reclaim_against_a_failing_device_ends_with_the_error() {
    let (disk, file) = rig(8);
    dirty(&file, 0..4);
    disk.fail_blocks(0..u64::MAX, Error::Io);
    let reclaim = PutFlags::CLEANIT | PutFlags::FREE | PutFlags::ALLPAGES | PutFlags::RECLAIM;
    assert_eq!(putpages(&file, 0, 0, reclaim), Err(Error::Io));
    for index in 0..4 {
        let seen = page(&file, index).unwrap();
        assert_eq!(seen.dirty, DirtyStatus::Dirty);
        assert_eq!(seen.flags, PageFlags::empty(), "not busy, not released");
    }
    disk.clear_faults();
    putpages(&file, 0, 0, reclaim).unwrap();
    assert_eq!(file.object().read().cache().resident_pages(), 0);
    assert_eq!(file.disk_contents(), expected(8, 0..4));
}

#[test]
fn p16_reclaim_stops_when_no_pass_can_make_progress() {
    let (disk, file) = rig(4);
    dirty(&file, 0..1);
    // A wired page cannot be write-protected, so it stays "unknown" (possibly dirty)
    // and the vnode stays listed however often it is flushed.
    with_cache(&file, |cache| cache.lookup_mut(0).unwrap().wire_count = 1);
    putpages(&file, 0, 0, SYNC | PutFlags::RECLAIM).unwrap();
    assert_eq!(writes(&disk).len(), 1);
    assert_eq!(status(&file, 0), DirtyStatus::Unknown);
    assert!(object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
}

// ---- W1 write EOF -----------------------------------------------------------------

#[test]
fn w01_writes_stop_at_the_write_size() {
    let disk = MemDisk::new(DISK_SECTORS);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create(&vec![7u8; PAGE_SIZE + 100]).unwrap();
    file.set_max_transfer(RIG_MAX_TRANSFER);
    dirty(&file, 0..2);
    putpages(&file, 0, 0, SYNC).unwrap();
    // Whole sectors: the last one is written to its end, zeroes past EOF.
    assert_eq!(writes(&disk), [(sector(&file, 0), PAGE_SIZE + 512)]);
    let mut tail = vec![0xffu8; PAGE_SIZE - 100];
    disk.read_raw(sector(&file, 1) * 512 + 100, &mut tail);
    assert!(
        tail.iter().all(|&b| b == 0),
        "nothing past EOF reaches the disk"
    );
    let contents = file.disk_contents();
    assert!(contents[..PAGE_SIZE].iter().all(|&b| b == fill_of(0)));
    assert!(contents[PAGE_SIZE..].iter().all(|&b| b == fill_of(1)));
    assert_eq!(status(&file, 1), DirtyStatus::Clean);
}

// ---- W2 in-flight accounting ------------------------------------------------------

#[test]
fn w02_writes_in_flight_are_counted_until_settled() {
    let (disk, file) = rig(8);
    file.set_putrange_granularity(Some(PG));
    dirty(&file, 0..3);
    disk.hold();
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(file.object().read().writes_in_flight(), 3);
    assert_eq!(disk.pending(), 3);
    disk.release();
    assert_eq!(file.object().read().writes_in_flight(), 0);
    assert_eq!(writes(&disk).len(), 3);
}

// ---- W3 holes and bmap errors -----------------------------------------------------

#[test]
fn w03_holes_in_a_cluster_are_skipped() {
    let disk = MemDisk::new(DISK_SECTORS);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create_sparse(5 * PG, &original(5), &[2]).unwrap();
    file.set_max_transfer(RIG_MAX_TRANSFER);
    dirty(&file, 0..5);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 0), 2 * PAGE_SIZE),
            (sector(&file, 3), 2 * PAGE_SIZE)
        ]
    );
    let mut want = expected(5, [0, 1, 3, 4]);
    want[2 * PAGE_SIZE..3 * PAGE_SIZE].fill(0);
    assert_eq!(file.disk_contents(), want);
}

#[test]
fn w03_a_bmap_error_abandons_the_rest_and_keeps_the_pages_dirty() {
    let (disk, file) = rig_on(MemDisk::new(DISK_SECTORS), Layout::Fragmented { run: 2 }, 6);
    dirty(&file, 0..6);
    file.fail_bmap(Some(2));
    assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io));
    assert_eq!(writes(&disk), [(sector(&file, 0), 2 * PAGE_SIZE)]);
    assert!((0..6).all(|i| status(&file, i) == DirtyStatus::Dirty));
    assert!((0..6).all(|i| !page(&file, i).unwrap().writeback));
    file.fail_bmap(None);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(file.disk_contents(), expected(6, 0..6));
}

// ---- W4 one request per run -------------------------------------------------------

#[test]
fn w04_one_request_per_contiguous_run() {
    let (disk, file) = rig(8);
    dirty(&file, 0..8);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(writes(&disk), [(sector(&file, 0), 8 * PAGE_SIZE)]);

    let (disk, file) = rig_on(MemDisk::new(DISK_SECTORS), Layout::Fragmented { run: 3 }, 8);
    dirty(&file, 0..8);
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(
        writes(&disk),
        [
            (sector(&file, 0), 3 * PAGE_SIZE),
            (sector(&file, 3), 3 * PAGE_SIZE),
            (sector(&file, 6), 2 * PAGE_SIZE)
        ]
    );
    assert_eq!(file.disk_contents(), expected(8, 0..8));

    let (disk, file) = rig_on(MemDisk::new(DISK_SECTORS), Layout::Reversed, 4);
    dirty(&file, 0..4);
    putpages(&file, 0, 0, SYNC).unwrap();
    let want: Vec<_> = (0..4).map(|i| (sector(&file, i), PAGE_SIZE)).collect();
    assert_eq!(writes(&disk), want);
    assert_eq!(file.disk_contents(), expected(4, 0..4));
}

#[test]
fn w04_blocks_smaller_and_larger_than_a_page() {
    // 1 KiB blocks, contiguous: one request for the whole cluster.
    let disk = MemDisk::new(DISK_SECTORS);
    let fs = MemFs::new(disk.clone(), 10, Layout::Contiguous);
    let file = fs.create(&original(3)).unwrap();
    file.set_max_transfer(RIG_MAX_TRANSFER);
    dirty(&file, 0..3);
    putpages(&file, 0, 0, SYNC).unwrap();
    let first = file.block_table()[0].unwrap();
    assert_eq!(writes(&disk), [(first, 3 * PAGE_SIZE)]);
    assert_eq!(file.disk_contents(), expected(3, 0..3));

    // Blocks of four pages (16 KiB at 4 KiB pages): a dirty page in the middle of a
    // block is written alone, at the right sector inside the block.
    let disk = MemDisk::new(DISK_SECTORS);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT + 2, Layout::Contiguous);
    let file = fs.create(&original(8)).unwrap();
    file.set_max_transfer(RIG_MAX_TRANSFER);
    clean(&file, 0..8);
    dirty(&file, 5..6);
    putpages(&file, 0, 0, SYNC).unwrap();
    let block1 = file.block_table()[1].unwrap();
    assert_eq!(writes(&disk), [(block1 + PG / 512, PAGE_SIZE)]);
    assert_eq!(file.disk_contents(), expected(8, [5]));
}

// ---- W5 completion ----------------------------------------------------------------

#[test]
fn w05_failed_sub_request_keeps_every_page_dirty_and_reports_once() {
    let (disk, file) = rig_on(MemDisk::new(DISK_SECTORS), Layout::Fragmented { run: 2 }, 8);
    dirty(&file, 0..6);
    disk.fail_nth(2, Error::Io);
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(writes(&disk).len(), 3, "three sub-requests of one cluster");
    for index in 0..6 {
        let seen = page(&file, index).unwrap();
        assert_eq!(seen.dirty, DirtyStatus::Dirty, "page {index}");
        assert_eq!(seen.flags, PageFlags::empty());
        assert!(!seen.writeback);
    }
    assert_eq!(file.object().read().pending_write_error(), Some(Error::Io));
    assert!(object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
    assert_eq!(file.object().read().writes_in_flight(), 0);

    // Freeing without cleaning (a truncation past these pages) is not a flush: the
    // error stays for the next one.
    clean(&file, 7..8);
    putpages(&file, 7 * PG, 0, PutFlags::FREE | PutFlags::SYNCIO).unwrap();
    assert!(page(&file, 7).is_none());
    assert_eq!(file.object().read().pending_write_error(), Some(Error::Io));

    // An asynchronous flush does not consume the error.
    disk.fail_nth(1, Error::Io);
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(file.object().read().pending_write_error(), Some(Error::Io));

    // The next synchronous flush writes the pages and reports the error once.
    disk.clear_log();
    assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io));
    assert_eq!(writes(&disk).len(), 3);
    assert_eq!(file.disk_contents(), expected(8, 0..6));
    assert_eq!(putpages(&file, 0, 0, SYNC), Ok(()));
    assert_eq!(putpages(&file, 0, 0, SYNC), Ok(()));
    assert!(!object_flags(&file).contains(ObjectFlags::ON_WORKLIST));
}

#[test]
fn w05_failed_write_of_released_pages_keeps_them() {
    let (disk, file) = rig(4);
    dirty(&file, 0..2);
    disk.fail_nth(1, Error::Io);
    putpages(&file, 0, 0, ASYNC | PutFlags::FREE).unwrap();
    for index in 0..2 {
        let seen = page(&file, index).unwrap();
        assert_eq!(seen.flags, PageFlags::empty(), "RELEASED cleared, not busy");
        assert_eq!(seen.dirty, DirtyStatus::Dirty);
        assert_eq!(seen.queue, PageQueue::Active);
    }
    // A freeing flush against a working device then frees them.
    assert_eq!(putpages(&file, 0, 0, SYNC | PutFlags::FREE), Err(Error::Io));
    assert_eq!(file.object().read().cache().resident_pages(), 0);
    assert_eq!(file.disk_contents(), expected(4, 0..2));
}

#[test]
fn w05_page_daemon_pages_are_freed_on_success_and_kept_on_failure() {
    let (disk, file) = rig(4);
    file.set_pagedaemon(true);
    dirty(&file, 0..2);
    disk.hold();
    // The fault is decided when the request is submitted.
    disk.fail_nth(1, Error::Io);
    putpages(&file, 0, 0, ASYNC | PutFlags::FREE).unwrap();
    let seen = page(&file, 0).unwrap();
    assert!(seen.flags.contains(PageFlags::BUSY | PageFlags::PAGEOUT));
    assert_eq!(seen.queue, PageQueue::None, "dequeued while paged out");
    disk.release();
    let seen = page(&file, 0).unwrap();
    assert_eq!(seen.flags, PageFlags::empty());
    assert_eq!(seen.queue, PageQueue::Active);
    putpages(&file, 0, 0, ASYNC | PutFlags::FREE).unwrap();
    assert_eq!(file.object().read().cache().resident_pages(), 0);
}

// ---- W6 priorities ----------------------------------------------------------------

#[test]
fn w06_priority_hints_mean_what_the_flags_say() {
    let (disk, file) = rig(8);
    let priority = |flags: PutFlags, index: u64| {
        dirty(&file, index..index + 1);
        disk.clear_log();
        putpages(&file, 0, 0, flags).unwrap();
        let log = disk.log();
        assert_eq!(log.len(), 1);
        log[0].priority
    };
    assert_eq!(priority(SYNC, 0), Priority::TimeCritical);
    assert_eq!(priority(ASYNC, 1), Priority::TimeNonCritical);
    assert_eq!(
        priority(SYNC | PutFlags::LAZY, 2),
        Priority::TimeNonCritical
    );
    assert_eq!(
        priority(ASYNC | PutFlags::LAZY, 3),
        Priority::TimeNonCritical
    );
    file.set_pagedaemon(true);
    assert_eq!(priority(SYNC, 4), Priority::TimeLimited);
    assert_eq!(priority(ASYNC, 5), Priority::TimeLimited);
}

// ---- W7 the rwmap variant ---------------------------------------------------------

/// A device that records whether each request lets it modify the data.
struct Recorder {
    disk: MemDisk,
    may_modify: Mutex<Vec<bool>>,
}

impl Strategy for Recorder {
    fn submit(&self, request: IoRequest) {
        self.may_modify
            .lock()
            .unwrap()
            .push(request.device_may_modify());
        self.disk.submit(request);
    }
}

/// A MemFile seen through a recording device.
struct Recorded {
    file: Arc<MemFile>,
    device: Recorder,
}

impl Vnode for Recorded {
    type Cache = DefaultCache;
    type Map = MemFile;
    type Dev = Recorder;

    fn object(&self) -> &VmObject<DefaultCache> {
        self.file.object()
    }
    fn block_map(&self) -> &MemFile {
        &self.file
    }
    fn device(&self) -> &Recorder {
        &self.device
    }
    fn fs_bshift(&self) -> u32 {
        self.file.fs_bshift()
    }
}

#[test]
fn w07_rwmap_writes_let_the_device_modify_the_data() {
    let (disk, file) = rig(4);
    let recorded = Arc::new(Recorded {
        file: file.clone(),
        device: Recorder {
            disk: disk.clone(),
            may_modify: Mutex::new(Vec::new()),
        },
    });
    dirty(&file, 0..1);
    putpages(&recorded, 0, 0, SYNC).unwrap();
    dirty(&file, 2..3);
    putpages(&recorded, 0, 0, SYNC | PutFlags::WRITE_RWMAP).unwrap();
    assert_eq!(*recorded.device.may_modify.lock().unwrap(), [false, true]);
    assert_eq!(file.disk_contents(), expected(4, [0, 2]));
}

// ---- outside the catalogue: concurrent flushes on a threaded device -----------------

#[test]
fn concurrent_flushes_on_a_threaded_device_lose_nothing() {
    let (disk, file) = rig_on(
        MemDisk::threaded(DISK_SECTORS, true),
        Layout::Fragmented { run: 2 },
        64,
    );
    dirty(&file, 0..64);
    let flushers: Vec<_> = (0..4)
        .map(|i| {
            let file = file.clone();
            thread::spawn(move || {
                let flags = if i % 2 == 0 { ASYNC } else { SYNC };
                putpages(&file, 0, 0, flags)
            })
        })
        .collect();
    for flusher in flushers {
        flusher.join().unwrap().unwrap();
    }
    putpages(&file, 0, 0, SYNC).unwrap();
    wait_until("writes to settle", || {
        file.object().read().writes_in_flight() == 0
    });
    disk.quiesce();
    assert_eq!(file.disk_contents(), expected(64, 0..64));
    assert!((0..64).all(|i| !page(&file, i).unwrap().flags.contains(PageFlags::BUSY)));
}
