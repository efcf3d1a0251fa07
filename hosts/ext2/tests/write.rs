//! Writes through genpager (write faults, `alloc` over holes and past end of file,
//! `putpages(SYNCIO)`), checked by `e2fsck -fn` and `debugfs -R "dump …"`, and by
//! reading everything back through a fresh page cache.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{Spec, TempDir, debugfs_dump, fsck_clean, mkfs, random_bytes, write_tree};
use genpager_ext2::{Completion, Ext2Error, Ext2Fs, OpenOptions};

/// The expected contents of every file.
struct Model(BTreeMap<String, Vec<u8>>);

impl Model {
    fn new(files: &[Spec]) -> Model {
        Model(
            files
                .iter()
                .map(|s| (s.path.clone(), s.data.clone()))
                .collect(),
        )
    }

    fn write(&mut self, path: &str, offset: usize, data: &[u8]) {
        let file = self.0.get_mut(path).unwrap();
        if file.len() < offset + data.len() {
            file.resize(offset + data.len(), 0);
        }
        file[offset..offset + data.len()].copy_from_slice(data);
    }

    fn set_len(&mut self, path: &str, len: usize) {
        self.0.get_mut(path).unwrap().resize(len, 0);
    }

    /// Checks the image with e2fsck, then every file with debugfs and through a
    /// newly opened filesystem.
    fn check(&self, image: &Path, tmp: &TempDir) {
        fsck_clean(image);
        for (path, want) in &self.0 {
            let dumped = debugfs_dump(image, path, tmp);
            assert_eq!(dumped.len(), want.len(), "{path}: debugfs length");
            if let Some(at) = dumped.iter().zip(want).position(|(a, b)| a != b) {
                panic!(
                    "{path}: debugfs byte {at} is {} not {}",
                    dumped[at], want[at]
                );
            }
        }
        let fs = Ext2Fs::open(image, OpenOptions::read_only()).unwrap();
        for (path, want) in &self.0 {
            let got = fs.open_file(path).unwrap().read_to_vec().unwrap();
            assert!(got == *want, "{path}: read back through genpager differs");
        }
    }
}

fn image_of(files: &[Spec], bs: u32, kib: u64, tmp: &TempDir) -> std::path::PathBuf {
    let src = tmp.join("src");
    write_tree(&src, files);
    let image = tmp.join("image");
    mkfs(&src, &image, bs, kib, &[]);
    image
}

/// Writes through genpager and syncs.
fn write(fs: &Arc<Ext2Fs>, model: &mut Model, path: &str, offset: usize, data: &[u8]) {
    let file = fs.open_file(path).unwrap();
    assert_eq!(
        file.write_at(offset as u64, data).unwrap(),
        data.len(),
        "{path}"
    );
    file.sync().unwrap();
    model.write(path, offset, data);
    assert_eq!(
        file.inode_size(),
        model.0[path].len() as u64,
        "{path}: i_size after sync"
    );
}

