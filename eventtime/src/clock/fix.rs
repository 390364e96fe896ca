//! The mapping from device monotonic time to collector Unix time that every event is run
//! through, and the guards around it (`time-and-windows.md` §3.3 item 4).

use serde::{Deserialize, Serialize};

use super::{ClockConfig, Corrected, Method, Quarantine};

/// Parts per billion in one.
const PPB: i128 = 1_000_000_000;

/// A linear map from device monotonic µs to collector Unix µs, plus its error bound.
/// Integer-only so every replay computes byte-identical corrected times.
///
/// `unix(m) = m + offset_us - drift_ppb·(m - reference_device_us)/10⁹`.
///
/// The sign of `drift_ppb` follows the design note's ρ: positive when the device clock runs
/// fast. A fast clock gains device µs, so the offset that maps it back shrinks as device time
/// grows. Strictly the slope is ρ/(1+ρ) per device µs; the fit measures that slope directly, so
/// no approximation enters (at 100 ppm the two differ by 0.01 ppm).
///
/// `uncertainty_us` is an error scale, not a guarantee: with exchanges it is the half-width of
/// the interval the four-timestamp bounds leave (the true offset lies inside it unless the
/// clocks misbehave); with one-way samples only it is the spread of the filtered minima, since
/// one-way samples bound the offset from above only. It grows by `drift_uncertainty_ppb` per
/// device µs away from the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockFix {
    /// Device monotonic µs at which `offset_us` holds: the newest sample's device time.
    pub reference_device_us: u64,
    /// Unix µs minus device µs at the reference, rounded to nearest with ties towards +∞.
    pub offset_us: i64,
    /// Device clock rate error in parts per billion, positive when the device runs fast.
    pub drift_ppb: i64,
    /// Error scale of `offset_us`, µs.
    pub uncertainty_us: u64,
    /// Error scale of `drift_ppb` (three standard errors of the fit, or `max_drift_ppm` when
    /// no drift has been fitted yet).
    pub drift_uncertainty_ppb: u64,
    /// Which estimator produced this fix.
    pub method: Method,
}

impl ClockFix {
    /// The fix of a model that has seen no sample: every event is quarantined with
    /// [`Quarantine::NoModel`] and keeps its receive time.
    pub const NONE: ClockFix = ClockFix {
        reference_device_us: 0,
        offset_us: 0,
        drift_ppb: 0,
        uncertainty_us: u64::MAX,
        drift_uncertainty_ppb: u64::MAX,
        method: Method::None,
    };

    /// DDIA baseline for comparison: t1 + (t3 - t2). Saturates instead of overflowing.
    ///
    /// Its error is +d (this batch's one-way delay, retransmission waits included) - ρ·b
    /// (drift while buffered), §3.1.
    pub fn naive(t1_device_us: u64, t2_device_us: u64, t3_unix_us: i64) -> i64 {
        let naive = i128::from(t1_device_us) + i128::from(t3_unix_us) - i128::from(t2_device_us);
        saturate_i64(naive)
    }

    /// Corrected event time with guards: t1 > t2 (event after its own send, e.g. wrapped
    /// ticks) -> quarantine; corrected > t3 + future_tolerance -> quarantine; corrected in
    /// (t3, t3+tol] -> clamped to t3 (an event cannot postdate its own arrival: this is what
    /// stops one fast device from making the whole fleet late); corrected < t3 - max_age ->
    /// quarantine. A quarantined event falls back to receive time t3 with the reason.
    /// Uncertainty grows with |t1 - reference| * drift_uncertainty.
    ///
    /// Total: no input makes it panic, and the result is never later than `t3_unix_us`.
    pub fn correct(&self, config: &ClockConfig, t1_device_us: u64, t2_device_us: u64, t3_unix_us: i64) -> Corrected {
        let quarantined = |reason| Corrected {
            unix_us: t3_unix_us,
            uncertainty_us: u64::MAX,
            quarantine: Some(reason),
            clamped: false,
        };
        if t1_device_us > t2_device_us {
            return quarantined(Quarantine::EventAfterSend);
        }
        if self.method == Method::None {
            return quarantined(Quarantine::NoModel);
        }
        let mapped = self.map(t1_device_us);
        let arrival = i128::from(t3_unix_us);
        if mapped > arrival + i128::from(config.future_tolerance_us) {
            return quarantined(Quarantine::FarFuture);
        }
        // `i64::MIN` also bounds the age, so a huge `max_age_us` cannot yield an unrepresentable time.
        if mapped < arrival - i128::from(config.max_age_us) || mapped < i128::from(i64::MIN) {
            return quarantined(Quarantine::TooOld);
        }
        let clamped = mapped > arrival;
        let unix_us = if clamped { t3_unix_us } else { saturate_i64(mapped) };
        Corrected { unix_us, uncertainty_us: self.uncertainty_at(t1_device_us), quarantine: None, clamped }
    }

