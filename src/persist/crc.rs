//! CRC-32C: of an entry's header tail, of a payload, of two payloads at once, with the SSE4.2
//! `CRC32` instruction, and of large buffers by carry-less multiplication where the CPU has it.

#[cfg(target_arch = "x86_64")]
use super::clmul;
use super::kernel::Kernel;

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

/// CRC-32C of `data`, continuing `crc`, exactly like `crc32c::crc32c_append`, with the kernel
/// this process chose by timing them ([`kernel_choice`](super::kernel_choice)): carry-less
/// multiplication where the CPU has it and it wins (the 512-bit kernel ran at 2.1 to 2.8 times
/// the crate's speed from 320 bytes to 1 MiB on Zen 4, the 256-bit one at 1.2 times on Zen 3),
/// else the crate.
#[inline]
pub fn crc32c_append_fast(crc: u32, data: &[u8]) -> u32 {
    // SAFETY: the chosen kernel is one this CPU runs.
    unsafe { crc_with(Kernel::for_crc(), crc, data) }
}

/// [`crc32c_append_fast`] with a chosen kernel.
///
/// # Safety
/// `kernel` is one this CPU can run (one of [`Kernel::available`]).
#[inline]
pub(super) unsafe fn crc_with(kernel: Kernel, crc: u32, data: &[u8]) -> u32 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller vouches for the CPU features; a null destination is never
        // written when `STORE` is false.
        Kernel::Clmul512 => unsafe {
            clmul::crc_copy_512::<false>(std::ptr::null_mut(), data, crc)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Clmul256 => unsafe {
            clmul::crc_copy_256::<false>(std::ptr::null_mut(), data, crc)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Kernel::Clmul128 => unsafe {
            clmul::crc_copy_128::<false>(std::ptr::null_mut(), data, crc)
        },
        _ => crc32c::crc32c_append(crc, data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::kernel::test_input::{bytes, lengths, SEEDS};

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
}
