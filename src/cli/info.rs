//! `daxlog info`: the metadata page as it is on media (both superblock copies, both slots),
//! then what a read-only salvage-mode open finds. Works on a damaged log: it prints what it
//! can, then exits 1.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use super::check::gap_text;
use super::commands::damage_error;
use super::size::human;
use super::{count, CliError, EXIT_OK};
use crate::format::{
    self, Slot, Superblock, SuperblockError, DATA_OFFSET, SB_BACKUP_OFFSET, SB_LEN,
    SB_PRIMARY_OFFSET, SLOT0_OFFSET, SLOT1_OFFSET, SLOT_CONCURRENT, SLOT_LEN,
};
use crate::{Error, Log, Options, RecoveryMode, TailState};

#[derive(Args, Debug)]
pub(crate) struct InfoArgs {
    /// The log file.
    path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// One superblock copy as found on media.
struct SbView {
    offset: usize,
    decoded: Result<Superblock, SuperblockError>,
    /// The raw fields, whatever their validity (FORMAT.md: version at 8, uuid at 16,
    /// capacity at 32).
    version: u32,
    capacity: u64,
    uuid: String,
}

/// One metadata slot as found on media.
struct SlotView {
    index: usize,
    offset: usize,
    /// The raw fields, whatever their validity.
    raw: Slot,
    /// `Some(true)` valid, `Some(false)` invalid, `None` unknown (no superblock to check it
    /// against: the log's salt seals the slots).
    valid: Option<bool>,
    reason: Option<&'static str>,
    current: bool,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The first 4096 bytes of the file (fewer if it is shorter).
fn read_page(path: &Path) -> Result<Vec<u8>, CliError> {
    let mut page = Vec::with_capacity(DATA_OFFSET);
    let file = crate::map::open_log_file(path, false).map_err(CliError::log(path))?;
    file.take(DATA_OFFSET as u64)
        .read_to_end(&mut page)
        .map_err(|e| {
            CliError::log(path)(Error::Io {
                path: path.to_path_buf(),
                op: "read",
                source: e,
            })
        })?;
    Ok(page)
}

/// The reader area of a metadata page (format version 2 and later): the published LSN (0:
/// none) and the sleepers flag. A log of `version` 1 has none: its writer never stored there,
/// and the bytes are whatever the media held.
fn reader_area(page: &[u8], version: u32) -> (u64, u32) {
    if version < 2 || page.len() < format::SLEEPERS_OFFSET + 4 {
        return (0, 0);
    }
    (
        u64_at(page, format::PUBLISHED_OFFSET),
        u32_at(page, format::SLEEPERS_OFFSET),
    )
}

fn published_text(published: u64) -> String {
    match published {
        0 => "none (no writer of format version 2 or later has opened the log)".into(),
        n => format!("LSN {n} (the writer's durable end, for readers in other processes)"),
    }
}

fn vouched_text(vouched: u64) -> String {
    match vouched {
        0 => "none (no words on media vouch: a writer in msync mode, a format older than 3, a \
               power failure before a writer's close wrote them back, or damaged words)"
            .into(),
        n => format!("LSN {n} (every entry below it acknowledged: damage there is refused)"),
    }
}

/// The format version of the first valid superblock copy.
fn version_of(sbs: &[SbView]) -> Option<u32> {
    sbs.iter()
        .find_map(|s| s.decoded.as_ref().ok().map(|sb| sb.version))
}

/// The rows of both superblock copies and both slots.
fn meta_rows(sbs: &[SbView], slots: &[SlotView]) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = sbs
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("superblock {i}"), sb_text(s)))
        .collect();
    rows.extend(
        slots
            .iter()
            .map(|s| (format!("slot {}", s.index), slot_text(s))),
    );
    rows
}

