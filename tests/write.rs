//! The buffered write helper and setsize, end to end with putpages.

mod common;

use common::*;
use genpager::testing::{Layout, MemDisk, MemFs};
use genpager::{PAGE_SIZE, PutFlags, Vnode, putpages, read, setsize, write};

const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);

fn read_all(file: &std::sync::Arc<genpager::testing::MemFile>) -> Vec<u8> {
    let mut buf = vec![0u8; file.object().size() as usize + 10];
    let n = read(file, 0, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

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
        assert!(read_all(&file) == model, "bshift {bshift}: cache");
        putpages(&file, 0, 0, FLUSH).unwrap();
        assert!(file.disk_contents() == model, "bshift {bshift}: disk");
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
        assert!(read_all(&file) == model, "bshift {bshift}: cache");
        putpages(&file, 0, 0, FLUSH).unwrap();
        assert!(file.disk_contents() == model, "bshift {bshift}: disk");
    }
}

#[test]
fn write_into_holes_allocates_and_flushes() {
    let size = 8 * PAGE_SIZE;
    let mut model = pattern(size, 3);
    for lbn in [1usize, 2, 5] {
        model[lbn * PAGE_SIZE..(lbn + 1) * PAGE_SIZE].fill(0);
    }
    let (_disk, file) = sparse_file(12, &model, &[1, 2, 5]);
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
    putpages(&file, 0, 0, FLUSH | PutFlags::FREE).unwrap();
    assert!(read_all(&file) == model);
    assert!(file.disk_contents() == model);
}

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
