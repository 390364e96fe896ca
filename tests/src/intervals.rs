//! An unbounded interval set for the checkers (the protocol's own set is bounded on purpose;
//! the checker must see everything).

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntervalSet {
    /// start -> end, disjoint and non-adjacent.
    ranges: BTreeMap<u64, u64>,
}

impl IntervalSet {
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        // Absorb a range that starts before and touches.
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.ranges.remove(&s);
        }
        let absorbed: Vec<(u64, u64)> = self.ranges.range(start..=end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in absorbed {
            end = end.max(e);
            self.ranges.remove(&s);
        }
        self.ranges.insert(start, end);
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.ranges.range(..=seq).next_back().is_some_and(|(_, &e)| seq < e)
    }

    /// True when `[start, end)` is entirely inside the set.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        start >= end || self.ranges.range(..=start).next_back().is_some_and(|(_, &e)| end <= e)
    }

    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_covers() {
        let mut set = IntervalSet::default();
        set.insert(10, 20);
        set.insert(30, 40);
        set.insert(20, 30);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![(10, 40)]);
        assert!(set.covers(12, 40));
        assert!(!set.covers(5, 12));
        set.insert(0, 5);
        assert!(set.contains(4) && !set.contains(5) && set.contains(10));
        assert_eq!(set.len(), 35);
    }
}
