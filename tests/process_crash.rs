//! Process-crash test: a child process appends in a loop and reports each acknowledged LSN
//! through a pipe; the parent SIGKILLs it at a random moment, recovers the log, and checks that
//! every acknowledged entry is present byte-exact and in order, with nothing after it but the
//! whole in-flight append or batch. The same log then goes through further rounds, so appends
//! after recovery are covered too.
//!
//! Guards against: acknowledging before the barrier, a recovery that drops or reorders
//! acknowledged entries, a batch that survives in part, and appends after recovery that
//! corrupt what came before; beside a checkpointer, a truncation that loses or revives entries
//! (a suffix deleted by an acknowledged `truncate_after` coming back, a kept one lost).
//!
//! A kill cannot lose cache lines (the CPU caches survive it); lost lines are the crash
//! simulator's job (`pmem-sim`). This test proves the logic end to end on real files, in every
//! persistence mode, on tmpfs and on a disk file system (or in `DAXLOG_TEST_DIR`).
//!
//! Replay one round: `DAXLOG_CRASH_SEED=<seed> cargo test --release --test process_crash`.
//! More rounds: `DAXLOG_CRASH_ROUNDS=<n>`.
//!
//! This file is its own test harness (`harness = false`): the same binary is the child when
//! `DAXLOG_CRASH_CHILD` is set.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use daxlog::{Error, Log, Options, PersistenceChoice};

/// A small deterministic generator (xorshift64*), shared by parent and child so the parent can
/// recompute the child's appends.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The payload of entry `lsn` in a log seeded with `seed`.
fn payload(seed: u64, lsn: u64) -> Vec<u8> {
    let mut r = Rng::new(seed ^ lsn.rotate_left(17));
    let len = match r.below(10) {
        0 => r.below(8) as usize,
        1..=6 => 8 + r.below(200) as usize,
        7 | 8 => 200 + r.below(2000) as usize,
        _ => 2000 + r.below(20000) as usize,
    };
    (0..len).map(|_| r.next() as u8).collect()
}

/// The sizes of the child's successive appends (1 = single append, more = batch), starting at
/// `first_lsn`; deterministic in the seed and the starting LSN.
fn batch_plan(seed: u64, first_lsn: u64) -> Rng {
    Rng::new(seed ^ 0xba7c ^ first_lsn.wrapping_mul(31))
}

fn next_batch(plan: &mut Rng) -> u64 {
    if plan.below(4) == 0 {
        2 + plan.below(7)
    } else {
        1
    }
}

fn mode_options(mode: &str) -> Options {
    match mode {
        "auto" => Options::new(),
        "cpu" => Options::new().persistence(PersistenceChoice::ForceCpuFlush),
        "cpu-nt" => Options::new()
            .persistence(PersistenceChoice::ForceCpuFlush)
            .nt_threshold(0),
        "msync" => Options::new().persistence(PersistenceChoice::ForceMsync),
        other => panic!("unknown mode {other}"),
    }
}

/// The child: append forever (until killed or full), printing each acknowledged LSN.
fn child(path: &Path, seed: u64, mode: &str) -> ! {
    let log = Log::open(path, &mode_options(mode)).expect("child: open");
    let first = log.next_lsn();
    let mut plan = batch_plan(seed, first);
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "start {first}").unwrap();
    out.flush().unwrap();
    let mut lsn = first;
    loop {
        let n = next_batch(&mut plan);
        let payloads: Vec<Vec<u8>> = (lsn..lsn + n).map(|l| payload(seed, l)).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let r = if n == 1 {
            log.append(refs[0]).map(|l| l..l + 1)
        } else {
            log.append_batch(&refs)
        };
        match r {
            Ok(r) => {
                assert_eq!(r, lsn..lsn + n, "child: unexpected LSNs");
                lsn += n;
                writeln!(out, "ack {}", lsn - 1).unwrap();
                out.flush().unwrap();
            }
            Err(Error::Full { .. }) => {
                writeln!(out, "full").unwrap();
                out.flush().unwrap();
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Err(e) => panic!("child: append failed: {e}"),
        }
    }
}

