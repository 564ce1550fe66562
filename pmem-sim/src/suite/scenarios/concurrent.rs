//! Several appenders at once, in seeded interleavings of their media operations.

use daxlog::format::{SLOT0_OFFSET, SLOT1_OFFSET};

use super::steps::{appends, drop_oldest, filled, reopen_append};
use crate::suite::Event;
use crate::suite::{Cut, EventKind, Runner};
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

/// Two and three appenders in seeded interleavings of their media operations (per-thread
/// fences), in a plain and in a wrapping log.
pub(crate) fn concurrent(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 8);
    let most = 3;
    for threads in [2, most] {
        let mut s = r.create(4 * 4096);
        appends(r, &mut s, &[20]);
        let work = plans(r, threads, 3, 400);
        let seed = r.rng.next_u64();
        let stick = [0, 64, 160][r.rng.below(3) as usize];
        s.concurrent(&work, seed, stick);
        appends(r, &mut s, &[10]);
        let si = r.finish(s);
        count_overlaps(r, si);
    }
    // Wrapping: the appenders' reservations reach the end of the file and go on at the start.
    let mut s = filled(r, 4 * 4096, 30, 300)?;
    drop_oldest(&mut s, 1, 2);
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
    Some(())
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
    r.count(
        "runs with no 2 appends in flight",
        u64::from(overlapping == 0),
    );
    r.count("appends fenced before a lower LSN's", early as u64);
}

/// Truncations in a session that set the `CONCURRENT` slot flag: concurrent appends over a
/// reopened log (end markers needed), then `truncate_before` (the slot keeps the flag),
/// appends, `truncate_after` (a new epoch, the flag cleared), appends, a second concurrent
/// phase and a truncation after it; later sessions.
pub(crate) fn concurrent_truncate(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 8);
    let mut s = filled(r, 4 * 4096, 30, 200)?;
    drop_oldest(&mut s, 2, 3);
    let work = plans(r, 3, 2, 300);
    let seed = r.rng.next_u64();
    s.concurrent(&work, seed, 64);
    let first = s.first_lsn();
    s.truncate_before(first + 3);
    appends(r, &mut s, &[20, 150]);
    let next = s.next_lsn();
    s.truncate_after(next - 4);
    appends(r, &mut s, &[60]);
    drop_oldest(&mut s, 1, 2);
    let work = plans(r, 3, 2, 250);
    let seed = r.rng.next_u64();
    s.concurrent(&work, seed, 0);
    let next = s.next_lsn();
    s.truncate_after(next - 2);
    appends(r, &mut s, &[33]);
    let si = r.finish(s);
    count_overlaps(r, si);
    reopen_append(r, si, 7)
}

/// Prefix truncations beside concurrent appenders (a fourth thread in the interleaving), in
/// a small log the appenders wrap around: each crash image holds the acknowledged entries
/// from the last acknowledged truncation on, or from one in flight.
pub(crate) fn truncate_beside_appenders(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 8);
    let mut s = filled(r, 4 * 4096, 30, 200)?;
    drop_oldest(&mut s, 3, 4);
    for stick in [0, 64] {
        let work = plans(r, 3, 3, 250);
        let seed = r.rng.next_u64();
        s.concurrent_truncating(&work, seed, stick, 3);
    }
    // A full log: the appends need the space the cuts of the same phase free (they retry on
    // `Full` while a cut may still come), so that the reuse happens beside the truncation.
    let mut reused = 0;
    for stick in [0, 64] {
        while s.room() > 300 {
            let p = r.payload(250);
            if s.append(&p).is_none() {
                break;
            }
        }
        let work = plans(r, 3, 3, 250);
        let seed = r.rng.next_u64();
        reused += s.concurrent_truncating(&work, seed, stick, 2).1;
    }
    r.count("appends into space a cut of the same phase freed", reused);
    let si = r.finish(s);
    count_overlaps(r, si);
    // Crash points inside a truncation while an append is in flight too.
    let seg = r.segment(si);
    let ev = seg.events();
    let inside = |e: &Event, p: usize| e.start < p && p < e.end;
    let beside = (0..=seg.run.ops.len())
        .filter(|&p| {
            ev.iter()
                .any(|e| matches!(e.kind, EventKind::TruncateBefore(_)) && inside(e, p))
                && ev
                    .iter()
                    .any(|e| e.kind == EventKind::Append && inside(e, p))
        })
        .count();
    r.count(
        "points inside a truncation with an append in flight",
        beside as u64,
    );
    reopen_append(r, si, 9)
}

