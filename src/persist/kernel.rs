//! Which implementation of the large-buffer CRC-32C and of the fused copy this process runs:
//! every kernel the CPU can run is timed once, and the fastest is taken.
//!
//! Which is fastest is a property of the machine, not of its features: the 128-bit fused
//! copy, the only vector kernel of a Zen 3 guest before the 256-bit one was written, ran at
//! 8.8 GB/s there, slower than the crate's checksum followed by a plain non-temporal copy
//! (12.3 GB/s at 64 KiB), and on a Zen 4 guest the 128-bit fold alone was slower than the
//! crate's three interleaved `CRC32` streams (16.5 against 30 GB/s). So the choice is made by
//! measurement, once per process, at the first open of a log or the first checksum of a large
//! buffer, whichever comes first (about 0.2 ms), and `DAXLOG_KERNEL` overrides it
//! ([`KernelChoice`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::once::Chosen;

/// Which implementation the CPU allows, simplest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    /// The `crc32c` crate's checksum; for the copy, the chosen checksum followed by
    /// [`copy_nt`](super::copy_nt).
    Portable,
    /// 128-bit `PCLMULQDQ`, SSE4.2 `CRC32` and SSE2 non-temporal stores.
    Clmul128,
    /// 256-bit `VPCLMULQDQ` and AVX2 non-temporal stores.
    Clmul256,
    /// 512-bit `VPCLMULQDQ` and AVX-512F non-temporal stores.
    Clmul512,
}

impl Kernel {
    /// Its name, as `DAXLOG_KERNEL` takes it and [`KernelChoice`] reports it.
    pub(super) fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Clmul128 => "clmul128",
            Kernel::Clmul256 => "clmul256",
            Kernel::Clmul512 => "clmul512",
        }
    }

    /// The kernels this CPU can run, the portable one first.
    pub(super) fn available() -> Vec<Kernel> {
        #[cfg(target_arch = "x86_64")]
        {
            let mut v = vec![Kernel::Portable];
            if std::is_x86_feature_detected!("pclmulqdq") && std::is_x86_feature_detected!("sse4.2")
            {
                v.push(Kernel::Clmul128);
                if std::is_x86_feature_detected!("vpclmulqdq") {
                    if std::is_x86_feature_detected!("avx2") {
                        v.push(Kernel::Clmul256);
                    }
                    if std::is_x86_feature_detected!("avx512f") {
                        v.push(Kernel::Clmul512);
                    }
                }
            }
            v
        }
        #[cfg(not(target_arch = "x86_64"))]
        vec![Kernel::Portable]
    }

    /// The kernel for checksums of large buffers.
    #[inline]
    pub(super) fn for_crc() -> Kernel {
        kernel_choice().kernels.0
    }

    /// The kernel for copies fused with their checksum.
    #[inline]
    pub(super) fn for_copy() -> Kernel {
        kernel_choice().kernels.1
    }
}

/// The checksum and copy kernels this process chose, and the timings behind the choice.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct KernelChoice {
    /// The kernel that checksums large buffers (recovery's checks, appends' checksums above
    /// 256 bytes): `portable` (the `crc32c` crate), `clmul128`, `clmul256` or `clmul512`.
    pub crc: &'static str,
    /// The kernel that copies a payload with non-temporal stores and checksums it in the same
    /// pass; `portable` checksums first with [`crc`](Self::crc) and then copies.
    pub copy: &'static str,
    /// Per kernel this CPU can run: its name and nanoseconds per
    /// [`sample_bytes`](Self::sample_bytes) checksummed alone, and copied with their checksum
    /// (the fastest of at least two passes of several rounds); empty when `DAXLOG_KERNEL`
    /// chose.
    pub timings: Vec<(&'static str, f64, f64)>,
    /// Bytes of each timed checksum and copy.
    pub sample_bytes: usize,
    /// How long the timing took.
    pub took: Duration,
    /// `DAXLOG_KERNEL=` and the kernel's name when that variable chose (then nothing was
    /// timed).
    pub forced: Option<String>,
    /// The kernels named by `crc` and `copy`, for the hot path.
    kernels: (Kernel, Kernel),
}