struct Round {
    acked: u64,
    first: u64,
}

/// Runs one child until `kill_after`, SIGKILLs it, and returns what it acknowledged.
fn run_child(path: &Path, seed: u64, mode: &str, kill_after: Duration) -> Round {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("DAXLOG_CRASH_CHILD", path)
        .env("DAXLOG_CRASH_CHILD_SEED", seed.to_string())
        .env("DAXLOG_CRASH_CHILD_MODE", mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acked = 0;
        let mut first = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(v) = line.strip_prefix("ack ") {
                acked = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("start ") {
                first = v.parse().unwrap();
            }
        }
        Round { acked, first }
    });
    // Wait for the child to open the log before starting the clock.
    let t = Instant::now();
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "child exited by itself ({status}) after {:?}",
        t.elapsed()
    );
    reader.join().unwrap()
}

/// Checks the recovered log against what was acknowledged. Returns the recovered last LSN.
fn verify(path: &Path, seed: u64, round: &Round, prev_last: u64, label: &str) -> u64 {
    let log = Log::open(path, &Options::new()).unwrap_or_else(|e| panic!("{label}: open: {e}"));
    let last = log.last_lsn().unwrap_or(0);
    if round.first == 0 {
        // Killed before it opened the log: nothing may have changed.
        assert_eq!(last, prev_last, "{label}: log changed without a writer");
    } else {
        assert_eq!(
            round.first,
            prev_last + 1,
            "{label}: child started at the wrong LSN"
        );
    }
    assert!(
        last >= round.acked,
        "{label}: acknowledged LSN {} lost (recovered up to {last})",
        round.acked
    );
    // What may follow the last acknowledged entry: exactly the next whole append or batch.
    if round.first > 0 && last > round.acked {
        let mut plan = batch_plan(seed, round.first);
        let mut l = round.first;
        let mut in_flight_end = l;
        while l <= round.acked + 1 {
            let n = next_batch(&mut plan);
            in_flight_end = l + n - 1;
            l += n;
        }
        assert_eq!(
            last, in_flight_end,
            "{label}: recovered up to {last}, but the in-flight append after {} ends at {in_flight_end}",
            round.acked
        );
    }
    let mut expect = 1;
    for e in log.iter() {
        assert_eq!(e.lsn, expect, "{label}: LSN out of order");
        assert!(
            e.payload == payload(seed, e.lsn).as_slice(),
            "{label}: payload of LSN {} differs",
            e.lsn
        );
        expect += 1;
    }
    assert_eq!(expect - 1, last, "{label}: iteration stopped early");
    last
}

