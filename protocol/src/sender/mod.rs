//! The device side of reliable delivery for one stream.
//!
//! Quinn-style sans-IO: the driver feeds inputs (`handle_ack`, `handle_nak`,
//! `handle_timeout`) and pulls outputs (`poll_transmit` until it returns `None`, then
//! `poll_timeout` for the next deadline). Events live in a caller-owned [`Backlog`]; the
//! sender only keeps cursors and a bounded list of frames in flight, and it frees an event
//! only when an ACK covers it.
//!
//! Sending order, each call:
//! 1. retransmissions (NAKed ranges, frames declared lost, timeout probes);
//! 2. live events (the newest part of the current epoch), never paced;
//! 3. backlog replay (older epochs, and whatever accumulated while the collector was
//!    unreachable or before a restart), oldest first, paced by a token bucket;
//! 4. a heartbeat when one is due.
//!
//! Loss detection is QUIC's (RFC 9002): a frame is lost when a frame sent three or more
//! transmissions later was acknowledged, or when it is older than 9/8 RTT at that point; a
//! probe timeout (RFC 6298 RTO with exponential back-off) covers tail loss and outages.

mod backlog;
mod config;
#[cfg(feature = "alloc")]
mod memory;
mod pacer;
mod rtt;
mod stats;

pub use backlog::{Backlog, Item, Position};
pub use config::SenderConfig;
use config::TimersUs;
#[cfg(feature = "alloc")]
pub use memory::{DropPolicy, MemoryBacklog, OwnedEvent, OwnedPayload};
pub use stats::SenderStats;

use crate::time::duration_micros;
use crate::wire::{
    AckRepr, AckTiming, ControlRef, DataWriter, DropReason, EncodeError, FrameKind, Header, HeartbeatRepr, NakRepr,
    Sealer, TombstoneRepr, seal_control,
};
use crate::{ClockQuality, Epoch, Instant, SeqRange, SeqRangeSet, WallTime};
use core::time::Duration;
use pacer::TokenBucket;
use rtt::RttEstimator;

/// Epochs whose retransmissions can be queued at once; past that the backlog cursor rewinds.
const RETRANSMIT_EPOCHS: usize = 4;
/// Packet threshold of the loss detector (RFC 9002 kPacketThreshold).
const PACKET_THRESHOLD: u64 = 3;

/// One datagram written by [`Sender::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub len: usize,
    pub kind: FrameKind,
    /// Events (or tombstoned sequence numbers) the frame carries.
    pub events: u64,
}

/// A failure that is not the network's: the backlog's storage, or a buffer too small.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError<E> {
    #[error("backlog: {0}")]
    Backlog(E),
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Content {
    Events,
    Tombstone(DropReason),
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    epoch: Epoch,
    range: SeqRange,
    sent_at: Instant,
    bytes: usize,
    /// Transmission counter, for the packet threshold.
    number: u64,
    /// Sent again after a NAK, loss or timeout: its ACK may answer the earlier copy, so it
    /// gives no ACK-wait sample (Karn).
    retransmission: bool,
}

/// Sends one stream of a device. `FRAMES` bounds the frames in flight, `RETX` the disjoint
/// ranges queued for retransmission per epoch.
#[derive(Debug)]
pub struct Sender<const FRAMES: usize = 64, const RETX: usize = 32> {
    config: SenderConfig,
    timers: TimersUs,
    /// The network round trip: ACK arrival minus the echoed send, less the receiver's hold.
    rtt: RttEstimator,
    /// How long a frame waits for the ACK that covers it: the round trip plus the receiver's
    /// hold (the collector's group commit with fsync, then its ACK delay), estimated like the
    /// RTT from the newest first transmission each ACK covers. The probe timeout allows for
    /// it: the RTT plus `peer_ack_delay_max` alone left out the commit, so on a quiet
    /// loopback link most frames timed out before their ACK came and were sent twice.
    ack_wait: RttEstimator,
    pacer: TokenBucket,
    in_flight: heapless::Vec<InFlight, FRAMES>,
    in_flight_bytes: usize,
    next_number: u64,
    /// Highest transmission number acknowledged, per the epoch of that ACK.
    largest_acked: Option<(Epoch, u64)>,
    loss_time: Option<Instant>,
    retransmit: heapless::Vec<(Epoch, SeqRangeSet<RETX>), RETRANSMIT_EPOCHS>,
    /// Next unsent position of the backlog region `[backlog_cursor, live_start)`.
    backlog_cursor: Position,
    live_start: Position,
    /// Next unsent position of the live region `[live_start, head)`.
    live_cursor: Position,
    /// Time of the last frame that expects an ACK; the probe timeout counts from it.
    last_ack_eliciting_at: Option<Instant>,
    timeouts_in_a_row: u32,
    last_heartbeat_at: Option<Instant>,
    /// The latest four-timestamp sample, reported in the next heartbeat.
    pending_timing: Option<AckTiming>,
    /// `wall - mono` and quality, from the driver, for heartbeats.
    wall_offset: Option<(i64, ClockQuality)>,
    /// The last heartbeat said the device was draining a backlog: the ACK that ends the drain
    /// makes the next heartbeat due at once, so the collector learns that the stream is
    /// complete (and closes the windows the backlog filled) without waiting an interval.
    reported_draining: bool,
    /// A drain is about to start (a restart with a backlog, or the collector answering after
    /// an outage): the next heartbeat goes out before any backlog, so the collector knows the
    /// device is draining (and holds the fleet's windows for it) before the old events land.
    heartbeat_first: bool,
    stats: SenderStats,
}

