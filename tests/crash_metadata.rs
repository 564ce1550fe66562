//! The metadata page across crashes.
//!
//! - Every crash image of a writable open that rewrites superblock copies still opens with all
//!   the entries: the upgrade of a version-1 log (both copies rewritten) and the repair of one
//!   damaged copy, on CPU-flush and msync media. Both copies torn at once would leave no
//!   superblock to open the log with (FORMAT.md section 3: one copy at a time).
//! - A suffix truncation makes the published LSN it lowers durable before its slot update
//!   (FORMAT.md section 11): after a power failure, a reader that opens the log before any
//!   writer does trusts that LSN.

mod common;

use daxlog::format::{
    Superblock, PUBLISHED_OFFSET, SB_BACKUP_OFFSET, SB_LEN, SB_PRIMARY_OFFSET, VOUCHED_OFFSET,
};
use daxlog::{Log, Options, Persistence};
use pmem_sim::{GenConfig, Model, Op, Run, SimMedia};

const ENTRIES: u8 = 5;

/// A log of [`ENTRIES`] entries, its image as a clean close left it.
fn image(persistence: Persistence) -> Vec<u8> {
    let (log, obs) = log_of(persistence, ENTRIES);
    drop(log);
    obs.snapshot()
}

/// A new log on simulated media holding `n` entries (entry `i` is 40 bytes of `i`), and the
/// observer of its media.
fn log_of(persistence: Persistence, n: u8) -> (Log<SimMedia>, pmem_sim::Observer) {
    let media = SimMedia::new(16384, persistence);
    let obs = media.observer();
    let log = Log::create_on(media, &Options::new()).unwrap();
    for i in 0..n {
        log.append(&[i; 40]).unwrap();
    }
    (log, obs)
}

/// The run of the operations `traced` from `initial` on, and the crash model of the media.
fn run_of(
    initial: Vec<u8>,
    persistence: Persistence,
    traced: (Vec<Op>, Vec<pmem_sim::ThreadId>),
) -> (Run, Model) {
    let (ops, threads) = traced;
    let model = if persistence == Persistence::Msync {
        Model::Msync
    } else {
        Model::Strict
    };
    let run = Run {
        initial,
        persistence,
        ops,
        threads,
    };
    (run, model)
}

/// `img` with both superblock copies saying `version`.
fn of_version(mut img: Vec<u8>, version: u32) -> Vec<u8> {
    for off in [SB_PRIMARY_OFFSET, SB_BACKUP_OFFSET] {
        let sb = Superblock {
            version,
            ..Superblock::decode(&img[off..off + SB_LEN]).unwrap()
        };
        img[off..off + SB_LEN].copy_from_slice(&sb.encode());
    }
    img
}

/// `img` as a version-1 writer would have left it.
fn as_version_1(img: Vec<u8>) -> Vec<u8> {
    let mut img = of_version(img, 1);
    // A version-1 writer left the reader area zero.
    img[PUBLISHED_OFFSET..PUBLISHED_OFFSET + 128].fill(0);
    img
}

/// `img` as a version-2 writer in msync mode could have left it after a write-back of its last
/// append failed unreported (FORMAT.md section 7): published past the entries, and the word
/// a version-3 writer vouches with, which no version-2 writer writes, holding what would vouch
/// for that (what the media held).
fn as_version_2_overclaimed(img: Vec<u8>) -> Vec<u8> {
    let mut img = of_version(img, 2);
    let over = u64::from(ENTRIES) + 2;
    img[PUBLISHED_OFFSET..][..8].copy_from_slice(&over.to_le_bytes());
    img[VOUCHED_OFFSET..][..8].copy_from_slice(&daxlog::format::vouched_word(over).to_le_bytes());
    img
}

/// `img` with the superblock copy at `off` damaged (a flipped bit in its capacity field).
fn damaged_at(mut img: Vec<u8>, off: usize) -> Vec<u8> {
    img[off + 16] ^= 1;
    img
}

