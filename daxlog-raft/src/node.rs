//! A node of a cluster whose nodes are processes: its stores, its Raft, and one HTTP server
//! for the peer RPCs ([`crate::http`]) and the client, admin, metrics and test-hook API. The
//! `daxlog-raft-node` binary runs one [`Node`].
//!
//! # HTTP API
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /raft/append-entries`, `/raft/vote`, `/raft/install-snapshot` | binary (see [`crate::http`]) | binary |
//! | `POST /append` | the entry's raw bytes | `200 {"index":N}` once committed and applied here |
//! | `GET /read?from=I&max=N[&local=true]` | | `200 {"entries":[{"index":i,"data_hex":"…"}],"first":B,"applied":A,"next":F}` (`B`: the journal's first index, `null` if it is empty: a read from at least `B` missed nothing) |
//! | `POST /truncate` | `{"before":I}` | `200 {"first":B}` once committed: the journal's records below `I` are dropped on every node, but the last record ([`Request::TruncateJournal`]); `409 {"error":"past_the_end","next":N}`, not proposed, if `I` lies past the journal's next index `N` (last index + 1; 0 if empty) |
//! | `GET /metrics` | | `200 {"id","cluster_id","state","current_term","current_leader","last_log_index","last_applied","snapshot","purged","membership":{"voters","learners"},"replication","client_writes":{"entries","writes"},"log":{"data_bytes","used_bytes","batches_cut"}}` |
//! | `POST /admin/add-learner` | `{"id":2,"addr":"127.0.0.1:7002"}` | `200 {"index":N}` once the learner holds the log up to its membership entry `N`; `504 {"error":"learner_not_caught_up","addr":..}` if it does not within the request timeout (it stays a learner); `409 {"error":"wrong_node"}` if the node at `addr` says it is another node, `409 {"error":"other_cluster"}` if it belongs to another cluster (nothing changed) |
//! | `POST /admin/remove-nodes` | `{"ids":[9]}` | `200 {"index":N}` once learners `ids` left the membership; `400 bad_request` for no ids; ids not in the membership are already removed (none a member: `200 {"index":N,"not_members":[..]}`, `N` the membership in force, nothing written) |
//! | `POST /admin/change-membership` | `{"voters":[1,2,3]}` (and `"retain":true` to keep removed voters as learners) | `200 {"index":N}` once committed; `503 timeout` at the request timeout (the change goes on: repeat it until `200`; `409` while it is still in progress) |
//! | `POST /test/partition` (with `test_hooks` only, else `404`) | `{"blocked":[2,3]}` | `200 {"blocked":[2,3]}` |
//! | `POST /test/slow-snapshot` (with `test_hooks` only, else `404`) | `{"chunk_delay_ms":700}` | `200 {"chunk_delay_ms":700}`: each snapshot chunk received but the last waits this long before openraft takes it |
//!
//! **What an answer says about the write.** `200`: committed, at journal index `index` (the
//! index `/read` shows it under; not the Raft log index). `413 too_large`,
//! `421 not_leader` and `503 log_full`: not proposed, so never committed. `503 unavailable`,
//! `503 timeout` (not committed within the request timeout, default 10 s: e.g. a leader cut
//! off from the majority), `503 leader_changed` (proposed or queued, then this node stopped leading:
//! openraft may have removed the entry from its log as conflicting with a new leader's, while
//! another node still holds it) and a broken connection: **unknown**, the entry may be committed
//! later. A client that retries such a write may find it twice in the journal; the API has no
//! idempotency key, so a client that must not duplicate puts its own unique id in the entry and
//! checks with `/read` before retrying. `/read` returns at most [`MAX_READ_ENTRIES`] entries
//! and, past its first record, at most [`MAX_READ_BYTES`] of record data; `next` in its
//! answer is where to continue (the last index returned + 1, or `from` if none was).
//!
//! **Write groups.** The leader proposes client writes as Raft entries, at most
//! [`NodeOptions::writes_in_flight`] at a time (default [`DEFAULT_WRITES_IN_FLIGHT`]); the
//! `/append`s that arrive while they are in flight wait, and the next entry carries all of them
//! (a [`Request::AppendBatch`]), so that concurrent clients share the entry's append, its
//! replication round trip and its barriers. A lone write is a plain [`Request::Append`] and
//! waits for nothing. Every write in an entry gets its own journal index (consecutive; see
//! [`crate::KvState::journal`]), and the entry's failure is every one's. `/metrics` counts the
//! entries proposed and the writes they carried (`client_writes`).
//!
//! **Log pressure.** Every node snapshots and purges its own log while more than half of it is
//! in use ([`NodeOptions::purge_above_percent`]), whatever openraft's snapshot policy (which counts entries): its log's bytes decide,
//! not the leader's admission, which cannot see the followers' logs. A follower whose log is
//! still too full for its leader's entries takes those that fit and lags ([`crate::room`]);
//! `/metrics` shows its log's bytes in use and the batches it cut.
//!
//! A node keeps its id in `node.id` in its directory and holds a lock on that file while it
//! runs: a start with another `--id` on the directory, or a second process on it, is refused
//! before anything in the directory is touched.
//!
//! **Cluster id.** `init` on a store that is not initialized makes a new random cluster id
//! and keeps it in `cluster.id` ([`crate::identity`]) before the cluster's first entry; a
//! node without one adopts its leader's from the first `AppendEntries` or `InstallSnapshot`
//! it takes. Peers of another cluster are refused ([`crate::http::Refused::OtherCluster`]).
//! `init` on a store that is not initialized but whose id was adopted is an error.
//!
//! `/append` checks the write with the log store's [`Admission`] before proposing it: too
//! large, `413 {"error":"too_large","len","max"}`; log full, `503
//! {"error":"log_full","needed","free","reserve"}` (and a snapshot is triggered, after which
//! openraft purges the log); a body that cannot be read (bad chunked framing, a client gone),
//! `400 {"error":"unreadable_body"}`. `/read` without `local` is linearizable
//! (`Raft::ensure_linearizable`, so on the leader only); with `local=true` it reads this node's
//! applied state with no check. `/append`, linearizable `/read` and the admin routes answer
//! `421 {"error":"not_leader","leader":ID|null,"leader_addr":"host:port"|null}` on a node that
//! is not the leader; other failures are `503 {"error":"unavailable","detail":"…"}`, and a
//! refused membership change is `409 {"error":"membership","detail":"…"}`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, Raft, SnapshotPolicy};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::cluster::open_store_retrying;
use crate::http::{peer_router, HttpNetwork, Partition, SlowChunks};
use crate::identity::ClusterIdentity;
use crate::room::Room;
use crate::{
    lock, Admission, Admitted, KvStateMachine, LogStoreOptions, NodeId, ReadFence, Request,
    Truncation, TypeConfig, WriteRejected, COMMITTED_SAVE_EVERY,
};

