//! `daxlog check`: every entry validated; `--salvage OUT` rescues the readable entries of a
//! damaged log into a new one, with their LSNs.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{count, describe, warn_if_not_durable, CliError, EXIT_LOSS, EXIT_OK};
use crate::{Error, Gap, Log, Lsn, Options, RecoveryMode, TailState};

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// The log file.
    path: PathBuf,
    /// Count a torn tail (the remains of an interrupted append) as damage too.
    #[arg(long, conflicts_with = "salvage")]
    strict: bool,
    /// Rescue: copy every readable entry (also those after damage) into a new log at OUT,
    /// keeping their LSNs, and list the damaged regions. Exit 3 if LSNs were lost.
    #[arg(long, value_name = "OUT")]
    salvage: Option<PathBuf>,
    /// With --salvage: replace OUT if it exists.
    #[arg(long, requires = "salvage")]
    force: bool,
}

/// Verifies the whole log: opened read-only (the environment plays no part, so the scan
/// starts at the head), then every entry read back and checked again ([`Log::verify`]).
/// A torn tail is reported, not an error, unless `--strict`.
pub(crate) fn check(a: CheckArgs) -> Result<u8, CliError> {
    if let Some(out) = &a.salvage {
        return salvage(&a.path, out, a.force);
    }
    let p = a.path.display();
    let mode = if a.strict {
        RecoveryMode::Strict
    } else {
        RecoveryMode::TolerateTornTail
    };
    // (Only --strict waits for a writer: without it, check reads beside the writer, live.)
    let opts = if a.strict {
        super::options()
    } else {
        Options::new()
    };
    let opts = opts.recovery_mode(mode);
    let log = match super::unless_replaced(|| Log::open_read_only(&a.path, &opts)) {
        Ok(log) => log,
        Err(e) if super::writer_has_it(&e) && a.strict => {
            return Err(CliError::Failed(format!(
                "{p}: a writer has the log open: --strict judges the log's end, which only a \
                 closed log has (without --strict, check reads it back live)"
            )))
        }
        Err(e) if super::writer_has_it(&e) => return check_live(&a.path),
        Err(e @ Error::Corrupted { .. }) if a.strict => {
            // A torn tail, or damage? The tolerant open tells.
            if let Ok(log) = Log::open_read_only(&a.path, &Options::new()) {
                let r = log.recovery();
                if let Some(missing) = r.published_missing {
                    // A torn end the writer had published: no interrupted append.
                    return Err(missing_error(&a.path, missing));
                }
                if let TailState::Torn { reason } = r.tail_state {
                    return Err(CliError::Damaged(format!(
                        "{p}: torn tail at LSN {}, offset {}: {} of an interrupted append \
                         ({reason}){}, refused by --strict; the {} before it are intact (a \
                         writable open discards the torn tail)",
                        log.next_lsn(),
                        r.torn_offset,
                        count(r.torn_bytes, "byte", "bytes"),
                        super::torn_rest(r.torn_entries),
                        count(log.len(), "entry", "entries"),
                    )));
                }
            }
            return Err(CliError::log(&a.path)(e));
        }
        Err(e) => return Err(CliError::log(&a.path)(e)),
    };
    let v = match log.verify() {
        Ok(v) => v,
        Err(Error::Corrupted {
            path,
            offset,
            lsn,
            reason,
            ..
        }) => {
            let entries_beyond = entries_beyond(&a.path, lsn);
            return Err(CliError::Log {
                path: a.path.clone(),
                source: Error::Corrupted {
                    path,
                    offset,
                    lsn,
                    reason,
                    entries_beyond,
                },
            });
        }
        Err(e) => return Err(CliError::log(&a.path)(e)),
    };
    let r = log.recovery();
    if let Some(missing) = r.published_missing {
        return Err(missing_error(&a.path, missing));
    }
    let mut out = io::stdout().lock();
    let range = match (log.first_lsn(), log.last_lsn()) {
        (Some(f), Some(l)) => format!("LSN {f}..={l}"),
        _ => "empty".to_string(),
    };
    let padding = if v.padding > 0 {
        format!(
            " and {}",
            count(v.padding, "padding entry", "padding entries")
        )
    } else {
        String::new()
    };
    write!(
        out,
        "{p}: ok: {}{padding} ({range}), {}",
        count(v.entries, "entry", "entries"),
        count(log.used_bytes(), "byte", "bytes")
    )?;
    match &r.tail_state {
        TailState::Torn { reason } => write!(
            out,
            "; torn tail: {} of an interrupted append at offset {} ({reason}){}, discarded by \
             recovery",
            count(r.torn_bytes, "byte", "bytes"),
            r.torn_offset,
            super::torn_rest(r.torn_entries)
        )?,
        TailState::EndOfFile => write!(out, "; {}", super::end_of_file_text(log.room()))?,
        _ => write!(out, "; tail clean")?,
    }
    if let Some(extra) = super::past_capacity(&a.path, log.capacity()) {
        write!(out, "; {}", super::past_capacity_text(extra))?;
    }
    if r.superblock_from_backup {
        write!(
            out,
            "; primary superblock damaged, backup copy used (a writable open repairs it)"
        )?;
    }
    match r.unreadable_slot {
        Some(off) if r.slot_repaired => write!(
            out,
            "; the current metadata slot at offset {off} has one bit wrong (damaged, or its \
             update torn by a crash) and was read corrected (a writable open writes it back)"
        )?,
        Some(off) => write!(
            out,
            "; the metadata slot at offset {off} is unreadable (torn or damaged), the other \
             copy used (a writable open rewrites it)"
        )?,
        None => {}
    }
    writeln!(out)?;
    out.flush()?;
    Ok(EXIT_OK)
}

