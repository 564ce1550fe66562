//! The `metadata_journal` example's durability protocol under crash images: operations
//! journaled in the log, checkpoints that make a snapshot of the state durable and only then
//! truncate the journal before it, and start-up that rebuilds the state from the snapshot plus
//! the journal entries after it.
//!
//! The example's own namespace and operation code (`examples/metadata_journal/store.rs`) is
//! used; its file handling is not (the journal lives on simulated media here): a snapshot is
//! modelled as durable from the moment the example's checkpoint has fsynced and renamed it,
//! which is before its `truncate_before` begins.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use daxlog::Log;

use crate::suite::{Runner, Session};
use crate::SimMedia;

#[path = "../../../../examples/metadata_journal/store.rs"]
#[allow(dead_code)]
mod store;

use store::{Namespace, Op};

/// What the application made durable besides the log.
#[derive(Default)]
struct Timeline {
    /// Snapshots: durable from (segment, crash point) on, with the LSN they reflect.
    snapshots: Vec<((usize, usize), u64, Namespace)>,
    /// Every journaled operation, by LSN.
    ops: BTreeMap<u64, Op>,
}

impl Timeline {
    /// The state after the operations up to `last` (the model).
    fn state_at(&self, last: u64) -> Namespace {
        let mut ns = Namespace::default();
        for op in self.ops.range(..=last).map(|(_, op)| op) {
            ns.check(op).expect("journaled operations were checked");
            ns.apply(op);
        }
        ns
    }

    /// What the example's `Store::open` rebuilds at crash point `at` from the log: the newest
    /// snapshot durable there, then the journal entries after it.
    fn check(&self, at: (usize, usize), log: &Log<SimMedia>) -> Result<(), String> {
        let (lsn, mut ns) = self
            .snapshots
            .iter()
            .rev()
            .find(|(from, ..)| *from <= at)
            .map_or((0, Namespace::default()), |(_, l, ns)| (*l, ns.clone()));
        if let Some(first) = log.first_lsn() {
            if first > lsn + 1 {
                return Err(format!(
                    "journal starts at LSN {first} but the snapshot only reaches {lsn}"
                ));
            }
        }
        for e in log.iter_from(lsn + 1) {
            let text = std::str::from_utf8(&e.payload).map_err(|e| e.to_string())?;
            let op = Op::decode(text).ok_or_else(|| format!("LSN {}: bad op {text:?}", e.lsn))?;
            ns.check(&op)
                .map_err(|why| format!("LSN {}: replay of {text:?} refused: {why}", e.lsn))?;
            ns.apply(&op);
        }
        let want = self.state_at(log.next_lsn() - 1);
        if ns != want {
            return Err(format!(
                "the state rebuilt from the snapshot (LSN {lsn}) and the journal differs from the \
                 one after the operations up to LSN {}:\n{}--- expected:\n{}",
                log.next_lsn() - 1,
                ns.dump(),
                want.dump()
            ));
        }
        Ok(())
    }
}

/// A random operation on a few names, like the example's (most are valid).
fn random_op(r: &mut Runner) -> Op {
    const NAMES: &[&str] = &["a", "b", "c", "d"];
    let mut path = String::new();
    for _ in 0..r.rng.range(1, 3) {
        path.push('/');
        path.push_str(NAMES[r.rng.below(NAMES.len() as u64) as usize]);
    }
    match r.rng.below(10) {
        0..=2 => Op::Mkdir(path),
        3..=5 => Op::Create(path),
        6 | 7 => {
            let mut to = path.clone();
            to.push_str(["x", "y"][r.rng.below(2) as usize]);
            Op::Rename(path, to)
        }
        _ => Op::Unlink(path),
    }
}

/// The example's `Store::checkpoint`: the snapshot of the state up to the last LSN is made
/// durable, then the journal is truncated before the LSN after it.
fn checkpoint(
    r: &Runner,
    s: &mut Session,
    tl: &RefCell<Timeline>,
    ns: &Namespace,
    snapshot_lsn: &mut u64,
) {
    let lsn = s.log().last_lsn().unwrap_or(*snapshot_lsn);
    let at = (r.next_segment(), s.obs.ops());
    tl.borrow_mut().snapshots.push((at, lsn, ns.clone()));
    *snapshot_lsn = lsn;
    s.truncate_before(lsn + 1);
}

/// Guards against the journal protocol losing or replaying operations: journaled operations
/// with a checkpoint every few (and whenever the journal is full, as the example does), in a
/// small log that wraps; at every crash image the state rebuilt from the durable snapshot and
/// the journal must be the state after the operations the log holds (and a journal that
/// starts after the snapshot's LSN is a violation). Two sessions.
pub(crate) fn journal_checkpoint(r: &mut Runner) -> Option<()> {
    r.scale_images(1, 4);
    let tl = Rc::new(RefCell::new(Timeline::default()));
    let check = Rc::clone(&tl);
    r.app_check(Rc::new(move |si, p, log: &Log<SimMedia>| {
        check.borrow().check((si, p), log)
    }));
    let mut ns = Namespace::default();
    let mut snapshot_lsn = 0;
    let mut s = r.create(3 * 4096);
    let mut done = 0;
    for session in 0..2 {
        let every = [7, 12][session];
        let mut ops = 0;
        while ops < 40 {
            let op = random_op(r);
            if ns.check(&op).is_err() {
                continue;
            }
            let text = op.encode();
            let lsn = match s.append(text.as_bytes()) {
                Some(l) => l,
                None => {
                    // Full: checkpoint, which frees the journal, then retry.
                    checkpoint(r, &mut s, &tl, &ns, &mut snapshot_lsn);
                    s.append(text.as_bytes()).expect("room after a checkpoint")
                }
            };
            tl.borrow_mut().ops.insert(lsn, op.clone());
            ns.apply(&op);
            ops += 1;
            done += 1;
            if done % every == 0 {
                checkpoint(r, &mut s, &tl, &ns, &mut snapshot_lsn);
            }
        }
        let si = r.finish(s);
        let img = r.final_image(si);
        let next = r.open(img)?;
        s = next;
    }
    r.finish(s);
    Some(())
}
