//! Truncation from `&Log` while other threads append, read, iterate and follow: every entry
//! read has the payload its LSN was appended with, LSN sequences have no gaps, a pinned reader
//! makes appends fail with `Full` naming its LSN instead of being overwritten, and a reopened
//! log holds exactly the acknowledged entries after the last acknowledged truncation.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use daxlog::{Error, Log, Lsn, Options};

/// A payload that names its writer and sequence number, with a length that varies with both
/// (so that entries of different LSNs lie at different offsets lap after lap).
fn payload(thread: u64, seq: u64) -> Vec<u8> {
    let len = 16 + ((thread * 31 + seq * 7) % 200) as usize;
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&thread.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    while p.len() < len {
        p.push((seq as u8).wrapping_mul(13).wrapping_add(p.len() as u8));
    }
    p
}

/// Checks that `p` is a payload [`payload`] makes and returns its writer and sequence number.
fn parse(p: &[u8]) -> (u64, u64) {
    assert!(p.len() >= 16, "a payload of {} bytes", p.len());
    let t = u64::from_le_bytes(p[..8].try_into().unwrap());
    let s = u64::from_le_bytes(p[8..16].try_into().unwrap());
    assert_eq!(p, payload(t, s), "garbage in an entry");
    (t, s)
}

/// Appends from `appenders` threads while one truncates in a loop and readers iterate, read
/// and follow; every read is checked against what was acknowledged for its LSN.
fn run(capacity: u64, appenders: u64, per_thread: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ct.dax");
    let log = Log::create(&path, &Options::new().capacity(capacity)).unwrap();
    // LSN -> (thread, seq) of every acknowledged append.
    let acked: Mutex<HashMap<Lsn, (u64, u64)>> = Mutex::new(HashMap::new());
    let done = AtomicBool::new(false);
    // The last acknowledged truncation (everything below it is gone).
    let truncated = AtomicU64::new(1);
    let fulls = AtomicU64::new(0);
    let skips = AtomicU64::new(0);
    std::thread::scope(|s| {
        let mut writers = Vec::new();
        for t in 0..appenders {
            let (log, acked, fulls) = (&log, &acked, &fulls);
            writers.push(s.spawn(move || {
                let mut seq = 0;
                while seq < per_thread {
                    match log.append(&payload(t, seq)) {
                        Ok(lsn) => {
                            acked.lock().unwrap().insert(lsn, (t, seq));
                            seq += 1;
                        }
                        Err(Error::Full { .. }) => {
                            fulls.fetch_add(1, Ordering::Relaxed);
                            std::thread::yield_now();
                        }
                        Err(e) => panic!("append: {e}"),
                    }
                }
            }));
        }
        // The checkpointer: drops a prefix, keeping a few recent entries.
        let checkpointer = s.spawn(|| {
            let mut rounds = 0u64;
            while !done.load(Ordering::Relaxed) {
                let next = log.next_lsn();
                let keep = rounds % 17;
                let to = next.saturating_sub(keep).max(1);
                if rounds.is_multiple_of(23) {
                    log.reset().unwrap();
                } else {
                    log.truncate_before(to).unwrap();
                }
                let first = log.first_lsn().unwrap_or(log.next_lsn());
                truncated.fetch_max(first.min(to), Ordering::Relaxed);
                rounds += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            rounds
        });
        // Readers: a guard's iteration is gap-free and correct, even while truncated.
        let iterator = s.spawn(|| {
            let mut passes = 0u64;
            while !done.load(Ordering::Relaxed) {
                let last = log.next_lsn() - 1;
                let guard = log.pin();
                let mut expect = None;
                for e in guard.iter() {
                    parse(e.payload);
                    match expect {
                        Some(x) => assert_eq!(e.lsn, x, "a gap in a guard's iteration"),
                        None => assert_eq!(e.lsn, guard.lsn(), "not from the pinned LSN"),
                    }
                    expect = Some(e.lsn + 1);
                }
                if last >= guard.lsn() {
                    assert!(expect.unwrap_or(0) > last, "the iteration ended early");
                }
                passes += 1;
            }
            passes
        });
        let reader = s.spawn(|| {
            let mut reads = 0u64;
            while !done.load(Ordering::Relaxed) {
                let next = log.next_lsn();
                let lsn = next.saturating_sub(1 + reads % 50).max(1);
                if let Some(e) = log.read(lsn) {
                    assert_eq!(e.lsn, lsn);
                    parse(&e.payload);
                }
                reads += 1;
            }
            reads
        });
        // A follower: in order, gap-free but for the truncations it is told of.
        let follower = s.spawn(|| {
            let mut f = log.follow(1);
            // (The checkpointer may have dropped LSN 1 already: a follower starts at the
            // first LSN there is.)
            let mut expect = f.position();
            let mut got = Vec::new();
            loop {
                match f.next_timeout(Duration::from_millis(20)) {
                    Ok(Some(e)) => {
                        assert_eq!(e.lsn, expect, "a follower skipped without saying so");
                        got.push((e.lsn, parse(&e.payload)));
                        expect += 1;
                    }
                    Ok(None) => {
                        if done.load(Ordering::Relaxed) && f.position() == log.next_lsn() {
                            break;
                        }
                    }
                    Err(Error::Truncated {
                        first_missed,
                        last_missed,
                        ..
                    }) => {
                        assert_eq!(first_missed, expect, "a skip not where the follower was");
                        assert!(last_missed >= first_missed);
                        skips.fetch_add(1, Ordering::Relaxed);
                        expect = last_missed + 1;
                        assert_eq!(f.position(), expect);
                    }
                    Err(e) => panic!("follow: {e}"),
                }
            }
            got
        });
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let rounds = checkpointer.join().unwrap();
        assert!(rounds > 0);
        iterator.join().unwrap();
        reader.join().unwrap();
        let followed = follower.join().unwrap();
        let acked = acked.lock().unwrap();
        for (lsn, ts) in &followed {
            assert_eq!(acked.get(lsn), Some(ts), "followed LSN {lsn}");
        }
    });
    let acked = acked.into_inner().unwrap();
    // Every LSN was taken by exactly one acknowledged append.
    let total = appenders * per_thread;
    assert_eq!(acked.len() as u64, total);
    assert_eq!(*acked.keys().max().unwrap(), total);
    // What stays now is exactly the acknowledged entries from the first LSN on.
    let check = |log: &Log, what: &str| {
        let first = log.first_lsn().unwrap_or(log.next_lsn());
        assert!(first >= truncated.load(Ordering::Relaxed), "{what}");
        assert_eq!(log.next_lsn(), total + 1, "{what}");
        let guard = log.pin();
        let mut lsn = first;
        for e in guard.iter() {
            assert_eq!(e.lsn, lsn, "{what}: a gap");
            assert_eq!(
                Some(&parse(e.payload)),
                acked.get(&lsn),
                "{what}: LSN {lsn}"
            );
            lsn += 1;
        }
        assert_eq!(lsn, total + 1, "{what}: entries missing at the end");
        first
    };
    let before = check(&log, "live");
    log.verify().unwrap();
    drop(log);
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(check(&log, "reopened"), before);
    log.verify().unwrap();
}

#[test]
fn truncation_while_appending_reading_and_following() {
    run(1 << 20, 2, 6000);
}

#[test]
fn truncation_in_a_small_log_that_wraps_often() {
    // 64 KiB: a few hundred entries, so the appenders wrap and meet pins and the head.
    run(64 << 10, 3, 3000);
}

#[test]
fn a_pinned_reader_makes_appends_fail_with_full_naming_its_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("p.dax"), &Options::new().capacity(16 << 10)).unwrap();
    for i in 0..20 {
        log.append(&payload(0, i)).unwrap();
    }
    let guard = log.pin();
    assert_eq!(guard.lsn(), 1);
    log.truncate_before(21).unwrap();
    assert!(log.is_empty());
    // The truncated entries stay readable through the guard, and appends do not overwrite
    // them: once the space before the pin is used up, they fail and name it.
    let mut appended = 0;
    let err = loop {
        match log.append(&payload(1, appended)) {
            Ok(_) => appended += 1,
            Err(e) => break e,
        }
        assert!(appended < 1000, "appends never met the pin");
    };
    match err {
        Error::Full { pinned, .. } => assert_eq!(pinned, Some(1)),
        e => panic!("expected Full, got {e}"),
    }
    assert!(err_text_names_pin(&log));
    let mut read = 0;
    for (i, e) in guard.iter().take(20).enumerate() {
        assert_eq!(e.lsn, i as u64 + 1);
        assert_eq!(e.payload, payload(0, i as u64));
        read += 1;
    }
    assert_eq!(read, 20, "the pinned entries are gone");
    drop(guard);
    // Unpinned, the space is free again.
    log.append(&payload(2, 0)).unwrap();
}