fn overwrite_fill_extend_and_cross_boundaries(bs: usize, completion: Completion) {
    let apb = bs / 4;
    let files = vec![
        Spec::new("/over.bin", random_bytes(40 * 1024, 1)),
        Spec::new(
            "/holey.bin",
            [random_bytes(8192, 2), vec![0; 16384], random_bytes(8192, 3)].concat(),
        ),
        Spec::new("/grow.bin", random_bytes(5000, 4)),
        Spec::new("/append.bin", random_bytes(3000, 5)),
        Spec::new("/boundary.bin", random_bytes(11 * bs + bs / 2, 6)),
        Spec::new("/double.bin", random_bytes(10 * bs, 7)),
        Spec::new("/empty", vec![]),
        Spec::new("/empty-far", vec![]),
        Spec::new("/fresh", vec![]),
        Spec::new("/untouched", random_bytes(20000, 8)),
    ];
    let tmp = TempDir::new("write");
    let image = image_of(&files, bs as u32, 16384, &tmp);
    let mut model = Model::new(&files);
    let fs = Ext2Fs::open(&image, OpenOptions::read_write().completion(completion)).unwrap();
    let free_before = fs.info().free_blocks;

    // Overwrite inside a file: unaligned, then whole pages, then twice before a sync.
    write(&fs, &mut model, "/over.bin", 5000, &random_bytes(3000, 10));
    write(&fs, &mut model, "/over.bin", 8192, &random_bytes(8192, 11));
    {
        let file = fs.open_file("/over.bin").unwrap();
        file.write_at(100, b"first").unwrap();
        file.write_at(102, b"SECOND").unwrap();
        file.sync().unwrap();
        model.write("/over.bin", 100, b"first");
        model.write("/over.bin", 102, b"SECOND");
    }
    assert_eq!(
        fs.info().free_blocks,
        free_before,
        "overwriting allocates nothing"
    );

    // Fill a hole: part of it, then the rest of a block next to the first fill.
    write(
        &fs,
        &mut model,
        "/holey.bin",
        10000,
        &random_bytes(6000, 12),
    );
    write(&fs, &mut model, "/holey.bin", 8192, &random_bytes(100, 13));
    // Extend past end of file, leaving a hole; append right at the end.
    write(
        &fs,
        &mut model,
        "/grow.bin",
        20000,
        &random_bytes(10000, 14),
    );
    write(
        &fs,
        &mut model,
        "/append.bin",
        3000,
        &random_bytes(7000, 15),
    );
    // Across the direct / single-indirect boundary (a new indirect block).
    write(
        &fs,
        &mut model,
        "/boundary.bin",
        11 * bs - 100,
        &random_bytes(bs + 300, 16),
    );
    // Across the single / double-indirect boundary, far past end of file.
    write(
        &fs,
        &mut model,
        "/double.bin",
        (12 + apb) * bs - 1500,
        &random_bytes(3000, 17),
    );
    // Empty files: one byte; far into the double-indirect range.
    write(&fs, &mut model, "/empty", 0, b"x");
    write(
        &fs,
        &mut model,
        "/empty-far",
        (12 + apb + 2 * apb + 5) * bs + 7,
        &random_bytes(5000, 18),
    );
    // A large write into an empty file: allocated near-contiguously.
    write(&fs, &mut model, "/fresh", 0, &random_bytes(300 * 1024, 19));
    let map = fs.open_file("/fresh").unwrap().map_summary().unwrap();
    assert_eq!(map.hole_blocks, 0);
    assert!(
        map.extents <= 5,
        "allocation should follow the file's blocks: {map:?}"
    );
    if bs == 1024 {
        // Past the triple-indirect threshold.
        write(
            &fs,
            &mut model,
            "/empty-far",
            (12 + apb + apb * apb) * bs - 1000,
            &random_bytes(2000, 20),
        );
    }
    drop(fs);
    model.check(&image, &tmp);
}

#[test]
fn writes_at_one_kib() {
    overwrite_fill_extend_and_cross_boundaries(1024, Completion::Inline);
}

#[test]
fn writes_at_two_kib_worker_thread() {
    overwrite_fill_extend_and_cross_boundaries(2048, Completion::Worker);
}

#[test]
fn writes_at_four_kib() {
    overwrite_fill_extend_and_cross_boundaries(4096, Completion::Inline);
}

#[test]
fn truncate_and_grow() {
    for bs in [1024usize, 4096] {
        let apb = bs / 4;
        let files = vec![
            Spec::new("/a", random_bytes(40000, 1)),
            Spec::new("/b", random_bytes((12 + apb + 40) * bs + 5, 2)),
            Spec::new("/c", random_bytes(3000, 3)),
            Spec::new("/d", random_bytes(5 * bs, 4)),
        ];
        let tmp = TempDir::new("truncate");
        let image = image_of(&files, bs as u32, 16384, &tmp);
        let mut model = Model::new(&files);
        let fs = Ext2Fs::open(&image, OpenOptions::read_write()).unwrap();
        let free_before = fs.info().free_blocks;
        for (path, len) in [("/a", 10001), ("/b", 5 * bs), ("/c", 50000), ("/d", 0)] {
            fs.open_file(path).unwrap().set_len(len as u64).unwrap();
            model.set_len(path, len);
        }
        assert!(fs.info().free_blocks > free_before);
        // Grow /b again by writing: the freed range reads as zeroes.
        write(&fs, &mut model, "/b", 20 * bs, b"again");
        drop(fs);
        model.check(&image, &tmp);
    }
}

/// Running out of space makes the write short (what fitted, as write(2) returns), the
/// next write fails with NoSpace, and the image stays consistent.
#[test]
fn out_of_space() {
    let files = vec![
        Spec::new("/small", random_bytes(1000, 1)),
        Spec::new("/big", vec![]),
    ];
    let tmp = TempDir::new("nospace");
    let image = image_of(&files, 1024, 512, &tmp);
    let fs = Ext2Fs::open(&image, OpenOptions::read_write()).unwrap();
    let file = fs.open_file("/big").unwrap();
    let data = random_bytes(1 << 20, 2);
    let written = file.write_at(0, &data).unwrap();
    assert!(written > 0 && written < data.len(), "{written}");
    assert_eq!(file.size(), written as u64);
    let err = file.write_at(written as u64, &data[written..]).unwrap_err();
    assert!(matches!(err, Ext2Error::NoSpace), "{err}");
    assert_eq!(
        file.size(),
        written as u64,
        "a failed write leaves the size"
    );
    file.sync().unwrap();
    let size = file.size();
    assert!(size > 0 && size < 1 << 20);
    drop(file);
    drop(fs);
    fsck_clean(&image);
    let mut model = Model::new(&files);
    model.write("/big", 0, &random_bytes(1 << 20, 2)[..size as usize]);
    model.check(&image, &tmp);
}

