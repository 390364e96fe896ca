//! `[watermark]`, `[clock]` and `[[windows]]` in `collector.toml`: what the event-time
//! pipeline computes. Sizes are in milliseconds here and microseconds inside (event times are
//! µs since 1970).

use crate::log::record::guard_config;
use driftlog_eventtime::clock::ClockConfig;
use driftlog_eventtime::window::{WindowKind, WindowSpec};
use serde::Deserialize;

/// How event time advances.
///
/// Each device has its own watermark from sequence completeness: what it has delivered (and
/// its heartbeats' claims of what it had assigned) less `out_of_orderness_ms`. Per-device
/// windows close on it, so an offline device's windows wait for its backlog. Fleet windows
/// close on the fleet's watermark: the minimum over devices that are not idle, where a device
/// draining a backlog holds it for up to `max_backlog_hold_ms`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkSection {
    /// B: how long before it is sequenced (given its place in the device's buffer) an event
    /// may be stamped. The agent stamps at ingest and sequences at its next group commit (at
    /// most 1 s later), so events can be out of order by that much; a device's watermark
    /// trails its completeness by B.
    pub out_of_orderness_ms: u64,
    /// A device that sends nothing for this long (collector clock) stops holding the fleet's
    /// watermark back; when every device is idle the watermark jumps to the highest one, so a
    /// silent fleet still closes its windows. Per-device windows do not use it: they wait.
    pub idle_timeout_ms: u64,
    /// Devices tracked (watermarks and per-device window state); beyond it the device heard
    /// from least recently without open windows is forgotten.
    pub max_devices: usize,
    /// A device not heard from for this long (collector clock) has its open per-device windows
    /// emitted as they stand, marked `closed_by: timeout`. Also the default allowed lateness
    /// of fleet windows, so a returning device's data still counts in them.
    pub max_outage_ms: u64,
    /// The longest a device draining a backlog holds the fleet's watermark (collector clock).
    pub max_backlog_hold_ms: u64,
    /// A device stream whose heartbeats stop while the device's others go on no longer holds
    /// the device's watermark once its last claim is this much older than the newest.
    pub stream_silence_ms: u64,
    /// Heartbeats' completeness claims are stored in the log at most this often per stream
    /// (and at once when a drain starts or ends).
    pub claim_interval_ms: u64,
    /// Memory for window state: devices' units in use and fleet windows not yet settled.
    /// The rest lives in the log's file and is read back when a record needs it.
    pub state_memory_bytes: u64,
    /// How often, while caught up, the processor notes the collector clock in the log (a
    /// `tick` record) so idleness is measured from the log and replays stay identical.
    pub tick_interval_ms: u64,
    /// Window state and outputs are committed together at most this often.
    pub checkpoint_interval_ms: u64,
}

impl Default for WatermarkSection {
    fn default() -> Self {
        WatermarkSection {
            out_of_orderness_ms: 2_000,
            idle_timeout_ms: 10_000,
            max_devices: 100_000,
            max_outage_ms: 86_400_000,
            max_backlog_hold_ms: 30_000,
            stream_silence_ms: 30_000,
            claim_interval_ms: 1_000,
            state_memory_bytes: 64 << 20,
            tick_interval_ms: 1_000,
            checkpoint_interval_ms: 1_000,
        }
    }
}

/// Clock-skew correction (see `driftlog_eventtime::clock`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSection {
    /// Horizon of the one-way minimum filter over `t3 - t2`.
    pub min_filter_window_s: u64,
    /// Four-timestamp exchanges kept (least delay wins).
    pub exchange_samples: usize,
    /// Filtered samples kept for the drift regression (older ones are merged, so days fit).
    pub regression_samples: usize,
    /// Drift is estimated only from samples spanning at least this long.
    pub regression_min_span_s: u64,
    /// Fits steeper than this are implausible and ignored.
    pub max_drift_ppm: f64,
    /// Clock models kept in memory (one per device and boot epoch); the least recently used
    /// beyond this are dropped (their events fall back to receive time, counted).
    pub max_models: usize,
}

