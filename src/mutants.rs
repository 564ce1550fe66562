//! Deliberate engine bugs, for proving that the crash suite catches them.
//!
//! Compiled only with the `mutants` feature, which must never be enabled outside tests. A
//! process-wide switch selects at most one mutant at a time.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

use crate::media::{Media, Pmem};
use crate::persist::CACHE_LINE;

/// A deliberate bug. Each is a realistic mistake in a different place of the engine; the crash
/// suite must catch every one (`pmem-sim/tests/crash_mutants.rs`).
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
    /// Recovery accepts entries at or above the cut without checking their epoch.
    NoEpochCheck = 5,
    /// The entries of a batch are not flagged as continuing: a crash can keep part of a batch.
    BatchNoContinues = 6,
    /// An appender marks its ticket ready before its own barrier, so a publisher may publish
    /// it (and acknowledge later appends) while its entries are not durable.
    PublishBeforeFence = 7,
    /// An appender does not wait for the reservation before it to store the end marker that
    /// lies where its own entries begin.
    NoMarkerWait = 8,
    /// The msync group commit syncs only the first contiguous run of its reservations (not
    /// the part after a wrap).
    GroupSyncFirstRun = 9,
    /// Recovery does not drain its slot update before it wipes the torn remains: slot and
    /// wipe share one barrier.
    WipeInSlotBarrier = 10,
    /// `truncate_after` does not destroy the header of the first deleted entry.
    NoSuffixHeaderWipe = 11,
    /// An abandoned append (its thread panicked) is published without its padding.
    AbandonedNoPad = 12,
    /// The fused copy-and-checksum path stores the header (and the payload bytes of its line)
    /// with cached stores instead of non-temporal ones, which its barrier does not write back
    /// unless that line is the reservation's first edge line (with `CLWB` and `CLFLUSHOPT`).
    FusedHeaderCached = 13,
    /// Slot updates overwrite the current slot instead of the other copy.
    SlotSameCopy = 14,
    /// Recovery counts the torn bytes of a batch that wrapped from the tail before the wrap
    /// (the bug fixed in 892811f).
    TornFromTail = 15,
    /// The entries of a batch too large for the stack buffer (stored entry by entry, the fused
    /// copy-and-checksum path among them) are not flagged as continuing.
    LargeBatchNoContinues = 16,
    /// The msync group commit syncs its reservations' entries but not the end marker after
    /// them (which lies on the next page when the entries end on a page boundary).
    GroupSyncNoMarker = 17,
    /// In msync mode an appender that stored its entries with non-temporal stores marks its
    /// ticket ready without the fence that makes them reach memory, where the sync reads them.
    MsyncNtNoFence = 18,
    /// In the CPU-flush modes the barrier of a reservation stored non-temporally does not write
    /// back the partly covered lines at its edges, which were stored cached.
    NtEdgeNoFlush = 19,
    /// `truncate_after` lowers the reader area's published LSN but does not write it back
    /// before its slot: a crash can keep the new slot and the old, higher published LSN.
    SuffixPublishedNotFlushed = 20,
}

impl Mutant {
    /// Every mutant, [`Mutant::None`] excluded.
    pub const ALL: [Mutant; 20] = [
        Mutant::SkipLastLineFlush,
        Mutant::SkipFence,
        Mutant::FlushHeaderOnly,
        Mutant::NoLsnCheck,
        Mutant::NoEpochCheck,
        Mutant::BatchNoContinues,
        Mutant::PublishBeforeFence,
        Mutant::NoMarkerWait,
        Mutant::GroupSyncFirstRun,
        Mutant::WipeInSlotBarrier,
        Mutant::NoSuffixHeaderWipe,
        Mutant::AbandonedNoPad,
        Mutant::FusedHeaderCached,
        Mutant::SlotSameCopy,
        Mutant::TornFromTail,
        Mutant::LargeBatchNoContinues,
        Mutant::GroupSyncNoMarker,
        Mutant::MsyncNtNoFence,
        Mutant::NtEdgeNoFlush,
        Mutant::SuffixPublishedNotFlushed,
    ];
}

static ACTIVE: AtomicU8 = AtomicU8::new(0);

static PANIC_AFTER_READY: AtomicBool = AtomicBool::new(false);

static PANIC_BEFORE_STORES: AtomicBool = AtomicBool::new(false);

