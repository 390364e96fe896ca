//! The collector's metrics, on `prometheus-client`: counters and gauges every component
//! updates directly, plus values computed at scrape time from the snapshots the acceptor and
//! the window processor publish ([`snapshot`]), so scraping never touches their state.
//!
//! [`Metrics::register`] puts all of them into a [`Registry`] that `service::run` builds
//! and the HTTP server renders; other modules (StatsD, bridges) register their own metrics
//! into the same registry before the server starts. Metric names are part of the interface:
//! dashboards, the tests and the benches read them.

mod snapshot;

use crate::windows::pipeline::{PipelineStats, StateSnapshot};
use driftlog_eventtime::clock::Estimate;
use driftlog_protocol::DeviceId;
use driftlog_protocol::endpoint::EndpointStats;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// A monotonic count.
pub type Count = Counter<u64>;
/// A count of seconds (fractional).
pub type SecondsCount = Counter<f64, AtomicU64>;
/// A level: bytes, offsets, table sizes.
pub type Level = Gauge<u64, AtomicU64>;
/// A point in time or a duration, seconds.
pub type Seconds = Gauge<f64, AtomicU64>;
/// 1 or 0.
pub type Flag = Gauge<i64>;

/// Commit latency buckets, seconds (upper bounds).
pub const COMMIT_BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

#[derive(Debug)]
pub struct Metrics {
    pub datagrams_received: Count,
    pub datagram_bytes_received: Count,
    /// Kernel receive-buffer drops (each socket's `drops` in `/proc/net/udp`), summed.
    pub kernel_drops: Count,
    /// Frames refused because the log could not take them (full or failing): never
    /// admitted, never acknowledged, so the devices keep them and retransmit.
    pub frames_refused_log_unavailable: Count,
    /// ACKs/NAKs that could not be sent (socket error, ZeroMQ queue full).
    pub replies_dropped: Count,
    pub events_committed: Count,
    /// When the last group commit that stored events completed (0: none yet). Stalls show
    /// as a timestamp that stops moving while devices send.
    pub last_events_commit: Seconds,
    /// Time the acceptor stopped reading because the next commit had reached
    /// `log.max_commit_bytes` while the previous one was still being written: ingest held
    /// back by the disk.
    pub ingest_waited_on_commit: SecondsCount,
    pub commit_failures: Count,
    pub commit_latency: Histogram,
    pub log_held_bytes: Level,
    pub log_file_bytes: Level,
    pub log_first_offset: Level,
    pub log_next_offset: Level,
    pub log_blocks_deleted: Count,
    /// 0 while the log refuses writes (full, disk error): the collector is not acknowledging.
    pub log_accepting: Flag,
    pub forwarder_offset: Level,
    pub forwarder_published: Count,
    pub forwarder_errors: Count,
    pub forwarder_connected: Flag,
    /// Log offsets the window processor never read (retention removed them first).
    pub windows_offsets_skipped: Count,
    pub windows_outputs_committed: Count,
    /// Rounds of the window processor that failed (the log unavailable); it retries.
    pub windows_errors: Count,
    pub snapshot: Mutex<AcceptorSnapshot>,
    pub windows: Mutex<WindowsSnapshot>,
}

/// The window processor's state, published after every round.
#[derive(Clone, Debug, Default)]
pub struct WindowsSnapshot {
    pub stats: PipelineStats,
    pub statsd: crate::windows::statsd::StatsdStats,
    pub watermark_unix_us: i64,
    pub now_unix_us: i64,
    pub state: StateSnapshot,
    pub next_offset: u64,
}

#[derive(Clone, Debug, Default)]
pub struct AcceptorSnapshot {
    pub endpoint: EndpointStats,
    pub streams: usize,
    pub devices_last_seen_unix_ms: BTreeMap<DeviceId, u64>,
    /// Each device's clock model for its newest boot epoch.
    pub clocks: BTreeMap<DeviceId, Estimate>,
    /// Clock samples rejected as inconsistent, and models evicted for the bound.
    pub clock_samples_rejected: u64,
    pub clock_models_evicted: u64,
    /// The stream states in the log.
    pub stream_states: crate::stream_states::StateStats,
    /// When a bound on streams last refused an authenticated frame (`/health` is degraded
    /// for a while after).
    pub bound_refused_at_unix_ms: Option<u64>,
    /// The pre-authentication filter per source address.
    pub source_filter: crate::source_filter::SourceFilterStats,
}

