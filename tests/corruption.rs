//! Damage and bad input: every case of the table in README.md ("Bad input and damage") is
//! backed by a test here. The central promise: a torn tail is discarded and reported, but
//! damage with acknowledged entries after it is an error (default mode), never a silent drop.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::payload;
use daxlog::format::{self, EntryHeader, DATA_OFFSET, HEADER_LEN};
use daxlog::{Error, Log, Lsn, Options, RecoveryMode, TailState};

const N: u64 = 20;
const LEN: usize = 100; // 124 bytes on media: 4 bytes of padding per entry

fn opts(mode: RecoveryMode) -> Options {
    Options::new().recovery_mode(mode)
}

/// A log of N entries; `reopen_between` makes the entries older than the last session's cut.
fn make_log(dir: &Path, name: &str, reopen_between: bool) -> (PathBuf, Vec<u64>) {
    let path = dir.join(name);
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    let mut offsets = Vec::new();
    for l in 1..=N {
        offsets.push(DATA_OFFSET as u64 + log.used_bytes());
        log.append(&payload(l, LEN)).unwrap();
    }
    drop(log);
    if reopen_between {
        drop(Log::open(&path, &Options::new()).unwrap());
    }
    (path, offsets)
}

fn flip(path: &Path, at: u64, mask: u8) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, at).unwrap();
}

fn lsns(log: &Log) -> Vec<u64> {
    log.iter().map(|e| e.lsn).collect()
}

/// Where in an entry a flip lands.
#[derive(Clone, Copy, Debug)]
enum Spot {
    Crc,
    Len,
    Lsn,
    Payload,
}

fn spot_offset(entry: u64, spot: Spot) -> u64 {
    entry
        + match spot {
            Spot::Crc => 1,
            Spot::Len => 4, // low byte: a wrong but plausible length
            Spot::Lsn => 8,
            Spot::Payload => HEADER_LEN as u64 + 50,
        }
}

#[test]
fn damage_in_the_first_or_a_middle_entry_is_an_error_not_a_silent_drop() {
    let dir = tempfile::tempdir().unwrap();
    for reopen in [false, true] {
        for (which, idx) in [("first", 0usize), ("middle", 9)] {
            for spot in [Spot::Crc, Spot::Len, Spot::Lsn, Spot::Payload] {
                let name = format!("{which}-{spot:?}-{reopen}.dax");
                let (path, offs) = make_log(dir.path(), &name, reopen);
                flip(&path, spot_offset(offs[idx], spot), 0x10);
                let what = format!("{which} entry, {spot:?}, reopened between: {reopen}");
                for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
                    match Log::open(&path, &opts(mode)) {
                        Err(Error::Corrupted {
                            offset,
                            lsn,
                            entries_beyond,
                            path: p,
                            ..
                        }) => {
                            assert_eq!(offset, offs[idx], "{what}: offset");
                            assert_eq!(lsn, idx as u64 + 1, "{what}: LSN");
                            assert_eq!(p, path);
                            // Either the rest of the log is found, or (older than the cut)
                            // the loss is known without it.
                            assert!(
                                entries_beyond == N - idx as u64 - 1
                                    || (reopen && entries_beyond > 0),
                                "{what}: {entries_beyond} entries beyond"
                            );
                        }
                        other => panic!("{what} in {mode:?}: expected Corrupted, got {other:?}"),
                    }
                }
                // The file is untouched by the refused opens; salvage rescues everything else.
                let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
                assert_eq!(lsns(&log), (1..=idx as u64).collect::<Vec<_>>(), "{what}");
                let d = log.recovery().damage.clone().expect("damage reported");
                assert_eq!(d.lsn, idx as u64 + 1);
                let mut rescued = Vec::new();
                let gaps = log.salvage(|l, p| rescued.push((l, p.to_vec()))).unwrap();
                assert_eq!(gaps.len(), 1, "{what}: {gaps:?}");
                assert_eq!(
                    (gaps[0].first_lsn, gaps[0].last_lsn),
                    (idx as u64 + 1, idx as u64 + 1)
                );
                assert_eq!(gaps[0].offset, offs[idx]);
                assert_eq!(gaps[0].resume_offset, offs[idx + 1]);
                let want: Vec<(u64, Vec<u8>)> = (1..=N)
                    .filter(|&l| l != idx as u64 + 1)
                    .map(|l| (l, payload(l, LEN)))
                    .collect();
                assert_eq!(rescued, want, "{what}: salvaged entries");
                assert_eq!(log.recovery().gaps, gaps);
                // Salvage never writes: a writable salvage is refused.
                assert!(matches!(
                    Log::open(&path, &opts(RecoveryMode::Salvage)),
                    Err(Error::Unsupported { .. })
                ));
            }
        }
    }
}

/// Zeros over the first word of an entry's header (its checksum and length), or over more from
/// an entry's start, read like the end marker that ends a log: the entries after them,
/// acknowledged (published to readers), must not be dropped as if the log ended there. Damage
/// in every mode but salvage, which rescues them.
#[test]
fn zeros_over_an_entry_start_are_damage_not_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    for (i, zeros) in [8usize, 24, 512, 1000].into_iter().enumerate() {
        let (path, offs) = make_log(dir.path(), &format!("zeros-{zeros}.dax"), i % 2 == 1);
        let at = offs[4]; // LSN 5
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&vec![0u8; zeros], at).unwrap();
        drop(f);
        let hidden = (zeros as u64).div_ceil(offs[1] - offs[0]);
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let (offset, lsn, beyond, _) = judged(&path, mode).expect_err(&format!("{zeros}"));
            assert_eq!((offset, lsn), (at, 5), "{zeros} zeros, {mode:?}");
            assert_eq!(beyond, N - 4 - hidden, "{zeros} zeros, {mode:?}");
        }
        assert!(
            Log::open(&path, &Options::new()).is_err(),
            "{zeros}: writable"
        );
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        let r = log.recovery();
        assert_eq!(r.gaps.len(), 1, "{zeros}: {:?}", r.gaps);
        let mut rescued = Vec::new();
        log.salvage(|l, _| rescued.push(l)).unwrap();
        let want: Vec<u64> = (1..=N).filter(|&l| l < 5 || l >= 5 + hidden).collect();
        assert_eq!(rescued, want, "{zeros} zeros");
    }
}

#[test]
fn damage_in_the_last_entry_is_a_torn_tail_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    for spot in [Spot::Crc, Spot::Len, Spot::Lsn, Spot::Payload] {
        let (path, offs) = make_log(dir.path(), &format!("last-{spot:?}.dax"), false);
        let at = spot_offset(offs[N as usize - 1], spot);
        flip(&path, at, 0x10);
        match Log::open(&path, &opts(RecoveryMode::Strict)) {
            Err(Error::Corrupted { lsn, offset, .. }) => {
                assert_eq!((lsn, offset), (N, offs[N as usize - 1]));
            }
            other => panic!("strict, last entry {spot:?}: expected Corrupted, got {other:?}"),
        }
        let log = Log::open(&path, &opts(RecoveryMode::TolerateTornTail)).unwrap();
        assert_eq!(lsns(&log), (1..N).collect::<Vec<_>>());
        assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
        assert!(log.recovery().torn_bytes >= HEADER_LEN as u64);
        assert!(log.recovery().damage.is_none());
    }
}

/// One flipped bit in the length field of an entry of the current session is damage, also
/// where the longer length claims every entry after it as its payload (a chain found inside a
/// claimed payload is no evidence: a payload may hold encoded entries). The entry is whole with
/// the bit cleared again, which an interrupted append is not. Before, bits 15 to 19 here made
/// the open drop the 190 entries after entry 10 as a torn tail.
#[test]
fn a_flipped_length_bit_is_damage_even_where_it_swallows_the_entries_after_it() {
    const M: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.dax");
    log_of(&base, 1 << 20, &vec![&[LEN][..]; M as usize]);
    let offs: Vec<u64> = layout(&base).into_iter().map(|(o, _)| o).collect();
    // Entry 10's length, 100: bit 2 cleared (96: ends inside its own payload), bit 8 set (ends
    // two entries later), bits 15-19 set (+32 KiB to +512 KiB: past the 190 entries after it,
    // 24,320 bytes, and still inside the 1 MiB file).
    for bit in [2u32, 8, 15, 16, 19] {
        let what = format!("length bit {bit}");
        let path = dir.path().join(format!("len-{bit}.dax"));
        std::fs::copy(&base, &path).unwrap();
        flip(&path, offs[9] + 4 + u64::from(bit / 8), 1 << (bit % 8));
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            match Log::open(&path, &opts(mode)) {
                Err(Error::Corrupted {
                    offset,
                    lsn,
                    entries_beyond,
                    reason,
                    ..
                }) => {
                    assert_eq!((offset, lsn), (offs[9], 10), "{what}");
                    assert_eq!(entries_beyond, M - 10, "{what}");
                    // (A cleared bit is found by the search past the shorter length.)
                    if bit != 2 {
                        assert!(
                            reason.starts_with("length field damaged"),
                            "{what}: {reason}"
                        );
                    }
                }
                other => panic!("{what} in {mode:?}: expected Corrupted, got {other:?}"),
            }
        }
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        assert_eq!(lsns(&log), (1..10).collect::<Vec<_>>(), "{what}");
        let mut rescued = Vec::new();
        let gaps = log.salvage(|l, p| rescued.push((l, p.to_vec()))).unwrap();
        assert_eq!(gaps.len(), 1, "{what}: {gaps:?}");
        assert_eq!(
            (gaps[0].first_lsn, gaps[0].last_lsn, gaps[0].resume_offset),
            (10, 10, offs[10]),
            "{what}"
        );
        let want: Vec<(u64, Vec<u8>)> = (1..=M)
            .filter(|&l| l != 10)
            .map(|l| (l, payload(l, LEN)))
            .collect();
        assert_eq!(rescued, want, "{what}: salvaged entries");
    }
}

/// Every entry of a log by a walk from the slot's head that follows the LSNs (wrapping to the
/// start of the data area once): (offset, LSN).
fn layout(path: &Path) -> Vec<(u64, u64)> {
    let img = std::fs::read(path).unwrap();
    let (_, slot) = common::current_slot_of(path);
    let (mut pos, mut lsn, mut wrapped) = (slot.head_offset as usize, slot.head_lsn, false);
    let mut v = Vec::new();
    loop {
        let at = |p: usize| {
            p + HEADER_LEN <= img.len() && EntryHeader::decode(&img[p..p + HEADER_LEN]).lsn == lsn
        };
        if !at(pos) {
            if wrapped || !at(DATA_OFFSET) {
                return v;
            }
            (wrapped, pos) = (true, DATA_OFFSET);
        }
        v.push((pos as u64, lsn));
        pos += EntryHeader::decode(&img[pos..pos + HEADER_LEN]).entry_len();
        lsn += 1;
    }
}

/// What an open in `mode` says: `Ok(entries)` or `Err((offset, lsn, entries_beyond, reason))`
/// for `Corrupted`.
fn judged(path: &Path, mode: RecoveryMode) -> Result<u64, (u64, u64, u64, String)> {
    match Log::open_read_only(path, &opts(mode)) {
        Ok(log) => Ok(log.recovery().entries),
        Err(Error::Corrupted {
            offset,
            lsn,
            entries_beyond,
            reason,
            ..
        }) => Err((offset, lsn, entries_beyond, reason)),
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The reader area's published LSN set to `next` (the writer published every entry before
/// it): what a writer that crashed with the appends from `next` on in flight leaves.
/// The LSN spans `gaps` lists.
fn spans(gaps: &[daxlog::Gap]) -> Vec<(u64, u64)> {
    gaps.iter().map(|g| (g.first_lsn, g.last_lsn)).collect()
}

fn set_published(path: &Path, next: Lsn) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&next.to_le_bytes(), format::PUBLISHED_OFFSET as u64)
        .unwrap();
}

/// A log appended with `appends` (each a batch of payload lengths), closed.
fn log_of(path: &Path, capacity: u64, appends: &[&[usize]]) {
    let log = Log::create(path, &Options::new().capacity(capacity)).unwrap();
    let mut lsn = 1;
    for lens in appends {
        let ps: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| payload(lsn + i as u64, n))
            .collect();
        let refs: Vec<&[u8]> = ps.iter().map(|p| p.as_slice()).collect();
        lsn = log.append_batch(&refs).unwrap().end;
    }
}

/// A length bit set in the append before the last, whole with the bit cleared, after a crash
/// with both in flight (neither published): the last append could be the rest of its batch
/// (the exception of rule 2, FORMAT.md section 7), so it is a torn tail, as for a flipped
/// payload bit there (a payload made with the salt can make an interrupted append look whole
/// but for its length, and a crash must not make the log unopenable). The whole entries
/// discarded with it are reported (`torn_entries`), and `Strict` refuses. Also where the last
/// append wrapped to the start of the data area, whose end marker is where the repaired length
/// ends. (Published, they are damage: the next test.)
#[test]
fn a_flipped_length_bit_before_the_last_append_is_a_reported_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let singles: Vec<&[usize]> = vec![&[LEN]; 20];
    let mut then_batch: Vec<&[usize]> = vec![&[LEN]; 10];
    then_batch.push(&[LEN; 10]);
    let mut before_batch: Vec<&[usize]> = vec![&[LEN]; 15];
    before_batch.push(&[LEN; 5]);
    // (What: the log, the flipped entry, the first entry of its append: where the torn tail
    // begins.)
    let mut cases: Vec<(String, PathBuf, u64, u64)> = Vec::new();
    for (what, appends, lsn, start) in [
        ("entry 19 of 20 single appends", &singles, 19u64, 19u64),
        (
            "entry 13, inside the last append (a batch of 11..=20)",
            &then_batch,
            13,
            11,
        ),
        (
            "entry 15, the append before the last (a batch of 16..=20)",
            &before_batch,
            15,
            15,
        ),
    ] {
        for bit in [8u32, 15] {
            let path = dir.path().join(format!("{lsn}-{bit}.dax"));
            log_of(&path, 1 << 20, appends);
            let offs = layout(&path);
            flip(
                &path,
                offs[lsn as usize - 1].0 + 4 + u64::from(bit / 8),
                1 << (bit % 8),
            );
            let at = offs[start as usize - 1].0;
            set_published(&path, start);
            cases.push((format!("{what}, bit {bit}"), path, at, start));
        }
    }
    let (_, offs) = wrapped_ring(dir.path(), "probe.dax", 2000);
    let last = offs[first_after_wrap(&offs)].1;
    let (path, offs) = wrapped_ring(dir.path(), "wrapped.dax", last + 1);
    assert_eq!(first_after_wrap(&offs), offs.len() - 1);
    let (at, lsn) = offs[offs.len() - 2];
    flip(&path, at + 5, 1);
    set_published(&path, lsn);
    cases.push((
        "the entry before a wrapped last append".into(),
        path,
        at,
        lsn,
    ));
    for (what, path, at, lsn) in cases {
        let log = Log::open_read_only(&path, &Options::new()).unwrap();
        let r = log.recovery();
        assert_eq!(log.next_lsn(), lsn, "{what}");
        assert!(
            matches!(r.tail_state, TailState::Torn { .. }),
            "{what}: {r:?}"
        );
        assert_eq!(r.torn_offset, at, "{what}");
        // Every whole entry after the flipped one, up to the last.
        let (flipped, all) = match what.as_str() {
            w if w.starts_with("entry 13") => (13, 20),
            w if w.starts_with("entry") => (lsn, 20),
            _ => (lsn, lsn + 1),
        };
        assert_eq!(r.torn_entries, all - flipped, "{what}");
        match judged(&path, RecoveryMode::Strict) {
            Err((offset, _, _, reason)) => {
                assert_eq!(offset, at, "{what}");
                assert!(reason.starts_with("torn tail refused"), "{what}: {reason}");
            }
            Ok(n) => panic!("{what}: Strict opened with {n} entries"),
        }
    }
}

