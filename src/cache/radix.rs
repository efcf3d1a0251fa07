//! A 64-way radix tree from page index to slab slot, with per-node tag bitmaps: the
//! default cache's index (the shape of Linux's xarray and NetBSD's radix tree).
//!
//! Lookups and inserts cost one step per level (a 64 MiB file of 4 KiB pages is three
//! levels). The tree is keyed by page index, so its fan-out does not depend on the page
//! size: larger pages just make a file's indices, and the tree, smaller. Every node keeps, for each tag, a bitmap of which of its slots carry the
//! tag below them, so "any page tagged?" reads the root and "next tagged page at or
//! after x" descends only into tagged subtrees: O(height), never a walk over untagged
//! pages. Nodes live in an arena grown with `try_reserve`, so running out of memory is
//! an error, not an abort.
//!
//! The tree remembers the leaf its last mutating access went through. Pagers work on
//! runs of neighbouring pages (a cluster, a read-ahead window), which share a leaf, so
//! after the first page of a run every lookup and tag change starts at that leaf
//! instead of walking down from the root. Only `&mut` methods move the hint: readers
//! sharing the tree never write to it.
//!
//! A tree of one value and no node keeps the value in the tree itself (`Single`, the
//! way an xarray keeps a lone entry in its head): a one-page file, of which a kernel
//! may cache tens of thousands, then costs no 280-byte node. The second value moves
//! it into a node. Nodes are reserved one at a time while there are few, so a small
//! file's tree holds only the nodes it uses.
//!
//! Arithmetic here cannot overflow (hence the module's `allow`): indices are page
//! indices (`offset >> PAGE_SHIFT`, below 2^52, less with larger pages), so a leaf's
//! end fits; levels and depths are at most `MAX_HEIGHT` and at least 1 where one is
//! subtracted (a tree with a root has height >= 1, a found path holds the root, a child
//! is one level below a level > 0); `len` and the node counts count values and nodes in
//! memory; and a bit is cleared from a bitmap (`x & (x - 1)`) only while it is non-zero.
#![allow(clippy::arithmetic_side_effects)]

use alloc::vec::Vec;
use core::ops::Range;

use crate::error::{Error, Result};

const BITS: u32 = 6;
const FANOUT: usize = 1 << BITS;
const MASK: u64 = FANOUT as u64 - 1;
/// How many tags each node tracks.
pub(crate) const TAGS: usize = 2;
const NONE: u32 = u32::MAX;
/// Deep enough for every 64-bit index.
const MAX_HEIGHT: usize = 11;

struct Node {
    /// Which slots hold a value (leaf) or a child (inner).
    present: u64,
    /// Per tag: which slots carry the tag (leaf) or have a tagged descendant (inner).
    tags: [u64; TAGS],
    /// Values (leaf) or child node indices (inner).
    slots: [u32; FANOUT],
}

impl Node {
    const EMPTY: Node = Node {
        present: 0,
        tags: [0; TAGS],
        slots: [NONE; FANOUT],
    };
}

/// The leaf holding the indices `prefix << BITS ..` (`leaf == NONE`: nothing remembered).
#[derive(Clone, Copy)]
struct LeafHint {
    prefix: u64,
    leaf: u32,
}

impl LeafHint {
    const NONE: LeafHint = LeafHint {
        prefix: 0,
        leaf: NONE,
    };
}

/// The lone value of a tree with no node.
#[derive(Clone, Copy)]
struct Single {
    index: u64,
    value: u32,
    tags: [bool; TAGS],
}

/// The index. Heights count levels: a tree of height `h` holds indices below `64^h`.
pub(crate) struct Radix {
    /// The value of a tree that has one and no root node (`root == NONE`).
    single: Option<Single>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    root: u32,
    height: u32,
    len: usize,
    /// Per tag: how many values carry it (kept by every tag change and removal).
    tagged: [usize; TAGS],
    /// The leaf of the last mutating access; a leaf stays the leaf of its prefix until
    /// it is freed, which forgets it.
    hint: LeafHint,
}

fn slot_of(index: u64, level: u32) -> usize {
    ((index >> (BITS * level)) & MASK) as usize
}

