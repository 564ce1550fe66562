//! The state of the group commit of a log in `msync` mode; the protocol that uses it is in
//! `disk.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::sync::atomic::{AtomicBool, AtomicU64};
use crate::sync::{Condvar, Mutex};

/// The state of the group commit of one log.
pub(crate) struct GroupCommit {
    round: Mutex<Round>,
    /// Signalled whenever a sync ends.
    ended: Condvar,
    /// Syncs made, and tickets they covered.
    syncs: AtomicU64,
    tickets: AtomicU64,
}

#[cfg(not(loom))]
pub(crate) type RoundGuard<'a> = std::sync::MutexGuard<'a, Round>;
#[cfg(loom)]
pub(crate) type RoundGuard<'a> = loom::sync::MutexGuard<'a, Round>;

pub(crate) struct Round {
    /// A leader is syncing.
    pub(crate) busy: bool,
    /// Appenders sleeping on `ended`.
    sleepers: usize,
    /// Syncs ended so far: waiting appenders look again when it changes.
    ended: u64,
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

    /// The round's lock: whether a leader is syncing.
    #[inline]
    pub(crate) fn lock(&self) -> RoundGuard<'_> {
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a sync's end in `round` and wakes the appenders sleeping until one ends (they
    /// look again).
    #[inline]
    pub(crate) fn signal_end(&self, round: &mut Round) {
        round.ended += 1;
        if round.sleepers > 0 {
            self.ended.notify_all();
        }
    }

    /// Sleeps (releasing the round lock) until a sync ends or `poisoned` is set.
    pub(crate) fn sleep_until_a_sync_ends<'a>(
        &'a self,
        mut round: RoundGuard<'a>,
        poisoned: &AtomicBool,
    ) -> RoundGuard<'a> {
        let seen = round.ended;
        round.sleepers += 1;
        while round.ended == seen && !poisoned.load(Ordering::Acquire) {
            round = self
                .ended
                .wait_timeout(round, WAIT)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        round.sleepers -= 1;
        round
    }

    /// Counts a sync that covered `tickets` appends.
    #[inline]
    pub(crate) fn count_sync(&self, tickets: u64) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.tickets.fetch_add(tickets, Ordering::Relaxed);
    }

    /// Syncs made so far, and the appends they covered.
    pub(crate) fn stats(&self) -> SyncStats {
        SyncStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            appends: self.tickets.load(Ordering::Relaxed),
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

/// How long a waiting appender sleeps before it looks at the poison flag again.
const WAIT: Duration = Duration::from_millis(10);
