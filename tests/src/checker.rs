//! Global properties, checked as the simulation runs and at its end.
//!
//! - Every delivered event was enqueued, with the same content, and is delivered once.
//! - Every enqueued event ends up delivered or covered by a tombstone, never both.
//! - A device frees only what the collector has committed.
//! - No buffer exceeds its bound.

use crate::intervals::IntervalSet;
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::Event;
use driftlog_protocol::{DeviceId, Epoch, Seq, SeqRange};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug)]
struct Enqueued {
    at: u64,
    value: f64,
    mono: u64,
}

#[derive(Clone, Debug, Default)]
struct StreamRecord {
    enqueued: Vec<Enqueued>,
    delivered: IntervalSet,
    tombstoned: IntervalSet,
    /// Delivered or tombstoned, and committed by the collector.
    committed: IntervalSet,
    /// Delivered or tombstoned since the last commit.
    pending: Vec<(Seq, Seq)>,
}

/// Keeps at most this many violation messages (the first ones matter).
const VIOLATIONS_KEPT: usize = 20;

#[derive(Debug, Default)]
struct Violations {
    kept: Vec<String>,
    count: u64,
}

impl Violations {
    fn push(&mut self, message: String) {
        self.count += 1;
        if self.kept.len() < VIOLATIONS_KEPT {
            self.kept.push(message);
        }
    }
}

#[derive(Debug, Default)]
pub struct Checker {
    streams: BTreeMap<(DeviceId, Epoch), StreamRecord>,
    violations: Violations,
    latencies_micros: Vec<u64>,
    /// `(enqueued_at, delivered_at)` per delivered event, in delivery order.
    deliveries: Vec<(u64, u64)>,
    first_enqueue_at: Option<u64>,
    last_delivery_at: u64,
    delivered_events: u64,
    tombstoned_seqs: u64,
    unrecoverable_seqs: u64,
}

impl Checker {
    pub fn violation(&mut self, message: String) {
        self.violations.push(message);
    }

    pub fn violations(&self) -> &[String] {
        &self.violations.kept
    }

    pub fn violation_count(&self) -> u64 {
        self.violations.count
    }

    pub fn latencies_micros(&self) -> &[u64] {
        &self.latencies_micros
    }

    pub fn deliveries(&self) -> &[(u64, u64)] {
        &self.deliveries
    }

    /// True time from the first enqueue to the last delivery, µs.
    pub fn delivery_span_micros(&self) -> u64 {
        self.last_delivery_at.saturating_sub(self.first_enqueue_at.unwrap_or(0))
    }

    pub fn delivered_events(&self) -> u64 {
        self.delivered_events
    }

    pub fn tombstoned_seqs(&self) -> u64 {
        self.tombstoned_seqs
    }

    pub fn unrecoverable_seqs(&self) -> u64 {
        self.unrecoverable_seqs
    }

    pub fn enqueue(&mut self, device: DeviceId, epoch: Epoch, seq: Seq, at: u64, value: f64, mono: u64) {
        self.first_enqueue_at.get_or_insert(at);
        let record = self.streams.entry((device, epoch)).or_default();
        if record.enqueued.len() as u64 != seq {
            self.violations.push(format!("device {device} epoch {epoch}: seq {seq} assigned out of order"));
        }
        record.enqueued.push(Enqueued { at, value, mono });
    }

    pub fn deliver(&mut self, stream: StreamKey, seq: Seq, event: &Event<'_>, now: u64) {
        let record = self.streams.entry((stream.device, stream.epoch)).or_default();
        let Some(enqueued) = record.enqueued.get(seq as usize).copied() else {
            self.violation(format!("{}: delivered seq {seq} that was never enqueued", stream.event(seq)));
            return;
        };
        if record.delivered.contains(seq) || record.tombstoned.contains(seq) {
            self.violation(format!("{}: delivered twice", stream.event(seq)));
            return;
        }
        let value = match &event.payload {
            driftlog_protocol::wire::Payload::Gauge(sample) => sample.value,
            _ => f64::NAN,
        };
        if value != enqueued.value || event.mono.as_micros() != enqueued.mono {
            self.violations.push(format!("{}: content changed in transit", stream.event(seq)));
        }
        record.delivered.insert(seq, seq + 1);
        record.pending.push((seq, seq + 1));
        self.delivered_events += 1;
        self.last_delivery_at = self.last_delivery_at.max(now);
        self.latencies_micros.push(now.saturating_sub(enqueued.at));
        self.deliveries.push((enqueued.at, now));
    }

    /// A tombstone (or an inferred unrecoverable range) accounted for `range`.
    pub fn tombstone(&mut self, stream: StreamKey, range: SeqRange, unrecoverable: bool) {
        let record = self.streams.entry((stream.device, stream.epoch)).or_default();
        let mut overlap = false;
        for seq in range.start..range.end {
            overlap |= record.delivered.contains(seq) || record.tombstoned.contains(seq);
        }
        if range.end > record.enqueued.len() as u64 {
            self.violations.push(format!("{}: tombstone past the last enqueued seq", stream.event(range.end - 1)));
        }
        if overlap {
            self.violation(format!("{}..{}: tombstone over an accounted seq", stream.event(range.start), range.end));
            return;
        }
        record.tombstoned.insert(range.start, range.end);
        record.pending.push((range.start, range.end));
        if unrecoverable {
            self.unrecoverable_seqs += range.len();
        } else {
            self.tombstoned_seqs += range.len();
        }
    }

