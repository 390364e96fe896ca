//! The collector binary as a child process against real agents (the agent library's driver,
//! outbox on disk and transports, in-process) over the carriers other than UDP unicast:
//! ZeroMQ PUB/SUB with ACKs on the device's topic, and UDP multicast with unicast ACKs (in a
//! network namespace of our own, as root). Every submitted event must be acknowledged (the
//! outbox drains, which only the collector's ACKs can do) and be in the log exactly once.

mod support;

use driftlog_agent::clock::{Clock, SystemClock};
use driftlog_agent::config::{TransportKind, UplinkSection};
use driftlog_agent::driver::{CoreConfig, Driver, DriverConfig, STREAM_APPLICATIONS, Submission};
use driftlog_agent::outbox::{DropPolicy, Outbox, OutboxConfig};
use driftlog_agent::simulate::{FleetKey, fleet_keys_from, write_keys_file};
use driftlog_agent::status::Status;
use driftlog_agent::transport::{Transport, UdpTransport, ZmqTransport};
use driftlog_protocol::SenderConfig;
use driftlog_protocol::sender::{OwnedEvent, OwnedPayload};
use driftlog_protocol::wire::MacKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::netns::run_in_new_network_namespace;
use support::tmpfs::is_root;
use support::{CollectorProcess, event_ids, free_tcp_port, wait_until};
use tokio::sync::{mpsc, watch};

const SEED: u64 = 41;
/// Device ids of this file's fleets (disjoint from `simulate`'s default range).
const FIRST_DEVICE: u64 = 20_000;
/// Bound on every wait: far above what a run takes, well under a minute.
const WAIT: Duration = Duration::from_secs(30);

/// One in-process agent: a driver on its own thread and runtime, as `driftlog-agent run`
/// has it, fed gauges `transport.value = v` by [`Device::submit`] (the agent's inputs).
struct Device {
    id: u64,
    submitted: u64,
    submissions: Option<mpsc::Sender<Submission>>,
    status_path: PathBuf,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Device {
    /// Starts the device; `transport` is called inside the device's runtime (tokio sockets
    /// and the ZeroMQ tasks need one).
    fn start<T, F>(dir: &Path, key: &FleetKey, transport: F) -> Device
    where
        T: Transport,
        F: FnOnce() -> std::io::Result<T> + Send + 'static,
    {
        let dir = dir.join(format!("device-{}", key.device_id));
        std::fs::create_dir_all(&dir).unwrap();
        let outbox =
            Outbox::open(&dir.join("outbox.redb"), OutboxConfig { max_bytes: 1 << 28, policy: DropPolicy::DropOldest })
                .unwrap();
        let status_path = dir.join("status.json");
        let mut sender = SenderConfig::new(0);
        sender.heartbeat_interval = Duration::from_millis(200);
        let config = DriverConfig {
            core: CoreConfig {
                sender,
                flush_interval: Duration::from_millis(5),
                flush_max_events: 1_024,
                key_id: key.key_id,
                key: MacKey::new(&key.secret),
            },
            status_path: Some(status_path.clone()),
            statsd: None,
        };
        let (stop, stopped) = watch::channel(false);
        let (submissions, queue) = mpsc::channel(1_024);
        let thread = std::thread::Builder::new()
            .name(format!("device-{}", key.device_id))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async move {
                    let driver =
                        Driver::new(config, outbox, transport()?, SystemClock).map_err(std::io::Error::other)?;
                    driver.run(queue, stopped).await;
                    Ok(())
                })
            })
            .unwrap();
        Device {
            id: key.device_id,
            submitted: 0,
            submissions: Some(submissions),
            status_path,
            stop,
            thread: Some(thread),
        }
    }

    /// Submits `transport.value = v` for every `v` in `values`, in chunks of 10 like an
    /// application writing lines.
    fn submit(&mut self, values: std::ops::Range<u64>) {
        let clock = SystemClock;
        let submissions = self.submissions.as_ref().unwrap();
        let mut value = values.start;
        while value < values.end {
            let events: Vec<OwnedEvent> = (value..(value + 10).min(values.end))
                .map(|v| OwnedEvent {
                    mono: clock.mono(),
                    wall: Some(clock.wall()),
                    payload: OwnedPayload::Gauge { name: "transport.value".into(), value: v as f64, tags: Vec::new() },
                })
                .collect();
            value += events.len() as u64;
            self.submitted += events.len() as u64;
            submissions.blocking_send(Submission { stream: STREAM_APPLICATIONS, events, reply: None }).unwrap();
        }
    }

    fn status(&self) -> Option<Status> {
        Status::read(&self.status_path).ok()
    }

    /// Every submitted event appended to the outbox and released by an ACK.
    fn drained(&self) -> bool {
        self.status().is_some_and(|s| {
            s.appended_events == self.submitted && s.backlog_events == 0 && s.released_events == self.submitted
        })
    }

    /// Stops the driver (which publishes its status on the way out).
    fn stop(mut self) -> Status {
        self.submissions = None;
        let _ = self.stop.send(true);
        self.thread.take().unwrap().join().unwrap().unwrap();
        self.status().unwrap()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.submissions = None;
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The fleet's keys, written as the collector's keys file.
fn fleet(dir: &Path, devices: usize) -> Vec<FleetKey> {
    let keys = fleet_keys_from(SEED, FIRST_DEVICE, devices);
    write_keys_file(&dir.join("keys.toml"), &keys).unwrap();
    keys
}

/// Waits until every device's outbox drained, with the collector's stderr on failure.
fn wait_for_drain(collector: &CollectorProcess, devices: &[Device]) {
    let drained = wait_until(WAIT, || devices.iter().all(Device::drained));
    if !drained {
        let statuses: Vec<_> = devices.iter().map(|d| (d.id, d.status())).collect();
        panic!("outboxes did not drain: {statuses:#?}\ncollector stderr: {:#?}", collector.stderr.lock().unwrap());
    }
}

/// Stops the devices and the collector and checks the log holds exactly each device's
/// events `0..submitted` (values and sequence numbers), each once, and nothing else.
fn assert_log_holds_exactly(mut collector: CollectorProcess, devices: Vec<Device>) {
    let expected: BTreeMap<u64, u64> = devices.iter().map(|d| (d.id, d.submitted)).collect();
    let mut sent = 0;
    for device in devices {
        let (id, submitted) = (device.id, device.submitted);
        let status = device.stop();
        assert_eq!(status.appended_events, submitted, "device {id}: the outbox took every event");
        assert_eq!(status.dropped_events, 0, "device {id}");
        sent += status.datagrams_sent;
    }
    // No more datagrams than the agents sent (their final counts): each frame came in
    // through one socket of one source, once.
    let received = collector.metric("driftlog_datagrams_received_total") as u64;
    assert!(received > 0 && received <= sent, "the collector received {received} datagrams of {sent} sent");
    assert_eq!(collector.terminate(), Some(0), "SIGTERM: clean exit: {:#?}", collector.stderr.lock().unwrap());
    let lines = collector.log_json();
    let ids = event_ids(&lines);
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(repeated.is_empty(), "events in the log more than once: {repeated:?}");
    let mut values: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut seqs: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l["kind"] == "event") {
        let device = line["device"].as_u64().unwrap();
        assert!(expected.contains_key(&device), "an event of unknown device {device}: {line}");
        assert_eq!(line["name"], "transport.value");
        values.entry(device).or_default().push(line["value"].as_f64().unwrap() as u64);
        seqs.entry(device).or_default().push(line["seq"].as_u64().unwrap());
    }
    for (device, events) in expected {
        let mut got = values.remove(&device).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, (0..events).collect::<Vec<_>>(), "device {device}: values in the log");
        let mut got = seqs.remove(&device).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, (0..events).collect::<Vec<_>>(), "device {device}: sequence numbers in the log");
    }
    let others: Vec<_> = lines.iter().filter(|l| l["kind"] == "gap" || l["kind"] == "tombstone").take(5).collect();
    assert!(others.is_empty(), "gaps or tombstones in the log: {others:?}");
}

