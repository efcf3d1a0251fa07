//! The command line of the `ext2` example, as a function the tests can call.
//!
//! ```text
//! ext2 IMAGE cat PATH            the file's bytes to stdout
//! ext2 IMAGE write PATH OFFSET   stdin's bytes written at OFFSET, then flushed
//! ext2 IMAGE ls PATH             one entry name per line
//! ext2 IMAGE stats PATH          read the whole file, print what the pager did
//! ext2                           ls / and stats of one file of the sample image
//! ```

use std::prelude::rust_2024::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Ext2Error, Result};
use crate::fs::{Ext2Fs, OpenOptions};
use crate::layout::FileKind;

/// The usage text.
pub const USAGE: &str = "usage: ext2 IMAGE cat PATH | write PATH OFFSET | ls PATH | stats PATH\n       ext2            (ls / and stats of a file on the sample image)";

/// The file of the sample image that the no-argument run shows `stats` of.
pub const SAMPLE_FILE: &str = "/data/sparse.bin";

/// Bytes `cat` reads per call.
const CAT_CHUNK: usize = 1 << 20;

/// Runs the command line `args` (without the program name): output to `stdout`,
/// input from `stdin`, errors as one line on `stderr`. Returns the exit status: 0,
/// 1 for an error, 2 for a usage error. `sample` is the image used when `args` is
/// empty.
pub fn run(
    args: &[String],
    sample: &Path,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let result = match args {
        [] => demo(sample, stdout),
        [image, command, rest @ ..] => match (command.as_str(), rest) {
            ("cat", [path]) => cat(image, path, stdout),
            ("write", [path, offset]) => match offset.parse::<u64>() {
                Ok(offset) => write(image, path, offset, stdin),
                Err(_) => Err(Ext2Error::Invalid(format!(
                    "offset {offset:?} is not a number"
                ))),
            },
            ("ls", [path]) => ls(image, path, stdout),
            ("stats", [path]) => stats(image, path, stdout),
            _ => return usage(stderr),
        },
        _ => return usage(stderr),
    };
    match result {
        Ok(()) => match stdout.flush() {
            Ok(()) => 0,
            Err(err) => report(stderr, &Ext2Error::Io(err)),
        },
        Err(err) => report(stderr, &err),
    }
}

fn usage(stderr: &mut dyn Write) -> i32 {
    let _ = writeln!(stderr, "{USAGE}");
    2
}

fn report(stderr: &mut dyn Write, err: &Ext2Error) -> i32 {
    let _ = writeln!(stderr, "ext2: {err}");
    1
}

fn open(image: &str, options: OpenOptions) -> Result<std::sync::Arc<Ext2Fs>> {
    Ext2Fs::open(image, options)
}

/// `cat PATH`: the file's bytes, read through genpager, to `out`.
fn cat(image: &str, path: &str, out: &mut dyn Write) -> Result {
    let file = open(image, OpenOptions::read_only())?.open_file(path)?;
    let mut buf = vec![0u8; CAT_CHUNK];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(offset, &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        offset += n as u64;
        file.drop_cached(offset)?;
    }
}

/// `write PATH OFFSET`: stdin's bytes written at `offset` through genpager, then
/// flushed and the inode updated.
fn write(image: &str, path: &str, offset: u64, input: &mut dyn Read) -> Result {
    let file = open(image, OpenOptions::read_write())?.open_file(path)?;
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    file.write_at(offset, &data)?;
    file.sync()?;
    file.fs().device().sync()?;
    Ok(())
}

/// `ls PATH`: the entry names of a directory (without `.` and `..`), one a line; for
/// a file, its own name.
fn ls(image: &str, path: &str, out: &mut dyn Write) -> Result {
    let fs = open(image, OpenOptions::read_only())?;
    let inode = fs.lookup(path, true)?;
    if inode.kind() != FileKind::Directory {
        let name = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(path);
        writeln!(out, "{name}")?;
        return Ok(());
    }
    for entry in fs.read_dir(path)? {
        out.write_all(&entry.name)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `stats PATH`: reads the whole file through genpager and prints what the pager
/// asked of the device and the block map.
fn stats(image: &str, path: &str, out: &mut dyn Write) -> Result {
    let fs = open(image, OpenOptions::read_only())?;
    let file = fs.open_file(path)?;
    let block_size = fs.info().block_size;
    fs.device().reset_stats();
    let mut buf = vec![0u8; CAT_CHUNK];
    let mut read = 0u64;
    loop {
        let n = file.read_at(read, &mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let device = fs.device().stats();
    let calls = file.stats();
    let map = file.map_summary()?;
    writeln!(
        out,
        "{path}: inode {}, {} bytes, {} blocks of {block_size} bytes",
        file.ino(),
        file.size(),
        file.size().div_ceil(u64::from(block_size))
    )?;
    writeln!(out, "read through genpager: {read} bytes")?;
    writeln!(
        out,
        "device requests: {} reads ({} bytes), {} writes ({} bytes)",
        device.reads, device.read_bytes, device.writes, device.written_bytes
    )?;
    let histogram: Vec<String> = device
        .pages_per_request
        .iter()
        .map(|(pages, count)| format!("{pages} x{count}"))
        .collect();
    writeln!(
        out,
        "pages per request: {}",
        if histogram.is_empty() {
            "-".to_string()
        } else {
            histogram.join(", ")
        }
    )?;
    writeln!(
        out,
        "holes met: {} ({} block(s) zero-filled without I/O)",
        calls.holes_met, calls.hole_blocks
    )?;
    writeln!(out, "bmap calls: {}", calls.bmap_calls)?;
    writeln!(
        out,
        "block map: {} block(s) in {} contiguous extent(s), {} hole(s) of {} block(s)",
        map.mapped_blocks, map.extents, map.holes, map.hole_blocks
    )?;
    writeln!(out, "resident pages: {}", file.resident_pages())?;
    Ok(())
}

/// The no-argument run: `ls /` and `stats` of [`SAMPLE_FILE`] on `sample`.
fn demo(sample: &Path, out: &mut dyn Write) -> Result {
    let image = sample.to_string_lossy().into_owned();
    writeln!(out, "$ ext2 {image} ls /")?;
    ls(&image, "/", out)?;
    writeln!(out, "\n$ ext2 {image} stats {SAMPLE_FILE}")?;
    stats(&image, SAMPLE_FILE, out)
}
