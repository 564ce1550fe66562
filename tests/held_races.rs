//! Races whose narrow window a pause of `daxlog::mutants` holds open, so that the race, if the
//! engine allowed it, would be lost every run:
//!
//! - a lone appender in msync mode that a suffix truncation blocks goes on once the truncation
//!   ends, even when the truncation's wake-up comes between the appender's look at the
//!   reservation state and its sleep;
//! - a creator that replaces a file it found at a path never replaces the log that another
//!   creator placed there after that file was removed, while its writer appends;
//! - an open that a replacement overtakes opens the new log;
//! - a sync error that another thread's `msync` took (the kernel reports it once per open
//!   file) fails the appends synced after it, even before that thread records it;
//! - (not a pause) a sync error that a tail hint's or a truncation's `msync` took leaves the
//!   published LSN in the reader area where the writer's session began, for the next open;
//! - appends go on while a read below the tail hint walks the entries before it to fill the
//!   index;
//! - `verify` beside a suffix truncation that deletes what was appended after its look at the
//!   published LSN, or beside a publication (its tail stored, its LSN not yet), reports no
//!   damage;
//! - a follower reporting a rewind meets a second suffix truncation before it looks for the
//!   last entry it returned: it reports one rewind that covers both, and none later for
//!   padding it never returned;
//! - (not a pause) a chunk written ahead of the tail that did not reach the file poisons the
//!   log before an append stores into it, whatever the appends' size.
//!
//! Needs the `mutants` feature (on in `cargo test --workspace`, where pmem-sim's
//! dev-dependency enables it). In a binary of its own, its tests one at a time: the pauses are
//! process-wide.
#![cfg(feature = "mutants")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daxlog::{mutants, Error, Log, Lsn, Options, PersistenceChoice};

