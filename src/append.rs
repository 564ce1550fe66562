//! The append path: one persistence barrier per append or batch, many appenders at once.
//!
//! An append (or batch) goes through three steps:
//!
//! 1. **Reserve** with one compare-and-swap of the reservation word (`reserve.rs`): place the
//!    bytes (at the tail, or at the start of the data area when they do not fit before the end
//!    of the file), take the LSNs and a ticket, and store the 8-byte end marker after them.
//! 2. **Store and persist**, with no lock: encode the entries into the reserved bytes, then
//!    write back their cache lines and fence (CPU mode: each thread fences its own stores,
//!    since a fence orders only the stores of the core that issues it), or, in msync mode,
//!    join a group commit in which one `msync` covers every reservation stored so far.
//! 3. **Publish in order**: a ticket becomes visible to readers, and its append returns, only
//!    when it and every ticket before it are durable — recovery stops at the first invalid
//!    entry, so an acknowledged entry must never sit behind one that could still be torn. The
//!    thread whose turn comes publishes its ticket and every consecutive durable one after it;
//!    the others spin briefly on the published watermark, then sleep on a condition variable.
//!
//! Nothing else is written: the end of the log is found by recovery from the entries
//! themselves.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::format::{
    self, EntryHeader, DATA_OFFSET, ENTRY_ALIGN, FLAG_CONTINUES, FLAG_PAD, HEADER_LEN,
};
use crate::log::{max_payload, Log, Writer};
use crate::media::{Claim, Media};
use crate::persist::CACHE_LINE;
use crate::reserve::Resv;
use crate::sync::parking_lot::MutexGuard;
use crate::Lsn;

/// Single appends of payloads from this size on, with non-temporal stores, checksum the payload
/// while copying it (below it, the separate checksum costs less than the fused kernel's setup).
const FUSED_FROM: usize = 512;

/// Batches up to this many bytes on media are assembled on the stack and stored at once, with
/// non-temporal stores from `Log::batch_nt_threshold`.
pub(crate) const BATCH_BUF: usize = 4096;

