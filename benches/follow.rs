//! Followers: how fast, and how soon after an append returns, a reader sees the entry.
//!
//! `cargo bench --bench follow` (about half a minute). For 64 B and 1 KiB entries, in a log on
//! /dev/shm (the msync path: page cache, so the numbers are those of the protocol, not of the
//! media):
//!
//! - **catch-up rate**: entries/s of reading 200 000 durable entries, by an in-process
//!   `Follower` (zero-copy, through the writer's `Log`) and by a `Reader` in another process
//!   (each entry copied out and validated), whose first pass also maps the log's pages into
//!   its process and whose second pass reads pages already mapped;
//! - **lag**: a writer appends one entry every 20 µs (a busy follower) or every 1 ms (a
//!   follower that goes to sleep between entries); for each entry, the time from the append
//!   returning to the follower having it, median, p99 and max, for both kinds of follower.
//!
//! Both processes read `CLOCK_MONOTONIC`, so their timestamps compare directly. The child
//! process is this binary run with `DAXLOG_FOLLOW_CHILD` set.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daxlog::{Log, Options, Reader};

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const CATCH_UP: u64 = 200_000;

/// The child: a `Reader` that reads `n` entries from `from` and prints, per entry, the
/// monotonic time it had it (`lag` mode), or the time for all of them (`rate` mode).
fn child(path: &Path, mode: &str, n: u64) {
    let mut r = Reader::open(path).unwrap();
    r.seek(1).unwrap();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut payload = Vec::new();
    if mode == "rate" {
        // Two passes: the first maps each page of the log into this process as it goes (the
        // writer's own mapping has them all: that is what the in-process follower reads), the
        // second reads pages already mapped, like a follower that has been running a while.
        for pass in ["cold", "warm"] {
            r.seek(1).unwrap();
            let t = Instant::now();
            for _ in 0..n {
                r.next_into_timeout(&mut payload, Duration::from_secs(10))
                    .unwrap()
                    .expect("an entry within 10 s");
            }
            writeln!(out, "{pass} {}", t.elapsed().as_nanos()).unwrap();
        }
    } else {
        let mut seen = Vec::with_capacity(n as usize);
        while (seen.len() as u64) < n {
            let lsn = r
                .next_into_timeout(&mut payload, Duration::from_secs(10))
                .unwrap()
                .expect("an entry within 10 s");
            seen.push((lsn, now_ns()));
        }
        for (lsn, at) in seen {
            writeln!(out, "{lsn} {at}").unwrap();
        }
    }
    out.flush().unwrap();
}

