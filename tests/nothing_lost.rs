//! Regression tests for defects found by an outside review: acknowledged bytes that
//! were lost, stale or never written, refusals that were not made, and sizes left
//! wrong. Each test names the defect it covers (numbers of the review's list).
//!
//! Scenarios that could hang on a broken pager run on a spawned thread under a
//! timeout ([`within`]), so a hang fails the test instead of the run.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use genpager::Fault;
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::testing::{Direction, Hook, Layout, MemDisk, MemFile, MemFs, SECTOR_SIZE};
use genpager::{
    Access, Advice, Error, Fetched, GetFlags, PAGE_SIZE, PutFlags, Vnode, getpages, putpages, read,
    setsize, write,
};

// ---- helpers ----------------------------------------------------------------------

const P: u64 = PAGE_SIZE as u64;
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
const EVICT: PutFlags = PutFlags::CLEANIT
    .union(PutFlags::FREE)
    .union(PutFlags::SYNCIO);

/// Waits (bounded) for `f` to be true.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + HANG;
    while !f() {
        assert!(std::time::Instant::now() < deadline, "{what}: timed out");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The whole file through `read`.
fn read_all<V: Vnode>(file: &Arc<V>) -> Vec<u8> {
    let mut buf = vec![0u8; file.object().size() as usize + 10];
    let n = read(file, 0, &mut buf).expect("read back");
    buf.truncate(n);
    buf
}

/// A small file on a fresh inline disk.
fn small_file(fs_bshift: u32, data: &[u8]) -> (MemDisk, Arc<MemFile>) {
    let disk = MemDisk::new(16384);
    let fs = MemFs::new(disk.clone(), fs_bshift, Layout::Contiguous);
    let file = fs.create(data).expect("file fits");
    (disk, file)
}

/// Evicts every page, then checks that `read` and the disk both show `model`.
fn evict_and_check<V: Vnode>(
    file: &Arc<V>,
    model: &[u8],
    contents: impl Fn() -> Vec<u8>,
    what: &str,
) {
    if let Err(message) = try_evict_and_check(file, model, contents, what) {
        panic!("{message}");
    }
}

/// [`evict_and_check`], reporting instead of panicking.
fn try_evict_and_check<V: Vnode>(
    file: &Arc<V>,
    model: &[u8],
    contents: impl Fn() -> Vec<u8>,
    what: &str,
) -> Result<(), String> {
    putpages(file, 0, 0, EVICT).map_err(|e| format!("{what}: evict failed: {e:?}"))?;
    let size = file.object().size();
    if size != model.len() as u64 {
        return Err(format!("{what}: size {size}, want {}", model.len()));
    }
    let got = read_all(file);
    if got.len() != model.len() {
        return Err(format!(
            "{what}: read {} bytes, want {}",
            got.len(),
            model.len()
        ));
    }
    for (source, bytes) in [("read back", got), ("disk", contents())] {
        if let Some(at) = (0..model.len()).find(|&i| bytes[i] != model[i]) {
            let wrong = (0..model.len()).filter(|&i| bytes[i] != model[i]).count();
            return Err(format!(
                "{what}: {source} differs from byte {at} on ({wrong} bytes wrong): got {:#x}, \
                 want {:#x}",
                bytes[at], model[at]
            ));
        }
    }
    Ok(())
}

fn evict_and_check_file(file: &Arc<MemFile>, model: &[u8], what: &str) {
    let f = file.clone();
    evict_and_check(file, model, move || f.disk_contents(), what);
}

/// A direct write of `data` at `offset`; returns the bytes moved directly.
fn direct_write(file: &Arc<MemFile>, offset: u64, data: &[u8]) -> usize {
    let buf = Buffer::with(data);
    let mut uio = Uio::new(
        offset,
        Direction::Write,
        AddressSpace::User,
        vec![IoVec::readonly(buf.get())],
    )
    .unwrap();
    directio(file, &mut uio, DirectFlags::empty())
        .expect("direct write")
        .transferred
}

/// A direct read of `len` bytes at `offset`.
fn direct_read(file: &Arc<MemFile>, offset: u64, len: usize) -> (usize, Vec<u8>) {
    let mut buf = Buffer::with(&vec![0xEE; len]);
    let mut uio = Uio::new(
        offset,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::new(buf.get_mut())],
    )
    .unwrap();
    let moved = directio(file, &mut uio, DirectFlags::empty())
        .expect("direct read")
        .transferred;
    drop(uio);
    (moved, buf.get().to_vec())
}

/// The most blocks a file's table may grow to in the tests near `u64::MAX`
/// ([`MemFile::set_alloc_limit`]).
const MAX_TABLE: u64 = 1 << 20;

// ---- 1: asynchronous write faults -------------------------------------------------

/// A write fault started as read-ahead (no `SYNCIO`) on the second page: a combination
/// no `Fault` constructor makes, which getpages must refuse.
const ASYNC_WRITE_FAULT_AT_PAGE_1: Fault = Fault {
    offset: P,
    count: 1,
    center: 0,
    access: Access::Write,
    advice: Advice::Normal,
    flags: GetFlags::empty(),
};

