//! daxlog itself: appends in each persistence mode, recovery and iteration.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use daxlog::format::{entry_len, DATA_OFFSET};
use daxlog::{Log, Media, Options, PersistenceChoice};

use crate::common::*;

/// The persistence configurations measured.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// CPU flush forced on /dev/shm, the non-temporal thresholds this host's calibration chose.
    Default,
    /// CPU flush forced, `nt_threshold(usize::MAX)`: cached stores + CLWB only.
    Clwb,
    /// CPU flush forced, `nt_threshold(0)`: non-temporal stores only.
    Nt,
    /// Automatic choice, which is `msync` on /dev/shm.
    Msync,
}

impl Mode {
    pub fn row(self) -> &'static str {
        match self {
            Mode::Default => "daxlog, CPU flush (default: calibrated NT threshold)",
            Mode::Clwb => "daxlog, CPU flush, CLWB only (nt_threshold MAX)",
            Mode::Nt => "daxlog, CPU flush, NT only (nt_threshold 0)",
            Mode::Msync => "daxlog, msync (auto on /dev/shm)",
        }
    }

    pub fn options(self) -> Options {
        let o = Options::new().overwrite(true);
        match self {
            Mode::Default => o.persistence(PersistenceChoice::ForceCpuFlush),
            Mode::Clwb => o
                .persistence(PersistenceChoice::ForceCpuFlush)
                .nt_threshold(usize::MAX),
            Mode::Nt => o
                .persistence(PersistenceChoice::ForceCpuFlush)
                .nt_threshold(0),
            Mode::Msync => o.persistence(PersistenceChoice::Auto),
        }
    }
}

/// Creates (or re-creates) a log and prefaults its whole mapping.
pub fn fresh_log(cfg: &Cfg, path: &Path, opts: &Options, capacity: usize) -> Log {
    let _ = std::fs::remove_file(path);
    let log = Log::create(path, &opts.clone().capacity(capacity as u64)).expect("create log");
    if cfg.prefault {
        // Every page of the mapping faulted in now: no timed append takes a page fault, and
        // the log does not populate chunks ahead of the tail any more.
        log.prefault();
    }
    log
}

pub fn appends(cfg: &Cfg, mode: Mode) {
    let path = cfg.shm.join("daxlog-append.dax");
    let opts = mode.options();
    let slow = matches!(mode, Mode::Msync);
    {
        let log = fresh_log(cfg, &path, &opts, 8 << 20);
        eprintln!(
            "note: {}: persistence {}, map_sync {}",
            mode.row(),
            log.persistence(),
            log.map_sync()
        );
        if let Some(c) = log.calibration() {
            eprintln!("note: {}: {}", mode.row(), c.describe());
        }
        eprintln!(
            "note: {}: kernels: {}",
            mode.row(),
            daxlog::kernel_choice().describe()
        );
    }
    for size in sizes() {
        let p = payload(size);
        let ops = cfg.appends_per_rep(size, slow);
        let per_rep = ops * entry_len(size);
        let ns = run(cfg, &path, &opts, per_rep, ops, |log| {
            black_box(log.append(black_box(&p)).expect("append"));
        });
        emit(mode.row(), &append_case(size), size, 1, &ns);
    }
    let p = payload(BATCH_PAYLOAD);
    let batch: Vec<&[u8]> = (0..BATCH_N).map(|_| &p[..]).collect();
    let ops = cfg.appends_per_rep(BATCH_N * BATCH_PAYLOAD, slow);
    let per_rep = ops * BATCH_N * entry_len(BATCH_PAYLOAD);
    let ns = run(cfg, &path, &opts, per_rep, ops, |log| {
        black_box(log.append_batch(black_box(&batch)).expect("append_batch"));
    });
    emit(
        mode.row(),
        &batch_case(),
        BATCH_N * BATCH_PAYLOAD,
        BATCH_N,
        &ns,
    );
    let _ = std::fs::remove_file(&path);
}

