//! The result of correcting one event time, and why a time may be refused.

use serde::{Deserialize, Serialize};

/// One event's corrected time, as stored in the log record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Corrected {
    /// Collector Unix µs. Never later than the batch's receive time `t3`.
    pub unix_us: i64,
    /// Error scale of `unix_us` in µs (see [`ClockFix`](super::ClockFix)); `u64::MAX` when
    /// quarantined, since receive time says nothing about when the event happened.
    pub uncertainty_us: u64,
    /// Set when the mapped time was implausible and `unix_us` is the receive time instead.
    pub quarantine: Option<Quarantine>,
    /// Set when the mapped time was after `t3` but within the future tolerance and was pulled
    /// back to `t3`.
    pub clamped: bool,
}

/// Why an event's device time could not be trusted (`time-and-windows.md` §3.3 item 4).
/// The event keeps its receive time, so it is late, never lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Quarantine {
    /// `t1 > t2`: the event claims to have happened after the batch holding it was sealed.
    /// Within one boot the monotonic clock cannot do that, so the ticks wrapped or are corrupt.
    EventAfterSend,
    /// The mapped time is later than arrival by more than `future_tolerance_us`.
    FarFuture,
    /// The mapped time is earlier than arrival by more than `max_age_us`.
    TooOld,
    /// The model has no sample yet, so there is no mapping.
    NoModel,
}

impl Quarantine {
    /// The snake_case name used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Quarantine::EventAfterSend => "event_after_send",
            Quarantine::FarFuture => "far_future",
            Quarantine::TooOld => "too_old",
            Quarantine::NoModel => "no_model",
        }
    }
}
