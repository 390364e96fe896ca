//! Differential test against the reference server: statsd 0.9.0 from npm and the collector
//! get the same seeded workloads over UDP on loopback (counters with sample rates, gauge
//! deltas and signs, timers with many values under several thresholds including negative
//! and fractional ones, sets, empty lines, every kind of bad line, tags, the reference's
//! quirks), are flushed after each phase, and must flush exactly the same values (timing
//! fields aside). Phases with little or no traffic check what persists and what resets.

mod statsd_support;
mod support;

use driftlog_protocol::SplitMix64;
use statsd_support::{ReferenceServer, assert_same_flush, flush_collector};
use std::net::{SocketAddr, UdpSocket};
use support::CollectorProcess;

const THRESHOLDS: &str = "[90, 99.9, 50, 0.5, -10, -0.5, 100, -100]";

/// One phase of traffic: packets, each one or more lines.
fn phase(rng: &mut SplitMix64, lines: usize) -> Vec<String> {
    let mut all = Vec::new();
    for _ in 0..lines {
        all.push(line(rng));
    }
    // Packets of 1 to 20 lines, some with empty lines and a trailing newline.
    let mut packets = Vec::new();
    let mut rest = all.as_slice();
    while !rest.is_empty() {
        let take = (1 + rng.below_inclusive(19) as usize).min(rest.len());
        let separator = if rng.below_inclusive(4) == 0 { "\n\n" } else { "\n" };
        let mut packet = rest[..take].join(separator);
        if rng.below_inclusive(2) == 0 {
            packet.push('\n');
        }
        packets.push(packet);
        rest = &rest[take..];
    }
    packets
}

fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
    items[rng.below_inclusive(items.len() as u64 - 1) as usize]
}

fn line(rng: &mut SplitMix64) -> String {
    let key =
        pick(rng, &["api.requests", "api.errors", "db.query", "cache hit", "disk/used", "caf\u{e9}.latency", "q"]);
    let number = |rng: &mut SplitMix64| -> String {
        match rng.below_inclusive(9) {
            0 => format!("{}", rng.below_inclusive(1_000)),
            1 => format!("{:.3}", rng.unit_f64() * 500.0),
            2 => format!("{}e{}", rng.below_inclusive(9), rng.below_inclusive(3)),
            3 => "0x1F".into(),
            4 => " 7 ".into(),
            5 => format!(".{}", rng.below_inclusive(99)),
            _ => format!("{}", rng.below_inclusive(100)),
        }
    };
    let rate = |rng: &mut SplitMix64| -> String {
        pick(rng, &["", "", "", "|@0.1", "|@0.5", "|@0.25", "|@1", "|@0.333", "|@2", "|@1e-1", "|@0", "|@.5"])
            .to_string()
    };
    let tags = |rng: &mut SplitMix64| -> String {
        pick(
            rng,
            &[
                "",
                "",
                "",
                "|#env:prod",
                "|#env:prod,bare",
                "|#bare,env:prod",
                "|#a:b:c,x;y",
                "|#env:prod|T1700000000",
                "|#",
            ],
        )
        .to_string()
    };
    match rng.below_inclusive(15) {
        0..=3 => format!("{key}:{}|c{}{}", number(rng), rate(rng), tags(rng)),
        4..=5 => {
            let sign = pick(rng, &["", "+", "-", "-", " -"]);
            format!("gauge.{key}:{sign}{}|g{}", number(rng), tags(rng))
        }
        6..=8 => {
            let values: Vec<String> =
                (0..1 + rng.below_inclusive(5)).map(|_| format!("{}|ms{}", number(rng), rate(rng))).collect();
            format!("timer.{key}:{}{}", values.join(":"), tags(rng))
        }
        9 => format!("set.{key}:{}|s{}", pick(rng, &["alice", "bob", "1", "1.0", "", "carol dave"]), tags(rng)),
        10 => format!("mixed.{key}:{}|c:{}|ms:{}|g", number(rng), number(rng), number(rng)),
        11 => format!("dog.{key}:{}|{}", number(rng), pick(rng, &["h", "d", "x", "", " ms"])),
        12 => pick(
            rng,
            &[
                "no_colon_at_all",
                "missing.type:5",
                "bad.value:abc|c",
                "bad.value:NaN|g",
                "negative.timer:-5|ms",
                "bad.rate:1|c|@-1",
                "bad.rate:1|c|@NaN",
                "bad.rate:1|c|0.5",
                "bad.rate:1|c|",
                "timestamp.third:1|c|T1700000000",
                "empty.value:|c",
                "big:Infinity|c",
                "big.timer:Infinity|ms",
                "inf.gauge:-Infinity|g",
            ],
        )
        .to_string(),
        13 => format!(
            "timer.many:{}",
            (0..20).map(|_| format!("{}|ms", rng.below_inclusive(10_000))).collect::<Vec<_>>().join(":")
        ),
        _ => format!("{key}:{}|c|@0.5:{}|ms", number(rng), number(rng)),
    }
}

