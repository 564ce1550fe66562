//! A small metadata store: a namespace of directories and files whose every operation is
//! journaled in a daxlog log, with periodic checkpoints that let the journal be truncated.
//!
//! Durability protocol:
//! 1. An operation is validated against the current state, appended to the journal (durable
//!    when `append` returns), then applied in memory and acknowledged.
//! 2. A checkpoint writes the whole state with the LSN it reflects to `snapshot.tmp`, fsyncs
//!    it, renames it over `snapshot`, fsyncs the directory — and only then truncates the
//!    journal before that LSN. A crash between the two leaves a durable snapshot and a
//!    journal that still holds entries the snapshot already contains: replay skips entries at
//!    or below the snapshot's LSN, so nothing is applied twice.
//! 3. Start-up loads the snapshot (if any) and replays the journal entries after its LSN.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use daxlog::{Log, Lsn, Options};

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// A namespace operation, journaled as one line of text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Mkdir(String),
    Create(String),
    Rename(String, String),
    Unlink(String),
}

impl Op {
    pub fn encode(&self) -> String {
        match self {
            Op::Mkdir(p) => format!("mkdir {p}"),
            Op::Create(p) => format!("create {p}"),
            Op::Rename(a, b) => format!("rename {a} {b}"),
            Op::Unlink(p) => format!("unlink {p}"),
        }
    }

    pub fn decode(s: &str) -> Option<Op> {
        let mut w = s.split(' ');
        let op = match (w.next()?, w.next()?, w.next()) {
            ("mkdir", p, None) => Op::Mkdir(p.into()),
            ("create", p, None) => Op::Create(p.into()),
            ("unlink", p, None) => Op::Unlink(p.into()),
            ("rename", a, Some(b)) => Op::Rename(a.into(), b.into()),
            _ => return None,
        };
        w.next().is_none().then_some(op)
    }
}

/// The namespace: absolute paths to kinds; `/` always exists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    pub entries: BTreeMap<String, Kind>,
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => "",
    }
}

impl Namespace {
    fn exists_dir(&self, p: &str) -> bool {
        p == "/" || self.entries.get(p) == Some(&Kind::Dir)
    }

    fn has_children(&self, p: &str) -> bool {
        let prefix = format!("{p}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Checks an operation against the state; `Err` says why it is refused.
    pub fn check(&self, op: &Op) -> Result<(), &'static str> {
        let fresh = |p: &str| {
            if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') || p.contains(' ') {
                Err("bad path")
            } else if self.entries.contains_key(p) {
                Err("exists")
            } else if !self.exists_dir(parent(p)) {
                Err("no parent directory")
            } else {
                Ok(())
            }
        };
        match op {
            Op::Mkdir(p) | Op::Create(p) => fresh(p),
            Op::Unlink(p) => match self.entries.get(p) {
                None => Err("not found"),
                Some(Kind::Dir) if self.has_children(p) => Err("directory not empty"),
                Some(_) => Ok(()),
            },
            Op::Rename(a, b) => {
                if !self.entries.contains_key(a) {
                    Err("not found")
                } else if b.starts_with(&format!("{a}/")) {
                    Err("rename into itself")
                } else {
                    fresh(b)
                }
            }
        }
    }

    /// Applies a checked operation.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Mkdir(p) => {
                self.entries.insert(p.clone(), Kind::Dir);
            }
            Op::Create(p) => {
                self.entries.insert(p.clone(), Kind::File);
            }
            Op::Unlink(p) => {
                self.entries.remove(p);
            }
            Op::Rename(a, b) => {
                let prefix = format!("{a}/");
                let moved: Vec<(String, Kind)> = self
                    .entries
                    .iter()
                    .filter(|(k, _)| *k == a || k.starts_with(&prefix))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                for (k, v) in moved {
                    self.entries.remove(&k);
                    self.entries.insert(format!("{b}{}", &k[a.len()..]), v);
                }
            }
        }
    }

    /// One line per entry, sorted: `d /a` or `f /a/x`.
    pub fn dump(&self) -> String {
        self.entries
            .iter()
            .map(|(k, v)| format!("{} {k}\n", if *v == Kind::Dir { 'd' } else { 'f' }))
            .collect()
    }

    fn parse_dump(s: &str) -> Option<Self> {
        let mut ns = Namespace::default();
        for line in s.lines() {
            let (kind, path) = line.split_once(' ')?;
            let kind = match kind {
                "d" => Kind::Dir,
                "f" => Kind::File,
                _ => return None,
            };
            ns.entries.insert(path.to_string(), kind);
        }
        Some(ns)
    }
}

/// The store: namespace in memory, journal in daxlog, snapshot in a file.
pub struct Store {
    dir: PathBuf,
    journal: Arc<Log>,
    /// One checkpoint at a time, and never an older snapshot over a newer one.
    checkpoints: Arc<Mutex<Lsn>>,
    pub ns: Namespace,
    /// LSN the last snapshot reflects (0: none).
    pub snapshot_lsn: Lsn,
}

