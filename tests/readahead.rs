//! Read-ahead (issue 17), end to end: what `read`, `read_with`, synchronous read faults
//! and `fault_around` promise about the requests they send, the bytes they bring and
//! what they leave behind, each test failing if a promise breaks.
//!
//! The unit tests in `src/readahead.rs` drive the window state machine alone; these
//! drive the paths that start what it plans, on the rig's disk, and count what reaches
//! the device. Sizes are in pages and transfers ([`TRANSFER`]), so the tests hold at
//! every page size; the numbers in comments are for 4 KiB pages and 64 KiB transfers.
//!
//! Every test prints what it measured (`--nocapture` shows it). Three tests began as
//! findings about the library and now hold: pages a window did not bring (a failed
//! request, no memory, a resident page in a transfer) are read a transfer at a time,
//! and a reader touching every other page from page 0 is read whole in transfers (the
//! documented trade); one stays ignored as a known limitation: a streaming reader can
//! starve a truncation's node lock (a writer-preferring node lock deadlocks instead).

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use genpager::page::round_page;
use genpager::testing::{LoggedRequest, MAX_RUN, MemDisk, MemFile};
use genpager::{
    Advice, Around, Fault, PAGE_SIZE, ReadAhead, Vnode, fault_around, getpages, read, read_with,
};

const P: u64 = PAGE_SIZE as u64;
const MIB: usize = 1 << 20;
/// The files' maximum transfer (64 KiB up to 16 KiB pages).
const TRANSFER: usize = TEST_MAX_TRANSFER;
/// Pages in one transfer.
const T: usize = TRANSFER / PAGE_SIZE;

/// Requests beyond one per maximum transfer a sequential reader may cost: the ramp-up
/// itself costs none (the first window is one whole transfer, as NetBSD's
/// `RA_MINSIZE`, and every later one starts and ends on a transfer boundary), so what
/// is allowed is the reader's own first request if it is not a whole transfer and the
/// file's last, short one.
const RAMP: u64 = 2;

/// Requests a perfect sequential reader of `bytes` needs: one per maximum transfer.
fn transfers(bytes: usize) -> u64 {
    bytes.div_ceil(TRANSFER) as u64
}

/// Requests per MiB, for the report.
fn per_mib(requests: u64, bytes: usize) -> f64 {
    requests as f64 * MIB as f64 / bytes as f64
}

/// A contiguous file of `len` pattern bytes, one block per page, on an inline disk.
fn contiguous(len: usize, seed: u8) -> (MemDisk, Arc<MemFile>, Vec<u8>) {
    let data = pattern(len, seed);
    let (disk, file) = file_with(PAGE_SHIFT, genpager::testing::Layout::Contiguous, &data);
    (disk, file, data)
}

/// `read` or `read_with` (with `own`) at `offset`.
fn read_at(
    file: &Arc<MemFile>,
    own: Option<&mut ReadAhead>,
    offset: u64,
    buf: &mut [u8],
) -> genpager::Result<usize> {
    match own {
        Some(ahead) => read_with(file, ahead, offset, buf),
        None => read(file, offset, buf),
    }
}

/// Reads the whole file from the start in `buf_len` reads, through `own` or the
/// object's state, and returns what it read.
fn read_sequentially(
    file: &Arc<MemFile>,
    mut own: Option<&mut ReadAhead>,
    buf_len: usize,
) -> Vec<u8> {
    let mut buf = vec![0u8; buf_len];
    let mut out = Vec::new();
    loop {
        let offset = out.len() as u64;
        let n = read_at(file, own.as_deref_mut(), offset, &mut buf).expect("read");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Checks that no sector was read twice (no two logged reads overlap) and that the
/// disk transferred what the log says.
fn assert_each_sector_read_once(disk: &MemDisk, what: &str) {
    let log = disk.log();
    let mut spans: Vec<(u64, u64)> = log
        .iter()
        .map(|r| (r.block, r.block + (r.len / 512) as u64))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "{what}: sectors {:?} and {:?} both read",
            pair[0],
            pair[1]
        );
    }
    let logged: u64 = log.iter().map(|r| r.len as u64).sum();
    assert_eq!(disk.stats().bytes_read, logged, "{what}: a request failed");
}

/// Requests of the log shorter than a whole transfer.
fn short_requests(log: &[LoggedRequest]) -> Vec<(u64, usize)> {
    log.iter()
        .filter(|r| r.len < TRANSFER)
        .map(|r| (r.file_offset, r.len))
        .collect()
}

/// The page index's bytes of `data`.
fn page_of(data: &[u8], index: usize) -> &[u8] {
    &data[index * PAGE_SIZE..((index + 1) * PAGE_SIZE).min(data.len())]
}

/// A kernel's fault handler over a mapping read from start to end: faults at a page,
/// maps what `fault_around` hands back (the faulting page and the resident pages after
/// it in its block) and faults again past the last page mapped. Checks every mapped
/// page's bytes; returns the number of faults.
fn map_sequentially(
    file: &Arc<MemFile>,
    mut own: Option<&mut ReadAhead>,
    advice: Advice,
    data: &[u8],
) -> usize {
    let pages = data.len().div_ceil(PAGE_SIZE);
    let mut faults = 0;
    let mut page = 0;
    while page < pages {
        faults += 1;
        let around = fault_around(file, own.as_deref_mut(), page as u64 * P, advice)
            .unwrap_or_else(|e| panic!("fault at page {page}: {e:?}"));
        let center = &around.center_bytes()[..page_of(data, page).len()];
        assert!(center == page_of(data, page), "page {page}'s bytes");
        match around {
            Around::Resident {
                pages: mapped,
                center,
            } => {
                let mut run = 0;
                while center + run < mapped.len() {
                    let Some(bytes) = mapped.bytes(center + run) else {
                        break;
                    };
                    let index = page + run;
                    assert!(
                        bytes[..page_of(data, index).len()] == *page_of(data, index),
                        "mapped page {index}'s bytes"
                    );
                    run += 1;
                }
                page += run;
            }
            Around::Read(_) => page += 1,
        }
    }
    faults
}

// ---- 1: sequential reads ----------------------------------------------------------------

/// `read` (the object's state) and `read_with` (the reader's own) over a 4 MiB
/// contiguous file with 4 KiB, 8 KiB and 64 KiB buffers: no more requests than 64 KiB
/// reads would make (16 per MiB) plus [`RAMP`], all of them whole transfers but
/// [`RAMP`], and every file byte read exactly once.
#[test]
fn sequential_reads_cost_one_request_per_transfer() {
    let size = 4 * MIB;
    for buf_len in [4 << 10, 8 << 10, 64 << 10] {
        for own in [false, true] {
            let what = format!(
                "{} with {buf_len}-byte reads",
                if own { "read_with" } else { "read" }
            );
            let (disk, file, data) = contiguous(size, 1);
            let mut ahead = ReadAhead::new();
            let got = read_sequentially(&file, own.then_some(&mut ahead), buf_len);
            assert!(got == data, "{what}: bytes differ");
            let requests = disk.stats().requests;
            let log = disk.log();
            println!(
                "{what}: {requests} requests ({:.1}/MiB), {} short",
                per_mib(requests, size),
                short_requests(&log).len()
            );
            assert!(
                requests <= transfers(size) + RAMP,
                "{what}: {requests} requests, at most {} + {RAMP}",
                transfers(size)
            );
            assert!(
                short_requests(&log).len() as u64 <= RAMP,
                "{what}: requests shorter than a transfer: {:?}",
                short_requests(&log)
            );
            assert_eq!(disk.stats().bytes_read, size as u64, "{what}: bytes read");
            assert_each_sector_read_once(&disk, &what);
            assert!(!any_busy(&file));
        }
    }
}

/// The same on a disk that completes on its own thread: the reader reaches pages still
/// being read ahead, waits for them, and issues nothing of its own.
#[test]
fn sequential_reads_on_a_threaded_disk_cost_one_request_per_transfer() {
    let size = 2 * MIB;
    for own in [false, true] {
        let what = if own { "read_with" } else { "read" };
        let data = pattern(size, 2);
        let disk = MemDisk::threaded(disk_for(size).sectors(), false);
        let fs = genpager::testing::MemFs::new(
            disk.clone(),
            PAGE_SHIFT,
            genpager::testing::Layout::Contiguous,
        );
        let file = fs.create(&data).unwrap();
        file.set_max_transfer(TRANSFER);
        let mut ahead = ReadAhead::new();
        let got = read_sequentially(&file, own.then_some(&mut ahead), 4 << 10);
        assert!(got == data, "{what}: bytes differ");
        disk.quiesce();
        let requests = disk.stats().requests;
        println!(
            "{what}, threaded disk: {requests} requests ({:.1}/MiB)",
            per_mib(requests, size)
        );
        assert!(
            requests <= transfers(size) + RAMP,
            "{what}: {requests} requests"
        );
        assert!(short_requests(&disk.log()).len() as u64 <= RAMP, "{what}");
        assert_each_sector_read_once(&disk, what);
    }
}

/// Read-ahead skips resident pages: a page already cached in the middle of the file
/// (read on its own, `NOREADAHEAD`) is not read again by a sequential reader's
/// windows, and no other page is read twice.
#[test]
fn read_ahead_skips_resident_pages() {
    let size = 16 * TRANSFER;
    for own in [false, true] {
        let (disk, file, data) = contiguous(size, 25);
        let cached = 5 * T / 2;
        let fault = Fault::read(cached as u64 * P, 1).with_flags(genpager::GetFlags::NOREADAHEAD);
        drop(getpages(&file, fault).unwrap());
        assert_eq!(disk.stats().requests, 1);
        let mut ahead = ReadAhead::new();
        assert!(read_sequentially(&file, own.then_some(&mut ahead), 4 << 10) == data);
        let requests = disk.stats().requests;
        println!("own state {own}: a resident page mid-file: {requests} requests in all");
        assert_eq!(
            disk.stats().bytes_read,
            size as u64,
            "own state {own}: a page read twice"
        );
        assert_each_sector_read_once(&disk, "resident page");
    }
}

