//! The collector binary as a child process with real agents (the agent library's simulate:
//! real UDP sockets and on-disk outboxes): exactly-once across repeated `kill -9`, bad
//! frames counted and harmless, graceful shutdown.

mod support;

use driftlog_protocol::wire::{MacKey, Sealer};
use std::time::Duration;
use support::{CollectorProcess, event_ids, simulate, wait_until, write_fleet_keys};

#[test]
fn every_acknowledged_event_is_in_the_log_once_across_repeated_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let devices = 4;
    let per_device = 2_500;
    write_fleet_keys(&dir.path().join("keys.toml"), devices);
    let mut collector = CollectorProcess::start(dir.path(), "");
    let address = collector.udp;
    let agents_dir = dir.path().join("agents");
    let agents = std::thread::spawn(move || {
        simulate(address, &agents_dir, devices, per_device, 1_000.0, Duration::from_secs(120))
    });
    // Kill the collector under load, three times, each after some events were committed.
    for round in 0..3 {
        let before = collector.metric("driftlog_events_committed_total");
        assert!(
            wait_until(Duration::from_secs(30), || collector.metric("driftlog_events_committed_total")
                > before + 500.0),
            "round {round}: no progress"
        );
        collector.kill9();
        std::thread::sleep(Duration::from_millis(300));
        collector.spawn();
    }
    let report = agents.join().unwrap();
    assert_eq!(report.backlog_remaining, 0, "agents still hold unacknowledged events: {report:?}");
    assert_eq!(report.generated, devices as u64 * per_device);
    assert_eq!(collector.terminate(), Some(0));
    let lines = collector.log_json();
    let ids = event_ids(&lines);
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(repeated.is_empty(), "events in the log more than once: {repeated:?}");
    assert_eq!(ids.len() as u64, report.generated, "every generated event is in the log");
    // Offsets are dense and increasing.
    let offsets: Vec<u64> = lines.iter().map(|l| l["offset"].as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1));
}

fn data_frame(sealer: &mut Sealer, sent_at_us: u64, seq: u64) -> Vec<u8> {
    let epoch = sealer.epoch();
    support::frames::data_frame(sealer, sent_at_us, 0, epoch, seq, 1.0)
}

#[test]
fn bad_frames_are_counted_per_reason_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [9u8; 32];
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.path().join("keys.toml"), format!("[[device]]\ndevice_id = 5\nkey_id = 5\nkey = \"{hex}\"\n"))
        .unwrap();
    let collector = CollectorProcess::start(dir.path(), "development_key = false");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |bytes: &[u8]| socket.send_to(bytes, collector.udp).unwrap();

    let mut sealer = Sealer::new(5, MacKey::new(&secret), 77);
    let good = data_frame(&mut sealer, 1_000, 0);
    send(&good);
    assert!(wait_until(Duration::from_secs(10), || collector.metric("driftlog_events_committed_total") == 1.0));

    let mut forged = data_frame(&mut sealer, 2_000, 1);
    let last = forged.len() - 1;
    forged[last] ^= 0xFF;
    let mut wrong_version = data_frame(&mut sealer, 3_000, 1);
    wrong_version[1] = 0x71;
    let mut unknown_key = data_frame(&mut sealer, 4_000, 1);
    unknown_key[2] = 99;
    let mut impostor = Sealer::new(6, MacKey::new(&[1; 32]), 1);
    let unknown_device = data_frame(&mut impostor, 5_000, 0);
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (good.clone(), "replayed"),
        (forged, "forged"),
        (wrong_version, "unknown_version"),
        (unknown_key, "unknown_key"),
        (unknown_device, "unknown_key"),
        (vec![0xD7], "truncated"),
        (b"hello world, not a frame".to_vec(), "bad_magic"),
        (vec![0xD7; 4_000], "oversized"),
    ];
    for _ in 0..50 {
        for (bytes, _) in &bad {
            send(bytes);
        }
    }
    let total = 50.0 * bad.len() as f64;
    assert!(wait_until(Duration::from_secs(10), || {
        let m = collector.metrics();
        m.iter().filter(|(k, _)| k.starts_with("driftlog_frames_rejected_total")).map(|(_, v)| v).sum::<f64>() >= total
    }));
    let metrics = collector.metrics();
    for (_, reason) in &bad {
        let count = metrics[&format!("driftlog_frames_rejected_total{{reason=\"{reason}\"}}")];
        assert!(count >= 50.0, "{reason}: {count}");
    }
    assert_eq!(metrics["driftlog_events_committed_total"], 1.0, "nothing bad reached the log");
    assert_eq!(collector.get("/health").map(|r| r.0), Some(200), "{:?}", collector.stderr.lock().unwrap());
    // Per-packet problems are summarised, never logged once per packet.
    let warnings = collector.stderr.lock().unwrap().iter().filter(|l| l.contains("rejected")).count();
    assert!(warnings <= 2, "{warnings} reject log lines for {total} bad frames");
    // The state did not change: the next real frame is admitted.
    send(&data_frame(&mut sealer, 6_000, 1));
    assert!(wait_until(Duration::from_secs(10), || collector.metric("driftlog_events_committed_total") == 2.0));
}

