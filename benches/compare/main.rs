//! daxlog side by side with PMDK's libpmemlog, a plain file WAL and the hardware roofline.
//!
//! ```sh
//! cargo bench --bench compare --features pmdk             # full run (a few minutes)
//! cargo bench --bench compare --features pmdk -- --smoke  # every case, a handful of iterations
//! cargo bench --bench compare --features pmdk -- --1g     # also recover a 1 GiB log
//! ```
//!
//! Without `--features pmdk` the libpmemlog rows are skipped. Options (after `--`):
//! `--smoke` (or `DAXLOG_BENCH_SMOKE=1`), `--1g` (or `DAXLOG_BENCH_1G=1`), `--rounds N`
//! (default 1; each round runs every group once, interleaved, and samples are pooled),
//! `--only SUBSTRING[,SUBSTRING...]` (groups whose name contains one of them), `--profile` (adds the hot-path
//! decomposition group), `--first-lap` (or `DAXLOG_BENCH_FIRST_LAP=1`: daxlog's append logs are
//! measured in their first lap instead of after one). `DAXLOG_BENCH_REPS` sets the timed repetitions per case and round
//! (default 7), `DAXLOG_BENCH_NO_PREFAULT=1` leaves mappings cold.
//!
//! Each group of cases runs in a child process (this binary re-executed with `--child GROUP`):
//! libpmem reads `PMEM_IS_PMEM_FORCE` once at initialisation, so its two modes need two
//! processes, and separate processes keep every competitor's mappings and caches apart. The
//! children print `RESULT` lines; the parent pools them and prints markdown tables of medians.

mod checkpoint;
mod common;
mod daxlog_cases;
mod decomp;
mod disk;
mod filewal;
#[cfg(feature = "pmdk")]
mod pmemlog;
mod report;
mod roofline;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{env_flag, Cfg};

/// A group of cases run by one child process, with the environment it needs.
struct Group {
    name: &'static str,
    /// `PMEM_IS_PMEM_FORCE=1` in the child (else the variable is removed).
    pmem_force: bool,
}

const fn g(name: &'static str, pmem_force: bool) -> Group {
    Group { name, pmem_force }
}

fn groups(profile: bool) -> Vec<Group> {
    let mut v = vec![
        g("daxlog-default", false),
        g("daxlog-clwb", false),
        g("daxlog-nt", false),
    ];
    if cfg!(feature = "pmdk") {
        v.push(g("pmdk-forced", true));
    }
    v.push(g("roof-clwb", false));
    v.push(g("roof-sse2", false));
    if roofline::Kind::NtAvx2.available() {
        v.push(g("roof-avx2", false));
    }
    if roofline::Kind::Movdir64b.available() {
        v.push(g("roof-movdir64b", false));
    }
    v.push(g("daxlog-msync", false));
    if cfg!(feature = "pmdk") {
        v.push(g("pmdk-default", false));
    }
    v.push(g("roof-msync", false));
    v.push(g("filewal", false));
    for (name, _) in disk::ENGINES {
        v.push(g(name, false));
    }
    v.push(g("threads-daxlog", false));
    v.push(g("threads-roof", false));
    v.push(g("checkpoint-daxlog", false));
    if cfg!(feature = "pmdk") {
        v.push(g("threads-pmdk", true));
    }
    v.push(g("recovery-daxlog", false));
    if cfg!(feature = "pmdk") {
        v.push(g("recovery-pmdk", true));
    }
    if profile {
        v.push(g("decomp", false));
    }
    v
}