/// Readable entries with an LSN above `lsn` (what a salvage would find past it).
fn entries_beyond(path: &Path, lsn: Lsn) -> u64 {
    let opts = Options::new().recovery_mode(RecoveryMode::Salvage);
    let mut n = 0;
    if let Ok(log) = Log::open_read_only(path, &opts) {
        let _ = log.salvage(|l, _| n += u64::from(l > lsn));
    }
    n
}

/// Copies entries into the salvaged log in batches; LSNs that have no entry (lost, or padding
/// in the source) become padding, so every entry keeps its LSN.
struct Copier<'a> {
    dst: &'a Log,
    data: Vec<u8>,
    ends: Vec<usize>,
    /// The LSN of the next entry to be stored (the pending ones included).
    next: Lsn,
    copied: u64,
    padded: u64,
    first_copied: Option<Lsn>,
    last_copied: Option<Lsn>,
    failed: Option<Error>,
}

impl Copier<'_> {
    const FLUSH_BYTES: usize = 1 << 20;
    const FLUSH_COUNT: usize = 4096;

    fn visit(&mut self, lsn: Lsn, payload: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if lsn > self.next {
            self.pad_to(lsn);
            if self.failed.is_some() {
                return;
            }
        }
        self.data.extend_from_slice(payload);
        self.ends.push(self.data.len());
        self.next = lsn + 1;
        self.first_copied.get_or_insert(lsn);
        self.last_copied = Some(lsn);
        if self.data.len() >= Self::FLUSH_BYTES || self.ends.len() >= Self::FLUSH_COUNT {
            self.flush();
        }
    }

    /// Pads up to (not including) `lsn`.
    fn pad_to(&mut self, lsn: Lsn) {
        self.flush();
        if self.failed.is_none() && lsn > self.dst.next_lsn() {
            let n = lsn - self.dst.next_lsn();
            match self.dst.append_padding(n) {
                Ok(_) => self.padded += n,
                Err(e) => self.failed = Some(e),
            }
            self.next = self.next.max(lsn);
        }
    }

    fn flush(&mut self) {
        if self.ends.is_empty() || self.failed.is_some() {
            return;
        }
        let mut start = 0;
        let batch: Vec<&[u8]> = self
            .ends
            .iter()
            .map(|&end| {
                let p = &self.data[start..end];
                start = end;
                p
            })
            .collect();
        match self.dst.append_batch(&batch) {
            Ok(_) => self.copied += batch.len() as u64,
            Err(e) => self.failed = Some(e),
        }
        self.data.clear();
        self.ends.clear();
    }
}

