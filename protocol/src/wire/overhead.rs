//! Wire overhead of a representative batch, for the README figures and the budget test.
//!
//! "Payload" is what an application would have to send anyway: the metric name, the value
//! (8 bytes) and the tag strings. Everything else is overhead: the header, the batch head and
//! the MAC tag of the datagram, and per event its flags, time, wall offset, length prefixes
//! and tag count. A tag list repeated from the previous event is not sent at all (one marker
//! byte); the per-event figure then counts only what is on the wire, so for tagged batches
//! the report gives wire bytes per event as well.

use super::{DataWriter, Event, FrameKind, MacKey, Payload, Sample, Sealer, Tag, Tags};
use crate::{ClockQuality, Instant, WallTime};

/// Overhead of one measured batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OverheadReport {
    pub events: u32,
    pub datagram_bytes: usize,
    pub payload_bytes: usize,
    /// Header, batch head and MAC tag: everything outside the events.
    pub datagram_overhead_bytes: usize,
    /// Per event, beyond its payload, not counting the datagram's share. Negative when
    /// repeated tags were elided.
    pub per_event_overhead_bytes: f64,
    /// Everything on the wire, per event, datagram share included.
    pub wire_bytes_per_event: f64,
}

/// A batch of `events` gauges named like `cpu.user`, 10 ms apart, with a synchronised wall
/// clock, from a device one hour after boot at sequence number 100 000; with `tags`, each
/// event also carries `host=gw-17`.
pub fn measure(events: u32, tags: bool) -> OverheadReport {
    let mut sealer = Sealer::new(7, MacKey::new(&[1; 32]), 3);
    let boot_hour = 3_600_000_000u64;
    let header = sealer.header(FrameKind::Data, Instant::from_micros(boot_hour + u64::from(events) * 10_000));
    let mut buf = [0u8; 4096];
    let mut writer = DataWriter::new(&mut buf, &header, 0, 3, 100_000, events).unwrap_or_else(|_| unreachable!());
    let body_start = writer.len();
    let mut payload_bytes = 0;
    const NAMES: [&str; 4] = ["cpu.user", "cpu.idle", "mem.used", "net.rx_b"];
    for index in 0..events {
        let mono = boot_hour + u64::from(index) * 10_000;
        let name = NAMES[index as usize % NAMES.len()];
        const HOST: [Tag<'static>; 1] = [Tag { key: "host", value: "gw-17" }];
        let tag_list = if tags { Tags::new(&HOST) } else { Tags::EMPTY };
        payload_bytes += name.len() + 8 + tag_list.iter().map(|t| t.key.len() + t.value.len()).sum::<usize>();
        let event = Event {
            mono: Instant::from_micros(mono),
            wall: Some(WallTime {
                unix_micros: 1_767_225_600_000_000 + mono as i64,
                quality: ClockQuality::Synchronized,
            }),
            payload: Payload::Gauge(Sample { name, value: 21.5 + f64::from(index), tags: tag_list }),
        };
        if writer.push(&event).is_err() {
            break;
        }
    }
    let events_pushed = writer.count();
    let events_bytes = writer.len() - body_start;
    let (buf, unsealed) = writer.into_parts();
    let datagram_bytes = sealer.seal(buf, unsealed).unwrap_or(0);
    OverheadReport {
        events: events_pushed,
        datagram_bytes,
        payload_bytes,
        datagram_overhead_bytes: datagram_bytes - events_bytes,
        per_event_overhead_bytes: (events_bytes as f64 - payload_bytes as f64) / f64::from(events_pushed.max(1)),
        wire_bytes_per_event: datagram_bytes as f64 / f64::from(events_pushed.max(1)),
    }
}

/// The untagged case of [`measure`].
pub fn measure_batch(events: u32) -> OverheadReport {
    measure(events, false)
}
