#![no_std]
#![deny(missing_docs, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
//! genpager: a vnode pager for hobby and research kernels.
//!
//! (crate docs in progress)

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod bmap;
pub mod buf;
mod busy;
pub mod cache;
mod error;
mod getpages;
mod hooks;
mod object;
pub mod page;
pub mod sync;

pub use busy::{BusyPages, ResidentPages};
pub use error::{Error, Result};
pub use getpages::{Advice, Fetched, GetFlags, getpages, read};
pub use hooks::{
    Access, BlockMap, DEFAULT_MAX_TRANSFER, DEV_BSHIFT, Mapping, MountFlags, PageCache, Protection,
    SizeKind, Strategy, Update, Vnode, VnodeKind,
};
pub use object::{ObjectFlags, ObjectState, VmObject};
pub use page::{DirtyStatus, PAGE_SIZE, Page, PageFlags, PageQueue, Tag};
