//! Tuning of the clock model, with the defaults argued in `time-and-windows.md` §3.3.

use serde::{Deserialize, Serialize};

/// The most four-timestamp samples the register may hold. NTP uses 8; more than a few dozen
/// only widens the window the least-delay choice is made over, so a hard cap costs nothing.
pub(crate) const MAX_EXCHANGE_SAMPLES: usize = 64;

/// The most regression points a model may keep. Each point is a few dozen bytes and is
/// refitted on every sample, so this caps both the persisted size and the per-batch CPU.
pub(crate) const MAX_REGRESSION_SAMPLES: usize = 4096;

/// The fewest regression points that still leave a residual to judge the fit by.
pub(crate) const MIN_REGRESSION_SAMPLES: usize = 4;

/// A rate error beyond which a "clock" is not a clock: 10 % (the ESP32 RC oscillator in deep
/// sleep is about 2 %, §3.4).
pub(crate) const MAX_PLAUSIBLE_DRIFT_PPM: f64 = 100_000.0;

/// Configuration of a [`ClockModel`](super::ClockModel) and of [`ClockFix::correct`](super::ClockFix::correct).
///
/// All durations are microseconds. The same value must be passed to every call on a model:
/// the collector owns one per fleet and persists it next to the models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// Horizon of the minimum filters the current offset is read from (device time).
    /// Short relative to drift, because the offset moves by ρ·window inside it (§3.3 item 1:
    /// 50 ppm over 10 min is 30 ms); once drift is fitted, samples are detrended first.
    pub min_filter_window_us: u64,
    /// Size of the four-timestamp register (NTP's clock filter). Its least delay is reported as
    /// δ_min, and its exchanges keep the offset anchored when acks are rarer than the window.
    /// Within the window, every exchange interval is intersected (least delay wins and more).
    pub exchange_samples: usize,
    /// Filtered points kept for the drift fit. Points are bucketed by device time and buckets
    /// are merged when full, so days of history fit in a fixed number of points.
    pub regression_samples: usize,
    /// No drift is fitted over a shorter span: over minutes the delay jitter swamps the slope.
    pub regression_min_span_us: u64,
    /// Fitted drifts beyond this are clamped: a larger slope is a bad fit, not a clock.
    pub max_drift_ppm: f64,
    /// A corrected time later than arrival by more than this is quarantined; up to this it is
    /// clamped to arrival (Memfault's 5 min future window).
    pub future_tolerance_us: u64,
    /// Data frames refit the model at most this often (device time); exchanges always do. A
    /// refit costs tens of µs and a busy device sends thousands of frames a second, while
    /// its offset moves by nanoseconds in between. Samples are never skipped, only the refit
    /// is deferred to the next frame after the interval. 0 refits on every frame.
    pub batch_refit_interval_us: u64,
    /// A corrected time earlier than arrival by more than this is quarantined (Memfault's
    /// 365 days past window).
    pub max_age_us: u64,
}

impl Default for ClockConfig {
    fn default() -> Self {
        const MINUTE_US: u64 = 60 * 1_000_000;
        ClockConfig {
            min_filter_window_us: 10 * MINUTE_US,
            exchange_samples: 8,
            regression_samples: 256,
            regression_min_span_us: 10 * MINUTE_US,
            max_drift_ppm: 500.0,
            future_tolerance_us: 5 * MINUTE_US,
            batch_refit_interval_us: 250_000,
            max_age_us: 365 * 24 * 60 * MINUTE_US,
        }
    }
}

/// A [`ClockConfig`] field outside its range. The message names the field as written in the
/// config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("clock config field `{field}` {requirement}")]
pub struct ClockConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What the field must satisfy, as a phrase ("must be at least 1").
    pub requirement: &'static str,
}

impl ClockConfig {
    /// Checks every field against its range. The model never panics on an unvalidated config
    /// (it clamps internally), but its results would be meaningless, so load paths call this.
    pub fn validate(&self) -> Result<(), ClockConfigError> {
        let fail = |field, requirement| Err(ClockConfigError { field, requirement });
        if self.min_filter_window_us == 0 {
            return fail("min_filter_window_us", "must be at least 1");
        }
        if !(1..=MAX_EXCHANGE_SAMPLES).contains(&self.exchange_samples) {
            return fail("exchange_samples", "must be between 1 and 64");
        }
        if !(MIN_REGRESSION_SAMPLES..=MAX_REGRESSION_SAMPLES).contains(&self.regression_samples) {
            return fail("regression_samples", "must be between 4 and 4096");
        }
        if self.regression_min_span_us == 0 {
            return fail("regression_min_span_us", "must be at least 1");
        }
        // `!(x > 0)` also rejects NaN.
        if !(self.max_drift_ppm > 0.0 && self.max_drift_ppm <= MAX_PLAUSIBLE_DRIFT_PPM) {
            return fail("max_drift_ppm", "must be greater than 0 and at most 100000");
        }
        if self.future_tolerance_us > i64::MAX as u64 {
            return fail("future_tolerance_us", "must fit in i64");
        }
        if self.max_age_us > i64::MAX as u64 {
            return fail("max_age_us", "must fit in i64");
        }
        Ok(())
    }

    /// The register size the model actually uses, whatever the config says.
    pub(crate) fn exchange_capacity(&self) -> usize {
        self.exchange_samples.clamp(1, MAX_EXCHANGE_SAMPLES)
    }

    /// The regression capacity the model actually uses, whatever the config says.
    pub(crate) fn regression_capacity(&self) -> usize {
        self.regression_samples.clamp(MIN_REGRESSION_SAMPLES, MAX_REGRESSION_SAMPLES)
    }

    /// The drift clamp the model actually uses, in offset µs per device µs.
    pub(crate) fn max_slope(&self) -> f64 {
        if self.max_drift_ppm.is_finite() && self.max_drift_ppm > 0.0 {
            self.max_drift_ppm.min(MAX_PLAUSIBLE_DRIFT_PPM) * 1e-6
        } else {
            MAX_PLAUSIBLE_DRIFT_PPM * 1e-6
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(ClockConfig::default().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Breaker = fn(&mut ClockConfig);
        let cases: [(&str, Breaker); 8] = [
            ("min_filter_window_us", |c| c.min_filter_window_us = 0),
            ("exchange_samples", |c| c.exchange_samples = 0),
            ("regression_samples", |c| c.regression_samples = 1_000_000),
            ("regression_min_span_us", |c| c.regression_min_span_us = 0),
            ("max_drift_ppm", |c| c.max_drift_ppm = f64::NAN),
            ("max_drift_ppm", |c| c.max_drift_ppm = -1.0),
            ("future_tolerance_us", |c| c.future_tolerance_us = u64::MAX),
            ("max_age_us", |c| c.max_age_us = u64::MAX),
        ];
        for (field, break_it) in cases {
            let mut config = ClockConfig::default();
            break_it(&mut config);
            let error = config.validate().unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.to_string().contains(field), "{error}");
        }
    }
}
