//! How a Raft entry is encoded as the payload of its daxlog entry in `log.dax`.
//!
//! A payload starts with a one-byte format tag:
//!
//! | first byte | encoding |
//! |---|---|
//! | `0x01` ([`POSTCARD_V1`]) | the entry in [postcard] 1.x (serde), after the tag |
//! | `b'{'` (`0x7b`, [`LEGACY_JSON`]) | the whole payload is the entry in serde_json (written by earlier versions; no tag) |
//! | anything else | refused: [`DaxError::UnknownEncoding`] |
//!
//! New entries are always written with [`POSTCARD_V1`]; entries written before it existed are
//! serde_json documents, which begin with `{` (an entry is a struct, and serde_json writes no
//! leading whitespace), so a log may hold both, and is read entry by entry. Nothing is ever
//! rewritten.
//!
//! postcard is not self-describing: it writes the fields of a struct in their order, without
//! names, and the variants of an enum by their position. So a type stored in the log may gain
//! enum variants at the end only; adding, removing or reordering fields, or inserting a
//! variant before others, changes the encoding of entries already written, and needs a new
//! tag. serde attributes that need a self-describing format (`flatten`, `untagged`,
//! `skip_serializing_if`, `deserialize_any`) are not supported; openraft's `Entry`,
//! `EntryPayload`, `LogId` and `Membership` use none of them, and the crate's tests check that
//! every payload kind round-trips.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::files::DaxError;

/// Format tag of an entry encoded with postcard 1.x (the tag, then postcard's bytes).
pub const POSTCARD_V1: u8 = 0x01;

/// First byte of an entry written by earlier versions: a serde_json document, untagged.
pub const LEGACY_JSON: u8 = b'{';

/// Encodes `value` for `log.dax`: [`POSTCARD_V1`], then postcard's encoding of it. The
/// buffer is sized first (a pass that only counts), so it is allocated once.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, DaxError> {
    let mut out = Vec::with_capacity(encoded_len(value)?);
    out.push(POSTCARD_V1);
    Ok(postcard::to_extend(value, out)?)
}

/// The length of [`encode`]'s output for `value`, computed without building it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, DaxError> {
    let body = postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())?;
    Ok(1 + body)
}

/// Decodes a payload of `log.dax`, in whichever encoding its first byte names.
///
/// An empty payload, a payload with an unknown first byte ([`DaxError::UnknownEncoding`]), a
/// truncated or malformed body, and bytes left over after a postcard body are errors.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DaxError> {
    match payload.first() {
        Some(&POSTCARD_V1) => {
            let (value, rest) = postcard::take_from_bytes(&payload[1..])?;
            if !rest.is_empty() {
                return Err(DaxError::TrailingBytes {
                    trailing: rest.len(),
                });
            }
            Ok(value)
        }
        Some(&LEGACY_JSON) => Ok(serde_json::from_slice(payload)?),
        Some(&tag) => Err(DaxError::UnknownEncoding { tag }),
        None => Err(DaxError::EmptyPayload),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership};

    use super::*;
    use crate::{Request, TypeConfig};

    fn lid(term: u64, node: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry {
            log_id: lid(3, 2, index),
            payload,
        }
    }

    /// One entry of every payload kind the journal writes, with small and large ids.
    fn every_kind() -> Vec<Entry<TypeConfig>> {
        let joint = Membership::new(
            vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([2, 3, 4])],
            BTreeMap::from([
                (1, BasicNode::new("10.0.0.1:7000")),
                (2, BasicNode::new("10.0.0.2:7000")),
                (3, BasicNode::new("")),
                (4, BasicNode::new("node-4")),
                (9, BasicNode::new("a learner")),
            ]),
        );
        let simple = Membership::new(vec![BTreeSet::from([u64::MAX])], ());
        vec![
            entry(0, EntryPayload::Blank),
            entry(
                1,
                EntryPayload::Normal(Request::Set {
                    key: "k".into(),
                    value: "v".repeat(64),
                }),
            ),
            entry(
                2,
                EntryPayload::Normal(Request::Set {
                    key: String::new(),
                    value: "é\u{0}\"{}".into(),
                }),
            ),
            entry(
                3,
                EntryPayload::Normal(Request::Delete { key: "gone".into() }),
            ),
            entry(4, EntryPayload::Membership(joint)),
            entry(5, EntryPayload::Membership(simple)),
            Entry {
                log_id: lid(u64::MAX, u64::MAX, u64::MAX),
                payload: EntryPayload::Blank,
            },
        ]
    }

    #[test]
    fn every_payload_kind_round_trips() {
        for e in every_kind() {
            let bytes = encode(&e).unwrap();
            assert_eq!(bytes[0], POSTCARD_V1);
            assert_eq!(encoded_len(&e).unwrap(), bytes.len());
            let back: Entry<TypeConfig> = decode(&bytes).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn legacy_json_entries_decode() {
        for e in every_kind() {
            let json = serde_json::to_vec(&e).unwrap();
            assert_eq!(json[0], LEGACY_JSON);
            let back: Entry<TypeConfig> = decode(&json).unwrap();
            assert_eq!(back, e);
        }
        // As earlier versions wrote it, byte for byte.
        let written = br#"{"log_id":{"leader_id":{"term":1,"node_id":1},"index":7},"payload":{"Normal":{"Set":{"key":"k7","value":"v"}}}}"#;
        let back: Entry<TypeConfig> = decode(written).unwrap();
        assert_eq!(
            back,
            Entry {
                log_id: lid(1, 1, 7),
                payload: EntryPayload::Normal(Request::Set {
                    key: "k7".into(),
                    value: "v".into()
                })
            }
        );
    }

    #[test]
    fn an_unknown_tag_is_a_typed_error() {
        let mut bytes = encode(&entry(1, EntryPayload::Blank)).unwrap();
        for tag in [0x00, 0x02, 0x7a, 0xff] {
            bytes[0] = tag;
            let err = decode::<Entry<TypeConfig>>(&bytes).unwrap_err();
            assert!(
                matches!(err, DaxError::UnknownEncoding { tag: t } if t == tag),
                "{err}"
            );
            assert!(err.to_string().contains(&format!("0x{tag:02x}")), "{err}");
        }
        let err = decode::<Entry<TypeConfig>>(&[]).unwrap_err();
        assert!(matches!(err, DaxError::EmptyPayload), "{err}");
    }

    #[test]
    fn truncated_or_padded_payloads_are_errors() {
        for e in every_kind() {
            let bytes = encode(&e).unwrap();
            for cut in 1..bytes.len() {
                let err = decode::<Entry<TypeConfig>>(&bytes[..cut]).unwrap_err();
                assert!(matches!(err, DaxError::Postcard(_)), "cut at {cut}: {err}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            let err = decode::<Entry<TypeConfig>>(&longer).unwrap_err();
            assert!(
                matches!(err, DaxError::TrailingBytes { trailing: 1 }),
                "{err}"
            );
        }
        // A truncated legacy entry is a JSON error.
        let json = serde_json::to_vec(&entry(1, EntryPayload::Blank)).unwrap();
        let err = decode::<Entry<TypeConfig>>(&json[..json.len() - 1]).unwrap_err();
        assert!(matches!(err, DaxError::Codec(_)), "{err}");
    }

    /// Arbitrary bytes behind the tag give an error or a value, never a panic.
    #[test]
    fn garbage_after_the_tag_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let mut bytes = vec![POSTCARD_V1];
            for _ in 0..len % 97 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.push(x as u8);
            }
            let _ = decode::<Entry<TypeConfig>>(&bytes);
        }
    }
}
