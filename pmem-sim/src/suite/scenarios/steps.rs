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

/// Appends entries with payloads of these sizes, each of which must fit.
pub(crate) fn appends(r: &mut Runner, s: &mut Session, sizes: &[usize]) {
    for &n in sizes {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
}

/// Appends `count` entries with payloads of random sizes in `lo..=hi`, each of which must fit.
pub(crate) fn random_appends(r: &mut Runner, s: &mut Session, count: usize, lo: usize, hi: usize) {
    for _ in 0..count {
        let n = r.rng.range(lo, hi);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
}

/// Appends an entry 8 bytes too long for the rest of the file: it wraps to the start of the
/// data area.
pub(crate) fn append_wrapping(r: &mut Runner, s: &mut Session) {
    let t = s.tail();
    let p = r.payload(s.log().capacity() as usize - t + 8);
    s.append(&p).expect("room at the start");
    assert!(s.tail() < t, "the append did not wrap");
}

/// Truncates the oldest `num / den` of the entries (`truncate_before`).
pub(crate) fn drop_oldest(s: &mut Session, num: u64, den: u64) {
    let first = s.first_lsn();
    let len = s.next_lsn() - first;
    s.truncate_before(first + len * num / den);
}

/// Ends the segment; the next one recovers its final image (`None` if that fails, with the
/// violation recorded).
pub(crate) fn next_session(r: &mut Runner, s: Session) -> Option<Session> {
    let si = r.finish(s);
    let img = r.final_image(si);
    r.open(img)
}

/// Ends the segment; the next one recovers its final image, appends an entry of `n` bytes and
/// ends.
pub(crate) fn next_session_append(r: &mut Runner, s: Session, n: usize) -> Option<()> {
    let si = r.finish(s);
    reopen_append(r, si, n)
}

/// A session that recovers the final image of segment `si`, appends an entry of `n` bytes and
/// ends (`None` if the recovery fails, with the violation recorded).
pub(crate) fn reopen_append(r: &mut Runner, si: usize, n: usize) -> Option<()> {
    let img = r.final_image(si);
    let mut s = r.open(img)?;
    appends(r, &mut s, &[n]);
    r.finish(s);
    Some(())
}
