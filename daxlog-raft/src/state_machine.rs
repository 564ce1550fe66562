//! A small key/value state machine with a journal and persistent snapshots, for the tests, the
//! example and the node binary.
//!
//! [`Request::Set`] and [`Request::Delete`] change a map; [`Request::Append`] adds a record
//! `(journal index, data)` to the journal, and [`Request::AppendBatch`] one per item, which
//! [`KvStateMachine::journal_from`] reads; [`Request::TruncateJournal`] drops the records below
//! an index (but the last one), so that the journal, in memory and in every snapshot, holds
//! what its consumers still need rather than everything ever written.
//!
//! The state lives in memory; what makes it survive a restart is its snapshot: every snapshot
//! built or installed is written to `snapshot.bin` in the node's directory (temporary file,
//! fsync, rename, directory fsync; the format in [`crate::snapshot_file`]) before openraft
//! hears of it, and `open` starts from it.
//! openraft then re-applies the committed entries past it from the log (the committed log id is
//! kept in `meta.dax`), and it only purges entries that a snapshot covers.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::files::{create_dir_durably, remove_stale_tmp, replace_file_parts, sync_dir, DaxError};
use crate::journal::{Journal, Record};
use crate::watermark::SnapshotWatermark;
use crate::{lock, NodeId, Request, Response, Truncation, TypeConfig};

/// File name of the current snapshot inside a node's directory ([`crate::snapshot_file`]).
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// File name of the snapshot as earlier versions wrote it (one JSON document): read where no
/// [`SNAPSHOT_FILE`] exists, and removed once one is saved.
pub const LEGACY_SNAPSHOT_FILE: &str = "snapshot.json";

/// The applied state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    /// Log id of the last applied entry.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied.
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    /// The data.
    pub data: BTreeMap<String, String>,
    /// `(journal index, data)` of every record applied ([`Request::Append`], and each item of
    /// a [`Request::AppendBatch`]), in apply order, but those a [`Request::TruncateJournal`]
    /// dropped. A record's journal index is the larger of its Raft entry's log index and the
    /// journal's last index plus one: the log index itself while every entry holds one
    /// record, consecutive indexes for a batch's items, and increasing in apply order (a
    /// truncation keeps the last record). It depends only on the entries applied, so every
    /// node gives a record the same index.
    #[serde(default)]
    pub journal: Journal,
}

impl KvState {
    /// Adds `records`, applied from the entry at `log_index`, to the journal (see
    /// [`KvState::journal`] for their indexes); returns the first one's index (`None` if there
    /// are none).
    fn append_records(
        &mut self,
        log_index: u64,
        records: impl IntoIterator<Item = Vec<u8>>,
    ) -> Option<u64> {
        let mut first = None;
        for data in records {
            let index = match self.journal.last_index() {
                // (Saturating: log indexes are bounded far below, `crate::sane`.)
                Some(last) => log_index.max(last.saturating_add(1)),
                None => log_index,
            };
            first.get_or_insert(index);
            self.journal.push(index, data);
        }
        first
    }
}

type Meta = SnapshotMeta<NodeId, BasicNode>;

/// What a snapshot holds besides its meta: the map and the journal. A snapshot's bytes (kept
/// in memory, sent to followers) are this, encoded as log entries are ([`crate::codec`]:
/// postcard; serde_json from nodes of earlier versions).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Contents {
    data: BTreeMap<String, String>,
    /// Absent from snapshots written before the journal existed.
    #[serde(default)]
    journal: Journal,
}

/// What `snapshot.json` (written by earlier versions) holds: the meta, then the contents'
/// fields beside it.
#[derive(Deserialize)]
struct LegacySnapshotFile {
    meta: Meta,
    #[serde(flatten)]
    contents: Contents,
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
    /// Held while a snapshot is compared with the current one and written: a build and an
    /// installation never write at once, and an older snapshot never replaces a newer one.
    saving: Mutex<()>,
}

/// Journal records read together with the journal's bounds
/// ([`KvStateMachine::journal_page_within`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalPage {
    /// The records, in index order.
    pub records: Vec<Record>,
    /// The journal's first index (`None` if the journal is empty): a reader that asked from
    /// at least it missed nothing; below it, records may have been truncated
    /// ([`Request::TruncateJournal`]; indexes have gaps, so this does not prove a loss).
    pub first: Option<u64>,
    /// The log id of the last entry applied.
    pub applied: Option<LogId<NodeId>>,
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

fn snap_err(e: impl Into<DaxError>, verb: ErrorVerb) -> StorageError<NodeId> {
    let e: DaxError = e.into();
    StorageIOError::new(ErrorSubject::Snapshot(None), verb, AnyError::new(&e)).into()
}

