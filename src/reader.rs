//! Reading a live log from another process: a replication shipper, an audit tool,
//! `daxlog follow`.
//!
//! The writer's own process reads through its `Log` with zero-copy slices: there the engine
//! knows which bytes are live, and truncation waits until no slice is held. Another process
//! knows none of that. The writer may truncate the log and wrap around into the bytes of an
//! entry while a reader looks at it, and a `&[u8]` to memory that changes under it must never
//! exist in Rust. So a [`Reader`] never lends out the mapping: it copies each entry out (with
//! word-sized atomic loads) and validates the copy — checksum, LSN, the epoch rule against the
//! current metadata slot — and then checks that the slot did not change while it copied (a
//! seqlock on the slot's sequence numbers: the writer updates the slot, with a fence, before
//! it reuses any byte). What it returns is therefore always the entry with that LSN, never
//! bytes of another.
//!
//! Which entries are durable only the writer knows. It keeps the LSN after the last durable
//! entry in the reader area of the metadata page (format version 2; FORMAT.md, "Readers in
//! other processes"); a reader returns only entries below it, so that it never ships an entry
//! a power failure could still take back, and sleeps on it (a futex) when it has caught up.
//!
//! Readers hold a shared lock on one byte of the file (an OFD lock); whoever would replace or
//! rewrite the file (`create` with `overwrite`) must take it exclusively, and so fails with
//! `Error::Locked` while readers are there. A killed reader's lock goes with its process.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, LockHolder, Result};
use crate::format::{
    self, EntryHeader, Slot, Superblock, DATA_OFFSET, DELETIONS_OFFSET, DELETION_RING,
    DELETION_RING_OFFSET, FLAG_CONTINUES, FLAG_PAD, HEADER_LEN, KNOWN_FLAGS, PUBLISHED_OFFSET,
    SLOT0_OFFSET, SLOT1_OFFSET, SLOT_LEN,
};
use crate::map::{ofd_lock, SharedMap};
use crate::recover::decode_superblocks;
use crate::Lsn;

/// One entry copied out of a log by a [`Reader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedEntry {
    /// The entry's log sequence number.
    pub lsn: Lsn,
    /// The payload, exactly as appended.
    pub payload: Vec<u8>,
}

/// Every this many LSNs the reader remembers where an entry lies, to seek back without
/// walking from the head.
const ANCHOR_STRIDE: u64 = 64;
/// At most this many are kept (the oldest go first; going back further walks from the head).
const MAX_ANCHORS: usize = 4096;
/// The reason of [`Error::Corrupted`] from a reader: it reports the first unreadable published
/// entry and does not search beyond it (`entries_beyond` is 0); a closed log's `check` does.
pub(crate) const LIVE_DAMAGE: &str =
    "a published entry is unreadable (read live: the entries beyond it were not searched)";
/// How far ahead of its position a reader has the kernel map the log's pages, in one call,
/// instead of taking a page fault every few pages: a reader catching up on a log another
/// process wrote spent a quarter of its time in page faults.
const POPULATE_AHEAD: usize = 2 << 20;
/// A read-only view of a log that a writer in another process may be appending to,
/// truncating and wrapping; see the module documentation for why its reads copy.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("journal.dax");
/// use daxlog::{Log, Options, Reader};
///
/// let log = Log::create(&path, &Options::new().capacity(1 << 20))?; // (normally another process)
/// log.append(b"set a=1")?;
/// let mut reader = Reader::open(&path)?;
/// log.append(b"set b=2")?;
/// let all: Vec<Vec<u8>> = reader.by_ref().map(|e| e.map(|e| e.payload)).collect::<Result<_, _>>()?;
/// assert_eq!(all, [b"set a=1".to_vec(), b"set b=2".to_vec()]);
/// log.append(b"set c=3")?;
/// let e = reader.next_timeout(std::time::Duration::from_secs(1))?.expect("appended");
/// assert_eq!((e.lsn, e.payload), (3, b"set c=3".to_vec()));
/// # Ok::<(), daxlog::Error>(())
/// ```
pub struct Reader {
    path: PathBuf,
    map: SharedMap,
    /// Holds the shared OFD lock on the reader byte.
    _file: File,
    /// The file opened for writing, whose first page `map` maps writable to ask the writer
    /// for wake-ups (`None`: not permitted, or a version-1 log: the reader polls).
    rw: Option<File>,
    /// Device and inode of the file opened: `Error::Replaced` if the path names another.
    id: (u64, u64),
    sb: Superblock,
    slot: Slot,
    /// The sequence words of the two slot copies when `slot` was read.
    seqs: [u64; 2],
    /// The offset of a slot copy that did not decode when `slot` was read although its
    /// sequence word was the higher (damaged, or a write still under way after many looks):
    /// the slot changed if it decodes now, though no sequence word moves.
    torn: Option<usize>,
    /// Offset and LSN of the next entry to return.
    pos: usize,
    next: Lsn,
    /// Entries below this LSN are skipped (a `seek` past the published end).
    skip_until: Lsn,
    /// The published LSN as last read (0: no version-2 writer ever published: every valid
    /// entry counts).
    published: u64,
    /// (LSN, offset) of entries passed, one every `ANCHOR_STRIDE` LSNs.
    anchors: Vec<(Lsn, usize)>,
    /// The highest LSN handed to the caller, or passed by a `seek` beyond it (0: none yet): a
    /// suffix truncation from an LSN above it deleted nothing the caller has.
    returned: Lsn,
    /// The writer's count of suffix truncations, as last read (FORMAT.md §11).
    deletions: u64,

