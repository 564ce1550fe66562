//! Appends of long batches, refused opens and concurrent admitted writes.
//!
//! * A follower's `append` gets openraft's whole AppendEntries batch; the store writes it in
//!   chunks bounded in bytes, so a batch of admitted entries fits wherever the free space of
//!   the ring lies (one `append_batch` needs one contiguous piece of it).
//! * A store refused by `open_with_snapshot` is left as it was found.
//! * Admission counts the bytes of entries admitted but not yet appended.

use std::collections::BTreeSet;
use std::time::Duration;

use daxlog_raft::cluster::{fast_config, Cluster, Error};
use daxlog_raft::{
    DaxError, LogStore, LogStoreOptions, Request, SnapshotWatermark, TypeConfig, WriteRejected,
    LOG_FILE,
};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};

type Store = LogStore<TypeConfig>;

const STEP: Duration = Duration::from_secs(10);

fn lid(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

fn set(i: u64, len: usize) -> Request {
    Request::Set {
        key: format!("k{i}"),
        value: "x".repeat(len),
    }
}

fn big(index: u64, len: usize) -> Entry<TypeConfig> {
    Entry {
        log_id: lid(index),
        payload: EntryPayload::Normal(set(index, len)),
    }
}

/// Bytes an entry takes on media (header and alignment included).
fn on_media(e: &Entry<TypeConfig>) -> u64 {
    let len = daxlog_raft::codec::encode(e).unwrap().len() as u64;
    (24 + len + 7) & !7
}

fn keys(entries: &[Entry<TypeConfig>]) -> Vec<(u64, String)> {
    entries
        .iter()
        .map(|e| match &e.payload {
            EntryPayload::Normal(Request::Set { key, .. }) => (e.log_id.index, key.clone()),
            _ => (e.log_id.index, String::new()),
        })
        .collect()
}

/// The live region sits in the middle of the ring (filled to 60 %, purged to 40 %); one batch
/// of admitted entries taking 45 % of the data area is appended whole and reads back.
#[tokio::test]
async fn a_long_batch_of_admitted_entries_fits_around_the_ring() {
    let cap: u64 = 256 << 10;
    let data = cap - 4096;
    let opts = LogStoreOptions::new().log_capacity(cap);
    let m = on_media(&big(1, 1000));
    let fill = (data * 6 / 10) / m;
    let purge_to = (data * 4 / 10) / m;
    let batch = (data * 45 / 100) / m + 1;

    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &opts).unwrap();
    let adm = store.admission();
    for i in 1..=fill {
        store.blocking_append([big(i, 1000)]).await.unwrap();
    }
    store.purge(lid(purge_to)).await.unwrap();
    let entries: Vec<_> = (fill + 1..=fill + batch).map(|i| big(i, 1000)).collect();
    for e in &entries {
        let EntryPayload::Normal(req) = &e.payload else {
            unreachable!()
        };
        adm.check(req).expect("admitted");
    }
    let want = keys(&entries);
    store.blocking_append(entries).await.unwrap();
    let got = store.try_get_log_entries(fill + 1..).await.unwrap();
    assert_eq!(keys(&got), want);
    drop((store, adm));
    // And after a restart.
    let mut store = Store::open(dir.path(), &opts).unwrap();
    let got = store.try_get_log_entries(fill + 1..).await.unwrap();
    assert_eq!(keys(&got), want);
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(lid(fill + batch)));
}

/// A crash between the purge's metadata record and the log truncation leaves purged entries
/// in `log.dax`. When the snapshot does not cover the recorded purge, `open_with_snapshot`
/// refuses the store and leaves `log.dax` untouched.
#[tokio::test]
async fn a_refused_open_leaves_the_log_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogStoreOptions::new().log_capacity(1 << 20);
    let log = dir.path().join(LOG_FILE);
    let bak = dir.path().join("log.bak");
    {
        let mut store = Store::open(dir.path(), &opts).unwrap();
        store
            .blocking_append((0..10).map(|i| big(i, 10)))
            .await
            .unwrap();
    }
    std::fs::copy(&log, &bak).unwrap();
    {
        let mut store = Store::open(dir.path(), &opts).unwrap();
        store.purge(lid(5)).await.unwrap();
    }
    // The files a crash after the metadata record and before the truncation leaves.
    std::fs::copy(&bak, &log).unwrap();
    let lsns = || {
        let l = daxlog::Log::open_read_only(&log, &daxlog::Options::new()).unwrap();
        l.iter().map(|e| e.lsn).collect::<Vec<_>>()
    };
    let before = lsns();
    assert_eq!(before.len(), 10);
    let err = Store::open_with_snapshot(dir.path(), &opts, SnapshotWatermark::new(Some(2)))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            DaxError::PurgedBeyondSnapshot {
                purged: 5,
                snapshot: Some(2)
            }
        ),
        "{err}"
    );
    assert_eq!(lsns(), before, "the refused open changed log.dax");
    // With a snapshot that covers it, the purge is finished.
    let mut store =
        Store::open_with_snapshot(dir.path(), &opts, SnapshotWatermark::new(Some(5))).unwrap();
    let got = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (6..10).collect::<Vec<_>>()
    );
    drop(store);
    assert_eq!(lsns().len(), 4);
}

