//! Collecting the children's results and printing them as markdown, with the targets checked.

use std::collections::HashMap;
use std::fmt::Write as _;

pub struct Meta {
    pub rounds: usize,
    pub reps: usize,
    pub smoke: bool,
    pub load_start: String,
    pub load_end: String,
    pub args: String,
}

struct Sample {
    bytes: usize,
    entries: usize,
    ns: Vec<f64>,
}

impl Sample {
    fn median(&self) -> f64 {
        let mut v = self.ns.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }
    fn min(&self) -> f64 {
        self.ns.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn max(&self) -> f64 {
        self.ns.iter().copied().fold(0.0, f64::max)
    }
}

#[derive(Default)]
pub struct Results {
    cases: Vec<String>,
    rows: Vec<String>,
    data: HashMap<(String, String), Sample>,
    /// The disk group: (engine, payload bytes, threads) -> one entry per round.
    disk: HashMap<(String, usize, usize), Vec<DiskSample>>,
}

/// One disk-group measurement: aggregate appends/s, p50 and p99 latency, appends per sync.
#[derive(Clone, Copy)]
struct DiskSample {
    rate: f64,
    p50: f64,
    p99: f64,
    per_sync: Option<f64>,
}

fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// Row prefixes the targets refer to.
const DAX_MSYNC: &str = "daxlog, msync";
const DAX_RECOVERY: &str = "daxlog, Log::open";
const PMDK_FORCED: &str = "libpmemlog, PMEM_IS_PMEM_FORCE=1";
const PMDK_DEFAULT: &str = "libpmemlog, default";
const PMDK_RECOVERY: &str = "libpmemlog, pmemlog_open";
const ROOF: &str = "roofline:";
const ROOF_NT: &str = "roofline: NT";
const DISK_DAX: &str = "disk-daxlog";
const DISK_DAX_PREFILL: &str = "disk-daxlog-prefill";

impl Results {
    /// Takes one `RESULT` line; false if the line is something else.
    pub fn parse_line(&mut self, line: &str) -> bool {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 8 && f[0] == "DISK" {
            let num = |i: usize| f[i].parse::<f64>().unwrap_or(f64::NAN);
            let key = (
                f[1].to_string(),
                f[2].parse().unwrap_or(0),
                f[3].parse().unwrap_or(0),
            );
            self.disk.entry(key).or_default().push(DiskSample {
                rate: num(4),
                p50: num(5),
                p99: num(6),
                per_sync: f[7].parse().ok(),
            });
            return true;
        }
        if f.len() != 6 || f[0] != "RESULT" {
            return false;
        }
        let (row, case) = (f[1].to_string(), f[2].to_string());
        let ns: Vec<f64> = f[5].split(',').filter_map(|v| v.parse().ok()).collect();
        if !self.cases.contains(&case) {
            self.cases.push(case.clone());
        }
        if !self.rows.contains(&row) {
            self.rows.push(row.clone());
        }
        let s = self.data.entry((case, row)).or_insert(Sample {
            bytes: f[3].parse().unwrap_or(0),
            entries: f[4].parse().unwrap_or(1),
            ns: Vec::new(),
        });
        s.ns.extend(ns);
        true
    }

    fn get(&self, case: &str, row_prefix: &str) -> Option<&Sample> {
        self.rows
            .iter()
            .filter(|r| r.starts_with(row_prefix))
            .find_map(|r| self.data.get(&(case.to_string(), r.clone())))
    }

    /// Median ns of the fastest row whose name starts with `prefix` (msync rows excluded).
    fn best(&self, case: &str, prefix: &str) -> Option<f64> {
        self.rows
            .iter()
            .filter(|r| r.starts_with(prefix) && !r.contains("msync"))
            .filter_map(|r| self.data.get(&(case.to_string(), r.clone())))
            .map(|s| s.median())
            .min_by(|a, b| a.total_cmp(b))
    }

