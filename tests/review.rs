//! Adversarial review of the "nothing acknowledged is ever lost" change.
//!
//! Every test states the documented promise it probes. Tests under "FINDINGS" failed
//! against the reviewed commit (each comment says what happened then) and pass since
//! the fixes that followed; tests under "PASSING PROBES" passed from the start and
//! are kept as regression tests.
//!
//! Multi-thread scenarios run under [`within`], so a hang fails the test.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use genpager::Fault;
use genpager::cache::{DefaultCache, MapState};
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::testing::{Direction, Layout, MemDisk, MemFile, MemFs};
use genpager::{
    Access, Advice, Error, GetFlags, MAX_FILE_SIZE, PAGE_SIZE, PutFlags, Vnode, getpages, putpages,
    read, setsize, write,
};

// ---- helpers ----------------------------------------------------------------------

const P: u64 = PAGE_SIZE as u64;
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
const EVICT: PutFlags = PutFlags::CLEANIT
    .union(PutFlags::FREE)
    .union(PutFlags::SYNCIO);
const BSHIFTS: [u32; 5] = [9, 10, 11, 12, 16];

fn read_all<V: Vnode>(file: &Arc<V>) -> Vec<u8> {
    let mut buf = vec![0u8; file.object().size() as usize + 10];
    let n = read(file, 0, &mut buf).expect("read back");
    buf.truncate(n);
    buf
}

fn small_file(fs_bshift: u32, data: &[u8]) -> (MemDisk, Arc<MemFile>) {
    let disk = MemDisk::new(1 << 15);
    let fs = MemFs::new(disk.clone(), fs_bshift, Layout::Contiguous);
    let file = fs.create(data).expect("file fits");
    (disk, file)
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    (0..a.len()).find(|&i| a[i] != b[i])
}

/// Checks the cache view, then evicts, then checks `read` and the disk.
fn check_everywhere(file: &Arc<MemFile>, model: &[u8], what: &str) {
    assert_eq!(file.object().size(), model.len() as u64, "{what}: size");
    let cached = read_all(file);
    if let Some(at) = first_diff(&cached, model) {
        panic!(
            "{what}: cached read differs at byte {at}: got {:?}, want {:?}",
            cached.get(at),
            model.get(at)
        );
    }
    putpages(file, 0, 0, EVICT).unwrap_or_else(|e| panic!("{what}: evict: {e:?}"));
    let back = read_all(file);
    if let Some(at) = first_diff(&back, model) {
        panic!(
            "{what}: read after eviction differs at byte {at}: got {:?}, want {:?}",
            back.get(at),
            model.get(at)
        );
    }
    let disk = file.disk_contents();
    if let Some(at) = first_diff(&disk, model) {
        panic!(
            "{what}: disk differs at byte {at}: got {:?}, want {:?}",
            disk.get(at),
            model.get(at)
        );
    }
    assert!(!any_busy(file), "{what}: a page left busy");
}

/// A direct write of `data` at `offset` from an aligned buffer; the bytes moved.
fn direct_write<V: Vnode>(file: &Arc<V>, offset: u64, data: &[u8]) -> genpager::Result<usize> {
    let buf = Buffer::with(data);
    let mut uio = Uio::new(
        offset,
        Direction::Write,
        AddressSpace::User,
        vec![IoVec::readonly(buf.get())],
    )?;
    Ok(directio(file, &mut uio, DirectFlags::empty())?.transferred)
}

// ---- a file with a chosen max_size -------------------------------------------------

/// Sets `file`'s `max_size` to `max` and refuses allocations past 2^16 blocks (the
/// block table would otherwise grow towards `max`); the filesystem's part of a
/// truncation is [`MemFile::free_blocks_past`].
fn with_max_size(file: Arc<MemFile>, max: u64) -> Arc<MemFile> {
    file.set_max_size(Some(max));
    file.set_alloc_limit(Some(1 << 16));
    file
}

/// Makes the page at `offset` resident and valid (a read), then maps it writable as a
/// host would after a write fault, and stores `data` at `at` through the mapping.
fn store_through_mapping<V: Vnode<Cache = DefaultCache>>(
    file: &Arc<V>,
    offset: u64,
    at: usize,
    data: &[u8],
) {
    getpages(file, Fault::write(offset, 1))
        .expect("write fault")
        .into_writable()
        .expect("writable pages")
        .release();
    let mut state = file.object().lock();
    state.cache_mut().map(offset, MapState::Writable);
    state
        .cache_mut()
        .write_through_mapping(offset, at, data)
        .expect("store through the mapping");
}

// =====================================================================================
// FINDINGS
// =====================================================================================