impl Default for ClockSection {
    fn default() -> Self {
        let d = ClockConfig::default();
        ClockSection {
            min_filter_window_s: d.min_filter_window_us / 1_000_000,
            exchange_samples: d.exchange_samples,
            regression_samples: d.regression_samples,
            regression_min_span_s: d.regression_min_span_us / 1_000_000,
            max_drift_ppm: d.max_drift_ppm,
            max_models: 100_000,
        }
    }
}

impl ClockSection {
    pub fn to_config(&self) -> ClockConfig {
        ClockConfig {
            min_filter_window_us: self.min_filter_window_s.saturating_mul(1_000_000),
            exchange_samples: self.exchange_samples,
            regression_samples: self.regression_samples,
            regression_min_span_us: self.regression_min_span_s.saturating_mul(1_000_000),
            max_drift_ppm: self.max_drift_ppm,
            // The guards are fixed (`record::guard_config`): stored corrections must give
            // the same times on every replay whatever the config says later.
            ..guard_config()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowType {
    Tumbling,
    Hopping,
    Session,
}

/// One `[[windows]]` entry: which metrics, how they are grouped, and the window shape.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    /// Names the results (`driftlog.windows.<name>` on JetStream): letters, digits, `_`, `-`.
    pub name: String,
    /// Metric names this window takes: exact names, or a prefix ending in `*` (`"cpu.*"`);
    /// `["*"]` takes every numeric metric.
    #[serde(default = "every_metric")]
    pub metrics: Vec<String>,
    #[serde(rename = "type")]
    pub window_type: WindowType,
    /// Tumbling and hopping: the window length.
    #[serde(default)]
    pub size_ms: Option<u64>,
    /// Hopping: how far each window starts after the previous one.
    #[serde(default)]
    pub slide_ms: Option<u64>,
    /// Session: the inactivity gap that ends a session.
    #[serde(default)]
    pub gap_ms: Option<u64>,
    /// Shifts the window grid (windows align to the Unix epoch): `-28800000` gives local
    /// days in UTC+8. Must be smaller than the size (tumbling) or slide (hopping).
    #[serde(default)]
    pub offset_ms: i64,
    /// Late events within this much of a fired window update it (RETRACT + INSERT, once per
    /// window and log block however many events it takes); later ones become `late` records.
    /// Default: 0 for per-device windows (they wait for their device, so nothing is late but
    /// events stamped more than `watermark.out_of_orderness_ms` before they were sequenced),
    /// `watermark.max_outage_ms` for fleet windows (a device back from an outage still
    /// counts).
    #[serde(default)]
    pub allowed_lateness_ms: Option<u64>,
    /// Results are keyed by metric name plus these tags' values.
    #[serde(default)]
    pub group_by_tags: Vec<String>,
    /// Key by device as well.
    #[serde(default = "yes")]
    pub per_device: bool,
    /// Emit a `FINAL` record when a window's state is dropped (for append-only consumers).
    #[serde(default)]
    pub emit_final: bool,
    /// Quantiles reported with each result (DDSketch, 1 % relative error).
    #[serde(default = "default_quantiles")]
    pub quantiles: Vec<f64>,
    /// Windows open at once; events that would open more are recorded as late and counted.
    #[serde(default = "default_max_open_windows")]
    pub max_open_windows: usize,
}

fn every_metric() -> Vec<String> {
    vec!["*".to_string()]
}
fn yes() -> bool {
    true
}
fn default_quantiles() -> Vec<f64> {
    vec![0.5, 0.9, 0.99]
}
fn default_max_open_windows() -> usize {
    1_000_000
}

/// The windows a collector computes when its config names none: per device and metric,
/// 10-second tumbling windows, so the demo shows results at once.
pub fn default_windows() -> Vec<WindowSection> {
    vec![WindowSection {
        name: "per_device_10s".to_string(),
        metrics: every_metric(),
        window_type: WindowType::Tumbling,
        size_ms: Some(10_000),
        slide_ms: None,
        gap_ms: None,
        offset_ms: 0,
        allowed_lateness_ms: None,
        group_by_tags: Vec::new(),
        per_device: true,
        emit_final: false,
        quantiles: default_quantiles(),
        max_open_windows: default_max_open_windows(),
    }]
}

/// A config error: the field path and what is wrong with it.
pub type FieldError = (String, String);

const MAX_WINDOW_MS: u64 = 366 * 86_400_000;

impl WindowSection {
    fn field(&self, name: &str) -> String {
        format!("windows.{}.{name}", self.name)
    }

    fn required(&self, value: Option<u64>, name: &str) -> Result<u64, FieldError> {
        match value {
            None => Err((self.field(name), format!("is required for a {:?} window", self.window_type))),
            Some(0) => Err((self.field(name), "must be greater than 0".into())),
            Some(v) if v > MAX_WINDOW_MS => Err((self.field(name), "must be at most 366 days".into())),
            Some(v) => Ok(v),
        }
    }

    fn forbidden(&self, value: Option<u64>, name: &str) -> Result<(), FieldError> {
        match value {
            Some(_) => Err((self.field(name), format!("does not apply to a {:?} window", self.window_type))),
            None => Ok(()),
        }
    }

    /// The allowed lateness in force (see the field).
    pub fn allowed_lateness_ms(&self, watermark: &WatermarkSection) -> u64 {
        self.allowed_lateness_ms.unwrap_or(if self.per_device { 0 } else { watermark.max_outage_ms })
    }

    /// The engine's spec, or the first thing wrong with this entry.
    pub fn spec(&self, watermark: &WatermarkSection) -> Result<WindowSpec, FieldError> {
        let allowed_lateness_ms = self.allowed_lateness_ms(watermark);
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            return Err(("windows.name".into(), format!("{:?}: use 1-64 letters, digits, '_' or '-'", self.name)));
        }
        if self.metrics.is_empty() || self.metrics.iter().any(|m| m.is_empty()) {
            return Err((self.field("metrics"), "must list at least one non-empty name or prefix*".into()));
        }
        if let Some(q) = self.quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            return Err((self.field("quantiles"), format!("{q} is not between 0 and 1")));
        }
        if self.quantiles.len() > 16 {
            return Err((self.field("quantiles"), "at most 16".into()));
        }
        if allowed_lateness_ms > MAX_WINDOW_MS {
            return Err((self.field("allowed_lateness_ms"), "must be at most 366 days".into()));
        }
        if self.max_open_windows == 0 {
            return Err((self.field("max_open_windows"), "must be at least 1".into()));
        }
        let us = |ms: u64| ms as i64 * 1_000;
        let offset = self.offset_ms.checked_mul(1_000).ok_or((self.field("offset_ms"), "out of range".into()))?;
        let kind = match self.window_type {
            WindowType::Tumbling => {
                self.forbidden(self.slide_ms, "slide_ms")?;
                self.forbidden(self.gap_ms, "gap_ms")?;
                let size = self.required(self.size_ms, "size_ms")?;
                if self.offset_ms.unsigned_abs() >= size {
                    return Err((self.field("offset_ms"), "must be smaller than size_ms".into()));
                }
                WindowKind::Tumbling { size: us(size), offset }
            }
            WindowType::Hopping => {
                self.forbidden(self.gap_ms, "gap_ms")?;
                let size = self.required(self.size_ms, "size_ms")?;
                let slide = self.required(self.slide_ms, "slide_ms")?;
                if slide > size {
                    return Err((self.field("slide_ms"), "must not exceed size_ms (windows would skip events)".into()));
                }
                if size / slide > 1_000 {
                    return Err((self.field("slide_ms"), "size_ms / slide_ms must be at most 1000".into()));
                }
                if self.offset_ms.unsigned_abs() >= slide {
                    return Err((self.field("offset_ms"), "must be smaller than slide_ms".into()));
                }
                WindowKind::Hopping { size: us(size), slide: us(slide), offset }
            }
            WindowType::Session => {
                self.forbidden(self.size_ms, "size_ms")?;
                self.forbidden(self.slide_ms, "slide_ms")?;
                if self.offset_ms != 0 {
                    return Err((self.field("offset_ms"), "does not apply to a session window".into()));
                }
                WindowKind::Session { gap: us(self.required(self.gap_ms, "gap_ms")?) }
            }
        };
        let spec = WindowSpec {
            kind,
            allowed_lateness: us(allowed_lateness_ms),
            emit_final: self.emit_final,
            max_open_windows: self.max_open_windows,
        };
        spec.validate().map_err(|error| (self.field("type"), error.to_string()))?;
        Ok(spec)
    }

