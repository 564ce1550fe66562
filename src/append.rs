//! The append path: one persistence barrier per append or batch.
//!
//! An append encodes each entry, stores it past the tail (cached stores plus one write-back of
//! the touched lines, or non-temporal stores), issues one drain (SFENCE, or msync), and only
//! then publishes the new tail to readers and returns. Nothing else is written: the end of the
//! log is found by recovery from the entries themselves.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use crate::error::{Error, Result};
use crate::format::{self, EntryHeader, DATA_OFFSET, ENTRY_ALIGN, FLAG_CONTINUES, HEADER_LEN};
use crate::log::{max_payload, Log, Writer};
use crate::media::Media;
use crate::persist::CACHE_LINE;
use crate::recover::INDEX_STRIDE;
use crate::Lsn;

/// Pages are prefaulted this far ahead of the tail.
const PREPARE_AHEAD: usize = 2 << 20;

impl<M: Media> Log<M> {
    /// Appends one entry and returns its LSN once the entry is durable.
    ///
    /// On [`Error::Full`] nothing is written and the log stays usable. An empty payload is a
    /// valid entry.
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
        let mut w = self.lock_writer();
        let lsns = self.write_durable(&mut w, &[payload], &[crc])?;
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
        let mut crcs = Vec::with_capacity(payloads.len());
        for p in payloads {
            self.check_payload(p)?;
            crcs.push(format::payload_crc(self.sb.salt, p));
        }
        let mut w = self.lock_writer();
        if payloads.is_empty() {
            return Ok(w.next_lsn..w.next_lsn);
        }
        self.write_durable(&mut w, payloads, &crcs)
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
        // A panic while holding the lock cannot leave the writer state half-updated: the state
        // is changed only after the barrier, in plain assignments.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `payloads` (with their payload checksums) past the tail, makes them durable with
    /// one barrier, publishes them, and returns their LSNs.
    fn write_durable(
        &self,
        w: &mut Writer,
        payloads: &[&[u8]],
        crcs: &[u32],
    ) -> Result<Range<Lsn>> {
        let total: usize = payloads.iter().map(|p| format::entry_len(p.len())).sum();
        let start = self.place(w, total)?;
        if start < w.prepared.0 || start + total > w.prepared.1 {
            self.prepare(w, start, total);
        }
        let nt = total >= self.nt_threshold;
        let first = w.next_lsn;
        let mut pos = start;
        let mut lsn = first;
        let mut index_adds = Vec::new();
        for (i, (payload, &pcrc)) in payloads.iter().zip(crcs).enumerate() {
            let mut h = EntryHeader {
                crc: 0,
                len: payload.len() as u32,
                lsn,
                epoch: w.slot.epoch,
                flags: if i + 1 < payloads.len() {
                    FLAG_CONTINUES
                } else {
                    0
                },
            };
            h.crc = format::entry_crc(pcrc, &h);
            self.store_entry(w, pos, &h, payload, nt);
            if (lsn - self.first_lsn) % INDEX_STRIDE == 0 {
                index_adds.push(pos as u64);
            }
            pos += h.entry_len();
            lsn += 1;
        }
        self.end_marker(w, pos, nt);
        self.barrier(start, total, nt)?;

        if !index_adds.is_empty() {
            self.index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .extend(index_adds);
        }
        if start != w.tail {
            // The append wrapped: the entries before it end at the old tail.
            w.wrap_at = w.tail;
        }
        w.tail = pos;
        w.next_lsn = lsn;
        // The tail first, then the LSN: a reader that sees an LSN finds its entry in the live
        // region.
        self.pmem.publish(&mut w.token, pos, w.wrap_at);
        self.last_lsn.store(lsn - 1, Ordering::Release);
        Ok(first..lsn)
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

    /// Zeroes the 8 bytes after the last new entry (if they are free space), in the same
    /// barrier. Correctness does not need it (the epoch rule refuses whatever follows the
    /// tail); it makes a clean end recognisable, so recovery reports a torn tail only after an
    /// interrupted append, not when older bytes happen to follow the tail.
    #[inline]
    fn end_marker(&self, w: &mut Writer, end: usize, nt: bool) {
        let limit = if end < w.head {
            w.head
        } else {
            self.sb.capacity as usize
        };
        if end + ENTRY_ALIGN > limit {
            return;
        }
        self.pmem
            .store_free(&mut w.token, end, &[0u8; ENTRY_ALIGN], nt);
        // Written back here only if it sits on a line the entries do not end on.
        if !nt && end % CACHE_LINE == 0 {
            self.pmem.flush(end, ENTRY_ALIGN);
        }
    }

    /// Stores one encoded entry at `pos`: header, payload, zero padding to 8 bytes.
    #[inline]
    fn store_entry(&self, w: &mut Writer, pos: usize, h: &EntryHeader, payload: &[u8], nt: bool) {
        let header = h.encode();
        let body = payload.len() & !(ENTRY_ALIGN - 1);
        let rest = payload.len() - body;
        let pad = h.entry_len() - HEADER_LEN - payload.len();
        if nt {
            // Non-temporal stores need 8-byte units: the last partial word is built here.
            self.pmem.store_free(&mut w.token, pos, &header, true);
            self.pmem
                .store_free(&mut w.token, pos + HEADER_LEN, &payload[..body], true);
            if rest > 0 {
                let mut last = [0u8; ENTRY_ALIGN];
                last[..rest].copy_from_slice(&payload[body..]);
                self.pmem
                    .store_free(&mut w.token, pos + HEADER_LEN + body, &last, true);
            }
        } else {
            self.pmem.store_free(&mut w.token, pos, &header, false);
            self.pmem
                .store_free(&mut w.token, pos + HEADER_LEN, payload, false);
            if pad > 0 {
                self.pmem.store_free(
                    &mut w.token,
                    pos + HEADER_LEN + payload.len(),
                    &[0u8; ENTRY_ALIGN][..pad],
                    false,
                );
            }
        }
    }

    /// The one persistence barrier of an append: write back the touched lines (unless they
    /// were written non-temporally) and drain.
    #[inline]
    fn barrier(&self, start: usize, len: usize, nt: bool) -> Result<()> {
        #[cfg(feature = "mutants")]
        if let Some(r) = crate::mutants::barrier(&self.pmem, start, len, nt) {
            return r.map_err(|e| Error::io(&self.name, "drain", e));
        }
        if !nt {
            self.pmem.flush(start, len);
        }
        self.pmem
            .drain()
            .map_err(|e| Error::io(&self.name, "drain", e))
    }

    /// Prefaults the pages the appends from `pos` will touch.
    pub(crate) fn prepare(&self, w: &mut Writer, pos: usize, need: usize) {
        let to = (pos + need + PREPARE_AHEAD).min(self.sb.capacity as usize);
        let from = if pos >= w.prepared.0 && pos <= w.prepared.1 {
            w.prepared.1
        } else {
            w.prepared.0 = pos;
            pos
        };
        if to > from {
            self.pmem.media().prepare(from, to - from);
        }
        w.prepared.1 = to.max(w.prepared.1);
    }
}
