//! Outage figures for sequence-complete event time.
//!
//! 1. **Real agents** (`agents`): the collector binary on its default windows plus a fleet
//!    window, two simulated devices at 20 events/s (the agent library: real outboxes, real
//!    UDP); one is cut off behind a relay for `FIGURES_OUTAGE_S` (default 60 s), then drains.
//!    Reported: the outage's events counted in the device's own windows, late records, INSERTs
//!    per window, RETRACT + INSERT per affected fleet window, and how long after its backlog
//!    landed (the receive time of its last backlog event) the device's window results were
//!    readable in the log.
//! 2. **Virtual time** (`virtual`): the same shape through the window pipeline alone, with
//!    records as the acceptor stores them, for outages of 60 s, 10 min and 1 h (device time):
//!    the backlog replays at the agent's default 5 000 events/s.
//! 3. **Offline fleet** (`offline`): 10 000 devices (`FIGURES_OFFLINE_DEVICES`) each open a
//!    per-device window and fall silent; the collector's RSS before, at its peak and once their
//!    state left memory, against `watermark.state_memory_bytes`.
//!
//! `cargo bench -p driftlog-collector --bench outage` (`FIGURES_OUTAGE=agents,virtual,offline`
//! picks parts).

#[path = "../tests/support/relay.rs"]
mod relay;

use driftlog_agent::simulate::{SimulateOptions, fleet_keys_from, run_fleet, write_keys_file};
use driftlog_collector::log::record::{ClaimRecord, EventsHead, Record, TickRecord};
use driftlog_collector::tail::http_get;
use driftlog_collector::windows::config::{WatermarkSection, WindowSection, WindowType, default_windows};
use driftlog_collector::windows::pipeline::Pipeline;
use driftlog_collector::windows::store::NoStore;
use driftlog_eventtime::clock::{ClockFix, Method};
use driftlog_protocol::Instant;
use driftlog_protocol::wire::{
    ControlRef, DataWriter, Event, EventChainWriter, FrameKind, HeartbeatRepr, MacKey, Payload, Sample, Sealer, Tags,
    seal_control,
};
use relay::Relay;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant, SystemTime};

const BIN: &str = env!("CARGO_BIN_EXE_driftlog-collector");
const FLEET_SEED: u64 = 7;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_unix_us() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

struct Collector {
    child: Child,
    udp: SocketAddr,
    http: SocketAddr,
}