impl KvStateMachine {
    /// Opens the state machine of the node whose directory is `dir`, starting from its
    /// snapshot if it has one.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, DaxError> {
        let dir = dir.as_ref().to_path_buf();
        create_dir_durably(&dir)?;
        let path = dir.join(SNAPSHOT_FILE);
        remove_stale_tmp(&path)?;
        remove_stale_tmp(&dir.join(LEGACY_SNAPSHOT_FILE))?;
        let (state, snapshot) = match read_snapshot(&dir)? {
            Some((meta, contents, bytes)) => {
                let state = KvState {
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership.clone(),
                    data: contents.data,
                    journal: contents.journal,
                };
                (state, Some((meta, bytes)))
            }
            None => (KvState::default(), None),
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
                saving: Mutex::new(()),
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

    /// At most `max` journal records with an index at least `from_index`, in index order.
    pub fn journal_from(&self, from_index: u64, max: usize) -> Vec<Record> {
        self.journal_page(from_index, max).0
    }

    /// [`KvStateMachine::journal_from`] and the log id of the last applied entry, read together.
    pub fn journal_page(
        &self,
        from_index: u64,
        max: usize,
    ) -> (Vec<Record>, Option<LogId<NodeId>>) {
        let page = self.journal_page_within(from_index, max, u64::MAX);
        (page.records, page.applied)
    }

    /// [`KvStateMachine::journal_page`] that also ends before the record that would take the
    /// records' data past `max_bytes` (never before the first record), with the journal's
    /// first index ([`JournalPage::first`]), all read together.
    pub fn journal_page_within(&self, from_index: u64, max: usize, max_bytes: u64) -> JournalPage {
        let st = lock(&self.shared.state);
        JournalPage {
            records: st.journal.page_within(from_index, max, max_bytes),
            first: st.journal.first_index(),
            applied: st.last_applied,
        }
    }

    /// The journal's next index ([`Journal::next_index`]).
    pub fn journal_next(&self) -> u64 {
        lock(&self.shared.state).journal.next_index()
    }

    /// How far the snapshot on disk reaches; give it to [`crate::LogStore::open_with_snapshot`]
    /// so that the log is never purged past it.
    pub fn snapshot_watermark(&self) -> SnapshotWatermark {
        self.shared.durable.clone()
    }
}

/// A snapshot read from disk: its meta, contents, and data bytes (the contents encoded).
type OnDiskSnapshot = (Meta, Contents, Vec<u8>);

/// The snapshot on disk in `dir`, from `snapshot.bin` or an earlier version's `snapshot.json`;
/// `None` if neither exists. Where both exist (a crash between the new file's rename and the
/// old one's removal; or a node run with an earlier version, which wrote `snapshot.json`,
/// after this one had written `snapshot.bin`), the one with the later last log id.
fn read_snapshot(dir: &Path) -> Result<Option<OnDiskSnapshot>, DaxError> {
    let bin = dir.join(SNAPSHOT_FILE);
    let new = read_file(&bin)?
        .map(|file| {
            let (meta, data) =
                crate::snapshot_file::decode::<Meta>(&file).map_err(|e| in_file(&bin, e))?;
            let contents =
                crate::codec::decode(data).map_err(|e| in_file(&bin, bad_data("its data", e)))?;
            Ok::<_, DaxError>((meta, contents, data.to_vec()))
        })
        .transpose()?;
    let json = dir.join(LEGACY_SNAPSHOT_FILE);
    let old = read_file(&json)?
        .map(|file| {
            let f: LegacySnapshotFile = serde_json::from_slice(&file)
                .map_err(|e| in_file(&json, bad_data("not a snapshot", e.into())))?;
            let bytes = crate::codec::encode(&f.contents)?;
            Ok::<_, DaxError>((f.meta, f.contents, bytes))
        })
        .transpose()?;
    Ok(match (new, old) {
        (Some(new), Some(old)) => {
            let newer = if old.0.last_log_id > new.0.last_log_id {
                old
            } else {
                new
            };
            tracing::warn!(
                dir = %dir.display(),
                starts_from = ?newer.0.last_log_id,
                "both {SNAPSHOT_FILE} and {LEGACY_SNAPSHOT_FILE}: starting from the later one"
            );
            Some(newer)
        }
        (new, old) => new.or(old),
    })
}

/// The bytes of the file at `path`; `None` if there is none. Other errors name the file.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, DaxError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())).into()),
    }
}

/// `e`, a snapshot file's error, with the file's path.
fn in_file(path: &Path, e: DaxError) -> DaxError {
    let why = match e {
        DaxError::BadSnapshot(why) => why,
        e => e.to_string(),
    };
    DaxError::BadSnapshot(format!("{}: {why}", path.display()))
}

