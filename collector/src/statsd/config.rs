//! `[statsd]`: the StatsD listeners and the reference's options. Off unless the section is
//! present (or `run --statsd-udp ADDR`).

use driftlog_protocol::statsd::Dialect;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsdSection {
    /// UDP address (IPv4 or IPv6), e.g. `127.0.0.1:8125` or `[::]:8125`.
    pub udp: Option<SocketAddr>,
    /// TCP address: newline-framed lines, as the reference's TCP server.
    pub tcp: Option<SocketAddr>,
    /// Unix datagram socket path (one packet per datagram, as DogStatsD's UDS).
    pub unix_datagram: Option<PathBuf>,
    /// Unix stream socket path (newline-framed, as the reference's `socket`).
    pub unix_stream: Option<PathBuf>,
    /// `flushInterval`: how often aggregates are flushed to the log, ms, counted from the
    /// collector's start as the reference does.
    pub flush_interval_ms: u64,
    /// `percentThreshold`: timer percentiles; negative values are top percentiles
    /// (`-10` gives `lower_top10`), fractions are allowed (`99.9` gives `upper_99_9`).
    pub percent_threshold: Vec<f64>,
    /// `etsy` (the reference's grammar and quirks, the default) or `dogstatsd`.
    pub dialect: Dialect,
    /// `deleteIdleStats`: the default of the four `delete_*` options.
    pub delete_idle_stats: bool,
    /// `deleteCounters`: drop counters with no update in an interval instead of sending 0.
    pub delete_counters: Option<bool>,
    /// `deleteTimers`: drop idle timers instead of sending `count` 0.
    pub delete_timers: Option<bool>,
    /// `deleteSets`: drop idle sets instead of sending `count` 0.
    pub delete_sets: Option<bool>,
    /// `deleteGauges`: drop gauges not updated for `gauges_max_ttl` flushes instead of
    /// sending their last value forever.
    pub delete_gauges: Option<bool>,
    /// `gaugesMaxTTL`.
    pub gauges_max_ttl: u32,
    /// `prefixStats`: the prefix of the server's own metrics (`statsd.bad_lines_seen` …).
    pub prefix_stats: String,
    /// The flushes' `source` (the JetStream subject `driftlog.statsd.<source>`); default:
    /// the host name.
    pub source: Option<String>,
    /// Distinct keys held at once (all types); samples for more are dropped and counted.
    pub max_keys: usize,
    /// Timer values stored per key and interval; more are dropped (still counted in
    /// `count`) and counted.
    pub max_timer_values: usize,
    /// Distinct members per set and interval.
    pub max_set_members: usize,
    /// DogStatsD `|T` samples waiting for their next commit to the log (every 50 ms); more
    /// are dropped and counted.
    pub max_timestamped_samples: usize,
    /// UDP sockets bound with `SO_REUSEPORT`, one receive thread each; 0 = one per core.
    pub udp_sockets: usize,
    /// `SO_RCVBUF` per UDP socket, bytes.
    pub receive_buffer_bytes: usize,
    /// Largest datagram read whole, bytes; a larger one is dropped and counted.
    pub max_packet_bytes: usize,
    /// Open TCP and Unix stream connections at once; more are closed at once and counted.
    pub max_connections: usize,
    /// Longest line on a stream, bytes; a longer line is skipped up to its newline and
    /// counted.
    pub max_line_bytes: usize,
    /// A stream connection silent this long is closed, ms.
    pub idle_timeout_ms: u64,
    pub graphite: Option<GraphiteSection>,
}

/// Graphite plaintext output (carbon's line receiver): each flush with the reference's names.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphiteSection {
    /// The carbon line receiver, e.g. `127.0.0.1:2003`.
    pub address: SocketAddr,
    /// `legacyNamespace`: `stats.<key>`/`stats_counts.<key>` for counters and no
    /// `counters.`/`.count` suffixes. Default off: `stats.counters.<key>.rate`.
    pub legacy_namespace: bool,
    /// Flushes waiting for carbon; when it is down longer, the oldest are dropped (counted).
    pub max_queued_flushes: usize,
}

