//! daxlog's crash scenarios and the oracle every crash image is checked against.
//!
//! A *scenario* drives daxlog over [`SimMedia`] through one or more *segments*. A segment starts
//! from a durable image, either creating a log on it (`Log::create_on`) or opening the log it
//! holds (`Log::open_on`, which recovers and writes a metadata slot), then appends, truncates
//! (`truncate_before`, `truncate_after`, `reset`), or runs several appender threads in a seeded
//! interleaving ([`Session::concurrent`]). Its trace is replayed by [`PmemState`]; at every crash
//! point (after each store and drain; a crash right after a flush has exactly the images of a
//! crash right before it) the possible durable images of the chosen [`Model`] are generated and
//! each goes through the oracle. The expected contents are a sequence of entries (and the LSN
//! of the first) that the acknowledged calls edit:
//!
//! 1. `Log::open_on` succeeds (during `create_on` the log does not exist yet: there the open may
//!    fail, or find a prefix of the old log the media held); never `Error::Corrupted`;
//! 2. the log holds one acceptable state, byte-exact, with consecutive LSNs: the state after the
//!    acknowledged calls, or after the one in flight too (a batch all or nothing, a
//!    truncation's pre- or post-state); with several appenders, a prefix of the LSN sequence
//!    that holds every acknowledged entry, ends at a batch boundary and holds only appends
//!    that had started;
//! 3. the recovery report agrees; a further append gets the next LSN and reads back (or fails
//!    with `Error::Full` when no free piece can take it);
//! 4. the first recovery's own writes are replayed too: a crash inside them (a random image),
//!    the state after them, and the state after the further append all recover to the same
//!    entries (plus the further append in the last case);
//! 5. with the tail hint, a full scan that ignores the hint finds the same entries.
//!
//! Failures name the scenario, seed, crash point, model and image; `PMEM_SIM_REPLAY` re-runs
//! exactly that (see `README.md`).

// Lists of byte ranges to leave out of an image often hold a single range.
#![allow(clippy::single_range_in_vec_init)]

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use daxlog::format::{
    self, Slot, Superblock, DATA_OFFSET, HEADER_LEN, SB_BACKUP_OFFSET, SLOT0_OFFSET, SLOT1_OFFSET,
};
use daxlog::{Error, Log, Options, Persistence};

use crate::rng::{hash_str, mix, Rng};
use crate::sched::{Scheduler, Strategy};
use crate::{GenConfig, Model, Observer, Op, PmemState, Run, SimMedia, ThreadId};

// ---- Variants ----------------------------------------------------------------------------------

/// A persistence configuration of the engine plus a crash model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// Name of the engine configuration: `clwb-nt-never`, `clwb-nt-always`, `clwb-nt-256` or
    /// `msync`.
    pub config: &'static str,
    /// The barrier the simulated media reports.
    pub persistence: Persistence,
    /// `Options::nt_threshold` (ignored by the engine in msync mode).
    pub nt_threshold: usize,
    /// The crash model.
    pub model: Model,
}

/// Every variant the suite runs: CLWB media with non-temporal stores never, always (the engine's
/// default) and from 256 bytes (the mixed case), each under the strict and the per-line model;
/// msync media under the page model and the strict model.
pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for (config, nt_threshold) in [
        ("clwb-nt-never", usize::MAX),
        ("clwb-nt-always", 0),
        ("clwb-nt-256", 256),
    ] {
        for model in [Model::Strict, Model::Line] {
            v.push(Variant {
                config,
                persistence: Persistence::Clwb,
                nt_threshold,
                model,
            });
        }
    }
    for model in [Model::Msync, Model::Strict] {
        v.push(Variant {
            config: "msync",
            persistence: Persistence::Msync,
            nt_threshold: usize::MAX,
            model,
        });
    }
    v
}

impl Variant {
    fn opts(&self) -> Options {
        Options::new().nt_threshold(self.nt_threshold)
    }
}

// ---- Running -----------------------------------------------------------------------------------

/// One crash point to re-run, parsed from `PMEM_SIM_REPLAY`
/// (`scenario/config:seed:segment.point:model[:image]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// `scenario/config`, e.g. `sizes/clwb-nt-never`.
    pub scenario: String,
    /// The seed of the scenario run (printed with every failure).
    pub seed: u64,
    /// Segment of the scenario.
    pub segment: usize,
    /// Crash point in the segment: the number of operations executed.
    pub point: usize,
    /// The crash model.
    pub model: Model,
    /// Only this image of the crash point, if given.
    pub image: Option<usize>,
}

impl Replay {
    /// Parses the `PMEM_SIM_REPLAY` syntax.
    pub fn parse(s: &str) -> Result<Replay, String> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        if parts.len() != 4 && parts.len() != 5 {
            return Err(format!(
                "PMEM_SIM_REPLAY={s:?}: expected scenario/config:seed:segment.point:model[:image]"
            ));
        }
        let seed = parse_u64(parts[1]).ok_or_else(|| format!("bad seed {:?}", parts[1]))?;
        let (seg, point) = parts[2]
            .split_once('.')
            .ok_or_else(|| format!("bad crash point {:?} (segment.point)", parts[2]))?;
        let segment = seg.parse().map_err(|_| format!("bad segment {seg:?}"))?;
        let point = point.parse().map_err(|_| format!("bad point {point:?}"))?;
        let model = Model::parse(parts[3]).ok_or_else(|| format!("bad model {:?}", parts[3]))?;
        let image = match parts.get(4) {
            Some(i) => Some(i.parse().map_err(|_| format!("bad image index {i:?}"))?),
            None => None,
        };
        Ok(Replay {
            scenario: parts[0].to_string(),
            seed,
            segment,
            point,
            model,
            image,
        })
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// How to run scenarios.
#[derive(Clone, Debug)]
pub struct Suite {
    /// Base seed; each scenario run derives its own from it (`PMEM_SIM_SEED`).
    pub seed: u64,
    /// Images per crash point.
    pub gen: GenConfig,
    /// Rounds of each scenario, each with its own seed.
    pub rounds: u32,
    /// Stop at the first violation (for the mutant check).
    pub stop_at_first: bool,
    /// Re-run one crash point only (`PMEM_SIM_REPLAY`).
    pub replay: Option<Replay>,
    /// Violations printed in full (all are counted).
    pub max_reports: usize,
    /// Print every scenario run's counts and time.
    pub verbose: bool,
}

/// Counts of a run.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Crash images checked by the oracle.
    pub images: u64,
    /// Images that failed the oracle.
    pub violations: u64,
    /// Descriptions of the first violations (each with its replay string).
    pub reports: Vec<String>,
    /// Scenario runs (scenario x variant x round).
    pub runs: u64,
    /// Counters the scenarios report (e.g. `wraps`), summed over the runs.
    pub counters: BTreeMap<&'static str, Counter>,
}

/// A counter a scenario reports, over the runs that reported it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counter {
    /// Sum over the runs.
    pub sum: u64,
    /// Smallest value one run reported.
    pub min: u64,
    /// Runs that reported it.
    pub runs: u64,
}

impl Outcome {
    /// The one-line summary every crash test prints.
    pub fn summary(&self) -> String {
        format!(
            "checked {} crash images, {} violations",
            self.images, self.violations
        )
    }

    fn add(&mut self, o: Outcome, max: usize) {
        self.images += o.images;
        self.violations += o.violations;
        self.runs += o.runs;
        for (k, c) in o.counters {
            let t = self.counters.entry(k).or_default();
            t.min = if t.runs == 0 { c.min } else { t.min.min(c.min) };
            t.sum += c.sum;
            t.runs += c.runs;
        }
        for r in o.reports {
            if self.reports.len() < max {
                self.reports.push(r);
            }
        }
    }
}

impl Default for Suite {
    fn default() -> Self {
        Suite {
            seed: 0x00da_110c_5eed,
            gen: GenConfig {
                random: 128,
                ..GenConfig::default()
            },
            rounds: 2,
            stop_at_first: false,
            replay: None,
            max_reports: 5,
            verbose: false,
        }
    }
}

impl Suite {
    /// The default suite, with `PMEM_SIM_SEED`, `PMEM_SIM_REPLAY` and `PMEM_SIM_VERBOSE` read
    /// from the environment. Panics on a malformed replay string.
    pub fn from_env() -> Suite {
        let mut s = Suite::default();
        if let Ok(v) = std::env::var("PMEM_SIM_SEED") {
            s.seed = parse_u64(v.trim()).expect("PMEM_SIM_SEED: a decimal or 0x-hex number");
        }
        if let Ok(v) = std::env::var("PMEM_SIM_REPLAY") {
            if !v.trim().is_empty() {
                s.replay = Some(Replay::parse(&v).unwrap_or_else(|e| panic!("{e}")));
            }
        }
        s.verbose = matches!(
            std::env::var("PMEM_SIM_VERBOSE").as_deref(),
            Ok("1") | Ok("true")
        );
        s
    }

