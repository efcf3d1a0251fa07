#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! # genpager-ext2
//!
//! An ext2 host for genpager: images made by `mke2fs`, read and written through the
//! pager. `no_std` + `alloc`: the same filesystem code runs over an image file on a
//! host and over a kernel's disk.
//!
//! - [`Disk`] is what the filesystem sits on: genpager's
//!   [`Strategy`](genpager::Strategy) for file data, plus byte-addressed
//!   [`Disk::read_meta`]/[`Disk::write_meta`] for metadata, [`Disk::sync`],
//!   [`Disk::len`] and [`Disk::writable`].
//! - [`Ext2Fs`] is the filesystem over a `D: Disk`: superblock and group
//!   descriptors (revisions 0 and 1, 1 KiB to 64 KiB blocks), inodes, directories
//!   and path lookup, block bitmaps and allocation. Its metadata is read and written
//!   directly on the disk. [`Ext2Fs::with_device`] opens one over any disk.
//! - [`Ext2File`] is one file: a genpager [`Vnode`](genpager::Vnode) (whose `Dev` is
//!   the disk) and [`BlockMap`](genpager::BlockMap) over the inode's direct, single,
//!   double and triple indirect pointers. All file data moves through genpager.
//!
//! ## Features
//!
//! - `std` (default): `ImageDevice`, the [`Disk`] over an image file (positioned
//!   reads and writes, completing inline or on a worker thread); `Ext2Fs::open(path,
//!   OpenOptions)`; the `cli` module and the example; inode timestamps from
//!   `SystemTime`; genpager's `std` (its waits park std threads). `Ext2Fs` and
//!   `Ext2File` then default their disk type to `ImageDevice`.
//! - Without it, genpager is used with `default-features = false`; a kernel brings
//!   its [`Disk`], registers genpager's scheduler and interrupt hooks, and sets the
//!   clock with [`Ext2Fs::set_clock`] (it reads 0 until then).
//!
//! ## Locks
//!
//! A kernel completes disk transfers by interrupt and sleeps meanwhile, and
//! genpager's spin locks mask interrupts while held, so no spin lock may be held
//! across a wait. Every lock held across disk I/O or a genpager call that can wait
//! (the metadata lock, each file's inode lock and I/O lock) is a sleeping lock
//! ([`genpager::sync::SleepRwLock`]); the spin locks ([`genpager::sync::Mutex`]:
//! the vnode table, a file's error slot, the clock) guard moments with no I/O in
//! them. `bmap` and `alloc`, called by genpager under its node lock, only take the
//! sleeping ones.
//!
//! ```no_run
//! # #[cfg(feature = "std")] {
//! use genpager_ext2::{Ext2Fs, OpenOptions};
//! let fs = Ext2Fs::open("disk.img", OpenOptions::read_only())?;
//! for entry in fs.read_dir("/")? {
//!     println!("{}", entry.name_lossy());
//! }
//! let file = fs.open_file("/etc/motd")?;
//! let bytes = file.read_to_vec()?;
//!
//! // Writing: write faults fill the pages (allocating blocks for holes and past
//! // the end), then `sync` flushes them with putpages(SYNCIO) and records the size.
//! let fs = Ext2Fs::open("disk.img", OpenOptions::read_write())?;
//! let file = fs.open_file("/etc/motd")?;
//! file.write_at(bytes.len() as u64, b"appended\n")?;
//! file.sync()?;
//! fs.sync_disk()?;
//! # }
//! # Ok::<(), genpager_ext2::Ext2Error>(())
//! ```
//!
//! Over any other disk (a kernel's virtio-blk device, say):
//!
//! ```ignore
//! let fs = Ext2Fs::<VirtioDisk>::with_device(disk)?;
//! fs.set_clock(rtc_seconds);
//! let file = fs.open_file("/etc/motd")?;
//! ```

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod cli;
#[cfg(feature = "std")]
mod device;
mod disk;
mod error;
mod file;
mod fs;
pub mod layout;
mod lock;
pub mod workload;

#[cfg(feature = "std")]
pub use device::{Completion, DeviceStats, ImageDevice};
pub use disk::{Disk, DiskError};
pub use error::{Ext2Error, Result};
pub use file::{Ext2File, FileStats, MapSummary};
#[cfg(feature = "std")]
pub use fs::OpenOptions;
pub use fs::{Ext2Fs, FsInfo, MAX_HOLE_RUN, MAX_RUN, MAX_SYMLINKS, WalkEntry};
pub use layout::{DirEntry, FileKind};
