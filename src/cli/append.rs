//! `daxlog append`: records from stdin (or `--data`) into the log, each LSN printed once its
//! entry is durable. Exit 0 means every record was appended; anything that stops it early says
//! how far it got.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use clap::Args;

use super::records::Format;
use super::{count, describe, os_text, warn_if_not_durable, CliError, EXIT_OK};
use crate::{Error, Log, Lsn};

#[derive(Args, Debug)]
pub(crate) struct AppendArgs {
    /// The log file (it must exist: see `daxlog create`).
    path: PathBuf,
    /// Append this one entry instead of reading stdin (its bytes as given, UTF-8 or not).
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["batch", "format"])]
    data: Option<std::ffi::OsString>,
    /// Let up to N records that are already waiting on stdin share one persistence barrier.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = super::count_in::<u64>(1, 1_000_000))]
    batch: u64,
    /// How stdin is cut into entries.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = Format::Lines)]
    format: Format,
}

/// Why reading stdin stopped: what happened, the record's number and offset if it was a
/// record's fault, and whether the record was malformed (rather than too long to read).
type Stop = (String, Option<(u64, u64)>, bool);

/// What has been appended so far.
struct Progress<'a> {
    path: &'a Path,
    appended: u64,
    lsns: Option<(Lsn, Lsn)>,
}

impl Progress<'_> {
    fn add(&mut self, lsns: Range<Lsn>) {
        if lsns.is_empty() {
            return;
        }
        self.appended += lsns.end - lsns.start;
        self.lsns = Some(match self.lsns {
            Some((first, _)) => (first, lsns.end - 1),
            None => (lsns.start, lsns.end - 1),
        });
    }

    /// `4 records were appended (LSN 1..=4)`.
    fn summary(&self) -> String {
        match self.lsns {
            None => "no record was appended".into(),
            Some((f, l)) if f == l => format!("1 record was appended (LSN {f})"),
            Some((f, l)) => format!("{} records were appended (LSN {f}..={l})", self.appended),
        }
    }

    /// The error for a failed append of `record` (named by `name`, `len` bytes); `rest` says
    /// whether more input is left unread.
    fn append_failed(&self, e: Error, name: &str, len: usize, rest: bool) -> CliError {
        let p = self.path.display();
        let rest_too = if rest { ", nor the rest of stdin" } else { "" };
        let it_and_rest = if rest {
            "it and the rest of stdin were"
        } else {
            "it was"
        };
        CliError::Failed(match e {
            Error::Full {
                needed, available, ..
            } => format!(
                "{p}: log full: {}; {name}, {}, was not appended{rest_too}: it needs {needed} \
                 bytes on media and {available} are free in one piece; make room with `daxlog \
                 truncate {p} --before LSN` once the entries below LSN are checkpointed, or \
                 `daxlog reset {p}`",
                self.summary(),
                count(len as u64, "byte", "bytes"),
            ),
            Error::PayloadTooLarge { max, .. } => format!(
                "{p}: {}; {name}, {}, exceeds the largest payload this log can hold ({max} \
                 bytes): {it_and_rest} not appended",
                self.summary(),
                count(len as u64, "byte", "bytes"),
            ),
            other => format!(
                "{}; before it {}; {name} and the rest of the input were not acknowledged",
                describe(self.path, &other),
                self.summary()
            ),
        })
    }

    /// The error for a failed write of LSNs to stdout.
    fn output_failed(&self, e: &io::Error) -> CliError {
        let p = self.path.display();
        let what = if e.kind() == io::ErrorKind::BrokenPipe {
            "stdout closed".to_string()
        } else {
            format!("writing to stdout failed ({})", os_text(e))
        };
        let last = self.lsns.map_or(String::new(), |(_, l)| {
            format!(", the last LSN appended is {l}")
        });
        CliError::Failed(format!(
            "{p}: {what}: {}{last}; the rest of stdin was not appended",
            self.summary()
        ))
    }
}