fn main() {
    if let Ok(path) = std::env::var("DAXLOG_CRASH_CHILD") {
        let seed = std::env::var("DAXLOG_CRASH_CHILD_SEED")
            .unwrap()
            .parse()
            .unwrap();
        let mode = std::env::var("DAXLOG_CRASH_CHILD_MODE").unwrap();
        if std::env::var("DAXLOG_CRASH_CHILD_CHECKPOINT").is_ok() {
            checkpointed_child(Path::new(&path), seed, &mode);
        }
        if let Ok(threads) = std::env::var("DAXLOG_CRASH_CHILD_THREADS") {
            threaded_child(Path::new(&path), seed, &mode, threads.parse().unwrap());
        }
        child(Path::new(&path), seed, &mode);
    }
    let rounds: u64 = std::env::var("DAXLOG_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let base_seed: u64 = std::env::var("DAXLOG_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("process_crash: base seed {base_seed} (replay with DAXLOG_CRASH_SEED={base_seed})");
    let dirs = common::temp_dirs();
    let started = Instant::now();
    let mut kills = 0;
    let mut max_entries = 0;
    for dir in &dirs {
        for mode in ["auto", "cpu", "cpu-nt", "msync"] {
            let seed =
                base_seed ^ crc(mode.as_bytes()) ^ crc(dir.path().as_os_str().as_encoded_bytes());
            let path: PathBuf = dir.path().join(format!("crash-{mode}.dax"));
            Log::create(&path, &Options::new().capacity(32 << 20)).unwrap();
            let mut rng = Rng::new(seed);
            let mut prev_last = 0;
            for r in 0..rounds {
                let kill_after = Duration::from_millis(5 + rng.below(60));
                let label = format!(
                    "seed {seed} mode {mode} dir {} round {r} kill after {kill_after:?}",
                    dir.path().display()
                );
                let mut round = run_child(&path, seed, mode, kill_after);
                round.acked = round.acked.max(prev_last);
                let last = verify(&path, seed, &round, prev_last, &label);
                prev_last = last;
                max_entries = max_entries.max(last);
                kills += 1;
            }
        }
    }
    println!(
        "process_crash: {kills} kills verified in {:?} (up to {max_entries} entries per log)",
        started.elapsed()
    );
    let started = Instant::now();
    let mut kills = 0;
    for dir in &dirs {
        for mode in ["cpu", "msync"] {
            let seed = base_seed ^ crc(b"threads") ^ crc(mode.as_bytes());
            let path: PathBuf = dir.path().join(format!("crash-threads-{mode}.dax"));
            Log::create(&path, &Options::new().capacity(32 << 20)).unwrap();
            let mut rng = Rng::new(seed);
            for r in 0..rounds / 2 {
                let kill_after = Duration::from_millis(5 + rng.below(60));
                let label = format!(
                    "seed {seed} mode {mode} with {THREADS} threads, dir {} round {r}",
                    dir.path().display()
                );
                let (acked, _) = run_threaded_child(&path, seed ^ r, mode, THREADS, kill_after);
                verify_threaded(&path, &acked, &label);
                kills += 1;
            }
        }
    }
    println!(
        "process_crash: {kills} kills of {THREADS}-thread appenders verified in {:?}",
        started.elapsed()
    );
    // More appenders than appends can be in flight, in msync mode: on a disk (slow syncs) the
    // appends beyond the ring ride in one appender's batch (write combining).
    let started = Instant::now();
    let (mut kills, mut combined, mut slow) = (0, 0, false);
    for dir in &dirs {
        let seed = base_seed ^ crc(b"combine");
        let path: PathBuf = dir.path().join("crash-combine.dax");
        Log::create(&path, &Options::new().capacity(32 << 20)).unwrap();
        let mut rng = Rng::new(seed);
        for r in 0..rounds / 2 {
            let kill_after = Duration::from_millis(20 + rng.below(80));
            let label = format!(
                "seed {seed} msync with {MANY_THREADS} threads, dir {} round {r}",
                dir.path().display()
            );
            let (acked, stats) =
                run_threaded_child(&path, seed ^ r, "msync", MANY_THREADS, kill_after);
            verify_threaded(&path, &acked, &label);
            if let Some((c, avg)) = stats {
                combined += c;
                slow |= avg >= Duration::from_micros(20);
            }
            kills += 1;
        }
    }
    println!(
        "process_crash: {kills} kills of {MANY_THREADS}-thread msync appenders verified in {:?} \
         ({combined} acknowledged appends rode in another's batch)",
        started.elapsed()
    );
    // Combining needs the ring full as well as slow syncs: on this machine's disk (the
    // ordinary temporary directory) 32 appenders fill it within milliseconds. On the DAX VM
    // (`DAXLOG_TEST_DIR`), whose emulated CPU, not its syncs, limits the appenders, it may not
    // fill at all: there the rounds check the answers only.
    let on_host_dirs = std::env::var_os("DAXLOG_TEST_DIR").is_none();
    assert!(
        combined > 0 || !slow || !on_host_dirs,
        "syncs averaged 20 µs or more on a disk, yet no append was combined"
    );
    // Appenders and a checkpointer truncating the prefix (and now and then deleting a suffix)
    // beside them, in a log small enough to wrap many times.
    let started = Instant::now();
    let mut kills = 0;
    let (mut suffixes, mut deleted) = (0, 0);
    for (d, dir) in dirs.iter().enumerate() {
        for mode in ["cpu", "msync"] {
            let seed = base_seed ^ crc(b"checkpoint") ^ crc(mode.as_bytes());
            let path: PathBuf = dir.path().join(format!("crash-checkpoint-{mode}.dax"));
            Log::create(&path, &Options::new().capacity(256 << 10)).unwrap();
            let mut rng = Rng::new(seed);
            let mut first = 1;
            let mut r = 0;
            // The planned rounds; then, in the last directory's last mode, more rounds that
            // run longer before the kill until a suffix truncation was acknowledged and
            // deleted an acknowledged entry (a slow machine, or the DAX VM's emulated CPU,
            // may get none in time), for at most 2 minutes.
            let last = d + 1 == dirs.len() && mode == "msync";
            while r < rounds / 2
                || (last
                    && (suffixes == 0 || deleted == 0)
                    && started.elapsed() < Duration::from_secs(120))
            {
                let extra = if r < rounds / 2 { 0 } else { 200 };
                let kill_after = Duration::from_millis(5 + extra + rng.below(60 + extra));
                let label = format!(
                    "seed {seed} mode {mode} with {THREADS} threads and a checkpointer, dir {} round {r}",
                    dir.path().display()
                );
                let run = run_checkpointed_child(&path, seed ^ r, mode, kill_after);
                let gone;
                (first, gone) = verify_checkpointed(&path, &run, first, &label);
                suffixes += run.deleted;
                deleted += gone;
                kills += 1;
                r += 1;
            }
        }
    }
    println!(
        "process_crash: {kills} kills of appenders beside a checkpointer verified in {:?} \
         ({suffixes} suffix truncations acknowledged, {deleted} acknowledged entries they deleted gone)",
        started.elapsed()
    );
    assert!(
        suffixes > 0 && deleted > 0,
        "no acknowledged suffix truncation deleted an acknowledged entry"
    );
    println!("4 passed, 0 failed");
}

const THREADS: u64 = 4;
/// More appenders than the ring of appends in flight holds (16).
const MANY_THREADS: u64 = 32;

/// A payload that names its writer: thread, sequence number, then bytes derived from them.
fn thread_payload(t: u64, i: u64) -> Vec<u8> {
    let mut r = Rng::new(t << 40 | i);
    let len = 8 + r.below(400) as usize;
    let mut v = Vec::with_capacity(16 + len);
    v.extend_from_slice(&t.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.extend((0..len).map(|_| r.next() as u8));
    v
}

/// The child with `threads` appending threads; prints `ack <lsn> <thread> <seq>`, and every
/// 2 ms `stats <combined appends> <average sync in ns>` (`Log::sync_stats`).
fn threaded_child(path: &Path, seed: u64, mode: &str, threads: u64) -> ! {
    let log = Log::open(path, &mode_options(mode)).expect("child: open");
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        let (log_, out_) = (&log, &out);
        s.spawn(move || loop {
            std::thread::sleep(Duration::from_millis(2));
            let st = log_.sync_stats();
            let mut o = out_.lock().unwrap();
            writeln!(o, "stats {} {}", st.combined, st.average_sync.as_nanos()).unwrap();
            o.flush().unwrap();
        });
        for t in 0..threads {
            let (log, out) = (&log, &out);
            s.spawn(move || {
                for i in seed << 20.. {
                    match log.append(&thread_payload(t, i)) {
                        Ok(lsn) => {
                            let mut o = out.lock().unwrap();
                            writeln!(o, "ack {lsn} {t} {i}").unwrap();
                            o.flush().unwrap();
                        }
                        Err(Error::Full { .. }) => loop {
                            std::thread::sleep(Duration::from_secs(1));
                        },
                        Err(e) => panic!("child: append failed: {e}"),
                    }
                }
            });
        }
    });
    unreachable!("appenders never stop")
}

