//! The driftlog collector: receives agent frames over UDP, multicast and ZeroMQ, admits each
//! event exactly once into a durable redb log (dedup state committed with the events, ACKs
//! only after the commit), serves metrics, and forwards the log to NATS JetStream.
//!
//! Data flow: sources ([`ingest`]) → one bounded queue → [`acceptor`] (the thread driving the
//! sans-IO [`ingest_core`]: protocol endpoint, block building, ACKs) ⇄ [`committer`] (one fsynced transaction per block) → [`log`];
//! readers ([`forward`], `log tail`, [`replay`]) keep their own offsets. [`statsd`]: StatsD
//! listeners and aggregation, flushed into the log through the committer.

pub mod acceptor;
pub mod claims;
pub mod clocks;
pub mod committer;
pub mod config;
pub mod forward;
pub mod http;
pub mod id_hash;
pub mod ingest;
pub mod ingest_core;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod outage;
pub mod replay;
pub mod service;
pub mod shutdown;
pub mod source_filter;
pub mod statsd;
pub mod stream_states;
pub mod tail;
pub mod wall_clock;
pub mod windows;
