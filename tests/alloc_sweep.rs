//! Allocation-failure sweep: every entry point, with its N-th heap allocation failing,
//! for N = 1, 2, … until the call no longer reaches an N-th allocation.
//!
//! A kernel heap returns null; it does not abort. For each case the operation must
//! return (`Ok` or an error, never a panic), and leave no page busy, no write counted
//! in flight, no transaction or journal open, and every write acknowledged before it
//! readable after a synchronous flush. An infallible allocation (`Box::new`,
//! `Vec::push`, …) that fails aborts the whole process: the case is printed before it
//! runs, so the last line on stderr names it. `ALLOC_SWEEP_SKIP` lists cases to skip
//! (comma-separated, as printed: `op/bsize/N`), so the rest can still be explored;
//! `ALLOC_SWEEP_SITES=1` prints the backtrace of each failed allocation.
//! `ALLOC_SWEEP_ISOLATE=1` runs each case in a child process instead, so that an abort
//! (reported with its allocation site) or a hang (killed after a timeout) is one
//! finding and the sweep goes on.
//!
//! Problems an operation already has with no allocation failing (the baseline) are
//! reported once and not again for each N: the sweep looks for what the failure adds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use genpager::directio::{AddressSpace, DirectFlags, IoVec, Uio, directio};
use genpager::testing::{Direction, Layout as FsLayout, MemDisk, MemFile, MemFs};
use genpager::{Advice, Fault, ReadAhead, fault_around, read_with};
use genpager::{PAGE_SIZE, PageCache, PutFlags, Vnode, getpages, putpages, read, setsize, write};

/// The test's allocator: `System`, except that a thread may arm it to fail one of its
/// own coming allocations (other threads, such as a device's, are never affected).
struct SweepAllocator;

std::thread_local! {
    /// Allocations to let through before failing one; 0 = disarmed.
    static FAIL_IN: Cell<u64> = const { Cell::new(0) };
    /// Whether the armed failure has happened.
    static FIRED: Cell<bool> = const { Cell::new(false) };
}

/// `ALLOC_SWEEP_SITES`: print where each failed allocation was made.
static PRINT_SITES: AtomicBool = AtomicBool::new(false);

fn disarm() {
    FAIL_IN.with(|fail_in| fail_in.set(0));
}

/// Runs `f` (the harness's own work inside an operation) with the countdown paused.
fn unarmed<R>(f: impl FnOnce() -> R) -> R {
    let saved = FAIL_IN.with(Cell::get);
    disarm();
    let result = f();
    FAIL_IN.with(|fail_in| fail_in.set(saved));
    result
}

// SAFETY: every call is forwarded to `System` unchanged, except that an armed thread
// may get null from `alloc`, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for SweepAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let fail = FAIL_IN.with(|fail_in| match fail_in.get() {
            0 => false,
            1 => {
                fail_in.set(0);
                true
            }
            n => {
                fail_in.set(n - 1);
                false
            }
        });
        if fail {
            FIRED.with(|fired| fired.set(true));
            if PRINT_SITES.load(Ordering::Relaxed) {
                // Disarmed already, so the capture may allocate.
                eprintln!(
                    "  failed allocation of {} bytes at:\n{}",
                    layout.size(),
                    std::backtrace::Backtrace::force_capture()
                );
            }
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: SweepAllocator = SweepAllocator;

/// One file per case, on its own disk, with one write acknowledged before the
/// operation (a dirty page for the flushes to write).
struct Setup {
    disk: MemDisk,
    file: Arc<MemFile>,
    /// What the file must hold: its bytes (the length is the size).
    expected: Vec<u8>,
}

const FILE_PAGES: usize = 4;
/// Bytes written before the operation, at [`EARLY_WRITE_AT`].
const EARLY_WRITE: usize = 1536;
const EARLY_WRITE_AT: u64 = PAGE_SIZE as u64 + 512;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 1)
        .collect()
}

fn setup(fs_bshift: u32, threaded: bool, hole: bool, read_all: bool) -> Setup {
    let size = FILE_PAGES * PAGE_SIZE;
    let disk = if threaded {
        MemDisk::threaded(4096, false)
    } else {
        MemDisk::new(4096)
    };
    let fs = MemFs::new(disk.clone(), fs_bshift, FsLayout::Contiguous);
    let data = pattern(size, 3);
    // The hole is the last block of the file, away from the early write.
    let last_block = (size as u64 >> fs_bshift).saturating_sub(1);
    let holes: &[u64] = if hole { &[last_block] } else { &[] };
    let file = fs
        .create_sparse(size as u64, &data, holes)
        .expect("file fits");
    let mut expected = file.disk_contents();
    if read_all {
        let mut buf = vec![0; size];
        assert_eq!(read(&file, 0, &mut buf), Ok(size));
    }
    let early = pattern(EARLY_WRITE, 9);
    assert_eq!(write(&file, EARLY_WRITE_AT, &early), Ok(EARLY_WRITE));
    let at = EARLY_WRITE_AT as usize;
    expected[at..at + EARLY_WRITE].copy_from_slice(&early);
    Setup {
        disk,
        file,
        expected,
    }
}

