//! StatsD's own metrics, in a `prometheus-client` registry of its own, plus the latest
//! flush rendered as series: appended to the collector's `/metrics`.
//!
//! Every loss has a counter: samples refused by reason, samples and values dropped by a
//! bound, datagrams the kernel dropped per socket, stream lines too long, connections
//! refused or closed idle, flushes the log or carbon could not take.

use super::flush::Flush;
use driftlog_protocol::statsd::ErrorReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

type Label = [(&'static str, String); 1];

/// Why something was dropped (the `reason` label of `driftlog_statsd_dropped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// A sample for a new key over `max_keys`.
    KeyCap,
    /// A timer value over `max_timer_values`.
    TimerValueCap,
    /// A set member over `max_set_members`.
    SetMemberCap,
    /// A datagram larger than `max_packet_bytes`.
    PacketTooLarge,
    /// A stream line longer than `max_line_bytes`.
    LineTooLong,
    /// A flush the log refused and the retry queue could not keep.
    FlushQueueFull,
    /// A flush not sent to carbon: its queue was full, or sending failed after retries.
    GraphiteUnsent,
    /// A `|T` sample that found the queue to the log full (`max_timestamped_samples`).
    TimedQueueFull,
}

impl Drop {
    fn name(self) -> &'static str {
        match self {
            Drop::KeyCap => "key_cap",
            Drop::TimerValueCap => "timer_value_cap",
            Drop::SetMemberCap => "set_member_cap",
            Drop::PacketTooLarge => "packet_too_large",
            Drop::LineTooLong => "line_too_long",
            Drop::FlushQueueFull => "flush_queue_full",
            Drop::GraphiteUnsent => "graphite_unsent",
            Drop::TimedQueueFull => "timestamped_queue_full",
        }
    }
}

#[derive(Debug, Default)]
pub struct Telemetry {
    packets: Family<Label, Counter>,
    lines: Counter,
    samples: Counter,
    bad_samples: Family<Label, Counter>,
    dropped: Family<Label, Counter>,
    kernel_drops: Family<Label, Counter>,
    unusual_sample_rates: Counter,
    pub keys: Gauge,
    pub connections: Gauge,
    pub connections_refused: Counter,
    pub connections_idle_closed: Counter,
    pub flushes: Counter,
    pub flush_commit_failures: Counter,
    /// `|T` samples handed to the log, for aggregation by their time.
    pub timed_samples: Counter,
    pub graphite_flushes_sent: Counter,
    pub graphite_errors: Counter,
    latest: Arc<LatestFlush>,
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let telemetry = Telemetry::default();
        for reason in ErrorReason::ALL {
            let _ = telemetry.bad_samples.get_or_create(&[("reason", reason.name().to_string())]);
        }
        telemetry
    }

    /// Registers every StatsD metric (and the latest flush) in the collector's registry.
    pub fn register(&self, r: &mut Registry) {
        let telemetry = self;
        r.register(
            "driftlog_statsd_packets_received",
            "StatsD packets (datagrams, stream chunks) received, by transport.",
            telemetry.packets.clone(),
        );
        r.register("driftlog_statsd_lines_received", "Non-empty StatsD lines received", telemetry.lines.clone());
        r.register("driftlog_statsd_samples_aggregated", "StatsD samples aggregated", telemetry.samples.clone());
        r.register(
            "driftlog_statsd_bad_samples",
            "StatsD samples refused (bad lines), by reason.",
            telemetry.bad_samples.clone(),
        );
        r.register(
            "driftlog_statsd_dropped",
            "StatsD samples, values, packets, lines or flushes dropped by a bound, by reason.",
            telemetry.dropped.clone(),
        );
        r.register("driftlog_statsd_kernel_receive_drops", "Datagrams the kernel dropped because a StatsD UDP socket's receive buffer was full (read once a second), by socket", telemetry.kernel_drops.clone());
        r.register(
            "driftlog_statsd_unusual_sample_rates",
            "Samples aggregated with a rate of 0 or above 1 (the reference accepts them: @0 adds infinity, @2 halves).",
            telemetry.unusual_sample_rates.clone(),
        );
        r.register("driftlog_statsd_keys", "Distinct StatsD keys held (all types)", telemetry.keys.clone());
        r.register(
            "driftlog_statsd_connections",
            "Open StatsD stream connections (TCP and Unix).",
            telemetry.connections.clone(),
        );
        r.register(
            "driftlog_statsd_connections_refused",
            "StatsD stream connections closed at once: max_connections reached.",
            telemetry.connections_refused.clone(),
        );
        r.register(
            "driftlog_statsd_connections_idle_closed",
            "StatsD stream connections closed after idle_timeout_ms without data.",
            telemetry.connections_idle_closed.clone(),
        );
        r.register("driftlog_statsd_flushes", "StatsD flushes committed to the log", telemetry.flushes.clone());
        r.register(
            "driftlog_statsd_timestamped_samples",
            "StatsD samples with a |T timestamp queued for the log, aggregated per source by their time.",
            telemetry.timed_samples.clone(),
        );
        r.register(
            "driftlog_statsd_flush_commit_failures",
            "StatsD flush commits that failed (kept and retried).",
            telemetry.flush_commit_failures.clone(),
        );
        r.register(
            "driftlog_statsd_graphite_flushes_sent",
            "Flushes sent to carbon.",
            telemetry.graphite_flushes_sent.clone(),
        );
        r.register(
            "driftlog_statsd_graphite_errors",
            "Failed connections or writes to carbon (each flush is retried until the queue drops it).",
            telemetry.graphite_errors.clone(),
        );
        r.register_collector(Box::new(telemetry.latest.clone()));
    }

    pub fn packets(&self, transport: &'static str, packets: u64) {
        self.packets.get_or_create(&[("transport", transport.to_string())]).inc_by(packets);
    }

    pub fn lines(&self, lines: u64) {
        self.lines.inc_by(lines);
    }

    pub fn samples(&self, samples: u64) {
        self.samples.inc_by(samples);
    }

    pub fn bad(&self, reason: ErrorReason, samples: u64) {
        self.bad_samples.get_or_create(&[("reason", reason.name().to_string())]).inc_by(samples);
    }

    pub fn dropped(&self, why: Drop, count: u64) {
        self.dropped.get_or_create(&[("reason", why.name().to_string())]).inc_by(count);
    }

    pub fn kernel_drops(&self, socket: &str, drops: u64) {
        self.kernel_drops.get_or_create(&[("socket", socket.to_string())]).inc_by(drops);
    }

    pub fn unusual_sample_rates(&self, samples: u64) {
        self.unusual_sample_rates.inc_by(samples);
    }

    /// The flush `/metrics` shows from now on.
    pub fn publish(&self, flush: Arc<Flush>) {
        *self.latest.flush.lock().unwrap_or_else(|p| p.into_inner()) = Some(flush);
    }

    /// Prometheus text (0.0.4) of these metrics alone.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        self.register(&mut registry);
        driftlog_http::render(&registry).unwrap_or_default()
    }
}

