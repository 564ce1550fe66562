//! What a node refuses of a peer RPC's content before openraft sees it: values no honest peer
//! sends, and that openraft (0.9) does not check itself.
//!
//! * **Terms and indexes above [`MAX_TERM_OR_INDEX`]** (2^62), in any vote or log id of an
//!   `AppendEntries`, `Vote` or `InstallSnapshot` (its snapshot's meta too). openraft adds 1
//!   to terms and indexes without checking: a vote of term `u64::MAX`, once saved, made the
//!   next election's `term + 1` wrap and openraft panic, on every node it reached and after
//!   every restart. No honest cluster reaches 2^62: a term grows by one per election, an
//!   index by one per entry; at a million of either a second that takes 146,000 years, so
//!   every value below it, plus one, plus a batch's items, still fits in a `u64`.
//! * **`AppendEntries` entries that are not consecutive from `prev_log_id`**: the first at
//!   `prev_log_id.index + 1` (at 0 where `prev_log_id` is `None`, as openraft's
//!   `next_index()` says), each next one at the index after its predecessor's. openraft
//!   only `debug_assert`s it; the log store then refuses the append with a storage error,
//!   which openraft takes as fatal: the node stopped.
//! * **Log ids whose terms decrease** (from `prev_log_id` through the entries), and **log ids
//!   of a later term than the RPC's vote** (entries, `prev_log_id`, a snapshot's last log id):
//!   a leader's log holds no entry of a later term than its own, and sends it in order.
//!
//! Refusals are typed ([`Invalid`]); over HTTP they are answered `400`, with the error's
//! [`Invalid::kind`] first in the text.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{LogId, Vote};

use crate::{NodeId, TypeConfig};

/// The largest term, and the largest log index, taken from a peer: 2^62 (see the module
/// documentation).
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

/// Why the content of a peer RPC is refused (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// A term or a log index above [`MAX_TERM_OR_INDEX`].
    #[error("out_of_range: {what} {value} is above {max} (2^62), which no cluster reaches", max = MAX_TERM_OR_INDEX)]
    OutOfRange {
        /// Which value (e.g. "vote term").
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// An entry is not at the index after its predecessor's (or `prev_log_id`'s).
    #[error("not_consecutive: entry {position} has index {found}, expected {expected}")]
    NotConsecutive {
        /// The entry's position in the batch.
        position: usize,
        /// Its index.
        found: u64,
        /// The index after its predecessor's.
        expected: u64,
    },
    /// A log id of an earlier term than the one before it.
    #[error("terms_decrease: entry {position} has term {term}, after term {previous}")]
    TermsDecrease {
        /// The entry's position in the batch.
        position: usize,
        /// Its term.
        term: u64,
        /// The term of the log id before it.
        previous: u64,
    },
    /// A log id of a later term than the RPC's vote.
    #[error("term_above_vote: {what} has term {term}, above the vote's term {vote}")]
    TermAboveVote {
        /// Which log id.
        what: &'static str,
        /// Its term.
        term: u64,
        /// The vote's term.
        vote: u64,
    },
    /// A snapshot whose data does not decode as the state machine's.
    #[error("bad_snapshot: snapshot {id}: {why}")]
    BadSnapshot {
        /// The snapshot's id.
        id: String,
        /// Why its data does not decode.
        why: String,
    },
}

impl Invalid {
    /// The error's kind, a stable word (the answer's text begins with it).
    pub fn kind(&self) -> &'static str {
        match self {
            Invalid::OutOfRange { .. } => "out_of_range",
            Invalid::NotConsecutive { .. } => "not_consecutive",
            Invalid::TermsDecrease { .. } => "terms_decrease",
            Invalid::TermAboveVote { .. } => "term_above_vote",
            Invalid::BadSnapshot { .. } => "bad_snapshot",
        }
    }
}

fn bounded(what: &'static str, value: u64) -> Result<(), Invalid> {
    if value > MAX_TERM_OR_INDEX {
        return Err(Invalid::OutOfRange { what, value });
    }
    Ok(())
}

fn vote_bounded(vote: &Vote<NodeId>) -> Result<(), Invalid> {
    bounded("vote term", vote.leader_id().term)
}

fn log_id_bounded(what: &'static str, log_id: Option<&LogId<NodeId>>) -> Result<(), Invalid> {
    let Some(log_id) = log_id else { return Ok(()) };
    bounded(what, log_id.leader_id.term)?;
    bounded(what, log_id.index)
}

fn not_above_vote(
    what: &'static str,
    log_id: Option<&LogId<NodeId>>,
    vote: &Vote<NodeId>,
) -> Result<(), Invalid> {
    let vote = vote.leader_id().term;
    match log_id {
        Some(l) if l.leader_id.term > vote => Err(Invalid::TermAboveVote {
            what,
            term: l.leader_id.term,
            vote,
        }),
        _ => Ok(()),
    }
}

