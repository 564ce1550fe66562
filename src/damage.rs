//! Telling a torn tail from lost data, and salvaging what follows damage.
//!
//! When the scan stops at an entry that fails its checks, that entry is either the remains of
//! an interrupted append (expected after a crash: discard it) or damage to an acknowledged
//! entry (a media error, a stray write), which must not silently drop every entry after it.
//! Two kinds of evidence separate them (FORMAT.md, "Damage"):
//!
//! 1. **The entry is older than the session.** Every entry below the slot's `cut_lsn` was
//!    accepted by an earlier recovery or appended and then kept; none can be in flight. A scan
//!    that stops below the cut has lost acknowledged entries.
//! 2. **Valid entries continue the LSN sequence after it.** The search looks past the refused
//!    entry, at every 8-byte boundary (its length field may itself be damaged), for an entry
//!    whose checksum is valid and whose LSN is higher than the expected one, obeying the epoch
//!    rule. Entries of earlier laps carry lower LSNs; remains of earlier sessions and deleted
//!    suffixes carry another epoch; so neither qualifies. One in-flight batch whose first entry
//!    is torn can leave its later entries whole: a continuation that is exactly the rest of one
//!    batch (flagged as continuing, nothing valid after it) is therefore not evidence.
//!    Where the refused entry is whole with one set bit of its length cleared
//!    ([`one_bit_off_length`]), the search starts where it then ends: a wrong length must not
//!    hide the entries after it.
//!
//! The search covers at most [`SEARCH_BYTES`] past the refused entry and as much of the wrapped
//! part at the start of the data area. One [`Judge`] per judgement keeps its checksums (a
//! [`RangeCrcs`]), so that candidates claiming long lengths at every position (a payload of
//! encoded headers) read each block of the image once rather than once per candidate, and
//! its searches past claimed extents, so that refused entries claiming one extent search
//! past it once.

use crate::crc_ranges::RangeCrcs;
use crate::format::{
    self, EntryHeader, Slot, DATA_OFFSET, ENTRY_ALIGN, FLAG_CONTINUES, FLAG_PAD, HEADER_LEN,
    MAX_INFLIGHT, SLOT_CONCURRENT,
};
use crate::walk::{self, Scan};
use crate::Lsn;

/// How far past a refused entry the search for valid continuations looks, per area.
pub const SEARCH_BYTES: usize = 64 << 20;

/// Damage found inside the acknowledged part of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Offset of the refused entry (inside a batch: the bad entry, not the batch's first).
    pub offset: u64,
    /// LSN it should have carried.
    pub lsn: Lsn,
    /// Why it was refused.
    pub reason: &'static str,
    /// Valid entries found past the damage (0 if the evidence is the cut alone).
    pub beyond: u64,
    /// LSN range of the entries found past the damage.
    pub beyond_lsns: Option<(Lsn, Lsn)>,
}

/// What one judgement reuses between its searches: the checksums of ranges, and the searches
/// past claimed extents ([`Judge::find_past`]).
struct Judge<'a> {
    crcs: RangeCrcs<'a>,
    past: Vec<Past>,
}

/// A search past a claimed extent: from `from` (before `before`, entries ending by `end`) the
/// first valid entry with an LSN above `after` was `found`.
struct Past {
    from: usize,
    before: usize,
    end: usize,
    after: Lsn,
    found: Option<(usize, Lsn)>,
}

impl<'a> Judge<'a> {
    fn new(image: &'a [u8]) -> Self {
        Judge {
            crcs: RangeCrcs::new(image),
            past: Vec::new(),
        }
    }

    /// [`find_continuation`] past a claimed extent, remembered: refused entries that claim the
    /// same extent (headers in a row that claim one end, in a crafted payload or after it)
    /// ask the same search with rising LSNs, and each would otherwise read up to
    /// [`SEARCH_BYTES`] again. Exact: where nothing above LSN `a` was found before position
    /// `q`, nothing above a higher LSN is.
    #[allow(clippy::too_many_arguments)]
    fn find_past(
        &mut self,
        image: &[u8],
        salt: u32,
        slot: &Slot,
        from: usize,
        before: usize,
        end: usize,
        after: Lsn,
    ) -> Option<(usize, Lsn)> {
        let key = |p: &Past| (p.from, p.before, p.end) == (from, before, end);
        let mut start = from;
        if let Some(p) = self.past.iter().find(|p| key(p) && p.after <= after) {
            match p.found {
                None => return None,
                Some((q, l)) if l > after => return Some((q, l)),
                Some((q, _)) => start = q + ENTRY_ALIGN,
            }
        }
        // (`before` counted from `from`, as a search from there would.)
        let before_abs = before.min(from.saturating_add(SEARCH_BYTES));
        let found = find_continuation(image, salt, slot, self, start, before_abs, end, after);
        self.past.retain(|p| !key(p));
        if self.past.len() >= 4 {
            self.past.remove(0);
        }
        self.past.push(Past {
            from,
            before,
            end,
            after,
            found,
        });
        found
    }
}

