//! `daxlog-raft-node`: one node of a daxlog-raft cluster, serving openraft's RPCs and the
//! client, admin and metrics API over HTTP on `--listen` (see the crate's README, "Running a
//! cluster"). Prints `daxlog-raft-node <id> listening on <addr>` once it accepts connections;
//! exits 0 on SIGTERM or SIGINT after shutting Raft down, and 1 with the reason on stderr if
//! Raft stops by itself (a fatal storage error), or if the shutdown after a signal does not
//! end within 30 s (a Raft that hangs). Logs go to stderr, filtered by `RUST_LOG`
//! (nothing by default).

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use daxlog_raft::node::{Node, NodeOptions};
use daxlog_raft::NodeId;

/// One node of a daxlog-raft cluster.
#[derive(Parser, Debug)]
#[command(name = "daxlog-raft-node", version)]
struct Args {
    /// The node's id (the same on every restart).
    #[arg(long)]
    id: NodeId,
    /// The address to listen on, host:port; peers and clients reach the node there.
    #[arg(long)]
    listen: String,
    /// The node's directory (log.dax, meta.dax, sm/).
    #[arg(long)]
    data_dir: PathBuf,
    /// Initialize a new cluster of this node alone, with a new cluster id (nothing happens if
    /// the store already has a vote or a log; refused if the node took its cluster id from a
    /// leader). Only on the very first start of the first node: a node started with it on a
    /// wiped directory is a cluster of its own.
    #[arg(long)]
    init: bool,
    /// Build a snapshot (and purge the log behind it) every this many entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Capacity of a new Raft log file, in bytes (an existing one keeps the capacity it was
    /// made with).
    #[arg(long, default_value_t = 64 << 20)]
    log_capacity: u64,
    /// The leader's heartbeat interval, in milliseconds (at least 1).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,
    /// The shortest election timeout, in milliseconds.
    #[arg(long, default_value_t = 300)]
    election_min_ms: u64,
    /// The longest election timeout, in milliseconds.
    #[arg(long, default_value_t = 600)]
    election_max_ms: u64,
    /// Serve the /test/* routes (partitions).
    #[arg(long)]
    test_hooks: bool,
    /// How long /append waits for its entry to be committed (and /admin/add-learner for the
    /// learner to catch up) before answering that the outcome is not known yet, in ms.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// How many Raft entries of client writes the leader proposes at a time; writes that
    /// arrive meanwhile go together into the next entry.
    #[arg(long, default_value_t = daxlog_raft::node::DEFAULT_WRITES_IN_FLIGHT as u64,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    writes_in_flight: u64,
    /// Threads that run the node (Raft, its storage, the HTTP server): 1 runs everything on
    /// one thread, with no wake-ups between threads (the fastest on few CPUs shared with other
    /// processes); more use tokio's work-stealing runtime with that many workers. Syncs to a
    /// disk run on separate blocking threads either way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: u64,
    /// Snapshot and purge the log whenever more than this per cent of it is in use, whatever
    /// --snapshot-every says (100: only by --snapshot-every).
    #[arg(long, default_value_t = daxlog_raft::node::DEFAULT_PURGE_ABOVE,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    purge_above_percent: u8,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n as usize)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("daxlog-raft-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(start(args));
    // (Dropping the runtime would wait for its blocking tasks, such as a sync stuck on a
    // failing disk, without a limit.)
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

async fn start(args: Args) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daxlog-raft-node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long a shutdown after SIGTERM or SIGINT may take before the node exits with status 1.
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn run(args: Args) -> Result<(), daxlog_raft::node::Error> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before the readiness line: a signal sent right after it is never lost.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let opts = NodeOptions {
        init: args.init,
        snapshot_every: args.snapshot_every,
        log_capacity: args.log_capacity,
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
        test_hooks: args.test_hooks,
        request_timeout: std::time::Duration::from_millis(args.request_timeout_ms),
        writes_in_flight: args.writes_in_flight as usize,
        purge_above_percent: (args.purge_above_percent < 100).then_some(args.purge_above_percent),
        ..NodeOptions::new(args.id, args.listen, args.data_dir)
    };
    let node = Node::start(opts).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "daxlog-raft-node {} listening on {}",
            node.id(),
            node.addr()
        )?;
        out.flush()?;
    }
    // (Biased: if Raft stopped and a signal came at once, the stop is reported.)
    let stopped = tokio::select! {
        biased;
        why = node.raft_stopped() => Some(why),
        _ = term.recv() => None,
        _ = int.recv() => None,
    };
    let Some(why) = stopped else {
        // Bounded: a Raft whose core hangs (openraft 0.9 waits for ever on a state machine
        // that failed) would otherwise keep the process up, ignoring the signal.
        return match tokio::time::timeout(SHUTDOWN_LIMIT, node.shutdown()).await {
            Ok(done) => done,
            Err(_) => Err(format!(
                "shutdown did not end within {} s: Raft hangs",
                SHUTDOWN_LIMIT.as_secs()
            )
            .into()),
        };
    };
    // Raft stopped by itself: this node can no longer take part. Exit with the reason (a
    // supervisor may restart it; its files stay) instead of staying up looking alive.
    if tokio::time::timeout(std::time::Duration::from_secs(5), node.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown after Raft stopped took more than 5 s: exiting anyway");
    }
    Err(format!("Raft stopped: {why}").into())
}
