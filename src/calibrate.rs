//! The persistence path of this host: from which size non-temporal stores beat cached stores
//! plus cache-line write-back, measured here rather than assumed.
//!
//! The crossover is a property of the machine, not a constant: on one AMD EPYC host
//! non-temporal stores won from 64 B, on an Intel Xeon host of the same kind cached stores and
//! `CLWB` won below about 1 KiB (docs/BENCHMARKS.md). So the first writable log of a process
//! that uses CPU flushes times both paths at a few sizes on scratch memory (a few hundred
//! microseconds, once per process and flush instruction) and takes the smallest size from
//! which non-temporal stores are never slower. `Options::nt_threshold` (or
//! `DAXLOG_NT_THRESHOLD` with `Options::from_env`) overrides it.
//!
//! What it measures is the CPU's side of an append: the copy, the write-backs and the fence
//! on DRAM. On persistent memory the media adds its own costs (Optane wrote in 256-byte
//! units, and non-temporal stores won there from about 256-512 B); where that matters, set the
//! threshold explicitly.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::persist::{self, Persistence};

/// The sizes timed (bytes on media per append).
pub const SIZES: [usize; 7] = [64, 128, 256, 512, 1024, 2048, 4096];

/// What the calibration found for one flush instruction.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Calibration {
    /// The flush instruction it was made for.
    pub flush: Persistence,
    /// Appends (or batches) of at least this many bytes on media use non-temporal stores
    /// (`usize::MAX`: never).
    pub nt_threshold: usize,
    /// Per size of [`SIZES`]: nanoseconds per append with cached stores and write-back, and
    /// with non-temporal stores (medians of several rounds).
    pub timings: Vec<(usize, f64, f64)>,
    /// How long the calibration took.
    pub took: Duration,
}

impl Calibration {
    /// One line: the threshold and the timings it rests on.
    pub fn describe(&self) -> String {
        let threshold = match self.nt_threshold {
            0 => "non-temporal stores at every size".to_string(),
            usize::MAX => "cached stores + write-back at every size".to_string(),
            t => format!("non-temporal stores from {t} B"),
        };
        let table: Vec<String> = self
            .timings
            .iter()
            .map(|(s, c, n)| format!("{s} B {c:.0}/{n:.0} ns"))
            .collect();
        format!(
            "{threshold} (measured here in {:.0} µs, {} vs non-temporal: {})",
            self.took.as_secs_f64() * 1e6,
            self.flush.name(),
            table.join(", ")
        )
    }
}

/// The smallest size from which the non-temporal path is never slower than the cached one,
/// given `(size, cached ns, nt ns)` rows in increasing size; `usize::MAX` if the cached path
/// wins at the largest size. A size where non-temporal stores lose makes every smaller size
/// use cached stores too: one path below the crossover, the other above it.
pub fn threshold_from(timings: &[(usize, f64, f64)]) -> usize {
    let mut threshold = usize::MAX;
    for &(size, cached, nt) in timings.iter().rev() {
        if nt <= cached {
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
pub fn for_flush(flush: Persistence) -> &'static Calibration {
    static CACHE: [OnceLock<Calibration>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let slot = match flush {
        Persistence::Clwb => 0,
        Persistence::ClflushOpt => 1,
        _ => 2,
    };
    CACHE[slot].get_or_init(|| {
        let t = Instant::now();
        let timings: Vec<(usize, f64, f64)> = SIZES
            .iter()
            .map(|&size| {
                // Rounds of 16 KiB: enough stores to fill the write-combining buffers
                // and the write queues, whose slack would make a short burst of either path
                // look cheaper than it is when appends keep coming.
                let per_round = ((16 << 10) / size).max(16);
                let (cached, nt) = persist::time_paths(flush, size, 3, per_round);
                (size, cached, nt)
            })
            .collect();
        let c = Calibration {
            flush,
            nt_threshold: threshold_from(&timings),
            timings,
            took: t.elapsed(),
        };
        tracing::info!(calibration = %c.describe(), "daxlog: chose the persistence path of this host");
        c
    })
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
    }

    #[test]
    fn calibration_runs_and_is_cached() {
        let Some(flush) = persist::best() else {
            return; // no flush instruction on this CPU
        };
        let a = for_flush(flush);
        assert_eq!(a.timings.len(), SIZES.len());
        assert!(a.timings.iter().all(|&(_, c, n)| c > 0.0 && n > 0.0));
        assert!(a.took < Duration::from_secs(1), "took {:?}", a.took);
        let b = for_flush(flush);
        assert!(std::ptr::eq(a, b), "made once per process");
        assert!(a.describe().contains("measured here"));
    }
}
