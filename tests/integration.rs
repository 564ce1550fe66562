//! Integration tests of the public API on real files: tmpfs and a disk file system (or the
//! directory in `DAXLOG_TEST_DIR`), in every persistence mode.

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{modes, payload, temp_dirs};
use daxlog::format::{self, Slot, Superblock, DATA_OFFSET, HEADER_LEN};
use daxlog::{Error, LockHolder, Log, Options, Persistence, PersistenceChoice, TailState};

const CAP: u64 = 1 << 20;

fn opts() -> Options {
    Options::new().capacity(CAP)
}

/// Sizes that cross every interesting boundary: empty, sub-word, header-line, NT threshold.
const SIZES: &[usize] = &[
    0, 1, 7, 8, 9, 39, 40, 41, 63, 64, 65, 255, 256, 257, 1000, 4096, 9999,
];

#[test]
fn append_reopen_round_trip_in_every_mode_and_dir() {
    for dir in temp_dirs() {
        for (m, mode) in modes().into_iter().enumerate() {
            let path = dir.path().join(format!("rt{m}.dax"));
            let log = Log::create(&path, &mode.clone().capacity(CAP)).unwrap();
            let mut lsn = 0;
            for (i, &n) in SIZES.iter().enumerate() {
                lsn = log.append(&payload(i as u64 + 1, n)).unwrap();
                assert_eq!(lsn, i as u64 + 1);
            }
            let batch: Vec<Vec<u8>> = (0..5)
                .map(|i| payload(100 + i, 3 + i as usize * 50))
                .collect();
            let refs: Vec<&[u8]> = batch.iter().map(|v| v.as_slice()).collect();
            let r = log.append_batch(&refs).unwrap();
            assert_eq!(r, lsn + 1..lsn + 6);
            let expect: Vec<Vec<u8>> = SIZES
                .iter()
                .enumerate()
                .map(|(i, &n)| payload(i as u64 + 1, n))
                .chain(batch.iter().cloned())
                .collect();
            let check = |log: &Log| {
                let got: Vec<(u64, Vec<u8>)> =
                    log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
                assert_eq!(got.len(), expect.len());
                for (i, (l, p)) in got.iter().enumerate() {
                    assert_eq!(*l, i as u64 + 1);
                    assert_eq!(p, &expect[i], "payload of LSN {l} in {}", path.display());
                }
            };
            check(&log);
            let used = log.used_bytes();
            drop(log);
            let log = Log::open(&path, &mode).unwrap();
            check(&log);
            let r = log.recovery();
            assert_eq!(r.entries, expect.len() as u64);
            assert_eq!(r.last_lsn, Some(expect.len() as u64));
            assert_eq!(r.torn_bytes, 0);
            assert_eq!(r.tail_state, TailState::Clean);
            assert_eq!(log.used_bytes(), used);
            assert_eq!(log.persistence(), r.persistence);
            // Appends continue after recovery.
            assert_eq!(log.append(b"after").unwrap(), expect.len() as u64 + 1);
        }
    }
}

#[test]
fn mode_selection_follows_options() {
    for dir in temp_dirs() {
        let path = dir.path().join("mode.dax");
        let log = Log::create(&path, &opts().persistence(PersistenceChoice::ForceMsync)).unwrap();
        assert_eq!(log.persistence(), Persistence::Msync);
        drop(log);
        let log = Log::open(
            &path,
            &Options::new().persistence(PersistenceChoice::ForceCpuFlush),
        )
        .unwrap();
        assert!(log.persistence().is_cpu_flush());
        assert_eq!(
            log.persistence(),
            daxlog::supported_flush_instructions()[0],
            "the best flush instruction is chosen"
        );
        drop(log);
        let log = Log::open(
            &path,
            &Options::new()
                .persistence(PersistenceChoice::ForceCpuFlush)
                .flush_instruction(Persistence::Clflush),
        )
        .unwrap();
        assert_eq!(log.persistence(), Persistence::Clflush);
        log.append(b"x").unwrap();
        drop(log);
        let log = Log::open(&path, &Options::new()).unwrap();
        // Without MAP_SYNC (tmpfs, ext4 without dax) automatic mode must fall back to msync.
        assert_eq!(log.map_sync(), log.persistence().is_cpu_flush());
        if std::env::var("DAXLOG_EXPECT_DAX").as_deref() == Ok("1") {
            assert!(
                log.map_sync(),
                "expected a DAX mount at {}",
                dir.path().display()
            );
            assert!(log.persistence().is_cpu_flush());
        }
    }
}

