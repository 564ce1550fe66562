//! openraft's log storage on daxlog.
//!
//! # Files
//!
//! A store is a directory with two daxlog files:
//!
//! * `log.dax`: the Raft log. Each Raft entry is one daxlog entry, its payload the entry
//!   (log id included) encoded by [`crate::codec`]: a format tag, then postcard; entries
//!   written by earlier versions in serde_json are still read. An `append` of several Raft
//!   entries is one `append_batch` (one barrier, all or nothing) per chunk of at most a
//!   quarter of the admission reserve in bytes.
//! * `meta.dax`: the vote, the committed log id and the last purged log id, as one record in
//!   serde_json (small, and written only when one of them changes); see [`crate::meta`]. A
//!   new committed log id is written at once, or, with
//!   [`LogStoreOptions::committed_save_every`], at most that often on its own and at the
//!   latest that long after it came (a save of the vote or of a purge writes the latest one
//!   too): openraft lets it lag, and a node restarted after a crash then applies up to the
//!   saved one and learns the rest from the leader, as it would with none saved at all. A
//!   node restored as leader then needs its [`ReadFence`] for linearizable reads.
//!
//! # Index mapping
//!
//! Consecutive Raft entries are stored at consecutive LSNs, so while the log holds entries
//! `raft index = LSN + offset` for one `offset`, read back on open from the first live entry
//! (which carries its own log id). The offset is never stored: when the log becomes empty
//! (everything purged, or everything truncated) it is forgotten, and the next append fixes it
//! anew from the index of its first entry and the LSN daxlog gives it. So a Raft log may start
//! at index 0 or 1, or continue after a purge past its end (snapshot installation), without
//! rewriting any entry, and both Raft operations map onto daxlog's:
//!
//! * `purge(upto)` (drop a prefix) is `truncate_before(lsn(upto) + 1)`, or `reset()` when
//!   nothing stays;
//! * `truncate(since)` (drop a conflicting suffix) is `truncate_after(lsn(since) - 1)`.
//!
//! Padding entries (LSNs that daxlog filled with padding because an appender panicked in the
//! middle of an append, or because a writable open found LSNs the last writer had published
//! and lost, in msync mode) may lie between two Raft entries, before the first or after the last:
//! readers skip them, and the mapping is then kept as a few runs, each with its own offset,
//! found on open by one walk over the log (the first entry of each run carries its log id).
//!
//! # Crash safety
//!
//! An append is acknowledged (the [`LogFlushed`] callback) only after daxlog made it durable.
//! A purge first records the new last purged log id in `meta.dax`, then truncates `log.dax`;
//! a crash in between leaves entries that are already purged in the log, and `open` removes
//! them again. A suffix truncation is one daxlog operation and needs no metadata. A store
//! opened with [`LogStore::open_with_snapshot`] purges nothing until the state machine's
//! snapshot covering the purge is durable. Every operation that waits for a barrier runs on
//! tokio's blocking threads.
//!
//! # Concurrency
//!
//! The daxlog log is shared without a lock by the store, its readers and its [`Admission`]s;
//! only where the entries lie (index mapping, last log id) is behind a small lock, held across
//! a barrier by a suffix truncation alone. Appends and purges wait for their barriers while
//! readers go on; see `Inner`.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, NodeId, OptionalSend, RaftLogId, RaftLogReader,
    RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::files::{create_atomically, create_dir_durably, DaxError};
use crate::lock;
use crate::meta::LatestRecord;
use crate::watermark::SnapshotWatermark;

/// File name of the Raft log inside a store directory.
pub const LOG_FILE: &str = "log.dax";
/// File name of the metadata record log inside a store directory.
pub const META_FILE: &str = "meta.dax";

/// Default capacity of `meta.dax`.
pub const DEFAULT_META_CAPACITY: u64 = 64 << 10;

/// How to create or open a [`LogStore`].
#[derive(Clone, Debug)]
pub struct LogStoreOptions {
    log: daxlog::Options,
    /// True once [`LogStoreOptions::daxlog`] supplied the daxlog options.
    custom: bool,
    persistence: Option<daxlog::PersistenceChoice>,
    meta_capacity: u64,
    purge_wait: Duration,
    max_entry: Option<u64>,
    reserve: Option<u64>,
    committed_every: Duration,
}

/// Default of [`LogStoreOptions::purge_wait`].
pub const DEFAULT_PURGE_WAIT: Duration = Duration::from_secs(60);

impl Default for LogStoreOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LogStoreOptions {
    /// Defaults: a 64 MiB Raft log, a 64 KiB metadata log, daxlog's default options
    /// (`daxlog::Options::new()`: no environment variable is read).
    pub fn new() -> Self {
        LogStoreOptions {
            log: daxlog::Options::new(),
            custom: false,
            persistence: None,
            meta_capacity: DEFAULT_META_CAPACITY,
            purge_wait: DEFAULT_PURGE_WAIT,
            max_entry: None,
            reserve: None,
            committed_every: Duration::ZERO,
        }
    }

    /// Saves a new committed log id at most every `every` on its own (default: zero, at once;
    /// the node binary uses [`COMMITTED_SAVE_EVERY`]). openraft awaits `save_committed` before
    /// it applies entries, so saving at once is one more sync in series with every write on a
    /// disk. Saved behind, the id written lags the commit by at most `every` (a delayed save
    /// writes the latest one), a save of the vote or of a purge writes the latest too, and so
    /// does closing the store; a node restarted after a crash then applies less at start and
    /// learns the rest from its leader.
    ///
    /// **Linearizable reads then need a fence:** a node restored as leader answers
    /// `Raft::ensure_linearizable` without waiting for writes it acknowledged past the saved
    /// id. Take [`LogStore::read_fence`] before handing the store to openraft, and pass it
    /// before answering a linearizable read (see [`ReadFence`]).
    pub fn committed_save_every(mut self, every: Duration) -> Self {
        self.committed_every = every;
        self
    }

    /// The largest encoded entry [`Admission::check`] lets a client propose (default: a
    /// sixteenth of the log's data area; never more than the reserve, nor than daxlog's largest
    /// payload).
    pub fn max_entry_bytes(mut self, bytes: u64) -> Self {
        self.max_entry = Some(bytes);
        self
    }

    /// Free space [`Admission::check`] keeps out of clients' reach (default: an eighth of the
    /// log's data area): room for the entries a node appends without a client (blank entries
    /// of new leaders, membership changes) and for followers whose logs are a little fuller
    /// than the leader's.
    pub fn full_reserve(mut self, bytes: u64) -> Self {
        self.reserve = Some(bytes);
        self
    }

    /// How long `purge` of a store opened with [`LogStore::open_with_snapshot`] waits for a
    /// durable snapshot covering it before it fails (purging nothing) with
    /// [`DaxError::SnapshotNotDurable`], which stops the node (default: 60 s).
    pub fn purge_wait(mut self, wait: Duration) -> Self {
        self.purge_wait = wait;
        self
    }

    /// The daxlog options of both files (persistence mode, recovery mode, ...); its capacity is
    /// the Raft log's. Options given this way are used as they are: the store does not choose
    /// the persistence mode (see [`LogStoreOptions::persistence`]).
    pub fn daxlog(mut self, opts: daxlog::Options) -> Self {
        self.log = opts;
        self.custom = true;
        self
    }

    /// Capacity of a new `log.dax`. It must hold every entry not yet purged: let openraft's
    /// snapshot policy purge often enough.
    pub fn log_capacity(mut self, bytes: u64) -> Self {
        self.log = self.log.capacity(bytes);
        self
    }

    /// Capacity of a new `meta.dax` (a multiple of 4096, at least 8192).
    pub fn meta_capacity(mut self, bytes: u64) -> Self {
        self.meta_capacity = bytes;
        self
    }

    /// Chooses daxlog's persistence mode (default: `Auto`, i.e. CPU flushes where the file is
    /// mapped with `MAP_SYNC`, `msync` elsewhere). The store reads no environment variable:
    /// `DAXLOG_FORCE_*` and the other `DAXLOG_*` overrides apply only to options built with
    /// `daxlog::Options::from_env()` and given through [`LogStoreOptions::daxlog`].
    pub fn persistence(mut self, choice: daxlog::PersistenceChoice) -> Self {
        self.persistence = Some(choice);
        self
    }

    /// The daxlog options the store uses for `log.dax` in directory `dir`.
    pub fn daxlog_options_for(&self, dir: &Path) -> daxlog::Options {
        self.resolved(dir, self.log.get_capacity())
    }

    /// The daxlog options to use for files in `dir`.
    fn resolved(&self, _dir: &Path, capacity: u64) -> daxlog::Options {
        let opts = self.log.clone().capacity(capacity);
        if let Some(choice) = self.persistence {
            return opts.persistence(choice);
        }
        opts
    }
}

/// Why a client write was refused before it was proposed. The node is not affected: nothing
/// was written, and the write may be retried (after a snapshot let the log be purged, for
/// [`WriteRejected::LogFull`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteRejected {
    /// The entry can never be accepted: it is larger than the log's limit.
    #[error("entry of {len} bytes exceeds the largest entry the log accepts ({max} bytes)")]
    TooLarge {
        /// The encoded entry's length.
        len: u64,
        /// The limit ([`LogStoreOptions::max_entry_bytes`]).
        max: u64,
    },
    /// The log is too full for now: its entries must be compacted into a snapshot and purged
    /// first.
    #[error(
        "log full: {free} bytes free, the entry needs {needed} and {reserve} are kept in \
         reserve; retry once a snapshot let the log be purged"
    )]
    LogFull {
        /// Bytes the entry needs on media (upper bound).
        needed: u64,
        /// Bytes free in the log.
        free: u64,
        /// Bytes kept in reserve ([`LogStoreOptions::full_reserve`]).
        reserve: u64,
    },
}