/// One test at a time (a pause stops whichever thread of the process reaches it first).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits until a thread stops at `pause`; fails (instead of hanging) if none does within a
/// minute.
fn wait_until_reached(pause: &mutants::Pause, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pause.reached() {
        assert!(Instant::now() < deadline, "{what} never came");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A new log of `capacity` bytes in msync mode, at `name` in `dir`.
fn msync_log(dir: &tempfile::TempDir, name: &str, capacity: u64) -> Arc<Log> {
    let opts = Options::new()
        .capacity(capacity)
        .persistence(PersistenceChoice::ForceMsync);
    Arc::new(Log::create(dir.path().join(name), &opts).unwrap())
}

#[test]
fn a_reserver_woken_before_it_sleeps_goes_on() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = msync_log(&dir, "w.dax", 8 << 20);
    for n in 0u64..4 {
        log.append(&n.to_le_bytes()).unwrap();
    }
    mutants::BEFORE_SYNC_WAIT.arm();
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let appender = common::spawn_number_appender(log.clone(), 4, progress.clone(), stop.clone());
    // Cut the last entry until the appender is caught in the window: it read a state that a
    // truncation blocked, and stopped before the round lock. The truncation that blocked it
    // has returned when `truncate_after` does, so its wake-up has come and gone.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut cuts = 0u64;
    while !mutants::BEFORE_SYNC_WAIT.reached() {
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
    mutants::BEFORE_SYNC_WAIT.release();
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

#[test]
fn a_creator_never_replaces_a_log_placed_after_the_file_it_found() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.dax");
    // An old log at the path, held by nobody.
    drop(Log::create(&path, &Options::new().capacity(1 << 20)).unwrap());
    mutants::BEFORE_PLACING.arm();
    let p = path.clone();
    // Creator A replaces whatever is there: it finds the old log (and locks it), formats its
    // own, and stops before it takes its turn to place it.
    let a = std::thread::spawn(move || {
        Log::create(&p, &Options::new().capacity(1 << 20).overwrite(true)).map(|_| ())
    });
    wait_until_reached(&mutants::BEFORE_PLACING, "creator A's placing");
    // Meanwhile the old log is removed, and creator B places a new one; its writer appends.
    std::fs::remove_file(&path).unwrap();
    let b = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    b.append(b"acknowledged by B").unwrap();
    mutants::BEFORE_PLACING.release();
    let r = a.join().unwrap();
    assert!(
        matches!(r, Err(Error::Locked { .. })),
        "creator A replaced the log B's writer holds: {r:?}"
    );
    b.append(b"and more").unwrap();
    drop(b);
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    let held: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
    assert_eq!(held, [b"acknowledged by B".to_vec(), b"and more".to_vec()]);
}

/// An open that a replacement overtakes between its open of the file and its lock (the
/// replacement renames a new log over the path meanwhile, then lets the old file's locks go)
/// opens the new log, not the old file that is no longer at the path: a writer's appends would
/// go to a file nobody can open again (acknowledged, and lost), a snapshot or a reader would
/// read a log that is gone.
#[test]
fn an_open_overtaken_by_a_replacement_opens_the_new_log() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.dax");
    let opts = Options::new().capacity(1 << 20);
    for kind in ["writer", "snapshot", "reader"] {
        Log::create(&path, &opts.clone().overwrite(true))
            .unwrap()
            .append(b"old")
            .unwrap();
        mutants::BEFORE_LOCKING.arm();
        let (p, o) = (path.clone(), opts.clone());
        let opener = std::thread::spawn(move || -> daxlog::Result<Vec<Vec<u8>>> {
            Ok(match kind {
                "writer" => {
                    let log = Log::open(&p, &o)?;
                    log.append(b"acked")?;
                    vec![]
                }
                "snapshot" => {
                    let log = Log::open_read_only(&p, &o)?;
                    let seen = log.iter().map(|e| e.payload.to_vec()).collect();
                    seen
                }
                _ => {
                    let mut r = daxlog::Reader::open(&p)?;
                    let mut seen = Vec::new();
                    while let Some(e) = r.next_entry()? {
                        seen.push(e.payload);
                    }
                    seen
                }
            })
        });
        wait_until_reached(
            &mutants::BEFORE_LOCKING,
            &format!("{kind}: the open's pause"),
        );
        // The replacement, done while the opener holds the old file open but not locked.
        Log::create(&path, &opts.clone().overwrite(true))
            .unwrap()
            .append(b"new")
            .unwrap();
        mutants::BEFORE_LOCKING.release();
        let seen = opener.join().unwrap().unwrap();
        let now: Vec<Vec<u8>> = Log::open_read_only(&path, &opts)
            .unwrap()
            .iter()
            .map(|e| e.payload.to_vec())
            .collect();
        match kind {
            "writer" => assert_eq!(now, [&b"new"[..], b"acked"], "{kind}: the log at the path"),
            _ => assert_eq!(seen, [b"new"], "{kind}: what the open read"),
        }
    }
}

/// In msync mode the kernel reports a failed writeback once per open file, to the first sync
/// that looks, and every sync of a log goes through one open file. A truncation's slot update
/// whose `msync` took the error and has not recorded it yet must not let an append beside it,
/// whose own `msync` then finds nothing to report, be acknowledged: its entry may lie in a page
/// whose write failed.
#[test]
fn a_sync_error_another_thread_took_fails_the_appends_after_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = msync_log(&dir, "e.dax", 1 << 20);
    log.append(b"one").unwrap();
    log.append(b"two").unwrap();
    mutants::fail_next_msync();
    mutants::AFTER_MSYNC.arm();
    let truncating = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.truncate_before(2))
    };
    wait_until_reached(&mutants::AFTER_MSYNC, "the slot update's msync");
    // The truncation's msync has taken the error and stands before recording it.
    let appending = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.append(b"after the failed writeback"))
    };
    std::thread::sleep(Duration::from_millis(200));
    mutants::AFTER_MSYNC.release();
    let truncated = truncating.join().unwrap();
    let appended = appending.join().unwrap();
    assert!(
        matches!(truncated, Err(Error::Io { .. })),
        "the truncation: {truncated:?}"
    );
    assert!(
        matches!(appended, Err(Error::Io { .. } | Error::Poisoned { .. })),
        "an append was acknowledged after a sync error it did not see: {appended:?}"
    );
}

