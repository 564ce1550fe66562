//! The state of the group commit of a log in `msync` mode; the protocol that uses it is in
//! `disk.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::atomic::AtomicU64 as StdU64;

use crate::sync::atomic::{AtomicBool, AtomicU64};
use crate::sync::{Bell, Condvar, Mutex};
use crate::tickets::MAX_INFLIGHT;

/// The state of the group commit of one log.
pub(crate) struct GroupCommit {
    round: Mutex<Round>,
    /// Signalled whenever a sync ends (for reservers waiting for room in the ring).
    ended: Condvar,
    /// One bell per ticket of the ring (ticket `t` rings `bells[t % MAX_INFLIGHT]`): an
    /// appender waiting for the sync that covers its ticket sleeps on its ticket's bell, which
    /// the leader rings once it published the ticket, or to hand it the next sync. So a sync's
    /// end wakes the appenders it covered and one more, not every waiting appender (those
    /// whose tickets it did not cover went back to sleep: a context switch each for nothing,
    /// on the path to the next sync).
    bells: [PaddedBell; MAX_INFLIGHT],
    /// Syncs made, and tickets they covered.
    syncs: AtomicU64,
    tickets: AtomicU64,
    /// What leaders learn of the appenders, to gather them.
    gather: Gather,
    yields: Yields,
    /// Whether a waiting appender gives up its CPU in a loop before it sleeps on its bell, where
    /// syncs go to a disk ([`GroupCommit::await_bell`]; `Options::yield_while_waiting`).
    yield_wait: bool,
}

/// A [`Bell`] alone in its cache line (a leader rings several in a row, while their sleepers
/// count themselves in).
#[derive(Default)]
#[repr(align(64))]
struct PaddedBell(Bell);

/// What the leaders that gather ([`GroupCommit::gather`]) learn of the appenders: hints for
/// how long to wait, never what correctness rests on (so plain atomics, also under loom,
/// where they would only multiply the interleavings to explore).
#[derive(Default)]
struct Gather {
    /// The appenders that asked for a sync since the last leader began (one bit per thread,
    /// folded modulo 64), and those of the window before.
    seen: StdU64,
    seen_before: StdU64,
    /// A running average of a sync's duration, in nanoseconds.
    sync_ns: StdU64,
    /// Syncs not timed since the last timed one (while syncs are cheap: see
    /// [`GroupCommit::time_this_sync`]).
    untimed: StdU64,
    /// Leaders that waited in vain one after the other (none of the appenders they waited
    /// for came), and how many leaders from now on do not wait.
    backoff: Backoff,
    /// Leaders that waited, those of them that gained nothing, and the time they waited.
    waits: StdU64,
    vain: StdU64,
    waited_ns: StdU64,
}

/// What waiting appenders record of their yielding ([`GroupCommit::await_bell`]), in a cache
/// line of its own (every waiter writes it; the leaders' hints in [`Gather`] stay apart): the
/// waits that yielded, those whose bell did not ring in time, and the latter one after the
/// other, with how many waits from now on sleep at once.
#[derive(Default)]
#[repr(align(64))]
struct Yields {
    count: StdU64,
    vain: StdU64,
    backoff: Backoff,
}

/// A back-off after attempts in vain, one after the other: after the first the next 2
/// attempts are skipped, after the second 4, ... up to 64; an attempt that pays starts the
/// count again. (A hint, as all of [`Gather`]: two threads may take the same skip.)
#[derive(Default)]
struct Backoff {
    misses: StdU64,
    skip: StdU64,
}

impl Backoff {
    fn paid(&self) {
        if self.misses.load(Ordering::Relaxed) != 0 {
            self.misses.store(0, Ordering::Relaxed);
        }
    }

    fn in_vain(&self) {
        let m = (self.misses.load(Ordering::Relaxed) + 1).min(6);
        self.misses.store(m, Ordering::Relaxed);
        self.skip.store(1 << m, Ordering::Relaxed);
    }

