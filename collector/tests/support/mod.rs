//! Runs the real collector binary as a child process for tests: a config in a temp dir,
//! fixed free ports (so a restart after `kill -9` listens where the agents send), stderr
//! captured, and helpers for `/metrics`, `/health` and `log tail --json`.
#![allow(dead_code, unreachable_pub)]

pub mod frames;
/// The agent tests' namespace runner (`unshare -n` needs root, which CI has).
#[path = "../../../agent/tests/support/netns.rs"]
pub mod netns;
pub mod proxy;
pub mod relay;
/// The agent tests' tmpfs helper (mounting needs root, which CI has).
#[path = "../../../agent/tests/support/tmpfs.rs"]
pub mod tmpfs;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_driftlog-collector");

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    condition()
}

pub struct CollectorProcess {
    child: Option<Child>,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub udp: SocketAddr,
    pub http: SocketAddr,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl CollectorProcess {
    /// Writes `dir/collector.toml` (data in `dir/data`, keys in `dir/keys.toml`, UDP and HTTP on
    /// free ports) with `extra` appended, and starts the collector.
    pub fn start(dir: &Path, extra: &str) -> CollectorProcess {
        CollectorProcess::start_with_udp(dir, extra, "")
    }

    /// As [`Self::start`], with `udp_extra` appended to the `[ingest.udp]` table.
    pub fn start_with_udp(dir: &Path, extra: &str, udp_extra: &str) -> CollectorProcess {
        let keys = dir.join("keys.toml");
        if !keys.exists() {
            std::fs::write(&keys, "").unwrap();
        }
        CollectorProcess::start_configured(dir, &format!("keys_file = {keys:?}\n{extra}"), udp_extra)
    }

    /// As [`Self::start`] but with no keys file: a first run.
    pub fn start_without_keys(dir: &Path, extra: &str) -> CollectorProcess {
        CollectorProcess::start_configured(dir, extra, "")
    }

    fn start_configured(dir: &Path, extra: &str, udp_extra: &str) -> CollectorProcess {
        let udp: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let config_path = dir.join("collector.toml");
        let text = format!(
            "data_dir = {:?}\n{extra}\n[ingest.udp]\nlisten = \"{udp}\"\nsockets = 2\n{udp_extra}\n[http]\nlisten = \"{http}\"\n",
            dir.join("data"),
        );
        std::fs::write(&config_path, text).unwrap();
        let mut collector = CollectorProcess {
            child: None,
            dir: dir.to_path_buf(),
            config_path,
            udp,
            http,
            stderr: Arc::new(Mutex::new(Vec::new())),
        };
        collector.spawn();
        collector
    }

    /// (Re)starts the process with the same config and waits until it serves `/health`.
    pub fn spawn(&mut self) {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = self.stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(30), || self.get("/health").is_some());
        assert!(up, "collector did not come up: {:?}", self.stderr.lock().unwrap());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// `(VmRSS, VmHWM)` of the process, KiB: its resident memory now and at its peak.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` to the process (SIGSTOP and SIGCONT to pause it).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        driftlog_collector::tail::http_get(self.http, path).ok()
    }

    /// `/metrics` as name (with labels) → value.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let Some((200, body)) = self.get("/metrics") else { return BTreeMap::new() };
        driftlog_collector::tail::metric_values(&body)
    }

    pub fn metric(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(0.0)
    }

    /// Every record, via `driftlog-collector log tail --json` (the file when stopped, HTTP when
    /// running).
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        let output =
            Command::new(BIN).args(["log", "tail", "--json", "--config"]).arg(&self.config_path).output().unwrap();
        assert!(output.status.success(), "log tail failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// `driftlog-collector log stats` (the file when stopped, HTTP when running).
    pub fn log_stats(&self) -> serde_json::Value {
        let output = Command::new(BIN).args(["log", "stats", "--config"]).arg(&self.config_path).output().unwrap();
        assert!(output.status.success(), "log stats failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Event ids in `lines`, with how often each appears.
pub fn event_ids(lines: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for line in lines.iter().filter(|l| l["kind"] == "event") {
        *ids.entry(line["id"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    ids
}

pub const FLEET_SEED: u64 = 7;

/// Writes the keys of `simulate`'s fleet of `devices` as the collector's keys file.
pub fn write_fleet_keys(keys_file: &Path, devices: usize) {
    write_fleet_keys_from(keys_file, driftlog_agent::simulate::FIRST_SIMULATED_DEVICE, devices);
}

/// Writes the keys of `simulate_fleet`'s fleet (`devices` ids from `first_device`) as the
/// collector's keys file.
pub fn write_fleet_keys_from(keys_file: &Path, first_device: u64, devices: usize) {
    use driftlog_agent::simulate::{fleet_keys_from, write_keys_file};
    write_keys_file(keys_file, &fleet_keys_from(FLEET_SEED, first_device, devices)).unwrap();
}

/// Runs `driftlog-agent simulate` in-process (the agent library: real UDP sockets, real
/// outboxes on disk) against `collector`, whose keys file must hold the fleet's keys.
pub fn simulate(
    collector: SocketAddr,
    data_dir: &Path,
    devices: usize,
    events: u64,
    rate: f64,
    drain_timeout: Duration,
) -> driftlog_agent::simulate::SimulationReport {
    let first = driftlog_agent::simulate::FIRST_SIMULATED_DEVICE;
    simulate_fleet(collector, data_dir, first, devices, events, rate, drain_timeout)
}

/// `simulate` with device ids from `first_device` (two calls with disjoint ranges are two
/// fleets).
pub fn simulate_fleet(
    collector: SocketAddr,
    data_dir: &Path,
    first_device: u64,
    devices: usize,
    events: u64,
    rate: f64,
    drain_timeout: Duration,
) -> driftlog_agent::simulate::SimulationReport {
    simulate_paced(collector, data_dir, first_device, devices, events, rate, drain_timeout, 20_000)
}

/// `simulate_fleet` whose devices replay a backlog at `backlog_events_per_second`.
#[allow(clippy::too_many_arguments)]
pub fn simulate_paced(
    collector: SocketAddr,
    data_dir: &Path,
    first_device: u64,
    devices: usize,
    events: u64,
    rate: f64,
    drain_timeout: Duration,
    backlog_events_per_second: u32,
) -> driftlog_agent::simulate::SimulationReport {
    use driftlog_agent::simulate::{SimulateOptions, fleet_keys_from, run_fleet};
    let seed = FLEET_SEED;
    let keys = fleet_keys_from(seed, first_device, devices);
    run_fleet(
        &SimulateOptions {
            devices,
            rate,
            duration: None,
            events: Some(events),
            clock_offset_ms: 5_000.0,
            clock_drift_ppm: 50.0,
            collector,
            data_dir: data_dir.to_path_buf(),
            seed,
            drain_timeout,
            backlog_events_per_second,
            outage: None,
        },
        &keys,
    )
    .unwrap()
}
