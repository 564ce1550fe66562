//! Readers in other processes.
//!
//! - `followers_in_other_processes_see_exactly_what_was_acknowledged`: a writer process
//!   appends to a 1 MiB log for about 200 laps, truncating its head when full and deleting a
//!   short suffix now and then, while two reader processes follow it; every entry a reader
//!   prints must be one the writer acknowledged, with that content, in LSN order, with no gap
//!   but the ones it reported (`Error::Truncated`) and going back only where it reported a
//!   suffix deletion (`Error::Rewound`). Guards against a reader handing out bytes that are
//!   not the entry it validated (a wrap that reuses them while it copies), against shipping
//!   entries before they are durable (beyond the published LSN), and against silent gaps.
//! - the locks between processes: `create` with overwrite fails while a reader (in another
//!   process) has the log open and works once that reader is killed; a killed reader never
//!   blocks a writer; a snapshot (`open_read_only`) and a writer exclude each other.
//! - a reader notices that its file was replaced.
//!
//! The same binary is the child process when `DAXLOG_READERS_ROLE` is set.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daxlog::{Error, LockHolder, Log, Options, Reader};

mod common;

/// A fresh directory in `DAXLOG_TEST_DIR` (the DAX mount, in the VM), else /dev/shm.
fn scratch() -> tempfile::TempDir {
    let base = if let Ok(d) = std::env::var("DAXLOG_TEST_DIR") {
        PathBuf::from(d)
    } else if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix("daxlog-readers")
        .tempdir_in(base)
        .unwrap()
}

/// The payload of LSN `lsn` in generation `gen` (a suffix deletion starts a new generation
/// for the LSNs it rewrites): its own LSN and generation first, then bytes derived from them.
fn payload(lsn: u64, gen: u64) -> Vec<u8> {
    let mut x = lsn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ gen.rotate_left(29) ^ 0x5bd1_e995;
    let len = 16 + (x % 700) as usize;
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&lsn.to_le_bytes());
    p.extend_from_slice(&gen.to_le_bytes());
    while p.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    p
}

/// The (LSN, generation) a payload claims, if its bytes are the ones `payload` makes.
fn decode(p: &[u8]) -> Option<(u64, u64)> {
    if p.len() < 16 {
        return None;
    }
    let lsn = u64::from_le_bytes(p[..8].try_into().unwrap());
    let gen = u64::from_le_bytes(p[8..16].try_into().unwrap());
    (payload(lsn, gen) == p).then_some((lsn, gen))
}

const DONE: &[u8] = b"DONE";

fn spawn(role: &str, path: &Path, test: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("DAXLOG_READERS_ROLE", role)
        .env("DAXLOG_READERS_PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Runs the child role of this process, if it is one; returns false in the parent.
fn child_role() -> bool {
    let Ok(role) = std::env::var("DAXLOG_READERS_ROLE") else {
        return false;
    };
    let path = PathBuf::from(std::env::var("DAXLOG_READERS_PATH").unwrap());
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    // The test harness has printed "test NAME ... " without a newline: start a line.
    writeln!(out).unwrap();
    match role.as_str() {
        "writer" => writer(&path, &mut out),
        "follower" => follower(&path, &mut out),
        "holder" => {
            let _r = Reader::open(&path).unwrap();
            writeln!(out, "HOLDER-OPEN").unwrap();
            out.flush().unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        other => panic!("unknown role {other}"),
    }
    std::process::exit(0);
}

/// Appends until the log has wrapped 200 times (20 in the DAX VM); prints `A lsn gen` for every acknowledged
/// entry and `X lsn` for every suffix deletion (entries after `lsn` deleted).
fn writer(path: &Path, out: &mut impl Write) {
    let log = Log::open(path, &Options::new()).unwrap();
    let cap = log.capacity();
    let mut gens: HashMap<u64, u64> = HashMap::new();
    let mut written = 0u64;
    let mut n = 0u64;
    // 200 laps; 20 under the DAX VM's software emulation, which is some 30 times slower.
    let laps = if std::env::var("DAXLOG_EXPECT_DAX").as_deref() == Ok("1") {
        20
    } else {
        200
    };
    while written < laps * cap {
        n += 1;
        let lsn = log.next_lsn();
        let gen = *gens.get(&lsn).unwrap_or(&0);
        let p = payload(lsn, gen);
        match log.append(&p) {
            Ok(l) => {
                assert_eq!(l, lsn);
                writeln!(out, "A {lsn} {gen}").unwrap();
                written += p.len() as u64 + 24;
            }
            Err(e) if e.is_full() => {
                // Keep the newest quarter of the entries.
                let keep = (log.len() / 4).max(1);
                log.truncate_before(log.next_lsn() - keep).unwrap();
                continue;
            }
            Err(e) => panic!("append: {e}"),
        }
        if n.is_multiple_of(997) && log.len() > 10 {
            let last = log.last_lsn().unwrap();
            let cut = last - 3;
            log.truncate_after(cut).unwrap();
            writeln!(out, "X {cut}").unwrap();
            for l in cut + 1..=last {
                *gens.entry(l).or_insert(0) += 1;
            }
        }
    }
    let lsn = log.append(DONE).unwrap();
    writeln!(out, "D {lsn}").unwrap();
    out.flush().unwrap();
}

/// Follows from the first LSN; prints `E lsn gen` per entry, `T first last` per truncation
/// missed and `R from` per suffix deletion noticed, until the writer's `DONE`.
fn follower(path: &Path, out: &mut impl Write) {
    let mut r = Reader::open(path).unwrap();
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "follower timed out"
        );
        match r.next_timeout(Duration::from_millis(200)) {
            Ok(Some(e)) if e.payload == DONE => {
                writeln!(out, "D {}", e.lsn).unwrap();
                break;
            }
            Ok(Some(e)) => match decode(&e.payload) {
                Some((lsn, gen)) if lsn == e.lsn => writeln!(out, "E {lsn} {gen}").unwrap(),
                _ => writeln!(out, "BAD {} {}", e.lsn, e.payload.len()).unwrap(),
            },
            Ok(None) => {}
            Err(Error::Truncated {
                first_missed,
                last_missed,
                ..
            }) => writeln!(out, "T {first_missed} {last_missed}").unwrap(),
            Err(Error::Rewound { from, .. }) => writeln!(out, "R {from}").unwrap(),
            Err(e) => panic!("follower: {e}"),
        }
    }
    out.flush().unwrap();
}

/// Collects a child's output lines while it runs (a full pipe would stop it) and waits for
/// it to succeed.
fn collect(mut child: Child) -> std::thread::JoinHandle<Vec<String>> {
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(out)
            .lines()
            .map(|l| l.unwrap())
            .filter(|l| {
                // (The test harness's own lines.)
                !l.starts_with("running") && !l.starts_with("test ") && !l.is_empty()
            })
            .collect();
        let status = child.wait().unwrap();
        assert!(status.success(), "child failed: {status:?}");
        lines
    })
}