    /// True if this attempt is to be skipped (and counts it).
    fn skips(&self) -> bool {
        self.skip.load(Ordering::Relaxed) > 0
            && self
                .skip
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }
}

#[cfg(not(loom))]
pub(crate) type RoundGuard<'a> = std::sync::MutexGuard<'a, Round>;
#[cfg(loom)]
pub(crate) type RoundGuard<'a> = loom::sync::MutexGuard<'a, Round>;

pub(crate) struct Round {
    /// A leader is syncing.
    pub(crate) busy: bool,
    /// Threads sleeping on `ended` (reservers waiting for room in the ring).
    sleepers: usize,
    /// Syncs ended so far: waiting appenders look again when it changes.
    ended: u64,
}

impl GroupCommit {
    /// `yield_wait`: see [`GroupCommit::await_bell`].
    pub(crate) fn new(yield_wait: bool) -> Self {
        GroupCommit {
            round: Mutex::new(Round {
                busy: false,
                sleepers: 0,
                ended: 0,
            }),
            ended: Condvar::new(),
            bells: Default::default(),
            syncs: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
            gather: Gather::default(),
            yields: Yields::default(),
            yield_wait,
        }
    }

    /// The round's lock: whether a leader is syncing.
    #[inline]
    pub(crate) fn lock(&self) -> RoundGuard<'_> {
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a sync's end in `round` and wakes the threads sleeping until one ends (they
    /// look again).
    #[inline]
    pub(crate) fn signal_end(&self, round: &mut Round) {
        round.ended += 1;
        if round.sleepers > 0 {
            self.ended.notify_all();
        }
    }

    /// The bell of `ticket`, whose generation an appender reads before it looks whether its
    /// ticket is published (see [`Bell`]).
    #[inline]
    pub(crate) fn bell(&self, ticket: u64) -> &Bell {
        &self.bells[ticket as usize % MAX_INFLIGHT].0
    }

    /// Waits until the bell of `ticket` rings past `seen`, or [`WAIT`] passes.
    ///
    /// Where syncs go to a disk (they average [`GATHER_MIN`] or more, and [`YIELD_SYNCS`] of
    /// them take at most [`YIELD_MAX`]), the appender first gives up its CPU in a loop
    /// (`sched_yield`), looking at the bell after each turn, for up to [`YIELD_SYNCS`] average
    /// syncs; only then does it sleep on the bell. A sleeper's wake-up costs the leader a
    /// system call, and the sleeper a wake-up that on an idle CPU of a virtual machine takes
    /// tens of microseconds (the CPU was halted): with eight appenders on two vCPUs, the
    /// leader's gather waited for them and a sync covered 6.5-6.8 appends of 8; yielding, 7.7
    /// to 7.9, and 1.2-1.75x the appends/s (docs/DISK.md, "Yielding waits"). The price is CPU
    /// time: each turn offers the CPU to the other runnable threads of its run queue first, so
    /// the loop mostly takes time that would have been idle, but it is spent (and counted
    /// against a CPU quota). A wait whose bell did not ring in time (syncs slower than their
    /// average, appends now and then) makes the next 2, 4, ... 64 waits sleep at once. Off
    /// with `Options::yield_while_waiting(false)`; never under loom, whose model of the bell is
    /// a condition variable.
    pub(crate) fn await_bell(&self, ticket: u64, seen: u32) {
        let bell = self.bell(ticket);
        if let Some(bound) = self.yield_bound() {
            let began = std::time::Instant::now();
            loop {
                crate::sync::yield_now();
                if bell.generation() != seen {
                    self.yielded(true);
                    return;
                }
                if began.elapsed() >= bound {
                    self.yielded(false);
                    break;
                }
            }
        }
        bell.sleep(seen, WAIT);
    }

    /// Whether waiting appenders may yield ([`GroupCommit::await_bell`]): the option.
    pub(crate) fn yields_while_waiting(&self) -> bool {
        self.yield_wait
    }