/// A valid entry that continues the sequence past `after_lsn`, starting at an 8-byte boundary
/// in `[from, before)` (at most [`SEARCH_BYTES`] from `from`) and ending by `end`.
#[allow(clippy::too_many_arguments)]
fn find_continuation(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    j: &mut Judge,
    from: usize,
    before: usize,
    end: usize,
    after_lsn: Lsn,
) -> Option<(usize, Lsn)> {
    let end = end.min(image.len());
    let before = before.min(from.saturating_add(SEARCH_BYTES));
    let mut q = (from + ENTRY_ALIGN - 1) & !(ENTRY_ALIGN - 1);
    while q < before && q + HEADER_LEN <= end {
        let h = EntryHeader::decode(&image[q..q + HEADER_LEN]);
        // Cheap filters first: almost every position fails one of them. The checksum last,
        // from `crcs`: a torn payload of headers that claim long lengths would otherwise cost
        // a checksum of the rest of the file at every position. (Not a budget: genuine damage,
        // entries whose damaged lengths claim much, would spend it too, and running out would
        // drop the entries after them unreported.)
        if h.lsn > after_lsn
            && (h.len as usize) <= end - q - HEADER_LEN
            && walk::passes_all_but_fit_and_checksum(&h, h.lsn, slot)
            && walk::check_entry_by(image, q, end, h.lsn, slot, |a, b| j.crcs.append(salt, a, b))
                .is_ok()
        {
            return Some((q, h.lsn));
        }
        q += ENTRY_ALIGN;
    }
    None
}

/// Where valid entries continue after the entry refused at `stop` (LSN `stop_lsn`), if any:
/// past it in its own area, or in the wrapped part at the start of the data area.
///
/// If the refused entry's length is plausible, its payload is searched last, and a chain found
/// there counts only if it runs past the payload, or if it begins below `published` (the
/// reader area's published LSN, [`torn_past_end`]): a payload may itself hold encoded entries
/// (the remains of an interrupted append of such a payload must stay a torn tail), but those
/// carry LSNs above the interrupted append's own, which no writer published; a chain below
/// `published` inside the claimed extent is the log's own entries, hidden by a damaged length
/// that one bit cannot repair (the next entry damaged too, say).
pub(crate) fn continuation(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    stop: usize,
    stop_lsn: Lsn,
    published: Lsn,
) -> Option<(usize, Lsn)> {
    continuation_and_length(
        image,
        salt,
        slot,
        &mut Judge::new(image),
        stop,
        stop_lsn,
        published,
    )
    .0
}

