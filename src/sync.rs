//! The lock facade: the only file in the crate that names a concrete lock, atomic or
//! cell type, and the two hooks through which a kernel lends genpager its scheduler
//! ([`Scheduler`]) and its interrupt mask ([`Interrupts`]).
//!
//! Two kinds of lock exist, matching DESIGN.md §4:
//! - [`RwLock`] and [`Mutex`] are short spin locks: never held across a sleep, a hook
//!   call into the filesystem, or device submission. The object lock is an [`RwLock`]:
//!   writer-preferring (a writer waiting keeps new readers out), so a stream of
//!   readers cannot starve the exclusive lock a completion needs. Taking either, and
//!   the lock of a [`WaitQueue`], first calls [`Interrupts::disable`]; releasing it
//!   calls [`Interrupts::enable`].
//! - [`SleepRwLock`] is the node lock, held across read I/O: a thread that cannot take
//!   it sleeps on a [`WaitQueue`] instead of spinning.
//!
//! ## Waiting
//!
//! A [`WaitQueue`] is a keyed wait channel. A sleeper links a node that lives on its
//! own stack into the channel's intrusive list (no allocation) while it still holds
//! the lock that guards its condition, releases that lock, and blocks through the
//! [`Scheduler`] until a waker for its key unlinks it. Busy-page waits are keyed by the
//! page's offset, so releasing one page wakes only the threads waiting for that page.
//!
//! Which code blocks does not depend on the build: without `std` it is the kernel's
//! registered [`Scheduler`] (or, with none registered, a spin on the waiter's own
//! flag); with `std` a [`ThreadParker`] over std's `park`/`unpark`; under `--cfg
//! loom` the same parker over loom's threads, so the loom models explore the wait
//! code and the object lock the kernel runs ([`Mutex`]'s lock word alone is loom's
//! mutex there).
//!
//! ## Plugging in a kernel
//!
//! A kernel with a run queue implements both hooks and registers them at boot, before
//! genpager takes any lock. Here a toy kernel: threads are numbered, each has a wakeup
//! permit, and the interrupt flag of its one CPU is an atomic.
//!
//! ```
//! use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
//! use genpager::sync::{Interrupts, Mutex, Scheduler, Token, set_interrupts, set_scheduler};
//!
//! static RUNNING: AtomicUsize = AtomicUsize::new(0); // the current thread's number
//! static PERMIT: [AtomicBool; 8] = [const { AtomicBool::new(false) }; 8];
//! static INTERRUPTS_ON: AtomicBool = AtomicBool::new(true); // the CPU's flag
//! static DEPTH: AtomicUsize = AtomicUsize::new(0); // per CPU in a real kernel
//! static WERE_ON: AtomicBool = AtomicBool::new(false);
//! fn switch_to_next_ready_thread() { /* the kernel's context switch */ }
//! fn make_ready(_thread: usize) { /* put it on the run queue: no sleeping here */ }
//!
//! struct Kernel;
//! impl Scheduler for Kernel {
//!     fn current(&self) -> Token { Token(RUNNING.load(Relaxed)) }
//!     fn block(&self, token: Token) {
//!         // A wake that came first left its permit: the block returns at once.
//!         while !PERMIT[token.0].swap(false, Acquire) { switch_to_next_ready_thread() }
//!     }
//!     fn wake(&self, token: Token) {
//!         PERMIT[token.0].store(true, Release);
//!         make_ready(token.0);
//!     }
//! }
//! impl Interrupts for Kernel {
//!     fn disable(&self) {
//!         let were_on = INTERRUPTS_ON.swap(false, SeqCst); // `cli` after `pushf`
//!         if DEPTH.fetch_add(1, SeqCst) == 0 { WERE_ON.store(were_on, SeqCst) }
//!     }
//!     fn enable(&self) {
//!         if DEPTH.fetch_sub(1, SeqCst) == 1 && WERE_ON.load(SeqCst) {
//!             INTERRUPTS_ON.store(true, SeqCst); // `sti`
//!         }
//!     }
//! }
//!
//! set_scheduler(&Kernel);
//! set_interrupts(&Kernel);
//! let lock = Mutex::new(0);
//! let guard = lock.lock();
//! assert!(!INTERRUPTS_ON.load(SeqCst), "no interrupt while a spin lock is held");
//! drop(guard);
//! assert!(INTERRUPTS_ON.load(SeqCst));
//! ```

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
#[allow(unused_imports)]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// A statistics counter (`stats`): updated with relaxed operations and read only to be
/// reported, so it orders nothing. Under loom it stays the core atomic: modelling it
/// would only multiply the interleavings loom explores, for no ordering to check.
pub(crate) use core::sync::atomic::AtomicU64 as Counter;

use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut, Range};

use intrusive_collections::{LinkedList, LinkedListAtomicLink, UnsafeRef, intrusive_adapter};

/// Where a thread that found a spin lock taken waits for its word to change.
///
/// On hardware it spins ([`core::hint::spin_loop`]) until `blocked` no longer holds of
/// the word, then the caller tries again. Under loom spinning cannot be modelled
/// cheaply (loom explores every turn of every spin, and every stale value a relaxed
/// load may return), so the thread instead blocks on a condition variable that every
/// release of the lock notifies, looking at the newest value of the word under its
/// mutex: the same wait, in a form loom can exhaust. The lock word and its orderings
/// (what loom checks) are the lock's own atomics in both cases.
struct Spin {
    /// Threads waiting on `changed` (or about to): a release notifies only if some.
    #[cfg(loom)]
    waiters: AtomicUsize,
    #[cfg(loom)]
    lock: loom::sync::Mutex<()>,
    #[cfg(loom)]
    changed: loom::sync::Condvar,
}

