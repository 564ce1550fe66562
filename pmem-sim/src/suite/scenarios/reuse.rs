//! Space reuse: head and suffix truncation, wrapping around the end of the file, many laps.

use daxlog::format::{self, DATA_OFFSET, ENTRY_ALIGN, HEADER_LEN};

use super::steps::{
    append_wrapping, appends, drop_oldest, filled, next_session, next_session_append,
    random_appends,
};
use crate::suite::{Runner, Sampling, Session};

/// `truncate_before` (middle, first, all but one, everything) with crashes inside its slot update
/// and after it; in a plain and in a wrapped log; across sessions; a `reset` of entries that
/// end at the end of the file while a reader pins the first.
pub(crate) fn truncate_head(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 4);
    // A plain log: truncations between appends, crashes at every point.
    let mut s = r.create(4 * 4096);
    random_appends(r, &mut s, 6, 0, 200);
    s.truncate_before(3);
    appends(r, &mut s, &[40]);
    s.truncate_before(3); // at the first LSN: changes nothing, writes nothing
    let all_but_one = s.next_lsn() - 1;
    s.truncate_before(all_but_one);
    appends(r, &mut s, &[300]);
    let b = vec![r.payload(20), r.payload(9)];
    s.batch(&b).expect("room");
    let next = s.next_lsn();
    s.truncate_before(next); // everything
    appends(r, &mut s, &[10, 250]);
    // The next session truncates what the first left, then appends.
    let mut s = next_session(r, s)?;
    let first = s.first_lsn();
    s.truncate_before(first + 1);
    appends(r, &mut s, &[70]);
    r.finish(s);

    // A wrapped log: truncations in its first part and into its second part.
    let mut s = filled(r, 4 * 4096, 20, 300)?;
    drop_oldest(&mut s, 1, 2);
    let cap = s.log().capacity() as usize;
    // Appends until one wraps, and one more.
    let mut wrapped = None;
    for _ in 0..64 {
        let n = r.rng.range(50, 400);
        let p = r.payload(n);
        let t = s.tail();
        let lsn = s.append(&p).expect("room after the truncation");
        if s.tail() < t {
            wrapped = Some(lsn);
            break;
        }
        assert!(s.tail() <= cap);
    }
    let Some(w) = wrapped else {
        panic!("the log did not wrap")
    };
    appends(r, &mut s, &[30]);
    // A head in the first part, then in the second (which ends the wrap).
    let first = s.first_lsn();
    s.truncate_before(first + 1);
    s.truncate_before(w);
    appends(r, &mut s, &[120]);
    next_session_append(r, s, 5)?;

    // The entries end exactly at the end of the file, and a reader pins the first one while
    // everything is truncated: the head is the end of the file (the slot names the start of
    // the data area, where the next entry goes).
    let cap = 4 * 4096;
    let mut s = r.create(cap);
    while s.tail() < cap {
        let left = cap - s.tail();
        let n = if left >= 300 + HEADER_LEN + 64 {
            r.rng.range(0, 300)
        } else {
            left - HEADER_LEN
        };
        let p = r.payload(n);
        s.append(&p).expect("room before the end of the file");
    }
    s.reset_pinned();
    appends(r, &mut s, &[10, 250]);
    next_session_append(r, s, 40)
}

/// A full small log, its head truncated, then the first append (or batch) that wraps to the
/// start of the data area, with the file's end unused or filled exactly.
pub(crate) fn wrap_first_append(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 4);
    let cap = 4 * 4096;
    for exact in [false, true] {
        let mut s = filled(r, cap, 0, 300)?;
        if exact {
            // Fill the file to its last byte: the tail is the end of the file.
            let left = cap - s.tail();
            if left >= HEADER_LEN {
                let p = r.payload(left - HEADER_LEN);
                s.append(&p).expect("an entry that fills the file exactly");
            }
        }
        drop_oldest(&mut s, 1, 3);
        // The first append that wraps: too long for the rest of the file, short enough for the
        // freed space; a batch in one round of two.
        let head = s.head();
        let min = (cap - s.tail() + 1).max(64);
        let max = (head - DATA_OFFSET - 8).min(min + 600);
        assert!(min + HEADER_LEN <= max, "no room to wrap");
        let total = r.rng.range(min, max);
        let t = s.tail();
        if r.rng.chance(1, 2) && total > 2 * HEADER_LEN + 16 {
            // Two entries of `total` bytes on media rounded up to 8 (which still fits before
            // the head, 8 bytes short of it): more than the rest of the file. (Payloads chosen
            // to add up to `total` could take fewer bytes on media once each entry is padded,
            // and fit the rest of the file exactly.)
            let on_media = total.next_multiple_of(ENTRY_ALIGN);
            let ea = r.rng.range(HEADER_LEN, on_media - HEADER_LEN) & !(ENTRY_ALIGN - 1);
            let a = ea - HEADER_LEN - r.rng.range(0, (ENTRY_ALIGN - 1).min(ea - HEADER_LEN));
            let b = on_media - ea - HEADER_LEN;
            debug_assert_eq!(format::entry_len(a) + format::entry_len(b), on_media);
            let batch = vec![r.payload(a), r.payload(b)];
            s.batch(&batch).expect("room at the start");
        } else {
            let p = r.payload(total - HEADER_LEN);
            s.append(&p).expect("room at the start");
        }
        assert!(s.tail() < t, "the append did not wrap");
        appends(r, &mut s, &[0, 90]);
        next_session_append(r, s, 17)?;
    }
    Some(())
}