#[test]
fn every_datagram_is_either_received_or_counted_as_a_kernel_drop() {
    let dir = tempfile::tempdir().unwrap();
    // A small receive buffer, so a burst while the collector is paused overflows it.
    let collector = CollectorProcess::start_with_udp(dir.path(), "", "receive_buffer_bytes = 65536");
    collector.signal(nix::sys::signal::Signal::SIGSTOP);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = 3_000u64;
    for _ in 0..sent {
        socket.send_to(&[0x55u8; 200], collector.udp).unwrap();
    }
    collector.signal(nix::sys::signal::Signal::SIGCONT);
    // Nothing is sent after the burst: the drops are counted all the same (read from the
    // kernel once a second, not carried by a later datagram).
    let accounted = wait_until(Duration::from_secs(10), || {
        collector.metric("driftlog_datagrams_received_total") + collector.metric("driftlog_kernel_receive_drops_total")
            == sent as f64
    });
    let metrics = collector.metrics();
    assert!(
        accounted,
        "received {} + dropped {} != sent {sent}",
        metrics["driftlog_datagrams_received_total"], metrics["driftlog_kernel_receive_drops_total"]
    );
    assert!(metrics["driftlog_kernel_receive_drops_total"] > 0.0, "the burst overflowed the buffer");
    assert!(metrics["driftlog_datagrams_received_total"] > 0.0);
}

#[test]
fn sigterm_commits_acknowledges_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet_keys(&dir.path().join("keys.toml"), 2);
    let mut collector = CollectorProcess::start(dir.path(), "");
    let report = simulate(collector.udp, &dir.path().join("agents"), 2, 300, 500.0, Duration::from_secs(60));
    assert_eq!(report.backlog_remaining, 0);
    assert_eq!(collector.terminate(), Some(0));
    let ids = event_ids(&collector.log_json());
    assert_eq!(ids.len(), 600);
    let counted = |stats: &serde_json::Value| {
        let records = stats["records"].as_object().unwrap();
        let held = stats["next_offset"].as_u64().unwrap() - stats["first_offset"].as_u64().unwrap();
        assert_eq!(records.values().map(|n| n.as_u64().unwrap()).sum::<u64>(), held, "{stats}");
        (records["events"].as_u64(), stats["devices"].as_u64(), stats["corrupt_blocks"].as_u64())
    };
    assert_eq!(counted(&collector.log_stats()), (Some(600), Some(2), Some(0)));
    // Restart: the restored dedup state recognises a replay of everything as duplicates.
    collector.spawn();
    assert_eq!(collector.metric("driftlog_events_received_total"), 0.0);
    assert_eq!(event_ids(&collector.log_json()).len(), 600);
    assert_eq!(counted(&collector.log_stats()), (Some(600), Some(2), Some(0)), "read from the running collector");
}

