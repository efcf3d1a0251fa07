//! Shared by the ext2 tests: temporary directories, generated trees, and the
//! e2fsprogs tools (`mke2fs`, `e2fsck`, `debugfs`).

#![allow(dead_code)]

pub mod disk;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty, uniquely named directory.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "genpager-ext2-{tag}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The path of an e2fsprogs tool, or a panic telling how to install it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(["/sbin", "/usr/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{name} not found: these tests need e2fsprogs (mke2fs, e2fsck, debugfs); \
         install it, e.g. `sudo apt-get install e2fsprogs`"
    );
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

/// Makes an ext2 image at `image` of `size_kib` KiB with `block_size`-byte blocks
/// from the tree at `dir`. `extra` are more mke2fs options (`-r 0`, `-N 500`, …).
pub fn mkfs(dir: &Path, image: &Path, block_size: u32, size_kib: u64, extra: &[&str]) {
    let output = run(Command::new(tool("mke2fs"))
        .args([
            "-q",
            "-F",
            "-t",
            "ext2",
            "-b",
            &block_size.to_string(),
            "-m",
            "0",
        ])
        .args(extra)
        .arg("-d")
        .arg(dir)
        .arg(image)
        .arg(format!("{size_kib}k")));
    assert!(
        output.status.success(),
        "mke2fs failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `e2fsck -fn` on `image`; panics with its report unless it finds nothing.
pub fn fsck_clean(image: &Path) {
    let output = run(Command::new(tool("e2fsck")).arg("-fn").arg(image));
    assert!(
        output.status.success(),
        "e2fsck -fn exited {:?}:\n{}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    free_counts_agree(image);
}

/// Checks the superblock's free block count against the sum of the groups'
/// (e2fsck tolerates a stale superblock count; this host keeps it exact).
pub fn free_counts_agree(image: &Path) {
    let output = run(Command::new(tool("dumpe2fs")).arg(image));
    assert!(
        output.status.success(),
        "dumpe2fs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Free blocks:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("dumpe2fs prints the superblock's free blocks");
    let groups: u64 = text
        .lines()
        .filter_map(|l| l.trim().split_once(" free blocks,"))
        .map(|(n, _)| n.trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, groups, "superblock free blocks vs the groups' sum");
}

/// The bytes of `path` in `image`, as `debugfs -R "dump PATH OUT"` writes them.
pub fn debugfs_dump(image: &Path, path: &str, scratch: &TempDir) -> Vec<u8> {
    let out = scratch.join("dump.out");
    let _ = fs::remove_file(&out);
    let request = format!("dump {path} {}", out.display());
    let output = run(Command::new(tool("debugfs"))
        .arg("-R")
        .arg(&request)
        .arg(image));
    assert!(
        output.status.success(),
        "debugfs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::read(&out).unwrap_or_else(|err| {
        panic!(
            "debugfs wrote no {}: {err}; {}",
            out.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Deterministic pseudo-random bytes (xorshift), never an all-zero 512-byte run.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&(state | 1).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A file to put in a generated tree: its contents, written sparsely when large.
pub struct Spec {
    pub path: String,
    pub data: Vec<u8>,
}

impl Spec {
    pub fn new(path: &str, data: Vec<u8>) -> Spec {
        Spec {
            path: path.to_string(),
            data,
        }
    }
}

/// Writes the files under `root`; zero blocks are left as holes in the host file
/// (mke2fs makes holes of all-zero blocks either way).
pub fn write_tree(root: &Path, files: &[Spec]) {
    for spec in files {
        let path = root.join(spec.path.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let file = fs::File::create(&path).unwrap();
        file.set_len(spec.data.len() as u64).unwrap();
        for (i, chunk) in spec.data.chunks(65536).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                file.write_all_at(chunk, i as u64 * 65536).unwrap();
            }
        }
    }
}

/// Every regular file under `root`, as (absolute path inside the tree, bytes).
pub fn host_files(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            let path = entry.path();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let inner = format!("/{}", path.strip_prefix(root).unwrap().display());
                out.push((inner, path));
            }
        }
    }
    out.sort();
    out
}

/// The output of `debugfs -R REQUEST IMAGE`.
pub fn debugfs(image: &Path, request: &str) -> String {
    let output = run(Command::new(tool("debugfs"))
        .arg("-R")
        .arg(request)
        .arg(image));
    assert!(
        output.status.success(),
        "debugfs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `debugfs -w -R REQUEST IMAGE` (to corrupt an image on purpose).
pub fn debugfs_write(image: &Path, request: &str) {
    let output = run(Command::new(tool("debugfs"))
        .arg("-w")
        .arg("-R")
        .arg(request)
        .arg(image));
    assert!(
        output.status.success(),
        "debugfs -w failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