    /// The copy of the entry being validated.
    buf: Vec<u8>,
    /// Offsets whose pages were populated ahead of reading (`SharedMap::populate`).
    populated: std::ops::Range<usize>,
    last_stat: Instant,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("uuid", &self.sb.uuid_string())
            .field("next", &self.next)
            .field("published", &self.published)
            .finish()
    }
}

/// The log file at `path` opened for writing, if permitted and still the file `id` (device,
/// inode) the reader opened.
fn open_rw(path: &Path, id: (u64, u64)) -> Option<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| (m.dev(), m.ino()) == id))
}

impl Reader {
    /// Opens the log at `path` for reading from the start of the log (its first LSN); see
    /// [`Reader::seek`] to start elsewhere. Works on a read-only file, takes no writer lock
    /// and never blocks a writer; takes the readers' shared lock, which makes `create` with
    /// `overwrite` fail with [`Error::Locked`] while the reader is open.
    pub fn open(path: impl AsRef<Path>) -> Result<Reader> {
        Reader::open_current(path.as_ref())
    }

    /// [`Reader::open`], waiting up to `wait` while a replacement of the file (`create` with
    /// `overwrite`, in any process) is in progress, the one holder that refuses a reader:
    /// it tries again, 1 ms to 50 ms apart, holding nothing between tries, and opens the new
    /// log once the replacement is in place. `Duration::MAX` waits for ever; `Duration::ZERO`
    /// is [`Reader::open`]. Fails with [`Error::Locked`] if the wait passed.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("l");
    /// # daxlog::Log::create(&path, &daxlog::Options::new().capacity(1 << 20))?.append(b"a")?;
    /// use std::time::Duration;
    /// let mut r = daxlog::Reader::open_waiting(&path, Duration::from_secs(5))?;
    /// assert_eq!(r.next_entry()?.unwrap().payload, b"a");
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn open_waiting(path: impl AsRef<Path>, wait: Duration) -> Result<Reader> {
        let path = path.as_ref();
        crate::log::wait_while_locked(
            wait,
            |by| by == LockHolder::Replacement,
            || Reader::open_current(path),
        )
    }

    /// Opens the file at `path`, again while a replacement renamed a new log over the path
    /// between the open and the lock ([`crate::map::open_current`]).
    fn open_current(path: &Path) -> Result<Reader> {
        crate::map::open_current(path, || Reader::open_once(path))
    }