/// FINDING 1. Promise (BlockMap::max_size): "The largest size the file can have: the
/// end of the last byte the block map can address. Writes, faults and setsize past it
/// fail with TooBig ... a smaller value than that is used as given."
/// Observed: with a max_size that is not a page multiple (a FAT-like 0xFFFF_FFFF, or
/// here 3 pages + 1000 bytes), a 10-byte write ending exactly at max_size fails with
/// TooBig, for every block size (the write's page fault reaches past max_size).
/// Deterministic.
#[test]
fn finding_1_a_write_ending_at_an_unaligned_max_size_succeeds() {
    let mut failures = Vec::new();
    for bshift in BSHIFTS {
        let max = 3 * P + 1000;
        let (_disk, file) = small_file(bshift, &pattern(1000, 3));
        let host = with_max_size(file, max);
        let r = write(&host, max - 10, &[7u8; 10]);
        if r != Ok(10) {
            failures.push(format!("bshift {bshift}: write ending at max_size: {r:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// FINDING 2. Same promise, with 64 KiB blocks and a page-aligned max_size that is
/// not a block multiple (5 pages): `setsize(max_size)` and a write ending at it both
/// fail with TooBig (the whole-block widening reaches past it). Deterministic.
#[test]
fn finding_2_setsize_to_a_max_size_inside_a_big_block_succeeds() {
    let max = 5 * P;
    let (_disk, file) = small_file(16, &pattern(1000, 3));
    let host = with_max_size(file, max);
    let s = setsize(&host, max);
    let w = write(&host, max - 10, &[7u8; 10]);
    assert!(
        s.is_ok() && w == Ok(10),
        "setsize(max_size) = {s:?}, write ending at max_size = {w:?}"
    );
}

/// FINDING 3. Promise (write docs: "Errors: ... the filesystem's NoSpace when blocks
/// cannot be allocated"; setsize: "growing can fail as write() does"): growing a
/// 100-byte file to 300 bytes, or writing one byte at offset 150, needs no block the
/// file does not already have (its one 512-byte block holds bytes 0..512).
/// Observed: on a full filesystem both fail with NoSpace, because the write fault
/// allocates every block under the page, far past the new end of file; on a
/// filesystem with room the same write silently takes 7 extra blocks past EOF for a
/// 1-byte write (leaked space a small-file workload multiplies by 8).
/// Deterministic.
#[test]
fn finding_3_growth_inside_the_last_allocated_block_needs_no_space() {
    for bshift in [9u32, 10, 11] {
        let model = pattern(100, 7);
        let (_disk, file) = tight_file(bshift, 1, &model);
        let w = write(&file, 150, b"x");
        let s = setsize(&file, 300);
        // And on a roomy filesystem: how many blocks a 1-byte growth takes.
        let (_disk2, roomy) = tight_file(bshift, 64, &model);
        let before = roomy.fs().free_blocks();
        write(&roomy, 150, b"x").unwrap();
        let taken = before - roomy.fs().free_blocks();
        assert!(
            w == Ok(1) && s.is_ok() && taken == 0,
            "bshift {bshift}: write in the allocated block on a full fs: {w:?}; \
             setsize 100 -> 300: {s:?}; blocks taken by a 1-byte write at 150 of a \
             100-byte file: {taken}"
        );
    }
}

// =====================================================================================
// PASSING PROBES
// =====================================================================================

/// Promise (write.rs, setsize docs, departure 12): bytes a mapping stored past the
/// end of file must read as zero once a `write` grows the file over them, in the
/// cache and after eviction. Every block size, sizes that are not sector multiples.
#[test]
fn probe_mapping_garbage_past_eof_then_extending_write_reads_zero() {
    for bshift in BSHIFTS {
        for size in [100usize, 1000, 3000, PAGE_SIZE + 700] {
            for gap in [0u64, 10, P, 3 * P + 5] {
                let what = format!("bshift {bshift} size {size} gap {gap}");
                let mut model = pattern(size, 1);
                let (_disk, file) = small_file(bshift, &model);
                let last = trunc(size as u64);
                let within = (size as u64 - last) as usize;
                store_through_mapping(&file, last, within, &vec![0xEE; PAGE_SIZE - within]);
                let at = size as u64 + gap;
                write(&file, at, b"tail").unwrap();
                model.resize(at as usize, 0);
                model.extend_from_slice(b"tail");
                check_everywhere(&file, &model, &what);
            }
        }
    }
}

/// Same promise through `setsize` growth (then a write further on).
#[test]
fn probe_mapping_garbage_past_eof_then_setsize_grow_reads_zero() {
    for bshift in BSHIFTS {
        for size in [100usize, 1000, 3000, PAGE_SIZE + 700] {
            for grow in [1u64, 100, P, 5 * P] {
                let what = format!("bshift {bshift} size {size} grow {grow}");
                let mut model = pattern(size, 2);
                let (_disk, file) = small_file(bshift, &model);
                let last = trunc(size as u64);
                let within = (size as u64 - last) as usize;
                store_through_mapping(&file, last, within, &vec![0xEE; PAGE_SIZE - within]);
                // Flush first: the garbage must not reach the disk either.
                putpages(&file, 0, 0, FLUSH).unwrap();
                setsize(&file, size as u64 + grow).unwrap();
                model.resize(size + grow as usize, 0);
                check_everywhere(&file, &model, &what);
            }
        }
    }
}

fn trunc(x: u64) -> u64 {
    x & !(P - 1)
}

/// Promise (MAX_FILE_SIZE, departure 9): sizes and offsets near MAX_FILE_SIZE and
/// u64::MAX are refused or served, never a panic; a refused write leaves the size.
#[test]
fn probe_near_max_file_size() {
    for bshift in BSHIFTS {
        let model = pattern(3000, 4);
        let (_disk, file) = small_file(bshift, &model);
        let host = with_max_size(file, MAX_FILE_SIZE);
        let what = format!("bshift {bshift}");
        setsize(&host, MAX_FILE_SIZE).unwrap();
        let mut buf = [1u8; 20];
        assert_eq!(read(&host, MAX_FILE_SIZE - 10, &mut buf), Ok(10), "{what}");
        assert!(buf[..10].iter().all(|&b| b == 0), "{what}");
        assert_eq!(read(&host, MAX_FILE_SIZE, &mut buf), Ok(0), "{what}");
        assert!(read(&host, u64::MAX - 5, &mut buf).is_err(), "{what}");
        // Past the host's table: NoSpace, size unchanged.
        let r = write(&host, MAX_FILE_SIZE - 10, &[9u8; 10]);
        assert!(r.is_err(), "{what}: {r:?}");
        assert_eq!(host.object().size(), MAX_FILE_SIZE, "{what}");
        assert_eq!(
            write(&host, MAX_FILE_SIZE - 10, &[9u8; 11]),
            Err(Error::TooBig)
        );
        assert_eq!(write(&host, u64::MAX - 3, &[9u8; 3]), Err(Error::TooBig));
        assert_eq!(setsize(&host, MAX_FILE_SIZE + 1), Err(Error::TooBig));
        let last = MAX_FILE_SIZE - P;
        let g = getpages(&host, Fault::read(last, 1));
        assert!(g.is_ok(), "{what}: {:?}", g.err());
        drop(g);
        assert!(getpages(&host, Fault::read(last, 2)).is_err());
        let top = !(P - 1);
        assert!(getpages(&host, Fault::read(top, 1)).is_err());
        assert!(getpages(&host, Fault::resident(top, 1, Access::Read)).is_err());
        putpages(&host, last, 0, FLUSH).unwrap();
        putpages(&host, top, 0, FLUSH).unwrap();
        putpages(&host, 0, top, EVICT).unwrap();
        let buf = Buffer::with(&[5u8; 512]);
        if let Ok(mut uio) = Uio::new(
            MAX_FILE_SIZE - 512,
            Direction::Write,
            AddressSpace::User,
            vec![IoVec::readonly(buf.get())],
        ) {
            let _ = directio(&host, &mut uio, DirectFlags::empty());
        }
        let mut rbuf = Buffer::with(&[5u8; 512]);
        if let Ok(mut uio) = Uio::new(
            u64::MAX - 512,
            Direction::Read,
            AddressSpace::User,
            vec![IoVec::new(rbuf.get_mut())],
        ) {
            let _ = directio(&host, &mut uio, DirectFlags::empty());
        }
        setsize(&host, 3000).unwrap();
        let got = read_all(&host);
        assert!(got == model, "{what}: contents after shrinking back");
        assert!(!any_busy(&host));
    }
}

/// A filesystem of `blocks` blocks holding one file of `data`.
fn tight_file(bshift: u32, blocks: u64, data: &[u8]) -> (MemDisk, Arc<MemFile>) {
    let sectors = blocks << (bshift - 9);
    let disk = MemDisk::new(sectors);
    let fs = MemFs::new(disk.clone(), bshift, Layout::Contiguous);
    let file = fs.create(data).expect("file fits");
    (disk, file)
}

/// Promise (write docs): "A write that fails part-way returns the bytes it wrote
/// before the failure (Ok(n), n < len), and the file has grown by exactly those. A
/// write that fails before writing anything returns the error and leaves the size as
/// it was." Out of space mid-write, one-page batches, every block size.
#[test]
fn probe_short_write_on_enospc_grows_by_exactly_what_was_written() {
    for bshift in BSHIFTS {
        for start_gap in [0u64, 700, 2 * P + 3] {
            let bsize = 1u64 << bshift;
            let size = 1000usize;
            let blocks = 1 + (8 * P).div_ceil(bsize);
            let mut model = pattern(size, 5);
            let (_disk, file) = tight_file(bshift, blocks, &model);
            file.set_max_transfer(PAGE_SIZE);
            let at = size as u64 + start_gap;
            let data = pattern(40 * PAGE_SIZE, 6);
            let what = format!("bshift {bshift} gap {start_gap}");
            match write(&file, at, &data) {
                Ok(n) => {
                    assert!(n < data.len(), "{what}: everything fit?");
                    if n > 0 {
                        model.resize(at as usize, 0);
                        model.extend_from_slice(&data[..n]);
                    }
                    check_everywhere(&file, &model, &format!("{what}: short {n}"));
                }
                Err(e) => {
                    assert_eq!(e, Error::NoSpace, "{what}");
                    check_everywhere(&file, &model, &format!("{what}: failed"));
                }
            }
        }
    }
}

/// Promise (setsize docs): "growing can fail as write() does, and then the size stays
/// as it was" -- and the content too.
#[test]
fn probe_setsize_grow_failing_on_enospc_leaves_size_and_content() {
    for bshift in [9u32, 10, 11] {
        let size = 100usize;
        let model = pattern(size, 7);
        // Exactly the file's one block: nothing left to allocate.
        let (_disk, file) = tight_file(bshift, 1, &model);
        let what = format!("bshift {bshift}");
        let r = setsize(&file, 5 * P);
        assert_eq!(r, Err(Error::NoSpace), "{what}");
        check_everywhere(&file, &model, &what);
    }
}

/// Promise (crate docs, PutFlags::SYNCIO): a CLEANIT|SYNCIO flush waits for dirty
/// pages other threads hold busy: here a write fault's pages, stored to through
/// `bytes_mut` before the flush began and released later.
#[test]
fn probe_fsync_waits_for_another_threads_writable_pages() {
    for bshift in [9u32, 12, 16] {
        let model = pattern(3 * PAGE_SIZE + 100, 8);
        let (_disk, file) = small_file(bshift, &model);
        let (stored_tx, stored_rx) = mpsc::channel();
        let holder = {
            let file = file.clone();
            thread::spawn(move || {
                let mut pages = getpages(&file, Fault::write(P, 1))
                    .unwrap()
                    .into_writable()
                    .unwrap();
                pages.bytes_mut(0)[10..20].fill(0x5A);
                stored_tx.send(()).unwrap();
                thread::sleep(Duration::from_millis(200));
                pages.release();
            })
        };
        stored_rx.recv().unwrap();
        let f = file.clone();
        within("fsync", move || putpages(&f, 0, 0, FLUSH)).unwrap();
        holder.join().unwrap();
        let disk = file.disk_contents();
        assert!(
            disk[PAGE_SIZE + 10..PAGE_SIZE + 20]
                .iter()
                .all(|&b| b == 0x5A),
            "bshift {bshift}: fsync returned Ok before the stored bytes were on the disk"
        );
    }
}

/// Promise (departure 1, PutFlags::SYNCIO): an fsync that starts while an async
/// write of a dirty page is in flight and then fails must not return Ok unless the
/// page is on the device; the error is reported once.
#[test]
fn probe_fsync_racing_a_failing_async_writeback() {
    for threaded in [false, true] {
        let model0 = pattern(2 * PAGE_SIZE, 9);
        let disk = if threaded {
            MemDisk::threaded(1 << 14, true)
        } else {
            MemDisk::new(1 << 14)
        };
        let fs = MemFs::new(disk.clone(), 9, Layout::Contiguous);
        let file = fs.create(&model0).unwrap();
        let mut model = model0.clone();
        write(&file, 100, &[0x77; 5000]).unwrap();
        model[100..5100].fill(0x77);
        disk.hold();
        disk.fail_nth(1, Error::Io);
        putpages(&file, 0, 0, PutFlags::CLEANIT).unwrap();
        let f = file.clone();
        let (tx, rx) = mpsc::channel();
        let syncer = thread::spawn(move || tx.send(putpages(&f, 0, 0, FLUSH)).unwrap());
        thread::sleep(Duration::from_millis(50));
        disk.release();
        let first = rx.recv_timeout(HANG).expect("fsync hung");
        syncer.join().unwrap();
        disk.quiesce();
        if first.is_ok() {
            let on_disk = file.disk_contents();
            assert!(
                on_disk == model,
                "threaded {threaded}: fsync Ok but the data is not on the disk"
            );
        }
        let second = putpages(&file, 0, 0, FLUSH);
        assert!(
            first.is_err() != second.is_err() || first.is_ok(),
            "threaded {threaded}: error reported twice: {first:?} {second:?}"
        );
        assert!(second.is_ok() || first.is_ok(), "error never cleared");
        check_everywhere(&file, &model, &format!("threaded {threaded}"));
    }
}

/// Promise (departure 14, ResidentPages::bytes_mut): the LOCKED fast path hands out a
/// writable page only when a store through it reaches the disk. A page of 512-byte
/// blocks, one of them a hole, was read in (so it is resident and valid).
#[test]
fn probe_locked_write_fast_path_over_a_hole_loses_nothing() {
    for hole in [1u64, 3, 7] {
        let mut model = pattern(2 * PAGE_SIZE, 10);
        model[hole as usize * 512..(hole as usize + 1) * 512].fill(0);
        let (_disk, file) = sparse_file(9, &model, &[hole]);
        assert!(read_all(&file) == model);
        let stored = {
            let fetched = getpages(&file, Fault::resident(0, 1, Access::Write));
            match fetched.ok().and_then(|f| f.into_resident()) {
                Some(mut pages) => match pages.bytes_mut(0) {
                    Some(bytes) => {
                        bytes[hole as usize * 512 + 5] = 0x42;
                        true
                    }
                    None => false,
                },
                None => false,
            }
        };
        if stored {
            model[hole as usize * 512 + 5] = 0x42;
        }
        check_everywhere(&file, &model, &format!("hole {hole} stored {stored}"));
    }
}

/// Promise (putpages docs): every flag combination, single-threaded over dirty pages,
/// dirty mapped pages and clean ones, loses nothing unless it is FREE without
/// CLEANIT (documented to discard); never leaves a page busy.
#[test]
fn probe_putpages_every_flag_combination_loses_nothing() {
    let all = [
        PutFlags::CLEANIT,
        PutFlags::SYNCIO,
        PutFlags::FREE,
        PutFlags::DEACTIVATE,
        PutFlags::ALLPAGES,
        PutFlags::RECLAIM,
        PutFlags::BUSYFAIL,
        PutFlags::LAZY,
    ];
    for bshift in [9u32, 12, 16] {
        for bits in 0u32..256 {
            let mut flags = PutFlags::empty();
            for (i, f) in all.iter().enumerate() {
                if bits & (1 << i) != 0 {
                    flags |= *f;
                }
            }
            if !flags.intersects(PutFlags::CLEANIT | PutFlags::FREE | PutFlags::DEACTIVATE) {
                continue;
            }
            for range in [(0, 0), (P, 3 * P), (2 * P, 0)] {
                let what = format!("bshift {bshift} flags {flags:?} range {range:?}");
                let mut model = pattern(5 * PAGE_SIZE + 300, 11);
                let (_disk, file) = small_file(bshift, &model);
                write(&file, 1000, &[1; 3000]).unwrap();
                model[1000..4000].fill(1);
                write(&file, 3 * P + 7, &[2; 5000]).unwrap();
                model[3 * PAGE_SIZE + 7..3 * PAGE_SIZE + 5007].fill(2);
                store_through_mapping(&file, 2 * P, 33, &[3; 50]);
                model[2 * PAGE_SIZE + 33..2 * PAGE_SIZE + 83].fill(3);
                let r = putpages(&file, range.0, range.1, flags);
                assert!(r.is_ok(), "{what}: {r:?}");
                assert!(!any_busy(&file), "{what}: busy");
                if flags.contains(PutFlags::FREE) && !flags.contains(PutFlags::CLEANIT) {
                    continue;
                }
                check_everywhere(&file, &model, &what);
            }
        }
    }
}

/// Promise (crate docs, Concurrency): writers of non-overlapping (sub-page, unaligned)
/// ranges never lose each other's bytes; a writer's own read sees its write; its
/// CLEANIT|SYNCIO flush returns Ok only once its bytes are on the device -- while a
/// page daemon (CLEANIT|FREE), async flushes, DEACTIVATE and BUSYFAIL|LAZY flushes run,
/// an appender extends the file, and the device completes late and out of order.
fn concurrent_writers(bshift: u32, seed: u8) {
    let disk = MemDisk::threaded(1 << 16, true);
    let fs = MemFs::new(disk.clone(), bshift, Layout::Fragmented { run: 3 });
    let initial = pattern(6 * PAGE_SIZE + 300, seed);
    let file = fs.create(&initial).unwrap();
    file.set_max_transfer(2 * PAGE_SIZE);
    const WRITERS: usize = 3;
    const REGION: usize = 3001;
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(WRITERS + 4));
    let mut handles = Vec::new();
    let finals = Arc::new(Mutex::new(vec![Vec::new(); WRITERS + 1]));
    for k in 0..WRITERS {
        let (file, errors, start, finals) =
            (file.clone(), errors.clone(), start.clone(), finals.clone());
        handles.push(thread::spawn(move || {
            start.wait();
            let at = 77 + k * REGION;
            let mut last = Vec::new();
            for i in 0..12u8 {
                let data = pattern(REGION, seed ^ (k as u8 * 40 + i));
                match write(&file, at as u64, &data) {
                    Ok(n) if n == REGION => {}
                    other => errors
                        .lock()
                        .unwrap()
                        .push(format!("writer {k}: {other:?}")),
                }
                let mut back = vec![0; REGION];
                let _ = read(&file, at as u64, &mut back);
                if back != data {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("writer {k} iter {i}: read-back differs"));
                }
                if i % 3 == 2 {
                    match putpages(&file, 0, 0, FLUSH) {
                        Ok(()) => {
                            let disk = file.disk_contents();
                            if disk[at..at + REGION] != data[..] {
                                errors.lock().unwrap().push(format!(
                                    "writer {k} iter {i}: fsync Ok, disk lacks the bytes (first \
                                     wrong {:?})",
                                    first_diff(&disk[at..at + REGION], &data)
                                ));
                            }
                        }
                        Err(e) => errors
                            .lock()
                            .unwrap()
                            .push(format!("writer {k}: fsync {e:?}")),
                    }
                }
                last = data;
            }
            finals.lock().unwrap()[k] = last;
        }));
    }
    {
        // The appender: extends the file past everyone else.
        let (file, errors, start, finals) =
            (file.clone(), errors.clone(), start.clone(), finals.clone());
        handles.push(thread::spawn(move || {
            start.wait();
            let mut appended = Vec::new();
            for i in 0..10u8 {
                let at = initial_len(seed) + appended.len();
                let data = pattern(1500 + 333 * i as usize, seed.wrapping_add(i));
                match write(&file, at as u64, &data) {
                    Ok(n) if n == data.len() => appended.extend_from_slice(&data),
                    other => errors.lock().unwrap().push(format!("appender: {other:?}")),
                }
            }
            finals.lock().unwrap()[WRITERS] = appended;
        }));
    }
    for which in 0..2 {
        let (file, errors, start, stop) =
            (file.clone(), errors.clone(), start.clone(), stop.clone());
        handles.push(thread::spawn(move || {
            start.wait();
            let menu = [
                PutFlags::CLEANIT | PutFlags::FREE,
                PutFlags::CLEANIT,
                PutFlags::CLEANIT | PutFlags::DEACTIVATE,
                PutFlags::CLEANIT | PutFlags::FREE | PutFlags::SYNCIO,
                PutFlags::CLEANIT | PutFlags::BUSYFAIL | PutFlags::LAZY,
                PutFlags::DEACTIVATE | PutFlags::SYNCIO,
                PutFlags::CLEANIT | PutFlags::FREE | PutFlags::BUSYFAIL | PutFlags::ALLPAGES,
            ];
            let mut i = which;
            while !stop.load(Ordering::SeqCst) {
                let flags = menu[i % menu.len()];
                let (a, b) = if i % 2 == 0 { (0, 0) } else { (P, 4 * P) };
                match putpages(&file, a, b, flags) {
                    Ok(()) | Err(Error::Deadlock) => {}
                    Err(e) => errors
                        .lock()
                        .unwrap()
                        .push(format!("daemon {flags:?}: {e:?}")),
                }
                i += 1;
                thread::yield_now();
            }
        }));
    }
    start.wait();
    let (writers, rest) = handles.split_at_mut(WRITERS + 1);
    for h in writers
        .iter_mut()
        .map(|h| std::mem::replace(h, thread::spawn(|| {})))
    {
        h.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for h in rest
        .iter_mut()
        .map(|h| std::mem::replace(h, thread::spawn(|| {})))
    {
        h.join().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "bshift {bshift}: {errors:#?}");
    let finals = finals.lock().unwrap().clone();
    let mut model = initial.clone();
    for (k, data) in finals[..WRITERS].iter().enumerate() {
        let at = 77 + k * REGION;
        model[at..at + REGION].copy_from_slice(data);
    }
    model.extend_from_slice(&finals[WRITERS]);
    putpages(&file, 0, 0, FLUSH).unwrap();
    check_everywhere(&file, &model, &format!("bshift {bshift}"));
}

fn initial_len(_seed: u8) -> usize {
    6 * PAGE_SIZE + 300
}

#[test]
fn probe_concurrent_writers_flushers_appender_512() {
    within_for("concurrent writers", Duration::from_secs(60), || {
        concurrent_writers(9, 21)
    });
}

#[test]
fn probe_concurrent_writers_flushers_appender_1k_2k() {
    within_for("concurrent writers", Duration::from_secs(60), || {
        concurrent_writers(10, 22);
        concurrent_writers(11, 23)
    });
}

#[test]
fn probe_concurrent_writers_flushers_appender_4k_64k() {
    within_for("concurrent writers", Duration::from_secs(60), || {
        concurrent_writers(12, 24);
        concurrent_writers(16, 25)
    });
}

/// Promise (crate docs, departure 13, directio docs): direct writes of one range and
/// buffered writes of another (same filesystem block with 64 KiB blocks) never lose
/// each other's bytes, with flushes/evictions racing, on an out-of-order device.
fn direct_vs_buffered(bshift: u32) {
    let disk = MemDisk::threaded(1 << 16, true);
    let fs = MemFs::new(disk.clone(), bshift, Layout::Contiguous);
    let initial = pattern(16 * PAGE_SIZE, 30);
    let file = fs.create(&initial).unwrap();
    file.set_max_transfer(PAGE_SIZE);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let direct = {
        let (file, errors) = (file.clone(), errors.clone());
        thread::spawn(move || {
            let mut last = Vec::new();
            for i in 0..15u8 {
                let data = pattern(3 * PAGE_SIZE, 40 + i);
                match direct_write(&file, 0, &data) {
                    Ok(n) if n == data.len() => {}
                    Ok(n) => {
                        // Fell back: finish through the cache, as the caller must.
                        if let Err(e) = write(&file, n as u64, &data[n..]) {
                            errors.lock().unwrap().push(format!("fallback write {e:?}"));
                        }
                    }
                    Err(e) => errors.lock().unwrap().push(format!("direct {e:?}")),
                }
                last = data;
            }
            last
        })
    };
    let buffered = {
        let (file, errors) = (file.clone(), errors.clone());
        thread::spawn(move || {
            let mut last = Vec::new();
            for i in 0..15u8 {
                let data = pattern(2 * PAGE_SIZE + 123, 60 + i);
                if write(&file, 5 * P + 7, &data) != Ok(data.len()) {
                    errors.lock().unwrap().push("buffered write".into());
                }
                last = data;
            }
            last
        })
    };
    let daemon = {
        let (file, stop, errors) = (file.clone(), stop.clone(), errors.clone());
        thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let flags = [EVICT, PutFlags::CLEANIT | PutFlags::FREE, FLUSH][i % 3];
                if let Err(e) = putpages(&file, 0, 0, flags) {
                    errors.lock().unwrap().push(format!("daemon {e:?}"));
                }
                let mut buf = vec![0; 8 * PAGE_SIZE];
                let _ = read(&file, 0, &mut buf);
                i += 1;
            }
        })
    };
    let d = direct.join().unwrap();
    let b = buffered.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    daemon.join().unwrap();
    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "bshift {bshift}: {errors:#?}");
    let mut model = initial;
    model[..d.len()].copy_from_slice(&d);
    model[5 * PAGE_SIZE + 7..5 * PAGE_SIZE + 7 + b.len()].copy_from_slice(&b);
    check_everywhere(
        &file,
        &model,
        &format!("direct vs buffered, bshift {bshift}"),
    );
}

