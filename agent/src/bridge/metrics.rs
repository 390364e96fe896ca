//! The bridge's counters, in a prometheus-client `Registry` of its own, served on `/metrics`
//! by axum.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `to_collector` (serial → UDP) or `to_device` (UDP → serial).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub direction: &'static str,
    /// `injected` (`--drop-rate`), `serial_down` (nothing connected), `send_failed` (UDP error).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BadFrameLabel {
    /// `bad_cobs` or `oversized`.
    pub reason: &'static str,
}

pub const TO_COLLECTOR: &str = "to_collector";
pub const TO_DEVICE: &str = "to_device";

/// Every counter the bridge keeps. Cheap to clone (the metrics are shared handles).
#[derive(Clone, Debug, Default)]
pub struct BridgeMetrics {
    pub frames: Family<DirectionLabel, Counter>,
    pub serial_bytes: Family<DirectionLabel, Counter>,
    pub dropped: Family<DropLabels, Counter>,
    pub bad_frames: Family<BadFrameLabel, Counter>,
    pub connections: Counter,
    pub connected: Gauge,
}

impl BridgeMetrics {
    /// The metrics and a registry that exposes them.
    pub fn new() -> (BridgeMetrics, Registry) {
        let metrics = BridgeMetrics::default();
        let mut registry = Registry::default();
        registry.register(
            "driftlog_bridge_frames",
            "Frames forwarded, by direction (to_collector: serial to UDP; to_device: UDP to serial)",
            metrics.frames.clone(),
        );
        registry.register(
            "driftlog_bridge_serial_bytes",
            "Bytes on the serial link, COBS framing included, by direction",
            metrics.serial_bytes.clone(),
        );
        registry.register(
            "driftlog_bridge_frames_dropped",
            "Frames not forwarded: injected loss, no serial connection, or a failed UDP send",
            metrics.dropped.clone(),
        );
        registry.register(
            "driftlog_bridge_bad_frames",
            "Frames from the serial link that were not valid COBS or were longer than --max-frame-bytes",
            metrics.bad_frames.clone(),
        );
        registry.register(
            "driftlog_bridge_serial_connections",
            "Serial connections opened",
            metrics.connections.clone(),
        );
        registry.register(
            "driftlog_bridge_serial_connected",
            "1 while a serial connection is open",
            metrics.connected.clone(),
        );
        (metrics, registry)
    }

    pub fn frame(&self, direction: &'static str) {
        self.frames.get_or_create(&DirectionLabel { direction }).inc();
    }

    pub fn serial_bytes(&self, direction: &'static str, bytes: usize) {
        self.serial_bytes.get_or_create(&DirectionLabel { direction }).inc_by(bytes as u64);
    }

    pub fn drop(&self, direction: &'static str, reason: &'static str) {
        self.dropped.get_or_create(&DropLabels { direction, reason }).inc();
    }

    pub fn bad_frame(&self, reason: &'static str) {
        self.bad_frames.get_or_create(&BadFrameLabel { reason }).inc();
    }

    pub fn dropped_total(&self, direction: &'static str) -> u64 {
        ["injected", "serial_down", "send_failed"]
            .iter()
            .map(|&reason| self.dropped.get_or_create(&DropLabels { direction, reason }).get())
            .sum()
    }

    pub fn frames_total(&self, direction: &'static str) -> u64 {
        self.frames.get_or_create(&DirectionLabel { direction }).get()
    }

    pub fn bad_frames_total(&self) -> u64 {
        ["bad_cobs", "oversized"]
            .iter()
            .map(|&reason| self.bad_frames.get_or_create(&BadFrameLabel { reason }).get())
            .sum()
    }
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let registry = Arc::new(registry);
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        axum::http::StatusCode::OK,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    ),
                    Err(_) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [(axum::http::header::CONTENT_TYPE, "text/plain")],
                        String::new(),
                    ),
                }
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
