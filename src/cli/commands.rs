//! `create`, `dump`, `cat`, `truncate` and `reset`.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args};

use super::records::encode_hex;
use super::size::{human, parse_size};
use super::{count, print_done, warn_if_not_durable, CliError, EXIT_OK};
use crate::format::{CAPACITY_ALIGN, MAX_CAPACITY, MIN_CAPACITY};
use crate::{Error, Log, Lsn, Options, Reader, RecoveryMode};

/// `--capacity` values: a size from 8192 bytes to 64 TiB (the caller rounds it up to a
/// multiple of 4096 with [`round_capacity`]).
pub(crate) fn parse_capacity(text: &str) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if bytes < MIN_CAPACITY {
        return Err(format!(
            "{} is below the minimum capacity: the smallest valid capacity is {MIN_CAPACITY} \
             bytes ({})",
            count(bytes, "byte", "bytes"),
            human(MIN_CAPACITY)
        ));
    }
    if bytes > MAX_CAPACITY {
        return Err(format!(
            "{bytes} bytes is above the maximum capacity: the largest valid capacity is \
             {MAX_CAPACITY} bytes ({})",
            human(MAX_CAPACITY)
        ));
    }
    Ok(bytes)
}

/// `bytes` rounded up to a multiple of 4096 (a valid capacity if `bytes` passed
/// [`parse_capacity`]).
pub(crate) fn round_capacity(bytes: u64) -> u64 {
    bytes.next_multiple_of(CAPACITY_ALIGN)
}

/// `--mode` values: permission bits in octal (`600`, `0640`, `0o644`), at most `777`.
fn parse_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if !digits.is_empty() && !digits.starts_with('+') && m <= 0o777 => Ok(m),
        _ => Err(format!(
            "'{text}' is not a file mode: expected permission bits in octal, such as 600, 640 or \
             644 (at most 777)"
        )),
    }
}

/// `--first-lsn` values: 1 to 2^63 - 1.
fn parse_first_lsn(text: &str) -> Result<Lsn, String> {
    const MAX: Lsn = u64::MAX / 2;
    match text.trim().parse::<Lsn>() {
        Ok(0) => Err("LSNs start at 1".into()),
        Ok(n) if n <= MAX => Ok(n),
        Ok(_) => Err(format!("the first LSN is at most {MAX}")),
        Err(_) => Err(format!("'{text}' is not an LSN (a whole number from 1)")),
    }
}

#[derive(Args, Debug)]
pub(crate) struct CreateArgs {
    /// The log file to create.
    path: PathBuf,
    /// Total file size, at least 8192 bytes, rounded up to a multiple of 4096 (64MiB, 1GiB,
    /// 512KiB, 1GB, 8192, ...).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_capacity)]
    capacity: u64,
    /// Permission bits of the new file, in octal; the umask applies.
    #[arg(long, value_name = "OCTAL", default_value = "600", value_parser = parse_mode)]
    mode: u32,
    /// The LSN of the first entry (a log that continues another keeps its LSNs).
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_first_lsn)]
    first_lsn: Lsn,
    /// Replace the file if it exists (its contents are lost), once the new log is complete.
    #[arg(long)]
    force: bool,
    /// Write zeros over the whole file once: on a disk-backed file system (the msync path),
    /// no append of the log's first lap then waits for the blocks ahead of it to be written
    /// (docs/DISK.md).
    #[arg(long)]
    prefill: bool,
}

pub(crate) fn create(a: CreateArgs) -> Result<u8, CliError> {
    let capacity = round_capacity(a.capacity);
    if capacity != a.capacity {
        let _ = writeln!(
            io::stderr().lock(),
            "note: --capacity {} bytes is not a multiple of 4096: rounded up to {capacity} bytes",
            a.capacity
        );
    }
    let opts = super::env_options()
        .capacity(capacity)
        .mode(a.mode)
        .first_lsn(a.first_lsn)
        .overwrite(a.force)
        .prefill(a.prefill);
    let log = Log::create(&a.path, &opts).map_err(CliError::log(&a.path))?;
    warn_if_not_durable(&log, "the new log and its appends are");
    let text = format!(
        "created {}: capacity {} bytes ({}), uuid {}, persistence {}, first LSN {}\n",
        a.path.display(),
        log.capacity(),
        human(log.capacity()),
        log.uuid(),
        log.persistence().name(),
        log.next_lsn()
    );
    print_done(&a.path, "the log was created", &text)?;
    Ok(EXIT_OK)
}

/// The LSN range shared by `dump` and `cat`.
#[derive(Args, Debug)]
pub(crate) struct Range {
    /// First LSN to print (default: the first entry).
    #[arg(long, value_name = "LSN")]
    from: Option<Lsn>,
    /// Last LSN to print, inclusive (default: the last entry); not below --from.
    #[arg(long, value_name = "LSN")]
    to: Option<Lsn>,
}

