//! Reservations and in-order publication: how many appenders share one log without a lock.
//!
//! **Reserving.** Where the next append goes and which LSNs it takes live in one 128-bit word,
//! [`State`]: the tail offset, a ticket counter, two flags, and the next LSN. An appender
//! reserves with one compare-and-swap of that word (`CMPXCHG16B`, [`crate::atomic_pair::AtomicPair`]);
//! nothing else is shared on the way in. Rare
//! events leave the fast path: recording the `CONCURRENT` slot flag, a full log, too many
//! appends in flight.
//!
//! **The end marker.** When the bytes after a reservation may hold older data, its appender
//! stores 8 zero bytes right after it (FORMAT.md, section 5). Those bytes are where the next
//! reservation starts, so the marker must reach them before the next appender's stores: every
//! appender says in its ticket's slot when its marker is stored (or that it needs none), and
//! the appender of the next ticket waits for that before its first store (a few nanoseconds;
//! only that one appender waits, and no reservation does).
//!
//! **Publishing.** Each ticket has a slot in a ring of [`MAX_INFLIGHT`], where its appender
//! records where its entries end. When they are durable (CPU mode) or stored (msync mode), the
//! appender marks the slot ready. Tickets are published strictly in order — publishing makes
//! the entries visible to readers and lets their appends return — by one thread at a time, the
//! *publisher*, and `published` counts the tickets done. In CPU mode the publisher of a run
//! goes on through every consecutive ready ticket, then stores `published`: its value `t`
//! says that every ticket before `t` is published and that ticket `t` was not ready when the
//! publisher looked, so its own appender publishes it (and whatever is ready after it) when it
//! sees that value. No ticket is published twice and none is forgotten, without a lock or a
//! compare-and-swap, and an appender that sleeps or is descheduled holds nobody up once its
//! ticket is ready. In msync mode the group commit publishes what its one `msync` covered.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{Slot, DATA_OFFSET, ENTRY_ALIGN, SLOT_CONCURRENT};
use crate::index::INDEX_STRIDE;
use crate::log::{Log, PoisonCause, Writer, AHEAD_GROUP, PREPARE_CHUNK};
use crate::media::{Claim, Media};
use crate::persist;
use crate::sync;
use crate::tickets::{State, BLOCKED, CONCURRENT, FRESH, MAX_INFLIGHT, NO_WRAP, TICKET_MASK};
use crate::Lsn;

/// A waiting appender checks `published` this many times before it sleeps, spinning between
/// the first `WAIT_SPINS` checks and yielding between the others. Under loom, once: each check
/// is a step the model explores, and the sleep path (which makes the same checks) is what it
/// must reach.
const WAIT_ROUNDS: u32 = if cfg!(loom) { 1 } else { 10_200 };
const WAIT_SPINS: u32 = if cfg!(loom) { 1 } else { 200 };

/// One reservation: bytes `[start, end)` and LSNs `first..first + n`.
pub(crate) struct Resv {
    pub ticket: u64,
    pub claim: Claim,
    pub first: Lsn,
    /// The end marker was stored after `end` and must be made durable with the entries.
    pub marker: bool,
}

/// Most bytes an appender asks the CPU to prefetch at once (64 lines).
const PREFETCH_MAX: usize = 4096;

