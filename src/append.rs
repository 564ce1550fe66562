//! The append path: one persistence barrier per append or batch, many appenders at once.
//!
//! An append (or batch) goes through three steps:
//!
//! 1. **Reserve**, under the writer mutex for a few dozen nanoseconds: place the bytes (at the
//!    tail, or at the start of the data area when they do not fit before the end of the
//!    file), take the LSNs, store the 8-byte end marker after them, and queue a ticket.
//! 2. **Store and persist**, with no lock: encode the entries into the reserved bytes, then
//!    write back their cache lines and fence (CPU mode: each thread fences its own stores,
//!    since a fence orders only the stores of the core that issues it), or, in msync mode,
//!    join a group commit in which one `msync` covers every reservation stored so far.
//! 3. **Publish in order**: a ticket becomes visible to readers, and its append returns, only
//!    when it and every ticket before it are durable — recovery stops at the first invalid
//!    entry, so an acknowledged entry must never sit behind one that could still be torn. The
//!    thread that completes the oldest ticket publishes every consecutive durable ticket; the
//!    others spin briefly on the published watermark, then sleep on a condition variable.
//!
//! Nothing else is written: the end of the log is found by recovery from the entries
//! themselves.

use parking_lot::MutexGuard;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{
    self, EntryHeader, Slot, DATA_OFFSET, ENTRY_ALIGN, FLAG_CONTINUES, FLAG_PAD, HEADER_LEN,
    MAX_INFLIGHT, SLOT_CONCURRENT,
};
use crate::log::{max_payload, Log, Pending, Writer};
use crate::media::{Claim, Media};
use crate::persist::CACHE_LINE;
use crate::recover::INDEX_STRIDE;
use crate::Lsn;

/// Batches up to this many bytes on media are assembled on the stack and stored at once.
const BATCH_BUF: usize = 4096;

/// Pages are prefaulted in chunks of this size, one chunk ahead of the tail.
pub(crate) const PREPARE_CHUNK: usize = 2 << 20;