#[test]
fn read_and_iter_from_find_every_lsn() {
    for dir in temp_dirs() {
        let path = dir.path().join("idx.dax");
        let log = Log::create(&path, &opts()).unwrap();
        for l in 1..=700u64 {
            log.append(&payload(l, (l % 97) as usize)).unwrap();
        }
        let check = |log: &Log| {
            assert_eq!(log.read(0), None);
            assert_eq!(log.read(701), None);
            for l in 1..=700u64 {
                assert_eq!(log.read(l).unwrap().payload, payload(l, (l % 97) as usize));
            }
            for from in [0, 1, 2, 63, 64, 65, 128, 129, 699, 700, 701, 5000] {
                let lsns: Vec<u64> = log.iter_from(from).map(|e| e.lsn).collect();
                let want: Vec<u64> = (from.max(1)..=700).collect();
                assert_eq!(lsns, want, "iter_from({from})");
            }
        };
        check(&log);
        drop(log);
        check(&Log::open_read_only(&path, &opts()).unwrap());
    }
}

#[test]
fn full_log_writes_nothing_and_stays_usable() {
    for dir in temp_dirs() {
        let path = dir.path().join("full.dax");
        let log = Log::create(&path, &Options::new().capacity(8192)).unwrap();
        let room = log.free_bytes();
        assert_eq!(room, 4096);
        // 4096 bytes hold entries of 1000 bytes (1024 on media) exactly four times.
        for l in 1..=3 {
            assert_eq!(log.append(&payload(l, 1000)).unwrap(), l);
        }
        match log.append(&[7u8; 2000]) {
            Err(
                e @ Error::Full {
                    needed, available, ..
                },
            ) => {
                // Errors name the file: several logs in one application stay apart.
                assert_eq!(e.path(), Some(path.as_path()));
                assert!(e.is_full() && !e.is_corruption());
                assert!(
                    e.to_string().starts_with(&path.display().to_string()),
                    "{e}"
                );
                assert_eq!(needed, 2024);
                assert_eq!(available, 1024);
            }
            other => panic!("expected Full, got {other:?}"),
        }
        match log.append_batch(&[&[1u8; 500], &[2u8; 500]]) {
            Err(Error::Full { needed, .. }) => assert_eq!(needed, 1056),
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(log.append(&payload(4, 1000)).unwrap(), 4);
        assert_eq!(log.free_bytes(), 0);
        assert!(matches!(log.append(b""), Err(Error::Full { .. })));
        drop(log);
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!(log.recovery().entries, 4);
        assert_eq!(log.recovery().tail_state, TailState::EndOfFile);
        for l in 1..=4 {
            assert_eq!(log.read(l).unwrap().payload, payload(l, 1000));
        }
        match log.append(&[0u8; 5000]) {
            Err(Error::PayloadTooLarge { len, max, path: p }) => {
                assert_eq!(p, path);
                assert_eq!(len, 5000);
                assert_eq!(max, 4072);
            }
            other => panic!("expected PayloadTooLarge, got {other:?}"),
        }
        // A batch larger than the whole data area (4096 bytes) can never fit: not `Full`
        // (which says room may be made), though each of its entries alone could.
        let big: [&[u8]; 3] = [&[7u8; 2000]; 3];
        match log.append_batch(&big) {
            Err(Error::BatchTooLarge {
                entries,
                bytes,
                max,
                ..
            }) => assert_eq!((entries, bytes, max), (3, 3 * 2024, 4096)),
            other => panic!("expected BatchTooLarge, got {other:?}"),
        }
        // One that fills the data area exactly fits once the log is emptied.
        log.reset().unwrap();
        let lsns = log.append_batch(&[&[1u8; 2000], &[2u8; 2048]]).unwrap();
        assert_eq!(log.free_bytes(), 0);
        assert_eq!(log.read(lsns.start + 1).unwrap().payload, [2u8; 2048]);
    }
}

#[test]
fn second_writer_is_locked_out_and_readers_are_not() {
    for dir in temp_dirs() {
        let path = dir.path().join("lock.dax");
        let log = Log::create(&path, &opts()).unwrap();
        log.append(b"one").unwrap();
        let by_writer = |r: daxlog::Result<Log>| {
            matches!(
                r,
                Err(Error::Locked {
                    by: LockHolder::Writer,
                    ..
                })
            )
        };
        assert!(by_writer(Log::open(&path, &opts())));
        assert!(by_writer(Log::create(&path, &opts().overwrite(true))));
        // Readers in other processes (`Reader`) work beside the writer; a snapshot waits.
        let mut reader = daxlog::Reader::open(&path).unwrap();
        assert_eq!(reader.next_entry().unwrap().unwrap().payload, b"one");
        assert!(by_writer(Log::open_read_only(&path, &opts())));
        drop(log);
        let ro = Log::open_read_only(&path, &opts()).unwrap();
        assert_eq!(ro.iter().next().unwrap().payload, b"one");
        match ro.append(b"no") {
            Err(Error::ReadOnly { path: p }) => assert_eq!(p, path),
            other => panic!("expected ReadOnly, got {other:?}"),
        }
        drop(ro);
        Log::open(&path, &opts()).unwrap();
    }
}

/// A replacement of the file in progress (`create` with `overwrite`, in this process or
/// another) is told apart from a writer: the test holds the locks the replacement holds while
/// it builds the new log (the exclusive `flock` and the OFD write lock on the reader byte).
#[test]
fn a_replacement_in_progress_is_not_taken_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.dax");
    Log::create(&path, &opts())
        .unwrap()
        .append(b"kept")
        .unwrap();
    let held = common::hold_replacement_locks(&path);
    let holder = |r: daxlog::Result<Log>| match r {
        Err(Error::Locked { by, .. }) => by,
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    };
    assert_eq!(holder(Log::open(&path, &opts())), LockHolder::Replacement);
    assert_eq!(
        holder(Log::open_read_only(&path, &opts())),
        LockHolder::Replacement
    );
    assert_eq!(
        holder(Log::create(&path, &opts().overwrite(true))),
        LockHolder::Replacement
    );
    match daxlog::Reader::open(&path) {
        Err(Error::Locked {
            by: LockHolder::Replacement,
            ..
        }) => {}
        other => panic!(
            "expected Locked by a replacement, got {:?}",
            other.map(|_| ())
        ),
    }
    drop(held);
    let log = Log::open(&path, &opts()).unwrap();
    assert_eq!(log.iter().next().unwrap().payload, b"kept");
}

