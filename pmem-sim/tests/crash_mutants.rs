//! Proof that the crash suite can fail: each deliberate engine bug of `daxlog::mutants` must
//! produce at least one violation. Runs in `cargo test --workspace` (this crate's
//! dev-dependency enables daxlog's `mutants` feature; the switch defaults to no mutant, so the
//! other tests of the build are unaffected).
//!
//! This binary holds a single test because the mutant switch is process-wide.

use daxlog::mutants::{self, Mutant};
use pmem_sim::suite::{plain_scenario_names, Suite};

/// Resets the switch even if the check panics.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        mutants::set(Mutant::None);
    }
}

#[test]
fn crash_mutants_are_caught() {
    let _reset = Reset;
    let mut suite = Suite::from_env();
    suite.stop_at_first = true;
    suite.max_reports = 1;
    // The stale-bytes scenarios first: they are short and the only ones that can catch a
    // recovery that ignores LSN continuity.
    let first = ["stale-batch", "forged-payload"];
    let mut order = first.to_vec();
    order.extend(
        plain_scenario_names()
            .into_iter()
            .filter(|n| !first.contains(n) && *n != "wipe-revival"),
    );
    // To see which scenarios catch the mutants: PMEM_SIM_MUTANT_SCENARIOS=sizes,batch
    let chosen = std::env::var("PMEM_SIM_MUTANT_SCENARIOS").unwrap_or_default();
    if !chosen.is_empty() {
        order.retain(|n| chosen.split(',').any(|c| c == *n));
    }

    // Without a mutant, those scenarios pass: what follows is the mutants' doing.
    mutants::set(Mutant::None);
    let base = suite.run(&first);
    assert_eq!(base.violations, 0, "{:?}", base.reports);

    let mut images = base.images;
    let mut violations = 0;
    let mut missed = Vec::new();
    for m in [
        Mutant::SkipLastLineFlush,
        Mutant::SkipFence,
        Mutant::FlushHeaderOnly,
        Mutant::NoLsnCheck,
    ] {
        mutants::set(m);
        let o = suite.run(&order);
        mutants::set(Mutant::None);
        images += o.images;
        violations += o.violations;
        match o.reports.first() {
            Some(r) => println!("mutant {m:?} caught after {} images:\n  {r}", o.images),
            None => {
                println!("mutant {m:?} NOT caught ({} images)", o.images);
                missed.push(m);
            }
        }
    }
    println!("checked {images} crash images, {violations} violations");
    assert!(missed.is_empty(), "mutants not caught: {missed:?}");
}