impl Store {
    /// Opens (or creates) the store in `dir`, rebuilding its state from snapshot + journal.
    pub fn open(dir: &Path, journal_capacity: u64) -> Result<Self, Box<dyn std::error::Error>> {
        fs::create_dir_all(dir)?;
        let jpath = dir.join("journal.dax");
        let journal = if jpath.exists() {
            Log::open(&jpath, &Options::new())?
        } else {
            Log::create(&jpath, &Options::new().capacity(journal_capacity))?
        };
        let (mut ns, snapshot_lsn) = match fs::read_to_string(dir.join("snapshot")) {
            Ok(s) => {
                let (head, body) = s.split_once('\n').ok_or("snapshot: no header")?;
                let lsn = head
                    .strip_prefix("snapshot lsn ")
                    .and_then(|v| v.parse().ok())
                    .ok_or("snapshot: bad header")?;
                (
                    Namespace::parse_dump(body).ok_or("snapshot: bad body")?,
                    lsn,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Namespace::default(), 0),
            Err(e) => return Err(e.into()),
        };
        if let Some(first) = journal.first_lsn() {
            if first > snapshot_lsn + 1 {
                return Err(format!(
                    "journal starts at LSN {first} but the snapshot only reaches {snapshot_lsn}"
                )
                .into());
            }
        }
        for e in journal.iter_from(snapshot_lsn + 1) {
            let text = std::str::from_utf8(&e.payload)?;
            let op = Op::decode(text).ok_or_else(|| format!("LSN {}: bad op {text:?}", e.lsn))?;
            ns.check(&op)
                .map_err(|why| format!("LSN {}: replay of {text:?} refused: {why}", e.lsn))?;
            ns.apply(&op);
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            journal: Arc::new(journal),
            checkpoints: Arc::new(Mutex::new(snapshot_lsn)),
            ns,
            snapshot_lsn,
        })
    }

    /// Performs one operation durably; returns its LSN, or why it was refused.
    pub fn apply(&mut self, op: &Op) -> Result<Result<Lsn, &'static str>, daxlog::Error> {
        if let Err(why) = self.ns.check(op) {
            return Ok(Err(why));
        }
        let lsn = match self.journal.append(op.encode().as_bytes()) {
            Ok(l) => l,
            Err(daxlog::Error::Full { .. }) => {
                // The journal is full: checkpoint, which frees it, then retry.
                self.checkpoint().map_err(|e| daxlog::Error::Io {
                    path: self.dir.join("snapshot"),
                    op: "checkpoint",
                    source: e,
                })?;
                self.journal.append(op.encode().as_bytes())?
            }
            Err(e) => return Err(e),
        };
        self.ns.apply(op);
        Ok(Ok(lsn))
    }

    /// Writes a durable snapshot of the state, then truncates the journal it covers.
    pub fn checkpoint(&mut self) -> std::io::Result<()> {
        let lsn = self.journal.last_lsn().unwrap_or(self.snapshot_lsn);
        self.checkpointer().write(lsn, &self.ns.dump())?;
        self.snapshot_lsn = self.snapshot_lsn.max(lsn);
        Ok(())
    }

    /// What a checkpointer thread needs: it takes the state (`ns.dump()`) and its LSN under
    /// the lock that orders the appends, then writes and truncates without it, while the
    /// appenders go on.
    pub fn checkpointer(&self) -> Checkpointer {
        Checkpointer {
            dir: self.dir.clone(),
            journal: Arc::clone(&self.journal),
            done: Arc::clone(&self.checkpoints),
        }
    }

    /// The last LSN the journal holds (the state `ns` reflects, when taken with it).
    pub fn last_lsn(&self) -> Lsn {
        self.journal.last_lsn().unwrap_or(self.snapshot_lsn)
    }

    /// The journal (for inspection).
    pub fn journal(&self) -> &Log {
        &self.journal
    }
}

/// Writes snapshots and truncates the journal behind them, from any thread (see
/// [`Store::checkpointer`]).
pub struct Checkpointer {
    dir: PathBuf,
    journal: Arc<Log>,
    /// The LSN of the newest durable snapshot.
    done: Arc<Mutex<Lsn>>,
}

impl Checkpointer {
    /// Makes `dump`, the state up to `lsn`, the durable snapshot, then truncates the journal
    /// it covers (appends go on meanwhile). A snapshot older than the current one is skipped.
    pub fn write(&self, lsn: Lsn, dump: &str) -> std::io::Result<()> {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        if lsn < *done {
            return Ok(());
        }
        let tmp = self.dir.join("snapshot.tmp");
        let mut f = File::create(&tmp)?;
        write!(f, "snapshot lsn {lsn}\n{dump}")?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join("snapshot"))?;
        File::open(&self.dir)?.sync_all()?;
        *done = lsn;
        // Only now is it safe to drop the journal entries the snapshot covers.
        self.journal
            .truncate_before(lsn + 1)
            .map_err(std::io::Error::other)?;
        Ok(())
    }
}
