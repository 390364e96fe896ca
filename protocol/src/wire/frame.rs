//! Opening (verify + decode) and sealing whole frames.

use super::codec::Writer;
use super::control::ranges_are_canonical;
use super::control_codec as body;
use super::{
    AckRepr, DataFrame, EncodeError, FrameKind, Header, HeartbeatRepr, MAC_BYTES, MacKey, NakRepr, Reject, Sealer,
    TombstoneRepr,
};
use crate::Instant;

/// Which frames a receiver accepts: a collector opens device frames, a device opens collector
/// frames. A frame reflected back at its sender is therefore rejected as `UnexpectedKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    FromDevice,
    FromCollector,
}

// No Box in no_std: the variants stay inline and live briefly on the stack.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Body<'a> {
    Data(DataFrame<'a>),
    Heartbeat(HeartbeatRepr),
    Tombstone(TombstoneRepr),
    Ack(AckRepr),
    Nak(NakRepr),
}

/// An authenticated, fully decoded frame. Replay is not yet checked: that needs receiver
/// state (see [`super::ReplayGuard`]).
#[derive(Clone, Debug)]
pub struct Opened<'a> {
    pub header: Header,
    pub body: Body<'a>,
}

/// Verifies and decodes one datagram. `key_for` maps the header's key id to the key.
///
/// Checks run cheapest first and nothing is decoded before the MAC verifies. Never panics.
pub fn open<'a, 'k>(
    datagram: &'a [u8],
    direction: Direction,
    max_datagram_bytes: usize,
    key_for: impl FnOnce(crate::KeyId) -> Option<&'k MacKey>,
) -> Result<Opened<'a>, Reject> {
    let (header, body) = verify(datagram, direction, max_datagram_bytes, key_for)?;
    decode_body(header, body, DataFrame::decode)
}

/// Length, header, direction, key and MAC checks; returns the header and the (now
/// authenticated, not yet decoded) body.
fn verify<'a, 'k>(
    datagram: &'a [u8],
    direction: Direction,
    max_datagram_bytes: usize,
    key_for: impl FnOnce(crate::KeyId) -> Option<&'k MacKey>,
) -> Result<(Header, &'a [u8]), Reject> {
    if datagram.len() > max_datagram_bytes {
        return Err(Reject::Oversized);
    }
    let covered_len = datagram.len().checked_sub(MAC_BYTES).ok_or(Reject::Truncated)?;
    let (covered, tag) = datagram.split_at(covered_len);
    let (header, body) = Header::parse(covered)?;
    let from_device = direction == Direction::FromDevice;
    if header.kind.is_from_device() != from_device {
        return Err(Reject::UnexpectedKind);
    }
    let key = key_for(header.key_id).ok_or(Reject::UnknownKey)?;
    if !key.verify(covered, tag) {
        return Err(Reject::Forged);
    }
    Ok((header, body))
}

fn decode_body<'a>(
    header: Header,
    body: &'a [u8],
    decode_data: impl FnOnce(&Header, &'a [u8]) -> Result<DataFrame<'a>, Reject>,
) -> Result<Opened<'a>, Reject> {
    let body = match header.kind {
        FrameKind::Data => Body::Data(decode_data(&header, body)?),
        FrameKind::Heartbeat => {
            Body::Heartbeat(HeartbeatRepr::from_wire(&header, decode_all(body, body::read_heartbeat)?)?)
        }
        FrameKind::Tombstone => {
            Body::Tombstone(TombstoneRepr::from_wire(&header, decode_all(body, body::read_tombstone)?)?)
        }
        FrameKind::Ack => {
            let ack = decode_all(body, body::read_ack)?;
            if !ranges_are_canonical(&ack.sack) || ack.sack.first().is_some_and(|r| r.start <= ack.cumulative) {
                return Err(Reject::Malformed);
            }
            Body::Ack(ack)
        }
        FrameKind::Nak => {
            let nak = decode_all(body, body::read_nak)?;
            if nak.missing.is_empty() || !ranges_are_canonical(&nak.missing) {
                return Err(Reject::Malformed);
            }
            Body::Nak(nak)
        }
    };
    Ok(Opened { header, body })
}

fn decode_all<'a, T>(
    bytes: &'a [u8],
    read: impl FnOnce(&mut super::codec::Reader<'a>) -> Option<T>,
) -> Result<T, Reject> {
    body::decode_all(bytes, read).ok_or(Reject::Malformed)
}

/// A control frame to seal.
#[derive(Clone, Copy, Debug)]
pub enum ControlRef<'r> {
    Heartbeat(&'r HeartbeatRepr),
    Tombstone(&'r TombstoneRepr),
    Ack(&'r AckRepr),
    Nak(&'r NakRepr),
}

/// Encodes and seals a control frame into `buf`; returns the datagram length.
pub fn seal_control(
    sealer: &mut Sealer,
    now: Instant,
    frame: ControlRef<'_>,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    let kind = match frame {
        ControlRef::Heartbeat(_) => FrameKind::Heartbeat,
        ControlRef::Tombstone(_) => FrameKind::Tombstone,
        ControlRef::Ack(_) => FrameKind::Ack,
        ControlRef::Nak(_) => FrameKind::Nak,
    };
    let header = sealer.header(kind, now);
    let header_len = header.emit(buf)?;
    let body_limit = buf.len().checked_sub(MAC_BYTES).ok_or(EncodeError::BufferTooSmall)?;
    let target = buf.get_mut(header_len..body_limit).ok_or(EncodeError::BufferTooSmall)?;
    let mut writer = Writer::new(target);
    let written = match frame {
        ControlRef::Heartbeat(h) => {
            body::write_heartbeat(&mut writer, &h.to_wire(&header).ok_or(EncodeError::OutOfRange)?)
        }
        ControlRef::Tombstone(t) => {
            body::write_tombstone(&mut writer, &t.to_wire(&header).ok_or(EncodeError::OutOfRange)?)
        }
        ControlRef::Ack(a) => body::write_ack(&mut writer, a),
        ControlRef::Nak(n) => body::write_nak(&mut writer, n),
    };
    written.map_err(|_| EncodeError::BufferTooSmall)?;
    let body_len = writer.len();
    sealer.seal(buf, header_len + body_len)
}
