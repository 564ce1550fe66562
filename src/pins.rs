//! Reader positions: which truncated bytes a reader in this process can still see.
//!
//! A prefix truncation moves the head at once (one slot update), but the bytes it frees may
//! still be lent to readers as slices. Each reader that lends slices holds a *pin*
//! ([`crate::Guard`]): the LSN and offset of the oldest entry it may read. Appenders never
//! reserve bytes at or after the oldest pin (or the head, whichever is older), so pinned
//! entries stay intact until their pin is dropped; an append that would need them gets
//! [`crate::Error::Full`] naming the pinned LSN instead of waiting or overwriting.
//!
//! Why a table and not epoch-based reclamation (`crossbeam-epoch`): what is reclaimed here is
//! not memory but a position in a ring that appenders reach in order, so what an appender needs
//! is one number, the oldest position still seen, and a `Full` error must be able to name its
//! LSN; an epoch scheme knows neither. A reader holds a pin only while it reads (a follower
//! copies each entry out and holds nothing while it waits).
//!
//! The table is a mutex-protected list, taken by readers when they pin and unpin and by
//! truncations when they move the head (both rare next to appends); appenders only load the
//! published limit, [`Pins::limit`], one atomic word.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::sync::atomic::AtomicU64;
use crate::sync::parking_lot;
use crate::Lsn;

/// A pinned position: the LSN of an entry and its offset (where the entry is, or will be).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub lsn: Lsn,
    pub offset: usize,
}

pub(crate) struct PinState {
    /// The head: the first live entry (the oldest position nobody needs to pin).
    pub head: Pos,
    /// Pinned positions, the thread that took each, and the last LSN it may read; `None`
    /// for a free place.
    pins: Vec<Option<Held>>,
    held: usize,
    /// Suffix truncations waiting for pins to go, and the lowest LSN any of them keeps (its
    /// `lsn` argument: the lowest of those that waited since the last time none did;
    /// `Lsn::MAX` when none waits). A pin taken while one waits reads no
    /// entry after that LSN, so that no suffix truncation waits for a pin taken after it
    /// began: readers never wait for a truncation, and a stream of overlapping guards cannot
    /// hold one off.
    waiting: usize,
    keeps_to: Lsn,
}

#[derive(Clone, Copy)]
struct Held {
    pos: Pos,
    thread: std::thread::ThreadId,
    /// The last LSN it may read.
    sees_to: Lsn,
}

/// The pin table and the limit appenders respect.
pub(crate) struct Pins {
    state: parking_lot::Mutex<PinState>,
    /// Offset of the oldest position in use (the head or a pin): appenders keep before it.
    limit: AtomicU64,
    /// The LSN pinned at `limit`, or 0 if no pin holds it.
    limit_pin: AtomicU64,
}

impl PinState {
    /// How many pins are held.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    fn held_by(&self, thread: std::thread::ThreadId) -> bool {
        self.pins.iter().flatten().any(|h| h.thread == thread)
    }
}

/// Whether a pin may read every entry there is, or only those that the suffix truncations
/// waiting when it is taken keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Only the entries the waiting suffix truncations keep: a reader's pin.
    Kept,
    /// Every entry: a truncation's own short pin, taken with the truncations' lock held
    /// (which a suffix truncation needs before it deletes anything).
    All,
}

impl Pins {
    pub(crate) fn new(head: Pos) -> Self {
        Pins {
            state: parking_lot::Mutex::new(PinState {
                head,
                pins: Vec::new(),
                held: 0,
                waiting: 0,
                keeps_to: Lsn::MAX,
            }),
            limit: AtomicU64::new(head.offset as u64),
            limit_pin: AtomicU64::new(0),
        }
    }

