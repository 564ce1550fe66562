//! Space reuse: truncation from the head, circular wrap-around, reset, and suffix deletion,
//! checked against a model of the live entries, across reopenings and many laps.

mod common;

use std::collections::VecDeque;
use std::path::Path;

use common::payload;
use daxlog::format::HEADER_LEN;
use daxlog::{Error, Log, Options, TailState};

fn open(path: &Path) -> Log {
    Log::open(path, &Options::new()).unwrap()
}

/// The live entries as (LSN, payload), oldest first.
fn contents(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect()
}

fn assert_model(log: &Log, model: &VecDeque<(u64, Vec<u8>)>, what: &str) {
    let got = contents(log);
    let want: Vec<(u64, Vec<u8>)> = model.iter().cloned().collect();
    assert_eq!(got.len(), want.len(), "{what}: entry count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "{what}: LSN");
        assert!(g.1 == w.1, "{what}: payload of LSN {}", g.0);
    }
    assert_eq!(
        log.first_lsn(),
        model.front().map(|e| e.0),
        "{what}: first LSN"
    );
    assert_eq!(
        log.last_lsn(),
        model.back().map(|e| e.0),
        "{what}: last LSN"
    );
    for (lsn, p) in model.iter().step_by(7) {
        assert_eq!(
            log.read(*lsn).map(|e| e.payload),
            Some(p.clone()),
            "{what}: read({lsn})"
        );
    }
    if let Some((first, _)) = model.front() {
        assert!(
            log.read(first - 1).is_none(),
            "{what}: a truncated entry is readable"
        );
        let from: Vec<u64> = log.iter_from(first + 3).map(|e| e.lsn).collect();
        let want: Vec<u64> = model
            .iter()
            .map(|e| e.0)
            .filter(|&l| l >= first + 3)
            .collect();
        assert_eq!(from, want, "{what}: iter_from");
    }
}

#[test]
fn truncate_before_drops_the_head_durably() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=200 {
        log.append(&payload(l, 40)).unwrap();
    }
    let used = log.used_bytes();
    log.truncate_before(151).unwrap();
    assert_eq!(log.first_lsn(), Some(151));
    assert_eq!(log.len(), 50);
    assert!(log.used_bytes() < used / 3);
    assert!(log.read(150).is_none());
    assert_eq!(log.read(151).unwrap().payload, payload(151, 40));
    // Truncating below the head changes nothing; past the next LSN is refused.
    log.truncate_before(10).unwrap();
    assert_eq!(log.first_lsn(), Some(151));
    assert!(matches!(
        log.truncate_before(202),
        Err(Error::LsnOutOfRange {
            lsn: 202,
            first: 151,
            next: 201,
            ..
        })
    ));
    drop(log);
    let log = open(&path);
    assert_eq!(log.first_lsn(), Some(151));
    let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
    assert_eq!(lsns, (151..=200).collect::<Vec<_>>());
    assert_eq!(log.recovery().tail_state, TailState::Clean);
}

#[test]
fn full_append_succeeds_after_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.dax");
    // 16 KiB of data area: 16 entries of 1000 bytes (1024 on media).
    let log = Log::create(&path, &Options::new().capacity(20480)).unwrap();
    for l in 1..=16 {
        log.append(&payload(l, 1000)).unwrap();
    }
    let before = contents(&log);
    match log.append(&payload(17, 1000)) {
        Err(Error::Full {
            needed, available, ..
        }) => assert_eq!((needed, available), (1024, 0)),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(contents(&log), before, "a refused append changed the log");
    log.truncate_before(3).unwrap();
    // Two entries freed at the start; the append wraps there.
    assert_eq!(log.append(&payload(17, 1000)).unwrap(), 17);
    // One entry's room remains before the head (less the 8-byte gap): 1000 no longer fits.
    assert!(matches!(
        log.append(&payload(18, 1000)),
        Err(Error::Full { .. })
    ));
    assert_eq!(log.append(&payload(18, 900)).unwrap(), 18);
    drop(log);
    let log = open(&path);
    let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
    assert_eq!(lsns, (3..=18).collect::<Vec<_>>());
    assert_eq!(log.read(17).unwrap().payload, payload(17, 1000));
    assert_eq!(log.read(18).unwrap().payload, payload(18, 900));
}

