//! StatsD figures: lines per second aggregated without loss and CPU per line, for the
//! collector and the reference server (statsd 0.9.0 under node, `tests/statsd_peers`)
//! measured in the same run on the same offered load, with 1-line and 20-line datagrams;
//! then the collector's memory per 100 000 distinct keys (counters; timers with 100 values
//! each).
//!
//! Each server gets a ladder of offered rates, 2 s each (the last step unthrottled: the
//! loopback sender's limit, one thread sending from 8 ports); a step is lossless when every
//! line sent was aggregated. Both run as shipped: the collector with its default 8 MiB
//! receive buffers and one socket per core, the reference with node's default buffer. CPU
//! is the server process's user + system time over the step (`/proc/<pid>/stat`).
//!
//! `cargo bench -p driftlog-collector --bench statsd` (`STATSD_BENCH_STEP_MS` sets the
//! step length, `STATSD_BENCH_SKIP_REFERENCE=1` measures the collector alone).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_driftlog-collector");

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        * 1024.0
}

/// A server under test: how to read how many lines it has aggregated.
trait Server {
    fn pid(&self) -> u32;
    fn udp(&self) -> SocketAddr;
    fn lines_received(&mut self, lines_per_datagram: u64) -> u64;
}

struct Collector {
    child: Child,
    udp: SocketAddr,
    http: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start(extra: &str) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nwindows = []\n[ingest.udp]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"{http}\"\n[statsd]\nudp = \"{udp}\"\nflush_interval_ms = 86400000\n{extra}\n",
                dir.path().join("data"),
                free_port()
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let collector = Collector { child, udp, http, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while driftlog_collector::tail::http_get(http, "/health").is_err() {
            assert!(Instant::now() < deadline, "the collector did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        collector
    }

    fn metric(&self, name: &str) -> f64 {
        let Ok((200, body)) = driftlog_collector::tail::http_get(self.http, "/metrics") else { return 0.0 };
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server for Collector {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn udp(&self) -> SocketAddr {
        self.udp
    }
    fn lines_received(&mut self, _: u64) -> u64 {
        self.metric("driftlog_statsd_lines_received_total") as u64
    }
}

/// The reference server with the tests' manual flush preload (which also reports how many
/// packets it handled).
struct Reference {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<String>,
    udp: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Reference {
    fn start() -> Option<Reference> {
        let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/statsd_peers");
        if !peers.join("node_modules/statsd/stats.js").exists() {
            eprintln!("reference server not installed (npm install in {}): skipped", peers.display());
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("config.js");
        std::fs::write(
            &config,
            format!(
                "{{ port: {}, address: \"127.0.0.1\", mgmt_port: {}, mgmt_address: \"127.0.0.1\", flushInterval: 86400000, backends: [{:?}], captureFile: {:?}, automaticConfigReload: false }}",
                udp.port(),
                free_port(),
                peers.join("capture_backend.js"),
                dir.path().join("flushes.jsonl")
            ),
        )
        .unwrap();
        let mut child = Command::new("node")
            .arg("-r")
            .arg(peers.join("manual_flush.js"))
            .arg(peers.join("node_modules/statsd/stats.js"))
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = child.stdout.take()?;
        let (sender, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let ready = answers.recv_timeout(Duration::from_secs(30)).ok()?;
        assert_eq!(ready, "ready");
        // Node binds the port a moment after its flush timer is set (`ready`).
        let deadline = Instant::now() + Duration::from_secs(20);
        while UdpSocket::bind(udp).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Reference { child, stdin, answers, udp, _dir: dir })
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server for Reference {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn udp(&self) -> SocketAddr {
        self.udp
    }
    fn lines_received(&mut self, lines_per_datagram: u64) -> u64 {
        let _ = writeln!(self.stdin, "?");
        let handled = loop {
            match self.answers.recv_timeout(Duration::from_secs(10)) {
                Ok(line) => {
                    if let Some(n) = line.strip_prefix("handled ") {
                        break n.parse::<u64>().unwrap_or(0);
                    }
                }
                Err(_) => break 0,
            }
        };
        handled * lines_per_datagram
    }
}

/// `count` datagrams of `lines` lines each over `keys` keys: counters and timers.
fn datagrams(lines: usize, count: usize, keys: usize) -> Vec<Vec<u8>> {
    let mut rng = driftlog_protocol::SplitMix64::new(42);
    (0..count)
        .map(|_| {
            let body: Vec<String> = (0..lines)
                .map(|_| {
                    let key = rng.below_inclusive(keys as u64 - 1);
                    if rng.below_inclusive(3) == 0 {
                        format!("bench.timer.{key}:{}|ms", rng.below_inclusive(1_000))
                    } else {
                        format!("bench.counter.{key}:1|c")
                    }
                })
                .collect();
            body.join("\n").into_bytes()
        })
        .collect()
}

/// Sends datagrams round-robin from `pool` to `to` at `rate` datagrams/s (unthrottled for
/// `None`) for `duration`; returns how many were sent. From 8 source ports, as from several
/// clients: `SO_REUSEPORT` spreads senders, not one sender's datagrams, over the sockets.
fn offer(pool: &[Vec<u8>], to: SocketAddr, rate: Option<f64>, duration: Duration) -> u64 {
    let sockets: Vec<UdpSocket> = (0..8)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(to).unwrap();
            socket
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        if let Some(rate) = rate {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        for _ in 0..16 {
            if sockets[(sent as usize) % sockets.len()].send(&pool[(sent as usize) % pool.len()]).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

/// Waits until the server's count stops moving (it has drained its socket).
fn settle(server: &mut dyn Server, lines: u64) -> u64 {
    let mut last = server.lines_received(lines);
    loop {
        std::thread::sleep(Duration::from_millis(400));
        let now = server.lines_received(lines);
        if now == last {
            return now;
        }
        last = now;
    }
}

#[derive(Clone, Copy, Debug)]
struct Step {
    offered_lines_per_s: Option<f64>,
    sent_lines: u64,
    received_lines: u64,
    seconds: f64,
    cpu_seconds: f64,
}

impl Step {
    fn lossless(&self) -> bool {
        self.received_lines == self.sent_lines
    }
    fn achieved(&self) -> f64 {
        self.sent_lines as f64 / self.seconds
    }
    fn cpu_us_per_line(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.received_lines.max(1) as f64
    }
}

fn ladder(server: &mut dyn Server, pool: &[Vec<u8>], lines: u64, rates: &[Option<f64>], step: Duration) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lossy = 0;
    for &rate in rates {
        let before = settle(server, lines);
        let cpu_before = cpu_seconds(server.pid());
        let started = Instant::now();
        let sent = offer(pool, server.udp(), rate.map(|r| r / lines as f64), step);
        let seconds = started.elapsed().as_secs_f64();
        let received = settle(server, lines) - before;
        let cpu = cpu_seconds(server.pid()) - cpu_before;
        let result = Step {
            offered_lines_per_s: rate,
            sent_lines: sent * lines,
            received_lines: received,
            seconds,
            cpu_seconds: cpu,
        };
        eprintln!("  {result:?}");
        lossy = if result.lossless() { 0 } else { lossy + 1 };
        steps.push(result);
        if lossy == 2 {
            break;
        }
    }
    steps
}

fn summary(name: &str, steps: &[Step]) -> (Option<Step>, String) {
    let best = steps.iter().filter(|s| s.lossless()).max_by(|a, b| a.achieved().total_cmp(&b.achieved())).copied();
    let text = match best {
        Some(s) => format!(
            "{name}: highest lossless {:.0} lines/s ({}), {:.3} µs CPU per line there",
            s.achieved(),
            s.offered_lines_per_s.map_or("unthrottled: the sender's limit".to_string(), |r| format!("offered {r:.0}")),
            s.cpu_us_per_line()
        ),
        None => format!("{name}: no lossless step"),
    };
    (best, text)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let step =
        Duration::from_millis(std::env::var("STATSD_BENCH_STEP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000));
    let skip_reference = std::env::var("STATSD_BENCH_SKIP_REFERENCE").is_ok_and(|v| v == "1");
    let mut report = Vec::new();
    for lines in [1u64, 20] {
        let pool = datagrams(lines as usize, 4_096, 1_000);
        let rates: Vec<Option<f64>> = if lines == 1 {
            [10e3, 20e3, 40e3, 80e3, 160e3, 320e3].into_iter().map(Some).chain([None]).collect()
        } else {
            [50e3, 100e3, 200e3, 400e3, 800e3, 1.6e6, 3.2e6].into_iter().map(Some).chain([None]).collect()
        };
        eprintln!("== {lines}-line datagrams: driftlog collector");
        let mut collector = Collector::start("");
        let ours = ladder(&mut collector, &pool, lines, &rates, step);
        drop(collector);
        let (our_best, text) = summary("driftlog", &ours);
        report.push(format!("{lines}-line datagrams, {text}"));
        if skip_reference {
            continue;
        }
        let Some(mut reference) = Reference::start() else { continue };
        eprintln!("== {lines}-line datagrams: reference statsd 0.9.0");
        let theirs = ladder(&mut reference, &pool, lines, &rates, step);
        drop(reference);
        let (their_best, text) = summary("reference", &theirs);
        report.push(format!("{lines}-line datagrams, {text}"));
        if let (Some(ours_best), Some(theirs_best)) = (our_best, their_best) {
            report.push(format!(
                "{lines}-line datagrams: highest lossless rate ratio {:.1}x",
                ours_best.achieved() / theirs_best.achieved()
            ));
            // CPU per line at equal load: the same offered step, lossless for both.
            let mut same = theirs.iter().filter(|t| t.lossless()).filter_map(|t| {
                ours.iter().find(|o| o.offered_lines_per_s == t.offered_lines_per_s && o.lossless()).map(|o| (o, t))
            });
            if let Some((o, t)) = same.next_back() {
                report.push(format!(
                    "{lines}-line datagrams at {:.0} lines/s offered to both: CPU per line {:.3} µs (driftlog) vs {:.3} µs (reference) = {:.1}x less",
                    t.offered_lines_per_s.unwrap_or(0.0),
                    o.cpu_us_per_line(),
                    t.cpu_us_per_line(),
                    t.cpu_us_per_line() / o.cpu_us_per_line()
                ));
            }
        }
    }
    report.extend(memory());
    println!("\nStatsD figures:");
    for line in &report {
        println!("- {line}");
    }
}

/// Waits until the collector has taken `lines`; panics if lines were lost (it would wait
/// forever).
fn wait_for_lines(collector: &Collector, lines: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while (collector.metric("driftlog_statsd_lines_received_total") as u64) < lines {
        assert!(Instant::now() < deadline, "lines lost while measuring memory");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Memory per 100 000 distinct keys: RSS growth after 100 000 counters, and after 100 000
/// timers of 100 values each, before they are flushed.
fn memory() -> Vec<String> {
    let keys = 100_000usize;
    let mut out = Vec::new();
    for (name, values_per_key) in [("counters", 1usize), ("timers with 100 values each", 100)] {
        let collector = Collector::start("");
        std::thread::sleep(Duration::from_millis(300));
        let baseline = rss_bytes(collector.pid());
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(collector.udp).unwrap();
        let mut sent_lines = 0u64;
        let mut batch = Vec::new();
        for value in 0..values_per_key {
            for key in 0..keys {
                let line =
                    if values_per_key == 1 { format!("mem.c.{key}:1|c") } else { format!("mem.t.{key}:{value}|ms") };
                batch.push(line);
                if batch.len() == 20 {
                    socket.send(batch.join("\n").as_bytes()).unwrap();
                    sent_lines += 20;
                    batch.clear();
                    if sent_lines.is_multiple_of(10_000) {
                        // 500 datagrams at a time, each lot taken before the next: the
                        // socket buffer never overflows, every line is kept.
                        wait_for_lines(&collector, sent_lines);
                    }
                }
            }
        }
        wait_for_lines(&collector, sent_lines);
        let grown = rss_bytes(collector.pid()) - baseline;
        out.push(format!(
            "memory per 100 000 distinct keys, {name}: {:.1} MiB RSS growth ({:.0} bytes per key; {} keys held)",
            grown / (1 << 20) as f64,
            grown / keys as f64,
            collector.metric("driftlog_statsd_keys")
        ));
    }
    out
}
