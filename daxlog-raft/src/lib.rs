//! # daxlog-raft
//!
//! [daxlog] as [openraft]'s log storage: a replicated journal whose every
//! node keeps its Raft log in a crash-safe daxlog file.
//!
//! * [`LogStore`] implements openraft's `RaftLogStorage` (storage v2) for any type config whose
//!   entries are serde types; the Raft log is `log.dax`, the vote, committed and last purged
//!   log ids are `meta.dax` (see the README for the design). A node opens it with
//!   [`LogStore::open_with_snapshot`], so that a purge never runs ahead of the state machine's
//!   durable snapshot ([`SnapshotWatermark`]), and checks client writes with its
//!   [`Admission`] before proposing them (an entry the log cannot take would stop the node).
//! * [`KvStateMachine`] is a small key/value state machine with persistent snapshots, for the
//!   tests and the example; [`TypeConfig`] ties the two together.
//! * [`network::Router`] is an in-process network for clusters in one process.
//! * [`http`] is the network between processes: openraft's RPCs over HTTP/1.1 with postcard
//!   bodies, and [`node::Node`] a node serving them together with a client, admin and metrics
//!   API (the `daxlog-raft-node` binary runs one).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use daxlog_raft::{LogStore, LogStoreOptions, TypeConfig};
//! use openraft::storage::RaftLogStorage;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut store =
//!     LogStore::<TypeConfig>::open(dir.path(), &LogStoreOptions::new().log_capacity(1 << 20))
//!         .unwrap();
//! let state = store.get_log_state().await.unwrap();
//! assert_eq!(state.last_log_id, None);
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::Cursor;

use serde::{Deserialize, Serialize};

mod bytes;
pub mod cluster;
pub mod codec;
mod files;
pub mod hearing;
pub mod http;
pub mod identity;
pub mod journal;
mod log_store;
mod meta;
pub mod network;
pub mod node;
pub mod room;
pub mod sane;
pub mod snapshot_file;
mod state_machine;
mod watermark;

/// The guard of `m`, whether a thread panicked holding it or not (what it protects is kept
/// consistent by each holder before anything can panic).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use files::DaxError;
pub use log_store::{
    Admission, Admitted, LogReader, LogStore, LogStoreOptions, ReadFence, WriteRejected,
    COMMITTED_SAVE_EVERY, DEFAULT_META_CAPACITY, DEFAULT_PURGE_WAIT, LOG_FILE, META_FILE,
};
pub use state_machine::{
    JournalPage, KvSnapshotBuilder, KvState, KvStateMachine, LEGACY_SNAPSHOT_FILE, SNAPSHOT_FILE,
};
pub use watermark::SnapshotWatermark;

/// Node ids of the example cluster.
pub type NodeId = u64;

/// A command of the key/value journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sets `key` to `value`.
    Set {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: String,
    },
    /// Appends `data` to the journal ([`KvState::journal`]) under the next journal index (see
    /// [`KvState::journal`]).
    Append {
        /// The entry's bytes: hexadecimal in human-readable encodings (JSON, as in the log),
        /// raw bytes in binary ones (postcard, between peers).
        #[serde(with = "bytes")]
        data: Vec<u8>,
    },
    /// Appends every item to the journal, in order, under consecutive journal indexes: the
    /// writes of several clients in one Raft entry (the node gathers concurrent `/append`s
    /// into one). New variants go after this one: postcard encodes variants by position.
    AppendBatch {
        /// The items' bytes, encoded as [`Request::Append`]'s.
        #[serde(with = "bytes::many")]
        items: Vec<Vec<u8>>,
    },
    /// Drops the journal's records with an index below `before`, except the last record,
    /// which always stays (the next record's index follows from it): what a consumer that
    /// read the journal up to `before` (the `next` of its last read) no longer needs.
    /// Snapshots then no longer hold those records, nor does memory. A `before` past the
    /// journal's next index (its last index plus one) when it is applied drops nothing
    /// ([`Truncation::PastTheEnd`]). Propose one only if `before` is at most the next index
    /// of a journal already applied (the node does): it then drops only records that existed
    /// when it was proposed, and a repeated one drops nothing written since.
    TruncateJournal {
        /// Records below this journal index are dropped.
        before: u64,
    },
}

/// The result of applying a [`Request`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The key's value before the request.
    pub previous: Option<String>,
    /// The journal index of the first record the request appended ([`Request::Append`],
    /// [`Request::AppendBatch`]); the batch's others follow it one by one.
    #[serde(default)]
    pub journal_index: Option<u64>,
    /// What a [`Request::TruncateJournal`] did.
    #[serde(default)]
    pub truncation: Option<Truncation>,
}

/// What a [`Request::TruncateJournal`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Truncation {
    /// The records below `before` were dropped, but the last; `first` is the journal's first
    /// index now (`None`: the journal is empty).
    Done {
        /// The journal's first index.
        first: Option<u64>,
    },
    /// `before` lay past the journal's next index `next` (its last index plus one; 0 for an
    /// empty journal): nothing was dropped. Records at or past `next` may not exist yet, and
    /// a truncation that could drop them would not be safe to repeat.
    PastTheEnd {
        /// The journal's next index.
        next: u64,
    },
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the key/value journal.
    pub TypeConfig:
        D = Request,
        R = Response,
);
