//! UDP unicast and multicast: sockets bound with `SO_REUSEPORT` (the kernel spreads peers
//! over them by address hash, so each core gets a receive thread), drained with `recvmmsg`;
//! each thread reads its socket's kernel receive-buffer drops once a second.
//!
//! The receive threads block in `recvmmsg` with a socket timeout so they notice shutdown;
//! ACKs and NAKs are sent on the socket the frame arrived on.

use super::kernel_drops::DropWatch;
use super::{Batch, ReplyPath, Route, Shutdown, Sink, Source, Started};
use crate::metrics::Metrics;
use anyhow::Context;
use driftlog_protocol::DeviceId;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::IoSliceMut;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// How often each receive thread reads its socket's kernel drop count.
const DROPS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct UdpSource {
    pub listen: SocketAddr,
    pub sockets: usize,
    pub receive_buffer_bytes: usize,
    pub batch_datagrams: usize,
    /// Larger datagrams are received truncated to one byte more, which the endpoint rejects
    /// as oversized (counted); so each receive slot is small and a batch's slots are
    /// contiguous, which keeps a `recvmmsg` call on a few pages instead of one per datagram.
    pub max_datagram_bytes: usize,
    /// Join this group on this interface (multicast source).
    pub multicast: Option<(Ipv4Addr, Ipv4Addr)>,
    pub metrics: Arc<Metrics>,
}

pub(crate) fn bind(listen: SocketAddr, receive_buffer_bytes: usize) -> anyhow::Result<Socket> {
    let socket = Socket::new(Domain::for_address(listen), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    // SO_RCVBUFFORCE passes the rmem_max clamp when we run as root; otherwise the clamp applies.
    if setsockopt(&socket, sockopt::RcvBufForce, &receive_buffer_bytes).is_err() {
        socket.set_recv_buffer_size(receive_buffer_bytes)?;
    }
    // Only the groups this socket joins itself. Linux's default (IP_MULTICAST_ALL on) hands a
    // socket bound to the wildcard address every group joined anywhere on the host at its
    // port: a unicast listener on 0.0.0.0 at the multicast port would take each multicast
    // frame once more per socket.
    if listen.is_ipv4() {
        socket.set_multicast_all_v4(false).context("IP_MULTICAST_ALL")?;
    } else {
        // Dual-stack sockets get IPv4 multicast too; best effort where the option is refused.
        let _ = socket.set_multicast_all_v4(false);
    }
    socket.set_read_timeout(Some(READ_TIMEOUT))?;
    socket.bind(&listen.into()).with_context(|| format!("cannot bind UDP {listen}"))?;
    Ok(socket)
}

impl Source for UdpSource {
    fn name(&self) -> &'static str {
        if self.multicast.is_some() { "multicast" } else { "udp" }
    }

    fn start(self: Box<Self>, id: u16, sink: Sink, shutdown: Shutdown) -> anyhow::Result<Started> {
        let mut sockets: Vec<UdpSocket> = Vec::new();
        let (mut listen, claim) = match self.multicast {
            None => {
                let (listen, claim) = super::claim::claim(self.listen)?;
                (listen, Some(claim))
            }
            Some(_) => (self.listen, None),
        };
        for _ in 0..self.sockets.max(1) {
            let socket: UdpSocket = bind(listen, self.receive_buffer_bytes)?.into();
            // Port 0: the first socket picks the port, the others share it.
            listen = socket.local_addr()?;
            if let Some((group, interface)) = self.multicast {
                socket.join_multicast_v4(&group, &interface).with_context(|| format!("cannot join {group}"))?;
            }
            sockets.push(socket);
        }
        let mut threads = Vec::new();
        let mut reply_sockets = Vec::new();
        for (index, socket) in sockets.into_iter().enumerate() {
            reply_sockets.push(socket.try_clone()?);
            // Watched from here, not from inside the thread: a thread that starts late would
            // take drops that happened before it ran as its baseline and never count them.
            let drops = DropWatch::new(&socket);
            let (sink, shutdown, metrics) = (sink.clone(), shutdown.clone(), self.metrics.clone());
            let shape = BatchShape { datagrams: self.batch_datagrams, slot_bytes: self.max_datagram_bytes + 1 };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("udp-recv-{index}"))
                    .spawn(move || receive_loop(socket, drops, id, shape, sink, shutdown, metrics))?,
            );
        }
        // Replies for a peer go out of the socket the kernel hashes that peer to; any of
        // them works for UDP, and the first is as good as any.
        Ok(Started {
            reply: Box::new(UdpReply { sockets: reply_sockets, _claim: claim }),
            threads,
            local: listen.to_string(),
        })
    }
}

