//! Direct I/O benchmarks (issue 5): a 1 MiB aligned direct read and write against
//! MemDisk's raw copy of the same bytes (the physical limit), and no page-cache pages
//! created.
//!
//! `cargo bench --bench directio`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::page::PAGE_SHIFT;
use genpager::testing::{Direction, Layout, MemDisk, MemFile, MemFs};
use genpager::{PAGE_SIZE, PageCache, Vnode};

const LEN: usize = 1 << 20;
const ROUNDS: usize = 301;

/// A page-aligned buffer of `LEN` bytes inside a larger allocation.
struct Buffer {
    bytes: Vec<u8>,
    start: usize,
}

impl Buffer {
    fn new() -> Self {
        let bytes = vec![0x5a; LEN + PAGE_SIZE];
        let start = bytes.as_ptr().align_offset(PAGE_SIZE);
        Self { bytes, start }
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + LEN]
    }
}

/// A contiguous 1 MiB file and the disk byte offset of its first block.
fn setup() -> (MemDisk, Arc<MemFile>, u64) {
    let disk = MemDisk::new((LEN as u64 / 512) * 4);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7) as u8).collect();
    let file = fs.create(&data).unwrap();
    let at = file.block_table()[0].unwrap() * 512;
    (disk, file, at)
}

fn direct(file: &Arc<MemFile>, direction: Direction, buf: &mut [u8]) {
    let mut uio = Uio::new(0, direction, AddressSpace::User, vec![IoVec::new(buf)]).unwrap();
    let progress = directio(file, &mut uio, DirectFlags::empty()).unwrap();
    assert_eq!((progress.transferred, progress.fallback), (LEN, None));
    black_box(&uio);
}

/// Best time of `ROUNDS` runs of `f` (the same statistic for the pager and for the raw
/// copy, so the ratio compares like with like and is stable from run to run).
fn best(mut f: impl FnMut()) -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .expect("at least one round")
}

/// Best times of direct and raw 1 MiB reads and writes, and requests per transfer.
struct Measured {
    read: Duration,
    raw_read: Duration,
    write: Duration,
    raw_write: Duration,
    requests: u64,
}

fn measure(disk: &MemDisk, file: &Arc<MemFile>, at: u64, buf: &mut Buffer) -> Measured {
    disk.reset_stats();
    let read = best(|| direct(file, Direction::Read, buf.get_mut()));
    let requests = disk.stats().requests / ROUNDS as u64;
    let raw_read = best(|| disk.read_raw(at, buf.get_mut()));
    let write = best(|| direct(file, Direction::Write, buf.get_mut()));
    let raw_write = best(|| disk.write_raw(at, buf.get_mut()));
    Measured {
        read,
        raw_read,
        write,
        raw_write,
        requests,
    }
}

fn report(what: &str, m: &Measured) -> (f64, f64) {
    let read = m.raw_read.as_secs_f64() / m.read.as_secs_f64();
    let write = m.raw_write.as_secs_f64() / m.write.as_secs_f64();
    println!(
        "{what}: {} requests per 1 MiB; direct read {:?} ({:.1} GB/s) vs raw copy {:?}: efficiency {read:.3}; \
         direct write {:?} ({:.1} GB/s) vs raw copy {:?}: efficiency {write:.3}",
        m.requests,
        m.read,
        LEN as f64 / m.read.as_secs_f64() / 1e9,
        m.raw_read,
        m.write,
        LEN as f64 / m.write.as_secs_f64() / 1e9,
        m.raw_write,
    );
    (read, write)
}

fn bench(c: &mut Criterion) {
    let (disk, file, at) = setup();
    let mut buf = Buffer::new();

    let mut group = c.benchmark_group("directio");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Bytes(LEN as u64));
    group.bench_function("raw_read_1MiB", |b| {
        b.iter(|| disk.read_raw(at, buf.get_mut()))
    });
    group.bench_function("raw_write_1MiB", |b| {
        b.iter(|| disk.write_raw(at, buf.get_mut()))
    });
    for max in [file.max_transfer(), LEN] {
        file.set_max_transfer(max);
        let label = format!("max_transfer_{}KiB", max >> 10);
        group.bench_function(format!("direct_read_1MiB/{label}"), |b| {
            b.iter(|| direct(&file, Direction::Read, buf.get_mut()))
        });
        group.bench_function(format!("direct_write_1MiB/{label}"), |b| {
            b.iter(|| direct(&file, Direction::Write, buf.get_mut()))
        });
    }
    group.finish();

    file.set_max_transfer(genpager::DEFAULT_MAX_TRANSFER);
    let small = measure(&disk, &file, at, &mut buf);
    report("max transfer 64 KiB (default)", &small);
    assert_eq!(
        small.requests,
        (LEN / genpager::DEFAULT_MAX_TRANSFER) as u64,
        "one request per max transfer"
    );

    file.set_max_transfer(LEN);
    let whole = measure(&disk, &file, at, &mut buf);
    let (read, write) = report("max transfer 1 MiB", &whole);
    assert_eq!(whole.requests, 1);

    let resident = file.object().read().cache().resident_pages();
    println!("page-cache pages created: {resident} (target 0)");
    assert_eq!(resident, 0, "direct I/O created page-cache pages");
    assert!(read >= 0.9, "direct read efficiency {read:.3} < 0.9");
    assert!(write >= 0.9, "direct write efficiency {write:.3} < 0.9");
}

criterion_group!(benches, bench);
criterion_main!(benches);
