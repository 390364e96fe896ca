//! Optional Prometheus metrics on a local HTTP port (`[metrics] listen = "127.0.0.1:9464"`).
//!
//! The text format is rendered from the [`Status`] the driver publishes every second, so
//! scraping never touches the driver or the outbox. The server answers `GET /metrics` and
//! nothing else; it is meant for localhost and has no authentication.

use crate::status::Status;
use std::fmt::Write as _;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A per-stream series: name, help, type, and how to read it from a stream's status.
type PerStream = (&'static str, &'static str, &'static str, fn(&crate::status::StreamStatus) -> f64);

/// Renders `status` in the Prometheus text exposition format.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    gauge(
        "driftlog_agent_backlog_events",
        "Events held in the outbox until acknowledged.",
        "gauge",
        status.backlog_events as f64,
    );
    gauge("driftlog_agent_backlog_bytes", "Estimated outbox bytes on disk.", "gauge", status.backlog_bytes as f64);
    gauge(
        "driftlog_agent_oldest_unacknowledged_seconds",
        "Age of the oldest unacknowledged event.",
        "gauge",
        status.oldest_unacknowledged_age_s.unwrap_or(0.0),
    );
    gauge(
        "driftlog_agent_events_appended_total",
        "Events accepted into the outbox.",
        "counter",
        status.appended_events as f64,
    );
    gauge(
        "driftlog_agent_events_dropped_total",
        "Events dropped by the outbox policy (tombstoned).",
        "counter",
        status.dropped_events as f64,
    );
    gauge(
        "driftlog_agent_events_refused_total",
        "Events refused under the block policy.",
        "counter",
        status.refused_events as f64,
    );
    gauge(
        "driftlog_agent_events_released_total",
        "Events freed by collector acknowledgements.",
        "counter",
        status.released_events as f64,
    );
    gauge(
        "driftlog_agent_storage_errors_total",
        "Outbox writes that failed (disk full, I/O errors); each reopened the outbox.",
        "counter",
        status.storage_errors as f64,
    );
    gauge(
        "driftlog_agent_outbox_max_bytes",
        "The outbox byte bound in force (lowered after the disk filled up).",
        "gauge",
        status.outbox_max_bytes as f64,
    );
    gauge(
        "driftlog_agent_corrupt_segments_total",
        "Outbox segments found damaged, at open (their readable prefix was kept) or when a block was read.",
        "counter",
        status.corrupt_segments as f64,
    );
    gauge(
        "driftlog_agent_corrupt_events_total",
        "Events lost to damaged outbox segments; each is tombstoned as storage_failure.",
        "counter",
        status.corrupt_events as f64,
    );
    gauge(
        "driftlog_agent_tombstones_forgotten_total",
        "Tombstones forgotten at their bound; the collector sees those ranges as gaps.",
        "counter",
        status.tombstones_forgotten as f64,
    );
    gauge("driftlog_agent_datagrams_sent_total", "Datagrams sent.", "counter", status.datagrams_sent as f64);
    gauge(
        "driftlog_agent_datagrams_received_total",
        "Datagrams received.",
        "counter",
        status.datagrams_received as f64,
    );
    gauge(
        "driftlog_agent_datagrams_rejected_total",
        "Received datagrams that failed authentication or decoding.",
        "counter",
        status.datagrams_rejected as f64,
    );
    gauge(
        "driftlog_agent_send_errors_total",
        "Datagrams the transport could not send.",
        "counter",
        status.send_errors as f64,
    );
    let per_stream: [PerStream; 6] = [
        ("driftlog_agent_rtt_seconds", "Smoothed round trip to the collector.", "gauge", |s| s.rtt_ms / 1e3),
        (
            "driftlog_agent_ack_wait_seconds",
            "Smoothed time a frame waits for its ACK: round trip, the collector's commit and ACK delay.",
            "gauge",
            |s| s.ack_wait_ms / 1e3,
        ),
        ("driftlog_agent_events_sent_total", "Event transmissions, retransmissions included.", "counter", |s| {
            s.events_sent as f64
        }),
        ("driftlog_agent_events_retransmitted_total", "Events sent again.", "counter", |s| {
            s.events_retransmitted as f64
        }),
        ("driftlog_agent_timeouts_total", "Retransmission timeouts.", "counter", |s| s.timeouts as f64),
        ("driftlog_agent_collector_unreachable", "1 while the collector does not answer.", "gauge", |s| {
            f64::from(u8::from(s.unreachable))
        }),
    ];
    for (name, help, kind, value) in per_stream {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for stream in &status.streams {
            let _ = writeln!(out, "{name}{{stream=\"{}\"}} {}", stream.stream, value(stream));
        }
    }
    if let Some(statsd) = &status.statsd {
        render_statsd(statsd, &mut out);
    }
    out
}