    /// How long a waiting appender may yield before it sleeps ([`GroupCommit::await_bell`]);
    /// `None`: it sleeps at once.
    fn yield_bound(&self) -> Option<Duration> {
        if !self.yield_wait || cfg!(loom) {
            return None;
        }
        let avg = self.gather.sync_ns.load(Ordering::Relaxed);
        let bound = Duration::from_nanos(avg.saturating_mul(YIELD_SYNCS));
        // (The range first: a wait that would sleep anyway takes none of the back-off's skips.)
        if avg < GATHER_MIN.as_nanos() as u64 || bound > YIELD_MAX || self.yields.backoff.skips() {
            return None;
        }
        Some(bound)
    }

    /// Records whether a yielding wait saw its bell ring in time; after one that did not, the
    /// next 2, 4, ... 64 waits sleep at once.
    fn yielded(&self, rung: bool) {
        self.yields.count.fetch_add(1, Ordering::Relaxed);
        if rung {
            self.yields.backoff.paid();
        } else {
            self.yields.vain.fetch_add(1, Ordering::Relaxed);
            self.yields.backoff.in_vain();
        }
    }

    /// Rings the bells of `tickets` (at most a ring's worth: each bell once) but `own`'s: the
    /// leader that rings them holds `own`, and only a ticket's appender sleeps on its bell for
    /// it (the appender of the ticket a ring's length later, which shares the bell, waits for
    /// its own ticket, not this one).
    pub(crate) fn ring_others(&self, tickets: std::ops::Range<u64>, own: u64) {
        let end = tickets.end.min(tickets.start + MAX_INFLIGHT as u64);
        for t in (tickets.start..end).filter(|&t| t != own) {
            self.bell(t).ring();
        }
    }

    /// Rings every bell: the log was poisoned, and every sleeper must look.
    pub(crate) fn ring_all(&self) {
        for b in &self.bells {
            b.0.ring();
        }
    }

