//! The window pipeline over log records as the acceptor writes them (events with their clock
//! fix, completeness claims, ticks), in log blocks: what a device's outage does to per-device
//! and fleet windows, and that where the state lives (memory, the log's file, a checkpoint
//! and a restart in between) changes no output byte.

use driftlog_collector::log::LogError;
use driftlog_collector::log::record::{ClaimRecord, ClosedBy, EventsHead, Record, TickRecord};
use driftlog_collector::windows::config::{WatermarkSection, WindowSection, WindowType, default_windows};
use driftlog_collector::windows::pipeline::{CheckpointDelta, Pipeline};
use driftlog_collector::windows::store::{NoStore, StateStore, StoredEntry};
use driftlog_eventtime::clock::{ClockFix, Method};
use driftlog_eventtime::window::Change;
use driftlog_protocol::Instant;
use driftlog_protocol::wire::{Event, EventChainWriter, Payload, Sample, Tags};
use std::collections::BTreeMap;

/// Collector time 0 of the scenarios, µs since 1970; device clocks read µs since this.
const BASE: i64 = 1_800_000_000_000_000;
const S: i64 = 1_000_000;

/// One record as the acceptor would store it.
#[derive(Clone, Debug)]
enum Input {
    Events { head: EventsHead, chain: Vec<u8> },
    Claim(ClaimRecord),
    Tick(i64),
}

