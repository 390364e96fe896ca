//! Event time for driftlog, as pure functions of their inputs: no IO, no clock reads, no
//! randomness. Time comes in as arguments, so the collector, `log replay` and the simulator
//! get byte-identical results from the same inputs.
//!
//! - [`clock`]: per-device clock models that map a device's monotonic time to collector
//!   (Unix) time: minimum filter, four-timestamp exchanges, drift regression, guards.
//! - [`window`]: tumbling, hopping and session windows over corrected event time, with
//!   watermarks, allowed lateness and a retracting changelog.

pub mod clock;
pub mod window;
