//! A small key/value state machine with persistent snapshots, for the tests and the example.
//!
//! The state lives in memory; what makes it survive a restart is its snapshot: every snapshot
//! built or installed is written to `snapshot.json` in the node's directory (temporary file,
//! fsync, rename, directory fsync) before openraft hears of it, and `open` starts from it.
//! openraft then re-applies the committed entries past it from the log (the committed log id is
//! kept in `meta.dax`), and it only purges entries that a snapshot covers.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::files::{replace_file, DaxError};
use crate::watermark::SnapshotWatermark;
use crate::{NodeId, Request, Response, TypeConfig};

/// File name of the current snapshot inside a node's directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// The applied state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// Log id of the last applied entry.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    /// The data.
    pub data: BTreeMap<String, String>,
}

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// What `snapshot.json` holds.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: Meta,
    data: BTreeMap<String, String>,
}

struct Shared {
    state: Mutex<KvState>,
    /// The current snapshot: its meta and its bytes (the data, serialized).
    snapshot: Mutex<Option<(Meta, Vec<u8>)>>,
    dir: PathBuf,
    /// Snapshots built by this process, for unique snapshot ids.
    built: Mutex<u64>,
    /// The last log index of the snapshot on disk, for the log store's purges.
    durable: SnapshotWatermark,
}

/// The key/value state machine; see the module documentation.
#[derive(Clone)]
pub struct KvStateMachine {
    shared: Arc<Shared>,
}

/// Builds snapshots of a [`KvStateMachine`].
pub struct KvSnapshotBuilder {
    shared: Arc<Shared>,
    state: KvState,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn snap_err(e: impl Into<DaxError>, verb: ErrorVerb) -> StorageError<NodeId> {
    let e: DaxError = e.into();
    StorageIOError::new(ErrorSubject::Snapshot(None), verb, AnyError::new(&e)).into()
}

impl KvStateMachine {
    /// Opens the state machine of the node whose directory is `dir`, starting from its
    /// snapshot if it has one.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DaxError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(SNAPSHOT_FILE);
        let (state, snapshot) = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: SnapshotFile = serde_json::from_slice(&bytes)?;
                let state = KvState {
                    last_applied: f.meta.last_log_id,
                    last_membership: f.meta.last_membership.clone(),
                    data: f.data,
                };
                let bytes = serde_json::to_vec(&state.data)?;
                (state, Some((f.meta, bytes)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (KvState::default(), None),
            Err(e) => return Err(e.into()),
        };
        let durable = SnapshotWatermark::new(
            snapshot
                .as_ref()
                .and_then(|(meta, _)| meta.last_log_id.map(|l| l.index)),
        );
        Ok(KvStateMachine {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                snapshot: Mutex::new(snapshot),
                dir,
                built: Mutex::new(0),
                durable,
            }),
        })
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        lock(&self.shared.state).data.get(key).cloned()
    }

    /// A copy of the applied state.
    pub fn state(&self) -> KvState {
        lock(&self.shared.state).clone()
    }

    /// How far the snapshot on disk reaches; give it to [`crate::LogStore::open_with_snapshot`]
    /// so that the log is never purged past it.
    pub fn snapshot_watermark(&self) -> SnapshotWatermark {
        self.shared.durable.clone()
    }
}

impl Shared {
    /// Makes `meta` and `data` the current snapshot, on disk first.
    fn save_snapshot(
        &self,
        meta: &Meta,
        data: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>, DaxError> {
        let file = SnapshotFile {
            meta: meta.clone(),
            data: data.clone(),
        };
        replace_file(&self.dir.join(SNAPSHOT_FILE), &serde_json::to_vec(&file)?)?;
        let bytes = serde_json::to_vec(data)?;
        *lock(&self.snapshot) = Some((meta.clone(), bytes.clone()));
        self.durable.advance(meta.last_log_id.map(|l| l.index));
        Ok(bytes)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for KvSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let n = {
            let mut built = lock(&self.shared.built);
            *built += 1;
            *built
        };
        let snapshot_id = match &self.state.last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.last_membership.clone(),
            snapshot_id,
        };
        let bytes = self
            .shared
            .save_snapshot(&meta, &self.state.data)
            .map_err(|e| snap_err(e, ErrorVerb::Write))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for KvStateMachine {
    type SnapshotBuilder = KvSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let st = lock(&self.shared.state);
        Ok((st.last_applied, st.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut st = lock(&self.shared.state);
        let mut out = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            let previous = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Normal(Request::Set { key, value }) => st.data.insert(key, value),
                EntryPayload::Normal(Request::Delete { key }) => st.data.remove(&key),
                EntryPayload::Membership(m) => {
                    st.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    None
                }
            };
            out.push(Response { previous });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        KvSnapshotBuilder {
            shared: self.shared.clone(),
            state: lock(&self.shared.state).clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data: BTreeMap<String, String> =
            serde_json::from_slice(snapshot.get_ref()).map_err(|e| snap_err(e, ErrorVerb::Read))?;
        self.shared
            .save_snapshot(meta, &data)
            .map_err(|e| snap_err(e, ErrorVerb::Write))?;
        *lock(&self.shared.state) = KvState {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            data,
        };
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(lock(&self.shared.snapshot)
            .as_ref()
            .map(|(meta, bytes)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(bytes.clone())),
            }))
    }
}
