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
use std::time::{Duration, Instant};

use crate::sync::atomic::AtomicU64;
use crate::sync::parking_lot;
use crate::Lsn;

/// The longest a new pin waits for a suffix truncation that drains the last pins: long next to
/// a read (so a stream of readers cannot starve the truncation), short next to a timeout.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_millis(1);

/// A pinned position: the LSN of an entry and its offset (where the entry is, or will be).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub lsn: Lsn,
    pub offset: usize,
}

pub(crate) struct PinState {
    /// The head: the first live entry (the oldest position nobody needs to pin).
    pub head: Pos,
    /// Pinned positions, the thread that took each, and whether it was taken while a suffix
    /// truncation waited (see `closing`); `None` for a free place.
    pins: Vec<Option<Held>>,
    held: usize,
    /// A suffix truncation waits for the pins held to go. New pins do not wait for it while
    /// pins taken before it began are held (they may be held for long: readers go on at
    /// their own pace meanwhile); from then on (`draining`) they wait, so that the truncation
    /// only waits for the pins held then.
    closing: bool,
    draining: bool,
}

#[derive(Clone, Copy)]
struct Held {
    pos: Pos,
    thread: std::thread::ThreadId,
    /// Taken while a suffix truncation waited.
    late: bool,
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

impl Pins {
    pub(crate) fn new(head: Pos) -> Self {
        Pins {
            state: parking_lot::Mutex::new(PinState {
                head,
                pins: Vec::new(),
                held: 0,
                closing: false,
                draining: false,
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

    /// Pins the head; returns the pin's place and the position pinned. First waits, at most
    /// `max_wait` (and never longer than [`DRAIN_WAIT`]), while a suffix truncation drains the
    /// last pins. A truncation's own short pin passes `Duration::ZERO`: it holds the
    /// truncations' lock, which the suffix truncation needs once the pins are gone.
    pub(crate) fn pin(&self, max_wait: Duration) -> (usize, Pos) {
        let mut s = self.state.lock();
        let me = std::thread::current().id();
        // Only while a suffix truncation waits for the last pins (those taken before it began
        // are gone), and not if this thread holds one (the truncation waits for that one:
        // this thread must not wait for the truncation). The wait is bounded: it only keeps
        // a stream of new readers from starving the truncation, and a reader may be waited
        // for by a late pin's holder (a guard held across a hand-off to a worker thread that
        // reads), which an unbounded wait would turn into a deadlock.
        let mut until = None;
        while s.draining && !s.held_by(me) {
            // (The clock is read only when there is something to wait for.)
            let until = *until.get_or_insert_with(|| Instant::now() + max_wait.min(DRAIN_WAIT));
            if Instant::now() >= until {
                break;
            }
            drop(s);
            std::thread::sleep(Duration::from_micros(20));
            s = self.state.lock();
        }
        let head = s.head;
        s.held += 1;
        let held = Held {
            pos: head,
            thread: me,
            late: s.closing,
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
        (at, head)
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

    /// Waits until no pin is held, then runs `f` with the table locked; new pins wait from
    /// the time the pins held at the call are gone until `f` returns (see `closing`). `None`
    /// (and `f` not run) if the calling thread holds a pin itself: it would wait for itself.
    /// (A pin counts for the thread that took it.)
    pub(crate) fn exclusive<R>(&self, f: impl FnOnce(&mut PinState) -> R) -> Option<R> {
        let me = std::thread::current().id();
        loop {
            let mut s = self.state.lock();
            if s.held_by(me) {
                // (On the first round, so nothing of this call to undo: `closing` and
                // `draining`, if set, belong to another truncation that waits.)
                return None;
            }
            if s.held == 0 {
                s.closing = false;
                s.draining = false;
                let r = f(&mut s);
                self.update(&s);
                return Some(r);
            }
            if !s.closing {
                s.closing = true;
                // Every pin held now was taken before this truncation began.
                for h in s.pins.iter_mut().flatten() {
                    h.late = false;
                }
            }
            if s.pins.iter().flatten().all(|h| h.late) {
                s.draining = true;
            }
            drop(s);
            std::thread::sleep(Duration::from_micros(20));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn wait_for(pins: &Pins, what: impl Fn(&PinState) -> bool) {
        let t = Instant::now();
        while !pins.with(|s| what(s)) {
            assert!(t.elapsed() < Duration::from_secs(60), "state never reached");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A guard holder whose suffix truncation fails (it holds a pin) leaves alone the drain of
    /// another suffix truncation that waits: that one would otherwise start over and wait for
    /// every pin held then, late ones included.
    #[test]
    fn a_guard_holders_refused_truncation_leaves_anothers_drain_in_place() {
        let pins = Arc::new(Pins::new(Pos { lsn: 1, offset: 0 }));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let early = {
            let pins = pins.clone();
            std::thread::spawn(move || {
                let (at, _) = pins.pin(Duration::ZERO);
                release_rx.recv().unwrap();
                pins.unpin(at);
            })
        };
        wait_for(&pins, |s| s.held() == 1);
        let truncation = {
            let pins = pins.clone();
            std::thread::spawn(move || pins.exclusive(|_| 7))
        };
        wait_for(&pins, |s| s.closing);
        // A late pin (taken while the truncation waits), then the early one goes: it drains.
        let (late, _) = pins.pin(Duration::ZERO);
        release_tx.send(()).unwrap();
        early.join().unwrap();
        wait_for(&pins, |s| s.draining);
        assert_eq!(pins.exclusive(|_| 0), None, "this thread holds a pin");
        assert!(
            pins.with(|s| s.draining && s.closing),
            "the waiting truncation's drain was undone"
        );
        pins.unpin(late);
        assert_eq!(truncation.join().unwrap(), Some(7));
        assert!(pins.with(|s| !s.draining && !s.closing && s.held() == 0));
    }
}
