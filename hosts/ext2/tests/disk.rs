//! The filesystem over a [`Disk`] of the test's own: an image made by mke2fs, held
//! in memory, opened through the generic constructor (`Ext2Fs::with_device`), the
//! route a kernel takes with its virtio disk. Several threads read and write
//! different files at once; then `e2fsck -fn` checks the image and every file reads
//! back as expected.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use common::disk::{Faults, TestDisk};
use common::{Spec, TempDir, debugfs, debugfs_dump, fsck_clean, mkfs, random_bytes, write_tree};
use genpager_ext2::Ext2Fs;

/// 2023-11-14 22:13:20 UTC: what the filesystem's clock says in this test.
const NOW: u32 = 0x6553_F100;

#[test]
fn threads_over_a_memory_disk() {
    const WRITERS: u64 = 4;
    const READERS: u64 = 2;
    let mut files: Vec<Spec> = (0..WRITERS)
        .map(|i| {
            Spec::new(
                &format!("/w/f{i}"),
                random_bytes(5000 + 3000 * i as usize, i),
            )
        })
        .collect();
    // Files only read, one of them sparse (a hole over a whole indirect block).
    let mut sparse = random_bytes(300_000, 77);
    sparse[20_000..290_000].fill(0);
    files.push(Spec::new("/r/sparse", sparse));
    files.push(Spec::new("/r/plain", random_bytes(40_000, 78)));

    let tmp = TempDir::new("memdisk");
    let tree = tmp.join("tree");
    write_tree(&tree, &files);
    let image = tmp.join("image");
    mkfs(&tree, &image, 1024, 8192, &[]);
    let bytes = Arc::new(Mutex::new(std::fs::read(&image).unwrap()));

    let fs = Ext2Fs::with_device(TestDisk::new(bytes.clone(), Faults::default())).unwrap();
    fs.set_clock(|| NOW);
    let mut want: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|s| (s.path.clone(), s.data.clone()))
        .collect();

    std::thread::scope(|scope| {
        for i in 0..WRITERS {
            let fs = fs.clone();
            scope.spawn(move || {
                let file = fs.open_file(&format!("/w/f{i}")).unwrap();
                for chunk in 0..40u64 {
                    // Overwrites, then writes past end of file: new blocks, indirect
                    // blocks past the 12th, allocation racing the other writers.
                    let data = random_bytes(4096, 1000 * i + chunk);
                    file.write_at(2000 + chunk * 4096, &data).unwrap();
                    if chunk % 10 == 9 {
                        file.sync().unwrap();
                    }
                }
                // A hole, then a short tail past it.
                file.write_at(400_000, b"tail").unwrap();
                file.sync().unwrap();
            });
        }
        for r in 0..READERS {
            let fs = fs.clone();
            let files = &files;
            scope.spawn(move || {
                for round in 0..10 {
                    let spec = &files[(WRITERS as usize) + ((r as usize + round) % 2)];
                    let file = fs.open_file(&spec.path).unwrap();
                    let mut buf = vec![0u8; 7000];
                    let at = (round * 12_345) % spec.data.len();
                    let n = file.read_at(at as u64, &mut buf).unwrap();
                    assert_eq!(buf[..n], spec.data[at..at + n], "{}", spec.path);
                    assert_eq!(file.read_to_vec().unwrap(), spec.data, "{}", spec.path);
                    // Drop the pages so the next round reads the disk again.
                    file.drop_cached(spec.data.len() as u64 + 4096).unwrap();
                }
            });
        }
    });

    for (i, (_, data)) in want.iter_mut().take(WRITERS as usize).enumerate() {
        for chunk in 0..40usize {
            let at = 2000 + chunk * 4096;
            let bytes = random_bytes(4096, 1000 * i as u64 + chunk as u64);
            data.resize(data.len().max(at + 4096), 0);
            data[at..at + 4096].copy_from_slice(&bytes);
        }
        data.resize(400_000, 0);
        data.extend_from_slice(b"tail");
    }
    for (path, data) in &want {
        let got = fs.open_file(path).unwrap().read_to_vec().unwrap();
        assert!(
            got == *data,
            "{path}: read back through the memory disk differs"
        );
    }
    let disk = fs.device();
    assert!(disk.meta_reads.load(Ordering::Relaxed) > 0);
    assert!(disk.meta_writes.load(Ordering::Relaxed) > 0);
    assert!(disk.requests.load(Ordering::Relaxed) > 0);
    drop(fs);

    std::fs::write(&image, &*bytes.lock().unwrap()).unwrap();
    fsck_clean(&image);
    for (path, data) in &want {
        assert!(
            debugfs_dump(&image, path, &tmp) == *data,
            "{path}: debugfs differs"
        );
    }
    let stat = debugfs(&image, "stat /w/f0");
    assert!(
        stat.contains("mtime: 0x6553f100"),
        "the set clock's time: {stat}"
    );
}
