//! The example state machine's journal: `(journal index, data)` records in index order, kept in
//! shared chunks so that a copy (a snapshot's, taken while appends go on) costs a pointer per
//! `CHUNK` (1024) records, not a copy of every record. A node runs on one thread by default: a copy
//! of millions of records there would hold up its heartbeats.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Records per chunk. Appending to a chunk that a copy shares copies that chunk first (at most
/// this many records).
const CHUNK: usize = 1024;

/// One record: its journal index and its bytes.
pub type Record = (u64, Vec<u8>);

/// The records a truncation dropped ([`Journal::truncate_before`]): freeing millions of
/// records takes a while, so the caller chooses where it happens (dropping this frees them).
#[derive(Debug, Default)]
#[must_use = "dropping this frees the records here and now"]
pub struct Dropped {
    chunks: Vec<Arc<Vec<Record>>>,
    records: Vec<Record>,
    count: usize,
}

impl Dropped {
    /// How many records were dropped.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if none was.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Journal records in increasing index order; clones share the records.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    /// Chunks of at most [`CHUNK`] records, none empty; all but the first (which a
    /// truncation shortens) and the last are full.
    chunks: Vec<Arc<Vec<Record>>>,
    len: usize,
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Journal::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if there are no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first record's index.
    pub fn first_index(&self) -> Option<u64> {
        self.chunks.first().and_then(|c| c.first()).map(|(i, _)| *i)
    }

    /// The last record's index.
    pub fn last_index(&self) -> Option<u64> {
        self.chunks.last().and_then(|c| c.last()).map(|(i, _)| *i)
    }

    /// The next index: the last record's plus one (0 if there is none). A truncation at most
    /// there drops only records that exist already (later ones take indexes at or past it).
    pub fn next_index(&self) -> u64 {
        self.last_index().map_or(0, |last| last.saturating_add(1))
    }

    /// Adds a record after the others. Its index must be larger than the last one's (the
    /// caller, the state machine, gives increasing indexes).
    pub fn push(&mut self, index: u64, data: Vec<u8>) {
        debug_assert!(self.last_index().is_none_or(|last| index > last));
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => Arc::make_mut(chunk).push((index, data)),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push((index, data));
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Drops the records with an index below `before`, but never the last record; returns
    /// them, for the caller to free where the time it takes does not matter. Copies the
    /// records kept of at most one chunk (the one the cut falls in, if a copy shares it).
    pub fn truncate_before(&mut self, before: u64) -> Dropped {
        let mut dropped = Dropped::default();
        let Some(last) = self.last_index() else {
            return dropped;
        };
        let keep_from = before.min(last);
        let whole = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|(i, _)| *i < keep_from));
        dropped.chunks = self.chunks.drain(..whole).collect();
        dropped.count = dropped.chunks.iter().map(|c| c.len()).sum();
        if let Some(first) = self.chunks.first_mut() {
            let n = first.partition_point(|(i, _)| *i < keep_from);
            if n > 0 {
                match Arc::get_mut(first) {
                    Some(chunk) => dropped.records = chunk.drain(..n).collect(),
                    // Shared with a copy: only the records kept are copied.
                    None => *first = Arc::new(first[n..].to_vec()),
                }
                dropped.count += n;
            }
        }
        self.len -= dropped.count;
        dropped
    }

    /// Every record, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Record> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// At most `max` records with an index at least `from`, in index order (copies).
    pub fn page(&self, from: u64, max: usize) -> Vec<Record> {
        self.page_within(from, max, u64::MAX)
    }

    /// [`Journal::page`], ending too before the record that would take the records' data
    /// past `max_bytes`, but never before the first one (a record larger than `max_bytes`
    /// comes alone).
    pub fn page_within(&self, from: u64, max: usize, max_bytes: u64) -> Vec<Record> {
        let mut bytes = 0u64;
        // The first chunk whose last record reaches `from`; in it, the first such record.
        let first = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|(i, _)| *i < from));
        let mut out = Vec::new();
        for (n, chunk) in self.chunks[first..].iter().enumerate() {
            let start = if n == 0 {
                chunk.partition_point(|(i, _)| *i < from)
            } else {
                0
            };
            for record in &chunk[start..] {
                if out.len() == max {
                    return out;
                }
                bytes = bytes.saturating_add(record.1.len() as u64);
                if bytes > max_bytes && !out.is_empty() {
                    return out;
                }
                out.push(record.clone());
            }
        }
        out
    }

    /// Every record, copied.
    pub fn to_vec(&self) -> Vec<Record> {
        self.iter().cloned().collect()
    }
}

impl PartialEq for Journal {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Journal {}

impl From<Vec<Record>> for Journal {
    /// The records, which must be in increasing index order.
    fn from(records: Vec<Record>) -> Self {
        let mut journal = Journal::new();
        for (index, data) in records {
            journal.push(index, data);
        }
        journal
    }
}

impl Serialize for Journal {
    /// A sequence of records, each `(index, data)` with `data` as the `bytes` module encodes it
    /// (hexadecimal in JSON).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::bytes::journal::serialize_records(self.len, self.iter(), s)
    }
}

