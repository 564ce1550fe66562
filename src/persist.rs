//! CPU persistence primitives: cache-line write-back, fences and non-temporal copies.
//!
//! The flush instruction is chosen once from CPUID, preferring the one that keeps the line in
//! the cache: `CLWB`, else `CLFLUSHOPT`, else `CLFLUSH` (leaf 7 EBX bit 24 and bit 23, leaf 1 EDX
//! bit 19; Intel SDM vol. 2A, "CPUID"). Stable Rust has no intrinsics for the first two, so
//! they are emitted with `asm!`.

use crate::media::Persistence;

/// Bytes in a cache line on every x86-64 CPU (Intel SDM vol. 3A, 11.5.3).
pub const CACHE_LINE: usize = 64;

/// The flush instructions this CPU supports, best first.
pub fn supported() -> Vec<Persistence> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__cpuid, __cpuid_count};
        // CPUID exists on every x86-64 CPU; leaf 0 reports the highest leaf, and leaf 7 is only
        // queried when it exists.
        let (max_leaf, leaf1_edx) = (__cpuid(0).eax, __cpuid(1).edx);
        if max_leaf >= 7 {
            let ebx = __cpuid_count(7, 0).ebx;
            if ebx & (1 << 24) != 0 {
                v.push(Persistence::Clwb);
            }
            if ebx & (1 << 23) != 0 {
                v.push(Persistence::ClflushOpt);
            }
        }
        if leaf1_edx & (1 << 19) != 0 {
            v.push(Persistence::Clflush);
        }
    }
    v
}

/// The best flush instruction of this CPU, if it has any.
pub fn best() -> Option<Persistence> {
    supported().first().copied()
}

/// Writes back every cache line covering `[ptr, ptr + len)` with the instruction of `mode`.
/// The range is aligned down to a line boundary first.
///
/// # Safety
/// The range lies inside one live mapping, and `mode` is supported by this CPU
/// (see [`supported`]).
#[inline]
pub unsafe fn flush_range(mode: Persistence, ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let start = ptr as usize & !(CACHE_LINE - 1);
    let end = ptr as usize + len;
    let mut line = start;
    while line < end {
        // SAFETY: the caller guarantees the range is mapped and the instruction supported; the
        // line address is inside the mapping's first line of the range or later lines of it.
        unsafe { flush_line(mode, line as *const u8) };
        line += CACHE_LINE;
    }
}

#[inline(always)]
unsafe fn flush_line(mode: Persistence, p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller guarantees `p` is in a live mapping and the instruction is supported.
    // The flush instructions only write back a line; they do not touch the stack or flags.
    unsafe {
        match mode {
            Persistence::Clwb => {
                std::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
            Persistence::ClflushOpt => {
                std::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags))
            }
            Persistence::Clflush => std::arch::x86_64::_mm_clflush(p),
            Persistence::Msync => {}
        }
    }
}

/// Orders every preceding flush and non-temporal store before what follows: `SFENCE` for the
/// weakly ordered flushes, `MFENCE` for `CLFLUSH` (which AMD orders only with MFENCE).
#[inline]
pub fn fence(mode: Persistence) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SFENCE and MFENCE are part of SSE2, which every x86-64 CPU has.
    unsafe {
        match mode {
            Persistence::Clflush => std::arch::x86_64::_mm_mfence(),
            _ => std::arch::x86_64::_mm_sfence(),
        }
    }
}

/// Asymmetric store-load barriers, for a publisher that must not stall and waiters that rarely
/// go to sleep. A publisher stores what it publishes, calls [`light_fence`], then reads
/// whether anybody sleeps; a waiter registers as a sleeper, calls [`heavy_fence`], then reads
/// what was published. Either the waiter sees the publication or the publisher sees the
/// sleeper. With Linux's `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` the heavy side makes
/// every running thread of the process execute a full barrier, so the light side needs none
/// (a publisher's `MFENCE` would wait for its store to reach a line the waiters keep reading).
/// Without it (old kernels, seccomp), both sides use `MFENCE`.
pub fn membarrier_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        // SAFETY: membarrier(2) takes no pointers; the command is from linux/membarrier.h.
        // Registration is per process and idempotent.
        let r = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                0,
                0,
            )
        };
        r == 0
    })
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// The publisher's side of the asymmetric barrier (see [`membarrier_ready`]).
#[inline]
pub fn light_fence() {
    use std::sync::atomic::{compiler_fence, fence, Ordering::SeqCst};
    if membarrier_ready() {
        compiler_fence(SeqCst);
    } else {
        fence(SeqCst);
    }
}

