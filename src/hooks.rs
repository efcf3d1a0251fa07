//! The host hooks below the object: [`BlockMap`], [`Strategy`], [`PageCache`] and
//! [`ByteIo`], with the types they speak. The fourth hook, [`Vnode`](crate::Vnode),
//! names the object, so it lives above it, in `vnode.rs`.
//!
//! A kernel implements these and genpager does the rest. Everything the reference
//! pager reaches for beyond them (timestamps, mount transactions, the journal, the
//! syncer work list, "am I the page daemon", preemption points, MMU bits) is a
//! defaulted method here, so a toy host implements only the required ones.

use core::ops::Range;
use core::ptr::NonNull;

use bitflags::bitflags;

use crate::buf::IoRequest;
use crate::error::{Error, Result};
use crate::memory::Memory;
use crate::page::{DirtyStatus, PAGE_SIZE, Page, PageCounts, PageQueue, Tag};

/// The largest file size `map` allows: its [`BlockMap::max_size`], at most
/// [`MAX_FILE_SIZE`].
pub(crate) fn max_file_size<M: BlockMap + ?Sized>(map: &M) -> u64 {
    map.max_size().min(MAX_FILE_SIZE)
}

/// The reference's MAXPHYS: the default largest single device transfer, 64 KiB.
pub const DEFAULT_MAX_TRANSFER: usize = 64 * 1024;

/// The device block size genpager counts device addresses in (the reference's
/// DEV_BSIZE), as a shift: 512-byte sectors.
pub const DEV_BSHIFT: u32 = 9;

/// No file is larger than this (the largest `off_t`, rounded down to a 1 MiB block so
/// that whole blocks and pages around any offset below it are addressable). Offsets,
/// sizes and request ends beyond a file's [`BlockMap::max_size`], which is at most
/// this, are refused with [`Error::TooBig`].
pub const MAX_FILE_SIZE: u64 = (i64::MAX as u64) & !((1 << 20) - 1);

/// What kind of file a vnode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum VnodeKind {
    /// A regular file.
    #[default]
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A block device: its blocks are device sectors.
    BlockDevice,
}

bitflags! {
    /// Mount options that change what the pager does.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct MountFlags: u32 {
        /// Do not update access times.
        const NO_ATIME = 1 << 0;
        /// Do not update timestamps of block devices.
        const NO_DEV_MTIME = 1 << 1;
    }
}

bitflags! {
    /// Which timestamps a fault or a flush asks the host to update.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct Update: u32 {
        /// The access time.
        const ACCESSED = 1 << 0;
        /// The modification time.
        const MODIFIED = 1 << 1;
    }
}

/// Which end of file [`BlockMap::size`] is asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SizeKind {
    /// How far the backing store holds data (reads past it are zero-filled).
    Disk,
    /// How far pages may exist in memory.
    Memory,
}

/// Where one logical filesystem block lives, as [`BlockMap::bmap`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// The first device block (in 512-byte units) of the logical block, or `None`
    /// for a hole: a block with no storage, which reads as zeroes.
    pub block: Option<u64>,
    /// How many *following* logical blocks continue this one: physically contiguous
    /// blocks for a mapped block, further hole blocks for a hole. Zero is always
    /// correct; a larger run lets the pager issue fewer, larger requests.
    pub run: u64,
}

impl Mapping {
    /// A mapped block at `block` with `run` contiguous successors.
    pub const fn mapped(block: u64, run: u64) -> Self {
        Self {
            block: Some(block),
            run,
        }
    }

    /// A hole of `1 + run` blocks.
    pub const fn hole(run: u64) -> Self {
        Self { block: None, run }
    }
}

/// The access a fault asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A read fault or read(2).
    Read,
    /// A write fault or write(2): holes are allocated, pages start dirty tracking.
    Write,
}

/// How a page may still be mapped after [`PageCache::protect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protection {
    /// Remove every mapping of the page.
    None,
    /// Keep mappings but make them read-only, so the next write faults.
    ReadOnly,
}

