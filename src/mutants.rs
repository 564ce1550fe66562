//! Deliberate engine bugs, for proving that the crash suite catches them.
//!
//! Compiled only with the `mutants` feature, which must never be enabled outside tests. A
//! process-wide switch selects at most one mutant at a time.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::media::{Media, Pmem};
use crate::persist::CACHE_LINE;

/// A deliberate bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mutant {
    /// No mutation.
    None = 0,
    /// The last cache line of an append is not written back.
    SkipLastLineFlush = 1,
    /// The drain (fence or msync) after an append is skipped.
    SkipFence = 2,
    /// Only the header's cache line is written back; the payload lines are not.
    FlushHeaderOnly = 3,
    /// Recovery accepts entries without checking LSN continuity.
    NoLsnCheck = 4,
}

static ACTIVE: AtomicU8 = AtomicU8::new(0);

static PANIC_AFTER_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the next append (of any thread) panic right after it marks its ticket ready: the
/// worst place for a panic, where its thread may owe the publication of later tickets.
pub fn arm_panic_after_ready() {
    PANIC_AFTER_READY.store(true, Ordering::SeqCst);
}

/// True once after [`arm_panic_after_ready`].
pub(crate) fn take_panic_after_ready() -> bool {
    PANIC_AFTER_READY.swap(false, Ordering::SeqCst)
}

/// Activates `m` for the whole process.
pub fn set(m: Mutant) {
    ACTIVE.store(m as u8, Ordering::SeqCst);
}

/// The active mutant.
pub fn active() -> Mutant {
    match ACTIVE.load(Ordering::SeqCst) {
        1 => Mutant::SkipLastLineFlush,
        2 => Mutant::SkipFence,
        3 => Mutant::FlushHeaderOnly,
        4 => Mutant::NoLsnCheck,
        _ => Mutant::None,
    }
}

/// The mutated barrier of an append, or `None` to run the real one.
pub(crate) fn barrier<M: Media>(
    pmem: &Pmem<M>,
    start: usize,
    len: usize,
    nt: bool,
) -> Option<std::io::Result<()>> {
    match active() {
        Mutant::SkipLastLineFlush => {
            if !nt {
                let last_line = (start + len - 1) & !(CACHE_LINE - 1);
                let first_line = start & !(CACHE_LINE - 1);
                if last_line > first_line {
                    pmem.flush(start, last_line - start);
                }
            }
            Some(pmem.drain())
        }
        Mutant::SkipFence => {
            if !nt {
                pmem.flush(start, len);
            }
            Some(Ok(()))
        }
        Mutant::FlushHeaderOnly => {
            pmem.flush(start, crate::format::HEADER_LEN);
            Some(pmem.drain())
        }
        _ => None,
    }
}