/// Appends stdin record by record (or `--data`), printing each LSN once its entry is durable.
///
/// A batch never waits for more input: it holds the first record read (which may block) plus
/// the complete records already in the input buffer, up to `--batch`. So a producer that
/// writes one record and waits for its LSN gets it at once, while a fast producer gets
/// batching.
pub(crate) fn append(a: AppendArgs) -> Result<u8, CliError> {
    let log = Log::open(&a.path, &super::env_options()).map_err(CliError::log(&a.path))?;
    warn_if_not_durable(&log, "the LSNs printed are");
    let mut progress = Progress {
        path: &a.path,
        appended: 0,
        lsns: None,
    };
    let mut out = BufWriter::with_capacity(64 << 10, io::stdout().lock());
    if let Some(text) = &a.data {
        use std::os::unix::ffi::OsStrExt;
        let text = text.as_bytes();
        let lsn = log
            .append(text)
            .map_err(|e| progress.append_failed(e, "the --data entry", text.len(), false))?;
        progress.add(lsn..lsn + 1);
        let printed = writeln!(out, "{lsn}").and_then(|()| out.flush());
        if let Err(e) = printed {
            return Err(CliError::Failed(format!(
                "{}: {}: the entry was appended as LSN {lsn}, but its LSN could not be printed",
                a.path.display(),
                if e.kind() == io::ErrorKind::BrokenPipe {
                    "stdout closed".to_string()
                } else {
                    format!("writing to stdout failed ({})", os_text(&e))
                }
            )));
        }
        return Ok(EXIT_OK);
    }

    let max = a.batch as usize;
    let format = a.format;
    let sep = format.separator();
    // The longest input record that can decode to a payload the log can hold (hex takes two
    // characters a byte, JSON text escapes up to six), with room for its separator and prefix.
    let max_payload = log.max_payload() as usize;
    let raw_limit = match format {
        Format::Lines | Format::Nul => max_payload + 1,
        Format::Hex => 2 * max_payload + 64,
        Format::Json => 6 * max_payload + 256,
    };
    // What a record longer than that is (refused before it is all in memory: input without a
    // separator can be endless).
    let too_long_text = match format {
        Format::Lines | Format::Nul => {
            format!("longer than the largest payload this log can hold ({max_payload} bytes)")
        }
        Format::Hex => format!(
            "longer than the {raw_limit} bytes a --format hex record of the largest payload \
             this log can hold ({max_payload} bytes) can take"
        ),
        Format::Json => format!(
            "longer than the {raw_limit} bytes a --format json record may take in this log \
             (6 times the largest payload it can hold, {max_payload} bytes, and 256)"
        ),
    };
    let mut input = BufReader::with_capacity(256 << 10, io::stdin().lock());
    let mut raw = Vec::new();
    let mut number = 0u64;
    let mut offset = 0u64;
    // The batch's payloads, back to back in `data`; payload i ends at `ends[i]`, and was
    // record `names[i]` of the input.
    let mut data: Vec<u8> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut names: Vec<(u64, u64)> = Vec::new();
    loop {
        data.clear();
        ends.clear();
        names.clear();
        // Reads the next record into the batch; Ok(false) at the end of the input.
        let mut next = |input: &mut BufReader<_>,
                        data: &mut Vec<u8>,
                        ends: &mut Vec<usize>,
                        names: &mut Vec<(u64, u64)>|
         -> Result<bool, Stop> {
            raw.clear();
            let (n, too_long) = read_record(input, sep, &mut raw, raw_limit).map_err(|e| {
                (
                    format!("reading stdin failed ({})", os_text(&e)),
                    None,
                    false,
                )
            })?;
            if n == 0 {
                return Ok(false);
            }
            number += 1;
            let at = (number, offset);
            offset += n as u64;
            if too_long {
                // Refused before it is all in memory: input without a separator can be endless.
                return Err((too_long_text.clone(), Some(at), false));
            }
            if raw.last() == Some(&sep) {
                raw.pop();
            }
            let start = data.len();
            if let Err(what) = format.decode(&raw, data) {
                data.truncate(start);
                return Err((what, Some(at), true));
            }
            ends.push(data.len());
            names.push(at);
            Ok(true)
        };
        let mut stop = None;
        match next(&mut input, &mut data, &mut ends, &mut names) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => stop = Some(e),
        }
        while stop.is_none() && ends.len() < max && input.buffer().contains(&sep) {
            if let Err(e) = next(&mut input, &mut data, &mut ends, &mut names) {
                stop = Some(e);
            }
        }
        // The records before a malformed one are appended first.
        let appended = append_batch(&log, format, &data, &ends, &names, &mut progress);
        let lsns = match &appended {
            Ok(l) => l.clone(),
            Err((l, _)) => l.clone(),
        };
        let printed = lsns
            .clone()
            .try_for_each(|lsn| writeln!(out, "{lsn}"))
            .and_then(|()| out.flush());
        if let Err((_, e)) = appended {
            return Err(e);
        }
        if let Err(e) = printed {
            return Err(progress.output_failed(&e));
        }
        if let Some((what, at, invalid)) = stop {
            let p = a.path.display();
            return Err(CliError::Failed(match at {
                Some((n, off)) if !invalid => format!(
                    "{p}: {}; {} is {what}: it and the rest of stdin were not appended",
                    progress.summary(),
                    format.name(n, off),
                ),
                Some((n, off)) => format!(
                    "{p}: {}; {} is not valid --format {} input ({what}): it and the rest of \
                     stdin were not appended",
                    progress.summary(),
                    format.name(n, off),
                    format_name(format),
                ),
                None => format!(
                    "{p}: {what}: {}; the rest of stdin was not appended",
                    progress.summary()
                ),
            }));
        }
    }
    Ok(EXIT_OK)
}

