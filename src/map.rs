//! The real media: a log file mapped into memory.
//!
//! The file is mapped with `MAP_SHARED_VALIDATE | MAP_SYNC`, which the kernel accepts only on a
//! DAX file system: then the page tables point straight at persistent memory, file metadata for
//! every faulted page is durable before the fault returns, and CPU cache write-back is the only
//! barrier needed. Anywhere else the kernel answers `EOPNOTSUPP` (or `EINVAL` on kernels that
//! predate `MAP_SYNC`) and the file is mapped `MAP_SHARED`; appends are then made durable with
//! `msync(MS_SYNC)` over the pages they touched.
//!
//! Mappings of 2 MiB or more are placed at a 2 MiB-aligned address, so that a DAX file system can
//! serve huge-page faults.

use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::io::ErrorKind;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::memfd::MFdFlags;
use nix::sys::mman::{self, MapFlags, ProtFlags};

use crate::error::{Error, LockHolder, Result};
use crate::format::{
    DATA_OFFSET, DELETIONS_OFFSET, DELETION_RING, DELETION_RING_OFFSET, PUBLISHED_OFFSET,
    READER_LOCK_BYTE, SLEEPERS_OFFSET, VOUCHED_OFFSET,
};
use crate::media::{Media, Persistence};
use crate::persist;

const HUGE_PAGE: usize = 2 << 20;
const PAGE: usize = 4096;

/// How to choose the persistence barrier of a mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersistenceChoice {
    /// CPU flushes if the kernel grants `MAP_SYNC` (a DAX mount), `msync` otherwise.
    #[default]
    Auto,
    /// CPU flushes even without `MAP_SYNC` (like PMDK's `PMEM_IS_PMEM_FORCE=1`). Durable only
    /// if the memory itself is persistent; meant for measuring the flush path on `/dev/shm`.
    ForceCpuFlush,
    /// `msync` even on a DAX mount.
    ForceMsync,
}

/// A log file mapped into memory; implements [`Media`].
#[derive(Debug)]
pub struct MmapMedia {
    ptr: NonNull<u8>,
    len: usize,
    mode: Persistence,
    map_sync: bool,
    writable: bool,
    path: PathBuf,
    // Held for the lifetime of the mapping: it carries the writer's `flock`.
    file: File,
    // msync mode: set once an msync has failed; every later drain reports it.
    failed: AtomicI32,
    // Where the published LSN in the reader area drops once a sync or write failed, and stays
    // (`Media::set_failure_floor`, lowered by a suffix truncation's publication; u64::MAX:
    // not set, nothing is stored).
    floor: AtomicU64,
    // msync mode: held by each msync until its error, if any, is in `failed` (see `flush`).
    sync_lock: Mutex<()>,
    // The file lives in memory only (tmpfs, ramfs): a dirty page is never written anywhere.
    in_memory: bool,
    // How the mapping reads ahead (`ReadAhead`).
    ahead: ReadAhead,
    // msync mode on ext4 or xfs: a second open file description of the file, which waits for
    // the blocks written ahead of the tail (`Media::verify_ahead`) without taking a
    // write-back error from the log's next `msync`. None elsewhere: nothing is written ahead.
    ahead_file: Option<File>,
    // msync mode on a disk-backed file (and a file size limit that allows it,
    // `may_write_up_to`): stores are written into the page cache with `pwrite` on `file`, not
    // through the mapping (see `MmapMedia::write_at`).
    store_by_write: bool,
}

// SAFETY: the mapping is shared memory owned by this value; the raw pointer is only used through
// the `Media` methods, whose callers uphold the aliasing rules that make concurrent use sound.
unsafe impl Send for MmapMedia {}
// SAFETY: as above.
unsafe impl Sync for MmapMedia {}