#[test]
fn followers_in_other_processes_see_exactly_what_was_acknowledged() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("followed.dax");
    drop(Log::create(&path, &Options::new().capacity(1 << 20)).unwrap());
    let name = "followers_in_other_processes_see_exactly_what_was_acknowledged";
    let followers: Vec<_> = (0..2)
        .map(|_| collect(spawn("follower", &path, name)))
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let wlines = collect(spawn("writer", &path, name)).join().unwrap();
    let acked: std::collections::HashSet<(u64, u64)> = wlines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0] == "A").then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .collect();
    let deletions = wlines.iter().filter(|l| l.starts_with("X ")).count();
    let done: u64 = wlines.last().unwrap()[2..].parse().unwrap();
    println!(
        "writer: {} appends acknowledged, {deletions} suffix deletions, in {:?}",
        acked.len(),
        t.elapsed()
    );
    for (i, f) in followers.into_iter().enumerate() {
        let flines = f.join().unwrap();
        let (mut next, mut entries, mut missed, mut rewinds) = (None::<u64>, 0u64, 0u64, 0u64);
        for l in &flines {
            let f: Vec<&str> = l.split(' ').collect();
            let n = |k: usize| f[k].parse::<u64>().unwrap();
            match f[0] {
                "E" => {
                    let (lsn, gen) = (n(1), n(2));
                    if let Some(want) = next {
                        assert_eq!(lsn, want, "follower {i}: LSN out of order ({l})");
                    }
                    assert!(
                        acked.contains(&(lsn, gen)),
                        "follower {i}: LSN {lsn} generation {gen} was never acknowledged"
                    );
                    next = Some(lsn + 1);
                    entries += 1;
                }
                "T" => {
                    if let Some(want) = next {
                        assert_eq!(n(1), want, "follower {i}: truncation report ({l})");
                    }
                    missed += n(2) + 1 - n(1);
                    next = Some(n(2) + 1);
                }
                "R" => {
                    let from = n(1);
                    assert!(next.is_some_and(|w| from < w), "follower {i}: rewind ({l})");
                    next = Some(from);
                    rewinds += 1;
                }
                "D" => {
                    assert_eq!(n(1), done);
                    if let Some(want) = next {
                        assert_eq!(n(1), want, "follower {i}: DONE out of order");
                    }
                }
                _ => panic!("follower {i}: {l}"),
            }
        }
        assert!(
            flines.last().unwrap().starts_with("D "),
            "follower {i} did not finish"
        );
        println!(
            "follower {i}: {entries} entries checked, {missed} LSNs reported truncated, {rewinds} rewinds"
        );
        assert!(entries > 500, "follower {i} checked too little");
    }
}

/// Holds a reader open in another process until killed.
fn holder(path: &Path, test: &str) -> Child {
    let mut c = spawn("holder", path, test);
    // (The test harness prints its own lines first.)
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "HOLDER-OPEN" {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the holder died");
    }
    c
}

#[test]
fn replacing_a_log_waits_for_its_readers_and_killed_readers_block_nothing() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("held.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for i in 0..100u32 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    drop(log);
    let mut h = holder(
        &path,
        "replacing_a_log_waits_for_its_readers_and_killed_readers_block_nothing",
    );
    // A writer is not blocked by readers, and appends go on.
    let log = Log::open(&path, &Options::new()).unwrap();
    log.append(b"while read").unwrap();
    drop(log);
    // Re-creating the log is refused while a reader is there: it keeps its log.
    match Log::create(&path, &Options::new().capacity(1 << 20).overwrite(true)) {
        Err(Error::Locked { by, .. }) => assert_eq!(by, LockHolder::Readers),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(Reader::open(&path).unwrap().count(), 101);
    // A killed reader's lock goes with its process.
    h.kill().unwrap();
    h.wait().unwrap();
    let log = Log::create(&path, &Options::new().capacity(1 << 20).overwrite(true)).unwrap();
    assert!(log.is_empty());
}

#[test]
fn snapshots_and_writers_exclude_each_other() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("snap.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    log.append(b"one").unwrap();
    match Log::open_read_only(&path, &Options::new()) {
        Err(Error::Locked { by, .. }) => assert_eq!(by, LockHolder::Writer),
        other => panic!("expected Locked, got {other:?}"),
    }
    // A Reader works beside the writer.
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.next_entry().unwrap().unwrap().payload, b"one");
    drop(log);
    let snap = Log::open_read_only(&path, &Options::new()).unwrap();
    match Log::open(&path, &Options::new()) {
        Err(Error::Locked { by, .. }) => assert_eq!(by, LockHolder::Snapshots),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(snap.iter().next().unwrap().payload, b"one");
    drop(snap);
    Log::open(&path, &Options::new()).unwrap();
}

#[test]
fn a_reader_notices_that_its_log_was_replaced() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("r.dax");
    let other = dir.path().join("other.dax");
    drop(Log::create(&path, &Options::new().capacity(1 << 20)).unwrap());
    drop(Log::create(&other, &Options::new().capacity(1 << 20)).unwrap());
    let mut r = Reader::open(&path).unwrap();
    assert!(r.next_entry().unwrap().is_none());
    std::fs::rename(&other, &path).unwrap();
    match r.next_timeout(Duration::from_millis(300)) {
        Err(Error::Replaced { path: p }) => assert_eq!(p, path),
        other => panic!("expected Replaced, got {other:?}"),
    }
}

