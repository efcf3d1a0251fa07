//! Self-test cases for the virtio-blk driver, on the raw disks
//! `scripts/kernel-selftest.sh` attaches: every 512-byte sector `s` holds the 8-byte
//! record `<letter><s as 7 decimal digits>` 64 times, with letter `S` on the first
//! disk and `T` on the second.
//!
//! Every completion arrives by interrupt (INTx through the I/O APIC) and the waiting
//! thread sleeps on the scheduler until then; the last case checks that no request
//! was completed any other way.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use genpager::{
    BlockMap, Error, Mapping, PAGE_SIZE, PageCache, PutFlags, Result, VmObject, Vnode, putpages,
    read, write,
};

use crate::cache::{KernelCache, kernel_cache};
use crate::kprintln;
use crate::selftest::{Outcome, Test, ensure};
use crate::virtio::{self, VirtioBlk};

/// Flush and evict.
const EVICT: PutFlags = PutFlags::CLEANIT
    .union(PutFlags::SYNCIO)
    .union(PutFlags::FREE);

/// The byte at `offset` of a disk the script wrote with `letter`.
fn disk_byte(letter: u8, offset: u64) -> u8 {
    let sector = offset / 512;
    match offset % 8 {
        0 => letter,
        c => b'0' + ((sector / 10u64.pow(7 - c as u32)) % 10) as u8,
    }
}

/// `len` bytes of the pattern from disk byte `from`.
fn disk_bytes(letter: u8, from: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| disk_byte(letter, from + i))
        .collect()
}

/// Fails at the first byte where `have` differs from `expected`.
fn same(what: &str, have: &[u8], expected: &[u8]) -> Outcome {
    ensure!(
        have.len() == expected.len(),
        "{what}: {} bytes, expected {}",
        have.len(),
        expected.len()
    );
    match (0..have.len()).find(|&i| have[i] != expected[i]) {
        Some(at) => Err(format!(
            "{what}: byte {at:#x} is {:#x}, expected {:#x}",
            have[at], expected[at]
        )),
        None => Ok(()),
    }
}

/// A file laid straight onto the disk: logical block `i` is the `i`-th block from
/// device sector `start`.
struct DiskFile {
    disk: &'static VirtioBlk,
    object: VmObject<KernelCache>,
    bshift: u32,
    start: u64,
}

impl DiskFile {
    fn new(disk: &'static VirtioBlk, start: u64, size: u64, bshift: u32) -> Arc<Self> {
        Arc::new(Self {
            disk,
            object: VmObject::new(kernel_cache(), size),
            bshift,
            start,
        })
    }
}

impl BlockMap for DiskFile {
    fn bmap(&self, lbn: u64) -> Result<Mapping> {
        Ok(Mapping::mapped(
            self.start + (lbn << (self.bshift - genpager::DEV_BSHIFT)),
            256,
        ))
    }

    fn alloc(&self, _offset: u64, _len: u64) -> Result {
        Ok(())
    }
}

impl Vnode for DiskFile {
    type Cache = KernelCache;
    type Map = Self;
    type Dev = VirtioBlk;

    fn object(&self) -> &VmObject<KernelCache> {
        &self.object
    }
    fn block_map(&self) -> &Self {
        self
    }
    fn device(&self) -> &VirtioBlk {
        self.disk
    }
    fn fs_bshift(&self) -> u32 {
        self.bshift
    }
}

/// The `index`-th disk, with its pattern letter.
fn disk(index: usize) -> core::result::Result<(&'static VirtioBlk, u8), String> {
    let disks = virtio::probe_all();
    let disk = disks
        .get(index)
        .ok_or_else(|| format!("no virtio disk {index} ({} found)", disks.len()))?;
    Ok((disk, [b'S', b'T'][index]))
}

/// Fails unless no page of `file` is busy.
fn none_busy(file: &DiskFile) -> Outcome {
    let state = file.object().read();
    ensure!(
        !state.cache().range(0..u64::MAX).any(|page| page.is_busy()),
        "a page was left busy"
    );
    Ok(())
}

/// Test: the two raw disks probed first, with the sizes the script gave them (the
/// ext2 disks of the workload follow them).
fn probed() -> Outcome {
    let disks = virtio::probe_all();
    ensure!(disks.len() >= 2, "{} virtio disks", disks.len());
    ensure!(
        disks[0].capacity_bytes() == 8 << 20 && disks[1].capacity_bytes() == 4 << 20,
        "capacities {} and {}",
        disks[0].capacity_bytes(),
        disks[1].capacity_bytes()
    );
    ensure!(
        disks.iter().all(|d| (20..24).contains(&d.gsi())),
        "GSI outside 20-23"
    );
    Ok(())
}

/// Test: read(2) through genpager of a file of 1 KiB blocks on the disk.
fn genpager_read() -> Outcome {
    let (disk, letter) = disk(0)?;
    let start = 2048; // byte 1 MiB
    let size = 256 * 1024 + 1000;
    let file = DiskFile::new(disk, start, size, 10);
    let before = disk.stats();
    let mut buf = vec![0u8; size as usize + 100];
    let got = read(&file, 0, &mut buf).map_err(|e| format!("read: {e}"))?;
    ensure!(got == size as usize, "read {got} bytes, expected {size}");
    same("file", &buf[..got], &disk_bytes(letter, start * 512, got))?;
    let after = disk.stats();
    ensure!(
        after.max_segments > 1,
        "no request had more than one segment"
    );
    ensure!(
        after.submitted > before.submitted,
        "no request reached the device"
    );
    ensure!(after.errors == before.errors, "a request failed");
    none_busy(&file)
}

