//! `agent.toml`: every setting, its unit and its default. Unknown fields are errors.
//!
//! Loading goes raw TOML → [`AgentConfig`] → [`AgentConfig::validate`]; `driftlog-agent
//! validate --config FILE` runs exactly that and nothing else.

use crate::key::DEVELOPMENT_DEVICE;
pub use crate::outbox::DropPolicy;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole agent configuration. Every field has a default, so an empty file (or none)
/// runs an agent against a collector on this machine.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// This device's id, as the collector's key file names it.
    pub device_id: u64,
    /// Where the outbox and the ingest socket live.
    pub data_dir: PathBuf,
    /// The key id and 32-byte key (64 hex digits) from `driftlog-collector keygen`. Without
    /// one the agent uses the published development key (id 0), which the collector accepts
    /// only when told to; a warning says so at start.
    pub key_file: Option<PathBuf>,
    pub collector: UplinkSection,
    pub outbox: OutboxSection,
    pub sender: SenderSection,
    pub ingest: IngestSection,
    pub host: HostSection,
    pub metrics: MetricsSection,
    /// The local StatsD listener (`[statsd]`); off when absent (or `run --statsd-udp ADDR`).
    pub statsd: Option<StatsdSection>,
}

/// `[statsd]`: a local StatsD listener whose samples survive outages (see
/// `driftlog_agent::statsd`). Present means on; every key has a default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsdSection {
    /// UDP address; `""` turns UDP off (a Unix datagram socket alone).
    #[serde(deserialize_with = "optional_address")]
    pub udp: Option<SocketAddr>,
    /// Unix datagram socket (DogStatsD clients' `unix://` address); relative paths are
    /// inside `data_dir`. Off when absent.
    pub unix_datagram: Option<PathBuf>,
    /// `etsy` (the reference's grammar and quirks, the default) or `dogstatsd` (`h`/`d`
    /// timers, strict values, tags sorted in the key): the collector's StatsD dialects.
    pub dialect: driftlog_protocol::statsd::Dialect,
    /// Largest datagram taken, bytes; a larger one is dropped and counted.
    pub max_packet_bytes: usize,
    /// `SO_RCVBUF` of the UDP socket, bytes (the kernel may clamp it): what absorbs a burst
    /// while the driver commits.
    pub receive_buffer_bytes: usize,
}

impl Default for StatsdSection {
    fn default() -> StatsdSection {
        StatsdSection {
            udp: Some(SocketAddr::from(([127, 0, 0, 1], 8125))),
            unix_datagram: None,
            dialect: driftlog_protocol::statsd::Dialect::Etsy,
            max_packet_bytes: 65_507,
            receive_buffer_bytes: 4 << 20,
        }
    }
}