/// The entries of `img` opened read-only, or the error.
fn entries(img: &[u8], persistence: Persistence) -> Result<Vec<Vec<u8>>, daxlog::Error> {
    let log = Log::open_on_read_only(SimMedia::from_image(img, persistence), &Options::new())?;
    let got = log.iter().map(|e| e.payload.to_vec()).collect();
    Ok(got)
}

/// Runs a writable open of `start` and checks every crash image of it: the entries are all
/// there, read-only and after a writable open, which can append; that open holds `padded`
/// padding entries after them (LSNs `start`'s published word names past its entries). Returns
/// the images checked.
fn check_every_crash_of_the_open(
    what: &str,
    start: &[u8],
    persistence: Persistence,
    padded: u64,
) -> u64 {
    let want: Vec<Vec<u8>> = (0..ENTRIES).map(|i| vec![i; 40]).collect();
    assert_eq!(entries(start, persistence).unwrap(), want, "{what}: before");
    let media = SimMedia::from_image(start, persistence);
    let obs = media.observer();
    drop(Log::open_on(media, &Options::new()).unwrap());
    let (ops, threads) = obs.ops_range(0, obs.ops());
    assert!(!ops.is_empty(), "{what}: the open wrote nothing");
    let (run, model) = run_of(start.to_vec(), persistence, (ops, threads));
    let mut images = 0u64;
    run.for_each_point(|point, st| {
        let ci = st.crash_images(model, &GenConfig::default(), point as u64);
        for i in 0..ci.len() {
            images += 1;
            let img = ci.image(i);
            let at = || format!("{what}: crash point {point}, {}", ci.describe(i));
            match entries(&img, persistence) {
                Ok(got) => assert_eq!(got, want, "{}", at()),
                Err(e) => panic!("{}: {e}", at()),
            }
            let media = SimMedia::from_image(&img, persistence);
            let log = Log::open_on(media, &Options::new())
                .unwrap_or_else(|e| panic!("{}: writable open: {e}", at()));
            assert_eq!(log.len(), u64::from(ENTRIES) + padded, "{}", at());
            log.append(b"after").unwrap();
        }
    });
    images
}

#[test]
fn a_crash_while_superblock_copies_are_rewritten_loses_nothing() {
    for persistence in [Persistence::Clwb, Persistence::Msync] {
        let clean = image(persistence);
        let mut images = 0;
        images += check_every_crash_of_the_open(
            &format!("{persistence:?}, upgrade of a version-1 log"),
            &as_version_1(clean.clone()),
            persistence,
            0,
        );
        // (The vouched word is cleared, durably, before either copy says version 3: else a
        // crash between would leave it vouching for an entry the log never held. The LSN the
        // published word names past the entries is taken with padding.)
        images += check_every_crash_of_the_open(
            &format!("{persistence:?}, upgrade of a version-2 log"),
            &as_version_2_overclaimed(clean.clone()),
            persistence,
            1,
        );
        for (name, off) in [("primary", SB_PRIMARY_OFFSET), ("backup", SB_BACKUP_OFFSET)] {
            images += check_every_crash_of_the_open(
                &format!("{persistence:?}, repair of the {name} copy"),
                &damaged_at(clean.clone(), off),
                persistence,
                0,
            );
        }
        // (The check above would pass vacuously on a handful of images.)
        assert!(images > 100, "{persistence:?}: only {images} crash images");
    }
}

