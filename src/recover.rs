//! Recovery: finding the end of the log by validating entries.
//!
//! There is no persisted tail pointer. The scan starts at the head recorded in the current
//! metadata slot and accepts an entry only if all of these hold (FORMAT.md, "Recovery"):
//! its header fits and its length fits in the file; no unknown flag is set; its LSN is exactly
//! the next expected one; if its LSN is at or above the slot's `cut_lsn`, its epoch is the slot's
//! epoch; and its checksum, seeded with the log's salt, matches. Entries flagged
//! `FLAG_CONTINUES` count only once the last entry of their batch is accepted. The first entry
//! that fails ends the log: everything from the start of its batch on is the torn tail.

use std::time::Duration;

use crate::format::{self, EntryHeader, Slot, FLAG_CONTINUES, HEADER_LEN, KNOWN_FLAGS};
use crate::media::Persistence;
use crate::Lsn;

/// Zero bytes at the tail that mark a clean end (the checksum and length words of a header).
const END_MARKER_LEN: usize = 8;

/// Every this many entries, the offset of one entry is kept in memory to find entries by LSN.
pub(crate) const INDEX_STRIDE: u64 = 64;

/// Why the scan stopped where it did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TailState {
    /// The log ended cleanly: the bytes after the last entry are zero, or a complete entry
    /// that is no longer part of the log (an earlier lap, a deleted suffix).
    Clean,
    /// The scan reached the end of the file (or, after a wrap, the head).
    EndOfFile,
    /// The bytes after the last entry do not form a valid entry: an append (or batch) was
    /// interrupted, and its remains were discarded.
    Torn {
        /// Why the first discarded entry was refused.
        reason: &'static str,
    },
}

/// The result of scanning a log image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Offset just past the last accepted entry.
    pub tail: usize,
    /// Where the entries before the wrap end, if the accepted entries wrap around the end of
    /// the file (then `tail` is below the head); 0 otherwise.
    pub wrap_at: usize,
    /// LSN the next append gets.
    pub next_lsn: Lsn,
    /// Accepted entries.
    pub entries: u64,
    /// Bytes of the interrupted write that were discarded (an estimate when its length field is
    /// damaged: then only its header is counted).
    pub torn_bytes: u64,
    /// Why the scan stopped.
    pub state: TailState,
    /// Offsets of the entries with LSN `index_base + k * INDEX_STRIDE` (`index_base` is
    /// `head_lsn + j * INDEX_STRIDE` for some j; above the head when the scan began at a hint).
    pub index: Vec<u64>,
    pub index_base: Lsn,
    /// The LSN the scan started at (the head's, or the tail hint's).
    pub scanned_from: Lsn,
    /// Where the scan stopped (the refused entry) and the LSN it expected there.
    pub stop: usize,
    pub stop_lsn: Lsn,
}

/// Why an entry was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub reason: &'static str,
    /// The bytes form a complete entry of this log (its checksum matches) that is not the
    /// expected one: an entry of an earlier lap, of a deleted suffix, or of an earlier session.
    pub stale: bool,
}

impl Refusal {
    const fn torn(reason: &'static str) -> Self {
        Refusal {
            reason,
            stale: false,
        }
    }
}

/// Validates the entry at `pos`, which must end by `limit`; returns its header if it is
/// acceptable as entry `expect`.
#[inline]
pub(crate) fn check_entry(
    image: &[u8],
    pos: usize,
    limit: usize,
    expect: Lsn,
    salt: u32,
    slot: &Slot,
) -> Result<EntryHeader, Refusal> {
    let end = limit.min(image.len());
    if pos + HEADER_LEN > end {
        return Err(Refusal::torn(
            "no room for an entry before the end of the area",
        ));
    }
    let h = EntryHeader::decode(&image[pos..pos + HEADER_LEN]);
    if h.len as usize > end - pos - HEADER_LEN {
        return Err(Refusal::torn("length runs past the end of the area"));
    }
    if h.flags & !KNOWN_FLAGS != 0 {
        return Err(Refusal::torn("unknown flag bits"));
    }
    let payload = &image[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize];
    if format::entry_crc(format::payload_crc(salt, payload), &h) != h.crc {
        return Err(Refusal::torn("checksum mismatch"));
    }
    #[cfg(feature = "mutants")]
    let lsn_ok = h.lsn == expect || crate::mutants::active() == crate::mutants::Mutant::NoLsnCheck;
    #[cfg(not(feature = "mutants"))]
    let lsn_ok = h.lsn == expect;
    if !lsn_ok {
        return Err(Refusal {
            reason: "LSN does not continue the sequence",
            stale: true,
        });
    }
    if h.lsn >= slot.cut_lsn && h.epoch != slot.epoch {
        return Err(Refusal {
            reason: "epoch of an earlier session",
            stale: true,
        });
    }
    Ok(h)
}

