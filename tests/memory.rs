//! Memory as a kernel runs it (issue 18): one frame source for every file, the
//! budget and page counts of a memory domain, write-behind, dirty thresholds and the
//! syncer's periodic flush.

mod common;

use std::sync::Arc;

use common::{TEST_MAX_TRANSFER, domain, fs_in, pattern};
use genpager::cache::DefaultCache;
use genpager::memory::{ChunkPool, Memory};
use genpager::testing::{Layout, MemDisk, MemFile, MemFs};
use genpager::{
    DirtyStatus, Error, PAGE_SIZE, PageCache, PageCounts, PutFlags, Tag, VmObject, Vnode,
    flush_expired, putpages, read, write,
};

const P: u64 = PAGE_SIZE as u64;

/// The page counts of `files` walked page by page.
fn walk(files: &[&Arc<MemFile>]) -> PageCounts {
    let mut counts = PageCounts::default();
    for file in files {
        let state = file.object().read();
        for page in state.cache().range(0..u64::MAX) {
            counts.resident += 1;
            counts.dirty += u64::from(page.dirty() != DirtyStatus::Clean);
            counts.writeback += u64::from(page.in_writeback());
        }
    }
    counts
}

#[test]
fn a_domain_counts_every_page_of_every_file_as_they_change() {
    for bshift in [9, 10, 12, 16] {
        let memory = domain(usize::MAX);
        // Pages stay dirty until the flush below (write-behind would write whole
        // clusters of the writes already: four pages at 16 KiB pages).
        memory.set_write_behind(false);
        let disk = MemDisk::threaded(1 << 16, true);
        let fs = fs_in(memory, bshift, disk.clone());
        let a = fs.create(&pattern(40 * PAGE_SIZE, 1)).unwrap();
        let b = fs.create(&pattern(3 * PAGE_SIZE + 100, 2)).unwrap();
        let mut buf = vec![0; 20 * PAGE_SIZE];
        read(&a, 0, &mut buf).unwrap();
        read(&b, 0, &mut buf[..100]).unwrap();
        assert_eq!(memory.counts(), walk(&[&a, &b]), "after reads, {bshift}");
        write(&a, 5 * P + 7, &pattern(9 * PAGE_SIZE, 3)).unwrap();
        write(&b, 2 * P, &pattern(5 * PAGE_SIZE, 4)).unwrap();
        let counts = memory.counts();
        assert_eq!(counts, walk(&[&a, &b]), "after writes, {bshift}");
        assert!(counts.dirty >= 10, "{counts:?}");
        // Writeback held in flight: the pages count as writeback until it completes.
        disk.hold();
        putpages(&a, 0, 0, PutFlags::CLEANIT).unwrap();
        let during = memory.counts();
        assert!(during.writeback >= 10, "{during:?}");
        assert_eq!(during, walk(&[&a, &b]), "during writeback, {bshift}");
        disk.release();
        putpages(&a, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
        assert_eq!(
            memory.counts(),
            walk(&[&a, &b]),
            "after writeback, {bshift}"
        );
        assert_eq!(memory.counts().writeback, 0);
        // Truncation and freeing take dirty pages away, uncounting them.
        genpager::setsize(&b, 0).unwrap();
        putpages(&a, 0, 0, PutFlags::FREE | PutFlags::SYNCIO).unwrap();
        assert_eq!(memory.counts(), walk(&[&a, &b]), "after frees, {bshift}");
        assert_eq!(memory.counts().resident, 0);
        drop((a, b));
    }
}

#[test]
fn dropping_a_cache_gives_its_frames_and_counts_back() {
    let memory = domain(usize::MAX);
    let mut cache = DefaultCache::in_memory(memory);
    for i in 0..100 {
        cache.alloc(i * P).unwrap();
    }
    cache.set_dirty(3 * P, DirtyStatus::Dirty);
    cache.set_writeback(4 * P, true);
    assert_eq!(
        memory.counts(),
        PageCounts {
            resident: 100,
            dirty: 1,
            writeback: 1
        }
    );
    drop(cache);
    assert_eq!(memory.counts(), PageCounts::default());
}

#[test]
fn the_budget_refuses_frames_past_it_and_a_freed_frame_serves_another_file() {
    let memory = domain(10);
    let mut a = DefaultCache::in_memory(memory);
    let mut b = DefaultCache::in_memory(memory);
    for i in 0..6 {
        a.alloc(i * P).unwrap();
    }
    for i in 0..4 {
        b.alloc(i * P).unwrap();
    }
    assert_eq!(b.alloc(4 * P).err(), Some(Error::NoMemory));
    assert_eq!(
        b.resident_pages(),
        4,
        "a refused alloc leaves nothing behind"
    );
    let frame = a.lookup(5 * P).unwrap().frame();
    a.free(5 * P);
    // The lowest free frame is lent next: the one `a` freed.
    let page = b.alloc(4 * P).unwrap();
    assert_eq!(page.frame(), frame);
    memory.set_budget(11);
    b.alloc(5 * P).unwrap();
}

#[test]
fn freed_frames_stay_pooled_until_trim_returns_whole_idle_chunks() {
    let pool: &'static ChunkPool = Box::leak(Box::new(ChunkPool::new()));
    let memory: &'static Memory = Box::leak(Box::new(Memory::new(pool, usize::MAX)));
    let mut cache = DefaultCache::in_memory(memory);
    // Enough pages for several chunks.
    let pages = 8 * (256 << 10) / PAGE_SIZE as u64;
    for i in 0..pages {
        cache.alloc(i * P).unwrap();
    }
    let full = pool.heap_bytes();
    assert!(full >= pages as usize * PAGE_SIZE);
    assert_eq!(pool.idle_chunks(), 0);
    for i in 0..pages {
        cache.free(i * P);
    }
    assert_eq!(
        pool.heap_bytes(),
        full,
        "freeing pages frees no heap memory"
    );
    let idle = pool.idle_chunks();
    assert!(idle >= 8);
    // Another file takes the pooled frames: no new chunk.
    let mut other = DefaultCache::in_memory(memory);
    other.alloc(0).unwrap();
    assert_eq!(pool.heap_bytes(), full);
    // Trim returns every idle chunk, whole, and keeps the one a page lives in.
    assert_eq!(pool.trim(), idle - 1);
    assert_eq!(pool.idle_chunks(), 0);
    assert!(other.lookup(0).is_some());
    other.free(0);
    assert_eq!(pool.trim(), 1);
    assert_eq!(pool.heap_bytes(), 0);
}

mod heap;

/// The bound: 10,000 one-page files cost at most 10,000 × (page + 64 B) + 1 MiB
/// of heap (frames, chunk bookkeeping, each cache's index and slots), counted on this
/// test's thread.
#[test]
fn ten_thousand_one_page_files_cost_a_frame_and_64_bytes_each() {
    const FILES: usize = 10_000;
    let bound = FILES * (PAGE_SIZE + 64) + (1 << 20);
    let pool: &'static ChunkPool = Box::leak(Box::new(ChunkPool::new()));
    let memory: &'static Memory = Box::leak(Box::new(Memory::new(pool, usize::MAX)));
    let mut caches: Vec<DefaultCache> = Vec::with_capacity(FILES);
    let before = heap::live_bytes();
    for _ in 0..FILES {
        let mut cache = DefaultCache::in_memory(memory);
        cache.alloc(0).unwrap();
        caches.push(cache);
    }
    let best = heap::live_bytes() - before;
    drop(caches);
    eprintln!(
        "{FILES} one-page files: {best} bytes, {} per page beyond the frame",
        (best as usize).saturating_sub(FILES * PAGE_SIZE) / FILES
    );
    assert!(
        best as usize <= bound,
        "{best} bytes for {FILES} one-page files, bound {bound} ({} B per page beyond the frame)",
        (best as usize).saturating_sub(FILES * PAGE_SIZE) / FILES
    );
    // The object embedded in each vnode is the kernel's per-file cost, like its inode
    // (reported by perf_report as `mem_object_bytes`).
    eprintln!(
        "VmObject<DefaultCache>: {} bytes",
        std::mem::size_of::<VmObject<DefaultCache>>()
    );
}

/// A large file's pages cost at most 64 bytes of metadata each beyond the frame.
#[test]
fn a_large_file_costs_at_most_64_bytes_per_page_beyond_its_frames() {
    let pages = (64u64 << 20) / P;
    let pool: &'static ChunkPool = Box::leak(Box::new(ChunkPool::new()));
    let memory: &'static Memory = Box::leak(Box::new(Memory::new(pool, usize::MAX)));
    let before = heap::live_bytes();
    let mut cache = DefaultCache::in_memory(memory);
    for page in 0..pages {
        cache.alloc(page * P).unwrap();
    }
    let bytes = (heap::live_bytes() - before) as u64;
    let per_page = bytes.saturating_sub(pages * P) / pages;
    eprintln!("64 MiB file: {per_page} bytes per page beyond the frame");
    assert!(per_page <= 64, "{per_page} bytes per page");
    drop(cache);
    pool.trim();
    assert_eq!(
        pool.heap_bytes(),
        0,
        "a dropped cache gives back every frame"
    );
}

/// Device writes started so far.
fn writes(disk: &MemDisk) -> usize {
    disk.log()
        .iter()
        .filter(|r| r.direction == genpager::buf::Direction::Write)
        .count()
}

#[test]
fn write_behind_starts_each_cluster_left_behind_and_only_in_a_domain() {
    for bshift in [9, 10, 12, 16] {
        let memory = domain(usize::MAX);
        let disk = MemDisk::new(1 << 16);
        let fs = fs_in(memory, bshift, disk.clone());
        let file = fs.create(&[]).unwrap();
        file.set_max_transfer(TEST_MAX_TRANSFER);
        let cluster = TEST_MAX_TRANSFER;
        let data = pattern(4 * cluster + 3 * PAGE_SIZE, 5);
        disk.clear_log();
        for chunk in data.chunks(1000) {
            let at = file.object().size();
            write(&file, at, chunk).unwrap();
        }
        // The four whole clusters are on the disk already, each one request (the file
        // is contiguous); the last, partial one is still dirty.
        let log = disk.log();
        let written: Vec<_> = log
            .iter()
            .filter(|r| r.direction == genpager::buf::Direction::Write)
            .collect();
        let covered: u64 = written.iter().map(|r| r.len as u64).sum();
        assert!(covered >= 4 * cluster as u64, "{bshift}: {written:?}");
        assert!(
            written.iter().all(|r| r.file_offset < 4 * cluster as u64),
            "{bshift}: nothing past the last whole cluster is written behind"
        );
        let state = file.object().read();
        assert!(state.cache().next_tagged(Tag::Dirty, 0).unwrap() >= 4 * cluster as u64);
        drop(state);
        putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
        let mut back = vec![0; data.len()];
        putpages(&file, 0, 0, PutFlags::FREE | PutFlags::SYNCIO).unwrap();
        read(&file, 0, &mut back).unwrap();
        assert!(back == data, "{bshift}: the file reads back");
        assert_eq!(
            file.disk_contents()[..data.len()],
            data[..],
            "{bshift}: disk"
        );
    }
    // The shared domain does no write-behind: pages stay dirty until flushed.
    let disk = MemDisk::new(1 << 16);
    let fs = MemFs::new(disk.clone(), 12, Layout::Contiguous);
    let file = fs.create(&[]).unwrap();
    write(&file, 0, &pattern(8 * TEST_MAX_TRANSFER, 6)).unwrap();
    assert_eq!(writes(&disk), 0);
    let memory = domain(usize::MAX);
    memory.set_write_behind(false);
    let fs = fs_in(memory, 12, disk.clone());
    let file = fs.create(&[]).unwrap();
    write(&file, 0, &pattern(8 * TEST_MAX_TRANSFER, 6)).unwrap();
    assert_eq!(writes(&disk), 0, "write-behind turned off");
}

#[test]
fn over_the_hard_threshold_a_writer_waits_for_its_own_writeback() {
    // 1,000 frames: background 100 pages, hard 200. The device completes late, from
    // another thread, out of order.
    let memory = domain(1000);
    memory.set_write_behind(false);
    assert_eq!(memory.dirty_thresholds(), (100, 200));
    let disk = MemDisk::threaded(1 << 18, true);
    let fs = fs_in(memory, 12, disk.clone());
    let file = fs.create(&[]).unwrap();
    let data = pattern(600 * PAGE_SIZE, 7);
    let batch = 16 * PAGE_SIZE;
    let mut worst = 0;
    for (i, chunk) in data.chunks(batch).enumerate() {
        write(&file, (i * batch) as u64, chunk).unwrap();
        worst = worst.max(memory.unwritten());
    }
    // Above the hard threshold each batch waits for its writeback, so dirty memory
    // ends each call at most a batch (16 pages) above it.
    assert!(worst <= 200 + 16, "{worst} pages dirty or in writeback");
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
    assert_eq!(file.disk_contents()[..data.len()], data[..]);
}

#[test]
fn over_the_background_threshold_a_writer_starts_writeback_without_waiting() {
    let memory = domain(1000);
    memory.set_write_behind(false);
    memory.set_dirty_percent(2, 100).unwrap();
    let disk = MemDisk::new(1 << 18);
    disk.hold();
    let fs = fs_in(memory, 12, disk.clone());
    let file = fs.create(&[]).unwrap();
    // Held writes never complete while the writer runs: it must not wait for them.
    write(&file, 0, &pattern(100 * PAGE_SIZE, 8)).unwrap();
    assert!(disk.pending() > 0, "writeback was started");
    disk.release();
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
    assert_eq!(
        file.disk_contents()[..100 * PAGE_SIZE],
        pattern(100 * PAGE_SIZE, 8)[..]
    );
}

#[test]
fn thresholds_are_checked() {
    let memory = domain(100);
    assert_eq!(memory.set_dirty_percent(30, 20), Err(Error::Invalid));
    assert_eq!(memory.set_dirty_percent(10, 101), Err(Error::Invalid));
    assert_eq!(
        memory.dirty_thresholds(),
        (10, 20),
        "unchanged by a refusal"
    );
    memory.set_budget(usize::MAX);
    let (background, hard) = memory.dirty_thresholds();
    assert!(
        background < hard && hard < usize::MAX,
        "no overflow near usize::MAX"
    );
}

#[test]
fn the_syncer_flushes_what_stayed_dirty_past_its_age() {
    let memory = domain(usize::MAX);
    memory.set_write_behind(false);
    let disk = MemDisk::new(1 << 16);
    let fs = fs_in(memory, 12, disk.clone());
    let file = fs.create(&pattern(8 * PAGE_SIZE, 9)).unwrap();
    // Clean: nothing to do, at any time.
    assert_eq!(flush_expired(&file, 0, 30), Ok(false));
    write(&file, P, b"dirty").unwrap();
    assert_eq!(flush_expired(&file, 100, 30), Ok(false), "first seen dirty");
    assert_eq!(
        flush_expired(&file, 129, 30),
        Ok(false),
        "younger than the age"
    );
    assert_eq!(writes(&disk), 0);
    assert_eq!(flush_expired(&file, 130, 30), Ok(true), "expired");
    disk.quiesce();
    assert_eq!(writes(&disk), 1);
    assert!(!file.object().read().cache().any_tagged(Tag::Dirty));
    // Dirty again: the clock starts over.
    write(&file, 2 * P, b"again").unwrap();
    assert_eq!(flush_expired(&file, 131, 30), Ok(false));
    assert_eq!(flush_expired(&file, 160, 30), Ok(false));
    assert_eq!(flush_expired(&file, 161, 30), Ok(true));
    // A clock that goes backwards is not an expiry.
    write(&file, 3 * P, b"later").unwrap();
    assert_eq!(flush_expired(&file, 500, 30), Ok(false));
    assert_eq!(flush_expired(&file, 10, 30), Ok(false));
}

/// The acceptance: a writer of 4× the frame budget through `write` finishes,
/// the domain never holds more than its budget, and the disk ends equal to the data.
/// Sequential and scattered writers, 512 B to 64 KiB blocks, on a device completing
/// late, out of order, from another thread; the writer's own cache makes room for it
/// (the pages write-behind cleaned), with no page daemon.
#[test]
fn a_writer_of_four_times_the_budget_finishes_within_it() {
    for bshift in [9, 10, 12, 16] {
        let budget = 256;
        let memory = domain(budget);
        let disk = MemDisk::threaded(1 << 20, true);
        let fs = fs_in(memory, bshift, disk.clone());
        let file = fs.create(&[]).unwrap();
        file.set_max_transfer(TEST_MAX_TRANSFER);
        let data = pattern(4 * budget * PAGE_SIZE, bshift as u8);
        let chunk = 48 * 1024 + 17;
        let mut at = 0;
        while at < data.len() {
            let end = (at + chunk).min(data.len());
            let result = write(&file, at as u64, &data[at..end]);
            if result != Ok(end - at) {
                let state = file.object().read();
                let cache = state.cache();
                panic!(
                    "{bshift}: write at {at:#x}: {result:?}; {:?}; queues active {} inactive {} none {}",
                    memory.counts(),
                    cache.queue_len(genpager::PageQueue::Active),
                    cache.queue_len(genpager::PageQueue::Inactive),
                    cache.queue_len(genpager::PageQueue::None)
                );
            }
            assert!(memory.counts().resident <= budget as u64);
            at = end;
        }
        // Then overwrite pages scattered across the whole file.
        let mut model = data.clone();
        let mut seed = 7u64;
        for _ in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let page = (seed >> 33) as usize % (4 * budget);
            let bytes = pattern(PAGE_SIZE / 2, (seed >> 7) as u8);
            let off = page * PAGE_SIZE + PAGE_SIZE / 4;
            assert_eq!(
                write(&file, off as u64, &bytes),
                Ok(bytes.len()),
                "{bshift}"
            );
            model[off..off + bytes.len()].copy_from_slice(&bytes);
            assert!(memory.counts().resident <= budget as u64);
        }
        putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
        assert!(
            file.disk_contents()[..model.len()] == model[..],
            "{bshift}: disk"
        );
        let mut back = vec![0; model.len()];
        let result = read(&file, 0, &mut back);
        if result != Ok(model.len()) {
            let state = file.object().read();
            let cache = state.cache();
            panic!(
                "{bshift}: read: {result:?}; {:?}; queues active {} inactive {} none {}",
                memory.counts(),
                cache.queue_len(genpager::PageQueue::Active),
                cache.queue_len(genpager::PageQueue::Inactive),
                cache.queue_len(genpager::PageQueue::None)
            );
        }
        assert!(back == model, "{bshift}: read back");
        assert!(memory.counts().resident <= budget as u64);
    }
}

