//! The oracle: what every crash image must recover to.

use daxlog::format;
use daxlog::{Error, Log};

use super::runner::Runner;
use super::segment::{Expect, Want};
use super::session::fits;
use crate::rng::Rng;
use crate::{Op, PmemState, SimMedia};

impl Runner {
    /// Checks one crash image; `Err` describes the violation.
    pub(crate) fn oracle(&self, img: &[u8], exp: &Expect<'_>, seed: u64) -> Result<(), String> {
        let pers = self.variant.persistence;
        let log = match Log::open_on(SimMedia::from_image(img, pers), &self.opts) {
            Ok(l) => l,
            Err(e) => {
                return match exp {
                    Expect::Creating { .. } => Ok(()),
                    Expect::Log { .. } => Err(format!("open failed: {e}")),
                }
            }
        };
        let actual: Want<'_> = match exp {
            Expect::Creating { old } => {
                let n = log.iter().count();
                let want = Want {
                    first: 1,
                    entries: old.iter().take(n).map(|v| v.as_slice()).collect(),
                };
                same(&log, &want)
                    .map_err(|m| format!("crash while creating over an old log: {m}"))?;
                want
            }
            Expect::Log {
                alts,
                acked,
                inflight,
                ..
            } => check_log(&log, alts, *acked, *inflight)?,
        };
        let n = actual.entries.len() as u64;
        let next = actual.next();
        let rep = log.recovery();
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
        let rep_tail = rep.tail_offset as usize;
        let mut rng = Rng::new(seed);
        let probe_len = rng.range(0, 40);
        let probe = rng.bytes(probe_len);
        let probed = match log.append(&probe) {
            Ok(l) if l == next => match log.read(l) {
                Some(e) if e.payload == probe.as_slice() => true,
                _ => {
                    return Err(format!(
                        "the append after recovery (LSN {l}) does not read back"
                    ))
                }
            },
            Ok(l) => {
                return Err(format!(
                    "the append after recovery got LSN {l}, expected {next}"
                ))
            }
            // Full only if no piece of free space can take it (FORMAT.md, the wrap rule).
            Err(Error::Full { .. }) if !fits(img, rep_tail, format::entry_len(probe.len())) => {
                false
            }
            Err(e) => return Err(format!("the append after recovery failed: {e}")),
        };
        let (trace, _) = log.into_media().take_tagged_trace();
        // Replay what the first recovery wrote, and crash inside it.
        let rec_end = trace
            .iter()
            .position(|o| *o == Op::Drain)
            .map_or(trace.len(), |i| i + 1);
        let mut st = PmemState::new(img.to_vec(), pers);
        let mut done = 0;
        if rec_end > 1 {
            let q = rng.range(1, rec_end - 1);
            for op in &trace[..q] {
                st.apply(op);
            }
            done = q;
            let units = st.crash_units(self.variant.model);
            let choice = units.random_choice(&mut rng);
            let nested = units.image_of(&choice);
            let again = Log::open_on(SimMedia::from_vec(nested, pers), &self.opts);
            let what = || {
                format!(
                    "after a crash inside the first recovery's writes (after its op {q} of {rec_end}, {})",
                    units.describe_of(&choice)
                )
            };
            match again {
                // A crash inside create_on over an old log may leave that log's newest slot
                // torn by the creation's zeroing; the first recovery then used the older slot,
                // and its own slot write (the same sequence number, at the same place) can make
                // the newest slot whole again. The old log's entries are all that must hold
                // then: the creation was never acknowledged.
                Ok(l2) => match exp {
                    Expect::Creating { old } => {
                        let n = l2.iter().count();
                        let want = Want {
                            first: 1,
                            entries: old.iter().take(n).map(|v| v.as_slice()).collect(),
                        };
                        same(&l2, &want).map_err(|m| format!("{}: {m}", what()))?
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
                    } => {
                        if let Err(m) = same(&l2, &actual) {
                            if !(*truncating && alts.iter().any(|a| same(&l2, a).is_ok())) {
                                return Err(format!("{}: {m}", what()));
                            }
                        }
                    }
                },
                Err(e) => return Err(format!("{}: open failed: {e}", what())),
            }
        }
        for op in &trace[done..rec_end] {
            st.apply(op);
        }
        let l3 = Log::open_on_read_only(SimMedia::from_image(st.durable(), pers), &self.opts)
            .map_err(|e| format!("second recovery (after the first completed) failed: {e}"))?;
        same(&l3, &actual).map_err(|m| format!("second recovery differs from the first: {m}"))?;
        drop(l3);
        if self.hinted {
            // The hint must change nothing but where the scan starts.
            let full = Log::open_on_read_only(SimMedia::from_image(img, pers), &self.plain_opts)
                .map_err(|e| format!("a full scan (without the tail hint) failed: {e}"))?;
            same(&full, &actual)
                .map_err(|m| format!("a full scan (without the tail hint) differs: {m}"))?;
        }
        if probed {
            for op in &trace[rec_end..] {
                st.apply(op);
            }
            let l4 =
                Log::open_on_read_only(SimMedia::from_vec(st.into_durable(), pers), &self.opts)
                    .map_err(|e| format!("recovery after the further append failed: {e}"))?;
            let mut want = actual.clone();
            want.entries.push(&probe);
            same(&l4, &want).map_err(|m| format!("recovery after the further append: {m}"))?;
        }
        Ok(())
    }
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
fn same(log: &Log<SimMedia>, want: &Want<'_>) -> Result<(), String> {
    let mut n = 0usize;
    for (i, e) in log.iter().enumerate() {
        let lsn = want.first + i as u64;
        if e.lsn != lsn {
            return Err(format!(
                "entry {} carries LSN {}, expected {lsn}",
                i + 1,
                e.lsn
            ));
        }
        match want.entries.get(i) {
            None => {
                return Err(format!(
                    "unexpected entry LSN {} ({}) after the {} expected",
                    e.lsn,
                    short(e.payload),
                    want.entries.len()
                ))
            }
            Some(w) if *w != e.payload => {
                return Err(format!(
                    "entry LSN {} is {}, expected {}",
                    e.lsn,
                    short(e.payload),
                    short(w)
                ))
            }
            _ => {}
        }
        n += 1;
    }
    if n < want.entries.len() {
        return Err(format!(
            "the log holds {n} entries, expected {} (LSN {} missing)",
            want.entries.len(),
            want.first + n as u64
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
fn check_log<'a>(
    log: &Log<SimMedia>,
    alts: &[Want<'a>],
    acked: usize,
    inflight: usize,
) -> Result<Want<'a>, String> {
    let n = log.iter().count();
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
    // The alternative with the same first LSN and length, else the one with the same first
    // LSN and the nearest length (for the message), else the first.
    let pick = alts
        .iter()
        .find(|a| a.first == first && a.entries.len() == n)
        .or_else(|| {
            alts.iter()
                .filter(|a| a.first == first)
                .min_by_key(|a| a.entries.len().abs_diff(n))
        })
        .unwrap_or(&alts[0]);
    same(log, pick).map_err(|m| format!("{m} {}", ctx()))?;
    Ok(pick.clone())
}