/// A POSIX record lock some program holds on the file (here a whole-file `fcntl` write lock)
/// does not make a writer look like a replacement in progress.
#[test]
fn a_record_lock_beside_a_writer_is_not_taken_for_a_replacement() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.dax");
    let log = Log::create(&path, &opts()).unwrap();
    let other = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // SAFETY: an fcntl record lock on a descriptor we own, with a valid `flock`.
    unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        assert_eq!(libc::fcntl(other.as_raw_fd(), libc::F_SETLK, &fl), 0);
    }
    match Log::open(&path, &opts()) {
        Err(Error::Locked {
            by: LockHolder::Writer,
            ..
        }) => {}
        other => panic!("expected Locked by a writer, got {:?}", other.map(|_| ())),
    }
    drop(log);
}

/// Drops `held` on another thread after `after`.
fn drop_later<T: Send + 'static>(
    held: T,
    after: std::time::Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        drop(held);
    })
}

#[test]
fn lock_wait_opens_once_the_holder_closes_and_gives_up_when_it_does_not() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wait.dax");
    let log = Log::create(&path, &opts()).unwrap();
    log.append(b"one").unwrap();

    // A writer waits for the writer that holds the log to close it.
    assert!(matches!(
        Log::open(&path, &opts()),
        Err(Error::Locked { .. })
    ));
    let t = Instant::now();
    let closer = drop_later(log, Duration::from_millis(200));
    let log = Log::open(&path, &opts().lock_wait(Duration::from_secs(30))).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    closer.join().unwrap();
    assert_eq!(log.iter().next().unwrap().payload, b"one");

    // A holder that stays: the wait ends in `Locked`, no sooner than asked (and not much
    // later: a watchdog), and the tries leave no descriptor open.
    // (Descriptors of this file only: the other tests of this binary open files meanwhile.)
    let fds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| *target == path)
            .count()
    };
    let before = fds();
    let (done, result) = std::sync::mpsc::channel();
    let p2 = path.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = Log::open_read_only(&p2, &opts().lock_wait(Duration::from_millis(300)));
        let _ = done.send((r.map(|_| ()), t.elapsed()));
    });
    let (r, took) = result
        .recv_timeout(Duration::from_secs(60))
        .expect("the wait did not end at its deadline");
    match r {
        Err(Error::Locked { path: p, by }) => {
            assert_eq!(p, path);
            assert_eq!(by, daxlog::LockHolder::Writer);
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(fds(), before, "descriptors left open by the tries");

    // A snapshot waits for the writer, and a writer for the snapshot; `Duration::MAX` is a
    // wait without end, not an overflow.
    let closer = drop_later(log, Duration::from_millis(100));
    let ro = Log::open_read_only(&path, &opts().lock_wait(Duration::MAX)).unwrap();
    closer.join().unwrap();
    assert_eq!(ro.iter().next().unwrap().payload, b"one");
    let closer = drop_later(ro, Duration::from_millis(100));
    let log = Log::open(&path, &opts().lock_wait(Duration::MAX)).unwrap();
    closer.join().unwrap();

    // `create` with `overwrite` waits for the writer of the log it replaces.
    assert!(matches!(
        Log::create(&path, &opts().overwrite(true)),
        Err(Error::Locked { .. })
    ));
    let closer = drop_later(log, Duration::from_millis(100));
    let new = Log::create(
        &path,
        &opts().overwrite(true).lock_wait(Duration::from_secs(30)),
    )
    .unwrap();
    closer.join().unwrap();
    assert!(new.is_empty());
    assert_eq!(new.iter().count(), 0);

    // Errors other than a lock are not waited on.
    let t = Instant::now();
    let missing = dir.path().join("missing.dax");
    assert!(matches!(
        Log::open(&missing, &opts().lock_wait(Duration::from_secs(20))),
        Err(Error::Io { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn read_only_open_works_on_a_read_only_file_and_writes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    for dir in temp_dirs() {
        let path = dir.path().join("ro.dax");
        let log = Log::create(&path, &opts()).unwrap();
        log.append(b"keep").unwrap();
        drop(log);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let before = std::fs::read(&path).unwrap();
        let ro = Log::open_read_only(&path, &opts()).unwrap();
        assert!(ro.is_read_only());
        assert_eq!(ro.read(1).unwrap().payload, b"keep");
        drop(ro);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "read-only open changed the file"
        );
    }
}

fn expect_err(path: &Path, what: &str, check: impl Fn(&Error) -> bool) {
    for r in [Log::open(path, &opts()), Log::open_read_only(path, &opts())] {
        match r {
            Err(e) => {
                assert!(check(&e), "{what}: unexpected error {e:?}");
                assert!(
                    e.to_string().contains(&*path.to_string_lossy())
                        || matches!(e, Error::Io { .. }),
                    "{what}: message does not name the file: {e}"
                );
            }
            Ok(_) => panic!("{what}: opened"),
        }
    }
}

#[test]
fn bad_inputs_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    expect_err(
        &d.join("missing.dax"),
        "missing",
        |e| matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
    );
    expect_err(d, "directory", |e| matches!(e, Error::IsDirectory { .. }));
    assert!(matches!(
        Log::create(d, &opts()),
        Err(Error::IsDirectory { .. })
    ));

    let empty = d.join("empty");
    std::fs::write(&empty, b"").unwrap();
    expect_err(&empty, "empty", |e| matches!(e, Error::EmptyFile { .. }));

    let small = d.join("small");
    std::fs::write(&small, b"DAXLOG").unwrap();
    expect_err(&small, "small", |e| {
        matches!(e, Error::TooSmall { len: 6, .. })
    });

    let text = d.join("text");
    std::fs::write(&text, vec![b'x'; 20000]).unwrap();
    expect_err(&text, "not daxlog", |e| {
        matches!(e, Error::NotDaxlog { .. })
    });

    let zeros = d.join("zeros");
    std::fs::write(&zeros, vec![0u8; 20000]).unwrap();
    expect_err(&zeros, "zero-filled", |e| {
        matches!(e, Error::NotDaxlog { .. })
    });

    // A log whose both superblocks claim a future version (the checksum made right for it).
    let future = d.join("future.dax");
    Log::create(&future, &opts()).unwrap();
    {
        let f = OpenOptions::new().write(true).open(&future).unwrap();
        for off in [0u64, 512] {
            f.write_all_at(&4u32.to_le_bytes(), off + 8).unwrap();
        }
    }
    expect_err(&future, "future version", |e| {
        matches!(
            e,
            Error::UnsupportedVersion {
                found: 4,
                supported: daxlog::format::FORMAT_VERSION,
                ..
            }
        )
    });

    // Both superblock copies damaged.
    let bad = d.join("badsb.dax");
    Log::create(&bad, &opts()).unwrap();
    {
        let f = OpenOptions::new().write(true).open(&bad).unwrap();
        f.write_all_at(&[0xff], 40).unwrap();
        f.write_all_at(&[0xff], 512 + 40).unwrap();
    }
    expect_err(&bad, "both superblocks", |e| {
        matches!(e, Error::CorruptedSuperblock { .. })
    });

    // Both metadata slots damaged.
    let slots = d.join("badslot.dax");
    Log::create(&slots, &opts()).unwrap();
    {
        let f = OpenOptions::new().write(true).open(&slots).unwrap();
        f.write_all_at(&[0xee; 8], 1024 + 8).unwrap();
        f.write_all_at(&[0xee; 8], 1536 + 8).unwrap();
    }
    expect_err(&slots, "both slots", |e| {
        matches!(e, Error::CorruptedSuperblock { offset: 1024, .. })
    });

    // A file shorter than its capacity (truncated behind the log's back).
    let short = d.join("short.dax");
    Log::create(&short, &opts()).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(CAP / 2)
        .unwrap();
    expect_err(&short, "short", |e| {
        matches!(e, Error::FileShorterThanCapacity { file_len, capacity, .. }
            if *file_len == CAP / 2 && *capacity == CAP)
    });

    for cap in [0, 4096, 8193, 12288 + 8] {
        assert!(matches!(
            Log::create(d.join(format!("cap{cap}")), &Options::new().capacity(cap)),
            Err(Error::InvalidCapacity { .. })
        ));
    }
    let exists = d.join("exists.dax");
    Log::create(&exists, &opts()).unwrap();
    assert!(matches!(
        Log::create(&exists, &opts()),
        Err(Error::AlreadyExists { .. })
    ));
}

#[test]
fn damaged_primary_superblock_is_recovered_from_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sb.dax");
    let log = Log::create(&path, &opts()).unwrap();
    log.append(b"survives").unwrap();
    let uuid = log.uuid();
    drop(log);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 32], 16).unwrap();
    drop(f);
    let ro = Log::open_read_only(&path, &opts()).unwrap();
    assert!(ro.recovery().superblock_from_backup);
    assert_eq!(ro.uuid(), uuid);
    drop(ro);
    let log = Log::open(&path, &opts()).unwrap();
    assert!(log.recovery().superblock_from_backup);
    assert_eq!(log.read(1).unwrap().payload, b"survives");
    drop(log);
    // The writable open repaired the primary copy.
    let log = Log::open(&path, &opts()).unwrap();
    assert!(!log.recovery().superblock_from_backup);
}

