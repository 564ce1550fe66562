//! The walk over entries: how recovery finds the end of the log by validating them.
//!
//! There is no persisted tail pointer. The scan starts at the head recorded in the current
//! metadata slot and accepts an entry only if all of these hold (FORMAT.md, "Recovery"):
//! its header fits and its length fits in the file; no unknown flag is set; its LSN is exactly
//! the next expected one; if its LSN is at or above the slot's `cut_lsn`, its epoch is the slot's
//! epoch; and its checksum, seeded with the log's salt, matches. Entries flagged
//! `FLAG_CONTINUES` count only once the last entry of their batch is accepted. The first entry
//! that fails ends the log: everything from the start of its batch on is the torn tail.

use crate::format::{self, EntryHeader, Slot, FLAG_CONTINUES, HEADER_LEN, KNOWN_FLAGS};
use crate::index::INDEX_STRIDE;
use crate::persist::{self, CACHE_LINE};
use crate::Lsn;

/// Zero bytes at the tail that mark a clean end (the checksum and length words of a header).
const END_MARKER_LEN: usize = 8;

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
    /// damaged: then only its header is counted), from `torn_start` on.
    pub torn_bytes: u64,
    /// Where the discarded bytes begin: the tail, or the start of the data area when the
    /// discarded batch had wrapped there (its first entries whole, a later one refused).
    pub torn_start: usize,
    /// Why the scan stopped.
    pub state: TailState,
    /// Offsets of the entries with LSN `index_base + k * INDEX_STRIDE` (`index_base` is a
    /// multiple of `INDEX_STRIDE`).
    pub index: Vec<u64>,
    pub index_base: Lsn,
    /// The LSN the scan started at (the head's, or the tail hint's).
    pub scanned_from: Lsn,
    /// Where the scan stopped (the refused entry) and the LSN it expected there.
    pub stop: usize,
    pub stop_lsn: Lsn,
    /// Where the refused entry lies: `stop`, or the start of the data area when the scan ended
    /// at the end of the log's first part and the entry refused is the wrap's
    /// ([`Scan::torn_at_wrap`]).
    pub refused: usize,
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
    check_entry_by(image, pos, limit, expect, slot, direct_crc(image, salt))
}

/// The payload checksum of `image[from..to]` computed from its bytes ([`format::payload_crc`]),
/// as [`check_entry_by`] and [`walk_visit_by`] take it.
#[inline(always)]
fn direct_crc(image: &[u8], salt: u32) -> impl Fn(usize, usize) -> u32 + '_ {
    move |from, to| format::payload_crc(salt, &image[from..to])
}

