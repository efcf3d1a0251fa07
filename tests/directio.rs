//! Scenario tests for direct I/O, one or more per catalogue row D1–D8 (DESIGN.md §6),
//! plus the coherence cases with the page cache and device errors part-way.

mod common;

use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use common::*;
use genpager::cache::DefaultCache;
use genpager::directio::{
    AddressSpace, DirectFlags, Fallback, IoVec, Progress, Uio, Wired, directio,
};
use genpager::testing::{Direction, Layout, MemDisk, MemFile};
use genpager::{
    DirtyStatus, Error, ObjectFlags, PAGE_SIZE, PutFlags, VmObject, Vnode, putpages, read, write,
};

const P: u64 = PAGE_SIZE as u64;
const K64: usize = 64 * 1024;
/// The test files' maximum transfer, so the largest direct chunk: 64 KiB up to 16 KiB
/// pages.
const CHUNK: usize = TEST_MAX_TRANSFER;
/// [`CHUNK`] in sectors.
const CHUNK_SECTORS: u64 = CHUNK as u64 / 512;

fn uio(offset: u64, direction: Direction, buf: &mut [u8]) -> Uio<'_> {
    Uio::new(offset, direction, AddressSpace::User, vec![IoVec::new(buf)]).unwrap()
}

fn direct<V: Vnode>(file: &Arc<V>, uio: &mut Uio<'_>) -> genpager::Result<Progress> {
    directio(file, uio, DirectFlags::empty())
}

fn done(transferred: usize) -> Progress {
    Progress {
        transferred,
        fallback: None,
    }
}

fn stopped(transferred: usize, fallback: Fallback) -> Progress {
    Progress {
        transferred,
        fallback: Some(fallback),
    }
}

/// The disk's log as (direction, block, len).
fn requests(disk: &MemDisk) -> Vec<(Direction, u64, usize)> {
    disk.log()
        .iter()
        .map(|r| (r.direction, r.block, r.len))
        .collect()
}

fn sector(file: &MemFile, offset: u64) -> u64 {
    sector_of(file, offset).expect("mapped")
}

// ---- D1: only user memory ---------------------------------------------------------

#[test]
fn d01_kernel_memory_falls_back_untouched() {
    let data = pattern(16 * PAGE_SIZE, 1);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let mut kernel = Uio::new(
        0,
        Direction::Read,
        AddressSpace::Kernel,
        vec![IoVec::new(buf.get_mut())],
    )
    .unwrap();
    assert_eq!(
        direct(&file, &mut kernel),
        Ok(stopped(0, Fallback::KernelMemory))
    );
    assert_eq!((kernel.offset(), kernel.resid()), (0, 4 * PAGE_SIZE));
    assert!(disk.log().is_empty());
    assert_eq!(file.hooks().trans_begin, 0, "nothing entered");
    assert!(buf.get().iter().all(|&b| b == 0xEE));
}

#[test]
fn d01_user_memory_moves_directly_without_the_page_cache() {
    let data = pattern(16 * PAGE_SIZE, 2);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let mut user = uio(P, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(4 * PAGE_SIZE)));
    assert_eq!((user.offset(), user.resid()), (5 * P, 0));
    assert!(user.segments().is_empty());
    drop(user);
    assert_eq!(
        requests(&disk),
        [(Direction::Read, sector(&file, P), 4 * PAGE_SIZE)]
    );
    assert_eq!(buf.get(), &data[PAGE_SIZE..5 * PAGE_SIZE]);
    assert!(resident(&file).is_empty(), "no page was created");
    assert_eq!(file.hooks().trans_begin, file.hooks().trans_end);
}

