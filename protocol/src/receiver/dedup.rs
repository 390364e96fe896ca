//! The receiver's dedup state: small, serializable, committed with the events.

use crate::seq_range::RangeSetFull;
use crate::{Seq, SeqRange, SeqRangeSet};
use serde::{Deserialize, Serialize};

/// Everything below `cumulative` was received, plus the (disjoint, sorted) `ranges` above it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupState<const N: usize> {
    pub cumulative: Seq,
    ranges: SeqRangeSet<N>,
}

impl<const N: usize> DedupState<N> {
    pub fn ranges(&self) -> &SeqRangeSet<N> {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.cumulative == 0 && self.ranges.is_empty()
    }

    /// One past the highest sequence number received.
    pub fn end(&self) -> Seq {
        self.ranges.last().map_or(self.cumulative, |r| r.end)
    }

    pub fn seq_count(&self) -> u64 {
        self.cumulative + self.ranges.seq_count()
    }

    pub fn contains(&self, seq: Seq) -> bool {
        seq < self.cumulative || self.ranges.contains(seq)
    }

    /// Adds `range`; fails without change when the out-of-order set would overflow.
    pub fn insert(&mut self, range: SeqRange) -> Result<(), RangeSetFull> {
        let above = SeqRange::new(range.start.max(self.cumulative), range.end);
        if above.is_empty() {
            return Ok(());
        }
        if above.start == self.cumulative {
            // Extends the contiguous prefix, possibly swallowing the first ranges (in place:
            // nothing here can fail, and the common in-order case has none to swallow).
            self.cumulative = above.end;
            while let Some(first) = self.ranges.first().filter(|r| r.start <= self.cumulative) {
                self.cumulative = self.cumulative.max(first.end);
                self.ranges.remove_below(first.end);
            }
            return Ok(());
        }
        self.ranges.insert(above)
    }

    /// Calls `f` for each piece of `range` not in the state.
    pub fn for_each_missing(&self, range: SeqRange, f: impl FnMut(SeqRange)) {
        let above = SeqRange::new(range.start.max(self.cumulative), range.end);
        if !above.is_empty() {
            self.ranges.for_each_missing(above, f);
        }
    }
}
