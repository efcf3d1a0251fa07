//! Page frames of the default cache, carved out of large chunks.
//!
//! One heap allocation per frame would cost an allocator header each: with page
//! alignment that spaces frames 8 KiB apart, doubling memory and slowing every copy.
//! Frames come instead from chunks of [`CHUNK_FRAMES`] contiguous pages, allocated
//! zeroed (the allocator maps large zeroed blocks lazily, so untouched frames cost no
//! memory), and freed frames go back on a spare list for reuse.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::error::{Error, Result};
use crate::page::PAGE_SIZE;

/// Frames per chunk: 256 KiB, above the usual threshold for lazily zeroed mappings.
pub(crate) const CHUNK_FRAMES: usize = 64;

/// One allocation holding `CHUNK_FRAMES` page-aligned frames; freed on drop.
struct Chunk {
    base: NonNull<u8>,
    first_frame: NonNull<u8>,
}

// The chunk is allocated with byte alignment and one spare page, so that the
// allocator's zeroed (calloc-style) path is used, and aligned by hand.
const CHUNK_LAYOUT: Layout = match Layout::from_size_align((CHUNK_FRAMES + 1) * PAGE_SIZE, 16) {
    Ok(layout) => layout,
    Err(_) => panic!("chunk layout"),
};

impl Chunk {
    fn new() -> Result<Self> {
        // SAFETY: CHUNK_LAYOUT has a non-zero size.
        let base = NonNull::new(unsafe { alloc_zeroed(CHUNK_LAYOUT) }).ok_or(Error::NoMemory)?;
        let skip = base.as_ptr().align_offset(PAGE_SIZE);
        debug_assert!(skip < PAGE_SIZE);
        // SAFETY: `skip < PAGE_SIZE`, and the allocation has one page more than the
        // frames need, so the first frame and all that follow lie inside it.
        let first_frame = unsafe { base.add(skip) };
        Ok(Self { base, first_frame })
    }

    fn frame(&self, index: usize) -> NonNull<u8> {
        debug_assert!(index < CHUNK_FRAMES);
        // SAFETY: `index < CHUNK_FRAMES`, so the frame lies inside the allocation (see
        // `new`).
        unsafe { self.first_frame.add(index * PAGE_SIZE) }
    }

    fn contains(&self, frame: NonNull<u8>) -> bool {
        let start = self.first_frame.as_ptr() as usize;
        (start..start + CHUNK_FRAMES * PAGE_SIZE).contains(&(frame.as_ptr() as usize))
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: `base` came from `alloc_zeroed(CHUNK_LAYOUT)` and is freed only here.
        unsafe { dealloc(self.base.as_ptr(), CHUNK_LAYOUT) }
    }
}

/// The frames of one cache: the chunks they live in and the ones not in use.
#[derive(Default)]
pub(crate) struct FramePool {
    chunks: Vec<Chunk>,
    spare: Vec<NonNull<u8>>,
}

// SAFETY: the pool owns its chunks outright; the raw pointers are plain addresses into
// them, and which thread allocates or frees a chunk does not matter.
unsafe impl Send for FramePool {}
// SAFETY: `&FramePool` exposes no way to reach the frames' bytes.
unsafe impl Sync for FramePool {}

impl FramePool {
    /// A frame for a new page: PAGE_SIZE initialized bytes (zero when fresh, the old
    /// contents when recycled), page aligned, valid until the pool is dropped.
    pub(crate) fn take(&mut self) -> Result<NonNull<u8>> {
        if let Some(frame) = self.spare.pop() {
            return Ok(frame);
        }
        self.chunks.try_reserve(1).map_err(|_| Error::NoMemory)?;
        self.spare
            .try_reserve(CHUNK_FRAMES)
            .map_err(|_| Error::NoMemory)?;
        let chunk = Chunk::new()?;
        // Pushed in reverse so that frames are handed out in ascending order.
        self.spare
            .extend((1..CHUNK_FRAMES).rev().map(|i| chunk.frame(i)));
        let frame = chunk.frame(0);
        self.chunks.push(chunk);
        Ok(frame)
    }

    /// Takes back a frame from [`FramePool::take`] whose page is gone.
    pub(crate) fn give(&mut self, frame: NonNull<u8>) {
        debug_assert!(self.chunks.iter().any(|chunk| chunk.contains(frame)));
        // Never fails for lack of room: the list had room for every frame once.
        self.spare.push(frame);
    }

    /// How many frames are free for reuse.
    pub(crate) fn spare(&self) -> usize {
        self.spare.len()
    }

    /// Returns to the allocator every chunk none of whose frames is in use.
    pub(crate) fn trim(&mut self) {
        let chunks = &self.chunks;
        let owner = |frame: NonNull<u8>| chunks.iter().position(|c| c.contains(frame));
        let mut free_in = alloc::vec![0usize; chunks.len()];
        for &frame in &self.spare {
            if let Some(chunk) = owner(frame) {
                free_in[chunk] += 1;
            }
        }
        let idle: Vec<bool> = free_in.iter().map(|&n| n == CHUNK_FRAMES).collect();
        self.spare
            .retain(|&frame| owner(frame).is_none_or(|i| !idle[i]));
        let mut index = 0;
        self.chunks.retain(|_| {
            index += 1;
            !idle[index - 1]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_contiguous_aligned_zeroed_and_recycled() {
        let mut pool = FramePool::default();
        let frames: Vec<NonNull<u8>> = (0..CHUNK_FRAMES + 1)
            .map(|_| pool.take().unwrap())
            .collect();
        for pair in frames[..CHUNK_FRAMES].windows(2) {
            assert_eq!(
                pair[1].as_ptr() as usize - pair[0].as_ptr() as usize,
                PAGE_SIZE
            );
        }
        assert!(frames.iter().all(|f| f.as_ptr() as usize % PAGE_SIZE == 0));
        // SAFETY: the frame is PAGE_SIZE bytes owned by the pool and used by no page.
        let bytes = unsafe { core::slice::from_raw_parts(frames[5].as_ptr(), PAGE_SIZE) };
        assert!(bytes.iter().all(|&b| b == 0));
        pool.give(frames[5]);
        assert_eq!(pool.take().unwrap(), frames[5]);
        for &frame in &frames {
            pool.give(frame);
        }
        assert_eq!(pool.spare(), 2 * CHUNK_FRAMES);
        pool.take().unwrap();
        pool.trim();
        assert_eq!(pool.chunks.len(), 1, "the chunk with a frame in use stays");
        assert_eq!(pool.spare(), CHUNK_FRAMES - 1);
    }
}
