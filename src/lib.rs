//! # daxlog
//!
//! An append-only, crash-safe log on persistent memory.
//!
//! A log is one file, mapped with `MAP_SYNC` on a DAX file system (ext4 or xfs mounted
//! `-o dax` on `/dev/pmem*`). An append copies the entry into the mapping and makes it durable
//! with CPU cache write-back (`CLWB`, else `CLFLUSHOPT`, else `CLFLUSH`) and one fence, or with
//! non-temporal stores and the fence. On any other file system the same file works through an
//! `msync` fallback: correct, only slower. There is no tail pointer to update on each append:
//! every entry carries its LSN and a crc32c checksum, and recovery finds the end of the log by
//! validating them.
//!
//! ```
//! # fn main() -> Result<(), daxlog::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! use daxlog::{Log, Options};
//!
//! let path = dir.path().join("intent.dax");
//! let log = Log::create(&path, &Options::new().capacity(4 << 20))?;
//! let lsn = log.append(b"txn 17: set a=1")?;       // durable when it returns
//! log.append_batch(&[b"txn 18: set b=2", b"txn 18: commit"])?; // one barrier, all or nothing
//! println!("persistence: {}", log.persistence());    // e.g. "clwb" or "msync"
//! drop(log);
//!
//! let log = Log::open(&path, &Options::new())?;       // recovers; a torn tail is discarded
//! assert_eq!(log.read(lsn).unwrap().payload, b"txn 17: set a=1");
//! assert_eq!(log.last_lsn(), Some(3));
//! # Ok(()) }
//! ```
//!
//! The on-media format is specified in `docs/FORMAT.md`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod append;
mod atomic_pair;
pub mod calibrate;
#[cfg(feature = "cli")]
pub mod cli;
mod combine;
mod crc_ranges;
mod damage;
mod disk;
mod error;
pub mod format;
mod group;
mod index;
mod iter;
mod log;
mod map;
mod media;
#[cfg(feature = "mutants")]
pub mod mutants;
mod once;
mod options;
mod persist;
mod pins;
mod reader;
mod recover;
mod reserve;
mod sync;
mod tickets;
mod truncate;
mod walk;

/// A log sequence number. The first entry of a new log has LSN 1 (or
/// [`Options::first_lsn`]); each entry has the LSN of the one before it plus one.
pub type Lsn = u64;

pub use damage::{Gap, SEARCH_BYTES};
pub use error::{Error, LockHolder, Result};
pub use group::SyncStats;
pub use iter::{Entry, Follower, Guard, Iter, OwnedIter, Verified};
pub use log::{Log, Room, Space};
pub use map::{MmapMedia, PersistenceChoice};
pub use media::Media;
pub use options::{Options, RecoveryMode, DEFAULT_CAPACITY, DEFAULT_NT_THRESHOLD};
pub use persist::{
    kernel_choice, supported as supported_flush_instructions, KernelChoice, Persistence, CACHE_LINE,
};
pub use reader::{OwnedEntry, Reader};
pub use recover::{DamageReport, RecoveryReport};
/// The CRC-32C and non-temporal copy kernels, for the `crc` benchmark (`benches/crc.rs`), which
/// times them alone. Not part of the stable API: they may change or go in any release.
#[doc(hidden)]
pub mod kernels {
    pub use crate::persist::{copy_nt, copy_nt_crc32c, crc32c_append_fast};
}

/// Deliberate ordering mistakes for the loom model tests (`--cfg loom` builds only).
#[cfg(loom)]
pub use sync::mutants as loom_mutants;
pub use walk::TailState;