/// The shortest time a leader gives one snapshot chunk's RPC, in milliseconds (openraft's
/// `install_snapshot_timeout`; the longest election timeout if that is longer). The last
/// chunk's RPC includes installing the snapshot: with 2 s, a follower receiving a 134 MB
/// snapshot installed it and the leader, timed out meanwhile, sent all of it again.
pub const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;

/// Errors of starting and stopping a node.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The largest snapshot chunk sent in one `InstallSnapshot` RPC, by default.
pub const DEFAULT_SNAPSHOT_CHUNK: u64 = 1 << 20;

/// How long `/append` and the admin routes wait, by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The most entries one `/read` returns (a larger `max` is lowered to it).
pub const MAX_READ_ENTRIES: usize = 10_000;

/// The most bytes of record data one `/read` returns (before hexadecimal): it ends before the
/// record that would pass them, but always returns at least one record.
pub const MAX_READ_BYTES: u64 = 4 << 20;

/// How many Raft entries of client writes the leader proposes at a time, by default.
pub const DEFAULT_WRITES_IN_FLIGHT: usize = 1;

/// The most client writes gathered into one Raft entry.
pub const MAX_WRITES_PER_ENTRY: usize = 1024;

/// The per cent of its log in use above which a node snapshots and purges it, by default.
pub const DEFAULT_PURGE_ABOVE: u8 = 50;

/// How often a node looks at how full its log is (see [`log_pressure`]).
const PRESSURE_CHECK: Duration = Duration::from_millis(10);

/// The file in a node's directory that holds its node id (and its lock while it runs).
pub const NODE_ID_FILE: &str = "node.id";

/// The file in a node's data directory that the running node holds locked (`flock`): empty,
/// never synced. (Hidden: a directory holding only it is still new.)
pub const LOCK_FILE: &str = ".node.lock";

/// How a node is started; [`NodeOptions::new`] gives the binary's defaults.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The node's id.
    pub id: NodeId,
    /// The address to listen on, `host:port` (port 0: any free port; [`Node::addr`] tells).
    pub listen: String,
    /// The node's directory: `log.dax`, `meta.dax`, and the state machine in `sm/`.
    pub data_dir: PathBuf,
    /// Initialize a cluster of this node alone, unless its store already has a vote or a log.
    pub init: bool,
    /// A snapshot every this many entries (`SnapshotPolicy::LogsSinceLast`).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (openraft's `max_in_snapshot_log_to_keep`);
    /// `None`: a quarter of `snapshot_every`, at most 1000.
    pub keep_after_snapshot: Option<u64>,
    /// The capacity of a new `log.dax`, in bytes (an existing one keeps its own).
    pub log_capacity: u64,
    /// The leader's heartbeat interval.
    pub heartbeat_ms: u64,
    /// The shortest election timeout.
    pub election_min_ms: u64,
    /// The longest election timeout.
    pub election_max_ms: u64,
    /// The largest snapshot chunk sent in one RPC (openraft's `snapshot_max_chunk_size`).
    pub snapshot_chunk_bytes: u64,
    /// Serve the `/test/*` routes.
    pub test_hooks: bool,
    /// How long `/append` and `/admin/change-membership` wait for their entry to be committed,
    /// and `/admin/add-learner` for the learner to catch up, before answering that the outcome
    /// is not known yet.
    pub request_timeout: Duration,
    /// How many Raft entries of client writes the leader has proposed and not seen committed
    /// at most (at least 1). `/append`s that arrive meanwhile wait, and the next entry takes
    /// all of them (up to [`MAX_WRITES_PER_ENTRY`] and the largest entry): see "Write groups"
    /// in the module documentation.
    pub writes_in_flight: usize,
    /// Snapshot and purge the log whenever more than this per cent of it is in use (default
    /// [`DEFAULT_PURGE_ABOVE`]), besides openraft's policy (`snapshot_every`); `None`: by
    /// openraft's policy only. See "Log pressure" in the module documentation.
    pub purge_above_percent: Option<u8>,
}

impl NodeOptions {
    /// Node `id` listening on `listen` with its files in `data_dir`; the other options take
    /// the binary's defaults.
    pub fn new(id: NodeId, listen: impl Into<String>, data_dir: impl AsRef<Path>) -> Self {
        NodeOptions {
            id,
            listen: listen.into(),
            data_dir: data_dir.as_ref().to_path_buf(),
            init: false,
            snapshot_every: 10_000,
            keep_after_snapshot: None,
            log_capacity: 64 << 20,
            heartbeat_ms: 100,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_chunk_bytes: DEFAULT_SNAPSHOT_CHUNK,
            test_hooks: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            writes_in_flight: DEFAULT_WRITES_IN_FLIGHT,
            purge_above_percent: Some(DEFAULT_PURGE_ABOVE),
        }
    }

