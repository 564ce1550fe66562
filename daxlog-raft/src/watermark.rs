//! How far the state machine's snapshot is durable, shared with the log store so that a purge
//! never runs ahead of it.
//!
//! openraft (0.9) installs a snapshot received from the leader by queueing the installation
//! on the state machine's task and, right after, purging the log up to the snapshot on its own
//! task: the purge can be durable before the snapshot is. A crash in between would leave a log
//! purged past the snapshot on disk, with the entries in between gone from both. A
//! [`LogStore`](crate::LogStore) opened with [`LogStore::open_with_snapshot`] therefore waits,
//! in `purge(upto)`, until the watermark reaches `upto`; the state machine advances it once a
//! snapshot is on disk.
//!
//! [`LogStore::open_with_snapshot`]: crate::LogStore::open_with_snapshot

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// The last log index covered by a durable snapshot (`None`: no snapshot yet). Clones share
/// one value; it only moves forward.
#[derive(Clone, Debug)]
pub struct SnapshotWatermark {
    tx: Arc<watch::Sender<Option<u64>>>,
}

impl SnapshotWatermark {
    /// A watermark at `index`: the last log index of the durable snapshot the state machine
    /// started from.
    pub fn new(index: Option<u64>) -> Self {
        SnapshotWatermark {
            tx: Arc::new(watch::Sender::new(index)),
        }
    }

    /// The last log index a durable snapshot covers.
    pub fn get(&self) -> Option<u64> {
        *self.tx.borrow()
    }

    /// Records that a snapshot covering `index` is durable. Never moves the watermark back.
    pub fn advance(&self, index: Option<u64>) {
        self.tx.send_if_modified(|cur| {
            if index > *cur {
                *cur = index;
                true
            } else {
                false
            }
        });
    }

    /// Waits until the watermark reaches `index`; false if `timeout` passed first.
    pub async fn wait_for(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.tx.subscribe();
        let reached = rx.wait_for(|cur| *cur >= Some(index));
        let outcome = tokio::time::timeout(timeout, reached).await;
        matches!(outcome, Ok(Ok(_)))
    }
}
