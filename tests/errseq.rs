//! Write errors reported errseq-style (issue 18, item 5): once to every open file
//! description (an `ErrorCursor`) that existed when a write failed, through `fsync`,
//! whoever flushed the pages; and the failed state of an object whose device keeps
//! failing (its dirty pages kept, no longer written, the error reported to every
//! fsync) until the kernel clears it.
//!
//! Files live on MemFs over a MemDisk whose fault injection (`fail_blocks`, `fail_nth`)
//! makes writes fail; every test runs over blocks of 512 B, 1 KiB, 4 KiB and 64 KiB.

mod common;

use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use genpager::page::trunc_page;
use genpager::testing::{Hook, Layout, MemDisk, MemFile, MemFs};
use genpager::{
    DEFAULT_WRITE_FAILURE_LIMIT, DirtyStatus, Error, ErrorCursor, PAGE_SIZE, PageCache, PutFlags,
    Vnode, fsync, putpages, setsize, write,
};

const PG: u64 = PAGE_SIZE as u64;
/// A kernel's fsync without cursors, and a syncer that flushes synchronously.
const SYNC: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
/// The syncer's background writeback.
const ASYNC: PutFlags = PutFlags::CLEANIT;
/// The page daemon's reclaim.
const RECLAIM: PutFlags = PutFlags::CLEANIT.union(PutFlags::FREE);

/// Block shifts: 512 B, 1 KiB, 4 KiB and 64 KiB blocks.
const BSHIFTS: [u32; 4] = [9, 10, 12, 16];

/// A file of `pages` pages of a pattern on blocks of `1 << bshift` bytes.
fn rig(bshift: u32, pages: u64) -> (MemDisk, Arc<MemFile>) {
    file_with(
        bshift,
        Layout::Contiguous,
        &pattern((pages * PG) as usize, 1),
    )
}

/// Rewrites the whole file with new bytes (a buffered write: its pages dirty) and
/// returns them.
fn rewrite(file: &Arc<MemFile>, seed: u8) -> Vec<u8> {
    let data = pattern(file.object().size() as usize, seed);
    assert_eq!(write(file, 0, &data), Ok(data.len()));
    data
}

/// Makes every write of the disk fail with EIO.
fn fail_everything(disk: &MemDisk) {
    disk.fail_blocks(0..disk.sectors(), Error::Io);
}

/// Pages resident, and those of them not clean.
fn residency(file: &MemFile) -> (usize, usize) {
    let state = file.object().read();
    let cache = state.cache();
    let dirty = cache
        .range(0..u64::MAX)
        .filter(|page| page.dirty() != DirtyStatus::Clean)
        .count();
    (cache.resident_pages(), dirty)
}

fn fsync_all(file: &Arc<MemFile>, cursor: &mut ErrorCursor) -> genpager::Result {
    fsync(file, cursor, 0, 0)
}

// ---- the acceptance test ------------------------------------------------------------

/// Two descriptions open, an asynchronous write fails: each one's fsync reports the
/// error once; a third opened after the failure does not see it.
#[test]
fn each_description_open_at_an_async_failure_reports_it_once_a_later_one_never() {
    for bshift in BSHIFTS {
        let (disk, file) = rig(bshift, 4);
        let mut first = file.object().error_cursor();
        let mut second = file.object().error_cursor();
        let data = rewrite(&file, 7);
        fail_everything(&disk);
        assert_eq!(putpages(&file, 0, 0, ASYNC), Ok(()), "bshift {bshift}");
        let mut third = file.object().error_cursor();
        disk.clear_faults();

        assert_eq!(fsync_all(&file, &mut first), Err(Error::Io), "{bshift}");
        assert_eq!(
            file.disk_contents(),
            data,
            "the fsync wrote the pages anyway"
        );
        assert_eq!(fsync_all(&file, &mut first), Ok(()), "{bshift}: once");
        assert_eq!(fsync_all(&file, &mut second), Err(Error::Io), "{bshift}");
        assert_eq!(fsync_all(&file, &mut second), Ok(()), "{bshift}: once");
        assert_eq!(
            fsync_all(&file, &mut third),
            Ok(()),
            "{bshift}: opened after"
        );
        assert_eq!(residency(&file).1, 0);
    }
}

