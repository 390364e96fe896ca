//! Counters every component updates and `/metrics` renders (Prometheus text format).
//!
//! Hot counters are atomics; the acceptor publishes the endpoint's counters and per-device
//! last-seen times as a snapshot every few hundred milliseconds, so scraping never touches
//! the acceptor's state.

use crate::windows::pipeline::{PipelineStats, StateSnapshot};
use driftlog_eventtime::clock::Estimate;
use driftlog_protocol::DeviceId;
use driftlog_protocol::endpoint::EndpointStats;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Commit latency buckets, seconds (upper bounds).
pub const COMMIT_BUCKETS_S: [f64; 12] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub datagrams_received: AtomicU64,
    pub datagram_bytes_received: AtomicU64,
    /// Kernel receive-buffer drops (each socket's `drops` in `/proc/net/udp`), summed.
    pub kernel_drops: AtomicU64,
    /// Frames refused because the log could not take them (full or failing): never
    /// admitted, never acknowledged, so the devices keep them and retransmit.
    pub frames_refused_log_unavailable: AtomicU64,
    /// ACKs/NAKs that could not be sent (socket error, ZeroMQ queue full).
    pub replies_dropped: AtomicU64,
    pub events_committed: AtomicU64,
    /// When the last group commit that stored events completed, µs since 1970 (0: none
    /// yet). Stalls show as a timestamp that stops moving while devices send.
    pub last_events_commit_unix_us: AtomicU64,
    pub commits: AtomicU64,
    /// Time the acceptor stopped reading because the next commit had reached
    /// `log.max_commit_bytes` while the previous one was still being written (µs): ingest
    /// held back by the disk.
    pub ingest_waited_on_commit_us: AtomicU64,
    pub commit_failures: AtomicU64,
    commit_latency_buckets: [AtomicU64; COMMIT_BUCKETS_S.len()],
    commit_latency_sum_us: AtomicU64,
    pub log_held_bytes: AtomicU64,
    pub log_file_bytes: AtomicU64,
    pub log_first_offset: AtomicU64,
    pub log_next_offset: AtomicU64,
    pub log_blocks_deleted: AtomicU64,
    /// False while the log refuses writes (full, disk error): the collector is not
    /// acknowledging.
    pub log_accepting: AtomicBool,
    pub forwarder_offset: AtomicU64,
    pub forwarder_published: AtomicU64,
    pub forwarder_errors: AtomicU64,
    pub forwarder_connected: AtomicBool,
    pub forwarder_enabled: AtomicBool,
    pub snapshot: Mutex<AcceptorSnapshot>,
    /// Log offsets the window processor never read (retention removed them first).
    pub windows_offsets_skipped: AtomicU64,
    /// Rounds of the window processor that failed (the log unavailable); it retries.
    pub windows_errors: AtomicU64,
    pub windows_outputs_committed: AtomicU64,
    pub windows_enabled: AtomicBool,
    pub windows: Mutex<WindowsSnapshot>,
    /// StatsD's own registry, appended to `/metrics` when StatsD runs.
    pub statsd: std::sync::OnceLock<std::sync::Arc<crate::statsd::telemetry::Telemetry>>,
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
}

impl Metrics {
    pub fn new() -> Metrics {
        let metrics = Metrics::default();
        metrics.log_accepting.store(true, Ordering::Relaxed);
        metrics
    }