    /// The openraft configuration these options give; refused if the heartbeat interval is 0
    /// (openraft would take it, and send heartbeats without pause).
    pub fn config(&self) -> Result<Config, Error> {
        if self.heartbeat_ms == 0 {
            return Err("the heartbeat interval (heartbeat_ms) must be at least 1 ms".into());
        }
        let config = Config {
            cluster_name: "daxlog-raft".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_min_ms,
            election_timeout_max: self.election_max_ms,
            // The last chunk's RPC also waits for the whole snapshot to be decoded, written
            // and synced (seconds for a journal of hundreds of MB); the leader sends the whole
            // snapshot again if that RPC times out.
            install_snapshot_timeout: self.election_max_ms.max(INSTALL_SNAPSHOT_TIMEOUT_MS),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self
                .keep_after_snapshot
                .unwrap_or((self.snapshot_every / 4).min(1_000)),
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

/// What the HTTP handlers share.
struct Shared {
    id: NodeId,
    raft: Raft<TypeConfig>,
    sm: KvStateMachine,
    admission: Admission<TypeConfig>,
    /// What this node's log can take of its leader's entries (the peer routes' too).
    room: Room,
    cluster: ClusterIdentity,
    partition: Partition,
    /// The `/test/slow-snapshot` hook's delay of each snapshot chunk received.
    slow_chunks: SlowChunks,
    request_timeout: Duration,
    /// `/append`s admitted and waiting for the write group ([`write_group`]).
    writes: mpsc::UnboundedSender<PendingWrite>,
    /// Raft entries the write group proposed, and the client writes they carried.
    entries_proposed: AtomicU64,
    writes_proposed: AtomicU64,
    /// The client of the admin routes' own requests to other nodes (who a learner is).
    http: reqwest::Client,
    /// Until it is passed, what a linearizable `/read` waits for besides openraft's read log
    /// id: this node was restored as leader, and its saved committed log id may lag writes it
    /// acknowledged ([`ReadFence`]).
    read_fence: std::sync::Mutex<Option<ReadFence>>,
}

/// An `/append` waiting for its Raft entry: its bytes, where its answer goes, and its
/// admission, held until its entry's `client_write` returned (the entry is in the log, or
/// failed), whether or not its client still waits: a write that waits in the queue is not in
/// the log yet, and its bytes must stay counted.
struct PendingWrite {
    data: Vec<u8>,
    answer: oneshot::Sender<WriteAnswer>,
    admitted: Admitted,
}

/// The answer to one `/append` of a write group: its journal index, or the failure's status
/// and body (an entry's failure is every write's in it).
type WriteAnswer = Result<u64, (StatusCode, Value)>;

/// A running node; see the module documentation.
pub struct Node {
    shared: Arc<Shared>,
    /// The node's directory, locked while the node runs.
    _claim: std::fs::File,
    addr: SocketAddr,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    write_group: JoinHandle<()>,
    log_pressure: JoinHandle<()>,
}

impl Node {
    /// Binds its address (before anything in its directory is created or changed: an address
    /// that is invalid or in use leaves the directory as it was), opens the node's stores
    /// (creating them the first time), starts its Raft and serves the HTTP API; with `init`,
    /// initializes a cluster of itself if its store is new. When it returns, the server
    /// accepts connections.
    pub async fn start(opts: NodeOptions) -> Result<Node, Error> {
        let config = Arc::new(opts.config()?);
        let listener = TcpListener::bind(&opts.listen)
            .await
            .map_err(|e| format!("cannot listen on {:?}: {e}", opts.listen))?;
        let addr = listener.local_addr()?;
        let (dir, id) = (opts.data_dir.clone(), opts.id);
        let claim = tokio::task::spawn_blocking(move || claim_data_dir(&dir, id)).await??;
        let cluster = ClusterIdentity::load(&opts.data_dir)?;
        let sm = KvStateMachine::open(opts.data_dir.join("sm"))?;
        // (The committed log id saved behind the commit: `/read` passes the store's read
        // fence.)
        let store_opts = LogStoreOptions::new()
            .log_capacity(opts.log_capacity)
            .committed_save_every(COMMITTED_SAVE_EVERY);
        let mut store = open_store_retrying(&opts.data_dir, &store_opts, &sm).await?;
        // Sized by the log opened: `log_capacity` only sizes a new one; an existing log keeps
        // the capacity it was made with.
        let space = store.space();
        if let Some(percent) = opts.purge_above_percent {
            // The leader takes client writes until its log is halfway from `percent` to full:
            // its followers, which hold the same entries and purge at the same mark, keep the
            // other half of what lies above it for a snapshot slower than the leader's.
            let data = space.data;
            let free = u128::from(data) * u128::from(100 - percent.min(100)) / 200;
            store.set_full_reserve((free as u64).max(data / 8));
        }
        let admission = store.admission();
        let read_fence = store.read_fence(opts.id);
        let partition = Partition::new();
        let heartbeat = Duration::from_millis(opts.heartbeat_ms);
        // (A follower refuses a batch it has no room for as unreachable: the leader sends
        // again within a heartbeat, well before the follower would start an election.)
        let network =
            HttpNetwork::new(opts.id, partition.clone(), cluster.clone())?.with_backoff(heartbeat);
        let raft = Raft::new(opts.id, config, network, store, sm.clone()).await?;

        if opts.init && !raft.is_initialized().await? {
            // A new cluster: a new id, durable before the first entry exists.
            let new = cluster.clone();
            let id = tokio::task::spawn_blocking(move || new.create()).await??;
            tracing::info!(cluster = id, "initializing a new cluster");
            let members = BTreeMap::from([(opts.id, BasicNode::new(addr.to_string()))]);
            match raft.initialize(members).await {
                Ok(()) => {}
                Err(RaftError::APIError(e)) => {
                    tracing::info!("not initialized: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }

        let (writes, pending) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            id: opts.id,
            raft: raft.clone(),
            sm,
            room: Room::new(admission.clone(), heartbeat),
            admission,
            cluster: cluster.clone(),
            partition: partition.clone(),
            slow_chunks: SlowChunks::new(),
            request_timeout: opts.request_timeout,
            writes,
            http: reqwest::Client::builder()
                .connect_timeout(crate::http::CONNECT_TIMEOUT)
                .build()?,
            entries_proposed: AtomicU64::new(0),
            writes_proposed: AtomicU64::new(0),
            read_fence: std::sync::Mutex::new(read_fence),
        });
        let write_group = tokio::spawn(write_group(
            shared.clone(),
            pending,
            opts.writes_in_flight.max(1),
        ));
        let log_pressure = match opts.purge_above_percent {
            Some(percent) => tokio::spawn(log_pressure(
                raft.clone(),
                shared.admission.clone(),
                shared.room.clone(),
                percent.min(100),
            )),
            None => tokio::spawn(async {}),
        };
        // A peer's append-entries batch holds at most what the log holds, and postcard is
        // no larger than the log's encoding.
        let max_peer_body = usize::try_from(space.capacity)
            .unwrap_or(usize::MAX)
            .saturating_add(opts.snapshot_chunk_bytes as usize)
            .saturating_add(1 << 20);
        let mut app = axum::Router::new()
            .route("/append", post(append).layer(DefaultBodyLimit::disable()))
            .route("/read", get(read))
            .route("/truncate", post(truncate))
            .route("/metrics", get(metrics))
            .route("/admin/add-learner", post(add_learner))
            .route("/admin/change-membership", post(change_membership))
            .route("/admin/remove-nodes", post(remove_nodes));
        if opts.test_hooks {
            app = app
                .route("/test/partition", post(set_partition))
                .route("/test/slow-snapshot", post(set_slow_snapshot));
        }
        let app = app.with_state(shared.clone()).merge(peer_router(
            opts.id,
            cluster,
            raft,
            partition,
            max_peer_body,
            shared.room.clone(),
            shared.slow_chunks.clone(),
        ));

        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Node {
            shared,
            _claim: claim,
            addr,
            stop_server: Some(stop_server),
            server: Some(server),
            write_group,
            log_pressure,
        })
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The address the node listens on (the one to give to `/admin/add-learner`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's Raft handle.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.shared.raft
    }

    /// The node's state machine.
    pub fn state_machine(&self) -> &KvStateMachine {
        &self.shared.sm
    }

    /// The ids this node is cut from ([`Partition`]; the `/test/partition` hook sets them).
    pub fn partition(&self) -> &Partition {
        &self.shared.partition
    }

    /// Resolves once this node's Raft has stopped by itself, with the reason: a fatal error
    /// (a storage error, such as a snapshot that could not be written; a panic in its core),
    /// or after `self.raft().shutdown()`. Never while it runs. (openraft 0.9 records a stop
    /// only when its core ends: a panic in one of its other tasks, such as a snapshot build,
    /// is not seen here.) After that the node answers no write (`421`, no leader) and takes
    /// no part in the cluster; the node binary then exits with the reason rather than stay up
    /// looking alive.
    pub async fn raft_stopped(&self) -> String {
        let mut metrics = self.shared.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "its core ended".to_string();
            }
        }
    }

    /// Shuts Raft down (its tasks end, its files stay), then stops the server: requests in
    /// progress get at most 5 s to finish.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let stopped = self.shared.raft.shutdown().await;
        self.write_group.abort();
        self.log_pressure.abort();
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
                Ok(joined) => joined??,
                Err(_) => {
                    tracing::warn!("HTTP requests still running after 5 s: dropped");
                    server.abort();
                }
            }
        }
        stopped?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.write_group.abort();
        self.log_pressure.abort();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Takes node `id`'s directory: locks its file [`LOCK_FILE`] (held for as long as the returned
/// handle is open: a second process is refused; not the directory itself, which daxlog locks
/// while it creates a log in it), then checks its `node.id` file: it must name
/// node `id`. A directory without one (or with an empty one, left by a crash during the first
/// start) is new if it holds nothing else (`lost+found` and hidden entries aside): the id is
/// then written to a temporary file, synced and renamed into place. A directory with files but
/// no id (made by a version that did not record ids) is refused: which node's it is must be
/// said by hand. All before anything else in the directory is read or changed: a node
/// started with another's files would answer for it with the wrong log.
fn claim_data_dir(dir: &Path, id: NodeId) -> Result<std::fs::File, Error> {
    crate::files::create_dir_durably(dir)?;
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(format!(
                "{}: in use by another process (a node runs on this directory)",
                dir.display()
            )
            .into())
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let path = dir.join(NODE_ID_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    match text.trim() {
        "" => {
            let tmp_prefix = format!("{NODE_ID_FILE}{}", crate::files::TMP_MARK);
            let others: Vec<String> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n != NODE_ID_FILE
                        && n != "lost+found"
                        && !n.starts_with('.')
                        && !n.starts_with(&tmp_prefix)
                })
                .collect();
            if !others.is_empty() {
                return Err(format!(
                    "{}: holds files ({}) but no node id in {NODE_ID_FILE}: if they are node \
                     {id}'s, write its id there (`echo {id} > {}`), then start again",
                    dir.display(),
                    others.join(", "),
                    path.display()
                )
                .into());
            }
            crate::files::remove_stale_tmp(&path)?;
            crate::files::replace_file(&path, format!("{id}\n").as_bytes())?;
            Ok(lock)
        }
        t if t.parse::<NodeId>().ok() == Some(id) => Ok(lock),
        t => Err(format!(
            "{}: holds the files of node {t:?}, not of node {id} (start that node with its own \
             --id, or give node {id} a directory of its own)",
            dir.display()
        )
        .into()),
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn unavailable(detail: impl std::fmt::Display) -> Response {
    let (status, body) = unavailable_body(detail);
    reply(status, body)
}

fn unavailable_body(detail: impl std::fmt::Display) -> (StatusCode, Value) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "unavailable", "detail": detail.to_string()}),
    )
}