/// Admission control for client writes, handed out by [`LogStore::admission`] before the
/// store moves into openraft: check an entry here before proposing it.
///
/// openraft (0.9) treats every error of the log store's `append` as fatal and stops the node;
/// daxlog fails an append with `PayloadTooLarge` (larger than the log could ever hold) or
/// `Full` (no room until a purge). A write that would meet either is refused here instead, with
/// a typed [`WriteRejected`], and the node stays up.
///
/// Writes admitted with [`Admission::admit`] hold their bytes (an [`Admitted`]) until the
/// caller drops it, after `client_write` returned: writes admitted together are counted
/// against the free space together, so concurrent clients cannot overrun the log between
/// their checks and their appends.
pub struct Admission<C: RaftTypeConfig> {
    /// The log, shared with the store (no lock: its free space is read at each check).
    log: Arc<daxlog::Log>,
    _config: std::marker::PhantomData<fn() -> C>,
    max_entry: u64,
    reserve: u64,
    /// The store's largest chunk of a long batch ([`LogStore::append`] writes one
    /// `append_batch` per chunk).
    chunk: u64,
    /// The store's entries (which of a leader's entries it holds already).
    inner: Arc<Inner<C>>,
    /// Bytes of admitted writes not released yet.
    pending: Arc<AtomicU64>,
}

/// A write admitted by [`Admission::admit`]: its bytes count as taken until this is dropped.
/// Keep it until the write's `client_write` returned (the leader appended the entry, or the
/// write failed).
#[derive(Debug)]
#[must_use = "the admission is released when this is dropped"]
pub struct Admitted {
    bytes: u64,
    len: u64,
    pending: Arc<AtomicU64>,
}

impl Admitted {
    /// The length the entry's encoding may reach in the log (see [`Admission::check`]).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never true: an admitted entry has a length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.pending.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl<C: RaftTypeConfig> Clone for Admission<C> {
    fn clone(&self) -> Self {
        Admission {
            log: self.log.clone(),
            _config: std::marker::PhantomData,
            max_entry: self.max_entry,
            reserve: self.reserve,
            chunk: self.chunk,
            inner: self.inner.clone(),
            pending: self.pending.clone(),
        }
    }
}

/// What an encoded entry ([`codec::encode`] of openraft's `Entry`) adds to the data's own
/// encoding (tag included), at most: the log id (term and index, varints of at most 10 bytes
/// each, and the leader's node id, at most 10 bytes for a `u64`) and the payload's variant
/// (1 byte): 31 bytes with `u64` node ids. The rest is room for node ids of up to 43 bytes.
const ENTRY_WRAPPING: u64 = 64;

impl<C> Admission<C>
where
    C: RaftTypeConfig,
    C::D: Serialize,
{
    /// Checks that an entry of `data` may be proposed now: returns the length its encoding may
    /// reach in the log (an upper bound for openraft's `Entry`: the data's postcard encoding
    /// plus the format tag, the log id and the payload's variant), or why it may not be
    /// proposed. The bytes of writes admitted
    /// and not released yet count as taken. Nothing is held: to propose the entry, take it
    /// with [`Admission::admit`].
    pub fn check(&self, data: &C::D) -> Result<u64, WriteRejected> {
        let len = encoded_len(data);
        self.check_len(len)?;
        Ok(len)
    }

    /// Checks that an encoded entry of `len` bytes may be appended now (see
    /// [`Admission::check`]).
    pub fn check_len(&self, len: u64) -> Result<(), WriteRejected> {
        let needed = self.needed(len)?;
        let free = self.free();
        let pending = self.pending.load(Ordering::Acquire);
        self.fits(needed, free, pending)
    }

    /// Admits an entry of `data`: like [`Admission::check`], and its bytes count as taken
    /// (for every later check) until the returned [`Admitted`] is dropped.
    pub fn admit(&self, data: &C::D) -> Result<Admitted, WriteRejected> {
        self.admit_len(encoded_len(data))
    }

    /// Admits an encoded entry of `len` bytes (see [`Admission::admit`]).
    pub fn admit_len(&self, len: u64) -> Result<Admitted, WriteRejected> {
        let needed = self.needed(len)?;
        let free = self.free();
        let mut pending = self.pending.load(Ordering::Acquire);
        loop {
            self.fits(needed, free, pending)?;
            match self.pending.compare_exchange_weak(
                pending,
                pending + needed,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(Admitted {
                        bytes: needed,
                        len,
                        pending: self.pending.clone(),
                    })
                }
                Err(now) => pending = now,
            }
        }
    }

    /// Bytes an encoded entry of `len` bytes needs on media, or why it is never accepted.
    fn needed(&self, len: u64) -> Result<u64, WriteRejected> {
        if len > self.max_entry {
            return Err(WriteRejected::TooLarge {
                len,
                max: self.max_entry,
            });
        }
        Ok(on_media(len as usize))
    }

    fn free(&self) -> u64 {
        self.log.free_bytes()
    }

    fn fits(&self, needed: u64, free: u64, pending: u64) -> Result<(), WriteRejected> {
        let free = free.saturating_sub(pending);
        if free < needed + self.reserve {
            return Err(WriteRejected::LogFull {
                needed,
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }

    /// The largest encoded entry accepted.
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry
    }

    /// The log's capacity, used and free bytes now.
    pub fn space(&self) -> daxlog::Space {
        self.log.space()
    }
}

impl<C> Admission<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// How many of `entries` (a leader's `AppendEntries` batch: consecutive indexes), from the
    /// first, the log can take now without meeting daxlog's `Full`: what a follower checks
    /// before it hands the batch to openraft, which stops the node on any error of the log
    /// store's `append` ([`crate::room::append_entries`] then hands it only that many and
    /// answers `PartialSuccess`).
    ///
    /// Counted as openraft and the store would write them: the entries the log holds already
    /// with the same log ids are skipped (openraft appends from the first entry it does not
    /// hold); the rest are cut into the store's chunks ([`LogStore::append`]: one
    /// `append_batch` each, in one piece of the ring) and placed with daxlog's
    /// [`daxlog::Log::room`]. Where an entry conflicts with one the log holds, openraft first
    /// removes the log's entries from there on, which only adds room: they are counted
    /// against the room before. No reserve is kept: a follower takes what its leader
    /// appended. 0 where the log could not be read (a purge moved it meanwhile): the leader
    /// sends again.
    pub fn entries_that_fit(&self, entries: &[C::Entry]) -> usize {
        let held = match self.inner.held_prefix(entries) {
            Ok(held) => held,
            Err(e) => {
                tracing::debug!("the entries held could not be read: {e}");
                return 0;
            }
        };
        let mut room = self.log.room();
        // The chunk being gathered (the entries' bytes).
        let mut chunk = 0u64;
        for (i, entry) in entries.iter().enumerate().skip(held) {
            let len = codec::encoded_len(entry).map_or(u64::MAX, on_media);
            if chunk > 0 && chunk.saturating_add(len) > self.chunk {
                // The store writes the chunk gathered so far as one batch: it fits, as the
                // last chunk of the first `i` entries.
                let fitted = room.take(chunk);
                debug_assert!(fitted);
                chunk = 0;
            }
            chunk = chunk.saturating_add(len);
            // The first `i + 1` entries: the chunks taken, then this chunk as the last one.
            let mut last = room;
            if !last.take(chunk) {
                return i;
            }
        }
        entries.len()
    }
}

/// The length an entry of `data` may reach in the log (see [`Admission::check`]): the data's
/// encoding plus [`ENTRY_WRAPPING`]. Data that cannot be encoded counts as too large.
fn encoded_len<D: Serialize>(data: &D) -> u64 {
    let len = codec::encoded_len(data).map_or(u64::MAX, |n| n as u64);
    len.saturating_add(ENTRY_WRAPPING)
}

/// The admission reserve of a log with `data` bytes of data area: the one chosen, else an
/// eighth of the data area.
fn reserve_for(chosen: Option<u64>, data: u64) -> u64 {
    chosen.unwrap_or(data / 8)
}

/// The record kept in `meta.dax`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
struct Meta<NID: NodeId> {
    vote: Option<Vote<NID>>,
    committed: Option<LogId<NID>>,
    last_purged: Option<LogId<NID>>,
}

/// The Raft log proper, shared between the store, its readers and its [`Admission`]s.
///
/// The daxlog log itself is behind no lock: daxlog appends, truncations and reads take `&self`
/// and run side by side. What must stay consistent with it, where the Raft entries lie (the
/// runs below) and the last log id, is behind `pos`, a small lock that is held for a few
/// instructions (a reader copies it, an append or a purge updates it after its barrier), and
/// across a barrier by a suffix truncation alone (see [`Inner::truncate_from`]). So a purge
/// (a prefix truncation) and an append wait for their barriers while readers go on.
///
/// Consecutive Raft entries normally sit at consecutive LSNs, but padding entries (the LSNs of
/// an append abandoned by a panicking appender, which daxlog fills with padding so that the log
/// goes on, or LSNs lost after they were published, which a writable open pads) may lie between two of them. So the mapping is kept as runs: each run starts at a
/// Raft index and an LSN, and maps the indexes up to the next run's start to consecutive LSNs.
/// There is one run unless padding was found.
struct Inner<C: RaftTypeConfig> {
    log: Arc<daxlog::Log>,
    pos: RwLock<Pos<C>>,
    /// Held by the operations that change the log (append, truncate, purge) for their whole
    /// length, readers never take it. openraft calls them one at a time (`&mut self`), but the
    /// blocking thread of one whose future was dropped goes on: the next one waits for it.
    writer: Mutex<()>,
    /// Called by a purge where it waits for its barrier, holding what it holds then.
    #[cfg(test)]
    at_purge_barrier: Mutex<Option<Box<dyn Fn() + Send>>>,
}