impl<M: Media> Log<M> {
    /// Appends one entry and returns its LSN once the entry — and every entry before it — is
    /// durable.
    ///
    /// Any number of threads may append at once. On [`Error::Full`] nothing is written and the
    /// log stays usable. An empty payload is a valid entry. In msync mode on slow media (a
    /// disk), an append that would wait for one of the 16 places of appends in flight may be
    /// written by another appender, in one batch with others (write combining,
    /// `docs/DISK.md`); it returns, as always, once durable, with its own LSN.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// let lsn = log.append(b"rename /a /b")?;
    /// assert_eq!(log.read(lsn).unwrap().payload, b"rename /a /b");
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        self.check_payload(payload)?;
        if self.should_combine(payload) {
            if let Some(r) = self.append_combined(payload) {
                return r;
            }
        }
        let total = format::entry_len(payload.len());
        let nt = total >= self.nt_threshold;
        self.prefetch_end(total, nt);
        let crc = self.crc_unless_fused(payload, nt);
        let lsns = self.append_entries(&[payload], &[crc], total, nt)?;
        Ok(lsns.start)
    }

    /// Appends several entries with one persistence barrier and returns their LSNs.
    ///
    /// After a crash either all of them are in the log or none is. An empty batch writes
    /// nothing and returns an empty range.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// let lsns = log.append_batch(&[b"unlink /a/x", b"rmdir /a"])?;
    /// assert_eq!(lsns, 1..3);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<Range<Lsn>> {
        if payloads.is_empty() {
            if self.read_only {
                return Err(Error::ReadOnly {
                    path: self.name.clone(),
                });
            }
            let next = self.next_lsn();
            return Ok(next..next);
        }
        self.check_writable_append()?;
        let longest = payloads.iter().map(|p| p.len()).max().unwrap_or(0);
        self.check_payload_len(longest)?;
        let total: usize = payloads.iter().map(|p| format::entry_len(p.len())).sum();
        let area = self.sb.capacity - DATA_OFFSET as u64;
        if total as u64 > area {
            return Err(Error::BatchTooLarge {
                path: self.name.clone(),
                entries: payloads.len() as u64,
                bytes: total as u64,
                max: area,
            });
        }
        let small = payloads.len() > 1 && total <= BATCH_BUF;
        let nt = total
            >= if small {
                self.batch_nt_threshold
            } else {
                self.nt_threshold
            };
        self.prefetch_end(total, nt);
        if small {
            // Size classes, so that a small batch zeroes little more stack than it needs.
            return match total {
                ..=1024 => self.append_small_batch::<1024>(payloads, total, nt),
                1025..=2048 => self.append_small_batch::<2048>(payloads, total, nt),
                _ => self.append_small_batch::<BATCH_BUF>(payloads, total, nt),
            };
        }
        let crcs: Vec<Option<u32>> = payloads
            .iter()
            .map(|p| self.crc_unless_fused(p, nt))
            .collect();
        self.append_entries(payloads, &crcs, total, nt)
    }

    /// A batch of `total <= N` bytes on media, assembled on the stack and stored with one copy
    /// (non-temporal stores if `nt`). The payloads and their checksums go in before the
    /// reservation, which leaves only the headers (they hold the LSNs) to fill in while later
    /// appenders may be waiting on it.
    fn append_small_batch<const N: usize>(
        &self,
        payloads: &[&[u8]],
        total: usize,
        nt: bool,
    ) -> Result<Range<Lsn>> {
        let mut buf = [0u8; N];
        let mut at = 0;
        let mut put = |p: &[u8], pcrc: u32| {
            // The payload checksum waits in the header's first bytes.
            buf[at..at + 4].copy_from_slice(&pcrc.to_le_bytes());
            buf[at + HEADER_LEN..at + HEADER_LEN + p.len()].copy_from_slice(p);
            at += format::entry_len(p.len());
        };
        // Two checksums at a time: one CRC32 chain leaves the unit idle most of the time.
        let (pairs, odd) = payloads.as_chunks::<2>();
        for [a, b] in pairs {
            let (ca, cb) = crate::persist::crc32c_pair(self.sb.salt, a, b);
            put(a, ca);
            put(b, cb);
        }
        if let [p] = odd {
            put(p, format::payload_crc(self.sb.salt, p));
        }
        self.reserve_and_store(payloads, total, nt, |claim, first, nt| {
            // (Read after the reservation: a suffix truncation changes it while no
            // reservation exists.)
            let epoch = self.epoch();
            let mut at = 0;
            for (i, p) in payloads.iter().enumerate() {
                let pcrc = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
                let flags = batch_flags(i, payloads.len());
                let h = EntryHeader::sealed(p.len(), first + i as u64, epoch, flags, pcrc);
                buf[at..at + HEADER_LEN].copy_from_slice(&h.encode());
                at += h.entry_len();
            }
            self.pmem
                .store_claimed(claim, claim.start(), &buf[..total], nt);
        })
    }

    fn check_payload(&self, payload: &[u8]) -> Result<()> {
        self.check_writable_append()?;
        self.check_payload_len(payload.len())
    }

    fn check_writable_append(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.name.clone(),
            });
        }
        Ok(())
    }

    fn check_payload_len(&self, len: usize) -> Result<()> {
        let max = max_payload(self.sb.capacity);
        if len as u64 > max {
            return Err(Error::PayloadTooLarge {
                path: self.name.clone(),
                len: len as u64,
                max,
            });
        }
        Ok(())
    }

    /// The payload checksum, computed now; or `None` if the payload will be checksummed while
    /// it is copied (stored with non-temporal stores, `nt`, and large enough for the fused
    /// copy to pay).
    fn crc_unless_fused(&self, payload: &[u8], nt: bool) -> Option<u32> {
        if nt && payload.len() >= FUSED_FROM {
            None
        } else {
            Some(format::payload_crc(self.sb.salt, payload))
        }
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock()
    }

    /// Stores one entry with non-temporal stores, its payload checksum computed while the
    /// payload is copied (one pass over it instead of two); the header, which needs the
    /// checksum, is stored last.
    fn store_entry_fused(&self, claim: &Claim, pos: usize, lsn: Lsn, flags: u32, payload: &[u8]) {
        // The payload bytes up to the next cache-line boundary go with the header, stored last
        // as one run that ends the entry's first line (a line written in two separate partial
        // runs costs more than in one); the rest is copied and checksummed in one pass.
        let head = ((CACHE_LINE - (pos + HEADER_LEN) % CACHE_LINE) % CACHE_LINE).min(payload.len());
        let body = (payload.len() - head) & !(ENTRY_ALIGN - 1);
        let mut pcrc = crate::persist::crc32c_append(self.sb.salt, &payload[..head]);
        let at = pos + HEADER_LEN + head;
        pcrc = self
            .pmem
            .store_claimed_crc(claim, at, &payload[head..head + body], pcrc);
        let rest = &payload[head + body..];
        if !rest.is_empty() {
            pcrc = crate::persist::crc32c_append(pcrc, rest);
            let mut last = [0u8; ENTRY_ALIGN];
            last[..rest.len()].copy_from_slice(rest);
            self.pmem.store_claimed(claim, at + body, &last, true);
        }
        let h = EntryHeader::sealed(payload.len(), lsn, self.epoch(), flags, pcrc);
        // Header and head: at most 24 + 56 bytes, a multiple of 8 (the head ends on a line
        // boundary, or is the whole payload of an entry that fits there, padded).
        let mut first = [0u8; HEADER_LEN + CACHE_LINE];
        first[..HEADER_LEN].copy_from_slice(&h.encode());
        first[HEADER_LEN..HEADER_LEN + head].copy_from_slice(&payload[..head]);
        let first_len = (HEADER_LEN + head).next_multiple_of(ENTRY_ALIGN);
        #[cfg(feature = "mutants")]
        let nt = !crate::mutants::is(crate::mutants::Mutant::FusedHeaderCached);
        #[cfg(not(feature = "mutants"))]
        let nt = true;
        self.pmem.store_claimed(claim, pos, &first[..first_len], nt);
    }

    /// Reserves, stores (non-temporal stores if `nt`), persists and publishes `payloads`
    /// entry by entry; returns their LSNs. `crcs` holds each payload's checksum, or `None` for
    /// a payload to be checksummed while it is stored ([`Log::crc_unless_fused`] with the same
    /// `nt`); `total` is the bytes of all entries on media.
    fn append_entries(
        &self,
        payloads: &[&[u8]],
        crcs: &[Option<u32>],
        total: usize,
        nt: bool,
    ) -> Result<Range<Lsn>> {
        let salt = self.sb.salt;
        self.reserve_and_store(payloads, total, nt, |claim, first, nt| {
            let epoch = self.epoch();
            let mut pos = claim.start();
            for (i, (payload, &pcrc)) in payloads.iter().zip(crcs).enumerate() {
                let lsn = first + i as u64;
                let flags = batch_flags(i, payloads.len());
                #[cfg(feature = "mutants")]
                let flags = if crate::mutants::is(crate::mutants::Mutant::LargeBatchNoContinues) {
                    0
                } else {
                    flags
                };
                match pcrc {
                    None if nt => self.store_entry_fused(claim, pos, lsn, flags, payload),
                    _ => {
                        let pcrc = pcrc.unwrap_or_else(|| format::payload_crc(salt, payload));
                        let h = EntryHeader::sealed(payload.len(), lsn, epoch, flags, pcrc);
                        self.store_entry(claim, pos, &h, payload, nt)
                    }
                }
                pos += format::entry_len(payload.len());
            }
        })
    }

    /// Reserves room for entries of the lengths of `payloads` (`total` bytes on media), has
    /// `store(claim, first_lsn, nt)` store them (with non-temporal stores if `nt`), then
    /// persists and publishes them. If `store` panics, the reservation is filled with padding
    /// ([`Abandoned`]).
    fn reserve_and_store(
        &self,
        payloads: &[&[u8]],
        total: usize,
        nt: bool,
        store: impl FnOnce(&Claim, Lsn, bool),
    ) -> Result<Range<Lsn>> {
        let resv = self.reserve(payloads, total)?;
        let first = resv.first;
        let mut guard = Abandoned {
            log: self,
            resv: &resv,
            payloads,
            nt,
            done: false,
        };
        #[cfg(feature = "mutants")]
        if crate::mutants::take_panic_before_stores() {
            panic!("mutant: appender panics before storing its entries");
        }
        store(&resv.claim, first, nt);
        guard.done = true;
        self.complete(&resv, nt)?;
        Ok(first..first + payloads.len() as u64)
    }

    /// Stores one encoded entry at `pos`: header, payload, zero padding to 8 bytes. Small
    /// entries are assembled on the stack and stored with one copy (for non-temporal stores
    /// that means whole runs of a line instead of several partial writes).
    #[inline]
    fn store_entry(&self, claim: &Claim, pos: usize, h: &EntryHeader, payload: &[u8], nt: bool) {
        let header = h.encode();
        let len = h.entry_len();
        if len <= 128 {
            // (Size classes, so that a small entry zeroes little more stack than it needs.)
            return self.store_small::<128>(claim, pos, &header, payload, len, nt);
        }
        if len <= 320 {
            return self.store_small::<320>(claim, pos, &header, payload, len, nt);
        }
        if len <= 512 {
            return self.store_small::<512>(claim, pos, &header, payload, len, nt);
        }
        let body = payload.len() & !(ENTRY_ALIGN - 1);
        let rest = payload.len() - body;
        let pad = len - HEADER_LEN - payload.len();
        if nt {
            // Non-temporal stores need 8-byte units: the last partial word is built here.
            self.pmem.store_claimed(claim, pos, &header, true);
            self.pmem
                .store_claimed(claim, pos + HEADER_LEN, &payload[..body], true);
            if rest > 0 {
                let mut last = [0u8; ENTRY_ALIGN];
                last[..rest].copy_from_slice(&payload[body..]);
                self.pmem
                    .store_claimed(claim, pos + HEADER_LEN + body, &last, true);
            }
        } else {
            // (One write where stores are writes: msync mode on a disk. No empty part: see
            // `Media::store_parts`.)
            let pad = &[0u8; ENTRY_ALIGN][..pad];
            let parts: &[&[u8]] = if pad.is_empty() {
                &[&header, payload]
            } else {
                &[&header, payload, pad]
            };
            self.pmem.store_claimed_parts(claim, pos, parts);
        }
    }

    /// Assembles an entry of `len <= N` bytes on the stack and stores it with one copy.
    #[inline(always)]
    fn store_small<const N: usize>(
        &self,
        claim: &Claim,
        pos: usize,
        header: &[u8; HEADER_LEN],
        payload: &[u8],
        len: usize,
        nt: bool,
    ) {
        let mut buf = [0u8; N];
        buf[..HEADER_LEN].copy_from_slice(header);
        buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        self.pmem.store_claimed(claim, pos, &buf[..len], nt);
    }

    /// The persistence barrier of one reservation `claim`: write back the lines it stored
    /// cached (all of them, or with non-temporal stores its partly covered edge lines if
    /// `Pmem::edges_cached`, `Claim::edges`), and the end marker's line unless that covered
    /// it, then fence.
    #[inline]
    pub(crate) fn barrier(&self, claim: &Claim, nt: bool, marker: bool) -> Result<()> {
        let (start, len) = (claim.start(), claim.len());
        #[cfg(feature = "mutants")]
        if let Some(r) = crate::mutants::barrier(&self.pmem, start, len, nt) {
            return r.map_err(|e| Error::io(&self.name, "drain", e));
        }
        let end = start + len;
        let edges = nt && self.pmem.edges_cached();
        if !nt {
            self.pmem.flush(start, len);
        } else if edges {
            #[cfg(feature = "mutants")]
            let write_back = !crate::mutants::is(crate::mutants::Mutant::NtEdgeNoFlush);
            #[cfg(not(feature = "mutants"))]
            let write_back = true;
            let (first, last) = claim.edges();
            for edge in [first, last] {
                if write_back && !edge.is_empty() {
                    self.pmem.flush(edge.start, edge.len());
                }
            }
        }
        // The marker is a cached store, made when the bytes were reserved, so before these
        // write-backs: they cover it when it lies in the claim's last line (the entries end
        // inside a line, and that line was stored cached); otherwise its line needs one of
        // its own.
        if marker && (end.is_multiple_of(CACHE_LINE) || (nt && !edges)) {
            self.pmem.flush(end, ENTRY_ALIGN);
        }
        self.barrier_drain()
    }

    #[inline]
    pub(crate) fn barrier_drain(&self) -> Result<()> {
        self.pmem
            .drain()
            .map_err(|e| Error::io(&self.name, "drain", e))
    }
}