/// On a disk a log in msync mode stores with `pwrite`. A write that fails (an I/O error
/// reading the rest of its page, a file system out of space) stored nothing: its append must
/// fail, and no append after it may be acknowledged.
#[test]
fn a_failed_write_fails_its_append_and_every_one_after_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    if !common::disk_backed(dir.path()) {
        eprintln!("the temporary directory is not disk-backed: no store is a write there");
        return;
    }
    // In a log's first lap an append writes its entry only (the end marker after it is the
    // file's zeros): a small entry in one write, a large one's header, payload and padding in
    // one write of three parts.
    for (name, len, nth) in [("small.dax", 16, 1), ("large.dax", 4093, 1)] {
        let log = msync_log(&dir, name, 1 << 20);
        log.append(b"one").unwrap();
        mutants::fail_write(nth);
        let failed = log.append(&vec![0x5a; len]);
        assert!(
            matches!(failed, Err(Error::Io { .. })),
            "{name}: an append whose write failed: {failed:?}"
        );
        let after = log.append(b"after the failed write");
        assert!(
            matches!(after, Err(Error::Poisoned { .. } | Error::Io { .. })),
            "{name}: an append after a failed write: {after:?}"
        );
        let path = dir.path().join(name);
        drop(log);
        let now: Vec<Vec<u8>> = Log::open_read_only(&path, &Options::new())
            .unwrap()
            .iter()
            .map(|e| e.payload.to_vec())
            .collect();
        assert_eq!(now[0], b"one", "{name}");
        assert!(
            !now.iter().any(|p| p == b"after the failed write"),
            "{name}: {now:?}"
        );
    }
}

/// After an open that started its scan at the tail hint, the first read below the hint walks
/// every entry before it to fill the index's front. Appends go on meanwhile (publication
/// takes the index's lock to add its anchors), and the front found is right.
#[test]
fn appends_go_on_while_a_read_fills_the_index_front() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.dax");
    let opts = Options::new().capacity(4 << 20).tail_hint_every(16 << 10);
    let log = Log::create(&path, &opts).unwrap();
    for l in 1..=3000u64 {
        log.append(&l.to_le_bytes()).unwrap();
    }
    drop(log);
    let log = Arc::new(Log::open(&path, &opts).unwrap());
    assert!(
        log.recovery().scanned_from > 1000,
        "the scan began at the hint"
    );
    mutants::INDEX_FRONT_WALK.arm();
    let reading = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.read(100).map(|e| e.payload))
    };
    wait_until_reached(
        &mutants::INDEX_FRONT_WALK,
        "the read's walk to fill the index",
    );
    // A batch of 128 entries has index anchors: its publication takes the index's lock.
    let appending = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let batch: Vec<[u8; 8]> = (3001..=3128u64).map(|l| l.to_le_bytes()).collect();
            let refs: Vec<&[u8]> = batch.iter().map(|b| &b[..]).collect();
            log.append_batch(&refs)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !appending.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let appended_meanwhile = appending.is_finished();
    mutants::INDEX_FRONT_WALK.release();
    assert_eq!(appending.join().unwrap().unwrap(), 3001..3129);
    assert!(appended_meanwhile, "the batch waited for the walk");
    assert_eq!(reading.join().unwrap(), Some(100u64.to_le_bytes().to_vec()));
    for l in [1u64, 63, 64, 65, 1000, 2999, 3000, 3001, 3064, 3128] {
        assert_eq!(log.read(l).unwrap().payload, l.to_le_bytes(), "LSN {l}");
    }
    let all: Vec<u64> = log.iter_from(60).map(|e| e.lsn).take(10).collect();
    assert_eq!(all, (60..70).collect::<Vec<_>>());
}

