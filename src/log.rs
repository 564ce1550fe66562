//! The log: creating, opening (with recovery) and inspecting it.
//!
//! The append path is in `append.rs`, reading in `iter.rs`.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, LockHolder, Result};
use crate::format::{
    self, Slot, Superblock, DATA_OFFSET, HEADER_LEN, SB_BACKUP_OFFSET, SB_PRIMARY_OFFSET, SLOT_LEN,
};
use crate::index::Index;
use crate::map::{
    allocate, ensure_allocated, fill_random, lock_dir, lock_exclusive, lock_replaced,
    lock_snapshot, sync_parent_dir, write_zeros, MmapMedia,
};
use crate::media::{Live, Media, Padded, Persistence, Pmem, WriteToken};
use crate::options::{Options, RecoveryMode};
use crate::recover::{self, decode_superblocks, new_epoch, RecoveryReport};
use crate::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use crate::sync::{parking_lot, Condvar, Mutex, RwLock};
use crate::tickets::{State, TicketSlot};
use crate::walk;
use crate::Lsn;

/// The name used in errors for media that are not files.
const MEDIA_NAME: &str = "(media)";

/// An append-only, crash-safe log.
///
/// `Log` is `Send + Sync`: share it between threads by reference or `Arc`. Appends take no
/// lock: each reserves its bytes and LSNs with one compare-and-swap, stores and persists them
/// in parallel with the others, and returns once it and every earlier append are durable
/// (FORMAT.md, "Concurrency"). Readers never block appends and see only durable entries.
///
/// The type parameter is the media; the default, [`MmapMedia`], is a mapped file. Other media
/// (such as the `pmem-sim` simulator) plug in through [`Log::create_on`] and [`Log::open_on`].
///
/// ```
/// # fn main() -> Result<(), daxlog::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("journal.dax");
/// use daxlog::{Log, Options};
///
/// let log = Log::create(&path, &Options::new().capacity(1 << 20))?;
/// let a = log.append(b"mkdir /a")?;
/// let b = log.append(b"create /a/x")?;
/// assert_eq!((a, b), (1, 2));
/// drop(log);
///
/// let log = Log::open(&path, &Options::new())?;
/// assert_eq!(log.recovery().entries, 2);
/// let ops: Vec<Vec<u8>> = log.iter().map(|e| e.payload).collect(); // copies
/// assert_eq!(ops, [&b"mkdir /a"[..], b"create /a/x"]);
/// let guard = log.pin(); // or without copying, while the guard lives
/// let ops: Vec<&[u8]> = guard.iter().map(|e| e.payload).collect();
/// assert_eq!(ops, [&b"mkdir /a"[..], b"create /a/x"]);
/// # Ok(()) }
/// ```
pub struct Log<M: Media = MmapMedia> {
    /// The media (dropped by [`Log`]'s `drop`, first, as the first field would be, unless
    /// [`Log::into_media`] took it: `media_taken`).
    pub(crate) pmem: std::mem::ManuallyDrop<Pmem<M>>,
    /// [`Log::into_media`] took `pmem`.
    media_taken: bool,
    pub(crate) sb: Superblock,
    pub(crate) writer: parking_lot::Mutex<Writer>,
    pub(crate) index: RwLock<Index>,
    /// The first live LSN (moved by prefix truncations, under the pin table's lock, together
    /// with the head; see `pins.rs`).
    pub(crate) first_lsn: AtomicU64,
    /// Reader positions, the head, and the limit appenders keep before (`pins.rs`).
    pub(crate) pins: crate::pins::Pins,
    /// Serialises truncations with each other.
    pub(crate) truncating: parking_lot::Mutex<()>,
    /// The first deleted LSN of the last [`crate::format::DELETION_RING`] suffix truncations
    /// of the session, in order, and how many there were in all (what followers compare
    /// against).
    pub(crate) deletions: parking_lot::Mutex<std::collections::VecDeque<Lsn>>,
    pub(crate) deleted: AtomicU64,
    /// LSN of the last durable entry; `first_lsn - 1` when the log is empty.
    pub(crate) last_lsn: Padded<AtomicU64>,
    pub(crate) nt_threshold: usize,
    /// The same for small batches, stored as one run ([`Log::batch_nt_threshold`]).
    pub(crate) batch_nt_threshold: usize,
    /// The host's measurement the thresholds came from, if they did.
    pub(crate) calibration: Option<&'static crate::calibrate::Calibration>,
    pub(crate) read_only: bool,
    pub(crate) report: RecoveryReport,
    /// The file path, or a placeholder for other media; used in error messages.
    pub(crate) name: PathBuf,
    /// The reservation word: tail, ticket count, flags and next LSN (`tickets.rs`; the
    /// protocol in `reserve.rs`).
    pub(crate) resv: Padded<crate::atomic_pair::AtomicPair>,
    /// Tickets below this are published.
    pub(crate) published: Padded<AtomicU64>,
    /// The publication ring: one slot per ticket in flight.
    pub(crate) ring: Box<[TicketSlot]>,
    /// The session's epoch (a suffix truncation changes it while no reservation exists, and
    /// appenders read it after their reservation).
    pub(crate) epoch: std::sync::atomic::AtomicU32,
    /// One bit per 2 MiB chunk of the file: already prefaulted in this mapping.
    pub(crate) populated: Box<[AtomicU64]>,
    /// Where the media write blocks ahead of the tail ([`Media::writes_ahead`]): one bit per
    /// chunk written ahead and not yet seen to reach the file (`Log::check_ahead`), and the
    /// lock under which chunks are written ahead and checked.
    pub(crate) ahead_pending: Box<[AtomicU64]>,
    pub(crate) ahead_lock: parking_lot::Mutex<()>,
    /// Tail hint: written every this many published bytes (None: never), and the bytes
    /// published since the last one (only the publisher of the moment touches it).
    pub(crate) hint_every: Option<u64>,
    pub(crate) since_hint: Padded<AtomicU64>,
    /// Appenders sleeping on `wake`, and the condition variable they sleep on.
    pub(crate) waiters: Padded<AtomicUsize>,
    pub(crate) wake_lock: Mutex<()>,
    pub(crate) wake: Condvar,
    /// msync mode: the group commit's state (`group.rs`; the protocol in `disk.rs`).
    pub(crate) group: crate::group::GroupCommit,
    /// msync mode on slow media: appends waiting to ride in another's batch (`combine.rs`).
    pub(crate) combiner: crate::combine::Combiner,
    /// Mirrors `Writer::poisoned` for waiters.
    pub(crate) poisoned: AtomicBool,
    /// Set while a writable open takes lost LSNs with padding (`Log::pad_lost`): publications
    /// leave the reader area's words as they are.
    pub(crate) holding_words: AtomicBool,
}