/// [`check_entry`], with `payload_crc(from, to)` giving the checksum of the payload at
/// `image[from..to]` ([`format::payload_crc`]): the search past a refused entry computes it
/// from checksums of blocks ([`crate::crc_ranges`]).
#[inline]
pub(crate) fn check_entry_by(
    image: &[u8],
    pos: usize,
    limit: usize,
    expect: Lsn,
    slot: &Slot,
    payload_crc: impl FnOnce(usize, usize) -> u32,
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
    let payload = pos + HEADER_LEN;
    if format::entry_crc(payload_crc(payload, payload + h.len as usize), &h) != h.crc {
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
    #[cfg(feature = "mutants")]
    let epoch_ok = crate::mutants::is(crate::mutants::Mutant::NoEpochCheck);
    #[cfg(not(feature = "mutants"))]
    let epoch_ok = false;
    if h.lsn >= slot.cut_lsn && h.epoch != slot.epoch && !epoch_ok {
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
    /// LSN and offset of the accepted entries whose LSN is a multiple of `INDEX_STRIDE`.
    pub index: Vec<(Lsn, u64)>,
    /// Where the chain stopped (the refused entry), the LSN expected there, and why.
    pub stop: usize,
    pub stop_lsn: Lsn,
    pub refusal: Refusal,
    /// End of the area the chain was in when it stopped (the file, or the head after a wrap).
    pub limit: usize,
}

/// [`walk_visit`], calling `ahead(from, len)` with bytes about to be read: the window at the
/// start ([`read_ahead_start`]), then as the walk goes ([`read_ahead_next`]).
fn walk_ahead(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    start: usize,
    start_lsn: Lsn,
    until: Lsn,
    ahead: &dyn Fn(usize, usize),
) -> Walk {
    let mut last = None;
    walk_impl(
        image,
        salt,
        slot,
        start,
        start_lsn,
        until,
        |_, _, _| {},
        direct_crc(image, salt),
        |pos| {
            let ask = match last {
                None => Some(read_ahead_start(pos)),
                Some(was) => read_ahead_next(was, pos),
            };
            last = Some(pos);
            if let Some((from, len)) = ask {
                ahead(from, len);
            }
        },
    )
}

/// The granule of read-ahead ([`crate::Media::wants_read_ahead`]): walks in order (the
/// recovery scan, iterators, `verify`) ask for the bytes up to [`READ_AHEAD_STEPS`] steps
/// past the step they are in, a step at a time.
pub(crate) const READ_AHEAD_STEP: usize = 1 << 20;
pub(crate) const READ_AHEAD_STEPS: usize = 8;

/// What a walk starting at `pos` asks to read: from `pos` to the end of the
/// [`READ_AHEAD_STEPS`]th step after the one `pos` is in.
pub(crate) fn read_ahead_start(pos: usize) -> (usize, usize) {
    let end = (pos / READ_AHEAD_STEP + READ_AHEAD_STEPS + 1) * READ_AHEAD_STEP;
    (pos, end - pos)
}

/// What a walk stepping from `pos` to `next` asks to read: nothing within a step; the steps
/// that come into its window when it crosses into a later one, each once; a new start
/// ([`read_ahead_start`]) when it steps back (a wrap).
#[inline]
pub(crate) fn read_ahead_next(pos: usize, next: usize) -> Option<(usize, usize)> {
    let (a, b) = (pos / READ_AHEAD_STEP, next / READ_AHEAD_STEP);
    match b.cmp(&a) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some((
            (a + READ_AHEAD_STEPS + 1) * READ_AHEAD_STEP,
            (b - a) * READ_AHEAD_STEP,
        )),
        std::cmp::Ordering::Less => Some(read_ahead_start(next)),
    }
}

/// Follows entries from `start`, expecting `start_lsn`, until one is refused. If the chain is
/// in the first part of the log (at or after the head), it may wrap once to the start of the
/// data area, where it must end before the head. Calls `visit(lsn, offset, header)` for every
/// entry accepted on the way (batch members included, before their batch is complete).
pub(crate) fn walk_visit(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    start: usize,
    start_lsn: Lsn,
    visit: impl FnMut(Lsn, usize, &EntryHeader),
) -> Walk {
    walk_visit_by(
        image,
        salt,
        slot,
        start,
        start_lsn,
        visit,
        direct_crc(image, salt),
    )
}

/// [`walk_visit`], with the checksums of entries too long to be checked in pairs by
/// `payload_crc` ([`check_entry_by`]: the search past a refused entry computes them from
/// checksums of blocks).
pub(crate) fn walk_visit_by(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    start: usize,
    start_lsn: Lsn,
    visit: impl FnMut(Lsn, usize, &EntryHeader),
    payload_crc: impl FnMut(usize, usize) -> u32,
) -> Walk {
    let until = Lsn::MAX;
    walk_impl(
        image,
        salt,
        slot,
        start,
        start_lsn,
        until,
        visit,
        payload_crc,
        |_| {},
    )
}

/// The walk: stops at entry `until` too (not accepting it: `stop` is its offset). Entries not
/// checked in pairs are checksummed by `payload_crc` ([`check_entry_by`]).
#[allow(clippy::too_many_arguments)]
fn walk_impl(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    start: usize,
    start_lsn: Lsn,
    until: Lsn,
    mut visit: impl FnMut(Lsn, usize, &EntryHeader),
    mut payload_crc: impl FnMut(usize, usize) -> u32,
    mut at: impl FnMut(usize),
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
    let mut ahead = pos;
    let refusal = loop {
        if lsn >= until {
            break Refusal::torn("");
        }
        at(pos);
        // The common case first: two entries that pass every rule, checksummed together. The
        // first entry that does not (or that is not a small entry) goes through `check_entry`,
        // which accepts or refuses it exactly as if it had come first.
        let area = &image[..w.limit.min(image.len())];
        if let Some((h1, t1, p1)) = candidate(area, pos, lsn, slot) {
            if let Some((h2, t2, p2)) = candidate(area, pos + h1.entry_len(), lsn + 1, slot) {
                let end = pos + h1.entry_len() + h2.entry_len() + PREFETCH_AHEAD;
                ahead = ahead.clamp(pos + PREFETCH_AHEAD, end);
                while ahead < end {
                    persist::prefetch_read(area, ahead);
                    ahead += CACHE_LINE;
                }
                let (c1, c2) = persist::crc32c_entry_pair(salt, p1, t1, p2, t2);
                if c1 == h1.crc {
                    accept(
                        &mut w, slot, wrapped_at, &mut pos, &mut lsn, &h1, &mut visit,
                    );
                    if c2 == h2.crc && lsn < until {
                        accept(
                            &mut w, slot, wrapped_at, &mut pos, &mut lsn, &h2, &mut visit,
                        );
                    }
                    continue;
                }
            }
        }
        match check_entry_by(image, pos, w.limit, lsn, slot, &mut payload_crc) {
            Ok(h) => accept(&mut w, slot, wrapped_at, &mut pos, &mut lsn, &h, &mut visit),
            Err(r) => {
                let may_wrap = wrapped_at == 0 && pos == w.tail && pos != data && head > data;
                if may_wrap
                    && check_entry_by(image, data, head, lsn, slot, &mut payload_crc).is_ok()
                {
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

/// How far ahead of a pair of small entries [`walk_visit`] asks for the log's bytes (each cache
/// line once). Where an entry starts is known only once the previous header is loaded, so a
/// cache miss on a header stalls the scan, and the hardware prefetcher starts over at every
/// 4 KiB page. Measured on a 256 MiB log of 64 B entries: 1-3 KiB ahead work alike; 4 and
/// 8 KiB were slower than no prefetch at all. Large entries are left to the hardware prefetcher
/// (prefetching there made a log of 1 KiB entries 7% slower to open).
const PREFETCH_AHEAD: usize = 2048;

/// Payloads up to this many bytes are checked two entries at a time by [`walk_visit`].
const PAIR_MAX_LEN: u32 = 256;

/// The entry at `pos` if it is small (payload up to [`PAIR_MAX_LEN`]) and passes every rule of
/// [`check_entry`] but the checksum as entry `expect` in `area`: its header, the header bytes
/// the checksum covers, and its payload.
#[inline(always)]
fn candidate<'a>(
    area: &'a [u8],
    pos: usize,
    expect: Lsn,
    slot: &Slot,
) -> Option<(EntryHeader, &'a [u8; HEADER_LEN - 4], &'a [u8])> {
    let (bytes, rest) = area.get(pos..)?.split_first_chunk::<HEADER_LEN>()?;
    let h = EntryHeader::decode(bytes);
    if h.len > PAIR_MAX_LEN || !passes_all_but_fit_and_checksum(&h, expect, slot) {
        return None;
    }
    let payload = rest.get(..h.len as usize)?;
    let (_, covered) = bytes.split_last_chunk::<{ HEADER_LEN - 4 }>()?;
    Some((h, covered, payload))
}

/// Rules 2, 4 and 5 of [`check_entry`] (FORMAT.md section 7): no unknown flag, the LSN
/// `expect`, the slot's epoch at or above its cut. (Without the mutants of `check_entry`: its
/// callers that decide acceptance use `check_entry` itself.)
#[inline(always)]
pub(crate) fn passes_all_but_fit_and_checksum(h: &EntryHeader, expect: Lsn, slot: &Slot) -> bool {
    h.flags & !KNOWN_FLAGS == 0
        && h.lsn == expect
        && (h.lsn < slot.cut_lsn || h.epoch == slot.epoch)
}

/// Records the accepted entry `h` at `pos` as entry `lsn` and moves past it.
#[inline(always)]
fn accept(
    w: &mut Walk,
    slot: &Slot,
    wrapped_at: usize,
    pos: &mut usize,
    lsn: &mut Lsn,
    h: &EntryHeader,
    visit: &mut impl FnMut(Lsn, usize, &EntryHeader),
) {
    visit(*lsn, *pos, h);
    if lsn.is_multiple_of(INDEX_STRIDE) {
        w.index.push((*lsn, *pos as u64));
    }
    // Batches are atomic only while they may be in flight: below the cut, every entry was
    // accepted before (or kept by a suffix truncation that cut a batch), so the flag is not
    // honoured there (FORMAT.md, "Batches").
    let ends_batch = h.flags & FLAG_CONTINUES == 0 || *lsn < slot.cut_lsn;
    *pos += h.entry_len();
    *lsn += 1;
    if ends_batch {
        w.entries += *lsn - w.next_lsn;
        w.tail = *pos;
        w.tail_wrap = wrapped_at;
        w.next_lsn = *lsn;
        w.batches += 1;
    }
}

/// How the walk `w` of `image` ended: at the end of its area, cleanly (an end marker, or a
/// complete entry no longer part of the log), or at the remains of an interrupted append.
pub(crate) fn end_state(image: &[u8], w: &Walk) -> TailState {
    let (tail, pos) = (w.tail, w.stop);
    let area_end = w.limit.min(image.len());
    if pos + HEADER_LEN > area_end && pos == tail {
        TailState::EndOfFile
    } else if pos == tail
        && (w.refusal.stale || image[pos..pos + END_MARKER_LEN].iter().all(|&b| b == 0))
    {
        TailState::Clean
    } else {
        TailState::Torn {
            reason: w.refusal.reason,
        }
    }
}

/// Scans `image` (the whole file) from the head named by `slot` — or, if `use_hint` and the
/// slot's tail hint names a valid entry, from there.
///
/// When the entry at the scan position is refused, the scan tries once to continue at the
/// start of the data area (the writer wraps there when an append does not fit before the end
/// of the file); entries there must end before the head. No batch spans the wrap.
///
/// `ahead(from, len)` is called as the scan goes (see [`walk_ahead`]): the media's chance to
/// read those bytes before the scan needs them.
pub(crate) fn scan(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    use_hint: bool,
    ahead: &dyn Fn(usize, usize),
) -> Scan {
    let head = slot.head_offset as usize;
    let (start, start_lsn) = match hint(image, salt, slot) {
        Some(h) if use_hint => h,
        _ => (head, slot.head_lsn),
    };
    let w = walk_ahead(image, salt, slot, start, start_lsn, Lsn::MAX, ahead);
    let (tail, pos) = (w.tail, w.stop);
    let area_end = w.limit.min(image.len());
    // (A clean end before a refused entry at the start of the data area may be a torn tail
    // there: `damage::torn_after_wrap` decides, `Scan::torn_at_wrap` makes it so.)
    let state = end_state(image, &w);
    // The discarded batch starts at the tail, unless the walk wrapped past the tail into it:
    // then it starts at the start of the data area (no batch spans the wrap).
    let torn_start = if pos < tail {
        format::DATA_OFFSET
    } else {
        tail
    };
    #[cfg(feature = "mutants")]
    let torn_start = if crate::mutants::is(crate::mutants::Mutant::TornFromTail) {
        tail
    } else {
        torn_start
    };
    let torn_bytes = match state {
        TailState::Torn { .. } => (pos - torn_start + claimed_at(image, pos, area_end)) as u64,
        _ => 0,
    };
    finish(slot, start_lsn, w, state, torn_bytes, torn_start)
}

impl Scan {
    /// Makes the end of this scan, clean at the end of the log's first part, a torn tail at
    /// the start of the data area, whose entry was refused for `reason` ([`wrap_refusal`]):
    /// the bytes there are reported, judged, refused by `Strict`, wiped by a writable open.
    pub(crate) fn torn_at_wrap(&mut self, image: &[u8], slot: &Slot, reason: &'static str) {
        let (head, at) = (slot.head_offset as usize, format::DATA_OFFSET);
        let h = EntryHeader::decode(&image[at..at + HEADER_LEN]);
        let fits = (h.len as usize) <= head - at - HEADER_LEN;
        self.torn_bytes = if fits { h.entry_len() } else { HEADER_LEN } as u64;
        self.torn_start = at;
        self.state = TailState::Torn { reason };
        self.refused = at;
    }

    /// Makes this scan's clean end a torn tail at the same place, refused for `reason`
    /// ([`crate::damage::torn_past_end`]): judged, reported, refused by `Strict`, wiped by a
    /// writable open as any other.
    pub(crate) fn torn_at_end(&mut self, image: &[u8], slot: &Slot, reason: &'static str) {
        let (at, head) = (self.stop, slot.head_offset as usize);
        let area_end = if at >= head { image.len() } else { head };
        self.torn_bytes = claimed_at(image, at, area_end) as u64;
        self.torn_start = at;
        self.state = TailState::Torn { reason };
        self.refused = at;
    }
}

/// The bytes the refused entry at `pos` claims in its area (ending at `area_end`): its length
/// if it fits, else its header, or what is left of the area.
fn claimed_at(image: &[u8], pos: usize, area_end: usize) -> usize {
    if pos + HEADER_LEN <= area_end {
        let h = EntryHeader::decode(&image[pos..pos + HEADER_LEN]);
        if (h.len as usize) <= area_end - pos - HEADER_LEN {
            h.entry_len()
        } else {
            HEADER_LEN
        }
    } else {
        area_end.saturating_sub(pos)
    }
}

/// The scan's result from its walk `w` (from `start_lsn`) and how it ended.
fn finish(
    slot: &Slot,
    start_lsn: Lsn,
    w: Walk,
    state: TailState,
    torn_bytes: u64,
    torn_start: usize,
) -> Scan {
    let index_base = w.index.first().map_or(w.next_lsn, |a| a.0);
    Scan {
        tail: w.tail,
        wrap_at: w.tail_wrap,
        next_lsn: w.next_lsn,
        entries: w.entries + (start_lsn - slot.head_lsn),
        torn_bytes,
        torn_start,
        state,
        index_base,
        index: w.index.into_iter().map(|a| a.1).collect(),
        scanned_from: start_lsn,
        stop: w.stop,
        refused: w.stop,
        stop_lsn: w.stop_lsn,
    }
}

/// Where a walk ended cleanly at `stop` in the log's first part (an end marker, a stale entry,
/// or no room for a header before the end of the file), the refusal of the entry at the start
/// of the data area as the entry after (LSN `stop_lsn`): the walk tried to wrap there, and the
/// entry there is refused as torn or damaged, not as a stale one (an earlier lap's, a deleted
/// suffix's), and its first word is not zero (an end marker, as anywhere else: nothing was
/// written there since a wipe). Damage to the first entry after a wrap, or the remains of an
/// append that wrapped ([`wrap_remains`]): [`crate::damage::assess`] judges it by what follows.
pub(crate) fn wrap_refusal(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    stop: usize,
    stop_lsn: Lsn,
) -> Option<Refusal> {
    let head = slot.head_offset as usize;
    let at = format::DATA_OFFSET;
    if stop < head || head <= at || at + HEADER_LEN > head {
        return None;
    }
    if image[at..at + END_MARKER_LEN].iter().all(|&b| b == 0) {
        return None;
    }
    match check_entry(image, at, head, stop_lsn, salt, slot) {
        Err(r) if !r.stale => Some(r),
        _ => None,
    }
}

/// Where [`wrap_refusal`] found a refused entry: whether it looks like the remains of the
/// append after `stop`, or like that append damaged:
/// the header passes every rule but the checksum as entry `stop_lsn`, or it is that entry
/// whole but for one bit of its LSN, epoch and flag words (with that bit restored, its
/// checksum matches: the last entry, one bit flipped there), or the header where its length
/// ends passes the rules as entry `stop_lsn + 1` (one flipped bit cannot break all three; old
/// bytes of an earlier lap or session pass none, but by chance): a torn tail there
/// ([`crate::damage::torn_after_wrap`]), which `Strict` refuses and a writable open wipes.
pub(crate) fn wrap_remains(image: &[u8], salt: u32, slot: &Slot, stop_lsn: Lsn) -> bool {
    let (head, at) = (slot.head_offset as usize, format::DATA_OFFSET);
    let h = EntryHeader::decode(&image[at..at + HEADER_LEN]);
    let next = at + h.entry_len();
    let fits = (h.len as usize) <= head - at - HEADER_LEN;
    // How many bits of the words rules 2, 4 and 5 read differ from what they ask.
    let epoch_off = if stop_lsn < slot.cut_lsn {
        0
    } else {
        (h.epoch ^ slot.epoch).count_ones()
    };
    let off = (h.lsn ^ stop_lsn).count_ones() + epoch_off + (h.flags & !KNOWN_FLAGS).count_ones();
    let whole_but_one_bit = || {
        let restored = EntryHeader {
            lsn: stop_lsn,
            epoch: if epoch_off == 0 { h.epoch } else { slot.epoch },
            flags: h.flags & KNOWN_FLAGS,
            ..h
        };
        let payload = &image[at + HEADER_LEN..at + HEADER_LEN + h.len as usize];
        format::entry_crc(format::payload_crc(salt, payload), &restored) == h.crc
    };
    passes_all_but_fit_and_checksum(&h, stop_lsn, slot)
        || (fits && off == 1 && whole_but_one_bit())
        || (fits
            && next + HEADER_LEN <= head
            && passes_all_but_fit_and_checksum(
                &EntryHeader::decode(&image[next..next + HEADER_LEN]),
                stop_lsn + 1,
                slot,
            ))
}

/// The offset of entry `lsn`, one recovery accepted (below the scan's next LSN), found by a
/// walk from the head that stops there (`None` if the walk stops before it: damage on the
/// way). For an LSN recovery did not accept the answer means nothing (the walk takes the
/// members of a batch before it knows whether the batch is whole).
pub(crate) fn offset_of(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    lsn: Lsn,
    ahead: &dyn Fn(usize, usize),
) -> Option<usize> {
    let head = slot.head_offset as usize;
    let w = walk_ahead(image, salt, slot, head, slot.head_lsn, lsn, ahead);
    if w.stop_lsn != lsn {
        return None;
    }
    if check_entry(image, w.stop, w.limit.min(image.len()), lsn, salt, slot).is_ok() {
        return Some(w.stop);
    }
    // Stopped where the first part ends: the entry is the first after the wrap.
    let data = format::DATA_OFFSET;
    // (Only where the walk itself would wrap: not inside a batch.)
    let wraps = w.stop >= head && w.stop == w.tail;
    (wraps && check_entry(image, data, head, lsn, salt, slot).is_ok()).then_some(data)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{encode_entry, DATA_OFFSET, FLAG_PAD};

    /// The walk as it was before entries were checked two at a time: one `check_entry` per
    /// entry. The two-at-a-time walk must give exactly the same result on every image.
    fn reference_walk(
        image: &[u8],
        salt: u32,
        slot: &Slot,
        start: usize,
        start_lsn: Lsn,
        visited: &mut Vec<(Lsn, usize, EntryHeader)>,
    ) -> Walk {
        let head = slot.head_offset as usize;
        let data = DATA_OFFSET;
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
                    visited.push((lsn, pos, h));
                    if lsn.is_multiple_of(INDEX_STRIDE) {
                        w.index.push((lsn, pos as u64));
                    }
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
        let next = w.next_lsn;
        w.index.retain(|&(l, _)| l < next);
        w.stop = pos;
        w.stop_lsn = lsn;
        w.refusal = refusal;
        w
    }

    struct Rng(u64);

    impl Rng {
        /// splitmix64
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// Writes entries from `pos` (LSNs from `lsn`) until one does not fit before `end`, or
    /// `count` are written; returns their offsets.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        rng: &mut Rng,
        image: &mut [u8],
        salt: u32,
        slot: &Slot,
        mut pos: usize,
        mut lsn: Lsn,
        end: usize,
        count: u64,
    ) -> Vec<(usize, Lsn)> {
        const SIZES: [usize; 12] = [0, 1, 7, 8, 20, 64, 64, 64, 200, 256, 257, 1000];
        let mut at = Vec::new();
        while (at.len() as u64) < count {
            let len = SIZES[rng.below(SIZES.len() as u64) as usize];
            let mut flags = if rng.chance(30) { FLAG_CONTINUES } else { 0 };
            if rng.chance(5) {
                flags |= FLAG_PAD;
            }
            let epoch = if lsn < slot.cut_lsn && rng.chance(50) {
                slot.epoch ^ 0x55
            } else {
                slot.epoch
            };
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let e = encode_entry(salt, epoch, lsn, flags, &payload);
            if pos + e.len() > end {
                break;
            }
            image[pos..pos + e.len()].copy_from_slice(&e);
            at.push((pos, lsn));
            pos += e.len();
            lsn += 1;
        }
        at
    }

    /// Spoils the entry at `pos` in one of the ways recovery must notice.
    fn damage(rng: &mut Rng, image: &mut [u8], salt: u32, slot: &Slot, pos: usize, lsn: Lsn) {
        let h = EntryHeader::decode(&image[pos..pos + HEADER_LEN]);
        if pos + h.entry_len() > image.len() {
            // Damaged before: its length is out of range already.
            image[pos + rng.below(HEADER_LEN as u64) as usize] ^= 0x80;
            return;
        }
        let payload = image[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize].to_vec();
        let rewrite = |image: &mut [u8], epoch: u32, lsn: Lsn, flags: u32| {
            let e = encode_entry(salt, epoch, lsn, flags, &payload);
            image[pos..pos + e.len()].copy_from_slice(&e);
        };
        match rng.below(8) {
            // A bit flip anywhere in the entry (header or payload).
            0 => {
                let at = pos + rng.below(h.entry_len() as u64) as usize;
                image[at] ^= 1 << rng.below(8);
            }
            // A well-formed entry with the wrong LSN (an earlier lap, a later entry).
            1 => rewrite(
                image,
                h.epoch,
                if rng.chance(50) { lsn - 1 } else { lsn + 1 },
                h.flags,
            ),
            // A well-formed entry of another session.
            2 => rewrite(image, slot.epoch.wrapping_add(1), lsn, h.flags),
            // An unknown flag, checksum valid.
            3 => rewrite(image, h.epoch, lsn, h.flags | 1 << (2 + rng.below(30))),
            // A length that runs past the end of the file.
            4 => image[pos + 4..pos + 8].copy_from_slice(&(u32::MAX - 3).to_le_bytes()),
            // A length that runs past the end of the file, with the checksum of a header
            // whose payload was cut off at the end of the file.
            5 => {
                let mut bad = EntryHeader {
                    len: (image.len() - pos - HEADER_LEN + 8) as u32,
                    ..h
                };
                bad.crc = format::entry_crc(format::payload_crc(salt, &[]), &bad);
                image[pos..pos + HEADER_LEN].copy_from_slice(&bad.encode());
            }
            // Only the header reached media.
            6 => image[pos + HEADER_LEN..pos + h.entry_len()].fill(0),
            // Nothing reached media.
            _ => image[pos..pos + h.entry_len()].fill(0),
        }
    }

    /// A walk in order asks for every byte of its window once, whatever the entries' sizes: from
    /// its start to the last step it reaches plus the window, without a gap or a repeat.
    #[test]
    fn read_ahead_asks_for_every_step_once() {
        use super::{read_ahead_next, read_ahead_start, READ_AHEAD_STEP, READ_AHEAD_STEPS};
        for entry in [88, 4120, 100 << 10, (1 << 20) + 8, 3 << 20] {
            for start in [4096, (1 << 20) - 8, 5 << 20] {
                let (from, len) = read_ahead_start(start);
                assert_eq!(from, start);
                let mut asked = vec![(from, len)];
                let mut pos = start;
                while pos < start + (40 << 20) {
                    let next = pos + entry;
                    asked.extend(read_ahead_next(pos, next));
                    pos = next;
                }
                for w in asked.windows(2) {
                    assert_eq!(
                        w[0].0 + w[0].1,
                        w[1].0,
                        "entry {entry}, start {start}: {w:?}"
                    );
                }
                let end = asked.last().map(|(f, l)| f + l).unwrap();
                assert_eq!(
                    end,
                    (pos / READ_AHEAD_STEP + READ_AHEAD_STEPS + 1) * READ_AHEAD_STEP
                );
            }
        }
        assert_eq!(
            read_ahead_next(5 << 20, 4096),
            Some(read_ahead_start(4096)),
            "a wrap starts again"
        );
    }

    /// Entries are checked two at a time; every image must give the walk (and the visits) of
    /// the one-at-a-time reference: a refused entry first or second in a pair, odd counts,
    /// batches across pairs, small and large payloads mixed, epochs around the cut, and the
    /// wrap to the start of the data area.
    #[test]
    fn pairwise_walk_matches_one_at_a_time() {
        let salt = 0x5eed_5a17;
        for case in 0..4000u64 {
            let mut rng = Rng(case);
            let cap = DATA_OFFSET + 4096 * (1 + rng.below(4) as usize);
            let mut image = vec![0u8; cap];
            let wraps = rng.chance(40);
            let head = if wraps {
                DATA_OFFSET + 8 * rng.below(((cap - DATA_OFFSET) / 8) as u64) as usize
            } else {
                DATA_OFFSET
            };
            let head_lsn = 1 + rng.below(200);
            let mut slot = Slot {
                seq: 1,
                head_offset: head as u64,
                head_lsn,
                cut_lsn: head_lsn,
                epoch: rng.next() as u32,
                flags: 0,
                hint_offset: 0,
                hint_lsn: 0,
            };
            let count = if rng.chance(20) {
                rng.below(6)
            } else {
                u64::MAX
            };
            slot.cut_lsn = head_lsn + rng.below(80);
            let mut at = fill(
                &mut rng, &mut image, salt, &slot, head, head_lsn, cap, count,
            );
            if wraps {
                let next = head_lsn + at.len() as u64;
                // Sometimes over the head: the entry that crosses it must be refused.
                let end = if rng.chance(20) { cap } else { head };
                let more = fill(
                    &mut rng,
                    &mut image,
                    salt,
                    &slot,
                    DATA_OFFSET,
                    next,
                    end,
                    count,
                );
                at.extend(more);
            }
            for _ in 0..rng.below(3) {
                if !at.is_empty() {
                    let (pos, lsn) = at[rng.below(at.len() as u64) as usize];
                    damage(&mut rng, &mut image, salt, &slot, pos, lsn);
                }
            }
            // From the head, and from a few entries further on (as after a tail hint).
            let mut starts = vec![(head, head_lsn)];
            for _ in 0..2 {
                if !at.is_empty() {
                    starts.push(at[rng.below(at.len() as u64) as usize]);
                }
            }
            for (start, lsn) in starts {
                let mut want_visits = Vec::new();
                let want = reference_walk(&image, salt, &slot, start, lsn, &mut want_visits);
                let mut visits = Vec::new();
                let got = walk_visit(&image, salt, &slot, start, lsn, |l, p, h| {
                    visits.push((l, p, *h))
                });
                let ctx = format!("case {case}, start {start}");
                assert_eq!(got.tail, want.tail, "{ctx}");
                assert_eq!(got.tail_wrap, want.tail_wrap, "{ctx}");
                assert_eq!(got.next_lsn, want.next_lsn, "{ctx}");
                assert_eq!(got.entries, want.entries, "{ctx}");
                assert_eq!(got.batches, want.batches, "{ctx}");
                assert_eq!(got.index, want.index, "{ctx}");
                assert_eq!(got.stop, want.stop, "{ctx}");
                assert_eq!(got.stop_lsn, want.stop_lsn, "{ctx}");
                assert_eq!(got.refusal, want.refusal, "{ctx}");
                assert_eq!(got.limit, want.limit, "{ctx}");
                assert_eq!(visits, want_visits, "{ctx}");
                // A walk from the head that stops at an accepted entry finds its offset
                // (the first one after a wrap included).
                if start == head {
                    let accepted: Vec<_> =
                        want_visits.iter().filter(|v| v.0 < want.next_lsn).collect();
                    for _ in 0..3 {
                        if let Some(&&(l, p, _)) =
                            accepted.get(rng.below(accepted.len().max(1) as u64) as usize)
                        {
                            assert_eq!(
                                offset_of(&image, salt, &slot, l, &|_, _| {}),
                                Some(p),
                                "{ctx}, lsn {l}"
                            );
                        }
                    }
                    if let Some(&&(l, p, _)) = accepted.last() {
                        assert_eq!(offset_of(&image, salt, &slot, l, &|_, _| {}), Some(p));
                    }
                }
            }
        }
    }
}
