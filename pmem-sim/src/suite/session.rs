//! A live log on simulated media, recording a segment.

use std::ops::Range;
use std::sync::Arc;

use daxlog::format::{
    EntryHeader, Slot, Superblock, DATA_OFFSET, HEADER_LEN, SB_BACKUP_OFFSET, SLOT0_OFFSET,
    SLOT1_OFFSET,
};
use daxlog::{Error, Log};

use super::segment::{Event, EventKind, Expect, Segment, NEVER};
use crate::sched::{Scheduler, Strategy};
use crate::{Observer, Op, SimMedia, ThreadId};

/// A truncation the truncating thread of [`Session::concurrent_cutting`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// `truncate_before` of about half of the entries then in the log.
    Half,
    /// `truncate_before(next_lsn)`: every entry (a reset).
    All,
    /// `truncate_after(first - 1 + len * num / den)` of the `len` entries then in the log
    /// (`num < den`; `Suffix(0, 1)` deletes every entry); none if the log is empty.
    Suffix(u64, u64),
}

/// A live log on simulated media, recording a segment.
pub struct Session {
    pub(crate) log: Log<SimMedia>,
    pub(crate) obs: Observer,
    pub(crate) seg: Segment,
    pub(crate) tail: usize,
}

impl Session {
    /// Appends one entry; `None` if the log is full (then nothing may have been written).
    pub fn append(&mut self, payload: &[u8]) -> Option<u64> {
        self.write(&[payload.to_vec()], false).map(|r| r.start)
    }

    /// Appends a batch with `append_batch`; `None` if the log is full.
    pub fn batch(&mut self, payloads: &[Vec<u8>]) -> Option<Range<u64>> {
        self.write(payloads, true)
    }

    /// `append_padding(count)`, with `count` at most 170 (one group: one reservation, one
    /// barrier), recorded as an acknowledged append of `count` empty padding entries; `None` if
    /// the log is full.
    pub fn padding(&mut self, count: usize) -> Option<Range<u64>> {
        assert!(count <= 170, "more than one group of padding");
        let start = self.obs.ops();
        let r = self.log.append_padding(count as u64);
        self.record_append(start, r, &vec![Vec::new(); count], true)
    }

    fn write(&mut self, payloads: &[Vec<u8>], batch: bool) -> Option<Range<u64>> {
        let start = self.obs.ops();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let r = if batch {
            self.log.append_batch(&refs)
        } else {
            self.log.append(refs[0]).map(|l| l..l + 1)
        };
        self.record_append(start, r, payloads, false)
    }

    /// Records the outcome of an append call that began at trace position `start`.
    fn record_append(
        &mut self,
        start: usize,
        r: daxlog::Result<Range<u64>>,
        payloads: &[Vec<u8>],
        pad: bool,
    ) -> Option<Range<u64>> {
        let end = self.obs.ops();
        match r {
            Ok(lsns) => {
                let (ops, _) = self.obs.ops_range(start, end);
                let offset = header_offset(&ops, |_| true).expect("an append stores a header");
                check_header_at(&self.obs.snapshot(), offset, lsns.start);
                let ev = Event {
                    start,
                    end,
                    offset,
                    payloads: payloads.to_vec(),
                    kind: EventKind::Append,
                    lsns: lsns.clone(),
                    thread: 0,
                    block: 0,
                    pad,
                    epoch: 0,
                    slot: 0..0,
                };
                self.tail = offset + ev.bytes();
                self.seg.events.push(ev);
                Some(lsns)
            }
            Err(Error::Full { .. }) => {
                assert_eq!(
                    start, end,
                    "an append that failed with Full wrote to the media"
                );
                None
            }
            Err(e) => panic!("append failed on simulated media: {e}"),
        }
    }

