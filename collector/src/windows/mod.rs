//! Event-time windows over the log.
//!
//! [`pipeline::Pipeline`] is the deterministic part: it turns log records (events with their
//! stored clock corrections, the acceptor's completeness `claim` records, and the processor's
//! `tick` records) into window results and late-event records. Per-device windows close on
//! their device's completeness ([`devices`]), the others on the fleet's watermark ([`fleet`]);
//! StatsD samples are aggregated by event time per device and per `|T` source ([`statsd`],
//! [`statsd_owners`]);
//! state not in memory lives in the log's file ([`store`]). [`processor`] runs it live on its own thread, reading the log from its
//! checkpoint and committing outputs together with the next checkpoint; `log replay` runs the
//! same pipeline from scratch and compares.

pub mod config;
pub mod devices;
pub mod fleet;
pub mod key;
pub mod pipeline;
pub mod processor;
pub mod statsd;
pub mod statsd_owners;
pub mod store;

/// The reader name (and checkpoint key) of the live window processor.
pub const READER: &str = "windows";
