//! Global properties, checked as the simulation runs and at its end.
//!
//! - Every delivered event was enqueued, with the same content, and is delivered once. An
//!   event whose input was told the write failed may be delivered (a failed fsync leaves
//!   the data unknown), with its own content; never in place of an accepted one.
//! - Every enqueued (accepted) event ends up delivered or covered by a tombstone, never both.
//! - `storage_failure` tombstones cover no more than the devices counted as lost to damage,
//!   and there is no such loss where the disk had no latent fault.
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
    /// Events an input was told were accepted, by sequence number.
    enqueued: BTreeMap<Seq, Enqueued>,
    /// Events an input was told failed, which may still be on disk at their seq.
    attempted: BTreeMap<Seq, Vec<Enqueued>>,
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
    storage_failure_seqs: u64,
    enqueued_events: u64,
}

impl StreamRecord {
    /// One past the highest seq any input was given (accepted or failed).
    fn end(&self) -> Seq {
        let ok = self.enqueued.last_key_value().map_or(0, |(&seq, _)| seq + 1);
        let attempted = self.attempted.last_key_value().map_or(0, |(&seq, _)| seq + 1);
        ok.max(attempted)
    }
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

    /// An input was told the event was accepted at `seq`.
    pub fn enqueue(&mut self, device: DeviceId, epoch: Epoch, seq: Seq, at: u64, value: f64, mono: u64) {
        self.first_enqueue_at.get_or_insert(at);
        self.enqueued_events += 1;
        let record = self.streams.entry((device, epoch)).or_default();
        let last_ok = record.enqueued.last_key_value().map(|(&seq, _)| seq);
        // Consecutive, except that a seq a failed write was given may be given again.
        if last_ok.is_some_and(|last| seq <= last) || seq > record.end() {
            self.violations.push(format!("device {device} epoch {epoch}: seq {seq} assigned out of order"));
        }
        record.enqueued.insert(seq, Enqueued { at, value, mono });
    }

    /// An input was told writing the event at `seq` failed.
    pub fn attempt(&mut self, device: DeviceId, epoch: Epoch, seq: Seq, at: u64, value: f64, mono: u64) {
        let record = self.streams.entry((device, epoch)).or_default();
        record.attempted.entry(seq).or_default().push(Enqueued { at, value, mono });
    }

    /// Events an input was told were accepted.
    pub fn enqueued_events(&self) -> u64 {
        self.enqueued_events
    }

    /// The collector received a `storage_failure` tombstone over `seqs` new seqs.
    pub fn storage_failure(&mut self, seqs: u64) {
        self.storage_failure_seqs += seqs;
    }

    /// Damage may cost events only as counted `storage_failure` tombstones, and only where
    /// the disk had a latent fault (a flipped bit, a failed fsync).
    pub fn check_storage_failures(&mut self, counted_by_devices: u64, latent_faults: u64) {
        if self.storage_failure_seqs > counted_by_devices {
            self.violation(format!(
                "storage_failure tombstones cover {} seqs, devices counted {counted_by_devices} lost to damage",
                self.storage_failure_seqs
            ));
        }
        if latent_faults == 0 && counted_by_devices > 0 {
            self.violation(format!("{counted_by_devices} events counted lost to damage on disks without a fault"));
        }
    }

    pub fn deliver(&mut self, stream: StreamKey, seq: Seq, event: &Event<'_>, now: u64) {
        let record = self.streams.entry((stream.device, stream.epoch)).or_default();
        let value = match &event.payload {
            driftlog_protocol::wire::Payload::Gauge(sample) => sample.value,
            _ => f64::NAN,
        };
        let same = |enqueued: &Enqueued| value == enqueued.value && event.mono.as_micros() == enqueued.mono;
        let enqueued = match (record.enqueued.get(&seq), record.attempted.get(&seq)) {
            (Some(enqueued), _) => {
                if !same(enqueued) {
                    self.violations.push(format!("{}: content changed in transit", stream.event(seq)));
                }
                *enqueued
            }
            // A write reported failed reached the disk after all: its own content only.
            (None, Some(attempts)) if attempts.iter().any(same) => *attempts.iter().find(|a| same(a)).expect("found"),
            (None, Some(_)) => {
                self.violations.push(format!("{}: content of no write given this seq", stream.event(seq)));
                return;
            }
            (None, None) => {
                self.violation(format!("{}: delivered seq {seq} that was never enqueued", stream.event(seq)));
                return;
            }
        };
        let record = self.streams.entry((stream.device, stream.epoch)).or_default();
        if record.delivered.contains(seq) || record.tombstoned.contains(seq) {
            self.violation(format!("{}: delivered twice", stream.event(seq)));
            return;
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
        if range.end > record.end() {
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
        let held_end = record.end();
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
            for &seq in record.enqueued.keys() {
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
