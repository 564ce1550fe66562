//! A follower receiving a snapshot from its leader hears from it.
//!
//! openraft (0.9) sends a follower no heartbeat while a snapshot to it is in flight, and a
//! chunk of the snapshot does not reset the follower's election timer (openraft compares the
//! chunk's vote with the node's and takes it only once the last chunk is installed). A
//! snapshot whose chunks take longer than an election timeout to arrive and install (a large
//! one, a slow link or disk) made the follower start an election halfway through, against a
//! leader that was there all along; its higher term then deposed the leader, and writes in
//! flight were answered that their leader changed.
//!
//! So while a node handles a chunk of a snapshot, it tells openraft that it heard from the
//! chunk's sender ([`Hearing::start`]): at once, and again every heartbeat interval until the
//! chunk is handled. It does so with what openraft takes from any leader: an `AppendEntries`
//! with the chunk's vote, no entries, no previous log id and no commit index. That does what
//! a heartbeat does to the vote and nothing else: it resets the election timer and renews
//! the leader's lease on this node (it refuses other candidates' votes until the lease after
//! the last hearing ends); a log id of `None` matches any log, accepts nothing new, truncates
//! nothing and commits nothing; a vote lower than the node's is refused (as the chunk itself
//! would be), and a higher one is taken and saved at once, as from any RPC of a newer leader
//! (openraft would take the chunk's only once the snapshot is installed).
//!
//! The node still starts an election once chunks stop coming: the hearing ends when the
//! chunk's handling ends, or when the server drops the request because the sender closed its
//! connection. A sender that vanishes without closing (its host died, the network was cut)
//! leaves the hearing on until the chunk's local handling ends: for the last chunk, the
//! snapshot's installation. Then openraft's usual timeout runs (the leader's lease plus an
//! election timeout).

use std::time::Duration;

use openraft::raft::AppendEntriesRequest;
use openraft::{Raft, Vote};
use tokio::task::JoinHandle;

use crate::{NodeId, TypeConfig};

/// Tells openraft, every heartbeat interval while it lives, that the node heard from the
/// leader of a vote; see the module documentation. Dropping it stops.
#[must_use = "the hearing stops when it is dropped"]
pub struct Hearing(Option<JoinHandle<()>>);

impl Hearing {
    /// Starts telling `raft` that it hears from the leader of `vote`, the vote of a snapshot
    /// chunk being handled: now, and every heartbeat interval of `raft`'s configuration. A
    /// vote that is not a leader's (not committed) is not heard: no leader sent it.
    pub fn start(raft: &Raft<TypeConfig>, vote: Vote<NodeId>) -> Self {
        if !vote.is_committed() {
            return Hearing(None);
        }
        let raft = raft.clone();
        let every = Duration::from_millis(raft.config().heartbeat_interval.max(1));
        Hearing(Some(tokio::spawn(async move {
            loop {
                let heard = AppendEntriesRequest {
                    vote,
                    prev_log_id: None,
                    entries: Vec::new(),
                    leader_commit: None,
                };
                if let Err(e) = raft.append_entries(heard).await {
                    // openraft shut down: nothing to keep alive.
                    tracing::debug!(error = %e, "no longer hearing a snapshot's sender");
                    return;
                }
                tokio::time::sleep(every).await;
            }
        })))
    }
}

impl Drop for Hearing {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}