#[test]
fn d01_uio_checks_its_segments() {
    let mut out = [0u8; 512];
    let data = [1u8; 512];
    let bad = Uio::new(
        0,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::readonly(&data)],
    );
    assert_eq!(
        bad.err(),
        Some(Error::Invalid),
        "a read must not write into read-only memory"
    );
    let mut ok = Uio::new(
        10,
        Direction::Write,
        AddressSpace::User,
        vec![IoVec::readonly(&data), IoVec::new(&mut out[..100])],
    )
    .unwrap();
    assert_eq!(ok.resid(), 612);
    assert_eq!(ok.advance(613), Err(Error::Invalid));
    ok.advance(600).unwrap();
    assert_eq!(
        (
            ok.offset(),
            ok.resid(),
            ok.segments().len(),
            ok.segments()[0].len()
        ),
        (610, 12, 1, 12)
    );
    assert_eq!(
        ok.segments()[0].as_ptr().as_ptr() as usize,
        out.as_ptr() as usize + 88
    );
    let overflow = Uio::new(
        u64::MAX - 10,
        Direction::Write,
        AddressSpace::User,
        vec![IoVec::readonly(&data)],
    );
    assert_eq!(overflow.err(), Some(Error::TooBig));
}

// ---- D2: mapped files fall back -----------------------------------------------------

#[test]
fn d02_mapped_file_falls_back_without_flushing() {
    let data = pattern(4 * PAGE_SIZE, 3);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    write(&file, P, &[0x77; PAGE_SIZE]).unwrap();
    disk.clear_log();
    file.object().lock().set_flags(ObjectFlags::MAPPED, true);
    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(stopped(0, Fallback::Mapped)));
    assert_eq!(user.resid(), 4 * PAGE_SIZE);
    assert!(disk.log().is_empty(), "no flush, no read");
    assert_eq!(page(&file, P).unwrap().1, DirtyStatus::Dirty);

    file.object().lock().set_flags(ObjectFlags::MAPPED, false);
    assert_eq!(direct(&file, &mut user), Ok(done(4 * PAGE_SIZE)));
    drop(user);
    assert_eq!(
        requests(&disk),
        [
            (Direction::Write, sector(&file, P), PAGE_SIZE),
            (Direction::Read, sector(&file, 0), 4 * PAGE_SIZE)
        ]
    );
    assert_eq!(&buf.get()[PAGE_SIZE..2 * PAGE_SIZE], &[0x77; PAGE_SIZE][..]);
}

// ---- D3: chunks, whole sectors, EOF ------------------------------------------------

#[test]
fn d03_chunks_are_at_most_the_max_transfer() {
    let len = 3 * CHUNK + 2 * PAGE_SIZE;
    let data = pattern(len, 4);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let mut buf = Buffer::aligned(len);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(len)));
    drop(user);
    let base = sector(&file, 0);
    assert_eq!(
        requests(&disk),
        [
            (Direction::Read, base, CHUNK),
            (Direction::Read, base + CHUNK_SECTORS, CHUNK),
            (Direction::Read, base + 2 * CHUNK_SECTORS, CHUNK),
            (Direction::Read, base + 3 * CHUNK_SECTORS, 2 * PAGE_SIZE),
        ]
    );
    assert_eq!(buf.get(), &data[..]);

    // A smaller maximum, for writes too.
    disk.clear_log();
    file.set_max_transfer(3 * PAGE_SIZE);
    let new = pattern(8 * PAGE_SIZE, 40);
    let mut src = Buffer::with(&new);
    let mut user = uio(0, Direction::Write, src.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(8 * PAGE_SIZE)));
    let lens: Vec<usize> = disk.log().iter().map(|r| r.len).collect();
    assert_eq!(lens, [3 * PAGE_SIZE, 3 * PAGE_SIZE, 2 * PAGE_SIZE]);
    assert_eq!(file.disk_contents()[..8 * PAGE_SIZE], new[..]);
}

