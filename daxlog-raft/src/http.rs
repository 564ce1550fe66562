//! openraft's network over HTTP/1.1: [`HttpNetwork`] (a `RaftNetworkFactory`, client side,
//! with reqwest) and [`peer_router`] (the server side, an axum `Router`).
//!
//! # Wire format
//!
//! Every peer RPC is a `POST` whose body, request and response alike, is a 4-byte header
//! [`WIRE_HEADER`] (`b"DXR"` and the version byte 1) followed by the value encoded with
//! postcard. A response is openraft's `Result<Resp, RaftError<..>>`: the remote node's errors
//! travel inside a `200` response. A body with another header, or one that does not decode, is
//! refused with a typed [`WireError`]: the server answers `400` with the error as text, the
//! client reports it as `RPCError::Network`.
//!
//! | route | request | response |
//! |---|---|---|
//! | `POST /raft/append-entries` | `AppendEntriesRequest` | `Result<AppendEntriesResponse, RaftError>` |
//! | `POST /raft/vote` | `VoteRequest` | `Result<VoteResponse, RaftError>` |
//! | `POST /raft/install-snapshot` | `InstallSnapshotRequest` (one chunk) | `Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>` |
//!
//! A node that has never joined a cluster (no cluster id, no vote, no log: a new node, or a
//! voter that lost its files) grants no vote to a candidate of a cluster with an id: it answers
//! "not granted" with its own vote.
//!
//! Each request carries its sender's node id in the [`FROM_HEADER`] header and the node id it
//! is meant for in the [`TO_HEADER`] header. A node refuses, unprocessed, an RPC meant for
//! another id ([`Refused::WrongNode`], `421` with the reason as text): one address given for
//! two node ids (e.g. a learner added at another node's address) would otherwise let one
//! server answer, and vote, for both. A request without the header (from an earlier version)
//! is taken.
//!
//! A sender that belongs to a cluster (see [`crate::identity`]) names it in the
//! [`CLUSTER_HEADER`] header. A node of another cluster refuses the RPC, unprocessed
//! ([`Refused::OtherCluster`], `409` with the reason as text, logged); a node of no cluster
//! yet takes the id, durably, from the first `AppendEntries` or `InstallSnapshot` chunk that
//! carries one, before openraft sees it. A request without the header (from an earlier
//! version, or from a node of no cluster) is taken.
//!
//! A request whose content no honest peer sends (a term or index above 2^62, `AppendEntries`
//! entries that are not consecutive from `prev_log_id`, terms that decrease or exceed the
//! vote's, see [`crate::sane`]) is refused unprocessed ([`Refused::Invalid`], `400` with the
//! error's kind first in the text), and so is the last chunk of a snapshot whose data does not
//! decode as the state machine's ([`ChunkOrder`] keeps a copy of the snapshot being received).
//!
//! # Batches and room
//!
//! A follower appends, of an `AppendEntries` batch, only the entries its log can take now
//! ([`crate::room`]); if none fits, it answers `503`, and the sender tries again after its
//! backoff ([`HttpNetwork::with_backoff`]; the node sets its heartbeat interval).
//!
//! The sender keeps an `AppendEntries` body under [`MAX_APPEND_BODY`] (at least one entry),
//! sends the first entries and answers openraft `PartialSuccess`; a receiver that still
//! answers `413` (its body limit is sized by its own log) is taken as openraft's
//! `PayloadTooLarge`, with a hint of half the entries.
//!
//! # Snapshots
//!
//! A snapshot travels in chunks of openraft's `snapshot_max_chunk_size`, one RPC each, in
//! order ([`ChunkOrder`] refuses a chunk past the bytes received). While a node handles a
//! chunk, it tells openraft that it hears from the sender ([`crate::hearing`]): openraft sends
//! it no heartbeat meanwhile, and a long stream would let it start an election.
//!
//! # Errors
//!
//! The client maps a timeout (the RPC's `RPCOption::hard_ttl()`, or the connect timeout) to
//! `RPCError::Timeout`, a failure to connect or any other transport failure (the peer is down,
//! the connection was reset, the server answered `503`, or `421` or `409` because it is not
//! the node, or not of the cluster, the RPC was meant for) to `RPCError::Unreachable` (openraft
//! backs off before retrying), a remote openraft error to `RPCError::RemoteError`, and a body
//! that is not what it should be (wrong header, undecodable, an unexpected status) to
//! `RPCError::Network`.
//!
//! # Partitions
//!
//! A [`Partition`] is a set of blocked node ids shared by a node's client and server sides:
//! the client fails every RPC to a blocked id as unreachable without sending it, and the server
//! answers `503` to every RPC from a blocked id without processing it. The node's test hook
//! `POST /test/partition` sets it.

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::hearing::Hearing;
use crate::identity::{AdoptError, ClusterIdentity, OtherCluster};
use crate::room::Room;
use crate::sane::Invalid;
use crate::{NodeId, TypeConfig};

/// The first bytes of every binary body: `b"DXR"` and the wire version, 1.
pub const WIRE_HEADER: [u8; 4] = *b"DXR\x01";

