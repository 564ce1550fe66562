//! The runner: records a scenario's segments and checks every crash image of them.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::rc::Rc;

use daxlog::format::{self, EntryHeader, DATA_OFFSET, FLAG_PAD, HEADER_LEN};
use daxlog::{Log, Options, Persistence};

use super::segment::{BaseEntry, Event, EventKind, Expect, Sampling, Segment, Start};
use super::session::{current_slot, Session};
use super::{Counter, Hooks, Outcome, Replay, ScenarioStats, Suite, Variant};
use crate::rng::{mix, Rng};
use crate::{GenConfig, Op, PmemState, Run, SimMedia};

// ---- The runner and the oracle -----------------------------------------------------------------

/// The counter of a run's appends, in the checked concurrent segments on msync media with
/// non-temporal stores, that stored non-temporally and whose entries another thread's group
/// commit synced ([`Segment::nt_synced_by_other`]): the appends whose thread must fence before
/// it marks its ticket ready. Reported by every run with such a segment.
pub const NT_SYNCED_BY_OTHER: &str = "msync non-temporal appends synced by another thread";

/// An application-level check of a recovered log at (segment, crash point).
pub type AppCheck = dyn Fn(usize, usize, &Log<SimMedia>) -> Result<(), String>;

/// Runs one scenario in one variant: records segments and checks their crash images.
pub struct Runner {
    pub(crate) scenario: &'static str,
    pub(crate) variant: Variant,
    pub(crate) opts: Options,
    /// The options without the tail hint (a full scan to compare with).
    pub(crate) plain_opts: Options,
    pub(crate) hinted: bool,
    pub(crate) label: String,
    pub(crate) seed: u64,
    pub(crate) gen: GenConfig,
    pub(crate) stop_at_first: bool,
    pub(crate) replay: Option<Replay>,
    /// The engine's test switches.
    pub hooks: Hooks,
    /// A check of the application's own state on each crash image (see [`Runner::app_check`]).
    pub(crate) app: Option<Rc<AppCheck>>,
    pub(crate) max_reports: usize,
    /// Scenario-level randomness (sizes, payloads).
    pub rng: Rng,
    pub(crate) segments: Vec<Rc<Segment>>,
    pub(crate) images: u64,
    /// Images skipped because an identical one was checked against the same expectation.
    pub(crate) duplicates: u64,
    /// Recovery outcomes whose read-only opens were checked against the current expectation.
    pub(crate) ro_seen: std::cell::RefCell<HashSet<u64>>,
    /// Crash points checked, and how many of them exhaustively.
    pub(crate) points: u64,
    pub(crate) exhaustive: u64,
    pub(crate) violations: u64,
    pub(crate) reports: Vec<String>,
    pub(crate) counters: BTreeMap<&'static str, Counter>,
    /// msync media with non-temporal stores: appends of the checked concurrent segments whose
    /// entries another thread synced ([`Segment::nt_synced_by_other`]); `None` until such a
    /// segment is checked.
    pub(crate) nt_synced: Option<u64>,
}

impl Runner {
    pub(crate) fn new(
        suite: &Suite,
        scenario: &'static str,
        variant: Variant,
        label: String,
        seed: u64,
    ) -> Runner {
        Runner {
            scenario,
            variant,
            opts: variant.opts(),
            plain_opts: variant.opts(),
            hinted: false,
            label,
            seed,
            gen: suite.gen,
            stop_at_first: suite.stop_at_first,
            replay: suite.replay.clone(),
            hooks: suite.hooks,
            app: None,
            max_reports: suite.max_reports,
            rng: Rng::derive(seed, &[1]),
            segments: Vec::new(),
            images: 0,
            duplicates: 0,
            ro_seen: Default::default(),
            points: 0,
            exhaustive: 0,
            violations: 0,
            reports: Vec::new(),
            counters: BTreeMap::new(),
            nt_synced: None,
        }
    }