/// Which state each path feeds: `read` the object's, `read_with` and `fault_around`
/// with a state of their own theirs (the object's stays untouched); a synchronous
/// read fault the object's, unless it says `NOREADAHEAD`, comes with `GLOCKHELD` (its
/// caller holds the node lock that read-ahead would take) or has [`Advice::Random`]:
/// then it reads its page and nothing else.
#[test]
fn each_path_feeds_its_own_read_ahead_state() {
    let size = 16 * TRANSFER;
    let mut buf = vec![0u8; PAGE_SIZE];
    let object_window = |file: &MemFile| file.object().read_ahead().window();

    let (_disk, file, _) = contiguous(size, 26);
    read(&file, 0, &mut buf).unwrap();
    assert!(
        !object_window(&file).is_empty(),
        "read feeds the object's state"
    );

    let (_disk, file, _) = contiguous(size, 26);
    let mut own = ReadAhead::new();
    read_with(&file, &mut own, 0, &mut buf).unwrap();
    assert!(!own.window().is_empty(), "read_with feeds its own state");
    assert!(
        object_window(&file).is_empty(),
        "read_with leaves the object's"
    );

    let (_disk, file, _) = contiguous(size, 26);
    let mut own = ReadAhead::new();
    drop(fault_around(&file, Some(&mut own), 0, Advice::Normal).unwrap());
    assert!(!own.window().is_empty(), "fault_around feeds its own state");
    assert!(
        object_window(&file).is_empty(),
        "fault_around leaves the object's"
    );

    let (_disk, file, _) = contiguous(size, 26);
    drop(fault_around(&file, None, 0, Advice::Normal).unwrap());
    assert!(
        !object_window(&file).is_empty(),
        "fault_around without one feeds the object's"
    );

    let (_disk, file, _) = contiguous(size, 26);
    drop(getpages(&file, Fault::read(0, 1)).unwrap());
    assert!(
        !object_window(&file).is_empty(),
        "a read fault feeds the object's state"
    );

    for (what, flags, advice) in [
        (
            "NOREADAHEAD",
            genpager::GetFlags::NOREADAHEAD,
            Advice::Normal,
        ),
        (
            "Advice::Random",
            genpager::GetFlags::empty(),
            Advice::Random,
        ),
        ("GLOCKHELD", genpager::GetFlags::GLOCKHELD, Advice::Normal),
    ] {
        let (disk, file, data) = contiguous(size, 26);
        let bytes = within(what, {
            let file = file.clone();
            move || {
                let glockheld = flags.contains(genpager::GetFlags::GLOCKHELD);
                if glockheld {
                    file.trans_begin(true).unwrap();
                }
                let node = glockheld.then(|| file.object().node_lock().write());
                let fault = Fault::read(0, 1).with_flags(flags).with_advice(advice);
                let bytes = getpages(&file, fault)
                    .unwrap()
                    .into_busy()
                    .unwrap()
                    .bytes(0)
                    .to_vec();
                drop(node);
                if glockheld {
                    file.trans_end();
                }
                bytes
            }
        });
        assert!(bytes == page_of(&data, 0), "{what}");
        assert_eq!(resident(&file), [0], "{what}: read ahead");
        assert_eq!(disk.stats().requests, 1, "{what}");
        assert!(
            object_window(&file).is_empty(),
            "{what}: fed the object's state"
        );
    }
}

// ---- 2: sequential faults ----------------------------------------------------------------

/// One-page synchronous read faults, page after page, feed the object's state: as
/// few requests as sequential reads.
#[test]
fn sequential_one_page_faults_read_ahead_through_the_object_state() {
    let size = 4 * MIB;
    let (disk, file, data) = contiguous(size, 3);
    for page in 0..size / PAGE_SIZE {
        let pages = getpages(&file, Fault::read(page as u64 * P, 1))
            .unwrap()
            .into_busy()
            .unwrap();
        assert!(pages.bytes(0) == page_of(&data, page), "page {page}");
    }
    let requests = disk.stats().requests;
    println!(
        "getpages(Fault::read(off, 1)): {requests} requests ({:.1}/MiB)",
        per_mib(requests, size)
    );
    assert!(requests <= transfers(size) + RAMP, "{requests} requests");
    assert_eq!(disk.stats().bytes_read, size as u64);
    assert_each_sector_read_once(&disk, "faults");
}

/// `fault_around` with [`Advice::Sequential`] over a 4 MiB mapping, with the
/// mapping's own state and with the object's: at most one request per transfer (16
/// per MiB) plus [`RAMP`], and the faults themselves few (each maps a block of
/// resident neighbours).
#[test]
fn fault_around_with_sequential_advice_reads_a_transfer_per_request() {
    let size = 4 * MIB;
    for own in [false, true] {
        let what = format!("fault_around(Sequential, own state: {own})");
        let (disk, file, data) = contiguous(size, 4);
        let mut ahead = ReadAhead::new();
        let faults = map_sequentially(&file, own.then_some(&mut ahead), Advice::Sequential, &data);
        let requests = disk.stats().requests;
        println!(
            "{what}: {faults} faults, {requests} requests ({:.1}/MiB)",
            per_mib(requests, size)
        );
        assert!(
            requests <= transfers(size) + RAMP,
            "{what}: {requests} requests"
        );
        assert_eq!(disk.stats().bytes_read, size as u64, "{what}");
        assert_each_sector_read_once(&disk, &what);
        let blocks = size.div_ceil(genpager::FAULT_AROUND_BYTES.max(PAGE_SIZE));
        assert!(
            faults <= 2 * blocks,
            "{what}: {faults} faults for {blocks} blocks"
        );
    }
}

/// `fault_around` with [`Advice::Normal`]: read-ahead adapts, and a sequential mapping
/// costs at most two requests per transfer (32 per MiB).
#[test]
fn fault_around_with_normal_advice_reads_ahead_for_a_sequential_mapping() {
    let size = 4 * MIB;
    for own in [false, true] {
        let what = format!("fault_around(Normal, own state: {own})");
        let (disk, file, data) = contiguous(size, 5);
        let mut ahead = ReadAhead::new();
        let faults = map_sequentially(&file, own.then_some(&mut ahead), Advice::Normal, &data);
        let requests = disk.stats().requests;
        println!(
            "{what}: {faults} faults, {requests} requests ({:.1}/MiB)",
            per_mib(requests, size)
        );
        assert!(
            requests <= 2 * transfers(size),
            "{what}: {requests} requests"
        );
        assert_eq!(disk.stats().bytes_read, size as u64, "{what}");
        assert_each_sector_read_once(&disk, &what);
    }
}

/// [`Advice::Random`] never reads ahead: every fault of a sequential walk reads its
/// one page, in one request of one page, through `fault_around` (own state or the
/// object's) and through `getpages`.
#[test]
fn random_advice_faults_read_exactly_one_page_each() {
    let size = MIB;
    let pages = size / PAGE_SIZE;
    for way in ["fault_around(None)", "fault_around(own)", "getpages"] {
        let (disk, file, data) = contiguous(size, 6);
        let mut ahead = ReadAhead::new();
        for page in 0..pages {
            let offset = page as u64 * P;
            let bytes = match way {
                "getpages" => {
                    let fault = Fault::read(offset, 1).with_advice(Advice::Random);
                    getpages(&file, fault)
                        .unwrap()
                        .into_busy()
                        .unwrap()
                        .bytes(0)
                        .to_vec()
                }
                _ => {
                    let own = (way == "fault_around(own)").then_some(&mut ahead);
                    let around = fault_around(&file, own, offset, Advice::Random).unwrap();
                    around.center_bytes().to_vec()
                }
            };
            assert!(bytes == page_of(&data, page), "{way}: page {page}");
            assert_eq!(
                disk.stats().requests,
                page as u64 + 1,
                "{way}: fault at page {page}"
            );
        }
        let log = disk.log();
        assert!(
            log.iter()
                .enumerate()
                .all(|(i, r)| r.len == PAGE_SIZE && r.file_offset == i as u64 * P),
            "{way}: every request one page, the faulting one"
        );
        println!(
            "{way} with Advice::Random: {} faults, {} requests",
            pages,
            log.len()
        );
    }
}

// ---- 3: backward, strided and random readers ------------------------------------------

/// The ways a reader touches one page.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// `read` of the page (the object's state).
    Read,
    /// `read_with` of the page (the reader's own state, [`Advice::Normal`]).
    ReadWith,
    /// A one-page synchronous read fault (the object's state).
    Fault,
    /// `fault_around` with [`Advice::Normal`] and the object's state.
    AroundObject,
    /// `fault_around` with [`Advice::Normal`] and the mapping's own state.
    AroundOwn,
}

const WAYS: [Way; 5] = [
    Way::Read,
    Way::ReadWith,
    Way::Fault,
    Way::AroundObject,
    Way::AroundOwn,
];