/// [`continuation`], and whether the refused entry is whole with one set bit of its length
/// field cleared ([`one_bit_off_length`]).
fn continuation_and_length(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    j: &mut Judge,
    stop: usize,
    stop_lsn: Lsn,
    published: Lsn,
) -> (Option<(usize, Lsn)>, bool) {
    let head = slot.head_offset as usize;
    let in_first_part = stop >= head;
    let area_end = if in_first_part { image.len() } else { head };
    let (claimed_end, length_off) = claimed_end(image, salt, slot, j, stop, stop_lsn, area_end);
    let found = j
        .find_past(image, salt, slot, claimed_end, area_end, area_end, stop_lsn)
        .or_else(|| {
            (in_first_part && head > DATA_OFFSET)
                .then(|| j.find_past(image, salt, slot, DATA_OFFSET, head, head, stop_lsn))
                .flatten()
        });
    // Inside the claimed extent, up to `SEARCH_BYTES` past the refused entry (as past its
    // end): a wrong but plausible length may hide the next entries. An entry below
    // `published` there is evidence by itself; others only if their chain runs past the
    // extent.
    let window = claimed_end.min(stop.saturating_add(SEARCH_BYTES));
    let mut from = stop + ENTRY_ALIGN;
    let mut inner = None;
    // The entries of the chains already walked that ended inside the extent, one bit per
    // 8-byte position of the window: a walk from one of them is the rest of that chain and
    // ends there too. (Without this, a payload holding a chain of n encoded entries costs n
    // walks of up to n entries each.)
    let mut walked: Vec<u64> = Vec::new();
    let bit = |q: usize| ((q - stop) / ENTRY_ALIGN / 64, (q - stop) / ENTRY_ALIGN % 64);
    // And a bound on the entries walked in all: chains that merge into walked ones (an entry
    // inside one entry's payload whose chain joins the next) are walked to their end again.
    // Twice what the window can hold keeps this linear in its size; past it no chain is
    // walked, as past `SEARCH_BYTES`, but the search goes on for entries below `published`.
    // (No append leaves such nests: only a crafted payload can.)
    let mut walks = 2 * (window.saturating_sub(stop) / HEADER_LEN) + 64;
    while let Some((q, l)) =
        find_continuation(image, salt, slot, j, from, window, area_end, stop_lsn)
    {
        from = q + ENTRY_ALIGN;
        if l < published {
            inner = Some((q, l));
            break;
        }
        let (w64, b) = bit(q);
        if walks == 0 || walked.get(w64).is_some_and(|w| w & (1 << b) != 0) {
            continue;
        }
        let mut chain = Vec::new();
        let crc = |a, b| j.crcs.append(salt, a, b);
        let w = walk::walk_visit_by(image, salt, slot, q, l, |_, e, _| chain.push(e), crc);
        if w.stop > claimed_end || w.stop < q {
            inner = Some((q, l));
            break;
        }
        walks = walks.saturating_sub(chain.len());
        if walked.is_empty() {
            walked = vec![0; (window - stop) / ENTRY_ALIGN / 64 + 1];
        }
        for e in chain
            .into_iter()
            .filter(|&e| e > stop && e < w.stop && e < window)
        {
            let (w64, b) = bit(e);
            walked[w64] |= 1 << b;
        }
    }
    // (On equal LSNs, the entry past the extent: inside it, a payload may hold a copy.)
    let next = match (inner, found) {
        (Some(i), Some(o)) => Some(if i.1 < o.1 { i } else { o }),
        (i, o) => i.or(o),
    };
    (next, length_off)
}

/// Where the entry at `stop` ends: by its length field with one set bit cleared, if that makes
/// it a whole entry ([`one_bit_off_length`]; then `true`); else by the field itself if the
/// entry fits in the area; else just past its first word.
fn claimed_end(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    j: &mut Judge,
    stop: usize,
    stop_lsn: Lsn,
    area_end: usize,
) -> (usize, bool) {
    if stop + HEADER_LEN <= area_end {
        let h = EntryHeader::decode(&image[stop..stop + HEADER_LEN]);
        if let Some(len) = one_bit_off_length(image, salt, slot, j, stop, stop_lsn, area_end) {
            return (stop + format::entry_len(len as usize), true);
        }
        if (h.len as usize) <= area_end - stop - HEADER_LEN {
            return (stop + h.entry_len(), false);
        }
    }
    ((stop + ENTRY_ALIGN).min(area_end.max(stop)), false)
}

