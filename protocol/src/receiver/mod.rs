//! The collector side of reliable delivery for one `(device, stream, epoch)`.
//!
//! The receiver admits each sequence number exactly once: a contiguous high-water mark
//! (`cumulative`: everything below it was received) plus a bounded set of out-of-order
//! ranges above it. Tombstones occupy sequence numbers like events, so every number is
//! eventually accounted for as delivered or dropped on purpose.
//!
//! Two copies of that state exist: `received` (what was admitted) and `durable` (what the
//! caller has committed, together with the events, in one transaction). ACKs are built only
//! from `durable`, so a device never frees an event the collector could still lose. The
//! durable state is a small serializable value ([`DedupState`]); after a crash,
//! [`Receiver::restore`] resumes from it and a retransmission of anything past it is admitted
//! again, anything before it is recognised as a duplicate.

mod dedup;
mod stats;

pub use dedup::DedupState;
pub use stats::ReceiverStats;

use crate::wire::{AckRepr, Header, HeartbeatRepr, MAX_NAK_RANGES, MAX_SACK_RANGES, NakRepr, Reject};
use crate::{Epoch, Instant, SeqRange, SplitMix64, StreamId};
use core::time::Duration;

#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Longest an ACK waits after the first unacknowledged durable event.
    pub ack_delay_max: Duration,
    /// At most one ACK per this interval (the "bounded rate").
    pub ack_interval_min: Duration,
    /// ACK at once after this many newly durable events.
    pub ack_every_events: u64,
    /// RTT assumed until the device reports a four-timestamp sample.
    pub initial_rtt: Duration,
    /// A gap is NAKed after a uniformly random delay in `[0, rtt * nak_delay_rtt_fraction]`,
    /// so that receivers of a multicast group do not NAK in lockstep and short reordering
    /// resolves itself first.
    pub nak_delay_rtt_fraction: f64,
    /// Floor of the interval between repeated NAKs of a gap (which is otherwise one RTT,
    /// doubling while nothing arrives).
    pub nak_repeat_min: Duration,
    pub nak_repeat_max: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> ReceiverConfig {
        ReceiverConfig {
            ack_delay_max: Duration::from_millis(25),
            ack_interval_min: Duration::from_millis(1),
            ack_every_events: 64,
            initial_rtt: Duration::from_millis(100),
            nak_delay_rtt_fraction: 0.25,
            nak_repeat_min: Duration::from_millis(5),
            nak_repeat_max: Duration::from_secs(2),
        }
    }
}

/// A frame the receiver wants sent to the device; the caller seals it with the device's key.
// No Box in no_std: the variants stay inline and live briefly on the stack.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    Ack(AckRepr),
    Nak(NakRepr),
}

/// Tracks one sequence space. `N` bounds the out-of-order ranges held at once.
#[derive(Clone, Debug)]
pub struct Receiver<const N: usize = 32> {
    config: ReceiverConfig,
    stream: StreamId,
    epoch: Epoch,
    received: DedupState<N>,
    durable: DedupState<N>,
    /// The device has offered everything below this (data seen, or its heartbeat said so).
    known_end: u64,
    rng: SplitMix64,
    rtt: Duration,
    ack_needed: bool,
    /// A gap was filled or data arrived out of order: the sender may be about to declare
    /// frames lost, so the next ACK goes out as soon as the state is durable (QUIC does the
    /// same, RFC 9000 section 13.2.1).
    ack_urgent: bool,
    newly_durable: u64,
    first_unacked_at: Option<Instant>,
    last_ack_at: Option<Instant>,
    /// The newest frame seen: sender boot epoch, device send time and our receive time.
    /// ACKs echo it. "Newest" by send time, not by arrival, so an ACK never credits a
    /// retransmission that the receiver has not seen (the sender relies on that to avoid
    /// taking an ACK of the original for an ACK of the retransmission).
    newest_frame: Option<(Epoch, Instant, Instant)>,
    nak_at: Option<Instant>,
    nak_repeats: u32,
    stats: ReceiverStats,
}

impl<const N: usize> Receiver<N> {
    pub fn new(config: ReceiverConfig, stream: StreamId, epoch: Epoch, seed: u64) -> Self {
        Self::restore(config, stream, epoch, seed, DedupState::default())
    }