impl Spin {
    fn new() -> Self {
        Self {
            #[cfg(loom)]
            waiters: AtomicUsize::new(0),
            #[cfg(loom)]
            lock: loom::sync::Mutex::new(()),
            #[cfg(loom)]
            changed: loom::sync::Condvar::new(),
        }
    }

    /// Waits while `blocked` holds of `word`; returns the value it last read, of
    /// which `blocked` does not hold (the caller's next guess of the word).
    fn wait(&self, word: &AtomicUsize, blocked: impl Fn(usize) -> bool) -> usize {
        #[cfg(not(loom))]
        loop {
            let value = word.load(Ordering::Relaxed);
            if !blocked(value) {
                return value;
            }
            core::hint::spin_loop();
        }
        #[cfg(loom)]
        {
            let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            // Announced before the look at the word: a release whose count check
            // misses this increment came before it (the increment reads from the
            // check, a read-modify-write), so the look sees that release's store.
            self.waiters.fetch_add(1, Ordering::SeqCst);
            // A compare-exchange that cannot succeed (no lock word is ever
            // `usize::MAX`) reads the newest value without writing.
            let newest = || match word.compare_exchange(
                usize::MAX,
                usize::MAX,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(value) | Err(value) => value,
            };
            let mut value = newest();
            while blocked(value) {
                guard = self.changed.wait(guard).unwrap_or_else(|p| p.into_inner());
                value = newest();
            }
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            value
        }
    }

    /// Called after each release of the lock: under loom, wakes its waiters, if any.
    fn released(&self) {
        #[cfg(loom)]
        // A read-modify-write, not a load: it reads the newest count (a plain load
        // is the store-buffering pattern, which needs SeqCst's total order, and loom
        // does not model that order: a waiter would be missed).
        if self.waiters.fetch_add(0, Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.changed.notify_all();
        }
    }
}

/// One turn of a wait on a flag when no scheduler is registered.
#[cfg(not(any(feature = "std", loom)))]
fn spin_hint() {
    core::hint::spin_loop();
}

// ---- the hooks ------------------------------------------------------------------

/// Names a thread for the [`Scheduler`]: whatever the kernel can find the thread by
/// (an index, a pointer to its control block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(pub usize);

/// How genpager blocks a thread and wakes it again: the kernel's scheduler.
///
/// A kernel registers one with [`set_scheduler`] at boot, before any wait. The
/// contract is the one of std's `park`/`unpark`, per thread:
/// - [`Scheduler::current`] names the calling thread.
/// - [`Scheduler::block`] returns once [`Scheduler::wake`] has been called for the
///   token since the previous return of `block` for it. A wake that comes before the
///   block is not lost: it leaves a permit that the next `block` consumes at once.
///   Spurious returns are fine: genpager looks at its own flag again.
/// - [`Scheduler::wake`] may be called from an interrupt handler, with interrupts
///   disabled and a genpager spin lock held: it must not sleep, allocate, or call into
///   genpager (marking the thread runnable is all it should do).
///
/// genpager calls `wake(token)` only while the thread named by `token` is inside a
/// wait, and that wait cannot return before the `wake` call has: a token need not
/// stay valid after its thread leaves genpager.
pub trait Scheduler: Sync {
    /// The calling thread.
    fn current(&self) -> Token;
    /// Blocks the calling thread, named `token`, until a [`Scheduler::wake`] of it.
    fn block(&self, token: Token);
    /// Makes the thread named `token` runnable (its next or current `block` returns).
    fn wake(&self, token: Token);
}

/// How genpager masks interrupts on the current CPU while it holds a spin lock, so an
/// I/O completion that runs in an interrupt handler never spins on a lock the
/// interrupted code holds.
///
/// The semantics are those of xv6's `push_off`/`pop_off`: calls nest per CPU;
/// [`Interrupts::disable`] masks interrupts (and, at the outermost call, remembers
/// whether they were on); [`Interrupts::enable`] undoes one `disable` and unmasks
/// only when the count returns to zero and they were on at the outermost `disable`.
/// Counting rather than saving and restoring a value lets genpager release locks out
/// of order (a sleeper releases the object lock while it holds its wait channel's).
/// Each `disable` is matched by one `enable` on the same CPU (genpager's lock guards
/// cannot move to another thread).
pub trait Interrupts: Sync {
    /// Masks interrupts on this CPU (nesting).
    fn disable(&self);
    /// Undoes one [`Interrupts::disable`] on this CPU.
    fn enable(&self);
}

static SCHEDULER: spin::Once<&'static dyn Scheduler> = spin::Once::new();
static INTERRUPTS: spin::Once<&'static dyn Interrupts> = spin::Once::new();

/// Registers the kernel's [`Scheduler`], used by every wait in the crate. The first
/// registration wins; later calls are ignored. Register it before anything can wait.
///
/// With none registered, a wait spins on the waiter's own flag without `std` (correct
/// on several CPUs, and on one CPU whose device completes requests inline or from an
/// interrupt), and with `std` (or under loom) parks the thread with a
/// [`ThreadParker`]. Registering one with `std` replaces the parker: a test can wrap
/// [`ThreadParker`] to watch every block and wake.
pub fn set_scheduler(scheduler: &'static dyn Scheduler) {
    SCHEDULER.call_once(|| scheduler);
}

/// Registers the kernel's [`Interrupts`] hook, called around every spin lock. The
/// first registration wins; later calls are ignored. Register it before genpager
/// takes any lock. Without one, nothing is masked, and I/O completions must run in
/// thread context.
pub fn set_interrupts(hook: &'static dyn Interrupts) {
    INTERRUPTS.call_once(|| hook);
}

/// The scheduler waits go through, if any.
fn scheduler() -> Option<&'static dyn Scheduler> {
    match SCHEDULER.get() {
        Some(scheduler) => Some(*scheduler),
        #[cfg(any(feature = "std", loom))]
        None => Some(&ThreadParker),
        #[cfg(not(any(feature = "std", loom)))]
        None => None,
    }
}

