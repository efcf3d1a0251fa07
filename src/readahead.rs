//! Read-ahead: the window a reader's pattern earns, as a state machine over page
//! indexes that does no I/O itself (the paths that read — [`read`](crate::read),
//! [`read_with`](crate::read_with), synchronous faults, [`fault_around`](crate::fault_around)
//! — start what it plans).
//!
//! See [`ReadAhead`] for what it does.

use core::ops::Range;

/// The access pattern a mapping or an open file announced (`madvise`, `fadvise`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Advice {
    /// No particular pattern: read-ahead adapts to what the reader does.
    #[default]
    Normal,
    /// Random access: never read ahead.
    Random,
    /// Sequential access: read ahead the largest window from the first access on.
    Sequential,
}

/// Whether an access found its pages in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Every page of the access was resident and valid.
    Resident,
    /// Some page had to be read (or was being read).
    Missing,
}

/// The bounds a plan is made within, in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The largest window.
    pub(crate) max: u64,
    /// One maximum transfer of the device.
    pub(crate) transfer: u64,
    /// The first page past the end of file.
    pub(crate) eof: u64,
}

/// Read-ahead state of one reader (an open file description) or of one object.
///
/// A plain value: no allocation, no lock (the caller owns it or keeps it under its
/// own lock), copied or reset freely.
///
/// The ideas are Linux's on-demand read-ahead and NetBSD's `uvm_readahead.c`:
/// - A **miss** that continues the reader's last access (or starts at page 0, or the
///   current window's end) opens a window from the request: the request rounded up to
///   a power of two, ×4 when small and ×2 when middling, at least one transfer (as
///   NetBSD's `RA_MINSIZE`, so the first request is a full one) and at most the
///   maximum (default: 8 transfers, 512 KiB at the default 64 KiB transfer).
/// - Each window carries a **marker**: the first page after the request that opened
///   it, or the first page of a window started ahead. A reader reaching the marker,
///   resident or not, starts the next window at once, ×4 while small then ×2 up to
///   the maximum: the device always has the next window to read while the reader
///   copies the current one, and sequential reading waits for the device only for the
///   first window.
/// - A miss that does not continue anything looks at the pages just below it: if more
///   resident pages lead up to it than it asks for, some reader is going sequentially
///   there (a second reader sharing this state, as Linux's context read-ahead
///   detects); otherwise the access is **random** and only what it asked is read.
/// - Windows end on transfer boundaries once they span a transfer, so that each of
///   their requests is a full one.
/// - A miss inside a window (its pages failed, were refused memory or were taken
///   back) reads the rest of its transfer with it: a window cut short still costs one
///   request per transfer.
/// - The trade: a reader touching every other page from a window's start is read
///   whole (it lands on each window's end with resident pages leading up to it, as a
///   sequential reader served by the fast path does): twice the bytes it asks for, in
///   one request per transfer rather than one per page asked — less device time
///   wherever a request costs more than a few pages' transfer.
/// - [`Advice::Random`] never reads ahead; [`Advice::Sequential`] opens and continues
///   with the maximum window at once; [`Advice::Normal`] adapts as above.
///
/// A kernel keeps one [`ReadAhead`] per open file description and passes it to
/// [`read_with`](crate::read_with) and [`fault_around`](crate::fault_around); each
/// [`VmObject`](crate::VmObject) keeps one more, for [`read`](crate::read) and for
/// synchronous read faults that come without one.
///
/// ```
/// use genpager::{Advice, ReadAhead};
///
/// // What a kernel keeps in each open file: fadvise(SEQUENTIAL), 1 MiB windows.
/// let mut ahead = ReadAhead::new().with_max_window(1 << 20);
/// ahead.set_advice(Advice::Sequential);
/// assert_eq!(ahead.advice(), Advice::Sequential);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadAhead {
    /// The pages read ahead since the last window was opened: `start .. end` (empty:
    /// none). The windows started at markers since then extend it.
    start: u64,
    end: u64,
    /// The window's size before it was aligned and clipped: what the next grows from.
    size: u64,
    /// The page whose access starts the next window, if any.
    marker: Option<u64>,
    /// The page after the reader's last access, if any.
    next: Option<u64>,
    /// The largest window in bytes, `None` for the default.
    max_window: Option<usize>,
    /// What the owner announced, for [`read_with`](crate::read_with).
    advice: Advice,
}

