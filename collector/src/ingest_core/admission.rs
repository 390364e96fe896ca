//! Admission: each received datagram through the source filter and the protocol endpoint
//! (authentication, replay, dedup, stream bounds), and the new parts of accepted frames into
//! the next block, with the clock samples and completeness claims they carry.

use super::IngestCore;
use crate::ingest::Batch;
use crate::log::record::{EventsHead, GapHead, RecordKind, encode_gap, encode_head};
use crate::source_filter::is_unauthenticated;
use driftlog_protocol::endpoint::{Delivery, Received};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::{DropReason, EventChainWriter};
use driftlog_protocol::{Instant, SeqRange};

impl IngestCore {
    /// Admits a batch of datagrams received at `now`: the one clock value that becomes both
    /// the frames' receive time (records, clock samples) and the `received_at` of the ACKs
    /// that answer them.
    pub fn handle_batch(&mut self, now: Instant, batch: &Batch) {
        if !self.accepting {
            // Not admitted, so not remembered: the devices retransmit once we accept again.
            self.counters.frames_refused_log_unavailable += batch.len() as u64;
            return;
        }
        let received_unix_us = now.as_micros() as i64;
        let mut accepted = false;
        for (datagram, route) in batch.iter() {
            if !self.filter.admits(route.peer, now) {
                continue;
            }
            let received = match self.endpoint.handle_datagram_with(now, datagram, &mut self.bounds.states) {
                Ok(received) => received,
                Err(reason) => {
                    if is_unauthenticated(reason) {
                        self.filter.failed(route.peer, now);
                    }
                    continue;
                }
            };
            accepted = true;
            self.bounds.states.observe(&received);
            let device = received.stream.device;
            sample_clock(&mut self.clocks, &received, received_unix_us);
            self.routes.insert(device, (route, now.as_micros() / 1_000));
            self.record(&received, received_unix_us);
        }
        if accepted && self.filling.started.is_none() {
            self.filling.started = Some(now);
        }
    }

    /// Appends the new parts of an accepted frame to the next block.
    fn record(&mut self, received: &Received<'_>, received_unix_us: i64) {
        let key = received.stream;
        let filling = &mut self.filling;
        match &received.delivery {
            Delivery::Events { frame, new } => {
                for range in new {
                    let head = EventsHead {
                        device: key.device,
                        stream: key.stream,
                        epoch: key.epoch,
                        first_seq: range.start,
                        count: range.len() as u32,
                        sent_at_us: received.header.sent_at.as_micros(),
                        sent_epoch: received.header.epoch,
                        received_unix_us,
                        clock: None,
                    };
                    // The block's first run of this slot stores the model as it stands now.
                    let clock = || self.clocks.fix(key.device, key.epoch);
                    filling.events += range.len();
                    if *range == frame.range() {
                        // The whole frame is new (the common case): store its bytes as they came.
                        filling.builder.push_events(head, clock, frame.event_bytes());
                        continue;
                    }
                    let mut writer = EventChainWriter::new(&mut filling.chain_buf);
                    // A partly duplicated frame (rare): decode it again to take the new part.
                    for (_, event) in frame.events().filter(|(seq, _)| range.contains(*seq)) {
                        // The frame held these in order within one datagram: they fit.
                        let _ = writer.push(&event);
                    }
                    let len = writer.len();
                    filling.builder.push_events(head, clock, &filling.chain_buf[..len]);
                }
            }
            Delivery::Tombstone { new, reason } => {
                for range in new {
                    let head = gap_head(key, *range, *reason, received_unix_us);
                    filling.builder.push(1, |out| encode_gap(RecordKind::Tombstone, &head, out));
                }
            }
            Delivery::Heartbeat { heartbeat, unrecoverable } => {
                for range in unrecoverable {
                    let head = gap_head(key, *range, DropReason::Unrecoverable, received_unix_us);
                    filling.builder.push(1, |out| encode_gap(RecordKind::Gap, &head, out));
                }
                // After the gaps it explains: the window pipeline reads them in this order.
                if let Some(claims) = &mut self.claims
                    && let Some(claim) = claims.admit(key, &received.header, heartbeat, received_unix_us, &self.clocks)
                {
                    filling.builder.push(1, |out| encode_head(RecordKind::Claim, &claim, out));
                }
            }
        }
    }
}

fn gap_head(key: StreamKey, range: SeqRange, reason: DropReason, received_unix_us: i64) -> GapHead {
    GapHead { device: key.device, stream: key.stream, epoch: key.epoch, range, reason, received_unix_us }
}

/// Every accepted frame is a one-way clock sample of the sender's boot; a heartbeat may also
/// report a completed four-timestamp exchange.
fn sample_clock(clocks: &mut crate::clocks::Clocks, received: &Received<'_>, received_unix_us: i64) {
    let device = received.stream.device;
    let header = &received.header;
    clocks.handle_frame(device, header.epoch, header.sent_at.as_micros(), received_unix_us);
    if let Delivery::Heartbeat { heartbeat, .. } = &received.delivery
        && let Some(timing) = heartbeat.ack_timing
    {
        let times = (
            timing.device_sent_at.as_micros(),
            timing.collector_received_at.as_micros() as i64,
            timing.collector_sent_at.as_micros() as i64,
            timing.device_received_at.as_micros(),
        );
        clocks.handle_exchange(device, header.epoch, times, received_unix_us);
    }
}