/// What an operation did to the file, for the expected contents.
enum Effect {
    /// Nothing the file's bytes show.
    None,
    /// `data` was written at the offset (the size grows to cover it).
    Wrote(u64, Vec<u8>),
    /// The size became this.
    Resized(u64),
    /// The operation failed part way over these bytes: they may hold anything.
    Unknown(std::ops::Range<u64>),
}

/// An operation: its name, whether its disk completes on a thread of its own, and
/// the setup it needs (a hole, everything resident and clean).
struct Op {
    name: &'static str,
    threaded: bool,
    hole: bool,
    read_all: bool,
    run: fn(&Setup) -> Effect,
}

fn result_effect<T>(result: genpager::Result<T>, ok: Effect, span: std::ops::Range<u64>) -> Effect {
    match result {
        Ok(_) => ok,
        Err(_) => Effect::Unknown(span),
    }
}

fn write_effect(setup: &Setup, offset: u64, mut data: Vec<u8>) -> Effect {
    let span = offset..offset + data.len() as u64;
    let result = write(&setup.file, offset, &data);
    // A write that fails part-way returns what it wrote (one page a batch at 64 KiB
    // pages, where the default maximum transfer is a single page).
    if let Ok(written) = result {
        unarmed(|| data.truncate(written));
    }
    result_effect(result, Effect::Wrote(offset, data), span)
}

/// Reads the file a page at a time with `read_one`, at a maximum transfer of one page
/// (so that read-ahead runs ahead of the reader in requests of its own), checking
/// every byte a successful read returns; stops at the first error.
fn read_pages(
    setup: &Setup,
    mut read_one: impl FnMut(&Setup, u64, &mut [u8]) -> genpager::Result<usize>,
) -> Effect {
    unarmed(|| setup.file.set_max_transfer(PAGE_SIZE));
    let mut buf = unarmed(|| vec![0u8; PAGE_SIZE]);
    for page in 0..FILE_PAGES {
        let at = page * PAGE_SIZE;
        match read_one(setup, at as u64, &mut buf) {
            Ok(n) => {
                if setup.expected.get(at..at + n) != Some(&buf[..n]) {
                    // Disarmed first: the panic's message allocates.
                    disarm();
                    panic!(
                        "read: page {page} differs ({n} bytes; the file holds {})",
                        setup.expected.len()
                    );
                }
            }
            Err(_) => break,
        }
    }
    Effect::None
}

fn put(setup: &Setup, flags: PutFlags) -> Effect {
    let _ = putpages(&setup.file, 0, 0, flags);
    Effect::None
}

/// A 512-byte aligned buffer of `len` bytes inside `backing`.
fn aligned(backing: &mut [u8], len: usize) -> &mut [u8] {
    let skew = backing.as_ptr().align_offset(512);
    &mut backing[skew..skew + len]
}

const DIRECT_LEN: usize = 2 * PAGE_SIZE;

fn direct(setup: &Setup, direction: Direction) -> Effect {
    let mut backing = unarmed(|| pattern(DIRECT_LEN + 512, 21));
    let buf = aligned(&mut backing, DIRECT_LEN);
    let data = unarmed(|| buf.to_vec());
    let mut uio = unarmed(|| {
        Uio::new(0, direction, AddressSpace::User, vec![IoVec::new(buf)]).expect("valid uio")
    });
    let result = directio(&setup.file, &mut uio, DirectFlags::empty());
    match (direction, result) {
        (Direction::Read, _) => Effect::None,
        (Direction::Write, Ok(progress)) => {
            Effect::Wrote(0, unarmed(|| data[..progress.transferred].to_vec()))
        }
        (Direction::Write, Err(_)) => Effect::Unknown(0..DIRECT_LEN as u64),
    }
}

/// The file's size before the operation.
const SIZE: u64 = (FILE_PAGES * PAGE_SIZE) as u64;