/// Decodes both superblock copies and both slots of a metadata page.
fn decode_page(page: &[u8]) -> (Vec<SbView>, Vec<SlotView>) {
    let mut padded = page.to_vec();
    padded.resize(DATA_OFFSET, 0);
    let page = &padded[..];
    let sbs: Vec<SbView> = [SB_PRIMARY_OFFSET, SB_BACKUP_OFFSET]
        .into_iter()
        .map(|offset| {
            let b = &page[offset..offset + SB_LEN];
            let uuid = Superblock {
                version: 0,
                uuid: b[16..32].try_into().unwrap_or([0; 16]),
                capacity: 0,
                salt: 0,
            }
            .uuid_string();
            SbView {
                offset,
                decoded: Superblock::decode(b),
                version: u32_at(b, 8),
                capacity: u64_at(b, 32),
                uuid,
            }
        })
        .collect();
    let sb = sbs.iter().find_map(|s| s.decoded.as_ref().ok()).copied();
    let mut slots: Vec<SlotView> = [SLOT0_OFFSET, SLOT1_OFFSET]
        .into_iter()
        .enumerate()
        .map(|(index, offset)| {
            let b = &page[offset..offset + SLOT_LEN];
            let raw = Slot {
                seq: u64_at(b, 0),
                head_offset: u64_at(b, 8),
                head_lsn: u64_at(b, 16),
                cut_lsn: u64_at(b, 24),
                epoch: u32_at(b, 32),
                flags: u32_at(b, 36),
                hint_offset: u64_at(b, 40),
                hint_lsn: u64_at(b, 48),
            };
            let (valid, reason) = match sb {
                None => (None, None),
                Some(sb) => match Slot::decode(b, sb.salt, sb.capacity) {
                    Some(_) => (Some(true), None),
                    None if b.iter().all(|&x| x == 0) => (Some(false), Some("never written")),
                    None if u32_at(b, 60) != crc32c::crc32c_append(sb.salt, &b[..60]) => {
                        (Some(false), Some("checksum mismatch"))
                    }
                    None => (Some(false), Some("impossible values")),
                },
            };
            SlotView {
                index,
                offset,
                raw,
                valid,
                reason,
                current: false,
            }
        })
        .collect();
    if let Some(sb) = sb {
        let found = Slot::current(page, sb.salt, sb.capacity);
        let is_current = |s: &SlotView| match found.repaired {
            true => found.unreadable == Some(s.offset),
            false => s.valid == Some(true) && found.slot == Some(s.raw),
        };
        for s in slots.iter_mut().filter(|s| is_current(s)) {
            s.current = true;
            if let (true, Some(corrected)) = (found.repaired, found.slot) {
                // Its fields as recovery reads them.
                s.raw = corrected;
                s.reason = Some("one bit wrong, read corrected (fields shown corrected)");
            }
        }
    }
    (sbs, slots)
}

fn sb_text(s: &SbView) -> String {
    match &s.decoded {
        Ok(_) => format!("offset {}: valid", s.offset),
        Err(e) => format!(
            "offset {}: invalid: {}{}",
            s.offset,
            sb_error(e),
            if matches!(e, SuperblockError::BadMagic) {
                String::new()
            } else {
                format!(" (version {}, capacity {})", s.version, s.capacity)
            }
        ),
    }
}

fn sb_error(e: &SuperblockError) -> String {
    match e {
        SuperblockError::BadMagic => "no daxlog magic number".into(),
        SuperblockError::Version(v) => format!(
            "format version {v} (this build reads versions {} to {})",
            format::OLDEST_VERSION,
            format::FORMAT_VERSION
        ),
        SuperblockError::Corrupt(r) => r.to_string(),
    }
}

fn slot_fields(s: &Slot) -> String {
    let flags = match s.flags {
        0 => "none".to_string(),
        SLOT_CONCURRENT => "concurrent".to_string(),
        f => format!("0x{f:x}"),
    };
    let hint = if s.hint_offset == 0 && s.hint_lsn == 0 {
        "none".to_string()
    } else {
        format!("LSN {} at offset {}", s.hint_lsn, s.hint_offset)
    };
    format!(
        "seq {}, head offset {}, head LSN {}, cut LSN {}, epoch 0x{:08x}, flags {flags}, tail \
         hint {hint}",
        s.seq, s.head_offset, s.head_lsn, s.cut_lsn, s.epoch
    )
}