    /// An append (a batch if there are several payloads) whose thread panics after reserving
    /// and before storing anything: `arm` makes the engine panic there (a one-shot switch, see
    /// `daxlog::mutants::arm_panic_before_stores`). The reservation must be filled with
    /// padding that takes its LSNs and be published. Returns those LSNs.
    pub fn append_abandoned(&mut self, payloads: &[Vec<u8>], arm: fn()) -> Range<u64> {
        let next = self.log.next_lsn();
        let start = self.obs.ops();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let log = &self.log;
        let quiet = QuietMutantPanics::install();
        arm();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if refs.len() == 1 {
                log.append(refs[0]).map(|l| l..l + 1)
            } else {
                log.append_batch(&refs)
            }
        }));
        drop(quiet);
        assert!(r.is_err(), "the armed append did not panic: {r:?}");
        let end = self.obs.ops();
        let lsns = next..next + payloads.len() as u64;
        assert_eq!(
            self.log.next_lsn(),
            lsns.end,
            "the abandoned append's LSNs were not published as padding"
        );
        // Where the reservation went (the wrap rule), from the model: whether the padding is
        // really there is for the oracle to find out.
        let total: usize = payloads
            .iter()
            .map(|p| daxlog::format::entry_len(p.len()))
            .sum();
        let cap = self.log.capacity() as usize;
        let offset = if self.tail >= self.head() && self.tail + total > cap {
            DATA_OFFSET
        } else {
            self.tail
        };
        let ev = Event {
            start,
            end,
            offset,
            payloads: payloads.to_vec(),
            kind: EventKind::Append,
            lsns: lsns.clone(),
            thread: 0,
            block: 0,
            pad: true,
            epoch: 0,
            slot: 0..0,
        };
        self.tail = offset + ev.bytes();
        self.seg.events.push(ev);
        lsns
    }

    /// An append whose barrier fails (every drain of the media fails from here on, as after
    /// an `msync` error): it must return the error, and every later append
    /// `Error::Poisoned` without touching the media. The append stays in flight: after a
    /// crash its entries may or may not be there.
    pub fn append_failing(&mut self, payloads: &[Vec<u8>]) {
        let next = self.log.next_lsn();
        let start = self.obs.ops();
        self.obs.fail_drains(true);
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let r = if refs.len() == 1 {
            self.log.append(refs[0]).map(|l| l..l + 1)
        } else {
            self.log.append_batch(&refs)
        };
        match r {
            Err(Error::Io { .. }) => {}
            other => panic!("an append whose drain fails returned {other:?}"),
        }
        let end = self.obs.ops();
        let (ops, _) = self.obs.ops_range(start, end);
        let offset = header_offset(&ops, |_| true).expect("the entries were stored");
        check_header_at(&self.obs.snapshot(), offset, next);
        self.seg.events.push(Event {
            start,
            end: NEVER,
            offset,
            payloads: payloads.to_vec(),
            kind: EventKind::Append,
            lsns: next..next + payloads.len() as u64,
            thread: 0,
            block: 0,
            pad: false,
            epoch: 0,
            slot: 0..0,
        });
        // Poisoned: later appends fail at once, before touching the media.
        for p in [&b"after"[..], b""] {
            let before = self.obs.ops();
            match self.log.append(p) {
                Err(Error::Poisoned { .. }) => {}
                other => panic!("an append after a failed barrier returned {other:?}"),
            }
            assert_eq!(
                self.obs.ops(),
                before,
                "a refused append wrote to the media"
            );
        }
        assert!(matches!(
            self.log.append_batch(&[b"a", b"b"]),
            Err(Error::Poisoned { .. })
        ));
    }

    fn record(&mut self, start: usize, kind: EventKind) {
        let end = self.obs.ops();
        self.seg.events.push(Event {
            start,
            end,
            offset: 0,
            payloads: Vec::new(),
            kind,
            lsns: 0..0,
            thread: 0,
            block: 0,
            pad: false,
            epoch: 0,
            slot: 0..0,
        });
    }

    /// `truncate_before(lsn)`, recorded as an event of the segment.
    pub fn truncate_before(&mut self, lsn: u64) {
        let next = self.log.next_lsn();
        let start = self.obs.ops();
        self.log
            .truncate_before(lsn)
            .unwrap_or_else(|e| panic!("truncate_before({lsn}) failed: {e}"));
        if lsn == next {
            self.tail = DATA_OFFSET;
        }
        self.record(start, EventKind::TruncateBefore(lsn));
    }

    /// `reset()`: discards every entry (recorded as `truncate_before(next_lsn)`).
    pub fn reset(&mut self) {
        let next = self.log.next_lsn();
        let start = self.obs.ops();
        self.log
            .reset()
            .unwrap_or_else(|e| panic!("reset failed: {e}"));
        self.tail = DATA_OFFSET;
        self.record(start, EventKind::TruncateBefore(next));
    }

    /// `reset()` while a reader pins the first entry: the tail cannot move back to the start
    /// of the data area, so the head goes where the entries end (recorded as
    /// `truncate_before(next_lsn)`).
    pub fn reset_pinned(&mut self) {
        let next = self.log.next_lsn();
        let start = self.obs.ops();
        let guard = self.log.pin();
        self.log
            .reset()
            .unwrap_or_else(|e| panic!("reset failed: {e}"));
        drop(guard);
        self.record(start, EventKind::TruncateBefore(next));
    }

    /// `truncate_after(lsn)`, recorded as an event of the segment.
    pub fn truncate_after(&mut self, lsn: u64) {
        let next = self.log.next_lsn();
        let start = self.obs.ops();
        self.log
            .truncate_after(lsn)
            .unwrap_or_else(|e| panic!("truncate_after({lsn}) failed: {e}"));
        self.record(start, EventKind::TruncateAfter(lsn));
        if lsn + 1 < next {
            self.tail = self.model_tail();
        }
    }

    /// Where the entries end in the model once every event so far happened (the head if there
    /// is none).
    fn model_tail(&self) -> usize {
        let w = self.seg.expect_log(NEVER - 1);
        let Expect::Log { alts, .. } = w else {
            unreachable!("expect_log never says Creating")
        };
        let now = alts.last().expect("an alternative");
        match now.entries.last() {
            Some(e) => e.off + e.bytes(),
            None => self.head(),
        }
    }

    /// Runs `plans.len()` appender threads at once, in the interleaving of their media
    /// operations that `seed` picks (see [`Scheduler`]): thread `t` (operations tagged `t + 1`)
    /// makes the appends of `plans[t]` in order (a plan item of one payload is an `append`, of
    /// several an `append_batch`). Every append must fit. Returns the scheduler's choices.
    pub fn concurrent(&mut self, plans: &[Vec<Vec<Vec<u8>>>], seed: u64, stick: u64) -> Vec<u8> {
        self.concurrent_truncating(plans, seed, stick, 0).0
    }

    /// [`Session::concurrent`] with one more thread beside the appenders that calls
    /// `truncate_before` `cuts` times, dropping about half of the entries then in the log, and
    /// every second time all of them: [`Session::concurrent_cutting`] with the cuts
    /// [`Cut::Half`], [`Cut::All`], [`Cut::Half`], ...
    pub fn concurrent_truncating(
        &mut self,
        plans: &[Vec<Vec<Vec<u8>>>],
        seed: u64,
        stick: u64,
        cuts: usize,
    ) -> (Vec<u8>, u64) {
        let cuts: Vec<Cut> = (0..cuts)
            .map(|k| if k % 2 == 1 { Cut::All } else { Cut::Half })
            .collect();
        self.concurrent_cutting(plans, seed, stick, &cuts)
    }

    /// [`Session::concurrent`] with one more thread beside the appenders that makes the
    /// truncations `cuts` in order (events of the same phase: `TruncateBefore(l)` with LSNs
    /// `l..l`, `TruncateAfter(l)` with [`Event::slot`] and [`Event::epoch`] set, and the
    /// appends' epochs).
    ///
    /// An append that fails with `Full` (it stores nothing) is tried again at the thread's
    /// next turn while the truncating thread has cuts left, so that appends reuse the space a
    /// cut of the same phase freed; once the cuts are done, it is given up. Returns the
    /// scheduler's choices and how many appends succeeded after a `Full`.
    pub fn concurrent_cutting(
        &mut self,
        plans: &[Vec<Vec<Vec<u8>>>],
        seed: u64,
        stick: u64,
        cuts: &[Cut],
    ) -> (Vec<u8>, u64) {
        let workers = plans.len() + usize::from(!cuts.is_empty());
        let sched = Scheduler::new(workers, seed, Strategy { stick });
        let block = 1 + self.seg.events.iter().map(|e| e.block).max().unwrap_or(0);
        let log = &self.log;
        let obs = &self.obs;
        let cutting = std::sync::atomic::AtomicBool::new(!cuts.is_empty());
        let cutting = &cutting;
        let after_full = std::sync::atomic::AtomicU64::new(0);
        let after_full = &after_full;
        let results: Vec<Vec<Event>> = std::thread::scope(|sc| {
            let mut handles: Vec<_> = plans
                .iter()
                .enumerate()
                .map(|(t, plan)| {
                    let sched = Arc::clone(&sched);
                    sc.spawn(move || {
                        let _reg = sched.register(t);
                        let mut evs = Vec::new();
                        'plan: for payloads in plan {
                            let mut fulls = 0u64;
                            let (start, end, lsns) = loop {
                                sched.yield_point(t);
                                let start = obs.ops();
                                let refs: Vec<&[u8]> =
                                    payloads.iter().map(|p| p.as_slice()).collect();
                                let r = if refs.len() == 1 {
                                    log.append(refs[0]).map(|l| l..l + 1)
                                } else {
                                    log.append_batch(&refs)
                                };
                                let end = obs.ops();
                                match r {
                                    Ok(lsns) => break (start, end, lsns),
                                    Err(daxlog::Error::Full { .. })
                                        if cutting.load(std::sync::atomic::Ordering::SeqCst) =>
                                    {
                                        fulls += 1
                                    }
                                    Err(daxlog::Error::Full { .. }) => continue 'plan,
                                    Err(e) => {
                                        panic!("concurrent append on simulated media failed: {e}")
                                    }
                                }
                            };
                            if fulls > 0 {
                                after_full.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            evs.push(Event {
                                start,
                                end,
                                offset: 0,
                                payloads: payloads.clone(),
                                kind: EventKind::Append,
                                lsns,
                                thread: (t + 1) as ThreadId,
                                block,
                                pad: false,
                                epoch: 0,
                                slot: 0..0,
                            });
                        }
                        evs
                    })
                })
                .collect();
            if !cuts.is_empty() {
                let t = plans.len();
                let sched = Arc::clone(&sched);
                handles.push(sc.spawn(move || {
                    let _reg = sched.register(t);
                    let mut evs = Vec::new();
                    for cut in cuts {
                        sched.yield_point(t);
                        let next = log.next_lsn();
                        let first = log.first_lsn().unwrap_or(next);
                        let kind = match *cut {
                            Cut::Half => {
                                EventKind::TruncateBefore(first + (next - first).div_ceil(2))
                            }
                            // A reset beside appends (the forced wrap when none is in flight).
                            Cut::All => EventKind::TruncateBefore(next),
                            // Nothing to delete in an empty log: no call.
                            Cut::Suffix(_, _) if next == first => continue,
                            // Appends reserved meanwhile only add entries after `l`.
                            Cut::Suffix(num, den) => {
                                EventKind::TruncateAfter(first - 1 + (next - first) * num / den)
                            }
                        };
                        let start = obs.ops();
                        let lsns = match kind {
                            EventKind::TruncateBefore(l) => {
                                log.truncate_before(l).unwrap_or_else(|e| {
                                    panic!("truncate_before({l}) beside appends: {e}")
                                });
                                l..l
                            }
                            EventKind::TruncateAfter(l) => {
                                log.truncate_after(l).unwrap_or_else(|e| {
                                    panic!("truncate_after({l}) beside appends: {e}")
                                });
                                assert_eq!(log.next_lsn(), l + 1, "appends went on before the cut");
                                0..0
                            }
                            EventKind::Append => unreachable!(),
                        };
                        let end = obs.ops();
                        evs.push(Event {
                            start,
                            end,
                            offset: 0,
                            payloads: Vec::new(),
                            kind,
                            lsns,
                            thread: (t + 1) as ThreadId,
                            block,
                            pad: false,
                            epoch: 0,
                            slot: 0..0,
                        });
                    }
                    cutting.store(false, std::sync::atomic::Ordering::SeqCst);
                    evs
                }));
            }
            sched.run();
            handles
                .into_iter()
                .map(|h| h.join().expect("an appender thread panicked"))
                .collect()
        });
        let mut evs: Vec<Event> = results.into_iter().flatten().collect();
        let first = evs.iter().map(|e| e.start).min().unwrap_or(0);
        let (ops, threads) = self.obs.ops_range(first, self.obs.ops());
        let mine = |e: &Event, i: usize| threads[i] == e.thread;
        // Suffix truncations: where each stored its slot, and the drain that made it durable.
        for e in evs
            .iter_mut()
            .filter(|e| matches!(e.kind, EventKind::TruncateAfter(_)))
        {
            let (a, b) = (e.start - first, e.end - first);
            let at = (a..b)
                .find(|&i| {
                    mine(e, i)
                        && matches!(&ops[i], Op::Store { off, .. } if *off == SLOT0_OFFSET || *off == SLOT1_OFFSET)
                })
                .expect("a suffix truncation stores its slot");
            let drain = (at..b)
                .find(|&i| mine(e, i) && ops[i] == Op::Drain)
                .expect("a suffix truncation drains its slot");
            e.slot = first + at..first + drain + 1;
        }
        let mut slots: Vec<(usize, usize)> = evs
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TruncateAfter(_)))
            .map(|e| (e.start, e.slot.start))
            .collect();
        slots.sort();
        for e in evs.iter_mut() {
            e.epoch = match e.kind {
                EventKind::Append => {
                    let (a, b) = (e.start - first, e.end - first);
                    let store = (a..b)
                        .find(|&i| {
                            mine(e, i)
                                && matches!(&ops[i], Op::Store { off, .. } | Op::StoreNt { off, .. } if *off >= DATA_OFFSET)
                        })
                        .expect("an append stores its entries");
                    e.offset = header_offset(&ops[a..b], |i| threads[a + i] == e.thread)
                        .expect("an append stores a header");
                    slots.iter().filter(|s| s.1 < first + store).count()
                }
                _ => slots.iter().filter(|s| s.0 <= e.start).count(),
            };
        }
        let last_epoch = slots.len();
        let snap = self.obs.snapshot();
        // Entries a reset or a suffix truncation of this phase dropped may lie under later
        // ones: only the live ones are where their appends put them.
        let live_from = self.log.first_lsn().unwrap_or(self.log.next_lsn());
        let live = |e: &&Event| {
            e.kind == EventKind::Append
                && e.epoch == last_epoch
                && e.lsns.start >= live_from
                && e.lsns.start < self.log.next_lsn()
        };
        for e in evs.iter().filter(live) {
            check_header_at(&snap, e.offset, e.lsns.start);
        }
        let newest = evs
            .iter()
            .filter(|e| e.kind == EventKind::Append && e.epoch == last_epoch)
            .max_by_key(|e| e.lsns.start);
        let cut_last = newest.is_none() && last_epoch > 0;
        if let Some(last) = newest {
            self.tail = last.offset + last.bytes();
        }
        evs.sort_by_key(|e| (e.start, e.end));
        self.seg.events.extend(evs);
        if cut_last {
            // No append after the last suffix truncation: the tail is where that left it.
            self.tail = self.model_tail();
        }
        (
            sched.choices(),
            after_full.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The successful appends and truncations so far.
    pub fn events(&self) -> &[Event] {
        &self.seg.events
    }

    /// Offset where the next append goes (unless it wraps).
    pub fn tail(&self) -> usize {
        self.tail
    }

    /// Free bytes (not all in one piece once the log has wrapped).
    pub fn free(&self) -> usize {
        self.log.free_bytes() as usize
    }

    /// Bytes an append can take right now: at the tail before the end of the file, or at the
    /// start of the data area (which it must leave 8 bytes short of the head).
    pub fn room(&self) -> usize {
        let cap = self.log.capacity() as usize;
        let head = self.head();
        if self.tail >= head {
            (cap - self.tail).max(head.saturating_sub(DATA_OFFSET + 8))
        } else {
            head.saturating_sub(self.tail + 8)
        }
    }

    /// Offset of the first live entry (from the current slot).
    pub fn head(&self) -> usize {
        current_slot(&self.obs.snapshot()).1.head_offset as usize
    }

    /// The LSN of the first entry (the next LSN if the log is empty).
    pub fn first_lsn(&self) -> u64 {
        self.log.first_lsn().unwrap_or_else(|| self.log.next_lsn())
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> u64 {
        self.log.next_lsn()
    }

    /// The log being recorded.
    pub fn log(&self) -> &Log<SimMedia> {
        &self.log
    }

    /// The log's salt and the current session's epoch, read from the media.
    pub fn salt_epoch(&self) -> (u32, u32) {
        let img = self.obs.snapshot();
        let (sb, slot) = current_slot(&img);
        (sb.salt, slot.epoch)
    }
}

pub(crate) fn current_slot(img: &[u8]) -> (Superblock, Slot) {
    let sb = Superblock::decode(&img[..64])
        .or_else(|_| Superblock::decode(&img[SB_BACKUP_OFFSET..SB_BACKUP_OFFSET + 64]))
        .expect("a superblock");
    let slot = Slot::current(img, sb.salt, sb.capacity)
        .slot
        .expect("a metadata slot");
    (sb, slot)
}

/// True if an append of `total` bytes fits in the log whose current slot is in `img` and whose
/// tail is `tail` (the wrap rule of FORMAT.md section 6).
pub(crate) fn fits(img: &[u8], tail: usize, total: usize) -> bool {
    let (sb, slot) = current_slot(img);
    let (cap, head) = (sb.capacity as usize, slot.head_offset as usize);
    if tail >= head {
        tail + total <= cap || DATA_OFFSET + total < head
    } else {
        tail + total < head
    }
}

/// The offset of the first entry of an append whose operations are `ops` (those `mine`
/// accepts): the lowest offset it stored to in the data area. Everything an append stores lies
/// in its reservation, which begins with its first header, or in the end marker right after
/// it; the slots lie below the data area. (Not the first store: a payload checksummed while it
/// is copied is stored before its header.)
pub(crate) fn header_offset(ops: &[Op], mine: impl Fn(usize) -> bool) -> Option<usize> {
    ops.iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Op::Store { off, .. } | Op::StoreNt { off, .. } if *off >= DATA_OFFSET && mine(i) => {
                Some(*off)
            }
            _ => None,
        })
        .min()
}

