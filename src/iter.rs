//! Reading: iteration over durable entries and lookup by LSN, as zero-copy slices.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::{self, EntryHeader, FLAG_PAD, HEADER_LEN, KNOWN_FLAGS};
use crate::log::Log;
use crate::media::{Live, Media};
use crate::recover::INDEX_STRIDE;
use crate::Lsn;

/// The sparse LSN index: the offsets of the entries with LSN `base + k * INDEX_STRIDE`, where
/// `base` is the first LSN plus a multiple of the stride.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) base: Lsn,
    pub(crate) anchors: Vec<u64>,
}

impl Index {
    /// The anchor at or before `lsn`: its offset and LSN.
    fn anchor_at_or_before(&self, lsn: Lsn) -> Option<(usize, Lsn)> {
        if self.anchors.is_empty() || lsn < self.base {
            return None;
        }
        let k = (((lsn - self.base) / INDEX_STRIDE) as usize).min(self.anchors.len() - 1);
        Some((
            self.anchors[k] as usize,
            self.base + k as u64 * INDEX_STRIDE,
        ))
    }

    /// Keeps the anchors of LSNs below `next`.
    pub(crate) fn truncate_from(&mut self, next: Lsn) {
        let keep = next.saturating_sub(self.base).div_ceil(INDEX_STRIDE) as usize;
        self.anchors.truncate(keep);
    }
}

/// One entry of the log: its LSN and a slice of its payload, borrowed from the mapping.
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
}

/// Iterator over durable entries in LSN order; see [`Log::iter`].
///
/// It covers the entries that were durable when it was created; entries appended later are
/// not visited.
pub struct Iter<'a, M: Media> {
    log: &'a Log<M>,
    live: Live,
    pos: usize,
    lsn: Lsn,
}

impl<'a, M: Media> Iterator for Iter<'a, M> {
    type Item = Entry<'a>;

    #[inline]
    fn next(&mut self) -> Option<Entry<'a>> {
        loop {
            if self.pos == self.live.tail {
                return None;
            }
            let (entry, next) = self.log.entry_at(&self.live, self.pos, self.lsn)?;
            self.pos = next;
            self.lsn += 1;
            if !entry.is_pad() {
                return Some(entry);
            }
        }
    }
}

impl<M: Media> Log<M> {
    /// Iterates over all durable entries, oldest first.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// log.append(b"a")?;
    /// log.append(b"b")?;
    /// let all: Vec<(u64, &[u8])> = log.iter().map(|e| (e.lsn, e.payload)).collect();
    /// assert_eq!(all, [(1, &b"a"[..]), (2, &b"b"[..])]);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, M> {
        let live = self.pmem.live();
        Iter {
            log: self,
            live,
            pos: live.first(self.pmem.data_start()),
            lsn: self.first_lsn,
        }
    }

    /// Iterates over the durable entries with an LSN of at least `lsn`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// for p in [b"a", b"b", b"c"] { log.append(p)?; }
    /// let lsns: Vec<u64> = log.iter_from(2).map(|e| e.lsn).collect();
    /// assert_eq!(lsns, [2, 3]);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn iter_from(&self, lsn: Lsn) -> Iter<'_, M> {
        // The LSN is read before the live region, so every LSN up to it is inside the region.
        let last = self.last_lsn.load(Ordering::Acquire);
        let live = self.pmem.live();
        if lsn <= self.first_lsn {
            return Iter {
                log: self,
                live,
                pos: live.first(self.pmem.data_start()),
                lsn: self.first_lsn,
            };
        }
        if lsn > last {
            return Iter {
                log: self,
                live,
                pos: live.tail,
                lsn,
            };
        }
        let (pos, found) = self.seek(&live, lsn);
        Iter {
            log: self,
            live,
            pos,
            lsn: found,
        }
    }

    /// The durable entry with LSN `lsn`, if the log holds it.
    pub fn read(&self, lsn: Lsn) -> Option<Entry<'_>> {
        let last = self.last_lsn.load(Ordering::Acquire);
        if lsn < self.first_lsn || lsn > last {
            return None;
        }
        let live = self.pmem.live();
        let (pos, at) = self.seek(&live, lsn);
        debug_assert_eq!(at, lsn);
        self.entry_at(&live, pos, lsn)
            .map(|(e, _)| e)
            .filter(|e| !e.is_pad())
    }

    /// Offset of entry `lsn` (which must be durable), found from the sparse index.
    pub(crate) fn seek(&self, live: &Live, lsn: Lsn) -> (usize, Lsn) {
        let start = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            index.anchor_at_or_before(lsn)
        };
        let (mut pos, mut at) = match start {
            Some(a) => a,
            None => {
                // Before the first anchor (after a recovery that began at a tail hint): fill
                // the index from the head once, then look again.
                self.fill_index_front(live);
                let index = self.index.read().unwrap_or_else(|e| e.into_inner());
                index
                    .anchor_at_or_before(lsn)
                    .unwrap_or((live.first(self.pmem.data_start()), self.first_lsn))
            }
        };
        while at < lsn {
            match self.entry_at(live, pos, at) {
                Some((_, next)) => pos = next,
                None => break,
            }
            at += 1;
        }
        (pos, at)
    }

    /// Adds the anchors between the head and the first one (walking entry headers).
    fn fill_index_front(&self, live: &Live) {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        if index.base <= self.first_lsn {
            return;
        }
        let mut front = Vec::new();
        let mut pos = live.first(self.pmem.data_start());
        for lsn in self.first_lsn..index.base {
            if (lsn - self.first_lsn).is_multiple_of(INDEX_STRIDE) {
                front.push(pos as u64);
            }
            match self.entry_at(live, pos, lsn) {
                Some((_, next)) => pos = next,
                None => return,
            }
        }
        front.append(&mut index.anchors);
        index.anchors = front;
        index.base = self.first_lsn;
    }

    /// The live entry at `pos` and the offset of the one after it (past the wrap, if the
    /// entries before the wrap end there).
    #[inline]
    pub(crate) fn entry_at(&self, live: &Live, pos: usize, lsn: Lsn) -> Option<(Entry<'_>, usize)> {
        let h = EntryHeader::decode(self.pmem.read_live(live, pos, HEADER_LEN)?);
        debug_assert_eq!(h.lsn, lsn);
        let payload = self
            .pmem
            .read_live(live, pos + HEADER_LEN, h.len as usize)?;
        let mut next = pos + h.entry_len();
        if live.wrapped() && next == live.wrap_at {
            next = self.pmem.data_start();
        }
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
        // The LSN before the live region: every LSN up to it is inside the region.
        let last = self.last_lsn.load(Ordering::Acquire);
        let live = self.pmem.live();
        let slot = self.writer.lock().slot;
        let salt = self.sb.salt;
        let mut v = Verified::default();
        let mut pos = live.first(self.pmem.data_start());
        let mut lsn = self.first_lsn;
        let bad = |pos: usize, lsn: Lsn, reason: &str| Error::Corrupted {
            path: self.name.clone(),
            offset: pos as u64,
            lsn,
            reason: reason.to_string(),
            entries_beyond: 0,
        };
        while lsn <= last {
            let h = EntryHeader::decode(
                self.pmem
                    .read_live(&live, pos, HEADER_LEN)
                    .ok_or_else(|| bad(pos, lsn, "header outside the live entries"))?,
            );
            let payload = self
                .pmem
                .read_live(&live, pos + HEADER_LEN, h.len as usize)
                .ok_or_else(|| bad(pos, lsn, "length runs past the live entries"))?;
            if h.flags & !KNOWN_FLAGS != 0 {
                return Err(bad(pos, lsn, "unknown flag bits"));
            }
            if format::entry_crc(format::payload_crc(salt, payload), &h) != h.crc {
                return Err(bad(pos, lsn, "checksum mismatch"));
            }
            if h.lsn != lsn {
                return Err(bad(pos, lsn, "LSN does not continue the sequence"));
            }
            if lsn >= slot.cut_lsn && h.epoch != slot.epoch {
                return Err(bad(pos, lsn, "epoch of an earlier session"));
            }
            if h.flags & FLAG_PAD != 0 {
                v.padding += 1;
            } else {
                v.entries += 1;
            }
            v.bytes += h.entry_len() as u64;
            pos += h.entry_len();
            if live.wrapped() && pos == live.wrap_at {
                pos = self.pmem.data_start();
            }
            lsn += 1;
        }
        // Unless appends went on meanwhile, the last entry ends at the tail.
        let settled = self.last_lsn.load(Ordering::Acquire) == last;
        if settled && pos != live.tail && !(v.bytes == 0 && live.tail == live.head) {
            return Err(bad(pos, lsn, "the entries end before the tail"));
        }
        Ok(v)
    }
}

