//! The `ext2` example's command line: `cat`, `write`, `ls`, `stats`, the
//! no-argument demo on the shipped image, and one-line errors.

mod common;

use std::path::{Path, PathBuf};

use common::{Spec, TempDir, debugfs_dump, fsck_clean, mkfs, random_bytes, write_tree};
use genpager_ext2::cli;

struct Run {
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
}

fn run(args: &[&str], stdin: &[u8]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let status = cli::run(
        &args,
        &sample_image(),
        &mut &stdin[..],
        &mut stdout,
        &mut stderr,
    );
    Run {
        status,
        stdout,
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn sample_image() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images/sample.img")
}

fn image(tmp: &TempDir) -> (PathBuf, Vec<u8>) {
    let big = random_bytes(100_000, 1);
    write_tree(
        &tmp.join("src"),
        &[
            Spec::new("/dir/big", big.clone()),
            Spec::new("/dir/sub/x", b"x\n".to_vec()),
            Spec::new(
                "/dir/holes",
                [random_bytes(4096, 2), vec![0; 8192], random_bytes(100, 3)].concat(),
            ),
            Spec::new("/hello", b"hello\n".to_vec()),
        ],
    );
    let image = tmp.join("image");
    mkfs(&tmp.join("src"), &image, 1024, 2048, &[]);
    (image, big)
}

#[test]
fn cat_ls_stats() {
    let tmp = TempDir::new("cli");
    let (image, big) = image(&tmp);
    let image = image.to_str().unwrap();

    let out = run(&[image, "cat", "/dir/big"], b"");
    assert_eq!((out.status, out.stderr.as_str()), (0, ""));
    assert!(
        out.stdout == big,
        "cat prints the file's bytes and nothing else"
    );

    let out = run(&[image, "ls", "/dir"], b"");
    assert_eq!(out.status, 0, "{}", out.stderr);
    let mut names: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    names.sort();
    assert_eq!(names, ["big", "holes", "sub"]);
    let out = run(&[image, "ls", "/hello"], b"");
    assert_eq!(out.stdout, b"hello\n");

    let out = run(&[image, "stats", "/dir/holes"], b"");
    assert_eq!(out.status, 0, "{}", out.stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("12388 bytes"), "{text}");
    assert!(
        text.contains("device requests: 2 reads (4608 bytes)"),
        "{text}"
    );
    assert!(
        // The file's hole, and the unallocated blocks past the end of file under its
        // last page (the pager asks so that page is not made writable over them).
        text.contains("holes met: 2 (8 block(s) zero-filled without I/O)"),
        "{text}"
    );
    assert!(
        text.contains("block map: 5 block(s) in 2 contiguous extent(s), 1 hole(s) of 8 block(s)"),
        "{text}"
    );
    assert!(text.contains("pages per request:"), "{text}");
}

#[test]
fn write_then_cat() {
    let tmp = TempDir::new("cli-write");
    let (image, mut big) = image(&tmp);
    let path = image.to_str().unwrap();
    let data = random_bytes(50_000, 9);
    let out = run(&[path, "write", "/dir/big", "90000"], &data);
    assert_eq!(
        (out.status, out.stderr.as_str(), out.stdout.len()),
        (0, "", 0)
    );
    big.resize(90_000, 0);
    big.extend_from_slice(&data);
    let out = run(&[path, "cat", "/dir/big"], b"");
    assert!(out.stdout == big);
    let out = run(&[path, "write", "/hello", "0"], b"HELLO");
    assert_eq!(out.status, 0, "{}", out.stderr);
    fsck_clean(&image);
    assert_eq!(debugfs_dump(&image, "/dir/big", &tmp), big);
    assert_eq!(debugfs_dump(&image, "/hello", &tmp), b"HELLO\n");
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let tmp = TempDir::new("cli-errors");
    let (image, _) = image(&tmp);
    let image = image.to_str().unwrap();
    let missing = tmp.join("missing.img");
    let cases: &[(&[&str], &str)] = &[
        (&[missing.to_str().unwrap(), "ls", "/"], "missing.img"),
        (&[image, "cat", "/nope"], "/nope: no such file or directory"),
        (&[image, "cat", "/dir"], "/dir: is a directory"),
        (&[image, "ls", "/hello/x"], "/hello: not a directory"),
        (&[image, "stats", "/dir/sub"], "/dir/sub: is a directory"),
        (&[image, "write", "/hello", "minus-one"], "not a number"),
    ];
    for (args, message) in cases {
        let out = run(args, b"");
        assert_eq!(out.status, 1, "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
    for args in [
        &[image][..],
        &[image, "frobnicate", "/"],
        &[image, "cat"],
        &[image, "cat", "/a", "/b"],
    ] {
        let out = run(args, b"");
        assert_eq!(out.status, 2, "{args:?}");
        assert!(out.stderr.starts_with("usage:"), "{args:?}");
    }
}

#[test]
fn no_arguments_shows_the_sample_image() {
    let out = run(&[], b"");
    assert_eq!(out.status, 0, "{}", out.stderr);
    let text = String::from_utf8(out.stdout).unwrap();
    for line in ["lost+found", "README", "data", "docs", "nested"] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    assert!(
        text.contains(&format!("stats {}", cli::SAMPLE_FILE)),
        "{text}"
    );
    assert!(text.contains("device requests: "), "{text}");
    assert!(text.contains("holes met: 2 (80 block(s)"), "{text}");
}

/// The shipped sample image is what its script makes and is clean.
#[test]
fn sample_image_is_clean() {
    fsck_clean(&sample_image());
}
