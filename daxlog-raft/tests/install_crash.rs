//! A follower that crashes while it installs a snapshot from the leader comes back.
//!
//! openraft 0.9 installs a received snapshot on the state machine's task and purges the log up
//! to it on the core's task, in no particular order. Here the follower's state machine holds
//! the installation (a gate in front of `KvStateMachine::install_snapshot`) and never lets it
//! finish; the follower's purge waits for the durable snapshot (a short `purge_wait`), fails,
//! and its core stops right there: its files are what a crash in the window leaves (nothing is
//! written after; daxlog's appends are durable when they return). The node is then restarted
//! from its files (in this process: the crash is simulated, not a `kill -9`): its log is as it
//! was, not purged, and it catches up. Had the purge run at once, `meta.dax` would say purged
//! up to the snapshot while no snapshot is on disk, and the node would be refused on restart.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use daxlog_raft::cluster::{fast_config, Cluster, Error};
use daxlog_raft::{
    KvSnapshotBuilder, KvStateMachine, LogStore, LogStoreOptions, NodeId, Request, Response,
    TypeConfig,
};
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, LogId, OptionalSend, Raft, StorageError, StorageIOError, StoredMembership,
};
use tokio::sync::{Notify, Semaphore};

const STEP: Duration = Duration::from_secs(10);

/// `KvStateMachine` whose snapshot installations wait for a permit of `gate`.
#[derive(Clone)]
struct Gated {
    sm: KvStateMachine,
    gate: Arc<Semaphore>,
    entered: Arc<Notify>,
}

impl RaftStateMachine<TypeConfig> for Gated {
    type SnapshotBuilder = KvSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        self.sm.applied_state().await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.sm.apply(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.sm.get_snapshot_builder().await
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        self.sm.begin_receiving_snapshot().await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.entered.notify_one();
        // A closed gate: the node is gone, the installation never happens.
        let Ok(_permit) = self.gate.acquire().await else {
            return Err(
                StorageIOError::write_snapshot(None, AnyError::error("node stopped")).into(),
            );
        };
        self.sm.install_snapshot(meta, snapshot).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.sm.get_current_snapshot().await
    }
}

fn set(i: u64) -> Request {
    Request::Set {
        key: format!("k{}", i % 50),
        value: format!("v{i}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_snapshot_installation_restarts() -> Result<(), Error> {
    let root = tempfile::tempdir()?;
    let opts = LogStoreOptions::new().log_capacity(4 << 20);
    let mut c = Cluster::new(root.path(), fast_config(100)?, opts.clone());
    c.start(1).await?;
    c.start(2).await?;

    // Node 3, with the gated state machine.
    let dir3 = c.dir(3);
    let sm3 = KvStateMachine::open(dir3.join("sm"))?;
    let opts3 = opts.clone().purge_wait(Duration::from_millis(300));
    let store3 = LogStore::open_with_snapshot(&dir3, &opts3, sm3.snapshot_watermark())?;
    let gate = Arc::new(Semaphore::new(0));
    let entered = Arc::new(Notify::new());
    let gated = Gated {
        sm: sm3.clone(),
        gate: gate.clone(),
        entered: entered.clone(),
    };
    let raft3 = Raft::new(
        3,
        Arc::new(fast_config(100)?),
        c.router.clone(),
        store3,
        gated,
    )
    .await?;
    c.router.add(3, raft3.clone());

    c.initialize(1, &BTreeSet::from([1, 2, 3])).await?;
    let mut last = 0;
    for i in 0..10 {
        last = c.write(set(i), STEP).await?.1;
    }
    raft3
        .wait(Some(STEP))
        .applied_index_at_least(Some(last), "node 3 has the first entries")
        .await?;
    let before = last;

    // Node 3 misses enough entries for the leader to purge them: it will get a snapshot.
    c.router.remove(3);
    for i in 10..400 {
        last = c.write(set(i), STEP).await?.1;
    }
    let leader = c.leader(STEP).await?;
    c.node(leader)
        .raft
        .wait(Some(STEP))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > 20),
            "the leader purged what node 3 lacks",
        )
        .await?;
    c.router.add(3, raft3.clone());
    tokio::time::timeout(STEP, entered.notified()).await?;

    // The installation is held. Node 3's purge waits for it, up to its `purge_wait`, then
    // fails: its core stops right there, in the window, and its files are what a crash at
    // that point leaves (nothing is written after). Had the purge run at once, the core would
    // go on and `meta.dax` would say purged up to the snapshot, which is not on disk.
    raft3
        .wait(Some(STEP))
        .metrics(|m| m.running_state.is_err(), "node 3 stops in the window")
        .await
        .or_else(|e| match e {
            openraft::metrics::WaitError::ShuttingDown => Ok(raft3.metrics().borrow().clone()),
            e => Err(e),
        })?;
    let stopped = raft3.metrics().borrow().running_state.clone();
    assert!(
        format!("{stopped:?}").contains("no durable snapshot covers it"),
        "{stopped:?}"
    );
    gate.close();
    c.router.remove(3);
    let _ = raft3.shutdown().await;
    drop(raft3);
    drop(sm3);

    // Restart node 3 from its files: they hold the log as it was (up to `before`), not
    // purged, with no snapshot; it opens and catches up by a new snapshot.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        match c.open(3).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline && format!("{e}").contains("locked") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    }
    {
        // openraft re-applies the committed entries it finds in the log.
        let m = c
            .node(3)
            .raft
            .wait(Some(STEP))
            .metrics(
                |m| m.last_applied.map(|l| l.index) == Some(before),
                "node 3 recovered its log",
            )
            .await?;
        assert_eq!(m.last_log_index, Some(before));
        assert_eq!(m.purged, None);
        assert_eq!(m.snapshot, None);
        assert_eq!(m.last_applied.map(|l| l.index), Some(before));
    }
    c.connect(3);
    for i in 400..410 {
        last = c.write(set(i), STEP).await?.1;
    }
    c.wait_applied(3, last, STEP).await?;
    c.wait_applied(leader, last, STEP).await?;
    assert_eq!(c.node(3).sm.state().data, c.node(leader).sm.state().data);
    assert_eq!(c.node(3).sm.get("k9").as_deref(), Some("v409"));
    c.shutdown().await?;
    Ok(())
}