/// Suffix truncations beside concurrent appenders (a fourth thread in the interleaving, which
/// also drops entries from the head): each waits for the appends in flight and holds off new
/// ones, which then get LSNs from the cut on. Each crash image holds the entries acknowledged
/// and not deleted by a truncation that returned, never a deleted one (nor one of the old
/// epoch after a durable cut), and during a truncation the entries from before or from after
/// it, nothing mixed.
pub(crate) fn suffix_beside_appenders(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 8);
    let mut s = filled(r, 4 * 4096, 30, 200)?;
    drop_oldest(&mut s, 3, 4);
    let phases: [(u64, &[Cut]); 2] = [
        (0, &[Cut::Suffix(1, 2), Cut::Half, Cut::Suffix(2, 3)]),
        (64, &[Cut::Half, Cut::Suffix(0, 1), Cut::Suffix(1, 3)]),
    ];
    for (stick, cuts) in phases {
        let work = plans(r, 3, 3, 250);
        let seed = r.rng.next_u64();
        s.concurrent_cutting(&work, seed, stick, cuts);
    }
    let si = r.finish(s);
    count_overlaps(r, si);
    // Crash points inside a suffix truncation while an append it waits for is in flight, and
    // while an append waits for it.
    let seg = r.segment(si);
    let ev = seg.events();
    let inside = |e: &Event, p: usize| e.start < p && p < e.end;
    let (mut beside, mut waiting) = (0, 0);
    for p in 0..=seg.run.ops.len() {
        let Some(t) = ev
            .iter()
            .find(|e| matches!(e.kind, EventKind::TruncateAfter(_)) && e.block > 0 && inside(e, p))
        else {
            continue;
        };
        let appends = || {
            ev.iter()
                .filter(|e| e.kind == EventKind::Append && e.block == t.block && inside(e, p))
        };
        beside += u64::from(appends().any(|e| e.epoch < t.epoch));
        waiting += u64::from(appends().any(|e| e.epoch == t.epoch));
    }
    r.count(
        "points inside a suffix truncation with an append in flight",
        beside,
    );
    r.count(
        "points inside a suffix truncation with an append waiting for it",
        waiting,
    );
    reopen_append(r, si, 9)
}

/// The tail hint under concurrency across a wrap: three appenders (whichever publishes writes
/// the hint slot, and hints stop once the appends wrap) in a log whose head was truncated, so
/// that their reservations reach the end of the file and go on at the start; later sessions
/// recover from the hint.
pub(crate) fn concurrent_hint_wrap(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 8);
    r.use_tail_hint(128);
    let mut s = filled(r, 4 * 4096, 30, 300)?;
    drop_oldest(&mut s, 1, 2);
    let work = plans(r, 3, 3, 400);
    let seed = r.rng.next_u64();
    s.concurrent(&work, seed, 64);
    appends(r, &mut s, &[40]);
    let si = r.finish(s);
    count_overlaps(r, si);
    let n = slot_writes_in_appends(r, si);
    r.count("hint slot updates inside concurrent appends", n);
    let mut s = r.open(r.final_image(si))?;
    let work = plans(r, 2, 2, 200);
    let seed = r.rng.next_u64();
    s.concurrent(&work, seed, 0);
    r.finish(s);
    Some(())
}

