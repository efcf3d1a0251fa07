//! The concurrent workload at boot: ext2 images on virtio disks, read and written by
//! several threads at once through genpager, with a page daemon holding the page cache
//! to a frame budget.
//!
//! Per filesystem (the script attaches a 1 KiB-block and a 4 KiB-block image):
//! - two **readers** check every file of the read-only tree against `/MANIFEST`, read
//!   from the image itself: one through `read`, one through page faults (`getpages`
//!   read faults, the bytes taken from the busy pages), each for [`READ_PASSES`] passes,
//!   so later passes find some pages evicted by the page daemon and read them again;
//! - two **writers**, each running its script (`genpager_ext2::workload::ops`) on its
//!   own file: overwrites, appends, writes into holes and far past the end, fsyncs;
//! - a **setsize** thread running its script on its own file: truncations and
//!   extensions between writes;
//! - a **syncer** flushing every written file in a loop while the writers run.
//!
//! One **page daemon** thread serves both: when the domain's resident pages pass three
//! quarters of the budget, it reclaims clean pages (and pages out dirty ones) across
//! every registered file. The host checks the written files after shutdown with
//! `debugfs` against `workload::expected`, and the images with `e2fsck -fn`.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use genpager::reclaim::Reclaimer;
use genpager::sync::{Scheduler, Token};
use genpager::{Error, Fault, PAGE_SIZE, getpages};
use genpager_ext2::workload::{self, FNV_START, ManifestFile, Op};
use genpager_ext2::{Ext2Error, Ext2File, Ext2Fs};

use crate::disk::VirtioDisk;
use crate::interrupts::IrqMutex;
use crate::selftest::Outcome;
use crate::{kprintln, memory, sched};

/// How often the syncer flushes the written files: 20 ms.
const SYNC_PERIOD_US: u64 = 20_000;
/// How often the page daemon looks at the domain: every timer tick (4 ms).
const DAEMON_PERIOD_US: u64 = 4_000;

/// Passes each reader makes over the read-only tree.
const READ_PASSES: usize = 2;

/// Bytes a reader checks at each end of a hole (all of a hole shorter than twice this):
/// enough to cross page and block boundaries, without reading gigabytes of the far file.
const HOLE_PROBE: u64 = 16 * 1024;

/// A filesystem of the workload.
pub type Fs = Ext2Fs<VirtioDisk>;
/// A file of the workload.
pub type File = Ext2File<VirtioDisk>;

/// A job for a thread, and the slot its result goes to.
type Job = Box<dyn FnOnce() -> Outcome + Send>;

static JOBS: IrqMutex<Vec<Option<(String, Job)>>> = IrqMutex::new(Vec::new());
static RESULTS: IrqMutex<Vec<(String, Outcome)>> = IrqMutex::new(Vec::new());
/// Workers (readers, writers, setsize) still running; the syncer runs until it
/// reaches zero.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Set when the page daemon is to stop: after the workers and the read-back checks.
static STOP_DAEMON: AtomicBool = AtomicBool::new(false);
/// The page daemon's thread, for [`kick_daemon`].
static DAEMON: spin::Once<Token> = spin::Once::new();
/// Kicks so far: threads that found no frame and woke the page daemon.
static KICKS: AtomicU64 = AtomicU64::new(0);
/// The CPUs the workers' operations ran on, one bit each.
static CPUS_SEEN: AtomicUsize = AtomicUsize::new(0);
/// Pages the page daemon freed, and its reclaim calls.
static DAEMON_FREED: AtomicU64 = AtomicU64::new(0);
static DAEMON_RUNS: AtomicU64 = AtomicU64::new(0);
/// `NoMemory` errors the workers met and retried after the page daemon ran.
static NO_MEMORY_RETRIES: AtomicU64 = AtomicU64::new(0);
/// Flushes the syncer made.
static SYNCS: AtomicU64 = AtomicU64::new(0);

/// The page daemon's registry of files.
static RECLAIMER: spin::Once<Reclaimer> = spin::Once::new();

