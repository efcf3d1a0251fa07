//! Direct I/O: moving file bytes straight between the device and the caller's
//! memory, bypassing the page cache (the reference's `genfs_directio` and
//! `genfs_do_directio`).
//!
//! The caller describes its buffer with a [`Uio`]: a file offset, a list of memory
//! segments ([`IoVec`]), the bytes still to move, the direction and whether the memory
//! belongs to a user address space. [`directio`] moves as much of it as it can in
//! chunks and stops at the first part it cannot do directly, leaving the uio advanced
//! by exactly what it transferred, so the caller finishes the rest through the page
//! cache ([`read`](crate::read) / [`write`](crate::write())) and may try direct I/O
//! again afterwards. [`Progress::fallback`] says why it stopped.
//!
//! Each chunk is at most [`Vnode::max_transfer`] bytes, rounded down to whole device
//! sectors, and must start on a sector boundary in the file and in memory and end at
//! or before the end of file. Before it moves, the cached pages of its range are
//! flushed (so a read sees what buffered writes left) and, for a write, freed, with
//! the node lock held exclusively until the transfer ends (so no stale page survives
//! it); a write goes ahead only over fully allocated blocks. The
//! caller's memory is wired through [`Vnode::wire`] for the transfer and unwired when
//! every request over it has completed. With a journal, the whole call runs inside one
//! journal transaction unless the caller already holds it.

use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

use bitflags::bitflags;

use crate::bmap::{Extent, Geometry, extents, is_allocated};
use crate::buf::{BioWait, Direction, Nest, Priority, raw_segment};
use crate::error::{Error, Result};
use crate::hooks::Strategy;
pub use crate::hooks::Wired;
use crate::object::ObjectFlags;
use crate::page::{round_page, trunc_page};
use crate::putpages::{PutFlags, TransactionHeld, flush};
use crate::stats::IoCounters;
use crate::sync::Arc;
use crate::sync::Wait;
use crate::transaction::Transaction;
use crate::vnode::{Vnode, geometry, max_transfer};

/// Whose memory a [`Uio`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressSpace {
    /// A user process's memory: eligible for direct I/O.
    User,
    /// Kernel memory: [`directio`] leaves it to the buffered path, as the reference
    /// does.
    Kernel,
}

/// One segment of caller memory (an `iovec`): where it starts and how long it is.
///
/// The lifetime ties the segment to the memory it borrows, so safe code cannot hand
/// genpager memory that goes away while a transfer uses it. Build one safely from a
/// slice ([`IoVec::new`] for either direction, [`IoVec::readonly`] for the data of a
/// write) or, for memory Rust does not own (a user address), with the unsafe
/// [`IoVec::from_raw_parts`].
pub struct IoVec<'a> {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    _memory: PhantomData<&'a mut [u8]>,
}

impl fmt::Debug for IoVec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IoVec({:p}+{}{})",
            self.ptr,
            self.len,
            if self.writable { "" } else { " ro" }
        )
    }
}

impl<'a> IoVec<'a> {
    /// A segment over `buf`, usable for reads (filled) and writes (read from).
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self {
            ptr: NonNull::from(&mut *buf).cast(),
            len: buf.len(),
            writable: true,
            _memory: PhantomData,
        }
    }

    /// A segment over `buf` that genpager only reads: valid in a [`Direction::Write`]
    /// uio only ([`Uio::new`] refuses it for a read).
    pub fn readonly(buf: &'a [u8]) -> Self {
        Self {
            ptr: NonNull::from(buf).cast(),
            len: buf.len(),
            writable: false,
            _memory: PhantomData,
        }
    }

    /// A segment over `len` bytes at `ptr` that Rust does not own, typically a user
    /// address, usable for reads and writes.
    ///
    /// # Safety
    ///
    /// For all of `'a`, the `len` bytes at `ptr` must stay allocated to the caller and
    /// must not be accessed by anything else while genpager uses the segment (during
    /// [`directio`]), and `ptr + len` must not wrap around the address space. Kernel
    /// memory ([`AddressSpace::Kernel`]) must be valid for reads and writes. User
    /// memory ([`AddressSpace::User`]) must be valid for reads and writes from the
    /// kernel once the host's [`Vnode::wire`] has wired it and returned
    /// [`Wired::IN_PLACE`], until the matching [`Vnode::unwire`]; a host whose user
    /// memory is reached through an alias returns that alias instead (see
    /// [`Wired::at`]).
    pub unsafe fn from_raw_parts(ptr: NonNull<u8>, len: usize) -> Self {
        Self {
            ptr,
            len,
            writable: true,
            _memory: PhantomData,
        }
    }

    /// The address of the segment's first byte.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// The segment's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the segment is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether genpager may write into the segment (a read's destination).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Drops the first `n <= len` bytes.
    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len);
        // `ptr + len` does not wrap (checked by `Uio::new`), so neither does this.
        if let Some(ptr) = NonNull::new(self.ptr.as_ptr().wrapping_add(n)) {
            self.ptr = ptr;
        }
        self.len = self.len.saturating_sub(n);
    }
}