/// Interrupts masked on this CPU for as long as it lives: taken before a spin lock
/// spins, dropped after it is released. Remembers the hook it disabled with, so a hook
/// registered meanwhile is never enabled without a matching disable.
struct NoInterrupts(Option<&'static dyn Interrupts>);

impl NoInterrupts {
    fn new() -> Self {
        let hook = INTERRUPTS.get().copied();
        if let Some(hook) = hook {
            hook.disable();
        }
        Self(hook)
    }
}

impl Drop for NoInterrupts {
    fn drop(&mut self) {
        if let Some(hook) = self.0 {
            hook.enable();
        }
    }
}

/// The [`Scheduler`] of std threads: a thread's token is the address of a
/// thread-local record of its `Thread` handle, `block` is `park` and `wake` is
/// `unpark`. Under `--cfg loom`, the same over a per-thread permit guarded by a loom
/// mutex. The default with `std` when no scheduler is registered; public
/// so a test can wrap it (to count wakeups, say) and register the wrapper.
#[cfg(any(feature = "std", loom))]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadParker;

#[cfg(any(feature = "std", loom))]
mod parker {
    #[cfg(not(loom))]
    use std::thread::{Thread, current, park};

    use crate::sync::{Scheduler, ThreadParker, Token};

    /// A thread's record: its address is the thread's [`Token`].
    #[cfg(not(loom))]
    pub(super) struct Parker {
        thread: Thread,
    }

    /// A thread's record under loom: a permit under a loom mutex, and a condition
    /// variable to wait for it. (Not loom's `park`/`unpark`: loom's `unpark` also ends
    /// a wait for a loom mutex, which the spin locks use under loom.)
    #[cfg(loom)]
    pub(super) struct Parker {
        permit: loom::sync::Mutex<bool>,
        changed: loom::sync::Condvar,
    }

    #[cfg(not(loom))]
    std::thread_local! {
        static PARKER: Parker = Parker { thread: current() };
    }
    #[cfg(loom)]
    loom::thread_local! {
        static PARKER: Parker = Parker {
            permit: loom::sync::Mutex::new(false),
            changed: loom::sync::Condvar::new(),
        };
    }

    // Miri's strict provenance forbids turning a token (an integer) back into a
    // pointer: there, tokens are looked up in a table of the live threads instead.
    #[cfg(miri)]
    static LIVE: std::sync::Mutex<alloc::vec::Vec<(usize, Thread)>> =
        std::sync::Mutex::new(alloc::vec::Vec::new());

    impl Scheduler for ThreadParker {
        fn current(&self) -> Token {
            PARKER.with(|parker| {
                let token = Token(core::ptr::from_ref(parker) as usize);
                #[cfg(miri)]
                {
                    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
                    if !live.iter().any(|(at, _)| *at == token.0) {
                        live.push((token.0, parker.thread.clone()));
                    }
                }
                token
            })
        }

        fn block(&self, _token: Token) {
            #[cfg(not(loom))]
            park();
            #[cfg(loom)]
            PARKER.with(|parker| {
                let mut permit = parker.permit.lock().unwrap_or_else(|p| p.into_inner());
                while !*permit {
                    permit = parker
                        .changed
                        .wait(permit)
                        .unwrap_or_else(|p| p.into_inner());
                }
                *permit = false;
            });
        }

        fn wake(&self, token: Token) {
            #[cfg(not(miri))]
            {
                let parker = token.0 as *const Parker;
                // SAFETY: `token` came from `current` on a thread that is inside a
                // genpager wait, which cannot return (nor its thread exit and drop
                // this thread-local) before this call has: the waker calls `wake`
                // under the wait channel's lock, and the waiter takes that lock before
                // it leaves the wait (`WaitQueue::sleep`).
                let parker = unsafe { &*parker };
                #[cfg(not(loom))]
                parker.thread.unpark();
                #[cfg(loom)]
                {
                    *parker.permit.lock().unwrap_or_else(|p| p.into_inner()) = true;
                    parker.changed.notify_one();
                }
            }
            #[cfg(miri)]
            {
                let live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((_, thread)) = live.iter().find(|(at, _)| *at == token.0) {
                    thread.unpark();
                }
            }
        }
    }
}

// ---- cells: core's, or loom's tracked ones ------------------------------------------

#[cfg(not(loom))]
mod cell {
    /// The data of a lock.
    pub(super) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);
    /// A shared access to a cell's data, for as long as it lives.
    pub(super) struct Shared<T>(*const T);
    /// An exclusive access to a cell's data, for as long as it lives.
    pub(super) struct Exclusive<T>(*mut T);

    impl<T> UnsafeCell<T> {
        pub(super) const fn new(value: T) -> Self {
            Self(core::cell::UnsafeCell::new(value))
        }
        pub(super) fn shared(&self) -> Shared<T> {
            Shared(self.0.get())
        }
        pub(super) fn exclusive(&self) -> Exclusive<T> {
            Exclusive(self.0.get())
        }
    }

    impl<T> Shared<T> {
        /// # Safety
        /// No exclusive access to the cell lives while the reference does.
        pub(super) unsafe fn get(&self) -> &T {
            // SAFETY: the pointer is the cell's, and the caller rules out writers.
            unsafe { &*self.0 }
        }
    }

    impl<T> Exclusive<T> {
        /// # Safety
        /// No other access to the cell lives while the reference does.
        pub(super) unsafe fn get(&self) -> &T {
            // SAFETY: the pointer is the cell's, and the caller rules out writers.
            unsafe { &*self.0 }
        }
        /// # Safety
        /// No other access to the cell lives while the reference does.
        pub(super) unsafe fn get_mut(&mut self) -> &mut T {
            // SAFETY: the pointer is the cell's, and the caller rules out any other
            // access.
            unsafe { &mut *self.0 }
        }
    }
}

