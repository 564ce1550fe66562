//! Appends of every size, batches, a full log, reopening, superblock repair.

use daxlog::format::{HEADER_LEN, SB_BACKUP_OFFSET};

use super::steps::{appends, random_appends};
use crate::suite::Runner;

/// Payload sizes that cross every boundary: words, the header's line, lines, the default NT
/// threshold, pages.
pub const SIZES: &[usize] = &[
    0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 39, 40, 41, 47, 55, 56, 57, 63, 64,
    65, 71, 88, 100, 127, 128, 129, 200, 231, 232, 233, 255, 256, 257, 300, 513, 777, 1000, 2000,
    4100,
];

/// Single appends of every interesting size, 0 bytes to past the NT threshold.
pub(crate) fn sizes(r: &mut Runner) -> Option<()> {
    let mut s = r.create(5 * 4096);
    for &n in SIZES {
        appends(r, &mut s, &[n]);
    }
    r.finish(s);
    Some(())
}

/// Single appends of random sizes at random alignments until the log is full.
pub(crate) fn sizes_random(r: &mut Runner) -> Option<()> {
    let mut s = r.create(4 * 4096);
    loop {
        let n = match r.rng.below(8) {
            0 => r.rng.range(0, 16),
            1..=4 => r.rng.range(0, 120),
            5 | 6 => r.rng.range(120, 400),
            _ => r.rng.range(400, 1500),
        };
        let p = r.payload(n);
        if s.append(&p).is_none() || s.free() < 64 {
            break;
        }
    }
    r.finish(s);
    Some(())
}

/// `append_batch` of 1 to 6 entries, small and large, interleaved with appends.
pub(crate) fn batch(r: &mut Runner) -> Option<()> {
    let mut s = r.create(8 * 4096);
    let shapes: &[&[usize]] = &[
        &[1],
        &[0, 0],
        &[1, 2],
        &[8, 8, 8],
        &[5, 300],
        &[100, 1, 50, 7, 64],
        &[16, 16, 16, 16, 16, 16],
        &[250, 10],
        &[1000, 24],
        &[3, 3000],
        // Over the 4 KiB a batch is assembled in: stored entry by entry, payloads of 512 bytes
        // and more checksummed while copied (non-temporal stores).
        &[600, 2000, 1800],
        &[520, 8, 3800],
    ];
    for shape in shapes {
        let b: Vec<Vec<u8>> = shape.iter().map(|&n| r.payload(n)).collect();
        s.batch(&b).expect("room");
        appends(r, &mut s, &[10]);
    }
    // `append_padding`: LSNs taken by padding entries, one group with one barrier.
    s.padding(3).expect("room");
    appends(r, &mut s, &[10]);
    s.padding(1).expect("room");
    r.finish(s);
    Some(())
}

/// Appends until `Error::Full`, then filling the log exactly to its last byte.
pub(crate) fn full(r: &mut Runner) -> Option<()> {
    let mut s = r.create(8192);
    // Fill with random appends and batches until one does not fit.
    loop {
        let ok = if r.rng.chance(1, 4) {
            let b: Vec<Vec<u8>> = (0..r.rng.range(2, 4))
                .map(|_| {
                    let n = r.rng.range(0, 300);
                    r.payload(n)
                })
                .collect();
            s.batch(&b).is_some()
        } else {
            let n = r.rng.range(0, 700);
            let p = r.payload(n);
            s.append(&p).is_some()
        };
        if !ok {
            break;
        }
    }
    // Fill exactly to the end, then nothing more fits.
    let free = s.free();
    if free >= HEADER_LEN {
        let p = r.payload(free - HEADER_LEN);
        s.append(&p).expect("an entry that fills the log exactly");
        assert_eq!(s.free(), 0);
    }
    assert!(s.append(b"").is_none());
    assert!(s.batch(&[vec![1], vec![2]]).is_none());
    r.finish(s);
    Some(())
}

/// Appends after recovery from random crash images, over several sessions.
pub(crate) fn reopen(r: &mut Runner) -> Option<()> {
    let mut s = r.create(4 * 4096);
    random_appends(r, &mut s, 5, 0, 300);
    let mut si = r.finish(s);
    for _ in 0..4 {
        if r.stopped() {
            return Some(());
        }
        let img = r.random_image(si);
        let mut s = r.open(img)?;
        for _ in 0..r.rng.range(0, 3) {
            let n = r.rng.range(0, 200);
            let p = r.payload(n);
            if s.free() > 2048 {
                s.append(&p);
            }
        }
        if r.rng.chance(1, 2) && s.free() > 2048 {
            let b: Vec<Vec<u8>> = (0..r.rng.range(2, 3))
                .map(|_| {
                    let n = r.rng.range(0, 100);
                    r.payload(n)
                })
                .collect();
            s.batch(&b);
        }
        si = r.finish(s);
    }
    Some(())
}

/// A writable open repairs a damaged superblock copy: crashes inside the repair.
pub(crate) fn superblock_repair(r: &mut Runner) -> Option<()> {
    let mut s = r.create(3 * 4096);
    appends(r, &mut s, &[10, 60, 200]);
    let si = r.finish_unchecked(s);
    let entries = r.segment(si).all_entries();
    let clean = r.final_image(si);
    for damaged in [20, SB_BACKUP_OFFSET + 40] {
        let mut img = clean.clone();
        img[damaged] ^= 0x40;
        let mut s = r.open(img)?;
        let base: Vec<Vec<u8>> = s.seg.base.iter().map(|b| b.payload.clone()).collect();
        if base != entries {
            r.record(format!(
                "VIOLATION in {}: the log with a damaged superblock copy recovered {} entries, expected {}",
                r.label,
                s.seg.base.len(),
                entries.len()
            ));
        }
        appends(r, &mut s, &[30]);
        r.finish(s);
    }
    Some(())
}