/// A transfer between a file and caller memory (the reference's `struct uio`): the
/// file offset, the segments still to go, the residual byte count, the direction and
/// the [`AddressSpace`].
///
/// [`directio`] advances it by what it moved; the caller moves the rest another way
/// and records that with [`Uio::advance`].
#[derive(Debug)]
pub struct Uio<'a> {
    offset: u64,
    iov: Vec<IoVec<'a>>,
    next: usize,
    resid: usize,
    direction: Direction,
    space: AddressSpace,
}

impl<'a> Uio<'a> {
    /// A transfer of the bytes of `iov`, in order, to ([`Direction::Write`]) or from
    /// ([`Direction::Read`]) the file from `offset`.
    ///
    /// Errors: [`Error::Invalid`] when a read has a read-only segment or a segment
    /// wraps around the address space; [`Error::TooBig`] when the total length
    /// overflows or the transfer would end past `u64::MAX`.
    pub fn new(
        offset: u64,
        direction: Direction,
        space: AddressSpace,
        iov: Vec<IoVec<'a>>,
    ) -> Result<Self> {
        let mut resid = 0usize;
        for segment in &iov {
            if direction == Direction::Read && !segment.writable {
                return Err(Error::Invalid);
            }
            (segment.ptr.as_ptr() as usize)
                .checked_add(segment.len)
                .ok_or(Error::Invalid)?;
            resid = resid.checked_add(segment.len).ok_or(Error::TooBig)?;
        }
        offset.checked_add(resid as u64).ok_or(Error::TooBig)?;
        Ok(Self {
            offset,
            iov,
            next: 0,
            resid,
            direction,
            space,
        })
    }

    /// The file offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes still to transfer (the reference's `uio_resid`).
    pub fn resid(&self) -> usize {
        self.resid
    }

    /// Which way the data moves: [`Direction::Read`] fills the segments.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whose memory the segments are.
    pub fn space(&self) -> AddressSpace {
        self.space
    }

    /// The segments still to transfer, the first one trimmed to what is left of it.
    pub fn segments(&self) -> &[IoVec<'a>] {
        &self.iov[self.next..]
    }

    /// Records that the next `n` bytes were transferred (by the caller's buffered
    /// path, say): the offset grows, the residual shrinks and the segments move on.
    ///
    /// Errors: [`Error::Invalid`] when `n` exceeds [`Uio::resid`]; nothing changes.
    // Cannot overflow: `n <= resid` (checked), `offset + resid` fits (`Uio::new`),
    // `take <= left`, and `next` indexes a segment.
    #[allow(clippy::arithmetic_side_effects)]
    pub fn advance(&mut self, n: usize) -> Result {
        if n > self.resid {
            return Err(Error::Invalid);
        }
        let mut left = n;
        while left > 0 {
            let Some(segment) = self.iov.get_mut(self.next) else {
                debug_assert!(false, "residual exceeds the segments");
                break;
            };
            let take = left.min(segment.len);
            segment.consume(take);
            left -= take;
            if segment.len == 0 {
                self.next += 1;
            }
        }
        self.offset += n as u64;
        self.resid -= n;
        Ok(())
    }

    /// The first segment with bytes left, skipping empty ones.
    fn current(&mut self) -> Option<&IoVec<'a>> {
        while self.iov.get(self.next).is_some_and(IoVec::is_empty) {
            #[allow(clippy::arithmetic_side_effects)] // Cannot overflow: `next` indexes a segment.
            {
                self.next += 1;
            }
        }
        self.iov.get(self.next)
    }
}