/// What an item adds to a [`Request::AppendBatch`]'s encoding at most: its bytes and their
/// length (a varint of at most 10 bytes).
fn batch_item_len(data: &[u8]) -> u64 {
    data.len() as u64 + 10
}

/// A batch's encoding besides its items, at most: the variant and the item count (a varint),
/// and what [`Admission`] adds for the entry around it.
const BATCH_WRAPPING: u64 = 1 + 10 + 64;

/// Keeps the node's log from filling, on every node: while more than `percent` of its data
/// area is in use, or a leader's entries wait for room ([`Room::take_wanted`]), builds a
/// snapshot of what was applied (unless one newer than the last purge is there already), then
/// purges the log up to that snapshot, past the entries openraft keeps behind a snapshot
/// (`max_in_snapshot_log_to_keep`).
///
/// openraft's own policy counts entries (`--snapshot-every`), and the bytes of an entry vary
/// (a write group's entry carries many writes); a follower whose log fills lags (its
/// transport takes only the entries that fit: openraft 0.9 stops a node on any error of its
/// log store's `append`), and the leader's admission,
/// which keeps its own log from filling, cannot see the followers' logs. Each node here purges
/// its own log by its bytes. A leader's purge still waits for replication tasks that need the
/// entries (a follower catching up); meanwhile its admission refuses writes (`503 log_full`).
async fn log_pressure(
    raft: Raft<TypeConfig>,
    admission: Admission<TypeConfig>,
    room: Room,
    percent: u8,
) {
    let index = |l: Option<openraft::LogId<NodeId>>| l.map(|l| l.index);
    let mut interval = tokio::time::interval(PRESSURE_CHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The snapshot index when this node last asked for a snapshot, and when.
    let mut asked: Option<(Option<u64>, tokio::time::Instant)> = None;
    loop {
        interval.tick().await;
        let space = admission.space();
        // (Or a leader's entries wait for room, however little is in use.)
        if u128::from(space.used) * 100 <= u128::from(space.data) * u128::from(percent)
            && !room.take_wanted()
        {
            continue;
        }
        let (applied, snapshot, purged) = {
            let m = raft.metrics();
            let m = m.borrow();
            (index(m.last_applied), index(m.snapshot), index(m.purged))
        };
        let result = if snapshot > purged {
            raft.trigger().purge_log(snapshot.unwrap_or(0)).await
        } else if applied > snapshot {
            // Once per snapshot, unless the one asked for did not come within a second.
            let fresh =
                asked.is_some_and(|(at, when)| at == snapshot && when.elapsed().as_secs() < 1);
            if fresh {
                continue;
            }
            asked = Some((snapshot, tokio::time::Instant::now()));
            raft.trigger().snapshot().await
        } else {
            continue;
        };
        if result.is_err() {
            return; // Raft stopped.
        }
    }
}

/// The write group: takes the `/append`s waiting in `pending` and proposes them to Raft,
/// at most `in_flight` entries at a time, each entry every write that waits (up to
/// [`MAX_WRITES_PER_ENTRY`], and no larger than the largest entry [`Admission`] takes). One
/// write alone is a [`Request::Append`]; more are a [`Request::AppendBatch`]. Runs until the
/// node stops (the task is aborted).
async fn write_group(
    node: Arc<Shared>,
    mut pending: mpsc::UnboundedReceiver<PendingWrite>,
    in_flight: usize,
) {
    let permits = Arc::new(Semaphore::new(in_flight));
    let max_entry = node.admission.max_entry_bytes();
    let mut next: Option<PendingWrite> = None;
    loop {
        // The permit first: while every permit is out, writes queue up for the next entry.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match next.take() {
            Some(w) => w,
            None => match pending.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        let mut len = BATCH_WRAPPING + batch_item_len(&first.data);
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES_PER_ENTRY {
            let Ok(w) = pending.try_recv() else { break };
            let item = batch_item_len(&w.data);
            if len + item > max_entry {
                next = Some(w);
                break;
            }
            len += item;
            batch.push(w);
        }
        let node = node.clone();
        tokio::spawn(async move {
            node.propose(batch).await;
            drop(permit);
        });
    }
}

impl Shared {
    /// Waits, for a linearizable read whose read log id is `read`, until this node passed its
    /// [`ReadFence`] (if it has one left): `503 unavailable` if it did not within the request
    /// timeout.
    async fn pass_read_fence(
        &self,
        read: Option<&openraft::LogId<NodeId>>,
    ) -> Result<(), Response> {
        let Some(fence) = *lock(&self.read_fence) else {
            return Ok(());
        };
        let applied = self.raft.metrics().borrow().last_applied.map(|l| l.index);
        if !fence.passed(read, applied) {
            self.raft
                .wait(Some(self.request_timeout))
                .applied_index_at_least(Some(fence.index), "the read fence of a restored leader")
                .await
                .map_err(|e| unavailable(format!("restored as leader, not caught up yet: {e}")))?;
        }
        *lock(&self.read_fence) = None;
        Ok(())
    }

    /// `421 not_leader`, naming the leader openraft named, or else the one this node knows.
    fn not_leader(&self, hint: Option<&ForwardToLeader<NodeId, BasicNode>>) -> Response {
        let (status, body) = self.not_leader_body(hint);
        reply(status, body)
    }

    fn not_leader_body(
        &self,
        hint: Option<&ForwardToLeader<NodeId, BasicNode>>,
    ) -> (StatusCode, Value) {
        let m = self.raft.metrics().borrow().clone();
        let leader = hint.and_then(|f| f.leader_id).or(m.current_leader);
        let addr = hint
            .and_then(|f| f.leader_node.as_ref().map(|n| n.addr.clone()))
            .or_else(|| {
                leader.and_then(|l| {
                    m.membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone())
                })
            });
        (
            StatusCode::MISDIRECTED_REQUEST,
            json!({"error": "not_leader", "leader": leader, "leader_addr": addr}),
        )
    }

    /// Confirms with a quorum that this node leads, and waits until it applied all it had
    /// committed then ([`Raft::ensure_linearizable`]): its membership and its journal are then
    /// the cluster's, for answers made from them without proposing anything. A leader cut off
    /// from the others keeps saying it leads (openraft 0.9 does not step it down) while
    /// another one was elected. The error is the answer to send.
    async fn confirm_leading(&self) -> Result<(), Response> {
        match tokio::time::timeout(self.request_timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(read)) => self.pass_read_fence(read.as_ref()).await,
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(self.not_leader(Some(&f)))
            }
            Ok(Err(RaftError::APIError(e))) => Err(unavailable(e)),
            Ok(Err(RaftError::Fatal(e))) => Err(unavailable(e)),
            Err(_) => Err(unavailable(format!(
                "no quorum confirmed this node's leadership within {:?}",
                self.request_timeout
            ))),
        }
    }

    fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state.is_leader() && m.current_leader == Some(self.id)
    }

    /// [`Shared::proposal_error_body`] as a response.
    fn proposal_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> Response {
        let (status, body) = self.proposal_error_body(e);
        reply(status, body)
    }

    /// The answer to a proposal openraft failed, made on a node that was leading when it was
    /// asked: `ForwardToLeader` then means that this node stopped leading after the entry was
    /// proposed or queued. The entry may be in its log and a follower's, and have been removed
    /// here as conflicting with a new leader's; in a cluster of five or more, another node
    /// holding it may still be elected and commit it. Unknown (`503 leader_changed`), unlike
    /// the `421` of a request never proposed.
    fn proposal_error_body(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> (StatusCode, Value) {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                let (_, mut body) = self.not_leader_body(Some(&f));
                body["error"] = json!("leader_changed");
                body["detail"] = json!(
                    "this node stopped leading after the request was proposed or queued; another \
                     leader may still commit it"
                );
                (StatusCode::SERVICE_UNAVAILABLE, body)
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => (
                StatusCode::CONFLICT,
                json!({"error": "membership", "detail": e.to_string()}),
            ),
            RaftError::Fatal(e) => unavailable_body(e),
        }
    }

    /// `503 timeout` for a write not committed within the request timeout.
    fn write_timeout(&self) -> (StatusCode, Value) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "error": "timeout",
                "detail": format!(
                    "not committed within {:?} (no quorum?); the entry may still be committed later",
                    self.request_timeout
                ),
            }),
        )
    }

    /// Proposes `request` and waits, up to the request timeout, until it is committed and
    /// applied here: what applying it answered, or the error answer for the client.
    async fn write(&self, request: Request) -> Result<crate::Response, (StatusCode, Value)> {
        let outcome = tokio::time::timeout(self.request_timeout, self.raft.client_write(request));
        match outcome.await {
            Ok(Ok(resp)) => Ok(resp.data),
            // Handed to Raft, then this node was not (or no longer) the leader: the entry may
            // be in its log and a follower's, and have been removed here as conflicting with a
            // new leader's; in a cluster of five or more, another node holding it may still
            // be elected and commit it. Unknown, unlike the `421` of a write never proposed.
            Ok(Err(e)) => Err(self.proposal_error_body(e)),
            Err(_) => Err(self.write_timeout()),
        }
    }

    /// The answer to a write its admission refused (a full log also triggers a snapshot,
    /// after which openraft purges the log).
    async fn refused(&self, rejected: WriteRejected) -> Response {
        match rejected {
            WriteRejected::TooLarge { len, max } => reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "too_large", "len": len, "max": max}),
            ),
            WriteRejected::LogFull {
                needed,
                free,
                reserve,
            } => {
                if let Err(e) = self.raft.trigger().snapshot().await {
                    tracing::warn!("snapshot not triggered: {e}");
                }
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "log_full", "needed": needed, "free": free, "reserve": reserve}),
                )
            }
        }
    }

    /// Proposes one Raft entry of `batch` (a plain [`Request::Append`] for one write) and
    /// answers every write in it: its journal index once the entry is committed and applied
    /// here, or the entry's failure.
    async fn propose(&self, batch: Vec<PendingWrite>) {
        let mut items = Vec::with_capacity(batch.len());
        let mut answers = Vec::with_capacity(batch.len());
        let mut admitted = Vec::with_capacity(batch.len());
        for w in batch {
            items.push(w.data);
            answers.push(w.answer);
            admitted.push(w.admitted);
        }
        self.entries_proposed.fetch_add(1, Ordering::Relaxed);
        self.writes_proposed
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let request = match items.len() {
            1 => Request::Append {
                data: items.pop().unwrap_or_default(),
            },
            _ => Request::AppendBatch { items },
        };
        let answer: WriteAnswer = self.write(request).await.and_then(|applied| {
            applied
                .journal_index
                .ok_or_else(|| unavailable_body("the applied entry reported no journal index"))
        });
        // The entry was appended to this log (its bytes count there now), or it failed.
        drop(admitted);
        for (i, to) in answers.into_iter().enumerate() {
            // A client that gave up (its request timed out) no longer listens: nothing to do.
            let _ = to.send(answer.clone().map(|first| first.saturating_add(i as u64)));
        }
    }
}