#[test]
fn d03_short_segment_stops_and_the_caller_finishes_buffered() {
    let data = pattern(8 * PAGE_SIZE, 5);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let total = PAGE_SIZE + 700 + PAGE_SIZE;
    let mut buf = Buffer::aligned(total);
    let (first, second) = buf.get_mut().split_at_mut(PAGE_SIZE + 700);
    let mut user = Uio::new(
        0,
        Direction::Read,
        AddressSpace::User,
        vec![IoVec::new(&mut []), IoVec::new(first), IoVec::new(second)],
    )
    .unwrap();
    // The first segment goes in whole sectors; its last 188 bytes are not a sector.
    assert_eq!(
        direct(&file, &mut user),
        Ok(stopped(PAGE_SIZE + 512, Fallback::ShortSegment))
    );
    assert_eq!(
        (user.offset(), user.resid()),
        (PAGE_SIZE as u64 + 512, 188 + PAGE_SIZE)
    );
    assert_eq!(user.segments()[0].len(), 188);
    let at = user.offset();
    drop(user);
    assert_eq!(
        requests(&disk),
        [(Direction::Read, sector(&file, 0), PAGE_SIZE + 512)]
    );
    // The caller's buffered path does the rest.
    let rest = read(&file, at, &mut buf.get_mut()[PAGE_SIZE + 512..]).unwrap();
    assert_eq!(rest, 188 + PAGE_SIZE);
    assert_eq!(buf.get(), &data[..total]);
}

#[test]
fn d03_stops_before_eof_and_the_tail_goes_buffered() {
    // 100,000 bytes and a 100 KiB buffer with 64 KiB chunks.
    let size = CHUNK + 34_464;
    let data = pattern(size, 6);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    // The second chunk (36 KiB) would end past EOF.
    let mut buf = Buffer::aligned(CHUNK + 36 * 1024);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(
        direct(&file, &mut user),
        Ok(stopped(CHUNK, Fallback::PastEof))
    );
    assert_eq!((user.offset(), user.resid()), (CHUNK as u64, 36 * 1024));
    drop(user);
    assert_eq!(
        requests(&disk),
        [(Direction::Read, sector(&file, 0), CHUNK)]
    );
    assert!(resident(&file).is_empty());
    assert_eq!(
        read(&file, CHUNK as u64, &mut buf.get_mut()[CHUNK..]).unwrap(),
        size - CHUNK
    );
    assert_eq!(&buf.get()[..size], &data[..]);

    // A buffer of exactly the file size: whole sectors go directly, the last 160
    // bytes are a short segment.
    let mut exact = Buffer::aligned(size);
    let mut user = uio(0, Direction::Read, exact.get_mut());
    assert_eq!(
        direct(&file, &mut user),
        Ok(stopped(size - 160, Fallback::ShortSegment))
    );
    assert_eq!(user.resid(), 160);

    // Starting at or past EOF: nothing at all, and a write never extends the file.
    let mut src = Buffer::aligned(PAGE_SIZE);
    let mut past = uio(
        size.next_multiple_of(512) as u64,
        Direction::Write,
        src.get_mut(),
    );
    assert_eq!(direct(&file, &mut past), Ok(stopped(0, Fallback::PastEof)));
    assert_eq!(file.object().size(), size as u64);
}

// ---- D4: alignment ---------------------------------------------------------------

#[test]
fn d04_unaligned_offset_or_memory_falls_back() {
    let data = pattern(8 * PAGE_SIZE, 7);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let mut buf = Buffer::aligned(2 * PAGE_SIZE);
    let mut user = uio(100, Direction::Read, buf.get_mut());
    assert_eq!(
        direct(&file, &mut user),
        Ok(stopped(0, Fallback::UnalignedOffset))
    );
    assert_eq!(user.offset(), 100);

    let mut odd = Buffer::new(2 * PAGE_SIZE, 1, 0);
    let mut user = uio(0, Direction::Write, odd.get_mut());
    assert_eq!(
        direct(&file, &mut user),
        Ok(stopped(0, Fallback::UnalignedMemory))
    );
    assert_eq!(user.resid(), 2 * PAGE_SIZE);
    assert!(disk.log().is_empty());
    assert_eq!(file.disk_contents(), data);
}

#[test]
fn d04_sector_alignment_is_enough() {
    let data = pattern(8 * PAGE_SIZE, 8);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let mut buf = Buffer::new(2048, 512, 0);
    let mut user = uio(3 * 512, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(2048)));
    drop(user);
    assert_eq!(
        requests(&disk),
        [(Direction::Read, sector(&file, 0) + 3, 2048)]
    );
    assert_eq!(buf.get(), &data[1536..3584]);
}

