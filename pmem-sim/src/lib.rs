//! A persistent-memory simulator for crash-testing daxlog.
//!
//! [`SimMedia`] implements daxlog's [`Media`] trait over an in-memory image and records every
//! store, non-temporal store, flush and drain in program order. A recorded [`Run`] (the image the
//! media started from plus its [`Op`] trace) is replayed by [`PmemState`], which tracks what is
//! durable and what is still pending under the x86 persistence rules, and [`CrashImages`]
//! enumerates (or samples) the durable images a power failure at any point of the run could
//! leave behind, under a chosen crash [`Model`]. The [`suite`] module holds the crash scenarios
//! and the oracle that daxlog's crash tests run; see `README.md` for the model and its limits.
//!
//! Operations may come from several threads: each is tagged with the issuing thread's id (see
//! [`set_thread_id`]), because a fence orders only the flushes and non-temporal stores of the
//! thread (core) that issues it. [`sched::Scheduler`] runs several appenders in a deterministic,
//! seeded interleaving of their media operations.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::cell::{Cell, RefCell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use daxlog::{Media, Persistence};

mod images;
mod kernel;
mod model;
mod rng;
pub mod sched;
pub mod suite;

pub use images::{CrashImages, GenConfig};
pub use model::{Model, PmemState, Run, CACHE_LINE, PAGE, WORD};
pub use rng::Rng;

/// One operation the engine issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Cached store of `data` at `off`.
    Store {
        /// Byte offset.
        off: usize,
        /// The bytes stored.
        data: Vec<u8>,
    },
    /// Non-temporal store of `data` at `off`.
    StoreNt {
        /// Byte offset (a multiple of 8).
        off: usize,
        /// The bytes stored (a multiple of 8 bytes).
        data: Vec<u8>,
    },
    /// Write-back of the lines covering `[off, off + len)` (in `msync` mode: the range to sync
    /// at the next drain).
    Flush {
        /// Byte offset.
        off: usize,
        /// Length in bytes.
        len: usize,
    },
    /// Drain (fence / msync).
    Drain,
    /// In msync mode, a fence after non-temporal stores: they reach memory (the page cache),
    /// where a later sync finds them; nothing becomes durable (`Media::fence_stores`).
    Fence,
    /// A drain that failed (an `msync` error): durability is unknown, so it completes nothing.
    DrainFailed,
    /// msync mode: a sync of `[off, off + len)` whose write-back failed. What its pages held
    /// never reaches the media, and Linux keeps those bytes in the page cache marked clean:
    /// no later sync writes them, until a store into the page (or [`Op::Rewrite`]) dirties
    /// it again. When the error is reported is up to the media ([`Observer::fail_writeback`]).
    WritebackFailed {
        /// Byte offset.
        off: usize,
        /// Length in bytes.
        len: usize,
    },
    /// msync mode: the pages of `[off, off + len)` marked dirty again, no byte changed
    /// (`Media::rewrite`): bytes a failed write-back left clean are written by the next sync.
    Rewrite {
        /// Byte offset.
        off: usize,
        /// Length in bytes.
        len: usize,
    },
    /// The reader area's published LSN stored (`Media::publish_for_readers`, or the failure
    /// floor a failed drain lowers it to), with the vouched word in the CPU-flush modes:
    /// ordinary cached stores at `daxlog::format::PUBLISHED_OFFSET`, which nothing flushes but
    /// a suffix truncation, a writable open that lowers them, the close of a writer in a
    /// CPU-flush mode, and `create_on`, which clears them. Recovery reads them (FORMAT.md
    /// section 7, rules 1 and 4, and the range a writable open syncs again), so crash images
    /// carry their possible values; see `images.rs` for how they are chosen.
    Publish {
        /// The value stored.
        lsn: u64,
        /// The vouched word stored after it (`daxlog::format::VOUCHED_OFFSET`, the CPU-flush
        /// modes).
        vouch: bool,
    },
}