impl KernelChoice {
    /// One line: the kernels and the timings they rest on.
    pub fn describe(&self) -> String {
        let chosen = format!("checksum {}, fused copy {}", self.crc, self.copy);
        if self.timings.is_empty() {
            return format!(
                "{chosen} ({})",
                self.forced.as_deref().unwrap_or("not timed")
            );
        }
        let rows = self
            .timings
            .iter()
            .map(|(k, c, f)| format!("{k} {c:.0}/{f:.0} ns"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{chosen} (timed here in {:.0} µs, {} KiB checksummed/copied: {rows})",
            self.took.as_secs_f64() * 1e6,
            self.sample_bytes >> 10,
        )
    }
}

/// Bytes of each timed call.
const SAMPLE: usize = 16 << 10;
// Every kernel copies a sample itself, without checksumming it apart (and so without asking
// for the choice that is being made).
const _: () = assert!(SAMPLE >= super::copy::FUSED_MIN);

/// Timed rounds per kernel, interleaved (after one round of warm-up).
const ROUNDS: usize = 9;

/// The choice of this process, made once.
static CHOICE: Chosen<KernelChoice> = Chosen::new();

/// The checksum and fused-copy kernels of this process: the fastest of those the CPU runs,
/// timed at the first call (about 0.2 ms; the first open of a log, or the first large checksum
/// or fused copy of the process, makes that call), unless a log opened earlier with `DAXLOG_KERNEL` set and
/// [`Options::from_env`](crate::Options::from_env) forced one. Every log of the process
/// checksums and copies with them; they change speed only, never a checksum's value.
/// Other threads that call it while the choice is timed wait for it; a child forked from
/// another thread at that moment waits a second, then times its own.
#[inline]
pub fn kernel_choice() -> &'static KernelChoice {
    CHOICE.get_or_choose(|| {
        let c = timed(&Kernel::available());
        tracing::debug!(kernels = %c.describe(), "daxlog: chose the checksum kernels of this host");
        c
    })
}

/// The name of the kernel `text` names (in any case) if this CPU runs it.
pub(crate) fn runnable_kernel(text: &str) -> Option<&'static str> {
    Kernel::available()
        .into_iter()
        .map(Kernel::name)
        .find(|n| n.eq_ignore_ascii_case(text))
}

/// What `DAXLOG_KERNEL` accepts on this CPU.
pub(crate) fn runnable_kernels_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let names: Vec<_> = Kernel::available().into_iter().map(Kernel::name).collect();
        format!("a kernel this CPU runs, in any case: {}", names.join(", "))
    })
}

/// Makes `name` (one of [`runnable_kernel`]'s) the kernel of the process if none was chosen
/// yet; if one was, keeps it and says so when it is another.
pub(crate) fn force_kernel(name: &'static str) {
    let c = CHOICE.get_or_choose(|| {
        let k = Kernel::available()
            .into_iter()
            .find(|k| k.name() == name)
            .expect("a kernel this CPU runs");
        forced(k)
    });
    if c.crc != name || c.copy != name {
        tracing::warn!(
            kernels = %c.describe(),
            "daxlog: DAXLOG_KERNEL={name} ignored: this process had chosen its kernels before"
        );
    }
}

/// The choice `DAXLOG_KERNEL` makes when it names `k`.
fn forced(k: Kernel) -> KernelChoice {
    KernelChoice {
        crc: k.name(),
        copy: k.name(),
        timings: Vec::new(),
        sample_bytes: 0,
        took: Duration::ZERO,
        forced: Some(format!("DAXLOG_KERNEL={}", k.name())),
        kernels: (k, k),
    }
}