fn slot_text(s: &SlotView) -> String {
    let state = match (s.valid, s.reason) {
        (Some(true), _) if s.current => "valid, current".to_string(),
        (Some(true), _) => "valid".to_string(),
        (Some(false), Some("never written")) => {
            return format!("offset {}: never written", s.offset)
        }
        (Some(false), r) if s.current => format!("invalid, current: {}", r.unwrap_or("")),
        (Some(false), r) => format!("invalid: {}", r.unwrap_or("impossible values")),
        (None, _) => "not checked (no valid superblock holds the salt that seals it)".into(),
    };
    format!("offset {}: {state}: {}", s.offset, slot_fields(&s.raw))
}

fn sb_json(s: &SbView) -> Value {
    json!({
        "offset": s.offset,
        "valid": s.decoded.is_ok(),
        "error": s.decoded.as_ref().err().map(sb_error),
        "version": s.version,
        "capacity": s.capacity,
        "uuid": s.uuid,
    })
}

fn slot_json(s: &SlotView) -> Value {
    json!({
        "slot": s.index,
        "offset": s.offset,
        "valid": s.valid,
        "error": s.reason,
        "current": s.current,
        "seq": s.raw.seq,
        "head_offset": s.raw.head_offset,
        "head_lsn": s.raw.head_lsn,
        "cut_lsn": s.raw.cut_lsn,
        "epoch": s.raw.epoch,
        "flags": s.raw.flags,
        "hint_offset": s.raw.hint_offset,
        "hint_lsn": s.raw.hint_lsn,
    })
}

fn print_rows(out: &mut impl Write, rows: &[(String, String)]) -> io::Result<()> {
    for (k, v) in rows {
        writeln!(out, "{:<16}{v}", format!("{k}:"))?;
    }
    Ok(())
}

