//! Power-cut test program, run inside the DAX test VM by `tests/dax-vm/power-cut.sh`.
//!
//! ```text
//! power_cut write PATH [CAPACITY_MIB]   open PATH (create it if absent, default 64 MiB) and
//!                                       append forever; after each durable append print
//!                                       `ack <lsn>`. When the log is full, print `full last=<lsn>`
//!                                       and wait to be killed.
//! power_cut check PATH MAX_ACKED        open (recover) PATH, verify that the LSNs run 1, 2, 3, ...
//!                                       without a gap, that every payload is the one `write` made
//!                                       for its LSN, and that the last LSN >= MAX_ACKED; print
//!                                       `check ok last=<lsn>` and exit 0, or say what is wrong
//!                                       and exit 1.
//! ```
//!
//! Every payload is a pure function of its LSN (32..=200 bytes), so the checker needs nothing
//! but the log itself and the highest acknowledgement the writer got out before the power cut.
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

fn write(path: &str, capacity_mib: u64) -> ! {
    let opened = if Path::new(path).exists() {
        Log::open(path, &Options::new())
    } else {
        Log::create(path, &Options::new().capacity(capacity_mib << 20))
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
    for e in log.iter() {
        if e.lsn != expect {
            say(format_args!(
                "check FAILED: found LSN {} where LSN {expect} should be",
                e.lsn
            ));
            exit(1);
        }
        if e.payload != payload(e.lsn).as_slice() {
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
        eprintln!("usage: power_cut write PATH [CAPACITY_MIB] | power_cut check PATH MAX_ACKED");
        exit(2);
    };
    match args.get(1).map(String::as_str) {
        Some("write") if args.len() == 3 || args.len() == 4 => {
            let mib = match args.get(3) {
                None => DEFAULT_CAPACITY_MIB,
                Some(s) => s.parse().unwrap_or_else(|_| usage()),
            };
            write(&args[2], mib)
        }
        Some("check") if args.len() == 4 => {
            let max_acked = args[3].parse().unwrap_or_else(|_| usage());
            check(&args[2], max_acked)
        }
        _ => usage(),
    }
}