// ---- D5: writes only over allocated blocks ------------------------------------------

#[test]
fn d05_write_over_a_hole_falls_back_and_buffered_fills_it() {
    let data = pattern(4 * PAGE_SIZE, 9);
    let (disk, file) = sparse_file(PAGE_SHIFT, &data, &[2]);
    let before = file.disk_contents();
    let new = pattern(4 * PAGE_SIZE, 90);
    let mut src = Buffer::with(&new);
    let mut user = uio(0, Direction::Write, src.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(stopped(0, Fallback::Hole)));
    assert!(
        disk.log().is_empty(),
        "no flush and no write before the hole check"
    );
    assert_eq!(file.disk_contents(), before);

    // Chunks before the hole still go directly.
    file.set_max_transfer(2 * PAGE_SIZE);
    assert_eq!(
        direct(&file, &mut user),
        Ok(stopped(2 * PAGE_SIZE, Fallback::Hole))
    );
    assert_eq!(
        requests(&disk),
        [(Direction::Write, sector(&file, 0), 2 * PAGE_SIZE)]
    );
    assert_eq!(user.offset(), 2 * P);
    drop(user);
    assert!(file.is_hole(2));
    write(&file, 2 * P, &new[2 * PAGE_SIZE..]).unwrap();
    putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO).unwrap();
    assert_eq!(file.disk_contents(), new);
}

#[test]
fn d05_read_over_a_hole_zero_fills_without_a_request() {
    let data = pattern(4 * PAGE_SIZE, 10);
    let (disk, file) = sparse_file(PAGE_SHIFT, &data, &[2]);
    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(4 * PAGE_SIZE)));
    drop(user);
    assert_eq!(
        requests(&disk),
        [
            (Direction::Read, sector(&file, 0), 2 * PAGE_SIZE),
            (Direction::Read, sector(&file, 3 * P), PAGE_SIZE)
        ]
    );
    assert_eq!(buf.get(), &file.disk_contents()[..]);
    assert!(
        buf.get()[2 * PAGE_SIZE..3 * PAGE_SIZE]
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn d05_bmap_error_is_returned_with_exact_progress() {
    let data = pattern(4 * PAGE_SIZE, 11);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Fragmented { run: 1 }, &data);
    file.fail_bmap(Some(2));
    let mut src = Buffer::with(&pattern(4 * PAGE_SIZE, 110));
    let mut user = uio(0, Direction::Write, src.get_mut());
    assert_eq!(
        direct(&file, &mut user),
        Err(Error::Io),
        "the allocation check fails"
    );
    assert_eq!(user.resid(), 4 * PAGE_SIZE);
    assert!(disk.log().is_empty());

    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Err(Error::Io));
    assert_eq!(
        (user.offset(), user.resid()),
        (2 * P, 2 * PAGE_SIZE),
        "the two blocks before it were read"
    );
    drop(user);
    assert_eq!(disk.log().len(), 2);
    assert_eq!(&buf.get()[..2 * PAGE_SIZE], &data[..2 * PAGE_SIZE]);
}

// ---- D6: flush (and invalidate) first; coherence with the page cache ----------------

#[test]
fn d06_direct_read_sees_buffered_writes() {
    let data = pattern(4 * PAGE_SIZE, 12);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    write(&file, P + 100, &[0x55; 300]).unwrap();
    disk.clear_log();
    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(4 * PAGE_SIZE)));
    drop(user);
    assert_eq!(
        requests(&disk),
        [
            (Direction::Write, sector(&file, P), PAGE_SIZE),
            (Direction::Read, sector(&file, 0), 4 * PAGE_SIZE)
        ]
    );
    let mut expect = data.clone();
    expect[PAGE_SIZE + 100..PAGE_SIZE + 400].fill(0x55);
    assert_eq!(buf.get(), &expect[..]);
    // A read only cleans: the page stays cached, now clean.
    assert_eq!(page(&file, P).map(|p| p.1), Some(DirtyStatus::Clean));
}