pub(crate) fn info(a: InfoArgs) -> Result<u8, CliError> {
    // The persistence mode a writer would get here (the environment may force one), and a
    // scan of every entry from the head (never from a tail hint).
    // (No wait for a writer: its log is read live.)
    let opts = Options::from_env()
        .tail_hint_every(0)
        .recovery_mode(RecoveryMode::Salvage);
    let log = match super::unless_replaced(|| Log::open_read_only(&a.path, &opts)) {
        Ok(log) => log,
        Err(e) if super::writer_has_it(&e) => return live_info(&a),
        Err(
            e @ (Error::CorruptedSuperblock { .. }
            | Error::FileShorterThanCapacity { .. }
            | Error::UnsupportedVersion { .. }),
        ) => {
            // The raw page is all there is to show.
            let (sbs, slots) = decode_page(&read_page(&a.path)?);
            let file_len = std::fs::metadata(&a.path).map(|m| m.len()).unwrap_or(0);
            let err = if super::is_damage(&e) {
                CliError::Damaged(super::library_text(&a.path, &e))
            } else {
                CliError::log(&a.path)(e)
            };
            let mut out = io::stdout().lock();
            if a.json {
                let v = json!({
                    "path": a.path.display().to_string(),
                    "file_bytes": file_len,
                    "superblocks": sbs.iter().map(sb_json).collect::<Vec<_>>(),
                    "slots": slots.iter().map(slot_json).collect::<Vec<_>>(),
                    "error": err.to_string(),
                });
                writeln!(out, "{v}")?;
            } else {
                let mut rows = vec![
                    ("path".to_string(), a.path.display().to_string()),
                    (
                        "file size".into(),
                        format!("{} ({})", count(file_len, "byte", "bytes"), human(file_len)),
                    ),
                ];
                rows.extend(meta_rows(&sbs, &slots));
                print_rows(&mut out, &rows)?;
            }
            out.flush()?;
            return Err(err);
        }
        Err(e) => {
            let err = CliError::log(&a.path)(e);
            if a.json {
                // Not a log (or not readable): what JSON can say is the path and the error.
                let file_len = std::fs::metadata(&a.path).ok().map(|m| m.len());
                let v = json!({
                    "path": a.path.display().to_string(),
                    "file_bytes": file_len,
                    "error": err.to_string(),
                });
                let mut out = io::stdout().lock();
                writeln!(out, "{v}")?;
                out.flush()?;
            }
            return Err(err);
        }
    };
    let page = read_page(&a.path)?;
    let (sbs, slots) = decode_page(&page);
    let version = version_of(&sbs).unwrap_or(format::FORMAT_VERSION);
    let (published, _) = reader_area(&page, version);
    // (As recovery reads it: 0 before version 3, and past what the data area can hold.)
    let vouched = crate::recover::vouched(&page, &log.sb, &log.writer.lock().slot);

    let r = log.recovery();
    let readable = log.pin().iter().count() as u64;
    let padding = log.len() - readable;
    // Where the readable entries end. At damage, what the scan refused is not the remains of
    // an interrupted append: the damage rows say what it is.
    let (tail, torn_reason) = match &r.tail_state {
        _ if r.damage.is_some() => ("damaged", None),
        TailState::Clean => ("clean", None),
        TailState::EndOfFile => ("end_of_file", None),
        TailState::Torn { reason } => ("torn", Some(*reason)),
    };
    let (torn_bytes, torn_offset) = if torn_reason.is_some() {
        (r.torn_bytes, r.torn_offset)
    } else {
        (0, r.tail_offset)
    };
    // The append path this host's calibration chooses (CPU flushes only; measured once).
    let calibration = log
        .persistence()
        .is_cpu_flush()
        .then(|| crate::calibrate::for_flush(log.persistence()));
    let mut out = io::stdout().lock();
    if a.json {
        let mut v = json!({
            "path": a.path.display().to_string(),
            "format_version": version,
            "uuid": log.uuid(),
            "capacity": log.capacity(),
            "file_bytes": std::fs::metadata(&a.path).ok().map(|m| m.len()),
            "writer": false,
            "published_lsn": (published != 0).then_some(published),
            "vouched_lsn": (vouched != 0).then_some(vouched),
            "superblocks": sbs.iter().map(sb_json).collect::<Vec<_>>(),
            "slots": slots.iter().map(slot_json).collect::<Vec<_>>(),
            "used_bytes": log.used_bytes(),
            "free_bytes": log.free_bytes(),
            "entries": readable,
            "padding": padding,
            "first_lsn": log.first_lsn(),
            "last_lsn": log.last_lsn(),
            "next_lsn": log.next_lsn(),
            "persistence": log.persistence().name(),
            "nt_threshold": calibration.map(|c| c.nt_threshold),
            "batch_nt_threshold": calibration.map(|c| c.batch_nt_threshold),
            "map_sync": log.map_sync(),
            "durable": log.is_durable(),
            "tail_state": tail,
            "torn_reason": torn_reason,
            "torn_bytes": torn_bytes,
            "torn_entries": r.torn_entries,
            "tail_offset": r.tail_offset,
            "torn_offset": torn_offset,
            "superblock_from_backup": r.superblock_from_backup,
            "unreadable_slot": r.unreadable_slot,
            "slot_repaired": r.slot_repaired,
            "damage": r.damage.as_ref().map(|d| json!({
                "offset": d.offset,
                "lsn": d.lsn,
                "reason": d.reason,
                "entries_beyond": d.entries_beyond,
                "lsns_beyond": d.lsns_beyond.map(|(f, l)| json!([f, l])),
            })),
            "gaps": r.gaps.iter().map(|g| json!({
                "offset": g.offset,
                "resume_offset": g.resume_offset,
                "first_lsn": g.first_lsn,
                "last_lsn": g.last_lsn,
            })).collect::<Vec<_>>(),
            "published_missing": r.published_missing.map(|(f, l)| json!([f, l])),
            "recovery_ms": (r.duration.as_secs_f64() * 1e6).round() / 1e3,
        });
        // (Apart: the macro above is at its recursion limit.)
        v["crc_kernel"] = crate::kernel_choice().crc.into();
        v["copy_kernel"] = crate::kernel_choice().copy.into();
        writeln!(out, "{v}")?;
    } else {
        let lsn = |l: Option<u64>| l.map_or("-".to_string(), |l| l.to_string());
        let tail_text = match torn_reason {
            // The writer had published what lies there: damage, not an interrupted append.
            Some(reason)
                if r.published_missing
                    .is_some_and(|(f, _)| f <= log.next_lsn()) =>
            {
                format!(
                    "torn: {} discarded at offset {} ({reason}), of entries the last writer \
                     had published (see missing)",
                    count(torn_bytes, "byte", "bytes"),
                    torn_offset,
                )
            }
            Some(reason) => format!(
                "torn: {} of an interrupted append discarded at offset {} ({reason}){}",
                count(torn_bytes, "byte", "bytes"),
                torn_offset,
                super::torn_rest(r.torn_entries)
            ),
            None if tail == "end_of_file" => super::end_of_file_text(log.room()),
            None if tail == "damaged" => match r.slot_damage() {
                // Damage that took the current metadata slot: the entries the older copy
                // leads to end at the tail, but the damage is at the slot.
                Some(slot) => format!(
                    "damaged: the readable entries end at offset {}; the current metadata \
                     slot at offset {slot} is damaged (see damage)",
                    r.tail_offset
                ),
                None => format!(
                    "damaged at offset {}: the readable entries end there (see damage)",
                    r.tail_offset
                ),
            },
            None => format!("{tail} at offset {}", r.tail_offset),
        };
        let mode = if log.map_sync() {
            format!(
                "{} (MAP_SYNC: CPU cache flushes, durable)",
                log.persistence().name()
            )
        } else if log.persistence().is_cpu_flush() {
            format!(
                "{} (forced without MAP_SYNC: not durable on this file system)",
                log.persistence().name()
            )
        } else {
            format!(
                "{} (MAP_SYNC not granted: not a DAX mount)",
                log.persistence().name()
            )
        };
        let bytes = |n: u64| format!("{} ({})", count(n, "byte", "bytes"), human(n));
        let damage = match &r.damage {
            None => "none".to_string(),
            Some(d) => format!(
                "at offset {}, LSN {}: {}; {}{}",
                d.offset,
                d.lsn,
                d.reason,
                count(d.entries_beyond, "valid entry", "valid entries"),
                match d.lsns_beyond {
                    Some((f, l)) => format!(" beyond it (LSN {f}..={l})"),
                    None => " beyond it".to_string(),
                }
            ),
        };
        let gaps = if r.gaps.is_empty() {
            "none".to_string()
        } else {
            r.gaps.iter().map(gap_text).collect::<Vec<_>>().join("; ")
        };
        let mut rows = vec![
            ("path".to_string(), a.path.display().to_string()),
            ("format version".into(), version.to_string()),
            ("uuid".into(), log.uuid()),
            (
                "capacity".into(),
                match super::past_capacity(&a.path, log.capacity()) {
                    Some(extra) => format!(
                        "{}; {}",
                        bytes(log.capacity()),
                        super::past_capacity_text(extra)
                    ),
                    None => bytes(log.capacity()),
                },
            ),
        ];
        rows.extend(meta_rows(&sbs, &slots));
        rows.extend([
            ("published".into(), published_text(published)),
            ("vouched".into(), vouched_text(vouched)),
            ("writer".into(), "none has the log open".into()),
        ]);
        rows.extend([
            ("entries".into(), readable.to_string()),
            ("padding".into(), padding.to_string()),
            ("first LSN".into(), lsn(log.first_lsn())),
            ("last LSN".into(), lsn(log.last_lsn())),
            ("next LSN".into(), log.next_lsn().to_string()),
            ("used".into(), bytes(log.used_bytes())),
            ("free".into(), bytes(log.free_bytes())),
            ("persistence".into(), mode),
            (
                "append path".into(),
                match calibration {
                    Some(c) => c.describe(),
                    None => "msync of the pages an append touched".into(),
                },
            ),
            ("kernels".into(), crate::kernel_choice().describe()),
            (
                "MAP_SYNC".into(),
                if log.map_sync() {
                    "granted"
                } else {
                    "not granted"
                }
                .into(),
            ),
            ("tail".into(), tail_text),
            ("torn bytes".into(), torn_bytes.to_string()),
            ("torn entries".into(), r.torn_entries.to_string()),
            ("damage".into(), damage),
            ("gaps".into(), gaps),
            (
                "missing".into(),
                match r.published_missing {
                    Some(m) => super::check::missing_text(m),
                    None => "none".into(),
                },
            ),
            (
                "recovery time".into(),
                format!("{:.3} ms", r.duration.as_secs_f64() * 1e3),
            ),
        ]);
        print_rows(&mut out, &rows)?;
    }
    out.flush()?;
    damage_error(&a.path, &log)?;
    Ok(EXIT_OK)
}

