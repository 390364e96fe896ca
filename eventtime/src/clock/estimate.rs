//! What a model exposes for metrics (`time-and-windows.md` §3.3 item 4: emit per-device
//! offset, δ_min and ρ̂).

use serde::{Deserialize, Serialize};

use super::Method;

/// Counters of a model's inputs. Refused input is counted rather than logged per sample: a
/// broken device would otherwise flood the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStats {
    /// One-way samples (`t2`, `t3`) used.
    pub batches: u64,
    /// One-way samples ignored because `t2` or `t3 - t2` did not fit in i64, or because `t2`
    /// jumped implausibly far ahead (see [`SampleRejected::DeviceTimeJump`](super::SampleRejected)).
    pub batches_ignored: u64,
    /// Four-timestamp samples used.
    pub exchanges: u64,
    /// Four-timestamp samples refused (see [`SampleRejected`](super::SampleRejected)).
    pub exchanges_rejected: u64,
}

/// The model's current estimate, in floating point for metrics. Replays use
/// [`ClockFix`](super::ClockFix), which is integer-only.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Which estimator produced it.
    pub method: Method,
    /// Device monotonic µs at which `offset_us` holds (the newest sample).
    pub reference_device_us: u64,
    /// Unix µs minus device µs at the reference. Not rounded: vector C1's exchange gives -302.5.
    pub offset_us: f64,
    /// Error scale of `offset_us` (see [`ClockFix`](super::ClockFix)), rounded up.
    pub uncertainty_us: u64,
    /// Fitted rate error, positive when the device clock runs fast; 0 until fitted.
    pub drift_ppm: f64,
    /// Three standard errors of the drift, or `max_drift_ppm` until a drift is fitted.
    pub drift_uncertainty_ppm: f64,
    /// Least round-trip delay δ in the exchange register; 0 without exchanges, since one-way
    /// samples cannot tell delay from offset.
    pub min_delay_us: u64,
    /// Samples the estimate rests on: those behind the current minima and exchanges plus the
    /// regression points.
    pub samples_used: usize,
    /// Four-timestamp samples in the register.
    pub exchange_samples: usize,
    /// Device-time span of the drift fit, µs; 0 until fitted.
    pub regression_span_us: u64,
    /// Input counters.
    pub stats: ClockStats,
}

impl Estimate {
    /// The estimate of a model without samples.
    pub(crate) const NONE: Estimate = Estimate {
        method: Method::None,
        reference_device_us: 0,
        offset_us: 0.0,
        uncertainty_us: u64::MAX,
        drift_ppm: 0.0,
        drift_uncertainty_ppm: f64::INFINITY,
        min_delay_us: 0,
        samples_used: 0,
        exchange_samples: 0,
        regression_span_us: 0,
        stats: ClockStats { batches: 0, batches_ignored: 0, exchanges: 0, exchanges_rejected: 0 },
    };
}
