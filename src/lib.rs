#![no_std]
#![deny(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]
//! # genpager
//!
//! A vnode pager for hobby and research kernels: the layer between the virtual-memory
//! system (page faults, `read`, `write`, `fsync`, `truncate`, the page daemon) and a
//! filesystem's block map and block device. It re-creates the behaviour of NetBSD's
//! `genfs_io.c` over four traits the kernel implements, and gives back cached,
//! clustered, hole-aware, mmap-able file I/O.
//!
//! ## How it fits together
//!
//! ```text
//!  kernel: fault handler · read/write · fsync · truncate · page daemon
//!         │  getpages()  putpages()  read()  write()  setsize()  directio()
//!  ┌──────┴──────────────────────────────────────────────────────────────┐
//!  │ 8  read · write (write, setsize) · directio · fault_around          │
//!  │    · reclaim — the page daemon's reclaimer across files             │
//!  │ 7  getpages · putpages (scan → prepare → cluster → submit → settle) │
//!  │    · compat                                                         │
//!  │ 6  fault — Fault, the fast path, settling a fault's pages           │
//!  │ 5  busy — handles on busy pages · transaction — the one guard       │
//!  │ 4  vnode — the Vnode hook, which names the object                   │
//!  │ 3  object — pages, sizes, locks · bmap — the extent walker · cache  │
//!  │ 2  hooks — BlockMap, Strategy, PageCache, ByteIo and their types    │
//!  │    · readahead — the window a reader's pattern earns                │
//!  │    · pdpolicy — the page daemon's policy (CLOCK)                    │
//!  │ 1  buf — requests and their completion · memory — frames, budget    │
//!  │    · stats — the counters                                           │
//!  │    · errseq — write errors, reported once to each open file         │
//!  │ 0  page · error · sync — the only lock facade                       │
//!  └──────┬──────────────────────────────────────────────────────────────┘
//!    PageCache       Vnode          BlockMap        Strategy
//! ```
//!
//! A module uses only modules on lower layers (`scripts/layers.sh` checks it, and the
//! test rig, `testing`, sits above them all), so each layer can be read knowing only
//! the ones below it.
//!
//! - [`Vnode`]: one file — its [`VmObject`] (pages, sizes, locks), its block map, its
//!   device, and defaulted hooks for timestamps, transactions, the syncer work list.
//! - [`BlockMap`]: the filesystem — logical block to device block, hole allocation.
//! - [`Strategy`]: the device — takes an [`IoRequest`](buf::IoRequest) of page
//!   segments and completes it exactly once, inline or later from an interrupt.
//! - [`PageCache`]: the resident pages of one object. [`cache::DefaultCache`] is
//!   ready to use.
//!
//! - [`reclaim::Reclaimer`]: the page daemon's side — files registered with it give
//!   back pages round robin when the kernel runs short ([`reclaim`] says how), and a
//!   bounded [`cache::DefaultCache`] frees its own idle inactive pages the same way.
//!
//! Entry points take the vnode as an `Arc` because an asynchronous completion must be
//! able to reach it after the call returns.
//!
//! ## Locks
//!
//! Outer to inner: mount transaction, journal, the node lock ([`sync::SleepRwLock`],
//! held across read I/O, so it sleeps), the object lock (a short spin lock never held
//! across a hook that may sleep or a device submission), page busy bits in ascending
//! offset order. Nothing enters the transaction or journal while holding the node lock:
//! [`GetFlags::GLOCKHELD`] means the caller holds all three.
//!
//! A kernel lends genpager two hooks, registered once at boot (the [`sync`] module
//! docs show both for a toy kernel):
//! - [`sync::Scheduler`] (`current`, `block`, `wake`, with std's park/unpark permit
//!   semantics), through [`sync::set_scheduler`]: a thread waiting for a busy page, a
//!   request or the node lock sleeps on a keyed wait channel and is woken alone.
//!   Without one and without `std`, waits spin on the waiter's own flag.
//! - [`sync::Interrupts`] (`disable`/`enable`, nesting per CPU), through
//!   [`sync::set_interrupts`]: every genpager spin lock masks interrupts while held, so
//!   a device may complete requests in its interrupt handler. Without one, completions
//!   must run in thread context.
//!
//! Reading ahead is built in: [`read`] and synchronous read faults follow the
//! object's [`ReadAhead`] state, [`read_with`] and [`fault_around`] a reader's own, so
//! small sequential reads and one-page faults reach the device as whole transfers,
//! the next window started before the reader needs it, while random access reads only
//! what it asks ([`ReadAhead`] says how).
//!
//! Completion allocates nothing, frees nothing and drops no vnode: what it leaves is
//! freed by [`reap_completions`], which the kernel calls from a thread that holds
//! nothing (a worker, the idle loop); genpager never calls it itself.
//!
//! A failed write loses nothing (its pages stay resident and dirty) and its error is
//! reported errseq-style: a kernel keeps an [`ErrorCursor`] in each open file
//! description, made by [`VmObject::error_cursor`] at open, and implements fsync with
//! [`fsync`], which reports each write failure since that cursor's last report once,
//! whoever flushed the pages; [`putpages`] with `CLEANIT | SYNCIO` reports through the
//! object's own cursor and takes nothing from the files'. An object whose writes keep
//! failing becomes failed ([`VmObject::is_failed`]): its dirty pages stay, no longer
//! written, every fsync reporting the error, until [`VmObject::clear_failed`].
//!
//! ## Concurrency
//!
//! Every entry point may run at the same time as every other on one file, from any
//! number of threads: faults, [`read`], [`write()`], [`setsize`], [`putpages`] and
//! [`directio`](directio::directio). Writes, size changes, allocating faults and direct
//! writes take the node lock exclusively, so they run one at a time: writes that do not
//! overlap never lose each other's bytes, and overlapping ones land in some serial
//! order. A read racing a write sees the bytes before or after it, page by page. A
//! `CLEANIT | SYNCIO` flush returns `Ok` only once every page dirty when it began is on
//! the device. A thread holding a fault's pages ([`BusyPages`], [`WritablePages`]) must
//! release them before it flushes, writes or truncates the same file (those wait for
//! busy pages).
//!
//! ## A whole host in one page
//!
//! A RAM disk, a filesystem whose one file is laid out contiguously, and a read
//! through the page cache:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use genpager::{cache::DefaultCache, buf::{Direction, IoRequest}, *};
//!
//! struct RamDisk(Mutex<Vec<u8>>);
//!
//! impl Strategy for RamDisk {
//!     fn submit(&self, mut request: IoRequest) {
//!         let mut disk = self.0.lock().unwrap();
//!         let at = request.block() as usize * 512;
//!         let range = at..at + request.len();
//!         let result = match (disk.get_mut(range), request.direction()) {
//!             (None, _) => Err(Error::Io),
//!             (Some(bytes), Direction::Read) => request.fill(bytes),
//!             (Some(bytes), Direction::Write) => request.gather(bytes),
//!         };
//!         drop(disk);
//!         request.complete(result); // inline completion is fine
//!     }
//! }
//!
//! struct File { object: VmObject<DefaultCache>, disk: RamDisk }
//!
//! impl BlockMap for File {
//!     fn bmap(&self, lbn: u64) -> Result<Mapping> {
//!         // 4 KiB blocks, all contiguous from sector 0: one run to the end.
//!         let blocks = self.object.size().div_ceil(4096);
//!         Ok(Mapping::mapped(lbn * 8, blocks.saturating_sub(lbn + 1)))
//!     }
//! }
//!
//! impl Vnode for File {
//!     type Cache = DefaultCache;
//!     type Map = Self;
//!     type Dev = RamDisk;
//!     fn object(&self) -> &VmObject<DefaultCache> { &self.object }
//!     fn block_map(&self) -> &Self { self }
//!     fn device(&self) -> &RamDisk { &self.disk }
//!     fn fs_bshift(&self) -> u32 { 12 }
//! }
//!
//! // With 4 KiB pages: a 64 KiB disk, a 10,000-byte file, byte 4100 is 42.
//! let mut bytes = vec![0u8; 16 * PAGE_SIZE];
//! bytes[PAGE_SIZE + 4] = 42;
//! let size = 2 * PAGE_SIZE as u64 + 1808;
//! let file = Arc::new(File {
//!     object: VmObject::new(DefaultCache::new(), size),
//!     disk: RamDisk(Mutex::new(bytes)),
//! });
//! let mut buf = [0u8; 100];
//! assert_eq!(read(&file, PAGE_SIZE as u64 - 6, &mut buf).unwrap(), 100);
//! assert_eq!(buf[10], 42);
//! // The two pages stay cached, and read-ahead brought the file's third (its first
//! // read, from page 0, looks sequential): the next reads are served from memory.
//! assert_eq!(file.object().read().cache().resident_pages(), 3);
//! // Reads stop at the end of file.
//! assert_eq!(read(&file, size - 50, &mut buf).unwrap(), 50);
//! ```
//!
//! ## Features
//!
//! - `std`: with no [`sync::Scheduler`] registered, waiting parks std threads
//!   ([`sync::ThreadParker`]).
//! - `testing`: the test rig — `MemDisk`, `MemFs`, fault injection (implies `std`).
//! - `page-16k`, `page-64k`: 16 KiB or 64 KiB pages ([`PAGE_SIZE`]) instead of 4 KiB, as
//!   AArch64 kernels may run. At most one of them: both on is a compile error (so build
//!   with an explicit feature list, not `--all-features`).

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