/// An event of `device` (stream 0, epoch 1) stamped at `at` seconds (collector time), sequence
/// `seq`, received at `received` seconds.
fn event(device: u64, seq: u64, at: i64, received: i64, metric: &str, value: f64) -> Input {
    let mono = (at * S) as u64;
    let mut chain = vec![0u8; 128];
    let sample = Sample { name: metric, value, tags: Tags::default() };
    let event = Event { mono: Instant::from_micros(mono), wall: None, payload: Payload::Gauge(sample) };
    let mut writer = EventChainWriter::new(&mut chain);
    writer.push(&event).expect("fits");
    let len = writer.len();
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
        stream: 0,
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

/// A heartbeat claim of `device` sent at `at` seconds: every sequence number below `next`
/// assigned.
fn claim(device: u64, at: i64, next: u64, draining: bool) -> Input {
    Input::Claim(ClaimRecord {
        device,
        stream: 0,
        epoch: 1,
        sent_at_us: (at * S) as u64,
        assigned_end: next,
        older_epochs_held: false,
        draining,
        at_unix_us: BASE + at * S,
        received_unix_us: BASE + at * S,
    })
}

/// Two devices sending `metric` once a second with a claim each second; device 2 is cut off
/// from `outage.0` to `outage.1` (seconds), then reconnects: a claim that it is draining,
/// its backlog oldest first, a claim that the drain is over. Returns the inputs in log order,
/// grouped in blocks of `per_block` records.
fn outage_scenario(metric: &str, outage: (i64, i64), end: i64, per_block: usize) -> Vec<Vec<Input>> {
    let mut inputs = Vec::new();
    let mut seq = [0u64; 3];
    for t in 0..end {
        for device in [1u64, 2] {
            let offline = device == 2 && (outage.0..outage.1).contains(&t);
            if offline {
                continue;
            }
            if device == 2 && t == outage.1 {
                // Back: the heartbeat goes first and announces the drain...
                inputs.push(claim(2, t, seq[2] + (outage.1 - outage.0) as u64, true));
                // ... then the backlog, oldest first, all received now.
                for buffered in outage.0..outage.1 {
                    inputs.push(event(2, seq[2], buffered, t, metric, buffered as f64));
                    seq[2] += 1;
                }
            }
            inputs.push(event(device, seq[device as usize], t, t, metric, t as f64));
            seq[device as usize] += 1;
            inputs.push(claim(device, t, seq[device as usize], false));
        }
        inputs.push(Input::Tick(BASE + t * S + S / 2));
    }
    inputs.chunks(per_block).map(<[Input]>::to_vec).collect()
}

/// A decoded output record.
#[derive(Clone, Debug, PartialEq)]
enum Out {
    Window { window: String, change: Change, key: String, start: i64, count: u64, closed_by: ClosedBy },
    Late { key: String },
}

fn decode(encoded: &[Vec<u8>]) -> Vec<Out> {
    encoded
        .iter()
        .map(|bytes| match Record::decode(bytes, &mut Vec::new()).expect("outputs decode") {
            Record::Window(w) => Out::Window {
                window: w.window,
                change: w.change,
                key: w.key,
                start: (w.start_unix_us - BASE) / S,
                count: w.count,
                closed_by: w.closed_by,
            },
            Record::Late(l) => Out::Late { key: l.key },
            other => panic!("unexpected output {other:?}"),
        })
        .collect()
}

fn feed(
    pipeline: &mut Pipeline,
    store: &dyn StateStore,
    input: &Input,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), LogError> {
    match input {
        Input::Events { head, chain } => pipeline.handle(&Record::Events { head: *head, events: chain }, store, out),
        Input::Claim(claim) => pipeline.handle(&Record::Claim(*claim), store, out),
        Input::Tick(now) => pipeline.handle(&Record::Tick(TickRecord { now_unix_us: *now }), store, out),
    }
}

/// Runs every block through a pipeline that keeps everything in memory.
fn run(sections: &[WindowSection], watermark: &WatermarkSection, blocks: &[Vec<Input>]) -> Vec<Vec<u8>> {
    let mut pipeline = Pipeline::new(sections, watermark);
    let mut out = Vec::new();
    for block in blocks {
        for input in block {
            feed(&mut pipeline, &NoStore, input, &mut out).expect("nothing is stored");
        }
        pipeline.end_block(&NoStore, &mut out).expect("nothing is stored");
    }
    out
}

fn fleet_window(name: &str, metric: &str) -> WindowSection {
    let mut section = default_windows().remove(0);
    section.name = name.to_string();
    section.metrics = vec![metric.to_string()];
    section.per_device = false;
    section.window_type = WindowType::Tumbling;
    section
}

#[test]
fn an_offline_devices_windows_wait_for_its_backlog_and_fire_once_with_every_event() {
    let watermark = WatermarkSection::default();
    let blocks = outage_scenario("temp", (30, 90), 130, 50);
    let outputs = decode(&run(&default_windows(), &watermark, &blocks));
    let late = outputs.iter().filter(|o| matches!(o, Out::Late { .. })).count();
    assert_eq!(late, 0, "nothing is late: {outputs:?}");
    for device in [1, 2] {
        let key = format!("temp device={device}");
        let mine: Vec<&Out> = outputs.iter().filter(|o| matches!(o, Out::Window { key: k, .. } if *k == key)).collect();
        let starts: Vec<i64> = mine
            .iter()
            .map(|o| match o {
                Out::Window { start, .. } => *start,
                _ => 0,
            })
            .collect();
        // Each window once (the last ones wait for claims past their end), an INSERT of all
        // its ten events, closed by the device's completeness.
        assert_eq!(starts, (0..12).map(|w| w * 10).collect::<Vec<_>>(), "device {device}: {mine:?}");
        for output in mine {
            let Out::Window { change, count, closed_by, .. } = output else { unreachable!() };
            assert_eq!((*change, *count, *closed_by), (Change::Insert, 10, ClosedBy::Completeness), "device {device}");
        }
    }
}

#[test]
fn a_fleet_window_takes_a_returning_devices_backlog_with_one_update_per_window() {
    let watermark = WatermarkSection::default();
    let sections = vec![fleet_window("fleet_10s", "temp")];
    let blocks = outage_scenario("temp", (30, 90), 130, 50);
    let outputs = decode(&run(&sections, &watermark, &blocks));
    assert!(!outputs.iter().any(|o| matches!(o, Out::Late { .. })), "the default lateness covers the outage");
    let mut per_window: BTreeMap<i64, Vec<(Change, u64)>> = BTreeMap::new();
    for output in &outputs {
        if let Out::Window { start, change, count, .. } = output {
            per_window.entry(*start).or_default().push((*change, *count));
        }
    }
    for (start, changes) in &per_window {
        let inserts = changes.iter().filter(|(c, _)| *c == Change::Insert).count();
        let retracts = changes.iter().filter(|(c, _)| *c == Change::Retract).count();
        assert!(inserts <= 2 && retracts == inserts - 1, "window {start}: {changes:?}");
        // The last word on each window counts both devices' ten events.
        let last = changes.iter().rev().find(|(c, _)| *c == Change::Insert).map(|(_, n)| *n);
        if *start < 120 {
            assert_eq!(last, Some(20), "window {start}: {changes:?}");
        }
    }
    let updated = per_window.values().filter(|c| c.len() > 1).count();
    assert!(updated > 0, "the outage outlasted the idle timeout, so some windows fired without device 2");
}

/// The same records give the same output bytes whether every device unit stays in memory or
/// leaves it after every record (the tightest budget), with checkpoints committed to a store
/// and the pipeline restarted from one half way (as after `kill -9`).
#[test]
fn where_window_state_lives_changes_no_output() {
    let mut sections = default_windows();
    sections.push(fleet_window("fleet_10s", "temp"));
    let watermark = WatermarkSection::default();
    let blocks = outage_scenario("temp", (30, 90), 130, 37);
    let expected = run(&sections, &watermark, &blocks);
    assert!(expected.len() > 40);

    let tight = WatermarkSection { state_memory_bytes: 1, ..WatermarkSection::default() };
    let mut store = MemoryStore::default();
    let mut pipeline = Pipeline::new(&sections, &tight);
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
        if index == blocks.len() / 2 {
            // A crash: what was not checkpointed is lost and recomputed from the checkpoint.
            out.truncate(committed_out);
            let (resume, header) = checkpoint.as_ref().expect("a checkpoint was taken");
            pipeline = Pipeline::restore(&sections, &tight, header, &store).expect("restores").0;
            for block in &blocks[resume + 1..=index] {
                for input in block {
                    feed(&mut pipeline, &store, input, &mut out).expect("memory store");
                }
                pipeline.end_block(&store, &mut out).expect("memory store");
            }
        }
    }
    assert!(store.units_written > 0 && store.windows_written > 0, "state went through the store");
    assert_eq!(decode(&out), decode(&expected));
    assert_eq!(out, expected, "byte for byte");
}

/// A store that applies checkpoints to maps, as the log's tables do.
#[derive(Default)]
struct MemoryStore {
    units: BTreeMap<u64, Vec<u8>>,
    windows: BTreeMap<Vec<u8>, Vec<u8>>,
    units_written: u64,
    windows_written: u64,
}

impl MemoryStore {
    fn commit(&mut self, delta: CheckpointDelta) {
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