/// Where a live count met damage, and what it is.
#[derive(Debug, PartialEq, Eq)]
struct LiveDamage {
    offset: Option<u64>,
    lsn: Option<u64>,
    reason: String,
}

impl std::fmt::Display for LiveDamage {
    /// `at offset 4224, LSN 5: <reason>` (the parts known).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.offset, self.lsn) {
            (Some(offset), Some(lsn)) => write!(f, "at offset {offset}, LSN {lsn}: "),
            (Some(offset), None) => write!(f, "at offset {offset}: "),
            (None, Some(lsn)) => write!(f, "at LSN {lsn}: "),
            (None, None) => Ok(()),
        }?;
        f.write_str(&self.reason)
    }
}

/// The damage row of a live count that stopped at `e`, one of the errors
/// [`super::is_damage`] takes (any other is described by its message alone).
fn live_damage(e: &Error) -> LiveDamage {
    let (offset, lsn, reason) = match e {
        Error::Corrupted {
            offset,
            lsn,
            reason,
            ..
        } => (Some(*offset), Some(*lsn), reason.clone()),
        Error::CorruptedSuperblock { offset, reason, .. } => {
            (Some(*offset), None, format!("metadata: {reason}"))
        }
        Error::FileShorterThanCapacity {
            file_len, capacity, ..
        } => (
            None,
            None,
            format!("the file is {file_len} bytes but the log's capacity is {capacity} bytes"),
        ),
        other => (None, None, other.to_string()),
    };
    LiveDamage {
        offset,
        lsn,
        reason,
    }
}

