//! Segments of a scenario and what a crash inside one may recover to.

use std::collections::VecDeque;
use std::ops::Range;

use daxlog::format;

use crate::{Op, Run, ThreadId};

// ---- Segments ----------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub(crate) enum Start {
    /// `Log::create_on` over the initial image, which held these entries (if a log).
    Create { old: Vec<Vec<u8>> },
    /// `Log::open_on` of the initial image.
    Open,
}

/// What an [`Event`] did to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An append or a batch (its payloads are the event's).
    Append,
    /// `truncate_before(lsn)` (also `reset()`, as `truncate_before(next_lsn)`).
    TruncateBefore(u64),
    /// `truncate_after(lsn)`.
    TruncateAfter(u64),
}

/// One successful append, batch or truncation (or an append whose barrier failed, which is
/// never acknowledged, or one abandoned by a panic, whose LSNs hold padding).
#[derive(Clone, Debug)]
pub struct Event {
    /// Trace length before the call.
    pub start: usize,
    /// Trace length after the call (when it returned: the append is acknowledged from here);
    /// [`NEVER`] for an append whose barrier failed (it stays in flight for good).
    pub end: usize,
    /// Offset where its first entry starts (appends; 0 for truncations).
    pub offset: usize,
    /// The payloads (appends; empty for truncations).
    pub payloads: Vec<Vec<u8>>,
    /// What it did.
    pub kind: EventKind,
    /// The LSNs it got (appends; empty for truncations).
    pub lsns: Range<u64>,
    /// The simulated thread that made the call.
    pub thread: ThreadId,
    /// The concurrent phase it belongs to (0: a call made alone).
    pub block: usize,
    /// Its appender panicked before storing the entries: the LSNs hold padding of the
    /// payloads' lengths.
    pub pad: bool,
    /// In a concurrent phase with suffix truncations beside the appends: how many of them came
    /// before it (an append: whose slot was stored before the append's first store; a
    /// truncation: made before it by the truncating thread); a suffix truncation counts
    /// itself. 0 otherwise.
    pub epoch: usize,
    /// A suffix truncation in a concurrent phase: the trace positions from its slot store to
    /// right after the drain that made the slot durable. Empty otherwise.
    pub slot: Range<usize>,
}

/// [`Event::end`] of an append that never returns success (its barrier failed).
pub const NEVER: usize = usize::MAX;

impl Event {
    /// Offsets of its entries' starts.
    pub fn entry_offsets(&self) -> Vec<usize> {
        let mut at = self.offset;
        self.payloads
            .iter()
            .map(|p| {
                let o = at;
                at += format::entry_len(p.len());
                o
            })
            .collect()
    }

    /// Bytes its entries occupy on media.
    pub fn bytes(&self) -> usize {
        self.payloads
            .iter()
            .map(|p| format::entry_len(p.len()))
            .sum()
    }
}

/// Which crash points of a segment are checked when not all of them are (long runs).
#[derive(Clone, Debug)]
pub struct Sampling {
    /// Each other point is checked with probability `1 / one_in` (decided by the seed).
    pub one_in: u64,
    /// Every point inside these events (indices into the segment's events) is checked.
    pub full: Vec<usize>,
    /// Every point in these ranges is checked.
    pub windows: Vec<Range<usize>>,
}

/// An entry the log held when a segment started (as the recovery that began it found it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseEntry {
    /// Its payload (zeros for padding).
    pub payload: Vec<u8>,
    /// Padding of an abandoned append.
    pub pad: bool,
    /// Where it lies.
    pub offset: usize,
}

/// A recorded segment of a scenario.
#[derive(Debug)]
pub struct Segment {
    pub(crate) run: Run,
    pub(crate) start: Start,
    /// Trace length when `create_on`/`open_on` returned.
    pub(crate) start_end: usize,
    /// LSN of the first entry at the start (the next LSN if the log was empty).
    pub(crate) base_first: u64,
    pub(crate) base: Vec<BaseEntry>,
    pub(crate) events: Vec<Event>,
    pub(crate) sampling: Option<Sampling>,
}

impl Segment {
    /// The successful appends and truncations of the segment.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The entries the log held when the segment started.
    pub fn base(&self) -> &[BaseEntry] {
        &self.base
    }

