//! The hardware roofline: the bytes of each daxlog entry (header, payload, padding) copied into
//! a prefaulted `MAP_SHARED` mapping of a file on /dev/shm and made durable the cheapest way the
//! CPU allows, with no log logic (no checksum, no lock, no bookkeeping).

use std::cell::Cell;
use std::ffi::c_void;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use daxlog::format::{entry_len, EntryHeader, HEADER_LEN};
use daxlog::Persistence;

use crate::common::*;

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Cached copy, one CLWB (else CLFLUSHOPT) per touched line, one SFENCE.
    Clwb,
    /// Non-temporal copy with SSE2 `_mm_stream_si128`, one SFENCE.
    NtSse2,
    /// Non-temporal copy with AVX2 `_mm256_stream_si256`, one SFENCE.
    NtAvx2,
    /// Cached copy, `msync(MS_SYNC)` of the touched pages.
    Msync,
    /// Each whole 64-byte line with MOVDIR64B (a 64-byte direct store), MOVNTI for the
    /// unaligned head and the tail, one SFENCE.
    Movdir64b,
}

impl Kind {
    pub fn row(self) -> &'static str {
        match self {
            Kind::Clwb => "roofline: copy + CLWB per line + SFENCE",
            Kind::NtSse2 => "roofline: NT SSE2 copy + SFENCE",
            Kind::NtAvx2 => "roofline: NT AVX2 copy + SFENCE",
            Kind::Msync => "roofline: copy + msync of the pages",
            Kind::Movdir64b => "roofline: MOVDIR64B per whole line (MOVNTI head/tail) + SFENCE",
        }
    }

    pub fn available(self) -> bool {
        match self {
            Kind::NtAvx2 => is_x86_feature_detected!("avx2"),
            Kind::Movdir64b => has_movdir64b(),
            _ => true,
        }
    }
}

/// A file on /dev/shm mapped `MAP_SHARED`, prefaulted.
pub struct Mapping {
    pub ptr: *mut u8,
    pub len: usize,
    _file: std::fs::File,
}

impl Mapping {
    pub fn new(cfg: &Cfg, len: usize) -> Mapping {
        let path = cfg.shm.join("roofline.bin");
        let _ = std::fs::remove_file(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create roofline file");
        file.set_len(len as u64).expect("size roofline file");
        let _ = std::fs::remove_file(&path); // the open file keeps the pages
                                             // SAFETY: a new shared mapping of a file we hold open, at a kernel-chosen address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap roofline file");
        let ptr = p as *mut u8;
        // SAFETY: the range is exactly the mapping just created.
        if cfg.prefault && !unsafe { populate_write(ptr, len) } {
            // Older kernel: touch every page instead.
            for off in (0..len).step_by(4096) {
                // SAFETY: inside the mapping, which nothing else references.
                unsafe { ptr.add(off).write_volatile(0) };
            }
        }
        Mapping {
            ptr,
            len,
            _file: file,
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr as *mut c_void, self.len) };
    }
}

/// The on-media image of one entry with a `size`-byte payload (header, payload, zero padding).
pub fn image(size: usize, lsn: u64, flags: u32) -> Vec<u8> {
    let mut v = vec![0u8; entry_len(size)];
    let h = EntryHeader {
        crc: 0x1234_5678,
        len: size as u32,
        lsn,
        epoch: 7,
        flags,
    };
    v[..HEADER_LEN].copy_from_slice(&h.encode());
    v[HEADER_LEN..HEADER_LEN + size].copy_from_slice(&payload(size));
    v
}

/// The on-media image of a batch of [`BATCH_N`] entries of [`BATCH_PAYLOAD`] bytes.
pub fn batch_image() -> Vec<u8> {
    (0..BATCH_N)
        .flat_map(|i| image(BATCH_PAYLOAD, i as u64 + 1, u32::from(i + 1 < BATCH_N)))
        .collect()
}

