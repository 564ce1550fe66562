//! Shared configuration, timing and result reporting of the comparison benchmark.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Payload sizes of the single-append workloads.
const ALL_SIZES: [usize; 5] = [64, 256, 1024, 4096, 65536];

/// The payload sizes to run: all, or those listed in `DAXLOG_BENCH_SIZES` (e.g. `64,65536`).
pub fn sizes() -> Vec<usize> {
    match std::env::var("DAXLOG_BENCH_SIZES") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => ALL_SIZES.to_vec(),
    }
}
/// Entries per batch, and their payload size, in the batch workload.
pub const BATCH_N: usize = 16;
pub const BATCH_PAYLOAD: usize = 64;
/// Payload sizes of the logs built for the recovery and iteration workloads: 64 B, 1 KiB and
/// 64 KiB, or those listed in `DAXLOG_BENCH_RECOVERY_SIZES`.
pub fn recovery_sizes() -> Vec<usize> {
    match std::env::var("DAXLOG_BENCH_RECOVERY_SIZES") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![64, 1024, 65536],
    }
}
/// True if the variable `name` says yes (`1`, `true` or `yes`).
pub fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// Largest log (or pool, or mapping) an append workload creates.
pub const MAX_LOG: usize = 512 << 20;
/// `madvise` advice that faults pages in writable without writing them (Linux 5.14).
pub const MADV_POPULATE_WRITE: libc::c_int = 23;

/// How much work each case does; the same in every child process.
pub struct Cfg {
    pub smoke: bool,
    pub reps: usize,
    pub big: bool,
    pub prefault: bool,
    /// daxlog's append logs are measured in their first lap (`DAXLOG_BENCH_FIRST_LAP=1`),
    /// not after one (the default).
    pub first_lap: bool,
    /// Private scratch directory on /dev/shm (removed on drop).
    pub shm: PathBuf,
    /// Private scratch directory on the ordinary file system (removed on drop).
    pub tmp: PathBuf,
}

impl Cfg {
    pub fn from_env(smoke: bool, big: bool) -> Cfg {
        let reps = env_usize("DAXLOG_BENCH_REPS").unwrap_or(if smoke { 1 } else { 7 });
        let shm_base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        // Private directories with unpredictable names (mode 0700, created exclusively): no
        // one else can plant a link where the rivals' files are created.
        let private = |base: &Path| {
            tempfile::Builder::new()
                .prefix("daxlog-bench-")
                .tempdir_in(base)
                .expect("create a private scratch directory")
                .keep()
        };
        let shm = private(&shm_base);
        let tmp = private(&std::env::temp_dir());
        Cfg {
            smoke,
            reps: reps.max(1),
            big,
            prefault: std::env::var_os("DAXLOG_BENCH_NO_PREFAULT").is_none(),
            first_lap: env_flag("DAXLOG_BENCH_FIRST_LAP"),
            shm,
            tmp,
        }
    }

    /// Appends per timed repetition: about 64 MiB of payload, between 256 and 200 000 appends
    /// (50 000 for the msync-based cases, which take microseconds each).
    pub fn appends_per_rep(&self, payload: usize, slow: bool) -> usize {
        if self.smoke {
            return 32;
        }
        let n = ((64usize << 20) / payload).clamp(256, 200_000);
        if slow {
            n.min(50_000)
        } else {
            n
        }
    }

    /// Capacities of the logs used by the recovery and iteration workloads.
    pub fn recovery_capacities(&self) -> Vec<usize> {
        if self.smoke {
            vec![8 << 20]
        } else if self.big {
            vec![256 << 20, 1 << 30]
        } else {
            vec![256 << 20]
        }
    }
}

impl Drop for Cfg {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.shm);
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

pub fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Name of an append workload.
pub fn append_case(payload: usize) -> String {
    format!("append {}", size_name(payload))
}

/// Thread counts and payload sizes of the concurrent-append workload.
pub const THREADS: &[usize] = &[1, 2, 4, 8];
pub const THREAD_SIZES: &[usize] = &[64, 1024];

/// Name of a concurrent-append workload: `threads` threads appending to one log or pool.
pub fn threads_case(payload: usize, threads: usize) -> String {
    format!(
        "{threads} thread{} x append {}",
        if threads == 1 { "" } else { "s" },
        size_name(payload)
    )
}

/// Runs `each` appends on each of `threads` scoped threads at once.
pub fn on_threads(threads: usize, each: usize, op: impl Fn() + Sync) {
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..each {
                    op();
                }
            });
        }
    });
}

pub fn batch_case() -> String {
    format!("append_batch {BATCH_N}x{}", size_name(BATCH_PAYLOAD))
}

pub fn recover_case(cap: usize, payload: usize) -> String {
    format!(
        "recover {} log, {} entries",
        size_name(cap),
        size_name(payload)
    )
}

pub fn iterate_case(cap: usize, payload: usize) -> String {
    format!(
        "iterate {} log, {} entries",
        size_name(cap),
        size_name(payload)
    )
}

pub fn size_name(n: usize) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// Prints one result line for the parent: the row (implementation and mode), the case, the
/// payload bytes and entries one operation carries, and the nanoseconds per operation of
/// each timed repetition.
pub fn emit(row: &str, case: &str, bytes_per_op: usize, entries_per_op: usize, ns: &[f64]) {
    let samples: Vec<String> = ns.iter().map(|v| format!("{v:.3}")).collect();
    println!(
        "RESULT\t{row}\t{case}\t{bytes_per_op}\t{entries_per_op}\t{}",
        samples.join(",")
    );
}

/// Times `reps` repetitions of `ops` calls of `op` (after one untimed warm-up repetition of
/// `ops / 4` calls) and returns nanoseconds per call. `before` runs untimed before each
/// repetition (e.g. to replace a log that would fill up).
pub fn time_reps(
    reps: usize,
    ops: usize,
    mut before: impl FnMut(),
    mut op: impl FnMut(),
) -> Vec<f64> {
    before();
    for _ in 0..(ops / 4).max(1) {
        op();
    }
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        before();
        let t = Instant::now();
        for _ in 0..ops {
            op();
        }
        out.push(t.elapsed().as_nanos() as f64 / ops as f64);
    }
    out
}

/// Faults every page of `[ptr, ptr + len)` in writable, without writing: the mapping is then
/// "prefaulted" and a timed store never takes a page fault. Returns false if the kernel refused.
///
/// # Safety
/// The range lies inside one live shared file mapping of this process (the advice only fills
/// page tables; it changes no byte).
pub unsafe fn populate_write(ptr: *mut u8, len: usize) -> bool {
    let page = 4096usize;
    let lo = ptr as usize & !(page - 1);
    let hi = ptr as usize + len;
    // SAFETY: as documented on the function.
    unsafe { libc::madvise(lo as *mut c_void, hi - lo, MADV_POPULATE_WRITE) == 0 }
}

/// Bytes rounded up to a multiple of 4 KiB.
pub fn round_page(n: usize) -> usize {
    (n + 4095) & !4095
}

/// A payload of `n` bytes that is not all zeros.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + 7) as u8).collect()
}
