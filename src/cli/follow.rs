//! `daxlog follow`: print entries as the writer appends them, like `tail -f`.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::records::encode_hex;
use super::{CliError, EXIT_OK};
use crate::{Error, Lsn, Reader};

#[derive(Args, Debug)]
pub(crate) struct FollowArgs {
    /// The log file (a writer in another process may be appending to it).
    path: PathBuf,
    /// First LSN to print [default: the entries appended from now on]; 0 or 1: from the
    /// first entry the log holds.
    #[arg(long, value_name = "LSN")]
    from: Option<Lsn>,
    /// Prefix each payload with its LSN and a tab.
    #[arg(long, conflicts_with = "json")]
    lsn: bool,
    /// One JSON object per entry, as `dump --json` prints them.
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds without a new entry [default: never].
    #[arg(long, value_name = "SECONDS", value_parser = parse_idle)]
    idle_exit: Option<f64>,
}

/// `--idle-exit` values: a finite number of seconds above 0, at most a day.
fn parse_idle(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!("'{text}' is not a number of seconds in (0, 86400]")),
    }
}

/// True if stdout is a pipe or socket whose reader has gone (`daxlog follow LOG | head`): a
/// write would fail with EPIPE, but while the log is idle nothing is written. (`tail -f` polls
/// its output the same way.)
fn stdout_reader_gone() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// What a command printing a live log's entries through a [`Reader`] (`follow`, `cat` and
/// `dump` beside a writer) has printed: which entries it prints (none below its `--from`: a
/// reader sent back by a suffix truncation below it walks them again), and whether a suffix
/// truncation the reader reports ([`Error::Rewound`]) deleted any of them.
pub(crate) struct Printed {
    /// `--from` and `--to`.
    floor: Lsn,
    to: Lsn,
    /// The last entry printed in the log's present history (below `floor` where a suffix
    /// truncation below `floor` deleted what was printed, or nothing was).
    last: Lsn,
}

impl Printed {
    pub(crate) fn new(from: Option<Lsn>, to: Option<Lsn>) -> Self {
        Printed {
            floor: from.unwrap_or(0),
            to: to.unwrap_or(Lsn::MAX),
            last: 0,
        }
    }

    /// Whether entry `lsn` is to be printed; if so, it counts as printed.
    pub(crate) fn take(&mut self, lsn: Lsn) -> bool {
        if lsn < self.floor {
            return false;
        }
        self.last = lsn;
        true
    }

    /// A suffix truncation deleted the entries from `from` on: true if it deleted some that
    /// were printed (the reader returns the new ones from `from`, and they are printed again).
    pub(crate) fn rewound(&mut self, from: Lsn) -> bool {
        let printed = self.last >= self.floor && from <= self.last;
        if printed {
            self.last = from - 1;
        }
        printed
    }

    /// Of the LSNs `first..=last`, which a truncation took before the reader got to them, those
    /// that were to be printed (between `--from` and `--to`), if any.
    pub(crate) fn missed(&self, first: Lsn, last: Lsn) -> Option<(Lsn, Lsn)> {
        let (first, last) = (first.max(self.floor), last.min(self.to));
        (first <= last).then_some((first, last))
    }
}

/// Says on stderr that a truncation overtook the reader: for [`Error::Truncated`], with the
/// LSNs it took that were to be printed (`Printed::missed`), if any.
pub(crate) fn warn_truncated(e: Error, printed: &Printed) {
    let e = match e {
        Error::Truncated {
            path,
            first_missed,
            last_missed,
        } => match printed.missed(first_missed, last_missed) {
            Some((first_missed, last_missed)) => Error::Truncated {
                path,
                first_missed,
                last_missed,
            },
            None => return,
        },
        e => e,
    };
    // (Not `eprintln!`, which panics where stderr is a closed pipe.)
    let _ = writeln!(io::stderr().lock(), "warning: {e}");
}

/// How long to wait for the next entry after `idle` without one: a tenth of a second (between
/// looks at SIGINT, SIGTERM and a closed stdout), or what is left of `--idle-exit` if less, so
/// that it ends when its time is up, not at the next tenth.
fn wait(idle_limit: Option<Duration>, idle: Duration) -> Duration {
    let tick = Duration::from_millis(100);
    idle_limit.map_or(tick, |l| tick.min(l.saturating_sub(idle)))
}

