//! The lock facade: the only file in the crate that names a concrete lock, atomic, cell
//! or condition-variable type.
//!
//! Normally the short locks are spin's and waiting goes through a [`Park`] hook (with the
//! `std` feature, through std's condition variables). Under `--cfg loom` everything is
//! loom's, so the loom tests explore the same code the kernel runs.
//!
//! Two kinds of lock exist, matching DESIGN.md §4:
//! - [`RwLock`] and [`Mutex`] are short spin locks: never held across a sleep, a hook
//!   call into the filesystem, or device submission.
//! - [`SleepRwLock`] is the node lock, held across read I/O: a thread that cannot take
//!   it sleeps on a [`WaitQueue`] instead of spinning.

#[cfg(loom)]
pub(crate) use loom::lazy_static;
#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use alloc::sync::Arc;
#[cfg(not(loom))]
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use core::ops::{Deref, DerefMut};

/// How a thread waits when it must sleep and no `std` is available.
///
/// A kernel registers one with [`set_park`]: `park` blocks the current CPU or thread
/// until some `unpark_all` (for example: halt until the next interrupt, or yield to the
/// scheduler), and `unpark_all` wakes every parked waiter. Spurious returns from `park`
/// are fine: the caller re-checks its condition. `park` must not wait for an
/// `unpark_all` that may already have happened (a wakeup can land between the caller's
/// check and its `park`): halting until the next interrupt or yielding once both
/// qualify. `unpark_all` is called only when some thread is inside a wait. Without a
/// registered hook, waiting
/// spins with [`core::hint::spin_loop`], which is correct on a single CPU whose device
/// completes requests inline (nothing ever really waits there).
pub trait Park: Sync {
    /// Block the caller for a while; may return early.
    fn park(&self);
    /// Wake every caller blocked in [`Park::park`].
    fn unpark_all(&self);
}

#[cfg(not(any(loom, feature = "std")))]
static PARK: spin::Once<&'static dyn Park> = spin::Once::new();

/// Registers the kernel's [`Park`] hook, used by every wait in the crate when neither
/// `std` nor loom is in use. The first registration wins; later calls are ignored.
pub fn set_park(park: &'static dyn Park) {
    #[cfg(not(any(loom, feature = "std")))]
    PARK.call_once(|| park);
    #[cfg(any(loom, feature = "std"))]
    let _ = park;
}

/// Whether a call may sleep: to enter the mount transaction, or for a busy page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Sleep until it can go on.
    Sleep,
    /// Fail instead (`Busy`): the page daemon's transaction, read-ahead's pages.
    DontSleep,
}

/// A mutual-exclusion spin lock (loom's under `cfg(loom)`).
pub struct Mutex<T> {
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

/// Guard of a [`Mutex`].
pub struct MutexGuard<'a, T> {
    #[cfg(not(loom))]
    inner: spin::MutexGuard<'a, T>,
    #[cfg(loom)]
    inner: loom::sync::MutexGuard<'a, T>,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub fn new(value: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: spin::Mutex::new(value),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    /// Takes the lock, spinning while another thread holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        let inner = self.inner.lock();
        #[cfg(loom)]
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        MutexGuard { inner }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A reader-writer spin lock: the object lock. Readers run in parallel (the cached
/// fast path); writers are exclusive.
pub struct RwLock<T> {
    #[cfg(not(loom))]
    inner: spin::RwLock<T>,
    #[cfg(loom)]
    inner: loom::sync::RwLock<T>,
}

/// Shared guard of a [`RwLock`].
pub struct ReadGuard<'a, T> {
    #[cfg(not(loom))]
    inner: spin::RwLockReadGuard<'a, T>,
    #[cfg(loom)]
    inner: loom::sync::RwLockReadGuard<'a, T>,
}

/// Exclusive guard of a [`RwLock`].
pub struct WriteGuard<'a, T> {
    #[cfg(not(loom))]
    inner: spin::RwLockWriteGuard<'a, T>,
    #[cfg(loom)]
    inner: loom::sync::RwLockWriteGuard<'a, T>,
}

impl<T> RwLock<T> {
    /// A new unlocked reader-writer lock.
    pub fn new(value: T) -> Self {
        Self {
            #[cfg(not(loom))]
            inner: spin::RwLock::new(value),
            #[cfg(loom)]
            inner: loom::sync::RwLock::new(value),
        }
    }