/// An acknowledged append of a threaded child: (LSN, thread, sequence number).
type Acked = (u64, u64, u64);

/// Runs [`threaded_child`] for `kill_after`, kills it, and returns the acknowledged appends
/// `(lsn, thread, seq)` and the last statistics it printed (combined appends, average sync).
fn run_threaded_child(
    path: &Path,
    seed: u64,
    mode: &str,
    threads: u64,
    kill_after: Duration,
) -> (Vec<Acked>, Option<(u64, Duration)>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("DAXLOG_CRASH_CHILD", path)
        .env("DAXLOG_CRASH_CHILD_SEED", (seed % 1000).to_string())
        .env("DAXLOG_CRASH_CHILD_MODE", mode)
        .env("DAXLOG_CRASH_CHILD_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut acked, mut stats) = (Vec::new(), None);
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let (kind, rest) = line.split_once(' ').unwrap_or((&line, ""));
            let f: Vec<u64> = rest.split(' ').filter_map(|x| x.parse().ok()).collect();
            match (kind, f.len()) {
                ("ack", 3) => acked.push((f[0], f[1], f[2])),
                ("stats", 2) => stats = Some((f[0], Duration::from_nanos(f[1]))),
                _ => {}
            }
        }
        (acked, stats)
    });
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Every acknowledged entry is present with its payload; every LSN up to the highest
/// acknowledged one is present (acknowledgement implies every earlier entry is durable); every
/// recovered entry is one that some thread wrote, once.
fn verify_threaded(path: &Path, acked: &[(u64, u64, u64)], label: &str) {
    let log = Log::open(path, &Options::new()).unwrap_or_else(|e| panic!("{label}: open: {e}"));
    let max_acked = acked.iter().map(|a| a.0).max().unwrap_or(0);
    let last = log.last_lsn().unwrap_or(0);
    assert!(
        last >= max_acked,
        "{label}: acknowledged LSN {max_acked} lost (recovered up to {last})"
    );
    for &(lsn, t, i) in acked {
        let e = log
            .read(lsn)
            .unwrap_or_else(|| panic!("{label}: acknowledged LSN {lsn} missing"));
        assert!(
            e.payload == thread_payload(t, i).as_slice(),
            "{label}: payload of LSN {lsn}"
        );
    }
    let mut seen = std::collections::HashMap::new();
    for (expect, e) in (1..).zip(log.iter()) {
        assert_eq!(e.lsn, expect, "{label}: gap in LSNs");
        let t = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
        let i = u64::from_le_bytes(e.payload[8..16].try_into().unwrap());
        assert!(
            e.payload == thread_payload(t, i).as_slice(),
            "{label}: LSN {} is no thread's entry",
            e.lsn
        );
        if let Some(first) = seen.insert((t, i), e.lsn) {
            panic!(
                "{label}: thread {t}'s append {i} is in the log twice, at LSNs {first} and {}",
                e.lsn
            );
        }
    }
}

