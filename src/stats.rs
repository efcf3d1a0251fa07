//! Page accounting and I/O statistics, per object and summed across objects.
//!
//! Each [`VmObject`](crate::VmObject) keeps two kinds of figures:
//!
//! - [`PageCounts`]: how many of its pages are resident, dirty and under writeback,
//!   asked of its [`PageCache`](crate::PageCache) under the object lock
//!   ([`PageCache::page_counts`](crate::PageCache::page_counts); `DefaultCache`
//!   keeps them exactly, in O(1)).
//! - [`IoStats`]: what its I/O did — device requests and bytes each way, a histogram
//!   of request sizes, holes read as zeroes without I/O, failed transfers, direct I/O.
//!   These are relaxed atomic counters bumped where requests are submitted and where
//!   transfers complete (possibly in an interrupt: a counter is one atomic add, no
//!   lock, no allocation), so counting never takes a lock on the I/O path.
//!
//! [`VmObject::stats`](crate::VmObject::stats) takes both as one [`ObjectStats`]
//! snapshot: the per-file row of a statistics display (its [`Display`](fmt::Display)
//! prints it on one line). A kernel that wants totals sums the snapshots of the objects
//! it knows on demand ([`Stats::add`], or `Iterator::sum`): there is no global counter,
//! and so no global lock or shared cache line on the hot path.
//!
//! ```
//! use genpager::{VmObject, cache::DefaultCache, stats::Stats};
//! let a = VmObject::new(DefaultCache::new(), 4096);
//! let b = VmObject::new(DefaultCache::new(), 8192);
//! let total: Stats = [a.stats(), b.stats()].iter().sum();
//! assert_eq!(total.objects, 2);
//! assert_eq!(total.pages.resident, 0);
//! assert!(total.to_string().starts_with("objects=2 resident=0 dirty=0 writeback=0"));
//! ```
//!
//! The counters are read one by one with relaxed loads: a snapshot taken while I/O is
//! in flight may count a request whose bytes it does not count yet. Each counter
//! wraps at 2^64.

use core::fmt;
use core::iter::Sum;

use crate::page::{PAGE_SIZE, PageCounts};
use crate::sync::{Counter, Ordering};

/// How many buckets the request-size histograms have ([`IoStats::read_sizes`],
/// [`IoStats::write_sizes`]).
pub const SIZE_BUCKETS: usize = 8;

/// The histogram bucket of a request of `len` bytes: bucket 0 holds requests of at most
/// one page, bucket `k` (for `0 < k < SIZE_BUCKETS - 1`) those of more than `2^(k-1)`
/// and at most `2^k` pages, and the last bucket everything larger than
/// `2^(SIZE_BUCKETS - 2)` pages. With 4 KiB pages the 64 KiB default maximum transfer
/// falls in bucket 4.
///
/// ```
/// use genpager::{PAGE_SIZE, stats::size_bucket};
/// assert_eq!(size_bucket(512), 0);
/// assert_eq!(size_bucket(PAGE_SIZE), 0);
/// assert_eq!(size_bucket(PAGE_SIZE + 1), 1);
/// assert_eq!(size_bucket(3 * PAGE_SIZE), 2);
/// assert_eq!(size_bucket(16 * PAGE_SIZE), 4);
/// assert_eq!(size_bucket(1 << 40), 7);
/// ```
pub fn size_bucket(len: usize) -> usize {
    let pages = len.div_ceil(PAGE_SIZE).max(1);
    // `bits(pages - 1)` is `ceil(log2(pages))` for `pages >= 1`.
    let bits = usize::BITS.saturating_sub(pages.saturating_sub(1).leading_zeros());
    (bits as usize).min(SIZE_BUCKETS.saturating_sub(1))
}

/// What an object's I/O did, counted since the object was made.
///
/// Requests are counted when they are handed to the device (whether or not they
/// succeed), with the bytes they ask for: the figures match what the device saw.
/// Page-cache reads and writes, direct I/O and the transfers of a filesystem served
/// through [`ByteIo`](crate::compat::ByteIo) (one request per `read_at` or
/// `write_vectored_at` call) all count; `direct_*` are the direct part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IoStats {
    /// Read requests handed to the device.
    pub read_requests: u64,
    /// Bytes those read requests asked for.
    pub read_bytes: u64,
    /// Write requests handed to the device.
    pub write_requests: u64,
    /// Bytes those write requests asked for.
    pub write_bytes: u64,
    /// Read requests by size ([`size_bucket`]): how well reads cluster.
    pub read_sizes: [u64; SIZE_BUCKETS],
    /// Write requests by size ([`size_bucket`]): how well writeback clusters.
    pub write_sizes: [u64; SIZE_BUCKETS],
    /// Holes met by reads (page faults, read-ahead, direct reads): extents with no
    /// blocks, zero-filled without I/O.
    pub holes: u64,
    /// The bytes of those holes, zero-filled instead of read.
    pub hole_bytes: u64,
    /// Read transfers that failed: a fault's or read-ahead's group of requests, or one
    /// direct read request, that ended in an error (the device's, or one met building
    /// the requests, such as a block map error).
    pub read_errors: u64,
    /// Write transfers that failed: a writeback cluster's group of requests, or one
    /// direct write request, that ended in an error.
    pub write_errors: u64,
    /// Of the requests above, those of direct I/O (either way).
    pub direct_requests: u64,
    /// The bytes of those direct requests.
    pub direct_bytes: u64,
}

