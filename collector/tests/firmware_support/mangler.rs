//! A TCP hop between QEMU's UART and the bridge that damages the serial link on purpose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What [`Mangler`] does to the byte stream, counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Injected {
    pub bad_cobs: u64,
    pub oversized: u64,
    pub corrupted: u64,
    pub forged_acks: u64,
    pub replayed: u64,
    pub truncated: u64,
}

/// A TCP hop between QEMU's UART and the bridge that damages the serial link on purpose:
/// every `every`-th frame from the device is corrupted, followed by a truncated frame, bad
/// COBS and an oversized run; every `every`-th frame to the device is followed by a copy of
/// itself (a replay), a forged ACK (the device's key id, the wrong secret), bad COBS and an
/// oversized run.
pub struct Mangler {
    pub listen: SocketAddr,
    pub injected: Arc<Mutex<Injected>>,
}

impl Mangler {
    pub fn start(bridge: SocketAddr, key_id: u32, epoch: u64, every: u64) -> Mangler {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = listener.local_addr().unwrap();
        let injected = Arc::new(Mutex::new(Injected::default()));
        let counts = injected.clone();
        std::thread::spawn(move || {
            for device in listener.incoming() {
                let Ok(device) = device else { return };
                let Ok(upstream) = std::net::TcpStream::connect(bridge) else { continue };
                let (device_in, upstream_out) = (device.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (counts_up, counts_down) = (counts.clone(), counts.clone());
                std::thread::spawn(move || {
                    pump(device_in, upstream_out, every, counts_up, |frame, out, counts| {
                        let mut bad = frame.to_vec();
                        let middle = bad.len() / 2;
                        bad[middle] = if bad[middle] == 0xFF { 0x01 } else { 0xFF };
                        out.extend_from_slice(&bad);
                        out.push(0);
                        counts.corrupted += 1;
                        // Valid COBS, two bytes of header: truncated at the collector.
                        out.extend_from_slice(&[0x03, 0xD7, 0x11, 0x00]);
                        counts.truncated += 1;
                    })
                });
                std::thread::spawn(move || {
                    pump(upstream, device, every, counts_down, move |frame, out, counts| {
                        out.extend_from_slice(frame);
                        out.push(0);
                        out.extend_from_slice(frame);
                        out.push(0);
                        counts.replayed += 1;
                        out.extend_from_slice(&forged_ack(key_id, epoch));
                        counts.forged_acks += 1;
                    })
                });
            }
        });
        Mangler { listen, injected }
    }
}

/// Copies `from` to `to` frame by frame; after every `every`-th frame `damage` writes its
/// version of the frame (terminator included), then bad COBS and an oversized run follow.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    every: u64,
    counts: Arc<Mutex<Injected>>,
    damage: impl Fn(&[u8], &mut Vec<u8>, &mut Injected),
) {
    use std::io::{Read, Write};
    let mut frame = Vec::new();
    let mut frames = 0u64;
    let mut buf = [0u8; 4096];
    while let Ok(len) = from.read(&mut buf) {
        if len == 0 {
            break;
        }
        let mut out = Vec::new();
        for &byte in &buf[..len] {
            if byte != 0 {
                frame.push(byte);
                continue;
            }
            frames += 1;
            if frames.is_multiple_of(every) && !frame.is_empty() {
                let mut counts = counts.lock().unwrap();
                damage(&frame, &mut out, &mut counts);
                // 0x05 announces four more bytes, the frame ends after one.
                out.extend_from_slice(&[0x05, 0x01, 0x00]);
                counts.bad_cobs += 1;
                out.extend(std::iter::repeat_n(0x01u8, 3_000));
                out.push(0);
                counts.oversized += 1;
            } else {
                out.extend_from_slice(&frame);
                out.push(0);
            }
            frame.clear();
        }
        if to.write_all(&out).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// An ACK for everything the device could hold, with its key id but the wrong secret: the
/// firmware must count it as forged and release nothing.
fn forged_ack(key_id: u32, epoch: u64) -> Vec<u8> {
    use driftlog_protocol::Instant;
    use driftlog_protocol::wire::{AckRepr, ControlRef, MacKey, Sealer, seal_control};
    let ack = AckRepr {
        stream: 0,
        epoch,
        cumulative: 1_000_000,
        sack: Default::default(),
        echo_sent_at: Instant::from_micros(1),
        received_at: Instant::from_micros(2),
    };
    let mut sealer = Sealer::new(key_id, MacKey::new(&[0x5A; 32]), 1);
    let mut buf = [0u8; 256];
    let len =
        seal_control(&mut sealer, Instant::from_micros(super::unix_now_us() as u64), ControlRef::Ack(&ack), &mut buf)
            .unwrap();
    let mut frame = Vec::new();
    driftlog_agent::bridge::frames::encode_frame(&buf[..len], &mut frame);
    frame
}
