//! Hot-path decomposition (`--profile`): the roofline, then the same persist with one more
//! piece of what daxlog's append does added at each step, then daxlog itself; plus the pieces
//! timed alone. Differences between consecutive rows estimate what each piece costs.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use daxlog::format::{entry_crc, entry_len, payload_crc, EntryHeader, HEADER_LEN};
use daxlog::{Log, Media, Persistence};

use crate::common::*;
use crate::daxlog_cases::{self, Mode};
use crate::roofline::{self, Flush, Mapping};

const SALT: u32 = 0x5eed_1234;

/// Encodes the header of an entry the way daxlog does (payload crc first, then header fields).
#[inline(always)]
fn encode(p: &[u8], lsn: u64) -> [u8; HEADER_LEN] {
    let pcrc = payload_crc(SALT, p);
    let mut h = EntryHeader {
        crc: 0,
        len: p.len() as u32,
        lsn,
        epoch: 7,
        flags: 0,
    };
    h.crc = entry_crc(pcrc, &h);
    h.encode()
}

/// Stores header and payload separately (as daxlog does), cached or non-temporal.
///
/// # Safety
/// `d` is 8-byte aligned and valid for `entry_len(p.len())` bytes of writes in a mapping.
#[inline(always)]
unsafe fn store_parts(d: *mut u8, hdr: &[u8; HEADER_LEN], p: &[u8], nt: bool) {
    let pad = entry_len(p.len()) - HEADER_LEN - p.len();
    // SAFETY: every copy stays inside `[d, d + entry_len)` (caller); NT copies get 8-byte
    // aligned destinations and multiple-of-8 lengths (the padded tail is built in a word).
    unsafe {
        if nt {
            roofline::nt_copy_sse2(d, hdr);
            let body = p.len() & !7;
            roofline::nt_copy_sse2(d.add(HEADER_LEN), &p[..body]);
            if body < p.len() {
                let mut last = [0u8; 8];
                last[..p.len() - body].copy_from_slice(&p[body..]);
                roofline::nt_copy_sse2(d.add(HEADER_LEN + body), &last);
            }
        } else {
            std::ptr::copy_nonoverlapping(hdr.as_ptr(), d, HEADER_LEN);
            std::ptr::copy_nonoverlapping(p.as_ptr(), d.add(HEADER_LEN), p.len());
            if pad > 0 {
                std::ptr::write_bytes(d.add(HEADER_LEN + p.len()), 0, pad);
            }
        }
    }
}

fn timed(cfg: &Cfg, ops: usize, mut f: impl FnMut()) -> Vec<f64> {
    time_reps(cfg.reps, ops, || {}, &mut f)
}

