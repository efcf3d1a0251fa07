//! A counting global allocator for the tests that prove a call touches no heap
//! (`IoRequest::complete`): `System`, counting what a thread allocates and frees while
//! it runs inside [`counted`], and the bytes each thread holds ([`live_bytes`], for
//! the memory figures of `tests/memory.rs` and perf_report). A binary that declares
//! `mod heap;` gets it as its `#[global_allocator]`.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// What a call allocated and freed on its thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heap {
    pub allocs: usize,
    pub frees: usize,
}

impl std::ops::Add for Heap {
    type Output = Heap;
    fn add(self, other: Heap) -> Heap {
        Heap {
            allocs: self.allocs + other.allocs,
            frees: self.frees + other.frees,
        }
    }
}

std::thread_local! {
    /// Whether this thread is inside [`counted`] (and not inside [`uncounted`]).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
    static FREES: Cell<usize> = const { Cell::new(0) };
    /// Bytes this thread allocated and has not freed (always counted).
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// Bytes this thread has allocated and not freed, whatever thread frees them: take
/// the difference across a stretch of a thread's own work.
pub fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

fn add_live(bytes: isize) {
    // `try_with`: the allocator also runs while the thread's locals are torn down.
    let _ = LIVE.try_with(|live| live.set(live.get() + bytes));
}

/// Runs `f`, counting what it allocates and frees on this thread.
pub fn counted(f: impl FnOnce()) -> Heap {
    ALLOCS.with(|c| c.set(0));
    FREES.with(|c| c.set(0));
    INSIDE.with(|inside| inside.set(true));
    f();
    INSIDE.with(|inside| inside.set(false));
    Heap {
        allocs: ALLOCS.with(Cell::get),
        frees: FREES.with(Cell::get),
    }
}

/// Runs `f` without counting it, even inside [`counted`]: for a test's own
/// bookkeeping in a hook the counted call reaches (a scheduler's wake log, say).
pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    let inside = INSIDE.with(|inside| inside.replace(false));
    let result = f();
    INSIDE.with(|c| c.set(inside));
    result
}

/// Whether this thread runs inside [`counted`] right now.
pub fn counting() -> bool {
    INSIDE.try_with(Cell::get).unwrap_or(false)
}

fn count(counter: &'static std::thread::LocalKey<Cell<usize>>) {
    // `try_with`: the allocator also runs while the thread's locals are torn down.
    if counting() {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
    }
}

struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; counting touches only
// const-initialised thread-locals, which allocate nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCS);
        add_live(layout.size() as isize);
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCS);
        add_live(layout.size() as isize);
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&ALLOCS);
        count(&FREES);
        add_live(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded with the caller's own guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(&FREES);
        add_live(-(layout.size() as isize));
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;