/// A reader started anywhere follows truncations: `Truncated` names exactly the LSNs it
/// missed, `Rewound` the first deleted one, and what follows is the new content.
#[test]
fn a_reader_reports_truncations_it_fell_behind() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("t.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=20u64 {
        log.append(&payload(l, 0)).unwrap();
    }
    let mut r = Reader::open(&path).unwrap();
    for l in 1..=5 {
        assert_eq!(r.next_entry().unwrap().unwrap().lsn, l);
    }
    log.truncate_before(11).unwrap();
    match r.next_entry() {
        Err(Error::Truncated {
            first_missed,
            last_missed,
            ..
        }) => assert_eq!((first_missed, last_missed), (6, 10)),
        other => panic!("expected Truncated, got {other:?}"),
    }
    for l in 11..=20 {
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!((e.lsn, decode(&e.payload)), (l, Some((l, 0))));
    }
    log.truncate_after(17).unwrap();
    for l in 18..=22u64 {
        assert_eq!(log.append(&payload(l, 1)).unwrap(), l);
    }
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert_eq!(from, 18),
        other => panic!("expected Rewound, got {other:?}"),
    }
    for l in 18..=22 {
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(decode(&e.payload), Some((l, 1)));
    }
    assert!(r.next_entry().unwrap().is_none());
    // Seeking, and a seek beyond the end that waits for the writer.
    r.seek(12).unwrap();
    assert_eq!(r.next_entry().unwrap().unwrap().lsn, 12);
    r.seek(25).unwrap();
    assert!(r.next_entry().unwrap().is_none());
    for l in 23..=25u64 {
        log.append(&payload(l, 0)).unwrap();
    }
    assert_eq!(r.next_entry().unwrap().unwrap().lsn, 25);
}

/// Guards against a reader in another process shipping an entry before it is durable (a
/// power failure could still take it back): it returns only entries below the published LSN
/// that the writer stores after each barrier, whatever valid entries lie beyond it.
#[test]
fn readers_return_only_published_entries() {
    if child_role() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let dir = scratch();
    let path = dir.path().join("p.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=10u64 {
        log.append(&payload(l, 0)).unwrap();
    }
    drop(log);
    // As if the writer had stored entries 6..=10 but not yet made them durable.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let at = daxlog::format::PUBLISHED_OFFSET as u64;
    f.write_all_at(&6u64.to_le_bytes(), at).unwrap();
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.published(), Some(6));
    let got: Vec<u64> = r.by_ref().map(|e| e.unwrap().lsn).collect();
    assert_eq!(got, [1, 2, 3, 4, 5]);
    assert!(r.next_timeout(Duration::from_millis(50)).unwrap().is_none());
    f.write_all_at(&11u64.to_le_bytes(), at).unwrap();
    let got: Vec<u64> = r.by_ref().map(|e| e.unwrap().lsn).collect();
    assert_eq!(got, [6, 7, 8, 9, 10]);
}

/// Guards against a suffix deletion being reported at the wrong LSN when it reaches further
/// back than the reader remembers, or not at all when a head truncation passed it before the
/// reader looked: the writer records the first deleted LSN of every suffix truncation, so
/// the reader names the first entry it returned that is gone, whatever happened since.
#[test]
fn a_reader_names_every_deletion_exactly() {
    if child_role() {
        return;
    }
    let dir = scratch();
    // A deletion 9,900 entries deep, replaced by entries of other lengths.
    let path = dir.path().join("deep.dax");
    let log = Log::create(&path, &Options::new().capacity(16 << 20)).unwrap();
    for l in 1..=10_000u64 {
        log.append(&payload(l, 0)).unwrap();
    }
    let mut r = Reader::open(&path).unwrap();
    for l in 1..=10_000 {
        assert_eq!(r.next_entry().unwrap().unwrap().lsn, l);
    }
    log.truncate_after(100).unwrap();
    for l in 101..=150u64 {
        log.append(&payload(l, 1)).unwrap();
    }
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert_eq!(from, 101),
        other => panic!("expected Rewound from 101, got {other:?}"),
    }
    for l in 101..=150 {
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(decode(&e.payload), Some((l, 1)));
    }
    assert!(r.next_entry().unwrap().is_none());
    drop(log);

    // A deletion that a head truncation then passed: the caller holds deleted 11..=13.
    let path = dir.path().join("passed.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=20u64 {
        log.append(&payload(l, 0)).unwrap();
    }
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.by_ref().count(), 20);
    log.truncate_after(10).unwrap();
    for l in 11..=15u64 {
        log.append(&payload(l, 1)).unwrap();
    }
    log.truncate_before(14).unwrap();
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert_eq!(from, 11),
        other => panic!("expected Rewound from 11, got {other:?}"),
    }
    match r.next_entry() {
        Err(Error::Truncated {
            first_missed,
            last_missed,
            ..
        }) => assert_eq!((first_missed, last_missed), (11, 13)),
        other => panic!("expected Truncated 11..=13, got {other:?}"),
    }
    for l in 14..=15 {
        assert_eq!(
            decode(&r.next_entry().unwrap().unwrap().payload),
            Some((l, 1))
        );
    }

    // A reader that seeked past entries never returned them: their deletion is no news.
    let mut r = Reader::open(&path).unwrap();
    r.seek(15).unwrap();
    log.truncate_after(14).unwrap();
    log.append(&payload(15, 2)).unwrap();
    let e = r.next_entry().unwrap().unwrap();
    assert_eq!(decode(&e.payload), Some((15, 2)));
}