impl MmapMedia {
    /// Maps the first `len` bytes of `file`.
    ///
    /// `flush` forces a flush instruction (it must be one this CPU supports); `None` picks the
    /// best one.
    pub(crate) fn map(
        file: File,
        path: &Path,
        len: usize,
        writable: bool,
        choice: PersistenceChoice,
        flush: Option<Persistence>,
        huge_page_align: bool,
    ) -> Result<Self> {
        let size = NonZeroUsize::new(len).ok_or_else(|| Error::InvalidCapacity {
            path: path.to_path_buf(),
            capacity: 0,
            reason: "empty mapping",
        })?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        let want_sync = choice != PersistenceChoice::ForceMsync;
        // Ask for MAP_SYNC on one page first, at an address of the kernel's choosing: a failed
        // MAP_FIXED mmap may already have unmapped its target range, which another thread
        // could then take before a second MAP_FIXED attempt silently replaced its mapping.
        let map_sync = want_sync
            && probe_map_sync(&file, prot)
                .map_err(|e| Error::io(path, "mmap (MAP_SYNC)", e.into()))?;
        let flags = if map_sync {
            MapFlags::MAP_SHARED_VALIDATE | MapFlags::MAP_SYNC
        } else {
            MapFlags::MAP_SHARED
        };
        let place = reserve(len, huge_page_align)
            .map_err(|e| Error::io(path, "mmap (reserve)", e.into()))?;
        let fixed = place
            .map(|_| MapFlags::MAP_FIXED)
            .unwrap_or(MapFlags::empty());
        // SAFETY: mapping a file we hold open; with MAP_FIXED the target range is our own
        // PROT_NONE reservation (from `reserve`), which nothing else uses.
        let ptr = unsafe { mman::mmap(place, size, prot, flags | fixed, file.as_fd(), 0) }
            .map_err(|e| {
                // Not released: after a failed MAP_FIXED the range may no longer be ours.
                Error::io(path, "mmap", e.into())
            })?;
        let best = persist::best();
        let mode = match (choice, map_sync, best) {
            (PersistenceChoice::ForceMsync, _, _) | (_, _, None) => Persistence::Msync,
            (PersistenceChoice::ForceCpuFlush, _, Some(b)) | (_, true, Some(b)) => flush
                .filter(|f| persist::supported().contains(f))
                .unwrap_or(b),
            (PersistenceChoice::Auto, false, _) => Persistence::Msync,
        };
        tracing::info!(
            path = %path.display(),
            len,
            map_sync,
            persistence = %mode,
            "daxlog: mapped log file"
        );
        if writable && mode.is_cpu_flush() && !map_sync {
            tracing::warn!(
                path = %path.display(),
                persistence = %mode,
                "daxlog: CPU flushes forced without MAP_SYNC: acknowledged appends survive a \
                 process crash, not a power failure"
            );
        }
        let in_memory = in_memory(&file);
        let random = mode == Persistence::Msync && !in_memory;
        // SAFETY: advice on no byte of our mapping (length 0): the kernel only checks that it
        // knows it (Linux 5.14 and later).
        let knows_populate =
            unsafe { libc::madvise(ptr.as_ptr().cast(), 0, MADV_POPULATE_WRITE) } == 0;
        let ahead_file = (writable && random && knows_populate && writes_ahead_here(&file))
            .then(|| File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).ok())
            .flatten();
        // SAFETY: the whole of our new mapping, `len` bytes from `ptr`.
        let ahead = unsafe { ReadAhead::advise(&file, writable, random, ptr.as_ptr().cast(), len) };
        Ok(MmapMedia {
            ptr: ptr.cast(),
            len,
            mode,
            map_sync,
            writable,
            path: path.to_path_buf(),
            file,
            failed: AtomicI32::new(0),
            floor: AtomicU64::new(u64::MAX),
            sync_lock: Mutex::new(()),
            in_memory,
            ahead,
            ahead_file,
            store_by_write: writable && random && may_write_up_to(len),
        })
    }

    /// Faults `[lo, hi)` in (`advice`: `MADV_POPULATE_READ` or `_WRITE`). Returns false if the
    /// kernel did not fault them all in: it lacks the advice (before Linux 5.14), or it failed
    /// (out of memory), after a few tries where it was interrupted.
    ///
    /// # Safety
    /// `[lo, hi)` lies inside our live mapping and `lo` is page-aligned.
    unsafe fn populate(&self, lo: usize, hi: usize, advice: libc::c_int) -> bool {
        for _ in 0..3 {
            // SAFETY: the range lies inside our live mapping (caller); MADV_POPULATE_* fault
            // pages in and change no byte (a write fault only marks its page dirty).
            let rc =
                unsafe { libc::madvise(self.ptr.as_ptr().add(lo) as *mut c_void, hi - lo, advice) };
            if rc == 0 {
                return true;
            }
            let e = io::Error::last_os_error().raw_os_error();
            if e != Some(libc::EINTR) && e != Some(libc::EAGAIN) {
                return false;
            }
        }
        false
    }

    /// Maps the pages of `[lo, hi)` (page-aligned, inside the mapping) without dirtying them,
    /// reading them ahead first.
    fn populate_read(&self, lo: usize, hi: usize) {
        // (Without the read-ahead, with `MADV_RANDOM`, each page not in the page cache would
        // be a read of its own.) SAFETY: `[lo, hi)` lies inside our live mapping (caller).
        unsafe {
            let _ = self.ahead.read(self.ptr.as_ptr().add(lo), hi - lo);
            // (Where it fails, the appends fault the pages in themselves.)
            let _ = self.populate(lo, hi, MADV_POPULATE_READ);
        }
    }

    /// Has the kernel write back, as a whole, the pages of `[lo, hi)` (page-aligned, inside
    /// the mapping), whose blocks the file system holds allocated but unwritten.
    ///
    /// The first write of such a block also converts its extent, and the sync that writes it
    /// then writes the file's extent metadata too: in a new log's first lap, that was every
    /// sync of a 4 KiB append, which took about twice as long (docs/DISK.md, "Prefilling").
    /// Written here ahead of the tail, a chunk at a time, the blocks are converted together,
    /// and the appends' syncs write data only. The pages are dirtied by write faults, which
    /// change no byte, so an append storing into one of them meanwhile loses nothing (and the
    /// page cache may write any dirty page back at any time anyway). Their write-back is
    /// started (`sync_file_range(SYNC_FILE_RANGE_WRITE)`) and not waited for; one that fails
    /// is reported by the log's next `msync`, as for a page an append dirtied, and poisons
    /// the log.
    ///
    /// Returns false if the pages were not all dirtied (the write faults failed: out of
    /// memory, a `SIGBUS` from the file system): blocks of the range may be left unwritten.
    /// The check of the chunk ([`Media::verify_ahead`]) then tries again before it calls
    /// them a write the file system failed to record.
    fn write_unwritten(&self, lo: usize, hi: usize) -> bool {
        #[cfg(feature = "mutants")]
        let (refused, skipped) = (
            crate::mutants::take_populate_failure(),
            crate::mutants::take_populate_skip(),
        );
        #[cfg(not(feature = "mutants"))]
        let (refused, skipped) = (false, false);
        // SAFETY: `[lo, hi)` lies inside our live mapping and `lo` is page-aligned (caller).
        let dirtied = skipped || !refused && unsafe { self.populate(lo, hi, MADV_POPULATE_WRITE) };
        // SAFETY: a system call on our open file, touching no memory of ours. It starts the
        // write-back and waits for no error (`SYNC_FILE_RANGE_WAIT_AFTER` would take the
        // error from the log's next `msync`, which must report it).
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                lo as libc::off64_t,
                (hi - lo) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        dirtied
    }

    /// [`Self::write_unwritten`] over the pages of `ranges` (unwritten ranges of the file, as
    /// [`unwritten_ranges`] tells) that lie in `[lo, hi)`. False if any one's write faults
    /// failed.
    fn write_unwritten_ranges(&self, lo: usize, hi: usize, ranges: &[(u64, u64)]) -> bool {
        let mut at = lo;
        let mut all = true;
        for &(a, b) in ranges {
            // (Whole pages: a page that is only partly unwritten is written whole, harmlessly.)
            let a = ((a as usize) & !(PAGE - 1)).max(at);
            let b = (b as usize).next_multiple_of(PAGE).min(hi);
            if a < b {
                all &= self.write_unwritten(a, b);
                at = b;
            }
        }
        all
    }

    /// True if the kernel granted `MAP_SYNC`: the file lives on a DAX file system.
    pub fn map_sync(&self) -> bool {
        self.map_sync
    }

    /// An 8-byte word of the reader area.
    fn word_at(&self, off: usize) -> &AtomicU64 {
        assert!(
            (PUBLISHED_OFFSET..DATA_OFFSET).contains(&off) && off.is_multiple_of(8),
            "not a word of the reader area"
        );
        // SAFETY: in the metadata page's reader area, inside the mapping, 8-byte aligned
        // (checked above; the mapping is page-aligned); only atomics touch those bytes, here
        // and in other processes' readers, and the mapping outlives the reference.
        unsafe { &*(self.ptr.as_ptr().add(off) as *const AtomicU64) }
    }

    /// The reader area of the metadata page (format version 2): the published LSN and the
    /// sleepers flag.
    fn reader_area(&self) -> (&AtomicU64, &AtomicU32) {
        // SAFETY: both offsets lie in the metadata page, inside the mapping (its length is at
        // least the minimum capacity), 8- and 4-byte aligned (the mapping is page-aligned).
        // Those bytes are never lent as slices: only these atomics touch them, here and in
        // other processes' readers (`SharedMap`), and the mapping outlives the references.
        unsafe {
            (
                &*(self.ptr.as_ptr().add(PUBLISHED_OFFSET) as *const AtomicU64),
                &*(self.ptr.as_ptr().add(SLEEPERS_OFFSET) as *const AtomicU32),
            )
        }
    }

    /// The path the file was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scratch media of `len` bytes in memory (a `memfd`, which no other process sees and
    /// which is gone when dropped; where the kernel refuses one, an unnamed temporary file),
    /// made durable with the CPU flush `flush` as a log's media are: what the calibration
    /// appends to.
    pub(crate) fn scratch(len: usize, flush: Persistence) -> Result<Self> {
        let path = Path::new("<calibration scratch>");
        let file = match nix::sys::memfd::memfd_create(c"daxlog-calibration", MFdFlags::MFD_CLOEXEC)
        {
            Ok(fd) => File::from(fd),
            Err(e) => {
                tempfile::tempfile().map_err(|_| Error::io(path, "memfd_create", e.into()))?
            }
        };
        file.set_len(len as u64)
            .map_err(|e| Error::io(path, "ftruncate", e))?;
        Self::map(
            file,
            path,
            len,
            true,
            PersistenceChoice::ForceCpuFlush,
            Some(flush),
            false,
        )
    }

    /// Evicts the cache lines of `[off, off + len)` (clamped to the mapping) and waits until
    /// they are out.
    pub(crate) fn evict(&self, evictor: &persist::Evictor, off: usize, len: usize) {
        if off >= self.len {
            return;
        }
        let len = len.min(self.len - off);
        // SAFETY: the range was clamped to the live mapping.
        unsafe { evictor.evict(self.ptr.as_ptr().add(off), len) }
    }

    /// Stores `src` at `off` with `pwrite` into the page cache, where the mapping reads the
    /// same pages (msync mode on a disk-backed file: `store_by_write`).
    ///
    /// Why not through the mapping: every `msync` that writes a page back write-protects it in
    /// the mapping, and the next store into it then takes a write fault. Where the process has
    /// threads on other CPUs, write-protecting a page also interrupts those CPUs to flush its
    /// translation (`flush_tlb_mm_range`: a tenth of all the CPU time of eight appenders on
    /// two vCPUs, docs/DISK.md). Pages written only with `pwrite` are not writable in the
    /// mapping: a sync has nothing to write-protect, and no store faults. (The metadata page's
    /// reader words, and a new log's chunks written ahead, are still written through it.)
    ///
    /// A failed write (an I/O error reading the rest of the page, a file system out of space
    /// where a mapped store would have raised `SIGBUS`) is recorded as a failed sync is: every
    /// later drain reports it, so nothing stored after it is acknowledged.
    fn write_at(&self, off: usize, src: &[u8]) {
        use std::os::unix::fs::FileExt;
        if let Err(e) = write_unless_failed(|| self.file.write_all_at(src, off as u64)) {
            self.record_failure(&e);
        }
    }

    /// [`MmapMedia::write_at`] of `parts` (at most [`MAX_PARTS`]; more are written one by
    /// one), one after the other, with one `pwritev`.
    fn write_parts_at(&self, off: usize, parts: &[&[u8]]) {
        if parts.len() > MAX_PARTS {
            return self.write_each_at(off, parts, 0);
        }
        let mut slices = [std::io::IoSlice::new(&[]); MAX_PARTS];
        for (s, p) in slices.iter_mut().zip(parts) {
            *s = std::io::IoSlice::new(p);
        }
        let slices = &slices[..parts.len()];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        match write_unless_failed(|| {
            nix::sys::uio::pwritev(&self.file, slices, off as libc::off_t).map_err(io::Error::from)
        }) {
            Ok(n) if n == total => {}
            // A short write (a signal): the rest part by part.
            Ok(n) => self.write_each_at(off, parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.write_each_at(off, parts, 0),
            Err(e) => self.record_failure(&e),
        }
    }

    /// [`MmapMedia::write_at`] of what follows the first `done` bytes of `parts`.
    fn write_each_at(&self, off: usize, parts: &[&[u8]], mut done: usize) {
        let mut at = off;
        for p in parts {
            let skip = done.min(p.len());
            done -= skip;
            if skip < p.len() {
                self.write_at(at + skip, &p[skip..]);
            }
            at += p.len();
        }
    }

    /// Records the first failed sync or write: every later drain reports it. And lowers the
    /// published LSN in the reader area to the failure floor ([`Media::set_failure_floor`]:
    /// where the session began, or a later suffix truncation's cut; during an open, the
    /// recovered slot's cut), where it stays: the failure may concern any page written since
    /// (the kernel reports a failed write-back to whichever sync looks first: a tail hint's, a
    /// truncation's, or a later one than the sync that covered the page). The next writable
    /// open then writes the entries from there again (`recover::persist_recovered`); readers
    /// in other processes stop there.
    fn record_failure(&self, e: &io::Error) {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        let first = self
            .failed
            .compare_exchange(0, errno, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        let floor = self.floor.load(Ordering::SeqCst);
        if first && self.writable && floor != u64::MAX {
            self.reader_area().0.store(floor, Ordering::SeqCst);
        }
    }

    fn msync_range(&self, lo: usize, hi: usize) -> io::Result<()> {
        let lo = lo & !(PAGE - 1);
        let hi = hi.min(self.len);
        if hi <= lo {
            return Ok(());
        }
        // The system call itself, not libc's `msync`: that is a thread cancellation point, and
        // switching cancellation on and off around it costs about a tenth of an append.
        // SAFETY: the range lies inside our live mapping (lo < hi <= len) and starts on a page
        // boundary, as the mapping does; msync(2) only reads the range's page state.
        let r = unsafe {
            libc::syscall(
                libc::SYS_msync,
                self.ptr.as_ptr().add(lo),
                hi - lo,
                libc::MS_SYNC,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Media for MmapMedia {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn persistence(&self) -> Persistence {
        self.mode
    }

    #[inline]
    fn prefetch(&self, off: usize) {
        if off < self.len {
            crate::persist::prefetch_addr(self.ptr.as_ptr().wrapping_add(off));
        }
    }

    #[inline]
    unsafe fn read(&self, off: usize, len: usize) -> &[u8] {
        debug_assert!(off + len <= self.len);
        // SAFETY: the caller guarantees the range is in bounds of the mapping, which lives as
        // long as `self`, and that no store touches it while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) }
    }

    #[inline]
    unsafe fn store(&self, off: usize, src: &[u8]) {
        debug_assert!(self.writable && off + src.len() <= self.len);
        if self.store_by_write {
            return self.write_at(off, src);
        }
        // SAFETY: the caller guarantees the range is in bounds and not aliased by readers or
        // other writers; `src` is ordinary memory, so it cannot overlap the destination range
        // that nobody else may reference.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        }
    }

    unsafe fn store_parts(&self, off: usize, parts: &[&[u8]]) {
        if self.store_by_write {
            return self.write_parts_at(off, parts);
        }
        // SAFETY: the caller's contract is `store_each`'s (`Media::store_parts`).
        unsafe { crate::media::store_each(self, off, parts) }
    }

    fn stores_by_write(&self) -> bool {
        self.store_by_write
    }

    #[inline]
    unsafe fn store_nt(&self, off: usize, src: &[u8]) {
        debug_assert!(self.writable && off + src.len() <= self.len);
        if self.store_by_write {
            return self.write_at(off, src);
        }
        // SAFETY: as for `store`; `off` and `src.len()` are multiples of 8 by the trait's
        // contract, and the mapping is page-aligned, so the destination is 8-byte aligned.
        unsafe { persist::copy_nt(self.ptr.as_ptr().add(off), src) }
    }

    #[inline]
    unsafe fn store_nt_crc(&self, off: usize, src: &[u8], crc: u32) -> u32 {
        debug_assert!(self.writable && off + src.len() <= self.len);
        if self.store_by_write {
            self.write_at(off, src);
            return persist::crc32c_append(crc, src);
        }
        // SAFETY: as for `store_nt`.
        unsafe { persist::copy_nt_crc32c(self.ptr.as_ptr().add(off), src, crc) }
    }

    #[inline]
    fn flush(&self, off: usize, len: usize) {
        if len == 0 || off >= self.len {
            return;
        }
        let len = len.min(self.len - off);
        if self.mode == Persistence::Msync {
            // msync at once: it is synchronous, so there is no shared pending range to race
            // on. But one at a time, each until its error is recorded: the kernel reports a
            // failed writeback once per open file, to the first sync that looks, and every
            // msync of this mapping goes through one open file. Without the lock, a sync on
            // another thread (a truncation's slot update beside a group commit) could take the
            // error and be preempted before recording it, while this one returned success and
            // its drain, finding nothing recorded, let entries in the lost pages be
            // acknowledged. (The syncs of a log's appends are one at a time anyway: one group
            // commit leader; slot updates are rare.)
            let _one = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
            let r = self.msync_range(off, off + len);
            #[cfg(feature = "mutants")]
            let r = crate::mutants::msync_result(r);
            if let Err(e) = r {
                self.record_failure(&e);
            }
        } else {
            // SAFETY: the range was clamped to the mapping; `mode` was checked to be supported
            // by this CPU when the media was built.
            unsafe { persist::flush_range(self.mode, self.ptr.as_ptr().add(off), len) }
        }
    }

    #[inline]
    fn drain(&self) -> io::Result<()> {
        if self.mode == Persistence::Msync {
            // The flushes did the work; a failure is sticky: durability is unknown from then on.
            match self.failed.load(Ordering::SeqCst) {
                0 => Ok(()),
                errno => Err(io::Error::from_raw_os_error(errno)),
            }
        } else {
            persist::fence(self.mode);
            Ok(())
        }
    }

    fn tune_for_host(&self) -> bool {
        true
    }

    fn set_failure_floor(&self, lsn: u64) {
        self.floor.store(lsn, Ordering::SeqCst);
    }

    fn keeps_reader_area(&self) -> bool {
        self.writable
    }

    fn rewrite(&self, off: usize, len: usize) {
        if !self.writable || self.mode != Persistence::Msync || self.in_memory || off >= self.len {
            return;
        }
        let lo = off & !(PAGE - 1);
        let hi = (off + len).min(self.len);
        if lo >= hi {
            return;
        }
        // Write faults mark the pages dirty and change no byte (`write_unwritten`).
        // SAFETY: `[lo, hi)` lies inside our live mapping, `lo` page-aligned.
        if unsafe { self.populate(lo, hi, MADV_POPULATE_WRITE) } {
            return;
        }
        // (Before Linux 5.14, or where the faults failed.) The same bytes written again, from
        // a copy: a failure is recorded, and the drain after the flush reports it.
        let mut buf = vec![0u8; (hi - lo).min(1 << 20)];
        let mut at = lo;
        while at < hi {
            let n = buf.len().min(hi - at);
            // SAFETY: `[at, at + n)` lies inside our live mapping; the log's writer is the
            // only one that stores into it, and it is recovering (no store runs meanwhile).
            let src = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), n) };
            buf[..n].copy_from_slice(src);
            self.write_at(at, &buf[..n]);
            at += n;
        }
    }

    #[inline]
    fn publish_for_readers(&self, next_lsn: u64) {
        if !self.writable {
            return;
        }
        let (published, sleepers) = self.reader_area();
        if self.mode == Persistence::Msync {
            // (Published LSNs rise but for truncations, which lower the floor themselves: the
            // read-modify-write is nearly always not needed.)
            let floor = match self.floor.load(Ordering::SeqCst) {
                f if f <= next_lsn => f,
                _ => self
                    .floor
                    .fetch_min(next_lsn, Ordering::SeqCst)
                    .min(next_lsn),
            };
            let failed = || self.failed.load(Ordering::SeqCst) != 0;
            // The second look is against a failure recorded meanwhile (`record_failure`):
            // either that thread's store of the floor comes after this one, or this thread
            // sees the failure (readers may see `next_lsn` in between).
            if !failed() {
                published.store(next_lsn, Ordering::SeqCst);
            }
            if failed() {
                published.store(floor, Ordering::SeqCst);
            }
        } else {
            published.store(next_lsn, Ordering::Release);
            // Then the vouched word, in the same cache line (recovery takes the smaller of the
            // two LSNs they say: a process that dies between the stores, or a power failure
            // that keeps one, leaves the older value vouched). No reader reads it.
            self.word_at(VOUCHED_OFFSET)
                .store(crate::format::vouched_word(next_lsn), Ordering::Relaxed);
        }
        // No fence between the store and the load: a reader that registered meanwhile and
        // then read the old value loses at most one wake-up, which its timed sleep bounds
        // (and the kernel's own check of the futex word usually catches).
        if sleepers.load(Ordering::Relaxed) != 0 {
            sleepers.store(0, Ordering::Relaxed);
            futex_wake(published);
        }
    }

    fn record_deletion(&self, from: u64) {
        if !self.writable {
            return;
        }
        let count = self.word_at(DELETIONS_OFFSET);
        let n = count.load(Ordering::Relaxed);
        self.word_at(DELETION_RING_OFFSET + 8 * (n as usize % DELETION_RING))
            .store(from, Ordering::Relaxed);
        // (Wrapping: the word is not checksummed, and damage may have left it anywhere.)
        count.store(n.wrapping_add(1), Ordering::Release);
    }

    #[inline]
    fn wants_read_ahead(&self) -> bool {
        self.ahead.random
    }

    fn read_ahead(&self, off: usize, len: usize) {
        if off < self.len {
            // SAFETY: `[off, off + len)`, cut to the mapping, lies inside our live mapping.
            let _ = unsafe {
                self.ahead
                    .read(self.ptr.as_ptr().add(off), len.min(self.len - off))
            };
        }
    }

    fn prepare(&self, off: usize, len: usize) {
        if !self.writable || off >= self.len {
            return;
        }
        let lo = off & !(PAGE - 1);
        let hi = (off + len).min(self.len);
        if self.mode != Persistence::Msync || self.in_memory {
            // (tmpfs writes nothing back, and on a DAX mount no page is cached: write faults
            // save the appends a fault per page.)
            // SAFETY: `[lo, hi)` lies inside our live mapping, `lo` page-aligned.
            unsafe { self.populate(lo, hi, MADV_POPULATE_WRITE) };
        } else {
            // A disk-backed page-cache file: there a write fault marks the page dirty, and
            // populating for writing would have the kernel write each page ahead of the tail
            // back once with what it holds, then again with entries. Read faults map them
            // clean, without I/O (the first store to each still takes a write fault, as it
            // does after every sync that cleaned its page). Unwritten blocks are another
            // matter: `write_ahead`.
            self.populate_read(lo, hi);
        }
    }

    fn writes_ahead(&self) -> bool {
        self.ahead_file.is_some()
    }

    fn write_ahead(&self, off: usize, len: usize) -> bool {
        if self.ahead_file.is_none() || off >= self.len {
            return false;
        }
        let lo = off & !(PAGE - 1);
        let hi = (off + len).min(self.len);
        let mut unwritten = Vec::new();
        if unwritten_ranges(&self.file, lo as u64, hi as u64, &mut unwritten).is_err() {
            return false;
        }
        // (A range whose write faults failed is left to the check, which tries it again.)
        self.write_unwritten_ranges(lo, hi, &unwritten);
        !unwritten.is_empty()
    }

    fn verify_ahead(&self, off: usize, len: usize) -> io::Result<()> {
        let r = self.check_written_ahead(off, len);
        if let Err(e) = &r {
            // A failed write-back of the file may concern any of its pages, as for an msync.
            self.record_failure(e);
        }
        r
    }
}

impl MmapMedia {
    /// [`Media::verify_ahead`]: waits for the write-back of `[off, off + len)` and checks
    /// that the file system recorded it.
    fn check_written_ahead(&self, off: usize, len: usize) -> io::Result<()> {
        let Some(file) = &self.ahead_file else {
            return Ok(());
        };
        let lo = off & !(PAGE - 1);
        let hi = (off + len).min(self.len);
        if lo >= hi {
            return Ok(());
        }
        #[cfg(feature = "mutants")]
        if crate::mutants::take_verify_ahead_failure() {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        // Waiting through `file` reports an error of the write-back to it, and leaves the
        // error for the `msync` of the log's own file description too.
        let unwritten_after_write_back = || -> io::Result<Vec<(u64, u64)>> {
            // SAFETY: a system call on our own open file description, touching no memory.
            let rc = unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    lo as libc::off64_t,
                    (hi - lo) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut left = Vec::new();
            unwritten_ranges(file, lo as u64, hi as u64, &mut left)?;
            Ok(left)
        };
        let left = unwritten_after_write_back()?;
        if left.is_empty() {
            return Ok(());
        }
        // Blocks still unwritten: the write faults that should have dirtied them failed (out
        // of memory), or the file system did not record their write. Once more, waited for
        // this time: blocks left unwritten after a write-back that was asked for and ended
        // without an error were not recorded.
        let dirtied = self.write_unwritten_ranges(lo, hi, &left);
        match unwritten_after_write_back()?.first() {
            None => Ok(()),
            Some(&(a, b)) if dirtied => Err(io::Error::other(format!(
                "bytes {a}..{b} of the file are still unwritten after their write-back: the \
                 file system did not record the write (a write that failed before?)"
            ))),
            Some(&(a, b)) => Err(io::Error::other(format!(
                "bytes {a}..{b} of the file are still unwritten: their pages could not be \
                 dirtied to write them (MADV_POPULATE_WRITE failed twice)"
            ))),
        }
    }
}

impl Drop for MmapMedia {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no slice into it outlives `self` (they borrow it).
        unsafe {
            let _ = mman::munmap(self.ptr.cast(), self.len);
        }
    }
}

const MADV_POPULATE_READ: libc::c_int = 22;
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Appends to `out` the byte ranges in `[from, to)` of `file` that are allocated but
/// unwritten (they read as zeros, and their first write converts them), as the file system's
/// extent map tells (`FS_IOC_FIEMAP`; ranges may start before `from` or end after `to`).
/// Fails where the file system has no extent map to tell.
pub(crate) fn unwritten_ranges(
    file: &File,
    from: u64,
    to: u64,
    out: &mut Vec<(u64, u64)>,
) -> io::Result<()> {
    /// `struct fiemap_extent` of `<linux/fiemap.h>`.
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
    /// `struct fiemap`, with room for `EXTENTS` extents.
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; EXTENTS],
    }
    const EXTENTS: usize = 32;
    // _IOWR('f', 11, struct fiemap): the header's 32 bytes.
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const EXTENT_LAST: u32 = 0x1;
    const EXTENT_UNWRITTEN: u32 = 0x800;
    let mut at = from;
    while at < to {
        let mut map = Fiemap {
            start: at,
            length: to - at,
            flags: 0,
            mapped_extents: 0,
            extent_count: EXTENTS as u32,
            reserved: 0,
            extents: [Extent::default(); EXTENTS],
        };
        // SAFETY: `map` is a `struct fiemap` followed by room for `extent_count` extents, as
        // the ioctl expects; the kernel writes only inside it.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut map) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (map.mapped_extents as usize).min(EXTENTS);
        if n == 0 {
            break;
        }
        for e in &map.extents[..n] {
            let end = e.logical.saturating_add(e.length);
            if e.flags & EXTENT_UNWRITTEN != 0 && e.logical < to && end > from {
                out.push((e.logical, end));
            }
        }
        let last = &map.extents[n - 1];
        let end = last.logical.saturating_add(last.length);
        if last.flags & EXTENT_LAST != 0 || end <= at {
            break;
        }
        at = end;
    }
    Ok(())
}

