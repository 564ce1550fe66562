//! Space reuse: dropping entries from the head (after a checkpoint), dropping everything, and
//! deleting a suffix (consensus logs).
//!
//! Each operation is one update of the metadata slot (one barrier); see FORMAT.md, "Truncation".
//! They take `&mut self`: entries are lent to readers as slices into the mapping, and the
//! borrow checker then guarantees that no reader still holds one when the space is freed.

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::{Slot, DATA_OFFSET, ENTRY_ALIGN, SLOT_LEN};
use crate::iter::Index;
use crate::log::{new_epoch, Log, Writer};
use crate::media::{Live, Media};
use crate::recover::INDEX_STRIDE;
use crate::reserve::State;
use crate::Lsn;

impl<M: Media> Log<M> {
    /// Durably discards every entry with an LSN below `lsn`; their space is reused when the
    /// log wraps around the end of the file. LSNs are never reused: the next append still gets
    /// [`Log::next_lsn`].
    ///
    /// `lsn` may be anything from the first LSN to [`Log::next_lsn`] (which discards every
    /// entry); an `lsn` at or below the first LSN changes nothing. Costs one barrier.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// for op in [&b"mkdir /a"[..], b"create /a/f", b"checkpoint 1"] { log.append(op)?; }
    /// // The state up to LSN 3 is saved elsewhere: the journal keeps only what follows.
    /// log.truncate_before(4)?;
    /// assert_eq!(log.first_lsn(), None);
    /// assert_eq!(log.append(b"unlink /a/f")?, 4);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn truncate_before(&mut self, lsn: Lsn) -> Result<()> {
        self.check_writable()?;
        let next = self.next_lsn();
        if lsn > next {
            return Err(Error::LsnOutOfRange {
                path: self.name.clone(),
                lsn,
                first: self.first_lsn,
                next,
            });
        }
        if lsn <= self.first_lsn {
            return Ok(());
        }
        let live = self.pmem.live();
        let (head, wrap_at) = if lsn == next {
            // Nothing stays: start again at the beginning of the data area.
            (DATA_OFFSET, 0)
        } else {
            let (pos, _) = self.seek(&live, lsn);
            // A head in the second part of a wrapped log ends the wrap.
            (pos, if pos < live.head { 0 } else { live.wrap_at })
        };
        let w = self.writer.get_mut();
        let hint_kept = w.slot.hint_lsn >= lsn && lsn != next;
        let slot = Slot {
            seq: w.slot.seq + 1,
            head_offset: head as u64,
            head_lsn: lsn,
            cut_lsn: w.slot.cut_lsn.max(lsn),
            hint_offset: if hint_kept { w.slot.hint_offset } else { 0 },
            hint_lsn: if hint_kept { w.slot.hint_lsn } else { 0 },
            ..w.slot
        };
        self.write_slot_mut(slot)?;
        let mut st = State::unpack(self.resv.get());
        if lsn == next {
            // Older bytes follow the new tail: appends need end markers from now on.
            st = State::new(DATA_OFFSET, st.next_lsn, false).with_ticket(st.ticket, st.flags);
            // (The slot, and so `SLOT_CONCURRENT`, stays.)
        }
        self.resv.set(st.pack());
        let tail = st.tail;
        self.first_lsn = lsn;
        self.pmem.set_live(Live {
            head,
            tail,
            wrap_at,
        });
        self.rebuild_index();
        tracing::debug!(lsn, head, "daxlog: truncated head");
        Ok(())
    }

    /// Durably discards every entry (libpmemlog's `rewind`). LSNs continue where they were.
    pub fn reset(&mut self) -> Result<()> {
        let next = self.next_lsn();
        self.truncate_before(next)
    }

    /// Durably deletes every entry with an LSN above `lsn` (a consensus log's conflicting
    /// suffix); the next append gets `lsn + 1`. After a crash the deleted entries never come
    /// back, although their bytes stay on media with valid checksums: they carry the epoch of
    /// an earlier session (FORMAT.md, "Epochs").
    ///
    /// `lsn` may be anything from `first - 1` (deletes every entry) to the last LSN (changes
    /// nothing). Costs two barriers: the slot update, then the destruction of the first deleted
    /// entry's header.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// for e in [&b"term 1: a"[..], b"term 1: b", b"term 1: c"] { log.append(e)?; }
    /// log.truncate_after(1)?; // the leader of term 2 disagrees from index 2 on
    /// assert_eq!(log.append(b"term 2: b")?, 2);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn truncate_after(&mut self, lsn: Lsn) -> Result<()> {
        self.check_writable()?;
        let next = self.next_lsn();
        if lsn >= next || lsn + 1 < self.first_lsn {
            return Err(Error::LsnOutOfRange {
                path: self.name.clone(),
                lsn,
                first: self.first_lsn,
                next,
            });
        }
        if lsn + 1 == next {
            return Ok(()); // nothing to delete
        }
        let live = self.pmem.live();
        // The new tail: just past entry `lsn`, or the head if every entry goes.
        let tail = if lsn < self.first_lsn {
            live.head
        } else {
            let (pos, _) = self.seek(&live, lsn);
            let (_, after) = self
                .entry_at(&live, pos, lsn)
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
        let published = self.next_lsn();
        self.pmem.media().publish_for_readers(lsn + 1);
        self.pmem.media().record_deletion(lsn + 1);
        let w = self.writer.get_mut();
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
        if let Err(e) = self.write_slot_mut(slot) {
            // Nothing was deleted: publish the entries again.
            self.pmem.media().publish_for_readers(published);
            return Err(e);
        }
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
        if tail + ENTRY_ALIGN <= limit {
            self.pmem.store_exclusive(tail, &[0u8; ENTRY_ALIGN]);
            self.pmem.flush(tail, ENTRY_ALIGN);
            self.pmem
                .drain()
                .map_err(|e| Error::io(&self.name, "drain", e))?;
        }
        // A new epoch without `SLOT_CONCURRENT`, and older bytes after the new tail.
        let st = State::unpack(self.resv.get());
        self.resv.set(
            State::new(tail, lsn + 1, false)
                .with_ticket(st.ticket, 0)
                .pack(),
        );
        self.epoch = self.writer.get_mut().slot.epoch;
        let head = live.head;
        // Cutting back into the first part of a wrapped log ends the wrap.
        let wrap_at = if tail >= head { 0 } else { live.wrap_at };
        self.pmem.set_live(Live {
            head,
            tail,
            wrap_at,
        });
        *self.last_lsn.get_mut() = lsn;
        self.index
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .truncate_from(lsn + 1);
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

    fn write_slot_mut(&mut self, slot: Slot) -> Result<()> {
        let mut w = self.writer.lock();
        self.write_slot(&mut w, slot)
    }

    /// Rebuilds the sparse LSN index from the head (after the head moved).
    fn rebuild_index(&mut self) {
        let live = self.pmem.live();
        let mut index = Vec::new();
        let mut pos = live.first(self.pmem.data_start());
        let mut lsn = self.first_lsn;
        let last = self.last_lsn.load(Ordering::Acquire);
        while lsn <= last {
            if (lsn - self.first_lsn).is_multiple_of(INDEX_STRIDE) {
                index.push(pos as u64);
            }
            match self.entry_at(&live, pos, lsn) {
                Some((_, next)) => pos = next,
                None => break,
            }
            lsn += 1;
        }
        *self.index.get_mut().unwrap_or_else(|e| e.into_inner()) = Index {
            base: self.first_lsn,
            anchors: index,
        };
    }
}
