//! Property tests: encoding round trips, and recovery over random sequences of appends,
//! batches, reopenings and damaged tails, checked against a model of what was acknowledged.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use daxlog::format::{self, EntryHeader, Slot, Superblock, FLAG_CONTINUES, HEADER_LEN};
use daxlog::{Log, Options, TailState};
use proptest::prelude::*;

proptest! {
    #[test]
    fn entry_header_round_trips(crc: u32, len: u32, lsn: u64, epoch: u32, flags: u32) {
        let h = EntryHeader { crc, len, lsn, epoch, flags };
        prop_assert_eq!(EntryHeader::decode(&h.encode()), h);
    }

    #[test]
    fn slot_round_trips_and_rejects_any_flip(
        seq in 1u64..u64::MAX, head_lsn in 1u64..1 << 40, extra in 0u64..1 << 20,
        epoch: u32, salt: u32, flip in 0usize..512,
    ) {
        let s = Slot { seq, head_offset: 4096, head_lsn, cut_lsn: head_lsn + extra, epoch, flags: (seq % 2) as u32, hint_offset: 4096 + 8 * extra, hint_lsn: head_lsn + extra };
        let b = s.encode(salt);
        prop_assert_eq!(Slot::decode(&b, salt, 1 << 30), Some(s));
        let mut d = b;
        d[flip / 8] ^= 1 << (flip % 8);
        prop_assert_eq!(Slot::decode(&d, salt, 1 << 30), None);
    }

    #[test]
    fn superblock_round_trips(uuid: [u8; 16], pages in 2u64..1 << 20, salt: u32) {
        let sb = Superblock { version: daxlog::format::FORMAT_VERSION, uuid, capacity: pages * 4096, salt };
        prop_assert_eq!(Superblock::decode(&sb.encode()), Ok(sb));
    }

    #[test]
    fn entry_crc_detects_payload_and_header_changes(
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        lsn in 1u64..1000, epoch: u32, salt: u32, flip: usize,
    ) {
        let mut h = EntryHeader { crc: 0, len: payload.len() as u32, lsn, epoch, flags: 0 };
        h.crc = format::entry_crc(format::payload_crc(salt, &payload), &h);
        let mut bytes = h.encode().to_vec();
        bytes.extend_from_slice(&payload);
        let bit = flip % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let d = EntryHeader::decode(&bytes);
        let p = &bytes[HEADER_LEN..];
        let ok = d.len as usize == p.len()
            && format::entry_crc(format::payload_crc(salt, p), &d) == d.crc;
        prop_assert!(!ok, "single bit flip {} undetected", bit);
    }
}

/// What a random run does.
#[derive(Clone, Debug)]
enum Step {
    Append(usize),
    Batch(Vec<usize>),
    Reopen,
    /// Bytes of an interrupted append left past the tail, then a reopen.
    Torn(TornKind),
}