    /// Takes the lock shared.
    pub fn read(&self) -> ReadGuard<'_, T> {
        #[cfg(not(loom))]
        let inner = self.inner.read();
        #[cfg(loom)]
        let inner = self
            .inner
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        ReadGuard { inner }
    }

    /// Takes the lock exclusively.
    pub fn write(&self) -> WriteGuard<'_, T> {
        #[cfg(not(loom))]
        let inner = self.inner.write();
        #[cfg(loom)]
        let inner = self
            .inner
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        WriteGuard { inner }
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// A ticket taken from a [`WaitQueue`] while the waiter still holds the lock that
/// protects its condition; any wakeup after the ticket ends the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a ticket is only useful when waited on"]
pub struct Ticket(u64);

/// A wait channel with no lost wakeups.
///
/// The waiter takes a [`Ticket`] while it holds the lock that guards the condition,
/// drops that lock, and calls [`WaitQueue::wait`]. The waker changes the condition
/// (under the same lock) and then calls [`WaitQueue::notify_all`]. Because the ticket
/// predates the change, the wait returns.
pub struct WaitQueue {
    /// The generation (bumped by every wakeup; a ticket is its value) in the high
    /// bits and, in the low [`SLEEPER_BITS`], how many threads are inside
    /// [`WaitQueue::wait`]. One word, so that a waker's bump and a sleeper's count are
    /// ordered by the word itself: whichever comes second sees the first. With no
    /// sleeper a wakeup is one atomic add: no lock, no system call (the common case,
    /// an I/O completion that nobody waits for).
    state: AtomicU64,
    /// Held by a sleeper from counting itself to sleeping, so a waker that saw it
    /// counted cannot signal before it sleeps.
    #[cfg(any(loom, feature = "std"))]
    lock: CondMutex<()>,
    #[cfg(any(loom, feature = "std"))]
    cond: Condvar,
}

/// Low bits of [`WaitQueue`]'s word that count sleepers (about a million at once).
const SLEEPER_BITS: u32 = 20;
const ONE_SLEEPER: u64 = 1;
const ONE_GENERATION: u64 = 1 << SLEEPER_BITS;

fn generation(state: u64) -> u64 {
    state >> SLEEPER_BITS
}

fn sleepers(state: u64) -> u64 {
    state & (ONE_GENERATION - 1)
}

#[cfg(loom)]
use loom::sync::{Condvar, Mutex as CondMutex};
#[cfg(all(not(loom), feature = "std"))]
use std::sync::{Condvar, Mutex as CondMutex};

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    /// A new wait queue with no waiters.
    pub fn new() -> Self {
        Self {
            state: AtomicU64::new(0),
            #[cfg(any(loom, feature = "std"))]
            lock: CondMutex::new(()),
            #[cfg(any(loom, feature = "std"))]
            cond: Condvar::new(),
        }
    }

    /// Takes a ticket: call while holding the lock that guards the awaited condition.
    pub fn ticket(&self) -> Ticket {
        Ticket(generation(self.state.load(Ordering::Acquire)))
    }

    /// Sleeps until some [`WaitQueue::notify_all`] later than `ticket`.
    pub fn wait(&self, ticket: Ticket) {
        #[cfg(any(loom, feature = "std"))]
        {
            let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut state = self.state.fetch_add(ONE_SLEEPER, Ordering::AcqRel);
            debug_assert!(sleepers(state) < ONE_GENERATION - 1, "too many sleepers");
            while generation(state) == ticket.0 {
                guard = self.cond.wait(guard).unwrap_or_else(|p| p.into_inner());
                state = self.state.load(Ordering::Acquire);
            }
            self.state.fetch_sub(ONE_SLEEPER, Ordering::Release);
        }
        #[cfg(not(any(loom, feature = "std")))]
        {
            let mut state = self.state.fetch_add(ONE_SLEEPER, Ordering::AcqRel);
            while generation(state) == ticket.0 {
                match PARK.get() {
                    Some(park) => park.park(),
                    None => core::hint::spin_loop(),
                }
                state = self.state.load(Ordering::Acquire);
            }
            self.state.fetch_sub(ONE_SLEEPER, Ordering::Release);
        }
    }

    /// Wakes every waiter whose ticket predates this call.
    pub fn notify_all(&self) {
        let state = self.state.fetch_add(ONE_GENERATION, Ordering::AcqRel);
        if sleepers(state) == 0 {
            return;
        }
        #[cfg(any(loom, feature = "std"))]
        {
            // Taking the lock waits for a sleeper between counting itself and sleeping.
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.cond.notify_all();
        }
        #[cfg(not(any(loom, feature = "std")))]
        if let Some(park) = PARK.get() {
            park.unpark_all();
        }
    }
}

