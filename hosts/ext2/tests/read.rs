//! Reads through genpager of images made by `mke2fs -d` from generated trees: every
//! file equals its source byte for byte, at every block size, in both revisions,
//! through direct, single, double and triple indirect blocks and holes.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::{Spec, TempDir, host_files, mkfs, random_bytes, write_tree};
use genpager_ext2::{Completion, Ext2Error, Ext2Fs, FileKind, OpenOptions};

/// The files every block size is tested with (sizes in terms of `bs`).
fn standard_tree(bs: usize) -> Vec<Spec> {
    let apb = bs / 4;
    let zeros = |n: usize| vec![0u8; n];
    let cat = |parts: Vec<Vec<u8>>| parts.concat();
    let mut files = vec![
        Spec::new("/empty", vec![]),
        Spec::new("/one", vec![0x5a]),
        Spec::new("/sizes/4095", random_bytes(4095, 1)),
        Spec::new("/sizes/4096", random_bytes(4096, 2)),
        Spec::new("/sizes/4097", random_bytes(4097, 3)),
        Spec::new("/sizes/12-blocks", random_bytes(12 * bs, 4)),
        Spec::new("/sizes/13-blocks", random_bytes(13 * bs, 5)),
        Spec::new(
            "/sizes/past-double",
            random_bytes((12 + apb + 3) * bs + 100, 6),
        ),
        Spec::new(
            "/holes/middle",
            cat(vec![
                random_bytes(3 * bs, 7),
                zeros(5 * bs),
                random_bytes(2 * bs + 17, 8),
            ]),
        ),
        Spec::new(
            "/holes/end",
            cat(vec![random_bytes(2 * bs + 10, 9), zeros(6 * bs - 10)]),
        ),
        Spec::new("/holes/all", zeros(10 * bs + 1)),
        Spec::new("/holes/one-byte-after", cat(vec![zeros(20 * bs), vec![1]])),
        Spec::new(
            "/holes/over-indirect",
            cat(vec![
                random_bytes(12 * bs, 10),
                zeros((apb + 5) * bs),
                random_bytes(3 * bs, 11),
            ]),
        ),
        Spec::new(
            "/holes/page-sized",
            cat(vec![
                random_bytes(4096, 12),
                zeros(8192),
                random_bytes(4096, 13),
                zeros(4096),
                vec![9; 100],
            ]),
        ),
    ];
    for a in 0..4 {
        for b in 0..3 {
            for c in 0..6 {
                let len = (a * 7919 + b * 3037 + c * 1013 * (bs / 1024)) % (5 * bs);
                files.push(Spec::new(
                    &format!("/tree/d{a}/e{b}/f{c}.bin"),
                    random_bytes(len, (a * 100 + b * 10 + c) as u64),
                ));
            }
        }
    }
    for i in 0..150 {
        files.push(Spec::new(
            &format!("/wide/a-rather-long-file-name-number-{i:04}"),
            random_bytes(i * 3, 1000 + i as u64),
        ));
    }
    files
}

/// Makes an image of `files` and checks every file reads back through genpager.
fn check_tree(
    bs: u32,
    image_kib: u64,
    extra: &[&str],
    completion: Completion,
    files: &[Spec],
) -> Arc<Ext2Fs> {
    let tmp = TempDir::new("read");
    let src = tmp.join("src");
    write_tree(&src, files);
    let image = tmp.join("image");
    mkfs(&src, &image, bs, image_kib, extra);
    let fs = Ext2Fs::open(&image, OpenOptions::read_only().completion(completion)).unwrap();
    assert_eq!(fs.info().block_size, bs);

    let mut walked: Vec<String> = fs
        .walk("/")
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == FileKind::Regular)
        .map(|e| e.path)
        .collect();
    walked.sort();
    let host = host_files(&src);
    assert_eq!(
        walked,
        host.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()
    );

    for (path, host_path) in &host {
        let expected = std::fs::read(host_path).unwrap();
        let file = fs.open_file(path).unwrap();
        assert_eq!(file.size(), expected.len() as u64, "{path}: size");
        let data = file.read_to_vec().unwrap();
        if let Some(at) = data.iter().zip(&expected).position(|(a, b)| a != b) {
            panic!("{path}: byte {at} differs ({} bs {bs})", data[at]);
        }
        assert_eq!(data.len(), expected.len(), "{path}: length read");
    }

    // Unaligned reads inside the files, served from the cache or the device.
    for spec in files.iter().filter(|s| s.data.len() > 5000) {
        let file = fs.open_file(&spec.path).unwrap();
        for (at, len) in [
            (1usize, 10usize),
            (4000, 200),
            (spec.data.len() - 3000, 5000),
        ] {
            let mut buf = vec![0xEE; len];
            let n = file.read_at(at as u64, &mut buf).unwrap();
            let want = &spec.data[at..(at + len).min(spec.data.len())];
            assert_eq!(&buf[..n], want, "{} at {at}", spec.path);
        }
    }
    drop(tmp);
    fs
}

