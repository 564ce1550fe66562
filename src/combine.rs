//! Write combining on slow media: appends that would wait for a place in the ring ride in one
//! appender's batch.
//!
//! At most [`MAX_INFLIGHT`] appends (tickets) are in flight at once (FORMAT.md, section 6a), so
//! in msync mode one sync covers at most that many, however many threads append. Where a sync
//! is slow (a disk: [`COMBINE_FROM`] or more on average), an appender that finds the ring
//! full does not wait for a ticket of its own: it queues its payload, and one queued appender,
//! the *combiner*, appends its own payload and every queued one as one batch
//! ([`Log::append_batch`]: one ticket, one reservation, durable all together), then tells each
//! its LSN. While a combiner waits for its ticket and its sync, the next appenders queue up
//! for the next combiner, to which it hands over when it is done.
//!
//! Nothing here reaches the media: a combined append is an ordinary batch, durable and
//! published before any of its appenders returns. A combiner whose batch fails (the batch does
//! not fit where its appends one by one might, a failed sync, ...) tells the others to append
//! on their own, so each gets its own answer; an append is never both combined and retried.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::Result;
use crate::log::Log;
use crate::media::Media;
use crate::tickets::{State, MAX_INFLIGHT, TICKET_MASK};
use crate::Lsn;

/// Appends are combined only where syncs take this long on average (disks take about
/// 100 µs; a file in memory about 1 µs, where a hand-over between threads would cost more
/// than it saves).
pub(crate) const COMBINE_FROM: Duration = Duration::from_micros(20);

/// Payloads larger than this are always appended on their own.
const COMBINE_PAYLOAD_MAX: usize = 64 << 10;

/// At most this many payloads, and about this many bytes, go in one combined batch. A batch
/// is one of the reservations recovery allows to follow damage that it takes for an
/// interrupted append (FORMAT.md, 6a: up to 16 batch ends after the damaged entry), and it is
/// discarded whole if one of its entries is damaged: so the bound also bounds what such damage
/// can take with it (about 17 x 32 appends), where larger batches would gain little (32 appenders: about 30
/// appends per sync).
const COMBINE_MAX: usize = 32;
const COMBINE_BYTES: usize = 128 << 10;

