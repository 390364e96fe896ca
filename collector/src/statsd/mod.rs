//! StatsD ingestion: a drop-in for the reference server (Etsy statsd), flushing into the
//! durable log.
//!
//! ```text
//! statsd-udp-0..n (recvmmsg) ─┐                                    ┌─► committer ─► log (statsd_flush records)
//! statsd-unixgram ────────────┼─► parse ─► Shards (16 × Aggregator) ─► flusher ─┼─► /metrics (latest flush)
//! tcp / unix stream (tokio) ──┘   (protocol::statsd)     each behind its lock   └─► graphite (carbon plaintext)
//! ```
//!
//! - [`aggregate`]: the pure aggregation core (no clock, no IO, no lock).
//! - [`flush`]: a flush's statistics (the reference's percentile algorithm) and its JSON.
//! - [`shards`]: the live state, sharded by key hash; receive threads parse and aggregate.
//! - [`datagram`] (UDP, Unix datagram), [`stream`] (TCP, Unix stream): the listeners.
//! - [`flusher`]: the flush thread; [`graphite`]: the carbon output; [`telemetry`]: metrics.
//! - [`timed`]: `|T` samples, committed to the log for the window pipeline to aggregate by
//!   their time (`windows::statsd`).

pub mod aggregate;
pub mod config;
pub mod datagram;
pub mod flush;
pub mod flusher;
pub mod graphite;
pub mod shards;
pub mod stream;
pub mod telemetry;
pub mod timed;

use crate::committer::Client;
use crate::shutdown::{Shutdown, Trigger};
use aggregate::Bounds;
use anyhow::Context;
use config::StatsdSection;
use datagram::Receiving;
use flusher::Flusher;
use shards::Shards;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use telemetry::Telemetry;

/// The running StatsD service: its listeners stop on the service's shutdown signal, and
/// [`Running::join`] then waits for the last flush.
#[derive(Debug)]
pub struct Running {
    /// `(transport, address)` of each listener.
    pub listening: Vec<(String, String)>,
    pub telemetry: Arc<Telemetry>,
    receive_threads: Vec<JoinHandle<()>>,
    /// Dropped once the listeners have stopped: the flusher then flushes a last time.
    flusher_stop: Trigger,
    flusher_thread: JoinHandle<()>,
    graphite_thread: Option<JoinHandle<()>>,
}