    /// The collector committed everything admitted so far.
    pub fn commit(&mut self) {
        for record in self.streams.values_mut() {
            for (start, end) in record.pending.drain(..) {
                record.committed.insert(start, end);
            }
        }
    }

    /// A device freed `range`: the collector must have committed all of it.
    pub fn release(&mut self, device: DeviceId, epoch: Epoch, range: SeqRange) {
        let record = self.streams.entry((device, epoch)).or_default();
        let held_end = record.enqueued.len() as u64;
        let range = SeqRange::new(range.start, range.end.min(held_end));
        if !record.committed.covers(range.start, range.end) {
            self.violations.push(format!(
                "device {device} epoch {epoch}: freed {}..{} before the collector committed it",
                range.start, range.end
            ));
        }
    }

    /// End-of-run accounting: every enqueued seq delivered xor tombstoned, and no more
    /// tombstones than deliberate drops.
    pub fn finish(&mut self, dropped_by_devices: u64) {
        let mut missing = Vec::new();
        for (&(device, epoch), record) in &self.streams {
            for seq in 0..record.enqueued.len() as u64 {
                if !record.delivered.contains(seq) && !record.tombstoned.contains(seq) {
                    missing.push(format!("{device}/{epoch}/{seq}"));
                }
            }
        }
        if !missing.is_empty() {
            let shown: Vec<_> = missing.iter().take(5).cloned().collect();
            self.violation(format!("{} events neither delivered nor tombstoned, e.g. {shown:?}", missing.len()));
        }
        // A dropped event may have been delivered before its tombstone arrived, so
        // tombstones can explain fewer seqs than were dropped, never more.
        if self.tombstoned_seqs > dropped_by_devices {
            self.violation(format!(
                "tombstones cover {} seqs but devices dropped only {dropped_by_devices}",
                self.tombstoned_seqs
            ));
        }
        if self.unrecoverable_seqs != 0 {
            self.violation(format!("{} seqs declared unrecoverable", self.unrecoverable_seqs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlog_protocol::Instant;
    use driftlog_protocol::wire::{Payload, Sample};

    const STREAM: StreamKey = StreamKey { device: 1, stream: 0, epoch: 1 };

    fn event(value: f64, mono: u64) -> Event<'static> {
        Event {
            mono: Instant::from_micros(mono),
            wall: None,
            payload: Payload::Gauge(Sample { name: "x", value, tags: Default::default() }),
        }
    }

    #[test]
    fn a_duplicate_delivery_is_a_violation() {
        let mut checker = Checker::default();
        checker.enqueue(1, 1, 0, 0, 5.0, 10);
        checker.deliver(STREAM, 0, &event(5.0, 10), 1);
        assert_eq!(checker.violation_count(), 0);
        checker.deliver(STREAM, 0, &event(5.0, 10), 2);
        assert_eq!(checker.violation_count(), 1);
    }

    #[test]
    fn changed_content_and_unknown_seqs_are_violations() {
        let mut checker = Checker::default();
        checker.enqueue(1, 1, 0, 0, 5.0, 10);
        checker.deliver(STREAM, 0, &event(6.0, 10), 1);
        checker.deliver(STREAM, 7, &event(5.0, 10), 1);
        assert_eq!(checker.violation_count(), 2);
    }

    #[test]
    fn freeing_before_commit_is_a_violation() {
        let mut checker = Checker::default();
        checker.enqueue(1, 1, 0, 0, 5.0, 10);
        checker.deliver(STREAM, 0, &event(5.0, 10), 1);
        checker.release(1, 1, SeqRange::new(0, 1));
        assert_eq!(checker.violation_count(), 1);
        checker.commit();
        checker.release(1, 1, SeqRange::new(0, 1));
        assert_eq!(checker.violation_count(), 1);
    }

    #[test]
    fn an_unaccounted_event_fails_the_final_check() {
        let mut checker = Checker::default();
        checker.enqueue(1, 1, 0, 0, 5.0, 10);
        checker.enqueue(1, 1, 1, 0, 6.0, 11);
        checker.deliver(STREAM, 0, &event(5.0, 10), 1);
        checker.finish(0);
        assert_eq!(checker.violation_count(), 1);
        assert!(checker.violations()[0].contains("neither delivered nor tombstoned"));
    }

    #[test]
    fn more_tombstones_than_drops_fail_the_final_check() {
        let mut checker = Checker::default();
        checker.enqueue(1, 1, 0, 0, 5.0, 10);
        checker.tombstone(STREAM, SeqRange::new(0, 1), false);
        checker.finish(0);
        assert_eq!(checker.violation_count(), 1);
    }
}