impl Default for ReadAhead {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadAhead {
    /// A reader that has read nothing yet: no window, [`Advice::Normal`], the default
    /// maximum window (8 × the vnode's maximum transfer).
    pub const fn new() -> Self {
        Self {
            start: 0,
            end: 0,
            size: 0,
            marker: None,
            next: None,
            max_window: None,
            advice: Advice::Normal,
        }
    }

    /// The largest window, in bytes (rounded down to whole pages, at least one page).
    #[must_use]
    pub const fn with_max_window(self, bytes: usize) -> Self {
        Self {
            max_window: Some(bytes),
            ..self
        }
    }

    /// What the reader announced ([`Advice::Normal`] unless set).
    pub const fn advice(&self) -> Advice {
        self.advice
    }

    /// Sets the reader's advice (`fadvise`); the window is kept.
    pub fn set_advice(&mut self, advice: Advice) {
        self.advice = advice;
    }

    /// Forgets the reader's history and window (an `lseek` that the kernel wants to
    /// count as a fresh start; a seek is also detected on its own, as a miss that
    /// continues nothing).
    pub fn reset(&mut self) {
        *self = Self {
            max_window: self.max_window,
            advice: self.advice,
            ..Self::new()
        };
    }

    /// The largest window in pages, given the vnode's maximum transfer in pages:
    /// the configured one, or 8 transfers.
    pub(crate) fn max_pages(&self, transfer_pages: u64) -> u64 {
        let page = crate::page::PAGE_SIZE;
        match self.max_window {
            Some(bytes) => (bytes / page).max(1) as u64,
            None => transfer_pages.saturating_mul(8),
        }
    }

    /// The pages read ahead since the reader's last fresh start (a miss that opened a
    /// window), page indexes `start .. end`; empty when there are none.
    pub fn window(&self) -> Range<u64> {
        self.start..self.end
    }

    /// Records an access that needs no planning — any access under [`Advice::Random`],
    /// a resident one that does not reach the marker — and returns `true`; `false`
    /// (recording nothing) if the access must go through [`access`](Self::access).
    pub(crate) fn quiet_access(
        &mut self,
        first: u64,
        count: u64,
        found: Found,
        advice: Advice,
    ) -> bool {
        let request_end = first.saturating_add(count.max(1));
        let quiet = advice == Advice::Random
            || (found == Found::Resident && !self.reaches_marker(first, request_end));
        if quiet {
            if advice == Advice::Random {
                self.forget_window();
            }
            self.next = Some(request_end);
        }
        quiet
    }

    /// Plans the read-ahead an access of `count` pages from page `first` earns, and
    /// records the access. `history(limit)` counts the resident pages just below
    /// `first` (at most `limit`), asked only for a miss that continues nothing.
    /// Returns the pages to start reading asynchronously (they may include the
    /// access's own missing pages, which the caller's synchronous read then waits
    /// for instead of reading them itself).
    pub(crate) fn access(
        &mut self,
        first: u64,
        count: u64,
        found: Found,
        advice: Advice,
        limits: Limits,
        history: impl FnOnce(u64) -> u64,
    ) -> Option<Range<u64>> {
        let request_end = first.saturating_add(count.max(1));
        let plan = match advice {
            Advice::Random => {
                self.forget_window();
                None
            }
            _ if self.reaches_marker(first, request_end) => self.advance(advice, limits),
            _ if found == Found::Resident => None,
            // The pages are being read ahead, or were and are gone (a failed request,
            // memory taken back, a transfer read-ahead skipped): the caller's read
            // waits for them or reads them, and with them what is missing of their
            // transfer, so a window cut short still costs one request per transfer.
            _ if self.start <= first && first < self.end => {
                Some(first..transfer_end(first, limits.transfer).min(self.end))
            }
            Advice::Sequential => self.open(first, count, limits.max, limits),
            Advice::Normal if self.continues(first) => {
                let size = if first == self.end && self.size != 0 {
                    grow(self.size, limits.max)
                } else {
                    initial_size(count, limits)
                };
                self.open(first, count, size, limits)
            }
            Advice::Normal => {
                let behind = history(limits.max);
                if behind >= 2 && behind > count {
                    let size = behind.saturating_add(count).min(limits.max);
                    self.open(first, count, size.max(initial_size(count, limits)), limits)
                } else {
                    // Random: read what was asked and nothing more.
                    self.forget_window();
                    None
                }
            }
        };
        self.next = Some(request_end);
        plan
    }