/// Reads the salt and the current epoch of a closed log file.
fn salt_and_epoch(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    let sb = Superblock::decode(&b[..64]).unwrap();
    let slot = Slot::pick(
        Slot::decode(&b[1024..], sb.salt, sb.capacity),
        Slot::decode(&b[1536..], sb.salt, sb.capacity),
    )
    .unwrap();
    (sb.salt, slot.epoch)
}

/// A validly encoded entry, as the engine would write it with this salt and epoch.
fn encode_entry(salt: u32, epoch: u32, lsn: u64, payload: &[u8]) -> Vec<u8> {
    format::encode_entry(salt, epoch, lsn, 0, payload)
}

fn tail_offset(path: &Path) -> u64 {
    Log::open_read_only(path, &opts())
        .unwrap()
        .recovery()
        .tail_offset
}

/// Guards against accepting stale bytes left by an interrupted append: a torn entry whose
/// payload holds a perfectly encoded next entry, followed after recovery by a shorter append.
/// A second recovery must not resurrect the encoded entry from the torn remains.
#[test]
fn torn_entry_followed_by_shorter_entry_never_resurrects_its_remains() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn.dax");
    let log = Log::create(&path, &opts()).unwrap();
    for l in 1..=3 {
        log.append(&payload(l, 50)).unwrap();
    }
    drop(log);
    let (salt, epoch) = salt_and_epoch(&path);
    let tail = tail_offset(&path);
    // The torn long entry (LSN 4): its header promises 400 bytes, its checksum is wrong, and at
    // +64 its payload carries a valid encoding of LSN 5 with this session's salt and epoch.
    let forged5 = encode_entry(salt, epoch, 5, b"forged five");
    let mut long = encode_entry(salt, epoch, 4, &[0xab; 400]);
    long[0] ^= 1; // torn: checksum no longer matches
    long[HEADER_LEN + 40..HEADER_LEN + 40 + forged5.len()].copy_from_slice(&forged5);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&long, tail).unwrap();
    drop(f);

    let log = Log::open(&path, &opts()).unwrap();
    assert_eq!(log.recovery().entries, 3);
    assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
    assert_eq!(log.recovery().torn_bytes, long.len() as u64);
    // The new LSN 4 is 40 bytes on media: the forged LSN 5 now sits right after it.
    assert_eq!(log.append(&[9u8; 16]).unwrap(), 4);
    drop(log);
    let log = Log::open(&path, &opts()).unwrap();
    let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
    assert_eq!(
        lsns,
        [1, 2, 3, 4],
        "remains of the torn entry were accepted"
    );
    assert_eq!(log.read(4).unwrap().payload, [9u8; 16]);
    assert_eq!(log.append(b"five").unwrap(), 5);
    drop(log);
    let log = Log::open(&path, &opts()).unwrap();
    assert_eq!(log.read(5).unwrap().payload, b"five");
}

