//! Per-source protection: how long a legitimate device waits for its events to be
//! acknowledged (committed) while one other host floods the collector with forged frames,
//! with the pre-authentication filter off (`limits.source_failures_per_s = 0`, the previous
//! behaviour) and on (the default).
//!
//! The device sends one event per frame every 2 ms from 127.0.0.1 and retransmits what is
//! not acknowledged after 100 ms; its latency is from an event's first send to the ACK that
//! covers it, both on the device's own clock. The flood comes from 127.0.0.2: full-size
//! (1 400-byte) data frames carrying the device's key id under a wrong MAC, so each costs the
//! collector the most expensive check there is, as fast as one thread can send them. Each
//! configuration runs the device alone, then under the flood, against a fresh collector.
//!
//! `cargo bench -p driftlog-collector --bench flood` (FLOOD_SECONDS: length of each phase,
//! default 5; FLOOD_RATE: flood datagrams/s, default 0 = as fast as one thread sends;
//! FLOOD_REPEAT: interleaved rounds of both configurations, default 3; medians reported).

mod support;

use driftlog_protocol::Instant;
use driftlog_protocol::wire::{Body, DataWriter, Direction, Event, FrameKind, MacKey, Payload, Sample, Sealer, open};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};
use support::collector::{BIN, Collector, free_port, metrics};
use support::cpu::thread_cpu_seconds;

const KEY_ID: u32 = 5;
const SECRET: [u8; 32] = [5; 32];
const SEND_INTERVAL: Duration = Duration::from_millis(2);
const RETRANSMIT_AFTER: Duration = Duration::from_millis(100);

fn start_collector(failures_per_s: u32) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let hex: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        dir.path().join("keys.toml"),
        format!("[[device]]\ndevice_id = 5\nkey_id = {KEY_ID}\nkey = \"{hex}\"\n"),
    )
    .unwrap();
    let udp: SocketAddr = format!("0.0.0.0:{}", free_port()).parse().unwrap();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "data_dir = {:?}\nkeys_file = {:?}\nwindows = []\n[ingest.udp]\nlisten = \"{udp}\"\nsockets = 2\n[http]\nlisten = \"{http}\"\n[limits]\nsource_failures_per_s = {failures_per_s}\n",
        dir.path().join("data"),
        dir.path().join("keys.toml"),
    );
    std::fs::write(dir.path().join("collector.toml"), config).unwrap();
    let config_path = dir.path().join("collector.toml");
    // Frames go to loopback; the socket is on 0.0.0.0 so 127.0.0.2 can reach it too.
    let to = SocketAddr::from(([127, 0, 0, 1], udp.port()));
    support::collector::spawn(BIN, &config_path, dir, to, http, "error")
}

/// A data frame of `events` gauges from `first_seq`, sealed with `key`.
fn frame(key: &MacKey, epoch: u64, sent_at_us: u64, first_seq: u64, events: u32) -> Vec<u8> {
    let mut sealer = Sealer::new(KEY_ID, key.clone(), epoch);
    let header = sealer.header(FrameKind::Data, Instant::from_micros(sent_at_us));
    let mut buf = vec![0u8; 1_472];
    let mut writer = DataWriter::new(&mut buf, &header, 0, epoch, first_seq, events).unwrap();
    for index in 0..events {
        let sample = Sample { name: "flood.padding.sensor", value: f64::from(index), tags: Default::default() };
        let event = Event {
            mono: Instant::from_micros(sent_at_us + u64::from(index)),
            wall: None,
            payload: Payload::Gauge(sample),
        };
        if writer.push(&event).is_err() || writer.len() > 1_380 {
            break;
        }
    }
    let (buf, len) = writer.into_parts();
    let total = sealer.seal(buf, len).unwrap();
    buf[..total].to_vec()
}

/// What the device measured.
#[derive(Debug, Default)]
struct Latencies {
    ms: Vec<f64>,
    sent: u64,
    retransmitted: u64,
}

impl Latencies {
    fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN)
    }
}

