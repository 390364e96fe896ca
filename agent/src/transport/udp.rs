//! UDP unicast and multicast.
//!
//! - Unicast: frames to the collector's address.
//! - Multicast: frames to a group, with `IP_MULTICAST_IF` set explicitly, since a host or
//!   namespace without a multicast route fails with `ENETUNREACH` otherwise; the collector
//!   answers by unicast to the source address.

use super::Transport;
use crate::config::{TransportKind, UplinkSection};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

/// UDP unicast or multicast.
#[derive(Debug)]
pub struct UdpTransport {
    socket: tokio::net::UdpSocket,
    destination: SocketAddr,
}

impl UdpTransport {
    /// Binds an ephemeral local port for frames out and acknowledgements back.
    pub fn bind(config: &UplinkSection) -> io::Result<UdpTransport> {
        let destination = config.address;
        let domain = if destination.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        if config.transport == TransportKind::Multicast {
            let interface = config.multicast_interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
            socket.set_multicast_if_v4(&interface)?;
            socket.set_multicast_ttl_v4(config.multicast_ttl)?;
            socket.set_multicast_loop_v4(config.multicast_loop)?;
        }
        let local: SocketAddr = if destination.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        socket.bind(&local.into())?;
        Ok(UdpTransport { socket: tokio::net::UdpSocket::from_std(socket.into())?, destination })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl Transport for UdpTransport {
    async fn send(&self, datagram: &[u8]) -> io::Result<()> {
        self.socket.send_to(datagram, self.destination).await.map(|_| ())
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // Multicast answers come from the collector's unicast address, so the source is not
        // checked against the destination: the MAC decides what is ours.
        let (len, _from) = self.socket.recv_from(buf).await?;
        Ok(len)
    }
}
