//! Acceptor figure: what the collector spends per event after the kernel, with no socket in
//! the way. The single-event datagrams of the ingest bench, already packed in batches as the
//! receive threads pack them, go through the real acceptor (authentication, replay filter,
//! dedup, clock models, block building, ACKs to a reply path that discards them) and the
//! real committer (redb, fsync) on a fresh log. Reported per event from each thread's CPU
//! time (`/proc/self/task/*/schedstat`), which is steadier than a rate on a shared machine:
//! compare builds by it.
//!
//! `cargo bench -p driftlog-collector --bench acceptor` (FIGURES_ACCEPTOR_EVENTS,
//! FIGURES_ACCEPTOR_RUNS, FIGURES_ACCEPTOR_PER_FRAME).

mod support;

use driftlog_collector::acceptor::{Acceptor, AcceptorConfig};
use driftlog_collector::clocks::Clocks;
use driftlog_collector::committer::{self, Writer};
use driftlog_collector::config::CollectorConfig;
use driftlog_collector::ingest::{Batch, ReplyPath, Route};
use driftlog_collector::ingest_core::{IngestConfig, IngestCore};
use driftlog_collector::keys::Keys;
use driftlog_collector::log::{Log, LogConfig};
use driftlog_collector::metrics::Metrics;
use driftlog_collector::stream_states::{StateLimits, StreamBounds, StreamStates};
use driftlog_eventtime::clock::ClockConfig;
use driftlog_protocol::DeviceId;
use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};
use support::frames::{DEVICES, Frames, frames};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Datagrams per batch, as one `recvmmsg` of the receive threads.
const BATCH: usize = 64;

#[derive(Debug)]
struct Discard;

impl ReplyPath for Discard {
    fn send(&mut self, _device: DeviceId, _peer: Option<SocketAddr>, _datagram: &[u8]) -> bool {
        true
    }
}

/// On-CPU nanoseconds of each thread of this process, by name.
fn thread_cpu_ns() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let ns = schedstat.split_whitespace().next().and_then(|f| f.parse().ok()).unwrap_or(0);
        *out.entry(name).or_insert(0) += ns;
    }
    out
}

fn batches(frames: &Frames) -> Vec<Batch> {
    frames
        .datagrams
        .chunks(BATCH)
        .enumerate()
        .map(|(index, chunk)| {
            let mut batch = Batch::with_capacity(chunk.len(), chunk.iter().map(Vec::len).sum());
            for (offset, datagram) in chunk.iter().enumerate() {
                let device = (index * BATCH + offset) as u64 % DEVICES;
                let peer = SocketAddr::from(([127, 0, 0, 1], 20_000 + device as u16));
                batch.push(datagram, Route { source: 0, peer: Some(peer) });
            }
            batch
        })
        .collect()
}

struct Run {
    events_per_s: f64,
    /// CPU µs per event by thread name.
    cpu_us: BTreeMap<String, f64>,
}

fn run(frames: &Frames) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let defaults = CollectorConfig::default();
    let log = Arc::new(Log::open(&dir.path().join("log.redb"), LogConfig::default()).unwrap());
    let epoch = log.next_epoch(1).unwrap();
    let metrics = Arc::new(Metrics::new());
    let keys = Keys::parse(&frames.keys_toml).unwrap();
    let endpoint = Endpoint::new(EndpointConfig::new(epoch, 7), keys);
    let batches = batches(frames);
    let (sink, queue) = std::sync::mpsc::sync_channel(batches.len());
    for batch in batches {
        sink.send(batch).unwrap();
    }
    let (committer, committer_thread) = committer::spawn(log.clone(), 1, metrics.clone()).unwrap();
    let config = IngestConfig {
        flush_interval: Duration::from_millis(defaults.log.flush_interval_ms),
        max_block_bytes: defaults.log.max_block_bytes,
        max_commit_bytes: defaults.log.max_commit_bytes,
        claim_interval_ms: Some(defaults.watermark.claim_interval_ms),
        max_streams: defaults.limits.max_streams,
        source_filter: defaults.source_filter(),
    };
    let limits = StateLimits {
        max_states: defaults.limits.max_stream_states,
        max_states_per_device: defaults.limits.max_stream_states_per_device,
    };
    let bounds = StreamBounds::new(
        StreamStates::open(log.clone(), limits).unwrap(),
        Duration::from_secs(defaults.limits.stream_idle_s),
    );
    let core = IngestCore::new(config, endpoint, bounds, Clocks::new(ClockConfig::default(), 100_000));
    let keys_config = AcceptorConfig { keys_file: None, key_mode: driftlog_collector::keys::KeyMode::KeysFile };
    let acceptor = Acceptor::new(
        keys_config,
        core,
        vec![Box::new(Discard)],
        committer.client(Writer::Ingest),
        queue,
        metrics.clone(),
    );
    drop(committer);
    let before = thread_cpu_ns();
    let started = StdInstant::now();
    let thread = std::thread::Builder::new().name("acceptor".into()).spawn(move || acceptor.run()).unwrap();
    while metrics.events_committed.get() < frames.events {
        assert!(started.elapsed() < Duration::from_secs(120), "the acceptor did not commit every event");
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = thread_cpu_ns();
    // The acceptor ends when its queue closes.
    drop(sink);
    thread.join().unwrap();
    committer_thread.join().unwrap();
    let cpu_us = ["acceptor", "committer"]
        .into_iter()
        .map(|name| {
            let ns = after.get(name).copied().unwrap_or(0).saturating_sub(before.get(name).copied().unwrap_or(0));
            (name.to_string(), ns as f64 / 1e3 / frames.events as f64)
        })
        .collect();
    Run { events_per_s: frames.events as f64 / elapsed, cpu_us }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // As the collector runs (see its `main`).
    let _ = nix::sys::prctl::set_thp_disable(true);
    let events = env_u64("FIGURES_ACCEPTOR_EVENTS", 400_000);
    let runs = env_u64("FIGURES_ACCEPTOR_RUNS", 5).max(1);
    let per_frame = env_u64("FIGURES_ACCEPTOR_PER_FRAME", 1).clamp(1, 64) as u32;
    let frames = frames(events, per_frame);
    println!(
        "acceptor + committer without sockets: {} events ({:.1} bytes each) in {} datagrams ({:.1} bytes each) from {DEVICES} devices, batches of {BATCH}",
        frames.events,
        frames.event_bytes as f64 / frames.events as f64,
        frames.datagrams.len(),
        frames.datagrams.iter().map(Vec::len).sum::<usize>() as f64 / frames.datagrams.len() as f64
    );
    let mut results = Vec::new();
    for index in 1..=runs {
        let result = run(&frames);
        let per_thread: Vec<String> = result.cpu_us.iter().map(|(name, us)| format!("{name} {us:.3}")).collect();
        println!(
            "  run {index}/{runs}: {:>9.0} events/s, CPU µs per event: {}",
            result.events_per_s,
            per_thread.join(", ")
        );
        results.push(result);
    }
    let cpu = |name: &str| median(results.iter().map(|r| r.cpu_us.get(name).copied().unwrap_or(0.0)).collect());
    println!(
        "median: {:.0} events/s; CPU µs per event: acceptor {:.3}, committer {:.3}",
        median(results.iter().map(|r| r.events_per_s).collect()),
        cpu("acceptor"),
        cpu("committer")
    );
}
