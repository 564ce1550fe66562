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

    /// Makes every write to the bytes `[lo, hi)` of `path` fail: they are punched out of the
    /// backing file (its bytes there are returned, for [`Disk::restore`]), and the tmpfs under
    /// it filled.
    fn fail_writes(&self, path: &Path, lo: u64, hi: u64) -> Result<Vec<(u64, Vec<u8>)>, String> {
        use std::os::unix::fs::FileExt;
        let frag = run("filefrag", &["-v", path.to_str().unwrap()])?;
        let block: u64 = frag
            .split("blocks of ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("block size not in {frag}"))?;
        let img_path = self.back().join("disk.img");
        let img = std::fs::File::open(&img_path).map_err(|e| e.to_string())?;
        let mut saved = Vec::new();
        // The extent lines: "   0:        0..    8191:      33792..     41983:   8192: ..."
        for line in frag.lines() {
            let cols: Vec<&str> = line.split(':').map(str::trim).collect();
            if cols.len() < 4 || cols[0].parse::<u32>().is_err() {
                continue;
            }
            let first = |c: &str| -> Result<u64, String> {
                c.split("..")
                    .next()
                    .unwrap()
                    .trim()
                    .parse()
                    .map_err(|_| format!("extent {line}"))
            };
            let (logical, physical) = (first(cols[1])?, first(cols[2])?);
            let len: u64 = cols[3].parse().map_err(|_| format!("extent {line}"))?;
            let (a, b) = (lo.max(logical * block), hi.min((logical + len) * block));
            if a < b {
                let off = physical * block + (a - logical * block);
                let mut bytes = vec![0u8; (b - a) as usize];
                img.read_exact_at(&mut bytes, off)
                    .map_err(|e| e.to_string())?;
                saved.push((off, bytes));
                run(
                    "fallocate",
                    &[
                        "-p",
                        "-o",
                        &off.to_string(),
                        "-l",
                        &(b - a).to_string(),
                        img_path.to_str().unwrap(),
                    ],
                )?;
            }
        }
        if saved.is_empty() {
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
        Ok(saved)
    }

    /// Puts bytes back on the disk, behind the file system's page cache: a write that failed
    /// on a real device leaves the bytes that were there.
    fn restore(&self, saved: &[(u64, Vec<u8>)]) {
        use std::os::unix::fs::FileExt;
        let img = std::fs::OpenOptions::new()
            .write(true)
            .open(self.back().join("disk.img"))
            .unwrap();
        for (off, bytes) in saved {
            img.write_all_at(bytes, *off).unwrap();
        }
    }

    fn free_space(&self) {
        let _ = std::fs::remove_file(self.back().join("filler"));
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // (Each step retried a little: a loop device lets go of its backing file some time
        // after `losetup -d` returns, and until then the tmpfs is busy.)
        let retry = |cmd: &str, args: &[&str]| {
            for _ in 0..50 {
                if run(cmd, args).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            eprintln!("write_errors: {cmd} {args:?} failed: left behind");
        };
        if self.fs_mounted {
            retry("umount", &[self.fs().to_str().unwrap()]);
        }
        if let Some(dev) = &self.loop_dev {
            retry("losetup", &["-d", dev]);
        }
        if self.back_mounted {
            retry("umount", &[self.back().to_str().unwrap()]);
        }
    }
}

/// The disk, or `None` after saying why there is none here; in CI (`DAXLOG_REQUIRE_LOOP_DISK`,
/// set by `.ci/run`) a disk that cannot be made fails the test.
///
/// The tests run one at a time (the guard): a process another test forks (`mount`, `dd`)
/// holds a copy of every open file until it execs, which keeps a log's lock taken and a mount
/// busy meanwhile.
fn disk(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Disk)> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    match Disk::new() {
        Ok(d) => Some((guard, d)),
        Err(why) if std::env::var_os("DAXLOG_REQUIRE_LOOP_DISK").is_some() => {
            panic!("{test}: DAXLOG_REQUIRE_LOOP_DISK is set, but no loop-device disk: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: no loop-device disk here ({why})");
            None
        }
    }
}

fn payload(tag: u8, i: u64) -> Vec<u8> {
    let mut p = vec![tag; 1000];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

/// A new 8 MiB log at `path` (prefilled: the msync path with every block written) with 50
/// acknowledged entries of 1000 B; they, and where the page after the tail's begins.
fn fifty_entries(path: &Path) -> (Vec<(u64, Vec<u8>)>, u64) {
    let log = Log::create(path, &Options::new().capacity(CAP).prefill(true)).unwrap();
    assert_eq!(log.persistence(), Persistence::Msync);
    let acked = (0..50)
        .map(|i| {
            let p = payload(1, i);
            (log.append(&p).unwrap(), p)
        })
        .collect();
    let tail = (daxlog::format::DATA_OFFSET + 50 * daxlog::format::entry_len(1000)) as u64;
    (acked, tail.div_ceil(4096) * 4096)
}

const CAP: u64 = 8 << 20;

#[test]
fn a_reopen_after_a_failed_write_back_makes_what_it_accepts_durable() {
    let Some((_one, mut disk)) = disk("a_reopen_after_a_failed_write_back") else {
        return;
    };
    let path = disk.fs().join("j.dax");
    let (mut acked, after_tail) = fifty_entries(&path);
    // The page the tail is in keeps its blocks; every write after it fails.
    disk.fail_writes(&path, after_tail, CAP).unwrap();

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
    reopen_and_append(&path, &mut acked);
    all_on_disk(&mut disk, &path, &acked);
}

/// The page cache gone (a remount): every acknowledged append is on the disk, byte for byte.
fn all_on_disk(disk: &mut Disk, path: &Path, acked: &[(u64, Vec<u8>)]) {
    disk.remount().unwrap();
    let log = Log::open_read_only(path, &Options::new()).unwrap();
    for (lsn, p) in acked {
        let e = log
            .read(*lsn)
            .unwrap_or_else(|| panic!("acknowledged LSN {lsn} lost"));
        assert!(&e.payload == p, "LSN {lsn}: other bytes");
    }
}

/// A reopen in the same boot appends after what it recovered; every acknowledged append
/// before it must have been recovered.
fn reopen_and_append(path: &Path, acked: &mut Vec<(u64, Vec<u8>)>) {
    let log = Log::open(path, &Options::new()).unwrap();
    let last = acked.iter().map(|a| a.0).max().unwrap();
    assert!(
        log.next_lsn() > last,
        "recovered to {:?}, acknowledged {last}",
        log.last_lsn()
    );
    for i in 0..5 {
        let p = payload(3, i);
        acked.push((log.append(&p).unwrap(), p));
    }
}

/// Four threads append batches while writes from eight pages past the tail fail. A failed
/// write-back has been seen reported to a later sync than the one that covered it, after
/// entries it held were published: the reopen must write back the whole last session, not
/// only what followed the last published LSN (that failed about every other run).
#[test]
fn threads_and_batches_then_a_reopen() {
    let Some((_one, mut disk)) = disk("threads_and_batches_then_a_reopen") else {
        return;
    };
    for round in 0..3u8 {
        let path = disk.fs().join(format!("t{round}.dax"));
        let (mut acked, after_tail) = fifty_entries(&path);
        let saved = disk.fail_writes(&path, after_tail + 8 * 4096, CAP).unwrap();
        {
            let log = Log::open(&path, &Options::new()).unwrap();
            let all = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for t in 0..4u8 {
                    let (log, all) = (&log, &all);
                    s.spawn(move || {
                        for i in 0..30u64 {
                            let ps: Vec<Vec<u8>> =
                                (0..3).map(|j| payload(10 + t, i * 10 + j)).collect();
                            let refs: Vec<&[u8]> = ps.iter().map(|p| &p[..]).collect();
                            match log.append_batch(&refs) {
                                Ok(r) => all.lock().unwrap().extend(r.zip(ps)),
                                Err(_) => break,
                            }
                        }
                    });
                }
            });
            let all = all.into_inner().unwrap();
            // Some appends failed (the disk failed writes): 30 batches of 3 from each thread.
            assert!(
                all.len() < 4 * 30 * 3,
                "no append failed: the disk did not fail writes"
            );
            acked.extend(all);
        }
        disk.free_space();
        disk.restore(&saved);
        reopen_and_append(&path, &mut acked);
        all_on_disk(&mut disk, &path, &acked);
    }
}

