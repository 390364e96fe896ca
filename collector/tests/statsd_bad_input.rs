//! Hostile StatsD input against the collector binary: binary garbage, oversized datagrams,
//! absurd sample rates, NaN and infinities, a cardinality flood, a TCP client that never
//! sends a newline, one that never sends anything, more connections than allowed. Each is
//! counted by reason, memory stays bounded, nothing panics, a well-behaved sender on
//! another transport is aggregated in full meanwhile, and what was aggregated before the
//! flood is in the flush.

mod statsd_support;
mod support;

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;
use support::{CollectorProcess, free_tcp_port, free_udp_port, wait_until};

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn hostile_input_is_counted_bounded_and_stalls_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp) = (free_udp_port(), free_tcp_port());
    let collector = CollectorProcess::start(
        dir.path(),
        &format!(
            "windows = []\n[statsd]\nudp = \"127.0.0.1:{udp}\"\ntcp = \"127.0.0.1:{tcp}\"\nflush_interval_ms = 86400000\nmax_keys = 1000\nmax_timer_values = 100\nmax_set_members = 50\nmax_packet_bytes = 1024\nmax_line_bytes = 4096\nmax_connections = 3\nidle_timeout_ms = 2000\n"
        ),
    );
    let target = format!("127.0.0.1:{udp}");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Aggregated before the flood: must survive it.
    for _ in 0..100 {
        socket.send_to(b"before:1|c", &target).unwrap();
    }
    // A client that connects and never sends, and one that sends a line with no end.
    let idle = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    let mut endless = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    let garbage_line = vec![b'x'; 64 << 10];
    for _ in 0..16 {
        endless.write_all(&garbage_line).unwrap();
    }
    endless.write_all(b"\nafter.newline:1|c\n").unwrap();
    // Meanwhile a well-behaved TCP client.
    let mut good = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    // The fourth connection is over max_connections = 3.
    let refused = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    let mut rng = driftlog_protocol::SplitMix64::new(7);
    let mut sent_good = 0;
    for round in 0..200 {
        // Binary garbage, an oversized datagram, absurd rates, NaN and infinities, a flood
        // of distinct keys, of timer values and of set members.
        let garbage: Vec<u8> = (0..rng.below_inclusive(1_000)).map(|_| rng.next_u64() as u8).collect();
        socket.send_to(&garbage, &target).unwrap();
        socket.send_to(&[b'a'; 2_000], &target).unwrap();
        socket
            .send_to(b"rate:1|c|@0\nrate:1|c|@-1\nrate:1|c|@2\nrate:1|c|@NaN\nnan:NaN|g\ninf:Infinity|ms\n", &target)
            .unwrap();
        let flood: Vec<String> = (0..20).map(|i| format!("flood.{round}.{i}:1|c")).collect();
        socket.send_to(flood.join("\n").as_bytes(), &target).unwrap();
        socket.send_to(format!("timer:{round}|ms:{round}|ms\nset:m{round}|s").as_bytes(), &target).unwrap();
        good.write_all(b"good:1|c\n").unwrap();
        sent_good += 1;
        if round % 20 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let counted = wait_until(Duration::from_secs(20), || {
        let metrics = collector.metrics();
        let get = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
        get("driftlog_statsd_dropped_total{reason=\"packet_too_large\"}") >= 200.0
            && get("driftlog_statsd_dropped_total{reason=\"line_too_long\"}") >= 1.0
            && get("driftlog_statsd_connections_refused_total") >= 1.0
            && get("driftlog_statsd_connections_idle_closed_total") >= 1.0
            && statsd_support::packets_received(&collector, "tcp") >= 1.0
    });
    let metrics = collector.metrics();
    assert!(
        counted,
        "losses not counted: {:?}",
        metrics.iter().filter(|(k, _)| k.contains("statsd")).collect::<Vec<_>>()
    );
    let get = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
    assert!(get("driftlog_statsd_dropped_total{reason=\"key_cap\"}") > 0.0);
    assert!(get("driftlog_statsd_dropped_total{reason=\"timer_value_cap\"}") > 0.0);
    assert!(get("driftlog_statsd_dropped_total{reason=\"set_member_cap\"}") > 0.0);
    assert!(get("driftlog_statsd_bad_samples_total{reason=\"bad_sample_rate\"}") >= 400.0);
    assert!(get("driftlog_statsd_bad_samples_total{reason=\"bad_value\"}") >= 200.0);
    assert!(get("driftlog_statsd_unusual_sample_rates_total") >= 400.0);
    assert!(get("driftlog_statsd_keys") <= 1_000.0);
    let rss = rss_bytes(collector.pid());
    assert!(rss < 256 << 20, "RSS {rss} bytes after the flood");
    drop((idle, refused));
    // Every good line on the stream arrived despite the rest.
    let flushed = wait_until(Duration::from_secs(20), || {
        let before = collector.metric("driftlog_statsd_flushes_total");
        collector.signal(nix::sys::signal::Signal::SIGUSR1);
        wait_until(Duration::from_secs(5), || collector.metric("driftlog_statsd_flushes_total") > before);
        let flushes = statsd_support::collector_flushes(&collector);
        let total = |key: &str| flushes.iter().map(|f| f["counters"][key].as_f64().unwrap_or(0.0)).sum::<f64>();
        total("good") >= f64::from(sent_good) && total("after.newline") >= 1.0
    });
    assert!(flushed, "the TCP clients' lines were not all aggregated");
    let flushes = statsd_support::collector_flushes(&collector);
    let total = |key: &str| flushes.iter().map(|f| f["counters"][key].as_f64().unwrap_or(0.0)).sum::<f64>();
    assert_eq!(total("before"), 100.0, "aggregated before the flood, then lost");
    assert_eq!(total("after.newline"), 1.0, "the stream recovers after an overlong line");
    assert_eq!(total("good"), f64::from(sent_good));
    // `@0` adds infinity, `@2` halves: the reference's arithmetic, not a crash.
    let rate = flushes.iter().find_map(|f| f["counters"].get("rate").cloned());
    assert_eq!(rate, Some(serde_json::Value::Null), "1 × (1/0) is infinity, shown as null");
}

