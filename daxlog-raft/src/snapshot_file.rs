//! The example state machine's snapshot file, `snapshot.bin`, and the bytes of its snapshots.
//!
//! A snapshot's data (what a leader sends to a follower, and what the state machine keeps in
//! memory) is the state machine's contents encoded as [`crate::codec`] encodes log entries: a
//! format tag, then postcard. Data from a node of an earlier version is a serde_json document
//! (it begins with `{`), and decodes too.
//!
//! The file holds the snapshot's meta and its data, and a checksum:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `DAXSNAP` and a 0 byte |
//! | 4 | format version, little-endian: [`VERSION`] |
//! | 4 | length `m` of the meta, little-endian |
//! | `m` | the meta ([`crate::codec`]: tag, postcard) |
//! | rest but 4 | the data (as above) |
//! | 4 | CRC-32C of every byte before it, little-endian |
//!
//! Nodes of earlier versions wrote `snapshot.json` instead (one serde_json document: the meta,
//! with the contents' fields beside it); [`crate::KvStateMachine::open`] reads it where no
//! `snapshot.bin` exists, and the first snapshot saved then replaces it.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::files::DaxError;

/// The first bytes of a snapshot file.
pub const MAGIC: [u8; 8] = *b"DAXSNAP\0";

/// The format version this code writes, and the only one it reads.
pub const VERSION: u32 = 1;

/// Bytes before the meta: magic, version, meta length.
const HEADER: usize = 16;

/// The file's bytes for a snapshot with `meta` and `data` (already encoded), in three parts to
/// be written one after the other: the header and meta, `data` itself (not copied), and the
/// checksum.
pub fn encode_parts<M: Serialize>(meta: &M, data: &[u8]) -> Result<(Vec<u8>, [u8; 4]), DaxError> {
    let meta = crate::codec::encode(meta)?;
    let meta_len = u32::try_from(meta.len()).map_err(|_| bad("the meta is over 4 GiB"))?;
    let mut head = Vec::with_capacity(HEADER + meta.len());
    head.extend_from_slice(&MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&meta_len.to_le_bytes());
    head.extend_from_slice(&meta);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head), data);
    Ok((head, crc.to_le_bytes()))
}

/// The meta of a snapshot file's bytes, and its data (still encoded), after checking the
/// magic, the version and the checksum.
pub fn decode<M: DeserializeOwned>(file: &[u8]) -> Result<(M, &[u8]), DaxError> {
    if file.len() < HEADER + 4 || file[..8] != MAGIC {
        return Err(bad("not a snapshot file (no DAXSNAP header)"));
    }
    let version = u32::from_le_bytes(file[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(format!(
            "format version {version}, and this version reads {VERSION} only: the file was \
             written by a newer version, or is damaged"
        )));
    }
    let (body, crc) = file.split_at(file.len() - 4);
    let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(bad(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is damaged"
        )));
    }
    let meta_len = u32::from_le_bytes(body[12..16].try_into().expect("4 bytes")) as usize;
    if meta_len > body.len() - HEADER {
        return Err(bad(format!(
            "meta of {meta_len} bytes in a file of {} bytes",
            file.len()
        )));
    }
    let (meta, data) = body[HEADER..].split_at(meta_len);
    let meta = crate::codec::decode(meta).map_err(|e| bad(format!("its meta: {e}")))?;
    Ok((meta, data))
}

fn bad(reason: impl Into<String>) -> DaxError {
    DaxError::BadSnapshot(reason.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`encode_parts`] as one buffer, as the file holds it.
    fn encode<M: Serialize>(meta: &M, data: &[u8]) -> Result<Vec<u8>, DaxError> {
        let (head, crc) = encode_parts(meta, data)?;
        Ok([&head[..], data, &crc].concat())
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Meta {
        id: String,
        index: Option<u64>,
    }

    fn meta() -> Meta {
        Meta {
            id: "1-2-3".into(),
            index: Some(42),
        }
    }

    #[test]
    fn round_trips_meta_and_data() {
        for data in [&b""[..], b"\x01abc", &[7u8; 5000]] {
            let file = encode(&meta(), data).unwrap();
            assert_eq!(file[..8], MAGIC);
            let (m, d) = decode::<Meta>(&file).unwrap();
            assert_eq!(m, meta());
            assert_eq!(d, data);
        }
    }

    /// Every single-byte change and every truncation is refused with an error, never taken.
    #[test]
    fn damage_is_refused() {
        let file = encode(&meta(), b"\x01some snapshot data").unwrap();
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x20;
            let err = decode::<Meta>(&bad).unwrap_err();
            assert!(matches!(err, DaxError::BadSnapshot(_)), "byte {i}: {err}");
        }
        for len in 0..file.len() {
            assert!(decode::<Meta>(&file[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let mut file = encode(&meta(), b"\x01x").unwrap();
        file[8..12].copy_from_slice(&2u32.to_le_bytes());
        let n = file.len() - 4;
        let crc = crc32c::crc32c(&file[..n]);
        file[n..].copy_from_slice(&crc.to_le_bytes());
        let err = decode::<Meta>(&file).unwrap_err().to_string();
        assert!(err.contains("version 2"), "{err}");
    }
}
