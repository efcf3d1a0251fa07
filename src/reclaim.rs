//! Reclaiming memory across files: the kernel's page daemon calls
//! [`Reclaimer::reclaim`] when free pages run short.
//!
//! A [`Reclaimer`] keeps a registry of vnodes (the kernel registers each file whose
//! pages may be reclaimed, of any [`Vnode`] type) and a clock hand over it. One call
//! visits the files round robin from the hand, asking each for a small batch, so no
//! one file is always the victim. A visit:
//!
//! 1. takes the object lock *without waiting* ([`VmObject::try_lock`]): a file whose
//!    lock another thread holds (a fault, a flush, a truncate) is passed over, so the
//!    page daemon never waits for a thread that may be waiting for memory;
//! 2. balances the file's queues to the [`Policy`]'s inactive share, clearing the
//!    referenced bits of the pages it deactivates;
//! 3. walks the inactive queue from its head: busy and wired pages stay, referenced
//!    ones are reactivated (their second chance), clean ones are freed (mapped ones
//!    unmapped first; one modified through its mapping is dirty instead), and dirty
//!    ones are noted;
//! 4. drops the lock and pages the dirty ones out: an asynchronous `CLEANIT | FREE`
//!    flush run as the page daemon (it never sleeps on the mount transaction or a busy
//!    page), whose pages are freed when their writes complete. Dirty data is never
//!    discarded: a failed write leaves its pages dirty and resident.
//!
//! The decisions (how much to keep inactive, what to do with one page) are a
//! [`Policy`]'s; [`Clock`], NetBSD's two-list CLOCK, is the default. Recency comes from
//! the [`PageCache`]'s referenced bits (an MMU's accessed bit; genpager sets it when a
//! fault hands out a page already queued, and a second read through a page) and from
//! [`read`](crate::read), which moves the pages it has read through to the inactive
//! queue (use-once), so a sequential reader's pages go before its read-ahead.
//!
//! ```
//! # use genpager::testing::{MemDisk, MemFs, Layout};
//! use genpager::{read, reclaim::Reclaimer, PAGE_SIZE, PageCache, Vnode};
//! # let disk = MemDisk::new(4096);
//! # let fs = MemFs::new(disk.clone(), genpager::page::PAGE_SHIFT, Layout::Contiguous);
//! # let file = fs.create(&vec![7u8; 32 * PAGE_SIZE]).unwrap();
//! let daemon = Reclaimer::new();
//! daemon.register(&file).unwrap();
//! let mut buf = vec![0u8; 32 * PAGE_SIZE];
//! read(&file, 0, &mut buf).unwrap();
//! assert_eq!(file.object().read().cache().resident_pages(), 32);
//! // Memory is short: the page daemon asks for 8 pages back.
//! let done = daemon.reclaim(8);
//! assert_eq!(done.freed, 8);
//! assert_eq!(file.object().read().cache().resident_pages(), 24);
//! daemon.unregister(&file);
//! ```
//!
//! [`VmObject::try_lock`]: crate::VmObject::try_lock

// The registry's handles are std's `Arc` of the type-erased file, cloned to visit a
// file without the registry lock: a reference count, no allocation and no lock.
// `crate::sync::Arc` (loom's under loom) does not unsize to `dyn`, and nothing here
// synchronizes through this count that a model needs to see.
use alloc::sync::Arc as Handle;
use alloc::vec::Vec;

use crate::cache::clock::{Scope, sweep};
use crate::error::{Error, Result};
use crate::hooks::PageCache;
use crate::page::{PAGE_SIZE, PageFlags};
use crate::putpages::pageout;
use crate::sync::{Arc, Mutex};
use crate::vnode::{Vnode, note_dirty};

pub use crate::pdpolicy::{Clock, Policy, Scanned, Verdict};

/// The most pages one visit of one file frees or pages out: the share a file gives
/// before the hand moves on (the reference's page daemon writes clusters of about this
/// size too).
pub const BATCH: usize = 16;

/// What one [`Reclaimer::reclaim`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Pages freed: clean pages the call freed itself, and pages of its page-outs that
    /// were no longer resident when the page-out call returned (their writes completed
    /// inline; a concurrent truncate freeing them is counted too, which frees memory
    /// all the same).
    pub freed: usize,
    /// Dirty pages the call started writing back that were still being written when
    /// it returned (`PAGEOUT`): freed when their writes complete (or kept dirty if they
    /// fail).
    pub writing: usize,
    /// Files passed over because another thread held their object lock.
    pub skipped_locked: usize,
}

/// A page daemon's reclaimer over a registry of files. See the module docs.
pub struct Reclaimer<P: Policy = Clock> {
    policy: P,
    registry: Mutex<Registry>,
}