/// `daxlog check PATH --salvage OUT [--force]`: every readable entry into a new log with the
/// same capacity and the same LSNs, gaps listed. Exit 3 if LSNs were lost, 0 otherwise.
fn salvage(path: &Path, out_path: &Path, force: bool) -> Result<u8, CliError> {
    if let (Ok(a), Ok(b)) = (std::fs::metadata(path), std::fs::metadata(out_path)) {
        if a.dev() == b.dev() && a.ino() == b.ino() {
            let same = if out_path == path {
                String::new()
            } else {
                format!(" ({})", path.display())
            };
            return Err(CliError::Failed(format!(
                "{}: is the log being salvaged{same}: salvage into another file",
                out_path.display(),
            )));
        }
    }
    let salvage = super::options().recovery_mode(RecoveryMode::Salvage);
    // A file cut short is salvaged from a copy made up to the log's capacity with zeros (the
    // log itself is never written): what lay past its end is lost, the rest is copied. (The
    // copy lives until the salvage is done.)
    let mut _extended = None;
    let src = match Log::open_read_only(path, &salvage) {
        Err(Error::FileShorterThanCapacity {
            file_len, capacity, ..
        }) => {
            let copy = extended_copy(path, out_path, capacity)?;
            let _ = writeln!(
                io::stderr().lock(),
                "warning: {}: the file is {file_len} bytes, shorter than its log's capacity \
                 ({capacity} bytes): salvaged as if zeros followed (what lay past its end is \
                 lost)",
                path.display()
            );
            let log = Log::open_read_only(copy.path(), &salvage).map_err(CliError::log(path))?;
            _extended = Some(copy);
            log
        }
        other => other.map_err(CliError::log(path))?,
    };
    let first = src.first_lsn().unwrap_or(src.next_lsn());
    let opts = super::options()
        .capacity(src.capacity())
        .first_lsn(first)
        .overwrite(force);
    let dst = Log::create(out_path, &opts).map_err(CliError::log(out_path))?;
    warn_if_not_durable(&dst, "the salvaged log is");
    let mut c = Copier {
        dst: &dst,
        data: Vec::new(),
        ends: Vec::new(),
        next: first,
        copied: 0,
        padded: 0,
        first_copied: None,
        last_copied: None,
        failed: None,
    };
    let salvaged = src
        .salvage_walk(|lsn, payload| c.visit(lsn, payload))
        .map_err(CliError::log(path))?;
    let gaps = salvaged.gaps;
    c.flush();
    // LSNs lost (or padding) at the end are not handed out again either, nor those the last
    // writer published past the entries found.
    let end = gaps
        .iter()
        .map(|g| g.last_lsn + 1)
        .chain([src.next_lsn(), salvaged.end])
        .max()
        .unwrap_or(first);
    c.pad_to(end);
    // (With damage, the recovered log counts the space of the entries found beyond it as
    // free, so the report's bound on the word is loose: a word that claims more entries than
    // the copy has room for, beside the entries found, is damaged, not evidence of a loss.)
    let room = dst.free_bytes() / crate::format::entry_len(0) as u64;
    let missing = src
        .recovery()
        .published_missing
        .map(|(_, last)| (end.max(c.next), last))
        .filter(|(from, last)| from <= last && last + 1 - from <= room);
    if let Some((_, last)) = missing {
        c.pad_to(last + 1);
    }
    if let Some(e) = c.failed.take() {
        return Err(CliError::Failed(format!(
            "{}; the salvage of {} stopped after {}",
            describe(out_path, &e),
            path.display(),
            count(c.copied, "entry", "entries")
        )));
    }
    let lost: u64 = gaps
        .iter()
        .map(|g| (g.last_lsn + 1).saturating_sub(g.first_lsn))
        .sum::<u64>()
        + missing.map_or(0, |(from, last)| last + 1 - from);
    let mut text = String::new();
    for g in &gaps {
        text += &format!("{}: {}\n", path.display(), gap_text(g));
    }
    if let Some(m) = missing {
        text += &format!(
            "{}: {} (kept as padding)\n",
            path.display(),
            missing_text(m)
        );
    }
    let range = match (c.first_copied, c.last_copied) {
        (Some(f), Some(l)) => format!(" (LSN {f}..={l})"),
        _ => String::new(),
    };
    let padding = match c.padded.saturating_sub(lost) {
        0 => String::new(),
        n => format!(
            ", {} kept as padding",
            count(n, "padding LSN", "padding LSNs")
        ),
    };
    let regions = gaps.len() as u64 + u64::from(missing.is_some());
    let loss = if lost == 0 {
        "nothing lost".to_string()
    } else {
        format!(
            "{} lost in {}",
            count(lost, "LSN", "LSNs"),
            count(regions, "damaged region", "damaged regions")
        )
    };
    // The end of the log may be a torn tail too: its valid entries are not copied.
    let torn = match salvaged.torn {
        0 => String::new(),
        n => format!(
            "; {} at the end not copied: an interrupted append, never acknowledged",
            count(n, "valid entry", "valid entries")
        ),
    };
    text += &format!(
        "{}: salvaged {}{range} into {}, LSNs kept{padding}; {loss}{torn}\n",
        path.display(),
        count(c.copied, "entry", "entries"),
        out_path.display(),
    );
    super::print_done(out_path, "the salvage was done", &text)?;
    Ok(if lost > 0 { EXIT_LOSS } else { EXIT_OK })
}

