//! The bytes on media: superblock, metadata slots and entries (format version 3).
//!
//! `docs/FORMAT.md` is the specification; this module is its only implementation. All integers
//! are little-endian. Nothing here touches media: these are pure encoders and decoders over byte
//! slices, so that recovery, the simulator and the fuzzers share them.

use crate::Lsn;

/// The format version this build writes. It reads this one and every earlier one
/// ([`OLDEST_VERSION`]); a writable open upgrades an older log to this version.
pub const FORMAT_VERSION: u32 = 3;

/// The oldest format version this build reads. Versions 1 and 2 differ from version 3 only in
/// the reader area of the metadata page: version-1 writers never write it (it holds whatever
/// the media held; recovery reads a version-1 log's published LSN as 0, and the upgrade
/// clears it), and version-2 writers never write the vouched word ([`VOUCHED_OFFSET`]: read
/// as 0 in a version-2 log, and cleared by the upgrade).
pub const OLDEST_VERSION: u32 = 1;

/// The first eight bytes of every daxlog file.
pub const MAGIC: [u8; 8] = *b"DAXLOG\0\x1a";

// ---- File layout -------------------------------------------------------------------------------

/// Offset of the primary superblock.
pub const SB_PRIMARY_OFFSET: usize = 0;
/// Bytes covered by a superblock copy (each copy lives in its own 512-byte sector).
pub const SB_LEN: usize = 64;
/// Offset of the backup superblock, in the second 512-byte sector.
pub const SB_BACKUP_OFFSET: usize = SB_PRIMARY_OFFSET + 512;
/// Offset of metadata slot 0, in the third sector.
pub const SLOT0_OFFSET: usize = SB_BACKUP_OFFSET + 512;
/// Offset of metadata slot 1, in the fourth sector.
pub const SLOT1_OFFSET: usize = SLOT0_OFFSET + 512;
/// Bytes covered by a metadata slot: exactly one cache line.
pub const SLOT_LEN: usize = 64;
/// Offset of the first entry: the metadata area is one 4 KiB page.
pub const DATA_OFFSET: usize = 4096;

// ---- Reader area (version 2; the vouched word version 3) ---------------------------------------
//
// Two cache lines of the metadata page that the writer keeps up to date for readers in other
// processes. They are not persistent structures, but `published` only ever rises over durable
// entries (a suffix truncation makes its lowered value durable before its slot): recovery
// reads it to decide how much of the last session to write back, and as evidence that valid
// entries it finds past a refused entry or a clean end were acknowledged (FORMAT.md section 7,
// rules 2 and 4), and [`vouched`] of it and the word beside it as evidence that an entry it
// cannot read was acknowledged (rule 1). A writable open rewrites them.

/// Offset of the published LSN (8 bytes, in a cache line of its own with the vouched word):
/// the writer stores there, after each publication, the LSN after the last durable entry; 0
/// if no writer ever did. Its low 32 bits are the futex word readers sleep on.
pub const PUBLISHED_OFFSET: usize = 2048;
/// Offset of the vouched word (8 bytes, version 3, in the published LSN's cache line): the
/// complement of the published LSN, stored with it by a writer that makes entries durable
/// with CPU cache flushes; 0 (nothing vouched) from a writer in msync mode, which holds it
/// there, and from one whose media does not keep the reader area. Recovery takes
/// [`vouched`] of the two words: one fault to either cannot raise it.
pub const VOUCHED_OFFSET: usize = PUBLISHED_OFFSET + 8;
/// Bytes of the published LSN and the vouched word together, from [`PUBLISHED_OFFSET`].
pub const READER_WORDS_LEN: usize = VOUCHED_OFFSET + 8 - PUBLISHED_OFFSET;
/// The LSN below which the reader area's two words `published` and `vouched` (as stored at
/// [`PUBLISHED_OFFSET`] and [`VOUCHED_OFFSET`]) say that every entry was acknowledged and made
/// durable by CPU cache flushes: the smaller of the published LSN and the complement of the
/// vouched word, 0 where the vouched word is 0. A flipped bit, or any damage to one of the
/// words, can only lower it; only damage to both, each in the way that matches the other, can
/// raise it.
pub fn vouched(published: u64, word: u64) -> u64 {
    match word {
        0 => 0,
        w => published.min(!w),
    }
}