/// Whether a log in `file` writes its unwritten blocks ahead of its tail
/// ([`Media::write_ahead`]): on ext4 and xfs, whose extent maps tell unwritten blocks and
/// whose `sync_file_range` writes them back (overlayfs answers the first, not the second).
fn writes_ahead_here(file: &File) -> bool {
    use nix::sys::statfs::{fstatfs, EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC};
    fstatfs(file).is_ok_and(|s| {
        let t = s.filesystem_type();
        (t == EXT4_SUPER_MAGIC || t == XFS_SUPER_MAGIC)
            && unwritten_ranges(file, 0, PAGE as u64, &mut Vec::new()).is_ok()
    })
}

/// Runs `write`, a store by `pwrite`; with the `mutants` feature, fails instead where the
/// test asked for it ([`crate::mutants::fail_write`]).
fn write_unless_failed<T>(write: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    #[cfg(feature = "mutants")]
    crate::mutants::before_write()?;
    write()
}

/// The most parts [`MmapMedia::write_parts_at`] writes with one system call (an entry's
/// header, payload and padding: three).
const MAX_PARTS: usize = 4;

/// True if this process may `pwrite` anywhere in a file of `len` bytes: its file size limit
/// (`RLIMIT_FSIZE`: `ulimit -f`, systemd's `LimitFSIZE=`) does not lie below. The kernel checks
/// the limit on every write, one inside the file too, and a write past it raises `SIGXFSZ`
/// (which kills the process, by default); stores through the mapping are not checked. So a log
/// larger than the limit (created by a process without it) keeps its stores in the mapping.
/// (A limit lowered after the open is not seen: a write past it then fails, or kills.)
fn may_write_up_to(len: usize) -> bool {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    getrlimit(Resource::RLIMIT_FSIZE)
        .is_ok_and(|(soft, _)| soft == RLIM_INFINITY || soft >= len as u64)
}