/// Guards against recovery miscounting (and not wiping) the remains of a batch that wrapped to
/// the start of the data area with its first entries whole and a later one torn: the scan
/// wraps, accepts the first entries (held back: the batch continues), refuses the torn one and
/// ends the log at the tail before the wrap; the discarded bytes begin at the start of the
/// data area, below that tail. (Counting them from the tail underflowed: `torn_bytes` came out
/// near 2^64 and the wipe skipped them, so every later open reported the same torn tail.)
/// The torn entry is the second of two, then the third of three; the next sessions append
/// over the remains and wrap again.
pub(crate) fn wrap_batch_torn(r: &mut Runner) -> Option<()> {
    let cap = 4 * 4096;
    for k in [2usize, 3] {
        let mut s = filled(r, cap, 40, 300)?;
        drop_oldest(&mut s, 1, 2);
        // A batch too long for the rest of the file: it goes to the start of the data area.
        let rest = cap - s.tail();
        let sizes: Vec<usize> = (0..k)
            .map(|i| if i == 0 { rest.max(64) } else { 40 + 24 * i })
            .collect();
        let batch: Vec<Vec<u8>> = sizes.iter().map(|&n| r.payload(n)).collect();
        let t = s.tail();
        s.batch(&batch).expect("room at the start");
        assert!(s.tail() < t, "the batch did not wrap");
        let ev = s.events().len() - 1;
        let si = r.finish(s);
        let offs = r.segment(si).events()[ev].entry_offsets();
        assert_eq!(offs[0], DATA_OFFSET);
        // Every store of the batch persisted except the first word of its last entry.
        let at = r.point_after_stores(si, ev);
        let torn = offs[k - 1];
        let img = r.image_without(si, at, &[torn..torn + 8]);
        let mut s = r.open(img)?;
        appends(r, &mut s, &[10, 200]);
        next_session_append(r, s, 30)?;
    }
    Some(())
}

/// After a wrap, new entries end exactly where an old lap's entry begins; crashes that leave
/// that entry intact at the tail (end marker lost), and appends over it.
pub(crate) fn old_lap_past_tail(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 4);
    let cap = 4 * 4096;
    const N: usize = 56; // 80 bytes on media
    let len = format::entry_len(N);
    // Lap 1: entries of one size from the start of the data area to the end of the file.
    let mut s = filled(r, cap, N, N)?;
    let first = s.first_lsn();
    s.truncate_before(first + 40);
    // Lap 2 at the same offsets: each new entry ends where an entry of lap 1 begins.
    for _ in 0..3 {
        let p = r.payload(N);
        s.append(&p).expect("room at the start");
    }
    assert_eq!(s.tail(), DATA_OFFSET + 3 * len);
    let ev = s.events().len() - 1;
    let si = r.finish(s);
    // The last append whole but its end marker lost: lap 1's fourth entry, intact and valid,
    // sits exactly at the tail.
    let m = DATA_OFFSET + 3 * len;
    let at = r.point_before_last_drain(si, ev);
    let img = r.image_without(si, at, &[m..m + 8]);
    let mut s = r.open(img)?;
    assert_eq!(s.tail(), m);
    // Appends over it: as long as it, shorter, longer.
    appends(r, &mut s, &[N, N - 16, N + 40]);
    next_session_append(r, s, N)
}