/// The kernel of `available` with the least time in `ns` (in the same order).
fn fastest(available: &[Kernel], ns: &[f64]) -> Kernel {
    let i = (0..ns.len())
        .min_by(|&a, &b| ns[a].total_cmp(&ns[b]))
        .expect("the portable kernel at least");
    available[i]
}

/// Passes of [`time_kernels`] at most: the timing is repeated until two passes in a row
/// choose the same kernels, each kernel's time the fastest of all passes so far.
const PASSES: usize = 4;

/// The fastest of `available` (simplest first), timed.
///
/// One pass can be wrong for a whole tenth of a millisecond: of 200 processes on a Zen 3
/// guest, 14 timed both carry-less kernels 1.5 times slower than usual in every round of
/// their pass, while the portable kernel ran at its usual speed, and chose the portable
/// checksum, three times slower at 512 bytes, for their whole life. So a choice stands only
/// once a second pass agrees with it.
fn timed(available: &[Kernel]) -> KernelChoice {
    let start = Instant::now();
    let (mut crc_ns, mut copy_ns) = time_kernels(available);
    let mut chosen = (fastest(available, &crc_ns), fastest(available, &copy_ns));
    for _ in 1..PASSES {
        let (c, f) = time_kernels(available);
        for i in 0..available.len() {
            crc_ns[i] = crc_ns[i].min(c[i]);
            copy_ns[i] = copy_ns[i].min(f[i]);
        }
        let now = (fastest(available, &crc_ns), fastest(available, &copy_ns));
        if now == chosen {
            break;
        }
        chosen = now;
    }
    KernelChoice {
        crc: chosen.0.name(),
        copy: chosen.1.name(),
        timings: (0..available.len())
            .map(|i| (available[i].name(), crc_ns[i], copy_ns[i]))
            .collect(),
        sample_bytes: SAMPLE,
        took: start.elapsed(),
        forced: None,
        kernels: chosen,
    }
}

/// Per kernel of `available`: the fastest of [`ROUNDS`] timings of a checksum of [`SAMPLE`]
/// bytes, and then of a fused copy of them to memory of its own followed by a fence, kernels
/// interleaved round by round so that drift in the machine's speed hits them alike. The
/// portable copy is timed as it runs: the fastest checksum, then [`copy_nt`](super::copy_nt).
fn time_kernels(available: &[Kernel]) -> (Vec<f64>, Vec<f64>) {
    // One buffer for the source (at a 64-byte boundary) and the destination (24 bytes past a
    // line, where a payload starts after a line-aligned entry's header, and half a page on from
    // the source's offset in its page: a load from an address 4 KiB apart from a store in
    // flight waits for it, which would time the two buffers' placement, not the kernel).
    let mut buf = vec![0u64; (2 * SAMPLE + 4096 + 128) / 8];
    let base = (buf.as_ptr() as usize).next_multiple_of(64) - buf.as_ptr() as usize;
    let (src, dst) = buf[base / 8..].split_at_mut((SAMPLE + 2048 + 24) / 8);
    for (i, w) in src.iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    // SAFETY: the words of `src` as bytes: any bit pattern is a valid `u8`, and the length is
    // within the slice.
    let src = unsafe { std::slice::from_raw_parts(src.as_ptr() as *const u8, SAMPLE) };
    let dst = dst.as_mut_ptr() as *mut u8;
    let mut crc_ns = vec![f64::INFINITY; available.len()];
    // SAFETY: every kernel of `available` is one this CPU runs.
    let crc = |k: Kernel| unsafe { super::crc::crc_with(k, 7, std::hint::black_box(src)) };
    time_rounds(available, &mut crc_ns, |k| _ = std::hint::black_box(crc(k)));
    let best_crc = fastest(available, &crc_ns);
    let mut copy_ns = vec![f64::INFINITY; available.len()];
    time_rounds(available, &mut copy_ns, |k| {
        let c = match k {
            Kernel::Portable => {
                let c = crc(best_crc);
                // SAFETY: `dst` is 8-byte aligned (24 bytes past a 64-byte boundary) with
                // more than `SAMPLE` bytes of `buf` after it, apart from `src`; `SAMPLE`
                // is a multiple of 8.
                unsafe { super::copy::copy_nt(dst, src) };
                c
            }
            // SAFETY: as above; `k` is one this CPU runs, and `SAMPLE` is above the
            // size below which it would call back into the choice.
            k => unsafe { super::copy::copy_crc_with(k, dst, std::hint::black_box(src), 7) },
        };
        super::flush::fence(super::Persistence::Clwb);
        std::hint::black_box(c);
    });
    (crc_ns, copy_ns)
}