#[test]
fn reset_drops_everything_and_lsns_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reset.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=10 {
        log.append(&payload(l, 100)).unwrap();
    }
    log.reset().unwrap();
    assert!(log.is_empty());
    assert_eq!(log.used_bytes(), 0);
    assert!(log.iter().next().is_none());
    drop(log);
    let log = open(&path);
    assert!(log.is_empty());
    assert_eq!(log.next_lsn(), 11);
    assert_eq!(log.append(b"eleven").unwrap(), 11);
    log.reset().unwrap();
    drop(log);
    let log = open(&path);
    assert!(
        log.is_empty(),
        "an entry came back after reset: {:?}",
        contents(&log)
    );
    assert_eq!(log.next_lsn(), 12);
}

/// Guards against a deleted suffix coming back: its entries keep valid checksums and
/// continuous LSNs on media, and only the epoch rule keeps them out.
#[test]
fn truncate_after_deletes_the_suffix_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suffix.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for l in 1..=20 {
        log.append(&payload(l, 64)).unwrap();
    }
    log.truncate_after(12).unwrap();
    assert_eq!(log.last_lsn(), Some(12));
    assert!(log.read(13).is_none());
    drop(log);
    // Reopen without any new append: the old 13..20 sit right after the tail.
    let log = open(&path);
    assert_eq!(log.last_lsn(), Some(12), "deleted suffix came back");
    assert_eq!(log.recovery().tail_state, TailState::Clean);
    // A shorter replacement for 13, then reopen: old 14.. must not follow it.
    assert_eq!(log.append(b"13 again").unwrap(), 13);
    drop(log);
    let log = open(&path);
    let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
    assert_eq!(lsns, (1..=13).collect::<Vec<_>>());
    assert_eq!(log.read(13).unwrap().payload, b"13 again");
    // Out of range; no-op at the last LSN; everything.
    assert!(matches!(
        log.truncate_after(14),
        Err(Error::LsnOutOfRange { .. })
    ));
    log.truncate_after(13).unwrap();
    assert_eq!(log.last_lsn(), Some(13));
    log.truncate_before(5).unwrap();
    assert!(matches!(
        log.truncate_after(2),
        Err(Error::LsnOutOfRange { .. })
    ));
    log.truncate_after(4).unwrap();
    assert!(log.is_empty());
    assert_eq!(log.append(b"five").unwrap(), 5);
    drop(log);
    let log = open(&path);
    assert_eq!(contents(&log), vec![(5, b"five".to_vec())]);
}

#[test]
fn read_only_log_refuses_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.dax");
    Log::create(&path, &Options::new().capacity(1 << 20))
        .unwrap()
        .append(b"x")
        .unwrap();
    let ro = Log::open_read_only(&path, &Options::new()).unwrap();
    assert!(matches!(ro.truncate_before(2), Err(Error::ReadOnly { .. })));
    assert!(matches!(ro.truncate_after(0), Err(Error::ReadOnly { .. })));
    assert!(matches!(ro.reset(), Err(Error::ReadOnly { .. })));
}