/// How many datagrams one `recvmmsg` takes, and the bytes each may have.
#[derive(Clone, Copy, Debug)]
struct BatchShape {
    datagrams: usize,
    slot_bytes: usize,
}

fn receive_loop(
    socket: UdpSocket,
    mut drops: DropWatch,
    source: u16,
    shape: BatchShape,
    sink: Sink,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) {
    let slot_bytes = shape.slot_bytes.max(1);
    let mut slots = vec![0u8; shape.datagrams * slot_bytes];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(shape.datagrams, None);
    let mut received = Vec::with_capacity(shape.datagrams);
    let fd = socket.as_raw_fd();
    let mut next_drops_read = Instant::now() + DROPS_INTERVAL;
    while !shutdown.is_shutdown() {
        if Instant::now() >= next_drops_read {
            metrics.kernel_drops.inc_by(drops.poll());
            next_drops_read = Instant::now() + DROPS_INTERVAL;
        }
        match receive(fd, &mut headers, &mut slots, slot_bytes, &mut received) {
            Ok(()) => {}
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                tracing::warn!(%error, "recvmmsg failed");
                std::thread::sleep(READ_TIMEOUT);
                continue;
            }
        };
        let bytes: usize = received.iter().map(|(len, _)| *len).sum();
        // Sized once, so filling it does not reallocate.
        let mut batch = Batch::with_capacity(received.len(), bytes);
        for ((len, peer), slot) in received.drain(..).zip(slots.chunks(slot_bytes)) {
            batch.push(&slot[..len.min(slot.len())], Route { source, peer });
        }
        let bytes = bytes as u64;
        metrics.datagrams_received.inc_by(batch.len() as u64);
        metrics.datagram_bytes_received.inc_by(bytes);
        if !batch.is_empty() && sink.send(batch).is_err() {
            return; // The acceptor has gone: shutting down.
        }
    }
    metrics.kernel_drops.inc_by(drops.poll());
}

/// One received datagram: `(length, peer)`.
pub(crate) type Received = (usize, Option<SocketAddr>);

/// One `recvmmsg` call: waits for the first datagram (up to the socket timeout), then takes
/// what else is queued, one per `slot_bytes` of `slots`. Fills `out` with one [`Received`]
/// per datagram, in slot order.
pub(crate) fn receive(
    fd: std::os::fd::RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    slots: &mut [u8],
    slot_bytes: usize,
    out: &mut Vec<Received>,
) -> nix::Result<()> {
    out.clear();
    let mut slices: Vec<[IoSliceMut<'_>; 1]> =
        slots.chunks_mut(slot_bytes).map(|slot| [IoSliceMut::new(slot)]).collect();
    let results = recvmmsg(fd, headers, slices.iter_mut(), MsgFlags::MSG_WAITFORONE, None)?;
    for message in results {
        let peer = message.address.and_then(|address| {
            address
                .as_sockaddr_in()
                .map(|v4| SocketAddr::V4((*v4).into()))
                .or_else(|| address.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
        });
        out.push((message.bytes, peer));
    }
    Ok(())
}

#[derive(Debug)]
struct UdpReply {
    sockets: Vec<UdpSocket>,
    /// The unicast address stays claimed as long as replies can go out.
    _claim: Option<super::claim::AddressClaim>,
}

impl ReplyPath for UdpReply {
    fn send(&mut self, _device: DeviceId, peer: Option<SocketAddr>, datagram: &[u8]) -> bool {
        match (peer, self.sockets.first()) {
            (Some(peer), Some(socket)) => socket.send_to(datagram, peer).is_ok(),
            _ => false,
        }
    }
}