/// Guards against false reports under a fast writer: a reader racing `truncate_after` used to
/// find a published entry gone and report damage; one racing head truncations and resets
/// (no deletion at all) used to report a deletion. Two threads, one log: the writer appends,
/// truncates its head, resets and deletes suffixes as fast as it can; the reader may be told
/// of truncations and deletions, but every entry it returns must be the latest generation
/// the writer wrote for that LSN at some point, and it must never report damage, nor a
/// deletion when the writer made none.
#[test]
fn a_reader_beside_a_fast_writer_reports_nothing_false() {
    if child_role() {
        return;
    }
    for with_deletions in [false, true] {
        let dir = scratch();
        let path = dir.path().join("race.dax");
        let log = Log::create(&path, &Options::new().capacity(64 << 10)).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        let seen = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut r = Reader::open(&path).unwrap();
                let (mut entries, mut rewinds) = (0u64, 0u64);
                let mut payload = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    match r.next_into(&mut payload) {
                        Ok(Some(lsn)) => {
                            let (l, _gen) = decode(&payload).expect("bytes of an entry");
                            assert_eq!(l, lsn);
                            entries += 1;
                            seen.store(entries, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(None) => std::thread::yield_now(),
                        Err(Error::Truncated { .. }) => {}
                        Err(Error::Rewound { .. }) => rewinds += 1,
                        Err(e) => panic!("reader: {e}"),
                    }
                }
                (entries, rewinds)
            });
            let mut gens: HashMap<u64, u64> = HashMap::new();
            let start = Instant::now();
            let mut n = 0u64;
            // At least 1.5 s of racing, and on until the reader has returned some entries (a
            // loaded machine may starve it for a while): its progress is asserted below.
            while start.elapsed() < Duration::from_millis(1500)
                || (seen.load(std::sync::atomic::Ordering::Relaxed) <= 100
                    && start.elapsed() < Duration::from_secs(60))
            {
                n += 1;
                let lsn = log.next_lsn();
                let gen = *gens.get(&lsn).unwrap_or(&0);
                match log.append(&payload(lsn, gen)) {
                    Ok(_) => {}
                    Err(e) if e.is_full() => {
                        if n.is_multiple_of(3) {
                            log.reset().unwrap();
                        } else {
                            let keep = (log.len() / 3).max(1);
                            log.truncate_before(log.next_lsn() - keep).unwrap();
                        }
                    }
                    Err(e) => panic!("append: {e}"),
                }
                if with_deletions && n.is_multiple_of(7) && log.len() > 4 {
                    let last = log.last_lsn().unwrap();
                    log.truncate_after(last - 2).unwrap();
                    for l in last - 1..=last {
                        *gens.entry(l).or_insert(0) += 1;
                    }
                }
            }
            done.store(true, std::sync::atomic::Ordering::Release);
            let (entries, rewinds) = reader.join().unwrap();
            println!("deletions {with_deletions}: {n} writer steps, reader {entries} entries, {rewinds} rewinds");
            assert!(entries > 100, "the reader kept up a little at least");
            if !with_deletions {
                assert_eq!(rewinds, 0, "no suffix was ever deleted");
            }
        });
    }
}

/// A reader beside three appenders and a checkpointer that drops prefixes and deletes
/// suffixes (up to a few hundred entries deep, so that the reader walks back from an entry it
/// remembered while the head moves on): what the reader is told must add up. It returns LSNs
/// in order; `Truncated` names exactly the LSNs from the one it would have returned next;
/// `Rewound` goes back below that one; and at the end every entry it holds that is still in
/// the log has the log's bytes (a deletion it was not told of would leave it other bytes).
#[test]
fn a_reader_beside_appenders_and_a_checkpointer_accounts_for_every_lsn() {
    if child_role() {
        return;
    }
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let dir = scratch();
    let path = dir.path().join("checkpointed.dax");
    let log = Log::create(&path, &Options::new().capacity(256 << 10)).unwrap();
    let (stop, quiet) = (AtomicBool::new(false), AtomicBool::new(false));
    let (cuts, deletions, got) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let held = std::thread::scope(|s| {
        let mut writers = Vec::new();
        for t in 0..3u64 {
            let (log, stop) = (&log, &stop);
            writers.push(s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    match log.append(&payload(t << 40 | n, 0)) {
                        Ok(_) => n += 1,
                        Err(e) if e.is_full() => std::thread::yield_now(),
                        Err(e) => panic!("append: {e}"),
                    }
                }
            }));
        }
        writers.push(s.spawn(|| {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            while !stop.load(Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::thread::sleep(Duration::from_micros(x % 1000));
                let next = log.next_lsn();
                let first = log.first_lsn().unwrap_or(next);
                // Anywhere from the first LSN to the last: deep deletions too.
                let at = first + (x >> 12) % (next - first + 1);
                if x.is_multiple_of(3) {
                    log.truncate_after(at.max(1) - 1).unwrap();
                    deletions.fetch_add(1, Relaxed);
                } else {
                    log.truncate_before(at).unwrap();
                    cuts.fetch_add(1, Relaxed);
                }
            }
        }));
        let reader = s.spawn(|| {
            let mut r = Reader::open(&path).unwrap();
            let mut expect = r.position();
            let mut held: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut payload = Vec::new();
            // Once the writers stopped, on until it has caught up with everything they did.
            loop {
                match r.next_into(&mut payload) {
                    Ok(Some(lsn)) => {
                        assert_eq!(lsn, expect, "LSNs in order");
                        assert!(decode(&payload).is_some(), "bytes of an entry at {lsn}");
                        held.insert(lsn, payload.clone());
                        expect += 1;
                        got.fetch_add(1, Relaxed);
                    }
                    Ok(None) if quiet.load(Relaxed) => break,
                    Ok(None) => std::thread::yield_now(),
                    Err(Error::Truncated {
                        first_missed,
                        last_missed,
                        ..
                    }) => {
                        assert_eq!(
                            first_missed, expect,
                            "Truncated {first_missed}..={last_missed} with {expect} next"
                        );
                        expect = last_missed + 1;
                        assert_eq!(r.position(), expect);
                    }
                    Err(Error::Rewound { from, .. }) => {
                        assert!(from < expect, "Rewound from {from} with {expect} next");
                        held.split_off(&from);
                        expect = from;
                        assert_eq!(r.position(), expect);
                    }
                    Err(e) => panic!("reader: {e}"),
                }
            }
            held
        });
        // On until the checkpointer did some of each and the reader read a little, at most 60 s.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3)
            || (cuts.load(Relaxed) < 100
                || deletions.load(Relaxed) < 100
                || got.load(Relaxed) < 1000)
                && start.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        quiet.store(true, Relaxed);
        reader.join().unwrap()
    });
    let guard = log.pin();
    let mut compared = 0;
    for (lsn, bytes) in &held {
        if let Some(e) = guard.read(*lsn) {
            assert_eq!(
                e.payload,
                &bytes[..],
                "the reader holds other bytes at {lsn}"
            );
            compared += 1;
        }
    }
    println!(
        "{} cuts, {} deletions, reader {} entries, {compared} compared at the end",
        cuts.load(Relaxed),
        deletions.load(Relaxed),
        got.load(Relaxed)
    );
}