/// The same damage before published entries: they were acknowledged, so no append in flight
/// explains them, and the refused entry before them was acknowledged with them: damage, which
/// no open drops or wipes; a salvage copies every entry but the damaged one.
#[test]
fn damage_before_published_entries_is_never_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let singles: Vec<&[usize]> = vec![&[LEN]; 20];
    let mut then_batch: Vec<&[usize]> = vec![&[LEN]; 10];
    then_batch.push(&[LEN; 10]);
    // (The log, the damaged entry, a length bit or a payload byte.)
    for (what, appends, lsn, length) in [
        ("entry 19 of 20 singles, its length", &singles, 19u64, true),
        ("entry 19 of 20 singles, its payload", &singles, 19, false),
        (
            "entry 13 of a batch of 11..=20, its length",
            &then_batch,
            13,
            true,
        ),
    ] {
        let path = dir.path().join(format!("{lsn}-{length}.dax"));
        log_of(&path, 1 << 20, appends);
        let at = layout(&path)[lsn as usize - 1].0;
        if length {
            flip(&path, at + 5, 1 << 7);
        } else {
            flip(&path, at + HEADER_LEN as u64 + 3, 0x08);
        }
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            match judged(&path, mode) {
                Err((offset, l, beyond, _)) => {
                    assert_eq!((offset, l, beyond), (at, lsn, 20 - lsn), "{what}, {mode:?}")
                }
                Ok(n) => panic!("{what}, {mode:?}: opened with {n} entries"),
            }
        }
        assert!(
            matches!(
                Log::open(&path, &Options::new()),
                Err(Error::Corrupted { .. })
            ),
            "{what}: a writable open"
        );
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        let mut rescued = Vec::new();
        let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
        let want: Vec<u64> = (1..=20).filter(|&l| l != lsn).collect();
        assert_eq!(rescued, want, "{what}");
        assert_eq!(gaps.len(), 1, "{what}: {gaps:?}");
        assert_eq!((gaps[0].first_lsn, gaps[0].last_lsn), (lsn, lsn), "{what}");
        assert_eq!(log.recovery().torn_entries, 0, "{what}");
    }
}

/// Two faults: a high length bit set in entry 7 of 20, and the LSN of entry 8 damaged, so that
/// no single bit repairs the length (the entry the repaired length ends at must carry the next
/// LSN). The claimed extent then covers every entry after it, and a chain inside a claimed
/// payload is no evidence by itself (a payload may hold encoded entries); but entries 9..=20
/// lie below the published LSN, which no payload's encoded entries can (their LSNs are above
/// the interrupted append's): damage, never a torn tail that drops twelve acknowledged
/// entries. Where a crash left the word at 7 (entries 7 on in flight), the same bytes stay a
/// torn tail.
#[test]
fn a_length_no_one_bit_repairs_does_not_hide_published_entries() {
    let dir = tempfile::tempdir().unwrap();
    let singles: Vec<&[usize]> = vec![&[LEN]; 20];
    let path = dir.path().join("two-faults.dax");
    log_of(&path, 1 << 20, &singles);
    let entries = layout(&path);
    let (at, next) = (entries[6].0, entries[7].0);
    flip(&path, at + 5, 1 << 7); // length + 32 KiB: past every entry, inside the file
    flip(&path, next + 8, 1 << 4); // entry 8's LSN
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        match judged(&path, mode) {
            Err((offset, lsn, beyond, _)) => assert_eq!((offset, lsn, beyond), (at, 7, 12)),
            Ok(n) => panic!("{mode:?}: opened with {n} entries"),
        }
    }
    assert!(matches!(
        Log::open(&path, &Options::new()),
        Err(Error::Corrupted { .. })
    ));
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    let want: Vec<u64> = (1..=20).filter(|&l| l != 7 && l != 8).collect();
    assert_eq!(rescued, want);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].first_lsn, gaps[0].last_lsn), (7, 8));
    assert_eq!(gaps[0].resume_offset, entries[8].0);
    drop(log);

    set_published(&path, 7);
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    assert_eq!(lsns(&log), (1..=6).collect::<Vec<_>>());
    assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
}

/// Entry 1, then headers in a row that each carry the expected LSN, a wrong checksum and a
/// length that claims up to one end, each followed by a valid empty entry of the next LSN, all
/// below the published LSN; then more than `SEARCH_BYTES` of zeros. Every refused header is
/// damage with the entries after it, and the search past their common claimed end is made
/// once per judgement, not once per header (each reads 64 MiB of zeros: 341 headers took 10 s
/// to open and 30 s to salvage before, 0.05 s and 0.1 s now; not asserted, the verdicts are).
#[test]
fn refused_headers_in_a_row_below_published_are_each_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.dax");
    let x = 16 << 10;
    let cap = (x as u64 + (66 << 20)).next_multiple_of(1 << 20);
    let log = Log::create(&path, &Options::new().capacity(cap)).unwrap();
    log.append(b"one").unwrap();
    drop(log);
    let (sb, slot) = common::current_slot_of(&path);
    let p = DATA_OFFSET + format::entry_len(3);
    let end = p + x;
    let mut bytes = Vec::new();
    let mut lsn = 2;
    while bytes.len() + 2 * HEADER_LEN <= x {
        let at = p + bytes.len();
        let refused = EntryHeader {
            crc: 0xdead_beef,
            len: (end - at - HEADER_LEN) as u32,
            lsn,
            epoch: slot.epoch,
            flags: 0,
        };
        bytes.extend_from_slice(&refused.encode());
        bytes.extend_from_slice(&format::encode_entry(sb.salt, slot.epoch, lsn + 1, 0, b""));
        lsn += 2;
    }
    let k = (lsn - 2) / 2;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&bytes, p as u64).unwrap();
    set_published(&path, lsn);
    match judged(&path, RecoveryMode::TolerateTornTail) {
        Err((offset, l, beyond, _)) => assert_eq!((offset, l, beyond), (p as u64, 2, k)),
        Ok(n) => panic!("opened with {n} entries"),
    }
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    let want: Vec<u64> = std::iter::once(1)
        .chain((1..=k).map(|i| 2 * i + 1))
        .collect();
    assert_eq!(rescued, want);
    assert_eq!(gaps.len() as u64, k);
    assert!(gaps
        .iter()
        .zip(1..)
        .all(|(g, i)| (g.first_lsn, g.last_lsn) == (2 * i, 2 * i)));
}

/// Entry 5's payload holds encoded entries 6 and 7 (salt and epoch right), and a byte of it
/// past them is damaged. The salvage resumes at the real entry 6 after the payload, not at
/// the copy inside it (same LSN): it copies the real entries 6 to 10, and the gap is entry 5.
#[test]
fn a_salvage_prefers_the_entries_past_a_damaged_payload_to_copies_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forged.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    let (sb, slot) = common::current_slot_of(&path);
    let forged = |l: u64| format::encode_entry(sb.salt, slot.epoch, l, 0, b"copy");
    let mut at5 = 0;
    let mut want = Vec::new();
    for l in 1..=10u64 {
        let p = if l == 5 {
            at5 = DATA_OFFSET as u64 + log.used_bytes();
            [forged(6), forged(7), vec![0x55; 40]].concat()
        } else {
            payload(l, 40)
        };
        assert_eq!(log.append(&p).unwrap(), l);
        if l != 5 {
            want.push((l, p));
        }
    }
    drop(log);
    let plen = 2 * format::entry_len(4) + 40;
    flip(&path, at5 + (HEADER_LEN + plen - 3) as u64, 0x01);
    match judged(&path, RecoveryMode::TolerateTornTail) {
        Err((offset, l, beyond, _)) => assert_eq!((offset, l, beyond), (at5, 5, 5)),
        Ok(n) => panic!("opened with {n} entries"),
    }
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let mut got = Vec::new();
    let gaps = log.salvage(|l, p| got.push((l, p.to_vec()))).unwrap();
    assert_eq!(got, want);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((gaps[0].first_lsn, gaps[0].last_lsn), (5, 5));
}

/// The two faults of `a_length_no_one_bit_repairs_does_not_hide_published_entries`, with
/// entry 7's payload made of merging chains of encoded entries (LSNs from 1000, above the
/// published LSN) that spend the search's budget of walks before it reaches entry 9: entries
/// below the published LSN count without a walk, so the end is still damage.
#[test]
fn encoded_chains_in_a_payload_do_not_hide_published_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chains.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    let (sb, slot) = common::current_slot_of(&path);
    let mut starts = Vec::new();
    for l in 1..=20u64 {
        starts.push(DATA_OFFSET as u64 + log.used_bytes());
        let p = if l == 7 {
            (0..200u64)
                .flat_map(|i| {
                    let inner = format::encode_entry(sb.salt, slot.epoch, 1000 + i, 0, &[0; 8]);
                    format::encode_entry(sb.salt, slot.epoch, 1000 + i, 0, &inner)
                })
                .collect()
        } else {
            payload(l, LEN)
        };
        log.append(&p).unwrap();
    }
    drop(log);
    flip(&path, starts[6] + 5, 1 << 7);
    flip(&path, starts[7] + 8, 1 << 4);
    match judged(&path, RecoveryMode::TolerateTornTail) {
        Err((offset, l, beyond, _)) => assert_eq!((offset, l, beyond), (starts[6], 7, 12)),
        Ok(n) => panic!("opened with {n} entries"),
    }
}

/// Entry 1, then a batch 2..=4 whose first entry is torn (a payload byte) and the others
/// whole, closed (everything published). Returns the file and where the batch begins.
fn torn_batch(dir: &Path, name: &str) -> (PathBuf, u64) {
    let path = dir.join(name);
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    log.append(b"before").unwrap();
    let start = DATA_OFFSET as u64 + log.used_bytes();
    log.append_batch(&[&payload(2, 80), &payload(3, 80), &payload(4, 80)])
        .unwrap();
    drop(log);
    flip(&path, start + HEADER_LEN as u64 + 5, 0x40);
    (path, start)
}

/// The published LSN is evidence only where a writer can have stored it: a version-1 writer
/// never did (its `create_on` left there whatever the media held: here the published LSN of
/// a log that lived there before), and no writer publishes past what the data area holds
/// from the head (a word damaged in its high bits). Such a word changes nothing: the torn
/// batch stays a torn tail, and a salvage copies none of it. The upgrade to version 2 clears
/// the word before its superblocks.
#[test]
fn a_published_lsn_no_writer_can_have_stored_is_no_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let check = |path: &Path, what: &str| {
        let log = Log::open_read_only(path, &Options::new()).unwrap();
        assert_eq!(lsns(&log), [1], "{what}");
        assert!(
            matches!(log.recovery().tail_state, TailState::Torn { .. }),
            "{what}"
        );
        assert_eq!(log.recovery().torn_entries, 2, "{what}");
        drop(log);
        let log = Log::open_read_only(path, &opts(RecoveryMode::Salvage)).unwrap();
        let mut rescued = Vec::new();
        let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
        assert_eq!((rescued, gaps), (vec![1], vec![]), "{what}");
    };
    for (i, word) in [u64::MAX, 2 | (1 << 40), 1 << 62].into_iter().enumerate() {
        let (path, _) = torn_batch(dir.path(), &format!("garbage-{i}.dax"));
        set_published(&path, word);
        check(&path, &format!("published {word:#x}"));
    }
    // A version-1 log (both superblock copies say so), 1000 at the word.
    let (path, _) = torn_batch(dir.path(), "v1.dax");
    common::mark_version_1(&path);
    set_published(&path, 1000);
    check(&path, "version 1");
    // The upgrade: the torn batch discarded, the word what the new session published.
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(lsns(&log), [1]);
    assert_eq!(log.append(b"two").unwrap(), 2);
    drop(log);
    let f = std::fs::File::open(&path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, format::PUBLISHED_OFFSET as u64)
        .unwrap();
    assert_eq!(u64::from_le_bytes(b), 3);
}

/// Sets the 4 bytes at `pos` of `buf` so that `f(buf) == target`, for an `f` affine in the bits
/// of `buf` (a CRC): 32 equations in 32 unknowns, solved by elimination.
fn force_crc(buf: &mut [u8], pos: usize, target: u32, f: &dyn Fn(&[u8]) -> u32) {
    buf[pos..pos + 4].fill(0);
    let base = f(buf);
    let cols: Vec<u32> = (0..32)
        .map(|i| {
            let mut b = buf.to_vec();
            b[pos + i / 8] ^= 1 << (i % 8);
            f(&b) ^ base
        })
        .collect();
    // Row r: which unknown bits flip output bit r, and the value it must take.
    let mut rows: Vec<(u32, u32)> = (0..32)
        .map(|r| {
            let m = (0..32)
                .filter(|&i| cols[i] >> r & 1 == 1)
                .fold(0, |m, i| m | 1 << i);
            (m, (target ^ base) >> r & 1)
        })
        .collect();
    let (mut x, mut top) = (0u32, 0);
    let mut pivots = Vec::new();
    for c in 0..32 {
        let Some(p) = (top..32).find(|&r| rows[r].0 >> c & 1 == 1) else {
            continue;
        };
        rows.swap(top, p);
        for r in 0..32 {
            if r != top && rows[r].0 >> c & 1 == 1 {
                (rows[r].0, rows[r].1) = (rows[r].0 ^ rows[top].0, rows[r].1 ^ rows[top].1);
            }
        }
        pivots.push((top, c));
        top += 1;
    }
    for (r, c) in pivots {
        x |= rows[r].1 << c;
    }
    buf[pos..pos + 4].copy_from_slice(&x.to_le_bytes());
    assert_eq!(f(buf), target, "no solution");
}

/// The last entry with one length bit set stays a torn tail, though it is whole with the bit
/// cleared: a payload made with the salt can make an interrupted append look like that (its
/// checksum forced to match a shorter length, zeros where that length ends), and a crash
/// during such an append must not make the log unopenable, also where the rest of its batch
/// follows. Strict refuses it, as any torn tail.
#[test]
fn a_last_entry_whole_but_for_its_length_stays_a_torn_tail() {
    use daxlog::format::{entry_crc, payload_crc};
    let dir = tempfile::tempdir().unwrap();
    // Damage: one bit set in the length of the last of 20 entries.
    let path = dir.path().join("flip.dax");
    log_of(&path, 1 << 20, &vec![&[LEN][..]; 20]);
    let last = layout(&path)[19].0;
    flip(&path, last + 5, 1 << 7);
    // A crafted payload: whole at 100 bytes as far as its checksum tells, 228 long, torn in a
    // word past the 100th byte; appended alone, and as the first of a batch of two (the
    // second whole: the rest of its batch).
    let craft = |name: &str, batch: bool| {
        let crafted = dir.path().join(name);
        let log = Log::create(&crafted, &Options::new().capacity(1 << 20)).unwrap();
        for l in 1..=3 {
            log.append(&payload(l, 30)).unwrap();
        }
        let at = DATA_OFFSET as u64 + log.used_bytes();
        let salt = common::current_slot_of(&crafted).0.salt;
        let (short, long) = (100usize, 228usize);
        let mut p = payload(4, long);
        let ends = format::entry_len(short) - HEADER_LEN;
        p[ends..ends + 8].fill(0);
        // (The header's fields come after the payload in the checksum: any will do.)
        let header = |len: usize| EntryHeader {
            crc: 0,
            len: len as u32,
            lsn: 4,
            epoch: 1,
            flags: 0,
        };
        let target = entry_crc(payload_crc(salt, &p[..short]), &header(short));
        force_crc(&mut p, 200, target, &|b: &[u8]| {
            entry_crc(payload_crc(salt, b), &header(long))
        });
        if batch {
            assert_eq!(log.append_batch(&[&p, &payload(5, 30)]).unwrap(), 4..6);
        } else {
            assert_eq!(log.append(&p).unwrap(), 4);
        }
        drop(log);
        let word = (at + (HEADER_LEN + 200) as u64) & !7;
        OpenOptions::new()
            .write(true)
            .open(&crafted)
            .unwrap()
            .write_all_at(&[0u8; 8], word)
            .unwrap();
        // Interrupted: never published.
        set_published(&crafted, 4);
        crafted
    };
    let (crafted, crafted_batch) = (craft("crafted.dax", false), craft("batch.dax", true));
    // (`padded`: LSNs the writer had published that the log no longer holds, which a writable
    // open takes with padding.)
    for (what, path, entries, padded) in [
        ("length flip", &path, 19, 1),
        ("crafted torn payload", &crafted, 3, 0),
        ("crafted torn first entry of a batch", &crafted_batch, 3, 0),
    ] {
        let log = Log::open_read_only(path, &Options::new()).unwrap();
        assert_eq!(log.recovery().entries, entries, "{what}");
        assert!(
            matches!(log.recovery().tail_state, TailState::Torn { .. }),
            "{what}"
        );
        match judged(path, RecoveryMode::Strict) {
            Err((_, _, _, reason)) => {
                assert!(reason.starts_with("torn tail refused"), "{what}: {reason}")
            }
            Ok(n) => panic!("{what}: Strict opened with {n} entries"),
        }
        drop(log);
        // A writable open too.
        let log = Log::open(path, &Options::new()).unwrap();
        assert_eq!(
            (log.recovery().entries, log.len()),
            (entries, entries + padded),
            "{what}"
        );
    }
}

