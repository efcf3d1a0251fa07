//! Page accounting and per-object I/O statistics (issue 18, item 2): every counter of
//! `VmObject::stats` checked against what the test disk saw (its request log) and
//! against a walk of the page cache's tags.

mod common;

use std::sync::Arc;

use common::*;
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::stats::{IoStats, ObjectStats, SIZE_BUCKETS, Stats, size_bucket};
use genpager::testing::{Direction, Layout, LoggedRequest, MAX_RUN, MemDisk, MemFile, MemFs};
use genpager::{
    Error, PAGE_SIZE, PageCache, PageCounts, PutFlags, Vnode, putpages, read, reap_completions,
    setsize, write,
};

const P: u64 = PAGE_SIZE as u64;
const SYNC: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
const ASYNC: PutFlags = PutFlags::CLEANIT;

/// The I/O counters the disk's request log implies: requests, bytes and size
/// histogram each way (the histogram's buckets computed here by hand, not with
/// `size_bucket`).
fn from_log(log: &[LoggedRequest]) -> IoStats {
    let mut io = IoStats::default();
    for request in log {
        let pages = request.len.div_ceil(PAGE_SIZE).max(1);
        let mut bucket = 0;
        while (1usize << bucket) < pages && bucket < SIZE_BUCKETS - 1 {
            bucket += 1;
        }
        let (requests, bytes, sizes) = match request.direction {
            Direction::Read => (
                &mut io.read_requests,
                &mut io.read_bytes,
                &mut io.read_sizes,
            ),
            Direction::Write => (
                &mut io.write_requests,
                &mut io.write_bytes,
                &mut io.write_sizes,
            ),
        };
        *requests += 1;
        *bytes += request.len as u64;
        sizes[bucket] += 1;
    }
    io
}

/// Checks the object's request counters against everything `disk` logged (the disk
/// serves this one file).
fn assert_counts_match_log(file: &MemFile, disk: &MemDisk) {
    let io = file.object().io_stats();
    let seen = from_log(&disk.log());
    assert_eq!(
        (io.read_requests, io.read_bytes, io.read_sizes),
        (seen.read_requests, seen.read_bytes, seen.read_sizes),
        "reads: counted vs logged"
    );
    assert_eq!(
        (io.write_requests, io.write_bytes, io.write_sizes),
        (seen.write_requests, seen.write_bytes, seen.write_sizes),
        "writes: counted vs logged"
    );
}

/// The cache's own page counts, and the same found by walking its tags.
fn counts_and_walk(file: &MemFile) -> (PageCounts, PageCounts) {
    let state = file.object().read();
    (
        state.cache().page_counts(),
        PageCounts::by_walk(state.cache()),
    )
}

fn page_counts(file: &MemFile) -> PageCounts {
    let (counts, walked) = counts_and_walk(file);
    assert_eq!(counts, walked, "the O(1) counts agree with a walk");
    assert_eq!(file.object().stats().pages, counts);
    counts
}

/// Reads the whole file front to back, `chunk` bytes at a time.
fn read_all(file: &Arc<MemFile>, chunk: usize) -> Vec<u8> {
    let size = file.object().size() as usize;
    let mut out = vec![0u8; size];
    let mut at = 0;
    while at < size {
        let end = (at + chunk).min(size);
        let n = read(file, at as u64, &mut out[at..end]).unwrap();
        assert!(n > 0);
        at += n;
    }
    out
}

fn sequential_read_counts(fs_bshift: u32) {
    let bsize = 1usize << fs_bshift;
    let size = (64 * PAGE_SIZE).max(8 * bsize);
    let blocks = (size / bsize) as u64;
    // Isolated holes: the second block, one in the middle, the last.
    let holes = [1, blocks / 2 + 1, blocks - 1];
    let data = pattern(size, 3);
    let (disk, file) = sparse_file(fs_bshift, &data, &holes);
    let got = read_all(&file, 3000);
    assert_eq!(got, file.disk_contents(), "the read itself is right");

    let io = file.object().io_stats();
    let hole_bytes = holes.len() as u64 * bsize as u64;
    assert_counts_match_log(&file, &disk);
    assert_eq!(
        io.read_bytes,
        size as u64 - hole_bytes,
        "every mapped byte read once, no hole byte"
    );
    assert_eq!(io.hole_bytes, hole_bytes, "hole bytes zero-filled");
    // A hole larger than a read's span may be met by two reads.
    assert!(
        io.holes >= holes.len() as u64 && io.holes <= hole_bytes / PAGE_SIZE.min(bsize) as u64,
        "holes {} for {} hole blocks",
        io.holes,
        holes.len()
    );
    if bsize <= PAGE_SIZE {
        assert_eq!(io.holes, holes.len() as u64, "each hole met once");
    }
    assert!(io.read_requests > 1);
    assert_eq!(
        (io.write_requests, io.read_errors, io.write_errors),
        (0, 0, 0)
    );
    assert_eq!((io.direct_requests, io.direct_bytes), (0, 0));
    let pages = page_counts(&file);
    assert_eq!(pages.resident, (size / PAGE_SIZE) as u64);
    assert_eq!((pages.dirty, pages.writeback), (0, 0));
}