bitflags! {
    /// Options of a [`directio`] call.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct DirectFlags: u32 {
        /// The caller already holds the journal: do not begin a journal transaction
        /// (the reference's `IO_JOURNALLOCKED`).
        const JOURNALLOCKED = 1 << 0;
        /// The caller already holds the node lock ([`VmObject::node_lock`](crate::VmObject::node_lock)),
        /// exclusively for a write, and so the mount transaction before it: the
        /// transfer takes neither.
        const GLOCKHELD = 1 << 1;
    }
}

/// Why [`directio`] stopped before the end of the uio: the caller moves the rest
/// through the page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// The memory is kernel memory (D1).
    KernelMemory,
    /// The file is mapped into some address space (D2).
    Mapped,
    /// The next segment holds less than one device sector (D3).
    ShortSegment,
    /// The next chunk would end past the end of file (D3).
    PastEof,
    /// The file offset is not sector aligned (D4).
    UnalignedOffset,
    /// The memory address is not sector aligned (D4).
    UnalignedMemory,
    /// A write would cover a hole: blocks must be allocated by the buffered path (D5).
    Hole,
}

/// What a [`directio`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Progress {
    /// Bytes moved directly; the uio was advanced by exactly this.
    pub transferred: usize,
    /// Why it stopped early, or `None` when the uio is done.
    pub fallback: Option<Fallback>,
}

/// Moves as much of `uio` as it can directly between `vnode`'s blocks and the
/// caller's memory, and advances `uio` by exactly what it moved (the reference's
/// `genfs_directio`).
///
/// It stops, returning `Ok` with the reason in [`Progress::fallback`], at the first
/// part it cannot do directly (see [`Fallback`]): kernel memory and mapped files at
/// once; otherwise at a segment shorter than a sector, a chunk reaching past the end of
/// file, an unaligned file offset or memory address, or a write over a hole. The caller
/// moves what is left through the page cache.
///
/// Each chunk (at most [`Vnode::max_transfer`] bytes, whole sectors) is preceded by a
/// synchronous flush of the cached pages of its range ([`PutFlags::CLEANIT`], and
/// [`PutFlags::FREE`] for a write), so direct reads see buffered writes and later
/// cached reads see direct writes. A read chunk moves with the node lock held shared,
/// so a truncation cannot free its blocks meanwhile; a write chunk holds it
/// exclusively from before its flush to the end of its transfer, so no fault caches
/// the range's old bytes and no buffered write dirties a page of it in between (either
/// would outlive the direct write). Both are skipped with [`DirectFlags::GLOCKHELD`];
/// the end of file is checked again under the lock. Lock order: mount transaction,
/// journal, node lock, as DESIGN.md §4 says; the flushes run inside this call's
/// transaction and do not enter it again.
///
/// Errors: [`Error::Dead`]; the transaction, journal, block map, flush and
/// [`Vnode::wire`] errors; the device's error. On error `uio` still says exactly how
/// far the transfer got: the chunks before, and within the failing chunk the requests
/// up to the first that failed. Requests of that chunk after the failed one may have
/// reached the device too (they were in flight together). No page is created and the
/// file size never changes.
pub fn directio<V: Vnode>(
    vnode: &Arc<V>,
    uio: &mut Uio<'_>,
    flags: DirectFlags,
) -> Result<Progress> {
    let progress = Progress {
        transferred: 0,
        fallback: None,
    };
    if uio.resid == 0 {
        return Ok(progress);
    }
    if let Some(stop) = call_fallback(&**vnode, uio)? {
        return Ok(progress.stopped(Some(stop)));
    }
    let geometry = geometry(&**vnode)?;
    let _transaction = enter_transaction(&**vnode, flags)?;
    log::trace!(
        "directio {:?} {:#x}+{:#x}",
        uio.direction,
        uio.offset,
        uio.resid
    );
    move_chunks(vnode, uio, geometry, flags, progress)
}

/// Why the whole call must stay buffered, checked before anything is taken: kernel
/// memory, or a mapped file. Errors: [`Error::Dead`].
fn call_fallback<V: Vnode>(vnode: &V, uio: &Uio<'_>) -> Result<Option<Fallback>> {
    if uio.space == AddressSpace::Kernel {
        return Ok(Some(Fallback::KernelMemory));
    }
    if vnode.is_dead() {
        return Err(Error::Dead);
    }
    // With the file mapped, a flush could not keep pages from reappearing through the
    // mappings (and the fault path may hold pages of this very buffer): stay buffered.
    if vnode.object().read().flags().contains(ObjectFlags::MAPPED) {
        return Ok(Some(Fallback::Mapped));
    }
    Ok(None)
}

