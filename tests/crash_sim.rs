//! Crash-image tests: every scenario of `pmem_sim::suite`, in every persistence configuration
//! and crash model, checking each possible durable image at each crash point against the
//! oracle (acknowledged appends present byte-exact and in order, the in-flight one all or
//! nothing, nothing else; the log opens, accepts an append, and recovers the same way again,
//! even after a crash inside its own recovery).
//!
//! Each test prints `checked N crash images, V violations`
//! (`cargo test --workspace --release -- --nocapture`).
//!
//! - Replay one failing crash point: `PMEM_SIM_REPLAY=scenario/config:seed:segment.point:model[:image]
//!   cargo test --release --test crash_sim -- --nocapture` (the string is printed with the failure).
//! - Other seeds: `PMEM_SIM_SEED=<n>`; per-scenario counts and times: `PMEM_SIM_VERBOSE=1`.
//! - The longer soak: `cargo test --release --test crash_sim -- --ignored --nocapture`
//!   (`PMEM_SIM_SOAK_ROUNDS=<n>` rounds of the random scenarios, default 12).

use pmem_sim::suite::Suite;

fn run(suite: &Suite, names: &[&str]) {
    let o = suite.run(names);
    for r in &o.reports {
        eprintln!("{r}");
    }
    println!("{}", o.summary());
    assert_eq!(o.violations, 0, "{} ({names:?})", o.summary());
}

#[test]
fn crash_single_appends() {
    run(&Suite::from_env(), &["sizes", "sizes-random"]);
}

#[test]
fn crash_batches() {
    run(&Suite::from_env(), &["batch"]);
}

#[test]
fn crash_full_log() {
    run(&Suite::from_env(), &["full"]);
}

#[test]
fn crash_recovery() {
    run(&Suite::from_env(), &["reopen", "superblock-repair"]);
}

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

/// The soak: more rounds of the random scenarios with other seeds, and larger samples per
/// crash point, over every scenario.
#[test]
#[ignore = "long: cargo test --release --test crash_sim -- --ignored"]
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
    run(&suite, &pmem_sim::suite::scenario_names());
}