pub fn run(cfg: &Cfg) {
    let flush = roofline::best_flush();
    for (size, nt) in [(64usize, false), (4096, true), (65536, true)] {
        let case = format!("decomp append {}", size_name(size));
        let ops = cfg.appends_per_rep(size, false);
        let img = roofline::image(size, 1, 0);
        let p = payload(size);
        let st = Mutex::new((1u64, 0usize));

        // A: the roofline.
        let ns = if nt {
            // SAFETY: destinations inside the mapping with room for the image (time_on_mapping).
            roofline::time_on_mapping(cfg, ops, &img, |d, s| unsafe {
                roofline::persist_sse2(d, s)
            })
        } else {
            // SAFETY: as above; `flush` is supported.
            roofline::time_on_mapping(cfg, ops, &img, |d, s| unsafe {
                roofline::persist_clwb(flush, d, s)
            })
        };
        emit(
            "A roofline (one copy + CLWB/line or NT + SFENCE)",
            &case,
            size,
            1,
            &ns,
        );

        // A': the roofline writing fresh memory each repetition, as a log does.
        let ns = fresh_region(cfg, ops, &img, flush, nt);
        emit(
            "A' = A on a fresh region every repetition (like a log)",
            &case,
            size,
            1,
            &ns,
        );

        // B: header and payload stored separately.
        let hdr = encode(&p, 1);
        let ns = roofline::time_on_mapping(cfg, ops, &img, |d, _| {
            // SAFETY: as above.
            unsafe { persist_parts(flush, d, &hdr, &p, nt) }
        });
        emit(
            "B = A with header and payload stored separately",
            &case,
            size,
            1,
            &ns,
        );

        // C: + checksum and header encoding.
        let lsn = std::cell::Cell::new(1u64);
        let ns = roofline::time_on_mapping(cfg, ops, &img, |d, _| {
            let h = encode(black_box(&p), lsn.get());
            lsn.set(lsn.get() + 1);
            // SAFETY: as above.
            unsafe { persist_parts(flush, d, &h, &p, nt) }
        });
        emit(
            "C = B + crc32c (payload, header) + header encode",
            &case,
            size,
            1,
            &ns,
        );

        // D: + the writer mutex and LSN/tail bookkeeping.
        let ns = roofline::time_on_mapping(cfg, ops, &img, |d, _| {
            let h = encode(black_box(&p), 0);
            let mut g = st.lock().unwrap();
            // SAFETY: as above.
            unsafe { persist_parts(flush, d, &h, &p, nt) }
            g.0 += 1;
            g.1 += img.len();
        });
        emit(
            "D = C + Mutex lock + bookkeeping (a minimal log)",
            &case,
            size,
            1,
            &ns,
        );

        // D2/D3: the same with a lock whose release is a plain store, and with no locked
        // instruction at all (only a release store), to see what the locked RMWs cost.
        let spin = AtomicBool::new(false);
        let ns = roofline::time_on_mapping(cfg, ops, &img, |d, _| {
            let h = encode(black_box(&p), 0);
            while spin
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                std::hint::spin_loop();
            }
            // SAFETY: as above.
            unsafe { persist_parts(flush, d, &h, &p, nt) }
            spin.store(false, Ordering::Release);
        });
        emit(
            "D2 = C + spin lock (CAS acquire, plain-store release)",
            &case,
            size,
            1,
            &ns,
        );
        let tail = AtomicU64::new(0);
        let ns = roofline::time_on_mapping(cfg, ops, &img, |d, _| {
            let h = encode(black_box(&p), 0);
            // SAFETY: as above.
            unsafe { persist_parts(flush, d, &h, &p, nt) }
            tail.store(tail.load(Ordering::Relaxed) + 1, Ordering::Release);
        });
        emit(
            "D3 = C + release store of the tail (no locked instruction)",
            &case,
            size,
            1,
            &ns,
        );

        // E: daxlog.
        let path = cfg.shm.join("decomp.dax");
        let opts = Mode::Default.options();
        let ns = daxlog_cases::run(cfg, &path, &opts, ops * entry_len(size), ops, |log| {
            black_box(log.append(black_box(&p)).expect("append"));
        });
        emit(
            "E daxlog append (CPU flush, default NT threshold)",
            &case,
            size,
            1,
            &ns,
        );
        let _ = std::fs::remove_file(&path);

        // E1/E2: daxlog on a bench-owned mapping (same CLWB/NT/SFENCE primitives), with the
        // media's `prepare` populating the pages as MmapMedia does, or doing nothing.
        for populate in [true, false] {
            let per_rep = ops * entry_len(size);
            let cap = daxlog_cases::capacity_for(cfg, per_rep);
            let make = || {
                let media = BenchMedia::new(Mapping::new(cfg, cap), flush, populate, None);
                Log::create_on(media, &Mode::Default.options()).expect("create_on")
            };
            let ns = daxlog_cases::run_on(cfg, per_rep, ops, make, |log| {
                black_box(log.append(black_box(&p)).expect("append"));
            });
            let row = if populate {
                "E1 daxlog append on bench media, prepare = MADV_POPULATE_WRITE (as MmapMedia)"
            } else {
                "E2 daxlog append on bench media, prepare = no-op"
            };
            emit(row, &case, size, 1, &ns);
        }

        // M: msync mode. The roofline (copy + msync of the page), then daxlog on bench media
        // tracking the range to msync with atomic read-modify-writes (as MmapMedia does) or
        // with plain loads and stores (enough: flush and drain run under the writer lock).
        if size == 64 {
            let ops = cfg.appends_per_rep(size, true);
            // SAFETY: destinations inside the mapping with room for the image.
            let ns = roofline::time_on_mapping(cfg, ops, &img, |d, s| unsafe {
                roofline::persist_msync(d, s)
            });
            emit("M0 roofline: copy + msync of the page", &case, size, 1, &ns);
            for (track, row) in [
                (
                    Track::Rmw,
                    "M1 daxlog msync mode on bench media, range in atomic RMWs (as MmapMedia)",
                ),
                (Track::Plain, "M2 = M1 with the range in plain loads/stores"),
            ] {
                let per_rep = ops * entry_len(size);
                let cap = daxlog_cases::capacity_for(cfg, per_rep);
                let make = || {
                    let media = BenchMedia::new(Mapping::new(cfg, cap), flush, true, Some(track));
                    Log::create_on(media, &Mode::Default.options()).expect("create_on")
                };
                let ns = daxlog_cases::run_on(cfg, per_rep, ops, make, |log| {
                    black_box(log.append(black_box(&p)).expect("append"));
                });
                emit(row, &case, size, 1, &ns);
            }
        }

        // Pieces alone.
        let ns = timed(cfg, ops, || {
            black_box(encode(black_box(&p), 1));
        });
        emit(
            "crc32c (payload, header) + encode alone",
            &case,
            size,
            1,
            &ns,
        );
        let ns = timed(cfg, ops, || {
            let mut g = black_box(&st).lock().unwrap();
            g.0 += 1;
        });
        emit("Mutex lock + unlock alone", &case, size, 1, &ns);
    }

    // The batch: per-call costs that do not depend on the bytes.
    let case = format!("decomp append_batch {BATCH_N}x{}", size_name(BATCH_PAYLOAD));
    let ops = cfg.appends_per_rep(BATCH_N * BATCH_PAYLOAD, false);
    let img = roofline::batch_image();
    let p = payload(BATCH_PAYLOAD);
    // SAFETY: as above.
    let ns = roofline::time_on_mapping(cfg, ops, &img, |d, s| unsafe {
        roofline::persist_sse2(d, s)
    });
    emit(
        "A roofline (one copy + CLWB/line or NT + SFENCE)",
        &case,
        BATCH_N * BATCH_PAYLOAD,
        BATCH_N,
        &ns,
    );
    let ns = roofline::time_on_mapping(cfg, ops, &img, |d, _| {
        let mut off = 0;
        for i in 0..BATCH_N {
            let h = encode(black_box(&p), i as u64);
            // SAFETY: entry i of the batch image lies at `off`, inside the image's room.
            unsafe { store_parts(d.add(off), &h, &p, true) };
            off += entry_len(BATCH_PAYLOAD);
        }
        roofline::fence(Flush::Clwb);
    });
    emit(
        "C = 16 x (crc32c + encode + separate NT stores) + SFENCE",
        &case,
        BATCH_N * BATCH_PAYLOAD,
        BATCH_N,
        &ns,
    );
    let batch: Vec<&[u8]> = (0..BATCH_N).map(|_| &p[..]).collect();
    let path = cfg.shm.join("decomp.dax");
    let opts = Mode::Default.options();
    let ns = daxlog_cases::run(
        cfg,
        &path,
        &opts,
        ops * BATCH_N * entry_len(BATCH_PAYLOAD),
        ops,
        |log| {
            black_box(log.append_batch(black_box(&batch)).expect("append_batch"));
        },
    );
    emit(
        "E daxlog append (CPU flush, default NT threshold)",
        &case,
        BATCH_N * BATCH_PAYLOAD,
        BATCH_N,
        &ns,
    );
    let _ = std::fs::remove_file(&path);
    let ns = timed(cfg, ops, || {
        let mut v: Vec<u32> = Vec::with_capacity(black_box(BATCH_N));
        for i in 0..BATCH_N {
            v.push(i as u32);
        }
        black_box(&v);
    });
    emit(
        "Vec::with_capacity(16) + 16 pushes + free alone",
        &case,
        BATCH_N * BATCH_PAYLOAD,
        BATCH_N,
        &ns,
    );

    // Prefaulting: MADV_POPULATE_WRITE of 2 MiB that is already populated (what daxlog's
    // `prepare` costs on a warm mapping, once per 2 MiB appended).
    let map = Mapping::new(cfg, 64 << 20);
    let mut off = 0usize;
    let ops = if cfg.smoke { 4 } else { 2000 };
    let ns = timed(cfg, ops, || {
        // SAFETY: a 2 MiB range inside the mapping.
        unsafe { populate_write(map.ptr.add(off), 2 << 20) };
        off = (off + (2 << 20)) % map.len;
    });
    emit(
        "madvise(POPULATE_WRITE) of 2 MiB, warm mapping, alone",
        "decomp prefault",
        2 << 20,
        1,
        &ns,
    );
}

