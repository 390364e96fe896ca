//! Log records as the acceptor and the StatsD listener write them (events with their clock
//! fix, completeness claims, ticks, `|T` samples), for driving the window pipeline directly:
//! scenarios, a store that applies checkpoints as the log's tables do, and the decoded
//! outputs.
#![allow(dead_code, unreachable_pub)]

use driftlog_collector::log::LogError;
use driftlog_collector::log::record::{ClaimRecord, EventsHead, Record, RecordKind, TickRecord, encode_head};
use driftlog_collector::statsd::aggregate::Family;
use driftlog_collector::statsd::flush::Flush;
use driftlog_collector::statsd::timed::{TimedRecord, TimedSample};
use driftlog_collector::windows::config::{WatermarkSection, WindowSection};
use driftlog_collector::windows::pipeline::{CheckpointDelta, Pipeline};
use driftlog_collector::windows::statsd::StatsdSpec;
use driftlog_collector::windows::store::{NoStore, StateStore, StoredEntry};
use driftlog_eventtime::clock::{ClockFix, Method};
use driftlog_protocol::Instant;
use driftlog_protocol::sender::{OwnedEvent, OwnedPayload};
use driftlog_protocol::statsd::event::{STATSD_STREAM, sample_to_payload};
use driftlog_protocol::statsd::{Dialect, SampleValue, parse_packet};
use driftlog_protocol::wire::EventChainWriter;
use std::collections::BTreeMap;

/// Collector time 0 of the scenarios, µs since 1970; device clocks read µs since this.
pub const BASE: i64 = 1_800_000_000_000_000;
pub const S: i64 = 1_000_000;

/// One record as the collector would store it.
#[derive(Clone, Debug)]
pub enum Input {
    Events {
        head: EventsHead,
        chain: Vec<u8>,
    },
    Claim(ClaimRecord),
    Tick(i64),
    /// A record the pipeline reads from its bytes (`statsd_samples`).
    Other {
        kind: u8,
        bytes: Vec<u8>,
    },
}

/// An event of `device` on `stream` (epoch 1) stamped at `at` seconds (collector time),
/// sequence `seq`, received at `received` seconds.
pub fn event_on(device: u64, stream: u32, seq: u64, at: i64, received: i64, payload: OwnedPayload) -> Input {
    let mono = (at * S) as u64;
    let mut chain = vec![0u8; 512];
    let owned = OwnedEvent { mono: Instant::from_micros(mono), wall: None, payload };
    let len = owned.with_event(|event| {
        let mut writer = EventChainWriter::new(&mut chain);
        writer.push(event).expect("fits");
        writer.len()
    });
    chain.truncate(len);
    let fix = ClockFix {
        reference_device_us: 0,
        offset_us: BASE,
        drift_ppb: 0,
        uncertainty_us: 0,
        drift_uncertainty_ppb: 0,
        method: Method::MinFilter,
    };
    let head = EventsHead {
        device,
        stream,
        epoch: 1,
        first_seq: seq,
        count: 1,
        sent_at_us: (received * S) as u64,
        sent_epoch: 1,
        received_unix_us: BASE + received * S,
        clock: Some(fix),
    };
    Input::Events { head, chain }
}

/// A gauge event on stream 0.
pub fn event(device: u64, seq: u64, at: i64, received: i64, metric: &str, value: f64) -> Input {
    let payload = OwnedPayload::Gauge { name: metric.to_string(), value, tags: Vec::new() };
    event_on(device, 0, seq, at, received, payload)
}

/// The event an agent's StatsD listener makes of `line`'s one sample (Etsy dialect), on the
/// StatsD stream.
pub fn statsd_event(device: u64, seq: u64, at: i64, received: i64, line: &str) -> Input {
    let sample = parse_packet(line.as_bytes(), Dialect::Etsy).next().expect("a sample").expect("parses");
    let payload = sample_to_payload(&sample).expect("an event");
    event_on(device, STATSD_STREAM, seq, at, received, payload)
}

/// A heartbeat claim of `device`'s `stream` sent at `at` seconds: every sequence number
/// below `next` assigned.
pub fn claim_on(device: u64, stream: u32, at: i64, next: u64, draining: bool) -> Input {
    Input::Claim(ClaimRecord {
        device,
        stream,
        epoch: 1,
        sent_at_us: (at * S) as u64,
        assigned_end: next,
        older_epochs_held: false,
        draining,
        at_unix_us: BASE + at * S,
        received_unix_us: BASE + at * S,
    })
}

