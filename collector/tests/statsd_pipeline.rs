//! StatsD by event time through the window pipeline, from records as the collector stores
//! them: an agent's StatsD stream per device (closed on its completeness), and `|T` lines per
//! source address (closed a bound after their end by processing time); late samples, the
//! time-out of a device that stays away, and where the state lives.

mod pipeline_support;

use driftlog_collector::log::record::{ClosedBy, Record};
use driftlog_collector::statsd::flush::Flush;
use driftlog_collector::windows::config::{StatsdEventTimeSection, WatermarkSection, default_windows};
use driftlog_collector::windows::statsd::StatsdSpec;
use driftlog_eventtime::window::Change;
use pipeline_support::*;
use std::collections::BTreeMap;

fn spec() -> StatsdSpec {
    StatsdEventTimeSection::default().spec(None).expect("on by default")
}

/// `(start s, change, revision, closed_by, counter)` of each flush of `source`.
fn windows_of(flushes: &[Flush], source: &str, counter: &str) -> Vec<(i64, Change, u32, ClosedBy, f64)> {
    flushes
        .iter()
        .filter(|f| f.source == source)
        .map(|f| {
            let w = f.window.as_ref().expect("an event-time flush");
            (
                (w.start_unix_us - BASE) / S,
                w.change,
                w.revision,
                w.closed_by,
                f.counters.get(counter).copied().unwrap_or(0.0),
            )
        })
        .collect()
}

fn late_keys(outputs: &[Vec<u8>]) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|bytes| match Record::decode(bytes, &mut Vec::new()) {
            Ok(Record::Late(late)) => Some(late.key),
            _ => None,
        })
        .collect()
}

/// Counter increments once a second (the value is the second, so each window's sum says
/// which seconds it holds) and a timer; device 2 is offline 30..90 s and drains its backlog
/// when it returns.
fn scenario(per_block: usize) -> Vec<Vec<Input>> {
    outage_scenario_on(&[2], (30, 90), 130, per_block, |device, _, seq, at, received| {
        let line = if at % 5 == 4 { format!("latency:{at}|ms|@0.5") } else { format!("hits:{at}|c") };
        statsd_event(device, seq, at, received, &line)
    })
}

#[test]
fn an_offline_devices_statsd_windows_wait_for_its_backlog_and_hold_every_increment_once() {
    let outputs = run_with(&default_windows(), &WatermarkSection::default(), Some(spec()), &scenario(50));
    assert!(late_keys(&outputs).is_empty(), "nothing is late: {:?}", late_keys(&outputs));
    let flushes = statsd_flushes(&outputs);
    for device in [1u64, 2] {
        let mine = windows_of(&flushes, &format!("device-{device}"), "hits");
        // Each 10 s window once, INSERT, revision 0, closed by the device's completeness; the
        // last ones wait for claims past their end.
        let starts: Vec<i64> = mine.iter().map(|w| w.0).collect();
        assert_eq!(starts, (0..12).map(|w| w * 10).collect::<Vec<_>>(), "device {device}: {mine:?}");
        for (start, change, revision, closed_by, hits) in mine {
            assert_eq!((change, revision, closed_by), (Change::Insert, 0, ClosedBy::Completeness));
            // Every increment in the window of the second it happened, the outage's included.
            let expected: i64 = (start..start + 10).filter(|t| t % 5 != 4).sum();
            assert_eq!(hits, expected as f64, "device {device} window {start}");
        }
        let timer_counts: f64 = flushes
            .iter()
            .filter(|f| f.source == format!("device-{device}"))
            .map(|f| f.timers.get("latency").map_or(0.0, |t| t.count))
            .sum();
        assert_eq!(timer_counts, 24.0 * 2.0, "24 timer samples at @0.5 count 2 each");
        let flush = flushes.iter().find(|f| f.source == format!("device-{device}")).unwrap();
        assert_eq!(flush.window.as_ref().unwrap().device, Some(device));
        assert_eq!(flush.interval_ms, 10_000);
    }
}

