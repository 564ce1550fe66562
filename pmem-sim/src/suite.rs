//! daxlog's crash scenarios and the oracle every crash image is checked against.
//!
//! A *scenario* drives daxlog over [`SimMedia`] through one or more *segments*. A segment starts
//! from a durable image, either creating a log on it (`Log::create_on`) or opening the log it
//! holds (`Log::open_on`, which recovers and writes a metadata slot), then appends. Its trace is
//! replayed by [`PmemState`]; at every crash point (after each store and drain; a crash right
//! after a flush has exactly the images of a crash right before it) the possible durable images
//! of the chosen [`Model`] are generated and each goes through the oracle:
//!
//! 1. `Log::open_on` succeeds (during `create_on` the log does not exist yet: there the open may
//!    fail, or find a prefix of the old log the media held);
//! 2. every acknowledged append is present byte-exact and in order, with LSNs 1, 2, ...; the
//!    append (or batch) in flight is wholly present or wholly absent; nothing else is there;
//! 3. the recovery report agrees; a further append gets the next LSN and reads back (or fails
//!    with `Error::Full` when it cannot fit);
//! 4. the first recovery's own writes are replayed too: a crash inside them (a random image),
//!    the state after them, and the state after the further append all recover to the same
//!    entries (plus the further append in the last case).
//!
//! Failures name the scenario, seed, crash point, model and image; `PMEM_SIM_REPLAY` re-runs
//! exactly that (see `README.md`).

// Lists of byte ranges to leave out of an image often hold a single range.
#![allow(clippy::single_range_in_vec_init)]

use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use daxlog::format::{
    self, EntryHeader, Slot, Superblock, DATA_OFFSET, HEADER_LEN, SB_BACKUP_OFFSET, SLOT0_OFFSET,
    SLOT1_OFFSET,
};
use daxlog::{Error, Log, Options, Persistence};

use crate::rng::{hash_str, mix, Rng};
use crate::{GenConfig, Model, Observer, Op, PmemState, Run, SimMedia};

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

