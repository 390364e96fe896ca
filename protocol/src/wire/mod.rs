//! The datagram format. One frame per datagram:
//!
//! ```text
//! byte 0      magic 0xD7 (not ASCII, so a frame can never be taken for a StatsD line)
//! byte 1      version (high nibble, currently 1) | frame kind (low nibble)
//! varint      key id (u32): names the pre-shared key, and through it the device
//! varint      epoch (u64): the sender's current boot epoch
//! varint      sent_at (u64): the sender's monotonic clock in µs, strictly increasing per
//!             (key, epoch); it is both the replay counter and the "t2" send time
//! ...         body: postcard, per kind (see `data` and `control`)
//! 16 bytes    BLAKE2s-128 keyed MAC over everything before it
//! ```
//!
//! Varints are LEB128 as postcard writes them. A receiver checks length, magic, version and
//! kind, verifies the MAC, decodes the body completely, and only then consults its replay
//! window, so no unauthenticated or malformed byte ever changes receiver state.

mod auth;
mod blake2s;
mod codec;
mod control;
mod control_codec;
mod data;
mod event;
mod frame;
mod header;
pub mod overhead;
mod replay;

pub use auth::{MAC_BYTES, MacKey, Sealer};
pub use control::{
    AckRepr, AckTiming, DropReason, HeartbeatRepr, MAX_NAK_RANGES, MAX_SACK_RANGES, NakRepr, TombstoneRepr,
};
pub use data::{
    DataFrame, DataWriter, EventChainReader, EventChainWriter, EventIter, PushError, decode_event_record,
    encode_event_record,
};
pub use event::{
    Event, InvalidEvent, MAX_NAME_BYTES, MAX_TAG_BYTES, MAX_TAGS, Member, Opaque, Payload, Sample, Tag, TagIter, Tags,
};
pub use frame::{Body, ControlRef, Direction, Opened, open, seal_control};
pub use header::{FrameKind, HEADER_BYTES_MAX, Header, MAGIC, VERSION};
pub use replay::{ReplayGuard, ReplayWindow};

/// The largest UDP payload over IPv4; no configuration may exceed it.
pub const MAX_DATAGRAM_BYTES: usize = 65_507;

/// Why a datagram was not accepted. Each has its own counter at the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    #[error("datagram shorter than the smallest frame")]
    Truncated,
    #[error("datagram longer than the configured maximum")]
    Oversized,
    #[error("bad magic byte")]
    BadMagic,
    #[error("unknown protocol version")]
    UnknownVersion,
    #[error("unknown frame kind")]
    UnknownKind,
    #[error("frame kind not valid in this direction")]
    UnexpectedKind,
    #[error("unknown key id")]
    UnknownKey,
    #[error("authentication tag does not verify")]
    Forged,
    #[error("frame already seen or older than the replay window")]
    Replayed,
    #[error("authenticated frame with a malformed body")]
    Malformed,
    #[error("no room for another stream receiver")]
    TooManyStreams,
    #[error("the device holds as many stream receivers as it may")]
    DeviceQuota,
    #[error("out-of-order window full; the sender will retransmit")]
    ReorderWindowFull,
}

impl Reject {
    pub const ALL: [Reject; 13] = [
        Reject::Truncated,
        Reject::Oversized,
        Reject::BadMagic,
        Reject::UnknownVersion,
        Reject::UnknownKind,
        Reject::UnexpectedKind,
        Reject::UnknownKey,
        Reject::Forged,
        Reject::Replayed,
        Reject::Malformed,
        Reject::TooManyStreams,
        Reject::DeviceQuota,
        Reject::ReorderWindowFull,
    ];

    /// A stable snake_case name for metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Oversized => "oversized",
            Reject::BadMagic => "bad_magic",
            Reject::UnknownVersion => "unknown_version",
            Reject::UnknownKind => "unknown_kind",
            Reject::UnexpectedKind => "unexpected_kind",
            Reject::UnknownKey => "unknown_key",
            Reject::Forged => "forged",
            Reject::Replayed => "replayed",
            Reject::Malformed => "malformed",
            Reject::TooManyStreams => "too_many_streams",
            Reject::DeviceQuota => "device_quota",
            Reject::ReorderWindowFull => "reorder_window_full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One counter per [`Reject`] reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounts {
    counts: [u64; Reject::ALL.len()],
}

impl RejectCounts {
    pub fn record(&mut self, reason: Reject) {
        self.counts[reason.index()] += 1;
    }

    pub fn get(&self, reason: Reject) -> u64 {
        self.counts[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Reject, u64)> + '_ {
        Reject::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

/// Encoding failed: the caller's buffer is too small or a value is out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("buffer too small for the frame")]
    BufferTooSmall,
    #[error("value does not fit the wire format")]
    OutOfRange,
}
