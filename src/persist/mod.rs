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
    }) && !MEMBARRIER_FAILED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Set if a `membarrier` call ever failed after registration (membarrier(2) says it cannot):
/// from then on both sides use `MFENCE`.
static MEMBARRIER_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg_attr(loom, allow(dead_code))]
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

/// The publisher's side of the asymmetric barrier (see [`membarrier_ready`]). The loom model
/// tests run a stand-in (a `SeqCst` fence, below, with the argument why it keeps this
/// contract).
#[cfg(not(loom))]
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
///
/// Never panics: waiters call it after their ticket is ready, where a panic would leave the
/// tickets after theirs unpublished. If the system call ever failed (it cannot once the
/// process registered, membarrier(2), ERRORS), publishers switch to `MFENCE` from then on; a
/// publisher that used only a compiler fence meanwhile can cost a waiter one lost wake-up,
/// which its timed wait (at most 10 ms for an appender) bounds.
///
/// The loom model tests run a stand-in (a `SeqCst` fence, below, with the argument why it
/// keeps this contract).
#[cfg(not(loom))]
pub fn heavy_fence() {
    use std::sync::atomic::{fence, Ordering::SeqCst};
    fence(SeqCst);
    if membarrier_ready() {
        // SAFETY: as above; the process registered for this command in `membarrier_ready`.
        let r =
            unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) };
        if r != 0 {
            MEMBARRIER_FAILED.store(true, SeqCst);
            fence(SeqCst);
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "daxlog: membarrier failed after registration; publishers now use MFENCE"
            );
        }
    }
}

