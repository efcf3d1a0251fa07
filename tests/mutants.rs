//! Tests written to kill mutants that survived `cargo mutants` (and a previous
//! review's hand-made mutants) over the library code changed for issue 14. Each test
//! names the mutation it kills.
//!
//! Scenarios that could hang on a broken pager run on a spawned thread under a
//! timeout ([`within`]), so a hang fails the test instead of the run.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use genpager::Fault;
use genpager::cache::MapState;
use genpager::testing::{Layout, MemDisk, MemFile, MemFs};
use genpager::{
    DirtyStatus, Error, GetFlags, MAX_FILE_SIZE, PAGE_SIZE, PageCache, PutFlags, Vnode, getpages,
    putpages, read, setsize, write,
};

const P: u64 = PAGE_SIZE as u64;
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
const EVICT: PutFlags = PutFlags::CLEANIT
    .union(PutFlags::FREE)
    .union(PutFlags::SYNCIO);

/// A small file on a fresh inline disk.
fn small_file(fs_bshift: u32, data: &[u8]) -> (MemDisk, Arc<MemFile>) {
    let disk = MemDisk::new(16384);
    let fs = MemFs::new(disk.clone(), fs_bshift, Layout::Contiguous);
    let file = fs.create(data).expect("file fits");
    (disk, file)
}

/// The whole file through `read`.
fn read_all<V: Vnode>(file: &Arc<V>) -> Vec<u8> {
    let mut buf = vec![0u8; file.object().size() as usize + 10];
    let n = read(file, 0, &mut buf).expect("read back");
    buf.truncate(n);
    buf
}

/// Kills: `Fault::attempt` without its first size re-check after re-taking the
/// object lock (`if state.size() != original_size { return Attempt::Retry }`).
///
/// An overwrite fault computes its span under the object lock, drops it and waits
/// for the node lock, which a truncation holds (played here by the test: it holds
/// the node lock exclusively and shrinks the size, as `setsize` does). Once the fault
/// gets the lock it must see the new size and refuse pages wholly past it; without
/// the re-check it hands out pages past EOF on the strength of the old size (the
/// overwrite path returns before the later re-check).
#[test]
fn overwrite_fault_rechecks_the_size_after_waiting_for_the_node_lock() {
    let data = pattern(8 * PAGE_SIZE, 41);
    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    putpages(&file, 0, 0, EVICT).unwrap();
    assert!(resident(&file).is_empty());

    let node = file.object().node_lock().write();
    let faulter = {
        let file = file.clone();
        thread::spawn(move || {
            let fault = Fault::write(5 * P, 2).with_flags(GetFlags::OVERWRITE);
            match getpages(&file, fault) {
                Ok(fetched) => {
                    let mut pages = fetched.into_writable().expect("writable pages");
                    for i in 0..pages.len() {
                        pages.bytes_mut(i).fill(0x99);
                    }
                    Ok(pages.len())
                }
                Err(error) => Err(error),
            }
        })
    };
    // Let the fault take its span and block on the node lock.
    thread::sleep(Duration::from_millis(200));
    assert!(!faulter.is_finished(), "the fault waits for the node lock");
    file.object().lock().set_sizes(P + 100, P + 100);
    drop(node);

    let fault = within("overwrite fault", move || faulter.join().unwrap());
    assert_eq!(
        fault,
        Err(Error::Invalid),
        "a fault wholly past the new EOF"
    );
    let past: Vec<u64> = resident(&file)
        .into_iter()
        .filter(|&off| off >= 2 * P)
        .collect();
    assert!(past.is_empty(), "pages past EOF: {past:x?}");
    putpages(&file, 0, 0, EVICT).unwrap();
    assert!(read_all(&file) == data[..PAGE_SIZE + 100]);
}

