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
