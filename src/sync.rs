//! The synchronisation primitives of the append path, from one place, so that the loom model
//! checker can stand in for them.
//!
//! In every normal build these are std's and parking_lot's own types, re-exported: nothing
//! changes. Built with `RUSTFLAGS="--cfg loom"` (only the model tests in `loom-model/` do that;
//! FORMAT.md, section 6a), they are loom's checked versions, so that the model tests run the
//! engine's own reservation, publication and wake-up code under every interleaving and every
//! value the C11 memory model allows each load to return. Under loom the names keep the API the
//! engine uses (`get_mut` on atomics, parking_lot's lock without poisoning), so the engine's
//! text is the same in both builds.
//!
//! The two primitives loom cannot run, `LOCK CMPXCHG16B` and `membarrier(2)`, have stand-ins
//! next to the real ones (`atomic_pair.rs`, `persist/barrier.rs`), each with the argument for
//! why it keeps the contract.
//!
//! Under loom only, [`mutants`] holds deliberate ordering mistakes the model tests switch on to
//! prove that they catch them; a normal build does not contain them.

#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, RwLock};
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, RwLock};

#[cfg(loom)]
pub(crate) use loom::{hint::spin_loop, thread::yield_now};
#[cfg(not(loom))]
pub(crate) use std::{hint::spin_loop, thread::yield_now};

/// A word that threads sleep on until another thread rings it: a futex (`futex(2)`), or under
/// loom a mutex and a condition variable, whose lost wake-ups loom reports as deadlocks.
///
/// The contract that makes a wake-up impossible to lose: a sleeper reads
/// [`Bell::generation`] *before* it looks at what it waits for, and sleeps with that value;
/// the waker makes what the sleeper waits for visible *before* it rings. A ring after the
/// sleeper's read then either changed the word before the sleep looks at it (the sleep returns
/// at once) or finds the sleeper counted and wakes it. A sleep may also end at its timeout or
/// spuriously: the sleeper looks again.
#[cfg(not(loom))]
#[derive(Default)]
pub(crate) struct Bell {
    generation: std::sync::atomic::AtomicU32,
    sleepers: std::sync::atomic::AtomicU32,
}

#[cfg(not(loom))]
impl Bell {
    /// The word's value, to sleep with.
    #[inline]
    pub(crate) fn generation(&self) -> u32 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sleeps while the word still holds `seen`, for at most `timeout`.
    pub(crate) fn sleep(&self, seen: u32, timeout: std::time::Duration) {
        use std::sync::atomic::Ordering::SeqCst;
        // (A locked read-modify-write: the kernel's look at the word below comes after it, and
        // after any ring that read no sleeper.)
        self.sleepers.fetch_add(1, SeqCst);
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `futex(FUTEX_WAIT)` on a word of ours, which outlives the call: the kernel
        // reads the word, compares it with `seen`, and sleeps until woken or `ts` passes; it
        // writes no memory of ours. Its result does not matter: the caller looks again.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.generation.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                seen,
                &ts as *const libc::timespec,
            );
        }
        self.sleepers.fetch_sub(1, SeqCst);
    }

    /// The threads sleeping on the word now.
    #[cfg(test)]
    pub(crate) fn sleepers(&self) -> u32 {
        self.sleepers.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Changes the word and wakes every thread sleeping on it.
    #[inline]
    pub(crate) fn ring(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.generation.fetch_add(1, SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            // SAFETY: `futex(FUTEX_WAKE)` on a word of ours: it wakes the threads sleeping on
            // it and touches no memory.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.generation.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    i32::MAX,
                );
            }
        }
    }
}

/// Under loom: [`Bell`] with a mutex and a condition variable (loom's timed wait never times
/// out, so a lost wake-up is a deadlock the model reports).
#[cfg(loom)]
#[derive(Default)]
pub(crate) struct Bell {
    generation: Mutex<u32>,
    rung: Condvar,
}

#[cfg(loom)]
impl Bell {
    pub(crate) fn generation(&self) -> u32 {
        *self.generation.lock().unwrap()
    }

    pub(crate) fn sleep(&self, seen: u32, timeout: std::time::Duration) {
        let g = self.generation.lock().unwrap();
        if *g == seen {
            drop(self.rung.wait_timeout(g, timeout).unwrap());
        }
    }

    pub(crate) fn ring(&self) {
        let mut g = self.generation.lock().unwrap();
        *g = g.wrapping_add(1);
        self.rung.notify_all();
    }
}

/// Atomics (`Ordering` is std's in both builds).
pub(crate) mod atomic {
    #[cfg(loom)]
    pub(crate) use super::loom_types::AtomicU64;
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize};
    #[cfg(not(loom))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
}

/// parking_lot's lock.
pub(crate) mod parking_lot {
    #[cfg(loom)]
    pub(crate) use super::loom_types::{Mutex, MutexGuard};
    #[cfg(not(loom))]
    pub(crate) use ::parking_lot::{Mutex, MutexGuard};
}

/// `Ordering::$ord`; in the loom build, `Relaxed` instead while the model runs mutant `$m`.
#[cfg(not(loom))]
macro_rules! ordering {
    ($ord:ident, $m:ident) => {
        std::sync::atomic::Ordering::$ord
    };
}

