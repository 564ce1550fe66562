//! Timing the two ways of persisting an append, on scratch memory: what `calibrate` measures.

use super::copy::copy_nt;
use super::flush::{fence, flush_range, supported, CACHE_LINE};
use super::kind::Persistence;

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
