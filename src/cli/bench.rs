//! `daxlog bench`: append throughput and latency, and recovery speed.
//!
//! Each row is one persistence mode and one payload size. For a row the tool creates a log
//! (fully allocated, every page faulted in), fills it once and empties it (untimed: a log in
//! use goes over bytes an earlier lap wrote, with an end marker after every append), runs an
//! untimed warm-up, then `--reps` timed slices of `--seconds / --reps` each in which
//! `--threads` threads append the same payload to the same log as fast as they can. A slice
//! also ends early if the log fills up; the log is emptied (untimed) before a slice whenever
//! less than half of it is free. Reported numbers are medians over the slices. Then a new log
//! is filled (with batches, untimed) to `--recovery-bytes` of entries and reopened `--reps`
//! times; the median open time gives the recovery speed.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::commands::{parse_capacity, round_capacity};
use super::size::{human, parse_size};
use super::CliError;
use crate::{
    format, supported_flush_instructions, Error, Log, Options, Persistence, PersistenceChoice,
};

const DEFAULT_SIZES: [u64; 4] = [64, 256, 1024, 4096];
const DEFAULT_CAPACITY: u64 = 256 << 20;
const DEFAULT_RECOVERY_BYTES: u64 = 64 << 20;
const MAX_WARMUP: Duration = Duration::from_millis(50);
/// The shortest timed slice: below it, starting and stopping the threads is most of what is
/// timed, and a slice may end before any append.
const MIN_SLICE: Duration = Duration::from_millis(1);

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Directory in which the benchmark makes its private scratch directory [default:
    /// /dev/shm, else the temporary directory].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Payload size, at most the largest payload --capacity holds; repeat the option or
    /// separate with commas [default: 64,256,1KiB,4KiB].
    #[arg(long = "size", value_name = "BYTES", value_parser = parse_size, value_delimiter = ',')]
    sizes: Vec<u64>,
    /// Threads appending to the same log at once (aggregate appends/s are reported).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = super::count_in::<u32>(1, 256))]
    threads: u32,
    /// Seconds of appending measured per row, split into --reps equal slices of at least
    /// 1 ms each.
    #[arg(long, value_name = "S", default_value_t = 1.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Timed repetitions per row; medians are reported.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = super::count_in::<u32>(1, 1000))]
    reps: u32,
    /// Persistence mode; repeat or separate with commas [default: auto,cpu,msync, keeping
    /// each resulting mode once].
    #[arg(long = "mode", value_name = "MODE", value_enum, value_delimiter = ',')]
    modes: Vec<ModeArg>,
    /// Capacity of the benchmark log, rounded up to a multiple of 4096 [default: 256MiB, less
    /// if DIR has under twice that free].
    #[arg(long, value_name = "SIZE", value_parser = parse_capacity)]
    capacity: Option<u64>,
    /// Bytes of entries each recovery measurement scans, at most what --capacity holds
    /// [default: 64MiB, or all the log holds if less]; 0 skips recovery.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    recovery_bytes: Option<u64>,
    /// Print one JSON object per line per measured row instead of a table.
    #[arg(long)]
    json: bool,
}

/// The `--mode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// CPU flushes if MAP_SYNC is granted (a DAX mount), msync otherwise.
    Auto,
    /// msync(MS_SYNC), even on a DAX mount.
    Msync,
    /// The best flush instruction of this CPU, even without MAP_SYNC.
    Cpu,
    /// CLWB + SFENCE, even without MAP_SYNC.
    Clwb,
    /// CLFLUSHOPT + SFENCE, even without MAP_SYNC.
    Clflushopt,
    /// CLFLUSH + MFENCE, even without MAP_SYNC.
    Clflush,
    /// The best flush instruction, cached stores and a write-back of each line at every size.
    CpuCached,
    /// The best flush instruction, non-temporal stores at every size.
    CpuNt,
}

/// `--seconds` values: a number of seconds, at most an hour. How short is too short depends
/// on `--reps`: [`check_seconds`] says, for 0 too.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if (0.0..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "'{text}' is not a number of seconds from 0 to 3600"
        )),
    }
}

