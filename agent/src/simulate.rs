//! `driftlog-agent simulate`: N virtual devices in one process, each with its own device id,
//! key, outbox and skewed, drifting clock, through the same driver, outbox and transport as
//! a real agent. It is the load generator for benchmarks and the demo.
//!
//! Device `i` (0-based) of `n` gets device id and key id `10_000 + i`, a key derived from
//! the seed, a clock offset spread evenly over `[-offset, +offset]` and a drift spread over
//! `[-drift, +drift]` (one device gets exactly `+offset` and `+drift`). `--keys-out` writes
//! the keys for the collector.

use crate::clock::{Clock, SkewedClock};
use crate::config::{TransportKind, UplinkSection};
use crate::driver::{CoreConfig, Driver, DriverConfig, STREAM_APPLICATIONS, Submission};
use crate::outbox::{DropPolicy, Outbox, OutboxConfig};
use crate::status::Status;
use crate::transport::{Transport, UdpTransport};
use anyhow::Context;
use driftlog_protocol::sender::{OwnedEvent, OwnedPayload};
use driftlog_protocol::wire::MacKey;
use driftlog_protocol::{DeviceId, KeyId, SenderConfig, SplitMix64};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Device and key ids of simulated devices start here.
pub const FIRST_SIMULATED_DEVICE: u64 = 10_000;

#[derive(Clone, Debug)]
pub struct SimulateOptions {
    pub devices: usize,
    /// Events per second per device.
    pub rate: f64,
    /// Stop generating after this long ...
    pub duration: Option<Duration>,
    /// ... or after this many events per device.
    pub events: Option<u64>,
    pub clock_offset_ms: f64,
    pub clock_drift_ppm: f64,
    pub collector: SocketAddr,
    pub data_dir: PathBuf,
    pub seed: u64,
    /// How long to wait, after generating, for every outbox to drain.
    pub drain_timeout: Duration,
    pub backlog_events_per_second: u32,
    /// The first device loses its network from this long after the start, for this long: it
    /// keeps generating into its outbox, and drains the backlog when the network returns.
    pub outage: Option<(Duration, Duration)>,
}

/// One simulated device's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetKey {
    pub device_id: DeviceId,
    pub key_id: KeyId,
    pub secret: [u8; 32],
}

/// The keys `simulate --seed SEED --devices N` uses.
pub fn fleet_keys(seed: u64, devices: usize) -> Vec<FleetKey> {
    fleet_keys_from(seed, FIRST_SIMULATED_DEVICE, devices)
}

