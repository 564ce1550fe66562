//! Reading: iteration over durable entries and lookup by LSN, as zero-copy slices.

use std::sync::atomic::Ordering;

use crate::damage::{self, Gap};
use crate::error::{Error, Result};
use crate::format::{self, EntryHeader, FLAG_PAD, HEADER_LEN, KNOWN_FLAGS};
use crate::index::INDEX_STRIDE;
use crate::log::Log;
use crate::media::{Live, Media};
use crate::pins::{Pos, Reach};
use crate::reader::OwnedEntry;
use crate::Lsn;

/// One entry of the log: its LSN and a slice of its payload, borrowed from the mapping through
/// a [`Guard`] (the bytes stay intact while the guard lives, truncations notwithstanding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The entry's log sequence number.
    pub lsn: Lsn,
    /// The payload, exactly as appended.
    pub payload: &'a [u8],
    pad: bool,
}

impl Entry<'_> {
    /// Padding left by an abandoned append; never returned to readers.
    pub(crate) fn is_pad(&self) -> bool {
        self.pad
    }

    /// A copy of this entry that outlives its guard.
    pub fn to_owned(&self) -> OwnedEntry {
        OwnedEntry {
            lsn: self.lsn,
            payload: self.payload.to_vec(),
        }
    }
}

/// The live region as a pinned reader sees it: from its pin to the tail of a snapshot. Made
/// only by a [`Guard`] (or code that excludes every store), and never outlives it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'g> {
    pub(crate) live: Live,
    /// The LSN of the entry at `live.first()`.
    pub(crate) first: Lsn,
    /// The last LSN it may read (`Lsn::MAX`: as far as `live` goes).
    pub(crate) last: Lsn,
    _pin: std::marker::PhantomData<&'g ()>,
}

/// A pinned position in a log: while it lives, the entries from its LSN on stay intact in the
/// mapping, even if a concurrent truncation drops them, so that the entries it lends as
/// slices ([`Guard::iter`], [`Guard::iter_from`], [`Guard::read`]) stay valid. Get one with
/// [`Log::pin`].
///
/// A guard pins the first LSN of the moment it was made. Appenders never overwrite a pinned
/// entry: an append that would need its space fails with [`Error::Full`] naming the pinned
/// LSN. So hold guards only while reading; a reader that waits (a [`Follower`]) holds none.
///
/// A guard (and a [`Log::iter`] iterator, which holds one) stays on the thread that made it
/// (it is not `Send`): [`Log::truncate_after`] waits until the guards taken before it was
/// called are dropped, except one of the calling thread, for which it fails with
/// [`Error::GuardHeld`] instead of waiting for itself. A guard taken while a suffix
/// truncation waits sees the entries that truncation keeps, and none after them.
///
/// ```compile_fail
/// # let dir = tempfile::tempdir().unwrap();
/// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
/// let guard = log.pin();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(guard)); // a guard cannot move to another thread
/// });
/// ```
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
/// for op in [&b"a"[..], b"b", b"c"] { log.append(op)?; }
/// let guard = log.pin();
/// log.truncate_before(3)?; // another thread may do this meanwhile
/// // The guard still sees what it pinned: a consistent snapshot.
/// let seen: Vec<&[u8]> = guard.iter().map(|e| e.payload).collect();
/// assert_eq!(seen, [&b"a"[..], b"b", b"c"]);
/// drop(guard);
/// assert_eq!(log.pin().iter().next().unwrap().lsn, 3);
/// # Ok::<(), daxlog::Error>(())
/// ```
pub struct Guard<'a, M: Media = crate::MmapMedia> {
    log: &'a Log<M>,
    at: usize,
    pos: Pos,
    /// The last LSN it may read: the entries a suffix truncation that waited when the guard
    /// was made keeps (`Lsn::MAX` if none waited).
    sees_to: Lsn,
    /// A pin counts for the thread that took it ([`Log::truncate_after`] called by that
    /// thread fails with [`Error::GuardHeld`] instead of waiting for itself), so a guard stays
    /// on that thread: not `Send`.
    _thread: std::marker::PhantomData<*const ()>,
}

impl<M: Media> Drop for Guard<'_, M> {
    fn drop(&mut self) {
        self.log.pins.unpin(self.at);
    }
}

impl<M: Media> std::fmt::Debug for Guard<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("lsn", &self.pos.lsn).finish()
    }
}