/// The vouched word that goes with published LSN `lsn` ([`vouched`] of the pair is `lsn`).
pub fn vouched_word(lsn: u64) -> u64 {
    !lsn
}

/// Offset of the count of readers sleeping on the published LSN (4 bytes, a cache line of its
/// own): the writer wakes them only when it is not zero.
pub const SLEEPERS_OFFSET: usize = PUBLISHED_OFFSET + 64;

/// Offset of the count of suffix truncations (8 bytes, a cache line of its own): the writer
/// records each one in the ring below, then increments this count, before it writes the slot.
pub const DELETIONS_OFFSET: usize = SLEEPERS_OFFSET + 64;
/// Offset of the ring of the first deleted LSN of the last [`DELETION_RING`] suffix
/// truncations (8 bytes each; truncation `n` in entry `n % DELETION_RING`).
pub const DELETION_RING_OFFSET: usize = DELETIONS_OFFSET + 8;
/// Entries in the ring of suffix truncations.
pub const DELETION_RING: usize = 64;
const _: () = assert!(DELETION_RING_OFFSET + 8 * DELETION_RING <= DATA_OFFSET);

/// The byte of the file on which readers in other processes hold a shared OFD lock
/// (`F_OFD_SETLK`, `F_RDLCK`), and which whoever would replace, shrink or rewrite the file in
/// place must first lock exclusively (FORMAT.md, "Locks between processes"). Locks on a byte
/// range do not touch its contents.
pub const READER_LOCK_BYTE: u64 = 1;

/// Entries start on multiples of this.
pub const ENTRY_ALIGN: usize = 8;
/// Bytes of an entry header.
pub const HEADER_LEN: usize = 24;
/// Capacities are multiples of this (a page), so mappings and msync ranges stay page-aligned.
pub const CAPACITY_ALIGN: u64 = 4096;
/// The smallest capacity: the metadata page and one data page.
pub const MIN_CAPACITY: u64 = 2 * 4096;
/// The largest capacity: offsets in the format are u64, but the mapping must fit the address
/// space comfortably.
pub const MAX_CAPACITY: u64 = 1 << 46;

/// The first LSN of a new log.
pub const FIRST_LSN: Lsn = 1;

/// No LSN of a valid log lies above this (2^63 + 2^62): a log starts at or below 2^63, and no
/// log appends 2^62 entries. A slot naming a higher LSN is refused as impossible, so that no
/// LSN arithmetic on a crafted file can wrap around.
pub const MAX_LSN: Lsn = (1 << 63) + (1 << 62);

// ---- Entry flags -------------------------------------------------------------------------------

/// The entry belongs to a batch and is not its last entry: it counts only if the batch's last
/// entry (flag clear) is valid too.
pub const FLAG_CONTINUES: u32 = 1 << 0;
/// The entry holds no data: its append was abandoned after its space and LSNs were reserved
/// (the appending thread panicked). Its payload is zero; readers skip it.
pub const FLAG_PAD: u32 = 1 << 1;
/// Flags a version-1 reader understands; any other set bit makes the entry invalid.
pub const KNOWN_FLAGS: u32 = FLAG_CONTINUES | FLAG_PAD;

/// At most this many appends (or batches) are in flight at once; more wait. Recovery may take
/// that many batches after a torn entry for the remains of concurrent appends (FORMAT.md,
/// "Concurrency").
pub const MAX_INFLIGHT: usize = 16;

// ---- Superblock --------------------------------------------------------------------------------
//
//  0      8       12      16             32          40           48     52      56      60    64
//  +------+-------+-------+--------------+-----------+------------+------+-------+-------+-----+
//  |magic |version|sb_len | uuid (16 B)  | capacity  | data_offset| salt | align | 0     | crc |
//  +------+-------+-------+--------------+-----------+------------+------+-------+-------+-----+
//  crc = crc32c over bytes 0..60.

const SB_VERSION: usize = 8;
const SB_SIZE: usize = SB_VERSION + 4;
const SB_UUID: usize = SB_SIZE + 4;
const SB_CAPACITY: usize = SB_UUID + 16;
const SB_DATA_OFFSET: usize = SB_CAPACITY + 8;
const SB_SALT: usize = SB_DATA_OFFSET + 8;
const SB_ALIGN: usize = SB_SALT + 4;
const SB_RESERVED: usize = SB_ALIGN + 4;
const SB_CRC: usize = SB_RESERVED + 4;
const _: () = assert!(SB_CRC + 4 == SB_LEN);