    pub(crate) fn outcome(mut self) -> Outcome {
        if let Some(n) = self.nt_synced {
            self.count(NT_SYNCED_BY_OTHER, n);
        }
        let stats = ScenarioStats {
            runs: 1,
            points: self.points,
            exhaustive: self.exhaustive,
            sampled: self.points - self.exhaustive,
            images: self.images,
            duplicates: self.duplicates,
            violations: self.violations,
            secs: 0.0,
        };
        Outcome {
            images: self.images,
            violations: self.violations,
            reports: self.reports,
            runs: 1,
            counters: self.counters,
            scenarios: [(self.scenario, stats)].into_iter().collect(),
        }
    }

    /// From now on, every crash image whose recovery the oracle accepted is also checked by
    /// `check(segment, crash point, log)`: an application's own recovery on top of the log
    /// (e.g. a snapshot plus the journal entries after it).
    pub fn app_check(&mut self, check: Rc<AppCheck>) {
        self.app = Some(check);
    }

    /// The index the segment being recorded will get.
    pub fn next_segment(&self) -> usize {
        self.segments.len()
    }

    /// The variant being run.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The seed of this scenario run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// True once a violation was found and the run should stop.
    pub fn stopped(&self) -> bool {
        self.stop_at_first && self.violations > 0
    }

    /// From now on, every log is created and opened (by the sessions and by the oracle) with
    /// `Options::tail_hint_every(bytes)`; the oracle also compares each recovery with a full
    /// scan that ignores the hint.
    pub fn use_tail_hint(&mut self, bytes: u64) {
        self.opts = self.variant.opts().tail_hint_every(bytes);
        self.hinted = true;
    }

    /// Scales the number of images per crash point (for long scenarios), the limit for
    /// enumerating all of them included.
    pub fn scale_images(&mut self, num: usize, den: usize) {
        self.gen.random = (self.gen.random * num / den).max(4);
        self.gen.structured = (self.gen.structured * num / den).max(4);
        self.gen.exhaustive_limit = (self.gen.exhaustive_limit * num as u64 / den as u64).max(64);
    }

    /// Adds `value` to the counter `name` (reported per run and summed in [`Outcome`]).
    pub fn count(&mut self, name: &'static str, value: u64) {
        let c = self.counters.entry(name).or_default();
        c.sum += value;
        c.min = if c.runs == 0 { value } else { c.min.min(value) };
        c.runs += 1;
    }

    /// A payload of `len` random bytes from the scenario seed; one in three of the longer ones
    /// has a zero word.
    pub fn payload(&mut self, len: usize) -> Vec<u8> {
        let mut v = self.rng.bytes(len);
        // Some zero words too, as real payloads have.
        if len >= 16 && self.rng.chance(1, 3) {
            let w = self.rng.below((len / 8) as u64) as usize * 8;
            v[w..w + 8].fill(0);
        }
        v
    }

    /// Starts a segment that creates a log on `capacity` zero bytes.
    pub fn create(&mut self, capacity: usize) -> Session {
        self.create_over(vec![0u8; capacity], Vec::new())
    }

    fn new_segment(&self, initial: Vec<u8>, start: Start, start_end: usize) -> Segment {
        Segment {
            run: Run {
                initial,
                persistence: self.variant.persistence,
                ops: Vec::new(),
                threads: Vec::new(),
            },
            start,
            start_end,
            base_first: 1,
            base: Vec::new(),
            events: Vec::new(),
            sampling: None,
        }
    }

    /// Starts a segment that creates a log over `initial`, which held the log `old`.
    pub fn create_over(&mut self, initial: Vec<u8>, old: Vec<Vec<u8>>) -> Session {
        let media = SimMedia::from_image(&initial, self.variant.persistence);
        let obs = media.observer();
        let log = Log::create_on(media, &self.opts).expect("create_on over simulated media");
        let start_end = obs.ops();
        Session {
            log,
            obs,
            seg: self.new_segment(initial, Start::Create { old }, start_end),
            tail: DATA_OFFSET,
        }
    }