/// Whether `file` lives in memory only (tmpfs, ramfs): nothing is ever written back.
fn in_memory(file: &File) -> bool {
    // (ramfs's magic number, which the libc crate does not name.)
    const RAMFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x8584_58f6);
    nix::sys::statfs::fstatfs(file).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == nix::sys::statfs::TMPFS_MAGIC || t == RAMFS_MAGIC
    })
}

/// How a mapping of a log file reads ahead: by the kernel's faults (the default), or, advised
/// `MADV_RANDOM` (`random`, see [`page_cache_advice`]), only where daxlog asks ([`read_ahead`]).
#[derive(Debug)]
struct ReadAhead {
    random: bool,
    /// `mincore` tells which pages are cached: since Linux 5.0 it does so only for a file the
    /// process owns or may write, and says every page is cached otherwise.
    mincore: bool,
    /// The last range asked for, and when (see [`ReadAhead::read`]).
    asked: Mutex<Option<Asked>>,
}

/// A range of a mapping that was asked to be read ahead, `[lo, hi)`, at `at`.
#[derive(Clone, Copy, Debug)]
struct Asked {
    lo: usize,
    hi: usize,
    at: std::time::Instant,
}

/// How long a range asked to be read ahead counts as asked (see [`ReadAhead::read`]).
const ASKED_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl ReadAhead {
    /// Advises the new mapping `[ptr, ptr + len)` of `file` (opened for writing if
    /// `writable`) `MADV_RANDOM` if `random`.
    ///
    /// # Safety
    /// `[ptr, ptr + len)` is a mapping this process owns.
    unsafe fn advise(file: &File, writable: bool, random: bool, ptr: *mut u8, len: usize) -> Self {
        use std::os::unix::fs::MetadataExt;
        if random {
            // SAFETY: our own mapping (caller).
            unsafe { page_cache_advice(ptr, len) };
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let owner = || {
            file.metadata()
                .is_ok_and(|m| m.uid() == unsafe { libc::geteuid() })
        };
        ReadAhead {
            random,
            mincore: writable || owner(),
            asked: Mutex::new(None),
        }
    }

    /// Asks for `[ptr, ptr + len)` to be read ahead (and returns true) if the mapping reads
    /// ahead only when asked, unless it lies inside the range asked last, less than
    /// [`ASKED_FRESH`] ago, and (where `mincore` tells the truth) the last page of the range
    /// is still cached: its pages were cached then or are being read. Short reads that start
    /// one after another near the same place (a reader at the tail, a replication that reads
    /// each new entry) would otherwise look at the whole window ahead of each read, nine
    /// megabytes. The last page stands for the window: a range dropped from the page cache
    /// meanwhile (memory pressure) is asked again, where it would otherwise be read by
    /// single-page faults. A hint either way; what the log returns does not depend on it.
    ///
    /// # Safety
    /// As for [`read_ahead`].
    unsafe fn read(&self, ptr: *const u8, len: usize) -> bool {
        if !self.random || len == 0 {
            return false;
        }
        let (lo, hi) = (ptr as usize, ptr as usize + len);
        let now = std::time::Instant::now();
        // (Taken by another reader: ask, as if nothing had been asked.)
        let fresh = self.asked.try_lock().is_ok_and(|asked| {
            asked.is_some_and(|a| {
                a.lo <= lo && hi <= a.hi && now.saturating_duration_since(a.at) < ASKED_FRESH
            })
        });
        // SAFETY: the last page of the range lies in our mapping (caller).
        if fresh && (!self.mincore || unsafe { page_cached(hi - 1) }) {
            return false;
        }
        // SAFETY: as the caller's.
        unsafe { read_ahead(ptr, len, self.mincore) };
        if let Ok(mut asked) = self.asked.try_lock() {
            *asked = Some(Asked { lo, hi, at: now });
        }
        true
    }
}

/// True if the page holding `addr` is in the page cache (`mincore`; false if it fails). About
/// a microsecond.
///
/// # Safety
/// `addr` lies inside a mapping this process owns.
unsafe fn page_cached(addr: usize) -> bool {
    let mut resident = 0u8;
    // SAFETY: one page of our own mapping (caller), page-aligned; `resident` has its byte;
    // it changes nothing.
    let rc = unsafe { libc::mincore((addr & !(PAGE - 1)) as *mut c_void, 1, &mut resident) };
    rc == 0 && resident & 1 != 0
}

/// Advises `MADV_RANDOM` for a mapping of a log on a disk-backed file system, so that a page
/// fault reads the page it needs and nothing around it.
///
/// Why: the kernel's read-ahead for faults of a file mapping grows as it goes, and file
/// systems with large folios (ext4 and xfs in recent kernels) then cache the file in folios
/// of up to 2 MiB. The page cache keeps dirtiness per folio, and a store through a mapping
/// dirties the whole folio it lands in, so the `msync` of a 64-byte append would write back
/// up to 2 MiB (measured: 2 MiB per 64 B append 100 MiB into a log whose page cache had been
/// dropped, against 4 KiB with this advice; docs/DISK.md, "Large folios"). Reads ahead that
/// daxlog wants (a recovery scan, the pages ahead of the tail, a reader's next pages) are
/// asked for with [`read_ahead`], whose read-ahead allocates single pages.
///
/// # Safety
/// `[ptr, ptr + len)` is a mapping this process owns.
unsafe fn page_cache_advice(ptr: *mut u8, len: usize) {
    // SAFETY: advice on our own mapping (caller); it changes no byte, and a refusal only
    // leaves the kernel's default.
    unsafe { libc::madvise(ptr.cast(), len, libc::MADV_RANDOM) };
}

/// Asks the kernel to read `[ptr, ptr + len)` of a file mapping into the page cache, in the
/// background (`MADV_WILLNEED`); `ptr` is rounded down to its page. A hint: the call returns
/// once the reads are queued, and errors are ignored. With `skip_cached`, a megabyte whose
/// pages are all cached is not asked for; only where `mincore` tells the truth (see
/// [`ReadAhead`]).
///
/// # Safety
/// `[ptr, ptr + len)` lies inside a mapping this process owns, whose first page is
/// mapped too.
pub(crate) unsafe fn read_ahead(ptr: *const u8, len: usize, skip_cached: bool) {
    // The kernel reads at most about a device request's worth per call (the larger of the
    // device's largest request and the file's read-ahead window): ask a megabyte at a time.
    // A piece whose pages are all in the page cache already is not asked for (asking costs
    // the kernel a look at each of its pages: about 13 µs a megabyte, cached or not; looking
    // with `mincore` costs about a tenth of that where the pages are mapped in this process,
    // but about as much where they are not, as at the far end of a walk's window).
    const PIECE: usize = 1 << 20;
    let mut lo = ptr as usize & !(PAGE - 1);
    let hi = ptr as usize + len;
    while lo < hi {
        let n = PIECE.min(hi - lo);
        let mut resident = [0u8; PIECE / PAGE];
        // SAFETY: `[lo, lo + n)` lies in our own mapping (caller), `lo` is page-aligned, and
        // `resident` has a byte for each of its pages (at least 4 KiB each); it changes nothing.
        let cached = skip_cached
            && unsafe { libc::mincore(lo as *mut c_void, n, resident.as_mut_ptr()) } == 0
            && resident[..n.div_ceil(PAGE)].iter().all(|r| r & 1 != 0);
        if !cached {
            // SAFETY: advice on pages of our own mapping (caller); WILLNEED reads file pages
            // into the page cache, it changes no byte of the mapping and creates no reference.
            unsafe { libc::madvise(lo as *mut c_void, n, libc::MADV_WILLNEED) };
        }
        lo += n;
    }
}

/// Reserves an address range for a mapping of `len` bytes, 2 MiB-aligned when `len` is at least
/// 2 MiB and `align` is set, and returns its aligned start; `None` for small or unaligned
/// mappings, which go where the kernel puts them.
fn reserve(len: usize, align: bool) -> std::result::Result<Option<NonZeroUsize>, Errno> {
    // Without `align` placement is left to the kernel (for measuring what the 2 MiB alignment
    // buys; see README, "Running on persistent memory").
    if len < HUGE_PAGE || !align {
        return Ok(None);
    }
    let total = NonZeroUsize::new(len + HUGE_PAGE).expect("non-zero");
    // SAFETY: an anonymous PROT_NONE mapping chosen by the kernel overlaps nothing.
    let base = unsafe {
        mman::mmap_anonymous(
            None,
            total,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    }?;
    let b = base.as_ptr() as usize;
    let aligned = (b + HUGE_PAGE - 1) & !(HUGE_PAGE - 1);
    // SAFETY: both trimmed pieces lie inside the reservation just made, outside the aligned
    // window of `len` bytes that the file mapping will replace.
    unsafe {
        if aligned > b {
            let _ = libc::munmap(b as *mut c_void, aligned - b);
        }
        let end = aligned + len;
        let total_end = b + total.get();
        if total_end > end {
            let _ = libc::munmap(end as *mut c_void, total_end - end);
        }
    }
    Ok(NonZeroUsize::new(aligned))
}

/// True if the kernel grants `MAP_SYNC` for `file` (a DAX file system), tried on its first
/// page at an address the kernel chooses; `EOPNOTSUPP` or `EINVAL` mean no.
fn probe_map_sync(file: &File, prot: ProtFlags) -> std::result::Result<bool, Errno> {
    let page = NonZeroUsize::new(PAGE).expect("non-zero");
    let flags = MapFlags::MAP_SHARED_VALIDATE | MapFlags::MAP_SYNC;
    // SAFETY: a fresh mapping of a file we hold open, placed by the kernel: it replaces
    // nothing.
    match unsafe { mman::mmap(None, page, prot, flags, file.as_fd(), 0) } {
        Ok(p) => {
            // SAFETY: unmapping the probe mapping just made; nothing refers to it.
            unsafe {
                let _ = mman::munmap(p, PAGE);
            }
            Ok(true)
        }
        Err(Errno::EOPNOTSUPP) | Err(Errno::EINVAL) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a file of type `t` is, for [`Error::NotAFile`]: `None` for a regular file, a
/// directory or a symbolic link.
pub(crate) fn special_kind(t: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    Some(if t.is_file() || t.is_dir() || t.is_symlink() {
        return None;
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    })
}

/// Opens the log file at `path` for reading (and writing), refusing anything but a regular
/// file with a typed error before it could block: a FIFO's open waits for a writer, forever.
/// The file is opened with `O_NONBLOCK` (no effect on a regular file) and what was opened is
/// checked again, in case the path changed in between.
pub(crate) fn open_log_file(path: &Path, writable: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let check = |meta: &std::fs::Metadata| -> Result<()> {
        let t = meta.file_type();
        if t.is_file() {
            return Ok(());
        }
        if t.is_dir() {
            return Err(Error::IsDirectory { path: path.into() });
        }
        Err(Error::NotAFile {
            path: path.into(),
            kind: special_kind(t).unwrap_or("special file"),
        })
    };
    check(&std::fs::metadata(path).map_err(|e| Error::io(path, "open", e))?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, "open", e))?;
    check(&file.metadata().map_err(|e| Error::io(path, "stat", e))?)?;
    Ok(file)
}

pub(crate) fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    // flock through libc: nix's `Flock` wrapper takes the `File` by value, which does not fit
    // a file that is mapped after being locked.
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.kind() != ErrorKind::WouldBlock {
        return Err(Error::io(path, "flock", e));
    }
    // Who holds it: if a shared lock can be had, only read-only snapshots do.
    // SAFETY: as above.
    let shared = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if shared {
        // SAFETY: as above; gives back the shared lock just taken.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    }
    Err(Error::Locked {
        path: path.into(),
        by: if shared {
            LockHolder::Snapshots
        } else {
            exclusive_holder(file)
        },
    })
}

/// Locks the directory `dir` exclusively (`flock`) for as long as the returned file lives, so
/// that the creators of logs in it take turns between their look at what is at a path and
/// their rename over it (`Log::create`). Creators hold it for a few system calls; the lock
/// is not waited for longer than about 50 ms, since a program (or the caller itself, through
/// another descriptor) may hold a lock on its own directory for long: then, and where the
/// directory cannot be opened for reading, `None`, and creators do not take turns (their
/// look at the path and no-clobber renames still refuse a log held open in all but a window
/// of a few system calls).
pub(crate) fn lock_dir(dir: &Path) -> Option<File> {
    use std::os::fd::AsRawFd;
    let dir_file = File::open(dir).ok()?;
    for _ in 0..50 {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(dir_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Some(dir_file);
        }
        match std::io::Error::last_os_error().kind() {
            ErrorKind::WouldBlock | ErrorKind::Interrupted => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            _ => return None,
        }
    }
    tracing::warn!(
        dir = %dir.display(),
        "the directory is locked by another program: creating the log without taking turns"
    );
    None
}

/// Before a log at `path` is replaced: if it is a file (not a link, whose target is never
/// touched), takes its writer lock and the readers' byte exclusively, so that a log that a
/// writer, a snapshot or a reader in any process holds open is refused with
/// [`Error::Locked`], and nobody opens it until the replacement is in place. `None` if there
/// is no such file any more.
pub(crate) fn lock_replaced(path: &Path) -> Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Writable: an exclusive OFD lock needs a descriptor open for writing. Without write
    // permission on the file (only on its directory), readers are only looked for.
    let open = |write: bool| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let (file, writable) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => match open(false) {
            Ok(f) => (f, false),
            Err(e) => return Err(Error::io(path, "open", e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(None)
        }
        Err(e) => return Err(Error::io(path, "open", e)),
    };
    lock_exclusive(&file, path)?;
    let free = if writable {
        ofd_lock(&file, true)
    } else {
        ofd_unlocked(&file)
    };
    if !free.map_err(|e| Error::io(path, "fcntl (F_OFD_SETLK)", e))? {
        return Err(Error::Locked {
            path: path.into(),
            by: LockHolder::Readers,
        });
    }
    Ok(Some(file))
}

/// Allocates every block of the first `len` bytes of `file` (extending it to `len`), so that
/// no page fault of a shared mapping ever needs a new block: on a full file system that fault
/// could only end in `SIGBUS`. Where the file system has no `fallocate` (glibc then emulates
/// it; other C libraries report `EOPNOTSUPP`), zeros are written instead: then it returns
/// true.
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<bool> {
    match nix::fcntl::posix_fallocate(file, 0, len as libc::off_t) {
        Ok(()) => Ok(false),
        Err(Errno::EOPNOTSUPP) | Err(Errno::EINVAL) => write_zeros(file, len).map(|()| true),
        Err(e) => Err(e.into()),
    }
}

/// Writes zeros over the first `len` bytes of `file`, one page per `write`: the page cache
/// then holds them as single pages, as a shared mapping's faults would have. (Larger writes
/// leave large folios in the page cache of file systems that support them, and every `msync`
/// of a 64-byte append into such a folio wrote all of it back: 300 µs instead of 130 on ext4,
/// docs/DISK.md.)
pub(crate) fn write_zeros(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![0u8; PAGE];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Bytes of `file` that have blocks (`st_blocks` counts 512-byte units).
pub(crate) fn allocated_bytes(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512)
}

/// Makes sure the first `capacity` bytes of an existing log file are allocated (a file copied
/// sparsely, or extended with `truncate`, may have holes): cheap when `st_blocks` already
/// covers the capacity, else allocates them.
pub(crate) fn ensure_allocated(file: &File, path: &Path, capacity: u64) -> Result<()> {
    let meta = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
    let allocated = allocated_bytes(&meta);
    if allocated >= capacity {
        return Ok(());
    }
    match nix::fcntl::posix_fallocate(file, 0, capacity as libc::off_t) {
        Ok(()) => {
            tracing::info!(
                path = %path.display(),
                allocated,
                capacity,
                "daxlog: allocated the holes of a sparse log file"
            );
            Ok(())
        }
        Err(e) => Err(Error::NotAllocated {
            path: path.into(),
            allocated,
            capacity,
            reason: format!("fallocate: {}", io::Error::from(e)),
        }),
    }
}

/// Fsyncs the directory that holds `path`, so that a name just created or renamed there is
/// durable.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    File::open(parent)?.sync_all()
}

/// Fills `buf` from the kernel's random source.
pub(crate) fn fill_random(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into the buffer we pass.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            done += n as usize;
        } else if std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            // No kernel randomness: fall back to time and address entropy (still distinct per
            // session, which is what epochs need).
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let mix = t ^ (rest.as_ptr() as u128).rotate_left(64) ^ std::process::id() as u128;
            for (i, b) in rest.iter_mut().enumerate() {
                *b = (mix >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
            }
            return;
        }
    }
}

