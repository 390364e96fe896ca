//! Event time end to end: real agents with skewed, drifting clocks send to the collector
//! binary; every stored event carries a corrected time within its receive time; the window
//! processor accounts for every event exactly once (in a window or as late) across
//! `kill -9`; and `log replay` recomputes byte-identical window outputs.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::relay::Relay;
use support::{CollectorProcess, event_ids, simulate, simulate_paced, wait_until, write_fleet_keys};

// Per-device windows wait for their device's completeness; devices that stop (these do once
// their events are delivered) are closed after `max_outage_ms`, so the last windows close.
const WINDOWS: &str = r#"
[watermark]
out_of_orderness_ms = 200
idle_timeout_ms = 500
tick_interval_ms = 100
checkpoint_interval_ms = 100
max_outage_ms = 3000
max_backlog_hold_ms = 2000
stream_silence_ms = 3000

[[windows]]
name = "w1s"
type = "tumbling"
size_ms = 1000

[[windows]]
name = "hop"
type = "hopping"
size_ms = 2000
slide_ms = 1000
allowed_lateness_ms = 1000
emit_final = true

[[windows]]
name = "sessions"
type = "session"
gap_ms = 300
allowed_lateness_ms = 5000
"#;

/// This host's boot time in Unix seconds (`/proc/uptime` counts since boot, suspend
/// included, as `CLOCK_BOOTTIME`, the agents' monotonic clock, does; 10 ms resolution).
fn host_boot_unix_s() -> f64 {
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap();
    let uptime_s: f64 = uptime.split_whitespace().next().unwrap().parse().unwrap();
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    now_s - uptime_s
}

/// The changelog of one window, applied: `(key, start, end)` → count. Panics on an INSERT
/// over a live result or a RETRACT of something not there: the changelog must be consistent.
fn materialise(lines: &[Value], window: &str) -> BTreeMap<(String, i64, i64), u64> {
    let mut table = BTreeMap::new();
    for line in lines.iter().filter(|l| l["kind"] == "window" && l["window"] == window) {
        let key = (
            line["key"].as_str().unwrap().to_string(),
            line["start_unix_us"].as_i64().unwrap(),
            line["end_unix_us"].as_i64().unwrap(),
        );
        let count = line["count"].as_u64().unwrap();
        match line["change"].as_str().unwrap() {
            "insert" => {
                assert!(table.insert(key.clone(), count).is_none(), "{window}: INSERT over a live result {key:?}")
            }
            "retract" => assert_eq!(table.remove(&key), Some(count), "{window}: RETRACT of {key:?} does not match"),
            "final" => assert_eq!(table.get(&key), Some(&count), "{window}: FINAL of {key:?} does not match"),
            other => panic!("unknown change {other}"),
        }
    }
    table
}

fn late(lines: &[Value], window: &str) -> u64 {
    lines.iter().filter(|l| l["kind"] == "late" && l["window"] == window).count() as u64
}

/// Waits until the processor has read everything and closed every window: the fleet is idle,
/// so its watermark passes the collector clock's bound, and the devices stopped, so their own
/// windows time out.
fn wait_for_windows(collector: &CollectorProcess) {
    assert!(
        wait_until(Duration::from_secs(30), || {
            let m = collector.metrics();
            m.get("driftlog_windows_lag_offsets") == Some(&0.0)
                && m.get("driftlog_windows_open") == Some(&0.0)
                && m.get("driftlog_windows_devices_open") == Some(&0.0)
        }),
        "windows never closed: {:?}",
        collector.metrics().into_iter().filter(|(k, _)| k.contains("window")).collect::<Vec<_>>()
    );
}

fn check_accounting(lines: &[Value], events: u64) {
    for window in ["w1s", "sessions"] {
        let table = materialise(lines, window);
        let counted: u64 = table.values().sum();
        let late = late(lines, window);
        assert_eq!(counted + late, events, "{window}: windows hold {counted}, late {late}, events {events}");
    }
    // Each event belongs to two hopping windows; one that only one of them could still take
    // counts once and is not late, so only bounds hold here.
    let hop: u64 = materialise(lines, "hop").values().sum();
    let hop_late = late(lines, "hop");
    assert!(hop <= 2 * events && hop + hop_late >= events, "hop: {hop} counted, {hop_late} late");
}

fn replay_identical(collector: &CollectorProcess) -> Value {
    let (status, body) = collector.get("/log/replay?from=0").unwrap();
    assert_eq!(status, 200, "{body}");
    let summary: Value = serde_json::from_str(body.trim()).unwrap();
    summary["windows"].clone()
}

