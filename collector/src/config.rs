//! `collector.toml`: every setting, its unit and its default. Unknown fields are errors.
//!
//! Loading goes raw TOML → [`CollectorConfig`] → [`CollectorConfig::validate`];
//! `driftlog-collector validate --config FILE` runs exactly that and nothing else.

use crate::keys::KeyMode;
use crate::windows::config::{ClockSection, WatermarkSection, WindowSection, default_windows};
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The whole collector configuration. Every field has a default, so no file at all runs a
/// collector for agents on this machine.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// The log (`log.redb`) lives here.
    pub data_dir: PathBuf,
    /// Device keys: `[[device]] device_id, key_id, key` (what `keygen` appends to). Re-read
    /// when it changes, so new devices need no restart.
    pub keys_file: Option<PathBuf>,
    /// Accept the published development key (key id 0, all-zero secret: what an agent
    /// without a key file signs with) as device 1. Anyone can forge frames with it. Unset
    /// (the default) it is accepted only while no `keys_file` is configured, so a first run
    /// works without setup; `true` with a keys file accepts it too (`validate` warns), but
    /// never once device 1 has a real key; `false` refuses it always.
    pub development_key: Option<bool>,
    pub ingest: IngestSection,
    pub log: LogSection,
    pub http: HttpSection,
    pub forward: ForwardSection,
    pub limits: LimitsSection,
    pub clock: ClockSection,
    pub watermark: WatermarkSection,
    /// Event-time windows (`[[windows]]`); without any, one per-device 10 s tumbling window
    /// over every metric. `windows = []` turns windowing off.
    pub windows: Vec<WindowSection>,
    /// StatsD listeners and aggregation (`[statsd]`); off when absent.
    pub statsd: Option<crate::statsd::config::StatsdSection>,
    /// StatsD by event time (`[statsd_event_time]`): agents' samples per device, `|T` lines
    /// per source; on by default wherever windows are computed.
    pub statsd_event_time: crate::windows::config::StatsdEventTimeSection,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    pub udp: UdpSection,
    pub multicast: Option<MulticastSection>,
    pub zmq: Option<ZmqSection>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpSection {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Sockets bound to `listen` with `SO_REUSEPORT`, one receive thread each; the kernel
    /// spreads devices over them by address hash. 0 = one per core.
    pub sockets: usize,
    /// `SO_RCVBUF` per socket, bytes (the kernel may clamp it; `SO_RCVBUFFORCE` is tried first).
    pub receive_buffer_bytes: usize,
    /// Datagrams per `recvmmsg` call.
    pub batch_datagrams: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MulticastSection {
    pub group: Ipv4Addr,
    pub port: u16,
    /// The local interface address to join on.
    #[serde(default = "unspecified")]
    pub interface: Ipv4Addr,
}

fn unspecified() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZmqSection {
    /// The SUB socket agents' PUB sockets connect to.
    pub data_endpoint: String,
    /// The PUB socket for ACKs and NAKs, topic `d<device_id>.`.
    pub ack_endpoint: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Group commit: datagrams that arrive within this interval share one fsync. It bounds
    /// how long an ACK waits for its commit.
    pub flush_interval_ms: u64,
    /// The largest block the log stores, bytes, as redb lays it out; a power of two, since
    /// redb gives each block a power-of-two number of 4 KiB pages. A commit stores one or
    /// more blocks; smaller blocks waste less of their last page run, larger ones spend
    /// fewer bytes on per-block heads.
    pub max_block_bytes: usize,
    /// Commit at once when what waits for the next commit reaches this size, bytes; while a
    /// commit is in flight, ingest pauses at this bound (the sockets' buffers hold what
    /// arrives meanwhile).
    pub max_commit_bytes: usize,
    /// Retention by size (sum of stored records), bytes.
    pub retention_max_bytes: u64,
    /// Retention by age, seconds; 0 keeps records until the size bound needs their room.
    pub retention_max_age_s: u64,
    /// redb's page cache, bytes.
    pub cache_bytes: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `/metrics` (Prometheus) and `/health`; no authentication, keep it local.
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardSection {
    pub jetstream: Option<JetStreamSection>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamSection {
    /// `nats://host:port`.
    pub url: String,
    /// The stream, created when missing with subjects `<subject_prefix>.>`.
    pub stream: String,
    pub subject_prefix: String,
    /// Publish acknowledgements awaited at once (pipelining).
    pub max_in_flight: usize,
    /// JetStream's duplicate window, seconds: redelivery of a message id within it is dropped
    /// by the server. Set on stream creation.
    pub duplicate_window_s: u64,
    /// The forwarder's name for its stored offset; two collectors feeding one stream need
    /// different names only if they share a data directory (they should not).
    pub reader: String,
    /// Keep records the forwarder has not published: at the log's size bound the collector
    /// stops acknowledging instead of deleting them.
    pub protect_unforwarded: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Receivers `(device, stream, epoch)` held in memory at once (about 2 KiB each). Idle
    /// ones leave memory (their state is in the log) to make room; a frame for another stream
    /// while none is idle is refused (`too_many_streams`) and retransmitted.
    pub max_streams: usize,
    /// Receivers one device holds in memory at once; its least recently active idle one
    /// makes room, else the frame is refused (`device_quota`).
    pub max_streams_per_device: usize,
    /// A receiver with nothing in flight leaves memory after this long without a frame,
    /// seconds; its stream's next frame brings it back from the log.
    pub stream_idle_s: u64,
    /// Stream dedup states the log holds, in total and per device: a frame that would start
    /// another is refused (`too_many_streams`, `device_quota`). Finished epochs (a device's
    /// heartbeat says it holds nothing older) are compacted and do not count.
    pub max_stream_states: u64,
    pub max_stream_states_per_device: u32,
    /// Frames failing authentication (or replays) one source address may cost per second
    /// once its burst is spent; past that its frames are dropped unread (counted as
    /// `driftlog_frames_shed_total`), so a flood from one host cannot starve the devices.
    /// 0 turns the filter off.
    pub source_failures_per_s: u32,
    pub source_failures_burst: u32,
    /// Source addresses the filter tracks at once (only failing ones are tracked).
    pub max_sources: usize,
    /// Receive batches queued between the sockets and the acceptor; a full queue makes the
    /// sockets wait, and the kernel's receive buffer (counted) takes the overflow.
    pub ingest_queue_batches: usize,
    pub max_datagram_bytes: usize,
}

impl Default for CollectorConfig {
    fn default() -> CollectorConfig {
        CollectorConfig {
            data_dir: PathBuf::from("driftlog-data"),
            keys_file: None,
            development_key: None,
            ingest: IngestSection::default(),
            log: LogSection::default(),
            http: HttpSection::default(),
            forward: ForwardSection::default(),
            limits: LimitsSection::default(),
            clock: ClockSection::default(),
            watermark: WatermarkSection::default(),
            windows: default_windows(),
            statsd: None,
            statsd_event_time: Default::default(),
        }
    }
}

impl Default for UdpSection {
    fn default() -> Self {
        UdpSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            sockets: 0,
            receive_buffer_bytes: 8 << 20,
            batch_datagrams: 64,
        }
    }
}

impl Default for ZmqSection {
    fn default() -> Self {
        ZmqSection { data_endpoint: "tcp://127.0.0.1:7401".into(), ack_endpoint: "tcp://127.0.0.1:7402".into() }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            flush_interval_ms: 10,
            max_block_bytes: 128 << 10,
            max_commit_bytes: 4 << 20,
            retention_max_bytes: 10 << 30,
            retention_max_age_s: 0,
            cache_bytes: 64 << 20,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { listen: Some(SocketAddr::from(([127, 0, 0, 1], 9400))) }
    }
}

impl Default for JetStreamSection {
    fn default() -> Self {
        JetStreamSection {
            url: "nats://127.0.0.1:4222".into(),
            stream: "DRIFTLOG".into(),
            subject_prefix: "driftlog".into(),
            max_in_flight: 1_024,
            duplicate_window_s: 120,
            reader: "jetstream".into(),
            protect_unforwarded: true,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_streams: 100_000,
            max_streams_per_device: 64,
            stream_idle_s: 60,
            max_stream_states: 1_000_000,
            max_stream_states_per_device: 1_024,
            source_failures_per_s: 100,
            source_failures_burst: 1_000,
            max_sources: 65_536,
            ingest_queue_batches: 256,
            max_datagram_bytes: 1_472,
        }
    }
}

/// A config that cannot be used, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] driftlog_config::FileError),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field: field.into(), message: message.into() }
}

/// The settings `driftlog-collector run` takes on its command line, over the config file's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// UDP address for agent frames.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address for /metrics and /health.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Device keys file (`[[device]] device_id, key_id, key`).
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Also listen for StatsD on this UDP address (turns `[statsd]` on with its defaults).
    #[arg(long)]
    pub statsd_udp: Option<SocketAddr>,
}

