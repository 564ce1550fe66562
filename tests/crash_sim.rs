//! Crash-image tests: every scenario of `pmem_sim::suite`, in every persistence configuration
//! and crash model, checking each possible durable image at each crash point against the
//! oracle (acknowledged appends and truncations in effect, byte-exact and in order, the call in
//! flight all or nothing, nothing else; with concurrent appenders every LSN up to the highest
//! acknowledged one; every reader and the recovery report agree; read-only, salvage and strict
//! opens agree; the log accepts further appends of every kind, and recovers the same way again,
//! even after a crash inside its own recovery or inside the further append). See
//! `pmem-sim/README.md`.
//!
//! Each test prints a table of its scenarios (crash points, how many enumerated exhaustively
//! and how many sampled, images, duplicates, seconds) and `checked N crash images, V violations`
//! (`cargo test --workspace --release -- --nocapture`).
//!
//! - Replay one failing crash point: `PMEM_SIM_REPLAY=scenario/config:seed:segment.point:model[:image]
//!   cargo test --release --test crash_sim -- --nocapture` (the string is printed with the failure).
//! - Other seeds: `PMEM_SIM_SEED=<n>`; per-scenario counts and times: `PMEM_SIM_VERBOSE=1`.
//! - The longer soak: `cargo test --release --test crash_sim -- --ignored crash_soak --nocapture`
//!   (`PMEM_SIM_SOAK_ROUNDS=<n>` rounds of the random scenarios, default 12).

use pmem_sim::suite::{Outcome, Suite, NT_SYNCED_BY_OTHER};

fn run(suite: &Suite, names: &[&str]) -> Outcome {
    let o = suite.run(names);
    for r in &o.reports {
        eprintln!("{r}");
    }
    for (name, c) in &o.counters {
        println!(
            "{name}: {} in {} runs (at least {} per run)",
            c.sum, c.runs, c.min
        );
    }
    print!("{}", o.table());
    println!("{}", o.summary());
    assert_eq!(o.violations, 0, "{} ({names:?})", o.summary());
    o
}

/// Guards against acknowledged single appends being lost or torn, of every size around the
/// word, line, non-temporal and page boundaries and on the fused copy-and-checksum path, and
/// against recovery keeping a torn one.
#[test]
fn crash_single_appends() {
    run(&Suite::from_env(), &["sizes", "sizes-random"]);
}

/// Guards against a batch surviving a crash in part (the `CONTINUES` flag and its handling
/// in recovery).
#[test]
fn crash_batches() {
    run(&Suite::from_env(), &["batch"]);
}

/// Guards against `Error::Full` writing anything, and against the last bytes of the file
/// (an entry that fills the log exactly) being mishandled.
#[test]
fn crash_full_log() {
    run(&Suite::from_env(), &["full"]);
}

/// Guards against recovery itself breaking the log: sessions that start from crash images of
/// the previous one (crashes inside recovery included), and the repair of a damaged
/// superblock copy.
#[test]
fn crash_recovery() {
    run(&Suite::from_env(), &["reopen", "superblock-repair"]);
}

/// Guards against stale bytes past the tail being accepted: torn remains under shorter
/// appends, a torn batch with a whole later entry, payloads that hold encoded entries, and an
/// old log under a new one (the epoch and LSN rules, the checksum's salt).
#[test]
fn crash_stale_bytes() {
    run(
        &Suite::from_env(),
        &["torn-shorter", "stale-batch", "forged-payload", "reuse"],
    );
}

/// Guards against a recovery that crashes while wiping the remains of a torn append making that
/// append whole again (see `wipe-revival` in `pmem_sim::suite`): the engine must make its new
/// slot durable before it wipes.
#[test]
fn crash_wipe_revival() {
    run(&Suite::from_env(), &["wipe-revival"]);
}

/// Guards against truncation from the head losing or reviving entries: crashes inside and
/// around `truncate_before`, in plain and wrapped logs.
#[test]
fn crash_truncate_head() {
    run(&Suite::from_env(), &["truncate-head"]);
}

/// Guards against the wrap losing entries or letting an earlier lap back in: the first append
/// after a wrap, an earlier lap's valid entry lying right at the tail, and (msync mode) the
/// end marker of an append that ends on a page boundary not synced with it.
#[test]
fn crash_wrap() {
    run(
        &Suite::from_env(),
        &[
            "wrap-first-append",
            "old-lap-past-tail",
            "msync-marker-page",
        ],
    );
}

