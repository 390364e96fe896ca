//! Which heartbeats' completeness claims go into the log, and on which clock.
//!
//! A heartbeat says "at my time T, every sequence number below N had been assigned". The
//! window pipeline turns that into per-device watermarks (see
//! `driftlog_eventtime::window::completeness`), but it reads only the log, so the acceptor
//! stores the claim as a `claim` record, with T mapped to the collector's clock by the
//! device's clock model in force (clamped to the heartbeat's receive time: a claim cannot be
//! about a moment after it arrived). Replays then read the same numbers.
//!
//! A device's heartbeats come about once a second per stream; a claim is stored at most every
//! `watermark.claim_interval_ms` per stream, plus at once whenever it says something new (a
//! drain started or ended, an older epoch was released, a new epoch began), so a misbehaving
//! device cannot fill the log with claims and the end of a drain is never delayed.

use crate::clocks::Clocks;
use crate::log::record::{ClaimRecord, guard_config};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::{Header, HeartbeatRepr};
use std::collections::HashMap;

/// What the last stored claim of a stream said.
#[derive(Clone, Copy, Debug)]
struct Stored {
    at_unix_us: i64,
    older_epochs_held: bool,
    draining: bool,
}

#[derive(Debug)]
pub struct Claims {
    interval_us: i64,
    /// Bounded by `max_streams`: beyond it the table is cleared (claims are then stored at
    /// once, which costs a record each, never correctness).
    last: HashMap<StreamKey, Stored>,
    max_streams: usize,
    /// Claims not stored because one of the same stream was stored less than an interval ago.
    pub skipped: u64,
}

impl Claims {
    pub fn new(interval_ms: u64, max_streams: usize) -> Claims {
        Claims {
            interval_us: i64::try_from(interval_ms.saturating_mul(1_000)).unwrap_or(i64::MAX),
            last: HashMap::new(),
            max_streams: max_streams.max(1),
            skipped: 0,
        }
    }

    /// The record to store for an accepted heartbeat of `stream`, if one is due. The clock
    /// models must already have this heartbeat's sample.
    pub fn admit(
        &mut self,
        stream: StreamKey,
        header: &Header,
        heartbeat: &HeartbeatRepr,
        received_unix_us: i64,
        clocks: &Clocks,
    ) -> Option<ClaimRecord> {
        let sent_at_us = header.sent_at.as_micros();
        let older_epochs_held = heartbeat.held_epochs_back > 0;
        // The heartbeat's own epoch is the header's: its send time is on that boot's clock.
        let at_unix_us = match clocks.fix(stream.device, header.epoch) {
            Some(fix) => fix.correct(&guard_config(), sent_at_us, sent_at_us, received_unix_us).unix_us,
            None => received_unix_us,
        }
        .min(received_unix_us);
        if let Some(last) = self.last.get(&stream)
            && last.older_epochs_held == older_epochs_held
            && last.draining == heartbeat.draining
            && at_unix_us.saturating_sub(last.at_unix_us) < self.interval_us
        {
            self.skipped += 1;
            return None;
        }
        if self.last.len() >= self.max_streams && !self.last.contains_key(&stream) {
            self.last.clear();
        }
        self.last.insert(stream, Stored { at_unix_us, older_epochs_held, draining: heartbeat.draining });
        Some(ClaimRecord {
            device: stream.device,
            stream: stream.stream,
            epoch: stream.epoch,
            sent_at_us,
            assigned_end: heartbeat.assigned_end,
            older_epochs_held,
            draining: heartbeat.draining,
            at_unix_us,
            received_unix_us,
        })
    }

    /// A commit failed and was rolled back: the claims it held are gone, so the next heartbeat
    /// of every stream is stored again.
    pub fn forget(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlog_eventtime::clock::ClockConfig;
    use driftlog_protocol::Instant;
    use driftlog_protocol::wire::FrameKind;

    fn heartbeat(assigned_end: u64, draining: bool) -> HeartbeatRepr {
        HeartbeatRepr {
            stream: 0,
            epoch: 3,
            oldest_available: 0,
            next_seq: assigned_end,
            wall_now: None,
            ack_timing: None,
            assigned_end,
            held_epochs_back: 0,
            draining,
        }
    }

    #[test]
    fn claims_are_stored_once_an_interval_and_at_once_when_they_say_something_new() {
        let t0 = 1_795_000_000_000_000;
        let mut clocks = Clocks::new(ClockConfig::default(), 10);
        let mut claims = Claims::new(1_000, 10);
        let key = StreamKey { device: 7, stream: 0, epoch: 3 };
        let mut admit = |sent_ms: u64, draining: bool, clocks: &mut Clocks| {
            let sent_at = Instant::from_micros(5_000_000 + sent_ms * 1_000);
            let received = t0 + sent_ms as i64 * 1_000 + 20_000;
            clocks.handle_frame(7, 3, sent_at.as_micros(), received);
            let header = Header { kind: FrameKind::Heartbeat, key_id: 1, epoch: 3, sent_at };
            claims.admit(key, &header, &heartbeat(10, draining), received, clocks)
        };
        let first = admit(0, false, &mut clocks).expect("the first claim is stored");
        // One sample: the model is the naive offset, so the claim maps to its receive time.
        assert_eq!(first.at_unix_us, first.received_unix_us);
        assert!(admit(400, false, &mut clocks).is_none(), "within the interval");
        assert!(admit(500, true, &mut clocks).is_some(), "a drain began: stored at once");
        assert!(admit(600, false, &mut clocks).is_some(), "the drain ended: stored at once");
        assert!(admit(1_100, false, &mut clocks).is_none());
        let later = admit(1_700, false, &mut clocks).expect("an interval after the last stored");
        assert!(later.at_unix_us <= later.received_unix_us);
        assert_eq!(claims.skipped, 2);
    }

    /// A heartbeat whose device time maps far past its arrival (a clock that jumped, or a
    /// device that lies) claims no more than its arrival: a claim is never about the future.
    #[test]
    fn a_claim_never_maps_after_its_arrival() {
        let t0 = 1_795_000_000_000_000;
        let mut clocks = Clocks::new(ClockConfig::default(), 10);
        for i in 0..10u64 {
            clocks.handle_frame(7, 3, 1_000_000 + i * 1_000_000, t0 + i as i64 * 1_000_000);
        }
        let mut claims = Claims::new(1_000, 10);
        let received = t0 + 10_000_000;
        for ahead_s in [1u64, 3_600, 86_400 * 365] {
            let sent_at = Instant::from_micros(11_000_000 + ahead_s * 1_000_000);
            let header = Header { kind: FrameKind::Heartbeat, key_id: 1, epoch: 3, sent_at };
            let key = StreamKey { device: 7, stream: ahead_s as u32, epoch: 3 };
            let claim = claims.admit(key, &header, &heartbeat(1, false), received, &clocks).expect("stored");
            assert_eq!(claim.at_unix_us, received, "{ahead_s} s ahead");
        }
    }
}
