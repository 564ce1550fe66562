//! Guards against an appender that panics after marking its ticket ready wedging the log: it
//! may be the thread whose turn it is to publish its own ticket and the ready ones after it, so
//! if it simply unwound, `published` would stop and every later append would wait forever. The
//! log must instead refuse appends with a typed error (`Error::Poisoned`), and a reopen must
//! recover every acknowledged entry.
//!
//! Needs the `mutants` feature (on in `cargo test --workspace`, where pmem-sim's
//! dev-dependency enables it): the panic is injected by `daxlog::mutants`.
#![cfg(feature = "mutants")]

use std::sync::{mpsc, Arc};
use std::time::Duration;

use daxlog::{Error, Log, Options, PersistenceChoice};

fn check(choice: PersistenceChoice) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.dax");
    let opts = Options::new().capacity(1 << 20).persistence(choice);
    let log = Log::create(&path, &opts).unwrap();
    for i in 0..10u8 {
        assert_eq!(log.append(&[i; 40]).unwrap(), 1 + i as u64);
    }
    daxlog::mutants::arm_panic_after_ready();
    let log = Arc::new(log);
    let l = log.clone();
    let panicked = std::thread::spawn(move || l.append(b"this appender panics"));
    assert!(panicked.join().is_err(), "the armed append must panic");
    let (tx, rx) = mpsc::channel();
    let l = log.clone();
    // Not joined: if the log is wedged this thread never returns, and the test must fail
    // rather than hang.
    std::thread::spawn(move || {
        let _ = tx.send(l.append(b"the next append"));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("an append after a panic past `ready` waited forever");
    match r {
        Err(Error::Poisoned { path: p, cause }) => {
            assert_eq!(p, path);
            assert!(cause.contains("panicked"), "{cause}");
        }
        other => panic!("expected Error::Poisoned, got {other:?}"),
    }
    // Further appends are refused at once, with the same error.
    assert!(matches!(log.append(b"x"), Err(Error::Poisoned { .. })));
    // The thread that sent the error drops its handle right after.
    while Arc::strong_count(&log) > 1 {
        std::thread::yield_now();
    }
    drop(log);
    // A reopen recovers: the ten acknowledged entries are there, the panicked one may be (its
    // entry was durable), and the log takes appends again.
    let log = Log::open(&path, &Options::new()).unwrap();
    let got: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
    assert!(got.len() == 10 || got.len() == 11, "{} entries", got.len());
    for (i, p) in got.iter().take(10).enumerate() {
        assert_eq!(p, &vec![i as u8; 40]);
    }
    if got.len() == 11 {
        assert_eq!(got[10], b"this appender panics");
    }
    let next = log.append(b"after reopen").unwrap();
    assert_eq!(next, got.len() as u64 + 1);
}

/// One test: the panic switch is process-wide.
#[test]
fn panic_after_ready_poisons_instead_of_wedging() {
    check(PersistenceChoice::ForceCpuFlush);
    check(PersistenceChoice::ForceMsync);
}