fn err_text_names_pin(log: &Log) -> bool {
    // Whatever the append, while the pin holds the space, the message names it.
    match log.append(&[0u8; 4000]) {
        Err(e @ Error::Full { .. }) => e.to_string().contains("LSN 1"),
        _ => false,
    }
}

#[test]
fn a_follower_reports_truncated_entries_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("f.dax"), &Options::new().capacity(1 << 20)).unwrap();
    for i in 0..10 {
        log.append(&payload(0, i)).unwrap();
    }
    let mut f = log.follow(1);
    let e = f.next_timeout(Duration::ZERO).unwrap().unwrap();
    assert_eq!(e.lsn, 1);
    log.truncate_before(6).unwrap();
    match f.next_timeout(Duration::ZERO) {
        Err(Error::Truncated {
            first_missed: 2,
            last_missed: 5,
            ..
        }) => {}
        other => panic!("expected Truncated 2..=5, got {other:?}"),
    }
    let e = f.next_timeout(Duration::ZERO).unwrap().unwrap();
    assert_eq!((e.lsn, e.payload), (6, payload(0, 5)));
}

#[test]
fn a_follower_reports_a_deleted_suffix_it_had_returned() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("r.dax"), &Options::new().capacity(1 << 20)).unwrap();
    for i in 0..5 {
        log.append(&payload(0, i)).unwrap();
    }
    let mut f = log.follow(1);
    for lsn in 1..=5 {
        assert_eq!(f.next_timeout(Duration::ZERO).unwrap().unwrap().lsn, lsn);
    }
    log.truncate_after(3).unwrap();
    assert_eq!(log.append(&payload(1, 0)).unwrap(), 4);
    match f.next_timeout(Duration::ZERO) {
        Err(Error::Rewound { from: 4, .. }) => {}
        other => panic!("expected Rewound from 4, got {other:?}"),
    }
    let e = f.next_timeout(Duration::ZERO).unwrap().unwrap();
    assert_eq!((e.lsn, e.payload), (4, payload(1, 0)));
}

/// `truncate_after` while threads append: each LSN holds one of the payloads acknowledged
/// for it (never garbage), LSNs stay gap-free, and every append that began after the last
/// suffix truncation returned survives, also after reopening.
#[test]
fn suffix_truncation_while_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sfx.dax");
    let log = Log::create(&path, &Options::new().capacity(256 << 10)).unwrap();
    let acked: Mutex<HashMap<Lsn, Vec<(u64, u64)>>> = Mutex::new(HashMap::new());
    // Appends that began after every suffix truncation had returned: (lsn, thread, seq).
    let late: Mutex<Vec<(Lsn, u64, u64)>> = Mutex::new(Vec::new());
    let cuts = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    const CUTS: u64 = 60;
    std::thread::scope(|s| {
        let mut writers = Vec::new();
        for t in 0..2u64 {
            let (log, acked, late, cuts, done) = (&log, &acked, &late, &cuts, &done);
            writers.push(s.spawn(move || {
                let (mut seq, mut after_last) = (0, 0);
                while !done.load(Ordering::Relaxed) || after_last < 20 {
                    let before = cuts.load(Ordering::SeqCst);
                    match log.append(&payload(t, seq)) {
                        Ok(lsn) => {
                            acked.lock().unwrap().entry(lsn).or_default().push((t, seq));
                            if before == CUTS {
                                late.lock().unwrap().push((lsn, t, seq));
                                after_last += 1;
                            }
                        }
                        Err(Error::Full { .. }) => {
                            // Make room: keep the last few hundred entries.
                            let _ = log.truncate_before(log.next_lsn().saturating_sub(200));
                        }
                        Err(e) => panic!("append: {e}"),
                    }
                    seq += 1;
                }
            }));
        }
        let guarded = s.spawn(|| {
            // A reader taking short-lived guards beside the suffix truncations.
            while !done.load(Ordering::Relaxed) {
                let g = log.pin();
                let mut expect = None;
                for e in g.iter() {
                    parse(e.payload);
                    if let Some(x) = expect {
                        assert_eq!(e.lsn, x, "a gap");
                    }
                    expect = Some(e.lsn + 1);
                }
            }
        });
        for _ in 0..CUTS {
            std::thread::sleep(Duration::from_millis(2));
            let last = log.next_lsn() - 1;
            let first = log.first_lsn().unwrap_or(last + 1);
            let cut = last.saturating_sub(5).max(first.saturating_sub(1));
            match log.truncate_after(cut) {
                Ok(()) => {}
                // A checkpoint of an appender moved the first LSN meanwhile.
                Err(Error::LsnOutOfRange { .. }) => {}
                Err(e) => panic!("truncate_after({cut}): {e}"),
            }
            cuts.fetch_add(1, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(5));
        done.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        guarded.join().unwrap();
    });
    let acked = acked.into_inner().unwrap();
    let late = late.into_inner().unwrap();
    assert!(!late.is_empty(), "no append after the last truncation");
    let check = |log: &Log, what: &str| {
        let guard = log.pin();
        let mut expect = None;
        let mut seen = HashMap::new();
        for e in guard.iter() {
            if let Some(x) = expect {
                assert_eq!(e.lsn, x, "{what}: a gap");
            }
            expect = Some(e.lsn + 1);
            let ts = parse(e.payload);
            assert!(
                acked.get(&e.lsn).is_some_and(|v| v.contains(&ts)),
                "{what}: LSN {} holds {ts:?}, never acknowledged for it",
                e.lsn
            );
            seen.insert(e.lsn, ts);
        }
        assert_eq!(expect.unwrap_or(log.next_lsn()), log.next_lsn(), "{what}");
        for &(lsn, t, s) in &late {
            assert_eq!(seen.get(&lsn), Some(&(t, s)), "{what}: a late append lost");
        }
    };
    check(&log, "live");
    log.verify().unwrap();
    drop(log);
    let log = Log::open(&path, &Options::new()).unwrap();
    check(&log, "reopened");
}

