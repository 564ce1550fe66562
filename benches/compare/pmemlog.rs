//! PMDK's libpmemlog through a minimal hand-written FFI (Debian: `libpmemlog-dev`).
//!
//! libpmem decides at library initialisation whether a mapping is persistent memory
//! (`PMEM_IS_PMEM_FORCE=1` makes it say yes everywhere: the CPU-flush path); the parent process
//! therefore runs each mode in its own child process with the variable set or removed.
//!
//! libpmemlog stores the appended bytes only (no per-entry header or checksum) and a write
//! offset in its pool header, which it persists after the data: two barriers per append.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_longlong, c_void, CStr, CString};
use std::hint::black_box;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::time::Instant;

use crate::common::*;

/// Opaque `PMEMlogpool`.
#[repr(C)]
pub struct PmemLogPool {
    _private: [u8; 0],
}

type ChunkFn = extern "C" fn(buf: *const c_void, len: usize, arg: *mut c_void) -> c_int;

#[link(name = "pmemlog")]
extern "C" {
    fn pmemlog_create(path: *const c_char, poolsize: usize, mode: libc::mode_t)
        -> *mut PmemLogPool;
    fn pmemlog_open(path: *const c_char) -> *mut PmemLogPool;
    fn pmemlog_close(plp: *mut PmemLogPool);
    fn pmemlog_nbyte(plp: *mut PmemLogPool) -> usize;
    fn pmemlog_append(plp: *mut PmemLogPool, buf: *const c_void, count: usize) -> c_int;
    fn pmemlog_appendv(plp: *mut PmemLogPool, iov: *const libc::iovec, iovcnt: c_int) -> c_int;
    fn pmemlog_tell(plp: *mut PmemLogPool) -> c_longlong;
    fn pmemlog_rewind(plp: *mut PmemLogPool);
    fn pmemlog_walk(
        plp: *mut PmemLogPool,
        chunksize: usize,
        process_chunk: ChunkFn,
        arg: *mut c_void,
    );
    fn pmemlog_errormsg() -> *const c_char;
}

/// An open pool; closed on drop.
pub struct Pool(NonNull<PmemLogPool>);

// SAFETY: libpmemlog's pool functions may be called from any thread at once (libpmemlog(7):
// "libpmemlog is thread-safe"; appends take the pool's lock). `rewind` is only called between
// repetitions, with no append running.
unsafe impl Sync for Pool {}

fn last_error() -> String {
    // SAFETY: pmemlog_errormsg returns a thread-local NUL-terminated string (never NULL).
    unsafe { CStr::from_ptr(pmemlog_errormsg()) }
        .to_string_lossy()
        .into_owned()
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("path without NUL")
}

impl Pool {
    pub fn create(path: &Path, size: usize) -> Pool {
        let _ = std::fs::remove_file(path);
        let p = c_path(path);
        // SAFETY: a valid C string; libpmemlog creates the file and maps it.
        let plp = unsafe { pmemlog_create(p.as_ptr(), size, 0o644) };
        Pool(NonNull::new(plp).unwrap_or_else(|| panic!("pmemlog_create: {}", last_error())))
    }

    pub fn open(path: &Path) -> Pool {
        let p = c_path(path);
        // SAFETY: a valid C string.
        let plp = unsafe { pmemlog_open(p.as_ptr()) };
        Pool(NonNull::new(plp).unwrap_or_else(|| panic!("pmemlog_open: {}", last_error())))
    }

    pub fn nbyte(&self) -> usize {
        // SAFETY: an open pool.
        unsafe { pmemlog_nbyte(self.0.as_ptr()) }
    }

    pub fn tell(&self) -> usize {
        // SAFETY: an open pool.
        unsafe { pmemlog_tell(self.0.as_ptr()) as usize }
    }

    pub fn free(&self) -> usize {
        self.nbyte() - self.tell()
    }

    pub fn rewind(&self) {
        // SAFETY: an open pool.
        unsafe { pmemlog_rewind(self.0.as_ptr()) }
    }

    /// Appends `buf`; false if the pool is full.
    #[inline]
    pub fn append(&self, buf: &[u8]) -> bool {
        // SAFETY: an open pool; `buf` is valid for its length.
        unsafe { pmemlog_append(self.0.as_ptr(), buf.as_ptr().cast(), buf.len()) == 0 }
    }

    /// Appends all `iov` atomically; false if the pool is full.
    #[inline]
    pub fn appendv(&self, iov: &[libc::iovec]) -> bool {
        // SAFETY: an open pool; every iovec points at a live buffer of its length (callers
        // build them from slices that outlive the call).
        unsafe { pmemlog_appendv(self.0.as_ptr(), iov.as_ptr(), iov.len() as c_int) == 0 }
    }

    /// Calls `f` for each `chunk`-byte piece of the log (the whole log at once if 0).
    pub fn walk<F: FnMut(&[u8])>(&self, chunk: usize, mut f: F) {
        extern "C" fn tramp<F: FnMut(&[u8])>(
            buf: *const c_void,
            len: usize,
            arg: *mut c_void,
        ) -> c_int {
            // SAFETY: `arg` is the `&mut F` passed below, alive for the walk; libpmemlog hands
            // out `len` readable bytes at `buf`.
            unsafe {
                let f = &mut *(arg as *mut F);
                f(std::slice::from_raw_parts(buf as *const u8, len));
            }
            1 // continue
        }
        // SAFETY: an open pool; the callback and its argument live for the whole call.
        unsafe {
            pmemlog_walk(
                self.0.as_ptr(),
                chunk,
                tramp::<F>,
                &mut f as *mut F as *mut c_void,
            )
        }
    }

