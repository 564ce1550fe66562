//! The disk group: write-ahead logs on the temporary directory's file system (ext4 here, a
//! page-cache file system on a disk), every append durable before it returns.
//!
//! - daxlog on its `msync` fallback (the automatic choice there), with its group commit, in
//!   a new log as `Options::new()` creates it (its blocks allocated, unwritten) and in one
//!   created with `Options::prefill` (every block written once at creation);
//! - raft-engine (TiKV's log engine): `Engine::write(batch, sync = true)` of one `put`, its
//!   write group merging concurrent writers into one `fdatasync`;
//! - okaywal: `begin_entry`, `write_chunk`, `commit` (which syncs, batching concurrent
//!   commits);
//! - the naive file WAL: `write` of the entry's bytes to one file opened `O_APPEND`, then
//!   `fdatasync`, by every thread on its own;
//! - the ceiling of a group commit on this disk: one thread writes the bytes of as many
//!   entries as there are threads in the configuration with one `pwrite`, then `fdatasync`,
//!   into a file whose blocks were all written before (so no sync converts unwritten
//!   extents). It is what a group commit whose every sync covered every appender would make,
//!   with no thread waiting for, or waking, another: no log's appends can beat it by much.
//!
//! For 1, 8 and 32 threads and 64 B and 4 KiB payloads, each configuration runs for a fixed
//! time with every thread appending in a loop; the result is the aggregate appends/s and the
//! p50 and p99 of every append's latency, printed as a `DISK` line for the parent.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use daxlog::format::entry_len;
use daxlog::{Log, Options};

use crate::common::*;
use crate::roofline::image;

pub const THREADS: &[usize] = &[1, 8, 32];
pub const SIZES: &[usize] = &[64, 4096];

/// The implementations, by the name of their child group.
pub const ENGINES: &[(&str, &str)] = &[
    ("disk-daxlog", "daxlog (msync fallback, group commit)"),
    (
        "disk-daxlog-prefill",
        "daxlog, prefilled (Options::prefill: no unwritten blocks)",
    ),
    ("disk-raft-engine", "raft-engine 0.4 (write + sync)"),
    ("disk-okaywal", "okaywal 0.3 (commit)"),
    ("disk-filewal", "naive WAL: write + fdatasync per append"),
    (
        DISK_CEILING,
        "ceiling: 1 thread, one pwrite of N entries + fdatasync (N = threads), written file",
    ),
];

/// The child group of the group-commit ceiling.
pub const DISK_CEILING: &str = "disk-ceiling";

/// One measured configuration.
struct Outcome {
    appends: u64,
    secs: f64,
    lat_ns: Vec<u64>,
    /// daxlog only: appends per group sync.
    per_sync: Option<f64>,
}

fn seconds(cfg: &Cfg) -> f64 {
    if cfg.smoke {
        return 0.05;
    }
    std::env::var("DAXLOG_BENCH_DISK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0)
}

/// Runs `append(thread)` in a loop on `threads` threads for `secs` (after a warm-up of a
/// fifth of that), recording every timed call's latency.
fn drive(threads: usize, secs: f64, append: impl Fn(usize) + Sync) -> Outcome {
    let warm = Duration::from_secs_f64(secs / 5.0);
    let run = Duration::from_secs_f64(secs);
    let start = Barrier::new(threads + 1);
    let stop = AtomicBool::new(false);
    let measuring = AtomicBool::new(false);
    let count = AtomicU64::new(0);
    let mut lat_ns = Vec::new();
    let mut elapsed = 0.0;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, stop, measuring, count, append) =
                    (&start, &stop, &measuring, &count, &append);
                s.spawn(move || {
                    let mut mine = Vec::with_capacity(1 << 16);
                    start.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        append(t);
                        let dt = t0.elapsed().as_nanos() as u64;
                        if measuring.load(Ordering::Relaxed) {
                            mine.push(dt);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    mine
                })
            })
            .collect();
        start.wait();
        std::thread::sleep(warm);
        let t0 = Instant::now();
        measuring.store(true, Ordering::Relaxed);
        std::thread::sleep(run);
        measuring.store(false, Ordering::Relaxed);
        elapsed = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            lat_ns.extend(h.join().expect("appender thread"));
        }
    });
    Outcome {
        appends: count.load(Ordering::Relaxed),
        secs: elapsed,
        lat_ns,
        per_sync: None,
    }
}

fn report(engine: &str, size: usize, threads: usize, mut o: Outcome) {
    o.lat_ns.sort_unstable();
    let pct = |p: f64| -> u64 {
        if o.lat_ns.is_empty() {
            return 0;
        }
        o.lat_ns[((o.lat_ns.len() - 1) as f64 * p).round() as usize]
    };
    let rate = o.appends as f64 / o.secs;
    // DISK, engine, payload bytes, threads, appends/s, p50 ns, p99 ns, appends per sync.
    println!(
        "DISK\t{engine}\t{size}\t{threads}\t{rate:.1}\t{}\t{}\t{}",
        pct(0.50),
        pct(0.99),
        o.per_sync.map_or("-".to_string(), |x| format!("{x:.2}"))
    );
}

