//! The server on a real socket, driven by a raw client: what a scraper, a slow client and a
//! client that sends too much get.

use super::*;
use axum::routing::post;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(limits: HttpLimits) -> (SocketAddr, Counter, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let mut registry = Registry::default();
    let counter: Counter = Counter::default();
    registry.register("driftlog_test_things", "Things counted.", counter.clone());
    let router = metrics_router(Arc::new(registry)).route("/echo", post(|body: String| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    let server = tokio::spawn(serve(listener, router, limits, async move {
        let _ = stopped.changed().await;
    }));
    (address, counter, stop, server)
}

/// Reads one response (head and a `Content-Length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let body_start = end + 4;
            while buf.len() < body_start + length {
                let read = stream.read(&mut chunk).await.ok()?;
                if read == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..read]);
            }
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            let body = String::from_utf8_lossy(&buf[body_start..(body_start + length).min(buf.len())]).to_string();
            return Some((status, head, body));
        }
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..read]);
    }
}

#[tokio::test]
async fn metrics_are_served_with_keep_alive_and_head() {
    let (address, counter, stop, server) = start(HttpLimits::default()).await;
    counter.inc_by(7);
    let mut stream = TcpStream::connect(address).await.unwrap();
    // Two requests on one connection: keep-alive.
    for expected in [7, 8] {
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (status, head, body) = read_response(&mut stream).await.unwrap();
        assert_eq!(status, 200);
        assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
        assert!(body.contains(&format!("driftlog_test_things_total {expected}\n")), "{body}");
        assert!(body.contains("# TYPE driftlog_test_things_total counter\n"), "{body}");
        counter.inc();
    }
    // HEAD: the head of the GET, no body.
    stream.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..read]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body after a HEAD: {text}");
    // Unknown routes are 404, a body over the bound 413.
    stream.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_response(&mut stream).await.unwrap().0, 404);
    let mut big = TcpStream::connect(address).await.unwrap();
    let body = "x".repeat(HttpLimits::default().max_request_body_bytes + 1);
    let request = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    big.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut big).await.unwrap().0, 413);
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_cut_off_and_frees_its_slot() {
    let limits =
        HttpLimits { max_connections: 1, header_read_timeout: Duration::from_millis(300), ..HttpLimits::default() };
    let (address, _, stop, server) = start(limits).await;
    // The only slot, taken by a client that trickles a request head and never finishes it.
    let mut slow = TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /metr").await.unwrap();
    let started = Instant::now();
    let mut next = TcpStream::connect(address).await.unwrap();
    next.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(10), read_response(&mut next)).await.unwrap();
    assert_eq!(answered.map(|r| r.0), Some(200));
    // Served only once the slow client's head timed out and freed the slot.
    assert!(started.elapsed() >= Duration::from_millis(250), "served after {:?}", started.elapsed());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow connection was closed");
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
}