/// A cluster node whose log's live region sits in the middle of the ring misses writes that
/// each passed the leader's admission; when it comes back, the leader sends them in long
/// AppendEntries batches. The node appends them and catches up, and stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_catches_up_with_long_batches() -> Result<(), Error> {
    let cap: u64 = 256 << 10;
    let data = cap - 4096;
    let m = on_media(&big(1, 1000));
    let root = tempfile::tempdir()?;
    let mut config = fast_config(1_000_000)?;
    config.max_in_snapshot_log_to_keep = (data * 2 / 10) / m;
    let config = config.validate()?;
    let opts = LogStoreOptions::new().log_capacity(cap);
    let mut c = Cluster::new(root.path(), config, opts);
    let members = BTreeSet::from([1, 2, 3]);
    for id in &members {
        c.start(*id).await?;
    }
    c.initialize(1, &members).await?;
    let mut last = 0;
    for i in 0..(data * 6 / 10) / m {
        last = c.write(set(i, 1000), STEP).await?.1;
    }
    for id in [1, 2, 3] {
        c.wait_applied(id, last, STEP).await?;
        c.node(id).raft.trigger().snapshot().await?;
    }
    for id in [1, 2, 3] {
        c.node(id)
            .raft
            .wait(Some(STEP))
            .metrics(|mm| mm.purged.is_some(), "purged")
            .await?;
    }
    let leader = c.leader(STEP).await?;
    let lagging = if leader == 3 { 2 } else { 3 };
    c.router.remove(lagging);
    let n = (data * 45 / 100) / m + 1;
    for i in 0..n {
        last = c.write(set(1000 + i, 1000), STEP).await?.1;
    }
    c.router.add(lagging, c.node(lagging).raft.clone());
    c.wait_applied(lagging, last, STEP).await?;
    let st = c
        .node(lagging)
        .raft
        .metrics()
        .borrow()
        .running_state
        .clone();
    assert!(st.is_ok(), "node {lagging} stopped: {st:?}");
    Ok(())
}

/// Writes admitted together count against the free space together: of twenty writes of the
/// largest size admitted before any is appended, only those the log can take are admitted,
/// and each of them is appended. Dropping an `Admitted` gives its bytes back.
#[tokio::test]
async fn writes_admitted_together_do_not_overrun_the_log() {
    let cap: u64 = 256 << 10;
    let dir = tempfile::tempdir().unwrap();
    let opts = LogStoreOptions::new().log_capacity(cap);
    let mut store = Store::open(dir.path(), &opts).unwrap();
    let adm = store.admission();
    let len = (adm.max_entry_bytes() - 200) as usize;
    let mut admitted = Vec::new();
    let mut refused = 0;
    for i in 1..=20 {
        let e = big(i, len);
        let EntryPayload::Normal(req) = &e.payload else {
            unreachable!()
        };
        match adm.admit(req) {
            Ok(a) => admitted.push((e, a)),
            Err(WriteRejected::LogFull { .. }) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(refused > 0 && !admitted.is_empty(), "refused {refused}");
    let n = admitted.len() as u64;
    // Nothing is admitted while these are held, and `check` counts them too.
    let probe = set(0, len);
    assert!(matches!(
        adm.admit(&probe),
        Err(WriteRejected::LogFull { .. })
    ));
    assert!(matches!(
        adm.check(&probe),
        Err(WriteRejected::LogFull { .. })
    ));
    let mut held = Vec::new();
    for (e, a) in admitted {
        store.blocking_append([e]).await.unwrap();
        held.push(a);
    }
    let got = store.try_get_log_entries(..).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    // Released: a purge makes room, and writes are admitted again.
    drop(held);
    store.purge(lid(n)).await.unwrap();
    let again = adm.admit(&probe).unwrap();
    assert!(again.len() >= len as u64);
}

/// Concurrent clients through the cluster's writer: each write is admitted on the leader and
/// held until its `client_write` returned, so together they cannot overrun the leader's log.
/// Every write succeeds or is refused with `LogFull`, and every node stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_do_not_stop_the_leader() -> Result<(), Error> {
    let root = tempfile::tempdir()?;
    let mut c = Cluster::new(
        root.path(),
        fast_config(1_000_000)?,
        LogStoreOptions::new().log_capacity(256 << 10),
    );
    let members = BTreeSet::from([1, 2, 3]);
    for id in &members {
        c.start(*id).await?;
    }
    c.initialize(1, &members).await?;
    let leader = c.leader(STEP).await?;
    let len = (c.node(leader).admission.max_entry_bytes() - 200) as usize;
    let c = std::sync::Arc::new(c);
    let n = 20;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, barrier) = (c.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            c.write(set(i as u64, len), STEP).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                matches!(
                    e.downcast_ref::<WriteRejected>(),
                    Some(WriteRejected::LogFull { .. })
                ),
                "{e}"
            ),
        }
    }
    assert!(ok > 0);
    for id in [1, 2, 3] {
        let st = c.node(id).raft.metrics().borrow().running_state.clone();
        assert!(st.is_ok(), "node {id} stopped: {st:?}");
    }
    Ok(())
}