/// A reservation being filled. If its thread panics before the entries are stored, dropping
/// it fills the reserved bytes with padding entries (flag `PAD`, zero payloads) that take the
/// reserved LSNs, and completes the ticket, so that later appends are not blocked forever and
/// recovery does not stop at garbage.
struct Abandoned<'a, M: Media> {
    log: &'a Log<M>,
    resv: &'a Resv,
    payloads: &'a [&'a [u8]],
    nt: bool,
    done: bool,
}

impl<M: Media> Drop for Abandoned<'_, M> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let log = self.log;
        #[cfg(feature = "mutants")]
        let pads = !crate::mutants::is(crate::mutants::Mutant::AbandonedNoPad);
        #[cfg(not(feature = "mutants"))]
        let pads = true;
        if pads {
            log.store_padding(&self.resv.claim, self.resv.first, self.payloads, self.nt);
        }
        tracing::warn!(
            path = %log.name.display(),
            ticket = self.resv.ticket,
            first_lsn = self.resv.first,
            "daxlog: append abandoned; its LSNs hold padding"
        );
        #[cfg(loom)]
        if crate::sync::mutants::active(crate::sync::mutants::Mutant::AbandonedNotCompleted) {
            return;
        }
        let _ = log.complete(self.resv, self.nt);
    }
}

