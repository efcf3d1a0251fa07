//! Starting read-ahead: the pages a [`ReadAhead`] plans, read asynchronously one
//! transfer at a time, resident pages skipped, every failure quiet.
//!
//! Each request group is one transfer, so its pages settle when that request lands: a
//! reader waiting for the first page of a window waits for one request, not for the
//! whole window.

use core::ops::Range;

use crate::error::Error;
use crate::fault::{Fault, GetFlags};
use crate::hooks::PageCache;
use crate::object::ObjectState;
use crate::page::{PAGE_SHIFT, PAGE_SIZE, PageFlags, round_page};
use crate::readahead::{Advice, Found, Limits, ReadAhead, transfer_end};
use crate::sync::Arc;
use crate::vnode::{Vnode, max_transfer};

use super::getpages;

/// Read-ahead's unit at most: a device that reports no transfer limit (a RAM disk's
/// `usize::MAX`) would otherwise have a one-byte read read the whole file before it
/// returns.
const LARGEST_TRANSFER: usize = 1 << 20;

/// Read-ahead's unit in pages: the vnode's maximum transfer, at most
/// [`LARGEST_TRANSFER`]; windows are whole multiples of it.
fn transfer_pages<V: Vnode>(vnode: &V) -> u64 {
    (max_transfer(vnode).min(LARGEST_TRANSFER.max(PAGE_SIZE)) >> PAGE_SHIFT) as u64
}

/// One reader's reading of `count` pages from page index `first`, for read-ahead to
/// learn from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reading {
    pub(crate) first: u64,
    pub(crate) count: u64,
    pub(crate) found: Found,
    pub(crate) advice: Advice,
}

/// Feeds `reading` to the reader's own read-ahead state (`own`), or to the object's if
/// it brings none, and starts what that plans. Takes and drops the object lock; call
/// it holding no page and no object lock.
pub(crate) fn read_ahead<V: Vnode>(vnode: &Arc<V>, own: Option<&mut ReadAhead>, reading: Reading) {
    if let Some(window) = plan(vnode, own, reading) {
        start(vnode, window);
    }
}

/// What `reading` earns: the pages to start reading, if any.
/// A window of `max` pages, made smaller where the cache's memory domain is small: at
/// most a sixteenth of its budget (two windows in flight then hold an eighth), and at
/// least one transfer. Read-ahead allocates a window's pages before any is read, so a
/// window near the budget would leave the reader's own fault no frame (Linux bounds
/// its windows by free memory too).
fn within_budget<C: PageCache>(state: &ObjectState<C>, max: u64, transfer: u64) -> u64 {
    let Some(memory) = state.cache().memory() else {
        return max;
    };
    let share = u64::try_from(memory.budget() / 16).unwrap_or(u64::MAX);
    max.min(share).max(transfer.min(max))
}

pub(crate) fn plan<V: Vnode>(
    vnode: &Arc<V>,
    own: Option<&mut ReadAhead>,
    reading: Reading,
) -> Option<Range<u64>> {
    let Reading {
        first,
        count,
        found,
        advice,
    } = reading;
    let object = vnode.object();
    let transfer = transfer_pages(&**vnode);
    let plan_with = |ahead: &mut ReadAhead, state: &ObjectState<V::Cache>| {
        let limits = Limits {
            max: within_budget(state, ahead.max_pages(transfer), transfer),
            transfer,
            eof: round_page(state.size()) >> PAGE_SHIFT,
        };
        ahead.access(first, count, found, advice, limits, |limit| {
            resident_below(state, first, limit)
        })
    };
    // Most accesses (resident pages short of the marker) only move the reader on, and
    // need neither the object lock nor the limits.
    match own {
        Some(ahead) => {
            if ahead.quiet_access(first, count, found, advice) {
                return None;
            }
            let state = object.read();
            plan_with(ahead, &state)
        }
        None => {
            if object
                .read_ahead()
                .quiet_access(first, count, found, advice)
            {
                return None;
            }
            // The object lock before the read-ahead lock, a leaf.
            let state = object.read();
            let mut ahead = object.read_ahead();
            plan_with(&mut ahead, &state)
        }
    }
}

/// How a window splits between a synchronous fault of `request` (page indexes) and
/// read-ahead:
/// - a window wholly past the request (the reader reached a marker, its own pages in
///   flight or resident) is read ahead at once, before the fault waits, so the next
///   window queues behind the request the reader waits for;
/// - a window that holds the request has the fault read along the missing pages that
///   follow it up to the end of its last page's transfer (one request with its own),
///   and read-ahead start at the next transfer once the fault is done, so the reader
///   never waits behind read-ahead;
/// - a window that starts inside the request is read ahead once the fault is done.
pub(crate) struct Split {
    /// The pages the fault reads along with its own, from `request.end`.
    pub(crate) along: Range<u64>,
    /// The pages to start reading ahead before the fault.
    pub(crate) now: Range<u64>,
    /// The pages to start reading ahead once the fault has its pages.
    pub(crate) later: Range<u64>,
}

