//! The engine's fused copy-and-checksum kernel, run for the simulator.
//!
//! daxlog's real media ([`daxlog::MmapMedia`]) implements [`Media::store_nt_crc`] with the
//! kernel the CPU supports (AVX-512 or SSE non-temporal stores with carry-less-multiply CRC
//! folding, or a portable copy after a separate checksum). The kernel is private to the engine,
//! so the simulator reaches it through a small scratch log mapped from a temporary file (with
//! CPU flushes, so that no `msync` runs): the source is copied to the same offset modulo 4096
//! as in the simulated media (the kernel's path depends on the destination's alignment), and
//! the bytes it stored and the checksum it returned are handed back. A bug in the kernel's
//! stores or checksum thus reaches the simulated image and the oracle.
//!
//! Every kernel stores the words of its source in ascending order (single words up to a
//! 64-byte boundary, then 16- or 64-byte vectors, then the last words); the simulator records
//! the copy as one non-temporal store in that order. Crash points between the kernel's own
//! stores would add no image: every non-temporal word stays pending, as its own unit, until
//! the drain, so an image of a crash in the middle of the copy is an image of a crash right
//! after it in which the words not yet copied did not persist.

use std::path::PathBuf;
use std::sync::Mutex;

use daxlog::format::DATA_OFFSET;
use daxlog::{Log, Media, MmapMedia, Options, PersistenceChoice};

/// Bytes of the scratch log beyond what the largest copy needs.
const SCRATCH_MIN: usize = 64 << 10;

static SCRATCH: Mutex<Option<Log<MmapMedia>>> = Mutex::new(None);

/// Runs the engine's `store_nt_crc` on a copy of `src` placed at `off % 4096` past the scratch
/// log's data offset; returns the bytes it stored and the checksum (`crc32c_append(crc, src)`).
pub(crate) fn copy_nt_crc(off: usize, src: &[u8], crc: u32) -> (Vec<u8>, u32) {
    let mut guard = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    let at = DATA_OFFSET + off % 4096;
    let need = at + src.len();
    if guard
        .as_ref()
        .is_none_or(|l| (l.capacity() as usize) < need)
    {
        *guard = Some(scratch(need.max(SCRATCH_MIN).next_multiple_of(4096)));
    }
    let media = guard.as_ref().expect("just made").media();
    // SAFETY: the scratch log is ours alone (created here, held under the lock, never appended
    // to or read by anything else); `at + src.len()` lies within its capacity (checked above);
    // `at` and `src.len()` are multiples of 8 because `off` and `src.len()` are.
    let crc = unsafe { media.store_nt_crc(at, src, crc) };
    // SAFETY: in bounds as above; no store is in progress (we hold the lock).
    let stored = unsafe { media.read(at, src.len()) }.to_vec();
    (stored, crc)
}

/// A scratch log of `capacity` bytes in a temporary file that is removed at once (the mapping
/// keeps it alive).
fn scratch(capacity: usize) -> Log<MmapMedia> {
    let dirs = [PathBuf::from("/dev/shm"), std::env::temp_dir()];
    let mut last = None;
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let path = dir.join(format!(
            "pmem-sim-kernel-{}-{:x}.dax",
            std::process::id(),
            capacity
        ));
        let opts = Options::new()
            .capacity(capacity as u64)
            .overwrite(true)
            .persistence(PersistenceChoice::ForceCpuFlush);
        match Log::create(&path, &opts) {
            Ok(log) => {
                let _ = std::fs::remove_file(&path);
                return log;
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("pmem-sim: no scratch file for the engine's copy kernel: {last:?}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel stores its source exactly and returns its checksum, at every alignment and
    /// around the length where the fused path starts.
    #[test]
    fn the_kernel_stores_its_source_and_checksums_it() {
        for len in [8usize, 64, 312, 320, 328, 512, 1000, 4096] {
            for off in [0usize, 8, 24, 56, 64, 4088] {
                let src: Vec<u8> = (0..len).map(|i| (i * 131 + len) as u8).collect();
                let (stored, crc) = copy_nt_crc(DATA_OFFSET + off, &src, 0x1234_5678);
                assert_eq!(stored, src, "len {len} at {off}");
                assert_eq!(crc, daxlog_crc(0x1234_5678, &src), "len {len} at {off}");
            }
        }
    }

    /// CRC-32C continuing `crc`, bit by bit (the reference the kernel must match).
    fn daxlog_crc(crc: u32, data: &[u8]) -> u32 {
        let mut c = !crc;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = (c >> 1) ^ if c & 1 != 0 { 0x82F6_3B78 } else { 0 };
            }
        }
        !c
    }
}