pub fn run(cfg: &Cfg, kind: Kind) {
    let flush = best_flush();
    let slow = matches!(kind, Kind::Msync);
    let mut cases: Vec<(String, usize, usize, Vec<u8>)> = sizes()
        .into_iter()
        .map(|s| (append_case(s), s, 1, image(s, 1, 0)))
        .collect();
    cases.push((
        batch_case(),
        BATCH_N * BATCH_PAYLOAD,
        BATCH_N,
        batch_image(),
    ));
    for (case, bytes, entries, img) in cases {
        check_copy(cfg, kind, flush, &img);
        let ops = cfg.appends_per_rep(bytes, slow);
        let ns = match kind {
            // SAFETY (all four): `persist_*` get a destination inside the mapping with room for
            // the image (see `time_on_mapping`), 8-byte aligned because images are multiples
            // of 8 bytes and the mapping is page-aligned.
            Kind::Clwb => {
                time_on_mapping(cfg, ops, &img, |d, s| unsafe { persist_clwb(flush, d, s) })
            }
            Kind::NtSse2 => time_on_mapping(cfg, ops, &img, |d, s| unsafe { persist_sse2(d, s) }),
            Kind::NtAvx2 => time_on_mapping(cfg, ops, &img, |d, s| unsafe { persist_avx2(d, s) }),
            Kind::Msync => time_on_mapping(cfg, ops, &img, |d, s| unsafe { persist_msync(d, s) }),
            // (Only where the CPU has MOVDIR64B: `Kind::available` before this group runs.)
            Kind::Movdir64b => {
                time_on_mapping(cfg, ops, &img, |d, s| unsafe { persist_movdir64b(d, s) })
            }
        };
        emit(kind.row(), &case, bytes, entries, &ns);
    }
}

/// Checks that `kind`'s copy stores exactly `img` (at an address 8 bytes past a line, so that
/// the head and tail paths run too), before it is timed.
fn check_copy(cfg: &Cfg, kind: Kind, flush: Flush, img: &[u8]) {
    let map = Mapping::new(cfg, round_page(img.len() + 4096));
    let d = map.ptr.wrapping_add(8);
    // SAFETY: `d` lies in the mapping with room for the image, 8-byte aligned; the CPU
    // supports the kind (`Kind::available` before this group runs).
    unsafe {
        match kind {
            Kind::Clwb => persist_clwb(flush, d, img),
            Kind::NtSse2 => persist_sse2(d, img),
            Kind::NtAvx2 => persist_avx2(d, img),
            Kind::Msync => persist_msync(d, img),
            Kind::Movdir64b => persist_movdir64b(d, img),
        }
    }
    // SAFETY: the image's bytes were just stored there and nothing else writes the mapping.
    let stored = unsafe { std::slice::from_raw_parts(d, img.len()) };
    assert!(
        stored == img,
        "{}: the copy differs from the image",
        kind.row()
    );
}

/// Row of the concurrent roofline.
pub const THREADS_ROW: &str =
    "roofline: fetch_add reservation + NT copy + SFENCE + in-order publish, no log logic";

