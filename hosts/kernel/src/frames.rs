//! The kernel's page-frame allocator: one region of physical pages taken from the
//! firmware at boot, handed out a frame at a time. Free frames are kept on an
//! intrusive list (each free frame holds the address of the next one), so the
//! allocator itself needs no heap.

use core::ptr::{self, NonNull};

use crate::interrupts::IrqMutex as Mutex;
use genpager::PAGE_SIZE;

/// The byte every frame is filled with when handed out. Page bytes are unspecified
/// until the pager reads or zeroes them; poisoning makes any byte genpager forgot to
/// fill visible to the self-test.
pub const POISON: u8 = 0xa5;

struct Pool {
    /// First byte of the region.
    start: *mut u8,
    /// Frames in the region.
    total: usize,
    /// Head of the free list (null when empty).
    head: *mut u8,
    /// Frames on the free list.
    free: usize,
}

// SAFETY: the pool's pointers are addresses of frames the pool owns; the mutex around
// it serialises every use, whichever CPU it runs on.
unsafe impl Send for Pool {}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    start: ptr::null_mut(),
    total: 0,
    head: ptr::null_mut(),
    free: 0,
});

/// Gives the allocator `count` frames starting at `start`.
///
/// # Safety
///
/// `start` must be page aligned and point to `count * PAGE_SIZE` writable bytes that
/// nothing else uses for the rest of the kernel's life; call once.
pub unsafe fn init(start: NonNull<u8>, count: usize) {
    let mut pool = POOL.lock();
    pool.start = start.as_ptr();
    pool.total = count;
    for index in (0..count).rev() {
        // SAFETY: `index < count`, so the frame lies inside the region the caller gave
        // us, and it is aligned for a pointer-sized write (page aligned).
        unsafe {
            let frame = start.as_ptr().add(index * PAGE_SIZE);
            frame.cast::<*mut u8>().write(pool.head);
            pool.head = frame;
        }
    }
    pool.free = count;
}

/// Takes a frame off the free list, filled with [`POISON`]; `None` when every frame
/// is in use.
pub fn alloc() -> Option<NonNull<u8>> {
    let frame = {
        let mut pool = POOL.lock();
        let frame = NonNull::new(pool.head)?;
        // SAFETY: `frame` is on the free list, so it is a frame of the region that only
        // the pool uses, holding the next free frame's address in its first word.
        pool.head = unsafe { frame.as_ptr().cast::<*mut u8>().read() };
        pool.free -= 1;
        frame
    };
    // SAFETY: the frame just left the free list: its PAGE_SIZE bytes are ours alone.
    unsafe { frame.as_ptr().write_bytes(POISON, PAGE_SIZE) };
    Some(frame)
}

/// Puts a frame back on the free list.
///
/// # Safety
///
/// `frame` must come from [`alloc`] and nothing may use it any more.
pub unsafe fn free(frame: NonNull<u8>) {
    let mut pool = POOL.lock();
    debug_assert!(
        contains_locked(&pool, frame),
        "freeing a frame the pool never gave out"
    );
    // SAFETY: the caller gives the frame back (this function's contract), so the
    // pool may store the list link in its first word.
    unsafe { frame.as_ptr().cast::<*mut u8>().write(pool.head) };
    pool.head = frame.as_ptr();
    pool.free += 1;
}

fn contains_locked(pool: &Pool, frame: NonNull<u8>) -> bool {
    let start = pool.start as usize;
    let at = frame.as_ptr() as usize;
    at >= start && at < start + pool.total * PAGE_SIZE && (at - start).is_multiple_of(PAGE_SIZE)
}

/// Whether `frame` is the start of a frame of the kernel's region.
pub fn contains(frame: NonNull<u8>) -> bool {
    contains_locked(&POOL.lock(), frame)
}

/// Frames on the free list right now.
pub fn free_frames() -> usize {
    POOL.lock().free
}

/// Frames the allocator manages.
pub fn total_frames() -> usize {
    POOL.lock().total
}
