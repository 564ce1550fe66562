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
//!    of the thread that stored them (no flush needed); on media whose [`Persistence`] is
//!    [`Persistence::Msync`] they are like cached stores once that thread's
//!    [`Media::fence_stores`] has put them in memory (a flush and a drain then make them
//!    durable, whichever thread issues those);
//! 3. nothing else is promised: before the drain, any subset of the 8-byte words stored may
//!    already be durable, in any order.

use std::sync::atomic::Ordering;

pub(crate) use crate::persist::Persistence;
use crate::sync::atomic::AtomicU64;

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

    /// Hints that the cache line holding byte `off` will be read soon. A hint only: `off` may
    /// lie anywhere, even past the end (then nothing is asked for).
    #[inline]
    fn prefetch(&self, off: usize) {
        let _ = off;
    }

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

    /// Stores `parts` one after the other from `off`, as [`Media::store`] of each in turn does;
    /// media whose stores are system calls override it to make one. The log passes no empty
    /// part.
    ///
    /// # Safety
    /// As for [`Media::store`], for the whole range the parts cover.
    unsafe fn store_parts(&self, off: usize, parts: &[&[u8]]) {
        // SAFETY: the caller's contract is this one's.
        unsafe { store_each(self, off, parts) }
    }

    /// True if stores are system calls that copy (`pwrite`): non-temporal stores mean nothing
    /// there, and the log never asks for them.
    fn stores_by_write(&self) -> bool {
        false
    }

    /// Stores `src` at `off` with non-temporal stores. `off` and `src.len()` are multiples of 8.
    ///
    /// # Safety
    /// As for [`Media::store`].
    unsafe fn store_nt(&self, off: usize, src: &[u8]);

    /// [`Media::store_nt`], returning `crc32c_append(crc, src)` (the `crc32c` crate's
    /// function). Media that can checksum while they copy (one pass over `src`) override it.
    ///
    /// # Safety
    /// As for [`Media::store_nt`].
    unsafe fn store_nt_crc(&self, off: usize, src: &[u8], crc: u32) -> u32 {
        let c = crate::persist::crc32c_append(crc, src);
        // SAFETY: the caller's contract is `store_nt`'s.
        unsafe { self.store_nt(off, src) };
        c
    }

    /// Starts writing back the cache lines (or pages) that cover `[off, off + len)`.
    fn flush(&self, off: usize, len: usize);

    /// Waits until every flush (and, in the CPU-flush modes, every non-temporal store) this
    /// thread issued before it is durable. An error (an `msync` that failed) means durability
    /// is unknown.
    fn drain(&self) -> std::io::Result<()>;

    /// `msync` mode: waits until the non-temporal stores this thread issued have reached
    /// memory (the page cache), where a sync by any thread then finds them; it makes nothing
    /// durable. (In the CPU-flush modes [`Media::drain`] does this and more.)
    #[inline]
    fn fence_stores(&self) {
        crate::persist::fence(crate::persist::Persistence::Msync);
    }

    /// A point on the append path where a thread is about to act on what other threads have
    /// done (the reservation word, the published count). Real media do nothing; a simulator
    /// that schedules threads deterministically may park the thread here, so that such a
    /// decision always falls in the thread's own turn. Media that park threads here must also
    /// return true from [`Media::schedules_threads`], or the group commit does not call it.
    #[inline(always)]
    fn sync_point(&self) {}

    /// True if [`Media::sync_point`] may park the thread (a simulator's scheduler): the engine
    /// then releases its locks around it. Real media return false, and the engine skips the
    /// release and the re-locking it would cost.
    #[inline(always)]
    fn schedules_threads(&self) -> bool {
        false
    }

    /// True if the engine should measure this host's persistence paths for these media
    /// ([`crate::calibrate`]): real mappings do; simulators keep the fixed default, so that
    /// their runs do not depend on the machine's timing.
    fn tune_for_host(&self) -> bool {
        false
    }

    /// A hint that `[off, off + len)` is about to be written (e.g. prefault the pages).
    fn prepare(&self, _off: usize, _len: usize) {}

    /// True if these media write blocks ahead of the tail ([`Media::write_ahead`]): the log
    /// then checks each chunk written ahead with [`Media::verify_ahead`] before any append
    /// stores into it.
    fn writes_ahead(&self) -> bool {
        false
    }

    /// Before appends reach `[off, off + len)`: has the blocks there that the file system
    /// holds allocated but unwritten written back, so that the appends' syncs do not convert
    /// them one by one. Changes no byte. Returns true if it found any (then
    /// [`Media::verify_ahead`] must pass before an append stores there), even where it failed
    /// to write some: the check writes them again.
    fn write_ahead(&self, _off: usize, _len: usize) -> bool {
        false
    }

    /// Waits for what [`Media::write_ahead`] wrote in `[off, off + len)` and checks that the
    /// file system recorded it. Blocks found still unwritten are written once more, waited
    /// for and checked again; an error if any is still unwritten then (a write that failed,
    /// now or before, and appends stored there could be lost; or pages that could not be
    /// dirtied).
    fn verify_ahead(&self, _off: usize, _len: usize) -> std::io::Result<()> {
        Ok(())
    }

    /// True if sequential reads of these media (a recovery scan, an iterator) should ask for
    /// the bytes ahead with [`Media::read_ahead`]: a page-cache file whose mapping reads no
    /// more than the page a fault asks for ([`MmapMedia`](crate::MmapMedia) on a disk-backed
    /// file system). Media that say so must return slices of a file mapping from
    /// [`Media::read`]: the recovery scan asks the kernel to read ahead in them
    /// (`MADV_WILLNEED`).
    fn wants_read_ahead(&self) -> bool {
        false
    }

    /// Asks for `[off, off + len)` (in bounds) to be read ahead, in the background, where
    /// [`Media::wants_read_ahead`] says so; a hint.
    fn read_ahead(&self, _off: usize, _len: usize) {}

    /// Has the next [`Media::flush`] of `[off, off + len)` (in bounds) write those bytes back
    /// even where the system holds them clean, without changing any. For a page cache: Linux
    /// keeps a page whose write-back failed, with the bytes it could not write, and marks it
    /// clean; the error is reported once, to the first sync that looks (which poisoned the
    /// log that made it), and a later `msync` writes nothing of it. Recovery calls this for
    /// the entries it cannot vouch for before it makes them durable. Media without such a
    /// cache (CPU caches write back every line a flush names) ignore it.
    fn rewrite(&self, _off: usize, _len: usize) {}

    /// Should a sync or write fail from now on, the published LSN in the reader area drops to
    /// `lsn` (or to a lower one [`Media::publish_for_readers`] is given later) and stays there,
    /// so that the next writable open writes the entries from there again: the failure may
    /// concern any page written since. Called by a writable open before its first write (the
    /// recovered slot's cut: a failed write-back of the last session may be reported to the
    /// open's first sync) and at its end (where its session begins). Media without a page
    /// cache ignore it.
    fn set_failure_floor(&self, _lsn: u64) {}

    /// Tells readers in other processes that every entry before `next_lsn` is durable (the
    /// reader area of the metadata page, format version 2; not a persistent structure, so no
    /// flush). In the CPU-flush modes it stores the vouched word after it (version 3,
    /// `format::vouched_word`); in msync mode it leaves that word alone (a writable
    /// open clears it). Media that no other process can read may ignore it, and then say so
    /// ([`Media::keeps_reader_area`]).
    fn publish_for_readers(&self, _next_lsn: u64) {}

    /// True if [`Media::publish_for_readers`] keeps the reader area's words as FORMAT.md
    /// section 11 says. Recovery takes those words for evidence that entries were
    /// acknowledged (section 7), so a writable open on media that does not keep them clears
    /// them, durably, before it returns: else a later open by media that does would take the
    /// value an earlier writer left for evidence of entries this writer has deleted since.
    fn keeps_reader_area(&self) -> bool {
        false
    }

    /// Tells readers in other processes that a suffix truncation deletes every entry from
    /// `from` on (the reader area's ring of deletions; not persistent). Called before the
    /// truncation's slot update, so that a reader that sees the new slot sees this too.
    fn record_deletion(&self, _from: u64) {}
}

