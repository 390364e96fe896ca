//! Control frames: `Ack` and `Nak` (collector → device), `Heartbeat` and `Tombstone`
//! (device → collector). Bodies are postcard's layout of these structs (written and read by
//! `control_codec.rs`, without serde); device frames name the events' epoch
//! relative to the header's (`epoch_back`), collector frames name it in full.

use super::{Header, Reject};
use crate::{Epoch, Instant, Seq, SeqRange, StreamId, WallTime};
use serde::{Deserialize, Serialize};

/// SACK ranges in one ACK; more out-of-order ranges than this wait for the next ACK.
pub const MAX_SACK_RANGES: usize = 16;
/// Gap ranges in one NAK. All gaps are listed (unlike Aeron, which NAKs only the first),
/// lowest first, up to this many.
pub const MAX_NAK_RANGES: usize = 32;

/// Cumulative ACK + SACK for one `(stream, epoch)`.
///
/// Everything below `cumulative` and everything in `sack` is durable at the collector; the
/// device may free it. The timing fields give the device the collector's half of an
/// NTP-style exchange: the device sent the answered frame at `echo_sent_at` (t1, device
/// clock), the collector received it at `received_at` (t2, collector clock) and sent this ACK
/// at `header.sent_at` (t3, collector clock); the device receives it at t4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRepr {
    pub stream: StreamId,
    pub epoch: Epoch,
    pub cumulative: Seq,
    pub sack: heapless::Vec<SeqRange, MAX_SACK_RANGES>,
    pub echo_sent_at: Instant,
    pub received_at: Instant,
}

/// Ranges of one `(stream, epoch)` that the receiver is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NakRepr {
    pub stream: StreamId,
    pub epoch: Epoch,
    pub missing: heapless::Vec<SeqRange, MAX_NAK_RANGES>,
}

/// A completed four-timestamp exchange, reported back by the device so the collector (which
/// owns clock correction) sees all four times. t1 and t4 are on the device clock, t2 and t3
/// on the collector's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckTiming {
    pub device_sent_at: Instant,
    pub collector_received_at: Instant,
    pub collector_sent_at: Instant,
    pub device_received_at: Instant,
}

impl AckTiming {
    /// Round trip minus the collector's hold time, or `None` if the samples are inconsistent.
    pub fn round_trip_micros(&self) -> Option<u64> {
        let total = self.device_received_at.as_micros().checked_sub(self.device_sent_at.as_micros())?;
        let hold = self.collector_sent_at.as_micros().checked_sub(self.collector_received_at.as_micros())?;
        total.checked_sub(hold)
    }
}

/// Sent at least every heartbeat interval (and at once when a backlog has been delivered):
/// the device's clock now is the header's `sent_at`; `[oldest_available, next_seq)` is what
/// the device still holds for this `(stream, epoch)` and has offered, so the receiver detects
/// tail loss and knows what is repairable (PGM's SPM).
///
/// The last three fields are a completeness claim (MillWheel's low watermark, with the device
/// as the injector): at `sent_at`, every sequence number below `assigned_end` had been
/// assigned in this epoch, and any event assigned later gets a higher one. Once the collector
/// holds every sequence number below `assigned_end` (delivered or tombstoned) and the device
/// held nothing of an older epoch (`held_epochs_back == 0`), nothing sequenced before
/// `sent_at` can still arrive on this stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRepr {
    pub stream: StreamId,
    pub epoch: Epoch,
    pub oldest_available: Seq,
    pub next_seq: Seq,
    pub wall_now: Option<WallTime>,
    pub ack_timing: Option<AckTiming>,
    /// The sequence number the next event of this epoch gets (the buffer's head); at least
    /// `next_seq`.
    pub assigned_end: Seq,
    /// How many epochs back the oldest event the device still holds is (0: none older than
    /// this epoch). Older epochs' events are replayed as backlog after a reboot.
    pub held_epochs_back: u64,
    /// The device holds a backlog it has not had acknowledged (older than its live events):
    /// it is draining an outage or a restart.
    pub draining: bool,
}

