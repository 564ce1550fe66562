//! A failed write-back in msync mode, in the simulator.
//!
//! Linux keeps the bytes of a page whose write-back failed in the page cache, marked clean, and
//! reports the error once, to the first sync of the file that looks: the one that covered the
//! page, or a later one (the next append's, a tail hint's, which ignores it, leaving the
//! report to the sticky failure). The writer then refuses appends; a new writable open in the
//! same page cache reads those bytes and accepts the entries they hold. From the moment that
//! open returns, every crash image must hold every entry it accepted, and the appends
//! acknowledged after it: the open writes the last session again (`Media::rewrite`, then its
//! drain), where the reader area does not vouch for it (a failure lowers the published LSN to
//! where the session began, or, in an open, to where the last one did).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use daxlog::format::{DATA_OFFSET, PUBLISHED_OFFSET};
use daxlog::{Log, Options, Persistence};
use pmem_sim::{GenConfig, Model, Observer, Op, SimMedia};

const P: Persistence = Persistence::Msync;

/// Entry `i`: `len` bytes of `i`.
fn payload(i: usize, len: usize) -> Vec<u8> {
    vec![(i % 251) as u8; len]
}

/// The reader area's published word of an image.
fn published_word(img: &[u8]) -> u64 {
    u64::from_le_bytes(img[PUBLISHED_OFFSET..][..8].try_into().unwrap())
}

fn set_published_word(img: &mut [u8], word: u64) {
    img[PUBLISHED_OFFSET..][..8].copy_from_slice(&word.to_le_bytes());
}

fn entries(img: &[u8]) -> Result<Vec<Vec<u8>>, daxlog::Error> {
    let log = Log::open_on_read_only(SimMedia::from_image(img, P), &Options::new())?;
    let got = log.iter().map(|e| e.payload.to_vec()).collect();
    Ok(got)
}

/// A case: its name, the options, the drain the failure is reported to, the failing
/// session's steps, and the entry sizes.
type Case<'a> = (&'a str, &'a Options, usize, &'a [Step], &'a [usize]);

/// What the failing session does.
#[derive(Clone, Copy, Debug)]
enum Step {
    Append,
    TruncateAfter(u64),
}

/// One run: five entries in a first session; a second session whose first write-back fails,
/// reported to its `report_at`-th drain, with `steps`; a reopen in the same page cache; one
/// append. Returns the crash images checked after the reopen, and the failures.
fn failed_writeback_then_power_failure(
    opts: &Options,
    len: usize,
    report_at: usize,
    steps: &[Step],
) -> (u64, Vec<String>) {
    let media = SimMedia::new(1 << 20, P);
    let obs = media.observer();
    let log = Log::create_on(media, opts).unwrap();
    for i in 0..5 {
        log.append(&payload(i, len)).unwrap();
    }
    let media = log.into_media();
    let initial = obs.snapshot();
    let from = obs.ops();

    let log = Log::open_on(media, opts).unwrap();
    let armed = obs.ops();
    obs.fail_writeback(report_at);
    let mut want: Vec<Vec<u8>> = (0..5).map(|i| payload(i, len)).collect();
    for step in steps {
        match *step {
            Step::Append => {
                let p = payload(want.len(), len);
                if log.append(&p).is_ok() {
                    want.push(p);
                }
            }
            Step::TruncateAfter(lsn) => {
                if log.truncate_after(lsn).is_ok() {
                    want.truncate(lsn as usize);
                }
            }
        }
    }
    drop(log);
    let failed_session = obs.ops();
    let reported = obs
        .ops_range(armed, failed_session)
        .0
        .contains(&pmem_sim::Op::DrainFailed);
    // The disk works again; a new open of the file, or two where the report was due in the
    // first (its first sync).
    if reported {
        obs.fail_drains(false);
    }
    let log = match Log::open_on(obs.reopen(), opts) {
        Ok(log) => {
            assert!(reported, "the open took no report: {steps:?}");
            log
        }
        Err(e) => {
            assert!(!reported, "{e}");
            obs.fail_drains(false);
            Log::open_on(obs.reopen(), opts).unwrap()
        }
    };
    let reopened = obs.ops();
    let accepted: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
    assert!(
        accepted.len() >= want.len() && accepted[..want.len()] == want[..],
        "the reopen in the page cache lost acknowledged entries: {} of {}",
        accepted.len(),
        want.len()
    );
    log.append(b"after").unwrap();
    let after_acked = obs.ops();
    drop(log);

    let run = obs.run_from(initial, from);
    let with_after: Vec<Vec<u8>> = accepted
        .iter()
        .cloned()
        .chain([b"after".to_vec()])
        .collect();
    let (mut images, mut bad, mut lost) = (0, Vec::new(), 0);
    run.for_each_point(|point, st| {
        let at = from + point;
        if at == failed_session {
            lost = st.lost_pieces();
        }
        if at < reopened {
            return;
        }
        let ci = st.crash_images(Model::Msync, &GenConfig::default(), point as u64);
        for i in 0..ci.len() {
            images += 1;
            match entries(&ci.image(i)) {
                Ok(got) if got == with_after => {}
                Ok(got) if got == accepted && at < after_acked => {}
                other => bad.push(format!(
                    "point {point} ({}): {}: {:?} entries, want {}",
                    run.ops
                        .get(point.saturating_sub(1))
                        .map_or("start".into(), |o| o.describe()),
                    ci.describe(i),
                    other.map(|e| e.len()),
                    accepted.len()
                )),
            }
        }
    });
    assert!(
        lost > 0,
        "nothing is lost when the session ends (stores dirtied the pages again): the run tests \
         nothing"
    );
    (images, bad)
}

