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
    /// Offsets of the entries with LSN `head_lsn + k * INDEX_STRIDE`.
    pub index: Vec<u64>,
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

/// Scans `image` (the whole file) from the head named by `slot`.
///
/// When the entry at the scan position is refused, the scan tries once to continue at the
/// start of the data area (the writer wraps there when an append does not fit before the end
/// of the file); entries there must end before the head. No batch spans the wrap.
pub(crate) fn scan(image: &[u8], salt: u32, slot: &Slot) -> Scan {
    let head = slot.head_offset as usize;
    let data = format::DATA_OFFSET;
    let mut tail = head;
    let mut tail_wrap = 0;
    let mut next_lsn = slot.head_lsn;
    let mut entries = 0u64;
    let mut index = Vec::new();
    let mut pos = head;
    let mut lsn = next_lsn;
    let mut limit = image.len();
    let mut wrapped_at = 0;
    let refusal = loop {
        match check_entry(image, pos, limit, lsn, salt, slot) {
            Ok(h) => {
                if (lsn - slot.head_lsn) % INDEX_STRIDE == 0 {
                    index.push(pos as u64);
                }
                // Batches are atomic only while they may be in flight: below the cut, every
                // entry was accepted before (or kept by a suffix truncation that cut a batch),
                // so the flag is not honoured there (FORMAT.md, "Batches").
                let ends_batch = h.flags & FLAG_CONTINUES == 0 || lsn < slot.cut_lsn;
                pos += h.entry_len();
                lsn += 1;
                if ends_batch {
                    entries += lsn - next_lsn;
                    tail = pos;
                    tail_wrap = wrapped_at;
                    next_lsn = lsn;
                }
            }
            Err(r) => {
                let may_wrap = wrapped_at == 0 && pos == tail && pos != data && head > data;
                if may_wrap && check_entry(image, data, head, lsn, salt, slot).is_ok() {
                    wrapped_at = pos;
                    pos = data;
                    limit = head;
                    continue;
                }
                break r;
            }
        }
    };
    // Keep only the index entries of accepted entries.
    let accepted = next_lsn - slot.head_lsn;
    index.truncate(accepted.div_ceil(INDEX_STRIDE) as usize);

    let area_end = limit.min(image.len());
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
    Scan {
        tail,
        wrap_at: tail_wrap,
        next_lsn,
        entries,
        torn_bytes,
        state,
        index,
    }
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
}
