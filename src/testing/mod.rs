//! The test rig (feature `testing`): a RAM block device and a toy filesystem that
//! implement the host hooks, with fault injection and request logging.
//!
//! - [`MemDisk`] is a [`Strategy`](crate::Strategy) over a byte vector of 512-byte
//!   sectors. It completes requests inline or on its own completion thread (optionally
//!   out of order), can hold requests pending, logs every request, counts bytes and
//!   models device time, and fails chosen requests on demand.
//! - [`MemFs`] allocates whole filesystem blocks out of a [`MemDisk`] with a chosen
//!   [`Layout`], and [`MemFile`] is one file on it: a [`Vnode`](crate::Vnode) and
//!   [`BlockMap`](crate::BlockMap) with settable knobs (dead, page daemon, mount flags,
//!   journal, transaction refusal, `putrange` granularity, bmap failures) that counts
//!   every hook the pager calls.
//!
//! ```
//! use genpager::testing::{Layout, MemDisk, MemFs};
//!
//! let disk = MemDisk::new(1024);
//! let fs = MemFs::new(disk.clone(), 12, Layout::Contiguous);
//! let file = fs.create(b"hello, pager").unwrap();
//! assert_eq!(file.disk_contents(), b"hello, pager");
//! ```
//!
//! Everything here uses `std`. The lock-protected state the pager path reaches
//! (block tables, knobs, counters) uses the crate's lock facade, so the rig also works
//! under `--cfg loom` in inline mode ([`MemDisk::new`]); the completion thread of
//! [`MemDisk::threaded`] is a plain std thread and is not loom-modelled.

mod disk;
mod fs;
#[cfg(not(loom))]
pub mod model;

pub use crate::buf::{Direction, Priority};
pub use disk::{DiskStats, LatencyModel, LoggedRequest, MemDisk, SECTOR_SIZE};
pub use fs::{Hook, HookCounts, Layout, Ledger, MAX_RUN, MemFile, MemFs};

/// The name of [`MemDisk::threaded`]'s completion thread (the rig's "interrupt": a
/// test's scheduler hook can tell wakeups sent from it).
pub const COMPLETION_THREAD: &str = "memdisk-completion";

/// Fails a check the rig makes when a disk or file is dropped (unless the thread is
/// already panicking, where a second panic would abort and hide the first).
///
/// On the test's threads this panics. An asynchronous completion can drop the last
/// reference to a file or disk on the completion thread; a panic there would kill
/// the thread in the middle of a request and leave the test hanging in
/// [`MemDisk::quiesce`] instead of failing, so there the message is printed and the
/// process aborts.
fn fail_at_drop(message: core::fmt::Arguments<'_>) {
    if std::thread::panicking() {
        return;
    }
    if std::thread::current().name() == Some(COMPLETION_THREAD) {
        std::eprintln!("{message}");
        std::process::abort();
    }
    panic!("{message}");
}
