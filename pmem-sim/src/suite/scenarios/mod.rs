//! The crash scenarios, by theme, and their catalogue.

use daxlog::Persistence;

use super::{Runner, Variant};
use crate::Model;

mod basic;
mod concurrent;
mod faults;
mod hint;
mod journal;
mod reuse;
mod stale;

pub use basic::SIZES;
use basic::{batch, full, reopen, sizes, sizes_random, superblock_repair};
use concurrent::{
    concurrent, concurrent_hint_wrap, concurrent_truncate, msync_group_wrap,
    truncate_beside_appenders,
};
use faults::{abandoned, failed_sync};
use hint::tail_hint;
use journal::journal_checkpoint;
use reuse::{
    many_laps, msync_marker_page, old_lap_past_tail, suffix_all_wrap, suffix_revival,
    suffix_wrap_suffix, truncate_head, truncate_suffix, wrap_batch_torn, wrap_first_append,
};
use stale::{forged_payload, reuse, stale_batch, torn_shorter, wipe_revival};

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
    /// Needs [`Suite::hooks`] (runs from `pmem-sim/tests`, not from daxlog's `crash_sim`).
    pub needs_hooks: bool,
    /// The scenario.
    pub run: fn(&mut Runner),
}

/// The CLWB and msync variants.
fn all(v: &Variant) -> bool {
    matches!(v.persistence, Persistence::Clwb | Persistence::Msync)
}

/// Every variant, CLFLUSHOPT and CLFLUSH media included.
fn every_flush(_: &Variant) -> bool {
    true
}

fn strict_or_msync(v: &Variant) -> bool {
    all(v) && v.model != Model::Line
}

fn msync_only(v: &Variant) -> bool {
    v.persistence == Persistence::Msync
}