/// A length bit flipped in an entry longer than the search for continuations reaches (64 MiB)
/// is found too: the repaired length is tried up to the end of the file.
#[test]
fn a_flipped_length_bit_in_an_entry_of_over_64_mib_is_damage() {
    // (tmpfs where there is one: 128 MiB of log.)
    let dir = common::temp_dirs().remove(0);
    let path = dir.path().join("big.dax");
    let log = Log::create(&path, &Options::new().capacity(128 << 20)).unwrap();
    log.append(b"first").unwrap();
    log.append(&vec![7u8; 70 << 20]).unwrap();
    for l in 3..=50 {
        log.append(&payload(l, LEN)).unwrap();
    }
    drop(log);
    let at = layout(&path)[1].0;
    // Bit 24 set: 70 MiB + 16 MiB, past the 48 entries after it and inside the file.
    flip(&path, at + 7, 1);
    match judged(&path, RecoveryMode::TolerateTornTail) {
        Err((offset, lsn, beyond, reason)) => {
            assert_eq!((offset, lsn, beyond), (at, 2, 48));
            assert!(reason.starts_with("length field damaged"), "{reason}");
        }
        Ok(n) => panic!("opened with {n} entries"),
    }
}

/// A ring of 64 KiB with its head moved forward by `truncate_before` whenever it is full, up to
/// entry `until`: (path, layout of the live entries).
fn wrapped_ring(dir: &Path, name: &str, until: u64) -> (PathBuf, Vec<(u64, u64)>) {
    wrapped_ring_with(dir, name, until, &Options::new())
}

/// [`wrapped_ring`], written with options `o`.
fn wrapped_ring_with(
    dir: &Path,
    name: &str,
    until: u64,
    o: &Options,
) -> (PathBuf, Vec<(u64, u64)>) {
    let path = dir.join(name);
    let log = Log::create(&path, &o.clone().capacity(64 << 10)).unwrap();
    let mut l = 1;
    while l < until {
        match log.append(&payload(l, LEN)) {
            Ok(_) => l += 1,
            Err(Error::Full { .. }) => log.truncate_before(log.next_lsn() - 100).unwrap(),
            Err(e) => panic!("{e}"),
        }
    }
    drop(log);
    let offs = layout(&path);
    (path, offs)
}

/// The index in `offs` (a [`layout`]) of the first entry after the wrap.
fn first_after_wrap(offs: &[(u64, u64)]) -> usize {
    offs.iter()
        .position(|&(o, _)| o == DATA_OFFSET as u64)
        .expect("the live entries wrap")
}

/// Zeros over the start of the second-to-last entry, with the last after it, both published:
/// the one entry past the end could be the rest of an interrupted batch (rule 2's exception)
/// were it not published. It is: damage, and no open drops or wipes it; the salvage copies it.
#[test]
fn a_published_entry_past_zeros_is_never_taken_for_the_rest_of_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (path, offs) = make_log(dir.path(), "second-to-last.dax", false);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 8], offs[N as usize - 2]).unwrap();
    drop(f);
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
        let (offset, lsn, beyond, _) = judged(&path, mode).expect_err("damage");
        assert_eq!(
            (offset, lsn, beyond),
            (offs[N as usize - 2], N - 1, 1),
            "{mode:?}"
        );
    }
    assert!(Log::open(&path, &Options::new()).is_err());
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    assert_eq!(log.recovery().gaps.len(), 1);
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    assert_eq!(gaps, log.recovery().gaps);
    let want: Vec<u64> = (1..=N).filter(|&l| l != N - 1).collect();
    assert_eq!(rescued, want);
}

/// A log created over media that held another log (`Log::create_on`) clears that log's
/// published LSN durably before anything else: recovery takes entries below it for
/// acknowledged ones, and the new log's own entries lie below the old log's.
#[test]
fn a_log_created_over_another_clears_its_published_lsn() {
    use daxlog::Media;
    let media = common::media::FaultyMedia::new(1 << 20);
    // SAFETY: nothing else uses the media yet.
    unsafe { media.store(format::PUBLISHED_OFFSET, &1000u64.to_le_bytes()) };
    let log = Log::create_on(media, &Options::new()).unwrap();
    for l in 1..=3 {
        log.append(&payload(l, LEN)).unwrap();
    }
    let media = log.into_media();
    // SAFETY: in bounds; no store runs meanwhile.
    let word = unsafe { media.read(format::PUBLISHED_OFFSET, 8) };
    assert_eq!(word, [0u8; 8]);
}

/// Zeros over the start of the first entry after a wrap (8, 24 or 512 bytes): the scan ends
/// cleanly at the end of the log's first part, and the published entries after the zeros make
/// it damage at the start of the data area; a salvage-mode open lists the gap as the salvage
/// does. And 8 zero bytes over an entry of 70 KiB: the entries after it lie beyond any short
/// look past the end.
#[test]
fn zeros_over_a_wrapped_entry_or_a_large_one_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (base, offs) = wrapped_ring(dir.path(), "ring.dax", 2000);
    let i = first_after_wrap(&offs);
    let (at, lsn) = offs[i];
    for zeros in [8usize, 24, 512] {
        let path = dir.path().join(format!("wrap-zeros-{zeros}.dax"));
        std::fs::copy(&base, &path).unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&vec![0u8; zeros], at).unwrap();
        drop(f);
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let (offset, got, beyond, _) = judged(&path, mode).expect_err(&format!("{zeros}"));
            assert_eq!((offset, got), (at, lsn), "{zeros} zeros, {mode:?}");
            assert!(beyond > 0, "{zeros} zeros, {mode:?}");
        }
        assert!(Log::open(&path, &Options::new()).is_err(), "{zeros}");
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        let listed = log.recovery().gaps.clone();
        let gaps = log.salvage(|_, _| {}).unwrap();
        assert_eq!(listed, gaps, "{zeros} zeros");
        assert_eq!(gaps.len(), 1, "{zeros} zeros");
    }
    let path = dir.path().join("large.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    let mut at = 0;
    for l in 1..=12u64 {
        let len = if l == 5 { 70 << 10 } else { LEN };
        if l == 5 {
            at = DATA_OFFSET as u64 + log.used_bytes();
        }
        log.append(&payload(l, len)).unwrap();
    }
    drop(log);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 8], at).unwrap();
    drop(f);
    assert_eq!(
        judged(&path, RecoveryMode::TolerateTornTail).map_err(|e| (e.0, e.1, e.2)),
        Err((at, 5, 7))
    );
}

/// Damage to the first entry after a wrap: the scan, refused at the start of the data area,
/// ends cleanly at the end of the log's first part (its end marker, or the end of the file),
/// and that end used to hide every entry after the damaged one, also in `Strict` mode. The
/// entry there is now judged as any refused entry: the entries after it make it damage.
#[test]
fn damage_to_the_first_entry_after_a_wrap_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (base, offs) = wrapped_ring(dir.path(), "ring.dax", 2000);
    let i = first_after_wrap(&offs);
    let (at, lsn) = offs[i];
    let after = (offs.len() - i - 1) as u64;
    assert!(after > 10, "{after} entries after the wrap");
    assert_eq!(judged(&base, RecoveryMode::Strict), Ok(offs.len() as u64));
    let header: Vec<(u64, u8)> = (at..at + HEADER_LEN as u64).map(|b| (b, 0xff)).collect();
    for (what, flips) in [
        ("length bit 8", vec![(at + 5, 1u8)]),
        ("payload byte", vec![(at + HEADER_LEN as u64 + 10, 4)]),
        ("checksum bit", vec![(at, 1)]),
        // (No header rule holds: neither its LSN nor where its length ends says whose it is.)
        ("every header bit", header),
    ] {
        let path = dir.path().join(format!("{what}.dax"));
        std::fs::copy(&base, &path).unwrap();
        for (byte, mask) in flips {
            flip(&path, byte, mask);
        }
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            match judged(&path, mode) {
                Err((offset, l, beyond, _)) => {
                    assert_eq!((offset, l, beyond), (at, lsn, after), "{what} in {mode:?}")
                }
                Ok(n) => panic!("{what} in {mode:?}: opened with {n} entries"),
            }
        }
        // A salvage names the same entry, and copies every other.
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        let mut rescued = Vec::new();
        let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
        assert_eq!(gaps.len(), 1, "{what}: {gaps:?}");
        assert_eq!(
            (gaps[0].offset, gaps[0].first_lsn, gaps[0].last_lsn),
            (at, lsn, lsn),
            "{what}"
        );
        assert_eq!(gaps[0].resume_offset, offs[i + 1].0, "{what}");
        let want: Vec<u64> = offs.iter().map(|&(_, l)| l).filter(|&l| l != lsn).collect();
        assert_eq!(rescued, want, "{what}");
        // `daxlog info --json` says the same: damage at 4096, no torn bytes (and so none at
        // 4096: `torn_offset` is the tail, as for any end without them).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_daxlog"))
            .args(["info", path.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        // (It prints what it found, and fails on the damage.)
        assert!(!out.status.success(), "{what}: {out:?}");
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(info["damage"]["offset"], at, "{what}: {info}");
        assert_eq!(info["torn_bytes"], 0, "{what}: {info}");
        assert_eq!(info["torn_offset"], info["tail_offset"], "{what}: {info}");
    }
}

/// One bit flipped in the LSN, epoch or flag words of the last entry, which wrapped to the
/// start of the data area: reported as a torn tail there (as for the last entry anywhere
/// else), refused by `Strict`, never a clean end. Before, 126 of its 192 header bits ended the
/// scan cleanly at the end of the first part: the entry was dropped with nothing reported, in
/// `Strict` mode too, and the next append took its LSN.
#[test]
fn a_flipped_header_bit_in_a_wrapped_last_entry_is_never_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let (_, offs) = wrapped_ring(dir.path(), "probe.dax", 2000);
    let last = offs[first_after_wrap(&offs)].1;
    let (base, offs) = wrapped_ring(dir.path(), "ring.dax", last + 1);
    assert_eq!(*offs.last().unwrap(), (DATA_OFFSET as u64, last));
    let at = DATA_OFFSET as u64;
    // Bytes 8..24 of the header: the LSN, then the epoch and the flags.
    for bit in 64..192u64 {
        let path = dir.path().join(format!("bit-{bit}.dax"));
        std::fs::copy(&base, &path).unwrap();
        flip(&path, at + bit / 8, 1 << (bit % 8));
        match judged(&path, RecoveryMode::Strict) {
            Err((offset, l, beyond, _)) => {
                assert_eq!((offset, l, beyond), (at, last, 0), "bit {bit}")
            }
            Ok(n) => panic!("bit {bit}: Strict opened with {n} entries"),
        }
        let log = Log::open_read_only(&path, &opts(RecoveryMode::TolerateTornTail)).unwrap();
        let r = log.recovery();
        assert_eq!(r.entries, offs.len() as u64 - 1, "bit {bit}");
        assert!(
            matches!(r.tail_state, TailState::Torn { .. }),
            "bit {bit}: {r:?}"
        );
        assert_eq!(r.torn_offset, at, "bit {bit}");
        assert!(r.damage.is_none(), "bit {bit}: {r:?}");
    }
}

/// The remains of an append that wrapped (the last one, damaged here by a flipped payload bit,
/// as an interrupted one may be) are a torn tail at the start of the data area, as anywhere
/// else: reported (`Strict` refuses them, naming offset 4096), and wiped by a writable open.
/// Before, the scan ended cleanly at the end of the first part: nothing was reported, `Strict`
/// opened, and the remains stayed. The same entry below the session's cut (after a writable
/// open) is damage at 4096, in the open's error as in a salvage.
#[test]
fn a_torn_append_that_wrapped_is_a_torn_tail_at_the_start_of_the_data_area() {
    let dir = tempfile::tempdir().unwrap();
    let (_, offs) = wrapped_ring(dir.path(), "probe.dax", 2000);
    let i = first_after_wrap(&offs);
    let lsn = offs[i].1;
    let (base, offs) = wrapped_ring(dir.path(), "ring.dax", lsn + 1);
    assert_eq!(*offs.last().unwrap(), (DATA_OFFSET as u64, lsn));
    let payload_bit = DATA_OFFSET as u64 + HEADER_LEN as u64 + 50;

    let path = dir.path().join("torn.dax");
    std::fs::copy(&base, &path).unwrap();
    flip(&path, payload_bit, 0x10);
    match judged(&path, RecoveryMode::Strict) {
        Err((offset, l, 0, reason)) => {
            assert_eq!((offset, l), (DATA_OFFSET as u64, lsn));
            assert!(
                reason.starts_with("torn tail refused in strict mode"),
                "{reason}"
            );
        }
        other => panic!("Strict: {other:?}"),
    }
    let log = Log::open(&path, &opts(RecoveryMode::TolerateTornTail)).unwrap();
    assert_eq!(log.recovery().entries, offs.len() as u64 - 1);
    assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
    assert!(log.recovery().torn_bytes >= HEADER_LEN as u64);
    assert_eq!(log.recovery().torn_offset, DATA_OFFSET as u64);
    drop(log);
    let log = Log::open(&path, &opts(RecoveryMode::Strict)).unwrap();
    // (Wiped: the end is where the first part ends, clean or at the end of the file.)
    assert!(
        !matches!(log.recovery().tail_state, TailState::Torn { .. }),
        "{:?}",
        log.recovery().tail_state
    );
    // (The torn entry's append had returned: the first writable open took its LSN with
    // padding.)
    assert_eq!(log.last_lsn(), Some(lsn));
    assert!(log.read(lsn).is_none());
    assert_eq!(log.recovery().entries, offs.len() as u64);
    drop(log);

    // Below the cut: damage, named at 4096.
    let path = dir.path().join("below.dax");
    std::fs::copy(&base, &path).unwrap();
    drop(Log::open(&path, &Options::new()).unwrap());
    flip(&path, payload_bit, 0x10);
    match judged(&path, RecoveryMode::TolerateTornTail) {
        Err((offset, l, _, reason)) => {
            assert_eq!((offset, l), (DATA_OFFSET as u64, lsn), "{reason}");
        }
        other => panic!("below the cut: {other:?}"),
    }
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let gaps = log.salvage(|_, _| {}).unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (gaps[0].offset, gaps[0].first_lsn),
        (DATA_OFFSET as u64, lsn)
    );
}

/// A header at 4096 damaged in both its length and its LSN words (so it does not look like
/// any append's) with one append after it, which could be the rest of its batch after a crash
/// with both in flight (not published): a torn tail there (the exception of rule 2), reported
/// and refused by `Strict` at 4096, not a clean end that dropped the append after it
/// unreported. Published, or with two appends after it: damage.
#[test]
fn a_header_damaged_beyond_recognition_after_a_wrap_is_never_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let (_, offs) = wrapped_ring(dir.path(), "probe.dax", 2000);
    let lsn = offs[first_after_wrap(&offs)].1;
    for after in [1u64, 2] {
        let (path, offs) = wrapped_ring(dir.path(), &format!("ring{after}.dax"), lsn + 1 + after);
        assert_eq!(
            offs[offs.len() - 1 - after as usize],
            (DATA_OFFSET as u64, lsn)
        );
        flip(&path, DATA_OFFSET as u64 + 7, 0x40); // the length runs past the head
        flip(&path, DATA_OFFSET as u64 + 8, 0x01); // another LSN
        if after == 1 {
            match judged(&path, RecoveryMode::TolerateTornTail) {
                Err((offset, l, 1, _)) => assert_eq!((offset, l), (DATA_OFFSET as u64, lsn)),
                other => panic!("one published append after: {other:?}"),
            }
            set_published(&path, lsn);
        }
        let strict = judged(&path, RecoveryMode::Strict);
        let tolerant = judged(&path, RecoveryMode::TolerateTornTail);
        if after == 1 {
            match strict {
                Err((offset, l, 0, reason)) => {
                    assert_eq!((offset, l), (DATA_OFFSET as u64, lsn), "{reason}");
                    assert!(reason.starts_with("torn tail refused"), "{reason}");
                }
                other => panic!("Strict, one append after: {other:?}"),
            }
            assert_eq!(tolerant, Ok(offs.len() as u64 - 2));
            let log = Log::open_read_only(&path, &Options::new()).unwrap();
            assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
            assert_eq!(log.recovery().torn_offset, DATA_OFFSET as u64);
        } else {
            for got in [strict, tolerant] {
                match got {
                    Err((offset, l, beyond, _)) => {
                        assert_eq!((offset, l, beyond), (DATA_OFFSET as u64, lsn, 2))
                    }
                    other => panic!("two appends after: {other:?}"),
                }
            }
        }
    }
}

