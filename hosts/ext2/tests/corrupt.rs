//! Corrupt and unsupported images give clear errors, never a panic.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Spec, TempDir, debugfs, debugfs_write, mkfs, random_bytes, write_tree};
use genpager_ext2::{Ext2Error, Ext2Fs, FileKind, OpenOptions};

fn sample(tmp: &TempDir, bs: u32) -> PathBuf {
    let src = tmp.join("src");
    write_tree(
        &src,
        &[
            Spec::new("/a/b/file", random_bytes(30 * 1024, 1)),
            Spec::new("/a/small", b"small\n".to_vec()),
            Spec::new("/top", random_bytes(5000, 2)),
        ],
    );
    let image = tmp.join("image");
    mkfs(&src, &image, bs, 1024, &[]);
    image
}

fn patch(image: &Path, at: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    file.write_all_at(bytes, at).unwrap();
}

fn open(image: &Path) -> Result<Arc<Ext2Fs>, Ext2Error> {
    Ext2Fs::open(image, OpenOptions::read_only())
}

/// The first block of `path`'s data, from debugfs.
fn first_block(image: &Path, path: &str) -> u64 {
    let out = debugfs(image, &format!("bmap {path} 0"));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("debugfs bmap said {out:?}"))
}

#[test]
fn bad_magic() {
    let tmp = TempDir::new("magic");
    let image = sample(&tmp, 1024);
    patch(&image, 1024 + 56, &[0x12, 0x34]);
    let err = open(&image).err().unwrap();
    assert!(matches!(err, Ext2Error::BadMagic(0x3412)), "{err}");
    assert!(err.to_string().contains("0xef53"), "{err}");
}

#[test]
fn not_an_image_at_all() {
    let tmp = TempDir::new("garbage");
    for len in [0usize, 100, 2047, 4096, 65536] {
        let image = tmp.join(&format!("garbage-{len}"));
        std::fs::write(&image, random_bytes(len, len as u64)).unwrap();
        let err = open(&image).err().unwrap();
        assert!(
            matches!(err, Ext2Error::BadMagic(_) | Ext2Error::Corrupt(_)),
            "{len}: {err}"
        );
    }
    let err = open(&tmp.join("missing")).err().unwrap();
    assert!(
        matches!(err, Ext2Error::Io(_)) && err.to_string().contains("missing"),
        "{err}"
    );
}

#[test]
fn unsupported_features() {
    let tmp = TempDir::new("features");
    let image = sample(&tmp, 4096);
    // extents (incompatible): refused outright, naming the feature.
    patch(&image, 1024 + 96, &(0x0002u32 | 0x0040).to_le_bytes());
    let err = open(&image).err().unwrap();
    assert!(
        matches!(&err, Ext2Error::Unsupported(m) if m.contains("extent")),
        "{err}"
    );
    // metadata_csum (read-only compatible): readable, but not writable.
    patch(&image, 1024 + 96, &0x0002u32.to_le_bytes());
    patch(&image, 1024 + 100, &(0x0003u32 | 0x0400).to_le_bytes());
    let fs = Ext2Fs::open(&image, OpenOptions::read_write()).unwrap();
    let file = fs.open_file("/top").unwrap();
    assert_eq!(file.read_to_vec().unwrap(), random_bytes(5000, 2));
    let err = file.write_at(0, b"x").unwrap_err();
    assert!(
        matches!(&err, Ext2Error::ReadOnly(m) if m.contains("metadata_csum")),
        "{err}"
    );
    // A revision that does not exist, and a block size past 64 KiB.
    patch(&image, 1024 + 100, &0x0003u32.to_le_bytes());
    patch(&image, 1024 + 76, &7u32.to_le_bytes());
    assert!(matches!(
        open(&image).err().unwrap(),
        Ext2Error::Unsupported(_)
    ));
    patch(&image, 1024 + 76, &1u32.to_le_bytes());
    patch(&image, 1024 + 24, &9u32.to_le_bytes());
    assert!(matches!(
        open(&image).err().unwrap(),
        Ext2Error::Unsupported(_)
    ));
}

#[test]
fn truncated_image() {
    let tmp = TempDir::new("truncated");
    let image = sample(&tmp, 1024);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(300 * 1024)
        .unwrap();
    let err = open(&image).err().unwrap();
    assert!(
        matches!(&err, Ext2Error::Corrupt(m) if m.contains("image has")),
        "{err}"
    );
}

#[test]
fn block_pointers_out_of_range() {
    let tmp = TempDir::new("pointers");
    let image = sample(&tmp, 1024);
    debugfs_write(&image, "sif /top block[4] 4000000");
    debugfs_write(&image, "sif /a/b/file block[IND] 9999999");
    let fs = open(&image).unwrap();
    let file = fs.open_file("/top").unwrap();
    let err = file.read_to_vec().unwrap_err();
    assert!(
        matches!(&err, Ext2Error::Corrupt(m) if m.contains("4000000") && m.contains("out of range")),
        "{err}"
    );
    // The page before the one with the bad pointer still reads.
    let mut head = [0u8; 4096];
    assert_eq!(file.read_at(0, &mut head).unwrap(), 4096);
    assert_eq!(head[..], random_bytes(5000, 2)[..4096]);

    let file = fs.open_file("/a/b/file").unwrap();
    let err = file.read_to_vec().unwrap_err();
    assert!(
        matches!(&err, Ext2Error::Corrupt(m) if m.contains("9999999")),
        "{err}"
    );
}