#[test]
fn sequential_read_with_holes_counts_requests_bytes_and_holes_page_blocks() {
    sequential_read_counts(PAGE_SHIFT);
}

#[test]
fn sequential_read_with_holes_counts_requests_bytes_and_holes_512_byte_blocks() {
    sequential_read_counts(9);
}

#[test]
fn sequential_read_with_holes_counts_requests_bytes_and_holes_64k_blocks() {
    sequential_read_counts(16);
}

/// Dirties pages `range` (page indices) with whole-page writes.
fn dirty_pages(file: &Arc<MemFile>, range: std::ops::Range<u64>, seed: u8) {
    let data = pattern((range.end - range.start) as usize * PAGE_SIZE, seed);
    assert_eq!(write(file, range.start * P, &data).unwrap(), data.len());
}

fn writeback_histogram(fs_bshift: u32) {
    let pages = 48u64;
    let (disk, file) = file_with(
        fs_bshift,
        Layout::Contiguous,
        &pattern(pages as usize * PAGE_SIZE, 1),
    );
    let max = TEST_MAX_TRANSFER as u64 / P;
    // Runs of 3 pages, 1 page, and `max + 4` pages (a full transfer and the rest).
    dirty_pages(&file, 0..3, 10);
    dirty_pages(&file, 5..6, 11);
    dirty_pages(&file, 10..10 + max + 4, 12);
    let before = file.object().io_stats();
    assert_eq!(page_counts(&file).dirty, 4 + max + 4);
    putpages(&file, 0, 0, SYNC).unwrap();
    let io = file.object().io_stats();
    assert_counts_match_log(&file, &disk);
    let mut expected = [0u64; SIZE_BUCKETS];
    for run in [3, 1, max, 4] {
        expected[size_bucket(run as usize * PAGE_SIZE)] += 1;
    }
    let written: Vec<u64> = io
        .write_sizes
        .iter()
        .zip(before.write_sizes)
        .map(|(after, before)| after - before)
        .collect();
    assert_eq!(
        io.write_bytes - before.write_bytes,
        (4 + max + 4) * P,
        "the dirty pages, each once"
    );
    let counts = page_counts(&file);
    assert_eq!((counts.dirty, counts.writeback), (0, 0));
    // A cluster goes as one request per run the block map reports, and the rig's
    // runs stop one transfer past the block asked about (as ufs's do) and after
    // `MAX_RUN + 1` blocks: with blocks larger than a page (or 512 B blocks under
    // 64 KiB pages) a cluster here crosses the end of a run and goes as two requests.
    // The device log checked above is the reference then.
    let blocks_per_transfer = (TEST_MAX_TRANSFER >> fs_bshift) as u64;
    if fs_bshift > PAGE_SHIFT || blocks_per_transfer > MAX_RUN + 1 {
        return;
    }
    assert_eq!(written, expected, "one request per cluster, by size");
    assert_eq!(io.write_requests - before.write_requests, 4);
    assert_eq!(
        file.disk_contents()[5 * PAGE_SIZE],
        pattern(PAGE_SIZE, 11)[0]
    );
}

#[test]
fn writeback_cluster_sizes_match_the_device_log() {
    writeback_histogram(PAGE_SHIFT);
}

#[test]
fn writeback_cluster_sizes_match_the_device_log_512_byte_blocks() {
    writeback_histogram(9);
}

#[test]
fn writeback_cluster_sizes_match_the_device_log_64k_blocks() {
    writeback_histogram(16);
}

#[test]
fn dirty_and_writeback_counts_while_a_write_is_in_flight() {
    let disk = MemDisk::threaded(8192, false);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create(&pattern(32 * PAGE_SIZE, 4)).unwrap();
    file.set_max_transfer(TEST_MAX_TRANSFER);
    // Two runs, each within one transfer (at least four pages): two clusters.
    dirty_pages(&file, 2..5, 20);
    dirty_pages(&file, 20..22, 21);
    let counts = page_counts(&file);
    assert_eq!((counts.dirty, counts.writeback), (5, 0));
    assert_eq!(counts.resident, 5);

    disk.hold();
    putpages(&file, 0, 0, ASYNC).unwrap();
    assert_eq!(disk.pending(), 2, "two clusters wait at the device");
    let counts = page_counts(&file);
    assert_eq!(
        counts.writeback, 5,
        "every page of both clusters in writeback"
    );
    assert_eq!(counts.resident, 5);
    let io = file.object().io_stats();
    assert_eq!(
        (io.write_requests, io.write_bytes),
        (2, 5 * P),
        "counted at submission"
    );
    assert_eq!(io.write_errors, 0);

    disk.release();
    disk.quiesce();
    reap_completions();
    let counts = page_counts(&file);
    assert_eq!((counts.dirty, counts.writeback, counts.resident), (0, 0, 5));
    assert_counts_match_log(&file, &disk);
}