struct Registry {
    files: Vec<Handle<dyn Registered>>,
    /// The clock hand: the index of the next file to visit.
    hand: usize,
}

/// One registered file, its vnode type erased: a wrapper of the vnode's `Arc` (see
/// `Handle`).
trait Registered: Send + Sync {
    /// The vnode's address: what `unregister` matches.
    fn key(&self) -> usize;
    /// One visit: sweep the file for up to `want` pages, page out its dirty ones.
    fn visit(&self, policy: &dyn Policy, want: usize) -> Visited;
}

struct File<V: Vnode>(Arc<V>);

/// What one visit did.
#[derive(Clone, Copy, Default)]
struct Visited {
    freed: usize,
    writing: usize,
    locked: bool,
}

fn key_of<V: Vnode>(vnode: &Arc<V>) -> usize {
    let target: &V = vnode;
    target as *const V as usize
}

impl<V: Vnode> Registered for File<V> {
    fn key(&self) -> usize {
        key_of(&self.0)
    }

    fn visit(&self, policy: &dyn Policy, want: usize) -> Visited {
        let vnode = &self.0;
        let Some(mut state) = vnode.object().try_lock() else {
            return Visited {
                locked: true,
                ..Visited::default()
            };
        };
        // The dirty pages to page out, on the stack: the page daemon allocates nothing
        // to find them.
        let mut dirty = [0u64; BATCH];
        let mut noted = 0usize;
        // A failed object's dirty pages are kept and no longer written (errseq.rs):
        // the sweep frees its clean pages only.
        let failed = state.is_failed();
        let swept = sweep(
            state.cache_mut(),
            policy,
            want,
            Scope::PageDaemon,
            &mut |at| {
                if failed {
                    return false;
                }
                // A page offered by both walks of the sweep is noted once.
                if dirty.get(..noted).is_some_and(|seen| seen.contains(&at)) {
                    return true;
                }
                match dirty.get_mut(noted) {
                    Some(slot) if noted < want => {
                        *slot = at;
                        noted = noted.saturating_add(1);
                        true
                    }
                    _ => false,
                }
            },
        );
        if swept.dirtied {
            // A page found modified through its mapping is dirty now: the file must be
            // on the work list, or the page-out below would not clean it.
            note_dirty(&mut state, &**vnode);
        }
        drop(state);
        let dirty = &mut dirty[..noted];
        dirty.sort_unstable();
        let mut visited = Visited {
            freed: swept.freed,
            ..Visited::default()
        };
        for run in runs(dirty) {
            // An error (the transaction would sleep, no memory, a write failed) leaves
            // the pages dirty and resident; the next visit tries again.
            if let Err(error) = pageout(vnode, run.0, run.1) {
                // Nothing of the run is being written (or what was failed): none of it
                // counts.
                log::trace!("reclaim: page-out of {:#x}..{:#x}: {error:?}", run.0, run.1);
                continue;
            }
            let Some(state) = vnode.object().try_lock() else {
                continue;
            };
            for at in (run.0..run.1).step_by(PAGE_SIZE) {
                match state.cache().lookup(at) {
                    None => visited.freed = visited.freed.saturating_add(1),
                    // Ours, in flight: freed when its write completes.
                    Some(page) if page.flags.contains(PageFlags::PAGEOUT) => {
                        visited.writing = visited.writing.saturating_add(1);
                    }
                    // Not written (the page-out stopped at a busy page before it).
                    Some(_) => {}
                }
            }
        }
        visited
    }
}

/// The contiguous runs of the ascending page offsets `pages`, as `(start, end)`.
fn runs(pages: &[u64]) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut rest = pages;
    core::iter::from_fn(move || {
        let (&first, _) = rest.split_first()?;
        let mut end = first.saturating_add(PAGE_SIZE as u64);
        let mut taken = 1;
        while rest.get(taken) == Some(&end) {
            end = end.saturating_add(PAGE_SIZE as u64);
            taken = taken.saturating_add(1);
        }
        rest = rest.get(taken..).unwrap_or(&[]);
        Some((first, end))
    })
}

impl Default for Reclaimer<Clock> {
    fn default() -> Self {
        Self::new()
    }
}

impl Reclaimer<Clock> {
    /// A reclaimer with no files, using the [`Clock`] policy.
    pub fn new() -> Self {
        Self::with_policy(Clock)
    }
}

impl<P: Policy> Reclaimer<P> {
    /// A reclaimer with no files, using `policy`.
    pub fn with_policy(policy: P) -> Self {
        Self {
            policy,
            registry: Mutex::new(Registry {
                files: Vec::new(),
                hand: 0,
            }),
        }
    }