impl Overrides {
    fn apply(&self, config: &mut CollectorConfig) {
        if let Some(listen) = self.listen {
            config.ingest.udp.listen = listen;
            config.ingest.udp.enabled = true;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir.clone_from(dir);
        }
        if let Some(http) = self.http {
            config.http.listen = Some(http);
        }
        if self.keys.is_some() {
            config.keys_file.clone_from(&self.keys);
        }
        if let Some(address) = self.statsd_udp {
            config.statsd.get_or_insert_with(Default::default).udp = Some(address);
        }
    }
}

impl CollectorConfig {
    /// Reads and validates `path`; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<CollectorConfig, ConfigError> {
        CollectorConfig::load_with(path, &Overrides::default())
    }

    /// Reads `path` (`None`: the defaults), applies the command line's `overrides`, then
    /// validates the result once.
    pub fn load_with(path: Option<&Path>, overrides: &Overrides) -> Result<CollectorConfig, ConfigError> {
        let mut config: CollectorConfig = driftlog_config::load_toml(path)?;
        overrides.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.ingest.udp.enabled && self.ingest.multicast.is_none() && self.ingest.zmq.is_none() {
            return Err(invalid("ingest", "enable at least one of udp, multicast, zmq"));
        }
        let udp = &self.ingest.udp;
        if udp.enabled {
            if udp.sockets > 64 {
                return Err(invalid("ingest.udp.sockets", "must be at most 64 (0 = one per core)"));
            }
            if !(1..=1024).contains(&udp.batch_datagrams) {
                return Err(invalid("ingest.udp.batch_datagrams", "must be between 1 and 1024"));
            }
            if udp.listen.ip().is_multicast() {
                return Err(invalid("ingest.udp.listen", "is a multicast group; use [ingest.multicast]"));
            }
        }
        if let Some(multicast) = &self.ingest.multicast
            && !multicast.group.is_multicast()
        {
            return Err(invalid("ingest.multicast.group", format!("{} is not a multicast group", multicast.group)));
        }
        if let Some(zmq) = &self.ingest.zmq {
            for (field, endpoint) in
                [("ingest.zmq.data_endpoint", &zmq.data_endpoint), ("ingest.zmq.ack_endpoint", &zmq.ack_endpoint)]
            {
                if !endpoint.starts_with("tcp://") {
                    return Err(invalid(field, format!("must be a tcp:// endpoint, got {endpoint:?}")));
                }
            }
        }
        if !(1..=1_000).contains(&self.log.flush_interval_ms) {
            return Err(invalid("log.flush_interval_ms", "must be between 1 and 1000 ms"));
        }
        if !(4_096..=64 << 20).contains(&self.log.max_block_bytes) || !self.log.max_block_bytes.is_power_of_two() {
            return Err(invalid("log.max_block_bytes", "must be a power of two between 4096 and 67108864"));
        }
        if !(self.log.max_block_bytes..=256 << 20).contains(&self.log.max_commit_bytes) {
            return Err(invalid("log.max_commit_bytes", "must be between log.max_block_bytes and 268435456"));
        }
        if self.log.retention_max_bytes < 4 * self.log.max_commit_bytes as u64 {
            return Err(invalid(
                "log.retention_max_bytes",
                "must hold at least four commits (4 x log.max_commit_bytes)",
            ));
        }
        if self.limits.max_streams == 0 || self.limits.ingest_queue_batches == 0 {
            return Err(invalid("limits", "max_streams and ingest_queue_batches must be at least 1"));
        }
        if self.limits.max_streams_per_device == 0 || self.limits.max_streams_per_device > self.limits.max_streams {
            return Err(invalid("limits.max_streams_per_device", "must be between 1 and limits.max_streams"));
        }
        if self.limits.source_failures_per_s > 0
            && (self.limits.source_failures_burst == 0 || self.limits.max_sources == 0)
        {
            return Err(invalid("limits", "source_failures_burst and max_sources must be at least 1"));
        }
        if self.limits.stream_idle_s == 0 {
            return Err(invalid("limits.stream_idle_s", "must be at least 1 s"));
        }
        if self.limits.max_stream_states_per_device == 0
            || u64::from(self.limits.max_stream_states_per_device) > self.limits.max_stream_states
        {
            return Err(invalid(
                "limits.max_stream_states_per_device",
                "must be between 1 and limits.max_stream_states",
            ));
        }
        if !(256..=driftlog_protocol::wire::MAX_DATAGRAM_BYTES).contains(&self.limits.max_datagram_bytes) {
            return Err(invalid("limits.max_datagram_bytes", "must be between 256 and 65507"));
        }
        if let Some(js) = &self.forward.jetstream {
            if !js.url.starts_with("nats://") {
                return Err(invalid("forward.jetstream.url", format!("must be a nats:// URL, got {:?}", js.url)));
            }
            let token_ok =
                |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !token_ok(&js.stream) {
                return Err(invalid("forward.jetstream.stream", "must be letters, digits, '_' or '-'"));
            }
            if !js.subject_prefix.split('.').all(token_ok) {
                return Err(invalid(
                    "forward.jetstream.subject_prefix",
                    "must be dot-separated tokens without wildcards",
                ));
            }
            if !(1..=65_536).contains(&js.max_in_flight) {
                return Err(invalid("forward.jetstream.max_in_flight", "must be between 1 and 65536"));
            }
            if js.duplicate_window_s == 0 {
                return Err(invalid("forward.jetstream.duplicate_window_s", "must be at least 1 s"));
            }
            if js.reader.is_empty() {
                return Err(invalid("forward.jetstream.reader", "must not be empty"));
            }
        }
        crate::windows::config::validate(&self.watermark, &self.clock, &self.windows)
            .map_err(|(field, message)| invalid(field, message))?;
        if let Some(statsd) = &self.statsd {
            statsd.validate().map_err(|(field, message)| invalid(field, message))?;
        }
        self.statsd_event_time.validate().map_err(|(field, message)| invalid(field, message))?;
        Ok(())
    }

    /// The event-time StatsD settings in force, if on.
    pub fn statsd_spec(&self) -> Option<crate::windows::statsd::StatsdSpec> {
        self.statsd_event_time.spec(self.statsd.as_ref())
    }

    /// Which keys this configuration accepts.
    pub fn key_mode(&self) -> KeyMode {
        match (self.keys_file.is_some(), self.development_key) {
            (false, None | Some(true)) => KeyMode::DevelopmentOnly,
            (true, Some(true)) => KeyMode::KeysFileAndDevelopment,
            // No keys file and the development key refused: every frame is refused until
            // a keys file is configured (validate says so).
            (_, Some(false)) | (true, None) => KeyMode::KeysFile,
        }
    }

    /// Settings that work but deserve a second look (`validate` prints them).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        match self.key_mode() {
            KeyMode::KeysFileAndDevelopment => warnings.push(
                "development_key = true with a keys_file: anyone can sign frames as device 1 with the published \
                 development key until device 1 has a real key; remove it in production"
                    .to_string(),
            ),
            KeyMode::DevelopmentOnly => warnings.push(
                "no keys_file: only the published development key is accepted (as device 1), and anyone can \
                 forge frames with it; create keys with `driftlog-collector keygen` and set keys_file"
                    .to_string(),
            ),
            KeyMode::KeysFile if self.keys_file.is_none() => {
                warnings.push("development_key = false and no keys_file: every frame will be refused".to_string())
            }
            KeyMode::KeysFile => {}
        }
        warnings
    }

    pub fn source_filter(&self) -> crate::source_filter::SourceFilterConfig {
        crate::source_filter::SourceFilterConfig {
            failures_per_s: self.limits.source_failures_per_s,
            burst: self.limits.source_failures_burst,
            max_sources: self.limits.max_sources,
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("log.redb")
    }

    pub fn udp_sockets(&self) -> usize {
        match self.ingest.udp.sockets {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CollectorConfig, String> {
        let config: CollectorConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/collector.toml");
        let config = CollectorConfig::load(Some(&path)).unwrap();
        assert!(config.forward.jetstream.is_some());
        assert!(config.ingest.zmq.is_some());
        let spec = config.statsd_spec().expect("StatsD by event time is on");
        assert_eq!(spec.thresholds, [90.0, 99.9, -10.0], "from [statsd] when not set");
        assert!(config.statsd.is_some_and(|s| s.graphite.is_some()));
    }

    #[test]
    fn statsd_event_time_follows_statsd_unless_set_and_checks_its_keys() {
        let config = parse("[statsd]\nudp = \"127.0.0.1:8125\"\nflush_interval_ms = 2000\n").unwrap();
        assert_eq!(config.statsd_spec().map(|s| s.interval), Some(2_000_000));
        let config = parse("[statsd_event_time]\nflush_interval_ms = 500\n").unwrap();
        assert_eq!(config.statsd_spec().map(|s| (s.interval, s.thresholds)), Some((500_000, vec![90.0])));
        assert!(parse("[statsd_event_time]\nenabled = false\n").unwrap().statsd_spec().is_none());
        assert!(parse("[statsd_event_time]\nflush_interval_ms = 5\n").unwrap_err().contains("flush_interval_ms"));
        assert!(parse("[statsd_event_time]\nmax_open_windows = 0\n").unwrap_err().contains("max_open_windows"));
        assert!(
            parse("[[windows]]\nname = \"statsd\"\ntype = \"tumbling\"\nsize_ms = 1000\n")
                .unwrap_err()
                .contains("reserved")
        );
    }

    #[test]
    fn empty_config_is_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.ingest.udp.listen.port(), 7400);
        assert_eq!(config.data_dir, PathBuf::from("driftlog-data"));
    }

    #[test]
    fn the_development_key_is_on_only_without_keys_or_when_asked_for() {
        assert_eq!(parse("").unwrap().key_mode(), KeyMode::DevelopmentOnly);
        let keys = parse("keys_file = \"k.toml\"").unwrap();
        assert_eq!(keys.key_mode(), KeyMode::KeysFile);
        assert!(keys.warnings().is_empty());
        let both = parse("keys_file = \"k.toml\"\ndevelopment_key = true").unwrap();
        assert_eq!(both.key_mode(), KeyMode::KeysFileAndDevelopment);
        assert!(both.warnings()[0].contains("development_key = true"));
        assert_eq!(parse("development_key = false").unwrap().key_mode(), KeyMode::KeysFile);
        assert!(parse("development_device_id = 5").is_err(), "the development key is device 1, always");
    }

    #[test]
    fn bad_fields_are_named() {
        assert!(parse("nonsense = 1").unwrap_err().contains("nonsense"));
        assert!(parse("[log]\nflush_interval_ms = 0").unwrap_err().contains("log.flush_interval_ms"));
        assert!(
            parse("[ingest.multicast]\ngroup = \"10.0.0.1\"\nport = 1").unwrap_err().contains("ingest.multicast.group")
        );
        assert!(parse("[forward.jetstream]\nurl = \"http://x\"").unwrap_err().contains("forward.jetstream.url"));
        assert!(parse("[ingest.udp]\nenabled = false").unwrap_err().contains("ingest"));
        assert!(parse("[log]\nretention_max_bytes = 10").unwrap_err().contains("retention_max_bytes"));
        assert!(parse("[log]\nmax_block_bytes = 100000").unwrap_err().contains("log.max_block_bytes"));
        assert!(parse("[log]\nmax_commit_bytes = 4096").unwrap_err().contains("log.max_commit_bytes"));
        assert!(parse("[statsd]").unwrap_err().contains("statsd.udp"));
        assert!(
            parse("[statsd]\nudp = \"127.0.0.1:8125\"\npercent_threshold = [101]")
                .unwrap_err()
                .contains("percent_threshold")
        );
        assert!(parse("[statsd]\nudp = \"127.0.0.1:8125\"\ndialect = \"graphite\"").is_err());
        assert!(parse("[statsd]\nudp = \"[::1]:8125\"\ndialect = \"dogstatsd\"").is_ok());
    }

    #[test]
    fn bad_windows_are_named() {
        let window = |body: &str| parse(&format!("[[windows]]\nname = \"w\"\n{body}")).map(|c| c.windows.len());
        assert_eq!(window("type = \"tumbling\"\nsize_ms = 1000"), Ok(1));
        assert!(window("type = \"tumbling\"").unwrap_err().contains("windows.w.size_ms"));
        assert!(window("type = \"tumbling\"\nsize_ms = 0").unwrap_err().contains("windows.w.size_ms"));
        assert!(window("type = \"tumbling\"\nsize_ms = -5").is_err());
        assert!(window("type = \"hopping\"\nsize_ms = 10\nslide_ms = 0").unwrap_err().contains("slide_ms"));
        assert!(window("type = \"hopping\"\nsize_ms = 10\nslide_ms = 20").unwrap_err().contains("slide_ms"));
        assert!(window("type = \"session\"\ngap_ms = 0").unwrap_err().contains("gap_ms"));
        assert!(window("type = \"session\"\nsize_ms = 5\ngap_ms = 5").unwrap_err().contains("size_ms"));
        assert!(window("type = \"sliding\"\nsize_ms = 5").unwrap_err().contains("sliding"));
        assert!(window("type = \"tumbling\"\nsize_ms = 10\noffset_ms = 10").unwrap_err().contains("offset_ms"));
        assert!(window("type = \"tumbling\"\nsize_ms = 10\nquantiles = [2.0]").unwrap_err().contains("quantiles"));
        assert!(parse("windows = []").unwrap().windows.is_empty());
        let twice = "[[windows]]\nname = \"w\"\ntype = \"session\"\ngap_ms = 5\n";
        assert!(parse(&format!("{twice}{twice}")).unwrap_err().contains("used twice"));
        assert!(parse("[watermark]\nidle_timeout_ms = 0").unwrap_err().contains("watermark.idle_timeout_ms"));
    }
}