// Cannot overflow: a fault asks for at least one page, so `request.end >= 1`.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn split<V: Vnode>(vnode: &Arc<V>, window: Range<u64>, request: Range<u64>) -> Split {
    let none = request.end..request.end;
    if window.start >= request.end {
        return Split {
            along: none.clone(),
            now: window,
            later: none,
        };
    }
    if window.start > request.start || window.end <= request.end {
        return Split {
            along: none.clone(),
            now: none,
            later: window,
        };
    }
    let transfer = transfer_pages(&**vnode);
    let next_transfer = transfer_end(request.end - 1, transfer).min(window.end);
    let chunk = request.end..next_transfer;
    let along = match first_missing_run(&**vnode, chunk.clone()) {
        // Only a run straight after the request joins its read; what follows a
        // resident page in this transfer is left, as read-ahead leaves it.
        Some(run) if run.start == chunk.start => run,
        _ => none.clone(),
    };
    Split {
        along,
        now: none,
        later: next_transfer..window.end,
    }
}

/// Whether every page of the byte range `range` is resident, valid and not busy (what
/// a reader finds there, for read-ahead to learn from).
// Cannot overflow: `range` is a checked fault's, so the count of its pages fits.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn found<C: PageCache>(state: &ObjectState<C>, range: Range<u64>) -> Found {
    let wanted = (range.end - range.start) >> PAGE_SHIFT;
    let valid = state
        .cache()
        .range(range)
        .filter(|page| !page.flags.intersects(PageFlags::BUSY | PageFlags::FAKE))
        .count() as u64;
    if valid == wanted {
        Found::Resident
    } else {
        Found::Missing
    }
}

/// How many resident pages lead up to page `first`, at most `limit`.
// Cannot overflow: `count < limit`.
#[allow(clippy::arithmetic_side_effects)]
fn resident_below<C: PageCache>(state: &ObjectState<C>, first: u64, limit: u64) -> u64 {
    let cache = state.cache();
    let mut count = 0;
    let mut page = first;
    while count < limit {
        let Some(below) = page.checked_sub(1) else {
            break;
        };
        if cache.lookup(below << PAGE_SHIFT).is_none() {
            break;
        }
        page = below;
        count += 1;
    }
    count
}

/// Starts reading the pages `window` (page indexes) asynchronously: each transfer's
/// worth on its own, its resident pages skipped, no timestamp marked (the reader's
/// own access marks it). A transfer with a busy page is left
/// to whoever holds it; running out of memory ends read-ahead quietly, as does any
/// other error (a reader that needs the pages reads them and meets it then).
// Cannot overflow: a run lies inside its chunk, so it does not end before it starts.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn start<V: Vnode>(vnode: &Arc<V>, window: Range<u64>) {
    let transfer = transfer_pages(&**vnode);
    let mut at = window.start;
    while at < window.end {
        let chunk = at..transfer_end(at, transfer).min(window.end);
        at = chunk.end;
        let Some(missing) = first_missing_run(&**vnode, chunk.clone()) else {
            continue;
        };
        let count = (missing.end - missing.start) as usize;
        let fault = Fault::read_ahead(missing.start << PAGE_SHIFT, count)
            .with_flags(GetFlags::NOREADAHEAD | GetFlags::NOTIMESTAMP);
        match getpages(vnode, fault) {
            Ok(_) | Err(Error::Busy) => {}
            Err(error) => {
                log::trace!("read-ahead at page {:#x} ends: {error}", missing.start);
                return;
            }
        }
        // What follows the run inside this transfer (after a resident page) is left:
        // splitting one transfer into several requests costs more than it saves.
    }
}

/// The first run of pages in `chunk` that are not resident (page indexes), if any.
fn first_missing_run<V: Vnode>(vnode: &V, chunk: Range<u64>) -> Option<Range<u64>> {
    let state = vnode.object().read();
    let cache = state.cache();
    let mut start = chunk.start;
    for page in cache.range(chunk.start << PAGE_SHIFT..chunk.end << PAGE_SHIFT) {
        let index = page.offset() >> PAGE_SHIFT;
        if index > start {
            return Some(start..index);
        }
        start = index.saturating_add(1);
    }
    (start < chunk.end).then_some(start..chunk.end)
}