/// The true length of the entry refused at `stop` (as entry `stop_lsn`), if its length field
/// has one bit set that should be clear: with that bit cleared the entry fits in the area and
/// passes every rule, its checksum included, and where it then ends the next entry's header
/// (LSN `stop_lsn + 1`) begins, or an end marker, or the end of the area.
///
/// Such a flip in an entry of the current session would otherwise hide the entries after it:
/// the longer length claims them as its payload, and a chain found inside a claimed payload is
/// no evidence of damage (a payload may hold encoded entries). (A flip that clears a bit ends
/// the claimed entry inside its own payload, and the search past it finds the entries after
/// the real one.) An interrupted append does not look like this: the aligned 8-byte word that
/// holds the length holds the checksum too, and is either the one the append wrote (whose
/// length is the right one) or old bytes (whose checksum covers another entry), so no other
/// length makes the checksum match, but by chance (2^-32 per length tried) or by a payload
/// made with the salt to force it: so it only says where the entry ends, not that it is damage.
///
/// Only tried where the header carries the expected LSN and obeys the other rules but the
/// checksum fails (or the length runs past the area), and only for the lengths after which
/// the next entry's LSN or an end marker is found, their checksums from `crcs` (at most one
/// pass over the longest).
fn one_bit_off_length(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    j: &mut Judge,
    stop: usize,
    stop_lsn: Lsn,
    area_end: usize,
) -> Option<u32> {
    let area_end = area_end.min(image.len());
    if stop + HEADER_LEN > area_end {
        return None;
    }
    let h = EntryHeader::decode(&image[stop..stop + HEADER_LEN]);
    if !walk::passes_all_but_fit_and_checksum(&h, stop_lsn, slot) {
        return None;
    }
    let room = area_end - stop - HEADER_LEN;
    // What an append leaves right after an entry: the next entry, or the end marker (the
    // last entry, or the one before an append that wrapped), or the end of the area. (An end
    // is weaker evidence than the next LSN: zeros are common past a log's tail. Lengths that
    // end on one are tried up to `SEARCH_BYTES`, so that a torn tail with old bytes in its
    // length field does not cost a checksum over the rest of the file.)
    let next_or_end_at = |len: u32| {
        let at = stop + format::entry_len(len as usize);
        let end_ok = len as usize <= SEARCH_BYTES;
        if at + HEADER_LEN > area_end {
            return end_ok;
        }
        let next = EntryHeader::decode(&image[at..at + HEADER_LEN]);
        next.lsn == stop_lsn + 1 || (end_ok && image[at..at + ENTRY_ALIGN] == [0; ENTRY_ALIGN])
    };
    let payload = stop + HEADER_LEN;
    let mut lens: Vec<u32> = (0..u32::BITS)
        .filter(|&b| h.len & (1 << b) != 0)
        .map(|b| h.len & !(1 << b))
        .filter(|&l| l as usize <= room && next_or_end_at(l))
        .collect();
    lens.sort_unstable();
    lens.into_iter().find(|&len| {
        let pcrc = j.crcs.append(salt, payload, payload + len as usize);
        format::entry_crc(pcrc, &EntryHeader { len, ..h }) == h.crc
    })
}

/// Where the scan ended cleanly at the end of the first part and the entry at the start of
/// the data area is refused ([`walk::wrap_refusal`]): whether that end is a torn tail there
/// (the refusal's reason), judged there ([`Scan::torn_at_wrap`]): where the entry looks like
/// the remains of the append after ([`walk::wrap_remains`]), or where valid entries continue
/// after it (a clean end would drop them unreported, in `Strict` mode too, where they could be
/// the rest of its batch). The search runs only where such bytes lie at 4096 and do not look
/// like an append's: damage, or remains a crash in a wipe left. `published` as for
/// [`continuation`].
pub(crate) fn torn_after_wrap(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    scan: &Scan,
    published: Lsn,
) -> Option<&'static str> {
    if matches!(scan.state, walk::TailState::Torn { .. }) {
        return None;
    }
    let lsn = scan.stop_lsn;
    let r = walk::wrap_refusal(image, salt, slot, scan.stop, lsn)?;
    (walk::wrap_remains(image, salt, slot, lsn)
        || continuation(image, salt, slot, DATA_OFFSET, lsn, published).is_some())
    .then_some(r.reason)
}

/// Where the scan ended cleanly (an end marker, or a whole entry no longer part of the log)
/// at or above the session's cut, and not before a tail hint's entry: whether acknowledged
/// entries continue past it. Zeros over the start of an entry (its first word, a sector, a
/// page) read like an end marker, and the entries after them would be dropped unreported. The
/// evidence is `published`, the LSN up to which the last writer published entries to readers
/// (the reader area, FORMAT.md section 11): it rises only over durable entries (but a
/// write-back failure reported late in msync mode, FORMAT.md section 7), so a valid
/// entry past the end with an LSN below it was acknowledged. (Not any valid entry of the
/// session: an interrupted append whose header did not reach media can leave a payload of
/// encoded entries, and appends in flight after it can have completed; their LSNs are not
/// below `published`.) Then the end is judged as a refused entry there ([`Scan::torn_at_end`],
/// then [`assess`]), or, where the scan ended in the log's first part and those entries lie
/// in the wrapped part, at the start of the data area, where the entry that should continue
/// the scan is missing (`true`: [`Scan::torn_at_wrap`]). With none past the end but the end
/// below `vouched` ([`crate::recover::vouched`]), acknowledged entries are missing there: the
/// end is judged there too, and is damage ([`assess`]).
pub(crate) fn torn_past_end(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    scan: &Scan,
    published: Lsn,
    vouched: Lsn,
) -> Option<(&'static str, bool)> {
    let hinted = slot.hint_lsn != 0 && scan.next_lsn <= slot.hint_lsn;
    let clean = matches!(
        scan.state,
        walk::TailState::Clean | walk::TailState::EndOfFile
    );
    if !clean || scan.next_lsn < slot.cut_lsn || hinted || scan.next_lsn >= published {
        return None;
    }
    let head = slot.head_offset as usize;
    let eof = scan.state == walk::TailState::EndOfFile;
    match continuation(image, salt, slot, scan.stop, scan.stop_lsn, published) {
        Some((at, lsn)) if lsn < published => Some((
            if eof {
                "published entries continue past the end of the file"
            } else {
                "published entries continue past an end marker"
            },
            scan.stop >= head && at < head,
        )),
        _ if scan.next_lsn < vouched => Some((
            if eof {
                "acknowledged entries missing at the end of the file"
            } else {
                "acknowledged entries missing at an end marker"
            },
            missing_at(slot, &scan.state, scan.stop) != scan.stop,
        )),
        _ => None,
    }
}

