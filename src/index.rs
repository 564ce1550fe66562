//! The sparse LSN index: where every `INDEX_STRIDE`th entry lies, to find entries by LSN.

use crate::Lsn;

/// Every this many entries, the offset of one entry is kept in memory to find entries by LSN.
pub(crate) const INDEX_STRIDE: u64 = 64;

/// The sparse LSN index: the offsets of the entries with LSN `base + k * INDEX_STRIDE`, where
/// `base` is a multiple of the stride.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) base: Lsn,
    pub(crate) anchors: Vec<u64>,
}

impl Index {
    /// The anchor at or before `lsn`: its offset and LSN.
    pub(crate) fn anchor_at_or_before(&self, lsn: Lsn) -> Option<(usize, Lsn)> {
        if self.anchors.is_empty() || lsn < self.base {
            return None;
        }
        let k = (((lsn - self.base) / INDEX_STRIDE) as usize).min(self.anchors.len() - 1);
        Some((
            self.anchors[k] as usize,
            self.base + k as u64 * INDEX_STRIDE,
        ))
    }

    /// Drops the anchors of LSNs below `first` (a prefix truncation).
    pub(crate) fn drop_before(&mut self, first: Lsn) {
        if first <= self.base {
            return;
        }
        let k = ((first - self.base).div_ceil(INDEX_STRIDE) as usize).min(self.anchors.len());
        self.anchors.drain(..k);
        self.base = if self.anchors.is_empty() {
            first.next_multiple_of(INDEX_STRIDE)
        } else {
            self.base + k as u64 * INDEX_STRIDE
        };
    }

    /// Keeps the anchors of LSNs below `next`.
    pub(crate) fn truncate_from(&mut self, next: Lsn) {
        let keep = next.saturating_sub(self.base).div_ceil(INDEX_STRIDE) as usize;
        self.anchors.truncate(keep);
    }
}
