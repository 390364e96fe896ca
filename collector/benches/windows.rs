//! Window processor figure: events/s through the live pipeline on one core (block decode,
//! clock correction, watermark, the default per-device tumbling window), with no I/O and
//! no other thread, so the number is steady enough to compare builds by.
//!
//! The input is what the ingest bench's single-event run stores: 64 devices interleaved,
//! one event per record, blocks of the default size (128 KiB), plus each device's completeness
//! claim once a second of its time (what the acceptor stores from its heartbeats), so per-device
//! windows close as they do live.
//! `cargo bench -p driftlog-collector --bench windows` (FIGURES_WINDOW_EVENTS to change the
//! size).

use driftlog_collector::log::block::{BlockBuilder, block_records};
use driftlog_collector::log::record::{ClaimRecord, EventsHead, RecordKind, encode_head};
use driftlog_collector::windows::config::{WatermarkSection, default_windows};
use driftlog_collector::windows::pipeline::Pipeline;
use driftlog_collector::windows::store::NoStore;
use driftlog_eventtime::clock::{ClockFix, Method};
use driftlog_protocol::Instant;
use driftlog_protocol::wire::{Event, EventChainWriter, Payload, Sample, Tag, Tags};
use std::time::Instant as StdInstant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEVICES: u64 = 64;
const RUNS: usize = 5;

/// Blocks as the acceptor builds them, with the offset of each block's first record.
fn blocks(events: u64) -> Vec<(u64, Vec<u8>)> {
    let tags = [Tag { key: "room", value: "lab" }];
    let mut builder = BlockBuilder::default();
    let mut blocks = Vec::new();
    let mut next_offset = 0;
    let mut chain = vec![0u8; 256];
    let start_us: i64 = 1_800_000_000_000_000;
    for n in 0..events {
        let device = n % DEVICES;
        let seq = n / DEVICES;
        // One event every 10 µs of collector time, each device's clock 1 ms per event.
        let received_unix_us = start_us + n as i64 * 10;
        let device_us = 5_000_000 + seq * 1_000;
        let sample =
            Sample { name: "sensor.temperature", value: 20.0 + (seq % 100) as f64 * 0.25, tags: Tags::new(&tags) };
        let event = Event { mono: Instant::from_micros(device_us), wall: None, payload: Payload::Gauge(sample) };
        let mut writer = EventChainWriter::new(&mut chain);
        writer.push(&event).expect("one event fits");
        let len = writer.len();
        let head = EventsHead {
            device: device + 100,
            stream: 0,
            epoch: 1,
            first_seq: seq,
            count: 1,
            sent_at_us: device_us + 100,
            sent_epoch: 1,
            received_unix_us,
            clock: None,
        };
        let fix = ClockFix {
            reference_device_us: device_us,
            offset_us: received_unix_us - device_us as i64 - 150,
            drift_ppb: 1_500,
            uncertainty_us: 80,
            drift_uncertainty_ppb: 2_000,
            method: Method::MinFilter,
        };
        builder.push_events(head, || Some(fix), &chain[..len]);
        if seq % 1_000 == 999 {
            let claim = ClaimRecord {
                device: device + 100,
                stream: 0,
                epoch: 1,
                sent_at_us: device_us + 100,
                assigned_end: seq + 1,
                older_epochs_held: false,
                draining: false,
                at_unix_us: received_unix_us,
                received_unix_us,
            };
            builder.push(1, |out| encode_head(RecordKind::Claim, &claim, out));
        }
    }
    for block in builder.finish(0) {
        blocks.push((next_offset, block.value));
        next_offset += block.offsets;
    }
    blocks
}

fn main() {
    let events: u64 = std::env::var("FIGURES_WINDOW_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let blocks = blocks(events);
    let sections = default_windows();
    let watermark = WatermarkSection::default();
    let mut best = f64::INFINITY;
    let mut outputs = 0;
    for _ in 0..RUNS {
        let mut pipeline = Pipeline::new(&sections, &watermark);
        let mut out = Vec::new();
        outputs = 0;
        let started = StdInstant::now();
        for (first_offset, block) in &blocks {
            let (_, records) = block_records(*first_offset, block).expect("blocks decode");
            for item in records {
                let (_, record) = item.expect("records decode");
                pipeline.handle(&record, &NoStore, &mut out).expect("nothing is stored");
            }
            pipeline.end_block(&NoStore, &mut out).expect("nothing is stored");
            outputs += out.len();
            out.clear();
        }
        best = best.min(started.elapsed().as_secs_f64());
        assert_eq!(pipeline.stats().events, events, "every event windowed");
    }
    println!("window pipeline ({DEVICES} devices, one event per record, default window, best of {RUNS})");
    println!(
        "  {events} events in {:.3} s: {:.0} events/s on one core, {:.2} µs per event ({outputs} outputs)",
        best,
        events as f64 / best,
        best / events as f64 * 1e6
    );
}