/// The header naming the sender of a peer RPC (its node id, in decimal).
pub const FROM_HEADER: &str = "x-daxlog-raft-from";

/// The header naming the node a peer RPC is meant for (its node id, in decimal).
pub const TO_HEADER: &str = "x-daxlog-raft-to";

/// The header naming the sender's cluster (its id, see [`crate::identity`]).
pub const CLUSTER_HEADER: &str = "x-daxlog-raft-cluster";

/// Why a node refuses a peer RPC before openraft sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The RPC is meant for another node id than this node's: the sender has this node's
    /// address under another id. Answered `421`.
    #[error(
        "wrong node: this is node {node}, not node {target} (is node {target} known at node \
         {node}'s address?)"
    )]
    WrongNode {
        /// This node's id.
        node: NodeId,
        /// The id the RPC was meant for.
        target: NodeId,
    },
    /// The RPC comes from another cluster than this node's (e.g. from a node whose directory
    /// was wiped and that was initialized again). Answered `409`.
    #[error(transparent)]
    OtherCluster(#[from] OtherCluster),
    /// The RPC holds what no honest peer sends ([`crate::sane`]): a term or index out of
    /// range, entries that are not consecutive, or a snapshot whose data does not decode.
    /// Answered `400`, the text beginning with the error's kind ([`Invalid::kind`]).
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl Refused {
    /// The status the server answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::WrongNode { .. } => StatusCode::MISDIRECTED_REQUEST,
            Refused::OtherCluster(_) => StatusCode::CONFLICT,
            Refused::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// The content type of binary bodies.
pub const BINARY_CONTENT_TYPE: &str = "application/octet-stream";

/// Route of `AppendEntries`.
pub const APPEND_ENTRIES_PATH: &str = "/raft/append-entries";
/// Route of `Vote`.
pub const VOTE_PATH: &str = "/raft/vote";
/// Route of `InstallSnapshot`.
pub const INSTALL_SNAPSHOT_PATH: &str = "/raft/install-snapshot";

/// How long the client waits for a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A binary body that is not what it should be.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The body is shorter than the header.
    #[error("body of {len} bytes is shorter than the 4-byte wire header")]
    Short {
        /// The body's length.
        len: usize,
    },
    /// The body starts with another header: not this protocol, or another version of it.
    #[error(
        "wire header 0x{} ({:?}) is not DXR version 1 (0x{})",
        hex::encode(.found), String::from_utf8_lossy(.found), hex::encode(.expected)
    )]
    BadHeader {
        /// The first four bytes of the body.
        found: [u8; 4],
        /// [`WIRE_HEADER`].
        expected: [u8; 4],
    },
    /// The value does not decode.
    #[error("undecodable body: {0}")]
    Decode(#[from] postcard::Error),
    /// The value decoded but bytes follow it.
    #[error("{0} bytes after the encoded value")]
    Trailing(usize),
}

/// `value` encoded for the wire: [`WIRE_HEADER`] then postcard.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, WireError> {
    Ok(postcard::to_extend(value, WIRE_HEADER.to_vec())?)
}

/// Decodes a body made by [`encode`], checking its header and that nothing follows the value.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let Some((head, rest)) = body.split_first_chunk::<4>() else {
        return Err(WireError::Short { len: body.len() });
    };
    if *head != WIRE_HEADER {
        return Err(WireError::BadHeader {
            found: *head,
            expected: WIRE_HEADER,
        });
    }
    let (value, trailing) = postcard::take_from_bytes(rest)?;
    if !trailing.is_empty() {
        return Err(WireError::Trailing(trailing.len()));
    }
    Ok(value)
}

/// The node ids a node is cut from; shared by its client ([`HttpNetwork`]) and server
/// ([`peer_router`]) sides. Empty by default.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    blocked: Arc<RwLock<BTreeSet<NodeId>>>,
}

impl Partition {
    /// No node blocked.
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks exactly `ids` from now on (an empty set heals).
    pub fn set(&self, ids: impl IntoIterator<Item = NodeId>) {
        *self.blocked.write().unwrap_or_else(|e| e.into_inner()) = ids.into_iter().collect();
    }

    /// The blocked ids.
    pub fn blocked(&self) -> BTreeSet<NodeId> {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `id` is blocked.
    pub fn is_blocked(&self, id: NodeId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }
}

/// openraft's network over HTTP: one per node, holding one reqwest client (its connection
/// pool, with keep-alive, is shared by the connections to every peer). A peer's address is its
/// `BasicNode::addr`, `host:port`.
#[derive(Clone)]
pub struct HttpNetwork {
    id: NodeId,
    client: reqwest::Client,
    partition: Partition,
    cluster: ClusterIdentity,
    /// How long openraft waits before it sends again to a node that was unreachable.
    backoff: Duration,
}

impl HttpNetwork {
    /// The network of node `id`, of cluster `cluster` (named in every RPC once it has one),
    /// which refuses to reach the ids `partition` blocks.
    pub fn new(
        id: NodeId,
        partition: Partition,
        cluster: ClusterIdentity,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(HttpNetwork {
            id,
            client,
            partition,
            cluster,
            backoff: DEFAULT_BACKOFF,
        })
    }