/// Guards against the scan looking inside payloads: an acknowledged payload that is itself a
/// valid encoding of an entry is returned as data, never parsed as entries.
#[test]
fn payload_holding_an_encoded_entry_is_only_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.dax");
    let log = Log::create(&path, &opts()).unwrap();
    log.append(b"first").unwrap();
    drop(log);
    let (salt, _) = salt_and_epoch(&path);
    let log = Log::open(&path, &opts()).unwrap();
    let (_, epoch) = {
        let b = std::fs::read(&path).unwrap();
        let sb = Superblock::decode(&b[..64]).unwrap();
        let s = Slot::pick(
            Slot::decode(&b[1024..], sb.salt, sb.capacity),
            Slot::decode(&b[1536..], sb.salt, sb.capacity),
        )
        .unwrap();
        (s.head_lsn, s.epoch)
    };
    let inner = [
        encode_entry(salt, epoch, 3, b"inner three"),
        encode_entry(salt, epoch, 4, b"inner four"),
    ]
    .concat();
    assert_eq!(log.append(&inner).unwrap(), 2);
    drop(log);
    let log = Log::open(&path, &opts()).unwrap();
    let all: Vec<(u64, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload.to_vec())).collect();
    assert_eq!(all, vec![(1, b"first".to_vec()), (2, inner)]);
}