impl Op {
    /// A short description: `store 4096+24`, `nt-store 4096+512`, `flush 4096+64`, `drain`.
    pub fn describe(&self) -> String {
        match self {
            Op::Store { off, data } => format!("store {off}+{}", data.len()),
            Op::StoreNt { off, data } => format!("nt-store {off}+{}", data.len()),
            Op::Flush { off, len } => format!("flush {off}+{len}"),
            Op::Drain => "drain".to_string(),
            Op::Fence => "fence".to_string(),
            Op::DrainFailed => "failed drain".to_string(),
            Op::WritebackFailed { off, len } => format!("failed write-back {off}+{len}"),
            Op::Rewrite { off, len } => format!("rewrite {off}+{len}"),
            Op::Publish { lsn, vouch } => {
                format!("publish {lsn}{}", if *vouch { " (vouched)" } else { "" })
            }
        }
    }
}

/// The id of the thread that issues an operation. Thread 0 is the default (every thread that
/// did not call [`set_thread_id`]); ids must be below 64.
pub type ThreadId = u8;

thread_local! {
    static THREAD_ID: Cell<ThreadId> = const { Cell::new(0) };
    static GATE: RefCell<Option<Arc<dyn Gate>>> = const { RefCell::new(None) };
}

/// Tags every operation this thread issues on any [`SimMedia`] with `id` (below 64).
pub fn set_thread_id(id: ThreadId) {
    assert!(id < 64, "thread ids must be below 64");
    THREAD_ID.with(|t| t.set(id));
}

/// The id operations of this thread are tagged with.
pub fn thread_id() -> ThreadId {
    THREAD_ID.with(|t| t.get())
}

/// Called before each operation the current thread issues on a [`SimMedia`], before it is
/// recorded: a scheduler blocks there until it is the thread's turn.
pub trait Gate: Send + Sync {
    /// The thread is about to issue `op`.
    fn before(&self, op: &Op);
}

/// Makes every later media operation of this thread pass through `gate` (`None`: no gate).
pub fn set_gate(gate: Option<Arc<dyn Gate>>) {
    GATE.with(|g| *g.borrow_mut() = gate);
}

/// What a gate is told at a `Media::sync_point` (nothing is recorded for it).
const SYNC_POINT: Op = Op::Flush { off: 0, len: 0 };

fn pass_gate(op: &Op) {
    // Clone out of the cell first: the gate may block for a long time.
    let gate = GATE.with(|g| g.borrow().clone());
    if let Some(g) = gate {
        g.before(op);
    }
}

#[derive(Default)]
struct Trace {
    ops: Vec<Op>,
    /// The issuing thread of each operation.
    threads: Vec<ThreadId>,
}

impl Trace {
    fn push(&mut self, op: Op) {
        self.ops.push(op);
        self.threads.push(thread_id());
    }
}

struct Inner {
    image: Box<[UnsafeCell<u8>]>,
    mode: Persistence,
    /// The trace. Its lock is also held while a store copies bytes into the image, so that an
    /// [`Observer`] snapshot never races with a store.
    trace: Mutex<Trace>,
    /// Every drain fails from now on (like `MmapMedia` after an `msync` error).
    fail_drains: AtomicBool,
    /// msync mode: the next flush's write-back fails, reported to the drain this many drains
    /// later (1: its own; 0: none armed). See [`Observer::fail_writeback`].
    fail_writeback: AtomicUsize,
    /// Drains left until a failed write-back is reported (0: none to report).
    report_in: AtomicUsize,
}

// SAFETY: the image is only written by `Media::store`/`store_nt`, whose callers guarantee that no
// other access to the range happens concurrently, and those writes happen with the trace lock
// held; snapshots (the only other whole-image reads) take the same lock. Reads through
// `Media::read` never overlap a store by the trait's contract.
unsafe impl Sync for Inner {}

/// Simulated persistent memory: the current (volatile) view plus a trace of operations.
///
/// The media starts from an image that is taken to be wholly durable. Every operation is
/// recorded in order; [`SimMedia::take_trace`] hands the trace over for replay by
/// [`PmemState`].
pub struct SimMedia {
    inner: Arc<Inner>,
    /// Where a failure lowers the reader area's published LSN, as in `MmapMedia`: per handle
    /// (`Media::set_failure_floor`, which every writable open calls; u64::MAX: not set).
    floor: AtomicU64,
}

/// A read-only handle on a [`SimMedia`] that stays usable while a log owns the media.
#[derive(Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

impl SimMedia {
    /// Media of `len` zero bytes using barrier `mode`.
    pub fn new(len: usize, mode: Persistence) -> Self {
        Self::from_vec(vec![0u8; len], mode)
    }