/// A chain of entries followed from one position.
#[derive(Clone, Debug)]
pub(crate) struct Walk {
    /// Offset just past the last accepted batch.
    pub tail: usize,
    /// Where the entries before the wrap end, if the chain wrapped before `tail`; else 0.
    pub tail_wrap: usize,
    /// LSN after the last accepted batch.
    pub next_lsn: Lsn,
    /// Accepted entries.
    pub entries: u64,
    /// Accepted batches (a single append counts as one).
    pub batches: u64,
    /// LSN and offset of the accepted entries whose LSN is `head_lsn + k * INDEX_STRIDE`.
    pub index: Vec<(Lsn, u64)>,
    /// Where the chain stopped (the refused entry), the LSN expected there, and why.
    pub stop: usize,
    pub stop_lsn: Lsn,
    pub refusal: Refusal,
    /// End of the area the chain was in when it stopped (the file, or the head after a wrap).
    pub limit: usize,
}

/// Follows entries from `start`, expecting `start_lsn`, until one is refused. If the chain is
/// in the first part of the log (at or after the head), it may wrap once to the start of the
/// data area, where it must end before the head.
pub(crate) fn walk(image: &[u8], salt: u32, slot: &Slot, start: usize, start_lsn: Lsn) -> Walk {
    walk_visit(image, salt, slot, start, start_lsn, |_, _, _| {})
}

/// [`walk`], calling `visit(lsn, offset, header)` for every entry accepted on the way (batch
/// members included, before their batch is complete).
pub(crate) fn walk_visit(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    start: usize,
    start_lsn: Lsn,
    mut visit: impl FnMut(Lsn, usize, &EntryHeader),
) -> Walk {
    let head = slot.head_offset as usize;
    let data = format::DATA_OFFSET;
    let mut w = Walk {
        tail: start,
        tail_wrap: 0,
        next_lsn: start_lsn,
        entries: 0,
        batches: 0,
        index: Vec::new(),
        stop: start,
        stop_lsn: start_lsn,
        refusal: Refusal::torn(""),
        limit: if start < head { head } else { image.len() },
    };
    let mut pos = start;
    let mut lsn = start_lsn;
    let mut wrapped_at = if start < head { start } else { 0 };
    let refusal = loop {
        match check_entry(image, pos, w.limit, lsn, salt, slot) {
            Ok(h) => {
                visit(lsn, pos, &h);
                if (lsn - slot.head_lsn).is_multiple_of(INDEX_STRIDE) {
                    w.index.push((lsn, pos as u64));
                }
                // Batches are atomic only while they may be in flight: below the cut, every
                // entry was accepted before (or kept by a suffix truncation that cut a batch),
                // so the flag is not honoured there (FORMAT.md, "Batches").
                let ends_batch = h.flags & FLAG_CONTINUES == 0 || lsn < slot.cut_lsn;
                pos += h.entry_len();
                lsn += 1;
                if ends_batch {
                    w.entries += lsn - w.next_lsn;
                    w.tail = pos;
                    w.tail_wrap = wrapped_at;
                    w.next_lsn = lsn;
                    w.batches += 1;
                }
            }
            Err(r) => {
                let may_wrap = wrapped_at == 0 && pos == w.tail && pos != data && head > data;
                if may_wrap && check_entry(image, data, head, lsn, salt, slot).is_ok() {
                    wrapped_at = pos;
                    pos = data;
                    w.limit = head;
                    continue;
                }
                break r;
            }
        }
    };
    // Keep only the index entries of accepted entries.
    let next = w.next_lsn;
    w.index.retain(|&(l, _)| l < next);
    w.stop = pos;
    w.stop_lsn = lsn;
    w.refusal = refusal;
    w
}

