//! What the outbox holds, in memory, as ranges: per `(stream, epoch)` the sequence numbers
//! still held, per segment the runs of sequence numbers it stores, and the run index over
//! every segment. No event bytes: those are read from the segments when sent, so memory
//! stays flat however large the backlog.

use super::ranges::SeqSet;
use driftlog_protocol::{Epoch, Position, Seq, StreamId};
use std::collections::{BTreeMap, VecDeque};

/// The run index: `(stream, epoch, run start)` → `(run end, segment id)`.
type Runs = BTreeMap<(StreamId, Epoch, Seq), (Seq, u64)>;

/// A run of consecutive sequence numbers one segment stores for one stream and epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub stream: StreamId,
    pub epoch: Epoch,
    pub start: Seq,
    pub end: Seq,
}

#[derive(Debug)]
pub(super) struct Segment {
    pub id: u64,
    /// Bytes of complete commits.
    pub len: u64,
    pub blocks: u32,
    pub runs: Vec<Run>,
}

#[derive(Debug, Default)]
pub(super) struct HeldIndex {
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// `(stream, epoch, run start)` → `(run end, segment id)`, over every segment.
    runs: Runs,
    /// Sequence numbers held (stored, not released, not dropped) per `(stream, epoch)`.
    live: BTreeMap<(StreamId, Epoch), SeqSet>,
    segment_bytes: u64,
    held_events: u64,
}

impl HeldIndex {
    pub(super) fn segments(&self) -> &VecDeque<Segment> {
        &self.segments
    }

    /// Bytes of every segment's complete commits.
    pub(super) fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Events held.
    pub(super) fn held_events(&self) -> u64 {
        self.held_events
    }

    /// Adds a segment after every other one.
    pub(super) fn push_segment(&mut self, segment: Segment) {
        self.segment_bytes += segment.len;
        self.segments.push_back(segment);
    }

    /// The last segment grew by `bytes` in `blocks` blocks.
    pub(super) fn grow_last(&mut self, bytes: u64, blocks: u32) {
        let segment = self.segments.back_mut().expect("a segment to grow");
        segment.len += bytes;
        segment.blocks += blocks;
        self.segment_bytes += bytes;
    }

    /// Registers `[start, end)` of `(stream, epoch)` as stored in the last segment and held.
    pub(super) fn store(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) {
        let segment = self.segments.back_mut().expect("a segment to store in");
        if let Some(run) = segment.runs.iter_mut().rev().find(|run| run.stream == stream && run.epoch == epoch)
            && run.end == start
        {
            run.end = end;
            self.runs.insert((stream, epoch, run.start), (end, segment.id));
        } else {
            segment.runs.push(Run { stream, epoch, start, end });
            self.runs.insert((stream, epoch, start), (end, segment.id));
        }
        let set = self.live.entry((stream, epoch)).or_default();
        let before = set.len();
        set.insert(start, end);
        self.held_events += set.len() - before;
    }

    /// Removes `[start, end)` from what is held; returns how many were held.
    pub(super) fn unhold(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> u64 {
        let Some(set) = self.live.get_mut(&(stream, epoch)) else { return 0 };
        let removed = set.remove(start, end);
        if set.is_empty() {
            self.live.remove(&(stream, epoch));
        }
        self.held_events -= removed;
        removed
    }

    /// The held ranges of `(stream, epoch)` inside `[start, end)`.
    pub(super) fn held_in(&self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> Vec<(Seq, Seq)> {
        self.live.get(&(stream, epoch)).map(|set| set.ranges_in(start, end)).unwrap_or_default()
    }

    /// The end of the held range of `(stream, epoch)` that contains `seq`, if it is held.
    pub(super) fn held_run_end(&self, stream: StreamId, epoch: Epoch, seq: Seq) -> Option<Seq> {
        self.live.get(&(stream, epoch)).and_then(|set| set.run_end(seq))
    }

    /// The stored run holding `seq` of `(stream, epoch)`: `(run end, segment id)`.
    pub(super) fn run_at(&self, stream: StreamId, epoch: Epoch, seq: Seq) -> Option<(Seq, u64)> {
        self.runs
            .range(..=(stream, epoch, seq))
            .next_back()
            .filter(|(key, (run_end, _))| key.0 == stream && key.1 == epoch && *run_end > seq)
            .map(|(_, &run)| run)
    }

    /// The first held event of `stream` in `[from, until)`.
    pub(super) fn first_held(&self, stream: StreamId, from: Position, until: Position) -> Option<Position> {
        self.live.range((stream, from.epoch)..=(stream, until.epoch)).find_map(|(&(_, epoch), set)| {
            let low = if epoch == from.epoch { from.seq } else { 0 };
            let high = if epoch == until.epoch { until.seq } else { Seq::MAX };
            set.first_in(low, high).map(|seq| Position::new(epoch, seq))
        })
    }

    /// The first held position of every `(stream, epoch)` holding events, in order.
    pub(super) fn firsts(&self) -> Vec<(StreamId, Position)> {
        self.live
            .iter()
            .filter_map(|(&(stream, epoch), set)| {
                set.first_in(0, Seq::MAX).map(|seq| (stream, Position::new(epoch, seq)))
            })
            .collect()
    }

    /// Every stream holding events, in any epoch (with repeats).
    pub(super) fn streams(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.live.keys().map(|key| key.0)
    }

    /// True when the segment at `position` (0 = oldest) still holds an event.
    pub(super) fn holds_any(&self, position: usize) -> bool {
        self.segments[position]
            .runs
            .iter()
            .any(|run| self.live.get(&(run.stream, run.epoch)).is_some_and(|set| set.intersects(run.start, run.end)))
    }

    /// Removes the oldest segment from the indexes (its held events stay held: the caller
    /// has tombstoned or released them first).
    pub(super) fn pop_oldest(&mut self) -> Option<Segment> {
        let segment = self.segments.pop_front()?;
        for run in &segment.runs {
            if self.runs.get(&(run.stream, run.epoch, run.start)).is_some_and(|&(_, id)| id == segment.id) {
                self.runs.remove(&(run.stream, run.epoch, run.start));
            }
        }
        self.segment_bytes -= segment.len;
        Some(segment)
    }
}