impl<M: Media> Log<M> {
    /// Step 1 of an append: places `total` bytes for `payloads`, takes their LSNs and a ticket.
    pub(crate) fn reserve(&self, payloads: &[&[u8]], total: usize) -> Result<Resv> {
        let cap = self.sb.capacity as usize;
        let mut spins = 0u32;
        let mut cur = self.resv.load_torn();
        let (st, start, marker) = loop {
            self.pmem.media().sync_point();
            if self.poisoned.load(Ordering::Acquire) {
                return Err(self.poison_error());
            }
            let st = State::unpack(cur);
            let published = self.published.load(Ordering::Acquire);
            let inflight = st.ticket.wrapping_sub(published) & TICKET_MASK;
            // A blocked state is a full ring whatever the count says: a compare-and-swap from
            // one could succeed against a later blocked state equal to it (a round of tickets
            // on, after a suffix truncation set the tail and next LSN back), inside that
            // truncation.
            if inflight >= MAX_INFLIGHT as u64 || st.flags & BLOCKED != 0 {
                // A full ring waits for the oldest append (FORMAT.md, "Concurrency"); in msync
                // mode that is a whole sync away: sleep until one ends (`disk.rs`). Only on a
                // current state: `cur` may predate `published`, and then the ring only seems
                // full (its ticket count below the published one).
                if self.pmem.media().persistence().is_cpu_flush() {
                    backoff(&mut spins);
                } else {
                    self.wait_for_sync(published, cur);
                }
                cur = self.resv.load_torn();
                continue;
            }
            if inflight > 0 && st.flags & CONCURRENT == 0 {
                self.record_concurrent()?;
                cur = self.resv.load_torn();
                continue;
            }
            // The oldest position in use (the head, or a reader's pin), loaded after the state:
            // it is at or after `st.tail` in ring order (`pins.rs`). (Not `live()`: that
            // reads the published tail, a line the publisher writes each time.)
            let head = self.pins.limit();
            let start = self.place(st.tail, head, total)?;
            let end = start + total;
            let fresh = st.flags & FRESH != 0 && start == st.tail;
            let limit = if end < head { head } else { cap };
            let marker = !fresh && end + ENTRY_ALIGN <= limit;
            let mut flags = st.flags & CONCURRENT;
            if fresh {
                flags |= FRESH;
            }
            let new = State {
                tail: end,
                ticket: st.ticket + 1,
                flags,
                next_lsn: st.next_lsn + payloads.len() as u64,
            };
            match self.resv.compare_exchange(cur, new.pack()) {
                Ok(_) => break (st, start, marker),
                Err(now) => cur = now,
            }
        };
        let end = start + total;
        // The full ticket: less than MAX_INFLIGHT above the published count, read after the
        // compare-and-swap succeeded (this ticket is not published before this thread
        // publishes it, so the count lies at or below it). Not the count read before: the
        // state may have held the same value again since `cur` was loaded (a suffix
        // truncation sets the tail and the next LSN back, and the ticket field counts modulo
        // TICKET_MASK + 1), and then the count read before can lie whole rounds behind.
        let published = self.published.load(Ordering::Acquire);
        let ahead = st.ticket.wrapping_sub(published) & TICKET_MASK;
        let ticket = published + ahead;
        if ahead >= MAX_INFLIGHT as u64 || (ahead > 0 && st.flags & CONCURRENT == 0) {
            // Only with a state that held the same value again: the checks above used a count
            // whole rounds behind.
            self.after_stale_state(ticket, st.flags)?;
        }
        let slot = &self.ring[ticket as usize % MAX_INFLIGHT];
        if marker {
            // SAFETY: the next reservation starts at `end`, and its appender stores nothing
            // before `marker_done` says this store is done; the bytes are free space (`place`
            // kept them before the head or the end of the file). So this thread is their only
            // user meanwhile.
            let m = unsafe { self.pmem.claim_reserved(end, end + ENTRY_ALIGN) };
            self.pmem.store_claimed(&m, end, &[0u8; ENTRY_ALIGN], false);
        }
        slot.marker_done.store(ticket + 1, Ordering::Release);
        #[cfg(feature = "mutants")]
        let wait = !crate::mutants::is(crate::mutants::Mutant::NoMarkerWait);
        #[cfg(not(feature = "mutants"))]
        let wait = true;
        // In a fresh lap the reservation before stored no marker: nothing to wait for.
        if wait && ticket > 0 && st.flags & FRESH == 0 {
            // The previous reservation's marker may lie where this one starts.
            let prev = &self.ring[(ticket - 1) as usize % MAX_INFLIGHT];
            let mut spins = 0;
            while prev
                .marker_done
                .load(sync::ordering!(Acquire, MarkerDoneRelaxed))
                < ticket
            {
                // (A reservation before this one that failed before it stored its marker
                // poisoned the log: `Log::after_stale_state`.)
                if self.poisoned.load(Ordering::Acquire) {
                    return Err(self.poison_error());
                }
                backoff(&mut spins);
            }
        }
        self.prepare(start, total);
        // (As the wait for the marker above: a failure poisons the log first.)
        self.check_ahead(start, end)?;
        let first = st.next_lsn;
        slot.start.store(start as u64, Ordering::Relaxed);
        slot.end.store(end as u64, Ordering::Relaxed);
        let wrap_at = if start != st.tail {
            st.tail as u64
        } else {
            NO_WRAP
        };
        slot.wrap_at.store(wrap_at, Ordering::Relaxed);
        slot.first_lsn.store(first, Ordering::Relaxed);
        slot.next_lsn
            .store(first + payloads.len() as u64, Ordering::Relaxed);
        // Offsets of the entries the sparse index keeps (one in INDEX_STRIDE).
        let next = first + payloads.len() as u64;
        let anchored = first.div_ceil(INDEX_STRIDE) < next.div_ceil(INDEX_STRIDE);
        slot.has_anchors.store(anchored, Ordering::Relaxed);
        if anchored {
            let mut anchors = slot.anchors.lock();
            anchors.clear();
            let mut pos = start;
            for (i, p) in payloads.iter().enumerate() {
                if (first + i as u64).is_multiple_of(INDEX_STRIDE) {
                    anchors.push(pos as u64);
                }
                pos += crate::format::entry_len(p.len());
            }
        }
        // SAFETY: the compare-and-swap above moved the tail from `start` (or, on a wrap, from
        // the old tail to the start of the data area) past `end`, so no other reservation can
        // overlap `[start, end)`; `place` kept it in free space, before the head.
        let claim = unsafe { self.pmem.claim_reserved(start, end) };
        Ok(Resv {
            ticket,
            claim,
            first,
            marker,
        })
    }