/// Metadata state: the slot and the right to store into the metadata area. Appends take it
/// only for rare events (the first overlap of a session, a tail hint, a failed barrier).
pub(crate) struct Writer {
    pub(crate) token: WriteToken,
    pub(crate) slot: Slot,
    /// Set when a barrier failed: durability is unknown, appends are refused.
    pub(crate) poisoned: Option<PoisonCause>,
}

/// Why a log refuses appends after a failed barrier.
#[derive(Clone, Debug)]
pub(crate) struct PoisonCause(pub(crate) String);

/// Pages are prefaulted in chunks of this size, one chunk ahead of the tail.
pub(crate) const PREPARE_CHUNK: usize = 2 << 20;

/// Where a log writes its unwritten blocks ahead of its tail ([`Log::writes_ahead`]), it
/// writes them this many chunks at a time (16 MiB) past its first group: each write-ahead
/// makes the next sync commit the file system's journal (the blocks' conversion to written
/// extents), and eight chunks share one commit. docs/DISK.md, "Writing ahead of the tail".
pub(crate) const AHEAD_GROUP: usize = 8;

/// One bit per chunk of a log of `capacity` bytes, all clear.
fn chunk_bits(capacity: u64) -> Box<[AtomicU64]> {
    (0..(capacity as usize).div_ceil(PREPARE_CHUNK * 64))
        .map(|_| AtomicU64::new(0))
        .collect()
}

impl<M: Media> std::fmt::Debug for Log<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("uuid", &self.sb.uuid_string())
            .field("capacity", &self.sb.capacity)
            .field("persistence", &self.persistence())
            .field("first_lsn", &self.first_lsn())
            .field("last_lsn", &self.last_lsn())
            .field("read_only", &self.read_only)
            .finish()
    }
}