    /// Sleeps (releasing the round lock) until a sync ends or `poisoned` is set.
    pub(crate) fn sleep_until_a_sync_ends<'a>(
        &'a self,
        mut round: RoundGuard<'a>,
        poisoned: &AtomicBool,
    ) -> RoundGuard<'a> {
        let seen = round.ended;
        round.sleepers += 1;
        while round.ended == seen && !poisoned.load(Ordering::Acquire) {
            round = self
                .ended
                .wait_timeout(round, WAIT)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        round.sleepers -= 1;
        round
    }

    /// Counts a sync that covered `tickets` appends. (Only leaders call it, one at a time,
    /// in turn through the round lock: so a load and a store, no read-modify-write.)
    #[inline]
    pub(crate) fn count_sync(&self, tickets: u64) {
        let syncs = self.syncs.load(Ordering::Relaxed);
        self.syncs.store(syncs + 1, Ordering::Relaxed);
        let covered = self.tickets.load(Ordering::Relaxed);
        self.tickets.store(covered + tickets, Ordering::Relaxed);
    }

    /// Records that the calling thread asks for a sync.
    #[inline]
    pub(crate) fn note_appender(&self) {
        self.note(THREAD_NO.with(|n| *n));
    }

    /// Records that thread number `no` asks for a sync.
    #[inline]
    fn note(&self, no: u32) {
        let bit = 1u64 << (no % 64);
        if self.gather.seen.load(Ordering::Relaxed) & bit == 0 {
            self.gather.seen.fetch_or(bit, Ordering::Relaxed);
        }
    }

    /// For a leader about to sync: how many appenders asked for a sync in this window and the
    /// one before (a thread whose append the last sync covered asks again while this one
    /// gathers), and how long the leader may wait for their appends to be ready. `None`
    /// where that wait would be under [`GATHER_MIN`]: then the windows are left as they are
    /// (two read-modify-writes saved per sync, and the appenders' bits stay set, which saves
    /// theirs), and the first leader to gather after syncs slow down counts a longer window.
    pub(crate) fn gather(&self) -> Option<(u32, Duration)> {
        let wait = self.gather_wait();
        if wait < GATHER_MIN {
            return None;
        }
        let now = self.gather.seen.swap(0, Ordering::Relaxed);
        let before = self.gather.seen_before.swap(now, Ordering::Relaxed);
        Some(((now | before).count_ones(), wait))
    }

    /// How long a leader may wait for the appends of others: a part of an average sync.
    fn gather_wait(&self) -> Duration {
        Duration::from_nanos(self.gather.sync_ns.load(Ordering::Relaxed) / GATHER_PART)
    }

    /// True if the leader about to sync should time it (for [`GroupCommit::timed_sync`]):
    /// always while the average sync is unknown or at least [`GATHER_MIN`] (a disk, where
    /// the average decides on gathering and a clock read is nothing beside the sync), else
    /// one sync in [`CHEAP_SYNCS_TIMED_ONE_IN`]: where the file lives in memory a sync costs
    /// about 100 ns, and reading the clock twice a third of that again. (Leaders only, one at
    /// a time.)
    pub(crate) fn time_this_sync(&self) -> bool {
        let avg = self.gather.sync_ns.load(Ordering::Relaxed);
        if avg == 0 || avg >= GATHER_MIN.as_nanos() as u64 {
            return true;
        }
        let untimed = self.gather.untimed.load(Ordering::Relaxed) + 1;
        let time = untimed >= CHEAP_SYNCS_TIMED_ONE_IN;
        self.gather
            .untimed
            .store(if time { 0 } else { untimed }, Ordering::Relaxed);
        time
    }

    /// True if this leader should not wait for others: the last ones waited in vain. (Only
    /// leaders call this and [`GroupCommit::gathered`], one at a time.)
    pub(crate) fn skip_gather(&self) -> bool {
        self.gather.backoff.skips()
    }

    /// Records whether a leader's wait gained any append. After a wait in vain (appenders
    /// that append now and then, not in a loop: the one a leader waits for appended in the
    /// last window and will not come soon), the next 2, 4, ... 64 leaders do not wait, so
    /// that such a load pays for at most one wait in 64 syncs.
    pub(crate) fn gathered(&self, gained: bool, waited: Duration) {
        self.gather.waits.fetch_add(1, Ordering::Relaxed);
        let ns = waited.as_nanos().min(u64::MAX as u128) as u64;
        self.gather.waited_ns.fetch_add(ns, Ordering::Relaxed);
        if gained {
            self.gather.backoff.paid();
        } else {
            self.gather.vain.fetch_add(1, Ordering::Relaxed);
            self.gather.backoff.in_vain();
        }
    }

    /// Counts a sync that took `took`, into the running average.
    pub(crate) fn timed_sync(&self, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        let avg = self.gather.sync_ns.load(Ordering::Relaxed);
        let avg = if avg == 0 { ns } else { avg - avg / 8 + ns / 8 };
        self.gather.sync_ns.store(avg, Ordering::Relaxed);
    }

    /// The running average of a sync's duration (zero before the first timed sync).
    #[inline]
    pub(crate) fn average_sync(&self) -> Duration {
        Duration::from_nanos(self.gather.sync_ns.load(Ordering::Relaxed))
    }

    /// Syncs made so far, and the appends they covered.
    pub(crate) fn stats(&self) -> SyncStats {
        SyncStats {
            syncs: self.syncs.load(Ordering::Relaxed),
            appends: self.tickets.load(Ordering::Relaxed),
            waits: self.gather.waits.load(Ordering::Relaxed),
            waits_in_vain: self.gather.vain.load(Ordering::Relaxed),
            waited: Duration::from_nanos(self.gather.waited_ns.load(Ordering::Relaxed)),
            average_sync: self.average_sync(),
            yielding_waits: self.yields.count.load(Ordering::Relaxed),
            yielding_waits_in_vain: self.yields.vain.load(Ordering::Relaxed),
            combined: 0,
        }
    }
}

