//! What every fault shares, whichever pager serves it: the [`Fault`] a kernel asks
//! for and its checks, the fast path over resident pages, and the settling of a
//! fault's busy pages into what it hands back ([`Fetched`]).
//!
//! A pager's slow path ([`getpages`](crate::getpages) over a block map,
//! [`compat::getpages`](crate::compat::getpages) over byte I/O) is: check the fault →
//! collect its pages, busy and in ascending order (`find_pages`) → bring
//! them up to date its own way → [`settle`] them.

use alloc::vec::Vec;
use core::ops::Range;

use bitflags::bitflags;

use crate::busy::{BusyPages, Frames, ObjectGuard, ResidentPages, WritablePages};
use crate::error::{Error, Result};
use crate::hooks::{
    Access, BlockMap, MountFlags, PageCache, Protection, SizeKind, Update, VnodeKind, max_file_size,
};
use crate::object::{ObjectState, Wakeup};
use crate::page::{DirtyStatus, PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, PageFlags, PageRef, round_page};
use crate::readahead::Advice;
use crate::sync::{Arc, WriteGuard};
use crate::vnode::{Vnode, geometry, note_dirty};

bitflags! {
    /// Options of a [`getpages`](crate::getpages) call (the reference's `PGO_*` flags).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct GetFlags: u32 {
        /// Fast path: resident pages only, never sleep.
        const LOCKED = 1 << 0;
        /// Wait for the pages; without it the call is asynchronous read-ahead.
        const SYNCIO = 1 << 1;
        /// The caller will overwrite the pages whole: do not read them. The caller
        /// must have allocated their blocks first (as [`write()`](crate::write) does):
        /// an overwrite fault neither reads nor allocates, and one that meets a page
        /// known to back a hole fails with [`Error::Invalid`].
        const OVERWRITE = 1 << 2;
        /// Pages past the end of file may be created (the caller is extending it).
        const PASTEOF = 1 << 3;
        /// Do not update timestamps.
        const NOTIMESTAMP = 1 << 4;
        /// The caller already holds the node lock exclusively, and with it the mount
        /// transaction (and, for a write fault on a journalled mount, the journal),
        /// which come before it in the lock order: the fault takes none of them.
        const GLOCKHELD = 1 << 5;
        /// The caller is already inside a journal transaction.
        const JOURNALLOCKED = 1 << 6;
        /// A write fault that must not allocate blocks over holes.
        const NOBLOCKALLOC = 1 << 7;
        /// A synchronous read fault that starts no read-ahead of its own: the caller
        /// planned it (with its own [`ReadAhead`](crate::ReadAhead), as
        /// [`read_with`](crate::read_with) and [`fault_around`](crate::fault_around)
        /// do) or wants none. Without it, a synchronous read fault feeds the object's
        /// read-ahead state (see [`getpages`](crate::getpages)).
        const NOREADAHEAD = 1 << 8;
    }
}

/// One fault as a kernel's fault handler asks for it: `count` pages from `offset`
/// (page aligned), `center` indexing the page it really needs, for `access`, with the
/// mapping's `advice` and the reference's `PGO_*` options in `flags`.
///
/// The constructors say which way through [`getpages`](crate::getpages) the fault goes;
/// the builders add the rest:
///
/// ```
/// use genpager::{Advice, Fault, GetFlags, PAGE_SIZE};
///
/// // A synchronous read fault on the third page of a file that also brings in the page
/// // before it and the two after.
/// let page = PAGE_SIZE as u64;
/// let fault = Fault::read(page, 4).centered_on(1).with_advice(Advice::Sequential);
/// assert_eq!(fault.offset + fault.center as u64 * page, 2 * page);
/// assert!(fault.flags.contains(GetFlags::SYNCIO));
/// // The write(2) path's overwrite of a page whose blocks it allocated.
/// let fault = Fault::write(0, 1).with_flags(GetFlags::OVERWRITE | GetFlags::GLOCKHELD);
/// assert!(fault.flags.contains(GetFlags::SYNCIO | GetFlags::OVERWRITE));
/// ```
///
/// Combinations the reference refuses ([`GetFlags::OVERWRITE`] on a read fault, a
/// write fault without [`GetFlags::SYNCIO`] or [`GetFlags::LOCKED`]) fail with
/// [`Error::Invalid`]; the constructors never make them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fault {
    /// The first page's file offset; page aligned.
    pub offset: u64,
    /// How many pages, at least one.
    pub count: usize,
    /// The index (below `count`) of the page the caller needs; the others are
    /// brought in only if that is cheap.
    pub center: usize,
    /// Read or write.
    pub access: Access,
    /// The access pattern the faulting mapping announced.
    pub advice: Advice,
    /// The way through and its options.
    pub flags: GetFlags,
}