impl<'a, M: Media> Guard<'a, M> {
    /// The pinned LSN: the first LSN of the log when the guard was made. Entries from it on
    /// stay readable through this guard.
    pub fn lsn(&self) -> Lsn {
        self.pos.lsn
    }

    /// The log.
    pub fn log(&self) -> &'a Log<M> {
        self.log
    }

    /// What this guard can read now: from its pin to the published tail.
    pub(crate) fn view(&self) -> View<'_> {
        self.view_of(self.log.pmem.live_from(self.pos.offset))
    }

    /// The view of an earlier snapshot of this guard's.
    fn view_of(&self, live: Live) -> View<'_> {
        debug_assert_eq!(live.head, self.pos.offset);
        View {
            live,
            first: self.pos.lsn,
            last: self.sees_to,
            _pin: std::marker::PhantomData,
        }
    }

    /// Iterates over the entries from the pinned LSN to the last one durable now, oldest
    /// first (the entries a truncation dropped after the guard was made included: the guard
    /// keeps them).
    pub fn iter(&self) -> Iter<'_, M> {
        let view = self.view();
        let pos = view.live.first(self.log.pmem.data_start());
        self.log.read_ahead_from(pos);
        Iter {
            log: self.log,
            pos,
            lsn: view.first,
            view,
        }
    }

    /// Iterates over the entries the guard can see with an LSN of at least `lsn`.
    pub fn iter_from(&self, lsn: Lsn) -> Iter<'_, M> {
        // The LSN is read before the live region, so every LSN up to it is inside the region.
        let last = self.log.last_lsn.load(Ordering::Acquire).min(self.sees_to);
        let view = self.view();
        let (pos, lsn) = if lsn <= view.first {
            (view.live.first(self.log.pmem.data_start()), view.first)
        } else if lsn > last {
            (view.live.tail, lsn)
        } else {
            self.log.seek(&view, lsn)
        };
        self.log.read_ahead_from(pos);
        Iter {
            log: self.log,
            view,
            pos,
            lsn,
        }
    }

    /// The entry with LSN `lsn`, if the guard can see it (it is durable, and not below the
    /// pinned LSN).
    pub fn read(&self, lsn: Lsn) -> Option<Entry<'_>> {
        let last = self.log.last_lsn.load(Ordering::Acquire);
        if lsn < self.pos.lsn || lsn > last.min(self.sees_to) {
            return None;
        }
        let view = self.view();
        let (pos, at) = self.log.seek(&view, lsn);
        if at != lsn {
            return None;
        }
        self.log
            .entry_at(&view, pos, lsn)
            .map(|(e, _)| e)
            .filter(|e| !e.is_pad())
    }
}

impl View<'_> {
    /// A view of `live` for code that excludes every store to the data area for as long as
    /// the view is used (a suffix truncation: no reservation, no pin).
    pub(crate) fn exclusive(live: Live, first: Lsn) -> Self {
        View {
            live,
            first,
            last: Lsn::MAX,
            _pin: std::marker::PhantomData,
        }
    }
}

/// How many entries ahead a zero-copy iteration asks for headers ([`Log::prefetch_ahead`]).
/// Measured on an AMD EPYC guest, 256 MiB logs in `/dev/shm` (`benches/compare --only
/// recovery`, docs/BENCHMARKS.md), ns per entry without prefetching, then 64 and 128 entries
/// ahead, in one run: 256 B 13.1, 4.4, 3.5; 1 KiB 14.0, 5.1, 4.8; 4 KiB 19.5, 15.9, 10.6
/// (8 entries ahead: 1 KiB 9.9). Builds with and without it run back to back: 1 KiB 15.2-17.1
/// without, 4.4-5.9 with; 4 KiB 19.9-23.4 without, 13.8-18.7 with.
const PREFETCH_ENTRIES: usize = 128;
/// Entries so long that [`PREFETCH_ENTRIES`] of them span more than this are not prefetched
/// (the lines would leave the cache before they are read): prefetched are entries of up to
/// 8 KiB on media, payloads up to 8168 B. Short entries are prefetched as well: where their
/// headers lie a cache line or two apart the hardware prefetcher alone kept up on the AMD EPYC
/// guest (64 B payloads: 3.0-3.3 ns per entry either way) but not on an Intel Xeon guest
/// (16.3 ns per entry without, 9.7 with, same run of `--only recovery-daxlog`).
const PREFETCH_MAX_DISTANCE: usize = 1 << 20;