/// A copy of the log file `path` made up to `capacity` bytes with zeros, in a temporary file
/// beside `out_path` (on the file system that must hold the salvaged log anyway), removed when
/// dropped.
fn extended_copy(
    path: &Path,
    out_path: &Path,
    capacity: u64,
) -> Result<tempfile::NamedTempFile, CliError> {
    let dir = match out_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |e: io::Error| {
        CliError::Failed(format!(
            "{}: is shorter than its log's capacity, and a copy to salvage it from cannot be \
             made in {}: {e}",
            path.display(),
            dir.display()
        ))
    };
    let copy = tempfile::Builder::new()
        .prefix(".daxlog-salvage-")
        .tempfile_in(dir)
        .map_err(fail)?;
    std::fs::copy(path, copy.path()).map_err(fail)?;
    copy.as_file().set_len(capacity).map_err(fail)?;
    Ok(copy)
}

/// `check`'s error for [`crate::RecoveryReport::published_missing`].
fn missing_error(path: &Path, missing: (Lsn, Lsn)) -> CliError {
    let p = path.display();
    CliError::Damaged(format!(
        "{p}: {}; `daxlog check {p} --salvage OUT` copies every readable entry, LSNs kept (a \
         writable open takes those LSNs with padding entries where they fit, so that none is \
         given to another entry)",
        missing_text(missing),
    ))
}

/// `LSN 7` or `LSNs 7..=9`.
fn range_text((first, last): (Lsn, Lsn)) -> String {
    if first == last {
        format!("LSN {first}")
    } else {
        format!("LSNs {first}..={last}")
    }
}

/// What [`crate::RecoveryReport::published_missing`] means, for `check` and `info`.
pub(crate) fn missing_text(missing: (Lsn, Lsn)) -> String {
    format!(
        "{} published (acknowledged) by the last writer but missing: the log holds no entry \
         from LSN {} on; lost to damage \
         (an entry, or the current metadata slot) or to a write-back that failed after its sync \
         reported success, or the reader area's published word is damaged",
        range_text(missing),
        missing.0
    )
}

/// `damaged at offset 4216: LSN 4 lost; entries resume at offset 4256`.
pub(crate) fn gap_text(g: &Gap) -> String {
    let lost = match g.last_lsn.checked_sub(g.first_lsn) {
        None => "no LSN lost".to_string(),
        Some(0) => format!("LSN {} lost", g.first_lsn),
        Some(_) => format!("LSNs {}..={} lost", g.first_lsn, g.last_lsn),
    };
    if g.resume_offset > 0 {
        format!(
            "damaged at offset {}: {lost}; entries resume at offset {}",
            g.offset, g.resume_offset
        )
    } else {
        format!(
            "damaged at offset {}: {lost}; nothing readable after it",
            g.offset
        )
    }
}

/// `check` while a writer has the log open: no snapshot can be taken, so a
/// [`crate::Reader`] reads every entry from the head up to the writer's published end, each
/// one copied out and validated (checksum, LSN, epoch); damage is reported as for a snapshot.
/// The torn-tail and end-of-log checks belong to the writer's recovery and are not repeated.
fn check_live(path: &Path) -> Result<u8, CliError> {
    let mut r =
        crate::Reader::open_waiting(path, super::lock_wait()).map_err(CliError::log(path))?;
    let mut first = None;
    let mut last = None;
    let mut n = 0u64;
    let mut payload = Vec::new();
    loop {
        match r.next_into(&mut payload) {
            Ok(Some(lsn)) => {
                first.get_or_insert(lsn);
                last = Some(lsn);
                n += 1;
            }
            Ok(None) => break,
            // The writer truncated what we had not read yet: nothing to check there.
            Err(Error::Truncated { .. } | Error::Rewound { .. }) => {}
            Err(e) => return Err(CliError::log(path)(e)),
        }
    }
    let range = match (first, last) {
        (Some(f), Some(l)) => format!("LSN {f}..={l}"),
        _ => "empty".to_string(),
    };
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}: ok: {} ({range}) read back live while a writer has the log open",
        path.display(),
        count(n, "entry", "entries")
    )?;
    out.flush()?;
    Ok(EXIT_OK)
}