/// The filesystem's view of one file's blocks: the reference's `VOP_BMAP`,
/// `GOP_ALLOC`, `GOP_PUTRANGE` and `GOP_SIZE`.
///
/// Every method but [`BlockMap::size`] may sleep and is called with no genpager spin
/// lock held (the node lock may be held: exclusively when blocks may be allocated).
/// `size` is called under the object lock, as the reference calls `GOP_SIZE`, and must
/// not sleep.
pub trait BlockMap: Send + Sync {
    /// Maps logical block `lbn` (in filesystem blocks of `1 << fs_bshift` bytes) to
    /// the device.
    ///
    /// Returns the device block of `lbn` or a hole, and the run of following blocks
    /// that continue it ([`Mapping::run`]). An error aborts the I/O being built: a
    /// read frees the pages it allocated, a write leaves its pages dirty.
    fn bmap(&self, lbn: u64) -> Result<Mapping>;

    /// Allocates backing blocks for every hole in `offset..offset + len` (a write
    /// fault over a hole). Called with the node lock held exclusively and the pages of
    /// the range busy. On error nothing may be half-allocated in a way the next
    /// `bmap` would misreport. The default refuses: a read-only filesystem.
    fn alloc(&self, offset: u64, len: u64) -> Result {
        let _ = (offset, len);
        Err(Error::ReadOnly)
    }

    /// The byte range a write cluster around `offset` must stay inside (the
    /// reference's `GOP_PUTRANGE`), or `None` for no constraint beyond the maximum
    /// transfer. Log-structured filesystems use this to keep clusters in a segment.
    fn putrange(&self, offset: u64) -> Option<Range<u64>> {
        let _ = offset;
        None
    }

    /// The largest size the file can have: the end of the last byte the block map can
    /// address. Writes, faults and `setsize` past it fail with [`Error::TooBig`]. The
    /// default is [`MAX_FILE_SIZE`]; a smaller value than that is used as given.
    fn max_size(&self) -> u64 {
        MAX_FILE_SIZE
    }

    /// Where the end of file `size` falls for `kind` (the reference's `GOP_SIZE`).
    /// The default is `size` for both: memory EOF and disk EOF are the file size.
    /// Called under the object lock: must not sleep or take that lock (it is a
    /// writer-preferring spin lock: `VmObject::size` here could wait forever).
    fn size(&self, size: u64, kind: SizeKind) -> u64 {
        let _ = kind;
        size
    }
}

/// The block device: takes a request and completes it exactly once.
pub trait Strategy: Send + Sync {
    /// Starts `request`.
    ///
    /// The device must eventually call [`IoRequest::complete`] exactly once (the
    /// type guarantees at most once: `complete` consumes the request). It may do so
    /// before `submit` returns, or later on another thread. It may do so in an
    /// interrupt handler only if the kernel registered an
    /// [`Interrupts`](crate::sync::Interrupts) hook (so no genpager spin lock is held
    /// by the code it interrupts) and its [`Scheduler::wake`](crate::sync::Scheduler)
    /// is interrupt-safe; without an `Interrupts` hook, completion must run in thread
    /// context. Until then the request's segments are the device's to read (writes) or fill
    /// (reads); afterwards it must not touch them.
    ///
    /// Completing never allocates or frees heap memory and never drops a vnode, so it
    /// is fit for an interrupt handler. What it leaves behind (finished request groups,
    /// the vnode references of asynchronous writes and read-ahead) is freed by
    /// [`reap_completions`](crate::reap_completions), which the kernel calls from a
    /// thread that holds nothing (a worker woken after interrupts, the idle loop);
    /// genpager never calls it itself.
    fn submit(&self, request: IoRequest);
}

