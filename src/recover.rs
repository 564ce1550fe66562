//! Recovery (FORMAT.md, section 7), one function per step, in the order in which an open
//! takes them (`Log::recover` calls them):
//!
//! 1. [`read_superblock`]: the superblock, from its primary copy or else the backup (section 3);
//! 2. [`read_current_slot`]: the valid metadata slot with the larger sequence number (section 4);
//! 3. the scan from the slot's head (or its tail hint) to the first refused entry
//!    ([`crate::walk::scan`]);
//! 4. [`damage_versus_torn_tail`]: whether that end is damage or the torn tail of an
//!    interrupted append, and whether the recovery mode accepts it;
//!
//! and, in a writable open only:
//!
//! 5. [`repair_superblock`]: a damaged copy rewritten from the good one (section 3), and
//!    [`persist_recovered`]: the entries of the last session written back and drained;
//! 6. [`start_session`]: the slot with the cut at the next LSN and a fresh epoch, made durable
//!    (section 7, "Epochs");
//! 7. [`wipe_past_tail`]: the remains of an interrupted append, or the header of a complete
//!    entry that is no longer part of the log, zeroed with a second barrier;
//! 8. [`publish_recovered`]: the recovered entries published to readers, and the reader
//!    area's words left as this writer keeps them; but where the last writer published LSNs
//!    the log no longer holds ([`lost_to_pad`]), the published word is left as it is, and
//!    the open takes those LSNs with padding entries once the log is assembled.
//!
//! [`report`] then says what was found and done.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::damage::{self, Damage, Gap};
use crate::error::{Error, Result};
use crate::format::{
    self, Slot, Superblock, SuperblockError, DATA_OFFSET, SB_BACKUP_OFFSET, SB_LEN,
    SB_PRIMARY_OFFSET, SLOT0_OFFSET, SLOT_LEN,
};
use crate::map::fill_random;
use crate::media::{Media, Persistence, Pmem};
use crate::options::RecoveryMode;
use crate::walk::{self, Scan, TailState};
use crate::Lsn;

/// Step 1: the superblock of the log on `pmem`'s media, and whether the backup copy had to be
/// used. The media must hold the metadata page and the capacity the superblock names.
pub(crate) fn read_superblock<M: Media>(
    pmem: &mut Pmem<M>,
    path: &Path,
) -> Result<(Superblock, bool)> {
    let len = pmem.media().len();
    if len < DATA_OFFSET {
        return Err(Error::TooSmall {
            path: path.into(),
            len: len as u64,
            min: DATA_OFFSET as u64,
        });
    }
    let (sb, from_backup) = decode_superblocks(pmem.view(0, DATA_OFFSET), path)?;
    if (len as u64) < sb.capacity {
        return Err(Error::FileShorterThanCapacity {
            path: path.into(),
            file_len: len as u64,
            capacity: sb.capacity,
        });
    }
    Ok((sb, from_backup))
}

/// Picks the superblock from its two copies; the flag is true if the backup had to be used.
pub(crate) fn decode_superblocks(meta: &[u8], path: &Path) -> Result<(Superblock, bool)> {
    let primary = Superblock::decode(&meta[SB_PRIMARY_OFFSET..SB_PRIMARY_OFFSET + SB_LEN]);
    let backup = Superblock::decode(&meta[SB_BACKUP_OFFSET..SB_BACKUP_OFFSET + SB_LEN]);
    match (primary, backup) {
        (Ok(sb), _) => Ok((sb, false)),
        (Err(p), Ok(sb)) => {
            tracing::warn!(path = %path.display(), reason = ?p, "daxlog: primary superblock damaged, using the backup copy");
            Ok((sb, true))
        }
        (Err(SuperblockError::Version(found)), _) | (_, Err(SuperblockError::Version(found))) => {
            Err(Error::UnsupportedVersion {
                path: path.into(),
                found,
                supported: format::FORMAT_VERSION,
            })
        }
        (Err(SuperblockError::BadMagic), Err(SuperblockError::BadMagic)) => Err(Error::NotDaxlog {
            path: path.into(),
            offset: SB_PRIMARY_OFFSET as u64,
        }),
        (Err(SuperblockError::Corrupt(reason)), _) | (_, Err(SuperblockError::Corrupt(reason))) => {
            Err(Error::CorruptedSuperblock {
                path: path.into(),
                offset: SB_PRIMARY_OFFSET as u64,
                reason: format!("both copies damaged ({reason})"),
            })
        }
    }
}