/// msync mode: an append that ends exactly on a page boundary, so that its end marker is the
/// first word of the next page, and the old entry that the marker overwrites would be valid
/// again if that page were not synced with the append: a deleted entry whose LSN is the next
/// one, left behind when that LSN's new entry wraps, and accepted without the epoch rule once
/// a later `truncate_after` moves the cut above it.
pub(crate) fn msync_marker_page(r: &mut Runner) -> Option<()> {
    const PAGE: usize = 4096;
    let page_entry = PAGE - HEADER_LEN; // payload of an entry of exactly one page
    let mut s = r.create(5 * PAGE);
    let first = s.first_lsn();
    appends(r, &mut s, &[page_entry; 3]);
    // The old entry (LSN first + 3) that the marker will sit on, at the start of a page.
    assert_eq!(s.tail(), DATA_OFFSET + 3 * PAGE);
    appends(r, &mut s, &[104, 200]);
    s.truncate_before(first + 1);
    s.truncate_after(first + 1);
    // Its replacement of one page ends where the old entry begins: the marker is the first word
    // of the next page.
    appends(r, &mut s, &[page_entry]);
    assert_eq!(s.tail(), DATA_OFFSET + 3 * PAGE);
    s.truncate_before(first + 2);
    // The next LSN's entry does not fit before the end of the file: it wraps.
    let p = r.payload(PAGE - 16);
    s.append(&p).expect("room at the start");
    assert!(s.tail() < DATA_OFFSET + 3 * PAGE, "the append did not wrap");
    appends(r, &mut s, &[8]);
    // The cut moves above the old entry's LSN.
    s.truncate_after(first + 3);
    appends(r, &mut s, &[8]);
    r.finish(s);
    Some(())
}

/// Over 100 wraps of a 16 KiB log: random appends and batches, `truncate_before` whenever Full,
/// some `truncate_after` and `reset`; sampled crash points.
pub(crate) fn many_laps(r: &mut Runner) -> Option<()> {
    const LAPS: u64 = 100;
    r.scale_images(1, 32);
    let cap = 4 * 4096;
    let mut s = r.create(cap);
    let mut wraps = 0u64;
    let mut full = Vec::new();
    let mut ops = 0u64;
    while wraps < LAPS {
        ops += 1;
        let roll = r.rng.below(100);
        if roll < 2 && s.next_lsn() > s.first_lsn() + 1 {
            // Keeps the first entry: deleting every entry this way is `suffix-all-wrap`.
            let first = s.first_lsn();
            let next = s.next_lsn();
            let lsn = r.rng.range(first as usize, next as usize - 2) as u64;
            s.truncate_after(lsn);
            continue;
        }
        if roll == 2 {
            s.reset();
            continue;
        }
        let payloads: Vec<Vec<u8>> = if roll < 15 {
            (0..r.rng.range(2, 4))
                .map(|_| {
                    let n = r.rng.range(0, 200);
                    r.payload(n)
                })
                .collect()
        } else {
            let n = match r.rng.below(10) {
                0 => r.rng.range(400, 1500),
                1..=3 => r.rng.range(0, 24),
                _ => r.rng.range(0, 400),
            };
            vec![r.payload(n)]
        };
        loop {
            let t = s.tail();
            let ok = if payloads.len() == 1 {
                s.append(&payloads[0]).is_some()
            } else {
                s.batch(&payloads).is_some()
            };
            if ok {
                if s.tail() < t && s.events().last().is_some_and(|e| e.offset == DATA_OFFSET) {
                    wraps += 1;
                    if wraps % 20 == 1 {
                        full.push(s.events().len() - 1);
                    }
                }
                break;
            }
            // Full: drop some of the oldest entries and try again.
            let first = s.first_lsn();
            let live = s.next_lsn() - first;
            assert!(live > 0, "an empty log refused an append");
            let k = r.rng.range(1, live as usize) as u64;
            s.truncate_before(first + k);
        }
    }
    r.count("wraps", wraps);
    r.count("operations", ops);
    r.finish_sampled(
        s,
        Sampling {
            one_in: 192,
            full,
            windows: Vec::new(),
        },
    );
    Some(())
}