/// How well the group commit of a log in `msync` mode batches: see [`crate::Log::sync_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncStats {
    /// Group syncs made since the log was opened (each one `msync` per contiguous run of
    /// the file: one, or two when the synced appends lie on both sides of a wrap).
    pub syncs: u64,
    /// Appends (a batch counts once) those syncs made durable.
    pub appends: u64,
    /// Appends that rode in another appender's batch (write combining, on slow media when the
    /// ring of appends in flight is full: see `docs/DISK.md`); not counted in `appends`.
    pub combined: u64,
    /// Leaders that, before their sync, waited for the appends of other appenders to be ready
    /// (on a disk, where a sync costs far more than the wait: see docs/DISK.md).
    pub waits: u64,
    /// Those of the waits that gained no append.
    pub waits_in_vain: u64,
    /// The time those waits took, in all.
    pub waited: Duration,
    /// How long a sync takes: a running average in which the last eight or so timed syncs
    /// weigh most (zero before the first). Every sync is timed while they average 10 µs or
    /// more, one in sixteen below (reading the clock would cost a third of such a sync). Under a microsecond or two where the file lives in
    /// memory (tmpfs); a disk's write and cache flush where it does not. A caller can tell
    /// from it whether an append is worth handing to another thread.
    pub average_sync: Duration,
    /// Waits for a sync on a disk that began by giving up the CPU in a loop before sleeping
    /// (see `Options::yield_while_waiting`). An append may wait more than once: its ticket's
    /// bell is shared with the tickets 16 before and after it, and a ring for another ticket,
    /// or a sleep's 10 ms timeout, ends one wait and begins another.
    pub yielding_waits: u64,
    /// Those of them in which the bell did not ring in time (they slept, and the next few
    /// waits slept at once).
    pub yielding_waits_in_vain: u64,
}

impl SyncStats {
    /// Appends per sync on average, combined ones included (0 when nothing was synced).
    pub fn appends_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            (self.appends + self.combined) as f64 / self.syncs as f64
        }
    }
}

/// msync mode: appends (or batches) of at least this many bytes on media are stored with
/// non-temporal stores, the payload checksummed while it is copied (one pass over it instead
/// of two); below it, cached stores. The sync does not care how the bytes were stored. Measured
/// on /dev/shm with 64 KiB payloads: 7.4-8.8 µs per append with, 9.8 µs without; at 4 KiB and
/// 16 KiB no gain showed (docs/DISK.md).
pub(crate) const MSYNC_NT_THRESHOLD: usize = 64 << 10;

/// A leader gathers only if it may wait at least this long: it waits by giving up its CPU
/// (the appenders it waits for may need it), which costs a context switch or two, a few µs.
/// So it gathers before syncs that write to a disk (100 µs and more), not before those that
/// only flush caches or do nothing (tmpfs: under 1 µs), where a sync is cheaper than the wait.
pub(crate) const GATHER_MIN: Duration = Duration::from_micros(10);

/// While syncs average under [`GATHER_MIN`], one in this many is timed.
const CHEAP_SYNCS_TIMED_ONE_IN: u64 = 16;

/// A leader waits at most this part of an average sync for the appends of the others to be
/// ready (1/4: a sync of twice the appends for a quarter more time).
const GATHER_PART: u64 = 4;