    /// Runs the named scenarios in every variant (see [`SCENARIOS`]), `rounds` times each.
    pub fn run(&self, scenarios: &[&str]) -> Outcome {
        self.run_variants(scenarios, &variants())
    }

    /// Runs the named scenarios in the given variants.
    pub fn run_variants(&self, scenarios: &[&str], variants: &[Variant]) -> Outcome {
        let mut total = Outcome::default();
        for &name in scenarios {
            let sc = SCENARIOS
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("unknown scenario {name}"));
            for v in variants {
                if !(sc.variants)(v) {
                    continue;
                }
                let label = format!("{}/{}", sc.name, v.config);
                let rounds = if sc.random { self.rounds } else { 1 };
                for round in 0..rounds {
                    let seed = match &self.replay {
                        Some(r) if r.scenario == label && r.model == v.model => r.seed,
                        Some(_) => continue,
                        None => mix(
                            self.seed,
                            &[hash_str(&label), hash_str(v.model.name()), round as u64],
                        ),
                    };
                    let t = Instant::now();
                    let mut r = Runner::new(self, *v, label.clone(), seed);
                    (sc.run)(&mut r);
                    let o = r.outcome();
                    if self.verbose || self.replay.is_some() {
                        eprintln!(
                            "  {label} [{}] seed {seed:#x}: {} images, {} violations, {:.2}s",
                            v.model,
                            o.images,
                            o.violations,
                            t.elapsed().as_secs_f64()
                        );
                    }
                    let stop = self.stop_at_first && o.violations > 0;
                    total.add(o, self.max_reports);
                    if stop {
                        return total;
                    }
                }
            }
        }
        total
    }
}

// ---- Segments ----------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Start {
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

/// One successful append, batch or truncation.
#[derive(Clone, Debug)]
pub struct Event {
    /// Trace length before the call.
    pub start: usize,
    /// Trace length after the call (when it returned: the append is acknowledged from here).
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
}

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
}

/// A recorded segment of a scenario.
#[derive(Debug)]
pub struct Segment {
    run: Run,
    start: Start,
    /// Trace length when `create_on`/`open_on` returned.
    start_end: usize,
    /// LSN of the first entry at the start (the next LSN if the log was empty).
    base_first: u64,
    base: Vec<Vec<u8>>,
    events: Vec<Event>,
    /// Appends from several threads overlap (only appends then).
    concurrent: bool,
    sampling: Option<Sampling>,
}

impl Segment {
    /// The successful appends and truncations of the segment.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The entries the log held when the segment started.
    pub fn base(&self) -> &[Vec<u8>] {
        &self.base
    }

    /// Every entry the log holds at the end of the segment (with appends and truncations
    /// applied), and the LSN of the first.
    pub fn contents(&self) -> (u64, Vec<Vec<u8>>) {
        let w = self.expect_after_all();
        (w.first, w.entries.iter().map(|e| e.to_vec()).collect())
    }

    /// Every entry acknowledged by the end of the segment (with truncations applied).
    pub fn all_entries(&self) -> Vec<Vec<u8>> {
        self.contents().1
    }

    fn base_contents(&self) -> Contents<'_> {
        Contents {
            first: self.base_first,
            entries: self.base.iter().map(|v| v.as_slice()).collect(),
        }
    }

    fn expect_after_all(&self) -> Want<'_> {
        match self.expect_log(self.run.ops.len() + 1) {
            Expect::Log { mut alts, .. } => alts.pop().expect("an alternative"),
            Expect::Creating { .. } => unreachable!("expect_log never says Creating"),
        }
    }

    /// What a crash at point `p` may recover to (after `create_on`/`open_on` returned).
    fn expect_log(&self, p: usize) -> Expect<'_> {
        let mut c = self.base_contents();
        // Events before the first one from an appender thread are sequential; so is all of a
        // segment without appender threads.
        let split = if self.concurrent {
            self.events
                .iter()
                .position(|e| e.thread != 0)
                .unwrap_or(self.events.len())
        } else {
            self.events.len()
        };
        if split == self.events.len() || p <= self.events[split].start {
            // One call at a time: the finished ones happened; the one in flight may have.
            let mut inflight = None;
            let mut acked = 0;
            for e in &self.events {
                if e.end <= p {
                    c.apply(e);
                    acked += 1;
                } else if e.start < p {
                    inflight = Some(e);
                    break;
                } else {
                    break;
                }
            }
            let mut alts = vec![c.want()];
            if let Some(e) = inflight {
                c.apply(e);
                let w = c.want();
                if w != alts[0] {
                    alts.push(w);
                }
            }
            return Expect::Log {
                alts,
                acked,
                inflight: inflight.map_or(0, |_| 1),
                truncating: inflight.is_some_and(|e| e.kind != EventKind::Append),
            };
        }
        for e in &self.events[..split] {
            c.apply(e);
        }
        // Appends from several threads: the log must be a prefix of the LSN sequence that holds
        // every acknowledged entry (and so every entry before one: the ordering rule), ends at
        // a batch boundary, and holds only appends that had started.
        let mut evs: Vec<&Event> = self.events[split..].iter().collect();
        assert!(
            evs.iter().all(|e| e.kind == EventKind::Append),
            "only appends may follow concurrent appends"
        );
        evs.sort_by_key(|e| e.lsns.start);
        let need = evs
            .iter()
            .filter(|e| e.end <= p)
            .map(|e| e.lsns.end)
            .max()
            .unwrap_or(0);
        let acked = split + evs.iter().filter(|e| e.end <= p).count();
        let inflight = evs.iter().filter(|e| e.start < p && p < e.end).count();
        let mut alts = Vec::new();
        if c.next() >= need {
            alts.push(c.want());
        }
        for e in evs {
            if e.start >= p {
                break;
            }
            c.apply(e);
            if c.next() >= need {
                alts.push(c.want());
            }
        }
        assert!(
            !alts.is_empty(),
            "an acknowledged append follows one that had not started"
        );
        Expect::Log {
            alts,
            acked,
            inflight,
            truncating: false,
        }
    }
}

/// The log's contents in the model: entries with LSNs `first`, `first + 1`, ...
#[derive(Clone, Debug)]
struct Contents<'a> {
    first: u64,
    entries: VecDeque<&'a [u8]>,
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
                self.entries.extend(e.payloads.iter().map(|p| p.as_slice()));
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

    fn want(&self) -> Want<'a> {
        Want {
            first: self.first,
            entries: self.entries.iter().copied().collect(),
        }
    }
}

/// Log contents to compare with: entries with LSNs `first`, `first + 1`, ... (`first` is the
/// next LSN when there is no entry).
#[derive(Clone, Debug, PartialEq)]
struct Want<'a> {
    first: u64,
    entries: Vec<&'a [u8]>,
}

impl Want<'_> {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn describe(&self) -> String {
        match self.entries.len() {
            0 => format!("empty (next LSN {})", self.first),
            n => format!("LSNs {}..={}", self.first, self.first + n as u64 - 1),
        }
    }
}

/// A live log on simulated media, recording a segment.
pub struct Session {
    log: Log<SimMedia>,
    obs: Observer,
    seg: Segment,
    tail: usize,
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