    /// The offset appenders must stay before, and the pinned LSN it belongs to, if a pin.
    ///
    /// Once a reservation placed the tail by some limit, a later load returns that limit or a
    /// later one: the limit only moves forward in ring order (a pin is only ever taken at the
    /// head, which is at or after the limit), so an appender that loads it after the
    /// reservation word sees a limit at or after that word's tail.
    #[inline]
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::SeqCst) as usize
    }

    /// The oldest pinned LSN, if a pin holds the limit (at the head, or before it).
    pub(crate) fn limit_pin(&self) -> Option<Lsn> {
        match self.limit_pin.load(Ordering::Acquire) {
            0 => None,
            l => Some(l),
        }
    }

    /// Pins the head, without waiting; returns the pin's place, the position pinned and the
    /// last LSN the pin may read (`Lsn::MAX`: every entry, however many are appended).
    pub(crate) fn pin(&self, reach: Reach) -> (usize, Pos, Lsn) {
        let mut s = self.state.lock();
        let head = s.head;
        let sees_to = match reach {
            Reach::Kept => s.keeps_to,
            Reach::All => Lsn::MAX,
        };
        s.held += 1;
        let held = Held {
            pos: head,
            thread: std::thread::current().id(),
            sees_to,
        };
        let at = match s.pins.iter().position(Option::is_none) {
            Some(i) => {
                s.pins[i] = Some(held);
                i
            }
            None => {
                s.pins.push(Some(held));
                s.pins.len() - 1
            }
        };
        // (The limit stays where it is: the head is at or after it. Its pinned LSN may not.)
        self.update(&s);
        (at, head, sees_to)
    }

    /// Releases the pin at `at`.
    pub(crate) fn unpin(&self, at: usize) {
        let mut s = self.state.lock();
        s.pins[at] = None;
        s.held -= 1;
        self.update(&s);
    }

    /// Runs `f` with the table locked: `f` may move the head. The limit follows.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut PinState) -> R) -> R {
        let mut s = self.state.lock();
        let r = f(&mut s);
        self.update(&s);
        r
    }

    /// For a suffix truncation that keeps the entries up to `keep`: waits until no pin held
    /// may read an entry after `keep` (pins taken from the call on read none: only pins
    /// taken before it are waited for), then runs `f` with the table locked, again after a
    /// pause for as long as `f` returns `None` (it waits for something else). `None` (and `f`
    /// not run) if the calling thread holds a pin itself: it would wait for itself. (A pin
    /// counts for the thread that took it.)
    pub(crate) fn exclusive<R>(
        &self,
        keep: Lsn,
        mut f: impl FnMut(&mut PinState) -> Option<R>,
    ) -> Option<R> {
        {
            let mut s = self.state.lock();
            if s.held_by(std::thread::current().id()) {
                return None;
            }
            s.waiting += 1;
            s.keeps_to = s.keeps_to.min(keep);
        }
        // No longer waiting once done, or if `f` panics (declared before the lock's guard, so
        // dropped after it).
        let _leave = Leave(self);
        let mut s = self.state.lock();
        loop {
            if !s.pins.iter().flatten().any(|h| h.sees_to > keep) {
                if let Some(r) = f(&mut s) {
                    self.update(&s);
                    return Some(r);
                }
            }
            drop(s);
            std::thread::sleep(Duration::from_micros(20));
            s = self.state.lock();
        }
    }

    fn update(&self, s: &PinState) {
        let oldest = s.pins.iter().flatten().map(|h| h.pos).min_by_key(|p| p.lsn);
        let (limit, pin) = match oldest {
            Some(p) if p.lsn <= s.head.lsn => (p.offset, p.lsn),
            _ => (s.head.offset, 0),
        };
        // The pinned LSN first: an appender that sees the limit finds the LSN that holds it.
        self.limit_pin.store(pin, Ordering::Release);
        self.limit.store(limit as u64, Ordering::SeqCst);
    }
}