/// `verify` with a guard taken while a suffix truncation waits, beside appends that the
/// truncation then deletes: the live region it looked at ends after the entries it checked,
/// because of the deletion, not of damage. It reports no corruption.
#[test]
fn verify_beside_a_suffix_truncation_reports_no_false_damage() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log =
        Arc::new(Log::create(dir.path().join("v.dax"), &Options::new().capacity(1 << 20)).unwrap());
    for l in 1..=10u64 {
        log.append(&l.to_le_bytes()).unwrap();
    }
    // A guard that the suffix truncation waits for.
    let held = log.pin();
    let truncating = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.truncate_after(10))
    };
    // (Time for it to register its wait, so that the guard verify takes sees up to 10: it
    // takes microseconds.)
    std::thread::sleep(Duration::from_millis(100));
    mutants::VERIFY_BEFORE_VIEW.arm();
    mutants::VERIFY_AFTER_VIEW.arm();
    let verifying = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.verify())
    };
    wait_until_reached(
        &mutants::VERIFY_BEFORE_VIEW,
        "verify's look at the published LSN",
    );
    for l in 11..=13u64 {
        log.append(&l.to_le_bytes()).unwrap();
    }
    mutants::VERIFY_BEFORE_VIEW.release();
    wait_until_reached(&mutants::VERIFY_AFTER_VIEW, "verify's view");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !truncating.is_finished() {
        if Instant::now() > deadline {
            mutants::VERIFY_AFTER_VIEW.release();
            panic!("the truncation waited for verify's guard: it had not registered its wait");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    truncating.join().unwrap().unwrap();
    assert_eq!(log.last_lsn(), Some(10));
    mutants::VERIFY_AFTER_VIEW.release();
    let v = verifying.join().unwrap().expect("an intact log verifies");
    assert_eq!(v.entries, 10);
    assert_eq!(log.verify().unwrap().entries, 10);
}

/// `verify` while an append is being published (its tail stored, its LSN not yet): the tail
/// ends after the entries it checked because of that entry, which is whole and next in
/// sequence. It reports no corruption.
#[test]
fn verify_beside_a_publication_reports_no_false_damage() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log =
        Arc::new(Log::create(dir.path().join("p.dax"), &Options::new().capacity(1 << 20)).unwrap());
    for l in 1..=10u64 {
        log.append(&l.to_le_bytes()).unwrap();
    }
    mutants::BETWEEN_TAIL_AND_LSN.arm();
    let appending = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.append(b"being published"))
    };
    wait_until_reached(&mutants::BETWEEN_TAIL_AND_LSN, "the append's publication");
    let verified = log.verify();
    mutants::BETWEEN_TAIL_AND_LSN.release();
    assert_eq!(appending.join().unwrap().unwrap(), 11);
    assert_eq!(verified.expect("an intact log verifies").entries, 10);
    assert_eq!(log.verify().unwrap().entries, 11);
}

/// A new log of 16 MiB at `path` holding `first` (its append checks the first chunk, written
/// ahead as the log was created), if it writes ahead: the temporary directory is ext4 or xfs
/// on a disk.
fn log_writing_ahead(path: &std::path::Path, first: &[u8]) -> Option<Log> {
    let log = Log::create(path, &Options::new().capacity(16 << 20)).unwrap();
    log.append(first).unwrap();
    if !log.writes_ahead() {
        eprintln!("the temporary directory is not ext4 or xfs on a disk: nothing to test");
        return None;
    }
    Some(log)
}