/// Guards against reading a previous log's entries after `create` over a reused file.
#[test]
fn create_over_a_reused_file_starts_empty() {
    for dir in temp_dirs() {
        let path = dir.path().join("reuse.dax");
        let log = Log::create(&path, &opts()).unwrap();
        for l in 1..=100 {
            log.append(&payload(l, 100)).unwrap();
        }
        drop(log);
        let old = std::fs::read(&path).unwrap();
        let log = Log::create(&path, &opts().overwrite(true)).unwrap();
        assert!(log.is_empty());
        drop(log);
        // Even if the old bytes are put back past the new superblock, none is accepted.
        let mut f = OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(DATA_OFFSET as u64)).unwrap();
        f.write_all(&old[DATA_OFFSET..]).unwrap();
        drop(f);
        let log = Log::open(&path, &opts()).unwrap();
        assert_eq!(log.recovery().entries, 0);
        assert!(log.iter().next().is_none());
        assert_eq!(log.append(b"new").unwrap(), 1);
    }
}

/// Guards against a batch surviving in part: damage to its last entry discards all of it.
#[test]
fn batch_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.dax");
    let log = Log::create(&path, &opts()).unwrap();
    log.append(b"before").unwrap();
    let tail = log.used_bytes() + DATA_OFFSET as u64;
    log.append_batch(&[b"b1", b"b2", b"b3"]).unwrap();
    drop(log);
    // Corrupt the payload of the batch's last entry.
    let last = tail + 2 * format::entry_len(2) as u64 + HEADER_LEN as u64;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"XX", last).unwrap();
    drop(f);
    let log = Log::open(&path, &opts()).unwrap();
    let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
    assert_eq!(lsns, [1]);
    assert_eq!(log.recovery().torn_bytes, 3 * format::entry_len(2) as u64);
}

