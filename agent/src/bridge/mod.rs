//! `driftlog-agent bridge`: runs on the gateway beside a microcontroller and moves frames
//! between its serial link (one datagram per COBS frame) and the collector's UDP port, both
//! ways.
//!
//! The bridge holds no protocol state: it neither acknowledges nor retransmits. Reliability
//! stays end to end between the firmware's sender and the collector, so a bridge restart, a
//! corrupted byte or a dropped frame costs a retransmission, never an event. Each frame from
//! the serial link becomes one datagram from the bridge's UDP socket, whose port the collector
//! answers to (a restarted bridge gets a new port, and the collector follows the device's
//! newest frame).
//!
//! - [`frames`]: COBS framing and the loss injection of `--drop-rate`.
//! - [`serial`]: `--serial SPEC`: a device node, or a TCP or Unix socket an emulator connects to.
//! - [`metrics`]: counters, logged every 10 s and served on `/metrics`.

pub mod frames;
pub mod metrics;
pub mod serial;

use frames::{DropInjector, FrameSplitter, Split, encode_frame};
use metrics::{BridgeMetrics, TO_COLLECTOR, TO_DEVICE};
use serial::{SerialSource, SerialSpec, SerialStream};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug)]
pub struct BridgeOptions {
    pub serial: SerialSpec,
    pub collector: SocketAddr,
    /// Baud rate of a device node (sockets ignore it).
    pub baud: u32,
    /// Where to serve `/metrics`, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Fraction of frames dropped in each direction, independently (tests only).
    pub drop_rate: f64,
    pub drop_seed: u64,
    /// Longest encoded frame accepted from the serial link.
    pub max_frame_bytes: usize,
}

/// How often the counters are logged (when they changed).
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// A serial write that takes longer than this means the other end stopped reading.
const SERIAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Before opening a device node again after it failed.
const DEVICE_RETRY: Duration = Duration::from_secs(1);

enum Wake {
    Shutdown,
    Connected(std::io::Result<(Box<dyn SerialStream>, String)>),
    Serial(std::io::Result<usize>),
    Datagram(std::io::Result<usize>),
    Summary,
}