impl Fault {
    const fn new(offset: u64, count: usize, access: Access, flags: GetFlags) -> Self {
        Self {
            offset,
            count,
            center: 0,
            access,
            advice: Advice::Normal,
            flags,
        }
    }

    /// A synchronous read fault: the pages come back busy ([`Fetched::Busy`]), read
    /// from the device as needed.
    pub const fn read(offset: u64, count: usize) -> Self {
        Self::new(offset, count, Access::Read, GetFlags::SYNCIO)
    }

    /// A synchronous write fault: the pages come back busy and writable
    /// ([`Fetched::Writable`]), the blocks under them allocated.
    pub const fn write(offset: u64, count: usize) -> Self {
        Self::new(offset, count, Access::Write, GetFlags::SYNCIO)
    }

    /// Asynchronous read-ahead: starts reading the pages and returns
    /// ([`Fetched::Started`]) without sleeping.
    pub const fn read_ahead(offset: u64, count: usize) -> Self {
        Self::new(offset, count, Access::Read, GetFlags::empty())
    }

    /// The fast path: resident, valid pages only, under the object lock
    /// ([`Fetched::Resident`]); never sleeps.
    pub const fn resident(offset: u64, count: usize, access: Access) -> Self {
        Self::new(offset, count, access, GetFlags::LOCKED)
    }

    /// The page the caller needs is the `center`-th (the first by default).
    #[must_use]
    pub const fn centered_on(self, center: usize) -> Self {
        Self { center, ..self }
    }

    /// The mapping's access pattern ([`Advice::Normal`] by default).
    #[must_use]
    pub const fn with_advice(self, advice: Advice) -> Self {
        Self { advice, ..self }
    }

    /// Adds `flags` to those the constructor chose.
    #[must_use]
    pub const fn with_flags(self, flags: GetFlags) -> Self {
        Self {
            flags: self.flags.union(flags),
            ..self
        }
    }
}

impl Fault {
    /// Whether this is a write fault.
    pub(crate) fn is_write(&self) -> bool {
        self.access == Access::Write
    }

    /// The file offset of the page the caller needs. Only for a checked fault.
    // Cannot overflow: `check` made sure the range, and so the center page, ends
    // before `u64::MAX`.
    #[allow(clippy::arithmetic_side_effects)]
    pub(crate) fn center_offset(&self) -> u64 {
        self.offset + (self.center * PAGE_SIZE) as u64
    }