    /// Sets how long openraft waits before it sends again to a node that was unreachable
    /// (default [`DEFAULT_BACKOFF`]). A node refuses a batch it has no room for as
    /// unreachable ([`crate::room`]): keep this under the election timeout, so that such a
    /// follower hears from its leader before it would start an election.
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }
}

/// openraft's own backoff after an unreachable node.
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);

/// The connection from one node to `target` (a base URL; requests share the client's pool).
pub struct HttpConnection {
    net: HttpNetwork,
    target: NodeId,
    base: String,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> HttpConnection {
        HttpConnection {
            net: self.clone(),
            target,
            base: format!("http://{}", node.addr),
        }
    }
}

type RpcError<E> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

fn unreachable(msg: String) -> Unreachable {
    Unreachable::new(&std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        msg,
    ))
}

fn network_error(msg: String) -> NetworkError {
    NetworkError::new(&std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
}

impl HttpConnection {
    /// Sends `rpc` to `path` and decodes the answer; see the module documentation for how
    /// failures map to `RPCError`.
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        action: RPCTypes,
        rpc: &Req,
        option: &RPCOption,
        entries: usize,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: StdError + DeserializeOwned,
    {
        if self.net.partition.is_blocked(self.target) {
            return Err(RPCError::Unreachable(unreachable(format!(
                "node {} is partitioned from node {}",
                self.target, self.net.id
            ))));
        }
        let ttl = option.hard_ttl();
        let timeout = || {
            RPCError::Timeout(Timeout {
                action,
                id: self.net.id,
                target: self.target,
                timeout: ttl,
            })
        };
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                timeout()
            } else {
                RPCError::Unreachable(Unreachable::new(&e))
            }
        };
        let body = encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = self
            .net
            .client
            .post(format!("{}{path}", self.base))
            .timeout(ttl)
            .header(FROM_HEADER, self.net.id)
            .header(TO_HEADER, self.target);
        if let Some(cluster) = self.net.cluster.get() {
            request = request.header(CLUSTER_HEADER, cluster);
        }
        let response = request
            .header(header::CONTENT_TYPE, BINARY_CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        match status {
            StatusCode::OK => {}
            // A receiver whose body limit (sized by its log) is below this batch's: fewer
            // entries at a time (openraft sends at most the hint for a while).
            StatusCode::PAYLOAD_TOO_LARGE if entries > 1 => {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint((entries / 2) as u64),
                ));
            }
            // One entry, too large for the receiver: nothing to cut; sent again after a pause.
            StatusCode::PAYLOAD_TOO_LARGE if entries == 1 => {
                return Err(RPCError::Unreachable(unreachable(format!(
                    "node {} cannot take an entry this large",
                    self.target
                ))));
            }
            // Partitioned, not the node this RPC is meant for, or of another cluster: never
            // an answer.
            StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::MISDIRECTED_REQUEST
            | StatusCode::CONFLICT => {
                return Err(RPCError::Unreachable(unreachable(format!(
                    "node {} refused {path}: {}",
                    self.target,
                    String::from_utf8_lossy(&bytes)
                ))));
            }
            other => {
                return Err(RPCError::Network(network_error(format!(
                    "node {} answered {other} to {path}: {}",
                    self.target,
                    String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                ))));
            }
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError<openraft::error::Infallible>> {
        let mut rpc = rpc;
        let cut = cut_to_body(&mut rpc);
        let entries = rpc.entries.len();
        let answer = self
            .call(
                APPEND_ENTRIES_PATH,
                RPCTypes::AppendEntries,
                &rpc,
                &option,
                entries,
            )
            .await?;
        Ok(match (cut, answer) {
            (Some(last), AppendEntriesResponse::Success) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (_, answer) => answer,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        self.call(
            INSTALL_SNAPSHOT_PATH,
            RPCTypes::InstallSnapshot,
            &rpc,
            &option,
            0,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError<openraft::error::Infallible>> {
        self.call(VOTE_PATH, RPCTypes::Vote, &rpc, &option, 0).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.net.backoff))
    }
}

/// The largest `AppendEntries` body a node sends, in bytes of its entries' encodings, unless
/// its first entry alone is larger: a receiver accepts bodies of its log's capacity, its
/// snapshot chunk size and 1 MiB (`node.rs`), and one RPC is answered before the next is sent.
pub const MAX_APPEND_BODY: usize = 2 << 20;

/// Keeps the first entries of `rpc` whose encodings add up to at most [`MAX_APPEND_BODY`] (at
/// least one); the log id of the last one kept if any was left out.
fn cut_to_body(rpc: &mut AppendEntriesRequest<TypeConfig>) -> Option<openraft::LogId<NodeId>> {
    let mut bytes = 0usize;
    let keep = rpc.entries.iter().position(|e| {
        bytes = bytes.saturating_add(crate::codec::encoded_len(e).unwrap_or(usize::MAX));
        bytes > MAX_APPEND_BODY
    })?;
    let keep = keep.max(1);
    if keep >= rpc.entries.len() {
        return None;
    }
    rpc.entries.truncate(keep);
    Some(rpc.entries[keep - 1].log_id)
}

/// How long a node's server side holds each snapshot chunk it receives, but the last, before
/// openraft takes it, while the node hears from the sender ([`crate::hearing`]): a receiver
/// slow to take a snapshot, for tests (the `/test/slow-snapshot` hook of a node sets it). The
/// last chunk's RPC installs the snapshot within the sender's timeout, and is not held. Zero
/// by default.
#[derive(Clone, Debug, Default)]
pub struct SlowChunks(Arc<AtomicU64>);

impl SlowChunks {
    /// No delay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds each chunk received from now on for `delay` (zero: none).
    pub fn set(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.0.store(ms, Ordering::Relaxed);
    }

    /// The delay of each chunk.
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// What the server side needs.
#[derive(Clone)]
struct Peer {
    /// This node's id: RPCs meant for another are refused.
    id: NodeId,
    /// This node's cluster: RPCs of another are refused.
    cluster: ClusterIdentity,
    raft: Raft<TypeConfig>,
    partition: Partition,
    /// The order of the chunks of the snapshot being received.
    receiving: Arc<tokio::sync::Mutex<ChunkOrder>>,
    /// What this node's log can take of a leader's entries.
    room: Room,
    /// How long each snapshot chunk waits before openraft takes it (a test hook).
    slow_chunks: SlowChunks,
}

/// The server side of the peer RPCs: an axum router serving [`APPEND_ENTRIES_PATH`],
/// [`VOTE_PATH`] and [`INSTALL_SNAPSHOT_PATH`] for `raft`, node `id` of `cluster`, refusing
/// (`503`) the RPCs of the senders `partition` blocks, (`421`, [`Refused::WrongNode`]) those
/// meant for another node id and (`409`, [`Refused::OtherCluster`]) those of another cluster;
/// a node of no cluster yet adopts the one its first `AppendEntries` or `InstallSnapshot`
/// carries; of an `AppendEntries` batch, only the entries `room` can take are appended
/// ([`crate::room`]). Bodies up to `max_body` bytes are accepted (an append-entries batch may
/// be large: allow at least the log's capacity); larger ones get `413`.
pub fn peer_router<S>(
    id: NodeId,
    cluster: ClusterIdentity,
    raft: Raft<TypeConfig>,
    partition: Partition,
    max_body: usize,
    room: Room,
    slow_chunks: SlowChunks,
) -> axum::Router<S> {
    axum::Router::new()
        .route(APPEND_ENTRIES_PATH, post(append_entries))
        .route(VOTE_PATH, post(vote))
        .route(INSTALL_SNAPSHOT_PATH, post(install_snapshot))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Peer {
            id,
            cluster,
            raft,
            partition,
            receiving: Arc::default(),
            room,
            slow_chunks,
        })
}

/// Checks the sender and decodes the request; the error is the response to send instead.
fn admit<T: DeserializeOwned>(
    peer: &Peer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, (StatusCode, String)> {
    if let Some(target) = header_id(headers, TO_HEADER)? {
        if target != peer.id {
            let refused = Refused::WrongNode {
                node: peer.id,
                target,
            };
            return Err(refuse(refused));
        }
    }
    if let Err(other) = peer.cluster.check(carried_cluster(headers)) {
        return Err(refuse(other.into()));
    }
    if let Some(from) = header_id(headers, FROM_HEADER)? {
        if peer.partition.is_blocked(from) {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("node {from} is partitioned from this node"),
            ));
        }
    }
    decode(body).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

/// The node id in header `name`, if the request has one; `400` if it is not a node id.
fn header_id(headers: &HeaderMap, name: &str) -> Result<Option<NodeId>, (StatusCode, String)> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<NodeId>().ok())
                .ok_or_else(|| (StatusCode::BAD_REQUEST, format!("{name} is not a node id")))
        })
        .transpose()
}