/// The StatsD listener's counters.
fn render_statsd(statsd: &crate::statsd::StatsdStatus, out: &mut String) {
    for (name, help, value) in [
        ("driftlog_agent_statsd_packets_total", "StatsD datagrams received.", statsd.packets),
        ("driftlog_agent_statsd_lines_total", "Non-empty StatsD lines received.", statsd.lines),
        (
            "driftlog_agent_statsd_samples_total",
            "StatsD samples handed to the outbox (one event each).",
            statsd.samples,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    for (name, help, counts) in [
        (
            "driftlog_agent_statsd_bad_samples_total",
            "StatsD samples refused (bad lines, or what an event cannot carry), by reason.",
            &statsd.bad_samples,
        ),
        (
            "driftlog_agent_statsd_dropped_total",
            "StatsD samples dropped after parsing (datagram too large, queue full), by reason.",
            &statsd.dropped,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (reason, count) in counts {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
        }
    }
}

/// Serves `/metrics` until `shutdown`.
/// Reads until the end of the request head (or 1 KiB): a client may write it in pieces.
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut request = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while request.len() < 1_024 && !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buf[..read]);
    }
    Ok(String::from_utf8_lossy(&request).into_owned())
}

pub async fn serve(listener: TcpListener, status_path: PathBuf, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let status_path = status_path.clone();
                tokio::spawn(async move {
                    let read = tokio::time::timeout(std::time::Duration::from_secs(5), read_head(&mut stream)).await;
                    let Ok(Ok(request)) = read else { return };
                    let response = if request.starts_with("GET /metrics ") {
                        let body = Status::read(&status_path).map(|s| render(&s)).unwrap_or_default();
                        format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
                    };
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        }
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
            tombstones_forgotten: 3,
            streams: vec![crate::status::StreamStatus {
                stream: 1,
                rtt_ms: 12.5,
                ack_wait_ms: 37.5,
                unreachable: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&status);
        assert!(text.contains("driftlog_agent_backlog_events 7\n"));
        assert!(text.contains("driftlog_agent_storage_errors_total 2\n"));
        assert!(text.contains("driftlog_agent_corrupt_segments_total 1\n"));
        assert!(text.contains("driftlog_agent_corrupt_events_total 4\n"));
        assert!(text.contains("driftlog_agent_tombstones_forgotten_total 3\n"));
        assert!(text.contains("driftlog_agent_rtt_seconds{stream=\"1\"} 0.0125\n"));
        assert!(text.contains("driftlog_agent_ack_wait_seconds{stream=\"1\"} 0.0375\n"));
        assert!(text.contains("driftlog_agent_collector_unreachable{stream=\"1\"} 1\n"));
        assert!(!text.contains("statsd"), "no StatsD series without the listener");
        let statsd = crate::statsd::StatsdStatus {
            packets: 3,
            samples: 5,
            bad_samples: [("bad_value".to_string(), 2)].into(),
            dropped: [("queue_full".to_string(), 1)].into(),
            ..Default::default()
        };
        let text = render(&Status { statsd: Some(statsd), ..Default::default() });
        assert!(text.contains("driftlog_agent_statsd_samples_total 5\n"));
        assert!(text.contains("driftlog_agent_statsd_bad_samples_total{reason=\"bad_value\"} 2\n"));
        assert!(text.contains("driftlog_agent_statsd_dropped_total{reason=\"queue_full\"} 1\n"));
    }
}
