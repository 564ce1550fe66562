//! An in-process network: every RPC is a direct call on the target's [`Raft`] handle, found in
//! a shared [`Router`]. A node that is not in the router (shut down) is unreachable. A node
//! added with its [`Room`] appends, of a leader's entries, only those its log can take
//! ([`crate::room`]), and a batch it refuses is unreachable too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, RaftNetwork, RaftNetworkFactory};

use crate::hearing::Hearing;
use crate::room::Room;
use crate::{NodeId, TypeConfig};

/// A node of the router: its handle, and its room if it was added with one.
type Entry = (Raft<TypeConfig>, Option<Room>);

/// The nodes of an in-process cluster, by id.
#[derive(Clone)]
pub struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Entry>>>,
    /// How long openraft waits before it sends again to a node that was unreachable.
    backoff: Duration,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            nodes: Arc::default(),
            backoff: crate::http::DEFAULT_BACKOFF,
        }
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how long openraft waits before it sends again to a node that was unreachable (as
    /// [`crate::http::HttpNetwork::with_backoff`]).
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// Makes node `id` reachable.
    pub fn add(&self, id: NodeId, raft: Raft<TypeConfig>) {
        self.insert(id, raft, None);
    }

    /// Makes node `id` reachable; of a leader's entries it appends only those `room` can take.
    pub fn add_with_room(&self, id: NodeId, raft: Raft<TypeConfig>, room: Room) {
        self.insert(id, raft, Some(room));
    }

    fn insert(&self, id: NodeId, raft: Raft<TypeConfig>, room: Option<Room>) {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (raft, room));
    }

    /// Makes node `id` unreachable and returns its handle.
    pub fn remove(&self, id: NodeId) -> Option<Raft<TypeConfig>> {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
            .map(|(raft, _)| raft)
    }

    /// The handle of node `id`, if reachable.
    pub fn get(&self, id: NodeId) -> Option<Raft<TypeConfig>> {
        self.node(id).map(|(raft, _)| raft)
    }

    fn node(&self, id: NodeId) -> Option<Entry> {
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }
}

/// A connection from one node to `target` through a [`Router`].
pub struct Connection {
    router: Router,
    target: NodeId,
}

impl Connection {
    fn raft(&self) -> Result<Raft<TypeConfig>, Unreachable> {
        self.node().map(|(raft, _)| raft)
    }

    fn node(&self) -> Result<Entry, Unreachable> {
        self.router
            .node(self.target)
            .ok_or_else(|| unreachable(format!("node {} is down", self.target)))
    }
}

fn unreachable(msg: String) -> Unreachable {
    Unreachable::new(&std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        msg,
    ))
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Connection {
        Connection {
            router: self.clone(),
            target,
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let answer = match self.node()? {
            (raft, Some(room)) => crate::room::append_entries(&raft, &room, rpc)
                .await
                .map_err(|refused| {
                    RPCError::Unreachable(unreachable(format!(
                        "node {} refused the entries: {refused}",
                        self.target
                    )))
                })?,
            (raft, None) => raft.append_entries(rpc).await,
        };
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.router.backoff))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let raft = self.raft()?;
        let _hearing = Hearing::start(&raft, rpc.vote);
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        let raft = self.raft()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}
