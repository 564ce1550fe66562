//! A store dropped and re-opened from its files shows openraft the same state: log state,
//! vote, committed log id, entries (after a purge and a suffix truncation), and the index
//! mapping still continues where it was.

use std::collections::BTreeSet;

use daxlog_raft::{LogStore, LogStoreOptions, Request, TypeConfig, LOG_FILE, META_FILE};
use openraft::storage::{LogState, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, Vote};

type Store = LogStore<TypeConfig>;

fn lid(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn set(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: lid(term, index),
        payload: EntryPayload::Normal(Request::Set {
            key: format!("k{index}"),
            value: format!("written in term {term} at index {index}"),
        }),
    }
}

fn opts() -> LogStoreOptions {
    LogStoreOptions::new().log_capacity(1 << 20)
}

/// Everything openraft can ask the log store about.
#[derive(Debug, PartialEq)]
struct View {
    state: LogState<TypeConfig>,
    vote: Option<Vote<u64>>,
    committed: Option<LogId<u64>>,
    entries: Vec<Entry<TypeConfig>>,
    reader_entries: Vec<Entry<TypeConfig>>,
}

async fn view(store: &mut Store) -> View {
    let mut reader = store.get_log_reader().await;
    View {
        state: store.get_log_state().await.unwrap(),
        vote: store.read_vote().await.unwrap(),
        committed: store.read_committed().await.unwrap(),
        entries: store.try_get_log_entries(0..).await.unwrap(),
        reader_entries: reader.try_get_log_entries(..).await.unwrap(),
    }
}

#[tokio::test]
async fn restart_keeps_openraft_view() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &opts()).unwrap();

    // Index 0 holds the initial membership, as openraft writes it.
    let members = BTreeSet::from([1u64, 2, 3]);
    let first = Entry {
        log_id: lid(0, 0),
        payload: EntryPayload::Membership(Membership::new(vec![members], None)),
    };
    store.blocking_append([first]).await.unwrap();
    store
        .blocking_append((1..=10).map(|i| set(1, i)))
        .await
        .unwrap();
    store
        .blocking_append((11..=20).map(|i| set(2, i)))
        .await
        .unwrap();
    store.save_vote(&Vote::new(2, 1)).await.unwrap();
    store.save_vote(&Vote::new_committed(3, 2)).await.unwrap();
    store.save_committed(Some(lid(2, 15))).await.unwrap();
    store.purge(lid(1, 5)).await.unwrap();
    // A new leader disagrees from index 18 on.
    store.truncate(lid(2, 18)).await.unwrap();
    store
        .blocking_append((18..=19).map(|i| set(3, i)))
        .await
        .unwrap();

    let before = view(&mut store).await;
    assert_eq!(before.state.last_purged_log_id, Some(lid(1, 5)));
    assert_eq!(before.state.last_log_id, Some(lid(3, 19)));
    assert_eq!(before.entries.len(), 14);
    assert_eq!(before.entries[0].log_id, lid(1, 6));
    assert_eq!(before.entries, before.reader_entries);
    drop(store);

    let mut store = Store::open(dir.path(), &opts()).unwrap();
    let after = view(&mut store).await;
    assert_eq!(before, after);
    assert_eq!(after.vote, Some(Vote::new_committed(3, 2)));
    assert_eq!(after.committed, Some(lid(2, 15)));
    assert_eq!(
        store.try_get_log_entries(7..9).await.unwrap(),
        vec![set(1, 7), set(1, 8)]
    );

    // The index mapping continues after the restart.
    store.blocking_append([set(3, 20)]).await.unwrap();
    store.truncate(lid(3, 19)).await.unwrap();
    store.blocking_append([set(4, 19)]).await.unwrap();
    let before = view(&mut store).await;
    drop(store);
    let mut store = Store::open(dir.path(), &opts()).unwrap();
    assert_eq!(before, view(&mut store).await);
    assert_eq!(before.state.last_log_id, Some(lid(4, 19)));
    assert!(dir.path().join(LOG_FILE).exists() && dir.path().join(META_FILE).exists());
}

/// A purge past the last entry (as after installing a snapshot) leaves an empty log; the next
/// append continues after the purged index, across restarts.
#[tokio::test]
async fn restart_after_purge_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &opts()).unwrap();
    store
        .blocking_append((1..=5).map(|i| set(1, i)))
        .await
        .unwrap();
    store.purge(lid(2, 100)).await.unwrap();
    drop(store);

    let mut store = Store::open(dir.path(), &opts()).unwrap();
    let v = view(&mut store).await;
    assert_eq!(v.state.last_purged_log_id, Some(lid(2, 100)));
    assert_eq!(v.state.last_log_id, Some(lid(2, 100)));
    assert!(v.entries.is_empty());

    store
        .blocking_append((101..=103).map(|i| set(2, i)))
        .await
        .unwrap();
    drop(store);
    let mut store = Store::open(dir.path(), &opts()).unwrap();
    let v = view(&mut store).await;
    assert_eq!(
        v.entries,
        (101..=103).map(|i| set(2, i)).collect::<Vec<_>>()
    );
    assert_eq!(v.state.last_log_id, Some(lid(2, 103)));

    // Truncating everything, then starting again below: the mapping is free again.
    store.truncate(lid(2, 101)).await.unwrap();
    drop(store);
    let mut store = Store::open(dir.path(), &opts()).unwrap();
    let v = view(&mut store).await;
    assert!(v.entries.is_empty());
    assert_eq!(v.state.last_log_id, Some(lid(2, 100)));
    store.blocking_append([set(3, 101)]).await.unwrap();
    assert_eq!(
        store.try_get_log_entries(101..=101).await.unwrap(),
        vec![set(3, 101)]
    );
}

