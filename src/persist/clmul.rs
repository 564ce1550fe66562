//! The x86-64 CRC-32C kernels, alone and fused with the non-temporal copy (PCLMULQDQ and
//! VPCLMULQDQ folding). All three have the same shape: whole 8-byte words with `MOVNTI` and
//! `CRC32` until the destination is 64-byte aligned, then 16-, 32- or 64-byte vectors that are
//! loaded once, stored with aligned non-temporal stores and folded into the accumulators, then
//! the last words and bytes with `CRC32` again.
//!
//! The AVX-512 and VPCLMULQDQ intrinsics are stable since Rust 1.89.

use super::fold::{FOLD_1024, FOLD_128, FOLD_2048, FOLD_256, FOLD_384, FOLD_512};
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

/// The same on the two lanes of a 256-bit register.
#[inline]
#[target_feature(enable = "avx2,vpclmulqdq")]
fn fold2(x: __m256i, k: __m256i, y: __m256i) -> __m256i {
    let hi = _mm256_clmulepi64_epi128(x, k, 0x00);
    let lo = _mm256_clmulepi64_epi128(x, k, 0x11);
    _mm256_xor_si256(_mm256_xor_si256(hi, lo), y)
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
pub(super) unsafe fn crc_copy_128<const STORE: bool>(dst: *mut u8, src: &[u8], crc: u32) -> u32 {
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

/// [`crc_copy_128`] with four 256-bit accumulators (128 bytes per step) and 32-byte
/// non-temporal stores: for CPUs with VPCLMULQDQ but without AVX-512 (Zen 3, for one).
///
/// # Safety
/// The CPU has AVX2, VPCLMULQDQ, PCLMULQDQ and SSE4.2. With `STORE`, `dst` is 8-byte aligned,
/// valid for `src.len() / 8 * 8` bytes of writes and does not overlap `src`.
#[target_feature(enable = "avx2,vpclmulqdq,pclmulqdq,sse4.2")]
pub(super) unsafe fn crc_copy_256<const STORE: bool>(dst: *mut u8, src: &[u8], crc: u32) -> u32 {
    let (n, s) = (src.len(), src.as_ptr());
    let mut i = 0;
    let mut r = !crc as u64;
    if STORE {
        // SAFETY: the caller's contract is `words`'s.
        r = unsafe { words::<STORE>(dst, src, &mut i, r, |a| a % 64 != 0) };
    }
    if n - i >= 128 {
        // SAFETY: every load reads 32 (or 16) bytes at `s + j` with `j + 32 <= n` (or
        // `j + 16 <= n`); every store writes as many bytes at `dst + j` under the same bound,
        // so within the whole words of `src`, at a 32-byte aligned address for 32-byte stores
        // (the head loop ran until 64-byte alignment and `j` advances by 32) and a 16-byte
        // aligned one for 16-byte stores.
        unsafe {
            let load = |j: usize| _mm256_loadu_si256(s.add(j) as *const __m256i);
            let store = |j: usize, v: __m256i| {
                if STORE {
                    _mm256_stream_si256(dst.add(j) as *mut __m256i, v)
                }
            };
            let mut x = [load(i), load(i + 32), load(i + 64), load(i + 96)];
            for (j, &v) in x.iter().enumerate() {
                store(i + 32 * j, v);
            }
            let seed = _mm256_zextsi128_si256(_mm_cvtsi32_si128(r as i32));
            x[0] = _mm256_xor_si256(x[0], seed);
            i += 128;
            let k = _mm256_broadcastsi128_si256(pair(FOLD_1024));
            while i + 128 <= n {
                for (j, acc) in x.iter_mut().enumerate() {
                    let y = load(i + 32 * j);
                    store(i + 32 * j, y);
                    *acc = fold2(*acc, k, y);
                }
                i += 128;
            }
            let k = _mm256_broadcastsi128_si256(pair(FOLD_256));
            let mut a = fold2(fold2(fold2(x[0], k, x[1]), k, x[2]), k, x[3]);
            while i + 32 <= n {
                let y = load(i);
                store(i, y);
                a = fold2(a, k, y);
                i += 32;
            }
            // The first lane onto the second.
            let k = pair(FOLD_128);
            let mut b = fold(_mm256_castsi256_si128(a), k, _mm256_extracti128_si256(a, 1));
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

/// [`crc_copy_128`] with four 512-bit accumulators (256 bytes per step) and 64-byte
/// non-temporal stores.
///
/// # Safety
/// The CPU has AVX-512F, VPCLMULQDQ, PCLMULQDQ and SSE4.2. With `STORE`, `dst` is 8-byte
/// aligned, valid for `src.len() / 8 * 8` bytes of writes and does not overlap `src`.
#[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
pub(super) unsafe fn crc_copy_512<const STORE: bool>(dst: *mut u8, src: &[u8], crc: u32) -> u32 {
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