/// The static description of a log, written once at creation (and rewritten by the upgrade of
/// an older format version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The format version of the copy that was read ([`FORMAT_VERSION`] for a new one).
    pub version: u32,
    /// A random identifier of this log, fixed at creation.
    pub uuid: [u8; 16],
    /// Total file size in bytes, metadata page included.
    pub capacity: u64,
    /// Seed of every entry and slot checksum: ties entries to this log (see FORMAT.md).
    pub salt: u32,
}

/// Why a superblock copy was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuperblockError {
    /// The magic number is wrong: not a daxlog file.
    BadMagic,
    /// A daxlog file of another format version.
    Version(u32),
    /// The checksum or a field is wrong.
    Corrupt(&'static str),
}

impl Superblock {
    /// Encodes the superblock into its 64 bytes.
    pub fn encode(&self) -> [u8; SB_LEN] {
        let mut b = [0u8; SB_LEN];
        b[..8].copy_from_slice(&MAGIC);
        put_u32(&mut b, SB_VERSION, self.version);
        put_u32(&mut b, SB_SIZE, SB_LEN as u32);
        b[SB_UUID..SB_UUID + 16].copy_from_slice(&self.uuid);
        put_u64(&mut b, SB_CAPACITY, self.capacity);
        put_u64(&mut b, SB_DATA_OFFSET, DATA_OFFSET as u64);
        put_u32(&mut b, SB_SALT, self.salt);
        put_u32(&mut b, SB_ALIGN, ENTRY_ALIGN as u32);
        let crc = crc32c::crc32c(&b[..SB_CRC]);
        put_u32(&mut b, SB_CRC, crc);
        b
    }

    /// Decodes and validates one superblock copy.
    pub fn decode(b: &[u8]) -> Result<Self, SuperblockError> {
        if b.len() < SB_LEN || b[..8] != MAGIC {
            return Err(SuperblockError::BadMagic);
        }
        let version = get_u32(b, SB_VERSION);
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(SuperblockError::Version(version));
        }
        if get_u32(b, SB_CRC) != crc32c::crc32c(&b[..SB_CRC]) {
            return Err(SuperblockError::Corrupt("checksum mismatch"));
        }
        if get_u32(b, SB_SIZE) as usize != SB_LEN
            || get_u64(b, SB_DATA_OFFSET) != DATA_OFFSET as u64
            || get_u32(b, SB_ALIGN) as usize != ENTRY_ALIGN
            || get_u32(b, SB_RESERVED) != 0
        {
            return Err(SuperblockError::Corrupt("unexpected layout field"));
        }
        let capacity = get_u64(b, SB_CAPACITY);
        if validate_capacity(capacity).is_err() {
            return Err(SuperblockError::Corrupt("impossible capacity"));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[SB_UUID..SB_UUID + 16]);
        Ok(Superblock {
            version,
            uuid,
            capacity,
            salt: get_u32(b, SB_SALT),
        })
    }

    /// The UUID in its usual hyphenated text form.
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// Checks a capacity requested for a new log or found in a superblock.
pub fn validate_capacity(capacity: u64) -> Result<(), &'static str> {
    if capacity < MIN_CAPACITY {
        return Err("smaller than the minimum of 8192 bytes");
    }
    if !capacity.is_multiple_of(CAPACITY_ALIGN) {
        return Err("not a multiple of 4096 bytes");
    }
    if capacity > MAX_CAPACITY {
        return Err("larger than the maximum of 64 TiB");
    }
    Ok(())
}

// ---- Metadata slot -----------------------------------------------------------------------------
//
//  0     8            16         24        32     36     40          48        56    60    64
//  +-----+------------+----------+---------+------+------+-----------+---------+-----+-----+
//  | seq | head_offset| head_lsn | cut_lsn |epoch |flags |hint_offset|hint_lsn | 0   | crc |
//  +-----+------------+----------+---------+------+------+-----------+---------+-----+-----+
//  crc = crc32c seeded with the salt over bytes 0..60. The valid slot with the larger seq wins.