#[test]
fn probe_direct_vs_buffered_racing() {
    within_for("direct vs buffered", Duration::from_secs(60), || {
        for bshift in [9u32, 12, 16] {
            direct_vs_buffered(bshift);
        }
    });
}

/// Promise (setsize docs, departure 8): faults, reads and evictions racing
/// shrink-then-grow cycles never show the old bytes past a truncation point once the
/// file has been regrown over it (the filesystem frees the blocks after setsize).
fn truncate_race(bshift: u32) {
    let disk = MemDisk::threaded(1 << 15, true);
    let fs = MemFs::new(disk.clone(), bshift, Layout::Contiguous);
    let big = 12 * PAGE_SIZE + 100;
    let initial = pattern(big, 70);
    let file = fs.create(&initial).unwrap();
    let host = with_max_size(file.clone(), MAX_FILE_SIZE);
    let zero_from = Arc::new(AtomicUsize::new(usize::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for kind in 0..3 {
        let (host, zero_from, stop, errors, initial) = (
            host.clone(),
            zero_from.clone(),
            stop.clone(),
            errors.clone(),
            initial.clone(),
        );
        workers.push(thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let zf = zero_from.load(Ordering::SeqCst);
                match kind {
                    0 => {
                        let mut buf = vec![0; big];
                        let n = read(&host, 0, &mut buf).unwrap_or(0);
                        for at in 0..n {
                            let want_zero = at >= zf;
                            if buf[at] != 0 && (want_zero || buf[at] != initial[at]) {
                                errors.lock().unwrap().push(format!(
                                    "read: byte {at} = {} (zero from {zf})",
                                    buf[at]
                                ));
                                break;
                            }
                        }
                    }
                    1 => {
                        let page = (i * 5 + 3) % 13;
                        let flags = if i % 2 == 0 {
                            GetFlags::SYNCIO
                        } else {
                            GetFlags::LOCKED
                        };
                        if let Ok(f) = getpages(
                            &host,
                            Fault {
                                offset: page * P,
                                count: 1,
                                center: 0,
                                access: Access::Read,
                                advice: Advice::Normal,
                                flags,
                            },
                        ) {
                            let check = |bytes: &[u8]| {
                                for (j, &b) in bytes.iter().enumerate() {
                                    let at = (page * P) as usize + j;
                                    if at >= zf && b != 0 {
                                        return Some(at);
                                    }
                                }
                                None
                            };
                            let bad = if let Some(p) = f.into_busy() {
                                check(p.bytes(0))
                            } else {
                                None
                            };
                            if let Some(at) = bad {
                                errors
                                    .lock()
                                    .unwrap()
                                    .push(format!("fault: byte {at} nonzero (zero from {zf})"));
                            }
                        }
                    }
                    _ => {
                        let flags =
                            [EVICT, PutFlags::CLEANIT | PutFlags::FREE, FLUSH][i as usize % 3];
                        if let Err(e) = putpages(&host, 0, 0, flags) {
                            errors.lock().unwrap().push(format!("evict {e:?}"));
                        }
                    }
                }
                i += 1;
            }
        }));
    }
    let mut model = initial.clone();
    for small in [
        9 * PAGE_SIZE + 1000,
        7 * PAGE_SIZE + 513,
        5 * PAGE_SIZE,
        3 * PAGE_SIZE + 77,
        1000,
    ] {
        setsize(&host, small as u64).unwrap();
        host.free_blocks_past(small as u64);
        setsize(&host, big as u64).unwrap();
        model[small..].fill(0);
        zero_from.fetch_min(small, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "bshift {bshift}: {:#?}",
        &errors[..errors.len().min(5)]
    );
    putpages(&host, 0, 0, EVICT).unwrap();
    assert!(
        read_all(&host) == model,
        "bshift {bshift}: read after eviction"
    );
    assert!(host.disk_contents() == model, "bshift {bshift}: disk");
}

