//! The crash scenarios, by theme, and their catalogue.

use daxlog::Persistence;

use super::{Runner, Variant};
use crate::Model;
use Kind::{Fixed, Hooked, Random};

mod basic;
mod concurrent;
mod faults;
mod hint;
mod journal;
mod reuse;
mod stale;
mod steps;

pub use basic::SIZES;

/// A named crash scenario.
pub struct Scenario {
    /// The name used in test filters and replay strings.
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// Uses the scenario seed for sizes or contents (so more rounds find more).
    pub random: bool,
    /// Which variants it runs in.
    pub variants: fn(&Variant) -> bool,
    /// Needs [`Suite::hooks`](super::Suite::hooks) (runs from `pmem-sim/tests`, not from
    /// daxlog's `crash_sim`).
    pub needs_hooks: bool,
    /// The scenario.
    pub run: fn(&mut Runner) -> Option<()>,
}

/// The CLWB and msync variants (the split ones aside).
fn all(v: &Variant) -> bool {
    with_split(v) && !v.split()
}

/// The CLWB and msync variants, with those whose single appends and small batches take
/// different store paths: for the scenarios that append batches beside single entries.
fn with_split(v: &Variant) -> bool {
    matches!(v.persistence, Persistence::Clwb | Persistence::Msync)
}

/// Every variant, CLFLUSHOPT and CLFLUSH media included (the split ones aside).
fn every_flush(v: &Variant) -> bool {
    !v.split()
}

/// [`every_flush`] and the split variants.
fn every_flush_with_split(_: &Variant) -> bool {
    true
}

fn strict_or_msync(v: &Variant) -> bool {
    all(v) && v.model != Model::Line
}

fn msync_only(v: &Variant) -> bool {
    v.persistence == Persistence::Msync
}

/// The msync variants with non-temporal stores (for large appends).
fn msync_nt(v: &Variant) -> bool {
    msync_only(v) && v.nt_threshold != usize::MAX
}