/// Step 2: the current metadata slot ([`Slot::current`]): the valid copy with the larger
/// `seq`, or a newer copy one bit off a valid slot, read corrected.
///
/// Damage of one bit to the current slot would otherwise make recovery fall back to the older
/// copy, which may not lead to what was done since: entries written under the newer slot's
/// epoch are stale under the older one, a `truncate_before`'s entries come back, a
/// `truncate_after`'s deleted entries may. A slot update torn by a crash can be one bit off
/// too: off the slot it replaces (older, never taken), or off the slot it writes, which is
/// then taken as if the crash came just after the update. That is sound because every update
/// is a slot written after a barrier made durable what it depends on (the entries its head
/// and tail hint name; a new epoch marks no entry before it is durable), so the state it
/// describes is one the log could be in. (A torn update one bit off a slot nobody wrote needs a
/// checksum collision: about 2^-23 per torn update, 512 candidates of 2^-32 each.)
///
/// Also returns the copy that does not decode and is not blank, if any, and whether it was
/// the one taken.
pub(crate) fn read_current_slot<M: Media>(
    pmem: &mut Pmem<M>,
    sb: &Superblock,
    path: &Path,
) -> Result<(Slot, Option<Unreadable>)> {
    let meta = pmem.view(0, DATA_OFFSET);
    let found = Slot::current(meta, sb.salt, sb.capacity);
    let slot = found.slot.ok_or_else(|| Error::CorruptedSuperblock {
        path: path.into(),
        offset: SLOT0_OFFSET as u64,
        reason: "no valid metadata slot".into(),
    })?;
    let unreadable = found.unreadable.map(|off| Unreadable {
        offset: off as u64,
        repaired: found.repaired,
    });
    if let Some(u) = unreadable.filter(|u| u.repaired) {
        tracing::warn!(
            path = %path.display(),
            offset = u.offset,
            seq = slot.seq,
            "daxlog: the current metadata slot had one bit wrong; read it corrected"
        );
    }
    Ok((slot, unreadable))
}

/// A metadata slot that does not decode and is not blank.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unreadable {
    pub offset: u64,
    /// It was the current slot, one bit off, and was read corrected ([`read_current_slot`]).
    pub repaired: bool,
}

/// Step 3b, after the scan: a copy of the metadata slot that does not decode (and was not read
/// corrected), beside entries published past where the scan by the other copy ended. No crash
/// leaves that: published entries are durable, and every slot update keeps them where the
/// slot it replaces leads (a new epoch or a `reset` marks no entry before its slot is durable,
/// a suffix truncation lowers the published LSN durably before its slot, a writable open that
/// ends the log below it lowers it durably or pads up to it). So damage of more than one bit
/// took the current slot, and the older copy cannot vouch for what was done since (FORMAT.md
/// section 4). (Or zeros over the last published entries beside a torn slot update: damage
/// too.) The evidence is what the writer vouched for ([`vouched`]); in a log of version 2,
/// which does not say how its writer synced, the published LSN where this open flushes
/// through the CPU cache.
///
/// Where the writer vouched for nothing (it synced with `msync`, where a sync can succeed over
/// a write-back that fails and is reported later, so that a crash can lose a published
/// entry), the published LSN counts only beside a whole entry of this log where the scan
/// stopped, refused for its LSN or epoch alone, with an LSN at or past the scan's end
/// ([`written_past`]): what the session the damaged copy stood for wrote there; or beside
/// entries of a batch whose end the scan did not find (a suffix truncation of that session
/// cut it). Taking the older copy there would have the writable open give the LSNs published
/// since to padding entries, written over those entries. A lost write-back (beside a torn
/// slot update: a crash during it) mostly leaves the bytes that were there before, entries of
/// an earlier lap or nothing whole, and the log opens; where it leaves a deleted suffix's
/// entries (same LSNs, another epoch) or breaks a batch, the open refuses it as damage too.
pub(crate) fn slot_short_of_published(
    image: &[u8],
    sb: &Superblock,
    (slot, scan): (&Slot, &Scan),
    unreadable: Option<Unreadable>,
    (published, vouched): (Lsn, Lsn),
    persistence: Persistence,
) -> Option<Damage> {
    let u = unreadable.filter(|u| !u.repaired)?;
    let acknowledged = match sb.version {
        3.. if vouched > 0 => vouched,
        ..3 if persistence.is_cpu_flush() => published,
        _ if scan.stop_lsn > scan.next_lsn || written_past(image, sb.salt, slot, scan) => published,
        _ => 0,
    };
    (acknowledged > scan.next_lsn).then_some(Damage {
        offset: u.offset,
        lsn: scan.next_lsn,
        reason: "the metadata slot here does not decode, and published entries lie past where \
                 the other copy leads: damage took the current slot (a salvage lists them as a \
                 gap)",
        beyond: 0,
        beyond_lsns: None,
    })
}

/// Whether a whole entry of this log with an LSN at or past where `scan` (by `slot`) ended lies
/// where the scan stopped, or at the start of the data area when the scan stopped in the
/// log's first part (where appends go next after a wrap), valid under its own epoch (`slot`
/// refuses it for its LSN, its epoch, or the end of a batch it begins, which the scan did
/// not find).
fn written_past(image: &[u8], salt: u32, slot: &Slot, scan: &Scan) -> bool {
    let head = slot.head_offset as usize;
    let wrap = (scan.stop >= head).then_some(DATA_OFFSET);
    [Some(scan.refused), wrap].into_iter().flatten().any(|at| {
        let limit = if at >= head { image.len() } else { head };
        if at + format::HEADER_LEN > limit {
            return false;
        }
        let h = format::EntryHeader::decode(&image[at..at + format::HEADER_LEN]);
        let under_its_epoch = Slot {
            epoch: h.epoch,
            ..*slot
        };
        h.lsn >= scan.stop_lsn
            && walk::check_entry(image, at, limit, h.lsn, salt, &under_its_epoch).is_ok()
    })
}