fn zmq_toml(data: &str, ack: &str) -> String {
    format!("[ingest.zmq]\ndata_endpoint = \"{data}\"\nack_endpoint = \"{ack}\"\n")
}

fn zmq_device(dir: &Path, key: &FleetKey, data: &str, ack: &str) -> Device {
    let (data, ack, id) = (data.to_string(), ack.to_string(), key.device_id);
    Device::start(dir, key, move || Ok(ZmqTransport::start(data, ack, id)))
}

#[test]
fn events_travel_over_zeromq_and_acks_come_back_on_each_devices_topic() {
    let dir = tempfile::tempdir().unwrap();
    let keys = fleet(dir.path(), 3);
    let data = format!("tcp://127.0.0.1:{}", free_tcp_port());
    let ack = format!("tcp://127.0.0.1:{}", free_tcp_port());
    let collector = CollectorProcess::start(dir.path(), &zmq_toml(&data, &ack));
    let agents = dir.path().join("agents");
    let mut devices: Vec<Device> = keys.iter().map(|key| zmq_device(&agents, key, &data, &ack)).collect();
    for device in &mut devices {
        device.submit(0..500);
    }
    wait_for_drain(&collector, &devices);
    assert_eq!(collector.metric("driftlog_events_committed_total"), 1_500.0);
    assert_log_holds_exactly(collector, devices);
}