#[test]
fn d06_cached_read_after_a_direct_write_sees_the_new_data() {
    let data = pattern(4 * PAGE_SIZE, 13);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let mut out = vec![0; 4 * PAGE_SIZE];
    read(&file, 0, &mut out).unwrap();
    assert_eq!(resident(&file).len(), 4);
    let new = pattern(4 * PAGE_SIZE, 130);
    let mut src = Buffer::with(&new);
    disk.clear_log();
    let mut user = uio(0, Direction::Write, src.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(4 * PAGE_SIZE)));
    assert_eq!(
        requests(&disk),
        [(Direction::Write, sector(&file, 0), 4 * PAGE_SIZE)],
        "clean pages need no write"
    );
    assert!(resident(&file).is_empty(), "the stale pages were freed");
    read(&file, 0, &mut out).unwrap();
    assert_eq!(out, new, "no stale cached page");
    assert_eq!(
        disk.log().last().map(|r| r.direction),
        Some(Direction::Read)
    );
}

#[test]
fn d06_direct_write_lands_after_dirty_buffered_data() {
    let data = pattern(4 * PAGE_SIZE, 14);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    write(&file, 2 * P, &[0x66; 10]).unwrap();
    disk.clear_log();
    let new = pattern(4 * PAGE_SIZE, 140);
    let mut src = Buffer::with(&new);
    let mut user = uio(0, Direction::Write, src.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(4 * PAGE_SIZE)));
    assert_eq!(
        requests(&disk),
        [
            (Direction::Write, sector(&file, 2 * P), PAGE_SIZE),
            (Direction::Write, sector(&file, 0), 4 * PAGE_SIZE)
        ]
    );
    assert!(resident(&file).is_empty());
    assert_eq!(file.disk_contents(), new);
    assert_eq!(
        putpages(&file, 0, 0, PutFlags::CLEANIT | PutFlags::SYNCIO),
        Ok(())
    );
    assert_eq!(file.disk_contents(), new, "nothing stale written later");
}

// ---- D7: wire, do the I/O, unwire; device errors --------------------------------------

/// A host around a [`MemFile`] whose `wire` and `unwire` are recorded, can fail, and can
/// bounce the transfer through a buffer of its own.
struct Wiring {
    file: Arc<MemFile>,
    disk: MemDisk,
    events: Mutex<Vec<(&'static str, usize, usize, usize)>>,
    fail_wire: Mutex<Option<usize>>,
    bounce: Option<Mutex<Vec<u8>>>,
}

impl Wiring {
    fn new(file: Arc<MemFile>, disk: MemDisk, bounce: bool) -> Arc<Self> {
        Arc::new(Self {
            file,
            disk,
            events: Mutex::new(Vec::new()),
            fail_wire: Mutex::new(None),
            bounce: bounce.then(|| Mutex::new(vec![0; K64])),
        })
    }

    fn record(&self, what: &'static str, ptr: NonNull<u8>, len: usize) {
        self.events
            .lock()
            .unwrap()
            .push((what, ptr.as_ptr() as usize, len, self.disk.log().len()));
    }
}

impl Vnode for Wiring {
    type Cache = DefaultCache;
    type Map = MemFile;
    type Dev = MemDisk;

    fn object(&self) -> &VmObject<DefaultCache> {
        self.file.object()
    }
    fn block_map(&self) -> &MemFile {
        &self.file
    }
    fn device(&self) -> &MemDisk {
        self.file.device()
    }
    fn fs_bshift(&self) -> u32 {
        self.file.fs_bshift()
    }

    fn wire(&self, ptr: NonNull<u8>, len: usize, direction: Direction) -> genpager::Result<Wired> {
        let calls = self
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.0 == "wire")
            .count();
        if *self.fail_wire.lock().unwrap() == Some(calls) {
            return Err(Error::Host(14));
        }
        self.record("wire", ptr, len);
        let Some(bounce) = &self.bounce else {
            return Ok(Wired::IN_PLACE);
        };
        let mut bounce = bounce.lock().unwrap();
        assert!(len <= bounce.len());
        if direction == Direction::Write {
            // SAFETY: genpager passes the live, caller-owned range of the uio segment.
            bounce[..len].copy_from_slice(unsafe { std::slice::from_raw_parts(ptr.as_ptr(), len) });
        }
        // SAFETY: the bounce buffer outlives the transfer and is used by nothing else
        // until `unwire` (one transfer at a time in these tests).
        Ok(unsafe { Wired::at(NonNull::new(bounce.as_mut_ptr()).unwrap()) })
    }

