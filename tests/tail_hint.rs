//! Bounded recovery with the tail hint: `open` starts its scan near the tail, finds exactly the
//! entries a full scan finds, and reads by LSN before the hint still work.

mod common;

use common::payload;
use daxlog::{Log, Options, TailState};

fn hinted() -> Options {
    Options::new().tail_hint_every(64 << 10)
}

fn contents(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect()
}

#[test]
fn the_hint_shortens_the_scan_and_changes_nothing_else() {
    for dir in common::temp_dirs() {
        let path = dir.path().join("hint.dax");
        let log = Log::create(&path, &hinted().capacity(8 << 20)).unwrap();
        for l in 1..=5000u64 {
            log.append(&payload(l, (l % 300) as usize)).unwrap();
        }
        drop(log);
        let full = Log::open_read_only(&path, &Options::new()).unwrap();
        assert_eq!(full.recovery().scanned_from, 1);
        let full_contents = contents(&full);
        drop(full);
        let quick = Log::open(&path, &hinted()).unwrap();
        let r = quick.recovery();
        assert!(
            r.scanned_from > 4000,
            "the scan began at LSN {}",
            r.scanned_from
        );
        assert_eq!(r.entries, 5000);
        assert_eq!(r.last_lsn, Some(5000));
        assert_eq!(r.tail_state, TailState::Clean);
        assert_eq!(contents(&quick), full_contents);
        // Reads by LSN before the hint (the index is filled on demand).
        for l in [1u64, 2, 63, 64, 65, 1000, 4999, 5000] {
            assert_eq!(
                quick.read(l).unwrap().payload,
                payload(l, (l % 300) as usize)
            );
        }
        let from: Vec<u64> = quick.iter_from(17).map(|e| e.lsn).take(3).collect();
        assert_eq!(from, [17, 18, 19]);
        // Appends after a hinted recovery, and a truncation past the hint, stay consistent.
        quick.append(b"after").unwrap();
        let quick = quick;
        quick.truncate_before(4990).unwrap();
        drop(quick);
        let again = Log::open(&path, &hinted()).unwrap();
        assert_eq!(again.first_lsn(), Some(4990));
        assert_eq!(again.last_lsn(), Some(5001));
        assert_eq!(again.read(5001).unwrap().payload, b"after");
        drop(again);
        let full = Log::open_read_only(&path, &Options::new()).unwrap();
        assert_eq!(full.len(), 12);
    }
}

#[test]
fn a_hint_never_skips_past_a_suffix_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hint-suffix.dax");
    let log = Log::create(&path, &hinted().capacity(4 << 20)).unwrap();
    for l in 1..=3000u64 {
        log.append(&payload(l, 100)).unwrap();
    }
    log.truncate_after(100).unwrap();
    log.append(b"101 again").unwrap();
    drop(log);
    let log = Log::open(&path, &hinted()).unwrap();
    assert_eq!(log.last_lsn(), Some(101));
    assert_eq!(log.read(101).unwrap().payload, b"101 again");
    assert_eq!(log.iter().count(), 101);
}

/// The hint names an entry that was durable, so every entry up to it was acknowledged: a full
/// scan (an open that does not use the hint) that finds one of them damaged reports it, even
/// as the last entry it reaches, instead of taking it for a torn tail and giving its LSN and
/// the hinted entries' to new appends. Also when the damage makes the scan end cleanly (a
/// zeroed header).
#[test]
fn damage_before_the_hinted_entry_is_reported_by_a_full_scan() {
    use daxlog::format::DATA_OFFSET;
    use daxlog::Error;
    use std::os::unix::fs::FileExt;
    for zero in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hint.dax");
        // A hint every 4 KiB: 1 KiB entries, the hint lands on one of the last few.
        let log = Log::create(&path, &Options::new().tail_hint_every(4096)).unwrap();
        let mut offsets = Vec::new();
        for l in 1..=40u64 {
            offsets.push(DATA_OFFSET as u64 + log.used_bytes());
            log.append(&payload(l, 1000)).unwrap();
        }
        drop(log);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let read = |off: usize, len: usize| {
            let mut b = vec![0u8; len];
            file.read_exact_at(&mut b, off as u64).unwrap();
            b
        };
        let (_, slot) = common::current_slot_of(&path);
        let hint = slot.hint_lsn;
        assert!(hint > 2, "the hint is at LSN {hint}");
        // Damage the entry before the hinted one: a payload byte, or its whole header.
        let bad = hint - 1;
        let at = offsets[(bad - 1) as usize];
        if zero {
            file.write_all_at(&[0u8; 24], at).unwrap();
        } else {
            let b = read(at as usize + 100, 1)[0];
            file.write_all_at(&[b ^ 0x10], at + 100).unwrap();
        }
        // Everything after `bad` is gone (as a torn tail would leave it), hint included.
        for l in bad + 1..=40 {
            file.write_all_at(&[0u8; 24], offsets[(l - 1) as usize])
                .unwrap();
        }
        for writable in [false, true] {
            let r = if writable {
                Log::open(&path, &Options::new())
            } else {
                Log::open_read_only(&path, &Options::new())
            };
            match r {
                Err(Error::Corrupted { lsn, .. }) => assert_eq!(lsn, bad),
                other => panic!(
                    "zeroed header {zero}, writable {writable}: {:?}",
                    other.map(|l| contents(&l).len())
                ),
            }
        }
    }
}
