//! Real StatsD client libraries against the collector: Python's `statsd` (UDP, TCP, Unix
//! stream) and `datadog` (DogStatsD over UDP and a Unix datagram socket) from PyPI, and
//! `hot-shots` from npm (UDP, TCP). Each sends known metrics; one flush must hold exactly
//! them.

mod statsd_support;
mod support;

use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;
use support::{CollectorProcess, free_tcp_port, free_udp_port, wait_until};

/// Runs `script` with python3, failing the test with its stderr.
fn python(script: &str) {
    let output = Command::new("python3").arg("-c").arg(script).output().expect("python3 must be installed");
    assert!(output.status.success(), "python client failed: {}", String::from_utf8_lossy(&output.stderr));
}

fn hot_shots(protocol: &str, port: u16) {
    let peers = statsd_support::peers_dir();
    let output = Command::new("node")
        .arg(peers.join("hot_shots_client.js"))
        .args([protocol, "127.0.0.1", &port.to_string()])
        .output()
        .expect("node must be installed");
    assert!(output.status.success(), "hot-shots over {protocol} failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// Waits until `samples` were aggregated, flushes, and returns the flush.
fn flush_after(collector: &CollectorProcess, samples: u64) -> Value {
    let arrived = wait_until(Duration::from_secs(20), || {
        collector.metric("driftlog_statsd_samples_aggregated_total") >= samples as f64
    });
    assert!(
        arrived,
        "{} of {samples} samples aggregated",
        collector.metric("driftlog_statsd_samples_aggregated_total")
    );
    // Every transport's packets are in; the flush takes exactly them.
    let before = collector.metric("driftlog_statsd_flushes_total");
    collector.signal(nix::sys::signal::Signal::SIGUSR1);
    assert!(wait_until(Duration::from_secs(20), || collector.metric("driftlog_statsd_flushes_total") > before));
    statsd_support::collector_flushes(collector).pop().unwrap()
}

/// The same operations through each of Python statsd's clients, keys prefixed `prefix`.
fn python_statsd_ops(client: &str, prefix: &str) -> String {
    format!(
        "import statsd\nc = {client}\nfor _ in range(5): c.incr('{prefix}.hits')\nfor ms in (10, 20, 30): c.timing('{prefix}.lat', ms)\nc.gauge('{prefix}.g', 10)\nc.gauge('{prefix}.g', -3, delta=True)\nfor user in ('a', 'b', 'a'): c.set('{prefix}.users', user)\nclose = getattr(c, 'close', None)\nif close: close()\n"
    )
}

fn assert_python_statsd(flush: &Value, prefix: &str) {
    assert_eq!(flush["counters"][format!("{prefix}.hits")], json!(5.0), "{prefix}");
    let timer = &flush["timer_data"][format!("{prefix}.lat")];
    assert_eq!(
        (timer["count"].as_f64(), timer["upper"].as_f64(), timer["mean"].as_f64()),
        (Some(3.0), Some(30.0), Some(20.0))
    );
    assert_eq!(flush["gauges"][format!("{prefix}.g")], json!(7.0), "{prefix}");
    assert_eq!(flush["sets"][format!("{prefix}.users")], json!(2), "{prefix}");
}

#[test]
fn python_node_and_datadog_clients_over_udp_tcp_and_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp) = (free_udp_port(), free_tcp_port());
    let unix_stream = dir.path().join("statsd.sock");
    let unix_datagram = dir.path().join("dogstatsd.sock");
    let collector = CollectorProcess::start(
        dir.path(),
        &format!(
            "windows = []\n[statsd]\nudp = \"127.0.0.1:{udp}\"\ntcp = \"127.0.0.1:{tcp}\"\nunix_stream = {unix_stream:?}\nunix_datagram = {unix_datagram:?}\nflush_interval_ms = 86400000\n"
        ),
    );
    python(&python_statsd_ops(&format!("statsd.StatsClient('127.0.0.1', {udp})"), "py.udp"));
    python(&python_statsd_ops(&format!("statsd.TCPStatsClient('127.0.0.1', {tcp})"), "py.tcp"));
    python(&python_statsd_ops(&format!("statsd.UnixSocketStatsClient({unix_stream:?})"), "py.unix"));
    let datadog = |target: &str, prefix: &str| {
        format!(
            "from datadog.dogstatsd import DogStatsd\nd = DogStatsd({target}, disable_telemetry=True, origin_detection_enabled=False)\nd.increment('{prefix}.hits', 3, tags=['env:prod', 'team:a'])\nd.histogram('{prefix}.hist', 5)\nd.gauge('{prefix}.g', 2.5)\nd.flush()\nd.close_socket()\n"
        )
    };
    python(&datadog(&format!("host='127.0.0.1', port={udp}"), "dd.udp"));
    python(&datadog(&format!("socket_path={unix_datagram:?}"), "dd.uds"));
    hot_shots("udp", udp);
    hot_shots("tcp", tcp);
    // 13 samples per Python statsd client, 3 per DogStatsD client, 24 per hot-shots client.
    let flush = flush_after(&collector, 3 * 13 + 2 * 3 + 2 * 24);
    for prefix in ["py.udp", "py.tcp", "py.unix"] {
        assert_python_statsd(&flush, prefix);
    }
    for prefix in ["dd.udp", "dd.uds"] {
        // The reference's dialect: tags fold into the key in order, `h` is a counter.
        assert_eq!(flush["counters"][format!("{prefix}.hits;env=prod;team=a")], json!(3.0), "{prefix}");
        assert_eq!(flush["counters"][format!("{prefix}.hist")], json!(5.0), "{prefix}");
        assert_eq!(flush["gauges"][format!("{prefix}.g")], json!(2.5), "{prefix}");
    }
    for protocol in ["udp", "tcp"] {
        let key = |name: &str| format!("hotshots.{protocol}.{name}");
        assert_eq!(flush["counters"][key("requests")], json!(10.0), "{protocol}");
        assert_eq!(flush["counters"][key("tagged;env=prod")], json!(2.0), "{protocol}");
        let latency = &flush["timer_data"][key("latency")];
        assert_eq!((latency["count"].as_f64(), latency["upper_90"].as_f64()), (Some(10.0), Some(80.0)), "{protocol}");
        assert_eq!(flush["gauges"][key("queue")], json!(42.0), "{protocol}");
        assert_eq!(flush["sets"][key("users")], json!(2), "{protocol}");
    }
    for transport in ["udp", "tcp", "unix_stream", "unix_datagram"] {
        assert!(statsd_support::packets_received(&collector, transport) > 0.0, "nothing counted on {transport}");
    }
}