impl Log<MmapMedia> {
    /// Creates a new log file of `opts`' capacity and opens it for writing.
    ///
    /// The log is built in a new file beside `path` (an unpredictable name, created
    /// exclusively with the permission bits of [`Options::mode`], `0o600` by default), fully
    /// allocated (so that no page fault can ever find the file system full), formatted and
    /// made durable, and only then renamed to `path`. So:
    /// - nothing is left behind if creation fails (no room, an I/O error): `path` is as it was;
    /// - without [`Options::overwrite`] the rename is exclusive: [`Error::AlreadyExists`] if
    ///   anything exists at `path`, even if it appeared while the log was being built, and
    ///   nothing there is ever opened or written;
    /// - with [`Options::overwrite`] an existing file is replaced only once the new log is
    ///   complete (a crash leaves the old file or the new log), a log that a writer holds
    ///   open is refused with [`Error::Locked`], and a symbolic link at `path` is itself
    ///   replaced: its target is never written.
    ///
    /// A process killed while building leaves a file named `.NAME.XXXXXX.tmp` beside `path`,
    /// which can be removed.
    pub fn create(path: impl AsRef<Path>, opts: &Options) -> Result<Self> {
        let path = path.as_ref();
        // The environment is checked before anything at the path is looked at.
        let opts = &opts.resolve_env()?;
        let capacity = opts.capacity;
        format::validate_capacity(capacity).map_err(|reason| Error::InvalidCapacity {
            path: path.into(),
            capacity,
            reason,
        })?;
        check_first_lsn(opts.first_lsn, path)?;
        // Held until the new log is in place: no writer can open the old one meanwhile.
        let mut old = wait_for_lock(opts.lock_wait, || Replaced::find(path, opts.overwrite))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| Error::IsDirectory { path: path.into() })?;
        // A name the directory cannot hold fails before the log is built (the rename would).
        // (Linux's `NAME_MAX`, which every file system it mounts keeps to.)
        if std::os::unix::ffi::OsStrExt::as_bytes(name).len() > 255 {
            return Err(Error::io(
                path,
                "create",
                std::io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            ));
        }
        // (At most 200 bytes of the name: the temporary name must fit where the name does.)
        let full = name.to_string_lossy();
        let mut cut = full.len().min(200);
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        let stem = &full[..cut];
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{stem}."))
            .suffix(".tmp")
            .permissions(std::fs::Permissions::from_mode(opts.mode))
            .tempfile_in(dir)
            .map_err(|e| Error::io(path, "create", e))?;
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| Error::io(path, "create", e))?;
        lock_exclusive(&file, path)?;
        let zeroed = allocate(&file, capacity).map_err(|e| Error::io(path, "fallocate", e))?;
        if opts.prefill && !zeroed {
            write_zeros(&file, capacity).map_err(|e| Error::io(path, "write (prefill)", e))?;
        }
        file.sync_all().map_err(|e| Error::io(path, "fsync", e))?;
        let media = MmapMedia::map(
            file,
            path,
            capacity as usize,
            true,
            opts.resolved_persistence(),
            opts.resolved_flush(),
            opts.resolved_huge_page_align(),
        )?;
        // The file was allocated anew: its data area is zero.
        let log = Self::format(media, opts, path, true)?;
        // Creators in this directory take turns from their look at what is at the path to
        // their rename over it: another creator may have placed its log where nothing, a link
        // or another entry was, and its writer may be appending to it. (A file found at the
        // start and still at the path has been locked since: a creator that finds it now is
        // refused. But it may have been removed, and another log placed there since.)
        #[cfg(feature = "mutants")]
        crate::mutants::BEFORE_PLACING.here();
        let turn = lock_dir(dir);
        if !old.is_at(path) {
            old = Replaced::find(path, opts.overwrite)?;
        }
        let placed = match old {
            // (No clobbering even so: a program that takes no turns may have put something.)
            Replaced::Nothing => tmp.persist_noclobber(path),
            Replaced::File(_) | Replaced::Link => tmp.persist(path),
        };
        placed.map_err(|e| match e.error.kind() {
            std::io::ErrorKind::AlreadyExists => Error::AlreadyExists { path: path.into() },
            _ => Error::io(path, "rename", e.error),
        })?;
        // (The new log is at the path: the next creator's look finds it.)
        drop(turn);
        drop(old);
        sync_parent_dir(path).map_err(|e| Error::io(path, "fsync (directory)", e))?;
        Ok(log)
    }

    /// Opens an existing log for writing, recovering it: see [`Log::recovery`] for what was
    /// found. Takes an exclusive lock on the file; a second writer gets [`Error::Locked`].
    pub fn open(path: impl AsRef<Path>, opts: &Options) -> Result<Self> {
        let path = path.as_ref();
        wait_for_lock(opts.lock_wait, || Self::open_file(path, opts, true))
    }

    /// Opens a consistent snapshot of a log that no writer has open, for reading only (works
    /// on a read-only file; writes nothing; appends fail with [`Error::ReadOnly`]): offline
    /// tools, salvage, tests. Its reads are zero-copy slices into the mapping, which is sound
    /// only while nobody writes the file, so it holds a shared `flock` that a writer's open
    /// refuses (and fails with [`Error::Locked`] while a writer has the log open).
    ///
    /// To read a log that a writer in another process keeps appending to — a replication
    /// shipper, an audit tool, `daxlog follow` — use [`crate::Reader`], whose reads copy each
    /// entry out and validate the copy. Within the writer's process, read through the writer's
    /// own `Log` (`iter`, `read`, `follow`): there the engine knows what is live, and slices
    /// stay zero-copy.
    pub fn open_read_only(path: impl AsRef<Path>, opts: &Options) -> Result<Self> {
        let path = path.as_ref();
        wait_for_lock(opts.lock_wait, || Self::open_file(path, opts, false))
    }

    /// True if the kernel granted `MAP_SYNC`: the file lives on a DAX file system and CPU
    /// flushes alone make appends durable.
    pub fn map_sync(&self) -> bool {
        self.pmem.media().map_sync()
    }

    /// True if an acknowledged append survives a power failure on this mapping: the kernel
    /// granted `MAP_SYNC` (CPU flushes reach persistent memory), or the barrier is `msync`.
    /// False only when CPU flushes were forced without `MAP_SYNC`
    /// ([`PersistenceChoice::ForceCpuFlush`](crate::PersistenceChoice::ForceCpuFlush), for
    /// measuring the flush path on DRAM): then an append survives the crash of the process,
    /// not of the machine.
    pub fn is_durable(&self) -> bool {
        self.map_sync() || !self.persistence().is_cpu_flush()
    }

    /// The path of the log file.
    pub fn path(&self) -> &Path {
        self.pmem.media().path()
    }

    fn open_file(path: &Path, opts: &Options, writable: bool) -> Result<Self> {
        let start = Instant::now();
        // Options that cannot work are refused before the file is opened.
        let opts = &opts.resolve_env()?;
        check_mode(opts, writable, path)?;
        // (Else a writer could append to a file no longer at the path, lost to everyone.)
        let file = crate::map::open_current(path, || {
            let file = crate::map::open_log_file(path, writable)?;
            #[cfg(feature = "mutants")]
            crate::mutants::BEFORE_LOCKING.here();
            if writable {
                lock_exclusive(&file, path)?;
            } else {
                // A snapshot: no writer can change what its zero-copy slices point at.
                lock_snapshot(&file, path)?;
            }
            Ok(crate::map::names(path, &file).then_some(file))
        })?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(path, "stat", e))?
            .len();
        if file_len == 0 {
            return Err(Error::EmptyFile { path: path.into() });
        }
        if file_len < DATA_OFFSET as u64 {
            return Err(Error::TooSmall {
                path: path.into(),
                len: file_len,
                min: DATA_OFFSET as u64,
            });
        }
        let mut meta_page = vec![0u8; DATA_OFFSET];
        file.read_exact_at(&mut meta_page, 0)
            .map_err(|e| Error::io(path, "read", e))?;
        let (sb, _) = decode_superblocks(&meta_page, path)?;
        if file_len < sb.capacity {
            return Err(Error::FileShorterThanCapacity {
                path: path.into(),
                file_len,
                capacity: sb.capacity,
            });
        }
        if writable {
            if file_len > sb.capacity {
                tracing::warn!(
                    path = %path.display(),
                    file_len,
                    capacity = sb.capacity,
                    "daxlog: the file is longer than the log's capacity (grown after it was \
                     created?); the bytes past the capacity are not used"
                );
            }
            // Stores into a hole of the mapping would need a block at fault time.
            ensure_allocated(&file, path, sb.capacity)?;
        }
        let media = MmapMedia::map(
            file,
            path,
            sb.capacity as usize,
            writable,
            opts.resolved_persistence(),
            opts.resolved_flush(),
            opts.resolved_huge_page_align(),
        )?;
        Self::recover(media, opts, writable, path, start)
    }
}

impl<M: Media> Log<M> {
    /// Formats `media` as a new, empty log and opens it for writing. The capacity is the
    /// media's length; whatever the media held before can never be read back as entries.
    pub fn create_on(media: M, opts: &Options) -> Result<Self> {
        Self::format(media, &opts.resolve_env()?, Path::new(MEDIA_NAME), false)
    }