    /// A reservation made with a state loaded before the same value came back (see the full
    /// ticket in [`Log::reserve`]), whose checks against the published count were made with a
    /// count whole rounds behind: waits until its ticket's slot in the ring is free (the ring
    /// was full), and records the first overlap of the session if others are in flight (the
    /// flag must be durable before two reservations' bytes can be). Nothing of the
    /// reservation is stored yet. On failure the log is poisoned: the reservation's ticket is
    /// never published, and the appends after it must not wait for it.
    #[cold]
    fn after_stale_state(&self, ticket: u64, flags: u8) -> Result<()> {
        let mut spins = 0u32;
        while ticket - self.published.load(Ordering::Acquire) >= MAX_INFLIGHT as u64 {
            if self.poisoned.load(Ordering::Acquire) {
                return Err(self.poison_error());
            }
            backoff(&mut spins);
        }
        if ticket > self.published.load(Ordering::Acquire) && flags & CONCURRENT == 0 {
            self.record_concurrent().inspect_err(|e| self.poison(e))?;
        }
        Ok(())
    }

    /// Asks the CPU for the cache lines an append of `total` bytes would store to if it were
    /// reserved now: every line of it if it is stored with cached stores and `total` is at most
    /// [`PREFETCH_MAX`]; otherwise (non-temporal stores, or a larger append) only the line where
    /// it ends (its end marker, and the bytes of its last line, are cached stores). A store to
    /// a line that is not cached waits until the line is read, and a log's lines are not cached
    /// after a lap, or after whole lines stored non-temporally. Called before the checksums are
    /// computed, so that the reads overlap them. Intel Xeon guest, a 256 MiB log after a lap:
    /// a batch of 16 x 64 B with non-temporal stores took 570-620 ns with no prefetch, 435-450
    /// with the last line's; with cached stores and CLWB, every line's against the last line's
    /// (medians of two runs): 1 KiB 462 -> 384 ns, the batch 639 -> 556 ns. Skipped while other
    /// appends are in flight: the lines may be theirs, being written, and pulling them away
    /// would slow them down.
    #[inline]
    pub(crate) fn prefetch_end(&self, total: usize, nt: bool) {
        if cfg!(loom) {
            return; // a hint only: not a step for the model to explore
        }
        let st = State::unpack(self.resv.load_torn());
        let published = self.published.load(Ordering::Relaxed);
        if st.ticket.wrapping_sub(published) & TICKET_MASK == 0 {
            if !nt && total <= PREFETCH_MAX {
                self.prefetch_lines(st.tail, st.tail + total + ENTRY_ALIGN);
            } else {
                self.pmem.media().prefetch(st.tail + total);
            }
        }
    }