/// `seek` positions the reader where asked, back or forth: back after a seek past the
/// published end (which once left the reader at the first target). The entries a seek passed
/// count as returned: a suffix deletion of some of them is reported (`Rewound`), and the reader
/// goes back to the entries that replace them (it once went on at its target, and a reader
/// started "from now on" skipped the LSNs of the entries appended after such a deletion).
#[test]
fn seek_back_and_forth_and_across_a_deletion() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("seek.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=50u64 {
        log.append(&payload(l, 0)).unwrap();
    }
    let mut r = Reader::open(&path).unwrap();
    r.seek(100).unwrap();
    assert_eq!(r.position(), 100);
    r.seek(10).unwrap();
    assert_eq!(r.position(), 10);
    let lsns: Vec<u64> = r.by_ref().map(|e| e.unwrap().lsn).collect();
    assert_eq!(lsns, (10..=50).collect::<Vec<_>>());

    let mut r = Reader::open(&path).unwrap();
    r.seek(40).unwrap();
    log.truncate_after(20).unwrap();
    for l in 21..=45u64 {
        log.append(&payload(l, 1)).unwrap();
    }
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert_eq!(from, 21),
        other => panic!("expected Rewound from 21, got {other:?}"),
    }
    let got: Vec<_> = r.by_ref().map(|e| decode(&e.unwrap().payload)).collect();
    assert_eq!(got, (21..=45).map(|l| Some((l, 1))).collect::<Vec<_>>());

    // "From now on": a seek to the published end, a suffix deletion below it, appends.
    let mut r = Reader::open(&path).unwrap();
    r.seek(r.published().unwrap()).unwrap();
    assert_eq!(r.position(), 46);
    log.truncate_after(30).unwrap();
    for l in 31..=47u64 {
        log.append(&payload(l, 2)).unwrap();
    }
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert_eq!(from, 31),
        other => panic!("expected Rewound from 31, got {other:?}"),
    }
    let got: Vec<_> = r.by_ref().map(|e| decode(&e.unwrap().payload)).collect();
    assert_eq!(got, (31..=47).map(|l| Some((l, 2))).collect::<Vec<_>>());

    // A seek beyond the published end passes only the entries there are.
    let mut r = Reader::open(&path).unwrap();
    r.seek(60).unwrap();
    log.truncate_after(40).unwrap();
    for l in 41..=61u64 {
        log.append(&payload(l, 3)).unwrap();
    }
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert_eq!(from, 41),
        other => panic!("expected Rewound from 41, got {other:?}"),
    }
    assert_eq!(r.position(), 41);
}

/// Two suffix deletions in quick succession, the second deeper, while a reader in another
/// thread had returned past both and walks back after the first: it is told `Rewound` from the
/// second's first LSN (maybe after one from the first's) and, once caught up, holds every
/// entry's new bytes (it once stepped over the entries between the two cuts, keeping their old
/// bytes without a word).
#[test]
fn a_reader_told_of_two_quick_suffix_deletions_holds_the_new_entries() {
    if child_role() {
        return;
    }
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Mutex;
    let dir = scratch();
    let path = dir.path().join("twocuts.dax");
    let log = Log::create(&path, &Options::new().capacity(32 << 20)).unwrap();
    // LSN -> generation of every live entry, as acknowledged.
    let truth = Mutex::new(BTreeMap::<u64, u64>::new());
    let id = AtomicU64::new(0);
    let append = |n: u64| {
        for _ in 0..n {
            let lsn = log.next_lsn();
            let mut t = truth.lock().unwrap();
            // (Unique per append: a replacement never has the bytes of what it replaces.)
            let gen = id.fetch_add(1, SeqCst);
            let mut p = payload(lsn, gen);
            let len = p.len();
            p.resize(8192, 0);
            p[..8].copy_from_slice(&(len as u64).to_le_bytes());
            p[8..16].copy_from_slice(&lsn.to_le_bytes());
            p[16..24].copy_from_slice(&gen.to_le_bytes());
            assert_eq!(log.append(&p).unwrap(), lsn);
            t.insert(lsn, gen);
        }
    };
    append(200);
    let (stop, round_done, checked, reader_next) = (
        AtomicBool::new(false),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut r = Reader::open(&path).unwrap();
            let mut expect = r.position();
            let mut held = BTreeMap::<u64, u64>::new();
            while !stop.load(SeqCst) {
                match r.next_entry() {
                    Ok(Some(e)) => {
                        assert_eq!(e.lsn, expect, "LSNs in order");
                        let at =
                            |i: usize| u64::from_le_bytes(e.payload[i..i + 8].try_into().unwrap());
                        assert_eq!(at(8), e.lsn);
                        held.insert(e.lsn, at(16));
                        expect += 1;
                    }
                    Ok(None) => {
                        reader_next.store(expect, SeqCst);
                        let round = round_done.load(SeqCst);
                        if round > checked.load(SeqCst) {
                            let t = truth.lock().unwrap();
                            if t.keys().next_back().map(|l| l + 1) == Some(expect) {
                                for (l, gen) in t.iter() {
                                    assert_eq!(held.get(l), Some(gen), "round {round}: entry {l}");
                                }
                                checked.store(round, SeqCst);
                            }
                        }
                        std::hint::spin_loop();
                    }
                    Err(Error::Rewound { from, .. }) => {
                        assert!(from < expect, "Rewound from {from} with {expect} next");
                        held.split_off(&from);
                        expect = from;
                    }
                    Err(Error::Truncated {
                        first_missed,
                        last_missed,
                        ..
                    }) => {
                        assert_eq!(first_missed, expect);
                        expect = last_missed + 1;
                    }
                    Err(e) => panic!("reader: {e}"),
                }
            }
        });
        let start = Instant::now();
        let mut round = 0u64;
        while start.elapsed() < Duration::from_secs(3) {
            round += 1;
            let next = log.next_lsn();
            while reader_next.load(SeqCst) != next {
                std::thread::yield_now();
            }
            let last = next - 1;
            // The first cut just before an entry the reader remembers its place at (every
            // 64th), the second 1 to 40 entries deeper.
            let a = 64 * ((last - 70) / 64) + 62;
            let b = a - 1 - round % 2 * (round % 40);
            log.truncate_after(a).unwrap();
            log.truncate_after(b).unwrap();
            truth.lock().unwrap().split_off(&(b + 1));
            append(last - b + 5);
            if round.is_multiple_of(4) && log.len() > 1000 {
                let first = log.next_lsn() - 300;
                log.truncate_before(first).unwrap();
                truth.lock().unwrap().retain(|&l, _| l >= first);
            }
            round_done.store(round, SeqCst);
            let t = Instant::now();
            while checked.load(SeqCst) < round {
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "the reader never caught up"
                );
                std::thread::yield_now();
            }
        }
        stop.store(true, SeqCst);
    });
}