// ---- flushes without cursors --------------------------------------------------------

/// A syncer that flushes synchronously (putpages, no cursor) reports the failure
/// through the object's own cursor and consumes nothing of a description's.
#[test]
fn a_synchronous_syncer_flush_does_not_hide_an_error_from_fsync() {
    for bshift in BSHIFTS {
        let (disk, file) = rig(bshift, 4);
        let mut open = file.object().error_cursor();
        let data = rewrite(&file, 3);
        fail_everything(&disk);
        putpages(&file, 0, 0, ASYNC).unwrap();
        disk.clear_faults();
        assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io), "the syncer's");
        assert_eq!(putpages(&file, 0, 0, SYNC), Ok(()), "once to it");
        assert_eq!(file.disk_contents(), data);
        assert_eq!(fsync_all(&file, &mut open), Err(Error::Io), "{bshift}");
        assert_eq!(fsync_all(&file, &mut open), Ok(()));

        // The syncer's own synchronous write failing: the same.
        rewrite(&file, 4);
        disk.fail_nth(1, Error::Io);
        assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io));
        assert_eq!(
            putpages(&file, 0, 0, SYNC),
            Ok(()),
            "rewritten, reported once"
        );
        assert_eq!(fsync_all(&file, &mut open), Err(Error::Io), "{bshift}");
        assert_eq!(fsync_all(&file, &mut open), Ok(()));
    }
}

/// A cursor-less synchronous flush still reports a failure that fsyncs through
/// cursors already reported: the object's own cursor is one more reader.
#[test]
fn fsync_through_a_cursor_leaves_the_objects_own_report_alone() {
    let (disk, file) = rig(12, 2);
    let mut open = file.object().error_cursor();
    rewrite(&file, 5);
    fail_everything(&disk);
    putpages(&file, 0, 0, ASYNC).unwrap();
    disk.clear_faults();
    assert_eq!(fsync_all(&file, &mut open), Err(Error::Io));
    assert_eq!(file.object().read().pending_write_error(), Some(Error::Io));
    assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io));
    assert_eq!(file.object().read().pending_write_error(), None);
    assert_eq!(fsync_all(&file, &mut open), Ok(()));
}

// ---- fsync's own writes, a second error, errors that are not a write's --------------

/// An fsync whose own write fails reports it once, and so does every other
/// description's next fsync.
#[test]
fn an_fsyncs_own_failed_write_is_reported_to_every_description_once() {
    for bshift in BSHIFTS {
        let (disk, file) = rig(bshift, 4);
        let mut writer = file.object().error_cursor();
        let mut other = file.object().error_cursor();
        let data = rewrite(&file, 9);
        disk.fail_nth(1, Error::Io);
        assert_eq!(fsync_all(&file, &mut writer), Err(Error::Io), "{bshift}");
        assert_eq!(residency(&file).1, residency(&file).0, "kept dirty");
        assert_eq!(fsync_all(&file, &mut writer), Ok(()), "{bshift}: once");
        assert_eq!(file.disk_contents(), data);
        assert_eq!(fsync_all(&file, &mut other), Err(Error::Io), "{bshift}");
        assert_eq!(fsync_all(&file, &mut other), Ok(()));
    }
}

/// A second failure after a description reported the first is reported to it again;
/// one that had not checked in between reports the two as one.
#[test]
fn a_second_error_is_reported_again_to_each_cursor() {
    for bshift in BSHIFTS {
        let (disk, file) = rig(bshift, 4);
        let mut often = file.object().error_cursor();
        let mut seldom = file.object().error_cursor();
        for round in 0..2u8 {
            rewrite(&file, 20 + round);
            fail_everything(&disk);
            putpages(&file, 0, 0, ASYNC).unwrap();
            disk.clear_faults();
            assert_eq!(
                fsync_all(&file, &mut often),
                Err(Error::Io),
                "round {round}"
            );
            assert_eq!(fsync_all(&file, &mut often), Ok(()), "round {round}");
        }
        assert_eq!(fsync_all(&file, &mut seldom), Err(Error::Io), "{bshift}");
        assert_eq!(fsync_all(&file, &mut seldom), Ok(()), "the two as one");
        assert_eq!(file.object().check_errors(&mut often), Ok(()));
    }
}