/// Guards against recovery counting the remains of a wrapped batch (first entries whole at the
/// start of the data area, a later one torn) from the tail before the wrap: `torn_bytes`
/// underflowed and the remains were never wiped (see `wrap-batch-torn` in `pmem_sim::suite`).
/// The oracle checks the report's `torn_bytes`, `tail_offset` and `tail_state`, and that the
/// recovery after a completed one finds a clean end.
#[test]
fn crash_wrap_batch_torn() {
    run(&Suite::from_env(), &["wrap-batch-torn"]);
}

/// Guards against space reuse going wrong over many laps (stale entries of earlier laps, head
/// and suffix truncations, resets): at least 100 wraps per run, with sampled crash points.
#[test]
fn crash_many_laps() {
    let o = run(&Suite::from_env(), &["many-laps"]);
    let wraps = o.counters.get("wraps").expect("many-laps counts its wraps");
    assert!(
        wraps.min >= 100 || Suite::from_env().replay.is_some(),
        "a run wrapped only {} times",
        wraps.min
    );
}

/// Guards against deleted entries coming back: `truncate_after` (two barriers) and `reset`.
#[test]
fn crash_truncate_suffix() {
    run(&Suite::from_env(), &["truncate-suffix"]);
}

/// Guards against a deleted suffix coming back: a `truncate_after` that crashes between its
/// slot update and the destruction of the first deleted header, followed by a wrap and a
/// second `truncate_after` (see `suffix-revival` in `pmem_sim::suite`). Recovery must destroy
/// the header of a complete entry it leaves after the tail.
#[test]
fn crash_suffix_revival() {
    run(&Suite::from_env(), &["suffix-revival"]);
}

/// Guards against readers losing entries when an append wraps while the log is empty (the part
/// before the wrap is then empty): `truncate_after(first - 1)` near the end of the file, then
/// an append that wraps (see `suffix-all-wrap` in `pmem_sim::suite`).
#[test]
fn crash_suffix_all_wrap() {
    run(&Suite::from_env(), &["suffix-all-wrap"]);
}

/// Asserts that the appenders of the concurrent scenarios overlapped: a change to the
/// scheduler or the engine must not silently make them sequential. Per run on average, and in
/// nearly every run: a seeded interleaving of a few short appends can by chance run them one
/// after the other (with some seeds, one run in 64 did), which is no sign of either.
fn assert_overlapped(o: &Outcome, at_least_per_run: u64) {
    if Suite::from_env().replay.is_some() {
        return;
    }
    let c = o
        .counters
        .get("points with 2+ appends in flight")
        .expect("concurrent scenarios count their overlaps");
    assert!(
        c.sum >= at_least_per_run * c.runs,
        "only {} crash points with two or more appends in flight in {} runs",
        c.sum,
        c.runs
    );
    let sequential = o
        .counters
        .get("runs with no 2 appends in flight")
        .expect("concurrent scenarios count their sequential runs");
    assert!(
        sequential.sum * 16 <= sequential.runs,
        "{} of {} runs had no two appends in flight at once",
        sequential.sum,
        sequential.runs
    );
}

/// Two and three appenders in seeded interleavings, per-thread fences: acknowledged entries
/// and every LSN before them present, the rest whole or absent, never `Corrupted`.
#[test]
fn crash_concurrent_appenders() {
    let o = run(&Suite::from_env(), &["concurrent"]);
    assert_overlapped(&o, 3);
}

/// Prefix truncations from a thread beside three appenders, every crash image of the
/// interleaving checked: the acknowledged entries from the last acknowledged truncation on
/// (or from one in flight) survive, and nothing else but whole in-flight appends.
#[test]
fn crash_truncation_beside_appenders() {
    let o = run(&Suite::from_env(), &["concurrent-checkpoint"]);
    assert_overlapped(&o, 1);
    if Suite::from_env().replay.is_none() {
        let b = o
            .counters
            .get("points inside a truncation with an append in flight")
            .expect("concurrent-checkpoint counts them");
        assert!(b.sum >= 1, "no truncation ever ran beside an append");
        let reused = o
            .counters
            .get("appends into space a cut of the same phase freed")
            .expect("concurrent-checkpoint counts them");
        assert!(
            reused.sum >= 1,
            "no append reused space a truncation beside it freed"
        );
    }
}