impl<'de> Deserialize<'de> for Journal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let records = crate::bytes::journal::deserialize(d)?;
        if records.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(serde::de::Error::custom(
                "journal records out of index order",
            ));
        }
        Ok(Journal::from(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(indexes: impl IntoIterator<Item = u64>) -> (Journal, Vec<Record>) {
        let records: Vec<Record> = indexes
            .into_iter()
            .map(|i| (i, i.to_le_bytes()[..(i % 9) as usize].to_vec()))
            .collect();
        (Journal::from(records.clone()), records)
    }

    /// Pages across chunk boundaries give what a flat vector gives.
    #[test]
    fn pages_match_a_flat_vector() {
        let (j, flat) = journal((0..3 * CHUNK as u64 + 17).map(|i| 2 * i + 5));
        assert_eq!(j.len(), flat.len());
        assert_eq!(j.to_vec(), flat);
        assert_eq!(j.last_index(), flat.last().map(|r| r.0));
        for from in [
            0,
            5,
            6,
            7,
            2 * CHUNK as u64 + 4,
            2 * CHUNK as u64 + 5,
            1 << 40,
        ] {
            for max in [0, 1, 3, CHUNK - 1, CHUNK, CHUNK + 1, 10 * CHUNK] {
                let start = flat.partition_point(|(i, _)| *i < from);
                let want: Vec<Record> = flat[start..].iter().take(max).cloned().collect();
                assert_eq!(j.page(from, max), want, "from {from} max {max}");
            }
        }
        assert!(Journal::new().page(0, 10).is_empty());
    }

    /// A page ends before the record that would pass the byte budget, after at least one.
    #[test]
    fn pages_within_a_byte_budget() {
        let j = Journal::from((0..10u64).map(|i| (i, vec![0u8; 100])).collect::<Vec<_>>());
        let ids = |p: Vec<Record>| p.into_iter().map(|r| r.0).collect::<Vec<_>>();
        assert_eq!(ids(j.page_within(0, 100, 250)), [0, 1]);
        assert_eq!(ids(j.page_within(0, 100, 300)), [0, 1, 2]);
        assert_eq!(ids(j.page_within(2, 100, 10)), [2]);
        assert_eq!(ids(j.page_within(8, 100, 1000)), [8, 9]);
        assert_eq!(ids(j.page_within(0, 1, 1000)), [0]);
    }

    /// A clone shares the records; appends to either leave the other as it was.
    #[test]
    fn clones_share_and_stay_apart() {
        let (mut j, mut flat) = journal(1..=(CHUNK as u64 + 10));
        let copy = j.clone();
        assert!(Arc::ptr_eq(&j.chunks[0], &copy.chunks[0]));
        for i in 0..CHUNK as u64 {
            let index = CHUNK as u64 + 11 + i;
            j.push(index, vec![1, 2]);
            flat.push((index, vec![1, 2]));
        }
        assert_eq!(j.to_vec(), flat);
        assert_eq!(copy.to_vec(), flat[..CHUNK + 10]);
        assert!(Arc::ptr_eq(&j.chunks[0], &copy.chunks[0]));
    }

    /// A truncation drops the records below its index, across chunks, keeps the last record
    /// whatever the index, leaves a copy as it was, and later pushes and pages go on as on a
    /// flat vector.
    #[test]
    fn truncations_drop_a_prefix_but_the_last_record() {
        let (mut j, mut flat) = journal((0..3 * CHUNK as u64 + 17).map(|i| 2 * i + 5));
        let copy = j.clone();
        let all = flat.clone();
        for before in [
            0,
            5,
            6,
            7,
            2 * CHUNK as u64 + 4,
            2 * CHUNK as u64 + 7,
            4 * CHUNK as u64 + 1,
        ] {
            let start = flat.partition_point(|(i, _)| *i < before);
            let want = flat.split_off(start);
            let dropped = j.truncate_before(before);
            assert_eq!(dropped.len(), start, "before {before}");
            flat = want;
            assert_eq!(j.to_vec(), flat, "before {before}");
            assert_eq!(j.len(), flat.len());
            assert_eq!(j.first_index(), flat.first().map(|r| r.0));
        }
        // Past the last record: only the last stays.
        let last = j.last_index().unwrap();
        assert_eq!(j.truncate_before(u64::MAX).len(), flat.len() - 1);
        flat.drain(..flat.len() - 1);
        assert_eq!(j.to_vec(), flat);
        assert_eq!((j.first_index(), j.last_index()), (Some(last), Some(last)));
        assert_eq!(j.next_index(), last + 1);
        assert!(j.truncate_before(u64::MAX).is_empty());
        assert_eq!(copy.to_vec(), all, "the copy keeps every record");
        for i in 1..=(CHUNK as u64 + 3) {
            j.push(last + i, vec![i as u8]);
            flat.push((last + i, vec![i as u8]));
        }
        assert_eq!(j.to_vec(), flat);
        for from in [
            0,
            last,
            last + 1,
            last + CHUNK as u64,
            last + CHUNK as u64 + 3,
        ] {
            let start = flat.partition_point(|(i, _)| *i < from);
            assert_eq!(
                j.page(from, 5),
                flat[start..].iter().take(5).cloned().collect::<Vec<_>>()
            );
        }
        assert!(Journal::new().truncate_before(10).is_empty());
        assert_eq!(Journal::new().next_index(), 0);
    }

    /// Serialized as a flat list of records (the format snapshots always had); records out of
    /// order are refused.
    #[test]
    fn serde_is_a_flat_list() {
        let (j, _) = journal([3, 4, 9]);
        let json = serde_json::to_string(&j).unwrap();
        assert_eq!(json, r#"[[3,"030000"],[4,"04000000"],[9,""]]"#);
        assert_eq!(serde_json::from_str::<Journal>(&json).unwrap(), j);
        let bin = postcard::to_stdvec(&j).unwrap();
        assert_eq!(postcard::from_bytes::<Journal>(&bin).unwrap(), j);
        assert!(serde_json::from_str::<Journal>(r#"[[4,""],[3,""]]"#).is_err());
        assert!(serde_json::from_str::<Journal>(r#"[[4,""],[4,""]]"#).is_err());
    }
}