/// The latest failure is the one reported.
#[test]
fn the_latest_error_is_reported() {
    let (disk, file) = rig(12, 2);
    let mut open = file.object().error_cursor();
    rewrite(&file, 1);
    disk.fail_nth(1, Error::Io);
    putpages(&file, 0, 0, ASYNC).unwrap();
    disk.fail_nth(1, Error::Host(77));
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(file.object().check_errors(&mut open), Err(Error::Host(77)));
    assert_eq!(file.object().check_errors(&mut open), Ok(()));
}

/// An fsync that fails for another reason than a write (its transaction refused, an
/// invalid range) does not move the cursor on: the write error waits for the next.
#[test]
fn an_error_that_is_not_a_writes_leaves_the_cursor_where_it_was() {
    let (disk, file) = rig(12, 4);
    let mut open = file.object().error_cursor();
    let data = rewrite(&file, 2);
    fail_everything(&disk);
    putpages(&file, 0, 0, ASYNC).unwrap();
    disk.clear_faults();
    file.fail_hook(Hook::TransBegin, 1, Error::Again);
    assert_eq!(fsync_all(&file, &mut open), Err(Error::Again));
    assert_eq!(fsync(&file, &mut open, 1, 0), Err(Error::Invalid));
    assert_eq!(fsync(&file, &mut open, 2 * PG, PG), Err(Error::Invalid));
    assert_eq!(fsync_all(&file, &mut open), Err(Error::Io));
    assert_eq!(fsync_all(&file, &mut open), Ok(()));
    assert_eq!(file.disk_contents(), data);
}

// ---- a device that keeps failing ----------------------------------------------------

/// After the limit of failed writes in a row the object is failed: its dirty pages
/// stay resident and dirty, no flush submits anything, every fsync (through cursors
/// made before or after) and every cleaning flush reports the error, the page daemon
/// frees only clean pages; once the device recovers and the failure is cleared,
/// one fsync writes everything.
#[test]
fn a_permanently_failing_device_fails_the_object_after_the_limit() {
    for bshift in BSHIFTS {
        let (disk, file) = rig(bshift, 8);
        let object = file.object();
        assert_eq!(
            object.read().write_failure_limit(),
            Some(DEFAULT_WRITE_FAILURE_LIMIT)
        );
        object.set_write_failure_limit(NonZeroU32::new(3));
        let mut before = object.error_cursor();
        // Pages 0..4 rewritten (dirty), pages 4..8 read in (clean).
        let mut data = file.disk_contents();
        let new = pattern(4 * PAGE_SIZE, 11);
        data[..new.len()].copy_from_slice(&new);
        write(&file, 0, &new).unwrap();
        let mut buf = vec![0; 4 * PAGE_SIZE];
        genpager::read(&file, 4 * PG, &mut buf).unwrap();
        assert_eq!(residency(&file), (8, 4));

        fail_everything(&disk);
        for attempt in 1..=3 {
            assert!(!object.is_failed(), "{bshift}: attempt {attempt}");
            let _ = putpages(&file, 0, 0, SYNC);
            assert_eq!(object.read().failed_writes_in_a_row(), attempt);
        }
        assert!(object.is_failed(), "{bshift}");
        assert!(object.read().is_failed());
        assert_eq!(residency(&file), (8, 4), "nothing lost, nothing freed");

        let mut after = object.error_cursor();
        disk.reset_stats();
        for _ in 0..2 {
            assert_eq!(putpages(&file, 0, 0, ASYNC), Err(Error::Io));
            assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io));
            assert_eq!(fsync_all(&file, &mut before), Err(Error::Io));
            assert_eq!(fsync_all(&file, &mut after), Err(Error::Io));
            assert_eq!(object.check_errors(&mut after), Err(Error::Io));
        }
        assert_eq!(putpages(&file, 0, 0, RECLAIM), Err(Error::Io));
        assert_eq!(
            residency(&file),
            (4, 4),
            "the page daemon freed the clean pages"
        );
        assert_eq!(
            putpages(&file, 0, 0, RECLAIM | PutFlags::SYNCIO | PutFlags::RECLAIM),
            Err(Error::Io),
            "a reclaim ends"
        );
        assert_eq!(disk.stats().requests, 0, "{bshift}: nothing submitted");
        assert_eq!(residency(&file), (4, 4));

        // The device recovers; the kernel clears the failure.
        disk.clear_faults();
        assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io), "still failed");
        object.clear_failed();
        assert!(!object.is_failed());
        assert_eq!(fsync_all(&file, &mut before), Ok(()), "{bshift}");
        assert_eq!(file.disk_contents(), data, "{bshift}");
        assert_eq!(residency(&file).1, 0);
        assert_eq!(fsync_all(&file, &mut after), Ok(()));
        assert_eq!(putpages(&file, 0, 0, SYNC), Ok(()));
    }
}