/// Step 4: whether the end the scan found in `image` (the whole file) is damage inside the
/// acknowledged entries rather than a torn tail, and, in salvage mode, every damaged region.
/// Fails with [`Error::Corrupted`] on damage (but in salvage mode), and on a torn tail in
/// strict mode. `slot_damage` ([`slot_short_of_published`]) comes first: the scan by the
/// older copy saw nothing of what was done since. `(published, vouched)` are the reader
/// area's evidence ([`published`], [`vouched`]), read once by the open. Also returns the valid
/// entries discarded with a torn tail ([`RecoveryReport::torn_entries`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn damage_versus_torn_tail(
    image: &[u8],
    sb: &Superblock,
    slot: &Slot,
    scan: &Scan,
    (published, vouched): (Lsn, Lsn),
    slot_damage: Option<Damage>,
    mode: RecoveryMode,
    path: &Path,
) -> Result<Judged> {
    let damage::Assessment {
        damage: found,
        torn_entries,
    } = damage::assess(image, sb.salt, slot, scan, published, vouched);
    // (At damage, a salvage leaves out the valid entries of a torn tail at the end.)
    let slot_off = slot_damage.as_ref().map(|d| d.offset);
    let damage = slot_damage.or(found);
    let salvaged = (mode == RecoveryMode::Salvage && damage.is_some()).then(|| {
        // (The report's missing LSNs are judged after this: none taken for evidence here.)
        damage::salvage(
            image,
            sb.salt,
            slot,
            (published, vouched, 0),
            slot_off,
            |_, _| {},
        )
    });
    match (&damage, mode, &scan.state) {
        (Some(d), RecoveryMode::TolerateTornTail | RecoveryMode::Strict, _) => {
            return Err(Error::Corrupted {
                path: path.into(),
                offset: d.offset,
                lsn: d.lsn,
                reason: d.reason.to_string(),
                entries_beyond: d.beyond,
            });
        }
        (None, RecoveryMode::Strict, TailState::Torn { reason }) => {
            return Err(Error::Corrupted {
                path: path.into(),
                // Where the discarded bytes begin: the tail, or the start of the data area
                // when they wrapped.
                offset: scan.torn_start as u64,
                lsn: scan.next_lsn,
                reason: format!(
                    "torn tail refused in strict mode: {reason}{}",
                    match torn_entries {
                        0 => String::new(),
                        1 => " (1 valid entry after it could be the rest of its batch)".into(),
                        n =>
                            format!(" ({n} valid entries after it could be the rest of its batch)"),
                    }
                ),
                entries_beyond: 0,
            });
        }
        _ => {}
    }
    Ok(match salvaged {
        Some(s) => Judged {
            damage,
            gaps: s.gaps,
            torn_entries: s.torn,
            found_end: Some(s.end),
        },
        None => Judged {
            damage,
            gaps: Vec::new(),
            torn_entries,
            found_end: None,
        },
    })
}

/// What [`damage_versus_torn_tail`] judged.
pub(crate) struct Judged {
    /// Damage found (only a salvage-mode open goes on with it).
    pub damage: Option<Damage>,
    /// At damage, the damaged regions a salvage finds.
    pub gaps: Vec<Gap>,
    /// [`RecoveryReport::torn_entries`].
    pub torn_entries: u64,
    /// At damage, the LSN after the last whole append a salvage's walk finds
    /// ([`damage::Salvaged::end`]).
    pub found_end: Option<Lsn>,
}

/// Step 5: repairs a damaged superblock copy from the good one, and upgrades an older format
/// version (the reader area this writer keeps is new in version 2, its vouched word in
/// version 3). One copy at a time, each
/// made durable before the other is touched: an upgrade rewrites both, and under one barrier
/// a crash could tear both at once (FORMAT.md section 1: any of the pending words may be
/// lost), leaving no superblock to open the log with. While one copy is written the other is
/// whole, of the old version or the new.
pub(crate) fn repair_superblock<M: Media>(
    pmem: &mut Pmem<M>,
    sb: &mut Superblock,
    path: &Path,
) -> Result<()> {
    if sb.version < 3 {
        // The reader area first: a version-1 `create_on` left there whatever the media held,
        // which version 2 would read as a published LSN, and no version-2 writer wrote the
        // vouched word, which version 3 would read as vouching for entries (FORMAT.md section
        // 11). A version-2 log keeps its published LSN.
        let from = if sb.version < 2 {
            format::PUBLISHED_OFFSET
        } else {
            format::VOUCHED_OFFSET
        };
        clear_reader_words(pmem, from, path)?;
    }
    sb.version = format::FORMAT_VERSION;
    let good = sb.encode();
    for off in [SB_PRIMARY_OFFSET, SB_BACKUP_OFFSET] {
        if pmem.view(off, SB_LEN) != good {
            pmem.store_exclusive(off, &good);
            pmem.flush(off, SB_LEN);
            pmem.drain().map_err(|e| Error::io(path, "drain", e))?;
        }
    }
    Ok(())
}