    /// Whether an access of pages `first .. end` reaches the marker.
    fn reaches_marker(&self, first: u64, end: u64) -> bool {
        self.marker.is_some_and(|m| first <= m && m < end)
    }

    /// Whether an access at `first` continues the reader: right after its last access,
    /// at the current window's end, or at the start of the file before any access.
    fn continues(&self, first: u64) -> bool {
        match self.next {
            Some(next) => first == next || (self.size != 0 && first == self.end),
            None => first == 0,
        }
    }

    fn forget_window(&mut self) {
        self.start = 0;
        self.end = 0;
        self.size = 0;
        self.marker = None;
    }

    /// Opens a window of `size` pages at `first` for a miss of `count` pages; its
    /// marker is the page after the request.
    fn open(&mut self, first: u64, count: u64, size: u64, limits: Limits) -> Option<Range<u64>> {
        let request_end = first.saturating_add(count);
        let size = size.max(count);
        let end = if count >= limits.max {
            // A read as large as the largest window is read as asked.
            request_end.min(limits.eof)
        } else {
            aligned_end(first, first.saturating_add(size), request_end, limits)
        };
        self.start = first;
        self.end = end.max(first);
        self.size = size;
        self.marker = (request_end < self.end).then_some(request_end);
        (first < self.end).then_some(first..self.end)
    }

    /// The reader reached the marker: the window after the current one, larger, its
    /// first page the next marker.
    fn advance(&mut self, advice: Advice, limits: Limits) -> Option<Range<u64>> {
        let size = match advice {
            Advice::Sequential => limits.max,
            _ => grow(self.size, limits.max),
        };
        let start = self.end;
        let end = aligned_end(
            start,
            start.saturating_add(size),
            start.saturating_add(1),
            limits,
        );
        if end <= start {
            // At the end of file: nothing more to read.
            self.marker = None;
            return None;
        }
        self.end = end;
        self.size = size;
        self.marker = Some(start);
        Some(start..end)
    }
}

/// The end of the transfer that holds page `page`, for transfers of `transfer` pages
/// from page 0 (the boundary after `page`).
// Cannot overflow: the division is by at least 1; the rest saturates.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn transfer_end(page: u64, transfer: u64) -> u64 {
    let transfer = transfer.max(1);
    (page / transfer).saturating_add(1).saturating_mul(transfer)
}

/// The first window for a request of `count` pages: rounded up to a power of two, ×4
/// up to a 32nd of the maximum, ×2 up to a quarter, else the maximum; at least one
/// transfer (when the maximum allows) and at most the maximum.
fn initial_size(count: u64, limits: Limits) -> u64 {
    let max = limits.max;
    let rounded = count.max(1).checked_next_power_of_two().unwrap_or(u64::MAX);
    let size = if rounded <= max / 32 {
        rounded.saturating_mul(4)
    } else if rounded <= max / 4 {
        rounded.saturating_mul(2)
    } else {
        max
    };
    size.max(limits.transfer.min(max)).min(max)
}

/// The window after one of `size` pages: ×4 while below a 16th of the maximum, else
/// ×2, at most the maximum.
fn grow(size: u64, max: u64) -> u64 {
    let factor = if size < max / 16 { 4 } else { 2 };
    size.max(1).saturating_mul(factor).min(max)
}