/// The ceiling of any log that hands out space with one atomic instruction and acknowledges in
/// order: each of N threads takes `(ticket, offset)` with one `fetch_add`, copies the entry
/// image there with non-temporal stores, fences, waits until `published == ticket` and stores
/// `ticket + 1`. No checksum, no bounds, no wrap, no helping (so a descheduled thread holds
/// up every later one: with more threads than cores this is no longer a ceiling).
pub fn threaded(cfg: &Cfg) {
    use std::sync::atomic::{AtomicU64, Ordering};
    for &size in THREAD_SIZES {
        let img = image(size, 1, 0);
        for &n in THREADS {
            let ops = cfg.appends_per_rep(size, false).div_ceil(n) * n;
            let len = round_page(ops * img.len() + (1 << 20));
            let map = Mapping::new(cfg, len);
            let base = map.ptr as usize;
            let next = AtomicU64::new(0);
            let published = AtomicU64::new(0);
            let ns = time_reps(
                cfg.reps,
                1,
                || {
                    next.store(0, Ordering::Relaxed);
                    published.store(0, Ordering::Relaxed);
                },
                || {
                    on_threads(n, ops / n, || {
                        let t = next.fetch_add(1, Ordering::AcqRel);
                        let at = base + (t as usize % ops) * img.len();
                        // SAFETY: `at` lies in the mapping with room for one image (the
                        // mapping holds `ops` of them), 8-byte aligned (images are multiples of
                        // 8 bytes, the mapping is page-aligned); each ticket owns its slot.
                        unsafe { persist_sse2(at as *mut u8, &img) };
                        // (Spin, then yield: with more threads than cores the one we wait
                        // for may need this core; daxlog waits the same way.)
                        let mut spins = 0u32;
                        while published.load(Ordering::Acquire) != t {
                            spins += 1;
                            if spins < 200 {
                                std::hint::spin_loop();
                            } else {
                                std::thread::yield_now();
                            }
                        }
                        published.store(t + 1, Ordering::Release);
                    });
                },
            );
            let per_append: Vec<f64> = ns.iter().map(|v| v / ops as f64).collect();
            emit(THREADS_ROW, &threads_case(size, n), size, 1, &per_append);
        }
    }
}

/// Times `ops` persists of `img` at consecutive offsets of a fresh prefaulted mapping; each
/// repetition starts again at offset 0.
pub fn time_on_mapping(
    cfg: &Cfg,
    ops: usize,
    img: &[u8],
    persist: impl Fn(*mut u8, &[u8]),
) -> Vec<f64> {
    let len = round_page(ops * img.len() + 4096);
    let map = Mapping::new(cfg, len);
    let off = Cell::new(0usize);
    time_reps(
        cfg.reps,
        ops,
        || off.set(0),
        || {
            let o = off.get();
            assert!(o + img.len() <= map.len);
            // The pointer stays inside the mapping (checked above).
            persist(map.ptr.wrapping_add(o), std::hint::black_box(img));
            off.set(o + img.len());
        },
    )
}

#[derive(Clone, Copy)]
pub enum Flush {
    Clwb,
    ClflushOpt,
    Clflush,
}

/// The best flush instruction of this CPU.
pub fn best_flush() -> Flush {
    match daxlog::supported_flush_instructions().first() {
        Some(Persistence::Clwb) => Flush::Clwb,
        Some(Persistence::ClflushOpt) => Flush::ClflushOpt,
        _ => Flush::Clflush,
    }
}

/// Copy, write back every touched line, fence.
///
/// # Safety
/// `dst` is valid for `src.len()` bytes of writes in ordinary mapped memory; `flush` is
/// supported by this CPU.
#[inline(always)]
pub unsafe fn persist_clwb(flush: Flush, dst: *mut u8, src: &[u8]) {
    // SAFETY: `dst` is valid for `src.len()` bytes (caller) and cannot overlap `src`, which is
    // ordinary heap memory while `dst` is in the file mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
        flush_lines(flush, dst, src.len());
    }
    fence(flush);
}

/// Writes back every cache line overlapping `[p, p + len)`.
///
/// # Safety
/// The range is mapped; `flush` is supported by this CPU.
#[inline(always)]
pub unsafe fn flush_lines(flush: Flush, p: *const u8, len: usize) {
    let end = p as usize + len;
    let mut line = p as usize & !63;
    while line < end {
        let p = line as *const u8;
        // SAFETY: `p` is in a cache line that overlaps the range, so it is mapped; the flush
        // instructions only write back a line and touch neither stack nor flags.
        unsafe {
            match flush {
                Flush::Clwb => {
                    std::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
                }
                Flush::ClflushOpt => std::arch::asm!(
                    "clflushopt [{0}]",
                    in(reg) p,
                    options(nostack, preserves_flags)
                ),
                Flush::Clflush => std::arch::x86_64::_mm_clflush(p),
            }
        }
        line += 64;
    }
}

