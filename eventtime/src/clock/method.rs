//! Which estimator produced a fix: exported as a metric label so operators can see which
//! devices are running on the weaker methods.

use serde::{Deserialize, Serialize};

/// The strongest ingredient behind a [`ClockFix`](super::ClockFix), weakest first.
///
/// Each step removes one error term of the three-timestamp method (`time-and-windows.md` §3.1:
/// error = +d - ρ·b): the minimum filter shrinks +d to +d_min, exchanges replace it by the path
/// asymmetry, and the drift fit removes -ρ·b.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// No sample yet: there is nothing to map device time with, so
    /// [`ClockFix::correct`](super::ClockFix::correct) falls back to receive time.
    None,
    /// A single one-way sample: `t3 - t2` of one batch, as in DDIA (late by that batch's +d).
    Naive,
    /// The minimum of `t3 - t2` over the filter window: late by the least one-way delay.
    MinFilter,
    /// Four-timestamp exchanges bound the offset from below as well: off by the path asymmetry.
    Exchange,
    /// A drift (rate) was fitted over at least `regression_min_span_us`, so buffered events
    /// are corrected for the drift accumulated while they waited.
    Drift,
}

impl Method {
    /// The snake_case name used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Naive => "naive",
            Method::MinFilter => "min_filter",
            Method::Exchange => "exchange",
            Method::Drift => "drift",
        }
    }
}