/// On a disk file system whose new log writes its blocks ahead of the tail, a chunk written
/// ahead that did not reach the file (here: its check made to fail) poisons the log before
/// any append stores into it: the appends that reach it fail, none of the appenders hangs,
/// and every append acknowledged before is there after a reopen.
#[test]
fn a_chunk_written_ahead_that_did_not_reach_the_file_poisons_the_log() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ahead.dax");
    let Some(log) = log_writing_ahead(&path, &[1; 4000]) else {
        return;
    };
    let log = Arc::new(log);
    mutants::fail_next_verify_ahead();
    // Four threads append 4 KiB entries until the log refuses: the first append into the
    // second chunk (2 MiB on) checks it and fails.
    let results: Vec<(Vec<u64>, Error)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u8)
            .map(|t| {
                let log = Arc::clone(&log);
                s.spawn(move || {
                    let mut acked = Vec::new();
                    loop {
                        match log.append(&[t + 2; 4000]) {
                            Ok(lsn) => acked.push(lsn),
                            Err(e) => return (acked, e),
                        }
                        assert!(acked.len() < 2000, "the log went past the second chunk");
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut acked: Vec<u64> = results.iter().flat_map(|(a, _)| a.clone()).collect();
    let mut poisoned = 0;
    for (_, e) in &results {
        match e {
            Error::Poisoned { cause, .. } => {
                assert!(cause.contains("written ahead"), "{cause}");
                poisoned += 1;
            }
            // The failed check is recorded as a failed sync: an append whose barrier comes
            // after it, before the poison, fails at its drain.
            Error::Io { op: "drain", .. } => {}
            other => panic!("an append failed otherwise: {other:?}"),
        }
    }
    assert!(poisoned > 0, "no append met the failed check: {results:?}");
    acked.sort_unstable();
    // (2 MiB holds 520 entries of 4024 bytes, the first one's included.)
    assert!(
        (400..520).contains(&acked.len()),
        "{} appends acknowledged: the log stopped elsewhere than at the second chunk",
        acked.len()
    );
    drop(log);
    // The failed wait for the write-back is a failed sync: the next open writes the whole
    // session again.
    assert_eq!(
        daxlog::Reader::open(&path).unwrap().published(),
        Some(1),
        "the session is still vouched for"
    );
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(log.read(1).unwrap().payload, vec![1; 4000]);
    for lsn in acked {
        let e = log.read(lsn).unwrap();
        assert!(
            e.payload.len() == 4000 && (2..6).contains(&e.payload[0]),
            "lsn {lsn}"
        );
    }
}

/// Appends entries of 4000 bytes, the `i`-th acknowledged one (from 1) holding `i`, to `log`,
/// whose first entry is `[1; 4000]`, until one fails (its error) or the log holds 5 MiB
/// (`None`); returns the LSNs acknowledged, the first entry's included.
fn append_until_refused(log: &Log) -> (Vec<u64>, Option<Error>) {
    let mut acked = vec![1];
    while log.used_bytes() < 5 << 20 {
        match log.append(&[acked.len() as u8; 4000]) {
            Ok(lsn) => acked.push(lsn),
            Err(e) => return (acked, Some(e)),
        }
    }
    (acked, None)
}

/// Reopened, the log at `path` holds exactly the entries [`append_until_refused`]
/// acknowledged, each as it was written.
fn assert_reads_back(path: &std::path::Path, acked: Vec<u64>) {
    let log = Log::open(path, &Options::new()).unwrap();
    assert_eq!(log.verify().unwrap().entries, acked.len() as u64);
    for (i, lsn) in acked.into_iter().enumerate() {
        let want = vec![i.max(1) as u8; 4000];
        assert_eq!(log.read(lsn).unwrap().payload, want, "lsn {lsn}");
    }
}

/// Where the write faults that write a chunk's blocks ahead fail (out of memory), the check
/// of the chunk tries them again, waiting for their write-back: the chunk is not taken for a
/// write the file system failed to record, and the log goes on. Where they fail again, the
/// log is poisoned before any entry is stored there, with a cause that says so.
#[test]
fn write_faults_that_fail_are_tried_again_by_the_check() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Once (the check tries again and succeeds), and every time from now on.
    for fails in [1, 100] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.dax");
        let Some(log) = log_writing_ahead(&path, &[1; 4000]) else {
            return;
        };
        // The append into the second chunk writes the third one ahead: its faults fail (and
        // the append into the third writes the fourth ahead before it checks the third).
        mutants::fail_populates(fails);
        let (acked, outcome) = append_until_refused(&log);
        mutants::fail_populates(0);
        match (fails, outcome) {
            (1, None) => {}
            (100, Some(Error::Poisoned { cause, .. })) => {
                assert!(cause.contains("could not be dirtied"), "{cause}");
                // Refused at the third chunk (4 MiB on), not before.
                assert!(log.used_bytes() > (4 << 20) - 8192, "{}", log.used_bytes());
            }
            (_, other) => panic!("{fails} failures: {other:?}"),
        }
        drop(log);
        assert_reads_back(&path, acked);
    }
}

/// Blocks still unwritten after their pages were dirtied (as far as the log can tell) and
/// written back without an error, twice: the file system did not record the write. The log
/// is poisoned before any entry is stored there, with a cause that says so.
#[test]
fn blocks_left_unwritten_after_a_second_write_back_poison_the_log() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unrecorded.dax");
    let Some(log) = log_writing_ahead(&path, &[1; 4000]) else {
        return;
    };
    mutants::skip_populates(100);
    let (acked, outcome) = append_until_refused(&log);
    mutants::skip_populates(0);
    match outcome {
        Some(Error::Poisoned { cause, .. }) => assert!(cause.contains("did not record"), "{cause}"),
        other => panic!("the log went past the third chunk or failed otherwise: {other:?}"),
    }
    // Refused at the third chunk (4 MiB on), not before.
    assert!(log.used_bytes() > (4 << 20) - 8192, "{}", log.used_bytes());
    drop(log);
    assert_reads_back(&path, acked);
}

/// The same with large appends: every chunk they reach is written ahead and checked too (a
/// chunk that an earlier write-ahead failed to record must not take appends of any size).
#[test]
fn large_appends_reach_no_chunk_written_ahead_unchecked() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let Some(log) = log_writing_ahead(&dir.path().join("large.dax"), &[1; 100]) else {
        return;
    };
    let big = vec![7u8; 256 << 10];
    // Into the second chunk: the append that reached it prepared the third, a large one.
    while log.used_bytes() < (5 << 20) / 2 {
        log.append(&big).unwrap();
    }
    let before = log.last_lsn().unwrap();
    mutants::fail_next_verify_ahead();
    let err = loop {
        if let Err(e) = log.append(&big) {
            break e;
        }
    };
    assert!(
        matches!(&err, Error::Poisoned { cause, .. } if cause.contains("written ahead")),
        "{err:?}"
    );
    // Refused where the appends reach the third chunk (4 MiB on), not later.
    let acked = log.last_lsn().unwrap() - before;
    assert!(
        acked <= 6,
        "{acked} appends acknowledged after the second chunk's start"
    );
}

