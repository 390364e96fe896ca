//! Half-open sequence ranges and a bounded set of them.
//!
//! `SeqRangeSet<N>` is the receiver's interval set of out-of-order arrivals and the sender's
//! retransmission queue. It holds at most `N` disjoint, non-adjacent ranges, sorted; the bound
//! is what keeps a hostile or pathological reordering pattern from growing memory.

use crate::Seq;
use serde::{Deserialize, Serialize};

/// `[start, end)`. Empty when `start >= end`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeqRange {
    pub start: Seq,
    pub end: Seq,
}

impl SeqRange {
    pub const fn new(start: Seq, end: Seq) -> SeqRange {
        SeqRange { start, end }
    }

    /// `[start, start + len)`, saturating at `u64::MAX`.
    pub const fn with_len(start: Seq, len: u64) -> SeqRange {
        SeqRange { start, end: start.saturating_add(len) }
    }

    pub const fn len(self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(self) -> bool {
        self.start >= self.end
    }

    pub const fn contains(self, seq: Seq) -> bool {
        self.start <= seq && seq < self.end
    }

    /// True when `other` lies entirely inside `self` (an empty `other` always does).
    pub const fn covers(self, other: SeqRange) -> bool {
        other.is_empty() || (self.start <= other.start && other.end <= self.end)
    }

    pub fn intersect(self, other: SeqRange) -> SeqRange {
        SeqRange { start: self.start.max(other.start), end: self.end.min(other.end) }
    }

    /// Overlapping or touching, so the union is one range.
    const fn touches(self, other: SeqRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// The set has no room for another disjoint range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("range set is full")]
pub struct RangeSetFull;

/// At most `N` sorted, disjoint, non-adjacent, non-empty ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRangeSet<const N: usize> {
    ranges: heapless::Vec<SeqRange, N>,
}

impl<const N: usize> SeqRangeSet<N> {
    pub const fn new() -> Self {
        SeqRangeSet { ranges: heapless::Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of disjoint ranges (not of sequence numbers).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Total number of sequence numbers covered.
    pub fn seq_count(&self) -> u64 {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = SeqRange> + '_ {
        self.ranges.iter().copied()
    }

    pub fn first(&self) -> Option<SeqRange> {
        self.ranges.first().copied()
    }

    pub fn last(&self) -> Option<SeqRange> {
        self.ranges.last().copied()
    }

    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    pub fn contains(&self, seq: Seq) -> bool {
        self.ranges.iter().any(|r| r.contains(seq))
    }

    /// True when every seq of `range` is in the set.
    pub fn covers(&self, range: SeqRange) -> bool {
        range.is_empty() || self.ranges.iter().any(|r| r.covers(range))
    }

    /// True when some seq of `range` is in the set.
    pub fn intersects(&self, range: SeqRange) -> bool {
        self.ranges.iter().any(|r| !r.intersect(range).is_empty())
    }

    /// How many disjoint ranges the set would hold after inserting `range`.
    pub fn count_after_insert(&self, range: SeqRange) -> usize {
        if range.is_empty() {
            return self.ranges.len();
        }
        let absorbed = self.ranges.iter().filter(|r| r.touches(range)).count();
        self.ranges.len() + 1 - absorbed
    }

    /// Adds `range`, merging with what it overlaps or touches. Fails without changing the set
    /// when the result would need more than `N` ranges.
    pub fn insert(&mut self, range: SeqRange) -> Result<(), RangeSetFull> {
        if range.is_empty() {
            return Ok(());
        }
        if self.count_after_insert(range) > N {
            return Err(RangeSetFull);
        }
        let mut merged = range;
        let mut first_touching = None;
        let mut index = 0;
        while index < self.ranges.len() {
            let existing = self.ranges[index];
            if existing.touches(merged) {
                merged = SeqRange::new(existing.start.min(merged.start), existing.end.max(merged.end));
                self.ranges.remove(index);
                first_touching.get_or_insert(index);
            } else if existing.start > merged.end {
                break;
            } else {
                index += 1;
            }
        }
        let at = first_touching.unwrap_or(index);
        // Cannot fail: the capacity check above counted exactly this insertion.
        let inserted = self.ranges.insert(at, merged);
        debug_assert!(inserted.is_ok());
        Ok(())
    }

    /// Adds `range`; when the set is full, first merges the two ranges separated by the
    /// smallest gap. The set then over-approximates (it also covers that gap), which is the
    /// safe direction for a retransmission queue: resending an acknowledged event costs a
    /// duplicate that the receiver drops, never a loss.
    pub fn insert_coalescing(&mut self, range: SeqRange) {
        let mut range = range;
        // Each failed attempt removes one range or widens `range` to touch a neighbour, so
        // this ends within N + 1 rounds.
        while self.insert(range).is_err() {
            let left = self.ranges.iter().rev().find(|r| r.end < range.start).copied();
            let right = self.ranges.iter().find(|r| r.start > range.end).copied();
            let left_gap = left.map(|l| range.start - l.end);
            let right_gap = right.map(|r| r.start - range.end);
            let mut pair: Option<(u64, usize)> = None;
            for index in 0..self.ranges.len().saturating_sub(1) {
                let gap = self.ranges[index + 1].start - self.ranges[index].end;
                if pair.is_none_or(|(best, _)| gap < best) {
                    pair = Some((gap, index));
                }
            }
            let pair_gap = pair.map(|(gap, _)| gap);
            let smallest = [left_gap, right_gap, pair_gap].into_iter().flatten().min();
            match smallest {
                Some(gap) if Some(gap) == left_gap => range.start = left.map_or(range.start, |l| l.end),
                Some(gap) if Some(gap) == right_gap => range.end = right.map_or(range.end, |r| r.start),
                Some(_) => {
                    if let Some((_, index)) = pair {
                        let right = self.ranges.remove(index + 1);
                        self.ranges[index].end = right.end;
                    }
                }
                // N == 0: nothing can ever be held.
                None => return,
            }
        }
    }

    /// Removes `range`. Splitting a range needs one more slot; when the set is full such a
    /// removal fails and the set is unchanged.
    pub fn remove(&mut self, range: SeqRange) -> Result<(), RangeSetFull> {
        if range.is_empty() {
            return Ok(());
        }
        let mut index = 0;
        while index < self.ranges.len() {
            let existing = self.ranges[index];
            let overlap = existing.intersect(range);
            if overlap.is_empty() {
                index += 1;
                continue;
            }
            let left = SeqRange::new(existing.start, overlap.start);
            let right = SeqRange::new(overlap.end, existing.end);
            match (left.is_empty(), right.is_empty()) {
                (true, true) => {
                    self.ranges.remove(index);
                }
                (false, true) => {
                    self.ranges[index] = left;
                    index += 1;
                }
                (true, false) => {
                    self.ranges[index] = right;
                    index += 1;
                }
                (false, false) => {
                    if self.ranges.len() == N {
                        return Err(RangeSetFull);
                    }
                    self.ranges[index] = left;
                    let inserted = self.ranges.insert(index + 1, right);
                    debug_assert!(inserted.is_ok());
                    index += 2;
                }
            }
        }
        Ok(())
    }

    /// Removes everything below `seq`.
    pub fn remove_below(&mut self, seq: Seq) {
        // Cannot split a range, so cannot fail.
        let result = self.remove(SeqRange::new(0, seq));
        debug_assert!(result.is_ok());
    }

    /// Calls `f` for each maximal piece of `range` that is not in the set, in order.
    pub fn for_each_missing(&self, range: SeqRange, mut f: impl FnMut(SeqRange)) {
        let mut cursor = range.start;
        for existing in self.ranges.iter() {
            if existing.end <= cursor {
                continue;
            }
            if existing.start >= range.end {
                break;
            }
            if existing.start > cursor {
                f(SeqRange::new(cursor, existing.start.min(range.end)));
            }
            cursor = cursor.max(existing.end);
            if cursor >= range.end {
                return;
            }
        }
        if cursor < range.end {
            f(SeqRange::new(cursor, range.end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<const N: usize>(ranges: &[(u64, u64)]) -> SeqRangeSet<N> {
        let mut s = SeqRangeSet::new();
        for &(a, b) in ranges {
            s.insert(SeqRange::new(a, b)).unwrap();
        }
        s
    }

    fn ranges<const N: usize>(s: &SeqRangeSet<N>) -> std::vec::Vec<(u64, u64)> {
        s.iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn insert_merges_overlapping_and_adjacent() {
        let s = set::<8>(&[(10, 20), (30, 40), (20, 25), (24, 31)]);
        assert_eq!(ranges(&s), vec![(10, 40)]);
        let s = set::<8>(&[(30, 40), (0, 5), (10, 20)]);
        assert_eq!(ranges(&s), vec![(0, 5), (10, 20), (30, 40)]);
    }

    #[test]
    fn insert_beyond_capacity_fails_without_change() {
        let mut s = set::<2>(&[(0, 5), (10, 20)]);
        assert_eq!(s.insert(SeqRange::new(30, 31)), Err(RangeSetFull));
        assert_eq!(ranges(&s), vec![(0, 5), (10, 20)]);
        // A range that bridges two existing ones still fits.
        s.insert(SeqRange::new(5, 10)).unwrap();
        assert_eq!(ranges(&s), vec![(0, 20)]);
    }

    #[test]
    fn coalescing_insert_closes_the_smallest_gap() {
        let mut s = set::<2>(&[(0, 5), (100, 110)]);
        s.insert_coalescing(SeqRange::new(7, 8));
        assert_eq!(ranges(&s), vec![(0, 8), (100, 110)]);
        let mut one = set::<1>(&[(10, 20)]);
        one.insert_coalescing(SeqRange::new(40, 50));
        assert_eq!(ranges(&one), vec![(10, 50)]);
    }

    #[test]
    fn remove_splits_and_trims() {
        let mut s = set::<4>(&[(0, 100)]);
        s.remove(SeqRange::new(10, 20)).unwrap();
        assert_eq!(ranges(&s), vec![(0, 10), (20, 100)]);
        s.remove(SeqRange::new(5, 30)).unwrap();
        assert_eq!(ranges(&s), vec![(0, 5), (30, 100)]);
        s.remove_below(50);
        assert_eq!(ranges(&s), vec![(50, 100)]);
        let mut full = set::<1>(&[(0, 100)]);
        assert_eq!(full.remove(SeqRange::new(10, 20)), Err(RangeSetFull));
        assert_eq!(ranges(&full), vec![(0, 100)]);
    }

    #[test]
    fn missing_pieces_are_the_complement_within_the_range() {
        let s = set::<4>(&[(10, 20), (30, 40)]);
        let mut missing = std::vec::Vec::new();
        s.for_each_missing(SeqRange::new(5, 45), |r| missing.push((r.start, r.end)));
        assert_eq!(missing, vec![(5, 10), (20, 30), (40, 45)]);
        missing.clear();
        s.for_each_missing(SeqRange::new(12, 18), |r| missing.push((r.start, r.end)));
        assert!(missing.is_empty());
        s.for_each_missing(SeqRange::new(15, 35), |r| missing.push((r.start, r.end)));
        assert_eq!(missing, vec![(20, 30)]);
    }
}