/// Where the Raft entries lie in the daxlog log.
struct Pos<C: RaftTypeConfig> {
    /// `(first raft index, its LSN)` of each run, in increasing order; empty while the log
    /// holds no entry.
    runs: Vec<(u64, daxlog::Lsn)>,
    /// Log id of the last entry in the log.
    last: Option<LogId<C::NodeId>>,
}

impl<C: RaftTypeConfig> Clone for Pos<C> {
    fn clone(&self) -> Self {
        Pos {
            runs: self.runs.clone(),
            last: self.last.clone(),
        }
    }
}

impl<C: RaftTypeConfig> Pos<C> {
    fn empty() -> Self {
        Pos {
            runs: Vec::new(),
            last: None,
        }
    }

    /// Raft index of the first entry, if any.
    fn first_index(&self) -> Option<u64> {
        self.runs.first().map(|(index, _)| *index)
    }

    /// LSN of Raft index `index`, which must lie within the log.
    fn lsn(&self, index: u64) -> daxlog::Lsn {
        let run = self.runs.partition_point(|(start, _)| *start <= index);
        let (start, lsn) = self.runs[run.checked_sub(1).expect("an index within the log")];
        lsn + (index - start)
    }
}

impl<C> Inner<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Reads the mapping back from the log: one walk over the entries (padding skipped),
    /// then the first entry of each run and the last one are decoded and checked to be
    /// contiguous in Raft indexes.
    fn new(log: daxlog::Log) -> Result<Self, DaxError> {
        let inner = Self {
            log: Arc::new(log),
            pos: RwLock::new(Pos::empty()),
            writer: Mutex::new(()),
            #[cfg(test)]
            at_purge_barrier: Mutex::new(None),
        };
        let mut pos = Pos::empty();
        // (first LSN, number of entries) of each run of consecutive LSNs.
        let mut lsn_runs: Vec<(daxlog::Lsn, u64)> = Vec::new();
        for e in inner.log.pin().iter() {
            match lsn_runs.last_mut() {
                Some((start, len)) if *start + *len == e.lsn => *len += 1,
                _ => lsn_runs.push((e.lsn, 1)),
            }
        }
        let mut next: Option<u64> = None;
        for (lsn, len) in lsn_runs {
            let id = inner.decode(lsn)?.get_log_id().clone();
            if let Some(expected) = next {
                if id.index != expected {
                    return Err(DaxError::Inconsistent(format!(
                        "entry {id} at LSN {lsn}, after padding, where index {expected} was expected"
                    )));
                }
            }
            pos.runs.push((id.index, lsn));
            next = Some(id.index + len);
            let last_lsn = lsn + len - 1;
            let last_id = inner.decode(last_lsn)?.get_log_id().clone();
            if last_id.index + 1 != id.index + len {
                return Err(DaxError::Inconsistent(format!(
                    "entries {id} at LSN {lsn} and {last_id} at LSN {last_lsn} are not contiguous"
                )));
            }
            pos.last = Some(last_id);
        }
        *inner.pos_mut() = pos;
        Ok(inner)
    }

    /// A copy of where the entries lie now.
    fn pos(&self) -> Pos<C> {
        self.pos.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn pos_mut(&self) -> RwLockWriteGuard<'_, Pos<C>> {
        self.pos.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Log id of the last entry in the log.
    fn last(&self) -> Option<LogId<C::NodeId>> {
        self.pos
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .last
            .clone()
    }

    /// Runs `f` with the writer's lock held (see `writer`).
    fn writing<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        let _one = lock(&self.writer);
        f(self)
    }

    fn decode(&self, lsn: daxlog::Lsn) -> Result<C::Entry, DaxError> {
        let guard = self.log.pin();
        let e = guard.read(lsn).ok_or(DaxError::Missing(lsn))?;
        codec::decode(e.payload)
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<C::Entry>, DaxError> {
        self.entries_at(&self.pos(), start, end)
    }

    /// How many of `entries` (consecutive indexes), from the first, the log holds already with
    /// the same log ids, or purged (as openraft's `first_conflicting_index` counts: openraft
    /// appends only the entries after them). By Raft's log matching, an entry held with the
    /// same log id means every one before it is too: a binary search, reading `log2` of the
    /// entries that overlap the log.
    fn held_prefix(&self, entries: &[C::Entry]) -> Result<usize, DaxError> {
        let pos = self.pos();
        let (Some(first), Some(stored_first), Some(last)) = (
            entries.first().map(|e| e.get_log_id().index),
            pos.first_index(),
            pos.last.as_ref(),
        ) else {
            return Ok(0);
        };
        // The entries up to the log's last index overlap it (or were purged from it).
        let overlap = usize::try_from(last.index.saturating_add(1).saturating_sub(first))
            .unwrap_or(usize::MAX)
            .min(entries.len());
        let held = |i: usize| -> Result<bool, DaxError> {
            let id = entries[i].get_log_id();
            if id.index < stored_first {
                return Ok(true); // Purged: committed, the leader's too.
            }
            Ok(self.decode(pos.lsn(id.index))?.get_log_id() == id)
        };
        // The first `lo` are held; from `hi` on, none is.
        let (mut lo, mut hi) = (0, overlap);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if held(mid)? {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The entries with indexes `start..end` that `pos` (a copy taken before) says the log
    /// holds. A purge may have overtaken the copy (and a suffix truncation, followed by
    /// appends): every entry read is checked against the LSN `pos` gives its index and
    /// against that index, so an entry that is gone is [`DaxError::Missing`], never another
    /// one (daxlog's iterator starts at the log's first entry when asked for an LSN below
    /// it).
    fn entries_at(&self, pos: &Pos<C>, start: u64, end: u64) -> Result<Vec<C::Entry>, DaxError> {
        let (Some(first), Some(last)) = (pos.first_index(), pos.last.as_ref()) else {
            return Ok(Vec::new());
        };
        let start = start.max(first);
        let end = end.min(last.index + 1);
        if start >= end {
            return Ok(Vec::new());
        }
        let n = (end - start) as usize;
        let mut out: Vec<C::Entry> = Vec::with_capacity(n.min(4096));
        // The iterator steps over padding: the next `n` entries are the next `n` indexes.
        let guard = self.log.pin();
        for e in guard.iter_from(pos.lsn(start)).take(n) {
            let index = start + out.len() as u64;
            let want = pos.lsn(index);
            if e.lsn != want {
                return Err(DaxError::Missing(want));
            }
            let entry: C::Entry = codec::decode(e.payload)?;
            if entry.get_log_id().index != index {
                return Err(DaxError::Missing(want));
            }
            out.push(entry);
        }
        if out.len() != n {
            return Err(DaxError::Missing(pos.lsn(start + out.len() as u64)));
        }
        Ok(out)
    }

    /// Checks that `entries` continue the log without a hole and encodes them.
    fn encode(&self, entries: &[C::Entry]) -> Result<Vec<Vec<u8>>, DaxError> {
        let mut expected = self.last().map(|l| l.index + 1);
        let mut payloads = Vec::with_capacity(entries.len());
        for e in entries {
            let index = e.get_log_id().index;
            if let Some(want) = expected {
                if index != want {
                    return Err(DaxError::Inconsistent(format!(
                        "append of index {index} where {want} was expected (no holes allowed)"
                    )));
                }
            }
            expected = Some(index + 1);
            payloads.push(codec::encode(e)?);
        }
        Ok(payloads)
    }

    /// Records that `entries` were appended (durably) at LSNs from `first_lsn` on: a new run
    /// starts unless they continue the last one at the next LSN. Readers see them from here on.
    fn appended(&self, entries: &[C::Entry], first_lsn: daxlog::Lsn) {
        let Some(head) = entries.first() else {
            return;
        };
        let index = head.get_log_id().index;
        let mut pos = self.pos_mut();
        let continues = match (pos.runs.last(), &pos.last) {
            (Some(&(start, lsn)), Some(last)) => {
                last.index + 1 == index && lsn + (index - start) == first_lsn
            }
            _ => false,
        };
        if !continues {
            pos.runs.push((index, first_lsn));
        }
        if let Some(e) = entries.last() {
            pos.last = Some(e.get_log_id().clone());
        }
    }

    /// Deletes every entry with an index of at least `since`.
    ///
    /// The one operation that holds `pos` across its barriers: the deleted LSNs are reused by
    /// the entries that replace them, so until the log and `pos` both say the suffix is gone,
    /// a reader must not take a copy of `pos` that still names it (it would ask for entries
    /// being deleted and get `Missing`, where it should see the shorter log). Readers that
    /// copied `pos` before wait in daxlog for the deletion (new guards wait while it runs) and
    /// find the entries gone, or their replacements, which `entries_at` checks by index.
    fn truncate_from(&self, since: u64) -> Result<(), DaxError> {
        let mut pos = self.pos_mut();
        let (Some(first), Some(last)) = (pos.first_index(), pos.last.as_ref()) else {
            return Ok(());
        };
        if since > last.index {
            return Ok(());
        }
        if since <= first {
            // Everything goes, padding before the first entry included.
            let head = self.log.first_lsn().unwrap_or(pos.lsn(first));
            self.log.truncate_after(head - 1)?;
            pos.runs.clear();
            pos.last = None;
        } else {
            // Padding after the last kept entry goes too.
            let keep = pos.lsn(since - 1);
            self.log.truncate_after(keep)?;
            pos.runs.retain(|(start, _)| *start < since);
            pos.last = Some(self.decode(keep)?.get_log_id().clone());
        }
        Ok(())
    }

    /// Deletes every entry with an index of at most `upto`. Readers go on meanwhile: `pos` is
    /// copied, and updated once daxlog's prefix truncation is durable (LSNs are never reused
    /// by it: a reader still holding the old copy finds the purged entries, if its guard keeps
    /// them, or gets `Missing`).
    fn purge_upto(&self, upto: u64) -> Result<(), DaxError> {
        let pos = self.pos();
        let (Some(first), Some(last)) = (pos.first_index(), pos.last.as_ref()) else {
            return Ok(());
        };
        if upto < first {
            return Ok(());
        }
        #[cfg(test)]
        if let Some(hook) = &*lock(&self.at_purge_barrier) {
            hook();
        }
        if upto >= last.index {
            self.log.reset()?;
            *self.pos_mut() = Pos::empty();
        } else {
            let next = upto + 1;
            let lsn = pos.lsn(next);
            self.log.truncate_before(lsn)?;
            let mut pos = self.pos_mut();
            pos.runs.retain(|(start, _)| *start > next);
            pos.runs.insert(0, (next, lsn));
        }
        Ok(())
    }
}

/// openraft's [`RaftLogStorage`] on daxlog files; see the module documentation.
pub struct LogStore<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
    meta_file: Arc<Mutex<MetaFile<C::NodeId>>>,
    lag: Arc<Mutex<CommittedLag<C::NodeId>>>,
    /// A delayed save of the committed log id is scheduled and has not started to write.
    scheduled: Arc<AtomicBool>,
    /// The latest metadata: durable but for `committed`, which may be ahead of the saved one.
    meta: Meta<C::NodeId>,
    /// See [`LogStoreOptions::committed_save_every`].
    committed_every: Duration,
    dir: PathBuf,
    /// The state machine's durable snapshot, which a purge must not pass.
    snapshot: Option<SnapshotWatermark>,
    purge_wait: Duration,
    max_entry: Option<u64>,
    reserve: Option<u64>,
    /// The most bytes on media one daxlog batch of an `append` takes (a quarter of the
    /// admission reserve), unless a single entry needs more.
    chunk_bytes: u64,
    /// Bytes of writes admitted and not released yet, shared by every [`Admission`].
    pending: Arc<AtomicU64>,
}

/// A reader of a [`LogStore`]'s entries, for openraft's replication tasks.
pub struct LogReader<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
}

