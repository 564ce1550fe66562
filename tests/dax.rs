//! The persistence path actually taken. On a DAX mount (`DAXLOG_EXPECT_DAX=1`, set by the VM
//! harness in `tests/dax-vm/`) the log must get `MAP_SYNC` and persist with CPU flushes alone;
//! on tmpfs and ordinary file systems it must fall back to `msync`.

mod common;

use daxlog::{Log, Options, Persistence};

fn expect_dax() -> bool {
    std::env::var("DAXLOG_EXPECT_DAX").as_deref() == Ok("1")
}

#[test]
fn automatic_mode_matches_the_mount() {
    for dir in common::temp_dirs() {
        let path = dir.path().join("mode.dax");
        let log = Log::create(&path, &Options::new().capacity(4 << 20)).unwrap();
        let p = log.persistence();
        println!(
            "{}: map_sync={} persistence={p}",
            dir.path().display(),
            log.map_sync()
        );
        if expect_dax() {
            assert!(
                log.map_sync(),
                "MAP_SYNC refused on {}",
                dir.path().display()
            );
            assert!(p.is_cpu_flush(), "DAX mount but persistence {p}");
            assert_eq!(p, daxlog::supported_flush_instructions()[0]);
        } else {
            assert!(!log.map_sync(), "MAP_SYNC granted on a non-DAX directory?");
            assert_eq!(p, Persistence::Msync);
        }
        // The path taken must also work: append, reopen, read back.
        for i in 0..100u64 {
            log.append(&common::payload(i, 300)).unwrap();
        }
        drop(log);
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!(log.persistence(), p);
        assert_eq!(log.recovery().persistence, p);
        for (i, e) in log.iter().enumerate() {
            assert_eq!(e.payload, common::payload(i as u64, 300));
        }
        assert_eq!(log.len(), 100);
    }
}

#[test]
fn read_only_open_reports_the_same_mode() {
    for dir in common::temp_dirs() {
        let path = dir.path().join("ro.dax");
        let p = Log::create(&path, &Options::new().capacity(1 << 20))
            .unwrap()
            .persistence();
        let ro = Log::open_read_only(&path, &Options::new()).unwrap();
        assert_eq!(ro.persistence(), p);
        assert_eq!(ro.map_sync(), expect_dax());
    }
}