/// Where the entry missing at the end of a walk that stopped at `stop` in `state` lies: there,
/// or at the start of the data area where the walk reached the end of the file in the log's
/// first part (the next entry was written there, below the head).
fn missing_at(slot: &Slot, state: &walk::TailState, stop: usize) -> usize {
    let head = slot.head_offset as usize;
    if *state == walk::TailState::EndOfFile && stop >= head && head > DATA_OFFSET {
        DATA_OFFSET
    } else {
        stop
    }
}

/// What [`assess`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Assessment {
    /// Damage inside the acknowledged entries, if the end is that.
    pub damage: Option<Damage>,
    /// Else, valid entries found after the refused one that could be the rest of appends in
    /// flight with it (the exception of rule 2): discarded with the torn tail.
    pub torn_entries: u64,
}

/// Decides whether the end the scan found is damage rather than a torn tail. `published` is
/// the reader area's published LSN ([`torn_past_end`]): valid entries after the refused one
/// with LSNs below it were acknowledged, so no append in flight explains them. Below
/// `vouched` ([`crate::recover::vouched`]) the refused entry itself was acknowledged: damage
/// whatever follows it.
pub(crate) fn assess(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    scan: &Scan,
    published: Lsn,
    vouched: Lsn,
) -> Assessment {
    // The entry that is actually bad: where the scan stopped (inside a batch, the entries of
    // the batch before it are discarded with it, but they are not the damage), or the first
    // after a wrap (`Scan::refused`, or refused there behind a clean end). Salvage names the
    // same entry (`Gap::offset`, `Gap::first_lsn`).
    let lsn = scan.stop_lsn;
    // (And where the search for entries after it starts: the missing entry's place is not
    // known beyond `missing_at`.)
    let mut search_from = None;
    let (offset, reason) = match scan.state {
        walk::TailState::Torn { reason } => (scan.refused, reason),
        _ => {
            let wrap = walk::wrap_refusal(image, salt, slot, scan.stop, lsn);
            // A clean end below the cut, or at or before the tail hint's entry, is damage too:
            // acknowledged entries are missing. Else the entry refused after the wrap may be
            // damage, judged by what follows it.
            let hinted = slot.hint_lsn != 0 && scan.next_lsn <= slot.hint_lsn;
            match wrap {
                Some(r) => (DATA_OFFSET, r.reason),
                None if scan.next_lsn >= slot.cut_lsn && !hinted => return Assessment::default(),
                None => {
                    search_from = Some(scan.stop);
                    (missing_at(slot, &scan.state, scan.stop), "entry missing")
                }
            }
        }
    };
    let j = &mut Judge::new(image);
    let from = search_from.unwrap_or(offset);
    let (cont, length_off) = continuation_and_length(image, salt, slot, j, from, lsn, published);
    let (beyond, beyond_lsns, rest_of_one_batch) = match cont {
        Some((q, l)) => {
            let c = Runs::from(image, salt, slot, j, q, l, published).follows(0, slot);
            (c.count, (c.count > 0).then(|| (l, c.end - 1)), c.in_flight)
        }
        None => (0, None, false),
    };
    // (Entries after it below the published LSN were acknowledged, and the refused entry
    // before them with them: published entries are durable, published in LSN order.)
    let acknowledged = cont.is_some_and(|(_, l)| l < published);
    let below_cut = lsn < slot.cut_lsn;
    // (The writer vouched for it: acknowledged and durable, in a pair of words one fault
    // cannot raise.)
    let vouched_for = lsn < vouched;
    // A tail hint names an entry that was durable when the slot was written: one refused at
    // or before it was acknowledged too.
    let hinted = slot.hint_lsn != 0 && lsn <= slot.hint_lsn;
    // (An entry whole with one set bit of its length cleared is judged like any other: a
    // payload made with the salt can make an interrupted append look like that, and a crash
    // must not make the log unopenable. The repair only finds where the entry ends, so that
    // the wrong length does not hide the entries after it.)
    let in_flight = rest_of_one_batch && !acknowledged;
    if below_cut || hinted || vouched_for || (beyond > 0 && !in_flight) {
        let damage = Damage {
            offset: offset as u64,
            lsn,
            reason: if below_cut && beyond == 0 {
                "acknowledged entries before the session's cut are unreadable"
            } else if hinted && beyond == 0 {
                "acknowledged entries up to the tail hint are unreadable"
            } else if vouched_for && beyond == 0 {
                "acknowledged entries the writer vouched for (reader area) are unreadable"
            } else if length_off {
                "length field damaged (the entry is whole with one bit of it cleared)"
            } else {
                reason
            },
            beyond,
            beyond_lsns,
        };
        Assessment {
            damage: Some(damage),
            torn_entries: 0,
        }
    } else {
        Assessment {
            damage: None,
            torn_entries: beyond,
        }
    }
}