impl<const FRAMES: usize, const RETX: usize> Sender<FRAMES, RETX> {
    /// A sender that treats everything the backlog already holds as backlog (paced) and
    /// everything enqueued from now on as live.
    pub fn new<B: Backlog>(config: SenderConfig, backlog: &B) -> Self {
        let head = backlog.head();
        let tail = backlog.tail();
        let timers = TimersUs::new(&config);
        let initial_rtt = duration_micros(config.initial_rtt);
        Sender {
            rtt: RttEstimator::new(initial_rtt),
            ack_wait: RttEstimator::new(initial_rtt.saturating_add(timers.peer_ack_delay_max)),
            timers,
            pacer: TokenBucket::new(config.backlog_events_per_second, config.backlog_burst_events),
            config,
            in_flight: heapless::Vec::new(),
            in_flight_bytes: 0,
            next_number: 0,
            largest_acked: None,
            loss_time: None,
            retransmit: heapless::Vec::new(),
            backlog_cursor: tail.min(head),
            live_start: head,
            live_cursor: head,
            last_ack_eliciting_at: None,
            timeouts_in_a_row: 0,
            last_heartbeat_at: None,
            pending_timing: None,
            wall_offset: None,
            reported_draining: false,
            heartbeat_first: tail < head,
            stats: SenderStats::default(),
        }
    }

    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    pub fn stats(&self) -> SenderStats {
        SenderStats {
            smoothed_rtt: Duration::from_micros(self.rtt.smoothed_us()),
            smoothed_ack_wait: Duration::from_micros(self.ack_wait.smoothed_us()),
            in_flight_frames: self.in_flight.len() as u64,
            in_flight_bytes: self.in_flight_bytes as u64,
            ..self.stats
        }
    }

    /// True after enough consecutive timeouts; cleared by the next ACK.
    pub fn is_unreachable(&self) -> bool {
        self.timeouts_in_a_row >= self.config.unreachable_after_timeouts
    }

    /// Tells the sender how the device's wall clock relates to its monotonic clock, so
    /// heartbeats can carry both (the collector pairs them per epoch).
    pub fn handle_wall_clock(&mut self, mono: Instant, wall: WallTime) {
        let offset = (wall.unix_micros as u64).wrapping_sub(mono.as_micros()) as i64;
        self.wall_offset = Some((offset, wall.quality));
    }

    /// True when nothing is in flight, queued, or waiting in the backlog.
    pub fn is_idle<B: Backlog>(&self, backlog: &B) -> bool {
        self.in_flight.is_empty()
            && self.retransmit.iter().all(|(_, set)| set.is_empty())
            && self.backlog_cursor >= self.live_start
            && self.live_cursor >= backlog.head()
    }

    fn window_open(&self) -> bool {
        !self.in_flight.is_full()
            && self.in_flight_bytes + self.config.max_datagram_bytes <= self.config.max_in_flight_bytes
    }