/// Enters the mount transaction, and the journal unless the caller holds it, for the
/// whole call. A caller holding the node lock ([`DirectFlags::GLOCKHELD`]) holds the
/// transaction too (it comes first): then nothing is entered.
fn enter_transaction<V: Vnode>(
    vnode: &V,
    flags: DirectFlags,
) -> Result<Option<Transaction<'_, V>>> {
    if flags.contains(DirectFlags::GLOCKHELD) {
        return Ok(None);
    }
    let mut transaction = Transaction::begin(vnode, Wait::Sleep)?;
    if !flags.contains(DirectFlags::JOURNALLOCKED) {
        transaction.begin_journal()?;
    }
    Ok(Some(transaction))
}

/// Moves `uio` chunk by chunk ([`Chunk::next`], [`Chunk::run`]), advancing it and
/// `progress` by what each moved, until it is done, a chunk cannot move directly (the
/// fallback) or one fails (the error).
fn move_chunks<V: Vnode>(
    vnode: &Arc<V>,
    uio: &mut Uio<'_>,
    geometry: Geometry,
    flags: DirectFlags,
    mut progress: Progress,
) -> Result<Progress> {
    while uio.resid > 0 {
        let chunk = match Chunk::next(vnode, uio, geometry, flags) {
            Ok(chunk) => chunk,
            Err(stop) => return Ok(progress.stopped(stop)),
        };
        let offset = chunk.offset;
        let (done, result) = chunk.run();
        let advanced = uio.advance(done);
        debug_assert!(advanced.is_ok());
        // Never saturates: what moved is at most the uio's residual, a `usize`.
        progress.transferred = progress.transferred.saturating_add(done);
        match result {
            Ok(None) => {}
            Ok(Some(stop)) => {
                log::trace!("directio: {stop:?} at {offset:#x}, falling back");
                return Ok(progress.stopped(Some(stop)));
            }
            Err(error) => {
                log::trace!("directio: chunk at {offset:#x} failed after {done:#x} bytes: {error}");
                return Err(error);
            }
        }
    }
    Ok(progress)
}

impl Progress {
    /// The progress of a call that stops here, for `fallback` (`None`: for no reason
    /// that the caller need act on).
    fn stopped(self, fallback: Option<Fallback>) -> Self {
        Self { fallback, ..self }
    }
}

/// One chunk of a direct transfer (the reference's `genfs_do_directio`).
struct Chunk<'a, V: Vnode> {
    vnode: &'a Arc<V>,
    geometry: Geometry,
    ptr: NonNull<u8>,
    len: usize,
    offset: u64,
    direction: Direction,
    flags: DirectFlags,
}

/// A piece of a chunk in flight: zero-filled at once (a hole read) or one request.
enum Piece {
    Zeroed(usize),
    Request(usize, BioWait),
}

impl<'a, V: Vnode> Chunk<'a, V> {
    /// The next chunk of `uio`: its current segment, at most [`Vnode::max_transfer`]
    /// bytes of it rounded down to whole sectors. `Err` says why it cannot move
    /// directly (checked again under the node lock); `Err(None)` that no segment is
    /// left, which the residual rules out.
    fn next(
        vnode: &'a Arc<V>,
        uio: &mut Uio<'_>,
        geometry: Geometry,
        flags: DirectFlags,
    ) -> core::result::Result<Self, Option<Fallback>> {
        let direction = uio.direction;
        let offset = uio.offset;
        let Some(segment) = uio.current() else {
            debug_assert!(false, "residual exceeds the segments");
            return Err(None);
        };
        let (ptr, seg_len) = (segment.ptr, segment.len);
        let sector_mask = geometry.sector_mask();
        let len = seg_len.min(max_transfer(&**vnode)) & !(sector_mask as usize);
        let stop = if len == 0 {
            Some(Fallback::ShortSegment)
        } else if offset.saturating_add(len as u64) > vnode.object().size() {
            Some(Fallback::PastEof)
        } else if offset & sector_mask != 0 {
            Some(Fallback::UnalignedOffset)
        } else if ptr.as_ptr() as usize as u64 & sector_mask != 0 {
            Some(Fallback::UnalignedMemory)
        } else {
            None
        };
        if let Some(stop) = stop {
            log::trace!("directio: {stop:?} at {offset:#x} (segment {seg_len:#x}), falling back");
            return Err(Some(stop));
        }
        Ok(Self {
            vnode,
            geometry,
            ptr,
            len,
            offset,
            direction,
            flags,
        })
    }

