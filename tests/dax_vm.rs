//! Runs the DAX part of the suite inside a VM with emulated persistent memory (`memmap=`),
//! on ext4 and xfs mounted `-o dax`: the `dax`, `integration` and `process_crash` test
//! binaries of this build, then the power-cut test (qemu killed while the guest appends).
//! See `tests/dax-vm/README.md`.
//!
//! On a machine without the VM's host tools (qemu, cpio, mkfs.xfs, ...: a fresh machine with
//! only Rust) it prints one line saying it was skipped, why, and how to run it (`bash .ci/run`
//! installs them), and passes. With `DAXLOG_REQUIRE_DAX_VM=1` (set by `.ci/run`) missing tools
//! are a failure, as is any VM failure whenever the tools are there. `DAXLOG_SKIP_DAX_VM=1`
//! skips it on purpose (ignored when the VM is required), and says so.
//!
//! This file is its own harness (`harness = false`): it drives shell scripts, not tests.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The host commands the VM harness needs (tests/dax-vm/run-in-dax-vm.sh checks the same).
const HOST_TOOLS: &[&str] = &[
    "qemu-system-x86_64",
    "cpio",
    "gzip",
    "xz",
    "depmod",
    "modprobe",
    "mke2fs",
    "mkfs.xfs",
    "apt-get",
    "dpkg",
];

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(cmd)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}

fn main() {
    let required = std::env::var("DAXLOG_REQUIRE_DAX_VM").as_deref() == Ok("1");
    let missing: Vec<&str> = HOST_TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
    if !missing.is_empty() {
        let why = format!(
            "the DAX VM's host tools are missing ({})",
            missing.join(", ")
        );
        if required {
            eprintln!("dax_vm: FAILED: {why}, and DAXLOG_REQUIRE_DAX_VM=1 requires the VM tests");
            std::process::exit(1);
        }
        println!(
            "dax_vm: SKIPPED: {why}: no test ran on a DAX mount; `bash .ci/run` installs them \
             (Debian: qemu-system-x86 busybox-static e2fsprogs xfsprogs kmod cpio xz-utils) and \
             runs these tests"
        );
        println!("0 passed, 0 failed, 1 skipped");
        return;
    }
    if !required && std::env::var("DAXLOG_SKIP_DAX_VM").as_deref() == Ok("1") {
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
        .env_remove("DAXLOG_SKIP_DAX_VM")
        .env("DAXLOG_DAX_VM_BIN_DIR", &deps)
        .status()
        .expect("run tests/dax-vm/run-tests.sh");
    if !status.success() {
        failed.push(format!("run-tests.sh ({status})"));
    }

    let mut cmd = Command::new("bash");
    cmd.arg(root.join("tests/dax-vm/power-cut.sh"))
        .env_remove("DAXLOG_SKIP_DAX_VM");
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
