//! What kind of windows to compute, and the checks that make every later computation safe.
//!
//! A [`WindowSpec`] comes from configuration, so it is untrusted: [`WindowSpec::validate`] rejects
//! every value that would make assignment divide by zero, overflow, or open an unbounded number of
//! windows per element, and its error names the offending field so that the collector can print it
//! as is.

use serde::{Deserialize, Serialize};

use super::Ticks;

/// The most windows one element may belong to (hopping `size / slide`, rounded up).
///
/// Each element is added to every window it belongs to, so this bounds the work per element;
/// 4096 covers e.g. a one-hour window sliding by one second with room to spare.
pub const MAX_WINDOWS_PER_ELEMENT: Ticks = 4096;

/// The shape of the windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WindowKind {
    /// Back-to-back windows `[start, start + size)` aligned to `offset` (R4).
    Tumbling {
        /// Window length, > 0.
        size: Ticks,
        /// Shift of the alignment from the epoch, `|offset| < size`.
        offset: Ticks,
    },
    /// Overlapping windows of length `size` starting every `slide` (Flink's sliding windows).
    Hopping {
        /// Window length, > 0.
        size: Ticks,
        /// Distance between window starts, `0 < slide <= size`.
        slide: Ticks,
        /// Shift of the alignment from the epoch, `|offset| < slide`.
        offset: Ticks,
    },
    /// Per-key sessions `[first_ts, last_ts + gap)`; events `gap` apart still merge (R7).
    Session {
        /// Inactivity gap, > 0.
        gap: Ticks,
    },
}

/// Everything the operator needs to know about its windows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// The shape of the windows.
    pub kind: WindowKind,
    /// How long after a window fires late elements still update it (R13–R15), >= 0.
    pub allowed_lateness: Ticks,
    /// Emit a [`Change::Final`](super::Change::Final) marker when a window's state is dropped, for
    /// append-only consumers that want one record per window.
    pub emit_final: bool,
    /// The most windows kept at once, over all keys, >= 1. Every map has a configured maximum, so
    /// a burst of keys or a device with a wild clock cannot exhaust the collector's memory.
    pub max_open_windows: usize,
}

/// Why a [`WindowSpec`] was rejected. Each message names the field to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A length (`size`, `slide` or `gap`) was zero or negative.
    #[error("{field} must be > 0 (got {value})")]
    NotPositive {
        /// The field name as written in the configuration.
        field: &'static str,
        /// The rejected value.
        value: Ticks,
    },
    /// The offset was not strictly inside the period it shifts.
    #[error("offset must satisfy |offset| < {bound_field} (got offset={offset}, {bound_field}={bound})")]
    OffsetOutOfRange {
        /// The rejected offset.
        offset: Ticks,
        /// `size` for tumbling windows, `slide` for hopping windows.
        bound_field: &'static str,
        /// The value of `bound_field`.
        bound: Ticks,
    },
    /// A hopping slide larger than the size leaves gaps that no window covers; elements there
    /// would vanish without being counted as late, so such specs are refused.
    #[error("slide must be <= size (got slide={slide}, size={size})")]
    SlideLargerThanSize {
        /// The rejected slide.
        slide: Ticks,
        /// The window size.
        size: Ticks,
    },
    /// Too many overlapping hopping windows per element.
    #[error(
        "slide too small: size / slide must be <= {MAX_WINDOWS_PER_ELEMENT} windows per element (got size={size}, slide={slide})"
    )]
    TooManyWindowsPerElement {
        /// The window size.
        size: Ticks,
        /// The rejected slide.
        slide: Ticks,
    },
    /// `allowed_lateness` was negative.
    #[error("allowed_lateness must be >= 0 (got {0})")]
    NegativeLateness(Ticks),
    /// `max_open_windows` was zero.
    #[error("max_open_windows must be >= 1 (got 0)")]
    NoOpenWindows,
    /// The window span plus the lateness does not fit in the tick type, so cleanup times would
    /// saturate and windows would live until end of input.
    #[error("allowed_lateness too large: {span_field} + allowed_lateness overflows i64 ticks ({span} + {lateness})")]
    LatenessOverflow {
        /// `size` or `gap`.
        span_field: &'static str,
        /// The value of `span_field`.
        span: Ticks,
        /// The rejected lateness.
        lateness: Ticks,
    },
}