    fn write(&mut self, payloads: &[Vec<u8>], batch: bool) -> Option<Range<u64>> {
        let start = self.obs.ops();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
        let r = if batch {
            self.log.append_batch(&refs)
        } else {
            self.log.append(refs[0]).map(|l| l..l + 1)
        };
        let end = self.obs.ops();
        match r {
            Ok(lsns) => {
                let (ops, _) = self.obs.ops_range(start, end);
                let offset = header_offset(&ops, |_| true).expect("an append stores a header");
                let ev = Event {
                    start,
                    end,
                    offset,
                    payloads: payloads.to_vec(),
                    kind: EventKind::Append,
                    lsns: lsns.clone(),
                    thread: 0,
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

    /// `truncate_after(lsn)`, recorded as an event of the segment.
    pub fn truncate_after(&mut self, lsn: u64) {
        let next = self.log.next_lsn();
        let start = self.obs.ops();
        self.log
            .truncate_after(lsn)
            .unwrap_or_else(|e| panic!("truncate_after({lsn}) failed: {e}"));
        if lsn + 1 < next {
            // The new tail is where the first deleted header is destroyed (8 zero bytes), or
            // the end of the file when there is no room for them.
            let (ops, _) = self.obs.ops_range(start, self.obs.ops());
            self.tail = ops
                .iter()
                .find_map(|o| match o {
                    Op::Store { off, data } if *off >= DATA_OFFSET && data.len() == 8 => Some(*off),
                    _ => None,
                })
                .unwrap_or(self.log.capacity() as usize);
        }
        self.record(start, EventKind::TruncateAfter(lsn));
    }

    /// Runs `plans.len()` appender threads at once, in the interleaving of their media
    /// operations that `seed` picks (see [`Scheduler`]): thread `t` (operations tagged `t + 1`)
    /// makes the appends of `plans[t]` in order (a plan item of one payload is an `append`, of
    /// several an `append_batch`). Every append must fit. Returns the scheduler's choices.
    ///
    /// With msync media use at most two threads: three contend for the group commit's lock,
    /// and which waiter gets it is the kernel's choice, not the seed's.
    pub fn concurrent(&mut self, plans: &[Vec<Vec<Vec<u8>>>], seed: u64, stick: u64) -> Vec<u8> {
        let sched = Scheduler::new(plans.len(), seed, Strategy { stick });
        let log = &self.log;
        let obs = &self.obs;
        let results: Vec<Vec<Event>> = std::thread::scope(|sc| {
            let handles: Vec<_> = plans
                .iter()
                .enumerate()
                .map(|(t, plan)| {
                    let sched = Arc::clone(&sched);
                    sc.spawn(move || {
                        let _reg = sched.register(t);
                        let mut evs = Vec::new();
                        for payloads in plan {
                            sched.yield_point(t);
                            let start = obs.ops();
                            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
                            let r = if refs.len() == 1 {
                                log.append(refs[0]).map(|l| l..l + 1)
                            } else {
                                log.append_batch(&refs)
                            };
                            let end = obs.ops();
                            let lsns = r.unwrap_or_else(|e| {
                                panic!("concurrent append on simulated media failed: {e}")
                            });
                            evs.push(Event {
                                start,
                                end,
                                offset: 0,
                                payloads: payloads.clone(),
                                kind: EventKind::Append,
                                lsns,
                                thread: (t + 1) as ThreadId,
                            });
                        }
                        evs
                    })
                })
                .collect();
            sched.run();
            handles
                .into_iter()
                .map(|h| h.join().expect("an appender thread panicked"))
                .collect()
        });
        let mut evs: Vec<Event> = results.into_iter().flatten().collect();
        let first = evs.iter().map(|e| e.start).min().unwrap_or(0);
        let (ops, threads) = self.obs.ops_range(first, self.obs.ops());
        for e in &mut evs {
            let (a, b) = (e.start - first, e.end - first);
            let t = e.thread;
            e.offset = header_offset(&ops[a..b], |i| threads[a + i] == t)
                .expect("an append stores a header");
        }
        if let Some(last) = evs.iter().max_by_key(|e| e.lsns.start) {
            self.tail = last.offset + last.bytes();
        }
        evs.sort_by_key(|e| (e.start, e.end));
        self.seg.events.extend(evs);
        self.seg.concurrent = true;
        sched.choices()
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

fn current_slot(img: &[u8]) -> (Superblock, Slot) {
    let sb = Superblock::decode(&img[..64])
        .or_else(|_| Superblock::decode(&img[SB_BACKUP_OFFSET..SB_BACKUP_OFFSET + 64]))
        .expect("a superblock");
    let slot = Slot::pick(
        Slot::decode(&img[SLOT0_OFFSET..], sb.salt, sb.capacity),
        Slot::decode(&img[SLOT1_OFFSET..], sb.salt, sb.capacity),
    )
    .expect("a metadata slot");
    (sb, slot)
}

/// True if an append of `total` bytes fits in the log whose current slot is in `img` and whose
/// tail is `tail` (the wrap rule of FORMAT.md section 6).
fn fits(img: &[u8], tail: usize, total: usize) -> bool {
    let (sb, slot) = current_slot(img);
    let (cap, head) = (sb.capacity as usize, slot.head_offset as usize);
    if tail >= head {
        tail + total <= cap || DATA_OFFSET + total < head
    } else {
        tail + total < head
    }
}

/// The offset of the first entry header stored in `ops` (by the operations `mine` accepts):
/// the first store of at least 24 bytes into the data area (a whole small entry, or a large
/// entry's header; the end marker and padding are 8 bytes, slots lie below the data area).
fn header_offset(ops: &[Op], mine: impl Fn(usize) -> bool) -> Option<usize> {
    ops.iter().enumerate().find_map(|(i, o)| match o {
        Op::Store { off, data } | Op::StoreNt { off, data }
            if *off >= DATA_OFFSET && data.len() >= HEADER_LEN && mine(i) =>
        {
            Some(*off)
        }
        _ => None,
    })
}

/// An entry encoded exactly as the engine writes it (for payloads that forge entries).
pub use daxlog::format::encode_entry;

// ---- The runner and the oracle -----------------------------------------------------------------

/// What a crash image must recover to.
enum Expect<'a> {
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
    },
}

/// Runs one scenario in one variant: records segments and checks their crash images.
pub struct Runner {
    variant: Variant,
    opts: Options,
    /// The options without the tail hint (a full scan to compare with).
    plain_opts: Options,
    hinted: bool,
    label: String,
    seed: u64,
    gen: GenConfig,
    stop_at_first: bool,
    replay: Option<Replay>,
    max_reports: usize,
    /// Scenario-level randomness (sizes, payloads).
    pub rng: Rng,
    segments: Vec<Rc<Segment>>,
    images: u64,
    violations: u64,
    reports: Vec<String>,
    counters: BTreeMap<&'static str, Counter>,
}

impl Runner {
    fn new(suite: &Suite, variant: Variant, label: String, seed: u64) -> Runner {
        Runner {
            variant,
            opts: variant.opts(),
            plain_opts: variant.opts(),
            hinted: false,
            label,
            seed,
            gen: suite.gen,
            stop_at_first: suite.stop_at_first,
            replay: suite.replay.clone(),
            max_reports: suite.max_reports,
            rng: Rng::derive(seed, &[1]),
            segments: Vec::new(),
            images: 0,
            violations: 0,
            reports: Vec::new(),
            counters: BTreeMap::new(),
        }
    }

    fn outcome(self) -> Outcome {
        Outcome {
            images: self.images,
            violations: self.violations,
            reports: self.reports,
            runs: 1,
            counters: self.counters,
        }
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
            concurrent: false,
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
        let base: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
        let base_first = log.first_lsn().unwrap_or_else(|| log.next_lsn());
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
        self.check_segment(si);
        si
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
        if let Err(m) = self.oracle(img, &exp, mix(self.seed, &[si as u64, p as u64, 1 << 40])) {
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
        }) {
            return true;
        }
        mix(self.seed, &[si as u64, p as u64, 0x5a3]).is_multiple_of(s.one_in)
    }

    fn check_segment(&mut self, si: usize) {
        let seg = self.segment(si);
        let mut st = PmemState::new(seg.run.initial.clone(), self.variant.persistence);
        let mut buf = Vec::new();
        // The expectation changes only when an event starts or ends.
        let mut cached: Option<((usize, usize), Expect<'_>)> = None;
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
                (usize::MAX, p)
            } else {
                (
                    seg.events.iter().filter(|e| e.end <= p).count(),
                    seg.events.iter().filter(|e| e.start < p).count(),
                )
            };
            if !matches!(&cached, Some((k, _)) if *k == key) {
                cached = Some((key, self.expect_at(&seg, p)));
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
            for i in 0..imgs.len() {
                if only.is_some_and(|o| o != i) {
                    continue;
                }
                imgs.image_into(i, &mut buf);
                self.images += 1;
                let seed = mix(self.seed, &[si as u64, p as u64, i as u64]);
                if let Err(m) = self.oracle(&buf, exp, seed) {
                    self.violation(&seg, si, p, &imgs.describe(i), Some(i), &m);
                    if self.stopped() {
                        return;
                    }
                }
            }
        }
    }

    fn record(&mut self, text: String) {
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

    /// Checks one crash image; `Err` describes the violation.
    fn oracle(&self, img: &[u8], exp: &Expect<'_>, seed: u64) -> Result<(), String> {
        let pers = self.variant.persistence;
        let log = match Log::open_on(SimMedia::from_image(img, pers), &self.opts) {
            Ok(l) => l,
            Err(e) => {
                return match exp {
                    Expect::Creating { .. } => Ok(()),
                    Expect::Log { .. } => Err(format!("open failed: {e}")),
                }
            }
        };
        let actual: Want<'_> = match exp {
            Expect::Creating { old } => {
                let n = log.iter().count();
                let want = Want {
                    first: 1,
                    entries: old.iter().take(n).map(|v| v.as_slice()).collect(),
                };
                same(&log, &want)
                    .map_err(|m| format!("crash while creating over an old log: {m}"))?;
                want
            }
            Expect::Log {
                alts,
                acked,
                inflight,
                ..
            } => check_log(&log, alts, *acked, *inflight)?,
        };
        let n = actual.entries.len() as u64;
        let next = actual.next();
        let rep = log.recovery();
        if rep.entries != n
            || rep.last_lsn != (n > 0).then_some(next - 1)
            || rep.first_lsn != (n > 0).then_some(actual.first)
        {
            return Err(format!(
                "recovery report says {} entries (LSNs {:?}..={:?}); the log holds {}",
                rep.entries,
                rep.first_lsn,
                rep.last_lsn,
                actual.describe()
            ));
        }
        // A further append must work and read back.
        let rep_tail = rep.tail_offset as usize;
        let mut rng = Rng::new(seed);
        let probe_len = rng.range(0, 40);
        let probe = rng.bytes(probe_len);
        let probed = match log.append(&probe) {
            Ok(l) if l == next => match log.read(l) {
                Some(e) if e.payload == probe.as_slice() => true,
                _ => {
                    return Err(format!(
                        "the append after recovery (LSN {l}) does not read back"
                    ))
                }
            },
            Ok(l) => {
                return Err(format!(
                    "the append after recovery got LSN {l}, expected {next}"
                ))
            }
            // Full only if no piece of free space can take it (FORMAT.md, the wrap rule).
            Err(Error::Full { .. }) if !fits(img, rep_tail, format::entry_len(probe.len())) => {
                false
            }
            Err(e) => return Err(format!("the append after recovery failed: {e}")),
        };
        let (trace, _) = log.into_media().take_tagged_trace();
        // Replay what the first recovery wrote, and crash inside it.
        let rec_end = trace
            .iter()
            .position(|o| *o == Op::Drain)
            .map_or(trace.len(), |i| i + 1);
        let mut st = PmemState::new(img.to_vec(), pers);
        let mut done = 0;
        if rec_end > 1 {
            let q = rng.range(1, rec_end - 1);
            for op in &trace[..q] {
                st.apply(op);
            }
            done = q;
            let units = st.crash_units(self.variant.model);
            let choice = units.random_choice(&mut rng);
            let nested = units.image_of(&choice);
            let again = Log::open_on(SimMedia::from_vec(nested, pers), &self.opts);
            let what = || {
                format!(
                    "after a crash inside the first recovery's writes (after its op {q} of {rec_end}, {})",
                    units.describe_of(&choice)
                )
            };
            match again {
                // A crash inside create_on over an old log may leave that log's newest slot
                // torn by the creation's zeroing; the first recovery then used the older slot,
                // and its own slot write (the same sequence number, at the same place) can make
                // the newest slot whole again. The old log's entries are all that must hold
                // then: the creation was never acknowledged.
                Ok(l2) => match exp {
                    Expect::Creating { old } => {
                        let n = l2.iter().count();
                        let want = Want {
                            first: 1,
                            entries: old.iter().take(n).map(|v| v.as_slice()).collect(),
                        };
                        same(&l2, &want).map_err(|m| format!("{}: {m}", what()))?
                    }
                    // A truncation torn in its slot update leaves that slot partly written; the
                    // first recovery, finding it invalid, writes its own slot with the same
                    // sequence number at the same place, and a crash inside that write can
                    // complete the torn one (the words they share persist from either, and the
                    // words that differ all from the truncation). The interrupted recovery
                    // returned nothing, and the truncation was in flight: its completion is
                    // acceptable here (but not after the first recovery completed).
                    Expect::Log {
                        alts, truncating, ..
                    } => {
                        if let Err(m) = same(&l2, &actual) {
                            if !(*truncating && alts.iter().any(|a| same(&l2, a).is_ok())) {
                                return Err(format!("{}: {m}", what()));
                            }
                        }
                    }
                },
                Err(e) => return Err(format!("{}: open failed: {e}", what())),
            }
        }
        for op in &trace[done..rec_end] {
            st.apply(op);
        }
        let l3 = Log::open_on_read_only(SimMedia::from_image(st.durable(), pers), &self.opts)
            .map_err(|e| format!("second recovery (after the first completed) failed: {e}"))?;
        same(&l3, &actual).map_err(|m| format!("second recovery differs from the first: {m}"))?;
        drop(l3);
        if self.hinted {
            // The hint must change nothing but where the scan starts.
            let full = Log::open_on_read_only(SimMedia::from_image(img, pers), &self.plain_opts)
                .map_err(|e| format!("a full scan (without the tail hint) failed: {e}"))?;
            same(&full, &actual)
                .map_err(|m| format!("a full scan (without the tail hint) differs: {m}"))?;
        }
        if probed {
            for op in &trace[rec_end..] {
                st.apply(op);
            }
            let l4 =
                Log::open_on_read_only(SimMedia::from_vec(st.into_durable(), pers), &self.opts)
                    .map_err(|e| format!("recovery after the further append failed: {e}"))?;
            let mut want = actual.clone();
            want.entries.push(&probe);
            same(&l4, &want).map_err(|m| format!("recovery after the further append: {m}"))?;
        }
        Ok(())
    }
}

fn describe_point(seg: &Segment, p: usize) -> String {
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
                EventKind::Append if seg.concurrent => format!(
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

fn short(p: &[u8]) -> String {
    let hex: String = p.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "{} bytes {hex}{}",
        p.len(),
        if p.len() > 8 { ".." } else { "" }
    )
}

/// The log's entries must be exactly `want`, with LSNs `want.first`, `want.first + 1`, ...
fn same(log: &Log<SimMedia>, want: &Want<'_>) -> Result<(), String> {
    let mut n = 0usize;
    for (i, e) in log.iter().enumerate() {
        let lsn = want.first + i as u64;
        if e.lsn != lsn {
            return Err(format!(
                "entry {} carries LSN {}, expected {lsn}",
                i + 1,
                e.lsn
            ));
        }
        match want.entries.get(i) {
            None => {
                return Err(format!(
                    "unexpected entry LSN {} ({}) after the {} expected",
                    e.lsn,
                    short(e.payload),
                    want.entries.len()
                ))
            }
            Some(w) if *w != e.payload => {
                return Err(format!(
                    "entry LSN {} is {}, expected {}",
                    e.lsn,
                    short(e.payload),
                    short(w)
                ))
            }
            _ => {}
        }
        n += 1;
    }
    if n < want.entries.len() {
        return Err(format!(
            "the log holds {n} entries, expected {} (LSN {} missing)",
            want.entries.len(),
            want.first + n as u64
        ));
    }
    if log.next_lsn() != want.next() {
        return Err(format!(
            "the next LSN is {}, expected {}",
            log.next_lsn(),
            want.next()
        ));
    }
    Ok(())
}

/// The log's entries must be one of `alts`.
fn check_log<'a>(
    log: &Log<SimMedia>,
    alts: &[Want<'a>],
    acked: usize,
    inflight: usize,
) -> Result<Want<'a>, String> {
    let n = log.iter().count();
    let first = log.first_lsn().unwrap_or_else(|| log.next_lsn());
    let ctx = || {
        format!(
            "[acceptable: {}; appends and truncations acknowledged: {acked}, in flight: {inflight}]",
            alts.iter()
                .map(|a| a.describe())
                .collect::<Vec<_>>()
                .join(" or ")
        )
    };
    // The alternative with the same first LSN and length, else the one with the same first
    // LSN and the nearest length (for the message), else the first.
    let pick = alts
        .iter()
        .find(|a| a.first == first && a.entries.len() == n)
        .or_else(|| {
            alts.iter()
                .filter(|a| a.first == first)
                .min_by_key(|a| a.entries.len().abs_diff(n))
        })
        .unwrap_or(&alts[0]);
    same(log, pick).map_err(|m| format!("{m} {}", ctx()))?;
    Ok(pick.clone())
}

// ---- Scenarios ---------------------------------------------------------------------------------

/// A named crash scenario.
pub struct Scenario {
    /// The name used in test filters and replay strings.
    pub name: &'static str,
    /// What it exercises.
    pub about: &'static str,
    /// Uses the scenario seed for sizes or contents (so more rounds find more).
    pub random: bool,
    /// Which variants it runs in.
    pub variants: fn(&Variant) -> bool,
    /// The scenario.
    pub run: fn(&mut Runner),
}

fn all(_: &Variant) -> bool {
    true
}

fn strict_or_msync(v: &Variant) -> bool {
    v.model != Model::Line
}

/// Every scenario.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "sizes",
        about: "single appends of every interesting size, 0 bytes to past the NT threshold",
        random: false,
        variants: all,
        run: sizes,
    },
    Scenario {
        name: "sizes-random",
        about: "single appends of random sizes at random alignments until the log is full",
        random: true,
        variants: all,
        run: sizes_random,
    },
    Scenario {
        name: "batch",
        about: "append_batch of 1 to 6 entries, small and large, interleaved with appends",
        random: false,
        variants: all,
        run: batch,
    },
    Scenario {
        name: "full",
        about: "appends until Error::Full, then filling the log exactly to its last byte",
        random: true,
        variants: all,
        run: full,
    },
    Scenario {
        name: "reopen",
        about: "appends after recovery from random crash images, over several sessions",
        random: true,
        variants: all,
        run: reopen,
    },
    Scenario {
        name: "superblock-repair",
        about: "a writable open repairs a damaged superblock copy: crashes inside the repair",
        random: false,
        variants: strict_or_msync,
        run: superblock_repair,
    },
    Scenario {
        name: "torn-shorter",
        about: "a torn long entry, then shorter appends over its remains",
        random: false,
        variants: all,
        run: torn_shorter,
    },
    Scenario {
        name: "stale-batch",
        about: "a torn batch whose later entry is whole; a partial wipe at recovery; later \
                sessions land their tail on it (LSN and epoch rules)",
        random: false,
        variants: all,
        run: stale_batch,
    },
    Scenario {
        name: "forged-payload",
        about: "payloads holding encoded entries: acknowledged (only data), and torn remains \
                that a later tail lands on",
        random: false,
        variants: all,
        run: forged_payload,
    },
    Scenario {
        name: "wipe-revival",
        about: "an append over stale bytes torn only in a zero word; the recovery's wipe of its \
                remains crashes with just that word wiped",
        random: false,
        variants: strict_or_msync,
        run: wipe_revival,
    },
    Scenario {
        name: "reuse",
        about: "create_on over media holding an old log; crashes inside the creation",
        random: false,
        variants: strict_or_msync,
        run: reuse,
    },
    Scenario {
        name: "truncate-head",
        about: "truncate_before (middle, first, all but one, everything) with crashes inside its \
                slot update and after it; in a plain and in a wrapped log; across sessions",
        random: true,
        variants: all,
        run: truncate_head,
    },
    Scenario {
        name: "wrap-first-append",
        about: "a full small log, its head truncated, then the first append (or batch) that \
                wraps to the start of the data area, with the file's end unused or filled exactly",
        random: true,
        variants: all,
        run: wrap_first_append,
    },
    Scenario {
        name: "old-lap-past-tail",
        about: "after a wrap, new entries end exactly where an old lap's entry begins; crashes \
                that leave that entry intact at the tail (end marker lost), and appends over it",
        random: false,
        variants: all,
        run: old_lap_past_tail,
    },
    Scenario {
        name: "many-laps",
        about: "over 100 wraps of a 16 KiB log: random appends and batches, truncate_before \
                whenever Full, some truncate_after and reset; sampled crash points",
        random: true,
        variants: all,
        run: many_laps,
    },
    Scenario {
        name: "truncate-suffix",
        about: "truncate_after (middle, nothing, everything, inside a batch) and reset, with \
                crashes at both barriers; shorter appends over the deleted entries; later sessions",
        random: true,
        variants: all,
        run: truncate_suffix,
    },
    Scenario {
        name: "suffix-revival",
        about:
            "truncate_after crashes after its slot update with the first deleted header intact; \
                the next session wraps and truncates its suffix above that header's LSN",
        random: false,
        variants: all,
        run: suffix_revival,
    },
    Scenario {
        name: "suffix-all-wrap",
        about: "truncate_after(first - 1) deletes every entry of a log whose head is near the \
                end of the file; the next append wraps (an empty first part)",
        random: false,
        variants: all,
        run: suffix_all_wrap,
    },
    Scenario {
        name: "concurrent",
        about: "two and three appenders in seeded interleavings of their media operations \
                (per-thread fences), in a plain and in a wrapping log",
        random: true,
        variants: all,
        run: concurrent,
    },
    Scenario {
        name: "tail-hint",
        about: "Options::tail_hint_every(256): hint slot updates during appends, truncations \
                around the hint, a wrap; recovery with the hint equals a full scan",
        random: true,
        variants: all,
        run: tail_hint,
    },
];

/// The names of every scenario.
pub fn scenario_names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.name).collect()
}