/// Stores header and payload separately, then makes them durable.
///
/// # Safety
/// As [`store_parts`]; `flush` is supported by this CPU.
#[inline(always)]
unsafe fn persist_parts(flush: Flush, d: *mut u8, hdr: &[u8; HEADER_LEN], p: &[u8], nt: bool) {
    // SAFETY: forwarded.
    unsafe {
        store_parts(d, hdr, p, nt);
        if !nt {
            roofline::flush_lines(flush, d, entry_len(p.len()));
        }
    }
    roofline::fence(flush);
}

/// The roofline over a mapping large enough that no repetition rewrites bytes an earlier one
/// wrote (up to [`MAX_LOG`]; then it wraps).
fn fresh_region(cfg: &Cfg, ops: usize, img: &[u8], flush: Flush, nt: bool) -> Vec<f64> {
    let per_rep = ops * img.len();
    let len = round_page(
        (per_rep * (cfg.reps + 1) + 4096)
            .min(MAX_LOG)
            .max(per_rep + 4096),
    );
    let map = Mapping::new(cfg, len);
    let off = std::cell::Cell::new(0usize);
    time_reps(
        cfg.reps,
        ops,
        || {
            if off.get() + per_rep > map.len {
                off.set(0);
            }
        },
        || {
            let o = off.get();
            assert!(o + img.len() <= map.len);
            let d = map.ptr.wrapping_add(o);
            // SAFETY: `d` has room for the image inside the mapping (checked above).
            unsafe {
                if nt {
                    roofline::persist_sse2(d, img)
                } else {
                    roofline::persist_clwb(flush, d, img)
                }
            }
            off.set(o + img.len());
        },
    )
}