/// Fills a new 64 KiB log's first lap exactly to the end of the file (64-byte entries divide
/// the data area), so that the published entries end at the capacity.
fn fill_first_lap(path: &std::path::Path) -> Log {
    let log = Log::create(path, &Options::new().capacity(64 << 10)).unwrap();
    loop {
        match log.append(&[7u8; 40]) {
            Ok(_) => {}
            Err(Error::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    log
}

#[test]
fn reset_with_the_entries_ending_at_the_end_of_the_file_survives_a_reopen() {
    // With a reader pinned at the first entry meanwhile, the tail cannot move back to the
    // start of the data area: the head goes where the entries end, the end of the file.
    for (how, pinned) in [
        ("reset", false),
        ("truncate_before", false),
        ("reset", true),
        ("truncate_before", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("end.dax");
        let log = Log::create(&path, &Options::new().capacity(64 << 10)).unwrap();
        let guard = if pinned { Some(log.pin()) } else { None };
        loop {
            match log.append(&[7u8; 40]) {
                Ok(_) => {}
                Err(Error::Full { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let next = log.next_lsn();
        match how {
            "reset" => log.reset().unwrap(),
            _ => log.truncate_before(next).unwrap(),
        }
        if let Some(g) = &guard {
            assert_eq!(
                g.iter().count() as u64,
                next - 1,
                "the pinned entries are gone"
            );
        }
        drop(guard);
        let a = log.append(b"after reset").unwrap();
        let b = log.append(b"after reset 2").unwrap();
        assert_eq!((a, b), (next, next + 1));
        drop(log);
        let log = Log::open(&path, &Options::new()).unwrap();
        let got: Vec<_> = log.iter().map(|e| (e.lsn, e.payload)).collect();
        assert_eq!(
            got,
            vec![(a, b"after reset".to_vec()), (b, b"after reset 2".to_vec())],
            "{how}, pinned {pinned}"
        );
        assert_eq!(log.next_lsn(), b + 1, "{how}, pinned {pinned}");
        log.verify().unwrap();
    }
}

#[test]
fn reset_at_the_end_of_the_file_then_reopen_while_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("end.dax");
    let log = fill_first_lap(&path);
    let next = log.next_lsn();
    let guard = log.pin();
    log.reset().unwrap();
    drop(guard);
    drop(log);
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(log.iter().count(), 0);
    assert_eq!(log.next_lsn(), next);
    assert_eq!(log.append(b"x").unwrap(), next);
}

/// A suffix truncation waits until no guard is held: called inside the caller's own
/// iteration (which holds one), it fails at once instead of waiting for itself forever (and
/// holding every other truncation and new guard meanwhile).
#[test]
fn truncate_after_inside_the_callers_own_iteration_fails_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(
        Log::create(
            dir.path().join("own.dax"),
            &Options::new().capacity(1 << 20),
        )
        .unwrap(),
    );
    for i in 1..=5u8 {
        log.append(&[i]).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let l = log.clone();
    // (Not a scoped thread: if it hangs, the test reports it instead of hanging too.)
    let t = std::thread::spawn(move || {
        // "Find the first conflicting entry and cut the log there."
        for e in l.iter() {
            if e.payload == [3] {
                let r = l.truncate_after(e.lsn - 1);
                tx.send(r.map_err(|e| e.to_string())).unwrap();
                break;
            }
        }
        // Once the iteration is over, the same call succeeds.
        tx.send(l.truncate_after(2).map_err(|e| e.to_string()))
            .unwrap();
    });
    // (A bound only to report a hang as a failure, not a measure of speed.)
    let inside = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("truncate_after inside the caller's iteration never returned");
    let err = inside.expect_err("truncate_after deleted entries a guard of its caller lends");
    assert!(err.contains("holds a guard"), "{err}");
    let after = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("truncate_after after the iteration never returned");
    assert_eq!(after, Ok(()));
    t.join().unwrap();
    let all: Vec<_> = log.iter().map(|e| (e.lsn, e.payload)).collect();
    assert_eq!(all, vec![(1, vec![1]), (2, vec![2])]);
    assert_eq!(log.append(b"new 3").unwrap(), 3);
}

/// While a suffix truncation waits for a guard another thread holds, other threads' reads
/// (each takes a guard for a moment) go on at their own pace, and once the guard is dropped
/// the truncation completes although those reads go on.
#[test]
fn reads_go_on_while_a_suffix_truncation_waits_for_a_guard() {
    const READS: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(
        Log::create(dir.path().join("r.dax"), &Options::new().capacity(1 << 20)).unwrap(),
    );
    for i in 0..100u8 {
        log.append(&[i]).unwrap();
    }
    let held = log.clone();
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let g = held.pin();
        pinned_tx.send(()).unwrap();
        hold_rx.recv().unwrap();
        assert_eq!(g.read(100).map(|e| e.payload.to_vec()), Some(vec![99]));
    });
    pinned_rx.recv().unwrap();
    let l = log.clone();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let truncator = std::thread::spawn(move || l.truncate_after(90));
    // Readers that never pause: the truncation must not starve once the guard goes.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (l, stop) = (log.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(l.read(50).map(|e| e.payload), Some(vec![49]));
                n += 1;
            }
            n
        }));
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let l = log.clone();
    std::thread::spawn(move || {
        // While the truncation waits (the guard is held), this many reads complete.
        for _ in 0..READS {
            assert_eq!(l.read(50).map(|e| e.payload), Some(vec![49]));
        }
        done_tx.send(()).unwrap();
    });
    // (Bounds only to report a stall as a failure, not a measure of speed: a read that
    // waited ~1 ms for the truncation would need minutes.)
    done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("reads stalled while a suffix truncation waited for another thread's guard");
    assert!(
        !truncator.is_finished(),
        "the truncation did not wait for the guard"
    );
    hold_tx.send(()).unwrap();
    holder.join().unwrap();
    truncator.join().unwrap().unwrap();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(log.next_lsn(), 91);
    assert_eq!(log.read(90).map(|e| e.payload), Some(vec![89]));
    assert!(log.read(91).is_none());
}

/// Guards that overlap (two threads hand a baton: each takes a new guard before the other
/// drops its own, so a guard is always held) do not hold a suffix truncation off: it waits for
/// the guards taken before it began, and a guard taken while it waits reads the entries it
/// keeps and nothing after them.
#[test]
fn overlapping_guards_do_not_hold_off_a_suffix_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("o.dax"), &Options::new().capacity(1 << 20)).unwrap();
    for i in 0..100u8 {
        log.append(&[i]).unwrap();
    }
    let done = AtomicBool::new(false);
    let (mut rounds, mut capped) = (0u64, 0u64);
    let result = std::thread::scope(|s| {
        let (a_tx, a_rx) = std::sync::mpsc::channel::<()>();
        let (b_tx, b_rx) = std::sync::mpsc::channel::<()>();
        let first = log.pin();
        let log = &log;
        let b = s.spawn(move || {
            let mut g = None;
            let mut seen = Vec::new();
            while a_rx.recv().is_ok() {
                drop(g.take());
                let new = log.pin();
                seen.push(new.iter().map(|e| e.payload[0]).collect::<Vec<u8>>());
                g = Some(new);
                if b_tx.send(()).is_err() {
                    break;
                }
            }
            seen
        });
        let done = &done;
        let truncation = s.spawn(move || {
            let r = log.truncate_after(50);
            done.store(true, Ordering::SeqCst);
            r
        });
        // A holds `first` (taken before the truncation began) for one round, then hands on.
        let mut g = Some(first);
        let mut seen = Vec::new();
        let start = std::time::Instant::now();
        while !done.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
            a_tx.send(()).unwrap();
            b_rx.recv().unwrap();
            drop(g.take());
            let new = log.pin();
            seen.push(new.iter().map(|e| e.payload[0]).collect::<Vec<u8>>());
            g = Some(new);
            std::thread::sleep(Duration::from_micros(200));
            rounds += 1;
        }
        assert!(
            done.load(Ordering::SeqCst),
            "the truncation waited 60 s beside overlapping guards ({rounds} rounds)"
        );
        drop(a_tx);
        drop(g);
        seen.extend(b.join().unwrap());
        for s in &seen {
            // Everything (before the truncation), or what it keeps (taken while it waited,
            // or after it).
            let len = s.len();
            assert!(len == 100 || len == 50, "a guard saw {len} entries");
            assert!(s.iter().enumerate().all(|(i, &p)| p as usize == i));
            capped += u64::from(len == 50);
        }
        truncation.join().unwrap()
    });
    result.unwrap();
    assert!(
        capped > 0,
        "guards were taken while it waited or after ({rounds} rounds)"
    );
    assert_eq!(log.next_lsn(), 51);
}

