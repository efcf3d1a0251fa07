//! [`Ext2Error`]: everything opening, walking, reading or writing an image can
//! report, each with a one-line message.

use alloc::string::String;
use core::fmt;

use crate::disk::DiskError;

/// What went wrong with an image, a path or an I/O.
///
/// Every variant displays as one line fit for a command line's stderr. Corrupt and
/// unsupported images are reported here, never by panicking.
#[derive(Debug)]
#[non_exhaustive]
pub enum Ext2Error {
    /// The image file could not be opened, read or written.
    #[cfg(feature = "std")]
    Io(std::io::Error),
    /// The [`Disk`](crate::Disk) failed a metadata transfer.
    Disk(DiskError),
    /// The superblock magic is not ext2's `0xEF53`.
    BadMagic(u16),
    /// The image uses something this host does not implement (a feature flag, a
    /// revision, a block size, extents).
    Unsupported(String),
    /// The image contradicts itself: a block pointer out of range, a malformed
    /// directory entry, a directory loop, a truncated image.
    Corrupt(String),
    /// No such file or directory.
    NotFound(String),
    /// A path component that must be a directory is not one.
    NotADirectory(String),
    /// A directory where a file's contents were wanted.
    IsADirectory(String),
    /// Neither a regular file nor a directory where one was wanted (a device node,
    /// a FIFO, a socket).
    NotAFile(String),
    /// Too many symbolic links while resolving a path.
    SymlinkLoop(String),
    /// The image was opened read-only, or its features forbid writing.
    ReadOnly(String),
    /// No free block is left.
    NoSpace,
    /// The file would grow past what its block map or size fields can describe.
    TooBig,
    /// The caller passed something unusable (an empty path component, …).
    Invalid(String),
    /// genpager failed, for a reason the filesystem did not record.
    Pager(genpager::Error),
}

/// `Result` with [`Ext2Error`].
pub type Result<T = ()> = core::result::Result<T, Ext2Error>;

impl fmt::Display for Ext2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "std")]
            Ext2Error::Io(err) => write!(f, "image I/O error: {err}"),
            Ext2Error::Disk(err) => write!(f, "disk error: {err}"),
            Ext2Error::BadMagic(magic) => {
                write!(
                    f,
                    "not an ext2 image: superblock magic is {magic:#06x}, expected 0xef53"
                )
            }
            Ext2Error::Unsupported(what) => write!(f, "unsupported image: {what}"),
            Ext2Error::Corrupt(what) => write!(f, "corrupt image: {what}"),
            Ext2Error::NotFound(path) => write!(f, "{path}: no such file or directory"),
            Ext2Error::NotADirectory(path) => write!(f, "{path}: not a directory"),
            Ext2Error::IsADirectory(path) => write!(f, "{path}: is a directory"),
            Ext2Error::NotAFile(path) => write!(f, "{path}: not a regular file"),
            Ext2Error::SymlinkLoop(path) => write!(f, "{path}: too many levels of symbolic links"),
            Ext2Error::ReadOnly(why) => write!(f, "read-only: {why}"),
            Ext2Error::NoSpace => f.write_str("no space left on the filesystem"),
            Ext2Error::TooBig => f.write_str("file too large for ext2"),
            Ext2Error::Invalid(what) => write!(f, "invalid argument: {what}"),
            Ext2Error::Pager(err) => write!(f, "pager error: {err}"),
        }
    }
}

impl core::error::Error for Ext2Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            #[cfg(feature = "std")]
            Ext2Error::Io(err) => Some(err),
            Ext2Error::Disk(err) => Some(err),
            Ext2Error::Pager(err) => Some(err),
            _ => None,
        }
    }
}

#[cfg(feature = "std")]
impl From<std::io::Error> for Ext2Error {
    fn from(err: std::io::Error) -> Self {
        Ext2Error::Io(err)
    }
}

impl From<DiskError> for Ext2Error {
    /// A disk error; an operating system error of an image file stays the
    /// `Ext2Error::Io` it always was.
    fn from(err: DiskError) -> Self {
        match err {
            #[cfg(feature = "std")]
            DiskError::Os(err) => Ext2Error::Io(err),
            DiskError::ReadOnly => Ext2Error::ReadOnly(String::from("the disk is read-only")),
            other => Ext2Error::Disk(other),
        }
    }
}

impl From<genpager::Error> for Ext2Error {
    fn from(err: genpager::Error) -> Self {
        match err {
            genpager::Error::NoSpace => Ext2Error::NoSpace,
            genpager::Error::TooBig => Ext2Error::TooBig,
            other => Ext2Error::Pager(other),
        }
    }
}

/// `EUCLEAN` ("structure needs cleaning"): what a hook reports to genpager for a
/// corrupt image.
pub(crate) const EUCLEAN: i32 = 117;

impl Ext2Error {
    /// The genpager error a [`BlockMap`](genpager::BlockMap) hook hands back for
    /// this one (the file keeps the detail and returns it from the call that
    /// failed).
    pub fn to_pager(&self) -> genpager::Error {
        match self {
            Ext2Error::NoSpace => genpager::Error::NoSpace,
            Ext2Error::TooBig => genpager::Error::TooBig,
            Ext2Error::ReadOnly(_) => genpager::Error::ReadOnly,
            Ext2Error::Invalid(_) => genpager::Error::Invalid,
            Ext2Error::Pager(err) => *err,
            Ext2Error::Corrupt(_) | Ext2Error::Unsupported(_) => genpager::Error::Host(EUCLEAN),
            _ => genpager::Error::Io,
        }
    }
}