/// The resident pages of one object, keyed by byte offset.
///
/// The crate ships [`DefaultCache`](crate::cache::DefaultCache); a kernel with its own
/// page allocator implements this instead. Every method is called with the object lock
/// held, so implementations need no locking of their own and must not sleep.
///
/// An I/O completion ([`IoRequest::complete`]) settles its pages through this trait,
/// possibly in interrupt context: [`PageCache::lookup_mut`], [`PageCache::free`],
/// [`PageCache::set_dirty`], [`PageCache::set_writeback_range`] (and what its default
/// calls) and [`PageCache::set_queue`] — the calls that unbusy, requeue and free a page
/// — must not sleep, allocate or free heap memory there. Reserve at
/// [`PageCache::alloc`] whatever freeing a page will need (`DefaultCache` keeps room in
/// its free lists for every slot and index node it ever made), and keep freed frames
/// for reuse rather than returning them to the heap.
///
/// # Implementation safety
///
/// genpager reads and writes page bytes through [`Page::frame`] without the object
/// lock while it owns the page busy, and hands those pointers to the [`Strategy`].
/// An implementation must therefore guarantee:
/// - a page's frame points to `PAGE_SIZE` writable, initialized bytes (any values: a
///   recycled frame need not be zeroed), aligned to `PAGE_SIZE`, used for nothing
///   else while the page is resident;
/// - the frame stays valid, and the `Page` keeps the same frame, until
///   [`PageCache::free`] is called for that offset (genpager never frees a busy page
///   it does not own);
/// - lookups return the page stored at exactly that offset;
/// - [`PageCache::is_writable_mapped`] is `true` for every page some mapping can store
///   to without faulting, and [`PageCache::protect`] with [`Protection::ReadOnly`]
///   (or [`Protection::None`]) makes it `false` until the host maps the page writable
///   again, which a host does only from a write fault's pages or under the object
///   lock held exclusively. genpager forms `&[u8]`/`&mut [u8]` over a page's bytes
///   (in [`BusyPages`](crate::BusyPages), [`ResidentPages`](crate::ResidentPages) and
///   its own copies) only while no mapping can store to them: on real hardware
///   another CPU can store through a writable mapping at any time, whatever locks
///   genpager holds, so it write-protects a page before handing out its bytes.
pub unsafe trait PageCache: Send + Sync {
    /// The page at `offset`, if resident.
    fn lookup(&self, offset: u64) -> Option<&Page>;
    /// The page at `offset` for changing its flags, if resident.
    fn lookup_mut(&mut self, offset: u64) -> Option<&mut Page>;
    /// The resident pages with offsets in `range`, in ascending offset order.
    fn range(&self, range: Range<u64>) -> impl Iterator<Item = &Page>;
    /// Makes a new page resident at `offset` (none may be there) and returns it in
    /// the state [`Page::new`] gives: busy, `FAKE`, clean. Its bytes are unspecified.
    /// Fails with [`Error::NoMemory`] when no frame can be had; must not sleep.
    fn alloc(&mut self, offset: u64) -> Result<&mut Page>;
    /// Removes the page at `offset` and releases its frame and tags. May run in
    /// interrupt context (a write completion freeing a released page): must not sleep,
    /// allocate or free heap memory.
    fn free(&mut self, offset: u64);
    /// Sets the dirty status of the page at `offset` and its [`Tag::Dirty`] tag
    /// (tagged exactly when the status is not clean).
    fn set_dirty(&mut self, offset: u64, status: DirtyStatus);
    /// Sets or clears the [`Tag::Writeback`] tag of the page at `offset`.
    fn set_writeback(&mut self, offset: u64, writeback: bool);
    /// Sets or clears the [`Tag::Writeback`] tag of every resident page in `range`
    /// (page aligned): the pages of one write cluster as it starts and completes.
    ///
    /// The default calls [`PageCache::set_writeback`] for each page; a cache that keeps
    /// tags in bitmaps can change many pages with one word.
    fn set_writeback_range(&mut self, range: Range<u64>, writeback: bool) {
        for offset in range.step_by(PAGE_SIZE) {
            self.set_writeback(offset, writeback);
        }
    }
    /// The lowest offset `>= from` of a page carrying `tag`, in O(log n) or better.
    fn next_tagged(&self, tag: Tag, from: u64) -> Option<u64>;
    /// Whether any page carries `tag`, in O(1).
    fn any_tagged(&self, tag: Tag) -> bool;
    /// Moves the page at `offset` to `queue` (activate, deactivate, dequeue).
    fn set_queue(&mut self, offset: u64, queue: PageQueue);
    /// How many pages are resident.
    fn resident_pages(&self) -> usize;
    /// How many pages are resident, dirty ([`Tag::Dirty`]) and under writeback
    /// ([`Tag::Writeback`]), for [`VmObject::stats`](crate::VmObject::stats).
    ///
    /// The default counts the tagged pages with [`PageCache::next_tagged`]
    /// ([`PageCounts::by_walk`]): O(tagged pages). A cache that counts its tag
    /// transitions, as `DefaultCache` does, answers in O(1).
    fn page_counts(&self) -> PageCounts {
        PageCounts::by_walk(self)
    }

