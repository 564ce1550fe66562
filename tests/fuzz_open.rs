//! A time-bounded fuzzer of `open` + iteration over arbitrary file contents: mutations of the
//! corpus in `tests/corpus/` (bit flips, overwritten runs, bytes copied from elsewhere in the
//! file so that plausible headers appear in odd places, truncation). Every input must open or
//! fail with a typed error — never panic, hang or read out of bounds — and every entry an open
//! accepts must carry a checksum that matches its bytes.
//!
//! Default run: 15 seconds (`DAXLOG_FUZZ_SECS`). Long run:
//! `DAXLOG_FUZZ_SECS=3600 cargo test --release --test fuzz_open -- --nocapture`.
//! Replay: `DAXLOG_FUZZ_SEED=<seed>`. A failing input is saved under `target/fuzz-failures/`.
//! `DAXLOG_FUZZ_WRITE_CORPUS=1` regenerates the corpus.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Rng;
use daxlog::format::{self, EntryHeader, Superblock, HEADER_LEN};
use daxlog::{Log, Options, RecoveryMode};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Builds the corpus: small logs in interesting states.
fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str, f: &dyn Fn(&mut Log)| {
        let p = tmp.path().join(name);
        let mut log = Log::create(&p, &Options::new().capacity(16384)).unwrap();
        f(&mut log);
        drop(log);
        std::fs::copy(&p, dir.join(name)).unwrap();
    };
    make("empty.dax", &|_| {});
    make("few.dax", &|l| {
        for i in 0..5u64 {
            l.append(&common::payload(i, 10 + i as usize * 30)).unwrap();
        }
    });
    make("batch.dax", &|l| {
        l.append(b"one").unwrap();
        l.append_batch(&[b"b1", b"b2", &[7u8; 300]]).unwrap();
    });
    make("wrapped.dax", &|l| {
        for i in 0..60u64 {
            if l.append(&common::payload(i, 200 + (i as usize % 7) * 40))
                .is_err()
            {
                let first = l.first_lsn().unwrap();
                l.truncate_before(first + 10).unwrap();
            }
        }
    });
    make("suffix.dax", &|l| {
        for i in 0..20u64 {
            l.append(&common::payload(i, 50)).unwrap();
        }
        l.truncate_after(12).unwrap();
        l.append(b"replacement").unwrap();
    });
    make("full.dax", &|l| while l.append(&[0x5a; 500]).is_ok() {});
}

