//! Model checks of the append protocol (FORMAT.md, section 6a) under the C11 memory model.
//!
//! Each model runs daxlog's own `Log::append` (and `Follower`) on a [`LoomMedia`] from two or
//! three threads, in a build where the engine's atomics, locks and condition variable are
//! loom's and the publication ring has 2 slots. Loom runs the model under every interleaving
//! with at most `LOOM_MAX_PREEMPTIONS` preemptions (default: [`BOUND`] here, deeper in the
//! `--ignored` versions) and lets every load return any value the memory model allows. It
//! checks:
//! - an append returns only once its entry and every earlier one are published and durable as
//!   seen from its thread (each store's durable flag is set by its own thread's drain and read
//!   through loom; [`check_acknowledged`]), which also means acknowledgements in LSN order;
//! - no two reservations overlap, no store races with another access to the same bytes, and
//!   no reader sees bytes before their store (loom checks every access to the data area);
//! - the LSNs are `1..=n` with no hole, back to back, padding where an append was abandoned;
//!   readers and recovery agree ([`check_final`]);
//! - no lost wake-up: the condition variable's timed waits never time out under loom, so a
//!   sleeper nobody wakes is a deadlock, which loom reports;
//! - a truncation beside a reader (`reset` and an append while a `Guard` lends entry 1): no
//!   append stores into bytes a guard still lends (`src/pins.rs`);
//! - a truncation whose barrier fails beside an append (`reset`, `truncate_after`): the log is
//!   poisoned, and an append acknowledged beside it survives a crash that keeps the
//!   truncation's slot update.
//!
//! The `mutant_*` tests arm a deliberate ordering mistake (`daxlog::loom_mutants`) and require
//! the model to fail.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release -p daxlog-loom --test model
//! --target-dir target/loom` (what `tests/loom.rs` runs); add `-- --ignored exhaustive` (or
//! `deeper`) for the deeper runs.

#![cfg(loom)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use daxlog::loom_mutants::{self, Mutant};
use daxlog::{Error, Log, Lsn, Options};
use daxlog_loom::*;
use loom::sync::Arc;

/// Preemption bound of the default run for two threads, unless `LOOM_MAX_PREEMPTIONS` says
/// otherwise.
const BOUND: usize = 4;
/// Preemption bound of the default run for three threads (the third thread multiplies the
/// interleavings: bound 1 is 24,000 executions, a few seconds; bound 2 is millions).
const BOUND3: usize = 1;
/// The `--ignored` runs: two threads under every interleaving (`exhaustive_*`, minutes), three
/// with bound 2 (`deeper_*`: over 800,000 executions, a quarter of an hour without finishing).
const DEEP3: usize = 2;
/// Preemption bound of the mutant runs: each mutant is found with fewer.
const MUTANT_BOUND: usize = 2;
/// Stack of each model thread: 256 KiB (loom hands the size to its coroutine library, which
/// counts 8-byte words; an even count keeps it from touching every page).
const STACK: usize = 1 << 15;

/// Runs `f` under loom with at most `bound` preemptions (`None`: every interleaving), unless
/// `LOOM_MAX_PREEMPTIONS` is set.
fn model(bound: Option<usize>, f: fn()) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = bound;
    }
    // Spin loops yield to loom: each turn is a branch.
    b.max_branches = 100_000;
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let (counter, t) = (runs.clone(), Instant::now());
    b.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f()
    });
    // Shown with --nocapture.
    println!(
        "{} executions in {:.1?}",
        runs.load(Ordering::Relaxed),
        t.elapsed()
    );
}

/// The log, once every other thread dropped its reference.
fn unwrap(log: Arc<Log<LoomMedia>>) -> Log<LoomMedia> {
    match Arc::try_unwrap(log) {
        Ok(log) => log,
        Err(_) => panic!("a thread still holds the log"),
    }
}

fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> loom::thread::JoinHandle<T> {
    loom::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .expect("spawn a model thread")
}

/// Who got each LSN: `appended[lsn - 1] = Some(thread)`, from the LSNs the appenders returned.
fn by_lsn(lsns: &[(u8, Lsn)], n: usize) -> Vec<Option<u8>> {
    let mut v = vec![None; n];
    for &(t, lsn) in lsns {
        assert!(
            lsn >= 1 && lsn as usize <= n,
            "LSN {lsn} out of 1..={n} (a hole)"
        );
        assert!(
            v[lsn as usize - 1].replace(t).is_none(),
            "LSN {lsn} given twice"
        );
    }
    v
}

