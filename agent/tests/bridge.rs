//! `driftlog-agent bridge` without an emulator: a test plays the microcontroller on a real
//! pseudo-terminal (the device-path mode, raw termios) and on a Unix socket, and the collector
//! on a UDP socket. Frames cross both ways, damaged frames are counted, and `/metrics` (axum +
//! prometheus-client) shows the counters.

use driftlog_agent::bridge::frames::encode_frame;
use driftlog_agent::bridge::serial::SerialSpec;
use driftlog_agent::bridge::{BridgeOptions, run};
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Runs the bridge on its own thread; dropping the sender stops it.
fn start(
    serial: SerialSpec,
    collector: std::net::SocketAddr,
    metrics: Option<std::net::SocketAddr>,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options =
        BridgeOptions { serial, collector, baud: 115_200, metrics, drop_rate: 0.0, drop_seed: 1, max_frame_bytes: 512 };
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(options, async {
            let _ = stopped.await;
        }))
    });
    stop
}

/// Reads from `stream` until `expected` bytes arrived (the leading resync terminators the
/// bridge writes on connect are skipped).
fn read_frame(stream: &mut impl Read, expected: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(expected) {
        assert!(Instant::now() < deadline, "got {got:?}, expected {expected:?}");
        match stream.read(&mut buf) {
            Ok(len) => got.extend_from_slice(&buf[..len]),
            Err(error)
                if error.kind() == std::io::ErrorKind::WouldBlock || error.kind() == std::io::ErrorKind::TimedOut =>
            {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// The device sends two frames around damaged ones; the collector gets exactly the two as
/// datagrams and answers; the device gets the answer framed.
fn exchange(device: &mut (impl Read + Write), collector: &UdpSocket) {
    let mut frame = Vec::new();
    let mut stream = Vec::new();
    encode_frame(&[0xD7, 0x11, 0x00, 0x42], &mut frame);
    stream.extend_from_slice(&frame);
    // Bad COBS (0x05 promises four bytes, one follows), then a frame over 512 bytes.
    stream.extend_from_slice(&[0x05, 0x01, 0x00]);
    stream.extend(std::iter::repeat_n(0x01u8, 600));
    stream.push(0);
    encode_frame(b"second", &mut frame);
    stream.extend_from_slice(&frame);
    device.write_all(&stream).unwrap();
    let mut buf = [0u8; 1024];
    let (len, bridge) = collector.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], &[0xD7, 0x11, 0x00, 0x42]);
    let (len, _) = collector.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..len], b"second");
    collector.send_to(&[0xD7, 0x18, 0, 0, 0], bridge).unwrap();
    encode_frame(&[0xD7, 0x18, 0, 0, 0], &mut frame);
    read_frame(device, &frame);
}

fn metrics(address: std::net::SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            return response;
        }
        assert!(Instant::now() < deadline, "no metrics on {address}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pseudo_terminal_carries_frames_both_ways_and_bad_frames_are_counted_on_metrics() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let pty = nix::pty::openpty(None, None).unwrap();
    let device_path =
        std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&pty.slave))).unwrap();
    let metrics_address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let _stop = start(SerialSpec::Device(device_path), collector.local_addr().unwrap(), Some(metrics_address));
    // The master end is the microcontroller; non-blocking, so every read is bounded.
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(&pty.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let mut device = std::fs::File::from(pty.master);
    // The bridge opened the device once it wrote its resync terminator.
    read_frame(&mut device, &[0]);
    exchange(&mut device, &collector);
    let text = metrics(metrics_address);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for line in [
        "driftlog_bridge_frames_total{direction=\"to_collector\"} 2",
        "driftlog_bridge_frames_total{direction=\"to_device\"} 1",
        "driftlog_bridge_bad_frames_total{reason=\"bad_cobs\"} 1",
        "driftlog_bridge_bad_frames_total{reason=\"oversized\"} 1",
        "driftlog_bridge_serial_connected 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn a_unix_socket_carries_frames_and_a_reconnecting_device_replaces_the_old_connection() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uart.sock");
    let _stop = start(SerialSpec::Unix(path.clone()), collector.local_addr().unwrap(), None);
    let connect = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stream) = std::os::unix::net::UnixStream::connect(&path) {
                stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return stream;
            }
            assert!(Instant::now() < deadline, "the bridge does not listen on {}", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut first = connect();
    exchange(&mut first, &collector);
    // An emulator restarted: its new connection takes over while the old one is still open.
    let mut second = connect();
    exchange(&mut second, &collector);
}