/// Writes all of `data` at `offset` as a kernel does with a page daemon: a write that
/// meets `NoMemory` (the budget spent on other files' pages, which are the daemon's
/// to take: see README "Memory") is retried from where it stopped once the daemon has
/// had time to run. Panics on any other error, or if no frame comes for 10 s.
fn write_retrying<V: genpager::Vnode>(file: &Arc<V>, offset: u64, data: &[u8]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut done = 0;
    while done < data.len() {
        match write(file, offset + done as u64, &data[done..]) {
            Ok(0) => panic!("write at {} made no progress", offset + done as u64),
            Ok(wrote) => done += wrote,
            Err(genpager::Error::NoMemory) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(err) => panic!("write at {}: {err:?}", offset + done as u64),
        }
    }
}

/// Several writers of their own files and a page daemon thread, 4× the budget in all:
/// every write completes, the budget holds, every file ends on the disk.
#[test]
fn writers_and_a_page_daemon_share_one_budget() {
    use genpager::reclaim::Reclaimer;
    use std::sync::atomic::{AtomicBool, Ordering};
    let budget = 192;
    let memory = domain(budget);
    let disk = MemDisk::threaded(1 << 20, true);
    let fs = fs_in(memory, 12, disk.clone());
    let files: Vec<_> = (0..3).map(|_| fs.create(&[]).unwrap()).collect();
    let reclaimer = Arc::new(Reclaimer::new());
    for file in &files {
        file.set_max_transfer(TEST_MAX_TRANSFER);
        reclaimer.register(file).unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let daemon = {
        let (reclaimer, done) = (reclaimer.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if memory.counts().resident + 32 > budget as u64 {
                    reclaimer.reclaim(32);
                }
                std::thread::yield_now();
            }
        })
    };
    let datas: Vec<Vec<u8>> = (0..3)
        .map(|i| pattern(budget * 4 / 3 * PAGE_SIZE, i))
        .collect();
    std::thread::scope(|scope| {
        for (file, data) in files.iter().zip(&datas) {
            scope.spawn(move || {
                for (i, chunk) in data.chunks(20_000).enumerate() {
                    write_retrying(file, (i * 20_000) as u64, chunk);
                    assert!(memory.counts().resident <= budget as u64);
                }
            });
        }
    });
    done.store(true, Ordering::Relaxed);
    daemon.join().unwrap();
    for (file, data) in files.iter().zip(&datas) {
        putpages(file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
        assert!(file.disk_contents()[..data.len()] == data[..]);
        reclaimer.unregister(file);
    }
}
