//! Which stores each kind of append uses in the CPU-flush modes: single appends and large
//! batches follow `Log::nt_threshold`, small batches (more than one entry, at most 4 KiB on
//! media, stored as one run) `Log::batch_nt_threshold`; explicit options and the host's
//! calibration set them as documented.

mod common;

use std::sync::atomic::Ordering;

use common::media::FaultyMedia;
use daxlog::{Log, Media, Options, PersistenceChoice};

/// Non-temporal stores made by `f` on `log`'s media.
fn nt_stores_of(log: &Log<FaultyMedia>, f: impl FnOnce()) -> usize {
    let before = log.media().nt_stores.load(Ordering::SeqCst);
    f();
    log.media().nt_stores.load(Ordering::SeqCst) - before
}

/// Appends one entry of 64 B, a batch of 16 x 64 B (1408 B on media: one run) and a batch of
/// 2 x 3000 B (6048 B: stored entry by entry), and returns the non-temporal stores of each;
/// every entry reads back.
fn stores_by_kind(log: &Log<FaultyMedia>) -> [usize; 3] {
    let small = common::payload(1, 64);
    let large = common::payload(2, 3000);
    let single = nt_stores_of(log, || {
        log.append(&small).unwrap();
    });
    let batch = nt_stores_of(log, || {
        log.append_batch(&[&small[..]; 16]).unwrap();
    });
    let big_batch = nt_stores_of(log, || {
        log.append_batch(&[&large[..]; 2]).unwrap();
    });
    let lens: Vec<usize> = log.iter().map(|e| e.payload.len()).collect();
    assert_eq!(lens, [[64; 17].as_slice(), &[3000, 3000]].concat());
    for e in log.iter() {
        let want = if e.payload.len() == 64 {
            &small
        } else {
            &large
        };
        assert_eq!(e.payload, &want[..], "LSN {}", e.lsn);
    }
    [single, batch, big_batch]
}

/// [`stores_by_kind`] on a new log with these thresholds.
fn stores_with(nt_threshold: usize, batch_nt_threshold: usize) -> [usize; 3] {
    let opts = Options::new()
        .nt_threshold(nt_threshold)
        .batch_nt_threshold(batch_nt_threshold);
    let log = Log::create_on(FaultyMedia::new(1 << 20), &opts).unwrap();
    assert_eq!(
        (log.nt_threshold(), log.batch_nt_threshold()),
        (nt_threshold, batch_nt_threshold)
    );
    stores_by_kind(&log)
}

#[test]
fn small_batches_follow_their_own_threshold() {
    let [single, batch, big_batch] = stores_with(usize::MAX, 0);
    assert_eq!(single, 0, "a single append used non-temporal stores");
    assert!(batch > 0, "a small batch used no non-temporal stores");
    assert_eq!(big_batch, 0, "a batch over 4 KiB used non-temporal stores");

    let [single, batch, big_batch] = stores_with(0, usize::MAX);
    assert!(single > 0, "a single append used no non-temporal stores");
    assert_eq!(batch, 0, "a small batch used non-temporal stores");
    assert!(
        big_batch > 0,
        "a batch over 4 KiB used no non-temporal stores"
    );

    // From 1408 B on media: the batch of 16 x 64 B is at the threshold, or just below it.
    let [_, batch, _] = stores_with(usize::MAX, 1408);
    assert!(
        batch > 0,
        "a batch at the threshold used no non-temporal stores"
    );
    let [_, batch, _] = stores_with(usize::MAX, 1409);
    assert_eq!(
        batch, 0,
        "a batch below the threshold used non-temporal stores"
    );
}

#[test]
fn an_explicit_nt_threshold_sets_both_and_the_host_chooses_the_rest() {
    let log = Log::create_on(FaultyMedia::new(1 << 20), &Options::new().nt_threshold(512)).unwrap();
    assert_eq!((log.nt_threshold(), log.batch_nt_threshold()), (512, 512));
    assert!(log.calibration().is_none());

    // A log file in a CPU-flush mode: what is not set comes from the host's calibration.
    let dir = tempfile::tempdir_in(common::test_dirs()[0].clone()).unwrap();
    let cpu = Options::new().persistence(PersistenceChoice::ForceCpuFlush);
    let log = Log::create(dir.path().join("a.dax"), &cpu).unwrap();
    if !log.persistence().is_cpu_flush() {
        eprintln!("skipped: no cache flush instruction on this CPU");
        return;
    }
    let c = log.calibration().expect("calibrated");
    assert_eq!(c.batch_timings.len(), daxlog::calibrate::BATCH_COUNTS.len());
    assert_eq!(
        (log.nt_threshold(), log.batch_nt_threshold()),
        (c.nt_threshold, c.batch_nt_threshold)
    );
    drop(log);
    let log = Log::create(
        dir.path().join("b.dax"),
        &cpu.clone().batch_nt_threshold(100),
    )
    .unwrap();
    assert_eq!(
        (log.nt_threshold(), log.batch_nt_threshold()),
        (c.nt_threshold, 100)
    );
    assert!(log.calibration().is_some());
    drop(log);
    let log = Log::create(
        dir.path().join("c.dax"),
        &cpu.nt_threshold(usize::MAX).batch_nt_threshold(100),
    )
    .unwrap();
    assert_eq!(
        (log.nt_threshold(), log.batch_nt_threshold()),
        (usize::MAX, 100)
    );
    assert!(
        log.calibration().is_none(),
        "calibrated with both thresholds set"
    );
}

#[test]
fn msync_mode_takes_explicit_thresholds_and_a_disk_takes_none() {
    for dir in common::temp_dirs() {
        let path = dir.path().join("log.dax");
        let make = |opts: Options| {
            let log = Log::create(
                &path,
                &opts
                    .persistence(PersistenceChoice::ForceMsync)
                    .overwrite(true),
            )
            .unwrap();
            assert!(log.calibration().is_none(), "calibrated in msync mode");
            (
                log.media().stores_by_write(),
                log.nt_threshold(),
                log.batch_nt_threshold(),
            )
        };
        let (by_write, single, batch) = make(Options::new());
        if by_write {
            // Stores are `pwrite`s: no non-temporal path, whatever the options say.
            assert_eq!((single, batch), (usize::MAX, usize::MAX));
            let (_, single, batch) = make(Options::new().nt_threshold(0).batch_nt_threshold(0));
            assert_eq!(
                (single, batch),
                (usize::MAX, usize::MAX),
                "{}",
                dir.path().display()
            );
            continue;
        }
        // Memory (tmpfs): non-temporal stores from 64 KiB unless set.
        assert_eq!((single, batch), (64 << 10, 64 << 10));
        let (_, single, batch) = make(Options::new().nt_threshold(256));
        assert_eq!((single, batch), (256, 256));
        let (_, single, batch) = make(Options::new().batch_nt_threshold(128));
        assert_eq!((single, batch), (64 << 10, 128));
        let (_, single, batch) = make(
            Options::new()
                .nt_threshold(0)
                .batch_nt_threshold(usize::MAX),
        );
        assert_eq!((single, batch), (0, usize::MAX));
    }
}