    /// Whether this window takes metric `name`.
    pub fn takes(&self, name: &str) -> bool {
        self.metrics.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == pattern,
        })
    }
}

/// `[statsd_event_time]`: StatsD samples aggregated by event time, per device (the agents'
/// StatsD listeners, stream 2) and per source address (DogStatsD `|T` lines the collector's
/// own listeners receive), in the window pipeline (so off with `windows = []`). See
/// `windows::statsd` for the rules.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsdEventTimeSection {
    pub enabled: bool,
    /// The windows' size; default: `[statsd] flush_interval_ms`, else 10 000.
    pub flush_interval_ms: Option<u64>,
    /// Timer percentiles; default: `[statsd] percent_threshold`, else `[90]`.
    pub percent_threshold: Option<Vec<f64>>,
    /// A window's result is updated (RETRACT + INSERT) by samples that arrive up to this
    /// long after its end (by its owner's watermark); later ones are `late` records.
    pub allowed_lateness_ms: u64,
    /// `|T` sources have no completeness: a source's window closes this long after its end
    /// by the collector clock.
    pub timestamp_bound_ms: u64,
    /// Distinct keys per window (carried gauges included); samples of more are dropped and
    /// counted.
    pub max_keys: usize,
    /// Timer values stored per key and window (more still add to `count`).
    pub max_timer_values: usize,
    /// Distinct members per set and window.
    pub max_set_members: usize,
    /// Windows held per device or source (open, or kept for late samples); samples that
    /// would open more are `late` records.
    pub max_open_windows: usize,
    /// `|T` sources with windows at once; samples of more are `late` records.
    pub max_sources: usize,
}