/// The default limit: seven failed writes in a row leave the object writable, the
/// eighth fails it; a write that succeeds starts the count again.
#[test]
fn the_default_limit_counts_failures_in_a_row() {
    let (disk, file) = rig(12, 2);
    let object = file.object();
    let limit = DEFAULT_WRITE_FAILURE_LIMIT.get();
    rewrite(&file, 1);
    fail_everything(&disk);
    for _ in 1..limit {
        putpages(&file, 0, 0, ASYNC).unwrap();
    }
    assert_eq!(object.read().failed_writes_in_a_row(), limit - 1);
    assert!(!object.is_failed());
    disk.clear_faults();
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(
        object.read().failed_writes_in_a_row(),
        0,
        "a success resets it"
    );

    rewrite(&file, 2);
    fail_everything(&disk);
    for _ in 0..limit {
        let _ = putpages(&file, 0, 0, ASYNC);
    }
    assert!(object.is_failed());
    disk.clear_faults();
    object.clear_failed();
    putpages(&file, 0, 0, SYNC).unwrap_err(); // the errors not yet reported to it
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(residency(&file).1, 0);
}

/// The page daemon (which never sleeps) on a failed object: frees the clean pages,
/// keeps the dirty ones, submits nothing; direct I/O fails with the error instead of
/// going around the kept data.
#[test]
fn the_page_daemon_and_direct_io_on_a_failed_object() {
    use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
    use genpager::testing::Direction;
    for bshift in BSHIFTS {
        let (disk, file) = rig(bshift, 4);
        file.object().set_write_failure_limit(NonZeroU32::new(1));
        write(&file, 0, &pattern(2 * PAGE_SIZE, 3)).unwrap();
        let mut buf = vec![0; 2 * PAGE_SIZE];
        genpager::read(&file, 2 * PG, &mut buf).unwrap();
        fail_everything(&disk);
        let _ = putpages(&file, 0, 0, ASYNC);
        assert!(file.object().is_failed());
        disk.reset_stats();
        file.set_pagedaemon(true);
        assert_eq!(putpages(&file, 0, 0, RECLAIM), Err(Error::Io), "{bshift}");
        file.set_pagedaemon(false);
        assert_eq!(residency(&file), (2, 2), "{bshift}");
        let mut out = Buffer::aligned(PAGE_SIZE);
        let iov = vec![IoVec::new(out.get_mut())];
        let mut uio = Uio::new(0, Direction::Read, AddressSpace::User, iov).unwrap();
        let direct = directio(&file, &mut uio, DirectFlags::empty());
        assert_eq!(direct.map(|p| p.transferred), Err(Error::Io), "{bshift}");
        assert_eq!(disk.stats().requests, 0, "{bshift}");
    }
}

/// One flush is one attempt: a syncer pass whose many clusters all fail counts once,
/// so a large file is not failed by a single pass.
#[test]
fn one_flush_of_many_failing_clusters_is_one_failed_attempt() {
    for bshift in BSHIFTS {
        let pages = (8 * TEST_MAX_TRANSFER / PAGE_SIZE) as u64;
        let (disk, file) = rig(bshift, pages);
        rewrite(&file, 1);
        fail_everything(&disk);
        disk.reset_stats();
        putpages(&file, 0, 0, ASYNC).unwrap();
        assert!(disk.stats().requests >= 8, "{bshift}: {:?}", disk.stats());
        assert_eq!(file.object().read().failed_writes_in_a_row(), 1, "{bshift}");
        let _ = putpages(&file, 0, 0, SYNC);
        assert_eq!(file.object().read().failed_writes_in_a_row(), 2, "{bshift}");
        assert!(!file.object().is_failed());
    }
}

