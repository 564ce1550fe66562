//! Creating a log file: it appears at its path only once complete, never through a file or a
//! link it did not create, private by default; replacing a log waits until the new one is
//! complete. Also: a first LSN other than 1, padding that keeps LSNs across a hole, and the
//! allocation check of a writable open.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{has_unwritten_extents, payload, temp_dirs};
use daxlog::{Error, Log, Options, PersistenceChoice, RecoveryMode};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn small() -> Options {
    Options::new().capacity(1 << 20)
}

/// Guards against a failed create leaving a huge half-made file behind (it used to be created
/// at its path, then allocated): the allocation of a log larger than the file system fails and
/// nothing at all is left in the directory.
#[test]
fn failed_create_leaves_nothing() {
    for dir in temp_dirs() {
        let path = dir.path().join("huge.dax");
        // 64 TiB: more than any test machine's /dev/shm or temporary directory holds.
        let err = Log::create(&path, &Options::new().capacity(1 << 46)).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Io {
                    op: "fallocate",
                    ..
                }
            ),
            "{}: {err}",
            dir.path().display()
        );
        assert_eq!(err.path(), Some(path.as_path()));
        assert_eq!(names(dir.path()), Vec::<String>::new(), "{err}");
    }
}

/// Options a log cannot be opened or created with are refused with an error that names the
/// file, as every other error of an open does: a writable salvage, a first LSN of 0.
#[test]
fn unsupported_options_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.dax");
    let log = Log::create(&path, &small()).unwrap();
    log.append(b"a").unwrap();
    drop(log);
    let salvage = Options::new().recovery_mode(RecoveryMode::Salvage);
    let err = Log::open(&path, &salvage).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert_eq!(err.path(), Some(path.as_path()));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: unsupported: salvage recovery on a writable open (open it read-only)",
            path.display()
        )
    );
    // The file was left as it was, and a read-only salvage still works.
    let log = Log::open_read_only(&path, &salvage).unwrap();
    assert_eq!(log.salvage(|_, _| {}).unwrap(), []);
    drop(log);
    let log = Log::open(&path, &Options::new()).unwrap();
    let err = log.salvage(|_, _| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: unsupported: salvage on a writable log (open it read-only)",
            path.display()
        )
    );
    drop(log);

    let zero = dir.path().join("zero.dax");
    let err = Log::create(&zero, &small().first_lsn(0)).unwrap_err();
    assert_eq!(err.path(), Some(zero.as_path()));
    assert_eq!(
        err.to_string(),
        format!(
            "{}: unsupported: a first LSN of 0 or above 2^63 (LSNs start at 1)",
            zero.display()
        )
    );
    assert!(!zero.exists());
}

/// Guards against `--force` destroying the old log before the new one exists: when the new
/// one cannot be made, the old log is untouched and still opens with its entries.
#[test]
fn failed_overwrite_keeps_the_old_log() {
    for dir in temp_dirs() {
        let path = dir.path().join("old.dax");
        let log = Log::create(&path, &small()).unwrap();
        for l in 1..=5 {
            log.append(&payload(l, 100)).unwrap();
        }
        drop(log);
        let err = Log::create(&path, &Options::new().capacity(1 << 46).overwrite(true));
        assert!(err.is_err());
        assert_eq!(names(dir.path()), ["old.dax"]);
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!(log.len(), 5);
        assert_eq!(log.read(5).unwrap().payload, payload(5, 100));
    }
}

#[test]
fn overwrite_replaces_a_complete_log() {
    for dir in temp_dirs() {
        let path = dir.path().join("l.dax");
        let log = Log::create(&path, &small()).unwrap();
        log.append(b"old").unwrap();
        let old_uuid = log.uuid();
        drop(log);
        let log = Log::create(&path, &small().overwrite(true)).unwrap();
        assert_ne!(log.uuid(), old_uuid);
        assert!(log.is_empty());
        log.append(b"new").unwrap();
        drop(log);
        assert_eq!(names(dir.path()), ["l.dax"]);
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!(log.read(1).unwrap().payload, b"new");
    }
}

/// Guards against `create` writing through a link that someone planted at the path (it used
/// to check the path, then open it with `O_CREAT`, following the link): without overwrite the
/// path is refused, with overwrite the link itself is replaced; the target is never written.
#[test]
fn create_never_writes_through_a_planted_symlink() {
    for dir in temp_dirs() {
        let target = dir.path().join("precious");
        std::fs::write(&target, b"not yours").unwrap();
        let path = dir.path().join("log.dax");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        match Log::create(&path, &small()) {
            Err(Error::AlreadyExists { path: p }) => assert_eq!(p, path),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
        // A dangling link is refused too (O_CREAT would have created its target).
        let dangling = dir.path().join("dangling.dax");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            Log::create(&dangling, &small()),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(!dir.path().join("nowhere").exists());
        // With overwrite, the link is replaced by the new log; its target is untouched.
        let log = Log::create(&path, &small().overwrite(true)).unwrap();
        log.append(b"entry").unwrap();
        drop(log);
        assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "the link itself was replaced");
        assert_eq!(meta.len(), 1 << 20);
    }
}