impl Default for StatsdSection {
    fn default() -> Self {
        StatsdSection {
            udp: None,
            tcp: None,
            unix_datagram: None,
            unix_stream: None,
            flush_interval_ms: 10_000,
            percent_threshold: vec![90.0],
            dialect: Dialect::Etsy,
            delete_idle_stats: false,
            delete_counters: None,
            delete_timers: None,
            delete_sets: None,
            delete_gauges: None,
            gauges_max_ttl: 1,
            prefix_stats: "statsd".into(),
            source: None,
            max_keys: 1_000_000,
            max_timer_values: 100_000,
            max_set_members: 100_000,
            max_timestamped_samples: 100_000,
            udp_sockets: 0,
            receive_buffer_bytes: 8 << 20,
            max_packet_bytes: 65_507,
            max_connections: 256,
            max_line_bytes: 65_536,
            idle_timeout_ms: 300_000,
            graphite: None,
        }
    }
}

/// `percent_threshold`'s rules; the message when broken.
pub fn validate_thresholds(thresholds: &[f64]) -> Result<(), &'static str> {
    for &p in thresholds {
        // Where Rust and JavaScript print a number the same way (the field names).
        if !p.is_finite() || p.abs() > 100.0 || (p != 0.0 && p.abs() < 1e-6) {
            return Err("each must be between -100 and 100 (0, or at least 1e-6 away)");
        }
    }
    if thresholds.len() > 32 {
        return Err("at most 32 thresholds");
    }
    Ok(())
}

impl Default for GraphiteSection {
    fn default() -> Self {
        GraphiteSection {
            address: SocketAddr::from(([127, 0, 0, 1], 2003)),
            legacy_namespace: false,
            max_queued_flushes: 16,
        }
    }
}

impl StatsdSection {
    /// `(field, message)` for the first invalid setting.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |field: &str, message: &str| Err((format!("statsd.{field}"), message.to_string()));
        if self.udp.is_none() && self.tcp.is_none() && self.unix_datagram.is_none() && self.unix_stream.is_none() {
            return invalid("udp", "set at least one of udp, tcp, unix_datagram, unix_stream");
        }
        if !(100..=86_400_000).contains(&self.flush_interval_ms) {
            return invalid("flush_interval_ms", "must be between 100 and 86400000 (a day)");
        }
        if let Err(message) = validate_thresholds(&self.percent_threshold) {
            return invalid("percent_threshold", message);
        }
        if self.prefix_stats.is_empty() || self.prefix_stats.contains(char::is_whitespace) {
            return invalid("prefix_stats", "must be a non-empty name without spaces");
        }
        if let Some(source) = &self.source
            && (source.is_empty() || !source.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return invalid("source", "must be letters, digits, '_' or '-' (a NATS subject token)");
        }
        if self.max_keys == 0
            || self.max_timer_values == 0
            || self.max_set_members == 0
            || self.max_timestamped_samples == 0
        {
            return invalid(
                "max_keys",
                "max_keys, max_timer_values, max_set_members and max_timestamped_samples must be at least 1",
            );
        }
        if self.udp_sockets > 64 {
            return invalid("udp_sockets", "must be at most 64 (0 = one per core)");
        }
        if !(512..=65_507).contains(&self.max_packet_bytes) {
            return invalid("max_packet_bytes", "must be between 512 and 65507");
        }
        if self.max_connections == 0 || !(64..=16 << 20).contains(&self.max_line_bytes) {
            return invalid("max_line_bytes", "max_connections at least 1, max_line_bytes between 64 and 16777216");
        }
        if self.idle_timeout_ms == 0 {
            return invalid("idle_timeout_ms", "must be at least 1");
        }
        if let Some(graphite) = &self.graphite
            && graphite.max_queued_flushes == 0
        {
            return invalid("graphite.max_queued_flushes", "must be at least 1");
        }
        Ok(())
    }

    pub fn reset_rules(&self) -> super::aggregate::ResetRules {
        let idle = self.delete_idle_stats;
        super::aggregate::ResetRules {
            delete_counters: self.delete_counters.unwrap_or(idle),
            delete_timers: self.delete_timers.unwrap_or(idle),
            delete_sets: self.delete_sets.unwrap_or(idle),
            delete_gauges: self.delete_gauges.unwrap_or(idle),
            // The reference forces anything but an integer above 1 to 1.
            gauges_max_ttl: self.gauges_max_ttl.max(1),
        }
    }

    /// The flushes' source: the configured one, else the host name made a subject token.
    pub fn source_name(&self) -> String {
        if let Some(source) = &self.source {
            return source.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let token: String = host.trim().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        if token.is_empty() { "collector".into() } else { token }
    }

    pub fn udp_socket_count(&self) -> usize {
        match self.udp_sockets {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}