/// Every variant the suite runs: CLWB media with non-temporal stores never, always and from 256
/// bytes, each under the strict and the per-line model; msync media under the page model and
/// the strict model.
pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for (config, nt_threshold) in [
        ("clwb-nt-never", usize::MAX),
        ("clwb-nt-always", 0),
        ("clwb-nt-256", daxlog::DEFAULT_NT_THRESHOLD),
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
        Options::new()
            .use_env(false)
            .nt_threshold(self.nt_threshold)
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

/// One successful append or batch.
#[derive(Clone, Debug)]
pub struct Event {
    /// Trace length before the call.
    pub start: usize,
    /// Trace length after the call.
    pub end: usize,
    /// Offset where its first entry starts.
    pub offset: usize,
    /// The payloads.
    pub payloads: Vec<Vec<u8>>,
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
}

/// A recorded segment of a scenario.
#[derive(Debug)]
pub struct Segment {
    run: Run,
    start: Start,
    /// Trace length when `create_on`/`open_on` returned.
    start_end: usize,
    base: Vec<Vec<u8>>,
    events: Vec<Event>,
}

impl Segment {
    /// The successful appends of the segment.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The entries the log held when the segment started.
    pub fn base(&self) -> &[Vec<u8>] {
        &self.base
    }

    /// Every entry acknowledged by the end of the segment.
    pub fn all_entries(&self) -> Vec<Vec<u8>> {
        let mut v = self.base.clone();
        for e in &self.events {
            v.extend(e.payloads.iter().cloned());
        }
        v
    }
}

/// A live log on simulated media, recording a segment.
pub struct Session {
    log: Log<SimMedia>,
    obs: Observer,
    seg: Segment,
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
        let offset = self.tail();
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
                self.seg.events.push(Event {
                    start,
                    end,
                    offset,
                    payloads: payloads.to_vec(),
                });
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

    /// Offset where the next append goes.
    pub fn tail(&self) -> usize {
        DATA_OFFSET + self.log.used_bytes() as usize
    }

    /// Free bytes at the tail.
    pub fn free(&self) -> usize {
        self.log.free_bytes() as usize
    }

    /// The log's salt and the current session's epoch, read from the media.
    pub fn salt_epoch(&self) -> (u32, u32) {
        let img = self.obs.snapshot();
        let sb = Superblock::decode(&img[..64])
            .or_else(|_| Superblock::decode(&img[SB_BACKUP_OFFSET..SB_BACKUP_OFFSET + 64]))
            .expect("a superblock");
        let slot = Slot::pick(
            Slot::decode(&img[SLOT0_OFFSET..], sb.salt, sb.capacity),
            Slot::decode(&img[SLOT1_OFFSET..], sb.salt, sb.capacity),
        )
        .expect("a metadata slot");
        (sb.salt, slot.epoch)
    }
}

/// An entry encoded exactly as the engine writes it (for payloads that forge entries).
pub fn encode_entry(salt: u32, epoch: u32, lsn: u64, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut h = EntryHeader {
        crc: 0,
        len: payload.len() as u32,
        lsn,
        epoch,
        flags,
    };
    h.crc = format::entry_crc(format::payload_crc(salt, payload), &h);
    let mut v = h.encode().to_vec();
    v.extend_from_slice(payload);
    v.resize(format::entry_len(payload.len()), 0);
    v
}

// ---- The runner and the oracle -----------------------------------------------------------------

/// What a crash image must recover to.
enum Expect<'a> {
    /// Crash inside `create_on`: the open may fail, or find a prefix of the old entries.
    Creating { old: &'a [Vec<u8>] },
    /// `must` exactly, or `must` followed by all of `maybe`.
    Log {
        must: Vec<&'a [u8]>,
        maybe: Option<&'a [Vec<u8>]>,
    },
}

/// Runs one scenario in one variant: records segments and checks their crash images.
pub struct Runner {
    variant: Variant,
    opts: Options,
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
}

impl Runner {
    fn new(suite: &Suite, variant: Variant, label: String, seed: u64) -> Runner {
        Runner {
            variant,
            opts: variant.opts(),
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
        }
    }

    fn outcome(self) -> Outcome {
        Outcome {
            images: self.images,
            violations: self.violations,
            reports: self.reports,
            runs: 1,
        }
    }

    /// The variant being run.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// True once a violation was found and the run should stop.
    pub fn stopped(&self) -> bool {
        self.stop_at_first && self.violations > 0
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

    /// Starts a segment that creates a log over `initial`, which held the log `old`.
    pub fn create_over(&mut self, initial: Vec<u8>, old: Vec<Vec<u8>>) -> Session {
        let media = SimMedia::from_image(&initial, self.variant.persistence);
        let obs = media.observer();
        let log = Log::create_on(media, &self.opts).expect("create_on over simulated media");
        let start_end = obs.ops();
        Session {
            log,
            obs,
            seg: Segment {
                run: Run {
                    initial,
                    persistence: self.variant.persistence,
                    ops: Vec::new(),
                },
                start: Start::Create { old },
                start_end,
                base: Vec::new(),
                events: Vec::new(),
            },
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
        let start_end = obs.ops();
        Some(Session {
            log,
            obs,
            seg: Segment {
                run: Run {
                    initial,
                    persistence: self.variant.persistence,
                    ops: Vec::new(),
                },
                start: Start::Open,
                start_end,
                base,
                events: Vec::new(),
            },
        })
    }

    /// Ends a segment, checks every crash image of it, and returns its index.
    pub fn finish(&mut self, s: Session) -> usize {
        let si = self.keep(s);
        self.check_segment(si);
        si
    }

    /// Ends a segment without checking it (a setup step whose crashes other scenarios cover).
    pub fn finish_unchecked(&mut self, s: Session) -> usize {
        self.keep(s)
    }

    fn keep(&mut self, s: Session) -> usize {
        let Session { log, mut seg, .. } = s;
        seg.run.ops = log.into_media().take_trace();
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
                    must: seg.base.iter().map(|v| v.as_slice()).collect(),
                    maybe: None,
                },
            };
        }
        let mut must: Vec<&[u8]> = seg.base.iter().map(|v| v.as_slice()).collect();
        let mut maybe = None;
        for e in &seg.events {
            if e.end <= p {
                must.extend(e.payloads.iter().map(|v| v.as_slice()));
            } else if e.start < p {
                maybe = Some(e.payloads.as_slice());
            }
        }
        Expect::Log { must, maybe }
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

    fn check_segment(&mut self, si: usize) {
        let seg = self.segment(si);
        let mut st = PmemState::new(seg.run.initial.clone(), self.variant.persistence);
        let mut buf = Vec::new();
        for p in 0..=seg.run.ops.len() {
            if p > 0 {
                st.apply(&seg.run.ops[p - 1]);
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
            let exp = self.expect_at(&seg, p);
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
                if let Err(m) = self.oracle(&buf, &exp, seed) {
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
        let actual: Vec<&[u8]> = match exp {
            Expect::Creating { old } => {
                let n = log.iter().count();
                let want: Vec<&[u8]> = old.iter().take(n).map(|v| v.as_slice()).collect();
                same(&log, &want)
                    .map_err(|m| format!("crash while creating over an old log: {m}"))?;
                want
            }
            Expect::Log { must, maybe } => check_log(&log, must, *maybe)?,
        };
        let n = actual.len() as u64;
        let rep = log.recovery();
        if rep.entries != n || rep.last_lsn != (n > 0).then_some(n) {
            return Err(format!(
                "recovery report says {} entries (last LSN {:?}); the log holds {n}",
                rep.entries, rep.last_lsn
            ));
        }
        // A further append must work and read back.
        let mut rng = Rng::new(seed);
        let probe_len = rng.range(0, 40);
        let probe = rng.bytes(probe_len);
        let probed = match log.append(&probe) {
            Ok(l) if l == n + 1 => match log.read(l) {
                Some(e) if e.payload == probe.as_slice() => true,
                _ => {
                    return Err(format!(
                        "the append after recovery (LSN {l}) does not read back"
                    ))
                }
            },
            Ok(l) => {
                return Err(format!(
                    "the append after recovery got LSN {l}, expected {}",
                    n + 1
                ))
            }
            Err(Error::Full { .. }) if log.free_bytes() < format::entry_len(probe.len()) as u64 => {
                false
            }
            Err(e) => return Err(format!("the append after recovery failed: {e}")),
        };
        let trace = log.into_media().take_trace();
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
                        let want: Vec<&[u8]> = old.iter().take(n).map(|v| v.as_slice()).collect();
                        same(&l2, &want).map_err(|m| format!("{}: {m}", what()))?
                    }
                    Expect::Log { .. } => {
                        same(&l2, &actual).map_err(|m| format!("{}: {m}", what()))?
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
        if probed {
            for op in &trace[rec_end..] {
                st.apply(op);
            }
            let l4 =
                Log::open_on_read_only(SimMedia::from_vec(st.into_durable(), pers), &self.opts)
                    .map_err(|e| format!("recovery after the further append failed: {e}"))?;
            let mut want = actual.clone();
            want.push(&probe);
            same(&l4, &want).map_err(|m| format!("recovery after the further append: {m}"))?;
        }
        Ok(())
    }
}

fn describe_point(seg: &Segment, p: usize) -> String {
    let what = if p == 0 {
        "before any operation".to_string()
    } else {
        format!("after op {}: {}", p - 1, seg.run.ops[p - 1].describe())
    };
    let phase = if p < seg.start_end {
        match seg.start {
            Start::Create { .. } => "inside create_on".to_string(),
            Start::Open => "inside open_on (recovery)".to_string(),
        }
    } else {
        let acked = seg.events.iter().filter(|e| e.end <= p).count();
        let inflight = seg.events.iter().any(|e| e.start < p && p < e.end);
        format!(
            "{} entries at start, {acked} appends acknowledged{}",
            seg.base.len(),
            if inflight { ", one in flight" } else { "" }
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

/// The log's entries must be exactly `want`, with LSNs 1, 2, ...
fn same(log: &Log<SimMedia>, want: &[&[u8]]) -> Result<(), String> {
    let mut n = 0usize;
    for (i, e) in log.iter().enumerate() {
        if e.lsn != i as u64 + 1 {
            return Err(format!("entry {} carries LSN {}", i + 1, e.lsn));
        }
        match want.get(i) {
            None => {
                return Err(format!(
                    "unexpected entry LSN {} ({}) after the {} expected",
                    e.lsn,
                    short(e.payload),
                    want.len()
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
    if n < want.len() {
        return Err(format!(
            "the log holds {n} entries, expected {} (LSN {} missing)",
            want.len(),
            n + 1
        ));
    }
    Ok(())
}

/// The log's entries must be `must`, optionally followed by all of `maybe`.
fn check_log<'a>(
    log: &Log<SimMedia>,
    must: &[&'a [u8]],
    maybe: Option<&'a [Vec<u8>]>,
) -> Result<Vec<&'a [u8]>, String> {
    let n = log.iter().count();
    let mut want: Vec<&[u8]> = must.to_vec();
    let inflight = maybe.map_or(0, |m| m.len());
    if n > must.len() && inflight > 0 {
        want.extend(maybe.unwrap().iter().map(|v| v.as_slice()));
    }
    same(log, &want).map_err(|m| {
        format!(
            "{m} [acknowledged: {}, in flight: {inflight}, recovered: {n}]",
            must.len()
        )
    })?;
    Ok(want)
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