pub fn claim(device: u64, at: i64, next: u64, draining: bool) -> Input {
    claim_on(device, 0, at, next, draining)
}

/// A `statsd_samples` record of `source` received at `received` seconds: each `(seconds,
/// line)` a DogStatsD line whose samples carry `|T` at that second.
pub fn timed(source: &str, received: i64, lines: &[(i64, &str)]) -> Input {
    let mut samples = Vec::new();
    for (at, line) in lines {
        for sample in parse_packet(line.as_bytes(), Dialect::DogStatsd) {
            let sample = sample.expect("parses");
            let mut key = Vec::new();
            sample.key.write(&mut |piece| key.extend_from_slice(piece));
            let (value, member) = match sample.value {
                SampleValue::Number(v) => (v, Vec::new()),
                SampleValue::Member(m) => (0.0, m.to_vec()),
            };
            samples.push(TimedSample {
                key: String::from_utf8(key).unwrap(),
                family: Family::of(sample.kind),
                value,
                member,
                gauge_delta: sample.gauge_delta,
                sample_rate: sample.sample_rate,
                timestamp_s: (BASE + at * S) / S,
            });
        }
    }
    let record = TimedRecord { source: source.to_string(), received_unix_us: BASE + received * S, samples };
    let mut bytes = Vec::new();
    encode_head(RecordKind::StatsdSamples, &record, &mut bytes);
    Input::Other { kind: bytes[0], bytes: bytes[1..].to_vec() }
}

/// Two devices, each sending one event a second on each of `streams` (`make(device, stream,
/// seq, at, received)`) with a claim per stream each second; device 2 is cut off from
/// `outage.0` to `outage.1` (seconds), then reconnects: a claim that it is draining, its
/// backlog oldest first, a claim that the drain is over. Returns the inputs in log order,
/// grouped in blocks of `per_block` records.
pub fn outage_scenario_on(
    streams: &[u32],
    outage: (i64, i64),
    end: i64,
    per_block: usize,
    make: impl Fn(u64, u32, u64, i64, i64) -> Input,
) -> Vec<Vec<Input>> {
    let mut inputs = Vec::new();
    let mut seq: BTreeMap<(u64, u32), u64> = BTreeMap::new();
    for t in 0..end {
        for device in [1u64, 2] {
            if device == 2 && (outage.0..outage.1).contains(&t) {
                continue;
            }
            for &stream in streams {
                let next = seq.entry((device, stream)).or_default();
                if device == 2 && t == outage.1 {
                    // Back: the heartbeat goes first and announces the drain...
                    inputs.push(claim_on(2, stream, t, *next + (outage.1 - outage.0) as u64, true));
                    // ... then the backlog, oldest first, all received now.
                    for buffered in outage.0..outage.1 {
                        inputs.push(make(2, stream, *next, buffered, t));
                        *next += 1;
                    }
                }
                inputs.push(make(device, stream, *next, t, t));
                *next += 1;
                inputs.push(claim_on(device, stream, t, *next, false));
            }
        }
        inputs.push(Input::Tick(BASE + t * S + S / 2));
    }
    inputs.chunks(per_block).map(<[Input]>::to_vec).collect()
}

/// [`outage_scenario_on`] with one gauge `metric` on stream 0, its value the second.
pub fn outage_scenario(metric: &str, outage: (i64, i64), end: i64, per_block: usize) -> Vec<Vec<Input>> {
    outage_scenario_on(&[0], outage, end, per_block, |device, _, seq, at, received| {
        event(device, seq, at, received, metric, at as f64)
    })
}

pub fn feed(
    pipeline: &mut Pipeline,
    store: &dyn StateStore,
    input: &Input,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), LogError> {
    match input {
        Input::Events { head, chain } => pipeline.handle(&Record::Events { head: *head, events: chain }, store, out),
        Input::Claim(claim) => pipeline.handle(&Record::Claim(*claim), store, out),
        Input::Tick(now) => pipeline.handle(&Record::Tick(TickRecord { now_unix_us: *now }), store, out),
        Input::Other { kind, bytes } => pipeline.handle(&Record::Other { kind: *kind, bytes }, store, out),
    }
}