fn add_all<const N: usize>(to: &mut [u64; N], from: &[u64; N]) {
    for (to, from) in to.iter_mut().zip(from) {
        *to = to.saturating_add(*from);
    }
}

impl IoStats {
    /// Adds `other`'s counts to these (saturating).
    pub fn add(&mut self, other: &IoStats) {
        let sum = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        sum(&mut self.read_requests, other.read_requests);
        sum(&mut self.read_bytes, other.read_bytes);
        sum(&mut self.write_requests, other.write_requests);
        sum(&mut self.write_bytes, other.write_bytes);
        add_all(&mut self.read_sizes, &other.read_sizes);
        add_all(&mut self.write_sizes, &other.write_sizes);
        sum(&mut self.holes, other.holes);
        sum(&mut self.hole_bytes, other.hole_bytes);
        sum(&mut self.read_errors, other.read_errors);
        sum(&mut self.write_errors, other.write_errors);
        sum(&mut self.direct_requests, other.direct_requests);
        sum(&mut self.direct_bytes, other.direct_bytes);
    }
}

/// One object's figures at one moment ([`VmObject::stats`](crate::VmObject::stats)):
/// the per-file statistics row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectStats {
    /// Its pages, counted under the object lock.
    pub pages: PageCounts,
    /// Its I/O counters.
    pub io: IoStats,
}

/// Figures summed over any number of objects ([`Stats::add`], `Iterator::sum`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats {
    /// How many objects were added.
    pub objects: u64,
    /// Their page counts, summed.
    pub pages: PageCounts,
    /// Their I/O counters, summed.
    pub io: IoStats,
}

impl Stats {
    /// Adds one object's snapshot.
    pub fn add(&mut self, object: &ObjectStats) {
        self.objects = self.objects.saturating_add(1);
        self.pages.add(&object.pages);
        self.io.add(&object.io);
    }
}

impl<'a> Sum<&'a ObjectStats> for Stats {
    fn sum<I: Iterator<Item = &'a ObjectStats>>(iter: I) -> Self {
        iter.fold(Stats::default(), |mut total, object| {
            total.add(object);
            total
        })
    }
}

impl Sum<ObjectStats> for Stats {
    fn sum<I: Iterator<Item = ObjectStats>>(iter: I) -> Self {
        iter.fold(Stats::default(), |mut total, object| {
            total.add(&object);
            total
        })
    }
}

/// A histogram as `[a,b,c,…]`.
struct Buckets<'a>(&'a [u64]);

impl fmt::Display for Buckets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (at, count) in self.0.iter().enumerate() {
            if at != 0 {
                f.write_str(",")?;
            }
            write!(f, "{count}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Display for IoStats {
    /// `reads=N/B bytes writes=N/B bytes read-sizes=[…] write-sizes=[…] holes=N/B
    /// bytes errors=R/W direct=N/B bytes`, on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reads={}/{} bytes writes={}/{} bytes read-sizes={} write-sizes={} \
             holes={}/{} bytes errors={}/{} direct={}/{} bytes",
            self.read_requests,
            self.read_bytes,
            self.write_requests,
            self.write_bytes,
            Buckets(&self.read_sizes),
            Buckets(&self.write_sizes),
            self.holes,
            self.hole_bytes,
            self.read_errors,
            self.write_errors,
            self.direct_requests,
            self.direct_bytes,
        )
    }
}

impl fmt::Display for ObjectStats {
    /// The per-file row: the page counts, then the I/O counters, on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.pages, self.io)
    }
}

impl fmt::Display for Stats {
    /// `objects=N`, then the summed row.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "objects={} {} {}", self.objects, self.pages, self.io)
    }
}

/// The live counters behind [`IoStats`], kept in each object. Every update is one
/// relaxed atomic add: callable from an interrupt, with or without any lock.
pub(crate) struct IoCounters {
    read_requests: Counter,
    read_bytes: Counter,
    write_requests: Counter,
    write_bytes: Counter,
    read_sizes: [Counter; SIZE_BUCKETS],
    write_sizes: [Counter; SIZE_BUCKETS],
    holes: Counter,
    hole_bytes: Counter,
    read_errors: Counter,
    write_errors: Counter,
    direct_requests: Counter,
    direct_bytes: Counter,
}

fn bump(counter: &Counter, by: u64) {
    // Wraps at 2^64: a statistic, read only to be reported.
    counter.fetch_add(by, Ordering::Relaxed);
}