impl Range {
    /// Refuses a `--from` above `--to` (a range that holds no LSN, whatever the log holds) as
    /// a usage error of `command`, before the log is opened.
    fn check(&self, command: &'static str) -> Result<(), CliError> {
        match (self.from, self.to) {
            (Some(from), Some(to)) if from > to => Err(CliError::Usage {
                command,
                message: format!(
                    "--from {from} is above --to {to}: the range holds no LSN; give a --from \
                     at most --to"
                ),
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Args, Debug)]
pub(crate) struct DumpArgs {
    /// The log file.
    path: PathBuf,
    /// One JSON object per entry: {"lsn":N,"len":L,"hex":"..."}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    range: Range,
}

#[derive(Args, Debug)]
pub(crate) struct CatArgs {
    /// The log file.
    path: PathBuf,
    /// Prefix each payload with its LSN and a tab.
    #[arg(long)]
    lsn: bool,
    /// End each payload with a NUL byte instead of a newline (like `find -print0`), and print
    /// the bytes as they are.
    #[arg(short = '0', long)]
    null: bool,
    #[command(flatten)]
    range: Range,
}

/// Calls `each` for the readable entries of `range`, in LSN order: the entries before any
/// damage (the log is opened read-only in salvage mode). Damage is an error once they are
/// printed.
fn for_each_entry(
    path: &Path,
    range: &Range,
    mut each: impl FnMut(Lsn, &[u8]) -> io::Result<()>,
) -> Result<u8, CliError> {
    // (No wait for a writer: its log is read live.)
    let opts = Options::new().recovery_mode(RecoveryMode::Salvage);
    let log = match super::unless_replaced(|| Log::open_read_only(path, &opts)) {
        Ok(log) => log,
        Err(e) if super::writer_has_it(&e) => return for_each_live_entry(path, range, each),
        Err(e) => return Err(CliError::log(path)(e)),
    };
    let to = range.to.unwrap_or(Lsn::MAX);
    let guard = log.pin();
    for e in guard.iter_from(range.from.unwrap_or(0)) {
        if e.lsn > to {
            break;
        }
        each(e.lsn, e.payload)?;
    }
    damage_error(path, &log)?;
    Ok(EXIT_OK)
}

/// [`for_each_entry`] while a writer has the log open: a [`Reader`] copies each published
/// entry out and validates it; what the writer appends meanwhile is printed too, up to where
/// the reader catches up. Truncations that overtake the reader are said on stderr.
fn for_each_live_entry(
    path: &Path,
    range: &Range,
    mut each: impl FnMut(Lsn, &[u8]) -> io::Result<()>,
) -> Result<u8, CliError> {
    let mut r = Reader::open_waiting(path, super::lock_wait()).map_err(CliError::log(path))?;
    r.seek(range.from.unwrap_or(0))
        .map_err(CliError::log(path))?;
    let to = range.to.unwrap_or(Lsn::MAX);
    let mut printed = super::follow::Printed::new(range.from, range.to);
    let mut payload = Vec::new();
    loop {
        match r.next_into(&mut payload) {
            Ok(Some(lsn)) if lsn > to => break,
            Ok(Some(lsn)) if !printed.take(lsn) => {}
            Ok(Some(lsn)) => each(lsn, &payload)?,
            Ok(None) => break,
            // A suffix truncation of nothing printed yet (entries the seek to `--from`
            // passed): the entries that replace them follow.
            Err(Error::Rewound { from, .. }) if !printed.rewound(from) => {}
            // Entries truncated away before they were printed: said, and the rest printed.
            Err(e @ Error::Truncated { .. }) => super::follow::warn_truncated(e, &printed),
            // Entries already printed were deleted: the output is no longer the log's.
            Err(Error::Rewound { from, .. }) => {
                return Err(CliError::Failed(format!(
                    "{}: the entries from LSN {from} on were deleted by a suffix truncation \
                     while they were being printed: the output holds entries the log no \
                     longer has; run again",
                    path.display()
                )))
            }
            Err(e) => return Err(CliError::log(path)(e)),
        }
    }
    Ok(EXIT_OK)
}

/// The damage a salvage-mode open found, as an error; or, without damage, the entries the
/// last writer published that the log does not hold
/// ([`crate::RecoveryReport::published_missing`]).
pub(crate) fn damage_error(path: &Path, log: &Log) -> Result<(), CliError> {
    match &log.recovery().damage {
        Some(d) => Err(CliError::Log {
            path: path.to_path_buf(),
            source: Error::Corrupted {
                path: path.to_path_buf(),
                offset: d.offset,
                lsn: d.lsn,
                reason: d.reason.to_string(),
                entries_beyond: d.entries_beyond,
            },
        }),
        None => match log.recovery().published_missing {
            Some(missing) => Err(CliError::Damaged(format!(
                "{}: {}",
                path.display(),
                super::check::missing_text(missing)
            ))),
            None => Ok(()),
        },
    }
}

pub(crate) fn dump(a: DumpArgs) -> Result<u8, CliError> {
    a.range.check("dump")?;
    let mut out = BufWriter::with_capacity(256 << 10, io::stdout().lock());
    let mut line = Vec::new();
    let code = for_each_entry(&a.path, &a.range, |lsn, payload| {
        line.clear();
        if a.json {
            write!(line, "{{\"lsn\":{lsn},\"len\":{},\"hex\":\"", payload.len())?;
            encode_hex(payload, &mut line);
            line.extend_from_slice(b"\"}\n");
        } else {
            write!(line, "{lsn}\t")?;
            encode_hex(payload, &mut line);
            line.push(b'\n');
        }
        out.write_all(&line)
    });
    out.flush()?;
    code
}

pub(crate) fn cat(a: CatArgs) -> Result<u8, CliError> {
    a.range.check("cat")?;
    let mut out = BufWriter::with_capacity(256 << 10, io::stdout().lock());
    let code = for_each_entry(&a.path, &a.range, |lsn, payload| {
        if a.lsn {
            write!(out, "{lsn}\t")?;
        }
        if a.null {
            out.write_all(payload)?;
            out.write_all(b"\0")
        } else {
            out.write_all(String::from_utf8_lossy(payload).as_bytes())?;
            out.write_all(b"\n")
        }
    });
    out.flush()?;
    code
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("which").required(true).args(["before", "after"])))]
pub(crate) struct TruncateArgs {
    /// The log file.
    path: PathBuf,
    /// Drop every entry with an LSN below this one (0 or the first LSN: none).
    #[arg(long, value_name = "LSN")]
    before: Option<Lsn>,
    /// Drop every entry with an LSN above this one.
    #[arg(long, value_name = "LSN")]
    after: Option<Lsn>,
}

#[derive(Args, Debug)]
pub(crate) struct ResetArgs {
    /// The log file.
    path: PathBuf,
}

/// `daxlog truncate PATH --before LSN | --after LSN`.
pub(crate) fn truncate(a: TruncateArgs) -> Result<u8, CliError> {
    let log = Log::open(&a.path, &super::env_options()).map_err(CliError::log(&a.path))?;
    warn_if_not_durable(&log, "the truncation is");
    let (first, next) = (log.first_lsn(), log.next_lsn());
    let start = first.unwrap_or(next);
    let doomed = match (a.before, a.after) {
        (Some(l), _) => start..l.clamp(start, next),
        (_, Some(l)) => l.saturating_add(1).clamp(start, next)..next,
        _ => unreachable!("clap requires one of --before and --after"),
    };
    let readable = readable_in(&log, &doomed);
    match (a.before, a.after) {
        (Some(l), _) => log.truncate_before(l),
        (_, Some(l)) => log.truncate_after(l),
        _ => unreachable!("clap requires one of --before and --after"),
    }
    .map_err(CliError::log(&a.path))?;
    print_result(&a.path, &log, doomed, readable, "the truncation was done")
}

/// How many of the LSNs `lsns` hold entries, not padding (which a salvage or an appender that
/// panicked leaves).
fn readable_in(log: &Log, lsns: &std::ops::Range<Lsn>) -> u64 {
    if lsns.is_empty() {
        return 0;
    }
    let guard = log.pin();
    guard
        .iter_from(lsns.start)
        .take_while(|e| e.lsn < lsns.end)
        .count() as u64
}

/// `daxlog reset PATH`.
pub(crate) fn reset(a: ResetArgs) -> Result<u8, CliError> {
    let log = Log::open(&a.path, &super::env_options()).map_err(CliError::log(&a.path))?;
    warn_if_not_durable(&log, "the reset is");
    let (first, next) = (log.first_lsn(), log.next_lsn());
    let doomed = first.unwrap_or(next)..next;
    let readable = readable_in(&log, &doomed);
    log.reset().map_err(CliError::log(&a.path))?;
    print_result(&a.path, &log, doomed, readable, "the reset was done")
}

/// `PATH: dropped 3 entries (LSN 1..=3); entries 4..=10, next LSN 11`, given the LSNs the
/// truncation dropped (they leave only from the head or from the tail) and how many of them
/// held entries (the others held padding: `dropped 2 entries and 1 padding entry (LSN
/// 1..=3)`).
fn print_result(
    path: &Path,
    log: &Log,
    dropped: std::ops::Range<Lsn>,
    readable: u64,
    done: &str,
) -> Result<u8, CliError> {
    let dropped = match (dropped.start, dropped.end.checked_sub(1)) {
        (f, Some(l)) if f <= l => {
            let n = l - f + 1;
            let readable = readable.min(n);
            let padding = match n - readable {
                0 => String::new(),
                p => format!(" and {}", count(p, "padding entry", "padding entries")),
            };
            let lsns = if f == l {
                format!("LSN {f}")
            } else {
                format!("LSN {f}..={l}")
            };
            format!(
                "dropped {}{padding} ({lsns})",
                count(readable, "entry", "entries")
            )
        }
        _ => "dropped 0 entries".into(),
    };
    let remaining = match (log.first_lsn(), log.last_lsn()) {
        (Some(f), Some(l)) => format!("entries {f}..={l}"),
        _ => "empty".into(),
    };
    let text = format!(
        "{}: {dropped}; {remaining}, next LSN {}\n",
        path.display(),
        log.next_lsn()
    );
    print_done(path, done, &text)?;
    Ok(EXIT_OK)
}