/// The keys of `devices` simulated devices with ids from `first_device` on; a device's key
/// depends only on the seed and its id, so `fleet_keys` is `fleet_keys_from` at
/// `FIRST_SIMULATED_DEVICE`.
pub fn fleet_keys_from(seed: u64, first_device: DeviceId, devices: usize) -> Vec<FleetKey> {
    (0..devices as u64)
        .map(|position| {
            let id = first_device + position;
            let index = id.wrapping_sub(FIRST_SIMULATED_DEVICE);
            let mut rng = SplitMix64::new(seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut secret = [0u8; 32];
            for chunk in secret.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            FleetKey { device_id: id, key_id: id as KeyId, secret }
        })
        .collect()
}

/// Writes keys as the collector's key file: `[[device]] device_id, key_id, key`.
pub fn write_keys_file(path: &Path, keys: &[FleetKey]) -> std::io::Result<()> {
    let mut text = String::from("# Keys of simulated devices (driftlog-agent simulate).\n");
    for key in keys {
        let hex: String = key.secret.iter().map(|b| format!("{b:02x}")).collect();
        text.push_str(&format!(
            "\n[[device]]\ndevice_id = {}\nkey_id = {}\nkey = \"{hex}\"\n",
            key.device_id, key.key_id
        ));
    }
    std::fs::write(path, text)
}

/// The outcome: what every device generated and what is still waiting for an ACK.
#[derive(Clone, Debug, Default)]
pub struct SimulationReport {
    pub generated: u64,
    pub backlog_remaining: u64,
    pub retransmitted: u64,
    pub dropped: u64,
}

/// The spread value for device `index` of `count`: evenly over `[-max, max]`, the last at `max`.
fn spread(index: usize, count: usize, max: f64) -> f64 {
    if count <= 1 { max } else { max * (2.0 * index as f64 / (count - 1) as f64 - 1.0) }
}

pub fn run(options: &SimulateOptions) -> anyhow::Result<SimulationReport> {
    run_fleet(options, &fleet_keys(options.seed, options.devices))
}

/// `run` with the fleet's keys given (`options.devices` of them), e.g. from
/// `fleet_keys_from` for a fleet whose ids do not start at `FIRST_SIMULATED_DEVICE`.
pub fn run_fleet(options: &SimulateOptions, keys: &[FleetKey]) -> anyhow::Result<SimulationReport> {
    anyhow::ensure!(options.devices >= 1 && options.devices <= 1_000, "--devices must be between 1 and 1000");
    anyhow::ensure!(keys.len() == options.devices, "one key per simulated device");
    anyhow::ensure!(options.rate > 0.0 && options.rate <= 100_000.0, "--rate must be between 0 and 100000 events/s");
    anyhow::ensure!(options.duration.is_some() || options.events.is_some(), "give --duration or --events");
    std::fs::create_dir_all(&options.data_dir)?;
    let (stop, stopped) = watch::channel(false);
    let mut threads = Vec::new();
    // Each driver's published status, handed back from its thread once the driver exists.
    let (status_tx, status_rx) = std::sync::mpsc::channel();
    for (index, key) in keys.iter().enumerate() {
        let dir = options.data_dir.join(format!("device-{}", key.device_id));
        std::fs::create_dir_all(&dir)?;
        let outbox =
            Outbox::open(&dir.join("outbox"), OutboxConfig { max_bytes: 1 << 30, policy: DropPolicy::DropOldest })
                .with_context(|| format!("outbox of simulated device {}", key.device_id))?;
        let collector =
            UplinkSection { address: options.collector, transport: TransportKind::Udp, ..UplinkSection::default() };
        let clock = SkewedClock::new(
            (spread(index, options.devices, options.clock_offset_ms) * 1_000.0) as i64,
            spread(index, options.devices, options.clock_drift_ppm),
        );
        let mut sender = SenderConfig::new(0);
        sender.backlog_events_per_second = options.backlog_events_per_second;
        let status_path = dir.join("status.json");
        let config = DriverConfig {
            core: CoreConfig {
                sender,
                flush_interval: Duration::from_millis(20),
                flush_max_events: 1_024,
                key_id: key.key_id,
                key: MacKey::new(&key.secret),
            },
            status_path: Some(status_path),
            statsd: None,
        };
        let generate =
            Generate { rate: options.rate, duration: options.duration, events: options.events, device: index };
        let stopped = stopped.clone();
        let status_tx = status_tx.clone();
        let outage = options.outage.filter(|_| index == 0);
        threads.push(std::thread::Builder::new().name(format!("sim-device-{index}")).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                // Bound inside the runtime: a tokio socket needs one.
                let transport = Outage::new(UdpTransport::bind(&collector)?, outage);
                let driver = Driver::new(config, outbox, transport, clock).map_err(std::io::Error::other)?;
                let _ = status_tx.send(driver.subscribe_status());
                let (submissions, queue) = mpsc::channel(1_024);
                let generator = tokio::spawn(generate.run(clock, submissions));
                let stats = driver.run(queue, stopped).await;
                Ok::<_, std::io::Error>((generator.await.unwrap_or(0), stats))
            })
        })?);
    }

    // Generation ends on its own; then wait for every outbox to drain (or give up).
    let generation = options
        .duration
        .unwrap_or(Duration::MAX)
        .min(options.events.map_or(Duration::MAX, |events| Duration::from_secs_f64(events as f64 / options.rate)));
    std::thread::sleep(generation);
    let deadline = std::time::Instant::now() + options.drain_timeout;
    let mut report = SimulationReport::default();
    drop(status_tx);
    let mut published = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        published.extend(status_rx.try_iter());
        let statuses: Vec<Status> = published.iter().filter_map(|status| status.borrow().clone()).collect();
        let generated: u64 = statuses.iter().map(|s| s.appended_events).sum();
        let backlog: u64 = statuses.iter().map(|s| s.backlog_events).sum();
        report.generated = generated;
        report.backlog_remaining = backlog;
        report.dropped = statuses.iter().map(|s| s.dropped_events).sum();
        report.retransmitted = statuses.iter().flat_map(|s| &s.streams).map(|s| s.events_retransmitted).sum();
        let expected = options.events.map(|e| e * options.devices as u64);
        let all_generated = expected.is_none_or(|expected| generated >= expected);
        if (statuses.len() == options.devices && all_generated && backlog == 0) || std::time::Instant::now() > deadline
        {
            break;
        }
    }
    let _ = stop.send(true);
    for thread in threads {
        let _ = thread.join();
    }
    Ok(report)
}