    /// [`Reader::open`] of the file the path names when it is opened; `None` if the path
    /// names another file once it is locked.
    fn open_once(path: &Path) -> Result<Option<Reader>> {
        let file = crate::map::open_log_file(path, false)?;
        let meta = file.metadata().map_err(|e| Error::io(path, "stat", e))?;
        let file_len = meta.len();
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
        let mut page = vec![0u8; DATA_OFFSET];
        file.read_exact_at(&mut page, 0)
            .map_err(|e| Error::io(path, "read", e))?;
        let (sb, _) = decode_superblocks(&page, path)?;
        if file_len < sb.capacity {
            return Err(Error::FileShorterThanCapacity {
                path: path.into(),
                file_len,
                capacity: sb.capacity,
            });
        }
        #[cfg(feature = "mutants")]
        crate::mutants::BEFORE_LOCKING.here();
        if !ofd_lock(&file, false).map_err(|e| Error::io(path, "fcntl (F_OFD_SETLK)", e))? {
            return Err(Error::Locked {
                path: path.into(),
                by: LockHolder::Replacement,
            });
        }
        if !crate::map::names(path, &file) {
            return Ok(None);
        }
        // Writable, if permitted, only to ask the writer for a wake-up (the sleepers flag of a
        // version-2 log: a version-1 log's reader area stays untouched, and such a reader
        // polls until a writer upgrades the log, `recheck_version`).
        let rw = (sb.version >= 2)
            .then(|| open_rw(path, (meta.dev(), meta.ino())))
            .flatten();
        let map = SharedMap::map(&file, rw.as_ref(), path, sb.capacity as usize)?;
        let mut r = Reader {
            path: path.into(),
            map,
            _file: file,
            rw,
            id: (meta.dev(), meta.ino()),
            sb,
            slot: Slot {
                seq: 0,
                head_offset: DATA_OFFSET as u64,
                head_lsn: 0,
                cut_lsn: 0,
                epoch: 0,
                flags: 0,
                hint_offset: 0,
                hint_lsn: 0,
            },
            seqs: [u64::MAX; 2],
            torn: None,
            pos: DATA_OFFSET,
            next: 0,
            skip_until: 0,
            published: 0,
            anchors: Vec::new(),
            returned: 0,
            deletions: 0,

            buf: Vec::new(),
            populated: 0..0,
            last_stat: Instant::now(),
        };
        r.deletions = r.map.word(DELETIONS_OFFSET).load(Ordering::Acquire);
        r.read_slot()?;
        r.pos = r.slot.head_offset as usize;
        r.next = r.slot.head_lsn;
        r.published = r.load_published();
        Ok(Some(r))
    }

    /// The path the log was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log's UUID.
    pub fn uuid(&self) -> String {
        self.sb.uuid_string()
    }

    /// The LSN of the next entry [`Reader::next_entry`] would return.
    pub fn position(&self) -> Lsn {
        self.next.max(self.skip_until)
    }

    /// The first LSN the log holds, as of the last look at its metadata.
    pub fn first_lsn(&self) -> Lsn {
        self.slot.head_lsn
    }

    /// The LSN after the last entry the writer has made durable and published, as of the last
    /// look (`None` if no writer of format version 2 ever published: then every valid entry
    /// is readable).
    pub fn published(&self) -> Option<Lsn> {
        (self.published != 0).then_some(self.published)
    }

    /// Looks at the metadata and the published LSN again, and checks that the path still
    /// names the log this reader opened ([`Error::Replaced`] otherwise).
    pub fn refresh(&mut self) -> Result<()> {
        self.check_replaced()?;
        self.read_slot_if_changed()?;
        self.published = self.load_published();
        Ok(())
    }

    /// Positions the reader so that the next entry returned is `lsn` (or the first entry
    /// after it that exists, if `lsn` is padding; or the first LSN, if `lsn` was truncated
    /// away, even while the seek ran). An `lsn` beyond the published end waits for the writer
    /// to get there.
    ///
    /// The entries below `lsn` that the log holds count from then on as returned: a suffix
    /// truncation that later deletes any of them is reported ([`Error::Rewound`]), and the
    /// reader goes back to the entries that replace them (a reader started "from now on" with
    /// `seek` to the published end gets the entries appended after a suffix truncation below
    /// it, instead of skipping their LSNs).
    ///
    /// Errors: [`Error::Rewound`] if a suffix truncation deleted entries below `lsn` that this
    /// reader had returned or passed (it is positioned at the first of the new entries);
    /// [`Error::Replaced`], [`Error::Corrupted`] as for [`Reader::next_entry`].
    pub fn seek(&mut self, lsn: Lsn) -> Result<()> {
        let r = self.seek_to(lsn);
        if r.is_ok() {
            // (Where the walk stopped at the published end, the entries below it.)
            self.returned = self.returned.max(self.next.min(lsn).saturating_sub(1));
        }
        r
    }

