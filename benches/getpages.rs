//! getpages benchmarks (issue 3): cold sequential read vs segmented memcpy, cached hits
//! (time and heap allocations per call), and two readers of one cached file.
//!
//! `cargo bench --bench getpages`

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use genpager::Fault;
use genpager::page::PAGE_SHIFT;
use genpager::testing::{Layout, MemDisk, MemFile, MemFs};
use genpager::{Access, Advice, Fetched, PAGE_SIZE, PutFlags, Vnode, getpages, putpages};
use support::{Counting, SegmentedCopy, allocations, interleaved};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const FILE: usize = 64 << 20;
const BATCH: usize = 16;
/// Interleaved rounds of genpager and the limit behind an efficiency figure.
const ROUNDS: usize = 15;

fn file(bytes: usize) -> (MemDisk, Arc<MemFile>) {
    let disk = MemDisk::new((bytes as u64 / 512) * 2 + 1024);
    let fs = MemFs::new(disk.clone(), PAGE_SHIFT, Layout::Contiguous);
    let data: Vec<u8> = (0..bytes).map(|i| (i * 7) as u8).collect();
    (disk, fs.create(&data).unwrap())
}

/// Reads the whole file cold, 16 pages per call; returns the time of the reads only.
fn cold_read(file: &Arc<MemFile>) -> Duration {
    putpages(file, 0, 0, PutFlags::FREE | PutFlags::SYNCIO).unwrap();
    let start = Instant::now();
    for offset in (0..FILE).step_by(BATCH * PAGE_SIZE) {
        let pages = getpages(
            file,
            Fault::read(offset as u64, BATCH).with_advice(Advice::Sequential),
        )
        .unwrap()
        .into_busy()
        .unwrap();
        black_box(pages.bytes(BATCH - 1)[0]);
    }
    start.elapsed()
}

fn cached_hit(file: &Arc<MemFile>, offset: u64) {
    match getpages(file, Fault::resident(offset, BATCH, Access::Read)) {
        Ok(Fetched::Resident(pages)) => {
            black_box(pages.bytes(0));
        }
        _ => panic!("pages not resident"),
    }
}

/// What a kernel's interrupt hook costs at least: a per-CPU nesting count (per thread
/// here), saved and restored around every genpager spin lock.
struct Nesting;

std::thread_local! {
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

static DISABLES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Nesting {
    fn disables(&self) -> u64 {
        DISABLES.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl genpager::sync::Interrupts for Nesting {
    fn disable(&self) {
        if DEPTH.with(|depth| depth.replace(depth.get() + 1)) == 0 {
            // Counted once per outermost disable, as a kernel would save its flags.
            DISABLES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn enable(&self) {
        DEPTH.with(|depth| depth.set(depth.get() - 1));
    }
}

static NESTING: Nesting = Nesting;

fn bench(c: &mut Criterion) {
    let (disk, big) = file(FILE);

    // Cold sequential read against the physical limit.
    let mut group = c.benchmark_group("getpages");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes(FILE as u64));
    group.bench_function("cold_sequential_read_64MiB", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| cold_read(&big)).sum())
    });
    disk.reset_stats();
    let mut copy = SegmentedCopy::new(&big);
    let (_, through, efficiency) = interleaved(ROUNDS, || copy.time(1), || cold_read(&big));
    let requests = disk.stats().requests / ROUNDS as u64;
    let expected = (FILE / big.max_transfer()) as u64;
    assert_eq!(requests, expected, "one device request per max transfer");
    println!(
        "cold sequential read 64 MiB: {:.2} GB/s, efficiency vs segmented memcpy {:.2} (median of paired rounds; target >= 0.8), {} requests",
        FILE as f64 / through.as_secs_f64() / 1e9,
        efficiency,
        requests
    );

    // Cached hits: the fast path over 16 resident pages.
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("cached_hit_16_pages", |b| {
        let mut offset = 0u64;
        b.iter(|| {
            cached_hit(&big, offset);
            offset = (offset + (BATCH * PAGE_SIZE) as u64) % FILE as u64;
        })
    });
    let calls = 100_000u64;
    let before = allocations();
    let start = Instant::now();
    for i in 0..calls {
        cached_hit(&big, (i * (BATCH * PAGE_SIZE) as u64) % FILE as u64);
    }
    let per_page = start.elapsed().as_nanos() as f64 / (calls * BATCH as u64) as f64;
    let allocs = (allocations() - before) as f64 / calls as f64;
    println!(
        "cached hit: {per_page:.1} ns per page (target <= 40), {allocs} heap allocations per call (target 0)"
    );

    // The same with an interrupt-masking hook registered, as every SMP kernel has one:
    // each object lock then calls it twice (a per-CPU nesting count, here per thread).
    let without_hook = per_page;
    genpager::sync::set_interrupts(&NESTING);
    let start = Instant::now();
    for i in 0..calls {
        cached_hit(&big, (i * (BATCH * PAGE_SIZE) as u64) % FILE as u64);
    }
    let per_page = start.elapsed().as_nanos() as f64 / (calls * BATCH as u64) as f64;
    println!(
        "cached hit with an Interrupts hook: {per_page:.1} ns per page ({:.2}x without; {} disables)",
        per_page / without_hook,
        NESTING.disables()
    );

    // Two threads on disjoint cached halves vs one.
    let run = |threads: usize, calls: u64| -> Duration {
        let start = Instant::now();
        std::thread::scope(|scope| {
            for t in 0..threads {
                let file = &big;
                scope.spawn(move || {
                    let base = (t * FILE / 2) as u64;
                    for i in 0..calls {
                        cached_hit(
                            file,
                            base + (i * (BATCH * PAGE_SIZE) as u64) % (FILE / 2) as u64,
                        );
                    }
                });
            }
        });
        start.elapsed()
    };
    let (_, _, speedup) = interleaved(ROUNDS, || run(1, calls), || run(2, calls));
    println!(
        "two readers of one cached file: {:.2}x the throughput of one (median of paired rounds; target >= 1.6)",
        2.0 * speedup
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