/// Why a device dropped events on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DropReason {
    /// The buffer reached its byte bound and the policy dropped the oldest events.
    BufferFull,
    /// The buffer was full and the policy rejected new events (recorded for completeness).
    RejectedNew,
    /// Older than the configured maximum age.
    TooOld,
    /// The storage failed (for example the disk filled) and the events could not be kept.
    StorageFailure,
    /// Larger than a datagram can carry.
    Oversized,
    /// Below the range the device still holds, yet never received nor tombstoned: inferred by
    /// the receiver, never sent by a device.
    Unrecoverable,
}

impl DropReason {
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::RejectedNew => "rejected_new",
            DropReason::TooOld => "too_old",
            DropReason::StorageFailure => "storage_failure",
            DropReason::Oversized => "oversized",
            DropReason::Unrecoverable => "unrecoverable",
        }
    }
}

/// A range of one `(stream, epoch)` the device dropped on purpose. It occupies those sequence
/// numbers: the receiver counts them as accounted for, and ACKs them like events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TombstoneRepr {
    pub stream: StreamId,
    pub epoch: Epoch,
    pub range: SeqRange,
    pub reason: DropReason,
}

/// A heartbeat as the wire carries it (the epoch relative to the header's).
#[cfg_attr(test, derive(Debug, PartialEq, Serialize, Deserialize))]
pub(super) struct HeartbeatWire {
    pub(super) stream: StreamId,
    pub(super) epoch_back: u64,
    pub(super) oldest_available: Seq,
    pub(super) next_seq: Seq,
    pub(super) wall_now: Option<WallTime>,
    pub(super) ack_timing: Option<AckTiming>,
    pub(super) assigned_end: Seq,
    pub(super) held_epochs_back: u64,
    pub(super) draining: bool,
}

/// A tombstone as the wire carries it (the epoch relative to the header's).
#[cfg_attr(test, derive(Debug, PartialEq, Serialize, Deserialize))]
pub(super) struct TombstoneWire {
    pub(super) stream: StreamId,
    pub(super) epoch_back: u64,
    pub(super) range: SeqRange,
    pub(super) reason: DropReason,
}

impl HeartbeatRepr {
    pub(super) fn to_wire(&self, header: &Header) -> Option<HeartbeatWire> {
        Some(HeartbeatWire {
            stream: self.stream,
            epoch_back: header.epoch.checked_sub(self.epoch)?,
            oldest_available: self.oldest_available,
            next_seq: self.next_seq,
            wall_now: self.wall_now,
            ack_timing: self.ack_timing,
            assigned_end: self.assigned_end,
            held_epochs_back: self.held_epochs_back,
            draining: self.draining,
        })
    }

    pub(super) fn from_wire(header: &Header, wire: HeartbeatWire) -> Result<HeartbeatRepr, Reject> {
        if wire.oldest_available > wire.next_seq || wire.next_seq > wire.assigned_end {
            return Err(Reject::Malformed);
        }
        Ok(HeartbeatRepr {
            stream: wire.stream,
            epoch: header.epoch.checked_sub(wire.epoch_back).ok_or(Reject::Malformed)?,
            oldest_available: wire.oldest_available,
            next_seq: wire.next_seq,
            wall_now: wire.wall_now,
            ack_timing: wire.ack_timing,
            assigned_end: wire.assigned_end,
            held_epochs_back: wire.held_epochs_back,
            draining: wire.draining,
        })
    }
}

impl TombstoneRepr {
    pub(super) fn to_wire(self, header: &Header) -> Option<TombstoneWire> {
        Some(TombstoneWire {
            stream: self.stream,
            epoch_back: header.epoch.checked_sub(self.epoch)?,
            range: self.range,
            reason: self.reason,
        })
    }

    pub(super) fn from_wire(header: &Header, wire: TombstoneWire) -> Result<TombstoneRepr, Reject> {
        if wire.range.is_empty() || wire.reason == DropReason::Unrecoverable {
            return Err(Reject::Malformed);
        }
        Ok(TombstoneRepr {
            stream: wire.stream,
            epoch: header.epoch.checked_sub(wire.epoch_back).ok_or(Reject::Malformed)?,
            range: wire.range,
            reason: wire.reason,
        })
    }
}

/// Shape checks on collector frames: ranges must be non-empty, sorted and disjoint.
pub(super) fn ranges_are_canonical(ranges: &[SeqRange]) -> bool {
    ranges.iter().all(|r| !r.is_empty()) && ranges.windows(2).all(|pair| pair[0].end < pair[1].start)
}