/// Defect 1: a write fault without SYNCIO (and without LOCKED) over a hole was
/// started as read-ahead; it must be refused, leaving nothing busy or resident.
#[test]
fn async_write_fault_over_a_hole_is_refused() {
    let data = pattern(4 * PAGE_SIZE, 1);
    let (_disk, file) = sparse_file(12, &data, &[1]);
    let result = getpages(&file, ASYNC_WRITE_FAULT_AT_PAGE_1);
    assert!(
        matches!(result, Err(Error::Invalid)),
        "asynchronous write fault not refused: {}",
        match &result {
            Ok(Fetched::Started) => "Ok(Started)".to_string(),
            Ok(_) => "Ok(pages)".to_string(),
            Err(e) => format!("Err({e:?})"),
        }
    );
    drop(result);
    assert!(!any_busy(&file), "a page left busy");
    assert!(file.is_hole(1), "a refused fault allocated");
}

/// Defect 1, end to end: whatever the asynchronous write fault does, bytes stored
/// afterwards through the LOCKED write fast path must survive flush and eviction.
#[test]
fn async_write_fault_over_a_hole_then_locked_store_is_not_lost() {
    let mut model = pattern(4 * PAGE_SIZE, 2);
    model[PAGE_SIZE..2 * PAGE_SIZE].fill(0);
    let (_disk, file) = sparse_file(12, &model, &[1]);
    let result = getpages(&file, ASYNC_WRITE_FAULT_AT_PAGE_1).map(|_| ());
    if result == Err(Error::Invalid) {
        return; // refused: nothing to lose
    }
    wait_for("read-ahead to settle", || !any_busy(&file));
    let stored = match getpages(&file, Fault::resident(P, 1, Access::Write)) {
        Ok(fetched) => {
            let mut pages = fetched.into_resident().expect("resident pages");
            match pages.bytes_mut(0) {
                Some(bytes) => {
                    bytes[100..110].copy_from_slice(&[0xA5; 10]);
                    true
                }
                None => false,
            }
        }
        Err(_) => false,
    };
    if !stored {
        return; // the fast path refused the store: nothing acknowledged
    }
    model[PAGE_SIZE + 100..PAGE_SIZE + 110].fill(0xA5);
    putpages(&file, 0, 0, FLUSH).unwrap();
    evict_and_check_file(&file, &model, "store after an async write fault");
}

// ---- 3: read-ahead without memory --------------------------------------------------

/// Defect 3 (as far as the rig can reach it: the page cache's resident-page limit
/// stands in for an allocator failure): read-ahead that cannot allocate its pages
/// fails without sleeping, leaves nothing busy, and loses no dirty page it met on the
/// way.
#[test]
fn read_ahead_without_memory_fails_and_loses_nothing() {
    for bshift in [12u32, 14, 16] {
        let data = pattern(32 * PAGE_SIZE, 31);
        let (_disk, file) = small_file(bshift, &data);
        let mut model = data.clone();
        // Pages 0 and 5 resident and dirty.
        write(&file, 10, b"dirty zero").unwrap();
        write(&file, 5 * P + 10, b"dirty five").unwrap();
        model[10..20].copy_from_slice(b"dirty zero");
        model[5 * PAGE_SIZE + 10..5 * PAGE_SIZE + 20].copy_from_slice(b"dirty five");
        let residents = resident(&file).len();
        file.object().lock().cache_mut().set_limit(residents);
        for (offset, count) in [(0u64, 8usize), (P, 8), (4 * P, 4), (8 * P, 8)] {
            let f = file.clone();
            let result = within("read-ahead without memory", move || {
                getpages(&f, Fault::read_ahead(offset, count)).map(|_| ())
            });
            assert!(
                matches!(result, Err(Error::Busy | Error::NoMemory) | Ok(())),
                "bshift {bshift}: read-ahead {offset:#x}+{count}: {result:?}"
            );
            assert!(!any_busy(&file), "bshift {bshift}: pages left busy");
        }
        file.object().lock().cache_mut().set_limit(usize::MAX);
        putpages(&file, 0, 0, FLUSH).unwrap();
        evict_and_check_file(&file, &model, &format!("bshift {bshift}"));
    }
}

/// Defect 3, the error: read-ahead without memory says so (`NoMemory`, as getpages'
/// docs say) and leaves nothing behind.
#[test]
fn read_ahead_without_memory_is_no_memory_as_documented() {
    let (_disk, file) = small_file(12, &pattern(8 * PAGE_SIZE, 32));
    file.object().lock().cache_mut().set_limit(0);
    let result = getpages(&file, Fault::read_ahead(0, 4)).map(|_| ());
    assert_eq!(result, Err(Error::NoMemory));
    assert!(resident(&file).is_empty());
}

// ---- 4: failed trans_begin --------------------------------------------------------