/// Checks an `AppendEntries` (see the module documentation).
pub fn append_entries(rpc: &AppendEntriesRequest<TypeConfig>) -> Result<(), Invalid> {
    vote_bounded(&rpc.vote)?;
    log_id_bounded("prev_log_id", rpc.prev_log_id.as_ref())?;
    log_id_bounded("leader_commit", rpc.leader_commit.as_ref())?;
    not_above_vote("prev_log_id", rpc.prev_log_id.as_ref(), &rpc.vote)?;
    let mut previous = rpc.prev_log_id;
    for (position, entry) in rpc.entries.iter().enumerate() {
        let id = entry.log_id;
        log_id_bounded("entry log id", Some(&id))?;
        // (Bounded, so no wrap.)
        let expected = previous.map_or(0, |p| p.index + 1);
        if id.index != expected {
            return Err(Invalid::NotConsecutive {
                position,
                found: id.index,
                expected,
            });
        }
        if let Some(p) = previous {
            if id.leader_id.term < p.leader_id.term {
                return Err(Invalid::TermsDecrease {
                    position,
                    term: id.leader_id.term,
                    previous: p.leader_id.term,
                });
            }
        }
        not_above_vote("an entry", Some(&id), &rpc.vote)?;
        previous = Some(id);
    }
    Ok(())
}

/// Checks a `Vote` (see the module documentation).
pub fn vote(rpc: &VoteRequest<NodeId>) -> Result<(), Invalid> {
    vote_bounded(&rpc.vote)?;
    log_id_bounded("last_log_id", rpc.last_log_id.as_ref())
}

/// Checks an `InstallSnapshot` chunk's vote and its snapshot's meta (see the module
/// documentation); its data is checked once the snapshot is whole
/// ([`crate::http::ChunkOrder`]).
pub fn install_snapshot(rpc: &InstallSnapshotRequest<TypeConfig>) -> Result<(), Invalid> {
    vote_bounded(&rpc.vote)?;
    log_id_bounded("snapshot last_log_id", rpc.meta.last_log_id.as_ref())?;
    log_id_bounded(
        "snapshot membership log id",
        rpc.meta.last_membership.log_id().as_ref(),
    )?;
    not_above_vote(
        "the snapshot's last log id",
        rpc.meta.last_log_id.as_ref(),
        &rpc.vote,
    )?;
    not_above_vote(
        "the snapshot's membership log id",
        rpc.meta.last_membership.log_id().as_ref(),
        &rpc.vote,
    )
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;
    use crate::Request;

    fn lid(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn rpc(
        vote_term: u64,
        prev: Option<LogId<NodeId>>,
        ids: &[(u64, u64)],
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(vote_term, 1),
            prev_log_id: prev,
            leader_commit: None,
            entries: ids
                .iter()
                .map(|&(t, i)| Entry {
                    log_id: lid(t, i),
                    payload: EntryPayload::Normal(Request::Append { data: vec![1] }),
                })
                .collect(),
        }
    }

    #[test]
    fn append_entries_are_consecutive_ordered_and_bounded() {
        let kind = |r: &AppendEntriesRequest<TypeConfig>| append_entries(r).err().map(|e| e.kind());
        assert_eq!(kind(&rpc(3, None, &[])), None);
        assert_eq!(kind(&rpc(3, None, &[(1, 0), (1, 1), (3, 2)])), None);
        assert_eq!(kind(&rpc(3, Some(lid(2, 7)), &[(2, 8), (3, 9)])), None);
        assert_eq!(kind(&rpc(3, None, &[(1, 1)])), Some("not_consecutive"));
        assert_eq!(
            kind(&rpc(3, Some(lid(2, 7)), &[(2, 9)])),
            Some("not_consecutive")
        );
        assert_eq!(
            kind(&rpc(3, Some(lid(2, 7)), &[(2, 8), (2, 8)])),
            Some("not_consecutive")
        );
        assert_eq!(
            kind(&rpc(3, Some(lid(2, 7)), &[(2, 8), (1, 9)])),
            Some("terms_decrease")
        );
        assert_eq!(
            kind(&rpc(3, Some(lid(2, 7)), &[(1, 8)])),
            Some("terms_decrease")
        );
        assert_eq!(kind(&rpc(3, None, &[(4, 0)])), Some("term_above_vote"));
        assert_eq!(kind(&rpc(3, Some(lid(4, 0)), &[])), Some("term_above_vote"));
        assert_eq!(kind(&rpc(u64::MAX, None, &[])), Some("out_of_range"));
        assert_eq!(kind(&rpc(1 << 62, None, &[])), None);
        assert_eq!(
            kind(&rpc(3, Some(lid(2, u64::MAX)), &[])),
            Some("out_of_range")
        );
        assert_eq!(
            kind(&rpc(
                3,
                Some(lid(2, MAX_TERM_OR_INDEX)),
                &[(2, MAX_TERM_OR_INDEX + 1)]
            )),
            Some("out_of_range")
        );
    }

    #[test]
    fn votes_are_bounded() {
        let v = |term, last| VoteRequest {
            vote: Vote::new(term, 2),
            last_log_id: last,
        };
        assert!(vote(&v(5, Some(lid(4, 100)))).is_ok());
        assert!(vote(&v(u64::MAX, None)).is_err());
        assert!(vote(&v(5, Some(lid(4, u64::MAX)))).is_err());
        assert!(vote(&v(5, Some(lid(u64::MAX, 1)))).is_err());
    }
}