    /// The file offset just past the chunk.
    fn end(&self) -> u64 {
        // Cannot overflow: the chunk is a prefix of the uio's residual, and `Uio::new`
        // checked that `offset + resid` fits.
        #[allow(clippy::arithmetic_side_effects)]
        let end = self.offset + self.len as u64;
        end
    }

    /// Checks, flushes, wires, transfers and unwires. Returns the bytes moved (a
    /// prefix of the chunk) and how it ended: `Ok(None)` when all of it moved.
    fn run(&self) -> (usize, Result<Option<Fallback>>) {
        let vnode = &**self.vnode;
        let object = vnode.object();
        let end = self.end();
        let writing = self.direction == Direction::Write;
        let range = trunc_page(self.offset)..round_page(end);
        // A write holds the node lock exclusively from before its flush until its
        // transfer is done: no fault can cache the old bytes of the range meanwhile,
        // and no buffered write can dirty a page of it that the invalidation below
        // would discard or a later flush would write over the direct write's bytes.
        let _node = (writing && !self.flags.contains(DirectFlags::GLOCKHELD))
            .then(|| object.node_lock().write());
        if writing {
            match is_allocated(vnode.block_map(), self.geometry, self.offset, end) {
                Ok(true) => {}
                Ok(false) => return (0, Ok(Some(Fallback::Hole))),
                Err(error) => return (0, Err(error)),
            }
        }
        let mut flags = PutFlags::CLEANIT | PutFlags::SYNCIO;
        flags.set(PutFlags::FREE, writing);
        let held = TransactionHeld::ByCaller;
        if let Err(error) = flush(self.vnode, range.start, range.end, flags, held) {
            return (0, Err(error.into()));
        }
        if writing {
            // The flush skips pages other threads hold busy (the syncer's write in
            // flight, a read-ahead): wait for them and free them, or they outlive the
            // write as stale copies.
            object.free_range_waiting(range);
        }
        let wired = match vnode.wire(self.ptr, self.len, self.direction) {
            Ok(wired) => wired,
            Err(error) => return (0, Err(error)),
        };
        let base = wired.alias().unwrap_or(self.ptr);
        let (done, result) = self.transfer(base);
        vnode.unwire(self.ptr, self.len, self.direction, wired);
        (done, result)
    }

    /// Moves the chunk between the device and the memory at `base`: one request per
    /// contiguous run of blocks, holes zero-filled for a read ([`start_pieces`]). Every
    /// request is waited for before this returns, whatever happens, since they use the
    /// caller's memory ([`wait_for`]).
    ///
    /// A read holds the node lock shared throughout (a write already holds it
    /// exclusively), so a truncation cannot free the blocks under the transfer; what
    /// changed since the unlocked checks (the size, a hole under a write) ends the
    /// chunk with a fallback.
    ///
    /// [`start_pieces`]: Self::start_pieces
    fn transfer(&self, base: NonNull<u8>) -> (usize, Result<Option<Fallback>>) {
        let object = self.vnode.object();
        let writing = self.direction == Direction::Write;
        let _node = (!writing && !self.flags.contains(DirectFlags::GLOCKHELD))
            .then(|| object.node_lock().read());
        if self.end() > object.size() {
            return (0, Ok(Some(Fallback::PastEof)));
        }
        let write = writing.then(|| object.lock().start_write());
        let (pieces, built) = self.start_pieces(base);
        let (done, failed) = wait_for(pieces, object.io(), writing);
        if let Some(write) = write {
            let wake = object.lock().end_write(&write);
            object.wake_if(wake);
        }
        match failed {
            Some(error) => (done, Err(error)),
            None => (done, built),
        }
    }