/// Reads one record and its separator (if any) onto `raw`: the bytes read (0 at the end), and
/// whether the record ran past `limit` bytes, where reading stops (the rest of it is left
/// unread).
fn read_record(
    input: &mut impl BufRead,
    sep: u8,
    raw: &mut Vec<u8>,
    limit: usize,
) -> io::Result<(usize, bool)> {
    let start = raw.len();
    let mut n = 0;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((n, false));
        }
        let (take, done) = match buf.iter().position(|&b| b == sep) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        raw.extend_from_slice(&buf[..take]);
        input.consume(take);
        n += take;
        if done {
            return Ok((n, false));
        }
        if raw.len() - start > limit {
            return Ok((n, true));
        }
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Lines => "lines",
        Format::Nul => "nul",
        Format::Hex => "hex",
        Format::Json => "json",
    }
}

/// Appends the batch: with one barrier, or record by record if it does not fit (so that as
/// many records as fit are appended, and the error names the first that did not). Returns the
/// LSNs appended, and on failure the error too.
#[allow(clippy::result_large_err)]
fn append_batch(
    log: &Log,
    format: Format,
    data: &[u8],
    ends: &[usize],
    names: &[(u64, u64)],
    progress: &mut Progress<'_>,
) -> Result<Range<Lsn>, (Range<Lsn>, CliError)> {
    let payload = |i: usize| &data[if i == 0 { 0 } else { ends[i - 1] }..ends[i]];
    if ends.len() > 1 {
        let batch: Vec<&[u8]> = (0..ends.len()).map(payload).collect();
        match log.append_batch(&batch) {
            Ok(lsns) => {
                progress.add(lsns.clone());
                return Ok(lsns);
            }
            Err(
                Error::Full { .. } | Error::PayloadTooLarge { .. } | Error::BatchTooLarge { .. },
            ) => {}
            Err(e) => {
                let (n, off) = names[0];
                let name = format.name(n, off);
                let next = log.next_lsn();
                return Err((
                    next..next,
                    progress.append_failed(e, &name, payload(0).len(), true),
                ));
            }
        }
    }
    let start = log.next_lsn();
    for (i, &(n, off)) in names.iter().enumerate() {
        match log.append(payload(i)) {
            Ok(lsn) => progress.add(lsn..lsn + 1),
            Err(e) => {
                let name = format.name(n, off);
                let lsns = start..log.next_lsn();
                return Err((
                    lsns,
                    progress.append_failed(e, &name, payload(i).len(), true),
                ));
            }
        }
    }
    Ok(start..log.next_lsn())
}