/// No interrupted append is taken for damage by the rules above: the last entry of a ring of
/// fixed-size entries (where every lap writes the same offsets, so an old word there differs
/// from the new one in few bits) torn in many ways, each 8-byte word either the one the append
/// wrote or the one the lap before left (with or without the end marker over its first word).
#[test]
fn a_torn_last_entry_over_an_earlier_lap_is_never_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (base, offs) = wrapped_ring(dir.path(), "ring.dax", 3000);
    let (sb, slot) = common::current_slot_of(&base);
    let per_lap = ((64 << 10) - DATA_OFFSET as u64) / 128;
    let mut img = std::fs::read(&base).unwrap();
    let (x, n) = *offs.last().unwrap();
    let x = x as usize;
    let new = img[x..x + 128].to_vec();
    let earlier = format::encode_entry(
        sb.salt,
        slot.epoch,
        n - per_lap,
        0,
        &payload(n - per_lap, LEN),
    );
    let path = dir.path().join("torn.dax");
    for zero_first in [false, true] {
        let mut old = earlier.clone();
        if zero_first {
            old[..8].fill(0);
        }
        // (Every 7th of the 2^16 mixes of the entry's 16 words.)
        for mask in (0u32..1 << 16).step_by(7) {
            for w in 0..16 {
                let src = if mask & (1 << w) != 0 { &new } else { &old };
                img[x + 8 * w..x + 8 * w + 8].copy_from_slice(&src[8 * w..8 * w + 8]);
            }
            std::fs::write(&path, &img).unwrap();
            let got = judged(&path, RecoveryMode::TolerateTornTail);
            assert!(
                got.is_ok(),
                "mask {mask:#06x}, zero_first {zero_first}: {got:?}"
            );
        }
    }
}

/// After a writable open, the last entry is older than the session's cut: its loss can no
/// longer be an interrupted append, so even the default mode reports it.
#[test]
fn damage_to_entries_of_an_earlier_session_is_always_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, offs) = make_log(dir.path(), "old-last.dax", true);
    flip(&path, spot_offset(offs[N as usize - 1], Spot::Payload), 1);
    match Log::open(&path, &Options::new()) {
        Err(Error::Corrupted {
            lsn,
            entries_beyond: 0,
            reason,
            ..
        }) => {
            assert_eq!(lsn, N);
            assert!(reason.contains("cut"), "{reason}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn padding_is_not_checksummed_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for idx in [0usize, 9, N as usize - 1] {
        let (path, offs) = make_log(dir.path(), &format!("pad{idx}.dax"), false);
        // The 4 padding bytes follow the 100-byte payload.
        flip(&path, offs[idx] + (HEADER_LEN + LEN) as u64 + 1, 0xff);
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!(lsns(&log), (1..=N).collect::<Vec<_>>());
        assert_eq!(
            log.read(idx as u64 + 1).unwrap().payload,
            payload(idx as u64 + 1, LEN)
        );
    }
}

#[test]
fn length_pointing_past_the_end_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for idx in [9usize, N as usize - 1] {
        let (path, offs) = make_log(dir.path(), &format!("len{idx}.dax"), false);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&u32::MAX.to_le_bytes(), offs[idx] + 4)
            .unwrap();
        drop(f);
        let r = Log::open(&path, &Options::new());
        if idx == N as usize - 1 {
            let log = r.unwrap();
            assert_eq!(lsns(&log), (1..N).collect::<Vec<_>>());
            assert_eq!(
                log.recovery().tail_state,
                TailState::Torn {
                    reason: "length runs past the end of the area"
                }
            );
        } else {
            assert!(
                matches!(
                    r,
                    Err(Error::Corrupted {
                        lsn: 10,
                        entries_beyond: 10,
                        ..
                    })
                ),
                "{r:?}"
            );
        }
    }
}

#[test]
fn a_torn_batch_whose_first_entry_is_damaged_stays_a_torn_tail() {
    // An interrupted batch can leave its first entry torn and the rest whole: that must not
    // be mistaken for damage with entries beyond it. (Published, the batch was acknowledged:
    // then it is damage.)
    let dir = tempfile::tempdir().unwrap();
    let (path, start) = torn_batch(dir.path(), "batch.dax");
    assert_eq!(
        judged(&path, RecoveryMode::TolerateTornTail),
        Err((start, 2, 2, "checksum mismatch".into()))
    );
    set_published(&path, 2);
    // What is discarded with it is reported: the two whole entries after it, in the report
    // and in what `daxlog check` says.
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    assert_eq!(log.recovery().torn_entries, 2);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_daxlog"))
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("and 2 valid entries after it that could be the rest of its batch"),
        "{said}"
    );
    drop(log);
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(lsns(&log), [1]);
    assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
    assert_eq!(log.recovery().torn_entries, 2);
    // The estimate covers the refused entry (its length field is intact here).
    assert_eq!(log.recovery().torn_bytes, format::entry_len(80) as u64);
    // Discarded: the next open finds a clean end, and nothing to report.
    drop(log);
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(log.recovery().tail_state, TailState::Clean);
    assert_eq!(log.recovery().torn_entries, 0);
}

#[test]
fn superblock_and_file_level_damage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Truncated superblock: the file ends inside the metadata page.
    let (path, _) = make_log(d, "trunc-sb.dax", false);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(matches!(
        Log::open(&path, &Options::new()),
        Err(Error::TooSmall { len: 100, .. })
    ));
    // A random file.
    let rnd = d.join("random");
    std::fs::write(&rnd, payload(99, 65536)).unwrap();
    assert!(matches!(
        Log::open(&rnd, &Options::new()),
        Err(Error::NotDaxlog { .. })
    ));
    // A half-written primary superblock (torn creation of a copy) falls back to the backup.
    let (path, _) = make_log(d, "half-sb.dax", false);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 32], 32).unwrap();
    drop(f);
    let log = Log::open(&path, &Options::new()).unwrap();
    assert!(log.recovery().superblock_from_backup);
    assert_eq!(log.len(), N);
}

#[test]
fn damaged_entry_error_message_names_file_offset_and_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let (path, offs) = make_log(dir.path(), "msg.dax", false);
    flip(&path, spot_offset(offs[4], Spot::Payload), 2);
    let e = Log::open(&path, &Options::new()).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    assert!(msg.contains(&format!("offset {}", offs[4])), "{msg}");
    assert!(msg.contains("LSN 5"), "{msg}");
    assert!(msg.contains("15 valid entries found beyond"), "{msg}");
    let _ = EntryHeader::decode; // the format module is part of the public API
}

/// Guards against two tools naming two different entries for one damage: inside a batch the
/// open's `Error::Corrupted` used to name the batch's first entry (where the discarded part
/// starts) while salvage named the bad one. Both must name the entry that is actually bad.
#[test]
fn damage_inside_a_batch_is_named_the_same_way_everywhere() {
    for dir in common::temp_dirs() {
        let path = dir.path().join("batch.dax");
        let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
        let p: Vec<Vec<u8>> = (1..=3).map(|l| payload(l, LEN)).collect();
        let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
        assert_eq!(log.append_batch(&refs).unwrap(), 1..4);
        for l in 4..=8 {
            log.append(&payload(l, LEN)).unwrap();
        }
        drop(log);
        let entry = (HEADER_LEN + LEN).next_multiple_of(8) as u64;
        let second = DATA_OFFSET as u64 + entry;
        flip(&path, second + HEADER_LEN as u64 + 5, 0x01);
        match Log::open(&path, &Options::new()) {
            Err(Error::Corrupted { offset, lsn, .. }) => assert_eq!((offset, lsn), (second, 2)),
            other => panic!("expected Corrupted, got {other:?}"),
        }
        let ro = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        let d = ro.recovery().damage.clone().unwrap();
        assert_eq!((d.offset, d.lsn), (second, 2));
        let gaps = &ro.recovery().gaps;
        assert_eq!((gaps[0].offset, gaps[0].first_lsn), (second, 2));
        let mut rescued = Vec::new();
        ro.salvage(|l, _| rescued.push(l)).unwrap();
        assert_eq!(rescued, [1, 3, 4, 5, 6, 7, 8]);
    }
}

/// `Log::verify` reads every entry back (padding included) and counts both kinds.
#[test]
fn verify_reads_everything_back() {
    for dir in common::temp_dirs() {
        let (path, offs) = make_log(dir.path(), "verify.dax", false);
        let log = Log::open(&path, &Options::new()).unwrap();
        log.append_padding(3).unwrap();
        let v = log.verify().unwrap();
        assert_eq!((v.entries, v.padding), (N, 3));
        assert_eq!(v.bytes, log.used_bytes());
        drop(log);
        // Damage that recovery skipped because it started at a tail hint is found.
        let hinted = Options::new().tail_hint_every(256);
        let log = Log::open(&path, &hinted).unwrap();
        for l in N + 4..N + 40 {
            log.append(&payload(l, LEN)).unwrap();
        }
        drop(log);
        flip(&path, offs[2] + HEADER_LEN as u64 + 1, 0x40);
        let log = Log::open_read_only(&path, &hinted).unwrap();
        assert!(
            log.recovery().scanned_from > 3,
            "the scan started at the hint"
        );
        match log.verify() {
            Err(Error::Corrupted { lsn, offset, .. }) => assert_eq!((lsn, offset), (3, offs[2])),
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }
}

/// Guards against salvage bringing back what was never acknowledged: a batch interrupted by a
/// crash can leave its first entry torn and its later ones whole (or its first ones whole and
/// its last torn); recovery discards it as a torn tail, and salvage must not copy any of it.
#[test]
fn salvage_never_copies_a_torn_tail() {
    for dir in common::temp_dirs() {
        for torn in [0usize, 2] {
            let path = dir.path().join(format!("torn-batch-{torn}.dax"));
            let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
            log.append(&payload(1, LEN)).unwrap();
            let p: Vec<Vec<u8>> = (2..=4).map(|l| payload(l, LEN)).collect();
            let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
            log.append_batch(&refs).unwrap();
            drop(log);
            let entry = (HEADER_LEN + LEN).next_multiple_of(8) as u64;
            let at = DATA_OFFSET as u64 + entry * (1 + torn as u64);
            flip(&path, at + HEADER_LEN as u64 + 3, 0x08);
            // Interrupted: not published.
            set_published(&path, 2);
            // Recovery: a torn tail, the whole batch discarded.
            let log = Log::open_read_only(&path, &Options::new()).unwrap();
            assert_eq!(lsns(&log), [1], "torn entry {torn}");
            assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
            drop(log);
            // Salvage: the same, and no gap.
            let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
            let mut rescued = Vec::new();
            let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
            assert_eq!(
                rescued,
                [1],
                "torn entry {torn}: salvage copied unacknowledged entries"
            );
            assert!(gaps.is_empty(), "torn entry {torn}: {gaps:?}");
        }
    }
}

/// Damage inside the log, and a torn batch at its end: the salvage copies every acknowledged
/// entry but the damaged one, leaves out the batch's valid entries (never acknowledged), and
/// says how many it left out (`RecoveryReport::torn_entries`), whether the batch's last entry
/// is torn (its first two held back) or its first (the two after it could be its rest).
#[test]
fn a_salvage_says_what_it_leaves_of_a_torn_tail_after_damage() {
    let dir = tempfile::tempdir().unwrap();
    for torn in [2u64, 0] {
        let path = dir.path().join(format!("damage-and-torn-{torn}.dax"));
        let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
        for l in 1..=4 {
            log.append(&payload(l, LEN)).unwrap();
        }
        let p: Vec<Vec<u8>> = (5..=7).map(|l| payload(l, LEN)).collect();
        let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
        assert_eq!(log.append_batch(&refs).unwrap(), 5..8);
        drop(log);
        let entry = (HEADER_LEN + LEN).next_multiple_of(8) as u64;
        let payload_of = |i: u64| DATA_OFFSET as u64 + entry * i + HEADER_LEN as u64 + 3;
        flip(&path, payload_of(1), 0x08); // LSN 2: damage
        flip(&path, payload_of(4 + torn), 0x08); // LSN 5 or 7: the batch torn
        set_published(&path, 5); // (interrupted: not published)
        match Log::open_read_only(&path, &Options::new()) {
            Err(Error::Corrupted { lsn: 2, .. }) => {}
            other => panic!("torn {torn}: {:?}", other.map(|l| lsns(&l))),
        }
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        let r = log.recovery();
        assert_eq!(r.gaps.len(), 1, "torn {torn}: {:?}", r.gaps);
        assert_eq!(r.torn_entries, 2, "torn {torn}");
        let mut rescued = Vec::new();
        let gaps = log.salvage(|l, p| rescued.push((l, p.to_vec()))).unwrap();
        assert_eq!(gaps, r.gaps);
        let want: Vec<(u64, Vec<u8>)> = [1, 3, 4].map(|l| (l, payload(l, LEN))).into();
        assert_eq!(rescued, want, "torn {torn}");
    }
}

#[test]
fn two_damaged_entries_do_not_hide_the_entries_behind_them() {
    // Damage at LSNs a and b: between them one append (a single entry, or a batch), which alone
    // would look like the rest of one interrupted batch. The entries after b were acknowledged:
    // the log must be refused, and salvage must find them.
    let dir = tempfile::tempdir().unwrap();
    for (a, b) in [(5u64, 7u64), (5, 6), (1, 3), (10, 13)] {
        let name = format!("two-{a}-{b}.dax");
        let (path, offs) = make_log(dir.path(), &name, false);
        for l in [a, b] {
            flip(
                &path,
                spot_offset(offs[l as usize - 1], Spot::Payload),
                0x01,
            );
        }
        let what = format!("damage at LSNs {a} and {b}");
        match Log::open(&path, &Options::new()) {
            Err(Error::Corrupted {
                lsn,
                entries_beyond,
                ..
            }) => {
                assert_eq!(lsn, a, "{what}");
                assert!(entries_beyond >= N - b, "{what}: {entries_beyond} beyond");
            }
            other => panic!("{what}: expected Corrupted, got {other:?}"),
        }
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        let mut rescued = Vec::new();
        let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
        let want: Vec<u64> = (1..=N).filter(|&l| l != a && l != b).collect();
        assert_eq!(rescued, want, "{what}: salvaged");
        let missing = spans(&gaps);
        if b == a + 1 {
            assert_eq!(missing, [(a, b)], "{what}");
        } else {
            assert_eq!(missing, [(a, a), (b, b)], "{what}");
        }
    }
    // The same with batches of three between and after the damage.
    let path = dir.path().join("two-batches.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    for first in (1..=N - 2).step_by(3) {
        let p: Vec<Vec<u8>> = (first..first + 3).map(|l| payload(l, LEN)).collect();
        let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
        log.append_batch(&refs).unwrap();
    }
    let entries = log.len();
    drop(log);
    let entry = (HEADER_LEN + LEN).next_multiple_of(8) as u64;
    // LSN 3 (the end of the first batch) and LSN 7 (the start of the third).
    for l in [3u64, 7] {
        flip(
            &path,
            DATA_OFFSET as u64 + entry * (l - 1) + HEADER_LEN as u64 + 5,
            0x01,
        );
    }
    match Log::open(&path, &Options::new()) {
        Err(Error::Corrupted { lsn, .. }) => assert_eq!(lsn, 3),
        other => panic!("batches: expected Corrupted, got {other:?}"),
    }
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    log.salvage(|l, _| rescued.push(l)).unwrap();
    let want: Vec<u64> = (1..=entries).filter(|&l| l != 3 && l != 7).collect();
    assert_eq!(rescued, want, "batches: salvaged");
}

#[test]
fn a_torn_batch_with_two_torn_entries_stays_a_torn_tail() {
    // One interrupted batch of five after an acknowledged entry: its second and fourth
    // entries torn, the others whole. Nothing after the first entry was acknowledged.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn-twice.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    log.append(&payload(1, LEN)).unwrap();
    let p: Vec<Vec<u8>> = (2..=6).map(|l| payload(l, LEN)).collect();
    let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
    log.append_batch(&refs).unwrap();
    drop(log);
    let entry = (HEADER_LEN + LEN).next_multiple_of(8) as u64;
    for l in [3u64, 5] {
        flip(
            &path,
            DATA_OFFSET as u64 + entry * (l - 1) + HEADER_LEN as u64 + 9,
            0x04,
        );
    }
    set_published(&path, 2);
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    assert_eq!(lsns(&log), [1]);
    assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
    drop(log);
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    assert_eq!(rescued, [1]);
    assert!(gaps.is_empty(), "{gaps:?}");
}

/// Sets the `CONCURRENT` flag in both slots of the log at `path` (as the writer does the first
/// time two appends overlap in a session).
fn mark_concurrent(path: &Path) {
    use daxlog::format::{Slot, SLOT0_OFFSET, SLOT1_OFFSET, SLOT_CONCURRENT};
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let (sb, _) = common::current_slot_of(path);
    for off in [SLOT0_OFFSET, SLOT1_OFFSET] {
        let mut b = vec![0u8; format::SLOT_LEN];
        file.read_exact_at(&mut b, off as u64).unwrap();
        if let Some(s) = Slot::decode(&b, sb.salt, sb.capacity) {
            let s = Slot {
                flags: s.flags | SLOT_CONCURRENT,
                ..s
            };
            file.write_all_at(&s.encode(sb.salt), off as u64).unwrap();
        }
    }
}

/// A crash with concurrent appends in flight, the first of which stored nothing: where it
/// would start, the end marker of the append before it and the bytes after it (zeros in a new
/// log), then appends after it, whole, none of them published. The end reads clean, and is:
/// nothing past it was acknowledged. (Were they published, the end would be damage, as in
/// `zeros_over_an_entry_start_are_damage_not_the_end_of_the_log`.)
#[test]
fn appends_in_flight_after_one_that_stored_nothing_end_the_log_cleanly() {
    for (concurrent, after) in [(true, 3u64), (false, 1), (false, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing-stored.dax");
        let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
        for l in 1..=4 {
            log.append(&payload(l, LEN)).unwrap();
        }
        let at = DATA_OFFSET as u64 + log.used_bytes();
        for l in 5..=5 + after {
            log.append(&payload(l, LEN)).unwrap();
        }
        drop(log);
        if concurrent {
            mark_concurrent(&path);
        }
        // LSN 5 never stored: its bytes are what they were before (zeros); none of them was
        // acknowledged, so the writer had published up to LSN 4.
        let entry = (HEADER_LEN + LEN).next_multiple_of(8);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&vec![0u8; entry], at).unwrap();
        drop(f);
        set_published(&path, 5);
        let case = format!("concurrent {concurrent}, {after} after");
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            let log = Log::open_read_only(&path, &opts(mode)).unwrap();
            assert_eq!(lsns(&log), [1, 2, 3, 4], "{case}, {mode:?}");
            assert_eq!(log.recovery().tail_state, TailState::Clean, "{case}");
        }
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!(log.append(b"five").unwrap(), 5, "{case}");
        drop(log);
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Strict)).unwrap();
        assert_eq!(lsns(&log), [1, 2, 3, 4, 5], "{case}");
    }
}