/// `e`, an error decoding snapshot data, said of `what`.
fn bad_data(what: &str, e: DaxError) -> DaxError {
    let e = match e {
        // (codec speaks of log entries.)
        DaxError::UnknownEncoding { tag } => format!(
            "unknown encoding (first byte 0x{tag:02x}; known: 0x01 postcard, '{{' JSON): \
             written by a newer version?"
        ),
        DaxError::EmptyPayload => "empty".to_string(),
        DaxError::TrailingBytes { trailing } => {
            format!("{trailing} bytes after the encoded contents")
        }
        e => e.to_string(),
    };
    DaxError::BadSnapshot(format!("{what}: {e}"))
}

/// Whether `data`, a snapshot's bytes received from a leader, decodes as
/// [`KvStateMachine`]'s `install_snapshot` decodes it (checked before openraft takes the
/// snapshot: one that fails there stops the node's state machine for good).
pub(crate) fn check_snapshot_data(data: &[u8]) -> Result<(), DaxError> {
    crate::codec::decode::<Contents>(data)
        .map(drop)
        .map_err(|e| bad_data("snapshot data received", e))
}

impl Shared {
    /// Makes `meta` and `data` the current snapshot, on disk first, unless the current
    /// snapshot is at least as recent (its last log id is not older): a snapshot built from an
    /// older state never replaces one installed meanwhile. Returns the data, serialized.
    fn save_snapshot(&self, meta: &Meta, contents: &Contents) -> Result<Vec<u8>, DaxError> {
        let _saving = lock(&self.saving);
        let bytes = crate::codec::encode(contents)?;
        if let Some((current, _)) = lock(&self.snapshot).as_ref() {
            if current.last_log_id >= meta.last_log_id {
                tracing::debug!(
                    new = ?meta.last_log_id,
                    current = ?current.last_log_id,
                    "snapshot not newer than the current one: not kept"
                );
                return Ok(bytes);
            }
        }
        let (head, crc) = crate::snapshot_file::encode_parts(meta, &bytes)?;
        replace_file_parts(&self.dir.join(SNAPSHOT_FILE), &[&head, &bytes, &crc])?;
        // An earlier version's snapshot, older than this one: removed once this one is
        // durable. (If that fails, or is lost in a crash, `open` still takes this one, the
        // later: a warning, not an error, as this snapshot is saved.)
        let legacy = self.dir.join(LEGACY_SNAPSHOT_FILE);
        let removed = match std::fs::remove_file(&legacy) {
            Ok(()) => sync_dir(&legacy),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = removed {
            tracing::warn!(path = %legacy.display(), error = %e, "could not remove the earlier version's snapshot");
        }
        *lock(&self.snapshot) = Some((meta.clone(), bytes.clone()));
        self.durable.advance(meta.last_log_id.map(|l| l.index));
        Ok(bytes)
    }

    /// [`Shared::save_snapshot`] on a blocking thread (it writes and fsyncs a file); gives
    /// `contents` back with the serialized bytes.
    async fn save_snapshot_blocking(
        self: &Arc<Self>,
        meta: Meta,
        contents: Contents,
    ) -> Result<(Vec<u8>, Contents), DaxError> {
        let shared = self.clone();
        crate::log_store::blocking(move || {
            let bytes = shared.save_snapshot(&meta, &contents)?;
            Ok((bytes, contents))
        })
        .await
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
        let (bytes, _) = self
            .shared
            .save_snapshot_blocking(
                meta.clone(),
                Contents {
                    data: std::mem::take(&mut self.state.data),
                    journal: std::mem::take(&mut self.state.journal),
                },
            )
            .await
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
        let mut dropped = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            let mut response = Response::default();
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(Request::Set { key, value }) => {
                    response.previous = st.data.insert(key, value)
                }
                EntryPayload::Normal(Request::Delete { key }) => {
                    response.previous = st.data.remove(&key)
                }
                EntryPayload::Normal(Request::Append { data }) => {
                    response.journal_index = st.append_records(entry.log_id.index, [data]);
                }
                EntryPayload::Normal(Request::AppendBatch { items }) => {
                    response.journal_index = st.append_records(entry.log_id.index, items);
                }
                EntryPayload::Normal(Request::TruncateJournal { before }) => {
                    let next = st.journal.next_index();
                    response.truncation = Some(if before <= next {
                        dropped.push(st.journal.truncate_before(before));
                        Truncation::Done {
                            first: st.journal.first_index(),
                        }
                    } else {
                        Truncation::PastTheEnd { next }
                    });
                }
                EntryPayload::Membership(m) => {
                    st.last_membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            out.push(response);
        }
        drop(st);
        if dropped.iter().any(|d| !d.is_empty()) {
            // Freeing millions of records takes a while: not on the runtime's thread.
            tokio::task::spawn_blocking(move || drop(dropped));
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
        // Decoded off the runtime's threads, as it is written: a snapshot holds the whole
        // journal, and a node may run on one thread (the binary's default).
        let contents: Contents = crate::log_store::blocking(move || {
            crate::codec::decode(snapshot.get_ref())
                .map_err(|e| bad_data("snapshot data received", e))
        })
        .await
        .map_err(|e| snap_err(e, ErrorVerb::Read))?;
        let (_, contents) = self
            .shared
            .save_snapshot_blocking(meta.clone(), contents)
            .await
            .map_err(|e| snap_err(e, ErrorVerb::Write))?;
        let new = KvState {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            data: contents.data,
            journal: contents.journal,
        };
        let old = std::mem::replace(&mut *lock(&self.shared.state), new);
        // Freeing millions of records takes a while: not on the runtime's thread.
        tokio::task::spawn_blocking(move || drop(old));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        // A copy of the snapshot's bytes (the whole journal): made off the runtime's thread.
        let shared = self.shared.clone();
        let current = crate::log_store::blocking(move || Ok(lock(&shared.snapshot).clone()))
            .await
            .map_err(|e| snap_err(e, ErrorVerb::Read))?;
        Ok(current.map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, LogId, Membership};

    use super::*;

    fn lid(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn meta(index: u64, id: &str) -> Meta {
        SnapshotMeta {
            last_log_id: Some(lid(index)),
            last_membership: StoredMembership::new(None, Membership::new(vec![], ())),
            snapshot_id: id.to_string(),
        }
    }

    /// The snapshot in `snapshot.bin`.
    struct OnDisk {
        meta: Meta,
        contents: Contents,
    }

    fn on_disk(dir: &Path) -> OnDisk {
        let file = std::fs::read(dir.join(SNAPSHOT_FILE)).unwrap();
        let (meta, data) = crate::snapshot_file::decode::<Meta>(&file).unwrap();
        let contents = crate::codec::decode(data).unwrap();
        OnDisk { meta, contents }
    }

    /// A snapshot built from the state at index 5 finishes after one up to index 10 was
    /// installed: the installed one stays current, in memory and on disk.
    #[tokio::test]
    async fn an_older_built_snapshot_never_replaces_a_newer_installed_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let entries = (1..=5).map(|i| Entry::<TypeConfig> {
            log_id: lid(i),
            payload: EntryPayload::Normal(Request::Set {
                key: format!("k{i}"),
                value: "old".into(),
            }),
        });
        sm.apply(entries).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;

        let contents = Contents {
            data: BTreeMap::from([("installed".to_string(), "new".to_string())]),
            journal: Journal::new(),
        };
        let bytes = crate::codec::encode(&contents).unwrap();
        sm.install_snapshot(&meta(10, "from-leader"), Box::new(Cursor::new(bytes)))
            .await
            .unwrap();
        let built = builder.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, Some(lid(5)));

        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.snapshot_id, "from-leader");
        assert_eq!(on_disk(dir.path()).meta.snapshot_id, "from-leader");
        assert_eq!(sm.snapshot_watermark().get(), Some(10));
        drop(sm);
        let sm = KvStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.state().last_applied, Some(lid(10)));
        assert_eq!(sm.get("installed").as_deref(), Some("new"));
    }

