//! The frame header: two fixed bytes, then three varints.

use super::codec::{Reader, Writer};
use super::{EncodeError, Reject};
use crate::{Epoch, Instant, KeyId};

pub const MAGIC: u8 = 0xD7;
/// 2: heartbeats carry a completeness claim (`assigned_end`, `held_epochs_back`, `draining`).
/// A collector and its devices must speak the same version: a frame of another is rejected
/// as `UnknownVersion`, counted, and never half-read.
pub const VERSION: u8 = 2;
/// 2 fixed bytes + varint u32 (5) + varint u64 (10) + varint u64 (10).
pub const HEADER_BYTES_MAX: usize = 2 + 5 + 10 + 10;

/// What the body holds. The low nibble of byte 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Device → collector: a batch of consecutive events of one stream.
    Data = 1,
    /// Device → collector: clock sample and the range the device still holds.
    Heartbeat = 2,
    /// Device → collector: a range the device dropped on purpose.
    Tombstone = 3,
    /// Collector → device: cumulative ACK + SACK, with timing for the four-timestamp exchange.
    Ack = 8,
    /// Collector → device: ranges missing at the receiver.
    Nak = 9,
}

impl FrameKind {
    pub(crate) fn from_nibble(value: u8) -> Option<FrameKind> {
        Some(match value {
            1 => FrameKind::Data,
            2 => FrameKind::Heartbeat,
            3 => FrameKind::Tombstone,
            8 => FrameKind::Ack,
            9 => FrameKind::Nak,
            _ => return None,
        })
    }

    /// Frames a device sends; the others come from the collector.
    pub const fn is_from_device(self) -> bool {
        matches!(self, FrameKind::Data | FrameKind::Heartbeat | FrameKind::Tombstone)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameKind,
    pub key_id: KeyId,
    /// The sender's current boot epoch (for data frames the events' own epoch may be older).
    pub epoch: Epoch,
    /// The sender's monotonic clock when it sealed the frame; unique per (key, epoch).
    pub sent_at: Instant,
}

impl Header {
    /// Writes the header at the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        if buf.len() < 2 {
            return Err(EncodeError::BufferTooSmall);
        }
        buf[0] = MAGIC;
        buf[1] = (VERSION << 4) | self.kind as u8;
        // Three varints, as postcard lays out a struct of them.
        let mut writer = Writer::new(&mut buf[2..]);
        let written = writer
            .varint(u64::from(self.key_id))
            .and_then(|()| writer.varint(self.epoch))
            .and_then(|()| writer.varint(self.sent_at.as_micros()));
        written.map_err(|_| EncodeError::BufferTooSmall)?;
        Ok(2 + writer.len())
    }

    /// Parses the header from `bytes` (the datagram without its tag). Returns the header and
    /// the body that follows. Checks magic, version and kind; never panics.
    pub(crate) fn parse(bytes: &[u8]) -> Result<(Header, &[u8]), Reject> {
        let (&magic, rest) = bytes.split_first().ok_or(Reject::Truncated)?;
        if magic != MAGIC {
            return Err(Reject::BadMagic);
        }
        let (&version_kind, rest) = rest.split_first().ok_or(Reject::Truncated)?;
        if version_kind >> 4 != VERSION {
            return Err(Reject::UnknownVersion);
        }
        let kind = FrameKind::from_nibble(version_kind & 0x0F).ok_or(Reject::UnknownKind)?;
        let mut reader = Reader::new(rest);
        let key_id = KeyId::try_from(header_varint(&mut reader)?).map_err(|_| Reject::Malformed)?;
        let epoch: Epoch = header_varint(&mut reader)?;
        let sent_at = Instant::from_micros(header_varint(&mut reader)?);
        Ok((Header { kind, key_id, epoch, sent_at }, reader.rest()))
    }
}

/// A varint of the header: `Truncated` when the bytes end inside it, `Malformed` when it
/// overflows 64 bits.
fn header_varint(reader: &mut Reader<'_>) -> Result<u64, Reject> {
    let before = reader.rest();
    reader.varint().ok_or_else(|| {
        // Every byte left had its continuation bit set (or none was left): cut short.
        if before.iter().take(10).all(|byte| byte & 0x80 != 0) && before.len() < 10 {
            Reject::Truncated
        } else {
            Reject::Malformed
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_small_values_stay_small() {
        let header =
            Header { kind: FrameKind::Data, key_id: 7, epoch: 3, sent_at: Instant::from_micros(3_600_000_000) };
        let mut buf = [0u8; HEADER_BYTES_MAX];
        let len = header.emit(&mut buf).unwrap();
        // 2 fixed + key 1 + epoch 1 + one hour of uptime in µs (5 bytes).
        assert_eq!(len, 9);
        let (parsed, rest) = Header::parse(&buf[..len]).unwrap();
        assert_eq!(parsed, header);
        assert!(rest.is_empty());
    }

    #[test]
    fn header_rejects_by_reason() {
        assert_eq!(Header::parse(&[]).unwrap_err(), Reject::Truncated);
        let data = (VERSION << 4) | FrameKind::Data as u8;
        assert_eq!(Header::parse(&[0x00, data, 0, 0, 0]).unwrap_err(), Reject::BadMagic);
        assert_eq!(Header::parse(&[MAGIC, 0x11, 0, 0, 0]).unwrap_err(), Reject::UnknownVersion);
        assert_eq!(Header::parse(&[MAGIC, ((VERSION + 1) << 4) | 1, 0, 0, 0]).unwrap_err(), Reject::UnknownVersion);
        assert_eq!(Header::parse(&[MAGIC, (VERSION << 4) | 0x0F, 0, 0, 0]).unwrap_err(), Reject::UnknownKind);
        assert_eq!(Header::parse(&[MAGIC, data, 0x80]).unwrap_err(), Reject::Truncated);
    }
}
