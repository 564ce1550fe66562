//! The state of the group commit of a log in `msync` mode; the protocol that uses it is in
//! `disk.rs`.

use crate::sync::atomic::AtomicU64;
use crate::sync::{Condvar, Mutex};

/// The state of the group commit of one log.
pub(crate) struct GroupCommit {
    pub(crate) round: Mutex<Round>,
    /// Signalled whenever a sync ends.
    pub(crate) ended: Condvar,
    /// Syncs made, and tickets they covered.
    pub(crate) syncs: AtomicU64,
    pub(crate) tickets: AtomicU64,
}

#[cfg(not(loom))]
pub(crate) type RoundGuard<'a> = std::sync::MutexGuard<'a, Round>;
#[cfg(loom)]
pub(crate) type RoundGuard<'a> = loom::sync::MutexGuard<'a, Round>;

pub(crate) struct Round {
    /// A leader is syncing.
    pub(crate) busy: bool,
    /// Appenders sleeping on `ended`.
    pub(crate) sleepers: usize,
    /// Syncs ended so far: waiting appenders look again when it changes.
    pub(crate) ended: u64,
}

impl GroupCommit {
    pub(crate) fn new() -> Self {
        GroupCommit {
            round: Mutex::new(Round {
                busy: false,
                sleepers: 0,
                ended: 0,
            }),
            ended: Condvar::new(),
            syncs: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
        }
    }
}

/// How well the group commit of a log in `msync` mode batches: see [`crate::Log::sync_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Group syncs made since the log was opened (each one `msync` per contiguous run of
    /// the file: one, or two when the synced appends lie on both sides of a wrap).
    pub syncs: u64,
    /// Appends (a batch counts once) those syncs made durable.
    pub appends: u64,
}

impl SyncStats {
    /// Appends per sync on average (0 when nothing was synced).
    pub fn appends_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.appends as f64 / self.syncs as f64
        }
    }
}

/// msync mode: appends (or batches) of at least this many bytes on media are stored with
/// non-temporal stores, the payload checksummed while it is copied (one pass over it instead
/// of two); below it, cached stores. The sync does not care how the bytes were stored. Measured
/// on /dev/shm with 64 KiB payloads: 7.4-8.8 µs per append with, 9.8 µs without; at 4 KiB and
/// 16 KiB no gain showed (docs/DISK.md).
pub(crate) const MSYNC_NT_THRESHOLD: usize = 64 << 10;
