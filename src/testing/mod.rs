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
pub use fs::{HookCounts, Layout, MemFile, MemFs};
