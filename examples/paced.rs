//! Appenders that append now and then (not in a loop), in msync mode: latency per append and
//! what the group commit's leaders spent waiting for other appenders (docs/DISK.md, section 2).
//!
//! `cargo run --release --example paced DIR THREADS PAUSE_US SECONDS`
use std::time::{Duration, Instant};

use daxlog::{Log, Options, PersistenceChoice};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let dir = tempfile::tempdir_in(&a[1]).unwrap();
    let threads: usize = a[2].parse().unwrap();
    let pause = Duration::from_micros(a[3].parse().unwrap());
    let secs: f64 = a[4].parse().unwrap();
    let log = Log::create(
        dir.path().join("p.dax"),
        &Options::new()
            .capacity(64 << 20)
            .persistence(PersistenceChoice::ForceMsync),
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut lat: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    let mut v = Vec::new();
                    let mut i = 0u64;
                    while Instant::now() < end {
                        let t0 = Instant::now();
                        log.append(&[t as u8; 64]).unwrap();
                        v.push(t0.elapsed().as_nanos() as u64);
                        i += 1;
                        std::thread::sleep(pause * (1 + (i % 3) as u32) / 2);
                    }
                    v
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    let st = log.sync_stats();
    println!(
        "{} appends, p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, {:.2} appends/sync, {} syncs, {} waits, {} in vain, {:?} waited",
        lat.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        st.appends_per_sync(),
        st.syncs,
        st.waits,
        st.waits_in_vain,
        st.waited
    );
}
