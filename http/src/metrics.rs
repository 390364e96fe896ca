//! `GET /metrics`: a `prometheus-client` registry in the Prometheus text format (0.0.4),
//! which every Prometheus version scrapes and the project's tests and benches read.

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::fmt::Error;
use std::sync::Arc;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE;

/// The registry as Prometheus text.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// A router with `GET /metrics` (and `HEAD`) serving `registry`; merge it with a binary's own
/// routes. Modules register their metrics before the registry is shared here.
pub fn metrics_router(registry: Arc<Registry>) -> Router {
    Router::new().route("/metrics", get(move || async move { metrics_response(&registry) }))
}

fn metrics_response(registry: &Registry) -> Response {
    match render(registry) {
        Ok(text) => ([(CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text).into_response(),
        // Only a collector's own encoding error gets here; say so rather than serve half.
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response(),
    }
}

/// Helpers for `prometheus-client` [`Collector`](prometheus_client::collector::Collector)s
/// that expose values computed at scrape time (snapshots another thread publishes).
pub mod scrape {
    use super::*;

    /// A counter `name` (exposed as `name_total`) with `value`.
    pub fn counter(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> Result<(), Error> {
        let metric = ConstCounter::new(value);
        metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
    }

    /// A gauge `name` with `value`.
    pub fn gauge(out: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: f64) -> Result<(), Error> {
        let metric = ConstGauge::new(value);
        metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
    }

    /// One series per `(label value, value)`, all under `name{label="..."}`; a counter's
    /// values are whole numbers.
    pub fn family(
        out: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        kind: MetricType,
        label: &str,
        series: impl IntoIterator<Item = (String, f64)>,
    ) -> Result<(), Error> {
        let mut encoder = out.encode_descriptor(name, help, None, kind)?;
        for (label_value, value) in series {
            let labels = [(label, label_value.as_str())];
            let series_encoder = encoder.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value as u64).encode(series_encoder)?,
                _ => ConstGauge::new(value).encode(series_encoder)?,
            }
        }
        Ok(())
    }
}