    fn unwire(&self, ptr: NonNull<u8>, len: usize, direction: Direction, wired: Wired) {
        self.record("unwire", ptr, len);
        if let (Some(bounce), Some(alias)) = (&self.bounce, wired.alias()) {
            let bounce = bounce.lock().unwrap();
            assert_eq!(alias.as_ptr() as usize, bounce.as_ptr() as usize);
            if direction == Direction::Read {
                // SAFETY: as in `wire`; the caller's range is writable for a read.
                unsafe { std::ptr::copy_nonoverlapping(bounce.as_ptr(), ptr.as_ptr(), len) };
            }
        }
    }
}

#[test]
fn d07_memory_is_wired_around_each_chunk() {
    let data = pattern(2 * K64, 15);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let host = Wiring::new(file, disk.clone(), false);
    let mut buf = Buffer::aligned(2 * K64);
    let base = buf.get().as_ptr() as usize;
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&host, &mut user), Ok(done(2 * K64)));
    drop(user);
    // (event, address, length, requests submitted so far)
    assert_eq!(
        *host.events.lock().unwrap(),
        [
            ("wire", base, K64, 0),
            ("unwire", base, K64, 1),
            ("wire", base + K64, K64, 1),
            ("unwire", base + K64, K64, 2)
        ]
    );
    assert_eq!(buf.get(), &data[..]);
}

#[test]
fn d07_a_wiring_failure_ends_the_transfer() {
    let data = pattern(2 * K64, 16);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let host = Wiring::new(file, disk.clone(), false);
    *host.fail_wire.lock().unwrap() = Some(1);
    let mut buf = Buffer::aligned(2 * K64);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&host, &mut user), Err(Error::Host(14)));
    assert_eq!(user.offset(), K64 as u64);
    assert_eq!(disk.log().len(), 1);
    assert_eq!(
        host.events.lock().unwrap().len(),
        2,
        "the first chunk was wired and unwired"
    );
}

#[test]
fn d07_an_alias_from_the_host_is_what_the_device_sees() {
    let data = pattern(K64, 17);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let host = Wiring::new(file.clone(), disk.clone(), true);
    let mut buf = Buffer::aligned(K64);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&host, &mut user), Ok(done(K64)));
    drop(user);
    assert_eq!(
        buf.get(),
        &data[..],
        "read into the alias, copied back at unwire"
    );

    let new = pattern(K64, 170);
    let mut src = Buffer::with(&new);
    let mut user = uio(0, Direction::Write, src.get_mut());
    assert_eq!(direct(&host, &mut user), Ok(done(K64)));
    assert_eq!(file.disk_contents(), new);
}

#[test]
fn d07_device_error_mid_read_reports_exactly_what_completed() {
    let data = pattern(2 * K64, 18);
    // 4 KiB blocks whatever the page size, in runs of two.
    let (disk, file) = file_with(12, Layout::Fragmented { run: 2 }, &data);
    let mut buf = Buffer::aligned(2 * K64);
    // Each 64 KiB chunk is eight 8 KiB runs: fail the third run of the second chunk.
    disk.fail_nth(11, Error::Io);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Err(Error::Io));
    assert_eq!((user.offset(), user.resid()), (80 * 1024, 48 * 1024));
    drop(user);
    assert_eq!(disk.log().len(), 16, "the whole chunk was in flight");
    assert_eq!(&buf.get()[..80 * 1024], &data[..80 * 1024]);
    assert!(resident(&file).is_empty());
    assert_eq!(file.object().size(), data.len() as u64);
}

