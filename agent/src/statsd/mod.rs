//! The local StatsD listener: StatsD that survives outages. Applications send StatsD (or
//! DogStatsD) datagrams to the agent over UDP or a Unix datagram socket; every sample becomes
//! an event stamped with the device's clocks when it arrives, is committed to the outbox on
//! its own stream ([`STATSD_STREAM`]) and sent by the reliable transport like every event.
//! While the collector is unreachable the samples wait in the outbox; the collector
//! aggregates them per device by their time (a counter incremented offline is counted in the
//! interval it happened in), not by when they arrive.
//!
//! How a sample travels in an event (kind, rate, tags) is `driftlog_protocol::statsd::event`.
//!
//! Bounded and never blocking: a datagram longer than `max_packet_bytes` is dropped, and
//! one that finds the agent's queue full (`ingest.queue_events`) is dropped rather than
//! waited for, both counted; a bad sample is counted by reason and the rest of its line and
//! datagram are kept. A DogStatsD `|T` does not move a sample's time: the device clock is
//! the time source.

mod counters;

pub use counters::{StatsdCounters, StatsdStatus};

use crate::clock::{mono_now, wall_now};
use crate::driver::Submission;
use driftlog_protocol::sender::OwnedEvent;
use driftlog_protocol::statsd::event::{STATSD_STREAM, sample_to_payload};
use driftlog_protocol::statsd::{Dialect, lines, parse_line};
use std::path::Path;
use std::sync::Arc;
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::sync::{mpsc, watch};

/// What every listener shares.
#[derive(Debug)]
pub struct Listener {
    pub dialect: Dialect,
    pub max_packet_bytes: usize,
    pub counters: Arc<StatsdCounters>,
    pub submissions: mpsc::Sender<Submission>,
}

impl Listener {
    /// One datagram: parse, stamp, hand to the driver (or count why not).
    pub fn packet(&self, packet: &[u8]) {
        let counters = &self.counters;
        counters.packet();
        if packet.len() > self.max_packet_bytes {
            counters.dropped(counters::Dropped::PacketTooLarge, 1);
            return;
        }
        // One stamp for the datagram: its samples arrived together.
        let (mono, wall) = (mono_now(), Some(wall_now()));
        let mut events = Vec::new();
        for line in lines(packet) {
            counters.line();
            for sample in parse_line(line, self.dialect) {
                match sample.map(|sample| sample_to_payload(&sample)) {
                    Ok(Ok(payload)) => events.push(OwnedEvent { mono, wall, payload }),
                    Ok(Err(refusal)) => counters.refused(refusal),
                    Err(error) => counters.bad(error.reason),
                }
            }
        }
        if events.is_empty() {
            return;
        }
        let count = events.len() as u64;
        match self.submissions.try_send(Submission { stream: STATSD_STREAM, events, reply: None }) {
            Ok(()) => counters.samples(count),
            Err(mpsc::error::TrySendError::Full(_)) => counters.dropped(counters::Dropped::QueueFull, count),
            Err(mpsc::error::TrySendError::Closed(_)) => counters.dropped(counters::Dropped::ShuttingDown, count),
        }
    }
}

/// Binds the UDP socket (with `SO_RCVBUF` at `receive_buffer_bytes`).
pub fn bind_udp(address: std::net::SocketAddr, receive_buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    // The kernel may clamp it; a smaller buffer is not a reason to refuse to start.
    let _ = socket.set_recv_buffer_size(receive_buffer_bytes);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    UdpSocket::from_std(socket.into())
}

/// Binds the Unix datagram socket at `path`, replacing a stale socket file (and nothing else).
pub fn bind_unix(path: &Path) -> std::io::Result<UnixDatagram> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    UnixDatagram::bind(path)
}

/// Receives UDP datagrams until `shutdown`.
pub async fn serve_udp(socket: UdpSocket, listener: Arc<Listener>, mut shutdown: watch::Receiver<bool>) {
    // One byte more than the largest datagram taken: one that fills it was larger.
    let mut buf = vec![0u8; listener.max_packet_bytes + 1];
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, _)) => listener.packet(&buf[..len]),
                Err(error) => tracing::debug!(%error, "StatsD UDP receive failed"),
            },
        }
    }
}

/// Receives Unix datagrams until `shutdown`.
pub async fn serve_unix(socket: UnixDatagram, listener: Arc<Listener>, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; listener.max_packet_bytes + 1];
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            received = socket.recv(&mut buf) => match received {
                Ok(len) => listener.packet(&buf[..len]),
                Err(error) => tracing::debug!(%error, "StatsD Unix datagram receive failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlog_protocol::sender::OwnedPayload;

    fn listener(queue: usize) -> (Listener, mpsc::Receiver<Submission>) {
        let (submissions, received) = mpsc::channel(queue);
        let listener = Listener {
            dialect: Dialect::Etsy,
            max_packet_bytes: 64,
            counters: Arc::new(StatsdCounters::default()),
            submissions,
        };
        (listener, received)
    }

    #[test]
    fn samples_become_events_on_their_stream_and_bad_ones_are_counted_by_reason() {
        let (listener, mut received) = listener(4);
        listener.packet(b"a:1|c:2|ms\nbad\nb:x|g\nk:Infinity|c\n\nc:3|c|@0.5");
        let submission = received.try_recv().expect("one submission per datagram");
        assert_eq!(submission.stream, STATSD_STREAM);
        let kinds: Vec<&OwnedPayload> = submission.events.iter().map(|e| &e.payload).collect();
        assert!(matches!(kinds[0], OwnedPayload::Counter { name, value, .. } if name == "a" && *value == 1.0));
        assert!(matches!(kinds[1], OwnedPayload::Timer { name, value, .. } if name == "a" && *value == 2.0));
        assert!(matches!(kinds[2], OwnedPayload::Counter { name, value, .. } if name == "c" && *value == 6.0));
        assert!(submission.events.iter().all(|e| e.mono == submission.events[0].mono && e.wall.is_some()));
        let status = listener.counters.status();
        assert_eq!((status.packets, status.lines, status.samples), (1, 5, 3));
        assert_eq!(status.bad_samples.get("missing_value"), Some(&1));
        assert_eq!(status.bad_samples.get("bad_value"), Some(&1));
        assert_eq!(status.bad_samples.get("non_finite_value"), Some(&1));
    }

    #[test]
    fn the_listener_never_waits_and_counts_what_it_drops() {
        let (listener, mut received) = listener(1);
        listener.packet(b"a:1|c");
        listener.packet(b"a:1|c\nb:1|c");
        listener.packet(&[b'x'; 65]);
        let status = listener.counters.status();
        assert_eq!(status.dropped.get("queue_full"), Some(&2));
        assert_eq!(status.dropped.get("packet_too_large"), Some(&1));
        assert_eq!((status.packets, status.samples), (3, 1));
        assert!(received.try_recv().is_ok());
        drop(received);
        listener.packet(b"a:1|c");
        assert_eq!(listener.counters.status().dropped.get("shutting_down"), Some(&1));
        // Garbage never panics.
        listener.packet(&[0xff, b':', b'|', b'\n', 0, 0x80]);
    }
}
