//! A lone appender in msync mode that a suffix truncation blocks goes on once the truncation
//! ends, even when the truncation's wake-up comes between the appender's look at the
//! reservation state and its sleep: the window is held open by a pause that `daxlog::mutants`
//! puts there, so the lost wake-up, if the engine allowed it, would happen every run.
//!
//! Needs the `mutants` feature (on in `cargo test --workspace`, where pmem-sim's
//! dev-dependency enables it). In a binary of its own: the pause is process-wide.
#![cfg(feature = "mutants")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daxlog::{mutants, Error, Log, Options, PersistenceChoice};

#[test]
fn a_reserver_woken_before_it_sleeps_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::create(
            dir.path().join("w.dax"),
            &Options::new()
                .capacity(8 << 20)
                .persistence(PersistenceChoice::ForceMsync),
        )
        .unwrap(),
    );
    for n in 0u64..4 {
        log.append(&n.to_le_bytes()).unwrap();
    }
    mutants::arm_pause_before_sync_wait();
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (l, p, st) = (log.clone(), progress.clone(), stop.clone());
    // (Not a scoped thread: if it hangs, the test reports it instead of hanging too.)
    let appender = std::thread::spawn(move || {
        let mut n = 4u64;
        while !st.load(Ordering::Relaxed) {
            match l.append(&n.to_le_bytes()) {
                Ok(lsn) => {
                    p.store(lsn, Ordering::SeqCst);
                    n += 1;
                }
                Err(Error::Full { .. }) => {
                    match l.truncate_before(l.next_lsn().saturating_sub(300)) {
                        Ok(()) | Err(Error::LsnOutOfRange { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    // Cut the last entry until the appender is caught in the window: it read a state that a
    // truncation blocked, and stopped before the round lock. The truncation that blocked it
    // has returned when `truncate_after` does, so its wake-up has come and gone.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut cuts = 0u64;
    while !mutants::paused_before_sync_wait() {
        // (Bounds only to report a hang as a failure, not measures of speed.)
        assert!(
            Instant::now() < deadline,
            "no reserver met a blocked state in {cuts} suffix truncations"
        );
        let Some(last) = log.last_lsn() else {
            std::thread::yield_now();
            continue;
        };
        match log.truncate_after(last - 1) {
            Ok(()) | Err(Error::LsnOutOfRange { .. }) => cuts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let before = progress.load(Ordering::SeqCst);
    mutants::release_sync_wait();
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.load(Ordering::SeqCst) <= before {
        assert!(
            Instant::now() < deadline,
            "the appender slept through the wake-up of the truncation that blocked it \
             (after {cuts} suffix truncations)"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    // Gap-free, and each entry holds the payload appended for it: entry `lsn` was appended
    // as some number, and numbers only grow along the log.
    let mut expect = log.first_lsn().unwrap();
    let mut prev = None;
    for e in log.iter() {
        assert_eq!(e.lsn, expect);
        let n = u64::from_le_bytes(e.payload.try_into().unwrap());
        assert!(prev < Some(n), "entry {} holds {n} after {prev:?}", e.lsn);
        prev = Some(n);
        expect += 1;
    }
    assert!(expect > before, "the log ends at {expect}, before {before}");
}