#[test]
fn every_single_bit_flip_in_the_last_entry_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flip.dax");
    let log = Log::create(&path, &opts()).unwrap();
    log.append(b"stays").unwrap();
    let tail = DATA_OFFSET as u64 + log.used_bytes();
    log.append(b"the last entry, 30 bytes long").unwrap();
    drop(log);
    let clean = std::fs::read(&path).unwrap();
    let end = tail as usize + HEADER_LEN + 29;
    for byte in tail as usize..end {
        for bit in 0..8 {
            let mut img = clean.clone();
            img[byte] ^= 1 << bit;
            std::fs::write(&path, &img).unwrap();
            let log = Log::open_read_only(&path, &opts()).unwrap();
            let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
            assert_eq!(lsns, [1], "flip of bit {bit} at byte {byte} accepted");
        }
    }
}

#[test]
fn concurrent_appenders_and_readers() {
    use std::sync::Arc;
    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("mt.dax");
    let log = Arc::new(Log::create(&path, &Options::new().capacity(8 << 20)).unwrap());
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..500u64 {
                    let p = payload(t << 32 | i, 10 + (i % 50) as usize);
                    mine.push((log.append(&p).unwrap(), p));
                }
                mine
            })
        })
        .collect();
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut seen = 0;
            while seen < 2000 {
                let n = log.iter().count() as u64;
                assert!(n >= seen, "entries disappeared");
                if let Some(last) = log.last_lsn() {
                    assert!(log.read(last).is_some());
                }
                seen = n;
            }
        })
    };
    let all: Vec<(u64, Vec<u8>)> = writers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    reader.join().unwrap();
    drop(Arc::try_unwrap(log).unwrap());
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(log.len(), 2000);
    for (lsn, p) in all {
        assert_eq!(log.read(lsn).unwrap().payload, p);
    }
}