/// A usage error of `bench`: exit 2, as for values the parser refuses.
fn usage(message: String) -> CliError {
    CliError::Usage {
        command: "bench",
        message,
    }
}

/// Refuses a `--seconds` that `--reps` splits into slices too short to time appends (0
/// included), naming the least `--seconds` that works.
fn check_seconds(seconds: f64, reps: u32) -> Result<(), CliError> {
    let min_seconds = MIN_SLICE.as_secs_f64() * reps as f64;
    // (With a margin for rounding: --seconds 0.005 --reps 5 is allowed.)
    if seconds < min_seconds * (1.0 - 1e-9) {
        return Err(usage(format!(
            "--seconds {}: split into --reps {reps} slices, each lasts under {} ms, too short \
             to time appends; give at least --seconds {}, or fewer --reps",
            show_seconds(seconds),
            MIN_SLICE.as_millis(),
            // (Whole milliseconds: 9 x 0.001 is 0.009000000000000001 in binary.)
            Duration::from_millis(MIN_SLICE.as_millis() as u64 * u64::from(reps)).as_secs_f64()
        )));
    }
    Ok(())
}

/// Refuses a `--size` or a `--recovery-bytes` that a log of `capacity` cannot hold (`default`:
/// the capacity was not given), naming the largest value that works; returns the recovery
/// bytes to fill: `--recovery-bytes`, else the default or all the log holds if less.
fn check_fits(
    sizes: &[u64],
    recovery_bytes: Option<u64>,
    capacity: u64,
    default: bool,
) -> Result<u64, CliError> {
    let log = format!(
        "a log of capacity {capacity} bytes ({}{})",
        human(capacity),
        if default { ", the default here" } else { "" }
    );
    let max_payload = crate::log::max_payload(capacity);
    if let Some(&s) = sizes.iter().find(|&&s| s > max_payload) {
        let what = if s > u32::MAX as u64 {
            format!("the largest payload of an entry ({} bytes)", u32::MAX)
        } else {
            format!("the largest payload {log} holds")
        };
        let or = if max_payload < u32::MAX as u64 {
            ", or a larger --capacity"
        } else {
            ""
        };
        return Err(usage(format!(
            "--size {s}: larger than {what}; give at most --size {max_payload}{or}"
        )));
    }
    // What the log has room for after its metadata: the default shrinks to it, an explicit
    // value larger than it is refused (the rows would measure less than was asked).
    let data_bytes = capacity - format::DATA_OFFSET as u64;
    match recovery_bytes {
        Some(r) if r > data_bytes => Err(usage(format!(
            "--recovery-bytes {r}: more than {log} holds: it has room for {data_bytes} bytes of \
             entries; give at most --recovery-bytes {data_bytes}, or a larger --capacity"
        ))),
        Some(r) => Ok(r),
        None => Ok(DEFAULT_RECOVERY_BYTES.min(data_bytes)),
    }
}

/// `seconds` in decimals, or in scientific notation when that would take more than 12
/// characters (`1e-300`, not 300 zeros).
fn show_seconds(seconds: f64) -> String {
    let plain = seconds.to_string();
    if plain.len() > 12 {
        format!("{seconds:e}")
    } else {
        plain
    }
}

/// A resolved persistence mode.
struct Mode {
    choice: PersistenceChoice,
    flush: Option<Persistence>,
    /// A fixed non-temporal threshold (`None`: the host's calibration chooses).
    nt: Option<usize>,
    persistence: Persistence,
    map_sync: bool,
    /// The threshold the log chose, and whether from the host's calibration.
    threshold: usize,
    calibrated: bool,
}

impl Mode {
    fn options(&self) -> Options {
        let mut o = Options::new().persistence(self.choice);
        if let Some(f) = self.flush {
            o = o.flush_instruction(f);
        }
        if let Some(t) = self.nt {
            o = o.nt_threshold(t);
        }
        o
    }

    fn name(&self) -> String {
        match self.nt {
            Some(0) => format!("{}-nt", self.persistence.name()),
            Some(_) => format!("{}-cached", self.persistence.name()),
            None => self.persistence.name().to_string(),
        }
    }

