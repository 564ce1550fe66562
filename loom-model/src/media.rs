//! An in-memory [`Media`] for loom models: it checks every access to the log's bytes against
//! the memory model and records, per thread, which stores are durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use daxlog::format::{self, EntryHeader, DATA_OFFSET, ENTRY_ALIGN, FLAG_PAD, HEADER_LEN};
use daxlog::{Log, Lsn, Media, Options, Persistence};
use loom::cell::UnsafeCell;
use loom::thread::ThreadId;

/// Bytes of every payload the models append (so entry `lsn` lies at a known offset).
pub const PAYLOAD: usize = 8;
/// Bytes on media of one entry.
pub const ENTRY: usize = format::entry_len(PAYLOAD);
/// The capacity of the models' logs: the smallest there is.
pub const CAPACITY: usize = 8192;
/// The data area's words from `DATA_OFFSET` that are tracked: room for a dozen entries.
const WINDOW_WORDS: usize = 48;

/// Offset just past entry `lsn` of a model's log (LSNs start at 1, entries are [`ENTRY`]
/// bytes).
pub fn entry_end(lsn: Lsn) -> usize {
    DATA_OFFSET + lsn as usize * ENTRY
}

/// The payload thread `t` appends.
pub fn payload(t: u8) -> [u8; PAYLOAD] {
    [t; PAYLOAD]
}

/// A store to one word of the tracked window: set once the storing thread drained after it.
struct Record {
    durable: UnsafeCell<bool>,
}

// SAFETY: the flag is a loom cell: loom checks every access to it for a race, which is what
// these tests are for, and runs one thread at a time.
unsafe impl Send for Record {}
// SAFETY: as above.
unsafe impl Sync for Record {}

/// A store not yet durable.
struct Pending {
    thread: ThreadId,
    word: usize,
    nt: bool,
    flushed: bool,
    record: Arc<Record>,
}

/// Which store each tracked word holds, and the stores not yet durable. Plain bookkeeping,
/// invisible to the model: loom runs one thread at a time, and nothing here synchronises
/// anything.
#[derive(Default)]
struct Book {
    current: HashMap<usize, Arc<Record>>,
    pending: Vec<Pending>,
    /// The first store whose bytes contain this panics (once).
    panic_on: Option<Vec<u8>>,
    /// A thread, and how many of its drains succeed before one fails (once).
    fail_drain: Option<(ThreadId, usize)>,
}

struct Inner {
    bytes: Box<[std::cell::UnsafeCell<u8>]>,
    /// One cell per tracked word: loom checks that every access to a word happens after the
    /// last store to it (and every store after every earlier access), so a store that races
    /// with another store (overlapping reservations, a missed end-marker hand-off) or a read
    /// that races with a store (an entry published before its bytes) fails the model.
    words: Box<[UnsafeCell<()>]>,
    book: StdMutex<Book>,
    /// [`Persistence::Msync`] media (see [`LoomMedia::new_msync`]).
    msync: bool,
}

/// An in-memory [`Media`] for loom models, in CPU-flush mode ([`Persistence::Clwb`]) or in
/// `msync` mode.
///
/// **Durability** is recorded per store, per 8-byte word of the tracked window (the first
/// `WINDOW_WORDS` words of the data area): a cached store becomes durable when the thread that
/// made it flushed a range covering its cache line and then drained; a non-temporal store when
/// that thread drained. (A fence orders only its own core's stores; the engine flushes and
/// drains its own reservations, so this is what it relies on.) The durable flag of each store
/// is a loom cell written at that drain: [`LoomMedia::check_durable`] reads it, so a thread that
/// is told an entry is durable without a happens-before edge from the drain of the thread that
/// stored it fails the model — either loom reports the race or the flag is still unset.
///
/// **msync media** ([`LoomMedia::new_msync`], [`Persistence::Msync`]: a log on a page-cache
/// file system) follow another rule: a flush is an `msync`, which writes the pages as they are
/// when it runs, whoever stored into them. It makes durable the stores to the words of its
/// range that happen before it: the flush reads each word through loom, so a store that does
/// not happen before the flush (an appender's entry that the group commit's leader syncs
/// without having synchronised with that appender) is a race loom reports. It then sets the
/// durable flag of each of those stores, from the syncing thread: an appender told by another
/// thread's sync that its entry is durable must synchronise with that thread to see the flag.
/// A drain makes nothing durable there (neither cached nor non-temporal stores).
///
/// The last [`ENTRY_ALIGN`] bytes of each flushed range are not read, nor made durable: the
/// group commit syncs its tickets' entries and the end marker after them, which the next
/// appender may be overwriting with its own header meanwhile (a race on the page that the
/// format allows: recovery stops at the marker or at the torn header). The models check the
/// durability of entries, not of end markers.
///
/// Clones share the media (one is the log's, the others observe it).
#[derive(Clone)]
pub struct LoomMedia(Arc<Inner>);