/// `POST /append`: the body is the entry.
async fn append(State(node): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if !node.is_leader() {
        return node.not_leader(None);
    }
    // Nothing longer than the largest entry can be taken. A body up to 1 MiB longer is read
    // whole before the refusal, so that the client gets the answer rather than a connection
    // closed while it still sends; a longer one is refused unread (the connection is closed).
    let max = node.admission.max_entry_bytes();
    let too_large = |len: u64| {
        reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "too_large", "len": len, "max": max}),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read_limit = max.saturating_add(1 << 20);
    if let Some(len) = declared.filter(|len| *len > read_limit) {
        return too_large(len);
    }
    let data = match read_body(body, read_limit).await {
        Ok(data) if data.len() as u64 > max => return too_large(data.len() as u64),
        Ok(data) => data,
        Err(BodyError::TooLong { read }) => return too_large(read),
        // Bad framing (a malformed chunk), a body shorter than its length, a client gone: not
        // a write that is too large, but none at all.
        Err(BodyError::Unreadable(e)) => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"error": "unreadable_body", "detail": e.to_string()}),
            )
        }
    };
    let request = Request::Append { data };
    // Held until the write's entry was proposed and its `client_write` returned (in
    // `Shared::propose`), even if this request ends first: concurrent writes are counted
    // together (a write group's entry needs less room than its writes did one by one).
    let admitted = match node.admission.admit(&request) {
        Ok(admitted) => admitted,
        Err(rejected) => return node.refused(rejected).await,
    };
    let Request::Append { data } = request else {
        unreachable!("built as an append above")
    };
    let (answer, answered) = oneshot::channel();
    let write = PendingWrite {
        data,
        answer,
        admitted,
    };
    if node.writes.send(write).is_err() {
        return unavailable("the node is stopping");
    }
    let (status, body) = match tokio::time::timeout(node.request_timeout, answered).await {
        Ok(Ok(Ok(index))) => (StatusCode::OK, json!({"index": index})),
        Ok(Ok(Err(failure))) => failure,
        Ok(Err(_)) => unavailable_body("the node is stopping; the entry may still be committed"),
        Err(_) => node.write_timeout(),
    };
    reply(status, body)
}