    /// Starts a segment that opens (recovers) the log held by `initial`. `None` (with a
    /// violation recorded) if the open fails.
    pub fn open(&mut self, initial: Vec<u8>) -> Option<Session> {
        let media = SimMedia::from_image(&initial, self.variant.persistence);
        let obs = media.observer();
        let log = match Log::open_on(media, &self.opts) {
            Ok(l) => l,
            Err(e) => {
                self.record(format!(
                    "VIOLATION in {} [model {}, seed {:#x}]: opening the start image of segment {} failed: {e}",
                    self.label, self.variant.model, self.seed, self.segments.len()
                ));
                return None;
            }
        };
        let base_first = log.first_lsn().unwrap_or_else(|| log.next_lsn());
        let base = live_entries(&initial, base_first, log.next_lsn());
        let data: Vec<&[u8]> = base
            .iter()
            .filter(|b| !b.pad)
            .map(|b| &b.payload[..])
            .collect();
        let read: Vec<Vec<u8>> = log.iter().map(|e| e.payload).collect();
        assert_eq!(
            data, read,
            "the harness walked other entries than the log holds"
        );
        let tail = log.recovery().tail_offset as usize;
        let start_end = obs.ops();
        let mut seg = self.new_segment(initial, Start::Open, start_end);
        seg.base = base;
        seg.base_first = base_first;
        Some(Session {
            log,
            obs,
            seg,
            tail,
        })
    }

    /// Ends a segment, checks every crash image of it, and returns its index.
    pub fn finish(&mut self, s: Session) -> usize {
        let si = self.keep(s);
        self.count_nt_synced(si);
        self.check_segment(si);
        si
    }

    /// Ends a segment and checks every crash point from the sync of each append whose
    /// non-temporal entries another thread synced to the append's return
    /// ([`Segment::nt_synced_by_other`]), and one other point in `one_in` (decided by the
    /// seed).
    pub fn finish_nt_synced(&mut self, s: Session, one_in: u64) -> usize {
        let si = self.keep(s);
        let seg = Rc::get_mut(&mut self.segments[si]).expect("a segment just recorded");
        seg.sampling = Some(Sampling {
            one_in,
            full: Vec::new(),
            windows: seg.nt_synced_by_other(),
        });
        self.count_nt_synced(si);
        self.check_segment(si);
        si
    }

    /// Adds the appends of segment `si` whose non-temporal entries another thread synced to
    /// [`NT_SYNCED_BY_OTHER`] (msync media with non-temporal stores, concurrent segments).
    fn count_nt_synced(&mut self, si: usize) {
        let seg = &self.segments[si];
        if self.variant.persistence == Persistence::Msync
            && self.variant.nt_threshold != usize::MAX
            && !seg.run.threads.is_empty()
        {
            *self.nt_synced.get_or_insert(0) += seg.nt_synced_by_other().len() as u64;
        }
    }

    /// Ends a segment and checks only the crash points `sampling` selects.
    pub fn finish_sampled(&mut self, mut s: Session, sampling: Sampling) -> usize {
        s.seg.sampling = Some(sampling);
        self.finish(s)
    }

    /// Ends a segment without checking it (a setup step whose crashes other scenarios cover).
    pub fn finish_unchecked(&mut self, s: Session) -> usize {
        self.keep(s)
    }

    fn keep(&mut self, s: Session) -> usize {
        let Session { log, mut seg, .. } = s;
        let (ops, threads) = log.into_media().take_tagged_trace();
        seg.run.ops = ops;
        seg.run.threads = if threads.iter().all(|&t| t == 0) {
            Vec::new()
        } else {
            threads
        };
        self.segments.push(Rc::new(seg));
        self.segments.len() - 1
    }

    /// Segment `si`.
    pub fn segment(&self, si: usize) -> Rc<Segment> {
        Rc::clone(&self.segments[si])
    }

    fn state_at(&self, si: usize, point: usize) -> PmemState {
        self.segments[si].run.state_at(point)
    }

    /// The durable image at the end of segment `si`.
    pub fn final_image(&self, si: usize) -> Vec<u8> {
        self.state_at(si, self.segments[si].run.ops.len())
            .into_durable()
    }

