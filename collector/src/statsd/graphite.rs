//! Graphite plaintext output: each flush sent to a carbon line receiver with the reference
//! graphite backend's names (`stats.counters.<key>.rate`, `stats.timers.<key>.upper_90`,
//! or the legacy `stats.<key>` / `stats_counts.<key>`), one connection per flush as the
//! reference does. Tags stay after the name (`stats.counters.a.rate;env=prod`).

use super::flush::Flush;
use super::telemetry::{Drop, Telemetry};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPTS: u32 = 3;

/// Sends each flush from `flushes` until the channel closes.
pub fn run(
    address: SocketAddr,
    legacy_namespace: bool,
    prefix_stats: String,
    flushes: Receiver<Arc<Flush>>,
    telemetry: Arc<Telemetry>,
) {
    while let Ok(flush) = flushes.recv() {
        let started = Instant::now();
        let text = render(&flush, legacy_namespace, &prefix_stats, started.elapsed().as_millis() as u64);
        let mut sent = false;
        for attempt in 0..ATTEMPTS {
            match send(address, text.as_bytes()) {
                Ok(()) => {
                    sent = true;
                    break;
                }
                Err(error) => {
                    telemetry.graphite_errors.inc();
                    tracing::warn!(%error, %address, attempt, "cannot send a StatsD flush to carbon");
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
            }
        }
        if sent {
            telemetry.graphite_flushes_sent.inc();
        } else {
            telemetry.dropped(Drop::GraphiteUnsent, 1);
        }
    }
}

fn send(address: SocketAddr, text: &[u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(text)?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// A number as JavaScript prints it where the two differ (`NaN`, `Infinity`).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity".into() } else { "-Infinity".into() }
    } else {
        format!("{}", value + 0.0)
    }
}

/// `namespace.name.suffix…;tags`: the reference's `format` (tags follow the whole name).
fn name(namespace: &[&str], key: &str, suffixes: &[&str]) -> String {
    let (bare, tags) = key.split_once(';').map_or((key, ""), |(bare, tags)| (bare, tags));
    let mut parts: Vec<&str> = namespace.to_vec();
    parts.push(bare);
    parts.extend_from_slice(suffixes);
    let mut out = parts.join(".");
    if !tags.is_empty() {
        out.push(';');
        out.push_str(tags);
    }
    out
}

/// The carbon plaintext lines of one flush.
pub fn render(flush: &Flush, legacy_namespace: bool, prefix_stats: &str, calculation_ms: u64) -> String {
    let ts = (flush.flush_unix_ms as f64 / 1000.0).round() as i64;
    let mut out = String::new();
    let mut line = |name: String, value: String| {
        out.push_str(&format!("{name} {value} {ts}\n"));
    };
    let interval_s = flush.interval_ms as f64 / 1000.0;
    let (counters, timers, gauges, sets): (&[&str], &[&str], &[&str], &[&str]) = if legacy_namespace {
        (&["stats"], &["stats", "timers"], &["stats", "gauges"], &["stats", "sets"])
    } else {
        (&["stats", "counters"], &["stats", "timers"], &["stats", "gauges"], &["stats", "sets"])
    };
    for (key, value) in &flush.counters {
        if legacy_namespace {
            line(name(counters, key, &[]), number(value / interval_s));
            line(name(&["stats_counts"], key, &[]), number(*value));
        } else {
            line(name(counters, key, &["rate"]), number(value / interval_s));
            line(name(counters, key, &["count"]), number(*value));
        }
    }
    for (key, timer) in &flush.timers {
        for (field, value) in flush.timer_fields(timer) {
            line(name(timers, key, &[&field]), number(value.as_f64().unwrap_or(f64::NAN)));
        }
    }
    for (key, value) in &flush.gauges {
        line(name(gauges, key, &[]), number(*value));
    }
    for (key, members) in &flush.sets {
        line(name(sets, key, &["count"]), members.to_string());
    }
    let stats = flush.counters.len() + flush.timers.len() + flush.gauges.len() + flush.sets.len();
    if legacy_namespace {
        line(format!("{prefix_stats}.numStats"), stats.to_string());
        line(format!("stats.{prefix_stats}.graphiteStats.calculationtime"), calculation_ms.to_string());
        line(format!("stats.{prefix_stats}.processing_time"), flush.processing_time_ms.to_string());
    } else {
        line(format!("stats.{prefix_stats}.numStats"), stats.to_string());
        line(format!("stats.{prefix_stats}.graphiteStats.calculationtime"), calculation_ms.to_string());
        line(format!("stats.{prefix_stats}.processing_time"), flush.processing_time_ms.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::aggregate::RawFlush;

    #[test]
    fn names_are_the_reference_graphite_backends() {
        let raw = RawFlush {
            counters: vec![("hits;env=prod".into(), 20.0)],
            timers: vec![("t".into(), vec![1.0, 2.0], 2.0)],
            gauges: vec![("g".into(), f64::INFINITY)],
            sets: vec![("s".into(), 3)],
        };
        let mut flush = Flush::compute(raw, &[90.0]);
        flush.interval_ms = 10_000;
        flush.flush_unix_ms = 1_700_000_000_400;
        let text = render(&flush, false, "statsd", 0);
        for expected in [
            "stats.counters.hits.rate;env=prod 2 1700000000\n",
            "stats.counters.hits.count;env=prod 20 1700000000\n",
            "stats.timers.t.upper_90 2 1700000000\n",
            "stats.timers.t.count_ps 0.2 1700000000\n",
            "stats.gauges.g Infinity 1700000000\n",
            "stats.sets.s.count 3 1700000000\n",
            "stats.statsd.numStats 4 1700000000\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from\n{text}");
        }
        let legacy = render(&flush, true, "statsd", 0);
        assert!(legacy.contains("stats.hits;env=prod 2 1700000000\n"), "{legacy}");
        assert!(legacy.contains("stats_counts.hits;env=prod 20 1700000000\n"), "{legacy}");
        assert!(legacy.contains("statsd.numStats 4 1700000000\n"), "{legacy}");
    }
}