/// Aggregate appends/s of 1, 2, 4 and 8 threads appending to one shared log (CPU flush
/// forced, default options); one timed repetition is every thread's share of the appends.
pub fn threaded(cfg: &Cfg) {
    let path = cfg.shm.join("daxlog-threads.dax");
    let opts = Mode::Default.options();
    for &size in THREAD_SIZES {
        let p = payload(size);
        for &n in THREADS {
            let ops = cfg.appends_per_rep(size, false).div_ceil(n) * n;
            let per_rep = ops * entry_len(size);
            let ns = run(cfg, &path, &opts, per_rep, 1, |log| {
                on_threads(n, ops / n, || {
                    black_box(log.append(black_box(&p)).expect("append"));
                });
            });
            let per_append: Vec<f64> = ns.iter().map(|v| v / ops as f64).collect();
            emit(
                Mode::Default.row(),
                &threads_case(size, n),
                size,
                1,
                &per_append,
            );
            if n > 1 {
                let ns = threads_apart(cfg, &opts, &p, n, ops / n);
                let per_append: Vec<f64> = ns.iter().map(|v| v / ops as f64).collect();
                emit(APART_ROW, &threads_case(size, n), size, 1, &per_append);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// The row of [`threads_apart`].
pub const APART_ROW: &str =
    "daxlog, one log per thread (the same appends with nothing shared between the threads)";

/// `n` threads appending `each` entries of payload `p`, each thread to a log of its own: what
/// the threads make when no reservation, publication or cache line is shared between them,
/// i.e. the most that sharing one log could ever make. Times one repetition per sample; each
/// log is replaced (untimed, filled once and emptied as in [`run`]) when the next might not
/// fit.
fn threads_apart(cfg: &Cfg, opts: &Options, p: &[u8], n: usize, each: usize) -> Vec<f64> {
    let per_log = each * entry_len(p.len());
    let cap = capacity_for(cfg, per_log);
    let margin = per_log + per_log / 4 + (4 << 20);
    let paths: Vec<_> = (0..n)
        .map(|i| cfg.shm.join(format!("daxlog-apart-{i}.dax")))
        .collect();
    let logs = std::cell::RefCell::new(Vec::<Log>::new());
    // (One call of the timed closure is a whole repetition: `threaded` divides by the appends.)
    let ns = time_reps(
        cfg.reps,
        1,
        || {
            let mut v = logs.borrow_mut();
            if v.is_empty() || v.iter().any(|l| (l.free_bytes() as usize) < margin) {
                v.clear(); // unmap and unlock before re-creating the files
                for path in &paths {
                    let log = fresh_log(cfg, path, opts, cap);
                    if !cfg.first_lap {
                        wrap_once(&log);
                    }
                    v.push(log);
                }
            }
        },
        || {
            let v = logs.borrow();
            std::thread::scope(|s| {
                for log in v.iter() {
                    s.spawn(move || {
                        for _ in 0..each {
                            black_box(log.append(black_box(p)).expect("append"));
                        }
                    });
                }
            });
        },
    );
    logs.borrow_mut().clear();
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    ns
}

/// Times `ops` calls of `op` per repetition on a log that is replaced (untimed) whenever the
/// next repetition might not fit. Each new log is filled once and emptied first (untimed;
/// unless `cfg.first_lap`): a log in use goes over bytes an earlier lap wrote, with an end
/// marker after every append, and libpmemlog's pools are measured filled once and rewound too.
pub fn run(
    cfg: &Cfg,
    path: &Path,
    opts: &Options,
    per_rep: usize,
    ops: usize,
    op: impl FnMut(&Log),
) -> Vec<f64> {
    let cap = capacity_for(cfg, per_rep);
    let make = || {
        let log = fresh_log(cfg, path, opts, cap);
        if !cfg.first_lap {
            wrap_once(&log);
        }
        log
    };
    run_on(cfg, per_rep, ops, make, op)
}

/// Fills `log` to the last byte and empties it: its next append that does not fit before the
/// end of the file begins its second lap.
pub fn wrap_once(log: &Log) {
    let big = vec![0u8; 1 << 20];
    for size in [1 << 20, 4096, 64, 0] {
        while log.append(&big[..size]).is_ok() {}
    }
    log.reset().expect("reset");
}

/// As [`run`], with logs on any media made by `make`.
pub fn run_on<M: Media>(
    cfg: &Cfg,
    per_rep: usize,
    ops: usize,
    mut make: impl FnMut() -> Log<M>,
    mut op: impl FnMut(&Log<M>),
) -> Vec<f64> {
    let slot = std::cell::RefCell::new(None::<Log<M>>);
    let margin = per_rep + (per_rep / 4) + (4 << 20);
    time_reps(
        cfg.reps,
        ops,
        || {
            let mut s = slot.borrow_mut();
            let full = match s.as_ref() {
                Some(l) => (l.free_bytes() as usize) < margin,
                None => true,
            };
            if full {
                *s = None; // unmap and unlock before re-creating the file
                *s = Some(make());
            }
        },
        || op(slot.borrow().as_ref().expect("log")),
    )
}

/// Log capacity for `reps + 1` repetitions of `per_rep` bytes (capped at [`MAX_LOG`]).
pub fn capacity_for(cfg: &Cfg, per_rep: usize) -> usize {
    let want = per_rep * (cfg.reps + 1) + (8 << 20);
    round_page(want.min(MAX_LOG).max(per_rep + (8 << 20)))
}

/// Fills a new log of `cap` bytes completely with `size`-byte entries; returns the entry count.
pub fn fill(path: &Path, cap: usize, size: usize) -> u64 {
    let opts = Mode::Nt.options().capacity(cap as u64);
    let _ = std::fs::remove_file(path);
    let log = Log::create(path, &opts).expect("create log");
    let p = payload(size);
    let n = ((cap - DATA_OFFSET) / entry_len(size)) as u64;
    let chunk = (256usize).min((1 << 20) / entry_len(size)).max(1);
    let batch: Vec<&[u8]> = (0..chunk).map(|_| &p[..]).collect();
    let mut done = 0u64;
    while done < n {
        let k = chunk.min((n - done) as usize);
        log.append_batch(&batch[..k]).expect("fill");
        done += k as u64;
    }
    assert!(log.free_bytes() < entry_len(size) as u64);
    n
}

/// Recovery (`Log::open`, which validates every entry) and iteration of full logs.
pub fn recovery(cfg: &Cfg) {
    let row = "daxlog, Log::open (validates every crc) / iter()";
    let path = cfg.shm.join("daxlog-recover.dax");
    let opts = Mode::Default.options();
    for cap in cfg.recovery_capacities() {
        for size in recovery_sizes() {
            let n = fill(&path, cap, size);
            let used = n as usize * entry_len(size);
            let mut open_ns = Vec::new();
            let mut iter_ns = Vec::new();
            let mut walk_ns = Vec::new();
            let mut reported = Vec::new();
            // One untimed open first: the file's pages are then in the same (page cache) state
            // for every timed open.
            drop(Log::open(&path, &opts).expect("open"));
            for _ in 0..cfg.reps {
                let t = Instant::now();
                let log = Log::open(&path, &opts).expect("open");
                open_ns.push(t.elapsed().as_nanos() as f64);
                assert_eq!(log.recovery().entries, n);
                reported.push(log.recovery().duration.as_secs_f64() * 1e3);
                let t = Instant::now();
                let total: usize = log.pin().iter().map(|e| e.payload.len()).sum();
                iter_ns.push(t.elapsed().as_nanos() as f64);
                assert_eq!(total, n as usize * size);
                drop(black_box(log));
                walk_ns.push(crate::roofline::header_walk(&path, n));
            }
            eprintln!(
                "note: daxlog recovery {}: RecoveryReport::duration (ms) {:?}",
                recover_case(cap, size),
                reported
            );
            emit(row, &recover_case(cap, size), used, n as usize, &open_ns);
            emit(row, &iterate_case(cap, size), used, n as usize, &iter_ns);
            emit(
                "roofline: header walk (each entry's length read, nothing checked or handed out)",
                &iterate_case(cap, size),
                used,
                n as usize,
                &walk_ns,
            );
        }
    }
    let _ = std::fs::remove_file(&path);
}