    /// The checks every pager makes before a fault goes its way, in this order (the
    /// first that fails decides the error): a page-aligned offset, at least one page and
    /// the center inside the range ([`Error::Invalid`]); a range that does not wrap
    /// ([`Error::TooBig`]); a combination of access and flags the reference allows
    /// ([`Error::Invalid`]); a range inside the file's largest size ([`Error::TooBig`]);
    /// a live vnode ([`Error::Dead`]). Returns the end of the requested range.
    pub(crate) fn check<V: Vnode>(&self, vnode: &V) -> Result<u64> {
        if self.offset & PAGE_MASK != 0 || self.count == 0 || self.center >= self.count {
            return Err(Error::Invalid);
        }
        // In `usize` too: the pagers turn page counts and indexes below `count` into
        // byte lengths with plain arithmetic.
        let request_end = self
            .count
            .checked_mul(PAGE_SIZE)
            .and_then(|span| u64::try_from(span).ok())
            .and_then(|span| self.offset.checked_add(span))
            .ok_or(Error::TooBig)?;
        let synchronous = self.flags.intersects(GetFlags::LOCKED | GetFlags::SYNCIO);
        if self.is_write() && !synchronous {
            // A write fault must allocate and hand back writable pages before it
            // returns; UVM, too, only reads ahead asynchronously.
            return Err(Error::Invalid);
        }
        if self.flags.contains(GetFlags::OVERWRITE) && !self.is_write() {
            return Err(Error::Invalid);
        }
        if request_end > fault_limit(vnode) {
            return Err(Error::TooBig);
        }
        if vnode.is_dead() {
            return Err(Error::Dead);
        }
        Ok(request_end)
    }
}

/// What [`getpages`](crate::getpages) hands back.
#[must_use = "the pages are busy or the object lock is held until this is dropped"]
pub enum Fetched<'a, V: Vnode> {
    /// Synchronous read fault (or a write fault with [`GetFlags::NOBLOCKALLOC`], whose
    /// pages may back holes): the requested pages, busy, to read.
    Busy(BusyPages<'a, V>),
    /// Synchronous write fault: the requested pages, busy, their blocks allocated.
    Writable(WritablePages<'a, V>),
    /// Fast path: resident pages under the object lock.
    Resident(ResidentPages<'a, V>),
    /// Asynchronous read-ahead started (or nothing needed reading); the pages will be
    /// resident and unbusy once it completes.
    Started,
}

impl<'a, V: Vnode> Fetched<'a, V> {
    /// The busy pages of a synchronous fault (a write fault's, to read only).
    pub fn into_busy(self) -> Option<BusyPages<'a, V>> {
        match self {
            Fetched::Busy(pages) => Some(pages),
            Fetched::Writable(pages) => Some(pages.into_read_only()),
            _ => None,
        }
    }

    /// The busy, writable pages of a synchronous write fault.
    pub fn into_writable(self) -> Option<WritablePages<'a, V>> {
        match self {
            Fetched::Writable(pages) => Some(pages),
            _ => None,
        }
    }

    /// The resident pages of the fast path.
    pub fn into_resident(self) -> Option<ResidentPages<'a, V>> {
        match self {
            Fetched::Resident(pages) => Some(pages),
            _ => None,
        }
    }
}

/// How far a fault's range may reach: the file's largest size rounded up to a whole
/// page and filesystem block, so that the page (and block) holding its last byte can
/// be faulted whole. At most `MAX_FILE_SIZE` plus a 1 MiB block: below 2^63.
pub(crate) fn fault_limit<V: Vnode>(vnode: &V) -> u64 {
    let block = geometry(vnode).map_or(PAGE_SIZE as u64, |geometry| geometry.block_size());
    let unit = block.max(PAGE_SIZE as u64);
    // Cannot overflow: `max_file_size` is below 2^63 - 2^20 and `unit` at most 2^20.
    #[allow(clippy::arithmetic_side_effects)]
    let limit = max_file_size(vnode.block_map()).div_ceil(unit) * unit;
    limit
}

/// Memory EOF and disk EOF of one fault attempt (the reference's `GOP_SIZE` pair).
pub(crate) struct Bounds {
    pub(crate) diskeof: u64,
    pub(crate) memeof: u64,
}

impl Bounds {
    pub(crate) fn new<M: BlockMap>(map: &M, size: u64, request_end: u64, flags: GetFlags) -> Self {
        let diskeof = map.size(size, SizeKind::Disk);
        let memeof = if flags.contains(GetFlags::PASTEOF) {
            map.size(size.max(request_end), SizeKind::Memory)
        } else {
            map.size(size, SizeKind::Memory)
        };
        Self { diskeof, memeof }
    }
}

