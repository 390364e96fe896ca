//! The global identity of an event: `(device_id, stream_id, epoch, seq)`.
//!
//! `epoch` is the device's boot counter (persisted on the device; a random 64-bit value where
//! the device has no storage). `seq` is assigned when the event enters the device's buffer,
//! starts at 0 in every epoch and never changes across retransmissions, reconnects or reboots.
//! The 4-tuple is therefore a stable id that sinks can use for idempotent writes.

use serde::{Deserialize, Serialize};

/// Identifies a device. Never sent in clear on the wire: it is bound to the device's key.
pub type DeviceId = u64;
/// A stream of events within one device (for example one per input).
pub type StreamId = u32;
/// Boot epoch of a device.
pub type Epoch = u64;
/// Position of an event within one `(device, stream, epoch)`.
pub type Seq = u64;
/// Identifies a pre-shared key in the frame header; the collector maps it to a device.
pub type KeyId = u32;

/// The globally unique id of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId {
    pub device: DeviceId,
    pub stream: StreamId,
    pub epoch: Epoch,
    pub seq: Seq,
}

/// One sequence space: everything a [`crate::Receiver`] tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamKey {
    pub device: DeviceId,
    pub stream: StreamId,
    pub epoch: Epoch,
}

impl StreamKey {
    /// The id of the event at `seq` in this sequence space.
    pub fn event(self, seq: Seq) -> EventId {
        EventId { device: self.device, stream: self.stream, epoch: self.epoch, seq }
    }
}

impl core::fmt::Display for EventId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}/{}/{}", self.device, self.stream, self.epoch, self.seq)
    }
}
