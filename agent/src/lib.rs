//! The driftlog device agent for Linux edge devices.
//!
//! Events enter through inputs (the ingest socket and `driftlog-agent emit`, host sensors),
//! are stamped with the device clocks, group-committed into the durable [`outbox`], and sent
//! by the protocol's sender over a [`transport`]; only an ACK frees them.
//!
//! - [`config`]: `agent.toml`, every field with its default and unit.
//! - [`clock`]: `CLOCK_BOOTTIME` and the wall clock with its quality.
//! - [`outbox`]: the bounded buffer (append-only segment files), the protocol's `Backlog`.
//! - [`agent_core`]: the sans-IO core that commits, sends, and handles ACKs and NAKs.
//! - [`driver`]: the IO shell that runs the core on tokio (clocks, channels, transport).
//! - [`transport`]: UDP unicast and multicast.
//! - [`ingest`]: the line format and the Unix socket that applications write to.
//! - [`host`]: CPU, memory, load, disk, network and thermal readings.
//! - [`statsd`]: a local StatsD listener whose samples survive outages (stream 2).
//! - [`simulate`]: N virtual devices with skewed clocks through the same code paths.
//! - [`metrics`]: optional Prometheus `/metrics` on localhost (the driver's published status, at scrape time).
//! - [`status`]: the `status.json` the driver publishes for `driftlog-agent status`.
//! - [`agent`]: wiring for `driftlog-agent run`.
//! - [`bridge`]: `driftlog-agent bridge`, the gateway between a microcontroller's serial link
//!   and the collector.

pub mod agent;
pub mod agent_core;
pub mod bridge;
pub mod clock;
pub mod config;
pub mod driver;
pub mod host;
pub mod ingest;
pub mod key;
pub mod metrics;
pub mod outbox;
pub mod simulate;
pub mod statsd;
pub mod status;
pub mod transport;