/// Iterator over durable entries in LSN order, through a [`Guard`]; see [`Guard::iter`].
///
/// It covers the entries that were durable when it was created; entries appended later are
/// not visited.
pub struct Iter<'g, M: Media> {
    log: &'g Log<M>,
    view: View<'g>,
    pos: usize,
    lsn: Lsn,
}

impl<'g, M: Media> Iterator for Iter<'g, M> {
    type Item = Entry<'g>;

    #[inline]
    fn next(&mut self) -> Option<Entry<'g>> {
        loop {
            if self.pos == self.view.live.tail {
                return None;
            }
            let (entry, next) = self.log.entry_at(&self.view, self.pos, self.lsn)?;
            self.log.prefetch_ahead(self.pos, next);
            self.pos = next;
            self.lsn += 1;
            if !entry.is_pad() {
                return Some(entry);
            }
        }
    }
}

/// Iterator over copies of durable entries; see [`Log::iter`]. It pins the log while it
/// lives (see [`Guard`]).
pub struct OwnedIter<'a, M: Media> {
    guard: Guard<'a, M>,
    live: Live,
    pos: usize,
    lsn: Lsn,
}

impl<M: Media> Iterator for OwnedIter<'_, M> {
    type Item = OwnedEntry;

    fn next(&mut self) -> Option<OwnedEntry> {
        let view = self.guard.view_of(self.live);
        loop {
            if self.pos == view.live.tail {
                return None;
            }
            let (entry, next) = self.guard.log.entry_at(&view, self.pos, self.lsn)?;
            // (No prefetch ahead here: the payload copies stream up to a megabyte through the
            // cache between a hint and its use, and the hardware prefetcher follows them to the
            // next header. Not measured.)
            self.pos = next;
            self.lsn += 1;
            if !entry.is_pad() {
                return Some(entry.to_owned());
            }
        }
    }
}