    /// How an append of `size` payload bytes is stored: `nt`, `cached` or `msync`.
    fn path(&self, size: u64) -> &'static str {
        if !self.persistence.is_cpu_flush() {
            "msync"
        } else if format::entry_len(size as usize) >= self.threshold {
            "nt"
        } else {
            "cached"
        }
    }

    /// Whether an acknowledged append survives power loss on this file system.
    fn durable(&self) -> bool {
        self.map_sync || !self.persistence.is_cpu_flush()
    }
}

/// Settings shared by all rows.
struct Ctx {
    path: PathBuf,
    capacity: u64,
    recovery_bytes: u64,
    threads: u32,
    reps: u32,
    /// `--seconds`.
    seconds: f64,
    slice: Duration,
    warmup: Duration,
}

struct AppendRow {
    appends: u64,
    ns_per_append: f64,
    appends_per_sec: f64,
    /// msync mode: appends (calls) per group sync over the timed slices.
    per_sync: Option<f64>,
}

struct RecoveryRow {
    entries: u64,
    bytes: u64,
    seconds: f64,
}

pub(crate) fn bench(a: BenchArgs) -> Result<u8, CliError> {
    let started = Instant::now();
    check_seconds(a.seconds, a.reps)?;
    // The modes are this command's options; of the environment only the checksum kernel,
    // which is the process's.
    crate::options::kernel_from_env().map_err(|source| CliError::Log {
        path: PathBuf::new(),
        source,
    })?;
    let sizes: Vec<u64> = if a.sizes.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        a.sizes.clone()
    };
    // An explicit --capacity is checked against the other values before anything is done;
    // the default depends on the free space of --dir.
    if let Some(given) = a.capacity {
        let c = round_capacity(given);
        check_fits(&sizes, a.recovery_bytes, c, false)?;
        if c != given {
            // As `create` says it.
            let _ = writeln!(
                io::stderr().lock(),
                "note: --capacity {given} bytes is not a multiple of 4096: rounded up to {c} bytes"
            );
        }
    }
    let dir = a.dir.clone().unwrap_or_else(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    });
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CliError::Failed(format!(
                "{}: not a directory (--dir names the directory the benchmark works in)",
                dir.display()
            )))
        }
        Err(_) => {
            return Err(CliError::Failed(format!(
                "{}: not found: no such directory",
                dir.display()
            )))
        }
    }
    // Every scratch file lives in a directory of our own, made with an unpredictable name
    // and mode 0700 (so nobody else can plant a file or a link in it), and removed with
    // everything in it when the benchmark ends, however it ends (except by a signal).
    let scratch = tempfile::Builder::new()
        .prefix("daxlog-bench-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&dir)
        .map_err(|e| {
            CliError::Failed(format!(
                "{}: cannot make a scratch directory there ({})",
                dir.display(),
                super::os_text(&e)
            ))
        })?;
    let path = scratch.path().join("bench.dax");
    let capacity = match a.capacity {
        Some(c) => round_capacity(c),
        None => default_capacity(&dir)?,
    };
    let recovery_bytes = check_fits(&sizes, a.recovery_bytes, capacity, a.capacity.is_none())?;
    let modes = resolve_modes(&a.modes, &path)?;
    let slice = Duration::from_secs_f64(a.seconds / a.reps as f64);
    let ctx = Ctx {
        path,
        capacity,
        recovery_bytes,
        threads: a.threads,
        reps: a.reps,
        seconds: a.seconds,
        slice,
        warmup: slice.min(MAX_WARMUP),
    };

    let steps_per_row = 1
        + a.reps as u64
        + if ctx.recovery_bytes > 0 {
            a.reps as u64
        } else {
            0
        };
    let pb = if io::stderr().is_terminal() {
        ProgressBar::new(steps_per_row * (modes.len() * sizes.len()) as u64).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };

    let mut out = io::stdout().lock();
    if !a.json {
        let flushes: Vec<&str> = supported_flush_instructions()
            .iter()
            .map(|p| p.name())
            .collect();
        writeln!(
            out,
            "daxlog bench: log in {} (MAP_SYNC {}), capacity {}, {} thread{}, median of {} x {:.2} s per row",
            dir.display(),
            if modes.iter().any(|m| m.map_sync) { "granted" } else { "not granted" },
            human(capacity),
            a.threads,
            if a.threads == 1 { "" } else { "s" },
            a.reps,
            slice.as_secs_f64(),
        )?;
        writeln!(
            out,
            "CPU flush instructions: {}",
            if flushes.is_empty() {
                "none".to_string()
            } else {
                flushes.join(" ")
            }
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "{:<14} {:>7} {:>7} {:>13} {:>11} {:>10} {:>14} {:>15}",
            "mode",
            "size",
            "path",
            "appends/s",
            "ns/append",
            "MB/s",
            "recovery GB/s",
            "recovery bytes"
        )?;
        out.flush()?;
    }
    let mut per_sync = Vec::new();
    for mode in &modes {
        for &size in &sizes {
            pb.set_message(format!("{} {}", mode.name(), human(size)));
            let (row, rec) = measure_row(&ctx, mode, size as usize, &pb)?;
            if let Some(x) = row.per_sync {
                per_sync.push(format!("{} B {x:.1}", size));
            }
            let mb_per_sec = row.appends_per_sec * size as f64 / 1e6;
            pb.suspend(|| -> io::Result<()> {
                if a.json {
                    let v = serde_json::json!({
                        "engine": "daxlog",
                        "kind": "append",
                        "mode": mode.name(),
                        "path": mode.path(size),
                        "nt_threshold": (mode.threshold != usize::MAX).then_some(mode.threshold),
                        "calibrated": mode.calibrated,
                        "map_sync": mode.map_sync,
                        "durable": mode.durable(),
                        "size": size,
                        "threads": a.threads,
                        "reps": a.reps,
                        "appends": row.appends,
                        "ns_per_append": round(row.ns_per_append, 1),
                        "appends_per_sec": round(row.appends_per_sec, 0),
                        "mb_per_sec": round(mb_per_sec, 2),
                        "appends_per_sync": row.per_sync.map(|x| round(x, 2)),
                        "dir": dir.display().to_string(),
                    });
                    writeln!(out, "{v}")?;
                    if let Some(r) = &rec {
                        let v = serde_json::json!({
                            "engine": "daxlog-recovery",
                            "kind": "recovery",
                            "mode": mode.name(),
                            "map_sync": mode.map_sync,
                            "size": size,
                            "threads": 1,
                            "reps": a.reps,
                            "entries": r.entries,
                            "bytes": r.bytes,
                            "seconds": r.seconds,
                            "ns_per_entry": round(r.seconds * 1e9 / r.entries.max(1) as f64, 1),
                            "entries_per_sec": round(r.entries as f64 / r.seconds, 0),
                            "gb_per_sec": round(r.bytes as f64 / r.seconds / 1e9, 3),
                            "dir": dir.display().to_string(),
                        });
                        writeln!(out, "{v}")?;
                    }
                } else {
                    let mode_name =
                        format!("{}{}", mode.name(), if mode.durable() { "" } else { "*" });
                    let (speed, bytes) = rec.as_ref().map_or(("-".into(), "-".into()), |r| {
                        (
                            format!("{:.2}", r.bytes as f64 / r.seconds / 1e9),
                            thousands(r.bytes),
                        )
                    });
                    writeln!(
                        out,
                        "{:<14} {:>7} {:>7} {:>13} {:>11.1} {:>10.1} {:>14} {:>15}",
                        mode_name,
                        size,
                        mode.path(size),
                        thousands(row.appends_per_sec.round() as u64),
                        row.ns_per_append,
                        mb_per_sec,
                        speed,
                        bytes
                    )?;
                }
                out.flush()
            })?;
        }
    }
    pb.finish_and_clear();
    if !a.json {
        writeln!(out)?;
        if let Some(flush) = modes.iter().find(|m| m.calibrated).map(|m| m.persistence) {
            writeln!(
                out,
                "path ({}): {}",
                flush.name(),
                crate::calibrate::for_flush(flush).describe()
            )?;
        }
        writeln!(
            out,
            "checksum kernels: {}",
            crate::kernel_choice().describe()
        )?;
        if !per_sync.is_empty() {
            writeln!(
                out,
                "msync group commit, appends per sync: {}",
                per_sync.join(", ")
            )?;
        }
        if modes.iter().any(|m| !m.durable()) {
            writeln!(
                out,
                "* CPU flushes forced without MAP_SYNC: times the flush path, but is not durable \
                 on this file system"
            )?;
        }
        writeln!(
            out,
            "ns/append: median over slices of the mean time of one append call; MB/s: payload \
             bytes (10^6) per second; recovery GB/s: entry bytes scanned per second by open; \
             recovery bytes: entry bytes (headers included) in the log each open scanned, whole \
             entries of the row's size"
        )?;
        writeln!(out, "total time {:.1} s", started.elapsed().as_secs_f64())?;
        out.flush()?;
    }
    drop(scratch);
    Ok(super::EXIT_OK)
}

