//! Guards against the library changing behaviour behind the embedding application's back:
//! `Options::new()` used to read the `DAXLOG_*` variables, so a variable left in an
//! operator's environment (e.g. `DAXLOG_TAIL_HINT_EVERY`, which makes an open skip the
//! validation of the entries before the hint, or `DAXLOG_FORCE_CPU_FLUSH`, which makes
//! acknowledgements non-durable on a non-DAX file system) silently changed what an
//! application asked for. Now only `Options::from_env()` (or `.env_overrides(true)`) reads
//! them, and explicit settings still win.
//!
//! A value that a variable does not accept is refused with `Error::InvalidEnvironment` by every
//! create and open that reads the environment, before any file is touched; it is never ignored.
//!
//! One test in its own binary: it sets process-wide environment variables.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use daxlog::{Error, Log, Options, Persistence, PersistenceChoice};
use pmem_sim::SimMedia;

#[test]
fn environment_overrides() {
    only_from_env_reads_the_environment();
    values_that_do_not_parse_are_refused();
    accepted_values();
}

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

/// Sets `name` to `value` for the length of `f`.
fn with_var(name: &str, value: impl AsRef<OsStr>, f: impl FnOnce()) {
    // SAFETY (of the environment calls): this test binary runs no other thread while the
    // variables change.
    unsafe { std::env::set_var(name, value) };
    f();
    unsafe { std::env::remove_var(name) };
}

/// Asserts that `r` is `Error::InvalidEnvironment` about variable `name` holding `value`.
fn assert_refused<T: std::fmt::Debug>(r: daxlog::Result<T>, name: &str, value: &str) {
    match r {
        Err(
            ref e @ Error::InvalidEnvironment {
                name: n,
                value: ref v,
                expected,
            },
        ) => {
            assert_eq!((n, v.as_str()), (name, value), "{e}");
            assert!(e.path().is_none());
            let text = e.to_string();
            assert!(
                text.contains(name) && text.contains(value) && text.contains(expected),
                "{text}"
            );
        }
        other => panic!("{name}={value:?}: expected InvalidEnvironment, got {other:?}"),
    }
}

fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

fn values_that_do_not_parse_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    log.append(b"kept").unwrap();
    drop(log);
    let media_image = {
        let log =
            Log::create_on(SimMedia::new(1 << 16, Persistence::Clwb), &Options::new()).unwrap();
        log.append(b"on media").unwrap();
        log.into_media().snapshot()
    };
    let before = names(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();

    for (name, value) in [
        ("DAXLOG_TAIL_HINT_EVERY", "abc"),
        ("DAXLOG_TAIL_HINT_EVERY", "-5"),
        ("DAXLOG_TAIL_HINT_EVERY", "4KiB"),
        ("DAXLOG_FLUSH", "clwbb"),
        ("DAXLOG_FLUSH", "auto"),
        ("DAXLOG_NT_THRESHOLD", "-1"),
        ("DAXLOG_NT_THRESHOLD", "1.5"),
        ("DAXLOG_NT_THRESHOLD", "18446744073709551616"),
        ("DAXLOG_MAP_ALIGN", "huge"),
        ("DAXLOG_FORCE_MSYNC", "2"),
        ("DAXLOG_FORCE_CPU_FLUSH", "enabled"),
        ("DAXLOG_NO_NT", "y"),
        ("DAXLOG_YIELD_WAIT", "sometimes"),
    ] {
        with_var(name, value, || {
            let from_env = Options::from_env().capacity(1 << 20);
            // Refused before the path is looked at: not "already exists", "not found" or
            // "locked".
            assert_refused(Log::create(&path, &from_env), name, value);
            let new = dir.path().join("new.dax");
            assert_refused(Log::create(&new, &from_env), name, value);
            assert_refused(Log::open(&path, &from_env), name, value);
            assert_refused(Log::open_read_only(&path, &from_env), name, value);
            assert_refused(
                Log::open(dir.path().join("missing.dax"), &from_env),
                name,
                value,
            );
            // Also when an explicit setting would override the variable.
            let explicit = Options::from_env()
                .persistence(PersistenceChoice::ForceMsync)
                .flush_instruction(Persistence::Clflush)
                .nt_threshold(0)
                .tail_hint_every(0)
                .huge_page_align(true);
            assert_refused(Log::open(&path, &explicit), name, value);
            // And on other media.
            let sim = || SimMedia::from_image(&media_image, Persistence::Clwb);
            assert_refused(
                Log::create_on(SimMedia::new(1 << 16, Persistence::Clwb), &from_env),
                name,
                value,
            );
            assert_refused(Log::open_on(sim(), &from_env), name, value);
            assert_refused(Log::open_on_read_only(sim(), &from_env), name, value);

            // Nothing was created, left behind or changed.
            assert_eq!(names(dir.path()), before, "{name}={value}");
            assert!(std::fs::read(&path).unwrap() == bytes, "{name}={value}");
            {
                let _writer = Log::open(&path, &Options::new()).unwrap();
                assert_refused(Log::open(&path, &from_env), name, value);
            }

            // Options::new() reads no variable, whatever it holds.
            let log = Log::open(&path, &Options::new()).unwrap();
            assert_eq!(log.len(), 1);
            drop(log);
            let log = Log::open_on(sim(), &Options::new()).unwrap();
            assert_eq!(log.len(), 1);
            // (Writable opens start a new session in the metadata.)
            bytes = std::fs::read(&path).unwrap();
        });
    }

    // A value that is not UTF-8.
    let latin1 = OsStr::from_bytes(b"clwb\xe9");
    with_var("DAXLOG_FLUSH", latin1, || {
        assert_refused(
            Log::open(&path, &Options::from_env()),
            "DAXLOG_FLUSH",
            "clwb\u{fffd}",
        );
    });

    // Flags that contradict each other: neither wins silently.
    with_var("DAXLOG_FORCE_MSYNC", "1", || {
        with_var("DAXLOG_FORCE_CPU_FLUSH", "yes", || {
            assert_refused(
                Log::open(&path, &Options::from_env()),
                "DAXLOG_FORCE_CPU_FLUSH",
                "yes",
            );
        });
        // Off, the other flag is no contradiction.
        with_var("DAXLOG_FORCE_CPU_FLUSH", "0", || {
            let log = Log::open(&path, &Options::from_env()).unwrap();
            assert!(!log.persistence().is_cpu_flush());
        });
    });
    with_var("DAXLOG_NO_NT", "on", || {
        with_var("DAXLOG_NT_THRESHOLD", "4096", || {
            assert_refused(
                Log::open(&path, &Options::from_env()),
                "DAXLOG_NT_THRESHOLD",
                "4096",
            );
        });
    });
    assert_eq!(names(dir.path()), before);
}