fn reclaimer() -> &'static Reclaimer {
    RECLAIMER.call_once(Reclaimer::new)
}

/// What the workload did, for the serial log.
#[derive(Debug, Default)]
pub struct Summary {
    /// One line per thread: its name and what it found wrong, if anything.
    pub results: Vec<(String, Outcome)>,
    /// Pages the page daemon freed.
    pub daemon_freed: u64,
    /// Reclaim calls the page daemon made.
    pub daemon_runs: u64,
    /// Allocation failures the workers retried.
    pub no_memory_retries: u64,
    /// Flushes by the syncer.
    pub syncs: u64,
}

fn spawn_job(name: String, job: Job) -> sched::ThreadId {
    let index = {
        let mut jobs = JOBS.lock();
        jobs.push(Some((name, job)));
        jobs.len() - 1
    };
    sched::spawn("workload", run_job, index)
}

fn run_job(index: usize) {
    let taken = JOBS.lock()[index].take();
    let Some((name, job)) = taken else { return };
    let outcome = job();
    if let Err(why) = &outcome {
        kprintln!("workload: {name}: FAILED: {why}");
    }
    RESULTS.lock().push((name, outcome));
}

/// Runs `job` as a worker: counted in [`RUNNING`] until it returns.
fn spawn_worker(name: String, job: impl FnOnce() -> Outcome + Send + 'static) -> sched::ThreadId {
    RUNNING.fetch_add(1, Ordering::SeqCst);
    spawn_job(
        name,
        Box::new(move || {
            let outcome = job();
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            outcome
        }),
    )
}

