//! daxlog's crash scenarios and the oracle every crash image is checked against.
//!
//! A *scenario* drives daxlog over [`SimMedia`](crate::SimMedia) through one or more *segments*. A segment starts
//! from a durable image, either creating a log on it (`Log::create_on`) or opening the log it
//! holds (`Log::open_on`, which recovers and writes a metadata slot), then appends, truncates
//! (`truncate_before`, `truncate_after`, `reset`), or runs several appender threads in a seeded
//! interleaving ([`Session::concurrent`]). Its trace is replayed by [`PmemState`](crate::PmemState); at every crash
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

use std::collections::BTreeMap;
use std::time::Instant;

use daxlog::{Options, Persistence};

use crate::rng::{hash_str, mix};
use crate::{GenConfig, Model};

mod oracle;
mod runner;
mod scenarios;
mod segment;
mod session;

pub use runner::{AppCheck, Runner, NT_SYNCED_BY_OTHER};
pub use scenarios::{plain_scenario_names, scenario_names, Scenario, SCENARIOS, SIZES};
pub use segment::{BaseEntry, Event, EventKind, Sampling, Segment, NEVER};
pub use session::{encode_entry, Cut, Session};

// ---- Variants ----------------------------------------------------------------------------------

/// A persistence configuration of the engine plus a crash model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// Name of the engine configuration: `clwb-nt-never`, `clwb-nt-always`, `clwb-nt-256`,
    /// `clwb-nt-batches`, `clwb-nt-singles`, `msync` or `msync-nt-256` (and the other flush
    /// instructions' `clflushopt-nt-256`, `clflush-nt-256`).
    pub config: &'static str,
    /// The barrier the simulated media reports.
    pub persistence: Persistence,
    /// `Options::nt_threshold`.
    pub nt_threshold: usize,
    /// `Options::batch_nt_threshold`: the same as `nt_threshold` but in the split variants.
    pub batch_nt_threshold: usize,
    /// The crash model.
    pub model: Model,
}

/// Every variant the suite runs: CLWB media with non-temporal stores never, always (the engine's
/// default) and from 256 bytes (the mixed case), and split between the two kinds of append that
/// have thresholds of their own (small batches non-temporal and the rest cached, as a host's
/// calibration may choose, and the reverse), each under the strict and the per-line model;
/// msync media under the page model and the strict model, and with non-temporal stores from 256
/// bytes (the path of msync appends from the non-temporal threshold on) under the page model.
pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for (config, nt_threshold, batch_nt_threshold) in [
        ("clwb-nt-never", usize::MAX, usize::MAX),
        ("clwb-nt-always", 0, 0),
        ("clwb-nt-256", 256, 256),
        ("clwb-nt-batches", usize::MAX, 0),
        ("clwb-nt-singles", 0, usize::MAX),
    ] {
        for model in [Model::Strict, Model::Line] {
            v.push(Variant {
                config,
                persistence: Persistence::Clwb,
                nt_threshold,
                batch_nt_threshold,
                model,
            });
        }
    }
    for model in [Model::Msync, Model::Strict] {
        v.push(Variant {
            config: "msync",
            persistence: Persistence::Msync,
            nt_threshold: usize::MAX,
            batch_nt_threshold: usize::MAX,
            model,
        });
    }
    v.push(Variant {
        config: "msync-nt-256",
        persistence: Persistence::Msync,
        nt_threshold: 256,
        batch_nt_threshold: 256,
        model: Model::Msync,
    });
    // The other CPU flush instructions: the model treats them like CLWB (each guaranteed only
    // at the next fence), so they run in a few scenarios only, for the engine's sake.
    v.push(Variant {
        config: "clflushopt-nt-256",
        persistence: Persistence::ClflushOpt,
        nt_threshold: 256,
        batch_nt_threshold: 256,
        model: Model::Strict,
    });
    v.push(Variant {
        config: "clflush-nt-256",
        persistence: Persistence::Clflush,
        nt_threshold: 256,
        batch_nt_threshold: 256,
        model: Model::Line,
    });
    v
}