/// Which optional parts run, so that only their metrics are exposed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Parts {
    pub forwarder: bool,
    pub windows: bool,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics {
            datagrams_received: Count::default(),
            datagram_bytes_received: Count::default(),
            kernel_drops: Count::default(),
            frames_refused_log_unavailable: Count::default(),
            replies_dropped: Count::default(),
            events_committed: Count::default(),
            last_events_commit: Seconds::default(),
            ingest_waited_on_commit: SecondsCount::default(),
            commit_failures: Count::default(),
            commit_latency: Histogram::new(COMMIT_BUCKETS_S),
            log_held_bytes: Level::default(),
            log_file_bytes: Level::default(),
            log_first_offset: Level::default(),
            log_next_offset: Level::default(),
            log_blocks_deleted: Count::default(),
            log_accepting: Flag::default(),
            forwarder_offset: Level::default(),
            forwarder_published: Count::default(),
            forwarder_errors: Count::default(),
            forwarder_connected: Flag::default(),
            windows_offsets_skipped: Count::default(),
            windows_outputs_committed: Count::default(),
            windows_errors: Count::default(),
            snapshot: Mutex::default(),
            windows: Mutex::default(),
        };
        metrics.log_accepting.set(1);
        metrics
    }

    pub fn observe_commit(&self, seconds: f64) {
        self.commit_latency.observe(seconds);
    }

    pub fn is_log_accepting(&self) -> bool {
        self.log_accepting.get() == 1
    }

    pub fn set_log_accepting(&self, accepting: bool) {
        self.log_accepting.set(i64::from(accepting));
    }

    /// Registers every metric (and the snapshot collector) in `registry`.
    pub fn register(self: &Arc<Metrics>, registry: &mut Registry, parts: Parts) {
        let counters: [(&str, &str, &Count); 8] = [
            ("driftlog_datagrams_received", "Datagrams received from all sources.", &self.datagrams_received),
            ("driftlog_datagram_bytes_received", "Bytes of datagrams received.", &self.datagram_bytes_received),
            (
                "driftlog_kernel_receive_drops",
                "Datagrams the kernel dropped because a UDP socket's receive buffer was full (read once a second).",
                &self.kernel_drops,
            ),
            (
                "driftlog_frames_refused_log_unavailable",
                "Frames refused while the log could not take writes; devices retransmit them.",
                &self.frames_refused_log_unavailable,
            ),
            ("driftlog_replies_dropped", "ACKs and NAKs that could not be sent.", &self.replies_dropped),
            ("driftlog_events_committed", "Events committed to the log.", &self.events_committed),
            (
                "driftlog_commit_failures",
                "Group commits that failed, counting the probe commits (one a second) while the log refuses writes.",
                &self.commit_failures,
            ),
            ("driftlog_log_blocks_deleted", "Blocks retention deleted.", &self.log_blocks_deleted),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "driftlog_last_events_commit_timestamp_seconds",
            "Unix time of the last group commit that stored events (0: none yet).",
            self.last_events_commit.clone(),
        );
        registry.register(
            "driftlog_ingest_waited_on_commit_seconds",
            "Time ingest paused because the next commit reached log.max_commit_bytes before the previous one finished (the disk is the bottleneck).",
            self.ingest_waited_on_commit.clone(),
        );
        let levels: [(&str, &str, &Level); 4] = [
            ("driftlog_log_bytes", "Bytes of records held by the log.", &self.log_held_bytes),
            ("driftlog_log_file_bytes", "Size of the log file.", &self.log_file_bytes),
            ("driftlog_log_first_offset", "Oldest offset retention kept.", &self.log_first_offset),
            ("driftlog_log_next_offset", "Offset the next record gets.", &self.log_next_offset),
        ];
        for (name, help, level) in levels {
            registry.register(name, help, level.clone());
        }
        registry.register(
            "driftlog_log_accepting",
            "1 while the log takes writes; 0 means the collector is not acknowledging (log full or storage failing).",
            self.log_accepting.clone(),
        );
        registry.register(
            "driftlog_commit_seconds",
            "Group commit latency (write and fsync).",
            self.commit_latency.clone(),
        );
        if parts.forwarder {
            registry.register(
                "driftlog_forwarder_offset",
                "Next log offset the JetStream forwarder publishes.",
                self.forwarder_offset.clone(),
            );
            registry.register(
                "driftlog_forwarder_published",
                "Messages JetStream acknowledged.",
                self.forwarder_published.clone(),
            );
            registry.register(
                "driftlog_forwarder_errors",
                "Forwarder connection and publish errors (each retried).",
                self.forwarder_errors.clone(),
            );
            registry.register(
                "driftlog_forwarder_connected",
                "1 while connected to NATS.",
                self.forwarder_connected.clone(),
            );
        }
        if parts.windows {
            registry.register(
                "driftlog_windows_offsets_skipped",
                "Log offsets removed by retention before the window processor read them.",
                self.windows_offsets_skipped.clone(),
            );
            registry.register(
                "driftlog_windows_errors",
                "Window processor rounds that failed (log unavailable) and were retried.",
                self.windows_errors.clone(),
            );
        }
        registry.register_collector(Box::new(snapshot::SnapshotCollector { metrics: self.clone(), parts }));
    }
}