/// Touches page `index` the `way` way and checks its bytes.
fn touch(file: &Arc<MemFile>, way: Way, ahead: &mut ReadAhead, index: usize, data: &[u8]) {
    let offset = index as u64 * P;
    let want = page_of(data, index);
    let got = match way {
        Way::Read | Way::ReadWith => {
            let mut buf = vec![0u8; PAGE_SIZE];
            let own = matches!(way, Way::ReadWith).then_some(ahead);
            let n = read_at(file, own, offset, &mut buf).expect("read");
            buf.truncate(n);
            buf
        }
        Way::Fault => getpages(file, Fault::read(offset, 1))
            .expect("fault")
            .into_busy()
            .unwrap()
            .bytes(0)[..want.len()]
            .to_vec(),
        Way::AroundObject | Way::AroundOwn => {
            let own = matches!(way, Way::AroundOwn).then_some(ahead);
            let around = fault_around(file, own, offset, Advice::Normal).expect("fault_around");
            around.center_bytes()[..want.len()].to_vec()
        }
    };
    assert!(got == want, "{way:?}: page {index}'s bytes");
}

/// Pages of the files of this section, 64 transfers (4 MiB at 4 KiB pages): counted
/// in transfers, so that the window a first access at page 0 earns (one transfer)
/// weighs as little at every page size.
const PATTERN_PAGES: usize = 64 * T;

/// Touches `order`'s pages of a fresh file of [`PATTERN_PAGES`] every way; returns, for each, the
/// bytes the disk read over the bytes the reader asked for (distinct pages), after
/// checking that nothing was read twice.
fn read_amplification(order: &[usize], seed: u8) -> Vec<(Way, f64, u64)> {
    let size = PATTERN_PAGES * PAGE_SIZE;
    let mut distinct = order.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let asked = (distinct.len() * PAGE_SIZE) as f64;
    WAYS.iter()
        .map(|&way| {
            let (disk, file, data) = contiguous(size, seed);
            let mut ahead = ReadAhead::new();
            for &index in order {
                touch(&file, way, &mut ahead, index, &data);
            }
            assert_each_sector_read_once(&disk, &format!("{way:?}"));
            assert!(!any_busy(&file));
            let stats = disk.stats();
            (way, stats.bytes_read as f64 / asked, stats.requests)
        })
        .collect()
}

/// The bound of this section: the disk reads at most 5 % more than the reader asks.
/// (A first access at page 0 earns a window by design, as one at the start of a file
/// looks sequential; over a file of [`PATTERN_PAGES`] that one window, a transfer,
/// is under 3 % of a strided reader's pages.)
const USELESS: f64 = 1.05;

fn assert_nothing_useless(what: &str, order: &[usize], seed: u8) {
    for (way, ratio, requests) in read_amplification(order, seed) {
        println!("{what}, {way:?}: read {ratio:.3} x asked, {requests} requests");
        assert!(
            ratio <= USELESS,
            "{what}, {way:?}: the disk read {ratio:.3} x what the reader asked"
        );
    }
}

/// A reader going backwards a page at a time from the end: nothing read ahead.
#[test]
fn backward_reads_read_nothing_ahead() {
    let pages = PATTERN_PAGES;
    let order: Vec<usize> = (0..pages).rev().collect();
    assert_nothing_useless("backward", &order, 7);
}

/// A reader touching every third page from page 0: nothing read ahead beyond the
/// window the first access earns (pages 0 to 15, of which it touches 6).
#[test]
fn every_third_page_from_page_zero_reads_nothing_ahead() {
    let pages = PATTERN_PAGES;
    let order: Vec<usize> = (0..pages).step_by(3).collect();
    assert_nothing_useless("every 3 pages from 0", &order, 8);
}

/// A reader touching every third page from page 1: nothing read ahead.
#[test]
fn every_third_page_from_page_one_reads_nothing_ahead() {
    let pages = PATTERN_PAGES;
    let order: Vec<usize> = (1..pages).step_by(3).collect();
    assert_nothing_useless("every 3 pages from 1", &order, 8);
}

/// A reader touching every other page from page 1: nothing read ahead.
#[test]
fn every_other_page_from_page_one_reads_nothing_ahead() {
    let pages = PATTERN_PAGES;
    let order: Vec<usize> = (1..pages).step_by(2).collect();
    assert_nothing_useless("every 2 pages from 1", &order, 8);
}

/// A reader touching every other page from page 0. Page 0 opens a window (a read at
/// the start of a file looks sequential), and each later window is earned: the reader
/// lands on the window's end, and the pages leading up to it are resident, as for a
/// sequential reader whose hits the fast path served (Linux's context read-ahead
/// reads such a reader the same way). So the whole file is read — twice the bytes the
/// reader asks — but in one request per transfer: fewer requests than the pages it
/// asks for, and no more modelled device time than reading only those a page at a
/// time (far less at 4 KiB pages).
/// This is the documented trade (`ReadAhead`), not waste.
#[test]
fn every_other_page_from_page_zero_is_read_whole_in_transfers() {
    let pages = PATTERN_PAGES;
    let order: Vec<usize> = (0..pages).step_by(2).collect();
    let model = genpager::testing::LatencyModel::default();
    let page_at_a_time = order.len() as u64 * model.cost_ns(PAGE_SIZE as u64);
    for (way, ratio, requests) in read_amplification(&order, 9) {
        println!("every 2 pages from 0, {way:?}: read {ratio:.3} x asked, {requests} requests");
        assert!(ratio <= 2.0 + 1e-9, "{way:?}: read {ratio:.3} x asked");
        assert!(
            requests <= (pages * PAGE_SIZE / TRANSFER) as u64 + 1,
            "{way:?}: {requests} requests, more than one per transfer"
        );
        // At 4 KiB pages the whole file costs 0.36x the device time of the pages asked
        // a page at a time; at 16 KiB pages (2 pages asked per transfer) about the
        // same: never much more.
        let whole = requests * model.cost_ns(TRANSFER as u64);
        assert!(
            whole <= page_at_a_time + page_at_a_time / 10,
            "{way:?}: {whole} ns of device time, more than {page_at_a_time} a page at a time"
        );
    }
}

/// Random one-page reads over a file of [`PATTERN_PAGES`] (a quarter of its pages, a
/// fixed seed):
/// nothing read ahead.
#[test]
fn random_reads_read_nothing_ahead() {
    let pages = PATTERN_PAGES;
    let mut state = 0x5eed_u64;
    let order: Vec<usize> = (0..pages / 4)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % pages
        })
        .collect();
    assert_nothing_useless("random", &order, 10);
}

// ---- 4: two readers of one file ---------------------------------------------------------

/// Two sequential readers of one file taking turns, each with its own state through
/// `read_with`: one reading the first half, one the second. Each keeps its own window,
/// so together they cost about what one reader of the whole file does, and no byte is
/// read twice.
#[test]
fn interleaved_readers_with_their_own_state_cost_one_readers_requests() {
    let size = 4 * MIB;
    let half = (size / 2) as u64;
    for buf_len in [4 << 10, 64 << 10] {
        let (disk, file, data) = contiguous(size, 11);
        let mut states = [ReadAhead::new(), ReadAhead::new()];
        let mut at = [0, half];
        let ends = [half, size as u64];
        let mut buf = vec![0u8; buf_len];
        while at[0] < ends[0] || at[1] < ends[1] {
            for reader in 0..2 {
                if at[reader] >= ends[reader] {
                    continue;
                }
                let len = buf_len.min((ends[reader] - at[reader]) as usize);
                let n = read_with(&file, &mut states[reader], at[reader], &mut buf[..len]).unwrap();
                let start = at[reader] as usize;
                assert!(
                    buf[..n] == data[start..start + n],
                    "reader {reader} at {start}"
                );
                at[reader] += n as u64;
            }
        }
        let requests = disk.stats().requests;
        println!(
            "two interleaved read_with readers, {buf_len}-byte reads: {requests} requests \
             (one reader: {})",
            transfers(size)
        );
        assert!(
            requests <= transfers(size) + 2 * RAMP,
            "{buf_len}: {requests} requests"
        );
        assert_eq!(disk.stats().bytes_read, size as u64);
        assert_each_sector_read_once(&disk, "own states");
    }
}

/// Two readers of the whole file, one a little behind the other, each with its own
/// state: the one behind finds everything resident and reads nothing.
#[test]
fn a_reader_following_another_reads_nothing() {
    let size = 4 * MIB;
    let (disk, file, data) = contiguous(size, 12);
    let mut states = [ReadAhead::new(), ReadAhead::new()];
    let mut at = [0u64, 0];
    let mut buf = vec![0u8; 8 << 10];
    let lag = 40 * PAGE_SIZE as u64;
    while at[1] < size as u64 {
        for reader in 0..2 {
            if at[reader] >= size as u64
                || (reader == 1 && at[1] + lag > at[0] && at[0] < size as u64)
            {
                continue;
            }
            let n = read_with(&file, &mut states[reader], at[reader], &mut buf).unwrap();
            let start = at[reader] as usize;
            assert!(
                buf[..n] == data[start..start + n],
                "reader {reader} at {start}"
            );
            at[reader] += n as u64;
        }
    }
    let requests = disk.stats().requests;
    println!(
        "a reader following another: {requests} requests (one reader: {})",
        transfers(size)
    );
    assert!(requests <= transfers(size) + RAMP);
    assert_eq!(disk.stats().bytes_read, size as u64);
    assert_each_sector_read_once(&disk, "follower");
}