fn spawn(
    path: &Path,
    mode: &str,
    n: u64,
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .env("DAXLOG_FOLLOW_CHILD", format!("{mode} {n}"))
        .env("DAXLOG_FOLLOW_PATH", path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    (c, lines)
}

fn fresh(dir: &Path, name: &str) -> (PathBuf, Log) {
    let path = dir.join(name);
    let log = Log::create(&path, &Options::new().capacity(512 << 20).overwrite(true)).unwrap();
    log.prefault();
    (path, log)
}

/// Catch-up rate: entries/s of an in-process `Follower` and of a `Reader` in another process
/// over `CATCH_UP` entries already durable.
fn rate(dir: &Path, size: usize) -> (f64, f64, f64) {
    let (path, log) = fresh(dir, "rate.dax");
    let p = vec![0x5a; size];
    for _ in 0..CATCH_UP {
        log.append(&p).unwrap();
    }
    let mut f = log.follow(1);
    let t = Instant::now();
    let mut sum = 0usize;
    for _ in 0..CATCH_UP {
        sum += f
            .next_timeout(Duration::from_secs(1))
            .unwrap()
            .unwrap()
            .payload
            .len();
    }
    let inproc = CATCH_UP as f64 / t.elapsed().as_secs_f64();
    assert_eq!(sum, size * CATCH_UP as usize);
    let (c, mut lines) = spawn(&path, "rate", CATCH_UP);
    let mut pass = || -> f64 {
        let line = lines.next().unwrap().unwrap();
        let ns: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        CATCH_UP as f64 / (ns / 1e9)
    };
    let (cold, warm) = (pass(), pass());
    drop(lines);
    let _ = c.wait_with_output();
    (inproc, cold, warm)
}

/// Lag from an append's return to a follower having the entry: (median, p99, max) in µs, for
/// an in-process follower thread, then (in a second run) a `Reader` in another process. One
/// follower at a time: with two followers and the writer, three busy threads would share the
/// two vCPUs of the machines this runs on, and the lag would measure the scheduler.
fn lag(dir: &Path, size: usize, every: Duration, n: u64) -> ([f64; 3], [f64; 3]) {
    let p = vec![0x33; size];
    let paced = |log: &Log, acked: &mut [u64]| {
        let start = Instant::now();
        for i in 0..n {
            // Paced: the i-th append starts i * every after the start.
            while start.elapsed() < every * i as u32 {
                std::hint::spin_loop();
            }
            let lsn = log.append(&p).unwrap();
            acked[lsn as usize] = now_ns();
        }
    };
    let stats = |acked: &[u64], seen: &[u64]| {
        let mut d: Vec<f64> = (1..=n as usize)
            .map(|l| (seen[l] as f64 - acked[l] as f64) / 1e3)
            .collect();
        d.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let at = |q: f64| d[((d.len() - 1) as f64 * q) as usize];
        [at(0.5), at(0.99), d[d.len() - 1]]
    };
    // In-process follower.
    let (_, log) = fresh(dir, "lag.dax");
    let mut acked = vec![0u64; n as usize + 1];
    let mut local = vec![0u64; n as usize + 1];
    std::thread::scope(|s| {
        let log = &log;
        let follower = s.spawn(move || {
            let mut f = log.follow(1);
            let mut seen = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let e = f
                    .next_timeout(Duration::from_secs(10))
                    .unwrap()
                    .expect("appended");
                seen.push((e.lsn, now_ns()));
            }
            seen
        });
        paced(log, &mut acked);
        for (lsn, at) in follower.join().unwrap() {
            local[lsn as usize] = at;
        }
    });
    let inproc = stats(&acked, &local);
    drop(log);
    // A reader in another process.
    let (path, log) = fresh(dir, "lag.dax");
    let (mut c, lines) = spawn(&path, "lag", n);
    let mut acked = vec![0u64; n as usize + 1];
    paced(&log, &mut acked);
    let mut remote = vec![0u64; n as usize + 1];
    for l in lines {
        let l = l.unwrap();
        let mut f = l.split(' ');
        let lsn: usize = f.next().unwrap().parse().unwrap();
        remote[lsn] = f.next().unwrap().parse().unwrap();
    }
    c.wait().unwrap();
    (inproc, stats(&acked, &remote))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn main() {
    if let Ok(spec) = std::env::var("DAXLOG_FOLLOW_CHILD") {
        let mut f = spec.split(' ');
        let mode = f.next().unwrap().to_string();
        let n: u64 = f.next().unwrap().parse().unwrap();
        child(
            Path::new(&std::env::var("DAXLOG_FOLLOW_PATH").unwrap()),
            &mode,
            n,
        );
        return;
    }
    // `cargo test` runs benches with --bench absent: a smoke run only.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("daxlog-follow-")
        .tempdir_in(base)
        .unwrap();
    println!(
        "followers on {} ({} vCPUs), log on {} (msync path), {}",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.path().display(),
        if smoke { "smoke run" } else { "full run" }
    );
    println!();
    println!("| entry | in-process Follower | Reader in another process, first pass (pages mapped as it reads) | ratio | Reader, second pass | ratio |");
    println!("|---|--:|--:|--:|--:|--:|");
    for size in [64, 1024] {
        if !smoke {
            let (a, cold, warm) = rate(dir.path(), size);
            println!(
                "| {size} B | {:.2} M entries/s | {:.2} M entries/s | {:.2} | {:.2} M entries/s | {:.2} |",
                a / 1e6,
                cold / 1e6,
                cold / a,
                warm / 1e6,
                warm / a
            );
        }
    }
    println!();
    println!("| entry | one append every | in-process: median / p99 / max | other process: median / p99 / max |");
    println!("|---|--:|--:|--:|");
    let runs: &[(u64, u64)] = if smoke {
        &[(20, 200)]
    } else {
        &[(20, 50_000), (1000, 2_000)]
    };
    for size in [64, 1024] {
        for &(us, n) in runs {
            let (l, r) = lag(dir.path(), size, Duration::from_micros(us), n);
            println!(
                "| {size} B | {us} µs | {:.1} / {:.1} / {:.0} µs | {:.1} / {:.1} / {:.0} µs |",
                l[0], l[1], l[2], r[0], r[1], r[2]
            );
        }
    }
}