/// Kills: `WritablePages::bytes_mut` no longer marking the page dirty
/// (`mark_written` dropped from it).
///
/// A write fault over a clean, allocated, resident page hands it out as it is; the
/// store through `bytes_mut` is the only thing that says it changed. A flush and an
/// eviction must then leave those bytes on the disk.
#[test]
fn store_through_a_write_fault_reaches_the_disk() {
    let data = pattern(4 * PAGE_SIZE, 42);
    let (disk, file) = small_file(PAGE_SHIFT, &data);
    // Page 1 resident and clean.
    let mut buf = vec![0u8; PAGE_SIZE];
    assert_eq!(read(&file, P, &mut buf), Ok(PAGE_SIZE));
    assert_eq!(buf, data[PAGE_SIZE..2 * PAGE_SIZE]);

    let fetched = getpages(&file, Fault::write(P, 1)).unwrap();
    let mut pages = fetched.into_writable().expect("writable pages");
    pages.bytes_mut(0)[100..108].copy_from_slice(b"stored!!");
    drop(pages);

    putpages(&file, 0, 0, FLUSH).unwrap();
    putpages(&file, 0, 0, EVICT).unwrap();
    assert!(resident(&file).is_empty());
    assert_eq!(disk.pending(), 0);

    let mut expected = data.clone();
    expected[PAGE_SIZE + 100..PAGE_SIZE + 108].copy_from_slice(b"stored!!");
    assert!(file.disk_contents() == expected, "the store is on the disk");
    assert!(read_all(&file) == expected, "and reads back");
}

/// Kills: `WritablePages::mark_all_written` replaced with `()`.
///
/// A host whose MMU stores to a write fault's pages through a mapping (not through
/// `bytes_mut`) says so with `mark_all_written`: every page is dirty from then on and
/// a flush writes it. Here the pages are clean and resident before the fault, so
/// nothing else dirties them.
#[test]
fn mark_all_written_dirties_every_page_and_a_flush_writes_them() {
    let data = pattern(4 * PAGE_SIZE, 43);
    let (disk, file) = small_file(PAGE_SHIFT, &data);
    let mut buf = vec![0u8; 4 * PAGE_SIZE];
    assert_eq!(read(&file, 0, &mut buf), Ok(4 * PAGE_SIZE));
    for index in 0..4 {
        assert_eq!(page(&file, index * P).unwrap().1, DirtyStatus::Clean);
    }

    let fetched = getpages(&file, Fault::write(P, 2)).unwrap();
    let mut pages = fetched.into_writable().expect("writable pages");
    assert_eq!(pages.len(), 2);
    pages.mark_all_written();
    drop(pages);

    for index in 0..4 {
        let expected = if (1..3).contains(&index) {
            DirtyStatus::Dirty
        } else {
            DirtyStatus::Clean
        };
        assert_eq!(page(&file, index * P).unwrap().1, expected, "page {index}");
    }
    disk.clear_log();
    putpages(&file, 0, 0, FLUSH).unwrap();
    let written: usize = disk.log().iter().map(|r| r.len).sum();
    assert_eq!(written, 2 * PAGE_SIZE, "the two marked pages are written");
    for index in 0..4 {
        assert_eq!(page(&file, index * P).unwrap().1, DirtyStatus::Clean);
    }
}

/// The write paths a journal could be begun on: a write, an extending write, a
/// write fault over a hole, a flush, a shrink and a growth.
fn journal_paths(file: &Arc<MemFile>) {
    assert_eq!(write(file, 100, b"journal?"), Ok(8));
    assert_eq!(write(file, 6 * P + 10, b"grow"), Ok(4));
    let fetched = getpages(file, Fault::write(8 * P, 1));
    // Past EOF: refused, or handed out; either way no journal is left open.
    if let Ok(fetched) = fetched {
        drop(fetched);
    }
    putpages(file, 0, 0, FLUSH).unwrap();
    setsize(file, 3 * P + 1).unwrap();
    setsize(file, 5 * P).unwrap();
    putpages(file, 0, 0, EVICT).unwrap();
}

/// Kills: `Transaction::begin_journal` with `||` replaced by `&&` (a journal begun on
/// a mount without one, or begun twice in one transaction).
///
/// Without a journal no path may call `journal_begin`; with one, every begin is
/// ended, and each transaction holds at most one journal.
#[test]
fn journal_is_begun_only_on_a_journalled_mount_and_once() {
    let data = pattern(4 * PAGE_SIZE, 44);
    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    assert!(!file.has_journal());
    file.reset_hooks();
    journal_paths(&file);
    let hooks = file.hooks();
    assert!(hooks.trans_begin > 0);
    assert_eq!(hooks.trans_begin, hooks.trans_end);
    assert_eq!(hooks.journal_begin, 0, "no journal on this mount");
    assert_eq!(hooks.journal_end, 0);

    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    file.set_journal(true);
    file.reset_hooks();
    journal_paths(&file);
    let hooks = file.hooks();
    assert!(hooks.journal_begin > 0);
    assert_eq!(hooks.journal_begin, hooks.journal_end);
    assert!(hooks.journal_begin <= hooks.trans_begin);
    assert_eq!(hooks.trans_begin, hooks.trans_end);
}