/// The legitimate device for `duration`: one event per frame every 2 ms, retransmission after
/// 100 ms, latency from first send to the covering ACK (read by a thread of its own that
/// blocks on the socket, so it sees an ACK when it arrives). Frames are stamped from the
/// device's boot, `clock` (a later phase must not go back in time: that is a replay).
fn run_device(collector: SocketAddr, clock: StdInstant, first_seq: u64, duration: Duration) -> (Latencies, u64) {
    let epoch = 7;
    let key = MacKey::new(&SECRET);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let start = StdInstant::now();
    // seq -> (first send, last send)
    let pending: Arc<Mutex<BTreeMap<u64, (StdInstant, StdInstant)>>> = Arc::default();
    let latencies: Arc<Mutex<Latencies>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (socket, key, pending, latencies, done) =
            (socket.try_clone().unwrap(), key.clone(), pending.clone(), latencies.clone(), done.clone());
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1_500];
            while !done.load(Ordering::Relaxed) {
                let Ok(len) = socket.recv(&mut buf) else { continue };
                let acked_at = StdInstant::now();
                let Ok(opened) = open(&buf[..len], Direction::FromCollector, 1_500, |_| Some(&key)) else { continue };
                let Body::Ack(ack) = opened.body else { continue };
                let mut pending = pending.lock().unwrap();
                let covered: Vec<u64> = pending
                    .keys()
                    .copied()
                    .filter(|seq| *seq < ack.cumulative || ack.sack.iter().any(|r| r.contains(*seq)))
                    .collect();
                let mut latencies = latencies.lock().unwrap();
                for seq in covered {
                    let (first, _) = pending.remove(&seq).unwrap();
                    latencies.ms.push(acked_at.duration_since(first).as_secs_f64() * 1e3);
                }
            }
        })
    };
    let mut next_seq = first_seq;
    let mut next_send = start;
    while start.elapsed() < duration || (!pending.lock().unwrap().is_empty() && start.elapsed() < duration * 3) {
        let now = StdInstant::now();
        if now >= next_send && start.elapsed() < duration {
            let sent_at = clock.elapsed().as_micros() as u64 + 1;
            pending.lock().unwrap().insert(next_seq, (now, now));
            socket.send_to(&frame(&key, epoch, sent_at, next_seq, 1), collector).unwrap();
            latencies.lock().unwrap().sent += 1;
            next_seq += 1;
            next_send += SEND_INTERVAL;
        }
        let due: Vec<u64> = {
            let mut pending = pending.lock().unwrap();
            pending
                .iter_mut()
                .filter(|(_, (_, last))| now.duration_since(*last) >= RETRANSMIT_AFTER)
                .map(|(seq, (_, last))| {
                    *last = now;
                    *seq
                })
                .collect()
        };
        for seq in due {
            let sent_at = clock.elapsed().as_micros() as u64 + 1;
            let _ = socket.send_to(&frame(&key, epoch, sent_at, seq, 1), collector);
            latencies.lock().unwrap().retransmitted += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    done.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let latencies = std::mem::take(&mut *latencies.lock().unwrap());
    (latencies, next_seq)
}

/// Floods `collector` from 127.0.0.2 until `stop`; returns datagrams sent.
fn flood(collector: SocketAddr, rate: u64, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    // The flooding host is another machine; here it shares our two cores. At nice 10 it
    // takes what the collector leaves, as a remote host's sending would not take our CPU
    // at all (on loopback the kernel's receive work runs in the sender's context).
    let _ = rustix::process::nice(10);
    let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    let forged = frame(&MacKey::new(&[6; 32]), 1, 1, 0, 64);
    let start = StdInstant::now();
    while !stop.load(Ordering::Relaxed) {
        // FLOOD_RATE datagrams/s, or as fast as the thread can (0).
        if rate > 0 && sent.load(Ordering::Relaxed) as f64 > start.elapsed().as_secs_f64() * rate as f64 {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        for _ in 0..64 {
            if socket.send_to(&forged, collector).is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Row {
    quiet: Latencies,
    flooded: Latencies,
    flood_sent: u64,
    metrics: BTreeMap<String, f64>,
    /// The collector's CPU seconds per thread during the flooded phase.
    cpu: BTreeMap<String, f64>,
}

fn run(failures_per_s: u32, phase: Duration, rate: u64) -> Row {
    let collector = start_collector(failures_per_s);
    let boot = StdInstant::now();
    let (quiet, next) = run_device(collector.udp, boot, 0, phase);
    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let flooder = {
        let (stop, sent, to) = (stop.clone(), sent.clone(), collector.udp);
        std::thread::spawn(move || flood(to, rate, stop, sent))
    };
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = thread_cpu_seconds(collector.child.id());
    let (flooded, _) = run_device(collector.udp, boot, next, phase);
    let mut cpu = thread_cpu_seconds(collector.child.id());
    for (thread, seconds) in cpu.iter_mut() {
        *seconds -= cpu_before.get(thread).copied().unwrap_or(0.0);
    }
    stop.store(true, Ordering::Relaxed);
    flooder.join().unwrap();
    std::thread::sleep(Duration::from_millis(1_200)); // kernel drops are read once a second
    let metrics = metrics(collector.http);
    Row { quiet, flooded, flood_sent: sent.load(Ordering::Relaxed), metrics, cpu }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let phase = Duration::from_secs(env("FLOOD_SECONDS", 5));
    let rate = env("FLOOD_RATE", 0);
    let repeat = env("FLOOD_REPEAT", 3).max(1);
    let configs = [("filter off (previous behaviour)", 0), ("filter on (default, 100 failures/s per source)", 100)];
    // Interleaved, so a slow minute on this shared machine hits both alike.
    let mut rows: Vec<Vec<Row>> = vec![Vec::new(), Vec::new()];
    for round in 0..repeat {
        for (index, (label, failures)) in configs.iter().enumerate() {
            let row = run(*failures, phase, rate);
            eprintln!(
                "round {round}, {label}: alone p99 {:.1} ms, flooded p50 {:.1} / p99 {:.1} / max {:.1} ms",
                row.quiet.quantile(0.99),
                row.flooded.quantile(0.5),
                row.flooded.quantile(0.99),
                row.flooded.quantile(1.0)
            );
            rows[index].push(row);
        }
    }
    println!("| {} runs of {} s each, medians | {} | {} |", repeat, phase.as_secs(), configs[0].0, configs[1].0);
    println!("| --- | --- | --- |");
    let latency = |runs: &[Row], flooded: bool| {
        let pick = |row: &Row, q: f64| if flooded { row.flooded.quantile(q) } else { row.quiet.quantile(q) };
        let p99s: Vec<String> = runs.iter().map(|row| format!("{:.0}", pick(row, 0.99))).collect();
        format!(
            "p50 {:.1} / p99 {:.1} / max {:.1} ms (p99 of each run: {})",
            median(runs.iter().map(|row| pick(row, 0.5)).collect()),
            median(runs.iter().map(|row| pick(row, 0.99)).collect()),
            median(runs.iter().map(|row| pick(row, 1.0)).collect()),
            p99s.join(", ")
        )
    };
    println!("| device alone: send → ACK | {} | {} |", latency(&rows[0], false), latency(&rows[1], false));
    println!("| device during the flood: send → ACK | {} | {} |", latency(&rows[0], true), latency(&rows[1], true));
    let per_run = |runs: &[Row], value: &dyn Fn(&Row) -> f64| median(runs.iter().map(value).collect());
    let retransmissions = |row: &Row| row.flooded.retransmitted as f64;
    let unacked = |row: &Row| (row.flooded.sent - row.flooded.ms.len() as u64) as f64;
    println!(
        "| device retransmissions / events never acknowledged, during the flood | {:.0} / {:.0} | {:.0} / {:.0} |",
        per_run(&rows[0], &retransmissions),
        per_run(&rows[0], &unacked),
        per_run(&rows[1], &retransmissions),
        per_run(&rows[1], &unacked)
    );
    let metric = |name: &'static str| move |row: &Row| row.metrics.get(name).copied().unwrap_or(0.0);
    for (what, name) in [
        ("flood datagrams received", "driftlog_datagrams_received_total"),
        ("of which MAC-checked and rejected as forged", "driftlog_frames_rejected_total{reason=\"forged\"}"),
        ("of which shed unread", "driftlog_frames_shed_total"),
        ("kernel receive drops", "driftlog_kernel_receive_drops_total"),
    ] {
        println!("| {what} | {:.0} | {:.0} |", per_run(&rows[0], &metric(name)), per_run(&rows[1], &metric(name)));
    }
    let sent = |row: &Row| row.flood_sent as f64;
    println!("| flood datagrams sent | {:.0} | {:.0} |", per_run(&rows[0], &sent), per_run(&rows[1], &sent));
    for thread in ["acceptor", "udp-recv-"] {
        let cpu = |row: &Row| row.cpu.get(thread).copied().unwrap_or(0.0);
        println!(
            "| collector {thread} CPU seconds during the flood | {:.2} | {:.2} |",
            per_run(&rows[0], &cpu),
            per_run(&rows[1], &cpu)
        );
    }
}