/// The valid entries that follow a refused one, from `(q, l)` on.
struct Follows {
    /// How many (batches in flight included).
    count: u64,
    /// The LSN after the last of them.
    end: Lsn,
    /// They could be the remains of appends that were in flight with the refused one, never
    /// acknowledged: a torn tail rather than damage.
    in_flight: bool,
}

/// The runs of valid entries from a continuation `(q, l)` on, across further refused entries,
/// to the last: what [`Runs::follows`] sums up, from any of them on. Walked and summed once,
/// so that a salvage that asks at every gap does not walk every later run again (and search
/// past the last one again, up to [`SEARCH_BYTES`]), which made it quadratic in the gaps.
struct Runs {
    /// Each run's first position, and from it to the end: the entries, and the batch ends
    /// among them.
    runs: Vec<(usize, u64, u64)>,
    /// The LSN after the last run.
    end: Lsn,
    /// The last run ends with entries after its last batch end: an append whose end was not
    /// seen.
    unfinished: bool,
    /// Where [`Runs::index_of`] looks first (a salvage asks in order).
    cursor: usize,
}

impl Runs {
    fn from(
        image: &[u8],
        salt: u32,
        slot: &Slot,
        j: &mut Judge,
        q: usize,
        l: Lsn,
        published: Lsn,
    ) -> Runs {
        // Every run of valid entries from `(q, l)` on, across further refused entries: a
        // second damaged entry must not hide the acknowledged ones behind it (a run that ends
        // in one batch end would look like the rest of one batch), and every valid entry is
        // counted. (Its length may be the damage: repaired as for the first.)
        let (mut q, mut l) = (q, l);
        let mut runs = Vec::new();
        let (end, unfinished) = loop {
            let crc = |a, b| j.crcs.append(salt, a, b);
            let w = walk::walk_visit_by(image, salt, slot, q, l, |_, _, _| {}, crc);
            runs.push((q, w.stop_lsn - l, w.batches));
            match continuation_and_length(image, salt, slot, j, w.stop, w.stop_lsn, published).0 {
                // Damage again, and valid entries after it. An append left unfinished by this
                // run may go on past the refused entry: it is counted by its end.
                Some((q2, l2)) => (q, l) = (q2, l2),
                None => break (w.stop_lsn, w.entries < w.stop_lsn - l),
            }
        };
        // From each run to the end.
        let (mut count, mut batch_ends) = (0, 0);
        for r in runs.iter_mut().rev() {
            count += r.1;
            batch_ends += r.2;
            (r.1, r.2) = (count, batch_ends);
        }
        Runs {
            runs,
            end,
            unfinished,
            cursor: 0,
        }
    }

    /// The run that begins at `q`, if it is one of these.
    fn index_of(&mut self, q: usize) -> Option<usize> {
        let i = (self.cursor..self.runs.len())
            .chain(0..self.cursor)
            .find(|&i| self.runs[i].0 == q)?;
        self.cursor = i;
        Some(i)
    }

