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

use daxlog::{Log, Options, Persistence};
use pmem_sim::{GenConfig, Model, SimMedia};

const P: Persistence = Persistence::Msync;

/// Entry `i`: `len` bytes of `i`.
fn payload(i: usize, len: usize) -> Vec<u8> {
    vec![(i % 251) as u8; len]
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
    use daxlog::format::PUBLISHED_OFFSET;
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
    img[PUBLISHED_OFFSET..PUBLISHED_OFFSET + 8].copy_from_slice(&(next - 2).to_le_bytes());
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
