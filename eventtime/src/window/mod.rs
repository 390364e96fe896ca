//! Event-time windows: tumbling, hopping and session windows over corrected event time, with
//! per-source watermarks, allowed lateness and a retracting changelog.
//!
//! The semantics are Flink's, stated as rules R1–R18 in `shared/design/time-and-windows.md`, so
//! that Flink can serve as a reference in differential tests. Where we differ, the item that
//! differs says so:
//! - the changelog retracts what it replaces ([`Change`], §1.6 "Proposal for our log");
//! - idleness follows the rule as written, not Flink's two corners ([`Watermarks`]);
//! - the number of open windows and of watermark sources is bounded, and whatever the bound
//!   refuses is reported, never dropped silently ([`WindowOperator`], [`Watermarks`]);
//! - a device's own windows can close on the device's *completeness* instead of a heuristic
//!   watermark ([`completeness`], [`DeviceWindows`]): driftlog knows which sequence numbers a
//!   device has assigned and which have arrived, so an offline device's windows wait for its
//!   backlog rather than emitting without it.
//!
//! Everything here is a pure function of its inputs: no IO, no clock reads, no randomness, and
//! every map is a `BTreeMap`, so the collector, `log replay` and the simulator produce identical
//! outputs from identical inputs, and a checkpoint (serde) resumes exactly.
//!
//! # Layout
//! - [`spec`]: [`WindowSpec`] and its validation.
//! - [`assign`](mod@assign): which windows an event time belongs to (R4, hopping, session proto-windows).
//! - [`sketch`]: the mergeable quantile sketch inside every aggregate.
//! - [`aggregate`]: [`Aggregate`], the mergeable per-window accumulator.
//! - [`output`]: [`Output`], the changelog the operator writes.
//! - [`watermark`]: [`Watermarks`], the combined watermark over many sources (R2, R3, R10, R11).
//! - [`operator`]: [`WindowOperator`], which assigns, merges, fires and cleans up (R5–R9, R13–R18).
//! - [`completeness`]: [`DeviceCompleteness`], a device's progress from its sequence numbers and
//!   heartbeat claims (the rule is written there).
//! - [`device`]: [`DeviceWindows`], one device's windows on its own completeness watermark.
//!
//! # Driving it
//! Per input element: `op.handle_event(key, ts, value, wm.current(), out)`, then
//! `wm.handle_event(source, ts, now)`, then `op.advance_watermark(wm.current(), out)`. The element
//! is therefore judged against the watermark in force before it, as in the design's test vectors.

pub mod aggregate;
pub mod assign;
pub mod completeness;
pub mod device;
pub mod operator;
pub mod output;
pub mod sketch;
pub mod spec;
pub mod watermark;

mod state;

pub use aggregate::Aggregate;
pub use assign::{WindowBounds, assign, hopping_windows, session_window, tumbling_window};
pub use completeness::{Claim, CompletenessStats, DeviceCompleteness};
pub use device::{DeviceOutput, DeviceWindows};
pub use operator::{OperatorStats, StoredWindow, WindowOperator};
pub use output::{Change, Output, WindowResult};
pub use sketch::QuantileSketch;
pub use spec::{SpecError, WindowKind, WindowSpec};
pub use watermark::Watermarks;

/// A point in event time. Microseconds since the Unix epoch in production; abstract ticks in the
/// test vectors. Nothing here depends on the unit.
pub type Ticks = i64;

/// The watermark before any input: no element is late yet.
pub const NEG_INF: Ticks = i64::MIN;

/// The watermark at end of input: every window fires and is cleaned up.
pub const POS_INF: Ticks = i64::MAX;