/// A reader seeks back and forth at random while a writer thread appends, deletes suffixes and
/// drops prefixes, for 2 s (and until it has seen seeks, `Truncated` and `Rewound`; at most
/// a minute). After `seek(l)` returns `Ok`, the next entry (or the first LSN of a `Truncated`)
/// is `l`, or above it only up to the highest prefix truncation begun by then (the reader sees
/// the new head as soon as its metadata is durable, before the writer's own `first_lsn`
/// moves); `seek` fails only with `Rewound` from below `l`, and goes on from there; every
/// entry's payload names its LSN and version; the reader's `Truncated` starts where it would
/// have gone on and `Rewound` below it. (A seek that a prefix truncation overtook returned
/// `Truncated` when it walked forward, and `Ok` but left the reader on the LSN truncated away
/// when it went back: 10 violations within 0.7-1.2 s in each of three runs here.) The soak runs
/// it longer:
/// `cargo test --release --test readers -- --ignored seek_soak` (`DAXLOG_SEEK_SOAK_SECS`,
/// default 60).
#[test]
fn seeks_beside_appends_and_truncations() {
    if child_role() {
        return;
    }
    seek_stress(Duration::from_secs(2));
}

#[test]
#[ignore]
fn seek_soak() {
    let secs: u64 = std::env::var("DAXLOG_SEEK_SOAK_SECS")
        .map(|s| s.parse().expect("DAXLOG_SEEK_SOAK_SECS: seconds"))
        .unwrap_or(60);
    seek_stress(Duration::from_secs(secs));
}