    /// The probe timeout with back-off applied: what an ACK has been taking (the ACK wait,
    /// with four deviations of margin), and never less than a round trip plus the ACK delay
    /// the receiver announces.
    fn probe_timeout_us(&self) -> u64 {
        let timers = &self.timers;
        let announced = self.rtt.base_timeout_us().saturating_add(timers.peer_ack_delay_max);
        // `max` then `min` rather than `clamp`, which panics when `min_rto > max_rto`.
        let base = self.ack_wait.base_timeout_us().max(announced).max(timers.min_rto).min(timers.max_rto);
        // Back-off: doubles per timeout in a row, up to 2^20, saturating.
        let shift = self.timeouts_in_a_row.min(20);
        let backed_off = if base > u64::MAX >> shift { u64::MAX } else { base << shift };
        backed_off.min(timers.max_rto)
    }

    fn probe_deadline(&self) -> Option<Instant> {
        if self.in_flight.is_empty() {
            return None;
        }
        self.last_ack_eliciting_at.map(|at| at.saturating_add_micros(self.probe_timeout_us()))
    }

    fn heartbeat_deadline(&self) -> Instant {
        match self.last_heartbeat_at {
            Some(at) => at.saturating_add_micros(self.timers.heartbeat_interval),
            None => Instant::ZERO,
        }
    }

