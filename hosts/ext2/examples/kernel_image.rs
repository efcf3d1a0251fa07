//! `kernel_image`: the host side of the kernel self-test's ext2 workload
//! (`genpager_ext2::workload`), used by `scripts/kernel-selftest.sh`.
//!
//! ```text
//! kernel_image tree DIR      # the tree for mke2fs -d: /ro, /w and /MANIFEST
//! kernel_image expect DIR    # what each /w file must hold after the kernel's writers
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::exit;

use genpager_ext2::workload::{self, FNV_START, FileSpec};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tree", dir] => tree(Path::new(dir)),
        ["expect", dir] => expect(Path::new(dir)),
        _ => {
            eprintln!("usage: kernel_image tree DIR | kernel_image expect DIR");
            exit(2)
        }
    };
    if let Err(err) = result {
        eprintln!("kernel_image: {err}");
        exit(1);
    }
}

/// Writes `spec` under `root`: its size (holes by default), then each data extent.
fn write_spec(root: &Path, spec: &FileSpec) -> std::io::Result<()> {
    let path = root.join(spec.path.trim_start_matches('/'));
    fs::create_dir_all(path.parent().expect("paths are absolute"))?;
    let file = File::create(&path)?;
    file.set_len(spec.size)?;
    for &(offset, len) in spec.extents {
        // In pieces: the far file's extents are small, but keep memory bounded anyway.
        let mut at = offset;
        while at < offset + len {
            let piece = (offset + len - at).min(1 << 20);
            file.write_all_at(&spec.bytes(at, piece as usize), at)?;
            at += piece;
        }
    }
    Ok(())
}

/// The checksum of `len` bytes at `offset` of the file written under `root`.
fn checksum(root: &Path, spec: &FileSpec, offset: u64, len: u64) -> std::io::Result<u64> {
    let mut file = File::open(root.join(spec.path.trim_start_matches('/')))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = vec![0; len as usize];
    file.read_exact(&mut data)?;
    Ok(workload::fnv1a(FNV_START, &data))
}

fn tree(root: &Path) -> std::io::Result<()> {
    for spec in workload::READ_ONLY.iter().chain(workload::WRITTEN) {
        write_spec(root, spec)?;
    }
    let mut failed = None;
    let text = workload::manifest(|spec, offset, len| {
        checksum(root, spec, offset, len).unwrap_or_else(|err| {
            failed = Some(err);
            0
        })
    });
    if let Some(err) = failed {
        return Err(err);
    }
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(root.join("MANIFEST"))?
        .write_all(text.as_bytes())
}

fn expect(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for (index, spec) in workload::WRITTEN.iter().enumerate() {
        let name = spec.path.rsplit('/').next().expect("paths have a name");
        fs::write(dir.join(name), workload::expected(index, workload::ROUNDS))?;
    }
    Ok(())
}