/// Defect 4: getpages entered its transaction guard before `trans_begin` succeeded,
/// so a refused `trans_begin` was followed by a `trans_end`. The file refuses every
/// `trans_begin`, `trans_begin(true)` (what getpages calls) included.
#[test]
fn failed_trans_begin_in_getpages_is_not_ended() {
    let data = pattern(4 * PAGE_SIZE, 3);
    let (_disk, file) = small_file(12, &data);
    file.reset_hooks();
    file.fail_hook(Hook::TransBegin, u64::MAX, Error::Again);
    for (access, flags) in [
        (Access::Read, GetFlags::SYNCIO),
        (Access::Read, GetFlags::empty()),
        (Access::Write, GetFlags::SYNCIO),
    ] {
        let result = getpages(
            &file,
            Fault {
                offset: 0,
                count: 1,
                center: 0,
                access,
                advice: Advice::Normal,
                flags,
            },
        )
        .map(|_| ());
        assert_eq!(result, Err(Error::Again), "{access:?} {flags:?}");
    }
    assert_eq!(file.hooks().trans_begin, 0);
    assert_eq!(
        file.hooks().trans_end,
        0,
        "trans_end after a refused trans_begin"
    );
    assert!(!any_busy(&file));
    // read() and write() go through getpages too.
    let mut buf = [0u8; 10];
    assert_eq!(read(&file, 0, &mut buf), Err(Error::Again));
    assert!(write(&file, 0, b"x").is_err());
    assert_eq!(
        file.hooks().trans_end,
        0,
        "trans_end after a refused trans_begin (read/write)"
    );
}

/// Defect 4: the paths that call `trans_begin(false)` (a page-daemon flush) and the
/// direct I/O path must not end a transaction they did not begin either.
#[test]
fn failed_trans_begin_in_putpages_and_directio_is_not_ended() {
    let data = pattern(4 * PAGE_SIZE, 4);
    let (_disk, file) = small_file(12, &data);
    write(&file, 0, b"dirty").unwrap();
    file.reset_hooks();
    file.set_trans_busy(true);
    file.set_pagedaemon(true);
    let result = putpages(&file, 0, 0, PutFlags::CLEANIT);
    assert!(
        result.is_err(),
        "page-daemon flush with a busy mount: {result:?}"
    );
    let hooks = file.hooks();
    assert_eq!(
        (hooks.trans_begin, hooks.trans_end),
        (0, 0),
        "putpages after a refused trans_begin"
    );
    file.set_pagedaemon(false);
    file.set_trans_busy(false);

    file.reset_hooks();
    file.fail_hook(Hook::TransBegin, u64::MAX, Error::Again);
    let mut buf = Buffer::with(&[0u8; PAGE_SIZE]);
    let mut uio = Uio::new(
        0,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::new(buf.get_mut())],
    )
    .unwrap();
    assert!(directio(&file, &mut uio, DirectFlags::empty()).is_err());
    assert_eq!(file.hooks().trans_end, 0, "directio");
    assert!(file.hook_failures_left(Hook::TransBegin) > 0);
    file.fail_hook(Hook::TransBegin, 0, Error::Again);
    // The file is balanced once it accepts again.
    putpages(&file, 0, 0, FLUSH).unwrap();
    let hooks = file.hooks();
    assert_eq!(hooks.trans_begin, hooks.trans_end);
}

// ---- 6: a direct write racing a buffered read ---------------------------------------

/// Defect 6: a buffered read whose request is in flight while a direct write of the
/// same page runs must not leave the old bytes cached once the direct write returned.
/// Here the read is started first (its request held), then the direct write.
#[test]
fn direct_write_then_buffered_read_read_first() {
    let data = pattern(4 * PAGE_SIZE, 5);
    let (disk, file) = small_file(12, &data);
    let fresh = pattern(PAGE_SIZE, 6);
    disk.hold();
    let reader = {
        let file = file.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; PAGE_SIZE];
            read(&file, P, &mut buf).map(|_| buf)
        })
    };
    wait_for("the read's request", || disk.pending() == 1);
    let writer = {
        let (file, fresh) = (file.clone(), fresh.clone());
        thread::spawn(move || direct_write(&file, P, &fresh))
    };
    thread::sleep(Duration::from_millis(200));
    disk.release();
    let moved = within("direct write", move || writer.join().unwrap());
    assert_eq!(moved, PAGE_SIZE, "the write went direct");
    let got = within("buffered read", move || reader.join().unwrap()).unwrap();
    assert!(got == data[PAGE_SIZE..2 * PAGE_SIZE] || got == fresh);
    // Both returned: the cache must show the direct write.
    let mut now = vec![0u8; PAGE_SIZE];
    read(&file, P, &mut now).unwrap();
    assert!(
        now == fresh,
        "stale bytes cached after the direct write returned"
    );
    let mut model = data.clone();
    model[PAGE_SIZE..2 * PAGE_SIZE].copy_from_slice(&fresh);
    evict_and_check_file(&file, &model, "direct write then buffered read");
}