    fn format(media: M, opts: &Options, path: &Path, zeroed: bool) -> Result<Self> {
        check_cpu(path)?;
        check_first_lsn(opts.first_lsn, path)?;
        let first = opts.first_lsn;
        let capacity = media.len() as u64;
        format::validate_capacity(capacity).map_err(|reason| Error::InvalidCapacity {
            path: path.into(),
            capacity,
            reason,
        })?;
        let mut pmem = Pmem::new(media, DATA_OFFSET);
        let mut uuid = [0u8; 16];
        fill_random(&mut uuid);
        let mut salt = [0u8; 4];
        fill_random(&mut salt);
        let sb = Superblock {
            version: format::FORMAT_VERSION,
            uuid,
            capacity,
            salt: u32::from_le_bytes(salt),
        };
        let slot = Slot {
            seq: 1,
            head_offset: DATA_OFFSET as u64,
            head_lsn: first,
            cut_lsn: first,
            epoch: new_epoch(None),
            flags: 0,
            hint_offset: 0,
            hint_lsn: 0,
        };
        let sb_bytes = sb.encode();
        pmem.store_exclusive(SB_PRIMARY_OFFSET, &sb_bytes);
        pmem.store_exclusive(SB_BACKUP_OFFSET, &sb_bytes);
        if !zeroed {
            // Over an earlier log: the new superblock (its salt) durable first, so that no
            // crash leaves that log's slots half overwritten under its own salt, where a slot
            // that was current would look damaged beside the entries written under it. And
            // that log's published LSN cleared: recovery takes entries below it for
            // acknowledged ones (FORMAT.md section 7, rule 4).
            pmem.store_exclusive(format::PUBLISHED_OFFSET, &[0; format::READER_WORDS_LEN]);
            pmem.flush(0, SB_BACKUP_OFFSET + format::SB_LEN);
            pmem.flush(format::PUBLISHED_OFFSET, format::READER_WORDS_LEN);
            pmem.drain().map_err(|e| Error::io(path, "drain", e))?;
        }
        pmem.store_exclusive(Slot::offset_for(slot.seq), &slot.encode(sb.salt));
        let other = Slot::offset_for(slot.seq + 1);
        pmem.store_exclusive(other, &[0u8; SLOT_LEN]);
        // An empty first header, so the new log reports a clean end.
        pmem.store_exclusive(DATA_OFFSET, &[0u8; HEADER_LEN]);
        pmem.flush(0, DATA_OFFSET + HEADER_LEN);
        pmem.drain().map_err(|e| Error::io(path, "drain", e))?;
        pmem.media().publish_for_readers(first);
        let persistence = pmem.media().persistence();
        tracing::info!(uuid = %sb.uuid_string(), capacity, %persistence, "daxlog: created log");
        let report = RecoveryReport {
            entries: 0,
            first_lsn: None,
            last_lsn: None,
            tail_offset: DATA_OFFSET as u64,
            torn_offset: DATA_OFFSET as u64,
            torn_bytes: 0,
            torn_entries: 0,
            tail_state: walk::TailState::Clean,
            superblock_from_backup: false,
            unreadable_slot: None,
            slot_repaired: false,
            duration: Default::default(),
            persistence,
            damage: None,
            gaps: Vec::new(),
            scanned_from: first,
            published_missing: None,
        };
        let scan = walk::Scan {
            tail: DATA_OFFSET,
            wrap_at: 0,
            next_lsn: first,
            entries: 0,
            torn_bytes: 0,
            torn_start: DATA_OFFSET,
            state: walk::TailState::Clean,
            index: Vec::new(),
            index_base: first,
            scanned_from: first,
            stop: DATA_OFFSET,
            stop_lsn: first,
            refused: DATA_OFFSET,
        };
        Ok(Self::assemble(
            pmem, sb, slot, scan, opts, false, report, path, zeroed,
        ))
    }

    /// Opens the log stored on `media` for writing, recovering it.
    pub fn open_on(media: M, opts: &Options) -> Result<Self> {
        let opts = &opts.resolve_env()?;
        Self::recover(media, opts, true, Path::new(MEDIA_NAME), Instant::now())
    }

    /// Opens the log stored on `media` for reading only; nothing is written to the media.
    pub fn open_on_read_only(media: M, opts: &Options) -> Result<Self> {
        let opts = &opts.resolve_env()?;
        Self::recover(media, opts, false, Path::new(MEDIA_NAME), Instant::now())
    }

    /// Faults in every page of the data area now (`MADV_POPULATE_WRITE`), so that no append
    /// pays for a first touch later. By itself the log prefaults 2 MiB ahead of the tail as it
    /// goes. Does nothing on a read-only log.
    ///
    /// On a disk-backed file system (the `msync` path) the pages are mapped for reading; the
    /// blocks of a new log are still written ahead of the tail as the appends go (docs/DISK.md,
    /// "Writing ahead of the tail").
    pub fn prefault(&self) {
        if !self.read_only {
            let cap = self.sb.capacity as usize;
            self.pmem.media().prepare(DATA_OFFSET, cap - DATA_OFFSET);
            // (Where chunks are written ahead, the appends still do that as they reach them:
            // each chunk's mapping then costs a second look, no I/O.)
            if !self.writes_ahead() {
                for b in self.populated.iter() {
                    b.store(u64::MAX, Ordering::Relaxed);
                }
            }
        }
    }

    /// The media the log lives on.
    pub fn media(&self) -> &M {
        self.pmem.media()
    }

