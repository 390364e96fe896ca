//! Optional Prometheus metrics on a local HTTP port (`[metrics] listen = "127.0.0.1:9464"`),
//! served by `driftlog-http` (axum, bounded) from a `prometheus-client` registry.
//!
//! The agent's figures are the [`Status`] the driver publishes every second (the same one
//! `status.json` holds for `driftlog-agent status`); [`StatusCollector`] encodes the latest
//! one at scrape time, so scraping never touches the driver or the outbox. Other agent modules
//! register their own metrics into the registry [`registry`] returns. No authentication:
//! keep it on localhost (the default) or behind a reverse proxy.

use crate::status::{Status, StreamStatus};
use driftlog_http::scrape::{counter, family, gauge};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Error;
use tokio::sync::watch;

/// The latest status the driver published (`None` before the first): the receiving end of
/// the driver's `watch` channel.
pub type StatusWatch = watch::Receiver<Option<Status>>;

/// Encodes the latest published [`Status`].
#[derive(Debug)]
pub struct StatusCollector {
    pub status: StatusWatch,
}

/// A registry holding the agent's status metrics.
pub fn registry(status: StatusWatch) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatusCollector { status }));
    registry
}

/// The StatsD listener's counters.
fn encode_statsd(statsd: &crate::statsd::StatsdStatus, out: &mut DescriptorEncoder<'_>) -> Result<(), Error> {
    for (name, help, value) in [
        ("driftlog_agent_statsd_packets", "StatsD datagrams received.", statsd.packets),
        ("driftlog_agent_statsd_lines", "Non-empty StatsD lines received.", statsd.lines),
        ("driftlog_agent_statsd_samples", "StatsD samples handed to the outbox (one event each).", statsd.samples),
    ] {
        counter(out, name, help, value)?;
    }
    for (name, help, counts) in [
        (
            "driftlog_agent_statsd_bad_samples",
            "StatsD samples refused (bad lines, or what an event cannot carry), by reason.",
            &statsd.bad_samples,
        ),
        (
            "driftlog_agent_statsd_dropped",
            "StatsD samples dropped after parsing (datagram too large, queue full), by reason.",
            &statsd.dropped,
        ),
    ] {
        let series = counts.iter().map(|(reason, count)| (reason.clone(), *count as f64));
        family(out, name, help, MetricType::Counter, "reason", series)?;
    }
    Ok(())
}

/// A per-stream series: name, help, type, and how to read it from a stream's status.
type PerStream = (&'static str, &'static str, MetricType, fn(&StreamStatus) -> f64);

