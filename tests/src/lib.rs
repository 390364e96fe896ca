//! A deterministic simulator for the driftlog protocol (TigerBeetle's VOPR, grown from
//! quinn's `Pair`).
//!
//! A [`World`] steps N devices (each a real [`driftlog_protocol::Sender`] over an in-memory
//! backlog, or the agent's real core over its real outbox on a simulated disk:
//! [`agent_node`]) and one collector (the real ingest core and redb log on a simulated disk)
//! in virtual time: no tokio, no sleeps, no wall clock. Links lose (independently or in Gilbert-Elliott
//! bursts), duplicate, reorder through jittered delay, delay asymmetrically and partition;
//! every device clock has its own offset and drift. Every random choice comes from one seed,
//! so a seed replays a run exactly and two runs of one seed end with the same trace hash.
//!
//! Checkers (see [`checker`]) run on every delivery and release, and at the end: exactly-once
//! delivery or a tombstone for every enqueued event, bounded buffers, and a device never
//! freeing an event the collector has not committed.

pub mod agent_node;
pub mod checker;
pub mod clock;
pub mod disk;
pub mod intervals;
pub mod link;
pub mod log_disk;
pub mod report;
pub mod scenario;
pub mod seeds;
pub mod world;

pub use checker::Checker;
pub use clock::SimClock;
pub use link::{LinkConfig, LossModel};
pub use scenario::{CollectorScenario, DeviceScenario, DiskFaultMix, DiskScenario, Scenario, Storage};
pub use world::{Outcome, World};