const SLOT_HEAD_OFFSET: usize = 8;
const SLOT_HEAD_LSN: usize = SLOT_HEAD_OFFSET + 8;
const SLOT_CUT_LSN: usize = SLOT_HEAD_LSN + 8;
const SLOT_EPOCH: usize = SLOT_CUT_LSN + 8;
const SLOT_FLAGS: usize = SLOT_EPOCH + 4;
const SLOT_HINT_OFFSET: usize = SLOT_FLAGS + 4;
const SLOT_HINT_LSN: usize = SLOT_HINT_OFFSET + 8;
const SLOT_RESERVED: usize = SLOT_HINT_LSN + 8;
const SLOT_CRC: usize = SLOT_RESERVED + 4;
const _: () = assert!(SLOT_CRC + 4 == SLOT_LEN);

/// The mutable metadata of a log. Two copies alternate so that a torn update leaves the
/// previous one intact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Update counter; the valid slot with the larger value is current. Never 0 when valid.
    pub seq: u64,
    /// Offset of the first entry of the log.
    pub head_offset: u64,
    /// LSN of the first entry of the log.
    pub head_lsn: Lsn,
    /// Entries with an LSN at or above this must carry `epoch`; entries below were validated
    /// by an earlier session (see FORMAT.md, "Epochs").
    pub cut_lsn: Lsn,
    /// The epoch of the writing session.
    pub epoch: u32,
    /// `SLOT_CONCURRENT` or 0.
    pub flags: u32,
    /// A durable entry near the tail where recovery may start its scan (0, 0: none); see
    /// FORMAT.md, "Tail hint".
    pub hint_offset: u64,
    /// LSN of that entry.
    pub hint_lsn: Lsn,
}

/// What [`Slot::current`] found in a metadata page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurrentSlot {
    /// The current slot (`None`: neither copy is valid or one bit off a valid slot).
    pub slot: Option<Slot>,
    /// The offset of a copy that does not decode and is not blank (never written: zeros): a
    /// slot update torn by a crash, or damage.
    pub unreadable: Option<usize>,
    /// That copy is the current slot, one bit off, read corrected.
    pub repaired: bool,
}

/// Slot flag: since `cut_lsn`, appends have overlapped (several reservations in flight), so up
/// to [`MAX_INFLIGHT`] batches may follow a torn entry after a crash.
pub const SLOT_CONCURRENT: u32 = 1;

impl Slot {
    /// Offset of slot `seq % 2`.
    pub fn offset_for(seq: u64) -> usize {
        if seq.is_multiple_of(2) {
            SLOT0_OFFSET
        } else {
            SLOT1_OFFSET
        }
    }

