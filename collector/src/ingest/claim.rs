//! One collector per UDP address. The receive sockets share their address with
//! `SO_REUSEPORT` (one per core), and Linux lets any process of the same user join such a
//! group: a second collector started on the same address (with another data dir) would run
//! without complaint while the kernel split the devices between the two logs. So before
//! binding, a collector claims the address:
//!
//! - a probe socket bound without `SO_REUSEPORT`/`SO_REUSEADDR` fails if anything holds the
//!   address, or an overlapping one (`0.0.0.0:P` against `127.0.0.1:P`);
//! - an abstract Unix socket named after the address is held for the life of the process
//!   (per network namespace, like the UDP port, and released however the process ends), so
//!   two collectors starting at the same moment cannot both pass the probe.
//!
//! Multicast sockets are not claimed: every socket in a group gets every datagram.

use anyhow::Context;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;

/// Held while the collector listens on the address.
#[derive(Debug)]
pub(crate) struct AddressClaim {
    _lock: UnixDatagram,
}

fn taken(listen: SocketAddr) -> anyhow::Error {
    anyhow::anyhow!(
        "UDP {listen} is already in use (another driftlog-collector, or another program); two collectors on one \
         address would split the devices between their logs: stop the other one or choose another --listen"
    )
}

/// Claims `listen` (port 0 picks a free port); returns the address to bind.
pub(crate) fn claim(listen: SocketAddr) -> anyhow::Result<(SocketAddr, AddressClaim)> {
    let probe = match std::net::UdpSocket::bind(listen) {
        Ok(probe) => probe,
        Err(error) if error.kind() == ErrorKind::AddrInUse => return Err(taken(listen)),
        Err(error) => return Err(error).with_context(|| format!("cannot bind UDP {listen}")),
    };
    let listen = probe.local_addr()?;
    let name = format!("driftlog-collector/udp/{listen}");
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let lock = match UnixDatagram::bind_addr(&address) {
        Ok(lock) => lock,
        Err(error) if error.kind() == ErrorKind::AddrInUse => return Err(taken(listen)),
        Err(error) => return Err(error).context("cannot take the address lock"),
    };
    // The probe goes; the receive sockets take its place.
    drop(probe);
    Ok((listen, AddressClaim { _lock: lock }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_or_bound_address_is_refused() {
        let (address, claim_held) = claim("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(address.port(), 0);
        assert!(claim(address).unwrap_err().to_string().contains("already in use"), "the lock refuses");
        drop(claim_held);
        assert!(claim(address).is_ok(), "released with its holder");
        // A socket already bound there (with or without SO_REUSEPORT) is found by the probe.
        let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        other.set_reuse_port(true).unwrap();
        other.bind(&address.into()).unwrap();
        assert!(claim(address).unwrap_err().to_string().contains("already in use"));
        let wildcard = SocketAddr::from(([0, 0, 0, 0], address.port()));
        assert!(claim(wildcard).is_err(), "an overlapping wildcard address is refused too");
    }
}