/// The default log capacity: 256 MiB, or half the free space of `dir` if that is less.
fn default_capacity(dir: &Path) -> Result<u64, CliError> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| CliError::Failed(format!("{}: statvfs failed: {e}", dir.display())))?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let cap = DEFAULT_CAPACITY.min(free / 2) & !(format::CAPACITY_ALIGN - 1);
    if cap < 2 << 20 {
        return Err(CliError::Failed(format!(
            "{}: only {} free; the benchmark needs at least 4 MiB (see --dir, --capacity)",
            dir.display(),
            human(free)
        )));
    }
    Ok(cap)
}

/// Resolves the `--mode` values into distinct modes, by creating a small log in each.
fn resolve_modes(args: &[ModeArg], path: &Path) -> Result<Vec<Mode>, CliError> {
    let defaults = [ModeArg::Auto, ModeArg::Cpu, ModeArg::Msync];
    let explicit = !args.is_empty();
    let list = if explicit { args } else { &defaults[..] };
    let supported = supported_flush_instructions();
    let mut modes: Vec<Mode> = Vec::new();
    for &arg in list {
        let (choice, flush, nt) = match arg {
            ModeArg::Auto => (PersistenceChoice::Auto, None, None),
            ModeArg::Msync => (PersistenceChoice::ForceMsync, None, None),
            ModeArg::Cpu => (PersistenceChoice::ForceCpuFlush, None, None),
            ModeArg::Clwb => (
                PersistenceChoice::ForceCpuFlush,
                Some(Persistence::Clwb),
                None,
            ),
            ModeArg::Clflushopt => (
                PersistenceChoice::ForceCpuFlush,
                Some(Persistence::ClflushOpt),
                None,
            ),
            ModeArg::Clflush => (
                PersistenceChoice::ForceCpuFlush,
                Some(Persistence::Clflush),
                None,
            ),
            ModeArg::CpuCached => (PersistenceChoice::ForceCpuFlush, None, Some(usize::MAX)),
            ModeArg::CpuNt => (PersistenceChoice::ForceCpuFlush, None, Some(0)),
        };
        if let Some(f) = flush {
            if !supported.contains(&f) {
                return Err(CliError::Failed(format!(
                    "--mode {}: this CPU does not have that instruction",
                    f.name()
                )));
            }
        }
        if choice == PersistenceChoice::ForceCpuFlush && supported.is_empty() {
            if explicit {
                return Err(CliError::Failed(
                    "--mode cpu: this CPU has no cache flush instruction".into(),
                ));
            }
            continue;
        }
        let mut mode = Mode {
            choice,
            flush,
            nt,
            persistence: Persistence::Msync,
            map_sync: false,
            threshold: usize::MAX,
            calibrated: false,
        };
        let opts = mode
            .options()
            .capacity(2 * format::CAPACITY_ALIGN)
            .overwrite(true);
        let probe = Log::create(path, &opts).map_err(CliError::log(path))?;
        mode.persistence = probe.persistence();
        mode.map_sync = probe.map_sync();
        mode.threshold = probe.nt_threshold();
        mode.calibrated = probe.calibration().is_some();
        drop(probe);
        if !modes
            .iter()
            .any(|m| m.persistence == mode.persistence && m.nt == mode.nt)
        {
            modes.push(mode);
        }
    }
    Ok(modes)
}