    fn seek_to(&mut self, lsn: Lsn) -> Result<()> {
        // What was returned from `lsn` on is the caller's no more: a suffix deletion the
        // metadata shows now is news only below `lsn` (then `Rewound`, positioned there).
        self.returned = self.returned.min(lsn.saturating_sub(1));
        self.refresh()?;
        // Nothing before `lsn` is returned from now on (unless a suffix deletion below it is
        // reported).
        self.skip_until = lsn;
        if lsn < self.next || self.next < self.slot.head_lsn {
            self.restart_at_anchor(lsn)?;
            // A prefix truncation passed `lsn` during that walk (which leaves the reader at
            // `lsn`, for the next step to report the entries truncated away): here the reader
            // goes to the new head instead, where a seek to an LSN truncated away goes.
            if self.next < self.slot.head_lsn {
                self.restart_at_anchor(self.slot.head_lsn)?;
            }
        }
        let mut scratch = Vec::new();
        while self.next < lsn {
            if self.published != 0 && self.next >= self.published {
                self.skip_until = lsn;
                return Ok(());
            }
            match self.step(&mut scratch, false) {
                Ok(None) => {
                    self.skip_until = lsn;
                    return Ok(());
                }
                // The head passed the walk, and the step went on from it (nothing before
                // `lsn` is wanted): that entry is the caller's.
                Ok(Some((l, _))) if l >= lsn => self.restart_at_anchor(l)?,
                Ok(Some(_)) => {}
                // A prefix truncation overtook the walk and passed `lsn`: the reader stands
                // at the new head, where a seek to an LSN truncated away goes (the entries
                // before `lsn` were not wanted, so there is nothing to report).
                Err(Error::Truncated { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next durable entry, or `None` if the reader has caught up with the writer. Padding
    /// is skipped.
    ///
    /// Errors: [`Error::Truncated`] if entries were truncated away before this reader read
    /// them (it then goes on from the first entry still there: call again);
    /// [`Error::Rewound`] if a suffix truncation deleted entries it had returned (it goes on
    /// from the first of the new entries); [`Error::Corrupted`] for damage (the reader stays
    /// before the damaged entry, and every call reports it again: a loop that goes on after
    /// errors stops at this one);
    /// [`Error::Replaced`] if the file was replaced.
    pub fn next_entry(&mut self) -> Result<Option<OwnedEntry>> {
        let mut payload = Vec::new();
        Ok(self
            .next_into(&mut payload)?
            .map(|lsn| OwnedEntry { lsn, payload }))
    }

    /// [`Reader::next_entry`] into a buffer of the caller's (cleared first): no allocation
    /// once the buffer is large enough. Returns the entry's LSN.
    pub fn next_into(&mut self, payload: &mut Vec<u8>) -> Result<Option<Lsn>> {
        loop {
            match self.step(payload, true)? {
                Some((lsn, pad)) if !pad && lsn >= self.skip_until => {
                    self.returned = lsn;
                    return Ok(Some(lsn));
                }
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next durable entry, waiting up to `timeout` for the writer to append it; `None` on
    /// timeout. Errors as for [`Reader::next_entry`].
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<OwnedEntry>> {
        let mut payload = Vec::new();
        Ok(self
            .next_into_timeout(&mut payload, timeout)?
            .map(|lsn| OwnedEntry { lsn, payload }))
    }

    /// [`Reader::next_timeout`] into a buffer of the caller's.
    pub fn next_into_timeout(
        &mut self,
        payload: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<Lsn>> {
        // The common case (an entry is there) reads no clock.
        if let Some(lsn) = self.next_into(payload)? {
            return Ok(Some(lsn));
        }
        let deadline = crate::log::deadline_after(timeout);
        let mut idle_since = None::<Instant>;
        loop {
            if let Some(lsn) = self.next_into(payload)? {
                return Ok(Some(lsn));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if now.duration_since(self.last_stat) > Duration::from_millis(100) {
                self.check_replaced()?;
            }
            // A writer that is appending is a few hundred nanoseconds from the next entry:
            // poll for a little while, then sleep on the published LSN.
            let since = *idle_since.get_or_insert(now);
            let seen = self.load_published();
            if seen != self.published {
                continue;
            }
            if now.duration_since(since) < Duration::from_micros(50) {
                std::hint::spin_loop();
                continue;
            }
            let left = deadline - now;
            self.map
                .wait_published(seen, left.min(Duration::from_millis(10)));
        }
    }

    /// Moves past one entry: `Some((lsn, is_padding))`, its payload in `payload` when asked;
    /// `None` when the next entry is not (yet) readable.
    fn step(&mut self, payload: &mut Vec<u8>, copy: bool) -> Result<Option<(Lsn, bool)>> {
        // Whether the last copy failed although its entry was published, as looked at after
        // the copy, and the slot has not changed since before it. The published LSN then in
        // hand was looked at after the slot, so the next copy is of stable bytes (see below).
        let mut suspect = false;
        loop {
            if self.published == 0 || self.next >= self.published {
                self.published = self.load_published();
            }
            // The metadata first: a truncation may have moved the head past us or deleted
            // what we returned.
            if self.read_slot_if_changed()? {
                suspect = false;
            }
            if self.next < self.slot.head_lsn {
                // Missed: from the entry the caller would get next (entries before it were
                // returned, or skipped at its request).
                let (first, head) = (self.next.max(self.skip_until), self.slot.head_lsn);
                self.restart_at_anchor(head)?;
                if first < head {
                    return Err(Error::Truncated {
                        path: self.path.clone(),
                        first_missed: first,
                        last_missed: head - 1,
                    });
                }
                suspect = false;
                continue;
            }
            if self.published != 0 && self.next >= self.published {
                return Ok(None);
            }
            let found = self
                .try_at(self.pos, self.next)
                .map(|h| (self.pos, h))
                .or_else(|| {
                    (self.pos != DATA_OFFSET)
                        .then(|| {
                            self.try_at(DATA_OFFSET, self.next)
                                .map(|h| (DATA_OFFSET, h))
                        })
                        .flatten()
                });
            // Did the slot change while we copied? Then the bytes may be reused ones.
            if self.slot_changed() {
                suspect = false;
                continue;
            }
            // And is the entry published? Looked at after the copy: a suffix truncation lowers
            // the published LSN before the entries that replace the deleted ones are stored,
            // so a copy of a replacement not yet durable is followed by a look that sees it
            // unpublished.
            if self.published != 0 {
                self.published = self.load_published();
                if self.next >= self.published {
                    return Ok(None);
                }
            }
            match found {
                Some((at, h)) => {
                    if self.published == 0
                        && h.flags & FLAG_CONTINUES != 0
                        && !self.batch_completes(at, &h)
                    {
                        return Ok(None);
                    }
                    let lsn = self.next;
                    if lsn.is_multiple_of(ANCHOR_STRIDE) {
                        if self.anchors.len() >= MAX_ANCHORS {
                            self.anchors.drain(..MAX_ANCHORS / 2);
                        }
                        self.anchors.push((lsn, at));
                    }
                    if copy {
                        payload.clear();
                        payload
                            .extend_from_slice(&self.buf[HEADER_LEN..HEADER_LEN + h.len as usize]);
                    }
                    self.pos = at + h.entry_len();
                    self.next += 1;
                    return Ok(Some((lsn, h.flags & FLAG_PAD != 0)));
                }
                None if self.published == 0 => return Ok(None),
                // Not proof of damage: the copy may have caught a replacement of a deleted
                // entry half stored, which was then published, or the published LSN in hand
                // was one looked at before the slot (from before the deletion). Again, with
                // the published LSN just looked at.
                None if !suspect => suspect = true,
                // Proof: a suffix truncation lowers the published LSN before it writes the
                // slot, and its replacements are stored after the slot; the slot did not
                // change from before the last copy to after this one, and in between the
                // entry was published. So no replacement was stored during this copy, nor
                // did prefix truncation free the bytes for reuse: they are the entry's.
                None => {
                    return Err(Error::Corrupted {
                        path: self.path.clone(),
                        offset: self.pos as u64,
                        lsn: self.next,
                        reason: match self.torn {
                            // Likely the cause: the older copy cannot lead to entries written
                            // under the damaged one.
                            Some(at) => format!(
                                "{LIVE_DAMAGE}; the metadata slot at offset {at} does not \
                                 decode (damaged or torn), the older copy was used"
                            ),
                            None => LIVE_DAMAGE.into(),
                        },
                        entries_beyond: 0,
                    });
                }
            }
        }
    }

    /// Without a published LSN (a log no version-2 writer opened), an entry that continues a
    /// batch counts only once the batch's last entry is valid too, as in recovery.
    fn batch_completes(&mut self, at: usize, h: &EntryHeader) -> bool {
        if self.next < self.slot.cut_lsn {
            return true;
        }
        let (mut pos, mut lsn, mut flags) = (at + h.entry_len(), self.next + 1, h.flags);
        let saved = std::mem::take(&mut self.buf);
        let done = loop {
            if flags & FLAG_CONTINUES == 0 {
                break true;
            }
            match self.try_at(pos, lsn) {
                Some(n) => {
                    pos += n.entry_len();
                    lsn += 1;
                    flags = n.flags;
                }
                None => break false,
            }
        };
        self.buf = saved;
        done
    }

    /// Copies the entry at `pos` into `buf` and returns its header if it is valid as entry
    /// `lsn` under the current slot (FORMAT.md, section 7, rules 1-5).
    fn try_at(&mut self, pos: usize, lsn: Lsn) -> Option<EntryHeader> {
        let cap = self.map.len();
        if pos < DATA_OFFSET || pos + HEADER_LEN > cap {
            return None;
        }
        let mut head = [0u8; HEADER_LEN];
        self.map.copy_out(pos, &mut head);
        let h = EntryHeader::decode(&head);
        if h.lsn != lsn || h.flags & !KNOWN_FLAGS != 0 || h.len as usize > cap - pos - HEADER_LEN {
            return None;
        }
        let len = h.entry_len();
        if pos + len > cap {
            return None;
        }
        if pos < self.populated.start || pos + len > self.populated.end {
            self.populated = self.map.populate(pos, POPULATE_AHEAD);
        }
        self.buf.resize(len, 0);
        self.map.copy_out(pos, &mut self.buf);
        // The header again, from the same copy as the payload: the bytes may have changed
        // between the two copies, so its length is checked before it is used.
        let h = EntryHeader::decode(&self.buf[..HEADER_LEN]);
        if h.entry_len() != len {
            return None;
        }
        let payload = &self.buf[HEADER_LEN..HEADER_LEN + h.len as usize];
        let ok = h.lsn == lsn
            && format::entry_crc(format::payload_crc(self.sb.salt, payload), &h) == h.crc
            && (h.lsn < self.slot.cut_lsn || h.epoch == self.slot.epoch);
        ok.then_some(h)
    }

    /// Positions at `lsn` (or the head, if `lsn` is below it), walking from the nearest
    /// remembered entry before it. If the head passes `lsn` during the walk, the next step
    /// reports the entries from `lsn` on as truncated.
    fn restart_at_anchor(&mut self, lsn: Lsn) -> Result<()> {
        let head = self.slot.head_lsn;
        self.anchors.retain(|&(l, _)| l >= head && l <= lsn);
        let (l, pos) = self
            .anchors
            .last()
            .copied()
            .unwrap_or((head, self.slot.head_offset as usize));
        self.next = l;
        self.pos = pos;
        self.anchors.retain(|&(a, _)| a < l);
        let mut scratch = Vec::new();
        while self.next < lsn {
            match self.step(&mut scratch, false) {
                // The head passed the walk and the step went on from it (what lay between was
                // not wanted): back to that entry, which is not passed yet.
                Ok(Some((l, _))) if l >= lsn => return self.restart_at_anchor(l),
                Ok(Some(_)) => {}
                // Not readable yet (e.g. another suffix truncation under way): the entries
                // before `lsn` are not returned again when they are.
                Ok(None) => {
                    self.skip_until = self.skip_until.max(lsn);
                    break;
                }
                // A prefix truncation overtook the walk, and `step` went on from the new head.
                // Past `lsn`, the entries from `lsn` on are gone: the next step reports them
                // (from `lsn`, the entry the caller would get next, not from where the walk
                // began: the caller had the ones before it).
                Err(Error::Truncated { .. }) => {
                    if self.next > lsn {
                        self.next = lsn;
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The published LSN; 0 for a log of format version 1, whose writer never stores it (the
    /// word holds whatever the media held when the log was created).
    fn load_published(&self) -> u64 {
        if self.sb.version < 2 {
            return 0;
        }
        self.map.word(PUBLISHED_OFFSET).load(Ordering::Acquire)
    }

    /// The log was of format version 1 when this reader opened it: has a writer upgraded it
    /// since? The upgrade clears the published word durably before it writes the superblocks
    /// of version 2, and starts a session (a new slot) after them, so a reader that sees the
    /// new slot sees them too, and from then on the word is the writer's.
    fn recheck_version(&mut self) {
        let mut copies = [0u8; format::SB_BACKUP_OFFSET + format::SB_LEN];
        self.map.copy_out(0, &mut copies);
        if let Ok((sb, _)) = decode_superblocks(&copies, &self.path) {
            if sb.salt == self.sb.salt && sb.capacity == self.sb.capacity {
                self.sb.version = self.sb.version.max(sb.version);
            }
        }
        // Upgraded: ask for wake-ups from now on, as a reader that opened it so would.
        if self.sb.version >= 2 && self.rw.is_none() {
            if let Some(f) = open_rw(&self.path, self.id) {
                if self.map.attach_meta_rw(&f) {
                    self.rw = Some(f);
                }
            }
        }
    }

    fn slot_seqs(&self) -> [u64; 2] {
        [
            self.map.word(SLOT0_OFFSET).load(Ordering::Acquire),
            self.map.word(SLOT1_OFFSET).load(Ordering::Acquire),
        ]
    }

    /// Whether the slot may have changed since it was read: a sequence word moved, or a copy
    /// that did not decode then does now.
    fn slot_changed(&self) -> bool {
        if self.slot_seqs() != self.seqs {
            return true;
        }
        self.torn.is_some_and(|at| {
            let mut b = [0u8; SLOT_LEN];
            self.map.copy_out(at, &mut b);
            Slot::decode(&b, self.sb.salt, self.sb.capacity).is_some()
        })
    }

    /// Reads the slot again if it may have changed; says whether it did.
    fn read_slot_if_changed(&mut self) -> Result<bool> {
        if !self.slot_changed() {
            return Ok(false);
        }
        self.read_slot()?;
        Ok(true)
    }

    /// Reads the current slot. A slot being written fails its checksum; the other copy is the
    /// current one until the write completes, so a torn read is retried. A copy that still
    /// does not decode after a hundred looks is damaged (or its writer was descheduled): if it
    /// is one bit off a slot newer than the other copy, that slot is current, corrected, as
    /// recovery takes it ([`Slot::current`]); else the other copy.
    fn read_slot(&mut self) -> Result<()> {
        for attempt in 0..1000 {
            let seqs = self.slot_seqs();
            let mut page = [0u8; SLOT1_OFFSET + SLOT_LEN];
            self.map
                .copy_out(SLOT0_OFFSET, &mut page[SLOT0_OFFSET..][..SLOT_LEN]);
            self.map
                .copy_out(SLOT1_OFFSET, &mut page[SLOT1_OFFSET..][..SLOT_LEN]);
            let (salt, cap) = (self.sb.salt, self.sb.capacity);
            let decode = |at: usize| Slot::decode(&page[at..], salt, cap);
            let (da, db) = (decode(SLOT0_OFFSET), decode(SLOT1_OFFSET));
            if self.slot_seqs() != seqs {
                continue;
            }
            let found = Slot::current_decoded(&page, salt, cap, [da, db]);
            let picked = match (Slot::pick(da, db), found.slot) {
                // A copy one bit off a slot newer than the other: being written (the other
                // words reach it soon), or damaged. Look again, a hundred times at most.
                (_, Some(slot)) if found.repaired => (attempt >= 100).then_some((slot, None)),
                (Some(slot), _) => {
                    // A copy that does not decode but whose sequence number is already above
                    // the one picked is being written (its sequence word may be visible before
                    // its checksum): look again. Still like that after a hundred looks, it is
                    // damaged or its writer was descheduled; either way the other one is
                    // current until it decodes (`torn`). (If that copy's write was only slow,
                    // its end moves no sequence word.)
                    let in_progress = [(da, seqs[0], SLOT0_OFFSET), (db, seqs[1], SLOT1_OFFSET)]
                        .into_iter()
                        .find(|&(d, raw, _)| d.is_none() && raw > slot.seq)
                        .map(|(_, _, at)| at);
                    (in_progress.is_none() || attempt >= 100).then_some((slot, in_progress))
                }
                (None, _) => None,
            };
            if let Some((slot, torn)) = picked {
                let head_before = self.slot.head_lsn;
                self.slot = slot;
                self.seqs = seqs;
                self.torn = torn;
                if self.sb.version < 2 {
                    self.recheck_version();
                }
                return self.after_slot_change(head_before);
            }
            std::thread::yield_now();
        }
        Err(Error::CorruptedSuperblock {
            path: self.path.clone(),
            offset: SLOT0_OFFSET as u64,
            reason: "no valid metadata slot".into(),
        })
    }

    /// After the slot changed: did a suffix truncation delete entries this reader passed?
    /// The writer records the first deleted LSN of each one, and counts them, before it
    /// writes the slot (FORMAT.md §11), so the lowest LSN deleted since the last look is
    /// known exactly — unless more truncations than the ring holds came in between: then
    /// every entry from `head_before` on is suspect, the head of the slot this reader knew
    /// before (a suffix truncation deletes nothing below the head of its time, and heads only
    /// rise). Entries of those that a prefix truncation has since removed too are reported
    /// missed: the reader may hold replaced ones among them and cannot know which.
    fn after_slot_change(&mut self, head_before: Lsn) -> Result<()> {
        let now = self.map.word(DELETIONS_OFFSET).load(Ordering::Acquire);
        if now == self.deletions {
            return Ok(());
        }
        // (A count below the last one seen: wrapped, or damaged; the word is not
        // checksummed.)
        let overflow =
            |now: u64| now < self.deletions || now - self.deletions > DELETION_RING as u64;
        // (LSNs start at 1; `head_before` is 0 only while `open` reads the first slot.)
        let head_before = head_before.max(1);
        let mut from = if overflow(now) {
            head_before
        } else {
            (self.deletions..now)
                .map(|n| {
                    let at = DELETION_RING_OFFSET + 8 * (n as usize % DELETION_RING);
                    self.map.word(at).load(Ordering::Acquire)
                })
                .min()
                .unwrap_or(Lsn::MAX)
        };
        // The ring words read may have been overwritten by later deletions meanwhile.
        if overflow(self.map.word(DELETIONS_OFFSET).load(Ordering::Acquire)) {
            from = from.min(head_before);
        }
        // No truncation deleted below `head_before`: a lower word (LSN 0 among them) was never
        // written by one, which a count damaged upwards makes this reader read.
        let from = from.max(head_before);
        self.deletions = now;
        // Nothing this reader returned or passed. (During a walk back to an earlier deletion,
        // `next` lies below what it returned.)
        if from >= self.next && from > self.returned {
            return Ok(());
        }
        // Go back to `from`. Below the head, the next step reports the truncation of what
        // follows; above it, where `from` starts now is found by walking from an earlier
        // entry (positions at or after it may have changed).
        self.anchors.retain(|&(a, _)| a < from);
        let rewound = from <= self.returned;
        if rewound {
            // What it returned from `from` on is returned again (the new entries). (Set before
            // the walk back: a deletion seen during the walk compares with it.)
            self.skip_until = self.skip_until.min(from);
            self.returned = from - 1;
        }
        if from < self.slot.head_lsn {
            self.next = from;
        } else {
            self.restart_at_anchor(from)?;
        }
        if rewound {
            return Err(Error::Rewound {
                path: self.path.clone(),
                from,
            });
        }
        Ok(())
    }

    fn check_replaced(&mut self) -> Result<()> {
        self.last_stat = Instant::now();
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.id => Ok(()),
            _ => Err(Error::Replaced {
                path: self.path.clone(),
            }),
        }
    }
}

/// Entries up to the published end, then `None` (a new call goes on where it stopped). An
/// [`Error::Corrupted`] comes again at every call (see [`Reader::next_entry`]).
impl Iterator for Reader {
    type Item = Result<OwnedEntry>;

    fn next(&mut self) -> Option<Result<OwnedEntry>> {
        self.next_entry().transpose()
    }
}