    /// Gives the media back (for simulators that inspect it after a run), closed as a drop
    /// closes it.
    pub fn into_media(mut self) -> M {
        // (Set first: should the write-back panic, `drop` leaves `pmem` alone and the local
        // copy below is dropped by the unwinding.)
        self.media_taken = true;
        // SAFETY: taken once: `media_taken` keeps `drop` from touching `pmem` again, and
        // nothing else reads it after this (`self` is dropped right after).
        let pmem = unsafe { std::mem::ManuallyDrop::take(&mut self.pmem) };
        close_reader_area(&pmem, self.read_only);
        pmem.into_media()
    }

    /// Opens the log on `media`: the recovery of FORMAT.md section 7, step by step
    /// (`recover.rs`).
    fn recover(
        media: M,
        opts: &Options,
        writable: bool,
        path: &Path,
        start: Instant,
    ) -> Result<Self> {
        if writable {
            check_cpu(path)?;
        }
        let mut pmem = Pmem::new(media, DATA_OFFSET);
        let (mut sb, from_backup) = recover::read_superblock(&mut pmem, path)?;
        let (slot, unreadable) = recover::read_current_slot(&mut pmem, &sb, path)?;
        let use_hint = opts.resolved_tail_hint_every().is_some();
        let read_ahead = pmem.media().wants_read_ahead();
        let mode = pmem.media().persistence();
        let image = pmem.view(0, sb.capacity as usize);
        let ahead = recover::read_ahead_of(image, read_ahead);
        let mut scan = walk::scan(image, sb.salt, &slot, use_hint, &ahead);
        // (Read before the open's first write.)
        let published = recover::published(image, &sb, &slot);
        let vouched = recover::vouched(image, &sb, &slot);
        let slot_damage = recover::slot_short_of_published(
            image,
            &sb,
            (&slot, &scan),
            unreadable,
            (published, vouched),
            mode,
        );
        if let Some(reason) =
            crate::damage::torn_after_wrap(image, sb.salt, &slot, &scan, published)
        {
            scan.torn_at_wrap(image, &slot, reason);
        } else if let Some((reason, at_wrap)) =
            crate::damage::torn_past_end(image, sb.salt, &slot, &scan, published, vouched)
        {
            if at_wrap {
                scan.torn_at_wrap(image, &slot, reason);
            } else {
                scan.torn_at_end(image, &slot, reason);
            }
        }
        if read_ahead && matches!(scan.state, walk::TailState::Torn { .. }) {
            // The damage search reads up to `SEARCH_BYTES` past where the scan stopped, and
            // the start of the data area up to the head (a salvage reads all of it).
            let head = slot.head_offset as usize;
            if opts.recovery == RecoveryMode::Salvage {
                ahead(DATA_OFFSET, image.len());
            } else {
                ahead(scan.stop, crate::damage::SEARCH_BYTES);
                if scan.stop >= head {
                    ahead(
                        DATA_OFFSET,
                        (head - DATA_OFFSET).min(crate::damage::SEARCH_BYTES),
                    );
                }
            }
        }
        drop(ahead);
        check_mode(opts, writable, path)?;
        let judged = recover::damage_versus_torn_tail(
            image,
            &sb,
            &slot,
            &scan,
            (published, vouched),
            slot_damage,
            opts.recovery,
            path,
        )?;
        let mut current = slot;
        // LSNs the last writer gave out that the log no longer holds, to be taken by padding
        // (`recover::lost_to_pad`; the warning below).
        let mut pad = 0;
        if writable {
            // Before the open's first write or sync, whose failure (a failed write-back of the
            // last session's, reported now) would fail the open: the next open must then not
            // take the last session for vouched.
            let floor = match published {
                0 => slot.cut_lsn,
                p => p.min(slot.cut_lsn),
            };
            pmem.media().set_failure_floor(floor);
            recover::repair_superblock(&mut pmem, &mut sb, path)?;
            recover::persist_recovered(&mut pmem, &slot, &scan, published, sb.salt, path)?;
            recover::rewrite_corrected_slot(&mut pmem, &sb, &slot, unreadable, path)?;
            current = recover::start_session(&mut pmem, &sb, &slot, scan.next_lsn, path)?;
            recover::wipe_past_tail(&mut pmem, &sb, &slot, &scan, path)?;
            let live = Live {
                head: slot.head_offset as usize,
                tail: scan.tail,
                wrap_at: scan.wrap_at,
            };
            let free = live.free(DATA_OFFSET, sb.capacity as usize) as u64;
            pad = recover::lost_to_pad(published, scan.next_lsn, free);
            recover::publish_recovered(&mut pmem, scan.next_lsn, published, pad > 0, path)?;
        }
        let persistence = pmem.media().persistence();
        let report = recover::report(
            &scan,
            &slot,
            from_backup,
            unreadable,
            persistence,
            judged,
            published,
            start,
        );
        let mut log = Self::assemble(
            pmem, sb, current, scan, opts, !writable, report, path, false,
        );
        if let Some((first, last)) = log.report.published_missing {
            // Each of them took at least a header of what is free now: more than that many
            // is no loss but a damaged word (which the salvage's padding could not hold).
            if last + 1 - first > log.free_bytes() / HEADER_LEN as u64 {
                log.report.published_missing = None;
            } else if log.report.damage.is_some() && log.report.torn_entries > 0 && !writable {
                // A salvage-mode open at damage counted the torn tail's entries as a salvage
                // leaves them out, before the word was judged: what it held of a batch the
                // word covers is visited now (`Log::salvage`), so it is no torn tail.
                log.report.torn_entries = log.salvage_walk(|_, _| {})?.torn;
            } else if writable && pad == 0 {
                tracing::warn!(
                    path = %path.display(),
                    first,
                    last,
                    "daxlog: the last writer published entries this log no longer holds (lost \
                     to damage or a failed write-back), or the published word is damaged: \
                     more LSNs than a log takes with padding; the log goes on from where its \
                     entries end, and gives those LSNs to new entries"
                );
            }
        }
        if pad > 0 {
            // (Before any append: the log is not shared yet. Where `published_missing` says
            // the word is damaged, `lost_to_pad` said the same and this is not reached.)
            let first = log.next_lsn();
            let taken = log.pad_lost(pad)?;
            if taken < pad {
                // No room for the rest: the word lowered to where the log ends, as where
                // nothing is padded.
                let next = log.next_lsn();
                recover::publish_recovered(&mut log.pmem, next, published, false, path)?;
                // (The failure floor stays the session's cut, where the padding began.)
                log.pmem.media().set_failure_floor(first);
            } else {
                log.pmem.media().publish_for_readers(published);
            }
            tracing::warn!(
                path = %path.display(),
                first,
                last = published - 1,
                padded = taken,
                "daxlog: the last writer published entries this log no longer holds (lost \
                 to damage or a failed write-back, or the published word is damaged); {}",
                if taken == pad {
                    "their LSNs are taken by padding entries, so that no append is given one of \
                     them again, and later opens will not see this"
                } else {
                    "no room to take them all with padding: the rest will be given to new \
                     entries, and later opens will not see this"
                }
            );
        }
        Ok(log)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        mut pmem: Pmem<M>,
        sb: Superblock,
        slot: Slot,
        scan: walk::Scan,
        opts: &Options,
        read_only: bool,
        report: RecoveryReport,
        path: &Path,
        fresh: bool,
    ) -> Self {
        if read_only {
            pmem.freeze();
        }
        pmem.set_live(Live {
            head: slot.head_offset as usize,
            tail: scan.tail,
            wrap_at: scan.wrap_at,
        });
        let token = pmem.token();
        let persistence = pmem.media().persistence();
        // The checksum kernels of the process, timed now (once, about 0.2 ms) rather than
        // within the first large append.
        crate::persist::kernel_choice();
        let (nt_threshold, batch_nt_threshold, calibration) = if pmem.media().stores_by_write() {
            // (Stores are `pwrite`s: the kernel copies, and one write per entry beats the
            // two or three of the non-temporal path.)
            (usize::MAX, usize::MAX, None)
        } else if !persistence.is_cpu_flush() {
            let t = crate::group::MSYNC_NT_THRESHOLD;
            let single = opts.resolved_nt_threshold().unwrap_or(t);
            (
                single,
                opts.resolved_batch_nt_threshold().unwrap_or(t),
                None,
            )
        } else {
            let (single, batch) = (
                opts.resolved_nt_threshold(),
                opts.resolved_batch_nt_threshold(),
            );
            // The host's measurement, where a threshold is left to it.
            let calibration = (pmem.media().tune_for_host()
                && !read_only
                && (single.is_none() || batch.is_none()))
            .then(|| crate::calibrate::for_flush(persistence));
            let default = crate::options::DEFAULT_NT_THRESHOLD;
            (
                single.unwrap_or(calibration.map_or(default, |c| c.nt_threshold)),
                batch.unwrap_or(calibration.map_or(default, |c| c.batch_nt_threshold)),
                calibration,
            )
        };
        let log = Log {
            sb,
            writer: parking_lot::Mutex::new(Writer {
                token,
                slot,
                poisoned: None,
            }),
            // A new log's data area is zero: its first lap needs no end markers.
            resv: Padded(crate::atomic_pair::AtomicPair::new(
                State::new(scan.tail, scan.next_lsn, fresh).pack(),
            )),
            ring: TicketSlot::ring(),
            epoch: std::sync::atomic::AtomicU32::new(slot.epoch),
            populated: chunk_bits(sb.capacity),
            ahead_pending: chunk_bits(sb.capacity),
            ahead_lock: parking_lot::Mutex::new(()),
            hint_every: opts.resolved_tail_hint_every(),
            since_hint: Padded(AtomicU64::new(0)),
            index: RwLock::new(Index {
                base: scan.index_base,
                anchors: scan.index,
            }),
            first_lsn: AtomicU64::new(slot.head_lsn),
            pins: crate::pins::Pins::new(crate::pins::Pos {
                lsn: slot.head_lsn,
                offset: slot.head_offset as usize,
            }),
            truncating: parking_lot::Mutex::new(()),
            deletions: parking_lot::Mutex::new(std::collections::VecDeque::new()),
            deleted: AtomicU64::new(0),
            last_lsn: Padded(AtomicU64::new(scan.next_lsn - 1)),
            nt_threshold,
            batch_nt_threshold,
            calibration,
            read_only,
            report,
            pmem: std::mem::ManuallyDrop::new(pmem),
            media_taken: false,
            name: path.to_path_buf(),
            published: Padded(AtomicU64::new(0)),
            waiters: Padded(AtomicUsize::new(0)),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            group: crate::group::GroupCommit::new(opts.resolved_yield_while_waiting()),
            combiner: crate::combine::Combiner::default(),
            poisoned: AtomicBool::new(false),
            holding_words: AtomicBool::new(false),
        };
        if !read_only {
            log.prepare(scan.tail, 0);
            // Decide the wake-up barrier before any append runs (see `persist::light_fence`).
            crate::persist::membarrier_ready();
        }
        log
    }