#[test]
fn probe_truncate_regrow_racing_faults_reads_evictions() {
    within_for("truncate race", Duration::from_secs(60), || {
        for bshift in BSHIFTS {
            truncate_race(bshift);
        }
    });
}

/// Promise (write docs): a write that a device error stops part-way returns its
/// short count and the bytes before it are kept; nothing after it changed.
#[test]
fn probe_short_write_on_a_device_error_mid_write() {
    for bshift in BSHIFTS {
        for nth in 1..4 {
            let mut model = pattern(8 * PAGE_SIZE, 80);
            let (disk, file) = small_file(bshift, &model);
            file.set_max_transfer(PAGE_SIZE);
            let data = pattern(5 * PAGE_SIZE, 81);
            disk.fail_nth(nth, Error::Io);
            let what = format!("bshift {bshift} nth {nth}");
            match write(&file, 100, &data) {
                Ok(n) => model[100..100 + n].copy_from_slice(&data[..n]),
                Err(e) => assert_eq!(e, Error::Io, "{what}"),
            }
            disk.clear_faults();
            check_everywhere(&file, &model, &what);
        }
    }
}

/// Promise (setsize docs: shrinking "waits for busy ones, and zeroes the tail of the
/// new last page"): another thread holding the new last page of a write fault and
/// storing past the new end before it releases: after regrowth those bytes read zero.
#[test]
fn probe_truncate_waits_for_a_held_last_page_then_zeroes_its_tail() {
    for bshift in [9u32, 12, 16] {
        let initial = pattern(4 * PAGE_SIZE, 82);
        let (_disk, file) = small_file(bshift, &initial);
        let host = with_max_size(file.clone(), MAX_FILE_SIZE);
        let (tx, rx) = mpsc::channel();
        let holder = {
            let host = host.clone();
            thread::spawn(move || {
                let mut pages = getpages(&host, Fault::write(0, 1))
                    .unwrap()
                    .into_writable()
                    .unwrap();
                tx.send(()).unwrap();
                thread::sleep(Duration::from_millis(100));
                pages.bytes_mut(0)[3000..3010].fill(0x99);
                pages.release();
            })
        };
        rx.recv().unwrap();
        let h = host.clone();
        within("truncate", move || {
            setsize(&h, 1000).unwrap();
            h.free_blocks_past(1000);
            setsize(&h, 2 * P).unwrap();
        });
        holder.join().unwrap();
        let mut model = initial[..1000].to_vec();
        model.resize(2 * PAGE_SIZE, 0);
        assert!(read_all(&host) == model, "bshift {bshift}: cached");
        putpages(&host, 0, 0, EVICT).unwrap();
        assert!(read_all(&host) == model, "bshift {bshift}: after eviction");
        assert!(host.disk_contents() == model, "bshift {bshift}: disk");
    }
}