    /// The crash point inside event `ev` of segment `si` right after its last store (nothing
    /// of it drained yet).
    pub fn point_after_stores(&self, si: usize, ev: usize) -> usize {
        let seg = &self.segments[si];
        let e = &seg.events[ev];
        (e.start..e.end)
            .rev()
            .find(|&i| matches!(seg.run.ops[i], Op::Store { .. } | Op::StoreNt { .. }))
            .map_or(e.start, |i| i + 1)
    }

    /// The crash point inside event `ev` of segment `si` right before its last drain.
    pub fn point_before_last_drain(&self, si: usize, ev: usize) -> usize {
        let seg = &self.segments[si];
        let e = &seg.events[ev];
        (e.start..e.end)
            .rev()
            .find(|&i| seg.run.ops[i] == Op::Drain)
            .unwrap_or(e.start)
    }

    /// The crash point right before the drain of the segment's `create_on`/`open_on`.
    pub fn point_before_open_drain(&self, si: usize) -> usize {
        let seg = &self.segments[si];
        seg.run.ops[..seg.start_end]
            .iter()
            .rposition(|o| *o == Op::Drain)
            .unwrap_or(0)
    }

    /// A crash image at `point` of segment `si` in which every pending store persisted except
    /// those touching the byte ranges `exclude` (a legal image under the strict model). The
    /// image is checked by the oracle (and counted) before it is returned.
    pub fn image_without(&mut self, si: usize, point: usize, exclude: &[Range<usize>]) -> Vec<u8> {
        let img = self.state_at(si, point).image_without(exclude);
        self.check_one(si, point, &img, &format!("image without {exclude:?}"));
        img
    }

    /// A random crash image of segment `si` (random point, random image of it).
    pub fn random_image(&mut self, si: usize) -> Vec<u8> {
        let seg = &self.segments[si];
        // Inside create_on the log may not exist yet: start from a point after it.
        let first = match seg.start {
            Start::Create { .. } => seg.start_end,
            Start::Open => 0,
        };
        let p = self.rng.range(first, seg.run.ops.len());
        let st = self.state_at(si, p);
        let imgs = st.crash_images(self.variant.model, &self.gen, self.rng.next_u64());
        let i = self.rng.below(imgs.len() as u64) as usize;
        let img = imgs.image(i);
        let d = imgs.describe(i);
        drop(imgs);
        self.check_one(si, p, &img, &d);
        img
    }