/// `threads` appenders, one entry each, on a log with non-temporal stores (`nt`) or cached
/// stores and write-back.
fn appenders(threads: u8, nt: bool) {
    appenders_on(LoomMedia::new(), threads, nt)
}

/// `threads` appenders, one entry each, on `media`.
fn appenders_on(media: LoomMedia, threads: u8, nt: bool) {
    let log = Arc::new(new_log(media.clone(), nt));
    let handles: Vec<_> = (1..=threads)
        .map(|t| {
            let (log, media) = (log.clone(), media.clone());
            spawn(move || {
                let lsn = log.append(&payload(t)).expect("append");
                check_acknowledged(&log, &media, lsn);
                (t, lsn)
            })
        })
        .collect();
    let lsns: Vec<(u8, Lsn)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let log = unwrap(log);
    check_final(log, &media, &by_lsn(&lsns, threads as usize));
}

fn two_appenders() {
    appenders(2, true)
}

fn two_appenders_cached() {
    appenders(2, false)
}

fn three_appenders() {
    appenders(3, true)
}

/// Two appenders on msync media: the group commit (`src/disk.rs`). One leads the sync of what
/// is ready; the other waits for it or leads the next. Each must return only once a sync that
/// read its entry (and every earlier one) has ended, as seen from its thread.
fn two_msync_appenders() {
    appenders_on(LoomMedia::new_msync(), 2, false)
}

/// Three appenders on msync media, with a ring of two tickets in flight: the third sleeps
/// until a sync ends (`Log::wait_for_sync`), and must be woken.
fn three_msync_appenders() {
    appenders_on(LoomMedia::new_msync(), 3, false)
}

/// One appender appends two entries; this thread follows the log and must get both, in order,
/// each durable by the time it is returned.
fn follower() {
    let media = LoomMedia::new();
    let log = Arc::new(new_log(media.clone(), true));
    let appender = {
        let (log, media) = (log.clone(), media.clone());
        spawn(move || {
            for t in [1, 2] {
                let lsn = log.append(&payload(t)).expect("append");
                check_acknowledged(&log, &media, lsn);
                assert_eq!(lsn, t as Lsn);
            }
        })
    };
    let mut f = log.follow(1);
    for t in [1u8, 2] {
        let e = f
            .next_timeout(Duration::from_secs(3600))
            .expect("nothing is truncated")
            .expect("the follower gets the entry");
        assert_eq!(
            (e.lsn, &e.payload[..]),
            (t as Lsn, &payload(t)[..]),
            "followed"
        );
        if let Err(e) = media.check_durable(entry_end(t as Lsn)) {
            panic!("the follower got LSN {t} before it was durable: {e}");
        }
    }
    appender.join().unwrap();
    let log = unwrap(log);
    check_final(log, &media, &[Some(1), Some(2)]);
}

/// Two appenders; the first dies (panics) while storing its entry. Its reservation must be
/// padded and published, and the second must not wait forever.
fn abandoned() {
    quiet_injected_panics();
    let media = LoomMedia::new();
    media.panic_on_store_of(&payload(1));
    let log = Arc::new(new_log(media.clone(), true));
    let dying = {
        let log = log.clone();
        spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(|| log.append(&payload(1))));
            assert!(r.is_err(), "the injected panic did not happen");
        })
    };
    let other = {
        let (log, media) = (log.clone(), media.clone());
        spawn(move || {
            let lsn = log.append(&payload(2)).expect("append");
            check_acknowledged(&log, &media, lsn);
            lsn
        })
    };
    dying.join().unwrap();
    let lsn = other.join().unwrap();
    let log = unwrap(log);
    let mut appended = vec![None; 2];
    appended[lsn as usize - 1] = Some(2);
    check_final(log, &media, &appended);
}