/// A sleeping reader-writer lock (the node lock): held across read I/O, so a thread
/// that cannot take it sleeps on a [`WaitQueue`] rather than spinning.
///
/// The state is one atomic word (reader count, or the writer bit), so taking it shared
/// and checking it ([`SleepRwLock::is_write_locked`]) costs one atomic operation; the
/// wait queue is touched only when someone sleeps.
pub struct SleepRwLock {
    state: AtomicUsize,
    sleepers: AtomicUsize,
    released: WaitQueue,
}

const WRITER: usize = 1 << (usize::BITS - 1);

/// Proof of holding a [`SleepRwLock`], shared or exclusive; releases on drop.
#[must_use = "dropping the guard releases the node lock"]
pub struct SleepGuard<'a> {
    lock: &'a SleepRwLock,
    exclusive: bool,
}

impl Default for SleepRwLock {
    fn default() -> Self {
        Self::new()
    }
}

impl SleepRwLock {
    /// A new unlocked node lock.
    pub fn new() -> Self {
        Self {
            state: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            released: WaitQueue::new(),
        }
    }

    fn try_acquire(&self, exclusive: bool) -> bool {
        if exclusive {
            return self
                .state
                .compare_exchange(0, WRITER, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
        }
        let mut current = self.state.load(Ordering::SeqCst);
        while current & WRITER == 0 {
            // Cannot overflow: without the `WRITER` bit the count is below it.
            #[allow(clippy::arithmetic_side_effects)]
            let more = current + 1;
            match self.state.compare_exchange_weak(
                current,
                more,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }

    fn acquire(&self, exclusive: bool) -> SleepGuard<'_> {
        while !self.try_acquire(exclusive) {
            // Announce the sleep before the last look, so a release after that look
            // sees a sleeper and wakes the queue after our ticket.
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let ticket = self.released.ticket();
            let acquired = self.try_acquire(exclusive);
            if !acquired {
                self.released.wait(ticket);
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            if acquired {
                break;
            }
        }
        SleepGuard::held(self, exclusive)
    }

    /// Takes the lock shared, sleeping while a writer holds it.
    pub fn read(&self) -> SleepGuard<'_> {
        self.acquire(false)
    }

    /// Takes the lock exclusively, sleeping while anyone holds it.
    pub fn write(&self) -> SleepGuard<'_> {
        self.acquire(true)
    }

    /// Takes the lock shared if that needs no sleep.
    pub fn try_read(&self) -> Option<SleepGuard<'_>> {
        self.try_acquire(false)
            .then(|| SleepGuard::held(self, false))
    }

    /// Takes the lock exclusively if that needs no sleep.
    pub fn try_write(&self) -> Option<SleepGuard<'_>> {
        self.try_acquire(true).then(|| SleepGuard::held(self, true))
    }

    /// Whether some thread holds the lock exclusively right now: what a try-lock
    /// followed at once by an unlock would tell, without writing the lock word.
    pub fn is_write_locked(&self) -> bool {
        self.state.load(Ordering::SeqCst) & WRITER != 0
    }
}