/// Marks the timestamps a fault touches (unless `NOTIMESTAMP`, or a block device
/// mounted without device mtimes).
pub(crate) fn mark_timestamps<V: Vnode>(vnode: &V, fault: &Fault) {
    let flags = fault.flags;
    if flags.contains(GetFlags::NOTIMESTAMP)
        || (vnode.kind() == VnodeKind::BlockDevice
            && vnode.mount_flags().contains(MountFlags::NO_DEV_MTIME))
    {
        return;
    }
    let mut update = Update::empty();
    if !vnode.mount_flags().contains(MountFlags::NO_ATIME) {
        update |= Update::ACCESSED;
    }
    if fault.is_write() {
        update |= Update::MODIFIED;
    }
    if !update.is_empty() {
        vnode.mark_update(update);
    }
}

/// The fast path (G1): the resident, valid, non-busy pages of the range under the
/// object lock, shared for a read fault, so cached reads run in parallel. Never sleeps.
pub(crate) fn fast_path<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    fault: &Fault,
    request_end: u64,
) -> Result<ResidentPages<'a, V>> {
    let object = vnode.object();
    let mut guard = if fault.is_write() {
        ObjectGuard::Exclusive(object.lock())
    } else {
        ObjectGuard::Shared(object.read())
    };
    let memeof = Bounds::new(vnode.block_map(), guard.size(), request_end, fault.flags).memeof;
    if fault.center_offset() >= memeof {
        return Err(Error::Invalid);
    }
    mark_timestamps(&**vnode, fault);
    let frames = usable_frames(&guard, fault, request_end.min(round_page(memeof)))?;
    // A truncation holds the node lock exclusively while it frees pages; if one is
    // under way, hand back nothing rather than pages that are about to go.
    if object.node_lock().is_write_locked() {
        return Err(Error::Busy);
    }
    if let ObjectGuard::Exclusive(state) = &mut guard {
        start_dirty_tracking(state, &**vnode, fault.offset, &frames);
    }
    Ok(ResidentPages {
        vnode: &**vnode,
        guard,
        start: fault.offset,
        frames,
    })
}

/// The frames of the pages in `fault.offset .. end` the fast path can hand out (valid,
/// not busy, not known to back a hole a write must allocate, and not writable through
/// a mapping for a read under the shared lock); [`Error::Busy`] without the center one.
fn usable_frames<C: PageCache>(state: &ObjectState<C>, fault: &Fault, end: u64) -> Result<Frames> {
    let mut frames = Frames::with_len(fault.count)?;
    for page in state.cache().range(fault.offset..end) {
        let rdonly_for_write = fault.is_write() && page.flags.contains(PageFlags::RDONLY);
        // Under the shared lock a page some mapping can store to cannot be
        // write-protected, so its bytes cannot be handed out (PageCache's safety).
        let stored_to = !fault.is_write() && state.cache().is_writable_mapped(page.offset());
        let usable = !(page.flags.intersects(PageFlags::BUSY | PageFlags::FAKE)
            || rdonly_for_write
            || stored_to);
        // The cache returns pages inside `offset..end` only; one outside is skipped.
        let slot = page
            .offset()
            .checked_sub(fault.offset)
            .and_then(|from| frames.as_mut_slice().get_mut((from >> PAGE_SHIFT) as usize));
        if let (true, Some(slot)) = (usable, slot) {
            *slot = Some(page.frame());
        }
    }
    match frames.as_slice().get(fault.center) {
        Some(Some(_)) => Ok(frames),
        _ => Err(Error::Busy),
    }
}