fn run_child(group: &str, cfg: &Cfg) {
    use daxlog_cases::Mode;
    use roofline::Kind;
    match group {
        "daxlog-default" => daxlog_cases::appends(cfg, Mode::Default),
        "daxlog-clwb" => daxlog_cases::appends(cfg, Mode::Clwb),
        "daxlog-nt" => daxlog_cases::appends(cfg, Mode::Nt),
        "daxlog-msync" => daxlog_cases::appends(cfg, Mode::Msync),
        "roof-clwb" => roofline::run(cfg, Kind::Clwb),
        "roof-sse2" => roofline::run(cfg, Kind::NtSse2),
        "roof-avx2" => roofline::run(cfg, Kind::NtAvx2),
        "roof-msync" => roofline::run(cfg, Kind::Msync),
        "roof-movdir64b" => roofline::run(cfg, Kind::Movdir64b),
        "filewal" => filewal::run(cfg),
        g if g.starts_with("disk-") => disk::run(cfg, g),
        "recovery-daxlog" => daxlog_cases::recovery(cfg),
        "threads-daxlog" => daxlog_cases::threaded(cfg),
        "threads-roof" => roofline::threaded(cfg),
        "checkpoint-daxlog" => checkpoint::run(cfg),
        #[cfg(feature = "pmdk")]
        "threads-pmdk" => pmemlog::threaded(cfg),
        "decomp" => decomp::run(cfg),
        #[cfg(feature = "pmdk")]
        "pmdk-forced" => pmemlog::appends(cfg, true),
        #[cfg(feature = "pmdk")]
        "pmdk-default" => pmemlog::appends(cfg, false),
        #[cfg(feature = "pmdk")]
        "recovery-pmdk" => pmemlog::recovery(cfg),
        other => panic!("unknown group {other:?}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1).cloned())
    };
    // `cargo bench` passes `--bench` (or the arguments after `--`); `cargo test`, which runs
    // this target as a check that the harness works, passes nothing: that gets the smoke run.
    let smoke = has("--smoke") || env_flag("DAXLOG_BENCH_SMOKE") || args.is_empty();
    let big = has("--1g") || env_flag("DAXLOG_BENCH_1G");
    let profile = has("--profile");

    if let Some(group) = value("--child") {
        let cfg = Cfg::from_env(smoke, big);
        run_child(&group, &cfg);
        return;
    }

    let rounds: usize = value("--rounds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let only = value("--only");
    let exe = std::env::current_exe().expect("own executable");
    let mut results = report::Results::default();
    let groups: Vec<Group> = groups(profile)
        .into_iter()
        .filter(|g| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|o| g.name.contains(o)))
        })
        .collect();
    let load_start = report::loadavg();
    for round in 0..rounds {
        for (i, grp) in groups.iter().enumerate() {
            eprintln!(
                "[round {}/{rounds}, {}/{}] {} (load {})",
                round + 1,
                i + 1,
                groups.len(),
                grp.name,
                report::loadavg()
            );
            let mut cmd = Command::new(&exe);
            cmd.arg("--child").arg(grp.name);
            if smoke {
                cmd.arg("--smoke");
            }
            if big {
                cmd.arg("--1g");
            }
            if has("--first-lap") || env_flag("DAXLOG_BENCH_FIRST_LAP") {
                cmd.env("DAXLOG_BENCH_FIRST_LAP", "1");
            }
            for (k, _) in std::env::vars() {
                if k.starts_with("DAXLOG_") && !k.starts_with("DAXLOG_BENCH") {
                    cmd.env_remove(k);
                }
            }
            if grp.pmem_force {
                cmd.env("PMEM_IS_PMEM_FORCE", "1");
            } else {
                cmd.env_remove("PMEM_IS_PMEM_FORCE");
            }
            let mut child = cmd
                .stdout(Stdio::piped())
                .spawn()
                .expect("start child process");
            let out = child.stdout.take().expect("child stdout");
            for line in BufReader::new(out).lines() {
                let line = line.expect("read child output");
                if !results.parse_line(&line) {
                    eprintln!("  {line}");
                }
            }
            let status = child.wait().expect("wait for child");
            assert!(status.success(), "group {} failed: {status}", grp.name);
        }
    }
    let load_end = report::loadavg();
    let reps = common::env_usize("DAXLOG_BENCH_REPS").unwrap_or(if smoke { 1 } else { 7 });
    let meta = report::Meta {
        rounds,
        reps,
        smoke,
        load_start,
        load_end,
        args: args.join(" "),
    };
    print!("{}", results.markdown(&meta));
}
