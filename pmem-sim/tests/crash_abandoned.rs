//! Guards against an appender that panics between its reservation and its stores wedging the
//! log or breaking recovery: its reservation must be filled with padding that takes its LSNs,
//! and published (see `abandoned` in `pmem_sim::suite`). Every crash image of the scenario goes
//! through the oracle, padding included.
//!
//! The panic is injected by `daxlog::mutants` (a process-wide one-shot switch, enabled by this
//! crate's dev-dependency on daxlog's `mutants` feature), so this binary holds a single test.
//! Replay: `PMEM_SIM_REPLAY=abandoned/<config>:<seed>:<segment.point>:<model>[:image]
//! cargo test --release -p pmem-sim --test crash_abandoned -- --nocapture`.

use pmem_sim::suite::{Hooks, Suite};

#[test]
fn crash_abandoned_appends() {
    let mut suite = Suite::from_env();
    suite.hooks = Hooks {
        panic_before_stores: Some(daxlog::mutants::arm_panic_before_stores),
    };
    let o = suite.run(&["abandoned"]);
    for r in &o.reports {
        eprintln!("{r}");
    }
    print!("{}", o.table());
    println!("{}", o.summary());
    assert_eq!(o.violations, 0, "{}", o.summary());
}
