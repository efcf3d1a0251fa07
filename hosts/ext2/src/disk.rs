//! [`Disk`]: what the filesystem sits on. genpager moves file data through its
//! [`Strategy`]; the filesystem reads and writes its own metadata with
//! [`Disk::read_meta`] and [`Disk::write_meta`].

use alloc::string::String;
use core::fmt;

use genpager::Strategy;

/// Why a [`Disk`] failed a metadata transfer.
#[derive(Debug)]
#[non_exhaustive]
pub enum DiskError {
    /// The device failed the transfer.
    Io,
    /// The range `offset..offset + len` is not on the disk.
    OutOfRange {
        /// The first byte asked for.
        offset: u64,
        /// The bytes asked for.
        len: usize,
    },
    /// A write to a read-only disk.
    ReadOnly,
    /// Anything else, as a one-line message.
    Other(String),
    /// An error of the operating system (the image file of an
    /// `ImageDevice`).
    #[cfg(feature = "std")]
    Os(std::io::Error),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Io => f.write_str("device I/O error"),
            DiskError::OutOfRange { offset, len } => {
                write!(
                    f,
                    "{len} bytes at byte {offset} are past the end of the disk"
                )
            }
            DiskError::ReadOnly => f.write_str("the disk is read-only"),
            DiskError::Other(what) => f.write_str(what),
            #[cfg(feature = "std")]
            DiskError::Os(err) => write!(f, "{err}"),
        }
    }
}

impl core::error::Error for DiskError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            #[cfg(feature = "std")]
            DiskError::Os(err) => Some(err),
            _ => None,
        }
    }
}

#[cfg(feature = "std")]
impl From<std::io::Error> for DiskError {
    fn from(err: std::io::Error) -> Self {
        DiskError::Os(err)
    }
}

/// The disk an [`Ext2Fs`](crate::Ext2Fs) sits on: genpager's [`Strategy`] for file
/// data, plus byte-addressed metadata transfers for the filesystem itself.
///
/// Every method may sleep (a kernel completes the transfer by interrupt and puts the
/// caller to sleep meanwhile): the filesystem never calls one with a genpager spin
/// lock ([`genpager::sync::Mutex`], [`genpager::sync::RwLock`]) held, only under its
/// sleeping locks ([`genpager::sync::SleepRwLock`]).
///
/// With the `std` feature, `ImageDevice` implements it over an
/// image file.
pub trait Disk: Strategy + Send + Sync + 'static {
    /// Reads `buf.len()` bytes at byte `offset` of the disk: metadata (superblock,
    /// group descriptors, bitmaps, inodes, directories, indirect blocks), never file
    /// data. `offset` and the length need not be sector-aligned. May sleep.
    fn read_meta(&self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;

    /// Writes `buf` at byte `offset` of the disk: metadata, never file data. `offset`
    /// and the length need not be sector-aligned (a sector-addressed device reads,
    /// patches and writes back the sectors around them). The bytes must be what a
    /// later [`Disk::read_meta`] or genpager read of that range sees. May sleep.
    ///
    /// Calls come from several threads at once, and two of them may touch the same
    /// sector (two files' inodes share one): a disk that reads, patches and writes
    /// back whole sectors must serialize that with a sleeping lock of its own, or
    /// one update overwrites the other.
    fn write_meta(&self, offset: u64, buf: &[u8]) -> Result<(), DiskError>;

    /// Flushes the device's write cache to stable storage. May sleep. The default
    /// does nothing (a disk without a volatile cache).
    fn sync(&self) -> Result<(), DiskError> {
        Ok(())
    }

    /// The size of the disk in bytes.
    fn len(&self) -> u64;

    /// Whether the disk has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the disk may be written: a read-only disk opens a read-only
    /// filesystem.
    fn writable(&self) -> bool;
}