impl Default for StatsdEventTimeSection {
    fn default() -> Self {
        StatsdEventTimeSection {
            enabled: true,
            flush_interval_ms: None,
            percent_threshold: None,
            allowed_lateness_ms: 60_000,
            timestamp_bound_ms: 10_000,
            max_keys: 10_000,
            max_timer_values: 10_000,
            max_set_members: 10_000,
            max_open_windows: 64,
            max_sources: 256,
        }
    }
}

impl StatsdEventTimeSection {
    /// The settings in force, `[statsd]`'s interval and thresholds where not set here; `None`
    /// when turned off.
    pub fn spec(&self, statsd: Option<&crate::statsd::config::StatsdSection>) -> Option<super::statsd::StatsdSpec> {
        if !self.enabled {
            return None;
        }
        let interval_ms = self.flush_interval_ms.or(statsd.map(|s| s.flush_interval_ms)).unwrap_or(10_000);
        let thresholds = self
            .percent_threshold
            .clone()
            .or_else(|| statsd.map(|s| s.percent_threshold.clone()))
            .unwrap_or_else(|| vec![90.0]);
        let us = |ms: u64| i64::try_from(ms.saturating_mul(1_000)).unwrap_or(i64::MAX);
        Some(super::statsd::StatsdSpec {
            interval: us(interval_ms),
            // `-0` prints as `0` in field names, as the reference's `0` does.
            thresholds: thresholds.iter().map(|p| p + 0.0).collect(),
            allowed_lateness: us(self.allowed_lateness_ms),
            timestamp_bound: us(self.timestamp_bound_ms),
            max_keys: self.max_keys,
            bounds: crate::statsd::aggregate::Bounds {
                max_timer_values: self.max_timer_values,
                max_set_members: self.max_set_members,
            },
            max_windows: self.max_open_windows,
            max_sources: self.max_sources,
        })
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        let invalid = |field: &str, message: &str| Err((format!("statsd_event_time.{field}"), message.to_string()));
        if let Some(interval) = self.flush_interval_ms
            && !(100..=86_400_000).contains(&interval)
        {
            return invalid("flush_interval_ms", "must be between 100 and 86400000 (a day)");
        }
        if let Some(thresholds) = &self.percent_threshold
            && let Err(message) = crate::statsd::config::validate_thresholds(thresholds)
        {
            return invalid("percent_threshold", message);
        }
        if self.allowed_lateness_ms > MAX_WINDOW_MS || self.timestamp_bound_ms > MAX_WINDOW_MS {
            return invalid(
                "allowed_lateness_ms",
                "allowed_lateness_ms and timestamp_bound_ms must be at most 366 days",
            );
        }
        if self.max_keys == 0 || self.max_timer_values == 0 || self.max_set_members == 0 || self.max_sources == 0 {
            return invalid(
                "max_keys",
                "max_keys, max_timer_values, max_set_members and max_sources must be at least 1",
            );
        }
        if !(1..=100_000).contains(&self.max_open_windows) {
            return invalid("max_open_windows", "must be between 1 and 100000");
        }
        Ok(())
    }
}