fn ops() -> Vec<Op> {
    vec![
        Op {
            name: "read-ahead",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| {
                let _ = getpages(&s.file, Fault::read_ahead(0, FILE_PAGES)).map(drop);
                Effect::None
            },
        },
        Op {
            name: "read-ahead-threaded",
            threaded: true,
            hole: false,
            read_all: false,
            run: |s| {
                let _ = getpages(&s.file, Fault::read_ahead(0, FILE_PAGES)).map(drop);
                Effect::None
            },
        },
        Op {
            name: "sync-read-fault",
            threaded: false,
            hole: true,
            read_all: false,
            run: |s| {
                let _ = getpages(&s.file, Fault::read(2 * PAGE_SIZE as u64, 2)).map(drop);
                Effect::None
            },
        },
        Op {
            name: "read-sequential-ahead",
            threaded: false,
            hole: true,
            read_all: false,
            run: |s| read_pages(s, |s, offset, buf| read(&s.file, offset, buf)),
        },
        Op {
            name: "read-with-threaded",
            threaded: true,
            hole: false,
            read_all: false,
            run: |s| {
                let mut ahead = unarmed(ReadAhead::new);
                read_pages(s, |s, offset, buf| {
                    read_with(&s.file, &mut ahead, offset, buf)
                })
            },
        },
        Op {
            name: "fault-around",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| {
                unarmed(|| s.file.set_max_transfer(PAGE_SIZE));
                let mut ahead = ReadAhead::new();
                for page in 0..FILE_PAGES {
                    let offset = (page * PAGE_SIZE) as u64;
                    let Ok(around) =
                        fault_around(&s.file, Some(&mut ahead), offset, Advice::Normal)
                    else {
                        break;
                    };
                    let at = page * PAGE_SIZE;
                    if around.center_bytes() != &s.expected[at..at + PAGE_SIZE] {
                        disarm();
                        panic!("fault_around: page {page} differs");
                    }
                    drop(around);
                }
                Effect::None
            },
        },
        Op {
            name: "write-inside-page",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| write_effect(s, 2 * PAGE_SIZE as u64 + 100, unarmed(|| pattern(200, 5))),
        },
        Op {
            name: "write-extending",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| write_effect(s, SIZE - 512, unarmed(|| pattern(2048, 6))),
        },
        Op {
            name: "write-into-hole",
            threaded: false,
            hole: true,
            read_all: false,
            run: |s| write_effect(s, SIZE - 1024, unarmed(|| pattern(512, 7))),
        },
        Op {
            name: "setsize-grow",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| {
                let to = SIZE + 2 * PAGE_SIZE as u64;
                result_effect(setsize(&s.file, to), Effect::Resized(to), 0..u64::MAX)
            },
        },
        Op {
            name: "setsize-shrink",
            threaded: false,
            hole: false,
            read_all: true,
            run: |s| {
                let to = SIZE - PAGE_SIZE as u64 - 512;
                result_effect(setsize(&s.file, to), Effect::Resized(to), 0..u64::MAX)
            },
        },
        Op {
            name: "putpages-clean-sync",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| put(s, PutFlags::CLEANIT | PutFlags::SYNCIO),
        },
        Op {
            name: "putpages-clean-async",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| put(s, PutFlags::CLEANIT),
        },
        Op {
            name: "putpages-clean-async-threaded",
            threaded: true,
            hole: false,
            read_all: false,
            run: |s| put(s, PutFlags::CLEANIT),
        },
        Op {
            name: "putpages-clean-free-sync",
            threaded: false,
            hole: false,
            read_all: true,
            run: |s| put(s, PutFlags::CLEANIT | PutFlags::FREE | PutFlags::SYNCIO),
        },
        Op {
            name: "putpages-free-clean-pages",
            threaded: false,
            hole: false,
            read_all: true,
            run: |s| {
                // The early write is flushed first: every resident page is clean.
                unarmed(|| putpages(&s.file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO))
                    .expect("flush");
                put(s, PutFlags::FREE)
            },
        },
        Op {
            name: "directio-read",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| direct(s, Direction::Read),
        },
        Op {
            name: "directio-write",
            threaded: false,
            hole: false,
            read_all: false,
            run: |s| direct(s, Direction::Write),
        },
    ]
}

fn arm(n: u64) {
    FIRED.with(|fired| fired.set(false));
    FAIL_IN.with(|fail_in| fail_in.set(n));
}

fn fired() -> bool {
    FIRED.with(Cell::get)
}

