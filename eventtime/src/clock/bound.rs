//! Offset bounds and their intersection: how the offset at "now" is read off the recent samples.
//!
//! Every sample bounds the offset (Unix µs minus device µs) at one device time:
//! - a batch's `t3 - t2 = offset(t2) + d` with `d >= 0` bounds it from above (§3.1);
//! - an exchange's up leg `T2 - T1` from above and its down leg `T3 - T4` from below (§3.2).
//!
//! Moved to a common device time along the fitted drift, the tightest upper bound is the
//! minimum filter of §3.3 item 1 and, with one exchange, the midpoint of the tightest pair is
//! NTP's θ with error ±δ/2. Taking the minimum of all upper bounds and the maximum of all lower
//! bounds generalises both: with a window of exchanges the error left is half the gap between
//! the least up and down delays, about (d_up,min - d_down,min)/2. (Which bounds the model feeds
//! in, and why not one-way and exchange bounds together, is in `model.rs`.)

use serde::{Deserialize, Serialize};

/// Which way a sample bounds the offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BoundSide {
    /// `offset(device_us) <= offset_us`.
    Upper,
    /// `offset(device_us) >= offset_us`.
    Lower,
}

/// One bound on the offset at one device time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bound {
    pub(crate) device_us: u64,
    pub(crate) offset_us: i64,
    pub(crate) side: BoundSide,
}

impl Bound {
    /// This bound's value moved to `reference_device_us` along `slope` (offset µs per device
    /// µs), relative to `base_us`. Relative values keep f64 exact to well below a µs even though
    /// raw offsets are ~1.7·10¹⁵ (Unix time minus time since boot).
    pub(crate) fn value_at(&self, reference_device_us: u64, slope: f64, base_us: i64) -> f64 {
        let relative = (i128::from(self.offset_us) - i128::from(base_us)) as f64;
        let lever = (i128::from(reference_device_us) - i128::from(self.device_us)) as f64;
        relative + slope * lever
    }

    /// [`value_at`](Self::value_at), loosened by `slope_error · |lever|`: a bound moved along
    /// an uncertain slope is only as tight as the slope lets it be. This is NTP's dispersion,
    /// which grows with a sample's age, but at the fitted rather than an assumed (15 ppm) rate.
    fn loosened_at(&self, reference_device_us: u64, slope: f64, slope_error: f64, base_us: i64) -> f64 {
        let lever = reference_device_us.abs_diff(self.device_us) as f64;
        let value = self.value_at(reference_device_us, slope, base_us);
        match self.side {
            BoundSide::Upper => value + slope_error * lever,
            BoundSide::Lower => value - slope_error * lever,
        }
    }

    /// Whether `self` is the tighter of two bounds on the same side once the drift is removed.
    pub(crate) fn tighter_than(&self, other: &Bound, slope: f64) -> bool {
        let here = self.value_at(self.device_us, slope, 0);
        let there = other.value_at(self.device_us, slope, 0);
        match self.side {
            BoundSide::Upper => here < there,
            BoundSide::Lower => here > there,
        }
    }
}

/// The offset at a reference device time implied by a set of bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Intersection {
    /// Integer base the other fields are relative to.
    pub(crate) base_us: i64,
    /// Offset estimate at the reference, relative to `base_us`.
    pub(crate) offset_us: f64,
    /// Error scale: half the gap between the tightest upper and lower bounds. With upper bounds
    /// only (no exchange), the spread of the upper bounds instead: not a bound, but the scale of
    /// the queueing delay the filtered minima still contain.
    pub(crate) half_width_us: f64,
}

/// Intersects `bounds` after moving each to `reference_device_us` along `slope`, loosened by
/// `slope_error` per µs moved; the result is relative to `base_us`.
///
/// Without the loosening, a slope fitted over little more than the window is wrong by enough
/// to make an old bound the tightest, and the estimate follows the slope error instead of the
/// freshest samples.
///
/// When the tightest lower bound exceeds the tightest upper one (a clock stepped, or the drift
/// is wrong), the midpoint is still the least-bad estimate and the half-gap still its error
/// scale, so no special case is needed.
pub(crate) fn intersect(
    bounds: impl IntoIterator<Item = Bound>,
    reference_device_us: u64,
    slope: f64,
    slope_error: f64,
    base_us: i64,
) -> Option<Intersection> {
    let mut upper: Option<(f64, f64)> = None; // (tightest, loosest)
    let mut lower: Option<(f64, f64)> = None;
    for bound in bounds {
        let value = bound.loosened_at(reference_device_us, slope, slope_error, base_us);
        match bound.side {
            BoundSide::Upper => {
                upper = Some(upper.map_or((value, value), |(tight, loose)| (tight.min(value), loose.max(value))));
            }
            BoundSide::Lower => {
                lower = Some(lower.map_or((value, value), |(tight, loose)| (tight.max(value), loose.min(value))));
            }
        }
    }
    let (offset_us, half_width_us) = match (upper, lower) {
        (Some((top, _)), Some((bottom, _))) => ((top + bottom) / 2.0, (top - bottom).abs() / 2.0),
        (Some((top, loosest)), None) => (top, loosest - top),
        (None, Some((bottom, loosest))) => (bottom, bottom - loosest),
        (None, None) => return None,
    };
    Some(Intersection { base_us, offset_us, half_width_us })
}

