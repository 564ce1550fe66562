//! A write-back that fails on a real disk, then a reopen in the same boot.
//!
//! Linux keeps a page whose write-back failed in the page cache, with the bytes it could not
//! write, and marks it clean; the error goes to the first sync that looks, once. The writer
//! that saw it refuses appends (`Poisoned`) and its error says to reopen the log. The reopen
//! reads the page cache: it finds the entry that never reached the disk, whole, and must make
//! it durable (or fail) before it acknowledges anything after it. Otherwise, once the page
//! cache is gone (a power cut, or only memory pressure), that entry is missing and the
//! acknowledged appends behind it are lost with it.
//!
//! The disk is ext4 on a loop device whose backing file lives on a small tmpfs: the blocks
//! past the log's tail are punched out of the backing file (they hold zeros, so the file
//! system reads the same bytes) and the tmpfs is filled, so the loop device's writes there
//! fail. Needs root, loop devices, `mkfs.ext4` and `filefrag` (e2fsprogs) and `fallocate`
//! (util-linux); where any is missing the test says so and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use daxlog::{Error, Log, Options, Persistence};

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A tmpfs holding a sparse disk image, and ext4 on a loop device over it; torn down on drop.
struct Disk {
    dir: tempfile::TempDir,
    loop_dev: Option<String>,
    back_mounted: bool,
    fs_mounted: bool,
}

impl Disk {
    fn back(&self) -> PathBuf {
        self.dir.path().join("back")
    }

    fn fs(&self) -> PathBuf {
        self.dir.path().join("fs")
    }

    fn new() -> Result<Disk, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let mut d = Disk {
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            loop_dev: None,
            back_mounted: false,
            fs_mounted: false,
        };
        std::fs::create_dir(d.back()).map_err(|e| e.to_string())?;
        std::fs::create_dir(d.fs()).map_err(|e| e.to_string())?;
        let back = d.back();
        let back = back.to_str().unwrap();
        run("mount", &["-t", "tmpfs", "-o", "size=40m", "none", back])?;
        d.back_mounted = true;
        let img = format!("{back}/disk.img");
        run("truncate", &["-s", "64M", &img])?;
        let dev = run("losetup", &["--find", "--show", &img])?;
        d.loop_dev = Some(dev.trim().to_string());
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-O",
                "^has_journal",
                d.loop_dev.as_ref().unwrap(),
            ],
        )?;
        d.mount()?;
        Ok(d)
    }

    fn mount(&mut self) -> Result<(), String> {
        let fs = self.fs();
        run(
            "mount",
            &[self.loop_dev.as_ref().unwrap(), fs.to_str().unwrap()],
        )?;
        self.fs_mounted = true;
        Ok(())
    }

    /// Unmounts and mounts the file system again: its page cache is gone, what is read comes
    /// from the disk.
    fn remount(&mut self) -> Result<(), String> {
        run("umount", &[self.fs().to_str().unwrap()])?;
        self.fs_mounted = false;
        self.mount()
    }

    /// Makes every write to the bytes of `path` from `from` on fail: they are punched out of
    /// the backing file, and the tmpfs under it filled.
    fn fail_writes_from(&self, path: &Path, from: u64) -> Result<(), String> {
        let frag = run("filefrag", &["-v", path.to_str().unwrap()])?;
        let block: u64 = frag
            .split("blocks of ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("block size not in {frag}"))?;
        // The extent lines: "   0:        0..    8191:      33792..     41983:   8192: ..."
        let mut punched = 0;
        for line in frag.lines() {
            let cols: Vec<&str> = line.split(':').map(str::trim).collect();
            if cols.len() < 4 || cols[0].parse::<u32>().is_err() {
                continue;
            }
            let logical = cols[1].split("..").next().unwrap().trim();
            let physical = cols[2].split("..").next().unwrap().trim();
            let len: u64 = cols[3].parse().map_err(|_| format!("extent {line}"))?;
            let (logical, physical): (u64, u64) = (
                logical.parse().map_err(|_| format!("extent {line}"))?,
                physical.parse().map_err(|_| format!("extent {line}"))?,
            );
            let (lo, hi) = (logical * block, (logical + len) * block);
            let cut = from.max(lo);
            if cut < hi {
                let off = physical * block + (cut - lo);
                run(
                    "fallocate",
                    &[
                        "-p",
                        "-o",
                        &off.to_string(),
                        "-l",
                        &(hi - cut).to_string(),
                        self.back().join("disk.img").to_str().unwrap(),
                    ],
                )?;
                punched += hi - cut;
            }
        }
        if punched == 0 {
            return Err(format!("nothing punched: {frag}"));
        }
        // Fill the tmpfs (dd stops with "No space left on device").
        let _ = Command::new("dd")
            .stderr(std::process::Stdio::null())
            .args([
                "if=/dev/zero",
                &format!("of={}", self.back().join("filler").display()),
                "bs=64k",
                "status=none",
            ])
            .status();
        Ok(())
    }

    fn free_space(&self) {
        let _ = std::fs::remove_file(self.back().join("filler"));
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.fs_mounted {
            let _ = run("umount", &[self.fs().to_str().unwrap()]);
        }
        if let Some(dev) = &self.loop_dev {
            let _ = run("losetup", &["-d", dev]);
        }
        if self.back_mounted {
            let _ = run("umount", &[self.back().to_str().unwrap()]);
        }
    }
}