    /// msync media: the appends whose thread stored entries with non-temporal stores and whose
    /// entries another thread synced, each as the crash points from right before that sync to
    /// the append's return (inclusive: it is acknowledged there). The sync of an append is the
    /// first flush after its last non-temporal store whose range holds the append's last byte
    /// (the group commit's `msync` of the tickets it covers; the range of the ticket before
    /// ends 8 bytes into this one, at its end marker, and does not count). Such an append is
    /// durable only if its thread fenced before it marked its ticket ready (what
    /// `daxlog::mutants::Mutant::MsyncNtNoFence` leaves out).
    pub fn nt_synced_by_other(&self) -> Vec<Range<usize>> {
        let ops = &self.run.ops;
        let mut windows = Vec::new();
        for e in self.events.iter().filter(|e| e.kind == EventKind::Append) {
            let end = e.end.min(ops.len());
            let Some(last_nt) = (e.start..end).rev().find(|&i| {
                self.run.thread_of(i) == e.thread
                    && matches!(ops[i], Op::StoreNt { off, .. } if off >= format::DATA_OFFSET)
            }) else {
                continue;
            };
            let last = e.offset + e.bytes() - 1;
            let sync = (last_nt + 1..ops.len()).find(
                |&i| matches!(ops[i], Op::Flush { off, len } if off <= last && last < off + len),
            );
            if let Some(f) = sync.filter(|&i| self.run.thread_of(i) != e.thread) {
                windows.push(f.min(end)..end + 1);
            }
        }
        windows
    }

    /// Every entry the log holds at the end of the segment (with appends and truncations
    /// applied; padding as zeros), and the LSN of the first.
    pub fn contents(&self) -> (u64, Vec<Vec<u8>>) {
        let w = self.expect_after_all();
        (
            w.first,
            w.entries.iter().map(|e| e.payload.to_vec()).collect(),
        )
    }

    /// Every entry acknowledged by the end of the segment (with truncations applied).
    pub fn all_entries(&self) -> Vec<Vec<u8>> {
        self.contents().1
    }

