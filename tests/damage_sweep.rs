//! Damage anywhere before the last entry of a closed log is never a silent drop. A closed log
//! published every entry (the reader area's published LSN covers them all) and its last
//! entry is whole, so every entry that damage hides was acknowledged: an open in the default
//! mode either returns every entry or fails with `Error::Corrupted`. Written flushing through
//! the CPU cache, the writer vouched for every entry too (FORMAT.md section 11), and damage to
//! the last entry is no exception: damage anywhere in the entries. One to three faults per
//! trial, each a flipped bit, eight bytes zeroed or overwritten at random, or a zeroed
//! 512-byte sector; single appends and batches of four; payloads of 8, 100 and 1000 bytes.
//! Deterministic (a fixed seed per configuration); `DAXLOG_SWEEP_TRIALS` sets the trials per
//! configuration (default 1500).

mod common;

use std::path::Path;

use common::{payload, Rng};
use daxlog::format::{entry_len, DATA_OFFSET, SB_BACKUP_OFFSET};
use daxlog::{Error, Log, Options};

const ENTRIES: u64 = 30;

/// A closed log of `ENTRIES` entries of `len` bytes, appended in batches of `batch` with
/// options `o`; its bytes and where each entry begins.
fn closed_log(path: &Path, len: usize, batch: usize, o: &Options) -> (Vec<u8>, Vec<u64>) {
    let log = Log::create(path, &o.clone().capacity(1 << 16)).unwrap();
    let mut starts = Vec::new();
    let mut lsn = 1;
    while lsn <= ENTRIES {
        let k = batch.min((ENTRIES - lsn + 1) as usize);
        let ps: Vec<Vec<u8>> = (0..k).map(|i| payload(lsn + i as u64, len)).collect();
        let refs: Vec<&[u8]> = ps.iter().map(|p| p.as_slice()).collect();
        let mut at = DATA_OFFSET as u64 + log.used_bytes();
        for _ in 0..k {
            starts.push(at);
            at += entry_len(len) as u64;
        }
        lsn = log.append_batch(&refs).unwrap().end;
    }
    drop(log);
    (std::fs::read(path).unwrap(), starts)
}

/// Damages `image` between `from` and `to` (exclusive) with one to three faults; says which.
fn damage(rng: &mut Rng, image: &mut [u8], from: usize, to: usize) -> String {
    let mut what = String::new();
    for _ in 0..1 + rng.below(3) {
        let at = from + rng.below(to - from);
        let r = rng.next() as usize;
        let (start, n, kind) = match rng.below(4) {
            0 => (at, 1, "flip"),
            1 => (at & !7, 8, "zero 8"),
            2 => (at & !511, 512, "zero 512"),
            _ => (at & !7, 8, "random 8"),
        };
        let start = start.max(from);
        let end = (start + n).min(to);
        let bytes = &mut image[start..end];
        match kind {
            "flip" => bytes[0] ^= 1 << (r % 8),
            "random 8" => bytes.copy_from_slice(&r.to_le_bytes()[..bytes.len()]),
            _ => bytes.fill(0),
        }
        what += &format!("{kind} at {start}; ");
    }
    what
}