#[test]
fn corrected_times_and_windows_account_for_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let devices = 3;
    let per_device = 1_500;
    write_fleet_keys(&dir.path().join("keys.toml"), devices);
    let collector = CollectorProcess::start(dir.path(), WINDOWS);
    let report =
        simulate(collector.udp, &dir.path().join("agents"), devices, per_device, 500.0, Duration::from_secs(60));
    assert_eq!(report.backlog_remaining, 0);
    let events = devices as u64 * per_device;
    wait_for_windows(&collector);

    let lines = collector.log_json();
    assert_eq!(event_ids(&lines).len() as u64, events);
    // The simulated clocks are 5 s off and drift 50 ppm; corrected times are never after
    // their receive time. How long before it an event was received is the device's own wait
    // (flush interval, outbox fsync, pacing: t2 - t1 on its clock, which a loaded machine
    // stretches) plus the frame's way to the collector; with the device's wait taken out,
    // what is left is the one-way delay and the model's error, which must be small.
    let events_lines: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "event").collect();
    let mut before_receive: Vec<i64> = events_lines
        .iter()
        .map(|l| l["t3_received_unix_us"].as_i64().unwrap() - l["event_unix_us"].as_i64().unwrap())
        .collect();
    before_receive.sort_unstable();
    assert!(before_receive[0] >= 0, "a corrected time postdates its receive time by {} us", -before_receive[0]);
    let mut error_us: Vec<i64> = events_lines
        .iter()
        .map(|l| {
            let waited_on_device = l["t2_sent_us"].as_i64().unwrap() - l["t1_mono_us"].as_i64().unwrap();
            l["t3_received_unix_us"].as_i64().unwrap() - l["event_unix_us"].as_i64().unwrap() - waited_on_device
        })
        .collect();
    error_us.sort_unstable();
    let (p50, p99) = (error_us[error_us.len() / 2], error_us[error_us.len() * 99 / 100]);
    eprintln!("receive minus corrected time, less the device's own wait: p50 {p50} us, p99 {p99} us");
    // Measured on a loaded 2-core machine: p50 0.3 ms, p99 0.6 ms.
    assert!(p99 < 10_000 && error_us[0] > -10_000, "p1 {} us, p99 {p99} us", error_us[error_us.len() / 100]);
    assert!(lines.iter().filter(|l| l["kind"] == "event").all(|l| l.get("quarantine").is_none()));
    check_accounting(&lines, events);
    // Per-device keys and quantiles are in the results.
    let result = lines.iter().find(|l| l["kind"] == "window" && l["window"] == "w1s").unwrap();
    assert!(result["key"].as_str().unwrap().contains(" device="));
    assert!(result["quantiles"]["p50"].is_number());
    // Per-device clock metrics: the offset is the device's boot time on the collector clock.
    // The simulated devices' monotonic clocks are this host's boot clock (drifting 50 ppm
    // over seconds: microseconds) and only their wall clocks are 5 s off, so each device's
    // offset is this host's boot time, the wall skew ignored.
    let metrics = collector.metrics();
    let offsets: Vec<f64> = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("driftlog_device_clock_offset_seconds{"))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(offsets.len(), devices);
    let boot_unix_s = host_boot_unix_s();
    for offset in offsets {
        assert!((offset - boot_unix_s).abs() < 0.05, "offset {offset} s, host booted at {boot_unix_s} s");
    }
    let windows = replay_identical(&collector);
    assert_eq!(windows["comparable"], true);
    assert_eq!(windows["identical"], true, "{windows}");
    assert!(windows["stored_outputs"].as_u64().unwrap() > 0);
}

#[test]
fn window_outputs_are_neither_lost_nor_duplicated_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let devices = 3;
    let per_device = 3_000;
    write_fleet_keys(&dir.path().join("keys.toml"), devices);
    let mut collector = CollectorProcess::start(dir.path(), WINDOWS);
    let address = collector.udp;
    let agents_dir = dir.path().join("agents");
    let agents = std::thread::spawn(move || {
        simulate(address, &agents_dir, devices, per_device, 500.0, Duration::from_secs(120))
    });
    for round in 0..2 {
        let before = collector.metric("driftlog_window_results_total");
        assert!(
            wait_until(Duration::from_secs(30), || collector.metric("driftlog_window_results_total") > before + 3.0),
            "round {round}: no window results"
        );
        collector.kill9();
        std::thread::sleep(Duration::from_millis(200));
        collector.spawn();
    }
    let report = agents.join().unwrap();
    assert_eq!(report.backlog_remaining, 0);
    wait_for_windows(&collector);
    let lines = collector.log_json();
    let events = devices as u64 * per_device;
    assert_eq!(event_ids(&lines).len() as u64, events);
    check_accounting(&lines, events);
    let windows = replay_identical(&collector);
    assert_eq!(windows["identical"], true, "{windows}");
    assert_eq!(collector_terminate(collector), Some(0));
}