#[test]
fn shutdown_flushes_what_was_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let mut collector = CollectorProcess::start(
        dir.path(),
        &format!("windows = []\n[statsd]\nudp = \"127.0.0.1:{udp}\"\nflush_interval_ms = 86400000\n"),
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..50 {
        socket.send_to(b"kept:2|c\nkept.timer:5|ms", ("127.0.0.1", udp)).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || statsd_support::packets_received(&collector, "udp") >= 50.0));
    assert_eq!(collector.terminate(), Some(0));
    let flushes = statsd_support::collector_flushes(&collector);
    assert_eq!(flushes.len(), 1, "one flush, at shutdown");
    assert_eq!(flushes[0]["counters"]["kept"], serde_json::json!(100.0));
    assert_eq!(flushes[0]["timer_data"]["kept.timer"]["count"], serde_json::json!(50.0));
}

#[test]
fn every_datagram_is_aggregated_or_counted_as_a_kernel_drop() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    // The smallest receive buffer the kernel allows, and a paused collector: most of the
    // burst overflows the socket.
    let collector = CollectorProcess::start(
        dir.path(),
        &format!(
            "windows = []\n[statsd]\nudp = \"127.0.0.1:{udp}\"\nudp_sockets = 1\nreceive_buffer_bytes = 1\nflush_interval_ms = 86400000\n"
        ),
    );
    collector.signal(nix::sys::signal::Signal::SIGSTOP);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = 500u64;
    for _ in 0..sent {
        socket.send_to(&[b"burst:1|c\n".as_slice(), &[b'#'; 900]].concat(), ("127.0.0.1", udp)).unwrap();
    }
    collector.signal(nix::sys::signal::Signal::SIGCONT);
    let drops = "driftlog_statsd_kernel_receive_drops_total{socket=\"udp-0\"}";
    let accounted = wait_until(Duration::from_secs(10), || {
        statsd_support::packets_received(&collector, "udp") + collector.metric(drops) == sent as f64
    });
    let (received, dropped) = (statsd_support::packets_received(&collector, "udp"), collector.metric(drops));
    assert!(accounted, "received {received} + dropped {dropped} != sent {sent}");
    assert!(dropped > 0.0 && received > 0.0, "received {received}, dropped {dropped}");
}

#[test]
fn ipv6_listeners_take_udp_and_tcp() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp) = (free_udp_port(), free_tcp_port());
    let collector = CollectorProcess::start(
        dir.path(),
        &format!(
            "windows = []\n[statsd]\nudp = \"[::1]:{udp}\"\ntcp = \"[::1]:{tcp}\"\nflush_interval_ms = 86400000\n"
        ),
    );
    UdpSocket::bind("[::1]:0").unwrap().send_to(b"v6.udp:3|c", ("::1", udp)).unwrap();
    TcpStream::connect(("::1", tcp)).unwrap().write_all(b"v6.tcp:4|c\n").unwrap();
    assert!(wait_until(Duration::from_secs(10), || collector.metric("driftlog_statsd_samples_aggregated_total") >= 2.0));
    collector.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(wait_until(Duration::from_secs(10), || collector.metric("driftlog_statsd_flushes_total") >= 1.0));
    let flush = statsd_support::collector_flushes(&collector).pop().unwrap();
    assert_eq!(flush["counters"]["v6.udp"], serde_json::json!(3.0));
    assert_eq!(flush["counters"]["v6.tcp"], serde_json::json!(4.0));
}