/// Runs every block through a pipeline that keeps everything in memory.
pub fn run_with(
    sections: &[WindowSection],
    watermark: &WatermarkSection,
    statsd: Option<StatsdSpec>,
    blocks: &[Vec<Input>],
) -> Vec<Vec<u8>> {
    let mut pipeline = Pipeline::new(sections, watermark).with_statsd(statsd);
    let mut out = Vec::new();
    for block in blocks {
        for input in block {
            feed(&mut pipeline, &NoStore, input, &mut out).expect("nothing is stored");
        }
        pipeline.end_block(&NoStore, &mut out).expect("nothing is stored");
    }
    out
}

pub fn run(sections: &[WindowSection], watermark: &WatermarkSection, blocks: &[Vec<Input>]) -> Vec<Vec<u8>> {
    run_with(sections, watermark, None, blocks)
}

/// The same blocks with every device unit out of memory after each record (the tightest
/// budget), checkpoints committed to a store every third block, and at `crash_at` the
/// pipeline thrown away and restored from the last checkpoint (as after `kill -9`), the
/// blocks since replayed. Returns the outputs and the store.
pub fn run_through_store(
    sections: &[WindowSection],
    statsd: Option<StatsdSpec>,
    blocks: &[Vec<Input>],
    crash_at: usize,
) -> (Vec<Vec<u8>>, MemoryStore) {
    let tight = WatermarkSection { state_memory_bytes: 1, ..WatermarkSection::default() };
    let mut store = MemoryStore::default();
    let mut pipeline = Pipeline::new(sections, &tight).with_statsd(statsd.clone());
    let mut out = Vec::new();
    let mut committed_out = 0;
    let mut checkpoint: Option<(usize, Vec<u8>)> = None;
    for (index, block) in blocks.iter().enumerate() {
        for input in block {
            feed(&mut pipeline, &store, input, &mut out).expect("memory store");
        }
        pipeline.end_block(&store, &mut out).expect("memory store");
        if index % 3 == 2 {
            let delta = pipeline.checkpoint();
            checkpoint = Some((index, delta.header.clone()));
            store.commit(delta);
            pipeline.checkpoint_committed();
            committed_out = out.len();
        }
        if index == crash_at {
            // A crash: what was not checkpointed is lost and recomputed from the checkpoint.
            out.truncate(committed_out);
            let (resume, header) = checkpoint.as_ref().expect("a checkpoint was taken");
            pipeline =
                Pipeline::restore(sections, &tight, header, &store).expect("restores").0.with_statsd(statsd.clone());
            for block in &blocks[resume + 1..=index] {
                for input in block {
                    feed(&mut pipeline, &store, input, &mut out).expect("memory store");
                }
                pipeline.end_block(&store, &mut out).expect("memory store");
            }
        }
    }
    (out, store)
}

/// A store that applies checkpoints to maps, as the log's tables do.
#[derive(Default)]
pub struct MemoryStore {
    units: BTreeMap<u64, Vec<u8>>,
    windows: BTreeMap<Vec<u8>, Vec<u8>>,
    pub units_written: u64,
    pub windows_written: u64,
}

impl MemoryStore {
    pub fn commit(&mut self, delta: CheckpointDelta) {
        for (device, value) in delta.pending.units {
            self.units_written += 1;
            match value {
                Some(bytes) => self.units.insert(device, bytes),
                None => self.units.remove(&device),
            };
        }
        for (key, value) in delta.pending.windows {
            self.windows_written += 1;
            match value {
                Some(bytes) => self.windows.insert(key, bytes),
                None => self.windows.remove(&key),
            };
        }
    }
}

impl StateStore for MemoryStore {
    fn unit(&self, device: u64) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.units.get(&device).cloned())
    }
    fn stored_window(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.windows.get(key).cloned())
    }
    fn stored_windows(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<StoredEntry>, LogError> {
        Ok(self.windows.range(from.to_vec()..to.to_vec()).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

/// The `statsd_flush` records among `outputs`.
pub fn statsd_flushes(outputs: &[Vec<u8>]) -> Vec<Flush> {
    outputs
        .iter()
        .filter(|bytes| bytes[0] == RecordKind::StatsdFlush as u8)
        .map(|bytes| driftlog_collector::statsd::flush::decode_record(&bytes[1..]).expect("flushes decode"))
        .collect()
}