/// The agent's sockets connect without a timeout: an agent started before its collector
/// buffers in its outbox and delivers everything once the collector binds.
#[test]
fn a_zeromq_agent_started_before_the_collector_delivers_everything_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let keys = fleet(dir.path(), 1);
    let data = format!("tcp://127.0.0.1:{}", free_tcp_port());
    let ack = format!("tcp://127.0.0.1:{}", free_tcp_port());
    let mut device = zmq_device(&dir.path().join("agents"), &keys[0], &data, &ack);
    device.submit(0..500);
    assert!(wait_until(WAIT, || device.status().is_some_and(|s| s.appended_events == 500)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(device.status().unwrap().released_events, 0, "nothing can be acknowledged without a collector");
    let collector = CollectorProcess::start(dir.path(), &zmq_toml(&data, &ack));
    let devices = vec![device];
    wait_for_drain(&collector, &devices);
    assert_log_holds_exactly(collector, devices);
}

/// A collector restart (`kill -9`, then the same endpoints again) under a connected ZeroMQ
/// agent: the agent's sockets reconnect, and what it submits while the collector is down
/// and after it is back is delivered, once.
///
/// `zeromq` 0.7 reconnects only SUB and XSUB sockets (`connect_with_reconnect`); a PUB's
/// `connect` has no reconnect task, so the agent replaces its PUB with a freshly connected
/// one when the monitor reports the peer gone (`agent/src/transport/zmq.rs`).
#[test]
fn zeromq_agents_reconnect_after_the_collector_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = fleet(dir.path(), 1);
    let data = format!("tcp://127.0.0.1:{}", free_tcp_port());
    let ack = format!("tcp://127.0.0.1:{}", free_tcp_port());
    let mut collector = CollectorProcess::start(dir.path(), &zmq_toml(&data, &ack));
    let mut devices = vec![zmq_device(&dir.path().join("agents"), &keys[0], &data, &ack)];
    devices[0].submit(0..300);
    wait_for_drain(&collector, &devices);
    collector.kill9();
    devices[0].submit(300..600);
    std::thread::sleep(Duration::from_millis(300));
    collector.spawn();
    devices[0].submit(600..900);
    wait_for_drain(&collector, &devices);
    assert_log_holds_exactly(collector, devices);
}

/// Multicast needs a network namespace of our own (loopback up, no other traffic): the
/// test re-runs this test binary under `unshare -n` with the helper below, which starts the
/// collector there (the child inherits the namespace).
#[test]
fn events_travel_over_multicast_and_acks_come_back_by_unicast() {
    if !is_root() {
        eprintln!("skipped: multicast in a network namespace needs root (CI runs as root)");
        return;
    }
    assert!(run_in_new_network_namespace("multicast_in_a_namespace"), "the multicast run inside the namespace failed");
    assert!(
        run_in_new_network_namespace("multicast_on_the_unicast_port_in_a_namespace"),
        "the multicast run with UDP unicast on the group's port failed"
    );
}

#[test]
#[ignore = "helper of events_travel_over_multicast_and_acks_come_back_by_unicast; runs inside `unshare -n`"]
fn multicast_in_a_namespace() {
    multicast_run(false);
}

#[test]
#[ignore = "helper of events_travel_over_multicast_and_acks_come_back_by_unicast; runs inside `unshare -n`"]
fn multicast_on_the_unicast_port_in_a_namespace() {
    multicast_run(true);
}

/// Agents send to the group from the loopback address; the collector answers by unicast.
/// `same_port`: UDP unicast listens on `0.0.0.0:PORT`, the group's port, so its sockets
/// share the port with the multicast socket: each multicast frame must still arrive once
/// (not once per wildcard socket on the port).
fn multicast_run(same_port: bool) {
    assert!(Command::new("ip").args(["link", "set", "lo", "up"]).status().unwrap().success());
    let group = std::net::Ipv4Addr::new(239, 255, 74, 9);
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    let port = 17_409;
    let dir = tempfile::tempdir().unwrap();
    let keys = fleet(dir.path(), 2);
    // UDP unicast stays on, on another port unless `same_port`.
    let mut collector = CollectorProcess::start(
        dir.path(),
        &format!("[ingest.multicast]\ngroup = \"{group}\"\nport = {port}\ninterface = \"{loopback}\"\n"),
    );
    assert_ne!(collector.udp.port(), port);
    if same_port {
        collector.kill9();
        let text = std::fs::read_to_string(&collector.config_path).unwrap();
        let text = text.replace(&format!("listen = \"{}\"", collector.udp), &format!("listen = \"0.0.0.0:{port}\""));
        std::fs::write(&collector.config_path, text).unwrap();
        collector.spawn();
    }
    let agents = dir.path().join("agents");
    let devices: Vec<Device> = keys
        .iter()
        .map(|key| {
            let config = UplinkSection {
                address: (group, port).into(),
                transport: TransportKind::Multicast,
                multicast_interface: Some(loopback),
                ..UplinkSection::default()
            };
            let mut device = Device::start(&agents, key, move || UdpTransport::bind(&config));
            device.submit(0..500);
            device
        })
        .collect();
    wait_for_drain(&collector, &devices);
    assert!(collector.metric("driftlog_acks_sent_total") > 0.0);
    assert_log_holds_exactly(collector, devices);
}
