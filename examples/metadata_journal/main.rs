//! A metadata journal on daxlog: a namespace of directories and files (mkdir, create, rename,
//! unlink) whose every operation is journaled, with periodic checkpoints that truncate the
//! journal, and state rebuilt from snapshot + journal at start-up. See `store.rs`.
//!
//! ```text
//! metadata_journal                       a demo run in a temporary directory
//! metadata_journal run DIR [OPS] [SEED] [CHECKPOINT_EVERY] [THREADS]
//!     performs OPS random operations (default: forever); prints `intent <op>` before each
//!     journaled operation and `ack <lsn> <op>` once it is durable, `checkpoint <lsn>` after
//!     each checkpoint. With THREADS > 1, that many appender threads and a checkpointer
//!     thread that snapshots and truncates beside them
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

fn run(
    dir: &Path,
    ops: u64,
    seed: u64,
    every: u64,
    threads: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    if threads > 1 {
        return run_threads(dir, ops, seed, every, threads);
    }
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

/// `threads` appender threads and a checkpointer thread. The appenders take turns on the
/// store's lock (it orders the operations: each is checked against the state the ones before
/// it left); the checkpointer takes the state and its LSN under the lock, then writes the
/// snapshot and truncates the journal without it, while the appenders go on.
fn run_threads(
    dir: &Path,
    ops: u64,
    seed: u64,
    every: u64,
    threads: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(dir, JOURNAL_CAPACITY)?;
    let checkpointer = store.checkpointer();
    let out = std::sync::Mutex::new(std::io::stdout());
    writeln!(out.lock().unwrap(), "ready snapshot {}", store.snapshot_lsn)?;
    let store = std::sync::Mutex::new(store);
    let done = std::sync::atomic::AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    use std::sync::atomic::Ordering::Relaxed;
    std::thread::scope(|s| -> Result<(), String> {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (store, out, done) = (&store, &out, &done);
            handles.push(s.spawn(move || -> Result<(), String> {
                let mut rng = Rng((seed ^ t.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
                while done.load(Relaxed) < ops {
                    let op = random_op(&mut rng);
                    let mut st = store.lock().unwrap();
                    if st.ns.check(&op).is_err() {
                        continue;
                    }
                    let say = |line: String| {
                        let mut o = out.lock().unwrap();
                        writeln!(o, "{line}").and_then(|_| o.flush())
                    };
                    say(format!("intent {}", op.encode())).map_err(|e| e.to_string())?;
                    let lsn = st
                        .apply(&op)
                        .map_err(|e| e.to_string())?
                        .expect("checked above");
                    say(format!("ack {lsn} {}", op.encode())).map_err(|e| e.to_string())?;
                    drop(st);
                    done.fetch_add(1, Relaxed);
                }
                Ok(())
            }));
        }
        let ckpt = s.spawn(|| -> Result<(), String> {
            let mut last = 0;
            while !stop.load(Relaxed) {
                let n = done.load(Relaxed);
                if n < last + every {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    continue;
                }
                last = n;
                let (lsn, dump) = {
                    let st = store.lock().unwrap();
                    (st.last_lsn(), st.ns.dump())
                };
                checkpointer.write(lsn, &dump).map_err(|e| e.to_string())?;
                let mut o = out.lock().unwrap();
                writeln!(o, "checkpoint {lsn}")
                    .and_then(|_| o.flush())
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        let mut r = Ok(());
        for h in handles {
            r = r.and(h.join().unwrap());
        }
        stop.store(true, Relaxed);
        r.and(ckpt.join().unwrap())
    })?;
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
            let threads = arg(5).map(str::parse).transpose()?.unwrap_or(1);
            run(dir, ops, seed, every, threads)
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
                    "2000 operations, last LSN {}, journal holds {} entries after the last checkpoint",
                    store.last_lsn(),
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
