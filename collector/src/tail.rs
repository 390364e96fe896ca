//! Reading the log for people: `log tail`, `log stats`, `log replay`.
//!
//! redb allows one open handle per file, so while a collector runs these commands ask it
//! over its HTTP port (`/log/tail`, `/log/stats`, `/log/replay`); with the collector stopped
//! they open the file themselves. Both paths run the same functions below.

use crate::log::record::to_json_lines;
use crate::log::{Log, LogError};
use serde_json::Value;

/// Up to `max` offsets starting at `from`, one JSON object each, and the next offset to read.
/// Offsets retention already deleted are skipped (the first line then starts later).
pub fn read_lines(log: &Log, from: u64, max: usize) -> Result<(Vec<Value>, u64), LogError> {
    let mut lines = Vec::new();
    let mut next = from;
    'blocks: for block in log.read_blocks(from, 16)? {
        let (_, records) = block.decode()?;
        for (offset, record) in &records {
            if offset + record.width() <= from {
                continue;
            }
            let mut out = Vec::new();
            to_json_lines(*offset, record, &mut out);
            for line in out {
                let at = line.get("offset").and_then(Value::as_u64).unwrap_or(*offset);
                if at < from {
                    continue;
                }
                if lines.len() >= max {
                    break 'blocks;
                }
                lines.push(line);
                next = at + 1;
            }
        }
    }
    Ok((lines, next))
}

/// One readable line for a JSON record.
pub fn human(line: &Value) -> String {
    let get = |key: &str| line.get(key).map(|v| v.to_string().trim_matches('"').to_string()).unwrap_or_default();
    match line.get("kind").and_then(Value::as_str) {
        Some("event") => {
            let tags: Vec<String> = line
                .get("tags")
                .and_then(Value::as_object)
                .map(|t| t.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                .unwrap_or_default();
            let value = if line.get("value").is_some() { get("value") } else { get("member") };
            let quarantine = line.get("quarantine").and_then(Value::as_str).map(|r| format!(" QUARANTINED({r})"));
            // What the device's own wall clock said, beside the corrected time: the skew
            // the correction removed, at a glance.
            let device_clock = line
                .get("t1_wall_unix_us")
                .is_some()
                .then(|| format!(" (device clock {}, {})", time_of(line, "t1_wall_unix_us"), get("wall_quality")));
            format!(
                "{:>10}  {:<22} {} {}={} {}  at {} ±{}us{}{}  t1={}us t2={}us t3={}",
                get("offset"),
                get("id"),
                get("type"),
                get("name"),
                value,
                tags.join(","),
                time_of(line, "event_unix_us"),
                get("uncertainty_us"),
                quarantine.unwrap_or_default(),
                device_clock.unwrap_or_default(),
                get("t1_mono_us"),
                get("t2_sent_us"),
                get("t3_received_unix_us"),
            )
        }
        Some("window") => {
            let quantiles: Vec<String> = line
                .get("quantiles")
                .and_then(Value::as_object)
                .map(|q| q.iter().map(|(k, v)| format!("{k}={}", short(v))).collect())
                .unwrap_or_default();
            format!(
                "{:>10}  {:<7} {} [{} .. {}) {}  count={} sum={} min={} max={} mean={} last={} {}  closed by {}",
                get("offset"),
                get("change").to_uppercase(),
                get("window"),
                time_of(line, "start_unix_us"),
                time_of(line, "end_unix_us"),
                get("key"),
                get("count"),
                short(&line["sum"]),
                short(&line["min"]),
                short(&line["max"]),
                short(&line["mean"]),
                short(&line["last"]),
                quantiles.join(" "),
                get("closed_by"),
            )
        }
        Some("late") => format!(
            "{:>10}  LATE    {} {} event {} at {} value={} (watermark {})",
            get("offset"),
            get("window"),
            get("key"),
            get("id"),
            time_of(line, "event_unix_us"),
            short(&line["value"]),
            time_of(line, "watermark_unix_us"),
        ),
        Some("tick") => format!("{:>10}  tick {}", get("offset"), time_of(line, "now_unix_us")),
        Some("claim") => format!(
            "{:>10}  claim   device {} stream {} epoch {}: complete below seq {} at {}{}{}",
            get("offset"),
            get("device"),
            get("stream"),
            get("epoch"),
            get("assigned_end"),
            time_of(line, "at_unix_us"),
            if line["draining"] == true { ", draining a backlog" } else { "" },
            if line["older_epochs_held"] == true { ", an older epoch still held" } else { "" },
        ),
        Some("statsd_flush") => {
            let ms = |field: &str| {
                line.get(field).and_then(Value::as_i64).map_or_else(String::new, |ms| format_unix_us(ms * 1_000))
            };
            // An event-time window's result: its change, revision and bounds.
            let when = match line.get("window_start_unix_ms") {
                Some(_) => format!(
                    "{} r{} [{} .. {}) {}",
                    get("change").to_uppercase(),
                    get("revision"),
                    ms("window_start_unix_ms"),
                    ms("window_end_unix_ms"),
                    get("closed_by"),
                ),
                None => format!("at {}", ms("flush_unix_ms")),
            };
            format!(
                "{:>10}  STATSD  {} {when}  counters={} gauges={} timers={} sets={}  {}",
                get("offset"),
                get("source"),
                line["counters"].as_object().map_or(0, |m| m.len()),
                line["gauges"].as_object().map_or(0, |m| m.len()),
                line["timer_data"].as_object().map_or(0, |m| m.len()),
                line["sets"].as_object().map_or(0, |m| m.len()),
                line["counters"],
            )
        }
        Some(kind @ ("tombstone" | "gap")) => format!(
            "{:>10}  {kind} device {} stream {} epoch {} seq {}..{} ({})",
            get("offset"),
            get("device"),
            get("stream"),
            get("epoch"),
            get("seq_start"),
            get("seq_end"),
            get("reason")
        ),
        _ => format!("{:>10}  {line}", get("offset")),
    }
}

/// A minimal HTTP GET against a running collector; returns the status code and body.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    // One write: a server that reads one segment sees the whole request.
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Prometheus text as series (name with labels) → value: for tests, benches and scripts
/// that read `/metrics`.
pub fn metric_values(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// `name=value` pairs of a query string.
pub fn query_u64(path: &str, name: &str) -> Option<u64> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

/// Which records `log tail --kind` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KindFilter {
    Events,
    Windows,
    Late,
    Gaps,
    Tombstones,
    Ticks,
    Claims,
    /// StatsD flushes (the server's and the event-time windows').
    Statsd,
}

impl KindFilter {
    /// The record kind (the JSON line's `kind`) this filter lets through.
    pub fn record_kind(self) -> &'static str {
        match self {
            KindFilter::Events => "event",
            KindFilter::Windows => "window",
            KindFilter::Late => "late",
            KindFilter::Gaps => "gap",
            KindFilter::Tombstones => "tombstone",
            KindFilter::Ticks => "tick",
            KindFilter::Claims => "claim",
            KindFilter::Statsd => "statsd_flush",
        }
    }

    /// Whether a JSON line is of this kind.
    pub fn matches(self, line: &Value) -> bool {
        line.get("kind").and_then(Value::as_str) == Some(self.record_kind())
    }
}