#[cfg(loom)]
mod cell {
    /// The data of a lock: loom checks that the accesses the lock allows do not race.
    pub(super) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);
    /// A shared access to a cell's data, tracked by loom for as long as it lives.
    pub(super) struct Shared<T>(loom::cell::ConstPtr<T>);
    /// An exclusive access to a cell's data, tracked by loom for as long as it lives.
    pub(super) struct Exclusive<T>(loom::cell::MutPtr<T>);

    impl<T> UnsafeCell<T> {
        pub(super) fn new(value: T) -> Self {
            Self(loom::cell::UnsafeCell::new(value))
        }
        pub(super) fn shared(&self) -> Shared<T> {
            Shared(self.0.get())
        }
        pub(super) fn exclusive(&self) -> Exclusive<T> {
            Exclusive(self.0.get_mut())
        }
    }

    impl<T> Shared<T> {
        /// # Safety
        /// No exclusive access to the cell lives while the reference does.
        pub(super) unsafe fn get(&self) -> &T {
            // SAFETY: the caller rules out writers; loom checks it.
            unsafe { self.0.deref() }
        }
    }

    impl<T> Exclusive<T> {
        /// # Safety
        /// No other access to the cell lives while the reference does.
        pub(super) unsafe fn get(&self) -> &T {
            // SAFETY: the caller rules out any other access; loom checks it.
            unsafe { self.0.deref() }
        }
        /// # Safety
        /// No other access to the cell lives while the reference does.
        pub(super) unsafe fn get_mut(&mut self) -> &mut T {
            // SAFETY: the caller rules out any other access; loom checks it.
            unsafe { self.0.deref() }
        }
    }
}

use cell::{Exclusive, Shared, UnsafeCell};

/// Whether a call may sleep: to enter the mount transaction, or for a busy page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Sleep until it can go on.
    Sleep,
    /// Fail instead (`Busy`): the page daemon's transaction, read-ahead's pages.
    DontSleep,
}

// ---- LeafMutex ------------------------------------------------------------------------

/// A spin lock that masks interrupts while held, for leaf critical sections that make
/// no other synchronization call: the frame pool. It is not modelled under loom, which
/// is sound: loom switches threads only at its own operations, so while a model's
/// thread is inside such a section none of the model's other threads runs, and only
/// another model (another test thread sharing a `static`) can find it taken, for the
/// few instructions of its section. Its `new` is `const`, so it can live in a `static`
/// in every build.
pub(crate) struct LeafMutex<T> {
    locked: core::sync::atomic::AtomicBool,
    data: core::cell::UnsafeCell<T>,
}

// SAFETY: the lock hands the data to one thread at a time, like std's `Mutex`.
unsafe impl<T: Send> Send for LeafMutex<T> {}
// SAFETY: as for `Send`: `&LeafMutex` gives access to `T` only under the lock.
unsafe impl<T: Send> Sync for LeafMutex<T> {}

/// Guard of a [`LeafMutex`]: releases it on drop.
#[must_use = "dropping the guard releases the lock"]
pub(crate) struct LeafGuard<'a, T> {
    lock: &'a LeafMutex<T>,
    _interrupts: NoInterrupts,
}

impl<T> LeafMutex<T> {
    /// A new unlocked lock.
    pub(crate) const fn new(value: T) -> Self {
        Self {
            locked: core::sync::atomic::AtomicBool::new(false),
            data: core::cell::UnsafeCell::new(value),
        }
    }

    /// Takes the lock, masking interrupts first and spinning while another thread
    /// holds it.
    pub(crate) fn lock(&self) -> LeafGuard<'_, T> {
        use core::sync::atomic::Ordering::{Acquire, Relaxed};
        let interrupts = NoInterrupts::new();
        while self
            .locked
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        LeafGuard {
            lock: self,
            _interrupts: interrupts,
        }
    }
}

impl<T> Deref for LeafGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock: no other access to the data lives.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for LeafGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard holds the lock: no other access to the data lives.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for LeafGuard<'_, T> {
    fn drop(&mut self) {
        self.lock
            .locked
            .store(false, core::sync::atomic::Ordering::Release);
        // `_interrupts` drops next: interrupts come back after the release.
    }
}

// ---- Mutex ------------------------------------------------------------------------

/// A mutual-exclusion spin lock that masks interrupts ([`Interrupts`]) while held.
///
/// Under loom its lock word is loom's own mutex (a stand-in: one scheduling point
/// per critical section instead of three, which the models need to explore in
/// time); the interrupt masking and the tracked cell stay. The object lock
/// ([`RwLock`]) keeps its own lock word under loom.
pub struct Mutex<T> {
    /// 1 while held, else 0.
    #[cfg(not(loom))]
    locked: AtomicUsize,
    #[cfg(not(loom))]
    spin: Spin,
    #[cfg(loom)]
    locked: loom::sync::Mutex<()>,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands the data to one thread at a time, like std's `Mutex`.
unsafe impl<T: Send> Send for Mutex<T> {}
// SAFETY: as for `Send`: `&Mutex` gives access to `T` only under the lock.
unsafe impl<T: Send> Sync for Mutex<T> {}

/// Guard of a [`Mutex`]: releases it on drop (on the thread that took it).
#[must_use = "dropping the guard releases the lock"]
pub struct MutexGuard<'a, T> {
    #[cfg(not(loom))]
    lock: &'a Mutex<T>,
    #[cfg(loom)]
    held: ManuallyDrop<loom::sync::MutexGuard<'a, ()>>,
    data: ManuallyDrop<Exclusive<T>>,
    _interrupts: NoInterrupts,
}