// SAFETY: the raw bytes are only accessed under the `Media` contract the engine upholds (no
// store overlaps another access), and every access to the tracked words is checked by loom
// through `words`, which is what these tests are for. Loom runs one thread at a time.
unsafe impl Sync for Inner {}
// SAFETY: as above; the contents are plain bytes and loom cells.
unsafe impl Send for Inner {}

impl Default for LoomMedia {
    fn default() -> Self {
        Self::new()
    }
}

impl LoomMedia {
    /// A zeroed media of [`CAPACITY`] bytes in CPU-flush mode. Must be made inside a loom
    /// model.
    pub fn new() -> Self {
        Self::with_mode(false)
    }

    /// A zeroed media of [`CAPACITY`] bytes in `msync` mode (see the type's documentation).
    /// Must be made inside a loom model.
    pub fn new_msync() -> Self {
        Self::with_mode(true)
    }

    fn with_mode(msync: bool) -> Self {
        LoomMedia(Arc::new(Inner {
            bytes: (0..CAPACITY)
                .map(|_| std::cell::UnsafeCell::new(0))
                .collect(),
            words: (0..WINDOW_WORDS).map(|_| UnsafeCell::new(())).collect(),
            book: StdMutex::new(Book::default()),
            msync,
        }))
    }

    /// msync mode's flush: see the type's documentation.
    fn msync(&self, off: usize, len: usize) {
        let end = off + len.saturating_sub(ENTRY_ALIGN);
        let first = off.max(DATA_OFFSET);
        if first >= end {
            return;
        }
        let (w0, w1) = (Self::word(first).unwrap(), Self::word(end - 1).unwrap());
        let mut book = self.book();
        for w in w0..=w1 {
            // A read access: the store it writes back must happen before it.
            self.0.words[w].with(|_| ());
            if let Some(r) = book.current.get(&w) {
                r.durable.with_mut(|d| {
                    // SAFETY: a pointer from `with_mut`, valid for the closure; loom checks
                    // that no other access to the flag is concurrent.
                    unsafe { *d = true }
                });
            }
            book.pending.retain(|p| p.word != w);
        }
    }

    /// Makes the first store whose bytes contain `pattern` panic (an appender that dies while
    /// it stores its entries).
    pub fn panic_on_store_of(&self, pattern: &[u8]) {
        self.book().panic_on = Some(pattern.to_vec());
    }