/// Why a request body was not read whole.
#[derive(Debug)]
enum BodyError {
    /// It is longer than the limit: `read` bytes (at least) arrived when reading stopped.
    TooLong { read: u64 },
    /// It cannot be read: malformed framing, or the connection failed.
    Unreadable(axum::Error),
}

/// `body`, read whole if it is at most `limit` bytes long.
async fn read_body(body: Body, limit: u64) -> Result<Vec<u8>, BodyError> {
    use axum::body::HttpBody;
    let mut body = body;
    let mut data = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else {
            return Ok(data);
        };
        let Ok(chunk) = frame.map_err(BodyError::Unreadable)?.into_data() else {
            continue; // (trailers)
        };
        let read = (data.len() as u64).saturating_add(chunk.len() as u64);
        if read > limit {
            return Err(BodyError::TooLong { read });
        }
        data.extend_from_slice(&chunk);
    }
}

#[derive(Deserialize)]
struct ReadQuery {
    #[serde(default)]
    from: u64,
    #[serde(default = "default_max")]
    max: usize,
    #[serde(default)]
    local: bool,
}

fn default_max() -> usize {
    1000
}

/// `GET /read`.
async fn read(State(node): State<Arc<Shared>>, Query(q): Query<ReadQuery>) -> Response {
    if !q.local {
        if let Err(answer) = node.confirm_leading().await {
            return answer;
        }
    }
    let max = q.max.min(MAX_READ_ENTRIES);
    let page = node.sm.journal_page_within(q.from, max, MAX_READ_BYTES);
    let next = page
        .records
        .last()
        .map_or(q.from, |(index, _)| index.saturating_add(1));
    let entries: Vec<Value> = page
        .records
        .iter()
        .map(|(index, data)| json!({"index": index, "data_hex": hex::encode(data)}))
        .collect();
    reply(
        StatusCode::OK,
        json!({
            "entries": entries,
            "first": page.first,
            "applied": page.applied.map(|l| l.index),
            "next": next,
        }),
    )
}

#[derive(Deserialize)]
struct Truncate {
    before: u64,
}

