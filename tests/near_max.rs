//! Offsets, sizes and host values near `u64::MAX`: every path answers with an error or
//! works, and none overflows (these run in debug, where an overflow panics). Every test
//! but `faults_reaching_past_the_largest_file_are_too_big` (a guard of the existing
//! checks) panicked, hung or misread before the change it covers.

mod common;

use std::sync::Arc;

use common::{PAGE_SHIFT, file_with, pattern};
use genpager::Fault;
use genpager::testing::{Layout, MemFile};
use genpager::{
    Access, DirtyStatus, Error, Fetched, MAX_FILE_SIZE, ObjectFlags, PAGE_SIZE, PageCache,
    PageFlags, PutFlags, Vnode, getpages, putpages, read, write,
};

const PAGE: u64 = PAGE_SIZE as u64;

/// A file of `pages` pages of pattern bytes, blocks of one page, laid out contiguously.
fn rig(pages: usize) -> (genpager::testing::MemDisk, Arc<MemFile>, Vec<u8>) {
    let data = pattern(pages * PAGE_SIZE, 7);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    (disk, file, data)
}

/// The host sets a size near `u64::MAX` (its own `VmObject` sizes are not checked).
fn set_size(file: &MemFile, size: u64) {
    file.object().lock().set_sizes(size, size);
}

#[test]
fn write_into_a_file_the_host_sized_near_u64_max() {
    // zero_old_tail rounded the old size up to its block before seeing that the write
    // does not extend the file: (u64::MAX | mask) + 1 overflowed.
    let (_disk, file, _) = rig(2);
    for size in [u64::MAX, u64::MAX - 100, MAX_FILE_SIZE + 1] {
        set_size(&file, size);
        assert_eq!(write(&file, 10, b"near the top"), Ok(12));
        assert_eq!(file.object().size(), size);
    }
    let mut back = [0u8; 12];
    assert_eq!(read(&file, 10, &mut back), Ok(12));
    assert_eq!(&back, b"near the top");
}

#[test]
fn write_fault_on_resident_pages_with_a_memory_eof_near_u64_max() {
    // A write fault over valid pages checks the blocks under them up to the memory
    // EOF rounded to its block: the host's (unclipped) EOF + mask overflowed.
    let (_disk, file, data) = rig(4);
    let mut buf = vec![0u8; data.len()];
    assert_eq!(read(&file, 0, &mut buf), Ok(data.len()));
    set_size(&file, u64::MAX);
    let fetched = getpages(&file, Fault::write(0, 2)).expect("write fault");
    let pages = fetched.into_writable().expect("writable pages");
    assert_eq!(pages.len(), 2);
    drop(pages);
    // The fast path sees the same EOF.
    let resident = getpages(&file, Fault::resident(0, 1, Access::Read));
    assert!(matches!(resident, Ok(Fetched::Resident(_))));
}

#[test]
fn faults_reaching_past_the_largest_file_are_too_big() {
    let (_disk, file, _) = rig(1);
    set_size(&file, u64::MAX);
    let top = genpager::page::trunc_page(u64::MAX);
    for (offset, count) in [
        (top, 1),
        (top - PAGE, 2),
        (MAX_FILE_SIZE, 1),
        (0, usize::MAX),
        (PAGE, usize::MAX / PAGE_SIZE + 1),
    ] {
        let result = getpages(&file, Fault::read(offset, count));
        assert!(
            matches!(result, Err(Error::TooBig)),
            "{offset:#x}+{count} pages"
        );
    }
    let mut buf = [0u8; 16];
    assert_eq!(read(&file, u64::MAX - 3, &mut buf), Err(Error::Invalid));
    assert_eq!(write(&file, u64::MAX - 3, &buf), Err(Error::TooBig));
}

#[test]
fn resident_pages_offset_of_a_slot_far_past_the_end_saturates() {
    // ResidentPages::offset multiplied the caller's index by the page size unchecked.
    let (_disk, file, data) = rig(1);
    let mut buf = vec![0u8; data.len()];
    assert_eq!(read(&file, 0, &mut buf), Ok(data.len()));
    let pages = getpages(&file, Fault::resident(0, 1, Access::Read))
        .expect("fast path")
        .into_resident()
        .expect("resident pages");
    assert_eq!(pages.offset(0), 0);
    assert_eq!(pages.offset(3), 3 * PAGE);
    assert_eq!(pages.offset(usize::MAX), u64::MAX);
}

/// Reads the whole file with the vnode's maximum transfer set to `max_transfer`.
fn read_with_max_transfer(max_transfer: usize) {
    let (disk, file, data) = rig(8);
    file.set_max_transfer(max_transfer);
    disk.clear_log();
    let mut buf = vec![0u8; data.len()];
    assert_eq!(read(&file, 0, &mut buf), Ok(data.len()));
    assert!(
        buf == data,
        "bytes misplaced with max_transfer {max_transfer}"
    );
    // Every request is whole pages.
    for request in disk.log() {
        assert_eq!(request.len % PAGE_SIZE, 0, "{request:?}");
    }
}

#[test]
fn a_zero_max_transfer_reads_a_page_at_a_time() {
    // A zero-length extent never advanced the read loop: the fault hung.
    read_with_max_transfer(0);
}

#[test]
fn an_unaligned_max_transfer_is_rounded_down_to_whole_pages() {
    // 5000 bytes per request: the second request started mid-sector, at the wrong
    // device block.
    read_with_max_transfer(5000);
    read_with_max_transfer(PAGE_SIZE + 1);
    read_with_max_transfer(100);
}

#[test]
fn a_flush_never_clusters_the_page_at_the_top_of_the_offset_space() {
    // The host put dirty pages just below and at trunc_page(u64::MAX) (no fault can):
    // a write cluster taking both ended at trunc_page(u64::MAX) + PAGE_SIZE, which
    // overflowed.
    let (_disk, file, _) = rig(1);
    let top = genpager::page::trunc_page(u64::MAX);
    {
        let mut state = file.object().lock();
        for offset in [top - PAGE, top] {
            let page = state.cache_mut().alloc(offset).expect("page");
            page.flags.remove(PageFlags::BUSY | PageFlags::FAKE);
            state.cache_mut().set_dirty(offset, DirtyStatus::Dirty);
        }
        state.set_flags(ObjectFlags::ON_WORKLIST, true);
    }
    assert_eq!(
        putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO),
        Ok(())
    );
    let state = file.object().read();
    // The seed was written (nothing of it lies before the end of file) and settled; the
    // page at the top, outside every flush range, is left as it was.
    let below = state.cache().lookup(top - PAGE).expect("resident");
    assert!(!below.is_busy());
    assert_eq!(below.dirty(), DirtyStatus::Clean);
    let at_top = state.cache().lookup(top).expect("resident");
    assert!(!at_top.is_busy());
    assert_eq!(at_top.dirty(), DirtyStatus::Dirty);
}