/// The child with appending threads and a checkpointer: prints `ack <lsn> <thread> <seq>
/// <deletions>` (the suffix truncations that had returned before the append began),
/// `cutting <lsn>` before each `truncate_before(lsn)` and `cut <lsn>` once it returned, and
/// one time in four instead `deleting <lsn> <n>` before the `n`th `truncate_after(lsn)` and
/// `deleted <lsn> <n>` once it returned. Lines are printed whole and in one order.
fn checkpointed_child(path: &Path, seed: u64, mode: &str) -> ! {
    let log = Log::open(path, &mode_options(mode)).expect("child: open");
    let out = std::sync::Mutex::new(std::io::stdout());
    let say = |line: String| {
        let mut o = out.lock().unwrap();
        writeln!(o, "{line}").unwrap();
        o.flush().unwrap();
    };
    let deletions = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (log, say, deletions) = (&log, &say, &deletions);
            s.spawn(move || {
                let mut i = seed << 20;
                loop {
                    let before = deletions.load(Ordering::SeqCst);
                    match log.append(&thread_payload(t, i)) {
                        Ok(lsn) => {
                            say(format!("ack {lsn} {t} {i} {before}"));
                            i += 1;
                        }
                        // The checkpointer makes room.
                        Err(Error::Full { .. }) => std::thread::yield_now(),
                        Err(e) => panic!("child: append failed: {e}"),
                    }
                }
            });
        }
        s.spawn(|| {
            let mut k = seed;
            loop {
                std::thread::sleep(Duration::from_millis(1));
                k = k
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let next = log.next_lsn();
                if (k >> 61) & 3 == 0 {
                    // A deleted suffix: up to 40 entries (every one, if fewer), while the
                    // appenders go on.
                    let first = log.first_lsn().unwrap_or(next);
                    let lsn = next.saturating_sub(1 + (k >> 33) % 40).max(first - 1);
                    let n = deletions.load(Ordering::SeqCst) + 1;
                    say(format!("deleting {lsn} {n}"));
                    log.truncate_after(lsn).expect("child: truncate_after");
                    deletions.store(n, Ordering::SeqCst);
                    say(format!("deleted {lsn} {n}"));
                    continue;
                }
                let lsn = next.saturating_sub((k >> 33) % 300).max(1);
                say(format!("cutting {lsn}"));
                log.truncate_before(lsn).expect("child: truncate_before");
                say(format!("cut {lsn}"));
            }
        });
    });
    unreachable!("appenders never stop")
}

