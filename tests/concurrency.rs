//! Many appenders at once: every acknowledged entry is in the log after recovery, LSNs are
//! unique and without gaps, an appender that panics mid-append wedges nothing, and a follower
//! sees every entry in order.

mod common;

use common::media::FaultyMedia;

use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use daxlog::{Error, Log, Options, Persistence, PersistenceChoice};

/// A payload that says who wrote it and checks itself: thread, sequence, length, then bytes
/// derived from them.
fn payload(thread: u64, seq: u64) -> Vec<u8> {
    let len = 8 + ((thread * 31 + seq * 17) % 300) as usize;
    let mut v = Vec::with_capacity(16 + len);
    v.extend_from_slice(&thread.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend(common::payload(thread << 40 | seq, len));
    v
}

fn run_appenders(log: &Log, threads: u64, per_thread: u64) -> Vec<(u64, u64, u64)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..per_thread {
                        if i % 7 == 3 {
                            let (a, b) = (payload(t, i), payload(t, i + 1_000_000));
                            let r = log.append_batch(&[&a, &b]).unwrap();
                            acked.push((r.start, t, i));
                            acked.push((r.start + 1, t, i + 1_000_000));
                        } else {
                            acked.push((log.append(&payload(t, i)).unwrap(), t, i));
                        }
                        // Ordering rule: an acknowledged entry has every earlier LSN durable.
                        let last = acked.last().unwrap().0;
                        assert!(
                            log.last_lsn().unwrap() >= last,
                            "acknowledged before published"
                        );
                    }
                    acked
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn concurrent_appends_are_all_recovered_in_every_mode() {
    for dir in common::temp_dirs() {
        for (name, opts) in [
            (
                "cpu",
                Options::new().persistence(PersistenceChoice::ForceCpuFlush),
            ),
            (
                "cpu-nt",
                Options::new()
                    .persistence(PersistenceChoice::ForceCpuFlush)
                    .nt_threshold(0),
            ),
            (
                "msync",
                Options::new().persistence(PersistenceChoice::ForceMsync),
            ),
        ] {
            let path = dir.path().join(format!("mt-{name}.dax"));
            let log = Log::create(&path, &opts.clone().capacity(32 << 20)).unwrap();
            let per = if name == "msync" && !dir.path().starts_with("/dev/shm") {
                40
            } else {
                400
            };
            let acked = run_appenders(&log, 6, per);
            drop(log);
            let log = Log::open(&path, &opts).unwrap();
            assert_eq!(log.len(), acked.len() as u64, "{name}");
            let mut lsns: Vec<u64> = acked.iter().map(|a| a.0).collect();
            lsns.sort();
            assert_eq!(
                lsns,
                (1..=acked.len() as u64).collect::<Vec<_>>(),
                "{name}: LSNs"
            );
            for (lsn, t, i) in acked {
                assert_eq!(
                    log.read(lsn).unwrap().payload,
                    payload(t, i),
                    "{name}: LSN {lsn}"
                );
            }
            assert!(log.recovery().damage.is_none());
        }
    }
}

/// Appenders waiting for a sync on a disk give up their CPU in a loop before they sleep
/// (`Options::yield_while_waiting`, on by default), and not at all with the option off; either
/// way every acknowledged append is in the log, at its LSN, after a reopen.
#[test]
fn waiting_appenders_yield_on_a_disk_unless_told_not_to() {
    let mut disks = 0;
    for dir in common::temp_dirs() {
        for yielding in [true, false] {
            let path = dir.path().join(format!("yield-{yielding}.dax"));
            let opts = Options::new()
                .persistence(PersistenceChoice::ForceMsync)
                .yield_while_waiting(yielding);
            let log = Log::create(&path, &opts.clone().capacity(8 << 20)).unwrap();
            let acked = run_appenders(&log, 6, 60);
            let st = log.sync_stats();
            eprintln!(
                "{}, yielding {yielding}: {st:?}, {:.1} appends per sync",
                dir.path().display(),
                st.appends_per_sync()
            );
            if !yielding {
                assert_eq!(st.yielding_waits, 0, "{st:?}");
            } else if common::disk_backed(dir.path())
                && (Duration::from_micros(20)..Duration::from_micros(200))
                    .contains(&st.average_sync)
            {
                // Six appenders on a disk whose syncs take 20-200 µs (yielding stops at 250)
                // wait for one another's syncs all the time.
                disks += 1;
                assert!(st.yielding_waits > 0, "{st:?}");
                assert!(st.yielding_waits_in_vain <= st.yielding_waits);
            }
            drop(log);
            let log = Log::open(&path, &opts).unwrap();
            assert_eq!(log.len(), acked.len() as u64);
            for (lsn, t, i) in acked {
                assert_eq!(log.read(lsn).unwrap().payload, payload(t, i), "LSN {lsn}");
            }
        }
    }
    if disks == 0 {
        eprintln!(
            "waiting_appenders_yield: no test directory on a disk with syncs of 20-200 µs, \
             yielding not checked"
        );
    }
}

/// More appenders than appends can be in flight (16), in msync mode, on each test directory:
/// where syncs are slow (a disk), the appends beyond the ring ride in one appender's batch
/// (write combining). Whether combined or not, every acknowledged append is in the log once,
/// at its LSN, after recovery; and when the log fills, appenders get `Full`, never a wrong
/// answer, and an append that still fits goes through.
#[test]
fn appenders_beyond_the_ring_are_combined_where_syncs_are_slow() {
    const THREADS: u64 = 32;
    // A lost hand-over would leave appenders waiting for ever: fail instead. (`done` is
    // dropped at the end, or when the test panics.)
    let (done, ended) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if ended.recv_timeout(Duration::from_secs(120)) == Err(RecvTimeoutError::Timeout) {
            eprintln!("appenders_beyond_the_ring: appenders still waiting after 120 s");
            std::process::exit(1);
        }
    });
    let mut combined_somewhere = false;
    for dir in common::temp_dirs() {
        let path = dir.path().join("combine.dax");
        let opts = Options::new().persistence(PersistenceChoice::ForceMsync);
        // Room for about 1000 of these appends: the appenders fill it.
        let log = Log::create(&path, &opts.clone().capacity(256 << 10)).unwrap();
        let acked = std::thread::scope(|s| {
            let log = &log;
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    s.spawn(move || {
                        let mut acked = Vec::new();
                        for i in 0.. {
                            match log.append(&payload(t, i)) {
                                Ok(lsn) => acked.push((lsn, t, i)),
                                Err(daxlog::Error::Full { .. }) => break,
                                Err(e) => panic!("append: {e}"),
                            }
                        }
                        acked
                    })
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        let st = log.sync_stats();
        combined_somewhere |= st.combined > 0;
        // Slow syncs: a disk's (a page write and a cache flush, 100 µs here). On tmpfs the
        // running average of the last few syncs can reach 20 µs at the end of a run on a busy
        // machine without the appends having been slow long enough to combine.
        let slow = common::disk_backed(dir.path()) && st.average_sync >= Duration::from_micros(20);
        eprintln!(
            "{}: {} appends acknowledged, {} combined, {:.1} per sync, syncs average {:?}",
            dir.path().display(),
            acked.len(),
            st.combined,
            st.appends_per_sync(),
            st.average_sync
        );
        assert!(
            st.appends + st.combined >= acked.len() as u64,
            "every acknowledged append was synced: {st:?}"
        );
        // Full, but a small append that fits still goes through (alone or combined).
        let free = log.free_bytes();
        if free > 64 {
            log.append(b"x").expect("an append that fits");
        }
        drop(log);
        let log = Log::open(&path, &opts).unwrap();
        let mut lsns: Vec<u64> = acked.iter().map(|a| a.0).collect();
        lsns.sort();
        lsns.dedup();
        assert_eq!(lsns.len(), acked.len(), "two appends got one LSN");
        for &(lsn, t, i) in &acked {
            assert_eq!(log.read(lsn).unwrap().payload, payload(t, i), "LSN {lsn}");
        }
        let mut seen = std::collections::HashSet::new();
        for e in log.iter() {
            if e.payload.len() >= 16 {
                let t = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
                let i = u64::from_le_bytes(e.payload[8..16].try_into().unwrap());
                assert!(seen.insert((t, i)), "thread {t}'s append {i} twice");
            }
        }
        assert_eq!(seen.len(), acked.len(), "entries no appender acknowledged");
        if slow {
            assert!(
                st.combined > 0,
                "{}: syncs are slow, yet no append was combined",
                dir.path().display()
            );
        }
    }
    eprintln!("combined somewhere: {combined_somewhere}");
    drop(done);
    watchdog.join().unwrap();
}

/// Runs `f` on a thread of its own and returns its result, failing the test if it takes more
/// than 20 s (a hang; the thread is left behind).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what}: still blocked after 20 s"))
}