#[test]
fn directory_loop() {
    let tmp = TempDir::new("loop");
    let image = sample(&tmp, 1024);
    debugfs_write(&image, "link /a /a/b/up");
    let fs = open(&image).unwrap();
    let err = fs.walk("/").unwrap_err();
    assert!(
        matches!(&err, Ext2Error::Corrupt(m) if m.contains("directory loop")),
        "{err}"
    );
    // A path through the loop is still finite and resolves.
    let file = fs.open_file("/a/b/up/b/up/small").unwrap();
    assert_eq!(file.read_to_vec().unwrap(), b"small\n");
}

#[test]
fn malformed_directory_entries() {
    let tmp = TempDir::new("dirent");
    let image = sample(&tmp, 1024);
    let block = first_block(&image, "/a");
    // rec_len of the first entry ("."): zero would loop forever if trusted.
    patch(&image, block * 1024 + 4, &0u16.to_le_bytes());
    let fs = open(&image).unwrap();
    let err = fs.read_dir("/a").unwrap_err();
    assert!(
        matches!(&err, Ext2Error::Corrupt(m) if m.contains("record length")),
        "{err}"
    );
    assert!(fs.open_file("/a/small").is_err());
    assert_eq!(
        fs.open_file("/top").unwrap().read_to_vec().unwrap(),
        random_bytes(5000, 2)
    );
    // An entry naming an inode past the last one.
    patch(&image, block * 1024 + 4, &12u16.to_le_bytes());
    patch(&image, block * 1024, &1_000_000u32.to_le_bytes());
    let fs = open(&image).unwrap();
    let err = fs.read_dir("/a").unwrap_err();
    assert!(
        matches!(&err, Ext2Error::Corrupt(m) if m.contains("1000000")),
        "{err}"
    );
}

/// Random damage to the metadata of a small image: whatever happens, no panic.
#[test]
fn random_metadata_damage_never_panics() {
    let tmp = TempDir::new("fuzz");
    let image = sample(&tmp, 1024);
    let pristine = std::fs::read(&image).unwrap();
    // Where the damage goes: the superblock's fields, the group descriptor, the
    // first inodes, two directories and an indirect block.
    let imap = debugfs(&image, "imap <1>");
    let table = imap
        .split("located at block ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("debugfs imap said {imap:?}"));
    let stat = debugfs(&image, "stat /a/b/file");
    let indirect = stat
        .split("(IND):")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no indirect block in {stat:?}"));
    let block = |path: &str| first_block(&image, path) as usize * 1024;
    let areas = [
        1024..1024 + 104,
        2048..2048 + 32,
        table * 1024..table * 1024 + 16 * 256,
        block("/")..block("/") + 1024,
        block("/a")..block("/a") + 1024,
        indirect * 1024..indirect * 1024 + 1024,
    ];
    // GENPAGER_EXT2_FUZZ=ITERATIONS[,SEED] runs longer.
    let setting = std::env::var("GENPAGER_EXT2_FUZZ").unwrap_or_default();
    let mut setting = setting.split(',').map(|v| v.trim().parse::<u64>().ok());
    let iterations = setting.next().flatten().unwrap_or(400);
    let mut seed = setting.next().flatten().unwrap_or(0x1234_5678_9abc_def1) | 1;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let damaged = tmp.join("damaged");
    let mut outcomes = [0usize; 2];
    for _ in 0..iterations {
        let mut bytes = pristine.clone();
        for _ in 0..1 + next() % 4 {
            let area = &areas[next() as usize % areas.len()];
            let at = area.start + next() as usize % area.len();
            bytes[at] = match next() % 4 {
                0 => 0,
                1 => 0xFF,
                _ => next() as u8,
            };
        }
        std::fs::write(&damaged, &bytes).unwrap();
        let ok = exercise(&damaged).is_ok();
        outcomes[usize::from(ok)] += 1;
    }
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "some damage is caught, some harmless: {outcomes:?}"
    );
}

/// Opens, walks, reads and writes what it can; the first error ends it.
fn exercise(image: &Path) -> Result<(), Ext2Error> {
    let fs = Ext2Fs::open(image, OpenOptions::read_write())?;
    let _ = fs.read_dir("/");
    for entry in fs.walk("/")? {
        if entry.kind == FileKind::Regular {
            let file = fs.open_file(&entry.path)?;
            if file.size() <= 1 << 20 {
                file.read_to_vec()?;
            }
            file.write_at(10, b"scribble")?;
            file.sync()?;
        }
    }
    Ok(())
}