/// Kills: `DefaultCache::mapped_bytes` returning `None` or an empty slice, and its
/// `||` replaced by `&&` (a busy page's bytes shown as if no one held them).
#[test]
fn mapped_bytes_shows_a_valid_page_and_hides_a_busy_one() {
    let data = pattern(2 * PAGE_SIZE, 45);
    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    let mut buf = vec![0u8; 2 * PAGE_SIZE];
    assert_eq!(read(&file, 0, &mut buf), Ok(2 * PAGE_SIZE));
    {
        let state = file.object().read();
        let bytes = state.cache().mapped_bytes(P).expect("resident and valid");
        assert!(bytes == &data[PAGE_SIZE..], "the page's bytes");
        assert_eq!(state.cache().mapped_bytes(4 * P), None, "not resident");
    }

    // Page 1 busy (in a read fault's hands), valid, not fake.
    let fetched = getpages(&file, Fault::read(P, 1)).unwrap();
    {
        let state = file.object().read();
        assert_eq!(state.cache().mapped_bytes(P), None, "busy");
        assert!(
            state.cache().mapped_bytes(0).is_some(),
            "page 0 is not busy"
        );
    }
    drop(fetched);
    assert!(file.object().read().cache().mapped_bytes(P).is_some());
}

/// Kills: `DefaultCache::is_writable_mapped` returning `false`.
///
/// A read fault write-protects a page mapped writable before it hands the page's
/// bytes out, so no store can land while the slice lives.
#[test]
fn read_fault_write_protects_a_writable_mapped_page() {
    let data = pattern(2 * PAGE_SIZE, 46);
    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    let mut buf = vec![0u8; 2 * PAGE_SIZE];
    assert_eq!(read(&file, 0, &mut buf), Ok(2 * PAGE_SIZE));
    file.object().lock().cache_mut().map(P, MapState::Writable);
    assert!(file.object().read().cache().is_writable_mapped(P));

    let fetched = getpages(&file, Fault::read(P, 1)).unwrap();
    assert_eq!(
        file.object().read().cache().map_state(P),
        MapState::ReadOnly,
        "write-protected while its bytes are handed out"
    );
    assert!(!file.object().read().cache().is_writable_mapped(P));
    drop(fetched);
}

/// Kills: `write`'s short-write arm (`Err(error) if written > 0`) with its guard
/// replaced by `false` or `written < 0`: a write that fails part-way (the filesystem
/// fills up) returns the bytes it wrote, and the file keeps them and the size that
/// covers them.
#[test]
fn write_failing_part_way_returns_its_short_count() {
    let data = pattern(PAGE_SIZE, 47);
    let disk = MemDisk::new(8 * P / 512);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create(&data).expect("file fits");
    // One page a batch; room for `free` more pages.
    file.set_max_transfer(PAGE_SIZE);
    let free = fs.free_blocks() as usize;
    assert!(free >= 2, "room for a short write");
    let more = pattern((free + 2) * PAGE_SIZE, 48);
    let written = write(&file, P, &more);
    assert_eq!(written, Ok(free * PAGE_SIZE), "as much as fitted");
    assert_eq!(file.object().size(), (free as u64 + 1) * P);

    putpages(&file, 0, 0, EVICT).unwrap();
    let mut expected = data.clone();
    expected.extend_from_slice(&more[..free * PAGE_SIZE]);
    assert!(
        read_all(&file) == expected,
        "what was acknowledged reads back"
    );
    assert!(file.disk_contents() == expected, "and is on the disk");
}

/// Kills: `zero_old_tail` with its block mask computed as `block_size + 1` or
/// `block_size / 1` (a page-aligned old end inside a block taken for a block end),
/// and with the end of the old last block as `(old_size | mask) - 1`.
///
/// With blocks of two pages (8 KiB at 4 KiB pages) and a file of one page, the second
/// half of block 0 is past EOF on the disk and may hold stale bytes; a write that grows
/// the file over it must leave it reading as zero.
#[test]
fn growth_zeroes_the_old_last_block_past_a_page_aligned_end() {
    let data = pattern(PAGE_SIZE, 49);
    let (disk, file) = small_file(PAGE_SHIFT + 1, &data);
    putpages(&file, 0, 0, EVICT).unwrap();
    let sector = sector_of(&file, 0).expect("block 0 mapped");
    disk.write_raw(sector * 512 + P, &[0xee; PAGE_SIZE]);

    assert_eq!(write(&file, 3 * P, b"tail"), Ok(4));
    let mut expected = data.clone();
    expected.resize(3 * PAGE_SIZE, 0);
    expected.extend_from_slice(b"tail");
    assert!(read_all(&file) == expected, "the gap reads as zero");
    putpages(&file, 0, 0, EVICT).unwrap();
    assert!(read_all(&file) == expected, "from the disk too");
    assert!(file.disk_contents() == expected);
}