    /// Encodes the slot into its 64 bytes, sealed with the log's salt.
    pub fn encode(&self, salt: u32) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        put_u64(&mut b, 0, self.seq);
        put_u64(&mut b, SLOT_HEAD_OFFSET, self.head_offset);
        put_u64(&mut b, SLOT_HEAD_LSN, self.head_lsn);
        put_u64(&mut b, SLOT_CUT_LSN, self.cut_lsn);
        put_u32(&mut b, SLOT_EPOCH, self.epoch);
        put_u32(&mut b, SLOT_FLAGS, self.flags);
        put_u64(&mut b, SLOT_HINT_OFFSET, self.hint_offset);
        put_u64(&mut b, SLOT_HINT_LSN, self.hint_lsn);
        let crc = crc32c::crc32c_append(salt, &b[..SLOT_CRC]);
        put_u32(&mut b, SLOT_CRC, crc);
        b
    }

    /// Decodes one slot; `None` if it was never written, is torn, or holds impossible values.
    pub fn decode(b: &[u8], salt: u32, capacity: u64) -> Option<Self> {
        if b.len() < SLOT_LEN || get_u32(b, SLOT_CRC) != crc32c::crc32c_append(salt, &b[..SLOT_CRC])
        {
            return None;
        }
        let s = Slot {
            seq: get_u64(b, 0),
            head_offset: get_u64(b, SLOT_HEAD_OFFSET),
            head_lsn: get_u64(b, SLOT_HEAD_LSN),
            cut_lsn: get_u64(b, SLOT_CUT_LSN),
            epoch: get_u32(b, SLOT_EPOCH),
            flags: get_u32(b, SLOT_FLAGS),
            hint_offset: get_u64(b, SLOT_HINT_OFFSET),
            hint_lsn: get_u64(b, SLOT_HINT_LSN),
        };
        let hint_sane = (s.hint_offset == 0 && s.hint_lsn == 0)
            || (s.hint_offset >= DATA_OFFSET as u64
                && s.hint_offset < capacity
                && s.hint_offset.is_multiple_of(ENTRY_ALIGN as u64)
                && s.hint_lsn >= FIRST_LSN);
        let sane = s.seq != 0
            && s.flags & !SLOT_CONCURRENT == 0
            && hint_sane
            && get_u32(b, SLOT_RESERVED) == 0
            && s.head_offset >= DATA_OFFSET as u64
            && s.head_offset < capacity
            && s.head_offset.is_multiple_of(ENTRY_ALIGN as u64)
            && s.head_lsn >= FIRST_LSN
            && s.cut_lsn >= s.head_lsn
            && s.cut_lsn <= MAX_LSN
            && s.hint_lsn <= MAX_LSN;
        sane.then_some(s)
    }

    /// The slot `b` holds if exactly one of its bits is wrong: a slot that does not decode
    /// but does with one bit flipped, and with no other. (A slot write torn by a crash can be
    /// one bit off too: the slot written over often differs from the new one in a single bit
    /// of a word that did not reach media: recovery takes such a slot only where it is newer
    /// than the valid copy, the slot that update was writing.)
    pub fn decode_one_bit_off(b: &[u8], salt: u32, capacity: u64) -> Option<Self> {
        if b.len() < SLOT_LEN || Self::decode(b, salt, capacity).is_some() {
            return None;
        }
        let mut copy = [0u8; SLOT_LEN];
        copy.copy_from_slice(&b[..SLOT_LEN]);
        let mut found = None;
        for bit in 0..SLOT_LEN * 8 {
            copy[bit / 8] ^= 1 << (bit % 8);
            if let Some(s) = Self::decode(&copy, salt, capacity) {
                if found.is_some() {
                    return None;
                }
                found = Some(s);
            }
            copy[bit / 8] ^= 1 << (bit % 8);
        }
        found
    }

    /// The current slot of the metadata page `meta` (its first [`DATA_OFFSET`] bytes, or
    /// more): the valid copy with the larger `seq`, or a copy that does not decode but is
    /// exactly one bit off a slot ([`Slot::decode_one_bit_off`]) at the position its `seq`
    /// writes to, with a `seq` larger than the valid copy's (or no valid copy): that slot,
    /// corrected. FORMAT.md section 4 says why a torn update taken so is sound.
    pub fn current(meta: &[u8], salt: u32, capacity: u64) -> CurrentSlot {
        let decoded =
            [SLOT0_OFFSET, SLOT1_OFFSET].map(|off| Slot::decode(&meta[off..], salt, capacity));
        Slot::current_decoded(meta, salt, capacity, decoded)
    }

    /// [`Slot::current`], given the two copies of `meta` already decoded (copy 0, copy 1).
    pub(crate) fn current_decoded(
        meta: &[u8],
        salt: u32,
        capacity: u64,
        decoded: [Option<Slot>; 2],
    ) -> CurrentSlot {
        let decoded = [(SLOT0_OFFSET, decoded[0]), (SLOT1_OFFSET, decoded[1])];
        let valid = Slot::pick(decoded[0].1, decoded[1].1);
        let mut current = CurrentSlot {
            slot: valid,
            unreadable: None,
            repaired: false,
        };
        for (off, d) in decoded {
            if d.is_some() || meta[off..off + SLOT_LEN].iter().all(|&b| b == 0) {
                continue;
            }
            if !current.repaired {
                current.unreadable = Some(off);
            }
            // (Both copies one bit off, neither valid: the newer. A writable open rewrites a
            // corrected slot before it writes over the other copy, but a read-only open does
            // not, and damage may take the rewrite's copy too.)
            let fixed = Slot::decode_one_bit_off(&meta[off..], salt, capacity)
                .filter(|s| Slot::offset_for(s.seq) == off)
                .filter(|s| current.slot.is_none_or(|c| s.seq > c.seq));
            if fixed.is_some() {
                current = CurrentSlot {
                    slot: fixed,
                    unreadable: Some(off),
                    repaired: true,
                };
            }
        }
        current
    }

    /// Picks the current slot from the two copies.
    pub fn pick(a: Option<Slot>, b: Option<Slot>) -> Option<Slot> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

