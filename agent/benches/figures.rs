//! The agent's figures, measured against the collector stand-in on loopback:
//! bytes written to disk per event, RSS idle and while draining a large backlog, CPU per
//! 1 000 events/s, backlog drain rate against the configured cap, and binary size.
//!
//! `cargo bench -p driftlog-agent --bench figures`
//! (`FIGURES_BACKLOG_EVENTS=10000000` drains about 1 GB of outbox instead of the default.)

#[path = "../tests/support/collector.rs"]
mod collector;

use collector::Collector;
use driftlog_agent::outbox::{DropPolicy, Outbox, OutboxConfig};
use driftlog_protocol::wire::{Event, Payload, Sample, Tag, Tags, encode_event_record};
use driftlog_protocol::{ClockQuality, Instant, WallTime};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant as StdInstant};

const AGENT: &str = env!("CARGO_BIN_EXE_driftlog-agent");
const TAGS: [Tag<'static>; 1] = [Tag { key: "host", value: "gw-17" }];

fn event(index: u64) -> Event<'static> {
    Event {
        mono: Instant::from_micros(3_600_000_000 + index * 1_000),
        wall: Some(WallTime {
            unix_micros: 1_767_225_600_000_000 + index as i64 * 1_000,
            quality: ClockQuality::Synchronized,
        }),
        payload: Payload::Gauge(Sample { name: "cpu.user", value: index as f64 * 0.25, tags: Tags::new(&TAGS) }),
    }
}

fn write_bytes_of(pid: &str) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Bytes of the files in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().metadata().unwrap().len()).sum()
}

