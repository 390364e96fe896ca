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
        if above.start == self.cumulative && self.ranges.is_empty() {
            // In order with nothing out of order held: the common case, without a copy.
            self.cumulative = above.end;
            return Ok(());
        }
        if above.start == self.cumulative {
            // Extends the contiguous prefix, possibly swallowing the first ranges.
            let mut cumulative = above.end;
            let mut ranges = self.ranges.clone();
            while let Some(first) = ranges.first().filter(|r| r.start <= cumulative) {
                cumulative = cumulative.max(first.end);
                ranges.remove_below(first.end);
            }
            self.cumulative = cumulative;
            self.ranges = ranges;
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