// ---- Entry -------------------------------------------------------------------------------------
//
//  0      4      8              16       20       24
//  +------+------+--------------+--------+--------+---------------------+---------+
//  | crc  | len  | lsn          | epoch  | flags  | payload (len bytes) | 0 pad   |
//  +------+------+--------------+--------+--------+---------------------+---------+
//  crc = crc32c seeded with the salt over the payload, then over header bytes 4..24.
//  The entry occupies align_up(24 + len, 8) bytes; the padding is zero and not checksummed.

const H_LEN: usize = 4;
const H_LSN: usize = H_LEN + 4;
const H_EPOCH: usize = H_LSN + 8;
const H_FLAGS: usize = H_EPOCH + 4;
const _: () = assert!(H_FLAGS + 4 == HEADER_LEN);

/// The decoded header of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    /// The stored checksum.
    pub crc: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Log sequence number.
    pub lsn: Lsn,
    /// Epoch of the session that wrote the entry.
    pub epoch: u32,
    /// Flag bits (`FLAG_*`).
    pub flags: u32,
}

impl EntryHeader {
    /// Reads a header from the first 24 bytes of `b`.
    #[inline]
    pub fn decode(b: &[u8]) -> Self {
        EntryHeader {
            crc: get_u32(b, 0),
            len: get_u32(b, H_LEN),
            lsn: get_u64(b, H_LSN),
            epoch: get_u32(b, H_EPOCH),
            flags: get_u32(b, H_FLAGS),
        }
    }

    /// The header of an entry of `len` payload bytes whose [`payload_crc`] is `payload_crc`,
    /// with its checksum filled in.
    #[inline]
    pub fn sealed(len: usize, lsn: Lsn, epoch: u32, flags: u32, payload_crc: u32) -> Self {
        let mut h = EntryHeader {
            crc: 0,
            len: len as u32,
            lsn,
            epoch,
            flags,
        };
        h.crc = entry_crc(payload_crc, &h);
        h
    }

    /// Encodes the header; `crc` must already be [`entry_crc`] of the payload and this header.
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        put_u32(&mut b, 0, self.crc);
        put_u32(&mut b, H_LEN, self.len);
        put_u64(&mut b, H_LSN, self.lsn);
        put_u32(&mut b, H_EPOCH, self.epoch);
        put_u32(&mut b, H_FLAGS, self.flags);
        b
    }

    /// Bytes the entry occupies on media, padding included.
    #[inline]
    pub fn entry_len(&self) -> usize {
        entry_len(self.len as usize)
    }
}

/// Bytes an entry with a `payload_len`-byte payload occupies on media.
#[inline]
pub const fn entry_len(payload_len: usize) -> usize {
    (HEADER_LEN + payload_len + ENTRY_ALIGN - 1) & !(ENTRY_ALIGN - 1)
}

/// The checksum of a payload alone, the first half of [`entry_crc`]; it depends on nothing the
/// writer assigns, so it can be computed before the LSN is known.
#[inline]
pub fn payload_crc(salt: u32, payload: &[u8]) -> u32 {
    crate::persist::crc32c_append(salt, payload)
}

/// Completes a [`payload_crc`] with the header fields after the checksum itself.
#[inline]
pub fn entry_crc(payload_crc: u32, header: &EntryHeader) -> u32 {
    // Bytes 4..24 of the header: len, lsn, then epoch and flags as one little-endian word.
    crate::persist::crc32c_header(
        payload_crc,
        header.len,
        header.lsn,
        header.epoch as u64 | (header.flags as u64) << 32,
    )
}

/// An entry encoded exactly as the engine writes it (header, payload, zero padding): for tools
/// and tests that build log images by hand.
pub fn encode_entry(salt: u32, epoch: u32, lsn: Lsn, flags: u32, payload: &[u8]) -> Vec<u8> {
    let h = EntryHeader::sealed(payload.len(), lsn, epoch, flags, payload_crc(salt, payload));
    let mut v = h.encode().to_vec();
    v.extend_from_slice(payload);
    v.resize(entry_len(payload.len()), 0);
    v
}

// ---- Little-endian helpers ---------------------------------------------------------------------