    /// msync mode: asks the CPU for the lines after reservation `r`, as many bytes as `r` holds
    /// but at most [`PREFETCH_MAX`], where the next append of the same size will store, so that
    /// their reads run while this append waits for its `msync`. Only for appends of cached
    /// stores (a line stored non-temporally is better not cached) and only if no append was
    /// reserved after `r` (its lines are being written). Measured on /dev/shm, a 256 MiB log
    /// after a lap, this and [`Log::prefetch_end`]'s every line against the last line's only
    /// (Intel Xeon guest, medians of two runs): a batch of 16 x 64 B 540 -> 332 ns, 1 KiB
    /// 368 -> 224 ns, 4 KiB 793 -> 512 ns (an entry over 4 KiB: this prefetch alone), 256 B
    /// 242 -> 221 ns. Not in CPU mode, where the wait for a barrier is shorter than the reads:
    /// there it slowed two threads appending 64 B each, with cached stores as calibrated here
    /// (266-296 -> 299-301 ns per append in aggregate).
    #[inline]
    fn prefetch_next(&self, r: &Resv) {
        if cfg!(loom) {
            return; // a hint only
        }
        let st = State::unpack(self.resv.load_torn());
        if st.ticket.wrapping_sub(r.ticket + 1) & TICKET_MASK != 0 {
            return;
        }
        let end = r.claim.start() + r.claim.len();
        self.prefetch_lines(end, end + r.claim.len().min(PREFETCH_MAX));
    }

    /// Prefetches every cache line holding a byte of `[from, to)`.
    #[inline]
    fn prefetch_lines(&self, from: usize, to: usize) {
        let mut at = from & !(persist::CACHE_LINE - 1);
        while at < to {
            self.pmem.media().prefetch(at);
            at += persist::CACHE_LINE;
        }
    }

    /// Where the next appends can go, as appends place them: see
    /// [`Room`](crate::Room).
    pub fn room(&self) -> crate::Room {
        let tail = State::unpack(self.resv.load_torn()).tail;
        // (As `reserve`: the oldest position in use, loaded after the state.)
        self.room_at(tail, self.pins.limit())
    }

    /// The room of appends when the tail is at `tail` and the oldest position in use at
    /// `head`. The live entries always stay at least 8 bytes short of the head, so that a
    /// tail equal to the head means an empty log.
    fn room_at(&self, tail: usize, head: usize) -> crate::Room {
        let cap = self.sb.capacity as usize;
        let (at_tail, after_wrap) = if tail >= head {
            (cap - tail, head.saturating_sub(DATA_OFFSET + ENTRY_ALIGN))
        } else {
            (head.saturating_sub(tail + ENTRY_ALIGN), 0)
        };
        crate::Room {
            at_tail: at_tail as u64,
            after_wrap: after_wrap as u64,
        }
    }

