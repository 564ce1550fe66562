//! Measures what a fresh log costs before it runs at full speed: creating it, opening it, the
//! first append, and the first 8 MiB of 4 KiB appends (each touching pages for the first
//! time). Run it on a DAX mount with and without `DAXLOG_MAP_ALIGN=page` to see what mapping at
//! a 2 MiB boundary (huge-page faults) buys.
//!
//! ```text
//! cargo run --release --example first_append -- DIR [CAPACITY_MIB]
//! ```

use std::time::Instant;

use daxlog::{Log, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/dev/shm".into());
    let mib: u64 = std::env::args()
        .nth(2)
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(64);
    // A private directory with an unpredictable name: nobody can plant a link at the path.
    let scratch = tempfile::Builder::new()
        .prefix("daxlog-example-")
        .tempdir_in(&dir)?;
    let path = scratch.path().join("first-append.dax");
    let t = Instant::now();
    let log = Log::create(&path, &Options::from_env().capacity(mib << 20))?;
    let create = t.elapsed();
    drop(log);
    let t = Instant::now();
    let log = Log::open(&path, &Options::from_env())?;
    let open = t.elapsed();
    let t = Instant::now();
    log.append(b"first")?;
    let first = t.elapsed();
    let payload = vec![0x5au8; 4096 - 24];
    let t = Instant::now();
    let n = (8 << 20) / 4096;
    for _ in 0..n {
        log.append(&payload)?;
    }
    let bulk = t.elapsed();
    let pmd = pmd_mapped_kib(&path);
    println!(
        "first_append: dir={dir} align={} persistence={} map_sync={} create_ms={:.2} open_ms={:.2} first_append_us={:.1} first_8MiB_ms={:.2} ({:.1} us per 4 KiB append) pmd_mapped_kib={pmd}",
        std::env::var("DAXLOG_MAP_ALIGN").unwrap_or_else(|_| "2MiB".into()),
        log.persistence(),
        log.map_sync(),
        create.as_secs_f64() * 1e3,
        open.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e6,
        bulk.as_secs_f64() * 1e3,
        bulk.as_secs_f64() * 1e6 / n as f64
    );
    drop(log);
    Ok(())
}

/// `FilePmdMapped` of the log's mapping in /proc/self/smaps: how much of it is mapped with
/// 2 MiB page-table entries (huge-page DAX faults).
fn pmd_mapped_kib(path: &std::path::Path) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let name = path.to_string_lossy();
    let mut in_map = false;
    for line in smaps.lines() {
        if line.contains(&*name) {
            in_map = true;
        } else if in_map && line.starts_with("FilePmdMapped:") {
            return line.split_whitespace().nth(1).unwrap_or("?").to_string();
        } else if in_map && line.contains('-') && !line.contains(':') {
            in_map = false;
        }
    }
    "?".into()
}