#[test]
fn one_kib_blocks() {
    check_tree(
        1024,
        8192,
        &["-N", "512"],
        Completion::Inline,
        &standard_tree(1024),
    );
}

#[test]
fn two_kib_blocks_worker_thread() {
    check_tree(
        2048,
        16384,
        &["-N", "512"],
        Completion::Worker,
        &standard_tree(2048),
    );
}

#[test]
fn four_kib_blocks() {
    check_tree(
        4096,
        32768,
        &["-N", "512"],
        Completion::Inline,
        &standard_tree(4096),
    );
}

#[test]
fn four_kib_blocks_worker_thread() {
    check_tree(
        4096,
        32768,
        &["-N", "512"],
        Completion::Worker,
        &standard_tree(4096),
    );
}

#[test]
fn revision_0() {
    let fs = check_tree(
        1024,
        8192,
        &["-r", "0"],
        Completion::Inline,
        &standard_tree(1024),
    );
    assert_eq!(fs.info().revision, 0);
    let fs = check_tree(
        2048,
        16384,
        &["-r", "0"],
        Completion::Inline,
        &standard_tree(2048),
    );
    assert_eq!(fs.info().revision, 0);
}

/// A sparse file past the triple-indirect threshold of 1 KiB blocks
/// (12 + 256 + 65536 blocks, about 64.3 MiB), with data at every boundary, read
/// back in chunks that are dropped from the cache as they go.
#[test]
fn triple_indirect_at_one_kib() {
    let kib = 1024usize;
    let double = (12 + 256) * kib;
    let triple = (12 + 256 + 256 * 256) * kib;
    let size = triple + 3 * 1024 * 1024 + 777;
    let mut data = vec![0u8; size];
    let mut put = |at: usize, len: usize, seed: u64| {
        data[at..at + len].copy_from_slice(&random_bytes(len, seed));
    };
    put(0, 20 * kib, 1);
    put(double - 7 * kib, 14 * kib, 2);
    put(double + 300 * kib, 5000, 3);
    put(triple - 9 * kib - 123, 40 * kib, 4);
    put(triple + 256 * kib - 2 * kib, 4 * kib, 5);
    put(size - 3000, 3000, 6);
    let data_blocks = data
        .chunks(kib)
        .filter(|block| block.iter().any(|&b| b != 0))
        .count() as u64;
    let files = vec![Spec::new("/huge", data)];

    let tmp = TempDir::new("triple");
    let src = tmp.join("src");
    write_tree(&src, &files);
    let image = tmp.join("image");
    mkfs(&src, &image, 1024, 4096, &[]);
    let blocks = common::debugfs(&image, "stat /huge");
    assert!(
        blocks.contains("(TIND)") && blocks.contains("(DIND)"),
        "{blocks}"
    );
    let fs = Ext2Fs::open(&image, OpenOptions::read_only()).unwrap();
    let file = fs.open_file("/huge").unwrap();
    assert_eq!(file.size(), size as u64);
    let host = std::fs::File::open(src.join("huge")).unwrap();
    let chunk = 4 << 20;
    let (mut buf, mut want) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut at = 0;
    while at < size {
        let n = file.read_at(at as u64, &mut buf).unwrap();
        assert_eq!(n, chunk.min(size - at));
        host.read_exact_at(&mut want[..n], at as u64).unwrap();
        if let Some(bad) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
            panic!("/huge: byte {} differs", at + bad);
        }
        at += n;
        file.drop_cached(at as u64).unwrap();
        // What stays: a page across `at`, and what read-ahead brought beyond it (the
        // window the reader is in and the one its marker started: two of the largest,
        // 8 transfers each).
        let ahead = 2 * 8 * genpager::DEFAULT_MAX_TRANSFER / genpager::PAGE_SIZE;
        let resident = file.resident_pages();
        assert!(
            resident <= 1 + ahead,
            "dropped pages stay dropped: {resident} resident"
        );
    }
    let map = file.map_summary().unwrap();
    assert_eq!(map.mapped_blocks, data_blocks);
    assert!(map.holes >= 5);
    assert!(file.stats().holes_met >= 5);
}