impl<M: Media> Log<M> {
    /// Pins the log's first LSN: see [`Guard`]. Costs an uncontended lock.
    pub fn pin(&self) -> Guard<'_, M> {
        self.pin_reaching(Reach::Kept)
    }

    /// [`Log::pin`], reading what `reach` says (see `Pins::pin`).
    pub(crate) fn pin_reaching(&self, reach: Reach) -> Guard<'_, M> {
        let (at, pos, sees_to) = self.pins.pin(reach);
        Guard {
            log: self,
            at,
            pos,
            sees_to,
            _thread: std::marker::PhantomData,
        }
    }

    /// Iterates over copies of all durable entries, oldest first. The iterator pins the log
    /// while it lives (see [`Guard`]); [`Log::pin`] and [`Guard::iter`] lend the entries
    /// without copying them.
    ///
    /// It covers the entries durable when it was created (a consistent snapshot: entries a
    /// concurrent truncation drops meanwhile are still returned).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// log.append(b"a")?;
    /// log.append(b"b")?;
    /// let all: Vec<(u64, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload)).collect();
    /// assert_eq!(all, [(1, b"a".to_vec()), (2, b"b".to_vec())]);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn iter(&self) -> OwnedIter<'_, M> {
        self.iter_from(0)
    }

    /// Iterates over copies of the durable entries with an LSN of at least `lsn`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// for p in [b"a", b"b", b"c"] { log.append(p)?; }
    /// let lsns: Vec<u64> = log.iter_from(2).map(|e| e.lsn).collect();
    /// assert_eq!(lsns, [2, 3]);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn iter_from(&self, lsn: Lsn) -> OwnedIter<'_, M> {
        let guard = self.pin();
        let it = guard.iter_from(lsn);
        let (live, pos, lsn) = (it.view.live, it.pos, it.lsn);
        OwnedIter {
            guard,
            live,
            pos,
            lsn,
        }
    }

    /// A copy of the durable entry with LSN `lsn`, if the log holds it.
    pub fn read(&self, lsn: Lsn) -> Option<OwnedEntry> {
        self.pin().read(lsn).map(|e| e.to_owned())
    }

    /// Offset of entry `lsn` (which must be durable and visible in `view`), found from the
    /// sparse index.
    pub(crate) fn seek(&self, view: &View<'_>, lsn: Lsn) -> (usize, Lsn) {
        let start = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            index.anchor_at_or_before(lsn)
        };
        let start = match start {
            Some(a) if a.1 >= view.first => Some(a),
            _ => None,
        };
        let (mut pos, mut at) = match start {
            Some(a) => a,
            None => {
                // Before the first anchor (after a recovery that began at a tail hint, or
                // below the first live LSN): fill the index from the head once, then look
                // again.
                self.fill_index_front(view);
                let index = self.index.read().unwrap_or_else(|e| e.into_inner());
                match index.anchor_at_or_before(lsn) {
                    Some(a) if a.1 >= view.first => a,
                    _ => (view.live.first(self.pmem.data_start()), view.first),
                }
            }
        };
        while at < lsn {
            match self.entry_at(view, pos, at) {
                Some((_, next)) => pos = next,
                None => break,
            }
            at += 1;
        }
        (pos, at)
    }

    /// Adds the anchors between the view's first entry and the first anchor (walking entry
    /// headers), if the view's first LSN is the log's.
    ///
    /// The walk (every entry before a tail hint, after an open that started there: up to the
    /// whole log) holds no lock: publication takes the index's write lock, and appends would
    /// wait for it. The anchors found go in only if the index's front is still where it was.
    /// (The entries walked are in the view, which no suffix truncation deletes while it lives.)
    fn fill_index_front(&self, view: &View<'_>) {
        let was = self.index.read().unwrap_or_else(|e| e.into_inner()).base;
        if view.first != self.first() || was <= view.first.next_multiple_of(INDEX_STRIDE) {
            return;
        }
        #[cfg(feature = "mutants")]
        crate::mutants::INDEX_FRONT_WALK.here();
        let mut front = Vec::new();
        let mut pos = view.live.first(self.pmem.data_start());
        self.read_ahead_from(pos);
        let mut base = None;
        for lsn in view.first..was {
            if lsn.is_multiple_of(INDEX_STRIDE) {
                base.get_or_insert(lsn);
                front.push(pos as u64);
            }
            match self.entry_at(view, pos, lsn) {
                Some((_, next)) => pos = next,
                None => return,
            }
        }
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        // (Another reader filled it meanwhile, or a prefix truncation moved it.)
        if index.base != was || view.first != self.first() {
            return;
        }
        if index.anchors.is_empty() {
            // (Nothing after: the front is the whole index; it ends where the walk did.)
            index.base = base.unwrap_or(index.base);
            index.anchors = front;
            return;
        }
        front.append(&mut index.anchors);
        index.anchors = front;
        index.base = base.unwrap_or(index.base);
    }

    /// Bytes `[off, off + len)` if they lie inside the view's live region.
    #[inline]
    pub(crate) fn bytes<'g>(&'g self, view: &View<'g>, off: usize, len: usize) -> Option<&'g [u8]> {
        // SAFETY: a view exists only while a pin at or before `view.live.head` is held (it
        // borrows the guard for `'g`), and the returned slice lives no longer than `'g`.
        unsafe { self.pmem.read_live(&view.live, off, len) }
    }

    /// Asks the media to read ahead of a walk over entries that starts at `pos`, if they want
    /// it ([`Media::wants_read_ahead`]; see [`crate::walk::read_ahead_start`]).
    #[inline]
    pub(crate) fn read_ahead_from(&self, pos: usize) {
        if self.pmem.media().wants_read_ahead() {
            let (from, len) = crate::walk::read_ahead_start(pos);
            self.read_ahead_range(from, len);
        }
    }

    /// Asks the media to read ahead of a walk that steps from an entry at `pos` to one at
    /// `next`, if they want it (see [`crate::walk::read_ahead_next`]).
    #[inline]
    pub(crate) fn read_ahead_next(&self, pos: usize, next: usize) {
        if self.pmem.media().wants_read_ahead() {
            if let Some((from, len)) = crate::walk::read_ahead_next(pos, next) {
                self.read_ahead_range(from, len);
            }
        }
    }

    #[cold]
    fn read_ahead_range(&self, pos: usize, len: usize) {
        let cap = self.sb.capacity as usize;
        if pos < cap {
            self.pmem.media().read_ahead(pos, len.min(cap - pos));
        }
    }

    /// Asks for the header of the entry [`PREFETCH_ENTRIES`] entries past `next` (the one
    /// after the entry at `pos`), guessing that they are all as long as this one.
    ///
    /// Where an entry starts is known only once the header before it is loaded, so an
    /// iteration waits for memory once per entry, and the hardware prefetcher starts over at
    /// every 4 KiB page. A wrong guess (entries of mixed sizes, a wrap) costs a useless load,
    /// never a wrong result: this is a hint.
    #[inline]
    pub(crate) fn prefetch_ahead(&self, pos: usize, next: usize) {
        let stride = next.wrapping_sub(pos);
        if stride <= PREFETCH_MAX_DISTANCE / PREFETCH_ENTRIES {
            let ahead = next + stride * PREFETCH_ENTRIES;
            self.pmem.prefetch(ahead);
            // (The header may straddle two cache lines.)
            self.pmem.prefetch(ahead + HEADER_LEN - 1);
        }
    }

    /// The live entry at `pos` and the offset of the one after it (past the wrap, if the
    /// entries before the wrap end there).
    #[inline]
    pub(crate) fn entry_at<'g>(
        &'g self,
        view: &View<'g>,
        pos: usize,
        lsn: Lsn,
    ) -> Option<(Entry<'g>, usize)> {
        let live = &view.live;
        if lsn > view.last {
            return None;
        }
        let h = EntryHeader::decode(self.bytes(view, pos, HEADER_LEN)?);
        if h.lsn != lsn {
            return None;
        }
        let payload = self.bytes(view, pos + HEADER_LEN, h.len as usize)?;
        let mut next = pos + h.entry_len();
        if live.wrapped() && next == live.wrap_at {
            next = self.pmem.data_start();
        }
        // (An iterator asked at its start, where it is made.)
        self.read_ahead_next(pos, next);
        Some((
            Entry {
                lsn: h.lsn,
                payload,
                pad: h.flags & FLAG_PAD != 0,
            },
            next,
        ))
    }
}

