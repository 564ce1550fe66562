//! Power-cut test program, run inside the DAX test VM by `tests/dax-vm/power-cut.sh`.
//!
//! ```text
//! power_cut write PATH [CAPACITY_MIB [THREADS [prefill]]]
//!                                       open PATH (create it if absent, default 64 MiB; with
//!                                       `prefill`, by `Options::prefill`) and
//!                                       append forever (on THREADS threads at once, default 1);
//!                                       after each durable append print `ack <lsn>`. When the
//!                                       log is full, print `full last=<lsn>` and wait to be
//!                                       killed.
//! power_cut check PATH MAX_ACKED        open (recover) PATH, verify that the LSNs run 1, 2, 3, ...
//!                                       without a gap, that every payload is the one `write` made
//!                                       for its LSN, and that the last LSN >= MAX_ACKED; print
//!                                       `check ok last=<lsn>` and exit 0, or say what is wrong
//!                                       and exit 1.
//! ```
//!
//! Every payload is a pure function of its LSN (32..=200 bytes), so the checker needs nothing
//! but the log itself and the highest acknowledgement the writer got out before the power cut.
//! With several threads an appender cannot know its LSN beforehand: its payloads are then a
//! function of (thread, sequence number), marked as such, and the checker also requires each
//! thread's sequence numbers to run 0, 1, 2, ... without a gap (a thread appends its next entry
//! only after the previous one was acknowledged, so the log must hold a prefix of each).
//! `write` prints `ready last=<lsn> persistence=<mechanism>` once the log is open; the harness
//! starts its kill countdown at that line.

use std::io::Write;
use std::path::Path;
use std::process::exit;

use daxlog::{Error, Log, Options, Persistence};