    pub(crate) fn base_contents(&self) -> Contents<'_> {
        Contents {
            first: self.base_first,
            entries: self
                .base
                .iter()
                .map(|b| Ent {
                    payload: &b.payload,
                    pad: b.pad,
                    off: b.offset,
                })
                .collect(),
        }
    }

    pub(crate) fn expect_after_all(&self) -> Want<'_> {
        match self.expect_log(self.run.ops.len() + 1) {
            Expect::Log { mut alts, .. } => alts.pop().expect("an alternative"),
            Expect::Creating { .. } => unreachable!("expect_log never says Creating"),
        }
    }

    /// What a crash at point `p` may recover to (after `create_on`/`open_on` returned).
    ///
    /// The events form phases in time: a call made alone, or the appends of one concurrent
    /// phase ([`Event::block`]). Every phase that ended before `p` happened; the one `p` falls
    /// in (if any) decides the alternatives; later ones have not started.
    pub(crate) fn expect_log(&self, p: usize) -> Expect<'_> {
        let mut c = self.base_contents();
        let mut acked = 0;
        let mut i = 0;
        while i < self.events.len() {
            let e = &self.events[i];
            let j = if e.block == 0 {
                i + 1
            } else {
                i + self.events[i..]
                    .iter()
                    .take_while(|x| x.block == e.block)
                    .count()
            };
            let phase = &self.events[i..j];
            if phase.iter().all(|x| x.end <= p) {
                if e.block == 0 {
                    c.apply(e);
                } else {
                    let epochs = phase.iter().map(|x| x.epoch).max().unwrap_or(0);
                    for epoch in 0..=epochs {
                        apply_epoch(&mut c, phase, epoch);
                        if let Some(t) = suffix_cut(phase, epoch + 1) {
                            c.apply(t);
                        }
                    }
                }
                acked += phase.len();
                i = j;
                continue;
            }
            if phase.iter().all(|x| x.start >= p) {
                break;
            }
            if e.block == 0 {
                // One call in flight: its pre- and post-state.
                let mut alts = vec![c.want()];
                c.apply(e);
                let w = c.want();
                if w != alts[0] {
                    alts.push(w);
                }
                return Expect::Log {
                    alts,
                    acked,
                    inflight: 1,
                    truncating: e.kind != EventKind::Append,
                    may_tear: e.kind == EventKind::Append,
                };
            }
            return self.expect_concurrent(c, acked, phase, p);
        }
        Expect::Log {
            alts: vec![c.want()],
            acked,
            inflight: 0,
            truncating: false,
            may_tear: false,
        }
    }

    /// Appends from several threads in flight at `p`: the log must be a prefix of the LSN
    /// sequence that holds every acknowledged entry (and so every entry before one: the
    /// ordering rule), ends at a batch boundary, and holds only appends that had started.
    ///
    /// Suffix truncations beside the appends (`Session::concurrent_cutting`) divide the phase
    /// into epochs: each waits for the appends reserved before it and holds off new ones until
    /// it is done, so the appends of one epoch all came before it and those of the next after
    /// it. An epoch whose truncation's slot is durable at `p` happened in full, and so did
    /// that truncation; while its slot is stored but not yet durable, the log is either what
    /// the epoch may leave at `p` or every entry of the epoch with the suffix deleted.
    fn expect_concurrent<'a>(
        &'a self,
        mut c: Contents<'a>,
        acked: usize,
        phase: &'a [Event],
        p: usize,
    ) -> Expect<'a> {
        let acked = acked + phase.iter().filter(|e| e.end <= p).count();
        let inflight = phase
            .iter()
            .filter(|e| e.kind == EventKind::Append && e.start < p && p < e.end)
            .count();
        let truncating = phase
            .iter()
            .any(|e| e.kind != EventKind::Append && e.start < p && p < e.end);
        let mut epoch = 0;
        while let Some(t) = suffix_cut(phase, epoch + 1).filter(|t| t.slot.end <= p) {
            apply_epoch(&mut c, phase, epoch);
            c.apply(t);
            epoch += 1;
        }
        let mut alts = epoch_alts(c.clone(), phase, epoch, p);
        if let Some(t) = suffix_cut(phase, epoch + 1).filter(|t| t.slot.start < p) {
            let mut cut = c;
            apply_epoch(&mut cut, phase, epoch);
            cut.apply(t);
            alts.push(cut);
        }
        assert!(!alts.is_empty(), "a truncation beyond every durable state");
        let mut wants: Vec<Want<'a>> = Vec::new();
        for a in alts {
            let w = a.want();
            if !wants.contains(&w) {
                wants.push(w);
            }
        }
        Expect::Log {
            alts: wants,
            acked,
            inflight,
            truncating,
            may_tear: inflight > 0,
        }
    }
}

/// The suffix truncation of a concurrent phase that begins epoch `epoch` (counting from 1).
fn suffix_cut(phase: &[Event], epoch: usize) -> Option<&Event> {
    phase
        .iter()
        .find(|e| matches!(e.kind, EventKind::TruncateAfter(_)) && e.epoch == epoch)
}

/// Applies every append and prefix truncation of epoch `epoch` of a concurrent phase.
fn apply_epoch<'a>(c: &mut Contents<'a>, phase: &'a [Event], epoch: usize) {
    let mut evs: Vec<&Event> = phase
        .iter()
        .filter(|e| e.epoch == epoch && !matches!(e.kind, EventKind::TruncateAfter(_)))
        .collect();
    evs.sort_by_key(|x| x.lsns.start);
    for x in evs {
        c.apply(x);
    }
}