/// How many times an open tries again when a replacement renamed a new log over the path
/// between its open and its lock, before it reports the replacement as the lock's holder.
const OPEN_TRIES: usize = 16;

/// Runs `open_and_lock` (an open of `path` that returns `None` when, once locked, the path no
/// longer [`names`] the file it opened) until it returns the file's log, at most
/// [`OPEN_TRIES`] times; then fails with [`Error::Locked`] by a replacement.
pub(crate) fn open_current<T>(
    path: &Path,
    mut open_and_lock: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    for _ in 0..OPEN_TRIES {
        if let Some(t) = open_and_lock()? {
            return Ok(t);
        }
    }
    Err(Error::Locked {
        path: path.into(),
        by: LockHolder::Replacement,
    })
}

/// True if `path` (its links followed, as the open followed them) still names `file`: false
/// once a replacement renamed another file over it, or it was removed, after `file` was
/// opened. Checked once the lock is held: a replacement holds the old file's locks until its
/// rename is done, so a lock taken on the old file after that keeps nobody out of the new one.
pub(crate) fn names(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Takes `flock(LOCK_SH)` without waiting: the read-only snapshot's lock, which no writer can
/// take its `LOCK_EX` against (and which a writer's lock refuses).
pub(crate) fn lock_snapshot(file: &File, path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.kind() == ErrorKind::WouldBlock {
        Err(Error::Locked {
            path: path.into(),
            by: exclusive_holder(file),
        })
    } else {
        Err(Error::io(path, "flock", e))
    }
}

/// An open file description lock (`F_OFD_SETLK`) on the reader byte: shared (`F_RDLCK`) for
/// readers, exclusive (`F_WRLCK`) for whoever would replace or rewrite the file. Never waits.
/// Released when the last descriptor of the open file description closes (a killed reader
/// holds nobody up). Returns false if another open file description holds a conflicting lock.
pub(crate) fn ofd_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut fl: libc::flock = unsafe_zeroed_flock();
    fl.l_type = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = READER_LOCK_BYTE as libc::off_t;
    fl.l_len = 1;
    // SAFETY: fcntl with a pointer to a valid, initialised `flock` that lives for the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// True if no open file description holds a lock on the reader byte (`F_OFD_GETLK`: a test
/// that works on a read-only descriptor, and holds nothing).
fn ofd_unlocked(file: &File) -> io::Result<bool> {
    Ok(ofd_conflict(file, libc::F_WRLCK)?.l_type == libc::F_UNLCK as libc::c_short)
}

/// A lock on the reader byte that another open file description holds and that conflicts
/// with a lock of type `l_type` (its `l_type` is `F_UNLCK` if none): `F_OFD_GETLK`, which
/// holds nothing. (It reports a conflicting POSIX record lock as well, with the holder's
/// process id in `l_pid`; an OFD lock has `l_pid` -1.)
fn ofd_conflict(file: &File, l_type: libc::c_int) -> io::Result<libc::flock> {
    use std::os::fd::AsRawFd;
    let mut fl: libc::flock = unsafe_zeroed_flock();
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = READER_LOCK_BYTE as libc::off_t;
    fl.l_len = 1;
    // SAFETY: fcntl with a pointer to a valid, initialised `flock` that lives for the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl)
}

/// Who holds the exclusive `flock` that refused us: a replacement of the file in progress if
/// the reader byte is locked exclusively too, by an OFD lock (only [`lock_replaced`] takes
/// one; a POSIX record lock some program holds does not count), else a writer. (A replacement
/// that could not open the file for writing takes no lock on the byte, and is taken for a
/// writer, as it is for the few system calls between its two locks.)
fn exclusive_holder(file: &File) -> LockHolder {
    match ofd_conflict(file, libc::F_RDLCK) {
        Ok(fl) if fl.l_type == libc::F_WRLCK as libc::c_short && fl.l_pid == -1 => {
            LockHolder::Replacement
        }
        _ => LockHolder::Writer,
    }
}

fn unsafe_zeroed_flock() -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}