/// Test: write(2) then putpages(CLEANIT|SYNCIO|FREE), read back past the cache.
fn genpager_write() -> Outcome {
    let (disk, letter) = disk(1)?;
    let start = 4096; // byte 2 MiB
    let size = 64 * 1024;
    let file = DiskFile::new(disk, start, size, 12);
    let data: Vec<u8> = (0..3 * PAGE_SIZE + 500)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let at = 1000;
    let wrote = write(&file, at, &data).map_err(|e| format!("write: {e}"))?;
    ensure!(wrote == data.len(), "wrote {wrote}");
    putpages(&file, 0, 0, EVICT).map_err(|e| format!("putpages: {e}"))?;
    ensure!(
        file.object().read().cache().resident_pages() == 0,
        "pages left after FREE"
    );
    let mut expected = disk_bytes(letter, start * 512, size as usize);
    expected[at as usize..at as usize + data.len()].copy_from_slice(&data);
    let mut raw = vec![0u8; size as usize];
    disk.read_bytes(start * 512, &mut raw)
        .map_err(|e| format!("read_bytes: {e}"))?;
    same("disk", &raw, &expected)?;
    let mut buf = vec![0u8; size as usize];
    read(&file, 0, &mut buf).map_err(|e| format!("read back: {e}"))?;
    same("read back", &buf, &expected)?;
    none_busy(&file)
}

/// Test: read_bytes / write_bytes at unaligned offsets, and flush.
fn metadata_io() -> Outcome {
    let (disk, letter) = disk(0)?;
    let mut buf = vec![0u8; 3000];
    disk.read_bytes(1000, &mut buf)
        .map_err(|e| format!("read_bytes: {e}"))?;
    same("superblock-ish", &buf, &disk_bytes(letter, 1000, 3000))?;
    let base = 6 << 20; // a scratch area at 6 MiB
    let patch: Vec<u8> = (0..1234).map(|i| (i % 13) as u8 + 0x80).collect();
    disk.write_bytes(base + 5007, &patch)
        .map_err(|e| format!("write_bytes: {e}"))?;
    disk.flush().map_err(|e| format!("flush: {e}"))?;
    let mut around = vec![0u8; 8192];
    disk.read_bytes(base + 2048, &mut around)
        .map_err(|e| format!("read_bytes: {e}"))?;
    let mut expected = disk_bytes(letter, base + 2048, 8192);
    let at = 5007 - 2048;
    expected[at..at + patch.len()].copy_from_slice(&patch);
    same("patched", &around, &expected)
}

/// Test: requests past the end of the disk complete with an error.
fn out_of_range() -> Outcome {
    let (disk, _) = disk(0)?;
    let errors = disk.stats().errors;
    let mut buf = [0u8; 600];
    let end = disk.capacity_bytes();
    ensure!(
        disk.read_bytes(end - 100, &mut buf) == Err(Error::Io),
        "read_bytes across the end did not fail"
    );
    let file = DiskFile::new(disk, end / 512 + 8, 4 * PAGE_SIZE as u64, 12);
    let result = read(&file, 0, &mut buf);
    ensure!(
        result == Err(Error::Io),
        "genpager read past the end: {result:?}"
    );
    ensure!(
        file.object().read().cache().resident_pages() == 0,
        "a failed read left pages"
    );
    ensure!(disk.stats().errors >= errors + 2, "errors not counted");
    Ok(())
}

/// Test: more requests than the ring holds wait in the software queue.
fn burst() -> Outcome {
    let (disk, letter) = disk(1)?;
    let count = 150;
    let results = disk.read_burst(100, count);
    ensure!(results.len() == count, "{} results", results.len());
    for (i, (result, bytes)) in results.iter().enumerate() {
        ensure!(result.is_ok(), "read {i}: {result:?}");
        same(
            "burst",
            bytes,
            &disk_bytes(letter, (100 + i as u64) * 512, 512),
        )?;
    }
    ensure!(disk.stats().queued > 0, "nothing was queued");
    Ok(())
}

/// Test: every request submitted has completed.
fn all_completed() -> Outcome {
    for (i, disk) in virtio::probe_all().iter().enumerate() {
        let stats = disk.stats();
        kprintln!("genpager kernel: virtio disk {i}: {stats:?}");
        ensure!(
            stats.completed == stats.submitted,
            "disk {i}: {} submitted, {} completed",
            stats.submitted,
            stats.completed
        );
        ensure!(
            stats.completed_in_interrupt == stats.completed,
            "disk {i}: {} of {} completions in interrupt context",
            stats.completed_in_interrupt,
            stats.completed
        );
    }
    ensure!(
        crate::frames::free_frames() == crate::frames::total_frames(),
        "{} of {} frames free after the virtio files were dropped",
        crate::frames::free_frames(),
        crate::frames::total_frames()
    );
    Ok(())
}

/// The virtio tests, in order (run by `selftest::run`).
pub const TESTS: &[Test] = &[
    (
        "virtio: the raw disks on bus 0, GSI from the q35 swizzle",
        probed,
    ),
    (
        "virtio: genpager read of a 1 KiB-block file, requests chained",
        genpager_read,
    ),
    (
        "virtio: genpager write + putpages(SYNCIO|FREE), read back",
        genpager_write,
    ),
    (
        "virtio: read_bytes/write_bytes unaligned, flush",
        metadata_io,
    ),
    ("virtio: past the end completes with Io", out_of_range),
    (
        "virtio: a burst past the ring size queues and completes",
        burst,
    ),
    (
        "virtio: every request completed, each in interrupt context; every frame returned",
        all_completed,
    ),
];
