//! Keys through the real binary: the published development key never signs for a device
//! that has a real key, `keygen` is safe to run twice, and a first run (no keys file) still
//! works and says loudly what it accepts. Also the `log` commands against a running
//! collector with nothing but `--http`.

mod support;

use driftlog_protocol::wire::{MacKey, Sealer};
use std::process::Command;
use std::time::Duration;
use support::frames::{data_frame, development_sealer, keys_entry};
use support::{BIN, CollectorProcess, event_ids, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn rejected(collector: &CollectorProcess, reason: &str) -> f64 {
    collector.metric(&format!("driftlog_frames_rejected_total{{reason=\"{reason}\"}}"))
}

/// The attack of issue 19: a forger reads the epoch from a real frame's header (sent in the
/// clear) and claims the device's next sequence numbers with the development key.
#[test]
fn the_development_key_cannot_claim_a_device_that_has_a_real_key() {
    let dir = tempfile::tempdir().unwrap();
    let secret = [9u8; 32];
    std::fs::write(dir.path().join("keys.toml"), keys_entry(1, 5, &secret)).unwrap();
    let collector = CollectorProcess::start(dir.path(), "");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |bytes: Vec<u8>| socket.send_to(&bytes, collector.udp).unwrap();
    let epoch = 4242;
    let mut device = Sealer::new(5, MacKey::new(&secret), epoch);
    for seq in 0..3 {
        send(data_frame(&mut device, 1_000 + seq, 0, epoch, seq, 1.0));
    }
    assert!(wait_until(WAIT, || collector.metric("driftlog_events_committed_total") == 3.0));
    let mut forger = development_sealer(epoch);
    for seq in 3..5 {
        send(data_frame(&mut forger, 2_000 + seq, 0, epoch, seq, 666.0));
    }
    assert!(wait_until(WAIT, || rejected(&collector, "unknown_key") >= 2.0), "{:?}", collector.metrics());
    // The real device's next events are new, not "duplicates" of the forger's.
    for seq in 3..5 {
        send(data_frame(&mut device, 3_000 + seq, 0, epoch, seq, 1.0));
    }
    assert!(wait_until(WAIT, || collector.metric("driftlog_events_committed_total") == 5.0));
    assert_eq!(collector.metric("driftlog_events_duplicate_total"), 0.0);
    let lines = collector.log_json();
    assert!(lines.iter().filter(|l| l["kind"] == "event").all(|l| l["value"] == 1.0), "forged values in the log");
    assert_eq!(event_ids(&lines).len(), 5);
    let stderr = collector.stderr.lock().unwrap().join("\n");
    assert!(stderr.contains("key mode: keys file only"), "{stderr}");
}

/// `development_key = true` beside a keys file lets the development key in as device 1 only
/// while device 1 has no real key: a `keygen --device 1` ends it (the file is re-read).
#[test]
fn an_explicit_development_key_stops_once_device_1_gets_a_real_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), keys_entry(5, 5, &[9; 32])).unwrap();
    let collector = CollectorProcess::start(dir.path(), "development_key = true");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forger = development_sealer(7);
    socket.send_to(&data_frame(&mut forger, 1_000, 0, 7, 0, 1.0), collector.udp).unwrap();
    assert!(wait_until(WAIT, || collector.metric("driftlog_events_committed_total") == 1.0));
    let output = Command::new(BIN)
        .args(["keygen", "--device", "1", "--keys"])
        .arg(dir.path().join("keys.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let reloaded = || collector.stderr.lock().unwrap().iter().any(|l| l.contains("keys file reloaded"));
    assert!(wait_until(WAIT, reloaded), "the keys file was not re-read");
    socket.send_to(&data_frame(&mut forger, 5_000, 0, 7, 1, 1.0), collector.udp).unwrap();
    assert!(wait_until(WAIT, || rejected(&collector, "unknown_key") >= 1.0));
    assert_eq!(collector.metric("driftlog_events_committed_total"), 1.0);
    let validate = Command::new(BIN).args(["validate", "--config"]).arg(&collector.config_path).output().unwrap();
    assert!(validate.status.success());
    assert!(String::from_utf8_lossy(&validate.stderr).contains("warning: development_key = true"));
}

/// No keys file: the development key works as device 1, the collector says so loudly, and its
/// log lines (stderr is a pipe here) carry no colour codes.
#[test]
fn a_first_run_accepts_the_development_key_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start_without_keys(dir.path(), "");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut agent = development_sealer(3);
    socket.send_to(&data_frame(&mut agent, 1_000, 0, 3, 0, 1.0), collector.udp).unwrap();
    assert!(wait_until(WAIT, || collector.metric("driftlog_events_committed_total") == 1.0));
    let lines = collector.log_json();
    assert_eq!(lines.iter().find(|l| l["kind"] == "event").unwrap()["id"], "1-0-3-0");
    let stderr = collector.stderr.lock().unwrap().join("\n");
    assert!(stderr.contains("key mode: development key only"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in piped log lines: {stderr:?}");
}

#[test]
fn keygen_prints_two_lines_refuses_a_second_key_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let keygen = |extra: &[&str]| {
        Command::new(BIN).args(["keygen", "--device", "42", "--keys"]).arg(&keys).args(extra).output().unwrap()
    };
    let first = keygen(&[]);
    assert!(first.status.success());
    let stdout = String::from_utf8(first.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.starts_with("key_id = 1\nkey = \""), "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600);
    let second = keygen(&[]);
    assert_eq!(second.status.code(), Some(1));
    assert!(second.stdout.is_empty());
    assert!(String::from_utf8_lossy(&second.stderr).contains("--rotate"));
    let rotated = keygen(&["--rotate"]);
    assert!(rotated.status.success());
    assert!(String::from_utf8(rotated.stdout).unwrap().starts_with("key_id = 2\n"));
    assert!(String::from_utf8_lossy(&rotated.stderr).contains("retired key id 1"));
}

/// `log tail --http ADDR` from a directory with no data dir and no config reads the
/// running collector's log.
#[test]
fn log_commands_with_http_alone_read_the_running_collector() {
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start_without_keys(dir.path(), "");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut agent = development_sealer(3);
    for seq in 0..4 {
        socket.send_to(&data_frame(&mut agent, 1_000 + seq, 0, 3, seq, 2.0), collector.udp).unwrap();
    }
    assert!(wait_until(WAIT, || collector.metric("driftlog_events_committed_total") == 4.0));
    let elsewhere = tempfile::tempdir().unwrap();
    let http = collector.http.to_string();
    let tail = Command::new(BIN)
        .args(["log", "tail", "--json", "--http", &http])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(tail.status.success(), "{}", String::from_utf8_lossy(&tail.stderr));
    assert_eq!(String::from_utf8(tail.stdout).unwrap().lines().filter(|l| l.contains("\"event\"")).count(), 4);
    let stats =
        Command::new(BIN).args(["log", "stats", "--http", &http]).current_dir(elsewhere.path()).output().unwrap();
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));
}
