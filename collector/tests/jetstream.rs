//! The JetStream forwarder against a real `nats-server -js` (a child process of the test):
//! every log offset lands in the stream exactly once across a server `kill -9` and restart,
//! while the server is unreachable the log keeps accepting and the forwarder catches up
//! later, and two collectors splitting a fleet write one stream without duplicates.
//!
//! Needs `nats-server` (2.9 or later) on PATH or in /usr/sbin (Debian's package); `.ci/run`
//! installs it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{
    CollectorProcess, event_ids, free_tcp_port, simulate, simulate_fleet, wait_until, write_fleet_keys,
    write_fleet_keys_from,
};

const STREAM: &str = "DRIFTLOG_TEST";
const PREFIX: &str = "dltest";

/// A `nats-server -js` child process on a fixed port and store directory, killed on drop.
/// Only this child is ever signalled (by its own handle).
struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    log: PathBuf,
}

fn nats_server_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("nats-server")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(["/usr/sbin/nats-server".into(), "/usr/local/bin/nats-server".into()])
        .find(|path| path.is_file())
        .expect("nats-server not found (PATH, /usr/sbin, /usr/local/bin); install it, e.g. apt-get install nats-server")
}

impl NatsServer {
    fn start(port: u16, dir: &Path) -> NatsServer {
        let mut server =
            NatsServer { child: None, port, store: dir.join("nats-store"), log: dir.join("nats-server.log") };
        server.spawn();
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and store, and waits until it accepts clients.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start nats-server");
        self.child = Some(child);
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = wait_until(Duration::from_secs(15), || {
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "nats-server did not come up:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// SIGKILL (through the child's handle) and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn forwarder_toml(url: &str) -> String {
    // The helper inserts this before `[ingest.udp]`: a table that ends where the next begins.
    // Windows off: these tests count the stream's messages against the log's events
    // (`event_time.rs` covers windows; window records forward like any other record).
    format!(
        "windows = []\n[forward.jetstream]\nurl = \"{url}\"\nstream = \"{STREAM}\"\nsubject_prefix = \"{PREFIX}\"\nmax_in_flight = 256\n"
    )
}

/// One message of the stream.
#[derive(Debug)]
struct Stored {
    subject: String,
    msg_id: String,
    payload: serde_json::Value,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .expect("test client cannot connect");
    async_nats::jetstream::new(client)
}

/// Every message of the stream, by sequence, read with `STREAM.MSG.GET` (no consumer).
fn stream_messages(url: &str) -> Vec<Stored> {
    use futures_util::StreamExt;
    runtime().block_on(async {
        let context = jetstream(url).await;
        let mut stream = context.get_stream(STREAM).await.expect("the forwarder created the stream");
        let info = stream.info().await.unwrap().clone();
        assert_eq!(info.config.duplicate_window, Duration::from_secs(120), "the forwarder's duplicate window");
        let state = info.state;
        assert_eq!(state.messages, state.last_sequence - state.first_sequence + 1, "no deleted messages: {state:?}");
        let stream = &stream;
        let messages: Vec<_> = futures_util::stream::iter(state.first_sequence..=state.last_sequence)
            .map(|sequence| async move {
                let message = stream.get_raw_message(sequence).await.expect("stream message");
                let msg_id = message.headers.get("Nats-Msg-Id").expect("Nats-Msg-Id header").to_string();
                Stored {
                    subject: message.subject.to_string(),
                    msg_id,
                    payload: serde_json::from_slice(&message.payload).expect("JSON payload"),
                }
            })
            .buffered(64)
            .collect()
            .await;
        assert_eq!(messages.len() as u64, state.messages);
        messages
    })
}

/// Checks that the stream holds exactly the records of `logs` (every collector's `log tail
/// --json`), each once: per message id, the same subject and payload as the log's line.
fn assert_stream_holds_exactly(messages: &[Stored], logs: &[&[serde_json::Value]]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for message in messages {
        *counts.entry(message.msg_id.as_str()).or_insert(0) += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(repeated.is_empty(), "message ids in the stream more than once: {repeated:?}");
    let mut payload_ids: BTreeMap<&str, usize> = BTreeMap::new();
    for message in messages {
        *payload_ids.entry(message.payload["id"].as_str().expect("payload id")).or_insert(0) += 1;
    }
    let repeated: Vec<_> = payload_ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(repeated.is_empty(), "events in the stream more than once: {repeated:?}");

    let by_id: BTreeMap<&str, &Stored> = messages.iter().map(|m| (m.msg_id.as_str(), m)).collect();
    let mut expected = BTreeSet::new();
    for lines in logs {
        let ids = event_ids(lines);
        assert!(ids.values().all(|n| *n == 1), "an event is in a collector's log twice");
        for line in lines.iter() {
            assert_eq!(line["kind"], "event", "only events expected in these runs: {line}");
            let id = line["id"].as_str().unwrap();
            assert!(expected.insert(id), "{id} is in two collectors' logs");
            let Some(message) = by_id.get(id) else {
                panic!("event {id} (offset {}) is not in the stream", line["offset"])
            };
            assert_eq!(message.subject, format!("{PREFIX}.events.{}", line["device"]));
            assert_eq!(&message.payload, line, "the payload is the log's JSON line");
        }
    }
    assert_eq!(messages.len(), expected.len(), "the stream holds exactly the logs' events");
}

fn wait_caught_up(collector: &CollectorProcess, at_least: f64, timeout: Duration) {
    let caught_up = wait_until(timeout, || {
        let m = collector.metrics();
        let offset = m.get("driftlog_forwarder_offset").copied().unwrap_or(0.0);
        m.get("driftlog_forwarder_lag_offsets") == Some(&0.0) && offset >= at_least
    });
    let metrics: Vec<_> = collector.metrics().into_iter().filter(|(k, _)| k.contains("forwarder")).collect();
    assert!(
        caught_up,
        "forwarder did not catch up to {at_least}: {metrics:?}\n{}",
        collector.stderr.lock().unwrap().join("\n")
    );
}

#[test]
fn forwards_every_event_once_with_a_server_restart_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(free_tcp_port(), dir.path());
    let devices = 4;
    let per_device = 2_000;
    write_fleet_keys(&dir.path().join("keys.toml"), devices);
    let collector = CollectorProcess::start(dir.path(), &forwarder_toml(&nats.url()));
    let address = collector.udp;
    let agents_dir = dir.path().join("agents");
    // 4 s of generation: the server dies and comes back while events keep arriving.
    let agents =
        std::thread::spawn(move || simulate(address, &agents_dir, devices, per_device, 500.0, Duration::from_secs(60)));

    assert!(
        wait_until(Duration::from_secs(20), || collector.metric("driftlog_forwarder_published_total") >= 500.0),
        "no forwarding before the kill: {:?}",
        collector.metrics()
    );
    nats.kill();
    let published_at_kill = collector.metric("driftlog_forwarder_published_total");
    assert!(
        wait_until(Duration::from_secs(5), || collector.metric("driftlog_forwarder_connected") == 0.0),
        "the forwarder still reports a connection to a dead server"
    );
    std::thread::sleep(Duration::from_millis(1_500));
    // The log keeps growing while the server is down.
    assert_eq!(collector.metric("driftlog_log_accepting"), 1.0);
    nats.spawn();

    let report = agents.join().unwrap();
    assert_eq!(report.backlog_remaining, 0, "agents still hold unacknowledged events: {report:?}");
    let total = devices as u64 * per_device;
    assert_eq!(report.generated, total);
    wait_caught_up(&collector, total as f64, Duration::from_secs(40));
    let metrics = collector.metrics();
    assert!(metrics["driftlog_forwarder_errors_total"] > 0.0, "the restart went unnoticed: {metrics:?}");
    assert_eq!(metrics["driftlog_forwarder_connected"], 1.0);
    assert!(metrics["driftlog_forwarder_published_total"] > published_at_kill);
    assert_eq!(metrics["driftlog_frames_refused_log_unavailable_total"], 0.0);

    let lines = collector.log_json();
    assert_eq!(lines.len() as u64, total);
    assert_stream_holds_exactly(&stream_messages(&nats.url()), &[&lines]);
}

#[test]
fn jetstream_unreachable_the_log_keeps_accepting_and_the_forwarder_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens here until the agents are done.
    let port = free_tcp_port();
    let url = format!("nats://127.0.0.1:{port}");
    let devices = 3;
    let per_device = 1_000;
    write_fleet_keys(&dir.path().join("keys.toml"), devices);
    let mut collector = CollectorProcess::start(dir.path(), &forwarder_toml(&url));
    let report =
        simulate(collector.udp, &dir.path().join("agents"), devices, per_device, 1_000.0, Duration::from_secs(60));
    let total = devices as u64 * per_device;
    assert_eq!(report.backlog_remaining, 0, "the log took everything without JetStream: {report:?}");
    assert_eq!(report.generated, total);

    let metrics = collector.metrics();
    assert_eq!(metrics["driftlog_log_accepting"], 1.0);
    assert_eq!(metrics["driftlog_frames_refused_log_unavailable_total"], 0.0);
    assert_eq!(metrics["driftlog_forwarder_connected"], 0.0);
    assert_eq!(metrics["driftlog_forwarder_offset"], 0.0);
    assert_eq!(metrics["driftlog_forwarder_lag_offsets"], total as f64);
    assert!(metrics["driftlog_forwarder_errors_total"] > 0.0, "failed connects are counted: {metrics:?}");

    let mut nats = NatsServer::start(port, dir.path());
    // The forwarder's backoff is at most 10 s.
    wait_caught_up(&collector, total as f64, Duration::from_secs(30));
    assert_eq!(collector.metric("driftlog_forwarder_connected"), 1.0);
    let lines = collector.log_json();
    assert_eq!(lines.len() as u64, total);
    assert_stream_holds_exactly(&stream_messages(&nats.url()), &[&lines]);

    // The forwarded offset is stored: restarted while JetStream is away again, the collector
    // reports no lag (nothing to resend) rather than the whole log.
    assert_eq!(collector.terminate(), Some(0));
    nats.kill();
    collector.spawn();
    let metrics = collector.metrics();
    assert_eq!(metrics["driftlog_forwarder_connected"], 0.0);
    assert_eq!(metrics["driftlog_forwarder_offset"], total as f64);
    assert_eq!(metrics["driftlog_forwarder_lag_offsets"], 0.0);
}

#[test]
fn two_collectors_splitting_the_fleet_write_one_stream_without_duplicates() {
    use driftlog_agent::simulate::FIRST_SIMULATED_DEVICE;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(free_tcp_port(), dir.path());
    let devices = 3;
    let per_device = 1_000;
    // Fleet A: ids 10000..10003 to collector 1; fleet B: ids 10003..10006 to collector 2.
    let firsts = [FIRST_SIMULATED_DEVICE, FIRST_SIMULATED_DEVICE + devices as u64];
    let mut collectors = Vec::new();
    for (index, first) in firsts.iter().enumerate() {
        let collector_dir = dir.path().join(format!("collector-{index}"));
        std::fs::create_dir_all(&collector_dir).unwrap();
        write_fleet_keys_from(&collector_dir.join("keys.toml"), *first, devices);
        collectors.push(CollectorProcess::start(&collector_dir, &forwarder_toml(&nats.url())));
    }
    let fleets: Vec<_> = firsts
        .iter()
        .zip(&collectors)
        .enumerate()
        .map(|(index, (first, collector))| {
            let (address, first) = (collector.udp, *first);
            let agents_dir = dir.path().join(format!("agents-{index}"));
            std::thread::spawn(move || {
                simulate_fleet(address, &agents_dir, first, devices, per_device, 1_000.0, Duration::from_secs(60))
            })
        })
        .collect();
    let per_fleet = devices as u64 * per_device;
    for fleet in fleets {
        let report = fleet.join().unwrap();
        assert_eq!(report.backlog_remaining, 0, "{report:?}");
        assert_eq!(report.generated, per_fleet);
    }
    for collector in &collectors {
        wait_caught_up(collector, per_fleet as f64, Duration::from_secs(30));
    }
    let logs: Vec<Vec<serde_json::Value>> = collectors.iter().map(CollectorProcess::log_json).collect();
    for (log, first) in logs.iter().zip(firsts) {
        assert_eq!(log.len() as u64, per_fleet);
        let fleet = first..first + devices as u64;
        assert!(log.iter().all(|l| fleet.contains(&l["device"].as_u64().unwrap())), "a collector got the other fleet");
    }
    let messages = stream_messages(&nats.url());
    assert_stream_holds_exactly(&messages, &[&logs[0], &logs[1]]);

    // The message id is the event's global id, the same whichever collector forwards it: a
    // copy of a collector-1 event arriving through collector 2 (say, after the fleet moved)
    // is dropped by the stream's duplicate window.
    let line = &logs[0][logs[0].len() / 2];
    let duplicate = runtime().block_on(async {
        let context = jetstream(&nats.url()).await;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", line["id"].as_str().unwrap());
        let subject = format!("{PREFIX}.events.{}", line["device"]);
        let ack = context.publish_with_headers(subject, headers, line.to_string().into()).await.unwrap();
        ack.await.unwrap()
    });
    assert!(duplicate.duplicate, "the stream did not recognise the copy: {duplicate:?}");
    assert_eq!(stream_messages(&nats.url()).len(), messages.len());
}

#[test]
fn window_results_are_forwarded_and_ticks_do_not_stall_the_forwarder() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(free_tcp_port(), dir.path());
    let devices = 2;
    let per_device = 500;
    write_fleet_keys(&dir.path().join("keys.toml"), devices);
    // Windows on (the forwarder_toml of the other tests turns them off), closing quickly: the
    // devices stop once delivered, so their last windows close by time-out.
    let forward = forwarder_toml(&nats.url()).replace("windows = []\n", "");
    let extra = format!(
        "[watermark]\nidle_timeout_ms = 300\ntick_interval_ms = 50\ncheckpoint_interval_ms = 50\nmax_outage_ms = 1000\nmax_backlog_hold_ms = 500\n[[windows]]\nname = \"w\"\ntype = \"tumbling\"\nsize_ms = 500\n{forward}"
    );
    let collector = CollectorProcess::start(dir.path(), &extra);
    let report =
        simulate(collector.udp, &dir.path().join("agents"), devices, per_device, 1_000.0, Duration::from_secs(60));
    assert_eq!(report.backlog_remaining, 0);
    let done = wait_until(Duration::from_secs(30), || {
        let m = collector.metrics();
        m.get("driftlog_windows_open") == Some(&0.0)
            && m.get("driftlog_windows_devices_open") == Some(&0.0)
            && m.get("driftlog_windows_lag_offsets") == Some(&0.0)
            && m.get("driftlog_forwarder_lag_offsets") == Some(&0.0)
    });
    assert!(
        done,
        "{:?}",
        collector
            .metrics()
            .into_iter()
            .filter(|(k, _)| k.contains("forwarder") || k.contains("window"))
            .collect::<Vec<_>>()
    );
    let lines = collector.log_json();
    assert!(lines.iter().any(|l| l["kind"] == "tick"), "the processor wrote ticks");
    let messages = stream_messages(&nats.url());
    let windows: Vec<_> = lines.iter().filter(|l| l["kind"] == "window").collect();
    let forwarded: Vec<_> = messages.iter().filter(|m| m.subject == format!("{PREFIX}.windows.w")).collect();
    assert!(!windows.is_empty());
    assert_eq!(forwarded.len(), windows.len(), "every window result is in the stream once");
    for (message, line) in forwarded.iter().zip(&windows) {
        assert_eq!(&message.payload, *line);
    }
    let events = messages.iter().filter(|m| m.subject.starts_with(&format!("{PREFIX}.events."))).count();
    assert_eq!(events as u64, devices as u64 * per_device);
    assert!(messages.iter().all(|m| !m.subject.contains("tick")), "ticks stay internal");
}

#[test]
fn statsd_flushes_are_forwarded_to_their_source_subject() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(free_tcp_port(), dir.path());
    let statsd = support::free_udp_port();
    let extra = format!(
        "{}[statsd]\nudp = \"127.0.0.1:{statsd}\"\nsource = \"edge1\"\nflush_interval_ms = 86400000\n",
        forwarder_toml(&nats.url())
    );
    let collector = CollectorProcess::start(dir.path(), &extra);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for flush in 1..=2 {
        socket.send_to(format!("hits:{flush}|c\nlatency:12|ms").as_bytes(), ("127.0.0.1", statsd)).unwrap();
        let metric = "driftlog_statsd_packets_received_total{transport=\"udp\"}";
        assert!(wait_until(Duration::from_secs(10), || collector.metric(metric) >= f64::from(flush)));
        collector.signal(nix::sys::signal::Signal::SIGUSR1);
        let flushes = "driftlog_statsd_flushes_total";
        assert!(wait_until(Duration::from_secs(10), || collector.metric(flushes) >= f64::from(flush)));
    }
    let caught_up =
        wait_until(Duration::from_secs(30), || collector.metrics().get("driftlog_forwarder_lag_offsets") == Some(&0.0));
    assert!(caught_up, "the forwarder did not catch up");
    let flushes: Vec<_> = collector.log_json().into_iter().filter(|l| l["kind"] == "statsd_flush").collect();
    let messages: Vec<_> =
        stream_messages(&nats.url()).into_iter().filter(|m| m.subject == format!("{PREFIX}.statsd.edge1")).collect();
    assert_eq!(messages.len(), 2, "each flush once, on its source's subject");
    for (message, flush) in messages.iter().zip(&flushes) {
        assert_eq!(&message.payload, flush);
        assert_eq!(message.msg_id, format!("statsd-edge1-{}", flush["flush_unix_ms"]));
    }
    assert_eq!(messages[1].payload["counters"]["hits"], serde_json::json!(2.0));
}
