//! The tail hint: bounded recovery from a durable entry near the tail.

use super::concurrent::slot_writes_in_appends;
use super::steps::{appends, drop_oldest, filled, next_session_append, random_appends};
use crate::suite::Runner;

/// `Options::tail_hint_every(256)`: hint slot updates during appends, truncations around the
/// hint, a wrap; recovery with the hint equals a full scan.
pub(crate) fn tail_hint(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 8);
    r.use_tail_hint(256);
    let mut s = r.create(4 * 4096);
    for _ in 0..10 {
        if r.rng.chance(1, 4) {
            let b = vec![r.payload(40), r.payload(70)];
            s.batch(&b).expect("room");
        } else {
            let n = r.rng.range(0, 150);
            appends(r, &mut s, &[n]);
        }
    }
    let si = r.finish(s);
    let n = slot_writes_in_appends(r, si);
    r.count("hint slot updates", n);
    // Recovery from a random crash image uses the hint; truncations keep or clear it.
    let img = r.random_image(si);
    let mut s = r.open(img)?;
    random_appends(r, &mut s, 3, 0, 150);
    let first = s.first_lsn();
    s.truncate_before(first + 1); // before the hint: kept
    random_appends(r, &mut s, 3, 0, 150);
    let next = s.next_lsn();
    s.truncate_before(next - 2); // past the hint: cleared
    random_appends(r, &mut s, 4, 0, 150);
    let next = s.next_lsn();
    s.truncate_after(next - 3);
    random_appends(r, &mut s, 3, 0, 150);
    next_session_append(r, s, 6)?;

    // A wrap: hints stop there; a hint from before the wrap stays valid.
    let mut s = filled(r, 4 * 4096, 30, 300)?;
    drop_oldest(&mut s, 1, 3);
    for _ in 0..40 {
        let n = r.rng.range(60, 300);
        let p = r.payload(n);
        let t = s.tail();
        s.append(&p).expect("room");
        if s.tail() < t {
            break;
        }
    }
    random_appends(r, &mut s, 3, 0, 150);
    r.finish(s);
    Some(())
}