/// Runs one engine's child group: every thread count and size.
/// Whether `DAXLOG_BENCH_DISK` (a list such as `4096x1,64x8`: payload x threads) selects this
/// configuration; every configuration runs when it is unset.
fn selected(size: usize, threads: usize) -> bool {
    match std::env::var("DAXLOG_BENCH_DISK") {
        Ok(list) => list
            .split(',')
            .any(|c| c.trim() == format!("{size}x{threads}")),
        Err(_) => true,
    }
}

pub fn run(cfg: &Cfg, group: &str) {
    let secs = seconds(cfg);
    for &size in SIZES {
        for &threads in THREADS {
            if !selected(size, threads) {
                continue;
            }
            let dir = cfg.tmp.join(format!("{group}-{size}-{threads}"));
            std::fs::create_dir_all(&dir).expect("scratch directory");
            let o = match group {
                "disk-daxlog" => daxlog(&dir, size, threads, secs, false),
                "disk-daxlog-prefill" => daxlog(&dir, size, threads, secs, true),
                "disk-raft-engine" => raft_engine(&dir, size, threads, secs),
                "disk-okaywal" => okaywal(&dir, size, threads, secs),
                "disk-filewal" => filewal(&dir, size, threads, secs),
                DISK_CEILING => {
                    let file = if cfg.smoke { 1 << 20 } else { 64 << 20 };
                    ceiling(&dir, size, threads, secs, file)
                }
                other => panic!("unknown disk group {other:?}"),
            };
            report(group, size, threads, o);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn daxlog(dir: &Path, size: usize, threads: usize, secs: f64, prefill: bool) -> Outcome {
    let p = payload(size);
    // Room for the run (and its warm-up) at 100,000 appends/s.
    let cap = ((secs * 1.25 * 100_000.0) as usize * entry_len(size)).clamp(64 << 20, 1 << 30);
    let log = Log::create(
        dir.join("log.dax"),
        &Options::new()
            .capacity(round_page(cap) as u64)
            .prefill(prefill),
    )
    .expect("create log");
    assert_eq!(
        log.persistence(),
        daxlog::Persistence::Msync,
        "not a DAX mount"
    );
    log.prefault();
    let before = log.sync_stats();
    let mut o = drive(threads, secs, |_| {
        log.append(&p)
            .expect("append (a full log: shorten DAXLOG_BENCH_DISK_SECS)");
    });
    let after = log.sync_stats();
    let syncs = after.syncs - before.syncs;
    let appends = (after.appends + after.combined) - (before.appends + before.combined);
    o.per_sync = (syncs > 0).then(|| appends as f64 / syncs as f64);
    o
}

fn raft_engine(dir: &Path, size: usize, threads: usize, secs: f64) -> Outcome {
    let cfg = raft_engine::Config {
        dir: dir.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let engine = raft_engine::Engine::open(cfg).expect("open raft-engine");
    let p = payload(size);
    let keys: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    drive(threads, secs, |t| {
        let k = keys[t].fetch_add(1, Ordering::Relaxed);
        let mut batch = raft_engine::LogBatch::default();
        batch
            .put(t as u64 + 1, k.to_be_bytes().to_vec(), p.clone())
            .expect("put");
        engine.write(&mut batch, true).expect("write");
    })
}

fn okaywal(dir: &Path, size: usize, threads: usize, secs: f64) -> Outcome {
    let wal = okaywal::WriteAheadLog::recover(dir, okaywal::LogVoid).expect("open okaywal");
    let p = payload(size);
    let o = drive(threads, secs, |_| {
        let mut e = wal.begin_entry().expect("begin_entry");
        e.write_chunk(&p).expect("write_chunk");
        e.commit().expect("commit");
    });
    let _ = wal.shutdown();
    o
}

fn filewal(dir: &Path, size: usize, threads: usize, secs: f64) -> Outcome {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("wal.log"))
        .expect("create WAL file");
    f.sync_all().expect("fsync");
    let img = image(size, 1, 0);
    drive(threads, secs, |_| {
        (&f).write_all(&img).expect("write");
        f.sync_data().expect("fdatasync");
    })
}

/// The ceiling of a group commit covering `covered` appends per sync: one thread, one `pwrite`
/// of `covered` consecutive entries' bytes and one `fdatasync` per call, into a file of
/// `file` bytes written to the end beforehand and synced (the writes go round in it). Each
/// call counts as `covered` appends of the call's latency.
fn ceiling(dir: &Path, size: usize, covered: usize, secs: f64, file: u64) -> Outcome {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("ceiling.log"))
        .expect("create ceiling file");
    let zeros = vec![0u8; 1 << 20];
    for at in (0..file).step_by(zeros.len()) {
        f.write_all_at(&zeros, at).expect("write the file once");
    }
    f.sync_all().expect("fsync");
    let one = image(size, 1, 0);
    let step = (one.len() * covered) as u64;
    // The entries, then an end marker's zero word, as a daxlog sync writes them.
    let mut run: Vec<u8> = one.repeat(covered);
    run.extend_from_slice(&[0u8; 8]);
    let at = AtomicU64::new(0);
    let mut o = drive(1, secs, |_| {
        let mut off = at.load(Ordering::Relaxed);
        if off + run.len() as u64 > file {
            off = 0;
        }
        f.write_all_at(&run, off).expect("pwrite");
        f.sync_data().expect("fdatasync");
        at.store(off + step, Ordering::Relaxed);
    });
    o.appends *= covered as u64;
    o.per_sync = Some(covered as f64);
    o
}
