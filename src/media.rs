//! The seam between the engine and persistent memory.
//!
//! Every store, flush and fence the engine issues goes through [`Media`]. The real
//! implementation is [`crate::MmapMedia`] (a file mapping with CPU cache flushes or `msync`);
//! the `pmem-sim` crate implements it over a simulated image that records each operation, so
//! that crash tests can enumerate what power failure could leave behind. `Log` is generic over
//! the media and monomorphised, so the seam costs nothing at run time.
//!
//! The durability contract the engine relies on:
//! 1. bytes written with [`Media::store`] become durable only after [`Media::flush`] of a range
//!    covering them and a following [`Media::drain`];
//! 2. bytes written with [`Media::store_nt`] become durable after the next [`Media::drain`]
//!    (no flush needed, except on media whose [`Persistence`] is [`Persistence::Msync`], where
//!    the engine never uses non-temporal stores);
//! 3. nothing else is promised: before the drain, any subset of the 8-byte words stored may
//!    already be durable, in any order.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The persistence barrier a log uses to make appends durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Persistence {
    /// Stores, `CLWB` of each written cache line, one `SFENCE`.
    Clwb,
    /// Stores, `CLFLUSHOPT` of each written cache line, one `SFENCE`.
    ClflushOpt,
    /// Stores, `CLFLUSH` of each written cache line, one `MFENCE`.
    Clflush,
    /// Stores into a page-cache mapping, one `msync(MS_SYNC)` over the touched pages.
    Msync,
}

impl Persistence {
    /// True for the modes that persist with CPU cache write-back instructions (the DAX path).
    pub fn is_cpu_flush(self) -> bool {
        !matches!(self, Persistence::Msync)
    }

    /// A short stable name: `clwb`, `clflushopt`, `clflush` or `msync`.
    pub fn name(self) -> &'static str {
        match self {
            Persistence::Clwb => "clwb",
            Persistence::ClflushOpt => "clflushopt",
            Persistence::Clflush => "clflush",
            Persistence::Msync => "msync",
        }
    }
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Persistence::Clwb => "CLWB+SFENCE",
            Persistence::ClflushOpt => "CLFLUSHOPT+SFENCE",
            Persistence::Clflush => "CLFLUSH+MFENCE",
            Persistence::Msync => "msync",
        })
    }
}

/// Byte-addressable persistent media: the only way the engine touches a log's bytes.
///
/// Offsets are byte offsets from the start of the log file. Implementations must be usable from
/// several threads; the engine guarantees the aliasing rules stated on each `unsafe` method.
pub trait Media: Send + Sync {
    /// Length of the media in bytes.
    fn len(&self) -> usize;

    /// True if the media has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The barrier this media uses.
    fn persistence(&self) -> Persistence;

    /// Returns the bytes `[off, off + len)`.
    ///
    /// # Safety
    /// The range is in bounds, and no store to any byte of it happens while the returned slice
    /// is alive.
    unsafe fn read(&self, off: usize, len: usize) -> &[u8];

    /// Stores `src` at `off` with ordinary (cached) stores.
    ///
    /// # Safety
    /// The range is in bounds, no slice returned by [`Media::read`] that overlaps it is alive,
    /// and no other thread reads or stores the range concurrently.
    unsafe fn store(&self, off: usize, src: &[u8]);

    /// Stores `src` at `off` with non-temporal stores. `off` and `src.len()` are multiples of 8.
    ///
    /// # Safety
    /// As for [`Media::store`].
    unsafe fn store_nt(&self, off: usize, src: &[u8]);

    /// Starts writing back the cache lines (or pages) that cover `[off, off + len)`.
    fn flush(&self, off: usize, len: usize);

    /// Waits until every flush and non-temporal store issued before it is durable. An error
    /// (an `msync` that failed) means durability is unknown.
    fn drain(&self) -> std::io::Result<()>;

    /// A hint that `[off, off + len)` is about to be written (e.g. prefault the pages).
    fn prepare(&self, _off: usize, _len: usize) {}
}