    /// Appends until the pool is full (1 MiB at a time, then `unit`-byte pieces).
    pub fn fill(&self, unit: usize) {
        let big = vec![0x5au8; (1 << 20) / unit * unit];
        while self.free() >= big.len() && self.append(&big) {}
        let small = vec![0x5au8; unit];
        while self.free() >= unit && self.append(&small) {}
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: an open pool, closed once.
        unsafe { pmemlog_close(self.0.as_ptr()) }
    }
}

pub fn row(forced: bool) -> &'static str {
    if forced {
        "libpmemlog, PMEM_IS_PMEM_FORCE=1 (CPU flush)"
    } else {
        "libpmemlog, default (msync on /dev/shm)"
    }
}

pub fn appends(cfg: &Cfg, forced: bool) {
    let env = std::env::var("PMEM_IS_PMEM_FORCE").unwrap_or_default();
    assert_eq!(
        env == "1",
        forced,
        "child started with the wrong PMEM_IS_PMEM_FORCE"
    );
    let path = cfg.shm.join("pmemlog-append.pool");
    let slow = !forced;
    for size in sizes() {
        let p = payload(size);
        let ops = cfg.appends_per_rep(size, slow);
        let ns = run(cfg, &path, ops * size, ops, |pool| {
            assert!(
                pool.append(black_box(&p)),
                "pmemlog_append: {}",
                last_error()
            );
        });
        emit(row(forced), &append_case(size), size, 1, &ns);
    }
    let p = payload(BATCH_PAYLOAD);
    let iov: Vec<libc::iovec> = (0..BATCH_N)
        .map(|_| libc::iovec {
            iov_base: p.as_ptr() as *mut c_void,
            iov_len: p.len(),
        })
        .collect();
    let ops = cfg.appends_per_rep(BATCH_N * BATCH_PAYLOAD, slow);
    let ns = run(cfg, &path, ops * BATCH_N * BATCH_PAYLOAD, ops, |pool| {
        assert!(
            pool.appendv(black_box(&iov)),
            "pmemlog_appendv: {}",
            last_error()
        );
    });
    emit(
        row(forced),
        &batch_case(),
        BATCH_N * BATCH_PAYLOAD,
        BATCH_N,
        &ns,
    );
    let _ = std::fs::remove_file(&path);
}

/// libpmemlog with the same threads as `daxlog_cases::threaded` (CPU flush forced).
pub fn threaded(cfg: &Cfg) {
    let path = cfg.shm.join("pmemlog-threads.pool");
    for &size in THREAD_SIZES {
        let p = payload(size);
        for &n in THREADS {
            let ops = cfg.appends_per_rep(size, false).div_ceil(n) * n;
            let ns = run(cfg, &path, ops * size, 1, |pool| {
                on_threads(n, ops / n, || {
                    assert!(
                        pool.append(black_box(&p)),
                        "pmemlog_append: {}",
                        last_error()
                    );
                });
            });
            let per_append: Vec<f64> = ns.iter().map(|v| v / ops as f64).collect();
            emit(row(true), &threads_case(size, n), size, 1, &per_append);
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Times `ops` calls of `op` per repetition on a pool that was filled once (so that every page
/// of its mapping is faulted in) and is rewound (untimed) whenever the next repetition might
/// not fit.
fn run(cfg: &Cfg, path: &Path, per_rep: usize, ops: usize, mut op: impl FnMut(&Pool)) -> Vec<f64> {
    let size = round_page(
        (per_rep * (cfg.reps + 1) + (8 << 20))
            .min(MAX_LOG)
            .max(per_rep + (8 << 20)),
    );
    let pool = Pool::create(path, size);
    if cfg.prefault {
        pool.fill(64);
    }
    pool.rewind();
    let margin = per_rep + per_rep / 4 + 4096;
    let pool = RefCell::new(pool);
    let ns = time_reps(
        cfg.reps,
        ops,
        || {
            let p = pool.borrow();
            if p.free() < margin {
                p.rewind();
            }
        },
        || op(&pool.borrow()),
    );
    drop(pool);
    ns
}

/// Open + walk of full pools of the same sizes as daxlog's recovery logs; then a walk in
/// entry-sized chunks (the iteration workload).
pub fn recovery(cfg: &Cfg) {
    let row = "libpmemlog, pmemlog_open + walk (sums every word) / walk per entry";
    let path = cfg.shm.join("pmemlog-recover.pool");
    for cap in cfg.recovery_capacities() {
        for size in recovery_sizes() {
            {
                let pool = Pool::create(&path, cap);
                pool.fill(size);
            }
            let mut open_ns = Vec::new();
            let mut iter_ns = Vec::new();
            let mut used = 0;
            drop(Pool::open(&path)); // as for daxlog: one untimed open first
            for _ in 0..cfg.reps {
                let t = Instant::now();
                let pool = Pool::open(&path);
                let mut sum = 0u64;
                let mut bytes = 0usize;
                pool.walk(0, |b| {
                    sum = sum.wrapping_add(sum_words(b));
                    bytes += b.len();
                });
                open_ns.push(t.elapsed().as_nanos() as f64);
                black_box(sum);
                used = bytes;
                let t = Instant::now();
                let mut total = 0usize;
                pool.walk(size, |b| total += b.len());
                iter_ns.push(t.elapsed().as_nanos() as f64);
                assert_eq!(total, bytes);
            }
            let entries = used / size;
            emit(row, &recover_case(cap, size), used, entries, &open_ns);
            emit(row, &iterate_case(cap, size), used, entries, &iter_ns);
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Sums a byte range as u64 words: the cheapest scan that reads every byte.
pub fn sum_words(b: &[u8]) -> u64 {
    let mut chunks = b.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        acc = acc.wrapping_add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    for &x in chunks.remainder() {
        acc = acc.wrapping_add(x as u64);
    }
    acc
}