/// Contiguous files are read in large requests: `bmap` runs let the pager cluster.
#[test]
fn reads_are_clustered() {
    let files = vec![
        Spec::new("/contiguous", random_bytes(1 << 20, 1)),
        Spec::new(
            "/holes",
            [random_bytes(8192, 2), vec![0; 16384], random_bytes(8192, 3)].concat(),
        ),
    ];
    let tmp = TempDir::new("cluster");
    let src = tmp.join("src");
    write_tree(&src, &files);
    let image = tmp.join("image");
    mkfs(&src, &image, 4096, 8192, &[]);
    let fs = Ext2Fs::open(&image, OpenOptions::read_only()).unwrap();

    let file = fs.open_file("/contiguous").unwrap();
    assert_eq!(
        file.map_summary().unwrap().extents,
        2,
        "12 direct blocks, the indirect block, the rest"
    );
    fs.device().reset_stats();
    assert_eq!(file.read_to_vec().unwrap(), files[0].data);
    let stats = fs.device().stats();
    assert_eq!(stats.read_bytes, 1 << 20);
    assert!(stats.reads <= 20, "{stats:?}");
    assert!(
        stats.pages_per_request.get(&16).copied().unwrap_or(0) >= 10,
        "{stats:?}"
    );
    assert!(file.stats().bmap_calls <= 20, "{:?}", file.stats());

    let file = fs.open_file("/holes").unwrap();
    fs.device().reset_stats();
    assert_eq!(file.read_to_vec().unwrap(), files[1].data);
    let stats = fs.device().stats();
    assert_eq!(stats.read_bytes, 16384, "holes are not read");
    assert_eq!(file.stats().holes_met, 1);
    let map = file.map_summary().unwrap();
    assert_eq!((map.mapped_blocks, map.hole_blocks, map.holes), (4, 4, 1));
}

#[test]
fn paths_directories_and_symlinks() {
    let tmp = TempDir::new("paths");
    let src = tmp.join("src");
    let long_target = format!("/{}/target", "a-long-directory-name".repeat(4));
    write_tree(
        &src,
        &[
            Spec::new("/a/b/file", b"contents of file\n".to_vec()),
            Spec::new(&long_target, b"far away\n".to_vec()),
        ],
    );
    std::os::unix::fs::symlink("b/file", src.join("a/rel")).unwrap();
    std::os::unix::fs::symlink("/a/b", src.join("abs-dir")).unwrap();
    std::os::unix::fs::symlink(&long_target, src.join("slow")).unwrap();
    std::os::unix::fs::symlink("loop2", src.join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", src.join("loop2")).unwrap();
    let image = tmp.join("image");
    mkfs(&src, &image, 1024, 2048, &[]);
    let fs = Ext2Fs::open(&image, OpenOptions::read_only()).unwrap();

    let read = |path: &str| fs.open_file(path).and_then(|f| f.read_to_vec());
    assert_eq!(read("/a/b/file").unwrap(), b"contents of file\n");
    assert_eq!(read("a//b/./file").unwrap(), b"contents of file\n");
    assert_eq!(read("/a/b/../b/file").unwrap(), b"contents of file\n");
    assert_eq!(
        read("/a/rel").unwrap(),
        b"contents of file\n",
        "relative symlink"
    );
    assert_eq!(
        read("/abs-dir/file").unwrap(),
        b"contents of file\n",
        "absolute symlink to a directory"
    );
    assert_eq!(
        read("/slow").unwrap(),
        b"far away\n",
        "a symlink too long for the inode"
    );

    assert!(matches!(read("/a/nothing"), Err(Ext2Error::NotFound(p)) if p == "/a/nothing"));
    assert!(matches!(read("/a/b/file/x"), Err(Ext2Error::NotADirectory(p)) if p == "/a/b/file"));
    assert!(matches!(read("/a/b"), Err(Ext2Error::IsADirectory(_))));
    assert!(matches!(read("/loop1"), Err(Ext2Error::SymlinkLoop(_))));

    let mut names: Vec<String> = fs
        .read_dir("/")
        .unwrap()
        .iter()
        .map(|e| e.name_lossy())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "a",
            "a-long-directory-namea-long-directory-namea-long-directory-namea-long-directory-name",
            "abs-dir",
            "loop1",
            "loop2",
            "lost+found",
            "slow"
        ]
    );
    assert_eq!(
        fs.lookup("/abs-dir", false).unwrap().kind(),
        FileKind::Symlink
    );
    assert_eq!(
        fs.lookup("/abs-dir", true).unwrap().kind(),
        FileKind::Directory
    );

    // Opening a file twice gives the same vnode, so one page cache.
    let (one, two) = (
        fs.open_file("/a/b/file").unwrap(),
        fs.open_file("/a/rel").unwrap(),
    );
    assert!(Arc::ptr_eq(&one, &two));
}