    /// The next time [`Self::handle_timeout`] or [`Self::poll_transmit`] has work, when
    /// `poll_transmit` has just returned `None`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut deadline = Some(self.heartbeat_deadline());
        let mut consider = |candidate: Option<Instant>| {
            if let Some(candidate) = candidate {
                deadline = Some(deadline.map_or(candidate, |d| d.min(candidate)));
            }
        };
        consider(self.probe_deadline());
        consider(self.loss_time);
        if self.backlog_cursor < self.live_start && self.window_open() {
            consider(self.pacer.next_ready());
        }
        deadline
    }

    /// Runs the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.loss_time.is_some_and(|at| at <= now) {
            self.detect_losses(now);
        }
        if self.probe_deadline().is_some_and(|at| at <= now) {
            // Probe: resend the oldest unacknowledged frame, then back off.
            let oldest = (0..self.in_flight.len()).min_by_key(|&i| self.in_flight[i].number);
            if let Some(index) = oldest {
                self.declare_lost(index);
            }
            self.timeouts_in_a_row = self.timeouts_in_a_row.saturating_add(1);
            self.stats.timeouts += 1;
            // Count the probe's own transmission from now, even if the window is shut.
            self.last_ack_eliciting_at = Some(now);
        }
    }

    /// Processes an ACK for this stream: frees what it covers, samples RTT, detects losses.
    pub fn handle_ack<B: Backlog>(
        &mut self,
        now: Instant,
        header: &Header,
        ack: &AckRepr,
        backlog: &mut B,
    ) -> Result<(), SendError<B::Error>> {
        self.stats.acks_received += 1;
        let epoch = ack.epoch;
        if ack.cumulative > 0 {
            backlog.release(epoch, SeqRange::new(0, ack.cumulative)).map_err(SendError::Backlog)?;
        }
        for range in ack.sack.iter() {
            backlog.release(epoch, *range).map_err(SendError::Backlog)?;
        }
        let is_acked = |range: SeqRange| {
            let rest = SeqRange::new(range.start.max(ack.cumulative), range.end);
            rest.is_empty() || ack.sack.iter().any(|s| s.covers(rest))
        };

        let mut largest_newly_acked = None;
        let mut echo_matched = false;
        let mut newest_first_sent: Option<Instant> = None;
        let mut index = 0;
        while index < self.in_flight.len() {
            let entry = self.in_flight[index];
            if entry.epoch == epoch && is_acked(entry.range) {
                echo_matched |= entry.sent_at == ack.echo_sent_at;
                // Only a frame the receiver had seen when it built the ACK proves that later
                // frames overtook earlier ones; a retransmission of an already received range
                // is "acked" by any ACK and proves nothing (the ACK echoes the newest send
                // time it saw).
                if entry.sent_at <= ack.echo_sent_at {
                    largest_newly_acked = largest_newly_acked.max(Some(entry.number));
                }
                if !entry.retransmission {
                    newest_first_sent = newest_first_sent.max(Some(entry.sent_at));
                }
                self.remove_in_flight(index);
            } else {
                index += 1;
            }
        }
        for (queued_epoch, set) in self.retransmit.iter_mut() {
            if *queued_epoch == epoch {
                set.remove_below(ack.cumulative);
                for range in ack.sack.iter() {
                    // A failed split leaves the range queued: a harmless duplicate.
                    let _ = set.remove(*range);
                }
            }
        }

        if let Some(sent_at) = newest_first_sent {
            self.ack_wait.update(now.saturating_micros_since(sent_at));
        }
        let hold = header.sent_at.saturating_micros_since(ack.received_at);
        if ack.echo_sent_at <= now {
            if echo_matched {
                let round_trip = now.saturating_micros_since(ack.echo_sent_at);
                self.rtt.update(round_trip.checked_sub(hold).unwrap_or(round_trip));
            }
            self.pending_timing = Some(AckTiming {
                device_sent_at: ack.echo_sent_at,
                collector_received_at: ack.received_at,
                collector_sent_at: header.sent_at,
                device_received_at: now,
            });
        }

        if self.reported_draining && !self.draining(backlog) {
            self.last_heartbeat_at = None;
        }
        self.note_reachable(backlog.head());
        if let Some(number) = largest_newly_acked {
            let largest = match self.largest_acked {
                Some((e, n)) if e == epoch => n.max(number),
                _ => number,
            };
            self.largest_acked = Some((epoch, largest));
        }
        self.detect_losses(now);
        Ok(())
    }

    /// Any authenticated frame from the collector proves it is reachable again.
    fn note_reachable(&mut self, head: Position) {
        if self.is_unreachable() {
            self.recover_from_outage(head);
        }
        self.timeouts_in_a_row = 0;
    }

    /// The collector answered after an outage: whatever was never sent becomes backlog, so
    /// live events go first and the accumulated events drain at the paced rate. Frames
    /// still in flight or queued for retransmission were sent into the outage; they join the
    /// paced sweep too instead of going out in one burst of a whole window.
    fn recover_from_outage(&mut self, head: Position) {
        self.stats.reconnects += 1;
        let in_flight = self.in_flight.iter().map(|e| Position::new(e.epoch, e.range.start));
        let queued =
            self.retransmit.iter().filter_map(|(epoch, set)| set.first().map(|r| Position::new(*epoch, r.start)));
        let oldest_unacknowledged = in_flight.chain(queued).min();
        self.in_flight.clear();
        self.in_flight_bytes = 0;
        self.retransmit.clear();
        self.largest_acked = None;
        self.loss_time = None;
        let mut start = if self.backlog_cursor < self.live_start { self.backlog_cursor } else { self.live_cursor };
        if let Some(oldest) = oldest_unacknowledged {
            start = start.min(oldest);
        }
        // The sweep from `start` also passes events that were acknowledged meanwhile; the
        // backlog no longer holds those, so they are skipped, not resent.
        self.backlog_cursor = start;
        self.live_start = head;
        self.live_cursor = head;
        self.heartbeat_first = true;
        self.last_heartbeat_at = None;
    }

    /// Retransmits NAKed ranges that were sent at least one RTT ago.
    pub fn handle_nak<B: Backlog>(&mut self, now: Instant, nak: &NakRepr, backlog: &B) {
        self.stats.naks_received += 1;
        // Recover first, so that what the NAK frees in the window goes to live events and
        // retransmissions, not to the events that piled up during the outage.
        self.note_reachable(backlog.head());
        let linger_us = self.rtt.smoothed_us().max(1_000);
        for missing in nak.missing.iter() {
            let mut index = 0;
            let mut matched = false;
            while index < self.in_flight.len() {
                let entry = self.in_flight[index];
                if entry.epoch == nak.epoch && !entry.range.intersect(*missing).is_empty() {
                    matched = true;
                    if now.saturating_micros_since(entry.sent_at) >= linger_us {
                        self.declare_lost(index);
                        continue;
                    }
                }
                index += 1;
            }
            if !matched {
                // Not in flight: unsent backlog (it will come), already acknowledged, or
                // already queued.
                self.stats.nak_ranges_ignored += 1;
            }
        }
    }

    fn remove_in_flight(&mut self, index: usize) -> InFlight {
        let entry = self.in_flight.remove(index);
        self.in_flight_bytes -= entry.bytes;
        entry
    }

    fn declare_lost(&mut self, index: usize) {
        let entry = self.remove_in_flight(index);
        self.queue_retransmit(entry.epoch, entry.range);
    }

    fn queue_retransmit(&mut self, epoch: Epoch, range: SeqRange) {
        if let Some((_, set)) = self.retransmit.iter_mut().find(|(e, _)| *e == epoch) {
            set.insert_coalescing(range);
            return;
        }
        if self.retransmit.is_full() {
            // Fall back to the backlog sweep for the oldest queued epoch: it resends every
            // held, unacknowledged event from there (the backlog skips released ones).
            let oldest = (0..self.retransmit.len()).min_by_key(|&i| self.retransmit[i].0).unwrap_or(0);
            let (old_epoch, set) = self.retransmit.swap_remove(oldest);
            if let Some(first) = set.first() {
                self.rewind_backlog(Position::new(old_epoch, first.start));
            }
        }
        let mut set = SeqRangeSet::new();
        set.insert_coalescing(range);
        let pushed = self.retransmit.push((epoch, set));
        debug_assert!(pushed.is_ok());
    }

    fn rewind_backlog(&mut self, to: Position) {
        if to < self.live_start {
            self.backlog_cursor = self.backlog_cursor.min(to);
        }
    }

    fn detect_losses(&mut self, now: Instant) {
        self.loss_time = None;
        let Some((epoch, largest)) = self.largest_acked else { return };
        // 9/8 of the RTT (x + x/8 is exactly x * 9 / 8 rounded down) plus the slack.
        let rtt = self.rtt.smoothed_us().max(self.rtt.latest_us());
        let loss_delay_us = rtt.saturating_add(rtt >> 3).saturating_add(self.timers.reorder_slack.max(1_000));
        let mut index = 0;
        while index < self.in_flight.len() {
            let entry = self.in_flight[index];
            if entry.epoch == epoch && entry.number < largest {
                let at = entry.sent_at.saturating_add_micros(loss_delay_us);
                if largest - entry.number >= PACKET_THRESHOLD || at <= now {
                    self.stats.frames_declared_lost += 1;
                    self.declare_lost(index);
                    continue;
                }
                self.loss_time = Some(self.loss_time.map_or(at, |t| t.min(at)));
            }
            index += 1;
        }
    }
}

