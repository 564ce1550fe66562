//! The persistence state machine: what is durable and what is pending after each operation.
//!
//! Every store is split into pieces, one per aligned 8-byte word it touches (a partial word is a
//! byte-masked piece of that word). A piece is *pending* until the rules make it durable.
//! Operations carry the id of the thread that issued them, and a drain only completes what the
//! same thread started, because a fence orders only the flushes and non-temporal stores of the
//! core that issues it:
//!
//! - CPU modes (`Clwb`, `ClflushOpt`, `Clflush`): a flush by thread `t` covers the cached pieces
//!   its lines hold at the flush, whichever thread stored them (the write-back takes the line as
//!   it is); they are guaranteed when `t` drains next. Pieces stored to the line after the flush
//!   are pending again, whatever the drain. A non-temporal store's pieces are guaranteed by the
//!   next drain of the thread that stored them, with no flush; another thread's drain does not
//!   guarantee them.
//! - `Msync`: a flush by thread `t` (an `msync` of the range) covers every piece its pages hold
//!   at the flush, whichever thread stored it; they are guaranteed when `t` drains next (daxlog's
//!   `MmapMedia` syncs in the flush itself and reports its result at the drain, so this is the
//!   later of the two moments). Pieces stored after the flush are not covered by it. A
//!   non-temporal store's pieces sit in the storing core's write-combining buffers, out of
//!   another thread's sync's reach, until their thread's next fence ([`Op::Fence`]) puts them
//!   in memory (its own sync does the same: the system call's locked instructions drain the
//!   buffers); then a sync covers them like cached ones. Their words persist independently,
//!   fenced or not (the buffers drain in any order, and the page may be written back before).
//!
//! Until then a pending piece may or may not have reached the media; which combinations are
//! possible is the crash [`Model`]'s business (see `images.rs`).
//!
//! A failed write-back ([`Op::WritebackFailed`], msync mode) takes the pieces its pages hold
//! out of the pending ones: they are *lost*, in the volatile image (the page cache keeps them,
//! clean) but in no crash image, until a store into their page or an [`Op::Rewrite`] of it
//! makes them pending again.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use daxlog::Persistence;

use crate::{Op, ThreadId};

/// Bytes of a failure-atomic word.
pub const WORD: usize = 8;
/// Bytes of a cache line.
pub const CACHE_LINE: usize = 64;
/// Bytes of a page (the unit of `msync` write-back).
pub const PAGE: usize = 4096;

/// Which pending stores a crash may have persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// Every pending aligned 8-byte word independently persisted or not (a word with several
    /// pending stores: any prefix of them, in program order). The weakest hardware assumption.
    Strict,
    /// Per cache line, a prefix of its pending cached stores in program order (what x86 does
    /// without eADR: stores to one line reach media in order). Words written with
    /// non-temporal stores stay independent (write-combining buffers are drained in any
    /// order).
    Line,
    /// Per 4 KiB page, a prefix of its pending stores in program order: the page cache writes a
    /// page back as a unit, at any time. Words written non-temporally stay independent.
    Msync,
}

impl Model {
    /// The name used in reports and replay strings: `strict`, `line` or `msync`.
    pub fn name(self) -> &'static str {
        match self {
            Model::Strict => "strict",
            Model::Line => "line",
            Model::Msync => "msync",
        }
    }

    /// Parses [`Model::name`].
    pub fn parse(s: &str) -> Option<Model> {
        match s {
            "strict" => Some(Model::Strict),
            "line" => Some(Model::Line),
            "msync" => Some(Model::Msync),
            _ => None,
        }
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A store's contribution to one aligned word.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece {
    /// Word index (byte offset / 8).
    pub word: usize,
    /// Bit `i` set: byte `i` of the word is written.
    pub mask: u8,
    /// The bytes (only those in `mask` matter).
    pub bytes: [u8; WORD],
    /// Written with a non-temporal store.
    pub nt: bool,
    /// msync media: a non-temporal piece whose thread has fenced since (a sync covers it).
    pub fenced: bool,
    /// The thread that stored it.
    pub tid: ThreadId,
    /// Bit `t` set: covered by a flush thread `t` issued after the store, so guaranteed at
    /// thread `t`'s next drain.
    pub covered: u64,
}