#[test]
fn new_logs_are_private_unless_asked() {
    for dir in temp_dirs() {
        let path = dir.path().join("private.dax");
        drop(Log::create(&path, &small()).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let shared = dir.path().join("shared.dax");
        drop(Log::create(&shared, &small().mode(0o640)).unwrap());
        // (A umask may remove bits, never add them.)
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0);
        assert_eq!(mode & 0o600, 0o600);
    }
}

#[test]
fn a_log_can_start_at_any_lsn() {
    for dir in temp_dirs() {
        let path = dir.path().join("from100.dax");
        let log = Log::create(&path, &small().first_lsn(100)).unwrap();
        assert_eq!(log.next_lsn(), 100);
        assert_eq!(log.first_lsn(), None);
        assert_eq!(log.append(b"a").unwrap(), 100);
        assert_eq!(log.append_batch(&[b"b", b"c"]).unwrap(), 101..103);
        drop(log);
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!((log.first_lsn(), log.last_lsn()), (Some(100), Some(102)));
        assert_eq!(log.recovery().entries, 3);
        assert_eq!(log.read(101).unwrap().payload, b"b");
        assert!(log.read(99).is_none());
        let lsns: Vec<u64> = log.iter_from(101).map(|e| e.lsn).collect();
        assert_eq!(lsns, [101, 102]);
        assert!(matches!(
            Log::create(dir.path().join("zero"), &small().first_lsn(0)),
            Err(Error::Unsupported { .. })
        ));
    }
}

/// Padding keeps the LSNs of what follows a hole; readers skip it, counts include it, and it
/// survives recovery.
#[test]
fn padding_keeps_lsns_across_a_hole() {
    for dir in temp_dirs() {
        let path = dir.path().join("pad.dax");
        let log = Log::create(&path, &small().first_lsn(10)).unwrap();
        assert_eq!(log.append(b"ten").unwrap(), 10);
        // More than one group of padding entries.
        assert_eq!(log.append_padding(500).unwrap(), 11..511);
        assert_eq!(log.append(b"five hundred eleven").unwrap(), 511);
        assert_eq!(log.append_padding(0).unwrap(), 512..512);
        drop(log);
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!(log.len(), 502);
        assert_eq!(log.recovery().entries, 502);
        let got: Vec<(u64, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
        assert_eq!(
            got,
            [
                (10, b"ten".to_vec()),
                (511, b"five hundred eleven".to_vec())
            ]
        );
        assert!(log.read(300).is_none());
        assert_eq!(log.read(511).unwrap().payload, b"five hundred eleven");
        assert_eq!(log.append(b"next").unwrap(), 512);
        drop(log);
        let ro = Log::open_read_only(&path, &Options::new()).unwrap();
        assert!(matches!(ro.append_padding(1), Err(Error::ReadOnly { .. })));
    }
}

/// A writable open allocates the holes of a sparse log file, so that no store into the mapping
/// can fault on a missing block (SIGBUS when the file system is full).
#[test]
fn writable_open_allocates_a_sparse_file() {
    for dir in temp_dirs() {
        let path = dir.path().join("sparse.dax");
        let log = Log::create(&path, &Options::new().capacity(4 << 20)).unwrap();
        log.append(b"kept").unwrap();
        drop(log);
        // Punch a hole into the free part of the data area.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // SAFETY: fallocate on a file descriptor we own; no memory is involved.
        let rc = unsafe {
            libc::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                1 << 20,
                2 << 20,
            )
        };
        if rc != 0 {
            eprintln!("{}: no hole punching here, skipped", dir.path().display());
            continue;
        }
        drop(f);
        let blocks = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
        assert!(blocks(&path) < 4 << 20, "the hole was punched");
        // A read-only open leaves it as it is (reads of holes are zeros).
        drop(Log::open_read_only(&path, &Options::new()).unwrap());
        assert!(blocks(&path) < 4 << 20);
        let log = Log::open(&path, &Options::new()).unwrap();
        assert!(blocks(&path) >= 4 << 20, "allocated: {}", blocks(&path));
        assert_eq!(log.read(1).unwrap().payload, b"kept");
    }
}

#[test]
fn durability_of_acknowledgements_is_reported() {
    for dir in temp_dirs() {
        let path = dir.path().join("d.dax");
        // No DAX mount among the test directories unless DAXLOG_TEST_DIR says so.
        let log = Log::create(&path, &small()).unwrap();
        assert!(log.is_durable(), "msync, or MAP_SYNC on a DAX mount");
        drop(log);
        let forced = Log::open(
            &path,
            &Options::new().persistence(PersistenceChoice::ForceCpuFlush),
        )
        .unwrap();
        assert_eq!(forced.is_durable(), forced.map_sync());
    }
}

