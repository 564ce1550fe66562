//! The persistence path of this host: from which size non-temporal stores beat cached stores
//! plus cache-line write-back, measured here rather than assumed.
//!
//! The crossover is a property of the machine, not a constant: on one AMD EPYC host
//! non-temporal stores won from 64 B, on an Intel Xeon host of the same kind cached stores and
//! `CLWB` won below about 1 KiB (docs/BENCHMARKS.md). So the first writable log of a process
//! that uses CPU flushes times whole appends both ways at a few sizes, on two scratch logs in
//! memory (a few milliseconds, once per process and flush instruction), and takes the
//! smallest size from which non-temporal stores are faster by at least [`NT_MARGIN`]. Small
//! batches, which are stored as one run of bytes, are timed and given a threshold of their
//! own. `Options::nt_threshold` (or `DAXLOG_NT_THRESHOLD` with `Options::from_env`) overrides
//! both.
//!
//! The scratch logs run the engine's own append path (reservation, encoding, checksum, end
//! marker, write-back, fence, publication), with each round's lines evicted from the caches
//! first, as a log's next lines are after a lap: timing the copy and the flush alone on
//! line-aligned scratch memory once chose non-temporal stores where whole appends, whose
//! entries straddle lines, were a quarter slower with them. What it cannot see are the
//! media's own costs: it runs on DRAM (Optane wrote in 256-byte units, and non-temporal stores
//! won there from about 256-512 B); where that matters, set the threshold explicitly.

use std::time::{Duration, Instant};

use crate::error::Result;
use crate::format::{self, DATA_OFFSET, ENTRY_ALIGN};
use crate::once::Chosen;
use crate::persist::{self, Persistence};
use crate::{Log, MmapMedia, Options};

/// The payload sizes timed (the rows of [`Calibration::timings`] give their bytes on media, a
/// 24-byte header and padding to 8 bytes more: entries that straddle cache lines, as most do).
pub const SIZES: [usize; 7] = [64, 128, 256, 512, 1024, 2048, 4096];

/// What the calibration found for one flush instruction.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Calibration {
    /// The flush instruction it was made for.
    pub flush: Persistence,
    /// Appends of at least this many bytes on media use non-temporal stores (`usize::MAX`:
    /// never); so do batches larger than one buffer (4 KiB).
    pub nt_threshold: usize,
    /// Batches of more than one entry and at most 4 KiB on media (assembled in one buffer and
    /// stored with one copy) of at least this many bytes use non-temporal stores.
    pub batch_nt_threshold: usize,
    /// Per size of [`SIZES`]: the bytes on media of one entry, and nanoseconds per append with
    /// cached stores and write-back, and with non-temporal stores (medians of several rounds);
    /// empty if nothing was measured.
    pub timings: Vec<(usize, f64, f64)>,
    /// Per count of [`BATCH_COUNTS`]: the bytes on media of a batch of that many 64-byte
    /// payloads, and nanoseconds per batch with either path, as in `timings`.
    pub batch_timings: Vec<(usize, f64, f64)>,
    /// How long the calibration took.
    pub took: Duration,
    /// Why nothing was measured (the threshold is then the default).
    pub failure: Option<String>,
}