struct Checkpointed {
    /// Acknowledged appends: LSN, thread, sequence number, the suffix truncations that had
    /// returned before the append began, and the position of its line.
    acked: Vec<Ack>,
    /// The highest LSN a truncation was acknowledged for, and the highest one begun.
    cut: u64,
    cutting: u64,
    /// The suffix truncations begun (`truncate_after(lsn)`): LSN and the position of the
    /// line announcing it; and how many returned.
    deleting: Vec<(u64, usize)>,
    deleted: u64,
}

#[derive(Clone, Copy)]
struct Ack {
    lsn: u64,
    t: u64,
    i: u64,
    after: u64,
    line: usize,
}

fn run_checkpointed_child(
    path: &Path,
    seed: u64,
    mode: &str,
    kill_after: Duration,
) -> Checkpointed {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("DAXLOG_CRASH_CHILD", path)
        .env("DAXLOG_CRASH_CHILD_SEED", (seed % 1000).to_string())
        .env("DAXLOG_CRASH_CHILD_MODE", mode)
        .env("DAXLOG_CRASH_CHILD_CHECKPOINT", "1")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut run = Checkpointed {
            acked: Vec::new(),
            cut: 0,
            cutting: 0,
            deleting: Vec::new(),
            deleted: 0,
        };
        for (at, line) in BufReader::new(stdout).lines().enumerate() {
            let line = line.unwrap();
            let mut f = line.split(' ');
            let word = f.next().unwrap_or("");
            let n: Vec<u64> = f.map(|x| x.parse().unwrap()).collect();
            match (word, n.as_slice()) {
                ("ack", &[lsn, t, i, after]) => run.acked.push(Ack {
                    lsn,
                    t,
                    i,
                    after,
                    line: at,
                }),
                ("cutting", &[lsn]) => run.cutting = run.cutting.max(lsn),
                ("cut", &[lsn]) => run.cut = run.cut.max(lsn),
                ("deleting", &[lsn, n]) => {
                    assert_eq!(
                        n,
                        run.deleting.len() as u64 + 1,
                        "suffix truncations in order"
                    );
                    run.deleting.push((lsn, at));
                }
                ("deleted", &[_, n]) => run.deleted = n,
                _ => {}
            }
        }
        // An append that began after a suffix truncation returned acknowledges it too.
        let after = run.acked.iter().map(|a| a.after).max().unwrap_or(0);
        run.deleted = run.deleted.max(after);
        run
    });
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    reader.join().unwrap()
}

/// What became of an acknowledged append through the round's suffix truncations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    /// No truncation deleted it: it must survive (unless a prefix truncation dropped it).
    Kept,
    /// A suffix truncation that returned deleted it: it must never come back.
    Deleted,
    /// It may have been deleted: it overlapped a suffix truncation that may have deleted it
    /// (it began before that returned and was acknowledged after it began), or the
    /// truncation in flight at the kill may have deleted it.
    Either,
}

