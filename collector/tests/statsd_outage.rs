//! StatsD that survives outages, end to end: an application sends StatsD counters and a
//! timer to a real agent (the agent library's `run`, as `driftlog-agent run --statsd-udp`
//! does: real sockets, a real outbox) whose collector (the real binary) is unreachable for a
//! while behind a relay the test cuts. After it reconnects, the collector's event-time
//! flushes for that device hold every increment, each in the window of the second it was
//! sent; each window is emitted once (no retraction), also when the collector is killed with
//! `kill -9` during the drain; and a replay of the log computes the same flushes.
//! `|T` lines on the collector's own listener are aggregated per source by their time.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::relay::Relay;
use support::{CollectorProcess, free_udp_port, wait_until};

/// One-second windows, and a bound B of half a second (the agent sequences within 10 ms).
const CONFIG: &str = "[statsd_event_time]\nflush_interval_ms = 1000\n[watermark]\nout_of_orderness_ms = 500\n";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The agent of device 1 (the development key) sending to `collector`, with its StatsD
/// listener on `statsd`; stops when the returned sender is dropped or sent to.
fn start_agent(
    data: &Path,
    collector: SocketAddr,
    statsd: SocketAddr,
) -> (tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let mut config = driftlog_agent::config::AgentConfig { data_dir: data.to_path_buf(), ..Default::default() };
    config.collector.address = collector;
    config.outbox.flush_interval_ms = 10;
    config.sender.heartbeat_interval_ms = 200;
    config.sender.backlog_events_per_second = 2_000;
    config.host.enabled = false;
    config.statsd = Some(driftlog_agent::config::StatsdSection { udp: Some(statsd), ..Default::default() });
    config.validate().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime
            .block_on(driftlog_agent::agent::run(config, async move {
                let _ = stopped.await;
            }))
            .unwrap();
    });
    (stop, thread)
}

/// What the application sent, per one-second window (start ms): counter increments and
/// timer samples.
#[derive(Default)]
struct Sent {
    hits: BTreeMap<i64, f64>,
    timings: BTreeMap<i64, f64>,
}