/// Stand-in for [`light_fence`] under the loom model checker: a `SeqCst` fence. The pair of
/// stand-ins keeps the one contract the engine relies on. The fences are only used in the
/// store-buffering pattern: the publisher stores what it publishes, then reads `waiters`; a
/// sleeper increments `waiters`, then reads what is published; at least one of the two reads
/// must see the other side's write. In the real code `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
/// makes every running thread of the process execute a full barrier at some point `b` while
/// the call runs (a thread that is not running passes one in its context switch), and the
/// sleeper's own accesses are ordered around the call (it is a system call: full barriers on
/// entry and exit). If `b` falls after the publisher's store, the store is visible before the
/// call returns, so the sleeper's read sees it; otherwise `b` falls before the store and so,
/// the compiler fence keeping program order, before the publisher's read of `waiters`, which
/// then sees the increment the sleeper made before the call. A `SeqCst` fence on each side
/// gives the same either/or in C11 (of two `SeqCst` fences one precedes the other in the
/// single total order, and the read after the later one sees the write before the earlier
/// one), and no more: neither stand-in orders anything else, and the engine relies on these
/// fences for nothing else. (Without `membarrier` the real code uses exactly this, `MFENCE`
/// on both sides.)
#[cfg(loom)]
pub fn light_fence() {
    use crate::sync::mutants::{active, Mutant};
    if !active(Mutant::NoLightFence) {
        loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// Stand-in for [`heavy_fence`] under the loom model checker: a `SeqCst` fence (the argument
/// is at [`light_fence`]'s stand-in).
#[cfg(loom)]
pub fn heavy_fence() {
    use crate::sync::mutants::{active, Mutant};
    if !active(Mutant::NoHeavyFence) {
        loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// True if this CPU has `CMPXCHG16B` (CPUID leaf 1, ECX bit 13), which [`AtomicPair`] needs.
/// Every x86-64 CPU since 2006 has it.
pub fn has_cmpxchg16b() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::x86_64::__cpuid(1).ecx & (1 << 13) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// 128 bits updated together by `LOCK CMPXCHG16B`, inline (the appender's reservation word).
/// Loads read the two halves separately: a pair torn by a concurrent update only makes the
/// next [`AtomicPair::compare_exchange`] fail and return the current value, so loads are
/// meant as the expected value of a compare-and-swap, never as a snapshot on their own.
///
/// Only made once [`has_cmpxchg16b`] said yes (the log refuses to open otherwise).
///
/// The loom model tests run a stand-in (below) with the same contract: the compare-and-swap
/// is atomic on all 128 bits and a full barrier; loads read the halves separately.
#[cfg(not(loom))]
#[repr(C, align(16))]
#[derive(Debug)]
pub struct AtomicPair {
    lo: std::sync::atomic::AtomicU64,
    hi: std::sync::atomic::AtomicU64,
}

#[cfg(not(loom))]
impl AtomicPair {
    pub fn new(v: u128) -> Self {
        use std::sync::atomic::AtomicU64;
        AtomicPair {
            lo: AtomicU64::new(v as u64),
            hi: AtomicU64::new((v >> 64) as u64),
        }
    }

    /// Both halves, possibly from two different updates (see the type's documentation).
    #[inline]
    pub fn load_torn(&self) -> u128 {
        use std::sync::atomic::Ordering::Acquire;
        let lo = self.lo.load(Acquire);
        let hi = self.hi.load(Acquire);
        (hi as u128) << 64 | lo as u128
    }

    /// Stores `new` if the value is `current`; returns the value found either way (`Ok` if
    /// it was `current`). A full barrier, like every locked instruction.
    #[inline]
    pub fn compare_exchange(&self, current: u128, new: u128) -> Result<u128, u128> {
        #[cfg(target_arch = "x86_64")]
        {
            let (mut lo, mut hi) = (current as u64, (current >> 64) as u64);
            let ok: u8;
            // SAFETY: the pair is 16-byte aligned (repr(align(16))) and valid for reads and
            // writes for the lifetime of `&self`; both halves are atomics, so concurrent access
            // through them is allowed, and CMPXCHG16B writes the 16 bytes atomically. The CPU
            // has the instruction (checked before any pair is made). RBX cannot be named as an
            // operand, so it is swapped in and out around the instruction. The address goes in
            // a fixed register (RDI): the register allocator may pick RBX for a `reg` operand
            // (it did, once this was inlined into a larger function), and the swap would
            // then replace the address with the new value's low half.
            unsafe {
                std::arch::asm!(
                    "xchg {nlo}, rbx",
                    "lock cmpxchg16b xmmword ptr [rdi]",
                    "mov rbx, {nlo}",
                    "sete {ok}",
                    in("rdi") self as *const Self,
                    nlo = inout(reg) new as u64 => _,
                    ok = out(reg_byte) ok,
                    inout("rax") lo,
                    inout("rdx") hi,
                    in("rcx") (new >> 64) as u64,
                    options(nostack),
                );
            }
            let found = (hi as u128) << 64 | lo as u128;
            if ok != 0 {
                Ok(found)
            } else {
                Err(found)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("AtomicPair needs CMPXCHG16B")
    }
}

/// Stand-in for [`AtomicPair`] under the loom model checker, with the contract of the real
/// one:
/// - **Atomicity.** `LOCK CMPXCHG16B` compares and replaces all 16 bytes in one step; here a
///   loom mutex held across the comparison and both stores makes every compare-and-swap one
///   step with respect to every other, and the value it returns on failure is a consistent
///   pair, as the real instruction's is.
/// - **Ordering.** A locked instruction is a full barrier, and locked instructions are totally
///   ordered (Intel SDM vol. 3A, 9.2.3.8): everything before one compare-and-swap is visible
///   to everything after a later one. Here the mutex hands that order from one
///   compare-and-swap to the next (failed ones too: the real instruction writes even when the
///   comparison fails), and a `SeqCst` fence on each side of the critical section gives the
///   full barrier against the other `SeqCst` fences of the model.
/// - **Torn loads.** [`AtomicPair::load_torn`] is the same code as the real one: two
///   `Acquire` loads of the halves, outside the mutex, so loom lets each return any value
///   the memory model allows. The halves are stored high first, then low, so that a load that
///   sees a new low half also sees that update's high half (it synchronises with the low
///   store): the torn pairs are an older low half with a newer high one, exactly those the
///   real loads can return (they read the low half first, and an update writes both at once).
#[cfg(loom)]
#[derive(Debug)]
pub struct AtomicPair {
    lo: crate::sync::atomic::AtomicU64,
    hi: crate::sync::atomic::AtomicU64,
    cas: loom::sync::Mutex<()>,
}

#[cfg(loom)]
impl AtomicPair {
    pub fn new(v: u128) -> Self {
        use crate::sync::atomic::AtomicU64;
        AtomicPair {
            lo: AtomicU64::new(v as u64),
            hi: AtomicU64::new((v >> 64) as u64),
            cas: loom::sync::Mutex::new(()),
        }
    }

    /// Both halves, possibly from two different updates (as the real one).
    pub fn load_torn(&self) -> u128 {
        use std::sync::atomic::Ordering::Acquire;
        let lo = self.lo.load(Acquire);
        let hi = self.hi.load(Acquire);
        (hi as u128) << 64 | lo as u128
    }

    /// Stores `new` if the value is `current`; returns the value found either way.
    pub fn compare_exchange(&self, current: u128, new: u128) -> Result<u128, u128> {
        use crate::sync::mutants::{active, Mutant};
        use loom::sync::atomic::fence;
        use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
        // The mutant compares and stores without the lock: two appenders can both succeed
        // from the same value.
        let _g = (!active(Mutant::CasNotAtomic)).then(|| self.cas.lock().unwrap());
        fence(SeqCst);
        let found = (self.hi.load(Relaxed) as u128) << 64 | self.lo.load(Relaxed) as u128;
        let r = if found == current {
            self.hi.store((new >> 64) as u64, Release);
            self.lo.store(new as u64, Release);
            Ok(found)
        } else {
            Err(found)
        };
        fence(SeqCst);
        r
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

/// Copies `src` to `dst` with non-temporal stores, bypassing the cache. Needs only a fence.
///
/// # Safety
/// `dst` is valid for `src.len()` bytes of writes and does not overlap `src`; `dst` and
/// `src.len()` are multiples of 8.
#[inline]
pub unsafe fn copy_nt(dst: *mut u8, src: &[u8]) {
    debug_assert!((dst as usize).is_multiple_of(8) && src.len().is_multiple_of(8));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every store below targets `dst + i` with `i + width <= src.len()`, inside the
    // range the caller vouches for; 16-byte streaming stores are issued only at 16-byte aligned
    // addresses; reads of `src` stay inside the slice (unaligned loads are allowed).
    unsafe {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128, _mm_stream_si64};
        let n = src.len();
        let s = src.as_ptr();
        let mut i = 0;
        if !(dst as usize).is_multiple_of(16) && n >= 8 {
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
    fn atomic_pair_swaps_both_halves_together() {
        assert!(has_cmpxchg16b());
        let a = AtomicPair::new(5 << 64 | 7);
        assert_eq!(a.compare_exchange(7, 9), Err(5 << 64 | 7));
        assert_eq!(a.load_torn(), 5 << 64 | 7);
        assert_eq!(
            a.compare_exchange(5 << 64 | 7, 1 << 127 | 3),
            Ok(5 << 64 | 7)
        );
        assert_eq!(a.load_torn(), 1 << 127 | 3);
        // Many threads adding 1 to each half under compare-and-swap: no update is lost and
        // the halves never come apart.
        let n = 20_000u128;
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..n {
                        let mut cur = a.load_torn();
                        loop {
                            let next = (cur >> 64).wrapping_add(1) << 64 | (cur as u64 as u128 + 1);
                            match a.compare_exchange(cur, next) {
                                Ok(_) => break,
                                Err(now) => cur = now,
                            }
                        }
                    }
                });
            }
        });
        let v = a.load_torn();
        assert_eq!(v as u64 as u128, 3 + 4 * n);
        assert_eq!(v >> 64, (1u128 << 63) + 4 * n);
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
/// three-stream split cost more than the work at these sizes); larger ones go to
/// [`crc32c_append_fast`].
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() <= 256 && std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2 (checked just above), the only requirement of the
        // `target_feature` function.
        return unsafe { crc32c_small_sse42(crc, data) };
    }
    crc32c_append_fast(crc, data)
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

/// The checksums of two entries at once: for each of `(a, a_tail)` and `(b, b_tail)`, the
/// CRC-32C of the payload followed by the 20 header bytes after the checksum field, continuing
/// `seed`; each equals `crc32c_append(crc32c_append(seed, payload), tail)`. With SSE4.2 the two
/// computations are interleaved, 8 bytes at a time: the `CRC32` instruction has a latency of
/// three cycles and a throughput of one per cycle, so one chain leaves it idle two thirds of the
/// time. Meant for payloads up to a few hundred bytes (larger ones are faster one at a time with
/// [`crc32c_append_fast`]).
#[inline]
pub fn crc32c_entry_pair(
    seed: u32,
    a: &[u8],
    a_tail: &[u8; 20],
    b: &[u8],
    b_tail: &[u8; 20],
) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2 (checked just above), the only requirement of the
        // `target_feature` function.
        return unsafe { crc32c_entry_pair_sse42(seed, a, a_tail, b, b_tail) };
    }
    (
        crc32c::crc32c_append(crc32c::crc32c_append(seed, a), a_tail),
        crc32c::crc32c_append(crc32c::crc32c_append(seed, b), b_tail),
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_entry_pair_sse42(
    seed: u32,
    a: &[u8],
    a_tail: &[u8; 20],
    b: &[u8],
    b_tail: &[u8; 20],
) -> (u32, u32) {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};
    let word = |w: &[u8; 8]| u64::from_le_bytes(*w);
    let (x, y) = crc32c_pair_raw(!seed, a, b);
    let tail = |crc: u32, t: &[u8; 20]| {
        let (first, rest) = t.split_first_chunk::<4>().expect("20 bytes");
        let (mid, last) = rest.split_first_chunk::<8>().expect("16 bytes");
        let last: &[u8; 8] = last.try_into().expect("8 bytes");
        let r = _mm_crc32_u32(crc, u32::from_le_bytes(*first));
        let r = _mm_crc32_u64(r as u64, word(mid));
        _mm_crc32_u64(r, word(last)) as u32
    };
    (!tail(x, a_tail), !tail(y, b_tail))
}

/// The CRC-32C of `a` and of `b`, each continuing `seed`, like two calls of
/// [`crc32c_append`], computed interleaved with SSE4.2 (see [`crc32c_entry_pair`]). For
/// payloads up to a few hundred bytes (a small batch's checksums).
#[inline]
pub fn crc32c_pair(seed: u32, a: &[u8], b: &[u8]) -> (u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2 (checked just above), the only requirement of the
        // `target_feature` function.
        let (x, y) = unsafe { crc32c_pair_raw(!seed, a, b) };
        return (!x, !y);
    }
    (
        crc32c::crc32c_append(seed, a),
        crc32c::crc32c_append(seed, b),
    )
}

/// The raw (uninverted) CRC-32C registers after `a` and after `b`, both starting from `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_pair_raw(x: u32, a: &[u8], b: &[u8]) -> (u32, u32) {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let word = |w: &[u8; 8]| u64::from_le_bytes(*w);
    let (wa, ra) = a.as_chunks::<8>();
    let (wb, rb) = b.as_chunks::<8>();
    let both = wa.len().min(wb.len());
    let (mut x, mut y) = (x as u64, x as u64);
    for (p, q) in wa[..both].iter().zip(&wb[..both]) {
        x = _mm_crc32_u64(x, word(p));
        y = _mm_crc32_u64(y, word(q));
    }
    for p in &wa[both..] {
        x = _mm_crc32_u64(x, word(p));
    }
    for q in &wb[both..] {
        y = _mm_crc32_u64(y, word(q));
    }
    let (mut x, mut y) = (x as u32, y as u32);
    for &c in ra {
        x = _mm_crc32_u8(x, c);
    }
    for &c in rb {
        y = _mm_crc32_u8(y, c);
    }
    (x, y)
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
    fn pair_crc_matches_the_crate() {
        let data: Vec<u8> = (0..640u32).map(|i| (i * 41 + 7) as u8).collect();
        let lens = (0..=24).chain([63, 64, 65, 255, 256, 300]);
        for la in lens.clone() {
            for lb in lens.clone() {
                for seed in [0u32, 0xdead_beef] {
                    let (a, b) = (&data[1..1 + la], &data[320..320 + lb]);
                    assert_eq!(
                        super::crc32c_pair(seed, a, b),
                        (
                            crc32c::crc32c_append(seed, a),
                            crc32c::crc32c_append(seed, b)
                        ),
                        "lens {la} {lb}"
                    );
                }
            }
        }
    }

    #[test]
    fn entry_pair_crc_matches_the_crate() {
        let data: Vec<u8> = (0..640u32).map(|i| (i * 37 + 11) as u8).collect();
        let tails: [[u8; 20]; 2] = [[0x5a; 20], std::array::from_fn(|i| i as u8 * 13)];
        let lens = (0..=40).chain([63, 64, 65, 127, 128, 255, 256, 257, 300]);
        for la in lens.clone() {
            for lb in lens.clone() {
                for seed in [0u32, 0xdead_beef] {
                    let (a, b) = (&data[3..3 + la], &data[301..301 + lb]);
                    let want = |p: &[u8], t: &[u8; 20]| {
                        crc32c::crc32c_append(crc32c::crc32c_append(seed, p), t)
                    };
                    assert_eq!(
                        super::crc32c_entry_pair(seed, a, &tails[0], b, &tails[1]),
                        (want(a, &tails[0]), want(b, &tails[1])),
                        "lengths {la} and {lb}"
                    );
                }
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

// =============================================================================================
// CRC-32C by carry-less multiplication, and a non-temporal copy that checksums as it goes.
// =============================================================================================
//
// The crate's CRC-32C of a message `M` of `n` bits, continuing `crc`, is `!R` with
//
//     R = ((!crc) * x^n + M(x)) * x^32  mod P,      P = x^32 + 0x1EDC6F41 (Castagnoli),
//
// in *reflected* bit order: the first bit of the message (bit 0 of byte 0) is its highest power
// of x, and bit `i` of a 32-bit remainder is the coefficient of x^(31-i). The SSE4.2 `CRC32`
// instruction computes `R` directly from the register `!crc`, eight bytes at a time, but each
// step waits for the previous one.
//
// Folding (Gopal et al., "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ
// Instruction", Intel, 2009) cuts that chain. A 16-byte block loaded into a vector register is
// the polynomial B = H * x^64 + L, with H its first eight bytes (the low quadword) and L the
// last eight (the high quadword). Only B's remainder matters, so a block followed by D more bits
// of message may be replaced by any block with the same value of B * x^D mod P, for instance
//
//     H * (x^(64+D) mod P)  +  L * (x^D mod P)
//
// whose degree is below 96: two carry-less multiplications and an XOR move a block D bits
// forward, where it is XORed into the block found there. Several accumulators a fixed distance
// apart fold independently; at the end they are folded onto the last one, and the remaining
// 16 bytes go through the `CRC32` instruction from a zero register (the CRC of those bytes
// followed by the rest equals the CRC of the whole message). The starting register `!crc` is
// XORed into the first four bytes of the first block, which turns "continue `crc`" into "start
// from zero".
//
// `PCLMULQDQ` multiplies bit `i` by bit `j` into bit `i + j`. With a 64-bit reflected operand
// (bit `i` = x^(63-i)) and a 32-bit reflected constant `c` in the low half (bit `j` = x^(31-j)),
// bit `k` of the product holds the coefficient of x^(94-k) of `H * c`; read as a reflected
// 128-bit block (bit `k` = x^(127-k)) that is `H * c * x^33`. So the constants are x^(D+31) mod P
// for H and x^(D-33) mod P for L ([`fold_pair`]).

/// The reflected CRC-32C polynomial: P without its x^32 term, bit `i` holding x^(31-i).
const CRC32C_POLY: u32 = 0x82F6_3B78;

/// `x^n mod P` in reflected form (bit `i` is the coefficient of x^(31-i)), bit by bit.
const fn xpow_mod_p(n: u32) -> u32 {
    let mut v: u32 = 1 << 31; // x^0
    let mut i = 0;
    while i < n {
        // Times x: every coefficient moves one bit down; the one of x^31 (bit 0) becomes x^32,
        // which is congruent to P - x^32.
        v = (v >> 1) ^ if v & 1 != 0 { CRC32C_POLY } else { 0 };
        i += 1;
    }
    v
}

/// The constants that fold a 16-byte block `bits` bits forward, in the order of the halves
/// they multiply: x^(bits+31) mod P for the first eight bytes, x^(bits-33) mod P for the last.
const fn fold_pair(bits: u32) -> [u64; 2] {
    [xpow_mod_p(bits + 31) as u64, xpow_mod_p(bits - 33) as u64]
}

/// Onto the next block.
const FOLD_128: [u64; 2] = fold_pair(128);
/// Two and three blocks on: merging the four lanes of a 512-bit register.
const FOLD_256: [u64; 2] = fold_pair(256);
const FOLD_384: [u64; 2] = fold_pair(384);
/// One 64-byte group on: four 128-bit accumulators, or one lane of a 512-bit one.
const FOLD_512: [u64; 2] = fold_pair(512);
/// 256 bytes on: four 512-bit accumulators.
const FOLD_2048: [u64; 2] = fold_pair(2048);

/// Inputs below this many bytes are copied with [`copy_nt`] after a separate checksum. The
/// 512-bit kernel folds only with 256 bytes left after aligning the destination (up to 56
/// bytes), and its word-by-word loop below that is slower than the two passes; from 320 bytes
/// on, fused costs about what [`copy_nt`] alone does (measured on Zen 4 without the fence).
const FUSED_MIN: usize = 320;

/// Which implementation the CPU allows, best last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// The `crc32c` crate and [`copy_nt`], one after the other.
    Portable,
    /// 128-bit `PCLMULQDQ`, SSE4.2 `CRC32` and SSE2 non-temporal stores; used for the fused
    /// copy only (see [`crc32c_append_fast`]).
    Clmul128,
    /// 512-bit `VPCLMULQDQ` and AVX-512F non-temporal stores.
    Clmul512,
}

impl Kernel {
    /// The best kernel of this CPU, detected once.
    #[inline]
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::atomic::{AtomicU8, Ordering};
            // 0: not detected yet; otherwise 1 + the kernel's index.
            static BEST: AtomicU8 = AtomicU8::new(0);
            match BEST.load(Ordering::Relaxed) {
                1 => Kernel::Portable,
                2 => Kernel::Clmul128,
                3 => Kernel::Clmul512,
                _ => {
                    let base = std::is_x86_feature_detected!("pclmulqdq")
                        && std::is_x86_feature_detected!("sse4.2");
                    let k = if base
                        && std::is_x86_feature_detected!("avx512f")
                        && std::is_x86_feature_detected!("vpclmulqdq")
                    {
                        Kernel::Clmul512
                    } else if base {
                        Kernel::Clmul128
                    } else {
                        Kernel::Portable
                    };
                    BEST.store(k as u8 + 1, Ordering::Relaxed);
                    k
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Kernel::Portable
    }

    /// The kernels this CPU can run, the portable one first.
    #[cfg(test)]
    fn available() -> Vec<Kernel> {
        match Kernel::best() {
            Kernel::Portable => vec![Kernel::Portable],
            Kernel::Clmul128 => vec![Kernel::Portable, Kernel::Clmul128],
            Kernel::Clmul512 => vec![Kernel::Portable, Kernel::Clmul128, Kernel::Clmul512],
        }
    }
}

/// CRC-32C of `data`, continuing `crc`, exactly like `crc32c::crc32c_append`; by 512-bit
/// carry-less multiplication where the CPU has it (2.1 to 2.8 times the crate's speed from 320
/// bytes to 1 MiB, measured on Zen 4), else by the crate.
#[inline]
pub fn crc32c_append_fast(crc: u32, data: &[u8]) -> u32 {
    match Kernel::best() {
        // The 128-bit fold alone is slower than the crate's three interleaved CRC32 streams:
        // 16.5 against 30 GB/s on Zen 4 (forced there), where a PCLMULQDQ issues about every
        // other cycle. Fused with a copy it at least saves a pass over the source.
        Kernel::Clmul128 => crc32c::crc32c_append(crc, data),
        // SAFETY: the kernel is this CPU's best.
        k => unsafe { crc_with(k, crc, data) },
    }
}

/// Copies `src` to `dst` with non-temporal stores, like [`copy_nt`], and returns
/// `crc32c::crc32c_append(crc, src)`, computed from the same loads in one pass. Needs only a
/// fence; it issues none.
///
/// As with [`copy_nt`], `src.len()` must be a multiple of 8; if it is not (release builds do not
/// check), the trailing `src.len() % 8` bytes are not stored, while the checksum still covers all
/// of `src`.
///
/// # Safety
/// `dst` is 8-byte aligned, valid for `src.len()` bytes of writes and does not overlap `src`;
/// `src.len()` is a multiple of 8.
#[inline]
pub unsafe fn copy_nt_crc32c(dst: *mut u8, src: &[u8], crc: u32) -> u32 {
    debug_assert!((dst as usize).is_multiple_of(8) && src.len().is_multiple_of(8));
    // SAFETY: the caller's contract is the one `copy_crc_with` needs; the kernel is this CPU's.
    unsafe { copy_crc_with(Kernel::best(), dst, src, crc) }
}

/// [`crc32c_append_fast`] with a chosen kernel.
///
/// # Safety
/// `kernel` is one this CPU can run ([`Kernel::best`] or below).
#[inline]
unsafe fn crc_with(kernel: Kernel, crc: u32, data: &[u8]) -> u32 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller vouches for the CPU features; a null destination is never
        // written when `STORE` is false.
        Kernel::Clmul512 => unsafe {
            clmul::crc_copy_512::<false>(std::ptr::null_mut(), data, crc)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Clmul128 => unsafe {
            clmul::crc_copy_128::<false>(std::ptr::null_mut(), data, crc)
        },
        _ => crc32c::crc32c_append(crc, data),
    }
}

/// [`copy_nt_crc32c`] with a chosen kernel. Stores the first `src.len() / 8 * 8` bytes and
/// returns the checksum of all of `src`.
///
/// # Safety
/// `dst` is 8-byte aligned, valid for `src.len() / 8 * 8` bytes of writes and does not overlap
/// `src`; `kernel` is one this CPU can run ([`Kernel::best`] or below).
unsafe fn copy_crc_with(kernel: Kernel, dst: *mut u8, src: &[u8], crc: u32) -> u32 {
    let whole = &src[..src.len() & !7];
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract covers the kernel's: the CPU features, and `dst`
        // 8-byte aligned and valid for the whole words of `src`.
        Kernel::Clmul512 if src.len() >= FUSED_MIN => unsafe {
            clmul::crc_copy_512::<true>(dst, src, crc)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Clmul128 if src.len() >= FUSED_MIN => unsafe {
            clmul::crc_copy_128::<true>(dst, src, crc)
        },
        _ => {
            let c = crc32c_append(crc, src);
            // SAFETY: `dst` is 8-byte aligned and valid for `whole.len()` bytes, a multiple of 8,
            // and does not overlap `src`.
            unsafe { copy_nt(dst, whole) };
            c
        }
    }
}

/// The x86-64 kernels. Both have the same shape: whole 8-byte words with `MOVNTI` and `CRC32`
/// until the destination is 64-byte aligned, then 16- or 64-byte vectors that are loaded once,
/// stored with aligned non-temporal stores and folded into the accumulators, then the last
/// words and bytes with `CRC32` again.
///
/// The AVX-512 and VPCLMULQDQ intrinsics are stable since Rust 1.89.
#[cfg(target_arch = "x86_64")]
mod clmul {
    use super::{FOLD_128, FOLD_2048, FOLD_256, FOLD_384, FOLD_512};
    use std::arch::x86_64::*;

    /// A fold constant pair as a 128-bit register (first element in the low quadword).
    #[inline]
    #[target_feature(enable = "sse2")]
    fn pair(k: [u64; 2]) -> __m128i {
        _mm_set_epi64x(k[1] as i64, k[0] as i64)
    }

    /// `x` moved forward by the distance of `k`, plus `y`.
    #[inline]
    #[target_feature(enable = "pclmulqdq")]
    fn fold(x: __m128i, k: __m128i, y: __m128i) -> __m128i {
        let hi = _mm_clmulepi64_si128(x, k, 0x00);
        let lo = _mm_clmulepi64_si128(x, k, 0x11);
        _mm_xor_si128(_mm_xor_si128(hi, lo), y)
    }

    /// The same on the four lanes of a 512-bit register; `0x96` is a three-way XOR.
    #[inline]
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    fn fold4(x: __m512i, k: __m512i, y: __m512i) -> __m512i {
        let hi = _mm512_clmulepi64_epi128(x, k, 0x00);
        let lo = _mm512_clmulepi64_epi128(x, k, 0x11);
        _mm512_ternarylogic_epi64(hi, lo, y, 0x96)
    }

    /// The raw CRC register (not inverted) after the 16 bytes of `x`, from zero.
    #[inline]
    #[target_feature(enable = "sse4.2")]
    fn crc_block(x: __m128i) -> u64 {
        let r = _mm_crc32_u64(0, _mm_cvtsi128_si64(x) as u64);
        _mm_crc32_u64(r, _mm_extract_epi64(x, 1) as u64)
    }

    /// Stores (if `STORE`) and checksums 8-byte words from `*i` while `cond(dst + *i)` holds
    /// and a whole word is left, continuing the raw register `r`.
    ///
    /// # Safety
    /// With `STORE`, `dst` is valid for every whole word of `src` and 8-byte aligned.
    #[inline]
    #[target_feature(enable = "sse4.2")]
    unsafe fn words<const STORE: bool>(
        dst: *mut u8,
        src: &[u8],
        i: &mut usize,
        mut r: u64,
        cond: impl Fn(usize) -> bool,
    ) -> u64 {
        while *i + 8 <= src.len() && cond(dst as usize + *i) {
            let w = u64::from_le_bytes(src[*i..*i + 8].try_into().expect("8 bytes"));
            if STORE {
                // SAFETY: `*i + 8 <= src.len()` and `dst` is valid for the whole words of
                // `src` and 8-byte aligned, so this word is in range and aligned.
                unsafe { _mm_stream_si64(dst.add(*i) as *mut i64, w as i64) };
            }
            r = _mm_crc32_u64(r, w);
            *i += 8;
        }
        r
    }

    /// The end of both kernels: whole words, then the bytes of a partial word (not stored).
    ///
    /// # Safety
    /// As for [`words`].
    #[inline]
    #[target_feature(enable = "sse4.2")]
    unsafe fn tail<const STORE: bool>(dst: *mut u8, src: &[u8], mut i: usize, r: u64) -> u32 {
        // SAFETY: passed on from the caller.
        let mut r = unsafe { words::<STORE>(dst, src, &mut i, r, |_| true) } as u32;
        for &b in &src[i..] {
            r = _mm_crc32_u8(r, b);
        }
        !r
    }

    /// CRC-32C of `src` continuing `crc`, with 128-bit folding; with `STORE`, also copies the
    /// whole words of `src` to `dst` with non-temporal stores.
    ///
    /// # Safety
    /// The CPU has PCLMULQDQ and SSE4.2. With `STORE`, `dst` is 8-byte aligned, valid for
    /// `src.len() / 8 * 8` bytes of writes and does not overlap `src`.
    #[target_feature(enable = "pclmulqdq,sse4.2")]
    pub(super) unsafe fn crc_copy_128<const STORE: bool>(
        dst: *mut u8,
        src: &[u8],
        crc: u32,
    ) -> u32 {
        let (n, s) = (src.len(), src.as_ptr());
        let mut i = 0;
        let mut r = !crc as u64;
        if STORE {
            // SAFETY: the caller's contract is `words`'s.
            r = unsafe { words::<STORE>(dst, src, &mut i, r, |a| a % 64 != 0) };
        }
        if n - i >= 128 {
            // SAFETY: every load reads 16 bytes at `s + j` with `j + 16 <= n`; every store
            // writes 16 bytes at `dst + j`, 16-byte aligned (64 at the first, as the head loop
            // ran until alignment), with `j + 16 <= n` and so within the whole words of `src`.
            unsafe {
                let load = |j: usize| _mm_loadu_si128(s.add(j) as *const __m128i);
                let store = |j: usize, v: __m128i| {
                    if STORE {
                        _mm_stream_si128(dst.add(j) as *mut __m128i, v)
                    }
                };
                let mut x = [load(i), load(i + 16), load(i + 32), load(i + 48)];
                for (j, &v) in x.iter().enumerate() {
                    store(i + 16 * j, v);
                }
                x[0] = _mm_xor_si128(x[0], _mm_cvtsi32_si128(r as i32));
                i += 64;
                let k = pair(FOLD_512);
                while i + 64 <= n {
                    for (j, acc) in x.iter_mut().enumerate() {
                        let y = load(i + 16 * j);
                        store(i + 16 * j, y);
                        *acc = fold(*acc, k, y);
                    }
                    i += 64;
                }
                let k = pair(FOLD_128);
                let mut a = fold(fold(fold(x[0], k, x[1]), k, x[2]), k, x[3]);
                while i + 16 <= n {
                    let y = load(i);
                    store(i, y);
                    a = fold(a, k, y);
                    i += 16;
                }
                r = crc_block(a);
            }
        }
        // SAFETY: the caller's contract is `tail`'s.
        unsafe { tail::<STORE>(dst, src, i, r) }
    }

    /// [`crc_copy_128`] with four 512-bit accumulators (256 bytes per step) and 64-byte
    /// non-temporal stores.
    ///
    /// # Safety
    /// The CPU has AVX-512F, VPCLMULQDQ, PCLMULQDQ and SSE4.2. With `STORE`, `dst` is 8-byte
    /// aligned, valid for `src.len() / 8 * 8` bytes of writes and does not overlap `src`.
    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
    pub(super) unsafe fn crc_copy_512<const STORE: bool>(
        dst: *mut u8,
        src: &[u8],
        crc: u32,
    ) -> u32 {
        let (n, s) = (src.len(), src.as_ptr());
        let mut i = 0;
        let mut r = !crc as u64;
        if STORE {
            // SAFETY: the caller's contract is `words`'s.
            r = unsafe { words::<STORE>(dst, src, &mut i, r, |a| a % 64 != 0) };
        }
        if n - i >= 256 {
            // SAFETY: every load reads 64 (or 16) bytes at `s + j` with `j + 64 <= n` (or
            // `j + 16 <= n`); every store writes as many bytes at `dst + j` under the same bound,
            // so within the whole words of `src`, at a 64-byte aligned address for 64-byte
            // stores (the head loop ran until alignment and `j` advances by 64) and a 16-byte
            // aligned one for 16-byte stores.
            unsafe {
                let load = |j: usize| _mm512_loadu_si512(s.add(j) as *const __m512i);
                let store = |j: usize, v: __m512i| {
                    if STORE {
                        _mm512_stream_si512(dst.add(j) as *mut __m512i, v)
                    }
                };
                let mut x = [load(i), load(i + 64), load(i + 128), load(i + 192)];
                for (j, &v) in x.iter().enumerate() {
                    store(i + 64 * j, v);
                }
                let seed = _mm512_zextsi128_si512(_mm_cvtsi32_si128(r as i32));
                x[0] = _mm512_xor_si512(x[0], seed);
                i += 256;
                let k = _mm512_broadcast_i32x4(pair(FOLD_2048));
                while i + 256 <= n {
                    for (j, acc) in x.iter_mut().enumerate() {
                        let y = load(i + 64 * j);
                        store(i + 64 * j, y);
                        *acc = fold4(*acc, k, y);
                    }
                    i += 256;
                }
                let k = _mm512_broadcast_i32x4(pair(FOLD_512));
                let mut a = fold4(fold4(fold4(x[0], k, x[1]), k, x[2]), k, x[3]);
                while i + 64 <= n {
                    let y = load(i);
                    store(i, y);
                    a = fold4(a, k, y);
                    i += 64;
                }
                // The four lanes onto the last: lanes 0, 1, 2 move 384, 256, 128 bits on; the
                // zero constant of lane 3 clears it, and it is added back unmoved.
                let (k384, k256, k128) = (FOLD_384, FOLD_256, FOLD_128);
                let k = _mm512_set_epi64(
                    0,
                    0,
                    k128[1] as i64,
                    k128[0] as i64,
                    k256[1] as i64,
                    k256[0] as i64,
                    k384[1] as i64,
                    k384[0] as i64,
                );
                let t = fold4(a, k, _mm512_setzero_si512());
                let mut b = _mm_xor_si128(
                    _mm_xor_si128(
                        _mm512_extracti32x4_epi32(t, 0),
                        _mm512_extracti32x4_epi32(t, 1),
                    ),
                    _mm_xor_si128(
                        _mm512_extracti32x4_epi32(t, 2),
                        _mm512_extracti32x4_epi32(a, 3),
                    ),
                );
                let k = pair(FOLD_128);
                while i + 16 <= n {
                    let y = _mm_loadu_si128(s.add(i) as *const __m128i);
                    if STORE {
                        _mm_stream_si128(dst.add(i) as *mut __m128i, y);
                    }
                    b = fold(b, k, y);
                    i += 16;
                }
                r = crc_block(b);
            }
        }
        // SAFETY: the caller's contract is `tail`'s.
        unsafe { tail::<STORE>(dst, src, i, r) }
    }
}

#[cfg(test)]
mod fold_tests {
    use super::*;

    /// x^n mod P the slow way, in plain bit order (bit `i` is x^i), then reflected.
    fn xpow_mod_p_plain(n: u32) -> u32 {
        const P: u64 = 0x1_1EDC_6F41;
        let mut v: u64 = 1;
        for _ in 0..n {
            v <<= 1;
            if v & (1 << 32) != 0 {
                v ^= P;
            }
        }
        (v as u32).reverse_bits()
    }

    #[test]
    fn fold_constants_match_a_bitwise_computation() {
        assert_eq!(CRC32C_POLY, 0x1EDC_6F41u32.reverse_bits());
        for (k, bits) in [
            (FOLD_128, 128),
            (FOLD_256, 256),
            (FOLD_384, 384),
            (FOLD_512, 512),
            (FOLD_2048, 2048),
        ] {
            assert_eq!(k[0], xpow_mod_p_plain(bits + 31) as u64, "x^({bits}+31)");
            assert_eq!(k[1], xpow_mod_p_plain(bits - 33) as u64, "x^({bits}-33)");
        }
        // The CRC of a one bit followed by zeros is a power of x: a cross-check of the
        // reflected form against the crate (the register is zero for a seed of !0).
        for n in [0u32, 1, 7, 31, 32, 95, 159, 479, 543] {
            let mut msg = vec![0u8; n as usize / 8 + 1];
            msg[0] = 1; // x^(8 * len - 1)
            let raw = !crc32c::crc32c_append(!0, &msg);
            assert_eq!(raw, xpow_mod_p(8 * msg.len() as u32 - 1 + 32), "n {n}");
        }
    }

    /// Test data: a fixed pseudo-random byte stream.
    fn bytes(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    const SEEDS: [u32; 3] = [0, 0xFFFF_FFFF, 0x5A17_C3E9];
    const LARGE: [usize; 6] = [4095, 4096, 4097, 65536, 65536 + 24, (1 << 20) + 13];

    fn lengths() -> impl Iterator<Item = usize> {
        (0..=2048).chain(LARGE)
    }

    #[test]
    fn fast_crc_matches_the_crate() {
        let data = bytes((1 << 20) + 64);
        for kernel in Kernel::available() {
            for len in lengths() {
                for mis in 0..8 {
                    for seed in SEEDS {
                        let d = &data[mis..mis + len];
                        let want = crc32c::crc32c_append(seed, d);
                        // SAFETY: the kernel is one this CPU runs.
                        let got = unsafe { crc_with(kernel, seed, d) };
                        assert_eq!(got, want, "{kernel:?} len {len} +{mis}");
                    }
                }
            }
        }
        for len in lengths() {
            let d = &data[3..3 + len];
            assert_eq!(crc32c_append_fast(7, d), crc32c::crc32c_append(7, d));
            assert_eq!(crc32c_append(7, d), crc32c::crc32c_append(7, d));
        }
    }

    /// Runs `f` for each length, source misalignment, destination offset and seed, into a
    /// 64-byte aligned buffer filled with a guard pattern, and checks the checksum, the copied
    /// bytes (the whole words of the source) and that nothing else changed.
    fn check_copy(name: &str, lens: &[usize], f: impl Fn(*mut u8, &[u8], u32) -> u32) {
        const GUARD: u8 = 0xA5;
        let max = lens.iter().max().copied().unwrap_or(0);
        let data = bytes(max + 8);
        let mut buf = vec![0u64; (max + 64 + 64 + 128) / 8];
        let base = buf.as_mut_ptr() as *mut u8;
        let lead = base.align_offset(64) + 64;
        for &len in lens {
            let area = lead + 56 + len + 64;
            for mis in 0..8 {
                for off in [0usize, 8, 16, 24, 56] {
                    for seed in SEEDS {
                        let src = &data[mis..mis + len];
                        // SAFETY: `area` bytes fit in `buf`; the slice is the only reference
                        // to it while it lives.
                        let b = unsafe { std::slice::from_raw_parts_mut(base, area) };
                        b.fill(GUARD);
                        let got = f(b[lead + off..].as_mut_ptr(), src, seed);
                        fence(Persistence::Clwb);
                        let what = format!("{name}: len {len} +{mis} dst +{off} seed {seed:#x}");
                        assert_eq!(got, crc32c::crc32c_append(seed, src), "{what}");
                        let stored = len / 8 * 8;
                        let (before, rest) = b.split_at(lead + off);
                        let (copied, after) = rest.split_at(stored);
                        assert_eq!(copied, &src[..stored], "{what}");
                        assert!(before.iter().all(|&x| x == GUARD), "{what}: before");
                        assert!(after.iter().all(|&x| x == GUARD), "{what}: after");
                    }
                }
            }
        }
    }

    #[test]
    fn every_kernel_copies_and_checksums() {
        let lens: Vec<usize> = lengths().collect();
        for kernel in Kernel::available() {
            // SAFETY: `check_copy` passes an 8-byte aligned destination with room for every
            // whole word of `src`, in its own buffer; the kernel is one this CPU runs.
            check_copy(&format!("{kernel:?}"), &lens, |d, s, c| unsafe {
                copy_crc_with(kernel, d, s, c)
            });
        }
        // Each vector kernel directly, below the size where `copy_crc_with` starts using it.
        #[cfg(target_arch = "x86_64")]
        for kernel in Kernel::available() {
            let short: Vec<usize> = (0..FUSED_MIN + 64).collect();
            // SAFETY: as above; each kernel runs only where the CPU has its features.
            match kernel {
                Kernel::Clmul128 => check_copy("clmul128", &short, |d, s, c| unsafe {
                    clmul::crc_copy_128::<true>(d, s, c)
                }),
                Kernel::Clmul512 => check_copy("clmul512", &short, |d, s, c| unsafe {
                    clmul::crc_copy_512::<true>(d, s, c)
                }),
                Kernel::Portable => {}
            }
        }
        let whole: Vec<usize> = lengths().filter(|l| l % 8 == 0).collect();
        // SAFETY: as above, and every length is a multiple of 8.
        check_copy("copy_nt_crc32c", &whole, |d, s, c| unsafe {
            copy_nt_crc32c(d, s, c)
        });
    }
}

/// Bytes of the scratch area [`time_paths`] stores into.
const SCRATCH: usize = 256 << 10;

/// Times the two ways of persisting an append of `size` bytes (a multiple of 8, at most
/// 4096) with the flush instruction of `mode`, on scratch memory: cached stores, write-back of
/// every touched line and one fence; non-temporal stores and one fence. Returns the median
/// nanoseconds per append of each, over `rounds` rounds of `per_round` appends after one
/// round of warm-up, the two
/// interleaved round by round so that drift in the machine's speed hits both alike. Each
/// append goes to the next place in a 256 KiB area, as appends go to fresh lines of a log,
/// and the lines a round stores into are evicted from the caches before it is timed: a log's
/// next lines were last written a lap ago (or zeroed by the kernel), not a moment ago, and
/// whether a line is cached decides which path wins (a cached store to a line that is not
/// there must first fetch it; a non-temporal store to a line that is must first evict it).
///
/// Only meaningful on a CPU that has `mode` ([`supported`]); it is what
/// `calibrate::nt_threshold` measures.
pub fn time_paths(mode: Persistence, size: usize, rounds: usize, per_round: usize) -> (f64, f64) {
    assert!(size.is_multiple_of(8) && (8..=4096).contains(&size));
    assert!(
        supported().contains(&mode),
        "{mode:?} is not supported here"
    );
    let stride = size.next_multiple_of(CACHE_LINE);
    assert!(
        2 * per_round * stride <= SCRATCH,
        "rounds too large for the scratch area"
    );
    // A heap area with a cache-line-aligned window of SCRATCH bytes.
    let mut scratch = vec![0u8; SCRATCH + CACHE_LINE];
    // Faulted in before any timing (a first touch costs microseconds).
    scratch.fill(1);
    let skew = scratch.as_ptr().align_offset(CACHE_LINE);
    // SAFETY: `skew < CACHE_LINE`, so the window `[skew, skew + SCRATCH)` is inside the area.
    let base = unsafe { scratch.as_mut_ptr().add(skew) };
    let src = vec![0x5au8; size];
    // The instruction that evicts lines (CLWB may keep them cached).
    let evict = supported()
        .into_iter()
        .find(|p| *p != Persistence::Clwb)
        .unwrap_or(mode);
    let round_len = per_round * stride;
    // Evicts the lines of one round's places from `from` on, and waits until they are.
    let evict_round = |from: usize| {
        // SAFETY: `[from, from + round_len)` lies in the scratch area (see `at` below);
        // `evict` is supported.
        unsafe { flush_range(evict, base.add(from), round_len) };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: MFENCE is part of SSE2, which every x86-64 CPU has.
        unsafe {
            std::arch::x86_64::_mm_mfence()
        };
    };
    let mut at = 0usize;
    let mut cached = Vec::with_capacity(rounds);
    let mut nt = Vec::with_capacity(rounds);
    for round in 0..=rounds {
        // Two rounds' places from `at` on, inside the area.
        if at + 2 * round_len > SCRATCH {
            at = 0;
        }
        evict_round(at);
        let t = std::time::Instant::now();
        for i in 0..per_round {
            let off = at + i * stride;
            // SAFETY: `off + size <= at + round_len <= SCRATCH`, inside the scratch area this
            // function owns; `mode` is supported (asserted above).
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), base.add(off), size);
                flush_range(mode, base.add(off), size);
            }
            fence(mode);
        }
        let c = t.elapsed().as_nanos() as f64 / per_round as f64;
        at += round_len;
        evict_round(at);
        let t = std::time::Instant::now();
        for i in 0..per_round {
            let off = at + i * stride;
            // SAFETY: as above; the offset and the length are multiples of 8, and the window
            // is 64-byte aligned, as `copy_nt` requires.
            unsafe { copy_nt(base.add(off), &src) };
            fence(mode);
        }
        let n = t.elapsed().as_nanos() as f64 / per_round as f64;
        at += round_len;
        if round > 0 {
            cached.push(c);
            nt.push(n);
        }
    }
    std::hint::black_box(&scratch);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    (median(&mut cached), median(&mut nt))
}
