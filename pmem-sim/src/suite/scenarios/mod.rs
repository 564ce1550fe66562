//! The crash scenarios, by theme.

mod basic;
mod concurrent;
mod hint;
mod reuse;
mod stale;

pub use basic::SIZES;
pub(super) use basic::{batch, full, reopen, sizes, sizes_random, superblock_repair};
pub(super) use concurrent::concurrent;
pub(super) use hint::tail_hint;
pub(super) use reuse::{
    many_laps, old_lap_past_tail, suffix_all_wrap, suffix_revival, truncate_head, truncate_suffix,
    wrap_batch_torn, wrap_first_append,
};
pub(super) use stale::{forged_payload, reuse, stale_batch, torn_shorter, wipe_revival};