    pub fn observe_commit(&self, seconds: f64) {
        if let Some(index) = COMMIT_BUCKETS_S.iter().position(|bound| seconds <= *bound) {
            self.commit_latency_buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.commit_latency_sum_us.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// The commit latency quantile `q` from the histogram (upper bucket bound), seconds.
    pub fn commit_latency_quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.commit_latency_buckets.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (count, bound) in counts.iter().zip(COMMIT_BUCKETS_S) {
            seen += count;
            if seen >= target {
                return Some(bound);
            }
        }
        COMMIT_BUCKETS_S.last().copied()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut series = |name: &str, help: &str, kind: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        series(
            "driftlog_datagrams_received_total",
            "Datagrams received from all sources.",
            "counter",
            load(&self.datagrams_received),
        );
        series(
            "driftlog_datagram_bytes_received_total",
            "Bytes of datagrams received.",
            "counter",
            load(&self.datagram_bytes_received),
        );
        series(
            "driftlog_kernel_receive_drops_total",
            "Datagrams the kernel dropped because a UDP socket's receive buffer was full (read once a second).",
            "counter",
            load(&self.kernel_drops),
        );
        series(
            "driftlog_frames_refused_log_unavailable_total",
            "Frames refused while the log could not take writes; devices retransmit them.",
            "counter",
            load(&self.frames_refused_log_unavailable),
        );
        series(
            "driftlog_replies_dropped_total",
            "ACKs and NAKs that could not be sent.",
            "counter",
            load(&self.replies_dropped),
        );
        series(
            "driftlog_events_committed_total",
            "Events committed to the log.",
            "counter",
            load(&self.events_committed),
        );
        series(
            "driftlog_last_events_commit_timestamp_seconds",
            "Unix time of the last group commit that stored events (0: none yet).",
            "gauge",
            load(&self.last_events_commit_unix_us) / 1e6,
        );
        series(
            "driftlog_ingest_waited_on_commit_seconds_total",
            "Time ingest paused because the next commit reached log.max_commit_bytes before the previous one finished (the disk is the bottleneck).",
            "counter",
            load(&self.ingest_waited_on_commit_us) / 1e6,
        );
        series(
            "driftlog_commit_failures_total",
            "Group commits that failed, counting the probe commits (one a second) while the log refuses writes.",
            "counter",
            load(&self.commit_failures),
        );
        series("driftlog_log_bytes", "Bytes of records held by the log.", "gauge", load(&self.log_held_bytes));
        series("driftlog_log_file_bytes", "Size of the log file.", "gauge", load(&self.log_file_bytes));
        series("driftlog_log_first_offset", "Oldest offset retention kept.", "gauge", load(&self.log_first_offset));
        series("driftlog_log_next_offset", "Offset the next record gets.", "gauge", load(&self.log_next_offset));
        series(
            "driftlog_log_blocks_deleted_total",
            "Blocks retention deleted.",
            "counter",
            load(&self.log_blocks_deleted),
        );
        series(
            "driftlog_log_accepting",
            "1 while the log takes writes; 0 means the collector is not acknowledging (log full or storage failing).",
            "gauge",
            f64::from(u8::from(self.log_accepting.load(Ordering::Relaxed))),
        );
        if self.forwarder_enabled.load(Ordering::Relaxed) {
            let next = load(&self.log_next_offset);
            let forwarded = load(&self.forwarder_offset);
            series(
                "driftlog_forwarder_offset",
                "Next log offset the JetStream forwarder publishes.",
                "gauge",
                forwarded,
            );
            series(
                "driftlog_forwarder_lag_offsets",
                "Log offsets not yet acknowledged by JetStream.",
                "gauge",
                (next - forwarded).max(0.0),
            );
            series(
                "driftlog_forwarder_published_total",
                "Messages JetStream acknowledged.",
                "counter",
                load(&self.forwarder_published),
            );
            series(
                "driftlog_forwarder_errors_total",
                "Forwarder connection and publish errors (each retried).",
                "counter",
                load(&self.forwarder_errors),
            );
            series(
                "driftlog_forwarder_connected",
                "1 while connected to NATS.",
                "gauge",
                f64::from(u8::from(self.forwarder_connected.load(Ordering::Relaxed))),
            );
        }
        let _ = writeln!(
            out,
            "# HELP driftlog_commit_seconds Group commit latency (write and fsync).\n# TYPE driftlog_commit_seconds histogram"
        );
        let mut cumulative = 0;
        for (bucket, bound) in self.commit_latency_buckets.iter().zip(COMMIT_BUCKETS_S) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "driftlog_commit_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let commits = self.commits.load(Ordering::Relaxed);
        let _ = writeln!(out, "driftlog_commit_seconds_bucket{{le=\"+Inf\"}} {commits}");
        let _ = writeln!(out, "driftlog_commit_seconds_sum {}", load(&self.commit_latency_sum_us) / 1e6);
        let _ = writeln!(out, "driftlog_commit_seconds_count {commits}");
        let snapshot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let endpoint = snapshot.endpoint;
        let mut series = |name: &str, help: &str, kind: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        series(
            "driftlog_events_received_total",
            "Events admitted for the first time.",
            "counter",
            endpoint.events_new as f64,
        );
        series(
            "driftlog_events_duplicate_total",
            "Events received again and dropped as duplicates.",
            "counter",
            endpoint.events_duplicate as f64,
        );
        series(
            "driftlog_events_tombstoned_total",
            "Sequence numbers devices reported dropped (tombstones).",
            "counter",
            endpoint.tombstoned as f64,
        );
        series(
            "driftlog_events_unrecoverable_total",
            "Sequence numbers inferred lost (the device no longer holds them).",
            "counter",
            endpoint.unrecoverable as f64,
        );
        series("driftlog_acks_sent_total", "ACKs sent.", "counter", endpoint.acks_sent as f64);
        series("driftlog_naks_sent_total", "NAKs sent.", "counter", endpoint.naks_sent as f64);
        series("driftlog_streams", "Receivers (device, stream, epoch) held.", "gauge", snapshot.streams as f64);
        let _ = writeln!(
            out,
            "# HELP driftlog_frames_rejected_total Frames rejected, by reason.\n# TYPE driftlog_frames_rejected_total counter"
        );
        for (reason, count) in endpoint.rejects.iter() {
            let _ = writeln!(out, "driftlog_frames_rejected_total{{reason=\"{}\"}} {count}", reason.name());
        }
        let _ = writeln!(
            out,
            "# HELP driftlog_device_last_seen_seconds When a device's last accepted frame arrived (unix time).\n# TYPE driftlog_device_last_seen_seconds gauge"
        );
        for (device, at_ms) in &snapshot.devices_last_seen_unix_ms {
            let _ = writeln!(out, "driftlog_device_last_seen_seconds{{device=\"{device}\"}} {}", *at_ms as f64 / 1e3);
        }
        render_clocks(&snapshot, &mut out);
        if self.windows_enabled.load(Ordering::Relaxed) {
            self.render_windows(&mut out);
        }
        if let Some(statsd) = self.statsd.get() {
            out.push_str(&statsd.encode());
        }
        out
    }

    fn render_windows(&self, out: &mut String) {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let stats = &windows.stats;
        let mut series = |name: &str, help: &str, kind: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let next = self.log_next_offset.load(Ordering::Relaxed);
        series(
            "driftlog_windows_lag_offsets",
            "Log offsets the window processor has not read yet.",
            "gauge",
            next.saturating_sub(windows.next_offset) as f64,
        );
        series(
            "driftlog_watermark_seconds",
            "The fleet's event-time watermark (unix time; minimum over active devices).",
            "gauge",
            watermark_seconds(windows.watermark_unix_us),
        );
        let state = &windows.state;
        series(
            "driftlog_windows_open",
            "Fleet windows in memory (open, or holding late updates).",
            "gauge",
            state.fleet_windows_open as f64,
        );
        series(
            "driftlog_windows_stored",
            "Fleet windows that fired and wait in the log's file for late events or their cleanup.",
            "gauge",
            state.fleet_windows_stored as f64,
        );
        series(
            "driftlog_windows_late_updates_pending",
            "Fleet windows holding late events not emitted yet (a draining device still owes them events).",
            "gauge",
            state.late_updates_pending as f64,
        );
        series("driftlog_windows_devices", "Devices the windows track.", "gauge", state.devices as f64);
        series(
            "driftlog_windows_devices_open",
            "Devices with per-device windows waiting for their completeness (or their time-out).",
            "gauge",
            state.devices_with_open_windows as f64,
        );
        series(
            "driftlog_windows_devices_holding",
            "Devices draining a backlog that hold the fleet's watermark.",
            "gauge",
            state.devices_holding as f64,
        );
        series(
            "driftlog_windows_devices_resident",
            "Devices whose window state is in memory (the rest is in the log's file).",
            "gauge",
            state.devices_resident as f64,
        );
        series(
            "driftlog_windows_state_memory_bytes",
            "Estimated memory of window state in memory (watermark.state_memory_bytes bounds the device units).",
            "gauge",
            (state.resident_bytes + state.pending_bytes) as f64,
        );
        series(
            "driftlog_windows_units_loaded_total",
            "Device window units read back from the log's file.",
            "counter",
            state.residency.loaded as f64,
        );
        series(
            "driftlog_windows_units_evicted_total",
            "Device window units moved out of memory.",
            "counter",
            state.residency.evicted as f64,
        );
        series(
            "driftlog_windows_units_unreadable_total",
            "Stored device window units that did not decode (the device started afresh).",
            "counter",
            state.residency.unreadable as f64,
        );
        series("driftlog_window_claims_total", "Completeness claims the windows read.", "counter", stats.claims as f64);
        series(
            "driftlog_window_results_timed_out_total",
            "Per-device window results emitted because the device stayed away watermark.max_outage_ms.",
            "counter",
            stats.timed_out as f64,
        );
        series(
            "driftlog_window_completeness_refused_total",
            "Completeness inputs refused: claims going backwards, and what per-device bounds turned away.",
            "counter",
            stats.completeness_refused as f64,
        );
        series(
            "driftlog_windows_devices_forgotten_total",
            "Devices forgotten for the watermark.max_devices bound.",
            "counter",
            stats.devices_forgotten as f64,
        );
        series(
            "driftlog_windows_errors_total",
            "Window processor rounds that failed (log unavailable) and were retried.",
            "counter",
            self.windows_errors.load(Ordering::Relaxed) as f64,
        );
        series("driftlog_window_events_total", "Numeric events the windows processed.", "counter", stats.events as f64);
        series("driftlog_window_results_total", "Window results emitted (INSERT).", "counter", stats.results as f64);
        series(
            "driftlog_window_retractions_total",
            "Earlier results retracted by late updates or session merges.",
            "counter",
            stats.retractions as f64,
        );
        series(
            "driftlog_event_times_clamped_total",
            "Corrected event times clamped to their receive time.",
            "counter",
            stats.clamped as f64,
        );
        series(
            "driftlog_windows_offsets_skipped_total",
            "Log offsets removed by retention before the window processor read them.",
            "counter",
            self.windows_offsets_skipped.load(Ordering::Relaxed) as f64,
        );
        let _ = writeln!(
            out,
            "# HELP driftlog_event_times_quarantined_total Event times that fell back to receive time, by reason.\n# TYPE driftlog_event_times_quarantined_total counter"
        );
        for (reason, count) in &stats.quarantined {
            let _ = writeln!(out, "driftlog_event_times_quarantined_total{{reason=\"{reason}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP driftlog_late_events_total Events later than a window's allowed lateness (stored as late records).\n# TYPE driftlog_late_events_total counter"
        );
        for (window, count) in &stats.late {
            let _ = writeln!(out, "driftlog_late_events_total{{window=\"{window}\"}} {count}");
        }
        out.push_str(&windows.statsd.encode());
    }
}

fn watermark_seconds(unix_us: i64) -> f64 {
    match unix_us {
        i64::MIN => f64::NEG_INFINITY,
        i64::MAX => f64::INFINITY,
        us => us as f64 / 1e6,
    }
}

fn render_clocks(snapshot: &AcceptorSnapshot, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP driftlog_clock_samples_rejected_total Clock samples rejected as inconsistent.\n# TYPE driftlog_clock_samples_rejected_total counter\ndriftlog_clock_samples_rejected_total {}",
        snapshot.clock_samples_rejected
    );
    let _ = writeln!(
        out,
        "# HELP driftlog_clock_models_evicted_total Clock models dropped for the clock.max_models bound.\n# TYPE driftlog_clock_models_evicted_total counter\ndriftlog_clock_models_evicted_total {}",
        snapshot.clock_models_evicted
    );
    type Series = (&'static str, &'static str, fn(&Estimate) -> f64);
    let per_device: [Series; 5] = [
        (
            "driftlog_device_clock_offset_seconds",
            "Collector Unix time minus device monotonic time: the device's boot time on the collector clock.",
            |e| e.offset_us / 1e6,
        ),
        ("driftlog_device_clock_drift_ppm", "Estimated device clock rate error (positive: fast).", |e| e.drift_ppm),
        ("driftlog_device_clock_min_delay_seconds", "Least one-way or round-trip delay seen.", |e| {
            e.min_delay_us as f64 / 1e6
        }),
        ("driftlog_device_clock_uncertainty_seconds", "Error bound of the current correction.", |e| {
            e.uncertainty_us as f64 / 1e6
        }),
        ("driftlog_device_clock_samples", "Clock samples the model uses.", |e| e.samples_used as f64),
    ];
    for (name, help, value) in per_device {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (device, estimate) in &snapshot.clocks {
            // `+ 0.0` turns -0 (a drift too small to estimate yet) into 0.
            let _ = writeln!(out, "{name}{{device=\"{device}\"}} {}", value(estimate) + 0.0);
        }
    }
}
