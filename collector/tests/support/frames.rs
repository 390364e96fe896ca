//! Hand-sealed frames for tests that play a device (or an attacker) without an agent.
#![allow(dead_code, unreachable_pub)]

use driftlog_protocol::wire::{
    ControlRef, DataWriter, DropReason, Event, FrameKind, HeartbeatRepr, MacKey, Payload, Sample, Sealer,
    TombstoneRepr, seal_control,
};
use driftlog_protocol::{Instant, SeqRange};

/// The development key's sealer (key id 0, all-zero secret), as an agent without a key file
/// has it.
pub fn development_sealer(epoch: u64) -> Sealer {
    Sealer::new(0, MacKey::new(&[0; 32]), epoch)
}

/// A keys file line set for one device.
pub fn keys_entry(device: u64, key_id: u32, secret: &[u8; 32]) -> String {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    format!("\n[[device]]\ndevice_id = {device}\nkey_id = {key_id}\nkey = \"{hex}\"\n")
}

/// A data frame of one gauge `probe = value` at `seq` of `(stream, epoch)`, sent at
/// `sent_at_us` on the device's clock.
pub fn data_frame(sealer: &mut Sealer, sent_at_us: u64, stream: u32, epoch: u64, seq: u64, value: f64) -> Vec<u8> {
    let header = sealer.header(FrameKind::Data, Instant::from_micros(sent_at_us));
    let mut buf = vec![0u8; 256];
    let mut writer = DataWriter::new(&mut buf, &header, stream, epoch, seq, 8).unwrap();
    let sample = Sample { name: "probe", value, tags: Default::default() };
    writer
        .push(&Event { mono: Instant::from_micros(sent_at_us), wall: None, payload: Payload::Gauge(sample) })
        .unwrap();
    let (buf, len) = writer.into_parts();
    let total = sealer.seal(buf, len).unwrap();
    buf[..total].to_vec()
}

/// A heartbeat of `(stream, epoch)` saying the device holds `[oldest, next)`.
pub fn heartbeat(sealer: &mut Sealer, sent_at_us: u64, stream: u32, epoch: u64, oldest: u64, next: u64) -> Vec<u8> {
    let heartbeat = HeartbeatRepr {
        stream,
        epoch,
        oldest_available: oldest,
        next_seq: next,
        wall_now: None,
        ack_timing: None,
        assigned_end: next,
        held_epochs_back: 0,
        draining: false,
    };
    let mut buf = vec![0u8; 256];
    let len =
        seal_control(sealer, Instant::from_micros(sent_at_us), ControlRef::Heartbeat(&heartbeat), &mut buf).unwrap();
    buf.truncate(len);
    buf
}

/// A tombstone for `[start, end)` of `(stream, epoch)`.
pub fn tombstone(sealer: &mut Sealer, sent_at_us: u64, stream: u32, epoch: u64, start: u64, end: u64) -> Vec<u8> {
    let tombstone = TombstoneRepr { stream, epoch, range: SeqRange::new(start, end), reason: DropReason::BufferFull };
    let mut buf = vec![0u8; 256];
    let len =
        seal_control(sealer, Instant::from_micros(sent_at_us), ControlRef::Tombstone(&tombstone), &mut buf).unwrap();
    buf.truncate(len);
    buf
}