    /// Writing a snapshot file (fsync) happens on a blocking thread: other tasks of a
    /// single-threaded runtime run meanwhile.
    #[tokio::test(flavor = "current_thread")]
    async fn snapshot_writes_run_off_the_runtime_thread() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let entry = Entry::<TypeConfig> {
            log_id: lid(1),
            payload: EntryPayload::Blank,
        };
        sm.apply([entry]).await.unwrap();
        for install in [false, true] {
            let ran = Arc::new(AtomicBool::new(false));
            let flag = ran.clone();
            tokio::spawn(async move { flag.store(true, Ordering::SeqCst) });
            if install {
                let bytes = crate::codec::encode(&Contents::default()).unwrap();
                sm.install_snapshot(&meta(7, "installed"), Box::new(Cursor::new(bytes)))
                    .await
                    .unwrap();
            } else {
                built(&mut sm).await;
            }
            assert!(ran.load(Ordering::SeqCst), "install {install}");
        }
        assert_eq!(on_disk(dir.path()).meta.snapshot_id, "installed");
    }

    /// Snapshots saved from several threads at once: every save succeeds, the file is always
    /// one whole snapshot, and the newest wins.
    #[test]
    fn concurrent_saves_keep_the_newest_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sm = KvStateMachine::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let shared = sm.shared.clone();
                std::thread::spawn(move || {
                    for round in 0..25u64 {
                        let index = round * 4 + t + 1;
                        let contents = Contents {
                            data: (0..200)
                                .map(|k| (format!("k{k}"), format!("snapshot {index}")))
                                .collect(),
                            journal: vec![(index, vec![t as u8; 64])].into(),
                        };
                        shared
                            .save_snapshot(&meta(index, &format!("s{index}")), &contents)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let file = on_disk(dir.path());
        assert_eq!(file.meta.snapshot_id, "s100");
        assert!(file.contents.data.values().all(|v| v == "snapshot 100"));
        assert_eq!(file.contents.journal.to_vec(), vec![(100, vec![3u8; 64])]);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![SNAPSHOT_FILE.to_string()]);
    }

    fn append(index: u64, data: &[u8]) -> Entry<TypeConfig> {
        Entry {
            log_id: lid(index),
            payload: EntryPayload::Normal(Request::Append {
                data: data.to_vec(),
            }),
        }
    }

    /// Appends land in the journal under their log index, in order, beside the map's
    /// requests; `journal_from` pages through it.
    #[tokio::test]
    async fn appends_fill_the_journal_in_index_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let set = Entry::<TypeConfig> {
            log_id: lid(3),
            payload: EntryPayload::Normal(Request::Set {
                key: "k".into(),
                value: "v".into(),
            }),
        };
        let blank = Entry::<TypeConfig> {
            log_id: lid(1),
            payload: EntryPayload::Blank,
        };
        let responses = sm
            .apply([
                blank,
                append(2, b"two"),
                set,
                append(4, b""),
                append(5, &[0, 255]),
            ])
            .await
            .unwrap();
        assert_eq!(responses.len(), 5);
        assert_eq!(sm.get("k").as_deref(), Some("v"));
        let all = vec![(2, b"two".to_vec()), (4, vec![]), (5, vec![0, 255])];
        assert_eq!(sm.journal_from(0, 1000), all);
        assert_eq!(sm.journal_from(3, 1000), all[1..]);
        assert_eq!(sm.journal_from(4, 1), all[1..2]);
        assert_eq!(sm.journal_from(6, 1000), vec![]);
        assert_eq!(sm.journal_from(0, 0), vec![]);
        let (page, applied) = sm.journal_page(5, 10);
        assert_eq!((page, applied), (all[2..].to_vec(), Some(lid(5))));
        let indexes: Vec<_> = responses.iter().map(|r| r.journal_index).collect();
        assert_eq!(indexes, vec![None, Some(2), None, Some(4), Some(5)]);
    }

    fn batch(index: u64, items: &[&[u8]]) -> Entry<TypeConfig> {
        Entry {
            log_id: lid(index),
            payload: EntryPayload::Normal(Request::AppendBatch {
                items: items.iter().map(|i| i.to_vec()).collect(),
            }),
        }
    }

    /// A batch's items take consecutive journal indexes from its entry's log index (or from
    /// the last index plus one, when earlier batches went past the log index); a single append
    /// after batches continues from the last; a state machine installed from a snapshot numbers
    /// the next records as the one the snapshot came from.
    #[tokio::test]
    async fn batches_take_consecutive_journal_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let head = || {
            vec![
                append(2, b"a"),
                batch(3, &[b"b", b"c", b"d"]),
                batch(4, &[b"e", b"f"]),
            ]
        };
        let tail = || {
            vec![
                append(5, b"g"),
                batch(6, &[]),
                append(20, b"h"),
                batch(21, &[b"i"]),
            ]
        };
        let mut sm = KvStateMachine::open(dir.path().join("a")).unwrap();
        let responses = sm.apply(head().into_iter().chain(tail())).await.unwrap();
        let indexes: Vec<_> = responses.iter().map(|r| r.journal_index).collect();
        assert_eq!(
            indexes,
            vec![Some(2), Some(3), Some(6), Some(8), None, Some(20), Some(21)]
        );
        let expect: Vec<(u64, Vec<u8>)> = [
            (2, "a"),
            (3, "b"),
            (4, "c"),
            (5, "d"),
            (6, "e"),
            (7, "f"),
            (8, "g"),
            (20, "h"),
            (21, "i"),
        ]
        .iter()
        .map(|(i, d)| (*i, d.as_bytes().to_vec()))
        .collect();
        assert_eq!(sm.journal_from(0, 100), expect);
        assert_eq!(sm.journal_from(5, 2), expect[3..5]);

        // The same entries after a snapshot of the first three: the same indexes.
        let mut other = KvStateMachine::open(dir.path().join("b")).unwrap();
        other.apply(head()).await.unwrap();
        let snapshot = built(&mut other).await;
        let mut third = KvStateMachine::open(dir.path().join("c")).unwrap();
        third
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        let responses = third.apply(tail()).await.unwrap();
        let indexes: Vec<_> = responses.iter().map(|r| r.journal_index).collect();
        assert_eq!(indexes, vec![Some(8), None, Some(20), Some(21)]);
        assert_eq!(third.journal_from(0, 100), expect);
    }

    /// The journal goes into the snapshot: built, written to disk, reopened, installed on
    /// another state machine from the snapshot's bytes.
    #[tokio::test]
    async fn the_journal_round_trips_through_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path().join("a")).unwrap();
        let records: Vec<(u64, Vec<u8>)> = (1..=20)
            .map(|i| (i, (0..i as u8).map(|b| b.wrapping_mul(37)).collect()))
            .collect();
        sm.apply(records.iter().map(|(i, d)| append(*i, d)))
            .await
            .unwrap();
        let snapshot = built(&mut sm).await;
        assert_eq!(snapshot.meta.last_log_id, Some(lid(20)));
        // The bytes sent to followers: postcard behind its tag, the same as on disk.
        let sent = snapshot.snapshot.get_ref();
        assert_eq!(sent[0], crate::codec::POSTCARD_V1);
        let file = std::fs::read(dir.path().join("a").join(SNAPSHOT_FILE)).unwrap();
        assert_eq!(
            crate::snapshot_file::decode::<Meta>(&file).unwrap().1,
            &sent[..]
        );
        assert_eq!(
            on_disk(&dir.path().join("a")).contents.journal.to_vec(),
            records
        );

        drop(sm);
        let reopened = KvStateMachine::open(dir.path().join("a")).unwrap();
        assert_eq!(reopened.journal_from(0, 100), records);
        assert_eq!(reopened.state().last_applied, Some(lid(20)));

        let mut other = KvStateMachine::open(dir.path().join("b")).unwrap();
        other
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(other.journal_from(0, 100), records);
        // Appends after the snapshot go on from there.
        other.apply([append(21, b"next")]).await.unwrap();
        assert_eq!(other.journal_from(20, 100).len(), 2);
        drop(other);
        let reopened = KvStateMachine::open(dir.path().join("b")).unwrap();
        assert_eq!(reopened.journal_from(0, 100), records);
    }

    /// A snapshot `sm` builds (and saves).
    async fn built(sm: &mut KvStateMachine) -> Snapshot<TypeConfig> {
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap()
    }

    fn truncate(index: u64, before: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: lid(index),
            payload: EntryPayload::Normal(Request::TruncateJournal { before }),
        }
    }

    /// A truncation drops the records below its index but the last one, and answers the first
    /// index left; one past the journal's next index drops nothing (repeated after more
    /// records, it would drop them), and one repeated drops nothing at or past its index; the
    /// records after it take indexes past every earlier one (a batch's items went past their
    /// entries' log indexes: numbering from the log index alone would give an index twice);
    /// snapshots hold what is left, and a node installed from one numbers the next record as
    /// the node it came from.
    #[tokio::test]
    async fn truncations_keep_the_numbering_and_travel_in_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path().join("a")).unwrap();
        let done = |first| Some(Truncation::Done { first: Some(first) });
        let rec = |i: u64, d: &[u8]| (i, d.to_vec());
        let answers = sm
            .apply([
                batch(1, &[b"a", b"b", b"c", b"d", b"e"]),
                append(2, b"f"),
                truncate(3, 4),
            ])
            .await
            .unwrap();
        assert_eq!(answers[2].truncation, done(4));
        let journal = sm.journal_from(0, 100);
        assert_eq!(journal, [rec(4, b"d"), rec(5, b"e"), rec(6, b"f")]);
        let answers = sm
            .apply([
                truncate(4, 7),
                append(5, b"g"),
                truncate(6, 9),
                truncate(7, u64::MAX),
            ])
            .await
            .unwrap();
        assert_eq!(answers[0].truncation, done(6), "the last record stays");
        assert_eq!(answers[1].journal_index, Some(7), "not 5");
        let past = Some(Truncation::PastTheEnd { next: 8 });
        assert_eq!((answers[2].truncation, answers[3].truncation), (past, past));
        assert_eq!(sm.journal_from(0, 100), [rec(6, b"f"), rec(7, b"g")]);
        // The truncation at 7 again: only what lies below 7.
        let answers = sm.apply([truncate(8, 7)]).await.unwrap();
        assert_eq!(answers[0].truncation, done(7));
        let page = sm.journal_page_within(0, 1, u64::MAX);
        assert_eq!(
            (page.records, page.first, page.applied),
            (vec![rec(7, b"g")], Some(7), Some(lid(8)))
        );

        let snapshot = built(&mut sm).await;
        assert_eq!(
            on_disk(&dir.path().join("a")).contents.journal.to_vec(),
            [rec(7, b"g")]
        );
        let mut other = KvStateMachine::open(dir.path().join("b")).unwrap();
        other
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        for node in [&mut sm, &mut other] {
            let answers = node
                .apply([append(9, b"h"), truncate(10, 10)])
                .await
                .unwrap();
            assert_eq!(answers[0].journal_index, Some(9));
            assert_eq!(answers[1].truncation, done(9));
            assert_eq!(node.journal_from(0, 100), [rec(9, b"h")]);
        }
        let mut empty = KvStateMachine::open(dir.path().join("c")).unwrap();
        let answers = empty.apply([truncate(1, 0), truncate(2, 1)]).await.unwrap();
        assert_eq!(
            answers[0].truncation,
            Some(Truncation::Done { first: None })
        );
        assert_eq!(
            answers[1].truncation,
            Some(Truncation::PastTheEnd { next: 0 })
        );
    }

    /// The longest time the runtime thread of a current-thread runtime went without running
    /// another task while `op` ran (a task that wakes every millisecond measures it).
    async fn longest_stall<F: std::future::Future>(op: F) -> (F::Output, std::time::Duration) {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let ticker = tokio::spawn(async move {
            let (mut longest, mut last) = (Duration::ZERO, Instant::now());
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(1)).await;
                longest = longest.max(last.elapsed());
                last = Instant::now();
            }
            longest
        });
        tokio::task::yield_now().await;
        let out = op.await;
        stop.store(true, Ordering::Relaxed);
        (out, ticker.await.unwrap())
    }

    /// A node runs on one thread by default, and snapshots are built often (by openraft's
    /// policy, and whenever the log is half full): with a journal of two million 64 B records
    /// (a minute or two of the node's benchmark load), taking a snapshot, building it, reading
    /// it back to send it and installing one must each leave the runtime thread free for
    /// heartbeats (100 ms) and elections (300 ms). (Heavy: 1 GB of memory, several seconds.)
    #[tokio::test(flavor = "current_thread")]
    async fn snapshots_of_a_large_journal_leave_the_runtime_thread_free() {
        const RECORDS: usize = 1_000_000;
        const LONGEST: std::time::Duration = std::time::Duration::from_millis(50);
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        let (mut index, mut left) = (1, RECORDS);
        while left > 0 {
            let n = left.min(1024);
            left -= n;
            sm.apply([batch(index, &vec![&[7u8; 64][..]; n])])
                .await
                .unwrap();
            index += 1;
        }
        let mut stalls = Vec::new();
        let (mut builder, stall) = longest_stall(sm.get_snapshot_builder()).await;
        stalls.push(("get_snapshot_builder", stall));
        let (built, stall) = longest_stall(builder.build_snapshot()).await;
        built.unwrap();
        stalls.push(("build_snapshot", stall));
        let (current, stall) = longest_stall(sm.get_current_snapshot()).await;
        let current = current.unwrap().unwrap();
        stalls.push(("get_current_snapshot", stall));
        let mut other = KvStateMachine::open(dir.path().join("other")).unwrap();
        other.apply([append(1, b"old")]).await.unwrap();
        let (installed, stall) =
            longest_stall(other.install_snapshot(&current.meta, current.snapshot)).await;
        installed.unwrap();
        stalls.push(("install_snapshot", stall));
        eprintln!("longest stalls of the runtime thread: {stalls:?}");
        assert!(
            stalls.iter().all(|(_, s)| *s < LONGEST),
            "the runtime thread stalled: {stalls:?}"
        );
    }

    /// A `snapshot.json` written before the journal existed (no `journal` field) still loads,
    /// with an empty journal.
    #[test]
    fn a_snapshot_file_without_a_journal_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = serde_json::json!({
            "meta": meta(7, "old"),
            "data": {"a": "1", "b": "2"},
        });
        std::fs::write(
            dir.path().join(LEGACY_SNAPSHOT_FILE),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        let sm = KvStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.get("b").as_deref(), Some("2"));
        assert_eq!(sm.journal_from(0, 10), vec![]);
        assert_eq!(sm.state().last_applied, Some(lid(7)));
        assert_eq!(sm.snapshot_watermark().get(), Some(7));
    }

    /// A node of an earlier version left `snapshot.json` (hexadecimal in JSON) and sends
    /// snapshots as JSON: both load. The first snapshot saved goes to `snapshot.bin` and
    /// removes the old file; reopened, the node starts from the new one.
    #[tokio::test]
    async fn snapshots_of_earlier_versions_load_and_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let file = serde_json::json!({
            "meta": meta(7, "old"),
            "data": {"a": "1"},
            "journal": [[5, "0a0b"], [7, ""]],
        });
        std::fs::write(
            dir.path().join(LEGACY_SNAPSHOT_FILE),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        assert_eq!(
            sm.journal_from(0, 10),
            vec![(5, vec![0x0a, 0x0b]), (7, vec![])]
        );
        // The current snapshot's bytes, sent to followers, are in the new encoding.
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.snapshot.get_ref()[0], crate::codec::POSTCARD_V1);

        // A leader of an earlier version sends its snapshot as JSON.
        let json = serde_json::to_vec(&serde_json::json!({
            "data": {"b": "2"},
            "journal": [[9, "ff"]],
        }))
        .unwrap();
        sm.install_snapshot(&meta(9, "from-old-leader"), Box::new(Cursor::new(json)))
            .await
            .unwrap();
        assert_eq!(sm.journal_from(0, 10), vec![(9, vec![0xff])]);
        assert!(!dir.path().join(LEGACY_SNAPSHOT_FILE).exists());
        assert_eq!(on_disk(dir.path()).meta.snapshot_id, "from-old-leader");
        drop(sm);
        let sm = KvStateMachine::open(dir.path()).unwrap();
        assert_eq!(sm.get("b").as_deref(), Some("2"));
        assert_eq!(sm.get("a"), None);
        assert_eq!(sm.snapshot_watermark().get(), Some(9));
    }

    /// A damaged `snapshot.bin` is refused at open with an error that says so; nothing is
    /// silently dropped or taken from the damaged bytes.
    #[tokio::test]
    async fn a_damaged_snapshot_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        sm.apply([append(1, &[3u8; 100])]).await.unwrap();
        built(&mut sm).await;
        drop(sm);
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut file = std::fs::read(&path).unwrap();
        let at = file.len() - 20;
        file[at] ^= 1;
        std::fs::write(&path, &file).unwrap();
        let err = KvStateMachine::open(dir.path())
            .err()
            .expect("a damaged snapshot opened");
        assert!(
            matches!(err, DaxError::BadSnapshot(_)) && err.to_string().contains("checksum"),
            "{err}"
        );
    }

    /// Writes an earlier version's `snapshot.json` at `index` into `dir`, with `key` set.
    fn write_legacy(dir: &Path, index: u64, key: &str) {
        let file = serde_json::json!({
            "meta": meta(index, &format!("json-{index}")),
            "data": {key: "json"},
            "journal": [[index, "00"]],
        });
        std::fs::write(
            dir.join(LEGACY_SNAPSHOT_FILE),
            serde_json::to_vec(&file).unwrap(),
        )
        .unwrap();
    }

    /// Builds a snapshot at `index` (a `Set` of `key` applied there) in `dir`: `snapshot.bin`.
    async fn write_bin(dir: &Path, index: u64, key: &str) {
        let mut sm = KvStateMachine::open(dir).unwrap();
        let set = Entry::<TypeConfig> {
            log_id: lid(index),
            payload: EntryPayload::Normal(Request::Set {
                key: key.into(),
                value: "bin".into(),
            }),
        };
        sm.apply([set]).await.unwrap();
        built(&mut sm).await;
    }

    /// Both files (a crash between the new file's rename and the old one's removal; or a node
    /// run with an earlier version after this one): `open` starts from the later snapshot,
    /// and removes the temporary files of both names.
    #[tokio::test]
    async fn with_both_files_the_later_snapshot_wins() {
        for (bin, json) in [(5, 3), (5, 9)] {
            let dir = tempfile::tempdir().unwrap();
            write_bin(dir.path(), bin, "b").await;
            write_legacy(dir.path(), json, "j");
            for tmp in ["snapshot.bin.tmp.1.0", "snapshot.json.tmp.2.7"] {
                std::fs::write(dir.path().join(tmp), b"half").unwrap();
            }
            let sm = KvStateMachine::open(dir.path()).unwrap();
            let later = bin.max(json);
            assert_eq!(
                sm.state().last_applied,
                Some(lid(later)),
                "bin {bin} json {json}"
            );
            assert_eq!(sm.snapshot_watermark().get(), Some(later));
            assert_eq!(sm.get("b").is_some(), bin > json);
            assert_eq!(sm.get("j").is_some(), json > bin);
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, vec![SNAPSHOT_FILE, LEGACY_SNAPSHOT_FILE]);
        }
    }

    /// The earlier version's file is removed only once the new one is in place: where the
    /// new one cannot be written (here `snapshot.bin` is a directory that is not empty, so the
    /// rename fails), the save fails and `snapshot.json` is still there.
    #[tokio::test]
    async fn the_earlier_snapshot_stays_until_the_new_one_is_written() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(dir.path(), 3, "j");
        let mut sm = KvStateMachine::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join(SNAPSHOT_FILE)).unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_FILE).join("x"), b"x").unwrap();
        sm.apply([append(4, b"new")]).await.unwrap();
        let built = sm.get_snapshot_builder().await.build_snapshot().await;
        assert!(built.is_err(), "a snapshot was saved over a directory");
        assert!(dir.path().join(LEGACY_SNAPSHOT_FILE).exists());
        assert_eq!(sm.snapshot_watermark().get(), Some(3));
    }
}
