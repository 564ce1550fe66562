//! The one error type of the crate.
//!
//! Every variant says where the problem is: the file, and for damage on media the byte offset and
//! the log sequence number (LSN) involved.

use std::io;
use std::path::PathBuf;

use crate::Lsn;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when creating, opening, reading or appending to a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call on the log file failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file the call was about.
        path: PathBuf,
        /// What was being done (`open`, `mmap`, `msync`, ...).
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// The path names a directory, not a log file.
    #[error("{path}: is a directory, not a daxlog file")]
    IsDirectory {
        /// The path given.
        path: PathBuf,
    },

    /// The path names something other than a regular file or a directory: a FIFO, a device, a
    /// socket. (Opening a FIFO would block until another process opened its other end.)
    /// `create` never replaces one, even with `overwrite`.
    #[error("{path}: is a {kind}, not a daxlog file")]
    NotAFile {
        /// The path given.
        path: PathBuf,
        /// What it is: "FIFO", "character device", "block device", "socket".
        kind: &'static str,
    },

    /// `create` was asked to make a file that already exists.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// The path given.
        path: PathBuf,
    },

    /// The file is empty (zero bytes): it was never initialised as a log.
    #[error("{path}: empty file (0 bytes), not a daxlog file")]
    EmptyFile {
        /// The path given.
        path: PathBuf,
    },

    /// The file is too short to hold the superblock.
    #[error("{path}: file is {len} bytes, smaller than the {min}-byte superblock area")]
    TooSmall {
        /// The path given.
        path: PathBuf,
        /// The file's length.
        len: u64,
        /// The smallest valid length.
        min: u64,
    },

    /// The file does not start with the daxlog magic number (in either superblock copy).
    #[error("{path}: not a daxlog file (bad magic at offset {offset})")]
    NotDaxlog {
        /// The path given.
        path: PathBuf,
        /// Offset of the superblock copy that was examined.
        offset: u64,
    },

    /// The file is a daxlog file of a format version this build cannot read.
    #[error(
        "{path}: unsupported format version {found} (this build reads versions {} to {supported})",
        crate::format::OLDEST_VERSION
    )]
    UnsupportedVersion {
        /// The path given.
        path: PathBuf,
        /// The version found on media.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// Both copies of the superblock, or both metadata slots, fail their checksums or hold
    /// impossible values: the log's metadata cannot be read. `reason` says which.
    #[error("{path}: corrupted metadata at offset {offset}: {reason}")]
    CorruptedSuperblock {
        /// The path given.
        path: PathBuf,
        /// Offset of the damaged structure.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// The file is shorter than the capacity its superblock records (truncated by someone
    /// else). Mapping it would fault on access past the end of the file.
    #[error("{path}: file is {file_len} bytes but the log's capacity is {capacity} bytes")]
    FileShorterThanCapacity {
        /// The path given.
        path: PathBuf,
        /// The file's current length.
        file_len: u64,
        /// The capacity recorded in the superblock.
        capacity: u64,
    },

    /// The requested capacity cannot hold a log.
    #[error("{path}: invalid capacity {capacity}: {reason}")]
    InvalidCapacity {
        /// The file that was to be created.
        path: PathBuf,
        /// The requested capacity in bytes.
        capacity: u64,
        /// Why it is refused.
        reason: &'static str,
    },

    /// The file is in use in a way that excludes what was asked: another writer has it open
    /// (a second writer, or a read-only snapshot while a writer runs), read-only snapshots
    /// have it open (a writer's open), or readers do (replacing it with `create` and
    /// `overwrite`). The locks end at the last close of the file, in any process: a child
    /// that this process spawns holds them until its `exec` (a log closed a moment ago may
    /// still be reported locked: [`Options::lock_wait`](crate::Options::lock_wait) has
    /// `open`, `open_read_only` and `create` wait for such a lock; `Reader::open` does not), and a child forked without `exec` until it exits or drops its copy. See
    /// FORMAT.md, "Locks between processes".
    #[error("{path}: locked by {by}")]
    Locked {
        /// The path given.
        path: PathBuf,
        /// Who holds it.
        by: LockHolder,
    },

    /// The log was opened read-only and an operation needs to write.
    #[error("{path}: the log is open read-only")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },

    /// The payload can never fit in this log, whatever is truncated.
    #[error("{path}: payload of {len} bytes exceeds the largest payload this log can hold ({max} bytes)")]
    PayloadTooLarge {
        /// The file.
        path: PathBuf,
        /// The payload's length.
        len: u64,
        /// The largest payload this log can hold.
        max: u64,
    },

    /// A batch's entries need more bytes on media than the log's whole data area: the batch
    /// can never fit, whatever is truncated (each entry alone may; append it in smaller
    /// batches). Nothing was written.
    #[error(
        "{path}: a batch of {entries} entries needs {bytes} bytes on media, more than the log's \
         data area of {max} bytes: it can never fit, whatever is truncated"
    )]
    BatchTooLarge {
        /// The file.
        path: PathBuf,
        /// Entries in the batch.
        entries: u64,
        /// Bytes the batch's entries take on media, headers and padding included.
        bytes: u64,
        /// The log's data area: capacity minus the metadata page.
        max: u64,
    },

    /// There is not enough free space for the append. Nothing was written; the log stays usable.
    /// (Except by [`crate::Log::append_padding`], which appends in groups and may have
    /// appended some before: see it.)
    #[error(
        "{path}: log full: the append needs {needed} bytes, {available} are free in one piece{}",
        pinned_note(.pinned)
    )]
    Full {
        /// The file.
        path: PathBuf,
        /// Bytes the append needs on media (headers and padding included).
        needed: u64,
        /// The largest number of bytes free in one piece (at the tail, or at the start of the
        /// data area after a wrap).
        available: u64,
        /// The LSN a reader in this process pins ([`crate::Guard`]), if that pin holds
        /// truncated entries the append would otherwise have reused: dropping the guard
        /// frees them.
        pinned: Option<crate::Lsn>,
    },

    /// The LSN is outside the range the operation accepts.
    #[error("{path}: LSN {lsn} out of range (first LSN {first}, next LSN {next})")]
    LsnOutOfRange {
        /// The file.
        path: PathBuf,
        /// The LSN given.
        lsn: Lsn,
        /// The first LSN of the log (or the next one, if the log is empty).
        first: Lsn,
        /// The LSN the next append gets.
        next: Lsn,
    },

    /// Damage inside the acknowledged part of the log: an entry fails its checks although
    /// the log continues after it, or entries that an earlier recovery accepted are
    /// unreadable. Recovery refuses to drop the entries after it (open with
    /// [`crate::RecoveryMode::Salvage`] read-only to rescue them).
    #[error(
        "{path}: corrupted {} at offset {offset} (LSN {lsn}): {reason}{}",
        if *.offset < crate::format::DATA_OFFSET as u64 { "metadata slot" } else { "entry" },
        beyond(*.entries_beyond, .reason)
    )]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first unreadable entry (or, in the metadata page, of the
        /// current metadata slot that damage took: FORMAT.md section 4).
        offset: u64,
        /// The LSN that entry should carry.
        lsn: Lsn,
        /// What is wrong with it.
        reason: String,
        /// Valid entries found past the damage (0 from a [`crate::Reader`], which reads live
        /// and does not search past it: its `reason` says so).
        entries_beyond: u64,
    },

    /// The file is not fully allocated (a sparse file) and cannot be allocated: a page fault
    /// on a hole of a shared mapping can need a new block, and when the file system has none
    /// the kernel's only answer is `SIGBUS`. daxlog allocates every log in full at creation;
    /// this is a file copied or extended by other means onto a file system without
    /// `fallocate`.
    #[error("{path}: the file is not fully allocated ({allocated} of {capacity} bytes) and cannot be allocated: {reason}")]
    NotAllocated {
        /// The file.
        path: PathBuf,
        /// Bytes of the file that have blocks.
        allocated: u64,
        /// The log's capacity.
        capacity: u64,
        /// Why allocating failed.
        reason: String,
    },

    /// The log refuses appends: a persistence barrier failed (durability of the appends in
    /// flight is unknown), or an appender panicked while publishing. Reopen the log to
    /// recover it; every acknowledged append is durable. (After a failed `msync` the reopen
    /// writes the entries no append acknowledged back again, since the page cache may hold
    /// them where the disk does not: it fails with an I/O error while the disk still fails.)
    #[error("{path}: the log refuses appends: {cause}")]
    Poisoned {
        /// The file.
        path: PathBuf,
        /// What went wrong first.
        cause: String,
    },

    /// A [`crate::Reader`] fell behind a truncation: the entries it had not read yet were
    /// dropped (`truncate_before`, `reset`) before it got to them. It goes on from the first
    /// entry still in the log.
    #[error(
        "{path}: {} truncated away before this reader read {}",
        lsns_were(*.first_missed, *.last_missed),
        if .first_missed == .last_missed { "it" } else { "them" }
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The first LSN missed.
        first_missed: Lsn,
        /// The last LSN missed.
        last_missed: Lsn,
    },

    /// A suffix truncation (`truncate_after`) deleted entries that a [`crate::Reader`] had
    /// already returned, or passed with a `seek` beyond them: those from `from` on are no
    /// longer in the log (a consensus log's conflicting suffix). The reader goes on from
    /// `from`, with the entries that replace them. (If more suffix truncations than the log
    /// records (64) came between two looks of the reader, `from` is the head it knew, and may
    /// lie below entries that were deleted; a [`Error::Truncated`] follows for those of them a
    /// head truncation has removed. A suffix truncation that failed, or whose writer died
    /// before it ended, may be reported too, though it deleted nothing: the entries from `from`
    /// on then come again, the same ones.)
    #[error(
        "{path}: entries from LSN {from} on were deleted after this reader returned or passed them"
    )]
    Rewound {
        /// The file.
        path: PathBuf,
        /// The first deleted LSN (or the lowest that may have been deleted, see above).
        from: Lsn,
    },

    /// [`crate::Log::truncate_after`] was called by a thread that holds a [`crate::Guard`]
    /// (directly, or through a live [`crate::Log::iter`] iterator): the truncation waits until
    /// no guard is held, so it would wait for its own caller. Nothing was deleted; drop the
    /// guard (end the iteration) first.
    #[error("{path}: truncate_after called by a thread that holds a guard on the log (a Log::pin guard or a live Log::iter iterator); nothing was deleted")]
    GuardHeld {
        /// The file.
        path: PathBuf,
    },

    /// The path no longer names the file a [`crate::Reader`] opened: the log was re-created
    /// or removed.
    #[error("{path}: the log was replaced or removed while a reader had it open")]
    Replaced {
        /// The file.
        path: PathBuf,
    },

    /// The combination of options is not supported (for example salvage on a writable open).
    #[error("{path}: unsupported: {what}")]
    Unsupported {
        /// The file the open, create or salvage was asked of.
        path: PathBuf,
        /// What was asked.
        what: &'static str,
    },

    /// With [`crate::Options::from_env`] (or `env_overrides(true)`), a `DAXLOG_*` variable
    /// holds a value that is not one of those it accepts (the table on [`crate::Options`]),
    /// or contradicts another variable. Nothing was opened or created.
    #[error("environment variable {name}={value:?} is not valid: expected {expected}")]
    InvalidEnvironment {
        /// The variable.
        name: &'static str,
        /// Its value (a value that is not UTF-8 is shown with replacement characters).
        value: String,
        /// What it accepts.
        expected: &'static str,
    },
}