#[inline]
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[inline]
fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline]
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trip_and_damage() {
        let sb = Superblock {
            version: FORMAT_VERSION,
            uuid: [7; 16],
            capacity: 1 << 20,
            salt: 0xdead_beef,
        };
        let b = sb.encode();
        assert_eq!(Superblock::decode(&b), Ok(sb));
        for i in 0..SB_LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert!(Superblock::decode(&d).is_err(), "flip at byte {i} accepted");
        }
        let mut v = b;
        v[SB_VERSION] = 4;
        assert_eq!(Superblock::decode(&v), Err(SuperblockError::Version(4)));
        // Versions 1 and 2 are read (their checksum must be right for that version).
        for version in [1, 2] {
            let old = Superblock { version, ..sb };
            assert_eq!(Superblock::decode(&old.encode()), Ok(old));
        }
    }

    #[test]
    fn one_fault_to_the_reader_area_cannot_raise_what_it_vouches() {
        for lsn in [0u64, 1, 5, 1 << 20, (1 << 40) + 12345] {
            let (a, b) = (lsn, vouched_word(lsn));
            assert_eq!(vouched(a, b), lsn);
            for bit in 0..64 {
                assert!(
                    vouched(a ^ (1 << bit), b) <= lsn,
                    "published bit {bit} of {lsn}"
                );
                assert!(
                    vouched(a, b ^ (1 << bit)) <= lsn,
                    "vouched bit {bit} of {lsn}"
                );
            }
            for junk in [0, u64::MAX, 0x5555_5555_5555_5555] {
                assert!(vouched(a, junk) <= lsn && vouched(junk, b) <= lsn);
            }
        }
        // Nothing vouched: a writer in msync mode, or a log no version-3 writer opened.
        assert_eq!(vouched(77, 0), 0);
    }

    #[test]
    fn slot_round_trip_and_damage() {
        let s = Slot {
            seq: 3,
            head_offset: DATA_OFFSET as u64,
            head_lsn: 1,
            cut_lsn: 10,
            epoch: 99,
            flags: SLOT_CONCURRENT,
            hint_offset: 8192,
            hint_lsn: 7,
        };
        let b = s.encode(5);
        assert_eq!(Slot::decode(&b, 5, 1 << 20), Some(s));
        assert_eq!(Slot::decode(&b, 6, 1 << 20), None, "other salt accepted");
        for i in 0..SLOT_LEN {
            let mut d = b;
            d[i] ^= 1;
            assert_eq!(Slot::decode(&d, 5, 1 << 20), None, "flip at byte {i}");
        }
        assert_eq!(Slot::decode(&[0; SLOT_LEN], 0, 1 << 20), None);
    }

    #[test]
    fn the_entry_checksum_covers_every_header_field_and_payload_byte() {
        let salt = 0x1234_5678;
        let payload = b"twelve bytes";
        let base = EntryHeader::sealed(
            payload.len(),
            7,
            3,
            FLAG_CONTINUES,
            payload_crc(salt, payload),
        );
        let crc_of = |h: &EntryHeader, p: &[u8]| entry_crc(payload_crc(salt, p), h);
        assert_eq!(crc_of(&base, payload), base.crc);
        // Each field changed alone, by one bit of each of its bytes: another checksum.
        for bit in 0..32 {
            let mut h = base;
            h.len ^= 1 << bit;
            assert_ne!(crc_of(&h, payload), base.crc, "len bit {bit}");
            let mut h = base;
            h.epoch ^= 1 << bit;
            assert_ne!(crc_of(&h, payload), base.crc, "epoch bit {bit}");
            let mut h = base;
            h.flags ^= 1 << bit;
            assert_ne!(crc_of(&h, payload), base.crc, "flags bit {bit}");
        }
        for bit in 0..64 {
            let mut h = base;
            h.lsn ^= 1 << bit;
            assert_ne!(crc_of(&h, payload), base.crc, "lsn bit {bit}");
        }
        for i in 0..payload.len() {
            let mut p = *payload;
            p[i] ^= 0x01;
            assert_ne!(crc_of(&base, &p), base.crc, "payload byte {i}");
        }
        // And the salt: a log's entries do not check in another log.
        assert_ne!(entry_crc(payload_crc(salt ^ 1, payload), &base), base.crc);
    }

    #[test]
    fn entry_len_rounds_to_eight() {
        assert_eq!(entry_len(0), 24);
        assert_eq!(entry_len(1), 32);
        assert_eq!(entry_len(8), 32);
        assert_eq!(entry_len(9), 40);
    }
}