/// Step 5b: makes the entries the last session appended durable, before the new session's
/// slot puts them below its cut (where every entry is taken as acknowledged). An append that
/// was in flight when its writer died (killed before its barrier) can be whole in the CPU
/// cache or the page cache without being durable; recovery accepts it, readers are shown it,
/// and later appends are acknowledged after it, so a power failure must not take it back.
/// Entries below the old cut were made durable by the recovery that accepted them (or were
/// acknowledged), and those before the tail hint's entry were published: from the higher of
/// the cut and where the scan began on, the entries are written back (lines already clean
/// cost little; in msync mode the kernel skips clean pages), then drained; and the header
/// where the tail is (zeros, or the destroyed header of a deleted entry).
///
/// In msync mode a page the kernel holds clean is not always on the disk: one whose
/// write-back failed is kept with its new bytes and marked clean, and only the first sync
/// that looked was told (the last session's, which then refused appends). The same holds for
/// the zeros a truncation wrote at the tail. So those bytes are first marked to be written
/// again ([`Media::rewrite`]), and the drain makes them durable or fails, and the open with
/// it: the header at the tail always (a page), the entries too unless the reader area says
/// the last writer published every one of them (it closed, or acknowledged them all, and no
/// sync or write of it failed: a failure, whichever sync saw it, lowers the value to the
/// writer's failure floor, [`Media::set_failure_floor`]; its value in the page cache, which a
/// restart of the machine loses with the pages it would vouch for). Where the value is at or
/// below the slot's cut (a failure floor; a kill leaves it below only inside a suffix
/// truncation or an open, which costs a larger rewrite), from it, before any tail hint or
/// later cut. Not from the published LSN on only: the kernel has been seen to report a
/// failed write-back to a later sync than the one that covered it (which returned success),
/// after entries it held were published (ext4 on a loop device, from one thread or several;
/// a plain `pwrite` + `msync` program saw the same).
pub(crate) fn persist_recovered<M: Media>(
    pmem: &mut Pmem<M>,
    slot: &Slot,
    scan: &Scan,
    published: Lsn,
    salt: u32,
    path: &Path,
) -> Result<()> {
    let len = pmem.media().len();
    let head = slot.head_offset as usize;
    // The header at the tail (where the area ends: at the head after a wrap, else the file).
    let limit = if scan.tail < head { head } else { len };
    let tail_header = (
        scan.tail,
        format::HEADER_LEN.min(limit.saturating_sub(scan.tail)),
    );
    // Where the reader area does not vouch for every entry: from the published LSN, where a
    // failed sync lowered it to the failure floor (at or below the slot's cut; a writer only
    // publishes from its session's start up, so a kill leaves it at or above): the failure
    // may concern entries before a later truncation's cut or tail hint too. Otherwise from
    // the cut, or the tail hint's entry (written after its entries were synced). (0: no
    // writer that publishes.)
    let unvouched = published < scan.next_lsn;
    let from = if unvouched && published != 0 && published <= slot.cut_lsn {
        published.max(slot.head_lsn)
    } else {
        slot.cut_lsn.max(scan.scanned_from)
    };
    // The live bytes from the offset of the entry at or before `from` to the tail, in one or
    // two ranges (from the first part across the wrap).
    let mut ranges = Vec::with_capacity(3);
    if from < scan.next_lsn {
        let start = if from < scan.scanned_from {
            // Before the tail hint the scan began at: found by a walk from the head to it
            // (checksums included: where damage stops it first, from the head).
            let wanted = pmem.media().wants_read_ahead();
            let image = pmem.view(0, len);
            let ahead = read_ahead_of(image, wanted);
            crate::walk::offset_of(image, salt, slot, from, &ahead).unwrap_or(head)
        } else {
            anchor_before(slot, scan, from)
        };
        if start >= head && scan.tail < head && scan.wrap_at > 0 && scan.wrap_at >= start {
            ranges.push((start, scan.wrap_at - start));
            ranges.push((DATA_OFFSET, scan.tail.saturating_sub(DATA_OFFSET)));
        } else if scan.tail > start {
            ranges.push((start, scan.tail - start));
        }
    }
    let media = pmem.media();
    media.rewrite(tail_header.0, tail_header.1);
    if unvouched {
        for &(off, n) in &ranges {
            media.rewrite(off, n);
        }
    }
    ranges.push(tail_header);
    for (off, n) in ranges {
        pmem.flush(off, n);
    }
    pmem.drain().map_err(|e| Error::io(path, "drain", e))
}

/// The read-ahead of walks over `image` (the bytes `Media::read` returned from offset 0) where
/// the media want it (`wanted`: [`Media::wants_read_ahead`]): the ranges asked for, in the
/// background. (Not `Media::read_ahead`: `image` borrows the media.)
pub(crate) fn read_ahead_of(image: &[u8], wanted: bool) -> impl Fn(usize, usize) + '_ {
    move |pos: usize, len: usize| {
        if wanted && pos < image.len() {
            let len = len.min(image.len() - pos);
            // SAFETY: `[pos, pos + len)` lies inside `image`, the bytes `Media::read` returned
            // from offset 0, alive while the closure is; media that want read-ahead return
            // slices of a file mapping there (`Media::wants_read_ahead`), and `MADV_WILLNEED`
            // changes no byte of any memory. (Each megabyte is asked for once; whether it is
            // cached is not looked at: `mincore` may not tell.)
            unsafe { crate::map::read_ahead(image.as_ptr().add(pos), len, false) };
        }
    }
}

