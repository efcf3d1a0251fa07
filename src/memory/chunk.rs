//! The chunk pool behind [`ChunkPool`](super::ChunkPool): page frames carved out of
//! large heap allocations, shared by every cache that takes frames from the pool.
//!
//! One heap allocation per frame would cost an allocator header each: with page
//! alignment that spaces frames 8 KiB apart, doubling memory and slowing every copy.
//! Frames come instead from chunks of [`CHUNK_FRAMES`] contiguous, page-aligned,
//! zeroed pages. A chunk is 256 KiB of frames where the page size allows: 64 frames of
//! 4 KiB (one bitmap word), 16 of 16 KiB; with 64 KiB pages it is 16 frames, 1 MiB.
//!
//! Chunks are allocated page aligned, so no frame is lost to alignment. (Chunks used
//! to be one page larger and byte aligned, so that a `std` allocator would map them
//! lazily: right while every file had a pool of its own, but a shared pool fills its
//! chunks, and the spare page cost 64 bytes per frame.)
//!
//! The pool always hands out the free frame lowest in chunk order (a bitmap per chunk,
//! and a bitmap of chunks with a free frame), not the one freed last. Pages
//! allocated together, like a read-ahead window or a file written from the start,
//! then get neighbouring frames again after any amount of churn, so a device copies
//! them as one sweep through memory. With a last-freed-first list, a file re-read
//! after random faults got its frames in shuffled order and its writeback copied
//! about 15% slower.
//!
//! Giving a frame back never frees heap memory (it may run in an interrupt handler);
//! chunks that empty are returned to the heap by [`FramePool::trim`].
//!
//! Arithmetic here cannot overflow (hence the module's `allow`): frame indices are
//! below `CHUNK_FRAMES` and chunk indices below the number of chunks, each an
//! allocation of at least 256 KiB, so chunk and frame counts (and `spare`, which counts
//! free frames of live chunks) are far below `usize::MAX / 64`; a frame is taken only
//! from a chunk whose free bitmap is non-zero, and `spare` drops only by frames it
//! counted.
#![allow(clippy::arithmetic_side_effects)]

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::error::{Error, Result};
use crate::page::PAGE_SIZE;

/// Frames per chunk: 256 KiB (above the usual threshold for lazily zeroed mappings),
/// but at least 16 frames and at most one bitmap word of them.
pub(crate) const CHUNK_FRAMES: usize = {
    let frames = (256 << 10) / PAGE_SIZE;
    if frames < 16 {
        16
    } else if frames > 64 {
        64
    } else {
        frames
    }
};

/// A chunk's free bitmap with every frame free.
const ALL_FREE: u64 = u64::MAX >> (u64::BITS as usize - CHUNK_FRAMES);

/// One allocation holding `CHUNK_FRAMES` page-aligned frames; freed on drop.
struct Chunk {
    base: NonNull<u8>,
}

const CHUNK_LAYOUT: Layout = match Layout::from_size_align(CHUNK_FRAMES * PAGE_SIZE, PAGE_SIZE) {
    Ok(layout) => layout,
    Err(_) => panic!("chunk layout"),
};

impl Chunk {
    fn new() -> Result<Self> {
        // SAFETY: CHUNK_LAYOUT has a non-zero size.
        let base = NonNull::new(unsafe { alloc_zeroed(CHUNK_LAYOUT) }).ok_or(Error::NoMemory)?;
        Ok(Self { base })
    }