/// Runs until `shutdown` resolves; returns the final counters.
pub async fn run(
    options: BridgeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<BridgeMetrics> {
    use anyhow::Context;
    anyhow::ensure!((0.0..=1.0).contains(&options.drop_rate), "--drop-rate must be between 0 and 1");
    let local: SocketAddr = if options.collector.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let udp = tokio::net::UdpSocket::bind(local).await.context("cannot bind the UDP socket")?;
    udp.connect(options.collector).await.with_context(|| format!("cannot reach {}", options.collector))?;
    let source = SerialSource::open(&options.serial, options.baud)
        .await
        .with_context(|| format!("cannot open serial {}", options.serial))?;
    let (metrics, registry) = BridgeMetrics::new();
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(address) = options.metrics {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot serve metrics on {address}"))?;
        tracing::info!(address = %listener.local_addr()?, "metrics on /metrics");
        tokio::spawn(metrics::serve(listener, registry, async move {
            let _ = http_stopped.await;
        }));
    }
    tracing::info!(serial = %options.serial, collector = %options.collector, drop_rate = options.drop_rate, "bridge running");

    let mut bridge = Bridge {
        options: options.clone(),
        udp,
        metrics: metrics.clone(),
        splitter: FrameSplitter::new(options.max_frame_bytes),
        drop_up: DropInjector::new(options.drop_rate, options.drop_seed),
        drop_down: DropInjector::new(options.drop_rate, options.drop_seed ^ 0x5DEE_CE66_D1CE_5EED),
        connection: None,
        encoded: Vec::new(),
    };
    tokio::pin!(shutdown);
    let mut serial_buf = vec![0u8; 4096];
    let mut udp_buf = vec![0u8; driftlog_protocol::wire::MAX_DATAGRAM_BYTES];
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut summary_at = tokio::time::Instant::now() + SUMMARY_INTERVAL;
    let mut last_summary = (0, 0, 0);
    loop {
        let accepting = bridge.connection.is_none() || source.accepts_while_connected();
        let wake = tokio::select! {
            _ = &mut shutdown => Wake::Shutdown,
            connected = async {
                if let Some(at) = retry_at {
                    tokio::time::sleep_until(at).await;
                }
                source.next().await
            }, if accepting => Wake::Connected(connected),
            read = async {
                match bridge.connection.as_mut() {
                    Some(stream) => stream.read(&mut serial_buf).await,
                    None => std::future::pending().await,
                }
            } => Wake::Serial(read),
            received = bridge.udp.recv(&mut udp_buf) => Wake::Datagram(received),
            _ = tokio::time::sleep_until(summary_at) => Wake::Summary,
        };
        match wake {
            Wake::Shutdown => break,
            Wake::Connected(Ok((stream, peer))) => {
                retry_at = None;
                bridge.connect(stream, &peer).await;
            }
            Wake::Connected(Err(error)) => {
                tracing::warn!(serial = %options.serial, %error, "cannot open the serial link; retrying");
                retry_at = Some(tokio::time::Instant::now() + DEVICE_RETRY);
            }
            Wake::Serial(Ok(0)) => bridge.disconnect("closed by the other end"),
            Wake::Serial(Err(error)) => bridge.disconnect(&error.to_string()),
            Wake::Serial(Ok(len)) => bridge.forward_to_collector(&serial_buf[..len]).await,
            Wake::Datagram(Ok(len)) => bridge.forward_to_device(&udp_buf[..len]).await,
            // The collector is not listening (ICMP port unreachable): the device retransmits.
            Wake::Datagram(Err(error)) => tracing::debug!(%error, "UDP receive failed"),
            Wake::Summary => {
                summary_at += SUMMARY_INTERVAL;
                let now =
                    (metrics.frames_total(TO_COLLECTOR), metrics.frames_total(TO_DEVICE), metrics.bad_frames_total());
                if now != last_summary {
                    last_summary = now;
                    bridge.log_summary();
                }
            }
        }
        if bridge.connection.is_none() && !source.accepts_while_connected() && retry_at.is_none() {
            retry_at = Some(tokio::time::Instant::now() + DEVICE_RETRY);
        }
    }
    bridge.log_summary();
    let _ = stop_http.send(());
    Ok(metrics)
}

struct Bridge {
    options: BridgeOptions,
    udp: tokio::net::UdpSocket,
    metrics: BridgeMetrics,
    splitter: FrameSplitter,
    drop_up: DropInjector,
    drop_down: DropInjector,
    connection: Option<Box<dyn SerialStream>>,
    encoded: Vec<u8>,
}

impl Bridge {
    async fn connect(&mut self, mut stream: Box<dyn SerialStream>, peer: &str) {
        if self.connection.is_some() {
            tracing::info!(peer, "serial link replaced by a new connection");
        }
        // A lone terminator ends whatever half frame the device's decoder holds from before.
        if stream.write_all(&[0]).await.is_err() {
            return;
        }
        self.connection = Some(stream);
        self.splitter.reset();
        self.metrics.connections.inc();
        self.metrics.connected.set(1);
        tracing::info!(peer, "serial link connected");
    }

    fn disconnect(&mut self, why: &str) {
        if self.connection.take().is_some() {
            self.metrics.connected.set(0);
            tracing::info!(serial = %self.options.serial, why, "serial link disconnected");
        }
        self.splitter.reset();
    }

    /// Bytes from the device: every complete frame becomes one datagram to the collector.
    async fn forward_to_collector(&mut self, bytes: &[u8]) {
        self.metrics.serial_bytes(TO_COLLECTOR, bytes.len());
        let mut frames = Vec::new();
        self.splitter.push(bytes, |split| frames.push(split));
        for split in frames {
            match split {
                Split::Frame(frame) => {
                    if self.drop_up.should_drop() {
                        self.metrics.drop(TO_COLLECTOR, "injected");
                        continue;
                    }
                    match self.udp.send(&frame).await {
                        Ok(_) => self.metrics.frame(TO_COLLECTOR),
                        Err(error) => {
                            tracing::debug!(%error, "UDP send failed");
                            self.metrics.drop(TO_COLLECTOR, "send_failed");
                        }
                    }
                }
                Split::BadCobs => self.metrics.bad_frame("bad_cobs"),
                Split::Oversized => self.metrics.bad_frame("oversized"),
            }
        }
    }

    /// A datagram from the collector: one frame to the device.
    async fn forward_to_device(&mut self, datagram: &[u8]) {
        let Some(stream) = self.connection.as_mut() else {
            self.metrics.drop(TO_DEVICE, "serial_down");
            return;
        };
        if self.drop_down.should_drop() {
            self.metrics.drop(TO_DEVICE, "injected");
            return;
        }
        encode_frame(datagram, &mut self.encoded);
        match tokio::time::timeout(SERIAL_WRITE_TIMEOUT, stream.write_all(&self.encoded)).await {
            Ok(Ok(())) => {
                self.metrics.frame(TO_DEVICE);
                self.metrics.serial_bytes(TO_DEVICE, self.encoded.len());
            }
            Ok(Err(error)) => {
                self.metrics.drop(TO_DEVICE, "serial_down");
                self.disconnect(&error.to_string());
            }
            Err(_) => {
                self.metrics.drop(TO_DEVICE, "serial_down");
                self.disconnect("write timed out: the device stopped reading");
            }
        }
    }

    fn log_summary(&self) {
        let metrics = &self.metrics;
        tracing::info!(
            frames_to_collector = metrics.frames_total(TO_COLLECTOR),
            frames_to_device = metrics.frames_total(TO_DEVICE),
            bad_frames = metrics.bad_frames_total(),
            dropped_to_collector = metrics.dropped_total(TO_COLLECTOR),
            dropped_to_device = metrics.dropped_total(TO_DEVICE),
            connections = metrics.connections.get(),
            "bridge counters"
        );
    }
}
