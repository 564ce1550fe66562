//! Guards against the library changing behaviour behind the embedding application's back:
//! `Options::new()` used to read the `DAXLOG_*` variables, so a variable left in an
//! operator's environment (e.g. `DAXLOG_TAIL_HINT_EVERY`, which makes an open skip the
//! validation of the entries before the hint, or `DAXLOG_FORCE_CPU_FLUSH`, which makes
//! acknowledgements non-durable on a non-DAX file system) silently changed what an
//! application asked for. Now only `Options::from_env()` (or `.env_overrides(true)`) reads
//! them, and explicit settings still win.
//!
//! One test in its own binary: it sets process-wide environment variables.

use daxlog::{Log, Options, PersistenceChoice};

#[test]
fn only_from_env_reads_the_environment() {
    let dir = tempfile::Builder::new()
        .prefix("daxlog-env")
        .tempdir_in("/dev/shm")
        .unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("env.dax");
    // A log with a tail hint far from the head.
    let hinted = Options::new().capacity(1 << 20).tail_hint_every(1024);
    let log = Log::create(&path, &hinted).unwrap();
    for i in 0..200u32 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    drop(log);

    // SAFETY (of the environment calls): this test binary runs no other thread while the
    // variables change.
    unsafe {
        std::env::set_var("DAXLOG_TAIL_HINT_EVERY", "1024");
        std::env::set_var("DAXLOG_FORCE_CPU_FLUSH", "1");
    }
    let plain = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(
        plain.recovery().scanned_from,
        1,
        "Options::new() must validate from the head"
    );
    assert!(!plain.persistence().is_cpu_flush() || plain.map_sync());
    assert!(plain.is_durable());
    drop(plain);

    let from_env = Log::open(&path, &Options::from_env()).unwrap();
    assert!(
        from_env.recovery().scanned_from > 1,
        "from_env() honours DAXLOG_TAIL_HINT_EVERY"
    );
    assert!(from_env.persistence().is_cpu_flush());
    drop(from_env);

    // Explicit settings win over the environment.
    let explicit = Log::open(
        &path,
        &Options::from_env()
            .tail_hint_every(0)
            .persistence(PersistenceChoice::ForceMsync),
    )
    .unwrap();
    assert_eq!(explicit.recovery().scanned_from, 1);
    assert!(!explicit.persistence().is_cpu_flush());
    assert_eq!(explicit.len(), 200);
    drop(explicit);
    unsafe {
        std::env::remove_var("DAXLOG_TAIL_HINT_EVERY");
        std::env::remove_var("DAXLOG_FORCE_CPU_FLUSH");
    }
}