#[test]
fn a_failed_write_back_is_written_again_by_the_next_open() {
    use Step::*;
    let hints = Options::new().tail_hint_every(1);
    // Entries of 6000 bytes span pages: a store into the next entry's first page dirties only
    // that page again, and the page at the tail is not all the open must write.
    let truncation: Vec<Step> = [Append; 70]
        .into_iter()
        .chain([TruncateAfter(70), Append, Append])
        .collect();
    // (Small entries only where no later store dirties the failed page again.)
    let both = &[100, 6000][..];
    let large = &[6000][..];
    let cases: [Case; 6] = [
        (
            "reported to its own sync",
            &Options::new(),
            1,
            &[Append],
            both,
        ),
        (
            "reported to the next append's sync",
            &Options::new(),
            2,
            &[Append, Append],
            large,
        ),
        (
            "reported to a tail hint's sync, no append after",
            &hints,
            2,
            &[Append],
            both,
        ),
        // The last writer never saw the failure: a writable open's first sync takes it, and
        // the open fails; the next one must not take the session for vouched.
        (
            "reported to the next open's first sync",
            &Options::new(),
            2,
            &[Append],
            large,
        ),
        // Drains: 6, its hint, 7, its hint (which takes the report): the reopen's scan starts
        // at the hint of 7, past entry 6.
        (
            "reported to a later tail hint's sync",
            &hints,
            4,
            &[Append, Append],
            large,
        ),
        // Drains: 6 to 75, the truncation's three barriers, 71, and 72 (which takes the
        // report): the reopen's cut is the truncation's, and the index of its scan has an
        // entry (64) between the lost one and the cut.
        (
            "reported after a suffix truncation",
            &Options::new(),
            75,
            &truncation,
            large,
        ),
    ];
    let only = std::env::var("CRASH_WRITEBACK_CASE").ok();
    for (what, opts, report_at, steps, lens) in cases {
        if only.as_deref().is_some_and(|o| !what.contains(o)) {
            continue;
        }
        for &len in lens {
            let (images, bad) = failed_writeback_then_power_failure(opts, len, report_at, steps);
            assert!(images > 0, "{what}, {len} B: no crash image checked");
            assert!(
                bad.is_empty(),
                "{what}, {len} B: {} of {images} crash images after the reopen lose entries it \
                 accepted, e.g. {}",
                bad.len(),
                bad[0]
            );
        }
    }
}