/// The same two readers taking turns through `read`, sharing the object's state: each
/// other's accesses break their runs, but both finish with the right bytes, no byte
/// is read twice, and the resident pages leading up to each miss (Linux's context
/// read-ahead) keep the cost within twice one reader's.
#[test]
fn interleaved_readers_sharing_the_object_state_read_each_byte_once() {
    let size = 4 * MIB;
    let half = (size / 2) as u64;
    for buf_len in [4 << 10, 64 << 10] {
        let (disk, file, data) = contiguous(size, 13);
        let mut at = [0, half];
        let ends = [half, size as u64];
        let mut buf = vec![0u8; buf_len];
        while at[0] < ends[0] || at[1] < ends[1] {
            for reader in 0..2 {
                if at[reader] >= ends[reader] {
                    continue;
                }
                let len = buf_len.min((ends[reader] - at[reader]) as usize);
                let n = read(&file, at[reader], &mut buf[..len]).unwrap();
                let start = at[reader] as usize;
                assert!(
                    buf[..n] == data[start..start + n],
                    "reader {reader} at {start}"
                );
                at[reader] += n as u64;
            }
        }
        let requests = disk.stats().requests;
        let short = short_requests(&disk.log()).len();
        println!(
            "two interleaved read() readers, {buf_len}-byte reads: {requests} requests, \
             {short} short (one reader: {})",
            transfers(size)
        );
        assert_eq!(
            disk.stats().bytes_read,
            size as u64,
            "{buf_len}: a byte read twice"
        );
        assert_each_sector_read_once(&disk, "shared state");
        assert!(
            requests <= 2 * transfers(size),
            "{buf_len}: {requests} requests"
        );
    }
}

/// Two threads reading the whole file at once on a disk completing on its own thread,
/// each with its own state (`read_with`) or both through the object's (`read`): both
/// get the right bytes, and no byte is read twice (a window meeting the other
/// reader's pages in flight leaves them to it).
#[test]
fn concurrent_readers_of_one_file_read_each_byte_once() {
    let size = 64 * TRANSFER;
    for own in [false, true] {
        let what = if own { "read_with" } else { "read" };
        let data = Arc::new(pattern(size, 27));
        let disk = MemDisk::threaded(disk_for(size).sectors(), true);
        let fs = genpager::testing::MemFs::new(
            disk.clone(),
            PAGE_SHIFT,
            genpager::testing::Layout::Contiguous,
        );
        let file = fs.create(&data).unwrap();
        file.set_max_transfer(TRANSFER);
        let readers: Vec<_> = [4 << 10, 12 << 10]
            .into_iter()
            .map(|buf_len| {
                let (file, data) = (file.clone(), data.clone());
                std::thread::spawn(move || {
                    let mut ahead = ReadAhead::new();
                    let got = read_sequentially(&file, own.then_some(&mut ahead), buf_len);
                    assert!(got == *data, "{what}, {buf_len}-byte reads: bytes");
                })
            })
            .collect();
        for reader in readers {
            reader.join().unwrap();
        }
        disk.quiesce();
        let requests = disk.stats().requests;
        println!(
            "two concurrent {what} readers: {requests} requests (one reader: {})",
            transfers(size)
        );
        assert_eq!(
            disk.stats().bytes_read,
            size as u64,
            "{what}: a byte read twice"
        );
        assert_each_sector_read_once(&disk, what);
    }
}

// ---- 5: end of file -----------------------------------------------------------------------

/// Block shifts the rig's filesystem is tested with here: 512 B, 1 KiB, 4 KiB, the
/// page, 64 KiB.
fn block_shifts() -> Vec<u32> {
    let mut shifts = vec![9, 10, 12, PAGE_SHIFT, 16];
    shifts.sort_unstable();
    shifts.dedup();
    shifts
}

/// A contiguous file of `size` pattern bytes with `bshift` blocks, followed on the
/// disk by a second file (whose sectors a request past the first's end would read).
fn file_before_another(bshift: u32, size: usize, seed: u8) -> (MemDisk, Arc<MemFile>, Vec<u8>) {
    let data = pattern(size, seed);
    // Room for both files and no more: a large zeroed disk per case is most of the
    // test's time.
    let bsize = 1usize << bshift;
    let bytes = size.div_ceil(bsize) * bsize + (4 * TRANSFER).div_ceil(bsize) * bsize;
    let disk = MemDisk::new((bytes / 512) as u64);
    let fs =
        genpager::testing::MemFs::new(disk.clone(), bshift, genpager::testing::Layout::Contiguous);
    let file = fs.create(&data).expect("file fits");
    file.set_max_transfer(TRANSFER);
    let neighbour = fs
        .create(&pattern(4 * TRANSFER, seed ^ 0x55))
        .expect("fits");
    drop(neighbour);
    (disk, file, data)
}

/// Checks every logged request against the file's blocks: it starts at the sector
/// its file offset maps to, and reads nothing past the last sector of the file's last
/// block.
fn assert_requests_inside_the_file(disk: &MemDisk, file: &MemFile, size: u64, what: &str) {
    let bshift = file.fs_bshift();
    let bsize = 1u64 << bshift;
    let blocks_end = size.div_ceil(bsize) * bsize;
    let sectors: HashSet<u64> = file
        .block_table()
        .iter()
        .flatten()
        .flat_map(|&first| first..first + bsize / 512)
        .collect();
    for r in disk.log() {
        assert!(
            r.file_offset + r.len as u64 <= blocks_end,
            "{what}: request {r:?} ends past the file's last block (ends at {blocks_end:#x})"
        );
        assert_eq!(
            sector_of(file, r.file_offset),
            Some(r.block),
            "{what}: {r:?}"
        );
        let span = r.block..r.block + (r.len / 512) as u64;
        assert!(
            span.clone().all(|s| sectors.contains(&s)),
            "{what}: request {r:?} reads sectors outside the file"
        );
    }
}

/// The ways a whole file is read in order, for the end-of-file checks.
#[derive(Clone, Copy, Debug)]
enum Whole {
    /// `read` in 4 KiB reads.
    Read,
    /// `read_with` in 4 KiB reads, [`Advice::Sequential`]: the largest window at once.
    ReadWithSequential,
    /// One-page synchronous faults.
    Faults,
    /// `fault_around` with [`Advice::Sequential`].
    AroundSequential,
}

fn read_whole(file: &Arc<MemFile>, how: Whole, data: &[u8]) {
    match how {
        Whole::Read => assert!(read_sequentially(file, None, 4 << 10) == data),
        Whole::ReadWithSequential => {
            let mut ahead = ReadAhead::new();
            ahead.set_advice(Advice::Sequential);
            assert!(read_sequentially(file, Some(&mut ahead), 4 << 10) == data);
        }
        Whole::Faults => {
            for page in 0..data.len().div_ceil(PAGE_SIZE) {
                let pages = getpages(file, Fault::read(page as u64 * P, 1))
                    .unwrap()
                    .into_busy()
                    .unwrap();
                let want = page_of(data, page);
                assert!(pages.bytes(0)[..want.len()] == *want, "page {page}");
                assert!(
                    pages.bytes(0)[want.len()..].iter().all(|&b| b == 0),
                    "page {page}: bytes past the end of file are zero"
                );
            }
        }
        Whole::AroundSequential => {
            map_sequentially(file, None, Advice::Sequential, data);
        }
    }
}

/// Read-ahead never reads past the end of file: for files of 1 byte, a page less one,
/// a page, a page and one, 17 pages (less one, plus 100 bytes), a transfer and one
/// and 100 pages and 123 bytes, with blocks of 512 B to 64 KiB, read `how` in order,
/// every request starts where its offset maps and ends at the latest with the file's
/// last block (the next file's sectors follow it), no page past the end of file is
/// left resident, and every byte is right.
fn assert_never_past_the_end_of_file(how: Whole) {
    let sizes = [
        1,
        PAGE_SIZE - 1,
        PAGE_SIZE,
        PAGE_SIZE + 1,
        17 * PAGE_SIZE - 1,
        17 * PAGE_SIZE,
        17 * PAGE_SIZE + 100,
        TRANSFER + 1,
        100 * PAGE_SIZE + 123,
    ];
    let mut requests = 0;
    for bshift in block_shifts() {
        for size in sizes {
            let what = format!("{how:?}, {size} bytes, {}-byte blocks", 1 << bshift);
            let (disk, file, data) = file_before_another(bshift, size, size as u8);
            read_whole(&file, how, &data);
            assert_requests_inside_the_file(&disk, &file, size as u64, &what);
            let past = resident(&file)
                .into_iter()
                .filter(|&offset| offset >= round_page(size as u64))
                .collect::<Vec<_>>();
            assert!(
                past.is_empty(),
                "{what}: pages past the end resident: {past:x?}"
            );
            assert!(!any_busy(&file), "{what}");
            requests += disk.stats().requests;
        }
    }
    println!(
        "{how:?} to the end of file: {requests} requests in all, none past a file's last block"
    );
}

/// `read` (4 KiB reads, the object's state) stops at the end of file.
#[test]
fn read_never_reads_ahead_past_the_end_of_file() {
    assert_never_past_the_end_of_file(Whole::Read);
}

/// `read_with` and [`Advice::Sequential`], whose first window is the largest (8
/// transfers), stops at the end of file.
#[test]
fn sequential_advice_never_reads_ahead_past_the_end_of_file() {
    assert_never_past_the_end_of_file(Whole::ReadWithSequential);
}

/// One-page synchronous faults (the object's state) stop at the end of file.
#[test]
fn faults_never_read_ahead_past_the_end_of_file() {
    assert_never_past_the_end_of_file(Whole::Faults);
}

/// `fault_around` with [`Advice::Sequential`] stops at the end of file.
#[test]
fn fault_around_never_reads_ahead_past_the_end_of_file() {
    assert_never_past_the_end_of_file(Whole::AroundSequential);
}

// ---- 6: block sizes -----------------------------------------------------------------------

