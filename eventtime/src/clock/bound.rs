//! Offset bounds and their intersection: how the offset at "now" is read off the recent samples.
//!
//! Every sample bounds the offset (Unix µs minus device µs) at one device time:
//! - a batch's `t3 - t2 = offset(t2) + d` with `d >= 0` bounds it from above (§3.1);
//! - an exchange's up leg `T2 - T1` from above and its down leg `T3 - T4` from below (§3.2).
//!
//! Moved to a common device time along the fitted drift, the tightest upper bound is the
//! minimum filter of §3.3 item 1 and, with one exchange, the midpoint of the tightest pair is
//! NTP's θ with error ±δ/2. Taking the minimum of all upper bounds and the maximum of all lower
//! bounds generalises both: the one-way samples (plentiful) pin the top, the acks pin the
//! bottom, and the error left is half the gap, about (d_up,min - d_down,min)/2.

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
    pub(crate) upper_bounds: usize,
    pub(crate) lower_bounds: usize,
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
    let (mut upper_bounds, mut lower_bounds) = (0, 0);
    for bound in bounds {
        let value = bound.loosened_at(reference_device_us, slope, slope_error, base_us);
        match bound.side {
            BoundSide::Upper => {
                upper_bounds += 1;
                upper = Some(upper.map_or((value, value), |(tight, loose)| (tight.min(value), loose.max(value))));
            }
            BoundSide::Lower => {
                lower_bounds += 1;
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
    Some(Intersection { base_us, offset_us, half_width_us, upper_bounds, lower_bounds })
}

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
        let with_ack = intersect(batches.into_iter().chain([upper(2300, -280), lower(2346, -325)]), 3300, 0.0, 0.0, -300).unwrap();
        assert_eq!(with_ack.base_us as f64 + with_ack.offset_us, -302.5);
        assert_eq!(with_ack.half_width_us, 22.5);
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