impl<T> Mutex<T> {
    /// A new unlocked mutex.
    pub fn new(value: T) -> Self {
        Self {
            #[cfg(not(loom))]
            locked: AtomicUsize::new(0),
            #[cfg(not(loom))]
            spin: Spin::new(),
            #[cfg(loom)]
            locked: loom::sync::Mutex::new(()),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, masking interrupts first and spinning while another thread
    /// holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let interrupts = NoInterrupts::new();
        #[cfg(not(loom))]
        while self
            .locked
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Test and test-and-set: wait for a release by looking only.
            let _ = self.spin.wait(&self.locked, |locked| locked != 0);
        }
        MutexGuard {
            #[cfg(not(loom))]
            lock: self,
            #[cfg(loom)]
            held: ManuallyDrop::new(self.locked.lock().unwrap_or_else(|p| p.into_inner())),
            data: ManuallyDrop::new(self.data.exclusive()),
            _interrupts: interrupts,
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock: no other access to the data lives.
        unsafe { self.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard holds the lock: no other access to the data lives.
        unsafe { self.data.get_mut() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here, and never used again; the access ends before
        // the lock is released.
        unsafe { ManuallyDrop::drop(&mut self.data) };
        #[cfg(not(loom))]
        {
            self.lock.locked.store(0, Ordering::Release);
            self.lock.spin.released();
        }
        // SAFETY: dropped once, here, after the access ended.
        #[cfg(loom)]
        unsafe {
            ManuallyDrop::drop(&mut self.held)
        };
        // `_interrupts` drops next: interrupts come back after the release.
    }
}

// ---- RwLock ---------------------------------------------------------------------------

/// A writer holds the [`RwLock`].
const RW_WRITER: usize = 1 << (usize::BITS - 1);
/// A writer waits for the [`RwLock`]: new readers back off.
const RW_WRITER_WAITING: usize = 1 << (usize::BITS - 2);
/// The reader count of the [`RwLock`]'s word.
const RW_READERS: usize = RW_WRITER_WAITING - 1;

/// A writer-preferring reader-writer spin lock that masks interrupts while held: the
/// object lock. Readers run in parallel (the cached fast path); a writer is exclusive,
/// and once one waits no new reader enters, so readers cannot starve it. (Hence a
/// thread must never take it shared twice: with a writer waiting in between, the
/// second read would wait for the writer, which waits for the first.)
///
/// One word holds the reader count, the writer bit and the writer-waiting bit.
pub struct RwLock<T> {
    state: AtomicUsize,
    spin: Spin,
    data: UnsafeCell<T>,
}

// SAFETY: like std's `RwLock`: the data moves with the lock.
unsafe impl<T: Send> Send for RwLock<T> {}
// SAFETY: like std's `RwLock`: readers share `&T` across threads (`T: Sync`), a writer
// gets `&mut T` on its own thread (`T: Send`).
unsafe impl<T: Send + Sync> Sync for RwLock<T> {}

/// Shared guard of a [`RwLock`].
#[must_use = "dropping the guard releases the lock"]
pub struct ReadGuard<'a, T> {
    lock: &'a RwLock<T>,
    data: ManuallyDrop<Shared<T>>,
    _interrupts: NoInterrupts,
}

/// Exclusive guard of a [`RwLock`].
#[must_use = "dropping the guard releases the lock"]
pub struct WriteGuard<'a, T> {
    lock: &'a RwLock<T>,
    data: ManuallyDrop<Exclusive<T>>,
    _interrupts: NoInterrupts,
}

impl<T> RwLock<T> {
    /// A new unlocked reader-writer lock.
    pub fn new(value: T) -> Self {
        Self {
            state: AtomicUsize::new(0),
            spin: Spin::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock shared, masking interrupts first; spins while a writer holds it
    /// or waits for it.
    pub fn read(&self) -> ReadGuard<'_, T> {
        let interrupts = NoInterrupts::new();
        // A guess, not a load: the compare-exchange reads the word (a relaxed load
        // first would only add a stale value to retry from).
        let mut state = 0;
        loop {
            if state & (RW_WRITER | RW_WRITER_WAITING) == 0 {
                debug_assert!(state < RW_READERS, "too many readers");
                // Cannot overflow: without the high bits the count is below them.
                #[allow(clippy::arithmetic_side_effects)]
                let more = state + 1;
                match self.state.compare_exchange_weak(
                    state,
                    more,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(actual) => state = actual,
                }
            } else {
                state = self.spin.wait(&self.state, |state| {
                    state & (RW_WRITER | RW_WRITER_WAITING) != 0
                });
            }
        }
        ReadGuard {
            lock: self,
            data: ManuallyDrop::new(self.data.shared()),
            _interrupts: interrupts,
        }
    }

    /// Takes the lock exclusively, masking interrupts first; spins while anyone holds
    /// it, keeping new readers out meanwhile.
    pub fn write(&self) -> WriteGuard<'_, T> {
        let interrupts = NoInterrupts::new();
        // A guess, as in `read`.
        let mut state = 0;
        loop {
            if state & !RW_WRITER_WAITING == 0 {
                // Free: take it, clearing the waiting bit (another waiting writer sets
                // it again on its next look).
                match self.state.compare_exchange_weak(
                    state,
                    RW_WRITER,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(actual) => state = actual,
                }
            } else {
                if state & RW_WRITER_WAITING == 0 {
                    self.state.fetch_or(RW_WRITER_WAITING, Ordering::Relaxed);
                }
                // Waits while the lock is held and the waiting bit still keeps new
                // readers out; when another writer's take clears the bit, it comes
                // back to set it again (with two writers waiting, the one left behind
                // would otherwise wait with the bit clear while readers overlap).
                state = self.spin.wait(&self.state, |state| {
                    state & !RW_WRITER_WAITING != 0 && state & RW_WRITER_WAITING != 0
                });
            }
        }
        WriteGuard {
            lock: self,
            data: ManuallyDrop::new(self.data.exclusive()),
            _interrupts: interrupts,
        }
    }
}

impl<T> RwLock<T> {
    /// Takes the lock exclusively if nobody holds it, without waiting: `None` when a
    /// reader or a writer holds it. For the page daemon, which must never wait for an
    /// object a fault holds (the reference's `rw_tryenter`). A writer waiting for a
    /// free lock does not stop it: as after any release, the waiter takes the lock at
    /// its next look after this one's.
    pub fn try_write(&self) -> Option<WriteGuard<'_, T>> {
        let interrupts = NoInterrupts::new();
        let state = self.state.load(Ordering::Relaxed);
        if state & !RW_WRITER_WAITING != 0 {
            return None;
        }
        self.state
            .compare_exchange(state, RW_WRITER, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(WriteGuard {
            lock: self,
            data: ManuallyDrop::new(self.data.exclusive()),
            _interrupts: interrupts,
        })
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock shared: no writer's access lives.
        unsafe { self.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; the access ends before the lock is released.
        unsafe { ManuallyDrop::drop(&mut self.data) };
        self.lock.state.fetch_sub(1, Ordering::Release);
        self.lock.spin.released();
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock exclusively: no other access lives.
        unsafe { self.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard holds the lock exclusively: no other access lives.
        unsafe { self.data.get_mut() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; the access ends before the lock is released.
        unsafe { ManuallyDrop::drop(&mut self.data) };
        // Keeps a waiting writer's bit.
        self.lock.state.fetch_and(!RW_WRITER, Ordering::Release);
        self.lock.spin.released();
    }
}

// ---- WaitQueue ----------------------------------------------------------------------

/// A sleeping thread's node in a [`WaitQueue`]: lives on the sleeper's stack, linked
/// into the channel's list while it waits.
///
/// Intrusive lists require that a linked node neither moves nor dies (see
/// intrusive-collections' design notes). [`WaitQueue::sleep_unless`] guarantees both:
/// the node is a local that a [`Linked`] guard borrows (so it cannot move), and the
/// guard, made before the node is linked, unlinks it under the channel's lock when the
/// frame ends, by return or by unwinding.
struct Waiter {
    link: LinkedListAtomicLink,
    key: u64,
    token: Token,
    /// Set by the waker (after unlinking the node, under the channel's lock).
    woken: AtomicBool,
}

intrusive_adapter!(WaiterAdapter = UnsafeRef<Waiter>: Waiter { link: LinkedListAtomicLink });

/// A keyed wait channel with no lost wakeups and no allocation.
///
/// The waiter calls [`WaitQueue::sleep`] with a key and the guard of the lock that
/// protects its condition; the waker changes the condition (under that lock) and then
/// calls [`WaitQueue::wake`] for the key (or [`WaitQueue::wake_range`],
/// [`WaitQueue::wake_all`]), with or without the lock. Because the sleeper's node is
/// linked before it releases its guard, a wake for its key that follows the change
/// finds it. Wakers never sleep or allocate, and may run in an interrupt handler
/// (given an [`Interrupts`] hook and an interrupt-safe [`Scheduler::wake`]).
pub struct WaitQueue {
    waiters: Mutex<LinkedList<WaiterAdapter>>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// Unlinks its waiter, if still linked, when dropped: so a node cannot outlive its
/// frame while linked, and the sleeper leaves only after taking the channel's lock
/// (after any waker that woke it has returned from [`Scheduler::wake`]).
struct Linked<'a> {
    queue: &'a WaitQueue,
    waiter: &'a Waiter,
}

impl Drop for Linked<'_> {
    fn drop(&mut self) {
        let mut list = self.queue.waiters.lock();
        if self.waiter.link.is_linked() {
            // SAFETY: a waiter is linked only into the list of the queue it sleeps on
            // (`sleep_unless` links it into `self.queue`'s), and only under that
            // list's lock, which we hold: it is an element of this list.
            let mut cursor = unsafe { list.cursor_mut_from_ptr(self.waiter) };
            cursor.remove();
        }
    }
}

impl WaitQueue {
    /// A new wait channel with no waiters.
    pub fn new() -> Self {
        Self {
            waiters: Mutex::new(LinkedList::new(WaiterAdapter::new())),
        }
    }

    /// Sleeps on `key` until a wake for it: links this thread's node under the
    /// channel's lock while the caller still holds `guard` (the lock protecting the
    /// awaited condition), releases `guard`, then blocks. The caller re-takes its lock
    /// and looks at the condition again.
    pub fn sleep<G>(&self, key: u64, guard: G) {
        self.sleep_unless(key, move || {
            drop(guard);
            false
        });
    }

    /// Links this thread's node for `key`, then (under the channel's lock) asks
    /// `ready`: if it says so, returns at once, else blocks until woken.
    fn sleep_unless(&self, key: u64, ready: impl FnOnce() -> bool) {
        let scheduler = scheduler();
        let token = scheduler.map_or(Token(0), |scheduler| scheduler.current());
        let waiter = Waiter {
            link: LinkedListAtomicLink::new(),
            key,
            token,
            woken: AtomicBool::new(false),
        };
        // Made before linking: it unlinks on any way out of this frame.
        let linked = Linked {
            queue: self,
            waiter: &waiter,
        };
        let mut list = self.waiters.lock();
        // SAFETY: `waiter` is borrowed by `linked` until this frame ends, so it does
        // not move, and `linked` unlinks it (under this lock) before it is dropped:
        // the list never holds a pointer to a moved or dead node.
        list.push_back(unsafe { UnsafeRef::from_raw(linked.waiter) });
        let ready = ready();
        drop(list);
        if ready {
            return;
        }
        while !waiter.woken.load(Ordering::Acquire) {
            match scheduler {
                Some(scheduler) => scheduler.block(token),
                #[cfg(not(any(feature = "std", loom)))]
                None => spin_hint(),
                #[cfg(any(feature = "std", loom))]
                None => unreachable!("std and loom always have a scheduler"),
            }
        }
        // `linked` drops here and takes the channel's lock: the waker that set `woken`
        // has returned from `Scheduler::wake` by then.
    }

    /// Wakes the threads sleeping on a key `matches` accepts; returns how many.
    pub(crate) fn wake_where(&self, matches: impl Fn(u64) -> bool) -> usize {
        let scheduler = scheduler();
        let mut woken = 0usize;
        let mut list = self.waiters.lock();
        let mut cursor = list.front_mut();
        while let Some(waiter) = cursor.get() {
            if !matches(waiter.key) {
                cursor.move_next();
                continue;
            }
            if let Some(waiter) = cursor.remove() {
                // Still under the lock: the sleeper cannot leave (nor its node die)
                // before the lock is released, after `wake` has returned.
                waiter.woken.store(true, Ordering::Release);
                if let Some(scheduler) = scheduler {
                    scheduler.wake(waiter.token);
                }
                woken = woken.saturating_add(1);
            }
        }
        woken
    }

    /// Wakes the threads sleeping on `key`; returns how many.
    pub fn wake(&self, key: u64) -> usize {
        self.wake_where(|at| at == key)
    }

    /// Wakes the threads sleeping on a key in `range`; returns how many.
    pub fn wake_range(&self, range: Range<u64>) -> usize {
        self.wake_where(|at| range.contains(&at))
    }

    /// Wakes every thread sleeping on the channel; returns how many.
    pub fn wake_all(&self) -> usize {
        self.wake_where(|_| true)
    }

    /// How many threads sleep on `key` right now (not yet woken).
    pub fn sleepers(&self, key: u64) -> usize {
        let list = self.waiters.lock();
        list.iter().filter(|waiter| waiter.key == key).count()
    }
}

// ---- SleepRwLock -------------------------------------------------------------------

/// A sleeping reader-writer lock (the node lock): held across read I/O, so a thread
/// that cannot take it sleeps on a [`WaitQueue`] rather than spinning.
///
/// The state is one atomic word (reader count, or the writer bit), so taking it shared
/// and checking it ([`SleepRwLock::is_write_locked`]) costs one atomic operation; the
/// wait queue is touched only when someone sleeps.
///
/// Not writer-preferring, unlike the object lock: a synchronous fault sleeps on a busy
/// page while holding it shared, so a waiting writer that kept new readers out would
/// deadlock a thread that holds a page and faults the same file again (a `read` whose
/// buffer is mapped from that file) behind the sleeper. The price: a stream of
/// readers that each miss the cache can keep a writer (a truncation) waiting while
/// they last.
pub struct SleepRwLock {
    state: AtomicUsize,
    sleepers: AtomicUsize,
    released: WaitQueue,
}

const WRITER: usize = 1 << (usize::BITS - 1);
/// The one key of a [`SleepRwLock`]'s channel: every sleeper waits for a release.
const RELEASED: u64 = 0;

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
            // Announce the sleep before the last look (made with the node linked), so
            // a release after that look sees a sleeper and wakes the channel.
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let mut acquired = false;
            self.released.sleep_unless(RELEASED, || {
                acquired = self.try_acquire(exclusive);
                acquired
            });
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
            self.lock.released.wake_all();
        }
    }
}

