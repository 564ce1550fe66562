//! Appends beside a checkpointer: aggregate appends/s of 1 and 2 appender threads (64 B
//! payloads, CPU flush forced, default options) while another thread calls `truncate_before`
//! every millisecond, against the same appends without it; and the time of each append (its
//! stall), p50/p99/max. Printed as lines of their own (the parent passes them through).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::common::{payload, Cfg};
use crate::daxlog_cases::{fresh_log, Mode};

const SIZE: usize = 64;

pub fn run(cfg: &Cfg) {
    let path = cfg.shm.join("daxlog-checkpoint.dax");
    let opts = Mode::Default.options();
    // Room for every append of a run without truncation: 88 B each on media.
    let per_thread: usize = if cfg.smoke { 20_000 } else { 1_000_000 };
    let rounds = if cfg.smoke { 1 } else { cfg.reps.clamp(1, 5) };
    println!("checkpoint: {SIZE} B appends, {per_thread} per thread, best of {rounds} rounds by rate; stalls pooled");
    for threads in [1usize, 2] {
        for truncating in [false, true] {
            let mut rates = Vec::new();
            let mut stalls: Vec<u32> = Vec::new();
            let mut cuts = 0u64;
            for _ in 0..rounds {
                let cap = (threads * per_thread * 96 + (64 << 20)).next_power_of_two();
                let log = fresh_log(cfg, &path, &opts, cap);
                let p = payload(SIZE);
                let stop = AtomicBool::new(false);
                let (elapsed, mut lat, n) = std::thread::scope(|s| {
                    let ckpt = s.spawn(|| {
                        let mut n = 0u64;
                        while truncating && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(1));
                            let next = log.next_lsn();
                            log.truncate_before(next.saturating_sub(1000).max(1))
                                .expect("truncate");
                            n += 1;
                        }
                        n
                    });
                    let start = Instant::now();
                    let hs: Vec<_> = (0..threads)
                        .map(|_| {
                            let (log, p) = (&log, &p);
                            s.spawn(move || {
                                let mut lat = Vec::with_capacity(per_thread);
                                for _ in 0..per_thread {
                                    let t = Instant::now();
                                    black_box(log.append(black_box(p)).expect("append"));
                                    lat.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
                                }
                                lat
                            })
                        })
                        .collect();
                    let mut lat = Vec::new();
                    for h in hs {
                        lat.extend(h.join().unwrap());
                    }
                    let elapsed = start.elapsed();
                    stop.store(true, Ordering::Relaxed);
                    (elapsed, lat, ckpt.join().unwrap())
                });
                cuts += n;
                rates.push((threads * per_thread) as f64 / elapsed.as_secs_f64());
                stalls.append(&mut lat);
                drop(log);
            }
            stalls.sort_unstable();
            let q = |f: f64| stalls[((stalls.len() - 1) as f64 * f) as usize];
            let best = rates.iter().cloned().fold(0.0, f64::max);
            println!(
                "checkpoint: {threads} thread(s), {:<18} {:>6.2} M appends/s (rounds: {}), append p50 {} ns, p99 {} ns, p99.99 {} ns, max {:.1} us, {} truncations",
                if truncating { "truncating every 1 ms" } else { "no truncation" },
                best / 1e6,
                rates.iter().map(|r| format!("{:.2}", r / 1e6)).collect::<Vec<_>>().join(" "),
                q(0.5),
                q(0.99),
                q(0.9999),
                *stalls.last().unwrap() as f64 / 1e3,
                cuts
            );
        }
    }
    let _ = std::fs::remove_file(&path);
}
