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
//! next to the real ones in `persist.rs`, each with the argument for why it keeps the contract.

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

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(|e| e.into_inner())
        }
    }
}