/// What epoch `epoch` of a concurrent phase, which began with the contents `c`, may leave at
/// `p`: its appends that had started, in LSN order, up to any point at or after the highest
/// acknowledged one; and its prefix truncations, those that returned in every alternative,
/// one in flight in some.
fn epoch_alts<'a>(
    mut c: Contents<'a>,
    phase: &'a [Event],
    epoch: usize,
    p: usize,
) -> Vec<Contents<'a>> {
    let mine = |e: &&Event| e.epoch == epoch;
    let (mut evs, cuts): (Vec<&Event>, Vec<&Event>) = phase
        .iter()
        .filter(mine)
        .filter(|e| !matches!(e.kind, EventKind::TruncateAfter(_)))
        .partition(|e| e.kind == EventKind::Append);
    evs.sort_by_key(|e| e.lsns.start);
    let need = evs
        .iter()
        .filter(|e| e.end <= p)
        .map(|e| e.lsns.end)
        .max()
        .unwrap_or(0);
    let mut alts = Vec::new();
    if c.next() >= need {
        alts.push(c.clone());
    }
    for e in evs {
        if e.start >= p {
            break;
        }
        c.apply(e);
        if c.next() >= need {
            alts.push(c.clone());
        }
    }
    assert!(
        !alts.is_empty(),
        "an acknowledged append follows one that had not started"
    );
    // A truncation of `l` is made while `l` is at most the published next LSN, so the
    // durable log reaches `l` whenever it shows the truncation. One that returned shows
    // in every alternative; one in flight may show or not.
    for t in &cuts {
        let EventKind::TruncateBefore(l) = t.kind else {
            unreachable!()
        };
        if t.start >= p {
            continue;
        }
        let done = t.end <= p;
        let mut next = Vec::new();
        for a in alts {
            if a.next() >= l {
                let mut cut = a.clone();
                cut.apply(t);
                next.push(cut);
            }
            if !done {
                next.push(a);
            }
        }
        alts = next;
    }
    alts
}

/// One entry of the model: its payload (for padding: a payload of its length), whether it is
/// padding, and where it lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ent<'a> {
    pub(crate) payload: &'a [u8],
    pub(crate) pad: bool,
    pub(crate) off: usize,
}

impl Ent<'_> {
    /// Bytes it occupies on media.
    pub(crate) fn bytes(&self) -> usize {
        format::entry_len(self.payload.len())
    }
}

/// The log's contents in the model: entries with LSNs `first`, `first + 1`, ...
#[derive(Clone, Debug)]
pub(crate) struct Contents<'a> {
    first: u64,
    entries: VecDeque<Ent<'a>>,
}

impl<'a> Contents<'a> {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn apply(&mut self, e: &'a Event) {
        match e.kind {
            EventKind::Append => {
                assert_eq!(
                    e.lsns.start,
                    self.next(),
                    "the model and the log disagree on the next LSN"
                );
                let offs = e.entry_offsets();
                self.entries
                    .extend(e.payloads.iter().zip(offs).map(|(p, off)| Ent {
                        payload: p,
                        pad: e.pad,
                        off,
                    }));
            }
            EventKind::TruncateBefore(l) => {
                if l > self.first {
                    let k = ((l - self.first) as usize).min(self.entries.len());
                    self.entries.drain(..k);
                    self.first = l;
                }
            }
            EventKind::TruncateAfter(l) => {
                if l + 1 < self.next() {
                    let keep = (l + 1).saturating_sub(self.first) as usize;
                    self.entries.truncate(keep);
                }
            }
        }
    }

    pub(crate) fn want(&self) -> Want<'a> {
        Want {
            first: self.first,
            entries: self.entries.iter().copied().collect(),
        }
    }
}

/// Log contents to compare with: entries with LSNs `first`, `first + 1`, ... (`first` is the
/// next LSN when there is no entry).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Want<'a> {
    pub(crate) first: u64,
    pub(crate) entries: Vec<Ent<'a>>,
}

impl Want<'_> {
    pub(crate) fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    pub(crate) fn describe(&self) -> String {
        match self.entries.len() {
            0 => format!("empty (next LSN {})", self.first),
            n => format!("LSNs {}..={}", self.first, self.first + n as u64 - 1),
        }
    }

    /// Bytes the entries occupy on media.
    pub(crate) fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes()).sum()
    }
}

/// What a crash image must recover to.
pub(crate) enum Expect<'a> {
    /// Crash inside `create_on`: the open may fail, or find a prefix of the old entries.
    Creating { old: &'a [Vec<u8>] },
    /// Exactly one of `alts` (the first: what was acknowledged, or the state before a
    /// truncation in flight).
    Log {
        alts: Vec<Want<'a>>,
        acked: usize,
        inflight: usize,
        /// A truncation (a slot update) is in flight.
        truncating: bool,
        /// An append is in flight, or the crash is inside the recovery that began the segment:
        /// recovery may find the remains of an interrupted append (`TailState::Torn`). Otherwise
        /// the end of the log is clean.
        may_tear: bool,
    },
}