const OUTAGE: &str = r#"
[watermark]
out_of_orderness_ms = 200
idle_timeout_ms = 500
tick_interval_ms = 100
checkpoint_interval_ms = 100
max_outage_ms = 8000
max_backlog_hold_ms = 5000
stream_silence_ms = 3000

[[windows]]
name = "dev"
type = "tumbling"
size_ms = 1000

[[windows]]
name = "fleet"
type = "tumbling"
size_ms = 1000
per_device = false
"#;

/// One of two devices is cut off for 3 s (longer than the fleet's idle timeout), buffers,
/// reconnects and drains its backlog slowly; the collector is killed with `kill -9` during the
/// drain. Its per-device windows waited for it: every event is in one, none is late, and none
/// was retracted (each fired once, when complete). The fleet window took the backlog late,
/// with at most one update per window; every event is counted once there too; and a replay
/// computes byte-identical results.
#[test]
fn an_outage_lands_in_its_devices_windows_and_once_in_the_fleets_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet_keys(&dir.path().join("keys.toml"), 2);
    let mut collector = CollectorProcess::start(dir.path(), OUTAGE);
    let relay = Relay::start(collector.udp);
    let first = driftlog_agent::simulate::FIRST_SIMULATED_DEVICE;
    let per_device = 400;
    let steady = {
        let (address, data) = (collector.udp, dir.path().join("steady"));
        std::thread::spawn(move || {
            simulate_paced(address, &data, first, 1, per_device, 50.0, Duration::from_secs(60), 20_000)
        })
    };
    let cut_off = {
        let (address, data) = (relay.addr, dir.path().join("cut-off"));
        // A slow drain (150 events at 100/s), so the kill lands in the middle of it.
        std::thread::spawn(move || {
            simulate_paced(address, &data, first + 1, 1, per_device, 50.0, Duration::from_secs(60), 100)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    relay.cut(true);
    std::thread::sleep(Duration::from_secs(3));
    relay.cut(false);
    std::thread::sleep(Duration::from_millis(700));
    collector.kill9();
    std::thread::sleep(Duration::from_millis(200));
    collector.spawn();
    for agent in [steady, cut_off] {
        let report = agent.join().unwrap();
        assert_eq!(report.backlog_remaining, 0, "{report:?}");
    }
    assert!(relay.dropped.load(std::sync::atomic::Ordering::Relaxed) > 50, "the outage cut traffic");
    wait_for_windows(&collector);

    let lines = collector.log_json();
    let events = 2 * per_device;
    assert_eq!(event_ids(&lines).len() as u64, events);
    let cut_key = format!("device={}", first + 1);
    let device_windows: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "window" && l["window"] == "dev").collect();
    assert!(device_windows.iter().any(|l| l["key"].as_str().unwrap().ends_with(&cut_key)));
    for line in &device_windows {
        assert_eq!(line["change"], "insert", "a per-device window fired before it was complete: {line}");
        assert!(line["closed_by"] == "completeness" || line["closed_by"] == "timeout", "{line}");
    }
    assert_eq!(late(&lines, "dev"), 0, "per-device windows wait for their device");
    let counted: u64 = materialise(&lines, "dev").values().sum();
    assert_eq!(counted, events);

    let fleet = materialise(&lines, "fleet");
    assert_eq!(fleet.values().sum::<u64>() + late(&lines, "fleet"), events);
    let mut inserts: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for line in lines.iter().filter(|l| l["kind"] == "window" && l["window"] == "fleet" && l["change"] == "insert") {
        *inserts
            .entry((line["key"].as_str().unwrap().to_string(), line["start_unix_us"].as_i64().unwrap()))
            .or_default() += 1;
    }
    assert!(inserts.values().any(|n| *n == 2), "the fleet moved on without the cut-off device: {inserts:?}");
    assert!(inserts.values().all(|n| *n <= 2), "more than one update of a fleet window: {inserts:?}");
    let windows = replay_identical(&collector);
    assert_eq!(windows["identical"], true, "{windows}");
}

fn collector_terminate(mut collector: CollectorProcess) -> Option<i32> {
    collector.terminate()
}