/// Proof of being the single writer. Held inside the log's writer mutex; stores to the data area
/// require a `&mut` of it.
#[derive(Debug)]
pub(crate) struct WriteToken(());

/// A [`Media`] with the invariants that make its `unsafe` methods safe to call.
///
/// The data area is split at the *committed* offset. Bytes below it (down to `data_start`) hold
/// published entries: they are never stored to again, and readers may hold slices into them.
/// Bytes at and above it belong to the writer, who proves exclusivity with a [`WriteToken`].
/// The metadata area below `data_start` is never lent to readers.
pub(crate) struct Pmem<M> {
    media: M,
    data_start: usize,
    committed: AtomicU64,
}

impl<M: Media> Pmem<M> {
    pub(crate) fn new(media: M, data_start: usize) -> Self {
        Pmem {
            media,
            data_start,
            committed: AtomicU64::new(data_start as u64),
        }
    }

    pub(crate) fn media(&self) -> &M {
        &self.media
    }

    pub(crate) fn into_media(self) -> M {
        self.media
    }

    /// Reads any bytes while no writer exists yet (creation and recovery own the media).
    pub(crate) fn view(&mut self, off: usize, len: usize) -> &[u8] {
        assert!(off <= self.media.len() && len <= self.media.len() - off);
        // SAFETY: in bounds (checked above); `&mut self` excludes every store for the lifetime
        // of the returned slice, since all stores go through `&self` methods of `self`.
        unsafe { self.media.read(off, len) }
    }

    /// Stores into any bytes while no reader or writer exists (creation and recovery).
    pub(crate) fn store_exclusive(&mut self, off: usize, src: &[u8]) {
        assert!(off <= self.media.len() && src.len() <= self.media.len() - off);
        // SAFETY: in bounds (checked above); `&mut self` means no slice from `read` is alive and
        // no other thread can access the media.
        unsafe { self.media.store(off, src) }
    }

    /// Creates the single write token. Called once, when the log is assembled.
    pub(crate) fn token(&mut self) -> WriteToken {
        WriteToken(())
    }

    /// Sets the committed offset while no reader exists (end of recovery).
    pub(crate) fn set_committed(&mut self, end: usize) {
        assert!(end >= self.data_start && end <= self.media.len());
        *self.committed.get_mut() = end as u64;
    }

    /// The end of the published entries.
    #[inline]
    pub(crate) fn committed(&self) -> usize {
        self.committed.load(Ordering::Acquire) as usize
    }

    /// Bytes of published entries: `None` unless the range lies in `[data_start, committed)`.
    #[inline]
    pub(crate) fn read_committed(&self, off: usize, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len)?;
        if off < self.data_start || end > self.committed() {
            return None;
        }
        // SAFETY: in bounds (committed <= media length); the range is below the committed
        // offset, which only grows, and stores only target bytes at or above it (see
        // `store_tail`), so no store overlaps the slice while it lives.
        Some(unsafe { self.media.read(off, len) })
    }

    /// Stores into the writer's part of the data area.
    #[inline]
    pub(crate) fn store_tail(&self, _token: &mut WriteToken, off: usize, src: &[u8], nt: bool) {
        assert!(
            off >= self.committed() && src.len() <= self.media.len().saturating_sub(off),
            "store outside the writer's area"
        );
        // SAFETY: the range is in bounds and at or above the committed offset (checked above),
        // so no reader holds a slice of it; the `&mut WriteToken` proves this is the only writer.
        unsafe {
            if nt {
                self.media.store_nt(off, src)
            } else {
                self.media.store(off, src)
            }
        }
    }

    /// Publishes durable entries up to `end`: readers may now see them.
    #[inline]
    pub(crate) fn publish(&self, _token: &mut WriteToken, end: usize) {
        debug_assert!(end >= self.committed() && end <= self.media.len());
        self.committed.store(end as u64, Ordering::Release);
    }

    #[inline]
    pub(crate) fn flush(&self, off: usize, len: usize) {
        self.media.flush(off, len)
    }

    #[inline]
    pub(crate) fn drain(&self) -> std::io::Result<()> {
        self.media.drain()
    }
}
