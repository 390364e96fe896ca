//! Shared helpers for the protocol's integration tests.
#![allow(dead_code, unreachable_pub)]

use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
use driftlog_protocol::wire::{DataWriter, FrameKind, Header, MacKey, Sealer};
use driftlog_protocol::{DeviceId, Instant, KeyId};
use std::collections::BTreeMap;

pub const KEY_ID: KeyId = 7;
pub const DEVICE: DeviceId = 42;
pub const SECRET: [u8; 32] = [9; 32];

pub fn key() -> MacKey {
    MacKey::new(&SECRET)
}

pub type Keys = BTreeMap<KeyId, (DeviceId, MacKey)>;

pub fn endpoint() -> Endpoint<Keys> {
    Endpoint::new(EndpointConfig::new(1, 5), BTreeMap::from([(KEY_ID, (DEVICE, key()))]))
}

/// Seals `body` behind a valid header and tag: the way to reach body decoders with
/// arbitrary bytes.
pub fn seal_raw(kind: FrameKind, epoch: u64, sent_at: u64, body: &[u8]) -> Vec<u8> {
    let sealer = Sealer::new(KEY_ID, key(), epoch);
    let header = Header { kind, key_id: KEY_ID, epoch, sent_at: Instant::from_micros(sent_at) };
    let mut buf = vec![0u8; 64 + body.len()];
    let len = header.emit(&mut buf).unwrap();
    buf[len..len + body.len()].copy_from_slice(body);
    let total = sealer.seal(&mut buf, len + body.len()).unwrap();
    buf.truncate(total);
    buf
}

/// A sealed data frame of `events` gauges starting at `first_seq`.
pub fn data_frame(epoch: u64, sent_at: u64, first_seq: u64, events: u32) -> Vec<u8> {
    use driftlog_protocol::wire::{Event, Payload, Sample};
    let mut sealer = Sealer::new(KEY_ID, key(), epoch);
    let header = sealer.header(FrameKind::Data, Instant::from_micros(sent_at));
    let mut buf = vec![0u8; 1_400];
    let mut writer = DataWriter::new(&mut buf, &header, 1, epoch, first_seq, 64).unwrap();
    for i in 0..events {
        let event = Event {
            mono: Instant::from_micros(1_000 + u64::from(i)),
            wall: None,
            payload: Payload::Gauge(Sample { name: "t", value: f64::from(i), tags: Default::default() }),
        };
        writer.push(&event).unwrap();
    }
    let (buf, len) = writer.into_parts();
    let total = sealer.seal(buf, len).unwrap();
    buf[..total].to_vec()
}