    fn frame(&self, index: usize) -> NonNull<u8> {
        debug_assert!(index < CHUNK_FRAMES);
        // SAFETY: `index < CHUNK_FRAMES`, so the frame lies inside the allocation of
        // `CHUNK_FRAMES` pages.
        unsafe { self.base.add(index * PAGE_SIZE) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc_zeroed(CHUNK_LAYOUT)` and is freed only here.
        unsafe { dealloc(self.base.as_ptr(), CHUNK_LAYOUT) }
    }
}

/// Which frame of which chunk: what a page keeps to give its frame back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameId(usize);

impl FrameId {
    fn new(chunk: usize, frame: usize) -> Self {
        Self(chunk * CHUNK_FRAMES + frame)
    }

    /// The id as the [`Frame`](super::Frame)'s cookie.
    pub(crate) fn cookie(self) -> usize {
        self.0
    }

    /// The id a cookie from [`FrameId::cookie`] came from.
    pub(crate) fn from_cookie(cookie: usize) -> Self {
        Self(cookie)
    }

    fn chunk(self) -> usize {
        self.0 / CHUNK_FRAMES
    }

    fn bit(self) -> u64 {
        1 << (self.0 % CHUNK_FRAMES)
    }
}

/// Frames and the chunks they live in: which frames are free.
#[derive(Default)]
pub(crate) struct FramePool {
    /// `None` where a chunk was returned to the allocator (its index is reused).
    chunks: Vec<Option<Chunk>>,
    /// Per chunk: bit `i` is set while frame `i` is free.
    free: Vec<u64>,
    /// Per 64 chunks: bit `c` is set while chunk `c` has a free frame.
    with_free: Vec<u64>,
    /// Every word of `with_free` below this one is zero.
    search_from: usize,
    /// Indices of `None` chunks.
    vacant: Vec<usize>,
    spare: usize,
    /// Live chunks all of whose frames are free.
    empty: usize,
}

// SAFETY: the pool owns its chunks outright; the raw pointers are plain addresses into
// them, and which thread allocates or frees a chunk does not matter.
unsafe impl Send for FramePool {}
// SAFETY: `&FramePool` exposes no way to reach the frames' bytes.
unsafe impl Sync for FramePool {}

const _: () = assert!(
    CHUNK_FRAMES > 0 && CHUNK_FRAMES <= u64::BITS as usize,
    "one bitmap word per chunk"
);

impl FramePool {
    /// A pool with no chunk.
    pub(crate) const fn new() -> Self {
        Self {
            chunks: Vec::new(),
            free: Vec::new(),
            with_free: Vec::new(),
            search_from: 0,
            vacant: Vec::new(),
            spare: 0,
            empty: 0,
        }
    }

    /// A frame for a new page: PAGE_SIZE initialized bytes (zero when fresh, the old
    /// contents when recycled), page aligned, valid until given back or the pool is
    /// dropped. The lowest free frame is taken; a new chunk only when none is free.
    pub(crate) fn take(&mut self) -> Result<(FrameId, NonNull<u8>)> {
        let chunk = match self.lowest_with_free() {
            Some(chunk) => chunk,
            None => self.add_chunk()?,
        };
        let frame = self.free[chunk].trailing_zeros() as usize;
        // A vacant chunk has no free frame, so this is always present.
        let bytes = self.chunks[chunk]
            .as_ref()
            .ok_or(Error::NoMemory)?
            .frame(frame);
        if self.free[chunk] == ALL_FREE {
            self.empty -= 1;
        }
        let free = &mut self.free[chunk];
        *free &= *free - 1;
        if *free == 0 {
            self.with_free[chunk / 64] &= !(1 << (chunk % 64));
        }
        self.spare -= 1;
        Ok((FrameId::new(chunk, frame), bytes))
    }

    /// Takes back frame `id` from [`FramePool::take`], whose page is gone.
    pub(crate) fn give(&mut self, id: FrameId) {
        let chunk = id.chunk();
        debug_assert!(self.free[chunk] & id.bit() == 0, "frame given twice");
        self.free[chunk] |= id.bit();
        if self.free[chunk] == ALL_FREE {
            self.empty += 1;
        }
        self.spare += 1;
        self.with_free[chunk / 64] |= 1 << (chunk % 64);
        self.search_from = self.search_from.min(chunk / 64);
    }

    /// How many frames are free for reuse.
    pub(crate) fn spare(&self) -> usize {
        self.spare
    }

    /// How many chunks the pool holds.
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.iter().flatten().count()
    }

    /// How many live chunks have every frame free.
    pub(crate) fn empty_chunks(&self) -> usize {
        self.empty
    }

    /// Returns to the allocator every chunk none of whose frames is in use.
    pub(crate) fn trim(&mut self) {
        for chunk in 0..self.chunks.len() {
            if self.empty == 0 {
                return;
            }
            if self.chunks[chunk].is_some() && self.free[chunk] == ALL_FREE {
                self.empty -= 1;
                self.chunks[chunk] = None;
                self.free[chunk] = 0;
                self.with_free[chunk / 64] &= !(1 << (chunk % 64));
                self.spare -= CHUNK_FRAMES;
                // Cannot fail: `vacant` has room for every chunk index.
                self.vacant.push(chunk);
            }
        }
    }

    /// The lowest chunk with a free frame.
    fn lowest_with_free(&mut self) -> Option<usize> {
        while let Some(&word) = self.with_free.get(self.search_from) {
            if word != 0 {
                return Some(self.search_from * 64 + word.trailing_zeros() as usize);
            }
            self.search_from += 1;
        }
        None
    }

    /// Allocates a chunk, all its frames free; returns its index.
    fn add_chunk(&mut self) -> Result<usize> {
        // Room first, so that a failure changes nothing.
        self.chunks.try_reserve(1).map_err(|_| Error::NoMemory)?;
        self.free.try_reserve(1).map_err(|_| Error::NoMemory)?;
        self.with_free.try_reserve(1).map_err(|_| Error::NoMemory)?;
        // Room for every chunk index, so that `trim` never allocates.
        let vacant_room = (self.chunks.len() + 1).saturating_sub(self.vacant.len());
        self.vacant
            .try_reserve(vacant_room)
            .map_err(|_| Error::NoMemory)?;
        let chunk = Chunk::new()?;
        let index = match self.vacant.pop() {
            Some(index) => {
                self.chunks[index] = Some(chunk);
                index
            }
            None => {
                self.chunks.push(Some(chunk));
                self.free.push(0);
                if self.with_free.len() * 64 < self.chunks.len() {
                    self.with_free.push(0);
                }
                self.chunks.len() - 1
            }
        };
        self.free[index] = ALL_FREE;
        self.empty += 1;
        self.spare += CHUNK_FRAMES;
        let (word, bit) = (index / 64, 1u64 << (index % 64));
        self.with_free[word] |= bit;
        self.search_from = self.search_from.min(word);
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(frame: (FrameId, NonNull<u8>)) -> usize {
        frame.1.as_ptr() as usize
    }

    #[test]
    fn frames_are_contiguous_aligned_zeroed_and_recycled() {
        let mut pool = FramePool::default();
        let frames: Vec<(FrameId, NonNull<u8>)> = (0..CHUNK_FRAMES + 1)
            .map(|_| pool.take().unwrap())
            .collect();
        for pair in frames[..CHUNK_FRAMES].windows(2) {
            assert_eq!(address(pair[1]) - address(pair[0]), PAGE_SIZE);
        }
        assert!(frames.iter().all(|&f| address(f) % PAGE_SIZE == 0));
        // SAFETY: the frame is PAGE_SIZE bytes owned by the pool and used by no page.
        let bytes = unsafe { core::slice::from_raw_parts(frames[5].1.as_ptr(), PAGE_SIZE) };
        assert!(bytes.iter().all(|&b| b == 0));
        pool.give(frames[5].0);
        assert_eq!(pool.take().unwrap(), frames[5]);
        for &(id, _) in &frames {
            pool.give(id);
        }
        assert_eq!(pool.spare(), 2 * CHUNK_FRAMES);
        pool.take().unwrap();
        pool.trim();
        assert_eq!(
            pool.chunks.iter().flatten().count(),
            1,
            "the chunk in use stays"
        );
        assert_eq!(pool.spare(), CHUNK_FRAMES - 1);
        // The returned chunk's index is reused by the next chunk.
        let more: Vec<_> = (0..CHUNK_FRAMES).map(|_| pool.take().unwrap()).collect();
        assert_eq!(pool.chunks.len(), 2);
        assert_eq!(pool.spare(), CHUNK_FRAMES - 1);
        assert!(more.iter().all(|&(id, _)| id.chunk() < 2));
    }

    #[test]
    fn the_lowest_free_frame_is_taken_whatever_the_order_of_freeing() {
        let mut pool = FramePool::default();
        let frames: Vec<(FrameId, NonNull<u8>)> = (0..3 * CHUNK_FRAMES)
            .map(|_| pool.take().unwrap())
            .collect();
        // Free in a scrambled order, as random faults followed by a truncate would.
        let mut order: Vec<usize> = (0..frames.len()).collect();
        order.sort_by_key(|&i| (i * 97) % frames.len());
        for i in order {
            pool.give(frames[i].0);
        }
        let again: Vec<(FrameId, NonNull<u8>)> =
            (0..frames.len()).map(|_| pool.take().unwrap()).collect();
        assert_eq!(again, frames, "handed out in the original, ascending order");
        // One frame freed far up is found after the full chunks below it.
        pool.give(frames[2 * CHUNK_FRAMES + 7].0);
        assert_eq!(pool.take().unwrap(), frames[2 * CHUNK_FRAMES + 7]);
        assert_eq!(pool.spare(), 0);
    }
}
