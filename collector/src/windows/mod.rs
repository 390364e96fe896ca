//! Event-time windows over the log.
//!
//! [`pipeline::Pipeline`] is the deterministic part: it turns log records (events with their
//! stored clock corrections, and the processor's `tick` records) into window results and
//! late-event records. [`processor`] runs it live on its own thread, reading the log from its
//! checkpoint and committing outputs together with the next checkpoint; `log replay` runs the
//! same pipeline from scratch and compares.

pub mod config;
pub mod key;
pub mod pipeline;
pub mod processor;

/// The reader name (and checkpoint key) of the live window processor.
pub const READER: &str = "windows";