/// A writer killed between a tail hint and the publication of the entries before it leaves
/// the published LSN a little below the hint and above the session's cut (a failure floor is
/// at or below the cut): the open writes back from the hint's entry, not the whole log from
/// the head.
#[test]
fn a_kill_between_a_tail_hint_and_its_publication_costs_no_rewrite_from_the_head() {
    let opts = Options::new().tail_hint_every(1);
    let media = SimMedia::new(1 << 20, P);
    let obs = media.observer();
    let log = Log::create_on(media, &opts).unwrap();
    for i in 0..100 {
        log.append(&payload(i, 1000)).unwrap();
    }
    let next = log.next_lsn();
    drop(log);
    let mut img = obs.snapshot();
    // The hint names the last entry; the one before it is published, not the last.
    set_published_word(&mut img, next - 2);
    let media = SimMedia::from_image(&img, P);
    let obs = media.observer();
    let log = Log::open_on(media, &opts).unwrap();
    assert_eq!(log.next_lsn(), next);
    assert_eq!(
        log.recovery().scanned_from,
        next - 1,
        "the scan began at the hint"
    );
    let (ops, _) = obs.ops_range(0, obs.ops());
    let rewritten: usize = ops
        .iter()
        .filter_map(|op| match op {
            pmem_sim::Op::Rewrite { len, .. } => Some(*len),
            _ => None,
        })
        .sum();
    assert!(
        (1000..3 * 4096).contains(&rewritten),
        "the open rewrote {rewritten} bytes (the log holds 100 entries of 1000 bytes)"
    );
}

/// Appends acknowledged and then lost (in msync mode the writer cannot vouch for them: their
/// write-back failed, or their bytes were damaged since) leave the published LSN above the
/// log's end. A writable open takes those LSNs with padding entries before any append, so that
/// no LSN is given to a second entry; and at every crash point of that open and of the append
/// after it, the next writable open either holds the padding or still finds the LSNs missing
/// and pads them: it never gives them out again.
#[test]
fn lsns_acknowledged_and_lost_are_never_given_out_again() {
    let opts = Options::new();
    let len = 100;
    let media = SimMedia::new(1 << 20, P);
    let obs = media.observer();
    let log = Log::create_on(media, &opts).unwrap();
    for i in 1..=10 {
        log.append(&payload(i, len)).unwrap();
    }
    drop(log);
    // Entries 8 to 10 gone (zeros read as the log's clean end), the published word still 11.
    let mut img = obs.snapshot();
    let entry = daxlog::format::entry_len(len);
    let lost = daxlog::format::DATA_OFFSET + 7 * entry;
    img[lost..lost + 3 * entry].fill(0);

    let media = SimMedia::from_image(&img, P);
    let obs = media.observer();
    let from = obs.ops();
    let log = Log::open_on(media, &opts).unwrap();
    assert_eq!(log.recovery().published_missing, Some((8, 10)));
    assert_eq!(
        log.next_lsn(),
        11,
        "the open took LSNs 8 to 10 with padding"
    );
    assert!(log.read(8).is_none() && log.read(10).is_none());
    assert_eq!(log.append(b"after").unwrap(), 11);
    drop(log);
    let log = Log::open_on(obs.reopen(), &opts).unwrap();
    assert_eq!(
        log.recovery().published_missing,
        None,
        "the padding is found"
    );
    let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
    assert_eq!(lsns, [1, 2, 3, 4, 5, 6, 7, 11]);
    drop(log);

    let run = obs.run_from(img, from);
    let (images, bad) = sweep(&run, 0, Model::Msync, |img| {
        let outcome = Log::open_on(SimMedia::from_image(img, P), &opts).and_then(|log| {
            let held: Vec<(u64, Vec<u8>)> =
                log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
            Ok((held, log.next_lsn(), log.append(b"next")?))
        });
        let ok = match &outcome {
            Ok((held, next, given)) => {
                let (before, rest) = held.split_at(held.len().min(7));
                before
                    .iter()
                    .enumerate()
                    .all(|(k, (l, p))| *l == k as u64 + 1 && *p == payload(k + 1, len))
                    && before.len() == 7
                    && rest.iter().all(|(l, p)| *l == 11 && p == b"after")
                    && *next >= 11
                    && *given == *next
            }
            Err(_) => false,
        };
        match outcome {
            _ if ok => Ok(()),
            o => Err(format!(
                "{:?}",
                o.map(|(h, n, g)| (h.iter().map(|e| e.0).collect::<Vec<_>>(), n, g))
            )),
        }
    });
    assert!(images > 0, "no crash image checked");
    assert!(
        bad.is_empty(),
        "{} of {images} crash images give an LSN out again or lose entries, e.g. {}",
        bad.len(),
        bad[0]
    );
}