/// The published LSN in the reader area, as the last writer left it in the page cache
/// (0: no version-2 writer), where it can be one. A version-1 writer never wrote the word
/// (its `create_on` left there whatever the media held, and the upgrade clears it), and no
/// writer publishes past what the data area can hold from the head (each LSN takes an entry
/// of at least a header): such a value is no evidence of anything, and reads as 0.
pub(crate) fn published(image: &[u8], sb: &Superblock, slot: &Slot) -> Lsn {
    let v = word(image, format::PUBLISHED_OFFSET);
    if sb.version < 2 {
        0
    } else {
        plausible(v, sb, slot)
    }
}

/// The LSN below which every entry was acknowledged, durable by CPU cache flushes, as the
/// reader area's two words say ([`format::vouched`]; 0 before version 3, and where the last
/// writer synced with `msync`, whose write-back can fail after the sync said it succeeded
/// and be reported later). An entry below it that recovery cannot read is damage (FORMAT.md
/// section 7, rule 1).
pub(crate) fn vouched(image: &[u8], sb: &Superblock, slot: &Slot) -> Lsn {
    let v = format::vouched(
        word(image, format::PUBLISHED_OFFSET),
        word(image, format::VOUCHED_OFFSET),
    );
    if sb.version < 3 {
        0
    } else {
        plausible(v, sb, slot)
    }
}

/// The little-endian word at `at`.
fn word(image: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"))
}

/// `v`, or 0 where it lies past the LSNs the data area can hold from the head.
fn plausible(v: Lsn, sb: &Superblock, slot: &Slot) -> Lsn {
    let data = sb.capacity.saturating_sub(DATA_OFFSET as u64);
    let most = slot
        .head_lsn
        .saturating_add(data / format::HEADER_LEN as u64 + 1);
    if v > most {
        0
    } else {
        v
    }
}

/// Step 8: every recovered entry is durable, so readers in other processes may read them
/// (`Media::publish_for_readers`), and the reader area's words are left as this writer keeps
/// them, durably where a crash could otherwise bring back a value that is evidence of more
/// than the log holds. First cleared: in msync mode, whose write-back can fail after a sync
/// said it succeeded, the vouched word (a writer in a CPU-flush mode may have left it); on
/// media that does not keep the reader area, both words (and where such media forwards the
/// publication all the same, it then stores its words over them). Then published; and where
/// the log ends below what was `published` (damage, or in msync mode a write-back that
/// failed), the lowered words made durable.
///
/// Except with `pad` (the LSNs from `next_lsn` up to `published` are about to be taken by
/// padding entries, [`lost_to_pad`]): then the published word is left as it is until the
/// padding is durable ([`crate::Log::pad_lost`]), so that an open after a power failure
/// meanwhile finds the LSNs not yet padded missing again instead of giving them out. (A failed
/// sync lowers it to the failure floor, `next_lsn`, as always: the next open in the same page
/// cache then writes the session, padding included, again from there. A power failure before
/// that open may keep the lowered word: then those LSNs are given out again.)
pub(crate) fn publish_recovered<M: Media>(
    pmem: &mut Pmem<M>,
    next_lsn: Lsn,
    published: Lsn,
    pad: bool,
    path: &Path,
) -> Result<()> {
    let media = pmem.media();
    media.set_failure_floor(next_lsn);
    let keeps = media.keeps_reader_area();
    let cpu = media.persistence().is_cpu_flush();
    let words = pmem.view(format::PUBLISHED_OFFSET, format::READER_WORDS_LEN);
    let clear = if !keeps && words.iter().any(|&b| b != 0) {
        Some(format::PUBLISHED_OFFSET)
    } else if keeps && !cpu && words[8..].iter().any(|&b| b != 0) {
        Some(format::VOUCHED_OFFSET)
    } else {
        None
    };
    if let Some(from) = clear {
        clear_reader_words(pmem, from, path)?;
    }
    if pad {
        return Ok(());
    }
    pmem.media().publish_for_readers(next_lsn);
    if published > next_lsn {
        pmem.flush(format::PUBLISHED_OFFSET, format::READER_WORDS_LEN);
        pmem.drain().map_err(|e| Error::io(path, "drain", e))?;
    }
    Ok(())
}

/// At a writable open: how many LSNs the last writer published (gave out: their appends
/// returned) past `next_lsn`, where the log's entries end, if there are at most [`MAX_PAD`]
/// of them and their padding entries take at most half of the `free` bytes the log has; else
/// 0 (none missing; or more, taken for a damaged published word, as
/// [`crate::RecoveryReport::published_missing`] takes more than the free space could have
/// held). The open takes them with padding entries before any append
/// ([`crate::Log::pad_lost`]), so that no LSN an append was acknowledged with is given to
/// another entry.
pub(crate) fn lost_to_pad(published: Lsn, next_lsn: Lsn, free: u64) -> u64 {
    match published.checked_sub(next_lsn) {
        Some(n) if n > 0 && n <= MAX_PAD && n <= free / 2 / format::HEADER_LEN as u64 => n,
        _ => 0,
    }
}

/// The most LSNs a writable open takes with padding (96 KiB of padding entries, each made
/// durable on its own: on a disk, up to about half a second). The published word has no
/// checksum: a bit flipped in it above bit 12 names more missing LSNs than that, and a log
/// does not spend its space and LSNs on what is most likely damage.
pub(crate) const MAX_PAD: u64 = 1 << 12;