impl Variant {
    fn opts(&self) -> Options {
        Options::new()
            .nt_threshold(self.nt_threshold)
            .batch_nt_threshold(self.batch_nt_threshold)
    }

    /// True if single appends and small batches take different store paths.
    pub fn split(&self) -> bool {
        self.nt_threshold != self.batch_nt_threshold
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
    /// The engine's test switches, for scenarios that need them (`daxlog::mutants`, behind
    /// daxlog's `mutants` feature, which this crate's tests enable).
    pub hooks: Hooks,
}

/// Test switches of the engine a scenario may need. They are process-wide, so the scenarios
/// that use them run in a test binary of their own (`pmem-sim/tests/`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Hooks {
    /// Makes the next append panic after its reservation, before its stores
    /// (`daxlog::mutants::arm_panic_before_stores`).
    pub panic_before_stores: Option<fn()>,
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
    /// Per scenario: crash points, images and time, summed over its variants and rounds.
    pub scenarios: BTreeMap<&'static str, ScenarioStats>,
}

/// What the runs of one scenario checked.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScenarioStats {
    /// Runs (variants x rounds).
    pub runs: u64,
    /// Crash points checked.
    pub points: u64,
    /// Crash points whose every possible image was checked.
    pub exhaustive: u64,
    /// Crash points with more images than `GenConfig::exhaustive_limit`, checked on a sample.
    pub sampled: u64,
    /// Images checked (those of the crash points, and single images the scenario built).
    pub images: u64,
    /// Images not checked again: identical to one checked against the same expectation.
    pub duplicates: u64,
    /// Images that failed the oracle.
    pub violations: u64,
    /// Wall-clock seconds.
    pub secs: f64,
}

impl ScenarioStats {
    fn add(&mut self, o: &ScenarioStats) {
        self.runs += o.runs;
        self.points += o.points;
        self.exhaustive += o.exhaustive;
        self.sampled += o.sampled;
        self.images += o.images;
        self.duplicates += o.duplicates;
        self.violations += o.violations;
        self.secs += o.secs;
    }
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

    /// A markdown table of the per-scenario counts (one row per scenario, and the total).
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| scenario | runs | crash points | exhaustive | sampled | images | duplicates | violations | seconds |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut total = ScenarioStats::default();
        let row = |name: &str, s: &ScenarioStats| {
            format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
                s.runs,
                s.points,
                s.exhaustive,
                s.sampled,
                s.images,
                s.duplicates,
                s.violations,
                s.secs
            )
        };
        for (name, s) in &self.scenarios {
            t.push_str(&row(name, s));
            total.add(s);
        }
        if self.scenarios.len() > 1 {
            t.push_str(&row("total", &total));
        }
        t
    }

    fn add(&mut self, o: Outcome, max: usize) {
        for (k, s) in &o.scenarios {
            self.scenarios.entry(k).or_default().add(s);
        }
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
            hooks: Hooks::default(),
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
            assert!(
                !sc.needs_hooks || self.hooks.panic_before_stores.is_some(),
                "scenario {name} needs the engine's test switches (Suite::hooks): it runs from pmem-sim/tests"
            );
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
                    let mut r = Runner::new(self, sc.name, *v, label.clone(), seed);
                    // A panic while recording (an engine assertion, a failed append, a harness
                    // check) fails the run like a violation, with the seed to replay it.
                    let run =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (sc.run)(&mut r)));
                    if let Err(e) = run {
                        let msg = e
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| e.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        r.record(format!(
                            "VIOLATION in {label} [model {}, seed {seed:#x}]: the scenario panicked while recording segment {}:\n    {msg}\n    replay (records the scenario again with this seed): PMEM_SIM_REPLAY={label}:{seed:#x}:0.0:{}",
                            v.model,
                            r.next_segment(),
                            v.model
                        ));
                    }
                    let mut o = r.outcome();
                    if let Some(st) = o.scenarios.get_mut(sc.name) {
                        st.secs = t.elapsed().as_secs_f64();
                    }
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