/// Suffix truncations from a thread beside three appenders, every crash image of the
/// interleaving checked: the acknowledged entries that no returned `truncate_after` deleted
/// survive, deleted ones never come back, the appends after a cut continue from its LSN, and
/// a crash inside a truncation finds the entries from before or from after it, nothing mixed.
#[test]
fn crash_suffix_truncation_beside_appenders() {
    let o = run(&Suite::from_env(), &["concurrent-suffix"]);
    assert_overlapped(&o, 1);
    if Suite::from_env().replay.is_none() {
        for (name, what) in [
            (
                "points inside a suffix truncation with an append in flight",
                "no suffix truncation ever waited for an append in flight",
            ),
            (
                "points inside a suffix truncation with an append waiting for it",
                "no append ever waited for a suffix truncation",
            ),
        ] {
            let c = o.counters.get(name).expect("concurrent-suffix counts them");
            assert!(c.sum >= 1, "{what}");
        }
    }
}

/// Guards against truncations mishandling a session that appended concurrently (the
/// `CONCURRENT` slot flag kept by `truncate_before`, cleared by `truncate_after`'s new epoch),
/// the tail hint written by whichever appender publishes while their reservations wrap, and
/// the msync group commit syncing only part of a group that spans the wrap.
#[test]
fn crash_concurrent_truncate_hint_group() {
    let o = run(
        &Suite::from_env(),
        &[
            "concurrent-truncate",
            "concurrent-hint-wrap",
            "msync-group-wrap",
        ],
    );
    assert_overlapped(&o, 1);
    if Suite::from_env().replay.is_none() {
        let w = o
            .counters
            .get("msync syncs at the start of the data area after one at the end, by one thread")
            .expect("msync-group-wrap counts its wrapped syncs");
        assert!(w.sum >= 1, "no msync group ever spanned the wrap");
    }
}

/// Guards against an msync-mode appender that stored its entries with non-temporal stores
/// marking its ticket ready before it fenced them: the group commit's `msync`, often led by
/// another thread, writes back only what reached memory, so an acknowledged entry could be
/// lost. Asserts that the group commits of the scenario covered other threads' non-temporal
/// appends in every run (about a hundred per run with the default seed; the other scenarios
/// together see a few).
#[test]
fn crash_msync_nt_group() {
    let o = run(&Suite::from_env(), &["msync-nt-group"]);
    assert_overlapped(&o, 3);
    if Suite::from_env().replay.is_none() {
        let c = o
            .counters
            .get(NT_SYNCED_BY_OTHER)
            .expect("msync-nt-group counts them");
        assert!(
            c.min >= 50,
            "a run had only {} non-temporal appends synced by another thread",
            c.min
        );
    }
}

/// Guards against an append whose barrier failed being acknowledged or followed by accepted
/// appends (the sticky error and `Error::Poisoned`), and against recovery mishandling what it
/// left: later sessions start from its crash images.
#[test]
fn crash_failed_sync() {
    run(&Suite::from_env(), &["failed-sync"]);
}

/// Guards against a deleted suffix coming back in the session that deleted it:
/// `truncate_after`, a wrapping append, and a second `truncate_after` above the first deleted
/// entry's LSN (see `suffix-wrap-suffix` in `pmem_sim::suite`).
#[test]
fn crash_suffix_wrap_suffix() {
    run(&Suite::from_env(), &["suffix-wrap-suffix"]);
}

/// Guards against the `metadata_journal` example's checkpoint protocol losing or replaying
/// operations: at every crash image, its snapshot plus the journal after it rebuild the state
/// after the operations the log holds (see `journal-checkpoint` in `pmem_sim::suite`).
#[test]
fn crash_journal_checkpoint() {
    run(&Suite::from_env(), &["journal-checkpoint"]);
}

/// Guards against the tail hint changing what recovery finds: recovery from the hint gives the
/// oracle's result and equals a full scan.
#[test]
fn crash_tail_hint() {
    run(&Suite::from_env(), &["tail-hint"]);
}

/// The soak: more rounds of the random scenarios with other seeds, and larger samples per
/// crash point, over every scenario.
#[test]
#[ignore = "long: cargo test --release --test crash_sim -- --ignored crash_soak"]
fn crash_soak() {
    let mut suite = Suite::from_env();
    if std::env::var("PMEM_SIM_SEED").is_err() {
        suite.seed = 0x50a6_0000_0001;
    }
    suite.rounds = std::env::var("PMEM_SIM_SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    suite.gen.random = 256;
    suite.gen.structured = 128;
    run(&suite, &pmem_sim::suite::plain_scenario_names());
}