fn payload(tag: u8, i: u64) -> Vec<u8> {
    let mut p = vec![tag; 1000];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

#[test]
fn a_reopen_after_a_failed_write_back_makes_what_it_accepts_durable() {
    let mut disk = match Disk::new() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED a_reopen_after_a_failed_write_back: no loop-device disk ({why})");
            return;
        }
    };
    let path = disk.fs().join("j.dax");
    let cap = 8 << 20;
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    {
        let log = Log::create(&path, &Options::new().capacity(cap).prefill(true)).unwrap();
        assert_eq!(log.persistence(), Persistence::Msync);
        for i in 0..50 {
            let p = payload(1, i);
            acked.push((log.append(&p).unwrap(), p));
        }
    }
    // The page the tail is in keeps its blocks; every write after it fails.
    let tail = (daxlog::format::DATA_OFFSET + 50 * daxlog::format::entry_len(1000)) as u64;
    disk.fail_writes_from(&path, tail.div_ceil(4096) * 4096)
        .unwrap();

    // The writer appends until a sync fails; it then refuses appends.
    let mut failed = false;
    {
        let log = Log::open(&path, &Options::new()).unwrap();
        for i in 0..20 {
            let p = payload(2, i);
            match log.append(&p) {
                Ok(lsn) => {
                    assert!(!failed, "an append acknowledged after a failed one");
                    acked.push((lsn, p));
                }
                Err(Error::Io { .. }) | Err(Error::Poisoned { .. }) => failed = true,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    assert!(
        failed,
        "no write failed: the test's disk did not fail writes"
    );
    // Space again; a reopen in the same boot (the page cache holds what the disk does not).
    disk.free_space();
    {
        let log = Log::open(&path, &Options::new()).unwrap();
        let last_acked = acked.last().unwrap().0;
        assert!(
            log.next_lsn() > last_acked,
            "recovered up to {:?}, acknowledged {last_acked}",
            log.last_lsn()
        );
        for i in 0..5 {
            let p = payload(3, i);
            acked.push((log.append(&p).unwrap(), p));
        }
    }
    // The page cache gone: every acknowledged append is on the disk.
    disk.remount().unwrap();
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    for (lsn, p) in &acked {
        let e = log
            .read(*lsn)
            .unwrap_or_else(|| panic!("acknowledged LSN {lsn} lost"));
        assert_eq!(&e.payload, p, "LSN {lsn}");
    }
}
