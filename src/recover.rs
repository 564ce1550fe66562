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

/// Every this many entries, the offset of one entry is kept in memory to find entries by LSN.
pub(crate) const INDEX_STRIDE: u64 = 64;

/// Why the scan stopped where it did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TailState {
    /// The bytes after the last entry are zero: the log ended cleanly.
    Clean,
    /// The scan reached the end of the file.
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

/// Validates the entry at `pos`; returns its header if it is acceptable as entry `expect`.
#[inline]
pub(crate) fn check_entry(
    image: &[u8],
    pos: usize,
    expect: Lsn,
    salt: u32,
    slot: &Slot,
) -> Result<EntryHeader, &'static str> {
    let end = image.len();
    if pos + HEADER_LEN > end {
        return Err("no room for a header before the end of the file");
    }
    let h = EntryHeader::decode(&image[pos..pos + HEADER_LEN]);
    if h.len as usize > end - pos - HEADER_LEN {
        return Err("length runs past the end of the file");
    }
    if h.flags & !KNOWN_FLAGS != 0 {
        return Err("unknown flag bits");
    }
    #[cfg(feature = "mutants")]
    let lsn_ok = h.lsn == expect || crate::mutants::active() == crate::mutants::Mutant::NoLsnCheck;
    #[cfg(not(feature = "mutants"))]
    let lsn_ok = h.lsn == expect;
    if !lsn_ok {
        return Err("LSN does not continue the sequence");
    }
    if h.lsn >= slot.cut_lsn && h.epoch != slot.epoch {
        return Err("epoch of an earlier session");
    }
    let payload = &image[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize];
    if format::entry_crc(format::payload_crc(salt, payload), &h) != h.crc {
        return Err("checksum mismatch");
    }
    Ok(h)
}

/// Scans `image` (the whole file) from the head named by `slot`.
pub(crate) fn scan(image: &[u8], salt: u32, slot: &Slot) -> Scan {
    let head = slot.head_offset as usize;
    let mut tail = head;
    let mut next_lsn = slot.head_lsn;
    let mut entries = 0u64;
    let mut index = Vec::new();
    // The open batch: entries accepted but not yet completed by a last entry.
    let mut pos = head;
    let mut lsn = next_lsn;
    let state = loop {
        match check_entry(image, pos, lsn, salt, slot) {
            Ok(h) => {
                if (lsn - slot.head_lsn) % INDEX_STRIDE == 0 {
                    index.push(pos as u64);
                }
                pos += h.entry_len();
                lsn += 1;
                if h.flags & FLAG_CONTINUES == 0 {
                    entries += lsn - next_lsn;
                    tail = pos;
                    next_lsn = lsn;
                }
                if pos > image.len() {
                    // The padding of the last entry would run past the file (only possible
                    // when the file length is not a multiple of 8, which capacity forbids).
                    break TailState::EndOfFile;
                }
            }
            Err(reason) => {
                let rest = &image[pos.min(image.len())..];
                let window = &rest[..rest.len().min(HEADER_LEN)];
                if window.is_empty() {
                    break TailState::EndOfFile;
                }
                if pos == tail && window.iter().all(|&b| b == 0) {
                    break TailState::Clean;
                }
                break TailState::Torn { reason };
            }
        }
    };
    // Keep only the index entries of accepted entries.
    let accepted = next_lsn - slot.head_lsn;
    index.truncate(accepted.div_ceil(INDEX_STRIDE) as usize);
    let torn_bytes = match state {
        TailState::Torn { .. } => {
            let claimed = if pos + HEADER_LEN <= image.len() {
                let h = EntryHeader::decode(&image[pos..pos + HEADER_LEN]);
                if (h.len as usize) <= image.len() - pos - HEADER_LEN {
                    h.entry_len()
                } else {
                    HEADER_LEN
                }
            } else {
                image.len() - pos
            };
            (pos - tail + claimed) as u64
        }
        _ => (pos.min(image.len()) - tail) as u64,
    };
    Scan {
        tail,
        next_lsn,
        entries,
        torn_bytes,
        state,
        index,
    }
}

/// Where the remains of an interrupted write end: past the claimed extent of the refused
/// entry, through every following 4 KiB page that still holds a non-zero byte.
pub(crate) fn remains_end(image: &[u8], tail: usize, torn_bytes: u64) -> usize {
    const PAGE: usize = 4096;
    let mut end = (tail + torn_bytes as usize).min(image.len());
    while end < image.len() {
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
