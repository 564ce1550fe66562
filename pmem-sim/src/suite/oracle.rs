//! The oracle: what every crash image must recover to.
//!
//! For one crash image it checks, in order:
//!
//! 1. the writable open (`Log::open_on`, what a restarting application does): the entries,
//!    byte-exact, against the expectation; every reader's view of them (`read` of every LSN
//!    and of the LSNs around them, `iter_from`, `len`, `first_lsn`, `last_lsn`, used and free
//!    space); the recovery report (counts, `tail_offset` where the entries end, `torn_bytes`
//!    and `tail_state` consistent with each other and with what was in flight, no `damage`);
//! 2. read-only opens of the raw image: `RecoveryMode::Salvage` (the same entries and report,
//!    no damage, no gaps) and `RecoveryMode::Strict` (refuses exactly the torn tails, never
//!    with damage, else the same entries);
//! 3. a further append (a probe): a small single entry, a batch, a large entry (the fused
//!    copy-and-checksum path with non-temporal stores) or an entry that must wrap to the start
//!    of the data area; it gets the next LSN and reads back (or fails with `Full` only when no
//!    free piece can take it);
//! 4. the recovery's own writes (its slot update, then the wipe of what follows the tail):
//!    a crash at a random point inside them (one time in two inside the wipe, when there is
//!    one) recovers the same entries, and so does the recovery after that one completes,
//!    which must find a clean end; the state after the first recovery's writes recovers the
//!    same entries with a clean end;
//! 5. with the tail hint, a full scan without it finds the same entries;
//! 6. a crash at a random point inside the probe recovers the entries with or without the
//!    probe (a batch all or nothing), and after the probe's barrier with it.

use daxlog::format::{self, DATA_OFFSET, HEADER_LEN};
use daxlog::{Error, Log, RecoveryMode, RecoveryReport, TailState};

use super::runner::Runner;
use super::segment::{Ent, Expect, Want};
use super::session::{current_slot, fits, header_offset};
use crate::rng::Rng;
use crate::{Op, PmemState, SimMedia};

/// The further append the oracle makes after a recovery.
struct Probe {
    payloads: Vec<Vec<u8>>,
    /// What it is, for messages.
    kind: &'static str,
}

impl Probe {
    fn total(&self) -> usize {
        self.payloads
            .iter()
            .map(|p| format::entry_len(p.len()))
            .sum()
    }
}

impl Runner {
    /// Checks one crash image; `Err` describes the violation.
    pub(crate) fn oracle(
        &self,
        img: &[u8],
        exp: &Expect<'_>,
        seed: u64,
        at: (usize, usize),
    ) -> Result<(), String> {
        let pers = self.variant.persistence;
        let media = SimMedia::from_image(img, pers);
        let obs = media.observer();
        let log = match Log::open_on(media, &self.opts) {
            Ok(l) => l,
            Err(e) => {
                return match exp {
                    Expect::Creating { .. } => Ok(()),
                    Expect::Log { .. } => Err(format!("open failed: {e}")),
                }
            }
        };
        // Everything the recovery wrote (its slot, then the wipe of what follows the tail).
        let rec_len = obs.ops();
        let mut rng = Rng::new(seed);
        let actual: Want<'_> = match exp {
            Expect::Creating { old } => {
                let n = log.iter().count();
                let want = Want {
                    first: 1,
                    entries: old
                        .iter()
                        .take(n)
                        .map(|v| Ent {
                            payload: v,
                            pad: false,
                            off: 0,
                        })
                        .collect(),
                };
                same(&log, &want)
                    .map_err(|m| format!("crash while creating over an old log: {m}"))?;
                want
            }
            Expect::Log {
                alts,
                acked,
                inflight,
                may_tear,
                ..
            } => {
                let actual = check_log(&log, alts, *acked, *inflight)?;
                if let Some(app) = &self.app {
                    app(at.0, at.1, &log)?;
                }
                check_readers(&log, &actual, &mut rng)?;
                check_report(log.recovery(), &actual, img, *may_tear)?;
                // Read-only opens in salvage and strict mode run the same scan and damage
                // assessment on the same image: they are checked once per distinct outcome
                // (entries, end of the log, tail state) against this expectation.
                let r = log.recovery();
                let key = outcome_key(r.entries, r.tail_offset, r.torn_bytes, &r.tail_state);
                if self.ro_seen.borrow_mut().insert(key) {
                    self.check_read_only(img, &actual, r)?;
                }
                actual
            }
        };
        let rep = log.recovery().clone();
        let n = actual.entries.len() as u64;
        let next = actual.next();
        if rep.entries != n
            || rep.last_lsn != (n > 0).then_some(next - 1)
            || rep.first_lsn != (n > 0).then_some(actual.first)
        {
            return Err(format!(
                "recovery report says {} entries (LSNs {:?}..={:?}); the log holds {}",
                rep.entries,
                rep.first_lsn,
                rep.last_lsn,
                actual.describe()
            ));
        }
        // A further append must work and read back.
        let probe = choose_probe(&mut rng, img, rep.tail_offset as usize);
        let probed = run_probe(&log, &probe, next, img, rep.tail_offset as usize)?;
        let (trace, _) = log.into_media().take_tagged_trace();
        let rec = &trace[..rec_len];

