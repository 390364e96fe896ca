//! `GET /metrics` (Prometheus text) and `GET /health` on a local port. A request per
//! connection, bounded in size and in concurrent connections; no authentication, so keep it
//! on localhost or behind a proxy.

use crate::config::CollectorConfig;
use crate::log::Log;
use crate::metrics::Metrics;
use crate::tail::{query_u64, read_lines};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

const MAX_CONNECTIONS: usize = 32;

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `/health` is 200 while the log takes writes and 503 while the collector has stopped
/// acknowledging (log full or storage failing), so a load balancer or systemd watchdog sees it.
pub fn answer(request: &str, metrics: &Metrics) -> String {
    if request.starts_with("GET /metrics ") {
        response("200 OK", "text/plain; version=0.0.4", &metrics.render())
    } else if request.starts_with("GET /health ") || request.starts_with("GET /health?") {
        let accepting = metrics.log_accepting.load(Ordering::Relaxed);
        let body = format!(
            "{{\"status\":\"{}\",\"log_accepting\":{accepting},\"log_next_offset\":{}}}\n",
            if accepting { "ok" } else { "not_acknowledging" },
            metrics.log_next_offset.load(Ordering::Relaxed)
        );
        let status = if accepting { "200 OK" } else { "503 Service Unavailable" };
        response(status, "application/json", &body)
    } else {
        response("404 Not Found", "text/plain", "")
    }
}

/// Most offsets one `/log/tail` request returns.
const TAIL_MAX: u64 = 10_000;

/// `/log/tail?from=N&max=M`, `/log/stats`, `/log/replay?from=N`: the `log` commands while the
/// collector holds the file. Blocking reads; call from a blocking task.
pub fn answer_log(request: &str, log: &Log, config: &CollectorConfig) -> Option<String> {
    let path = request.strip_prefix("GET ")?.split_whitespace().next()?;
    let result = if path.starts_with("/log/tail") {
        let from = query_u64(path, "from").unwrap_or(0);
        let max = query_u64(path, "max").unwrap_or(1_000).min(TAIL_MAX) as usize;
        read_lines(log, from, max).map(|(lines, next)| {
            let mut body = format!("{{\"next_offset\":{next}}}\n");
            for line in lines {
                body.push_str(&line.to_string());
                body.push('\n');
            }
            body
        })
    } else if path.starts_with("/log/stats") {
        crate::log::census::census(log).map(|census| serde_json::to_string(&census).unwrap_or_default() + "\n")
    } else if path.starts_with("/log/replay") {
        let from = query_u64(path, "from").unwrap_or(0);
        crate::replay::replay(log, from, &config.windows, &config.watermark, config.statsd_spec())
            .map(|summary| serde_json::to_string(&summary).unwrap_or_default() + "\n")
    } else {
        return None;
    };
    Some(match result {
        Ok(body) => response("200 OK", "application/x-ndjson", &body),
        Err(error) => response("500 Internal Server Error", "text/plain", &format!("{error}\n")),
    })
}

/// Reads until the end of the request head (or 1 KiB: only the request line matters).
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

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    log: Arc<Log>,
    config: Arc<CollectorConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                let (metrics, log, config) = (metrics.clone(), log.clone(), config.clone());
                tokio::spawn(async move {
                    let read = tokio::time::timeout(std::time::Duration::from_secs(5), read_head(&mut stream)).await;
                    let Ok(Ok(request)) = read else { return };
                    let text = if request.starts_with("GET /log/") {
                        let answered = tokio::task::spawn_blocking(move || answer_log(&request, &log, &config)).await;
                        answered.ok().flatten().unwrap_or_else(|| response("404 Not Found", "text/plain", ""))
                    } else {
                        answer(&request, &metrics)
                    };
                    let _ = stream.write_all(text.as_bytes()).await;
                    drop(permit);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_log_and_metrics_render() {
        let metrics = Metrics::new();
        metrics.events_committed.store(5, Ordering::Relaxed);
        assert!(answer("GET /health HTTP/1.1\r\n", &metrics).starts_with("HTTP/1.1 200"));
        assert!(answer("GET /metrics HTTP/1.1\r\n", &metrics).contains("driftlog_events_committed_total 5\n"));
        metrics.log_accepting.store(false, Ordering::Relaxed);
        assert!(answer("GET /health HTTP/1.1\r\n", &metrics).starts_with("HTTP/1.1 503"));
        assert!(answer("POST / HTTP/1.1\r\n", &metrics).starts_with("HTTP/1.1 404"));
    }
}
