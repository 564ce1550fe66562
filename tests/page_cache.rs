//! The msync path on a disk-backed file system writes back what an append changed, not the
//! large folio around it: a log whose page cache was dropped (a reboot, memory pressure) and
//! read back by recovery must not be cached in folios of up to 2 MiB, each of which a 64-byte
//! append's `msync` would then write whole (docs/DISK.md, "Large folios").
//!
//! On a kernel or file system without large folios in the page cache the writes are single
//! pages with or without daxlog's advice, and this test cannot tell the difference.

use std::fs::File;
use std::os::fd::AsRawFd;

use daxlog::{Log, Options, Persistence};

mod common;

/// Bytes this thread has sent to storage (`write_bytes` of `/proc/thread-self/io`): an
/// `msync(MS_SYNC)` writes back the dirty pages in the calling thread.
fn written_by_this_thread() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Drops the clean pages of `path` from the page cache (nothing maps it any more).
fn evict(path: &std::path::Path) {
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: advice on a descriptor we own; it changes no byte of the file.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

#[test]
fn appends_after_a_cold_reopen_write_back_single_pages() {
    // A disk file system: the temporary directory (tmpfs writes nothing back).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cold.dax");
    let log = Log::create(&path, &Options::new().capacity(64 << 20)).unwrap();
    if log.persistence() != Persistence::Msync
        || written_by_this_thread().is_none()
        || dir.path().starts_with("/dev/shm")
    {
        eprintln!("not a disk-backed msync log here: nothing to measure");
        return;
    }
    let big = vec![0x5a_u8; 1 << 20];
    while log.used_bytes() < 48 << 20 {
        log.append(&big).unwrap();
    }
    let before_reopen = log.next_lsn();
    drop(log);
    evict(&path);

    // Recovery reads the 48 MiB back; the appends go on past them.
    let log = Log::open(&path, &Options::new()).unwrap();
    assert_eq!(log.next_lsn(), before_reopen);
    let n = 40;
    let w0 = written_by_this_thread().unwrap();
    for i in 0..n {
        log.append(format!("small append {i:>40}").as_bytes())
            .unwrap();
    }
    let per_append = (written_by_this_thread().unwrap() - w0) / n;
    // One page (sometimes two) per append; a large folio would be 16 KiB to 2 MiB.
    assert!(
        per_append <= 12 << 10,
        "{per_append} bytes written back per 64-byte append"
    );
    // And what was appended reads back.
    let last = log.read(log.last_lsn().unwrap()).unwrap();
    assert_eq!(
        last.payload,
        format!("small append {:>40}", n - 1).as_bytes()
    );
}

/// This thread's page faults: (minor, major; the latter had to wait for a read from the disk).
fn faults() -> (i64, i64) {
    // SAFETY: getrusage fills the struct we pass; no other memory is involved.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
    (u.ru_minflt, u.ru_majflt)
}

fn major_faults() -> i64 {
    faults().1
}

/// On a disk-backed file system the msync path stores with `pwrite`, not through the
/// mapping. Through the mapping, each `msync` write-protected the pages it wrote back, and the
/// next append's store into its page took a write fault (and, with threads on other CPUs, the
/// write-protection interrupted them to flush their translations): one fault per append.
#[test]
fn appends_on_a_disk_take_no_page_faults() {
    let dir = tempfile::tempdir().unwrap();
    if !common::disk_backed(dir.path()) {
        eprintln!("the temporary directory is not disk-backed: nothing to measure");
        return;
    }
    let path = dir.path().join("faults.dax");
    let opts = Options::new()
        .capacity(8 << 20)
        .prefill(true)
        .persistence(daxlog::PersistenceChoice::ForceMsync);
    let log = Log::create(&path, &opts).unwrap();
    for i in 0..20 {
        log.append(format!("warm-up {i:>56}").as_bytes()).unwrap();
    }
    let n = 300;
    let (before, _) = faults();
    for i in 0..n {
        log.append(format!("append {i:>57}").as_bytes()).unwrap();
    }
    let (after, _) = faults();
    let faults = after - before;
    assert!(
        faults < n / 10,
        "{faults} page faults in {n} appends of 64 bytes on a disk-backed log"
    );
    let last = log.iter().last().unwrap();
    assert_eq!(last.payload, format!("append {:>57}", n - 1).as_bytes());
}

/// With read-ahead by faults off, the reads daxlog makes in order ask for the pages ahead
/// themselves: iterating over a log whose page cache was dropped does not wait for the disk
/// page by page (12,288 pages here; without the asking, about one major fault each).
#[test]
fn iterating_a_cold_log_reads_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iter.dax");
    let hinted = Options::new().capacity(64 << 20).tail_hint_every(1 << 20);
    let log = Log::create(&path, &hinted).unwrap();
    if log.persistence() != Persistence::Msync || dir.path().starts_with("/dev/shm") {
        eprintln!("not a disk-backed msync log here: nothing to measure");
        return;
    }
    let p = vec![7u8; 4000];
    let batch: Vec<&[u8]> = (0..64).map(|_| &p[..]).collect();
    while log.used_bytes() < 48 << 20 {
        log.append_batch(&batch).unwrap();
    }
    // (A last append records a tail hint near the end: the next open starts its scan there.)
    log.append(&p).unwrap();
    let n = log.len();
    drop(log);
    evict(&path);
    let log = Log::open(&path, &hinted).unwrap();
    let before = major_faults();
    assert_eq!(log.iter().filter(|e| e.payload == p).count() as u64, n);
    let waited = major_faults() - before;
    assert!(waited < 1000, "{waited} faults waited for the disk");
}

/// A process whose file size limit (`ulimit -f`, systemd's `LimitFSIZE=`) lies below the size
/// of a log another process created may still append to it: its appends write inside the
/// file. The kernel checks the limit on every `pwrite`, one inside the file too, and raises
/// `SIGXFSZ`, which kills; so there the log keeps its stores in the mapping.
#[test]
fn a_process_with_a_small_file_size_limit_appends_to_a_larger_log() {
    const N: usize = 1000;
    const LEN: usize = 4000;
    if let Ok(path) = std::env::var("DAXLOG_FSIZE_CHILD") {
        // The child: a limit of 1 MiB, then 4 MB of appends.
        // SAFETY: getrlimit fills the struct we pass, setrlimit reads it.
        unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
            limit.rlim_cur = 1 << 20;
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        let log = Log::open(&path, &Options::new()).unwrap();
        for i in 0..N {
            log.append(&[i as u8; LEN]).unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if !common::disk_backed(dir.path()) {
        eprintln!("the temporary directory is not disk-backed: no store is a write there");
        return;
    }
    let path = dir.path().join("fsize.dax");
    let log = Log::create(&path, &Options::new().capacity(8 << 20)).unwrap();
    assert_eq!(log.persistence(), Persistence::Msync);
    drop(log);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_process_with_a_small_file_size_limit_appends_to_a_larger_log",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("DAXLOG_FSIZE_CHILD", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the appender with a 1 MiB file size limit: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let log = Log::open_read_only(&path, &Options::new()).unwrap();
    let payloads: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
    assert_eq!(payloads.len(), N);
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(p, &vec![i as u8; LEN], "entry {i}");
    }
}