    /// Media holding a copy of `bytes`.
    pub fn from_image(bytes: &[u8], mode: Persistence) -> Self {
        Self::from_vec(bytes.to_vec(), mode)
    }

    /// Media holding `bytes`, without copying them.
    pub fn from_vec(bytes: Vec<u8>, mode: Persistence) -> Self {
        let boxed: Box<[u8]> = bytes.into_boxed_slice();
        let raw: *mut [u8] = Box::into_raw(boxed);
        // SAFETY: `UnsafeCell<u8>` is `repr(transparent)` over `u8`, so `[UnsafeCell<u8>]` has
        // the layout of `[u8]` and the same length; the pointer comes from `Box::into_raw` of
        // a box allocated with the global allocator, and ownership moves to the new box.
        let image: Box<[UnsafeCell<u8>]> = unsafe { Box::from_raw(raw as *mut [UnsafeCell<u8>]) };
        SimMedia {
            inner: Arc::new(Inner {
                image,
                mode,
                trace: Mutex::new(Trace::default()),
                fail_drains: AtomicBool::new(false),
                fail_writeback: AtomicUsize::new(0),
                report_in: AtomicUsize::new(0),
            }),
            floor: AtomicU64::new(u64::MAX),
        }
    }

    /// A handle that can read the image and trace while a log owns this media.
    pub fn observer(&self) -> Observer {
        Observer {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The operations recorded so far.
    pub fn trace(&self) -> Vec<Op> {
        self.inner.lock_trace().ops.clone()
    }

    /// Takes the operations recorded so far, leaving the trace empty.
    pub fn take_trace(&self) -> Vec<Op> {
        self.take_tagged_trace().0
    }

    /// Takes the operations recorded so far and the id of the thread that issued each,
    /// leaving the trace empty.
    pub fn take_tagged_trace(&self) -> (Vec<Op>, Vec<ThreadId>) {
        let t = std::mem::take(&mut *self.inner.lock_trace());
        (t.ops, t.threads)
    }

    /// A copy of the current (volatile) image: every store applied, durable or not.
    pub fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }
}

impl Observer {
    /// Number of operations recorded so far.
    pub fn ops(&self) -> usize {
        self.inner.lock_trace().ops.len()
    }

    /// A copy of the current (volatile) image.
    pub fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }

    /// From now on every drain fails with `EIO` (as `msync` failures are sticky in
    /// [`daxlog::MmapMedia`]), and is recorded as [`Op::DrainFailed`]; `false` heals the media.
    pub fn fail_drains(&self, fail: bool) {
        self.inner.fail_drains.store(fail, Ordering::SeqCst);
    }

    /// msync mode: the write-back of the next flush fails ([`Op::WritebackFailed`]), and the
    /// `report_at`-th drain from then on (1: the flush's own) fails, as does every drain after
    /// it (the failure is sticky, as in `MmapMedia`); the drains before it succeed. Linux
    /// reports a failed write-back once, to the first sync that looks, and has been seen to
    /// report it to a later sync than the one that covered the pages.
    pub fn fail_writeback(&self, report_at: usize) {
        assert!(
            report_at >= 1,
            "the report comes at a drain from the flush's own on"
        );
        self.inner.fail_writeback.store(report_at, Ordering::SeqCst);
    }

    /// Another handle on the same media (image, trace and failure state), as a new open of
    /// the same file: for an open after one that failed, which dropped the handle it took.
    /// Only one log may own the media at a time.
    pub fn reopen(&self) -> SimMedia {
        SimMedia {
            inner: Arc::clone(&self.inner),
            floor: AtomicU64::new(u64::MAX),
        }
    }

    /// Operations `start..end` of the trace, with the thread that issued each.
    pub fn ops_range(&self, start: usize, end: usize) -> (Vec<Op>, Vec<ThreadId>) {
        let t = self.inner.lock_trace();
        (t.ops[start..end].to_vec(), t.threads[start..end].to_vec())
    }

    /// The run of the operations from `start` to now, from `initial`, the durable image
    /// before them (a [`Observer::snapshot`] taken when no flush was pending).
    pub fn run_from(&self, initial: Vec<u8>, start: usize) -> Run {
        let (ops, threads) = self.ops_range(start, self.ops());
        Run {
            initial,
            persistence: self.inner.mode,
            ops,
            threads,
        }
    }
}