/// A follower told of one suffix truncation, while it looks for the last entry it returned
/// below the rewind point, meets another that deletes one of those entries (not replaced
/// yet, it reads as padding would): it reports one rewind, from the second truncation's
/// first LSN, before it returns the entry's replacement.
#[test]
fn a_follower_reports_a_second_rewind_that_came_while_it_reported_the_first() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log =
        Arc::new(Log::create(dir.path().join("r.dax"), &Options::new().capacity(1 << 20)).unwrap());
    for p in [b"a", b"b", b"c", b"d", b"e"] {
        log.append(p).unwrap();
    }
    mutants::FOLLOWER_REWINDING.arm();
    let (returned, five) = std::sync::mpsc::channel();
    let follower = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut f = log.follow(1);
            let mut got = Vec::new();
            for _ in 0..5 {
                got.push(f.next_timeout(Duration::from_secs(5)).unwrap().unwrap().lsn);
            }
            assert_eq!(got, [1, 2, 3, 4, 5]);
            returned.send(()).unwrap();
            // Deleted: 5 (the first truncation, below), then 4 (the second).
            let first = f.next_timeout(Duration::from_secs(60));
            let second = f.next_timeout(Duration::from_secs(60));
            (
                first.map(|e| e.map(|e| e.lsn)),
                second.map(|e| e.map(|e| (e.lsn, e.payload))),
            )
        })
    };
    five.recv_timeout(Duration::from_secs(60)).unwrap();
    log.truncate_after(4).unwrap();
    wait_until_reached(&mutants::FOLLOWER_REWINDING, "the follower's rewind");
    // It has reported the first deletion to itself and not yet looked below 5.
    log.truncate_after(3).unwrap();
    mutants::FOLLOWER_REWINDING.release();
    std::thread::sleep(Duration::from_millis(20));
    log.append(b"D").unwrap();
    let (first, second) = follower.join().unwrap();
    assert!(
        matches!(first, Err(Error::Rewound { from: 4, .. })),
        "the second truncation went unreported: {first:?}"
    );
    assert!(
        matches!(&second, Ok(Some((4, p))) if p == b"D"),
        "{second:?}"
    );
}

