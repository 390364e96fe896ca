//! Host sensors: CPU, memory, load, disk and network counters, and temperatures from
//! `/sys/class/thermal` when present. Sampled every `interval`; counters are sent as the
//! increase since the previous sample, gauges as the current level. A file that is missing
//! or unparsable is skipped (containers and small boards lack some of them).

use crate::clock::{mono_now, wall_now};
use crate::driver::{STREAM_HOST, Submission};
use driftlog_protocol::sender::{OwnedEvent, OwnedPayload};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// One value read from the host, before it becomes an event.
struct Reading {
    name: String,
    value: f64,
    /// Monotonic counters are sent as the increase since the previous sample.
    is_counter: bool,
    tags: Vec<(String, String)>,
}

fn reading(name: impl Into<String>, value: f64, is_counter: bool, tags: Vec<(String, String)>) -> Reading {
    Reading { name: name.into(), value, is_counter, tags }
}

/// Previous counter readings, to send increases.
#[derive(Debug, Default)]
pub struct HostSampler {
    previous: BTreeMap<String, f64>,
}

impl HostSampler {
    /// One sample of everything readable, as owned events stamped now.
    pub fn sample(&mut self) -> Vec<OwnedEvent> {
        let mut readings: Vec<Reading> = Vec::new();
        if let Ok(text) = std::fs::read_to_string("/proc/loadavg") {
            for (name, field) in ["load.1m", "load.5m", "load.15m"].iter().zip(text.split_whitespace()) {
                if let Ok(value) = field.parse() {
                    readings.push(reading(*name, value, false, Vec::new()));
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/meminfo") {
            for line in text.lines() {
                let mut parts = line.split_whitespace();
                let (Some(key), Some(value)) = (parts.next(), parts.next().and_then(|v| v.parse::<f64>().ok())) else {
                    continue;
                };
                let name = match key {
                    "MemTotal:" => "memory.total_bytes",
                    "MemAvailable:" => "memory.available_bytes",
                    "SwapFree:" => "memory.swap_free_bytes",
                    _ => continue,
                };
                readings.push(reading(name, value * 1024.0, false, Vec::new()));
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/stat")
            && let Some(cpu) = text.lines().find(|l| l.starts_with("cpu "))
        {
            {
                let fields: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
                // USER_HZ is 100 on every Linux ABI: jiffies to seconds.
                for (name, index) in [
                    ("cpu.user_seconds", 0),
                    ("cpu.system_seconds", 2),
                    ("cpu.idle_seconds", 3),
                    ("cpu.iowait_seconds", 4),
                ] {
                    if let Some(jiffies) = fields.get(index) {
                        readings.push(reading(name, jiffies / 100.0, true, Vec::new()));
                    }
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/net/dev") {
            for line in text.lines().skip(2) {
                let Some((interface, rest)) = line.split_once(':') else { continue };
                let fields: Vec<f64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
                let tags = vec![("interface".to_string(), interface.trim().to_string())];
                if let (Some(rx), Some(tx)) = (fields.first(), fields.get(8)) {
                    readings.push(reading("net.rx_bytes", *rx, true, tags.clone()));
                    readings.push(reading("net.tx_bytes", *tx, true, tags));
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string("/proc/diskstats") {
            for line in text.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let Some(device) = fields.get(2) else { continue };
                if device.starts_with("loop") || device.starts_with("ram") {
                    continue;
                }
                let tags = vec![("device".to_string(), device.to_string())];
                // Fields 6 and 10 are sectors read and written (512 bytes each).
                if let (Some(read), Some(written)) = (
                    fields.get(5).and_then(|f| f.parse::<f64>().ok()),
                    fields.get(9).and_then(|f| f.parse::<f64>().ok()),
                ) {
                    readings.push(reading("disk.read_bytes", read * 512.0, true, tags.clone()));
                    readings.push(reading("disk.written_bytes", written * 512.0, true, tags));
                }
            }
        }
        if let Ok(zones) = std::fs::read_dir("/sys/class/thermal") {
            for zone in zones.flatten() {
                let path = zone.path();
                let Ok(millidegrees) = std::fs::read_to_string(path.join("temp")).map(|t| t.trim().parse::<f64>())
                else {
                    continue;
                };
                let Ok(millidegrees) = millidegrees else { continue };
                let zone_type =
                    std::fs::read_to_string(path.join("type")).map(|t| t.trim().to_string()).unwrap_or_default();
                readings.push(reading(
                    "thermal.celsius",
                    millidegrees / 1000.0,
                    false,
                    vec![("zone".into(), zone_type)],
                ));
            }
        }
        let mono = mono_now();
        let wall = Some(wall_now());
        let mut events = Vec::with_capacity(readings.len());
        for Reading { name, value, is_counter, tags } in readings {
            let payload = if is_counter {
                let key = format!("{name}{tags:?}");
                let previous = self.previous.insert(key, value);
                // The first reading only sets the baseline; a counter that went backwards
                // (wrap or reset) restarts it.
                match previous {
                    Some(previous) if value >= previous => {
                        OwnedPayload::Counter { name, value: value - previous, tags }
                    }
                    _ => continue,
                }
            } else {
                OwnedPayload::Gauge { name, value, tags }
            };
            events.push(OwnedEvent { mono, wall, payload });
        }
        events
    }
}

/// Samples every `interval` until `shutdown`.
pub async fn run(interval: Duration, submissions: mpsc::Sender<Submission>, mut shutdown: watch::Receiver<bool>) {
    let mut sampler = HostSampler::default();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {
                let events = sampler.sample();
                if events.is_empty() {
                    continue;
                }
                if submissions.send(Submission { stream: STREAM_HOST, events, reply: None }).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linux_host_yields_gauges_then_counter_increases() {
        let mut sampler = HostSampler::default();
        let first = sampler.sample();
        assert!(first.iter().any(|e| matches!(&e.payload, OwnedPayload::Gauge { name, .. } if name == "load.1m")));
        assert!(
            first.iter().all(|e| !matches!(e.payload, OwnedPayload::Counter { .. })),
            "first sample sets baselines"
        );
        let second = sampler.sample();
        assert!(second.iter().any(|e| matches!(&e.payload, OwnedPayload::Counter { name, value, .. } if name == "cpu.idle_seconds" && *value >= 0.0)));
    }
}