/// Several threads writing their own files at once, the device completing on its
/// worker thread.
#[test]
fn concurrent_writers() {
    let files: Vec<Spec> = (0..4)
        .map(|i| Spec::new(&format!("/f{i}"), random_bytes(5000, i)))
        .collect();
    let tmp = TempDir::new("threads");
    let image = image_of(&files, 1024, 8192, &tmp);
    let mut model = Model::new(&files);
    let fs = Ext2Fs::open(
        &image,
        OpenOptions::read_write().completion(Completion::Worker),
    )
    .unwrap();
    std::thread::scope(|scope| {
        for i in 0..4u64 {
            let fs = fs.clone();
            scope.spawn(move || {
                let file = fs.open_file(&format!("/f{i}")).unwrap();
                for chunk in 0..50u64 {
                    let data = random_bytes(4096, 100 * i + chunk);
                    file.write_at(3000 + chunk * 4096, &data).unwrap();
                }
                file.sync().unwrap();
            });
        }
    });
    for i in 0..4u64 {
        for chunk in 0..50u64 {
            model.write(
                &format!("/f{i}"),
                3000 + chunk as usize * 4096,
                &random_bytes(4096, 100 * i + chunk),
            );
        }
    }
    drop(fs);
    model.check(&image, &tmp);
}

#[test]
fn read_only_refuses_writes() {
    let files = vec![Spec::new("/f", random_bytes(100, 1))];
    let tmp = TempDir::new("ro");
    let image = image_of(&files, 1024, 1024, &tmp);
    let fs = Ext2Fs::open(&image, OpenOptions::read_only()).unwrap();
    let file = fs.open_file("/f").unwrap();
    assert!(matches!(
        file.write_at(0, b"no"),
        Err(Ext2Error::ReadOnly(_))
    ));
    assert!(matches!(file.set_len(0), Err(Ext2Error::ReadOnly(_))));
    drop((file, fs));
    fsck_clean(&image);
}

/// Revision 0: no file types in directories, no large files.
#[test]
fn writes_on_revision_0() {
    let files = vec![
        Spec::new("/a", random_bytes(7000, 1)),
        Spec::new("/b", vec![]),
    ];
    let tmp = TempDir::new("rev0");
    let src = tmp.join("src");
    write_tree(&src, &files);
    let image = tmp.join("image");
    mkfs(&src, &image, 1024, 4096, &["-r", "0"]);
    let mut model = Model::new(&files);
    let fs = Ext2Fs::open(&image, OpenOptions::read_write()).unwrap();
    assert_eq!(fs.info().revision, 0);
    write(&fs, &mut model, "/a", 6000, &random_bytes(9000, 2));
    write(&fs, &mut model, "/b", 300 * 1024, &random_bytes(5000, 3));
    let err = fs
        .open_file("/b")
        .unwrap()
        .write_at(1 << 31, b"x")
        .unwrap_err();
    assert!(matches!(err, Ext2Error::TooBig), "{err}");
    drop(fs);
    model.check(&image, &tmp);
}

/// A file past 4 GiB: the size's high half (`i_size_high`) is written and read.
#[test]
fn large_file_past_four_gib() {
    let files = vec![Spec::new("/big", random_bytes(100, 1))];
    let tmp = TempDir::new("large");
    let image = image_of(&files, 4096, 4096, &tmp);
    let fs = Ext2Fs::open(&image, OpenOptions::read_write()).unwrap();
    let file = fs.open_file("/big").unwrap();
    let at = (5u64 << 30) + 12345;
    let tail = random_bytes(10_000, 2);
    file.write_at(at, &tail).unwrap();
    file.sync().unwrap();
    drop((file, fs));
    fsck_clean(&image);
    let stat = common::debugfs(&image, "stat /big");
    assert!(stat.contains(&format!("Size: {}", at + 10_000)), "{stat}");
    let fs = Ext2Fs::open(&image, OpenOptions::read_only()).unwrap();
    let file = fs.open_file("/big").unwrap();
    assert_eq!(file.size(), at + 10_000);
    let mut buf = vec![0u8; 20_000];
    assert_eq!(file.read_at(at - 10_000, &mut buf).unwrap(), 20_000);
    assert!(buf[..10_000].iter().all(|&b| b == 0));
    assert!(buf[10_000..] == tail[..]);
    let mut head = [0u8; 100];
    file.read_at(0, &mut head).unwrap();
    assert_eq!(head[..], random_bytes(100, 1)[..]);
}