#[derive(Clone, Debug)]
enum TornKind {
    /// Random bytes.
    Garbage(Vec<u8>),
    /// The first `keep` bytes of the next entry, correctly encoded with this session's epoch.
    Prefix { len: usize, keep: usize },
    /// The whole next entry with one bit flipped.
    Flipped { len: usize, bit: usize },
    /// A batch whose last entry never made it: all entries but the last are whole.
    BatchMissingLast(Vec<usize>),
    /// The whole next entry: the append was in flight and fully reached media, so it counts.
    Whole(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let len = prop_oneof![0usize..16, 16usize..300, 300usize..3000];
    prop_oneof![
        6 => len.clone().prop_map(Step::Append),
        2 => proptest::collection::vec(len.clone(), 1..6).prop_map(Step::Batch),
        1 => Just(Step::Reopen),
        2 => prop_oneof![
            proptest::collection::vec(any::<u8>(), 1..200).prop_map(TornKind::Garbage),
            (len.clone(), any::<prop::sample::Index>()).prop_map(|(len, i)| TornKind::Prefix {
                len,
                keep: i.index(format::entry_len(len)),
            }),
            (len.clone(), any::<prop::sample::Index>()).prop_map(|(len, i)| TornKind::Flipped {
                len,
                bit: i.index((HEADER_LEN + len) * 8),
            }),
            proptest::collection::vec(len.clone(), 2..5).prop_map(TornKind::BatchMissingLast),
            len.prop_map(TornKind::Whole),
        ]
        .prop_map(Step::Torn),
    ]
}

fn current_salt_epoch(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    let sb = Superblock::decode(&b[..64]).unwrap();
    let s = Slot::pick(
        Slot::decode(&b[1024..], sb.salt, sb.capacity),
        Slot::decode(&b[1536..], sb.salt, sb.capacity),
    )
    .unwrap();
    (sb.salt, s.epoch)
}

fn encode(salt: u32, epoch: u32, lsn: u64, payload: &[u8], flags: u32) -> Vec<u8> {
    format::encode_entry(salt, epoch, lsn, flags, payload)
}

fn check(log: &Log, model: &[Vec<u8>]) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.len(), model.len() as u64);
    let mut n = 0;
    for (i, e) in log.iter().enumerate() {
        prop_assert_eq!(e.lsn, i as u64 + 1);
        prop_assert_eq!(e.payload, model[i].as_slice(), "payload of LSN {}", e.lsn);
        n += 1;
    }
    prop_assert_eq!(n, model.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Guards against recovery losing acknowledged entries, accepting damaged or partial ones,
    /// or resurrecting an interrupted append's remains after later appends and reopenings.
    #[test]
    fn recovery_matches_the_model(steps in proptest::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir_in(common::test_dirs()[0].clone()).unwrap();
        let path = dir.path().join("p.dax");
        let opts = Options::new().capacity(1 << 20);
        let mut log = Some(Log::create(&path, &opts).unwrap());
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut tag = 0u64;
        let mut data = |len: usize| {
            tag += 1;
            common::payload(tag, len)
        };
        for s in steps {
            match s {
                Step::Append(len) => {
                    let p = data(len);
                    let l = log.as_ref().unwrap().append(&p).unwrap();
                    prop_assert_eq!(l, model.len() as u64 + 1);
                    model.push(p);
                }
                Step::Batch(lens) => {
                    let ps: Vec<Vec<u8>> = lens.iter().map(|&l| data(l)).collect();
                    let refs: Vec<&[u8]> = ps.iter().map(|p| p.as_slice()).collect();
                    log.as_ref().unwrap().append_batch(&refs).unwrap();
                    model.extend(ps);
                }
                Step::Reopen => {
                    drop(log.take()); // releases the writer lock
                    let l = Log::open(&path, &opts).unwrap();
                    prop_assert_eq!(l.recovery().torn_bytes, 0);
                    check(&l, &model)?;
                    log = Some(l);
                }
                Step::Torn(kind) => {
                    let tail = {
                        let l = log.take().unwrap();
                        4096 + l.used_bytes()
                    };
                    let (salt, epoch) = current_salt_epoch(&path);
                    let next = model.len() as u64 + 1;
                    let mut whole = None;
                    let bytes = match kind {
                        TornKind::Garbage(g) => g,
                        TornKind::Prefix { len, keep } => {
                            let p = data(len);
                            let mut e = encode(salt, epoch, next, &p, 0);
                            let keep = keep.max(1);
                            // If every byte not written is zero anyway (the media is zero
                            // past the tail), the entry did reach media whole: it counts.
                            if e[keep..].iter().all(|&b| b == 0) {
                                whole = Some(p);
                            }
                            e.truncate(keep);
                            e
                        }
                        TornKind::Flipped { len, bit } => {
                            let mut e = encode(salt, epoch, next, &data(len), 0);
                            e[bit / 8] ^= 1 << (bit % 8);
                            e
                        }
                        TornKind::BatchMissingLast(lens) => {
                            let mut v = Vec::new();
                            for (i, &len) in lens.iter().enumerate() {
                                if i + 1 == lens.len() { break; }
                                v.extend(encode(salt, epoch, next + i as u64, &data(len), FLAG_CONTINUES));
                            }
                            v
                        }
                        TornKind::Whole(len) => {
                            let p = data(len);
                            let e = encode(salt, epoch, next, &p, 0);
                            whole = Some(p);
                            e
                        }
                    };
                    if tail as usize + bytes.len() <= 1 << 20 {
                        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                        f.write_all_at(&bytes, tail).unwrap();
                        if let Some(p) = whole { model.push(p); }
                    }
                    let l = Log::open(&path, &opts).unwrap();
                    check(&l, &model)?;
                    // Recovering the same state again gives the same result.
                    drop(l);
                    let l = Log::open(&path, &opts).unwrap();
                    check(&l, &model)?;
                    let torn = matches!(l.recovery().tail_state, TailState::Torn { .. });
                    prop_assert!(!torn || l.recovery().torn_bytes > 0, "torn tail reported with 0 bytes");
                    log = Some(l);
                }
            }
        }
        drop(log);
        let l = Log::open_read_only(&path, &opts).unwrap();
        check(&l, &model)?;
    }
}
