//! The id index: id → row → (segment, slot).
//!
//! Ids are assigned by the store in increasing order and records keep that order in the
//! segments (compaction preserves it), so the index is the sorted id column of the key
//! matrix (binary search, 8 bytes per entry) plus the first row of each segment. It is
//! rebuilt on every open by the scan that checks the records and loads the keys anyway,
//! and never persisted: there is no second copy that could disagree with the segments.
use crate::keys::KeyMatrix;

#[derive(Clone, Debug, Default)]
pub(crate) struct SegIndex {
    /// First global row of each segment.
    starts: Vec<usize>,
}

impl SegIndex {
    pub(crate) fn push_segment(&mut self, first_row: usize) {
        self.starts.push(first_row);
    }

    /// (segment, slot) of global `row`.
    pub(crate) fn locate(&self, row: usize) -> (usize, usize) {
        let seg = self.starts.partition_point(|&s| s <= row).saturating_sub(1);
        (seg, row - self.starts.get(seg).copied().unwrap_or(0))
    }

    /// (segment, slot) of `id`, if present (live or deleted).
    pub(crate) fn find(&self, keys: &KeyMatrix, id: u64) -> Option<(usize, usize, usize)> {
        let row = keys.row_of(id)?;
        let (s, slot) = self.locate(row);
        Some((row, s, slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_rows() {
        let mut ix = SegIndex::default();
        ix.push_segment(0);
        ix.push_segment(3);
        ix.push_segment(3); // an empty segment
        ix.push_segment(5);
        assert_eq!(ix.locate(0), (0, 0));
        assert_eq!(ix.locate(2), (0, 2));
        assert_eq!(ix.locate(3), (2, 0));
        assert_eq!(ix.locate(4), (2, 1));
        assert_eq!(ix.locate(9), (3, 4));
    }
}