/// The operations of `truncate_after(5)` on a log of ten entries: the lowered published LSN
/// (the reader area's first word, which the simulated media do not store) is written back and
/// drained before the new slot is stored. (If the slot could reach media without it, a reader
/// after a power failure could read entry 6 as published, and report damage where it was
/// deleted.)
#[test]
fn a_suffix_truncation_makes_its_lowered_published_lsn_durable_before_its_slot() {
    use daxlog::format::{PUBLISHED_OFFSET, SLOT0_OFFSET, SLOT1_OFFSET, SLOT_LEN};
    for persistence in [Persistence::Clwb, Persistence::Msync] {
        let (log, obs) = log_of(persistence, 10);
        let from = obs.ops();
        log.truncate_after(5).unwrap();
        let (ops, _) = obs.ops_range(from, obs.ops());
        let is_slot = |off: usize| {
            [SLOT0_OFFSET, SLOT1_OFFSET]
                .into_iter()
                .any(|s| (s..s + SLOT_LEN).contains(&off))
        };
        let slot_store = ops
            .iter()
            .position(|op| matches!(op, Op::Store { off, .. } if is_slot(*off)))
            .unwrap_or_else(|| panic!("{persistence:?}: no slot update in {ops:?}"));
        let flushed = ops[..slot_store].iter().position(|op| {
            matches!(op, Op::Flush { off, len } if (*off..*off + *len).contains(&PUBLISHED_OFFSET))
        });
        let drained = flushed.and_then(|f| {
            ops[f..slot_store]
                .iter()
                .position(|op| matches!(op, Op::Drain))
        });
        assert!(
            drained.is_some(),
            "{persistence:?}: the published LSN is not made durable before the slot: {:?}",
            ops[..=slot_store]
                .iter()
                .map(Op::describe)
                .collect::<Vec<_>>()
        );
        assert_eq!(log.next_lsn(), 6);
    }
}

/// A writer killed before the barrier of its append leaves the entry whole in the cache but
/// not durable; the next writable open accepts it (and shows it to readers), and appends are
/// acknowledged after it. Every crash image from that acknowledgement on must still hold all
/// of them: the open makes what it recovered durable before its session's slot puts it below
/// the cut. Also when the last session's entries wrap around the end of the file, when the scan
/// starts at a tail hint, and both; each image is opened with and without the hint.
#[test]
fn an_entry_a_killed_writer_left_in_the_cache_is_made_durable_by_the_next_open() {
    for persistence in [Persistence::Clwb, Persistence::Msync] {
        for (what, opts, wrapped) in [
            ("plain", Options::new(), false),
            ("wrapped", Options::new(), true),
            ("hinted", Options::new().tail_hint_every(512), false),
            ("hinted, wrapped", Options::new().tail_hint_every(512), true),
        ] {
            let what = format!("{persistence:?}, {what}");
            let (images, bad) = killed_writer_then_power_failure(persistence, &opts, wrapped);
            assert!(
                images > 0,
                "{what}: no crash image after the acknowledgement"
            );
            assert!(
                bad.is_empty(),
                "{what}: {} opens (two per image) of {images} crash images lose acknowledged entries, e.g. {}",
                bad.len(),
                bad[0]
            );
        }
    }
}