#[test]
fn d07_device_error_mid_write_changes_nothing_else_and_can_be_resumed() {
    let data = pattern(2 * K64, 19);
    // 4 KiB blocks whatever the page size, in runs of two (see above).
    let (disk, file) = file_with(12, Layout::Fragmented { run: 2 }, &data);
    let new = pattern(2 * K64, 190);
    let mut src = Buffer::with(&new);
    disk.fail_nth(11, Error::Io);
    let mut user = uio(0, Direction::Write, src.get_mut());
    assert_eq!(direct(&file, &mut user), Err(Error::Io));
    assert_eq!((user.offset(), user.resid()), (80 * 1024, 48 * 1024));
    let contents = file.disk_contents();
    assert_eq!(contents[..80 * 1024], new[..80 * 1024]);
    assert_eq!(
        contents[80 * 1024..88 * 1024],
        data[80 * 1024..88 * 1024],
        "the failed run is untouched"
    );
    {
        let state = file.object().read();
        assert_eq!(state.writes_in_flight(), 0);
        assert_eq!(
            state.pending_write_error(),
            None,
            "a direct write latches nothing"
        );
    }
    assert!(resident(&file).is_empty());
    assert_eq!(file.object().size(), data.len() as u64);
    // The caller may simply go on from where the uio says.
    assert_eq!(direct(&file, &mut user), Ok(done(48 * 1024)));
    assert_eq!(file.disk_contents(), new);
}

#[test]
fn d07_a_caller_holding_the_node_lock_says_so() {
    let data = pattern(4 * PAGE_SIZE, 22);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let node = file.object().node_lock().write();
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(
        directio(&file, &mut user, DirectFlags::GLOCKHELD),
        Ok(done(4 * PAGE_SIZE))
    );
    drop(node);
    drop(user);
    assert_eq!(disk.log().len(), 1);
    assert_eq!(buf.get(), &data[..]);
}

// ---- D8: journal ---------------------------------------------------------------------

#[test]
fn d08_journal_brackets_the_transfer() {
    let data = pattern(4 * PAGE_SIZE, 20);
    let (_disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    file.set_journal(true);
    write(&file, 0, &[1; 10]).unwrap();
    file.reset_hooks();
    let mut buf = Buffer::aligned(4 * PAGE_SIZE);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(direct(&file, &mut user), Ok(done(4 * PAGE_SIZE)));
    let hooks = file.hooks();
    assert_eq!(
        (hooks.journal_begin, hooks.journal_end),
        (1, 1),
        "the flush inside runs in the same journal"
    );
    assert_eq!(hooks.trans_begin, hooks.trans_end);

    // The caller already holds it.
    file.reset_hooks();
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(
        directio(&file, &mut user, DirectFlags::JOURNALLOCKED),
        Ok(done(4 * PAGE_SIZE))
    );
    assert_eq!(file.hooks().journal_begin, 0);
}

#[test]
fn d08_no_journal_for_early_fallbacks_and_balanced_on_error() {
    let data = pattern(2 * CHUNK, 21);
    let (disk, file) = file_with(PAGE_SHIFT, Layout::Contiguous, &data);
    file.set_journal(true);
    let mut buf = Buffer::aligned(2 * CHUNK);
    let mut kernel = Uio::new(
        0,
        Direction::Read,
        AddressSpace::Kernel,
        vec![IoVec::new(buf.get_mut())],
    )
    .unwrap();
    assert_eq!(
        direct(&file, &mut kernel).unwrap().fallback,
        Some(Fallback::KernelMemory)
    );
    file.object().lock().set_flags(ObjectFlags::MAPPED, true);
    let mut user = uio(0, Direction::Read, buf.get_mut());
    assert_eq!(
        direct(&file, &mut user).unwrap().fallback,
        Some(Fallback::Mapped)
    );
    assert_eq!(file.hooks().journal_begin, 0);

    file.object().lock().set_flags(ObjectFlags::MAPPED, false);
    disk.fail_nth(2, Error::Io);
    assert_eq!(direct(&file, &mut user), Err(Error::Io));
    assert_eq!(user.offset(), CHUNK as u64);
    let hooks = file.hooks();
    assert_eq!((hooks.journal_begin, hooks.journal_end), (1, 1));
    assert_eq!(hooks.trans_begin, hooks.trans_end);
}