impl Collector for StatusCollector {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> Result<(), Error> {
        let Some(status) = self.status.borrow().clone() else { return Ok(()) };
        let levels = [
            (
                "driftlog_agent_backlog_events",
                "Events held in the outbox until acknowledged.",
                status.backlog_events as f64,
            ),
            ("driftlog_agent_backlog_bytes", "Estimated outbox bytes on disk.", status.backlog_bytes as f64),
            (
                "driftlog_agent_oldest_unacknowledged_seconds",
                "Age of the oldest unacknowledged event.",
                status.oldest_unacknowledged_age_s.unwrap_or(0.0),
            ),
            (
                "driftlog_agent_outbox_max_bytes",
                "The outbox byte bound in force (lowered after the disk filled up).",
                status.outbox_max_bytes as f64,
            ),
        ];
        for (name, help, value) in levels {
            gauge(&mut out, name, help, value)?;
        }
        let counters = [
            ("driftlog_agent_events_appended", "Events accepted into the outbox.", status.appended_events),
            (
                "driftlog_agent_events_dropped",
                "Events dropped by the outbox policy (tombstoned).",
                status.dropped_events,
            ),
            ("driftlog_agent_events_refused", "Events refused under the block policy.", status.refused_events),
            ("driftlog_agent_events_released", "Events freed by collector acknowledgements.", status.released_events),
            (
                "driftlog_agent_storage_errors",
                "Outbox writes that failed (disk full, I/O errors); each reopened the outbox.",
                status.storage_errors,
            ),
            (
                "driftlog_agent_corrupt_segments",
                "Outbox segments found damaged, at open (their readable prefix was kept) or when a block was read.",
                status.corrupt_segments,
            ),
            (
                "driftlog_agent_corrupt_events",
                "Events lost to damaged outbox segments; each is tombstoned as storage_failure.",
                status.corrupt_events,
            ),
            (
                "driftlog_agent_failed_append_events",
                "Events of failed outbox writes tombstoned as storage_failure (their inputs were told the write failed).",
                status.failed_append_events,
            ),
            (
                "driftlog_agent_tombstones_forgotten",
                "Tombstones forgotten at their bound; the collector sees those ranges as gaps.",
                status.tombstones_forgotten,
            ),
            ("driftlog_agent_datagrams_sent", "Datagrams sent.", status.datagrams_sent),
            ("driftlog_agent_datagrams_received", "Datagrams received.", status.datagrams_received),
            (
                "driftlog_agent_datagrams_rejected",
                "Received datagrams that failed authentication or decoding.",
                status.datagrams_rejected,
            ),
            ("driftlog_agent_send_errors", "Datagrams the transport could not send.", status.send_errors),
        ];
        for (name, help, value) in counters {
            counter(&mut out, name, help, value)?;
        }
        let per_stream: [PerStream; 6] = [
            ("driftlog_agent_rtt_seconds", "Smoothed round trip to the collector.", MetricType::Gauge, |s| {
                s.rtt_ms / 1e3
            }),
            (
                "driftlog_agent_ack_wait_seconds",
                "Smoothed time a frame waits for its ACK: round trip, the collector's commit and ACK delay.",
                MetricType::Gauge,
                |s| s.ack_wait_ms / 1e3,
            ),
            (
                "driftlog_agent_events_sent",
                "Event transmissions, retransmissions included.",
                MetricType::Counter,
                |s| s.events_sent as f64,
            ),
            ("driftlog_agent_events_retransmitted", "Events sent again.", MetricType::Counter, |s| {
                s.events_retransmitted as f64
            }),
            ("driftlog_agent_timeouts", "Retransmission timeouts.", MetricType::Counter, |s| s.timeouts as f64),
            (
                "driftlog_agent_collector_unreachable",
                "1 while the collector does not answer.",
                MetricType::Gauge,
                |s| f64::from(u8::from(s.unreachable)),
            ),
        ];
        for (name, help, kind, value) in per_stream {
            let series = status.streams.iter().map(|stream| (stream.stream.to_string(), value(stream)));
            family(&mut out, name, help, kind, "stream", series)?;
        }
        if let Some(statsd) = &status.statsd {
            encode_statsd(statsd, &mut out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_per_stream_series() {
        let status = Status {
            backlog_events: 7,
            storage_errors: 2,
            corrupt_segments: 1,
            corrupt_events: 4,
            failed_append_events: 6,
            tombstones_forgotten: 3,
            streams: vec![StreamStatus {
                stream: 1,
                rtt_ms: 12.5,
                ack_wait_ms: 37.5,
                unreachable: true,
                events_sent: 9,
                ..Default::default()
            }],
            ..Default::default()
        };
        let (publish, cell) = watch::channel(None);
        let empty = driftlog_http::render(&registry(cell.clone())).unwrap();
        assert!(!empty.contains("driftlog_agent"), "nothing before the first status: {empty}");
        publish.send_replace(Some(status));
        let text = driftlog_http::render(&registry(cell)).unwrap();
        for line in [
            "driftlog_agent_backlog_events 7",
            "driftlog_agent_storage_errors_total 2\n",
            "driftlog_agent_corrupt_segments_total 1\n",
            "driftlog_agent_corrupt_events_total 4\n",
            "driftlog_agent_tombstones_forgotten_total 3\n",
            "driftlog_agent_failed_append_events_total 6\n",
            "driftlog_agent_rtt_seconds{stream=\"1\"} 0.0125\n",
            "driftlog_agent_ack_wait_seconds{stream=\"1\"} 0.0375\n",
            "driftlog_agent_collector_unreachable{stream=\"1\"} 1",
            "driftlog_agent_events_sent_total{stream=\"1\"} 9\n",
            "# TYPE driftlog_agent_events_sent_total counter\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("statsd"), "no StatsD series without the listener");
        let statsd = crate::statsd::StatsdStatus {
            packets: 3,
            samples: 5,
            bad_samples: [("bad_value".to_string(), 2)].into(),
            dropped: [("queue_full".to_string(), 1)].into(),
            ..Default::default()
        };
        let (_publish, cell) = watch::channel(Some(Status { statsd: Some(statsd), ..Default::default() }));
        let text = driftlog_http::render(&registry(cell)).unwrap();
        assert!(text.contains("driftlog_agent_statsd_samples_total 5\n"), "{text}");
        assert!(text.contains("driftlog_agent_statsd_bad_samples_total{reason=\"bad_value\"} 2\n"), "{text}");
        assert!(text.contains("driftlog_agent_statsd_dropped_total{reason=\"queue_full\"} 1\n"), "{text}");
    }
}