/// The panic message of a caught panic.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// Runs one case; returns the problems it found (check name: detail) and whether the
/// armed allocation failure happened.
fn run_case(op: &Op, fs_bshift: u32, n: Option<u64>) -> (BTreeSet<String>, bool) {
    let mut problems = BTreeSet::new();
    let setup = setup(fs_bshift, op.threaded, op.hole, op.read_all);
    let Setup {
        disk,
        file,
        mut expected,
    } = setup;
    // The operation sees the expected bytes too (the read operations check what they
    // read against them); this copy is made before the allocator is armed.
    let setup = Setup {
        disk: disk.clone(),
        file: file.clone(),
        expected: expected.clone(),
    };
    if let Some(n) = n {
        arm(n);
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| (op.run)(&setup)));
    disarm();
    let hit = n.is_some() && fired();
    let effect = match outcome {
        Ok(effect) => effect,
        Err(payload) => {
            problems.insert(format!("panicked: {}", message(&*payload)));
            Effect::Unknown(0..u64::MAX)
        }
    };
    disk.quiesce();
    if let Some(busy) = file
        .object()
        .read()
        .cache()
        .range(0..u64::MAX)
        .find(|page| page.is_busy())
    {
        problems.insert(format!("page {:#x} left busy", busy.offset()));
    }
    let in_flight = file.object().read().writes_in_flight();
    if in_flight != 0 {
        problems.insert(format!("{in_flight} write(s) left in flight"));
    }
    let ledger = file.ledger();
    if !ledger.is_clean() {
        problems.insert(format!(
            "ledger: open {:?}, violations {:?}",
            ledger.open, ledger.violations
        ));
    }

    // What the file must hold now.
    let mut unknown = None;
    match effect {
        Effect::None => {}
        Effect::Wrote(offset, data) => {
            let end = offset as usize + data.len();
            if expected.len() < end {
                expected.resize(end, 0);
            }
            expected[offset as usize..end].copy_from_slice(&data);
        }
        Effect::Resized(size) => expected.resize(size as usize, 0),
        Effect::Unknown(span) => unknown = Some(span),
    }
    // A latched asynchronous write error is reported once, by the first flush.
    let flush = || {
        putpages(
            &file,
            0,
            0,
            PutFlags::CLEANIT | PutFlags::FREE | PutFlags::SYNCIO,
        )
    };
    let _latched = flush();
    let flushed = flush();
    if let Err(error) = flushed {
        problems.insert(format!("flush after the case failed: {error:?}"));
    }
    let size = file.object().size() as usize;
    let mut back = vec![0; size];
    match read(&file, 0, &mut back) {
        Ok(got) if got == size => {}
        other => {
            problems.insert(format!("re-read returned {other:?} of {size}"));
        }
    }
    let on_disk = file.disk_contents();
    for (what, bytes) in [("re-read", &back), ("disk", &on_disk)] {
        let unknown = unknown.clone().unwrap_or(0..0);
        if unknown.start == 0 && unknown.end == u64::MAX {
            // Size and bytes unknown: only what the early write left before it.
            continue;
        }
        if unknown.is_empty() && bytes.len() != expected.len() {
            problems.insert(format!(
                "{what}: size {} expected {}",
                bytes.len(),
                expected.len()
            ));
            continue;
        }
        let lost = (0..expected.len().min(bytes.len()))
            .filter(|&i| !unknown.contains(&(i as u64)))
            .find(|&i| bytes[i] != expected[i]);
        if let Some(at) = lost {
            problems.insert(format!(
                "{what}: byte {at:#x} differs from what was acknowledged"
            ));
        }
    }

    // The rig's own checks at drop (malformed requests, the ledger) as problems.
    drop(setup);
    let dropped = catch_unwind(AssertUnwindSafe(move || {
        drop(file);
        drop(disk);
    }));
    if let Err(payload) = dropped {
        let text = message(&*payload);
        let first_line = text.lines().next().unwrap_or_default().to_string();
        problems.insert(format!("rig check at drop: {first_line}"));
    }
    (problems, hit)
}

/// A line on stderr that the test harness does not capture, so it is there when an
/// abort ends the process.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// How long one case may take before it counts as hung (isolated mode only).
const CASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

/// The case named by `ALLOC_SWEEP_CASE` (`op/bsize/N`, or `op/bsize/baseline`).
fn parse_case(case: &str) -> (Op, u32, Option<u64>) {
    let mut parts = case.split('/');
    let (Some(name), Some(bsize), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad case {case:?}");
    };
    let op = ops()
        .into_iter()
        .find(|op| op.name == name)
        .unwrap_or_else(|| panic!("no operation {name:?}"));
    let bsize: u32 = bsize.parse().expect("block size");
    (op, bsize.trailing_zeros(), n.parse().ok())
}