/// Ends a suffix truncation's wait (see [`Pins::exclusive`]).
struct Leave<'a>(&'a Pins);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.waiting -= 1;
        if s.waiting == 0 {
            s.keeps_to = Lsn::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    fn wait_for(pins: &Pins, what: impl Fn(&PinState) -> bool) {
        let t = Instant::now();
        while !pins.with(|s| what(s)) {
            assert!(t.elapsed() < Duration::from_secs(60), "state never reached");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A suffix truncation waits for the pins taken before it began, and for no pin taken
    /// after: those read nothing past what it keeps. Pins that overlap one another (each taken
    /// before the last one goes) cannot hold it off.
    #[test]
    fn a_suffix_truncation_waits_only_for_earlier_pins() {
        let pins = Arc::new(Pins::new(Pos { lsn: 1, offset: 0 }));
        let (early, _, sees) = pins.pin(Reach::Kept);
        assert_eq!(
            sees,
            Lsn::MAX,
            "no truncation waits: a pin reads every entry"
        );
        let truncation = {
            let pins = pins.clone();
            std::thread::spawn(move || pins.exclusive(10, |_| Some(7)))
        };
        wait_for(&pins, |s| s.waiting == 1);
        // Overlapping pins taken while it waits: each reads up to what it keeps.
        let (late, _, sees) = pins.pin(Reach::Kept);
        assert_eq!(sees, 10);
        let (own, _, sees) = pins.pin(Reach::All);
        assert_eq!(sees, Lsn::MAX, "a truncation's own pin reads everything");
        pins.unpin(own);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!truncation.is_finished(), "the pin taken before it is held");
        pins.unpin(early);
        // Done although a pin is still held (and another is taken meanwhile).
        let (later, _, _) = pins.pin(Reach::Kept);
        assert_eq!(truncation.join().unwrap(), Some(7));
        assert!(pins.with(|s| s.waiting == 0 && s.keeps_to == Lsn::MAX && s.held() == 2));
        pins.unpin(late);
        pins.unpin(later);
        // A second truncation that keeps less waits for the pins that may read more.
        let (a, _, _) = pins.pin(Reach::Kept);
        let first = {
            let pins = pins.clone();
            std::thread::spawn(move || pins.exclusive(10, |_| Some(1)))
        };
        wait_for(&pins, |s| s.waiting == 1);
        let (b, _, sees) = pins.pin(Reach::Kept);
        assert_eq!(sees, 10);
        let second = {
            let pins = pins.clone();
            std::thread::spawn(move || pins.exclusive(5, |_| Some(2)))
        };
        wait_for(&pins, |s| s.waiting == 2);
        let (c, _, sees) = pins.pin(Reach::Kept);
        assert_eq!(sees, 5, "the lowest kept LSN of those waiting");
        pins.unpin(a);
        assert_eq!(first.join().unwrap(), Some(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!second.is_finished(), "pin b may read entry 6..=10");
        pins.unpin(b);
        assert_eq!(second.join().unwrap(), Some(2));
        pins.unpin(c);
    }

    /// A thread that holds a pin is refused (it would wait for itself), and leaves the state
    /// of another truncation that waits as it was.
    #[test]
    fn a_guard_holders_truncation_is_refused() {
        let pins = Arc::new(Pins::new(Pos { lsn: 1, offset: 0 }));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let early = {
            let pins = pins.clone();
            std::thread::spawn(move || {
                let (at, _, _) = pins.pin(Reach::Kept);
                release_rx.recv().unwrap();
                pins.unpin(at);
            })
        };
        wait_for(&pins, |s| s.held() == 1);
        let truncation = {
            let pins = pins.clone();
            std::thread::spawn(move || pins.exclusive(3, |_| Some(7)))
        };
        wait_for(&pins, |s| s.waiting == 1);
        let (mine, _, _) = pins.pin(Reach::Kept);
        assert_eq!(
            pins.exclusive(1, |_| Some(0)),
            None,
            "this thread holds a pin"
        );
        assert!(pins.with(|s| s.waiting == 1 && s.keeps_to == 3));
        release_tx.send(()).unwrap();
        early.join().unwrap();
        assert_eq!(truncation.join().unwrap(), Some(7));
        pins.unpin(mine);
    }
}