/// Measures one row: appends (always) and recovery (if `recovery_bytes > 0`).
fn measure_row(
    ctx: &Ctx,
    mode: &Mode,
    size: usize,
    pb: &ProgressBar,
) -> Result<(AppendRow, Option<RecoveryRow>), CliError> {
    let path = &ctx.path;
    let payload: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
        .collect();
    let opts = mode.options().capacity(ctx.capacity).overwrite(true);
    let create = || {
        let log = Log::create(path, &opts).map_err(CliError::log(path))?;
        // First touch of a page is not what an append costs in steady state.
        log.prefault();
        Ok::<_, CliError>(log)
    };

    let log = create()?;
    // Filled once and emptied: its second lap, as a log in use is in (writes the whole
    // capacity once; on a disk in msync mode that takes a second or two).
    let big = vec![0u8; 1 << 20];
    for size in [1 << 20, 4096, 64, 0] {
        loop {
            match log.append(&big[..size.min(log.max_payload() as usize)]) {
                Ok(_) => {}
                Err(Error::Full { .. }) => break,
                Err(e) => return Err(CliError::log(path)(e)),
            }
        }
    }
    log.reset().map_err(CliError::log(path))?;
    timed_slice(&log, &payload, ctx.threads, ctx.warmup, path)?;
    pb.inc(1);
    let (mut rates, mut latencies) = (Vec::new(), Vec::new());
    let mut appends = 0;
    let (mut syncs, mut synced) = (0, 0);
    for _ in 0..ctx.reps {
        if log.free_bytes() < ctx.capacity / 2 {
            log.reset().map_err(CliError::log(path))?;
        }
        let before = log.sync_stats();
        let (n, elapsed) = timed_slice(&log, &payload, ctx.threads, ctx.slice, path)?;
        let after = log.sync_stats();
        syncs += after.syncs - before.syncs;
        synced += (after.appends + after.combined) - (before.appends + before.combined);
        pb.inc(1);
        if n == 0 {
            continue;
        }
        appends += n;
        let secs = elapsed.as_secs_f64();
        rates.push(n as f64 / secs);
        latencies.push(secs * 1e9 * ctx.threads as f64 / n as f64);
    }
    if appends == 0 {
        // No number can be given for the row: not a row of zeros.
        return Err(CliError::Failed(format!(
            "--seconds {}: no append completed in any of the {} timed slices of {:?} \
             ({}, {size}-byte payloads); give more --seconds",
            ctx.seconds,
            ctx.reps,
            ctx.slice,
            mode.name()
        )));
    }
    let row = AppendRow {
        appends,
        ns_per_append: median(&mut latencies),
        appends_per_sec: median(&mut rates),
        per_sync: (syncs > 0).then(|| synced as f64 / syncs as f64),
    };
    if ctx.recovery_bytes == 0 {
        return Ok((row, None));
    }

    // A fresh log, filled with large batches (untimed) of whole entries: to the first entry
    // that reaches the recovery size, or as many as the log holds if that is fewer (then less
    // than the recovery size, by less than one entry). The rows give the bytes filled.
    drop(log);
    let log = create()?;
    let entry = format::entry_len(size) as u64;
    let per_batch = ((1 << 20) / entry).max(1);
    while log.used_bytes() < ctx.recovery_bytes {
        let room = log.free_bytes() / entry;
        let want = (ctx.recovery_bytes - log.used_bytes()).div_ceil(entry);
        let k = per_batch.min(room).min(want) as usize;
        if k == 0 {
            break;
        }
        let batch: Vec<&[u8]> = vec![&payload[..]; k];
        log.append_batch(&batch).map_err(CliError::log(path))?;
    }
    let (entries, bytes) = (log.len(), log.used_bytes());
    drop(log);
    let mut times = Vec::new();
    for _ in 0..ctx.reps {
        let t = Instant::now();
        let log = Log::open(path, &opts).map_err(CliError::log(path))?;
        times.push(t.elapsed().as_secs_f64());
        if log.len() != entries {
            return Err(CliError::Failed(format!(
                "{}: recovery found {}, {entries} were appended",
                path.display(),
                super::count(log.len(), "entry", "entries")
            )));
        }
        drop(log);
        pb.inc(1);
    }
    Ok((
        row,
        Some(RecoveryRow {
            entries,
            bytes,
            seconds: median(&mut times),
        }),
    ))
}