fn seek_stress(least: Duration) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    let dir = scratch();
    let path = dir.path().join("seek-soak.dax");
    let log = Arc::new(Log::create(&path, &Options::new().capacity(128 << 10)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // The highest target of a prefix truncation begun so far.
    let cut = Arc::new(AtomicU64::new(0));
    let writer = {
        let (log, stop, cut) = (log.clone(), stop.clone(), cut.clone());
        std::thread::spawn(move || {
            let (mut x, mut version) = (0x9e37_79b9_7f4a_7c15u64, 0u64);
            while !stop.load(SeqCst) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let next = log.next_lsn();
                let first = log.first_lsn().unwrap_or(next);
                match x % 16 {
                    0 => {
                        let k = first - 1 + (x >> 8) % (next - first + 1);
                        log.truncate_after(k).unwrap();
                    }
                    1 => {
                        let to = (first + (x >> 8) % (next - first + 1)).min(first + 30);
                        cut.fetch_max(to, SeqCst);
                        log.truncate_before(to).unwrap();
                    }
                    _ => {
                        version += 1;
                        match log.append(&payload(next, version)) {
                            Ok(lsn) => assert_eq!(lsn, next),
                            Err(Error::Full { .. }) => {
                                cut.fetch_max(first + 20, SeqCst);
                                log.truncate_before(first + 20).unwrap();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }
        })
    };
    let mut r = Reader::open(&path).unwrap();
    let start = Instant::now();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    // The LSN the next entry must have (unknown after a failed seek).
    let mut expect: Option<u64> = None;
    // After `Ok(seek(l))`: `l`, and the highest prefix truncation begun when it returned. The
    // next entry (or the first LSN a `Truncated` reports) is `l`, or above it up to that
    // truncation's target (whose head the reader may have seen), never beyond.
    let mut sought: Option<(u64, u64)> = None;
    let in_reach = |lsn: u64, (l, cut): (u64, u64)| lsn == l || (l < lsn && lsn <= cut);
    let (mut seeks, mut entries, mut truncated, mut rewound) = (0u64, 0u64, 0u64, 0u64);
    let mut bad = Vec::new();
    let enough = |seeks, truncated, rewound| seeks >= 100 && truncated > 0 && rewound > 0;
    while bad.len() < 10
        && (start.elapsed() < least || !enough(seeks, truncated, rewound))
        && start.elapsed() < least.max(Duration::from_secs(60))
    {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(50) {
            // (Read one after the other beside truncations: `first` may pass `next`.)
            let next = log.next_lsn();
            let first = log.first_lsn().unwrap_or(next);
            let l = first.saturating_sub(5).max(1) + (x >> 8) % (next.saturating_sub(first) + 10);
            seeks += 1;
            match r.seek(l) {
                Ok(()) => {
                    // Not below the head it knows of: a seek to an LSN truncated away goes
                    // to the head.
                    if r.position() < r.first_lsn() {
                        bad.push(format!(
                            "seek({l}) left the reader at {} below its head {}",
                            r.position(),
                            r.first_lsn()
                        ));
                    }
                    (expect, sought) = (Some(l), Some((l, cut.load(SeqCst))));
                }
                // Entries below `l` it had returned were deleted: it goes on from the first of
                // the new ones.
                Err(Error::Rewound { from, .. }) => {
                    if from >= l {
                        bad.push(format!("seek({l}): Rewound from {from}"));
                    }
                    (expect, sought) = (Some(from), None);
                }
                Err(e) => {
                    bad.push(format!("seek({l}): {e}"));
                    (expect, sought) = (None, None);
                }
            }
            continue;
        }
        match r.next_timeout(Duration::from_millis(2)) {
            Ok(Some(e)) => {
                entries += 1;
                if decode(&e.payload).map(|(l, _)| l) != Some(e.lsn) {
                    bad.push(format!("LSN {} holds {:?}", e.lsn, decode(&e.payload)));
                }
                let due = match (sought, expect) {
                    (Some(s), _) => in_reach(e.lsn, s),
                    (None, Some(want)) => e.lsn == want,
                    (None, None) => true,
                };
                if !due {
                    bad.push(format!(
                        "got LSN {} where {expect:?} was due (after a seek, with prefix \
                         truncations begun up to: {sought:?})",
                        e.lsn
                    ));
                }
                (expect, sought) = (Some(e.lsn + 1), None);
            }
            Ok(None) => {}
            Err(Error::Truncated {
                first_missed,
                last_missed,
                ..
            }) => {
                truncated += 1;
                let due = match (sought, expect) {
                    (Some(s), _) => in_reach(first_missed, s),
                    (None, Some(want)) => first_missed == want,
                    (None, None) => true,
                };
                if !due {
                    bad.push(format!(
                        "Truncated {first_missed}..={last_missed} where {expect:?} was due \
                         (after a seek: {sought:?})"
                    ));
                }
                (expect, sought) = (Some(last_missed + 1), None);
            }
            Err(Error::Rewound { from, .. }) => {
                rewound += 1;
                if expect.is_some_and(|w| from >= w) {
                    bad.push(format!("Rewound from {from}, not below {expect:?}"));
                }
                (expect, sought) = (Some(from), None);
            }
            Err(e) => bad.push(format!("next: {e}")),
        }
    }
    stop.store(true, SeqCst);
    writer.join().unwrap();
    log.verify().unwrap();
    eprintln!(
        "seeks beside truncations: {seeks} seeks, {entries} entries, {truncated} Truncated, \
         {rewound} Rewound in {:?}",
        start.elapsed()
    );
    assert!(bad.is_empty(), "{bad:#?}");
    assert!(entries > 0 && enough(seeks, truncated, rewound));
}

/// Guards against a false report of damage when one entry is deleted and appended again and
/// again while a reader copies it: a copy can catch the new entry half stored and then find it
/// published, and that is a race, not damage. Large entries make the copy slow enough to
/// overlap the stores. The reader may be told of the deletions; every entry it returns must be
/// whole (one generation's bytes), and it must never report damage. (A reader that took three
/// failed copies in a row for damage failed this test in 15 of 16 runs on a 2-vCPU machine.)
#[test]
fn a_reader_copying_an_entry_being_replaced_reports_no_damage() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("replaced.dax");
    let log = Log::create(&path, &Options::new().capacity(4 << 20)).unwrap();
    let big = |lsn: u64, gen: u64| {
        let mut p = payload(lsn, gen);
        p.resize(56 << 10, (gen as u8) ^ 0x5a);
        p
    };
    let whole = |p: &[u8]| {
        let (lsn, gen) = (
            u64::from_le_bytes(p[..8].try_into().unwrap()),
            u64::from_le_bytes(p[8..16].try_into().unwrap()),
        );
        (big(lsn, gen) == p).then_some((lsn, gen))
    };
    log.append(&big(1, 0)).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let returned = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut r = Reader::open(&path).unwrap();
            let (mut entries, mut rewinds) = (0u64, 0u64);
            let mut p = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                match r.next_into(&mut p) {
                    Ok(Some(lsn)) => {
                        let (l, _) = whole(&p).expect("one generation's bytes");
                        assert_eq!(l, lsn);
                        entries += 1;
                        returned.store(entries, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(None) => std::hint::spin_loop(),
                    Err(Error::Rewound { .. }) => rewinds += 1,
                    Err(e) => panic!("reader: {e}"),
                }
            }
            (entries, rewinds)
        });
        let start = Instant::now();
        let mut gen = 0u64;
        while start.elapsed() < Duration::from_secs(3)
            || (returned.load(std::sync::atomic::Ordering::Relaxed) < 20
                && start.elapsed() < Duration::from_secs(60)
                && !reader.is_finished())
        {
            gen += 1;
            let t = Instant::now();
            log.truncate_after(1).unwrap();
            log.append(&big(2, gen)).unwrap();
            // As long again with the entry published, so that a copy that caught it half
            // stored is often followed by a look that finds it published.
            let busy = t.elapsed();
            while t.elapsed() < busy * 2 {
                std::hint::spin_loop();
            }
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let (entries, rewinds) = reader.join().unwrap();
        println!("{gen} replacements, reader {entries} entries, {rewinds} rewinds");
        assert!(entries >= 20, "the reader kept up a little at least");
    });
}

/// More suffix deletions than the writer's record of them holds, between two looks of a
/// reader, and then a head truncation past the entries they replaced: the reader cannot know
/// which entries it returned were replaced, so it says that every one from the head it knew
/// may have been (`Rewound`), and that those now gone are missed (`Truncated`), instead of
/// staying silent about replaced entries its caller holds.
#[test]
fn a_reader_that_missed_more_deletions_than_recorded_assumes_the_worst() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("overflow.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=10u64 {
        log.append(&payload(l, 0)).unwrap();
    }
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.by_ref().count(), 10);
    // 70 deletions of 6..=10 (the record holds 64), each followed by new entries.
    for round in 1..=70u64 {
        log.truncate_after(5).unwrap();
        for l in 6..=10u64 {
            log.append(&payload(l, round)).unwrap();
        }
    }
    log.truncate_before(8).unwrap();
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert_eq!(from, 1),
        other => panic!("expected Rewound from 1, got {other:?}"),
    }
    match r.next_entry() {
        Err(Error::Truncated {
            first_missed,
            last_missed,
            ..
        }) => assert_eq!((first_missed, last_missed), (1, 7)),
        other => panic!("expected Truncated 1..=7, got {other:?}"),
    }
    for l in 8..=10 {
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(decode(&e.payload), Some((l, 70)));
    }
    assert!(r.next_entry().unwrap().is_none());

    // Fewer than the record holds: the exact LSN, and nothing below the head reported.
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.by_ref().count(), 3);
    log.truncate_after(8).unwrap();
    log.append(&payload(9, 71)).unwrap();
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert_eq!(from, 9),
        other => panic!("expected Rewound from 9, got {other:?}"),
    }
    assert_eq!(
        decode(&r.next_entry().unwrap().unwrap().payload),
        Some((9, 71))
    );
    assert!(r.next_entry().unwrap().is_none());
}