/// A follower beside suffix truncations and appends: it reports [`Error::Rewound`] only for
/// entries it returned, and never returns the same entry twice (each append's payload is
/// unique; after a rewind, the entries it gets again are the replacements).
#[test]
fn a_follower_never_reports_a_rewind_of_entries_it_did_not_return() {
    const ROUNDS: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("f.dax"), &Options::new().capacity(4 << 20)).unwrap();
    let stop = AtomicBool::new(false);
    // The next LSN the follower expects.
    let at = AtomicU64::new(1);
    // The rewinds it was told of so far.
    let rewinds = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut id = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // At most a few entries ahead of the follower, so that it is near the tip
                // when the cuts come (else, on a loaded machine, it may never be).
                if log.next_lsn() > at.load(Ordering::Relaxed) + 8 {
                    std::thread::yield_now();
                    continue;
                }
                match log.append(&id.to_le_bytes()) {
                    Ok(_) => id += 1,
                    Err(Error::Full { .. }) => {
                        let _ = log.truncate_before(log.next_lsn().saturating_sub(100).max(1));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let follower = s.spawn(|| {
            let mut f = log.follow(1);
            // LSN -> id of each entry returned and not reported deleted since.
            let mut returned: HashMap<Lsn, u64> = HashMap::new();
            let mut deleted: HashMap<Lsn, u64> = HashMap::new();
            let mut expect = 1;
            while !stop.load(Ordering::Relaxed) {
                match f.next_timeout(Duration::from_millis(1)) {
                    Ok(Some(e)) => {
                        assert_eq!(e.lsn, expect, "skipped or repeated");
                        let id = u64::from_le_bytes(e.payload[..].try_into().unwrap());
                        assert_ne!(
                            deleted.remove(&e.lsn),
                            Some(id),
                            "LSN {}: the entry reported deleted came back",
                            e.lsn
                        );
                        returned.insert(e.lsn, id);
                        expect += 1;
                        at.store(expect, Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    Err(Error::Truncated { last_missed, .. }) => {
                        expect = last_missed + 1;
                        at.store(expect, Ordering::Relaxed);
                    }
                    Err(Error::Rewound { from, .. }) => {
                        assert!(
                            from < expect,
                            "Rewound from {from}, but the follower returned only up to {}",
                            expect - 1
                        );
                        for l in from..expect {
                            if let Some(id) = returned.remove(&l) {
                                deleted.insert(l, id);
                            }
                        }
                        expect = from;
                        at.store(expect, Ordering::Relaxed);
                        rewinds.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("follow: {e}"),
                }
            }
        });
        // At least ROUNDS rounds, and on until the follower has won the race once (its read of
        // an entry just before the cut deletes it), for at most a minute: a loaded machine may
        // go through many rounds without one.
        let start = std::time::Instant::now();
        let mut round = 0;
        while round < ROUNDS
            || (rewinds.load(Ordering::Relaxed) == 0
                && start.elapsed() < Duration::from_secs(60)
                && !follower.is_finished())
        {
            round += 1;
            // Once the follower has returned an entry, cut from it on: its read of the next
            // one races with the cut.
            if let Some(last) = log.last_lsn() {
                while at.load(Ordering::Relaxed) < last && !follower.is_finished() {
                    std::hint::spin_loop();
                }
                let first = log.first_lsn().unwrap_or(last);
                if last > first + 2 {
                    match log.truncate_after(last - 1) {
                        Ok(()) | Err(Error::LsnOutOfRange { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        follower.join().unwrap();
        assert!(
            rewinds.load(Ordering::Relaxed) > 0,
            "the follower saw no rewind in {round} rounds"
        );
    });
}

/// msync mode: a lone appender that finds reservations blocked by a suffix truncation sleeps
/// until a sync ends; the truncation's wake-up may come before it sleeps, and it must still
/// go on (no other sync may ever come). This test runs the race many times and meets the
/// narrow window of that wake-up only now and then; `tests/held_races.rs` holds the window
/// open and meets it every run.
#[test]
fn a_lone_msync_appender_goes_on_after_each_suffix_truncation() {
    const ROUNDS: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(
        Log::create(
            dir.path().join("m.dax"),
            &Options::new()
                .capacity(8 << 20)
                .persistence(daxlog::PersistenceChoice::ForceMsync),
        )
        .unwrap(),
    );
    let progress = std::sync::Arc::new(AtomicU64::new(0));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // Between two cuts it may append many entries (the cutter is only scheduled now and then
    // on a loaded machine), so the log can fill up: it keeps the last few hundred.
    let appender = common::spawn_number_appender(log.clone(), 0, progress.clone(), stop.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let (l, p) = (log.clone(), progress.clone());
    std::thread::spawn(move || {
        for round in 0..ROUNDS {
            // Wait until the appender appended twice since the last cut.
            let seen = p.load(Ordering::SeqCst);
            while p.load(Ordering::SeqCst) < seen + 2 {
                std::hint::spin_loop();
            }
            let last = l.last_lsn().unwrap();
            match l.truncate_after(last - 1) {
                // (The appender dropped the prefix meanwhile.)
                Ok(()) | Err(Error::LsnOutOfRange { .. }) => {}
                Err(e) => panic!("{e}"),
            }
            let _ = tx.send(round);
        }
    });
    let mut done = 0;
    while done + 1 < ROUNDS {
        // (A bound only to report a hang as a failure, not a measure of speed.)
        done = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the appender stopped after {done} suffix truncations"));
    }
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    // Gap-free, and each entry holds a payload appended for it.
    let mut expect = log.first_lsn().unwrap();
    for e in log.iter() {
        assert_eq!(e.lsn, expect);
        assert_eq!(e.payload.len(), 8);
        expect += 1;
    }
    assert_eq!(expect, log.next_lsn());
}

/// Runs `a` and `b` on two threads, `b` started 50 ms after `a` has begun (a sleep only to
/// make the interleaving likely, not needed for the test to be right); panics if either has
/// not returned within a minute (a hang).
fn both_return(log: &Arc<Log>, a: fn(&Log) -> String, b: fn(&Log) -> String) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (f, delay) in [(a, 0), (b, 50)] {
        let (l, tx) = (log.clone(), tx.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay));
            let _ = tx.send(f(&l));
        });
    }
    (0..2)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("a truncation and a guard holder wait for each other")
        })
        .collect()
}

fn ten_entries(name: &str) -> (tempfile::TempDir, Arc<Log>) {
    let dir = tempfile::tempdir().unwrap();
    let log =
        Arc::new(Log::create(dir.path().join(name), &Options::new().capacity(1 << 20)).unwrap());
    for i in 0..10u64 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    (dir, log)
}

/// A thread that holds a guard (or iterates) and truncates the prefix, beside another thread's
/// suffix truncation, which waits for that guard: both complete.
#[test]
fn a_guard_holders_prefix_truncation_beside_a_suffix_truncation_completes() {
    let (_d, log) = ten_entries("gb");
    let out = both_return(
        &log,
        |l| {
            let guard = l.pin();
            std::thread::sleep(Duration::from_millis(200));
            let r = l.truncate_before(3);
            assert_eq!(
                guard.read(1).map(|e| e.payload.to_vec()),
                Some(0u64.to_le_bytes().to_vec())
            );
            format!("truncate_before {r:?}")
        },
        |l| format!("truncate_after {:?}", l.truncate_after(8)),
    );
    assert!(out.iter().all(|o| o.ends_with("Ok(())")), "{out:?}");
    assert_eq!(log.first_lsn(), Some(3));
    assert_eq!(log.next_lsn(), 9);
    let (_d, log) = ten_entries("gr");
    let out = both_return(
        &log,
        |l| {
            let mut it = l.iter();
            assert_eq!(it.next().map(|e| e.lsn), Some(1));
            std::thread::sleep(Duration::from_millis(200));
            format!("reset {:?}", l.reset())
        },
        |l| format!("truncate_after {:?}", l.truncate_after(8)),
    );
    // (The suffix truncation waits for the iterator, so it comes after the reset and finds
    // LSN 8 gone.)
    assert!(out.iter().any(|o| o == "reset Ok(())"), "{out:?}");
    assert!(
        out.iter()
            .any(|o| o.starts_with("truncate_after Err(LsnOutOfRange")),
        "{out:?}"
    );
    assert_eq!(log.first_lsn(), None);
}

/// A guard holder's own suffix truncation fails with `GuardHeld` at once, even while another
/// thread's suffix truncation waits for that guard (which then completes).
#[test]
fn guard_held_comes_while_another_suffix_truncation_waits() {
    let (_d, log) = ten_entries("gh");
    let out = both_return(
        &log,
        |l| {
            let _guard = l.pin();
            std::thread::sleep(Duration::from_millis(200));
            format!("{:?}", l.truncate_after(7))
        },
        |l| format!("{:?}", l.truncate_after(8)),
    );
    assert!(
        out.iter().any(|o| o.starts_with("Err(GuardHeld")),
        "{out:?}"
    );
    assert!(out.iter().any(|o| o == "Ok(())"), "{out:?}");
    assert_eq!(log.next_lsn(), 9);
}

/// An emptying truncation while a reader pinned the entries leaves the head where they ended;
/// once the reader is gone, a reset makes the free space one piece again (the log was empty
/// already), and an entry that fits an empty log is taken.
#[test]
fn a_reset_of_an_empty_log_joins_its_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("e"), &Options::new().capacity(64 << 10)).unwrap();
    while log.len() < 30 {
        log.append(&[1u8; 1000]).unwrap();
    }
    let g = log.pin();
    log.reset().unwrap();
    drop(g);
    assert!(log.is_empty());
    let big = vec![2u8; 40 << 10];
    assert!(matches!(log.append(&big), Err(Error::Full { .. })));
    log.reset().unwrap();
    let lsn = log.append(&big).unwrap();
    assert_eq!(log.read(lsn).map(|e| e.payload), Some(big));
}

/// A follower waiting for the next entry learns of a suffix truncation that deleted entries it
/// returned when it happens, not when its wait ends.
#[test]
fn a_waiting_follower_is_woken_by_a_suffix_truncation() {
    let (_d, log) = ten_entries("w");
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut f = log.follow(1);
            for _ in 0..10 {
                f.next_timeout(Duration::ZERO).unwrap().unwrap();
            }
            let t = std::time::Instant::now();
            let r = f.next_timeout(Duration::from_secs(120));
            (t.elapsed(), r)
        });
        std::thread::sleep(Duration::from_millis(100));
        log.truncate_after(5).unwrap();
        let (took, r) = h.join().unwrap();
        assert!(matches!(r, Err(Error::Rewound { from: 6, .. })), "{r:?}");
        // (Not a measure of speed: without a wake-up it would take the whole 120 s.)
        assert!(took < Duration::from_secs(60), "slept through the rewind");
    });
}