/// Defect 6: the direct write's request is in flight (held) when a buffered read of
/// the same page starts and sends its own request; the disk then services the two in
/// either order (a reordering disk: `burn` solo requests first move its deterministic
/// shuffle, so that some rounds serve the read before the write, as a real device may).
/// Once both returned, the cache must not hold the old bytes.
#[test]
fn direct_write_then_buffered_read_in_flight_together() {
    for burn in 0..4u64 {
        let disk = MemDisk::threaded(16384, true);
        let fs = MemFs::new(disk.clone(), 12, Layout::Contiguous);
        let data = pattern(4 * PAGE_SIZE, 5);
        let file = fs.create(&data).unwrap();
        let other = fs.create(&pattern(PAGE_SIZE, 7)).unwrap();
        for _ in 0..burn {
            // One request each, serviced alone: advances the disk's shuffle.
            let mut buf = vec![0u8; PAGE_SIZE];
            read(&other, 0, &mut buf).unwrap();
            putpages(&other, 0, 0, EVICT).unwrap();
        }
        assert_eq!(disk.log().len() as u64, burn);
        let fresh = pattern(PAGE_SIZE, 6);
        disk.hold();
        let writer = {
            let (file, fresh) = (file.clone(), fresh.clone());
            thread::spawn(move || direct_write(&file, P, &fresh))
        };
        wait_for("the direct write's request", || disk.pending() == 1);
        let reader = {
            let file = file.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; PAGE_SIZE];
                read(&file, P, &mut buf).map(|_| buf)
            })
        };
        // The read either sends its request or waits for the write: give it time (a
        // loaded machine needs some; a pager whose read waits pays it once per round).
        let deadline = std::time::Instant::now() + Duration::from_millis(750);
        while disk.pending() < 2 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let queued = disk.pending();
        disk.release();
        let moved = within("direct write", move || writer.join().unwrap());
        assert_eq!(moved, PAGE_SIZE, "burn {burn}: the write went direct");
        let got = within("buffered read", move || reader.join().unwrap()).unwrap();
        assert!(got == data[PAGE_SIZE..2 * PAGE_SIZE] || got == fresh);
        disk.quiesce();
        let mut now = vec![0u8; PAGE_SIZE];
        read(&file, P, &mut now).unwrap();
        assert!(
            now == fresh,
            "burn {burn}: stale bytes cached after the direct write returned \
             (the racing read returned the {} bytes; {queued} requests were queued)",
            if got == fresh { "new" } else { "old" }
        );
        let mut model = data.clone();
        model[PAGE_SIZE..2 * PAGE_SIZE].copy_from_slice(&fresh);
        evict_and_check_file(&file, &model, &format!("burn {burn}"));
    }
}

// ---- 7: whole sectors ------------------------------------------------------------

/// Defect 7: every request the pager sends a 512-byte-sector device is whole sectors,
/// also for a file whose size (10,000) is not a multiple of the sector size.
#[test]
fn requests_are_whole_sectors_for_a_ragged_file() {
    for bshift in [12u32, 10] {
        let mut model = pattern(10_000, 7);
        let (disk, file) = small_file(bshift, &model);
        disk.clear_log();
        assert!(read_all(&file) == model, "bshift {bshift}: cold read");
        write(&file, 9_990, &[0x42; 10]).unwrap();
        model[9_990..].fill(0x42);
        putpages(&file, 0, 0, FLUSH).unwrap();
        let (moved, bytes) = direct_read(&file, 0, 8192);
        assert_eq!(moved, 8192, "bshift {bshift}: direct read went direct");
        assert!(bytes == model[..8192]);
        putpages(&file, 0, 0, EVICT).unwrap();
        assert!(
            read_all(&file) == model,
            "bshift {bshift}: read after evict"
        );
        let log = disk.log();
        let ragged: Vec<_> = log.iter().filter(|r| r.len % SECTOR_SIZE != 0).collect();
        assert!(
            ragged.is_empty(),
            "bshift {bshift}: requests of partial sectors: {ragged:?}"
        );
        assert_eq!(file.disk_contents(), model, "bshift {bshift}: disk");
    }
}

/// Defect 7: the last page of a 10,000-byte file (at 4 KiB pages; two pages and 1,808
/// bytes at any page size) reads its bytes, then zeroes past the end of file, even when
/// the disk holds garbage after the last byte in that sector.
#[test]
fn requests_are_whole_sectors_and_the_tail_reads_as_zero() {
    for bshift in [12u32, 10, 9] {
        let size = 2 * PAGE_SIZE + 1808;
        let model = pattern(size, 8);
        let (disk, file) = small_file(bshift, &model);
        let last = sector_of(&file, size as u64 - 1).unwrap();
        let garbage_from = last * 512 + (size % 512) as u64;
        let block_end = (sector_of(&file, (size as u64 - 1) & !((1 << bshift) - 1)).unwrap() * 512)
            + (1u64 << bshift);
        disk.write_raw(
            garbage_from,
            &vec![0xEE; (block_end - garbage_from) as usize],
        );
        disk.clear_log();
        let pages = getpages(&file, Fault::read(2 * P, 1))
            .unwrap()
            .into_busy()
            .unwrap();
        let bytes = pages.bytes(0);
        assert!(
            bytes[..size - 2 * PAGE_SIZE] == model[2 * PAGE_SIZE..],
            "bshift {bshift}: file bytes"
        );
        let past = &bytes[size - 2 * PAGE_SIZE..];
        assert!(
            past.iter().all(|&b| b == 0),
            "bshift {bshift}: {} non-zero bytes past EOF in the last page",
            past.iter().filter(|&&b| b != 0).count()
        );
        drop(pages);
        for r in disk.log() {
            assert_eq!(r.len % SECTOR_SIZE, 0, "bshift {bshift}: {r:?}");
        }
        putpages(&file, 0, 0, EVICT).unwrap();
        assert!(read_all(&file) == model, "bshift {bshift}: whole read");
    }
}

