//! Stale bytes past the tail: torn remains, forged payloads, old logs under a new one, and
//! recovery's wipe of what an interrupted append left.

use daxlog::format::{self, HEADER_LEN, SLOT0_OFFSET, SLOT1_OFFSET};

use super::steps::{appends, next_session_append};
use crate::suite::{encode_entry, Runner};

/// A torn long entry, then shorter appends over its remains.
pub(crate) fn torn_shorter(r: &mut Runner) -> Option<()> {
    let mut s = r.create(3 * 4096);
    appends(r, &mut s, &[50; 3]);
    let long = r.payload(400);
    s.append(&long).expect("room");
    let si = r.finish(s);
    let ev = r.segment(si).events()[3].clone();
    let at = r.point_after_stores(si, 3);
    let o = ev.offset;
    // Torn three ways: its length/checksum word lost, a payload word lost, its last word lost.
    for hole in [o..o + 8, o + 200..o + 208, o + 416..o + 424] {
        let img = r.image_without(si, at, &[hole]);
        let mut s = r.open(img)?;
        appends(r, &mut s, &[16, 100, 7]);
        next_session_append(r, s, 1)?;
    }
    Some(())
}

/// After a torn batch whose later entry `B` is whole (its first entry torn), the recovery that
/// wipes the remains crashes with its slot written and the torn entry's header wiped but `B`
/// not. The next session starts with a clean-looking tail and lands its tail on `B`: with one
/// entry of the torn entry's size the LSN matches `B`'s and only the epoch rule refuses it;
/// with two entries `B`'s LSN is below the next session's `cut_lsn` and only the LSN rule
/// refuses it.
pub(crate) fn stale_batch(r: &mut Runner) -> Option<()> {
    let mut s = r.create(3 * 4096);
    appends(r, &mut s, &[30; 2]);
    let a = r.payload(56); // 80 bytes on media
    let b = r.payload(40);
    s.batch(&[a, b]).expect("room");
    let s0 = r.finish(s);
    let ev = r.segment(s0).events()[2].clone();
    let offs = ev.entry_offsets();
    let (a_off, b_off) = (offs[0], offs[1]);
    let b_end = b_off + format::entry_len(40);
    let at = r.point_after_stores(s0, 2);
    let torn = r.image_without(s0, at, &[a_off..a_off + 8]);
    let s = r.open(torn)?;
    let s1 = r.finish(s);
    // The recovery's writes persisted except the wipe of B.
    let p = r.point_before_open_drain(s1);
    let partial = r.image_without(s1, p, &[b_off..b_end]);
    for shape in [&[56usize][..], &[8, 24]] {
        let mut s = r.open(partial.clone())?;
        for &n in shape {
            appends(r, &mut s, &[n]);
        }
        assert_eq!(s.tail(), b_off, "the new tail must land on the stale entry");
        next_session_append(r, s, 5)?;
    }
    Some(())
}

/// Payloads holding encoded entries. Acknowledged ones are only data. A torn one leaves them as
/// remains; a recovery that crashes with the torn header wiped (and its slot written) but the
/// rest not leaves them in place; the next session's tail then lands on a forged entry with
/// the next LSN (refused by the epoch rule) or with a low LSN (refused by the LSN rule; with
/// LSN below `cut_lsn` the epoch rule does not apply to it).
pub(crate) fn forged_payload(r: &mut Runner) -> Option<()> {
    // Acknowledged payloads that hold entries.
    let mut s = r.create(3 * 4096);
    appends(r, &mut s, &[20; 2]);
    let (salt, epoch) = s.salt_epoch();
    let inner = [
        encode_entry(salt, epoch, 4, 0, b"inner four"),
        encode_entry(salt, epoch, 5, 0, b"inner five"),
        encode_entry(salt, epoch ^ 1, 1, 0, b"inner low"),
    ]
    .concat();
    s.append(&inner).expect("room");
    appends(r, &mut s, &[9]);
    r.finish(s);

    // A torn entry whose payload forges entries.
    let mut s = r.create(3 * 4096);
    appends(r, &mut s, &[20; 3]);
    let (salt, epoch) = s.salt_epoch();
    let mut long = r.payload(400);
    let next = encode_entry(salt, epoch, 5, 0, b"forged next");
    let low = encode_entry(salt, epoch, 2, 0, b"forged low");
    long[40..40 + next.len()].copy_from_slice(&next);
    long[200..200 + low.len()].copy_from_slice(&low);
    s.append(&long).expect("room");
    let s0 = r.finish(s);
    let o = r.segment(s0).events()[3].offset;
    let at = r.point_after_stores(s0, 3);
    let torn = r.image_without(s0, at, &[o..o + 8]);
    let s = r.open(torn)?;
    let s1 = r.finish(s);
    // The recovery's writes persisted except the wipe past the torn header.
    let p = r.point_before_open_drain(s1);
    let partial = r.image_without(s1, p, &[o + HEADER_LEN..o + format::entry_len(400)]);
    // A 40-byte payload ends where "forged next" starts; a 200-byte one where "forged low" does.
    for n in [40, 200] {
        let mut s = r.open(partial.clone())?;
        appends(r, &mut s, &[n]);
        next_session_append(r, s, 3)?;
    }
    Some(())
}

/// `create_on` over media holding an old log; crashes inside the creation.
pub(crate) fn reuse(r: &mut Runner) -> Option<()> {
    // An old log over two sessions, filling most of the media.
    let mut s = r.create(3 * 4096);
    while s.free() > 3000 {
        let n = r.rng.range(0, 200);
        appends(r, &mut s, &[n]);
    }
    let si = r.finish_unchecked(s);
    let mut s = r.open(r.final_image(si))?;
    while s.free() > 1000 {
        let n = r.rng.range(0, 200);
        appends(r, &mut s, &[n]);
    }
    let si = r.finish_unchecked(s);
    let old = r.segment(si).all_entries();
    // A new log over it.
    let mut s = r.create_over(r.final_image(si), old);
    appends(r, &mut s, &[0, 40, 90]);
    next_session_append(r, s, 33)
}

/// Media that held other data (`0xA5` everywhere) gets a new log; an append whose payload has a
/// zero word is torn exactly there (the stale `0xA5` bytes stay), so recovery discards it and
/// wipes its remains. If that recovery crashes with only the zero word's wipe persisted (and
/// not its slot), the append is whole again: a second recovery must still not differ.
pub(crate) fn wipe_revival(r: &mut Runner) -> Option<()> {
    let cap = 3 * 4096;
    let mut s = r.create_over(vec![0xA5; cap], Vec::new());
    appends(r, &mut s, &[20; 2]);
    let mut x = r.payload(64);
    x.iter_mut().filter(|b| **b == 0).for_each(|b| *b = 1);
    x[16..24].fill(0);
    s.append(&x).expect("room");
    let s0 = r.finish(s);
    let o = r.segment(s0).events()[2].offset;
    let w = o + HEADER_LEN + 16;
    let at = r.point_after_stores(s0, 2);
    let torn = r.image_without(s0, at, &[w..w + 8]);
    let s = r.open(torn)?;
    let s1 = r.finish(s);
    let p = r.point_before_open_drain(s1);
    r.image_without(s1, p, &[SLOT0_OFFSET..SLOT1_OFFSET + 64, o..w, w + 8..cap]);
    Some(())
}