fn mutate(rng: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(6) {
        let n = b.len();
        match rng.below(7) {
            0 | 1 => {
                let i = rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
            2 => {
                let i = rng.below(n);
                let k = rng.below(64).min(n - i);
                let v = rng.next() as u8;
                b[i..i + k].iter_mut().for_each(|x| *x = v);
            }
            3 => {
                // Copy a run from elsewhere: headers land in odd places.
                let from = rng.below(n);
                let to = rng.below(n);
                let k = rng.below(256).min(n - from).min(n - to);
                let run = b[from..from + k].to_vec();
                b[to..to + k].copy_from_slice(&run);
            }
            4 => {
                // Mutate the data area only, where the interesting parsing happens.
                let i = 4096 + rng.below(n.saturating_sub(4096));
                if i < n {
                    b[i] = rng.next() as u8;
                }
            }
            5 => {
                if rng.below(8) == 0 {
                    b.truncate(rng.below(n + 1));
                    if b.is_empty() {
                        return b;
                    }
                }
            }
            _ => {
                let i = rng.below(n.saturating_sub(8));
                let v = rng.next().to_le_bytes();
                let k = 8.min(n - i);
                b[i..i + k].copy_from_slice(&v[..k]);
            }
        }
    }
    b
}

/// Opens `path` in every mode and checks every accepted entry independently.
fn check_one(path: &Path) -> Result<u64, String> {
    let bytes = std::fs::read(path).unwrap();
    let mut accepted = 0;
    for (mode, writable) in [
        (RecoveryMode::TolerateTornTail, false),
        (RecoveryMode::Strict, false),
        (RecoveryMode::Salvage, false),
        (RecoveryMode::TolerateTornTail, true),
    ] {
        let opts = Options::new().recovery_mode(mode);
        let r = if writable {
            Log::open(path, &opts)
        } else {
            Log::open_read_only(path, &opts)
        };
        let Ok(log) = r else { continue };
        let sb = Superblock::decode(&bytes[..64])
            .or_else(|_| Superblock::decode(&bytes[512..576]))
            .map_err(|e| format!("opened without a valid superblock: {e:?}"))?;
        accepted += log.iter().count() as u64;
        // Each accepted entry must be found in the file bytes with a matching checksum.
        let image = if writable {
            std::fs::read(path).unwrap()
        } else {
            bytes.clone()
        };
        for e in log.iter() {
            let found = find_entry(&image, sb.salt, e.lsn, &e.payload);
            if !found {
                return Err(format!(
                    "{mode:?}: accepted LSN {} has no valid encoding in the file",
                    e.lsn
                ));
            }
        }
        if mode == RecoveryMode::Salvage {
            let mut n = 0;
            log.salvage(|lsn, p| {
                n += 1;
                assert!(
                    find_entry(&bytes, sb.salt, lsn, p),
                    "salvaged LSN {lsn} is not a valid entry"
                );
            })
            .map_err(|e| format!("salvage: {e}"))?;
        }
        if writable {
            // The recovered log accepts an append or says why not.
            match log.append(b"after fuzz") {
                Ok(_)
                | Err(daxlog::Error::Full { .. })
                | Err(daxlog::Error::PayloadTooLarge { .. }) => {}
                Err(e) => return Err(format!("append after recovery: {e}")),
            }
        }
    }
    Ok(accepted)
}

/// True if `image` holds, at some 8-byte boundary, an entry with this LSN and payload whose
/// checksum matches.
fn find_entry(image: &[u8], salt: u32, lsn: u64, payload: &[u8]) -> bool {
    let mut q = format::DATA_OFFSET;
    while q + HEADER_LEN + payload.len() <= image.len() {
        let h = EntryHeader::decode(&image[q..q + HEADER_LEN]);
        if h.lsn == lsn
            && h.len as usize == payload.len()
            && &image[q + HEADER_LEN..q + HEADER_LEN + payload.len()] == payload
            && format::entry_crc(format::payload_crc(salt, payload), &h) == h.crc
        {
            return true;
        }
        q += 8;
    }
    false
}

#[test]
fn fuzz_open_and_iterate() {
    let corpus = corpus_dir();
    if std::env::var("DAXLOG_FUZZ_WRITE_CORPUS").as_deref() == Ok("1") {
        write_corpus(&corpus);
    }
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&corpus)
        .expect("tests/corpus")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dax"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 5, "corpus missing: {}", corpus.display());

    let secs: u64 = std::env::var("DAXLOG_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let seed: u64 = std::env::var("DAXLOG_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("fuzz_open: seed {seed} (replay with DAXLOG_FUZZ_SEED={seed}), {secs} s");
    let dir = tempfile::tempdir_in(common::test_dirs()[0].clone()).unwrap();
    let path = dir.path().join("input.dax");
    let start = Instant::now();
    let mut rng = Rng(seed);
    let (mut cases, mut opened, mut entries) = (0u64, 0u64, 0u64);
    // The unmutated corpus first: every file opens with all its entries.
    for (name, bytes) in &seeds {
        std::fs::write(&path, bytes).unwrap();
        check_one(&path).unwrap_or_else(|e| panic!("corpus {name}: {e}"));
        Log::open_read_only(&path, &Options::new())
            .unwrap_or_else(|e| panic!("corpus {name}: {e}"));
    }
    while start.elapsed() < Duration::from_secs(secs) {
        let (name, base) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base.clone());
        std::fs::write(&path, &input).unwrap();
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| check_one(&path));
        let slow = t.elapsed() > Duration::from_secs(10);
        let failure = match &r {
            Ok(Ok(n)) => {
                entries += n;
                opened += (*n > 0) as u64;
                None
            }
            Ok(Err(e)) => Some(e.clone()),
            Err(_) => Some("panic".to_string()),
        };
        if failure.is_some() || slow {
            let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures");
            std::fs::create_dir_all(&out).unwrap();
            let f = out.join(format!("case-{seed}-{cases}.dax"));
            std::fs::write(&f, &input).unwrap();
            panic!(
                "fuzz case {cases} (from {name}, seed {seed}) failed: {} — input saved to {}",
                failure.unwrap_or_else(|| format!("took {:?}", t.elapsed())),
                f.display()
            );
        }
        cases += 1;
    }
    println!("fuzz_open: {cases} inputs, {opened} opened with entries, {entries} entries verified");
    assert!(cases > 100, "too few fuzz cases ran: {cases}");
}
