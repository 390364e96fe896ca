//! How frames leave the device. One trait, one implementation per carrier; every transport
//! carries the same authenticated protocol frames, and acknowledgements come back through
//! the same transport. Reliability is never the carrier's job: sequence numbers, ACKs and
//! NAKs carry it, which is what makes a lossy carrier (UDP) or a silently dropping one
//! (ZeroMQ PUB/SUB) safe.

mod udp;
mod zmq;

pub use udp::UdpTransport;
pub use zmq::{ZmqTransport, ack_topic};

/// A datagram carrier between the agent and the collector.
pub trait Transport {
    fn send(&self, datagram: &[u8]) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
    /// Receives one datagram into `buf`, returning its length.
    fn recv(&self, buf: &mut [u8]) -> impl std::future::Future<Output = std::io::Result<usize>> + Send;
}

/// The transport chosen in the config.
#[derive(Debug)]
pub enum AnyTransport {
    Udp(UdpTransport),
    Zmq(ZmqTransport),
}

impl Transport for AnyTransport {
    async fn send(&self, datagram: &[u8]) -> std::io::Result<()> {
        match self {
            AnyTransport::Udp(udp) => udp.send(datagram).await,
            AnyTransport::Zmq(zmq) => zmq.send(datagram).await,
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            AnyTransport::Udp(udp) => udp.recv(buf).await,
            AnyTransport::Zmq(zmq) => zmq.recv(buf).await,
        }
    }
}