    /// What follows the refused entry from run `i` on.
    fn follows(&self, i: usize, slot: &Slot) -> Follows {
        // How many appends in flight may have left valid entries behind the refused one: one
        // at a time, only the rest of the refused entry's own batch (whose next entries may be
        // torn too), so at most one batch end, with nothing after it; overlapping appends, that
        // and up to MAX_INFLIGHT - 1 other batches (the refused entry's reservation is one of
        // the MAX_INFLIGHT in flight), so MAX_INFLIGHT batch ends in all. (The refused entry's
        // own flags cannot tell whether its batch goes on: its flag word may be one of those
        // that did not reach media.)
        let most = if slot.flags & SLOT_CONCURRENT == 0 {
            1
        } else {
            MAX_INFLIGHT as u64
        };
        let (_, count, batch_ends) = self.runs[i];
        Follows {
            count,
            end: self.end,
            in_flight: batch_ends + u64::from(self.unfinished) <= most,
        }
    }
}

/// A gap a salvage skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gap {
    /// Offset of the first unreadable byte.
    pub offset: u64,
    /// Offset where valid entries resume (0 if none were found).
    pub resume_offset: u64,
    /// First LSN missing.
    pub first_lsn: Lsn,
    /// Last LSN missing (`first_lsn - 1` if no LSN is missing: damage between batches).
    pub last_lsn: Lsn,
}

