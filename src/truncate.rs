//! Space reuse: dropping entries from the head (after a checkpoint), dropping everything, and
//! deleting a suffix (consensus logs).
//!
//! Each operation is one update of the metadata slot (one barrier); see FORMAT.md, "Truncation".
//! They take `&self` and run beside appenders, readers and followers: entries are lent to
//! readers as slices into the mapping under a pin (`pins.rs`), and appenders reuse freed space
//! only once no pin can still see it; a suffix truncation waits until no pin is held.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::{Slot, DATA_OFFSET, ENTRY_ALIGN, PUBLISHED_OFFSET, SLOT_LEN};
use crate::iter::View;
use crate::log::{Log, Writer};
use crate::media::Media;
use crate::pins::{PinState, Pos};
use crate::recover::new_epoch;
use crate::tickets::State;
use crate::Lsn;

/// A reset that moves the tail to the start of the data area: the old tail, and the state of
/// the reservations, which wait meanwhile.
#[derive(Clone, Copy)]
struct Forced {
    tail: usize,
    was: State,
}

/// True if the model-checking build armed the mutant that makes `reset` ignore the pins.
#[inline]
fn ignores_pins() -> bool {
    #[cfg(loom)]
    return crate::sync::mutants::active(crate::sync::mutants::Mutant::ResetIgnoresPins);
    #[cfg(not(loom))]
    false
}