    /// Resumes from a committed state: everything it covers is a duplicate from now on.
    pub fn restore(config: ReceiverConfig, stream: StreamId, epoch: Epoch, seed: u64, state: DedupState<N>) -> Self {
        Receiver {
            rtt: config.initial_rtt,
            config,
            stream,
            epoch,
            known_end: state.end(),
            received: state.clone(),
            durable: state,
            rng: SplitMix64::new(seed),
            ack_needed: false,
            ack_urgent: false,
            newly_durable: 0,
            first_unacked_at: None,
            last_ack_at: None,
            newest_frame: None,
            nak_at: None,
            nak_repeats: 0,
            stats: ReceiverStats::default(),
        }
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// What was admitted so far. Commit it with the events, then pass it to
    /// [`Self::handle_durable`].
    pub fn state(&self) -> &DedupState<N> {
        &self.received
    }

    pub fn durable_state(&self) -> &DedupState<N> {
        &self.durable
    }

    /// Admits a batch of events: calls `on_new` for each piece of `range` not seen before
    /// (deliver exactly those events). Fails, changing nothing, when the out-of-order set
    /// would overflow; the sender will retransmit.
    pub fn handle_data(
        &mut self,
        now: Instant,
        header: &Header,
        range: SeqRange,
        on_new: impl FnMut(SeqRange),
    ) -> Result<u64, Reject> {
        let new = self.admit_frame(now, header, range, on_new)?;
        self.stats.events_new += new;
        self.stats.events_duplicate += range.len() - new;
        Ok(new)
    }

    /// Admits a tombstone: `on_new` gets the pieces of `range` not seen before, which are
    /// now accounted for as dropped on purpose by the device.
    pub fn handle_tombstone(
        &mut self,
        now: Instant,
        header: &Header,
        range: SeqRange,
        on_new: impl FnMut(SeqRange),
    ) -> Result<u64, Reject> {
        let new = self.admit_frame(now, header, range, on_new)?;
        self.stats.tombstoned += new;
        Ok(new)
    }

    /// Learns the device's held range and clock sample. Sequence numbers below what the
    /// device still holds that never arrived can never arrive: `on_unrecoverable` gets them,
    /// and they are accounted for like a tombstone.
    pub fn handle_heartbeat(
        &mut self,
        now: Instant,
        header: &Header,
        heartbeat: &HeartbeatRepr,
        on_unrecoverable: impl FnMut(SeqRange),
    ) {
        self.note_frame(now, header);
        if let Some(round_trip) = heartbeat.ack_timing.and_then(|t| t.round_trip_micros()) {
            let sample = Duration::from_micros(round_trip);
            self.rtt = (self.rtt * 7 + sample) / 8;
        }
        if heartbeat.oldest_available > self.received.cumulative {
            let lost = SeqRange::new(self.received.cumulative, heartbeat.oldest_available);
            if let Ok(count) = self.admit(now, lost, on_unrecoverable) {
                self.stats.unrecoverable += count;
            }
        }
        if heartbeat.next_seq > self.known_end {
            self.known_end = heartbeat.next_seq;
            self.schedule_nak(now);
        }
        if !self.durable.is_empty() {
            // Tell an idle device what it may free, even if earlier ACKs were lost.
            self.ack_needed = true;
            self.first_unacked_at.get_or_insert(now);
        }
    }

    /// Admits the range of a data or tombstone frame. A frame that brings nothing new means
    /// the device missed our ACK: one goes out again (at the bounded rate).
    fn admit_frame(
        &mut self,
        now: Instant,
        header: &Header,
        range: SeqRange,
        on_new: impl FnMut(SeqRange),
    ) -> Result<u64, Reject> {
        let new = self.admit(now, range, on_new)?;
        self.note_frame(now, header);
        if new < range.len() {
            self.ack_needed = true;
            self.first_unacked_at.get_or_insert(now);
        }
        Ok(new)
    }

    fn note_frame(&mut self, now: Instant, header: &Header) {
        let newer = match self.newest_frame {
            None => true,
            Some((epoch, sent_at, _)) => header.epoch > epoch || (header.epoch == epoch && header.sent_at > sent_at),
        };
        if newer {
            self.newest_frame = Some((header.epoch, header.sent_at, now));
        }
    }

    /// Records that `state` (a value returned by [`Self::state`] earlier) is committed.
    pub fn handle_durable(&mut self, now: Instant, state: &DedupState<N>) {
        let before = self.durable.seq_count();
        let after = state.seq_count();
        if after > before {
            self.durable = state.clone();
            self.newly_durable += after - before;
            self.ack_needed = true;
            self.first_unacked_at.get_or_insert(now);
        }
    }

    fn admit(&mut self, now: Instant, range: SeqRange, mut on_new: impl FnMut(SeqRange)) -> Result<u64, Reject> {
        let out_of_order = range.start != self.received.end() || self.received.end() < self.known_end;
        let mut new = 0;
        // An insert fails only by overflowing the out-of-order set, which a range that starts
        // within the contiguous prefix, with no gaps held, cannot do: only other ranges are
        // tried on a copy first, so that a refused one reports no pieces and changes nothing.
        let in_order = self.received.ranges().is_empty() && range.start <= self.received.cumulative;
        let tried = if in_order {
            None
        } else {
            let mut next = self.received.clone();
            if next.insert(range).is_err() {
                self.stats.reorder_window_full += 1;
                return Err(Reject::ReorderWindowFull);
            }
            Some(next)
        };
        self.received.for_each_missing(range, |piece| {
            new += piece.len();
            on_new(piece);
        });
        match tried {
            Some(next) => self.received = next,
            None => {
                let _ = self.received.insert(range);
            }
        }
        self.known_end = self.known_end.max(range.end);
        if new > 0 {
            self.nak_repeats = 0;
            self.ack_urgent |= out_of_order;
        }
        if self.has_gaps() {
            self.schedule_nak(now);
        } else {
            self.nak_at = None;
        }
        Ok(new)
    }

    fn has_gaps(&self) -> bool {
        self.received.end() < self.known_end || !self.received.ranges().is_empty()
    }

    fn schedule_nak(&mut self, now: Instant) {
        if self.nak_at.is_some() || !self.has_gaps() {
            return;
        }
        let jitter_max = self.rtt.mul_f64(self.config.nak_delay_rtt_fraction);
        let jitter = self.rng.below_inclusive(u64::try_from(jitter_max.as_micros()).unwrap_or(u64::MAX));
        self.nak_at = Some(now + Duration::from_micros(jitter));
    }

    fn nak_repeat_interval(&self) -> Duration {
        let base = self.rtt.max(self.config.nak_repeat_min);
        base.saturating_mul(1 << self.nak_repeats.min(16)).min(self.config.nak_repeat_max)
    }

    fn ack_deadline(&self) -> Option<Instant> {
        if !self.ack_needed {
            return None;
        }
        let by_count =
            self.newly_durable >= self.config.ack_every_events || (self.ack_urgent && self.newly_durable > 0);
        let due = if by_count { Instant::ZERO } else { self.first_unacked_at? + self.config.ack_delay_max };
        let allowed = self.last_ack_at.map_or(Instant::ZERO, |at| at + self.config.ack_interval_min);
        Some(due.max(allowed))
    }

    /// The next deadline for [`Self::poll_transmit`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.ack_deadline(), self.nak_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next ACK or NAK that is due, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Control> {
        if self.ack_deadline().is_some_and(|at| at <= now) {
            return Some(Control::Ack(self.build_ack(now)));
        }
        if self.nak_at.is_some_and(|at| at <= now) {
            if let Some(nak) = self.build_nak() {
                self.nak_at = Some(now + self.nak_repeat_interval());
                self.nak_repeats = self.nak_repeats.saturating_add(1);
                self.stats.naks_sent += 1;
                return Some(Control::Nak(nak));
            }
            self.nak_at = None;
        }
        None
    }