    /// Where an append of `total` bytes goes when the tail is at `tail`: at the tail, or at
    /// the start of the data area when it does not fit before the end of the file (the wrap
    /// rule: an append never straddles the end), as [`Log::room_at`] counts the room.
    fn place(&self, tail: usize, head: usize, total: usize) -> Result<usize> {
        let room = self.room_at(tail, head);
        let total = total as u64;
        if total <= room.at_tail {
            return Ok(tail);
        }
        if total <= room.after_wrap {
            return Ok(DATA_OFFSET);
        }
        Err(Error::Full {
            path: self.name.clone(),
            needed: total,
            available: room.at_tail.max(room.after_wrap),
            pinned: self
                .pins
                .limit_pin()
                .filter(|&l| self.pins.limit() == head && l < self.first()),
        })
    }

    /// The first overlap of the session: record it in the slot before a second reservation
    /// can exist, so that recovery allows for several appends in flight.
    #[cold]
    fn record_concurrent(&self) -> Result<()> {
        let mut w = self.lock_writer();
        if w.slot.flags & SLOT_CONCURRENT == 0 {
            let slot = Slot {
                seq: w.slot.seq + 1,
                flags: SLOT_CONCURRENT,
                ..w.slot
            };
            self.write_slot(&mut w, slot)?;
        }
        let mut cur = self.resv.load_torn();
        while let Err(now) = self
            .resv
            .compare_exchange(cur, cur | State::flag_bits(CONCURRENT))
        {
            cur = now;
        }
        Ok(())
    }

    /// Steps 2 and 3 after the stores: make the reservation durable, publish in ticket order,
    /// and wait until every earlier ticket is published too.
    pub(crate) fn complete(&self, r: &Resv, nt: bool) -> Result<()> {
        let cpu = self.pmem.media().persistence().is_cpu_flush();
        #[cfg(feature = "mutants")]
        if crate::mutants::is(crate::mutants::Mutant::PublishBeforeFence) {
            self.ring[r.ticket as usize % MAX_INFLIGHT]
                .ready
                .store(r.ticket + 1, Ordering::Release);
        }
        if cpu {
            self.barrier(&r.claim, nt, r.marker)
                .inspect_err(|e| self.poison(e))?;
        } else if nt {
            // msync mode: non-temporal stores reach memory, where the sync reads them, only
            // through a fence; another thread may lead the sync once the ticket is ready.
            #[cfg(feature = "mutants")]
            let fence = !crate::mutants::is(crate::mutants::Mutant::MsyncNtNoFence);
            #[cfg(not(feature = "mutants"))]
            let fence = true;
            if fence {
                self.pmem.media().fence_stores();
            }
        }
        let slot = &self.ring[r.ticket as usize % MAX_INFLIGHT];
        slot.ready
            .store(r.ticket + 1, sync::ordering!(Release, ReadyRelaxed));
        // From here on this thread may be the one that must publish its ticket and the ready
        // ones after it: nothing on this path is meant to panic, and if something did, the
        // guard poisons the log, so that later appends fail with `Error::Poisoned` instead of
        // waiting forever for a publication that will not come.
        let guard = PanicPoisons(self);
        #[cfg(feature = "mutants")]
        if crate::mutants::take_panic_after_ready() {
            panic!("mutant: appender panics after marking its ticket ready");
        }
        if cpu {
            self.wait_published(r.ticket, true)?;
        } else {
            if !nt {
                self.prefetch_next(r);
            }
            self.group_sync(r.ticket)?;
            self.wait_published(r.ticket, false)?;
        }
        std::mem::forget(guard);
        Ok(())
    }

    /// True if ticket `t` is ready to be published.
    #[inline]
    pub(crate) fn is_ready(&self, t: u64) -> bool {
        self.ring[t as usize % MAX_INFLIGHT]
            .ready
            .load(Ordering::Acquire)
            == t + 1
    }

    /// Where the entries of ticket `t` (in flight, marked ready) lie: `[start, end)`.
    #[inline]
    pub(crate) fn ticket_span(&self, t: u64) -> (usize, usize) {
        let slot = &self.ring[t as usize % MAX_INFLIGHT];
        (
            slot.start.load(Ordering::Relaxed) as usize,
            slot.end.load(Ordering::Relaxed) as usize,
        )
    }