impl<C: RaftTypeConfig> Clone for LogReader<C> {
    fn clone(&self) -> Self {
        LogReader {
            inner: self.inner.clone(),
        }
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Opens the store in directory `dir`, creating the directory and its files if needed.
    ///
    /// Recovery is daxlog's: entries whose append had not returned may be gone, acknowledged
    /// ones are there. A purge that was recorded but not carried out is finished here.
    pub fn open(dir: impl AsRef<Path>, opts: &LogStoreOptions) -> Result<Self, DaxError> {
        Self::open_inner(dir.as_ref(), opts, None)
    }

    /// [`LogStore::open`], checked against `snapshot` (if any) before anything is purged.
    fn open_inner(
        dir: &Path,
        opts: &LogStoreOptions,
        snapshot: Option<SnapshotWatermark>,
    ) -> Result<Self, DaxError> {
        create_dir_durably(dir)?;
        let meta_path = dir.join(META_FILE);
        let log_path = dir.join(LOG_FILE);
        // `meta.dax` is created first: a log without it lost its vote.
        if log_path.exists() && !meta_path.exists() {
            return Err(DaxError::Inconsistent(format!(
                "{} exists without {}",
                log_path.display(),
                meta_path.display()
            )));
        }
        let meta_log =
            LatestRecord::open_or_create(&meta_path, &opts.resolved(dir, opts.meta_capacity))?;
        let meta: Meta<C::NodeId> = meta_log.load()?.unwrap_or_default();
        let log_opts = opts.resolved(dir, opts.log.get_capacity());
        let log = if log_path.exists() {
            daxlog::Log::open(&log_path, &log_opts)?
        } else {
            create_atomically(&log_path, &log_opts)?
        };
        let inner = Inner::new(log)?;
        if let (Some(purged), Some(snapshot)) = (&meta.last_purged, &snapshot) {
            // Refused before anything is removed: the store stays as it was found.
            if Some(purged.index) > snapshot.get() {
                return Err(DaxError::PurgedBeyondSnapshot {
                    purged: purged.index,
                    snapshot: snapshot.get(),
                });
            }
        }
        if let Some(purged) = &meta.last_purged {
            inner.purge_upto(purged.index)?;
        }
        let chunk_bytes = (reserve_for(opts.reserve, inner.log.space().data) / 4).max(1);
        Ok(LogStore {
            inner: Arc::new(inner),
            meta_file: Arc::new(Mutex::new(MetaFile {
                record: Some(meta_log),
                saved: meta.clone(),
            })),
            lag: Arc::new(Mutex::new(CommittedLag {
                latest: meta.committed.clone(),
                saved_at: None,
            })),
            scheduled: Arc::new(AtomicBool::new(false)),
            meta,
            committed_every: opts.committed_every,
            dir: dir.to_path_buf(),
            snapshot,
            purge_wait: opts.purge_wait,
            max_entry: opts.max_entry,
            reserve: opts.reserve,
            chunk_bytes,
            pending: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Opens the store like [`LogStore::open`], tied to the state machine's durable snapshot:
    ///
    /// * the store is refused with [`DaxError::PurgedBeyondSnapshot`] if its last purged log
    ///   index lies beyond `snapshot` (the entries in between would be in neither), before
    ///   anything is removed: an interrupted purge is finished only once the store is accepted;
    /// * `purge(upto)` waits until `snapshot` reaches `upto` before it records or removes
    ///   anything (at most [`LogStoreOptions::purge_wait`]), so the log is never purged ahead
    ///   of a durable snapshot, whatever the order in which openraft runs the two.
    ///
    /// This is how a node should open its store; [`LogStore::open`] alone purges at once (for
    /// openraft's storage suite, which purges without a state machine snapshot).
    pub fn open_with_snapshot(
        dir: impl AsRef<Path>,
        opts: &LogStoreOptions,
        snapshot: SnapshotWatermark,
    ) -> Result<Self, DaxError> {
        Self::open_inner(dir.as_ref(), opts, Some(snapshot))
    }

    /// Sets the admission reserve ([`LogStoreOptions::full_reserve`]) of a store already
    /// open, e.g. one sized by the capacity of the log it opened (which is the file's, not
    /// [`LogStoreOptions::log_capacity`], when the log existed): before the store's
    /// [`Admission`] is taken and the store handed to openraft.
    pub fn set_full_reserve(&mut self, bytes: u64) {
        self.reserve = Some(bytes);
        self.chunk_bytes = (bytes / 4).max(1);
    }

    /// The space of the store's log: its capacity (the file's) and what is in use.
    pub fn space(&self) -> daxlog::Space {
        self.inner.log.space()
    }

    /// Admission control for client writes to this store's log (see [`Admission`]): take it
    /// before handing the store to openraft.
    pub fn admission(&self) -> Admission<C> {
        let data = self.inner.log.space().data;
        let max_payload = self.inner.log.max_payload();
        let reserve = reserve_for(self.reserve, data);
        let max_entry = self
            .max_entry
            .unwrap_or(data / 16)
            .min(reserve)
            .min(max_payload);
        Admission {
            log: self.inner.log.clone(),
            _config: std::marker::PhantomData,
            max_entry,
            reserve,
            chunk: self.chunk_bytes,
            inner: self.inner.clone(),
            pending: self.pending.clone(),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The persistence barrier daxlog uses for the Raft log.
    pub fn persistence(&self) -> daxlog::Persistence {
        self.inner.log.persistence()
    }

    /// What node `me` must have applied before it answers a linearizable read, if it opened
    /// this store as the leader it was when it stopped (see [`ReadFence`]); `None` otherwise.
    /// Take it before handing the store to openraft. Needed wherever the committed log id may
    /// have been saved behind the commit ([`LogStoreOptions::committed_save_every`]), by this
    /// store or by an earlier process on the same directory.
    pub fn read_fence(&self, me: C::NodeId) -> Option<ReadFence> {
        let vote = self.meta.vote.as_ref()?;
        if !vote.is_committed() || vote.leader_id().voted_for() != Some(me) {
            return None;
        }
        Some(ReadFence {
            term: vote.leader_id().get_term(),
            index: self.inner.last()?.index,
        })
    }

    /// Appends `entries` with one daxlog batch (one barrier), under no lock readers take:
    /// only this store (through `&mut self`) changes the log, and readers see the new entries
    /// once `pos` is updated, after the barrier. Runs on a blocking thread unless [`in_place`].
    ///
    /// A long batch (a follower catching up gets up to openraft's `max_payload_entries` in one
    /// `append`) is written as several daxlog batches of at most `chunk_bytes` on media each
    /// (at least one entry): one `append_batch` needs one contiguous piece of the ring, which
    /// a whole batch may not find even where the log has room for it. A crash between two
    /// chunks leaves a prefix of the entries, none of them acknowledged.
    async fn append_durably(&mut self, entries: Vec<C::Entry>) -> Result<(), DaxError> {
        if entries.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let chunk_bytes = self.chunk_bytes;
        blocking_unless(in_place(&inner.log), move || {
            let _one = lock(&inner.writer);
            let payloads = inner.encode(&entries)?;
            let mut start = 0;
            while start < entries.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < entries.len() {
                    let len = on_media(payloads[end].len());
                    if end > start && bytes + len > chunk_bytes {
                        break;
                    }
                    bytes += len;
                    end += 1;
                }
                let refs: Vec<&[u8]> = payloads[start..end].iter().map(Vec::as_slice).collect();
                let lsns = inner.log.append_batch(&refs)?;
                inner.appended(&entries[start..end], lsns.start);
                start = end;
            }
            Ok(())
        })
        .await
    }

    /// Runs `f` on the log, as its only writer (see `Inner::writer`), on a blocking thread
    /// unless [`in_place`].
    async fn with_log<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Inner<C>) -> Result<T, DaxError> + Send + 'static,
    ) -> Result<T, DaxError> {
        let inner = self.inner.clone();
        blocking_unless(in_place(&inner.log), move || inner.writing(f)).await
    }

    /// Durably replaces the metadata record (on a blocking thread unless [`in_place`]) with
    /// `meta` and the latest committed log id; the in-memory copy changes only on success.
    async fn save_meta(&mut self, meta: Meta<C::NodeId>) -> Result<(), DaxError> {
        let (file, lag) = (self.meta_file.clone(), self.lag.clone());
        let saved = meta.clone();
        // (Held by a save of this store, one at a time, or by a delayed save of the committed
        // log id; a save whose future was dropped may still run on a blocking thread: then not
        // in place either.)
        let inline = file
            .try_lock()
            .is_ok_and(|f| f.record.as_ref().is_some_and(|r| in_place(r.log())));
        blocking_unless(inline, move || write_meta(&file, &lag, Some(saved))).await?;
        self.meta = meta;
        Ok(())
    }

    /// Has the latest committed log id saved [`LogStoreOptions::committed_save_every`] after
    /// the last save, unless a save is scheduled already; false if there is no tokio runtime
    /// to run it on (the caller then saves at once).
    fn schedule_save(&self) -> bool {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return true;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.scheduled.store(false, Ordering::Release);
            return false;
        };
        // (Weak: a closed store saved its latest id itself.)
        let (file, lag_ref) = (Arc::downgrade(&self.meta_file), Arc::downgrade(&self.lag));
        let every = self.committed_every;
        // Clears `scheduled` however the task ends (done, panicked, or dropped with its
        // runtime, run or not), so that the next new id schedules another.
        let scheduled = ClearScheduled(self.scheduled.clone());
        runtime.spawn(async move {
            let scheduled = scheduled;
            loop {
                // Due once the record is `every` old (another save may have written it since
                // this one was scheduled).
                let wait = match lag_ref.upgrade() {
                    Some(lag) => lock(&lag)
                        .saved_at
                        .map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed())),
                    None => return,
                };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                // (A new id from here on schedules another save: this one may miss it.)
                scheduled.0.store(false, Ordering::Release);
                let (file, lag) = (file.clone(), lag_ref.clone());
                let res = blocking(move || match (file.upgrade(), lag.upgrade()) {
                    (Some(file), Some(lag)) => write_meta(&file, &lag, None),
                    _ => Ok(()),
                })
                .await;
                match res {
                    Ok(()) => return,
                    Err(e) => {
                        // Tried again an interval later, for as long as the store is open.
                        tracing::warn!(error = %e, "daxlog-raft: a delayed save of the committed log id failed");
                        tokio::time::sleep(every.max(Duration::from_millis(1))).await;
                    }
                }
            }
        });
        true
    }
}