/// A reader pins the log and reads entry 1 while another thread drops every entry (`reset`,
/// which moves the tail back to the start of the data area when no pin holds it) and appends.
/// The append must store nothing into the pinned entry while the guard lives: loom flags a
/// store that races with the reader's accesses to its words, and the reader's second read of
/// the same entry must give the same bytes. A reader that pinned after the reset sees no
/// entry 1.
fn pinned_reader_beside_reset() {
    let media = LoomMedia::new();
    let log = Arc::new(new_log(media.clone(), true));
    assert_eq!(log.append(&payload(1)).expect("append"), 1);
    let writer = {
        let log = log.clone();
        spawn(move || {
            log.reset().expect("reset");
            log.append(&payload(2)).expect("append")
        })
    };
    {
        let guard = log.pin();
        match guard.read(1) {
            Some(e) => {
                assert_eq!(guard.lsn(), 1);
                assert_eq!(e.payload, payload(1), "the pinned entry");
                loom::thread::yield_now();
                let again = guard.read(1).expect("a pinned entry stays readable");
                assert_eq!(again.payload, payload(1), "the pinned entry changed");
            }
            None => assert_eq!(guard.lsn(), 2, "entry 1 unreadable while pinned"),
        }
    }
    assert_eq!(writer.join().unwrap(), 2);
    let log = unwrap(log);
    let all: Vec<(Lsn, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload)).collect();
    assert_eq!(all, vec![(2, payload(2).to_vec())]);
}

/// A `reset` beside an append, whose barrier (its slot update) fails: the log is poisoned,
/// but the slot is in the bytes (a crash may leave it on media: the head at the start of the
/// data area, the next LSN as its first). An append acknowledged at or after that LSN must
/// still be found by recovery; else the append fails with `Poisoned`.
fn failed_reset_beside_an_append() {
    let media = LoomMedia::new();
    let log = Arc::new(new_log(media.clone(), true));
    assert_eq!(log.append(&payload(1)).expect("append"), 1);
    let appender = {
        let log = log.clone();
        spawn(move || log.append(&payload(2)))
    };
    media.fail_drain_of_this_thread(0);
    let r = log.reset();
    assert!(
        r.is_err(),
        "the reset's barrier failed, yet it returned {r:?}"
    );
    let acked = appender.join().unwrap();
    drop(unwrap(log));
    let log = Log::open_on(media.clone(), &Options::new()).expect("recover");
    match acked {
        Ok(lsn) => {
            let next = log.next_lsn();
            assert!(
                lsn < next,
                "acknowledged LSN {lsn} lost after the failed reset: recovery ends at {next}"
            );
            if log.first_lsn().is_some_and(|f| f <= lsn) {
                let e = log.read(lsn).expect("a live acknowledged entry");
                assert_eq!(e.payload, payload(2), "payload of LSN {lsn}");
            }
        }
        Err(e) => assert!(matches!(e, Error::Poisoned { .. }), "append: {e:?}"),
    }
}

/// `truncate_after(1)` beside an append, whose last barrier (the wipe of entry 2's header)
/// fails after its slot update (a new epoch, entries after 1 deleted) succeeded.
fn failed_wipe_beside_an_append() {
    failed_suffix_truncation_beside_an_append(2)
}

/// `truncate_after(1)` beside an append, whose slot update's barrier fails (the slot in the
/// bytes all the same).
fn failed_suffix_slot_beside_an_append() {
    failed_suffix_truncation_beside_an_append(1)
}

/// `truncate_after(1)` beside an append, whose barrier after `ok` others fails: the log is
/// poisoned. An append acknowledged and still live in memory must be found by recovery (an
/// append made before the truncation is deleted by it, in memory too); else it fails with
/// `Poisoned`.
fn failed_suffix_truncation_beside_an_append(ok: usize) {
    let media = LoomMedia::new();
    let log = Arc::new(new_log(media.clone(), true));
    for t in 1..=3 {
        log.append(&payload(t)).expect("append");
    }
    let appender = {
        let log = log.clone();
        spawn(move || log.append(&payload(4)))
    };
    // Its barriers: the lowered published LSN, the slot, the header wipe.
    media.fail_drain_of_this_thread(ok);
    let r = log.truncate_after(1);
    assert!(r.is_err(), "barrier {ok} failed, yet it returned {r:?}");
    let acked = appender.join().unwrap();
    let live = log.last_lsn().unwrap_or(0);
    drop(unwrap(log));
    let log = Log::open_on(media.clone(), &Options::new()).expect("recover");
    match acked {
        Ok(lsn) if lsn <= live => {
            let found = log.read(lsn).map(|e| e.payload);
            assert_eq!(
                found.as_deref(),
                Some(&payload(4)[..]),
                "acknowledged LSN {lsn}, live in memory, lost after the failed truncation"
            );
        }
        Ok(_) => {}
        Err(e) => assert!(matches!(e, Error::Poisoned { .. }), "append: {e:?}"),
    }
}

