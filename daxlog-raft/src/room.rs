//! What a follower's log can take of its leader's entries.
//!
//! openraft (0.9) stops a node on any error of its log store's `append`, and a follower's log
//! can be fuller than its leader's (its snapshot, which lets it purge, comes later, or its log
//! is smaller). So before a follower hands an `AppendEntries` batch to openraft
//! ([`append_entries`]), it counts the entries its log can take now
//! ([`Admission::entries_that_fit`], as openraft and the store would append them), one batch
//! at a time. If not all fit, it takes the first ones that do and answers `PartialSuccess`
//! with the last one taken (openraft's way to say "the rest later"; the leader sends the rest
//! next). If none fits, it asks its own log pressure task for a snapshot and a purge
//! ([`Room::take_wanted`]) and waits for room, up to half a heartbeat interval; if still
//! none fits, it hands openraft the batch without its entries (so that the node hears from
//! its leader, and does not start an election, and takes the commit index), then refuses the
//! RPC ([`Refused`]; over HTTP `503`, which the sender takes as unreachable and retries after
//! a heartbeat interval). The refusal clears what the leader's replication to this node holds
//! in flight, and the leader can purge then: openraft does not purge entries a replication
//! holds, and a follower that answered "none taken" again and again (a `PartialSuccess` of
//! the batch's `prev_log_id`) kept the leader from purging for good, its log filled, and every
//! write was refused. The node stays up and lags; writes go on while a majority keeps up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{LogId, Raft};

use crate::{Admission, NodeId, TypeConfig};

/// What a follower's log can take of its leader's entries (see the module documentation).
#[derive(Clone)]
pub struct Room {
    admission: Admission<TypeConfig>,
    wait: Duration,
    /// `AppendEntries` batches cut or refused so far.
    cut: Arc<AtomicU64>,
    /// Set when an `AppendEntries` batch waits for room: the node's log pressure task then
    /// snapshots and purges, however little of the log is in use.
    wanted: Arc<AtomicBool>,
    /// Held from the count of what fits until openraft answered: two batches (a leader's
    /// retry, or an old leader's and a new one's) must not both be counted against the same
    /// room.
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
    /// When the log last said it can never take the leader's next entry.
    warned: Arc<tokio::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl Room {
    /// The room of the log `admission` was taken from ([`crate::LogStore::admission`]), on a
    /// node whose cluster's heartbeat interval is `heartbeat`: an `AppendEntries` of which no
    /// entry fits waits up to half of it for room before it is refused (openraft's timeout
    /// for the RPC is one heartbeat interval).
    pub fn new(admission: Admission<TypeConfig>, heartbeat: Duration) -> Self {
        Room {
            admission,
            wait: heartbeat / 2,
            cut: Arc::default(),
            wanted: Arc::default(),
            one_at_a_time: Arc::default(),
            warned: Arc::default(),
        }
    }

    /// How many `AppendEntries` batches were cut (some of their entries left for later) or
    /// refused (none taken) because the log could not take them.
    pub fn batches_cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// True (once) if an `AppendEntries` batch waited for room since the last call: the log
    /// should be snapshotted and purged, however little of it is in use.
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, Ordering::Relaxed)
    }
}

/// How often an `AppendEntries` waiting for room looks at the log again.
const ROOM_POLL: Duration = Duration::from_millis(2);

/// At most one warning in this long that the log can never take the leader's next entry.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// An `AppendEntries` batch refused: the log has no room for its first entry (or the task
/// that appends it failed). The leader should take it as unreachable and try again later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

/// Hands `raft` (a follower's) the entries of `rpc` its log can take now, and answers as
/// openraft does, with `PartialSuccess` where the batch was cut; [`Refused`] if none fits.
/// The count and the append run in a task of their own, which holds the room until openraft
/// answered even where the caller gives up on this future: the entries may still be
/// appended.
pub async fn append_entries(
    raft: &Raft<TypeConfig>,
    room: &Room,
    mut rpc: AppendEntriesRequest<TypeConfig>,
) -> Result<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>, Refused> {
    if rpc.entries.is_empty() {
        return Ok(raft.append_entries(rpc).await);
    }
    let (raft, room) = (raft.clone(), room.clone());
    let task = tokio::spawn(async move {
        let _one = room.one_at_a_time.lock().await;
        match take_what_fits(&room, &mut rpc).await {
            // None of the entries, but the rest: openraft hears from its leader (no election
            // of its own) and takes the commit index (it may then snapshot and purge).
            Taken::NoRoom => {
                rpc.entries.clear();
                match raft.append_entries(rpc).await {
                    Ok(AppendEntriesResponse::Success) => None,
                    other => Some((Taken::All, other)),
                }
            }
            taken => Some((taken, raft.append_entries(rpc).await)),
        }
    });
    match task.await {
        Ok(Some((Taken::Cut(last), Ok(AppendEntriesResponse::Success)))) => {
            Ok(Ok(AppendEntriesResponse::PartialSuccess(Some(last))))
        }
        Ok(Some((_, answer))) => Ok(answer),
        Ok(None) => Err(Refused(
            "no room in this node's log for the next entry yet".into(),
        )),
        Err(e) => Err(Refused(format!("the append failed: {e}"))),
    }
}

/// What a follower's log can take of an `AppendEntries` batch.
enum Taken {
    /// Every entry.
    All,
    /// The first ones, up to the one with this log id.
    Cut(LogId<NodeId>),
    /// None.
    NoRoom,
}

/// Cuts `rpc`'s entries to those the log can take now, waiting up to `room.wait` for room
/// for the first one (and asking the node's log pressure task for a snapshot and a purge).
async fn take_what_fits(room: &Room, rpc: &mut AppendEntriesRequest<TypeConfig>) -> Taken {
    let deadline = tokio::time::Instant::now() + room.wait;
    let fit = loop {
        let fit = room.admission.entries_that_fit(&rpc.entries);
        if fit > 0 || tokio::time::Instant::now() >= deadline {
            break fit;
        }
        room.wanted.store(true, Ordering::Relaxed);
        tokio::time::sleep(ROOM_POLL).await;
    };
    if fit == rpc.entries.len() {
        return Taken::All;
    }
    // (Some did not fit: room is wanted for them.)
    room.wanted.store(true, Ordering::Relaxed);
    room.cut.fetch_add(1, Ordering::Relaxed);
    let space = room.admission.space();
    if fit == 0 {
        let mut warned = room.warned.lock().await;
        if space.used == 0 && warned.is_none_or(|at| at.elapsed() > WARN_EVERY) {
            *warned = Some(tokio::time::Instant::now());
            // Never, unless the log grows: this node cannot follow its leader.
            tracing::warn!(
                index = rpc.entries[0].log_id.index,
                log_data_bytes = space.data,
                "the leader's next entry does not fit in this node's empty log: this node \
                 needs a log as large as the leader's (--log-capacity)"
            );
        }
        return Taken::NoRoom;
    }
    tracing::debug!(
        sent = rpc.entries.len(),
        taken = fit,
        free = space.data - space.used,
        "log too full for the whole batch: taking the entries that fit"
    );
    rpc.entries.truncate(fit);
    Taken::Cut(rpc.entries[fit - 1].log_id)
}