    /// The memory domain this cache's frames are counted in, if any: its dirty
    /// thresholds then hold [`write`](crate::write()) back. The default, `None`, suits
    /// a cache whose kernel limits dirty memory its own way.
    fn memory(&self) -> Option<&'static Memory> {
        None
    }

    /// Changes the MMU mappings of the page (the reference's `pmap_page_protect`).
    /// The default suits a kernel that never maps file pages into user space.
    fn protect(&mut self, offset: u64, protection: Protection) {
        let _ = (offset, protection);
    }
    /// Clears the MMU modified bit of the page and returns whether it was set (the
    /// reference's `pmap_clear_modify`).
    fn clear_modified(&mut self, offset: u64) -> bool {
        let _ = offset;
        false
    }
    /// Write-protects the page's mappings and clears its modified bit, returning
    /// whether the bit was set: what a flush does to each mapped page it is about to
    /// write (the reference's `pmap_page_protect(VM_PROT_READ)` then
    /// `pmap_clear_modify`; Linux's `page_mkclean`). The default calls
    /// [`PageCache::protect`] and [`PageCache::clear_modified`]; a pmap that can do both
    /// in one walk over the page's mappings should.
    fn write_protect_and_clear_modified(&mut self, offset: u64) -> bool {
        self.protect(offset, Protection::ReadOnly);
        self.clear_modified(offset)
    }
    /// Whether the MMU modified bit of the page is set (`pmap_is_modified`).
    fn is_modified(&self, offset: u64) -> bool {
        let _ = offset;
        false
    }
    /// Whether some mapping reaches the page at all (read-only or writable). The
    /// default, `false`, suits a kernel that never maps file pages into user space.
    fn is_mapped(&self, offset: u64) -> bool {
        let _ = offset;
        false
    }
    /// Sets the referenced bit of the page: it was used since the page daemon last
    /// looked (what an MMU's accessed bit records for mappings; genpager calls it when
    /// a fault hands out a page that was already queued). The default forgets it.
    fn mark_referenced(&mut self, offset: u64) {
        let _ = offset;
    }
    /// Clears the referenced bit of the page and returns whether it was set (the
    /// reference's `pmap_clear_reference`): the page daemon's question "used since I
    /// last asked?". The default, `false`, makes every page look unused.
    fn clear_referenced(&mut self, offset: u64) -> bool {
        let _ = offset;
        false
    }
    /// How many pages are on `queue` ([`PageQueue::None`] counts the pages on
    /// neither). The default, 0, suits a cache that keeps no queues: the page daemon
    /// ([`Reclaimer`](crate::reclaim::Reclaimer)) then finds nothing to reclaim.
    fn queue_len(&self, queue: PageQueue) -> usize {
        let _ = queue;
        0
    }
    /// The offset of the page at the head of `queue` (the least recently queued), if
    /// any. With [`PageCache::queue_next`], how the page daemon walks a queue; the
    /// default has no queues.
    fn queue_first(&self, queue: PageQueue) -> Option<u64> {
        let _ = queue;
        None
    }
    /// The offset of the page after the one at `offset` on that page's queue, if any.
    fn queue_next(&self, offset: u64) -> Option<u64> {
        let _ = offset;
        None
    }
    /// Whether some mapping lets a CPU store to the page without faulting. genpager
    /// never hands out a slice of such a page: a fault write-protects it first (see
    /// "Implementation safety"), and the shared fast path leaves it out. The default,
    /// `false`, suits a kernel that never maps file pages writable.
    fn is_writable_mapped(&self, offset: u64) -> bool {
        let _ = offset;
        false
    }
}