/// The fate of acknowledged append `a`: `truncate_after(l)` number `n` (from 1) deletes it
/// if `l < a.lsn` and the append was reserved before the truncation; it certainly was if it
/// was acknowledged before the truncation began, and certainly was not if it began after the
/// truncation returned (the child counts those before each append).
fn fate(a: &Ack, run: &Checkpointed) -> Fate {
    let mut fate = Fate::Kept;
    for (n, &(l, began)) in (1..).zip(&run.deleting) {
        if a.after >= n || a.lsn <= l {
            continue;
        }
        if a.line < began && n <= run.deleted {
            return Fate::Deleted;
        }
        fate = Fate::Either;
    }
    fate
}

/// The first LSN lies between the last acknowledged truncation (or the round's first LSN)
/// and the last one begun; every acknowledged entry from the first LSN on that no suffix
/// truncation deleted is present with its payload, and so is every LSN up to the highest
/// such one; no entry a suffix truncation deleted comes back, and no acknowledged entry is
/// found at another LSN; LSNs are gap-free and every recovered entry is one some thread
/// wrote. Returns the first LSN and how many acknowledged appends were found deleted.
fn verify_checkpointed(path: &Path, run: &Checkpointed, before: u64, label: &str) -> (u64, u64) {
    let log = Log::open(path, &Options::new()).unwrap_or_else(|e| panic!("{label}: open: {e}"));
    let first = log.first_lsn().unwrap_or(log.next_lsn());
    assert!(
        first >= run.cut.max(before),
        "{label}: first LSN {first} below the acknowledged truncation before {} (or {before})",
        run.cut
    );
    let fates: Vec<(Ack, Fate)> = run.acked.iter().map(|a| (*a, fate(a, run))).collect();
    let max_kept = fates
        .iter()
        .filter(|f| f.1 == Fate::Kept)
        .map(|f| f.0.lsn)
        .max()
        .unwrap_or(0);
    assert!(
        first <= run.cutting.max(before),
        "{label}: first LSN {first} beyond every truncation begun ({}, or {before})",
        run.cutting
    );
    let last = log.next_lsn() - 1;
    assert!(
        last >= max_kept,
        "{label}: acknowledged LSN {max_kept} lost (recovered up to {last})"
    );
    for (a, _) in fates
        .iter()
        .filter(|f| f.1 == Fate::Kept && f.0.lsn >= first)
    {
        let e = log
            .read(a.lsn)
            .unwrap_or_else(|| panic!("{label}: acknowledged LSN {} missing", a.lsn));
        assert!(
            e.payload == thread_payload(a.t, a.i).as_slice(),
            "{label}: payload of LSN {} (thread {}, entry {}): another entry",
            a.lsn,
            a.t,
            a.i
        );
    }
    let guard = log.pin();
    let mut found = std::collections::HashMap::new();
    for (expect, e) in (first..).zip(guard.iter()) {
        assert_eq!(e.lsn, expect, "{label}: gap in LSNs");
        let t = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
        let i = u64::from_le_bytes(e.payload[8..16].try_into().unwrap());
        assert!(
            e.payload == thread_payload(t, i).as_slice(),
            "{label}: LSN {} is no thread's entry",
            e.lsn
        );
        found.insert((t, i), e.lsn);
    }
    let mut deleted = 0;
    for (a, f) in &fates {
        match (found.get(&(a.t, a.i)), f) {
            (Some(lsn), Fate::Deleted) => panic!(
                "{label}: LSN {lsn} (thread {}, entry {}), deleted by an acknowledged truncate_after, came back",
                a.t, a.i
            ),
            (Some(&lsn), _) => assert_eq!(
                lsn, a.lsn,
                "{label}: thread {}'s entry {} acknowledged as LSN {} found as LSN {lsn}",
                a.t, a.i, a.lsn
            ),
            (None, Fate::Deleted) => deleted += 1,
            (None, _) => {}
        }
    }
    drop(guard);
    log.verify()
        .unwrap_or_else(|e| panic!("{label}: verify: {e}"));
    (first, deleted)
}

fn crc(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}