/// Every scenario, in the order the mutant check tries them after a mutant's targets: its
/// kind (`Fixed`, `Random`: drawn from the seed, `Hooked`: needs the engine's test switches), its name (in test filters and replay strings), its body (`group::function`: one
/// file per group, and the function's doc says more), the variants it runs in, and what it
/// exercises.
#[rustfmt::skip]
pub const SCENARIOS: &[Scenario] = &[
    // kind     name                     body                                   variants         what it exercises
    row(Fixed,  "sizes",                 basic::sizes,                          every_flush,     "single appends of every size around word, line, NT, page"),
    row(Random, "sizes-random",          basic::sizes_random,                   all,             "random sizes at random alignments until the log is full"),
    row(Fixed,  "batch",                 basic::batch,                          every_flush_with_split, "append_batch of 1 to 6 entries, small and large; padding"),
    row(Random, "full",                  basic::full,                           every_flush_with_split, "appends until Full, then an entry to the last byte"),
    row(Random, "reopen",                basic::reopen,                         all,             "sessions from random crash images of the previous one"),
    row(Fixed,  "superblock-repair",     basic::superblock_repair,              strict_or_msync, "crashes inside the repair of a damaged superblock copy"),
    row(Fixed,  "torn-shorter",          stale::torn_shorter,                   all,             "shorter appends over a torn long entry's remains"),
    row(Fixed,  "stale-batch",           stale::stale_batch,                    with_split,      "a tail that lands on a torn batch's whole later entry"),
    row(Fixed,  "forged-payload",        stale::forged_payload,                 all,             "payloads holding encoded entries, acknowledged and torn"),
    row(Fixed,  "wipe-revival",          stale::wipe_revival,                   strict_or_msync, "a crash in the wipe of an append torn in a zero word"),
    row(Fixed,  "reuse",                 stale::reuse,                          strict_or_msync, "create_on over media holding an old log"),
    row(Random, "truncate-head",         reuse::truncate_head,                  all,             "truncate_before in a plain and a wrapped log; reset"),
    row(Random, "wrap-first-append",     reuse::wrap_first_append,              with_split,      "the first append (or batch) that wraps"),
    row(Fixed,  "wrap-batch-torn",       reuse::wrap_batch_torn,                with_split,      "a wrapped batch torn after its first entries"),
    row(Fixed,  "old-lap-past-tail",     reuse::old_lap_past_tail,              all,             "an earlier lap's valid entry right at the tail"),
    row(Random, "many-laps",             reuse::many_laps,                      all,             "over 100 wraps of random operations; sampled points"),
    row(Random, "truncate-suffix",       reuse::truncate_suffix,                every_flush,     "truncate_after and reset, crashes at both barriers"),
    row(Fixed,  "suffix-revival",        reuse::suffix_revival,                 all,             "a crash between truncate_after's barriers, then a wrap"),
    row(Fixed,  "suffix-all-wrap",       reuse::suffix_all_wrap,                all,             "every entry deleted near the end, then a wrapping append"),
    row(Random, "concurrent",            concurrent::concurrent,                with_split,      "two and three appenders: plain, wrapping, hinted"),
    row(Random, "tail-hint",             hint::tail_hint,                       all,             "the tail hint through appends, truncations and a wrap"),
    row(Fixed,  "suffix-wrap-suffix",    reuse::suffix_wrap_suffix,             all,             "truncate_after, a wrap, truncate_after above the cut"),
    row(Random, "concurrent-truncate",   concurrent::concurrent_truncate,       all,             "truncations around concurrent phases (CONCURRENT flag)"),
    row(Random, "concurrent-checkpoint", concurrent::truncate_beside_appenders, all,             "truncate_before and reset beside three appenders"),
    row(Random, "concurrent-suffix",     concurrent::suffix_beside_appenders,   all,             "truncate_after (and truncate_before) beside three appenders"),
    row(Random, "concurrent-hint-wrap",  concurrent::concurrent_hint_wrap,      all,             "the tail hint with three appenders across the wrap"),
    row(Random, "msync-group-wrap",      concurrent::msync_group_wrap,          msync_only,      "the msync group commit across the wrap"),
    row(Random, "msync-nt-group",        concurrent::msync_nt_group,            msync_nt,        "msync group commits over others' non-temporal appends"),
    row(Fixed,  "msync-marker-page",     reuse::msync_marker_page,              msync_only,      "an end marker on the next page, over a deleted entry"),
    row(Random, "failed-sync",           faults::failed_sync,                   all,             "a failed barrier: the error, then Poisoned"),
    row(Random, "journal-checkpoint",    journal::journal_checkpoint,           all,             "the metadata_journal example's checkpoint protocol"),
    row(Hooked, "abandoned",             faults::abandoned,                     all,             "appenders that panic between reservation and stores"),
];

/// How a scenario is run.
#[derive(Clone, Copy)]
enum Kind {
    /// Draws nothing from its seed: one round.
    Fixed,
    /// Draws sizes or contents from its seed: [`Suite::rounds`](super::Suite::rounds) rounds.
    Random,
    /// Fixed, and needs the engine's test switches ([`Suite::hooks`](super::Suite::hooks)).
    Hooked,
}

/// A row of [`SCENARIOS`].
const fn row(
    kind: Kind,
    name: &'static str,
    run: fn(&mut Runner) -> Option<()>,
    variants: fn(&Variant) -> bool,
    about: &'static str,
) -> Scenario {
    Scenario {
        name,
        about,
        random: matches!(kind, Kind::Random),
        variants,
        needs_hooks: matches!(kind, Kind::Hooked),
        run,
    }
}

/// The names of every scenario.
pub fn scenario_names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.name).collect()
}

/// The names of the scenarios that need no engine test switch (all but those that run from
/// `pmem-sim/tests`).
pub fn plain_scenario_names() -> Vec<&'static str> {
    SCENARIOS
        .iter()
        .filter(|s| !s.needs_hooks)
        .map(|s| s.name)
        .collect()
}
