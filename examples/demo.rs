//! genpager in one run: a file read through the page cache, written through write
//! faults and flushed in clusters, a hole read and filled, a device error that loses
//! nothing, and the per-file statistics rows that counted it all. Everything runs over the test rig's RAM disk and toy filesystem.
//!
//! `cargo run --release --example demo`

use std::collections::BTreeMap;
use std::sync::Arc;

use genpager::Fault;
use genpager::page::PAGE_SHIFT;
use genpager::testing::{Direction, Layout, LoggedRequest, MemDisk, MemFile, MemFs};
use genpager::{
    DirtyStatus, Error, PAGE_SIZE, PageCache, PageFlags, PutFlags, Stats, Vnode, getpages,
    putpages, read, write,
};

const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);

fn summary(what: &str, log: &[LoggedRequest]) {
    let bytes: usize = log.iter().map(|r| r.len).sum();
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for request in log {
        *sizes.entry(request.len / 1024).or_default() += 1;
    }
    let sizes: Vec<String> = sizes
        .iter()
        .map(|(kib, n)| format!("{n} x {kib} KiB"))
        .collect();
    println!(
        "  {what}: {} device requests, {} KiB, {:.1} pages per request ({})",
        log.len(),
        bytes / 1024,
        bytes as f64 / PAGE_SIZE as f64 / log.len().max(1) as f64,
        sizes.join(", ")
    );
}

fn page_state(file: &MemFile, offset: u64) -> String {
    let state = file.object().read();
    match state.cache().lookup(offset) {
        Some(page) => format!("{:?}, {:?}", page.flags, page.dirty()),
        None => "not resident".into(),
    }
}

fn main() -> Result<(), Error> {
    let disk = MemDisk::new(64 * 1024); // 32 MiB of 512-byte sectors
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Fragmented { run: 8 });

    println!("1. Read a 4 MiB file laid out in runs of 8 blocks, through the page cache");
    let data: Vec<u8> = (0..4 << 20).map(|i: usize| (i * 31 % 251) as u8).collect();
    let file: Arc<MemFile> = fs.create(&data)?;
    let mut buf = vec![0u8; data.len()];
    let n = read(&file, 0, &mut buf)?;
    assert!(n == data.len() && buf == data, "read back what was stored");
    summary("cold read", &disk.log());
    disk.clear_log();
    read(&file, 0, &mut buf)?;
    println!("  cached re-read: {} device requests", disk.log().len());

    println!("2. Write 1 MiB through write faults, then flush: one request per contiguous run");
    let new: Vec<u8> = (0..1 << 20).map(|i: usize| (i % 7) as u8).collect();
    write(&file, 512 * 1024, &new)?;
    putpages(&file, 0, 0, FLUSH)?;
    let writes: Vec<LoggedRequest> = disk
        .log()
        .into_iter()
        .filter(|r| r.direction == Direction::Write)
        .collect();
    summary("writeback", &writes);
    let mut expect = data.clone();
    expect[512 * 1024..512 * 1024 + new.len()].copy_from_slice(&new);
    assert!(
        file.disk_contents() == expect,
        "the disk holds the new bytes"
    );
    disk.clear_log();

    println!("3. A hole: read faults map it read-only, a write fault allocates it");
    let sparse_data = vec![7u8; 4 * PAGE_SIZE];
    let sparse = fs.create_sparse(sparse_data.len() as u64, &sparse_data, &[2])?;
    let pages = getpages(&sparse, Fault::read(0, 4))?
        .into_busy()
        .expect("sync faults return busy pages");
    assert!(pages.bytes(2).iter().all(|&b| b == 0));
    drop(pages);
    println!(
        "  after a read fault, page 2: {}",
        page_state(&sparse, 2 * PAGE_SIZE as u64)
    );
    summary("read around the hole", &disk.log());
    write(&sparse, 2 * PAGE_SIZE as u64 + 100, b"filled")?;
    println!(
        "  after a write, page 2: {}; block 2 is a hole: {}",
        page_state(&sparse, 2 * PAGE_SIZE as u64),
        sparse.is_hole(2)
    );
    putpages(&sparse, 0, 0, FLUSH)?;
    disk.clear_log();

    println!("4. A device error during writeback loses nothing");
    write(&file, 0, b"precious")?;
    disk.fail_nth(1, Error::Io);
    let first = putpages(&file, 0, 0, FLUSH);
    println!(
        "  flush with a failing device: {first:?}; page 0 is still {}",
        page_state(&file, 0)
    );
    assert!(first.is_err());
    let dirty = file.object().read().cache().lookup(0).map(|p| p.dirty());
    assert_eq!(dirty, Some(DirtyStatus::Dirty));
    putpages(&file, 0, 0, FLUSH)?;
    println!(
        "  next flush: Ok, the disk has it: {}",
        &file.disk_contents()[..8] == b"precious"
    );
    assert!(
        !file
            .object()
            .read()
            .cache()
            .lookup(0)
            .is_some_and(|p| p.flags.contains(PageFlags::BUSY))
    );

    println!("5. Per-file statistics, and their sum (no global counter: summed on demand)");
    let rows = [file.object().stats(), sparse.object().stats()];
    println!("  file:   {}", rows[0]);
    println!("  sparse: {}", rows[1]);
    println!("  total:  {}", rows.iter().sum::<Stats>());

    let stats = disk.stats();
    println!(
        "device totals: {} requests, {} KiB read, {} KiB written, modelled device time {:.2} ms",
        stats.requests,
        stats.bytes_read / 1024,
        stats.bytes_written / 1024,
        stats.device_time_ns as f64 / 1e6
    );
    Ok(())
}
