//! Model checks of daxlog's lock-free append protocol under the C11 memory model, with
//! [loom](https://docs.rs/loom).
//!
//! The tests (`tests/model.rs`) run daxlog's own append path — reservation, ticket ring and
//! publication, end-marker hand-off, full-ring wait, padding of an abandoned reservation,
//! sleep and wake-up — on a [`LoomMedia`], under every interleaving (up to a preemption bound)
//! and every value each load may return. They need a build with `--cfg loom`, in which daxlog's
//! atomics, locks and condition variable are loom's (daxlog's `src/sync.rs`); the test
//! `tests/loom.rs` runs that build from the default `cargo test --workspace --release`.
//! By hand:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release -p daxlog-loom --test model \
//!     --target-dir target/loom                 # the bounded run of the default test run
//! ... -- --ignored exhaustive                  # two threads, every interleaving (minutes)
//! ... -- --ignored deeper                      # three threads, 2 preemptions (much longer)
//! ```
//!
//! This library holds what the tests share: the media and the checks. Without `--cfg loom`
//! it is empty.

#[cfg(loom)]
mod media;
#[cfg(loom)]
pub use media::*;