/// Without a limit the object never fails: every flush writes again.
#[test]
fn no_limit_never_fails_the_object() {
    let (disk, file) = rig(12, 2);
    file.object().set_write_failure_limit(None);
    rewrite(&file, 1);
    fail_everything(&disk);
    disk.reset_stats();
    for _ in 0..20 {
        assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io));
    }
    assert!(!file.object().is_failed());
    assert_eq!(disk.stats().requests, 20);
}

/// A truncation that discards every page the failed object kept ends the failed
/// state: the next writes reach the disk.
#[test]
fn truncating_away_the_failed_pages_ends_the_failed_state() {
    for bshift in BSHIFTS {
        let (disk, file) = rig(bshift, 4);
        file.object().set_write_failure_limit(NonZeroU32::new(1));
        let mut open = file.object().error_cursor();
        rewrite(&file, 1);
        fail_everything(&disk);
        let _ = putpages(&file, 0, 0, ASYNC);
        assert!(file.object().is_failed());
        // A truncation that keeps some of them keeps the object failed.
        setsize(&file, 2 * PG).unwrap();
        assert!(file.object().is_failed(), "{bshift}");
        setsize(&file, 0).unwrap();
        assert!(!file.object().is_failed(), "{bshift}");
        disk.clear_faults();
        let data = pattern(3 * PAGE_SIZE, 5);
        write(&file, 0, &data).unwrap();
        assert_eq!(
            fsync_all(&file, &mut open),
            Err(Error::Io),
            "the old failure"
        );
        assert_eq!(fsync_all(&file, &mut open), Ok(()));
        assert_eq!(file.disk_contents(), data, "{bshift}");
    }
}

/// Freeing the kept pages without cleaning them (what a truncation does, or a kernel
/// giving up on the data) ends the failed state at once: a reclaimer asking sees the
/// object writable again.
#[test]
fn discarding_the_kept_pages_ends_the_failed_state() {
    let (disk, file) = rig(12, 4);
    file.object().set_write_failure_limit(NonZeroU32::new(1));
    rewrite(&file, 1);
    fail_everything(&disk);
    let _ = putpages(&file, 0, 0, ASYNC);
    assert!(file.object().is_failed());
    let discard = PutFlags::FREE.union(PutFlags::SYNCIO);
    putpages(&file, 2 * PG, 0, discard).unwrap();
    assert!(file.object().is_failed(), "pages 0 and 1 are still kept");
    assert_eq!(residency(&file), (2, 2));
    putpages(&file, 0, 0, discard).unwrap();
    assert!(!file.object().is_failed());
    assert_eq!(residency(&file), (0, 0));
}

// ---- threads ------------------------------------------------------------------------