/// What a follower call gave: an entry's LSN (or none), or the LSN a rewind went back to.
type Got = std::result::Result<Option<u64>, Lsn>;

/// A log of an entry, padding and an entry (LSNs 1, 2, 3), and a follower from 1, in a thread
/// of its own, that has returned 1 and 3 and then makes a call (waiting up to 50 ms) each time
/// it is told to, and sends back what it got. 3 is then deleted, and the follower's call
/// that reports it held by `FOLLOWER_REWINDING` (release it).
fn padded_log_and_follower(
    dir: &tempfile::TempDir,
) -> (
    Arc<Log>,
    std::sync::mpsc::Sender<()>,
    std::sync::mpsc::Receiver<Got>,
) {
    let log =
        Arc::new(Log::create(dir.path().join("p.dax"), &Options::new().capacity(1 << 20)).unwrap());
    log.append(b"a").unwrap();
    assert_eq!(log.append_padding(1).unwrap(), 2..3);
    log.append(b"c").unwrap();
    let (go, calls) = std::sync::mpsc::channel::<()>();
    let (tell, got) = std::sync::mpsc::channel::<Got>();
    let shared = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut f = shared.follow(1);
        let mut call = |wait| match f.next_timeout(wait) {
            Ok(e) => Ok(e.map(|e| e.lsn)),
            Err(Error::Rewound { from, .. }) => Err(from),
            Err(e) => panic!("{e}"),
        };
        let first_two = (call(Duration::from_secs(5)), call(Duration::from_secs(5)));
        assert_eq!(first_two, (Ok(Some(1)), Ok(Some(3))));
        tell.send(Ok(None)).unwrap();
        while calls.recv().is_ok() {
            tell.send(call(Duration::from_millis(50))).unwrap();
        }
    });
    // (Once it has returned 1 and 3.)
    assert_eq!(got.recv_timeout(Duration::from_secs(60)), Ok(Ok(None)));
    // Then delete 3, and hold the follower's call that reports it where it is about to look
    // for the last entry it returned below 3.
    log.truncate_after(2).unwrap();
    mutants::FOLLOWER_REWINDING.arm();
    go.send(()).unwrap();
    wait_until_reached(&mutants::FOLLOWER_REWINDING, "the follower's rewind");
    (log, go, got)
}

/// A follower rewound for a truncation that a second one, deleting only padding below the
/// rewind point, follows while it looks for the last entry it returned: one rewind, and none
/// for the padding after it.
#[test]
fn a_follower_is_not_rewound_again_for_padding_deleted_while_it_reports_a_rewind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (log, go, got) = padded_log_and_follower(&dir);
    log.truncate_after(1).unwrap(); // deletes 2: padding only
    mutants::FOLLOWER_REWINDING.release();
    let first = got.recv().unwrap();
    go.send(()).unwrap();
    let second = got.recv().unwrap();
    assert!(matches!(first, Err(2 | 3)), "{first:?}");
    assert_eq!(
        second,
        Ok(None),
        "rewound again for padding it never returned"
    );
}

/// The same with a second truncation at the rewind point, then a third that deletes only the
/// padding below it: the follower took no padding for an entry it returned.
#[test]
fn a_follower_takes_no_padding_for_a_returned_entry_after_a_rewind() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (log, go, got) = padded_log_and_follower(&dir);
    assert_eq!(log.append(b"C").unwrap(), 3);
    log.truncate_after(2).unwrap(); // deletes the new 3 only
    mutants::FOLLOWER_REWINDING.release();
    let first = got.recv().unwrap();
    go.send(()).unwrap();
    let second = got.recv().unwrap();
    log.truncate_after(1).unwrap(); // deletes 2: padding only
    go.send(()).unwrap();
    let third = got.recv().unwrap();
    assert_eq!((first, second), (Err(3), Ok(None)));
    assert_eq!(third, Ok(None), "rewound for padding it never returned");
}

