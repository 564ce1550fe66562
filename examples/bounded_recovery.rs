//! Fills a log with 1 KiB entries and times `open` with and without the tail hint.
//!
//! ```text
//! cargo run --release --example bounded_recovery -- [DIR] [CAPACITY_MIB]
//! ```

use std::time::Instant;

use daxlog::{Log, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/dev/shm".into());
    let mib: u64 = std::env::args()
        .nth(2)
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1024);
    // A private directory with an unpredictable name: nobody can plant a link at the path.
    let scratch = tempfile::Builder::new()
        .prefix("daxlog-example-")
        .tempdir_in(&dir)?;
    let path = scratch.path().join("bounded.dax");
    let hinted = Options::new().tail_hint_every(64 << 20);
    let log = Log::create(&path, &hinted.clone().capacity(mib << 20))?;
    log.prefault();
    let payload = vec![0x42u8; 1000];
    let batch: Vec<&[u8]> = vec![&payload[..]; 256];
    while log.append_batch(&batch).is_ok() {}
    while log.append(&payload).is_ok() {}
    let (entries, used) = (log.len(), log.used_bytes());
    drop(log);
    for (name, opts) in [("full scan", Options::new()), ("tail hint", hinted)] {
        let mut times = Vec::new();
        let mut from = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let log = Log::open_read_only(&path, &opts)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            from = log.recovery().scanned_from;
            assert_eq!(log.len(), entries);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "bounded_recovery: {name}: open of a full {mib} MiB log ({entries} entries, {} MiB used) median {:.2} ms (min {:.2}), scan from LSN {from}",
            used >> 20,
            times[2],
            times[0]
        );
    }
    Ok(())
}