        // A crash inside the first recovery's writes: in its slot update, or in the wipe.
        let drains: Vec<usize> = (0..rec_len).filter(|&i| rec[i] == Op::Drain).collect();
        if rec_len > 1 {
            let q = if drains.len() >= 2 && rng.chance(1, 2) {
                rng.range(drains[0] + 1, drains[1])
            } else {
                rng.range(1, rec_len - 1)
            };
            self.check_nested(img, exp, &actual, rec, q, &mut rng)?;
        }
        // The first recovery completed.
        let mut st = PmemState::new(img.to_vec(), pers);
        for op in rec {
            st.apply(op);
        }
        let l3 = Log::open_on_read_only(SimMedia::from_image(st.durable(), pers), &self.opts)
            .map_err(|e| format!("second recovery (after the first completed) failed: {e}"))?;
        same(&l3, &actual).map_err(|m| format!("second recovery differs from the first: {m}"))?;
        clean_after_recovery(l3.recovery(), "the recovery after the first completed")?;
        if l3.recovery().tail_offset != rep.tail_offset {
            return Err(format!(
                "the recovery after the first completed ends the log at {}, the first at {}",
                l3.recovery().tail_offset,
                rep.tail_offset
            ));
        }
        drop(l3);
        if self.hinted {
            // The hint must change nothing but where the scan starts.
            let full = Log::open_on_read_only(SimMedia::from_image(img, pers), &self.plain_opts)
                .map_err(|e| format!("a full scan (without the tail hint) failed: {e}"))?;
            same(&full, &actual)
                .map_err(|m| format!("a full scan (without the tail hint) differs: {m}"))?;
        }
        if !probed {
            return Ok(());
        }
        // The probe's own crash images: one inside it, and the state after its barrier.
        let ops = &trace[rec_len..];
        let mut with = actual.clone();
        let off = header_offset(ops, |_| true).expect("the probe stores its entries");
        let mut at = off;
        for p in &probe.payloads {
            with.entries.push(Ent {
                payload: p,
                pad: false,
                off: at,
            });
            at += format::entry_len(p.len());
        }
        if ops.len() > 1 {
            let q = rng.range(1, ops.len() - 1);
            let mut inside = st.clone();
            for op in &ops[..q] {
                inside.apply(op);
            }
            let units = inside.crash_units(self.variant.model);
            let choice = units.random_choice(&mut rng);
            let crashed = units.image_of(&choice);
            let what = || {
                format!(
                    "after a crash inside the further append ({}, after its op {q} of {}, {})",
                    probe.kind,
                    ops.len(),
                    units.describe_of(&choice)
                )
            };
            let l = Log::open_on_read_only(SimMedia::from_vec(crashed, pers), &self.opts)
                .map_err(|e| format!("{}: open failed: {e}", what()))?;
            if same(&l, &actual).is_err() {
                same(&l, &with)
                    .map_err(|m| format!("{}: neither without nor with the append: {m}", what()))?;
            }
        }
        for op in ops {
            st.apply(op);
        }
        let l4 = Log::open_on_read_only(SimMedia::from_vec(st.into_durable(), pers), &self.opts)
            .map_err(|e| format!("recovery after the further append failed: {e}"))?;
        same(&l4, &with)
            .map_err(|m| format!("recovery after the further append ({}): {m}", probe.kind))?;
        if l4.recovery().tail_offset as usize != at {
            return Err(format!(
                "after the further append ({}) the log ends at {}, its entries at {at}",
                probe.kind,
                l4.recovery().tail_offset
            ));
        }
        Ok(())
    }

    /// Read-only opens of the raw crash image: what readers (and the command-line tool) do.
    fn check_read_only(
        &self,
        img: &[u8],
        actual: &Want<'_>,
        rep: &RecoveryReport,
    ) -> Result<(), String> {
        let pers = self.variant.persistence;
        let opts = self.opts.clone().recovery_mode(RecoveryMode::Salvage);
        let ro = Log::open_on_read_only(SimMedia::from_image(img, pers), &opts)
            .map_err(|e| format!("a read-only open (salvage mode) failed: {e}"))?;
        same(&ro, actual).map_err(|m| format!("a read-only open (salvage mode): {m}"))?;
        let r = ro.recovery();
        if r.damage.is_some() || !r.gaps.is_empty() {
            return Err(format!(
                "a read-only open (salvage mode) reports damage {:?}, gaps {:?}",
                r.damage, r.gaps
            ));
        }
        if (r.tail_offset, r.torn_bytes, &r.tail_state)
            != (rep.tail_offset, rep.torn_bytes, &rep.tail_state)
        {
            return Err(format!(
                "a read-only open (salvage mode) ends the log at {} ({:?}, {} torn bytes), the writable one at {} ({:?}, {})",
                r.tail_offset, r.tail_state, r.torn_bytes, rep.tail_offset, rep.tail_state, rep.torn_bytes
            ));
        }
        drop(ro);
        let opts = self.opts.clone().recovery_mode(RecoveryMode::Strict);
        let strict = Log::open_on_read_only(SimMedia::from_image(img, pers), &opts);
        match (strict, &rep.tail_state) {
            (
                Err(Error::Corrupted {
                    reason,
                    entries_beyond: 0,
                    ..
                }),
                TailState::Torn { .. },
            ) if reason.starts_with("torn tail refused in strict mode") => {}
            (Ok(l), TailState::Clean | TailState::EndOfFile) => {
                same(&l, actual).map_err(|m| format!("a strict open: {m}"))?
            }
            (Ok(_), state) => {
                return Err(format!(
                    "a strict open accepted a log whose tail is {state:?}"
                ))
            }
            (Err(e), state) => {
                return Err(format!(
                    "a strict open of a log whose tail is {state:?} failed: {e}"
                ))
            }
        }
        Ok(())
    }

    /// A crash after operation `q` of the first recovery's writes `rec` (a random image), then
    /// a recovery, then one more after that one's writes complete.
    fn check_nested(
        &self,
        img: &[u8],
        exp: &Expect<'_>,
        actual: &Want<'_>,
        rec: &[Op],
        q: usize,
        rng: &mut Rng,
    ) -> Result<(), String> {
        let pers = self.variant.persistence;
        let mut st = PmemState::new(img.to_vec(), pers);
        for op in &rec[..q] {
            st.apply(op);
        }
        let units = st.crash_units(self.variant.model);
        let choice = units.random_choice(rng);
        let nested = units.image_of(&choice);
        let what = || {
            format!(
                "after a crash inside the first recovery's writes (after its op {q} of {}: {}, {})",
                rec.len(),
                rec[q - 1].describe(),
                units.describe_of(&choice)
            )
        };
        let media = SimMedia::from_image(&nested, pers);
        let obs = media.observer();
        let l2 =
            Log::open_on(media, &self.opts).map_err(|e| format!("{}: open failed: {e}", what()))?;
        let got = match exp {
            // A crash inside create_on over an old log may leave that log's newest slot
            // torn by the creation's zeroing; the first recovery then used the older slot,
            // and its own slot write (the same sequence number, at the same place) can make
            // the newest slot whole again. The old log's entries are all that must hold
            // then: the creation was never acknowledged.
            Expect::Creating { old } => {
                let n = l2.iter().count();
                let want = Want {
                    first: 1,
                    entries: old
                        .iter()
                        .take(n)
                        .map(|v| Ent {
                            payload: v,
                            pad: false,
                            off: 0,
                        })
                        .collect(),
                };
                same(&l2, &want).map_err(|m| format!("{}: {m}", what()))?;
                want
            }
            // A truncation torn in its slot update leaves that slot partly written; the
            // first recovery, finding it invalid, writes its own slot with the same
            // sequence number at the same place, and a crash inside that write can
            // complete the torn one (the words they share persist from either, and the
            // words that differ all from the truncation). The interrupted recovery
            // returned nothing, and the truncation was in flight: its completion is
            // acceptable here (but not after the first recovery completed).
            Expect::Log {
                alts, truncating, ..
            } => match same(&l2, actual) {
                Ok(()) => actual.clone(),
                Err(m) => match alts.iter().find(|a| same(&l2, a).is_ok()) {
                    Some(a) if *truncating => a.clone(),
                    _ => return Err(format!("{}: {m}", what())),
                },
            },
        };
        // That recovery completes; the next one finds the same entries and a clean end.
        let n = obs.ops();
        let (trace, _) = l2.into_media().take_tagged_trace();
        let mut done = PmemState::new(nested, pers);
        for op in &trace[..n] {
            done.apply(op);
        }
        let l3 = Log::open_on_read_only(SimMedia::from_vec(done.into_durable(), pers), &self.opts)
            .map_err(|e| {
                format!(
                    "{}, then a completed recovery: the next open failed: {e}",
                    what()
                )
            })?;
        same(&l3, &got).map_err(|m| {
            format!(
                "{}, then a completed recovery: the next one differs: {m}",
                what()
            )
        })?;
        clean_after_recovery(
            l3.recovery(),
            &format!("{}, then a completed recovery: the next one", what()),
        )
    }
}