std::thread_local! {
    /// A number per thread, in the order of their first appends: 64 threads in a row get 64
    /// different bits in [`Gather::seen`].
    static THREAD_NO: u32 = {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

/// A waiting appender yields for up to this many average syncs before it sleeps: its append
/// is covered by the sync that runs, or by the next one.
const YIELD_SYNCS: u64 = 2;

/// ... and only where those syncs take at most this long. With syncs made slower on purpose,
/// eight appenders yielding made 1.26-1.44x the appends/s at 150-240 µs, but at about 470 µs
/// (yielding for up to 500 µs) no more (9-23 % of the waits ran out) for 2.6-3.7x the CPU
/// time per append, and at 1.2 ms nothing either. Beside a sync that long, a sleeper's
/// wake-up costs little.
const YIELD_MAX: Duration = Duration::from_micros(500);

/// How long a waiting appender sleeps before it looks at the poison flag again.
pub(crate) const WAIT: Duration = Duration::from_millis(10);

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A leader counts the appenders of its window and of the one before.
    #[test]
    fn leaders_count_the_appenders_of_two_windows() {
        let g = GroupCommit::new(true);
        g.gather.sync_ns.store(400_000, Ordering::Relaxed);
        for no in [1, 2, 3, 7, 7, 71] {
            g.note(no); // (71 is 7 again, modulo 64)
        }
        assert_eq!(g.gather(), Some((4, Duration::from_micros(100))));
        g.note(9);
        g.note(1);
        let appenders = |g: &GroupCommit| g.gather().map(|(n, _)| n);
        assert_eq!(
            appenders(&g),
            Some(5),
            "this window's 9 and 1 and the last one's 1, 2, 3, 7"
        );
        assert_eq!(appenders(&g), Some(2), "the last window's 9 and 1");
        assert_eq!(appenders(&g), Some(0));
    }

    /// Waits in vain make the next leaders skip 2, 4, ... 64 waits; a wait that gains resets.
    #[test]
    fn waits_in_vain_back_off() {
        let g = GroupCommit::new(true);
        let skipped = |g: &GroupCommit| {
            let mut n = 0;
            while g.skip_gather() {
                n += 1;
            }
            n
        };
        assert_eq!(skipped(&g), 0);
        for want in [2, 4, 8, 16, 32, 64, 64, 64] {
            g.gathered(false, Duration::from_micros(10));
            assert_eq!(skipped(&g), want);
        }
        g.gathered(true, Duration::from_micros(10));
        assert_eq!(skipped(&g), 0);
        g.gathered(false, Duration::from_micros(10));
        assert_eq!(skipped(&g), 2);
        let st = g.stats();
        assert_eq!((st.waits, st.waits_in_vain), (10, 9));
        assert_eq!(st.waited, Duration::from_micros(100));
    }

    /// Syncs are timed always while their average is unknown or that of a disk, and one in
    /// sixteen while they are cheap.
    #[test]
    fn cheap_syncs_are_timed_one_in_sixteen() {
        let g = GroupCommit::new(true);
        let timed = |g: &GroupCommit, n: usize| (0..n).filter(|_| g.time_this_sync()).count();
        assert_eq!(timed(&g, 5), 5, "no average yet");
        g.timed_sync(Duration::from_nanos(500));
        assert_eq!(timed(&g, 64), 4);
        g.timed_sync(Duration::from_micros(200));
        assert!(g.stats().average_sync >= GATHER_MIN);
        assert_eq!(timed(&g, 64), 64, "syncs that write to a disk");
    }

    /// While syncs are cheap, leaders do not gather and leave the appenders' window as it is:
    /// the first leader after syncs slow down sees it.
    #[test]
    fn cheap_syncs_do_not_gather() {
        let g = GroupCommit::new(true);
        g.timed_sync(Duration::from_micros(2));
        g.note(3);
        g.note(5);
        assert_eq!(g.gather(), None);
        assert_eq!(g.gather(), None);
        for _ in 0..100 {
            g.timed_sync(Duration::from_micros(400));
        }
        assert_eq!(g.gather().map(|(n, _)| n), Some(2));
    }

    /// Waiters yield only where syncs go to a disk, for up to two average syncs, and only where
    /// those take at most 500 µs; not at all with the option off.
    #[test]
    fn waiters_yield_for_two_average_syncs_on_a_disk() {
        let g = GroupCommit::new(true);
        assert_eq!(g.yield_bound(), None, "no average yet");
        g.timed_sync(Duration::from_micros(2));
        assert_eq!(g.yield_bound(), None, "syncs of a file in memory");
        let slow = GroupCommit::new(true);
        slow.timed_sync(Duration::from_micros(260));
        assert_eq!(slow.yield_bound(), None, "two syncs over 500 µs");
        let edge = GroupCommit::new(true);
        edge.timed_sync(Duration::from_micros(250));
        assert_eq!(edge.yield_bound(), Some(YIELD_MAX));
        for _ in 0..100 {
            g.timed_sync(Duration::from_micros(100));
        }
        let bound = g.yield_bound().expect("a disk's syncs");
        let avg = g.stats().average_sync;
        assert_eq!(bound, 2 * Duration::from_nanos(avg.as_nanos() as u64));
        let off = GroupCommit::new(false);
        off.timed_sync(Duration::from_micros(100));
        assert_eq!(off.yield_bound(), None);
    }

    /// Yielding waits in vain make the next 2, 4, ... 64 waits sleep at once; one whose bell
    /// rang in time resets that.
    #[test]
    fn yielding_waits_in_vain_back_off() {
        let g = GroupCommit::new(true);
        g.timed_sync(Duration::from_micros(100));
        let sleeping = |g: &GroupCommit| {
            let mut n = 0;
            while g.yield_bound().is_none() {
                n += 1;
            }
            n
        };
        assert_eq!(sleeping(&g), 0);
        for want in [2, 4, 8, 16, 32, 64, 64] {
            g.yielded(false);
            assert_eq!(sleeping(&g), want);
        }
        g.yielded(true);
        g.yielded(false);
        assert_eq!(sleeping(&g), 2, "a wait in time starts the count again");
        let st = g.stats();
        assert_eq!((st.yielding_waits, st.yielding_waits_in_vain), (9, 8));
    }

    /// A yielding waiter returns when its bell rings, without sleeping; one whose bell rings
    /// only after its yielding ended sleeps, and the ring wakes it.
    #[test]
    fn a_yielding_waiter_sees_its_bell_and_a_late_ring_wakes_it() {
        use std::sync::atomic::AtomicBool;
        let g = GroupCommit::new(true);
        g.timed_sync(Duration::from_micros(200)); // yields for up to 400 µs

        // Rung in time: the first look after a turn sees it.
        let seen = g.bell(3).generation();
        g.bell(3).ring();
        g.await_bell(3, seen);
        let st = g.stats();
        assert_eq!((st.yielding_waits, st.yielding_waits_in_vain), (1, 0));

        // Rung late: the waiter stops yielding, sleeps, and the ring wakes it. (It waits again
        // after a sleep's timeout, as an appender does, if this thread is held up that long.)
        let seen = g.bell(3).generation();
        let done = AtomicBool::new(false);
        let slept = std::thread::scope(|s| {
            s.spawn(|| {
                while g.bell(3).generation() == seen {
                    g.await_bell(3, seen);
                }
                done.store(true, Ordering::SeqCst);
            });
            // (Whatever is seen, the bell rings before the scope ends, so that a waiter that
            // never sleeps fails the test instead of hanging it.)
            let began = std::time::Instant::now();
            while g.bell(3).sleepers() == 0 && began.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_micros(100));
            }
            let slept = g.bell(3).sleepers() > 0;
            assert!(
                !done.load(Ordering::SeqCst),
                "returned before its bell rang"
            );
            g.bell(3).ring();
            slept
        });
        assert!(slept, "the waiter never slept within 10 s");
        let st = g.stats();
        assert!(
            st.yielding_waits >= 2 && st.yielding_waits_in_vain >= 1,
            "{st:?}"
        );
    }

    /// The average sync follows the syncs' durations.
    #[test]
    fn the_average_sync_follows_the_syncs() {
        let g = GroupCommit::new(true);
        assert_eq!(g.stats().average_sync, Duration::ZERO);
        g.timed_sync(Duration::from_micros(800));
        assert_eq!(g.gather_wait(), Duration::from_micros(200));
        assert_eq!(g.stats().average_sync, Duration::from_micros(800));
        for _ in 0..100 {
            g.timed_sync(Duration::from_micros(40));
        }
        let wait = g.gather_wait();
        assert!(wait < Duration::from_micros(11), "{wait:?}");
        let avg = g.stats().average_sync;
        assert!(
            avg >= Duration::from_micros(40) && avg < Duration::from_micros(44),
            "{avg:?}"
        );
    }
}