/// Wakes every process sleeping on the low 32 bits of `word` (a shared file mapping: the key
/// is the file and offset, so it reaches other processes' mappings).
fn futex_wake(word: &AtomicU64) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; the word is live and 4-byte aligned
    // (its low half on little-endian x86).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr() as *const u32,
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            0,
            0,
        );
    }
}

/// A read-only mapping of a log that another process may be writing: its bytes are never lent
/// out as slices (they could change under them, which a `&[u8]` must never see); they are
/// copied out with word-sized atomic loads, and the copy is validated afterwards. The first
/// page may also be mapped writable (when the file could be opened for writing) so that a
/// reader can ask the writer to wake it (the sleepers flag).
pub(crate) struct SharedMap {
    ptr: NonNull<u8>,
    len: usize,
    meta_rw: Option<NonNull<u8>>,
    /// The kernel refused `MADV_POPULATE_READ` once: do not ask again.
    populate_refused: std::sync::atomic::AtomicBool,
    /// Advised `MADV_RANDOM` on a disk-backed file: `populate` reads ahead itself.
    ahead: ReadAhead,
}

// SAFETY: the mappings are owned by this value and only read through atomics (or copied with
// atomic word loads); nothing in them is tied to a thread.
unsafe impl Send for SharedMap {}
// SAFETY: as above.
unsafe impl Sync for SharedMap {}

