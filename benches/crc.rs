//! CRC-32C and non-temporal copy kernels, alone and fused: `cargo bench --bench crc`.
//!
//! For each size: the `crc32c` crate, `crc32c_append_fast`, `copy_nt` alone, the crate's CRC
//! then `copy_nt` (the append path today), and `copy_nt_crc32c`. The copies go into a
//! prefaulted `MAP_SHARED` mapping of a 64 MiB file on /dev/shm, each followed by an `SFENCE`,
//! at successive destinations 24 bytes past a 64-byte boundary (where a payload starts after the
//! header of a line-aligned entry). The source is one warm heap buffer. Each cell is the median
//! of `DAXLOG_CRC_RUNS` runs (31 by default) of about 4 MiB of work each; `DAXLOG_CRC_SIZES`
//! (e.g. `256,65536`) replaces the default sizes.
//!
//! The kernels are private to the library; it hands them to this benchmark through
//! `daxlog::kernels`, which is not part of its stable API.

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::time::Instant;

use daxlog::kernels as persist;

const SIZES: [usize; 5] = [256, 1024, 4096, 65536, 1 << 20];
const MAP_LEN: usize = 64 << 20;
/// `madvise` advice that faults pages in writable (Linux 5.14).
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// A prefaulted shared mapping of an unlinked file on /dev/shm.
struct Mapping {
    ptr: *mut u8,
    _file: std::fs::File,
}

impl Mapping {
    fn new() -> Mapping {
        // An unnamed file (O_TMPFILE, else an unpredictable name unlinked at once).
        let file = tempfile::tempfile_in("/dev/shm").expect("create a file on /dev/shm");
        file.set_len(MAP_LEN as u64).expect("size the file");
        // SAFETY: a new shared mapping of a file we hold open, at an address the kernel picks.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        // SAFETY: the range is the mapping just created.
        if unsafe { libc::madvise(p, MAP_LEN, MADV_POPULATE_WRITE) } != 0 {
            for off in (0..MAP_LEN).step_by(4096) {
                // SAFETY: inside the mapping, which nothing else references.
                unsafe { (p as *mut u8).add(off).write_volatile(0) };
            }
        }
        Mapping {
            ptr: p as *mut u8,
            _file: file,
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no pointer into it outlives `self`.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, MAP_LEN) };
    }
}

/// Successive destinations for `size`-byte copies, 24 bytes past a line boundary, wrapping.
struct Ring<'a> {
    map: &'a Mapping,
    at: usize,
    step: usize,
}

impl Ring<'_> {
    fn next(&mut self) -> *mut u8 {
        if self.at + self.step > MAP_LEN {
            self.at = 0;
        }
        // SAFETY: `at + step <= MAP_LEN`, and `step` covers 24 bytes plus the copy.
        let p = unsafe { self.map.ptr.add(self.at + 24) };
        self.at += self.step;
        p
    }
}

fn sfence() {
    // SAFETY: SFENCE is part of SSE, which every x86-64 CPU has.
    unsafe { std::arch::x86_64::_mm_sfence() }
}

/// Median nanoseconds per call of `f` over `runs` runs of `iters` calls.
fn median_ns(runs: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters {
        f(); // warm up
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("DAXLOG_CRC_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31);
    let map = Mapping::new();
    let names = [
        "crc32c crate",
        "crc32c_append_fast",
        "copy_nt + sfence",
        "crate crc + copy_nt + sfence",
        "copy_nt_crc32c + sfence",
    ];
    println!("| size | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    let sizes: Vec<usize> = match std::env::var("DAXLOG_CRC_SIZES") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => SIZES.to_vec(),
    };
    let src: Vec<u8> = (0..sizes.iter().copied().max().unwrap_or(0))
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(13) as u8)
        .collect();
    for size in sizes {
        assert!(size % 8 == 0, "sizes are multiples of 8");
        let s = &src[..size];
        let iters = ((4 << 20) / size).max(2);
        let mut ring = Ring {
            map: &map,
            at: 0,
            step: (size + 24).next_multiple_of(64) + 64,
        };
        let mut cells = Vec::new();
        cells.push(median_ns(runs, iters, || {
            black_box(crc32c::crc32c_append(black_box(7), black_box(s)));
        }));
        cells.push(median_ns(runs, iters, || {
            black_box(persist::crc32c_append_fast(black_box(7), black_box(s)));
        }));
        cells.push(median_ns(runs, iters, || {
            // SAFETY: the ring hands out 8-byte aligned destinations with room for `size`
            // bytes inside the mapping; `size` is a multiple of 8.
            unsafe { persist::copy_nt(ring.next(), s) };
            sfence();
        }));
        cells.push(median_ns(runs, iters, || {
            let c = crc32c::crc32c_append(black_box(7), s);
            // SAFETY: as above.
            unsafe { persist::copy_nt(ring.next(), s) };
            sfence();
            black_box(c);
        }));
        cells.push(median_ns(runs, iters, || {
            // SAFETY: as above.
            let c = unsafe { persist::copy_nt_crc32c(ring.next(), s, black_box(7)) };
            sfence();
            black_box(c);
        }));
        let row: Vec<String> = cells
            .iter()
            .map(|&ns| format!("{ns:.0} ns ({:.1} GB/s)", size as f64 / ns))
            .collect();
        println!("| {size} | {} |", row.join(" | "));
    }
}