/// Two creators that replace whatever is at a path, racing where nothing is yet, or a link
/// (which is replaced itself): the one that places its log second finds the other's log, which
/// a writer holds open, and is refused; it never renames it away from under that writer (whose
/// acknowledged appends would then go to an unlinked file).
#[test]
fn racing_creators_never_replace_a_log_held_open() {
    for link in [false, true] {
        racing_creators(link);
    }
}

fn racing_creators(link: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.dax");
    let (mut both, mut refused) = (0, 0);
    for run in 0..100 {
        let _ = std::fs::remove_file(&path);
        if link {
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &path).unwrap();
        }
        let start = std::sync::Barrier::new(2);
        let appended = std::sync::Barrier::new(2);
        let outcomes: Vec<Result<String, Error>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    let (path, start, appended) = (&path, &start, &appended);
                    s.spawn(move || {
                        start.wait();
                        let r = Log::create(path, &small().overwrite(true));
                        let r = r.map(|log| {
                            let p = format!("run {run}, creator {t}");
                            log.append(p.as_bytes()).unwrap();
                            // Both logs (if both were created) stay open until both appended.
                            appended.wait();
                            p
                        });
                        if r.is_err() {
                            appended.wait();
                        }
                        r
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let acked: Vec<&String> = outcomes.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert!(!acked.is_empty(), "link {link}, run {run}: {outcomes:?}");
        for r in &outcomes {
            if let Err(e) = r {
                assert!(
                    matches!(e, Error::Locked { .. }),
                    "link {link}, run {run}: {e}"
                );
                refused += 1;
            }
        }
        if acked.len() == 2 {
            both += 1;
        }
        let log = Log::open_read_only(&path, &Options::new()).unwrap();
        let held: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
        // Every acknowledged append is in the log at the path.
        for p in &acked {
            assert!(
                held.contains(&p.as_bytes().to_vec()),
                "link {link}, run {run}: {p:?} acknowledged, the log holds {held:?}"
            );
        }
    }
    assert_eq!(
        both, 0,
        "link {link}: {both} of 100 runs had both creators succeed"
    );
    // (The race was run, not avoided: most runs see the two creators overlap.)
    assert!(refused > 0, "link {link}: no creator was ever refused");
}

/// A program that holds a lock on its own directory (the caller itself, through another
/// descriptor, or a `flock DIR` script) does not keep a log from being created in it: the
/// creators' turn is not waited for long.
#[test]
fn a_locked_directory_does_not_keep_a_log_from_being_created() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let held = std::fs::File::open(dir.path()).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let path = dir.path().join("in-locked-dir.dax");
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Log::create(&p, &small()).and_then(|log| log.append(b"x")));
    });
    // (A bound only to report a hang as a failure.)
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the create waited for the directory's lock");
    assert_eq!(r.unwrap(), 1);
    drop(held);
    assert_eq!(names(dir.path()), ["in-locked-dir.dax"]);
}

/// `Options::prefill` writes every block of a new log once: no extent is left unwritten (a
/// log created without it has unwritten extents, on file systems that have them), and the log
/// works as any other.
#[test]
fn prefill_leaves_no_unwritten_block() {
    let mut checked = 0;
    for dir in temp_dirs() {
        let plain = dir.path().join("plain.dax");
        let filled = dir.path().join("filled.dax");
        // (16 MiB: without `prefill` a log writes its first chunks, 4 MiB, as it opens.)
        let opts = Options::new().capacity(16 << 20);
        drop(Log::create(&plain, &opts).unwrap());
        let log = Log::create(&filled, &opts.clone().prefill(true)).unwrap();
        let lsn = log.append(&payload(1, 3000)).unwrap();
        drop(log);
        let log = Log::open(&filled, &opts).unwrap();
        assert_eq!(log.read(lsn).unwrap().payload, payload(1, 3000));
        assert_eq!(log.len(), 1);
        drop(log);
        match (
            has_unwritten_extents(&plain),
            has_unwritten_extents(&filled),
        ) {
            (Some(true), Some(unwritten)) => {
                assert!(
                    !unwritten,
                    "{}: unwritten extents after prefill",
                    filled.display()
                );
                checked += 1;
            }
            other => eprintln!(
                "note: {}: cannot tell unwritten extents here ({other:?}); not checked",
                dir.path().display()
            ),
        }
    }
    eprintln!("prefill checked on {checked} file system(s)");
}

/// A name longer than a directory entry holds fails at once, before any log is built, and
/// leaves nothing behind.
#[test]
fn a_name_too_long_fails_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.dax", "x".repeat(300)));
    match Log::create(&path, &Options::new().capacity(1 << 30)) {
        Err(Error::Io { op, source, .. }) => {
            assert_eq!(op, "create");
            assert_eq!(source.raw_os_error(), Some(libc::ENAMETOOLONG));
        }
        other => panic!("expected ENAMETOOLONG, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