/// Kills: `zero_old_tail`'s early return for an old end on a block (and page)
/// boundary weakened (`||` to `&&`, either mask test's `&` to `|`/`^`, the page test's
/// `==` to `!=`): there is no stale tail then, and zeroing one block past it would
/// fill a hole the file should keep.
#[test]
fn growth_from_a_block_aligned_end_keeps_the_gap_a_hole() {
    let data = pattern(PAGE_SIZE, 50);
    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    assert_eq!(write(&file, 10 * P, b"far"), Ok(3));
    putpages(&file, 0, 0, EVICT).unwrap();
    for lbn in 1..10 {
        assert!(file.is_hole(lbn), "block {lbn} of the gap stays a hole");
    }
    let mut expected = data.clone();
    expected.resize(10 * PAGE_SIZE, 0);
    expected.extend_from_slice(b"far");
    assert!(read_all(&file) == expected);
}

/// Kills: `write_batch` taking a write that starts inside a page and ends on a page
/// boundary for whole pages (`pos == first` to `pos != first`): the page must be read
/// first, or the bytes before the write are lost.
#[test]
fn write_from_mid_page_to_its_end_keeps_the_bytes_before_it() {
    let data = pattern(2 * PAGE_SIZE, 51);
    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    putpages(&file, 0, 0, EVICT).unwrap();
    let half = PAGE_SIZE / 2;
    assert_eq!(
        write(&file, P + half as u64, &[0x77; PAGE_SIZE / 2]),
        Ok(half)
    );
    putpages(&file, 0, 0, EVICT).unwrap();
    let mut expected = data.clone();
    expected[PAGE_SIZE + half..].fill(0x77);
    assert!(read_all(&file) == expected);
    assert!(file.disk_contents() == expected);
}

/// Kills: `setsize`'s limit check with `>` replaced by `>=`: a size of exactly
/// `MAX_FILE_SIZE` is allowed, one byte more is `TooBig`.
#[test]
fn setsize_allows_exactly_the_largest_size() {
    let data = pattern(PAGE_SIZE, 52);
    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    assert_eq!(setsize(&file, MAX_FILE_SIZE + 1), Err(Error::TooBig));
    assert_eq!(file.object().size(), P);
    assert_eq!(setsize(&file, MAX_FILE_SIZE), Ok(()));
    assert_eq!(file.object().size(), MAX_FILE_SIZE);
    assert_eq!(setsize(&file, P), Ok(()));
    putpages(&file, 0, 0, EVICT).unwrap();
    assert!(read_all(&file) == data);
}

/// Kills: `zero_resident_tail` replaced by `Ok(())`, its `within == 0` test inverted,
/// and its `valid` test inverted: a shrink to the middle of a resident page zeroes
/// the page past the new end at once, as a mapping of the page then shows it.
#[test]
fn shrink_to_mid_page_zeroes_the_resident_tail() {
    let data = pattern(2 * PAGE_SIZE, 53);
    let (_disk, file) = small_file(PAGE_SHIFT, &data);
    let mut buf = vec![0u8; 2 * PAGE_SIZE];
    assert_eq!(read(&file, 0, &mut buf), Ok(2 * PAGE_SIZE));
    assert_eq!(setsize(&file, P + 100), Ok(()));
    {
        let state = file.object().read();
        let bytes = state.cache().mapped_bytes(P).expect("page 1 resident");
        assert!(bytes[..100] == data[PAGE_SIZE..PAGE_SIZE + 100]);
        assert!(
            bytes[100..].iter().all(|&b| b == 0),
            "zero past the new end"
        );
    }
    putpages(&file, 0, 0, EVICT).unwrap();
    assert!(read_all(&file) == data[..PAGE_SIZE + 100]);
}