impl Piece {
    #[inline]
    pub fn apply(&self, image: &mut [u8]) {
        let base = self.word * WORD;
        if self.mask == 0xff {
            image[base..base + WORD].copy_from_slice(&self.bytes);
        } else {
            for i in 0..WORD {
                if self.mask & (1 << i) != 0 {
                    image[base + i] = self.bytes[i];
                }
            }
        }
    }

    pub fn line(&self) -> usize {
        self.word * WORD / CACHE_LINE
    }

    pub fn page(&self) -> usize {
        self.word * WORD / PAGE
    }
}

/// The durable image and the pending stores after a prefix of a recorded run.
#[derive(Clone, Debug)]
pub struct PmemState {
    persistence: Persistence,
    durable: Vec<u8>,
    pending: Vec<Piece>,
    /// Pieces whose write-back failed, in program order: in the volatile image only.
    lost: Vec<Piece>,
    ops: usize,
}

impl PmemState {
    /// The state before any operation: `initial` is wholly durable.
    pub fn new(initial: Vec<u8>, persistence: Persistence) -> Self {
        PmemState {
            persistence,
            durable: initial,
            pending: Vec::new(),
            lost: Vec::new(),
            ops: 0,
        }
    }

    /// The persistence mode whose rules apply.
    pub fn persistence(&self) -> Persistence {
        self.persistence
    }

    /// Number of operations applied.
    pub fn ops(&self) -> usize {
        self.ops
    }

    /// What is guaranteed durable now.
    pub fn durable(&self) -> &[u8] {
        &self.durable
    }

    /// Takes the durable image, leaving the state empty.
    pub fn into_durable(self) -> Vec<u8> {
        self.durable
    }