/// Runs the whole workload on `filesystems` and waits for every thread.
pub fn run(filesystems: &[(&'static str, Arc<Fs>)]) -> Summary {
    let mut threads = Vec::new();
    // Each written file, its filesystem's label and its index in `workload::WRITTEN`.
    let mut written: Vec<(&str, usize, Arc<File>)> = Vec::new();
    for (label, fs) in filesystems {
        let manifest = match read_manifest(fs) {
            Ok(manifest) => Arc::new(manifest),
            Err(why) => {
                RESULTS
                    .lock()
                    .push((format!("{label}: manifest"), Err(why)));
                continue;
            }
        };
        kprintln!(
            "workload: {label}: {} files in the manifest, block size {}",
            manifest.len(),
            1u32 << fs.block_shift()
        );
        for reader in 0..2 {
            let fs = fs.clone();
            let manifest = manifest.clone();
            let by_faults = reader == 1;
            let name = format!(
                "{label}: reader {reader} ({})",
                if by_faults { "getpages" } else { "read" }
            );
            threads.push(spawn_worker(name, move || {
                verify_tree(&fs, &manifest, by_faults, reader)
            }));
        }
        for index in 0..workload::WRITTEN.len() {
            let file = match open(fs, workload::WRITTEN[index].path) {
                Ok(file) => file,
                Err(why) => {
                    RESULTS.lock().push((format!("{label}: open"), Err(why)));
                    continue;
                }
            };
            written.push((label, index, file.clone()));
            let role = if index == 2 { "setsize" } else { "writer" };
            let name = format!("{label}: {role} {}", workload::WRITTEN[index].path);
            threads.push(spawn_worker(name, move || run_script(&file, index)));
        }
    }
    let syncer_files: Vec<Arc<File>> = written.iter().map(|(_, _, file)| file.clone()).collect();
    threads.push(spawn_job(
        String::from("syncer"),
        Box::new(move || syncer(&syncer_files)),
    ));
    let daemon = spawn_job(String::from("page daemon"), Box::new(page_daemon));
    DAEMON.call_once(|| daemon.token());
    for thread in threads {
        sched::join(thread);
    }
    // Everything the writers wrote reaches the disk before the machine stops.
    let mut results = core::mem::take(&mut *RESULTS.lock());
    for (label, index, file) in &written {
        let name = format!(
            "{label}: {} holds what its script wrote, read back from the disk",
            workload::WRITTEN[*index].path
        );
        results.push((name, read_back(file, *index)));
    }
    // The page daemon serves the read-back too (another file's clean pages may fill
    // the budget); then it stops.
    STOP_DAEMON.store(true, Ordering::SeqCst);
    kick_daemon();
    sched::join(daemon);
    results.append(&mut RESULTS.lock());
    for (label, fs) in filesystems {
        if let Err(err) = fs.sync_disk() {
            results.push((format!("{label}: unmount"), Err(format!("{err}"))));
        }
    }
    Summary {
        results,
        daemon_freed: DAEMON_FREED.load(Ordering::Relaxed),
        daemon_runs: DAEMON_RUNS.load(Ordering::Relaxed),
        no_memory_retries: NO_MEMORY_RETRIES.load(Ordering::Relaxed),
        syncs: SYNCS.load(Ordering::Relaxed),
    }
}

/// Flushes a written file, drops its pages, and reads it back from the disk: it must
/// hold what its script says (the host checks the image itself after shutdown too).
fn read_back(file: &Arc<File>, index: usize) -> Outcome {
    retry(|| file.sync()).map_err(|err| format!("final sync: {err}"))?;
    retry(|| file.drop_cached(u64::MAX)).map_err(|err| format!("evict: {err}"))?;
    let have = retry(|| file.read_to_vec()).map_err(|err| format!("read: {err}"))?;
    let want = workload::expected(index, workload::ROUNDS);
    if have.len() != want.len() {
        return Err(format!("{} bytes instead of {}", have.len(), want.len()));
    }
    match have.iter().zip(&want).position(|(a, b)| a != b) {
        Some(at) => Err(format!("byte {at} is {:#x}, not {:#x}", have[at], want[at])),
        None => Ok(()),
    }
}

/// Opens `path` and gives the file to the page daemon.
fn open(fs: &Arc<Fs>, path: &str) -> Result<Arc<File>, String> {
    let file = fs
        .open_file(path)
        .map_err(|err| format!("open {path}: {err}"))?;
    reclaimer()
        .register(&file)
        .map_err(|err| format!("register {path}: {err:?}"))?;
    Ok(file)
}

/// Whether `err` is genpager running out of frames.
fn is_no_memory(err: &Ext2Error) -> bool {
    matches!(err, Ext2Error::Pager(Error::NoMemory))
}

/// Runs `op`, and again while it fails for want of frames: the page daemon frees some
/// meanwhile (allocation frees only the allocating file's own pages; other files' are
/// the daemon's to take).
fn retry<T>(mut op: impl FnMut() -> Result<T, Ext2Error>) -> Result<T, Ext2Error> {
    note_cpu();
    let mut tries = 0;
    loop {
        match op() {
            Err(err) if is_no_memory(&err) && tries < 1000 => {
                tries += 1;
                NO_MEMORY_RETRIES.fetch_add(1, Ordering::Relaxed);
                // As uvm_wait: wake the page daemon, give it time to free pages.
                kick_daemon();
                sched::sleep_us(DAEMON_PERIOD_US);
            }
            other => return other,
        }
    }
}

fn read_manifest(fs: &Arc<Fs>) -> Result<Vec<ManifestFile>, String> {
    let file = fs
        .open_file("/MANIFEST")
        .map_err(|err| format!("open /MANIFEST: {err}"))?;
    let bytes = retry(|| file.read_to_vec()).map_err(|err| format!("read /MANIFEST: {err}"))?;
    let text = core::str::from_utf8(&bytes).map_err(|_| String::from("/MANIFEST is not UTF-8"))?;
    workload::parse_manifest(text).ok_or_else(|| String::from("/MANIFEST is malformed"))
}

/// One reader: every file of the manifest, [`READ_PASSES`] times, starting at a
/// different file per reader so the two meet on files in different states.
fn verify_tree(fs: &Arc<Fs>, manifest: &[ManifestFile], by_faults: bool, reader: usize) -> Outcome {
    for pass in 0..READ_PASSES {
        for index in 0..manifest.len() {
            let entry = &manifest[(index + reader * manifest.len() / 2) % manifest.len()];
            let file = open(fs, &entry.path)?;
            verify_file(&file, entry, by_faults)
                .map_err(|why| format!("pass {pass}: {}: {why}", entry.path))?;
        }
    }
    Ok(())
}

fn verify_file(file: &Arc<File>, entry: &ManifestFile, by_faults: bool) -> Outcome {
    if file.size() != entry.size {
        return Err(format!("size {} instead of {}", file.size(), entry.size));
    }
    let mut hole_from = 0;
    for &(offset, len, sum) in &entry.extents {
        check_hole(file, hole_from, offset, by_faults)?;
        let bytes = read_range(file, offset, len as usize, by_faults)?;
        let have = workload::fnv1a(FNV_START, &bytes);
        if have != sum {
            return Err(format!(
                "extent {offset}+{len}: checksum {have:016x} instead of {sum:016x}"
            ));
        }
        hole_from = offset + len;
    }
    check_hole(file, hole_from, entry.size, by_faults)
}

/// Checks that `from..to` (a hole, or no bytes at all) reads as zeroes, near its ends.
fn check_hole(file: &Arc<File>, from: u64, to: u64, by_faults: bool) -> Outcome {
    if to <= from {
        return Ok(());
    }
    let probes = if to - from <= 2 * HOLE_PROBE {
        vec![(from, to - from)]
    } else {
        vec![(from, HOLE_PROBE), (to - HOLE_PROBE, HOLE_PROBE)]
    };
    for (at, len) in probes {
        let bytes = read_range(file, at, len as usize, by_faults)?;
        if let Some(bad) = bytes.iter().position(|&byte| byte != 0) {
            return Err(format!(
                "hole byte {} is {:#x}",
                at + bad as u64,
                bytes[bad]
            ));
        }
    }
    Ok(())
}

/// Reads `len` bytes at `offset`: through `read`, or page by page through read faults.
fn read_range(
    file: &Arc<File>,
    offset: u64,
    len: usize,
    by_faults: bool,
) -> Result<Vec<u8>, String> {
    // Fallible: the length comes from the image's manifest.
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| format!("no memory for a {len}-byte read"))?;
    out.resize(len, 0);
    if !by_faults {
        let got = retry(|| file.read_at(offset, &mut out))
            .map_err(|err| format!("read {offset}+{len}: {err}"))?;
        if got != len {
            return Err(format!("read {offset}+{len} returned {got}"));
        }
        return Ok(out);
    }
    let page = PAGE_SIZE as u64;
    let mut at = offset;
    while at < offset + len as u64 {
        let page_start = at & !(page - 1);
        let fetched =
            retry(|| getpages(file, Fault::read(page_start, 1)).map_err(Ext2Error::Pager))
                .map_err(|err| format!("fault at {page_start}: {err}"))?;
        let pages = fetched
            .into_busy()
            .ok_or("a read fault returned no busy pages")?;
        let bytes = pages.bytes(0);
        let from = (at - page_start) as usize;
        let to = (offset + len as u64 - page_start).min(page) as usize;
        let dst = (at - offset) as usize;
        out[dst..dst + (to - from)].copy_from_slice(&bytes[from..to]);
        drop(pages);
        at = page_start + to as u64;
    }
    Ok(out)
}

/// A writer or the setsize thread: its file's script, op by op.
fn run_script(file: &Arc<File>, index: usize) -> Outcome {
    let mut buf = Vec::new();
    for (step, op) in workload::ops(index, workload::ROUNDS)
        .into_iter()
        .enumerate()
    {
        let result = match op {
            Op::Write { offset, len, seed } => {
                buf.resize(len as usize, 0);
                workload::fill_pattern(seed, offset, &mut buf);
                retry(|| file.write_at(offset, &buf)).and_then(|wrote| {
                    if wrote == len as usize {
                        Ok(())
                    } else {
                        Err(Ext2Error::Pager(Error::Io))
                    }
                })
            }
            Op::SetSize(size) => retry(|| file.set_len(size)),
            Op::Sync => retry(|| file.sync()),
        };
        result.map_err(|err| format!("step {step} {op:?}: {err}"))?;
    }
    Ok(())
}

/// Flushes every written file, over and over, until the workers are done.
fn syncer(files: &[Arc<File>]) -> Outcome {
    while RUNNING.load(Ordering::SeqCst) > 0 {
        for file in files {
            retry(|| file.sync()).map_err(|err| format!("sync: {err}"))?;
            SYNCS.fetch_add(1, Ordering::Relaxed);
        }
        sched::sleep_us(SYNC_PERIOD_US);
    }
    Ok(())
}

/// The CPUs the workers' operations have run on, one bit each.
pub fn cpus_seen() -> usize {
    CPUS_SEEN.load(Ordering::Relaxed)
}

/// Records the CPU this thread runs on now (every operation of a worker goes through
/// [`retry`]).
fn note_cpu() {
    CPUS_SEEN.fetch_or(1 << sched::cpu_id(), Ordering::Relaxed);
}

/// Wakes the page daemon before its period is over: a thread is short of frames.
fn kick_daemon() {
    KICKS.fetch_add(1, Ordering::SeqCst);
    if let Some(&daemon) = DAEMON.get() {
        sched::SCHEDULER.wake(daemon);
    }
}

/// Keeps the domain under three quarters of its budget until told to stop, waking
/// every period or when kicked by a thread short of frames. A kick below the mark
/// still frees a batch: the thread that kicked found no page of its own to take.
fn page_daemon() -> Outcome {
    let domain = memory::domain();
    let mut kicks_seen = 0;
    while !STOP_DAEMON.load(Ordering::SeqCst) {
        // The kernel's reaper too: frees what interrupt-time completions left behind
        // (request groups, the file references of asynchronous writes and read-ahead).
        genpager::reap_completions();
        let kicks = KICKS.load(Ordering::SeqCst);
        let kicked = kicks != kicks_seen;
        kicks_seen = kicks;
        let resident = domain.counts().resident as usize;
        if kicked || resident > domain.budget() / 4 * 3 {
            let target = resident
                .saturating_sub(domain.budget() / 2)
                .max(domain.budget() / 8);
            let reclaimed = reclaimer().reclaim(target);
            DAEMON_RUNS.fetch_add(1, Ordering::Relaxed);
            DAEMON_FREED.fetch_add(reclaimed.freed as u64, Ordering::Relaxed);
        }
        sched::sleep_or_wake(DAEMON_PERIOD_US);
    }
    Ok(())
}

/// Mounts every virtio disk holding ext2 (the raw test disks do not), runs the
/// workload on all of them at once, and reports each thread as one test
/// (`selftest::report`), plus the checks that make the run mean something:
/// completions ran in interrupt context, threads slept and were woken, the page
/// daemon freed pages.
pub fn run_at_boot() {
    let mut filesystems: Vec<(&'static str, Arc<Fs>)> = Vec::new();
    for &device in crate::virtio::probe_all() {
        let Ok(fs) = Ext2Fs::with_device(VirtioDisk::new(device)) else {
            continue;
        };
        fs.set_memory(memory::domain());
        fs.set_clock(clock);
        let label = match fs.block_shift() {
            10 => "ext2 1k",
            12 => "ext2 4k",
            _ => "ext2",
        };
        kprintln!(
            "workload: {label}: mounted the disk at 00:{:02x}.0",
            device.slot()
        );
        filesystems.push((label, fs));
    }
    let before = Counters::now();
    let started = crate::time::now_us();
    let summary = if filesystems.len() < 2 {
        Summary {
            results: vec![(
                String::from("workload: two ext2 disks"),
                Err(format!("found {} ext2 disks", filesystems.len())),
            )],
            ..Summary::default()
        }
    } else {
        run(&filesystems)
    };
    let spent = Counters::now().since(&before);
    kprintln!(
        "workload: {} ms; requests {} ({} completed in interrupt context), sleeps {}, wakes {} (genpager's waits: {} sleeps, {} wakes; metadata transfers: {} sleeps), preemptions {}, switches on CPU 0 {} and CPU 1 {}",
        (crate::time::now_us() - started) / 1000,
        spent.requests,
        spent.in_interrupt,
        spent.sleeps,
        spent.wakes,
        spent.genpager_sleeps,
        spent.genpager_wakes,
        spent.sync_sleeps,
        spent.preemptions,
        spent.switches[0],
        spent.switches[1]
    );
    kprintln!(
        "workload: page daemon: {} reclaim calls freed {} pages (budget {} frames, {} resident now); {} allocation failures retried; {} syncer flushes",
        summary.daemon_runs,
        summary.daemon_freed,
        memory::domain().budget(),
        memory::domain().counts().resident,
        summary.no_memory_retries,
        summary.syncs
    );
    let checks: [(&str, Outcome); 6] = [
        (
            "workload: its threads' operations ran on both CPUs",
            match CPUS_SEEN.load(Ordering::Relaxed) {
                0b11 => Ok(()),
                seen => Err(format!("operations ran only on CPUs {seen:#b}")),
            },
        ),
        (
            "workload: completions ran in interrupt context",
            positive(spent.in_interrupt, "completions in interrupt context"),
        ),
        (
            "workload: threads slept in the driver's metadata transfers until their interrupts",
            positive(
                spent.sync_sleeps,
                "sleeps in the driver's synchronous transfers",
            ),
        ),
        (
            "workload: genpager's own waits slept (busy pages, writes in flight) and were woken",
            positive(
                spent.genpager_sleeps.min(spent.genpager_wakes),
                "genpager sleeps and wakes",
            ),
        ),
        (
            "workload: the page daemon freed pages to keep the budget",
            positive(summary.daemon_freed, "pages freed by the page daemon"),
        ),
        (
            "workload: the syncer flushed while the writers wrote",
            positive(summary.syncs, "syncer flushes"),
        ),
    ];
    let checks = checks
        .into_iter()
        .map(|(name, outcome)| (String::from(name), outcome));
    for (name, outcome) in summary.results.into_iter().chain(checks) {
        crate::selftest::report(&name, outcome);
    }
}

fn positive(count: u64, what: &str) -> Outcome {
    if count > 0 {
        Ok(())
    } else {
        Err(format!("no {what}"))
    }
}

/// Seconds for inode timestamps: a fixed epoch (2026-12-01) plus the time since boot.
fn clock() -> u32 {
    1_796_083_200 + (crate::time::now_us() / 1_000_000) as u32
}

/// The machine-wide counters the workload's summary reports, at one moment.
struct Counters {
    requests: u64,
    in_interrupt: u64,
    sleeps: u64,
    wakes: u64,
    genpager_sleeps: u64,
    genpager_wakes: u64,
    sync_sleeps: u64,
    preemptions: u64,
    /// Context switches on each CPU.
    switches: [u64; 2],
}

impl Counters {
    fn now() -> Self {
        let (mut requests, mut in_interrupt) = (0, 0);
        for device in crate::virtio::probe_all() {
            let stats = device.stats();
            requests += stats.submitted;
            in_interrupt += stats.completed_in_interrupt;
        }
        Self {
            requests,
            in_interrupt,
            sleeps: sched::sleeps(),
            wakes: sched::wakes(),
            genpager_sleeps: crate::waits::GENPAGER.blocks(),
            genpager_wakes: crate::waits::GENPAGER.wakes(),
            sync_sleeps: crate::virtio::sync_sleeps(),
            preemptions: sched::preemptions(),
            switches: sched::cpu_switches(),
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            requests: self.requests - before.requests,
            in_interrupt: self.in_interrupt - before.in_interrupt,
            sleeps: self.sleeps - before.sleeps,
            wakes: self.wakes - before.wakes,
            genpager_sleeps: self.genpager_sleeps - before.genpager_sleeps,
            genpager_wakes: self.genpager_wakes - before.genpager_wakes,
            sync_sleeps: self.sync_sleeps - before.sync_sleeps,
            preemptions: self.preemptions - before.preemptions,
            switches: [
                self.switches[0] - before.switches[0],
                self.switches[1] - before.switches[1],
            ],
        }
    }
}