/// Requests one transfer costs at `bshift`: one, unless the rig's `bmap` reports runs
/// shorter than a transfer (at most [`MAX_RUN`] + 1 blocks: 128.5 KiB of 512-byte
/// blocks, shorter than the 256 KiB transfers of 64 KiB pages).
fn requests_per_transfer(bshift: u32) -> u64 {
    TRANSFER.div_ceil(((MAX_RUN + 1) << bshift) as usize) as u64
}

/// Sequential reads cluster whatever the block size (512 B to 64 KiB): one request per
/// transfer (or per `bmap` run, if shorter) and [`RAMP`], each byte read once, the
/// bytes right.
#[test]
fn sequential_reads_cluster_at_every_block_size() {
    let size = 2 * MIB;
    for bshift in block_shifts() {
        for own in [false, true] {
            let what = format!(
                "{}, {}-byte blocks",
                if own { "read_with" } else { "read" },
                1 << bshift
            );
            let (disk, file, data) = file_before_another(bshift, size, 14);
            let mut ahead = ReadAhead::new();
            assert!(
                read_sequentially(&file, own.then_some(&mut ahead), 4 << 10) == data,
                "{what}: bytes"
            );
            let requests = disk.stats().requests;
            let per_transfer = requests_per_transfer(bshift);
            println!(
                "{what}: {requests} requests ({:.1}/MiB)",
                per_mib(requests, size)
            );
            assert!(
                requests <= transfers(size) * per_transfer + RAMP,
                "{what}: {requests} requests"
            );
            if per_transfer == 1 {
                assert!(short_requests(&disk.log()).len() as u64 <= RAMP, "{what}");
            }
            assert_eq!(disk.stats().bytes_read, size as u64, "{what}");
            assert_each_sector_read_once(&disk, &what);
        }
    }
}

/// A fragmented file (runs of half a transfer): read-ahead's transfers split at the
/// runs, one request per run, and nothing more.
#[test]
fn sequential_reads_of_a_fragmented_file_cost_one_request_per_run() {
    let size = 2 * MIB;
    let run = (T / 2).max(1) as u64;
    let data = pattern(size, 15);
    let (disk, file) = file_with(
        PAGE_SHIFT,
        genpager::testing::Layout::Fragmented { run },
        &data,
    );
    assert!(read_sequentially(&file, None, 4 << 10) == data);
    let runs = (size / PAGE_SIZE) as u64 / run;
    let requests = disk.stats().requests;
    println!("fragmented ({run}-page runs): {requests} requests for {runs} runs");
    assert!(
        requests <= runs + RAMP,
        "{requests} requests for {runs} runs"
    );
    assert_eq!(disk.stats().bytes_read, size as u64);
    assert_each_sector_read_once(&disk, "fragmented");
}

/// A sparse file (every fifth block a hole, blocks of 512 B to 64 KiB): read-ahead
/// reads the allocated blocks only, each once, and the reader gets zeroes at the
/// holes and the file's bytes elsewhere.
#[test]
fn read_ahead_over_holes_reads_only_allocated_blocks() {
    let size = 16 * TRANSFER;
    for bshift in block_shifts() {
        let bsize = 1usize << bshift;
        let blocks = size / bsize;
        let holes: Vec<u64> = (0..blocks as u64).filter(|b| b % 5 == 2).collect();
        let mut data = pattern(size, 30);
        for &hole in &holes {
            let at = hole as usize * bsize;
            data[at..at + bsize].fill(0);
        }
        let (disk, file) = sparse_file(bshift, &data, &holes);
        for own in [false, true] {
            let what = format!("{}-byte blocks, own state: {own}", 1 << bshift);
            let mut ahead = ReadAhead::new();
            assert!(
                read_sequentially(&file, own.then_some(&mut ahead), 4 << 10) == data,
                "{what}"
            );
            let allocated = ((blocks - holes.len()) * bsize) as u64;
            assert_eq!(disk.stats().bytes_read, allocated, "{what}: bytes read");
            assert_each_sector_read_once(&disk, &what);
            for r in disk.log() {
                let first = r.file_offset >> bshift;
                let last = (r.file_offset + r.len as u64 - 1) >> bshift;
                assert!(
                    (first..=last).all(|b| !holes.contains(&b)),
                    "{what}: {r:?} reads a hole"
                );
            }
            println!("{what}: {} requests", disk.stats().requests);
            // Read again from the disk for the second way.
            genpager::putpages(&file, 0, 0, genpager::PutFlags::FREE).unwrap();
            disk.clear_log();
            disk.reset_stats();
        }
    }
}

// ---- 7: a fault inside a window being read ----------------------------------------------

/// Waits (at most [`HANG`]) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < HANG, "{what}: timed out");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The sectors of pages `pages` of a contiguous file.
fn sectors_of(file: &MemFile, pages: std::ops::Range<usize>) -> std::ops::Range<u64> {
    let first = sector_of(file, pages.start as u64 * P).unwrap();
    let last = sector_of(file, pages.end as u64 * P - 512).unwrap();
    first..last + 1
}

/// How the second reader reaches a page inside the window in flight.
#[derive(Clone, Copy, Debug)]
enum Second {
    /// `read` (it feeds the object's state: its pages are there, busy).
    Read,
    /// A one-page synchronous fault.
    Fault,
    /// `fault_around` with [`Advice::Normal`].
    Around,
}

