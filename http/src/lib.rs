//! driftlog's HTTP endpoints, shared by every binary: one axum server with bounds on
//! connections, request heads and bodies, and time, plus Prometheus exposition of a
//! `prometheus-client` registry.
//!
//! Every endpoint sits on the network edge (a collector's `/metrics` is one `--http` flag
//! away from the internet), so nothing here trusts a client:
//! - at most [`HttpLimits::max_connections`] connections are served at once; more wait in the
//!   kernel's accept queue;
//! - a request head must arrive within [`HttpLimits::header_read_timeout`] (hyper's timer),
//!   which also closes a keep-alive connection that stays idle that long, so a client that
//!   trickles bytes cannot hold a connection;
//! - a request takes at most [`HttpLimits::request_timeout`] (408 after that), a body at most
//!   [`HttpLimits::max_request_body_bytes`] (413), a head at most
//!   [`HttpLimits::max_head_bytes`];
//! - a connection lives at most [`HttpLimits::max_connection_age`], keep-alive or not.
//!
//! HTTP/1.1 with keep-alive; `HEAD` is answered for every `GET` route (axum does that). There
//! is no TLS and no authentication: bind to localhost (the default everywhere) and put a
//! reverse proxy in front for anything else (the README shows one).

mod limits;
mod metrics;

pub use limits::HttpLimits;
pub use metrics::{PROMETHEUS_CONTENT_TYPE, metrics_router, render, scrape};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// How long connections may finish their current request once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections
/// finish their request (up to two seconds) and returns.
pub async fn serve(listener: TcpListener, router: Router, limits: HttpLimits, shutdown: impl Future<Output = ()>) {
    let router = router
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(RequestBodyLimitLayer::new(limits.max_request_body_bytes));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closed) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        // A slot first: at the bound, connections wait in the kernel's accept queue instead
        // of being accepted and dropped.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let limits = limits.clone();
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true)
                .max_buf_size(limits.max_head_bytes);
            let mut connection = pin!(builder.serve_connection(TokioIo::new(stream), service));
            let age = tokio::time::sleep(limits.max_connection_age);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = closed.changed() => {}
                _ = age => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        });
    }
    let _ = closing.send(true);
    // Every connection task holds a slot until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_millis(100), slots.acquire_many(all)).await;
}

#[cfg(test)]
mod tests;