/// What [`Log::verify`] read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// Entries with data (what readers see).
    pub entries: u64,
    /// Padding entries (LSNs of abandoned appends or of holes, which readers skip).
    pub padding: u64,
    /// Bytes on media of all of them, headers and alignment included.
    pub bytes: u64,
}

impl<M: Media> Log<M> {
    /// Reads every live entry back, padding included, and checks each one again: its header
    /// and payload lie in the live region, no unknown flag is set, its checksum (seeded with
    /// the log's salt) matches, its LSN continues the sequence, the entries at or after the
    /// session's cut carry its epoch, and the last one ends at the tail. Recovery checked the
    /// same rules when the log was opened, from the head — or from the tail hint, if the
    /// options asked for one ([`crate::Options::tail_hint_every`]): `verify` checks them all,
    /// now, and is what `daxlog check` runs.
    ///
    /// Fails with [`Error::Corrupted`] naming the first entry that does not pass.
    pub fn verify(&self) -> Result<Verified> {
        // (Suffix truncations counted before the look at the published LSN: see `settled`.)
        let deleted = self.deleted.load(Ordering::Acquire);
        let guard = self.pin();
        // The LSN before the live region: every LSN up to it is inside the region. (A guard
        // taken while a suffix truncation waits reads nothing after what it keeps.)
        let published = self.last_lsn.load(Ordering::Acquire);
        #[cfg(feature = "mutants")]
        crate::mutants::VERIFY_BEFORE_VIEW.here();
        let last = published.min(guard.sees_to);
        let view = guard.view();
        #[cfg(feature = "mutants")]
        crate::mutants::VERIFY_AFTER_VIEW.here();
        let live = view.live;
        let slot = self.writer.lock().slot;
        let salt = self.sb.salt;
        let mut v = Verified::default();
        let mut pos = live.first(self.pmem.data_start());
        let mut lsn = view.first;
        self.read_ahead_from(pos);
        let bad = |pos: usize, lsn: Lsn, reason: &str| Error::Corrupted {
            path: self.name.clone(),
            offset: pos as u64,
            lsn,
            reason: reason.to_string(),
            entries_beyond: 0,
        };
        // The entry at `pos` if it is whole and valid as entry `lsn`, else why not.
        let check = |pos: usize, lsn: Lsn| -> std::result::Result<EntryHeader, &'static str> {
            let h = EntryHeader::decode(
                self.bytes(&view, pos, HEADER_LEN)
                    .ok_or("header outside the live entries")?,
            );
            let payload = self
                .bytes(&view, pos + HEADER_LEN, h.len as usize)
                .ok_or("length runs past the live entries")?;
            if h.flags & !KNOWN_FLAGS != 0 {
                return Err("unknown flag bits");
            }
            if format::entry_crc(format::payload_crc(salt, payload), &h) != h.crc {
                return Err("checksum mismatch");
            }
            if h.lsn != lsn {
                return Err("LSN does not continue the sequence");
            }
            if lsn >= slot.cut_lsn && h.epoch != slot.epoch {
                return Err("epoch of an earlier session");
            }
            Ok(h)
        };
        while lsn <= last {
            let h = check(pos, lsn).map_err(|why| bad(pos, lsn, why))?;
            if h.flags & FLAG_PAD != 0 {
                v.padding += 1;
            } else {
                v.entries += 1;
            }
            v.bytes += h.entry_len() as u64;
            let was = pos;
            pos += h.entry_len();
            if live.wrapped() && pos == live.wrap_at {
                pos = self.pmem.data_start();
            }
            self.read_ahead_next(was, pos);
            lsn += 1;
        }
        // Unless appends went on meanwhile, the last entry ends at the tail. Nor a suffix
        // truncation: with a guard taken while it waited, the view may hold entries appended
        // after `published` was read, which it then deleted, storing that LSN again. (It
        // counts itself before it stores the LSN: the count read after the LSN tells.)
        let settled = last == published
            && self.last_lsn.load(Ordering::Acquire) == last
            && self.deleted.load(Ordering::Acquire) == deleted;
        if settled && pos != live.tail && !(v.bytes == 0 && live.tail == live.head) {
            // The publisher stores the tail before the LSN: the tail may end an entry whose
            // LSN it has not stored yet. That entry, whole and next in sequence, is no damage.
            // (Read only if the guard may: a suffix truncation waiting may delete it.)
            if last >= guard.sees_to || check(pos, last + 1).is_err() {
                return Err(bad(pos, lsn, "the entries end before the tail"));
            }
        }
        Ok(v)
    }

    /// Visits every valid entry in LSN order, past damaged regions too, and returns the gaps
    /// (empty for an undamaged log). For rescuing data: only on a read-only log (see
    /// [`crate::RecoveryMode::Salvage`]). Inside acknowledged data every entry whose checks
    /// pass is visited, batches broken by damage included; what recovery would discard as
    /// the torn tail of an interrupted append (never acknowledged) is not. A batch the last
    /// writer published whose last entries are unreadable is acknowledged data too: its
    /// readable entries are visited, and the LSNs of
    /// [`RecoveryReport::published_missing`](crate::RecoveryReport::published_missing) past the
    /// last one visited are those lost (reported there, not as a gap).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("l");
    /// # let log = daxlog::Log::create(&path, &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// # log.append(b"a").unwrap(); drop(log);
    /// use daxlog::{Log, Options, RecoveryMode};
    /// let log = Log::open_read_only(&path, &Options::new().recovery_mode(RecoveryMode::Salvage))?;
    /// let mut rescued = Vec::new();
    /// let gaps = log.salvage(|lsn, payload| rescued.push((lsn, payload.to_vec())))?;
    /// assert!(gaps.is_empty());
    /// assert_eq!(rescued, [(1, b"a".to_vec())]);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn salvage(&self, visit: impl FnMut(Lsn, &[u8])) -> Result<Vec<Gap>> {
        Ok(self.salvage_walk(visit)?.gaps)
    }

    /// [`Log::salvage`], with how many valid entries at the end it did not visit (the torn
    /// tail's) and where it stopped.
    pub(crate) fn salvage_walk(&self, visit: impl FnMut(Lsn, &[u8])) -> Result<damage::Salvaged> {
        let cap = self.sb.capacity as usize;
        let image = self
            .pmem
            .view_frozen(0, cap)
            .ok_or_else(|| Error::Unsupported {
                path: self.name.clone(),
                what: "salvage on a writable log (open it read-only)",
            })?;
        let slot = self.writer.lock().slot;
        // (It reads the whole data area.)
        self.pmem.media().read_ahead(0, cap);
        let published = crate::recover::published(image, &self.sb, &slot);
        let vouched = crate::recover::vouched(image, &self.sb, &slot);
        let slot_damage = self.recovery().slot_damage();
        let past_end = self
            .recovery()
            .published_missing
            .map_or(0, |(_, last)| last + 1);
        Ok(damage::salvage(
            image,
            self.sb.salt,
            &slot,
            (published, vouched, past_end),
            slot_damage,
            visit,
        ))
    }
}

