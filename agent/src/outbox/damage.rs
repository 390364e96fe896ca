//! Which events a damaged segment lost, worked out while the outbox loads.
//!
//! A segment other than the last one was sealed (fsynced) before the next one was opened, so
//! if it stops checking out part way, that is damage, not a torn write: everything it held
//! after the first bad block is gone, and the block headers that would say which sequence
//! numbers those were are gone with it. They can still be inferred, because each
//! `(stream, epoch)` numbers its events consecutively in the order they are written: what a
//! damaged segment lost of a stream lies between that stream's last readable run up to the
//! damage and its first run in a later segment. (Segments are deleted oldest first only, so
//! no other gap between two runs still on disk exists.) Releases written after the damage are
//! taken out (those events had reached the collector), and what remains gets a
//! `storage_failure` tombstone, so the collector records a gap instead of waiting forever
//! for events no one can send.
//!
//! A stream with no run in a later segment cannot be bounded this way (how many events
//! followed is unknown); the collector learns of that loss only from the sender's held range.

use super::ranges::SeqSet;
use super::store::SegmentStore;
use super::{Outbox, OutboxError};
use driftlog_protocol::wire::DropReason;
use driftlog_protocol::{Epoch, Seq, StreamId};
use std::collections::BTreeMap;

/// The outbox's run index: `(stream, epoch, run start)` → `(run end, segment id)`.
pub(super) type Runs = BTreeMap<(StreamId, Epoch, Seq), (Seq, u64)>;

#[derive(Debug, Default)]
pub(super) struct DamageTracker {
    /// Damaged segments, in the (ascending) order the load meets them.
    damaged: Vec<u64>,
    /// Releases read after the first damage.
    released_after: BTreeMap<(StreamId, Epoch), SeqSet>,
}

impl DamageTracker {
    /// Segment `id` stops checking out part way.
    pub(super) fn damaged(&mut self, id: u64) {
        self.damaged.push(id);
    }

    /// A readable release record, in the order the load meets them.
    pub(super) fn release(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) {
        if !self.damaged.is_empty() {
            self.released_after.entry((stream, epoch)).or_default().insert(start, end);
        }
    }

    /// The ranges lost and not released since, given every readable run: `(stream, epoch,
    /// start, end)`, in order.
    pub(super) fn lost(&self, runs: &Runs) -> Vec<(StreamId, Epoch, Seq, Seq)> {
        let mut out = Vec::new();
        if self.damaged.is_empty() {
            return out;
        }
        let mut previous: Option<((StreamId, Epoch), Seq, u64)> = None;
        for (&(stream, epoch, start), &(end, segment)) in runs {
            if let Some((key, previous_end, previous_segment)) = previous
                && key == (stream, epoch)
                && self.damaged.iter().any(|&damaged| previous_segment <= damaged && damaged < segment)
            {
                let mut lost = SeqSet::default();
                lost.insert(previous_end, start);
                if let Some(released) = self.released_after.get(&key) {
                    for (from, to) in released.ranges_in(previous_end, start) {
                        lost.remove(from, to);
                    }
                }
                out.extend(lost.ranges_in(previous_end, start).into_iter().map(|(from, to)| (stream, epoch, from, to)));
            }
            previous = Some(((stream, epoch), end, segment));
        }
        out
    }
}

impl<S: SegmentStore> Outbox<S> {
    pub(super) fn note_damaged(&mut self, segment: u64) {
        if self.damaged_segments.insert(segment) {
            self.stats.corrupt_segments += 1;
        }
    }

    /// Tombstones (`storage_failure`) the pieces of `[start, end)` of `(stream, epoch)` that
    /// are neither held nor covered by a tombstone yet; returns how many sequence numbers that
    /// was. In memory until the tombstones are saved.
    pub(super) fn tombstone_storage_failure(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> u64 {
        let mut lost = SeqSet::default();
        lost.insert(start, end);
        let covered: Vec<(Seq, Seq)> = self
            .tombstones
            .iter()
            .filter(|(key, _)| key.0 == stream && key.1 == epoch)
            .map(|(key, &(end, _))| (key.2, end))
            .chain(self.index.held_in(stream, epoch, start, end))
            .collect();
        for (start, end) in covered {
            lost.remove(start, end);
        }
        for (start, end) in lost.ranges_in(start, end) {
            self.tombstones.add(stream, epoch, start, end, DropReason::StorageFailure);
        }
        lost.len()
    }

    /// [`Self::tombstone_storage_failure`] for events damage made unreadable, counted.
    pub(super) fn tombstone_unreadable(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) -> u64 {
        let events = self.tombstone_storage_failure(stream, epoch, start, end);
        self.stats.corrupt_events += events;
        if events > 0 {
            tracing::error!(
                stream,
                epoch,
                first_seq = start,
                events,
                "outbox events unreadable; tombstoned as storage_failure"
            );
        }
        events
    }

    /// A block of segment `id` that held `[start, end)` of `(stream, epoch)` no longer reads
    /// back: what of it is still held is tombstoned and no longer held, so the sender moves
    /// past it instead of failing on it forever.
    pub(super) fn quarantine(
        &mut self,
        id: u64,
        stream: StreamId,
        epoch: Epoch,
        start: Seq,
        end: Seq,
    ) -> Result<(), OutboxError> {
        self.note_damaged(id);
        let mut removed = 0;
        for (start, end) in self.index.held_in(stream, epoch, start, end) {
            removed += self.index.unhold(stream, epoch, start, end);
            self.tombstone_unreadable(stream, epoch, start, end);
        }
        if removed > 0 {
            self.tombstones.save(true)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of `(stream, start, end, segment)`, all in epoch 1.
    fn runs(list: &[(StreamId, Seq, Seq, u64)]) -> Runs {
        list.iter().map(|&(stream, start, end, segment)| ((stream, 1, start), (end, segment))).collect()
    }

    #[test]
    fn the_gap_between_the_damage_and_the_next_run_is_lost_less_what_was_released() {
        let mut tracker = DamageTracker::default();
        tracker.release(0, 1, 0, 5); // before the damage: cannot concern what it lost
        tracker.damaged(1);
        tracker.release(0, 1, 12, 14);
        // Stream 0 lost 10..20, of which 12..14 reached the collector; stream 1 lost
        // nothing; stream 2 has nothing after the damage, stream 3 nothing before it.
        let runs = runs(&[
            (0, 0, 10, 1),
            (0, 20, 30, 2),
            (0, 30, 40, 3),
            (1, 0, 5, 0),
            (1, 5, 9, 2),
            (2, 0, 3, 1),
            (3, 7, 9, 2),
        ]);
        assert_eq!(tracker.lost(&runs), vec![(0, 1, 10, 12), (0, 1, 14, 20)]);
    }

    #[test]
    fn nothing_is_lost_without_damage() {
        let mut tracker = DamageTracker::default();
        tracker.release(0, 1, 10, 12);
        assert!(tracker.lost(&runs(&[(0, 0, 10, 0), (0, 12, 20, 1)])).is_empty());
    }
}
