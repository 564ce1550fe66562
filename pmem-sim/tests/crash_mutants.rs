//! Proof that the crash suite can fail: each deliberate engine bug of `daxlog::mutants` must
//! produce at least one violation. Runs in `cargo test --workspace` (this crate's
//! dev-dependency enables daxlog's `mutants` feature; the switch defaults to no mutant, so the
//! other tests of the build are unaffected).
//!
//! Each mutant runs the scenarios that target it first (where it is expected to show), then
//! every other scenario, and stops at its first violation; the test prints which scenario
//! caught it, after how many images, and the violation.
//!
//! This binary holds a single test because the mutant switch is process-wide.

use daxlog::mutants::{self, Mutant};
use pmem_sim::suite::{scenario_names, variants, Hooks, Suite};

/// Resets the switch even if the check panics.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        mutants::set(Mutant::None);
    }
}

/// The scenarios where each mutant is expected to show first.
fn targets(m: Mutant) -> &'static [&'static str] {
    match m {
        Mutant::None => &[],
        Mutant::SkipLastLineFlush | Mutant::SkipFence | Mutant::FlushHeaderOnly => {
            &["stale-batch", "sizes"]
        }
        Mutant::NoLsnCheck | Mutant::NoEpochCheck => &["stale-batch", "forged-payload"],
        Mutant::BatchNoContinues => &["batch"],
        Mutant::PublishBeforeFence => &["concurrent", "concurrent-truncate"],
        Mutant::NoMarkerWait => &["concurrent-hint-wrap", "concurrent", "concurrent-truncate"],
        Mutant::GroupSyncFirstRun => &["msync-group-wrap"],
        Mutant::WipeInSlotBarrier => &["wipe-revival"],
        Mutant::NoSuffixHeaderWipe => &["suffix-wrap-suffix", "suffix-revival"],
        Mutant::AbandonedNoPad => &["abandoned"],
        Mutant::FusedHeaderCached | Mutant::NtEdgeNoFlush => &["sizes"],
        Mutant::SlotSameCopy => &["truncate-head"],
        Mutant::TornFromTail => &["wrap-batch-torn"],
        Mutant::LargeBatchNoContinues => &["batch"],
        Mutant::GroupSyncNoMarker => &["msync-marker-page"],
        Mutant::MsyncNtNoFence => &["msync-nt-group", "concurrent", "concurrent-checkpoint"],
        Mutant::SuffixPublishedNotFlushed => &["truncate-suffix", "suffix-revival"],
    }
}

#[test]
fn crash_mutants_are_caught() {
    let _reset = Reset;
    let mut suite = Suite::from_env();
    suite.stop_at_first = true;
    suite.max_reports = 1;
    suite.hooks = Hooks {
        panic_before_stores: Some(mutants::arm_panic_before_stores),
    };
    // To see which scenarios catch the mutants: PMEM_SIM_MUTANT_SCENARIOS=sizes,batch
    let chosen = std::env::var("PMEM_SIM_MUTANT_SCENARIOS").unwrap_or_default();
    let only = |n: &&str| chosen.is_empty() || chosen.split(',').any(|c| c == *n);

    // Without a mutant (but with the switches compiled in), the stale-bytes scenarios pass:
    // what follows is the mutants' doing. (crash_sim and crash_abandoned run every scenario
    // without a mutant.)
    mutants::set(Mutant::None);
    let base_names: Vec<&str> = ["stale-batch", "forged-payload"]
        .into_iter()
        .filter(only)
        .collect();
    let base = suite.run(&base_names);
    assert_eq!(base.violations, 0, "{:?}", base.reports);

    let mut images = base.images;
    let mut violations = 0;
    let mut missed = Vec::new();
    let mut table = String::from(
        "| mutant | caught by | images until caught | first violation |\n|---|---|---:|---|\n",
    );
    // To run some mutants only: PMEM_SIM_MUTANTS=NoLsnCheck,SkipFence
    let which = std::env::var("PMEM_SIM_MUTANTS").unwrap_or_default();
    for m in Mutant::ALL {
        if !which.is_empty() && !which.split(',').any(|w| w == format!("{m:?}")) {
            continue;
        }
        let first: Vec<&str> = targets(m).iter().copied().filter(only).collect();
        let rest: Vec<&str> = scenario_names()
            .into_iter()
            .filter(|n| !first.contains(n) && only(n))
            .collect();
        let order = [first, rest].concat();
        // Variants where the mutated path runs first (the fused path and the edges of a
        // non-temporal store need non-temporal stores), then the others.
        let mut vs = variants();
        if matches!(m, Mutant::FusedHeaderCached | Mutant::NtEdgeNoFlush) {
            vs.sort_by_key(|v| v.nt_threshold == usize::MAX);
        }
        mutants::set(m);
        let o = suite.run_variants(&order, &vs);
        mutants::set(Mutant::None);
        images += o.images;
        violations += o.violations;
        match o.reports.first() {
            Some(r) => {
                println!("mutant {m:?} caught after {} images:\n  {r}", o.images);
                let by = r
                    .strip_prefix("VIOLATION in ")
                    .and_then(|s| s.split(" [").next())
                    .unwrap_or("?");
                let model = r
                    .split("[model ")
                    .nth(1)
                    .and_then(|s| s.split(',').next())
                    .unwrap_or("?");
                let what = r.lines().nth(1).unwrap_or("").trim();
                let what: String = what.chars().take(110).collect();
                table.push_str(&format!(
                    "| {m:?} | {by} ({model}) | {} | {what} |\n",
                    o.images
                ));
            }
            None => {
                println!("mutant {m:?} NOT caught ({} images)", o.images);
                table.push_str(&format!("| {m:?} | NOT CAUGHT | {} | |\n", o.images));
                missed.push(m);
            }
        }
    }
    print!("{table}");
    println!("checked {images} crash images, {violations} violations");
    assert!(missed.is_empty(), "mutants not caught: {missed:?}");
}