/// A hash of a recovery's outcome.
fn outcome_key(entries: u64, tail: u64, torn: u64, state: &TailState) -> u64 {
    let s = match state {
        TailState::Clean => 1,
        TailState::EndOfFile => 2,
        TailState::Torn { reason } => 3 ^ crate::rng::hash_str(reason),
        _ => 4,
    };
    crate::rng::mix(entries, &[tail, torn, s])
}

/// The probe for this image: a small entry, a batch, a large entry or one that must wrap.
fn choose_probe(rng: &mut Rng, img: &[u8], tail: usize) -> Probe {
    let small = |rng: &mut Rng| {
        let n = rng.range(0, 40);
        rng.bytes(n)
    };
    match rng.below(4) {
        1 => {
            let k = rng.range(2, 3);
            Probe {
                payloads: (0..k)
                    .map(|_| {
                        let n = rng.range(0, 60);
                        rng.bytes(n)
                    })
                    .collect(),
                kind: "a batch",
            }
        }
        2 => {
            let n = rng.range(512, 1200);
            Probe {
                payloads: vec![rng.bytes(n)],
                kind: "a large entry",
            }
        }
        3 => {
            // Too long for the rest of the file, short enough for the start of the data area.
            let (sb, slot) = current_slot(img);
            let (cap, head) = (sb.capacity as usize, slot.head_offset as usize);
            let min = (cap.saturating_sub(tail) + 8).max(HEADER_LEN);
            let max = head.saturating_sub(DATA_OFFSET + 16);
            if tail >= head && tail < cap && min <= max {
                let total = rng.range(min, max) & !7;
                let total = total.max(min.next_multiple_of(8));
                Probe {
                    payloads: vec![rng.bytes(total - HEADER_LEN)],
                    kind: "an entry that wraps",
                }
            } else {
                Probe {
                    payloads: vec![small(rng)],
                    kind: "a small entry",
                }
            }
        }
        _ => Probe {
            payloads: vec![small(rng)],
            kind: "a small entry",
        },
    }
}