/// Promise (README lock order, directio GLOCKHELD, the MemFile ledger): a caller that
/// holds the transaction, the journal and the node lock exclusively makes direct
/// writes and write faults with GLOCKHELD | JOURNALLOCKED; nothing enters the
/// transaction again and the ledger stays balanced.
#[test]
fn probe_glockheld_callers_on_a_journalled_mount_keep_the_ledger_clean() {
    let model = pattern(8 * PAGE_SIZE, 83);
    let (_disk, file) = small_file(12, &model);
    file.set_journal(true);
    file.trans_begin(true).unwrap();
    file.journal_begin().unwrap();
    {
        let _node = file.object().node_lock().write();
        let buf = Buffer::with(&[4u8; PAGE_SIZE]);
        let mut uio = Uio::new(
            P,
            Direction::Write,
            AddressSpace::User,
            vec![IoVec::readonly(buf.get())],
        )
        .unwrap();
        directio(
            &file,
            &mut uio,
            DirectFlags::GLOCKHELD | DirectFlags::JOURNALLOCKED,
        )
        .unwrap();
        let flags = GetFlags::SYNCIO | GetFlags::GLOCKHELD | GetFlags::JOURNALLOCKED;
        let mut pages = getpages(
            &file,
            Fault {
                offset: 2 * P,
                count: 1,
                center: 0,
                access: Access::Write,
                advice: Advice::Normal,
                flags,
            },
        )
        .unwrap()
        .into_writable()
        .unwrap();
        pages.bytes_mut(0)[0] = 9;
    }
    file.journal_end();
    file.trans_end();
    let ledger = file.ledger();
    assert!(ledger.is_clean(), "{ledger:#?}");
    let mut want = model;
    want[PAGE_SIZE..2 * PAGE_SIZE].fill(4);
    want[2 * PAGE_SIZE] = 9;
    check_everywhere(&file, &want, "glockheld");
}
