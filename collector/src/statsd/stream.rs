//! Stream listeners, TCP and Unix: newline-framed lines, as the reference's TCP server.
//!
//! Unlike the reference (whose leftover buffer grows without bound), every connection is
//! bounded: a line longer than `max_line_bytes` is skipped up to its newline and counted,
//! at most `max_connections` are open at once (more are closed at once, counted), and a
//! connection silent for `idle_timeout_ms` is closed (counted). The server never writes, so
//! a client that never reads costs nothing. Each read that completes lines is one packet.

use super::shards::{Scratch, Shards};
use super::telemetry::{Drop, Telemetry};
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Semaphore;

const READ_BYTES: usize = 64 << 10;

/// Bounds and shared state of every stream connection.
#[derive(Clone, Debug)]
pub struct StreamLimits {
    pub shards: Arc<Shards>,
    pub telemetry: Arc<Telemetry>,
    pub max_line_bytes: usize,
    pub idle_timeout: Duration,
    pub slots: Arc<Semaphore>,
}

/// Accepts TCP connections until `shutdown` changes.
pub async fn serve_tcp(listener: tokio::net::TcpListener, limits: StreamLimits, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            accepted = listener.accept() => {
                if let Ok((stream, peer)) = accepted {
                    spawn_connection(stream, "tcp", Some(peer.ip()), &limits, shutdown.clone());
                }
            }
        }
    }
}

/// Accepts Unix stream connections until `shutdown` changes.
pub async fn serve_unix(listener: tokio::net::UnixListener, limits: StreamLimits, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    spawn_connection(stream, "unix_stream", None, &limits, shutdown.clone());
                }
            }
        }
    }
}

fn spawn_connection<S>(
    stream: S,
    transport: &'static str,
    peer: Option<std::net::IpAddr>,
    limits: &StreamLimits,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + Unpin + Send + 'static,
{
    let Ok(permit) = limits.slots.clone().try_acquire_owned() else {
        limits.telemetry.connections_refused.inc();
        return; // Dropping the stream closes it.
    };
    let limits = limits.clone();
    tokio::spawn(async move {
        limits.telemetry.connections.inc();
        tokio::select! {
            _ = read_lines(stream, transport, peer, &limits) => {}
            _ = shutdown.recv() => {}
        }
        limits.telemetry.connections.dec();
        drop(permit);
    });
}

/// Reads until the peer closes, the connection idles out, or an error.
async fn read_lines<S: AsyncRead + Unpin>(
    mut stream: S,
    transport: &'static str,
    peer: Option<std::net::IpAddr>,
    limits: &StreamLimits,
) {
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut chunk = vec![0u8; READ_BYTES];
    let mut scratch = Scratch::default();
    // Inside a line that was too long: drop bytes up to its newline.
    let mut skipping = false;
    loop {
        let read = match tokio::time::timeout(limits.idle_timeout, stream.read(&mut chunk)).await {
            Err(_) => {
                limits.telemetry.connections_idle_closed.inc();
                return;
            }
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(read)) => read,
        };
        let mut data = &chunk[..read];
        if skipping {
            match data.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    data = &data[at + 1..];
                    skipping = false;
                }
                None => continue,
            }
        }
        buffer.extend_from_slice(data);
        if let Some(last) = buffer.iter().rposition(|&b| b == b'\n') {
            limits.shards.ingest(transport, std::iter::once((&buffer[..=last], peer)), &mut scratch);
            buffer.drain(..=last);
        }
        if buffer.len() > limits.max_line_bytes {
            limits.telemetry.dropped(Drop::LineTooLong, 1);
            buffer.clear();
            skipping = true;
        }
    }
}