/// An interrupted append whose header did not reach media but whose payload did, a payload of
/// encoded entries of the log (its salt, epoch and LSNs 6..=9): nothing past LSN 4 published,
/// so the end stays clean and the encoded entries are no evidence of damage (the log must open
/// after any crash). Published up to LSN 7 (acknowledged entries, one of them with the
/// LSN of an entry found past the end), damage. (Published up to LSN 5 only, the append was
/// acknowledged and its header zeroed since: nothing past the end proves it, and it ends the
/// log as damage to the last entry does, FORMAT.md section 7.)
#[test]
fn an_interrupted_append_of_encoded_entries_without_its_header_is_no_damage() {
    let dir = tempfile::tempdir().unwrap();
    for published in [5u64, 6, 8] {
        let path = dir.path().join(format!("forged-{published}.dax"));
        let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
        for l in 1..=4 {
            log.append(&payload(l, LEN)).unwrap();
        }
        let at = DATA_OFFSET as u64 + log.used_bytes();
        let (sb, slot) = common::current_slot_of(&path);
        let inner: Vec<u8> = (6..=9)
            .flat_map(|l| format::encode_entry(sb.salt, slot.epoch, l, 0, &payload(l, 40)))
            .collect();
        assert_eq!(log.append(&inner).unwrap(), 5);
        drop(log);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0u8; HEADER_LEN], at).unwrap();
        drop(f);
        set_published(&path, published);
        let r = Log::open_read_only(&path, &Options::new());
        if published < 8 {
            let log = r.unwrap();
            assert_eq!(lsns(&log), [1, 2, 3, 4]);
            assert_eq!(log.recovery().tail_state, TailState::Clean);
        } else {
            assert!(
                matches!(r, Err(Error::Corrupted { lsn: 5, .. })),
                "{:?}",
                r.map(|l| lsns(&l))
            );
        }
    }
}

#[test]
fn sixteen_reservations_in_flight_with_a_torn_batch_first_stay_a_torn_tail() {
    // After acknowledged entries, 16 reservations in flight (the ring's bound) when the power
    // failed: a batch of three whose first entry is torn, then 15 single appends, all whole.
    // None of them was acknowledged: a torn tail. One more reservation after them could not
    // have been in flight with the torn entry: damage.
    for (singles, damage) in [(15, false), (16, true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sixteen.dax");
        let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
        for l in 1..=3 {
            log.append(&payload(l, LEN)).unwrap();
        }
        let torn_at = DATA_OFFSET as u64 + log.used_bytes();
        let p: Vec<Vec<u8>> = (4..=6).map(|l| payload(l, LEN)).collect();
        let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
        log.append_batch(&refs).unwrap();
        for l in 7..7 + singles {
            log.append(&payload(l, LEN)).unwrap();
        }
        drop(log);
        mark_concurrent(&path);
        flip(&path, torn_at + HEADER_LEN as u64 + 9, 0x04);
        set_published(&path, 4);
        let r = Log::open_read_only(&path, &Options::new());
        if damage {
            match r {
                Err(Error::Corrupted {
                    lsn,
                    entries_beyond,
                    ..
                }) => {
                    assert_eq!(lsn, 4);
                    assert_eq!(entries_beyond, 2 + singles);
                }
                other => panic!(
                    "{singles} singles: expected Corrupted, got {:?}",
                    other.map(|l| lsns(&l))
                ),
            }
        } else {
            let log = r.unwrap_or_else(|e| panic!("{singles} singles: {e}"));
            assert_eq!(lsns(&log), [1, 2, 3]);
            assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
            // The rest of the batch and the singles, discarded with it.
            assert_eq!(
                log.recovery().torn_entries,
                2 + singles,
                "{singles} singles"
            );
        }
    }
}

/// A log of entry 1 and a torn entry 2 whose payload `chain(salt, epoch)` makes, opened
/// read-only: its LSNs and how its tail ended. (The open runs in a thread of its own, bounded
/// only to report a hang as a failure, not as a measure of speed.)
fn open_with_torn_payload(
    capacity: u64,
    chain: impl FnOnce(u32, u32) -> Vec<u8>,
) -> (Vec<u64>, TailState) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.dax");
    let log = Log::create(&path, &Options::new().capacity(capacity)).unwrap();
    log.append(b"one").unwrap();
    let (sb, slot) = common::current_slot_of(&path);
    let (salt, epoch) = (sb.salt, slot.epoch);
    assert_eq!(log.append(&chain(salt, epoch)).unwrap(), 2);
    drop(log);
    // Torn: its checksum does not match (as if the append was interrupted).
    flip(&path, DATA_OFFSET as u64 + format::entry_len(3) as u64, 1);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(
            Log::open_read_only(&path, &Options::new())
                .map(|l| (lsns(&l), l.recovery().tail_state.clone())),
        );
    });
    rx.recv_timeout(std::time::Duration::from_secs(120))
        .expect("the open did not end")
        .unwrap()
}

/// A torn last entry whose payload holds a long chain of encoded entries of the log (salt and
/// epoch right, LSNs continuing) stays a torn tail, and deciding so takes one walk of the
/// chain, not one per entry in it (which, for the 8 MiB payload here, ran for many minutes).
#[test]
fn a_torn_entry_holding_a_chain_of_encoded_entries_is_judged_in_one_walk() {
    let (got, tail) = open_with_torn_payload(16 << 20, |salt, epoch| {
        // Entries 3, 4, ... with empty payloads, 8 MiB of them.
        let mut chain = Vec::with_capacity(8 << 20);
        let mut lsn = 3;
        while chain.len() + HEADER_LEN <= 8 << 20 {
            chain.extend_from_slice(&format::encode_entry(salt, epoch, lsn, 0, b""));
            lsn += 1;
        }
        chain
    });
    assert_eq!(
        got,
        vec![1],
        "entry 2 is torn, and the chain inside it is no evidence"
    );
    assert!(matches!(tail, TailState::Torn { .. }), "{tail:?}");
}

/// The same with chains that merge: every entry of the chain holds, in its payload, another
/// entry that ends where the next one of the chain begins, with the LSN before it; a walk from
/// each of those joins the chain and would walk it to its end again (8 MiB: many minutes).
#[test]
fn a_torn_entry_holding_merging_chains_is_judged_in_linear_time() {
    let (got, tail) = open_with_torn_payload(16 << 20, |salt, epoch| {
        let mut chain = Vec::with_capacity(8 << 20);
        let mut lsn = 3;
        while chain.len() + 56 <= 8 << 20 {
            let side = format::encode_entry(salt, epoch, lsn, 0, &[0u8; 8]);
            chain.extend_from_slice(&format::encode_entry(salt, epoch, lsn, 0, &side));
            lsn += 1;
        }
        chain
    });
    assert_eq!(got, vec![1]);
    assert!(matches!(tail, TailState::Torn { .. }), "{tail:?}");
}

/// A torn last entry whose payload is headers of the log (the session's epoch, LSNs continuing,
/// checksums wrong) one after another, each claiming the rest of the payload, stays a torn
/// tail, and deciding so does not checksum the rest at every position (quadratic: a minute
/// for 12 MiB, four for the 24 MiB here, where it now reads each block once).
#[test]
fn a_torn_entry_holding_headers_that_claim_the_rest_is_judged_in_linear_time() {
    const LEN: usize = 24 << 20;
    let (got, tail) = open_with_torn_payload(32 << 20, |_, epoch| {
        let mut p = vec![0u8; LEN];
        let mut q = 0;
        while q + HEADER_LEN <= LEN {
            let h = EntryHeader {
                crc: 7,
                len: (LEN - q - HEADER_LEN) as u32,
                lsn: 3,
                epoch,
                flags: 0,
            };
            p[q..q + HEADER_LEN].copy_from_slice(&h.encode());
            q += HEADER_LEN;
        }
        p
    });
    assert_eq!(got, vec![1]);
    assert!(matches!(tail, TailState::Torn { .. }), "{tail:?}");
}

/// `crc32c_append(crc, b)` from `crc32c(b)` and `b`'s length, as `crc32c::crc32c_combine`
/// computes it but in about 30 multiplications in GF(2)[x] modulo the CRC-32C polynomial
/// (reflected bit order: bit 31 is the coefficient of x^0).
fn crc_continue(crc: u32, crc_of_b: u32, len_of_b: usize) -> u32 {
    let times = |a: u32, b: u32| {
        (0..32)
            .fold((0u32, b), |(acc, b), i| {
                let acc = if (a >> (31 - i)) & 1 == 1 {
                    acc ^ b
                } else {
                    acc
                };
                (acc, (b >> 1) ^ if b & 1 == 1 { 0x82F6_3B78 } else { 0 })
            })
            .0
    };
    // x^(8·len): x^8, x^16, x^32 ... for the set bits of len.
    let (mut power, mut square, mut n) = (1u32 << 31, 1u32 << 23, len_of_b);
    while n > 0 {
        if n & 1 == 1 {
            power = times(power, square);
        }
        square = times(square, square);
        n >>= 1;
    }
    times(crc, power) ^ crc_of_b
}

/// The same with valid entries nested in one another (the session's salt and epoch, LSN 3,
/// checksums right), one at every header's length, each ending where the payload ends: each is
/// found and walked, and its checksum, which covers the rest of the payload, is not computed
/// afresh for each (quadratic: 27 s for 8 MiB, minutes for the 24 MiB here).
#[test]
fn a_torn_entry_holding_nested_valid_entries_is_judged_in_linear_time() {
    const LEN: usize = 24 << 20;
    let (got, tail) = open_with_torn_payload(32 << 20, |salt, epoch| {
        let mut p = vec![0u8; LEN];
        // From the innermost out; `rest` is the CRC-32C of p[q + HEADER_LEN..] (linear
        // combination, as computing each afresh would be quadratic here too).
        let mut q = (LEN / HEADER_LEN - 1) * HEADER_LEN;
        let mut rest = crc32c::crc32c(&p[q + HEADER_LEN..]);
        loop {
            let len = LEN - q - HEADER_LEN;
            let mut h = EntryHeader {
                crc: 0,
                len: len as u32,
                lsn: 3,
                epoch,
                flags: 0,
            };
            h.crc = format::entry_crc(crc_continue(salt, rest, len), &h);
            p[q..q + HEADER_LEN].copy_from_slice(&h.encode());
            if q == 0 {
                break p;
            }
            rest = crc_continue(crc32c::crc32c(&p[q..q + HEADER_LEN]), rest, len);
            q -= HEADER_LEN;
        }
    });
    assert_eq!(got, vec![1]);
    assert!(matches!(tail, TailState::Torn { .. }), "{tail:?}");
}

/// A slot naming LSNs near the top of the u64 range (no log reaches them: it starts at or below
/// 2^63) is refused as impossible, so no walk's LSN can wrap around: the open fails with a
/// typed error, read-only, writable and salvaging, instead of yielding entries numbered from 0.
#[test]
fn a_slot_with_lsns_no_log_reaches_is_refused() {
    use daxlog::format::{Slot, SLOT0_OFFSET, SLOT1_OFFSET};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("top.dax");
    let log = Log::create(&path, &Options::new().capacity(1 << 20)).unwrap();
    log.append(b"one").unwrap();
    log.append(b"two").unwrap();
    drop(log);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let (sb, _) = common::current_slot_of(&path);
    for off in [SLOT0_OFFSET, SLOT1_OFFSET] {
        let mut b = vec![0u8; format::SLOT_LEN];
        file.read_exact_at(&mut b, off as u64).unwrap();
        if let Some(s) = Slot::decode(&b, sb.salt, sb.capacity) {
            let top = Slot {
                head_lsn: u64::MAX - 1,
                cut_lsn: u64::MAX - 1,
                ..s
            };
            file.write_all_at(&top.encode(sb.salt), off as u64).unwrap();
        }
    }
    for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Salvage] {
        let r = Log::open_read_only(&path, &opts(mode));
        assert!(
            matches!(r, Err(Error::CorruptedSuperblock { .. })),
            "{mode:?}: {:?}",
            r.map(|l| lsns(&l))
        );
    }
    let r = Log::open(&path, &Options::new());
    assert!(
        matches!(r, Err(Error::CorruptedSuperblock { .. })),
        "writable: {:?}",
        r.map(|l| lsns(&l))
    );
}

