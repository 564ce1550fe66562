//! Cache-line write-back and its fence: which flush instructions this CPU has, which lines a
//! range needs written back, and which fence orders the write-backs; and the read prefetch.
//!
//! The flush instruction is chosen once from CPUID, preferring the one that keeps the line in
//! the cache: `CLWB`, else `CLFLUSHOPT`, else `CLFLUSH` (leaf 7 EBX bit 24 and bit 23, leaf 1 EDX
//! bit 19; Intel SDM vol. 2A, "CPUID"). Stable Rust has no intrinsics for the first two, so
//! they are emitted with `asm!`.

use super::kind::Persistence;

/// Bytes in a cache line on every x86-64 CPU (Intel SDM vol. 3A, 11.5.3).
pub const CACHE_LINE: usize = 64;

/// The flush instructions this CPU supports, best first (read from CPUID once: in a virtual
/// machine each CPUID is a trap to the hypervisor, microseconds every open would pay).
pub fn supported() -> &'static [Persistence] {
    static SUPPORTED: std::sync::OnceLock<Vec<Persistence>> = std::sync::OnceLock::new();
    SUPPORTED.get_or_init(detect)
}

fn detect() -> Vec<Persistence> {
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
    for line in lines(ptr as usize, len) {
        // SAFETY: the caller guarantees the range is mapped and the instruction supported; the
        // line address is inside the mapping's first line of the range or later lines of it.
        unsafe { flush_line(mode, line as *const u8) };
    }
}

/// The addresses of the cache lines that cover `[addr, addr + len)`: from `addr` aligned down
/// to a line, to the line holding its last byte; none for an empty range. (A range that starts
/// or ends inside a line needs that whole line written back: missing the last line of an
/// unaligned range is a classic persistence bug.)
#[inline]
pub(crate) fn lines(addr: usize, len: usize) -> impl Iterator<Item = usize> {
    let start = addr & !(CACHE_LINE - 1);
    let end = if len == 0 { start } else { addr + len };
    (start..end).step_by(CACHE_LINE)
}

/// The fence [`fence`] issues for `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fence {
    /// Orders `CLWB`, `CLFLUSHOPT` and non-temporal stores.
    Sfence,
    /// Needed to order `CLFLUSH` on AMD CPUs.
    Mfence,
}

/// Which fence orders the flushes of `mode` (and non-temporal stores).
pub(crate) fn fence_for(mode: Persistence) -> Fence {
    match mode {
        Persistence::Clflush => Fence::Mfence,
        _ => Fence::Sfence,
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
        match fence_for(mode) {
            Fence::Mfence => std::arch::x86_64::_mm_mfence(),
            Fence::Sfence => std::arch::x86_64::_mm_sfence(),
        }
    }
}

/// Asks for the cache line holding `*p` to be loaded for reading (`PREFETCHT0`). A hint only:
/// `p` may point anywhere.
#[inline(always)]
pub fn prefetch_addr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address, and changes no memory. SSE (and
    // with it PREFETCHT0) is part of the x86-64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for the cache line holding `bytes[at]` to be loaded for reading (`PREFETCHT0`). A hint
/// only: `at` may lie past the end of `bytes` (then nothing is asked for).
#[inline(always)]
pub fn prefetch_read(bytes: &[u8], at: usize) {
    if at < bytes.len() {
        prefetch_addr(bytes.as_ptr().wrapping_add(at));
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
    fn a_range_is_covered_by_every_line_it_touches() {
        let l = CACHE_LINE;
        let lines = |a, n| lines(a, n).collect::<Vec<_>>();
        assert_eq!(lines(4096, 0), Vec::<usize>::new());
        assert_eq!(lines(4100, 0), Vec::<usize>::new());
        assert_eq!(lines(4096, 1), [4096]);
        assert_eq!(lines(4096, l), [4096]);
        assert_eq!(lines(4096, l + 1), [4096, 4096 + l]);
        // Unaligned start: the first line is aligned down; unaligned end: the last line counts.
        assert_eq!(lines(4096 + 60, 8), [4096, 4096 + l]);
        assert_eq!(lines(4096 + l - 1, 1), [4096]);
        assert_eq!(lines(4096 + 3, 290), [4096, 4160, 4224, 4288, 4352]);
        // Every byte of every range lies in one of its lines, and every line holds one.
        for a in 4096..4096 + 2 * l {
            for n in 0..3 * l {
                let ls = lines(a, n);
                for b in a..a + n {
                    assert!(ls.contains(&(b & !(l - 1))), "byte {b} of {a}+{n}");
                }
                for &x in &ls {
                    assert!(x + l > a && x < a + n, "line {x} outside {a}+{n}");
                }
            }
        }
    }

    #[test]
    fn clflush_is_ordered_by_mfence_the_others_by_sfence() {
        assert_eq!(fence_for(Persistence::Clflush), Fence::Mfence);
        assert_eq!(fence_for(Persistence::Clwb), Fence::Sfence);
        assert_eq!(fence_for(Persistence::ClflushOpt), Fence::Sfence);
    }

    #[test]
    fn every_supported_flush_runs() {
        let buf = vec![1u8; 300];
        for &m in supported() {
            // SAFETY: the buffer is live and the instruction is supported.
            unsafe { flush_range(m, buf.as_ptr().wrapping_add(3), 290) };
            fence(m);
        }
    }
}