/// A barrier that fails inside `truncate_after` (each of its barriers in turn) ends it with
/// an error, and leaves a log that answers: appends and truncations after it return (they
/// succeed, or fail with `Poisoned` once a barrier that deleted something failed), none
/// waits for ever. (A failed last barrier used to poison the log while holding the writer's
/// lock, which poisoning takes: every appender then waited for ever.)
#[test]
fn a_failed_barrier_in_truncate_after_leaves_no_one_waiting() {
    for k in 0..4 {
        let log = Arc::new(
            Log::create_on(
                FaultyMedia::new(1 << 20),
                &Options::new().nt_threshold(usize::MAX),
            )
            .unwrap(),
        );
        for i in 0..10u8 {
            log.append(&[i; 40]).unwrap();
        }
        let m = log_media(&log);
        m.fail_drain
            .store(m.drains.load(Ordering::SeqCst) + k, Ordering::SeqCst);
        let l = Arc::clone(&log);
        let r = bounded("truncate_after", move || l.truncate_after(5));
        let failed = m.fail_drain.load(Ordering::SeqCst) == usize::MAX;
        assert_eq!(r.is_err(), failed, "barrier {k}: {r:?}");
        // A failed barrier after the first (the published LSN's, which deletes nothing) may
        // have made the truncation durable: the log must refuse appends from then on (an
        // append acknowledged after it would carry the old epoch, and a crash would drop it).
        let poisoned_by_it = failed && k >= 1;
        if poisoned_by_it {
            // And readers stop before the entries it may have deleted.
            assert_eq!(log.last_lsn(), Some(5), "barrier {k}");
            assert_eq!(log.iter().count(), 5, "barrier {k}");
        }
        let l = Arc::clone(&log);
        let a = bounded("an append after it", move || l.append(b"after"));
        let l = Arc::clone(&log);
        let t = bounded("a truncation after it", move || l.truncate_after(2));
        // (With k past the truncation's barriers, the append's own barrier fails.)
        match (&a, &t) {
            (Ok(_), Ok(())) if !poisoned_by_it => {}
            (Err(Error::Poisoned { .. } | Error::Io { .. }), Err(Error::Poisoned { .. })) => {}
            other => panic!("barrier {k}: {other:?}"),
        }
    }
}

