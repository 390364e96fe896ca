//! Which events damage cost, worked out while the outbox loads.
//!
//! Damage ([`super::scan`]) makes blocks unreadable, and the block headers that would say
//! which sequence numbers those were can be gone with them. They can still be inferred,
//! because each `(stream, epoch)` numbers its events consecutively in the order they are
//! written, and the load reads the segments in that order: what damage cost a stream lies
//! between that stream's last readable block before the damage and its first readable block
//! after it. (Segments are deleted oldest first only, so no other gap between two readable
//! blocks exists but what tombstones cover.) Where a single flipped bit explains the damage,
//! the damaged block's own header says exactly what it held. Releases read after the damage
//! are taken out (those events had reached the collector), and what remains gets a
//! `storage_failure` tombstone, so the collector records a gap instead of waiting forever
//! for events no one can send.
//!
//! Damage of unknown extent after a stream's last readable block cannot be bounded this way
//! (how many events it held is unknown); the collector learns of that loss only from the
//! sender's held range.

use super::block::{Header, Kind};
use super::ranges::SeqSet;
use super::store::SegmentStore;
use super::{Outbox, OutboxError};
use driftlog_protocol::wire::DropReason;
use driftlog_protocol::{Epoch, Seq, StreamId};
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub(super) struct DamageTracker {
    /// Damage met so far, in the order the load reads the segments (the order of writing).
    damage: u64,
    /// Per `(stream, epoch)`: one past its last block read so far, and `damage` then.
    last: BTreeMap<(StreamId, Epoch), (Seq, u64)>,
    /// What the damage met so far cost.
    lost: BTreeMap<(StreamId, Epoch), SeqSet>,
    /// Releases read after the first damage.
    released_after: BTreeMap<(StreamId, Epoch), SeqSet>,
}

impl DamageTracker {
    /// A readable block of events, in the order the load meets them.
    pub(super) fn events(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) {
        let last = self.last.entry((stream, epoch)).or_insert((start, self.damage));
        if last.1 < self.damage && last.0 < start {
            self.lost.entry((stream, epoch)).or_default().insert(last.0, start);
        }
        *last = (last.0.max(end), self.damage);
    }

    /// A readable release record, in the order the load meets them.
    pub(super) fn release(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) {
        if self.damage > 0 {
            self.released_after.entry((stream, epoch)).or_default().insert(start, end);
        }
    }

    /// Damage, in the order the load meets it; `header` is the damaged block's, when known.
    pub(super) fn damaged(&mut self, header: Option<Header>) {
        if let Some(header) = header.filter(|header| header.kind == Kind::Events) {
            // In its place in the order of writing, before the damage it is.
            self.events(header.stream, header.epoch, header.start, header.end);
            self.lost.entry((header.stream, header.epoch)).or_default().insert(header.start, header.end);
        }
        self.damage += 1;
    }

    /// The ranges lost and not released since: `(stream, epoch, start, end)`, in order.
    pub(super) fn lost(&self) -> Vec<(StreamId, Epoch, Seq, Seq)> {
        let mut out = Vec::new();
        for (&(stream, epoch), lost) in &self.lost {
            let mut lost = lost.clone();
            if let Some(released) = self.released_after.get(&(stream, epoch)) {
                for (from, to) in released.ranges_in(0, Seq::MAX) {
                    lost.remove(from, to);
                }
            }
            out.extend(lost.ranges_in(0, Seq::MAX).into_iter().map(|(from, to)| (stream, epoch, from, to)));
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

    fn events_header(stream: StreamId, start: Seq, end: Seq) -> Header {
        Header { len: 10, kind: Kind::Events, commit_end: true, stream, epoch: 1, start, end }
    }

    #[test]
    fn the_gap_across_damage_is_lost_less_what_was_released_after_it() {
        let mut tracker = DamageTracker::default();
        tracker.events(0, 1, 0, 10);
        tracker.events(1, 1, 0, 5);
        tracker.events(2, 1, 0, 3);
        tracker.release(0, 1, 0, 5); // before the damage: cannot concern what it lost
        tracker.damaged(None);
        tracker.release(0, 1, 12, 14);
        // Stream 0 lost 10..20, of which 12..14 reached the collector; stream 1 lost
        // nothing; stream 2 has nothing after the damage, stream 3 nothing before it.
        tracker.events(0, 1, 20, 30);
        tracker.events(1, 1, 5, 9);
        tracker.events(3, 1, 7, 9);
        tracker.events(0, 1, 30, 40);
        assert_eq!(tracker.lost(), vec![(0, 1, 10, 12), (0, 1, 14, 20)]);
    }

    #[test]
    fn a_repaired_header_bounds_damage_after_the_last_readable_block() {
        let mut tracker = DamageTracker::default();
        tracker.events(0, 1, 0, 10);
        tracker.damaged(Some(events_header(0, 10, 12)));
        tracker.events(1, 1, 0, 4);
        // The first block of a stream, damaged: nothing before it to go by but its header.
        tracker.damaged(Some(events_header(2, 0, 1)));
        assert_eq!(tracker.lost(), vec![(0, 1, 10, 12), (2, 1, 0, 1)]);
    }

    #[test]
    fn gaps_before_the_damage_or_without_damage_are_not_lost() {
        let mut tracker = DamageTracker::default();
        tracker.events(0, 1, 0, 10);
        tracker.events(0, 1, 12, 20); // a tombstone covers 10..12, say
        tracker.damaged(Some(events_header(0, 20, 25)));
        tracker.events(0, 1, 25, 30);
        assert_eq!(tracker.lost(), vec![(0, 1, 20, 25)]);
        // Without damage a gap (here 10..12) is nobody's loss.
        let mut undamaged = DamageTracker::default();
        undamaged.events(0, 1, 0, 10);
        undamaged.release(0, 1, 10, 12);
        undamaged.events(0, 1, 12, 20);
        assert!(undamaged.lost().is_empty());
    }
}