    /// Number of pending pieces (word-sized parts of stores not yet guaranteed).
    pub fn pending_pieces(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn pending(&self) -> &[Piece] {
        &self.pending
    }

    /// Number of lost pieces (a failed write-back's, not dirtied again since).
    pub fn lost_pieces(&self) -> usize {
        self.lost.len()
    }

    /// The volatile image: durable plus every lost and pending store.
    pub fn volatile(&self) -> Vec<u8> {
        let mut v = self.durable.clone();
        for p in self.lost.iter().chain(&self.pending) {
            p.apply(&mut v);
        }
        v
    }

    /// The durable image if every pending piece whose bytes intersect none of `exclude` reached
    /// the media, and none of the others did (for building specific torn images).
    pub fn image_without(&self, exclude: &[std::ops::Range<usize>]) -> Vec<u8> {
        let mut v = self.durable.clone();
        for p in &self.pending {
            let (a, b) = (p.word * WORD, p.word * WORD + WORD);
            if exclude.iter().all(|r| r.end <= a || r.start >= b) {
                p.apply(&mut v);
            }
        }
        v
    }

    /// Applies the next operation of the run, issued by thread 0.
    pub fn apply(&mut self, op: &Op) {
        self.apply_by(op, 0);
    }

    /// Applies the next operation of the run, issued by thread `tid`.
    pub fn apply_by(&mut self, op: &Op, tid: ThreadId) {
        self.ops += 1;
        let bit = 1u64 << tid;
        let cpu = self.persistence.is_cpu_flush();
        match op {
            Op::Store { off, data } | Op::StoreNt { off, data } => {
                if !data.is_empty() {
                    self.revive(off / PAGE, (off + data.len() - 1) / PAGE);
                }
                self.split(*off, data, matches!(op, Op::StoreNt { .. }), tid);
            }
            Op::Publish { lsn, vouch } => {
                let off = daxlog::format::PUBLISHED_OFFSET;
                self.revive(off / PAGE, off / PAGE);
                self.split(off, &lsn.to_le_bytes(), false, tid);
                if *vouch {
                    let v = daxlog::format::vouched_word(*lsn);
                    self.split(daxlog::format::VOUCHED_OFFSET, &v.to_le_bytes(), false, tid);
                }
            }
            Op::Rewrite { off, len } => {
                if *len > 0 {
                    self.revive(off / PAGE, (off + len - 1) / PAGE);
                }
            }
            Op::WritebackFailed { off, len } => {
                if *len == 0 || cpu {
                    return;
                }
                let (first, last) = (off / PAGE, (off + len - 1) / PAGE);
                // What a sync would have covered (see `Op::Flush`) never reaches the media.
                let mut i = 0;
                while i < self.pending.len() {
                    let p = &self.pending[i];
                    let seen = !p.nt || p.fenced || p.tid == tid;
                    if seen && (first..=last).contains(&p.page()) {
                        self.lost.push(self.pending.remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            Op::Flush { off, len } => {
                if *len == 0 {
                    return;
                }
                let unit = if cpu { CACHE_LINE } else { PAGE };
                let first = off / unit;
                let last = (off + len - 1) / unit;
                // Non-temporal pieces: the CPU does not write them back (the drain of their
                // thread does); an msync finds them once their thread has fenced (or if it is
                // that thread's own).
                for p in self.pending.iter_mut() {
                    let u = p.word * WORD / unit;
                    let seen = !p.nt || (!cpu && (p.fenced || p.tid == tid));
                    if seen && first <= u && u <= last {
                        p.covered |= bit;
                    }
                }
            }
            Op::Fence if !cpu => {
                for p in self.pending.iter_mut() {
                    if p.nt && p.tid == tid {
                        p.fenced = true;
                    }
                }
            }
            // Durability is unknown after a failed drain: everything stays pending.
            Op::DrainFailed => {}
            // (In the CPU-flush modes a fence is a drain.)
            Op::Drain | Op::Fence => {
                let done: Vec<bool> = self
                    .pending
                    .iter()
                    .map(|p| p.covered & bit != 0 || (cpu && p.nt && p.tid == tid))
                    .collect();
                if !done.contains(&true) {
                    return;
                }
                if !self.lost.is_empty() {
                    // A lost piece is older than any pending one: bytes made durable now are
                    // newer than what it holds for them.
                    let done_pieces: Vec<Piece> = self
                        .pending
                        .iter()
                        .zip(&done)
                        .filter(|(_, &d)| d)
                        .map(|(p, _)| *p)
                        .collect();
                    self.lost.retain_mut(|l| {
                        for d in done_pieces.iter().filter(|d| d.word == l.word) {
                            l.mask &= !d.mask;
                        }
                        l.mask != 0
                    });
                }
                if !done.contains(&false) {
                    // Everything pending is complete (the common case with one thread).
                    for p in &self.pending {
                        p.apply(&mut self.durable);
                    }
                    self.pending.clear();
                    return;
                }
                // Stores to one word reach the media in the order they were made (coherence
                // order), whichever thread made them: once a store is durable, an older store
                // to the same bytes that is still pending (another thread's, not yet fenced)
                // can no longer land over it.
                let mut newest: HashMap<usize, Vec<(usize, u8)>, BuildHasherDefault<WordHash>> =
                    HashMap::default();
                for (i, p) in self.pending.iter().enumerate() {
                    if done[i] {
                        p.apply(&mut self.durable);
                        newest.entry(p.word).or_default().push((i, p.mask));
                    }
                }
                let mut i = 0;
                self.pending.retain_mut(|p| {
                    let k = i;
                    i += 1;
                    if done[k] {
                        return false;
                    }
                    if let Some(later) = newest.get(&p.word) {
                        for &(j, mask) in later {
                            if j > k {
                                p.mask &= !mask;
                            }
                        }
                    }
                    p.mask != 0
                });
            }
        }
    }

    /// The lost pieces of pages `first..=last` pending again, before every pending piece (they
    /// are older), uncovered: their page is dirty again.
    fn revive(&mut self, first: usize, last: usize) {
        if self.lost.is_empty() {
            return;
        }
        let (back, keep): (Vec<Piece>, Vec<Piece>) = self
            .lost
            .drain(..)
            .partition(|p| (first..=last).contains(&p.page()));
        self.lost = keep;
        if !back.is_empty() {
            let newer = std::mem::take(&mut self.pending);
            self.pending = back
                .into_iter()
                .map(|p| Piece { covered: 0, ..p })
                .chain(newer)
                .collect();
        }
    }

    fn split(&mut self, off: usize, data: &[u8], nt: bool, tid: ThreadId) {
        assert!(
            off + data.len() <= self.durable.len(),
            "store out of bounds"
        );
        let end = off + data.len();
        let mut pos = off;
        self.pending.reserve(data.len() / WORD + 2);
        while pos < end {
            if pos.is_multiple_of(WORD) && pos + WORD <= end {
                // A whole word.
                let mut bytes = [0u8; WORD];
                bytes.copy_from_slice(&data[pos - off..pos - off + WORD]);
                self.pending.push(Piece {
                    word: pos / WORD,
                    mask: 0xff,
                    bytes,
                    nt,
                    tid,
                    fenced: false,
                    covered: 0,
                });
                pos += WORD;
                continue;
            }
            let word = pos / WORD;
            let wend = ((word + 1) * WORD).min(end);
            let mut bytes = [0u8; WORD];
            let mut mask = 0u8;
            for a in pos..wend {
                let i = a - word * WORD;
                bytes[i] = data[a - off];
                mask |= 1 << i;
            }
            self.pending.push(Piece {
                word,
                mask,
                bytes,
                nt,
                tid,
                fenced: false,
                covered: 0,
            });
            pos = wend;
        }
    }
}

/// A hasher for word indices (small integers): much cheaper than SipHash.
#[derive(Default)]
struct WordHash(u64);

impl Hasher for WordHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A recorded run: the image the media started from (taken as wholly durable), its barrier,
/// and the operations issued on it. Crash point `p` (in `0..=ops.len()`) is the moment after
/// the first `p` operations.
#[derive(Clone, Debug)]
pub struct Run {
    /// The durable image before the first operation.
    pub initial: Vec<u8>,
    /// The media's barrier, whose rules apply.
    pub persistence: Persistence,
    /// The operations, in the order they were issued (from [`crate::SimMedia::take_trace`]).
    pub ops: Vec<Op>,
    /// The thread that issued each operation (from [`crate::SimMedia::take_tagged_trace`]);
    /// empty if every operation came from thread 0.
    pub threads: Vec<ThreadId>,
}

impl Run {
    /// Number of crash points: one before each operation and one after the last.
    pub fn crash_points(&self) -> usize {
        self.ops.len() + 1
    }

    /// The thread that issued operation `i`.
    pub fn thread_of(&self, i: usize) -> ThreadId {
        self.threads.get(i).copied().unwrap_or(0)
    }

    /// Applies operation `i` to `st`.
    pub fn apply(&self, st: &mut PmemState, i: usize) {
        st.apply_by(&self.ops[i], self.thread_of(i));
    }

    /// The state at crash point `point`.
    pub fn state_at(&self, point: usize) -> PmemState {
        let mut st = PmemState::new(self.initial.clone(), self.persistence);
        for i in 0..point {
            self.apply(&mut st, i);
        }
        st
    }

    /// Calls `f` with every crash point and its state, in order (one replay for all of them).
    pub fn for_each_point(&self, mut f: impl FnMut(usize, &PmemState)) {
        let mut st = PmemState::new(self.initial.clone(), self.persistence);
        f(0, &st);
        for i in 0..self.ops.len() {
            self.apply(&mut st, i);
            f(i + 1, &st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(off: usize, data: &[u8]) -> Op {
        Op::Store {
            off,
            data: data.to_vec(),
        }
    }

    #[test]
    fn stores_split_into_masked_words() {
        let mut s = PmemState::new(vec![0; 256], Persistence::Clwb);
        s.apply(&store(5, &[1; 20]));
        let words: Vec<(usize, u8)> = s.pending().iter().map(|p| (p.word, p.mask)).collect();
        assert_eq!(words, [(0, 0xe0), (1, 0xff), (2, 0xff), (3, 0x01)]);
        assert_eq!(&s.volatile()[5..25], &[1; 20]);
        assert_eq!(s.durable(), &[0; 256][..]);
    }

    #[test]
    fn flush_then_drain_persists_only_what_was_flushed() {
        let mut s = PmemState::new(vec![0; 256], Persistence::Clwb);
        s.apply(&store(0, &[1; 8]));
        s.apply(&store(64, &[2; 8]));
        s.apply(&Op::Flush { off: 0, len: 8 });
        // A store to the flushed line after the flush is pending again.
        s.apply(&store(8, &[3; 8]));
        s.apply(&Op::Drain);
        assert_eq!(&s.durable()[0..8], &[1; 8]);
        assert_eq!(&s.durable()[8..16], &[0; 8]);
        assert_eq!(&s.durable()[64..72], &[0; 8]);
        assert_eq!(s.pending_pieces(), 2);
        // A drain without a flush guarantees nothing for cached stores...
        s.apply(&Op::Drain);
        assert_eq!(s.pending_pieces(), 2);
        // ...but guarantees non-temporal stores.
        s.apply(&Op::StoreNt {
            off: 128,
            data: vec![4; 16],
        });
        s.apply(&Op::Drain);
        assert_eq!(&s.durable()[128..144], &[4; 16]);
        assert_eq!(s.pending_pieces(), 2);
    }

    #[test]
    fn a_failed_write_back_loses_its_pages_until_they_are_dirtied_again() {
        let mut s = PmemState::new(vec![0; 3 * PAGE], Persistence::Msync);
        s.apply(&store(10, &[1; 4]));
        s.apply(&store(PAGE + 10, &[2; 4]));
        s.apply(&Op::WritebackFailed { off: 0, len: 20 });
        // Page 0's piece is lost: in the volatile image, in no crash image, and a sync of its
        // clean page writes nothing.
        assert_eq!((s.lost_pieces(), s.pending_pieces()), (1, 1));
        assert_eq!(&s.volatile()[10..14], &[1; 4]);
        s.apply(&Op::Flush {
            off: 0,
            len: 2 * PAGE,
        });
        s.apply(&Op::Drain);
        assert_eq!(&s.durable()[10..14], &[0; 4]);
        assert_eq!(&s.durable()[PAGE + 10..PAGE + 14], &[2; 4]);
        assert_eq!(&s.volatile()[10..14], &[1; 4]);
        // A store elsewhere in its page dirties it again: the next sync writes both.
        s.apply(&store(100, &[3; 4]));
        assert_eq!((s.lost_pieces(), s.pending_pieces()), (0, 2));
        s.apply(&Op::Flush { off: 0, len: 1 });
        s.apply(&Op::Drain);
        assert_eq!(&s.durable()[10..14], &[1; 4]);
        assert_eq!(&s.durable()[100..104], &[3; 4]);
        // The lost bytes come back before the store that dirties their page (its newer bytes
        // win), and a rewrite brings them back too.
        s.apply(&store(PAGE * 2, &[4; 8]));
        s.apply(&Op::WritebackFailed {
            off: 2 * PAGE,
            len: 8,
        });
        s.apply(&store(PAGE * 2 + 4, &[5; 4]));
        s.apply(&Op::Flush {
            off: 2 * PAGE,
            len: 8,
        });
        s.apply(&Op::Drain);
        assert_eq!(
            &s.durable()[2 * PAGE..2 * PAGE + 8],
            &[4, 4, 4, 4, 5, 5, 5, 5]
        );
        s.apply(&store(PAGE, &[6; 8]));
        s.apply(&Op::WritebackFailed { off: PAGE, len: 8 });
        s.apply(&Op::Rewrite { off: PAGE, len: 1 });
        assert_eq!(s.lost_pieces(), 0);
        s.apply(&Op::Flush { off: PAGE, len: 1 });
        s.apply(&Op::Drain);
        assert_eq!(&s.durable()[PAGE..PAGE + 8], &[6; 8]);
    }

    #[test]
    fn msync_covers_the_pages_as_they_are_at_the_flush() {
        let mut s = PmemState::new(vec![0; 3 * PAGE], Persistence::Msync);
        s.apply(&store(10, &[1; 4]));
        s.apply(&store(PAGE + 10, &[2; 4]));
        s.apply(&Op::Flush { off: 0, len: 1 });
        s.apply(&store(2000, &[3; 4]));
        s.apply(&Op::Drain);
        assert_eq!(&s.durable()[10..14], &[1; 4]);
        // Stored after the flush: not covered by it.
        assert_eq!(&s.durable()[2000..2004], &[0; 4]);
        assert_eq!(&s.durable()[PAGE + 10..PAGE + 14], &[0; 4]);
        assert_eq!(s.pending_pieces(), 2);
    }

    #[test]
    fn a_drain_completes_only_its_own_threads_flushes_and_nt_stores() {
        let mut s = PmemState::new(vec![0; 256], Persistence::Clwb);
        // Thread 1 stores a line, thread 2 stores another and flushes both lines.
        s.apply_by(&store(0, &[1; 8]), 1);
        s.apply_by(&store(64, &[2; 8]), 2);
        s.apply_by(&Op::Flush { off: 0, len: 128 }, 2);
        s.apply_by(
            &Op::StoreNt {
                off: 128,
                data: vec![3; 8],
            },
            1,
        );
        // Thread 1's fence: its own flushes (none) and NT stores only.
        s.apply_by(&Op::Drain, 1);
        assert_eq!(&s.durable()[0..8], &[0; 8]);
        assert_eq!(&s.durable()[64..72], &[0; 8]);
        assert_eq!(&s.durable()[128..136], &[3; 8]);
        // Thread 2's fence completes its flush, which wrote back thread 1's store too.
        s.apply_by(&Op::Drain, 2);
        assert_eq!(&s.durable()[0..8], &[1; 8]);
        assert_eq!(&s.durable()[64..72], &[2; 8]);
        assert_eq!(s.pending_pieces(), 0);
        // An NT store is not completed by another thread's fence.
        s.apply_by(
            &Op::StoreNt {
                off: 192,
                data: vec![4; 8],
            },
            2,
        );
        s.apply_by(&Op::Drain, 1);
        assert_eq!(s.pending_pieces(), 1);
        s.apply_by(&Op::Drain, 2);
        assert_eq!(&s.durable()[192..200], &[4; 8]);
    }

    #[test]
    fn an_older_store_never_lands_over_a_newer_durable_one() {
        let mut s = PmemState::new(vec![0; 128], Persistence::Clwb);
        // Thread 1 stores a word non-temporally; thread 2 overwrites it and fences first.
        s.apply_by(
            &Op::StoreNt {
                off: 0,
                data: vec![1; 8],
            },
            1,
        );
        s.apply_by(
            &Op::StoreNt {
                off: 0,
                data: vec![2; 8],
            },
            2,
        );
        s.apply_by(&Op::Drain, 2);
        assert_eq!(&s.durable()[0..8], &[2; 8]);
        assert_eq!(s.pending_pieces(), 0);
        s.apply_by(&Op::Drain, 1);
        assert_eq!(&s.durable()[0..8], &[2; 8]);
    }

    #[test]
    fn msync_finds_non_temporal_stores_only_after_their_threads_fence() {
        let nt = |off, b| Op::StoreNt {
            off,
            data: vec![b; 8],
        };
        let mut s = PmemState::new(vec![0; 2 * PAGE], Persistence::Msync);
        // Thread 1 stores non-temporally and does not fence: thread 2's sync misses it.
        s.apply_by(&nt(8, 1), 1);
        s.apply_by(&Op::Flush { off: 0, len: 16 }, 2);
        s.apply_by(&Op::Drain, 2);
        assert_eq!(&s.durable()[8..16], &[0; 8]);
        assert_eq!(s.pending_pieces(), 1);
        // Another thread's fence does not help.
        s.apply_by(&Op::Fence, 2);
        s.apply_by(&Op::Flush { off: 0, len: 16 }, 2);
        s.apply_by(&Op::Drain, 2);
        assert_eq!(&s.durable()[8..16], &[0; 8]);
        // Its own fence puts it in memory, still not durable...
        s.apply_by(&Op::Fence, 1);
        assert_eq!(&s.durable()[8..16], &[0; 8]);
        assert_eq!(s.pending_pieces(), 1);
        // ...until a sync by any thread after it.
        s.apply_by(&Op::Flush { off: 0, len: 16 }, 2);
        s.apply_by(&Op::Drain, 2);
        assert_eq!(&s.durable()[8..16], &[1; 8]);
        assert_eq!(s.pending_pieces(), 0);
        // A thread's own sync finds its unfenced non-temporal stores (the system call drains
        // the write-combining buffers).
        s.apply_by(&nt(16, 3), 1);
        s.apply_by(&Op::Flush { off: 0, len: 24 }, 1);
        s.apply_by(&Op::Drain, 1);
        assert_eq!(&s.durable()[16..24], &[3; 8]);
    }

    #[test]
    fn msync_drains_are_per_thread_too() {
        let mut s = PmemState::new(vec![0; 2 * PAGE], Persistence::Msync);
        s.apply_by(&store(8, &[1; 8]), 1);
        s.apply_by(&Op::Flush { off: 0, len: 16 }, 2);
        s.apply_by(&Op::Drain, 1);
        assert_eq!(s.pending_pieces(), 1);
        s.apply_by(&Op::Drain, 2);
        assert_eq!(&s.durable()[8..16], &[1; 8]);
    }
}
