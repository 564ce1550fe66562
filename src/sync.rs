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
