//! A replicated metadata journal: three openraft nodes in one process, each keeping its Raft
//! log in daxlog files, connected by an in-process router.
//!
//! It writes through the leader, shuts a node down, keeps writing, restarts the node from its
//! files and checks that it catches up; then it prints append latencies: a bare daxlog append,
//! a single-node log-store append, and a replicated write through the 3-node cluster.
//!
//! ```text
//! cargo run --release -p daxlog-raft --example replicated_journal [DIR]
//! ```
//!
//! Without DIR the files go to a temporary directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use daxlog_raft::cluster::{fast_config, Cluster, Error};
use daxlog_raft::{LogStore, LogStoreOptions, Request, TypeConfig};
use openraft::storage::RaftLogStorageExt;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

const STEP: Duration = Duration::from_secs(10);

fn op(i: u64) -> Request {
    Request::Set {
        key: format!("/vol0/dir{}/file{}", i % 7, i),
        value: format!("inode={} mode=0644 size={}", 1000 + i, i * 512),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let tmp = tempfile::tempdir()?;
    let root = match std::env::args().nth(1) {
        Some(dir) => dir.into(),
        None => tmp.path().to_path_buf(),
    };
    println!("files in {}", root.display());

    // A measuring tool: the DAXLOG_* variables may choose the persistence path (the store
    // itself reads none unless given options built with `from_env`).
    let opts = LogStoreOptions::new()
        .daxlog(daxlog::Options::from_env())
        .log_capacity(16 << 20);
    let mut c = Cluster::new(&root, fast_config(200)?, opts.clone());
    let members = BTreeSet::from([1, 2, 3]);
    for id in &members {
        c.start(*id).await?;
    }
    c.initialize(1, &members).await?;
    let leader = c.leader(STEP).await?;
    println!("3 nodes up, leader is node {leader}");

    let mut last = 0;
    for i in 0..100 {
        last = c.write(op(i), STEP).await?.1;
    }
    println!("wrote 100 journal records through the leader (last log index {last})");

    let victim = *members.iter().find(|id| **id != leader).unwrap();
    let had = c.node(victim).raft.metrics().borrow().last_log_index;
    c.stop(victim).await?;
    println!("node {victim} shut down at log index {had:?}");

    for i in 100..400 {
        last = c.write(op(i), STEP).await?.1;
    }
    let lm = c.node(leader).raft.metrics().borrow().clone();
    println!(
        "wrote 300 more with node {victim} down (last index {last}; leader snapshot at {:?}, log purged up to {:?})",
        lm.snapshot.map(|l| l.index),
        lm.purged.map(|l| l.index)
    );

    let t = Instant::now();
    let node = c.open(victim).await?;
    let recovered = node.sm.state();
    println!(
        "node {victim} reopened from its files: applied up to {:?}, {} keys",
        recovered.last_applied.map(|l| l.index),
        recovered.data.len()
    );
    c.connect(victim);
    let m = c.wait_applied(victim, last, STEP).await?;
    println!(
        "node {victim} caught up to index {last} in {:?} (snapshot {:?})",
        t.elapsed(),
        m.snapshot.map(|l| l.index)
    );
    let want = c.node(leader).sm.state().data;
    for id in &members {
        c.wait_applied(*id, last, STEP).await?;
        assert_eq!(c.node(*id).sm.state().data, want, "node {id} differs");
    }
    println!("all 3 nodes hold the same {} keys", want.len());

    // Figures.
    println!();
    let (persistence, map_sync) = probe(&root, &opts)?;
    println!("persistence: {persistence} (MAP_SYNC: {map_sync})");
    let payload = serde_json::to_vec(&entry(1, 1))?;
    let single = bench_daxlog(&root, &opts, payload.len(), 5000)?;
    print_line(&format!("daxlog append ({} B)", payload.len()), &single);
    let store = bench_store(&root.join("bench-store"), &opts, 2000).await?;
    print_line("log-store append (1 node)", &store);
    let mut replicated = Vec::with_capacity(1000);
    for i in 0..1000 {
        let t = Instant::now();
        c.write(op(10_000 + i), STEP).await?;
        replicated.push(t.elapsed());
    }
    print_line("replicated write (3 nodes)", &replicated);

    c.shutdown().await?;
    Ok(())
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(op(index)),
    }
}

/// The persistence mode daxlog picks for files under `root`, and whether it got MAP_SYNC.
fn probe(root: &Path, opts: &LogStoreOptions) -> Result<(String, bool), Error> {
    let path = root.join("probe.dax");
    let opts = opts.daxlog_options_for(root).capacity(1 << 16);
    let log = daxlog::Log::create(&path, &opts.overwrite(true))?;
    let found = (log.persistence().to_string(), log.map_sync());
    drop(log);
    std::fs::remove_file(path)?;
    Ok(found)
}

/// Bare daxlog appends of `len` bytes.
fn bench_daxlog(
    root: &Path,
    opts: &LogStoreOptions,
    len: usize,
    n: usize,
) -> Result<Vec<Duration>, Error> {
    let path = root.join("bench-single.dax");
    // The store's choice of persistence mode: see `LogStoreOptions::persistence`.
    let dax_opts = opts.daxlog_options_for(root).overwrite(true);
    let log = daxlog::Log::create(&path, &dax_opts)?;
    let payload = vec![b'x'; len];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        log.append(&payload)?;
        out.push(t.elapsed());
    }
    Ok(out)
}

/// One-entry appends to a log store (encoding included), no Raft.
async fn bench_store(dir: &Path, opts: &LogStoreOptions, n: u64) -> Result<Vec<Duration>, Error> {
    let mut store = LogStore::<TypeConfig>::open(dir, opts)?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let e = entry(1, i);
        let t = Instant::now();
        store.blocking_append([e]).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

fn print_line(what: &str, samples: &[Duration]) {
    let mut s = samples.to_vec();
    s.sort();
    let pct = |p: f64| s[((s.len() - 1) as f64 * p) as usize];
    let mean = s.iter().sum::<Duration>() / s.len() as u32;
    println!(
        "{what:<28} n={:<5} p50={:>9.1?} p99={:>9.1?} mean={:>9.1?}",
        s.len(),
        pct(0.5),
        pct(0.99),
        mean
    );
}
