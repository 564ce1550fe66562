//! openraft's log storage on daxlog.
//!
//! # Files
//!
//! A store is a directory with two daxlog files:
//!
//! * `log.dax`: the Raft log. Each Raft entry is one daxlog entry, its payload the entry
//!   serialized with serde_json (log id included). An `append` of several Raft entries is one
//!   `append_batch`: one barrier, all or nothing.
//! * `meta.dax`: the vote, the committed log id and the last purged log id, as one record;
//!   see [`crate::meta`].
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
//! # Crash safety
//!
//! An append is acknowledged (the [`LogFlushed`] callback) only after daxlog made it durable.
//! A purge first records the new last purged log id in `meta.dax`, then truncates `log.dax`;
//! a crash in between leaves entries that are already purged in the log, and `open` removes
//! them again. A suffix truncation is one daxlog operation and needs no metadata.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, NodeId, OptionalSend, RaftLogId, RaftLogReader,
    RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::files::{create_atomically, DaxError};
use crate::meta::LatestRecord;

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
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LogStoreOptions {
    /// Defaults: a 64 MiB Raft log, a 64 KiB metadata log, daxlog's default options.
    pub fn new() -> Self {
        LogStoreOptions {
            log: daxlog::Options::new(),
            custom: false,
            persistence: None,
            meta_capacity: DEFAULT_META_CAPACITY,
        }
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

    /// Chooses daxlog's persistence mode (default: daxlog's own choice, `Auto` unless a
    /// `DAXLOG_FORCE_*` variable says otherwise).
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

/// The record kept in `meta.dax`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
struct Meta<NID: NodeId> {
    vote: Option<Vote<NID>>,
    committed: Option<LogId<NID>>,
    last_purged: Option<LogId<NID>>,
}

/// The Raft log proper, shared between the store and its readers. The log itself is not
/// behind a lock: daxlog appends, purges (prefix truncations) and reads run side by side.
/// Only where the entries lie — the index offset and the last log id, a few bytes — is, and
/// that lock is never held across a barrier, except by a suffix truncation (`truncate`),
/// which readers must not see half done.
struct Inner<C: RaftTypeConfig> {
    log: daxlog::Log,
    pos: RwLock<Pos<C>>,
}

/// Where the Raft entries lie in the daxlog log.
struct Pos<C: RaftTypeConfig> {
    /// `raft index - LSN` of the entries in the log; `None` while the log is empty.
    offset: Option<i128>,
    /// Log id of the last entry in the log.
    last: Option<LogId<C::NodeId>>,
}

impl<C: RaftTypeConfig> Clone for Pos<C> {
    fn clone(&self) -> Self {
        Pos {
            offset: self.offset,
            last: self.last.clone(),
        }
    }
}

impl<C> Inner<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    fn new(log: daxlog::Log) -> Result<Self, DaxError> {
        let inner = Self {
            log,
            pos: RwLock::new(Pos {
                offset: None,
                last: None,
            }),
        };
        if let (Some(first), Some(last)) = (inner.log.first_lsn(), inner.log.last_lsn()) {
            let first_id = inner.decode(first)?.get_log_id().clone();
            let last_id = inner.decode(last)?.get_log_id().clone();
            let offset = first_id.index as i128 - first as i128;
            if last_id.index as i128 - last as i128 != offset {
                return Err(DaxError::Inconsistent(format!(
                    "entries {first_id} at LSN {first} and {last_id} at LSN {last} are not contiguous"
                )));
            }
            *inner.pos_mut() = Pos {
                offset: Some(offset),
                last: Some(last_id),
            };
        }
        Ok(inner)
    }

    fn pos(&self) -> Pos<C> {
        self.pos.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn pos_mut(&self) -> RwLockWriteGuard<'_, Pos<C>> {
        self.pos.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Log id of the last entry in the log.
    fn last(&self) -> Option<LogId<C::NodeId>> {
        self.pos().last
    }

    fn decode(&self, lsn: daxlog::Lsn) -> Result<C::Entry, DaxError> {
        let e = self.log.read(lsn).ok_or(DaxError::Missing(lsn))?;
        Ok(serde_json::from_slice(&e.payload)?)
    }

    /// Raft index of the first entry, if any.
    fn first_index(&self, pos: &Pos<C>) -> Option<u64> {
        let off = pos.offset?;
        Some((self.log.first_lsn()? as i128 + off) as u64)
    }

    /// LSN of Raft index `index`, which must lie within the log.
    fn lsn(pos: &Pos<C>, index: u64) -> daxlog::Lsn {
        let off = pos.offset.expect("a non-empty log has an offset");
        (index as i128 - off) as daxlog::Lsn
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<C::Entry>, DaxError> {
        let pos = self.pos();
        let (Some(first), Some(last)) = (self.first_index(&pos), pos.last.as_ref()) else {
            return Ok(Vec::new());
        };
        let start = start.max(first);
        let end = end.min(last.index + 1);
        if start >= end {
            return Ok(Vec::new());
        }
        let n = (end - start) as usize;
        let mut out = Vec::with_capacity(n.min(4096));
        let from = Self::lsn(&pos, start);
        // A purge may run meanwhile: an entry that is gone is missing, never another one.
        for (want, e) in (from..).zip(self.log.iter_from(from).take(n)) {
            if e.lsn != want {
                return Err(DaxError::Missing(want));
            }
            out.push(serde_json::from_slice(&e.payload)?);
        }
        if out.len() != n {
            return Err(DaxError::Missing(from + out.len() as u64));
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
            payloads.push(serde_json::to_vec(e)?);
        }
        Ok(payloads)
    }

    /// Records that `entries` were appended at LSNs from `first_lsn` on.
    fn appended(&self, entries: &[C::Entry], first_lsn: daxlog::Lsn) {
        let mut pos = self.pos_mut();
        if let (None, Some(head)) = (pos.offset, entries.first()) {
            pos.offset = Some(head.get_log_id().index as i128 - first_lsn as i128);
        }
        if let Some(e) = entries.last() {
            pos.last = Some(e.get_log_id().clone());
        }
    }

    /// Deletes every entry with an index of at least `since`. Readers wait meanwhile (they
    /// must not read the entries that replace the deleted ones as the deleted ones).
    fn truncate_from(&self, since: u64) -> Result<(), DaxError> {
        let mut pos = self.pos_mut();
        let (Some(first), Some(last)) = (self.first_index(&pos), pos.last.as_ref()) else {
            return Ok(());
        };
        if since > last.index {
            return Ok(());
        }
        if since <= first {
            let first_lsn = Self::lsn(&pos, first);
            self.log.truncate_after(first_lsn - 1)?;
            pos.offset = None;
            pos.last = None;
        } else {
            let keep = Self::lsn(&pos, since) - 1;
            self.log.truncate_after(keep)?;
            pos.last = Some(self.decode(keep)?.get_log_id().clone());
        }
        Ok(())
    }

    /// Deletes every entry with an index of at most `upto`. Readers go on meanwhile (daxlog's
    /// prefix truncation runs beside them); only this store's `&mut self` methods append.
    fn purge_upto(&self, upto: u64) -> Result<(), DaxError> {
        let pos = self.pos();
        let (Some(first), Some(last)) = (self.first_index(&pos), pos.last.as_ref()) else {
            return Ok(());
        };
        if upto < first {
            return Ok(());
        }
        if upto >= last.index {
            self.log.reset()?;
            *self.pos_mut() = Pos {
                offset: None,
                last: None,
            };
        } else {
            let lsn = Self::lsn(&pos, upto + 1);
            self.log.truncate_before(lsn)?;
        }
        Ok(())
    }
}

/// openraft's [`RaftLogStorage`] on daxlog files; see the module documentation.
pub struct LogStore<C: RaftTypeConfig> {
    inner: Arc<Inner<C>>,
    meta_log: LatestRecord,
    meta: Meta<C::NodeId>,
    dir: PathBuf,
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
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
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
        if let Some(purged) = &meta.last_purged {
            inner.purge_upto(purged.index)?;
        }
        Ok(LogStore {
            inner: Arc::new(inner),
            meta_log,
            meta,
            dir: dir.to_path_buf(),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The persistence barrier daxlog uses for the Raft log.
    pub fn persistence(&self) -> daxlog::Persistence {
        self.inner.log.persistence()
    }

    /// Appends `entries` with one daxlog batch (one barrier), without a lock: only this store
    /// (through `&mut self`) appends, and readers see the new entries once `last` is updated,
    /// after the barrier.
    fn append_durably(&mut self, entries: &[C::Entry]) -> Result<(), DaxError> {
        if entries.is_empty() {
            return Ok(());
        }
        let payloads = self.inner.encode(entries)?;
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let lsns = self.inner.log.append_batch(&refs)?;
        self.inner.appended(entries, lsns.start);
        Ok(())
    }

    /// Durably replaces the metadata record; the in-memory copy changes only on success.
    fn save_meta(&mut self, meta: Meta<C::NodeId>) -> Result<(), DaxError> {
        self.meta_log.store(&meta)?;
        self.meta = meta;
        Ok(())
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
        let meta = Meta {
            committed,
            ..self.meta.clone()
        };
        self.save_meta(meta)
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
        let res = self.append_durably(&entries);
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
        self.inner
            .truncate_from(log_id.index)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), StorageError<C::NodeId>> {
        // Record the purge first: a crash before the log is truncated is finished by `open`.
        if self.meta.last_purged.as_ref() < Some(&log_id) {
            let meta = Meta {
                last_purged: Some(log_id.clone()),
                ..self.meta.clone()
            };
            self.save_meta(meta)
                .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        }
        self.inner
            .purge_upto(log_id.index)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::entry::RaftEntry;
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, Entry};

    use super::*;
    use crate::TypeConfig;

    fn lid(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// A crash after a purge was recorded in `meta.dax` but before `log.dax` was truncated:
    /// `open` finishes the purge.
    #[tokio::test]
    async fn open_finishes_an_interrupted_purge() {
        let dir = tempfile::tempdir().unwrap();
        let opts = LogStoreOptions::new().log_capacity(1 << 20);
        let mut store = LogStore::<TypeConfig>::open(dir.path(), &opts).unwrap();
        store
            .blocking_append((0..10).map(|i| Entry::<TypeConfig>::new_blank(lid(1, i))))
            .await
            .unwrap();
        // The first half of `purge`, alone.
        let meta = Meta {
            last_purged: Some(lid(1, 4)),
            ..store.meta.clone()
        };
        store.save_meta(meta).unwrap();
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
}