impl WindowSpec {
    /// Checks every field; see [`SpecError`] for what is rejected and why.
    pub fn validate(&self) -> Result<(), SpecError> {
        let (span_field, span) = match self.kind {
            WindowKind::Tumbling { size, offset } => {
                positive("size", size)?;
                offset_within(offset, "size", size)?;
                ("size", size)
            }
            WindowKind::Hopping { size, slide, offset } => {
                positive("size", size)?;
                positive("slide", slide)?;
                if slide > size {
                    return Err(SpecError::SlideLargerThanSize { slide, size });
                }
                offset_within(offset, "slide", slide)?;
                // Both are positive here, so the division is exact integer maths without overflow.
                let windows_per_element = size / slide + Ticks::from(size % slide != 0);
                if windows_per_element > MAX_WINDOWS_PER_ELEMENT {
                    return Err(SpecError::TooManyWindowsPerElement { size, slide });
                }
                ("size", size)
            }
            WindowKind::Session { gap } => {
                positive("gap", gap)?;
                ("gap", gap)
            }
        };
        if self.allowed_lateness < 0 {
            return Err(SpecError::NegativeLateness(self.allowed_lateness));
        }
        if span.checked_add(self.allowed_lateness).is_none() {
            return Err(SpecError::LatenessOverflow { span_field, span, lateness: self.allowed_lateness });
        }
        if self.max_open_windows == 0 {
            return Err(SpecError::NoOpenWindows);
        }
        Ok(())
    }
}

fn positive(field: &'static str, value: Ticks) -> Result<(), SpecError> {
    if value > 0 { Ok(()) } else { Err(SpecError::NotPositive { field, value }) }
}

fn offset_within(offset: Ticks, bound_field: &'static str, bound: Ticks) -> Result<(), SpecError> {
    // `unsigned_abs` because `i64::MIN.abs()` would overflow; `bound` is already known positive.
    if offset.unsigned_abs() < bound.unsigned_abs() {
        Ok(())
    } else {
        Err(SpecError::OffsetOutOfRange { offset, bound_field, bound })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: WindowKind) -> WindowSpec {
        WindowSpec { kind, allowed_lateness: 0, emit_final: false, max_open_windows: 10 }
    }

    fn message(spec: &WindowSpec) -> String {
        match spec.validate() {
            Ok(()) => String::from("ok"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn valid_specs_pass() {
        assert_eq!(message(&spec(WindowKind::Tumbling { size: 10, offset: -9 })), "ok");
        assert_eq!(message(&spec(WindowKind::Hopping { size: 10, slide: 10, offset: 0 })), "ok");
        assert_eq!(message(&spec(WindowKind::Hopping { size: 10, slide: 3, offset: 2 })), "ok");
        assert_eq!(message(&spec(WindowKind::Session { gap: 1 })), "ok");
    }

    #[test]
    fn each_error_names_its_field() {
        let cases: Vec<(WindowSpec, &str)> = vec![
            (spec(WindowKind::Tumbling { size: 0, offset: 0 }), "size must be > 0 (got 0)"),
            (spec(WindowKind::Tumbling { size: 10, offset: 10 }), "|offset| < size"),
            (spec(WindowKind::Tumbling { size: 10, offset: i64::MIN }), "|offset| < size"),
            (spec(WindowKind::Hopping { size: 10, slide: -1, offset: 0 }), "slide must be > 0"),
            (spec(WindowKind::Hopping { size: 10, slide: 20, offset: 0 }), "slide must be <= size"),
            (spec(WindowKind::Hopping { size: 10, slide: 5, offset: -5 }), "|offset| < slide"),
            (spec(WindowKind::Hopping { size: 1_000_000, slide: 1, offset: 0 }), "slide too small"),
            (spec(WindowKind::Session { gap: -3 }), "gap must be > 0 (got -3)"),
            (
                WindowSpec { allowed_lateness: -1, ..spec(WindowKind::Session { gap: 3 }) },
                "allowed_lateness must be >= 0",
            ),
            (
                WindowSpec { allowed_lateness: i64::MAX, ..spec(WindowKind::Session { gap: 3 }) },
                "gap + allowed_lateness overflows",
            ),
            (
                WindowSpec { max_open_windows: 0, ..spec(WindowKind::Session { gap: 3 }) },
                "max_open_windows must be >= 1",
            ),
        ];
        for (spec, expected) in cases {
            let got = message(&spec);
            assert!(got.contains(expected), "{spec:?}: {got:?} should contain {expected:?}");
        }
    }
}
