//! The reservation word's 128-bit atomic: `LOCK CMPXCHG16B` on two 64-bit halves, and its
//! stand-in under the loom model checker.

/// True if this CPU has `CMPXCHG16B` (CPUID leaf 1, ECX bit 13), which [`AtomicPair`] needs.
/// Every x86-64 CPU since 2006 has it. (The standard library reads CPUID once and caches
/// it: in a virtual machine each CPUID traps to the hypervisor.)
pub fn has_cmpxchg16b() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("cmpxchg16b")
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