    /// What recovery found when the log was opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// Whether appenders of this log that wait for another thread's sync on a disk first give
    /// up their CPU in a loop before they sleep: [`Options::yield_while_waiting`], as set or
    /// as `DAXLOG_YIELD_WAIT` set it (with [`Options::from_env`]); on by default. (In the
    /// CPU-flush modes no appender waits for a sync.)
    pub fn yields_while_waiting(&self) -> bool {
        self.group.yields_while_waiting()
    }

    /// Whether this log writes the blocks its file system holds unwritten (a new log's) ahead
    /// of its tail (2 MiB at a time in its first 16 MiB, then 16 MiB at a time), and checks
    /// that they reached the file before appending there: a writable log in `msync` mode on
    /// ext4 or xfs, on Linux 5.14 or later (docs/DISK.md, "Writing ahead of the tail").
    pub fn writes_ahead(&self) -> bool {
        !self.read_only && self.pmem.media().writes_ahead()
    }

    /// The persistence barrier in use.
    pub fn persistence(&self) -> Persistence {
        self.pmem.media().persistence()
    }

    /// Appends (and batches over 4 KiB on media) of at least this many bytes on media use
    /// non-temporal stores; smaller ones cached stores and a write-back of each line
    /// (`usize::MAX`: never non-temporal, as in `msync` mode on a disk-backed file, where
    /// stores are `pwrite`s). Small batches follow [`Log::batch_nt_threshold`].
    pub fn nt_threshold(&self) -> usize {
        self.nt_threshold
    }

