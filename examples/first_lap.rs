//! Appends into a new log's first lap, one thread, as an application does (no `prefault`):
//! the measurement behind "Writing ahead of the tail" in docs/DISK.md.
//!
//! ```text
//! cargo run --release --example first_lap [DIR [PAYLOAD [SECONDS [prefill]]]]
//! # default: the temporary directory, 4096 B, 3 s
//! ```
//!
//! Creates a 256 MiB log in DIR (with `Options::prefill` if the fourth argument is
//! `prefill`), appends PAYLOAD-byte entries for SECONDS, and prints the time `create` took,
//! appends/s and the latency of one append (p50, p99, p99.9, max) in µs. On a disk-backed
//! file system the appends make the log durable with `msync`.

use std::time::Instant;

use daxlog::{Log, Options};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let size: usize = args.get(2).map_or(4096, |s| s.parse().expect("PAYLOAD"));
    let secs: f64 = args.get(3).map_or(3.0, |s| s.parse().expect("SECONDS"));
    let prefill = args.get(4).is_some_and(|s| s == "prefill");

    let scratch = tempfile::tempdir_in(&dir).expect("scratch directory");
    let path = scratch.path().join("first_lap.dax");
    let t0 = Instant::now();
    let log =
        Log::create(&path, &Options::new().capacity(256 << 20).prefill(prefill)).expect("create");
    let create = t0.elapsed();

    let payload = vec![0x5a_u8; size];
    let mut nanos = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        log.append(&payload)
            .expect("append (a full log: fewer SECONDS)");
        nanos.push(t.elapsed().as_nanos() as u64);
    }
    let rate = nanos.len() as f64 / start.elapsed().as_secs_f64();
    nanos.sort_unstable();
    let us = |q: f64| nanos[((nanos.len() as f64 * q) as usize).min(nanos.len() - 1)] / 1000;
    println!(
        "{} ({}), {size} B: create {:.1} ms, {rate:.0} appends/s, p50 {} / p99 {} / p99.9 {} / max {} µs ({} appends)",
        dir.display(),
        log.persistence(),
        create.as_secs_f64() * 1e3,
        us(0.5),
        us(0.99),
        us(0.999),
        us(1.0),
        nanos.len(),
    );
}