    /// Makes this thread's drain after its next `ok` drains fail (once): a barrier that
    /// reports an error although its stores are in the bytes (a crash image of this media
    /// holds them).
    pub fn fail_drain_of_this_thread(&self, ok: usize) {
        self.book().fail_drain = Some((loom::thread::current().id(), ok));
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tracked word holding byte `off`, if it is in the window; panics for a data-area
    /// byte past the window (the models must fit in it).
    fn word(off: usize) -> Option<usize> {
        if off < DATA_OFFSET {
            return None;
        }
        let w = (off - DATA_OFFSET) / 8;
        assert!(
            w < WINDOW_WORDS,
            "offset {off} is past the tracked window of the loom media"
        );
        Some(w)
    }

    fn do_store(&self, off: usize, src: &[u8], nt: bool) {
        assert!(off + src.len() <= CAPACITY, "store out of bounds");
        {
            let mut book = self.book();
            if let Some(p) = &book.panic_on {
                if src.windows(p.len()).any(|w| w == p.as_slice()) {
                    book.panic_on = None;
                    drop(book);
                    panic!("injected: the appender dies while storing its entry");
                }
            }
        }
        let thread = loom::thread::current().id();
        let first = off.max(DATA_OFFSET);
        if first < off + src.len() {
            let (w0, w1) = (
                Self::word(first).unwrap(),
                Self::word(off + src.len() - 1).unwrap(),
            );
            let mut book = self.book();
            for w in w0..=w1 {
                // A write access: loom checks it against every earlier access to the word.
                self.0.words[w].with_mut(|_| ());
                let record = Arc::new(Record {
                    durable: UnsafeCell::new(false),
                });
                book.current.insert(w, record.clone());
                book.pending.retain(|p| p.word != w || p.thread != thread);
                book.pending.push(Pending {
                    thread,
                    word: w,
                    nt,
                    flushed: false,
                    record,
                });
            }
        }
        for (i, &b) in src.iter().enumerate() {
            // SAFETY: in bounds (asserted above); the engine stores into no range another
            // thread accesses meanwhile (the `Media` contract), and the window's words are
            // checked by loom above.
            unsafe { *self.0.bytes[off + i].get() = b };
        }
    }

    /// Checks that every word of `[DATA_OFFSET, end)` holds a store that is durable, as seen
    /// from this thread (a read of each store's durable flag, and of the word itself).
    pub fn check_durable(&self, end: usize) -> Result<(), String> {
        let book = self.book();
        for w in 0..(end - DATA_OFFSET).div_ceil(8) {
            self.0.words[w].with(|_| ());
            let Some(r) = book.current.get(&w) else {
                return Err(format!("word at {} never stored", DATA_OFFSET + 8 * w));
            };
            if !r.durable.with(unsafe_read) {
                return Err(format!(
                    "the store to the word at {} is not durable",
                    DATA_OFFSET + 8 * w
                ));
            }
        }
        Ok(())
    }

    /// A copy of `[off, off + len)` (reads checked by loom).
    pub fn copy(&self, off: usize, len: usize) -> Vec<u8> {
        // SAFETY: in bounds; the caller reads only what no thread stores concurrently, and
        // loom checks the tracked words in `read`.
        unsafe { self.read(off, len) }.to_vec()
    }
}

/// Reads a durable flag through loom's checked pointer.
fn unsafe_read(p: *const bool) -> bool {
    // SAFETY: `p` comes from `UnsafeCell::with`, valid for the closure; loom has checked that
    // no store to the flag is concurrent with this read.
    unsafe { *p }
}

impl Media for LoomMedia {
    fn len(&self) -> usize {
        CAPACITY
    }

    fn persistence(&self) -> Persistence {
        if self.0.msync {
            Persistence::Msync
        } else {
            Persistence::Clwb
        }
    }

    unsafe fn read(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= CAPACITY, "read out of bounds");
        if len > 0 && off + len > DATA_OFFSET {
            let first = off.max(DATA_OFFSET);
            let last = (off + len - 1).min(DATA_OFFSET + 8 * WINDOW_WORDS - 1);
            if first <= last {
                for w in (first - DATA_OFFSET) / 8..=(last - DATA_OFFSET) / 8 {
                    // A read access: loom checks that the last store to the word happens
                    // before it.
                    self.0.words[w].with(|_| ());
                }
            }
        }
        // SAFETY: in bounds (asserted above); `UnsafeCell<u8>` has the layout of `u8`, and the
        // caller guarantees that no store to the range happens while the slice lives.
        unsafe { std::slice::from_raw_parts(self.0.bytes[off].get(), len) }
    }

    unsafe fn store(&self, off: usize, src: &[u8]) {
        self.do_store(off, src, false)
    }

    unsafe fn store_nt(&self, off: usize, src: &[u8]) {
        self.do_store(off, src, true)
    }