/// `truncate_after` on a log poisoned while an append was in flight fails with `Poisoned`; it
/// used to wait for ever for the append's ticket, which a poisoned log never publishes.
#[test]
fn truncate_after_on_a_poisoned_log_fails_instead_of_waiting() {
    let log = Arc::new(
        Log::create_on(
            FaultyMedia::new(1 << 20),
            &Options::new().nt_threshold(usize::MAX),
        )
        .unwrap(),
    );
    log.append(b"one").unwrap();
    let m = log_media(&log);
    m.fail_drain
        .store(m.drains.load(Ordering::SeqCst), Ordering::SeqCst);
    assert!(log.append(b"two").is_err());
    let l = Arc::clone(&log);
    match bounded("truncate_after", move || l.truncate_after(1)) {
        Err(Error::Poisoned { .. }) => {}
        other => panic!("expected Poisoned, got {other:?}"),
    }
}

/// `truncate_before` and `reset` on a poisoned log fail with `Poisoned` and write nothing:
/// what the media hold is unknown once a barrier failed.
#[test]
fn prefix_truncations_on_a_poisoned_log_fail() {
    let log = Log::create_on(
        FaultyMedia::new(1 << 20),
        &Options::new().nt_threshold(usize::MAX),
    )
    .unwrap();
    log.append(b"one").unwrap();
    log.append(b"two").unwrap();
    let m = log_media(&log);
    m.fail_drain
        .store(m.drains.load(Ordering::SeqCst), Ordering::SeqCst);
    assert!(log.append(b"three").is_err());
    let drains = m.drains.load(Ordering::SeqCst);
    for r in [log.truncate_before(2), log.reset()] {
        match r {
            Err(Error::Poisoned { .. }) => {}
            other => panic!("expected Poisoned, got {other:?}"),
        }
    }
    assert_eq!(m.drains.load(Ordering::SeqCst), drains, "a barrier ran");
    assert_eq!(log.first_lsn(), Some(1));
}