fn short(value: &Value) -> String {
    match value.as_f64() {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        // 24.99999 rounds to "25.0000": neither "25." nor "-0" is a number to show.
        Some(v) => match format!("{v:.4}").trim_end_matches('0').trim_end_matches('.') {
            "-0" => "0".to_string(),
            shown => shown.to_string(),
        },
        None => value.to_string(),
    }
}

fn time_of(line: &Value, key: &str) -> String {
    line.get(key).and_then(Value::as_i64).map_or_else(String::new, format_unix_us)
}

/// `2026-11-24T07:50:01.123456Z` (UTC; proleptic Gregorian, so any i64 formats).
pub fn format_unix_us(unix_us: i64) -> String {
    let seconds = unix_us.div_euclid(1_000_000);
    let micros = unix_us.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        second_of_day / 3_600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_show_at_most_four_decimals_without_trailing_zeros() {
        let shown = |v: f64| short(&serde_json::json!(v));
        assert_eq!(shown(20.4494), "20.4494");
        assert_eq!(shown(20.25), "20.25");
        assert_eq!(shown(24.999_999), "25");
        assert_eq!(shown(-0.000_01), "0");
        assert_eq!(shown(3.0), "3");
    }

    #[test]
    fn an_event_line_shows_the_corrected_time_beside_the_device_clock() {
        let line = serde_json::json!({
            "kind": "event", "offset": 7, "id": "1-0-2-3", "type": "gauge", "name": "t", "value": 1.5,
            "event_unix_us": 1_795_000_000_000_000i64, "uncertainty_us": 11,
            "t1_wall_unix_us": 1_795_003_600_000_000i64, "wall_quality": "unsynchronized",
            "t1_mono_us": 5, "t2_sent_us": 6, "t3_received_unix_us": 1_795_000_000_000_100i64,
        });
        let shown = human(&line);
        assert!(
            shown.contains(
                "at 2026-11-18T11:06:40.000000Z ±11us (device clock 2026-11-18T12:06:40.000000Z, unsynchronized)"
            ),
            "{shown}"
        );
        let mut no_wall = line.clone();
        no_wall.as_object_mut().unwrap().remove("t1_wall_unix_us");
        assert!(!human(&no_wall).contains("device clock"));
    }

    #[test]
    fn unix_times_format_as_utc() {
        assert_eq!(format_unix_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_unix_us(1_795_000_000_123_456), "2026-11-18T11:06:40.123456Z");
        assert_eq!(format_unix_us(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format_unix_us(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
    }
}