/// Sends `app.hits:1|c` every 40 ms, and `app.latency:N|ms|@0.5` every fifth time, for
/// `duration`, never within 50 ms of a second's edge (so the expected window is certain
/// whatever the clock correction's few milliseconds).
fn send_for(socket: &UdpSocket, to: SocketAddr, duration: Duration, sent: &mut Sent) {
    let end = std::time::Instant::now() + duration;
    let mut n = 0u64;
    while std::time::Instant::now() < end {
        let at = now_ms();
        let in_second = at.rem_euclid(1_000);
        if !(50..950).contains(&in_second) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let window = at - in_second;
        n += 1;
        if n.is_multiple_of(5) {
            socket.send_to(format!("app.hits:1|c\napp.latency:{n}|ms|@0.5").as_bytes(), to).unwrap();
            *sent.timings.entry(window).or_default() += 2.0;
        } else {
            socket.send_to(b"app.hits:1|c", to).unwrap();
        }
        *sent.hits.entry(window).or_default() += 1.0;
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// The event-time flushes of `source`: `(window start ms, change, revision, closed_by,
/// hits, timer count)`.
fn flushes(lines: &[Value], source: &str) -> Vec<(i64, String, u64, String, f64, f64)> {
    lines
        .iter()
        .filter(|l| l["kind"] == "statsd_flush" && l["source"] == source)
        .map(|l| {
            (
                l["window_start_unix_ms"].as_i64().unwrap(),
                l["change"].as_str().unwrap().to_string(),
                l["revision"].as_u64().unwrap(),
                l["closed_by"].as_str().unwrap().to_string(),
                l["counters"]["app.hits"].as_f64().unwrap_or(0.0),
                l["timer_data"]["app.latency"]["count"].as_f64().unwrap_or(0.0),
            )
        })
        .collect()
}

/// Every window's latest result (its last INSERT): hits per window start.
fn latest(flushes: &[(i64, String, u64, String, f64, f64)]) -> BTreeMap<i64, (f64, f64)> {
    let mut out = BTreeMap::new();
    for (start, change, _, _, hits, timings) in flushes {
        if change == "insert" {
            out.insert(*start, (*hits, *timings));
        }
    }
    out
}

fn replay_windows(collector: &CollectorProcess) -> Value {
    let (status, body) = collector.get("/log/replay?from=0").unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(body.trim()).unwrap()["windows"].clone()
}

/// Connected, cut off for `outage`, connected again; `kill_during_drain` kills the collector
/// with `kill -9` just after the link comes back, and starts it again.
fn outage(outage: Duration, kill_during_drain: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = CollectorProcess::start_without_keys(dir.path(), CONFIG);
    let relay = Relay::start(collector.udp);
    let statsd: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let (stop, agent) = start_agent(&dir.path().join("agent"), relay.addr, statsd);
    let app = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = Sent::default();
    // The listener is up once a sample reaches the outbox and the collector.
    assert!(wait_until(Duration::from_secs(20), || {
        let _ = app.send_to(b"app.warmup:1|c", statsd);
        collector.log_json().iter().any(|l| l["kind"] == "event" && l["stream"] == 2)
    }));

    send_for(&app, statsd, Duration::from_secs(2), &mut sent);
    relay.cut(true);
    let cut_at = now_ms();
    send_for(&app, statsd, outage, &mut sent);
    relay.cut(false);
    if kill_during_drain {
        std::thread::sleep(Duration::from_millis(300));
        collector.kill9();
        std::thread::sleep(Duration::from_millis(200));
        collector.spawn();
    }
    send_for(&app, statsd, Duration::from_secs(2), &mut sent);
    let total: f64 = sent.hits.values().sum();
    let last_window = *sent.hits.keys().last().unwrap();

    // Every increment arrives and the last window with one closes on the device's
    // completeness (heartbeats every 200 ms, B = 0.5 s).
    let done = wait_until(Duration::from_secs(60), || {
        let lines = collector.log_json();
        let latest = latest(&flushes(&lines, "device-1"));
        latest.contains_key(&last_window) && latest.values().map(|(hits, _)| hits).sum::<f64>() == total
    });
    // How long after its end the last window became visible (polled through `log tail`):
    // the bound B, a heartbeat's claim, and the processor's checkpoint interval.
    let visible_after_ms = now_ms() - (last_window + 1_000);
    eprintln!("the last window's flush was in the log {visible_after_ms} ms after the window ended");
    let lines = collector.log_json();
    let mine = flushes(&lines, "device-1");
    assert!(done, "sent {total} increments; flushes: {mine:?}");
    assert!(relay.dropped.load(std::sync::atomic::Ordering::Relaxed) > 5, "the outage cut traffic");

    // Each window once, complete: an INSERT of revision 0 closed by completeness, never
    // retracted, with exactly the increments and timer samples sent in its second.
    let mut seen = BTreeMap::new();
    for (start, change, revision, closed_by, _, _) in &mine {
        assert_eq!((change.as_str(), *revision, closed_by.as_str()), ("insert", 0, "completeness"), "window {start}");
        *seen.entry(*start).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a window emitted twice: {seen:?}");
    let latest = latest(&mine);
    let outage_windows = sent.hits.keys().filter(|w| **w >= cut_at - cut_at.rem_euclid(1_000)).count();
    assert!(outage_windows >= 3);
    for (window, hits) in &sent.hits {
        let (got_hits, got_timings) = latest.get(window).copied().unwrap_or_default();
        assert_eq!(got_hits, *hits, "window {window} (cut at {cut_at})");
        assert_eq!(got_timings, sent.timings.get(window).copied().unwrap_or(0.0), "window {window}");
    }
    let late: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "late" && l["window"] == "statsd").collect();
    assert!(late.is_empty(), "{late:?}");

    let windows = replay_windows(&collector);
    assert_eq!(windows["identical"], true, "{windows}");
    assert!(windows["stored_outputs"].as_u64().unwrap() >= mine.len() as u64);
    let _ = stop.send(());
    agent.join().unwrap();
}

#[test]
fn statsd_sent_while_the_collector_is_unreachable_lands_in_the_windows_of_its_time() {
    outage(Duration::from_secs(4), false);
}

#[test]
fn statsd_flushes_are_neither_lost_nor_duplicated_when_the_collector_is_killed_during_the_drain() {
    outage(Duration::from_secs(3), true);
}

#[test]
fn timestamped_lines_are_aggregated_per_source_by_their_own_time() {
    let dir = tempfile::tempdir().unwrap();
    let statsd = format!("127.0.0.1:{}", free_udp_port());
    let config = format!(
        "[statsd]\nudp = \"{statsd}\"\ndialect = \"dogstatsd\"\nsource = \"edge\"\nflush_interval_ms = 1000\n[statsd_event_time]\ntimestamp_bound_ms = 1000\nallowed_lateness_ms = 600000\n"
    );
    let collector = CollectorProcess::start(dir.path(), &config);
    let app = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A client back-filling what it kept for the last minute: one sample per 10 s window
    // (its `|T`), tags in any order, and a line without `|T` aggregated as it arrives.
    let now_s = now_ms() / 1_000;
    let base = now_s - now_s.rem_euclid(10) - 60;
    for k in 0..6 {
        let line = format!(
            "backfill.hits:{}|c|#b:2,a:1|T{}\nbackfill.hits:1|c|#a:1,b:2|T{}",
            k + 1,
            base + 10 * k,
            base + 10 * k + 3
        );
        app.send_to(line.as_bytes(), &statsd).unwrap();
    }
    app.send_to(b"live.hits:1|c", &statsd).unwrap();
    let done = wait_until(Duration::from_secs(30), || {
        collector.log_json().iter().filter(|l| l["kind"] == "statsd_flush" && l["source"] == "ip-127-0-0-1").count()
            >= 6
    });
    let lines = collector.log_json();
    let mine: Vec<&Value> =
        lines.iter().filter(|l| l["kind"] == "statsd_flush" && l["source"] == "ip-127-0-0-1").collect();
    assert!(done, "{mine:?}");
    // Each of its 10 s of history in the 1 s window of its own time, once.
    let mut by_window: BTreeMap<i64, f64> = BTreeMap::new();
    for line in &mine {
        assert_eq!(line["change"], "insert");
        assert_eq!(line["device"], Value::Null);
        let hits = line["counters"]["backfill.hits;a=1;b=2"].as_f64().unwrap();
        *by_window.entry(line["window_start_unix_ms"].as_i64().unwrap() / 1_000).or_default() += hits;
    }
    let expected: BTreeMap<i64, f64> =
        (0..6).flat_map(|k| [(base + 10 * k, (k + 1) as f64), (base + 10 * k + 3, 1.0)]).collect();
    assert_eq!(by_window, expected);
    assert!(
        wait_until(Duration::from_secs(15), || {
            collector
                .log_json()
                .iter()
                .any(|l| l["kind"] == "statsd_flush" && l["source"] == "edge" && l["counters"]["live.hits"] == 1.0)
        }),
        "the line without |T is aggregated by arrival"
    );
    assert!(collector.metric("driftlog_statsd_timestamped_samples_total") >= 12.0);
    let windows = replay_windows(&collector);
    assert_eq!(windows["identical"], true, "{windows}");
}