/// Makes the probe append; true if it was made (false: `Full`, allowed only when no free piece
/// can take it).
fn run_probe(
    log: &Log<SimMedia>,
    probe: &Probe,
    next: u64,
    img: &[u8],
    tail: usize,
) -> Result<bool, String> {
    let refs: Vec<&[u8]> = probe.payloads.iter().map(|p| p.as_slice()).collect();
    let r = if refs.len() == 1 {
        log.append(refs[0]).map(|l| l..l + 1)
    } else {
        log.append_batch(&refs)
    };
    match r {
        Ok(lsns) if lsns == (next..next + refs.len() as u64) => {
            for (lsn, p) in lsns.zip(&refs) {
                match log.read(lsn) {
                    Some(e) if e.payload == *p => {}
                    _ => {
                        return Err(format!(
                            "the append after recovery ({}, LSN {lsn}) does not read back",
                            probe.kind
                        ))
                    }
                }
            }
            Ok(true)
        }
        Ok(lsns) => Err(format!(
            "the append after recovery ({}) got LSNs {lsns:?}, expected from {next}",
            probe.kind
        )),
        // Full only if no piece of free space can take it (FORMAT.md, the wrap rule).
        Err(Error::Full { .. }) if !fits(img, tail, probe.total()) => Ok(false),
        Err(e) => Err(format!(
            "the append after recovery ({}) failed: {e}",
            probe.kind
        )),
    }
}

