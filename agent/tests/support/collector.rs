//! A collector stand-in for agent tests and figures: the real collector-side protocol
//! endpoint on a real UDP socket, with an in-memory log that commits at once. (The collector
//! crate replaces it once it exists.)
#![allow(dead_code, unreachable_pub)]

use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
use driftlog_protocol::wire::{MacKey, Payload};
use driftlog_protocol::{DeviceId, Instant, KeyId};
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

/// `(device, epoch, seq, stream)`.
pub type EventKey = (u64, u64, u64, u32);
/// `(name, value, device wall clock µs)`.
pub type Logged = (String, f64, Option<i64>);

#[derive(Default)]
pub struct Log {
    pub events: BTreeMap<EventKey, Logged>,
    pub duplicates: u64,
}

pub struct Collector {
    pub address: std::net::SocketAddr,
    pub log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    pub fn start() -> Collector {
        Collector::start_on("127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(address: std::net::SocketAddr) -> Collector {
        Collector::start_with(address, BTreeMap::from([(0, (1, MacKey::new(&[0; 32])))]))
    }

    pub fn start_with(address: std::net::SocketAddr, keys: BTreeMap<KeyId, (DeviceId, MacKey)>) -> Collector {
        Collector::start_on_socket(UdpSocket::bind(address).unwrap(), keys)
    }

    /// Listens on `group:port` (joined on `interface`); answers by unicast to the source.
    pub fn start_multicast(
        group: std::net::Ipv4Addr,
        port: u16,
        interface: std::net::Ipv4Addr,
        keys: BTreeMap<KeyId, (DeviceId, MacKey)>,
    ) -> Collector {
        let socket = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).unwrap();
        socket.join_multicast_v4(&group, &interface).unwrap();
        Collector::start_on_socket(socket, keys)
    }

    fn start_on_socket(socket: UdpSocket, keys: BTreeMap<KeyId, (DeviceId, MacKey)>) -> Collector {
        socket.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        let address = socket.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_log, thread_stop) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut endpoint = Endpoint::new(EndpointConfig::new(7, 7), keys);
            let origin = StdInstant::now();
            let now = || Instant::from_micros(origin.elapsed().as_micros() as u64);
            let mut peers = BTreeMap::new();
            let mut buf = [0u8; 65_536];
            while !thread_stop.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    if let Ok(received) = endpoint.handle_datagram(now(), &buf[..len]) {
                        peers.insert(received.stream.device, from);
                        record(&thread_log, &received);
                    }
                    // The in-memory log commits at once.
                    endpoint.commit_all(now());
                }
                let mut out = [0u8; 2_048];
                while let Some(transmit) = endpoint.poll_transmit(now(), &mut out) {
                    if let Some(peer) = peers.get(&transmit.device) {
                        let _ = socket.send_to(&out[..transmit.len], peer);
                    }
                }
            }
        });
        Collector { address, log, stop, thread: Some(thread) }
    }

    pub fn values(&self, stream: u32) -> Vec<f64> {
        self.log
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|((_, _, _, s), _)| *s == stream)
            .map(|(_, (_, v, _))| *v)
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Collector {
    /// The same stand-in over ZeroMQ: binds a SUB for frames and a PUB for ACKs/NAKs (topic
    /// `d<device>.`). Returns the collector and its `(data, ack)` endpoints.
    pub fn start_zmq(keys: BTreeMap<KeyId, (DeviceId, MacKey)>) -> (Collector, String, String) {
        use zeromq::prelude::*;
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_log, thread_stop) = (log.clone(), stop.clone());
        let (endpoints_tx, endpoints_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let mut sub = zeromq::SubSocket::new();
                let data = sub.bind("tcp://127.0.0.1:0").await.unwrap();
                sub.subscribe("").await.unwrap();
                let mut publisher = zeromq::PubSocket::new();
                let ack = publisher.bind("tcp://127.0.0.1:0").await.unwrap();
                endpoints_tx.send((data.to_string(), ack.to_string())).unwrap();
                let mut endpoint = Endpoint::new(EndpointConfig::new(7, 7), keys);
                let origin = StdInstant::now();
                let now = || Instant::from_micros(origin.elapsed().as_micros() as u64);
                while !thread_stop.load(Ordering::Relaxed) {
                    if let Ok(Ok(message)) = tokio::time::timeout(Duration::from_millis(5), sub.recv()).await
                        && let Some(frame) = message.get(0)
                        && let Ok(received) = endpoint.handle_datagram(now(), frame)
                    {
                        record(&thread_log, &received);
                    }
                    endpoint.commit_all(now());
                    let mut out = [0u8; 2_048];
                    while let Some(transmit) = endpoint.poll_transmit(now(), &mut out) {
                        let mut message = zeromq::ZmqMessage::from(format!("d{}.", transmit.device));
                        message.push_back(out[..transmit.len].to_vec().into());
                        let _ = publisher.send(message).await;
                    }
                }
            });
        });
        let (data, ack) = endpoints_rx.recv().unwrap();
        let address = "0.0.0.0:0".parse().unwrap();
        (Collector { address, log, stop, thread: Some(thread) }, data, ack)
    }
}

/// Appends the new events of `received` to the log, counting any event id seen twice.
fn record(log: &Mutex<Log>, received: &driftlog_protocol::endpoint::Received<'_>) {
    let mut log = log.lock().unwrap();
    let key = received.stream;
    for (seq, event) in received.new_events() {
        let wall = event.wall.map(|w| w.unix_micros);
        let value = match event.payload {
            Payload::Gauge(sample)
            | Payload::Counter(sample)
            | Payload::GaugeDelta(sample)
            | Payload::Timer(sample)
            | Payload::Histogram(sample) => (sample.name.to_string(), sample.value, wall),
            other => (other.name().to_string(), f64::NAN, wall),
        };
        if log.events.insert((key.device, key.epoch, seq, key.stream), value).is_some() {
            log.duplicates += 1;
        }
    }
}