impl Collector {
    /// `extra` is appended after the top-level settings when it starts with a key, after the
    /// tables when it starts with one.
    fn start(dir: &Path, extra: &str) -> Collector {
        let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (top, tables) = if extra.trim_start().starts_with('[') { ("", extra) } else { (extra, "") };
        let config = format!(
            "{top}data_dir = {:?}\nkeys_file = {:?}\ndevelopment_key = false\n[ingest.udp]\nlisten = \"{udp}\"\n[http]\nlisten = \"{http}\"\n{tables}",
            dir.join("data"),
            dir.join("keys.toml"),
        );
        std::fs::write(dir.join("collector.toml"), config).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(dir.join("collector.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let collector = Collector { child, udp, http };
        let deadline = StdInstant::now() + Duration::from_secs(20);
        while http_get(http, "/health").is_err() {
            assert!(StdInstant::now() < deadline, "the collector did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        collector
    }

    fn metrics(&self) -> BTreeMap<String, f64> {
        let (_, body) = http_get(self.http, "/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| v.parse().ok().map(|v| (k.to_string(), v))))
            .collect()
    }

    /// Log lines from `from` on, and the next offset.
    fn tail(&self, from: u64) -> (Vec<Value>, u64) {
        let (_, body) = http_get(self.http, &format!("/log/tail?from={from}&max=10000")).unwrap_or_default();
        let mut lines = body.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok());
        let next = lines.next().and_then(|head| head["next_offset"].as_u64()).unwrap_or(from);
        (lines.collect(), next)
    }

    fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn fleet_window() -> WindowSection {
    let mut section = default_windows().remove(0);
    section.name = "fleet_10s".into();
    section.per_device = false;
    section.window_type = WindowType::Tumbling;
    section
}

const AGENTS_WINDOWS: &str = r#"
[[windows]]
name = "per_device_10s"
type = "tumbling"
size_ms = 10000

[[windows]]
name = "fleet_10s"
type = "tumbling"
size_ms = 10000
per_device = false
"#;

/// Part 1: real agents, one cut off for `outage` seconds.
fn agents(outage_s: u64) {
    let dir = tempfile::tempdir().unwrap();
    let first = driftlog_agent::simulate::FIRST_SIMULATED_DEVICE;
    write_keys_file(&dir.path().join("keys.toml"), &fleet_keys_from(FLEET_SEED, first, 2)).unwrap();
    let collector = Collector::start(dir.path(), AGENTS_WINDOWS);
    let relay = Relay::start(collector.udp);
    let (before_s, after_s) = (20, 25);
    let duration = Duration::from_secs(before_s + outage_s + after_s);
    let device = |collector: SocketAddr, id: u64, data: &str| {
        let options = SimulateOptions {
            devices: 1,
            rate: 20.0,
            duration: Some(duration),
            events: None,
            clock_offset_ms: 3_600_000.0,
            clock_drift_ppm: 50.0,
            collector,
            data_dir: dir.path().join(data),
            seed: FLEET_SEED,
            drain_timeout: Duration::from_secs(120),
            backlog_events_per_second: 5_000,
            outage: None,
        };
        let keys = fleet_keys_from(FLEET_SEED, id, 1);
        std::thread::spawn(move || run_fleet(&options, &keys).unwrap())
    };
    let steady = device(collector.udp, first, "steady");
    let cut_off = device(relay.addr, first + 1, "cut-off");
    let cut_key = format!("device={}", first + 1);
    std::thread::sleep(Duration::from_secs(before_s));
    relay.cut(true);
    let outage_start = now_unix_us();
    std::thread::sleep(Duration::from_secs(outage_s));
    relay.cut(false);
    let outage_end = now_unix_us();
    // Follow the log: when does each of the device's windows covering the outage appear?
    let mut lines = Vec::new();
    let mut next = 0;
    let mut seen_at: BTreeMap<i64, i64> = BTreeMap::new();
    let mut lines_pending: Vec<(Vec<Value>, i64)> = Vec::new();
    let deadline = StdInstant::now() + Duration::from_secs(after_s + 30);
    while StdInstant::now() < deadline && !steady.is_finished() {
        // A tail call reads at most 16 blocks (and a busy collector commits one every 10 ms):
        // read until caught up, so `seen_at` is when a record became readable, not when this
        // loop got to it.
        let (new, after) = collector.tail(next);
        next = after;
        let at = now_unix_us();
        if !new.is_empty() {
            lines_pending.push((new, at));
            continue;
        }
        for (new, at) in lines_pending.drain(..) {
            for line in &new {
                if line["kind"] == "window"
                    && line["window"] == "per_device_10s"
                    && line["key"].as_str().is_some_and(|k| k.ends_with(&cut_key))
                {
                    seen_at.entry(line["end_unix_us"].as_i64().unwrap_or(0)).or_insert(at);
                }
            }
            lines.extend(new);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    lines.extend(lines_pending.drain(..).flat_map(|(new, _)| new));
    let reports = [steady.join().unwrap(), cut_off.join().unwrap()];
    std::thread::sleep(Duration::from_secs(3));
    loop {
        let (new, after) = collector.tail(next);
        if new.is_empty() {
            break;
        }
        next = after;
        lines.extend(new);
    }
    let metrics = collector.metrics();

    // The cut-off device's events, by corrected time; the outage's are those stamped in it.
    let events: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "event").collect();
    let device_id = first + 1;
    let mine: Vec<i64> = events
        .iter()
        .filter(|l| l["device"].as_u64() == Some(device_id))
        .filter_map(|l| l["event_unix_us"].as_i64())
        .collect();
    let outage_events: Vec<i64> = mine.iter().copied().filter(|t| (outage_start..outage_end).contains(t)).collect();
    let landed = events
        .iter()
        .filter(|l| l["device"].as_u64() == Some(device_id))
        .filter(|l| l["event_unix_us"].as_i64().is_some_and(|t| t < outage_end))
        .filter_map(|l| l["t3_received_unix_us"].as_i64())
        .max()
        .unwrap_or(0);
    let windows: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "window" && l["window"] == "per_device_10s")
        .filter(|l| l["key"].as_str().is_some_and(|k| k.ends_with(&cut_key)))
        .collect();
    // Windows overlapping the outage, and what they counted of it.
    let mut counted = 0u64;
    let mut inserts: BTreeMap<i64, u64> = BTreeMap::new();
    let mut retracts = 0;
    for window in &windows {
        let (start, end) = (window["start_unix_us"].as_i64().unwrap(), window["end_unix_us"].as_i64().unwrap());
        match window["change"].as_str() {
            Some("insert") => {
                *inserts.entry(start).or_default() += 1;
                if end > outage_start && start < outage_end {
                    counted += outage_events.iter().filter(|t| (start..end).contains(t)).count() as u64;
                    let in_window = mine.iter().filter(|t| (start..end).contains(t)).count() as u64;
                    assert_eq!(window["count"].as_u64(), Some(in_window), "a window counts every event: {window}");
                }
            }
            Some("retract") => retracts += 1,
            _ => {}
        }
    }
    let late_device = lines.iter().filter(|l| l["kind"] == "late" && l["window"] == "per_device_10s").count();
    let mut fleet: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for line in lines.iter().filter(|l| l["kind"] == "window" && l["window"] == "fleet_10s") {
        let entry = fleet.entry(line["start_unix_us"].as_i64().unwrap()).or_default();
        match line["change"].as_str() {
            Some("insert") => entry.0 += 1,
            Some("retract") => entry.1 += 1,
            _ => {}
        }
    }
    let affected: Vec<&(u64, u64)> = fleet.values().filter(|(_, r)| *r > 0).collect();
    let late_fleet = lines.iter().filter(|l| l["kind"] == "late" && l["window"] == "fleet_10s").count();
    // The windows the backlog filled: those that ended before the device came back (the one
    // it came back in also holds live events, and closes after its end like any other).
    let outage_windows: Vec<i64> =
        seen_at.iter().filter(|(end, _)| **end > outage_start && **end <= outage_end).map(|(_, at)| *at).collect();
    let visible = outage_windows.iter().max().map_or(f64::NAN, |at| (at - landed) as f64 / 1e6);
    if std::env::var_os("FIGURES_OUTAGE_DETAIL").is_some() {
        for (end, at) in seen_at.iter().filter(|(end, _)| **end > outage_start && **end <= outage_end + 20_000_000) {
            eprintln!(
                "window ending {:+.2} s from landing, readable {:+.2} s",
                (end - landed) as f64 / 1e6,
                (at - landed) as f64 / 1e6
            );
        }
        let mut held = std::collections::BTreeSet::new();
        for line in &lines {
            if line["kind"] == "event" && line["device"].as_u64() == Some(device_id) {
                held.insert(line["seq"].as_u64().unwrap_or(0));
            }
            if line["kind"] != "claim" || line["device"].as_u64() != Some(device_id) {
                continue;
            }
            let at = line["at_unix_us"].as_i64().unwrap_or(0);
            let end = line["assigned_end"].as_u64().unwrap_or(0);
            let prefix = (0..).find(|seq| !held.contains(seq)).unwrap_or(0);
            if (at - landed).abs() < 8_000_000 {
                eprintln!(
                    "claim at {:+.2} s (received {:+.2}, offset {}), draining {}, assigned_end {end}, prefix before it {prefix}",
                    (at - landed) as f64 / 1e6,
                    (line["t3_received_unix_us"].as_i64().unwrap_or(0) - landed) as f64 / 1e6,
                    line["offset"],
                    line["draining"]
                );
            }
        }
        eprintln!("outage end {:+.2} s from landing", (outage_end - landed) as f64 / 1e6);
    }
    println!("real agents, one device cut off for {outage_s} s (20 events/s each, default windows + a fleet window):");
    println!(
        "  outage events {} / counted in the device's own windows {} ({:.1} %), late {late_device}",
        outage_events.len(),
        counted,
        100.0 * counted as f64 / outage_events.len().max(1) as f64
    );
    println!(
        "  device windows: {} INSERTs over {} windows, {retracts} RETRACTs; every one closed by {:?}",
        inserts.values().sum::<u64>(),
        inserts.len(),
        windows.iter().map(|w| w["closed_by"].as_str().unwrap_or("")).collect::<std::collections::BTreeSet<_>>()
    );
    println!(
        "  fleet window: {} windows updated late, at most {} RETRACT + INSERT each; late records {late_fleet}",
        affected.len(),
        affected.iter().map(|(_, r)| *r).max().unwrap_or(0)
    );
    println!(
        "  the device's outage windows readable {visible:.2} s after its backlog landed (the last: {} windows)",
        outage_windows.len()
    );
    println!(
        "  agents: {:?}; collector RSS {} KiB; relay dropped {} datagrams",
        reports.iter().map(|r| (r.generated, r.backlog_remaining)).collect::<Vec<_>>(),
        collector.rss_kib().0,
        relay.dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = metrics;
}

/// Part 2: the pipeline alone in virtual time.
fn virtual_outage(outage_s: i64) {
    const S: i64 = 1_000_000;
    const BASE: i64 = 1_800_000_000_000_000;
    let rate = 20;
    let (before, after) = (60, 60);
    let mut sections = default_windows();
    sections.push(fleet_window());
    let watermark = WatermarkSection::default();
    let mut pipeline = Pipeline::new(&sections, &watermark);
    let fix = ClockFix {
        reference_device_us: 0,
        offset_us: BASE,
        drift_ppb: 0,
        uncertainty_us: 0,
        drift_uncertainty_ppb: 0,
        method: Method::MinFilter,
    };
    let mut chain = vec![0u8; 128];
    let mut out = Vec::new();
    let mut block = 0;
    let mut records = 0u64;
    let started = StdInstant::now();
    let mut handle = |record: Record<'_>, pipeline: &mut Pipeline, out: &mut Vec<Vec<u8>>| {
        pipeline.handle(&record, &NoStore, out).expect("nothing stored");
        records += 1;
        block += 1;
        if block == 1_000 {
            pipeline.end_block(&NoStore, out).expect("nothing stored");
            block = 0;
        }
    };
    let mut seq = [0u64; 2];
    let event = |device: usize, seq: u64, at_us: i64, received_us: i64, chain: &mut Vec<u8>| {
        let sample = Sample { name: "temp", value: 1.0, tags: Tags::default() };
        let event = Event { mono: Instant::from_micros(at_us as u64), wall: None, payload: Payload::Gauge(sample) };
        chain.resize(128, 0);
        let mut writer = EventChainWriter::new(chain);
        writer.push(&event).expect("fits");
        let len = writer.len();
        chain.truncate(len);
        EventsHead {
            device: device as u64 + 1,
            stream: 0,
            epoch: 1,
            first_seq: seq,
            count: 1,
            sent_at_us: received_us as u64,
            sent_epoch: 1,
            received_unix_us: BASE + received_us,
            clock: Some(fix),
        }
    };
    let claim = |device: usize, at_us: i64, next: u64, draining: bool| ClaimRecord {
        device: device as u64 + 1,
        stream: 0,
        epoch: 1,
        sent_at_us: at_us as u64,
        assigned_end: next,
        older_epochs_held: false,
        draining,
        at_unix_us: BASE + at_us,
        received_unix_us: BASE + at_us,
    };
    let cut = before * S..(before + outage_s) * S;
    let end = (before + outage_s + after) * S;
    let step = S / rate;
    let mut backlog: Vec<i64> = Vec::new();
    let mut t = 0;
    let mut drained_at = None;
    while t < end {
        for device in 0..2 {
            if device == 1 && cut.contains(&t) {
                backlog.push(t);
                continue;
            }
            if device == 1 && !backlog.is_empty() {
                // Back: the backlog replays at 5 000 events/s beside the live events.
                let claimed = seq[1] + backlog.len() as u64;
                let c = claim(1, t, claimed, true);
                handle(Record::Claim(c), &mut pipeline, &mut out);
                let mut received = t;
                for (index, stamped) in backlog.drain(..).enumerate() {
                    received = t + index as i64 * S / 5_000;
                    let head = event(1, seq[1], stamped, received, &mut chain);
                    seq[1] += 1;
                    handle(Record::Events { head, events: &chain }, &mut pipeline, &mut out);
                }
                // The heartbeat after the last ACK: at the reconnection time `t` the head was
                // the backlog's end (live events stamped since have higher numbers).
                let c = claim(1, t, seq[1], false);
                handle(Record::Claim(c), &mut pipeline, &mut out);
                drained_at = Some(received);
            }
            let head = event(device, seq[device], t, t, &mut chain);
            seq[device] += 1;
            handle(Record::Events { head, events: &chain }, &mut pipeline, &mut out);
            if t % S == 0 {
                let c = claim(device, t, seq[device], false);
                handle(Record::Claim(c), &mut pipeline, &mut out);
            }
        }
        if t % S == 0 {
            handle(Record::Tick(TickRecord { now_unix_us: BASE + t }), &mut pipeline, &mut out);
        }
        t += step;
    }
    pipeline.end_block(&NoStore, &mut out).expect("nothing stored");
    let elapsed = started.elapsed().as_secs_f64();
    let mut device_inserts: BTreeMap<i64, u64> = BTreeMap::new();
    let (mut retracts, mut late, mut counted) = (0, 0, 0);
    let mut fleet: BTreeMap<i64, u64> = BTreeMap::new();
    for bytes in &out {
        match Record::decode(bytes, &mut Vec::new()).expect("decodes") {
            Record::Window(w) if w.window == "per_device_10s" && w.key.ends_with("device=2") => match w.change {
                driftlog_eventtime::window::Change::Insert => {
                    *device_inserts.entry(w.start_unix_us).or_default() += 1;
                    if (w.start_unix_us - BASE) < cut.end && (w.end_unix_us - BASE) > cut.start {
                        counted += w.count;
                    }
                }
                _ => retracts += 1,
            },
            Record::Window(w) if w.window == "fleet_10s" && w.change == driftlog_eventtime::window::Change::Retract => {
                *fleet.entry(w.start_unix_us).or_default() += 1;
            }
            Record::Late(_) => late += 1,
            _ => {}
        }
    }
    let outage_events = outage_s * rate;
    println!(
        "virtual time, {:>5} s outage: {outage_events} outage events, device windows over it counted {counted} ({:.1} %), late {late}, {} device windows with {} INSERTs and {retracts} RETRACTs; fleet windows updated {} (at most {} RETRACT + INSERT each); drain {:.1} s; {records} records in {:.2} s ({:.0} records/s)",
        outage_s,
        100.0 * counted as f64 / outage_events as f64,
        device_inserts.len(),
        device_inserts.values().sum::<u64>(),
        fleet.len(),
        fleet.values().max().unwrap_or(&0),
        drained_at.map_or(0.0, |d| (d - cut.end) as f64 / 1e6),
        elapsed,
        records as f64 / elapsed
    );
}

/// Part 3: 10 000 devices open a window each and fall silent; `windows` off for the control
/// run (the same devices and frames: what the receivers, replay guards and clock models cost).
fn offline(devices: u64, windows: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = String::new();
    let mut sealers = Vec::new();
    for device in 0..devices {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&(device + 1).to_le_bytes());
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        keys.push_str(&format!("[[device]]\ndevice_id = {}\nkey_id = {}\nkey = \"{hex}\"\n", device + 1, device + 1));
        sealers.push(Sealer::new(device as u32 + 1, MacKey::new(&secret), 1));
    }
    std::fs::write(dir.path().join("keys.toml"), keys).unwrap();
    let budget = env_u64("FIGURES_STATE_MEMORY_BYTES", 64 << 20);
    let extra =
        if windows { format!("[watermark]\nstate_memory_bytes = {budget}\n") } else { "windows = []\n".to_string() };
    let collector = Collector::start(dir.path(), &extra);
    std::thread::sleep(Duration::from_secs(3)); // the keys file is polled
    let (baseline, _) = collector.rss_kib();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = vec![0u8; 1_400];
    for (device, sealer) in sealers.iter_mut().enumerate() {
        // Three readings and a heartbeat: a window opens, its device is complete up to now.
        let sent_at = 10_000_000 + device as u64;
        let header = sealer.header(FrameKind::Data, Instant::from_micros(sent_at));
        let mut writer = DataWriter::new(&mut buf, &header, 0, 1, 0, 8).unwrap();
        for i in 0..3u64 {
            let sample = Sample { name: "temp", value: i as f64, tags: Tags::default() };
            let event =
                Event { mono: Instant::from_micros(sent_at - 3 + i), wall: None, payload: Payload::Gauge(sample) };
            writer.push(&event).unwrap();
        }
        let (sealed, len) = writer.into_parts();
        let total = sealer.seal(sealed, len).unwrap();
        let _ = socket.send_to(&sealed[..total], collector.udp);
        let heartbeat = HeartbeatRepr {
            stream: 0,
            epoch: 1,
            oldest_available: 0,
            next_seq: 3,
            wall_now: None,
            ack_timing: None,
            assigned_end: 3,
            held_epochs_back: 0,
            draining: false,
        };
        let mut hb = [0u8; 256];
        let len = seal_control(sealer, Instant::from_micros(sent_at + 1), ControlRef::Heartbeat(&heartbeat), &mut hb)
            .unwrap();
        let _ = socket.send_to(&hb[..len], collector.udp);
        if device % 200 == 199 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let deadline = StdInstant::now() + Duration::from_secs(if windows { 60 } else { 15 });
    let mut peak_state = 0.0f64;
    while StdInstant::now() < deadline {
        let m = collector.metrics();
        peak_state = peak_state.max(m.get("driftlog_windows_state_memory_bytes").copied().unwrap_or(0.0));
        if m.get("driftlog_windows_devices_open").copied().unwrap_or(0.0) >= devices as f64 * 0.99
            && m.get("driftlog_windows_devices_resident") == Some(&0.0)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let m = collector.metrics();
    let (rss, peak) = collector.rss_kib();
    if !windows {
        println!(
            "  control, windows off (receivers, replay guards, clock models of {devices} devices): RSS {:.1} MiB before, {:.1} MiB peak, {:.1} MiB after",
            baseline as f64 / 1024.0,
            peak as f64 / 1024.0,
            rss as f64 / 1024.0
        );
        return;
    }
    println!("{devices} devices with an open per-device window each, then silent (state_memory_bytes {budget}):");
    println!(
        "  devices with open windows {}, in memory {}; window state in memory at most {:.1} MiB, now {:.1} MiB",
        m.get("driftlog_windows_devices_open").copied().unwrap_or(0.0),
        m.get("driftlog_windows_devices_resident").copied().unwrap_or(0.0),
        peak_state / 1048576.0,
        m.get("driftlog_windows_state_memory_bytes").copied().unwrap_or(0.0) / 1048576.0
    );
    println!(
        "  collector RSS: {:.1} MiB before, {:.1} MiB peak, {:.1} MiB with all {devices} offline ({:.0} B per offline device over the baseline)",
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
        rss as f64 / 1024.0,
        (rss.saturating_sub(baseline) * 1024) as f64 / devices as f64
    );
}

fn main() {
    let parts = std::env::var("FIGURES_OUTAGE").unwrap_or_else(|_| "virtual,offline,agents".into());
    if parts.contains("virtual") {
        for outage in [60, 600, 3_600] {
            virtual_outage(outage);
        }
    }
    if parts.contains("offline") {
        offline(env_u64("FIGURES_OFFLINE_DEVICES", 10_000), true);
        offline(env_u64("FIGURES_OFFLINE_DEVICES", 10_000), false);
    }
    if parts.contains("agents") {
        agents(env_u64("FIGURES_OUTAGE_S", 60));
    }
}