/// A failed barrier of `truncate_before` or `reset` (their slot update) poisons the log: the
/// slot may still have reached media, and a `reset` that found no append in flight moves the
/// tail back to the start of the data area only if it succeeded, so appends made after the
/// failure (after the old tail) would be lost in a crash with that slot on media.
#[test]
fn a_failed_barrier_in_a_prefix_truncation_poisons_the_log() {
    for reset in [false, true] {
        let log = Log::create_on(
            FaultyMedia::new(1 << 20),
            &Options::new().nt_threshold(usize::MAX),
        )
        .unwrap();
        for i in 0..10u8 {
            log.append(&[i; 40]).unwrap();
        }
        let m = log_media(&log);
        m.fail_drain
            .store(m.drains.load(Ordering::SeqCst), Ordering::SeqCst);
        let r = if reset {
            log.reset()
        } else {
            log.truncate_before(5)
        };
        assert!(matches!(r, Err(Error::Io { .. })), "reset {reset}: {r:?}");
        assert_eq!(log.first_lsn(), Some(1), "reset {reset}");
        match log.append(b"after") {
            Err(Error::Poisoned { .. }) => {}
            other => panic!("reset {reset}: expected Poisoned, got {other:?}"),
        }
    }
}

/// Guards against a panicking appender wedging the log: its reservation must become padding
/// (skipped by readers, accepted by recovery), and later appends must complete.
#[test]
fn a_panicking_appender_leaves_padding_and_wedges_nothing() {
    let media = FaultyMedia::new(1 << 20);
    let log = Log::create_on(media, &Options::new().nt_threshold(usize::MAX)).unwrap();
    log.append(b"before").unwrap();
    // Arm: the next entry store (header) panics.
    let m = log_media(&log);
    m.panic_at_store
        .store(m.stores.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    m.armed.store(true, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| log.append(b"doomed")));
    assert!(r.is_err(), "the injected fault did not fire");
    // LSN 2 is padding; appends go on, also from other threads.
    std::thread::scope(|s| {
        for t in 0..3u8 {
            let log = &log;
            s.spawn(move || {
                for i in 0..50u8 {
                    log.append(&[t, i]).unwrap();
                }
            });
        }
    });
    assert_eq!(log.last_lsn(), Some(152));
    assert!(log.read(2).is_none(), "padding returned to a reader");
    let seen: Vec<u64> = log.iter().map(|e| e.lsn).collect();
    assert_eq!(seen.len(), 151);
    assert!(!seen.contains(&2));
    // Recovery accepts the padding and everything after it.
    let image = log.into_media();
    let log = Log::open_on(image, &Options::new()).unwrap();
    assert_eq!(log.last_lsn(), Some(152));
    assert_eq!(log.iter().count(), 151);
    assert_eq!(log.read(1).unwrap().payload, b"before");
}

fn log_media(log: &Log<FaultyMedia>) -> &FaultyMedia {
    // The media is reachable only through the log; `persistence` proves the type.
    assert_eq!(log.persistence(), Persistence::Clwb);
    log.media()
}

#[test]
fn a_follower_sees_every_entry_in_order_while_threads_append() {
    let dir = tempfile::tempdir_in(common::test_dirs()[0].clone()).unwrap();
    let log = Arc::new(
        Log::create(dir.path().join("f.dax"), &Options::new().capacity(16 << 20)).unwrap(),
    );
    let total = 4 * 300;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let log = &log;
            s.spawn(move || {
                for i in 0..300 {
                    log.append(&payload(t, i)).unwrap();
                }
            });
        }
        let mut f = log.follow(1);
        let mut seen = 0u64;
        while seen < total {
            let e = f
                .next_timeout(Duration::from_secs(20))
                .expect("nothing is truncated")
                .unwrap_or_else(|| panic!("follower stalled after {seen} entries"));
            seen += 1;
            assert_eq!(e.lsn, seen, "out of order");
            let t = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
            let i = u64::from_le_bytes(e.payload[8..16].try_into().unwrap());
            assert_eq!(e.payload, payload(t, i));
        }
        assert!(
            f.next_timeout(Duration::from_millis(50)).unwrap().is_none(),
            "an entry beyond the last"
        );
    });
}