/// Many laps around a small log with random appends, batches, truncations (head and suffix),
/// resets and reopenings, checked against the model after every step that reopens. Guards
/// against entries of an earlier lap being accepted past the tail, against the wrap losing or
/// reordering entries, and against space accounting that lets the tail overrun the head.
#[test]
fn hundreds_of_laps_match_the_model() {
    for dir in common::temp_dirs() {
        for (m, opts) in common::modes().into_iter().enumerate() {
            let path = dir.path().join(format!("laps{m}.dax"));
            let cap = 64 * 1024;
            let mut log = Log::create(&path, &opts.clone().capacity(cap)).unwrap();
            let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
            let mut rng = 0x1234_5678_9abc_def1u64 ^ m as u64;
            let mut rand = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut appended_bytes = 0u64;
            let mut steps = 0;
            let mut prev_op = 0;
            // 120 laps on tmpfs; a few on a disk file system, where each msync is real I/O.
            let laps = if dir.path().starts_with("/dev/shm") {
                120
            } else {
                6
            };
            while appended_bytes < laps * (cap - 4096) {
                steps += 1;
                let next = log.next_lsn();
                let op = rand(100);
                let last_op = prev_op;
                prev_op = op;
                match op {
                    0..=59 => {
                        let len = match rand(10) {
                            0 => rand(8),
                            1..=7 => 8 + rand(300),
                            _ => 300 + rand(5000),
                        } as usize;
                        let p = payload(next, len);
                        match log.append(&p) {
                            Ok(l) => {
                                assert_eq!(l, next);
                                appended_bytes += len as u64 + 24;
                                model.push_back((l, p));
                            }
                            Err(Error::Full { needed, .. }) => {
                                assert!(needed > 0);
                                // Make room: drop the older half.
                                let keep = model.len() / 2;
                                let to = model.get(model.len() - keep).map(|e| e.0).unwrap_or(next);
                                log.truncate_before(to).unwrap();
                                while model.front().is_some_and(|e| e.0 < to) {
                                    model.pop_front();
                                }
                            }
                            Err(e) => panic!("append: {e}"),
                        }
                    }
                    60..=74 => {
                        let n = 2 + rand(5);
                        let ps: Vec<Vec<u8>> = (0..n)
                            .map(|i| payload(next + i, 8 + rand(400) as usize))
                            .collect();
                        let refs: Vec<&[u8]> = ps.iter().map(|p| p.as_slice()).collect();
                        match log.append_batch(&refs) {
                            Ok(r) => {
                                assert_eq!(r, next..next + n);
                                for (i, p) in ps.into_iter().enumerate() {
                                    appended_bytes += p.len() as u64 + 24;
                                    model.push_back((next + i as u64, p));
                                }
                            }
                            Err(Error::Full { .. }) => {}
                            Err(e) => panic!("batch: {e}"),
                        }
                    }
                    75..=84 => {
                        if let Some(&(first, _)) = model.front() {
                            let to = first + rand(model.len() as u64 + 1);
                            log.truncate_before(to).unwrap();
                            while model.front().is_some_and(|e| e.0 < to) {
                                model.pop_front();
                            }
                        }
                    }
                    85..=89 => {
                        if let Some(&(first, _)) = model.front() {
                            let after = first - 1 + rand(model.len() as u64 + 1);
                            log.truncate_after(after).unwrap();
                            while model.back().is_some_and(|e| e.0 > after) {
                                model.pop_back();
                            }
                        }
                    }
                    90 => {
                        log.reset().unwrap();
                        model.clear();
                    }
                    _ => {
                        drop(log);
                        log = Log::open(&path, &opts).unwrap();
                        let r = log.recovery();
                        assert_eq!(
                            r.torn_bytes, 0,
                            "step {steps}: clean reopen reported torn bytes after {last_op}: {r:?}"
                        );
                        assert_model(&log, &model, &format!("mode {m} step {steps} reopen"));
                    }
                }
                assert!(log.used_bytes() <= cap - 4096);
            }
            assert_model(&log, &model, &format!("mode {m} end"));
            drop(log);
            let log = Log::open_read_only(&path, &opts).unwrap();
            assert_model(&log, &model, &format!("mode {m} final reopen"));
            println!(
                "{}: mode {m}: {steps} steps, {} MiB appended through a {} KiB log ({} laps)",
                dir.path().display(),
                appended_bytes >> 20,
                cap >> 10,
                appended_bytes / (cap - 4096)
            );
        }
    }
}