impl Inner {
    fn lock_trace(&self) -> MutexGuard<'_, Trace> {
        self.trace.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> Vec<u8> {
        let _guard = self.lock_trace();
        let len = self.image.len();
        let mut v = vec![0u8; len];
        if len > 0 {
            // SAFETY: the image is `len` initialised bytes (`UnsafeCell<u8>` has the layout of
            // `u8`); stores hold the trace lock while writing, and we hold it, so no byte is
            // written during the copy. `v` is a distinct allocation of `len` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    UnsafeCell::raw_get(self.image.as_ptr()) as *const u8,
                    v.as_mut_ptr(),
                    len,
                )
            };
        }
        v
    }

    /// Stores the reader area's published LSN and records it ([`Op::Publish`]); in the
    /// CPU-flush modes the vouched word after it, as `MmapMedia` does.
    fn store_published(&self, lsn: u64) {
        let vouch = self.mode.is_cpu_flush();
        let mut words = [0u8; 16];
        words[..8].copy_from_slice(&lsn.to_le_bytes());
        words[8..].copy_from_slice(&daxlog::format::vouched_word(lsn).to_le_bytes());
        let at = daxlog::format::PUBLISHED_OFFSET;
        let bytes = if vouch { &words[..] } else { &words[..8] };
        // SAFETY: the words lie in the metadata page, inside the image; the engine never
        // lends them as a slice while writing (only the open reads them, before any
        // publication), and publications are ordered among themselves by the engine
        // (`MmapMedia` stores the words atomically; here the trace lock orders the copies).
        unsafe { self.write(at, bytes, Op::Publish { lsn, vouch }) };
    }

    fn ptr(&self, off: usize) -> *mut u8 {
        self.image[off].get()
    }

    /// Copies `src` to `off` and records `op`, under the trace lock.
    ///
    /// # Safety
    /// The range is in bounds and the caller has exclusive access to it (see `Media::store`).
    unsafe fn write(&self, off: usize, src: &[u8], op: Op) {
        pass_gate(&op);
        // SAFETY: as for this function.
        unsafe { self.write_gated(off, src, op) };
    }

    /// [`Inner::write`] for a thread that has passed its gate for `op` already.
    ///
    /// # Safety
    /// As for [`Inner::write`].
    unsafe fn write_gated(&self, off: usize, src: &[u8], op: Op) {
        let mut trace = self.lock_trace();
        // SAFETY: in bounds (the caller checked); exclusive access per the caller; `src` is a
        // separate borrow, so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr(off), src.len()) };
        trace.push(op);
    }
}

impl Media for SimMedia {
    fn len(&self) -> usize {
        self.inner.image.len()
    }

    fn sync_point(&self) {
        // The thread parks here too, so that its reservation falls in its own turn.
        pass_gate(&SYNC_POINT);
    }

    fn schedules_threads(&self) -> bool {
        true
    }

    fn persistence(&self) -> Persistence {
        self.inner.mode
    }

    unsafe fn read(&self, off: usize, len: usize) -> &[u8] {
        assert!(off <= self.len() && len <= self.len() - off);
        if len == 0 {
            return &[];
        }
        // SAFETY: in bounds (checked above); `UnsafeCell<u8>` has the layout of `u8`; the
        // caller guarantees that no store to the range happens while the slice lives.
        unsafe { std::slice::from_raw_parts(self.inner.ptr(off), len) }
    }

    unsafe fn store(&self, off: usize, src: &[u8]) {
        assert!(off <= self.len() && src.len() <= self.len() - off);
        if src.is_empty() {
            return;
        }
        let op = Op::Store {
            off,
            data: src.to_vec(),
        };
        // SAFETY: in bounds (checked above); the caller guarantees exclusive access.
        unsafe { self.inner.write(off, src, op) };
    }

    unsafe fn store_nt(&self, off: usize, src: &[u8]) {
        assert!(
            off.is_multiple_of(8) && src.len().is_multiple_of(8),
            "unaligned non-temporal store"
        );
        assert!(off <= self.len() && src.len() <= self.len() - off);
        if src.is_empty() {
            return;
        }
        let op = Op::StoreNt {
            off,
            data: src.to_vec(),
        };
        // SAFETY: as for `store`.
        unsafe { self.inner.write(off, src, op) };
    }