/// Clears a [`LogStore`]'s `scheduled` flag when dropped.
struct ClearScheduled(Arc<AtomicBool>);

impl Drop for ClearScheduled {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// `meta.dax` and the record it holds now.
struct MetaFile<NID: NodeId> {
    /// None once the store is closed (its file then closes at once, whoever holds this).
    record: Option<LatestRecord>,
    saved: Meta<NID>,
}

/// The latest committed log id, which may be ahead of the saved one, shared by a store and
/// its delayed saves (see [`LogStoreOptions::committed_save_every`]). Locked after
/// [`MetaFile`] where both are.
struct CommittedLag<NID: NodeId> {
    latest: Option<LogId<NID>>,
    /// When the record was last written (None: not since the store was opened).
    saved_at: Option<Instant>,
}

/// Writes `meta` (or, if `None`, the record as saved) with the latest committed log id into
/// `meta.dax`; with `None`, only if that id is not saved yet. The record in memory changes
/// only on success.
fn write_meta<NID: NodeId>(
    file: &Mutex<MetaFile<NID>>,
    lag: &Mutex<CommittedLag<NID>>,
    meta: Option<Meta<NID>>,
) -> Result<(), DaxError> {
    let mut file = lock(file);
    let file = &mut *file;
    let Some(record) = file.record.as_mut() else {
        // Closed (the store saved its latest id when it was dropped).
        return match meta {
            None => Ok(()),
            Some(_) => Err(DaxError::Io(std::io::Error::other(
                "daxlog-raft: the log store is closed",
            ))),
        };
    };
    let latest = lock(lag).latest.clone();
    let meta = match meta {
        Some(meta) => Meta {
            committed: latest,
            ..meta
        },
        None if latest == file.saved.committed => return Ok(()),
        None => Meta {
            committed: latest,
            ..file.saved.clone()
        },
    };
    record.store(&meta)?;
    file.saved = meta;
    lock(lag).saved_at = Some(Instant::now());
    Ok(())
}

impl<C: RaftTypeConfig> Drop for LogStore<C> {
    /// Saves a committed log id that is not saved yet (a store closed by a shutdown, not a
    /// crash, then reopens with everything it had applied).
    fn drop(&mut self) {
        if let Err(e) = write_meta(&self.meta_file, &self.lag, None) {
            tracing::warn!(error = %e, "daxlog-raft: the last committed log id was not saved");
        }
        // `meta.dax` closes now, even if a delayed save holds the record for a moment: the
        // store can be opened again at once.
        drop(lock(&self.meta_file).record.take());
    }
}

/// What a node restored as leader must have applied before its first linearizable read.
///
/// Where the committed log id is saved behind the commit
/// ([`LogStoreOptions::committed_save_every`]), a node may have acknowledged writes past the
/// committed log id it reads back after a crash. openraft 0.9 restores a node whose saved vote
/// is committed and its own as the leader of that term, at once and without a new blank entry
/// when its log holds an entry of that term, and `Raft::ensure_linearizable` then waits only for
/// `max(first entry of its term, committed)`: it could answer without writes it had
/// acknowledged. Every write such a leader acknowledged is in its own log (a leader replicates
/// an entry only once it is durable in its own log), so a read is linearizable once the node
/// has applied up to the last entry its log held when it opened (`index`), or once
/// `ensure_linearizable` names a log id of a later term than `term` (a later leader's first
/// entry, or an entry it committed, follows every write committed before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadFence {
    /// The term the node was restored as leader of.
    pub term: u64,
    /// The last Raft index in its log when it opened.
    pub index: u64,
}

impl ReadFence {
    /// True if a linearizable read whose read log id (as `Raft::ensure_linearizable` returned
    /// it) is `read`, on a node that has applied up to `applied`, has nothing more to wait for.
    pub fn passed<NID: NodeId>(&self, read: Option<&LogId<NID>>, applied: Option<u64>) -> bool {
        read.is_some_and(|r| r.leader_id.get_term() > self.term)
            || applied.is_some_and(|a| a >= self.index)
    }
}

/// How often the node binary saves a new committed log id on its own
/// ([`LogStoreOptions::committed_save_every`]). openraft awaits `save_committed` before it
/// applies the entries, so a barrier there is one more sync in series with every client write
/// (on a disk, one of three); saved this often it costs nothing measurable, and a node
/// restarted after a crash re-learns at most this much of the commit from its leader.
pub const COMMITTED_SAVE_EVERY: Duration = Duration::from_millis(100);

/// Bytes a payload of `len` bytes takes in the log, its entry header and alignment included
/// (daxlog's own rule, [`daxlog::format::entry_len`]).
fn on_media(len: usize) -> u64 {
    daxlog::format::entry_len(len) as u64
}

/// The longest average `msync` ([`daxlog::SyncStats::average_sync`]) run in place.
const IN_PLACE_SYNC: Duration = Duration::from_micros(20);

/// True if a barrier of `log` is cheaper than a hand-off to a blocking thread and back (a few
/// µs and two thread wake-ups): the CPU-flush barriers of persistent memory mapped with
/// `MAP_SYNC` (well under a µs), and `msync`s that took [`IN_PLACE_SYNC`] or less on average
/// so far (a file in memory, tmpfs: about a µs). Other `msync`s (a disk: 100 µs and more, and
/// the first ones, not timed yet) go to a blocking thread, so that the runtime (heartbeats,
/// replication) goes on meanwhile. On 3 nodes on tmpfs, in place made a replicated write
/// about a third faster (daxlog-raft's README).
fn in_place(log: &daxlog::Log) -> bool {
    if log.persistence().is_cpu_flush() {
        return true;
    }
    let sync = log.sync_stats().average_sync;
    !sync.is_zero() && sync <= IN_PLACE_SYNC
}

