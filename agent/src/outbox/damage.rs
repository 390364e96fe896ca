//! Which events a damaged segment lost, worked out while the outbox loads.
//!
//! A segment other than the last one was sealed (fsynced) before the next one was opened, so
//! if it stops checking out part way, that is damage, not a torn write: everything it held
//! after the first bad block is gone, and the block headers that would say which sequence
//! numbers those were are gone with it. They can still be inferred, because each
//! `(stream, epoch)` numbers its events consecutively in the order they are written: what a
//! damaged segment lost of a stream lies between the end of that stream's last readable
//! event at the damage and its first event in a later segment. Releases written after the
//! damage are taken out (those events had reached the collector), and what remains gets a
//! `storage_failure` tombstone, so the collector records a gap instead of waiting forever
//! for events no one can send.
//!
//! A stream with no event in a later segment cannot be bounded this way (how many events
//! followed is unknown); the collector learns of that loss only from the sender's held range.

use super::ranges::SeqSet;
use driftlog_protocol::{Epoch, Seq, StreamId};
use std::collections::BTreeMap;

type StreamEpoch = (StreamId, Epoch);

#[derive(Debug, Default)]
pub(super) struct DamageTracker {
    /// The end of the events read so far, per `(stream, epoch)`.
    read_end: BTreeMap<StreamEpoch, Seq>,
    /// One per damaged segment met, in order.
    damages: Vec<Damage>,
    /// Releases read after the first damage.
    released_after: BTreeMap<StreamEpoch, SeqSet>,
}

#[derive(Debug)]
struct Damage {
    /// `read_end` at the damage.
    read_end: BTreeMap<StreamEpoch, Seq>,
    /// The first event start after the damage, per `(stream, epoch)`.
    next_start: BTreeMap<StreamEpoch, Seq>,
}

impl DamageTracker {
    /// A readable events block `[start, end)`, in the order the load meets them.
    pub(super) fn events(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) {
        for damage in &mut self.damages {
            damage.next_start.entry((stream, epoch)).or_insert(start);
        }
        let read_end = self.read_end.entry((stream, epoch)).or_insert(end);
        *read_end = (*read_end).max(end);
    }

    /// A readable release record.
    pub(super) fn release(&mut self, stream: StreamId, epoch: Epoch, start: Seq, end: Seq) {
        if !self.damages.is_empty() {
            self.released_after.entry((stream, epoch)).or_default().insert(start, end);
        }
    }

    /// The segment just read stops checking out part way.
    pub(super) fn damaged(&mut self) {
        self.damages.push(Damage { read_end: self.read_end.clone(), next_start: BTreeMap::new() });
    }

    /// The ranges lost and not released since: `(stream, epoch, start, end)`, in order.
    pub(super) fn lost(&self) -> Vec<(StreamId, Epoch, Seq, Seq)> {
        let mut lost: BTreeMap<StreamEpoch, SeqSet> = BTreeMap::new();
        for damage in &self.damages {
            for (&key, &next_start) in &damage.next_start {
                // A stream first seen after the damage lost nothing the sender still holds
                // anything below; its held range tells the collector.
                let Some(&read_end) = damage.read_end.get(&key) else { continue };
                lost.entry(key).or_default().insert(read_end, next_start);
            }
        }
        let mut out = Vec::new();
        for (key, mut set) in lost {
            if let Some(released) = self.released_after.get(&key) {
                for (start, end) in released.ranges_in(0, Seq::MAX) {
                    set.remove(start, end);
                }
            }
            out.extend(set.ranges_in(0, Seq::MAX).into_iter().map(|(start, end)| (key.0, key.1, start, end)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_between_the_damage_and_the_next_events_is_lost_less_what_was_released() {
        let mut tracker = DamageTracker::default();
        tracker.events(0, 1, 0, 10);
        tracker.events(1, 1, 0, 5);
        tracker.events(2, 1, 0, 3);
        tracker.damaged();
        // Stream 0 lost 10..20, of which 12..14 reached the collector; stream 1 lost
        // nothing; stream 2 has nothing after the damage, stream 3 nothing before it.
        tracker.events(0, 1, 20, 30);
        tracker.events(1, 1, 5, 9);
        tracker.events(3, 1, 7, 9);
        tracker.release(0, 1, 12, 14);
        tracker.events(0, 1, 30, 40);
        assert_eq!(tracker.lost(), vec![(0, 1, 10, 12), (0, 1, 14, 20)]);
    }

    #[test]
    fn nothing_is_lost_without_damage() {
        let mut tracker = DamageTracker::default();
        tracker.events(0, 1, 0, 10);
        tracker.events(0, 1, 12, 20);
        tracker.release(0, 1, 10, 12);
        assert!(tracker.lost().is_empty());
    }
}
