//! The crash scenarios, by theme.

mod basic;
mod concurrent;
mod faults;
mod hint;
mod journal;
mod reuse;
mod stale;

pub use basic::SIZES;
pub(super) use basic::{batch, full, reopen, sizes, sizes_random, superblock_repair};
pub(super) use concurrent::{
    concurrent, concurrent_hint_wrap, concurrent_truncate, msync_group_wrap,
    truncate_beside_appenders,
};
pub(super) use faults::{abandoned, failed_sync};
pub(super) use hint::tail_hint;
pub(super) use journal::journal_checkpoint;
pub(super) use reuse::{
    many_laps, msync_marker_page, old_lap_past_tail, suffix_all_wrap, suffix_revival,
    suffix_wrap_suffix, truncate_head, truncate_suffix, wrap_batch_torn, wrap_first_append,
};
pub(super) use stale::{forged_payload, reuse, stale_batch, torn_shorter, wipe_revival};