impl SharedMap {
    /// Maps the first `len` bytes of `file` (a multiple of 4096, at least 8192) read-only, and
    /// its first page writable too if `rw_file` is given.
    pub(crate) fn map(
        file: &File,
        rw_file: Option<&File>,
        path: &Path,
        len: usize,
    ) -> Result<Self> {
        let size = NonZeroUsize::new(len).ok_or_else(|| Error::InvalidCapacity {
            path: path.into(),
            capacity: 0,
            reason: "empty mapping",
        })?;
        // SAFETY: a new shared mapping of a file we hold open, at an address the kernel picks.
        let ptr = unsafe {
            mman::mmap(
                None,
                size,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                file.as_fd(),
                0,
            )
        }
        .map_err(|e| Error::io(path, "mmap", e.into()))?;
        // A reader's faults must not fill the page cache with the large folios the writer's
        // syncs would then write back whole (see `page_cache_advice`).
        // SAFETY: the whole of our new mapping, `len` bytes from `ptr`.
        let ahead = unsafe {
            ReadAhead::advise(
                file,
                rw_file.is_some(),
                !in_memory(file),
                ptr.as_ptr().cast(),
                len,
            )
        };
        let meta_rw = rw_file.and_then(map_first_page_rw);
        Ok(SharedMap {
            ptr: ptr.cast(),
            len,
            meta_rw,
            populate_refused: false.into(),
            ahead,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Maps the first page of `rw_file` (the file mapped, opened for writing) writable, if it
    /// is not yet: for a reader that opened a version-1 log, which a writer has upgraded since
    /// (the sleepers flag is then the writer's). Says whether the page is mapped writable.
    pub(crate) fn attach_meta_rw(&mut self, rw_file: &File) -> bool {
        if self.meta_rw.is_none() {
            self.meta_rw = map_first_page_rw(rw_file);
        }
        self.meta_rw.is_some()
    }

    /// Copies `dst.len()` bytes from offset `off` (both multiples of 8 bytes, in bounds) with
    /// 8-byte atomic loads. Another process may be storing into them: the copy can be torn,
    /// which the caller's validation (checksums) must catch.
    pub(crate) fn copy_out(&self, off: usize, dst: &mut [u8]) {
        assert!(
            off.is_multiple_of(8)
                && dst.len().is_multiple_of(8)
                && off <= self.len
                && dst.len() <= self.len - off,
            "copy outside the mapping"
        );
        for (i, chunk) in dst.chunks_exact_mut(8).enumerate() {
            // SAFETY: in bounds and 8-byte aligned (checked above; the mapping is
            // page-aligned); an atomic load of a word of shared memory, which no reference
            // aliases.
            let w = unsafe {
                (*(self.ptr.as_ptr().add(off + i * 8) as *const AtomicU64)).load(Ordering::Relaxed)
            };
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        std::sync::atomic::fence(Ordering::Acquire);
    }

    /// Asks the kernel to map the pages of `[off, off + len)` (cut to the mapping) for
    /// reading now (`MADV_POPULATE_READ`, Linux 5.14), and returns the page-aligned range it
    /// covered; an empty range where the kernel does not know the advice. Only a hint: the
    /// bytes are read with `copy_out` as before.
    pub(crate) fn populate(&self, off: usize, len: usize) -> std::ops::Range<usize> {
        if self.populate_refused.load(Ordering::Relaxed) {
            return 0..0;
        }
        let lo = off / PAGE * PAGE;
        let hi = (off.saturating_add(len)).min(self.len).div_ceil(PAGE) * PAGE;
        let hi = hi.min(self.len);
        if lo >= hi {
            return 0..0;
        }
        // SAFETY: `[lo, hi)` lies inside our mapping.
        let _ = unsafe { self.ahead.read(self.ptr.as_ptr().add(lo), hi - lo) };
        // SAFETY: advice on pages of our own mapping (in bounds, page-aligned); it changes no
        // byte and creates no reference.
        let rc = unsafe {
            libc::madvise(
                self.ptr.as_ptr().add(lo).cast(),
                hi - lo,
                MADV_POPULATE_READ,
            )
        };
        if rc != 0 {
            // EINVAL: an older kernel. Other errors (EFAULT past a shrunk file, EINTR): let
            // the reads find out.
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                self.populate_refused.store(true, Ordering::Relaxed);
            }
            return 0..0;
        }
        lo..hi
    }

    /// The 8-byte word at `off` (a multiple of 8, in bounds).
    pub(crate) fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.len,
            "word outside the mapping"
        );
        // SAFETY: in bounds and aligned (checked above); shared memory only ever accessed
        // through atomics or `copy_out`, never lent as a slice.
        unsafe { &*(self.ptr.as_ptr().add(off) as *const AtomicU64) }
    }

    /// Sleeps until the published LSN is no longer `seen` or `timeout` passes (or at once, if
    /// it changed already). Without a writable first page it just sleeps a little (polling).
    pub(crate) fn wait_published(&self, seen: u64, timeout: std::time::Duration) {
        let published = self.word(PUBLISHED_OFFSET);
        let Some(rw) = self.meta_rw else {
            std::thread::sleep(timeout.min(std::time::Duration::from_micros(200)));
            return;
        };
        // SAFETY: the sleepers flag lies in the writable first page mapped above, 4-byte
        // aligned; only atomics touch it.
        let sleepers = unsafe { &*(rw.as_ptr().add(SLEEPERS_OFFSET) as *const AtomicU32) };
        sleepers.store(1, Ordering::SeqCst);
        if published.load(Ordering::SeqCst) != seen {
            return;
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT reads the 32-bit word at the address (the low half of the
        // published LSN, inside our read-only mapping) and compares it with `seen`'s low half;
        // `ts` lives for the call.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                published.as_ptr() as *const u32,
                libc::FUTEX_WAIT,
                seen as u32,
                &ts as *const libc::timespec,
                0,
                0,
            );
        }
    }
}

/// The first page of `f` (open for writing) mapped shared and writable; `None` if refused.
fn map_first_page_rw(f: &File) -> Option<NonNull<u8>> {
    let page = NonZeroUsize::new(PAGE).expect("non-zero");
    // SAFETY: a new shared mapping of one page of a file we hold open for writing, at an
    // address the kernel picks; only atomics touch it.
    unsafe {
        mman::mmap(
            None,
            page,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            f.as_fd(),
            0,
        )
    }
    .ok()
    .map(|p| p.cast())
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mappings; no reference into them outlives `self`.
        unsafe {
            let _ = mman::munmap(self.ptr.cast(), self.len);
            if let Some(p) = self.meta_rw {
                let _ = mman::munmap(p.cast(), PAGE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::{Log, Options};

    /// A new file of `len` bytes, fallocated, in the temporary directory, if that file system
    /// keeps an extent map (tmpfs keeps none, and has no unwritten blocks to find).
    fn fallocated(dir: &Path, len: u64) -> Option<File> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("f"))
            .unwrap();
        assert!(!allocate(&file, len).unwrap(), "fallocate emulated here");
        let probe = unwritten_ranges(&file, 0, len, &mut Vec::new());
        if probe.is_err() || in_memory(&file) {
            eprintln!("no extent map in the temporary directory: nothing to test");
            return None;
        }
        Some(file)
    }

    /// A new fallocated file of 4 MiB (as [`fallocated`]) and its mapping in msync mode.
    fn mapped(dir: &Path) -> Option<(File, MmapMedia)> {
        let file = fallocated(dir, 4 << 20)?;
        let media = MmapMedia::map(
            file.try_clone().unwrap(),
            &dir.join("f"),
            4 << 20,
            true,
            PersistenceChoice::ForceMsync,
            None,
            false,
        )
        .unwrap();
        Some((file, media))
    }

    /// Whether `ranges` cover every byte of `[from, to)` (they may overlap one another).
    fn covered(ranges: &[(u64, u64)], from: u64, to: u64) -> bool {
        let mut at = from;
        let mut sorted = ranges.to_vec();
        sorted.sort();
        for (a, b) in sorted {
            if a <= at && b > at {
                at = b;
            }
        }
        at >= to
    }

    /// A range inside the one asked last, less than `ASKED_FRESH` ago, is not asked again
    /// while its last page is cached; one reaching outside it, asked after that, or whose
    /// pages were dropped, is.
    #[test]
    fn a_range_asked_to_be_read_ahead_is_not_asked_again_while_fresh() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("ahead"))
            .unwrap();
        let len = 64 * PAGE;
        // Written and synced: cached, clean (so that they can be dropped), and not mapped.
        file.write_all(&vec![7u8; len]).unwrap();
        file.sync_all().unwrap();
        // SAFETY: a new shared mapping of the file just made, unmapped at the end of the test.
        let ptr = unsafe {
            mman::mmap(
                None,
                NonZeroUsize::new(len).unwrap(),
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .unwrap();
        let base = ptr.as_ptr() as *const u8;
        let ahead = ReadAhead {
            random: true,
            mincore: true,
            asked: Mutex::new(None),
        };
        // SAFETY (every call below): ranges inside the mapping made above.
        let ask = |off: usize, n: usize| unsafe { ahead.read(base.add(off), n) };
        assert!(ask(8 * PAGE, 16 * PAGE), "the first time");
        assert!(!ask(8 * PAGE, 16 * PAGE), "the same range, at once");
        assert!(!ask(10 * PAGE + 100, 4 * PAGE), "inside it");
        assert!(ask(20 * PAGE, 8 * PAGE), "reaching past its end");
        assert!(!ask(22 * PAGE, 6 * PAGE), "inside the range asked last");
        assert!(ask(8 * PAGE, 4 * PAGE), "inside an earlier range only");
        let old = std::time::Instant::now()
            .checked_sub(ASKED_FRESH)
            .expect("a clock past the interval");
        ahead.asked.lock().unwrap().as_mut().unwrap().at = old;
        assert!(ask(9 * PAGE, PAGE), "asked longer ago than the interval");
        assert!(ask(8 * PAGE, 16 * PAGE));
        // Dropped from the page cache (not on tmpfs, which keeps them): asked again.
        // SAFETY: advice on the file descriptor we own; it changes no byte.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        // SAFETY: a page of the mapping made above.
        if unsafe { !page_cached(base as usize + 23 * PAGE) } {
            assert!(ask(10 * PAGE, 14 * PAGE), "its pages were dropped");
        }
        let not_random = ReadAhead {
            random: false,
            mincore: true,
            asked: Mutex::new(None),
        };
        // SAFETY: as above.
        assert!(!unsafe { not_random.read(base, PAGE) }, "faults read ahead");
        // SAFETY: the mapping made above; nothing refers to it any more.
        unsafe { mman::munmap(ptr, len) }.unwrap();
    }

    #[test]
    fn unwritten_ranges_tells_written_blocks_from_unwritten_ones() {
        let dir = tempfile::tempdir().unwrap();
        let Some(file) = fallocated(dir.path(), 1 << 20) else {
            return;
        };
        let mut all = Vec::new();
        unwritten_ranges(&file, 0, 1 << 20, &mut all).unwrap();
        assert!(covered(&all, 0, 1 << 20), "{all:?}");

        file.write_all_at(&[1; 4096], 256 << 10).unwrap();
        file.sync_data().unwrap();
        let mut now = Vec::new();
        unwritten_ranges(&file, 0, 1 << 20, &mut now).unwrap();
        assert!(covered(&now, 0, 256 << 10), "{now:?}");
        assert!(covered(&now, 260 << 10, 1 << 20), "{now:?}");
        assert!(
            now.iter().all(|&(a, b)| b <= 256 << 10 || a >= 260 << 10),
            "the written page is reported unwritten: {now:?}"
        );
        // Asked from the middle of an extent, it reports that extent.
        let mut part = Vec::new();
        unwritten_ranges(&file, 512 << 10, 520 << 10, &mut part).unwrap();
        assert!(covered(&part, 512 << 10, 520 << 10), "{part:?}");
    }

    /// A new log of `cap` bytes (prefilled or not) in `dir`, and its path; `None` where the
    /// directory's file system has no extent map to tell unwritten blocks (nothing to test).
    fn log_on_disk(dir: &Path, cap: usize, prefill: bool) -> Option<(std::path::PathBuf, Log)> {
        fallocated(dir, 4096)?;
        let path = dir.join("log.dax");
        let opts = Options::new().capacity(cap as u64).prefill(prefill);
        Some((path.clone(), Log::create(&path, &opts).unwrap()))
    }

    /// Bytes in a group of chunks written ahead at once.
    const GROUP: usize = crate::log::AHEAD_GROUP * crate::log::PREPARE_CHUNK;

    #[test]
    fn a_new_log_on_a_disk_writes_the_unwritten_blocks_ahead_of_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let cap = 64 << 20;
        let Some((path, log)) = log_on_disk(dir.path(), cap as usize, false) else {
            return;
        };
        assert_eq!(log.persistence(), Persistence::Msync);
        let payload = |i: u64| vec![i as u8 ^ 0x5a; 4096];
        for i in 0..4 {
            log.append(&payload(i)).unwrap();
        }
        // The write-back of the next chunk was started, not waited for.
        let ranges = unwritten_after_write_back(&path, cap);
        // The chunk of the tail and the one after it are written, entries or zeros...
        let ahead = 2 * crate::log::PREPARE_CHUNK as u64;
        assert!(
            ranges.iter().all(|&(a, _)| a >= ahead),
            "unwritten blocks left in the first {ahead} bytes: {ranges:?}"
        );
        // ... and the rest of the file is not (in its first group, a log writes one chunk ahead).
        assert!(covered(&ranges, ahead, cap), "{ranges:?}");
        for i in 0..4 {
            assert_eq!(log.read(i + 1).unwrap().payload, payload(i));
        }
    }

    /// The file's unwritten ranges in `[0, len)`, once every write-back started has ended
    /// (and converted its extents); starting none.
    fn unwritten_after_write_back(path: &Path, len: u64) -> Vec<(u64, u64)> {
        let file = File::open(path).unwrap();
        // SAFETY: a system call on our own file, touching no memory.
        let rc = unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                0,
                0,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            )
        };
        assert_eq!(rc, 0);
        let mut ranges = Vec::new();
        unwritten_ranges(&file, 0, len, &mut ranges).unwrap();
        ranges
    }

    #[test]
    fn past_its_first_group_a_new_log_writes_a_whole_group_ahead_at_once() {
        use crate::log::PREPARE_CHUNK;
        let dir = tempfile::tempdir().unwrap();
        let (group, cap) = (GROUP, 3 * GROUP);
        let Some((path, log)) = log_on_disk(dir.path(), cap, false) else {
            return;
        };
        // Entries of 64 KiB exactly, the first at DATA_OFFSET.
        let entry = 64 << 10;
        let payload = vec![0xa5; entry - crate::format::HEADER_LEN];
        let mut end = DATA_OFFSET;
        let mut fill_to = |to: usize| {
            while end + entry <= to {
                log.append(&payload).unwrap();
                end += entry;
            }
        };
        // The tail in the group's second-to-last chunk: written one chunk ahead, no more.
        fill_to(group - PREPARE_CHUNK - entry);
        let ranges = unwritten_after_write_back(&path, cap as u64);
        assert!(
            ranges.iter().all(|&(a, _)| a >= group as u64),
            "unwritten blocks left in the first group: {ranges:?}"
        );
        assert!(covered(&ranges, group as u64, cap as u64), "{ranges:?}");
        // In its last chunk: the whole next group is written ahead, and nothing past it.
        fill_to(group - PREPARE_CHUNK + entry);
        let ranges = unwritten_after_write_back(&path, cap as u64);
        assert!(
            ranges.iter().all(|&(a, _)| a >= 2 * group as u64),
            "the next group is not written ahead whole: {ranges:?}"
        );
        assert!(covered(&ranges, 2 * group as u64, cap as u64), "{ranges:?}");
        let n = (end - DATA_OFFSET) / entry;
        assert_eq!(log.read(n as u64).unwrap().payload, payload);
    }

    /// Whether the log prepared chunk `c` (and wrote it ahead, if it had unwritten blocks).
    fn prepared(log: &Log, c: usize) -> bool {
        log.populated[c / 64].load(std::sync::atomic::Ordering::Acquire) & 1 << (c % 64) != 0
    }

    #[test]
    fn large_appends_that_step_over_a_group_start_write_the_group_ahead() {
        use crate::log::PREPARE_CHUNK;
        let dir = tempfile::tempdir().unwrap();
        let (group, cap) = (GROUP, 4 * GROUP);
        let Some((path, log)) = log_on_disk(dir.path(), cap, false) else {
            return;
        };
        // 3 MiB appends: the chunk after an append's end steps over group starts (its index
        // goes 23, 25). Past the middle of the third group's last chunk:
        let payload = vec![0x3c; 3 << 20];
        while DATA_OFFSET + (log.used_bytes() as usize) < 3 * group - PREPARE_CHUNK / 2 {
            log.append(&payload).unwrap();
        }
        let ranges = unwritten_after_write_back(&path, cap as u64);
        assert!(
            ranges.iter().all(|&(a, _)| a >= cap as u64),
            "the fourth group is not written ahead whole: {ranges:?}"
        );
    }

    #[test]
    fn a_log_with_its_blocks_written_prepares_one_chunk_ahead() {
        use crate::log::{AHEAD_GROUP, PREPARE_CHUNK};
        let dir = tempfile::tempdir().unwrap();
        let group = GROUP;
        let Some((_, log)) = log_on_disk(dir.path(), 2 * group, true) else {
            return;
        };
        assert!(log.writes_ahead());
        let payload = vec![0x11; (64 << 10) - crate::format::HEADER_LEN];
        while DATA_OFFSET + (log.used_bytes() as usize) < group - PREPARE_CHUNK / 2 {
            log.append(&payload).unwrap();
        }
        // In the first group's last chunk: the next is prepared, and nothing past it (a
        // prefilled log has nothing to write ahead, and no group is).
        assert!(prepared(&log, AHEAD_GROUP));
        assert!(
            !(AHEAD_GROUP + 1..2 * AHEAD_GROUP).any(|c| prepared(&log, c)),
            "chunks of the second group were prepared ahead of the tail"
        );
    }

    #[test]
    fn writing_unwritten_blocks_ahead_keeps_bytes_stored_in_them() {
        let dir = tempfile::tempdir().unwrap();
        let Some((file, media)) = mapped(dir.path()) else {
            return;
        };
        // Bytes stored, not yet synced, into unwritten blocks: as an append's, between its
        // stores and its sync, in the chunk being prepared.
        let at = (1 << 20) + 100;
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        // SAFETY: in bounds; no slice of the media is alive, and no other thread uses it.
        unsafe { media.store(at, &bytes) };
        assert!(media.writes_ahead());
        assert!(media.write_ahead(0, 4 << 20), "nothing written ahead");
        media.prepare(0, 4 << 20);
        // SAFETY: in bounds; no store happens while the slice is alive.
        let now = unsafe { media.read(at, bytes.len()) };
        assert!(now == &bytes[..], "the bytes in the mapping changed");
        media.verify_ahead(0, 4 << 20).unwrap();
        media.flush(at, bytes.len());
        media.drain().unwrap();
        drop(media);
        let mut back = vec![0; bytes.len()];
        file.read_exact_at(&mut back, at as u64).unwrap();
        assert!(back == bytes, "the bytes in the file differ");
        // And the blocks around them were written too.
        file.sync_data().unwrap();
        let mut left = Vec::new();
        unwritten_ranges(&file, 0, 4 << 20, &mut left).unwrap();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn the_check_of_a_chunk_writes_blocks_left_unwritten_once_more_and_waits() {
        let dir = tempfile::tempdir().unwrap();
        let Some((file, media)) = mapped(dir.path()) else {
            return;
        };
        // Blocks left unwritten in a chunk taken for written ahead (as where its write
        // faults failed): the check writes them, waits, and finds them written.
        let chunk = 2 << 20;
        let mut before = Vec::new();
        unwritten_ranges(&file, chunk as u64, 2 * chunk as u64, &mut before).unwrap();
        assert!(
            covered(&before, chunk as u64, 2 * chunk as u64),
            "{before:?}"
        );
        media.verify_ahead(chunk, chunk).unwrap();
        let mut after = Vec::new();
        unwritten_ranges(&file, 0, 4 << 20, &mut after).unwrap();
        assert!(
            after
                .iter()
                .all(|&(a, b)| b <= chunk as u64 || a >= 2 * chunk as u64),
            "still unwritten after the check: {after:?}"
        );
        // The chunk before was neither written ahead nor checked: unwritten still.
        assert!(covered(&after, 0, chunk as u64), "{after:?}");
    }

    #[test]
    fn appends_from_threads_over_blocks_written_ahead_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let Some((path, log)) = log_on_disk(dir.path(), 32 << 20, false) else {
            return;
        };
        // 4 threads x 640 x ~4 KiB: about 10 MiB, five chunks written ahead while appending.
        let payload = |t: usize, i: usize| {
            let mut p = vec![(t * 31 + i) as u8; 4000 + (i % 97)];
            p[..16].copy_from_slice(&((t as u64) << 32 | i as u64).to_le_bytes().repeat(2));
            p
        };
        let lsns: Vec<Vec<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let log = &log;
                    s.spawn(move || {
                        (0..640)
                            .map(|i| log.append(&payload(t, i)).unwrap())
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        drop(log);
        let log = Log::open(&path, &Options::new()).unwrap();
        for (t, mine) in lsns.iter().enumerate() {
            for (i, &lsn) in mine.iter().enumerate() {
                assert_eq!(log.read(lsn).unwrap().payload, payload(t, i), "lsn {lsn}");
            }
        }
        assert_eq!(log.last_lsn(), Some(4 * 640));
    }
}
