//! Handles for pages handed to a caller: [`BusyPages`] (owned busy, from a sleeping
//! read fault), [`WritablePages`] (the same from a write fault, whose bytes may
//! change) and [`ResidentPages`] (borrowed under the object lock, from the fast path).
//!
//! Each carries an obligation — busy pages block every other thread until released,
//! and resident pages hold the object lock — so each is `#[must_use]` and releases on
//! drop. Bytes written through a handle mark the page dirty as they are handed out,
//! so a kernel that writes through the handle cannot lose the write even if its MMU
//! has no modified bit for kernel stores. Whether a handle can write is its type: a
//! read fault's pages may back holes, and a store there would never reach the disk.

use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::error::{Error, Result};
use crate::hooks::PageCache;
use crate::object::{ObjectState, Wakeup};
use crate::page::PageRef;
use crate::page::{DirtyStatus, PAGE_SIZE, PageFlags};
use crate::sync::{ReadGuard, WriteGuard};
use crate::vnode::{Vnode, note_dirty};

/// Pages returned busy by a fault, in ascending offset order, to read. Dropping the
/// handle releases them (the reference's `uvm_page_unbusy` of the caller's pages).
///
/// The bytes of every page are the holder's alone while the handle lives: the pages
/// are busy, and none is mapped writable (the fault write-protected any that was).
/// A read fault's handle offers no way to change the bytes: over a hole a page is
/// read-only (its blocks are not allocated), so a store through it would never reach
/// the disk. Take a write fault for a [`WritablePages`].
///
/// ```compile_fail
/// # fn store<V: genpager::Vnode>(pages: &mut genpager::BusyPages<'_, V>) {
/// pages.bytes_mut(0)[0] = 1; // a read fault's pages cannot be written
/// # }
/// ```
#[must_use = "busy pages block every other thread until released"]
pub struct BusyPages<'a, V: Vnode> {
    vnode: &'a V,
    pages: Vec<PageRef>,
}

impl<'a, V: Vnode> BusyPages<'a, V> {
    pub(crate) fn new(vnode: &'a V, pages: Vec<PageRef>) -> Self {
        Self { vnode, pages }
    }

    /// How many pages the handle holds.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether the handle holds no page.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The byte offset of page `index`.
    pub fn offset(&self, index: usize) -> u64 {
        self.pages[index].offset
    }

    /// The bytes of page `index`.
    pub fn bytes(&self, index: usize) -> &[u8] {
        let frame = self.pages[index].frame;
        // SAFETY: the page is busy and this handle owns it: no device request and no
        // other thread touches a busy page's bytes, and no mapping can store to it (the
        // fault write-protected it; a host maps it writable again only from a write
        // fault's pages or under the object lock exclusively, and a busy page is never
        // mapped by another fault). The cache keeps the frame (PAGE_SIZE bytes) until
        // the page is freed, which cannot happen while it is busy. The borrow of
        // `self` bounds the slice's life.
        unsafe { core::slice::from_raw_parts(frame.as_ptr(), PAGE_SIZE) }
    }

    /// Releases the pages now (the same as dropping the handle).
    pub fn release(self) {}

    /// Marks the pages at `indexes` dirty (and valid: a written page holds data even
    /// if it was never read) under one hold of the object lock.
    fn mark_written(&self, indexes: impl Iterator<Item = usize>) {
        let object = self.vnode.object();
        let mut state = object.lock();
        for index in indexes {
            let offset = self.pages[index].offset;
            if let Some(resident) = state.cache_mut().lookup_mut(offset) {
                // Whether the page may be stored to through a mapping (`RDONLY`) is
                // the fault's business, not the writer's.
                resident.flags.remove(PageFlags::FAKE);
            }
            state.mark(offset, DirtyStatus::Dirty);
        }
        note_dirty(&mut *state, self.vnode);
    }
}

impl<V: Vnode> Drop for BusyPages<'_, V> {
    fn drop(&mut self) {
        let object = self.vnode.object();
        let mut state = object.lock();
        let mut wake = Wakeup::NONE;
        for page in &self.pages {
            if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                if resident.flags.contains(PageFlags::FAKE) {
                    // Never read nor written (an overwrite fault's page left alone).
                    resident.flags |= PageFlags::RELEASED;
                }
            }
            wake |= state.settle(page.offset);
        }
        drop(state);
        object.wake_if(wake);
    }
}

/// Pages returned busy by a write fault: a [`BusyPages`] whose bytes may also be
/// changed. Their blocks are allocated, so what is stored reaches the disk.
///
/// [`WritablePages::bytes_mut`] marks the page dirty at once (a kernel whose MMU keeps
/// no modified bit for its own stores cannot lose the write); a flush that finds it
/// dirty waits for the handle to be released before writing it.
///
/// ```
/// # fn store<V: genpager::Vnode>(pages: &mut genpager::WritablePages<'_, V>) {
/// pages.bytes_mut(0)[0] = 1; // a write fault's pages can be written
/// # }
/// ```
#[must_use = "busy pages block every other thread until released"]
pub struct WritablePages<'a, V: Vnode> {
    pages: BusyPages<'a, V>,
}

impl<'a, V: Vnode> WritablePages<'a, V> {
    pub(crate) fn new(pages: BusyPages<'a, V>) -> Self {
        Self { pages }
    }

    /// The bytes of page `index`, to change. The page is dirty from now on.
    pub fn bytes_mut(&mut self, index: usize) -> &mut [u8] {
        self.pages.mark_written(core::iter::once(index));
        let frame = self.pages.pages[index].frame;
        // SAFETY: as in `BusyPages::bytes`; `&mut self` makes this the only live
        // slice over the handle's pages.
        unsafe { core::slice::from_raw_parts_mut(frame.as_ptr(), PAGE_SIZE) }
    }