/// Payload sizes that cross every boundary: words, the header's line, lines, the default NT
/// threshold, pages.
pub const SIZES: &[usize] = &[
    0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 39, 40, 41, 47, 55, 56, 57, 63, 64,
    65, 71, 88, 100, 127, 128, 129, 200, 231, 232, 233, 255, 256, 257, 300, 513, 777, 1000, 2000,
    4100,
];

fn sizes(r: &mut Runner) {
    let mut s = r.create(5 * 4096);
    for &n in SIZES {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    r.finish(s);
}

fn sizes_random(r: &mut Runner) {
    let mut s = r.create(4 * 4096);
    loop {
        let n = match r.rng.below(8) {
            0 => r.rng.range(0, 16),
            1..=4 => r.rng.range(0, 120),
            5 | 6 => r.rng.range(120, 400),
            _ => r.rng.range(400, 1500),
        };
        let p = r.payload(n);
        if s.append(&p).is_none() || s.free() < 64 {
            break;
        }
    }
    r.finish(s);
}

fn batch(r: &mut Runner) {
    let mut s = r.create(5 * 4096);
    let shapes: &[&[usize]] = &[
        &[1],
        &[0, 0],
        &[1, 2],
        &[8, 8, 8],
        &[5, 300],
        &[100, 1, 50, 7, 64],
        &[16, 16, 16, 16, 16, 16],
        &[250, 10],
        &[1000, 24],
        &[3, 3000],
    ];
    for shape in shapes {
        let b: Vec<Vec<u8>> = shape.iter().map(|&n| r.payload(n)).collect();
        s.batch(&b).expect("room");
        let p = r.payload(10);
        s.append(&p).expect("room");
    }
    r.finish(s);
}

fn full(r: &mut Runner) {
    let mut s = r.create(8192);
    // Fill with random appends and batches until one does not fit.
    loop {
        let ok = if r.rng.chance(1, 4) {
            let b: Vec<Vec<u8>> = (0..r.rng.range(2, 4))
                .map(|_| {
                    let n = r.rng.range(0, 300);
                    r.payload(n)
                })
                .collect();
            s.batch(&b).is_some()
        } else {
            let n = r.rng.range(0, 700);
            let p = r.payload(n);
            s.append(&p).is_some()
        };
        if !ok {
            break;
        }
    }
    // Fill exactly to the end, then nothing more fits.
    let free = s.free();
    if free >= HEADER_LEN {
        let p = r.payload(free - HEADER_LEN);
        s.append(&p).expect("an entry that fills the log exactly");
        assert_eq!(s.free(), 0);
    }
    assert!(s.append(b"").is_none());
    assert!(s.batch(&[vec![1], vec![2]]).is_none());
    r.finish(s);
}

fn reopen(r: &mut Runner) {
    let mut s = r.create(4 * 4096);
    for _ in 0..5 {
        let n = r.rng.range(0, 300);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let mut si = r.finish(s);
    for _ in 0..4 {
        if r.stopped() {
            return;
        }
        let img = r.random_image(si);
        let Some(mut s) = r.open(img) else { return };
        for _ in 0..r.rng.range(0, 3) {
            let n = r.rng.range(0, 200);
            let p = r.payload(n);
            if s.free() > 2048 {
                s.append(&p);
            }
        }
        if r.rng.chance(1, 2) && s.free() > 2048 {
            let b: Vec<Vec<u8>> = (0..r.rng.range(2, 3))
                .map(|_| {
                    let n = r.rng.range(0, 100);
                    r.payload(n)
                })
                .collect();
            s.batch(&b);
        }
        si = r.finish(s);
    }
}

fn superblock_repair(r: &mut Runner) {
    let mut s = r.create(3 * 4096);
    for n in [10, 60, 200] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let si = r.finish_unchecked(s);
    let entries = r.segment(si).all_entries();
    let clean = r.final_image(si);
    for damaged in [20, SB_BACKUP_OFFSET + 40] {
        let mut img = clean.clone();
        img[damaged] ^= 0x40;
        let Some(mut s) = r.open(img) else { return };
        if s.seg.base != entries {
            r.record(format!(
                "VIOLATION in {}: the log with a damaged superblock copy recovered {} entries, expected {}",
                r.label,
                s.seg.base.len(),
                entries.len()
            ));
        }
        let p = r.payload(30);
        s.append(&p).expect("room");
        r.finish(s);
    }
}

fn torn_shorter(r: &mut Runner) {
    let mut s = r.create(3 * 4096);
    for _ in 0..3 {
        let p = r.payload(50);
        s.append(&p).expect("room");
    }
    let long = r.payload(400);
    s.append(&long).expect("room");
    let si = r.finish(s);
    let ev = r.segment(si).events()[3].clone();
    let at = r.point_after_stores(si, 3);
    let o = ev.offset;
    // Torn three ways: its length/checksum word lost, a payload word lost, its last word lost.
    for hole in [o..o + 8, o + 200..o + 208, o + 416..o + 424] {
        let img = r.image_without(si, at, &[hole]);
        let Some(mut s) = r.open(img) else { return };
        for n in [16, 100, 7] {
            let p = r.payload(n);
            s.append(&p).expect("room");
        }
        let s1 = r.finish(s);
        let img = r.final_image(s1);
        let Some(mut s) = r.open(img) else { return };
        let p = r.payload(1);
        s.append(&p).expect("room");
        r.finish(s);
    }
}

/// After a torn batch whose later entry `B` is whole (its first entry torn), the recovery that
/// wipes the remains crashes with its slot written and the torn entry's header wiped but `B`
/// not. The next session starts with a clean-looking tail and lands its tail on `B`: with one
/// entry of the torn entry's size the LSN matches `B`'s and only the epoch rule refuses it;
/// with two entries `B`'s LSN is below the next session's `cut_lsn` and only the LSN rule
/// refuses it.
fn stale_batch(r: &mut Runner) {
    let mut s = r.create(3 * 4096);
    for _ in 0..2 {
        let p = r.payload(30);
        s.append(&p).expect("room");
    }
    let a = r.payload(56); // 80 bytes on media
    let b = r.payload(40);
    s.batch(&[a, b]).expect("room");
    let s0 = r.finish(s);
    let ev = r.segment(s0).events()[2].clone();
    let offs = ev.entry_offsets();
    let (a_off, b_off) = (offs[0], offs[1]);
    let b_end = b_off + format::entry_len(40);
    let at = r.point_after_stores(s0, 2);
    let torn = r.image_without(s0, at, &[a_off..a_off + 8]);
    let Some(s) = r.open(torn) else { return };
    let s1 = r.finish(s);
    // The recovery's writes persisted except the wipe of B.
    let p = r.point_before_open_drain(s1);
    let partial = r.image_without(s1, p, &[b_off..b_end]);
    for shape in [&[56usize][..], &[8, 24]] {
        let Some(mut s) = r.open(partial.clone()) else {
            return;
        };
        for &n in shape {
            let p = r.payload(n);
            s.append(&p).expect("room");
        }
        assert_eq!(s.tail(), b_off, "the new tail must land on the stale entry");
        let s2 = r.finish(s);
        let img = r.final_image(s2);
        let Some(mut s) = r.open(img) else { return };
        let p = r.payload(5);
        s.append(&p).expect("room");
        r.finish(s);
    }
}

/// Payloads holding encoded entries. Acknowledged ones are only data. A torn one leaves them as
/// remains; a recovery that crashes with the torn header wiped (and its slot written) but the
/// rest not leaves them in place; the next session's tail then lands on a forged entry with
/// the next LSN (refused by the epoch rule) or with a low LSN (refused by the LSN rule; with
/// LSN below `cut_lsn` the epoch rule does not apply to it).
fn forged_payload(r: &mut Runner) {
    // Acknowledged payloads that hold entries.
    let mut s = r.create(3 * 4096);
    for _ in 0..2 {
        let p = r.payload(20);
        s.append(&p).expect("room");
    }
    let (salt, epoch) = s.salt_epoch();
    let inner = [
        encode_entry(salt, epoch, 4, 0, b"inner four"),
        encode_entry(salt, epoch, 5, 0, b"inner five"),
        encode_entry(salt, epoch ^ 1, 1, 0, b"inner low"),
    ]
    .concat();
    s.append(&inner).expect("room");
    let p = r.payload(9);
    s.append(&p).expect("room");
    r.finish(s);

    // A torn entry whose payload forges entries.
    let mut s = r.create(3 * 4096);
    for _ in 0..3 {
        let p = r.payload(20);
        s.append(&p).expect("room");
    }
    let (salt, epoch) = s.salt_epoch();
    let mut long = r.payload(400);
    let next = encode_entry(salt, epoch, 5, 0, b"forged next");
    let low = encode_entry(salt, epoch, 2, 0, b"forged low");
    long[40..40 + next.len()].copy_from_slice(&next);
    long[200..200 + low.len()].copy_from_slice(&low);
    s.append(&long).expect("room");
    let s0 = r.finish(s);
    let o = r.segment(s0).events()[3].offset;
    let at = r.point_after_stores(s0, 3);
    let torn = r.image_without(s0, at, &[o..o + 8]);
    let Some(s) = r.open(torn) else { return };
    let s1 = r.finish(s);
    // The recovery's writes persisted except the wipe past the torn header.
    let p = r.point_before_open_drain(s1);
    let partial = r.image_without(s1, p, &[o + HEADER_LEN..o + format::entry_len(400)]);
    // A 40-byte payload ends where "forged next" starts; a 200-byte one where "forged low" does.
    for n in [40, 200] {
        let Some(mut s) = r.open(partial.clone()) else {
            return;
        };
        let p = r.payload(n);
        s.append(&p).expect("room");
        let s2 = r.finish(s);
        let img = r.final_image(s2);
        let Some(mut s) = r.open(img) else { return };
        let p = r.payload(3);
        s.append(&p).expect("room");
        r.finish(s);
    }
}

fn reuse(r: &mut Runner) {
    // An old log over two sessions, filling most of the media.
    let mut s = r.create(3 * 4096);
    while s.free() > 3000 {
        let n = r.rng.range(0, 200);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let si = r.finish_unchecked(s);
    let Some(mut s) = r.open(r.final_image(si)) else {
        return;
    };
    while s.free() > 1000 {
        let n = r.rng.range(0, 200);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let si = r.finish_unchecked(s);
    let old = r.segment(si).all_entries();
    // A new log over it.
    let mut s = r.create_over(r.final_image(si), old);
    for n in [0, 40, 90] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let s1 = r.finish(s);
    let Some(mut s) = r.open(r.final_image(s1)) else {
        return;
    };
    let p = r.payload(33);
    s.append(&p).expect("room");
    r.finish(s);
}

/// Media that held other data (`0xA5` everywhere) gets a new log; an append whose payload has a
/// zero word is torn exactly there (the stale `0xA5` bytes stay), so recovery discards it and
/// wipes its remains. If that recovery crashes with only the zero word's wipe persisted (and
/// not its slot), the append is whole again: a second recovery must still not differ.
fn wipe_revival(r: &mut Runner) {
    let cap = 3 * 4096;
    let mut s = r.create_over(vec![0xA5; cap], Vec::new());
    for _ in 0..2 {
        let p = r.payload(20);
        s.append(&p).expect("room");
    }
    let mut x = r.payload(64);
    x.iter_mut().filter(|b| **b == 0).for_each(|b| *b = 1);
    x[16..24].fill(0);
    s.append(&x).expect("room");
    let s0 = r.finish(s);
    let o = r.segment(s0).events()[2].offset;
    let w = o + HEADER_LEN + 16;
    let at = r.point_after_stores(s0, 2);
    let torn = r.image_without(s0, at, &[w..w + 8]);
    let Some(s) = r.open(torn) else { return };
    let s1 = r.finish(s);
    let p = r.point_before_open_drain(s1);
    r.image_without(s1, p, &[SLOT0_OFFSET..SLOT1_OFFSET + 64, o..w, w + 8..cap]);
}

// ---- Space reuse -------------------------------------------------------------------------------

/// Appends random entries (payloads of `lo..=hi` bytes) while one fits at the tail without
/// wrapping; returns how many.
fn fill_to_end(r: &mut Runner, s: &mut Session, lo: usize, hi: usize) -> usize {
    let cap = s.log().capacity() as usize;
    let mut k = 0;
    loop {
        let n = r.rng.range(lo, hi);
        if s.tail() + format::entry_len(n) > cap {
            return k;
        }
        let p = r.payload(n);
        s.append(&p).expect("room at the tail");
        k += 1;
    }
}

/// A log of `cap` bytes filled to (near) its end, in an unchecked setup segment; returns the
/// session that reopens it (the open's crashes are checked with the rest of the segment).
fn filled(r: &mut Runner, cap: usize, lo: usize, hi: usize) -> Option<Session> {
    let mut s = r.create(cap);
    fill_to_end(r, &mut s, lo, hi);
    let si = r.finish_unchecked(s);
    let img = r.final_image(si);
    r.open(img)
}

fn truncate_head(r: &mut Runner) {
    r.scale_images(1, 4);
    // A plain log: truncations between appends, crashes at every point.
    let mut s = r.create(4 * 4096);
    for _ in 0..6 {
        let n = r.rng.range(0, 200);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    s.truncate_before(3);
    let p = r.payload(40);
    s.append(&p).expect("room");
    s.truncate_before(3); // at the first LSN: changes nothing, writes nothing
    let all_but_one = s.next_lsn() - 1;
    s.truncate_before(all_but_one);
    let p = r.payload(300);
    s.append(&p).expect("room");
    let b = vec![r.payload(20), r.payload(9)];
    s.batch(&b).expect("room");
    let next = s.next_lsn();
    s.truncate_before(next); // everything
    for n in [10, 250] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let si = r.finish(s);
    // The next session truncates what the first left, then appends.
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let first = s.first_lsn();
    s.truncate_before(first + 1);
    let p = r.payload(70);
    s.append(&p).expect("room");
    r.finish(s);

    // A wrapped log: truncations in its first part and into its second part.
    let Some(mut s) = filled(r, 4 * 4096, 20, 300) else {
        return;
    };
    let first = s.first_lsn();
    let len = s.next_lsn() - first;
    s.truncate_before(first + len / 2);
    let cap = s.log().capacity() as usize;
    // Appends until one wraps, and one more.
    let mut wrapped = None;
    for _ in 0..64 {
        let n = r.rng.range(50, 400);
        let p = r.payload(n);
        let t = s.tail();
        let lsn = s.append(&p).expect("room after the truncation");
        if s.tail() < t {
            wrapped = Some(lsn);
            break;
        }
        assert!(s.tail() <= cap);
    }
    let Some(w) = wrapped else {
        panic!("the log did not wrap")
    };
    let p = r.payload(30);
    s.append(&p).expect("room");
    // A head in the first part, then in the second (which ends the wrap).
    let first = s.first_lsn();
    s.truncate_before(first + 1);
    s.truncate_before(w);
    let p = r.payload(120);
    s.append(&p).expect("room");
    let si = r.finish(s);
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(5);
    s.append(&p).expect("room");
    r.finish(s);
}

fn wrap_first_append(r: &mut Runner) {
    r.scale_images(1, 4);
    let cap = 4 * 4096;
    for exact in [false, true] {
        let Some(mut s) = filled(r, cap, 0, 300) else {
            return;
        };
        if exact {
            // Fill the file to its last byte: the tail is the end of the file.
            let left = cap - s.tail();
            if left >= HEADER_LEN {
                let p = r.payload(left - HEADER_LEN);
                s.append(&p).expect("an entry that fills the file exactly");
            }
        }
        let first = s.first_lsn();
        let len = s.next_lsn() - first;
        s.truncate_before(first + len / 3);
        // The first append that wraps: too long for the rest of the file, short enough for the
        // freed space; a batch in one round of two.
        let head = s.head();
        let min = (cap - s.tail() + 1).max(64);
        let max = (head - DATA_OFFSET - 8).min(min + 600);
        assert!(min + HEADER_LEN <= max, "no room to wrap");
        let total = r.rng.range(min, max);
        let t = s.tail();
        if r.rng.chance(1, 2) && total > 2 * HEADER_LEN + 16 {
            let a = r.rng.range(0, total - 2 * HEADER_LEN - 8);
            let b = total - 2 * HEADER_LEN - a - 8;
            let batch = vec![r.payload(a), r.payload(b)];
            s.batch(&batch).expect("room at the start");
        } else {
            let p = r.payload(total - HEADER_LEN);
            s.append(&p).expect("room at the start");
        }
        assert!(s.tail() < t, "the append did not wrap");
        for n in [0, 90] {
            let p = r.payload(n);
            s.append(&p).expect("room");
        }
        let si = r.finish(s);
        let img = r.final_image(si);
        let Some(mut s) = r.open(img) else { return };
        let p = r.payload(17);
        s.append(&p).expect("room");
        r.finish(s);
    }
}

fn old_lap_past_tail(r: &mut Runner) {
    r.scale_images(1, 4);
    let cap = 4 * 4096;
    const N: usize = 56; // 80 bytes on media
    let len = format::entry_len(N);
    // Lap 1: entries of one size from the start of the data area to the end of the file.
    let Some(mut s) = filled(r, cap, N, N) else {
        return;
    };
    let first = s.first_lsn();
    s.truncate_before(first + 40);
    // Lap 2 at the same offsets: each new entry ends where an entry of lap 1 begins.
    for _ in 0..3 {
        let p = r.payload(N);
        s.append(&p).expect("room at the start");
    }
    assert_eq!(s.tail(), DATA_OFFSET + 3 * len);
    let ev = s.events().len() - 1;
    let si = r.finish(s);
    // The last append whole but its end marker lost: lap 1's fourth entry, intact and valid,
    // sits exactly at the tail.
    let m = DATA_OFFSET + 3 * len;
    let at = r.point_before_last_drain(si, ev);
    let img = r.image_without(si, at, &[m..m + 8]);
    let Some(mut s) = r.open(img) else { return };
    assert_eq!(s.tail(), m);
    // Appends over it: as long as it, shorter, longer.
    for n in [N, N - 16, N + 40] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let si = r.finish(s);
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(N);
    s.append(&p).expect("room");
    r.finish(s);
}

fn many_laps(r: &mut Runner) {
    const LAPS: u64 = 100;
    r.scale_images(1, 32);
    let cap = 4 * 4096;
    let mut s = r.create(cap);
    let mut wraps = 0u64;
    let mut full = Vec::new();
    let mut ops = 0u64;
    while wraps < LAPS {
        ops += 1;
        let roll = r.rng.below(100);
        if roll < 2 && s.next_lsn() > s.first_lsn() + 1 {
            // Keeps the first entry: deleting every entry this way is `suffix-all-wrap`.
            let first = s.first_lsn();
            let next = s.next_lsn();
            let lsn = r.rng.range(first as usize, next as usize - 2) as u64;
            s.truncate_after(lsn);
            continue;
        }
        if roll == 2 {
            s.reset();
            continue;
        }
        let payloads: Vec<Vec<u8>> = if roll < 15 {
            (0..r.rng.range(2, 4))
                .map(|_| {
                    let n = r.rng.range(0, 200);
                    r.payload(n)
                })
                .collect()
        } else {
            let n = match r.rng.below(10) {
                0 => r.rng.range(400, 1500),
                1..=3 => r.rng.range(0, 24),
                _ => r.rng.range(0, 400),
            };
            vec![r.payload(n)]
        };
        loop {
            let t = s.tail();
            let ok = if payloads.len() == 1 {
                s.append(&payloads[0]).is_some()
            } else {
                s.batch(&payloads).is_some()
            };
            if ok {
                if s.tail() < t && s.events().last().is_some_and(|e| e.offset == DATA_OFFSET) {
                    wraps += 1;
                    if wraps % 20 == 1 {
                        full.push(s.events().len() - 1);
                    }
                }
                break;
            }
            // Full: drop some of the oldest entries and try again.
            let first = s.first_lsn();
            let live = s.next_lsn() - first;
            assert!(live > 0, "an empty log refused an append");
            let k = r.rng.range(1, live as usize) as u64;
            s.truncate_before(first + k);
        }
    }
    r.count("wraps", wraps);
    r.count("operations", ops);
    r.finish_sampled(s, Sampling { one_in: 192, full });
}

fn truncate_suffix(r: &mut Runner) {
    r.scale_images(1, 8);
    let mut s = r.create(4 * 4096);
    for _ in 0..6 {
        let n = r.rng.range(0, 200);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let b = vec![r.payload(30), r.payload(0), r.payload(77)];
    s.batch(&b).expect("room");
    s.truncate_after(4);
    // Shorter entries over the deleted ones.
    for n in [10, 0, 30] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let last = s.next_lsn() - 1;
    s.truncate_after(last); // nothing
    let b = vec![r.payload(8), r.payload(8), r.payload(8)];
    let lsns = s.batch(&b).expect("room");
    s.truncate_after(lsns.start); // inside the batch
    let p = r.payload(50);
    s.append(&p).expect("room");
    let first = s.first_lsn();
    s.truncate_after(first - 1); // everything
    for n in [3, 150] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    s.reset();
    for n in [12, 40] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let si = r.finish(s);
    // Later sessions: the deleted entries never come back.
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    for n in [5, 60] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let next = s.next_lsn();
    s.truncate_after(next - 2);
    let p = r.payload(1);
    s.append(&p).expect("room");
    let si = r.finish(s);
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(2);
    s.append(&p).expect("room");
    r.finish(s);

    // In a wrapped log: a suffix in the second part, then one reaching into the first.
    let Some(mut s) = filled(r, 4 * 4096, 20, 250) else {
        return;
    };
    let first = s.first_lsn();
    let len = s.next_lsn() - first;
    s.truncate_before(first + len / 2);
    let boundary = loop {
        let n = r.rng.range(50, 300);
        let p = r.payload(n);
        let t = s.tail();
        let lsn = s.append(&p).expect("room");
        if s.tail() < t {
            break lsn;
        }
    };
    for n in [20, 40] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    s.truncate_after(boundary);
    let p = r.payload(9);
    s.append(&p).expect("room");
    s.truncate_after(boundary - 2);
    let p = r.payload(33);
    s.append(&p).expect("room");
    r.finish(s);
}

/// `truncate_after(k)` destroys the first deleted header with a second barrier, after its slot
/// update. A crash between the two leaves the new slot (cut `k + 1`, new epoch) and the old
/// entry `k + 1` intact right at the tail, where the epoch rule refuses it; the recovery sees a
/// clean end there and leaves it. The next session's first entry does not fit before the end
/// of the file and wraps; a `truncate_after(k + 1)` then moves the cut above the old entry's
/// LSN, and nothing must make the old entry `k + 1` part of the log again.
fn suffix_revival(r: &mut Runner) {
    let cap = 4 * 4096;
    const N: usize = 76; // 104 bytes on media
    let Some(mut s) = filled(r, cap, N, N) else {
        return;
    };
    let first = s.first_lsn();
    s.truncate_before(first + 30);
    let k = s.next_lsn() - 4;
    s.truncate_after(k);
    let d = s.tail();
    let ev = s.events().len() - 1;
    let si = r.finish(s);
    let at = r.point_before_last_drain(si, ev);
    let img = r.image_without(si, at, &[d..d + 8]);
    let Some(mut s) = r.open(img) else { return };
    assert_eq!(s.tail(), d);
    // Too long for the rest of the file: it goes to the start of the data area.
    let p = r.payload(cap - d + 8);
    s.append(&p).expect("room at the start");
    assert!(s.tail() < d, "the append did not wrap");
    let p = r.payload(16);
    s.append(&p).expect("room");
    s.truncate_after(k + 1);
    let p = r.payload(24);
    s.append(&p).expect("room");
    let si = r.finish(s);
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(8);
    s.append(&p).expect("room");
    r.finish(s);
}

/// `truncate_after(first - 1)` deletes every entry: head and tail stay at the old head, near
/// the end of the file. The next append does not fit there and wraps to the start of the data
/// area, so the entries before the wrap point are none at all.
fn suffix_all_wrap(r: &mut Runner) {
    let cap = 4 * 4096;
    let Some(mut s) = filled(r, cap, 900, 900) else {
        return;
    };
    let last = s.next_lsn() - 1;
    s.truncate_before(last);
    let first = s.first_lsn();
    s.truncate_after(first - 1);
    let t = s.tail();
    let p = r.payload(cap - t + 8);
    s.append(&p).expect("room at the start");
    assert!(s.tail() < t, "the append did not wrap");
    let p = r.payload(40);
    s.append(&p).expect("room");
    r.finish(s);
}

// ---- Concurrency -------------------------------------------------------------------------------

/// Plans for `threads` appenders: `each` appends per thread, one in four a batch of 2-3.
fn plans(r: &mut Runner, threads: usize, each: usize, max: usize) -> Vec<Vec<Vec<Vec<u8>>>> {
    (0..threads)
        .map(|_| {
            (0..each)
                .map(|_| {
                    let k = if r.rng.chance(1, 4) {
                        r.rng.range(2, 3)
                    } else {
                        1
                    };
                    (0..k)
                        .map(|_| {
                            let n = if r.rng.chance(1, 4) {
                                r.rng.range(200, max)
                            } else {
                                r.rng.range(0, 120)
                            };
                            r.payload(n)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn concurrent(r: &mut Runner) {
    r.scale_images(1, 8);
    // With msync, three appenders contend for the group commit's lock, and the kernel decides
    // which waiter gets it: the interleaving would not follow from the seed alone. Two do.
    let most = if r.variant().persistence.is_cpu_flush() {
        3
    } else {
        2
    };
    for threads in [2, most] {
        let mut s = r.create(4 * 4096);
        let p = r.payload(20);
        s.append(&p).expect("room");
        let work = plans(r, threads, 3, 400);
        let seed = r.rng.next_u64();
        let stick = [0, 64, 160][r.rng.below(3) as usize];
        s.concurrent(&work, seed, stick);
        let p = r.payload(10);
        s.append(&p).expect("room");
        let si = r.finish(s);
        count_overlaps(r, si);
    }
    // Wrapping: the appenders' reservations reach the end of the file and go on at the start.
    let Some(mut s) = filled(r, 4 * 4096, 30, 300) else {
        return;
    };
    let first = s.first_lsn();
    let len = s.next_lsn() - first;
    s.truncate_before(first + len / 2);
    let work = plans(r, most, 2, 600);
    let seed = r.rng.next_u64();
    s.concurrent(&work, seed, 64);
    let si = r.finish(s);
    count_overlaps(r, si);
    // With the tail hint: whichever thread publishes writes the hint slot.
    r.use_tail_hint(128);
    let mut s = r.create(4 * 4096);
    let work = plans(r, most, 3, 300);
    let seed = r.rng.next_u64();
    s.concurrent(&work, seed, 64);
    let si = r.finish(s);
    count_overlaps(r, si);
    let n = slot_writes_in_appends(r, si);
    r.count("slot updates inside concurrent appends (hints, flag)", n);
}

/// Slot updates made inside the appends of segment `si` (tail hints, the `CONCURRENT` flag).
fn slot_writes_in_appends(r: &Runner, si: usize) -> u64 {
    let seg = r.segment(si);
    seg.events()
        .iter()
        .filter(|e| e.kind == EventKind::Append)
        .map(|e| {
            seg.run.ops[e.start..e.end]
                .iter()
                .filter(|o| matches!(o, Op::Store { off, .. } if *off == SLOT0_OFFSET || *off == SLOT1_OFFSET))
                .count() as u64
        })
        .sum()
}

/// Counts the crash points of segment `si` with two or more appends in flight, and the
/// appends whose fence came before that of an append with a lower LSN (so that a crash could
/// find them durable behind a torn one).
fn count_overlaps(r: &mut Runner, si: usize) {
    let seg = r.segment(si);
    let ev = seg.events();
    let overlapping = (0..=seg.run.ops.len())
        .filter(|&p| ev.iter().filter(|e| e.start < p && p < e.end).count() >= 2)
        .count();
    // The last drain each append's thread issued inside the append.
    let fence = |e: &Event| {
        (e.start..e.end)
            .rev()
            .find(|&i| seg.run.ops[i] == Op::Drain && seg.run.thread_of(i) == e.thread)
    };
    let fences: Vec<Option<usize>> = ev.iter().map(fence).collect();
    let early = (0..ev.len())
        .filter(|&a| {
            (0..ev.len()).any(|b| {
                ev[b].lsns.start < ev[a].lsns.start
                    && matches!((fences[a], fences[b]), (Some(fa), Some(fb)) if fa < fb)
            })
        })
        .count();
    r.count("points with 2+ appends in flight", overlapping as u64);
    r.count("appends fenced before a lower LSN's", early as u64);
}

// ---- Tail hint ---------------------------------------------------------------------------------

fn tail_hint(r: &mut Runner) {
    r.scale_images(1, 8);
    r.use_tail_hint(256);
    let mut s = r.create(4 * 4096);
    for _ in 0..10 {
        if r.rng.chance(1, 4) {
            let b = vec![r.payload(40), r.payload(70)];
            s.batch(&b).expect("room");
        } else {
            let n = r.rng.range(0, 150);
            let p = r.payload(n);
            s.append(&p).expect("room");
        }
    }
    let si = r.finish(s);
    let n = slot_writes_in_appends(r, si);
    r.count("hint slot updates", n);
    // Recovery from a random crash image uses the hint; truncations keep or clear it.
    let img = r.random_image(si);
    let Some(mut s) = r.open(img) else { return };
    for _ in 0..3 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let first = s.first_lsn();
    s.truncate_before(first + 1); // before the hint: kept
    for _ in 0..3 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let next = s.next_lsn();
    s.truncate_before(next - 2); // past the hint: cleared
    for _ in 0..4 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let next = s.next_lsn();
    s.truncate_after(next - 3);
    for _ in 0..3 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let si = r.finish(s);
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(6);
    s.append(&p).expect("room");
    r.finish(s);

    // A wrap: hints stop there; a hint from before the wrap stays valid.
    let Some(mut s) = filled(r, 4 * 4096, 30, 300) else {
        return;
    };
    let first = s.first_lsn();
    let len = s.next_lsn() - first;
    s.truncate_before(first + len / 3);
    for _ in 0..40 {
        let n = r.rng.range(60, 300);
        let p = r.payload(n);
        let t = s.tail();
        s.append(&p).expect("room");
        if s.tail() < t {
            break;
        }
    }
    for _ in 0..3 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    r.finish(s);
}