/// Bytes of free space handed to one appender: `[start, end)`. Claims are carved from free
/// space in order by the reservation word (`reserve.rs`: one compare-and-swap moves the tail
/// past each), so they never overlap each other or the live entries; each is owned by the
/// thread that reserved it until its entries are published.
#[derive(Debug)]
pub(crate) struct Claim {
    start: usize,
    end: usize,
}

impl Claim {
    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// The claim's bytes in its first and last cache lines when it covers those lines only in
    /// part (each range empty if the line is whole, or is the other edge's): lines shared with
    /// the bytes before the claim and after it, which non-temporal stores leave alone
    /// ([`Pmem::store_claimed`]).
    pub(crate) fn edges(&self) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let line = crate::persist::CACHE_LINE;
        let a = if self.start.is_multiple_of(line) {
            self.start
        } else {
            self.start.next_multiple_of(line).min(self.end)
        };
        let b = if self.end.is_multiple_of(line) {
            self.end
        } else {
            (self.end & !(line - 1)).max(a)
        };
        (self.start..a, b..self.end)
    }

    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Proof of being the single writer of the metadata area. Held inside the log's writer mutex;
/// metadata stores require a `&mut` of it. (The data area is written through [`Claim`]s.)
#[derive(Debug)]
pub(crate) struct WriteToken(());