/// `info` while a writer has the log open: no snapshot can be taken, so the metadata page as
/// it is now, and the entries a [`crate::Reader`] reads live up to the writer's published end.
fn live_info(a: &InfoArgs) -> Result<u8, CliError> {
    let page = read_page(&a.path)?;
    let (sbs, slots) = decode_page(&page);
    let version = version_of(&sbs).unwrap_or(format::FORMAT_VERSION);
    let (published, _) = reader_area(&page, version);
    let mut r =
        crate::Reader::open_waiting(&a.path, super::lock_wait()).map_err(CliError::log(&a.path))?;
    let mut payload = Vec::new();
    // A count that a truncation overtook is started again from the head (a few times: the
    // writer may truncate faster than the log can be read; then the last count stands).
    let (mut readable, mut last) = (0u64, None);
    // Damage stops the count: the rows say what was read before it, then the error.
    let mut damage = None;
    for _ in 0..5 {
        r.seek(0).map_err(CliError::log(&a.path))?;
        (readable, last) = (0, None);
        let overtaken = loop {
            match r.next_into(&mut payload) {
                Ok(Some(lsn)) => {
                    readable += 1;
                    last = Some(lsn);
                }
                Ok(None) => break false,
                Err(Error::Truncated { .. } | Error::Rewound { .. }) => break true,
                Err(e) if super::is_damage(&e) => {
                    damage = Some(e);
                    break false;
                }
                Err(e) => return Err(CliError::log(&a.path)(e)),
            }
        };
        if !overtaken {
            break;
        }
    }
    let damage_fields = damage.as_ref().map(live_damage);
    let read_to = r.position();
    let first = r.first_lsn();
    let padding = read_to.saturating_sub(first).saturating_sub(readable);
    // Stopped at damage, the reader's position is the damaged LSN; the log goes on to the
    // published end.
    let next = if damage.is_some() {
        read_to.max(r.published().unwrap_or(0))
    } else {
        read_to
    };
    let capacity = sbs
        .iter()
        .find_map(|s| s.decoded.as_ref().ok().map(|sb| sb.capacity))
        .unwrap_or(0);
    let mut out = io::stdout().lock();
    if a.json {
        let v = json!({
            "path": a.path.display().to_string(),
            "format_version": version,
            "uuid": r.uuid(),
            "capacity": capacity,
            "writer": true,
            "published_lsn": (published != 0).then_some(published),
            "superblocks": sbs.iter().map(sb_json).collect::<Vec<_>>(),
            "slots": slots.iter().map(slot_json).collect::<Vec<_>>(),
            "entries": readable,
            "padding": padding,
            "first_lsn": (next > first).then_some(first),
            "last_lsn": last,
            "next_lsn": next,
            "damage": damage_fields.as_ref().map(|d| json!({
                "offset": d.offset,
                "lsn": d.lsn,
                "reason": d.reason,
            })),
            "crc_kernel": crate::kernel_choice().crc,
            "copy_kernel": crate::kernel_choice().copy,
        });
        writeln!(out, "{v}")?;
    } else {
        let mut rows = vec![
            ("path".to_string(), a.path.display().to_string()),
            ("format version".into(), version.to_string()),
            ("uuid".into(), r.uuid()),
            (
                "capacity".into(),
                format!("{} ({})", count(capacity, "byte", "bytes"), human(capacity)),
            ),
        ];
        rows.extend(meta_rows(&sbs, &slots));
        rows.extend([
            ("published".into(), published_text(published)),
            (
                "writer".into(),
                "has the log open: the entries below were read live, up to its published end"
                    .into(),
            ),
            ("entries".into(), readable.to_string()),
            ("padding".into(), padding.to_string()),
            (
                "first LSN".into(),
                if next > first {
                    first.to_string()
                } else {
                    "-".into()
                },
            ),
            (
                "last LSN".into(),
                last.map_or("-".into(), |l| l.to_string()),
            ),
            ("next LSN".into(), next.to_string()),
            ("kernels".into(), crate::kernel_choice().describe()),
        ]);
        if let Some(d) = &damage_fields {
            rows.push(("damage".into(), d.to_string()));
        }
        print_rows(&mut out, &rows)?;
    }
    out.flush()?;
    match damage {
        Some(e) => Err(CliError::Damaged(super::library_text(&a.path, &e))),
        None => Ok(EXIT_OK),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Every kind of damage a live count can stop at gets a row: an entry's (offset, LSN and
    /// reason), the metadata's (offset and reason) and a file cut short (its lengths).
    #[test]
    fn every_damage_a_live_count_meets_has_a_row() {
        let path = PathBuf::from("/x.dax");
        let entry = Error::Corrupted {
            path: path.clone(),
            offset: 4224,
            lsn: 5,
            reason: "payload checksum mismatch".into(),
            entries_beyond: 0,
        };
        let slot = Error::CorruptedSuperblock {
            path: path.clone(),
            offset: 1024,
            reason: "no valid metadata slot".into(),
        };
        let short = Error::FileShorterThanCapacity {
            path,
            file_len: 8192,
            capacity: 65536,
        };
        for (e, row) in [
            (&entry, "at offset 4224, LSN 5: payload checksum mismatch"),
            (&slot, "at offset 1024: metadata: no valid metadata slot"),
            (
                &short,
                "the file is 8192 bytes but the log's capacity is 65536 bytes",
            ),
        ] {
            assert!(super::super::is_damage(e), "{e}");
            assert_eq!(live_damage(e).to_string(), row);
        }
        assert_eq!(
            live_damage(&slot),
            LiveDamage {
                offset: Some(1024),
                lsn: None,
                reason: "metadata: no valid metadata slot".into()
            }
        );
    }
}