fn load(counter: &Counter) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl IoCounters {
    pub(crate) const fn new() -> Self {
        Self {
            read_requests: Counter::new(0),
            read_bytes: Counter::new(0),
            write_requests: Counter::new(0),
            write_bytes: Counter::new(0),
            read_sizes: [const { Counter::new(0) }; SIZE_BUCKETS],
            write_sizes: [const { Counter::new(0) }; SIZE_BUCKETS],
            holes: Counter::new(0),
            hole_bytes: Counter::new(0),
            read_errors: Counter::new(0),
            write_errors: Counter::new(0),
            direct_requests: Counter::new(0),
            direct_bytes: Counter::new(0),
        }
    }

    /// Counts a read request of `len` bytes handed to the device.
    pub(crate) fn read(&self, len: usize) {
        Self::request(&self.read_requests, &self.read_bytes, &self.read_sizes, len);
    }

    /// Counts a write request of `len` bytes handed to the device.
    pub(crate) fn write(&self, len: usize) {
        Self::request(
            &self.write_requests,
            &self.write_bytes,
            &self.write_sizes,
            len,
        );
    }

    fn request(requests: &Counter, bytes: &Counter, sizes: &[Counter], len: usize) {
        bump(requests, 1);
        bump(bytes, len as u64);
        if let Some(bucket) = sizes.get(size_bucket(len)) {
            bump(bucket, 1);
        }
    }

    /// Counts a direct I/O request of `len` bytes handed to the device, a write if
    /// `writing` (it counts as a read or write request too).
    pub(crate) fn direct(&self, len: usize, writing: bool) {
        if writing {
            self.write(len);
        } else {
            self.read(len);
        }
        bump(&self.direct_requests, 1);
        bump(&self.direct_bytes, len as u64);
    }

    /// Counts a hole of `len` bytes a read zero-filled without I/O.
    pub(crate) fn hole(&self, len: u64) {
        bump(&self.holes, 1);
        bump(&self.hole_bytes, len);
    }

    /// Counts a read transfer that failed.
    pub(crate) fn read_error(&self) {
        bump(&self.read_errors, 1);
    }

    /// Counts a write transfer that failed.
    pub(crate) fn write_error(&self) {
        bump(&self.write_errors, 1);
    }

    /// The counters now, each read on its own.
    pub(crate) fn snapshot(&self) -> IoStats {
        IoStats {
            read_requests: load(&self.read_requests),
            read_bytes: load(&self.read_bytes),
            write_requests: load(&self.write_requests),
            write_bytes: load(&self.write_bytes),
            read_sizes: self.read_sizes.each_ref().map(load),
            write_sizes: self.write_sizes.each_ref().map(load),
            holes: load(&self.holes),
            hole_bytes: load(&self.hole_bytes),
            read_errors: load(&self.read_errors),
            write_errors: load(&self.write_errors),
            direct_requests: load(&self.direct_requests),
            direct_bytes: load(&self.direct_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn buckets_are_powers_of_two_of_pages() {
        let expect = [
            (1, 0),
            (PAGE_SIZE, 0),
            (PAGE_SIZE + 1, 1),
            (2 * PAGE_SIZE, 1),
            (2 * PAGE_SIZE + 512, 2),
            (4 * PAGE_SIZE, 2),
            (5 * PAGE_SIZE, 3),
            (64 * PAGE_SIZE, 6),
            (65 * PAGE_SIZE, 7),
            (usize::MAX, 7),
            (0, 0),
        ];
        for (len, bucket) in expect {
            assert_eq!(size_bucket(len), bucket, "{len} bytes");
        }
    }

    #[test]
    fn counters_snapshot_and_sum() {
        let counters = IoCounters::new();
        counters.read(3 * PAGE_SIZE);
        counters.direct(512, true);
        counters.hole(100);
        counters.write_error();
        let io = counters.snapshot();
        assert_eq!((io.read_requests, io.read_bytes), (1, 3 * PAGE_SIZE as u64));
        assert_eq!(io.read_sizes, [0, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!((io.write_requests, io.write_bytes), (1, 512));
        assert_eq!(io.write_sizes[0], 1);
        assert_eq!((io.direct_requests, io.direct_bytes), (1, 512));
        assert_eq!((io.holes, io.hole_bytes), (1, 100));
        assert_eq!((io.read_errors, io.write_errors), (0, 1));
        let row = ObjectStats {
            pages: PageCounts {
                resident: 5,
                dirty: 2,
                writeback: 1,
            },
            io,
        };
        let total: Stats = [row, row].into_iter().sum();
        assert_eq!(total.objects, 2);
        assert_eq!(total.pages.dirty, 4);
        assert_eq!(total.io.read_sizes[2], 2);
        assert_eq!(total.io.write_errors, 2);
        let line = row.to_string();
        assert!(!line.contains('\n'));
        assert!(line.starts_with("resident=5 dirty=2 writeback=1 reads=1/"));
        assert!(line.contains("read-sizes=[0,0,1,0,0,0,0,0]"));
        assert!(line.contains("errors=0/1 direct=1/512 bytes"));
        assert!(total.to_string().starts_with("objects=2 resident=10 "));
    }
}
