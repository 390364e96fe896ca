//! The window pipeline over log records as the acceptor writes them (events with their clock
//! fix, completeness claims, ticks), in log blocks: what a device's outage does to per-device
//! and fleet windows, and that where the state lives (memory, the log's file, a checkpoint
//! and a restart in between) changes no output byte.

mod pipeline_support;

use driftlog_collector::log::record::{ClosedBy, Record};
use driftlog_collector::windows::config::{
    StatsdEventTimeSection, WatermarkSection, WindowSection, WindowType, default_windows,
};
use driftlog_collector::windows::pipeline::Pipeline;
use driftlog_collector::windows::store::NoStore;
use driftlog_eventtime::window::Change;
use pipeline_support::*;
use std::collections::BTreeMap;

/// A decoded output record.
#[derive(Clone, Debug, PartialEq)]
enum Out {
    Window {
        window: String,
        change: Change,
        key: String,
        start: i64,
        count: u64,
        closed_by: ClosedBy,
    },
    Late {
        key: String,
    },
    /// StatsD flushes (checked in `statsd_event_time.rs`).
    Other(String),
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
            other => Out::Other(other.kind_name().to_string()),
        })
        .collect()
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
/// and the pipeline restarted from one half way (as after `kill -9`). The devices send on two
/// streams: gauges, and StatsD samples of every type (counters, timers with a rate, sets,
/// gauge deltas), so the event-time StatsD windows' state goes through the store too.
#[test]
fn where_window_state_lives_changes_no_output() {
    let mut sections = default_windows();
    sections.push(fleet_window("fleet_10s", "temp"));
    let statsd = StatsdEventTimeSection::default().spec(None);
    let lines = ["hits:1|c", "latency:7|ms|@0.5", "users:u3|s", "level:+2|g", "hits:3|c|@0.5", "users:u1|s"];
    let blocks = outage_scenario_on(&[0, 2], (30, 90), 130, 37, |device, stream, seq, at, received| match stream {
        0 => event(device, seq, at, received, "temp", at as f64),
        _ => statsd_event(device, seq, at, received, lines[(at as usize + device as usize) % lines.len()]),
    });
    let expected = run_with(&sections, &WatermarkSection::default(), statsd.clone(), &blocks);
    let flushes = statsd_flushes(&expected);
    assert!(flushes.len() >= 20, "both devices' StatsD windows fired: {}", flushes.len());
    assert!(expected.len() > 60);

    let (out, store) = run_through_store(&sections, statsd, &blocks, blocks.len() / 2);
    assert!(store.units_written > 0 && store.windows_written > 0, "state went through the store");
    assert_eq!(decode(&out), decode(&expected));
    assert_eq!(statsd_flushes(&out), flushes);
    assert_eq!(out, expected, "byte for byte");
}

/// A device that lies in its claims (one far ahead of anything it sent, then claims that go
/// backwards, and "draining" flipped on and off every second) and leaves a gap in its sequence
/// that it never fills nor explains hurts only its own windows: they wait, then close by
/// time-out `max_outage_ms` after its completeness stopped although it keeps sending; the lies
/// are counted; the honest device's windows close on time; and the fleet's windows are held no
/// longer than `max_backlog_hold_ms` at a time.
#[test]
fn a_device_lying_in_its_claims_only_delays_its_own_windows_and_boundedly_the_fleets() {
    let watermark = WatermarkSection {
        max_outage_ms: 20_000,
        max_backlog_hold_ms: 5_000,
        stream_silence_ms: 10_000,
        ..WatermarkSection::default()
    };
    let mut sections = default_windows();
    sections.push(fleet_window("fleet_10s", "temp"));
    let mut inputs = Vec::new();
    let mut seq = [0u64; 3];
    for t in 0..120 {
        for device in [1u64, 2] {
            if device == 2 && seq[2] == 10 {
                seq[2] += 1; // Sequence number 10 never comes.
            }
            inputs.push(event(device, seq[device as usize], t, t, "temp", 1.0));
            seq[device as usize] += 1;
            let honest = claim(device, t, seq[device as usize], false);
            let input = match (device, honest) {
                (2, Input::Claim(mut lie)) => {
                    // Far ahead until 60 s, then backwards; draining every other second.
                    lie.assigned_end = if t < 60 { 1_000_000 } else { 5 };
                    lie.draining = t % 2 == 0;
                    Input::Claim(lie)
                }
                (_, honest) => honest,
            };
            inputs.push(input);
        }
        inputs.push(Input::Tick(BASE + t * S + S / 2));
    }
    let blocks: Vec<Vec<Input>> = inputs.chunks(40).map(<[Input]>::to_vec).collect();
    let mut pipeline = Pipeline::new(&sections, &watermark);
    let mut out = Vec::new();
    for block in &blocks {
        for input in block {
            feed(&mut pipeline, &NoStore, input, &mut out).expect("nothing stored");
        }
        pipeline.end_block(&NoStore, &mut out).expect("nothing stored");
    }
    let outputs = decode(&out);
    let windows_of = |key: &str| -> Vec<(i64, ClosedBy)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Out::Window { window, key: k, start, closed_by, change: Change::Insert, .. }
                    if window == "per_device_10s" && k == key =>
                {
                    Some((*start, *closed_by))
                }
                _ => None,
            })
            .collect()
    };
    let honest = windows_of("temp device=1");
    assert_eq!(honest.len(), 11, "the honest device's windows close on its completeness: {honest:?}");
    assert!(honest.iter().all(|(_, by)| *by == ClosedBy::Completeness));
    let liar = windows_of("temp device=2");
    // Complete only up to its gap at 10 s (less B: not even its first window); its windows
    // close by time-out, 20 s after its completeness last moved, while it goes on sending.
    assert!(liar.iter().all(|(_, by)| *by == ClosedBy::Timeout), "{liar:?}");
    assert!(liar.len() >= 8, "time-outs keep its open windows bounded: {liar:?}");
    assert!(pipeline.stats().completeness_refused >= 50, "the backward claims are counted: {:?}", pipeline.stats());
    // The fleet's windows: held at most 5 s at a time by the flapping drain, so every window
    // that ended more than the hold, the bound, the idle timeout and a window ago has fired.
    let fired: Vec<i64> = outputs
        .iter()
        .filter_map(|o| match o {
            Out::Window { window, start, change: Change::Insert, .. } if window == "fleet_10s" => Some(*start),
            _ => None,
        })
        .collect();
    for start in (0..80).step_by(10) {
        assert!(fired.contains(&start), "fleet window {start} never fired: {fired:?}");
    }
}
