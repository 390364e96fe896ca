//! The set of sequence numbers still held, per `(stream, epoch)`: sorted disjoint ranges.
//!
//! Appends add ranges at the top, ACKs and drops remove ranges anywhere. The number of
//! ranges stays small: a hole needs a selective ACK (or a drop) inside held events, and the
//! sender's window bounds how many of those can be outstanding.

use driftlog_protocol::Seq;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SeqSet {
    /// start → end, half-open, disjoint and non-adjacent.
    ranges: BTreeMap<Seq, Seq>,
    len: u64,
}

impl SeqSet {
    pub(super) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many sequence numbers the set holds.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Adds `[start, end)`.
    pub(super) fn insert(&mut self, start: Seq, end: Seq) {
        if start >= end {
            return;
        }
        self.remove(start, end);
        self.len += end - start;
        let (mut start, mut end) = (start, end);
        if let Some((&before, &before_end)) = self.ranges.range(..start).next_back()
            && before_end == start
        {
            self.ranges.remove(&before);
            start = before;
        }
        if let Some(after_end) = self.ranges.remove(&end) {
            end = after_end;
        }
        self.ranges.insert(start, end);
    }

    /// Removes `[start, end)`; returns how many held sequence numbers it removed.
    pub(super) fn remove(&mut self, start: Seq, end: Seq) -> u64 {
        if start >= end {
            return 0;
        }
        let mut removed = 0;
        // A range that starts before `start` and reaches into it.
        if let Some((&before, &before_end)) = self.ranges.range(..start).next_back()
            && before_end > start
        {
            self.ranges.insert(before, start);
            if before_end > end {
                self.ranges.insert(end, before_end);
                removed += end - start;
                self.len -= removed;
                return removed;
            }
            removed += before_end - start;
        }
        let inside: Vec<(Seq, Seq)> = self.ranges.range(start..end).map(|(&s, &e)| (s, e)).collect();
        for (range_start, range_end) in inside {
            self.ranges.remove(&range_start);
            if range_end > end {
                self.ranges.insert(end, range_end);
                removed += end - range_start;
            } else {
                removed += range_end - range_start;
            }
        }
        self.len -= removed;
        removed
    }

    /// The first held sequence number in `[from, until)`.
    pub(super) fn first_in(&self, from: Seq, until: Seq) -> Option<Seq> {
        if from >= until {
            return None;
        }
        if let Some((_, &end)) = self.ranges.range(..=from).next_back()
            && end > from
        {
            return Some(from);
        }
        self.ranges.range(from..until).next().map(|(&start, _)| start)
    }

    /// The end of the held range that contains `seq`, if `seq` is held.
    pub(super) fn run_end(&self, seq: Seq) -> Option<Seq> {
        self.ranges.range(..=seq).next_back().filter(|(_, end)| **end > seq).map(|(_, &end)| end)
    }

    /// True when some sequence number of `[start, end)` is held.
    pub(super) fn intersects(&self, start: Seq, end: Seq) -> bool {
        self.first_in(start, end).is_some()
    }

    /// The held ranges inside `[start, end)`.
    pub(super) fn ranges_in(&self, start: Seq, end: Seq) -> Vec<(Seq, Seq)> {
        let mut out = Vec::new();
        let mut from = start;
        while let Some(first) = self.first_in(from, end) {
            let run_end = self.run_end(first).unwrap_or(first + 1).min(end);
            out.push((first, run_end));
            from = run_end;
        }
        out
    }
}