    /// Batches of more than one entry and at most 4 KiB on media, which are assembled in one
    /// buffer and stored with one copy, use non-temporal stores from this many bytes on media;
    /// larger batches follow [`Log::nt_threshold`]. The host's calibration chooses it apart
    /// (one run of bytes does not cross over where single entries do), unless
    /// [`Options::batch_nt_threshold`] or [`Options::nt_threshold`] sets it.
    pub fn batch_nt_threshold(&self) -> usize {
        self.batch_nt_threshold
    }

    /// The measurement of this host the non-temporal thresholds came from, or `None` if both
    /// were set explicitly ([`Options::nt_threshold`]), the log does not use CPU flushes, or the
    /// media do not ask for it.
    pub fn calibration(&self) -> Option<&'static crate::calibrate::Calibration> {
        self.calibration
    }

    /// LSN of the first entry, or `None` if the log is empty.
    pub fn first_lsn(&self) -> Option<Lsn> {
        let first = self.first();
        (self.last_lsn.load(Ordering::Acquire) >= first).then_some(first)
    }

    /// The session's epoch (FORMAT.md, "Epochs").
    #[inline]
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The first live LSN, whether or not the log holds an entry.
    #[inline]
    pub(crate) fn first(&self) -> Lsn {
        self.first_lsn.load(Ordering::Acquire)
    }

    /// LSN of the last durable entry, or `None` if the log is empty.
    pub fn last_lsn(&self) -> Option<Lsn> {
        let first = self.first();
        let last = self.last_lsn.load(Ordering::Acquire);
        (last >= first).then_some(last)
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.last_lsn.load(Ordering::Acquire) + 1
    }

    /// Number of entries in the log.
    pub fn len(&self) -> u64 {
        let first = self.first();
        (self.last_lsn.load(Ordering::Acquire) + 1).saturating_sub(first)
    }

    /// True if the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total size of the log file in bytes.
    pub fn capacity(&self) -> u64 {
        self.sb.capacity
    }

    /// Bytes used by live entries (headers and padding included). Beside appends and
    /// truncations in other threads, the figure of one moment among those of the call.
    pub fn used_bytes(&self) -> u64 {
        // The head moves apart from the tail (a truncation beside appends): a snapshot whose
        // head is the same before and after it is one moment's, not a head beyond the tail.
        let live = loop {
            let head = self.pmem.head();
            let live = self.pmem.live();
            if live.head == head {
                break live;
            }
        };
        live.used(DATA_OFFSET) as u64
    }

    /// Bytes not holding live entries. An append needs its bytes in one piece, so this is an
    /// upper bound on what the next append can take (see [`Error::Full`]).
    pub fn free_bytes(&self) -> u64 {
        self.sb.capacity - DATA_OFFSET as u64 - self.used_bytes()
    }

    /// Capacity, used and free bytes at once.
    pub fn space(&self) -> Space {
        let used = self.used_bytes();
        Space {
            capacity: self.sb.capacity,
            data: self.sb.capacity - DATA_OFFSET as u64,
            used,
            free: self.sb.capacity - DATA_OFFSET as u64 - used,
        }
    }

    /// The largest payload an append to an empty log of this capacity could take.
    pub fn max_payload(&self) -> u64 {
        max_payload(self.sb.capacity)
    }

    /// The log's UUID, fixed at creation, in hyphenated text form.
    pub fn uuid(&self) -> String {
        self.sb.uuid_string()
    }

    /// True if the log was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
}

/// How the space of a log is used; see [`Log::space`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Space {
    /// Total file size in bytes.
    pub capacity: u64,
    /// Bytes of the data area (capacity less the 4 KiB metadata page).
    pub data: u64,
    /// Bytes held by live entries (headers and padding included).
    pub used: u64,
    /// Bytes of the data area not held by live entries.
    pub free: u64,
}

/// Where the next appends can go ([`Log::room`]): the bytes free in one piece from the tail on,
/// and those an append finds at the start of the data area once one did not fit at the tail
/// (an append never straddles the end of the file: the rest of the piece at the tail is then
/// left unused until the head passes it).
///
/// One moment's figure: appends made since take from it, truncations add to it.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20))?;
/// let mut room = log.room();
/// // Will an append of 1000 bytes fit, and then a batch of 10 of 100 bytes?
/// let entry = |len| daxlog::format::entry_len(len) as u64;
/// assert!(room.take(entry(1000)));
/// assert!(room.take(10 * entry(100)));
/// assert!(!room.take(2 << 20));
/// # Ok::<(), daxlog::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    /// Bytes an append (or batch) at the tail can take.
    pub at_tail: u64,
    /// Bytes at the start of the data area that appends take once one did not fit at the
    /// tail: 0 where the entries have wrapped already (the free space is one piece, at the
    /// tail).
    pub after_wrap: u64,
}

impl Room {
    /// Places an append or batch of `bytes` on media (the sum of its entries'
    /// [`format::entry_len`]) as the log would after those placed before it: true if it fits,
    /// and then what is left is the room of the appends after it; false if it does not (the
    /// log would fail it with [`Error::Full`]), and then the room is left as it was.
    pub fn take(&mut self, bytes: u64) -> bool {
        if bytes <= self.at_tail {
            self.at_tail -= bytes;
        } else if bytes <= self.after_wrap {
            self.at_tail = self.after_wrap - bytes;
            self.after_wrap = 0;
        } else {
            return false;
        }
        true
    }
}