/// A first reader's `read_with` ([`Advice::Sequential`]) reads page 0 (its own
/// transfer, then the rest of the largest window, 8 transfers, read ahead), then, on a
/// held disk, page 1: the marker, which starts the next window of 8 transfers and
/// returns without waiting for it. A second reader then asks for a page in that
/// window's third transfer: it blocks, and issues no request of its own. Once the
/// disk is released it gets its bytes, and exactly the window's 8 requests reached the
/// disk. The window's sixth transfer fails on the device: had the window been one
/// request group, its failure would have taken the second reader's pages with it (and
/// the reader would read them again, or fail); it waits only for the request covering
/// its page, one transfer.
#[test]
fn a_fault_inside_a_window_in_flight_waits_for_its_request_only() {
    for second in [Second::Read, Second::Fault, Second::Around] {
        // Two windows end the file: a second reader whose access looks sequential
        // (resident pages below it) has nothing further to read ahead.
        let size = 16 * TRANSFER;
        let data = pattern(size, 16);
        let disk = MemDisk::threaded(disk_for(size).sectors(), false);
        let fs = genpager::testing::MemFs::new(
            disk.clone(),
            PAGE_SHIFT,
            genpager::testing::Layout::Contiguous,
        );
        let file = fs.create(&data).unwrap();
        file.set_max_transfer(TRANSFER);
        let window = 8 * T;
        let mut ahead = ReadAhead::new();
        ahead.set_advice(Advice::Sequential);
        let mut buf = vec![0u8; PAGE_SIZE];
        assert_eq!(
            read_with(&file, &mut ahead, 0, &mut buf).unwrap(),
            PAGE_SIZE
        );
        disk.quiesce();
        wait_until("the first window", || !any_busy(&file));
        assert_eq!(disk.log().len(), 8, "{second:?}: the first window");
        disk.clear_log();

        disk.fail_blocks(sectors_of(&file, 13 * T..14 * T), genpager::Error::Io);
        disk.hold();
        // The marker: resident, so this read does not wait, and it starts the window
        // after the first.
        assert_eq!(
            read_with(&file, &mut ahead, P, &mut buf).unwrap(),
            PAGE_SIZE
        );
        assert!(buf == page_of(&data, 1), "{second:?}: page 1");
        wait_until("the window's requests", || disk.pending() == 8);
        assert_eq!(
            disk.log()
                .iter()
                .map(|r| (r.file_offset, r.len))
                .collect::<Vec<_>>(),
            (8..16)
                .map(|i| ((i * TRANSFER) as u64, TRANSFER))
                .collect::<Vec<_>>(),
            "{second:?}: the window, one request per transfer"
        );

        let target = 10 * T + 1;
        let reader = {
            let file = file.clone();
            std::thread::spawn(move || {
                let offset = target as u64 * P;
                match second {
                    Second::Read => {
                        let mut buf = vec![0u8; PAGE_SIZE];
                        let n = read(&file, offset, &mut buf).unwrap();
                        buf.truncate(n);
                        buf
                    }
                    Second::Fault => getpages(&file, Fault::read(offset, 1))
                        .unwrap()
                        .into_busy()
                        .unwrap()
                        .bytes(0)
                        .to_vec(),
                    Second::Around => fault_around(&file, None, offset, Advice::Normal)
                        .unwrap()
                        .center_bytes()
                        .to_vec(),
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!reader.is_finished(), "{second:?}: the reader did not wait");
        assert_eq!(
            disk.log().len(),
            8,
            "{second:?}: the waiting reader issued a request"
        );

        disk.release();
        assert!(
            reader.join().unwrap() == page_of(&data, target),
            "{second:?}: its page"
        );
        disk.quiesce();
        wait_until("pages unbusied", || !any_busy(&file));
        // Besides the window's 8, only the failed transfer may be read again: by the
        // second reader's own read-ahead once it has its page (its access follows
        // resident pages, so it looks sequential), never by its wait.
        let log = disk.log();
        let failed = (13 * T as u64 * P)..(14 * T as u64 * P);
        assert!(
            log[8..].iter().all(|r| failed.contains(&r.file_offset)),
            "{second:?}: requests past the window's: {:?}",
            blocks_and_lens(&log)
        );
        assert!(
            resident(&file).len() >= 2 * window - T,
            "{second:?}: resident pages"
        );
        println!(
            "{second:?} inside a window in flight: {} requests",
            log.len()
        );
    }
}

// ---- 8: memory pressure -------------------------------------------------------------------

/// Limits the file's cache to `pages` resident pages.
fn limit_cache(file: &MemFile, pages: usize) {
    file.object().lock().cache_mut().set_limit(pages);
}

/// With room for one page only, a reader's read at page 0 starts a window that the
/// cache refuses (`NoMemory`): read-ahead ends quietly and the reader's own read of
/// its page succeeds, every way a reader comes. Its next page finds no room: that read
/// fails with the reader's own clear error, `NoMemory` — except after a `read`, which
/// has read page 0 through and so moved it to the inactive queue (use-once, issue 18):
/// the bounded cache frees it for page 1. No page is left busy, and nothing but the
/// reader's page is resident.
#[test]
fn read_ahead_without_memory_ends_quietly() {
    for way in WAYS {
        let (disk, file, data) = contiguous(4 * TRANSFER, 17);
        limit_cache(&file, 1);
        let mut ahead = ReadAhead::new();
        ahead.set_advice(Advice::Sequential);
        touch(&file, way, &mut ahead, 0, &data);
        assert_eq!(resident(&file), [0], "{way:?}: only the reader's page");
        assert!(!any_busy(&file), "{way:?}");
        let next = match way {
            Way::Read | Way::ReadWith => {
                let mut buf = vec![0u8; PAGE_SIZE];
                let own = matches!(way, Way::ReadWith).then_some(&mut ahead);
                read_at(&file, own, P, &mut buf).map(drop)
            }
            Way::Fault => getpages(&file, Fault::read(P, 1)).map(drop),
            Way::AroundObject | Way::AroundOwn => {
                let own = matches!(way, Way::AroundOwn).then_some(&mut ahead);
                fault_around(&file, own, P, Advice::Sequential).map(drop)
            }
        };
        let read_through = matches!(way, Way::Read | Way::ReadWith);
        if read_through {
            assert_eq!(next, Ok(()), "{way:?}: page 0 makes room for the next");
        } else {
            assert_eq!(
                next,
                Err(genpager::Error::NoMemory),
                "{way:?}: the next page"
            );
        }
        assert!(!any_busy(&file), "{way:?}");
        let left = if read_through { P } else { 0 };
        assert_eq!(resident(&file), [left], "{way:?}");
        println!(
            "{way:?}, one page of memory: {} requests",
            disk.stats().requests
        );
        // Room again: the next read reads ahead as before.
        limit_cache(&file, usize::MAX);
        touch(&file, way, &mut ahead, 1, &data);
    }
}

/// Reads the whole file in one-page reads in a cache of `limit` pages, a page daemon
/// freeing the pages behind the reader after each read, and checks that every read
/// succeeds with the right bytes, the cache never holds more than its limit, no page
/// is left busy and no page is read twice. Returns the requests.
fn read_under_pressure(size: usize, limit: usize, own: bool) -> u64 {
    let what = format!(
        "{} with a cache of {limit} pages",
        if own { "read_with" } else { "read" }
    );
    let (disk, file, data) = contiguous(size, 18);
    limit_cache(&file, limit);
    let mut ahead = ReadAhead::new();
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut offset = 0u64;
    while offset < size as u64 {
        let n = read_at(&file, own.then_some(&mut ahead), offset, &mut buf)
            .unwrap_or_else(|e| panic!("{what} at {offset:#x}: {e:?}"));
        assert!(n > 0, "{what} at {offset:#x}: nothing read");
        let at = offset as usize;
        assert!(buf[..n] == data[at..at + n], "{what} at {offset:#x}");
        offset += n as u64;
        assert!(resident(&file).len() <= limit, "{what}: over the limit");
        assert!(!any_busy(&file), "{what} at {offset:#x}");
        // The page daemon frees what the reader has left behind.
        let behind = offset.saturating_sub(P) & !(P - 1);
        if behind > 0 {
            genpager::putpages(&file, 0, behind, genpager::PutFlags::FREE).unwrap();
        }
    }
    let requests = disk.stats().requests;
    println!(
        "{what}: {requests} requests for {} pages, {} bytes read",
        size / PAGE_SIZE,
        disk.stats().bytes_read
    );
    assert_eq!(
        disk.stats().bytes_read,
        size as u64,
        "{what}: a page read twice"
    );
    requests
}

/// A reader of a whole file in a cache of two transfers' worth of pages (and as much
/// as the largest window): read-ahead keeps failing for memory, quietly; every read
/// succeeds with the right bytes, the cache stays within its limit, nothing is left
/// busy, nothing is read twice.
#[test]
fn a_reader_under_memory_pressure_reads_the_whole_file() {
    for limit in [2 * T + 2, 8 * T] {
        for own in [false, true] {
            read_under_pressure(64 * TRANSFER, limit, own);
        }
    }
}

/// With room for two of the largest windows and a transfer (the one the reader is in,
/// the one started at its marker), memory pressure costs sequential reading nothing:
/// one request per transfer.
#[test]
fn a_cache_with_room_for_two_windows_keeps_read_ahead_at_full_pace() {
    let size = 64 * TRANSFER;
    for own in [false, true] {
        let requests = read_under_pressure(size, 17 * T, own);
        assert!(requests <= transfers(size) + RAMP, "{requests} requests");
    }
}

// ---- 9: device errors ---------------------------------------------------------------------

/// A one-page read of page `index` the `way` way, its result.
fn try_page(
    file: &Arc<MemFile>,
    way: Way,
    ahead: &mut ReadAhead,
    index: usize,
) -> genpager::Result<Vec<u8>> {
    let offset = index as u64 * P;
    match way {
        Way::Read | Way::ReadWith => {
            let mut buf = vec![0u8; PAGE_SIZE];
            let own = matches!(way, Way::ReadWith).then_some(ahead);
            let n = read_at(file, own, offset, &mut buf)?;
            buf.truncate(n);
            Ok(buf)
        }
        Way::Fault => Ok(getpages(file, Fault::read(offset, 1))?
            .into_busy()
            .unwrap()
            .bytes(0)
            .to_vec()),
        Way::AroundObject | Way::AroundOwn => {
            let own = matches!(way, Way::AroundOwn).then_some(ahead);
            Ok(fault_around(file, own, offset, Advice::Sequential)?
                .center_bytes()
                .to_vec())
        }
    }
}

/// Whether any page of `pages` is resident.
fn any_resident(file: &MemFile, pages: std::ops::Range<usize>) -> bool {
    let range = pages.start as u64 * P..pages.end as u64 * P;
    resident(file).iter().any(|offset| range.contains(offset))
}

/// A reader whose first access opens the largest window ([`Advice::Sequential`]; the
/// object-state ways open the first transfer and, at the next page, the next
/// window): the device fails one read-ahead request of the window, not covering the
/// reader's pages, every time. The reader's reads return `Ok` with the right bytes;
/// nothing is left busy; the failed transfer's pages are not resident; and once the
/// device recovers, reading there reads them (a retry, not a remembered error).
#[test]
fn a_read_ahead_error_outside_the_readers_pages_is_not_its_error() {
    for way in WAYS {
        let (disk, file, data) = contiguous(16 * TRANSFER, 19);
        // The second transfer: in the Sequential window from page 0, and in the window
        // the object's state starts at the marker (page 1).
        let failing = T..2 * T;
        disk.fail_blocks(sectors_of(&file, failing.clone()), genpager::Error::Io);
        let mut ahead = ReadAhead::new();
        ahead.set_advice(Advice::Sequential);
        for index in [0, 1, 2] {
            let got = try_page(&file, way, &mut ahead, index);
            assert_eq!(
                got.as_deref(),
                Ok(page_of(&data, index)),
                "{way:?}: page {index}"
            );
        }
        let failed = disk
            .log()
            .iter()
            .filter(|r| r.file_offset == (T * PAGE_SIZE) as u64)
            .count();
        assert!(
            failed >= 1,
            "{way:?}: the failing transfer was never read ahead"
        );
        assert_eq!(
            disk.stats().bytes_read,
            disk.log()
                .iter()
                .filter(|r| r.file_offset != (T * PAGE_SIZE) as u64)
                .map(|r| r.len as u64)
                .sum::<u64>(),
            "{way:?}: only the failing transfer's requests failed"
        );
        assert!(!any_busy(&file), "{way:?}");
        assert!(
            !any_resident(&file, failing.clone()),
            "{way:?}: failed pages resident"
        );
        // The device recovers: the pages are read again.
        disk.clear_faults();
        let before = disk.stats().requests;
        let got = try_page(&file, way, &mut ahead, T);
        assert_eq!(
            got.as_deref(),
            Ok(page_of(&data, T)),
            "{way:?}: after recovery"
        );
        assert!(
            disk.stats().requests > before,
            "{way:?}: nothing read again"
        );
        println!("{way:?}: a read-ahead error ({failed} failed requests) not reported");
    }
}

/// The device fails the reader's own pages, every time: the read ahead of them fails
/// quietly, then the reader's own read meets the error and reports it (`Io`); nothing
/// is left busy or resident there; once the device recovers, the same read succeeds.
#[test]
fn a_persistent_error_on_the_readers_pages_is_reported() {
    for way in WAYS {
        let (disk, file, data) = contiguous(16 * TRANSFER, 20);
        disk.fail_blocks(sectors_of(&file, 0..T), genpager::Error::Io);
        let mut ahead = ReadAhead::new();
        ahead.set_advice(Advice::Sequential);
        let got = try_page(&file, way, &mut ahead, 0);
        assert_eq!(got, Err(genpager::Error::Io), "{way:?}");
        assert!(!any_busy(&file), "{way:?}");
        assert!(!any_resident(&file, 0..T), "{way:?}: failed pages resident");
        let requests = disk.stats().requests;
        disk.clear_faults();
        let got = try_page(&file, way, &mut ahead, 0);
        assert_eq!(
            got.as_deref(),
            Ok(page_of(&data, 0)),
            "{way:?}: after recovery"
        );
        println!(
            "{way:?}: the reader's own error reported after {requests} requests, then retried"
        );
    }
}

/// The device fails once, on the request that covers the reader's own page (the
/// window's first transfer, which the reader's own fault reads along): a fault whose
/// read along fails tries its own pages alone, so the reader gets its page — on a disk
/// completing inline and on one completing on its own thread — and page 0 was read
/// twice (the failed request, then the retry). A persistent error on the reader's own
/// pages is reported (`a_persistent_error_on_the_readers_pages_is_reported`).
#[test]
fn a_transient_error_on_the_readers_own_transfer_is_retried_with_its_pages_alone() {
    for threaded in [false, true] {
        for way in WAYS {
            let what = format!("{way:?}, threaded disk: {threaded}");
            let data = pattern(16 * TRANSFER, 21);
            let disk = if threaded {
                MemDisk::threaded(disk_for(data.len()).sectors(), false)
            } else {
                disk_for(data.len())
            };
            let fs = genpager::testing::MemFs::new(
                disk.clone(),
                PAGE_SHIFT,
                genpager::testing::Layout::Contiguous,
            );
            let file = fs.create(&data).unwrap();
            file.set_max_transfer(TRANSFER);
            disk.fail_nth(1, genpager::Error::Io);
            let mut ahead = ReadAhead::new();
            ahead.set_advice(Advice::Sequential);
            let got = try_page(&file, way, &mut ahead, 0);
            assert_eq!(got.as_deref(), Ok(page_of(&data, 0)), "{what}");
            disk.quiesce();
            wait_until("pages unbusied", || !any_busy(&file));
            let log = disk.log();
            assert!(
                log.iter().filter(|r| r.file_offset == 0).count() == 2,
                "{what}: page 0 read twice (the failed read along, the retry): {:?}",
                blocks_and_lens(&log)
            );
        }
    }
}

/// A whole-file sequential reader whose read-ahead meets one failed request in the
/// middle of the file: every read returns `Ok` with the right bytes, the failed
/// transfer is read again by the reader, and nothing else twice. (The reader reads it
/// with its own one-page reads: a miss inside the window starts no read-ahead, so the
/// 4 MiB cost 80 requests, not 65.)
#[test]
fn a_sequential_reader_reads_through_a_failed_read_ahead_request() {
    for own in [false, true] {
        let size = 64 * TRANSFER;
        let (disk, file, data) = contiguous(size, 22);
        disk.fail_nth(5, genpager::Error::Io);
        let mut ahead = ReadAhead::new();
        let got = read_sequentially(&file, own.then_some(&mut ahead), 4 << 10);
        assert!(got == data, "own state: {own}");
        assert_eq!(
            disk.stats().bytes_read,
            size as u64,
            "own state: {own}: read twice"
        );
        assert!(!any_busy(&file));
        println!(
            "own state {own}: a failed read-ahead request mid-file: {} requests",
            disk.stats().requests
        );
    }
}

// ---- 8 and 9, the cost: a window cut short ---------------------------------------------

/// Pages a window meant to read and did not — the device failed their request, memory
/// refused them, a resident page cut their transfer short — are still pages a
/// sequential reader is about to read: it reads them in whole transfers, as it reads
/// the rest (a miss inside the window plans the rest of its transfer, which the
/// reader's own fault reads along), not one request per page until the next marker.
#[test]
fn a_window_cut_short_is_read_in_transfers_not_pages() {
    // A failed request: 4 transfers read with the largest window at once, the second
    // transfer's request failing once. Ideal: 4 + its retry.
    let (disk, file, data) = contiguous(4 * TRANSFER, 28);
    disk.fail_nth(2, genpager::Error::Io);
    let mut ahead = ReadAhead::new();
    ahead.set_advice(Advice::Sequential);
    assert!(read_sequentially(&file, Some(&mut ahead), 4 << 10) == data);
    let failed_request = disk.stats().requests;
    println!("a failed read-ahead request: {failed_request} requests for 4 transfers");

    // A resident page just inside a transfer: the window reads the page before it and
    // leaves the rest of the transfer. Ideal: 1 + 16 + 1 (the rest in one request).
    let (disk, file, data) = contiguous(16 * TRANSFER, 29);
    let fault = Fault::read((2 * T + 1) as u64 * P, 1).with_flags(genpager::GetFlags::NOREADAHEAD);
    drop(getpages(&file, fault).unwrap());
    assert!(read_sequentially(&file, None, 4 << 10) == data);
    let resident_page = disk.stats().requests;
    println!("a resident page in a transfer: {resident_page} requests for 16 transfers");

    // A cache as large as the largest window, the pages behind the reader freed.
    let memory = read_under_pressure(64 * TRANSFER, 8 * T, false);

    assert!(
        failed_request <= 4 + 1 + RAMP,
        "a failed request: {failed_request} requests"
    );
    assert!(
        resident_page <= 1 + 16 + 1 + RAMP,
        "a resident page: {resident_page} requests"
    );
    assert!(
        memory <= 2 * transfers(64 * TRANSFER),
        "NoMemory: {memory} requests"
    );
}

// ---- 10: truncation racing read-ahead -----------------------------------------------------

/// What readers racing a truncator know of the file: its bytes are the pattern below a
/// prefix that only shrinks, zero above it (nothing writes, and the filesystem frees
/// the blocks past each shrink).
struct Prefix {
    /// The lowest size a shrink has begun to set.
    started: std::sync::atomic::AtomicU64,
    /// The lowest size a shrink has finished setting, its blocks freed.
    done: std::sync::atomic::AtomicU64,
    stop: std::sync::atomic::AtomicBool,
}

/// Checks bytes `got` read at file offset `at` against the model, given the finished
/// shrinks' lowest size when the read began (`done`) and the begun shrinks' lowest
/// when it ended (`started`): a byte below `started` is the pattern's, a byte at or
/// above `done` is zero, and no pattern byte follows a zero one (each page's bytes
/// are from one instant, and pages are copied in order while the prefix only shrinks).
fn check_against_model(what: &str, data: &[u8], at: usize, got: &[u8], done: u64, started: u64) {
    assert!(
        at + got.len() <= data.len(),
        "{what}: {} bytes at {at:#x} past the end",
        got.len()
    );
    // The pattern has no zero byte: the first zero ends the file's bytes.
    let zero = got.iter().position(|&b| b == 0).unwrap_or(got.len());
    if let Some(x) = (0..zero).find(|&i| got[i] != data[at + i]) {
        panic!("{what}: byte {:#x} neither the file's nor zero", at + x);
    }
    if let Some(x) = (zero..got.len()).find(|&i| got[i] != 0) {
        panic!(
            "{what}: the file's byte at {:#x} after a zero at {:#x}",
            at + x,
            at + zero
        );
    }
    if zero > 0 {
        let last = (at + zero - 1) as u64;
        assert!(
            last < done,
            "{what}: stale byte at {last:#x}, past a finished shrink to {done:#x}"
        );
    }
    if zero < got.len() {
        let first = (at + zero) as u64;
        assert!(
            first >= started,
            "{what}: zero at {first:#x}, below every shrink begun ({started:#x})"
        );
    }
}

/// Readers — `read`, `read_with` with [`Advice::Sequential`] (the largest windows)
/// and one-page faults — read a file over and over while a truncator shrinks it (to
/// ever lower, unaligned sizes, its blocks freed past the new end) and grows it back,
/// on a disk completing out of order on its own thread. Nothing panics or hangs;
/// every byte read is the file's at some instant (zero past a shrink, never a stale
/// byte past one finished before the read began); afterwards no page past the end of
/// file is resident and the file reads back as the model.
#[test]
fn truncation_racing_read_ahead_keeps_reads_consistent() {
    use std::sync::atomic::Ordering::SeqCst;
    within_for(
        "truncation racing read-ahead",
        std::time::Duration::from_secs(20),
        || {
            let size = 64 * TRANSFER + 1234;
            let data = Arc::new(pattern(size, 23));
            assert!(data.iter().all(|&b| b != 0), "the pattern has no zero byte");
            let disk = MemDisk::threaded(disk_for(size).sectors(), true);
            let fs = genpager::testing::MemFs::new(
                disk.clone(),
                PAGE_SHIFT,
                genpager::testing::Layout::Contiguous,
            );
            let file = fs.create(&data).unwrap();
            file.set_max_transfer(TRANSFER);
            let model = Arc::new(Prefix {
                started: (size as u64).into(),
                done: (size as u64).into(),
                stop: false.into(),
            });

            let readers: Vec<_> = (0..3)
                .map(|kind| {
                    let (file, data, model) = (file.clone(), data.clone(), model.clone());
                    std::thread::spawn(move || {
                        let what = ["read", "read_with(Sequential)", "faults"][kind];
                        let mut ahead = ReadAhead::new();
                        ahead.set_advice(Advice::Sequential);
                        let mut buf = vec![0u8; [4 << 10, 16 << 10, PAGE_SIZE][kind]];
                        let (mut reads, mut checked) = (0u64, 0u64);
                        let mut offset = 0usize;
                        while !model.stop.load(SeqCst) {
                            let done = model.done.load(SeqCst);
                            let n = match kind {
                                0 => read(&file, offset as u64, &mut buf).unwrap(),
                                1 => read_with(&file, &mut ahead, offset as u64, &mut buf).unwrap(),
                                _ => match getpages(&file, Fault::read(offset as u64, 1)) {
                                    Ok(fetched) => {
                                        let pages = fetched.into_busy().unwrap();
                                        buf.copy_from_slice(pages.bytes(0));
                                        PAGE_SIZE.min(size - offset)
                                    }
                                    // The page is past the end of file now.
                                    Err(genpager::Error::Invalid) => 0,
                                    Err(e) => panic!("{what}: fault at {offset:#x}: {e:?}"),
                                },
                            };
                            let started = model.started.load(SeqCst);
                            check_against_model(what, &data, offset, &buf[..n], done, started);
                            reads += 1;
                            checked += n as u64;
                            offset = if n == 0 { 0 } else { offset + n };
                            if offset >= size {
                                offset = 0;
                            }
                        }
                        (what, reads, checked)
                    })
                })
                .collect();

            let cycles = 8u64;
            let step = size as u64 * 7 / 8 / (cycles + 1);
            let mut shrinks = 0;
            for cycle in 0..cycles {
                let to = size as u64 - (cycle + 1) * step - (cycle * 997) % P;
                model.started.fetch_min(to, SeqCst);
                genpager::setsize(&file, to).unwrap();
                file.free_blocks_past(to);
                model.done.fetch_min(to, SeqCst);
                shrinks += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
                // A shrink above the prefix: it frees pages (of zeroes) readers may be
                // reading ahead, and changes no byte.
                let above = (to + size as u64) / 2 + 77;
                genpager::setsize(&file, size as u64).unwrap();
                genpager::setsize(&file, above).unwrap();
                file.free_blocks_past(above);
                shrinks += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
                genpager::setsize(&file, size as u64).unwrap();
                // The page daemon takes the clean pages back, so that the readers read
                // ahead again while the next shrink comes.
                genpager::putpages(&file, 0, 0, genpager::PutFlags::FREE).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            // The last shrink stays.
            let last = size as u64 / 16 + 321;
            model.started.fetch_min(last, SeqCst);
            genpager::setsize(&file, last).unwrap();
            file.free_blocks_past(last);
            model.done.fetch_min(last, SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(10));
            model.stop.store(true, SeqCst);
            for reader in readers {
                let (what, reads, checked) = reader.join().unwrap();
                println!(
                    "{what}: {reads} reads, {checked} bytes checked against {shrinks} shrinks"
                );
                assert!(reads > 0);
            }
            disk.quiesce();
            wait_until("pages unbusied", || !any_busy(&file));
            let past: Vec<u64> = resident(&file)
                .into_iter()
                .filter(|&offset| offset >= round_page(last))
                .collect();
            assert!(
                past.is_empty(),
                "pages past the end of file resident: {past:x?}"
            );
            let mut buf = vec![0u8; size];
            let n = read(&file, 0, &mut buf).unwrap();
            assert_eq!(n as u64, last);
            assert!(buf[..n] == data[..n], "the file after the race");
            println!("truncation race: {} requests", disk.stats().requests);
        },
    );
}

/// A truncation (here its node lock, which `setsize` takes exclusively) gets in while
/// one reader streams through the file on a disk completing on its own thread: once
/// the truncation waits, the reader's next read waits behind it. Without writer
/// preference each of the reader's reads (its own faults hold the lock shared across
/// their I/O) took the lock again the moment it dropped it, before the woken writer
/// ran, and the writer waited while the reader completed thousands of reads (seconds,
/// on a loaded machine).
/// Counted in the reader's reads, not in time: a writer-preferring lock lets at most
/// the read in progress finish.
///
/// Known, not fixed: a writer-preferring node lock deadlocks a thread that holds a
/// fault's page and faults the same file again behind a reader asleep on that page
/// with the lock shared (`tests/review17.rs`); the fix is a fault that sleeps on busy
/// pages without the node lock.
#[test]
#[ignore = "KNOWN: the node lock is not writer-preferring (that deadlocks, see \
            tests/review17.rs): a streaming reader can keep setsize waiting"]
fn a_truncation_is_not_starved_by_a_streaming_reader() {
    use std::sync::atomic::Ordering::SeqCst;
    let size = 64 * TRANSFER;
    let data = pattern(size, 31);
    let disk = MemDisk::threaded(disk_for(size).sectors(), false);
    let fs = genpager::testing::MemFs::new(
        disk.clone(),
        PAGE_SHIFT,
        genpager::testing::Layout::Contiguous,
    );
    let file = fs.create(&data).unwrap();
    file.set_max_transfer(TRANSFER);
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (file, reads, stop) = (file.clone(), reads.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; PAGE_SIZE];
            let mut offset = 0u64;
            while !stop.load(SeqCst) {
                let n = read(&file, offset, &mut buf).unwrap();
                reads.fetch_add(1, SeqCst);
                offset += n as u64;
                if n == 0 || offset >= size as u64 {
                    offset = 0;
                }
                // The page daemon takes everything back: each read misses.
                genpager::putpages(&file, 0, 0, genpager::PutFlags::FREE).unwrap();
            }
        })
    };
    wait_until("the reader reads", || reads.load(SeqCst) > 100);
    let worst = within_for("the writer", std::time::Duration::from_secs(60), {
        let (file, reads) = (file.clone(), reads.clone());
        move || {
            let mut worst = 0;
            for _ in 0..10 {
                let before = reads.load(SeqCst);
                let node = file.object().node_lock().write();
                let during = reads.load(SeqCst) - before;
                drop(node);
                worst = worst.max(during);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            worst
        }
    });
    stop.store(true, SeqCst);
    reader.join().unwrap();
    println!("a writer waiting for the node lock: up to {worst} reads completed meanwhile");
    assert!(
        worst <= 8,
        "the writer waited while the reader completed {worst} reads"
    );
}

// ---- 11: timestamps -----------------------------------------------------------------------

/// The access times marked for reading pages `pages` of a fresh file the `way` way,
/// with read-ahead (the largest window, [`Advice::Sequential`], for the ways that take
/// advice) or without it (a reader's own state with [`Advice::Random`], or
/// `NOREADAHEAD` for a fault), and how many pages were read in all.
fn access_marks(way: Way, pages: &[usize], with_read_ahead: bool) -> (u64, usize) {
    let (disk, file, data) = contiguous(16 * TRANSFER, 24);
    let mut ahead = ReadAhead::new();
    ahead.set_advice(if with_read_ahead {
        Advice::Sequential
    } else {
        Advice::Random
    });
    for &index in pages {
        let offset = index as u64 * P;
        let bytes = match (way, with_read_ahead) {
            (Way::Read, true) => {
                let mut buf = vec![0u8; PAGE_SIZE];
                read(&file, offset, &mut buf).unwrap();
                buf
            }
            (Way::Read | Way::ReadWith, _) => {
                let mut buf = vec![0u8; PAGE_SIZE];
                read_with(&file, &mut ahead, offset, &mut buf).unwrap();
                buf
            }
            (Way::Fault, _) => {
                let mut fault = Fault::read(offset, 1);
                if !with_read_ahead {
                    fault = fault.with_flags(genpager::GetFlags::NOREADAHEAD);
                }
                getpages(&file, fault)
                    .unwrap()
                    .into_busy()
                    .unwrap()
                    .bytes(0)
                    .to_vec()
            }
            (Way::AroundObject | Way::AroundOwn, _) => {
                let own = matches!(way, Way::AroundOwn).then_some(&mut ahead);
                let advice = ahead_or_random(with_read_ahead);
                fault_around(&file, own, offset, advice)
                    .unwrap()
                    .center_bytes()
                    .to_vec()
            }
        };
        assert!(bytes == page_of(&data, index), "{way:?}: page {index}");
    }
    let hooks = file.hooks();
    assert_eq!(
        hooks.mark_update_modified, 0,
        "{way:?}: a read marked a modification"
    );
    let pages = resident(&file).len();
    assert_eq!(
        disk.stats().bytes_read,
        (pages * PAGE_SIZE) as u64,
        "{way:?}: pages read twice or dropped"
    );
    (hooks.mark_update_accessed, pages)
}

fn ahead_or_random(with_read_ahead: bool) -> Advice {
    if with_read_ahead {
        Advice::Sequential
    } else {
        Advice::Random
    }
}

/// Read-ahead marks no access time of its own: a reader's first access, which starts
/// a whole window (8 transfers with [`Advice::Sequential`], a transfer through the
/// object's state), marks what the same access marks without read-ahead; and reading
/// a file through, every access still marks the reader's own access time (at least
/// one per access), and no more than the same accesses without read-ahead.
#[test]
fn read_ahead_marks_no_access_time_of_its_own() {
    let sequential: Vec<usize> = (0..8 * T).collect();
    for way in WAYS {
        let (with, pages) = access_marks(way, &[0], true);
        let (without, _) = access_marks(way, &[0], false);
        println!(
            "{way:?}, first access: {with} access marks with read-ahead ({pages} pages read), {without} without"
        );
        assert!(pages > 1, "{way:?}: no read-ahead started");
        assert_eq!(with, without, "{way:?}: the first access");

        let (with, pages) = access_marks(way, &sequential, true);
        let (without, _) = access_marks(way, &sequential, false);
        println!(
            "{way:?}, {} accesses: {with} access marks with read-ahead ({pages} pages read), {without} without",
            sequential.len()
        );
        assert!(
            with >= sequential.len() as u64,
            "{way:?}: an access marked nothing"
        );
        assert!(
            with <= without,
            "{way:?}: {with} marks with read-ahead, {without} without"
        );
    }
}