/// Visits every valid entry of the log in LSN order, skipping damaged regions, and returns the
/// gaps, how many valid entries at the end it did not visit, and where it stopped
/// ([`Salvaged`]). Inside acknowledged data batches are not held back (every entry whose
/// checks pass is visited), but what recovery would discard as a torn tail is not visited:
/// the entries of a batch whose end is refused at the end of the log, and valid entries after
/// the last refused one that could be the remains of appends in flight with it (the rule of
/// [`assess`]). Those were never acknowledged.
///
/// Valid entries below `published` (the reader area's published LSN, [`torn_past_end`])
/// were acknowledged: past a refused entry or a clean end, they are visited, and the end is a
/// gap. Below `vouched` ([`crate::recover::vouched`]) every entry was acknowledged: an end
/// below it is a gap up to it, and what the walk held of a batch broken there is visited.
/// `slot_damage` is the offset of a damaged current slot that `slot`, the older copy, stands
/// in for ([`crate::recover::slot_short_of_published`]): the vouched LSNs (where nothing is
/// vouched for, the published ones) past the end it leads to are a gap there. (Not copied,
/// though whole entries of the session since may lie there under its epoch: where the writer
/// synced with `msync`, a lost write-back beside a torn slot update can leave a deleted
/// suffix's entries in their place, with the same LSNs and another epoch.)
///
/// `published_past_end` is the published LSN where recovery took it for evidence of entries
/// missing past the end ([`crate::RecoveryReport::published_missing`]; 0 where it did not):
/// a batch whose end is refused at the end of the log below it was published whole, so what
/// the walk held of it was acknowledged and is visited (its LSNs from the refused entry on
/// are the missing ones, which the caller reports).
pub(crate) fn salvage(
    image: &[u8],
    salt: u32,
    slot: &Slot,
    (published, vouched, published_past_end): (Lsn, Lsn, Lsn),
    slot_damage: Option<u64>,
    mut visit: impl FnMut(Lsn, &[u8]),
) -> Salvaged {
    let mut gaps = Vec::new();
    let j = &mut Judge::new(image);
    let mut pos = slot.head_offset as usize;
    let mut lsn = slot.head_lsn;
    // Entries of a batch at or above the cut whose end has not been seen yet.
    let mut pending: Vec<(Lsn, usize, u32)> = Vec::new();
    // The runs after the first gap at or above the cut, walked once.
    let mut runs: Option<Runs> = None;
    loop {
        // Valid entries after the last refused one that could be appends in flight with it.
        let mut in_flight = 0;
        let w = walk::walk_visit(image, salt, slot, pos, lsn, |l, p, h| {
            pending.push((l, p, h.len));
            let ends = h.flags & FLAG_CONTINUES == 0 || l < slot.cut_lsn;
            if ends {
                visit_held(image, &mut pending, &mut visit);
            }
        });
        // Where the walk ended cleanly before a wrap whose first entry is refused, that entry
        // is the one judged (as `assess` does).
        let state = walk::end_state(image, &w);
        let clean = !matches!(state, walk::TailState::Torn { .. });
        let at = if clean && walk::wrap_refusal(image, salt, slot, w.stop, w.stop_lsn).is_some() {
            DATA_OFFSET
        } else {
            w.stop
        };
        // Where the gap begins (`assess` names the same place).
        let gap_at = if at == w.stop {
            missing_at(slot, &state, w.stop)
        } else {
            at
        } as u64;
        let (next, _) = continuation_and_length(image, salt, slot, j, at, w.stop_lsn, published);
        let next = next.filter(|&(q, l)| {
            if w.stop_lsn < slot.cut_lsn || l < published {
                return true;
            }
            let i = match runs.as_mut().and_then(|r| r.index_of(q)) {
                Some(i) => i,
                None => {
                    runs = Some(Runs::from(image, salt, slot, j, q, l, published));
                    0
                }
            };
            let follows = runs.as_ref().expect("walked above").follows(i, slot);
            if follows.in_flight {
                in_flight = follows.count;
            }
            !follows.in_flight
        });
        match next {
            // Damage inside acknowledged data: what the walk held back of a batch broken by
            // it was acknowledged (later appends were), so it is visited.
            Some((q, l)) => {
                visit_held(image, &mut pending, &mut visit);
                // Continuations have strictly higher LSNs, so this loop ends.
                gaps.push(Gap {
                    offset: gap_at,
                    resume_offset: q as u64,
                    first_lsn: w.stop_lsn,
                    last_lsn: l - 1,
                });
                pos = q;
                lsn = l;
            }
            None => {
                // Acknowledged entries missing at the end: before the cut, or vouched for
                // (but where the current slot is damaged: then the gap is there, below). A
                // batch the walk held whose end is among them was acknowledged whole (the
                // writer publishes whole reservations), so what it held is visited.
                let acknowledged = match slot_damage {
                    None => slot.cut_lsn.max(vouched),
                    Some(_) => slot.cut_lsn,
                };
                if w.stop_lsn < acknowledged {
                    visit_held(image, &mut pending, &mut visit);
                    gaps.push(Gap {
                        offset: gap_at,
                        resume_offset: 0,
                        first_lsn: w.stop_lsn,
                        last_lsn: acknowledged - 1,
                    });
                } else if w.stop_lsn < published_past_end {
                    visit_held(image, &mut pending, &mut visit);
                }
                let lost_from = w.stop_lsn.max(acknowledged);
                // (Up to what the slot damage was found by: the vouched LSN, or where nothing
                // is vouched for (msync mode, a log of version 2), the published one.)
                let lost_to = if vouched > 0 { vouched } else { published };
                if let Some(off) = slot_damage.filter(|_| lost_to > lost_from) {
                    // The LSNs from the end on were acknowledged, so was what the walk held of
                    // a batch broken there.
                    visit_held(image, &mut pending, &mut visit);
                    gaps.push(Gap {
                        offset: off,
                        resume_offset: 0,
                        first_lsn: lost_from,
                        last_lsn: lost_to - 1,
                    });
                }
                // What the walk held of a batch whose end it did not see, and what could be
                // the rest of appends in flight: a torn tail.
                return Salvaged {
                    gaps,
                    torn: pending.len() as u64 + in_flight,
                    // (What the walk still holds are the LSNs right below where it stopped.)
                    end: w.stop_lsn - pending.len() as u64,
                };
            }
        }
    }
}

/// What [`salvage`] found besides the entries it visited.
pub(crate) struct Salvaged {
    /// The damaged regions, with the LSNs each swallowed.
    pub gaps: Vec<Gap>,
    /// Valid entries at the end it did not visit: a torn tail's.
    pub torn: u64,
    /// The LSN after the last whole append its walk found in sequence, padding included (not
    /// counted: what it held of a batch whose end it did not see, and the entries past the
    /// end that could be appends in flight).
    pub end: Lsn,
}

/// Visits the entries held back in `held` (LSN, offset, length), but padding, and forgets them.
fn visit_held(image: &[u8], held: &mut Vec<(Lsn, usize, u32)>, visit: &mut impl FnMut(Lsn, &[u8])) {
    for (l, p, len) in held.drain(..) {
        let h = EntryHeader::decode(&image[p..p + HEADER_LEN]);
        if h.flags & FLAG_PAD == 0 {
            visit(l, &image[p + HEADER_LEN..p + HEADER_LEN + len as usize]);
        }
    }
}
