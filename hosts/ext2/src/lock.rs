//! [`SleepMutex`]: a sleeping lock with data, built from genpager's two lock kinds
//! without `unsafe`.
//!
//! The filesystem holds some of its locks across disk I/O and across genpager calls
//! that wait. In a kernel those wait by sleeping until an interrupt completes the
//! transfer, while genpager's spin locks ([`genpager::sync::Mutex`]) mask interrupts
//! for as long as they are held: holding one across a wait would hang a one-CPU
//! machine. Such a lock must sleep: [`SleepRwLock`]. That lock guards `()`, so the
//! data lives beside it in a spin lock taken only for a moment: the holder of the
//! sleep lock moves the data out of the spin lock when it takes the sleep lock, owns
//! it (no spin lock held) while it works and does I/O, and moves it back before
//! releasing the sleep lock.

use core::ops::{Deref, DerefMut};

use genpager::sync::{Mutex, SleepGuard, SleepRwLock};

/// A mutual-exclusion lock whose waiters sleep, holding a `T`. Not reentrant.
pub(crate) struct SleepMutex<T> {
    sleep: SleepRwLock,
    /// `Some` while nobody holds `sleep` exclusively; `None` while a
    /// [`SleepMutexGuard`] owns the value. A spin lock, taken only to move the
    /// value in and out (no I/O, no genpager call under it).
    slot: Mutex<Option<T>>,
}

/// Exclusive ownership of a [`SleepMutex`]'s value; gives it back on drop.
pub(crate) struct SleepMutexGuard<'a, T> {
    value: Option<T>,
    lock: &'a SleepMutex<T>,
    // Dropped after `Drop::drop` has put the value back.
    _held: SleepGuard<'a>,
}

impl<T> SleepMutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            sleep: SleepRwLock::new(),
            slot: Mutex::new(Some(value)),
        }
    }

    /// Takes the lock, sleeping while another thread holds it. May sleep: never
    /// call it with a genpager spin lock held.
    pub(crate) fn lock(&self) -> SleepMutexGuard<'_, T> {
        let held = self.sleep.write();
        let value = self.slot.lock().take();
        assert!(
            value.is_some(),
            "a SleepMutex's value is home while unlocked"
        );
        SleepMutexGuard {
            value,
            lock: self,
            _held: held,
        }
    }
}

impl<T> Deref for SleepMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("held until drop")
    }
}

impl<T> DerefMut for SleepMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_mut().expect("held until drop")
    }
}

impl<T> Drop for SleepMutexGuard<'_, T> {
    fn drop(&mut self) {
        let value = self.value.take();
        *self.lock.slot.lock() = value;
    }
}