/// Resets beside an appender, the head just past the start of the data area each time: an
/// append into a log holding a few entries never fails with `Full` (the reset's forced wrap
/// holds reservations for its slot update instead of leaving them the bytes before the old
/// head).
fn no_full_beside_resets(msync: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::new().capacity(1 << 20);
    if msync {
        o = o.persistence(daxlog::PersistenceChoice::ForceMsync);
    }
    let log = Log::create(dir.path().join("r"), &o).unwrap();
    let stop = AtomicBool::new(false);
    let wrong = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // The only appender: the log holds at most one more entry during the append.
                let before = log.len();
                match log.append(&[7u8; 200]) {
                    Ok(_) => {}
                    Err(Error::Full { .. }) if before < 100 => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Full { .. }) => {
                        let _ = log.truncate_before(log.next_lsn() - 10);
                    }
                    Err(e) => panic!("{e}"),
                }
                i += 1;
                for _ in 0..(i % 64) * 50 {
                    std::hint::spin_loop();
                }
            }
        });
        for _ in 0..3000 {
            if let Some(first) = log.first_lsn() {
                let _ = log.truncate_before((first + 1).min(log.next_lsn()));
            }
            std::thread::yield_now();
            log.reset().unwrap();
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(
        wrong.into_inner(),
        0,
        "appends failed with Full on a nearly empty log"
    );
}