/// A fast-path write fault's pages: write-protected for the handout, and clean ones
/// marked "unknown", so the next flush asks the MMU whether they were stored to.
fn start_dirty_tracking<V: Vnode>(
    state: &mut ObjectState<V::Cache>,
    vnode: &V,
    offset: u64,
    frames: &Frames,
) {
    for (index, frame) in frames.as_slice().iter().enumerate() {
        if frame.is_none() {
            continue;
        }
        // Cannot overflow: slot `index < count` lies before `request_end`.
        #[allow(clippy::arithmetic_side_effects)]
        let page_offset = offset + (index * PAGE_SIZE) as u64;
        write_protect_for_handout(state, page_offset);
        let clean = state
            .cache()
            .lookup(page_offset)
            .is_some_and(|p| p.dirty() == DirtyStatus::Clean);
        if clean {
            state.mark(page_offset, DirtyStatus::Unknown);
        }
    }
    note_dirty(state, vnode);
}

/// Takes away the write permission of every mapping of the page at `offset` before
/// its bytes are handed out, so no CPU can store to them while a slice over them
/// lives. The modified bit is kept: what was stored before still counts.
fn write_protect_for_handout<C: PageCache>(state: &mut ObjectState<C>, offset: u64) {
    if state.cache().is_writable_mapped(offset) {
        state.cache_mut().protect(offset, Protection::ReadOnly);
    }
}

/// What a settled fault hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handout {
    /// Nothing: read-ahead; every page is unbusied.
    Started,
    /// The requested pages, busy, to read.
    ReadOnly,
    /// The requested pages, busy, their blocks allocated, to write.
    Writable,
}

/// How [`settle`] settles a fault's pages.
pub(crate) struct Settle {
    /// Indexes of the requested pages among those collected.
    pub(crate) keep: Range<usize>,
    pub(crate) handout: Handout,
    /// A write fault: clean requested pages become "unknown", to be checked for
    /// stores by the next flush.
    pub(crate) dirty_tracking: bool,
    /// An overwrite fault: pages were not read, and stay `FAKE` until written.
    pub(crate) overwrite: bool,
}

/// Settles the pages of a fault that succeeded (the reference's `out:` block): valid
/// pages lose FAKE, pages outside the request (and all of them for read-ahead) are
/// unbusied and queued, requested pages of a write fault start dirty tracking, and
/// pages handed out are write-protected if some mapping could store to them.
pub(crate) fn settle<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    mut state: WriteGuard<'a, ObjectState<V::Cache>>,
    pages: Vec<PageRef>,
    settle: Settle,
) -> Fetched<'a, V> {
    let mut wake = Wakeup::NONE;
    let handing_out = settle.handout != Handout::Started;
    // The caller's pages are kept in place: no allocation on the way out.
    let mut kept = pages;
    let mut index = 0..;
    kept.retain(|page| {
        let index = index.next().unwrap_or(usize::MAX);
        let Some(resident) = state.cache_mut().lookup_mut(page.offset) else {
            return false;
        };
        if !settle.overwrite {
            resident.flags.remove(PageFlags::FAKE);
        }
        if !settle.keep.contains(&index) || !handing_out {
            if resident.flags.contains(PageFlags::FAKE) {
                // An overwrite fault's extra page was never read: it holds nothing.
                page.zero(0, PAGE_SIZE);
                resident.flags.remove(PageFlags::FAKE);
            }
            wake |= state.settle(page.offset);
            false
        } else {
            if settle.dirty_tracking && !settle.overwrite && resident.dirty() == DirtyStatus::Clean
            {
                state.mark(page.offset, DirtyStatus::Unknown);
            }
            write_protect_for_handout(&mut state, page.offset);
            true
        }
    });
    if settle.dirty_tracking {
        note_dirty(&mut *state, &**vnode);
    }
    drop(state);
    // The pages handed out stay busy: their waiters sleep on.
    vnode.object().wake_except(wake, &kept);
    let pages = BusyPages::new(&**vnode, kept);
    match settle.handout {
        Handout::Started => Fetched::Started,
        Handout::ReadOnly => Fetched::Busy(pages),
        Handout::Writable => Fetched::Writable(WritablePages::new(pages)),
    }
}