    unsafe fn store_nt_crc(&self, off: usize, src: &[u8], crc: u32) -> u32 {
        assert!(
            off.is_multiple_of(8) && src.len().is_multiple_of(8),
            "unaligned non-temporal store"
        );
        assert!(off <= self.len() && src.len() <= self.len() - off);
        if src.is_empty() {
            return crc;
        }
        // Its turn first (a scheduler gate looks at no operation's bytes): the kernel below
        // takes a process-wide lock and, the first time, maps its scratch memory, and run
        // outside the thread's turn that time would change the seeded interleaving.
        pass_gate(&Op::StoreNt {
            off,
            data: Vec::new(),
        });
        // The engine's real copy-and-checksum kernel, on a mapping at the same alignment: what
        // it stored and the checksum it returned are what the simulated media gets.
        let (stored, crc) = kernel::copy_nt_crc(off, src, crc);
        let op = Op::StoreNt {
            off,
            data: stored.clone(),
        };
        // SAFETY: as for `store`; `stored` has the length of `src`; the gate was passed above.
        unsafe { self.inner.write_gated(off, &stored, op) };
        crc
    }

    fn flush(&self, off: usize, len: usize) {
        let report_at = match self.inner.mode {
            Persistence::Msync => self.inner.fail_writeback.swap(0, Ordering::SeqCst),
            _ => 0,
        };
        let op = if report_at > 0 {
            self.inner.report_in.store(report_at, Ordering::SeqCst);
            Op::WritebackFailed { off, len }
        } else {
            Op::Flush { off, len }
        };
        pass_gate(&op);
        self.inner.lock_trace().push(op);
    }

    fn drain(&self) -> std::io::Result<()> {
        let reported = self
            .inner
            .report_in
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            == Ok(1);
        if reported {
            self.inner.fail_drains.store(true, Ordering::SeqCst);
        }
        if self.inner.fail_drains.load(Ordering::SeqCst) {
            // As `MmapMedia` does once a failure is recorded.
            let floor = self.floor.load(Ordering::SeqCst);
            if floor != u64::MAX {
                self.inner.store_published(floor);
            }
            pass_gate(&Op::DrainFailed);
            self.inner.lock_trace().push(Op::DrainFailed);
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        pass_gate(&Op::Drain);
        self.inner.lock_trace().push(Op::Drain);
        Ok(())
    }

    fn fence_stores(&self) {
        pass_gate(&Op::Fence);
        self.inner.lock_trace().push(Op::Fence);
    }

    fn set_failure_floor(&self, lsn: u64) {
        self.floor.store(lsn, Ordering::SeqCst);
    }

    fn rewrite(&self, off: usize, len: usize) {
        if self.inner.mode == Persistence::Msync && len > 0 {
            let op = Op::Rewrite { off, len };
            pass_gate(&op);
            self.inner.lock_trace().push(op);
        }
    }

    fn keeps_reader_area(&self) -> bool {
        true
    }

    /// The published LSN in the image, recorded as [`Op::Publish`] (a cached store that only
    /// a suffix truncation, a writable open that lowers it, or the close of a writer in a
    /// CPU-flush mode flushes: a crash image may hold any value it had since then), and held
    /// at the failure floor once a drain failed, as `MmapMedia` does.
    fn publish_for_readers(&self, next_lsn: u64) {
        let floor = self
            .floor
            .fetch_min(next_lsn, Ordering::SeqCst)
            .min(next_lsn);
        let failed = self.inner.fail_drains.load(Ordering::SeqCst);
        self.inner
            .store_published(if failed { floor } else { next_lsn });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_reads_back() {
        let m = SimMedia::new(128, Persistence::Clwb);
        let obs = m.observer();
        // SAFETY: single-threaded test, in bounds, no slice alive.
        unsafe {
            m.store(3, b"abc");
            m.store_nt(8, &[7u8; 16]);
        }
        m.flush(0, 64);
        m.drain().unwrap();
        assert_eq!(obs.ops(), 4);
        let snap = obs.snapshot();
        assert_eq!(&snap[3..6], b"abc");
        assert_eq!(&snap[8..24], &[7u8; 16]);
        // SAFETY: no store is in progress.
        assert_eq!(unsafe { m.read(3, 3) }, b"abc");
        let t = m.take_trace();
        assert_eq!(t.len(), 4);
        assert_eq!(t[3], Op::Drain);
        assert!(m.trace().is_empty());
    }
}