/// Follows the tail of a log: yields copies of entries in LSN order as they become durable,
/// waiting for new ones; see [`Log::follow`].
///
/// A follower holds no pin while it waits, so it never blocks a truncation or an append. If
/// a truncation dropped entries it had not read yet, the next call reports them with
/// [`Error::Truncated`] (the LSNs missed; the first still available is `last_missed + 1`), and
/// the following calls go on from there.
pub struct Follower<'a, M: Media> {
    log: &'a Log<M>,
    next: Lsn,
    /// Suffix truncations seen so far.
    deleted: u64,
    /// The head as of (before) the last look at their count: no suffix truncation counted
    /// after that look deleted anything below it.
    head_seen: Lsn,
    /// Where it started: no entry below is returned, even after a suffix truncation below it.
    start: Lsn,
    /// The last entry returned since the start or the last rewind, if any.
    returned: Option<Lsn>,
}

impl<'a, M: Media> Follower<'a, M> {
    /// The next entry, waiting up to `timeout` for it to become durable; `Ok(None)` on
    /// timeout. Padding (the LSNs of an abandoned append) is skipped.
    ///
    /// Fails with [`Error::Truncated`] if a truncation dropped the next entry before it was
    /// read; the follower then moves on to the first LSN still available. Fails with
    /// [`Error::Rewound`] if a suffix truncation ([`Log::truncate_after`]) deleted entries it
    /// had returned; it then goes on from the first deleted LSN (or the LSN it started from,
    /// if that is later), with the entries that replace them. (After more suffix truncations
    /// than the log records (64) since its last call, from the head as of that call: see
    /// [`Error::Rewound`].) A suffix truncation that deleted only entries it had not returned
    /// yet is no error: it goes on with the entries that replace them.
    pub fn next_timeout(&mut self, timeout: std::time::Duration) -> Result<Option<OwnedEntry>> {
        let deadline = crate::log::deadline_after(timeout);
        loop {
            // The head before the count: a suffix truncation counted after this look deletes
            // nothing below it.
            let known = std::mem::replace(&mut self.head_seen, self.log.first());
            if self.log.deleted.load(Ordering::Acquire) != self.deleted {
                let from = self.missed_deletions(known);
                if from < self.next {
                    // Back to the first deleted entry at or after the start (entries it
                    // passed without returning them, padding or those below the start, may
                    // have been replaced too); an error only if it had returned one.
                    let back = from.max(self.start);
                    if self.returned.is_some_and(|r| from <= r) {
                        let back = self.settle_rewind(back);
                        return Err(Error::Rewound {
                            path: self.log.name.clone(),
                            from: back,
                        });
                    }
                    self.next = back;
                }
            }
            if self.log.last_lsn.load(Ordering::Acquire) >= self.next {
                let guard = self.log.pin();
                // A suffix truncation that may delete the entry waits: look again once it is
                // done (the entry may then be deleted, or replaced).
                if guard.sees_to < self.next {
                    drop(guard);
                    if std::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(20));
                    continue;
                }
                // No suffix truncation that deletes the entry runs while the guard is held: if
                // one completed since the checks above, look again.
                if self.log.deleted.load(Ordering::Acquire) != self.deleted
                    || self.log.last_lsn.load(Ordering::Acquire) < self.next
                {
                    continue;
                }
                if self.next < guard.lsn() {
                    let missed = self.next;
                    self.next = guard.lsn();
                    return Err(Error::Truncated {
                        path: self.log.name.clone(),
                        first_missed: missed,
                        last_missed: guard.lsn() - 1,
                    });
                }
                let lsn = self.next;
                let read = guard.read(lsn).map(|e| e.to_owned());
                // Published and not deleted: `None` is padding of an abandoned append.
                self.next += 1;
                match read {
                    Some(e) => {
                        self.returned = Some(lsn);
                        return Ok(Some(e));
                    }
                    None => continue,
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.log
                .wait_for_lsn(self.next, self.deleted, deadline - now);
        }
    }

    /// The LSN the next entry will have.
    pub fn position(&self) -> Lsn {
        self.next
    }

    /// Before it reports a rewind to `back`: folds into `back` the suffix truncations counted
    /// since its look, and finds the last entry it returned below the rewind point (it sets
    /// `next` and `returned`); returns the rewind point.
    ///
    /// It passed every entry from its start to the rewind point and returned each but the
    /// padding, which it finds by reading them under a guard. A truncation counted since its
    /// look may have deleted some of them (gone, or not replaced yet, they read as padding
    /// would): then the rewind point moves down to that truncation's first LSN, and it looks
    /// again. One counted after the guard was taken deletes nothing the guard may read.
    /// Entries it cannot look at count as returned: below the head no deletion reaches them,
    /// and past what a guard may read one rewind too many is reported at most.
    fn settle_rewind(&mut self, mut back: Lsn) -> Lsn {
        loop {
            #[cfg(feature = "mutants")]
            crate::mutants::FOLLOWER_REWINDING.here();
            let guard = self.log.pin();
            if self.log.deleted.load(Ordering::Acquire) == self.deleted {
                self.next = back;
                self.returned = (self.start..back)
                    .rev()
                    .find(|&l| l < guard.lsn() || l > guard.sees_to || guard.read(l).is_some());
                return back;
            }
            drop(guard);
            let from = self.missed_deletions(self.head_seen);
            back = back.min(from.max(self.start));
        }
    }

    /// The first LSN that the suffix truncations counted since its last look deleted (or
    /// `known`, the head as of that look, if more came than the log records), and counts them
    /// as seen.
    fn missed_deletions(&mut self, known: Lsn) -> Lsn {
        let d = self.log.deletions.lock();
        // (Counted under the lock, which every count and record takes.)
        let deleted = self.log.deleted.load(Ordering::Acquire);
        let missed = (deleted - self.deleted) as usize;
        // Only the last ones are kept: if more came in between, every entry from the head as
        // of the last count on is suspect (as for a reader in another process); those a head
        // truncation removed since are then reported missed.
        let from = if missed > d.len() {
            known
        } else {
            d.iter()
                .skip(d.len() - missed)
                .copied()
                .min()
                .unwrap_or(Lsn::MAX)
        };
        drop(d);
        self.deleted = deleted;
        from
    }
}

impl<M: Media> Log<M> {
    /// Follows the log from `lsn`: a consumer or replication thread calls
    /// [`Follower::next_timeout`] to get each entry once it is durable. Other threads may
    /// append and truncate meanwhile. An `lsn` below the first LSN starts at the first. It
    /// returns no entry below where it started, and reports no suffix truncation that deleted
    /// only entries below it (or others it had not returned yet): their replacements below the
    /// start are not returned either.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// use std::time::Duration;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         for i in 0..3u8 {
    ///             log.append(&[i]).unwrap();
    ///         }
    ///     });
    ///     let mut f = log.follow(1);
    ///     for i in 0..3u8 {
    ///         let e = f.next_timeout(Duration::from_secs(10)).unwrap().expect("appended");
    ///         assert_eq!(e.payload, [i]);
    ///     }
    /// });
    /// ```
    pub fn follow(&self, lsn: Lsn) -> Follower<'_, M> {
        let head_seen = self.first();
        let start = lsn.max(head_seen);
        Follower {
            log: self,
            next: start,
            deleted: self.deleted.load(Ordering::Acquire),
            head_seen,
            start,
            returned: None,
        }
    }

