//! The one error type of the crate, and its errno mapping.

use core::fmt;

/// Everything that can go wrong in genpager, as a flat enum.
///
/// Caller mistakes (bad offsets, zero counts) are [`Error::Invalid`]; the rest come
/// from the host's hooks or from resource limits. [`Error::errno`] maps each to the
/// errno a Unix kernel would return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// A page or resource was busy and the caller asked not to wait (EBUSY).
    Busy,
    /// The caller passed an argument the operation cannot accept (EINVAL).
    Invalid,
    /// Memory for pages or requests could not be allocated (ENOMEM).
    NoMemory,
    /// The device reported a failed transfer (EIO).
    Io,
    /// The filesystem has no free block for an allocation (ENOSPC).
    NoSpace,
    /// A busy page was met under `BUSYFAIL`; waiting could deadlock (EDEADLK).
    Deadlock,
    /// The vnode is dead: reclaimed or revoked (ENOENT).
    Dead,
    /// The filesystem cannot allocate blocks at all: it is read-only (EROFS).
    ReadOnly,
    /// A hook asked the caller to retry later (EAGAIN).
    Again,
    /// The object is too large for the request (EFBIG).
    TooBig,
    /// Any other errno the host wants to pass through unchanged.
    Host(i32),
}

/// `Result` with genpager's [`Error`]; `Result` alone means `Result<()>`.
pub type Result<T = ()> = core::result::Result<T, Error>;

impl Error {
    /// The errno value this error corresponds to on a NetBSD-like kernel.
    ///
    /// ```
    /// assert_eq!(genpager::Error::Busy.errno(), 16);
    /// assert_eq!(genpager::Error::Host(70).errno(), 70);
    /// ```
    pub const fn errno(self) -> i32 {
        match self {
            Error::Dead => 2,
            Error::Io => 5,
            Error::Deadlock => 11,
            Error::NoMemory => 12,
            Error::Busy => 16,
            Error::Invalid => 22,
            Error::TooBig => 27,
            Error::NoSpace => 28,
            Error::ReadOnly => 30,
            Error::Again => 35,
            Error::Host(errno) => errno,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Error::Busy => "page busy",
            Error::Invalid => "invalid argument",
            Error::NoMemory => "out of memory",
            Error::Io => "device I/O error",
            Error::NoSpace => "no space left on the filesystem",
            Error::Deadlock => "busy page would deadlock",
            Error::Dead => "vnode is dead",
            Error::ReadOnly => "read-only filesystem",
            Error::Again => "try again",
            Error::TooBig => "file too large",
            Error::Host(errno) => return write!(f, "host error {errno}"),
        };
        f.write_str(what)
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_match_netbsd() {
        assert_eq!(Error::Invalid.errno(), 22);
        assert_eq!(Error::Io.errno(), 5);
        assert_eq!(Error::NoSpace.errno(), 28);
        assert_eq!(Error::Deadlock.errno(), 11);
        assert_eq!(Error::NoMemory.errno(), 12);
    }
}
