//! Steps that several scenarios share.

use daxlog::format;

use crate::suite::{Runner, Session};

/// Appends random entries (payloads of `lo..=hi` bytes) while one fits at the tail without
/// wrapping; returns how many.
pub(crate) fn fill_to_end(r: &mut Runner, s: &mut Session, lo: usize, hi: usize) -> usize {
    let cap = s.log().capacity() as usize;
    let mut k = 0;
    loop {
        let n = r.rng.range(lo, hi);
        if s.tail() + format::entry_len(n) > cap {
            return k;
        }
        let p = r.payload(n);
        s.append(&p).expect("room at the tail");
        k += 1;
    }
}

/// A log of `cap` bytes filled to (near) its end, in an unchecked setup segment; returns the
/// session that reopens it (the open's crashes are checked with the rest of the segment).
pub(crate) fn filled(r: &mut Runner, cap: usize, lo: usize, hi: usize) -> Option<Session> {
    let mut s = r.create(cap);
    fill_to_end(r, &mut s, lo, hi);
    let si = r.finish_unchecked(s);
    let img = r.final_image(si);
    r.open(img)
}