// ---- 8: offsets near u64::MAX -----------------------------------------------------

/// Runs `f` on a fresh 64 KiB-block file of 100,000 bytes (whose allocation refuses
/// blocks past [`MAX_TABLE`] rather than grow its table absurdly) on its own thread;
/// returns `Ok(result)`, or `Err(panic message)`. The size must be unchanged.
fn on_fresh_file<T: Send + 'static>(
    f: impl FnOnce(&Arc<MemFile>) -> T + Send + 'static,
) -> Result<T, String> {
    let handle = thread::spawn(move || {
        let (_disk, file) = small_file(16, &pattern(100_000, 9));
        file.set_alloc_limit(Some(MAX_TABLE));
        let out = f(&file);
        (out, file.object().size())
    });
    match handle.join() {
        Ok((out, size)) => {
            if size != 100_000 {
                return Err(format!("size changed to {size:#x}"));
            }
            Ok(out)
        }
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())),
    }
}

/// Defect 8: getpages near the top of the offset space, PASTEOF, counts 1..=16: an
/// error, never a panic (debug overflow checks), the size unchanged.
#[test]
fn offsets_near_u64_max_getpages_fails_without_panicking() {
    let top = !(P - 1);
    let mut failures = Vec::new();
    for back in [0u64, 1, 2, 3, 15, 16, 17, 31] {
        let offset = top - back * P;
        for count in [1usize, 2, 8, 16] {
            for (access, flags) in [
                (Access::Read, GetFlags::SYNCIO | GetFlags::PASTEOF),
                (Access::Write, GetFlags::SYNCIO | GetFlags::PASTEOF),
            ] {
                let outcome = on_fresh_file(move |file| {
                    let r = getpages(
                        file,
                        Fault {
                            offset,
                            count,
                            center: 0,
                            access,
                            advice: Advice::Normal,
                            flags,
                        },
                    );
                    r.map(|_| ())
                });
                match outcome {
                    Ok(Err(Error::Invalid | Error::TooBig)) => {}
                    other => failures.push(format!(
                        "getpages({offset:#x}, {count}, {access:?}): {other:?}"
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Defect 8: `write` ending near or over `u64::MAX`: an error, never a panic, the
/// size unchanged.
#[test]
fn offsets_near_u64_max_write_fails_without_panicking() {
    let mut failures = Vec::new();
    for (offset, len) in [
        (u64::MAX - 10, 5usize),
        (u64::MAX - 10, 11),
        (u64::MAX - 10, 12),
        (u64::MAX - 5000, 100),
        (u64::MAX - 2 * P, 10),
        ((!(P - 1)) - 3 * P, 10),
        (!0xffff - 0x10000, 10),
        (i64::MAX as u64 - 10, 100),
        (1 << 63, 10),
    ] {
        let outcome = on_fresh_file(move |file| write(file, offset, &vec![0x33; len]));
        match outcome {
            Ok(Err(Error::Invalid | Error::TooBig)) => {}
            other => failures.push(format!("write({offset:#x}, {len}): {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Defect 8: `read` at offsets near `u64::MAX`: an error (as the brief asks: the
/// offset is past any file's reach), never a panic.
#[test]
fn offsets_near_u64_max_read_fails_without_panicking() {
    let mut failures = Vec::new();
    for (offset, len) in [
        (u64::MAX - 10, 5usize),
        (u64::MAX - 10, 100),
        (!(P - 1), 10),
        (u64::MAX - 2 * P, 3 * PAGE_SIZE),
        (1 << 63, 10),
    ] {
        let outcome = on_fresh_file(move |file| {
            let mut buf = vec![0u8; len];
            read(file, offset, &mut buf)
        });
        match outcome {
            Ok(Err(Error::Invalid | Error::TooBig)) => {}
            other => failures.push(format!("read({offset:#x}, {len}): {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---- 11a: extending a resident last page ------------------------------------------

/// Defect 11a: with blocks smaller than a page, extending a one-byte file whose page
/// is resident (and clean after a flush) lost part of the new bytes after eviction.
#[test]
fn extension_of_a_resident_last_page_keeps_every_byte() {
    let mut failures = Vec::new();
    // 700 bytes as in the report, and the same extension scaled to the block size (so
    // that it crosses into the next block for 1 KiB and 2 KiB blocks too).
    for (bshift, len) in [
        (9u32, 700usize),
        (10, 700),
        (11, 700),
        (10, 1400),
        (11, 2800),
    ] {
        let (_disk, file) = small_file(bshift, &[0x11]);
        assert_eq!(write(&file, 0, &[0x5a]).unwrap(), 1);
        putpages(&file, 0, 0, FLUSH).unwrap();
        let data = pattern(len, 10);
        assert_eq!(write(&file, 1, &data).unwrap(), len, "bshift {bshift}");
        putpages(&file, 0, 0, FLUSH).unwrap();
        let mut model = vec![0x5a];
        model.extend_from_slice(&data);
        let f = file.clone();
        let what = format!("bshift {bshift}, {len} bytes");
        if let Err(message) = try_evict_and_check(&file, &model, move || f.disk_contents(), &what) {
            failures.push(message);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- 11b: truncate, free the blocks, write in the last page --------------------------

/// Defect 11b: after a truncation into a resident page that freed the blocks past the
/// new end (the filesystem's part, [`MemFile::free_blocks_past`]), a write further into that page allocated nothing: its bytes
/// were never written.
#[test]
fn truncate_then_write_in_the_last_page_reaches_the_disk() {
    let data = pattern(PAGE_SIZE, 11);
    let (_disk, file) = small_file(10, &data);
    let mut buf = vec![0u8; PAGE_SIZE];
    assert_eq!(read(&file, 0, &mut buf).unwrap(), PAGE_SIZE);
    setsize(&file, 1000).unwrap();
    file.free_blocks_past(1000);
    let fresh = pattern(100, 12);
    assert_eq!(write(&file, 2600, &fresh).unwrap(), 100);
    putpages(&file, 0, 0, FLUSH).unwrap();
    let mut model = data[..1000].to_vec();
    model.resize(2600, 0);
    model.extend_from_slice(&fresh);
    evict_and_check_file(&file, &model, "truncate then write");
}

// ---- 12: fsync and pages busy in a read -------------------------------------------

/// Defect 12: a synchronous flush met dirty page 0 busy in a read-ahead and returned
/// without writing it (read-ahead of pages 0-1, page 0 dirty, disk held).
#[test]
fn fsync_waits_for_dirty_pages_busy_in_a_read() {
    let data = pattern(4 * PAGE_SIZE, 13);
    let (disk, file) = small_file(12, &data);
    write(&file, 0, b"new bytes of page zero").unwrap();
    let mut model = data.clone();
    model[..22].copy_from_slice(b"new bytes of page zero");
    disk.hold();
    let started = getpages(&file, Fault::read_ahead(0, 2));
    assert!(matches!(started, Ok(Fetched::Started)));
    drop(started);
    let in_flight = disk.pending();
    let flusher = {
        let file = file.clone();
        thread::spawn(move || {
            let result = putpages(&file, 0, 0, FLUSH);
            (result, file.disk_contents())
        })
    };
    thread::sleep(Duration::from_millis(250));
    let early = flusher.is_finished();
    disk.release();
    let (result, on_disk) = within("flush", move || flusher.join().unwrap());
    assert_eq!(result, Ok(()));
    assert!(
        on_disk[..22] == model[..22],
        "flush returned Ok (early: {early}, {in_flight} requests were in flight) before \
         page 0's new bytes were on the disk"
    );
    disk.quiesce();
    evict_and_check_file(&file, &model, "fsync during read-ahead");
}

/// Defect 12, the `read()` variant: pages 2-3 read on another thread (page 2 dirty,
/// page 3 not cached) while a synchronous flush runs.
#[test]
fn fsync_waits_for_dirty_pages_busy_in_a_read_of_two_pages() {
    let data = pattern(4 * PAGE_SIZE, 14);
    let (disk, file) = small_file(12, &data);
    write(&file, 2 * P + 10, b"dirty page two").unwrap();
    let mut model = data.clone();
    model[2 * PAGE_SIZE + 10..2 * PAGE_SIZE + 24].copy_from_slice(b"dirty page two");
    disk.hold();
    let reader = {
        let file = file.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 2 * PAGE_SIZE];
            read(&file, 2 * P, &mut buf).map(|_| buf)
        })
    };
    wait_for("the read's request", || disk.pending() >= 1);
    let flusher = {
        let file = file.clone();
        thread::spawn(move || {
            let result = putpages(&file, 0, 0, FLUSH);
            (result, file.disk_contents())
        })
    };
    thread::sleep(Duration::from_millis(250));
    let early = flusher.is_finished();
    disk.release();
    let (result, on_disk) = within("flush", move || flusher.join().unwrap());
    assert_eq!(result, Ok(()));
    assert!(
        on_disk[2 * PAGE_SIZE..3 * PAGE_SIZE] == model[2 * PAGE_SIZE..3 * PAGE_SIZE],
        "flush returned Ok (early: {early}) before page 2's new bytes were on the disk"
    );
    let got = within("read", move || reader.join().unwrap()).unwrap();
    assert!(
        got == model[2 * PAGE_SIZE..],
        "the read saw the dirty bytes"
    );
    evict_and_check_file(&file, &model, "fsync during read()");
}

// ---- 13a: concurrent extending writes --------------------------------------------

/// Defect 13a: two extending writes at different offsets past the end of file, run
/// concurrently, must both survive (and the gap read as zeroes).
#[test]
fn concurrent_extending_writes_keep_both() {
    let cases: [(u64, usize, u64, usize); 3] = [
        (1000, 500, 3000, 100),
        (1000, 500, 5000, 100),
        (1000, 3000, 9000, 200),
    ];
    for trial in 0..30u32 {
        for (case, &(a_at, a_len, b_at, b_len)) in cases.iter().enumerate() {
            let disk = MemDisk::threaded(16384, trial % 2 == 1);
            let fs = MemFs::new(disk.clone(), 10, Layout::Contiguous);
            let base = pattern(1000, 15);
            let file = fs.create(&base).unwrap();
            let a = pattern(a_len, 16 + trial as u8);
            let b = pattern(b_len, 17 + trial as u8);
            let barrier = Arc::new(Barrier::new(2));
            let spawn = |at: u64, bytes: Vec<u8>| {
                let (file, barrier) = (file.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    write(&file, at, &bytes)
                })
            };
            let (ta, tb) = (spawn(a_at, a.clone()), spawn(b_at, b.clone()));
            let (ra, rb) = within("extending writes", move || {
                (ta.join().unwrap(), tb.join().unwrap())
            });
            assert_eq!(
                (ra, rb),
                (Ok(a_len), Ok(b_len)),
                "trial {trial} case {case}"
            );
            let mut model = base.clone();
            model.resize((b_at as usize + b_len).max(a_at as usize + a_len), 0);
            model[a_at as usize..a_at as usize + a_len].copy_from_slice(&a);
            model[b_at as usize..b_at as usize + b_len].copy_from_slice(&b);
            let f = file.clone();
            within("flush", move || putpages(&f, 0, 0, FLUSH)).unwrap();
            evict_and_check_file(&file, &model, &format!("trial {trial} case {case}"));
        }
    }
}

// ---- 13b: a direct write racing a buffered write -----------------------------------

/// Defect 13b, forced order: a buffered write of a few bytes into page 1 whose read is
/// in flight while a direct write of the other half of page 1 runs.
#[test]
fn direct_write_racing_a_buffered_write_keeps_both_held() {
    let data = pattern(4 * PAGE_SIZE, 18);
    let (disk, file) = small_file(12, &data);
    let direct = pattern(2048, 19);
    let buffered = pattern(10, 20);
    disk.hold();
    let writer = {
        let (file, buffered) = (file.clone(), buffered.clone());
        thread::spawn(move || write(&file, P + 3000, &buffered))
    };
    wait_for("the buffered write's read", || disk.pending() == 1);
    let director = {
        let (file, direct) = (file.clone(), direct.clone());
        thread::spawn(move || direct_write(&file, P, &direct))
    };
    thread::sleep(Duration::from_millis(200));
    disk.release();
    assert_eq!(
        within("direct write", move || director.join().unwrap()),
        2048
    );
    assert_eq!(
        within("buffered write", move || writer.join().unwrap()),
        Ok(10)
    );
    let mut model = data.clone();
    model[PAGE_SIZE..PAGE_SIZE + 2048].copy_from_slice(&direct);
    model[PAGE_SIZE + 3000..PAGE_SIZE + 3010].copy_from_slice(&buffered);
    putpages(&file, 0, 0, FLUSH).unwrap();
    evict_and_check_file(&file, &model, "direct write racing a buffered write");
}

/// Defect 13b, free-running: repeated trials on a threaded (reordering) disk.
#[test]
fn direct_write_racing_a_buffered_write_keeps_both() {
    for trial in 0..40u32 {
        let disk = MemDisk::threaded(16384, trial % 2 == 0);
        let fs = MemFs::new(disk.clone(), 12, Layout::Contiguous);
        let data = pattern(4 * PAGE_SIZE, 21);
        let file = fs.create(&data).unwrap();
        if trial % 3 == 0 {
            // Page 1 resident for some trials.
            let mut buf = vec![0u8; PAGE_SIZE];
            read(&file, P, &mut buf).unwrap();
        }
        let direct = pattern(2048, 22 + trial as u8);
        let buffered = pattern(10, 23 + trial as u8);
        let barrier = Arc::new(Barrier::new(2));
        let director = {
            let (file, direct, barrier) = (file.clone(), direct.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                direct_write(&file, P, &direct)
            })
        };
        let writer = {
            let (file, buffered, barrier) = (file.clone(), buffered.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                write(&file, P + 3000, &buffered)
            })
        };
        let (moved, wrote) = within("racing writes", move || {
            (director.join().unwrap(), writer.join().unwrap())
        });
        assert_eq!((moved, wrote), (2048, Ok(10)), "trial {trial}");
        let mut model = data.clone();
        model[PAGE_SIZE..PAGE_SIZE + 2048].copy_from_slice(&direct);
        model[PAGE_SIZE + 3000..PAGE_SIZE + 3010].copy_from_slice(&buffered);
        let f = file.clone();
        within("flush", move || putpages(&f, 0, 0, FLUSH)).unwrap();
        evict_and_check_file(&file, &model, &format!("trial {trial}"));
    }
}

// ---- 14: failed writes leave the size ---------------------------------------------

/// Defect 14: an extending write that fails with ENOSPC leaves the size exactly as it
/// was (the zeroing of the old last block, or earlier batches, grew it).
#[test]
fn failed_write_leaves_the_size_on_enospc() {
    for (bshift, size, at, len) in [
        (12u32, 100u64, 10_000u64, 5000usize),
        (12, 100, 100, 10_000),
        (12, 100, 5000, 100),
        (10, 1000, 1000, 100_000),
        (9, 300, 400, 200_000),
    ] {
        // Two blocks: the file has one, a filler the other.
        let disk = MemDisk::new(2 << (bshift - 9));
        let fs = MemFs::new(disk, bshift, Layout::Contiguous);
        let file = fs.create(&pattern(size as usize, 24)).unwrap();
        let _filler = fs.create(&pattern(1 << bshift, 25)).unwrap();
        assert_eq!(fs.free_blocks(), 0);
        let result = write(&file, at, &pattern(len, 26));
        assert_eq!(
            result,
            Err(Error::NoSpace),
            "bshift {bshift} write {at}+{len}"
        );
        assert_eq!(
            file.object().size(),
            size,
            "bshift {bshift} write {at}+{len}: size after a failed write"
        );
        assert_eq!(file.object().read().write_size(), size);
    }
}

/// Defect 14: a `write` past the addressable range and `setsize(u64::MAX)` fail with
/// TooBig and leave the size unchanged.
#[test]
fn failed_write_leaves_the_size_on_toobig_and_setsize_refuses_huge_sizes() {
    let (_disk, file) = small_file(12, &pattern(100, 27));
    assert_eq!(write(&file, u64::MAX - 3, b"abcdef"), Err(Error::TooBig));
    assert_eq!(file.object().size(), 100);
    for huge in [u64::MAX, u64::MAX - P, (i64::MAX as u64) + 1] {
        let f = file.clone();
        let result = within("setsize", move || setsize(&f, huge));
        assert_eq!(result, Err(Error::TooBig), "setsize({huge:#x})");
        assert_eq!(
            file.object().size(),
            100,
            "setsize({huge:#x}) changed the size"
        );
    }
    assert!(read_all(&file) == pattern(100, 27));
}

// ---- 15: writing at EOF after reading the last page -------------------------------

/// Defect 15: after reading the last page of a file whose end is not block aligned, a
/// write over it was refused (`Err(Invalid)`).
#[test]
fn write_at_eof_after_reading_the_last_page_succeeds() {
    let (_disk, file) = small_file(9, &[0x11]);
    let mut one = [0u8; 1];
    assert_eq!(read(&file, 0, &mut one).unwrap(), 1);
    assert_eq!(write(&file, 0, &[6]), Ok(1));
    evict_and_check_file(&file, &[6], "512-byte blocks, 1-byte file");

    let data = pattern(12_289, 28);
    let (_disk, file) = small_file(10, &data);
    assert!(read_all(&file) == data);
    assert_eq!(write(&file, 12_288, &[0x77]), Ok(1));
    let mut model = data.clone();
    model[12_288] = 0x77;
    putpages(&file, 0, 0, FLUSH).unwrap();
    evict_and_check_file(&file, &model, "1 KiB blocks, 12,289-byte file");
}

// ---- extras: mutant killers -------------------------------------------------------

/// An OVERWRITE write fault racing a truncation: once both are done, no page survives
/// past the new end of file, and the size is the truncated one.
#[test]
fn overwrite_fault_racing_a_truncate_leaves_no_page_past_eof() {
    for trial in 0..60u32 {
        let data = pattern(8 * PAGE_SIZE, 29);
        let (_disk, file) = small_file(12, &data);
        let barrier = Arc::new(Barrier::new(2));
        let faulter = {
            let (file, barrier) = (file.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let fault = Fault::write(5 * P, 2).with_flags(GetFlags::OVERWRITE);
                match getpages(&file, fault) {
                    Ok(fetched) => {
                        let mut pages = fetched.into_writable().expect("writable pages");
                        for i in 0..pages.len() {
                            pages.bytes_mut(i).fill(0x99);
                        }
                        true
                    }
                    Err(_) => false,
                }
            })
        };
        let truncater = {
            let (file, barrier) = (file.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                setsize(&file, P + 100)
            })
        };
        let (_faulted, cut) = within("overwrite vs truncate", move || {
            (faulter.join().unwrap(), truncater.join().unwrap())
        });
        assert_eq!(cut, Ok(()));
        assert_eq!(file.object().size(), P + 100, "trial {trial}");
        let past: Vec<u64> = resident(&file)
            .into_iter()
            .filter(|&off| off >= 2 * P)
            .collect();
        assert!(past.is_empty(), "trial {trial}: pages past EOF: {past:x?}");
        putpages(&file, 0, 0, EVICT).unwrap();
        assert!(read_all(&file) == data[..PAGE_SIZE + 100], "trial {trial}");
    }
}

/// PutFlags::SYNCIO: "Wait for the writes (and for writes already in flight) to
/// finish": a synchronous flush of page 0 must not return while an asynchronous write
/// of page 10, started before it, is still in flight.
#[test]
fn syncio_flush_waits_for_a_write_in_flight_outside_its_range() {
    let data = pattern(16 * PAGE_SIZE, 30);
    let (disk, file) = small_file(12, &data);
    write(&file, 10 * P, b"page ten").unwrap();
    disk.hold();
    putpages(&file, 10 * P, 11 * P, PutFlags::CLEANIT).unwrap();
    assert_eq!(disk.pending(), 1, "the async write is held");
    let flusher = {
        let file = file.clone();
        thread::spawn(move || putpages(&file, 0, P, FLUSH))
    };
    thread::sleep(Duration::from_millis(200));
    let early = flusher.is_finished();
    disk.release();
    assert_eq!(within("flush", move || flusher.join().unwrap()), Ok(()));
    assert!(
        !early,
        "the synchronous flush returned while a write was still in flight"
    );
}
