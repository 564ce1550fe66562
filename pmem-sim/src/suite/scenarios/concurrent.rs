//! Several appenders at once, in seeded interleavings of their media operations.

use daxlog::format::{SLOT0_OFFSET, SLOT1_OFFSET};

use super::reuse::filled;
use crate::suite::Event;
use crate::suite::{EventKind, Runner};
use crate::Op;

/// Plans for `threads` appenders: `each` appends per thread, one in four a batch of 2-3.
pub(crate) fn plans(
    r: &mut Runner,
    threads: usize,
    each: usize,
    max: usize,
) -> Vec<Vec<Vec<Vec<u8>>>> {
    (0..threads)
        .map(|_| {
            (0..each)
                .map(|_| {
                    let k = if r.rng.chance(1, 4) {
                        r.rng.range(2, 3)
                    } else {
                        1
                    };
                    (0..k)
                        .map(|_| {
                            let n = if r.rng.chance(1, 4) {
                                r.rng.range(200, max)
                            } else {
                                r.rng.range(0, 120)
                            };
                            r.payload(n)
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

pub(crate) fn concurrent(r: &mut Runner) {
    r.scale_images(1, 8);
    // With msync, three appenders contend for the group commit's lock, and the kernel decides
    // which waiter gets it: the interleaving would not follow from the seed alone. Two do.
    let most = if r.variant().persistence.is_cpu_flush() {
        3
    } else {
        2
    };
    for threads in [2, most] {
        let mut s = r.create(4 * 4096);
        let p = r.payload(20);
        s.append(&p).expect("room");
        let work = plans(r, threads, 3, 400);
        let seed = r.rng.next_u64();
        let stick = [0, 64, 160][r.rng.below(3) as usize];
        s.concurrent(&work, seed, stick);
        let p = r.payload(10);
        s.append(&p).expect("room");
        let si = r.finish(s);
        count_overlaps(r, si);
    }
    // Wrapping: the appenders' reservations reach the end of the file and go on at the start.
    let Some(mut s) = filled(r, 4 * 4096, 30, 300) else {
        return;
    };
    let first = s.first_lsn();
    let len = s.next_lsn() - first;
    s.truncate_before(first + len / 2);
    let work = plans(r, most, 2, 600);
    let seed = r.rng.next_u64();
    s.concurrent(&work, seed, 64);
    let si = r.finish(s);
    count_overlaps(r, si);
    // With the tail hint: whichever thread publishes writes the hint slot.
    r.use_tail_hint(128);
    let mut s = r.create(4 * 4096);
    let work = plans(r, most, 3, 300);
    let seed = r.rng.next_u64();
    s.concurrent(&work, seed, 64);
    let si = r.finish(s);
    count_overlaps(r, si);
    let n = slot_writes_in_appends(r, si);
    r.count("slot updates inside concurrent appends (hints, flag)", n);
}

/// Slot updates made inside the appends of segment `si` (tail hints, the `CONCURRENT` flag).
pub(crate) fn slot_writes_in_appends(r: &Runner, si: usize) -> u64 {
    let seg = r.segment(si);
    seg.events()
        .iter()
        .filter(|e| e.kind == EventKind::Append)
        .map(|e| {
            seg.run.ops[e.start..e.end]
                .iter()
                .filter(|o| matches!(o, Op::Store { off, .. } if *off == SLOT0_OFFSET || *off == SLOT1_OFFSET))
                .count() as u64
        })
        .sum()
}

/// Counts the crash points of segment `si` with two or more appends in flight, and the
/// appends whose fence came before that of an append with a lower LSN (so that a crash could
/// find them durable behind a torn one).
pub(crate) fn count_overlaps(r: &mut Runner, si: usize) {
    let seg = r.segment(si);
    let ev = seg.events();
    let overlapping = (0..=seg.run.ops.len())
        .filter(|&p| ev.iter().filter(|e| e.start < p && p < e.end).count() >= 2)
        .count();
    // The last drain each append's thread issued inside the append.
    let fence = |e: &Event| {
        (e.start..e.end)
            .rev()
            .find(|&i| seg.run.ops[i] == Op::Drain && seg.run.thread_of(i) == e.thread)
    };
    let fences: Vec<Option<usize>> = ev.iter().map(fence).collect();
    let early = (0..ev.len())
        .filter(|&a| {
            (0..ev.len()).any(|b| {
                ev[b].lsns.start < ev[a].lsns.start
                    && matches!((fences[a], fences[b]), (Some(fa), Some(fb)) if fa < fb)
            })
        })
        .count();
    r.count("points with 2+ appends in flight", overlapping as u64);
    r.count("appends fenced before a lower LSN's", early as u64);
}