impl Calibration {
    /// One line: the thresholds and the timings they rest on.
    pub fn describe(&self) -> String {
        let path = |t: usize| match t {
            0 => "non-temporal stores at every size".to_string(),
            usize::MAX => "cached stores + write-back at every size".to_string(),
            t => format!("non-temporal stores from {t} B"),
        };
        let threshold = path(self.nt_threshold);
        if let Some(why) = &self.failure {
            return format!("{threshold} (the default: not measured here, {why})");
        }
        let table = |rows: &[(usize, f64, f64)]| {
            rows.iter()
                .map(|(s, c, n)| format!("{s} B {c:.0}/{n:.0} ns"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "{threshold}; batches of up to 4 KiB: {} (measured here on whole appends in \
             {:.0} µs, {} vs non-temporal: {}; batches of 64 B entries: {})",
            path(self.batch_nt_threshold),
            self.took.as_secs_f64() * 1e6,
            self.flush.name(),
            table(&self.timings),
            table(&self.batch_timings),
        )
    }
}

/// How much faster non-temporal stores must be at a size to be chosen there: near a tie the
/// choice would otherwise flip from one process to the next with the machine's noise (on an
/// Intel Xeon guest the two paths were within 3 % of each other from 88 to 280 B, and six
/// processes chose 0, 152 or 280 B), and where they tie, cached stores lose less when the
/// log's next lines are in the cache (a new log's first lap).
pub const NT_MARGIN: f64 = 0.03;

/// The smallest size from which the non-temporal path is always faster than the cached one
/// by [`NT_MARGIN`], given `(size, cached ns, nt ns)` rows in increasing size; `usize::MAX`
/// if it is not at the largest size. A size where non-temporal stores do not win makes every
/// smaller size use cached stores too: one path below the crossover, the other above it.
pub fn threshold_from(timings: &[(usize, f64, f64)]) -> usize {
    let mut threshold = usize::MAX;
    for &(size, cached, nt) in timings.iter().rev() {
        if nt <= cached * (1.0 - NT_MARGIN) {
            threshold = size;
        } else {
            break;
        }
    }
    if threshold == timings.first().map_or(usize::MAX, |t| t.0) {
        0 // from the smallest size timed: always
    } else {
        threshold
    }
}

/// The calibration for `flush` (a CPU-flush mode this CPU supports), made once per process.
/// If the scratch logs cannot be made (no `memfd_create`), the default threshold is kept and
/// [`Calibration::failure`] says why.
/// Other threads that ask while it is made wait for it; a child forked from another thread
/// at that moment waits a second, then makes its own.
pub fn for_flush(flush: Persistence) -> &'static Calibration {
    static CACHE: [Chosen<Calibration>; 3] = [Chosen::new(), Chosen::new(), Chosen::new()];
    let slot = match flush {
        Persistence::Clwb => 0,
        Persistence::ClflushOpt => 1,
        _ => 2,
    };
    CACHE[slot].get_or_choose(|| {
        let t = Instant::now();
        // The scratch logs' own events (mapped, created, CPU flushes forced) would read as the
        // caller's: they go nowhere.
        let measured = tracing::subscriber::with_default(
            tracing::subscriber::NoSubscriber::default(),
            || time_appends(flush),
        );
        let c = match measured {
            Ok((timings, batch_timings)) => Calibration {
                flush,
                nt_threshold: threshold_from(&timings),
                batch_nt_threshold: threshold_from(&batch_timings),
                timings,
                batch_timings,
                took: t.elapsed(),
                failure: None,
            },
            Err(e) => Calibration {
                flush,
                nt_threshold: crate::options::DEFAULT_NT_THRESHOLD,
                batch_nt_threshold: crate::options::DEFAULT_NT_THRESHOLD,
                timings: Vec::new(),
                batch_timings: Vec::new(),
                took: t.elapsed(),
                failure: Some(e.to_string()),
            },
        };
        match &c.failure {
            None => tracing::info!(calibration = %c.describe(), "daxlog: chose the persistence path of this host"),
            Some(_) => tracing::warn!(calibration = %c.describe(), "daxlog: could not measure the persistence path of this host"),
        }
        c
    })
}

/// Timed rounds per size (after one round of warm-up).
const ROUNDS: usize = 5;

/// Bytes of each scratch log: twice the largest round, and room for the wrap rule's waste.
const SCRATCH_LOG: usize = DATA_OFFSET + (256 << 10);

/// Payload bytes of each entry of the batches timed.
const BATCH_PAYLOAD: usize = 64;

/// The entries per batch timed: batches of 176 B to 4048 B on media, up to the largest one
/// assembled in one buffer (`append::BATCH_BUF`).
pub const BATCH_COUNTS: [usize; 6] = [2, 4, 8, 16, 32, 46];

/// Calibration rows: `(bytes on media, cached ns, nt ns)`, in increasing size.
type Rows = Vec<(usize, f64, f64)>;

/// Times whole appends with `flush`, cached and non-temporal: single appends with a payload
/// of every size of [`SIZES`], then batches of [`BATCH_COUNTS`] entries of 64 B. Returns
/// `(single rows, batch rows)`, each row `(bytes on media, cached ns, nt ns)`: the median
/// nanoseconds per call of [`ROUNDS`] rounds, the two paths interleaved round by round so that
/// drift in the machine's speed hits both alike.
///
/// Batches are timed apart because they are stored apart: a small batch is assembled in one
/// buffer and stored with one copy, where a single append stores its header and the edges of
/// its payload separately; on an AMD EPYC guest a batch of 16 x 64 B (1408 B) was 13 % faster
/// with non-temporal stores while single appends of 1 KiB were 6 % slower with them.
///
/// The scratch logs are in the state a log is in after its first lap (an end marker after
/// every append), and the lines each round stores into are evicted from the caches first: a
/// log's next lines were last written a lap ago, not a moment ago, and whether a line is
/// cached decides which path wins (a cached store to a line that is not there must first
/// fetch it; a non-temporal store to a line that is must first evict it). The first lap of a
/// new log on a mapping just faulted in (zeroed pages, still cached) favours cached stores
/// more: on an Intel Xeon guest by 10-20 % at 256-512 B.
fn time_appends(flush: Persistence) -> Result<(Rows, Rows)> {
    let scratch = |nt_threshold| -> Result<Log<MmapMedia>> {
        // (Both thresholds set: a scratch log must not ask for the calibration it is part of.)
        let opts = Options::new()
            .env_overrides(false)
            .nt_threshold(nt_threshold)
            .batch_nt_threshold(nt_threshold);
        Log::create_on(MmapMedia::scratch(SCRATCH_LOG, flush)?, &opts)
    };
    let logs = [scratch(usize::MAX)?, scratch(0)?];
    let evictor = persist::Evictor::new();
    // Median ns per call of `call`, which stores `bytes` on media, on each log.
    let time = |bytes: usize, call: &dyn Fn(&Log<MmapMedia>) -> Result<()>| -> Result<(f64, f64)> {
        // Rounds of 16 KiB: enough stores to fill the write-combining buffers and the write
        // queues, whose slack would make a short burst of either path look cheaper than it is
        // when appends keep coming.
        let per_round = ((16 << 10) / bytes).max(16);
        let round_bytes = per_round * bytes;
        let mut times = [Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS)];
        for round in 0..=ROUNDS {
            for (log, times) in logs.iter().zip(&mut times) {
                if log.free_bytes() < 2 * round_bytes as u64 {
                    log.reset()?;
                }
                if let Some(e) = &evictor {
                    // The lines this round stores into (an append that does not fit before
                    // the end of the file goes to the start of the data area).
                    let tail = log.pmem.live().tail;
                    let media = log.media();
                    media.evict(e, tail, round_bytes + ENTRY_ALIGN);
                    if tail + round_bytes + ENTRY_ALIGN > SCRATCH_LOG {
                        media.evict(e, DATA_OFFSET, round_bytes + ENTRY_ALIGN);
                    }
                }
                let t = Instant::now();
                for _ in 0..per_round {
                    call(log)?;
                }
                if round > 0 {
                    times.push(t.elapsed().as_nanos() as f64 / per_round as f64);
                }
            }
        }
        let [cached, nt] = times.map(|mut v| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        });
        Ok((cached, nt))
    };
    let mut single = Vec::with_capacity(SIZES.len());
    for &size in &SIZES {
        let payload = vec![0x5au8; size];
        let entry = format::entry_len(size);
        let (cached, nt) = time(entry, &|log| log.append(&payload).map(drop))?;
        single.push((entry, cached, nt));
    }
    let payload = [0x5au8; BATCH_PAYLOAD];
    let mut batches = Vec::with_capacity(BATCH_COUNTS.len());
    for &count in &BATCH_COUNTS {
        let batch = vec![&payload[..]; count];
        let bytes = count * format::entry_len(BATCH_PAYLOAD);
        let (cached, nt) = time(bytes, &|log| log.append_batch(&batch).map(drop))?;
        batches.push((bytes, cached, nt));
    }
    Ok((single, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_where_non_temporal_stores_stop_losing() {
        let t = |rows: &[(f64, f64)]| {
            let timings: Vec<(usize, f64, f64)> = SIZES
                .iter()
                .zip(rows)
                .map(|(&s, &(c, n))| (s, c, n))
                .collect();
            threshold_from(&timings)
        };
        // Non-temporal stores win everywhere (an AMD EPYC host).
        assert_eq!(t(&[(200.0, 125.0); 7]), 0);
        // Cached stores win below 1 KiB (an Intel Xeon host).
        let intel = [
            (267.0, 325.0),
            (280.0, 326.0),
            (296.0, 327.0),
            (340.0, 350.0),
            (404.0, 374.0),
            (700.0, 420.0),
            (1145.0, 474.0),
        ];
        assert_eq!(t(&intel), 1024);
        // A loss above a win moves the crossover up: one path below it, the other above.
        let noisy = [
            (300.0, 200.0),
            (300.0, 200.0),
            (300.0, 310.0),
            (300.0, 200.0),
            (300.0, 200.0),
            (300.0, 200.0),
            (300.0, 200.0),
        ];
        assert_eq!(t(&noisy), 512);
        // Cached stores win at the largest size: never non-temporal.
        assert_eq!(t(&[(100.0, 200.0); 7]), usize::MAX);
        // A tie, or a win by less than the margin, is not a win.
        let close = [
            (300.0, 300.0),
            (300.0, 295.0),
            (300.0, 292.0),
            (300.0, 280.0),
            (400.0, 300.0),
            (700.0, 400.0),
            (1100.0, 450.0),
        ];
        assert_eq!(t(&close), 512);
    }

    #[test]
    fn calibration_runs_and_is_cached() {
        let Some(flush) = persist::best() else {
            return; // no flush instruction on this CPU
        };
        let a = for_flush(flush);
        assert_eq!(a.timings.len(), SIZES.len());
        assert!(a.timings.iter().all(|&(_, c, n)| c > 0.0 && n > 0.0));
        let bytes: Vec<usize> = a.batch_timings.iter().map(|r| r.0).collect();
        let want: Vec<usize> = BATCH_COUNTS
            .iter()
            .map(|&n| n * format::entry_len(BATCH_PAYLOAD))
            .collect();
        assert_eq!(bytes, want);
        assert!(
            want.last() <= Some(&crate::append::BATCH_BUF),
            "one buffer each"
        );
        assert!(a.batch_timings.iter().all(|&(_, c, n)| c > 0.0 && n > 0.0));
        assert_eq!(a.batch_nt_threshold, threshold_from(&a.batch_timings));
        assert!(a.took < Duration::from_secs(1), "took {:?}", a.took);
        let b = for_flush(flush);
        assert!(std::ptr::eq(a, b), "made once per process");
        assert!(a.describe().contains("measured here"));
        assert!(a.describe().contains("batches of 64 B entries: 176 B "));
    }
}