/// A log whose live entry is LSN 2, in a later lap (a new log's first lap has a flag in the
/// reservation word that a suffix truncation clears), and a thread appending `payload(7)`.
#[allow(clippy::type_complexity)]
fn two_entries_and_an_appender() -> (
    LoomMedia,
    Arc<Log<LoomMedia>>,
    loom::thread::JoinHandle<daxlog::Result<Lsn>>,
) {
    let media = LoomMedia::new();
    let log = Arc::new(new_log(media.clone(), true));
    log.append(&payload(1)).expect("append");
    log.reset().expect("reset");
    assert_eq!(log.append(&payload(2)).expect("append"), 2);
    let appender = {
        let log = log.clone();
        spawn(move || log.append(&payload(7)))
    };
    (media, log, appender)
}

/// An appender that loaded the reservation word and then waited, while the other thread made
/// a whole round of the ticket field's count (4 under loom) of appends and deleted them
/// (`truncate_after`): the word holds the value it loaded again, and its compare-and-swap
/// succeeds. Its ticket must be the current one (it used to be derived from the published
/// count read before, a round behind: the append returned without being published, and the
/// next one waited for ever). Every acknowledged entry still live is readable, and recovery
/// finds what the log shows.
fn stale_reservation_after_a_suffix_truncation() {
    let (media, log, appender) = two_entries_and_an_appender();
    for _ in 0..4 {
        log.append(&payload(3)).expect("append");
    }
    log.truncate_after(2).expect("truncate_after");
    let acked = appender.join().unwrap().expect("append");
    let last = log.last_lsn().expect("entries");
    if acked <= last {
        assert_eq!(
            log.read(acked).map(|e| e.payload).as_deref(),
            Some(&payload(7)[..]),
            "acknowledged LSN {acked} (last {last})"
        );
    }
    assert_eq!(
        log.append(&payload(4)).expect("append after"),
        last + 1,
        "the next append"
    );
    let live: Vec<(Lsn, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
    drop(unwrap(log));
    let log = Log::open_on(media.clone(), &Options::new()).expect("recover");
    let recovered: Vec<(Lsn, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
    assert_eq!(recovered, live, "what recovery finds");
}

/// Like [`stale_reservation_after_a_suffix_truncation`], but the state the delayed appender
/// loaded comes back as the blocked state of a truncation (its ticket a full ring ahead: under
/// loom, two appends after the state it equals): a suffix truncation sets the tail and the
/// next LSN back, and the next one blocks reservations. Its compare-and-swap must not succeed
/// inside the truncation (it took a ticket a ring ahead of the published count, and its
/// bytes overlapped the next append's: "Causality violation").
fn stale_reservation_into_a_blocked_state() {
    let (media, log, appender) = two_entries_and_an_appender();
    for _ in 0..2 {
        log.append(&payload(3)).expect("append");
    }
    log.truncate_after(2).expect("truncate_after");
    // Deletes nothing unless the appender got in first: it blocks, then unblocks.
    let _ = log.truncate_after(2);
    let after = log.append(&payload(4)).expect("append after");
    let acked = appender.join().unwrap().expect("append");
    let last = log.last_lsn().expect("entries");
    assert!(after <= last);
    // (acked == after: the second truncation deleted the appender's entry, and its LSN went
    // again.)
    if acked <= last && acked != after {
        assert_eq!(
            log.read(acked).map(|e| e.payload).as_deref(),
            Some(&payload(7)[..]),
            "acknowledged LSN {acked} (last {last})"
        );
    }
    let live: Vec<(Lsn, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
    let lsns: Vec<Lsn> = live.iter().map(|e| e.0).collect();
    for w in lsns.windows(2) {
        assert_eq!(w[0] + 1, w[1], "LSNs back to back: {lsns:?}");
    }
    drop(unwrap(log));
    let log = Log::open_on(media.clone(), &Options::new()).expect("recover");
    let recovered: Vec<(Lsn, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
    assert_eq!(recovered, live, "what recovery finds");
}

/// The injected panic of [`abandoned`] is expected: keep its message out of the output.
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or_default();
            if !msg.starts_with("injected:") {
                prev(info);
            }
        }));
    });
}

#[test]
fn two_appenders_publish_in_order() {
    model(Some(BOUND), two_appenders);
}