/// Scans `image` (the whole file) from the head named by `slot` — or, if `use_hint` and the
/// slot's tail hint names a valid entry, from there.
///
/// When the entry at the scan position is refused, the scan tries once to continue at the
/// start of the data area (the writer wraps there when an append does not fit before the end
/// of the file); entries there must end before the head. No batch spans the wrap.
pub(crate) fn scan(image: &[u8], salt: u32, slot: &Slot, use_hint: bool) -> Scan {
    let head = slot.head_offset as usize;
    let (start, start_lsn) = match hint(image, salt, slot) {
        Some(h) if use_hint => h,
        _ => (head, slot.head_lsn),
    };
    let w = walk(image, salt, slot, start, start_lsn);
    let (tail, pos, refusal) = (w.tail, w.stop, w.refusal);
    let area_end = w.limit.min(image.len());
    let state = if pos + HEADER_LEN > area_end && pos == tail {
        TailState::EndOfFile
    } else if pos == tail
        && (refusal.stale || image[pos..pos + END_MARKER_LEN].iter().all(|&b| b == 0))
    {
        TailState::Clean
    } else {
        TailState::Torn {
            reason: refusal.reason,
        }
    };
    let torn_bytes = match state {
        TailState::Torn { .. } => {
            let claimed = if pos + HEADER_LEN <= area_end {
                let h = EntryHeader::decode(&image[pos..pos + HEADER_LEN]);
                if (h.len as usize) <= area_end - pos - HEADER_LEN {
                    h.entry_len()
                } else {
                    HEADER_LEN
                }
            } else {
                area_end.saturating_sub(pos)
            };
            (pos - tail + claimed) as u64
        }
        _ => 0,
    };
    let index_base = w.index.first().map_or(w.next_lsn, |a| a.0);
    Scan {
        tail,
        wrap_at: w.tail_wrap,
        next_lsn: w.next_lsn,
        entries: w.entries + (start_lsn - slot.head_lsn),
        torn_bytes,
        state,
        index_base,
        index: w.index.into_iter().map(|a| a.1).collect(),
        scanned_from: start_lsn,
        stop: w.stop,
        stop_lsn: w.stop_lsn,
    }
}

/// The slot's tail hint, if it names a valid entry at or after the head.
fn hint(image: &[u8], salt: u32, slot: &Slot) -> Option<(usize, Lsn)> {
    let (off, lsn) = (slot.hint_offset as usize, slot.hint_lsn);
    let head = slot.head_offset as usize;
    if lsn <= slot.head_lsn || off < head {
        return None;
    }
    check_entry(image, off, image.len(), lsn, salt, slot).ok()?;
    Some((off, lsn))
}

/// Where the remains of an interrupted write end: past the claimed extent of the refused
/// entry, through the following 4 KiB pages that still hold a non-zero byte, but no further
/// than 1 MiB past the claimed extent (in a wrapped log, older laps follow).
pub(crate) fn remains_end(image: &[u8], tail: usize, torn_bytes: u64) -> usize {
    const PAGE: usize = 4096;
    let mut end = (tail + torn_bytes as usize).min(image.len());
    let stop = (end + (1 << 20)).min(image.len());
    while end < stop {
        let page_end = ((end / PAGE) + 1) * PAGE;
        let page_end = page_end.min(image.len());
        if image[end..page_end].iter().all(|&b| b == 0) {
            break;
        }
        end = page_end;
    }
    end
}

/// What [`crate::Log::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Entries in the log after recovery.
    pub entries: u64,
    /// LSN of the first entry (if any).
    pub first_lsn: Option<Lsn>,
    /// LSN of the last entry (if any).
    pub last_lsn: Option<Lsn>,
    /// Offset just past the last entry: where the next append goes.
    pub tail_offset: u64,
    /// Bytes of an interrupted append that were discarded.
    pub torn_bytes: u64,
    /// How the log ended.
    pub tail_state: TailState,
    /// The primary superblock was damaged and the backup copy was used (and, if the log was
    /// opened for writing, rewritten over the primary).
    pub superblock_from_backup: bool,
    /// Wall-clock time of the whole open, mapping included.
    pub duration: Duration,
    /// The persistence barrier the log uses.
    pub persistence: Persistence,
    /// Damage found inside the acknowledged part of the log. Only a
    /// [`crate::RecoveryMode::Salvage`] open gets this far with damage; the other modes fail
    /// with [`crate::Error::Corrupted`].
    pub damage: Option<DamageReport>,
    /// In salvage mode, every damaged region with the LSNs it swallowed.
    pub gaps: Vec<crate::damage::Gap>,
    /// The LSN the scan started at: the first LSN, or a later one when a tail hint let the
    /// scan skip the entries before it (see [`crate::Options::tail_hint_every`]).
    pub scanned_from: Lsn,
}

/// Damage recovery found; see [`RecoveryReport::damage`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamageReport {
    /// Offset of the first unreadable entry.
    pub offset: u64,
    /// The LSN it should carry: the log as opened ends before it.
    pub lsn: Lsn,
    /// Why it was refused.
    pub reason: &'static str,
    /// Valid entries found past it.
    pub entries_beyond: u64,
    /// Their LSN range.
    pub lsns_beyond: Option<(Lsn, Lsn)>,
}