/// Every scenario.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "sizes",
        about: "single appends of every interesting size, 0 bytes to past the NT threshold",
        random: false,
        variants: every_flush,
        needs_hooks: false,
        run: sizes,
    },
    Scenario {
        name: "sizes-random",
        about: "single appends of random sizes at random alignments until the log is full",
        random: true,
        variants: all,
        needs_hooks: false,
        run: sizes_random,
    },
    Scenario {
        name: "batch",
        about: "append_batch of 1 to 6 entries, small and large, interleaved with appends",
        random: false,
        variants: every_flush,
        needs_hooks: false,
        run: batch,
    },
    Scenario {
        name: "full",
        about: "appends until Error::Full, then filling the log exactly to its last byte",
        random: true,
        variants: every_flush,
        needs_hooks: false,
        run: full,
    },
    Scenario {
        name: "reopen",
        about: "appends after recovery from random crash images, over several sessions",
        random: true,
        variants: all,
        needs_hooks: false,
        run: reopen,
    },
    Scenario {
        name: "superblock-repair",
        about: "a writable open repairs a damaged superblock copy: crashes inside the repair",
        random: false,
        variants: strict_or_msync,
        needs_hooks: false,
        run: superblock_repair,
    },
    Scenario {
        name: "torn-shorter",
        about: "a torn long entry, then shorter appends over its remains",
        random: false,
        variants: all,
        needs_hooks: false,
        run: torn_shorter,
    },
    Scenario {
        name: "stale-batch",
        about: "a torn batch whose later entry is whole; a partial wipe at recovery; later \
                sessions land their tail on it (LSN and epoch rules)",
        random: false,
        variants: all,
        needs_hooks: false,
        run: stale_batch,
    },
    Scenario {
        name: "forged-payload",
        about: "payloads holding encoded entries: acknowledged (only data), and torn remains \
                that a later tail lands on",
        random: false,
        variants: all,
        needs_hooks: false,
        run: forged_payload,
    },
    Scenario {
        name: "wipe-revival",
        about: "an append over stale bytes torn only in a zero word; the recovery's wipe of its \
                remains crashes with just that word wiped",
        random: false,
        variants: strict_or_msync,
        needs_hooks: false,
        run: wipe_revival,
    },
    Scenario {
        name: "reuse",
        about: "create_on over media holding an old log; crashes inside the creation",
        random: false,
        variants: strict_or_msync,
        needs_hooks: false,
        run: reuse,
    },
    Scenario {
        name: "truncate-head",
        about: "truncate_before (middle, first, all but one, everything) with crashes inside its \
                slot update and after it; in a plain and in a wrapped log; across sessions; a reset \
                of entries that end at the end of the file while a reader pins the first",
        random: true,
        variants: all,
        needs_hooks: false,
        run: truncate_head,
    },
    Scenario {
        name: "wrap-first-append",
        about: "a full small log, its head truncated, then the first append (or batch) that \
                wraps to the start of the data area, with the file's end unused or filled exactly",
        random: true,
        variants: all,
        needs_hooks: false,
        run: wrap_first_append,
    },
    Scenario {
        name: "wrap-batch-torn",
        about: "a batch that wraps to the start of the data area, its first entries whole and \
                a later one torn: recovery discards (and wipes) its remains from there",
        random: false,
        variants: all,
        needs_hooks: false,
        run: wrap_batch_torn,
    },
    Scenario {
        name: "old-lap-past-tail",
        about: "after a wrap, new entries end exactly where an old lap's entry begins; crashes \
                that leave that entry intact at the tail (end marker lost), and appends over it",
        random: false,
        variants: all,
        needs_hooks: false,
        run: old_lap_past_tail,
    },
    Scenario {
        name: "many-laps",
        about: "over 100 wraps of a 16 KiB log: random appends and batches, truncate_before \
                whenever Full, some truncate_after and reset; sampled crash points",
        random: true,
        variants: all,
        needs_hooks: false,
        run: many_laps,
    },
    Scenario {
        name: "truncate-suffix",
        about: "truncate_after (middle, nothing, everything, inside a batch) and reset, with \
                crashes at both barriers; shorter appends over the deleted entries; later sessions",
        random: true,
        variants: every_flush,
        needs_hooks: false,
        run: truncate_suffix,
    },
    Scenario {
        name: "suffix-revival",
        about:
            "truncate_after crashes after its slot update with the first deleted header intact; \
                the next session wraps and truncates its suffix above that header's LSN",
        random: false,
        variants: all,
        needs_hooks: false,
        run: suffix_revival,
    },
    Scenario {
        name: "suffix-all-wrap",
        about: "truncate_after(first - 1) deletes every entry of a log whose head is near the \
                end of the file; the next append wraps (an empty first part)",
        random: false,
        variants: all,
        needs_hooks: false,
        run: suffix_all_wrap,
    },
    Scenario {
        name: "concurrent",
        about: "two and three appenders in seeded interleavings of their media operations \
                (per-thread fences), in a plain and in a wrapping log",
        random: true,
        variants: all,
        needs_hooks: false,
        run: concurrent,
    },
    Scenario {
        name: "tail-hint",
        about: "Options::tail_hint_every(256): hint slot updates during appends, truncations \
                around the hint, a wrap; recovery with the hint equals a full scan",
        random: true,
        variants: all,
        needs_hooks: false,
        run: tail_hint,
    },
    Scenario {
        name: "suffix-wrap-suffix",
        about: "truncate_after, an append that wraps, and a truncate_after above the first \
                deleted entry's LSN, in one session",
        random: false,
        variants: all,
        needs_hooks: false,
        run: suffix_wrap_suffix,
    },
    Scenario {
        name: "concurrent-truncate",
        about: "truncate_before and truncate_after in a session whose concurrent appends set the \
                CONCURRENT slot flag, around two concurrent phases",
        random: true,
        variants: all,
        needs_hooks: false,
        run: concurrent_truncate,
    },
    Scenario {
        name: "concurrent-checkpoint",
        about: "truncate_before and reset from a fourth thread beside three appenders, in the same \
                seeded interleaving, while the appends wrap around a small log",
        random: true,
        variants: all,
        needs_hooks: false,
        run: truncate_beside_appenders,
    },
    Scenario {
        name: "concurrent-hint-wrap",
        about: "the tail hint with three appenders whose reservations wrap to the start of the \
                data area",
        random: true,
        variants: all,
        needs_hooks: false,
        run: concurrent_hint_wrap,
    },
    Scenario {
        name: "msync-group-wrap",
        about: "the msync group commit with three appenders around the wrap (one sync per \
                contiguous run)",
        random: true,
        variants: msync_only,
        needs_hooks: false,
        run: msync_group_wrap,
    },
    Scenario {
        name: "msync-marker-page",
        about: "msync: an append ends on a page boundary (its end marker is the next page's \
                first word, over a deleted entry with the next LSN); that LSN's entry wraps; a \
                truncate_after moves the cut above it",
        random: false,
        variants: msync_only,
        needs_hooks: false,
        run: msync_marker_page,
    },
    Scenario {
        name: "failed-sync",
        about: "an append whose barrier fails: the error, then Poisoned for every later append; \
                later sessions from crash images of the poisoned one",
        random: true,
        variants: all,
        needs_hooks: false,
        run: failed_sync,
    },
    Scenario {
        name: "journal-checkpoint",
        about: "the metadata_journal example's protocol: journaled operations, snapshot then \
                truncate_before; the state rebuilt from snapshot and journal at every crash",
        random: true,
        variants: all,
        needs_hooks: false,
        run: journal_checkpoint,
    },
    Scenario {
        name: "abandoned",
        about: "appenders that panic between reservation and stores: padding takes their LSNs \
                (single, batch, large, wrapping); needs the engine's test switch",
        random: false,
        variants: all,
        needs_hooks: true,
        run: abandoned,
    },
];

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