#[test]
fn two_appenders_with_cached_stores() {
    model(Some(BOUND), two_appenders_cached);
}

#[test]
fn three_appenders_fill_the_ring() {
    model(Some(BOUND3), three_appenders);
}

#[test]
fn two_msync_appenders_share_the_group_commit() {
    model(Some(BOUND), two_msync_appenders);
}

#[test]
fn three_msync_appenders_wait_for_a_sync_when_the_ring_is_full() {
    model(Some(BOUND3), three_msync_appenders);
}

#[test]
fn follower_wakes_for_each_entry() {
    model(Some(BOUND), follower);
}

#[test]
fn abandoned_reservation_is_padded() {
    model(Some(BOUND), abandoned);
}

#[test]
fn an_append_beside_a_failed_reset_is_never_lost() {
    model(Some(BOUND), failed_reset_beside_an_append);
}

#[test]
fn an_append_beside_a_failed_suffix_truncation_is_never_lost() {
    model(Some(BOUND), failed_wipe_beside_an_append);
    model(Some(BOUND), failed_suffix_slot_beside_an_append);
}

#[test]
fn a_stale_reservation_after_a_suffix_truncation_gets_the_current_ticket() {
    // (One preemption suffices: the appender's, between its load and its compare-and-swap.)
    model(Some(1), stale_reservation_after_a_suffix_truncation);
}

#[test]
fn a_stale_reservation_never_enters_a_blocked_state() {
    model(Some(2), stale_reservation_into_a_blocked_state);
}

#[test]
fn pinned_entries_survive_a_reset_and_an_append() {
    model(Some(BOUND), pinned_reader_beside_reset);
}

#[test]
#[ignore = "exhaustive: run with --ignored"]
fn exhaustive_two_appenders_publish_in_order() {
    model(None, two_appenders);
}

#[test]
#[ignore = "exhaustive: run with --ignored"]
fn exhaustive_two_appenders_with_cached_stores() {
    model(None, two_appenders_cached);
}

#[test]
#[ignore = "deeper: run with --ignored"]
fn deeper_three_appenders_fill_the_ring() {
    model(Some(DEEP3), three_appenders);
}

#[test]
#[ignore = "exhaustive: run with --ignored"]
fn exhaustive_two_msync_appenders_share_the_group_commit() {
    model(None, two_msync_appenders);
}

#[test]
#[ignore = "deeper: run with --ignored"]
fn deeper_three_msync_appenders_wait_for_a_sync_when_the_ring_is_full() {
    model(Some(DEEP3), three_msync_appenders);
}

#[test]
#[ignore = "exhaustive: run with --ignored"]
fn exhaustive_follower_wakes_for_each_entry() {
    model(None, follower);
}

#[test]
#[ignore = "exhaustive: run with --ignored"]
fn exhaustive_abandoned_reservation_is_padded() {
    model(None, abandoned);
}

