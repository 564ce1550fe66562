//! Serde for byte strings: lowercase hexadecimal in human-readable formats (serde_json: the Raft
//! log's entries and the snapshot file), raw bytes in binary formats (postcard, between peers).
//! Deserializing from JSON also accepts an array of numbers.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        s.serialize_bytes(bytes)
    }
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("bytes, a hexadecimal string or an array of bytes")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            hex::decode(v).map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    if d.is_human_readable() {
        d.deserialize_any(BytesVisitor)
    } else {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// A journal record `(index, data)` with `data` encoded as above.
#[derive(Serialize, Deserialize)]
struct Record(u64, #[serde(with = "self")] Vec<u8>);

/// Serde for a journal's records (see [`crate::journal::Journal`]), `(u64, Vec<u8>)` each, with
/// every record's data encoded as above.
pub(crate) mod journal {
    use super::*;

    /// Serializes `len` records given one by one.
    pub(crate) fn serialize_records<'a, S: Serializer>(
        len: usize,
        records: impl Iterator<Item = &'a (u64, Vec<u8>)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(len))?;
        for (i, d) in records {
            seq.serialize_element(&RecordRef(*i, d))?;
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(u64, Vec<u8>)>, D::Error> {
        let records = Vec::<Record>::deserialize(d)?;
        Ok(records.into_iter().map(|Record(i, d)| (i, d)).collect())
    }

    struct RecordRef<'a>(u64, &'a [u8]);

    impl Serialize for RecordRef<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&self.0)?;
            t.serialize_element(&BytesRef(self.1))?;
            t.end()
        }
    }
}

/// A borrowed byte string that serializes as above.
struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, s)
    }
}

/// Serde for a list of byte strings, `Vec<Vec<u8>>`, each encoded as above.
pub(crate) mod many {
    use super::*;

    /// One byte string of the list.
    #[derive(Serialize, Deserialize)]
    struct Item(#[serde(with = "super")] Vec<u8>);

    pub(crate) fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(items.iter().map(|i| BytesRef(i)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let items = Vec::<Item>::deserialize(d)?;
        Ok(items.into_iter().map(|Item(i)| i).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct T {
        #[serde(with = "super")]
        data: Vec<u8>,
        journal: crate::journal::Journal,
        #[serde(default, with = "super::many")]
        items: Vec<Vec<u8>>,
    }

    #[test]
    fn hex_in_json_bytes_in_postcard() {
        let t = T {
            data: vec![0, 1, 0xab, 0xff],
            journal: vec![(3, b"x".to_vec()), (4, vec![])].into(),
            items: vec![b"ab".to_vec(), vec![], vec![0xff]],
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"data":"0001abff","journal":[[3,"78"],[4,""]],"items":["6162","","ff"]}"#
        );
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        let bin = postcard::to_stdvec(&t).unwrap();
        assert_eq!(&bin[..5], &[4, 0, 1, 0xab, 0xff]);
        assert_eq!(postcard::from_bytes::<T>(&bin).unwrap(), t);
        // Arrays of numbers are accepted too; bad hex is an error, not a panic.
        let arr: T =
            serde_json::from_str(r#"{"data":[0,1,171,255],"journal":[],"items":[[97,98]]}"#)
                .unwrap();
        assert_eq!(arr.data, t.data);
        assert_eq!(arr.items, vec![b"ab".to_vec()]);
        for bad in [r#""0""#, r#""zz""#, r#""é1""#, "[256]"] {
            let doc = format!(r#"{{"data":{bad},"journal":[]}}"#);
            assert!(serde_json::from_str::<T>(&doc).is_err(), "{bad}");
            let doc = format!(r#"{{"data":"","journal":[],"items":["",{bad}]}}"#);
            assert!(serde_json::from_str::<T>(&doc).is_err(), "items {bad}");
        }
    }
}