/// A suffix truncation whose destruction of the first deleted header fails: the page cache
/// shows zeros there, the disk the deleted entry. The reopen in the same boot must write the
/// header at the tail back, or the deleted entry comes back after the page cache is gone,
/// where later acknowledged appends should be.
#[test]
fn a_failed_header_destruction_then_a_reopen() {
    let Some((_one, mut disk)) = disk("a_failed_header_destruction") else {
        return;
    };
    let path = disk.fs().join("h.dax");
    let cap = 1u64 << 20;
    let e = daxlog::format::entry_len(1000) as u64;
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    {
        let log = Log::create(&path, &Options::new().capacity(cap).prefill(true)).unwrap();
        for i in 0..1010 {
            let p = payload(1, i);
            acked.push((log.append(&p).unwrap(), p));
        }
        log.truncate_before(1000).unwrap();
        acked.retain(|(l, _)| *l >= 1000);
    }
    // The page of the end of entry 1005 (where the truncation destroys 1006's header).
    let end_1005 = daxlog::format::DATA_OFFSET as u64 + 1005 * e;
    let page = end_1005 / 4096 * 4096;
    // (And the page before: the loop device's pages need not line up with the file's.)
    let saved = disk.fail_writes(&path, page - 4096, page + 4096).unwrap();
    {
        let log = Log::open(&path, &Options::new()).unwrap();
        assert!(
            log.truncate_after(1005).is_err(),
            "the destruction did not fail"
        );
    }
    acked.retain(|(l, _)| *l <= 1005);
    disk.free_space();
    disk.restore(&saved);
    {
        let log = Log::open(&path, &Options::new()).unwrap();
        assert_eq!(log.next_lsn(), 1006);
        // Too large for the space before the end of the file: it wraps; then one more, and a
        // truncation after it.
        let mut big = payload(5, 1006);
        big.resize(20000, 5);
        acked.push((log.append(&big).unwrap(), big));
        for i in 0..2 {
            let p = payload(6, i);
            acked.push((log.append(&p).unwrap(), p));
        }
        log.truncate_after(1007).unwrap();
        acked.retain(|(l, _)| *l <= 1007);
    }
    all_on_disk(&mut disk, &path, &acked);
}