/// A transport that loses every datagram, both ways, during one interval: a device whose
/// network goes away (the datagrams are gone, as on a real link, not queued).
struct Outage<T> {
    inner: T,
    during: Option<std::ops::Range<tokio::time::Instant>>,
}

impl<T> Outage<T> {
    fn new(inner: T, outage: Option<(Duration, Duration)>) -> Outage<T> {
        let start = tokio::time::Instant::now();
        Outage { inner, during: outage.map(|(after, length)| start + after..start + after + length) }
    }

    fn down(&self) -> bool {
        self.during.as_ref().is_some_and(|during| during.contains(&tokio::time::Instant::now()))
    }
}

impl<T: Transport + Sync> Transport for Outage<T> {
    async fn send(&self, datagram: &[u8]) -> std::io::Result<()> {
        if self.down() {
            return Ok(());
        }
        self.inner.send(datagram).await
    }

    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let len = self.inner.recv(buf).await?;
            if !self.down() {
                return Ok(len);
            }
        }
    }
}

/// The event generator of one virtual device.
struct Generate {
    rate: f64,
    duration: Option<Duration>,
    events: Option<u64>,
    device: usize,
}

impl Generate {
    async fn run(self, clock: impl Clock, submissions: mpsc::Sender<Submission>) -> u64 {
        let start = tokio::time::Instant::now();
        let interval = Duration::from_secs_f64(1.0 / self.rate);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let tags = vec![("device".to_string(), format!("sim-{}", self.device))];
        let mut generated = 0u64;
        loop {
            ticker.tick().await;
            if self.events.is_some_and(|limit| generated >= limit)
                || self.duration.is_some_and(|d| start.elapsed() >= d)
            {
                return generated;
            }
            // A slow sine, so windows have something to aggregate.
            let value = 20.0 + 5.0 * (generated as f64 / 100.0).sin();
            let payload = OwnedPayload::Gauge { name: "sim.temperature".into(), value, tags: tags.clone() };
            let event = OwnedEvent { mono: clock.mono(), wall: Some(clock.wall()), payload };
            let submission = Submission { stream: STREAM_APPLICATIONS, events: vec![event], reply: None };
            if submissions.send(submission).await.is_err() {
                return generated;
            }
            generated += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_distinct() {
        let a = fleet_keys(1, 3);
        assert_eq!(a, fleet_keys(1, 3));
        assert_ne!(a[0].secret, a[1].secret);
        assert_ne!(a[0].secret, fleet_keys(2, 1)[0].secret);
        assert_eq!(a[2].device_id, FIRST_SIMULATED_DEVICE + 2);
        let b = fleet_keys_from(1, FIRST_SIMULATED_DEVICE + 2, 2);
        assert_eq!(b[0], a[2], "a device's key depends on the seed and its id only");
        assert_eq!(b[1].device_id, FIRST_SIMULATED_DEVICE + 3);
    }

    #[test]
    fn offsets_spread_over_the_range() {
        assert_eq!(spread(0, 3, 100.0), -100.0);
        assert_eq!(spread(1, 3, 100.0), 0.0);
        assert_eq!(spread(2, 3, 100.0), 100.0);
        assert_eq!(spread(0, 1, 100.0), 100.0);
    }
}