/// A slot write that a reader finds under way for longer than it waits (the writer was
/// descheduled inside its 64-byte store: the new sequence word visible, the rest not) makes
/// the reader go on with the older copy, which is still current; once the write completes
/// (no sequence word moves then), the reader must see the new slot, or entries validated by
/// it (a new epoch after a suffix truncation) look damaged to it for ever. Emulated by
/// writing the slot copy's bytes by hand.
#[test]
fn a_slot_write_seen_half_done_is_read_again_when_it_completes() {
    use daxlog::format::{SLOT0_OFFSET, SLOT1_OFFSET, SLOT_LEN};
    use std::os::unix::fs::FileExt;
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("stall.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=3u64 {
        log.append(&payload(l, 0)).unwrap();
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let copies = |f: &std::fs::File| {
        [SLOT0_OFFSET, SLOT1_OFFSET].map(|at| {
            let mut b = [0u8; SLOT_LEN];
            f.read_exact_at(&mut b, at as u64).unwrap();
            b
        })
    };
    let mut r = Reader::open(&path).unwrap();
    for l in 1..=2 {
        assert_eq!(
            decode(&r.next_entry().unwrap().unwrap().payload),
            Some((l, 0))
        );
    }
    let before = copies(&f);
    log.truncate_after(2).unwrap();
    let after = copies(&f);
    let i = (0..2).find(|&i| before[i] != after[i]).unwrap();
    let at = [SLOT0_OFFSET, SLOT1_OFFSET][i] as u64;
    // The write under way: its sequence word (the first 8 bytes) and nothing else.
    let mut torn = before[i];
    torn[..8].copy_from_slice(&after[i][..8]);
    f.write_all_at(&torn, at).unwrap();
    assert!(r.next_entry().unwrap().is_none(), "entry 3 is deleted");
    // The write completes, and the entry that replaces 3 is appended and published.
    f.write_all_at(&after[i], at).unwrap();
    log.append(&payload(3, 1)).unwrap();
    let e = r.next_entry().unwrap().unwrap();
    assert_eq!(decode(&e.payload), Some((3, 1)));
    assert!(r.next_entry().unwrap().is_none());
}

/// `Reader::open_waiting` waits for a replacement of the file in progress (the test holds the
/// locks the replacement holds), and gives up with `Locked` once its wait has passed.
#[test]
fn open_waiting_waits_for_a_replacement_and_gives_up_after_its_wait() {
    if child_role() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.dax");
    Log::create(&path, &Options::new().capacity(1 << 20))
        .unwrap()
        .append(b"kept")
        .unwrap();
    let held = common::hold_replacement_locks(&path);
    let refused = |r: daxlog::Result<Reader>| {
        matches!(
            r,
            Err(Error::Locked {
                by: LockHolder::Replacement,
                ..
            })
        )
    };
    assert!(refused(Reader::open(&path)));
    assert!(refused(Reader::open_waiting(&path, Duration::ZERO)));
    let t = Instant::now();
    assert!(refused(Reader::open_waiting(
        &path,
        Duration::from_millis(60)
    )));
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "{:?}",
        t.elapsed()
    );
    let p = path.clone();
    let opener = std::thread::spawn(move || Reader::open_waiting(&p, Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(100));
    drop(held);
    let mut r = opener.join().unwrap().unwrap();
    assert_eq!(r.next_entry().unwrap().unwrap().payload, b"kept");
}

/// Writes `count` over the readers' count of suffix truncations in the file at `path`.
fn damage_deletion_count(path: &std::path::Path, count: u64) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(
            &count.to_le_bytes(),
            daxlog::format::DELETIONS_OFFSET as u64,
        )
        .unwrap();
}

/// The readers' count of suffix truncations is not checksummed: a damaged count (here the
/// largest value) neither stops the writer's `truncate_after` (an overflow) nor hides the
/// deletion from a reader, which goes back to the first entry it cannot vouch for.
#[test]
fn a_damaged_deletion_count_is_survived() {
    if child_role() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for p in [&b"a"[..], b"b", b"c"] {
        log.append(p).unwrap();
    }
    drop(log);
    damage_deletion_count(&path, u64::MAX);
    let log = Log::open(&path, &Options::new()).unwrap();
    let mut r = Reader::open(&path).unwrap();
    for want in [&b"a"[..], b"b", b"c"] {
        assert_eq!(r.next_entry().unwrap().unwrap().payload, want);
    }
    log.truncate_after(1).unwrap();
    log.append(b"B").unwrap();
    match r.next_entry() {
        Err(Error::Rewound { from, .. }) => assert!(from <= 2, "rewound to {from}"),
        other => panic!("expected Rewound, got {other:?}"),
    }
    let mut rest = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        rest.push((e.lsn, e.payload));
    }
    assert_eq!(rest.last(), Some(&(2, b"B".to_vec())), "{rest:?}");
}

/// A count of suffix truncations damaged upwards while a reader runs makes it read ring words
/// no truncation wrote (zeros): it must not take LSN 0 as the first deleted one (which lies
/// below every head, and `0 - 1` below that) but go back no further than the head it knew.
#[test]
fn a_count_damaged_while_a_reader_runs_rewinds_no_further_than_the_head() {
    if child_role() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for p in [&b"a"[..], b"b", b"c", b"d"] {
        log.append(p).unwrap();
    }
    let mut r = Reader::open(&path).unwrap();
    for want in [&b"a"[..], b"b", b"c", b"d"] {
        assert_eq!(r.next_entry().unwrap().unwrap().payload, want);
    }
    // Three truncations counted that never wrote the ring; then a change of the slot that
    // leaves the count alone (a prefix truncation), which makes the reader look.
    damage_deletion_count(&path, 3);
    log.truncate_before(2).unwrap();
    log.append(b"e").unwrap();
    // The reader cannot tell which of the entries it returned were deleted: it goes back to
    // the head it knew (LSN 1, now below the head: reported as truncated), never below.
    let mut seen = Vec::new();
    let mut rewound = Vec::new();
    for _ in 0..20 {
        match r.next_entry() {
            Ok(Some(e)) => seen.push((e.lsn, e.payload)),
            Ok(None) => break,
            Err(Error::Rewound { from, .. }) => rewound.push(from),
            Err(Error::Truncated { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(rewound, vec![1], "seen {seen:?}");
    assert_eq!(
        seen,
        vec![
            (2, b"b".to_vec()),
            (3, b"c".to_vec()),
            (4, b"d".to_vec()),
            (5, b"e".to_vec())
        ]
    );
}

/// A reader asked to wait for ever (`Duration::MAX`) waits for the next entry; it does not
/// overflow.
#[test]
fn a_reader_waits_for_ever_with_duration_max() {
    if child_role() {
        return;
    }
    let dir = scratch();
    let path = dir.path().join("m.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    log.append(b"first").unwrap();
    let mut r = Reader::open(&path).unwrap();
    assert_eq!(r.next_timeout(Duration::MAX).unwrap().unwrap().lsn, 1);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            log.append(b"later").unwrap();
        });
        let e = r.next_timeout(Duration::MAX).unwrap().unwrap();
        assert_eq!((e.lsn, e.payload), (2, b"later".to_vec()));
    });
}