/// The run of the test above: returns the crash images checked and the failures.
fn killed_writer_then_power_failure(
    persistence: Persistence,
    opts: &Options,
    wrapped: bool,
) -> (u64, Vec<String>) {
    use daxlog::format::encode_entry;
    use daxlog::Media;
    let payload = |i: u32| vec![(i % 251) as u8; 40];
    let media = SimMedia::new(16384, persistence);
    let obs = media.observer();
    let log = Log::create_on(media, opts).unwrap();
    let mut want: Vec<Vec<u8>> = Vec::new();
    for i in 0..150 {
        log.append(&payload(i)).unwrap();
        want.push(payload(i));
    }
    if wrapped {
        log.truncate_before(120).unwrap();
        want.drain(..119);
        for i in 150..210 {
            log.append(&payload(i)).unwrap();
            want.push(payload(i));
        }
    }
    let next = log.next_lsn();
    let media = log.into_media();
    let initial = obs.snapshot();
    let tail = {
        let ro = Log::open_on_read_only(SimMedia::from_image(&initial, persistence), opts).unwrap();
        ro.recovery().tail_offset as usize
    };
    assert_eq!(wrapped, tail < 8192, "the log wraps only when asked to");
    let (sb, slot) = common::current_slot(&initial);
    let from = obs.ops();
    // The killed writer's next entry: stored, never written back.
    let e = encode_entry(sb.salt, slot.epoch, next, 0, &[6u8; 40]);
    // SAFETY: no other thread uses the media; the range is past the log's tail.
    unsafe { media.store(tail, &e) };
    let log = Log::open_on(media, opts).unwrap();
    assert_eq!(
        log.next_lsn(),
        next + 1,
        "the reopened log holds the cached entry"
    );
    want.push(vec![6u8; 40]);
    log.append(b"after").unwrap();
    want.push(b"after".to_vec());
    let acked = obs.ops();
    drop(log);
    let (ops, threads) = obs.ops_range(from, obs.ops());
    let (run, model) = run_of(initial, persistence, (ops, threads));
    let (mut images, mut bad) = (0, Vec::new());
    run.for_each_point(|point, st| {
        if from + point < acked {
            return;
        }
        let ci = st.crash_images(model, &GenConfig::default(), point as u64);
        for i in 0..ci.len() {
            images += 1;
            let img = ci.image(i);
            for o in [Options::new(), opts.clone()] {
                let got = Log::open_on_read_only(SimMedia::from_image(&img, persistence), &o)
                    .map(|l| l.iter().map(|e| e.payload.to_vec()).collect::<Vec<_>>());
                match got {
                    Ok(got) if got == want => {}
                    other => bad.push(format!(
                        "point {point}, {}: {:?}",
                        ci.describe(i),
                        other.map(|e| e.len())
                    )),
                }
            }
        }
    });
    (images, bad)
}

/// The last session's entries are written back by the next writable open even where the head
/// is the wrap point: a `reset` while a guard is held leaves the head where the entries ended
/// (no entry there), and the next session's first batch wraps to the start of the data area.
/// With the published LSN below the tail (a writer killed with appends in flight), the open
/// must flush that batch before its cut puts it among the acknowledged entries.
#[test]
fn the_open_writes_back_a_session_that_wrapped_from_the_head() {
    for persistence in [Persistence::Clwb, Persistence::Msync] {
        let log = Log::create_on(SimMedia::new(1 << 20, persistence), &Options::new()).unwrap();
        let big = vec![7u8; 1000];
        while log.free_bytes() > 2 * 1024 {
            log.append(&big).unwrap();
        }
        let g = log.pin();
        log.reset().unwrap();
        drop(g);
        let log = Log::open_on(log.into_media(), &Options::new()).unwrap();
        let first = log.next_lsn();
        let batch: Vec<&[u8]> = (0..10).map(|_| &big[..]).collect();
        let lsns = log.append_batch(&batch).unwrap();
        let mut img = log.into_media().snapshot();
        // (The batch wrapped.)
        let at = daxlog::format::DATA_OFFSET;
        assert_eq!(
            daxlog::format::EntryHeader::decode(&img[at..at + daxlog::format::HEADER_LEN]).lsn,
            first
        );
        // As a writer killed before it published the batch leaves it.
        img[PUBLISHED_OFFSET..PUBLISHED_OFFSET + 8].copy_from_slice(&first.to_le_bytes());
        let media = SimMedia::from_image(&img, persistence);
        let obs = media.observer();
        let log = Log::open_on(media, &Options::new()).unwrap();
        assert_eq!(log.next_lsn(), lsns.end);
        let (ops, _) = obs.ops_range(0, obs.ops());
        let end = at + 10 * daxlog::format::entry_len(1000);
        let covered = ops
            .iter()
            .any(|op| matches!(op, Op::Flush { off, len } if *off <= at && off + len >= end));
        assert!(
            covered,
            "{persistence:?}: no flush covers the batch [{at}, {end}): {ops:?}"
        );
    }
}