/// A salvage of a log with 300,000 damaged entries (every other one, all in one session)
/// copies every whole entry and names every gap, and does it in time linear in the gaps: it
/// used to walk every later run again at each gap and search past the last one again (4,000
/// gaps took minutes), and then still went through the list of runs at each gap (200,000 gaps:
/// 48 s to open, 62 s to salvage).
#[test]
fn a_salvage_of_many_gaps_copies_every_whole_entry() {
    const N: u64 = 600_001;
    // (The first test directory: tmpfs where there is one, so that the appends are quick.)
    let dir = common::temp_dirs().remove(0);
    let path = dir.path().join("gaps.dax");
    let log = Log::create(&path, &Options::new().capacity(64 << 20)).unwrap();
    let mut offsets = Vec::new();
    for l in 1..=N {
        offsets.push(DATA_OFFSET as u64 + log.used_bytes());
        log.append(&l.to_le_bytes()).unwrap();
    }
    drop(log);
    // Entries 2, 4, ..., N - 1 damaged (a payload byte); N whole, the gap before it taken for
    // an interrupted append's remains (one append after it, the writer crashed with both in
    // flight: a torn tail).
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    for l in (2..N).step_by(2) {
        let at = offsets[(l - 1) as usize] + HEADER_LEN as u64;
        file.write_all_at(&[(l as u8) ^ 0x20], at).unwrap();
    }
    drop(file);
    set_published(&path, N - 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let log = Log::open_read_only(&p, &opts(RecoveryMode::Salvage)).unwrap();
        let mut rescued = Vec::new();
        let gaps = log
            .salvage(|l, p| {
                assert_eq!(p, l.to_le_bytes(), "entry {l}");
                rescued.push(l);
            })
            .unwrap();
        let _ = tx.send((rescued, gaps));
    });
    // (A bound only to report a hang as a failure, not a measure of speed.)
    let (rescued, gaps) = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the salvage did not end");
    let whole: Vec<u64> = (1..N).step_by(2).collect();
    assert_eq!(rescued, whole);
    assert_eq!(gaps.len() as u64, N / 2 - 1);
    for (g, l) in gaps.iter().zip((2..N - 1).step_by(2)) {
        assert_eq!((g.first_lsn, g.last_lsn), (l, l), "{g:?}");
    }
}

/// One bit wrong in the current metadata slot: recovery reads it corrected (falling back to
/// the older copy, it would take every entry of the slot's session for stale, an empty log),
/// says so, and a writable open writes it back and goes on from it. A damaged non-current
/// slot is reported but changes nothing. A reader in another process reads it corrected too.
#[test]
fn one_bit_wrong_in_the_current_slot_is_read_corrected() {
    let dir = tempfile::tempdir().unwrap();
    // Created (slot 0, sequence 1), then entries appended in a second session (slot 1).
    // (Written flushing through the CPU cache: the writer vouches for its entries, which
    // tells an open that the slot it cannot read was the current one.)
    let path = dir.path().join("s.dax");
    let cpu = Options::new().persistence(daxlog::PersistenceChoice::ForceCpuFlush);
    drop(Log::create(&path, &cpu.clone().capacity(1 << 20)).unwrap());
    let log = Log::open(&path, &cpu).unwrap();
    for l in 1..=N {
        log.append(&payload(l, LEN)).unwrap();
    }
    drop(log);
    let slots = [format::SLOT0_OFFSET as u64, format::SLOT1_OFFSET as u64];
    let current = format::Slot::offset_for(2) as u64;
    let other = slots.into_iter().find(|&s| s != current).unwrap();

    // The older slot damaged: the log opens as it was, and says so.
    let copy = dir.path().join("older.dax");
    std::fs::copy(&path, &copy).unwrap();
    flip(&copy, other + 20, 0x01);
    let log = Log::open_read_only(&copy, &Options::new()).unwrap();
    assert_eq!(lsns(&log), (1..=N).collect::<Vec<_>>());
    assert_eq!(log.recovery().unreadable_slot, Some(other));
    assert!(!log.recovery().slot_repaired);
    drop(log);

    // The current slot damaged.
    flip(&path, current + 20, 0x01);
    // A reader in another process reads it corrected too.
    let mut reader = daxlog::Reader::open(&path).unwrap();
    let mut read = Vec::new();
    while let Some(e) = reader.next_timeout(std::time::Duration::ZERO).unwrap() {
        read.push((e.lsn, e.payload));
    }
    let want: Vec<(u64, Vec<u8>)> = (1..=N).map(|l| (l, payload(l, LEN))).collect();
    assert_eq!(read, want, "the reader");
    drop(reader);
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::Strict,
        RecoveryMode::Salvage,
    ] {
        let log = Log::open_read_only(&path, &opts(mode)).unwrap();
        assert_eq!(lsns(&log), (1..=N).collect::<Vec<_>>(), "{mode:?}");
        let r = log.recovery();
        assert_eq!((r.unreadable_slot, r.slot_repaired), (Some(current), true));
    }
    let log = Log::open(&path, &cpu).unwrap();
    assert!(log.recovery().slot_repaired);
    log.append(&payload(N + 1, LEN)).unwrap();
    drop(log);
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    assert_eq!(lsns(&log), (1..=N + 1).collect::<Vec<_>>());
    let r = log.recovery();
    assert_eq!((r.unreadable_slot, r.slot_repaired), (None, false));
    drop(log);

    // A word of the current slot garbled (more than one bit): the older copy leads to the
    // entries of the session before, not to entry N + 1. The reader names the slot there; an
    // open calls it damage at the slot.
    let (_, slot) = common::current_slot_of(&path);
    let current = format::Slot::offset_for(slot.seq) as u64;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0x5a; 8], current + 16).unwrap();
    let mut reader = daxlog::Reader::open(&path).unwrap();
    for l in 1..=N {
        let e = reader.next_timeout(std::time::Duration::ZERO).unwrap();
        assert_eq!(e.map(|e| e.lsn), Some(l));
    }
    match reader.next_timeout(std::time::Duration::ZERO) {
        Err(Error::Corrupted { lsn, reason, .. }) => {
            assert_eq!(lsn, N + 1);
            assert!(
                reason.contains(&format!("metadata slot at offset {current}")),
                "{reason}"
            );
        }
        other => panic!(
            "the reader: expected Corrupted at LSN {}, got {other:?}",
            N + 1
        ),
    }
    // The writer vouched for its entries (they were durable when published), so damage at the
    // slot, whatever mode the open flushes in; a salvage copies what the older copy leads to
    // and lists the rest as a gap.
    let msync = Options::new().persistence(daxlog::PersistenceChoice::ForceMsync);
    assert!(matches!(
        Log::open_read_only(&path, &msync),
        Err(Error::Corrupted { .. })
    ));
    match Log::open_read_only(&path, &cpu) {
        Err(Error::Corrupted { offset, lsn, .. }) => assert_eq!((offset, lsn), (current, N + 1)),
        other => panic!(
            "expected Corrupted at the slot, got {:?}",
            other.map(|_| ())
        ),
    }
    let log =
        Log::open_read_only(&path, &cpu.clone().recovery_mode(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    assert_eq!(rescued, (1..=N).collect::<Vec<_>>());
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (gaps[0].offset, gaps[0].first_lsn, gaps[0].last_lsn),
        (current, N + 1, N + 1)
    );
    drop(log);
    // A bit of the published word raised too (LSN 30): the gap still ends where the two words
    // vouch, not at the raised word.
    let raised = dir.path().join("raised.dax");
    std::fs::copy(&path, &raised).unwrap();
    flip(&raised, format::PUBLISHED_OFFSET as u64, 1 << 3);
    let log =
        Log::open_read_only(&raised, &cpu.clone().recovery_mode(RecoveryMode::Salvage)).unwrap();
    assert_eq!(spans(&log.recovery().gaps), [(N + 1, N + 1)]);
    drop(log);
    // And a damaged entry before (entry 5): two gaps, each LSN lost counted once.
    let copy = dir.path().join("both.dax");
    std::fs::copy(&path, &copy).unwrap();
    let at5 = DATA_OFFSET as u64 + 4 * format::entry_len(LEN) as u64;
    flip(&copy, at5 + HEADER_LEN as u64 + 3, 0x08);
    let salvage = cpu.clone().recovery_mode(RecoveryMode::Salvage);
    let log = Log::open_read_only(&copy, &salvage).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    assert_eq!(rescued, (1..=N).filter(|&l| l != 5).collect::<Vec<_>>());
    assert_eq!(spans(&gaps), [(5, 5), (N + 1, N + 1)]);
    assert_eq!(
        log.recovery().gaps,
        gaps,
        "the open's report lists the same gaps"
    );
    drop(log);
    // Written in msync mode (a writer there holds the vouched word at 0: a sync can succeed
    // over a write-back that fails later), the published LSN is the evidence beside entry
    // N + 1, whole where the older copy's scan stops, refused for its epoch alone: damage at
    // the slot, whatever mode the open flushes in, where a writable open took entry N + 1 for
    // lost and wrote padding over it (FORMAT.md section 4). The salvage lists it as a gap.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0; 8], format::VOUCHED_OFFSET as u64)
        .unwrap();
    for o in [&msync, &cpu] {
        assert_eq!(open_refused_at_slot(&path, o), (current, N + 1));
    }
    let log =
        Log::open_read_only(&path, &msync.clone().recovery_mode(RecoveryMode::Salvage)).unwrap();
    assert_eq!(spans(&log.recovery().gaps), [(N + 1, N + 1)]);
    drop(log);
    // Entry N + 1 zeroed too (as a lost write-back would leave it): no evidence left that the
    // slot was damaged rather than torn by a crash beside that lost write-back, and the older
    // copy is taken, the LSN reported missing.
    let lost = dir.path().join("lost.dax");
    std::fs::copy(&path, &lost).unwrap();
    let at_last = DATA_OFFSET as u64 + N * format::entry_len(LEN) as u64;
    let f = OpenOptions::new().write(true).open(&lost).unwrap();
    f.write_all_at(&vec![0; format::entry_len(LEN)], at_last)
        .unwrap();
    let log = Log::open_read_only(&lost, &msync).unwrap();
    assert_eq!(lsns(&log), (1..=N).collect::<Vec<_>>());
    assert_eq!(log.recovery().published_missing, Some((N + 1, N + 1)));
}

/// One bit wrong in the current slot, whatever the session did under it: entries under its
/// epoch after a wrap, a `reset` or a `truncate_before` that moved the head where the older
/// slot does not look, and the cases the older copy would have got wrong unnoticed: a
/// `truncate_before` whose entries it still reaches (they came back), a `truncate_after` with
/// fewer entries after it than it deleted (the new entries are stale under it), a session
/// with no entry yet. Every open reads the log as it was; a bit of the other slot changes
/// nothing.
#[test]
fn one_bit_wrong_in_the_current_slot_loses_nothing_it_did() {
    use daxlog::format::{Slot, Superblock, SB_LEN, SB_PRIMARY_OFFSET, SLOT0_OFFSET, SLOT1_OFFSET};
    use daxlog::Persistence;
    use pmem_sim::SimMedia;
    const P: Persistence = Persistence::Clwb;
    let small = |l: u64| payload(l, 100);
    let reopen = |log: Log<SimMedia>| Log::open_on(log.into_media(), &Options::new()).unwrap();
    let fill = |log: &Log<SimMedia>| {
        let mut l = log.next_lsn();
        while log.free_bytes() >= 2 * 124 + 8 {
            log.append(&small(l)).unwrap();
            l += 1;
        }
    };
    let mut cases: Vec<(&str, Log<SimMedia>)> = Vec::new();
    // The session's first append wraps to the start of the data area.
    let log = Log::create_on(SimMedia::new(16384, P), &Options::new()).unwrap();
    fill(&log);
    log.truncate_before(log.next_lsn() - 2).unwrap();
    let log = reopen(log);
    log.append(&payload(log.next_lsn(), 400)).unwrap();
    for _ in 0..4 {
        log.append(&small(log.next_lsn())).unwrap();
    }
    cases.push(("a session whose first append wrapped", log));
    // A reset (the head to the start of the data area), then appends.
    let log = Log::create_on(SimMedia::new(1 << 20, P), &Options::new()).unwrap();
    for l in 1..=20 {
        log.append(&small(l)).unwrap();
    }
    log.reset().unwrap();
    for l in 21..=25 {
        log.append(&small(l)).unwrap();
    }
    cases.push(("a reset, then appends", log));
    // A truncate_before, then appends that wrap over the old head.
    let log = Log::create_on(SimMedia::new(16384, P), &Options::new()).unwrap();
    fill(&log);
    log.truncate_before(log.next_lsn() - 2).unwrap();
    for _ in 0..10 {
        log.append(&small(log.next_lsn())).unwrap();
    }
    cases.push(("a truncate_before, then appends over the old head", log));
    // A truncate_before without a wrap.
    let log = Log::create_on(SimMedia::new(1 << 20, P), &Options::new()).unwrap();
    for l in 1..=20 {
        log.append(&small(l)).unwrap();
    }
    log.truncate_before(12).unwrap();
    cases.push(("a truncate_before without a wrap", log));
    // A truncate_after, then fewer appends than it deleted.
    let log = Log::create_on(SimMedia::new(1 << 20, P), &Options::new()).unwrap();
    for l in 1..=20 {
        log.append(&small(l)).unwrap();
    }
    log.truncate_after(15).unwrap();
    log.append(&payload(1016, 100)).unwrap();
    log.append(&payload(1017, 100)).unwrap();
    cases.push(("a truncate_after, then fewer appends", log));
    // A new session with nothing appended yet.
    let log = Log::create_on(SimMedia::new(1 << 20, P), &Options::new()).unwrap();
    for l in 1..=20 {
        log.append(&small(l)).unwrap();
    }
    cases.push(("a session with no entry yet", reopen(log)));

    for (what, log) in cases {
        let want: Vec<(u64, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload)).collect();
        let img = log.into_media().snapshot();
        let sb = Superblock::decode(&img[SB_PRIMARY_OFFSET..SB_PRIMARY_OFFSET + SB_LEN]).unwrap();
        let current = Slot::pick(
            Slot::decode(&img[SLOT0_OFFSET..], sb.salt, sb.capacity),
            Slot::decode(&img[SLOT1_OFFSET..], sb.salt, sb.capacity),
        )
        .unwrap();
        let off = Slot::offset_for(current.seq);
        for (bit, current_slot) in [(20 * 8, true), (63 * 8 + 7, true), (20 * 8, false)] {
            let at = if current_slot {
                off
            } else {
                Slot::offset_for(current.seq + 1)
            };
            let mut img = img.clone();
            img[at + bit / 8] ^= 1 << (bit % 8);
            for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Salvage] {
                let log =
                    Log::open_on_read_only(SimMedia::from_image(&img, P), &opts(mode)).unwrap();
                let got: Vec<(u64, Vec<u8>)> = log.iter().map(|e| (e.lsn, e.payload)).collect();
                assert!(got == want, "{what}, bit {bit} of {at}, {mode:?}: {:?}", {
                    got.iter().map(|g| g.0).collect::<Vec<_>>()
                });
                let r = log.recovery();
                assert_eq!(r.unreadable_slot, Some(at as u64), "{what}");
                assert_eq!(r.slot_repaired, current_slot, "{what}");
            }
            // A writable open goes on from it.
            let log = Log::open_on(SimMedia::from_image(&img, P), &Options::new()).unwrap();
            let next = log.next_lsn();
            log.append(b"after").unwrap();
            let log = reopen(log);
            let got: Vec<u64> = log.iter().map(|e| e.lsn).collect();
            let mut lsns: Vec<u64> = want.iter().map(|w| w.0).collect();
            lsns.push(next);
            assert_eq!(got, lsns, "{what}, bit {bit} of {at}: reopened");
        }
        // More than one bit (a word of garbage): the older copy is taken, and where entries
        // published since lie past where it leads, that is damage at the slot.
        let mut img = img.clone();
        img[off + 16..off + 24].copy_from_slice(&0x5a5a_5a5a_5a5a_5a5a_u64.to_le_bytes());
        let verdict = match Log::open_on_read_only(SimMedia::from_image(&img, P), &Options::new()) {
            Err(Error::Corrupted { offset, reason, .. }) => {
                assert_eq!(offset, off as u64, "{what}: {reason}");
                assert!(reason.contains("metadata slot"), "{what}: {reason}");
                "damage"
            }
            Err(e) => panic!("{what}: {e}"),
            Ok(log) => {
                let got: Vec<u64> = log.iter().map(|e| e.lsn).collect();
                let lsns: Vec<u64> = want.iter().map(|w| w.0).collect();
                if got == lsns {
                    "as it was"
                } else {
                    assert!(got.ends_with(&lsns), "{what}: {got:?}");
                    "truncated entries back"
                }
            }
        };
        let expected = match what {
            "a truncate_before without a wrap" => "truncated entries back",
            "a session with no entry yet" => "as it was",
            _ => "damage",
        };
        assert_eq!(verdict, expected, "{what}");
    }
}