#[cfg(all(feature = "std", not(loom)))]
std::thread_local! {
    /// [`SleepGuard`]s alive on this thread: what
    /// [`sleep_locks_held_by_this_thread`] reports.
    static SLEEP_GUARDS_HELD: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

// Under loom every modelled thread runs on one OS thread: count per loom thread.
#[cfg(loom)]
loom::thread_local! {
    static SLEEP_GUARDS_HELD: core::cell::Cell<usize> = core::cell::Cell::new(0);
}

/// How many node-lock ([`SleepRwLock`]) guards the calling thread holds right now,
/// shared and exclusive alike.
///
/// For test rigs checking the lock order: a hook that must not be entered under the
/// node lock (a mount transaction, the journal) asks this. With `std`, or under loom
/// (per loom thread); a guard dropped on another thread than the one that took it
/// (genpager never does that) is counted against the dropping thread.
#[cfg(any(feature = "std", loom))]
pub fn sleep_locks_held_by_this_thread() -> usize {
    SLEEP_GUARDS_HELD.with(core::cell::Cell::get)
}

impl<'a> SleepGuard<'a> {
    /// The guard of a lock `lock` just taken, counted for
    /// [`sleep_locks_held_by_this_thread`].
    fn held(lock: &'a SleepRwLock, exclusive: bool) -> Self {
        #[cfg(any(feature = "std", loom))]
        SLEEP_GUARDS_HELD.with(|held| held.set(held.get().saturating_add(1)));
        Self { lock, exclusive }
    }
}

impl SleepGuard<'_> {
    /// Whether this guard holds the lock exclusively.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

impl Drop for SleepGuard<'_> {
    fn drop(&mut self) {
        #[cfg(any(feature = "std", loom))]
        SLEEP_GUARDS_HELD.with(|held| held.set(held.get().saturating_sub(1)));
        if self.exclusive {
            self.lock.state.store(0, Ordering::SeqCst);
        } else {
            self.lock.state.fetch_sub(1, Ordering::SeqCst);
        }
        // A read-modify-write, not a load: it reads the latest count, and a sleeper's
        // later increment reads from it and so sees the lock released. (With a plain
        // load this is the store-buffering pattern, correct only under SeqCst's total
        // order, which loom does not model: it reports a lost wakeup.)
        if self.lock.sleepers.fetch_add(0, Ordering::SeqCst) > 0 {
            self.lock.released.notify_all();
        }
    }
}

#[cfg(all(test, not(loom), feature = "std"))]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn waiter_sleeps_until_notified() {
        let queue = Arc::new(WaitQueue::new());
        let flag = Arc::new(AtomicBool::new(false));
        let ticket = queue.ticket();
        let waker = {
            let (queue, flag) = (queue.clone(), flag.clone());
            thread::spawn(move || {
                flag.store(true, Ordering::Release);
                queue.notify_all();
            })
        };
        queue.wait(ticket);
        assert!(flag.load(Ordering::Acquire));
        waker.join().unwrap();
    }

    #[test]
    fn sleep_lock_excludes_writers_and_shares_readers() {
        let lock = SleepRwLock::new();
        let first = lock.read();
        let second = lock.try_read().expect("readers share");
        assert!(lock.try_write().is_none());
        drop((first, second));
        let writer = lock.write();
        assert!(writer.is_exclusive());
        assert!(lock.try_read().is_none());
        drop(writer);
        assert!(!lock.is_write_locked());
    }

    #[test]
    fn sleep_guards_are_counted_per_thread() {
        let lock = Arc::new(SleepRwLock::new());
        let other = SleepRwLock::new();
        assert_eq!(sleep_locks_held_by_this_thread(), 0);
        let shared = lock.read();
        let again = lock.try_read().expect("readers share");
        let exclusive = other.try_write().expect("free");
        assert_eq!(sleep_locks_held_by_this_thread(), 3);
        let elsewhere = {
            let lock = lock.clone();
            thread::spawn(move || {
                let _guard = lock.read();
                sleep_locks_held_by_this_thread()
            })
        };
        assert_eq!(
            elsewhere.join().unwrap(),
            1,
            "another thread counts its own"
        );
        drop((shared, exclusive));
        assert_eq!(sleep_locks_held_by_this_thread(), 1);
        drop(again);
        let _writer = lock.write();
        assert_eq!(sleep_locks_held_by_this_thread(), 1);
    }

    #[test]
    fn sleep_lock_writer_wakes_sleeping_reader() {
        let lock = Arc::new(SleepRwLock::new());
        let writer = lock.write();
        let reader = {
            let lock = lock.clone();
            thread::spawn(move || {
                let guard = lock.read();
                assert!(!guard.is_exclusive());
            })
        };
        thread::sleep(std::time::Duration::from_millis(20));
        drop(writer);
        reader.join().unwrap();
    }
}
