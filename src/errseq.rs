//! Write errors reported errseq-style (after Linux's `lib/errseq.c`): once to each
//! reader that was watching when the error happened.
//!
//! An object keeps an [`ErrorSeq`]: its latest write error and a sequence number that
//! advances each time a write fails. Whoever wants write errors reported to it holds an
//! [`ErrorCursor`], the sequence number it has seen up to: a kernel keeps one per open
//! file description, sampled when the file is opened, so an fsync through that
//! description reports every failure since the open or since its last report, once,
//! however many other descriptions (or the syncer) flushed the file meanwhile.
//!
//! Linux packs the error, a counter and a "seen" bit into one atomic word so that it
//! needs no lock; here the sequence lives under the object lock, which the write
//! completion already holds when it records the error, and the counter is 64 bits wide
//! so it needs no "seen" bit to slow its wrapping.

use core::num::NonZeroU32;

use crate::error::{Error, Result};

/// The write errors of one object: the latest, and how many have happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorSeq {
    /// The latest error recorded, `None` before the first.
    latest: Option<Error>,
    /// Advances by one on each error recorded; only compared for equality, so wrapping
    /// (after 2^64 failed writes) is harmless.
    sequence: u64,
}

impl ErrorSeq {
    /// Records a failed write: every cursor that has not yet seen this sequence number
    /// reports `error` at its next check.
    pub(crate) fn record(&mut self, error: Error) {
        self.latest = Some(error);
        self.sequence = self.sequence.wrapping_add(1);
    }

    /// A cursor that has seen everything recorded so far: errors from before it was
    /// made are not reported through it.
    pub(crate) fn cursor(&self) -> ErrorCursor {
        ErrorCursor {
            seen: self.sequence,
        }
    }

    /// The error `cursor` has not seen yet, if any, without moving it on.
    pub(crate) fn unseen(&self, cursor: &ErrorCursor) -> Option<Error> {
        if cursor.seen == self.sequence {
            return None;
        }
        self.latest
    }

    /// Reports to `cursor` the latest error it has not seen ([`Self::unseen`]) and
    /// moves it on, so the same failure is not reported through it again. Several
    /// failures since its last check are reported as one, the latest.
    pub(crate) fn check_and_advance(&self, cursor: &mut ErrorCursor) -> Result {
        let unseen = self.unseen(cursor);
        cursor.seen = self.sequence;
        unseen.map_or(Ok(()), Err)
    }
}

/// Where one reader of an object's write errors stands: a kernel keeps one per open
/// file description, made by [`VmObject::error_cursor`](crate::VmObject::error_cursor)
/// when the file is opened, and passes it to each [`fsync`](crate::fsync) through that
/// description, which reports each write failure since the cursor was made (or last
/// reported one) once.
///
/// `fsync` takes the cursor `&mut`: threads that fsync through one description at
/// once keep it under the description's lock (as Linux keeps a file's `f_wb_err` under
/// its `f_lock`). A cursor belongs to one object: checked
/// against another it reports nonsense (an error that is not its own, or none), never
/// a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCursor {
    /// The object's error sequence number as of the last report (or the sampling).
    seen: u64,
}

/// How many failed attempts in a row to write an object's pages (eight flushes, each
/// with a failed write and none that succeeded) mark the object failed, unless its
/// kernel sets another limit
/// ([`VmObject::set_write_failure_limit`](crate::VmObject::set_write_failure_limit)).
pub const DEFAULT_WRITE_FAILURE_LIMIT: NonZeroU32 = NonZeroU32::MIN.saturating_add(7);

/// One attempt to write an object's dirty pages (a flush, or a direct write): the
/// error sequence when it began. However many of its writes fail, it counts as one
/// failed attempt towards the object's failed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteAttempt {
    sequence: u64,
}

/// Everything an object knows about its failed writes, kept under the object lock: the
/// error sequence, the cursor of the flushes that bring none of their own, and the
/// count of consecutive failures that marks the object failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteErrors {
    seq: ErrorSeq,
    /// The cursor of synchronous cleaning flushes that bring none ([`putpages`] with
    /// `CLEANIT | SYNCIO`, direct I/O's flush): the object's own, made with it.
    ///
    /// [`putpages`]: crate::putpages
    flusher: ErrorCursor,
    /// Failed attempts ([`WriteAttempt`]) since the last write that succeeded.
    consecutive: u32,
    /// How many failed attempts in a row mark the object failed; `None`: never.
    limit: Option<NonZeroU32>,
    /// The error that marked the object failed: its dirty pages are no longer written.
    failed: Option<Error>,
}

impl Default for WriteErrors {
    fn default() -> Self {
        Self::new()
    }
}

impl WriteErrors {
    /// No error yet, the default limit.
    pub(crate) const fn new() -> Self {
        Self {
            seq: ErrorSeq {
                latest: None,
                sequence: 0,
            },
            flusher: ErrorCursor { seen: 0 },
            consecutive: 0,
            limit: Some(DEFAULT_WRITE_FAILURE_LIMIT),
            failed: None,
        }
    }

    /// The attempt a flush starting now makes: the writes it submits fail as one.
    pub(crate) fn attempt(&self) -> WriteAttempt {
        WriteAttempt {
            sequence: self.seq.sequence,
        }
    }