    fn expect_at<'a>(&self, seg: &'a Segment, p: usize) -> Expect<'a> {
        if p < seg.start_end {
            return match &seg.start {
                Start::Create { old } => Expect::Creating { old },
                Start::Open => Expect::Log {
                    alts: vec![seg.base_contents().want()],
                    acked: 0,
                    inflight: 0,
                    truncating: false,
                    may_tear: true,
                },
            };
        }
        seg.expect_log(p)
    }

    fn check_one(&mut self, si: usize, p: usize, img: &[u8], what: &str) {
        if let Some(r) = &self.replay {
            if r.segment != si || r.point != p || r.image.is_some() {
                return;
            }
        }
        let seg = self.segment(si);
        let exp = self.expect_at(&seg, p);
        self.images += 1;
        if let Err(m) = self.oracle(
            img,
            &exp,
            mix(self.seed, &[si as u64, p as u64, 1 << 40]),
            (si, p),
        ) {
            self.violation(&seg, si, p, what, None, &m);
        }
    }

    /// True if crash point `p` of `seg` is checked (all are, unless the segment is sampled).
    fn sampled(&self, seg: &Segment, si: usize, p: usize) -> bool {
        let Some(s) = &seg.sampling else { return true };
        if self.replay.is_some() {
            return true;
        }
        if s.full.iter().any(|&i| {
            let e = &seg.events[i];
            e.start <= p && p <= e.end
        }) || s.windows.iter().any(|w| w.contains(&p))
        {
            return true;
        }
        mix(self.seed, &[si as u64, p as u64, 0x5a3]).is_multiple_of(s.one_in)
    }

    fn check_segment(&mut self, si: usize) {
        let seg = self.segment(si);
        let mut st = PmemState::new(seg.run.initial.clone(), self.variant.persistence);
        let mut buf = Vec::new();
        // Hashes of the images checked against the current expectation.
        let mut seen: HashSet<u64, BuildHasherDefault<NoHash>> = HashSet::default();
        // The expectation changes only when an event starts or ends (or a suffix truncation's
        // slot is stored or made durable).
        let mut cached: Option<((usize, usize, usize), Expect<'_>)> = None;
        for p in 0..=seg.run.ops.len() {
            if p > 0 {
                seg.run.apply(&mut st, p - 1);
                // A flush guarantees nothing before the next drain: a crash right after it has
                // exactly the images of a crash right before it (checked anyway when replayed).
                if matches!(seg.run.ops[p - 1], Op::Flush { .. }) && self.replay.is_none() {
                    continue;
                }
            }
            if self.stopped() {
                return;
            }
            let only = match &self.replay {
                Some(r) => {
                    if r.segment != si || r.point != p {
                        continue;
                    }
                    r.image
                }
                None => None,
            };
            if !self.sampled(&seg, si, p) {
                continue;
            }
            let key = if p < seg.start_end {
                (usize::MAX, p, 0)
            } else {
                (
                    seg.events.iter().filter(|e| e.end <= p).count(),
                    seg.events.iter().filter(|e| e.start < p).count(),
                    // Suffix truncations beside appends: their slots stored, made durable.
                    seg.events
                        .iter()
                        .map(|e| usize::from(e.slot.start < p) + usize::from(e.slot.end <= p))
                        .sum(),
                )
            };
            if !matches!(&cached, Some((k, _)) if *k == key) {
                cached = Some((key, self.expect_at(&seg, p)));
                seen.clear();
                self.ro_seen.borrow_mut().clear();
            }
            let exp = &cached.as_ref().expect("just set").1;
            let imgs = st.crash_images(
                self.variant.model,
                &self.gen,
                mix(self.seed, &[si as u64, p as u64]),
            );
            if self.replay.is_some() {
                eprintln!(
                    "  replay: segment {si}, point {p} ({}): {} images ({}), {} units pending",
                    describe_point(&seg, p),
                    imgs.len(),
                    if imgs.is_exhaustive() {
                        "exhaustive"
                    } else {
                        "sampled"
                    },
                    imgs.units()
                );
            }
            self.points += 1;
            if imgs.is_exhaustive() {
                self.exhaustive += 1;
            }
            for i in 0..imgs.len() {
                if only.is_some_and(|o| o != i) {
                    continue;
                }
                imgs.image_into(i, &mut buf);
                // An image already checked against the same expectation (at this crash point
                // or an earlier one) would pass or fail the same way: count it once.
                if only.is_none() && !seen.insert(image_hash(&buf)) {
                    self.duplicates += 1;
                    continue;
                }
                self.images += 1;
                let seed = mix(self.seed, &[si as u64, p as u64, i as u64]);
                if let Err(m) = self.oracle(&buf, exp, seed, (si, p)) {
                    self.violation(&seg, si, p, &imgs.describe(i), Some(i), &m);
                    if self.stopped() {
                        return;
                    }
                }
            }
        }
    }

    pub(crate) fn record(&mut self, text: String) {
        self.violations += 1;
        if self.reports.len() < self.max_reports || self.replay.is_some() {
            self.reports.push(text);
        }
    }

    fn violation(
        &mut self,
        seg: &Segment,
        si: usize,
        p: usize,
        image: &str,
        index: Option<usize>,
        msg: &str,
    ) {
        let replay = format!(
            "PMEM_SIM_REPLAY={}:{:#x}:{si}.{p}:{}{}",
            self.label,
            self.seed,
            self.variant.model,
            index.map(|i| format!(":{i}")).unwrap_or_default()
        );
        self.record(format!(
            "VIOLATION in {} [model {}, seed {:#x}] at crash point {si}.{p} ({}); {image}:\n    {msg}\n    replay: {replay}",
            self.label,
            self.variant.model,
            self.seed,
            describe_point(seg, p),
        ));
    }
}

