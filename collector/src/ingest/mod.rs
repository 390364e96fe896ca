//! Sources of agent frames, one module each behind [`Source`]: UDP unicast (`SO_REUSEPORT`
//! sockets with `recvmmsg`), UDP multicast, ZeroMQ SUB. Each hands received datagrams to the
//! acceptor in [`Batch`]es over one bounded queue and gives it a [`ReplyPath`], so ACKs and
//! NAKs go back the way the frame came.

mod claim;
pub mod kernel_drops;
pub mod udp;
pub mod zmq;

use driftlog_protocol::DeviceId;
use std::net::SocketAddr;

/// Where a datagram came from: the source's index and, for UDP, the peer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub source: u16,
    pub peer: Option<SocketAddr>,
}

/// Datagrams received together, packed in one buffer.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// `(start, len, route)` into `bytes`.
    pub datagrams: Vec<(u32, u32, Route)>,
}

impl Batch {
    /// The receive time is not stamped here: the acceptor reads its one clock when it takes
    /// the batch (see [`crate::wall_clock`]).
    pub fn with_capacity(datagrams: usize, bytes: usize) -> Batch {
        Batch { bytes: Vec::with_capacity(bytes), datagrams: Vec::with_capacity(datagrams) }
    }

    pub fn push(&mut self, datagram: &[u8], route: Route) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(datagram);
        self.datagrams.push((start, datagram.len() as u32, route));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Route)> {
        self.datagrams
            .iter()
            .map(|(start, len, route)| (&self.bytes[*start as usize..(*start + *len) as usize], *route))
    }

    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }
}

pub type Sink = std::sync::mpsc::SyncSender<Batch>;

/// Stops every source (and with them, once their queues close, the acceptor).
pub use crate::shutdown::Shutdown;

/// Sends an ACK or NAK back to a device.
pub trait ReplyPath: Send + std::fmt::Debug {
    /// Best effort: the protocol re-sends what is lost. Returns false when the reply was
    /// dropped (counted by the caller).
    fn send(&mut self, device: DeviceId, peer: Option<SocketAddr>, datagram: &[u8]) -> bool;
}

/// A running source: its reply path and the threads to join on shutdown.
#[derive(Debug)]
pub struct Started {
    pub reply: Box<dyn ReplyPath>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    /// Where it listens, for logs and tests.
    pub local: String,
}

pub trait Source: Send {
    fn name(&self) -> &'static str;
    /// Binds and starts receiving into `sink` under source index `id`.
    fn start(self: Box<Self>, id: u16, sink: Sink, shutdown: Shutdown) -> anyhow::Result<Started>;
}
