//! The agent's StatsD listener end to end: the agent binary with `[statsd]` (UDP from the
//! `--statsd-udp` flag, a Unix datagram socket from the config) against the collector-side
//! protocol endpoint; samples arrive as events on the StatsD stream, bad lines are counted by
//! reason in `status` and on `/metrics`.

#[path = "support/collector.rs"]
mod collector;
#[path = "support/process.rs"]
mod process;

use collector::Collector;
use process::{AGENT, sigterm, start_agent_with, wait_for};
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::process::Command;

const STATSD_STREAM: u32 = driftlog_protocol::statsd::event::STATSD_STREAM;

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn statsd_samples_become_events_on_their_stream_and_bad_lines_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = 1\ndata_dir = {:?}\n[collector]\naddress = \"{}\"\n[outbox]\nflush_interval_ms = 5\n[host]\nenabled = false\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[statsd]\nudp = \"\"\nunix_datagram = \"statsd.sock\"\n",
            dir.path().join("data"),
            collector.address
        ),
    )
    .unwrap();
    let udp = format!("127.0.0.1:{}", free_port());
    let mut agent = start_agent_with(&config, &["--statsd-udp", &udp]);

    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"app.hits:1|c\napp.hits:2|c|@0.5\napp.latency:12|ms|#route:/a\nbad line\napp.x:y|g", &udp).unwrap();
    let unix = UnixDatagram::unbound().unwrap();
    unix.send_to(b"unix.hits:5|c", dir.path().join("data/statsd.sock")).unwrap();

    wait_for("four StatsD events", || collector.values(STATSD_STREAM).len() == 4);
    let mut events: Vec<(String, f64)> = collector
        .log
        .lock()
        .unwrap()
        .events
        .iter()
        .filter(|((_, _, _, stream), _)| *stream == STATSD_STREAM)
        .map(|(_, (name, value, wall))| {
            assert!(wall.is_some(), "stamped with the wall clock too");
            (name.clone(), *value)
        })
        .collect();
    events.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(
        events,
        [
            ("app.hits".to_string(), 1.0),
            // `2|c|@0.5` stands for 4: the counter travels scaled, as the reference adds it.
            ("app.hits".to_string(), 4.0),
            ("app.latency".to_string(), 12.0),
            ("unix.hits".to_string(), 5.0),
        ]
    );
    assert!(collector.values(0).is_empty() && collector.values(1).is_empty(), "their own stream only");

    let status = || {
        let output = Command::new(AGENT).args(["status", "--json", "--config"]).arg(&config).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    wait_for("the status to count both datagrams", || status()["statsd"]["packets"] == 2);
    let statsd = &status()["statsd"];
    assert_eq!(statsd["samples"], 4);
    assert_eq!(statsd["lines"], 6);
    assert_eq!(statsd["bad_samples"], serde_json::json!({"missing_value": 1, "bad_value": 1}));
    let text = Command::new(AGENT).args(["status", "--config"]).arg(&config).output().unwrap().stdout;
    assert!(String::from_utf8_lossy(&text).contains("statsd                 2 datagrams"));

    let mut http = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.contains("driftlog_agent_statsd_samples_total 4\n"), "{body}");
    assert!(body.contains("driftlog_agent_statsd_bad_samples_total{reason=\"missing_value\"} 1\n"), "{body}");

    assert!(sigterm(&mut agent).success());
    assert!(!dir.path().join("data/statsd.sock").exists(), "the socket file is removed at exit");
    assert_eq!(collector.log.lock().unwrap().duplicates, 0);
}

#[test]
fn a_taken_statsd_port_stops_the_agent_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = Command::new(AGENT)
        .args(["run", "--data-dir"])
        .arg(dir.path())
        .args(["--statsd-udp", &address])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot bind the StatsD UDP socket"));
}