/// An address, or `""` for none.
fn optional_address<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.is_empty() { Ok(None) } else { text.parse().map(Some).map_err(serde::de::Error::custom) }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve Prometheus metrics at `http://LISTEN/metrics`; off when absent. Meant for
    /// localhost: there is no authentication.
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UplinkSection {
    /// Where frames go: the collector's address (`host:port`; a name is resolved once, at
    /// start, preferring IPv4), or the multicast group and port.
    #[serde(deserialize_with = "deserialize_address")]
    pub address: SocketAddr,
    pub transport: TransportKind,
    /// Multicast only: the local interface address to send from (`IP_MULTICAST_IF`).
    pub multicast_interface: Option<std::net::Ipv4Addr>,
    /// Multicast only: hop limit.
    pub multicast_ttl: u32,
    /// Multicast only: deliver our own datagrams to local listeners too.
    pub multicast_loop: bool,
    /// ZeroMQ only: the collector's SUB socket, which the agent's PUB connects to.
    pub zmq_data_endpoint: String,
    /// ZeroMQ only: the collector's PUB socket for ACKs and NAKs, on topic `d<device_id>.`.
    pub zmq_ack_endpoint: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    Udp,
    Multicast,
    Zmq,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxSection {
    /// Bound on the outbox on disk (events and tombstones), bytes.
    pub max_bytes: u64,
    pub drop_policy: DropPolicy,
    /// Group commit: events that arrive within this interval share one fsync. It is also
    /// the most an accepted event waits to become durable, and the loss window on power cut
    /// for events not yet reported accepted. Each commit writes at least one 4 KiB page
    /// (an fdatasync cannot write less), so at low event rates longer intervals save flash
    /// wear: at 1 000 events/s the default writes 1.5x the encoded events (measured).
    pub flush_interval_ms: u64,
    /// A group commit happens at once when this many events are waiting.
    pub flush_max_events: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderSection {
    pub max_datagram_bytes: usize,
    pub max_events_per_frame: u32,
    pub max_in_flight_bytes: usize,
    /// Replay rate for events that piled up while the collector was unreachable.
    pub backlog_events_per_second: u32,
    pub heartbeat_interval_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Unix stream socket for applications and `driftlog-agent emit`; relative paths are
    /// inside `data_dir`.
    pub socket: PathBuf,
    /// Bound on events waiting for the next group commit; inputs wait when it is full.
    pub queue_events: usize,
    /// Bound on concurrent socket clients.
    pub max_clients: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostSection {
    pub enabled: bool,
    /// Sampling interval of CPU, memory, load, disk, network and thermal readings.
    pub interval_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> AgentConfig {
        AgentConfig {
            device_id: 1,
            data_dir: PathBuf::from("driftlog-agent-data"),
            key_file: None,
            collector: UplinkSection::default(),
            outbox: OutboxSection::default(),
            sender: SenderSection::default(),
            ingest: IngestSection::default(),
            host: HostSection::default(),
            metrics: MetricsSection::default(),
            statsd: None,
        }
    }
}

impl Default for UplinkSection {
    fn default() -> UplinkSection {
        UplinkSection {
            address: SocketAddr::from(([127, 0, 0, 1], 7400)),
            transport: TransportKind::Udp,
            multicast_interface: None,
            multicast_ttl: 1,
            multicast_loop: true,
            zmq_data_endpoint: "tcp://127.0.0.1:7401".into(),
            zmq_ack_endpoint: "tcp://127.0.0.1:7402".into(),
        }
    }
}

impl Default for OutboxSection {
    fn default() -> OutboxSection {
        OutboxSection {
            max_bytes: 256 * 1024 * 1024,
            drop_policy: DropPolicy::DropOldest,
            flush_interval_ms: 100,
            flush_max_events: 1_024,
        }
    }
}

impl Default for SenderSection {
    fn default() -> SenderSection {
        SenderSection {
            max_datagram_bytes: 1_200,
            max_events_per_frame: 64,
            max_in_flight_bytes: 256 * 1024,
            backlog_events_per_second: 5_000,
            heartbeat_interval_ms: 1_000,
        }
    }
}

impl Default for IngestSection {
    fn default() -> IngestSection {
        IngestSection { socket: PathBuf::from("ingest.sock"), queue_events: 10_000, max_clients: 64 }
    }
}

impl Default for HostSection {
    fn default() -> HostSection {
        HostSection { enabled: true, interval_ms: 10_000 }
    }
}

/// `host:port` or `ip:port` as one address: the first IPv4 address a name resolves to, else
/// its first address (`localhost` is 127.0.0.1, where a collector listens by default).
pub fn resolve_address(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let addresses: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|error| format!("{text:?} is not an address (host:port or ip:port): {error}"))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn deserialize_address<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    resolve_address(&text).map_err(serde::de::Error::custom)
}

/// A config that cannot be used, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] driftlog_config::FileError),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, message: message.into() }
}

/// The settings `driftlog-agent run` takes on its command line, over the config file's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// The collector's address, host:port or ip:port (or multicast group:port).
    #[arg(long, value_parser = resolve_address)]
    pub collector: Option<SocketAddr>,
    #[arg(long, value_enum)]
    pub transport: Option<TransportKind>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long)]
    pub device_id: Option<u64>,
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Listen for StatsD on this UDP address (turns `[statsd]` on with its defaults).
    #[arg(long)]
    pub statsd_udp: Option<SocketAddr>,
}