/// The latest flush as series, `key` (and `stat` for timers) as labels.
#[derive(Debug, Default)]
struct LatestFlush {
    flush: Mutex<Option<Arc<Flush>>>,
}

impl Collector for LatestFlush {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(flush) = self.flush.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return Ok(()) };
        let interval_s = flush.interval_ms as f64 / 1000.0;
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     series: &mut dyn Iterator<Item = (Vec<(&str, String)>, f64)>| {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, value) in series {
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
            Ok::<(), std::fmt::Error>(())
        };
        let key = |k: &String| vec![("key", k.clone())];
        gauge(
            &mut encoder,
            "driftlog_statsd_flush_timestamp_seconds",
            "When the latest StatsD flush was taken (unix time).",
            &mut std::iter::once((vec![], flush.flush_unix_ms as f64 / 1e3)),
        )?;
        gauge(
            &mut encoder,
            "driftlog_statsd_counter",
            "Latest flush: each counter's sum over the interval (the reference's count).",
            &mut flush.counters.iter().map(|(k, v)| (key(k), *v)),
        )?;
        gauge(
            &mut encoder,
            "driftlog_statsd_counter_rate",
            "Latest flush: each counter per second (the reference's rate).",
            &mut flush.counters.iter().map(|(k, v)| (key(k), v / interval_s)),
        )?;
        gauge(
            &mut encoder,
            "driftlog_statsd_gauge",
            "Latest flush: each gauge.",
            &mut flush.gauges.iter().map(|(k, v)| (key(k), *v)),
        )?;
        gauge(
            &mut encoder,
            "driftlog_statsd_set",
            "Latest flush: distinct members of each set.",
            &mut flush.sets.iter().map(|(k, v)| (key(k), *v as f64)),
        )?;
        let mut timers = flush.timers.iter().flat_map(|(k, timer)| {
            flush.timer_fields(timer).into_iter().map(move |(stat, value)| {
                (vec![("key", k.clone()), ("stat", stat)], value.as_f64().unwrap_or(f64::NAN))
            })
        });
        gauge(
            &mut encoder,
            "driftlog_statsd_timer",
            "Latest flush: each timer statistic under the reference's name (count, upper_90, ...).",
            &mut timers,
        )?;
        Ok(())
    }
}