/// The recovery report against the entries found: where the log ends, and what it says of
/// the bytes after that.
fn check_report(
    rep: &RecoveryReport,
    want: &Want<'_>,
    img: &[u8],
    may_tear: bool,
) -> Result<(), String> {
    let (sb, slot) = current_slot(img);
    let cap = sb.capacity as usize;
    let head = slot.head_offset as usize;
    let tail = match want.entries.last() {
        Some(e) => e.off + e.bytes(),
        None => head,
    };
    if rep.tail_offset as usize != tail {
        return Err(format!(
            "the recovery report puts the end of the log at {}, its entries end at {tail}",
            rep.tail_offset
        ));
    }
    if rep.damage.is_some() || !rep.gaps.is_empty() {
        return Err(format!(
            "the recovery report names damage {:?} (gaps {:?})",
            rep.damage, rep.gaps
        ));
    }
    // The area the end of the log is in: up to the head once wrapped, else to the file's end.
    let area_end = if tail < head { head } else { cap };
    match &rep.tail_state {
        TailState::Torn { reason } => {
            if !may_tear {
                return Err(format!(
                    "recovery reports a torn tail ({reason}, {} bytes) although no append was in flight",
                    rep.torn_bytes
                ));
            }
            if rep.torn_bytes == 0
                || !rep.torn_bytes.is_multiple_of(8)
                || rep.torn_bytes as usize > cap - DATA_OFFSET
            {
                return Err(format!(
                    "recovery reports {} torn bytes ({reason}); they must be a positive multiple of 8 within the data area ({} bytes)",
                    rep.torn_bytes,
                    cap - DATA_OFFSET
                ));
            }
        }
        TailState::EndOfFile if area_end - tail >= HEADER_LEN => {
            return Err(format!(
                "recovery reports the end of the area at {tail}, {} bytes before it",
                area_end - tail
            ));
        }
        TailState::Clean | TailState::EndOfFile if rep.torn_bytes != 0 => {
            return Err(format!(
                "recovery reports a {:?} end and {} torn bytes",
                rep.tail_state, rep.torn_bytes
            ));
        }
        TailState::Clean | TailState::EndOfFile => {}
        other => return Err(format!("unknown tail state {other:?}")),
    }
    Ok(())
}

/// After a writable open completed its writes (its slot, then the wipe of what follows the
/// tail), the next recovery finds a clean end: no torn tail, no torn bytes.
fn clean_after_recovery(rep: &RecoveryReport, who: &str) -> Result<(), String> {
    match rep.tail_state {
        TailState::Clean | TailState::EndOfFile if rep.torn_bytes == 0 => Ok(()),
        _ => Err(format!(
            "{who} reports a {:?} end with {} torn bytes: the first recovery left remains after the tail",
            rep.tail_state, rep.torn_bytes
        )),
    }
}