/// The waiter's side of the asymmetric barrier (see [`membarrier_ready`]). Costs a system call.
pub fn heavy_fence() {
    use std::sync::atomic::{fence, Ordering::SeqCst};
    fence(SeqCst);
    if membarrier_ready() {
        // SAFETY: as above; the process registered for this command in `membarrier_ready`.
        let r =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
        // Registered, so it cannot fail (membarrier(2), ERRORS); if it ever did, publishers
        // would only have had a compiler fence: stop rather than lose wake-ups.
        assert_eq!(r, 0, "membarrier failed after registration");
    }
}

/// Asks for the cache line of `x` in exclusive state (`PREFETCHW`), ahead of a read-modify-write
/// of it: the read before a compare-and-swap then does not fetch the line shared first, which
/// would cost a second transfer between cores when another thread wrote it last. A hint only.
#[inline(always)]
pub fn prefetch_for_write<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory or flags; `x` is a valid reference.
    // On a CPU without PREFETCHW (3DNowPrefetch) the encoding executes as a NOP.
    unsafe {
        std::arch::asm!("prefetchw [{0}]", in(reg) x as *const T, options(nostack, preserves_flags, readonly))
    };
}

/// Copies `src` to `dst` with non-temporal stores, bypassing the cache. Needs only a fence.
///
/// # Safety
/// `dst` is valid for `src.len()` bytes of writes and does not overlap `src`; `dst` and
/// `src.len()` are multiples of 8.
#[inline]
pub unsafe fn copy_nt(dst: *mut u8, src: &[u8]) {
    debug_assert!(dst as usize % 8 == 0 && src.len() % 8 == 0);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every store below targets `dst + i` with `i + width <= src.len()`, inside the
    // range the caller vouches for; 16-byte streaming stores are issued only at 16-byte aligned
    // addresses; reads of `src` stay inside the slice (unaligned loads are allowed).
    unsafe {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128, _mm_stream_si64};
        let n = src.len();
        let s = src.as_ptr();
        let mut i = 0;
        if dst as usize % 16 != 0 && n >= 8 {
            _mm_stream_si64(dst as *mut i64, (s as *const i64).read_unaligned());
            i = 8;
        }
        while i + 64 <= n {
            let a = _mm_loadu_si128(s.add(i) as *const __m128i);
            let b = _mm_loadu_si128(s.add(i + 16) as *const __m128i);
            let c = _mm_loadu_si128(s.add(i + 32) as *const __m128i);
            let d = _mm_loadu_si128(s.add(i + 48) as *const __m128i);
            _mm_stream_si128(dst.add(i) as *mut __m128i, a);
            _mm_stream_si128(dst.add(i + 16) as *mut __m128i, b);
            _mm_stream_si128(dst.add(i + 32) as *mut __m128i, c);
            _mm_stream_si128(dst.add(i + 48) as *mut __m128i, d);
            i += 64;
        }
        while i + 16 <= n {
            let a = _mm_loadu_si128(s.add(i) as *const __m128i);
            _mm_stream_si128(dst.add(i) as *mut __m128i, a);
            i += 16;
        }
        while i + 8 <= n {
            _mm_stream_si64(
                dst.add(i) as *mut i64,
                (s.add(i) as *const i64).read_unaligned(),
            );
            i += 8;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as documented on the function.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_cpu_has_a_flush_instruction() {
        let s = supported();
        assert!(
            s.contains(&Persistence::Clflush),
            "x86-64 always has CLFLUSH: {s:?}"
        );
    }

    #[test]
    fn copy_nt_copies_every_alignment_and_length() {
        let src: Vec<u8> = (0..600u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut dst = vec![0u64; 100];
        for off in [0usize, 8, 16, 24] {
            for len in (0..=512).step_by(8) {
                dst.iter_mut().for_each(|w| *w = 0);
                let base = dst.as_mut_ptr() as *mut u8;
                // SAFETY: `dst` holds 800 bytes; off + len <= 536; both multiples of 8.
                unsafe { copy_nt(base.add(off), &src[..len]) };
                fence(Persistence::Clwb);
                // SAFETY: reading back the initialised vector as bytes.
                let bytes = unsafe { std::slice::from_raw_parts(base, 800) };
                assert_eq!(&bytes[off..off + len], &src[..len], "off {off} len {len}");
                assert!(bytes[..off].iter().all(|&b| b == 0));
                assert!(bytes[off + len..].iter().all(|&b| b == 0));
            }
        }
    }

    #[test]
    fn every_supported_flush_runs() {
        let buf = vec![1u8; 300];
        for m in supported() {
            // SAFETY: the buffer is live and the instruction is supported.
            unsafe { flush_range(m, buf.as_ptr().wrapping_add(3), 290) };
            fence(m);
        }
    }
}

/// CRC-32C of a 20-byte header tail (`a` then `b` then `c`, little-endian), continuing `crc`
/// exactly like `crc32c::crc32c_append`; three SSE4.2 instructions where the CPU has them.
#[inline]
pub fn crc32c_header(crc: u32, a: u32, b: u64, c: u64) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2 (checked just above), the only requirement of the
        // `target_feature` function.
        return unsafe { crc32c_header_sse42(crc, a, b, c) };
    }
    let mut buf = [0u8; 20];
    buf[..4].copy_from_slice(&a.to_le_bytes());
    buf[4..12].copy_from_slice(&b.to_le_bytes());
    buf[12..].copy_from_slice(&c.to_le_bytes());
    crc32c::crc32c_append(crc, &buf)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_header_sse42(crc: u32, a: u32, b: u64, c: u64) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    // The CRC32 instruction computes the raw (uninverted) CRC-32C update; the crate's value is
    // the inverted register, so invert on the way in and out.
    let x = _mm_crc32_u32(!crc, a);
    let x = _mm_crc32_u64(x as u64, b);
    let x = _mm_crc32_u64(x, c);
    !(x as u32)
}