/// The flags of entry `i` of a batch of `n`: all but the last continue the batch.
fn batch_flags(i: usize, n: usize) -> u32 {
    #[cfg(feature = "mutants")]
    if crate::mutants::is(crate::mutants::Mutant::BatchNoContinues) {
        return 0;
    }
    if i + 1 < n {
        FLAG_CONTINUES
    } else {
        0
    }
}

/// At most this many padding entries go in one reservation of [`Log::append_padding`].
const PAD_CHUNK: usize = BATCH_BUF / HEADER_LEN;

impl<M: Media> Log<M> {
    /// Fills the reservation of `claim`, made for entries of the lengths of `payloads` from
    /// LSN `first` on, with padding entries of the same lengths (zero payloads, flag `PAD`)
    /// that take its LSNs.
    fn store_padding(&self, claim: &Claim, first: Lsn, payloads: &[&[u8]], nt: bool) {
        let epoch = self.epoch();
        let mut pos = claim.start();
        let zeros = vec![0u8; payloads.iter().map(|p| p.len()).max().unwrap_or(0)];
        for (i, p) in payloads.iter().enumerate() {
            let flags = FLAG_PAD
                | if i + 1 < payloads.len() {
                    FLAG_CONTINUES
                } else {
                    0
                };
            let body = &zeros[..p.len()];
            let pcrc = format::payload_crc(self.sb.salt, body);
            let h = EntryHeader::sealed(p.len(), first + i as u64, epoch, flags, pcrc);
            self.store_entry(claim, pos, &h, body, nt);
            pos += h.entry_len();
        }
    }