/// The slope closest to zero that every bound admits: the least drift the recent samples
/// force. Used before a drift is fitted, so the first minutes of a boot are not corrected as if
/// the clock were perfect when the window already shows it is not.
///
/// For a slope `s`, the lines through the reference that satisfy every bound form a band of
/// width `w(s) = min(upper moved along s) - max(lower moved along s)`, a concave function of
/// `s`. The true slope has `w >= 0` when the bounds are valid, so the feasible slopes are an
/// interval containing it, and its point closest to zero is never further from the truth than
/// zero itself. Without a feasible slope (a clock stepped, or bounds from one side only) this
/// returns the least infeasible slope, or zero.
pub(crate) fn least_feasible_slope(bounds: &[Bound], reference_device_us: u64, max_slope: f64) -> f64 {
    let Some(base_us) = bounds.first().map(|bound| bound.offset_us) else {
        return 0.0;
    };
    let width = |slope: f64| {
        let (mut top, mut bottom) = (f64::INFINITY, f64::NEG_INFINITY);
        for bound in bounds {
            let value = bound.value_at(reference_device_us, slope, base_us);
            match bound.side {
                BoundSide::Upper => top = top.min(value),
                BoundSide::Lower => bottom = bottom.max(value),
            }
        }
        top - bottom
    };
    if !width(0.0).is_finite() || width(0.0) >= 0.0 || max_slope.is_nan() || max_slope <= 0.0 {
        return 0.0;
    }
    // Ternary search for the widest band: a concave function only has a flat stretch at its top.
    let (mut low, mut high) = (-max_slope, max_slope);
    for _ in 0..SEARCH_STEPS {
        let (left, right) = (low + (high - low) / 3.0, high - (high - low) / 3.0);
        if width(left) < width(right) {
            low = left;
        } else {
            high = right;
        }
    }
    let widest = (low + high) / 2.0;
    if width(widest) < 0.0 {
        return widest;
    }
    // Bisect between zero (infeasible) and the widest slope (feasible) for the boundary.
    let (mut infeasible, mut feasible) = (0.0, widest);
    for _ in 0..SEARCH_STEPS {
        let middle = (infeasible + feasible) / 2.0;
        if width(middle) >= 0.0 {
            feasible = middle;
        } else {
            infeasible = middle;
        }
    }
    feasible
}

/// Halvings (or two-thirdings) of the slope interval: 2⁻⁶⁴ of ±500 ppm is far below 1 ppb.
const SEARCH_STEPS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(device_us: u64, offset_us: i64) -> Bound {
        Bound { device_us, offset_us, side: BoundSide::Upper }
    }

    fn lower(device_us: u64, offset_us: i64) -> Bound {
        Bound { device_us, offset_us, side: BoundSide::Lower }
    }

    #[test]
    fn vector_c1_min_filter_then_exchange() {
        let batches = [upper(1300, -220), upper(2300, -280), upper(3300, -255)];
        let min_filter = intersect(batches, 3300, 0.0, 0.0, 0).unwrap();
        assert_eq!(min_filter.base_us as f64 + min_filter.offset_us, -280.0);
        // The ack of m2: up leg -280 at T1 = 2300, down leg -325 at T4 = 2346.
        let with_ack =
            intersect(batches.into_iter().chain([upper(2300, -280), lower(2346, -325)]), 3300, 0.0, 0.0, -300).unwrap();
        assert_eq!(with_ack.base_us as f64 + with_ack.offset_us, -302.5);
        assert_eq!(with_ack.half_width_us, 22.5);
    }

    #[test]
    fn least_feasible_slope_is_zero_when_zero_fits_and_the_nearest_fitting_slope_otherwise() {
        // Exact bounds of a line falling 100 µs per 1000 device µs (a 100 000 ppm clock), 1 µs
        // of delay each way.
        let line = |device_us: u64| -(device_us as i64) / 10;
        let bounds: Vec<Bound> = (0..5u64)
            .flat_map(|step| {
                let device_us = step * 10_000;
                [upper(device_us, line(device_us) + 1), lower(device_us, line(device_us) - 1)]
            })
            .collect();
        let slope = least_feasible_slope(&bounds, 40_000, 0.5);
        // Feasible slopes are -0.1 ± 2/40 000; the one nearest zero is -0.09995.
        assert!((slope + 0.09995).abs() < 1e-9, "{slope}");
        // Bounds that a flat line satisfies give zero, and so does C1.
        assert_eq!(least_feasible_slope(&[upper(0, 10), lower(100, 0)], 100, 0.5), 0.0);
        assert_eq!(least_feasible_slope(&[upper(2300, -280), lower(2346, -325)], 3300, 0.5), 0.0);
        assert_eq!(least_feasible_slope(&[], 0, 0.5), 0.0);
    }

    #[test]
    fn bounds_move_along_the_slope() {
        // Offset falls 1 µs per 1000 device µs (a 1000 ppm fast clock).
        let slope = -1e-3;
        let moved = intersect([upper(0, 100), upper(10_000, 95)], 10_000, slope, 0.0, 100).unwrap();
        // The first bound moved to 10 000 is 90: tighter than the second.
        assert_eq!(moved.base_us as f64 + moved.offset_us, 90.0);
        assert!(upper(0, 100).tighter_than(&upper(10_000, 95), slope));
    }
}