#[test]
fn damage_to_a_closed_log_is_never_a_silent_drop() {
    let trials: usize = std::env::var("DAXLOG_SWEEP_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<u64> = (1..=ENTRIES).collect();
    let mut refused = 0;
    let configs = [(8, 1), (100, 1), (1000, 1), (8, 4), (100, 4), (1000, 4)];
    let cpu = Options::new().persistence(daxlog::PersistenceChoice::ForceCpuFlush);
    for (i, (len, batch, vouched)) in configs
        .iter()
        .flat_map(|&(l, b)| [(l, b, false), (l, b, true)])
        .enumerate()
    {
        let path = dir.path().join(format!("{len}-{batch}-{vouched}.dax"));
        let o = if vouched { cpu.clone() } else { Options::new() };
        let (clean, starts) = closed_log(&path, len, batch, &o);
        let last = starts[ENTRIES as usize - 1] as usize;
        let (from, to) = match vouched {
            // Up to the end of the last entry.
            true => (starts[0] as usize, last + entry_len(len)),
            false => (starts[0] as usize, last),
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
        for _ in 0..trials {
            let mut image = clean.clone();
            let what = damage(&mut rng, &mut image, from, to);
            std::fs::write(&path, &image).unwrap();
            match Log::open_read_only(&path, &Options::new()) {
                Ok(log) => {
                    let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
                    assert_eq!(
                        lsns,
                        all,
                        "{len} B x {batch} (vouched: {vouched}): {what}opened with {:?}",
                        log.recovery()
                    );
                }
                Err(Error::Corrupted { .. }) => refused += 1,
                Err(e) => panic!("{len} B x {batch} (vouched: {vouched}): {what}{e}"),
            }
        }
    }
    // Nearly every trial damages an entry (the rest land in padding).
    assert!(refused > trials * 5, "{refused} refused");
}

/// One bit flipped anywhere in the metadata page (both superblock copies, both slots, the
/// reader area, the bytes between) of logs in the states where the older slot would not lead
/// to the log as it is: a later session, a `truncate_before` without a wrap, a
/// `truncate_after` followed by fewer entries than it deleted, a wrapped log, a session with
/// nothing appended yet. Every open reads the log exactly as it was: the superblock has a
/// backup copy, the current slot is read corrected, and the reader area is evidence only where
/// entries are refused.
#[test]
fn one_bit_flipped_in_the_metadata_page_changes_nothing() {
    use daxlog::format::{SB_PRIMARY_OFFSET, SLOT0_OFFSET, SLOT1_OFFSET, SLOT_LEN};
    use daxlog::{Persistence, RecoveryMode};
    use pmem_sim::SimMedia;
    const P: Persistence = Persistence::Clwb;
    let reopen = |log: Log<SimMedia>| Log::open_on(log.into_media(), &Options::new()).unwrap();
    let append = |log: &Log<SimMedia>, n: u64| {
        for _ in 0..n {
            log.append(&payload(log.next_lsn(), 100)).unwrap();
        }
    };
    let new = |cap: usize| Log::create_on(SimMedia::new(cap, P), &Options::new()).unwrap();
    let mut cases: Vec<(&str, Log<SimMedia>)> = Vec::new();
    let log = new(1 << 16);
    append(&log, 10);
    let log = reopen(log);
    append(&log, 10);
    cases.push(("a second session", log));
    let log = new(1 << 16);
    append(&log, 20);
    log.truncate_before(12).unwrap();
    cases.push(("a truncate_before without a wrap", log));
    let log = new(1 << 16);
    append(&log, 20);
    log.truncate_after(15).unwrap();
    append(&log, 2);
    cases.push(("a truncate_after, then fewer appends", log));
    let log = new(16384);
    for _ in 0..6 {
        append(&log, 60);
        log.truncate_before(log.next_lsn() - 30).unwrap();
    }
    cases.push(("a wrapped log", log));
    let log = new(1 << 16);
    append(&log, 20);
    cases.push(("a session with nothing appended", reopen(log)));

    let mut rng = Rng(0x5eed);
    for (what, log) in cases {
        let want: Vec<u64> = log.iter().map(|e| e.lsn).collect();
        let img = log.into_media().snapshot();
        // Every bit of the superblocks and the slots, and as many others at random.
        let mut bits: Vec<usize> = [
            SB_PRIMARY_OFFSET,
            SB_BACKUP_OFFSET,
            SLOT0_OFFSET,
            SLOT1_OFFSET,
        ]
        .into_iter()
        .flat_map(|off| off * 8..(off + SLOT_LEN) * 8)
        .collect();
        bits.extend((0..bits.len()).map(|_| rng.below(DATA_OFFSET * 8)));
        for bit in bits {
            let mut img = img.clone();
            img[bit / 8] ^= 1 << (bit % 8);
            for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
                let opts = Options::new().recovery_mode(mode);
                let log = Log::open_on_read_only(SimMedia::from_image(&img, P), &opts)
                    .unwrap_or_else(|e| panic!("{what}: bit {bit}, {mode:?}: {e}"));
                let got: Vec<u64> = log.iter().map(|e| e.lsn).collect();
                assert_eq!(got, want, "{what}: bit {bit}, {mode:?}");
            }
        }
    }
}
