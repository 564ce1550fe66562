//! The `msync` path (a log on an ordinary page-cache file system): the group commit.
//!
//! On a disk one `msync(MS_SYNC)` costs a page write and a cache flush of the device: about
//! 100 µs on a virtual disk, hundreds of times an append's stores. So appenders share syncs.
//! An appender whose entries are stored marks its ticket ready and calls
//! [`Log::group_sync`]. If no sync is running it becomes the **leader**: it syncs every ready
//! ticket from the oldest unpublished one on (one `msync` per contiguous run of the file:
//! one, or two across a wrap), publishes them in order, and wakes the appenders it covered.
//! If a sync is running it **waits**, holding no lock, on its ticket's bell
//! ([`crate::sync::Bell`], a futex): the leader rings it when the sync that covers the ticket
//! ends, or when the sync before ends with this ticket first in line, to hand it the next sync,
//! which covers every ticket stored while the previous one ran. An appender whose ticket a
//! sync did not cover sleeps on through its end (with a condition variable for all, each went
//! back to sleep: a context switch for nothing, on the path to the next sync; docs/DISK.md,
//! "One bell per ticket").
//!
//! Why waiting and not a lock held across the sync (as before): the appenders a sync had just
//! made durable queued for that lock behind the appender that led the next sync, and learnt
//! that they were done only after that whole sync too; meanwhile they could not store their
//! next entries, so with eight appenders a sync covered about two appends. Now a covered
//! appender returns as soon as its sync ends, and stores its next entries while the next sync
//! runs. One sync at a time: several at once (each with the tickets ready when
//! it started) covered fewer appends each and were slower in all on the same disk, as their
//! writes of the shared last page wait for one another (docs/DISK.md has the measurements).
//!
//! A leader that knows of more appenders than are ready (the appenders that asked for a sync
//! lately) first waits a little for their appends, where a sync costs far more than the wait:
//! see [`Log::gather`].
//!
//! Tickets are published strictly in order by the leader, and a ticket is published only
//! after a sync that began after it was stored (FORMAT.md, 6a).

use std::sync::atomic::Ordering;

use crate::error::Result;
use crate::format::{ENTRY_ALIGN, MAX_INFLIGHT};
use crate::group::SyncStats;
use crate::log::Log;
use crate::media::Media;

impl<M: Media> Log<M> {
    /// In `msync` mode, the syncs the group commit made since the log was opened and the
    /// appends they covered; zero in the CPU-flush modes (where each appender persists its own
    /// entries with no system call).
    pub fn sync_stats(&self) -> SyncStats {
        SyncStats {
            combined: self.combiner.combined(),
            ..self.group.stats()
        }
    }

    /// msync mode: returns once `ticket` (stored and marked ready) is durable and published,
    /// having led the sync that covered it or waited for another's (module documentation).
    pub(crate) fn group_sync(&self, ticket: u64) -> Result<()> {
        let g = &self.group;
        g.note_appender();
        let mut round = g.lock();
        // Set once this thread passed the sync point since it last slept.
        let mut at_gate = false;
        loop {
            // Read before the look at `published`, under the round lock: a leader that
            // publishes this ticket, or hands this thread the next sync, rings the bell only
            // after it took the round lock, so after this read.
            let bell = g.bell(ticket).generation();
            if self.published.load(Ordering::Acquire) > ticket {
                return Ok(());
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(self.poison_error());
            }
            let first = self.published.load(Ordering::Acquire);
            if !round.busy && !at_gate {
                at_gate = true;
                // About to act on what the others stored: a deterministic scheduler (the crash
                // simulator) decides here which of several woken appenders leads. (Elsewhere
                // the lock is kept: releasing it would only let in schedules that were
                // possible anyway, at the price of a lock round trip per append.)
                if self.pmem.media().schedules_threads() {
                    drop(round);
                    self.pmem.media().sync_point();
                    round = g.lock();
                    continue;
                }
            }
            let upto = if round.busy {
                first
            } else {
                self.ready_from(first)
            };
            if upto == first {
                // A running sync may cover this ticket; or the oldest unpublished ticket is
                // still being stored by its appender, which leads the sync that covers this
                // one too when it is done: sleep until this ticket's bell rings (the sync that
                // covers it ended, or the last sync ended with it first in line to lead).
                drop(round);
                g.await_bell(ticket, bell);
                round = g.lock();
                at_gate = false;
                continue;
            }
            // Lead the sync of tickets `first..upto`.
            at_gate = false;
            round.busy = true;
            drop(round);
            let upto = self.gather(first, upto);
            let began = g.time_this_sync().then(std::time::Instant::now);
            let synced = self.sync_tickets(first, upto);
            if let Some(began) = began {
                g.timed_sync(began.elapsed());
            }
            #[cfg(loom)]
            let ring_early = synced.is_ok()
                && crate::sync::mutants::active(crate::sync::mutants::Mutant::RingBeforePublish);
            #[cfg(not(loom))]
            let ring_early = false;
            if ring_early {
                g.ring_others(first..upto, ticket);
            }
            if synced.is_ok() {
                // Only the leader publishes in msync mode, one sync at a time.
                self.publish_run(first, Some(upto));
            }
            round = g.lock();
            round.busy = false;
            g.signal_end(&mut round);
            #[cfg(loom)]
            let hand_over =
                !crate::sync::mutants::active(crate::sync::mutants::Mutant::HandOverNotRung);
            #[cfg(not(loom))]
            let hand_over = true;
            if synced.is_ok() {
                // The first ticket not covered: its appender, if it waits, leads the next
                // sync, which covers the others that wait (they sleep on).
                if hand_over {
                    g.bell(upto).ring();
                }
            } else {
                g.ring_all();
            }
            drop(round);
            if synced.is_ok() && !ring_early {
                // The appenders this sync covered (they return). Only now that the next sync
                // may begin: on two CPUs the woken appenders take this one's CPU, which must
                // not hold up the next leader (a sync on tmpfs costs less than the wake-ups).
                g.ring_others(first..upto, ticket);
            }
            synced?;
            // Done if the sync covered this thread's own ticket (it did unless an earlier one
            // was not ready yet): no second look under the lock, which is only needed before
            // a sleep.
            if self.published.load(Ordering::Acquire) > ticket {
                return Ok(());
            }
            round = g.lock();
        }
    }