    /// Starts the pieces of the chunk in file order, walking the block map once
    /// ([`start_piece`](Self::start_piece)). Returns those started and how the walk
    /// ended: `Ok(Some(Hole))` at a hole under a write, an error from the block map or
    /// an allocation (the pieces before it started all the same).
    fn start_pieces(&self, base: NonNull<u8>) -> (Vec<Piece>, Result<Option<Fallback>>) {
        let vnode = &**self.vnode;
        let mut pieces: Vec<Piece> = Vec::new();
        for extent in extents(vnode.block_map(), self.geometry, self.offset, self.end()) {
            let piece = extent.and_then(|extent| {
                pieces.try_reserve(1).map_err(|_| Error::NoMemory)?;
                let at = self.memory_at(base, extent.offset)?;
                self.start_piece(&extent, at)
            });
            match piece {
                Ok(Some(piece)) => pieces.push(piece),
                Ok(None) => return (pieces, Ok(Some(Fallback::Hole))),
                Err(error) => return (pieces, Err(error)),
            }
        }
        (pieces, Ok(None))
    }

    /// Where the chunk's byte at file `offset` (inside the chunk) is in the memory at
    /// `base`.
    fn memory_at(&self, base: NonNull<u8>, offset: u64) -> Result<NonNull<u8>> {
        // Cannot overflow: the walk's extents start at or after `self.offset`.
        #[allow(clippy::arithmetic_side_effects)]
        let within = (offset - self.offset) as usize;
        // Inside the wired range, which does not wrap: never null.
        NonNull::new(base.as_ptr().wrapping_add(within)).ok_or(Error::Invalid)
    }

    /// Starts the piece over `extent`, whose bytes are at `at` in memory: a hole is
    /// zero-filled for a read, a mapped run gets one request
    /// ([`submit_request`](Self::submit_request)). `Ok(None)`: a hole under a write,
    /// appeared since the allocation check, where no request may go.
    fn start_piece(&self, extent: &Extent, at: NonNull<u8>) -> Result<Option<Piece>> {
        let len = extent.len as usize;
        match extent.block {
            None if self.direction == Direction::Write => Ok(None),
            None => {
                self.vnode.object().io().hole(extent.len);
                // SAFETY: `at .. at + len` lies inside the `self.len` bytes at the
                // transfer's `base` (`at` is `memory_at` of an extent of the walk over
                // the chunk), which the uio's segment (or the host's alias, per
                // `Wired::at`) makes valid for writes in a read transfer (a read uio
                // holds only writable segments) and which nothing else touches until
                // `directio` returns.
                unsafe { at.as_ptr().write_bytes(0, len) };
                Ok(Some(Piece::Zeroed(len)))
            }
            Some(block) => self.submit_request(block, extent, at).map(Some),
        }
    }

    /// Submits one synchronous request moving `extent`, mapped at device `block`,
    /// to or from the memory at `at`.
    fn submit_request(&self, block: u64, extent: &Extent, at: NonNull<u8>) -> Result<Piece> {
        let len = extent.len as usize;
        let mut segments = Vec::new();
        segments.try_reserve_exact(1).map_err(|_| Error::NoMemory)?;
        segments.push(raw_segment(at, len));
        let (mut nest, waiter) = Nest::synchronous(len, self.direction, Priority::TimeCritical)?;
        log::trace!(
            "directio: {:?} {:#x}+{len:#x} at block {block:#x}",
            self.direction,
            extent.offset
        );
        let request = nest.request(block, extent.offset, segments)?;
        let writing = self.direction == Direction::Write;
        self.vnode.object().io().direct(request.len(), writing);
        self.vnode.device().submit(request);
        nest.finish(0, Ok(()));
        Ok(Piece::Request(len, waiter))
    }
}

/// Waits for every piece of a chunk (they use the caller's memory), counting each
/// failed request in `io` (as a write if `writing`). Returns the bytes the pieces
/// before the first failure moved, and that failure.
fn wait_for(pieces: Vec<Piece>, io: &IoCounters, writing: bool) -> (usize, Option<Error>) {
    let mut done = 0;
    let mut failed = None;
    for piece in pieces {
        let (len, result) = match piece {
            Piece::Zeroed(len) => (len, Ok(())),
            Piece::Request(len, waiter) => (len, waiter.wait().result),
        };
        match result {
            // Cannot overflow: the pieces are disjoint parts of the chunk.
            #[allow(clippy::arithmetic_side_effects)]
            Ok(()) if failed.is_none() => done += len,
            Ok(()) => {}
            Err(error) => {
                if writing {
                    io.write_error();
                } else {
                    io.read_error();
                }
                failed.get_or_insert(error);
            }
        }
    }
    (done, failed)
}
