//! The fault handler's helper: one faulting page of a mapped file, served with what is
//! cheap around it — the resident neighbours to map without I/O (fault-around, as
//! Linux's `filemap_map_pages`), and read-ahead for a sequential pattern.

use core::ops::Range;

use crate::busy::{BusyPages, ResidentPages};
use crate::error::{Error, Result};
use crate::fault::{Fault, Fetched};
use crate::getpages::ahead::{self, Reading};
use crate::getpages::{getpages, getpages_with};
use crate::hooks::{Access, max_file_size};
use crate::page::{PAGE_SHIFT, PAGE_SIZE, round_page, trunc_page};
use crate::readahead::{Advice, Found, ReadAhead};
use crate::sync::Arc;
use crate::vnode::Vnode;

/// How much fault-around maps at most: the aligned 64 KiB around the faulting page
/// (Linux's default `fault_around_bytes`), at least the page itself.
pub const FAULT_AROUND_BYTES: usize = 64 << 10;

/// What [`fault_around`] hands the fault handler.
#[must_use = "the pages stay busy or the object stays locked until this is dropped"]
pub enum Around<'a, V: Vnode> {
    /// The faulting page was resident: it (at `center`) and the resident,
    /// valid neighbours of the aligned block around it, under the object lock. Map
    /// every page whose [`ResidentPages::bytes`] is `Some`, read-only, then drop.
    Resident {
        /// The pages of the block; those not resident are `None`.
        pages: ResidentPages<'a, V>,
        /// The faulting page's index among them.
        center: usize,
    },
    /// The faulting page had to be read: it alone, busy. Map it, read-only, then drop.
    Read(BusyPages<'a, V>),
}

impl<V: Vnode> Around<'_, V> {
    /// The faulting page's bytes.
    pub fn center_bytes(&self) -> &[u8] {
        match self {
            Around::Resident { pages, center } => pages.bytes(*center).unwrap_or(&[]),
            Around::Read(pages) => pages.bytes(0),
        }
    }
}

/// Serves a read fault on the page at `offset` (any byte in it) of a mapping with
/// `advice`, as a kernel's fault handler calls it:
///
/// 1. feeds the access to read-ahead — the mapping's own [`ReadAhead`] (`own`, kept
///    by the kernel with the mapping) or the object's — and starts the window it
///    plans: a sequential pattern reads ahead (the maximum window at once with
///    [`Advice::Sequential`]), a random one reads only the page, and
///    [`Advice::Random`] never reads ahead;
/// 2. if the page is resident, hands it back with the resident, valid pages of the
///    aligned [`FAULT_AROUND_BYTES`] block around it ([`Around::Resident`]), so the
///    handler maps them all and the next faults there never happen;
/// 3. otherwise reads it with a synchronous fault, which waits for read-ahead's
///    request if that is bringing the page (or reads the rest of its transfer along
///    with it when the window starts there), and hands it back busy
///    ([`Around::Read`]).
///
/// ```
/// # use genpager::testing::{MemDisk, MemFs, Layout};
/// use genpager::{Advice, Around, fault_around, PAGE_SIZE};
/// # let disk = MemDisk::new((512 * PAGE_SIZE / 512) as u64);
/// # let fs = MemFs::new(disk.clone(), genpager::page::PAGE_SHIFT, Layout::Contiguous);
/// # let file = fs.create(&vec![7u8; 256 * PAGE_SIZE]).unwrap();
/// // A handler's loop over a mapping read from start to end.
/// let mut mapped = 0;
/// let mut page = 0;
/// while page < 256 {
///     let offset = (page * PAGE_SIZE) as u64;
///     match fault_around(&file, None, offset, Advice::Sequential).unwrap() {
///         Around::Resident { pages, .. } => {
///             // Map every resident page of the block; fault again past the last.
///             let run = (0..pages.len()).filter(|&i| pages.bytes(i).is_some()).count();
///             page = (pages.offset(0) / PAGE_SIZE as u64) as usize + run;
///             mapped += run;
///         }
///         Around::Read(busy) => {
///             assert_eq!(busy.bytes(0)[0], 7);
///             page += 1;
///             mapped += 1;
///         }
///     }
/// }
/// assert!(mapped >= 256);
/// // One request per 64 KiB transfer, not one per page.
/// let transfers = 256 * PAGE_SIZE / genpager::DEFAULT_MAX_TRANSFER;
/// assert!(disk.stats().requests as usize <= transfers);
/// ```
///
/// Errors: [`Error::Invalid`] for a page at or past the end of file; what the
/// synchronous fault meets. Read-ahead's own failures are never reported here.
pub fn fault_around<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    own: Option<&mut ReadAhead>,
    offset: u64,
    advice: Advice,
) -> Result<Around<'a, V>> {
    let page = trunc_page(offset);
    let block = block_around(&**vnode, page)?;
    let mut own = own;
    let found = ahead::found(
        &vnode.object().read(),
        page..page.saturating_add(PAGE_SIZE as u64),
    );
    if found == Found::Resident {
        let reading = Reading {
            first: page >> PAGE_SHIFT,
            count: 1,
            found: Found::Resident,
            advice,
        };
        ahead::read_ahead(vnode, own.as_deref_mut(), reading);
        if let Some(around) = map_resident(vnode, page, &block)? {
            return Ok(around);
        }
    }
    // The fault feeds the miss to read-ahead itself (reading the rest of the page's
    // transfer along with it), and waits for the page if read-ahead is bringing it.
    match getpages_with(vnode, Fault::read(page, 1).with_advice(advice), own)? {
        Fetched::Busy(pages) => Ok(Around::Read(pages)),
        _ => Err(Error::Invalid),
    }
}

/// The aligned fault-around block holding `page`, clipped to the end of file;
/// [`Error::Invalid`] when `page` is at or past it.
// Cannot overflow: `page < size <= max_file_size` (< 2^63), and the block ends at most
// at `round_page(size)`.
#[allow(clippy::arithmetic_side_effects)]
fn block_around<V: Vnode>(vnode: &V, page: u64) -> Result<Range<u64>> {
    let size = vnode.object().size().min(max_file_size(vnode.block_map()));
    if page >= size {
        return Err(Error::Invalid);
    }
    let span = (FAULT_AROUND_BYTES.max(PAGE_SIZE) as u64) & !(PAGE_SIZE as u64 - 1);
    let start = page - page % span;
    let end = (start + span).min(round_page(size));
    Ok(start..end)
}

/// The fast path over the block around `page`: `None` if the page is not (or no
/// longer) resident.
// Cannot overflow: `page` lies in `block`, a few pages long.
#[allow(clippy::arithmetic_side_effects)]
fn map_resident<'a, V: Vnode>(
    vnode: &'a Arc<V>,
    page: u64,
    block: &Range<u64>,
) -> Result<Option<Around<'a, V>>> {
    let count = ((block.end - block.start) >> PAGE_SHIFT) as usize;
    let center = ((page - block.start) >> PAGE_SHIFT) as usize;
    let fault = Fault::resident(block.start, count, Access::Read).centered_on(center);
    match getpages(vnode, fault) {
        Ok(Fetched::Resident(pages)) => Ok(Some(Around::Resident { pages, center })),
        Ok(_) | Err(Error::Busy) => Ok(None),
        Err(error) => Err(error),
    }
}