    fn flush(&self, off: usize, len: usize) {
        if self.0.msync {
            return self.msync(off, len);
        }
        let thread = loom::thread::current().id();
        // The write-back takes whole cache lines.
        let (a, b) = (off & !63, (off + len + 63) & !63);
        let mut book = self.book();
        for p in book.pending.iter_mut() {
            let at = DATA_OFFSET + 8 * p.word;
            if p.thread == thread && at >= a && at < b {
                p.flushed = true;
            }
        }
    }

    fn drain(&self) -> std::io::Result<()> {
        let thread = loom::thread::current().id();
        let mut book = self.book();
        if let Some((t, ok)) = book.fail_drain {
            if t == thread {
                if ok == 0 {
                    book.fail_drain = None;
                    return Err(std::io::Error::other("injected: a failed barrier"));
                }
                book.fail_drain = Some((t, ok - 1));
            }
        }
        if self.0.msync {
            return Ok(());
        }
        book.pending.retain(|p| {
            if p.thread == thread && (p.nt || p.flushed) {
                p.record.durable.with_mut(|d| {
                    // SAFETY: a pointer from `with_mut`, valid for the closure; loom checks
                    // that no other access to the flag is concurrent.
                    unsafe { *d = true }
                });
                false
            } else {
                true
            }
        });
        Ok(())
    }
}

/// A new, empty log on `media` for a model: non-temporal stores if `nt` (the default of the
/// engine), else cached stores with write-back; no tail hints.
pub fn new_log(media: LoomMedia, nt: bool) -> Log<LoomMedia> {
    let opts = Options::new().nt_threshold(if nt { 0 } else { usize::MAX });
    Log::create_on(media, &opts).expect("create the model's log")
}

/// What an appender checks when its append of `lsn` returns: the entry and every entry
/// before it are published and durable as seen from this thread.
pub fn check_acknowledged(log: &Log<LoomMedia>, media: &LoomMedia, lsn: Lsn) {
    let last = log.last_lsn().unwrap_or(0);
    assert!(
        last >= lsn,
        "append of LSN {lsn} returned before it was published (last LSN {last})"
    );
    if let Err(e) = media.check_durable(entry_end(lsn)) {
        panic!("append of LSN {lsn} returned before an entry up to it was durable: {e}");
    }
}

/// After every thread joined: the log holds exactly LSNs `1..=appended.len()`, each the
/// payload its appender was told (`Some(thread)`) or padding (`None`: an abandoned append),
/// back to back from the start of the data area (no hole, no overlap); readers see the same,
/// and so does recovery.
pub fn check_final(log: Log<LoomMedia>, media: &LoomMedia, appended: &[Option<u8>]) {
    let n = appended.len() as Lsn;
    assert_eq!(log.last_lsn(), (n > 0).then_some(n), "last LSN");
    for (i, who) in appended.iter().enumerate() {
        let lsn = i as Lsn + 1;
        let at = entry_end(lsn) - ENTRY;
        let bytes = media.copy(at, ENTRY);
        let h = EntryHeader::decode(&bytes);
        assert_eq!(
            (h.lsn, h.len as usize),
            (lsn, PAYLOAD),
            "entry at {at}: {h:?}"
        );
        let body = &bytes[HEADER_LEN..HEADER_LEN + PAYLOAD];
        match who {
            Some(t) => {
                assert_eq!(h.flags & FLAG_PAD, 0, "LSN {lsn} is padding");
                assert_eq!(body, payload(*t), "payload of LSN {lsn}");
            }
            None => {
                assert_ne!(h.flags & FLAG_PAD, 0, "abandoned LSN {lsn} is not padding");
                assert_eq!(body, [0u8; PAYLOAD], "padding of LSN {lsn}");
            }
        }
    }
    let live: Vec<(Lsn, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
    let want: Vec<(Lsn, Vec<u8>)> = appended
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.map(|t| (i as Lsn + 1, payload(t).to_vec())))
        .collect();
    assert_eq!(live, want, "what readers see");
    drop(log);
    let log = Log::open_on(media.clone(), &Options::new()).expect("recover");
    assert_eq!(log.recovery().entries, n, "entries recovered");
    let recovered: Vec<(Lsn, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
    assert_eq!(recovered, want, "what recovery finds");
}