/// `POST /truncate`: drops the journal's records below `before`, but the last record; a
/// `before` past the journal's next index is refused before it is proposed (`409
/// past_the_end`).
async fn truncate(State(node): State<Arc<Shared>>, Json(req): Json<Truncate>) -> Response {
    if !node.is_leader() {
        return node.not_leader(None);
    }
    // Refused before it is proposed, so that its outcome is never unknown: proposed, it
    // drops only records that exist now (later ones take indexes at or past `next`), and a
    // client's retry of it drops nothing written meanwhile. (After a quorum confirmed this
    // node's lead and it applied what was committed: a new leader's journal may lag.)
    if let Err(answer) = node.confirm_leading().await {
        return answer;
    }
    let next = node.sm.journal_next();
    if req.before > next {
        return past_the_end(req.before, next);
    }
    let request = Request::TruncateJournal { before: req.before };
    let admitted = match node.admission.admit(&request) {
        Ok(admitted) => admitted,
        Err(rejected) => return node.refused(rejected).await,
    };
    let outcome = node.write(request).await;
    drop(admitted);
    let (status, body) = match outcome.map(|applied| applied.truncation) {
        Ok(Some(Truncation::Done { first })) => (StatusCode::OK, json!({"first": first})),
        // (Not after the check above: the journal only grows.)
        Ok(Some(Truncation::PastTheEnd { next })) => return past_the_end(req.before, next),
        Ok(None) => unavailable_body("the applied entry reported no truncation"),
        Err(failure) => failure,
    };
    reply(status, body)
}

/// `409 past_the_end`: a truncation at `before`, past the journal's next index `next`.
fn past_the_end(before: u64, next: u64) -> Response {
    reply(
        StatusCode::CONFLICT,
        json!({
            "error": "past_the_end",
            "next": next,
            "detail": format!(
                "nothing was dropped: {before} lies past the journal's next index {next} (its \
                 last index + 1); truncate at most there"
            ),
        }),
    )
}

/// `GET /metrics`.
async fn metrics(State(node): State<Arc<Shared>>) -> Response {
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    let replication = m.replication.as_ref().map(|r| {
        r.iter()
            .map(|(id, matched)| (id.to_string(), json!(matched.map(|l| l.index))))
            .collect::<serde_json::Map<String, Value>>()
    });
    let space = node.admission.space();
    reply(
        StatusCode::OK,
        json!({
            "id": m.id,
            "cluster_id": node.cluster.get(),
            "state": format!("{:?}", m.state),
            "current_term": m.current_term,
            "current_leader": m.current_leader,
            "last_log_index": m.last_log_index,
            "last_applied": m.last_applied.map(|l| l.index),
            "snapshot": m.snapshot.map(|l| l.index),
            "purged": m.purged.map(|l| l.index),
            "membership": {"voters": voters, "learners": learners},
            "replication": replication,
            "client_writes": {
                "entries": node.entries_proposed.load(Ordering::Relaxed),
                "writes": node.writes_proposed.load(Ordering::Relaxed),
            },
            "log": {
                "data_bytes": space.data,
                "used_bytes": space.used,
                "batches_cut": node.room.batches_cut(),
            },
        }),
    )
}

/// `host:port` with a host and a port from 1 to 65535 in digits (a name of letters, digits,
/// `-`, `.` and `_`, an IPv4 address, or an IPv6 address in brackets, without a zone): what
/// peers connect to.
fn is_host_port(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            let host_ok = if let Some(inner) = host.strip_prefix('[') {
                inner
                    .strip_suffix(']')
                    .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
            } else {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            };
            let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            host_ok && digits && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

#[derive(Deserialize)]
struct AddLearner {
    id: NodeId,
    addr: String,
}

/// `POST /admin/add-learner`: answers once the learner holds the log up to its membership
/// entry, or at the request timeout.
async fn add_learner(State(node): State<Arc<Shared>>, Json(req): Json<AddLearner>) -> Response {
    node.add_learner(req).await
}

impl Shared {
    async fn add_learner(&self, req: AddLearner) -> Response {
        // Not openraft's "blocking" add: it waits (for ever) until the learner is within
        // openraft's replication lag threshold (thousands of entries), which a learner that
        // received nothing at all may be. Waited for below instead: until it holds the log up
        // to its own membership entry, bounded by the caller.
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        if !self.is_leader() {
            return self.not_leader(None);
        }
        if !is_host_port(&req.addr) {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": "bad_request",
                    "detail": format!("{:?} is not an address (host:port, port 1-65535)", req.addr),
                }),
            );
        }
        if let Err(answer) = self.confirm_leading().await {
            return answer;
        }
        let is_voter = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == req.id);
        if is_voter {
            return reply(
                StatusCode::CONFLICT,
                json!({
                    "error": "membership",
                    "detail": format!(
                        "node {} is a voter: a voter is not added as a learner (its address \
                         does not change this way)",
                        req.id
                    ),
                }),
            );
        }
        if let Some(refused) = self.learner_identity(req.id, &req.addr).await {
            return refused;
        }
        let add = self
            .raft
            .add_learner(req.id, BasicNode::new(req.addr.clone()), false);
        let resp = match tokio::time::timeout_at(deadline, add).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => return self.proposal_error(e),
            Err(_) => {
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({
                        "error": "timeout",
                        "detail": format!(
                            "the learner's membership entry was not committed within {:?} (no \
                             quorum?); it may still be committed later",
                            self.request_timeout
                        ),
                    }),
                )
            }
        };
        let (index, id) = (resp.log_id.index, req.id);
        let caught_up = self
            .raft
            .wait(Some(
                deadline.saturating_duration_since(tokio::time::Instant::now()),
            ))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten())
                        .is_some_and(|l| l.index >= index)
                },
                format!("learner {id} catches up"),
            )
            .await;
        match caught_up {
            Ok(_) => reply(StatusCode::OK, json!({"index": index})),
            Err(e) => {
                let m = self.raft.metrics().borrow().clone();
                let addr = m
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone());
                reply(
                    StatusCode::GATEWAY_TIMEOUT,
                    json!({
                        "error": "learner_not_caught_up",
                        "addr": addr,
                        "detail": format!(
                            "node {id} is a learner at {addr:?} but did not receive the log up \
                             to {index} ({e}): if it runs there, it is still catching up \
                             (watch replication in /metrics); if the address is wrong, remove it \
                             with /admin/remove-nodes and add it again"
                        ),
                    }),
                )
            }
        }
    }
}