#[cfg(all(test, not(loom), feature = "std"))]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::cell::Cell;
    use std::thread;
    use std::time::Duration;

    /// Waits (a bounded while) until `queue` has `count` sleepers on `key`.
    fn until_sleeping(queue: &WaitQueue, key: u64, count: usize) {
        for _ in 0..10_000 {
            if queue.sleepers(key) == count {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("{count} sleepers on {key} never came");
    }

    /// A thread that sleeps on `key` of `queue` until `flag` is set, counting its
    /// returns from `sleep`.
    fn sleeper(
        queue: &Arc<WaitQueue>,
        lock: &Arc<Mutex<[bool; 4]>>,
        key: u64,
    ) -> thread::JoinHandle<usize> {
        let (queue, lock) = (queue.clone(), lock.clone());
        thread::spawn(move || {
            let mut sleeps = 0;
            loop {
                let state = lock.lock();
                if state[usize::try_from(key).unwrap()] {
                    return sleeps;
                }
                sleeps += 1;
                queue.sleep(key, state);
            }
        })
    }

    #[test]
    fn threaded_keyed_wake_wakes_only_its_key() {
        let queue = Arc::new(WaitQueue::new());
        let lock = Arc::new(Mutex::new([false; 4]));
        let sleepers: Vec<_> = (0..4).map(|key| sleeper(&queue, &lock, key)).collect();
        for key in 0..4 {
            until_sleeping(&queue, key, 1);
        }
        lock.lock()[2] = true;
        assert_eq!(queue.wake(2), 1, "one thread sleeps on key 2");
        for key in [0, 1, 3] {
            assert_eq!(queue.sleepers(key), 1, "key {key} still asleep");
        }
        let mut sleepers: Vec<_> = sleepers.into_iter().map(Some).collect();
        assert_eq!(sleepers[2].take().unwrap().join().unwrap(), 1);
        *lock.lock() = [true; 4];
        assert_eq!(queue.wake_range(0..2), 2);
        assert_eq!(queue.wake_all(), 1);
        for sleeper in sleepers.into_iter().flatten() {
            assert_eq!(sleeper.join().unwrap(), 1, "woken once, by its own key");
        }
    }

    #[test]
    fn threaded_wake_between_check_and_block_is_not_lost() {
        for _ in 0..200 {
            let queue = Arc::new(WaitQueue::new());
            let lock = Arc::new(Mutex::new([false; 4]));
            let waiter = sleeper(&queue, &lock, 1);
            lock.lock()[1] = true;
            queue.wake(1);
            waiter.join().unwrap();
        }
    }

    #[test]
    fn threaded_many_sleepers_all_wake() {
        let queue = Arc::new(WaitQueue::new());
        let lock = Arc::new(Mutex::new([false; 4]));
        let sleepers: Vec<_> = (0..16).map(|i| sleeper(&queue, &lock, i % 4)).collect();
        for key in 0..4 {
            until_sleeping(&queue, key, 4);
        }
        *lock.lock() = [true; 4];
        assert_eq!(queue.wake_all(), 16);
        for sleeper in sleepers {
            assert_eq!(sleeper.join().unwrap(), 1);
        }
    }

    #[test]
    fn sleep_with_nobody_to_wake_is_left_by_a_ready_check() {
        let queue = WaitQueue::new();
        queue.sleep_unless(7, || true);
        assert_eq!(queue.sleepers(7), 0, "the node was unlinked");
        assert_eq!(queue.wake(7), 0);
    }

    #[test]
    fn rwlock_try_write_takes_only_a_free_lock() {
        let lock = RwLock::new(5);
        {
            let reader = lock.read();
            assert!(lock.try_write().is_none(), "a reader holds it");
            drop(reader);
        }
        let mut writer = lock.try_write().expect("free");
        *writer += 1;
        assert!(lock.try_write().is_none(), "a writer holds it");
        drop(writer);
        assert_eq!(*lock.read(), 6);
    }

    #[test]
    fn threaded_rwlock_prefers_a_waiting_writer() {
        let lock = Arc::new(RwLock::new(0u32));
        let first = lock.read();
        let writer = {
            let lock = lock.clone();
            thread::spawn(move || *lock.write() += 1)
        };
        // Wait until the writer has announced itself.
        while lock.state.load(Ordering::Relaxed) & RW_WRITER_WAITING == 0 {
            thread::yield_now();
        }
        let reader = {
            let lock = lock.clone();
            thread::spawn(move || *lock.read())
        };
        thread::sleep(Duration::from_millis(20));
        assert!(
            !reader.is_finished(),
            "a new reader waits behind the writer"
        );
        assert_eq!(*first, 0);
        drop(first);
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), 1, "the writer went first");
    }

    #[test]
    fn threaded_rwlock_excludes() {
        let lock = Arc::new(RwLock::new((0u64, 0u64)));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let lock = lock.clone();
                thread::spawn(move || {
                    for _ in 0..2000 {
                        if i % 2 == 0 {
                            let mut pair = lock.write();
                            pair.0 += 1;
                            pair.1 += 1;
                        } else {
                            let pair = lock.read();
                            assert_eq!(pair.0, pair.1);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(*lock.read(), (4000, 4000));
    }

    std::thread_local! {
        /// The counting hook's per-thread nesting depth.
        static DEPTH: Cell<usize> = const { Cell::new(0) };
        /// Every disable and enable on this thread.
        static CALLS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    }

    /// An [`Interrupts`] hook that counts per thread (a thread is a CPU here).
    struct Counting;

    impl Interrupts for Counting {
        fn disable(&self) {
            DEPTH.with(|depth| depth.set(depth.get() + 1));
            CALLS.with(|calls| calls.set((calls.get().0 + 1, calls.get().1)));
        }
        fn enable(&self) {
            DEPTH.with(|depth| {
                assert!(depth.get() > 0, "enable without disable");
                depth.set(depth.get() - 1)
            });
            CALLS.with(|calls| calls.set((calls.get().0, calls.get().1 + 1)));
        }
    }

    fn depth() -> usize {
        DEPTH.with(Cell::get)
    }

    #[test]
    fn threaded_every_lock_masks_interrupts_and_nesting_unwinds_out_of_order() {
        static COUNTING: Counting = Counting;
        set_interrupts(&COUNTING);
        if !core::ptr::addr_eq(*INTERRUPTS.get().unwrap(), &COUNTING) {
            return; // another hook won (not in this binary)
        }
        // Run on a fresh thread, so nothing taken before the registration counts.
        thread::spawn(|| {
            let mutex = Mutex::new(1);
            let rwlock = RwLock::new(2);
            let queue = Arc::new(WaitQueue::new());
            let guard = mutex.lock();
            assert_eq!(depth(), 1);
            let shared = rwlock.read();
            assert_eq!(depth(), 2);
            drop(guard); // not LIFO
            assert_eq!(depth(), 1);
            drop(shared);
            assert_eq!(depth(), 0);
            let exclusive = rwlock.write();
            let guard = mutex.lock();
            drop(exclusive);
            drop(guard);
            assert_eq!(depth(), 0);
            // A sleep drops the caller's guard under the channel's lock.
            let flag = Arc::new(Mutex::new(false));
            let waker = {
                let (queue, flag) = (queue.clone(), flag.clone());
                thread::spawn(move || {
                    until_sleeping(&queue, 3, 1);
                    *flag.lock() = true;
                    queue.wake(3);
                    depth()
                })
            };
            loop {
                let state = flag.lock();
                if *state {
                    break;
                }
                queue.sleep(3, state);
                assert_eq!(depth(), 0, "a sleep returns with nothing masked");
            }
            assert_eq!(waker.join().unwrap(), 0);
            assert_eq!(depth(), 0);
            let (disables, enables) = CALLS.with(Cell::get);
            assert_eq!(disables, enables, "every disable was paired");
            assert!(disables >= 8);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn waiter_sleeps_until_woken() {
        let queue = Arc::new(WaitQueue::new());
        let flag = Arc::new(Mutex::new(false));
        let waker = {
            let (queue, flag) = (queue.clone(), flag.clone());
            thread::spawn(move || {
                *flag.lock() = true;
                queue.wake_all();
            })
        };
        loop {
            let state = flag.lock();
            if *state {
                break;
            }
            queue.sleep(0, state);
        }
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
