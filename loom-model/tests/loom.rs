//! Runs the loom model tests of the append protocol (`tests/model.rs`) and fails if they fail.
//!
//! They need daxlog built with `--cfg loom` (its atomics, locks and condition variable become
//! loom's), which this build is not, so this test runs a second cargo:
//!
//! ```text
//! RUSTFLAGS="$RUSTFLAGS --cfg loom" cargo test --release --locked \
//!     --manifest-path loom-model/Cargo.toml --test model --target-dir <target>/loom -- <args>
//! ```
//!
//! first with `--no-run` (the build, timed apart), then to run them. Its own arguments are
//! passed on, so `cargo test --release -p daxlog-loom --test loom -- --ignored exhaustive` runs
//! the two-thread models under every interleaving. The first build compiles loom and daxlog
//! again into `<target>/loom` (a minute or so on two cores); later ones only what changed.
//! `DAXLOG_SKIP_LOOM=1` skips it, and says so.
//!
//! This file is its own harness (`harness = false`): it runs a command, not tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn main() {
    if cfg!(loom) {
        // Built inside the model-checking build itself (a `--tests` build of this package):
        // nothing to run from here.
        return;
    }
    if std::env::var("DAXLOG_SKIP_LOOM").as_deref() == Ok("1") {
        println!("loom: SKIPPED (DAXLOG_SKIP_LOOM=1): the append protocol was not model-checked");
        println!("0 passed, 0 failed, 1 skipped");
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // <target>/<profile>/deps/loom-<hash>: the model build goes to <target>/loom.
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary lies in <target>/<profile>/deps")
        .join("loom");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(f) if !f.trim().is_empty() => format!("{f} --cfg loom"),
        _ => "--cfg loom".to_string(),
    };
    let command = |extra: &[&str]| {
        let mut c = Command::new(&cargo);
        c.args(["test", "--release", "--locked", "--manifest-path"])
            .arg(&manifest)
            .args(["--test", "model", "--target-dir"])
            .arg(&target)
            .args(extra)
            .env("RUSTFLAGS", &rustflags)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR");
        c
    };
    println!(
        "loom: RUSTFLAGS=\"{rustflags}\" cargo test --release --locked --manifest-path {} \
         --test model --target-dir {} -- {}",
        manifest.display(),
        target.display(),
        args.join(" ")
    );

    let t = Instant::now();
    let status = command(&["--no-run"])
        .status()
        .expect("run cargo to build the loom models");
    let built = t.elapsed();
    if !status.success() {
        println!("loom: the model build failed ({status}) after {built:.1?}");
        println!("0 passed, 1 failed");
        std::process::exit(1);
    }
    let t = Instant::now();
    let mut run = command(&[]);
    run.arg("--").args(&args);
    let status = run.status().expect("run cargo to run the loom models");
    let ran = t.elapsed();
    println!("loom: model build {built:.1?}, model run {ran:.1?}");
    if status.success() {
        println!("1 passed, 0 failed");
    } else {
        println!("loom: the model tests failed ({status})");
        println!("0 passed, 1 failed");
        std::process::exit(1);
    }
}
