//! Writes the log cannot take are refused before they are proposed, and no node dies of them:
//! an entry larger than the log accepts is refused with `WriteRejected::TooLarge`; when the log
//! is nearly full (its snapshot policy let it fill up), writes are refused with
//! `WriteRejected::LogFull`, snapshots are triggered, and once the logs are purged writing goes
//! on. Without the admission check, each of these writes would reach daxlog's `append` as
//! `PayloadTooLarge` or `Full`, which openraft treats as fatal: the leader would stop.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use daxlog_raft::cluster::{fast_config, Cluster, Error};
use daxlog_raft::{LogStoreOptions, Request, WriteRejected};

const STEP: Duration = Duration::from_secs(10);

fn set(key: &str, len: usize) -> Request {
    Request::Set {
        key: key.to_string(),
        value: "x".repeat(len),
    }
}

fn rejection(e: &Error) -> Option<&WriteRejected> {
    e.downcast_ref::<WriteRejected>()
}

fn all_running(c: &Cluster) {
    for id in c.running() {
        let m = c.node(id).raft.metrics().borrow().clone();
        assert!(m.running_state.is_ok(), "node {id} stopped: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_full_writes_are_refused_and_nodes_stay_up() -> Result<(), Error> {
    let root = tempfile::tempdir()?;
    // A small log, and a snapshot policy that would let it fill up.
    let mut config = fast_config(1_000_000)?;
    config.max_in_snapshot_log_to_keep = 0;
    let opts = LogStoreOptions::new().log_capacity(256 << 10);
    let mut c = Cluster::new(root.path(), config, opts);
    let members = BTreeSet::from([1, 2, 3]);
    for id in &members {
        c.start(*id).await?;
    }
    c.initialize(1, &members).await?;
    let leader = c.leader(STEP).await?;
    let max = c.node(leader).admission.max_entry_bytes();
    assert!(max > 1024 && max < 20_000, "max entry {max}");

    // Larger than daxlog could ever hold, and larger than the store's limit.
    for len in [300 << 10, 20 << 10] {
        let err = c.write(set("big", len), STEP).await.unwrap_err();
        match rejection(&err) {
            Some(WriteRejected::TooLarge { len: got, max: m }) => {
                assert!(*got > len as u64);
                assert_eq!(*m, max);
            }
            other => panic!("expected TooLarge, got {other:?} ({err})"),
        }
        all_running(&c);
        assert_eq!(c.leader(STEP).await?, leader);
    }
    // The largest accepted size goes through.
    c.write(set("ok", 1000), STEP).await?;

    // Fill the log with 1 KiB values until the leader refuses.
    let mut written = 0u64;
    let full = loop {
        match c.write(set(&format!("k{written}"), 1024), STEP).await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 1000, "the log never filled up");
    };
    assert!(
        matches!(rejection(&full), Some(WriteRejected::LogFull { .. })),
        "{full}"
    );
    assert!(written > 100, "only {written} entries fitted");
    all_running(&c);
    assert_eq!(c.leader(STEP).await?, leader);

    // The refusal triggered snapshots; once the logs are purged, writes succeed again.
    let deadline = Instant::now() + STEP;
    let index = loop {
        match c.write(set("after", 1024), STEP).await {
            Ok((_, index)) => break index,
            Err(e) if rejection(&e).is_some() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    };
    for id in c.running() {
        c.wait_applied(id, index, STEP).await?;
        assert_eq!(c.node(id).sm.get("after"), Some("x".repeat(1024)));
        assert_eq!(c.node(id).sm.get("k0"), Some("x".repeat(1024)));
    }
    all_running(&c);
    c.shutdown().await?;
    Ok(())
}