impl<M: Media> Log<M> {
    /// Durably discards every entry with an LSN below `lsn`; their space is reused when the
    /// log wraps around the end of the file. LSNs are never reused: the next append still gets
    /// [`Log::next_lsn`].
    ///
    /// `lsn` may be anything from the first LSN to [`Log::next_lsn`] (which discards every
    /// durable entry); an `lsn` at or below the first LSN changes nothing, except that on an
    /// empty log [`Log::next_lsn`] makes its free space one piece again from the start of the
    /// data area if it is not (an emptying truncation with a reader pinning the entries
    /// leaves the head where they ended). Costs one barrier.
    ///
    /// Safe to call while other threads append, read and follow: appends go on meanwhile
    /// (they wait for nothing but, at most, the slot update's lock when they write a tail
    /// hint), and the truncation waits for no append. Discarding every entry while no append
    /// is in flight is the exception: appends wait for its slot update (one barrier) while it
    /// moves the tail back to the start of the data area, so that the free space is one
    /// piece. Entries a reader still holds through a
    /// [`crate::Guard`] keep their bytes until the guard is dropped (see there); a
    /// [`crate::Follower`] that had not read them yet reports [`Error::Truncated`].
    ///
    /// Fails with [`Error::Poisoned`] once a barrier of the log has failed (as appends do). If
    /// its own barrier fails, the error is returned, the entries stay in memory, and the log
    /// refuses further appends: the media may hold the truncation or not (reopen the log to
    /// learn which).
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// for op in [&b"mkdir /a"[..], b"create /a/f", b"checkpoint 1"] { log.append(op)?; }
    /// // The state up to LSN 3 is saved elsewhere: the journal keeps only what follows.
    /// log.truncate_before(4)?;
    /// assert_eq!(log.first_lsn(), None);
    /// assert_eq!(log.append(b"unlink /a/f")?, 4);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn truncate_before(&self, lsn: Lsn) -> Result<()> {
        self.truncate_prefix(Some(lsn))
    }

    /// `truncate_before(lsn)`, or of the next LSN as of the truncations' lock (`None`).
    fn truncate_prefix(&self, lsn: Option<Lsn>) -> Result<()> {
        self.check_writable()?;
        let _one = self.truncating.lock();
        // A failed barrier left what the media hold unknown: nothing more is written (reopen
        // the log to learn what they hold).
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        let next = self.next_lsn();
        let lsn = lsn.unwrap_or(next);
        let first = self.first();
        if lsn > next {
            return Err(self.out_of_range(lsn, first, next));
        }
        // Every entry goes (or none was left): move the tail back to the start of the data
        // area if nothing stands in the way, so that the data area is free in one piece.
        if lsn == next {
            if let Some(f) = self.rewind_empty(next) {
                if let Some(r) = self.forced_wrap(lsn, next, f) {
                    return r;
                }
            }
        }
        if lsn <= first {
            return Ok(());
        }
        let head = self.position_of(lsn);
        self.move_head(lsn, next, head, None)
    }

    /// Ends a forced wrap (reservations wait, see [`Log::rewind_empty`]): the slot update and
    /// the move of the head to the start of the data area, with the pin table locked and only
    /// if no pin is held: a reader that pinned the entries since they were found unpinned would
    /// see them vanish (its view would end where it starts), and appenders would write over
    /// them. `None` if a pin is held (reservations go on where they were).
    fn forced_wrap(&self, lsn: Lsn, next: Lsn, f: Forced) -> Option<Result<()>> {
        let Forced { tail, was } = f;
        let done = self.pins.with(|s| {
            if s.held() > 0 && !ignores_pins() {
                return None;
            }
            let r = self.write_head_slot(lsn, next, DATA_OFFSET);
            if r.is_ok() {
                self.set_head(s, lsn, DATA_OFFSET, Some(f));
            }
            Some(r)
        });
        // Reservations resume: at the start of the data area, or (if the slot update failed,
        // which poisoned the log and leaves them blocked, or a reader pinned the entries)
        // where they were.
        let to = match done {
            Some(Ok(())) => {
                State::new(DATA_OFFSET, was.next_lsn, false).with_ticket(was.ticket, was.flags)
            }
            _ => State { tail, ..was },
        };
        self.unblock_reservations(was, Some(to));
        if let Some(Ok(())) = done {
            self.after_head_moved(lsn, DATA_OFFSET);
        }
        done
    }

    fn move_head(&self, lsn: Lsn, next: Lsn, head: usize, forced: Option<Forced>) -> Result<()> {
        self.write_head_slot(lsn, next, head)?;
        // Durable: readers that pin from now on start at the new head, and appenders may reuse
        // what is before it once no pin holds it.
        self.pins.with(|s| self.set_head(s, lsn, head, forced));
        self.after_head_moved(lsn, head);
        Ok(())
    }

    /// Writes the slot of a prefix truncation to `lsn`, with the head at `head`.
    fn write_head_slot(&self, lsn: Lsn, next: Lsn, head: usize) -> Result<()> {
        let mut w = self.writer.lock();
        let hint_kept = w.slot.hint_lsn >= lsn && lsn != next;
        // Published entries that end exactly at the end of the file put an empty log's head
        // there; the next entry goes to the start of the data area (a wrap), which is where the
        // slot says the head is (a slot cannot name the end of the file). In memory the head
        // stays at the end, where appenders wrap from.
        let head_on_media = if head == self.sb.capacity as usize {
            DATA_OFFSET
        } else {
            head
        };
        let slot = Slot {
            seq: w.slot.seq + 1,
            head_offset: head_on_media as u64,
            head_lsn: lsn,
            cut_lsn: w.slot.cut_lsn.max(lsn),
            hint_offset: if hint_kept { w.slot.hint_offset } else { 0 },
            hint_lsn: if hint_kept { w.slot.hint_lsn } else { 0 },
            ..w.slot
        };
        // If the barrier fails, the new slot may still reach media: after a forced wrap, whose
        // tail did not move, a crash would then lose the appends made from now on. As after
        // any failed barrier, the log refuses further appends (and a forced wrap's
        // reservations stay blocked: `Log::unblock_reservations`).
        let r = self.write_slot(&mut w, slot);
        drop(w);
        if let Err(e) = &r {
            self.poison(e);
        }
        r
    }

    /// Moves the head in memory (the slot saying so is durable), with the pin table locked.
    fn set_head(&self, s: &mut PinState, lsn: Lsn, head: usize, forced: Option<Forced>) {
        s.head = Pos { lsn, offset: head };
        self.first_lsn.store(lsn, Ordering::Release);
        self.pmem.set_head(head);
        if let Some(f) = forced {
            self.pmem.end_forced_wrap(f.tail);
        }
    }

    fn after_head_moved(&self, lsn: Lsn, head: usize) {
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drop_before(lsn);
        tracing::debug!(lsn, head, "daxlog: truncated head");
    }

    /// Where entry `lsn` is (a published one), or will be (`lsn` is the next LSN: where the
    /// published entries end).
    fn position_of(&self, lsn: Lsn) -> usize {
        // (The truncations' lock is held, and the entry may lie after what a waiting suffix
        // truncation keeps: that one deletes nothing until it has the lock.)
        let guard = self.pin_reaching(crate::pins::Reach::All);
        let view = guard.view();
        let (pos, at) = self.seek(&view, lsn);
        debug_assert_eq!(at, lsn, "a published LSN lies in the view");
        pos
    }

    /// Discarding every entry while no append is in flight and the live entries do not wrap:
    /// stops reservations (they wait for the slot update, one barrier), so that the tail can
    /// move back to the start of the data area (as if the next append wrapped) and the whole
    /// data area is free in one piece. `None` if that is not possible now (then the head goes
    /// where the published entries end).
    ///
    /// The tail must be at or after the limit (the entries up to it do not wrap), and no pin
    /// may hold the limit. (Moving the tail at once, before the slot update, would let appends
    /// go on meanwhile, but only into the bytes before the old head: on a log whose entries
    /// lay far from the start of the data area, they would fail with `Full` until the head
    /// moved.)
    fn rewind_empty(&self, next: Lsn) -> Option<Forced> {
        let cur = self.resv.load_torn();
        let st = State::unpack(cur);
        let published = self.published.load(Ordering::Acquire);
        let limit = self.pins.limit();
        let quiet = st.ticket == published & crate::tickets::TICKET_MASK && st.next_lsn == next;
        if !quiet || st.tail < limit || st.tail == DATA_OFFSET {
            return None;
        }
        if self.pins.limit_pin().is_some() && !ignores_pins() {
            return None;
        }
        self.resv.compare_exchange(cur, st.blocked().pack()).ok()?;
        Some(Forced {
            tail: st.tail,
            was: st,
        })
    }

    /// Durably discards every entry (libpmemlog's `rewind`). LSNs continue where they were.
    /// Like [`Log::truncate_before`] of [`Log::next_lsn`] as of the moment it holds the
    /// truncations' lock (after any truncation in progress), and as safe to call while other
    /// threads append: entries that become durable after that moment stay. Fails with
    /// [`Error::Poisoned`] on a poisoned log, as `truncate_before` does.
    pub fn reset(&self) -> Result<()> {
        // (The next LSN as of the truncations' lock: a suffix truncation may lower it before.)
        self.truncate_prefix(None)
    }

    /// Durably deletes every entry with an LSN above `lsn` (a consensus log's conflicting
    /// suffix); the next append gets `lsn + 1`. After a crash the deleted entries never come
    /// back, although their bytes stay on media with valid checksums: they carry the epoch of
    /// an earlier session (FORMAT.md, "Epochs").
    ///
    /// `lsn` may be anything from `first - 1` (deletes every entry) to the last LSN (changes
    /// nothing, if no append is in flight: the last LSN read before the call is not the last
    /// once appends in flight complete, and those are deleted, see below). Costs two barriers:
    /// the slot update, then the destruction of the first deleted entry's header.
    ///
    /// If a barrier fails, the error is returned. If it is the first (the lowered published
    /// LSN, which deletes nothing), nothing changed, and appends go on (readers in other
    /// processes may report a [`Error::Rewound`] that deleted nothing, and read the same
    /// entries again; in msync mode an `msync` error is sticky, FORMAT.md 6a, so the next
    /// append fails and poisons the log). A barrier after the first may already have made the
    /// deletion durable: the log refuses further appends ([`Error::Poisoned`]), and the
    /// entries after `lsn` are gone in memory too (reopen the log to learn what the media
    /// hold).
    ///
    /// With other threads appending: the truncation first stops new reservations and waits
    /// for the appends in flight to complete (they are durable and acknowledged, and get their
    /// LSNs, which the range check then sees: entries above `lsn` among them are deleted,
    /// after their appends returned them, and their LSNs are handed out again), then deletes,
    /// then lets appends go on: an
    /// append that was waiting gets `lsn + 1` and on, so LSNs stay gap-free. Before that it
    /// waits until the [`crate::Guard`]s taken before the call are dropped (a guard may lend
    /// entries of the suffix). Guards taken while it waits never wait: they see the entries up
    /// to `lsn` and none after them (until dropped), so it does not wait for them, and readers
    /// that keep a guard held at all times (each taken before the last one goes) cannot hold
    /// it off. Called by a thread that holds a guard (or a live [`Log::iter`] iterator, which
    /// holds one), it fails with [`Error::GuardHeld`] and deletes nothing, instead of waiting
    /// for itself.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// for e in [&b"term 1: a"[..], b"term 1: b", b"term 1: c"] { log.append(e)?; }
    /// log.truncate_after(1)?; // the leader of term 2 disagrees from index 2 on
    /// assert_eq!(log.append(b"term 2: b")?, 2);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn truncate_after(&self, lsn: Lsn) -> Result<()> {
        self.check_writable()?;
        // Refused before the wait for guards, during which guards taken see no entry after
        // `lsn`: a truncation that would fail anyway must not hide entries meanwhile. (The
        // first LSN only grows: a value below it now stays below it. The checks are made again
        // once reservations are blocked.)
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error());
        }
        let first = self.first();
        if lsn.saturating_add(1) < first {
            return Err(self.out_of_range(lsn, first, self.next_lsn()));
        }
        // Once no guard that may read an entry after `lsn` is held (guards taken from now on
        // read none), with the pin table locked: the truncations' lock, if no other
        // truncation runs (else again after a pause: it may need the pin table). Not the
        // other way round: a thread that holds a guard and calls `truncate_before` would wait
        // for the lock this truncation held while it waited for that guard.
        self.pins
            .exclusive(lsn, |_| {
                let _one = self.truncating.try_lock()?;
                let blocked = match self.block_reservations() {
                    Ok(b) => b,
                    Err(e) => return Some(Err(e)),
                };
                let r = self.truncate_after_blocked(lsn, blocked);
                if r.is_err() {
                    self.unblock_reservations(blocked, None);
                }
                Some(r)
            })
            .unwrap_or_else(|| {
                Err(Error::GuardHeld {
                    path: self.name.clone(),
                })
            })
    }

    /// Stops new reservations once none is in flight; returns the state to restore. Fails
    /// with [`Error::Poisoned`] on a poisoned log, whose appends in flight never complete.
    fn block_reservations(&self) -> Result<State> {
        let mut spins = 0u32;
        loop {
            if self.poisoned.load(Ordering::Acquire) {
                return Err(self.poison_error());
            }
            self.pmem.media().sync_point();
            let cur = self.resv.load_torn();
            let st = State::unpack(cur);
            let published = self.published.load(Ordering::Acquire);
            if st.ticket != published & crate::tickets::TICKET_MASK {
                // Appends in flight: they complete without us.
                crate::reserve::backoff(&mut spins);
                continue;
            }
            // A full ring to every reserver: they wait until the state changes.
            if self.resv.compare_exchange(cur, st.blocked().pack()).is_ok() {
                return Ok(st);
            }
        }
    }

    /// Lets reservations go on: from `to` (tail and next LSN), or from where they were. On a
    /// poisoned log they stay blocked (every reserver fails with [`Error::Poisoned`] at its
    /// next look): giving them back the state they had would let an appender that loaded it
    /// before the block, and found the log unpoisoned, succeed with its compare-and-swap (the
    /// state is the same value again) and be acknowledged after a slot update that may be on
    /// media; after a crash its entry would lie before the head a failed reset moved, or
    /// carry the epoch a failed suffix truncation replaced.
    fn unblock_reservations(&self, was: State, to: Option<State>) {
        // (Only a truncation's own failed barrier poisons the log while reservations are
        // blocked: no append is in flight.)
        if !self.poisoned.load(Ordering::Acquire) {
            let mut cur = self.resv.load_torn();
            loop {
                let now = State::unpack(cur);
                let new = match to {
                    Some(t) => t,
                    None => State {
                        ticket: was.ticket,
                        flags: now.flags & !crate::tickets::BLOCKED,
                        ..now
                    },
                };
                match self.resv.compare_exchange(cur, new.pack()) {
                    Ok(_) => break,
                    Err(v) => cur = v,
                }
            }
        }
        // msync mode: blocked reservers sleep until a sync ends (or see the poison).
        if !self.pmem.media().persistence().is_cpu_flush() {
            self.wake_reservers();
        }
    }

    fn out_of_range(&self, lsn: Lsn, first: Lsn, next: Lsn) -> Error {
        Error::LsnOutOfRange {
            path: self.name.clone(),
            lsn,
            first,
            next,
        }
    }

    fn truncate_after_blocked(&self, lsn: Lsn, was: State) -> Result<()> {
        let next = self.next_lsn();
        let first = self.first();
        if lsn >= next || lsn + 1 < first {
            return Err(self.out_of_range(lsn, first, next));
        }
        if lsn + 1 == next {
            self.unblock_reservations(was, None);
            return Ok(()); // nothing to delete
        }
        let live = self.pmem.live();
        // No append is in flight or can start, and no truncation runs: nothing stores into the
        // data area while this view lives. (Pins taken while this truncation waited may be
        // held; they read nothing after `lsn`.)
        let view = View::exclusive(live, first);
        // The new tail: just past entry `lsn`, or the head if every entry goes.
        let tail = if lsn < first {
            live.head
        } else {
            let (pos, _) = self.seek(&view, lsn);
            let (_, after) = self
                .entry_at(&view, pos, lsn)
                .expect("a live LSN has a live entry");
            // `entry_at` steps over the wrap; the tail stays where the entry ends.
            if live.wrapped() && after == DATA_OFFSET && pos >= live.head {
                live.wrap_at
            } else {
                after
            }
        };
        // Readers in other processes first: nothing from `lsn + 1` on is published any more,
        // and those entries are deleted. Both before the slot, so that a reader that sees the
        // new slot knows why, and none takes a deleted entry for an unreadable one.
        let published = next;
        self.pmem.media().publish_for_readers(lsn + 1);
        self.pmem.media().record_deletion(lsn + 1);
        // The lowered published LSN durable before the slot too: it is not kept in order with
        // the log otherwise, and after a power failure a reader that opens the log while no
        // writer has (none republishes) would take the deleted entries for published ones,
        // and the first of them, gone, for damage. (Written back with the metadata page's
        // other lines; a published LSN only ever rises otherwise, over durable entries, but
        // after a failed sync; a writable open whose log ends below it lowers it durably too, or
        // pads up to it.)
        #[cfg(feature = "mutants")]
        let lower = !crate::mutants::is(crate::mutants::Mutant::SuffixPublishedNotFlushed);
        #[cfg(not(feature = "mutants"))]
        let lower = true;
        if lower {
            self.pmem
                .flush(PUBLISHED_OFFSET, crate::format::READER_WORDS_LEN);
        }
        if let Err(e) = self.pmem.drain() {
            // Nothing was deleted: publish the entries again (in msync mode the media keeps
            // the lower value after a failure: `MmapMedia::record_failure`).
            self.pmem.media().publish_for_readers(published);
            return Err(Error::io(&self.name, "drain", e));
        }
        let mut w = self.writer.lock();
        let slot = Slot {
            seq: w.slot.seq + 1,
            cut_lsn: lsn + 1,
            epoch: new_epoch(Some(w.slot.epoch)),
            flags: 0,
            hint_offset: if w.slot.hint_lsn <= lsn {
                w.slot.hint_offset
            } else {
                0
            },
            hint_lsn: if w.slot.hint_lsn <= lsn {
                w.slot.hint_lsn
            } else {
                0
            },
            ..w.slot
        };
        // If the slot's barrier fails, the new slot may still have reached media (and it is
        // in the mapping, where readers in other processes look): the entries after `lsn` may
        // be deleted, and would be after a crash, together with every append made from now on
        // (their epoch is the old one). So the truncation goes on in memory (the entries stay
        // unpublished, and readers here stop before them too), without its second barrier,
        // and the log refuses further appends, as after any failed barrier (FORMAT.md).
        let slot_failed = self.write_slot(&mut w, slot).err();
        if let Some(e) = &slot_failed {
            w.slot = slot;
            // (Before reservations are unblocked, which then leaves them blocked: no append
            // may be acknowledged after this.)
            self.poison_locked(&mut w, format!("a barrier failed: {e}"));
        }
        // Cutting back into the first part of a wrapped log ends the wrap, unless a pin still
        // lies in its second part: the oldest position in use (the head, or a pin before it;
        // the pin table is locked) decides, so that a pin's view keeps its entries.
        let oldest = self.pins.limit();
        let wrap_at = if tail >= oldest { 0 } else { live.wrap_at };
        // SAFETY: no reader holds a slice of the deleted entries (the pins taken before the
        // truncation are gone, and those taken since read no entry after `lsn`), and no append
        // is in flight or can start until the reservations are unblocked below.
        unsafe { self.pmem.rewind(tail, wrap_at) };
        {
            let mut d = self.deletions.lock();
            if d.len() == crate::format::DELETION_RING {
                d.pop_front();
            }
            d.push_back(lsn + 1);
            self.deleted.fetch_add(1, Ordering::Release);
        }
        self.last_lsn.store(lsn, Ordering::Release);
        // Then, with a second barrier, destroy the header of the first deleted entry. The
        // epoch rule refuses it only while the cut stays where it is; a later suffix
        // truncation may move the cut past it, and if the entries that replace it go to the
        // start of the data area (a wrap), it would otherwise still lie on the scan's path.
        // Doing it after the slot update means a crash in between leaves the deleted entries
        // refused by their epoch, never a hole below the cut.
        let limit = if tail < live.head && live.wrapped() {
            live.head
        } else {
            self.sb.capacity as usize
        };
        #[cfg(feature = "mutants")]
        let limit = if crate::mutants::is(crate::mutants::Mutant::NoSuffixHeaderWipe) {
            0
        } else {
            limit
        };
        if tail + ENTRY_ALIGN <= limit && slot_failed.is_none() {
            // SAFETY: the bytes are outside the live entries now (the tail was moved back
            // above), and no reservation exists or can be made meanwhile.
            let claim = unsafe { self.pmem.claim_reserved(tail, tail + ENTRY_ALIGN) };
            self.pmem
                .store_claimed(&claim, tail, &[0u8; ENTRY_ALIGN], false);
            self.pmem.flush(tail, ENTRY_ALIGN);
            if let Err(e) = self.pmem.drain() {
                let e = Error::io(&self.name, "drain", e);
                // (Poisoning takes the writer's lock.)
                drop(w);
                self.poison(&e);
                return Err(e);
            }
        }
        self.epoch.store(w.slot.epoch, Ordering::Relaxed);
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .truncate_from(lsn + 1);
        // A new epoch without `SLOT_CONCURRENT`, and older bytes after the new tail. (Under
        // the writer's lock: recording `SLOT_CONCURRENT` sets the flag in the slot and the
        // state together.)
        self.unblock_reservations(
            was,
            Some(State::new(tail, lsn + 1, false).with_ticket(was.ticket, 0)),
        );
        drop(w);
        // Followers waiting for the next entry learn of the deletion now (they check the count
        // under this lock before they sleep).
        {
            let _g = self.wake_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        if let Some(e) = slot_failed {
            return Err(e);
        }
        tracing::debug!(lsn, tail, "daxlog: truncated suffix");
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly {
                path: self.name.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Writes `slot` into its place (the other copy than the current one) with one barrier,
    /// and makes it current.
    pub(crate) fn write_slot(&self, w: &mut Writer, slot: Slot) -> Result<()> {
        let off = Slot::offset_for(slot.seq);
        #[cfg(feature = "mutants")]
        let off = if crate::mutants::is(crate::mutants::Mutant::SlotSameCopy) {
            Slot::offset_for(slot.seq + 1)
        } else {
            off
        };
        self.pmem
            .store_meta(&mut w.token, off, &slot.encode(self.sb.salt));
        self.pmem.flush(off, SLOT_LEN);
        self.pmem
            .drain()
            .map_err(|e| Error::io(&self.name, "drain", e))?;
        w.slot = slot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, Log, Options};
    use std::time::Duration;

    /// The suffix truncations followers compare against are kept for the last
    /// [`crate::format::DELETION_RING`] only; a follower that missed more is rewound to the
    /// head it knew (every entry from there is suspect), one that missed fewer to the lowest
    /// deleted LSN.
    #[test]
    fn followers_compare_against_a_bounded_record_of_suffix_truncations() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::create(dir.path().join("d"), &Options::new().capacity(1 << 20)).unwrap();
        for i in 0..10u64 {
            log.append(&i.to_le_bytes()).unwrap();
        }
        let mut near = log.follow(1);
        let mut far = log.follow(1);
        for f in [&mut near, &mut far] {
            for lsn in 1..=10 {
                assert_eq!(f.next_timeout(Duration::ZERO).unwrap().unwrap().lsn, lsn);
            }
        }
        // `near` misses 3 truncations, `far` 1000.
        let mut round = 0u64;
        let mut cut = |log: &Log| {
            log.truncate_after(8).unwrap();
            log.append(&(100 + round).to_le_bytes()).unwrap();
            log.append(&(200 + round).to_le_bytes()).unwrap();
            round += 1;
        };
        for _ in 0..3 {
            cut(&log);
        }
        match near.next_timeout(Duration::ZERO) {
            Err(Error::Rewound { from, .. }) => assert_eq!(from, 9),
            r => panic!("expected Rewound, got {r:?}"),
        }
        for _ in 0..997 {
            cut(&log);
        }
        assert!(log.deletions.lock().len() <= crate::format::DELETION_RING);
        assert_eq!(log.deleted.load(std::sync::atomic::Ordering::Acquire), 1000);
        match far.next_timeout(Duration::ZERO) {
            Err(Error::Rewound { from, .. }) => assert_eq!(from, 1),
            r => panic!("expected Rewound, got {r:?}"),
        }
        let got: Vec<(u64, Vec<u8>)> =
            std::iter::from_fn(|| far.next_timeout(Duration::ZERO).unwrap())
                .map(|e| (e.lsn, e.payload))
                .collect();
        let mut want: Vec<(u64, Vec<u8>)> = (0..8u64)
            .map(|i| (i + 1, i.to_le_bytes().to_vec()))
            .collect();
        want.push((9, 1099u64.to_le_bytes().to_vec()));
        want.push((10, 1199u64.to_le_bytes().to_vec()));
        assert_eq!(got, want);

        // Too many to know which, and a head truncation past some of them since: every entry
        // from the head the follower knew is suspect, and those now gone are missed.
        for _ in 0..70 {
            cut(&log);
        }
        log.truncate_before(10).unwrap();
        match far.next_timeout(Duration::ZERO) {
            Err(Error::Rewound { from, .. }) => assert_eq!(from, 1),
            r => panic!("expected Rewound, got {r:?}"),
        }
        match far.next_timeout(Duration::ZERO) {
            Err(Error::Truncated {
                first_missed,
                last_missed,
                ..
            }) => assert_eq!((first_missed, last_missed), (1, 9)),
            r => panic!("expected Truncated, got {r:?}"),
        }
        let e = far.next_timeout(Duration::ZERO).unwrap().unwrap();
        assert_eq!((e.lsn, e.payload), (10, 1269u64.to_le_bytes().to_vec()));
        assert!(far.next_timeout(Duration::ZERO).unwrap().is_none());

        // A head truncation it looked past before them bounds the suspect entries too: it is
        // not told that entries truncated away earlier may have been replaced.
        for i in 0..10u64 {
            log.append(&(300 + i).to_le_bytes()).unwrap();
        }
        assert_eq!(
            std::iter::from_fn(|| far.next_timeout(Duration::ZERO).unwrap()).count(),
            10
        );
        log.truncate_before(15).unwrap();
        assert!(far.next_timeout(Duration::ZERO).unwrap().is_none());
        for _ in 0..70 {
            log.truncate_after(18).unwrap();
            log.append(&[1u8; 8]).unwrap();
            log.append(&[2u8; 8]).unwrap();
        }
        match far.next_timeout(Duration::ZERO) {
            Err(Error::Rewound { from, .. }) => assert_eq!(from, 15),
            r => panic!("expected Rewound from 15, got {r:?}"),
        }
        let got: Vec<u64> = std::iter::from_fn(|| far.next_timeout(Duration::ZERO).unwrap())
            .map(|e| e.lsn)
            .collect();
        assert_eq!(got, (15..=20).collect::<Vec<_>>());
    }
}