/// Sends `packets` to both servers, 32 at a time, each batch once the reference has
/// handled the previous one, so loopback UDP loses nothing however loaded the machine.
fn send(packets: &[String], reference: &mut ReferenceServer, collector: SocketAddr, already_sent: u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = already_sent;
    for batch in packets.chunks(32) {
        for packet in batch {
            socket.send_to(packet.as_bytes(), reference.udp).unwrap();
            socket.send_to(packet.as_bytes(), collector).unwrap();
        }
        sent += batch.len() as u64;
        reference.wait_handled(sent);
    }
}

/// Runs the phases through both servers and compares every flush.
fn compare(seed: u64, reference_config: &str, collector_config: &str, phase_lines: &[usize]) {
    let dir = tempfile::tempdir().unwrap();
    let statsd_udp = support::free_udp_port();
    let collector = CollectorProcess::start(
        dir.path(),
        &format!(
            "windows = []\n[statsd]\nudp = \"127.0.0.1:{statsd_udp}\"\nflush_interval_ms = 86400000\npercent_threshold = {THRESHOLDS}\n{collector_config}\n"
        ),
    );
    let mut reference =
        ReferenceServer::start(dir.path(), &format!("percentThreshold: {THRESHOLDS}, {reference_config}"));
    let ours: SocketAddr = format!("127.0.0.1:{statsd_udp}").parse().unwrap();
    let mut rng = SplitMix64::new(seed);
    let mut sent = 0u64;
    for (index, &lines) in phase_lines.iter().enumerate() {
        let packets = phase(&mut rng, lines);
        send(&packets, &mut reference, ours, sent);
        sent += packets.len() as u64;
        let expected = reference.flush(sent);
        let ours = flush_collector(&collector, "udp", sent);
        if lines >= 1_000 {
            // Not a comparison of empty flushes: the workload reaches every type.
            let size = |field: &str| expected[field].as_object().map_or(0, |m| m.len());
            assert!(size("counters") >= 20 && size("timer_data") >= 10 && size("gauges") >= 5 && size("sets") >= 5);
            assert!(expected["counters"]["statsd.bad_lines_seen"].as_f64() > Some(50.0));
        }
        assert_same_flush(&expected, &ours, &format!("seed {seed}, phase {index} ({lines} lines)"));
    }
}

#[test]
fn flushes_match_the_reference_server_with_default_settings() {
    // A busy phase, a quiet one (what persists: gauges, zeroed counters, empty timers and
    // sets), and another busy one.
    compare(1, "", "", &[3_000, 20, 3_000, 0]);
}

#[test]
fn flushes_match_the_reference_server_when_idle_stats_are_deleted() {
    compare(
        2,
        "deleteIdleStats: true, gaugesMaxTTL: 2",
        "delete_idle_stats = true\ngauges_max_ttl = 2",
        &[2_000, 30, 0, 0],
    );
}

#[test]
fn flushes_match_the_reference_server_with_only_counters_deleted() {
    compare(3, "deleteCounters: true", "delete_counters = true", &[1_500, 10, 0]);
}