/// Runs one case in this process and says what happened (for the isolated sweep,
/// whose parent reads it). Does nothing unless `ALLOC_SWEEP_CASE` is set.
#[test]
fn one_case_named_by_the_environment() {
    let Ok(case) = std::env::var("ALLOC_SWEEP_CASE") else {
        return;
    };
    std::panic::set_hook(Box::new(|_| disarm()));
    PRINT_SITES.store(
        std::env::var_os("ALLOC_SWEEP_SITES").is_some(),
        Ordering::Relaxed,
    );
    let (op, fs_bshift, n) = parse_case(&case);
    let (problems, hit) = run_case(&op, fs_bshift, n);
    for problem in problems {
        say(&format!("PROBLEM {problem}"));
    }
    say(if hit { "HIT" } else { "MISSED" });
}

/// Runs `case` in a child process: its problems and whether the failure was hit, or
/// why the child did not finish (an abort, with the allocation site; a hang).
fn run_isolated(case: &str) -> (BTreeSet<String>, bool) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "one_case_named_by_the_environment",
            "--exact",
            "--nocapture",
        ])
        .env("ALLOC_SWEEP_CASE", case)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a case");
    let stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = std::time::Instant::now();
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a case") {
            break status;
        }
        if started.elapsed() > CASE_TIMEOUT {
            hung = true;
            let _ = child.kill();
            break child.wait().expect("reap a case");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let output = reader.join().unwrap_or_default();
    let mut problems: BTreeSet<String> = output
        .lines()
        .filter_map(|line| line.strip_prefix("PROBLEM "))
        .map(String::from)
        .collect();
    let hit = output.lines().any(|line| line == "HIT");
    if hung {
        problems.insert(format!("hung (killed after {CASE_TIMEOUT:?})"));
        return (problems, true);
    }
    if !status.success() {
        // The first frames in genpager's own source under the allocation-error handler.
        let site: Vec<&str> = output
            .lines()
            .skip_while(|line| !line.contains("memory allocation of"))
            .filter(|line| line.contains("at ./src/"))
            .take(3)
            .map(str::trim)
            .collect();
        let what = output
            .lines()
            .find(|line| line.contains("memory allocation of"))
            .unwrap_or("died");
        problems.insert(format!("aborted: {what}; {}", site.join(" <- ")));
        return (problems, true);
    }
    (problems, hit)
}

#[test]
fn every_operation_survives_each_allocation_failing() {
    if std::env::var_os("ALLOC_SWEEP_CASE").is_some() {
        return;
    }
    // Each case in a child process of its own, so that an abort or a hang is one
    // finding rather than the end of the sweep.
    let isolate = std::env::var_os("ALLOC_SWEEP_ISOLATE").is_some();
    PRINT_SITES.store(
        std::env::var_os("ALLOC_SWEEP_SITES").is_some(),
        Ordering::Relaxed,
    );
    let skip: BTreeSet<String> = std::env::var("ALLOC_SWEEP_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|case| !case.is_empty())
        .map(String::from)
        .collect();
    // Panics are caught and reported per case; the default hook would print each
    // (allocating while a case may still be armed).
    std::panic::set_hook(Box::new(|_| disarm()));

    let mut cases = 0;
    let mut findings = Vec::new();
    for op in ops() {
        for fs_bshift in [9, 10, 12, 16] {
            let bsize = 1u32 << fs_bshift;
            let (baseline, _) = if isolate {
                run_isolated(&format!("{}/{bsize}/baseline", op.name))
            } else {
                run_case(&op, fs_bshift, None)
            };
            for problem in &baseline {
                findings.push(format!("{}/{bsize}/baseline: {problem}", op.name));
            }
            for n in 1.. {
                let case = format!("{}/{bsize}/{n}", op.name);
                if skip.contains(&case) {
                    say(&format!("skip {case}"));
                    continue;
                }
                say(&format!("case {case}"));
                cases += 1;
                let (problems, hit) = if isolate {
                    run_isolated(&case)
                } else {
                    run_case(&op, fs_bshift, Some(n))
                };
                for problem in problems.difference(&baseline) {
                    findings.push(format!("{case}: {problem}"));
                }
                if !hit {
                    break;
                }
                assert!(n < 10_000, "{case}: the operation never stops allocating");
            }
        }
    }
    say(&format!("{cases} (op, block size, N) cases ran"));
    for finding in &findings {
        say(&format!("FINDING {finding}"));
    }
    assert!(
        findings.is_empty(),
        "{} findings (see stderr)",
        findings.len()
    );
}