/// Zeros the reader area's words from `from` (the published LSN, or the vouched word) to the
/// end of the vouched word, durably.
fn clear_reader_words<M: Media>(pmem: &mut Pmem<M>, from: usize, path: &Path) -> Result<()> {
    let len = format::PUBLISHED_OFFSET + format::READER_WORDS_LEN - from;
    pmem.store_exclusive(from, &[0; format::READER_WORDS_LEN][..len]);
    pmem.flush(from, len);
    pmem.drain().map_err(|e| Error::io(path, "drain", e))
}

/// The offset of an entry at or before accepted entry `lsn` (at or after where the scan
/// began): the scan's index, else where the scan began.
fn anchor_before(slot: &Slot, scan: &Scan, lsn: Lsn) -> usize {
    match lsn.checked_sub(scan.index_base) {
        Some(d) if !scan.index.is_empty() => {
            let k = ((d / crate::index::INDEX_STRIDE) as usize).min(scan.index.len() - 1);
            scan.index[k] as usize
        }
        _ if scan.scanned_from == slot.head_lsn => slot.head_offset as usize,
        _ => slot.hint_offset as usize,
    }
}

/// Step 6: starts a new session and returns its slot, made durable: entries from here on must
/// carry a fresh epoch, so nothing left past the tail by an interrupted append can ever be
/// accepted later. The slot is made durable first (with the superblock repair): only then can
/// the remains be touched ([`wipe_past_tail`]), or a crash in the middle of wiping them could
/// complete a torn entry under the old epoch.
pub(crate) fn start_session<M: Media>(
    pmem: &mut Pmem<M>,
    sb: &Superblock,
    slot: &Slot,
    next_lsn: Lsn,
    path: &Path,
) -> Result<Slot> {
    let current = Slot {
        seq: slot.seq + 1,
        cut_lsn: next_lsn,
        epoch: new_epoch(Some(slot.epoch)),
        flags: 0,
        ..*slot
    };
    let off = Slot::offset_for(current.seq);
    pmem.store_exclusive(off, &current.encode(sb.salt));
    pmem.flush(off, SLOT_LEN);
    #[cfg(feature = "mutants")]
    let drain = !crate::mutants::is(crate::mutants::Mutant::WipeInSlotBarrier);
    #[cfg(not(feature = "mutants"))]
    let drain = true;
    if drain {
        pmem.drain().map_err(|e| Error::io(path, "drain", e))?;
    }
    Ok(current)
}

/// Step 6a, before [`start_session`]: a current slot read corrected ([`read_current_slot`]) is
/// written back at its own offset, durably. The session's slot then goes over the other copy:
/// were that write torn, no copy would be whole, and of two copies one bit off (the corrected
/// one, and the torn one off the slot it replaces) the other could be taken.
pub(crate) fn rewrite_corrected_slot<M: Media>(
    pmem: &mut Pmem<M>,
    sb: &Superblock,
    slot: &Slot,
    unreadable: Option<Unreadable>,
    path: &Path,
) -> Result<()> {
    if unreadable.is_some_and(|u| u.repaired) {
        let off = Slot::offset_for(slot.seq);
        pmem.store_exclusive(off, &slot.encode(sb.salt));
        pmem.flush(off, SLOT_LEN);
        pmem.drain().map_err(|e| Error::io(path, "drain", e))?;
    }
    Ok(())
}

/// A random epoch, different from `previous`.
pub(crate) fn new_epoch(previous: Option<u32>) -> u32 {
    loop {
        let mut b = [0u8; 4];
        fill_random(&mut b);
        let e = u32::from_le_bytes(b);
        if Some(e) != previous {
            return e;
        }
    }
}

/// Step 7, after [`start_session`]: wipes what follows the tail that `slot` (the slot the scan
/// followed) and `scan` found: the remains of an interrupted append (so later opens report a
/// clean end), or the header of a complete entry that is no longer part of the log. The epoch
/// rule refuses such an entry only while the cut stays below its LSN; if the next appends wrap
/// to the start of the data area, it would stay on the scan's path, and a later cut above its
/// LSN (a deleted suffix whose header a crash kept `truncate_after` from destroying) would let
/// it back in. Correctness never depends on wiping torn remains: the slot of the new session
/// is durable first, so the remains are refused whatever the wipe leaves of them.
pub(crate) fn wipe_past_tail<M: Media>(
    pmem: &mut Pmem<M>,
    sb: &Superblock,
    slot: &Slot,
    scan: &Scan,
    path: &Path,
) -> Result<()> {
    let cap = sb.capacity as usize;
    let torn = matches!(scan.state, TailState::Torn { .. });
    let start = if torn { scan.torn_start } else { scan.tail };
    let area_end = if start < slot.head_offset as usize {
        slot.head_offset as usize
    } else {
        cap
    };
    let end = if torn {
        remains_end(pmem.view(0, cap), start, scan.torn_bytes).min(area_end)
    } else if start + 8 <= area_end && pmem.view(start, 8) != [0u8; 8] {
        start + 8
    } else {
        start
    };
    // A torn batch that had wrapped to the start of the data area leaves the tail itself
    // where it was: where its end marker would have been, bytes of an earlier lap (or of a
    // deleted suffix) that every later open would find torn. They go too.
    let tail = scan.tail;
    if torn && start < tail && tail + 8 <= cap && pmem.view(tail, 8) != [0u8; 8] {
        zero(pmem, tail, tail + 8, path)?;
    }
    if end > start {
        zero(pmem, start, end, path)?;
        if torn {
            tracing::warn!(
                path = %path.display(),
                offset = start,
                bytes = end - start,
                torn_bytes = scan.torn_bytes,
                next_lsn = scan.next_lsn,
                "daxlog: discarded the torn tail of an interrupted append"
            );
        } else {
            tracing::debug!(
                path = %path.display(),
                offset = start,
                "daxlog: destroyed the header of an entry past the tail"
            );
        }
    }
    Ok(())
}