/// Times `f` on every kernel of `available`, round by round (the first round a warm-up), and
/// keeps each kernel's fastest time in `ns` (in the same order).
fn time_rounds(available: &[Kernel], ns: &mut [f64], mut f: impl FnMut(Kernel)) {
    for round in 0..=ROUNDS {
        for (i, &k) in available.iter().enumerate() {
            let t = Instant::now();
            f(k);
            let elapsed = t.elapsed().as_nanos() as f64;
            if round > 0 {
                ns[i] = ns[i].min(elapsed);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fastest(
        rows: &[(&'static str, f64, f64)],
        col: impl Fn(&(&str, f64, f64)) -> f64,
    ) -> &'static str {
        rows.iter()
            .min_by(|a, b| col(a).total_cmp(&col(b)))
            .expect("a row")
            .0
    }

    #[test]
    fn the_fastest_kernel_is_chosen_from_those_this_cpu_runs() {
        let available = Kernel::available();
        assert_eq!(available[0], Kernel::Portable);
        let c = timed(&available);
        let names: Vec<_> = available.iter().map(|k| k.name()).collect();
        assert_eq!(c.timings.iter().map(|t| t.0).collect::<Vec<_>>(), names);
        for (name, crc, copy) in &c.timings {
            assert!(
                crc.is_finite() && *crc > 0.0 && copy.is_finite() && *copy > 0.0,
                "{name}"
            );
        }
        assert_eq!(c.crc, fastest(&c.timings, |t| t.1));
        assert_eq!(c.copy, fastest(&c.timings, |t| t.2));
        assert_eq!((c.forced.as_deref(), c.sample_bytes), (None, SAMPLE));
        assert!(c
            .describe()
            .contains(&format!("checksum {}, fused copy {}", c.crc, c.copy)));
        // The process's own choice is one of them too, and the hot path reads the same.
        let p = kernel_choice();
        assert!(names.contains(&p.crc) && names.contains(&p.copy));
        assert_eq!(Kernel::for_crc().name(), p.crc);
        assert_eq!(Kernel::for_copy().name(), p.copy);
    }

    #[test]
    fn only_a_kernel_this_cpu_runs_can_be_forced() {
        for k in Kernel::available() {
            assert_eq!(runnable_kernel(&k.name().to_uppercase()), Some(k.name()));
            assert!(runnable_kernels_text().contains(k.name()));
            let c = forced(k);
            assert_eq!((c.crc, c.copy), (k.name(), k.name()));
            assert!(c.timings.is_empty());
            assert!(c
                .describe()
                .contains(&format!("DAXLOG_KERNEL={}", k.name())));
        }
        assert_eq!(runnable_kernel("avx9000"), None);
        assert_eq!(runnable_kernel(""), None);
        let all = [
            Kernel::Portable,
            Kernel::Clmul128,
            Kernel::Clmul256,
            Kernel::Clmul512,
        ];
        let missing = all.into_iter().filter(|k| !Kernel::available().contains(k));
        for k in missing {
            assert_eq!(runnable_kernel(k.name()), None, "{k:?}");
            assert!(!runnable_kernels_text().contains(k.name()));
        }
    }
}
