//! The pipeline's *gather cluster* step: around a seed page that must be written, the
//! dirty, idle neighbours before and after it, bounded by the vnode's maximum transfer
//! and the filesystem's [`BlockMap::putrange`].

use core::ops::Range;

use super::prepare::take_dirty_neighbour;
use super::{Flush, Guard};
use crate::hooks::{BlockMap, PageCache};
use crate::object::ObjectState;
use crate::page::{PAGE_SHIFT, PAGE_SIZE, PageFlags, PageRef, round_page, trunc_page};
use crate::vnode::Vnode;

impl<'a, V: Vnode> Flush<'a, V> {
    /// Gathers the write cluster around the prepared `seed` into `self.pages`. The seed
    /// is made busy and tagged for writeback, then the filesystem is asked for its bound
    /// on the cluster ([`BlockMap::putrange`]) without the object lock (the seed is ours
    /// meanwhile), then the neighbours are taken ([`take_neighbours`](Self::take_neighbours)).
    pub(super) fn gather_cluster(&mut self, mut state: Guard<'a, V>, seed: u64) -> Guard<'a, V> {
        let vnode: &'a V = self.vnode;
        if let Some(page) = state.cache_mut().lookup_mut(seed) {
            page.flags |= PageFlags::BUSY;
        }
        // Tagged before the lock is dropped: its dirty status is already moved on, so a
        // synchronous flush of another thread finds it (and waits for it) only through
        // the writeback tag.
        state.cache_mut().set_writeback(seed, true);
        drop(state);
        let range = vnode.block_map().putrange(seed);
        let mut state = vnode.object().lock();
        let reach = self.cluster_reach(seed, range);
        self.take_neighbours(&mut state, seed, reach);
        state
    }

    /// How many pages the cluster around `seed` may take behind it, and ahead of it
    /// (`None`: as many as the maximum transfer allows): at most half the maximum
    /// transfer behind, and nothing outside the filesystem's `range` (`None` bounds
    /// nothing, an end of 0 nothing above).
    // Cannot overflow: `low <= seed < high` and `seed < trunc_page(u64::MAX)` (the seed
    // is inside a flush range), and `max_pages` pages (`max_transfer` bytes, a `usize`)
    // fit in a `u64`.
    #[allow(clippy::arithmetic_side_effects)]
    fn cluster_reach(&self, seed: u64, range: Option<Range<u64>>) -> (usize, Option<usize>) {
        let page = PAGE_SIZE as u64;
        let (fs_low, fs_high) = match range {
            Some(range) => {
                debug_assert!(range.start <= seed && (range.end == 0 || seed < range.end));
                let low = trunc_page(range.start).min(seed);
                let high = (range.end != 0).then(|| round_page(range.end).max(seed + page));
                (low, high)
            }
            None => (0, None),
        };
        let general_low = seed.saturating_sub((self.max_pages / 2) as u64 * page);
        let low = fs_low.max(general_low);
        let behind = ((seed - low) >> PAGE_SHIFT) as usize;
        let ahead = fs_high.map(|high| ((high - seed - 1) >> PAGE_SHIFT) as usize);
        (behind, ahead)
    }

    /// Builds the write cluster around the busy, dirty `seed` into `self.pages`: dirty,
    /// non-busy resident neighbours, backward then forward, within `max_pages` and
    /// `reach` ([`cluster_reach`](Self::cluster_reach)), each prepared for writing as it
    /// is taken ([`take_dirty_neighbour`]). Each page taken is made busy (without
    /// waiting, so taking them out of order cannot deadlock). The cluster ends at most
    /// at `trunc_page(u64::MAX)` (a page there, which no fault makes, is left out).
    // Cannot overflow: the offsets behind are at or above the reach's low end; `behind
    // <= max_pages / 2 < max_pages`, and `max_pages` pages fit in a `u64`.
    #[allow(clippy::arithmetic_side_effects)]
    fn take_neighbours(
        &mut self,
        state: &mut ObjectState<V::Cache>,
        seed: u64,
        (most_behind, ahead): (usize, Option<usize>),
    ) {
        let page = PAGE_SIZE as u64;
        self.pages.clear();
        self.take_run(state, (1..=most_behind as u64).map(|i| seed - i * page));
        self.pages.reverse();
        let behind = self.pages.len();
        let frame = state
            .cache()
            .lookup(seed)
            .map(|p| p.frame())
            .expect("the seed page is busy and resident");
        self.pages.push(PageRef {
            offset: seed,
            frame,
        });
        let most_ahead = (self.max_pages - behind - 1).min(ahead.unwrap_or(usize::MAX));
        let last = trunc_page(u64::MAX);
        let offsets = (1..=most_ahead as u64)
            .map_while(|i| seed.checked_add(i * page).filter(|&at| at < last));
        self.take_run(state, offsets);
        log::trace!(
            "putpages: cluster {:#x}+{} pages around {seed:#x}",
            self.pages[0].offset,
            self.pages.len()
        );
    }

    /// Appends to the cluster the pages at `offsets`, in order, up to the first that is
    /// not a resident, idle page needing a write.
    fn take_run(&mut self, state: &mut ObjectState<V::Cache>, offsets: impl Iterator<Item = u64>) {
        for at in offsets {
            match take_dirty_neighbour(state, at) {
                Some(found) => self.pages.push(found),
                None => break,
            }
        }
    }
}

/// The offsets of `count` consecutive pages from `first`, a cluster's.
// Cannot overflow: a cluster holds at most `max_transfer` bytes (a `usize`) and ends at
// most at `trunc_page(u64::MAX)` (`Flush::take_neighbours`).
#[allow(clippy::arithmetic_side_effects)]
pub(super) fn pages_at(first: u64, count: usize) -> Range<u64> {
    first..first + (count * PAGE_SIZE) as u64
}