fn accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.dax");
    drop(Log::create(&path, &Options::new().capacity(1 << 20)).unwrap());
    let open = || Log::open(&path, &Options::from_env()).unwrap();

    // Flags in any case; spaces around values ignored.
    for on in ["1", "true", "YES", " On "] {
        with_var("DAXLOG_FORCE_MSYNC", on, || {
            assert_eq!(open().persistence(), Persistence::Msync, "{on:?}");
        });
    }
    for off in ["0", "false", "No", "OFF", "", "  "] {
        with_var("DAXLOG_FORCE_CPU_FLUSH", off, || {
            let log = open();
            assert!(log.is_durable(), "{off:?}");
        });
    }
    // (CPU flushes: in msync mode on a disk-backed file stores are writes, never
    // non-temporal, whatever the threshold.)
    let cpu = PersistenceChoice::ForceCpuFlush;
    let open_cpu = || Log::open(&path, &Options::from_env().persistence(cpu)).unwrap();
    with_var("DAXLOG_NT_THRESHOLD", " 4096 ", || {
        assert_eq!(open_cpu().nt_threshold(), 4096);
    });
    with_var("DAXLOG_NO_NT", "TRUE", || {
        assert_eq!(open_cpu().nt_threshold(), usize::MAX);
    });
    // Blank: as if unset.
    let default = Log::open(&path, &Options::new().persistence(cpu))
        .unwrap()
        .nt_threshold();
    with_var("DAXLOG_NT_THRESHOLD", "", || {
        assert_eq!(open_cpu().nt_threshold(), default);
    });
    for v in ["CLWB", " clflush ", "ClFlushOpt"] {
        with_var("DAXLOG_FLUSH", v, || drop(open()));
    }
    for v in ["page", "PAGE"] {
        with_var("DAXLOG_MAP_ALIGN", v, || drop(open()));
    }
    with_var("DAXLOG_TAIL_HINT_EVERY", "0", || drop(open()));

    // DAXLOG_YIELD_WAIT reaches the log; an explicit setting wins over it.
    let yields = |opts: Options| Log::open(&path, &opts).unwrap().yields_while_waiting();
    assert!(yields(Options::from_env()), "unset: the default");
    for off in ["0", " off", "FALSE"] {
        with_var("DAXLOG_YIELD_WAIT", off, || {
            assert!(!yields(Options::from_env()), "{off:?}");
            assert!(
                yields(Options::from_env().yield_while_waiting(true)),
                "explicit"
            );
            assert!(yields(Options::new()), "Options::new() reads no variable");
        });
    }
    with_var("DAXLOG_YIELD_WAIT", "on", || {
        assert!(yields(Options::from_env()));
        assert!(
            !yields(Options::from_env().yield_while_waiting(false)),
            "explicit"
        );
    });
}