/// `Log::room` says, before appends and batches, whether each fits: exactly when the log
/// takes it, and not `Full`, lap after lap with truncations from the head and a reader's pin,
/// entries of many sizes (some larger than a quarter of the log, some of exactly the room),
/// for one append or for two one after the other from the same room; suffix cuts, resets and
/// reopenings between.
#[test]
fn room_predicts_every_full() {
    // (On tmpfs where there is one: what is tested is where appends go, not a disk's syncs.)
    let dir = common::temp_dirs().remove(0);
    let mut log = Log::create(dir.path().join("l"), &Options::new().capacity(68 << 10)).unwrap();
    let entry = |len: usize| daxlog::format::entry_len(len) as u64;
    let mut others = 0u32;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut fits, mut full, mut wrapped, mut second) = (0u32, 0u32, 0u32, 0u32);
    let mut pinned = None;
    for step in 0..20_000u32 {
        let mut room = log.room();
        let mut refused = false;
        for nth in 0..1 + next() % 2 {
            let before = room;
            let sizes: Vec<usize> = match next() % 5 {
                0 => (0..1 + next() % 12)
                    .map(|_| (next() % 700) as usize)
                    .collect(),
                1 => vec![(next() % 20_000) as usize],
                // An entry of exactly the room at the tail or after a wrap, or 8 bytes more.
                2 => {
                    let edge =
                        [room.at_tail, room.after_wrap][next() as usize % 2] + 8 * (next() % 2);
                    let len = edge.max(HEADER_LEN as u64) - HEADER_LEN as u64;
                    vec![len.min(log.max_payload()) as usize]
                }
                _ => vec![(next() % 3_000) as usize],
            };
            let bytes: u64 = sizes.iter().map(|&n| entry(n)).sum();
            let predicted = room.take(bytes);
            let payloads: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![step as u8; n]).collect();
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let got = log.append_batch(&refs);
            match &got {
                Ok(_) => fits += 1,
                Err(Error::Full { .. }) => full += 1,
                Err(e) => panic!("step {step}: {e}"),
            }
            assert_eq!(
                predicted,
                got.is_ok(),
                "step {step}, append {nth}: room {before:?} for {sizes:?}: {got:?}"
            );
            if !predicted {
                refused = true;
                break;
            }
            // What is left is the room the log now has.
            assert_eq!(log.room(), room, "step {step}, append {nth}");
            wrapped += u32::from(bytes > before.at_tail);
            second += nth as u32;
        }
        if refused || next() % 5 == 0 {
            // Drop about half the live entries, and pin or unpin a reader now and then.
            if let (Some(first), Some(last)) = (log.first_lsn(), log.last_lsn()) {
                let upto = first + (last - first).div_ceil(2) + next() % 2;
                log.truncate_before(upto.min(last + 1)).unwrap();
            }
            if next() % 7 == 0 {
                pinned = match pinned.take() {
                    Some(it) => {
                        drop(it);
                        None
                    }
                    None => Some(log.iter()),
                };
            }
        }
        // Now and then: cut a suffix, reset, or close and open the log again (the tail found
        // by recovery).
        match next() % 500 {
            0..10 => {
                // (Refused while a guard is held.)
                pinned = None;
                if let (Some(first), Some(last)) = (log.first_lsn(), log.last_lsn()) {
                    log.truncate_after(last - next() % (last - first + 1))
                        .unwrap();
                    others += 1;
                }
            }
            10..20 => {
                log.reset().unwrap();
                others += 1;
            }
            20 => {
                pinned = None;
                let path = log.path().to_path_buf();
                drop(log);
                log = Log::open(&path, &Options::new()).unwrap();
                others += 1;
            }
            _ => {}
        }
    }
    assert!(
        fits > 1000 && full > 100 && wrapped > 50 && second > 1000 && others > 500,
        "{fits} fit, {full} full, {wrapped} wrapped, {second} second appends, {others} cuts, \
         resets and reopens"
    );
}