/// SFENCE (MFENCE after CLFLUSH, which AMD orders only with MFENCE).
#[inline(always)]
pub fn fence(flush: Flush) {
    // SAFETY: SFENCE and MFENCE are SSE/SSE2, present on every x86-64 CPU.
    unsafe {
        match flush {
            Flush::Clflush => std::arch::x86_64::_mm_mfence(),
            _ => std::arch::x86_64::_mm_sfence(),
        }
    }
}

/// Non-temporal copy, then SFENCE.
///
/// # Safety
/// As [`nt_copy_sse2`].
#[inline(always)]
pub unsafe fn persist_sse2(dst: *mut u8, src: &[u8]) {
    // SAFETY: forwarded.
    unsafe { nt_copy_sse2(dst, src) };
    fence(Flush::Clwb);
}

/// Non-temporal copy with 16-byte streaming stores (8-byte MOVNTI for an unaligned head and
/// the tail); no fence. The library's own kernel (`daxlog::kernels::copy_nt`), so that the
/// roofline copies as the log does.
///
/// # Safety
/// `dst` is 8-byte aligned and valid for `src.len()` bytes of writes; `src.len()` is a
/// multiple of 8.
#[inline(always)]
pub unsafe fn nt_copy_sse2(dst: *mut u8, src: &[u8]) {
    // SAFETY: `copy_nt` asks what this function's caller vouches for.
    unsafe { daxlog::kernels::copy_nt(dst, src) }
}

/// Non-temporal copy with 32-byte AVX2 streaming stores, then SFENCE.
///
/// # Safety
/// As [`nt_copy_sse2`]; the CPU has AVX2 (checked by [`Kind::available`] before this runs).
pub unsafe fn persist_avx2(dst: *mut u8, src: &[u8]) {
    // SAFETY: forwarded; the caller checked AVX2.
    unsafe { nt_copy_avx2(dst, src) };
    fence(Flush::Clwb);
}

/// Non-temporal copy with 32-byte AVX2 streaming stores (MOVNTI up to 32-byte alignment and
/// for the tail); no fence.
///
/// # Safety
/// As [`nt_copy_sse2`]; the CPU has AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn nt_copy_avx2(dst: *mut u8, src: &[u8]) {
    use std::arch::x86_64::*;
    let n = src.len();
    let s = src.as_ptr();
    let mut i = 0;
    // SAFETY: as in `nt_copy_sse2`, with 32-byte streaming stores only at 32-byte aligned
    // addresses.
    unsafe {
        while !(dst as usize + i).is_multiple_of(32) && i + 8 <= n {
            _mm_stream_si64(
                dst.add(i) as *mut i64,
                (s.add(i) as *const i64).read_unaligned(),
            );
            i += 8;
        }
        while i + 128 <= n {
            let a = _mm256_loadu_si256(s.add(i) as *const __m256i);
            let b = _mm256_loadu_si256(s.add(i + 32) as *const __m256i);
            let c = _mm256_loadu_si256(s.add(i + 64) as *const __m256i);
            let d = _mm256_loadu_si256(s.add(i + 96) as *const __m256i);
            _mm256_stream_si256(dst.add(i) as *mut __m256i, a);
            _mm256_stream_si256(dst.add(i + 32) as *mut __m256i, b);
            _mm256_stream_si256(dst.add(i + 64) as *mut __m256i, c);
            _mm256_stream_si256(dst.add(i + 96) as *mut __m256i, d);
            i += 128;
        }
        while i + 32 <= n {
            let a = _mm256_loadu_si256(s.add(i) as *const __m256i);
            _mm256_stream_si256(dst.add(i) as *mut __m256i, a);
            i += 32;
        }
        while i + 8 <= n {
            _mm_stream_si64(
                dst.add(i) as *mut i64,
                (s.add(i) as *const i64).read_unaligned(),
            );
            i += 8;
        }
    }
}

/// CPUID.(EAX=7,ECX=0):ECX bit 28: the CPU has MOVDIR64B.
pub fn has_movdir64b() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // (Leaf 7 only where the maximum basic leaf, leaf 0's EAX, reaches it.)
    __cpuid(0).eax >= 7 && (__cpuid_count(7, 0).ecx >> 28) & 1 == 1
}