/// Two crashes, no damage. A `truncate_after(14)` (slot seq 5, cut 15) torn with only its
/// cut word not on media (11, one bit off 15): read corrected, entries after 14 gone. Then
/// the next writable open's session slot (seq 6, over seq 4) torn with only its sequence word
/// on media (4 -> 6, one bit): that copy is one bit off seq 4. Of two copies one bit off the
/// newer is current, and the writable open wrote the corrected one back before (so it is
/// valid by then): the truncation holds either way.
#[test]
fn a_corrected_slot_is_not_undone_by_a_torn_slot_after_it() {
    use daxlog::format::{
        Slot, Superblock, SB_LEN, SB_PRIMARY_OFFSET, SLOT0_OFFSET, SLOT1_OFFSET, SLOT_LEN,
    };
    use daxlog::Persistence;
    use pmem_sim::SimMedia;
    const P: Persistence = Persistence::Clwb;
    let reopen = |log: Log<SimMedia>| Log::open_on(log.into_media(), &Options::new()).unwrap();
    let log = Log::create_on(SimMedia::new(1 << 20, P), &Options::new()).unwrap();
    for l in 1..=5 {
        log.append(&payload(l, 100)).unwrap();
    }
    let log = reopen(log);
    for l in 6..=10 {
        log.append(&payload(l, 100)).unwrap();
    }
    let log = reopen(log); // seq 3, cut 11
    for l in 11..=20 {
        log.append(&payload(l, 100)).unwrap();
    }
    log.truncate_before(2).unwrap(); // seq 4
    let before = log.media().snapshot();
    log.truncate_after(14).unwrap(); // seq 5, cut 15
    let after = log.into_media().snapshot();
    let sb = Superblock::decode(&after[SB_PRIMARY_OFFSET..SB_PRIMARY_OFFSET + SB_LEN]).unwrap();
    let decode = |img: &[u8], at: usize| Slot::decode(&img[at..], sb.salt, sb.capacity);
    assert_eq!(decode(&after, SLOT1_OFFSET).unwrap().seq, 5);
    // Crash 1: the data as before the truncation, the slot torn (seq 3's cut word).
    let mut c1 = after.clone();
    c1[DATA_OFFSET..].copy_from_slice(&before[DATA_OFFSET..]);
    c1[SLOT1_OFFSET + 24..SLOT1_OFFSET + 32]
        .copy_from_slice(&before[SLOT1_OFFSET + 24..SLOT1_OFFSET + 32]);
    let lsns_of = |img: &[u8]| {
        let log = Log::open_on_read_only(SimMedia::from_image(img, P), &Options::new()).unwrap();
        let r = log.recovery();
        let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
        (lsns, r.slot_repaired)
    };
    let kept: Vec<u64> = (2..=14).collect();
    assert_eq!(lsns_of(&c1), (kept.clone(), true));
    // The session slot (seq 6, over seq 4 in slot 0) torn: only its sequence word landed.
    let tear = |img: &mut Vec<u8>| {
        img[SLOT0_OFFSET..SLOT0_OFFSET + 8].copy_from_slice(&6u64.to_le_bytes());
    };
    // Had the corrected slot been left as it was: two copies one bit off.
    let mut c2 = c1.clone();
    tear(&mut c2);
    assert_eq!(lsns_of(&c2), (kept.clone(), true));
    // The writable open writes it back first.
    let log = Log::open_on(SimMedia::from_image(&c1, P), &Options::new()).unwrap();
    let mut opened = log.into_media().snapshot();
    assert_eq!(decode(&opened, SLOT1_OFFSET).map(|s| s.seq), Some(5));
    opened[SLOT0_OFFSET..SLOT0_OFFSET + SLOT_LEN]
        .copy_from_slice(&c1[SLOT0_OFFSET..SLOT0_OFFSET + SLOT_LEN]);
    tear(&mut opened);
    assert_eq!(lsns_of(&opened), (kept, false));
}

/// A writable open that ends the log below the published LSN (here zeros over the header of
/// the last published entry: it ends cleanly there, as FORMAT.md section 7 says) takes the
/// published LSNs it no longer holds with padding, and leaves words that say so; where the
/// word names more than the log could have lost (a damaged word), it makes the lowered value
/// durable instead: no crash after the open leaves the higher one, which recovery would take
/// for evidence of entries this log no longer has.
#[test]
fn an_open_that_ends_below_the_published_lsn_pads_or_lowers_it_durably() {
    use daxlog::Persistence;
    use pmem_sim::{GenConfig, Model, SimMedia};
    const P: Persistence = Persistence::Clwb;
    let log = Log::create_on(SimMedia::new(1 << 16, P), &Options::new()).unwrap();
    let mut last = 0;
    for l in 1..=5 {
        last = DATA_OFFSET + log.used_bytes() as usize;
        log.append(&payload(l, 100)).unwrap();
    }
    let mut img = log.into_media().snapshot();
    let word = |img: &[u8]| {
        let at = format::PUBLISHED_OFFSET;
        u64::from_le_bytes(img[at..at + 8].try_into().unwrap())
    };
    assert_eq!(word(&img), 6);
    img[last..last + HEADER_LEN].fill(0);
    // The writer vouched for LSN 5 (the reader area's second word): damage, refused.
    match Log::open_on(SimMedia::from_image(&img, P), &Options::new()) {
        Err(Error::Corrupted { lsn: 5, offset, .. }) => assert_eq!(offset, last as u64),
        other => panic!("vouched for: {:?}", other.map(|l| l.next_lsn())),
    }
    // The vouched word lost (zeros): only the published LSN says LSN 5 was published, and
    // nothing valid past the end backs it (FORMAT.md section 7, rule 4): a clean end, and LSN 5
    // missing. With the word damaged too (a bit flipped far above the free space's worth),
    // nothing is taken for missing.
    img[format::VOUCHED_OFFSET..][..8].fill(0);
    let mut damaged = img.clone();
    damaged[format::PUBLISHED_OFFSET..][..8].copy_from_slice(&(6u64 | 1 << 40).to_le_bytes());
    for (what, img, next) in [("padded", img, 6), ("damaged word", damaged, 5)] {
        let media = SimMedia::from_image(&img, P);
        let obs = media.observer();
        let (initial, from) = (obs.snapshot(), obs.ops());
        let log = Log::open_on(media, &Options::new()).unwrap();
        assert_eq!(log.next_lsn(), next, "{what}");
        assert!(log.read(5).is_none(), "{what}");
        drop(log);
        let run = obs.run_from(initial, from);
        let mut finals = std::collections::BTreeSet::new();
        let n = run.ops.len();
        run.for_each_point(|point, st| {
            if point == n {
                let ci = st.crash_images(Model::Strict, &GenConfig::default(), 1);
                finals.extend((0..ci.len()).map(|i| {
                    let img = ci.image(i);
                    let v = format::VOUCHED_OFFSET;
                    let b = u64::from_le_bytes(img[v..v + 8].try_into().unwrap());
                    (word(&img), format::vouched(word(&img), b))
                }));
            }
        });
        assert_eq!(
            finals.into_iter().collect::<Vec<_>>(),
            [(next, next)],
            "{what}"
        );
    }
}

/// A second damaged entry after a first, whose length has a bit set (it claims the entries
/// after it): the entries between and after still make the first damage, not a torn tail
/// that drops them all. Before, the count of what follows the first damage stopped at the
/// second, so one append (entry 11) seemed all that followed: the rest of a batch in flight.
#[test]
fn a_length_bit_set_behind_earlier_damage_does_not_hide_the_entries_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let singles: Vec<&[usize]> = vec![&[LEN]; 20];
    for bit in [8u32, 15] {
        let path = dir.path().join(format!("{bit}.dax"));
        log_of(&path, 1 << 20, &singles);
        let offs = layout(&path);
        flip(&path, offs[9].0 + HEADER_LEN as u64 + 7, 0x20);
        flip(&path, offs[11].0 + 4 + u64::from(bit / 8), 1 << (bit % 8));
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            match judged(&path, mode) {
                Err((offset, l, beyond, _)) => {
                    assert_eq!((offset, l), (offs[9].0, 10), "bit {bit} in {mode:?}");
                    // 11, and 13 to 20 past the second damage.
                    assert_eq!(beyond, 9, "bit {bit} in {mode:?}");
                }
                Ok(n) => panic!("bit {bit} in {mode:?}: opened with {n} entries"),
            }
        }
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        let mut rescued = Vec::new();
        let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
        assert_eq!(gaps.len(), 2, "bit {bit}: {gaps:?}");
        let want: Vec<u64> = (1..=20).filter(|&l| l != 10 && l != 12).collect();
        assert_eq!(rescued, want, "bit {bit}");
    }
}

/// Many pairs of damage, each a payload bit in one entry and a high length bit set in the
/// next (which then claims 32 MiB): a salvage lists every gap and copies every other entry,
/// however much the damaged lengths claim in all. (A budget of bytes checksummed per salvage,
/// briefly tried, ran out here and ended the salvage early, silently.)
/// A salvage has no budget of bytes to run out of. Ten damaged entries (a payload bit, and two
/// high bits set in the length, so no repair works) whose failed repairs each checksum tens of
/// MiB of zero payloads, then an entry of 20 MiB with one length bit set, whose claim covers the
/// ten entries after it: its repair still finds where it ends, so the salvage lists it as a gap
/// and copies those ten. (Under a budget of 256 MiB read per salvage, the failed repairs spent
/// it, and the ten were left out without a gap.)
#[test]
fn a_salvage_has_no_budget_that_failed_repairs_can_spend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("budget.dax");
    let log = Log::create(&path, &Options::new().capacity(64 << 20)).unwrap();
    let block = vec![0u8; 64 << 10];
    while log.used_bytes() < 31 << 20 {
        log.append(&block).unwrap();
    }
    let v = log.append(&vec![0u8; 20 << 20]).unwrap();
    for _ in 0..10 {
        log.append(&block).unwrap();
    }
    let last = log.next_lsn() - 1;
    drop(log);
    let entries = layout(&path);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len_at = |off: u64| {
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, off + 4).unwrap();
        u32::from_le_bytes(b)
    };
    let mut damaged = Vec::new();
    let mut next_at = 17u64 << 20;
    for &(off, lsn) in &entries {
        if lsn < v && off >= next_at && damaged.len() < 10 {
            let len = len_at(off) + (1 << 24) + (1 << 25);
            f.write_all_at(&len.to_le_bytes(), off + 4).unwrap();
            f.write_all_at(&[1], off + HEADER_LEN as u64 + 1000)
                .unwrap();
            damaged.push(lsn);
            next_at = off + (1400 << 10);
        }
    }
    assert_eq!(damaged.len(), 10);
    let &(at, _) = entries.iter().find(|e| e.1 == v).unwrap();
    let len = len_at(at) | 1 << 21;
    f.write_all_at(&len.to_le_bytes(), at + 4).unwrap();
    drop(f);
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    let firsts: Vec<u64> = gaps.iter().map(|g| g.first_lsn).collect();
    let mut want = damaged.clone();
    want.push(v);
    assert_eq!(firsts, want);
    assert_eq!(gaps.last().unwrap().resume_offset, entries[v as usize].0);
    let kept: Vec<u64> = (1..=last).filter(|l| !want.contains(l)).collect();
    assert_eq!(rescued, kept);
}

#[test]
fn many_damaged_entries_claiming_much_do_not_end_a_salvage_early() {
    const M: u64 = 900;
    const BIG: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.dax");
    log_of(&path, 64 << 20, &vec![&[BIG][..]; M as usize]);
    let offs = layout(&path);
    let damaged: Vec<u64> = (0..18).flat_map(|k| [10 + 40 * k, 11 + 40 * k]).collect();
    for k in 0..18 {
        let (a, b) = (
            offs[(9 + 40 * k) as usize].0,
            offs[(10 + 40 * k) as usize].0,
        );
        flip(&path, a + HEADER_LEN as u64 + 100, 1);
        flip(&path, b + 4 + 3, 1 << 1); // bit 25 of the length
    }
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    assert_eq!(gaps.len(), 18, "{gaps:?}");
    let want: Vec<u64> = (1..=M).filter(|l| !damaged.contains(l)).collect();
    assert_eq!(rescued, want);
}

/// A log of N entries written flushing through the CPU cache, closed: the writer vouched for
/// every entry in the reader area (FORMAT.md section 11). The last append is a batch of
/// `last_batch` entries.
fn vouched_log(dir: &Path, name: &str, last_batch: usize) -> (PathBuf, Vec<u64>) {
    let path = dir.join(name);
    let cpu = Options::new().persistence(daxlog::PersistenceChoice::ForceCpuFlush);
    let log = Log::create(&path, &cpu.capacity(1 << 20)).unwrap();
    let mut offsets = Vec::new();
    let singles = N as usize - last_batch;
    for l in 1..=singles as u64 {
        offsets.push(DATA_OFFSET as u64 + log.used_bytes());
        log.append(&payload(l, LEN)).unwrap();
    }
    let batch: Vec<Vec<u8>> = (singles as u64 + 1..=N).map(|l| payload(l, LEN)).collect();
    let mut at = DATA_OFFSET as u64 + log.used_bytes();
    for _ in &batch {
        offsets.push(at);
        at += format::entry_len(LEN) as u64;
    }
    let refs: Vec<&[u8]> = batch.iter().map(|p| &p[..]).collect();
    if !refs.is_empty() {
        log.append_batch(&refs).unwrap();
    }
    drop(log);
    let img = std::fs::read(&path).unwrap();
    let word = |at: usize| u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
    let (a, b) = (word(format::PUBLISHED_OFFSET), word(format::VOUCHED_OFFSET));
    assert_eq!((a, format::vouched(a, b)), (N + 1, N + 1));
    (path, offsets)
}

