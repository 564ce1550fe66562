//! Kills the `metadata_journal` example at random moments while it journals operations and
//! checkpoints, and checks that the state it rebuilds from snapshot + journal is exactly the
//! state after the last acknowledged operation (or after the one in flight).
//!
//! Guards against: truncating the journal before the snapshot is durable, replaying entries
//! the snapshot already holds, and losing acknowledged operations across checkpoints and
//! journal wrap-around.
//!
//! Replay: `DAXLOG_JOURNAL_SEED=<seed> cargo test --release --test metadata_journal`.

#[path = "../examples/metadata_journal/store.rs"]
#[allow(dead_code)]
mod store;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use store::{Namespace, Op};

fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    let p = profile.join("examples").join("metadata_journal");
    assert!(
        p.is_file(),
        "example not built: {} (cargo test builds examples)",
        p.display()
    );
    p
}

fn rebuilt_state(dir: &Path) -> String {
    let out = Command::new(example())
        .arg("state")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "state failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn killed_journal_rebuilds_the_acknowledged_state() {
    let seed: u64 = std::env::var("DAXLOG_JOURNAL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64 * 7919 + 17);
    println!("metadata_journal: seed {seed} (replay with DAXLOG_JOURNAL_SEED={seed})");
    let dirs = std::env::var("DAXLOG_TEST_DIR")
        .map(|d| vec![PathBuf::from(d)])
        .unwrap_or_else(|_| vec![PathBuf::from("/dev/shm"), std::env::temp_dir()]);
    for base in dirs.into_iter().filter(|d| d.is_dir()) {
        let tmp = tempfile::tempdir_in(&base).unwrap();
        let dir = tmp.path().join("store");
        let mut model = Namespace::default();
        let mut rng = seed | 1;
        let mut acked_total = 0;
        let mut checkpoints = 0;
        for round in 0..12u64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let kill_after = Duration::from_millis(10 + rng % 120);
            let mut child = Command::new(example())
                .args(["run", dir.to_str().unwrap(), "18446744073709551615"])
                .arg((seed ^ round.wrapping_mul(0x9E37_79B9)).to_string())
                .arg("40")
                // Odd rounds: three appender threads and a checkpointer thread beside them.
                .arg(if round % 2 == 1 { "3" } else { "1" })
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                let mut lines = Vec::new();
                for l in BufReader::new(stdout).lines() {
                    lines.push(l.unwrap());
                }
                lines
            });
            std::thread::sleep(kill_after);
            child.kill().unwrap();
            child.wait().unwrap();
            let lines = reader.join().unwrap();
            let mut in_flight: Option<Op> = None;
            for l in &lines {
                if let Some(op) = l.strip_prefix("intent ") {
                    in_flight = Some(Op::decode(op).unwrap());
                } else if let Some(rest) = l.strip_prefix("ack ") {
                    let op = Op::decode(rest.split_once(' ').unwrap().1).unwrap();
                    assert_eq!(Some(&op), in_flight.as_ref());
                    model.check(&op).expect("acked op valid on the model");
                    model.apply(&op);
                    in_flight = None;
                    acked_total += 1;
                } else if l.starts_with("checkpoint ") {
                    checkpoints += 1;
                }
            }
            let got = rebuilt_state(&dir);
            if got == model.dump() {
                continue;
            }
            let op = in_flight.unwrap_or_else(|| {
                panic!("seed {seed} round {round}: rebuilt state differs and nothing was in flight\ngot:\n{got}\nwant:\n{}", model.dump())
            });
            let mut with = model.clone();
            with.apply(&op);
            assert_eq!(
                got,
                with.dump(),
                "seed {seed} round {round}: rebuilt state is neither the acknowledged one nor it plus {op:?}"
            );
            model = with;
        }
        assert!(acked_total > 0, "no operation acknowledged at all");
        println!(
            "metadata_journal: {}: 12 kills, {acked_total} operations acknowledged, {checkpoints} checkpoints, final state {} entries",
            base.display(),
            model.entries.len()
        );
    }
}