#[test]
fn the_dogstatsd_dialect_aggregates_histograms_and_distributions_as_timers() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let collector = CollectorProcess::start(
        dir.path(),
        &format!(
            "windows = []\n[statsd]\nudp = \"127.0.0.1:{udp}\"\ndialect = \"dogstatsd\"\nflush_interval_ms = 86400000\n"
        ),
    );
    python(&format!(
        "from datadog.dogstatsd import DogStatsd\nd = DogStatsd(host='127.0.0.1', port={udp}, disable_telemetry=True, origin_detection_enabled=False)\nfor v in range(1, 11): d.histogram('dd.hist', v, tags=['b:2', 'a:1'])\nfor v in range(1, 11): d.distribution('dd.dist', v * 10, tags=['a:1', 'b:2'])\nd.increment('dd.hits', 4, tags=['b:2', 'a:1'])\nd.increment('dd.hits', 1, tags=['a:1', 'b:2'])\nd.flush()\nd.close_socket()\n"
    ));
    let flush = flush_after(&collector, 22);
    // Tags sorted: both orders are one series.
    assert_eq!(flush["counters"]["dd.hits;a=1;b=2"], json!(5.0));
    let hist = &flush["timer_data"]["dd.hist;a=1;b=2"];
    assert_eq!(
        (hist["count"].as_f64(), hist["upper_90"].as_f64(), hist["median"].as_f64()),
        (Some(10.0), Some(9.0), Some(5.5))
    );
    assert_eq!(flush["timer_data"]["dd.dist;a=1;b=2"]["upper"], json!(100.0));
}

#[test]
fn flushes_reach_a_carbon_line_receiver_with_the_references_names() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    // A carbon line receiver: a TCP socket that reads what each connection sends.
    let carbon = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let carbon_address = carbon.local_addr().unwrap();
    let collector = CollectorProcess::start(
        dir.path(),
        &format!(
            "windows = []\n[statsd]\nudp = \"127.0.0.1:{udp}\"\nflush_interval_ms = 86400000\n[statsd.graphite]\naddress = \"{carbon_address}\"\n"
        ),
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .send_to(
            b"shop.orders:20|c|#region:eu\nshop.latency:5|ms:15|ms\nshop.stock:42|g\nshop.users:ann|s",
            ("127.0.0.1", udp),
        )
        .unwrap();
    let flush = flush_after(&collector, 5);
    assert_eq!(flush["counters"]["shop.orders;region=eu"], json!(20.0));
    carbon.set_nonblocking(false).unwrap();
    let (mut connection, _) = carbon.accept().unwrap();
    connection.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut connection, &mut text).unwrap();
    let values: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            Some((fields.next()?, fields.next()?))
        })
        .collect();
    // The reference graphite backend's non-legacy names; tags follow the whole name.
    assert_eq!(values.get("stats.counters.shop.orders.rate;region=eu"), Some(&"0.0002314814814814815"), "{text}");
    assert_eq!(values.get("stats.counters.shop.orders.count;region=eu"), Some(&"20"), "{text}");
    assert_eq!(values.get("stats.timers.shop.latency.upper_90"), Some(&"15"), "{text}");
    assert_eq!(values.get("stats.timers.shop.latency.mean"), Some(&"10"), "{text}");
    assert_eq!(values.get("stats.gauges.shop.stock"), Some(&"42"), "{text}");
    assert_eq!(values.get("stats.sets.shop.users.count"), Some(&"1"), "{text}");
    assert_eq!(values.get("stats.statsd.numStats"), Some(&"7"), "{text}");
    assert!(text.lines().all(|line| line.split(' ').count() == 3), "name value timestamp: {text}");
}