impl<M: Media> Log<M> {
    /// Appends one entry and returns its LSN once the entry — and every entry before it — is
    /// durable.
    ///
    /// Any number of threads may append at once. On [`Error::Full`] nothing is written and the
    /// log stays usable. An empty payload is a valid entry.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// let lsn = log.append(b"rename /a /b")?;
    /// assert_eq!(log.read(lsn).unwrap().payload, b"rename /a /b");
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        self.check_payload(payload)?;
        let crc = format::payload_crc(self.sb.salt, payload);
        let lsns = self.append_entries(&[payload], &[crc])?;
        Ok(lsns.start)
    }

    /// Appends several entries with one persistence barrier and returns their LSNs.
    ///
    /// After a crash either all of them are in the log or none is. An empty batch writes
    /// nothing and returns an empty range.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// let lsns = log.append_batch(&[b"unlink /a/x", b"rmdir /a"])?;
    /// assert_eq!(lsns, 1..3);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<Range<Lsn>> {
        if payloads.is_empty() {
            if self.read_only {
                return Err(Error::ReadOnly);
            }
            let next = self.next_lsn();
            return Ok(next..next);
        }
        let mut crcs = Vec::with_capacity(payloads.len());
        for p in payloads {
            self.check_payload(p)?;
            crcs.push(format::payload_crc(self.sb.salt, p));
        }
        self.append_entries(payloads, &crcs)
    }

    fn check_payload(&self, payload: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let max = max_payload(self.sb.capacity);
        if payload.len() as u64 > max {
            return Err(Error::PayloadTooLarge {
                len: payload.len() as u64,
                max,
            });
        }
        Ok(())
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock()
    }

    /// Reserves, stores, persists and publishes `payloads`; returns their LSNs.
    fn append_entries(&self, payloads: &[&[u8]], crcs: &[u32]) -> Result<Range<Lsn>> {
        let total: usize = payloads.iter().map(|p| format::entry_len(p.len())).sum();
        let nt = total >= self.nt_threshold;
        let (claim, ticket, first, epoch, marker) = self.reserve(payloads, total, nt)?;
        let mut guard = Reservation {
            log: self,
            claim: &claim,
            ticket,
            first,
            payloads,
            nt,
            marker,
            done: false,
        };
        let header = |i: usize, payload: &[u8], pcrc: u32| {
            let mut h = EntryHeader {
                crc: 0,
                len: payload.len() as u32,
                lsn: first + i as u64,
                epoch,
                flags: if i + 1 < payloads.len() {
                    FLAG_CONTINUES
                } else {
                    0
                },
            };
            h.crc = format::entry_crc(pcrc, &h);
            h
        };
        if payloads.len() > 1 && total <= BATCH_BUF {
            // A small batch is assembled on the stack and stored with one copy.
            let mut buf = [0u8; BATCH_BUF];
            let mut at = 0;
            for (i, (payload, &pcrc)) in payloads.iter().zip(crcs).enumerate() {
                let h = header(i, payload, pcrc);
                buf[at..at + HEADER_LEN].copy_from_slice(&h.encode());
                buf[at + HEADER_LEN..at + HEADER_LEN + payload.len()].copy_from_slice(payload);
                at += h.entry_len();
            }
            self.pmem
                .store_claimed(&claim, claim.start(), &buf[..total], nt);
        } else {
            let mut pos = claim.start();
            for (i, (payload, &pcrc)) in payloads.iter().zip(crcs).enumerate() {
                let h = header(i, payload, pcrc);
                self.store_entry(&claim, pos, &h, payload, nt);
                pos += h.entry_len();
            }
        }
        guard.done = true;
        self.persist_and_publish(&claim, ticket, nt, marker)?;
        Ok(first..first + payloads.len() as u64)
    }

    /// Step 1: places `total` bytes for the entries, takes their LSNs and a ticket.
    fn reserve(
        &self,
        payloads: &[&[u8]],
        total: usize,
        nt: bool,
    ) -> Result<(Claim, u64, Lsn, u32, bool)> {
        let mut w = self.lock_writer();
        loop {
            if let Some(e) = &w.poisoned {
                return Err(e.error(&self.name));
            }
            if w.inflight.len() < MAX_INFLIGHT {
                break;
            }
            // Too many appends in flight: let the oldest finish (FORMAT.md, "Concurrency").
            drop(w);
            std::thread::yield_now();
            w = self.lock_writer();
        }
        if !w.inflight.is_empty() && w.slot.flags & SLOT_CONCURRENT == 0 {
            // The first overlap of the session: record it before any second reservation can
            // reach media, so that recovery allows for several appends in flight.
            let slot = Slot {
                seq: w.slot.seq + 1,
                flags: SLOT_CONCURRENT,
                ..w.slot
            };
            self.write_slot(&mut w, slot)?;
        }
        let start = self.place(&w, total)?;
        self.prepare(&mut w, start, total);
        if start != w.tail {
            // The append wraps: the entries before it end at the old tail.
            w.wrap_at = w.tail;
        }
        let end = start + total;
        let first = w.next_lsn;
        w.tail = end;
        w.next_lsn += payloads.len() as u64;
        let marker = self.end_marker(&mut w, end, nt);
        let claim = self.pmem.claim(&mut w.token, start, end);
        let ticket = w.inflight_base + w.inflight.len() as u64;
        // Offsets of the entries the sparse index keeps (one in INDEX_STRIDE).
        let mut anchors = Vec::new();
        if (first - self.first_lsn).div_ceil(INDEX_STRIDE)
            < (w.next_lsn - self.first_lsn).div_ceil(INDEX_STRIDE)
        {
            let mut pos = start;
            for (i, p) in payloads.iter().enumerate() {
                if (first + i as u64 - self.first_lsn) % INDEX_STRIDE == 0 {
                    anchors.push(pos as u64);
                }
                pos += format::entry_len(p.len());
            }
        }
        let (wrap_at, next_lsn) = (w.wrap_at, w.next_lsn);
        w.inflight.push_back(Pending {
            start,
            end,
            wrap_at,
            first_lsn: first,
            next_lsn,
            stored: false,
            durable: false,
            anchors,
        });
        Ok((claim, ticket, first, w.slot.epoch, marker))
    }

    /// Where an append of `total` bytes goes: at the tail, or at the start of the data area
    /// when it does not fit before the end of the file (the wrap rule: an append never
    /// straddles the end). The live entries always stay at least 8 bytes short of the head, so
    /// that a tail equal to the head means an empty log.
    fn place(&self, w: &Writer, total: usize) -> Result<usize> {
        let cap = self.sb.capacity as usize;
        let available = if w.tail >= w.head {
            if w.tail + total <= cap {
                return Ok(w.tail);
            }
            if DATA_OFFSET + total < w.head {
                return Ok(DATA_OFFSET);
            }
            (cap - w.tail).max(w.head.saturating_sub(DATA_OFFSET + ENTRY_ALIGN))
        } else {
            if w.tail + total < w.head {
                return Ok(w.tail);
            }
            w.head.saturating_sub(w.tail + ENTRY_ALIGN)
        };
        Err(Error::Full {
            needed: total as u64,
            available: available as u64,
        })
    }

    /// Zeroes the 8 bytes after the reservation (if they are free space), under the writer
    /// lock, before any later reservation can claim them; returns whether it did. Correctness
    /// does not need it (the epoch rule refuses whatever follows the tail); it makes a clean end
    /// recognisable, so recovery reports a torn tail only after an interrupted append, not when
    /// older bytes happen to follow the tail.
    #[inline]
    fn end_marker(&self, w: &mut Writer, end: usize, nt: bool) -> bool {
        let limit = if end < w.head {
            w.head
        } else {
            self.sb.capacity as usize
        };
        if end >= w.zero_from {
            // Everything from here on is still zero (a new log's first lap): nothing to mark.
            w.zero_from = end;
            return false;
        }
        if end + ENTRY_ALIGN > limit {
            return false;
        }
        self.pmem
            .store_free(&mut w.token, end, &[0u8; ENTRY_ALIGN], nt);
        true
    }

    /// Stores one encoded entry at `pos`: header, payload, zero padding to 8 bytes. Small
    /// entries are assembled on the stack and stored with one copy (for non-temporal stores
    /// that means whole runs of a line instead of several partial writes).
    #[inline]
    fn store_entry(&self, claim: &Claim, pos: usize, h: &EntryHeader, payload: &[u8], nt: bool) {
        const SMALL: usize = 512;
        let header = h.encode();
        let len = h.entry_len();
        if len <= SMALL {
            let mut buf = [0u8; SMALL];
            buf[..HEADER_LEN].copy_from_slice(&header);
            buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
            self.pmem.store_claimed(claim, pos, &buf[..len], nt);
            return;
        }
        let body = payload.len() & !(ENTRY_ALIGN - 1);
        let rest = payload.len() - body;
        let pad = len - HEADER_LEN - payload.len();
        if nt {
            // Non-temporal stores need 8-byte units: the last partial word is built here.
            self.pmem.store_claimed(claim, pos, &header, true);
            self.pmem
                .store_claimed(claim, pos + HEADER_LEN, &payload[..body], true);
            if rest > 0 {
                let mut last = [0u8; ENTRY_ALIGN];
                last[..rest].copy_from_slice(&payload[body..]);
                self.pmem
                    .store_claimed(claim, pos + HEADER_LEN + body, &last, true);
            }
        } else {
            self.pmem.store_claimed(claim, pos, &header, false);
            self.pmem
                .store_claimed(claim, pos + HEADER_LEN, payload, false);
            if pad > 0 {
                self.pmem.store_claimed(
                    claim,
                    pos + HEADER_LEN + payload.len(),
                    &[0u8; ENTRY_ALIGN][..pad],
                    false,
                );
            }
        }
    }

    /// Steps 2 and 3 after the stores: make the reservation durable, publish in ticket order,
    /// and wait until every earlier ticket is published too.
    fn persist_and_publish(
        &self,
        claim: &Claim,
        ticket: u64,
        nt: bool,
        marker: bool,
    ) -> Result<()> {
        let (start, len) = (claim.start(), claim.len());
        if self.pmem.media().persistence().is_cpu_flush() {
            self.barrier(start, len, nt, marker)
                .inspect_err(|e| self.poison(e))?;
            let mut w = self.lock_writer();
            let i = (ticket - w.inflight_base) as usize;
            w.inflight[i].durable = true;
            self.advance_and_wake(w);
        } else {
            {
                let mut w = self.lock_writer();
                let i = (ticket - w.inflight_base) as usize;
                w.inflight[i].stored = true;
            }
            self.group_sync(ticket)?;
        }
        self.wait_published(ticket)
    }

    /// msync mode: one `msync` covers every reservation stored so far, in ticket order.
    fn group_sync(&self, ticket: u64) -> Result<()> {
        let _sync = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (runs, upto) = {
                let w = self.lock_writer();
                if ticket < w.inflight_base {
                    return Ok(()); // someone else's msync covered it
                }
                let mut runs: Vec<(usize, usize)> = Vec::new();
                let mut upto = 0;
                for p in w.inflight.iter().take_while(|p| p.stored) {
                    let end = p.end + ENTRY_ALIGN; // the end marker too
                    match runs.last_mut() {
                        Some(r) if r.1 == p.start || r.1 == p.start + ENTRY_ALIGN => r.1 = end,
                        _ => runs.push((p.start, end)),
                    }
                    upto += 1;
                }
                (runs, upto)
            };
            if upto == 0 {
                // The oldest reservation is still being stored by its thread.
                std::thread::yield_now();
                continue;
            }
            for (a, b) in runs {
                let b = b.min(self.sb.capacity as usize);
                self.pmem.flush(a, b - a);
                self.barrier_drain().inspect_err(|e| self.poison(e))?;
            }
            let mut w = self.lock_writer();
            for p in w.inflight.iter_mut().take(upto) {
                p.durable = true;
            }
            self.advance_and_wake(w);
        }
    }

    /// [`Log::advance`], then wakes sleeping appenders and followers (after releasing the
    /// writer lock, so that nobody waits for the wake-up system call).
    fn advance_and_wake(&self, mut w: MutexGuard<'_, Writer>) {
        let published = self.advance(&mut w);
        drop(w);
        // Store-load barrier against a sleeper that registers in `waiters` and then checks
        // `published` or `last_lsn` (both sides sequentially consistent): one of the two sees
        // the other, so no wake-up is lost.
        std::sync::atomic::fence(Ordering::SeqCst);
        if published && self.waiters.load(Ordering::Relaxed) > 0 {
            let _g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
    }

    /// Publishes every consecutive durable reservation at the front of the queue; true if it
    /// published any.
    fn advance(&self, w: &mut Writer) -> bool {
        let mut published = None;
        let mut bytes = 0u64;
        while w.inflight.front().is_some_and(|p| p.durable) {
            let p = w.inflight.pop_front().expect("non-empty");
            w.inflight_base += 1;
            bytes += (p.end - p.start) as u64;
            if !p.anchors.is_empty() {
                let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                if index.anchors.is_empty() {
                    index.base =
                        p.first_lsn + (p.first_lsn - self.first_lsn).wrapping_neg() % INDEX_STRIDE;
                }
                index.anchors.extend_from_slice(&p.anchors);
            }
            published = Some(p);
        }
        if let Some(p) = published {
            if let Some(every) = w.hint_every {
                w.since_hint += bytes;
                // Only while not wrapped: a hint at or after the head keeps the wrap point
                // findable by the scan from the hint.
                if w.since_hint >= every && p.start >= w.head {
                    let slot = Slot {
                        seq: w.slot.seq + 1,
                        hint_offset: p.start as u64,
                        hint_lsn: p.first_lsn,
                        ..w.slot
                    };
                    // A failed hint only costs recovery time; the append itself is durable.
                    if self.write_slot(w, slot).is_ok() {
                        w.since_hint = 0;
                    }
                }
            }
            // The tail first, then the LSN: a reader that sees an LSN finds its entry in the
            // live region.
            self.pmem.publish(&mut w.token, p.end, p.wrap_at);
            self.last_lsn.store(p.next_lsn - 1, Ordering::Release);
            self.published.store(w.inflight_base, Ordering::Release);
            return true;
        }
        false
    }

    /// Waits until `ticket` is published: a short spin first, then the condition variable.
    fn wait_published(&self, ticket: u64) -> Result<()> {
        // The predecessors are a copy and a fence away: spin (a sleep and a wake-up cost
        // microseconds), then yield, and only then sleep.
        for i in 0..40_000u32 {
            if self.published.load(Ordering::Acquire) > ticket {
                return Ok(());
            }
            if i < 30_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.published.load(Ordering::SeqCst) <= ticket {
            if self.poisoned.load(Ordering::SeqCst) {
                drop(g);
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                let w = self.lock_writer();
                let cause = w.poisoned.as_ref().expect("poisoned");
                return Err(cause.error(&self.name));
            }
            g = self
                .wake
                .wait_timeout(g, Duration::from_millis(10))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    /// The persistence barrier of one reservation: write back the touched lines (unless they
    /// were written non-temporally, and the end marker's line if the entries do not reach it)
    /// and fence.
    #[inline]
    fn barrier(&self, start: usize, len: usize, nt: bool, marker: bool) -> Result<()> {
        #[cfg(feature = "mutants")]
        if let Some(r) = crate::mutants::barrier(&self.pmem, start, len, nt) {
            return r.map_err(|e| Error::io(&self.name, "drain", e));
        }
        if !nt {
            self.pmem.flush(start, len);
            let end = start + len;
            if marker && end % CACHE_LINE == 0 {
                self.pmem.flush(end, ENTRY_ALIGN);
            }
        }
        self.barrier_drain()
    }

    #[inline]
    fn barrier_drain(&self) -> Result<()> {
        self.pmem
            .drain()
            .map_err(|e| Error::io(&self.name, "drain", e))
    }

    /// A failed barrier leaves durability unknown: nothing after it is published, and every
    /// waiting or later append fails.
    fn poison(&self, e: &Error) {
        let mut w = self.lock_writer();
        if w.poisoned.is_none() {
            tracing::error!(error = %e, "daxlog: barrier failed; the log refuses further appends");
            w.poisoned = Some(PoisonCause(e.to_string()));
        }
        drop(w);
        self.poisoned.store(true, Ordering::SeqCst);
        let _g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Prefaults the pages the appends from `pos` will touch, 2 MiB at a time and each chunk
    /// once per mapping: after a wrap the pages are mapped already, and populating them again
    /// would cost as much as the first time.
    #[inline]
    pub(crate) fn prepare(&self, w: &mut Writer, pos: usize, need: usize) {
        let cap = self.sb.capacity as usize;
        let first = pos / PREPARE_CHUNK;
        let last = ((pos + need + PREPARE_CHUNK).min(cap) - 1) / PREPARE_CHUNK;
        for c in first..=last {
            let (word, bit) = (c / 64, 1u64 << (c % 64));
            if w.populated[word] & bit == 0 {
                w.populated[word] |= bit;
                let from = c * PREPARE_CHUNK;
                self.pmem
                    .media()
                    .prepare(from, PREPARE_CHUNK.min(cap - from));
            }
        }
    }
}

/// Why a log refuses appends after a failed barrier.
#[derive(Clone, Debug)]
pub(crate) struct PoisonCause(String);

impl PoisonCause {
    fn error(&self, name: &std::path::Path) -> Error {
        Error::io(
            name,
            "append after a failed barrier",
            std::io::Error::other(self.0.clone()),
        )
    }
}

/// A reservation being filled. If its thread panics before the entries are stored, dropping
/// it fills the reserved bytes with padding entries (flag `PAD`, zero payloads) that take the
/// reserved LSNs, and completes the ticket, so that later appends are not blocked forever and
/// recovery does not stop at garbage.
struct Reservation<'a, M: Media> {
    log: &'a Log<M>,
    claim: &'a Claim,
    ticket: u64,
    first: Lsn,
    payloads: &'a [&'a [u8]],
    nt: bool,
    marker: bool,
    done: bool,
}

impl<M: Media> Drop for Reservation<'_, M> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let log = self.log;
        let epoch = log.lock_writer().slot.epoch;
        let mut pos = self.claim.start();
        let zeros = vec![0u8; self.payloads.iter().map(|p| p.len()).max().unwrap_or(0)];
        for (i, p) in self.payloads.iter().enumerate() {
            let mut h = EntryHeader {
                crc: 0,
                len: p.len() as u32,
                lsn: self.first + i as u64,
                epoch,
                flags: FLAG_PAD
                    | if i + 1 < self.payloads.len() {
                        FLAG_CONTINUES
                    } else {
                        0
                    },
            };
            let body = &zeros[..p.len()];
            h.crc = format::entry_crc(format::payload_crc(log.sb.salt, body), &h);
            log.store_entry(self.claim, pos, &h, body, self.nt);
            pos += h.entry_len();
        }
        tracing::warn!(
            ticket = self.ticket,
            first_lsn = self.first,
            "daxlog: append abandoned; its LSNs hold padding"
        );
        let _ = log.persist_and_publish(self.claim, self.ticket, self.nt, self.marker);
    }
}