const DEFAULT_CAPACITY_MIB: u64 = 64;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The payload of entry `lsn`: 32..=200 bytes, starting with the LSN (little endian).
fn payload(lsn: u64) -> Vec<u8> {
    let len = 32 + (splitmix64(lsn) % 169) as usize;
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&lsn.to_le_bytes());
    let mut s = lsn ^ 0xDA11_0C0D_E5EE_D000;
    while out.len() < len {
        s = splitmix64(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// First word of a threaded writer's payloads.
const THREADED: u64 = u64::from_le_bytes(*b"THREADED");

/// The payload of sequence number `seq` of writer thread `thread`: 40..=200 bytes.
fn threaded_payload(thread: u64, seq: u64) -> Vec<u8> {
    let mut s = splitmix64(thread << 48 ^ seq);
    let len = 40 + (s % 161) as usize;
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&THREADED.to_le_bytes());
    out.extend_from_slice(&thread.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    while out.len() < len {
        s = splitmix64(s);
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn mechanism(p: Persistence) -> &'static str {
    #[allow(unreachable_patterns)]
    match p {
        Persistence::Clwb => "clwb",
        Persistence::ClflushOpt => "clflushopt",
        Persistence::Clflush => "clflush",
        Persistence::Msync => "msync",
        _ => "other",
    }
}

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // Stdout is the VM's serial port; if it is gone there is nobody to tell.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn write(path: &str, capacity_mib: u64, threads: u64, prefill: bool) -> ! {
    let opened = if Path::new(path).exists() {
        Log::open(path, &Options::new())
    } else {
        let opts = Options::new().capacity(capacity_mib << 20).prefill(prefill);
        Log::create(path, &opts)
    };
    let log = match opened {
        Ok(log) => log,
        Err(e) => {
            say(format_args!("power_cut: cannot open or create {path}: {e}"));
            exit(2);
        }
    };
    let mut last = log.last_lsn().unwrap_or(0);
    let p = log.persistence();
    say(format_args!(
        "ready last={last} persistence={} cpu_flush={}",
        mechanism(p),
        p.is_cpu_flush()
    ));
    if threads > 1 {
        write_threaded(&log, threads)
    }
    loop {
        let want = last + 1;
        match log.append(&payload(want)) {
            Ok(lsn) if lsn == want => {
                say(format_args!("ack {lsn}"));
                last = lsn;
            }
            Ok(lsn) => {
                say(format_args!(
                    "power_cut: append returned LSN {lsn}, expected {want}"
                ));
                exit(3);
            }
            Err(Error::Full { .. }) => {
                say(format_args!("full last={last}"));
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            Err(e) => {
                say(format_args!("power_cut: append of LSN {want} failed: {e}"));
                exit(4);
            }
        }
    }
}

/// `threads` appenders at once, each numbering its own entries from 0 (after those a previous
/// run left in the log).
fn write_threaded(log: &Log, threads: u64) -> ! {
    let mut next = vec![0u64; threads as usize];
    for e in log.iter() {
        if let Some((t, seq)) = parse_threaded(&e.payload) {
            if let Some(n) = next.get_mut(t as usize) {
                *n = seq + 1;
            }
        }
    }
    std::thread::scope(|s| {
        // The group commit's statistics, every 200 ms: whether appends were combined.
        s.spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let st = log.sync_stats();
            say(format_args!(
                "stats syncs={} appends={} combined={} average_sync_us={}",
                st.syncs,
                st.appends,
                st.combined,
                st.average_sync.as_micros()
            ));
        });
        for (t, first) in next.into_iter().enumerate() {
            s.spawn(move || {
                for seq in first.. {
                    match log.append(&threaded_payload(t as u64, seq)) {
                        Ok(lsn) => say(format_args!("ack {lsn}")),
                        Err(Error::Full { .. }) => {
                            say(format_args!("full last={}", log.last_lsn().unwrap_or(0)));
                            loop {
                                std::thread::sleep(std::time::Duration::from_secs(3600));
                            }
                        }
                        Err(e) => {
                            say(format_args!("power_cut: append failed: {e}"));
                            exit(4);
                        }
                    }
                }
            });
        }
    });
    exit(0)
}

/// (thread, sequence number) of a threaded writer's payload, if it is one and is intact.
fn parse_threaded(p: &[u8]) -> Option<(u64, u64)> {
    let word = |i: usize| {
        Some(u64::from_le_bytes(
            p.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    if word(0)? != THREADED {
        return None;
    }
    let (t, seq) = (word(1)?, word(2)?);
    (p == threaded_payload(t, seq).as_slice()).then_some((t, seq))
}

fn check(path: &str, max_acked: u64) -> ! {
    if !Path::new(path).exists() {
        if max_acked == 0 {
            say(format_args!("no log file, and nothing was acknowledged"));
            say(format_args!("check ok last=0"));
            exit(0);
        }
        say(format_args!(
            "check FAILED: {path} does not exist, but LSN {max_acked} was acknowledged"
        ));
        exit(1);
    }
    let log = match Log::open(path, &Options::new()) {
        Ok(log) => log,
        Err(e) => {
            say(format_args!(
                "check FAILED: open {path}: {e} (acknowledged up to LSN {max_acked})"
            ));
            exit(1);
        }
    };
    let mut expect = 1u64;
    let mut errors = 0u64;
    let mut next_seq: Vec<u64> = Vec::new();
    for e in log.iter() {
        if e.lsn != expect {
            say(format_args!(
                "check FAILED: found LSN {} where LSN {expect} should be",
                e.lsn
            ));
            exit(1);
        }
        if e.payload.starts_with(&THREADED.to_le_bytes()) {
            let ok = parse_threaded(&e.payload).is_some_and(|(t, seq)| {
                let t = t as usize;
                if next_seq.len() <= t {
                    next_seq.resize(t + 1, 0);
                }
                let fine = seq == next_seq[t];
                next_seq[t] = seq + 1;
                fine
            });
            if !ok {
                errors += 1;
                if errors <= 10 {
                    say(format_args!(
                        "bad or out-of-sequence threaded payload at LSN {}",
                        e.lsn
                    ));
                }
            }
        } else if e.payload != payload(e.lsn).as_slice() {
            errors += 1;
            if errors <= 10 {
                say(format_args!(
                    "bad payload at LSN {} ({} bytes)",
                    e.lsn,
                    e.payload.len()
                ));
            }
        }
        expect += 1;
    }
    let last = expect - 1;
    let mut ok = true;
    if errors > 0 {
        say(format_args!(
            "check FAILED: {errors} entries with a wrong payload"
        ));
        ok = false;
    }
    if log.last_lsn().unwrap_or(0) != last {
        say(format_args!(
            "check FAILED: last_lsn() = {:?} but iteration ended at {last}",
            log.last_lsn()
        ));
        ok = false;
    }
    if last < max_acked {
        say(format_args!("check FAILED: last LSN {last} < acknowledged LSN {max_acked}: acknowledged entries lost"));
        ok = false;
    }
    if !ok {
        exit(1);
    }
    say(format_args!(
        "entries 1..={last} verified, acknowledged {max_acked}, persistence={}",
        mechanism(log.persistence())
    ));
    say(format_args!("check ok last={last}"));
    exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!(
            "usage: power_cut write PATH [CAPACITY_MIB [THREADS [prefill]]] | power_cut check PATH MAX_ACKED"
        );
        exit(2);
    };
    match args.get(1).map(String::as_str) {
        Some("write") if (3..=6).contains(&args.len()) => {
            let mib = match args.get(3) {
                None => DEFAULT_CAPACITY_MIB,
                Some(s) => s.parse().unwrap_or_else(|_| usage()),
            };
            let threads = match args.get(4) {
                None => 1,
                Some(s) => s
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1)
                    .unwrap_or_else(|| usage()),
            };
            let prefill = match args.get(5).map(String::as_str) {
                None => false,
                Some("prefill") => true,
                Some(_) => usage(),
            };
            write(&args[2], mib, threads, prefill)
        }
        Some("check") if args.len() == 4 => {
            let max_acked = args[3].parse().unwrap_or_else(|_| usage());
            check(&args[2], max_acked)
        }
        _ => usage(),
    }
}
