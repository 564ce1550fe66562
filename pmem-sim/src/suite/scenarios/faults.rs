//! Appends that do not finish normally: a thread that panics between its reservation and its
//! stores (its LSNs must hold padding), and a barrier that fails (the log must refuse every
//! later append, and the failed append may or may not survive a crash).

use super::steps::{
    appends, drop_oldest, filled, next_session_append, random_appends, reopen_append,
};
use crate::suite::Runner;

/// Guards against an abandoned append wedging the log or breaking recovery: its thread panics
/// after reserving and before storing anything, and the reservation must be filled with
/// padding (same lengths, zero payloads, valid checksums, the reserved LSNs) and published,
/// so that later appends go on and recovery walks over it. Single appends, a batch, a large
/// entry (non-temporal stores in the NT configurations), then, in a later session, one that
/// wraps to the start of the data area; crashes at every point, inside the padding too.
pub(crate) fn abandoned(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 4);
    let arm = r
        .hooks
        .panic_before_stores
        .expect("the abandoned scenario needs Suite::hooks.panic_before_stores");
    let mut s = r.create(4 * 4096);
    appends(r, &mut s, &[30, 8]);
    let p = r.payload(40);
    s.append_abandoned(&[p], arm);
    appends(r, &mut s, &[20]);
    let b = vec![r.payload(10), r.payload(300), r.payload(0)];
    s.append_abandoned(&b, arm);
    appends(r, &mut s, &[700]);
    let p = r.payload(900);
    s.append_abandoned(&[p], arm);
    appends(r, &mut s, &[5]);

    // The padding survives recovery.
    next_session_append(r, s, 60)?;

    // An abandoned append that wraps.
    let mut s = filled(r, 4 * 4096, 40, 200)?;
    drop_oldest(&mut s, 1, 2);
    let cap = s.log().capacity() as usize;
    let t = s.tail();
    let p = r.payload(cap - t + 8);
    s.append_abandoned(&[p], arm);
    assert!(s.tail() < t, "the abandoned append did not wrap");
    appends(r, &mut s, &[50]);
    next_session_append(r, s, 9)
}

/// Guards against an append whose barrier failed (an `msync` error: durability unknown) being
/// acknowledged, or the log accepting appends after it: the append must return the error,
/// every later one `Error::Poisoned` without a store, and after a crash the failed append may
/// be present or not, whole. Later sessions (the media healthy again, as after a restart)
/// start from crash images of the poisoned one.
pub(crate) fn failed_sync(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 4);
    let mut s = r.create(4 * 4096);
    random_appends(r, &mut s, 4, 0, 300);
    let k = r.rng.range(1, 2);
    let b: Vec<Vec<u8>> = (0..k)
        .map(|_| {
            let n = r.rng.range(0, 600);
            r.payload(n)
        })
        .collect();
    s.append_failing(&b);
    let si = r.finish(s);
    for _ in 0..2 {
        if r.stopped() {
            return Some(());
        }
        let img = r.random_image(si);
        let mut s = r.open(img)?;
        appends(r, &mut s, &[77]);
        let b = vec![r.payload(3), r.payload(30)];
        s.batch(&b).expect("room");
        r.finish(s);
    }
    reopen_append(r, si, 12)
}
