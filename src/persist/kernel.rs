//! Which implementation of the large-buffer CRC-32C and of the fused copy this CPU runs.

/// Which implementation the CPU allows, best last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    /// The `crc32c` crate and [`copy_nt`](super::copy_nt), one after the other.
    Portable,
    /// 128-bit `PCLMULQDQ`, SSE4.2 `CRC32` and SSE2 non-temporal stores; used for the fused
    /// copy only (see [`crc32c_append_fast`](super::crc32c_append_fast)).
    Clmul128,
    /// 512-bit `VPCLMULQDQ` and AVX-512F non-temporal stores.
    Clmul512,
}

impl Kernel {
    /// The best kernel of this CPU, detected once.
    #[inline]
    pub(super) fn best() -> Kernel {
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
    pub(super) fn available() -> Vec<Kernel> {
        match Kernel::best() {
            Kernel::Portable => vec![Kernel::Portable],
            Kernel::Clmul128 => vec![Kernel::Portable, Kernel::Clmul128],
            Kernel::Clmul512 => vec![Kernel::Portable, Kernel::Clmul128, Kernel::Clmul512],
        }
    }
}

/// The inputs the kernels' tests share.
#[cfg(test)]
pub(super) mod test_input {
    /// Test data: a fixed pseudo-random byte stream.
    pub(crate) fn bytes(n: usize) -> Vec<u8> {
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

    pub(crate) const SEEDS: [u32; 3] = [0, 0xFFFF_FFFF, 0x5A17_C3E9];
    const LARGE: [usize; 6] = [4095, 4096, 4097, 65536, 65536 + 24, (1 << 20) + 13];

    pub(crate) fn lengths() -> impl Iterator<Item = usize> {
        (0..=2048).chain(LARGE)
    }
}