/// Where a window from `start` meant to end at `end` ends: on a transfer boundary
/// (down, unless that would not pass `at_least`; then up), and never past end of file.
// Cannot overflow: `end % transfer <= end`, and `transfer` is at least 1.
#[allow(clippy::arithmetic_side_effects)]
fn aligned_end(start: u64, end: u64, at_least: u64, limits: Limits) -> u64 {
    let transfer = limits.transfer.max(1);
    let down = end - end % transfer;
    let aligned = if end.saturating_sub(start) < transfer {
        end
    } else if down >= at_least {
        down
    } else {
        down.saturating_add(transfer)
    };
    aligned.min(limits.eof)
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    /// 64 KiB transfers and the default 512 KiB window at 4 KiB pages: 16 and 128
    /// pages; a file of 10,000 pages.
    const LIMITS: Limits = Limits {
        max: 128,
        transfer: 16,
        eof: 10_000,
    };

    fn no_history(_: u64) -> u64 {
        0
    }

    fn miss(ahead: &mut ReadAhead, first: u64, count: u64) -> Option<Range<u64>> {
        ahead.access(
            first,
            count,
            Found::Missing,
            Advice::Normal,
            LIMITS,
            no_history,
        )
    }

    fn hit(ahead: &mut ReadAhead, first: u64, count: u64) -> Option<Range<u64>> {
        ahead.access(
            first,
            count,
            Found::Resident,
            Advice::Normal,
            LIMITS,
            no_history,
        )
    }

    /// A reader going a page at a time: where each window starts and what it reads.
    fn windows_of_single_page_reader(pages: u64, limits: Limits) -> Vec<Range<u64>> {
        let mut ahead = ReadAhead::new();
        let mut resident = 0;
        let mut windows = Vec::new();
        for page in 0..pages {
            let found = if page < resident {
                Found::Resident
            } else {
                Found::Missing
            };
            let plan = ahead.access(page, 1, found, Advice::Normal, limits, no_history);
            if let Some(window) = plan {
                resident = resident.max(window.end);
                windows.push(window);
            }
        }
        windows
    }

    #[test]
    fn first_miss_opens_a_transfer_and_marks_the_page_after_the_request() {
        let mut ahead = ReadAhead::new();
        assert_eq!(miss(&mut ahead, 0, 1), Some(0..16));
        assert_eq!(ahead.marker, Some(1));
        // The next page is resident (read with the window): reaching the marker starts
        // the next window at once, twice as large, ending on a transfer boundary.
        assert_eq!(hit(&mut ahead, 1, 1), Some(16..48));
        assert_eq!(ahead.marker, Some(16));
        // Pages inside the window start nothing more.
        for page in 2..16 {
            assert_eq!(hit(&mut ahead, page, 1), None, "page {page}");
        }
    }

    #[test]
    fn windows_ramp_up_to_the_maximum_and_stay_on_transfer_boundaries() {
        let windows = windows_of_single_page_reader(2000, LIMITS);
        let sizes: Vec<u64> = windows.iter().map(|w| w.end - w.start).collect();
        assert_eq!(&sizes[..5], &[16, 32, 64, 128, 128]);
        for window in &windows {
            assert_eq!(window.start % 16, 0, "{window:?}");
            assert!(
                window.end % 16 == 0 || window.end == LIMITS.eof,
                "{window:?}"
            );
        }
        // Contiguous, no page read twice, none skipped.
        for pair in windows.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert!(windows.last().unwrap().end >= 2000);
    }

    #[test]
    fn the_next_window_starts_when_the_reader_enters_the_current_one() {
        let mut ahead = ReadAhead::new();
        miss(&mut ahead, 0, 1);
        assert_eq!(hit(&mut ahead, 1, 1), Some(16..48));
        // The reader reaches page 16 while it is still being read (a miss): the window
        // after it is started before the reader waits.
        assert_eq!(miss(&mut ahead, 16, 1), Some(48..112));
        // A miss inside the window plans only the rest of its transfer: the reader
        // waits for pages in flight, and reads along what is gone.
        assert_eq!(miss(&mut ahead, 17, 1), Some(17..32));
        assert_eq!(miss(&mut ahead, 40, 1), Some(40..48));
        assert_eq!(ahead.window(), 0..112, "the window is unchanged");
    }

    #[test]
    fn a_read_larger_than_the_ramp_opens_a_larger_first_window() {
        let mut ahead = ReadAhead::new();
        // 16 pages (64 KiB reads): rounded 16 <= 128/4, so ×2.
        assert_eq!(miss(&mut ahead, 0, 16), Some(0..32));
        assert_eq!(ahead.marker, Some(16));
        // A read past the maximum is read as asked, with no marker.
        let mut ahead = ReadAhead::new();
        assert_eq!(miss(&mut ahead, 0, 300), Some(0..300));
        assert_eq!(ahead.marker, None);
    }

    #[test]
    fn random_misses_read_only_what_they_ask() {
        let mut ahead = ReadAhead::new();
        for first in [500, 37, 9000, 1234, 4321, 77] {
            assert_eq!(miss(&mut ahead, first, 1), None, "page {first}");
        }
    }

    #[test]
    fn a_seek_resets_the_window_and_a_sequential_run_after_it_earns_a_new_one() {
        let mut ahead = ReadAhead::new();
        miss(&mut ahead, 0, 1);
        hit(&mut ahead, 1, 1);
        assert_eq!(ahead.window(), 0..48);
        // Seek far away: random, the window is gone (its marker cannot fire later).
        assert_eq!(miss(&mut ahead, 5000, 1), None);
        assert_eq!(ahead.window(), 0..0);
        assert_eq!(ahead.marker, None);
        // Go on from there: sequential again.
        assert_eq!(miss(&mut ahead, 5001, 1), Some(5001..5008));
        // reset() forgets the history: page 5002 no longer continues anything.
        ahead.reset();
        assert_eq!(miss(&mut ahead, 5020, 1), None);
    }

    #[test]
    fn windows_stop_at_end_of_file() {
        let limits = Limits { eof: 40, ..LIMITS };
        let windows = windows_of_single_page_reader(40, limits);
        assert_eq!(windows, vec![0..16, 16..40]);
        let mut ahead = ReadAhead::new();
        assert_eq!(
            ahead.access(
                38,
                1,
                Found::Missing,
                Advice::Sequential,
                limits,
                no_history
            ),
            Some(38..40)
        );
        // The marker would be page 39, the last: reaching it starts nothing past EOF.
        assert_eq!(
            ahead.access(
                39,
                1,
                Found::Resident,
                Advice::Sequential,
                limits,
                no_history
            ),
            None
        );
    }

    #[test]
    fn advice_random_never_and_sequential_the_maximum_at_once() {
        let mut ahead = ReadAhead::new();
        for page in 0..64 {
            let plan = ahead.access(page, 1, Found::Missing, Advice::Random, LIMITS, |_| 64);
            assert_eq!(plan, None);
        }
        let mut ahead = ReadAhead::new();
        let plan = ahead.access(0, 1, Found::Missing, Advice::Sequential, LIMITS, no_history);
        assert_eq!(plan, Some(0..128));
        let plan = ahead.access(
            1,
            1,
            Found::Resident,
            Advice::Sequential,
            LIMITS,
            no_history,
        );
        assert_eq!(plan, Some(128..256));
        // Even a random-looking first miss reads the maximum.
        let mut ahead = ReadAhead::new();
        let plan = ahead.access(
            777,
            1,
            Found::Missing,
            Advice::Sequential,
            LIMITS,
            no_history,
        );
        assert_eq!(plan, Some(777..896));
    }

    #[test]
    fn resident_pages_leading_up_to_a_miss_count_as_a_sequential_reader() {
        // Two readers share the state: the other one's access broke this one's run,
        // but the pages below its miss are resident.
        let mut ahead = ReadAhead::new();
        miss(&mut ahead, 3000, 1);
        let plan = ahead.access(100, 1, Found::Missing, Advice::Normal, LIMITS, |_| 20);
        assert_eq!(plan, Some(100..112));
        // One resident page below is not a pattern.
        let mut ahead = ReadAhead::new();
        miss(&mut ahead, 3000, 1);
        let plan = ahead.access(100, 1, Found::Missing, Advice::Normal, LIMITS, |_| 1);
        assert_eq!(plan, None);
    }

    #[test]
    fn backward_and_strided_readers_read_nothing_extra() {
        let mut ahead = ReadAhead::new();
        for page in (0..200u64).rev() {
            let plan = miss(&mut ahead, page, 1);
            assert!(plan.is_none() || page == 0, "page {page}: {plan:?}");
        }
        let mut ahead = ReadAhead::new();
        for page in (10..2000u64).step_by(3) {
            assert_eq!(miss(&mut ahead, page, 1), None, "page {page}");
        }
    }

    #[test]
    fn a_configured_maximum_below_a_transfer_is_kept() {
        let ahead = ReadAhead::new().with_max_window(8 * crate::page::PAGE_SIZE);
        let limits = Limits {
            max: ahead.max_pages(16),
            ..LIMITS
        };
        assert_eq!(limits.max, 8);
        let windows = windows_of_single_page_reader(64, limits);
        assert!(windows.iter().all(|w| w.end - w.start <= 8), "{windows:?}");
        assert_eq!(ReadAhead::new().max_pages(16), 128);
    }

    #[test]
    fn page_indexes_near_the_top_do_not_overflow() {
        let top = u64::MAX - 3;
        let limits = Limits {
            eof: u64::MAX,
            ..LIMITS
        };
        let mut ahead = ReadAhead::new();
        let _ = ahead.access(
            top,
            1,
            Found::Missing,
            Advice::Sequential,
            limits,
            no_history,
        );
        let _ = ahead.access(
            top + 1,
            2,
            Found::Resident,
            Advice::Normal,
            limits,
            no_history,
        );
        let _ = ahead.access(
            u64::MAX,
            5,
            Found::Missing,
            Advice::Normal,
            limits,
            no_history,
        );
    }
}