    /// Sleeps until entry `lsn` is published, a suffix truncation comes after the `deleted`
    /// seen, or `timeout` passes.
    pub(crate) fn wait_for_lsn(&self, lsn: Lsn, deleted: u64, timeout: std::time::Duration) {
        #[cfg(loom)]
        if crate::sync::mutants::active(crate::sync::mutants::Mutant::WaiterAfterCheck) {
            return wait_for_lsn_registering_late(self, lsn, timeout);
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // Publishers store `last_lsn`, then a light fence, then read `waiters` (see
        // `persist::light_fence`).
        crate::persist::heavy_fence();
        let g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
        // (A suffix truncation counts itself before it notifies, under the lock.)
        if self.last_lsn.load(Ordering::Acquire) < lsn
            && self.deleted.load(Ordering::Acquire) == deleted
        {
            let _ = self.wake.wait_timeout(g, timeout);
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Log::wait_for_lsn` as mutant [`crate::sync::mutants::Mutant::WaiterAfterCheck`] has it:
/// the follower checks `last_lsn` first and registers in `waiters` only when it is about to
/// sleep, so a publisher that stored `last_lsn` in between, and found nobody registered, wakes
/// nobody.
#[cfg(loom)]
fn wait_for_lsn_registering_late<M: Media>(log: &Log<M>, lsn: Lsn, timeout: std::time::Duration) {
    let g = log.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
    if log.last_lsn.load(Ordering::Acquire) < lsn {
        log.waiters.fetch_add(1, Ordering::SeqCst);
        crate::persist::heavy_fence();
        let _ = log.wake.wait_timeout(g, timeout);
        log.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}