    pub fn markdown(&self, m: &Meta) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "## Results\n");
        let _ = writeln!(o, "- CPU: {}", cpu_model());
        let _ = writeln!(o, "- Kernel: {}", kernel());
        let _ = writeln!(
            o,
            "- Files: daxlog, libpmemlog and roofline on /dev/shm (tmpfs, DRAM); file WAL in {} (ext4 here)",
            std::env::temp_dir().display()
        );
        let _ =
            writeln!(
            o,
            "- {} round(s) x {} timed repetitions per case{}; load average at start {}, at end {}",
            m.rounds,
            m.reps,
            if m.smoke { " (SMOKE: numbers meaningless)" } else { "" },
            m.load_start,
            m.load_end
        );
        if !m.args.is_empty() {
            let _ = writeln!(o, "- Arguments: `{}`", m.args);
        }
        let first_lap =
            m.args.contains("--first-lap") || std::env::var_os("DAXLOG_BENCH_FIRST_LAP").is_some();
        let _ = writeln!(
            o,
            "- daxlog's append logs: {}",
            if first_lap {
                "in their first lap (nothing after the tail was ever written: no end markers)"
            } else {
                "filled once and emptied before timing (later laps: an end marker after every append)"
            }
        );
        let _ = writeln!(
            o,
            "\nns/op is the median over repetitions of the mean time per call (a batch is one call of 16 entries); \
             MB/s counts payload bytes; the last two columns are this row's calls/s over libpmemlog's (forced) and \
             this row's ns over the fastest CPU roofline (copy+CLWB or NT) for the same workload.\n"
        );
        let _ = writeln!(
            o,
            "| workload | implementation | ns/op (median) | min-max ns | ops/s | MB/s | ops/s vs libpmemlog forced | ns vs best roofline |"
        );
        let _ = writeln!(o, "|---|---|--:|--:|--:|--:|--:|--:|");
        for case in self.cases.iter().filter(|c| c.starts_with("append")) {
            let pm = self.get(case, PMDK_FORCED).map(|s| s.median());
            let roof = self.best(case, ROOF);
            for row in &self.rows {
                let Some(s) = self.data.get(&(case.clone(), row.clone())) else {
                    continue;
                };
                let ns = s.median();
                let _ = writeln!(
                    o,
                    "| {case} | {row} | {} | {}-{} | {} | {:.0} | {} | {} |",
                    fmt_ns(ns),
                    fmt_num(s.min()),
                    fmt_num(s.max()),
                    fmt_rate(1e9 / ns),
                    s.bytes as f64 * 1e3 / ns,
                    pm.map_or("-".into(), |p| format!("{:.2}x", p / ns)),
                    roof.map_or("-".into(), |r| format!("{:.2}", ns / r)),
                );
            }
        }
        let threads: Vec<&String> = self
            .cases
            .iter()
            .filter(|c| c.contains(" x append "))
            .collect();
        if !threads.is_empty() {
            let _ = writeln!(
                o,
                "\nConcurrent appends: N threads append to one shared log (daxlog) or pool (libpmemlog), \
                 CPU flush forced. ns/append is the elapsed time of a repetition over all threads' appends \
                 (aggregate). The last column compares with the same implementation and size on 1 thread \
                 (one log per thread: with daxlog's). One log per thread: the same threads, each appending \
                 to a log of its own, which bounds what sharing one log could make.\n"
            );
            let _ = writeln!(
                o,
                "| workload | implementation | ns/append (aggregate, median) | min-max ns | appends/s | vs libpmemlog, same threads | vs 1 thread |"
            );
            let _ = writeln!(o, "|---|---|--:|--:|--:|--:|--:|");
            for case in threads {
                let pm = self.get(case, PMDK_FORCED).map(|s| s.median());
                let one = case
                    .split_once(" x ")
                    .map(|(_, rest)| format!("1 thread x {rest}"));
                for row in &self.rows {
                    let Some(s) = self.data.get(&(case.clone(), row.clone())) else {
                        continue;
                    };
                    let ns = s.median();
                    // (One log per thread is compared with daxlog's single thread.)
                    let base = if row == crate::daxlog_cases::APART_ROW {
                        crate::daxlog_cases::Mode::Default.row().to_string()
                    } else {
                        row.clone()
                    };
                    let single = one
                        .as_ref()
                        .and_then(|c| self.data.get(&(c.clone(), base)))
                        .map(|s| s.median());
                    let _ = writeln!(
                        o,
                        "| {case} | {row} | {} | {}-{} | {} | {} | {} |",
                        fmt_ns(ns),
                        fmt_num(s.min()),
                        fmt_num(s.max()),
                        fmt_rate(1e9 / ns),
                        pm.map_or("-".into(), |p| format!("{:.2}x", p / ns)),
                        single.map_or("-".into(), |p| format!("{:.2}x", p / ns)),
                    );
                }
            }
        }
        let recov: Vec<&String> = self
            .cases
            .iter()
            .filter(|c| c.starts_with("recover") || c.starts_with("iterate"))
            .collect();
        if !recov.is_empty() {
            let _ = writeln!(
                o,
                "\nRecovery: a full log is opened (daxlog: `Log::open`, which validates every entry's checksum; \
                 libpmemlog: `pmemlog_open` + `pmemlog_walk` over the whole log with a callback summing every \
                 8-byte word). Iteration on the open log: daxlog `log.pin().iter()` (zero-copy) summing payload lengths; libpmemlog \
                 `pmemlog_walk` in entry-sized chunks summing chunk lengths. GB/s counts bytes of log data.\n"
            );
            let _ = writeln!(
                o,
                "| workload | implementation | time (median) | min-max ms | GB/s | ns/entry | speed vs libpmemlog |"
            );
            let _ = writeln!(o, "|---|---|--:|--:|--:|--:|--:|");
            for case in recov {
                let pm = self
                    .get(case, PMDK_RECOVERY)
                    .map(|s| s.median() / s.bytes as f64);
                for row in &self.rows {
                    let Some(s) = self.data.get(&(case.clone(), row.clone())) else {
                        continue;
                    };
                    let ns = s.median();
                    let _ = writeln!(
                        o,
                        "| {case} | {row} | {:.1} ms | {:.1}-{:.1} | {:.2} | {:.1} | {} |",
                        ns / 1e6,
                        s.min() / 1e6,
                        s.max() / 1e6,
                        s.bytes as f64 / ns,
                        ns / s.entries.max(1) as f64,
                        pm.map_or("-".into(), |p| format!("{:.2}x", p / (ns / s.bytes as f64))),
                    );
                }
            }
        }
        let decomp: Vec<&String> = self
            .cases
            .iter()
            .filter(|c| c.starts_with("decomp"))
            .collect();
        if !decomp.is_empty() {
            let _ = writeln!(o, "\nHot-path decomposition (each step adds one piece of daxlog's append to the roofline):\n");
            let _ = writeln!(o, "| workload | variant | ns/op (median) | min-max ns |");
            let _ = writeln!(o, "|---|---|--:|--:|");
            for case in decomp {
                for row in &self.rows {
                    if let Some(s) = self.data.get(&(case.clone(), row.clone())) {
                        let _ = writeln!(
                            o,
                            "| {case} | {row} | {} | {}-{} |",
                            fmt_ns(s.median()),
                            fmt_num(s.min()),
                            fmt_num(s.max())
                        );
                    }
                }
            }
        }
        o.push_str(&self.disk_table());
        o.push_str(&self.targets());
        o
    }

    /// Median over rounds of one disk-group measurement.
    fn disk_get(&self, engine: &str, size: usize, threads: usize) -> Option<DiskSample> {
        let v = self.disk.get(&(engine.to_string(), size, threads))?;
        let per: Vec<f64> = v.iter().filter_map(|s| s.per_sync).collect();
        Some(DiskSample {
            rate: median_of(v.iter().map(|s| s.rate).collect()),
            p50: median_of(v.iter().map(|s| s.p50).collect()),
            p99: median_of(v.iter().map(|s| s.p99).collect()),
            per_sync: (!per.is_empty()).then(|| median_of(per)),
        })
    }

    fn disk_table(&self) -> String {
        let mut o = String::new();
        if self.disk.is_empty() {
            return o;
        }
        let _ = writeln!(
            o,
            "\nDisk: write-ahead logs in {} (its file system: ext4 here), every append durable \
             before it returns; N threads append to one log for {} s each (median over rounds). \
             appends/s is the aggregate; p50/p99 are per append. For daxlog, the appends one \
             group sync covered on average. The ceiling: one thread writes N entries' bytes with \
             one pwrite and one fdatasync per call, N the row's threads, into a file written \
             once before (each call counts as N appends); the last column is the row's \
             appends/s over the ceiling's of the same payload and threads.\n",
            std::env::temp_dir().display(),
            std::env::var("DAXLOG_BENCH_DISK_SECS").unwrap_or_else(|_| "2".into()),
        );
        let _ = writeln!(
            o,
            "| payload | threads | implementation | appends/s | p50 | p99 | appends/sync | of the ceiling |"
        );
        let _ = writeln!(o, "|--:|--:|---|--:|--:|--:|--:|--:|");
        for &size in crate::disk::SIZES {
            for &threads in crate::disk::THREADS {
                for (engine, name) in crate::disk::ENGINES {
                    let Some(d) = self.disk_get(engine, size, threads) else {
                        continue;
                    };
                    let ceiling = self
                        .disk_get(crate::disk::DISK_CEILING, size, threads)
                        .map(|c| d.rate / c.rate);
                    let _ = writeln!(
                        o,
                        "| {} | {threads} | {name} | {} | {} | {} | {} | {} |",
                        crate::common::size_name(size),
                        fmt_rate(d.rate),
                        fmt_ns(d.p50),
                        fmt_ns(d.p99),
                        d.per_sync.map_or("-".into(), |x| format!("{x:.1}")),
                        ceiling.map_or("-".into(), |q| format!("{q:.2}")),
                    );
                }
            }
        }
        o
    }
    fn targets(&self) -> String {
        let mut o = String::from(
            "\nTargets (daxlog with the CPU-flush path forced, default NT threshold):\n\n",
        );
        // The ceiling's own scaling, which bounds what any log's group commit can make here.
        let mut ceiling_notes = String::new();
        let rate = |e: &str, size: usize, t: usize| self.disk_get(e, size, t).map(|d| d.rate);
        for &size in crate::disk::SIZES {
            let c = crate::disk::DISK_CEILING;
            if let Some((one, eight)) = rate(c, size, 1).zip(rate(c, size, 8)) {
                let _ = writeln!(
                    ceiling_notes,
                    "- (the disk, {}: the ceiling's 8 entries per sync make {:.2} x its 1 \
                     entry's appends/s)",
                    crate::common::size_name(size),
                    eight / one
                );
            }
        }
        let mut line = |ok: Option<bool>, text: String| {
            let mark = match ok {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            let _ = writeln!(o, "- [{mark}] {text}");
        };
        let ratio = |case: &str, a: &str, b: &str| -> Option<f64> {
            Some(self.get(case, b)?.median() / self.get(case, a)?.median())
        };
        for (size, min_pm, max_roof) in [
            ("64 B", 2.0, Some(1.3)),
            ("256 B", 2.0, Some(1.3)),
            ("1 KiB", 1.3, None),
            ("4 KiB", 1.3, None),
        ] {
            let case = format!("append {size}");
            let r = ratio(&case, crate::daxlog_cases::Mode::Default.row(), PMDK_FORCED);
            line(
                r.map(|r| r >= min_pm),
                format!(
                    "append {size}: {} x libpmemlog-forced appends/s (target >= {min_pm})",
                    fmt_opt(r)
                ),
            );
            if let Some(max) = max_roof {
                let d = self
                    .get(&case, crate::daxlog_cases::Mode::Default.row())
                    .map(|s| s.median());
                let best = self.best(&case, ROOF);
                let q = d.zip(best).map(|(d, b)| d / b);
                line(
                    q.map(|q| q <= max),
                    format!(
                        "append {size}: {} x best roofline ns (target <= {max})",
                        fmt_opt(q)
                    ),
                );
            }
        }
        let case = "append 64 KiB";
        let d = self
            .get(case, crate::daxlog_cases::Mode::Default.row())
            .map(|s| s.median());
        let nt = self.best(case, ROOF_NT);
        let q = d.zip(nt).map(|(d, n)| n / d);
        line(
            q.map(|q| q >= 0.75),
            format!(
                "append 64 KiB: {} of the NT roofline's MB/s (target >= 0.75)",
                fmt_opt(q)
            ),
        );
        let r = ratio("append 64 B", DAX_MSYNC, PMDK_DEFAULT);
        line(
            r.map(|r| r >= 1.5),
            format!(
                "msync mode, append 64 B: {} x libpmemlog default appends/s (target >= 1.5)",
                fmt_opt(r)
            ),
        );
        for size in crate::common::THREAD_SIZES {
            let case = crate::common::threads_case(*size, 2);
            let ns = |row: &str| self.get(&case, row).map(|s| s.median());
            let dax = ns(crate::daxlog_cases::Mode::Default.row());
            let roof = ns(crate::roofline::THREADS_ROW);
            let apart = ns(crate::daxlog_cases::APART_ROW);
            let q = dax.zip(roof).map(|(d, r)| r / d);
            line(
                q.map(|q| q >= 0.9),
                format!(
                    "{case}: daxlog {} of the concurrent roofline's appends/s (target >= 0.9; \
                     one log per thread: {})",
                    fmt_opt(q),
                    fmt_opt(apart.zip(roof).map(|(a, r)| r / a)),
                ),
            );
        }
        if !self.disk.is_empty() {
            for (dax, who) in [(DISK_DAX, "daxlog"), (DISK_DAX_PREFILL, "daxlog prefilled")] {
                for &size in crate::disk::SIZES {
                    let name = crate::common::size_name(size);
                    let one = rate(dax, size, 1);
                    let eight = rate(dax, size, 8);
                    let q = one.zip(eight).map(|(a, b)| b / a);
                    line(
                        q.map(|q| q >= 5.0),
                        format!(
                            "disk, {name}: {who} 8 threads {} x its 1 thread (target >= 5)",
                            fmt_opt(q)
                        ),
                    );
                    for &t in crate::disk::THREADS {
                        for rival in ["disk-raft-engine", "disk-okaywal"] {
                            let q = rate(dax, size, t)
                                .zip(rate(rival, size, t))
                                .map(|(d, r)| d / r);
                            line(
                            q.map(|q| q >= 1.0),
                            format!(
                                "disk, {name}, {t} thread(s): {who} {} x {}'s appends/s (target >= 1)",
                                fmt_opt(q),
                                rival.trim_start_matches("disk-")
                            ),
                        );
                        }
                    }
                    let lat = |e: &str| self.disk_get(e, size, 1).map(|d| d.p50);
                    let q = lat(dax).zip(lat("disk-filewal")).map(|(d, w)| d / w);
                    line(
                    q.map(|q| q <= 1.0),
                    format!(
                        "disk, {name}, 1 thread: {who} p50 latency {} x the naive WAL's (target <= 1)",
                        fmt_opt(q)
                    ),
                );
                }
            }
        }
        for case in self.cases.iter().filter(|c| c.starts_with("recover")) {
            let d = self.get(case, DAX_RECOVERY);
            let p = self.get(case, PMDK_RECOVERY);
            let q = d
                .zip(p)
                .map(|(d, p)| (p.median() / p.bytes as f64) / (d.median() / d.bytes as f64));
            line(
                q.map(|q| q >= 0.7),
                format!(
                    "{case}: {} of libpmemlog's open+walk speed (target >= 0.7)",
                    fmt_opt(q)
                ),
            );
            if case.starts_with("recover 1 GiB") {
                let t = d.map(|d| d.median() / 1e9);
                line(
                    t.map(|t| t < 0.3),
                    format!(
                        "{case}: opens in {} s (target < 0.3 s)",
                        t.map_or("-".into(), |t| format!("{t:.3}"))
                    ),
                );
            }
        }
        o.push_str(&ceiling_notes);
        o
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn fmt_ns(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000_000.0 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

fn fmt_num(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0}")
    } else {
        format!("{:.0}k", ns / 1e3)
    }
}

fn fmt_rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else if per_s >= 1e3 {
        format!("{:.1} k", per_s / 1e3)
    } else {
        format!("{per_s:.0}")
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown", |s| s.trim())
        .to_string();
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| {
            l.split_whitespace()
                .filter(|f| ["clwb", "clflushopt", "avx2", "avx512f", "sse4_2"].contains(f))
                .collect()
        })
        .unwrap_or_default();
    format!("{model} ({cpus} logical CPUs; {})", flags.join(" "))
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