    /// `t1` mapped through the line, unguarded, in i128 so that no input overflows:
    /// |drift_ppb · Δ| < 2⁶³ · 2⁶⁴ < 2¹²⁷.
    fn map(&self, device_us: u64) -> i128 {
        let since_reference = i128::from(device_us) - i128::from(self.reference_device_us);
        let drift_us = div_round_half_up(-i128::from(self.drift_ppb) * since_reference, PPB);
        i128::from(device_us) + i128::from(self.offset_us) + drift_us
    }

    /// The offset's error scale at the reference plus the drift's error scale times the
    /// distance from it, rounded up and saturated.
    fn uncertainty_at(&self, device_us: u64) -> u64 {
        let distance = u128::from(device_us.abs_diff(self.reference_device_us));
        // u64 · u64 < 2¹²⁸: cannot overflow.
        let drift_us = (u128::from(self.drift_uncertainty_ppb) * distance).div_ceil(PPB as u128);
        let total = u128::from(self.uncertainty_us).saturating_add(drift_us);
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

/// `numerator / denominator` rounded to nearest, ties towards +∞, for `denominator > 0`.
/// Ties go one way regardless of sign, so a replay never depends on which side of zero an
/// offset happened to be.
fn div_round_half_up(numerator: i128, denominator: i128) -> i128 {
    numerator.saturating_add(denominator / 2).div_euclid(denominator)
}

fn saturate_i64(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(offset_us: i64, drift_ppb: i64) -> ClockFix {
        ClockFix {
            reference_device_us: 1_000_000,
            offset_us,
            drift_ppb,
            uncertainty_us: 10,
            drift_uncertainty_ppb: 1_000,
            method: Method::Drift,
        }
    }

    #[test]
    fn rounding_ties_go_up_on_both_sides_of_zero() {
        assert_eq!(div_round_half_up(5, 10), 1);
        assert_eq!(div_round_half_up(-5, 10), 0);
        assert_eq!(div_round_half_up(-6, 10), -1);
        assert_eq!(div_round_half_up(14, 10), 1);
    }

    #[test]
    fn drift_moves_the_offset_back_in_time() {
        // 1000 ppm fast; an event 1 s of device time before the reference gets 1 ms more offset.
        let corrected = fix(500, 1_000_000).correct(&ClockConfig::default(), 0, 1_000_000, 2_000);
        assert_eq!(corrected.unix_us, 500 + 1_000);
        // 10 µs at the reference plus 1 ppm over 1 s.
        assert_eq!(corrected.uncertainty_us, 10 + 1);
    }

    #[test]
    fn extreme_inputs_saturate() {
        let config = ClockConfig { max_age_us: u64::MAX, future_tolerance_us: u64::MAX, ..ClockConfig::default() };
        let extreme = ClockFix { drift_ppb: i64::MIN, drift_uncertainty_ppb: u64::MAX, ..fix(i64::MIN, 0) };
        let corrected = extreme.correct(&config, 0, u64::MAX, i64::MIN);
        assert_eq!(corrected.unix_us, i64::MIN);
        assert_eq!(ClockFix::naive(0, u64::MAX, i64::MIN), i64::MIN);
        assert_eq!(ClockFix::naive(u64::MAX, 0, i64::MAX), i64::MAX);
    }
}