pub(crate) fn describe_point(seg: &Segment, p: usize) -> String {
    let what = if p == 0 {
        "before any operation".to_string()
    } else {
        let t = seg.run.thread_of(p - 1);
        format!(
            "after op {}: {}{}",
            p - 1,
            seg.run.ops[p - 1].describe(),
            if t > 0 {
                format!(" by thread {t}")
            } else {
                String::new()
            }
        )
    };
    let phase = if p < seg.start_end {
        match seg.start {
            Start::Create { .. } => "inside create_on".to_string(),
            Start::Open => "inside open_on (recovery)".to_string(),
        }
    } else {
        let done: Vec<&Event> = seg.events.iter().filter(|e| e.end <= p).collect();
        let acked = done.iter().filter(|e| e.kind == EventKind::Append).count();
        let truncs = done.len() - acked;
        let inflight: Vec<String> = seg
            .events
            .iter()
            .filter(|e| e.start < p && p < e.end)
            .map(|e| match e.kind {
                EventKind::Append if e.block > 0 => format!(
                    "append of LSNs {}..={} by thread {}",
                    e.lsns.start,
                    e.lsns.end - 1,
                    e.thread
                ),
                EventKind::Append => {
                    format!("append of LSNs {}..={}", e.lsns.start, e.lsns.end - 1)
                }
                EventKind::TruncateBefore(l) => format!("truncate_before({l})"),
                EventKind::TruncateAfter(l) => format!("truncate_after({l})"),
            })
            .collect();
        format!(
            "{} entries at start, {acked} appends acknowledged{}{}",
            seg.base.len(),
            if truncs > 0 {
                format!(", {truncs} truncations done")
            } else {
                String::new()
            },
            if inflight.is_empty() {
                String::new()
            } else {
                format!(", in flight: {}", inflight.join(", "))
            }
        )
    };
    format!("{what}; {phase}")
}

/// The entries with LSNs `first..next` that recovery finds in `img`: from the current slot's
/// head, accepting an entry as recovery does (its LSN, its checksum, the epoch rule), and
/// going on at the start of the data area where one is refused (the wrap).
pub(crate) fn live_entries(img: &[u8], first: u64, next: u64) -> Vec<BaseEntry> {
    let (sb, slot) = current_slot(img);
    let mut pos = slot.head_offset as usize;
    let mut out = Vec::new();
    for lsn in first..next {
        let at = |pos: usize| {
            if pos + HEADER_LEN > img.len() {
                return None;
            }
            let h = EntryHeader::decode(&img[pos..pos + HEADER_LEN]);
            let end = pos + HEADER_LEN + h.len as usize;
            let ok = h.lsn == lsn
                && end <= img.len()
                && (lsn < slot.cut_lsn || h.epoch == slot.epoch)
                && format::entry_crc(
                    format::payload_crc(sb.salt, &img[pos + HEADER_LEN..end]),
                    &h,
                ) == h.crc;
            ok.then_some(h)
        };
        let h = match at(pos) {
            Some(h) => h,
            None => {
                pos = DATA_OFFSET;
                at(pos).unwrap_or_else(|| panic!("the harness lost entry {lsn} of the log"))
            }
        };
        out.push(BaseEntry {
            payload: img[pos + HEADER_LEN..pos + HEADER_LEN + h.len as usize].to_vec(),
            pad: h.flags & FLAG_PAD != 0,
            offset: pos,
        });
        pos += h.entry_len();
    }
    out
}

/// A 64-bit hash of a crash image (a multiply-xorshift over its words; images differ in a few
/// words, which this spreads over the whole hash).
fn image_hash(img: &[u8]) -> u64 {
    let mut h: u64 = img.len() as u64;
    let (words, rest) = img.as_chunks::<8>();
    for w in words {
        h = (h ^ u64::from_le_bytes(*w)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    for &b in rest {
        h = (h ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    h ^ (h >> 32)
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct NoHash(u64);

impl Hasher for NoHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