/// `truncate_after` (middle, nothing, everything, inside a batch) and `reset`, with crashes at
/// both barriers; shorter appends over the deleted entries; later sessions.
pub(crate) fn truncate_suffix(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 8);
    let mut s = r.create(4 * 4096);
    random_appends(r, &mut s, 6, 0, 200);
    let b = vec![r.payload(30), r.payload(0), r.payload(77)];
    s.batch(&b).expect("room");
    s.truncate_after(4);
    // Shorter entries over the deleted ones.
    appends(r, &mut s, &[10, 0, 30]);
    let last = s.next_lsn() - 1;
    s.truncate_after(last); // nothing
    let b = vec![r.payload(8), r.payload(8), r.payload(8)];
    let lsns = s.batch(&b).expect("room");
    s.truncate_after(lsns.start); // inside the batch
    appends(r, &mut s, &[50]);
    let first = s.first_lsn();
    s.truncate_after(first - 1); // everything
    appends(r, &mut s, &[3, 150]);
    s.reset();
    appends(r, &mut s, &[12, 40]);
    // Later sessions: the deleted entries never come back.
    let mut s = next_session(r, s)?;
    appends(r, &mut s, &[5, 60]);
    let next = s.next_lsn();
    s.truncate_after(next - 2);
    appends(r, &mut s, &[1]);
    next_session_append(r, s, 2)?;

    // In a wrapped log: a suffix in the second part, then one reaching into the first.
    let mut s = filled(r, 4 * 4096, 20, 250)?;
    drop_oldest(&mut s, 1, 2);
    let boundary = loop {
        let n = r.rng.range(50, 300);
        let p = r.payload(n);
        let t = s.tail();
        let lsn = s.append(&p).expect("room");
        if s.tail() < t {
            break lsn;
        }
    };
    appends(r, &mut s, &[20, 40]);
    s.truncate_after(boundary);
    appends(r, &mut s, &[9]);
    s.truncate_after(boundary - 2);
    appends(r, &mut s, &[33]);
    r.finish(s);
    Some(())
}

/// `truncate_after(k)` destroys the first deleted header with a second barrier, after its slot
/// update. A crash between the two leaves the new slot (cut `k + 1`, new epoch) and the old
/// entry `k + 1` intact right at the tail, where the epoch rule refuses it; the recovery sees a
/// clean end there and leaves it. The next session's first entry does not fit before the end
/// of the file and wraps; a `truncate_after(k + 1)` then moves the cut above the old entry's
/// LSN, and nothing must make the old entry `k + 1` part of the log again.
pub(crate) fn suffix_revival(r: &mut Runner) -> Option<()> {
    let (s, k, d) = suffix_cut(r)?;
    let ev = s.events().len() - 1;
    let si = r.finish(s);
    let at = r.point_before_last_drain(si, ev);
    let img = r.image_without(si, at, &[d..d + 8]);
    let mut s = r.open(img)?;
    assert_eq!(s.tail(), d);
    append_wrapping(r, &mut s);
    appends(r, &mut s, &[16]);
    s.truncate_after(k + 1);
    appends(r, &mut s, &[24]);
    next_session_append(r, s, 8)
}

/// Guards against a deleted suffix coming back within one session: `truncate_after(k)`, an
/// append that does not fit before the end of the file and wraps (LSN `k + 1` at the start of
/// the data area), then `truncate_after(k + 1)`, which moves the cut above the old entry
/// `k + 1` still lying at the tail before the wrap. Its header must have been destroyed, or the
/// scan would take it for the new entry `k + 1` (the epoch rule no longer applies to it).
pub(crate) fn suffix_wrap_suffix(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 4);
    let (mut s, k, _) = suffix_cut(r)?;
    append_wrapping(r, &mut s);
    appends(r, &mut s, &[16]);
    s.truncate_after(k + 1);
    appends(r, &mut s, &[24, SUFFIX_ENTRY]);
    next_session_append(r, s, 8)
}

/// Payload of the entries of [`suffix_cut`]: 104 bytes on media.
const SUFFIX_ENTRY: usize = 76;

/// A 16 KiB log filled with entries of one size, its 30 oldest truncated, then
/// `truncate_after(k)` with `k` four below the next LSN. Returns the session, `k` and the tail
/// (where the deleted entry `k + 1` begins).
fn suffix_cut(r: &mut Runner) -> Option<(Session, u64, usize)> {
    let mut s = filled(r, 4 * 4096, SUFFIX_ENTRY, SUFFIX_ENTRY)?;
    let first = s.first_lsn();
    s.truncate_before(first + 30);
    let k = s.next_lsn() - 4;
    s.truncate_after(k);
    let d = s.tail();
    Some((s, k, d))
}

/// `truncate_after(first - 1)` deletes every entry: head and tail stay at the old head, near
/// the end of the file. The next append does not fit there and wraps to the start of the data
/// area, so the entries before the wrap point are none at all.
pub(crate) fn suffix_all_wrap(r: &mut Runner) -> Option<()> {
    let mut s = filled(r, 4 * 4096, 900, 900)?;
    let last = s.next_lsn() - 1;
    s.truncate_before(last);
    let first = s.first_lsn();
    s.truncate_after(first - 1);
    append_wrapping(r, &mut s);
    appends(r, &mut s, &[40]);
    r.finish(s);
    Some(())
}