/// The queue of appends waiting for a combiner.
#[derive(Default)]
pub(crate) struct Combiner {
    state: Mutex<Queue>,
    /// Appends that rode in another appender's batch.
    combined: std::sync::atomic::AtomicU64,
    /// Mirrors `Queue::leading` (written under the lock, read without it).
    active: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Queue {
    /// An appender is combining (from taking the queue until it hands over or clears this).
    leading: bool,
    waiting: VecDeque<Arc<Waiter>>,
}

/// One queued append.
struct Waiter {
    payload: Vec<u8>,
    outcome: Mutex<Option<Outcome>>,
    told: Condvar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Durable and published at this LSN.
    Appended(Lsn),
    /// Not appended: append it on your own.
    Retry,
    /// Not appended: you are the combiner now.
    Lead,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Waiter {
    fn tell(&self, outcome: Outcome) {
        *lock(&self.outcome) = Some(outcome);
        self.told.notify_one();
    }

    fn wait(&self) -> Outcome {
        let mut o = lock(&self.outcome);
        loop {
            if let Some(outcome) = *o {
                return outcome;
            }
            o = self.told.wait(o).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Combiner {
    /// Appends that rode in another appender's batch so far.
    pub(crate) fn combined(&self) -> u64 {
        self.combined.load(Ordering::Relaxed)
    }
}

impl<M: Media> Log<M> {
    /// True if an append of `payload` should be combined: msync mode, slow syncs, a payload
    /// that is not large, and a ring with no free place (so that the append would wait).
    #[inline]
    pub(crate) fn should_combine(&self, payload: &[u8]) -> bool {
        if cfg!(loom)
            || payload.len() > COMBINE_PAYLOAD_MAX
            || self.pmem.media().persistence().is_cpu_flush()
            || self.pmem.media().schedules_threads()
        {
            return false;
        }
        let st = State::unpack(self.resv.load_torn());
        let published = self.published.load(Ordering::Acquire);
        let inflight = st.ticket.wrapping_sub(published) & TICKET_MASK;
        (inflight >= MAX_INFLIGHT as u64 || self.combiner.active.load(Ordering::Relaxed))
            && self.group.average_sync() >= COMBINE_FROM
    }

    /// Appends `payload` combined with others (module documentation), or returns `None`:
    /// append it on your own.
    pub(crate) fn append_combined(&self, payload: &[u8]) -> Option<Result<Lsn>> {
        let mut q = lock(&self.combiner.state);
        if q.leading {
            let me = Arc::new(Waiter {
                payload: payload.to_vec(),
                outcome: Mutex::new(None),
                told: Condvar::new(),
            });
            q.waiting.push_back(Arc::clone(&me));
            drop(q);
            match me.wait() {
                Outcome::Appended(lsn) => Some(Ok(lsn)),
                Outcome::Retry => None,
                Outcome::Lead => self.combine(payload),
            }
        } else {
            q.leading = true;
            self.combiner.active.store(true, Ordering::Relaxed);
            drop(q);
            self.combine(payload)
        }
    }

    /// As the combiner: appends `own` and the queued payloads as one batch, tells each queued
    /// appender its outcome, and hands the lead to the next queued appender, if any.
    fn combine(&self, own: &[u8]) -> Option<Result<Lsn>> {
        let mut lead = Leading {
            log: self,
            taken: Vec::new(),
            first: None,
        };
        {
            let mut q = lock(&self.combiner.state);
            let mut bytes = own.len();
            while lead.taken.len() + 1 < COMBINE_MAX && bytes < COMBINE_BYTES {
                let Some(w) = q.waiting.pop_front() else {
                    break;
                };
                bytes += w.payload.len();
                lead.taken.push(w);
            }
        }
        // (Alone, it appends its own payload as a batch of one, still leading: whoever
        // queues meanwhile goes in the next combiner's batch.)
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(lead.taken.len() + 1);
        payloads.push(own);
        payloads.extend(lead.taken.iter().map(|w| &w.payload[..]));
        match self.append_batch(&payloads) {
            Ok(lsns) => {
                lead.first = Some(lsns.start + 1);
                self.combiner
                    .combined
                    .fetch_add(lead.taken.len() as u64, Ordering::Relaxed);
                Some(Ok(lsns.start))
            }
            // The others are told to retry (by `lead`'s drop); so does this appender.
            Err(_) => None,
        }
    }
}

/// The combiner's duty, done when it returns or unwinds: every appender it took is told its
/// LSN (once the batch is appended) or to retry (before), and the lead passes on.
struct Leading<'a, M: Media> {
    log: &'a Log<M>,
    taken: Vec<Arc<Waiter>>,
    /// The LSN of the first taken payload, once the batch is durable.
    first: Option<Lsn>,
}

impl<M: Media> Drop for Leading<'_, M> {
    fn drop(&mut self) {
        for (i, w) in self.taken.iter().enumerate() {
            w.tell(match self.first {
                Some(first) => Outcome::Appended(first + i as u64),
                None => Outcome::Retry,
            });
        }
        let mut q = lock(&self.log.combiner.state);
        match q.waiting.pop_front() {
            Some(next) => {
                drop(q);
                next.tell(Outcome::Lead);
            }
            None => {
                q.leading = false;
                self.log.combiner.active.store(false, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Options, PersistenceChoice};

    fn waiter(payload: &[u8]) -> Arc<Waiter> {
        Arc::new(Waiter {
            payload: payload.to_vec(),
            outcome: Mutex::new(None),
            told: Condvar::new(),
        })
    }

    /// A combiner with `queued` waiting: as `append_combined` makes one when it finds no other.
    fn lead_with(log: &Log, queued: &[Arc<Waiter>]) {
        let mut q = lock(&log.combiner.state);
        assert!(!q.leading);
        q.leading = true;
        q.waiting.extend(queued.iter().cloned());
    }

    fn outcome(w: &Waiter) -> Option<Outcome> {
        *lock(&w.outcome)
    }

    fn msync_log(dir: &std::path::Path, capacity: u64) -> Log {
        let opts = Options::new()
            .capacity(capacity)
            .persistence(PersistenceChoice::ForceMsync);
        Log::create(dir.join("l"), &opts).unwrap()
    }

    #[test]
    fn the_combiner_appends_the_queue_and_tells_each_its_lsn() {
        let dir = tempfile::tempdir().unwrap();
        let log = msync_log(dir.path(), 1 << 20);
        log.append(b"before").unwrap();
        let (a, b) = (waiter(b"a"), waiter(b"b"));
        lead_with(&log, &[a.clone(), b.clone()]);
        let own = log.combine(b"own").expect("combined").unwrap();
        assert_eq!(own, 2);
        assert_eq!(outcome(&a), Some(Outcome::Appended(3)));
        assert_eq!(outcome(&b), Some(Outcome::Appended(4)));
        for (lsn, p) in [(2, &b"own"[..]), (3, b"a"), (4, b"b")] {
            assert_eq!(log.read(lsn).unwrap().payload, p);
        }
        assert!(!lock(&log.combiner.state).leading, "the lead is given up");
        assert_eq!(log.sync_stats().combined, 2);
    }

    #[test]
    fn a_batch_that_does_not_fit_sends_each_appender_to_append_alone() {
        let dir = tempfile::tempdir().unwrap();
        let log = msync_log(dir.path(), 64 << 10);
        while log.free_bytes() > 3000 {
            log.append(&[0u8; 1000]).unwrap();
        }
        // The batch (own + big) does not fit; own alone does.
        let big = waiter(&[1u8; 4000]);
        lead_with(&log, std::slice::from_ref(&big));
        let next = log.next_lsn();
        assert!(log.combine(b"own").is_none(), "the combiner appends alone");
        assert_eq!(outcome(&big), Some(Outcome::Retry));
        assert_eq!(log.next_lsn(), next, "nothing appended");
        assert!(!lock(&log.combiner.state).leading);
        assert_eq!(log.append(b"own").unwrap(), next);
    }

    #[test]
    fn the_lead_passes_to_the_first_appender_left_in_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let log = msync_log(dir.path(), 1 << 20);
        let queued: Vec<_> = (0..COMBINE_MAX + 1)
            .map(|i| waiter(format!("w{i}").as_bytes()))
            .collect();
        lead_with(&log, &queued);
        assert_eq!(log.combine(b"own").unwrap().unwrap(), 1);
        // The combiner took COMBINE_MAX - 1 of them; the next is told to lead, the last waits.
        for (i, w) in queued[..COMBINE_MAX - 1].iter().enumerate() {
            assert_eq!(outcome(w), Some(Outcome::Appended(2 + i as u64)));
        }
        assert_eq!(outcome(&queued[COMBINE_MAX - 1]), Some(Outcome::Lead));
        assert_eq!(outcome(&queued[COMBINE_MAX]), None);
        let q = lock(&log.combiner.state);
        assert!(q.leading, "the lead stays taken while it passes on");
        assert_eq!(q.waiting.len(), 1);
    }
}
