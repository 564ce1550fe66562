//! openraft's own storage conformance suite (`openraft::testing::Suite`), run against
//! daxlog's log store and the key/value state machine. Every case gets a fresh temporary
//! directory (the `TempDir` guard lives as long as the case).
//!
//! `openraft_suite_test_all` runs the suite as openraft ships it; the `openraft_suite::*` tests
//! run the same cases one by one, so that a failure names its case.

use std::future::Future;

use daxlog_raft::{KvStateMachine, LogStore, LogStoreOptions, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageError, StorageIOError};
use tempfile::TempDir;

struct DaxStoreBuilder;

type Store = LogStore<TypeConfig>;
type TheSuite = Suite<TypeConfig, Store, KvStateMachine, DaxStoreBuilder, TempDir>;

fn err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write(AnyError::new(&e)).into()
}

impl StoreBuilder<TypeConfig, Store, KvStateMachine, TempDir> for DaxStoreBuilder {
    async fn build(&self) -> Result<(TempDir, Store, KvStateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(err)?;
        let opts = LogStoreOptions::new().log_capacity(4 << 20);
        let store = LogStore::open(dir.path().join("raft"), &opts).map_err(err)?;
        let sm = KvStateMachine::open(dir.path().join("sm")).map_err(err)?;
        Ok((dir, store, sm))
    }
}

#[test]
fn openraft_suite_test_all() {
    TheSuite::test_all(DaxStoreBuilder).unwrap();
}

/// Runs one case of the suite in a fresh runtime on a freshly built store.
fn run_case<F, Fu>(case: F)
where
    F: FnOnce(Store, KvStateMachine) -> Fu,
    Fu: Future<Output = Result<(), StorageError<u64>>>,
{
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_dir, store, sm) = DaxStoreBuilder.build().await?;
        case(store, sm).await
    })
    .unwrap();
}

mod openraft_suite {
    use super::*;

    macro_rules! cases {
        ($($name:ident),* $(,)?) => {
            $(
                #[test]
                fn $name() {
                    run_case(TheSuite::$name);
                }
            )*
        };
    }

    cases!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_membership_from_log_and_sm,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );

    #[test]
    fn transfer_snapshot() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(TheSuite::transfer_snapshot(&DaxStoreBuilder))
            .unwrap();
    }
}