/// `threads` threads append `payload` to `log` for `slice` (or until the log is full);
/// returns the number of appends and the wall time from the common start to the last stop.
fn timed_slice(
    log: &Log,
    payload: &[u8],
    threads: u32,
    slice: Duration,
    path: &Path,
) -> Result<(u64, Duration), CliError> {
    let stop = AtomicBool::new(false);
    let start = Barrier::new(threads as usize + 1);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (stop, start, done) = (&stop, &start, done_tx.clone());
                s.spawn(move || -> Result<(u64, Instant, Instant), Error> {
                    start.wait();
                    let mut n = 0u64;
                    let first = Instant::now();
                    // The clock is read once at the end, not after every append: a read
                    // costs 15-20 ns here, a tenth of an append in msync mode on tmpfs. The
                    // end then includes one look at `stop`, or the one append refused `Full`.
                    while !stop.load(Ordering::Relaxed) {
                        match log.append(payload) {
                            Ok(_) => n += 1,
                            Err(Error::Full { .. }) => break,
                            Err(e) => {
                                let _ = done.send(());
                                return Err(e);
                            }
                        }
                    }
                    let last = Instant::now();
                    let _ = done.send(());
                    Ok((n, first, last))
                })
            })
            .collect();
        drop(done_tx);
        start.wait();
        // Ends after the slice, or as soon as one worker stops (the log is full).
        let _ = done_rx.recv_timeout(slice);
        stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        let mut failure = None;
        // From the first worker's start to the last worker's end (just after its last
        // append returned), as the workers saw them: not this thread's wake-ups (which, for
        // a small log that fills at once, would be most of the time measured).
        let (mut from, mut to) = (None::<Instant>, None::<Instant>);
        for w in workers {
            match w.join() {
                Ok(Ok((n, first, last))) => {
                    total += n;
                    from = Some(from.map_or(first, |f| f.min(first)));
                    to = Some(to.map_or(last, |t| t.max(last)));
                }
                Ok(Err(e)) => {
                    failure = Some(CliError::Log {
                        path: path.to_path_buf(),
                        source: e,
                    })
                }
                Err(_) => failure = Some(CliError::Failed("a benchmark thread panicked".into())),
            }
        }
        let elapsed = match (from, to) {
            (Some(from), Some(to)) => to - from,
            _ => Duration::ZERO,
        };
        match failure {
            Some(e) => Err(e),
            None => Ok((total, elapsed)),
        }
    })
}

/// The median (the mean of the middle two for an even count); 0 for no values.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
        assert!(parse_seconds("nan").is_err());
        assert!(parse_seconds("-0.1").is_err());
        assert!(parse_seconds("3600.5").is_err());
        assert_eq!(parse_seconds("0.2"), Ok(0.2));
        // 0 is refused with the other values too short for --reps, naming the least that works.
        assert_eq!(parse_seconds("0"), Ok(0.0));
        let e = check_seconds(0.0, 5).unwrap_err();
        assert_eq!(e.exit_code(), crate::cli::EXIT_USAGE);
        assert!(
            e.to_string().contains("give at least --seconds 0.005"),
            "{e}"
        );
        assert!(check_seconds(0.005, 5).is_ok());
        assert!(check_seconds(1.0, 1000).is_ok());
        assert_eq!(show_seconds(0.0049), "0.0049");
        assert_eq!(show_seconds(0.0), "0");
        assert_eq!(show_seconds(1e-9), "0.000000001");
        assert_eq!(show_seconds(1e-300), "1e-300");
    }
}