/// While alive, the panics the engine's mutant switches inject (messages starting with
/// `mutant:`) are not printed; other panics are, by the hook that was installed before.
struct QuietMutantPanics;

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

static PREVIOUS_HOOK: std::sync::Mutex<Option<Arc<PanicHook>>> = std::sync::Mutex::new(None);

impl QuietMutantPanics {
    fn install() -> Self {
        let prev: Arc<PanicHook> = Arc::new(std::panic::take_hook());
        *PREVIOUS_HOOK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&prev));
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(|s| s.as_str()));
            if !msg.is_some_and(|m| m.starts_with("mutant:")) {
                prev(info);
            }
        }));
        QuietMutantPanics
    }
}

impl Drop for QuietMutantPanics {
    fn drop(&mut self) {
        let _ = std::panic::take_hook();
        if let Some(prev) = PREVIOUS_HOOK
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            std::panic::set_hook(Box::new(move |info| prev(info)));
        }
    }
}

/// Asserts that the entry at `offset` of the (volatile) image `img` carries `lsn`: the harness
/// found the append's first entry.
fn check_header_at(img: &[u8], offset: usize, lsn: u64) {
    let h = EntryHeader::decode(&img[offset..offset + HEADER_LEN]);
    assert_eq!(
        h.lsn, lsn,
        "the harness misplaced the entry of LSN {lsn} at {offset}"
    );
}

/// An entry encoded exactly as the engine writes it (for payloads that forge entries).
pub use daxlog::format::encode_entry;
