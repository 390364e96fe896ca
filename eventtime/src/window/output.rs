//! What the window operator writes: a retracting changelog of window results, plus the elements
//! it could not place.
//!
//! Materialising the changelog (apply `Insert`, remove on `Retract`) always gives the current
//! result of every window, which Flink's DataStream output (one plain record per firing) does not:
//! its late firings are duplicates that consumers must deduplicate (§1.6, §4 item 3).

use serde::{Deserialize, Serialize};

use super::Ticks;
use super::aggregate::Aggregate;

/// The kind of a changelog record (design §1.6, "Proposal for our log").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A window result: the first firing, or the new value after a `Retract` of the same window
    /// (a late firing of unchanged bounds), or a session whose bounds changed through a merge.
    Insert,
    /// Withdraws a result emitted earlier, carrying exactly what was emitted. Always precedes the
    /// `Insert` that replaces it, within the same call.
    Retract,
    /// The window's state was dropped (`W >= end - 1 + allowed_lateness`, R13): its last `Insert`
    /// is final. Only with `WindowSpec::emit_final`.
    Final,
}

/// One window's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// The grouping key.
    pub key: String,
    /// Window start, inclusive.
    pub start: Ticks,
    /// Window end, exclusive; for sessions `last_ts + gap`.
    pub end: Ticks,
    /// The accumulated result.
    pub aggregate: Aggregate,
}

/// One record of the operator's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// A changelog record.
    Window {
        /// Insert, retract or final.
        change: Change,
        /// The window and its result.
        result: WindowResult,
    },
    /// An element that was not counted in all its windows: too late for every one of them
    /// (R14, R16), or refused because a window it needed would exceed
    /// `WindowSpec::max_open_windows`. This is the "late sink" side output: nothing disappears
    /// silently.
    Late {
        /// The element's key.
        key: String,
        /// The element's event time.
        ts: Ticks,
        /// The element's value.
        value: f64,
    },
}