impl Shared {
    /// Asks the node at `addr` who it is (its `GET /metrics`, within a second): `409
    /// other_cluster` if it belongs to another cluster (its server would refuse this one's
    /// RPCs), `409 wrong_node` if it says it is another node than `id` (two ids at one address would let
    /// one node vote for both; its server would refuse the RPCs meant for `id` anyway, see
    /// [`crate::http::Refused`]). `None` if it is node `id`, or if it does not answer (it may
    /// be started later: the learner is added, and `add-learner` reports whether it caught up).
    async fn learner_identity(&self, id: NodeId, addr: &str) -> Option<Response> {
        let resp = self
            .http
            .get(format!("http://{addr}/metrics"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        let body = resp.bytes().await.ok()?;
        let m: Value = serde_json::from_slice(&body).ok()?;
        let theirs = m["cluster_id"].as_str();
        if theirs.is_some() && theirs != self.cluster.get().as_deref() {
            return Some(reply(
                StatusCode::CONFLICT,
                json!({
                    "error": "other_cluster",
                    "detail": format!(
                        "the node at {addr} belongs to cluster {}, not to this one ({}): a \
                         node joins a cluster only with an empty directory (started without \
                         --init)",
                        theirs.unwrap_or_default(),
                        self.cluster.get().unwrap_or_else(|| "none".into())
                    ),
                }),
            ));
        }
        let other = m["id"].as_u64().filter(|other| *other != id)?;
        Some(reply(
            StatusCode::CONFLICT,
            json!({
                "error": "wrong_node",
                "detail": format!(
                    "the node at {addr} is node {other}, not node {id}: give node {id} the \
                     address it listens on"
                ),
            }),
        ))
    }
}

#[derive(Deserialize)]
struct ChangeMembership {
    voters: BTreeSet<NodeId>,
    #[serde(default)]
    retain: bool,
}

/// `POST /admin/change-membership`: answers once the new membership is committed.
async fn change_membership(
    State(node): State<Arc<Shared>>,
    Json(req): Json<ChangeMembership>,
) -> Response {
    let change = ChangeMembers::ReplaceAllVoters(req.voters);
    node.membership_change(change, req.retain).await
}

#[derive(Deserialize)]
struct RemoveNodes {
    ids: BTreeSet<NodeId>,
}

/// `POST /admin/remove-nodes`: removes learners (a voter must first leave the voters); an
/// empty list is `400 bad_request`; ids that are not in the membership are already removed
/// (if none of the ids is, `200` with the index of the membership in force, nothing written).
async fn remove_nodes(State(node): State<Arc<Shared>>, Json(req): Json<RemoveNodes>) -> Response {
    // (Before the look at the membership below: a follower's may be stale.)
    if !node.is_leader() {
        return node.not_leader(None);
    }
    if req.ids.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "bad_request", "detail": "no node ids to remove"}),
        );
    }
    // (A leader cut off from the others may still say it leads, with a membership older than
    // the cluster's.)
    if let Err(answer) = node.confirm_leading().await {
        return answer;
    }
    let (voters, learners, index, applied) = {
        let m = node.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().collect::<BTreeSet<NodeId>>(),
            membership.learner_ids().collect::<BTreeSet<NodeId>>(),
            m.membership_config.log_id().map_or(0, |l| l.index),
            m.last_applied.map_or(0, |l| l.index),
        )
    };
    if index > applied {
        // The membership in force is not committed yet: nothing can be said from it.
        return reply(
            StatusCode::CONFLICT,
            json!({
                "error": "membership",
                "detail": "a membership change is not committed yet: retry once it is",
            }),
        );
    }
    let members: Vec<NodeId> = req
        .ids
        .iter()
        .filter(|id| voters.contains(id) || learners.contains(id))
        .copied()
        .collect();
    if members.is_empty() {
        // None of them is a member (any more): nothing to write. So a request repeated after
        // a `503 timeout` whose change was committed meanwhile gets its 200 (with the index of
        // the membership in force), and an unknown id writes no entry.
        return reply(
            StatusCode::OK,
            json!({"index": index, "not_members": req.ids}),
        );
    }
    if let Some(voter) = members.iter().find(|id| voters.contains(id)) {
        return reply(
            StatusCode::CONFLICT,
            json!({
                "error": "membership",
                "detail": format!(
                    "node {voter} is a voter: take it out of the voters first \
                     (/admin/change-membership), then remove it"
                ),
            }),
        );
    }
    node.membership_change(
        ChangeMembers::RemoveNodes(members.into_iter().collect()),
        false,
    )
    .await
}

impl Shared {
    /// Runs a membership change in a task of its own, and waits for it at most the request
    /// timeout. A change of voters is two steps (a joint configuration, then the new one),
    /// driven by openraft's `change_membership` future: dropped at a timeout, it would leave
    /// the cluster in the joint configuration; in its own task it goes on.
    async fn membership_change(
        self: &Arc<Self>,
        change: ChangeMembers<NodeId, BasicNode>,
        retain: bool,
    ) -> Response {
        if !self.is_leader() {
            return self.not_leader(None);
        }
        let raft = self.raft.clone();
        let task = tokio::spawn(async move { raft.change_membership(change, retain).await });
        match tokio::time::timeout(self.request_timeout, task).await {
            Ok(Ok(Ok(resp))) => reply(StatusCode::OK, json!({"index": resp.log_id.index})),
            Ok(Ok(Err(e))) => self.proposal_error(e),
            Ok(Err(e)) => unavailable(e),
            Err(_) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "error": "timeout",
                    "detail": format!(
                        "not committed within {:?} (a new voter unreachable? no quorum?); the \
                         change goes on, and may leave the cluster between the old and the new \
                         voters until it completes: repeat the same request until it answers 200 (409 \
                         'already undergoing a configuration change' meanwhile: retry later)",
                        self.request_timeout
                    ),
                }),
            ),
        }
    }
}

#[derive(Deserialize)]
struct SetPartition {
    blocked: BTreeSet<NodeId>,
}

/// `POST /test/partition` (test hooks only).
async fn set_partition(State(node): State<Arc<Shared>>, Json(req): Json<SetPartition>) -> Response {
    node.partition.set(req.blocked);
    tracing::info!(blocked = ?node.partition.blocked(), "partition set");
    reply(StatusCode::OK, json!({"blocked": node.partition.blocked()}))
}

#[derive(Deserialize)]
struct SetSlowSnapshot {
    chunk_delay_ms: u64,
}

/// `POST /test/slow-snapshot` (test hooks only): each snapshot chunk but the last (whose RPC
/// also installs the snapshot, within the sender's timeout) waits that long.
async fn set_slow_snapshot(
    State(node): State<Arc<Shared>>,
    Json(req): Json<SetSlowSnapshot>,
) -> Response {
    node.slow_chunks
        .set(Duration::from_millis(req.chunk_delay_ms));
    tracing::info!(
        chunk_delay_ms = req.chunk_delay_ms,
        "slow snapshot chunks set"
    );
    reply(
        StatusCode::OK,
        json!({"chunk_delay_ms": req.chunk_delay_ms}),
    )
}