/// daxlog's media seam implemented over a bench-owned prefaulted mapping, with the same
/// persistence primitives as `MmapMedia` (CPU flush, or msync when `msync` is set); `prepare`
/// optional.
struct BenchMedia {
    map: Mapping,
    flush: Flush,
    populate: bool,
    msync: Option<Track>,
    lo: AtomicUsize,
    hi: AtomicUsize,
}

/// How msync mode tracks the byte range to sync at the next drain.
#[derive(Clone, Copy)]
enum Track {
    /// `fetch_min`/`fetch_max` and `swap`, as `MmapMedia` does.
    Rmw,
    /// Relaxed loads and stores (the writer lock already serialises flush and drain).
    Plain,
}

impl BenchMedia {
    fn new(map: Mapping, flush: Flush, populate: bool, msync: Option<Track>) -> BenchMedia {
        BenchMedia {
            map,
            flush,
            populate,
            msync,
            lo: AtomicUsize::new(usize::MAX),
            hi: AtomicUsize::new(0),
        }
    }
}

// SAFETY: the mapping is shared memory owned by this value; it is only accessed through the
// `Media` methods, whose callers (daxlog) uphold the aliasing rules for concurrent use.
unsafe impl Send for BenchMedia {}
// SAFETY: as above.
unsafe impl Sync for BenchMedia {}

impl Media for BenchMedia {
    fn len(&self) -> usize {
        self.map.len
    }

    fn persistence(&self) -> Persistence {
        if self.msync.is_some() {
            Persistence::Msync
        } else {
            Persistence::Clwb
        }
    }

    unsafe fn read(&self, off: usize, len: usize) -> &[u8] {
        // SAFETY: the caller keeps the range in bounds and free of concurrent stores.
        unsafe { std::slice::from_raw_parts(self.map.ptr.add(off), len) }
    }

    unsafe fn store(&self, off: usize, src: &[u8]) {
        // SAFETY: the caller keeps the range in bounds and unaliased; `src` is not in the
        // mapping.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.map.ptr.add(off), src.len()) }
    }

    unsafe fn store_nt(&self, off: usize, src: &[u8]) {
        // SAFETY: as for `store`; `off` and `src.len()` are multiples of 8 (trait contract) and
        // the mapping is page-aligned.
        unsafe { roofline::nt_copy_sse2(self.map.ptr.add(off), src) }
    }

    fn flush(&self, off: usize, len: usize) {
        if len == 0 || off >= self.map.len {
            return;
        }
        let len = len.min(self.map.len - off);
        match self.msync {
            Some(Track::Rmw) => {
                self.lo.fetch_min(off, Ordering::Relaxed);
                self.hi.fetch_max(off + len, Ordering::Relaxed);
            }
            Some(Track::Plain) => {
                self.lo
                    .store(self.lo.load(Ordering::Relaxed).min(off), Ordering::Relaxed);
                self.hi.store(
                    self.hi.load(Ordering::Relaxed).max(off + len),
                    Ordering::Relaxed,
                );
            }
            // SAFETY: the range was clamped to the mapping; `flush` is this CPU's best
            // instruction.
            None => unsafe { roofline::flush_lines(self.flush, self.map.ptr.add(off), len) },
        }
    }

    fn drain(&self) -> std::io::Result<()> {
        let (lo, hi) = match self.msync {
            None => {
                roofline::fence(self.flush);
                return Ok(());
            }
            Some(Track::Rmw) => (
                self.lo.swap(usize::MAX, Ordering::Relaxed),
                self.hi.swap(0, Ordering::Relaxed),
            ),
            Some(Track::Plain) => {
                let r = (
                    self.lo.load(Ordering::Relaxed),
                    self.hi.load(Ordering::Relaxed),
                );
                self.lo.store(usize::MAX, Ordering::Relaxed);
                self.hi.store(0, Ordering::Relaxed);
                r
            }
        };
        if lo < hi {
            let lo = lo & !4095;
            // SAFETY: `[lo, hi)` lies inside the mapping (flush clamps it); `lo` is page-aligned.
            let rc = unsafe {
                libc::msync(
                    self.map.ptr.add(lo) as *mut std::ffi::c_void,
                    hi - lo,
                    libc::MS_SYNC,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    fn prepare(&self, off: usize, len: usize) {
        if self.populate && off < self.map.len {
            let len = len.min(self.map.len - off);
            // SAFETY: the range lies inside the mapping; populating writes no byte.
            unsafe { populate_write(self.map.ptr.add(off), len) };
        }
    }
}