/// The largest payload a log of `capacity` bytes can hold.
pub(crate) fn max_payload(capacity: u64) -> u64 {
    let room = capacity - DATA_OFFSET as u64 - HEADER_LEN as u64;
    (room & !(format::ENTRY_ALIGN as u64 - 1)).min(u32::MAX as u64)
}

/// Salvage only reads.
fn check_mode(opts: &Options, writable: bool, path: &Path) -> Result<()> {
    if opts.recovery == RecoveryMode::Salvage && writable {
        return Err(Error::Unsupported {
            path: path.into(),
            what: "salvage recovery on a writable open (open it read-only)",
        });
    }
    Ok(())
}

/// What [`Log::create`] replaces at its path.
enum Replaced {
    /// Nothing.
    Nothing,
    /// A file, locked as [`lock_replaced`] does until the new log is in place: a log that a
    /// writer, snapshot or reader holds open is refused.
    File(std::fs::File),
    /// A symbolic link, replaced itself (its target is never touched).
    Link,
}

impl Replaced {
    /// True if this is a file, locked, that `path` still names.
    fn is_at(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Replaced::File(f) = self else {
            return false;
        };
        match (f.metadata(), std::fs::symlink_metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Looks at `path`: a directory, a FIFO, a device or a socket, or anything when
    /// `overwrite` is false, is refused. (Replacing a device node would leave a file in its
    /// place, on the file system that holds `/dev`, while the device stays unused.)
    fn find(path: &Path, overwrite: bool) -> Result<Self> {
        let found = std::fs::symlink_metadata(path);
        if let Some(kind) = found
            .as_ref()
            .ok()
            .and_then(|m| crate::map::special_kind(m.file_type()))
        {
            return Err(Error::NotAFile {
                path: path.into(),
                kind,
            });
        }
        match found {
            Ok(m) if m.is_dir() => Err(Error::IsDirectory { path: path.into() }),
            Ok(_) if !overwrite => Err(Error::AlreadyExists { path: path.into() }),
            Ok(m) if m.is_file() => {
                Ok(lock_replaced(path)?.map_or(Replaced::Nothing, Replaced::File))
            }
            Ok(_) => Ok(Replaced::Link),
            Err(_) => Ok(Replaced::Nothing),
        }
    }
}

/// Runs `attempt` until it ends in anything but [`Error::Locked`] or `wait` has passed
/// ([`Options::lock_wait`]), pausing between tries: 1 ms, doubling up to 50 ms.
fn wait_for_lock<T>(wait: Duration, attempt: impl FnMut() -> Result<T>) -> Result<T> {
    wait_while_locked(wait, |_| true, attempt)
}

/// The instant `timeout` from now; for a timeout too long to be represented (such as
/// `Duration::MAX`, meaning for ever), about a century from now.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// [`wait_for_lock`], waiting only for the holders `by` accepts.
pub(crate) fn wait_while_locked<T>(
    wait: Duration,
    by: impl Fn(LockHolder) -> bool,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = deadline_after(wait);
    const FIRST_PAUSE: Duration = Duration::from_millis(1);
    let mut pause = FIRST_PAUSE;
    loop {
        let e = match attempt() {
            Err(e @ Error::Locked { by: holder, .. }) if by(holder) => e,
            done => return done,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(e);
        }
        if let (true, Error::Locked { path, by }) = (pause == FIRST_PAUSE, &e) {
            tracing::info!(path = %path.display(), %by, ?wait, "daxlog: locked, waiting");
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// LSNs start at 1 (0 means "none" in the slot's tail hint).
fn check_first_lsn(lsn: Lsn, path: &Path) -> Result<()> {
    if lsn == 0 || lsn > u64::MAX / 2 {
        return Err(Error::Unsupported {
            path: path.into(),
            what: "a first LSN of 0 or above 2^63 (LSNs start at 1)",
        });
    }
    Ok(())
}

/// Appends reserve with `CMPXCHG16B` (`reserve.rs`).
fn check_cpu(path: &Path) -> Result<()> {
    if crate::atomic_pair::has_cmpxchg16b() {
        Ok(())
    } else {
        Err(Error::Unsupported {
            path: path.into(),
            what: "writing on a CPU without CMPXCHG16B",
        })
    }
}

impl<M: Media> Drop for Log<M> {
    fn drop(&mut self) {
        if self.media_taken {
            return;
        }
        /// Drops the media when it goes, the write-back's unwinding included.
        struct DropPmem<'a, M: Media>(&'a mut std::mem::ManuallyDrop<Pmem<M>>);
        impl<M: Media> Drop for DropPmem<'_, M> {
            fn drop(&mut self) {
                // SAFETY: dropped once, here (`into_media` did not take it), and no other
                // field's drop reads it: it is dropped first, as the first field was before.
                unsafe { std::mem::ManuallyDrop::drop(self.0) };
            }
        }
        let read_only = self.read_only;
        let pmem = DropPmem(&mut self.pmem);
        close_reader_area(pmem.0, read_only);
    }
}

/// At a writer's close, the reader area's words written back where the writer vouches with
/// them (a CPU-flush mode, media that keeps the area; FORMAT.md section 11): every published
/// entry is durable, and after a power failure the words vouch for them all, so that damage
/// to the last one is not taken for a torn tail. (Appends never flush the words; an open's
/// cut and a tail hint vouch for the entries before them by themselves.)
fn close_reader_area<M: Media>(pmem: &Pmem<M>, read_only: bool) {
    let media = pmem.media();
    if !read_only && media.keeps_reader_area() && media.persistence().is_cpu_flush() {
        pmem.flush(format::PUBLISHED_OFFSET, format::READER_WORDS_LEN);
        // (A CPU barrier cannot fail; a failure would leave the words as a crash does.)
        let _ = pmem.drain();
    }
}
