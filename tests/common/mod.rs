//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod media;

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

/// The superblock and the current slot of the log whose metadata page is `meta` (its first
/// 4096 bytes, or more).
pub fn current_slot(meta: &[u8]) -> (daxlog::format::Superblock, daxlog::format::Slot) {
    use daxlog::format::{Slot, Superblock, SB_LEN, SLOT0_OFFSET, SLOT1_OFFSET, SLOT_LEN};
    let sb = Superblock::decode(&meta[..SB_LEN]).unwrap();
    let at = |o: usize| Slot::decode(&meta[o..o + SLOT_LEN], sb.salt, sb.capacity);
    let slot = Slot::pick(at(SLOT0_OFFSET), at(SLOT1_OFFSET)).expect("a valid slot");
    (sb, slot)
}

/// [`current_slot`] of the log file at `path`.
pub fn current_slot_of(
    path: &std::path::Path,
) -> (daxlog::format::Superblock, daxlog::format::Slot) {
    use std::os::unix::fs::FileExt;
    let mut meta = vec![0u8; daxlog::format::DATA_OFFSET];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut meta, 0)
        .unwrap();
    current_slot(&meta)
}

/// Appends the numbers `from`, `from + 1`, ... (8 bytes each) to `log` until `stop` is set,
/// storing each acknowledged LSN in `progress`. When the log is full it keeps the last few
/// hundred entries (a truncation of its own), so that it never stops for want of space.
/// Runs on a thread of its own (not a scoped one: if it hangs, the test can report it).
pub fn spawn_number_appender(
    log: std::sync::Arc<daxlog::Log>,
    from: u64,
    progress: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let mut n = from;
        while !stop.load(Ordering::Relaxed) {
            match log.append(&n.to_le_bytes()) {
                Ok(lsn) => {
                    progress.store(lsn, Ordering::SeqCst);
                    n += 1;
                }
                Err(daxlog::Error::Full { .. }) => {
                    match log.truncate_before(log.next_lsn().saturating_sub(300)) {
                        Ok(()) | Err(daxlog::Error::LsnOutOfRange { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
}

/// Whether any extent of `path` is unwritten (the `FS_IOC_FIEMAP` ioctl, which `filefrag -v`
/// prints), or `None` where that cannot be told (a file system without extent maps, like
/// tmpfs). An ioctl, not `filefrag`: a child process spawned by one test holds copies of every
/// descriptor of the process until its `exec`, the locks of the logs that other tests close
/// included, and their reopening would find them still locked.
pub fn has_unwritten_extents(path: &std::path::Path) -> Option<bool> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; 32],
    }
    // _IOWR('f', 11, struct fiemap), the header being 32 bytes.
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const EXTENT_LAST: u32 = 0x1;
    const EXTENT_UNWRITTEN: u32 = 0x800;
    let file = std::fs::File::open(path).ok()?;
    let mut start = 0u64;
    loop {
        let mut map = Fiemap {
            start,
            length: u64::MAX - start,
            flags: 0,
            mapped_extents: 0,
            extent_count: 32,
            reserved: 0,
            extents: [Extent::default(); 32],
        };
        // SAFETY: FIEMAP writes at most `extent_count` extents into the struct, which lives
        // for the call and has room for them.
        if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map) } != 0 {
            return None;
        }
        let got = &map.extents[..map.mapped_extents as usize];
        if got.iter().any(|e| e.flags & EXTENT_UNWRITTEN != 0) {
            return Some(true);
        }
        match got.last() {
            Some(e) if e.flags & EXTENT_LAST == 0 => start = e.logical + e.length,
            _ => return Some(false),
        }
    }
}

/// Takes the locks a replacement of the log at `path` (`Log::create` with `overwrite`) holds
/// while it builds the new log: the exclusive `flock` and the OFD write lock on byte 1 (the
/// reader byte, FORMAT.md "Locks between processes"), for as long as the file lives.
pub fn hold_replacement_locks(path: &std::path::Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    // SAFETY: flock and an OFD lock on a descriptor we own; no memory is involved.
    unsafe {
        assert_eq!(
            libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
            0
        );
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = 1;
        fl.l_len = 1;
        assert_eq!(libc::fcntl(held.as_raw_fd(), libc::F_OFD_SETLK, &fl), 0);
    }
    held
}

/// True if `dir` lies on a file system that writes its pages back to a disk (not tmpfs or
/// ramfs): where a log in msync mode stores with `pwrite` (docs/DISK.md).
pub fn disk_backed(dir: &std::path::Path) -> bool {
    const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);
    nix::sys::statfs::statfs(dir).is_ok_and(|s| {
        let t = s.filesystem_type();
        t != nix::sys::statfs::TMPFS_MAGIC && t != RAMFS_MAGIC
    })
}

/// Rewrites both superblock copies of the log at `path` as format version 1 (what a
/// version-1 writer left; nothing else of the file changes).
pub fn mark_version_1(path: &std::path::Path) {
    use daxlog::format::{Superblock, SB_BACKUP_OFFSET, SB_LEN, SB_PRIMARY_OFFSET};
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    for off in [SB_PRIMARY_OFFSET, SB_BACKUP_OFFSET] {
        let mut b = [0u8; SB_LEN];
        f.read_exact_at(&mut b, off as u64).unwrap();
        let sb = Superblock {
            version: 1,
            ..Superblock::decode(&b).unwrap()
        };
        f.write_all_at(&sb.encode(), off as u64).unwrap();
    }
}

/// A xorshift generator: deterministic per seed (not 0), for tests that pick damage.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Below `n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
