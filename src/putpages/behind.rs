//! Writeback a flush nobody asked for starts: behind a writer (NetBSD's write-behind),
//! when dirty memory passes its domain's thresholds (Linux's `balance_dirty_pages`),
//! and when pages have stayed dirty too long (the syncer's periodic flush).
//!
//! A writer is held to its own file: above the background threshold it starts
//! writeback of what it has written; above the hard one it also waits until its
//! file's writes in flight have finished. It never waits for other files' writeback,
//! so a writer of a clean file is never stalled by another's slow device, and each
//! wait ends (the writes it waits for are its own, started just before). This is the
//! shape of Linux's throttling before its IO-less rewrite: simpler, and enough for a
//! writer never to leave more than one batch of dirty pages above the threshold.

use core::ops::Range;

use crate::error::Result;
use crate::hooks::PageCache;
use crate::memory::Memory;
use crate::page::Tag;
use crate::sync::Arc;
use crate::vnode::{Vnode, max_transfer};

use super::{PutFlags, TransactionHeld, flush};

/// The dirty-memory state of the writer's domain after a batch, from the calmest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pressure {
    /// Below the background threshold.
    Calm,
    /// Above the background threshold: start writeback of what was written.
    Background,
    /// Above the hard threshold: start it and wait for it.
    Hard,
}

fn pressure(memory: &Memory) -> Pressure {
    if memory.over_hard() {
        Pressure::Hard
    } else if memory.over_background() {
        Pressure::Background
    } else {
        Pressure::Calm
    }
}

/// What [`write`](crate::write()) does after each batch it wrote (`batch`, inside the
/// write's transaction and node lock): starts asynchronous writeback of each cluster
/// whose end the batch reached (write-behind), of every dirty page of its file when
/// dirty memory is over the background threshold, and waits for its file's writes
/// when it is over the hard one. Best effort: a failed start leaves the pages
/// dirty for a later flush (a write error is latched as any asynchronous write's).
pub(crate) fn after_write_batch<V: Vnode>(vnode: &Arc<V>, batch: Range<u64>) {
    let Some(memory) = vnode.object().read().cache().memory() else {
        return;
    };
    let pressure = pressure(memory);
    if pressure >= Pressure::Background {
        // Every dirty page of the file, wherever the writer has been (a backward or
        // scattered writer leaves them above it too), the batch's own included: the
        // next batch may wait for its last page's write, but a writer that always kept
        // its last page back would leave a page dirty in every file it touches.
        start_writeback(vnode, 0..0);
    } else if memory.write_behind() {
        let cluster = max_transfer(&**vnode) as u64;
        // Cannot overflow: `cluster` is at least a page, and `x % cluster <= x`.
        #[allow(clippy::arithmetic_side_effects)]
        let behind = batch.start - batch.start % cluster..batch.end - batch.end % cluster;
        if !behind.is_empty() {
            start_writeback(vnode, behind);
        }
    }
    if pressure == Pressure::Hard {
        let object = vnode.object();
        drop(object.wait_for_writes(object.lock()));
    }
}

/// Starts asynchronous writeback of the dirty pages of `range` (a caller inside the
/// transaction, journal and node lock); `0..0` is the whole file.
fn start_writeback<V: Vnode>(vnode: &Arc<V>, range: Range<u64>) {
    let flags = PutFlags::CLEANIT | PutFlags::JOURNALLOCKED;
    if let Err(error) = flush(
        vnode,
        range.start,
        range.end,
        flags,
        TransactionHeld::ByCaller,
    ) {
        log::trace!("write-behind of {range:#x?} not started: {error}");
    }
}

/// What the kernel's syncer thread calls for each vnode on its work list, once per
/// period, with its clock (`now`, in any unit) and the age after which dirty pages must
/// go to the disk (`max_age`, same unit).
///
/// The first call that finds the file dirty notes `now`; a later call at least
/// `max_age` after it starts asynchronous writeback of every dirty page
/// ([`PutFlags::CLEANIT`], the syncer's lazy flush) and forgets the note. A call that
/// finds the file clean forgets it too. So no page stays dirty longer than `max_age`
/// plus one syncer period (and a file cleaned and dirtied again between two calls may
/// be written a period early). The flush consumes no write error: a failure is latched
/// for the file's next synchronous flush.
///
/// Returns whether writeback was started. Errors of starting it (the transaction hook's,
/// [`Error::NoMemory`](crate::Error::NoMemory)) are returned; the pages stay dirty.
pub fn flush_expired<V: Vnode>(vnode: &Arc<V>, now: u64, max_age: u64) -> Result<bool> {
    let due = {
        let mut state = vnode.object().lock();
        if !state.cache().any_tagged(Tag::Dirty) {
            state.set_dirty_seen(None);
            return Ok(false);
        }
        match state.dirty_seen() {
            None => {
                state.set_dirty_seen(Some(now));
                false
            }
            Some(seen) => now.saturating_sub(seen) >= max_age,
        }
    };
    if !due {
        return Ok(false);
    }
    // The note is forgotten only once writeback has started: a flush that could not
    // start (its transaction refused, say) leaves the file due at the next call.
    flush(
        vnode,
        0,
        0,
        PutFlags::CLEANIT | PutFlags::LAZY,
        TransactionHeld::No,
    )?;
    vnode.object().lock().set_dirty_seen(None);
    Ok(true)
}
