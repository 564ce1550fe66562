//! Recovery: what an open found and did.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{
    self, Superblock, SuperblockError, SB_BACKUP_OFFSET, SB_LEN, SB_PRIMARY_OFFSET,
};
use crate::map::fill_random;
use crate::media::Persistence;
use crate::walk::TailState;
use crate::Lsn;

/// Where the remains of an interrupted write that begin at `start` end: past the claimed
/// extent of the refused entry, through the following 4 KiB pages that still hold a non-zero
/// byte, but no further than 1 MiB past the claimed extent (in a wrapped log, older laps
/// follow).
pub(crate) fn remains_end(image: &[u8], start: usize, torn_bytes: u64) -> usize {
    const PAGE: usize = 4096;
    let mut end = (start + torn_bytes as usize).min(image.len());
    let stop = (end + (1 << 20)).min(image.len());
    while end < stop {
        let page_end = ((end / PAGE) + 1) * PAGE;
        let page_end = page_end.min(image.len());
        if image[end..page_end].iter().all(|&b| b == 0) {
            break;
        }
        end = page_end;
    }
    end
}

/// What [`crate::Log::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Entries in the log after recovery.
    pub entries: u64,
    /// LSN of the first entry (if any).
    pub first_lsn: Option<Lsn>,
    /// LSN of the last entry (if any).
    pub last_lsn: Option<Lsn>,
    /// Offset just past the last entry: where the next append goes.
    pub tail_offset: u64,
    /// Bytes of an interrupted append that were discarded.
    pub torn_bytes: u64,
    /// How the log ended.
    pub tail_state: TailState,
    /// The primary superblock was damaged and the backup copy was used (and, if the log was
    /// opened for writing, rewritten over the primary).
    pub superblock_from_backup: bool,
    /// Wall-clock time of the whole open, mapping included.
    pub duration: Duration,
    /// The persistence barrier the log uses.
    pub persistence: Persistence,
    /// Damage found inside the acknowledged part of the log. Only a
    /// [`crate::RecoveryMode::Salvage`] open gets this far with damage; the other modes fail
    /// with [`crate::Error::Corrupted`].
    pub damage: Option<DamageReport>,
    /// In salvage mode, every damaged region with the LSNs it swallowed.
    pub gaps: Vec<crate::damage::Gap>,
    /// The LSN the scan started at: the first LSN, or a later one when a tail hint let the
    /// scan skip the entries before it (see [`crate::Options::tail_hint_every`]).
    pub scanned_from: Lsn,
}

/// Damage recovery found; see [`RecoveryReport::damage`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamageReport {
    /// Offset of the first unreadable entry.
    pub offset: u64,
    /// The LSN it should carry: the log as opened ends before it.
    pub lsn: Lsn,
    /// Why it was refused.
    pub reason: &'static str,
    /// Valid entries found past it.
    pub entries_beyond: u64,
    /// Their LSN range.
    pub lsns_beyond: Option<(Lsn, Lsn)>,
}

/// Picks the superblock from its two copies; the flag is true if the backup had to be used.
pub(crate) fn decode_superblocks(meta: &[u8], path: &Path) -> Result<(Superblock, bool)> {
    let primary = Superblock::decode(&meta[SB_PRIMARY_OFFSET..SB_PRIMARY_OFFSET + SB_LEN]);
    let backup = Superblock::decode(&meta[SB_BACKUP_OFFSET..SB_BACKUP_OFFSET + SB_LEN]);
    match (primary, backup) {
        (Ok(sb), _) => Ok((sb, false)),
        (Err(p), Ok(sb)) => {
            tracing::warn!(path = %path.display(), reason = ?p, "daxlog: primary superblock damaged, using the backup copy");
            Ok((sb, true))
        }
        (Err(SuperblockError::Version(found)), _) | (_, Err(SuperblockError::Version(found))) => {
            Err(Error::UnsupportedVersion {
                path: path.into(),
                found,
                supported: format::FORMAT_VERSION,
            })
        }
        (Err(SuperblockError::BadMagic), Err(SuperblockError::BadMagic)) => Err(Error::NotDaxlog {
            path: path.into(),
            offset: SB_PRIMARY_OFFSET as u64,
        }),
        (Err(SuperblockError::Corrupt(reason)), _) | (_, Err(SuperblockError::Corrupt(reason))) => {
            Err(Error::CorruptedSuperblock {
                path: path.into(),
                offset: SB_PRIMARY_OFFSET as u64,
                reason: format!("both copies damaged ({reason})"),
            })
        }
    }
}

/// A random epoch, different from `previous`.
pub(crate) fn new_epoch(previous: Option<u32>) -> u32 {
    loop {
        let mut b = [0u8; 4];
        fill_random(&mut b);
        let e = u32::from_le_bytes(b);
        if Some(e) != previous {
            return e;
        }
    }
}