    /// The leader, before its sync of tickets `first..upto`: if more appenders asked for syncs
    /// lately than are ready, waits a little (a part of an average sync) for their appends to
    /// be ready too, so that one sync covers them. Returns the new end of the ready tickets.
    ///
    /// Without it, appenders appending in a loop split in two halves that take turns: the
    /// half a sync covered stores its next entries while the next sync (of the other half)
    /// runs, and each sync covers half of them (docs/DISK.md has the measurements).
    ///
    /// Only when the wait can pay: its bound is a part of an average sync, at least
    /// [`crate::group::GATHER_MIN`]. It changes only when the sync begins, never what it covers: the
    /// tickets ready when it begins, as without it. (Under a simulator that schedules the
    /// threads it does not wait: the schedules it would produce are among those the simulator
    /// explores anyway.)
    fn gather(&self, first: u64, mut upto: u64) -> u64 {
        let Some((want, wait)) = self.group.gather() else {
            return upto;
        };
        // (At most a ring's worth of tickets can be in flight.)
        let want = u64::from(want).min(MAX_INFLIGHT as u64);
        if upto - first >= want
            || self.pmem.media().schedules_threads()
            || cfg!(loom)
            || self.group.skip_gather()
        {
            return upto;
        }
        let had = upto;
        let began = std::time::Instant::now();
        while upto - first < want && began.elapsed() < wait {
            std::thread::yield_now();
            upto = self.ready_from(first);
        }
        // A wait that overran its bound well (a yield that gave the CPU to another process
        // for long: the machine is busy, and the appenders waited for need CPUs they do not
        // get) counts as one in vain, gained or not, so that the next leaders do not wait.
        let took = began.elapsed();
        self.group.gathered(upto > had && took <= 2 * wait, took);
        upto
    }

    /// msync mode, the ring of tickets in flight full: sleeps until a sync ends, unless the
    /// published count moved from `published` or the reservation state from `resv` already
    /// (then the caller looks again at once).
    pub(crate) fn wait_for_sync(&self, published: u64, resv: u128) {
        #[cfg(feature = "mutants")]
        crate::mutants::BEFORE_SYNC_WAIT.here();
        let round = self.group.lock();
        // A sync publishes, then ends under this lock: one that ends from here on is seen.
        if self.published.load(Ordering::Acquire) != published {
            return;
        }
        // A suffix truncation unblocks reservations, then wakes reservers under this lock:
        // if the state is still `resv` here, the wake-up comes after this sleep begins.
        if self.resv.load_torn() != resv {
            return;
        }
        drop(self.group.sleep_until_a_sync_ends(round, &self.poisoned));
    }

    /// Wakes the reservers sleeping in [`Log::wait_for_sync`] (they look at the reservation
    /// state again), after a suffix truncation blocked them without a sync in flight.
    pub(crate) fn wake_reservers(&self) {
        let mut round = self.group.lock();
        self.group.signal_end(&mut round);
    }

    /// The first ticket from `first` on that is not ready (at most a ring's worth ahead of the
    /// published ones).
    fn ready_from(&self, first: u64) -> u64 {
        let limit = self.published.load(Ordering::Acquire) + self.ring.len() as u64;
        let mut t = first;
        while t < limit && self.is_ready(t) {
            t += 1;
        }
        t
    }

    /// The leader's sync: makes tickets `first..upto` (stored, marked ready) durable, with
    /// one `msync` per contiguous run of the file (one, or two across a wrap).
    fn sync_tickets(&self, first: u64, upto: u64) -> Result<()> {
        let cap = self.sb.capacity as usize;
        let mut runs = [(0usize, 0usize); MAX_INFLIGHT];
        let mut n = 0;
        for t in first..upto {
            let (start, end) = self.ticket_span(t);
            let end = end + ENTRY_ALIGN; // the end marker
            #[cfg(feature = "mutants")]
            let end = if crate::mutants::is(crate::mutants::Mutant::GroupSyncNoMarker) {
                end - ENTRY_ALIGN
            } else {
                end
            };
            if n > 0 && (runs[n - 1].1 == start || runs[n - 1].1 == start + ENTRY_ALIGN) {
                runs[n - 1].1 = end;
            } else {
                runs[n] = (start, end);
                n += 1;
            }
        }
        #[cfg(feature = "mutants")]
        let n = if crate::mutants::is(crate::mutants::Mutant::GroupSyncFirstRun) {
            1
        } else {
            n
        };
        for &(a, b) in &runs[..n] {
            self.pmem.flush(a, b.min(cap) - a);
            self.barrier_drain().inspect_err(|e| self.poison(e))?;
        }
        self.group.count_sync(upto - first);
        Ok(())
    }
}