impl PageCounts {
    /// The counts of `cache` found by walking its tagged pages
    /// ([`PageCache::next_tagged`]): what [`PageCache::page_counts`] answers by
    /// default, and what a cache that keeps its own counts must agree with.
    pub fn by_walk<C: PageCache + ?Sized>(cache: &C) -> PageCounts {
        let tagged = |tag| {
            let mut count = 0u64;
            let mut from = 0;
            while let Some(at) = cache.next_tagged(tag, from) {
                count = count.saturating_add(1);
                match at.checked_add(PAGE_SIZE as u64) {
                    Some(next) => from = next,
                    None => break,
                }
            }
            count
        };
        PageCounts {
            resident: cache.resident_pages() as u64,
            dirty: tagged(Tag::Dirty),
            writeback: tagged(Tag::Writeback),
        }
    }
}

/// Where [`Vnode::wire`](crate::Vnode::wire) left caller memory for a direct transfer.
#[derive(Debug, PartialEq, Eq)]
pub struct Wired(Option<NonNull<u8>>);

impl Wired {
    /// The memory is used at the address the caller gave (hosts whose caller memory
    /// needs no remapping; the default).
    pub const IN_PLACE: Wired = Wired(None);

    /// The memory is reached at `alias` (a kernel mapping of wired user pages, as the
    /// reference makes): genpager and the device use `alias` instead of the caller's
    /// address.
    ///
    /// # Safety
    ///
    /// `alias` must address the same bytes as the memory being wired, valid for reads
    /// and (for a [`Direction::Read`](crate::buf::Direction::Read) transfer) writes of the wired length from the
    /// kernel and acceptable to the host's [`Strategy`], from the return of
    /// [`Vnode::wire`](crate::Vnode::wire) until the matching [`Vnode::unwire`](crate::Vnode::unwire), with nothing else
    /// accessing them meanwhile; `alias + len` must not wrap around.
    pub unsafe fn at(alias: NonNull<u8>) -> Self {
        Wired(Some(alias))
    }

    /// The alias, or `None` for [`Wired::IN_PLACE`].
    pub fn alias(&self) -> Option<NonNull<u8>> {
        self.0
    }
}

/// Byte-addressed file I/O for a filesystem without a block map.
///
/// Both methods are called with no genpager spin lock held and may sleep; `read_at` is
/// called with the node lock held shared (so it must not take it), `write_at` from a
/// flush, with the pages being written busy.
pub trait ByteIo: Send + Sync {
    /// Reads file bytes from `offset` into `buf` and returns how many it read; fewer
    /// than `buf.len()` means the file ends there. Bytes of `buf` past the count may
    /// be left in any state: the pager zeroes them.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// Writes all of `data` at file `offset`, or fails.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result;

    /// Writes the concatenation of `data` at file `offset`, or fails (a uio with
    /// several segments). The default writes the pieces one after the other.
    fn write_vectored_at(&self, offset: u64, data: &[&[u8]]) -> Result {
        let mut at = offset;
        for piece in data {
            let next = u64::try_from(piece.len())
                .ok()
                .and_then(|len| at.checked_add(len))
                .ok_or(Error::TooBig)?;
            self.write_at(at, piece)?;
            at = next;
        }
        Ok(())
    }
}