/// Makes the next append (of any thread) panic after it reserved its bytes and LSNs and
/// before it stores anything: its reservation must then be filled with padding.
pub fn arm_panic_before_stores() {
    PANIC_BEFORE_STORES.store(true, Ordering::SeqCst);
}

/// True once after [`arm_panic_before_stores`].
pub(crate) fn take_panic_before_stores() -> bool {
    PANIC_BEFORE_STORES.swap(false, Ordering::SeqCst)
}

/// Makes the next append (of any thread) panic right after it marks its ticket ready: the
/// worst place for a panic, where its thread may owe the publication of later tickets.
pub fn arm_panic_after_ready() {
    PANIC_AFTER_READY.store(true, Ordering::SeqCst);
}

/// True once after [`arm_panic_after_ready`].
pub(crate) fn take_panic_after_ready() -> bool {
    PANIC_AFTER_READY.swap(false, Ordering::SeqCst)
}

/// A place where a thread can be stopped, to hold a race's window open: off, armed, reached
/// (the thread waits there), released.
pub struct Pause(AtomicU8);

impl Pause {
    const fn new() -> Self {
        Pause(AtomicU8::new(0))
    }

    /// Makes the next thread that reaches this place stop there until [`Pause::release`].
    pub fn arm(&self) {
        self.0.store(1, Ordering::SeqCst);
    }

    /// True while a thread is stopped here.
    pub fn reached(&self) -> bool {
        self.0.load(Ordering::SeqCst) == 2
    }

    /// Lets the stopped thread go on (and disarms the pause).
    pub fn release(&self) {
        self.0.store(3, Ordering::SeqCst);
    }

    /// Stops the calling thread here while the pause is armed.
    #[inline]
    pub(crate) fn here(&self) {
        // A load first: some pauses lie on the append path, and benchmarks are built with
        // this feature (a dev-dependency enables it), where a compare-and-swap on every call
        // would be a locked instruction per append.
        if self.0.load(Ordering::Relaxed) == 1
            && self
                .0
                .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            while self.0.load(Ordering::SeqCst) == 2 {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            self.0.store(0, Ordering::SeqCst);
        }
    }
}

/// In msync mode, a reserver that found the ring of tickets full, in `wait_for_sync` after it
/// read the reservation state and before it takes the round lock: the window in which a suffix
/// truncation's wake-up can be lost.
pub static BEFORE_SYNC_WAIT: Pause = Pause::new();

/// `Log::create`, its new log formatted, before it takes its turn in the directory and looks at
/// the path again: the window in which the file it found there can be replaced.
pub static BEFORE_PLACING: Pause = Pause::new();

/// `Log::open`, `Log::open_read_only` and `Reader::open`, the file open and not yet locked:
/// the window in which a replacement can rename a new log over the path.
pub static BEFORE_LOCKING: Pause = Pause::new();

/// In msync mode, `MmapMedia::flush` after its `msync` returned and before it records the
/// error the `msync` returned: the window in which another thread's sync may take a writeback
/// error (the kernel reports it once per open file) and leave it unrecorded.
pub static AFTER_MSYNC: Pause = Pause::new();

/// Counts down the `msync`s to the one that fails (0: none).
static FAIL_MSYNC_IN: AtomicUsize = AtomicUsize::new(0);

/// Makes the next `msync` of a log's media report `EIO` (as one does that first learns of a
/// failed writeback), whatever it did.
pub fn fail_next_msync() {
    fail_msync(1);
}

/// Makes the `n`-th `msync` of a log's media from now (1: the next) report `EIO`, whatever it
/// did.
pub fn fail_msync(n: usize) {
    FAIL_MSYNC_IN.store(n, Ordering::SeqCst);
}

/// The result of an `msync` made by `MmapMedia::flush`, after [`fail_msync`], with the pause
/// [`AFTER_MSYNC`].
pub(crate) fn msync_result(r: std::io::Result<()>) -> std::io::Result<()> {
    let left = FAIL_MSYNC_IN.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    let r = if left == Ok(1) {
        Err(std::io::Error::from_raw_os_error(libc::EIO))
    } else {
        r
    };
    AFTER_MSYNC.here();
    r
}

/// Counts down the stores by `pwrite` to the one that fails (0: none).
static FAIL_WRITE_IN: AtomicUsize = AtomicUsize::new(0);