    /// Marks every page written: each is dirty (and valid) from now on.
    pub fn mark_all_written(&mut self) {
        self.pages.mark_written(0..self.pages.len());
    }

    /// The pages, to read only (releasing them when dropped, as this handle does).
    pub fn into_read_only(self) -> BusyPages<'a, V> {
        self.pages
    }

    /// Releases the pages now (the same as dropping the handle).
    pub fn release(self) {}
}

impl<'a, V: Vnode> core::ops::Deref for WritablePages<'a, V> {
    type Target = BusyPages<'a, V>;

    fn deref(&self) -> &BusyPages<'a, V> {
        &self.pages
    }
}

const INLINE_PAGES: usize = 16;

/// Frames found by the fast path: inline for the common small request, so a cached
/// hit allocates nothing.
pub(crate) enum Frames {
    Inline([Option<NonNull<u8>>; INLINE_PAGES], usize),
    Heap(Vec<Option<NonNull<u8>>>),
}

impl Frames {
    pub(crate) fn with_len(len: usize) -> Result<Self> {
        if len <= INLINE_PAGES {
            return Ok(Frames::Inline([None; INLINE_PAGES], len));
        }
        let mut frames = Vec::new();
        frames.try_reserve_exact(len).map_err(|_| Error::NoMemory)?;
        frames.resize(len, None);
        Ok(Frames::Heap(frames))
    }

    pub(crate) fn as_slice(&self) -> &[Option<NonNull<u8>>] {
        match self {
            Frames::Inline(frames, len) => &frames[..*len],
            Frames::Heap(frames) => frames,
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [Option<NonNull<u8>>] {
        match self {
            Frames::Inline(frames, len) => &mut frames[..*len],
            Frames::Heap(frames) => frames,
        }
    }
}

pub(crate) enum ObjectGuard<'a, C> {
    Shared(ReadGuard<'a, ObjectState<C>>),
    Exclusive(WriteGuard<'a, ObjectState<C>>),
}

impl<C> core::ops::Deref for ObjectGuard<'_, C> {
    type Target = ObjectState<C>;

    fn deref(&self) -> &ObjectState<C> {
        match self {
            ObjectGuard::Shared(state) => state,
            ObjectGuard::Exclusive(state) => state,
        }
    }
}

/// Resident, valid pages found by the fast path (`GetFlags::LOCKED`), borrowed under
/// the object lock: shared for read access, so cached reads run in parallel;
/// exclusive for write access. Entries are `None` where no page could be had without
/// sleeping. Dropping the handle drops the lock.
///
/// While it lives, interrupts stay masked on this CPU (the object lock is a spin lock
/// that masks them, see [`crate::sync::Interrupts`]) and the thread must not call into
/// genpager for the same file or take its object lock again: the lock is
/// writer-preferring, so a second shared take behind a waiting writer never returns.
/// Map the pages, then drop it.
#[must_use = "the handle holds the object lock"]
pub struct ResidentPages<'a, V: Vnode> {
    pub(crate) vnode: &'a V,
    pub(crate) guard: ObjectGuard<'a, V::Cache>,
    pub(crate) start: u64,
    pub(crate) frames: Frames,
}

impl<V: Vnode> ResidentPages<'_, V> {
    /// How many page slots the request covered.
    pub fn len(&self) -> usize {
        self.frames.as_slice().len()
    }

    /// Whether the request covered no page.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every slot holds a page.
    pub fn is_complete(&self) -> bool {
        self.frames.as_slice().iter().all(Option::is_some)
    }

    /// The byte offset of slot `index` (for a slot past [`ResidentPages::len`], where
    /// it would be, saturating at `u64::MAX`).
    pub fn offset(&self, index: usize) -> u64 {
        u64::try_from(index)
            .ok()
            .and_then(|index| index.checked_mul(PAGE_SIZE as u64))
            .and_then(|from| self.start.checked_add(from))
            .unwrap_or(u64::MAX)
    }

    /// The bytes of the page in slot `index`, if one was found.
    pub fn bytes(&self, index: usize) -> Option<&[u8]> {
        let frame = (*self.frames.as_slice().get(index)?)?;
        // SAFETY: the page is resident, valid and not busy, and this handle holds the
        // object lock (shared or exclusive) for its whole life: no device or busy owner
        // touches a non-busy page, the page cannot be freed without the lock, and no
        // mapping can store to it (the fast path leaves out pages that are mapped
        // writable, or write-protects them under the exclusive lock, and a host maps a
        // page writable again only under the exclusive lock). The slice borrows `self`.
        Some(unsafe { core::slice::from_raw_parts(frame.as_ptr(), PAGE_SIZE) })
    }

    /// The bytes of the page in slot `index` to change, if one was found and the
    /// handle came from a write fault. The page is marked dirty at once.
    pub fn bytes_mut(&mut self, index: usize) -> Option<&mut [u8]> {
        let offset = self.offset(index);
        let frame = (*self.frames.as_slice().get(index)?)?;
        let ObjectGuard::Exclusive(state) = &mut self.guard else {
            return None;
        };
        state.mark(offset, DirtyStatus::Dirty);
        note_dirty(&mut *state, self.vnode);
        // SAFETY: as in `bytes`, and the lock is held exclusively, so no other thread
        // reads these bytes under the shared lock; `&mut self` makes the slice unique.
        Some(unsafe { core::slice::from_raw_parts_mut(frame.as_ptr(), PAGE_SIZE) })
    }

    /// The file size, under the lock this handle holds.
    pub(crate) fn size(&self) -> u64 {
        self.guard.size()
    }

    /// Releases the lock now (the same as dropping the handle).
    pub fn release(self) {}
}