    /// Records a failed write of the object's pages, one of `attempt`'s. The first
    /// failure of an attempt counts towards the failed state (the limit's worth of
    /// failed attempts in a row marks the object failed); the others of the same
    /// attempt — the other clusters of one flush, sent before the first failed — or of
    /// an attempt that began before another failure are not counted again.
    pub(crate) fn write_failed(&mut self, error: Error, attempt: WriteAttempt) {
        let first_of_attempt = attempt.sequence == self.seq.sequence;
        self.seq.record(error);
        if !first_of_attempt {
            return;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        if self
            .limit
            .is_some_and(|limit| self.consecutive >= limit.get())
        {
            self.failed.get_or_insert(error);
        }
    }
    /// a row starts again (a failed object stays failed).
    pub(crate) fn write_succeeded(&mut self) {
        self.consecutive = 0;
    }

    /// The error that marked the object failed, if it is.
    pub(crate) fn failed(&self) -> Option<Error> {
        self.failed
    }

    /// Ends the failed state and the count of failed attempts in a row.
    pub(crate) fn clear_failed(&mut self) {
        self.failed = None;
        self.consecutive = 0;
    }

    /// Failed writes in a row.
    pub(crate) fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// The limit of failed attempts in a row.
    pub(crate) fn limit(&self) -> Option<NonZeroU32> {
        self.limit
    }

    /// Sets the limit of failed attempts in a row (`None`: never mark the object failed).
    /// A count already at or past a new, lower limit marks it at the next failure.
    pub(crate) fn set_limit(&mut self, limit: Option<NonZeroU32>) {
        self.limit = limit;
    }

    /// A cursor that reports failures from now on.
    pub(crate) fn cursor(&self) -> ErrorCursor {
        self.seq.cursor()
    }

    /// Reports to `cursor` the failure it has not seen, moving it on; a failed object
    /// reports its error every time.
    pub(crate) fn check(&self, cursor: &mut ErrorCursor) -> Result {
        let unseen = self.seq.check_and_advance(cursor);
        match self.failed {
            Some(error) => Err(error),
            None => unseen,
        }
    }

    /// The failure the object's own cursor has not reported yet.
    pub(crate) fn pending_for_flusher(&self) -> Option<Error> {
        self.seq.unseen(&self.flusher)
    }

    /// Reports to the object's own cursor the failure it has not seen, moving it on.
    pub(crate) fn take_for_flusher(&mut self) -> Option<Error> {
        let mut flusher = self.flusher;
        let unseen = self.seq.check_and_advance(&mut flusher).err();
        self.flusher = flusher;
        unseen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cursor_reports_an_error_once() {
        let mut seq = ErrorSeq::default();
        let mut a = seq.cursor();
        let mut b = seq.cursor();
        assert_eq!(seq.check_and_advance(&mut a), Ok(()));
        seq.record(Error::Io);
        let mut late = seq.cursor();
        assert_eq!(seq.unseen(&a), Some(Error::Io));
        assert_eq!(seq.check_and_advance(&mut a), Err(Error::Io));
        assert_eq!(seq.check_and_advance(&mut a), Ok(()));
        assert_eq!(seq.check_and_advance(&mut b), Err(Error::Io));
        assert_eq!(
            seq.check_and_advance(&mut late),
            Ok(()),
            "made after the error"
        );
    }

    #[test]
    fn several_errors_since_a_check_report_the_latest_once() {
        let mut seq = ErrorSeq::default();
        let mut cursor = seq.cursor();
        seq.record(Error::Io);
        seq.record(Error::NoSpace);
        assert_eq!(seq.check_and_advance(&mut cursor), Err(Error::NoSpace));
        assert_eq!(seq.check_and_advance(&mut cursor), Ok(()));
        seq.record(Error::Io);
        assert_eq!(seq.check_and_advance(&mut cursor), Err(Error::Io), "again");
    }

    #[test]
    fn an_attempt_counts_once_and_the_limit_fails_the_object() {
        let mut errors = WriteErrors::new();
        errors.set_limit(NonZeroU32::new(2));
        let first = errors.attempt();
        let overlapping = errors.attempt();
        for _ in 0..5 {
            errors.write_failed(Error::Io, first);
        }
        errors.write_failed(Error::Io, overlapping);
        assert_eq!(errors.consecutive(), 1, "one attempt, however many writes");
        assert_eq!(errors.failed(), None);
        errors.write_succeeded();
        assert_eq!(errors.consecutive(), 0);
        for expected in 1..=2 {
            let attempt = errors.attempt();
            errors.write_failed(Error::NoSpace, attempt);
            assert_eq!(errors.consecutive(), expected);
        }
        assert_eq!(errors.failed(), Some(Error::NoSpace));
        let mut cursor = errors.cursor();
        assert_eq!(errors.check(&mut cursor), Err(Error::NoSpace), "every time");
        errors.write_succeeded();
        assert_eq!(errors.failed(), Some(Error::NoSpace), "until cleared");
        errors.clear_failed();
        assert_eq!(errors.check(&mut cursor), Ok(()));
        assert_eq!(errors.pending_for_flusher(), Some(Error::NoSpace));
        assert_eq!(errors.take_for_flusher(), Some(Error::NoSpace));
        assert_eq!(errors.take_for_flusher(), None);
    }

    #[test]
    fn without_a_limit_nothing_fails() {
        let mut errors = WriteErrors::new();
        errors.set_limit(None);
        for _ in 0..100 {
            let attempt = errors.attempt();
            errors.write_failed(Error::Io, attempt);
        }
        assert_eq!(errors.consecutive(), 100);
        assert_eq!(errors.failed(), None);
    }

    #[test]
    fn the_sequence_wraps_without_panicking() {
        let mut seq = ErrorSeq {
            latest: Some(Error::Io),
            sequence: u64::MAX,
        };
        let mut cursor = seq.cursor();
        seq.record(Error::Io);
        assert_eq!(seq.check_and_advance(&mut cursor), Err(Error::Io));
    }
}
