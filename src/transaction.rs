//! The mount transaction and journal a path runs inside (locks 1 and 2 of the lock
//! order), as one guard.

use crate::error::Result;
use crate::sync::Wait;
use crate::vnode::Vnode;

/// A mount transaction this thread entered, and the journal if it began one.
///
/// Only a successful [`Vnode::trans_begin`] makes one, so a guard always has exactly
/// one `trans_end` to do; dropping it ends the journal (if begun) and then the
/// transaction, in the reverse of the lock order.
#[must_use = "dropping the guard leaves the transaction at once"]
pub(crate) struct Transaction<'a, V: Vnode> {
    vnode: &'a V,
    journal: bool,
}

impl<'a, V: Vnode> Transaction<'a, V> {
    /// Enters the mount transaction.
    pub(crate) fn begin(vnode: &'a V, wait: Wait) -> Result<Self> {
        vnode.trans_begin(wait == Wait::Sleep)?;
        Ok(Self {
            vnode,
            journal: false,
        })
    }

    /// Begins a journal transaction inside this one when the mount has a journal
    /// (blocks will be allocated or written). On error the caller drops the guard,
    /// which leaves the mount transaction.
    pub(crate) fn begin_journal(&mut self) -> Result {
        if self.journal || !self.vnode.has_journal() {
            return Ok(());
        }
        self.vnode.journal_begin()?;
        self.journal = true;
        Ok(())
    }
}

impl<V: Vnode> Drop for Transaction<'_, V> {
    fn drop(&mut self) {
        if self.journal {
            self.vnode.journal_end();
        }
        self.vnode.trans_end();
    }
}
