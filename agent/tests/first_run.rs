//! What a new user meets first, through the real binary: no config file, flags only, a host
//! name for the collector, `status` pointed at a data dir, plain log lines in a file, and
//! a clear refusal of a device id the development key cannot stand for.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_driftlog-agent");

#[path = "support/collector.rs"]
mod collector;
use collector::Collector;

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn flags_only_with_a_host_name_then_status_by_data_dir_and_a_plain_log() {
    let collector = Collector::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("agent-data");
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut agent = Guard(
        Command::new(AGENT)
            .args(["run", "--collector", &format!("localhost:{}", collector.address.port()), "--data-dir"])
            .arg(&data)
            .current_dir(dir.path())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let socket = data.join("ingest.sock");
    wait_for("the ingest socket", || UnixStream::connect(&socket).is_ok());
    let stream = UnixStream::connect(&socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for value in 0..20 {
        writer.write_all(format!("first.run={value}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert!(answer.starts_with("ok "), "{answer}");
    }
    wait_for("the events at the collector", || collector.values(0).len() == 20);
    // `status` finds the agent by its data dir, with no config file.
    wait_for("status by --data-dir", || {
        let output = Command::new(AGENT).args(["status", "--json", "--data-dir"]).arg(&data).output().unwrap();
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        // Host sensors (on by default) append events of their own.
        status["appended_events"].as_u64().is_some_and(|n| n >= 20) && status["backlog_events"] == 0
    });
    nix_kill_term(agent.0.id());
    assert!(agent.0.wait().unwrap().success());
    let text = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(text.contains("agent started"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a log file: {text:?}");
}

/// Kills the agent however the test ends.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nix_kill_term(pid: u32) {
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
}

#[test]
fn a_device_id_other_than_1_without_a_key_file_is_refused_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    for transport in ["udp", "zmq"] {
        let output = Command::new(AGENT)
            .args(["run", "--device-id", "77", "--transport", transport, "--data-dir"])
            .arg(dir.path().join(transport))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{transport}: {stderr}");
        assert!(stderr.contains("device_id") && stderr.contains("keygen --device 77"), "{transport}: {stderr}");
    }
}