#[test]
fn no_full_on_a_nearly_empty_log_beside_resets() {
    no_full_beside_resets(false);
    no_full_beside_resets(true);
}

/// Three threads: a guard holder, a suffix truncation waiting for its guard (the holder took a
/// second guard after the truncation began and dropped the first), and a prefix truncation
/// that takes the truncations' lock before the holder's own prefix truncation. All three
/// return: neither the late guard nor the prefix truncation's short pin waits for the suffix
/// truncation, and it waits for neither. Sleeps only order the steps.
#[test]
fn a_prefix_truncation_beside_a_waiting_suffix_truncation_and_a_late_guard_completes() {
    let (_d, log) = ten_entries("late");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (l, t) = (log.clone(), tx.clone());
    std::thread::spawn(move || {
        let g0 = l.pin();
        std::thread::sleep(Duration::from_millis(200));
        let g1 = l.pin(); // taken while the suffix truncation waits
        drop(g0); // only a late guard is held now
        std::thread::sleep(Duration::from_millis(300));
        let r = l.truncate_before(2);
        drop(g1);
        let _ = t.send(format!("holder {r:?}"));
    });
    let (l, t) = (log.clone(), tx.clone());
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let _ = t.send(format!("suffix {:?}", l.truncate_after(8)));
    });
    let l = log.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(350));
        let _ = tx.send(format!("prefix {:?}", l.truncate_before(3)));
    });
    let out: Vec<String> = (0..3)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(60))
                .expect("two truncations and a guard holder wait for each other")
        })
        .collect();
    // (The holder's truncation to 2 may come after the other's to 3, which makes it a no-op.)
    assert!(out.iter().all(|o| o.ends_with("Ok(())")), "{out:?}");
    assert_eq!(log.first_lsn(), Some(3));
    assert_eq!(log.next_lsn(), 9);
}

/// `reset` beside suffix truncations never fails with `LsnOutOfRange`: it empties the log as
/// of the moment it holds the truncations' lock, not of an earlier `next_lsn` that a suffix
/// truncation may have lowered since.
#[test]
fn reset_beside_suffix_truncations_never_fails() {
    for msync in [false, true] {
        resets_beside_suffix_truncations(msync);
    }
}

fn resets_beside_suffix_truncations(msync: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::new().capacity(1 << 20);
    if msync {
        o = o.persistence(daxlog::PersistenceChoice::ForceMsync);
    }
    let log = Arc::new(Log::create(dir.path().join("r"), &o).unwrap());
    let cuts = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cutter = {
        let (log, stop, cuts) = (log.clone(), stop.clone(), cuts.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for i in 0..8u64 {
                    log.append(&i.to_le_bytes()).unwrap();
                }
                match log.truncate_after(log.next_lsn().saturating_sub(4)) {
                    Ok(()) => {
                        cuts.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::LsnOutOfRange { .. }) => {}
                    Err(e) => panic!("truncate_after: {e}"),
                }
            }
        })
    };
    // Resets at intervals from 50 µs to 1.6 ms, so that some land inside the cutter's round
    // (between its appends and its cut) whatever the medium's sync costs: on a disk-backed
    // temporary directory one msync takes ~0.1 ms and a round of 8 appends and a cut ~1 ms. Goes
    // on until both sides have done enough, not for a fixed time, so that a slow machine only
    // makes the test longer.
    let t = std::time::Instant::now();
    let mut resets = 0u64;
    while (cuts.load(Ordering::Relaxed) < 20 || resets < 20)
        && t.elapsed() < Duration::from_secs(60)
    {
        if let Err(e) = log.reset() {
            stop.store(true, Ordering::Relaxed);
            panic!("reset after {resets} resets: {e:?}");
        }
        resets += 1;
        std::thread::sleep(Duration::from_micros(50 << (resets % 6)));
    }
    stop.store(true, Ordering::Relaxed);
    cutter.join().unwrap();
    let cuts = cuts.load(Ordering::Relaxed);
    assert!(
        cuts >= 20 && resets >= 20,
        "{cuts} cuts beside {resets} resets in {:?}",
        t.elapsed()
    );
}