/// A second store on the same directory is refused while the first one is open.
#[tokio::test]
async fn second_open_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path(), &opts()).unwrap();
    assert!(Store::open(dir.path(), &opts()).is_err());
}

/// The files a follower left when it crashed after purging its log for a snapshot from the
/// leader but before the snapshot was on disk (the order openraft 0.9 runs the two in, which
/// `LogStore::open_with_snapshot` now prevents), constructed directly: `meta.dax` purged up to
/// index 50, the state machine without a snapshot. `Cluster::open` refuses the node with a
/// typed error instead of starting Raft on a log whose entries 1..=50 are lost.
#[tokio::test]
async fn node_purged_past_its_snapshot_is_refused() {
    use daxlog_raft::cluster::{fast_config, Cluster};
    use daxlog_raft::DaxError;

    let root = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(root.path(), fast_config(100).unwrap(), opts());
    let mut store = Store::open(c.dir(2), &opts()).unwrap();
    store
        .blocking_append((1..=60).map(|i| set(1, i)))
        .await
        .unwrap();
    store.purge(lid(1, 50)).await.unwrap();
    drop(store);

    let err = c.open(2).await.err().expect("the store must be refused");
    let err = err.downcast_ref::<DaxError>().expect("a DaxError");
    assert!(
        matches!(
            err,
            DaxError::PurgedBeyondSnapshot {
                purged: 50,
                snapshot: None
            }
        ),
        "{err}"
    );
}

/// Adds `count` padding entries to the store's `log.dax`, as daxlog leaves them for the LSNs
/// of an append abandoned by a panicking appender.
fn pad(dir: &std::path::Path, count: u64) {
    let log = daxlog::Log::open(dir.join(LOG_FILE), &daxlog::Options::new()).unwrap();
    log.append_padding(count).unwrap();
}

/// Padding in `log.dax` (before the first entry, between entries, after the last one) is
/// skipped by LSN: the store opens, openraft sees the same entries at the same indexes, and
/// appends, reads across the padding, truncations and purges keep working across restarts.
#[tokio::test]
async fn padding_entries_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &opts()).unwrap();
    drop(store);
    pad(dir.path(), 2);

    store = Store::open(dir.path(), &opts()).unwrap();
    assert!(view(&mut store).await.entries.is_empty());
    store
        .blocking_append((1..=3).map(|i| set(1, i)))
        .await
        .unwrap();
    drop(store);
    pad(dir.path(), 3);

    store = Store::open(dir.path(), &opts()).unwrap();
    let v = view(&mut store).await;
    assert_eq!(v.entries, (1..=3).map(|i| set(1, i)).collect::<Vec<_>>());
    assert_eq!(v.state.last_log_id, Some(lid(1, 3)));
    store
        .blocking_append((4..=6).map(|i| set(1, i)))
        .await
        .unwrap();
    drop(store);
    pad(dir.path(), 1);

    store = Store::open(dir.path(), &opts()).unwrap();
    let v = view(&mut store).await;
    let all: Vec<_> = (1..=6).map(|i| set(1, i)).collect();
    assert_eq!(v.entries, all);
    assert_eq!(v.reader_entries, all);
    assert_eq!(v.state.last_log_id, Some(lid(1, 6)));
    // Ranges across the padding.
    assert_eq!(
        store.try_get_log_entries(2..=5).await.unwrap(),
        all[1..5].to_vec()
    );
    assert_eq!(
        store.try_get_log_entries(4..5).await.unwrap(),
        vec![set(1, 4)]
    );
    // Appending after trailing padding, then a conflicting suffix from index 6 on.
    store
        .blocking_append((7..=8).map(|i| set(1, i)))
        .await
        .unwrap();
    store.truncate(lid(1, 6)).await.unwrap();
    store
        .blocking_append((6..=7).map(|i| set(2, i)))
        .await
        .unwrap();
    drop(store);

    store = Store::open(dir.path(), &opts()).unwrap();
    let mut want: Vec<_> = (1..=5).map(|i| set(1, i)).collect();
    want.extend((6..=7).map(|i| set(2, i)));
    assert_eq!(view(&mut store).await.entries, want);
    // A purge into the second run, then across every padding.
    store.purge(lid(1, 4)).await.unwrap();
    assert_eq!(view(&mut store).await.entries, want[4..].to_vec());
    drop(store);
    store = Store::open(dir.path(), &opts()).unwrap();
    assert_eq!(view(&mut store).await.entries, want[4..].to_vec());
    store.purge(lid(2, 6)).await.unwrap();
    assert_eq!(view(&mut store).await.entries, vec![set(2, 7)]);
    // Truncating everything, padding included.
    drop(store);
    pad(dir.path(), 2);
    store = Store::open(dir.path(), &opts()).unwrap();
    store.truncate(lid(2, 7)).await.unwrap();
    store.blocking_append([set(3, 7)]).await.unwrap();
    drop(store);
    store = Store::open(dir.path(), &opts()).unwrap();
    let v = view(&mut store).await;
    assert_eq!(v.entries, vec![set(3, 7)]);
    assert_eq!(v.state.last_purged_log_id, Some(lid(2, 6)));
}