/// Prints entries as they become durable, until SIGINT or SIGTERM (exit 0), a closed stdout
/// (exit 0) or `--idle-exit`. Truncations that overtake it are said on stderr, with the LSNs
/// it could not print.
pub(crate) fn follow(a: FollowArgs) -> Result<u8, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| CliError::Failed(format!("cannot handle signal {sig}: {e}")))?;
    }
    let mut r =
        Reader::open_waiting(&a.path, super::lock_wait()).map_err(CliError::log(&a.path))?;
    let mut payload = Vec::new();
    let from = match a.from {
        Some(l) => l,
        None => {
            r.refresh().map_err(CliError::log(&a.path))?;
            r.published().unwrap_or(0).max(r.first_lsn())
        }
    };
    r.seek(from).map_err(CliError::log(&a.path))?;
    if a.from.is_none() && r.published().is_none() {
        // No published end to start from (a version-1 log, which no writer of a later
        // version has opened): every valid entry is readable, so the entries appended from
        // now on begin after the last of them.
        loop {
            match r.next_into(&mut payload) {
                Ok(Some(_)) | Err(Error::Truncated { .. }) => {}
                Ok(None) => break,
                Err(e) => return Err(CliError::log(&a.path)(e)),
            }
        }
    }
    let mut printed = Printed::new(a.from, None);
    let mut out = BufWriter::with_capacity(64 << 10, io::stdout().lock());
    let mut line = Vec::new();
    let idle_limit = a.idle_exit.map(Duration::from_secs_f64);
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Print what is there at once; wait only when caught up (then flush).
        let got = match r.next_into(&mut payload) {
            Ok(None) => {
                out.flush()?;
                r.next_into_timeout(&mut payload, wait(idle_limit, idle_since.elapsed()))
            }
            other => other,
        };
        match got {
            Ok(Some(lsn)) if !printed.take(lsn) => {}
            Ok(Some(lsn)) => {
                idle_since = Instant::now();
                line.clear();
                if a.json {
                    write!(line, "{{\"lsn\":{lsn},\"len\":{},\"hex\":\"", payload.len())?;
                    encode_hex(&payload, &mut line);
                    line.extend_from_slice(b"\"}\n");
                } else {
                    if a.lsn {
                        write!(line, "{lsn}\t")?;
                    }
                    line.extend_from_slice(String::from_utf8_lossy(&payload).as_bytes());
                    line.push(b'\n');
                }
                out.write_all(&line)?;
            }
            Ok(None) => {
                if idle_limit.is_some_and(|l| idle_since.elapsed() >= l) || stdout_reader_gone() {
                    break;
                }
            }
            // (A suffix truncation of nothing printed: the entries that replace what it
            // deleted follow, a follow from now on prints them as appended after its start.)
            Err(Error::Rewound { from, .. }) if !printed.rewound(from) => {}
            Err(e @ (Error::Truncated { .. } | Error::Rewound { .. })) => {
                out.flush()?;
                warn_truncated(e, &printed);
            }
            Err(e) => {
                out.flush()?;
                return Err(CliError::log(&a.path)(e));
            }
        }
    }
    out.flush()?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_entries_are_those_from_the_floor_and_a_rewind_concerns_only_them() {
        let mut p = Printed::new(Some(10), Some(20));
        assert!(!p.take(9));
        // A suffix truncation of entries passed, none printed: nothing to say.
        assert!(!p.rewound(5));
        assert_eq!(p.missed(1, 9), None);
        assert_eq!(p.missed(5, 10), Some((10, 10)));
        assert_eq!(p.missed(20, 30), Some((20, 20)));
        assert_eq!(p.missed(12, 15), Some((12, 15)));
        assert_eq!(p.missed(1, 100), Some((10, 20)));
        assert_eq!(p.missed(21, 30), None);
        assert!(p.take(10) && p.take(11) && p.take(12));
        assert!(!p.rewound(13));
        assert!(p.rewound(12));
        // The new entry 12 is printed again; a deletion from 12 again concerns it.
        assert!(!p.rewound(12));
        assert!(p.take(12));
        assert!(p.rewound(12));
        // Printed entries deleted by a truncation below the floor; another below it, before
        // anything is printed again, deletes nothing printed.
        assert!(p.take(12));
        assert!(p.rewound(7));
        assert!(!p.rewound(6));
        assert!(!p.take(9) && p.take(10));
        assert!(p.rewound(6));
        let mut p = Printed::new(None, None);
        assert!(p.take(1));
        assert!(p.rewound(1));
    }

    #[test]
    fn idle_exit_waits_no_longer_than_asked() {
        let ms = Duration::from_millis;
        assert_eq!(wait(None, ms(5000)), ms(100));
        assert_eq!(wait(Some(ms(1)), ms(0)), ms(1));
        assert_eq!(wait(Some(ms(150)), ms(100)), ms(50));
        assert_eq!(wait(Some(ms(150)), ms(20)), ms(100));
        assert_eq!(wait(Some(ms(150)), ms(151)), ms(0));
    }
}