/// Sets up a suffix truncation that waits for a guard taken before it began, dropped while a
/// late one is held (taken by `late`, after the truncation began); returns what `late` returned
/// and the truncation's result.
fn drain_with_late_guard<T>(
    log: &Arc<Log>,
    late: impl FnOnce() -> T,
) -> (T, std::sync::mpsc::Receiver<daxlog::Result<()>>) {
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let l = log.clone();
    let early = std::thread::spawn(move || {
        let g = l.pin();
        held_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        drop(g);
    });
    held_rx.recv().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let l = log.clone();
    std::thread::spawn(move || {
        let _ = tx.send(l.truncate_after(8));
    });
    // (Sleeps only make the order likely: the truncation waiting for the early guard.)
    std::thread::sleep(Duration::from_millis(100));
    let g = late();
    go_tx.send(()).unwrap();
    early.join().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    (g, rx)
}

/// A guard holder that waits for another thread's read while a suffix truncation waits for
/// guards (a late one of its own among them): the read completes, and the truncation.
#[test]
fn a_guard_holder_waiting_for_another_threads_read_while_a_suffix_truncation_drains() {
    let (_d, log) = ten_entries("fan");
    let (g, truncated) = drain_with_late_guard(&log, || log.pin());
    let (tx, rx) = std::sync::mpsc::channel();
    let l = log.clone();
    std::thread::spawn(move || {
        let _ = tx.send(l.read(3).map(|e| e.payload));
    });
    let read = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a read waited for a truncation that waits for the reader's waiter");
    assert_eq!(read, Some(2u64.to_le_bytes().to_vec()));
    drop(g);
    let r = truncated.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(log.next_lsn(), 9);
}

/// A follower's `next_timeout` keeps to its timeout while a suffix truncation waits for
/// guards and another thread holds a late one for long.
#[test]
fn a_followers_timeout_holds_while_a_suffix_truncation_drains() {
    let (_d, log) = ten_entries("ft");
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (take_tx, take_rx) = std::sync::mpsc::channel::<()>();
    let l = log.clone();
    let holder = std::thread::spawn(move || {
        take_rx.recv().unwrap();
        let _late = l.pin();
        ready_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(30));
    });
    let ((), truncated) = drain_with_late_guard(&log, || {
        take_tx.send(()).unwrap();
        ready_rx.recv().unwrap()
    });
    let mut f = log.follow(1);
    let t = std::time::Instant::now();
    let first = f.next_timeout(Duration::from_millis(10));
    let took = t.elapsed();
    drop(release_tx);
    holder.join().unwrap();
    assert_eq!(first.unwrap().map(|e| e.lsn), Some(1));
    // (Not a measure of speed: without the bound it waits the holder's 30 s.)
    assert!(
        took < Duration::from_secs(10),
        "next_timeout(10 ms) took {took:?}"
    );
    assert!(truncated
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .is_ok());
}

/// A guard taken while a suffix truncation waits, pinned in the part of a wrapped log before
/// the end of the file while a prefix truncation moves the head past the wrap: after the
/// suffix truncation, the guard still sees every entry it saw (its view did not lose the wrap
/// point), and the bytes it lent stay as they were while appends go on.
#[test]
fn a_guard_taken_during_a_suffix_truncation_keeps_its_view_across_the_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(
        dir.path().join("w.dax"),
        &Options::new().capacity(256 << 10),
    )
    .unwrap();
    let p = |i: u64| {
        let mut v = vec![(i % 251) as u8; 1000];
        v[..8].copy_from_slice(&i.to_le_bytes());
        v
    };
    let mut i = 0u64;
    while log.append(&p(i + 1)).is_ok() {
        i += 1;
    }
    log.truncate_before(i - 20).unwrap(); // the head near the end of the file
    for _ in 0..60 {
        i += 1;
        log.append(&p(i)).unwrap(); // these wrap to the start
    }
    let (first, last) = (log.first_lsn().unwrap(), log.last_lsn().unwrap());
    let (keep, head) = (last - 10, last - 30);
    std::thread::scope(|s| {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let l = &log;
        s.spawn(move || {
            let early = l.pin();
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            drop(early);
        });
        held_rx.recv().unwrap();
        let truncation = s.spawn(|| log.truncate_after(keep));
        // (The sleep only makes it likely that the truncation waits for the early guard.)
        std::thread::sleep(Duration::from_millis(20));
        let g = log.pin();
        let lent: Vec<(Lsn, &[u8])> = g.iter().map(|e| (e.lsn, e.payload)).collect();
        let copies: Vec<Vec<u8>> = lent.iter().map(|e| e.1.to_vec()).collect();
        assert_eq!(lent.first().map(|e| e.0), Some(first));
        log.truncate_before(head).unwrap();
        go_tx.send(()).unwrap();
        truncation.join().unwrap().unwrap();
        let again: Vec<Lsn> = g.iter().map(|e| e.lsn).collect();
        assert_eq!(again, lent.iter().map(|e| e.0).collect::<Vec<_>>());
        assert_eq!(g.read(first).map(|e| e.lsn), Some(first));
        let mut n = 0;
        while n < 10_000 && log.append(&p(999_999)).is_ok() {
            n += 1;
        }
        assert!(n > 0);
        for ((lsn, bytes), copy) in lent.iter().zip(&copies) {
            assert_eq!(bytes, copy, "entry {lsn} changed under the guard");
        }
    });
}

