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
//! where the session began).

use daxlog::{Log, Options, Persistence};
use pmem_sim::{GenConfig, Model, Run, SimMedia};

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
    let media = log.into_media();
    let failed_session = obs.ops();
    assert!(
        obs.ops_range(armed, failed_session)
            .0
            .contains(&pmem_sim::Op::DrainFailed),
        "the failure was never reported: {steps:?}"
    );
    // The disk works again; a new open of the file.
    obs.fail_drains(false);
    let log = Log::open_on(media, opts).unwrap();
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

    let (ops, threads) = obs.ops_range(from, obs.ops());
    let run = Run {
        initial,
        persistence: P,
        ops,
        threads,
    };
    let with_after: Vec<Vec<u8>> = accepted
        .iter()
        .cloned()
        .chain([b"after".to_vec()])
        .collect();
    let (mut images, mut bad, mut lost) = (0, Vec::new(), 0);
    run.for_each_point(|point, st| {
        let at = from + point;
        if (armed..=failed_session).contains(&at) {
            lost = lost.max(st.lost_pieces());
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
        "the failed write-back lost nothing: the run tests nothing"
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
    let cases: [(&str, &Options, usize, &[Step]); 5] = [
        ("reported to its own sync", &Options::new(), 1, &[Append]),
        (
            "reported to the next append's sync",
            &Options::new(),
            2,
            &[Append, Append],
        ),
        (
            "reported to a tail hint's sync, no append after",
            &hints,
            2,
            &[Append],
        ),
        // Drains: 6, its hint, 7, its hint (which takes the report): the reopen's scan starts
        // at the hint of 7, past entry 6.
        (
            "reported to a later tail hint's sync",
            &hints,
            4,
            &[Append, Append],
        ),
        // Drains: 6 to 75, the truncation's three barriers, 71, and 72 (which takes the
        // report): the reopen's cut is the truncation's, and the index of its scan has an
        // entry (64) between the lost one and the cut.
        (
            "reported after a suffix truncation",
            &Options::new(),
            75,
            &truncation,
        ),
    ];
    let only = std::env::var("CRASH_WRITEBACK_CASE").ok();
    for (what, opts, report_at, steps) in cases {
        if only.as_deref().is_some_and(|o| !what.contains(o)) {
            continue;
        }
        for len in [100, 6000] {
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