/// Who holds a lock that refused an open; see [`Error::Locked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockHolder {
    /// A writer (`Log::open`/`Log::create`), in this process or another.
    Writer,
    /// Read-only snapshots (`Log::open_read_only`: `daxlog info`, `check`, salvage).
    Snapshots,
    /// Readers (`Reader`: `daxlog follow`, `dump` and `cat` of a live log).
    Readers,
    /// A replacement of the file (`create` with `overwrite`) in progress.
    Replacement,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockHolder::Writer => "a writer",
            LockHolder::Snapshots => {
                "read-only snapshots (daxlog dump, cat, info, check of a closed log: writers are refused until they close)"
            }
            LockHolder::Readers => {
                "readers (daxlog follow, dump, cat: replace the log once they are done)"
            }
            LockHolder::Replacement => "a replacement of the file in progress",
        })
    }
}

impl Error {
    /// The file the error is about. Logs on other media than files are named `(media)`.
    /// `None` for an error about no file: [`Error::InvalidEnvironment`].
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Io { path, .. }
            | Error::IsDirectory { path }
            | Error::NotAFile { path, .. }
            | Error::AlreadyExists { path }
            | Error::EmptyFile { path }
            | Error::TooSmall { path, .. }
            | Error::NotDaxlog { path, .. }
            | Error::UnsupportedVersion { path, .. }
            | Error::CorruptedSuperblock { path, .. }
            | Error::FileShorterThanCapacity { path, .. }
            | Error::InvalidCapacity { path, .. }
            | Error::Locked { path, .. }
            | Error::ReadOnly { path }
            | Error::PayloadTooLarge { path, .. }
            | Error::BatchTooLarge { path, .. }
            | Error::Full { path, .. }
            | Error::LsnOutOfRange { path, .. }
            | Error::Corrupted { path, .. }
            | Error::NotAllocated { path, .. }
            | Error::Poisoned { path, .. }
            | Error::Truncated { path, .. }
            | Error::Rewound { path, .. }
            | Error::GuardHeld { path }
            | Error::Replaced { path }
            | Error::Unsupported { path, .. } => Some(path),
            Error::InvalidEnvironment { .. } => None,
        }
    }

    /// True if the error reports damaged bytes of a log: [`Error::Corrupted`] (an entry) or
    /// [`Error::CorruptedSuperblock`] (the metadata). Such a log is rescued with a read-only
    /// [`crate::RecoveryMode::Salvage`] open (`daxlog check --salvage`), never by retrying.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupted { .. } | Error::CorruptedSuperblock { .. }
        )
    }

    /// True if the append failed only for want of space: nothing was written and the log
    /// stays usable; truncating (or a larger log) makes room.
    pub fn is_full(&self) -> bool {
        matches!(self, Error::Full { .. })
    }

    pub(crate) fn io(path: &std::path::Path, op: &'static str, source: io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }
}