/// fsyncs of several descriptions racing an asynchronous write that fails on a device
/// completing from its own thread: each first fsync reports the failure (it waits for
/// the write in flight), later failures of the others' rewrites are reported at most
/// once more, and then nothing; the disk ends equal to the data.
#[test]
fn fsyncs_racing_an_async_failure_each_report_it() {
    const THREADS: usize = 4;
    for (round, bshift) in BSHIFTS.into_iter().cycle().take(12).enumerate() {
        let disk = MemDisk::threaded(disk_for(8 * PAGE_SIZE).sectors(), round % 2 == 1);
        let fs = MemFs::new(disk.clone(), bshift, Layout::Contiguous);
        let file = fs.create(&pattern(8 * PAGE_SIZE, 1)).unwrap();
        file.set_max_transfer(TEST_MAX_TRANSFER);
        file.object().set_write_failure_limit(None);
        let cursors: Vec<ErrorCursor> =
            (0..THREADS).map(|_| file.object().error_cursor()).collect();
        let data = rewrite(&file, 30 + round as u8);
        disk.hold();
        fail_everything(&disk);
        putpages(&file, 0, 0, ASYNC).unwrap();
        let barrier = Arc::new(Barrier::new(THREADS + 1));
        let threads: Vec<_> = cursors
            .into_iter()
            .map(|mut cursor| {
                let (file, barrier) = (file.clone(), barrier.clone());
                thread::spawn(move || {
                    let first = fsync_all(&file, &mut cursor);
                    barrier.wait();
                    barrier.wait(); // the device recovered
                    let second = fsync_all(&file, &mut cursor);
                    let third = fsync_all(&file, &mut cursor);
                    (first, second, third)
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(2));
        disk.release();
        barrier.wait();
        disk.clear_faults();
        barrier.wait();
        for thread in threads {
            let (first, second, third) = thread.join().unwrap();
            assert_eq!(first, Err(Error::Io), "round {round}");
            assert!(matches!(second, Ok(()) | Err(Error::Io)), "{second:?}");
            assert_eq!(third, Ok(()), "round {round}");
        }
        disk.quiesce();
        assert_eq!(file.disk_contents(), data, "round {round}");
        assert_eq!(residency(&file).1, 0);
    }
}

/// The same race on a failed object: every fsync reports, none writes, until it is
/// cleared.
#[test]
fn fsyncs_racing_the_failure_that_fails_the_object_all_report_it() {
    const THREADS: usize = 3;
    let disk = MemDisk::threaded(disk_for(8 * PAGE_SIZE).sectors(), false);
    let fs = MemFs::new(disk.clone(), 12, Layout::Contiguous);
    let file = fs.create(&pattern(4 * PAGE_SIZE, 1)).unwrap();
    file.object().set_write_failure_limit(NonZeroU32::new(1));
    let data = rewrite(&file, 40);
    disk.hold();
    fail_everything(&disk);
    putpages(&file, 0, 0, ASYNC).unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let file = file.clone();
            let mut cursor = file.object().error_cursor();
            thread::spawn(move || {
                (0..5)
                    .map(|_| fsync_all(&file, &mut cursor))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(2));
    disk.release();
    for thread in threads {
        assert!(thread.join().unwrap().iter().all(|r| *r == Err(Error::Io)));
    }
    assert!(file.object().is_failed());
    assert_eq!(
        disk.stats().requests,
        1,
        "only the first write was submitted"
    );
    disk.clear_faults();
    file.object().clear_failed();
    let mut cursor = file.object().error_cursor();
    assert_eq!(fsync_all(&file, &mut cursor), Ok(()));
    disk.quiesce();
    assert_eq!(file.disk_contents(), data);
}

// ---- no panic -----------------------------------------------------------------------

/// Odd ranges, a cursor of another object, a limit of one: errors or nonsense, never a
/// panic.
#[test]
fn no_input_panics() {
    let (disk, file) = rig(10, 3);
    let (_, other) = rig(10, 1);
    let mut foreign = other.object().error_cursor();
    rewrite(&other, 1);
    let bounds = [
        0,
        1,
        511,
        PG - 1,
        PG,
        2 * PG,
        100 * PG,
        trunc_page(u64::MAX),
        u64::MAX,
    ];
    let limits = [None, NonZeroU32::new(1), NonZeroU32::new(u32::MAX)];
    let cases = limits.into_iter().flat_map(|limit| {
        bounds
            .into_iter()
            .flat_map(move |start| bounds.into_iter().map(move |end| (limit, start, end)))
    });
    for (limit, start, end) in cases {
        file.object().set_write_failure_limit(limit);
        rewrite(&file, start as u8);
        if end % 3 == 0 {
            fail_everything(&disk);
        }
        let mut cursor = file.object().error_cursor();
        let result = fsync(&file, &mut cursor, start, end);
        let _ = fsync(&file, &mut foreign, start, end);
        let _ = file.object().check_errors(&mut foreign);
        disk.clear_faults();
        let aligned = start % PG == 0 && end % PG == 0 && (end == 0 || start <= end);
        if !aligned {
            assert_eq!(result, Err(Error::Invalid), "{start:#x}..{end:#x}");
        }
        file.object().clear_failed();
    }
    assert_eq!(
        putpages(&file, 0, 0, SYNC).err().unwrap_or(Error::Io),
        Error::Io
    );
    putpages(&file, 0, 0, SYNC).unwrap();
    assert_eq!(residency(&file).1, 0);
}

// ---- random sequences against a model ----------------------------------------------

/// A small deterministic generator (64-bit LCG, high bits), so a failing seed repeats.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// What the errseq rules predict for a file of one cluster on an inline disk.
#[derive(Default)]
struct Predicted {
    dirty: bool,
    failing: bool,
    /// Per open description, and last the object's own cursor: a failure unseen.
    unseen: Vec<bool>,
    in_a_row: u32,
    failed: bool,
}

impl Predicted {
    /// A flush writes the dirty pages (unless failed): returns whether the write failed.
    fn write(&mut self, limit: u32) -> bool {
        if !self.dirty || self.failed {
            return false;
        }
        if !self.failing {
            self.dirty = false;
            self.in_a_row = 0;
            return false;
        }
        self.unseen.iter_mut().for_each(|unseen| *unseen = true);
        self.in_a_row += 1;
        self.failed |= self.in_a_row >= limit;
        true
    }

    /// A synchronous cleaning flush reporting through cursor `who`.
    fn sync_flush(&mut self, who: usize, limit: u32) -> genpager::Result {
        let was_failed = self.failed;
        self.write(limit);
        let unseen = std::mem::take(&mut self.unseen[who]);
        if was_failed || unseen {
            Err(Error::Io)
        } else {
            Ok(())
        }
    }
}

/// Random sequences of opens, writes, the device failing and recovering, syncer
/// flushes (asynchronous and synchronous), fsyncs through every description and
/// clearing the failed state, each result checked against [`Predicted`]: every
/// description sees each failure since its open once, a failed object reports to
/// everyone and writes nothing, and the disk ends equal to the data.
#[test]
fn random_sequences_match_the_errseq_rules() {
    let mut rng = Lcg(0x5eed);
    for case in 0..120 {
        let bshift = BSHIFTS[rng.below(4) as usize];
        let limit = 1 + rng.below(4) as u32;
        let (disk, file) = rig(bshift, 2);
        file.object()
            .set_write_failure_limit(NonZeroU32::new(limit));
        let mut cursors = vec![file.object().error_cursor()];
        let mut model = Predicted {
            unseen: vec![false, false],
            ..Predicted::default()
        };
        let own = |model: &Predicted| model.unseen.len() - 1;
        let mut data = file.disk_contents();
        let mut trace = Vec::new();
        for step in 0..60 {
            let op = rng.below(8);
            trace.push(op);
            let what = format!("case {case} (bshift {bshift}, limit {limit}) ops {trace:?}");
            disk.reset_stats();
            let failed_before = model.failed;
            match op {
                0 => {
                    cursors.push(file.object().error_cursor());
                    let at = own(&model);
                    model.unseen.insert(at, false);
                }
                1 => {
                    data = rewrite(&file, step as u8);
                    model.dirty = true;
                }
                2 => {
                    model.failing = !model.failing;
                    if model.failing {
                        fail_everything(&disk);
                    } else {
                        disk.clear_faults();
                    }
                }
                3 => {
                    let expected = if model.failed {
                        Err(Error::Io)
                    } else {
                        model.write(limit);
                        Ok(())
                    };
                    assert_eq!(putpages(&file, 0, 0, ASYNC), expected, "{what}");
                }
                4 => {
                    let at = own(&model);
                    let expected = model.sync_flush(at, limit);
                    assert_eq!(putpages(&file, 0, 0, SYNC), expected, "{what}");
                }
                5 | 6 => {
                    let who = rng.below(cursors.len() as u64) as usize;
                    let expected = model.sync_flush(who, limit);
                    assert_eq!(fsync_all(&file, &mut cursors[who]), expected, "{what}");
                }
                _ => {
                    file.object().clear_failed();
                    model.failed = false;
                    model.in_a_row = 0;
                }
            }
            assert_eq!(file.object().is_failed(), model.failed, "{what}");
            assert_eq!(residency(&file).1 != 0, model.dirty, "{what}");
            if failed_before {
                assert_eq!(disk.stats().requests, 0, "{what}: a failed object wrote");
            }
        }
        disk.clear_faults();
        file.object().clear_failed();
        let _ = putpages(&file, 0, 0, SYNC);
        putpages(&file, 0, 0, SYNC).unwrap();
        assert_eq!(file.disk_contents(), data, "case {case}");
    }
}