#[test]
fn a_full_log_stops_acknowledging_instead_of_dropping_and_resumes_when_room_returns() {
    let dir = tempfile::tempdir().unwrap();
    write_fleet_keys(&dir.path().join("keys.toml"), 2);
    // Retention may not delete what the (unreachable) forwarder has not published, so the
    // log fills at its size bound.
    let small = "[log]\nmax_block_bytes = 4096\nmax_commit_bytes = 4096\nretention_max_bytes = 16384\n\
                 [forward.jetstream]\nurl = \"nats://127.0.0.1:9\"\n";
    let mut collector = CollectorProcess::start(dir.path(), small);
    let agents = dir.path().join("agents");
    let report = simulate(collector.udp, &agents, 2, 1_500, 1_000.0, Duration::from_secs(3));
    assert!(report.backlog_remaining > 0, "the agents keep what was not acknowledged: {report:?}");
    assert_eq!(report.dropped, 0);
    assert_eq!(collector.metric("driftlog_log_accepting"), 0.0);
    assert!(collector.metric("driftlog_frames_refused_log_unavailable_total") > 0.0);
    assert_eq!(collector.get("/health").map(|r| r.0), Some(503));
    assert!(collector.stderr.lock().unwrap().iter().any(|l| l.contains("not acknowledging")));
    let held = collector.metric("driftlog_log_bytes");
    assert!(held <= 16_384.0, "the bound holds: {held}");

    // More room (a bigger bound, no forwarder): the agents' backlog is delivered, each event once.
    collector.terminate();
    std::fs::write(
        &collector.config_path,
        std::fs::read_to_string(&collector.config_path)
            .unwrap()
            .replace(small, "[log]\nmax_block_bytes = 4096\nmax_commit_bytes = 4096\n"),
    )
    .unwrap();
    collector.spawn();
    let rest = simulate(collector.udp, &agents, 2, 0, 1_000.0, Duration::from_secs(60));
    assert_eq!(rest.backlog_remaining, 0);
    assert_eq!(collector.get("/health").map(|r| r.0), Some(200));
    let ids = event_ids(&collector.log_json());
    assert_eq!(ids.len(), 3_000);
    assert!(ids.values().all(|n| *n == 1));
}

/// Unmounts a tmpfs when the test ends, however it ends.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_acknowledging_and_everything_arrives_once_space_returns() {
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _mount = Tmpfs(data.clone());
    let ballast = data.join("ballast");
    std::fs::write(&ballast, vec![0u8; (7 << 20) / 2]).unwrap();
    write_fleet_keys(&dir.path().join("keys.toml"), 2);
    // Commits small enough that a probe can ask for room a 4 MiB file system has.
    let collector = CollectorProcess::start(dir.path(), "[log]\ncache_bytes = 1048576\nmax_commit_bytes = 262144\n");
    let agents = dir.path().join("agents");
    let report = simulate(collector.udp, &agents, 2, 10_000, 5_000.0, Duration::from_secs(3));
    assert!(report.backlog_remaining > 0, "the disk filled before everything was committed: {report:?}");
    assert!(collector.metric("driftlog_commit_failures_total") > 0.0);
    assert!(collector.stderr.lock().unwrap().iter().any(|l| l.contains("not acknowledging")));
    // While the disk stays full the collector keeps refusing, through several probes (one a
    // second): an empty probe commit used to succeed and let it flip back and forth.
    let failures = collector.metric("driftlog_commit_failures_total");
    for _ in 0..25 {
        assert_eq!(collector.metric("driftlog_log_accepting"), 0.0, "accepting again on a full disk");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(collector.metric("driftlog_commit_failures_total") > failures, "probes went on");
    assert!(!collector.stderr.lock().unwrap().iter().any(|l| l.contains("accepts writes again")));
    // The window processor says once that the log is unavailable, not at every retry.
    let unavailable = collector.stderr.lock().unwrap().iter().filter(|l| l.contains("log unavailable")).count();
    assert!(unavailable <= 1, "{unavailable} lines about the unavailable log in under a minute");

    // Space returns: the next probe commit succeeds and the agents' backlog is delivered.
    std::fs::remove_file(&ballast).unwrap();
    let rest = simulate(collector.udp, &agents, 2, 0, 1_000.0, Duration::from_secs(60));
    assert_eq!(rest.backlog_remaining, 0);
    assert_eq!(collector.get("/health").map(|r| r.0), Some(200));
    let ids = event_ids(&collector.log_json());
    assert_eq!(ids.len(), 20_000);
    assert!(ids.values().all(|n| *n == 1));
}

/// `log stats` and `log replay` piped into a reader that is gone (`| head` that has read
/// enough) end quietly with status 0 instead of panicking on the broken pipe.
#[test]
fn log_commands_end_quietly_when_their_reader_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = CollectorProcess::start(dir.path(), "");
    collector.kill9();
    for command in ["stats", "replay"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // Every write now fails with EPIPE.
        let output = std::process::Command::new(support::BIN)
            .args(["log", command, "--config"])
            .arg(dir.path().join("collector.toml"))
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "log {command}: {:?} {stderr}", output.status);
        assert!(!stderr.contains("panicked"), "log {command}: {stderr}");
    }
}