/// Follows the tail of a log: yields entries in LSN order as they become durable, waiting for
/// new ones; see [`Log::follow`].
pub struct Follower<'a, M: Media> {
    log: &'a Log<M>,
    next: Lsn,
}

impl<'a, M: Media> Follower<'a, M> {
    /// The next entry, waiting up to `timeout` for it to become durable; `None` on timeout.
    /// Padding (the LSNs of an abandoned append) is skipped. A follower borrows the log, so
    /// no truncation can happen while it exists; one made with an LSN below the first starts
    /// at the first.
    pub fn next_timeout(&mut self, timeout: std::time::Duration) -> Option<Entry<'a>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.next < self.log.first_lsn {
                self.next = self.log.first_lsn;
            }
            if self.log.last_lsn.load(Ordering::Acquire) >= self.next {
                let lsn = self.next;
                self.next += 1;
                match self.log.read(lsn) {
                    Some(e) => return Some(e),
                    None => continue, // padding of an abandoned append
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            self.log.wait_for_lsn(self.next, deadline - now);
        }
    }

    /// The LSN the next entry will have.
    pub fn position(&self) -> Lsn {
        self.next
    }
}

impl<M: Media> Log<M> {
    /// Follows the log from `lsn`: a consumer or replication thread calls
    /// [`Follower::next_timeout`] to get each entry once it is durable.
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
    ///         let e = f.next_timeout(Duration::from_secs(10)).expect("appended");
    ///         assert_eq!(e.payload, [i]);
    ///     }
    /// });
    /// ```
    pub fn follow(&self, lsn: Lsn) -> Follower<'_, M> {
        Follower {
            log: self,
            next: lsn,
        }
    }

    /// Sleeps until entry `lsn` is published or `timeout` passes.
    pub(crate) fn wait_for_lsn(&self, lsn: Lsn, timeout: std::time::Duration) {
        #[cfg(loom)]
        if crate::sync::mutants::active(crate::sync::mutants::Mutant::WaiterAfterCheck) {
            return crate::sync::mutants::wait_for_lsn_registering_late(self, lsn, timeout);
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // Publishers store `last_lsn`, then a light fence, then read `waiters` (see
        // `persist::light_fence`).
        crate::persist::heavy_fence();
        let g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.last_lsn.load(Ordering::Acquire) < lsn {
            let _ = self.wake.wait_timeout(g, timeout);
        }
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}