/// Binds every configured listener and starts the threads. Stream listeners and SIGUSR1
/// (flush now) run on `runtime`; flushes are committed through `committer`. Listeners and
/// connections stop on `shutdown`.
pub fn start(
    config: &StatsdSection,
    runtime: &tokio::runtime::Handle,
    committer: Client,
    max_block_bytes: usize,
    shutdown: Shutdown,
) -> anyhow::Result<Running> {
    let telemetry = Arc::new(Telemetry::new());
    let bounds = Bounds { max_timer_values: config.max_timer_values, max_set_members: config.max_set_members };
    let shards = Arc::new(Shards::new(
        config.dialect,
        bounds,
        config.reset_rules(),
        config.max_keys,
        config.max_timestamped_samples,
        telemetry.clone(),
    ));
    let receiving = Receiving {
        shards: shards.clone(),
        telemetry: telemetry.clone(),
        shutdown: shutdown.clone(),
        max_packet_bytes: config.max_packet_bytes,
    };
    let mut listening = Vec::new();
    let mut receive_threads = Vec::new();
    if let Some(udp) = config.udp {
        let sockets = config.udp_socket_count();
        let bound = datagram::start_udp(udp, sockets, config.receive_buffer_bytes, &receiving, &mut receive_threads)?;
        listening.push(("statsd-udp".to_string(), bound.to_string()));
    }
    if let Some(path) = &config.unix_datagram {
        datagram::start_unix(path, &receiving, &mut receive_threads)?;
        listening.push(("statsd-unix-datagram".to_string(), path.display().to_string()));
    }
    let limits = stream::StreamLimits {
        shards: shards.clone(),
        telemetry: telemetry.clone(),
        max_line_bytes: config.max_line_bytes,
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
    };
    if let Some(tcp) = config.tcp {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(tcp))
            .with_context(|| format!("cannot bind StatsD TCP {tcp}"))?;
        listening.push(("statsd-tcp".to_string(), listener.local_addr()?.to_string()));
        runtime.spawn(stream::serve_tcp(listener, limits.clone(), shutdown.clone()));
    }
    if let Some(path) = &config.unix_stream {
        datagram::remove_stale_socket(path)?;
        let _guard = runtime.enter();
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("cannot bind StatsD Unix stream socket {}", path.display()))?;
        listening.push(("statsd-unix-stream".to_string(), path.display().to_string()));
        runtime.spawn(stream::serve_unix(listener, limits, shutdown.clone()));
    }
    let flush_now = Arc::new(AtomicBool::new(false));
    spawn_flush_signal(runtime, flush_now.clone(), shutdown)?;
    let (graphite, graphite_thread) = match &config.graphite {
        Some(section) => {
            let (sender, flushes) = std::sync::mpsc::sync_channel(section.max_queued_flushes);
            let (address, legacy, prefix, telemetry) =
                (section.address, section.legacy_namespace, config.prefix_stats.clone(), telemetry.clone());
            let thread = std::thread::Builder::new()
                .name("statsd-graphite".into())
                .spawn(move || graphite::run(address, legacy, prefix, flushes, telemetry))?;
            (Some(sender), Some(thread))
        }
        None => (None, None),
    };
    let flusher = Flusher::new(
        shards,
        telemetry.clone(),
        committer,
        config.flush_interval_ms,
        config.percent_threshold.iter().map(|p| p + 0.0).collect(),
        config.prefix_stats.clone(),
        config.source_name(),
        max_block_bytes,
        graphite,
        flush_now,
    );
    let (flusher_stop, flusher_stopped) = crate::shutdown::channel();
    let flusher_thread =
        std::thread::Builder::new().name("statsd-flush".into()).spawn(move || flusher.run(&flusher_stopped))?;
    Ok(Running { listening, telemetry, receive_threads, flusher_stop, flusher_thread, graphite_thread })
}

/// SIGUSR1 asks for a flush now (for operators before maintenance, and for tests that
/// must compare flushes of exactly the samples sent).
fn spawn_flush_signal(
    runtime: &tokio::runtime::Handle,
    flush_now: Arc<AtomicBool>,
    mut stopped: Shutdown,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let _guard = runtime.enter();
    let mut user1 = signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?;
    runtime.spawn(async move {
        loop {
            tokio::select! {
                _ = user1.recv() => flush_now.store(true, Ordering::Relaxed),
                _ = stopped.recv() => return,
            }
        }
    });
    Ok(())
}

impl Running {
    /// After the shutdown signal: waits for the listeners to stop, then flushes what they
    /// aggregated (committed to the log) and waits for the Graphite output to send it.
    pub fn join(self) {
        for thread in self.receive_threads {
            let _ = thread.join();
        }
        drop(self.flusher_stop);
        // The flusher's last flush; dropping it closes the Graphite queue.
        let _ = self.flusher_thread.join();
        if let Some(thread) = self.graphite_thread {
            let _ = thread.join();
        }
    }
}

/// The JSON of a `statsd_flush` record (`log tail --kind statsd --json`).
pub fn record_json(offset: u64, bytes: &[u8]) -> serde_json::Value {
    match flush::decode_record(bytes) {
        Some(flush) => {
            let mut json = flush.to_json();
            json["offset"] = serde_json::json!(offset);
            json
        }
        None => serde_json::json!({"offset": offset, "kind": "corrupt", "error": "statsd flush is malformed"}),
    }
}