/// `kept` entries of `len` bytes survive, the `lost` after them are zeroed (acknowledged: the
/// published word says so): the image, written by an msync-mode writer.
fn lost_image(kept: usize, lost: usize, len: usize) -> Vec<u8> {
    let media = SimMedia::new(1 << 20, P);
    let obs = media.observer();
    let log = Log::create_on(media, &Options::new()).unwrap();
    for i in 1..=kept + lost {
        log.append(&payload(i, len)).unwrap();
    }
    drop(log);
    let mut img = obs.snapshot();
    let e = daxlog::format::entry_len(len);
    let at = DATA_OFFSET + kept * e;
    img[at..at + lost * e].fill(0);
    img
}

/// Every crash image of a writable open of `img` (opened with `persistence`, crash images of
/// `model`) that pads the LSNs from `next` up to `published`, and of the writes of `after`
/// (called on that open's log): each must open, and its next append must get an LSN no lower
/// than `published`. Returns the failures and the images checked.
fn every_crash_of_a_padding_open(
    img: Vec<u8>,
    persistence: Persistence,
    model: Model,
    opts: &Options,
    (next, published): (u64, u64),
    after: impl FnOnce(&Log<SimMedia>),
) -> (Vec<String>, usize) {
    let media = SimMedia::from_image(&img, persistence);
    let obs = media.observer();
    let from = obs.ops();
    let log = Log::open_on(media, opts).unwrap();
    assert_eq!(
        log.recovery().published_missing,
        Some((next, published - 1))
    );
    assert_eq!(log.next_lsn(), published, "every lost LSN padded");
    assert!((next..published).all(|l| log.read(l).is_none()));
    after(&log);
    drop(log);
    let run = obs.run_from(img, from);
    let (images, bad) = sweep(&run, 0, model, |img| {
        match Log::open_on(SimMedia::from_image(img, persistence), opts)
            .and_then(|log| log.append(b"new"))
        {
            Ok(lsn) if lsn >= published => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    (bad, images)
}

/// The padding of many lost LSNs spans pages (msync) or cache lines (a CPU-flush opener after
/// an msync writer): a power failure may keep any of them, and none of what it can leave is
/// taken for an acknowledged entry past damage (each padding entry is durable before the next
/// is stored), nor lowers the published word below an LSN not yet padded.
#[test]
fn padding_that_spans_pages_and_lines_survives_every_crash() {
    for (persistence, model, lost) in [(P, Model::Msync, 20), (Persistence::Clwb, Model::Line, 4)] {
        // 128-byte entries: 30 kept end at 7936; 20 lost make 480 bytes of padding, across
        // the page boundary at 8192.
        let img = lost_image(30, lost, 100);
        let published = 31 + lost as u64;
        let (bad, images) = every_crash_of_a_padding_open(
            img,
            persistence,
            model,
            &Options::new(),
            (31, published),
            |_| {},
        );
        assert!(images > 100, "{persistence:?}: {images} images");
        assert!(
            bad.is_empty(),
            "{persistence:?}: {} of {images} crash images fail to open or give a lost LSN out \
             again, e.g. {}",
            bad.len(),
            bad[0]
        );
    }
}

/// The same where the free space is in two pieces (the end of the file and before the head),
/// so that the padding wraps.
#[test]
fn padding_that_wraps_survives_every_crash() {
    let data = DATA_OFFSET;
    // 16 KiB: data from 4096 to 16384. 40 empty entries first (truncated later: 960 bytes
    // before the head), then entries up to 144 bytes before the end of the file; those
    // survive. Then 4 entries of 8 bytes (32 bytes each, 16 left before the end) and, wrapped,
    // 6 more: lost.
    let (head_room, tail_piece, k) = (40, 144, 4);
    let opts = Options::new().capacity(16 << 10);
    let media = SimMedia::new(16 << 10, P);
    let obs = media.observer();
    let log = Log::create_on(media, &opts).unwrap();
    for _ in 0..head_room {
        log.append(b"").unwrap();
    }
    let start = data + head_room * 24;
    let end = (16 << 10) - tail_piece;
    let big = daxlog::format::entry_len(1000);
    let fit = (end - start) / big;
    for _ in 0..fit {
        log.append(&[1u8; 1000]).unwrap();
    }
    let rest = end - start - fit * big;
    assert!(rest >= 24 && rest.is_multiple_of(8), "{rest}");
    let kept = log.append(&vec![2u8; rest - 24]).unwrap();
    log.truncate_before(head_room as u64 + 1).unwrap();
    let small: [&[u8]; 10] = [b"12345678"; 10];
    let lost = log.append_batch(&small[..k]).unwrap();
    assert_eq!(lost.start, kept + 1);
    assert_eq!(log.append_batch(&small[k..]).unwrap(), lost.end..kept + 11);
    drop(log);
    let mut img = obs.snapshot();
    assert_eq!(&img[data + 24..data + 32], b"12345678", "wrapped");
    img[end..end + k * 32].fill(0);
    img[data..data + (10 - k) * 32].fill(0);
    let (bad, images) =
        every_crash_of_a_padding_open(img, P, Model::Msync, &opts, (kept + 1, kept + 11), |log| {
            let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
            let want: Vec<u64> = (head_room as u64 + 1..=kept).collect();
            assert_eq!(lsns, want);
        });
    assert!(images > 0);
    assert!(
        bad.is_empty(),
        "{} of {images} crash images fail to open or give a lost LSN out again, e.g. {}",
        bad.len(),
        bad[0]
    );
}

/// The padding's own write-back fails, reported to its sync: the open fails, and lowers the
/// published word to the failure floor, the session's cut, where the log ended. The next open
/// in the same page cache writes what it finds of the session again from there (the padding
/// stored before the failure, in pages the kernel marked clean and never wrote), so that a
/// power failure after it has returned loses nothing it accepted. (The LSNs not padded then
/// are given to new entries: the word no longer names them. A second failure inside the
/// recovery from the first is where padding stops.)
#[test]
fn a_failed_write_back_of_the_padding_is_written_again_by_the_next_open() {
    let len = 100;
    let (kept, lost) = (7usize, 400usize);
    let img = lost_image(kept, lost, len);
    let at = DATA_OFFSET + kept * daxlog::format::entry_len(len);
    let media = SimMedia::from_image(&img, P);
    let obs = media.observer();
    let from = obs.ops();
    pmem_sim::set_gate(Some(Arc::new(ArmAtPadding {
        obs: obs.clone(),
        at,
        done: AtomicBool::new(false),
    })));
    let first = Log::open_on(media, &Options::new());
    pmem_sim::set_gate(None);
    assert!(first.is_err(), "the padding's drain failed");
    drop(first);
    obs.fail_drains(false);
    let log = Log::open_on(obs.reopen(), &Options::new()).unwrap();
    let reopened = obs.ops();
    let next = log.next_lsn();
    assert!(
        next > kept as u64 + 1,
        "the padding stored before the failure is found"
    );
    assert!((kept as u64 + 1..next).all(|l| log.read(l).is_none()));
    let want: Vec<Vec<u8>> = (1..=kept).map(|i| payload(i, len)).collect();
    assert_eq!(entries_of(&log), want);
    assert_eq!(log.append(b"after").unwrap(), next);
    drop(log);
    let with_after: Vec<Vec<u8>> = want.iter().cloned().chain([b"after".to_vec()]).collect();
    let run = obs.run_from(img, from);
    let (images, bad) = sweep(
        &run,
        reopened - from,
        Model::Msync,
        |img| match Log::open_on(SimMedia::from_image(img, P), &Options::new())
            .map(|log| (entries_of(&log), log.next_lsn()))
        {
            Ok((got, n)) if got == want && n >= next => Ok(()),
            Ok((got, n)) if got == with_after && n == next + 1 => Ok(()),
            other => Err(format!("{:?}", other.map(|(g, n)| (g.len(), n)))),
        },
    );
    assert!(images > 0);
    assert!(
        bad.is_empty(),
        "{} of {images} crash images after the second open fail to open or lose entries, e.g. {}",
        bad.len(),
        bad[0]
    );
}

/// The payloads of `log`'s entries, padding skipped.
fn entries_of(log: &Log<SimMedia>) -> Vec<Vec<u8>> {
    log.iter().map(|e| e.payload.to_vec()).collect()
}

/// Every crash image (of `model`) of `run` from its crash point `first` on, given to `check`,
/// which says what is wrong with it, if anything. Returns the images checked and the
/// failures, each named by its crash point, the operation before it and the image.
fn sweep(
    run: &pmem_sim::Run,
    first: usize,
    model: Model,
    mut check: impl FnMut(&[u8]) -> Result<(), String>,
) -> (usize, Vec<String>) {
    let (mut images, mut bad) = (0, Vec::new());
    run.for_each_point(|point, st| {
        if point < first {
            return;
        }
        let ci = st.crash_images(model, &GenConfig::default(), point as u64);
        for i in 0..ci.len() {
            images += 1;
            if let Err(e) = check(&ci.image(i)) {
                bad.push(format!(
                    "point {point} ({}): {}: {e}",
                    run.ops
                        .get(point.saturating_sub(1))
                        .map_or("start".into(), |o| o.describe()),
                    ci.describe(i)
                ));
            }
        }
    });
    (images, bad)
}

/// A session that began with padding has the failure floor of any other: its cut. A
/// write-back failure reported to a later tail hint's sync lowers the word there, and the next
/// open writes the session again from it, padding included; a power failure after that open
/// loses none of the entries it accepted. (The same steps without lost entries: case
/// "reported to a later tail hint's sync" of `a_failed_write_back_is_written_again_by_the_next_open`.)
#[test]
fn a_session_that_began_with_padding_has_its_cut_for_failure_floor() {
    for lose in [false, true] {
        let opts = Options::new().tail_hint_every(1);
        let len = 6000;
        let media = SimMedia::new(1 << 20, P);
        let obs = media.observer();
        let log = Log::create_on(media, &Options::new()).unwrap();
        for i in 0..5 {
            log.append(&payload(i, len)).unwrap();
        }
        drop(log);
        let mut img = obs.snapshot();
        if lose {
            // The last two entries lost; the word still says 6.
            let e = daxlog::format::entry_len(len);
            img[DATA_OFFSET + 3 * e..DATA_OFFSET + 5 * e].fill(0);
        }
        let media = SimMedia::from_image(&img, P);
        let obs = media.observer();
        let from = obs.ops();
        let log = Log::open_on(media, &opts).unwrap();
        assert_eq!(log.next_lsn(), 6);
        let armed = obs.ops();
        obs.fail_writeback(4);
        let mut want: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
        for i in 0..2 {
            let p = payload(10 + i, len);
            if log.append(&p).is_ok() {
                want.push(p);
            }
        }
        drop(log);
        let end = obs.ops();
        let reported = obs.ops_range(armed, end).0.contains(&Op::DrainFailed);
        assert!(reported);
        obs.fail_drains(false);
        let log = Log::open_on(obs.reopen(), &opts).unwrap();
        let reopened = obs.ops();
        let accepted: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
        assert_eq!(accepted, want, "lose={lose}");
        drop(log);
        let run = obs.run_from(img, from);
        let (images, bad) = sweep(&run, reopened - from, Model::Msync, |img| {
            let r = Log::open_on_read_only(SimMedia::from_image(img, P), &opts)
                .map(|log| entries_of(&log));
            match r {
                Ok(got) if got == accepted => Ok(()),
                other => {
                    let w = Log::open_on(SimMedia::from_image(img, P), &opts).and_then(|log| {
                        Ok((log.recovery().published_missing, log.append(b"new")?))
                    });
                    Err(format!(
                        "{:?} entries, want {}; writable open then (published_missing, LSN of \
                         next append): {w:?}",
                        other.map(|g| g.len()),
                        accepted.len()
                    ))
                }
            }
        });
        assert!(images > 0);
        assert!(
            bad.is_empty(),
            "lose={lose}: {} of {images} crash images after the reopen lose accepted entries, e.g.\n{}",
            bad.len(),
            bad.iter().take(3).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

/// Arms a failed write-back (reported to its own drain) at the first padding store at or past
/// `at`.
struct ArmAtPadding {
    obs: Observer,
    at: usize,
    done: AtomicBool,
}

impl pmem_sim::Gate for ArmAtPadding {
    fn before(&self, op: &Op) {
        let hit = match op {
            Op::StoreNt { off, .. } => *off >= self.at,
            Op::Store { off, data } => *off >= self.at && data.iter().any(|&b| b != 0),
            _ => false,
        };
        if hit && !self.done.swap(true, Ordering::SeqCst) {
            self.obs.fail_writeback(1);
        }
    }
}

/// The published word has no checksum: a bit flipped in it high enough names more missing LSNs
/// than a log takes with padding (4,096, and no more than half its free space takes), and the
/// open goes on from where the entries end, as where nothing is missing; a low one names a
/// few, which are padded (LSNs skipped, nothing lost).
#[test]
fn a_damaged_published_word_does_not_fill_the_log_with_padding() {
    for (cap, bit, padded) in [(16 << 20, 19, 0), (16 << 20, 4, 16), (64 << 10, 11, 0)] {
        let opts = Options::new().capacity(cap as u64);
        let media = SimMedia::new(cap, P);
        let obs = media.observer();
        let log = Log::create_on(media, &opts).unwrap();
        for i in 0..10 {
            log.append(&payload(i, 100)).unwrap();
        }
        let free = log.free_bytes();
        drop(log);
        let mut img = obs.snapshot();
        let word = published_word(&img);
        assert_eq!(word, 11);
        let damaged = word ^ (1 << bit);
        set_published_word(&mut img, damaged);
        let log = Log::open_on(SimMedia::from_image(&img, P), &opts).unwrap();
        assert_eq!(
            log.recovery().published_missing,
            Some((11, damaged - 1)),
            "bit {bit}"
        );
        assert_eq!(log.next_lsn(), 11 + padded, "bit {bit}");
        assert_eq!(log.free_bytes(), free - 24 * padded, "bit {bit}");
    }
}

/// Padding that does not all fit. The free space an open judges the padding by includes the
/// end of the data area a wrap left unused, where no entry goes until the head has passed it:
/// in a wrapped log whose tail is close to its head, a published word a few LSNs too high
/// (damaged, or LSNs lost) is judged worth padding, and the padding meets `Full`. The open
/// pads what fits, lowers the word durably to where it ends (the rest goes to new entries,
/// with a warning), and at every crash point the log opens, its next LSN no lower than where
/// the padding began.
#[test]
fn padding_without_room_for_all_lowers_the_word_durably() {
    let cap = 64 << 10;
    let opts = Options::new().capacity(cap as u64);
    let media = SimMedia::new(cap, P);
    let obs = media.observer();
    let log = Log::create_on(media, &opts).unwrap();
    // About 6 KiB left at the tail, then the front freed: an 8 KiB entry wraps, and leaves
    // those 6 KiB unused until the head passes them; then small entries until the log is full.
    let mut i = 0;
    while log.room().at_tail >= 6 << 10 {
        log.append(&payload(i, 1000)).unwrap();
        i += 1;
    }
    log.truncate_before(log.next_lsn() - 20).unwrap();
    log.append(&payload(i, 8 << 10)).unwrap();
    while log.append(&payload(i, 8)).is_ok() {
        i += 1;
    }
    let next = log.next_lsn();
    let free = log.free_bytes();
    assert!(
        free >= 5 << 10 && log.room().at_tail < 32,
        "{free} {:?}",
        log.room()
    );
    drop(log);
    let mut img = obs.snapshot();
    let word = published_word(&img);
    assert_eq!(word, next);
    let published = word + 16;
    set_published_word(&mut img, published);

    let media = SimMedia::from_image(&img, P);
    let obs = media.observer();
    let from = obs.ops();
    let log = Log::open_on(media, &opts).unwrap();
    assert_eq!(
        log.recovery().published_missing,
        Some((next, published - 1))
    );
    let padded = log.next_lsn() - next;
    assert!(
        padded < 16,
        "{padded} of 16 padded: the case needs a log with no room"
    );
    drop(log);
    let after = obs.snapshot();
    let word = published_word(&after);
    assert_eq!(
        word,
        next + padded,
        "the word is lowered to where the padding ends"
    );
    let log = Log::open_on(SimMedia::from_image(&after, P), &opts).unwrap();
    assert_eq!(log.recovery().published_missing, None);
    assert_eq!(log.next_lsn(), next + padded);
    drop(log);

    let run = obs.run_from(img, from);
    let (images, bad) = sweep(&run, 0, Model::Msync, |img| {
        let log = Log::open_on(SimMedia::from_image(img, P), &opts).map_err(|e| e.to_string())?;
        let missing = log.recovery().published_missing;
        if missing.is_some_and(|(_, last)| last != published - 1) {
            return Err(format!("missing {missing:?}"));
        }
        // (The log is full: what the next append would get.)
        match log.next_lsn() {
            lsn if lsn >= next => Ok(()),
            lsn => Err(format!("next LSN {lsn}")),
        }
    });
    assert!(images > 0);
    assert!(
        bad.is_empty(),
        "{} of {images}: {:#?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}
