//! The store reads no `DAXLOG_*` environment variable: with `DAXLOG_FORCE_CPU_FLUSH=1` set (a
//! variable that turns durability off on a file system without `MAP_SYNC`, where CPU flushes
//! do not persist anything), a store with default options still uses `msync` there. Options
//! built with `daxlog::Options::from_env()` do follow it: that is an explicit choice. Its own
//! test binary, since it sets a process-wide variable.

use daxlog_raft::{LogStore, LogStoreOptions, TypeConfig, LOG_FILE};

fn mapped_with_map_sync(dir: &std::path::Path) -> bool {
    daxlog::Log::open(dir.join(LOG_FILE), &daxlog::Options::new())
        .unwrap()
        .map_sync()
}

#[test]
fn the_store_ignores_daxlog_environment_overrides() {
    std::env::set_var("DAXLOG_FORCE_CPU_FLUSH", "1");

    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::<TypeConfig>::open(
        dir.path().join("a/b/node"),
        &LogStoreOptions::new().log_capacity(1 << 20),
    )
    .unwrap();
    let chosen = store.persistence();
    drop(store);
    // New directories, their parents included, were created.
    assert!(dir.path().join("a/b/node").join(LOG_FILE).is_file());
    let map_sync = mapped_with_map_sync(&dir.path().join("a/b/node"));
    if map_sync {
        assert!(chosen.is_cpu_flush(), "{chosen}");
    } else {
        assert_eq!(chosen, daxlog::Persistence::Msync);
    }

    // Asked for explicitly, the environment applies.
    let other = tempfile::tempdir().unwrap();
    let store = LogStore::<TypeConfig>::open(
        other.path(),
        &LogStoreOptions::new()
            .daxlog(daxlog::Options::from_env())
            .log_capacity(1 << 20),
    )
    .unwrap();
    assert!(
        store.persistence().is_cpu_flush(),
        "{}",
        store.persistence()
    );
}
