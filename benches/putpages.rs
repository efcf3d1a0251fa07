//! putpages benchmarks (issue 4): 64 MiB of contiguous dirty pages written back vs
//! segmented memcpy, and the cost of a dirty-only flush with one dirty page among
//! 1,000 vs 1,000,000 resident clean pages.
//!
//! `cargo bench --bench putpages`

#[path = "support/resident.rs"]
mod resident;
mod support;

use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use genpager::page::PAGE_SHIFT;
use genpager::testing::{Layout, MemDisk, MemFile, MemFs};
use genpager::{DirtyStatus, PAGE_SIZE, PageCache, PutFlags, Vnode, putpages, write};
use resident::{Resident, resident};
use support::{SegmentedCopy, interleaved, median};

const FILE: usize = 64 << 20;
/// Interleaved rounds of genpager and the limit behind the efficiency figure.
const ROUNDS: usize = 15;
const FLUSH: PutFlags = PutFlags::CLEANIT.union(PutFlags::SYNCIO);

fn dirty_file() -> (MemDisk, Arc<MemFile>) {
    let disk = MemDisk::new((FILE as u64 / 512) * 2 + 1024);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let file = fs.create(&vec![0u8; FILE]).unwrap();
    (disk, file)
}

/// Dirties every page (untimed), then times the flush.
fn writeback(file: &Arc<MemFile>, data: &[u8]) -> Duration {
    write(file, 0, data).unwrap();
    let start = Instant::now();
    putpages(file, 0, 0, FLUSH).unwrap();
    start.elapsed()
}

/// Dirties one page in the middle (untimed) and times a whole-file dirty-only flush.
fn flush_one(file: &Arc<Resident>, pages: u64) -> Duration {
    let offset = (pages / 2) * PAGE_SIZE as u64;
    {
        let mut state = file.object.lock();
        let frame: NonNull<u8> = state.cache().lookup(offset).unwrap().frame();
        black_box(frame);
        state.cache_mut().set_dirty(offset, DirtyStatus::Dirty);
        state.set_flags(genpager::ObjectFlags::ON_WORKLIST, true);
    }
    let start = Instant::now();
    putpages(file, 0, 0, FLUSH).unwrap();
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let (disk, file) = dirty_file();
    let data: Vec<u8> = (0..FILE).map(|i| (i * 13) as u8).collect();
    let mut group = c.benchmark_group("putpages");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(FILE as u64));
    group.bench_function("writeback_64MiB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| writeback(&file, &data)).sum())
    });
    disk.reset_stats();
    let mut copy = SegmentedCopy::new(&file);
    // The copy first in each round, so the data genpager wrote is what stays on disk.
    let (_, through, efficiency) = interleaved(
        ROUNDS,
        || copy.time_gather(1, &data),
        || writeback(&file, &data),
    );
    let requests = disk.stats().requests / ROUNDS as u64;
    assert_eq!(
        requests,
        (FILE / file.max_transfer()) as u64,
        "one request per max transfer"
    );
    assert!(file.disk_contents() == data);
    println!(
        "writeback 64 MiB: {:.2} GB/s, efficiency vs segmented memcpy {:.2} (median of paired rounds; target >= 0.8), {} requests",
        FILE as f64 / through.as_secs_f64() / 1e9,
        efficiency,
        requests
    );
    drop((disk, file));

    group.throughput(Throughput::Elements(1));
    let small = resident(1_000);
    let large = resident(1_000_000);
    group.bench_function("flush_1_dirty_among_1k", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| flush_one(&small, 1_000)).sum())
    });
    group.bench_function("flush_1_dirty_among_1m", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| flush_one(&large, 1_000_000)).sum())
    });
    let t_small = median(101, || flush_one(&small, 1_000));
    let t_large = median(101, || flush_one(&large, 1_000_000));
    println!(
        "dirty-only flush, 1 dirty page: {:?} among 1k, {:?} among 1M clean pages: ratio {:.2} (target <= 2)",
        t_small,
        t_large,
        t_large.as_secs_f64() / t_small.as_secs_f64()
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
