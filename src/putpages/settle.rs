//! The pipeline's *settle* step: the write half of the I/O completion (the reference's
//! `uvm_aio_aiodone`), run on the flushing thread for a synchronous write and from the
//! device's completion for an asynchronous one.

use super::Guard;
use super::cluster::pages_at;
use crate::error::Result;
use crate::hooks::PageCache;
use crate::object::{InFlight, ObjectState, Wakeup};
use crate::page::{DirtyStatus, PAGE_SIZE, PageFlags};
use crate::vnode::{Vnode, note_dirty};

/// A page write counted in flight: its `count` pages from `first`, settled together,
/// and the count ended, when it completes ([`complete_write`]).
pub(super) struct PageWrite {
    pub(super) first: u64,
    pub(super) count: usize,
    pub(super) write: InFlight,
}

/// The pipeline's *settle* step, on this thread: takes the object lock, completes
/// `written` with `result` ([`complete_write`]) and wakes its waiters; returns the lock
/// with the result.
pub(super) fn settle_locked<V: Vnode>(
    vnode: &V,
    written: PageWrite,
    result: Result,
) -> (Guard<'_, V>, Result) {
    let object = vnode.object();
    let mut state = object.lock();
    let wake = complete_write(&mut state, vnode, &written, result);
    object.wake_if(wake);
    (state, result)
}

/// Completes a page write under the object lock (the pipeline's *settle* step): settles
/// its pages ([`settle_written`]) and ends its in-flight count. Returns whether waiters
/// must be woken. Takes the write by reference: an asynchronous write's completion,
/// possibly in an interrupt, keeps what it captured for thread context to drop.
pub(super) fn complete_write<V: Vnode>(
    state: &mut ObjectState<V::Cache>,
    vnode: &V,
    written: &PageWrite,
    result: Result,
) -> Wakeup {
    let PageWrite {
        first,
        count,
        ref write,
    } = *written;
    if count != 0 {
        state.note_write_result(write, result);
    }
    let wake = settle_written(state, vnode, first, count, result);
    state.end_write(write) | wake
}

/// Settles `count` busy pages from `first` after their write (the write half of the
/// reference's `uvm_aio_aiodone`), under the object lock. Returns whether waiters must
/// be woken.
///
/// On success each page leaves writeback and is unbusied; pages marked `RELEASED` (or
/// `PAGEOUT`, by the page daemon) are freed. The dirty status is left as the flush set
/// it, so a store through a mapping meanwhile still shows. On failure nothing is lost:
/// each page stays resident and becomes dirty again, loses `RELEASED`/`PAGEOUT`, is
/// requeued and unbusied; the error is recorded for every cursor to report (and counted
/// towards the object's failed state) and the vnode goes back on the work list.
fn settle_written<V: Vnode>(
    state: &mut ObjectState<V::Cache>,
    vnode: &V,
    first: u64,
    count: usize,
    result: Result,
) -> Wakeup {
    let mut wake = Wakeup::NONE;
    let cluster = pages_at(first, count);
    state
        .cache_mut()
        .set_writeback_range(cluster.clone(), false);
    for at in cluster.step_by(PAGE_SIZE) {
        match result {
            // Paged out or released: freed now that the data is on disk.
            Ok(()) => wake |= state.unbusy_written(at),
            Err(_) => {
                let Some(page) = state.cache_mut().lookup_mut(at) else {
                    debug_assert!(false, "written page {at:#x} is not resident");
                    continue;
                };
                page.flags.remove(PageFlags::RELEASED | PageFlags::PAGEOUT);
                state.mark(at, DirtyStatus::Dirty);
                wake |= state.settle(at);
            }
        }
    }
    if let Err(error) = result {
        log::trace!("write of {first:#x}+{count} pages failed: {error:?}; kept dirty");
        if count != 0 {
            note_dirty(&mut *state, vnode);
        }
    }
    wake
}