    /// Publishes tickets from `t` on: every ticket before `t` is published, and this thread is
    /// the publisher. Goes on while tickets are ready (CPU mode) or up to `upto` (msync mode:
    /// what the group commit synced).
    pub(crate) fn publish_run(&self, t: u64, upto: Option<u64>) {
        let mut next_ticket = t;
        let mut wrap = None;
        let (tail, last) = loop {
            let slot = &self.ring[next_ticket as usize % MAX_INFLIGHT];
            let start = slot.start.load(Ordering::Relaxed) as usize;
            let end = slot.end.load(Ordering::Relaxed) as usize;
            let wrap_at = slot.wrap_at.load(Ordering::Relaxed);
            let first = slot.first_lsn.load(Ordering::Relaxed);
            if slot.has_anchors.load(Ordering::Relaxed) {
                let anchors = slot.anchors.lock();
                let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
                if index.anchors.is_empty() {
                    index.base = first.next_multiple_of(INDEX_STRIDE);
                }
                index.anchors.extend_from_slice(&anchors);
            }
            if let Some(every) = self.hint_every {
                let since = self.since_hint.load(Ordering::Relaxed) + (end - start) as u64;
                // Only while not wrapped: a hint at or after the head keeps the wrap point
                // findable by the scan from the hint.
                if since >= every && start >= self.pmem.head() {
                    self.write_hint(start, first);
                    self.since_hint.store(0, Ordering::Relaxed);
                } else {
                    self.since_hint.store(since, Ordering::Relaxed);
                }
            }
            if wrap_at != NO_WRAP {
                wrap = Some(wrap_at as usize);
            }
            let last = slot.next_lsn.load(Ordering::Relaxed) - 1;
            next_ticket += 1;
            let more = match upto {
                Some(u) => next_ticket < u,
                None => self.is_ready(next_ticket),
            };
            if !more {
                break (end, last);
            }
        };
        // SAFETY: every ticket up to `next_ticket` is ready (CPU mode: each appender fenced
        // before marking its slot; msync mode: the group commit synced them) and in order
        // after the published ones, so every byte up to `tail` is durable and no appender
        // stores into it any more; this thread is the only publisher until it stores
        // `published` below.
        unsafe { self.pmem.publish(tail, wrap) };
        #[cfg(feature = "mutants")]
        crate::mutants::BETWEEN_TAIL_AND_LSN.here();
        // The tail first, then the LSN: a reader that sees an LSN finds its entry live.
        self.last_lsn
            .store(last, sync::ordering!(Release, LastLsnRelaxed));
        if !self.holding_words.load(Ordering::Relaxed) {
            self.pmem.media().publish_for_readers(last + 1);
        }
        self.published
            .store(next_ticket, sync::ordering!(Release, PublishedRelaxed));
        // Against a sleeper that registers in `waiters` and then reads `published`: one of the
        // two sees the other, so no wake-up is lost.
        persist::light_fence();
        if self.waiters.load(Ordering::Relaxed) > 0 {
            let _g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
    }

    /// Writes a tail hint: the entry at `offset` with LSN `lsn` is durable and in order after
    /// the published ones.
    fn write_hint(&self, offset: usize, lsn: Lsn) {
        let mut w = self.lock_writer();
        let slot = Slot {
            seq: w.slot.seq + 1,
            hint_offset: offset as u64,
            hint_lsn: lsn,
            ..w.slot
        };
        // A failed hint is recorded by the media (msync mode: every later barrier fails, and
        // the published LSN in the reader area drops), not reported here: the appends whose
        // barriers succeeded before it are acknowledged.
        let _ = self.write_slot(&mut w, slot);
    }

    /// Waits until `ticket` is published: a short spin first, then the condition variable.
    /// With `turn` (CPU mode), publishes it (and the ready tickets after it) when `published`
    /// says that its turn came and the publisher before left it to its own appender.
    fn wait_published(&self, ticket: u64, turn: bool) -> Result<()> {
        // The predecessors are a copy and a fence away: spin a few microseconds (a sleep and a
        // wake-up cost more), then yield — with more appenders than cores, the one we wait
        // for may need this core — and only then sleep.
        for i in 0..WAIT_ROUNDS {
            let p = self.published.load(Ordering::Acquire);
            if p > ticket {
                return Ok(());
            }
            if self.poisoned.load(Ordering::Acquire) {
                // (Before publishing its own ticket too: an appender whose reservation raced
                // with a truncation that poisoned the log is not acknowledged.)
                return Err(self.poison_error());
            }
            if turn && p == ticket {
                self.publish_run(ticket, None);
                return Ok(());
            }
            if i < WAIT_SPINS {
                sync::spin_loop();
            } else {
                sync::yield_now();
            }
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        persist::heavy_fence();
        let mut g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let p = self.published.load(Ordering::Acquire);
            if p > ticket {
                break;
            }
            if self.poisoned.load(Ordering::SeqCst) {
                drop(g);
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                return Err(self.poison_error());
            }
            if turn && p == ticket {
                // Publishing takes locks of its own; never under the wake lock.
                drop(g);
                self.waiters.fetch_sub(1, Ordering::SeqCst);
                self.publish_run(ticket, None);
                return Ok(());
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

    /// A failed barrier leaves durability unknown: nothing after it is published, and every
    /// waiting or later append fails.
    pub(crate) fn poison(&self, e: &Error) {
        self.poison_with(format!("a barrier failed: {e}"));
    }

    /// Makes every waiting and later append fail with [`Error::Poisoned`] naming `cause`.
    pub(crate) fn poison_with(&self, cause: String) {
        let mut w = self.lock_writer();
        self.poison_locked(&mut w, cause);
        drop(w);
        self.group.ring_all();
        let _g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// [`Log::poison_with`] under the writer's lock, which the caller holds; the caller
    /// wakes the sleepers (`wake`) after it lets the lock go.
    pub(crate) fn poison_locked(&self, w: &mut Writer, cause: String) {
        if w.poisoned.is_none() {
            tracing::error!(path = %self.name.display(), %cause, "daxlog: the log refuses further appends");
            w.poisoned = Some(PoisonCause(cause));
        }
        self.poisoned.store(true, Ordering::SeqCst);
    }

    #[cold]
    pub(crate) fn poison_error(&self) -> Error {
        let w = self.lock_writer();
        let cause = w.poisoned.as_ref().map_or("", |c| c.0.as_str());
        Error::Poisoned {
            path: self.name.clone(),
            cause: cause.to_string(),
        }
    }

    /// Prefaults the pages the appends from `pos` will touch, 2 MiB at a time and each chunk
    /// once per mapping: after a wrap the pages are mapped already, and populating them again
    /// would cost as much as the first time.
    ///
    /// On media that write ahead ([`Media::writes_ahead`]: a new log on ext4 or xfs), a chunk
    /// is written ahead as it is prepared, whatever the size of the append. (Large appends
    /// would convert their blocks at once by themselves, and write them twice here; but a
    /// chunk not written ahead is not checked, and a chunk that an earlier write-ahead failed
    /// to record must not take appends.) Where the first chunk of a group of [`AHEAD_GROUP`]
    /// chunks (past the first group) had unwritten blocks to write, the whole group is
    /// written ahead with it; a log whose blocks are written (prefilled, or past its first
    /// lap) writes nothing ahead and prepares one chunk ahead. Each chunk written ahead is
    /// marked in `ahead_pending` until [`Log::check_ahead`] has seen it reach the file; the
    /// mark is set before the chunk's bit in `populated`, both under `ahead_lock`.
    #[inline]
    pub(crate) fn prepare(&self, pos: usize, need: usize) {
        let cap = self.sb.capacity as usize;
        let first = pos / PREPARE_CHUNK;
        let max = (cap - 1) / PREPARE_CHUNK;
        let mut last = ((pos + need + PREPARE_CHUNK).min(cap) - 1) / PREPARE_CHUNK;
        for c in first..=max {
            if c > last {
                break;
            }
            let (word, bit) = (c / 64, 1u64 << (c % 64));
            if self.populated[word].load(Ordering::Acquire) & bit != 0 {
                continue;
            }
            let from = c * PREPARE_CHUNK;
            let len = PREPARE_CHUNK.min(cap - from);
            let media = self.pmem.media();
            if !self.writes_ahead() {
                if self.populated[word].fetch_or(bit, Ordering::Release) & bit == 0 {
                    media.prepare(from, len);
                }
                continue;
            }
            let _one = self.ahead_lock.lock();
            if self.populated[word].load(Ordering::Acquire) & bit == 0 {
                self.ahead_pending[word].fetch_or(bit, Ordering::Relaxed);
                self.populated[word].fetch_or(bit, Ordering::Release);
                if !media.write_ahead(from, len) {
                    self.ahead_pending[word].fetch_and(!bit, Ordering::Relaxed);
                } else if c > 0 && c.is_multiple_of(AHEAD_GROUP) {
                    // The first chunk of a group, and its blocks were unwritten (a new log's
                    // first lap): write the whole group ahead.
                    last = last.max((c + AHEAD_GROUP - 1).min(max));
                }
                media.prepare(from, len);
            }
        }
    }

    /// Before an append stores into `[start, end)`: every chunk there written ahead has
    /// reached the file ([`Media::verify_ahead`]). If one has not, the log is poisoned (an
    /// append stored there could be lost: a file system that failed to record a write may
    /// go on taking later writes to those blocks without recording them either).
    #[inline]
    pub(crate) fn check_ahead(&self, start: usize, end: usize) -> Result<()> {
        if !self.writes_ahead() || end <= start {
            return Ok(());
        }
        for c in start / PREPARE_CHUNK..=(end - 1) / PREPARE_CHUNK {
            let (word, bit) = (c / 64, 1u64 << (c % 64));
            // (After `prepare`: the chunk's bit in `populated` is set, and was read with
            // Acquire, so a pending mark set before it is seen here.)
            if self.ahead_pending[word].load(Ordering::Acquire) & bit == 0 {
                continue;
            }
            let one = self.ahead_lock.lock();
            if self.ahead_pending[word].load(Ordering::Acquire) & bit == 0 {
                continue;
            }
            // (A check that failed while this thread waited for the lock poisoned the log:
            // no second try, whose write-back could pass once the first took the error.)
            if self.poisoned.load(Ordering::Acquire) {
                return Err(self.poison_error());
            }
            let from = c * PREPARE_CHUNK;
            let len = PREPARE_CHUNK.min(self.sb.capacity as usize - from);
            match self.pmem.media().verify_ahead(from, len) {
                Ok(()) => {
                    self.ahead_pending[word].fetch_and(!bit, Ordering::Release);
                }
                Err(e) => {
                    drop(one);
                    self.poison_with(format!(
                        "the blocks written ahead of the tail at bytes {from}..{} did not \
                         reach the file: {e}",
                        from + len
                    ));
                    return Err(self.poison_error());
                }
            }
        }
        Ok(())
    }
}

/// Spins a little, then yields.
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 200 {
        sync::spin_loop();
    } else {
        sync::yield_now();
    }
}

/// Poisons the log if dropped while its thread unwinds from a panic (see [`Log::complete`]);
/// forgotten on the normal path.
struct PanicPoisons<'a, M: Media>(&'a Log<M>);

impl<M: Media> Drop for PanicPoisons<'_, M> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison_with(
                "an appender panicked after its entries were stored; publication stopped".into(),
            );
        }
    }
}