/// The window name `late` records of event-time StatsD samples carry (so no `[[windows]]`
/// entry may take it).
pub const STATSD_LATE_WINDOW: &str = "statsd";

/// Checks the whole event-time part of the config.
pub fn validate(
    watermark: &WatermarkSection,
    clock: &ClockSection,
    windows: &[WindowSection],
) -> Result<(), FieldError> {
    if watermark.out_of_orderness_ms > MAX_WINDOW_MS {
        return Err(("watermark.out_of_orderness_ms".into(), "must be at most 366 days".into()));
    }
    if watermark.idle_timeout_ms == 0 {
        return Err(("watermark.idle_timeout_ms".into(), "must be at least 1 ms".into()));
    }
    if watermark.max_devices == 0 {
        return Err(("watermark.max_devices".into(), "must be at least 1".into()));
    }
    if !(1_000..=MAX_WINDOW_MS).contains(&watermark.max_outage_ms) {
        return Err(("watermark.max_outage_ms".into(), "must be between 1 s and 366 days".into()));
    }
    if watermark.max_backlog_hold_ms > watermark.max_outage_ms {
        return Err(("watermark.max_backlog_hold_ms".into(), "must not exceed max_outage_ms".into()));
    }
    if watermark.stream_silence_ms < 2 * watermark.claim_interval_ms {
        return Err((
            "watermark.stream_silence_ms".into(),
            "must be at least twice claim_interval_ms (a live stream would look silent)".into(),
        ));
    }
    if !(10..=60_000).contains(&watermark.claim_interval_ms) {
        return Err(("watermark.claim_interval_ms".into(), "must be between 10 and 60000 ms".into()));
    }
    if watermark.state_memory_bytes < 1 << 20 {
        return Err(("watermark.state_memory_bytes".into(), "must be at least 1 MiB".into()));
    }
    if !(10..=60_000).contains(&watermark.tick_interval_ms) {
        return Err(("watermark.tick_interval_ms".into(), "must be between 10 and 60000 ms".into()));
    }
    if !(10..=60_000).contains(&watermark.checkpoint_interval_ms) {
        return Err(("watermark.checkpoint_interval_ms".into(), "must be between 10 and 60000 ms".into()));
    }
    if clock.max_models == 0 {
        return Err(("clock.max_models".into(), "must be at least 1".into()));
    }
    clock.to_config().validate().map_err(|error| ("clock".to_string(), error.to_string()))?;
    let mut names = std::collections::BTreeSet::new();
    for window in windows {
        window.spec(watermark)?;
        if window.name == STATSD_LATE_WINDOW {
            return Err(("windows.name".into(), format!("{STATSD_LATE_WINDOW:?} is reserved for StatsD late samples")));
        }
        if !names.insert(window.name.as_str()) {
            return Err(("windows.name".into(), format!("{:?} is used twice", window.name)));
        }
    }
    if windows.len() > 64 {
        return Err(("windows".into(), "at most 64 windows".into()));
    }
    Ok(())
}