impl<const FRAMES: usize, const RETX: usize> Sender<FRAMES, RETX> {
    /// Writes the next datagram into `buf` (at most `max_datagram_bytes` of it is used).
    /// Call until it returns `None`, then sleep until [`Self::poll_timeout`].
    pub fn poll_transmit<B: Backlog>(
        &mut self,
        now: Instant,
        backlog: &mut B,
        sealer: &mut Sealer,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError<B::Error>> {
        let limit = self.config.max_datagram_bytes.min(buf.len());
        let buf = &mut buf[..limit];
        if self.heartbeat_first {
            self.heartbeat_first = false;
            return self.transmit_heartbeat(now, backlog, sealer, buf).map(Some);
        }
        if self.window_open() {
            if let Some(transmit) = self.transmit_retransmission(now, backlog, sealer, buf)? {
                return Ok(Some(transmit));
            }
            if let Some(transmit) = self.transmit_live(now, backlog, sealer, buf)? {
                return Ok(Some(transmit));
            }
            if self.backlog_cursor < self.live_start
                && self.pacer.ready(now)
                && let Some(transmit) = self.transmit_backlog(now, backlog, sealer, buf)?
            {
                return Ok(Some(transmit));
            }
        }
        if now >= self.heartbeat_deadline() {
            return self.transmit_heartbeat(now, backlog, sealer, buf).map(Some);
        }
        Ok(None)
    }

    fn transmit_retransmission<B: Backlog>(
        &mut self,
        now: Instant,
        backlog: &mut B,
        sealer: &mut Sealer,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError<B::Error>> {
        loop {
            let Some(slot) = self.retransmit.iter().position(|(_, set)| !set.is_empty()) else {
                self.retransmit.clear();
                return Ok(None);
            };
            let (epoch, set) = &self.retransmit[slot];
            let (epoch, range) = (*epoch, set.first().unwrap_or_default());
            let sent = self.transmit_range(
                now,
                Position::new(epoch, range.start),
                Position::new(epoch, range.end),
                backlog,
                sealer,
                buf,
            )?;
            let set = &mut self.retransmit[slot].1;
            match sent {
                None => {
                    // Everything in it was released meanwhile.
                    let _ = set.remove(range);
                }
                Some((transmit, end)) => {
                    if let Some(entry) = self.in_flight.last_mut() {
                        entry.retransmission = true;
                    }
                    // A prefix of the first range: removing it cannot split anything.
                    let _ = set.remove(SeqRange::new(range.start, end.seq));
                    self.stats.events_retransmitted += transmit.events;
                    return Ok(Some(transmit));
                }
            }
        }
    }

    fn transmit_live<B: Backlog>(
        &mut self,
        now: Instant,
        backlog: &mut B,
        sealer: &mut Sealer,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError<B::Error>> {
        let head = backlog.head();
        if head.epoch != self.live_cursor.epoch {
            // The backlog moved to a new epoch under a running sender: the old epoch's unsent
            // events join the backlog region and live sending starts in the new epoch.
            if self.backlog_cursor >= self.live_start {
                self.backlog_cursor = self.live_cursor;
            }
            self.live_start = Position::new(head.epoch, 0);
            self.live_cursor = self.live_start;
        }
        if self.live_cursor >= head {
            return Ok(None);
        }
        match self.transmit_range(now, self.live_cursor, head, backlog, sealer, buf)? {
            Some((transmit, end)) => {
                self.live_cursor = end;
                Ok(Some(transmit))
            }
            None => {
                self.live_cursor = head;
                Ok(None)
            }
        }
    }

    fn transmit_backlog<B: Backlog>(
        &mut self,
        now: Instant,
        backlog: &mut B,
        sealer: &mut Sealer,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, SendError<B::Error>> {
        // Each pass either sends, or moves the cursor past one claimed range or to the end;
        // there are at most FRAMES + RETRANSMIT_EPOCHS * RETX claimed ranges.
        for _ in 0..=(FRAMES + RETRANSMIT_EPOCHS * RETX) {
            if self.backlog_cursor >= self.live_start {
                return Ok(None);
            }
            let Some((position, _)) =
                backlog.first_at_or_after(self.backlog_cursor, self.live_start).map_err(SendError::Backlog)?
            else {
                self.backlog_cursor = self.live_start;
                return Ok(None);
            };
            if let Some(end) = self.claimed_until(position) {
                self.backlog_cursor = end;
                continue;
            }
            let until = self.next_claim_after(position).min(self.live_start);
            match self.transmit_range(now, position, until, backlog, sealer, buf)? {
                Some((transmit, end)) => {
                    self.backlog_cursor = end;
                    self.stats.backlog_events_sent += transmit.events;
                    self.pacer.consume(u32::try_from(transmit.events).unwrap_or(u32::MAX));
                    return Ok(Some(transmit));
                }
                None => self.backlog_cursor = until,
            }
        }
        Ok(None)
    }

    /// When `position` is in flight or queued for retransmission, the end of that claim.
    fn claimed_until(&self, position: Position) -> Option<Position> {
        let in_flight = self
            .in_flight
            .iter()
            .filter(|e| e.epoch == position.epoch && e.range.contains(position.seq))
            .map(|e| e.range.end);
        let queued = self
            .retransmit
            .iter()
            .filter(|(e, _)| *e == position.epoch)
            .flat_map(|(_, set)| set.iter())
            .filter(|r| r.contains(position.seq))
            .map(|r| r.end);
        in_flight.chain(queued).max().map(|end| Position::new(position.epoch, end))
    }

    /// The start of the nearest claim above `position` in its epoch.
    fn next_claim_after(&self, position: Position) -> Position {
        let in_flight = self.in_flight.iter().filter(|e| e.epoch == position.epoch).map(|e| e.range.start);
        let queued = self
            .retransmit
            .iter()
            .filter(|(e, _)| *e == position.epoch)
            .flat_map(|(_, set)| set.iter())
            .map(|r| r.start);
        in_flight
            .chain(queued)
            .filter(|&start| start > position.seq)
            .min()
            .map_or(Position::new(position.epoch, u64::MAX), |start| Position::new(position.epoch, start))
    }

    /// Sends the lowest held item in `[from, until)`: a batch of events or a tombstone.
    /// Returns the transmit and the position just past what it covered.
    fn transmit_range<B: Backlog>(
        &mut self,
        now: Instant,
        from: Position,
        until: Position,
        backlog: &mut B,
        sealer: &mut Sealer,
        buf: &mut [u8],
    ) -> Result<Option<(Transmit, Position)>, SendError<B::Error>> {
        let Some((position, item)) = backlog.first_at_or_after(from, until).map_err(SendError::Backlog)? else {
            return Ok(None);
        };
        let seq_limit = if until.epoch == position.epoch { until.seq } else { u64::MAX };
        let (len, range, content) = match item {
            Item::Event => {
                let header = sealer.header(FrameKind::Data, now);
                let mut writer = DataWriter::new(
                    buf,
                    &header,
                    self.config.stream,
                    position.epoch,
                    position.seq,
                    self.config.max_events_per_frame,
                )?;
                backlog.fill(position, seq_limit, &mut writer).map_err(SendError::Backlog)?;
                if writer.is_empty() {
                    // The event cannot fit any datagram of this size. Tell the collector
                    // instead of stalling the stream behind it forever.
                    let range = SeqRange::with_len(position.seq, 1);
                    let len = self.seal_tombstone(now, position.epoch, range, DropReason::Oversized, sealer, buf)?;
                    (len, range, Content::Tombstone(DropReason::Oversized))
                } else {
                    let range = writer.range();
                    let (buf, unsealed) = writer.into_parts();
                    (sealer.seal(buf, unsealed)?, range, Content::Events)
                }
            }
            Item::Tombstone { end, reason } => {
                let range = SeqRange::new(position.seq, end.min(seq_limit));
                let len = self.seal_tombstone(now, position.epoch, range, reason, sealer, buf)?;
                (len, range, Content::Tombstone(reason))
            }
        };
        let entry = InFlight {
            epoch: position.epoch,
            range,
            sent_at: now,
            bytes: len,
            number: self.next_number,
            retransmission: false,
        };
        self.next_number += 1;
        // `window_open` was checked by every caller, so there is room.
        let pushed = self.in_flight.push(entry);
        debug_assert!(pushed.is_ok());
        self.in_flight_bytes += len;
        self.last_ack_eliciting_at = Some(now);
        let kind = match content {
            Content::Events => {
                self.stats.data_frames_sent += 1;
                self.stats.events_sent += range.len();
                FrameKind::Data
            }
            Content::Tombstone(_) => {
                self.stats.tombstone_frames_sent += 1;
                FrameKind::Tombstone
            }
        };
        Ok(Some((Transmit { len, kind, events: range.len() }, Position::new(position.epoch, range.end))))
    }

    fn seal_tombstone(
        &self,
        now: Instant,
        epoch: Epoch,
        range: SeqRange,
        reason: DropReason,
        sealer: &mut Sealer,
        buf: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let tombstone = TombstoneRepr { stream: self.config.stream, epoch, range, reason };
        seal_control(sealer, now, ControlRef::Tombstone(&tombstone), buf)
    }

    /// Whether the backlog holds events older than the live region that were not
    /// acknowledged yet (an outage's or a restart's backlog, older epochs included).
    fn draining<B: Backlog>(&self, backlog: &B) -> bool {
        backlog.tail() < self.live_start
    }

    fn transmit_heartbeat<B: Backlog>(
        &mut self,
        now: Instant,
        backlog: &mut B,
        sealer: &mut Sealer,
        buf: &mut [u8],
    ) -> Result<Transmit, SendError<B::Error>> {
        let head = backlog.head();
        let tail = backlog.tail();
        let oldest_available = if tail.epoch == head.epoch { tail.seq } else { 0 };
        // The receiver may expect everything below the live cursor: that much was offered.
        let next_seq = if self.live_cursor.epoch == head.epoch { self.live_cursor.seq } else { 0 };
        let draining = self.draining(backlog);
        let heartbeat = HeartbeatRepr {
            stream: self.config.stream,
            epoch: head.epoch,
            oldest_available: oldest_available.min(next_seq),
            next_seq,
            assigned_end: head.seq.max(next_seq),
            held_epochs_back: head.epoch.saturating_sub(tail.epoch.min(head.epoch)),
            draining,
            wall_now: self.wall_offset.map(|(offset, quality)| WallTime {
                unix_micros: now.as_micros().wrapping_add(offset as u64) as i64,
                quality,
            }),
            ack_timing: self.pending_timing.take(),
        };
        let len = seal_control(sealer, now, ControlRef::Heartbeat(&heartbeat), buf)?;
        self.last_heartbeat_at = Some(now);
        self.reported_draining = draining;
        self.stats.heartbeats_sent += 1;
        Ok(Transmit { len, kind: FrameKind::Heartbeat, events: 0 })
    }
}
