//! A 3-node replicated journal in one process: writes go through the leader; a follower, then
//! the leader, then a follower again are shut down while writing goes on, and each comes back
//! from its daxlog files, recovers what it had, and catches up: by snapshot when the leader
//! purged the entries it missed, else from the leader's log. Bounded in time.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use daxlog_raft::cluster::{fast_config, Cluster, Error};
use daxlog_raft::{LogStoreOptions, Request};

const STEP: Duration = Duration::from_secs(10);

fn set(i: u64) -> Request {
    Request::Set {
        key: format!("file-{}", i % 97),
        value: format!("inode {i}"),
    }
}

async fn write_range(c: &Cluster, range: std::ops::Range<u64>) -> Result<u64, Error> {
    let mut last = 0;
    for i in range {
        last = c.write(set(i), STEP).await?.1;
    }
    Ok(last)
}

/// Stops node `id`, writes `writes` more entries, restarts it, and checks it recovered its own
/// state from its files and then caught up with the leader.
async fn kill_write_restart(
    c: &mut Cluster,
    id: u64,
    writes: std::ops::Range<u64>,
) -> Result<(), Error> {
    let before = c.node(id).raft.metrics().borrow().clone();
    let data_before = c.node(id).sm.state();
    c.stop(id).await?;

    let last = write_range(c, writes).await?;

    // Recovery alone (not yet connected): the log, the vote and the applied state are back.
    let node = c.open(id).await?;
    assert!(node.sm.state().last_applied >= data_before.last_applied);
    assert!(node.sm.state().data.len() >= data_before.data.len());
    node.raft
        .wait(Some(STEP))
        .metrics(
            |m| {
                m.last_log_index >= before.last_log_index
                    && m.vote >= before.vote
                    && m.last_applied >= data_before.last_applied
            },
            format!("node {id} recovers from its files"),
        )
        .await?;

    // What the leader had purged when the node came back (it may purge more once the node
    // caught up from its log).
    let leader_then = c.leader(STEP).await?;
    let purged_then = c.node(leader_then).raft.metrics().borrow().purged;
    c.connect(id);
    let m = c.wait_applied(id, last, STEP).await?;
    let leader = c.leader(STEP).await?;
    let lm = c.wait_applied(leader, last, STEP).await?;
    assert_eq!(c.node(id).sm.state().data, c.node(leader).sm.state().data);
    let behind = before.last_log_index.unwrap_or(0);
    let leader_purged = lm.purged.map_or(0, |p| p.index);
    let purged_then = purged_then.map_or(0, |p| p.index);
    if leader == leader_then && purged_then > behind {
        // The entries it missed were gone from the leader's log: it caught up by snapshot.
        assert!(m.snapshot.map_or(0, |s| s.index) >= purged_then, "{m:?}");
    }
    println!(
        "node {id}: had index {behind}, leader {leader} purged up to {leader_purged}, \
         caught up to {last} (snapshot {:?})",
        m.snapshot.map(|s| s.index)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_kill_restart_catch_up() {
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(50), run())
        .await
        .expect("cluster test timed out")
        .unwrap();
    println!("cluster test took {:?}", t0.elapsed());
}

async fn run() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let opts = LogStoreOptions::new().log_capacity(4 << 20);
    let mut c = Cluster::new(dir.path(), fast_config(40)?, opts);
    let members = BTreeSet::from([1, 2, 3]);
    for id in &members {
        c.start(*id).await?;
    }
    c.initialize(1, &members).await?;
    let leader = c.leader(STEP).await?;

    let last = write_range(&c, 0..60).await?;
    for id in &members {
        c.wait_applied(*id, last, STEP).await?;
    }

    // A follower goes down; the others go on, snapshot and purge past what it has.
    let follower = *members.iter().find(|id| **id != leader).unwrap();
    kill_write_restart(&mut c, follower, 60..160).await?;
    let purged = c.node(leader).raft.metrics().borrow().purged;
    assert!(purged.is_some(), "the leader purged its log");

    // Then the leader goes down: a new leader is elected and writes go on.
    kill_write_restart(&mut c, leader, 160..200).await?;

    // A short outage: the follower catches up from the leader's log, appending after the
    // entries it recovered.
    let leader = c.leader(STEP).await?;
    let follower = *members.iter().find(|id| **id != leader).unwrap();
    kill_write_restart(&mut c, follower, 200..205).await?;

    // Everyone agrees.
    let last = write_range(&c, 205..210).await?;
    let mut states = Vec::new();
    for id in &members {
        c.wait_applied(*id, last, STEP).await?;
        states.push(c.node(*id).sm.state().data);
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        states[0].get("file-12").map(String::as_str),
        Some("inode 206")
    );
    c.shutdown().await?;
    Ok(())
}
