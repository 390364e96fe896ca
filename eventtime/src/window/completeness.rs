//! Per-device event-time progress from sequence completeness: what the collector *knows* has
//! arrived, instead of what a heuristic watermark guesses (MillWheel's low watermark, with the
//! device as the injector; design note §5).
//!
//! # The rule
//!
//! A device assigns sequence numbers per `(stream, epoch)` in the order events enter its
//! buffer, after stamping them. Let `B` be the bound on how long before its sequencing an event
//! may be stamped (the agent stamps at ingest and sequences at its next group commit). For one
//! stream of one device:
//!
//! 1. **Prefix.** Within an epoch, the collector's contiguous prefix of sequence numbers
//!    (events, tombstones and inferred gaps alike) is complete. If the highest event in it was
//!    stamped at `t`, every event still to come was sequenced after it, so it was stamped no
//!    earlier than `t - B`.
//! 2. **Claims.** A heartbeat sealed at device time `T` says `assigned_end`: every sequence
//!    number below it had been assigned at `T`. Once the prefix reaches `assigned_end`, nothing
//!    sequenced before `T` can still arrive: the stream is complete through `T` (mapped to
//!    collector time through the clock model when the claim was stored).
//! 3. **Epochs.** A claim counts only if the device held nothing of an older epoch when it sent
//!    it (`held_epochs_back == 0`): then every older epoch's events were acknowledged, so they
//!    are in the log before the claim. Such a claim makes its epoch the stream's *base*; the
//!    prefix of rule 1 counts for the base epoch only (a rebooted device's newer epoch may run
//!    ahead while the old one's backlog drains). Before any such claim, nothing is known.
//! 4. **A counter that started over.** A claim of a *lower* epoch sent after the stream's
//!    latest claim (its time is later) can only come from a device whose epoch counter started
//!    again (a fresh disk, a reinstalled device): its earlier epochs are gone with the disk,
//!    so once such a claim holds nothing older it becomes the base as in rule 3. A lower
//!    epoch's claim sent earlier is a reordered heartbeat and is ignored (counted).
//!
//! The stream is complete through `C = max(prefix time of the base epoch, satisfied claim
//! times)`. The device is complete through the minimum of `C` over its *live* streams: those
//! whose latest claim is no more than `silence` older than the device's newest claim (a stream
//! the agent stopped serving must not hold the device for ever; a device that is offline stops
//! all its streams at once, so they all stay live). The device's watermark is that minimum
//! less `B`.
//!
//! Everything here is on the collector's clock (µs since 1970 in production): event times are
//! already corrected, claim times already mapped. Nothing reads a clock; every bound is a
//! constant below, and what a bound refuses is counted in [`CompletenessStats`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::{NEG_INF, Ticks};

/// Epochs tracked per stream that are not known complete (a device that rebooted this often
/// during one outage); events of further epochs do not advance completeness (counted).
pub const MAX_EPOCHS: usize = 8;
/// Out-of-order held ranges per epoch. The collector's receiver admits at most 32 at a time,
/// so a log never needs more; beyond it the highest range is forgotten (counted), which can
/// only delay completeness.
pub const MAX_RANGES: usize = 40;
/// Claims waiting for the prefix per stream; when full, the newest is replaced.
pub const MAX_PENDING_CLAIMS: usize = 8;
/// Streams tracked per device; further streams do not take part (counted).
pub const MAX_STREAMS: usize = 16;

/// What a heartbeat claimed, as stored in the log (see the [module docs](self), rule 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub stream: u32,
    pub epoch: u64,
    /// The heartbeat's send time on the collector's clock.
    pub at: Ticks,
    /// Every sequence number below this had been assigned at `at`.
    pub assigned_end: u64,
    /// The device still held events of an older epoch.
    pub older_epochs_held: bool,
    /// The device held a backlog it had not had acknowledged.
    pub draining: bool,
}

/// Inputs a bound refused or that contradicted earlier ones; all only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletenessStats {
    /// Claims older than one already seen, or whose `assigned_end` went backwards in an epoch
    /// (reordered heartbeats, or a device that lies): ignored.
    pub claims_ignored: u64,
    pub ranges_dropped: u64,
    pub epochs_dropped: u64,
    pub streams_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    start: u64,
    end: u64,
    /// Event time of the highest-numbered event in the range, if it holds events.
    last_ts: Option<Ticks>,
}

/// One epoch's held sequence numbers: the contiguous prefix and the ranges above it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct EpochPrefix {
    cumulative: u64,
    /// Event time of the highest-numbered event in the prefix.
    last_ts: Option<Ticks>,
    above: Vec<Held>,
}

