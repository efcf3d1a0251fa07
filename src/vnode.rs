//! The [`Vnode`] hook: one file as the pager sees it, tying its [`VmObject`] to its
//! [`BlockMap`], its [`Strategy`] and the kernel services the reference calls. It sits
//! above `object.rs` because it names the object; the other hooks sit below it.

use core::ptr::NonNull;

use crate::bmap::Geometry;
use crate::buf::Direction;
use crate::error::Result;
use crate::hooks::{
    BlockMap, ByteIo, DEFAULT_MAX_TRANSFER, DEV_BSHIFT, MountFlags, PageCache, Strategy, Update,
    VnodeKind, Wired,
};
use crate::object::{ObjectState, VmObject};
use crate::page::{PAGE_MASK, PAGE_SIZE};

/// One file as the pager sees it: its object (pages, sizes, locks), its filesystem
/// and device, and the kernel services the reference pager calls.
///
/// Only the first six methods are required. The defaulted ones do nothing, which is
/// right for a kernel without journalling, transactions, a syncer or a page daemon.
/// Hooks documented as "called under the object lock" must not sleep.
pub trait Vnode: Send + Sync + 'static {
    /// The resident-page store of this file.
    type Cache: PageCache;
    /// The filesystem's block map of this file.
    type Map: BlockMap;
    /// The device the file's blocks live on.
    type Dev: Strategy;

    /// The file's memory object: pages, sizes and locks.
    fn object(&self) -> &VmObject<Self::Cache>;
    /// The file's block map.
    fn block_map(&self) -> &Self::Map;
    /// The device holding the file's blocks.
    fn device(&self) -> &Self::Dev;
    /// `log2` of the filesystem block size (9 for 512 B … 16 for 64 KiB).
    fn fs_bshift(&self) -> u32;
    /// `log2` of the device's block size: the granularity of device addresses and
    /// transfers. Defaults to 512-byte sectors.
    fn dev_bshift(&self) -> u32 {
        DEV_BSHIFT
    }
    /// The kind of file.
    fn kind(&self) -> VnodeKind {
        VnodeKind::Regular
    }

    /// Mount options that affect timestamps.
    fn mount_flags(&self) -> MountFlags {
        MountFlags::empty()
    }
    /// The largest single device transfer, in bytes (the reference's MAXPHYS).
    /// Must be a multiple of the page size: genpager rounds it down to one, and uses
    /// one page if it is smaller.
    fn max_transfer(&self) -> usize {
        DEFAULT_MAX_TRANSFER
    }
    /// Whether the vnode has been reclaimed or revoked; faults on it fail with
    /// [`Error::Dead`](crate::Error::Dead).
    fn is_dead(&self) -> bool {
        false
    }
    /// Marks timestamps for update (the reference's `GOP_MARKUPDATE`). Called under
    /// the object lock.
    fn mark_update(&self, what: Update) {
        let _ = what;
    }
    /// Enters a mount transaction (fstrans). With `wait == false` it must not sleep
    /// and returns [`Error::Busy`](crate::Error::Busy) when it cannot enter at once.
    fn trans_begin(&self, wait: bool) -> Result {
        let _ = wait;
        Ok(())
    }
    /// Leaves the mount transaction entered by [`Vnode::trans_begin`].
    fn trans_end(&self) {}
    /// Whether the mount has a journal that block allocation must run inside.
    fn has_journal(&self) -> bool {
        false
    }
    /// Begins a journal transaction (WAPBL_BEGIN); may sleep.
    fn journal_begin(&self) -> Result {
        Ok(())
    }
    /// Ends the journal transaction begun by [`Vnode::journal_begin`].
    fn journal_end(&self) {}
    /// Puts the vnode on the syncer's work list (it has dirty pages). Called under
    /// the object lock.
    fn worklist_add(&self) {}
    /// Takes the vnode off the syncer's work list (it is clean). Called under the
    /// object lock.
    fn worklist_remove(&self) {}
    /// Whether the current thread is the page daemon, which must never sleep on a
    /// transaction or a busy page.
    fn is_pagedaemon(&self) -> bool {
        false
    }
    /// A point where a long flush may yield the CPU. Called without spin locks held.
    fn preempt(&self) {}
    /// Wires `len` bytes of caller memory at `ptr` for a direct transfer in
    /// `direction` (the reference's `uvm_vslock` plus its kernel mapping), so they stay
    /// resident and addressable until [`Vnode::unwire`]. Returns where genpager and the
    /// device reach that memory: [`Wired::IN_PLACE`] (the default, for hosts whose
    /// caller memory needs no wiring) or an alias made with [`Wired::at`]. An error
    /// ends the direct transfer with nothing done for this chunk. May sleep; called with
    /// no genpager spin lock held.
    fn wire(&self, ptr: NonNull<u8>, len: usize, direction: Direction) -> Result<Wired> {
        let _ = (ptr, len, direction);
        Ok(Wired::IN_PLACE)
    }
    /// Undoes the [`Vnode::wire`] that returned `wired`, once every request over that
    /// memory has completed.
    fn unwire(&self, ptr: NonNull<u8>, len: usize, direction: Direction, wired: Wired) {
        let _ = (ptr, len, direction, wired);
    }
    /// Byte-addressed I/O for a filesystem without a block map (the reference's
    /// `genfs_compat_gop_write` as its `GOP_WRITE`): when `Some`, putpages writes pages
    /// through it instead of the block map and device. Use with
    /// [`compat::getpages`](crate::compat::getpages) for faults.
    fn byte_io(&self) -> Option<&dyn ByteIo> {
        None
    }
}

/// The vnode's [`Vnode::max_transfer`] made usable: rounded down to whole pages, and at
/// least one page (a host's 0 or unaligned value would otherwise stall a read or place
/// a request's bytes off their sectors).
pub(crate) fn max_transfer<V: Vnode + ?Sized>(vnode: &V) -> usize {
    (vnode.max_transfer() & !(PAGE_MASK as usize)).max(PAGE_SIZE)
}

/// The block geometry a vnode's I/O uses: block devices address their own sectors.
pub(crate) fn geometry<V: Vnode>(vnode: &V) -> Result<Geometry> {
    match vnode.kind() {
        VnodeKind::BlockDevice => Geometry::new(DEV_BSHIFT, DEV_BSHIFT),
        _ => Geometry::new(vnode.fs_bshift(), vnode.dev_bshift()),
    }
}

/// Records that pages of `vnode` became dirty (the reference's `genfs_markdirty`) and
/// puts the vnode on the syncer's work list if it was not on it.
pub(crate) fn note_dirty<V: Vnode + ?Sized>(state: &mut ObjectState<V::Cache>, vnode: &V) {
    if state.note_dirty() {
        vnode.worklist_add();
    }
}
