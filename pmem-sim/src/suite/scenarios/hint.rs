//! The tail hint: bounded recovery from a durable entry near the tail.

use super::concurrent::slot_writes_in_appends;
use super::steps::filled;
use crate::suite::Runner;

/// `Options::tail_hint_every(256)`: hint slot updates during appends, truncations around the
/// hint, a wrap; recovery with the hint equals a full scan.
pub(crate) fn tail_hint(r: &mut Runner) {
    r.scale_images(1, 8);
    r.use_tail_hint(256);
    let mut s = r.create(4 * 4096);
    for _ in 0..10 {
        if r.rng.chance(1, 4) {
            let b = vec![r.payload(40), r.payload(70)];
            s.batch(&b).expect("room");
        } else {
            let n = r.rng.range(0, 150);
            let p = r.payload(n);
            s.append(&p).expect("room");
        }
    }
    let si = r.finish(s);
    let n = slot_writes_in_appends(r, si);
    r.count("hint slot updates", n);
    // Recovery from a random crash image uses the hint; truncations keep or clear it.
    let img = r.random_image(si);
    let Some(mut s) = r.open(img) else { return };
    for _ in 0..3 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let first = s.first_lsn();
    s.truncate_before(first + 1); // before the hint: kept
    for _ in 0..3 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let next = s.next_lsn();
    s.truncate_before(next - 2); // past the hint: cleared
    for _ in 0..4 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let next = s.next_lsn();
    s.truncate_after(next - 3);
    for _ in 0..3 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    let si = r.finish(s);
    let img = r.final_image(si);
    let Some(mut s) = r.open(img) else { return };
    let p = r.payload(6);
    s.append(&p).expect("room");
    r.finish(s);

    // A wrap: hints stop there; a hint from before the wrap stays valid.
    let Some(mut s) = filled(r, 4 * 4096, 30, 300) else {
        return;
    };
    let first = s.first_lsn();
    let len = s.next_lsn() - first;
    s.truncate_before(first + len / 3);
    for _ in 0..40 {
        let n = r.rng.range(60, 300);
        let p = r.payload(n);
        let t = s.tail();
        s.append(&p).expect("room");
        if s.tail() < t {
            break;
        }
    }
    for _ in 0..3 {
        let n = r.rng.range(0, 150);
        let p = r.payload(n);
        s.append(&p).expect("room");
    }
    r.finish(s);
}