impl EpochPrefix {
    /// Adds `[start, end)`; returns false if a bound made it forget a range.
    fn insert(&mut self, mut range: Held) -> bool {
        if range.end <= self.cumulative {
            return true;
        }
        range.start = range.start.max(self.cumulative);
        // Merge with every held range it overlaps or touches; the later one's time wins.
        let mut index = 0;
        while index < self.above.len() {
            let held = self.above[index];
            if held.end < range.start {
                index += 1;
                continue;
            }
            if held.start > range.end {
                break;
            }
            let (low, high) = if held.end <= range.end { (held, range) } else { (range, held) };
            range = Held {
                start: held.start.min(range.start),
                end: held.end.max(range.end),
                last_ts: high.last_ts.or(low.last_ts),
            };
            self.above.remove(index);
        }
        self.above.insert(index, range);
        // Absorb what became contiguous with the prefix.
        while let Some(first) = self.above.first().copied() {
            if first.start > self.cumulative {
                break;
            }
            self.above.remove(0);
            if first.end > self.cumulative {
                self.cumulative = first.end;
                self.last_ts = first.last_ts.or(self.last_ts);
            }
        }
        if self.above.len() > MAX_RANGES {
            self.above.pop();
            return false;
        }
        true
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PendingClaim {
    epoch: u64,
    at: Ticks,
    assigned_end: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StreamCompleteness {
    /// Epochs not known complete.
    epochs: BTreeMap<u64, EpochPrefix>,
    /// Epochs below this are complete (rule 3); `None` before the first claim that says so.
    base: Option<u64>,
    /// Through which time the stream is complete by satisfied claims.
    claimed: Ticks,
    pending: Vec<PendingClaim>,
    /// The latest claim: `(epoch, at, assigned_end)`.
    last_claim: Option<(u64, Ticks, u64)>,
    draining: bool,
}

impl StreamCompleteness {
    fn completeness(&self) -> Ticks {
        let prefix = self.base.and_then(|base| self.epochs.get(&base)).and_then(|p| p.last_ts).unwrap_or(NEG_INF);
        self.claimed.max(prefix)
    }

    fn satisfy(&mut self) {
        let Some(base) = self.base else { return };
        let cumulative = self.epochs.get(&base).map_or(0, |p| p.cumulative);
        while let Some(claim) = self.pending.first() {
            if claim.epoch != base || claim.assigned_end > cumulative {
                break;
            }
            self.claimed = self.claimed.max(claim.at);
            self.pending.remove(0);
        }
    }

    fn prefix(&mut self, epoch: u64, stats: &mut CompletenessStats) -> Option<&mut EpochPrefix> {
        // Epochs below the base are tracked too (within the bound): an honest device sends
        // none after the claim that made the base, except one whose counter started over
        // (rule 4), whose prefix must be known when its first claim arrives.
        if !self.epochs.contains_key(&epoch) && self.epochs.len() >= MAX_EPOCHS {
            stats.epochs_dropped += 1;
            return None;
        }
        Some(self.epochs.entry(epoch).or_default())
    }

    fn handle_range(&mut self, epoch: u64, held: Held, stats: &mut CompletenessStats) {
        let Some(prefix) = self.prefix(epoch, stats) else { return };
        if !prefix.insert(held) {
            stats.ranges_dropped += 1;
        }
        self.satisfy();
    }

    fn handle_claim(&mut self, claim: &Claim, stats: &mut CompletenessStats) {
        if let Some((epoch, at, end)) = self.last_claim {
            let backwards = claim.at < at || (claim.epoch == epoch && claim.assigned_end < end);
            let lower = claim.epoch < epoch;
            if backwards || (lower && claim.older_epochs_held) {
                stats.claims_ignored += 1;
                return;
            }
            if lower {
                // Rule 4: the device's epoch counter started over; what it had before is gone.
                self.base = None;
                self.pending.clear();
                self.epochs.retain(|e, _| *e <= claim.epoch);
            }
        }
        self.last_claim = Some((claim.epoch, claim.at, claim.assigned_end));
        self.draining = claim.draining || claim.older_epochs_held;
        if claim.older_epochs_held {
            return; // Says only that older epochs are still on their way.
        }
        if self.base.is_none_or(|base| base < claim.epoch) {
            self.base = Some(claim.epoch);
            self.epochs.retain(|epoch, _| *epoch >= claim.epoch);
            self.pending.retain(|pending| pending.epoch >= claim.epoch);
        }
        let pending = PendingClaim { epoch: claim.epoch, at: claim.at, assigned_end: claim.assigned_end };
        if self.pending.len() >= MAX_PENDING_CLAIMS {
            self.pending.pop();
        }
        self.pending.push(pending);
        // A claim of an epoch that has no events yet: track its (empty) prefix.
        let _ = self.prefix(claim.epoch, stats);
        self.satisfy();
    }
}

/// One device's completeness over its streams; see the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCompleteness {
    streams: BTreeMap<u32, StreamCompleteness>,
    stats: CompletenessStats,
}

impl DeviceCompleteness {
    fn stream(&mut self, stream: u32) -> Option<&mut StreamCompleteness> {
        if !self.streams.contains_key(&stream) && self.streams.len() >= MAX_STREAMS {
            self.stats.streams_dropped += 1;
            return None;
        }
        Some(self.streams.entry(stream).or_default())
    }

    /// Events `[first_seq, first_seq + count)` of `(stream, epoch)` are in; the last of them
    /// has event time `last_ts`.
    pub fn handle_events(&mut self, stream: u32, epoch: u64, first_seq: u64, count: u64, last_ts: Ticks) {
        if count == 0 {
            return;
        }
        let held = Held { start: first_seq, end: first_seq.saturating_add(count), last_ts: Some(last_ts) };
        let mut stats = self.stats;
        if let Some(state) = self.stream(stream) {
            state.handle_range(epoch, held, &mut stats);
        }
        self.stats = stats;
    }

    /// A tombstone or an inferred gap occupies `[start, end)` of `(stream, epoch)`.
    pub fn handle_gap(&mut self, stream: u32, epoch: u64, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut stats = self.stats;
        if let Some(state) = self.stream(stream) {
            state.handle_range(epoch, Held { start, end, last_ts: None }, &mut stats);
        }
        self.stats = stats;
    }

    pub fn handle_claim(&mut self, claim: &Claim) {
        let mut stats = self.stats;
        if let Some(state) = self.stream(claim.stream) {
            state.handle_claim(claim, &mut stats);
        }
        self.stats = stats;
    }

    /// The streams that take part: their latest claim is at most `silence` older than the
    /// device's newest. Streams that never claimed take no part.
    fn live(&self, silence: Ticks) -> impl Iterator<Item = &StreamCompleteness> {
        let newest = self.streams.values().filter_map(|s| s.last_claim.map(|(_, at, _)| at)).max().unwrap_or(NEG_INF);
        let oldest_live = newest.saturating_sub(silence.max(0));
        self.streams.values().filter(move |s| s.last_claim.is_some_and(|(_, at, _)| at >= oldest_live))
    }

    /// Through which time every live stream is complete (before subtracting `B`); `-inf`
    /// before the first claim.
    pub fn complete_through(&self, silence: Ticks) -> Ticks {
        self.live(silence).map(StreamCompleteness::completeness).min().unwrap_or(NEG_INF)
    }

    /// Whether a live stream's latest claim said the device is draining a backlog.
    pub fn draining(&self, silence: Ticks) -> bool {
        self.live(silence).any(|s| s.draining)
    }

    pub fn stats(&self) -> CompletenessStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(stream: u32, epoch: u64, at: Ticks, assigned_end: u64) -> Claim {
        Claim { stream, epoch, at, assigned_end, older_epochs_held: false, draining: false }
    }

    #[test]
    fn nothing_is_known_before_a_claim_and_the_prefix_counts_after_one() {
        let mut device = DeviceCompleteness::default();
        device.handle_events(0, 1, 0, 10, 100);
        assert_eq!(device.complete_through(30), NEG_INF);
        device.handle_claim(&claim(0, 1, 150, 12));
        // Not satisfied yet (prefix 10 < 12), but the base epoch's prefix counts.
        assert_eq!(device.complete_through(30), 100);
        device.handle_events(0, 1, 10, 2, 140);
        assert_eq!(device.complete_through(30), 150);
    }

    #[test]
    fn out_of_order_ranges_join_the_prefix_and_gaps_count_as_held() {
        let mut prefix = EpochPrefix::default();
        assert!(prefix.insert(Held { start: 5, end: 8, last_ts: Some(80) }));
        assert!(prefix.insert(Held { start: 10, end: 12, last_ts: None }));
        assert_eq!((prefix.cumulative, prefix.above.len()), (0, 2));
        assert!(prefix.insert(Held { start: 0, end: 5, last_ts: Some(50) }));
        assert_eq!((prefix.cumulative, prefix.last_ts), (8, Some(80)));
        assert!(prefix.insert(Held { start: 8, end: 10, last_ts: None }));
        // The tombstone at 8..10 and the gap at 10..12 hold no events: the time stays 80.
        assert_eq!((prefix.cumulative, prefix.last_ts, prefix.above.len()), (12, Some(80), 0));
        // Overlapping and duplicate ranges change nothing they should not.
        assert!(prefix.insert(Held { start: 3, end: 14, last_ts: Some(140) }));
        assert_eq!((prefix.cumulative, prefix.last_ts), (14, Some(140)));
    }

    #[test]
    fn a_bound_forgets_the_highest_range_and_says_so() {
        let mut prefix = EpochPrefix::default();
        for i in 0..MAX_RANGES as u64 {
            assert!(prefix.insert(Held { start: 2 * i + 1, end: 2 * i + 2, last_ts: None }));
        }
        assert!(!prefix.insert(Held { start: 1_000, end: 1_001, last_ts: None }));
        assert_eq!(prefix.above.len(), MAX_RANGES);
        assert_eq!(prefix.above.last().map(|h| h.end), Some(2 * MAX_RANGES as u64));
    }

    #[test]
    fn the_device_is_as_complete_as_its_least_complete_live_stream() {
        let mut device = DeviceCompleteness::default();
        device.handle_claim(&claim(0, 1, 100, 0));
        device.handle_claim(&claim(1, 1, 90, 0));
        assert_eq!(device.complete_through(30), 90);
        // Stream 1 stops claiming; once stream 0's claims run 30 past it, it no longer holds.
        device.handle_claim(&claim(0, 1, 120, 0));
        assert_eq!(device.complete_through(30), 90);
        device.handle_claim(&claim(0, 1, 121, 0));
        assert_eq!(device.complete_through(30), 121);
    }

    #[test]
    fn claims_that_go_backwards_are_ignored_and_counted() {
        let mut device = DeviceCompleteness::default();
        device.handle_claim(&claim(0, 2, 100, 0));
        device.handle_claim(&claim(0, 2, 90, 0));
        // A reordered heartbeat of an older epoch, sent before the latest claim.
        device.handle_claim(&claim(0, 1, 95, 0));
        device.handle_events(0, 2, 0, 5, 150);
        device.handle_claim(&claim(0, 2, 160, 5));
        device.handle_claim(&claim(0, 2, 170, 4));
        assert_eq!(device.stats().claims_ignored, 3);
        assert_eq!(device.complete_through(30), 160);
    }

    #[test]
    fn an_older_epoch_held_by_the_device_keeps_the_newer_one_from_counting() {
        let mut device = DeviceCompleteness::default();
        // Before an outage, epoch 1 was complete through 100.
        device.handle_events(0, 1, 0, 10, 95);
        device.handle_claim(&claim(0, 1, 100, 10));
        assert_eq!(device.complete_through(30), 100);
        // The device rebooted offline (epoch 2) and reconnects: live events of epoch 2 and a
        // claim that still holds epoch 1's backlog.
        device.handle_events(0, 2, 0, 3, 1_000);
        device.handle_claim(&Claim { older_epochs_held: true, draining: true, ..claim(0, 2, 1_001, 3) });
        assert_eq!(device.complete_through(30), 100);
        assert!(device.draining(30));
        // Epoch 1's backlog arrives oldest first and advances completeness as it goes.
        device.handle_events(0, 1, 10, 20, 400);
        assert_eq!(device.complete_through(30), 400);
        // Acknowledged: the device holds nothing older, and epoch 2 is complete.
        device.handle_claim(&claim(0, 2, 1_010, 3));
        assert_eq!(device.complete_through(30), 1_010);
        assert!(!device.draining(30));
    }

    #[test]
    fn a_device_whose_epoch_counter_started_over_is_followed() {
        let mut device = DeviceCompleteness::default();
        device.handle_events(0, 9, 0, 10, 95);
        device.handle_claim(&claim(0, 9, 100, 10));
        assert_eq!(device.complete_through(30), 100);
        // Reinstalled on a fresh disk: epoch 3, lower than 9. Its events come before its
        // first claim, which is sent later than epoch 9's last.
        device.handle_events(0, 3, 0, 4, 500);
        assert_eq!(device.complete_through(30), 100);
        device.handle_claim(&claim(0, 3, 510, 4));
        assert_eq!(device.complete_through(30), 510);
        device.handle_events(0, 3, 4, 2, 600);
        device.handle_claim(&claim(0, 3, 620, 6));
        assert_eq!(device.complete_through(30), 620);
        // A heartbeat of epoch 9 delayed in the network changes nothing.
        device.handle_claim(&claim(0, 9, 101, 10));
        assert_eq!(device.complete_through(30), 620);
        assert_eq!(device.stats().claims_ignored, 1);
    }
}