/// Sectors written to the block device holding the temporary directory, from
/// `/sys/block/*/stat` (all writers on the machine, filesystem journal included).
fn device_sectors_written() -> Option<u64> {
    let probe = tempfile::tempdir().ok()?;
    let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(probe.path()).ok()?);
    let (major, minor) = ((dev >> 8) & 0xfff, dev & 0xff);
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    stat.split_whitespace().nth(6)?.parse().ok()
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path, collector: std::net::SocketAddr, backlog_rate: u32) -> Agent {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[collector]\naddress = \"{collector}\"\n[outbox]\nmax_bytes = 4294967296\n[sender]\nbacklog_events_per_second = {backlog_rate}\nmax_in_flight_bytes = 1048576\n[host]\nenabled = false\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    let child = Command::new(AGENT).args(["run", "--config"]).arg(&config).stderr(Stdio::null()).spawn().unwrap();
    let socket = dir.join("data/ingest.sock");
    let deadline = StdInstant::now() + Duration::from_secs(60);
    while UnixStream::connect(&socket).is_err() {
        assert!(StdInstant::now() < deadline, "agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Agent(child)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let backlog_events: u64 =
        std::env::var("FIGURES_BACKLOG_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let mut rows: Vec<(String, String)> = Vec::new();

    // 1. Bytes written per event, by group-commit size (fsync each commit), against redb
    //    (what the outbox used before) in the same run. 10 events/s with the default 100 ms
    //    group commit is 1 event per commit; 1 000 events/s is 100.
    let mut scratch = [0u8; 512];
    let record = encode_event_record(&event(12_345), &mut scratch).unwrap();
    rows.push(("encoded event record (`cpu.user` gauge, one tag, wall clock)".into(), format!("{record} B")));
    for commit_events in [1u64, 20, 100, 256, 4_096] {
        let events = match commit_events {
            1 => 2_000,
            20 | 100 => 20_000,
            _ => 200_000u64,
        };
        let batches = events / commit_events;
        let batch = |index: u64| -> Vec<Event<'static>> {
            (0..commit_events).map(|i| event(index * commit_events + i)).collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(
            &dir.path().join("outbox"),
            OutboxConfig { max_bytes: 1 << 40, policy: DropPolicy::DropOldest },
        )
        .unwrap();
        let (before, device_before) = (write_bytes_of("self"), device_sectors_written());
        let start = StdInstant::now();
        for index in 0..batches {
            outbox.append(0, &batch(index)).unwrap();
        }
        let elapsed = start.elapsed();
        let written = write_bytes_of("self") - before;
        let device = device_sectors_written().zip(device_before).map(|(after, before)| (after - before) * 512);
        if commit_events == 256 {
            rows.push((
                "outbox size on disk per held event".into(),
                format!("{:.1} B", dir_bytes(&dir.path().join("outbox")) as f64 / events as f64),
            ));
        }
        let peer_written = {
            let peer_dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(peer_dir.path().join("peer.redb")).unwrap();
            let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");
            let before = write_bytes_of("self");
            let mut buf = [0u8; 512];
            for index in 0..batches {
                let txn = db.begin_write().unwrap();
                {
                    let mut rows = txn.open_table(table).unwrap();
                    for (i, event) in batch(index).iter().enumerate() {
                        let len = encode_event_record(event, &mut buf).unwrap();
                        rows.insert(index * commit_events + i as u64, &buf[..len]).unwrap();
                    }
                }
                txn.commit().unwrap();
            }
            write_bytes_of("self") - before
        };
        let per_event = |bytes: u64| bytes as f64 / events as f64;
        rows.push((
            format!("bytes written per event, commits of {commit_events} (fdatasync each)"),
            format!(
                "{:.1} B = {:.2}x the record ({:.0} events/s); device incl. fs journal {}; redb same run {:.1} B = {:.1}x",
                per_event(written),
                per_event(written) / record as f64,
                events as f64 / elapsed.as_secs_f64(),
                device.map_or("n/a".into(), |d| format!("{:.1} B", per_event(d))),
                per_event(peer_written),
                per_event(peer_written) / record as f64,
            ),
        ));
    }

    let collector = Collector::start();

    // 2. Idle RSS and CPU per 1 000 events/s.
    {
        let dir = tempfile::tempdir().unwrap();
        let agent = start_agent(dir.path(), collector.address, 5_000);
        std::thread::sleep(Duration::from_secs(2));
        rows.push(("RSS idle".into(), format!("{:.1} MiB", rss_kib(agent.0.id()) as f64 / 1024.0)));
        let stream = UnixStream::connect(dir.path().join("data/ingest.sock")).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = BufReader::new(stream).lines();
            let mut answered = 0u64;
            while let Some(Ok(_)) = lines.next() {
                answered += 1;
            }
            answered
        });
        let seconds = 10u64;
        let cpu_before = cpu_seconds(agent.0.id());
        let start = StdInstant::now();
        for tick in 0..seconds * 100 {
            let mut lines = String::new();
            for i in 0..10 {
                lines.push_str(&format!("load.value={}\n", tick * 10 + i));
            }
            writer.write_all(lines.as_bytes()).unwrap();
            let next = start + Duration::from_millis((tick + 1) * 10);
            std::thread::sleep(next.saturating_duration_since(StdInstant::now()));
        }
        let cpu = cpu_seconds(agent.0.id()) - cpu_before;
        let wall = start.elapsed().as_secs_f64();
        rows.push((
            "agent CPU at 1 000 events/s (ingest socket, group commit, send, ACK)".into(),
            format!("{:.1} % of one core", cpu / wall * 100.0),
        ));
        rows.push(("RSS at 1 000 events/s".into(), format!("{:.1} MiB", rss_kib(agent.0.id()) as f64 / 1024.0)));
        drop(writer);
        drop(agent);
        let _ = reader.join();
    }

    // 3. Drain a large backlog: RSS must stay flat; the rate must respect the cap.
    for cap in [20_000u32, 0] {
        let dir = tempfile::tempdir().unwrap();
        let events = if cap == 0 { backlog_events } else { backlog_events.min(200_000) };
        {
            std::fs::create_dir_all(dir.path().join("data")).unwrap();
            let mut outbox = Outbox::open(
                &dir.path().join("data/outbox"),
                OutboxConfig { max_bytes: 1 << 40, policy: DropPolicy::DropOldest },
            )
            .unwrap();
            for batch in 0..events.div_ceil(4_096) {
                let batch_events: Vec<Event<'static>> = (0..4_096).map(|i| event(batch * 4_096 + i)).collect();
                outbox.append(0, &batch_events).unwrap();
            }
        }
        let outbox_bytes = dir_bytes(&dir.path().join("data/outbox"));
        let already = collector.values(0).len() as u64;
        let agent = start_agent(dir.path(), collector.address, cap);
        let start = StdInstant::now();
        let (mut rss_max, mut rss_first) = (0u64, None);
        let deadline = start + Duration::from_secs(900);
        while (collector.values(0).len() as u64) < already + events.div_ceil(4_096) * 4_096 {
            assert!(StdInstant::now() < deadline, "drain did not finish");
            let rss = rss_kib(agent.0.id());
            rss_max = rss_max.max(rss);
            if start.elapsed() > Duration::from_secs(1) {
                rss_first.get_or_insert(rss);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let delivered = events.div_ceil(4_096) * 4_096;
        let label = if cap == 0 { "uncapped".to_string() } else { format!("cap {cap} events/s") };
        rows.push((
            format!("drain {delivered} events ({:.0} MiB outbox), {label}", outbox_bytes as f64 / 1_048_576.0),
            format!(
                "{:.0} events/s, RSS max {:.1} MiB (after 1 s: {:.1} MiB)",
                delivered as f64 / elapsed,
                rss_max as f64 / 1024.0,
                rss_first.unwrap_or(rss_max) as f64 / 1024.0
            ),
        ));
    }
    assert_eq!(collector.log.lock().unwrap().duplicates, 0);

    // 4. Binary size.
    let size = std::fs::metadata(AGENT).map(|m| m.len()).unwrap_or(0);
    let stripped = std::env::temp_dir().join("driftlog-agent-stripped");
    let stripped_size = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(AGENT)
        .status()
        .ok()
        .filter(|s| s.success())
        .and_then(|_| std::fs::metadata(&stripped).ok())
        .map(|m| m.len());
    rows.push((
        "agent binary (bench profile)".into(),
        format!(
            "{:.1} MiB, stripped {}",
            size as f64 / 1_048_576.0,
            stripped_size.map_or("n/a".into(), |s| format!("{:.1} MiB", s as f64 / 1_048_576.0))
        ),
    ));

    println!("| figure | value |\n|---|---|");
    for (name, value) in rows {
        println!("| {name} | {value} |");
    }
}
