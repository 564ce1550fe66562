//! Process-wide store-load barriers: `membarrier(2)` on the waiters' side, so that publishers
//! need none, and their stand-ins under the loom model checker.

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