/// `verify` while a suffix truncation waits (for a guard taken before it) reads what a guard
/// taken then sees: the entries the truncation keeps, none of those it is about to delete
/// (which appends rewrite once it is done, while the verify may still be reading).
#[test]
fn verify_while_a_suffix_truncation_waits_reads_only_what_it_keeps() {
    let (_d, log) = ten_entries("verify");
    // (`truncate_after(8)` waits for an earlier guard while the verify runs.)
    let (v, truncated) = drain_with_late_guard(&log, || log.verify().unwrap());
    assert_eq!(v.entries, 8, "{v:?}");
    truncated
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap();
    assert_eq!(log.verify().unwrap().entries, 8);
}

/// `used_bytes` and `free_bytes` beside appends, truncations and wraps: always a size the
/// data area can hold (the head moves without the tail: a snapshot of the two taken at
/// different moments gave a head beyond the tail, and used_bytes near 2^64, in 5 of 6 runs
/// on a disk-backed temporary directory).
#[test]
fn space_accounting_beside_truncations_stays_within_the_data_area() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 64u64 << 10;
    let log = Log::create(dir.path().join("space.dax"), &Options::new().capacity(cap)).unwrap();
    let room = cap - daxlog::format::DATA_OFFSET as u64;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut looks = 0u64;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let (used, free) = (log.used_bytes(), log.free_bytes());
                assert!(used <= room, "used_bytes {used} of {room}");
                assert!(free <= room, "free_bytes {free} of {room}");
                looks += 1;
            }
            looks
        });
        let start = std::time::Instant::now();
        let mut n = 0u64;
        while start.elapsed() < std::time::Duration::from_secs(2) && !watcher.is_finished() {
            n += 1;
            match log.append(&[n as u8; 200]) {
                Ok(_) => {}
                Err(e) if e.is_full() => {
                    let keep = (log.len() / 3).max(1);
                    log.truncate_before(log.next_lsn() - keep).unwrap();
                }
                Err(e) => panic!("append: {e}"),
            }
            if n.is_multiple_of(5) && log.len() > 2 {
                log.truncate_before(log.next_lsn() - 1).unwrap();
            }
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        let looks = watcher.join().unwrap();
        println!("{n} writer steps, {looks} looks");
    });
}

/// A follower started past entries a suffix truncation deletes, or that has returned none of
/// them, reports no rewind and returns nothing below where it started: it goes on with the
/// entries that replace them from its start on.
#[test]
fn a_follower_that_returned_nothing_deleted_is_not_rewound() {
    let (_dir, log) = ten_entries("n.dax");
    let mut at_tail = log.follow(11);
    let mut far = log.follow(1000);
    let mut from_8 = log.follow(8);
    assert_eq!(from_8.next_timeout(Duration::ZERO).unwrap().unwrap().lsn, 8);
    log.truncate_after(5).unwrap();
    for i in 6..=12u64 {
        assert_eq!(log.append(&(100 + i).to_le_bytes()).unwrap(), i);
    }
    let e = at_tail.next_timeout(Duration::ZERO).unwrap().unwrap();
    assert_eq!((e.lsn, e.payload), (11, 111u64.to_le_bytes().to_vec()));
    assert_eq!(far.next_timeout(Duration::ZERO).unwrap(), None);
    // It had returned 8, which is gone: rewound to 8, its start, not to 6.
    match from_8.next_timeout(Duration::ZERO) {
        Err(Error::Rewound { from: 8, .. }) => {}
        other => panic!("expected Rewound from 8, got {other:?}"),
    }
    let e = from_8.next_timeout(Duration::ZERO).unwrap().unwrap();
    assert_eq!((e.lsn, e.payload), (8, 108u64.to_le_bytes().to_vec()));
}

/// `truncate_after` with an LSN below the first fails at once: it does not wait for the
/// guards held (during which new readers would see no entry after that LSN, i.e. none).
#[test]
fn a_suffix_truncation_below_the_first_lsn_hides_nothing() {
    let (_dir, log) = ten_entries("o.dax");
    log.truncate_before(6).unwrap();
    let held = log.pin();
    let truncating = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.truncate_after(2))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        log.read(8).map(|e| e.payload),
        Some(7u64.to_le_bytes().to_vec())
    );
    assert_eq!(log.iter().count(), 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !truncating.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the truncation waits for a guard although it cannot delete anything"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    match truncating.join().unwrap() {
        Err(Error::LsnOutOfRange {
            lsn: 2, first: 6, ..
        }) => {}
        other => panic!("expected LsnOutOfRange, got {other:?}"),
    }
    drop(held);
}

/// A follower asked to wait for ever (`Duration::MAX`) waits; it does not overflow.
#[test]
fn a_follower_waits_for_ever_with_duration_max() {
    let (_dir, log) = ten_entries("m.dax");
    let mut f = log.follow(10);
    assert_eq!(f.next_timeout(Duration::MAX).unwrap().unwrap().lsn, 10);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            log.append(b"later").unwrap();
        });
        let e = f.next_timeout(Duration::MAX).unwrap().unwrap();
        assert_eq!((e.lsn, e.payload), (11, b"later".to_vec()));
    });
}

/// A follower rewound once is rewound again only if a later suffix truncation deletes an
/// entry it returned: padding just below the first rewind, which it skipped, is not one.
#[test]
fn a_follower_is_not_rewound_for_padding_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::create(dir.path().join("p.dax"), &Options::new().capacity(1 << 20)).unwrap();
    for i in 1..=3u64 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(log.append_padding(1).unwrap(), 4..5);
    for i in 5..=7u64 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    let mut f = log.follow(1);
    let mut got = Vec::new();
    while let Some(e) = f.next_timeout(Duration::ZERO).unwrap() {
        got.push(e.lsn);
    }
    assert_eq!(got, [1, 2, 3, 5, 6, 7]);
    log.truncate_after(4).unwrap();
    match f.next_timeout(Duration::ZERO) {
        Err(Error::Rewound { from: 5, .. }) => {}
        other => panic!("expected Rewound from 5, got {other:?}"),
    }
    // Deletes only the padding at 4.
    log.truncate_after(3).unwrap();
    assert_eq!(f.next_timeout(Duration::ZERO).unwrap(), None);
    assert_eq!(log.append(b"four").unwrap(), 4);
    let e = f.next_timeout(Duration::ZERO).unwrap().unwrap();
    assert_eq!((e.lsn, e.payload), (4, b"four".to_vec()));
    // And one that deletes an entry it returned is reported.
    log.truncate_after(2).unwrap();
    match f.next_timeout(Duration::ZERO) {
        Err(Error::Rewound { from: 3, .. }) => {}
        other => panic!("expected Rewound from 3, got {other:?}"),
    }
}