/// Runs `f` in place if `inline`, else on a blocking thread (see [`blocking`]).
async fn blocking_unless<T: Send + 'static>(
    inline: bool,
    f: impl FnOnce() -> Result<T, DaxError> + Send + 'static,
) -> Result<T, DaxError> {
    if inline {
        f()
    } else {
        blocking(f).await
    }
}

/// Runs `f`, which waits for a persistence barrier (`msync`, `fsync`, cache flushes), on
/// tokio's blocking threads, so that the runtime's workers (heartbeats, replication) go on
/// meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DaxError> + Send + 'static,
) -> Result<T, DaxError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(res) => res,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(DaxError::Io(std::io::Error::other(e))),
    }
}

fn sto_err<NID: NodeId>(
    subject: ErrorSubject<NID>,
    verb: ErrorVerb,
    e: DaxError,
) -> StorageError<NID> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

fn read_entries<C>(
    inner: &Inner<C>,
    range: &impl RangeBounds<u64>,
) -> Result<Vec<C::Entry>, DaxError>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    let (start, end) = bounds(range);
    inner.entries(start, end)
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        read_entries(&self.inner, &range)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        read_entries(&self.inner, &range)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<C::NodeId>> {
        let last_purged_log_id = self.meta.last_purged.clone();
        let last_log_id = self.inner.last().or_else(|| last_purged_log_id.clone());
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        let meta = Meta {
            vote: Some(vote.clone()),
            ..self.meta.clone()
        };
        self.save_meta(meta)
            .await
            .map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.meta.vote.clone())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), StorageError<C::NodeId>> {
        if committed == self.meta.committed {
            return Ok(());
        }
        let deferred = {
            let mut lag = lock(&self.lag);
            lag.latest = committed.clone();
            let due = self.committed_every.is_zero()
                || lag
                    .saved_at
                    .is_none_or(|at| at.elapsed() >= self.committed_every);
            // Kept in memory (read_committed answers it), saved by a delayed save.
            !due && self.schedule_save()
        };
        if deferred {
            self.meta.committed = committed;
            return Ok(());
        }
        // (`self.meta` changes only once it is saved: a call again after a failure writes.)
        let meta = Meta {
            committed,
            ..self.meta.clone()
        };
        self.save_meta(meta)
            .await
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(
        &mut self,
    ) -> Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        Ok(self.meta.committed.clone())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        // Durable when this returns: only then is the callback told.
        let res = self.append_durably(entries).await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        self.with_log(move |inner| inner.truncate_from(log_id.index))
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        // Never ahead of the state machine's durable snapshot (see `open_with_snapshot`).
        if let Some(snapshot) = &self.snapshot {
            if !snapshot.wait_for(log_id.index, self.purge_wait).await {
                let e = DaxError::SnapshotNotDurable {
                    upto: log_id.index,
                    snapshot: snapshot.get(),
                };
                return Err(sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e));
            }
        }
        // Record the purge first: a crash before the log is truncated is finished by `open`.
        if self.meta.last_purged.as_ref() < Some(&log_id) {
            let meta = Meta {
                last_purged: Some(log_id.clone()),
                ..self.meta.clone()
            };
            self.save_meta(meta)
                .await
                .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        }
        self.with_log(move |inner| inner.purge_upto(log_id.index))
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
impl<C: RaftTypeConfig> LogStore<C> {
    /// Drops the store as a crash would: a committed log id not saved yet is lost, and no
    /// delayed save comes.
    fn crash(self) {
        {
            let file = lock(&self.meta_file);
            lock(&self.lag).latest = file.saved.committed.clone();
        }
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;
    use crate::TypeConfig;

    fn lid(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// Appends blank entries with indexes `0..n` in term 1.
    async fn append_blanks(store: &mut LogStore<TypeConfig>, n: u64) {
        store
            .blocking_append((0..n).map(|i| Entry::<TypeConfig>::new_blank(lid(1, i))))
            .await
            .unwrap();
    }

    /// A leader resends two entries the follower holds, with three new ones: openraft
    /// appends only the new ones, which the store cuts into chunks from the first new entry,
    /// not from the first entry sent. Counted from the first entry sent, the batch seemed to
    /// fit as two chunks (3600 bytes at the tail, 3200 after a wrap) where the store's one
    /// chunk of 4000 bytes meets `Full`.
    #[tokio::test]
    async fn entries_held_already_are_not_counted_into_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(64 << 10);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        store.set_full_reserve(16_000); // chunks of at most 4000 bytes on media
        let admission = store.admission();
        // An entry of `bytes` on media.
        let entry = |index: u64, bytes: u64| {
            (0..)
                .map(|n| Entry::<TypeConfig> {
                    log_id: lid(1, index),
                    payload: EntryPayload::Normal(crate::Request::Append { data: vec![7; n] }),
                })
                .find(|e| on_media(codec::encoded_len(e).unwrap()) >= bytes)
                .filter(|e| on_media(codec::encoded_len(e).unwrap()) == bytes)
                .expect("an entry of that size")
        };
        let mut held = vec![entry(0, 3208)];
        held.extend((1..=12).map(|i| entry(i, 4000)));
        held.extend([entry(13, 3832), entry(14, 400), entry(15, 2400)]);
        store.blocking_append(held.clone()).await.unwrap();
        store.purge(lid(1, 0)).await.unwrap();
        assert_eq!(
            admission.log.room(),
            daxlog::Room {
                at_tail: 3600,
                after_wrap: 3200
            }
        );
        let batch = vec![
            held[14].clone(),
            held[15].clone(),
            entry(16, 800),
            entry(17, 1200),
            entry(18, 2000),
        ];
        let fit = admission.entries_that_fit(&batch);
        // openraft skips the entries held and appends the rest of those it is given.
        let r = store.blocking_append(batch[2..fit].to_vec()).await;
        assert!(r.is_ok(), "{fit} counted as fitting: {r:?}");
        assert_eq!(
            fit, 4,
            "entries 16 and 17 fit at the tail, 18 after a wrap would not"
        );
    }

    /// A follower that hands openraft, of every leader's batch, only the entries
    /// `entries_that_fit` counts never meets daxlog's `Full` (which openraft would make
    /// fatal), lap after lap of the ring: batches that resend entries the log holds (a retry,
    /// a new leader's probe), batches whose entries conflict with the log's from some index on
    /// (a new leader, a new term), entries of many sizes, some larger than a chunk. openraft's
    /// part is played here as it does it: skip the entries held with the same log id, remove
    /// the log's entries from the first conflict on, append the rest (one call, which the
    /// store cuts into chunks). When nothing fits, half the entries are purged. 200 laps.
    #[tokio::test]
    async fn entries_that_fit_are_taken_without_full() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(64 << 10);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        // Chunks of at most 4000 bytes: entries both smaller and larger.
        store.set_full_reserve(16_000);
        let admission = store.admission();
        let data = store.space().data;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let entry = |term: u64, index: u64, len: u64| Entry::<TypeConfig> {
            log_id: lid(term, index),
            payload: EntryPayload::Normal(crate::Request::Append {
                data: vec![index as u8; len as usize],
            }),
        };
        // What the log holds, as this follower and its leader agree.
        let mut held: std::collections::VecDeque<Entry<TypeConfig>> = Default::default();
        let (mut term, mut next) = (1u64, 0u64);
        let (mut appended, mut cut, mut resent, mut conflicts) = (0u64, 0u32, 0u32, 0u32);
        while appended < 200 * data {
            // The leader's batch: a few entries the log holds, then entries it does not,
            // from a new term where they replace some the log holds.
            let back = rand(4).min(held.len() as u64) as usize;
            let replaced = match rand(5) {
                0 => rand(back as u64 + 1) as usize,
                _ => 0,
            };
            if replaced > 0 {
                term += 1;
                conflicts += 1;
            }
            let mut batch: Vec<_> = held
                .iter()
                .skip(held.len() - back)
                .take(back - replaced)
                .cloned()
                .collect();
            let from = next - replaced as u64;
            for index in from..from + 1 + rand(20) {
                let len = [40, 3_000, 700, 1_200, 90, 2_400, 5_000, 1_900, 3_700][rand(9) as usize];
                batch.push(entry(term, index, len));
            }
            resent += u32::from(back > replaced);
            let fit = admission.entries_that_fit(&batch);
            cut += u32::from(fit < batch.len());
            if fit == 0 {
                assert!(
                    held.len() > 1,
                    "nothing fits in a log of {} entries",
                    held.len()
                );
                // Purge half of what is held, as a snapshot would let a follower.
                let upto = held[held.len() / 2 - 1].log_id;
                store.purge(upto).await.unwrap();
                held.drain(..held.len() / 2);
                continue;
            }
            // openraft: skip what is held with the same log id, remove from a conflict on,
            // append the rest.
            let given = &batch[..fit];
            let since = given
                .iter()
                .position(|e| !held.iter().any(|h| h.log_id == e.log_id))
                .unwrap_or(given.len());
            if since == given.len() {
                continue;
            }
            let first = given[since].log_id;
            if first.index < next {
                store.truncate(first).await.unwrap();
                held.retain(|h| h.log_id.index < first.index);
            }
            for e in &given[since..] {
                appended += on_media(codec::encoded_len(e).unwrap());
            }
            let r = store.blocking_append(given[since..].to_vec()).await;
            assert!(
                r.is_ok(),
                "{} of {} entries counted as fitting: {r:?}",
                fit,
                batch.len()
            );
            held.extend(given[since..].iter().cloned());
            next = held.back().unwrap().log_id.index + 1;
        }
        assert!(
            cut > 1000 && resent > 1000 && conflicts > 200,
            "{cut} batches cut, {resent} resent entries, {conflicts} conflicts"
        );
    }

