//! A cluster of nodes in one process, each with its own directory of daxlog files, connected
//! by a [`Router`]: nodes can be stopped and restarted from their files. Used by the example
//! and the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, Raft, RaftMetrics, SnapshotPolicy};

use crate::network::Router;
use crate::room::Room;
use crate::{
    Admission, KvStateMachine, LogStore, LogStoreOptions, NodeId, Request, Response, TypeConfig,
    WriteRejected,
};

/// Errors of the cluster helpers.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A running node: its Raft handle and (a handle on) its state machine.
pub struct Node {
    /// The Raft handle.
    pub raft: Raft<TypeConfig>,
    /// The node's state machine.
    pub sm: KvStateMachine,
    /// Admission control for writes to the node's log.
    pub admission: Admission<TypeConfig>,
}

/// Nodes in one process; see the module documentation.
pub struct Cluster {
    /// The in-process network.
    pub router: Router,
    config: Arc<Config>,
    root: PathBuf,
    opts: LogStoreOptions,
    nodes: BTreeMap<NodeId, Node>,
}

/// A Raft configuration for in-process clusters: fast timeouts, and a snapshot (followed by a
/// purge of the log) every `snapshot_every` entries.
pub fn fast_config(snapshot_every: u64) -> Result<Config, Error> {
    let config = Config {
        cluster_name: "daxlog-raft".into(),
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: snapshot_every / 4,
        purge_batch_size: 1,
        ..Default::default()
    };
    Ok(config.validate()?)
}

/// The leader's heartbeat interval in `config`.
fn heartbeat(config: &Config) -> Duration {
    Duration::from_millis(config.heartbeat_interval)
}

impl Cluster {
    /// A cluster whose nodes keep their files in `root/node-<id>`.
    pub fn new(root: impl AsRef<Path>, config: Config, opts: LogStoreOptions) -> Self {
        // (A node refuses a batch it has no room for as unreachable: sent again within a
        // heartbeat, before the node would start an election.)
        Cluster {
            router: Router::new().with_backoff(heartbeat(&config)),
            config: Arc::new(config),
            root: root.as_ref().to_path_buf(),
            opts,
            nodes: BTreeMap::new(),
        }
    }

    /// The directory of node `id`.
    pub fn dir(&self, id: NodeId) -> PathBuf {
        self.root.join(format!("node-{id}"))
    }

    /// Opens node `id` from its files (creating them the first time) without connecting it:
    /// its state is what recovery found on disk.
    pub async fn open(&mut self, id: NodeId) -> Result<&Node, Error> {
        let dir = self.dir(id);
        let sm = KvStateMachine::open(dir.join("sm"))?;
        let store = open_store_retrying(&dir, &self.opts, &sm).await?;
        let admission = store.admission();
        let raft = Raft::new(
            id,
            self.config.clone(),
            self.router.clone(),
            store,
            sm.clone(),
        )
        .await?;
        self.nodes.insert(
            id,
            Node {
                raft,
                sm,
                admission,
            },
        );
        Ok(&self.nodes[&id])
    }

    /// Connects an opened node to the others. Of a leader's entries it appends only those its
    /// log can take ([`crate::room`]).
    pub fn connect(&self, id: NodeId) {
        let node = &self.nodes[&id];
        let room = Room::new(node.admission.clone(), heartbeat(&self.config));
        self.router.add_with_room(id, node.raft.clone(), room);
    }

    /// Opens and connects node `id`.
    pub async fn start(&mut self, id: NodeId) -> Result<&Node, Error> {
        self.open(id).await?;
        self.connect(id);
        Ok(&self.nodes[&id])
    }

    /// Disconnects node `id` and shuts it down; its files stay.
    pub async fn stop(&mut self, id: NodeId) -> Result<(), Error> {
        self.router.remove(id);
        if let Some(node) = self.nodes.remove(&id) {
            node.raft.shutdown().await?;
        }
        Ok(())
    }

    /// The running node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    /// The ids of the running nodes.
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Initializes the cluster from node `first` with `members` as voters.
    pub async fn initialize(&self, first: NodeId, members: &BTreeSet<NodeId>) -> Result<(), Error> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|id| (*id, BasicNode::new(format!("in-process:{id}"))))
            .collect();
        self.node(first).raft.initialize(nodes).await?;
        Ok(())
    }

    /// Waits until a running node is leader of the others' view, and returns its id.
    pub async fn leader(&self, timeout: Duration) -> Result<NodeId, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            for (id, node) in &self.nodes {
                let m = node.raft.metrics().borrow().clone();
                if m.current_leader == Some(*id) && m.state.is_leader() {
                    return Ok(*id);
                }
            }
            if Instant::now() > deadline {
                return Err("no leader elected in time".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes `req` through the current leader (retrying while leadership changes), and
    /// returns the response and the log index it got.
    ///
    /// The leader's [`Admission`] admits the entry first (held until the leader's
    /// `client_write` returned): an entry too large for the log, or a
    /// log too full for it, is refused with a [`WriteRejected`] (the error downcasts to it) and
    /// never proposed. When the log is full, every running node is asked to build a snapshot
    /// (after which openraft purges the log) so that a later retry can succeed.
    pub async fn write(&self, req: Request, timeout: Duration) -> Result<(Response, u64), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self
                .leader(deadline.saturating_duration_since(Instant::now()))
                .await?;
            // Held until `client_write` returned: concurrent writes are counted together.
            let _admitted = match self.node(leader).admission.admit(&req) {
                Ok(admitted) => admitted,
                Err(rejected @ WriteRejected::LogFull { .. }) => {
                    for node in self.nodes.values() {
                        node.raft.trigger().snapshot().await?;
                    }
                    return Err(rejected.into());
                }
                Err(rejected) => return Err(rejected.into()),
            };
            match self.node(leader).raft.client_write(req.clone()).await {
                Ok(resp) => return Ok((resp.data, resp.log_id.index)),
                Err(e) if Instant::now() < deadline => {
                    tracing::info!("write through {leader} failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until node `id` has applied index `index`.
    pub async fn wait_applied(
        &self,
        id: NodeId,
        index: u64,
        timeout: Duration,
    ) -> Result<RaftMetrics<NodeId, BasicNode>, Error> {
        let m = self
            .node(id)
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), format!("node {id} catches up"))
            .await?;
        Ok(m)
    }

    /// Shuts every node down.
    pub async fn shutdown(&mut self) -> Result<(), Error> {
        for id in self.running() {
            self.stop(id).await?;
        }
        Ok(())
    }
}

/// Opens a store on a blocking thread, waiting a little if the previous instance of the node
/// in this process still holds its lock (its tasks finish shortly after `Raft::shutdown`); the
/// store is tied to the state machine's durable snapshot (purges wait for it; a log purged past
/// it is refused).
pub(crate) async fn open_store_retrying(
    dir: &Path,
    opts: &LogStoreOptions,
    sm: &KvStateMachine,
) -> Result<LogStore<TypeConfig>, Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (d, o, w) = (dir.to_path_buf(), opts.clone(), sm.snapshot_watermark());
        let opened =
            tokio::task::spawn_blocking(move || LogStore::open_with_snapshot(d, &o, w)).await?;
        match opened {
            Ok(s) => return Ok(s),
            Err(crate::DaxError::Log(daxlog::Error::Locked { .. }))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