/// Zeroes `start..end` durably.
fn zero<M: Media>(pmem: &mut Pmem<M>, start: usize, end: usize, path: &Path) -> Result<()> {
    let zeros = [0u8; 4096];
    let mut at = start;
    while at < end {
        let n = (end - at).min(zeros.len());
        pmem.store_exclusive(at, &zeros[..n]);
        at += n;
    }
    pmem.flush(start, end - start);
    pmem.drain().map_err(|e| Error::io(path, "drain", e))
}

/// Where the remains of an interrupted write that begin at `start` end: past the claimed
/// extent of the refused entry, through the following 4 KiB pages that still hold a non-zero
/// byte, but no further than 1 MiB past the claimed extent (in a wrapped log, older laps
/// follow).
fn remains_end(image: &[u8], start: usize, torn_bytes: u64) -> usize {
    const PAGE: usize = 4096;
    let mut end = (start + torn_bytes as usize).min(image.len());
    let stop = (end + (1 << 20)).min(image.len());
    while end < stop {
        let page_end = ((end / PAGE) + 1) * PAGE;
        let page_end = page_end.min(image.len());
        if image[end..page_end].iter().all(|&b| b == 0) {
            break;
        }
        end = page_end;
    }
    end
}

impl RecoveryReport {
    /// The offset of a damaged current slot whose older copy recovery read the log by
    /// ([`slot_short_of_published`]): the only damage reported inside the metadata page.
    pub(crate) fn slot_damage(&self) -> Option<u64> {
        self.damage
            .as_ref()
            .map(|d| d.offset)
            .filter(|&off| off < DATA_OFFSET as u64)
    }
}

/// What recovery found and did, for [`crate::Log::recovery`]; `start` is when the open began.
#[allow(clippy::too_many_arguments)]
pub(crate) fn report(
    scan: &Scan,
    slot: &Slot,
    from_backup: bool,
    unreadable: Option<Unreadable>,
    persistence: Persistence,
    judged: Judged,
    published: Lsn,
    start: Instant,
) -> RecoveryReport {
    let Judged {
        damage,
        gaps,
        torn_entries,
        found_end,
    } = judged;
    // Past the last LSN known: the scan's end, and with damage where a salvage's walk past it
    // ends and the gaps' LSNs. (Not past the last entry found beyond the damage: valid entries
    // after a refused one there may be appends in flight, never published, and the published
    // LSNs before them missing.)
    let known_end = found_end
        .into_iter()
        .chain(gaps.iter().map(|g| g.last_lsn + 1))
        .fold(scan.next_lsn, Lsn::max);
    let report = RecoveryReport {
        published_missing: (published > known_end).then(|| (known_end, published - 1)),
        unreadable_slot: unreadable.map(|u| u.offset),
        slot_repaired: unreadable.is_some_and(|u| u.repaired),
        entries: scan.entries,
        first_lsn: (scan.entries > 0).then_some(slot.head_lsn),
        last_lsn: (scan.entries > 0).then_some(scan.next_lsn - 1),
        tail_offset: scan.tail as u64,
        torn_bytes: scan.torn_bytes,
        torn_entries,
        torn_offset: match scan.state {
            TailState::Torn { .. } => scan.torn_start as u64,
            _ => scan.tail as u64,
        },
        tail_state: scan.state.clone(),
        superblock_from_backup: from_backup,
        duration: start.elapsed(),
        persistence,
        damage: damage.map(|d| DamageReport {
            offset: d.offset,
            lsn: d.lsn,
            reason: d.reason,
            entries_beyond: d.beyond,
            lsns_beyond: d.beyond_lsns,
        }),
        gaps,
        scanned_from: scan.scanned_from,
    };
    tracing::info!(
        entries = report.entries,
        last_lsn = ?report.last_lsn,
        torn_bytes = report.torn_bytes,
        torn_entries = report.torn_entries,
        %persistence,
        ms = report.duration.as_secs_f64() * 1e3,
        "daxlog: recovered log"
    );
    report
}

