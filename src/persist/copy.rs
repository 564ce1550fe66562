//! Copies with non-temporal stores: alone ([`copy_nt`]), and fused with the CRC-32C of what
//! they copy, computed from the same loads ([`copy_nt_crc32c`]).

#[cfg(target_arch = "x86_64")]
use super::clmul;
use super::crc::crc32c_append;
use super::kernel::Kernel;

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

/// Inputs below this many bytes are copied with [`copy_nt`] after a separate checksum. The
/// 512-bit kernel folds only with 256 bytes left after aligning the destination (up to 56
/// bytes), and its word-by-word loop below that is slower than the two passes; from 320 bytes
/// on, fused costs about what [`copy_nt`] alone does (measured on Zen 4 without the fence).
pub(super) const FUSED_MIN: usize = 320;

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
    unsafe { copy_crc_with(Kernel::for_copy(), dst, src, crc) }
}

/// [`copy_nt_crc32c`] with a chosen kernel. Stores the first `src.len() / 8 * 8` bytes and
/// returns the checksum of all of `src`.
///
/// # Safety
/// `dst` is 8-byte aligned, valid for `src.len() / 8 * 8` bytes of writes and does not overlap
/// `src`; `kernel` is one this CPU can run (one of [`Kernel::available`]).
pub(super) unsafe fn copy_crc_with(kernel: Kernel, dst: *mut u8, src: &[u8], crc: u32) -> u32 {
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
        Kernel::Clmul256 if src.len() >= FUSED_MIN => unsafe {
            clmul::crc_copy_256::<true>(dst, src, crc)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::flush::fence;
    use crate::persist::kernel::test_input::{bytes, lengths, SEEDS};
    use crate::persist::kind::Persistence;

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
                Kernel::Clmul256 => check_copy("clmul256", &short, |d, s, c| unsafe {
                    clmul::crc_copy_256::<true>(d, s, c)
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