#[test]
fn page_counts_return_to_zero_after_truncate_to_zero() {
    let data = pattern(24 * PAGE_SIZE, 5);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    read_all(&file, 5 * PAGE_SIZE);
    dirty_pages(&file, 3..9, 30);
    putpages(&file, 0, 0, SYNC).unwrap();
    dirty_pages(&file, 12..14, 31);
    let counts = page_counts(&file);
    assert_eq!(counts.resident, 24);
    assert_eq!(counts.dirty, 2, "pages 12 and 13");
    setsize(&file, 0).unwrap();
    assert_eq!(page_counts(&file), PageCounts::default());
    assert_counts_match_log(&file, &disk);
    let stats = file.object().stats();
    assert_eq!(stats.pages, PageCounts::default());
    assert!(
        stats.io.read_requests > 0,
        "I/O counters are history: they stay"
    );
}

#[test]
fn read_and_write_errors_are_counted() {
    let data = pattern(16 * PAGE_SIZE, 6);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    file.object()
        .read_ahead()
        .set_advice(genpager::Advice::Random);
    let mut buf = vec![0u8; PAGE_SIZE];

    disk.fail_nth(1, Error::Io);
    assert_eq!(read(&file, 0, &mut buf), Err(Error::Io));
    let io = file.object().io_stats();
    assert_eq!((io.read_errors, io.write_errors), (1, 0));
    assert_eq!(
        page_counts(&file).resident,
        0,
        "the failed read's pages are gone"
    );

    // A block map error fails the read before any request: counted too.
    file.fail_bmap(Some(3));
    assert!(read(&file, 3 * P, &mut buf).is_err());
    file.fail_bmap(None);
    assert_eq!(file.object().io_stats().read_errors, 2);

    read(&file, 0, &mut buf).unwrap();
    assert_eq!(
        file.object().io_stats().read_errors,
        2,
        "a good read is no error"
    );

    dirty_pages(&file, 4..6, 40);
    disk.fail_nth(1, Error::Io);
    assert_eq!(putpages(&file, 0, 0, SYNC), Err(Error::Io));
    assert_eq!(file.object().io_stats().write_errors, 1);
    let counts = page_counts(&file);
    assert_eq!(
        (counts.dirty, counts.writeback),
        (2, 0),
        "kept dirty, not in writeback"
    );

    // An asynchronous write's failure is counted where it completes.
    disk.fail_nth(1, Error::Io);
    putpages(&file, 0, 0, ASYNC).unwrap();
    reap_completions();
    assert_eq!(file.object().io_stats().write_errors, 2);
    assert_eq!(page_counts(&file).dirty, 2);

    putpages(&file, 0, 0, SYNC).unwrap_or(());
    putpages(&file, 0, 0, SYNC).unwrap();
    let io = file.object().io_stats();
    assert_eq!((io.read_errors, io.write_errors), (2, 2));
    assert_eq!(page_counts(&file).dirty, 0);
    assert_counts_match_log(&file, &disk);
}

#[test]
fn direct_io_is_counted() {
    let data = pattern(8 * PAGE_SIZE, 7);
    let (disk, file) = sparse_file(PAGE_SHIFT, &data, &[2]);
    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let mut uio = Uio::new(
        0,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::new(buf.get_mut())],
    )
    .unwrap();
    directio(&file, &mut uio, DirectFlags::empty()).unwrap();
    drop(uio);
    let io = file.object().io_stats();
    assert_eq!(
        (io.direct_requests, io.direct_bytes),
        (2, 3 * P),
        "pages 0-1 and 3; page 2 a hole"
    );
    assert_eq!((io.read_requests, io.read_bytes), (2, 3 * P));
    assert_eq!((io.holes, io.hole_bytes), (1, P));

    let mut out = Buffer::with(&pattern(2 * PAGE_SIZE, 70));
    let mut uio = Uio::new(
        4 * P,
        Direction::Write,
        AddressSpace::User,
        vec![IoVec::new(out.get_mut())],
    )
    .unwrap();
    directio(&file, &mut uio, DirectFlags::empty()).unwrap();
    drop(uio);
    let io = file.object().io_stats();
    assert_eq!((io.direct_requests, io.direct_bytes), (3, 5 * P));
    assert_eq!((io.write_requests, io.write_bytes), (1, 2 * P));
    assert_eq!(io.write_sizes[size_bucket(2 * PAGE_SIZE)], 1);

    disk.fail_nth(1, Error::Io);
    let mut uio = Uio::new(
        4 * P,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::new(buf.get_mut())],
    )
    .unwrap();
    assert_eq!(
        directio(&file, &mut uio, DirectFlags::empty()),
        Err(Error::Io)
    );
    drop(uio);
    let io = file.object().io_stats();
    assert_eq!((io.read_errors, io.direct_requests), (1, 4));
    assert_counts_match_log(&file, &disk);
    assert_eq!(
        page_counts(&file),
        PageCounts::default(),
        "direct I/O caches nothing"
    );
}