/// CRC-32C of `data`, continuing `crc` exactly like `crc32c::crc32c_append`. Buffers up to
/// 256 bytes are processed inline 8 bytes at a time with SSE4.2 (the crate's dispatch and
/// three-stream split cost more than the work at these sizes); larger ones go to the crate.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() <= 256 && std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2 (checked just above), the only requirement of the
        // `target_feature` function.
        return unsafe { crc32c_small_sse42(crc, data) };
    }
    crc32c::crc32c_append(crc, data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_small_sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut x = !crc as u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        x = _mm_crc32_u64(x, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let mut x = x as u32;
    for &b in words.remainder() {
        x = _mm_crc32_u8(x, b);
    }
    !x
}

#[cfg(test)]
mod crc_tests {
    #[test]
    fn small_crc_matches_the_crate() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 37 + 11) as u8).collect();
        for len in 0..=300 {
            for seed in [0u32, 1, 0xdead_beef] {
                assert_eq!(
                    super::crc32c_append(seed, &data[..len]),
                    crc32c::crc32c_append(seed, &data[..len]),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn header_crc_matches_the_crate() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for _ in 0..10_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (crc, a, b, c) = (seed as u32, (seed >> 13) as u32, seed.rotate_left(7), !seed);
            let mut buf = Vec::new();
            buf.extend_from_slice(&a.to_le_bytes());
            buf.extend_from_slice(&b.to_le_bytes());
            buf.extend_from_slice(&c.to_le_bytes());
            assert_eq!(
                super::crc32c_header(crc, a, b, c),
                crc32c::crc32c_append(crc, &buf)
            );
        }
    }
}