/// Large payloads (checksummed while they are copied) at every 8-byte position in a cache
/// line, with lengths around word and line boundaries: every byte and every checksum must
/// survive a reopen, in every mode.
#[test]
fn large_payloads_at_every_line_offset_round_trip() {
    const LENS: &[usize] = &[
        511, 512, 513, 519, 1000, 1023, 1024, 1031, 4095, 4100, 70_001,
    ];
    let dir = &temp_dirs()[0];
    for (m, mode) in modes().into_iter().enumerate() {
        let path = dir.path().join(format!("large{m}.dax"));
        let log = Log::create(&path, &mode.clone().capacity(8 << 20)).unwrap();
        let mut expect = Vec::new();
        for shift in 0..8usize {
            // A filler entry moves the next entry's start by 8 bytes each round.
            let filler = payload(1000 + shift as u64, shift * 8);
            log.append(&filler).unwrap();
            expect.push(filler);
            for (i, &n) in LENS.iter().enumerate() {
                let p = payload((shift * 100 + i) as u64, n);
                log.append(&p).unwrap();
                expect.push(p);
            }
            // The same sizes as one batch (over the stack-assembly limit: stored entry by
            // entry, large ones checksummed while copied).
            let batch: Vec<Vec<u8>> = LENS
                .iter()
                .enumerate()
                .map(|(i, &n)| payload((shift * 100 + 50 + i) as u64, n))
                .collect();
            let refs: Vec<&[u8]> = batch.iter().map(|v| v.as_slice()).collect();
            log.append_batch(&refs).unwrap();
            expect.extend(batch);
        }
        let check = |log: &Log| {
            let got: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
            assert_eq!(got.len(), expect.len());
            for (i, p) in got.iter().enumerate() {
                assert!(p == &expect[i], "payload of LSN {} differs", i + 1);
            }
        };
        check(&log);
        drop(log);
        let log = Log::open(
            &path,
            &mode.clone().recovery_mode(daxlog::RecoveryMode::Strict),
        )
        .unwrap();
        assert_eq!(log.recovery().entries, expect.len() as u64);
        check(&log);
    }
}

/// Format version 1 (no reader area) is read, by snapshots and by readers, and a writable
/// open upgrades it to the current version; an unknown version is refused (above).
#[test]
fn version_1_logs_are_read_and_upgraded() {
    use daxlog::format::{Superblock, FORMAT_VERSION, SB_BACKUP_OFFSET, SB_LEN, SB_PRIMARY_OFFSET};
    for dir in temp_dirs() {
        let path = dir.path().join("v1.dax");
        let log = Log::create(&path, &opts()).unwrap();
        for l in 1..=10u64 {
            log.append(&payload(l, 50)).unwrap();
        }
        drop(log);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let version_at = |f: &std::fs::File, off: usize| {
            let mut b = [0u8; SB_LEN];
            f.read_exact_at(&mut b, off as u64).unwrap();
            Superblock::decode(&b).unwrap().version
        };
        common::mark_version_1(&path);
        // A version-1 writer never stores the published word: it holds what the media held
        // when the log was created (here an earlier log's published LSN, below the entries;
        // the rest of the reader area zero).
        let mut area = [0u8; 128];
        area[..8].copy_from_slice(&4u64.to_le_bytes());
        f.write_all_at(&area, daxlog::format::PUBLISHED_OFFSET as u64)
            .unwrap();
        let ro = Log::open_read_only(&path, &opts()).unwrap();
        assert_eq!(ro.len(), 10);
        drop(ro);
        assert_eq!(
            version_at(&f, SB_PRIMARY_OFFSET),
            1,
            "a snapshot writes nothing"
        );
        let mut reader = daxlog::Reader::open(&path).unwrap();
        assert_eq!(reader.published(), None);
        let got: Vec<u64> = reader.by_ref().map(|e| e.unwrap().lsn).collect();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
        let log = Log::open(&path, &opts()).unwrap();
        for off in [SB_PRIMARY_OFFSET, SB_BACKUP_OFFSET] {
            assert_eq!(version_at(&f, off), FORMAT_VERSION);
        }
        reader.refresh().unwrap();
        assert_eq!(reader.published(), Some(11));
        log.append(b"eleven").unwrap();
        assert_eq!(reader.next_entry().unwrap().unwrap().payload, b"eleven");
        // From the upgrade on, the reader asks the writer to wake it when it has caught up
        // (the sleepers flag), as one that opened the upgraded log does, instead of polling.
        let sleepers = |f: &std::fs::File| {
            let mut b = [0u8; 4];
            f.read_exact_at(&mut b, daxlog::format::SLEEPERS_OFFSET as u64)
                .unwrap();
            u32::from_le_bytes(b)
        };
        assert_eq!(sleepers(&f), 0);
        let waited = reader.next_timeout(std::time::Duration::from_millis(50));
        assert!(matches!(waited, Ok(None)), "{waited:?}");
        assert_eq!(sleepers(&f), 1, "the reader asked for a wake-up");
        log.append(b"twelve").unwrap();
        assert_eq!(sleepers(&f), 0, "the writer woke it");
        assert_eq!(reader.next_entry().unwrap().unwrap().payload, b"twelve");
    }
}
