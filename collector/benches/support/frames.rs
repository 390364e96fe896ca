//! The datagrams both ingest benches send: single-event or batched data frames from
//! `DEVICES` devices in turn, each sealed with its own key, and the keys file that admits
//! them.

use driftlog_protocol::Instant;
use driftlog_protocol::wire::{DataWriter, Event, FrameKind, MacKey, Payload, Sample, Sealer, Tag, Tags};

pub(crate) const DEVICES: u64 = 64;

pub(crate) struct Frames {
    pub(crate) datagrams: Vec<Vec<u8>>,
    pub(crate) events: u64,
    /// Bytes of the events inside the frames (frame header, batch head and MAC excluded).
    pub(crate) event_bytes: u64,
    pub(crate) keys_toml: String,
}

pub(crate) fn frames(total_events: u64, per_frame: u32) -> Frames {
    frame_runs(total_events, per_frame, 1).pop().expect("one run")
}

/// `runs` sets of frames of `events_per_run` events each, every set continuing the devices'
/// sequence numbers and clocks where the one before it stopped (a warm-up, then the
/// measured burst).
pub(crate) fn frame_runs(events_per_run: u64, per_frame: u32, runs: usize) -> Vec<Frames> {
    let mut keys_toml = String::new();
    let mut sealers: Vec<Sealer> = (0..DEVICES)
        .map(|device| {
            let secret = [device as u8 + 1; 32];
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            keys_toml.push_str(&format!(
                "[[device]]\ndevice_id = {}\nkey_id = {}\nkey = \"{hex}\"\n",
                device + 100,
                device + 100
            ));
            Sealer::new(device as u32 + 100, MacKey::new(&secret), 1)
        })
        .collect();
    let tags = [Tag { key: "room", value: "lab" }];
    let mut next_seq = vec![0u64; DEVICES as usize];
    let mut clock = 1_000u64;
    let mut out = Vec::new();
    for _ in 0..runs {
        let mut datagrams = Vec::new();
        let (mut events, mut event_bytes) = (0u64, 0u64);
        while events < events_per_run {
            let device = (datagrams.len() as u64 % DEVICES) as usize;
            clock += 10;
            let header = sealers[device].header(FrameKind::Data, Instant::from_micros(clock));
            let mut buf = vec![0u8; 1_400];
            let mut writer = DataWriter::new(&mut buf, &header, 0, 1, next_seq[device], per_frame).unwrap();
            let empty = writer.len();
            while writer.count() < per_frame && events < events_per_run {
                let n = next_seq[device] + u64::from(writer.count());
                let sample = Sample {
                    name: "sensor.temperature",
                    value: 20.0 + (n % 100) as f64 * 0.25,
                    tags: Tags::new(&tags),
                };
                let event =
                    Event { mono: Instant::from_micros(n * 1_000), wall: None, payload: Payload::Gauge(sample) };
                if writer.push(&event).is_err() {
                    break;
                }
                events += 1;
            }
            next_seq[device] += u64::from(writer.count());
            event_bytes += (writer.len() - empty) as u64;
            let (sealed, len) = writer.into_parts();
            let total = sealers[device].seal(sealed, len).unwrap();
            buf.truncate(total);
            datagrams.push(buf);
        }
        out.push(Frames { datagrams, events, event_bytes, keys_toml: keys_toml.clone() });
    }
    out
}