#[test]
fn a_device_gone_past_its_maximum_outage_is_flushed_as_it_stands_and_its_backlog_updates_it() {
    // Device 2 goes away at 25 s for 65 s; the maximum outage is 20 s, so its open window
    // [20, 30) is emitted as it stands (timed out). When it returns, its backlog updates that
    // window once (RETRACT + INSERT, within the allowed lateness) and fills the later ones,
    // which close on its completeness as usual.
    let watermark = WatermarkSection { max_outage_ms: 20_000, ..WatermarkSection::default() };
    let blocks = outage_scenario_on(&[2], (25, 90), 130, 50, |device, _, seq, at, received| {
        let line = if at % 5 == 4 { format!("latency:{at}|ms|@0.5") } else { format!("hits:{at}|c") };
        statsd_event(device, seq, at, received, &line)
    });
    let outputs = run_with(&[], &watermark, Some(spec()), &blocks);
    assert!(late_keys(&outputs).is_empty(), "{:?}", late_keys(&outputs));
    let flushes = statsd_flushes(&outputs);
    let hits = |from: i64, to: i64| (from..to).filter(|t| t % 5 != 4).sum::<i64>() as f64;
    let device2 = windows_of(&flushes, "device-2", "hits");
    let window20: Vec<_> = device2.iter().filter(|w| w.0 == 20).cloned().collect();
    assert_eq!(
        window20,
        [
            (20, Change::Insert, 0, ClosedBy::Timeout, hits(20, 25)),
            (20, Change::Retract, 0, ClosedBy::Timeout, hits(20, 25)),
            (20, Change::Insert, 1, ClosedBy::Timeout, hits(20, 30)),
        ]
    );
    for (start, change, revision, closed_by, value) in device2.iter().filter(|w| w.0 != 20) {
        assert_eq!((*change, *revision, *closed_by), (Change::Insert, 0, ClosedBy::Completeness), "window {start}");
        assert_eq!(*value, hits(*start, start + 10), "window {start}");
    }
    assert_eq!(device2.iter().filter(|w| w.0 != 20).count(), 11);
}

#[test]
fn timestamped_lines_are_aggregated_per_source_by_their_time_and_late_ones_retract() {
    let bound = spec().timestamp_bound / S;
    let mut blocks = Vec::new();
    // A source sends `c:1|c|T<t>` for t in 0..30 as it happens, then, at 40 s, a batch it
    // had kept (5, 12 and 14 s: within the allowed lateness), and one for -100 s (beyond it).
    for t in 0..30 {
        blocks.push(vec![timed("ip-10-0-0-5", t, &[(t, "c:1|c|#k:v")]), Input::Tick(BASE + t * S + S / 2)]);
    }
    // A window closes `bound` after its end: [0, 10) at 20 s, [10, 20) not before 30 s.
    assert_eq!(bound, 10);
    blocks.push(vec![timed("ip-10-0-0-5", 40, &[(5, "c:1|c|#k:v"), (12, "c:1|c|#k:v"), (14, "c:2|c|#k:v")])]);
    blocks.push(vec![timed("ip-10-0-0-5", 41, &[(-100, "c:1|c|#k:v")])]);
    blocks.push(vec![timed("ip-10-0-0-6", 41, &[(41, "d:5|ms")])]);
    for t in 42..150 {
        blocks.push(vec![Input::Tick(BASE + t * S)]);
    }
    let outputs = run_with(&[], &WatermarkSection::default(), Some(spec()), &blocks);
    let flushes = statsd_flushes(&outputs);
    let windows = windows_of(&flushes, "ip-10-0-0-5", "c;k=v");
    assert_eq!(
        windows,
        [
            // Closed by processing time, `bound` after each window's end.
            (0, Change::Insert, 0, ClosedBy::Watermark, 10.0),
            // [10, 20) had not closed yet (the last tick before the batch was 29.5 s): the
            // batch's 12 s and 14 s samples are in its first result.
            (10, Change::Insert, 0, ClosedBy::Watermark, 13.0),
            (20, Change::Insert, 0, ClosedBy::Watermark, 10.0),
            // The 5 s sample is late for [0, 10): one update for the block.
            (0, Change::Retract, 0, ClosedBy::Watermark, 10.0),
            (0, Change::Insert, 1, ClosedBy::Watermark, 11.0),
        ],
        "{windows:?}"
    );
    assert_eq!(late_keys(&outputs), ["c;k=v source=ip-10-0-0-5"], "the sample 100 s before the epoch of the test");
    let other = flushes.iter().find(|f| f.source == "ip-10-0-0-6").expect("a second source");
    assert_eq!((other.window.as_ref().unwrap().device, other.timers["d"].count), (None, 1.0));

    // The same with the state going through the store and a restart half way.
    let (stored, store) = run_through_store(&[], Some(spec()), &blocks, blocks.len() / 2);
    assert!(store.units_written > 0);
    assert_eq!(stored, outputs, "byte for byte");
}

#[test]
fn statsd_off_aggregates_nothing_and_bounds_are_counted_as_late() {
    let outputs = run_with(&default_windows(), &WatermarkSection::default(), None, &scenario(50));
    assert!(statsd_flushes(&outputs).is_empty());
    // One window per device at a time: every sample that would open a second one while the
    // first waits for completeness is late (counted), never lost silently.
    let narrow = StatsdSpec { max_windows: 1, ..spec() };
    let outputs = run_with(&default_windows(), &WatermarkSection::default(), Some(narrow), &scenario(50));
    let late = late_keys(&outputs);
    assert!(!late.is_empty());
    assert!(late.iter().all(|key| key.ends_with("device=2") || key.ends_with("device=1")), "{late:?}");
    let counted: BTreeMap<bool, usize> = late.iter().fold(BTreeMap::new(), |mut m, k| {
        *m.entry(k.ends_with("device=2")).or_default() += 1;
        m
    });
    assert!(counted.get(&true).copied().unwrap_or(0) > 0, "the draining device's backlog hit the bound");
}
