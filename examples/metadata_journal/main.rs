//! A metadata journal on daxlog: a namespace of directories and files (mkdir, create, rename,
//! unlink) whose every operation is journaled, with periodic checkpoints that truncate the
//! journal, and state rebuilt from snapshot + journal at start-up. See `store.rs`.
//!
//! ```text
//! metadata_journal                       a demo run in a temporary directory
//! metadata_journal run DIR [OPS] [SEED] [CHECKPOINT_EVERY]
//!     performs OPS random operations (default: forever); prints `intent <op>` before each
//!     journaled operation and `ack <lsn> <op>` once it is durable, `checkpoint <lsn>` after
//!     each checkpoint
//! metadata_journal state DIR             prints the rebuilt namespace, one `d PATH` or
//!                                        `f PATH` line per entry
//! ```

mod store;

use std::io::Write;
use std::path::Path;

use store::{Op, Store};

/// Journal capacity: small, so that runs wrap around it many times.
const JOURNAL_CAPACITY: u64 = 256 << 10;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &'a [&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

/// A random operation on a small set of names, so that most are valid.
fn random_op(rng: &mut Rng) -> Op {
    const NAMES: &[&str] = &["a", "b", "c", "d"];
    let mut path = String::new();
    for _ in 0..1 + rng.next() % 3 {
        path.push('/');
        path.push_str(rng.pick(NAMES));
    }
    match rng.next() % 10 {
        0..=2 => Op::Mkdir(path),
        3..=5 => Op::Create(path),
        6 | 7 => {
            let mut to = path.clone();
            to.push_str(rng.pick(&["x", "y"]));
            Op::Rename(path, to)
        }
        _ => Op::Unlink(path),
    }
}

fn run(dir: &Path, ops: u64, seed: u64, every: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut store = Store::open(dir, JOURNAL_CAPACITY)?;
    let mut rng = Rng(seed | 1);
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "ready snapshot {}", store.snapshot_lsn)?;
    let mut done = 0u64;
    while done < ops {
        let op = random_op(&mut rng);
        if store.ns.check(&op).is_err() {
            continue;
        }
        writeln!(out, "intent {}", op.encode())?;
        out.flush()?;
        let lsn = store.apply(&op)?.expect("checked above");
        writeln!(out, "ack {lsn} {}", op.encode())?;
        out.flush()?;
        done += 1;
        if done.is_multiple_of(every) {
            store.checkpoint()?;
            writeln!(out, "checkpoint {}", store.snapshot_lsn)?;
            out.flush()?;
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("run") => {
            let dir = Path::new(arg(1).ok_or("run: DIR missing")?);
            let ops = arg(2).map(str::parse).transpose()?.unwrap_or(u64::MAX);
            let seed = arg(3).map(str::parse).transpose()?.unwrap_or(1);
            let every = arg(4).map(str::parse).transpose()?.unwrap_or(50);
            run(dir, ops, seed, every)
        }
        Some("state") => {
            let store = Store::open(
                Path::new(arg(1).ok_or("state: DIR missing")?),
                JOURNAL_CAPACITY,
            )?;
            print!("{}", store.ns.dump());
            Ok(())
        }
        None => {
            let tmp = tempfile::tempdir()?;
            let dir = tmp.path().join("store");
            {
                let mut store = Store::open(&dir, JOURNAL_CAPACITY)?;
                let mut rng = Rng(42);
                let mut n = 0;
                while n < 2000 {
                    if let Ok(Ok(_)) = store.apply(&random_op(&mut rng)) {
                        n += 1;
                        if n % 100 == 0 {
                            store.checkpoint()?;
                        }
                    }
                }
                println!(
                    "2000 operations, last LSN {:?}, journal holds {} entries after the last checkpoint",
                    store.journal().last_lsn(),
                    store.journal().len()
                );
            }
            let store = Store::open(&dir, JOURNAL_CAPACITY)?;
            println!(
                "rebuilt from snapshot (LSN {}) + journal:",
                store.snapshot_lsn
            );
            print!("{}", store.ns.dump());
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?} (run, state)").into()),
    }
}