/// What [`crate::Log::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Entries recovery found in the log (not the padding a writable open may append after
    /// them: [`RecoveryReport::published_missing`]).
    pub entries: u64,
    /// LSN of the first entry (if any).
    pub first_lsn: Option<Lsn>,
    /// LSN of the last entry (if any).
    pub last_lsn: Option<Lsn>,
    /// Offset just past the last entry recovery found: where the next append goes (but for
    /// the padding a writable open may append there first:
    /// [`RecoveryReport::published_missing`]).
    pub tail_offset: u64,
    /// Bytes of an interrupted append that were discarded.
    pub torn_bytes: u64,
    /// Where those bytes begin: `tail_offset`, or the start of the data area when the
    /// interrupted append had wrapped there (the end of the file did not leave it room).
    pub torn_offset: u64,
    /// Valid entries found after those bytes and discarded with them, because they could be
    /// the rest of the interrupted append's batch (or, with concurrent appenders, of appends
    /// in flight beside it), never acknowledged: FORMAT.md section 7, the exception of rule
    /// 2. (Were the refused entry damage rather than an interrupted append, these were
    /// acknowledged: a read-only open leaves them on media; a writable open wipes what its
    /// wipe reaches, the torn bytes and the pages after them up to the first page of zeros,
    /// and any left are refused by their epoch from then on.) 0 when nothing valid follows.
    /// Counts what the search for continuations finds: entries inside the length the refused
    /// entry claims are not counted unless they run past it. At damage (a
    /// [`crate::RecoveryMode::Salvage`] open), the valid entries at the end of the log that a
    /// salvage leaves out for the same reason: those of an interrupted append whose end is
    /// torn, and those after it that could be the rest of its batch.
    pub torn_entries: u64,
    /// How the log ended.
    pub tail_state: TailState,
    /// The primary superblock was damaged and the backup copy was used (and, if the log was
    /// opened for writing, rewritten over the primary).
    pub superblock_from_backup: bool,
    /// Offset of a metadata slot that does not decode and is not blank: a slot write torn by
    /// a crash, or damage. The other copy was used (a writable open writes its next slot
    /// there), unless this one was newer and one bit off a valid slot: then it was read
    /// corrected ([`RecoveryReport::slot_repaired`]).
    pub unreadable_slot: Option<u64>,
    /// The current metadata slot had one bit wrong (damage, or a slot update torn by a crash
    /// one bit short of complete) and was read corrected: without it the older copy would
    /// have been taken, which may not lead to what was done since (FORMAT.md section 4). A
    /// writable open writes it back corrected before its session's slot goes over the other
    /// copy; a read-only open leaves it as it is.
    pub slot_repaired: bool,
    /// Wall-clock time of the whole open, mapping included.
    pub duration: Duration,
    /// The persistence barrier the log uses.
    pub persistence: Persistence,
    /// Damage found inside the acknowledged part of the log. Only a
    /// [`crate::RecoveryMode::Salvage`] open gets this far with damage; the other modes fail
    /// with [`crate::Error::Corrupted`].
    pub damage: Option<DamageReport>,
    /// In salvage mode, every damaged region with the LSNs it swallowed.
    pub gaps: Vec<Gap>,
    /// The LSN the scan started at: the first LSN, or a later one when a tail hint let the
    /// scan skip the entries before it (see [`crate::Options::tail_hint_every`]).
    pub scanned_from: Lsn,
    /// LSNs `first..=last` that the last writer published (the reader area's word: every
    /// entry below it was acknowledged) but that the log does not hold: past its last entry
    /// (with damage, past the gaps' LSNs and the entries a salvage finds in sequence beyond
    /// it, not counting valid entries after a refused one that could be appends in flight, never
    /// published; and no more of them
    /// than the log's free space could have held, else the word is taken for damaged).
    /// No crash leaves that (a writer publishes durable entries only, and lowers the word
    /// durably before any slot update that ends the log below it), but a crash inside an open
    /// that was padding such LSNs (below): so acknowledged entries were lost to damage (an
    /// entry, or the current metadata slot) or to a write-back that failed after a sync
    /// reported success (msync mode), or the word itself is damaged.
    /// Where the writer vouched for the entries (CPU-flush modes, FORMAT.md section 11), such
    /// a loss is refused as damage ([`crate::Error::Corrupted`]); where it could not (msync
    /// mode, a log of version 2), the open goes on, and this is the only report of it. A
    /// writable open then takes those LSNs with padding entries before any append (and logs
    /// a warning), so that no LSN an append was acknowledged with is given to another entry:
    /// [`crate::Log::read`] finds nothing at them, iterators step over them, and later opens
    /// no longer see them missing. Each padding entry is durable before the next is stored,
    /// and the word is left as it was until the last is: an open after a power failure
    /// meanwhile finds the rest missing and pads them. Not where more than 4,096 are missing,
    /// or their padding would take more than half the free space (taken for a damaged word);
    /// nor after a failed sync during the padding (the open fails, the word drops to where the
    /// log ended, and the next open goes on from the padding it finds): then those LSNs are
    /// given to new entries, as the warning says. `None` when the log holds every entry
    /// published.
    pub published_missing: Option<(Lsn, Lsn)>,
}

/// Damage recovery found; see [`RecoveryReport::damage`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamageReport {
    /// Offset of the first unreadable entry.
    pub offset: u64,
    /// The LSN it should carry: the log as opened ends before it.
    pub lsn: Lsn,
    /// Why it was refused.
    pub reason: &'static str,
    /// Valid entries found past it.
    pub entries_beyond: u64,
    /// Their LSN range.
    pub lsns_beyond: Option<(Lsn, Lsn)>,
}
