//! Kernel receive-buffer drops of our UDP sockets, read from `/proc/net/udp{,6}`.
//!
//! Why not `SO_RXQ_OVFL`: it reports a socket's drop count only inside the control message
//! of the next datagram that gets queued, so drops at the end of a burst stay invisible until
//! traffic resumes, and it costs a control message per datagram on the hot path. The kernel's
//! per-socket `drops` column is the same counter (`sk_drops`), read once a second.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// The tables that list UDP sockets of this network namespace.
const TABLES: [&str; 2] = ["/proc/net/udp", "/proc/net/udp6"];

/// Identifies one socket in the tables: its inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketInode(u64);

impl SocketInode {
    /// The inode of `socket`, found through `/proc/self/fd`; `None` where procfs is missing.
    pub fn of(socket: &impl AsRawFd) -> Option<SocketInode> {
        std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok().map(|m| SocketInode(m.ino()))
    }
}

/// The kernel's running drop count of the socket, or `None` if it is not listed (procfs
/// missing, or the socket closed).
pub fn socket_drops(inode: SocketInode) -> Option<u64> {
    TABLES.iter().find_map(|table| std::fs::read_to_string(table).ok().and_then(|text| drops_in(&text, inode)))
}

/// The `drops` column of the line for `inode` in one table's text.
fn drops_in(table: &str, inode: SocketInode) -> Option<u64> {
    // Columns: sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops.
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let line_inode: u64 = fields.nth(9)?.parse().ok()?;
        if line_inode != inode.0 {
            return None;
        }
        fields.nth(2)?.parse().ok()
    })
}

/// Turns the running count into increments for a counter.
#[derive(Debug)]
pub struct DropWatch {
    inode: Option<SocketInode>,
    last: u64,
}

impl DropWatch {
    pub fn new(socket: &impl AsRawFd) -> DropWatch {
        let inode = SocketInode::of(socket);
        // A reused socket may have dropped before we watched it: count only what is new.
        let last = inode.and_then(socket_drops).unwrap_or(0);
        DropWatch { inode, last }
    }

    /// Drops since the last call.
    pub fn poll(&mut self) -> u64 {
        let Some(now) = self.inode.and_then(socket_drops) else { return 0 };
        let new = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 2888: 0100007F:E865 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1922077 2 0000000099c13d10 0
 3209: 0100007F:E9A6 00000000:0000 07 00000000:00000900 00:00000000 00000000     0        0 1922063 2 00000000c9f88e4a 4711
";

    #[test]
    fn reads_the_drops_column_of_the_socket_by_inode() {
        assert_eq!(drops_in(TABLE, SocketInode(1922063)), Some(4711));
        assert_eq!(drops_in(TABLE, SocketInode(1922077)), Some(0));
        assert_eq!(drops_in(TABLE, SocketInode(5)), None);
        assert_eq!(drops_in("garbage\nnot a table at all\n", SocketInode(5)), None);
    }

    #[test]
    fn counts_what_the_kernel_dropped_after_the_last_datagram() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The smallest buffer the kernel allows holds a handful of datagrams.
        socket2::SockRef::from(&receiver).set_recv_buffer_size(1).unwrap();
        let mut watch = DropWatch::new(&receiver);
        assert_eq!(watch.poll(), 0);
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            sender.send_to(&[7u8; 1_000], receiver.local_addr().unwrap()).unwrap();
        }
        // Nothing was read, and nothing arrives after the burst: still counted.
        let dropped = watch.poll();
        assert!(dropped > 150, "dropped {dropped}");
        assert_eq!(watch.poll(), 0, "each drop is counted once");
    }
}