/// The answer to a peer RPC refused unprocessed (logged).
fn refuse(why: Refused) -> (StatusCode, String) {
    refused(why.status(), why)
}

/// The answer `status` to a peer RPC refused unprocessed because of `why` (logged).
fn refused(status: StatusCode, why: impl std::fmt::Display) -> (StatusCode, String) {
    tracing::warn!("peer RPC refused: {why}");
    (status, why.to_string())
}

/// The cluster id a request carries, if any.
fn carried_cluster(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(CLUSTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Makes the cluster id the request carries this node's, durably, if it has none yet (a
/// new node's first `AppendEntries` or `InstallSnapshot`): before openraft takes anything of
/// it. The error is the response to send instead.
async fn adopt_cluster(peer: &Peer, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let Some(carried) = carried_cluster(headers).map(str::to_string) else {
        return Ok(());
    };
    if peer.cluster.get().is_some() {
        // Checked by `admit`, but perhaps before another request's adoption: again.
        return peer
            .cluster
            .check(Some(&carried))
            .map_err(|other| refuse(other.into()));
    }
    let cluster = peer.cluster.clone();
    let adopted = tokio::task::spawn_blocking(move || cluster.adopt(&carried)).await;
    match adopted {
        Ok(Ok(())) => Ok(()),
        Ok(Err(AdoptError::Other(other))) => Err(refuse(other.into())),
        Ok(Err(e @ AdoptError::Invalid(_))) => Err(refused(StatusCode::BAD_REQUEST, e)),
        Ok(Err(e @ AdoptError::Store(_))) => Err(refused(StatusCode::SERVICE_UNAVAILABLE, e)),
        Err(e) => Err(refused(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

fn binary<T: Serialize>(value: &T) -> Response {
    match encode(value) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(BINARY_CONTENT_TYPE),
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append_entries(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    let rpc: AppendEntriesRequest<TypeConfig> = match admit(&peer, &headers, &body) {
        Ok(rpc) => rpc,
        Err(refused) => return refused.into_response(),
    };
    if let Err(invalid) = crate::sane::append_entries(&rpc) {
        return refuse(invalid.into()).into_response();
    }
    if let Err(refused) = adopt_cluster(&peer, &headers).await {
        return refused.into_response();
    }
    match crate::room::append_entries(&peer.raft, &peer.room, rpc).await {
        Ok(answer) => binary(&answer),
        // (Taken by the sender as unreachable: it sends again after its backoff; the refusal
        // clears what its replication to this node holds, which the leader may then purge.)
        Err(refused) => (StatusCode::SERVICE_UNAVAILABLE, refused.to_string()).into_response(),
    }
}

async fn vote(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    let rpc: VoteRequest<NodeId> = match admit(&peer, &headers, &body) {
        Ok(rpc) => rpc,
        Err(refused) => return refused.into_response(),
    };
    if let Err(invalid) = crate::sane::vote(&rpc) {
        return refuse(invalid.into()).into_response();
    }
    // (Only a candidate of a cluster with an id: one without, made by an earlier version or by
    // openraft's `initialize` of several members at once, has its members start empty, and
    // none of them could be elected.)
    if let Some(refusal) = carried_cluster(&headers).and_then(|_| never_joined(&peer)) {
        tracing::info!(
            candidate = %rpc.vote,
            "vote not granted: this node has never joined a cluster (no cluster id, no vote, \
             no log)"
        );
        return binary(&Ok::<_, RaftError<NodeId>>(refusal));
    }
    // Again: an adoption that ended since `admit` looked (it waits for no fsync) may have
    // given this node an id, and `never_joined` then let the request through.
    if let Err(other) = peer.cluster.check(carried_cluster(&headers)) {
        return refuse(other.into()).into_response();
    }
    binary(&peer.raft.vote(rpc).await)
}

/// If this node has never joined a cluster (no cluster id, no vote, no log, no snapshot), the
/// answer to every vote request: not granted, with its own vote. Such a node may be a voter
/// that lost its files: granting, it could elect a candidate that lacks acknowledged writes
/// (the quorum that holds them counted this node). A new node takes part once it received
/// its leader's first `AppendEntries` (and the cluster id).
fn never_joined(peer: &Peer) -> Option<VoteResponse<NodeId>> {
    if peer.cluster.get().is_some() {
        return None;
    }
    let m = peer.raft.metrics();
    let m = m.borrow();
    let empty = m.vote == openraft::Vote::default()
        && m.last_log_index.is_none()
        && m.snapshot.is_none()
        && m.purged.is_none();
    empty.then(|| VoteResponse {
        vote: m.vote,
        vote_granted: false,
        last_log_id: None,
    })
}

async fn install_snapshot(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> Response {
    let rpc: InstallSnapshotRequest<TypeConfig> = match admit(&peer, &headers, &body) {
        Ok(rpc) => rpc,
        Err(refused) => return refused.into_response(),
    };
    if let Err(invalid) = crate::sane::install_snapshot(&rpc) {
        return refuse(invalid.into()).into_response();
    }
    if let Err(refused) = adopt_cluster(&peer, &headers).await {
        return refused.into_response();
    }
    // (Checked again, with the chunk, below: a chunk out of order is refused at once.)
    if let Err(refused) = peer
        .receiving
        .lock()
        .await
        .admit(&rpc.meta.snapshot_id, rpc.offset)
    {
        return (StatusCode::BAD_REQUEST, refused).into_response();
    }
    // The node hears from the sender while openraft takes the chunk ([`crate::hearing`]).
    let _hearing = Hearing::start(&peer.raft, rpc.vote);
    let delay = peer.slow_chunks.delay();
    if !delay.is_zero() && !rpc.done {
        tokio::time::sleep(delay).await;
    }
    // In a task of its own: what openraft took is recorded even where the sender gives up.
    let task = tokio::spawn(receive_chunk(
        peer.raft.clone(),
        peer.receiving.clone(),
        rpc,
    ));
    match task.await {
        Ok(Ok(answer)) => binary(&answer),
        Ok(Err(refused)) => refused.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

type InstallSnapshotAnswer =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// Hands `raft` a snapshot chunk if `receiving` admits it, keeping `receiving`'s copy of the
/// snapshot as openraft's; the last chunk only if the snapshot it completes decodes as the
/// state machine's (openraft would otherwise hand the state machine a snapshot it cannot
/// install, and its core stop applying for good). The error is the response to send instead.
async fn receive_chunk(
    raft: Raft<TypeConfig>,
    receiving: Arc<tokio::sync::Mutex<ChunkOrder>>,
    rpc: InstallSnapshotRequest<TypeConfig>,
) -> Result<InstallSnapshotAnswer, (StatusCode, String)> {
    // Held until openraft answered: one chunk at a time, as openraft takes them.
    let mut order = receiving.lock().await;
    let (id, offset, vote, done) = (rpc.meta.snapshot_id.clone(), rpc.offset, rpc.vote, rpc.done);
    order
        .admit(&id, offset)
        .map_err(|refused| (StatusCode::BAD_REQUEST, refused))?;
    let undo = order.write(&id, offset, &rpc.data);
    if done {
        if let Some(bytes) = order.take_bytes(&id) {
            // Decoded off the runtime's threads: a snapshot holds the whole journal.
            let checked = tokio::task::spawn_blocking(move || {
                let checked = crate::state_machine::check_snapshot_data(&bytes);
                (bytes, checked)
            })
            .await;
            let Ok((bytes, checked)) = checked else {
                // (Its copy is gone: start over.)
                *order = ChunkOrder::default();
                return Err(refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the snapshot's check failed",
                ));
            };
            order.put_bytes(bytes);
            if let Err(why) = checked {
                order.undo(undo);
                let invalid = Invalid::BadSnapshot {
                    id,
                    why: why.to_string(),
                };
                return Err(refuse(invalid.into()));
            }
        }
    }
    let answer = raft.install_snapshot(rpc).await;
    // Accepted: openraft answers with the sender's vote (a higher one refuses it).
    match &answer {
        Ok(r) if r.vote <= vote => {
            if done {
                order.finish(&id);
            }
        }
        _ => order.undo(undo),
    }
    Ok(answer)
}

/// The snapshot being received: its id, how many bytes of it arrived so far, and a copy of
/// them as openraft's receiving buffer holds them.
///
/// A snapshot's chunks come in order: the first at offset 0, each next one at most where the
/// bytes received so far end (a resent chunk starts before). openraft writes a chunk at its
/// offset into the receiving buffer, so a chunk far past the end (from a faulty or hostile
/// sender) would grow the buffer to that offset: [`ChunkOrder::admit`] refuses it first. (A
/// guard against a faulty sender, not an attacker: the peer API has no authentication.)
///
/// The copy lets the node check, before openraft takes the last chunk, that the snapshot
/// decodes (a snapshot in transit is thus held twice). It follows openraft's buffer: a chunk
/// at offset 0 of another snapshot starts a new one, a chunk is written at its offset
/// ([`ChunkOrder::write`]), undone where openraft refused it ([`ChunkOrder::undo`]); once
/// openraft took the last chunk its buffer is gone, and so is the copy
/// ([`ChunkOrder::finish`]): a chunk resent at another offset than 0 is then refused by
/// openraft, unchecked here.
#[derive(Debug, Default)]
pub struct ChunkOrder(Option<Receiving>);

#[derive(Debug)]
struct Receiving {
    id: String,
    /// The end of the furthest chunk taken.
    received: u64,
    /// The bytes taken, while openraft receives the snapshot.
    bytes: Option<Vec<u8>>,
}

/// How to undo a [`ChunkOrder::write`].
#[derive(Debug)]
#[must_use = "a chunk openraft refused must be undone"]
pub struct Undo(UndoKind);

#[derive(Debug)]
enum UndoKind {
    /// The write changed nothing.
    Nothing,
    /// The write started a new snapshot: what was received before.
    Started(Option<Receiving>),
    /// The write overwrote `saved` at `offset` and extended the bytes from `len` bytes, and
    /// the end received from `received`.
    Wrote {
        offset: usize,
        saved: Vec<u8>,
        len: usize,
        received: u64,
    },
}

impl ChunkOrder {
    /// Whether the chunk of snapshot `id` at `offset` may be handed to openraft, or why not.
    pub fn admit(&self, id: &str, offset: u64) -> Result<(), String> {
        match &self.0 {
            _ if offset == 0 => Ok(()),
            Some(r) if r.id == id && offset <= r.received => Ok(()),
            Some(r) if r.id == id => Err(format!(
                "snapshot {id}: chunk at offset {offset} but only {} bytes received",
                r.received
            )),
            _ => Err(format!(
                "snapshot {id}: chunk at offset {offset} before its first chunk"
            )),
        }
    }

    /// Writes an admitted chunk of snapshot `id` at `offset`, as openraft will: undo it where
    /// openraft refuses it.
    pub fn write(&mut self, id: &str, offset: u64, data: &[u8]) -> Undo {
        let end = offset.saturating_add(data.len() as u64);
        match &mut self.0 {
            Some(r) if r.id == id && r.bytes.is_some() => {
                let bytes = r.bytes.as_mut().expect("checked above");
                // (Admitted: `offset` is at most the bytes' length.)
                let at = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let len = bytes.len();
                let overlap = (len - at).min(data.len());
                let saved = bytes[at..at + overlap].to_vec();
                bytes[at..at + overlap].copy_from_slice(&data[..overlap]);
                bytes.extend_from_slice(&data[overlap..]);
                let received = r.received;
                r.received = r.received.max(end);
                Undo(UndoKind::Wrote {
                    offset: at,
                    saved,
                    len,
                    received,
                })
            }
            // openraft starts over: a new snapshot, or one whose last chunk it took.
            _ if offset == 0 => {
                let before = self.0.replace(Receiving {
                    id: id.to_string(),
                    received: end,
                    bytes: Some(data.to_vec()),
                });
                Undo(UndoKind::Started(before))
            }
            // Another snapshot's (refused by `admit`), or a chunk resent after the last was
            // taken (which openraft refuses).
            _ => Undo(UndoKind::Nothing),
        }
    }

    /// Undoes a chunk's [`ChunkOrder::write`] (the last one made).
    pub fn undo(&mut self, undo: Undo) {
        match undo.0 {
            UndoKind::Nothing => {}
            UndoKind::Started(before) => self.0 = before,
            UndoKind::Wrote {
                offset,
                saved,
                len,
                received,
            } => {
                if let Some(r) = &mut self.0 {
                    if let Some(bytes) = &mut r.bytes {
                        bytes.truncate(len);
                        bytes[offset..offset + saved.len()].copy_from_slice(&saved);
                    }
                    r.received = received;
                }
            }
        }
    }

    /// The bytes of snapshot `id` received so far, taken out (give them back with
    /// [`ChunkOrder::put_bytes`]); `None` if openraft receives no such snapshot.
    pub fn take_bytes(&mut self, id: &str) -> Option<Vec<u8>> {
        self.0
            .as_mut()
            .filter(|r| r.id == id)
            .and_then(|r| r.bytes.take())
    }

    /// Gives back the bytes [`ChunkOrder::take_bytes`] took.
    pub fn put_bytes(&mut self, bytes: Vec<u8>) {
        if let Some(r) = &mut self.0 {
            r.bytes = Some(bytes);
        }
    }

    /// openraft took the last chunk of snapshot `id`: its buffer is gone.
    pub fn finish(&mut self, id: &str) {
        if let Some(r) = self.0.as_mut().filter(|r| r.id == id) {
            r.bytes = None;
        }
    }

    /// The bytes of snapshot `id` received so far, if openraft is receiving it.
    pub fn bytes(&self, id: &str) -> Option<&[u8]> {
        self.0
            .as_ref()
            .filter(|r| r.id == id)
            .and_then(|r| r.bytes.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    use super::*;
    use crate::Request;

    /// A sender keeps an `AppendEntries` body to `MAX_APPEND_BODY` bytes of entries, at least
    /// one entry, and says which was the last one sent.
    #[test]
    fn append_entries_bodies_are_cut_by_bytes() {
        let rpc = |sizes: &[usize]| AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64),
                    payload: EntryPayload::Normal(Request::Append { data: vec![1; n] }),
                })
                .collect(),
        };
        let third = MAX_APPEND_BODY / 3;
        let mut small = rpc(&[100; 10]);
        assert_eq!(cut_to_body(&mut small), None);
        assert_eq!(small.entries.len(), 10);
        let mut big = rpc(&[third; 5]);
        let last = cut_to_body(&mut big).expect("cut");
        assert_eq!((big.entries.len(), last.index), (2, 1));
        let mut huge = rpc(&[2 * MAX_APPEND_BODY, 10]);
        let last = cut_to_body(&mut huge).expect("cut");
        assert_eq!((huge.entries.len(), last.index), (1, 0));
        let mut one = rpc(&[2 * MAX_APPEND_BODY]);
        assert_eq!(cut_to_body(&mut one), None);
        assert_eq!(one.entries.len(), 1);
    }

    #[test]
    fn snapshot_chunks_past_what_was_received_are_refused() {
        let mut order = ChunkOrder::default();
        let take = |o: &mut ChunkOrder, id: &str, offset: u64, len: usize| {
            o.admit(id, offset)?;
            let _ = o.write(id, offset, &vec![7; len]);
            Ok::<(), String>(())
        };
        let e = take(&mut order, "s1", 1 << 46, 1).unwrap_err();
        assert!(e.contains("before its first chunk"), "{e}");
        take(&mut order, "s1", 0, 100).unwrap();
        take(&mut order, "s1", 100, 100).unwrap();
        take(&mut order, "s1", 100, 100).unwrap(); // resent
        take(&mut order, "s1", 150, 100).unwrap(); // overlapping
        let e = take(&mut order, "s1", 1 << 46, 1).unwrap_err();
        assert!(e.contains("only 250 bytes received"), "{e}");
        let e = take(&mut order, "s1", 251, 1).unwrap_err();
        assert!(e.contains("only 250 bytes"), "{e}");
        take(&mut order, "s1", 250, 1).unwrap();
        let e = take(&mut order, "s2", 100, 1).unwrap_err();
        assert!(e.contains("before its first chunk"), "{e}");
        // An admitted first chunk openraft refused (a deposed leader's) is undone: the
        // current transfer goes on.
        order.admit("old", 0).unwrap();
        let undo = order.write("old", 0, &[1]);
        order.undo(undo);
        take(&mut order, "s1", 251, 1).unwrap();
        take(&mut order, "s2", 0, 1).unwrap(); // a new snapshot starts over
        assert!(take(&mut order, "s1", 1, 1).is_err());
        // A late chunk of another snapshot does not replace the one being received.
        let _ = order.write("s1", 100, &[1; 10]);
        take(&mut order, "s2", 1, 1).unwrap();
        assert_eq!(order.bytes("s2"), Some(&[7u8, 7][..]));
    }

    /// The copy of a snapshot holds its bytes as openraft's buffer does: chunks written at
    /// their offsets, refused ones undone, nothing once the last chunk was taken.
    #[test]
    fn the_copy_of_a_snapshot_follows_openrafts_buffer() {
        let mut order = ChunkOrder::default();
        let _ = order.write("s", 0, b"abcdef");
        let _ = order.write("s", 6, b"gh");
        assert_eq!(order.bytes("s"), Some(&b"abcdefgh"[..]));
        // A resent chunk overwrites in place; refused, it is undone.
        let undo = order.write("s", 2, b"XYZWVUT");
        assert_eq!(order.bytes("s"), Some(&b"abXYZWVUT"[..]));
        order.undo(undo);
        assert_eq!(order.bytes("s"), Some(&b"abcdefgh"[..]));
        assert!(order.admit("s", 9).is_err());
        // Offset 0 of the same snapshot overwrites, keeping the tail (openraft seeks).
        let _ = order.write("s", 0, b"AB");
        assert_eq!(order.bytes("s"), Some(&b"ABcdefgh"[..]));
        let bytes = order.take_bytes("s").unwrap();
        order.put_bytes(bytes);
        order.finish("s");
        assert_eq!(order.bytes("s"), None);
        // A resend of the last chunk is admitted (openraft refuses it: the sender starts
        // over), and changes nothing.
        order.admit("s", 6).unwrap();
        let _ = order.write("s", 6, b"gh");
        assert_eq!(order.bytes("s"), None);
        // The same snapshot sent again from 0 starts a new copy.
        let _ = order.write("s", 0, b"12");
        assert_eq!(order.bytes("s"), Some(&b"12"[..]));
        // A new snapshot refused by openraft gives back the one before.
        let undo = order.write("t", 0, b"zz");
        order.undo(undo);
        assert_eq!(order.bytes("s"), Some(&b"12"[..]));
    }

    #[test]
    fn bodies_round_trip_and_bad_ones_are_typed_errors() {
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(3, 1), 7)),
            entries: vec![Entry {
                log_id: LogId::new(CommittedLeaderId::new(3, 1), 8),
                payload: EntryPayload::Normal(Request::Append {
                    data: vec![1, 2, 3, 0xff],
                }),
            }],
            leader_commit: None,
        };
        let body = encode(&rpc).unwrap();
        assert_eq!(&body[..4], b"DXR\x01");
        let back: AppendEntriesRequest<TypeConfig> = decode(&body).unwrap();
        assert_eq!(back.entries[0].payload, rpc.entries[0].payload);
        assert_eq!(back.prev_log_id, rpc.prev_log_id);

        let mut other_version = body.clone();
        other_version[3] = 2;
        assert!(matches!(
            decode::<AppendEntriesRequest<TypeConfig>>(&other_version),
            Err(WireError::BadHeader { found, .. }) if found == *b"DXR\x02"
        ));
        assert!(matches!(
            decode::<VoteRequest<NodeId>>(b"DX"),
            Err(WireError::Short { len: 2 })
        ));
        assert!(matches!(
            decode::<AppendEntriesRequest<TypeConfig>>(&body[..body.len() - 1]),
            Err(WireError::Decode(_))
        ));
        let mut longer = body.clone();
        longer.push(0);
        assert!(matches!(
            decode::<AppendEntriesRequest<TypeConfig>>(&longer),
            Err(WireError::Trailing(1))
        ));
        // Garbage after a right header: an error, never a panic.
        for n in 0..64u8 {
            let mut junk = WIRE_HEADER.to_vec();
            junk.extend((0..n).map(|i| i.wrapping_mul(97).wrapping_add(n)));
            let _ = decode::<AppendEntriesRequest<TypeConfig>>(&junk);
            let _ = decode::<InstallSnapshotRequest<TypeConfig>>(&junk);
        }
    }

    #[test]
    fn remote_errors_travel_in_the_body() {
        let err: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            Err(RaftError::Fatal(openraft::error::Fatal::Stopped));
        let back: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            decode(&encode(&err).unwrap()).unwrap();
        assert!(matches!(
            back,
            Err(RaftError::Fatal(openraft::error::Fatal::Stopped))
        ));
    }

    #[test]
    fn partition_sets_and_heals() {
        let p = Partition::new();
        let shared = p.clone();
        p.set([2, 3]);
        assert!(shared.is_blocked(2) && shared.is_blocked(3) && !shared.is_blocked(1));
        p.set([]);
        assert!(shared.blocked().is_empty());
    }
}