/// Damage to the last entry, which the writer vouched for (it was acknowledged and durable):
/// damage in every mode but `Salvage`, which lists it as a gap, not a torn tail. Zeros over
/// its header (a clean end) likewise. After a crash with the append in flight (the published
/// LSN below it), a torn tail as before.
#[test]
fn damage_to_a_last_entry_the_writer_vouched_for_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    for spot in [Spot::Crc, Spot::Len, Spot::Lsn, Spot::Payload] {
        let (path, offs) = vouched_log(dir.path(), &format!("last-{spot:?}.dax"), 0);
        let last = offs[N as usize - 1];
        flip(&path, spot_offset(last, spot), 0x10);
        for mode in [RecoveryMode::TolerateTornTail, RecoveryMode::Strict] {
            match judged(&path, mode) {
                Err((offset, lsn, 0, _)) => assert_eq!((lsn, offset), (N, last), "{spot:?}"),
                other => panic!("vouched, last entry {spot:?}, {mode:?}: {other:?}"),
            }
        }
        assert!(matches!(
            Log::open(&path, &Options::new()),
            Err(Error::Corrupted { lsn: N, .. })
        ));
        let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
        assert_eq!(spans(&log.recovery().gaps), [(N, N)], "{spot:?}");
        assert_eq!(log.len(), N - 1, "{spot:?}");
        drop(log);
        // In flight when the writer crashed: published (and vouched) up to the entry before.
        set_published(&path, N);
        let log = Log::open_read_only(&path, &Options::new()).unwrap();
        assert_eq!(log.len(), N - 1, "{spot:?}");
        assert!(
            matches!(log.recovery().tail_state, TailState::Torn { .. }),
            "{spot:?}"
        );
    }
    // Zeros over the last entry's header: the scan ends cleanly there.
    let (path, offs) = vouched_log(dir.path(), "zeros.dax", 0);
    let last = offs[N as usize - 1];
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0; HEADER_LEN], last).unwrap();
    drop(f);
    match judged(&path, RecoveryMode::TolerateTornTail) {
        Err((offset, lsn, 0, reason)) => {
            assert_eq!((lsn, offset), (N, last));
            assert!(reason.contains("acknowledged"), "{reason}");
        }
        other => panic!("zeros over a vouched entry: {other:?}"),
    }
    // One flipped bit in either word of the reader area vouches for no more than the writer
    // did: the whole log opens, and damage to the last entry is damage only while the pair
    // still covers it.
    for word in [format::PUBLISHED_OFFSET, format::VOUCHED_OFFSET] {
        for bit in [0u32, 1, 3, 40, 63] {
            let (path, offs) = vouched_log(dir.path(), &format!("word-{word}-{bit}.dax"), 0);
            flip(&path, word as u64 + u64::from(bit / 8), 1 << (bit % 8));
            assert_eq!(
                judged(&path, RecoveryMode::TolerateTornTail),
                Ok(N),
                "{word} {bit}"
            );
            let img = std::fs::read(&path).unwrap();
            let w = |at: usize| u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
            let v = format::vouched(w(format::PUBLISHED_OFFSET), w(format::VOUCHED_OFFSET));
            assert!(v <= N + 1, "word {word}, bit {bit}: vouches for {v}");
            flip(&path, offs[N as usize - 1] + 1, 0x10);
            match judged(&path, RecoveryMode::TolerateTornTail) {
                Err((_, N, 0, _)) if v > N => {}
                Ok(n) if v <= N => assert_eq!(n, N - 1),
                other => panic!("word {word}, bit {bit} (vouched {v}): {other:?}"),
            }
        }
    }
}

/// A writer in msync mode vouches for nothing (a write-back can fail after its sync said it
/// succeeded, and be reported later), and clears the vouched word an earlier writer left; so
/// does a writer on media that does not keep the reader area (`Media::keeps_reader_area`),
/// both words: else a later open would take them for evidence of entries that writer deleted.
#[test]
fn writers_that_cannot_vouch_clear_the_vouched_word() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = vouched_log(dir.path(), "msync.dax", 0);
    let msync = Options::new().persistence(daxlog::PersistenceChoice::ForceMsync);
    let log = Log::open(&path, &msync).unwrap();
    let last = DATA_OFFSET as u64 + log.used_bytes();
    assert_eq!(log.append(&payload(N + 1, LEN)).unwrap(), N + 1);
    drop(log);
    let img = std::fs::read(&path).unwrap();
    assert_eq!(img[format::VOUCHED_OFFSET..][..8], [0; 8]);
    flip(&path, last + HEADER_LEN as u64 + 3, 0x10);
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    assert_eq!(log.len(), N);
    assert!(matches!(log.recovery().tail_state, TailState::Torn { .. }));
    drop(log);

    // Media that does not keep the reader area deletes entries 4 and 5 (`truncate_after`);
    // the next open by media that does finds the log as it was left.
    use daxlog::Persistence;
    use pmem_sim::SimMedia;
    let log = Log::create_on(SimMedia::new(1 << 16, Persistence::Clwb), &Options::new()).unwrap();
    for l in 1..=5 {
        log.append(&payload(l, LEN)).unwrap();
    }
    let img = log.into_media().snapshot();
    let log = Log::open_on(
        common::media::FaultyMedia::from_image(&img),
        &Options::new(),
    )
    .unwrap();
    log.truncate_after(3).unwrap();
    let img = log.into_media().image();
    assert_eq!(img[format::PUBLISHED_OFFSET..][..16], [0; 16]);
    let log = Log::open_on(
        SimMedia::from_image(&img, Persistence::Clwb),
        &Options::new(),
    )
    .unwrap();
    assert_eq!(log.iter().map(|e| e.lsn).collect::<Vec<_>>(), [1, 2, 3]);
}

/// A batch the writer vouched for whose last entry is damaged: its other entries were
/// acknowledged with it, so a salvage copies them and lists only the damaged one as lost.
#[test]
fn a_salvage_copies_a_vouched_batch_broken_at_its_last_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (path, offs) = vouched_log(dir.path(), "batch.dax", 4);
    flip(&path, offs[N as usize - 1] + HEADER_LEN as u64 + 3, 0x10);
    assert!(matches!(
        judged(&path, RecoveryMode::TolerateTornTail),
        Err((_, N, 0, _))
    ));
    let log = Log::open_read_only(&path, &opts(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    assert_eq!(rescued, (1..N).collect::<Vec<_>>());
    assert_eq!(spans(&gaps), [(N, N)]);
}

/// The same in msync mode, where the writer vouches for nothing: recovery takes the damaged
/// last entry for a torn tail and reports the batch's LSNs missing (`published_missing`),
/// as the last writer had published them. The batch was acknowledged all the same, so a
/// salvage copies its readable entries: only the LSNs of `published_missing` past them are
/// lost, and none is counted as a torn tail's (`torn_entries` of a salvage-mode open). Also
/// with damage inside, and with a batch after it that was synced but not published (in
/// flight at a crash): that batch is left out as a torn tail's, and the LSN lost before it is
/// still reported missing. (Unpublished, the broken batch is an interrupted append, which a
/// salvage leaves out: `salvage_never_copies_a_torn_tail`.)
#[test]
fn a_salvage_copies_a_published_batch_broken_at_its_last_entry() {
    let dir = tempfile::tempdir().unwrap();
    let msync = Options::new().persistence(daxlog::PersistenceChoice::ForceMsync);
    let entry = (HEADER_LEN + LEN).next_multiple_of(8) as u64;
    for (inside, in_flight) in [(false, false), (true, false), (false, true), (true, true)] {
        let what = format!("damage inside: {inside}, a batch in flight after: {in_flight}");
        let path = dir.path().join(format!("msync-{inside}-{in_flight}.dax"));
        let log = Log::create(&path, &msync.clone().capacity(1 << 20)).unwrap();
        log.append(&payload(1, LEN)).unwrap();
        for lsns in [2..=4, 5..=6].iter().take(1 + usize::from(in_flight)) {
            let p: Vec<Vec<u8>> = lsns.clone().map(|l| payload(l, LEN)).collect();
            let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
            log.append_batch(&refs).unwrap();
        }
        drop(log);
        if in_flight {
            set_published(&path, 5);
        }
        flip(
            &path,
            DATA_OFFSET as u64 + 3 * entry + HEADER_LEN as u64 + 3,
            0x08,
        );
        if inside {
            flip(&path, DATA_OFFSET as u64 + HEADER_LEN as u64 + 3, 0x08);
        }
        let salvage = msync.clone().recovery_mode(RecoveryMode::Salvage);
        let log = Log::open_read_only(&path, &salvage).unwrap();
        let r = log.recovery();
        assert_eq!(r.published_missing, Some((2, 4)), "{what}");
        assert_eq!(r.torn_entries, if in_flight { 2 } else { 0 }, "{what}");
        let mut rescued = Vec::new();
        let gaps = log.salvage(|l, p| rescued.push((l, p.to_vec()))).unwrap();
        let first = if inside { 2 } else { 1 };
        let want: Vec<(Lsn, Vec<u8>)> = (first..=3).map(|l| (l, payload(l, LEN))).collect();
        assert_eq!(rescued, want, "{what}");
        let lost: &[(u64, u64)] = if inside { &[(1, 1)] } else { &[] };
        assert_eq!(spans(&gaps), lost, "{what}");
    }
}

/// A writer that vouched for its entries, whose current metadata slot is damaged after a
/// suffix truncation inside a batch: recovery follows the older slot, whose end lies below
/// the vouched LSN (a gap up to it), and the entry the truncation kept of the broken batch,
/// acknowledged, is copied.
#[test]
fn a_salvage_at_a_damaged_slot_copies_what_a_truncation_kept_of_a_batch() {
    use daxlog::format::{Slot, Superblock, SB_LEN, SLOT0_OFFSET, SLOT1_OFFSET, SLOT_LEN};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpu.dax");
    let cpu = Options::new().persistence(daxlog::PersistenceChoice::ForceCpuFlush);
    let log = Log::create(&path, &cpu.clone().capacity(1 << 20)).unwrap();
    for l in 1..=7 {
        log.append(&payload(l, LEN)).unwrap();
    }
    let batch = |lsns: std::ops::RangeInclusive<u64>| {
        let p: Vec<Vec<u8>> = lsns.map(|l| payload(l, LEN)).collect();
        let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
        log.append_batch(&refs).unwrap()
    };
    batch(8..=10);
    log.truncate_after(8).unwrap();
    assert_eq!(batch(9..=12), 9..13);
    drop(log);
    let mut meta = vec![0u8; DATA_OFFSET];
    std::fs::File::open(&path)
        .unwrap()
        .read_exact_at(&mut meta, 0)
        .unwrap();
    let sb = Superblock::decode(&meta[..SB_LEN]).unwrap();
    let seq = |o: usize| {
        Slot::decode(&meta[o..o + SLOT_LEN], sb.salt, sb.capacity)
            .unwrap()
            .seq
    };
    let current = if seq(SLOT0_OFFSET) > seq(SLOT1_OFFSET) {
        SLOT0_OFFSET
    } else {
        SLOT1_OFFSET
    } as u64;
    flip(&path, current + 20, 0xff);
    flip(&path, current + 30, 0xff);
    let log = Log::open_read_only(&path, &cpu.recovery_mode(RecoveryMode::Salvage)).unwrap();
    let mut rescued = Vec::new();
    let gaps = log.salvage(|l, _| rescued.push(l)).unwrap();
    assert_eq!(rescued, (1..=8).collect::<Vec<_>>());
    assert_eq!(spans(&gaps), [(9, 12)]);
}

/// A writer in msync mode (it vouches for nothing) whose current metadata slot is damaged
/// after a suffix truncation inside a batch, with nothing appended since: the older slot's
/// scan holds the entry the truncation kept and discards it with its broken batch. Damage at
/// the slot, not a lost entry: a writable open once wrote padding over entry 1.
#[test]
fn a_damaged_slot_after_a_truncation_inside_a_batch_is_damage_in_msync_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("msync.dax");
    let msync = Options::new().persistence(daxlog::PersistenceChoice::ForceMsync);
    let log = Log::create(&path, &msync.clone().capacity(1 << 20)).unwrap();
    let p: Vec<Vec<u8>> = (1..=3).map(|l| payload(l, LEN)).collect();
    let refs: Vec<&[u8]> = p.iter().map(|v| v.as_slice()).collect();
    assert_eq!(log.append_batch(&refs).unwrap(), 1..4);
    log.truncate_after(1).unwrap();
    drop(log);
    let (_, slot) = common::current_slot_of(&path);
    let current = format::Slot::offset_for(slot.seq) as u64;
    flip(&path, current + 20, 0xff);
    flip(&path, current + 30, 0xff);
    assert_eq!(open_refused_at_slot(&path, &msync).0, current);
}

/// A writable open of `path` with `opts`, which must fail with `Error::Corrupted` and write
/// nothing; its offset and LSN.
fn open_refused_at_slot(path: &Path, opts: &Options) -> (u64, Lsn) {
    let before = std::fs::read(path).unwrap();
    let at = match Log::open(path, opts) {
        Err(Error::Corrupted { offset, lsn, .. }) => (offset, lsn),
        other => panic!(
            "expected Corrupted, got {:?}",
            other.map(|l| l.recovery().clone())
        ),
    };
    assert!(
        std::fs::read(path).unwrap() == before,
        "a refused open wrote"
    );
    at
}

/// The writer's close writes the reader area's words back: a power failure after it leaves
/// them vouching for every entry, and damage to the last one is damage. (Appends never flush
/// the words: without the close's write-back the durable image vouched for nothing, and the
/// entry was dropped as a torn tail.)
#[test]
fn a_closed_log_vouches_for_its_last_entry_after_a_power_failure() {
    use daxlog::Persistence;
    use pmem_sim::{PmemState, SimMedia};
    for close in ["drop", "into_media"] {
        let media = SimMedia::new(1 << 16, Persistence::Clwb);
        let obs = media.observer();
        let log = Log::create_on(media, &Options::new()).unwrap();
        let mut last = 0;
        for l in 1..=5u64 {
            last = DATA_OFFSET + log.used_bytes() as usize;
            log.append(&payload(l, LEN)).unwrap();
        }
        match close {
            "drop" => drop(log),
            _ => drop(log.into_media()),
        }
        // What the media holds after a power failure: every store flushed and fenced, no
        // other (the durable image).
        let (ops, _) = obs.ops_range(0, obs.ops());
        let mut st = PmemState::new(vec![0; 1 << 16], Persistence::Clwb);
        for op in &ops {
            st.apply(op);
        }
        let mut img = st.durable().to_vec();
        let w = |img: &[u8], at: usize| u64::from_le_bytes(img[at..at + 8].try_into().unwrap());
        let v = format::vouched(
            w(&img, format::PUBLISHED_OFFSET),
            w(&img, format::VOUCHED_OFFSET),
        );
        assert_eq!(v, 6, "{close}");
        img[last + HEADER_LEN + 3] ^= 0x10;
        match Log::open_on(
            SimMedia::from_image(&img, Persistence::Clwb),
            &Options::new(),
        ) {
            Err(Error::Corrupted { lsn: 5, offset, .. }) => assert_eq!(offset, last as u64),
            other => panic!("{close}: {:?}", other.map(|l| l.len())),
        }
    }
}

/// Zeros over the header of an acknowledged entry that wrapped to the start of the data area
/// (the last, vouched for; one below a later session's cut; one published entries follow):
/// damage there (offset 4096), not at the end of the file where the scan stopped.
#[test]
fn zeros_over_an_acknowledged_entry_after_a_wrap_are_damage_at_the_start_of_the_data_area() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = Options::new().persistence(daxlog::PersistenceChoice::ForceCpuFlush);
    let (_, offs) = wrapped_ring_with(dir.path(), "probe.dax", 2000, &cpu);
    let last = offs[first_after_wrap(&offs)].1;
    let (path, offs) = wrapped_ring_with(dir.path(), "ring.dax", last + 1, &cpu);
    assert_eq!(*offs.last().unwrap(), (DATA_OFFSET as u64, last));
    // Zeros over its first word or its whole header; the same where the entry lies below a
    // later session's cut (a writable open since: rule 1), and where published entries
    // continue after it (rule 4): the open and the salvage name offset 4096, not the end of
    // the file where the scan stopped.
    let mut cases = Vec::new();
    for n in [8, HEADER_LEN] {
        let copy = dir.path().join(format!("zeros-{n}.dax"));
        std::fs::copy(&path, &copy).unwrap();
        cases.push((copy, n, 0));
    }
    let below_cut = dir.path().join("below-cut.dax");
    std::fs::copy(&path, &below_cut).unwrap();
    let msync = Options::new().persistence(daxlog::PersistenceChoice::ForceMsync);
    drop(Log::open(&below_cut, &msync).unwrap());
    cases.push((below_cut, 8, 0));
    let (continued, _) = wrapped_ring_with(dir.path(), "continued.dax", last + 4, &cpu);
    cases.push((continued, 8, 3));
    for (copy, n, beyond) in cases {
        let f = OpenOptions::new().write(true).open(&copy).unwrap();
        f.write_all_at(&vec![0; n], DATA_OFFSET as u64).unwrap();
        drop(f);
        match judged(&copy, RecoveryMode::TolerateTornTail) {
            Err((offset, l, b, _)) => {
                assert_eq!(
                    (offset, l, b),
                    (DATA_OFFSET as u64, last, beyond),
                    "{copy:?}"
                )
            }
            other => panic!("{copy:?}: {other:?}"),
        }
        let log = Log::open_read_only(&copy, &opts(RecoveryMode::Salvage)).unwrap();
        let gaps: Vec<(u64, u64, u64)> = log
            .recovery()
            .gaps
            .iter()
            .map(|g| (g.offset, g.first_lsn, g.last_lsn))
            .collect();
        assert_eq!(gaps, [(DATA_OFFSET as u64, last, last)], "{copy:?}");
    }
}
