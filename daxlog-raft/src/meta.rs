//! A small record that must survive crashes, kept in a daxlog of its own.
//!
//! Every change appends the whole record (serialized with serde_json) as one daxlog entry; the
//! latest entry wins. An append is durable and atomic when it returns (a torn append is
//! discarded by recovery, so the previous record stays the latest). When the log holds more
//! than half its capacity, `truncate_before(last)` drops every record but the latest, with one
//! more barrier; that too is atomic, and it never removes the latest record.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::files::{create_atomically, DaxError};

/// A daxlog holding successive versions of one record; the last one is current.
pub(crate) struct LatestRecord {
    log: daxlog::Log,
}

impl LatestRecord {
    /// Opens the record log at `path`, creating it (empty) if the file does not exist.
    pub(crate) fn open_or_create(path: &Path, opts: &daxlog::Options) -> Result<Self, DaxError> {
        let log = if path.exists() {
            daxlog::Log::open(path, opts)?
        } else {
            create_atomically(path, opts)?
        };
        Ok(LatestRecord { log })
    }

    /// The record log itself (its persistence, its syncs).
    pub(crate) fn log(&self) -> &daxlog::Log {
        &self.log
    }

    /// The current record, if one was ever stored.
    pub(crate) fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, DaxError> {
        let Some(last) = self.log.last_lsn() else {
            return Ok(None);
        };
        let entry = self.log.read(last).ok_or(DaxError::Missing(last))?;
        Ok(Some(serde_json::from_slice(&entry.payload)?))
    }

    /// Durably replaces the current record with `value`.
    pub(crate) fn store<T: Serialize>(&mut self, value: &T) -> Result<(), DaxError> {
        let bytes = serde_json::to_vec(value)?;
        match self.log.append(&bytes) {
            Ok(_) => {}
            Err(daxlog::Error::Full { .. }) => {
                // Only reachable with a tiny capacity: make room and try once more.
                self.compact()?;
                self.log.append(&bytes)?;
            }
            Err(e) => return Err(e.into()),
        }
        if self.log.used_bytes() * 2 > self.log.space().data {
            self.compact()?;
        }
        Ok(())
    }

    /// Drops every record but the latest.
    fn compact(&mut self) -> Result<(), DaxError> {
        if let Some(last) = self.log.last_lsn() {
            self.log.truncate_before(last)?;
        }
        Ok(())
    }

    /// Number of records kept (the latest and older ones not compacted away yet).
    #[cfg(test)]
    pub(crate) fn records(&self) -> u64 {
        self.log.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_wins_and_compaction_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.dax");
        let opts = daxlog::Options::new().capacity(16 << 10);
        let mut rec = LatestRecord::open_or_create(&path, &opts).unwrap();
        assert_eq!(rec.load::<u64>().unwrap(), None);
        for i in 0..2000u64 {
            rec.store(&i).unwrap();
            assert_eq!(rec.load::<u64>().unwrap(), Some(i));
        }
        assert!(rec.records() < 2000);
        drop(rec);
        let rec = LatestRecord::open_or_create(&path, &opts).unwrap();
        assert_eq!(rec.load::<u64>().unwrap(), Some(1999));
    }
}
