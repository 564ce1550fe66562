//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use daxlog::{Options, PersistenceChoice};

/// Where test logs are created: `DAXLOG_TEST_DIR` alone if set (e.g. a DAX mount), otherwise
/// `/dev/shm` (tmpfs) and the ordinary temporary directory (a disk file system).
pub fn test_dirs() -> Vec<PathBuf> {
    if let Ok(d) = std::env::var("DAXLOG_TEST_DIR") {
        return vec![PathBuf::from(d)];
    }
    let mut v = Vec::new();
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        v.push(shm);
    }
    v.push(std::env::temp_dir());
    v
}

/// A fresh temporary directory inside each test directory.
pub fn temp_dirs() -> Vec<tempfile::TempDir> {
    test_dirs()
        .into_iter()
        .map(|d| {
            tempfile::Builder::new()
                .prefix("daxlog-test")
                .tempdir_in(d)
                .unwrap()
        })
        .collect()
}

/// The persistence modes worth testing on any file system: automatic, forced CPU flush,
/// forced msync (the last two without the environment's say).
pub fn modes() -> Vec<Options> {
    vec![
        Options::new(),
        Options::new().persistence(PersistenceChoice::ForceCpuFlush),
        Options::new()
            .persistence(PersistenceChoice::ForceCpuFlush)
            .nt_threshold(usize::MAX),
        Options::new()
            .persistence(PersistenceChoice::ForceCpuFlush)
            .nt_threshold(0),
        Options::new().persistence(PersistenceChoice::ForceMsync),
    ]
}

/// A deterministic payload for `lsn` of `len` bytes.
pub fn payload(lsn: u64, len: usize) -> Vec<u8> {
    let mut x = lsn.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