/// `LSN 7 was` or `LSNs 7..=14 were`.
fn lsns_were(first: Lsn, last: Lsn) -> String {
    if first == last {
        format!("LSN {first} was")
    } else {
        format!("LSNs {first}..={last} were")
    }
}

fn pinned_note(pinned: &Option<crate::Lsn>) -> String {
    match pinned {
        Some(lsn) => format!(" (a reader pins truncated entries from LSN {lsn} on)"),
        None => String::new(),
    }
}

/// The end of [`Error::Corrupted`]'s message: the valid entries found past the damage, unless
/// a reader reported it without searching (its reason says so).
fn beyond(entries_beyond: u64, reason: &str) -> String {
    if reason.starts_with(crate::reader::LIVE_DAMAGE) {
        return String::new();
    }
    let noun = if entries_beyond == 1 {
        "entry"
    } else {
        "entries"
    };
    format!("; {entries_beyond} valid {noun} found beyond it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_names_one_lsn_or_a_range() {
        let err = |first_missed, last_missed| {
            Error::Truncated {
                path: "j.dax".into(),
                first_missed,
                last_missed,
            }
            .to_string()
        };
        assert_eq!(
            err(7, 7),
            "j.dax: LSN 7 was truncated away before this reader read it"
        );
        assert_eq!(
            err(7, 14),
            "j.dax: LSNs 7..=14 were truncated away before this reader read them"
        );
    }

    #[test]
    fn corrupted_counts_entries_in_words_that_agree() {
        let err = |entries_beyond| Error::Corrupted {
            path: "j.dax".into(),
            offset: 4096,
            lsn: 7,
            reason: "checksum mismatch".into(),
            entries_beyond,
        };
        assert_eq!(
            err(1).to_string(),
            "j.dax: corrupted entry at offset 4096 (LSN 7): checksum mismatch; 1 valid entry found beyond it"
        );
        assert!(err(0)
            .to_string()
            .ends_with("; 0 valid entries found beyond it"));
        // Damage that took the current metadata slot names the slot.
        let slot = Error::Corrupted {
            path: "j.dax".into(),
            offset: 1536,
            lsn: 7,
            reason: "the metadata slot here does not decode".into(),
            entries_beyond: 0,
        };
        assert!(slot
            .to_string()
            .starts_with("j.dax: corrupted metadata slot at offset 1536 (LSN 7)"));
        assert!(err(15)
            .to_string()
            .ends_with("; 15 valid entries found beyond it"));
        // A reader does not search past the damage, and does not say it found nothing there.
        let live = Error::Corrupted {
            path: "j.dax".into(),
            offset: 4096,
            lsn: 7,
            reason: crate::reader::LIVE_DAMAGE.into(),
            entries_beyond: 0,
        };
        assert_eq!(
            live.to_string(),
            format!(
                "j.dax: corrupted entry at offset 4096 (LSN 7): {}",
                crate::reader::LIVE_DAMAGE
            )
        );
    }
}
