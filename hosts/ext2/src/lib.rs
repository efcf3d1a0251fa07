#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
//! # genpager-ext2
//!
//! An ext2 host for genpager: images made by `mke2fs`, read and written through the
//! pager.
//!
//! - [`ImageDevice`] is the [`Strategy`](genpager::Strategy): positioned reads and
//!   writes on the image file, completing inline or on a worker thread.
//! - [`Ext2Fs`] is the filesystem: superblock and group descriptors (revisions 0 and
//!   1, 1 KiB to 64 KiB blocks), inodes, directories and path lookup, block bitmaps
//!   and allocation. Its metadata is read and written directly on the image.
//! - [`Ext2File`] is one file: a genpager [`Vnode`](genpager::Vnode) and
//!   [`BlockMap`](genpager::BlockMap) over the inode's direct, single, double and
//!   triple indirect pointers. All file data moves through genpager.
//!
//! ```no_run
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
//! # Ok::<(), genpager_ext2::Ext2Error>(())
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

#[cfg(feature = "std")]
pub use device::{Completion, DeviceStats, ImageDevice};
pub use disk::{Disk, DiskError};
pub use error::{Ext2Error, Result};
pub use file::{Ext2File, FileStats, MapSummary};
#[cfg(feature = "std")]
pub use fs::OpenOptions;
pub use fs::{Ext2Fs, FsInfo, MAX_HOLE_RUN, MAX_RUN, MAX_SYMLINKS, WalkEntry};
pub use layout::{DirEntry, FileKind};