/// The live (published, not truncated) entries: `[head, tail)`, or, once the log has wrapped
/// around the end of the file, `[head, wrap_at)` followed by `[data_start, tail)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Live {
    pub head: usize,
    pub tail: usize,
    /// Where the first part ends when wrapped (`tail < head`); ignored otherwise.
    pub wrap_at: usize,
}

impl Live {
    /// True if the live entries continue at the start of the data area.
    #[inline]
    pub fn wrapped(&self) -> bool {
        self.tail < self.head
    }

    /// Bytes the live entries take (padding before a wrap included).
    #[inline]
    pub fn used(&self, data_start: usize) -> usize {
        if self.wrapped() {
            self.wrap_at.saturating_sub(self.head) + (self.tail - data_start)
        } else {
            self.tail - self.head
        }
    }

    /// Bytes of the data area (from `data_start` to `len`) not holding live entries.
    #[inline]
    pub fn free(&self, data_start: usize, len: usize) -> usize {
        len - data_start - self.used(data_start)
    }

    /// Offset of the first live entry: the head, or the start of the data area when the part
    /// before the wrap is empty (an append wrapped while the log was empty).
    #[inline]
    pub fn first(&self, data_start: usize) -> usize {
        if self.wrapped() && self.head == self.wrap_at {
            data_start
        } else {
            self.head
        }
    }

    /// True if `[off, off + len)` lies inside one live segment.
    #[inline]
    pub fn contains(&self, data_start: usize, off: usize, len: usize) -> bool {
        let Some(end) = off.checked_add(len) else {
            return false;
        };
        if self.wrapped() {
            (off >= self.head && end <= self.wrap_at) || (off >= data_start && end <= self.tail)
        } else {
            off >= self.head && end <= self.tail
        }
    }

    /// True if `[off, off + len)` overlaps a live segment.
    #[inline]
    pub fn overlaps(&self, data_start: usize, off: usize, len: usize) -> bool {
        let end = off + len;
        let hit = |a: usize, b: usize| off < b && a < end;
        if self.wrapped() {
            hit(self.head, self.wrap_at) || hit(data_start, self.tail)
        } else {
            hit(self.head, self.tail)
        }
    }
}

