//! Datagram listeners: UDP (several `SO_REUSEPORT` sockets, one receive thread each,
//! `recvmmsg` batches, kernel drops read per socket once a second) and a Unix datagram
//! socket. Each thread parses and aggregates what it received itself: no queue between
//! the socket and the shards, so the kernel's receive buffer (whose drops are counted) is
//! the only place a burst waits.

use super::shards::{Scratch, Shards};
use super::telemetry::{Drop, Telemetry};
use crate::ingest::kernel_drops::DropWatch;
use crate::ingest::udp::{Received, bind, receive};
use nix::sys::socket::{MultiHeaders, SockaddrStorage};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Datagrams per `recvmmsg` call.
const BATCH: usize = 32;
const READ_TIMEOUT: Duration = Duration::from_millis(100);
const DROPS_INTERVAL: Duration = Duration::from_secs(1);
/// After a batch that did not fill, wait this long before the next call, so the next one
/// takes what arrived meanwhile: a thread woken per datagram spent most of its CPU in
/// context switches (`perf`: 42 % of the collector at 40 000 datagrams/s). A millisecond
/// of delay is nothing against a flush interval, and at 500 000 datagrams/s it is well
/// inside the receive buffer.
const COALESCE: Duration = Duration::from_millis(1);

/// What a receive thread needs besides its socket.
#[derive(Clone, Debug)]
pub struct Receiving {
    pub shards: Arc<Shards>,
    pub telemetry: Arc<Telemetry>,
    pub shutdown: crate::shutdown::Shutdown,
    pub max_packet_bytes: usize,
}

/// Binds `sockets` UDP sockets to `listen` and starts their threads; returns the bound
/// address.
pub fn start_udp(
    listen: SocketAddr,
    sockets: usize,
    receive_buffer_bytes: usize,
    receiving: &Receiving,
    threads: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<SocketAddr> {
    let mut address = listen;
    let mut bound = Vec::new();
    for _ in 0..sockets.max(1) {
        let socket: std::net::UdpSocket = bind(address, receive_buffer_bytes)?.into();
        // Port 0: the first socket picks the port, the others share it.
        address = socket.local_addr()?;
        bound.push(socket);
    }
    for (index, socket) in bound.into_iter().enumerate() {
        // Watched from here, so drops before the thread first runs are counted too.
        let drops = DropWatch::new(&socket);
        let receiving = receiving.clone();
        let name = format!("statsd-udp-{index}");
        let label = format!("udp-{index}");
        threads.push(std::thread::Builder::new().name(name).spawn(move || {
            receive_loop(socket.as_raw_fd(), "udp", Some((drops, label)), &receiving);
            drop(socket);
        })?);
    }
    Ok(address)
}

/// Binds a Unix datagram socket at `path` (replacing a stale socket file) and starts its
/// thread.
pub fn start_unix(path: &Path, receiving: &Receiving, threads: &mut Vec<JoinHandle<()>>) -> anyhow::Result<()> {
    remove_stale_socket(path)?;
    let socket = std::os::unix::net::UnixDatagram::bind(path)
        .map_err(|error| anyhow::anyhow!("cannot bind Unix datagram socket {}: {error}", path.display()))?;
    socket.set_read_timeout(Some(READ_TIMEOUT))?;
    let receiving = receiving.clone();
    threads.push(std::thread::Builder::new().name("statsd-unixgram".into()).spawn(move || {
        receive_loop(socket.as_raw_fd(), "unix_datagram", None, &receiving);
        drop(socket);
    })?);
    Ok(())
}

/// Removes `path` if it is a socket file left by an earlier run; anything else there is an
/// error rather than something to delete.
pub fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(std::fs::remove_file(path)?),
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
}

fn receive_loop(fd: RawFd, transport: &'static str, mut drops: Option<(DropWatch, String)>, receiving: &Receiving) {
    // One byte more than the largest packet taken: a datagram that fills its slot was
    // larger, and is dropped and counted rather than parsed cut.
    let slot_bytes = receiving.max_packet_bytes + 1;
    let mut slots = vec![0u8; BATCH * slot_bytes];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut received: Vec<Received> = Vec::with_capacity(BATCH);
    let mut scratch = Scratch::default();
    let mut next_drops_read = Instant::now() + DROPS_INTERVAL;
    let poll_drops = |drops: &mut Option<(DropWatch, String)>| {
        if let Some((watch, label)) = drops {
            let new = watch.poll();
            if new > 0 {
                receiving.telemetry.kernel_drops(label, new);
            }
        }
    };
    while !receiving.shutdown.is_shutdown() {
        if Instant::now() >= next_drops_read {
            poll_drops(&mut drops);
            next_drops_read = Instant::now() + DROPS_INTERVAL;
        }
        match receive(fd, &mut headers, &mut slots, slot_bytes, &mut received) {
            Ok(()) => {}
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                tracing::warn!(%error, transport, "StatsD receive failed");
                std::thread::sleep(READ_TIMEOUT);
                continue;
            }
        }
        let mut oversized = 0;
        let packets = received.iter().zip(slots.chunks(slot_bytes)).filter_map(|((len, peer), slot)| {
            if *len >= slot_bytes {
                oversized += 1;
                None
            } else {
                Some((&slot[..*len], peer.map(|peer| peer.ip())))
            }
        });
        receiving.shards.ingest(transport, packets, &mut scratch);
        for _ in 0..oversized {
            receiving.shards.count_unparsed_packet(transport);
            receiving.telemetry.dropped(Drop::PacketTooLarge, 1);
        }
        if received.len() < BATCH {
            std::thread::sleep(COALESCE);
        }
    }
    poll_drops(&mut drops);
}
