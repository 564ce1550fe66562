//! Runs the DAX part of the suite inside a VM with emulated persistent memory (`memmap=`),
//! on ext4 and xfs mounted `-o dax`: the `dax`, `integration` and `process_crash` test
//! binaries of this build, then the power-cut test (qemu killed while the guest appends).
//! See `tests/dax-vm/README.md`.
//!
//! If the VM cannot start this test fails; `DAXLOG_SKIP_DAX_VM=1` skips it (for machines
//! without qemu), and says so.
//!
//! This file is its own harness (`harness = false`): it drives shell scripts, not tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

fn main() {
    if std::env::var("DAXLOG_SKIP_DAX_VM").as_deref() == Ok("1") {
        println!("dax_vm: SKIPPED (DAXLOG_SKIP_DAX_VM=1): no test ran on a DAX mount");
        println!("0 passed, 0 failed, 1 skipped");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir").to_path_buf();
    let profile_dir = deps.parent().expect("profile dir").to_path_buf();
    let power_cut = profile_dir.join("examples").join("power_cut");
    let t = Instant::now();
    let mut failed = Vec::new();

    let status = Command::new("bash")
        .arg(root.join("tests/dax-vm/run-tests.sh"))
        .env("DAXLOG_DAX_VM_BIN_DIR", &deps)
        .status()
        .expect("run tests/dax-vm/run-tests.sh");
    if !status.success() {
        failed.push(format!("run-tests.sh ({status})"));
    }

    let mut cmd = Command::new("bash");
    cmd.arg(root.join("tests/dax-vm/power-cut.sh"));
    if power_cut.is_file() {
        cmd.env("DAXLOG_POWER_CUT_BIN", &power_cut);
    } else {
        failed.push(format!("no power_cut example at {}", power_cut.display()));
    }
    let status = cmd.status().expect("run tests/dax-vm/power-cut.sh");
    if !status.success() {
        failed.push(format!("power-cut.sh ({status})"));
    }

    println!("dax_vm: finished in {:.0?}", t.elapsed());
    if failed.is_empty() {
        println!("2 passed, 0 failed");
    } else {
        println!(
            "{} passed, {} failed: {}",
            2 - failed.len().min(2),
            failed.len(),
            failed.join("; ")
        );
        std::process::exit(1);
    }
}