    /// Adds `vnode` to the files this reclaimer takes pages from; the registry holds a
    /// reference to it until [`Reclaimer::unregister`]. Registering a file twice does
    /// nothing. Fails with [`Error::NoMemory`] when the registry cannot grow. Not to be
    /// called while holding an object lock.
    pub fn register<V: Vnode>(&self, vnode: &Arc<V>) -> Result {
        let key = key_of(vnode);
        // Made before the registry lock is taken: nothing allocates under a spin lock.
        let file: Handle<dyn Registered> = Handle::new(File(vnode.clone()));
        let mut registry = self.registry.lock();
        if registry.files.iter().any(|file| file.key() == key) {
            return Ok(());
        }
        registry.files.try_reserve(1).map_err(|_| Error::NoMemory)?;
        registry.files.push(file);
        Ok(())
    }

    /// Removes `vnode` from the registry (before the kernel reclaims the vnode itself).
    /// Returns whether it was registered. A [`Reclaimer::reclaim`] running meanwhile may
    /// still finish a visit of it: it holds its own reference for the visit.
    pub fn unregister<V: Vnode>(&self, vnode: &Arc<V>) -> bool {
        let key = key_of(vnode);
        let mut registry = self.registry.lock();
        let Some(index) = registry.files.iter().position(|file| file.key() == key) else {
            return false;
        };
        let file = registry.files.remove(index);
        if registry.hand > index {
            registry.hand = registry.hand.saturating_sub(1);
        }
        drop(registry);
        // The vnode reference drops here, without the registry lock.
        drop(file);
        true
    }

    /// How many files are registered.
    pub fn len(&self) -> usize {
        self.registry.lock().files.len()
    }

    /// Whether no file is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tries to free `target` pages from the registered files, visiting them round
    /// robin from the clock hand, [`BATCH`] pages at most per visit, and returns what it
    /// did ([`Reclaimed`]: `freed` counts pages actually freed, `writing` pages whose
    /// page-out is still in flight). It stops when `target` pages are freed or being
    /// written, or when two whole rounds of the files freed nothing and started no
    /// write.
    ///
    /// Never sleeps on an object lock, a busy page or the mount transaction: a locked
    /// file is passed over, a busy page skipped. It may take an object lock while no
    /// other thread holds it, enter the mount transaction without waiting, and submit
    /// writes (the device may block in `submit`, as for any asynchronous flush), so
    /// call it from a thread holding no genpager lock (the page daemon's own thread, or
    /// an allocator's slow path that holds none).
    pub fn reclaim(&self, target: usize) -> Reclaimed {
        let mut done = Reclaimed::default();
        // Visits since the last one that changed something.
        let mut idle = 0usize;
        // A bound on the whole call, against files whose pages are used as fast as the
        // hand clears their bits: two rounds per batch wanted, and four more.
        let mut visits = 0usize;
        let batches = target.div_ceil(BATCH).saturating_add(2);
        loop {
            let got = done.freed.saturating_add(done.writing);
            if got >= target {
                return done;
            }
            let want = target.saturating_sub(got).min(BATCH);
            // The file under the hand, a handle on it made under the registry lock
            // (which is never held across a visit: visits take object locks and submit
            // I/O), and the hand moved on.
            let file = {
                let mut registry = self.registry.lock();
                let count = registry.files.len();
                if count == 0
                    || idle >= count.saturating_mul(2)
                    || visits >= batches.saturating_mul(count).saturating_mul(2)
                {
                    return done;
                }
                visits = visits.saturating_add(1);
                // Cannot overflow or divide by zero: `count > 0` and `at < count`.
                #[allow(clippy::arithmetic_side_effects)]
                let at = registry.hand % count;
                #[allow(clippy::arithmetic_side_effects)]
                {
                    registry.hand = (at + 1) % count;
                }
                registry.files.get(at).map(Handle::clone)
            };
            let Some(file) = file else {
                return done;
            };
            let visited = file.visit(&self.policy, want);
            done.freed = done.freed.saturating_add(visited.freed);
            done.writing = done.writing.saturating_add(visited.writing);
            if visited.locked {
                done.skipped_locked = done.skipped_locked.saturating_add(1);
            }
            // Progress is a page freed or being written. A visit that only moved pages
            // between the queues (the first round's balancing) is not: two rounds of
            // those end the call, whatever the policy does with the pages. Nor is a
            // page-out whose write failed at once (the pages are dirty again): a device
            // that keeps failing ends the call instead of being tried on every visit
            // (each try is an attempt towards the object's failed state).
            idle = if visited.freed != 0 || visited.writing != 0 {
                0
            } else {
                idle.saturating_add(1)
            };
        }
    }
}