#[test]
fn counts_agree_with_a_walk_after_random_operations() {
    for fs_bshift in [9, PAGE_SHIFT, 16] {
        let pages = 40u64;
        let (disk, file) = file_with(
            fs_bshift,
            Layout::Fragmented { run: 3 },
            &pattern(pages as usize * PAGE_SIZE, 8),
        );
        let mut seed = 0x5eed_0000 + u64::from(fs_bshift);
        let mut next = |bound: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % bound
        };
        for step in 0..300 {
            let size_pages = file.object().size().div_ceil(P);
            let at = next(pages);
            let len = 1 + next(6);
            match next(8) {
                0 | 1 => dirty_pages(&file, at..(at + len).min(pages), step as u8),
                2 | 3 => {
                    let mut buf = vec![0u8; (len * P) as usize];
                    read(&file, at * P, &mut buf).unwrap();
                }
                4 => putpages(&file, 0, 0, SYNC).unwrap(),
                5 => {
                    disk.hold();
                    putpages(&file, 0, 0, ASYNC | PutFlags::FREE).unwrap();
                    let counts = page_counts(&file);
                    assert!(counts.writeback <= counts.resident);
                    disk.release();
                }
                6 => setsize(&file, next(pages + 1) * P).unwrap(),
                _ => setsize(&file, (size_pages + len).min(pages) * P).unwrap(),
            }
            let counts = page_counts(&file);
            assert!(counts.dirty <= counts.resident, "step {step}");
            assert_eq!(counts.writeback, 0, "nothing left in flight at step {step}");
        }
        assert_counts_match_log(&file, &disk);
        putpages(&file, 0, 0, SYNC | PutFlags::FREE).unwrap();
        assert_eq!(page_counts(&file), PageCounts::default());
    }
}

#[test]
fn display_is_one_row_with_the_numbers_and_sums_add_up() {
    let data = pattern(8 * PAGE_SIZE, 9);
    let (_, a) = sparse_file(PAGE_SHIFT, &data, &[5]);
    let (_, b) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    read_all(&a, 8 * PAGE_SIZE);
    dirty_pages(&b, 0..2, 90);
    putpages(&b, 0, 0, SYNC).unwrap();
    dirty_pages(&b, 6..7, 91);

    let row = a.object().stats();
    let line = row.to_string();
    assert!(!line.contains('\n'));
    let io = row.io;
    for part in [
        format!("resident={} dirty=0 writeback=0", row.pages.resident),
        format!("reads={}/{} bytes", io.read_requests, io.read_bytes),
        format!("holes=1/{P} bytes"),
        "writes=0/0 bytes".to_string(),
        "errors=0/0".to_string(),
    ] {
        assert!(line.contains(&part), "{line:?} lacks {part:?}");
    }
    assert_eq!(row.pages.resident, 8);
    let b_row = b.object().stats();
    assert!(
        b_row
            .to_string()
            .contains(&format!("writes=1/{} bytes", 2 * P))
    );

    let rows: Vec<ObjectStats> = vec![row, b_row];
    let total: Stats = rows.iter().sum();
    let mut by_hand = Stats::default();
    by_hand.add(&row);
    by_hand.add(&b_row);
    assert_eq!(total, by_hand);
    assert_eq!(total.objects, 2);
    assert_eq!(
        total.pages.resident,
        row.pages.resident + b_row.pages.resident
    );
    assert_eq!(total.pages.dirty, 1);
    assert_eq!(total.io.read_bytes, io.read_bytes + b_row.io.read_bytes);
    assert_eq!(total.io.write_requests, 1);
    assert!(total.to_string().starts_with(&format!(
        "objects=2 resident={} dirty=1 writeback=0 reads=",
        total.pages.resident
    )));
}