    /// Takes the next `count` LSNs with padding entries (24 bytes each on media, no payload),
    /// which readers skip: [`Log::read`] returns `None` for them and iterators step over
    /// them, while [`Log::len`] counts them. For building a log that keeps another log's LSNs
    /// across a hole — a salvaged copy of a damaged log (`daxlog check --salvage`), a replica
    /// whose source lost entries — without renumbering what follows.
    ///
    /// Returns the LSNs taken. Costs one barrier per 170 entries; each such group is durable
    /// all or nothing, like a batch. On [`Error::Full`] the groups already appended stay.
    /// Meant for a log nobody else appends to meanwhile: other appends could fall between the
    /// groups of a large `count`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let log = daxlog::Log::create(dir.path().join("l"), &daxlog::Options::new().capacity(1 << 20)).unwrap();
    /// log.append(b"entry 1")?;
    /// assert_eq!(log.append_padding(3)?, 2..5); // LSNs 2, 3 and 4 were lost
    /// assert_eq!(log.append(b"entry 5")?, 5);
    /// assert!(log.read(3).is_none());
    /// let lsns: Vec<u64> = log.iter().map(|e| e.lsn).collect();
    /// assert_eq!(lsns, [1, 5]);
    /// # Ok::<(), daxlog::Error>(())
    /// ```
    pub fn append_padding(&self, count: u64) -> Result<Range<Lsn>> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.name.clone(),
            });
        }
        let mut taken: Option<Range<Lsn>> = None;
        let mut left = count;
        while left > 0 {
            let n = (left as usize).min(PAD_CHUNK);
            let got = self.pad_reservation(n)?;
            taken = Some(match taken {
                Some(t) => t.start..got.end,
                None => got,
            });
            left -= n as u64;
        }
        Ok(taken.unwrap_or_else(|| {
            let next = self.next_lsn();
            next..next
        }))
    }

    /// At a writable open, before any append: takes the next `count` LSNs, which the last
    /// writer published and the log no longer holds, with padding entries; returns how many it
    /// took (fewer where the log has no room left for one more).
    ///
    /// One entry per reservation, each durable before the next is stored, so that what a
    /// power failure leaves of them is always a prefix: never a padding entry past one that
    /// is missing, which recovery would take for an acknowledged entry past damage (their LSNs
    /// lie below the published word). Their publications leave the reader area's words as
    /// they are (`holding_words`): until the last is durable, the word still names every LSN
    /// the last writer gave out, so that an open after a power failure meanwhile finds the
    /// rest missing and pads them. The caller then publishes the word.
    pub(crate) fn pad_lost(&self, count: u64) -> Result<u64> {
        self.holding_words
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut taken = 0;
        let r = loop {
            if taken == count {
                break Ok(taken);
            }
            match self.pad_reservation(1) {
                Ok(_) => taken += 1,
                Err(Error::Full { .. }) => break Ok(taken),
                Err(e) => break Err(e),
            }
        };
        self.holding_words
            .store(false, std::sync::atomic::Ordering::Relaxed);
        r
    }

    /// One reservation of `n` padding entries (1 to [`PAD_CHUNK`]): reserved, stored, made
    /// durable and published; their LSNs.
    fn pad_reservation(&self, n: usize) -> Result<Range<Lsn>> {
        const EMPTY: [&[u8]; PAD_CHUNK] = [&[]; PAD_CHUNK];
        let payloads = &EMPTY[..n];
        let total = n * HEADER_LEN;
        let nt = total >= self.nt_threshold;
        self.reserve_and_store(payloads, total, nt, |claim, first, nt| {
            self.store_padding(claim, first, payloads, nt)
        })
    }
}
