//! Appends that do not finish normally: a thread that panics between its reservation and its
//! stores (its LSNs must hold padding), and a barrier that fails (the log must refuse every
//! later append, and the failed append may or may not survive a crash).

use super::steps::filled;
use crate::suite::Runner;

/// Guards against an abandoned append wedging the log or breaking recovery: its thread panics
/// after reserving and before storing anything, and the reservation must be filled with
/// padding (same lengths, zero payloads, valid checksums, the reserved LSNs) and published,
/// so that later appends go on and recovery walks over it. Single appends, a batch, a large
/// entry (non-temporal stores in the NT configurations), then, in a later session, one that
/// wraps to the start of the data area; crashes at every point, inside the padding too.
pub(crate) fn abandoned(r: &mut Runner) {
    r.scale_images(1, 4);
    let arm = r
        .hooks
        .panic_before_stores
        .expect("the abandoned scenario needs Suite::hooks.panic_before_stores");
    let mut s = r.create(4 * 4096);
    for n in [30, 8] {
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let p = r.payload(40);
    s.append_abandoned(&[p], arm);
    let p = r.payload(20);
    s.append(&p).expect("room");
    let b = vec![r.payload(10), r.payload(300), r.payload(0)];
    s.append_abandoned(&b, arm);
    let p = r.payload(700);
    s.append(&p).expect("room");
    let p = r.payload(900);
    s.append_abandoned(&[p], arm);
    let p = r.payload(5);
    s.append(&p).expect("room");
    let si = r.finish(s);

    // The padding survives recovery.
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(60);
    s.append(&p).expect("room");
    r.finish(s);

    // An abandoned append that wraps.
    let Some(mut s) = filled(r, 4 * 4096, 40, 200) else {
        return;
    };
    let first = s.first_lsn();
    let len = s.next_lsn() - first;
    s.truncate_before(first + len / 2);
    let cap = s.log().capacity() as usize;
    let t = s.tail();
    let p = r.payload(cap - t + 8);
    s.append_abandoned(&[p], arm);
    assert!(s.tail() < t, "the abandoned append did not wrap");
    let p = r.payload(50);
    s.append(&p).expect("room");
    let si = r.finish(s);
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(9);
    s.append(&p).expect("room");
    r.finish(s);
}

/// Guards against an append whose barrier failed (an `msync` error: durability unknown) being
/// acknowledged, or the log accepting appends after it: the append must return the error,
/// every later one `Error::Poisoned` without a store, and after a crash the failed append may
/// be present or not, whole. Later sessions (the media healthy again, as after a restart)
/// start from crash images of the poisoned one.
pub(crate) fn failed_sync(r: &mut Runner) {
    r.scale_images(1, 4);
    let mut s = r.create(4 * 4096);
    for _ in 0..4 {
        let n = r.rng.range(0, 300);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
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
            return;
        }
        let img = r.random_image(si);
        let Some(mut s) = r.open(img) else { return };
        let p = r.payload(77);
        s.append(&p).expect("room");
        let b = vec![r.payload(3), r.payload(30)];
        s.batch(&b).expect("room");
        r.finish(s);
    }
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(12);
    s.append(&p).expect("room");
    r.finish(s);
}