/// Requires the model of `scenario` to fail with mutant `m` armed, with a message that
/// contains one of `expect`.
///
/// A failing model can abort its process instead of unwinding (loom panics inside the model
/// thread, and the engine's panic guards run loom operations while it unwinds), so the model
/// runs in a child process: this same test, run again with `DAXLOG_LOOM_MUTANT` set, which
/// arms the mutant and runs the model directly. The child must fail, and its output must say
/// why.
fn caught(test: &str, m: Mutant, scenario: fn(), expect: &[&str]) {
    if std::env::var("DAXLOG_LOOM_MUTANT").as_deref() == Ok(test) {
        loom_mutants::set(Some(m));
        model(Some(MUTANT_BOUND), scenario);
        loom_mutants::set(None);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env("DAXLOG_LOOM_MUTANT", test)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the mutant's model");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the model passed with mutant {m:?} armed:\n{text}"
    );
    let found = expect.iter().find(|e| text.contains(*e));
    assert!(
        found.is_some(),
        "the model failed with mutant {m:?} armed, but not as expected ({expect:?}):\n{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains(found.unwrap()))
        .unwrap_or_default();
    println!("{m:?} caught ({}): {}", out.status, line.trim());
}

#[test]
fn mutant_published_relaxed_is_caught() {
    caught(
        "mutant_published_relaxed_is_caught",
        Mutant::PublishedRelaxed,
        two_appenders,
        // The appender that sees its ticket published without synchronising with the publisher
        // finds its LSN or an earlier entry not yet published or durable from where it stands.
        &["Causality violation", "returned before"],
    );
}

#[test]
fn mutant_ready_relaxed_is_caught() {
    caught(
        "mutant_ready_relaxed_is_caught",
        Mutant::ReadyRelaxed,
        two_appenders,
        &["Causality violation", "returned before", "last LSN"],
    );
}

#[test]
fn mutant_ready_relaxed_is_caught_by_the_group_commit() {
    caught(
        "mutant_ready_relaxed_is_caught_by_the_group_commit",
        Mutant::ReadyRelaxed,
        two_msync_appenders,
        // The leader syncs the other appender's ticket, marked ready without a release: it may
        // read the ticket's span as it was before (and sync other bytes), or read the entry's
        // words in a race with their stores.
        &["Causality violation", "returned before"],
    );
}

#[test]
fn mutant_published_relaxed_is_caught_by_the_group_commit() {
    caught(
        "mutant_published_relaxed_is_caught_by_the_group_commit",
        Mutant::PublishedRelaxed,
        two_msync_appenders,
        // The appender covered by the other's sync learns it from the published count: without
        // the release it cannot see the sync's durable flags.
        &["Causality violation", "returned before"],
    );
}

#[test]
fn mutant_hand_over_not_rung_is_caught_by_the_group_commit() {
    caught(
        "mutant_hand_over_not_rung_is_caught_by_the_group_commit",
        Mutant::HandOverNotRung,
        three_msync_appenders,
        // The appender first in line after a sync sleeps on, and nobody leads the next sync.
        &["deadlock"],
    );
}

#[test]
fn mutant_ring_before_publish_is_caught_by_the_group_commit() {
    caught(
        "mutant_ring_before_publish_is_caught_by_the_group_commit",
        Mutant::RingBeforePublish,
        two_msync_appenders,
        // The covered appender woken before its ticket is published sleeps again, for good.
        &["deadlock"],
    );
}

#[test]
fn mutant_marker_done_relaxed_is_caught() {
    caught(
        "mutant_marker_done_relaxed_is_caught",
        Mutant::MarkerDoneRelaxed,
        two_appenders,
        &["Causality violation: Concurrent write accesses"],
    );
}

#[test]
fn mutant_last_lsn_relaxed_is_caught() {
    caught(
        "mutant_last_lsn_relaxed_is_caught",
        Mutant::LastLsnRelaxed,
        follower,
        // The follower sees the LSN before the live tail that covers its entry, takes the
        // entry for padding and skips it, then waits for an LSN that never comes.
        &["followed", "Causality violation", "deadlock"],
    );
}

#[test]
fn mutant_reset_ignores_pins_is_caught() {
    caught(
        "mutant_reset_ignores_pins_is_caught",
        Mutant::ResetIgnoresPins,
        pinned_reader_beside_reset,
        // The append's store races with the reader's access to the entry it pinned.
        &["Causality violation", "the pinned entry"],
    );
}

#[test]
fn mutant_no_heavy_fence_is_caught() {
    caught(
        "mutant_no_heavy_fence_is_caught",
        Mutant::NoHeavyFence,
        follower,
        &["deadlock"],
    );
}

#[test]
fn mutant_no_light_fence_is_caught() {
    caught(
        "mutant_no_light_fence_is_caught",
        Mutant::NoLightFence,
        follower,
        &["deadlock"],
    );
}

#[test]
fn mutant_waiter_after_check_is_caught() {
    caught(
        "mutant_waiter_after_check_is_caught",
        Mutant::WaiterAfterCheck,
        follower,
        &["deadlock"],
    );
}

#[test]
fn mutant_cas_not_atomic_is_caught() {
    caught(
        "mutant_cas_not_atomic_is_caught",
        Mutant::CasNotAtomic,
        two_appenders,
        // Two reservations from one state: one LSN given twice, or (the second appender
        // reading the published count after the first published the shared ticket) a
        // ticket a round ahead, which the second appender then waits for for ever.
        &[
            "Causality violation",
            "given twice",
            "LSN",
            "exceeded maximum number of branches",
        ],
    );
}

#[test]
fn mutant_abandoned_not_completed_is_caught() {
    caught(
        "mutant_abandoned_not_completed_is_caught",
        Mutant::AbandonedNotCompleted,
        abandoned,
        &["deadlock"],
    );
}