/// Makes a store of a log's media that is a `pwrite` (msync mode on a disk-backed file) fail
/// with `EIO`, writing nothing: the `n`-th from now (1: the next).
pub fn fail_write(n: usize) {
    FAIL_WRITE_IN.store(n, Ordering::SeqCst);
}

/// Before a store by `pwrite` made by `MmapMedia`: `EIO` if [`fail_write`] chose this one
/// (the write is then not made).
pub(crate) fn before_write() -> std::io::Result<()> {
    let left = FAIL_WRITE_IN.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if left == Ok(1) {
        Err(std::io::Error::from_raw_os_error(libc::EIO))
    } else {
        Ok(())
    }
}

/// A read below the tail hint after an open that started there, filling the index's front,
/// before its walk over the entries before the hint: the walk during which appends must go on.
pub static INDEX_FRONT_WALK: Pause = Pause::new();

/// `Log::verify`, after its look at the published LSN and before it takes its view of the live
/// region: the window in which appends publish more.
pub static VERIFY_BEFORE_VIEW: Pause = Pause::new();

/// `Log::verify`, its view taken: the window in which a suffix truncation that waited deletes
/// what was appended since its look at the published LSN.
pub static VERIFY_AFTER_VIEW: Pause = Pause::new();

/// A publisher, the live tail stored and the last LSN not yet: what a reader that looks now
/// sees of an entry being published.
pub static BETWEEN_TAIL_AND_LSN: Pause = Pause::new();

/// A `Follower` reporting a rewind, before it looks for the last entry it returned below the
/// rewind point: the window in which another suffix truncation deletes one of them.
pub static FOLLOWER_REWINDING: Pause = Pause::new();

/// Activates `m` for the whole process.
pub fn set(m: Mutant) {
    ACTIVE.store(m as u8, Ordering::SeqCst);
}

/// The active mutant.
pub fn active() -> Mutant {
    let v = ACTIVE.load(Ordering::SeqCst);
    Mutant::ALL
        .into_iter()
        .find(|&m| m as u8 == v)
        .unwrap_or(Mutant::None)
}

/// True if `m` is the active mutant.
#[inline]
pub(crate) fn is(m: Mutant) -> bool {
    ACTIVE.load(Ordering::Relaxed) == m as u8
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

static FAIL_NEXT_VERIFY_AHEAD: AtomicBool = AtomicBool::new(false);

/// Makes the next check of blocks written ahead of a log's tail (`Media::verify_ahead` of a
/// file mapping) fail, as one does that finds them still unwritten after a failed write.
pub fn fail_next_verify_ahead() {
    FAIL_NEXT_VERIFY_AHEAD.store(true, Ordering::SeqCst);
}

/// Whether a failure of `verify_ahead` was asked for (once).
pub(crate) fn take_verify_ahead_failure() -> bool {
    FAIL_NEXT_VERIFY_AHEAD.swap(false, Ordering::SeqCst)
}

static FAIL_POPULATES: AtomicU32 = AtomicU32::new(0);

/// Makes the next `n` write faults of blocks written ahead of a log's tail
/// (`MADV_POPULATE_WRITE` in `MmapMedia::write_ahead` and in the check that tries again) fail,
/// as when the kernel is out of memory, leaving the blocks unwritten.
pub fn fail_populates(n: u32) {
    FAIL_POPULATES.store(n, Ordering::SeqCst);
}

/// Whether a failure of the write faults ahead of the tail was asked for (counts it).
pub(crate) fn take_populate_failure() -> bool {
    take_one(&FAIL_POPULATES)
}

/// Takes one of the `left` times asked for, if any is left.
fn take_one(left: &AtomicU32) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

static SKIP_POPULATES: AtomicU32 = AtomicU32::new(0);

/// Makes the next `n` write faults of blocks written ahead of a log's tail report success
/// without dirtying anything: their write-back then writes nothing and leaves the blocks
/// unwritten, as a file system that did not record the write would.
pub fn skip_populates(n: u32) {
    SKIP_POPULATES.store(n, Ordering::SeqCst);
}

/// Whether write faults that do nothing were asked for (counts them).
pub(crate) fn take_populate_skip() -> bool {
    take_one(&SKIP_POPULATES)
}