/// The kernel reports a failed write-back once, to whichever sync of the file looks first: a
/// tail hint's, a truncation's, not always the append's whose pages it concerns (nor always
/// the sync that covered them). Whichever sync took it, the reader area's published LSN drops
/// to where the writer's session began and stays there: the next writable open then writes
/// the session again (it does so from that LSN unless it says every entry was published),
/// and readers in other processes stop before the session.
#[test]
fn a_sync_failure_any_sync_took_leaves_the_session_unvouched_for() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for case in ["tail hint", "truncate_after", "truncate_before"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dax");
        let opts = Options::new()
            .capacity(1 << 20)
            .persistence(PersistenceChoice::ForceMsync);
        {
            let log = Log::create(&path, &opts).unwrap();
            for i in 0..5u64 {
                log.append(&i.to_le_bytes()).unwrap();
            }
        }
        let published = || daxlog::Reader::open(&path).unwrap().published();
        let log = Log::open(&path, &opts.clone().tail_hint_every(1)).unwrap();
        for i in 5..7u64 {
            assert_eq!(log.append(&i.to_le_bytes()).unwrap(), i + 1);
        }
        assert_eq!(published(), Some(8), "{case}");
        let failed = match case {
            // The append's own sync first, then its tail hint's.
            "tail hint" => {
                mutants::fail_msync(2);
                assert_eq!(log.append(&7u64.to_le_bytes()).unwrap(), 8);
                log.append(b"after the hint's failed sync").map(drop)
            }
            "truncate_after" => {
                mutants::fail_next_msync();
                log.truncate_after(6)
            }
            _ => {
                mutants::fail_next_msync();
                log.truncate_before(3)
            }
        };
        assert!(
            matches!(failed, Err(Error::Io { .. } | Error::Poisoned { .. })),
            "{case}: {failed:?}"
        );
        assert_eq!(published(), Some(6), "{case}: the session began at LSN 6");
        assert!(log.append(b"later").is_err(), "{case}");
        drop(log);
        assert_eq!(published(), Some(6), "{case}");
        // The next open vouches for the entries again (and takes those that failed
        // appends left whole: never acknowledged, never lost either).
        let log = Log::open(&path, &opts).unwrap();
        let acknowledged = if case == "tail hint" { 8 } else { 7 };
        let last = log.last_lsn().unwrap();
        assert!(last >= acknowledged, "{case}: {last}");
        assert_eq!(published(), Some(last + 1), "{case}");
    }
}

/// A failed write-back of the last session may be reported to the next open's first sync
/// (nobody had looked): the open fails, and the one after it must still write that session
/// again, although the last writer closed cleanly.
#[test]
fn a_sync_failure_in_the_open_leaves_the_last_session_unvouched_for() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.dax");
    let opts = Options::new()
        .capacity(1 << 20)
        .persistence(PersistenceChoice::ForceMsync);
    drop(Log::create(&path, &opts).unwrap());
    {
        let log = Log::open(&path, &opts).unwrap();
        for i in 0..5u64 {
            log.append(&i.to_le_bytes()).unwrap();
        }
    }
    let published = || daxlog::Reader::open(&path).unwrap().published();
    assert_eq!(
        published(),
        Some(6),
        "a clean close vouches for the session"
    );
    mutants::fail_next_msync();
    let failed = Log::open(&path, &opts);
    assert!(matches!(failed, Err(Error::Io { .. })), "{failed:?}");
    assert_eq!(published(), Some(1), "the session began at LSN 1");
    let log = Log::open(&path, &opts).unwrap();
    assert_eq!(log.last_lsn(), Some(5));
    assert_eq!(published(), Some(6));
}