/// What every reader sees: `read` of each LSN (padding reads as nothing) and of the LSNs
/// around them, `iter_from` a random LSN, the counts and the space used.
fn check_readers(log: &Log<SimMedia>, want: &Want<'_>, rng: &mut Rng) -> Result<(), String> {
    let n = want.entries.len() as u64;
    let (first, next) = (want.first, want.next());
    let got = (log.len(), log.first_lsn(), log.last_lsn(), log.is_empty());
    let expected = (
        n,
        (n > 0).then_some(first),
        (n > 0).then_some(next - 1),
        n == 0,
    );
    if got != expected {
        return Err(format!(
            "len, first_lsn, last_lsn, is_empty are {got:?}, expected {expected:?}"
        ));
    }
    for (k, e) in want.entries.iter().enumerate() {
        let lsn = first + k as u64;
        match (log.read(lsn), e.pad) {
            (Some(r), false) if r.lsn == lsn && r.payload == e.payload => {}
            (None, true) => {}
            (r, _) => {
                return Err(format!(
                    "read({lsn}) gives {:?}, expected {}",
                    r.map(|r| (r.lsn, short(&r.payload))),
                    if e.pad {
                        "nothing (padding)".to_string()
                    } else {
                        short(e.payload)
                    }
                ))
            }
        }
    }
    for lsn in [first.saturating_sub(1), next, next + 1] {
        if let Some(r) = log.read(lsn) {
            return Err(format!(
                "read({lsn}) outside the log ({}) gives LSN {} ({})",
                want.describe(),
                r.lsn,
                short(&r.payload)
            ));
        }
    }
    let from = rng.range(first.saturating_sub(1) as usize, next as usize + 1) as u64;
    let guard = log.pin();
    let got: Vec<(u64, &[u8])> = guard.iter_from(from).map(|e| (e.lsn, e.payload)).collect();
    let expected: Vec<(u64, &[u8])> = want
        .entries
        .iter()
        .enumerate()
        .map(|(k, e)| (first + k as u64, e))
        .filter(|(lsn, e)| *lsn >= from && !e.pad)
        .map(|(lsn, e)| (lsn, e.payload))
        .collect();
    if got != expected {
        return Err(format!(
            "iter_from({from}) yields LSNs {:?}, expected {:?}",
            got.iter().map(|g| g.0).collect::<Vec<_>>(),
            expected.iter().map(|g| g.0).collect::<Vec<_>>()
        ));
    }
    let space = log.space();
    let used = want.bytes() as u64;
    let data = log.capacity() - DATA_OFFSET as u64;
    if (log.used_bytes(), log.free_bytes(), space.used, space.free)
        != (used, data - used, used, data - used)
    {
        return Err(format!(
            "used/free bytes are {}/{} (space: {:?}); the entries take {used} of {data}",
            log.used_bytes(),
            log.free_bytes(),
            space
        ));
    }
    Ok(())
}

fn short(p: &[u8]) -> String {
    let hex: String = p.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "{} bytes {hex}{}",
        p.len(),
        if p.len() > 8 { ".." } else { "" }
    )
}

/// The log's entries must be exactly `want`, with LSNs `want.first`, `want.first + 1`, ...
/// (readers skip padding).
pub(crate) fn same(log: &Log<SimMedia>, want: &Want<'_>) -> Result<(), String> {
    let mut expected = want
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.pad)
        .map(|(k, e)| (want.first + k as u64, e.payload));
    for e in log.iter() {
        match expected.next() {
            None => {
                return Err(format!(
                    "unexpected entry LSN {} ({}) after the {} expected",
                    e.lsn,
                    short(&e.payload),
                    want.entries.len()
                ))
            }
            Some((lsn, _)) if e.lsn != lsn => {
                return Err(format!("entry LSN {} found where LSN {lsn} belongs", e.lsn))
            }
            Some((lsn, w)) if w != e.payload => {
                return Err(format!(
                    "entry LSN {lsn} is {}, expected {}",
                    short(&e.payload),
                    short(w)
                ))
            }
            _ => {}
        }
    }
    if let Some((lsn, _)) = expected.next() {
        return Err(format!(
            "the log holds fewer entries than expected ({}; LSN {lsn} missing)",
            want.describe()
        ));
    }
    if log.next_lsn() != want.next() {
        return Err(format!(
            "the next LSN is {}, expected {}",
            log.next_lsn(),
            want.next()
        ));
    }
    Ok(())
}

/// The log's entries must be one of `alts`.
pub(crate) fn check_log<'a>(
    log: &Log<SimMedia>,
    alts: &[Want<'a>],
    acked: usize,
    inflight: usize,
) -> Result<Want<'a>, String> {
    let n = log.len() as usize;
    let first = log.first_lsn().unwrap_or_else(|| log.next_lsn());
    let ctx = || {
        format!(
            "[acceptable: {}; appends and truncations acknowledged: {acked}, in flight: {inflight}]",
            alts.iter()
                .map(|a| a.describe())
                .collect::<Vec<_>>()
                .join(" or ")
        )
    };
    // An alternative with the same first LSN and length that matches (alternatives on both
    // sides of a suffix truncation may share them), else the first with the same first LSN
    // and length, else the one with the same first LSN and the nearest length (for the
    // message), else the first.
    let sized = || {
        alts.iter()
            .filter(|a| a.first == first && a.entries.len() == n)
    };
    if let Some(a) = sized().find(|a| same(log, a).is_ok()) {
        return Ok(a.clone());
    }
    let pick = sized()
        .next()
        .or_else(|| {
            alts.iter()
                .filter(|a| a.first == first)
                .min_by_key(|a| a.entries.len().abs_diff(n))
        })
        .unwrap_or(&alts[0]);
    same(log, pick).map_err(|m| format!("{m} {}", ctx()))?;
    Ok(pick.clone())
}