fn capacity_bits(height: u32) -> u32 {
    BITS * height
}

/// Reserves room for `more` elements: exactly while the vector stays small (a small
/// file's tree, slots and free lists hold only what they use: a one-page file one
/// slot, not four), amortized beyond (exact reservations of a growing list would copy
/// it every time). The cache's slab uses it too.
pub(super) fn reserve<T>(vec: &mut Vec<T>, more: usize) -> Result {
    let reserved = if vec.len().saturating_add(more) <= 4 {
        vec.try_reserve_exact(more)
    } else {
        vec.try_reserve(more)
    };
    reserved.map_err(|_| Error::NoMemory)
}

impl Radix {
    pub(crate) fn new() -> Self {
        Self {
            single: None,
            nodes: Vec::new(),
            free: Vec::new(),
            root: NONE,
            height: 0,
            len: 0,
            tagged: [0; TAGS],
            hint: LeafHint::NONE,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Counts a lone value's tag going from `was` to `on`.
    fn count_tag_change(&mut self, tag: usize, was: bool, on: bool) {
        match (was, on) {
            (false, true) => self.tagged[tag] += 1,
            (true, false) => self.tagged[tag] -= 1,
            _ => {}
        }
    }

    /// Uncounts the tags of a lone value leaving the tree (or moving into a node).
    fn uncount_tags(&mut self, tags: [bool; TAGS]) {
        for (tag, on) in tags.into_iter().enumerate() {
            self.count_tag_change(tag, on, false);
        }
    }

    /// How many values carry `tag`: O(1).
    pub(crate) fn tagged(&self, tag: usize) -> usize {
        self.tagged[tag]
    }

    fn fits(&self, index: u64) -> bool {
        capacity_bits(self.height) >= 64 || index >> capacity_bits(self.height) == 0
    }

    fn new_node(&mut self) -> Result<u32> {
        if let Some(node) = self.free.pop() {
            self.nodes[node as usize] = Node::EMPTY;
            return Ok(node);
        }
        reserve(&mut self.nodes, 1)?;
        // Room in the free list for every node, reserved while allocating may fail:
        // `remove` runs when pages are freed (by the page daemon, when memory is short)
        // and must not allocate. The list is empty here (`pop` found nothing).
        reserve(&mut self.free, self.nodes.len() + 1)?;
        self.nodes.push(Node::EMPTY);
        Ok((self.nodes.len() - 1) as u32)
    }

    /// The leaf node that holds (or would hold) `index`, if it exists.
    #[inline]
    fn leaf(&self, index: u64) -> Option<u32> {
        if self.hint.leaf != NONE && self.hint.prefix == index >> BITS {
            return Some(self.hint.leaf);
        }
        if self.root == NONE || !self.fits(index) {
            return None;
        }
        let mut node = self.root;
        for level in (1..self.height).rev() {
            let inner = &self.nodes[node as usize];
            let slot = slot_of(index, level);
            if inner.present & (1 << slot) == 0 {
                return None;
            }
            node = inner.slots[slot];
        }
        Some(node)
    }

    /// [`Self::leaf`], remembering the leaf for the next access.
    #[inline]
    fn leaf_remembered(&mut self, index: u64) -> Option<u32> {
        let leaf = self.leaf(index)?;
        self.hint = LeafHint {
            prefix: index >> BITS,
            leaf,
        };
        Some(leaf)
    }

    /// The value at `index`.
    #[inline]
    pub(crate) fn get(&self, index: u64) -> Option<u32> {
        if let Some(single) = self.single {
            return (single.index == index).then_some(single.value);
        }
        let leaf = &self.nodes[self.leaf(index)? as usize];
        let slot = slot_of(index, 0);
        (leaf.present & (1 << slot) != 0).then(|| leaf.slots[slot])
    }

    /// [`Self::get`] by a caller about to change the entry or its neighbours: their
    /// accesses then start at its leaf.
    #[inline]
    pub(crate) fn get_remembered(&mut self, index: u64) -> Option<u32> {
        if self.single.is_some() {
            return self.get(index);
        }
        self.leaf_remembered(index)?;
        self.get(index)
    }

    /// Stores `value` at `index` (replacing any value there, with its tags).
    pub(crate) fn insert(&mut self, index: u64, value: u32) -> Result {
        match self.single {
            Some(single) if single.index == index => {
                self.uncount_tags(single.tags);
                self.single = Some(Single {
                    index,
                    value,
                    tags: [false; TAGS],
                });
                return Ok(());
            }
            Some(single) => self.unfold(single)?,
            None if self.root == NONE => {
                self.single = Some(Single {
                    index,
                    value,
                    tags: [false; TAGS],
                });
                self.len += 1;
                return Ok(());
            }
            None => {}
        }
        let leaf = match self.leaf_remembered(index) {
            Some(leaf) => leaf,
            None => self.insert_path(index)?,
        };
        let slot = slot_of(index, 0);
        let leaf = &mut self.nodes[leaf as usize];
        if leaf.present & (1 << slot) == 0 {
            self.len += 1;
        }
        leaf.present |= 1 << slot;
        leaf.slots[slot] = value;
        let stale = leaf.tags.map(|tags| tags & (1 << slot) != 0);
        for (tag, stale) in stale.into_iter().enumerate() {
            if stale {
                self.set_tag(index, tag, false);
            }
        }
        Ok(())
    }

    /// Moves the lone value into a node, so that a second can join it. On failure
    /// the tree is as it was.
    fn unfold(&mut self, single: Single) -> Result {
        self.insert_path(single.index)?;
        self.single = None;
        self.len -= 1;
        // Counted again as the tags are set in the node.
        self.uncount_tags(single.tags);
        self.insert(single.index, single.value)?;
        for (tag, on) in single.tags.into_iter().enumerate() {
            if on {
                self.set_tag(single.index, tag, true);
            }
        }
        Ok(())
    }

    /// How many nodes inserting `index` may create: the levels the tree must grow by
    /// and the missing nodes of the path down to its leaf (an upper bound when the
    /// tree grows).
    fn nodes_needed(&self, index: u64) -> usize {
        let mut height = self.height.max(1);
        while capacity_bits(height) < 64 && index >> capacity_bits(height) != 0 {
            height += 1;
        }
        if self.root == NONE {
            return height as usize;
        }
        if height > self.height {
            return (height - self.height + height) as usize;
        }
        let mut node = self.root;
        for level in (1..self.height).rev() {
            let inner = &self.nodes[node as usize];
            let slot = slot_of(index, level);
            if inner.present & (1 << slot) == 0 {
                return level as usize;
            }
            node = inner.slots[slot];
        }
        0
    }

    /// Grows the tree and creates the nodes down to the leaf for `index`; returns the
    /// leaf, remembered. On failure the tree holds the same values as before.
    fn insert_path(&mut self, index: u64) -> Result<u32> {
        // Reserve what the path needs up front so a failure leaves the tree unchanged
        // (`new_node` then reserves nothing more).
        let needed = self.nodes_needed(index).saturating_sub(self.free.len());
        reserve(&mut self.nodes, needed)?;
        reserve(&mut self.free, self.nodes.len() + needed)?;
        if self.root == NONE {
            self.root = self.new_node()?;
            self.height = 1;
        }
        while !self.fits(index) {
            let old = self.root;
            let root = self.new_node()?;
            let tags = self.nodes[old as usize].tags.map(|t| u64::from(t != 0));
            let node = &mut self.nodes[root as usize];
            node.present = 1;
            node.slots[0] = old;
            node.tags = tags;
            self.root = root;
            self.height += 1;
        }
        let mut node = self.root;
        for level in (1..self.height).rev() {
            let slot = slot_of(index, level);
            if self.nodes[node as usize].present & (1 << slot) == 0 {
                let child = self.new_node()?;
                let parent = &mut self.nodes[node as usize];
                parent.present |= 1 << slot;
                parent.slots[slot] = child;
            }
            node = self.nodes[node as usize].slots[slot];
        }
        self.hint = LeafHint {
            prefix: index >> BITS,
            leaf: node,
        };
        Ok(node)
    }

    /// The nodes from the root down to the leaf holding `index` (if present).
    fn path(&self, index: u64) -> Option<([u32; MAX_HEIGHT], usize)> {
        if self.root == NONE || !self.fits(index) {
            return None;
        }
        let mut path = [NONE; MAX_HEIGHT];
        let mut node = self.root;
        let mut depth = 0;
        for level in (0..self.height).rev() {
            path[depth] = node;
            depth += 1;
            let slot = slot_of(index, level);
            if self.nodes[node as usize].present & (1 << slot) == 0 {
                return None;
            }
            if level > 0 {
                node = self.nodes[node as usize].slots[slot];
            }
        }
        Some((path, depth))
    }

    /// Removes and returns the value at `index`, with its tags; frees emptied nodes.
    pub(crate) fn remove(&mut self, index: u64) -> Option<u32> {
        if let Some(single) = self.single {
            if single.index != index {
                return None;
            }
            self.single = None;
            self.len -= 1;
            self.uncount_tags(single.tags);
            return Some(single.value);
        }
        let (path, depth) = self.path(index)?;
        let mut value = None;
        let mut child_empty = false;
        for (at, &node) in path[..depth].iter().enumerate().rev() {
            let level = (depth - 1 - at) as u32;
            let slot = slot_of(index, level);
            let n = &mut self.nodes[node as usize];
            if level == 0 {
                value = Some(n.slots[slot]);
                n.present &= !(1 << slot);
                for (tags, tagged) in n.tags.iter_mut().zip(&mut self.tagged) {
                    if *tags & (1 << slot) != 0 {
                        *tagged -= 1;
                    }
                    *tags &= !(1 << slot);
                }
            } else if child_empty {
                n.present &= !(1 << slot);
                n.tags.iter_mut().for_each(|t| *t &= !(1 << slot));
            } else {
                let child_tags = self.nodes[self.nodes[node as usize].slots[slot] as usize].tags;
                let n = &mut self.nodes[node as usize];
                for (tag, child) in n.tags.iter_mut().zip(child_tags) {
                    if child == 0 {
                        *tag &= !(1 << slot);
                    }
                }
            }
            let n = &self.nodes[node as usize];
            child_empty = n.present == 0;
            if child_empty {
                self.free.push(node);
                if node == self.hint.leaf {
                    self.hint = LeafHint::NONE;
                }
            }
        }
        if child_empty {
            self.root = NONE;
            self.height = 0;
        }
        self.len -= 1;
        value
    }

    /// Sets or clears `tag` on the value at `index` and returns that value (`None`,
    /// changing nothing, if absent). Walks up only as far as a node's summary changes,
    /// which for a run of neighbours is rare: the rest change a bit in the remembered
    /// leaf.
    #[inline]
    pub(crate) fn set_tag(&mut self, index: u64, tag: usize, on: bool) -> Option<u32> {
        if let Some(single) = &mut self.single {
            if single.index != index {
                return None;
            }
            let (was, value) = (single.tags[tag], single.value);
            single.tags[tag] = on;
            self.count_tag_change(tag, was, on);
            return Some(value);
        }
        let leaf = self.leaf_remembered(index)?;
        let slot = slot_of(index, 0);
        let bit = 1u64 << slot;
        let node = &mut self.nodes[leaf as usize];
        if node.present & bit == 0 {
            return None;
        }
        let value = node.slots[slot];
        self.tag_in_leaf(leaf, bit, index, tag, on);
        Some(value)
    }

    /// Sets or clears `tag` on every value at `range` (indices), a leaf word at a time,
    /// calling `changed` with each value present there.
    pub(crate) fn set_tag_range(
        &mut self,
        range: Range<u64>,
        tag: usize,
        on: bool,
        mut changed: impl FnMut(u32),
    ) {
        if let Some(single) = &mut self.single {
            if range.contains(&single.index) {
                changed(single.value);
                let was = single.tags[tag];
                single.tags[tag] = on;
                self.count_tag_change(tag, was, on);
            }
            return;
        }
        let mut at = range.start;
        while at < range.end {
            let leaf_end = ((at >> BITS) + 1) << BITS;
            let end = leaf_end.min(range.end);
            let span = end - at;
            let low = slot_of(at, 0) as u32;
            let mask = if span == FANOUT as u64 {
                u64::MAX
            } else {
                ((1u64 << span) - 1) << low
            };
            if let Some(leaf) = self.leaf_remembered(at) {
                let node = &self.nodes[leaf as usize];
                let bits = node.present & mask;
                let mut each = bits;
                while each != 0 {
                    changed(node.slots[each.trailing_zeros() as usize]);
                    each &= each - 1;
                }
                if bits != 0 {
                    let present = (at & !MASK) | u64::from(bits.trailing_zeros());
                    self.tag_in_leaf(leaf, bits, present, tag, on);
                }
            }
            at = end;
        }
    }

    /// Sets or clears `tag` for the present entries `bits` of `leaf`, whose entry
    /// `index` is one of them, and carries a change of the leaf between tagged and
    /// untagged up the tree (the walk up starts from a present index).
    #[inline]
    fn tag_in_leaf(&mut self, leaf: u32, bits: u64, index: u64, tag: usize, on: bool) {
        let tags = &mut self.nodes[leaf as usize].tags[tag];
        let before = *tags;
        let after = if on { before | bits } else { before & !bits };
        *tags = after;
        let changed = (before ^ after).count_ones() as usize;
        if on {
            self.tagged[tag] += changed;
        } else {
            self.tagged[tag] -= changed;
        }
        if (before != 0) != (after != 0) {
            self.propagate_tag(index, tag, after != 0);
        }
    }

    /// Carries a leaf's change between tagged and untagged for `tag` up the path to
    /// `index`, as far as a node's summary changes.
    fn propagate_tag(&mut self, index: u64, tag: usize, on: bool) {
        let Some((path, depth)) = self.path(index) else {
            return;
        };
        let mut set = on;
        for (at, &node) in path[..depth - 1].iter().enumerate().rev() {
            let bit = 1u64 << slot_of(index, (depth - 1 - at) as u32);
            let tags = &mut self.nodes[node as usize].tags[tag];
            let before = *tags;
            if set {
                *tags |= bit;
            } else {
                *tags &= !bit;
            }
            if before == *tags || (before != 0) == (*tags != 0) {
                // Nothing changed here, or the parent's view (tagged or not) is the same.
                return;
            }
            set = *tags != 0;
        }
    }

    /// Whether the value at `index` carries `tag`.
    #[cfg(test)]
    pub(crate) fn has_tag(&self, index: u64, tag: usize) -> bool {
        if let Some(single) = self.single {
            return single.index == index && single.tags[tag];
        }
        self.path(index).is_some_and(|(path, depth)| {
            self.nodes[path[depth - 1] as usize].tags[tag] & (1 << slot_of(index, 0)) != 0
        })
    }

    /// Whether any value carries `tag`.
    pub(crate) fn any_tagged(&self, tag: usize) -> bool {
        if let Some(single) = self.single {
            return single.tags[tag];
        }
        self.root != NONE && self.nodes[self.root as usize].tags[tag] != 0
    }

    /// The lowest index `>= from` whose bit is set in `bits(node)` all the way down.
    fn next_by(&self, from: u64, bits: impl Fn(&Node) -> u64 + Copy) -> Option<(u64, u32)> {
        if self.root == NONE || !self.fits(from) {
            return None;
        }
        self.descend(self.root, self.height - 1, 0, from, bits)
    }

    fn descend(
        &self,
        node: u32,
        level: u32,
        base: u64,
        from: u64,
        bits: impl Fn(&Node) -> u64 + Copy,
    ) -> Option<(u64, u32)> {
        let n = &self.nodes[node as usize];
        let first = if from > base { slot_of(from, level) } else { 0 };
        let mut candidates = bits(n) & (u64::MAX << first);
        while candidates != 0 {
            let slot = candidates.trailing_zeros() as u64;
            candidates &= candidates - 1;
            let start = base | (slot << (BITS * level));
            if level == 0 {
                return Some((start, n.slots[slot as usize]));
            }
            let child = n.slots[slot as usize];
            if let Some(found) = self.descend(child, level - 1, start, from.max(start), bits) {
                return Some(found);
            }
        }
        None
    }

    /// The lowest present index `>= from`, with its value.
    pub(crate) fn next_present(&self, from: u64) -> Option<(u64, u32)> {
        if let Some(single) = self.single {
            return (single.index >= from).then_some((single.index, single.value));
        }
        self.next_by(from, |n| n.present)
    }

    /// The lowest index `>= from` carrying `tag`.
    pub(crate) fn next_tagged(&self, tag: usize, from: u64) -> Option<u64> {
        if let Some(single) = self.single {
            return (single.index >= from && single.tags[tag]).then_some(single.index);
        }
        self.next_by(from, move |n| n.tags[tag])
            .map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::{BTreeMap, BTreeSet};

    /// A tiny deterministic generator, so the test needs no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    /// What a radix tree should hold, in ordered maps: the values and each tag's keys.
    #[derive(Default)]
    struct Expected {
        values: BTreeMap<u64, u32>,
        tags: [BTreeSet<u64>; 2],
    }

    impl Expected {
        fn insert(&mut self, index: u64, value: u32) {
            self.values.insert(index, value);
            self.untag(index);
        }

        fn remove(&mut self, index: u64) -> Option<u32> {
            self.untag(index);
            self.values.remove(&index)
        }

        fn untag(&mut self, index: u64) {
            self.tags.iter_mut().for_each(|t| {
                t.remove(&index);
            });
        }

        /// Tags (or untags) `index` if a value is there, as the tree does.
        fn set_tag(&mut self, index: u64, tag: usize, on: bool) {
            if !self.values.contains_key(&index) {
                return;
            }
            if on {
                self.tags[tag].insert(index);
            } else {
                self.tags[tag].remove(&index);
            }
        }

        /// Checks every lookup the tree answers at `index`.
        fn check_lookups(&self, radix: &mut Radix, index: u64, remembered: bool) {
            let found = if remembered {
                radix.get_remembered(index)
            } else {
                radix.get(index)
            };
            assert_eq!(found, self.values.get(&index).copied());
            assert_eq!(
                radix.next_present(index),
                self.values.range(index..).next().map(|(&k, &v)| (k, v))
            );
            for (tag, tagged) in self.tags.iter().enumerate() {
                assert_eq!(
                    radix.next_tagged(tag, index),
                    tagged.range(index..).next().copied()
                );
                assert_eq!(radix.any_tagged(tag), !tagged.is_empty());
                assert_eq!(radix.has_tag(index, tag), tagged.contains(&index));
            }
        }
    }

    #[test]
    fn agrees_with_ordered_maps_under_random_operations() {
        let mut radix = Radix::new();
        let mut expected = Expected::default();
        let mut rng = Lcg(7);
        // Miri interprets every step: a shorter walk still crosses all four spreads.
        let steps: u64 = if cfg!(miri) { 800 } else { 20_000 };
        for step in 0..steps {
            let spread = [70u64, 5000, 1 << 20, u64::MAX >> 12][(step * 4 / steps) as usize];
            let index = rng.next() % spread;
            match rng.next() % 6 {
                0 | 1 => {
                    radix.insert(index, step as u32).unwrap();
                    expected.insert(index, step as u32);
                }
                2 => assert_eq!(radix.remove(index), expected.remove(index)),
                3 if step % 3 == 0 => {
                    let tag = (rng.next() % 2) as usize;
                    let on = rng.next() % 3 != 0;
                    let end = index.saturating_add(rng.next() % 200);
                    let mut seen = Vec::new();
                    radix.set_tag_range(index..end, tag, on, |value| seen.push(value));
                    let present: Vec<(u64, u32)> = expected
                        .values
                        .range(index..end)
                        .map(|(&k, &v)| (k, v))
                        .collect();
                    let values: Vec<u32> = present.iter().map(|&(_, v)| v).collect();
                    assert_eq!(seen, values, "each present value, in order");
                    for (key, _) in present {
                        expected.set_tag(key, tag, on);
                    }
                }
                3 | 4 => {
                    let tag = (rng.next() % 2) as usize;
                    let on = rng.next() % 3 != 0;
                    radix.set_tag(index, tag, on);
                    expected.set_tag(index, tag, on);
                }
                _ => expected.check_lookups(&mut radix, index, step % 2 == 1),
            }
            assert_eq!(radix.len(), expected.values.len());
            for (tag, tagged) in expected.tags.iter().enumerate() {
                assert_eq!(radix.tagged(tag), tagged.len(), "count of tag {tag}");
            }
        }
        for (&index, _) in expected.values.iter() {
            radix.remove(index);
        }
        assert_eq!(radix.len(), 0);
        assert_eq!(
            radix.tagged, [0; TAGS],
            "freeing tagged values uncounts them"
        );
        assert!(!radix.any_tagged(0));
        assert_eq!(radix.next_present(0), None);
    }

    #[test]
    fn a_lone_value_needs_no_node_and_moves_into_one_with_its_tags() {
        let mut radix = Radix::new();
        radix.insert(1 << 40, 7).unwrap();
        radix.set_tag(1 << 40, 1, true);
        assert_eq!(radix.nodes.len(), 0, "one value, no node");
        assert_eq!(radix.get(1 << 40), Some(7));
        assert_eq!(radix.next_tagged(1, 0), Some(1 << 40));
        assert!(radix.any_tagged(1) && !radix.any_tagged(0));
        radix.insert(3, 8).unwrap();
        assert!(radix.nodes.len() > 1 && radix.single.is_none());
        assert_eq!(radix.len(), 2);
        assert!(radix.has_tag(1 << 40, 1) && !radix.has_tag(3, 1));
        assert_eq!(radix.next_tagged(1, 0), Some(1 << 40));
        assert_eq!(radix.next_present(4), Some((1 << 40, 7)));
        assert_eq!(radix.remove(3), Some(8));
        assert_eq!(radix.remove(1 << 40), Some(7));
        assert_eq!(radix.len(), 0);
        assert!(!radix.any_tagged(1));
        // Empty again: the next lone value goes back into the tree itself.
        radix.insert(0, 9).unwrap();
        assert!(radix.single.is_some() && radix.root == NONE);
        let mut changed = Vec::new();
        radix.set_tag_range(0..64, 0, true, |value| changed.push(value));
        assert_eq!(changed, [9]);
        assert_eq!(radix.next_tagged(0, 0), Some(0));
        assert_eq!(radix.next_tagged(0, 1), None);
    }

    #[test]
    fn a_freed_leaf_is_forgotten() {
        let mut radix = Radix::new();
        for i in 0..64 {
            radix.insert(i, i as u32).unwrap();
        }
        radix.insert(64 * 64 * 5, 1).unwrap();
        assert_eq!(radix.get_remembered(3), Some(3));
        for i in 0..64 {
            radix.remove(i);
        }
        assert_eq!(radix.get(3), None);
        // The freed leaf is reused for another prefix; the old one must not find it.
        radix.insert(64 * 7 + 3, 9).unwrap();
        assert_eq!(radix.get(3), None);
        assert_eq!(radix.get_remembered(64 * 7 + 3), Some(9));
        radix.set_tag(3, 0, true);
        assert!(!radix.any_tagged(0));
        radix.set_tag(64 * 7 + 3, 0, true);
        assert_eq!(radix.next_tagged(0, 0), Some(64 * 7 + 3));
    }

    #[test]
    fn tagged_search_skips_untagged_subtrees() {
        let mut radix = Radix::new();
        // Three levels (more than 4096 pages); Miri gets the smallest such tree.
        let pages: u64 = if cfg!(miri) { 5_000 } else { 100_000 };
        for i in 0..pages {
            radix.insert(i, i as u32).unwrap();
        }
        let marked = pages * 7 / 9;
        radix.set_tag(marked, 0, true);
        radix.set_tag(5, 1, true);
        assert_eq!(radix.next_tagged(0, 0), Some(marked));
        assert_eq!(radix.next_tagged(0, marked + 1), None);
        assert_eq!(radix.next_tagged(1, 0), Some(5));
        radix.set_tag(marked, 0, false);
        assert!(!radix.any_tagged(0));
        assert_eq!(radix.get(pages - 1), Some(pages as u32 - 1));
    }
}
