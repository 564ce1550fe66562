//! The durable write paths of a page-cache file system, one thread, measured append by
//! append: the measurement behind the choice of daxlog's `msync` path (docs/DISK.md).
//!
//! ```text
//! cargo run --release --example write_paths [DIR [APPENDS]]    # default: /tmp, 1500
//! ```
//!
//! Each method has its own 16 MiB file (fallocated; or written with zeros first, 1 MiB per
//! `write` or one page per `write` as `Options::prefill` does) and appends
//! entries of 64 B and 4 KiB (with 24 bytes of header room) one after the other, each made
//! durable before the next. The methods are interleaved append by append, so that every one
//! of them sees the same background load. Prints a markdown row per method: p50 and p99
//! latency in µs and appends/s.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

const CAP: usize = 16 << 20;
const FILES: [&str; 3] = ["fallocated", "zeros, 1 MiB writes", "zeros, page writes"];
const METHODS: [&str; 5] = [
    "mmap store + msync",
    "mmap store + fdatasync",
    "pwrite + fdatasync",
    "pwritev2 RWF_DSYNC",
    "mmap store + sync_file_range(WRITE) + msync",
];

/// A file of `CAP` bytes and its shared mapping.
struct Target {
    file: File,
    path: String,
    map: *mut u8,
}

impl Target {
    fn new(dir: &str, m: usize, kind: usize) -> Target {
        let path = format!("{dir}/write_paths.{}.{m}", std::process::id());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create file");
        if kind > 0 {
            // (1 MiB writes leave large folios in the page cache where the file system
            // supports them; page-sized writes leave single pages.)
            let z = vec![0u8; if kind == 1 { 1 << 20 } else { 4096 }];
            for i in 0..CAP / z.len() {
                file.write_all_at(&z, (i * z.len()) as u64).expect("write");
            }
        } else {
            nix::fcntl::posix_fallocate(&file, 0, CAP as i64).expect("fallocate");
        }
        file.sync_all().expect("fsync");
        // SAFETY: a new shared mapping of a file we hold open, at an address the kernel picks;
        // the file is CAP bytes long.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CAP,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "mmap");
        // Pages mapped for reading (clean): the first store takes a write fault, as daxlog's
        // do. SAFETY: advice on our own mapping; it changes no byte.
        unsafe {
            libc::madvise(map, CAP, 22 /* MADV_POPULATE_READ */)
        };
        Target {
            file,
            path,
            map: map.cast(),
        }
    }

    /// Appends `buf` at `off` by method `m` and makes it durable.
    fn append(&self, m: usize, off: usize, buf: &[u8]) {
        let fd = self.file.as_raw_fd();
        let lo = off & !4095;
        let len = off + buf.len() - lo;
        assert!(off + buf.len() <= CAP);
        // SAFETY: `[off, off + buf.len())` and `[lo, lo + len)` lie inside the mapping (checked
        // above), which nothing else references; the system calls get valid descriptors and
        // buffers that live for the call.
        let ok = unsafe {
            match m {
                0 | 1 | 4 => {
                    std::ptr::copy_nonoverlapping(buf.as_ptr(), self.map.add(off), buf.len());
                    if m == 4 {
                        let flag = libc::SYNC_FILE_RANGE_WRITE;
                        assert_eq!(libc::sync_file_range(fd, lo as i64, len as i64, flag), 0);
                    }
                    if m == 1 {
                        libc::fdatasync(fd) == 0
                    } else {
                        libc::msync(self.map.add(lo).cast(), len, libc::MS_SYNC) == 0
                    }
                }
                2 => {
                    libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off as i64)
                        == buf.len() as isize
                        && libc::fdatasync(fd) == 0
                }
                _ => {
                    let iov = libc::iovec {
                        iov_base: buf.as_ptr() as *mut libc::c_void,
                        iov_len: buf.len(),
                    };
                    libc::pwritev2(fd, &iov, 1, off as i64, libc::RWF_DSYNC) == buf.len() as isize
                }
            }
        };
        assert!(ok, "{}: {}", METHODS[m], std::io::Error::last_os_error());
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping, which nothing references any more.
        unsafe { libc::munmap(self.map.cast(), CAP) };
        let _ = std::fs::remove_file(&self.path);
    }
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp".into());
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    println!("| payload | file | method | p50 µs | p99 µs | appends/s |");
    println!("|--:|---|---|--:|--:|--:|");
    for size in [64usize, 4096] {
        for (kind, file) in FILES.iter().enumerate() {
            let targets: Vec<Target> = (0..METHODS.len())
                .map(|m| Target::new(&dir, m, kind))
                .collect();
            let buf = vec![7u8; size];
            let mut lat = vec![Vec::with_capacity(n); METHODS.len()];
            let mut off = 4096;
            for _ in 0..n {
                if off + size > CAP {
                    break;
                }
                for (m, t) in targets.iter().enumerate() {
                    let t0 = Instant::now();
                    t.append(m, off, &buf);
                    lat[m].push(t0.elapsed().as_nanos() as u64);
                }
                off += (size + 24 + 7) & !7;
            }
            for (m, l) in lat.iter_mut().enumerate() {
                l.sort_unstable();
                let mean = l.iter().sum::<u64>() as f64 / l.len() as f64;
                println!(
                    "| {size} B | {file} | {} | {:.1} | {:.1} | {:.0} |",
                    METHODS[m],
                    l[l.len() / 2] as f64 / 1e3,
                    l[l.len() * 99 / 100] as f64 / 1e3,
                    1e9 / mean
                );
            }
        }
    }
}