/// A value alone in its cache lines (two, as adjacent lines are fetched in pairs), so that
/// threads writing it do not slow down threads reading its neighbours.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for Padded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

struct Edge {
    tail: AtomicU64,
    wrap_at: AtomicU64,
}

/// A [`Media`] with the invariants that make its `unsafe` methods safe to call.
///
/// The data area holds the [`Live`] entries, which are published and immutable: they are never
/// stored to while live, and readers may hold slices into them. Everything else in the data
/// area is free space, handed to appenders as disjoint [`Claim`]s by the reservation word. The
/// live region grows only at the tail (one publisher at a time, after the barrier of every
/// reservation it covers: [`Pmem::publish`]) and shrinks at the head (a prefix truncation,
/// [`Pmem::set_head`]) or at the tail (a suffix truncation, [`Pmem::rewind`]). Bytes a
/// truncation drops may still be lent to readers: they hold pins (`pins.rs`), and appenders
/// claim nothing at or after the oldest pin. The metadata area below `data_start` is never
/// lent to readers; its single writer proves it with a [`WriteToken`].
pub(crate) struct Pmem<M> {
    media: M,
    data_start: usize,
    /// The first live entry (moved by prefix truncations).
    head: AtomicU64,
    /// The published end of the live region, in a cache line of its own: the publisher writes
    /// it on every append, and nothing the appenders read on their way should share its line.
    edge: Padded<Edge>,
    /// Set for read-only logs: nothing is ever stored, so any byte may be lent out.
    frozen: bool,
}