    fn build_ack(&mut self, now: Instant) -> AckRepr {
        self.ack_needed = false;
        // Still urgent if what made it urgent is not durable yet.
        self.ack_urgent = self.received != self.durable && self.ack_urgent && self.newly_durable == 0;
        self.newly_durable = 0;
        self.first_unacked_at = None;
        self.last_ack_at = Some(now);
        self.stats.acks_sent += 1;
        let (echo_sent_at, received_at) =
            self.newest_frame.map_or((Instant::ZERO, now), |(_, sent_at, at)| (sent_at, at));
        AckRepr {
            stream: self.stream,
            epoch: self.epoch,
            cumulative: self.durable.cumulative,
            sack: self.durable.ranges().iter().take(MAX_SACK_RANGES).collect(),
            echo_sent_at,
            received_at,
        }
    }

    fn build_nak(&self) -> Option<NakRepr> {
        let mut missing = heapless::Vec::<SeqRange, MAX_NAK_RANGES>::new();
        let wanted = SeqRange::new(self.received.cumulative, self.known_end);
        self.received.ranges().for_each_missing(wanted, |gap| {
            let _ = missing.push(gap);
        });
        if missing.is_empty() {
            return None;
        }
        Some(NakRepr { stream: self.stream, epoch: self.epoch, missing })
    }
}
