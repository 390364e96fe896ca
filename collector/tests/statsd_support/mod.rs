//! StatsD test peers: the reference server (statsd 0.9.0 from npm, run by node with a
//! capture backend and a manual flush trigger, `tests/statsd_peers/`), the collector's
//! flushes read back from its log, and a comparison of the two.
#![allow(dead_code, unreachable_pub)]

use super::support::{CollectorProcess, free_tcp_port, free_udp_port, wait_until};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// `tests/statsd_peers`, with its npm packages installed (`.ci/run` does it).
pub fn peers_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/statsd_peers");
    assert!(
        dir.join("node_modules/statsd/stats.js").exists(),
        "the StatsD peers are not installed: run `npm install` in {} (.ci/run does)",
        dir.display()
    );
    dir
}

/// The reference server with every flush captured as a JSON line.
pub struct ReferenceServer {
    child: Child,
    stdin: ChildStdin,
    flushed: Receiver<String>,
    capture: PathBuf,
    stderr: PathBuf,
    pub udp: SocketAddr,
}

impl ReferenceServer {
    /// Starts it with `config` (JavaScript object fields, e.g. `deleteIdleStats: true,`).
    pub fn start(dir: &Path, config: &str) -> ReferenceServer {
        let peers = peers_dir();
        let udp: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let capture = dir.join("reference-flushes.jsonl");
        let config_path = dir.join("reference-config.js");
        std::fs::write(
            &config_path,
            format!(
                "{{ port: {}, address: \"127.0.0.1\", mgmt_port: {}, mgmt_address: \"127.0.0.1\", flushInterval: 86400000, \
                 backends: [{:?}], captureFile: {:?}, automaticConfigReload: false, {config} }}",
                udp.port(),
                free_tcp_port(),
                peers.join("capture_backend.js"),
                capture,
            ),
        )
        .unwrap();
        let mut child = Command::new("node")
            .arg("-r")
            .arg(peers.join("manual_flush.js"))
            .arg(peers.join("node_modules/statsd/stats.js"))
            .arg(&config_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("reference-stderr.log")).unwrap())
            .spawn()
            .expect("node must be installed (.ci/run installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, flushed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let ours = line.starts_with("flushed") || line.starts_with("handled ") || line == "ready";
                if ours && sender.send(line).is_err() {
                    return;
                }
            }
        });
        let ready = flushed.recv_timeout(Duration::from_secs(30));
        assert_eq!(ready.as_deref(), Ok("ready"), "the reference server did not start");
        // `ready` comes when its flush timer is set; node binds the port a moment later.
        let bound = wait_until(Duration::from_secs(20), || std::net::UdpSocket::bind(udp).is_err());
        assert!(bound, "the reference server did not bind {udp}");
        ReferenceServer { child, stdin, flushed, capture, stderr: dir.join("reference-stderr.log"), udp }
    }

    /// Waits until it has handled `packets` UDP packets in all (senders pace themselves by
    /// it: node's socket buffer holds only a few hundred datagrams, and a loaded machine
    /// starves node); false after 30 s.
    pub fn wait_handled(&mut self, packets: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut handled = 0;
        while std::time::Instant::now() < deadline {
            writeln!(self.stdin, "?").unwrap();
            let Ok(answer) = self.flushed.recv_timeout(Duration::from_secs(10)) else { continue };
            handled = answer.strip_prefix("handled ").and_then(|n| n.parse().ok()).unwrap_or(handled);
            if handled >= packets {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let drops = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        let port = format!(":{:04X} ", self.udp.port());
        let socket = drops.lines().find(|l| l.contains(&port)).unwrap_or("not listed");
        panic!(
            "the reference server handled {handled} of {packets} packets; its socket: {socket}; stderr: {}",
            self.stderr_tail()
        );
    }

    fn stderr_tail(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        stderr.lines().rev().take(15).collect::<Vec<_>>().join("\n")
    }

    /// Flushes once it has handled `packets` UDP packets in all; returns the flush.
    pub fn flush(&mut self, packets: u64) -> Value {
        writeln!(self.stdin, "{packets}").unwrap();
        if self.flushed.recv_timeout(Duration::from_secs(30)).is_err() {
            let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
            panic!(
                "the reference server did not handle {packets} packets (UDP loss, or it died); its stderr ends:\n{}",
                tail.join("\n")
            );
        }
        let text = std::fs::read_to_string(&self.capture).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }
}

impl Drop for ReferenceServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `driftlog_statsd_packets_received_total` for `transport`.
pub fn packets_received(collector: &CollectorProcess, transport: &str) -> f64 {
    collector.metric(&format!("driftlog_statsd_packets_received_total{{transport=\"{transport}\"}}"))
}

/// Every `statsd_flush` record in the collector's log.
pub fn collector_flushes(collector: &CollectorProcess) -> Vec<Value> {
    collector.log_json().into_iter().filter(|line| line["kind"] == "statsd_flush").collect()
}

/// Flushes the collector (SIGUSR1) once it has received `packets` on `transport`; returns
/// the new flush record.
pub fn flush_collector(collector: &CollectorProcess, transport: &str, packets: u64) -> Value {
    let arrived = wait_until(Duration::from_secs(30), || packets_received(collector, transport) >= packets as f64);
    assert!(arrived, "the collector received {} of {packets} packets", packets_received(collector, transport));
    let before = collector.metric("driftlog_statsd_flushes_total");
    collector.signal(nix::sys::signal::Signal::SIGUSR1);
    let flushed = wait_until(Duration::from_secs(30), || collector.metric("driftlog_statsd_flushes_total") > before);
    assert!(flushed, "the collector did not flush after SIGUSR1");
    collector_flushes(collector).pop().unwrap()
}

/// The fields both servers' flushes have, timing fields aside (`statsd.timestamp_lag`,
/// `processing_time`).
const COMPARED: [&str; 6] = ["counters", "counter_rates", "gauges", "timer_data", "timer_counters", "sets"];

/// Asserts the two flushes hold the same keys and the same numbers (`null` for NaN and
/// infinities in both, as JSON has neither).
pub fn assert_same_flush(reference: &Value, ours: &Value, context: &str) {
    for field in COMPARED {
        let mut expected = reference[field].clone();
        let mut got = ours[field].clone();
        for value in [&mut expected, &mut got] {
            if let Some(map) = value.as_object_mut() {
                map.remove("statsd.timestamp_lag");
            }
        }
        let mut differences = Vec::new();
        diff(&expected, &got, field, &mut differences);
        assert!(
            differences.is_empty(),
            "{context}: {} differences in {field} (reference vs driftlog), first ones:\n{}",
            differences.len(),
            differences.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

fn diff(expected: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (key, value) in e {
                match g.get(key) {
                    Some(other) => diff(value, other, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}: {value} missing")),
                }
            }
            for key in g.keys().filter(|k| !e.contains_key(*k)) {
                out.push(format!("{path}.{key}: {} not in the reference", g[key]));
            }
        }
        (Value::Number(e), Value::Number(g)) => {
            // JavaScript prints integral doubles without a fraction: compare as doubles.
            if e.as_f64() != g.as_f64() {
                out.push(format!("{path}: {e} vs {g}"));
            }
        }
        (e, g) if e == g => {}
        (e, g) => out.push(format!("{path}: {e} vs {g}")),
    }
}
