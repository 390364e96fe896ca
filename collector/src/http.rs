//! The collector's HTTP endpoints (axum, through `driftlog-http`'s bounded server):
//! `/metrics` (the registry), `/health`, and `/log/tail|stats|replay` so the `log` commands
//! can read a log the running collector holds open. No authentication: keep it on localhost
//! (the default) or behind a reverse proxy.

use crate::config::CollectorConfig;
use crate::log::Log;
use crate::metrics::Metrics;
use crate::tail::read_lines;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::sync::Arc;

/// Most offsets one `/log/tail` request returns.
const TAIL_MAX: u64 = 10_000;

#[derive(Clone, Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    log: Arc<Log>,
    config: Arc<CollectorConfig>,
}

/// The collector's routes, `/metrics` included.
pub fn router(registry: Arc<Registry>, metrics: Arc<Metrics>, log: Arc<Log>, config: Arc<CollectorConfig>) -> Router {
    let shared = Shared { metrics, log, config };
    let own = Router::new()
        .route("/health", get(health))
        .route("/log/tail", get(log_tail))
        .route("/log/stats", get(log_stats))
        .route("/log/replay", get(log_replay))
        .with_state(shared);
    driftlog_http::metrics_router(registry).merge(own)
}

/// How long `/health` stays degraded after a bound refused a frame.
pub const DEGRADED_FOR_MS: u64 = 60_000;

/// What `/health` reports, so a load balancer or a watchdog sees it:
/// - 503 `not_acknowledging` while the log refuses writes (full, storage failing);
/// - 429 `degraded` for a minute after a bound on streams (`too_many_streams`,
///   `device_quota`) refused an authenticated frame: devices' work is being turned away
///   (Consul reads 429 as "warning");
/// - 200 `ok` otherwise.
pub fn health_answer(metrics: &Metrics, now_unix_ms: u64) -> (StatusCode, String) {
    let accepting = metrics.is_log_accepting();
    let snapshot = metrics.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let refused_ago_ms = snapshot.bound_refused_at_unix_ms.map(|at| now_unix_ms.saturating_sub(at));
    let degraded = refused_ago_ms.is_some_and(|ago| ago < DEGRADED_FOR_MS);
    let (status, code) = match (accepting, degraded) {
        (false, _) => ("not_acknowledging", StatusCode::SERVICE_UNAVAILABLE),
        (true, true) => ("degraded", StatusCode::TOO_MANY_REQUESTS),
        (true, false) => ("ok", StatusCode::OK),
    };
    let rejects = &snapshot.endpoint.rejects;
    let body = serde_json::json!({
        "status": status,
        "log_accepting": accepting,
        "log_next_offset": metrics.log_next_offset.get(),
        "bound_refused_seconds_ago": refused_ago_ms.map(|ms| ms / 1_000),
        "refused_too_many_streams": rejects.get(driftlog_protocol::wire::Reject::TooManyStreams),
        "refused_device_quota": rejects.get(driftlog_protocol::wire::Reject::DeviceQuota),
    });
    (code, format!("{body}\n"))
}

async fn health(State(shared): State<Shared>) -> Response {
    let (status, body) = health_answer(&shared.metrics, crate::wall_clock::now_unix_ms());
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize)]
struct TailQuery {
    #[serde(default)]
    from: u64,
    max: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct FromQuery {
    #[serde(default)]
    from: u64,
}

/// Runs a blocking log read off the runtime and answers with its NDJSON, or 500.
async fn blocking_answer<E: std::fmt::Display + Send + 'static>(
    read: impl FnOnce() -> Result<String, E> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(body)) => ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// `/log/tail?from=N&max=M`: a head line with the next offset, then one record per line.
async fn log_tail(State(shared): State<Shared>, Query(query): Query<TailQuery>) -> Response {
    let max = query.max.unwrap_or(1_000).min(TAIL_MAX) as usize;
    blocking_answer(move || {
        read_lines(&shared.log, query.from, max).map(|(lines, next)| {
            let mut body = format!("{{\"next_offset\":{next}}}\n");
            for line in lines {
                body.push_str(&line.to_string());
                body.push('\n');
            }
            body
        })
    })
    .await
}

async fn log_stats(State(shared): State<Shared>) -> Response {
    blocking_answer(move || {
        crate::log::census::census(&shared.log).map(|census| serde_json::to_string(&census).unwrap_or_default() + "\n")
    })
    .await
}

async fn log_replay(State(shared): State<Shared>, Query(query): Query<FromQuery>) -> Response {
    blocking_answer(move || {
        crate::replay::replay(
            &shared.log,
            query.from,
            &shared.config.windows,
            &shared.config.watermark,
            shared.config.statsd_spec(),
        )
        .map(|summary| serde_json::to_string(&summary).unwrap_or_default() + "\n")
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_log_and_the_bounds() {
        let metrics = Metrics::new();
        assert_eq!(health_answer(&metrics, 1_000_000).0, StatusCode::OK);
        metrics.snapshot.lock().unwrap().bound_refused_at_unix_ms = Some(1_000_000);
        let (status, body) = health_answer(&metrics, 1_030_000);
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(body.contains("\"degraded\"") && body.contains("\"bound_refused_seconds_ago\":30"), "{body}");
        assert_eq!(health_answer(&metrics, 1_000_000 + DEGRADED_FOR_MS).0, StatusCode::OK, "a minute later");
        metrics.set_log_accepting(false);
        let (status, body) = health_answer(&metrics, 1_030_000);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"not_acknowledging\""), "{body}");
    }
}