// Bottom to top, as the diagram above draws them.
mod error;
pub mod page;
pub mod sync;

pub mod buf;
mod errseq;
pub mod memory;
pub mod stats;

mod hooks;
mod pdpolicy;
mod readahead;

pub mod bmap;
pub mod cache;
mod object;

mod vnode;

mod busy;
mod transaction;

mod fault;

pub mod compat;
mod getpages;
mod putpages;

pub mod directio;
mod fault_around;
mod read;
pub mod reclaim;
mod write;

#[cfg(feature = "testing")]
pub mod testing;

pub use buf::reap_completions;
pub use busy::{BusyPages, ResidentPages, WritablePages};
pub use error::{Error, Result};
pub use errseq::{DEFAULT_WRITE_FAILURE_LIMIT, ErrorCursor};
pub use fault::{Fault, Fetched, GetFlags};
pub use fault_around::{Around, FAULT_AROUND_BYTES, fault_around};
pub use getpages::getpages;
pub use hooks::{
    Access, BlockMap, DEFAULT_MAX_TRANSFER, DEV_BSHIFT, MAX_FILE_SIZE, Mapping, MountFlags,
    PageCache, Protection, SizeKind, Strategy, Update, VnodeKind,
};
pub use object::{ObjectFlags, ObjectState, VmObject};
pub use page::{DirtyStatus, PAGE_SIZE, Page, PageCounts, PageFlags, PageQueue, Tag};
pub use putpages::{PutError, PutFlags, flush_expired, fsync, putpages, putpages_busy};
pub use read::{read, read_with};
pub use readahead::{Advice, ReadAhead};
pub use stats::{IoStats, ObjectStats, Stats};
pub use vnode::Vnode;
pub use write::{setsize, write};