/// `Ordering::$ord`; in the loom build, `Relaxed` instead while the model runs mutant `$m`.
#[cfg(loom)]
macro_rules! ordering {
    ($ord:ident, $m:ident) => {
        $crate::sync::mutants::weaken(
            std::sync::atomic::Ordering::$ord,
            $crate::sync::mutants::Mutant::$m,
        )
    };
}

pub(crate) use ordering;

#[cfg(loom)]
mod loom_types {
    use std::ops::{Deref, DerefMut};

    /// loom's `AtomicU64`, with std's `get_mut` (through `&mut self`, so no other thread can
    /// see the value meanwhile): a guard that stores the value back when dropped.
    #[derive(Debug, Default)]
    pub(crate) struct AtomicU64(loom::sync::atomic::AtomicU64);

    impl AtomicU64 {
        pub(crate) fn new(v: u64) -> Self {
            AtomicU64(loom::sync::atomic::AtomicU64::new(v))
        }

        pub(crate) fn get_mut(&mut self) -> Exclusive<'_> {
            let value = self.0.with_mut(|v| *v);
            Exclusive {
                atomic: &mut self.0,
                value,
            }
        }
    }

    impl Deref for AtomicU64 {
        type Target = loom::sync::atomic::AtomicU64;
        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }

    /// The value of an [`AtomicU64`] borrowed exclusively.
    pub(crate) struct Exclusive<'a> {
        atomic: &'a mut loom::sync::atomic::AtomicU64,
        value: u64,
    }

    impl Deref for Exclusive<'_> {
        type Target = u64;
        fn deref(&self) -> &u64 {
            &self.value
        }
    }

    impl DerefMut for Exclusive<'_> {
        fn deref_mut(&mut self) -> &mut u64 {
            &mut self.value
        }
    }

    impl Drop for Exclusive<'_> {
        fn drop(&mut self) {
            let v = self.value;
            self.atomic.with_mut(|x| *x = v);
        }
    }

    /// parking_lot's `Mutex` API (no poisoning) over loom's.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Mutex(loom::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            match self.0.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        }
    }
}

/// Deliberate ordering mistakes in the append path, for proving that the loom model tests
/// catch them (`loom-model/tests/model.rs`). Compiled only with `--cfg loom`: no normal build
/// contains them. A model test arms one for the thread that runs the model (loom runs all of a
/// model's threads on that one thread), so tests running in parallel do not see each other's.
#[cfg(loom)]
pub mod mutants {
    use std::cell::Cell;
    use std::sync::atomic::Ordering;

    /// A deliberate bug.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum Mutant {
        /// The publisher stores the published ticket count `Relaxed` instead of `Release`: an
        /// appender that sees its ticket published may return before the entries before it
        /// are durable as far as it can tell.
        PublishedRelaxed,
        /// An appender marks its ticket ready `Relaxed` instead of `Release`: the publisher may
        /// publish the ticket from stale slot contents.
        ReadyRelaxed,
        /// The next appender reads the previous ticket's marker-done flag `Relaxed` instead of
        /// `Acquire`: its stores may race with the previous appender's end marker.
        MarkerDoneRelaxed,
        /// The publisher stores `last_lsn` `Relaxed` instead of `Release`: a reader may see an
        /// LSN before the entry that carries it.
        LastLsnRelaxed,
        /// A sleeper registers in `waiters` and reads the published state without the heavy
        /// fence (`membarrier`) between: a wake-up can be lost.
        NoHeavyFence,
        /// The publisher stores the published state and reads `waiters` without the light
        /// fence between: a wake-up can be lost.
        NoLightFence,
        /// A follower registers in `waiters` only after it found the entry not yet published
        /// (the registration after the check): a wake-up can be lost.
        WaiterAfterCheck,
        /// The reservation word's compare-and-swap is not atomic (a load and a separate
        /// store): two appenders can reserve the same bytes and LSNs.
        CasNotAtomic,
        /// An abandoned reservation is padded but never completed: the appenders after it
        /// wait forever.
        AbandonedNotCompleted,
        /// `reset` moves the tail back to the start of the data area without looking at the
        /// pins: an append then stores into an entry a reader still holds as a slice.
        ResetIgnoresPins,
        /// The group commit's leader does not ring the bell of the first ticket its sync did
        /// not cover: that ticket's appender, asleep, never leads the next sync.
        HandOverNotRung,
        /// The group commit's leader rings the bells of the tickets it covered before it
        /// publishes them: an appender woken then finds its ticket unpublished and sleeps
        /// again, and nothing rings for it any more.
        RingBeforePublish,
    }

    thread_local! {
        static ACTIVE: Cell<Option<Mutant>> = const { Cell::new(None) };
    }

    /// Arms `m` (or none) for the models this thread runs from now on.
    pub fn set(m: Option<Mutant>) {
        ACTIVE.with(|a| a.set(m));
    }

    /// True if mutant `m` is armed.
    pub(crate) fn active(m: Mutant) -> bool {
        ACTIVE.with(|a| a.get()) == Some(m)
    }

    /// `Relaxed` if `m` is armed, else `ord`.
    pub(crate) fn weaken(ord: Ordering, m: Mutant) -> Ordering {
        if active(m) {
            Ordering::Relaxed
        } else {
            ord
        }
    }
}