impl Overrides {
    fn apply(&self, config: &mut AgentConfig) {
        if let Some(collector) = self.collector {
            config.collector.address = collector;
        }
        if let Some(transport) = self.transport {
            config.collector.transport = transport;
        }
        if let Some(data_dir) = &self.data_dir {
            config.data_dir.clone_from(data_dir);
        }
        if let Some(device_id) = self.device_id {
            config.device_id = device_id;
        }
        if self.key_file.is_some() {
            config.key_file.clone_from(&self.key_file);
        }
        if let Some(address) = self.statsd_udp {
            config.statsd.get_or_insert_with(Default::default).udp = Some(address);
        }
    }
}

impl AgentConfig {
    /// Reads and validates `path`; `None` gives the defaults.
    pub fn load(path: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        AgentConfig::load_with(path, &Overrides::default())
    }

    /// Reads `path` (`None`: the defaults), applies the command line's `overrides`, then
    /// validates the result once.
    pub fn load_with(path: Option<&Path>, overrides: &Overrides) -> Result<AgentConfig, ConfigError> {
        let mut config: AgentConfig = driftlog_config::load_toml(path)?;
        overrides.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.key_file.is_none() && self.device_id != DEVELOPMENT_DEVICE {
            // The development key is device 1 at every collector: events sent as another
            // id would be stored as device 1's over UDP, and never acknowledged over ZeroMQ
            // (the ACKs go to topic d1.).
            return Err(invalid(
                "device_id",
                format!(
                    "is {} but there is no key_file: without one the agent signs with the published development key, \
                     which a collector accepts as device 1 only; set device_id = 1, or create this device's key with \
                     `driftlog-collector keygen --device {}` and set key_file",
                    self.device_id, self.device_id
                ),
            ));
        }
        if self.outbox.max_bytes < 64 * 1024 {
            return Err(invalid("outbox.max_bytes", "must be at least 65536 bytes"));
        }
        if !(1..=1_000).contains(&self.outbox.flush_interval_ms) {
            return Err(invalid("outbox.flush_interval_ms", "must be between 1 and 1000 ms"));
        }
        if self.outbox.flush_max_events == 0 {
            return Err(invalid("outbox.flush_max_events", "must be at least 1"));
        }
        if !(256..=driftlog_protocol::wire::MAX_DATAGRAM_BYTES).contains(&self.sender.max_datagram_bytes) {
            return Err(invalid("sender.max_datagram_bytes", "must be between 256 and 65507"));
        }
        if self.sender.max_events_per_frame == 0 {
            return Err(invalid("sender.max_events_per_frame", "must be at least 1"));
        }
        if self.sender.max_in_flight_bytes < self.sender.max_datagram_bytes {
            return Err(invalid("sender.max_in_flight_bytes", "must hold at least one datagram"));
        }
        if self.sender.heartbeat_interval_ms == 0 {
            return Err(invalid("sender.heartbeat_interval_ms", "must be at least 1 ms"));
        }
        if self.ingest.queue_events == 0 || self.ingest.max_clients == 0 {
            return Err(invalid("ingest", "queue_events and max_clients must be at least 1"));
        }
        if self.host.enabled && self.host.interval_ms < 100 {
            return Err(invalid("host.interval_ms", "must be at least 100 ms"));
        }
        if let Some(statsd) = &self.statsd {
            if statsd.udp.is_none() && statsd.unix_datagram.is_none() {
                return Err(invalid("statsd.udp", "set udp or unix_datagram (udp = \"\" turns UDP off)"));
            }
            if !(512..=65_507).contains(&statsd.max_packet_bytes) {
                return Err(invalid("statsd.max_packet_bytes", "must be between 512 and 65507"));
            }
        }
        match self.collector.transport {
            TransportKind::Udp if self.collector.address.ip().is_multicast() => {
                return Err(invalid(
                    "collector.address",
                    "is a multicast group; set collector.transport = \"multicast\"",
                ));
            }
            TransportKind::Multicast if !self.collector.address.ip().is_multicast() => {
                return Err(invalid("collector.address", "must be a multicast group for the multicast transport"));
            }
            TransportKind::Zmq => {
                for (field, endpoint) in [
                    ("collector.zmq_data_endpoint", &self.collector.zmq_data_endpoint),
                    ("collector.zmq_ack_endpoint", &self.collector.zmq_ack_endpoint),
                ] {
                    if !endpoint.starts_with("tcp://") {
                        return Err(invalid(field, format!("must be a tcp:// endpoint, got {endpoint:?}")));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The ingest socket path, resolved against `data_dir`.
    pub fn ingest_socket(&self) -> PathBuf {
        self.data_dir.join(&self.ingest.socket)
    }

    pub fn status_path(&self) -> PathBuf {
        self.data_dir.join("status.json")
    }

    pub fn outbox_path(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// The StatsD Unix datagram socket, resolved against `data_dir`.
    pub fn statsd_unix_socket(&self) -> Option<PathBuf> {
        self.statsd.as_ref()?.unix_datagram.as_ref().map(|path| self.data_dir.join(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent.toml");
        let config = AgentConfig::load(Some(&path)).unwrap();
        assert_eq!(config.device_id, 17);
        assert_eq!(config.outbox.drop_policy, DropPolicy::DropOldest);
        let statsd = config.statsd.expect("the example turns StatsD on");
        assert_eq!(statsd.udp, Some(SocketAddr::from(([127, 0, 0, 1], 8125))));
    }

    #[test]
    fn statsd_is_off_unless_configured_and_its_keys_are_checked() {
        assert!(AgentConfig::default().statsd.is_none());
        let on: AgentConfig = toml::from_str("[statsd]\n").unwrap();
        assert_eq!(on.statsd.as_ref().and_then(|s| s.udp), Some(SocketAddr::from(([127, 0, 0, 1], 8125))));
        let unix_only: AgentConfig = toml::from_str("[statsd]\nudp = \"\"\nunix_datagram = \"statsd.sock\"\n").unwrap();
        assert!(unix_only.validate().is_ok());
        assert_eq!(unix_only.statsd_unix_socket(), Some(PathBuf::from("driftlog-agent-data/statsd.sock")));
        let neither: AgentConfig = toml::from_str("[statsd]\nudp = \"\"\n").unwrap();
        assert!(neither.validate().unwrap_err().to_string().starts_with("statsd.udp"));
        assert!(toml::from_str::<AgentConfig>("[statsd]\nudp = \"nowhere\"\n").is_err());
        assert!(toml::from_str::<AgentConfig>("[statsd]\ndialect = \"graphite\"\n").is_err());
    }

    #[test]
    fn unknown_fields_and_bad_values_name_the_field() {
        let error = toml::from_str::<AgentConfig>("[outbox]\nmax_byte = 5\n").unwrap_err().to_string();
        assert!(error.contains("max_byte"), "{error}");
        let mut config = AgentConfig::default();
        config.outbox.flush_interval_ms = 0;
        assert!(config.validate().unwrap_err().to_string().starts_with("outbox.flush_interval_ms"));
        config = AgentConfig::default();
        config.collector.transport = TransportKind::Multicast;
        assert!(config.validate().unwrap_err().to_string().starts_with("collector.address"));
    }

    #[test]
    fn without_a_key_file_the_device_is_1() {
        let mut config = AgentConfig { device_id: 77, ..AgentConfig::default() };
        let error = config.validate().unwrap_err().to_string();
        assert!(error.starts_with("device_id") && error.contains("keygen --device 77"), "{error}");
        config.key_file = Some(PathBuf::from("device.key"));
        config.validate().unwrap();
    }

    #[test]
    fn collector_addresses_may_be_host_names() {
        assert_eq!(resolve_address("localhost:7400"), Ok(SocketAddr::from(([127, 0, 0, 1], 7400))));
        assert_eq!(resolve_address("10.1.2.3:9"), Ok(SocketAddr::from(([10, 1, 2, 3], 9))));
        assert!(resolve_address("localhost").is_err(), "a port is needed");
        let config: AgentConfig = toml::from_str("[collector]\naddress = \"localhost:7401\"").unwrap();
        assert_eq!(config.collector.address.port(), 7401);
    }
}