    /// A new committed log id alone is saved at most every `COMMITTED_SAVE_EVERY`: the store
    /// answers the latest, a store reopened after a crash the last saved one (never one that
    /// was not committed); a save of the vote writes the latest too, and so does closing the
    /// store.
    #[tokio::test]
    async fn committed_is_saved_at_most_every_interval() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new()
            .log_capacity(1 << 20)
            .committed_save_every(COMMITTED_SAVE_EVERY);
        let open = || LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        let crash = LogStore::<TypeConfig>::crash;
        let mut store = open();
        append_blanks(&mut store, 100).await;
        let began = Instant::now();
        for i in 1..=50 {
            store.save_committed(Some(lid(1, i))).await.unwrap();
        }
        let quick = began.elapsed() < COMMITTED_SAVE_EVERY;
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 50)));
        // (No await since the saves: the delayed save has not run.)
        crash(store);
        let mut store = open();
        let saved = store.read_committed().await.unwrap();
        if quick {
            assert_eq!(saved, Some(lid(1, 1)), "only the first was due");
        } else {
            // (A machine too busy to make 50 saves within the interval.)
            assert!(saved.is_some_and(|s| s.index <= 50), "{saved:?}");
        }
        // The first save after an open is due; the next one is due after the interval, and
        // a delayed save comes by then if nothing else does.
        store.save_committed(Some(lid(1, 60))).await.unwrap();
        store.save_committed(Some(lid(1, 61))).await.unwrap();
        tokio::time::sleep(COMMITTED_SAVE_EVERY * 3).await;
        crash(store);
        let mut store = open();
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 61)));
        // A save of the vote writes the latest committed log id too.
        store.save_committed(Some(lid(1, 62))).await.unwrap();
        store.save_committed(Some(lid(1, 63))).await.unwrap();
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        crash(store);
        let mut store = open();
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 63)));
        assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        // Closing the store saves the latest.
        store.save_committed(Some(lid(1, 64))).await.unwrap();
        store.save_committed(Some(lid(1, 65))).await.unwrap();
        drop(store);
        assert_eq!(open().read_committed().await.unwrap(), Some(lid(1, 65)));
    }

    /// A store dropped while something still holds its metadata file (a delayed save, for a
    /// moment) closes `meta.dax` all the same: it opens again at once.
    #[tokio::test]
    async fn a_closed_store_opens_again_while_a_delayed_save_holds_its_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new()
            .log_capacity(1 << 20)
            .committed_save_every(Duration::from_secs(60));
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        append_blanks(&mut store, 10).await;
        store.save_committed(Some(lid(1, 1))).await.unwrap();
        store.save_committed(Some(lid(1, 2))).await.unwrap();
        let held = store.meta_file.clone();
        drop(store);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 2)));
        drop(held);
    }

    /// A delayed save lost with its runtime (never run) does not keep the next new committed
    /// log id from being saved within the interval.
    #[test]
    fn a_delayed_save_lost_with_its_runtime_does_not_stop_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let every = Duration::from_millis(20);
        let opts = LogStoreOptions::new()
            .log_capacity(1 << 20)
            .committed_save_every(every);
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        runtime().block_on(async {
            append_blanks(&mut store, 10).await;
            store.save_committed(Some(lid(1, 1))).await.unwrap();
            store.save_committed(Some(lid(1, 2))).await.unwrap();
        });
        // (The first runtime is gone, and its delayed save with it.)
        runtime().block_on(async {
            store.save_committed(Some(lid(1, 3))).await.unwrap();
            tokio::time::sleep(every * 10).await;
        });
        store.crash();
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        let committed = runtime().block_on(store.read_committed()).unwrap();
        assert_eq!(committed, Some(lid(1, 3)));
    }

    /// With the default options every new committed log id is saved before `save_committed`
    /// returns.
    #[tokio::test]
    async fn committed_is_saved_at_once_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        append_blanks(&mut store, 10).await;
        for i in 1..=5 {
            store.save_committed(Some(lid(1, i))).await.unwrap();
        }
        store.crash();
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(lid(1, 5)));
    }

    /// `read_fence`: only for the node whose committed vote the store holds, at its last
    /// index; passed by a read log id of a later term or by applying up to that index.
    #[tokio::test]
    async fn a_store_opened_by_its_committed_leader_has_a_read_fence() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        assert_eq!(store.read_fence(1), None, "no vote");
        append_blanks(&mut store, 10).await;
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        assert_eq!(store.read_fence(1), None, "a vote not committed");
        store.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        assert_eq!(store.read_fence(2), None, "another node's leadership");
        let fence = store.read_fence(1).unwrap();
        assert_eq!(fence, ReadFence { term: 3, index: 9 });
        drop(store);
        let store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        assert_eq!(store.read_fence(1), Some(fence));

        assert!(!fence.passed::<u64>(None, None));
        assert!(
            !fence.passed(Some(&lid(3, 9)), Some(8)),
            "the same term, not applied"
        );
        assert!(!fence.passed(Some(&lid(2, 20)), Some(0)), "an earlier term");
        assert!(
            fence.passed(Some(&lid(3, 2)), Some(9)),
            "applied up to the fence"
        );
        assert!(
            fence.passed(Some(&lid(4, 10)), Some(2)),
            "a later term's read log id"
        );
    }

    /// A crash after a purge was recorded in `meta.dax` but before `log.dax` was truncated:
    /// `open` finishes the purge.
    #[tokio::test]
    async fn open_finishes_an_interrupted_purge() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        append_blanks(&mut store, 10).await;
        // The first half of `purge`, alone.
        let meta = Meta {
            last_purged: Some(lid(1, 4)),
            ..store.meta.clone()
        };
        store.save_meta(meta).await.unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 10);
        drop(store);

        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        let entries = store.try_get_log_entries(..).await.unwrap();
        assert_eq!(entries.first().unwrap().log_id, lid(1, 5));
        assert_eq!(entries.len(), 5);
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 4)));
        assert_eq!(st.last_log_id, Some(lid(1, 9)));
    }

    /// `purge` waits for a durable snapshot that covers it: until the watermark reaches the
    /// purged index, nothing is recorded or removed (a crash then loses nothing); once it does,
    /// the purge completes.
    #[tokio::test]
    async fn purge_waits_for_a_durable_snapshot() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let snapshot = SnapshotWatermark::new(Some(2));
        let mut store =
            LogStore::<TypeConfig>::open_with_snapshot(dir.path(), &opts, snapshot.clone())
                .unwrap();
        append_blanks(&mut store, 10).await;
        {
            // The state machine has not written a snapshot up to 8 yet: the purge must not
            // proceed. Dropping it here is a crash at this point.
            let mut purge = std::pin::pin!(store.purge(lid(1, 8)));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(purge.as_mut().poll(&mut cx), Poll::Pending));
        }
        assert_eq!(store.meta.last_purged, None);
        drop(store);
        let mut store =
            LogStore::<TypeConfig>::open_with_snapshot(dir.path(), &opts, snapshot.clone())
                .unwrap();
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, None);
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 10);

        // The snapshot becomes durable while the purge waits.
        let advancer = snapshot.clone();
        let task = tokio::spawn(async move {
            tokio::task::yield_now().await;
            advancer.advance(Some(8));
        });
        store.purge(lid(1, 8)).await.unwrap();
        task.await.unwrap();
        let entries = store.try_get_log_entries(..).await.unwrap();
        assert_eq!(entries.first().unwrap().log_id, lid(1, 9));
        assert_eq!(store.meta.last_purged, Some(lid(1, 8)));
    }

    /// A purge that no durable snapshot covers in time fails and changes nothing.
    #[tokio::test]
    async fn purge_without_a_snapshot_fails_and_keeps_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new()
            .log_capacity(1 << 20)
            .purge_wait(Duration::from_millis(20));
        let snapshot = SnapshotWatermark::new(Some(3));
        let mut store =
            LogStore::<TypeConfig>::open_with_snapshot(dir.path(), &opts, snapshot).unwrap();
        append_blanks(&mut store, 10).await;
        let err = store.purge(lid(1, 5)).await.unwrap_err();
        assert!(
            err.to_string().contains("no durable snapshot covers it"),
            "{err}"
        );
        assert_eq!(store.meta.last_purged, None);
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 10);
        // Up to the snapshot, it purges.
        store.purge(lid(1, 3)).await.unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 6);
    }

    /// The crash window of a snapshot installation, as the files were left when the purge ran
    /// ahead of the snapshot: `meta.dax` says purged up to 5, the state machine has no
    /// snapshot. The store is refused with a typed error; with a snapshot up to 5 it opens.
    #[tokio::test]
    async fn open_refuses_a_log_purged_past_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        append_blanks(&mut store, 10).await;
        store.purge(lid(1, 5)).await.unwrap();
        drop(store);

        let err = LogStore::<TypeConfig>::open_with_snapshot(
            dir.path(),
            &opts,
            SnapshotWatermark::new(Some(4)),
        )
        .err()
        .unwrap();
        assert!(
            matches!(
                err,
                DaxError::PurgedBeyondSnapshot {
                    purged: 5,
                    snapshot: Some(4)
                }
            ),
            "{err}"
        );
        let err = LogStore::<TypeConfig>::open_with_snapshot(
            dir.path(),
            &opts,
            SnapshotWatermark::new(None),
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, DaxError::PurgedBeyondSnapshot { .. }),
            "{err}"
        );

        let mut store = LogStore::<TypeConfig>::open_with_snapshot(
            dir.path(),
            &opts,
            SnapshotWatermark::new(Some(5)),
        )
        .unwrap();
        let st = store.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(lid(1, 5)));
        assert_eq!(st.last_log_id, Some(lid(1, 9)));
    }

    /// Runs `f` with a task spawned on the same single-threaded runtime: if `f` waited for a
    /// barrier on the runtime's thread without yielding, the task could not run meanwhile.
    async fn others_run_during<T>(f: impl std::future::Future<Output = T>) -> T {
        use std::sync::atomic::{AtomicBool, Ordering};
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
        let out = f.await;
        assert!(
            ran.load(Ordering::SeqCst),
            "the operation held the runtime's thread"
        );
        out
    }

    /// The `msync` barriers of append, save_vote, save_committed, truncate and purge run on
    /// blocking threads: the runtime's thread stays free for other tasks (heartbeats)
    /// meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn barriers_run_off_the_runtime_thread() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        if store.persistence().is_cpu_flush() {
            // Persistent memory: the barriers are CPU flushes and run in place.
            return;
        }
        let blank = |i| Entry::<TypeConfig>::new_blank(lid(1, i));
        others_run_during(store.blocking_append((0..10).map(blank)))
            .await
            .unwrap();
        others_run_during(store.save_committed(Some(lid(1, 5))))
            .await
            .unwrap();
        let vote = Vote::new(1, 1);
        others_run_during(store.save_vote(&vote)).await.unwrap();
        others_run_during(store.truncate(lid(1, 8))).await.unwrap();
        others_run_during(store.purge(lid(1, 2))).await.unwrap();
        let entries = store.try_get_log_entries(..).await.unwrap();
        let ids: Vec<_> = entries.iter().map(|e| e.log_id.index).collect();
        assert_eq!(ids, (3..8).collect::<Vec<_>>());
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    }

    /// The log refuses appends that would leave a hole.
    #[tokio::test]
    async fn holes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        let blank = |i| Entry::<TypeConfig>::new_blank(lid(1, i));
        store.blocking_append([blank(1), blank(2)]).await.unwrap();
        assert!(store.blocking_append([blank(4)]).await.is_err());
        assert!(store.blocking_append([blank(3), blank(5)]).await.is_err());
        store.blocking_append([blank(3)]).await.unwrap();
        assert_eq!(store.try_get_log_entries(..).await.unwrap().len(), 3);
    }

    /// Appends blank entries with indexes `from..to` in term `term`.
    async fn append_term(store: &mut LogStore<TypeConfig>, term: u64, from: u64, to: u64) {
        store
            .blocking_append((from..to).map(|i| Entry::<TypeConfig>::new_blank(lid(term, i))))
            .await
            .unwrap();
    }

    /// Waits until `reads` passed `from + k` (true), or a minute went by (false: the reader
    /// made no progress).
    fn reads_passed(reads: &AtomicU64, from: u64, k: u64) -> bool {
        for _ in 0..60_000 {
            if reads.load(Ordering::SeqCst) >= from + k {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// A reader whose copy of the entries' places a purge overtook gets `Missing` for the
    /// purged entries, never the entries daxlog holds in their stead (its iterator starts at
    /// the first entry when asked for an LSN below it); the entries that stay, it reads.
    #[tokio::test]
    async fn a_reader_overtaken_by_a_purge_gets_missing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        append_blanks(&mut store, 10).await;
        let before = store.inner.pos();
        store.purge(lid(1, 4)).await.unwrap();
        let err = store.inner.entries_at(&before, 0, 10).unwrap_err();
        assert!(matches!(err, DaxError::Missing(1)), "{err}");
        let err = store.inner.entries_at(&before, 3, 10).unwrap_err();
        assert!(matches!(err, DaxError::Missing(4)), "{err}");
        let kept = store.inner.entries_at(&before, 5, 10).unwrap();
        let ids: Vec<_> = kept.iter().map(|e| e.log_id).collect();
        assert_eq!(ids, (5..10).map(|i| lid(1, i)).collect::<Vec<_>>());

        // Everything goes, and entries with other indexes take the same LSNs: checked by index.
        let before = store.inner.pos();
        store.truncate(lid(1, 5)).await.unwrap();
        append_term(&mut store, 2, 20, 30).await;
        let err = store.inner.entries_at(&before, 5, 10).unwrap_err();
        assert!(matches!(err, DaxError::Missing(6)), "{err}");
        let now = store.try_get_log_entries(..).await.unwrap();
        let ids: Vec<_> = now.iter().map(|e| e.log_id).collect();
        assert_eq!(ids, (20..30).map(|i| lid(2, i)).collect::<Vec<_>>());
    }

    /// A reader reads in a loop while purges run: every entry it gets is the one it asked for
    /// (its index, its term, in order), and it goes on reading while each purge waits for its
    /// barrier (the purge waits there until the reader completed a few more reads: had the
    /// purge held a lock the reader needs, the reader would not get past it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_go_on_while_purges_run() {
        use std::sync::atomic::AtomicBool;
        const N: u64 = 3000;
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(8 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        append_blanks(&mut store, N).await;
        let reads = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (reads, stalled) = (reads.clone(), stalled.clone());
            *store.inner.at_purge_barrier.lock().unwrap() = Some(Box::new(move || {
                let from = reads.load(Ordering::SeqCst);
                if !reads_passed(&reads, from, 3) {
                    stalled.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let reader = store.get_log_reader().await;
        let thread = {
            let (reads, stop) = (reads.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut lo, mut got, mut missing) = (0u64, 0u64, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    match read_entries(&reader.inner, &(lo..lo + 64)) {
                        Ok(v) => {
                            if let Some(head) = v.first() {
                                let at = head.log_id.index;
                                assert!(at >= lo, "asked from {lo}, got {at}");
                                assert!(at + v.len() as u64 <= lo + 64);
                                for (k, e) in v.iter().enumerate() {
                                    assert_eq!(e.log_id, lid(1, at + k as u64));
                                }
                                got += v.len() as u64;
                            }
                        }
                        Err(DaxError::Missing(_)) => missing += 1,
                        Err(e) => panic!("{e}"),
                    }
                    lo = (lo + 37) % N;
                    reads.fetch_add(1, Ordering::SeqCst);
                }
                (got, missing)
            })
        };
        let mut purges = 0;
        for upto in (100..N).step_by(100).chain([N - 1]) {
            store.purge(lid(1, upto)).await.unwrap();
            purges += 1;
            let first = store.try_get_log_entries(..).await.unwrap();
            assert_eq!(
                first.first().map(|e| e.log_id.index),
                (upto + 1 < N).then_some(upto + 1)
            );
        }
        stop.store(true, Ordering::SeqCst);
        let (got, _missing) = thread.join().unwrap();
        assert_eq!(
            stalled.load(Ordering::SeqCst),
            0,
            "the reader stalled behind a purge"
        );
        assert!(reads.load(Ordering::SeqCst) >= 3 * purges);
        assert!(got > 0);
        assert!(store.try_get_log_entries(..).await.unwrap().is_empty());
    }

    /// A suffix truncation beside a reader: the conflicting suffix `300..400` is replaced again
    /// and again, each time in a new term. Each read returns its indexes in order, entries of
    /// one state of the log (the kept prefix in term 1, the suffix in one term, never two), and
    /// later reads never see an earlier term.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn suffix_truncations_beside_a_reader() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(4 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        append_blanks(&mut store, 400).await;
        let reads = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = store.get_log_reader().await;
        let thread = {
            let (reads, stop) = (reads.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut seen, mut suffixes) = (1u64, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    match read_entries(&reader.inner, &(250..400)) {
                        Ok(v) => {
                            let mut term = None;
                            for (k, e) in v.iter().enumerate() {
                                let index = 250 + k as u64;
                                assert_eq!(e.log_id.index, index);
                                let t = e.log_id.leader_id.term;
                                if index < 300 {
                                    assert_eq!(t, 1);
                                    continue;
                                }
                                assert_eq!(*term.get_or_insert(t), t, "two terms in one read");
                                assert!(t >= seen, "term {t} read after term {seen}");
                                seen = t;
                            }
                            suffixes += u64::from(term.is_some());
                        }
                        Err(DaxError::Missing(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                }
                suffixes
            })
        };
        const TERMS: u64 = 20;
        for term in 2..=TERMS {
            store.truncate(lid(term - 1, 300)).await.unwrap();
            append_term(&mut store, term, 300, 400).await;
            let from = reads.load(Ordering::SeqCst);
            assert!(reads_passed(&reads, from, 2), "the reader stalled");
        }
        stop.store(true, Ordering::SeqCst);
        let suffixes = thread.join().unwrap();
        assert!(suffixes > 0);
        let entries = store.try_get_log_entries(250..400).await.unwrap();
        let ids: Vec<_> = entries.iter().map(|e| e.log_id).collect();
        let want: Vec<_> = (250..400)
            .map(|i| lid(if i < 300 { 1 } else { TERMS }, i))
            .collect();
        assert_eq!(ids, want);
    }
}
