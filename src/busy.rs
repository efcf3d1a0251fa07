//! Handles for pages handed to a caller: [`BusyPages`] (owned busy, from a sleeping
//! fault) and [`ResidentPages`] (borrowed under the object lock, from the fast path).
//!
//! Both carry an obligation — busy pages block every other thread until released,
//! and resident pages hold the object lock — so both are `#[must_use]` and release on
//! drop. Bytes written through either handle mark the page dirty when it is released,
//! so a kernel that writes through the handle cannot lose the write even if its MMU
//! has no modified bit for kernel stores.

use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::hooks::{PageCache, Vnode};
use crate::object::{ObjectState, PageRef};
use crate::page::{DirtyStatus, PAGE_SIZE, PageFlags};
use crate::sync::{ReadGuard, WriteGuard};

/// Pages returned busy by a fault, in ascending offset order. Dropping the handle
/// releases them (the reference's `uvm_page_unbusy` of the caller's pages).
///
/// The bytes of every page are the holder's alone while the handle lives.
#[must_use = "busy pages block every other thread until released"]
pub struct BusyPages<'a, V: Vnode> {
    vnode: &'a V,
    pages: Vec<(PageRef, bool)>,
}

impl<'a, V: Vnode> BusyPages<'a, V> {
    pub(crate) fn new(vnode: &'a V, pages: Vec<PageRef>) -> Self {
        Self {
            vnode,
            pages: pages.into_iter().map(|page| (page, false)).collect(),
        }
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
        self.pages[index].0.offset
    }

    /// The bytes of page `index`.
    pub fn bytes(&self, index: usize) -> &[u8] {
        let frame = self.pages[index].0.frame;
        // SAFETY: the page is busy and this handle owns it: no device request, no
        // other thread and no mapping store touches a busy page's bytes, and the cache
        // keeps the frame (PAGE_SIZE bytes) until the page is freed, which cannot
        // happen while it is busy. The borrow of `self` bounds the slice's life.
        unsafe { core::slice::from_raw_parts(frame.as_ptr(), PAGE_SIZE) }
    }

    /// The bytes of page `index`, to change. The page is marked dirty when released.
    pub fn bytes_mut(&mut self, index: usize) -> &mut [u8] {
        let (page, written) = &mut self.pages[index];
        *written = true;
        // SAFETY: as in `bytes`; `&mut self` makes this the only live slice.
        unsafe { core::slice::from_raw_parts_mut(page.frame.as_ptr(), PAGE_SIZE) }
    }

    /// Releases the pages now (the same as dropping the handle).
    pub fn release(self) {}

    /// Marks every page written: each is dirty (and valid) once released.
    pub fn mark_all_written(&mut self) {
        for (_, written) in &mut self.pages {
            *written = true;
        }
    }
}

impl<V: Vnode> Drop for BusyPages<'_, V> {
    fn drop(&mut self) {
        let object = self.vnode.object();
        let mut state = object.lock();
        let mut wake = false;
        let mut dirtied = false;
        for &(page, written) in &self.pages {
            if written {
                if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                    // Written bytes are valid; whether the page may be stored to
                    // (`RDONLY`) is the fault's business, not the writer's.
                    resident.flags.remove(PageFlags::FAKE);
                }
                state.mark(page.offset, DirtyStatus::Dirty);
                dirtied = true;
            } else if let Some(resident) = state.cache_mut().lookup_mut(page.offset) {
                if resident.flags.contains(PageFlags::FAKE) {
                    resident.flags |= PageFlags::RELEASED;
                }
            }
            wake |= state.settle(page.offset);
        }
        if dirtied {
            state.note_dirty(self.vnode);
        }
        drop(state);
        object.wake_if(wake);
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
    pub(crate) fn with_len(len: usize) -> crate::Result<Self> {
        if len <= INLINE_PAGES {
            return Ok(Frames::Inline([None; INLINE_PAGES], len));
        }
        let mut frames = Vec::new();
        frames
            .try_reserve_exact(len)
            .map_err(|_| crate::Error::NoMemory)?;
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

/// Resident, valid pages found by the fast path (`GetFlags::LOCKED`), borrowed under
/// the object lock: shared for read access, so cached reads run in parallel;
/// exclusive for write access. Entries are `None` where no page could be had without
/// sleeping. Dropping the handle drops the lock.
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

    /// The byte offset of slot `index`.
    pub fn offset(&self, index: usize) -> u64 {
        self.start + (index * PAGE_SIZE) as u64
    }

    /// The bytes of the page in slot `index`, if one was found.
    pub fn bytes(&self, index: usize) -> Option<&[u8]> {
        let frame = (*self.frames.as_slice().get(index)?)?;
        // SAFETY: the page is resident, valid and not busy, and this handle holds the
        // object lock (shared or exclusive) for its whole life: no device or busy owner
        // touches a non-busy page, mapping stores need the lock exclusively, and the
        // page cannot be freed without it. The slice borrows `self`.
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
        state.note_dirty(self.vnode);
        // SAFETY: as in `bytes`, and the lock is held exclusively, so no other thread
        // reads these bytes under the shared lock; `&mut self` makes the slice unique.
        Some(unsafe { core::slice::from_raw_parts_mut(frame.as_ptr(), PAGE_SIZE) })
    }

    /// Releases the lock now (the same as dropping the handle).
    pub fn release(self) {}
}