impl<M: Media> Pmem<M> {
    pub(crate) fn new(media: M, data_start: usize) -> Self {
        Pmem {
            media,
            data_start,
            head: AtomicU64::new(data_start as u64),
            edge: Padded(Edge {
                tail: AtomicU64::new(data_start as u64),
                wrap_at: AtomicU64::new(0),
            }),
            frozen: false,
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
        assert!(!self.frozen && off <= self.media.len() && src.len() <= self.media.len() - off);
        // SAFETY: in bounds (checked above); `&mut self` means no slice from `read` is alive and
        // no other thread can access the media.
        unsafe { self.media.store(off, src) }
    }

    /// Creates the single write token. Called once, when the log is assembled.
    pub(crate) fn token(&mut self) -> WriteToken {
        WriteToken(())
    }

    /// Forbids every later store (read-only logs), which allows [`Pmem::view_frozen`].
    pub(crate) fn freeze(&mut self) {
        self.frozen = true;
    }

    /// Any bytes of a frozen media; `None` if stores are still allowed or out of bounds.
    pub(crate) fn view_frozen(&self, off: usize, len: usize) -> Option<&[u8]> {
        if !self.frozen || off > self.media.len() || len > self.media.len() - off {
            return None;
        }
        // SAFETY: in bounds (checked above); the media is frozen, and every store method
        // asserts it is not, so no store can overlap the slice while it lives.
        Some(unsafe { self.media.read(off, len) })
    }

    /// Replaces the live region while no reader exists (recovery).
    pub(crate) fn set_live(&mut self, live: Live) {
        let len = self.media.len();
        assert!(live.head >= self.data_start && live.head <= len && live.tail <= len);
        assert!(!live.wrapped() || (live.wrap_at >= live.head && live.wrap_at <= len));
        *self.head.get_mut() = live.head as u64;
        *self.edge.tail.get_mut() = live.tail as u64;
        *self.edge.wrap_at.get_mut() = live.wrap_at as u64;
    }

    /// A consistent snapshot of the live region.
    #[inline]
    pub(crate) fn live(&self) -> Live {
        loop {
            let w1 = self.edge.wrap_at.load(Ordering::Acquire);
            let tail = self.edge.tail.load(Ordering::Acquire);
            let w2 = self.edge.wrap_at.load(Ordering::Acquire);
            if w1 == w2 {
                return Live {
                    head: self.head.load(Ordering::Acquire) as usize,
                    tail: tail as usize,
                    wrap_at: w1 as usize,
                };
            }
        }
    }

    /// Offset of the first live entry.
    #[inline]
    pub(crate) fn head(&self) -> usize {
        self.head.load(Ordering::Acquire) as usize
    }

    /// A snapshot of the live region as a reader pinned at `head` sees it: from its pin to
    /// the published tail.
    #[inline]
    pub(crate) fn live_from(&self, head: usize) -> Live {
        Live {
            head,
            ..self.live()
        }
    }

    /// Moves the head (a prefix truncation, made durable before).
    pub(crate) fn set_head(&self, head: usize) {
        assert!(head >= self.data_start && head <= self.media.len());
        self.head.store(head as u64, Ordering::Release);
    }

    /// After a forced wrap (`Log::reset` moved the head and the tail to the start of the
    /// data area while reservations waited): an empty log there.
    pub(crate) fn end_forced_wrap(&self, tail: usize) {
        let _ = self.edge.tail.compare_exchange(
            tail as u64,
            self.data_start as u64,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Moves the published tail back (a suffix truncation, made durable before).
    ///
    /// # Safety
    /// No reader holds a slice of the bytes from `tail` on, no append is in flight, and none
    /// can start until this returns.
    ///
    /// The tail is stored first: a snapshot ([`Pmem::live`]) taken between the two stores
    /// pairs the new tail with the old wrap point, which reads as the region up to the new
    /// tail (a rewind that ends the wrap moves the tail to or after every position in use);
    /// the other order would pair the old tail, before the head, with no wrap point, and a
    /// reader pinned then (one taken while the truncation waited) would see nothing.
    pub(crate) unsafe fn rewind(&self, tail: usize, wrap_at: usize) {
        assert!(tail >= self.data_start && tail <= self.media.len() && wrap_at <= self.media.len());
        self.edge.tail.store(tail as u64, Ordering::Release);
        self.edge.wrap_at.store(wrap_at as u64, Ordering::Release);
    }

    /// Start of the data area.
    #[inline]
    pub(crate) fn data_start(&self) -> usize {
        self.data_start
    }

    /// See [`Media::prefetch`].
    #[inline]
    pub(crate) fn prefetch(&self, off: usize) {
        self.media.prefetch(off)
    }

    /// Bytes of live entries: `None` unless the range lies inside a live segment of `live`
    /// (a snapshot from [`Pmem::live`], or [`Pmem::live_from`] a pinned position).
    ///
    /// # Safety
    /// Unless the media are frozen (nothing is ever stored), the bytes from `live.head` on
    /// must stay out of every claim for as long as the returned slice lives: the caller holds
    /// a pin at or before `live.head` for that long (`pins.rs`), or `&mut` access to the log.
    #[inline]
    pub(crate) unsafe fn read_live(&self, live: &Live, off: usize, len: usize) -> Option<&[u8]> {
        if !live.contains(self.data_start, off, len) {
            return None;
        }
        // SAFETY: in bounds (live segments lie inside the media); the range is live in the
        // snapshot, so it was published and is not stored to until space before the pin (or
        // head) is reclaimed, which the caller's pin excludes. A snapshot older than the
        // current state covers fewer bytes at the tail, which only shrinks when no pin exists.
        Some(unsafe { self.media.read(off, len) })
    }

    /// Hands `[start, end)` of free space to one appender (see [`Claim`]).
    ///
    /// # Safety
    /// The range is free space (outside the live entries) that no other claim overlaps for
    /// as long as this one is used: the caller reserved it (`reserve.rs`). Bounds are checked.
    #[inline]
    pub(crate) unsafe fn claim_reserved(&self, start: usize, end: usize) -> Claim {
        assert!(
            !self.frozen && start >= self.data_start && start <= end && end <= self.media.len(),
            "claim outside the data area"
        );
        debug_assert!(!self.live().overlaps(self.data_start, start, end - start));
        Claim { start, end }
    }

    /// Stores into a claimed range, with non-temporal stores if `nt` (`off` and `src.len()`
    /// then multiples of 8).
    ///
    /// With `CLWB` and `CLFLUSHOPT`, non-temporal stores never touch the claim's edge lines,
    /// the first and last cache lines it covers only in part ([`Claim::edges`]): their bytes
    /// are stored cached, and the reservation's barrier writes those lines back once, after
    /// all of its stores. Those lines are shared with the entries before and with the end
    /// marker after, which were stored cached a moment ago; a non-temporal store to a line the
    /// cache holds must first evict it, and a partial line leaves the write-combining buffer
    /// as several small writes. Once a log has wrapped, with an end marker after every append,
    /// that made non-temporal appends 1.5 to 1.8 times slower (64 B to 1 KiB, Intel Xeon
    /// guest).
    #[inline]
    pub(crate) fn store_claimed(&self, claim: &Claim, off: usize, src: &[u8], nt: bool) {
        assert!(
            off >= claim.start && src.len() <= claim.end.saturating_sub(off),
            "store outside its claim"
        );
        let (head, body, tail) = if nt {
            self.split_edges(claim, off, src)
        } else {
            (src, &[][..], &[][..])
        };
        // SAFETY: the range lies inside the claim, which lies inside the media and outside
        // the live entries (checked when it was made), so no reader holds a slice of it;
        // claims are disjoint and each is used by the one thread that owns it (see `Claim`),
        // so no other store touches these bytes concurrently. The parts are consecutive, and
        // the non-temporal one starts and ends at multiples of 8 (its ends are `off`, the end
        // of `src` or a claim's edge, all multiples of 8).
        unsafe {
            if !head.is_empty() {
                self.media.store(off, head);
            }
            if !body.is_empty() {
                self.media.store_nt(off + head.len(), body);
            }
            if !tail.is_empty() {
                self.media.store(off + head.len() + body.len(), tail);
            }
        }
    }

    /// Stores `parts` one after the other from `off`, with cached stores, inside a claim.
    #[inline]
    pub(crate) fn store_claimed_parts(&self, claim: &Claim, off: usize, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        assert!(
            off >= claim.start && len <= claim.end.saturating_sub(off),
            "store outside its claim"
        );
        // SAFETY: as for `store_claimed`: the range lies inside the claim, which no reader and
        // no other store touches.
        unsafe { self.media.store_parts(off, parts) }
    }

    /// [`Pmem::store_claimed`] with non-temporal stores, returning `crc32c_append(crc, src)`.
    #[inline]
    pub(crate) fn store_claimed_crc(&self, claim: &Claim, off: usize, src: &[u8], crc: u32) -> u32 {
        assert!(
            off >= claim.start && src.len() <= claim.end.saturating_sub(off),
            "store outside its claim"
        );
        let (head, body, tail) = self.split_edges(claim, off, src);
        let crc = crate::persist::crc32c_append(crc, head);
        // SAFETY: as for `store_claimed`.
        let crc = unsafe {
            if !head.is_empty() {
                self.media.store(off, head);
            }
            let crc = if body.is_empty() {
                crc
            } else {
                self.media.store_nt_crc(off + head.len(), body, crc)
            };
            if !tail.is_empty() {
                self.media.store(off + head.len() + body.len(), tail);
            }
            crc
        };
        crate::persist::crc32c_append(crc, tail)
    }

    /// True if non-temporal stores leave the claim's edge lines to cached stores (see
    /// [`Pmem::store_claimed`]): with `CLWB` and `CLFLUSHOPT`. Not in `msync` mode, where
    /// lines are not written back one by one, nor with `CLFLUSH`, which is ordered with every
    /// other `CLFLUSH` and store: two more of them per append cost more than they save (a
    /// 64-byte append in a new log's first lap: 640 ns against 410, Intel Xeon guest).
    #[inline(always)]
    pub(crate) fn edges_cached(&self) -> bool {
        matches!(
            self.media.persistence(),
            Persistence::Clwb | Persistence::ClflushOpt
        )
    }

    /// `src`, to be stored at `off` non-temporally, split into its bytes in the claim's first
    /// edge line, those between the edge lines, and those in its last edge line (all of it is
    /// the middle part unless [`Pmem::edges_cached`]).
    #[inline(always)]
    fn split_edges<'s>(
        &self,
        claim: &Claim,
        off: usize,
        src: &'s [u8],
    ) -> (&'s [u8], &'s [u8], &'s [u8]) {
        if !self.edges_cached() {
            return (&[], src, &[]);
        }
        let end = off + src.len();
        let (first, last) = claim.edges();
        let a = first.end.clamp(off, end);
        let b = last.start.clamp(a, end);
        let (head, rest) = src.split_at(a - off);
        let (body, tail) = rest.split_at(b - a);
        (head, body, tail)
    }

    /// Stores into the metadata area (below `data_start`), which readers never see.
    pub(crate) fn store_meta(&self, _token: &mut WriteToken, off: usize, src: &[u8]) {
        assert!(
            off + src.len() <= self.data_start,
            "metadata store outside the metadata area"
        );
        // SAFETY: in bounds; metadata bytes are never lent to readers, and the token proves
        // this is the only writer.
        unsafe { self.media.store(off, src) }
    }

    /// Publishes durable entries: the live region now ends at `tail`, after wrapping at
    /// `wrap_at` if given (the entries before the wrap end there).
    ///
    /// # Safety
    /// Every byte between the current tail and `tail` (across the wrap, if any) is stored,
    /// and no claim covering it is used any more: from here on readers may hold slices of it.
    /// Only one thread publishes at a time.
    #[inline]
    pub(crate) unsafe fn publish(&self, tail: usize, wrap_at: Option<usize>) {
        assert!(tail <= self.media.len() && wrap_at.is_none_or(|w| w <= self.media.len()));
        if let Some(w) = wrap_at {
            self.edge.wrap_at.store(w as u64, Ordering::Release);
        }
        self.edge.tail.store(tail as u64, Ordering::Release);
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

/// [`Media::store`] of each of `parts` in turn, from `off`: what [`Media::store_parts`] does on
/// media whose stores are copies.
///
/// # Safety
/// As for [`Media::store_parts`].
pub(crate) unsafe fn store_each<M: Media + ?Sized>(media: &M, off: usize, parts: &[&[u8]]) {
    let mut at = off;
    for p in parts {
        // SAFETY: each part's range lies in the caller's range.
        unsafe { media.store(at, p) };
        at += p.len();
    }
}

#[cfg(test)]
mod tests {
    use super::Claim;

    #[test]
    fn a_claims_edges_are_its_partly_covered_first_and_last_lines() {
        let edges = |start, end| Claim { start, end }.edges();
        // Whole lines: no edges.
        assert_eq!(
            edges(4096, 4096 + 128),
            (4096..4096, 4096 + 128..4096 + 128)
        );
        // Inside one line: all of it is the first edge.
        assert_eq!(edges(4104, 4160), (4104..4160, 4160..4160));
        assert_eq!(edges(4096, 4152), (4096..4096, 4096..4152));
        assert_eq!(edges(4104, 4152), (4104..4152, 4152..4152));
        // Across lines: the bytes before the first whole line and after the last one.
        assert_eq!(edges(4104, 4304), (4104..4160, 4288..4304));
        // Two partial lines and nothing whole between them.
        assert_eq!(edges(4104, 4200), (4104..4160, 4160..4200));
        // Starts on a line, ends inside one; and the reverse.
        assert_eq!(edges(4096, 4200), (4096..4096, 4160..4200));
        assert_eq!(edges(4104, 4224), (4104..4160, 4224..4224));
        // Empty.
        assert_eq!(edges(4104, 4104), (4104..4104, 4104..4104));
    }
}