/// The msync group commit with three appenders around the wrap: small appends into a log
/// whose tail is near the end of the file, so that the reservations one `msync` group covers
/// lie on both sides of the wrap (one sync per contiguous run). msync configurations only.
pub(crate) fn msync_group_wrap(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 4);
    for round in 0..4 {
        // Large entries up to the end: a few hundred bytes are left there, so that the first
        // small appends fit before the end of the file and the later ones wrap.
        let mut s = filled(r, 4 * 4096, 400, 600)?;
        drop_oldest(&mut s, 3, 4);
        let work = plans(r, 3, 3, 220);
        let seed = r.rng.next_u64();
        s.concurrent(&work, seed, [0, 96, 0, 32][round]);
        let si = r.finish(s);
        count_overlaps(r, si);
        r.count(
            "msync syncs at the start of the data area after one at the end, by one thread",
            wrapped_syncs(r, si),
        );
    }
    Some(())
}

/// Plans for `threads` appenders of `each` appends nearly all at or above the non-temporal
/// threshold of the `msync-nt-256` configuration (256 bytes with the 24-byte header): most
/// single payloads of 232 to 300 bytes, one in six of 512 to 600 (the fused
/// copy-and-checksum path), one in five a batch of two of 120 to 180 bytes (assembled on the
/// stack, stored at once), one in eight a small append that takes cached stores.
fn nt_plans(r: &mut Runner, threads: usize, each: usize) -> Vec<Vec<Vec<Vec<u8>>>> {
    (0..threads)
        .map(|_| {
            (0..each)
                .map(|_| {
                    let sizes = match r.rng.below(120) {
                        0..15 => vec![r.rng.range(0, 200)],
                        15..39 => vec![r.rng.range(120, 180), r.rng.range(120, 180)],
                        39..59 => vec![r.rng.range(512, 600)],
                        _ => vec![r.rng.range(232, 300)],
                    };
                    sizes.into_iter().map(|n| r.payload(n)).collect()
                })
                .collect()
        })
        .collect()
}

/// msync media with non-temporal stores: phases of five appenders whose appends nearly all
/// reach the non-temporal threshold, in seeded interleavings, so that the group commit one of
/// them leads syncs entries the others stored non-temporally; each of those must have been
/// fenced by its own thread before it marked its ticket ready (an `msync` writes back what
/// reached memory, not what waits in another core's write-combining buffers). Before each
/// phase all but the newest entries are truncated, so that the later phases wrap. Every crash
/// point from the sync that covers such an append to the append's return is checked, and one
/// in 16 of the others; then a later session. msync configurations with non-temporal stores
/// only.
pub(crate) fn msync_nt_group(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 8);
    let mut s = r.create(6 * 4096);
    // Through the fused path once before the appenders start: the simulator's first run of
    // its copy kernel in a process maps the kernel's scratch memory, which is kept out of the
    // seeded phases (the kernel runs in its thread's turn in any case).
    appends(r, &mut s, &[600]);
    let mut planned = 0;
    for phase in 0..8 {
        let next = s.next_lsn();
        if next - s.first_lsn() > 4 {
            s.truncate_before(next - 4);
        }
        let work = nt_plans(r, 5, 6);
        planned += work.iter().flatten().count();
        let seed = r.rng.next_u64();
        s.concurrent(&work, seed, [0, 32][phase % 2]);
    }
    let appended = s
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Append && e.block > 0)
        .count();
    assert_eq!(appended, planned, "a concurrent append found the log full");
    let si = r.finish_nt_synced(s, 16);
    count_overlaps(r, si);
    reopen_append(r, si, 300)
}

/// In segment `si`, how often a thread synced a range at the start of the data area right
/// after (in its own operations) syncing one further on: a group commit whose reservations
/// span the wrap, or two back to back.
fn wrapped_syncs(r: &Runner, si: usize) -> u64 {
    let seg = r.segment(si);
    let mut last: std::collections::HashMap<u8, Vec<&Op>> = Default::default();
    let mut n = 0;
    for (i, op) in seg.run.ops.iter().enumerate() {
        if matches!(op, Op::Publish { .. }) {
            continue;
        }
        let mine = last.entry(seg.run.thread_of(i)).or_default();
        mine.push(op);
        if let [.., Op::Flush { off: a, .. }, Op::Drain, Op::Flush { off: b, .. }, Op::Drain] =
            mine.as_slice()
        {
            if *b == daxlog::format::DATA_OFFSET && a > b {
                n += 1;
            }
        }
    }
    n
}