/// MOVDIR64B for each whole line, MOVNTI for the head up to the first line boundary and for
/// the tail, then SFENCE (which orders the direct stores like non-temporal ones).
///
/// # Safety
/// As [`nt_copy_sse2`]; the CPU has MOVDIR64B ([`has_movdir64b`]).
pub unsafe fn persist_movdir64b(dst: *mut u8, src: &[u8]) {
    use std::arch::x86_64::_mm_stream_si64;
    let n = src.len();
    let s = src.as_ptr();
    let mut i = 0;
    // SAFETY: every store lies in `[dst, dst + n)` (caller); MOVNTI at 8-byte aligned
    // addresses (`dst` is 8-byte aligned, `i` steps by 8); MOVDIR64B at 64-byte aligned
    // destinations, reading 64 bytes of `src` that exist (`i + 64 <= n`).
    unsafe {
        while !(dst as usize + i).is_multiple_of(64) && i + 8 <= n {
            _mm_stream_si64(
                dst.add(i) as *mut i64,
                (s.add(i) as *const i64).read_unaligned(),
            );
            i += 8;
        }
        while i + 64 <= n {
            std::arch::asm!(
                "movdir64b {d}, [{s}]",
                d = in(reg) dst.add(i),
                s = in(reg) s.add(i),
                options(nostack, preserves_flags)
            );
            i += 64;
        }
        while i + 8 <= n {
            _mm_stream_si64(
                dst.add(i) as *mut i64,
                (s.add(i) as *const i64).read_unaligned(),
            );
            i += 8;
        }
    }
    fence(Flush::Clwb);
}

/// Cached copy, then `msync(MS_SYNC)` of the pages it touched.
///
/// # Safety
/// `dst` is valid for `src.len()` bytes of writes inside a shared file mapping.
pub unsafe fn persist_msync(dst: *mut u8, src: &[u8]) {
    // SAFETY: as in `persist_clwb`; msync covers pages of the same mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len());
        let lo = dst as usize & !4095;
        let hi = dst as usize + src.len();
        let rc = libc::msync(lo as *mut c_void, hi - lo, libc::MS_SYNC);
        assert_eq!(rc, 0, "msync");
    }
}

/// The least an iterator over a log of `n` entries from [`DATA_OFFSET`] must do: read each
/// entry's length from its header and step to the next one — no checks, no entry handed out.
/// Times one walk over the file at `path` (mapped read-only and shared, like a log) and returns
/// nanoseconds; the mapping is made and its pages touched before the clock starts.
pub fn header_walk(path: &std::path::Path, n: u64) -> f64 {
    use daxlog::format::DATA_OFFSET;
    let file = std::fs::File::open(path).expect("open log for the header walk");
    let len = file.metadata().expect("stat").len() as usize;
    // SAFETY: a new read-only shared mapping of a file we hold open, at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap log");
    let base = p as *const u8;
    // SAFETY: every page is inside the mapping just made; nothing writes the file meanwhile.
    let mut sum = 0u64;
    for off in (0..len).step_by(4096) {
        sum += unsafe { base.add(off).read_volatile() } as u64;
    }
    let t = std::time::Instant::now();
    let mut pos = DATA_OFFSET;
    for _ in 0..n {
        // SAFETY: `pos` is the offset of an entry of the log, which lies in the mapping; the
        // length field is 4 bytes at offset 4 of the header, 4-byte aligned.
        let len = unsafe { base.add(pos + 4).cast::<u32>().read_volatile() } as usize;
        sum = sum.wrapping_add(len as u64);
        pos += entry_len(len);
    }
    let ns = t.elapsed().as_nanos() as f64;
    std::hint::black_box(sum);
    // SAFETY: unmapping the mapping made above; nothing refers into it any more.
    unsafe { libc::munmap(p, len) };
    ns
}
