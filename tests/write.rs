//! The buffered write helper and setsize, end to end with putpages.
//!
//! These are outside the catalogue (its rows cover getpages, putpages, direct I/O and
//! the compat pager): the sections below say what each group covers, and each
//! regression the model tests found tells its bug in its doc comment.

mod common;

use std::sync::Arc;

use common::*;
use genpager::page::round_page;
use genpager::testing::{Layout, MemDisk, MemFile, MemFs};
use genpager::{
    Fault, PAGE_SIZE, PageCache, PutFlags, Vnode, getpages, putpages, read, setsize, write,
};

/// What fsync asks for: every dirty page written, synchronously.
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);
/// [`FLUSH`], and the pages freed once written.
const FLUSH_AND_FREE: PutFlags = FLUSH.union(PutFlags::FREE);

/// The whole file through the buffered read helper.
fn read_all(file: &Arc<MemFile>) -> Vec<u8> {
    let mut buf = vec![0u8; file.object().size() as usize + 10];
    let n = read(file, 0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// A file holding `data` in contiguous blocks on a disk of only `sectors` sectors, so
/// that a write can run out of space.
fn file_on_small_disk(sectors: u64, fs_bshift: u32, data: &[u8]) -> Arc<MemFile> {
    let fs = MemFs::new(MemDisk::new(sectors), fs_bshift, Layout::Contiguous);
    fs.create(data).unwrap()
}

/// The file reads as `model` from the cache, and once flushed the disk holds it too.
fn assert_cache_then_disk_hold(file: &Arc<MemFile>, model: &[u8], what: &str) {
    assert!(read_all(file) == model, "{what}: cache");
    putpages(file, 0, 0, FLUSH).unwrap();
    assert!(file.disk_contents() == model, "{what}: disk");
}

/// Once flushed and freed, the file reads back from the disk as `model`, and the disk
/// holds it.
fn assert_evicted_file_holds(file: &Arc<MemFile>, model: &[u8], what: &str) {
    putpages(file, 0, 0, FLUSH_AND_FREE).unwrap();
    assert!(read_all(file) == model, "{what}: read back");
    assert!(file.disk_contents() == model, "{what}: disk");
}

/// Stores `bytes` at `at` of the page at `page` the way a store through a mapping
/// does after its write fault, flushes, and returns what the disk then holds.
fn store_through_a_write_fault(file: &Arc<MemFile>, page: u64, at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut pages = getpages(file, Fault::write(page, 1))
        .unwrap()
        .into_writable()
        .unwrap();
    pages.bytes_mut(0)[at..at + bytes.len()].copy_from_slice(bytes);
    drop(pages);
    putpages(file, 0, 0, FLUSH).unwrap();
    file.disk_contents()
}

// ---- the buffered write: what it writes reaches the cache and the disk ----------------

#[test]
fn writes_read_back_and_reach_the_disk_for_every_block_size() {
    for bshift in [9u32, 10, 12, 14, 16] {
        let mut model = pattern(100_000, bshift as u8);
        let (_disk, file) = file_with(bshift, Layout::Fragmented { run: 2 }, &model);
        for (offset, len) in [
            (0usize, 10usize),
            (4090, 20),
            (8192, 4096),
            (12_000, 30_000),
            (99_990, 10),
        ] {
            let data = pattern(len, (offset as u8).wrapping_add(77));
            assert_eq!(write(&file, offset as u64, &data).unwrap(), len);
            model[offset..offset + len].copy_from_slice(&data);
        }
        assert_cache_then_disk_hold(&file, &model, &format!("bshift {bshift}"));
    }
}

#[test]
fn extending_write_grows_the_file_and_zeroes_the_gap() {
    for bshift in [9u32, 12, 14, 16] {
        let mut model = pattern(5000, 1);
        let (disk, file) = file_with(bshift, Layout::Contiguous, &model);
        // Stale bytes after EOF in the last block must not show after growth.
        let sector = sector_of(&file, 4096).unwrap();
        disk.write_raw(sector * 512 + 904, &[0xEE; 100]);
        let data = pattern(70_000, 2);
        write(&file, 9000, &data).unwrap();
        model.resize(9000, 0);
        model.extend_from_slice(&data);
        assert_eq!(file.object().size(), model.len() as u64);
        assert_cache_then_disk_hold(&file, &model, &format!("bshift {bshift}"));
    }
}

#[test]
fn write_into_holes_allocates_and_flushes() {
    let size = 8 * PAGE_SIZE;
    let mut model = pattern(size, 3);
    for lbn in [1usize, 2, 5] {
        model[lbn * PAGE_SIZE..(lbn + 1) * PAGE_SIZE].fill(0);
    }
    let (_disk, file) = sparse_file(PAGE_SHIFT, &model, &[1, 2, 5]);
    let data = pattern(PAGE_SIZE + 100, 4);
    write(&file, (PAGE_SIZE + 50) as u64, &data).unwrap();
    model[PAGE_SIZE + 50..2 * PAGE_SIZE + 150].copy_from_slice(&data);
    assert!(!file.is_hole(1) && !file.is_hole(2));
    assert!(file.is_hole(5));
    putpages(&file, 0, 0, FLUSH).unwrap();
    assert!(file.disk_contents() == model);
}

#[test]
fn write_into_big_block_hole_zeroes_the_rest_of_the_block() {
    // 64 KiB blocks: writing one page into a hole allocates the block; the other 15
    // pages of the block must read (and be written) as zeroes, not as stale disk.
    let disk = MemDisk::new(8192);
    let fs = MemFs::new(disk.clone(), 16, Layout::Contiguous);
    let mut model = vec![0u8; 3 * 65536];
    model[..65536].copy_from_slice(&pattern(65536, 5));
    disk.write_raw(0, &vec![0xAB; 4 << 20]);
    let file = fs.create_sparse(model.len() as u64, &model, &[1]).unwrap();
    write(&file, 65536 + 8192, b"hello").unwrap();
    model[65536 + 8192..65536 + 8197].copy_from_slice(b"hello");
    assert_evicted_file_holds(&file, &model, "64 KiB blocks");
}

#[test]
fn empty_and_overflowing_writes() {
    let (_disk, file) = file_with(12, Layout::Contiguous, &pattern(100, 7));
    assert_eq!(write(&file, 5, &[]).unwrap(), 0);
    assert_eq!(
        write(&file, u64::MAX - 3, b"abcdef"),
        Err(genpager::Error::TooBig)
    );
    assert_eq!(file.object().size(), 100);
}

#[test]
fn a_short_write_grows_the_file_by_what_it_wrote_and_leaves_no_page_past_it() {
    for bshift in [9u32, 10, 12] {
        // Room for the file's block and 5 pages more; the write wants 25 pages (20 and
        // 100 KiB at 4 KiB pages).
        let block = 1u64 << bshift;
        let mut model = pattern(block as usize, 31);
        let file = file_on_small_disk((block + 5 * PAGE_SIZE as u64) / 512, bshift, &model);
        // One page a batch, so the write gets part of the way before space runs out.
        file.set_max_transfer(PAGE_SIZE);
        let data = pattern(25 * PAGE_SIZE, 32);
        let written = write(&file, block, &data).unwrap();
        assert!(
            written > 0 && written < data.len(),
            "bshift {bshift}: {written} of {} bytes",
            data.len()
        );
        let size = file.object().size();
        assert_eq!(size, block + written as u64, "bshift {bshift}");
        assert_eq!(file.object().read().write_size(), size);
        let past: Vec<u64> = {
            let state = file.object().read();
            state
                .cache()
                .range(round_page(size)..u64::MAX)
                .map(|page| page.offset())
                .collect()
        };
        assert!(past.is_empty(), "bshift {bshift}: pages past EOF {past:x?}");
        model.extend_from_slice(&data[..written]);
        assert_evicted_file_holds(&file, &model, &format!("bshift {bshift}"));
    }
}

// ---- setsize ---------------------------------------------------------------------------

#[test]
fn setsize_shrink_frees_pages_and_zeroes_the_tail() {
    let model = pattern(10 * PAGE_SIZE, 6);
    let (_disk, file) = file_with(12, Layout::Contiguous, &model);
    assert_eq!(read_all(&file), model);
    write(&file, 8 * PAGE_SIZE as u64, b"dirty past the new end").unwrap();
    setsize(&file, 3 * PAGE_SIZE as u64 + 10).unwrap();
    assert_eq!(resident(&file).last().copied(), Some(3 * PAGE_SIZE as u64));
    assert!(!any_busy(&file));
    setsize(&file, 5 * PAGE_SIZE as u64).unwrap();
    let mut expect = model[..3 * PAGE_SIZE + 10].to_vec();
    expect.resize(5 * PAGE_SIZE, 0);
    let got = read_all(&file);
    assert_eq!(&got[..3 * PAGE_SIZE + 10], &expect[..3 * PAGE_SIZE + 10]);
    assert!(
        got[3 * PAGE_SIZE + 10..4 * PAGE_SIZE]
            .iter()
            .all(|&b| b == 0),
        "tail zeroed"
    );
}

// ---- regressions the model tests found, in write and setsize ----------------------------

/// Bug found by the model tests: truncating into a block and growing the file again
/// with `setsize` showed the old bytes past the truncation point. The truncation zeroes
/// the tail of the resident last page, but its writeback stops at the new (smaller)
/// size, so the disk keeps the old bytes; once the page is gone and the file grows, a
/// read finds them. Growing now writes zeroes over the rest of the old last block, as
/// `write` does when it extends a file.
#[test]
fn setsize_grow_after_truncate_reads_zeroes_past_the_old_end() {
    // Blocks of a page, of four and of sixteen pages at 4 KiB pages; at larger pages the
    // smaller blocks are below a page.
    for bshift in [12u32, 14, 16] {
        let data = pattern(3 * PAGE_SIZE, 1);
        let (_disk, file) = file_with(bshift, Layout::Contiguous, &data);
        let cut = PAGE_SIZE + 100;
        // Resident first (the tail is zeroed in memory), then not.
        read_all(&file);
        setsize(&file, cut as u64).unwrap();
        putpages(&file, 0, 0, FLUSH_AND_FREE).unwrap();
        // Extend within the old last block, or up to its end, and not past the old
        // size: the rig frees no blocks on a shrinking setsize, so blocks past the old
        // last one still hold the old bytes (a filesystem's business, not the pager's).
        let grown = cut.next_multiple_of(1 << bshift).min(3 * PAGE_SIZE);
        setsize(&file, grown as u64).unwrap();
        let got = read_all(&file);
        assert_eq!(got.len(), grown);
        assert!(got[..cut] == data[..cut], "bshift {bshift}: kept bytes");
        assert!(
            got[cut..grown].iter().all(|&b| b == 0),
            "bshift {bshift}: stale bytes after the truncation point"
        );
        putpages(&file, 0, 0, FLUSH_AND_FREE).unwrap();
        let disk = file.disk_contents();
        assert!(
            disk[cut..grown].iter().all(|&b| b == 0),
            "bshift {bshift}: stale bytes on disk"
        );
    }
}

/// Bug found by the model tests: a `write` that failed (here ENOSPC) left the write size
/// at the end it announced, past the end of file, for good; later flushes could then
/// write past the end of file. It now takes the announced end back.
#[test]
fn failed_write_restores_the_write_size() {
    // 4 KiB: one block of 4 KiB, and the file has it.
    let file = file_on_small_disk(8, 12, &pattern(100, 2));
    assert_eq!(
        write(&file, 10_000, &pattern(5000, 3)),
        Err(genpager::Error::NoSpace)
    );
    let state = file.object().read();
    assert_eq!(
        state.write_size(),
        state.size(),
        "write size past the end of file after a failed write"
    );
}

/// Bug found by the model tests: with blocks smaller than a page, a write that extended
/// the file allocated only the blocks under its bytes, yet left the whole page writable
/// (not `RDONLY`) over the page's other blocks, still holes. A later write fault on the
/// page then allocated nothing, and bytes stored there were skipped by the writeback
/// (holes are not written): a lost write. The write now allocates every block under
/// the pages it makes writable.
#[test]
fn sub_page_block_write_leaves_no_hole_under_a_writable_page() {
    let data = pattern(2 * PAGE_SIZE + 1, 4);
    let (_disk, file) = file_with(9, Layout::Contiguous, &data);
    // Extends by one byte: block 16 only; blocks 17..24 of page 2 stay holes.
    write(&file, 2 * PAGE_SIZE as u64 + 1, &[0x5a]).unwrap();
    setsize(&file, 3 * PAGE_SIZE as u64).unwrap();
    let disk = store_through_a_write_fault(&file, 2 * PAGE_SIZE as u64, 2048, &[0xa5; 10]);
    assert_eq!(disk[2 * PAGE_SIZE + 1], 0x5a);
    assert_eq!(
        &disk[2 * PAGE_SIZE + 2048..2 * PAGE_SIZE + 2058],
        &[0xa5; 10],
        "store over a hole lost"
    );
}

/// Bug found by the model tests: a read stops walking the block map at the disk end of
/// file, so with blocks smaller than a page the page straddling the end of file (or a
/// page past it, faulted for an extending write that then failed with ENOSPC) never
/// learnt that blocks under it past the end are holes: it was not marked `RDONLY`, a
/// later write fault on it allocated nothing once the file had grown, and what was
/// stored there was never written. Holes past the disk end now count too.
#[test]
fn holes_past_eof_under_a_page_are_allocated_by_a_write_fault() {
    // 30 blocks of 512 bytes: page 3 holds blocks 24..=29 and two holes past EOF.
    let data = pattern(30 * 512, 5);
    let (_disk, file) = file_with(9, Layout::Contiguous, &data);
    read_all(&file);
    setsize(&file, 4 * PAGE_SIZE as u64).unwrap();
    let disk =
        store_through_a_write_fault(&file, 3 * PAGE_SIZE as u64, PAGE_SIZE - 10, &[0xa5; 10]);
    assert_eq!(
        &disk[4 * PAGE_SIZE - 10..],
        &[0xa5; 10],
        "store over a hole past the old EOF lost"
    );
    assert!(disk[..data.len()] == data[..]);
}

/// Bug found by the model tests: a truncation into a page over a hole (blocks smaller
/// than a page) zeroed the page's tail through a non-allocating write fault, and
/// releasing it cleared `RDONLY`: the page looked writable with a hole under it, so a
/// later write fault allocated nothing and bytes stored over the hole were lost.
#[test]
fn truncate_into_a_page_over_a_hole_keeps_it_read_only() {
    let data = pattern(0x5b15, 6);
    let (_disk, file) = sparse_file(9, &data, &[21]);
    read_all(&file);
    setsize(&file, 0x2a22).unwrap();
    // The page holding the new end of file, over hole block 21 (0x2a00..0x2c00).
    let page_at = 0x2a22 & !(PAGE_SIZE as u64 - 1);
    let within = (0x2a00 - page_at) as usize;
    let disk = store_through_a_write_fault(&file, page_at, within, &[0xa5; 16]);
    assert_eq!(
        &disk[0x2a00..0x2a10],
        &[0xa5; 16],
        "store over the hole lost"
    );
}
