//! Weighted least squares for the drift (`time-and-windows.md` §3.3 item 3), free or pinned
//! to the current offset.
//!
//! The model fits twice:
//! - **Free**, over the history alone. This slope detrends the recent samples when the current
//!   offset is read off them. It must not depend on that offset: if it did, a slope error
//!   would shift the offset by (error × window) and the shifted offset would tilt the next
//!   slope further, which diverges while the history is not much longer than the window.
//! - **Pinned** through the current offset. This is the slope the fix applies. A free fit over
//!   two hours of pre-outage points and a handful of fresh ones lets the many old points
//!   outvote the fresh ones, so the line misses the current offset and every corrected event
//!   inherits the miss. Pinned, the line interpolates between "now" and the history, which is
//!   exactly the drift accumulated while the device was offline.
//!
//! Device times are taken relative to a reference and offsets relative to a base, so the f64
//! magnitudes stay small; the result is rounded into the integer [`ClockFix`](super::ClockFix)
//! that replays use.

/// A filtered sample for the fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Point {
    pub(crate) device_us: u64,
    /// Offset estimate, relative to the model's base.
    pub(crate) offset_us: f64,
    /// Inverse variance, up to a common factor.
    pub(crate) weight: f64,
}

/// A fitted line of offset against device time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Line {
    /// Offset at the reference device time, relative to the base.
    pub(crate) at_reference_us: f64,
    /// Offset µs per device µs: minus the drift.
    pub(crate) slope: f64,
    /// Standard error of `slope`, from the weighted residuals.
    pub(crate) standard_error: f64,
}

impl Line {
    fn residual(&self, reference_device_us: u64, point: &Point) -> f64 {
        point.offset_us - self.at_reference_us - self.slope * lever(reference_device_us, point)
    }
}

fn lever(reference_device_us: u64, point: &Point) -> f64 {
    (i128::from(point.device_us) - i128::from(reference_device_us)) as f64
}

fn usable(point: &&Point) -> bool {
    point.weight.is_finite() && point.weight > 0.0
}

/// Fits a line to `points`: through `pin_us` at `reference_device_us` when given, otherwise
/// through the weighted centroid.
///
/// `None` when the points do not determine a slope (all at one device time, or no weight that
/// is finite and positive).
pub(crate) fn fit(reference_device_us: u64, pin_us: Option<f64>, points: &[Point]) -> Option<Line> {
    let (mut sum_w, mut sum_wx, mut sum_wy, mut used) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for point in points.iter().filter(usable) {
        sum_w += point.weight;
        sum_wx += point.weight * lever(reference_device_us, point);
        sum_wy += point.weight * point.offset_us;
        used += 1;
    }
    // The line passes through (centre_x, centre_y); a pin fixes one parameter, the centroid none.
    let (centre_x, centre_y, parameters) = match pin_us {
        Some(pin_us) => (0.0, pin_us, 1),
        None if sum_w > 0.0 => (sum_wx / sum_w, sum_wy / sum_w, 2),
        None => return None,
    };
    let (mut sum_wxx, mut sum_wxy) = (0.0f64, 0.0f64);
    for point in points.iter().filter(usable) {
        let (dx, dy) = (lever(reference_device_us, point) - centre_x, point.offset_us - centre_y);
        sum_wxx += point.weight * dx * dx;
        sum_wxy += point.weight * dx * dy;
    }
    if !(sum_wxx.is_finite() && sum_wxx > 0.0 && sum_wxy.is_finite()) {
        return None;
    }
    let slope = sum_wxy / sum_wxx;
    let mut line = Line { at_reference_us: centre_y - slope * centre_x, slope, standard_error: 0.0 };
    let sum_wrr: f64 = points
        .iter()
        .filter(usable)
        .map(|point| point.weight * line.residual(reference_device_us, point).powi(2))
        .sum();
    let degrees_of_freedom = used.saturating_sub(parameters).max(1) as f64;
    let standard_error = (sum_wrr / degrees_of_freedom / sum_wxx).sqrt();
    line.standard_error = if standard_error.is_finite() { standard_error } else { f64::INFINITY };
    Some(line)
}

/// Weights one-way points by how far they sit above the lower envelope of `line`.
///
/// One-way points are the offset plus an unknown delay, so the informative ones are those
/// nearest the bottom: like chrony's weighting by distance, but with the delay estimated from
/// the residual because a one-way sample does not carry its own. `softness_us` keeps the
/// weight of the very lowest point finite.
pub(crate) fn reweight_by_envelope(reference_device_us: u64, line: &Line, points: &mut [Point], softness_us: f64) {
    let floor = points.iter().map(|point| line.residual(reference_device_us, point)).fold(f64::INFINITY, f64::min);
    for point in points.iter_mut() {
        let excess = line.residual(reference_device_us, point) - floor + softness_us;
        point.weight = 1.0 / (excess * excess);
    }
}

/// A robust first line for the envelope weights: through the lowest point of the older half
/// of `points` and the lowest of the newer half (or through the pin with that slope). A least
/// squares start would let one retransmitted batch, seconds late, tilt the line so far that the
/// envelope weights then lock onto the wrong points; minima ignore such samples by construction.
pub(crate) fn envelope_start(reference_device_us: u64, pin_us: Option<f64>, points: &[Point]) -> Option<Line> {
    let mut by_time: Vec<&Point> = points.iter().collect();
    by_time.sort_by_key(|point| point.device_us);
    let (older, newer) = by_time.split_at(by_time.len() / 2);
    let (first, second) = (lowest(older)?, lowest(newer)?);
    let run = (i128::from(second.device_us) - i128::from(first.device_us)) as f64;
    if run <= 0.0 {
        return None;
    }
    let slope = (second.offset_us - first.offset_us) / run;
    let at_reference_us = pin_us.unwrap_or_else(|| first.offset_us - slope * lever(reference_device_us, first));
    Some(Line { at_reference_us, slope, standard_error: f64::INFINITY })
}

fn lowest<'a>(points: &[&'a Point]) -> Option<&'a Point> {
    points.iter().copied().min_by(|a, b| a.offset_us.total_cmp(&b.offset_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_US: u64 = 3_600_000_000;

    fn drifting(hours: u64, slope: f64) -> Vec<Point> {
        (0..hours)
            .map(|hour| Point { device_us: hour * HOUR_US, offset_us: slope * (hour * HOUR_US) as f64, weight: 1.0 })
            .collect()
    }

    #[test]
    fn recovers_a_slope_exactly_from_clean_points() {
        let points = drifting(10, -50e-6);
        for pin in [None, Some(-50e-6 * (9 * HOUR_US) as f64)] {
            let line = fit(9 * HOUR_US, pin, &points).unwrap();
            assert!((line.slope + 50e-6).abs() < 1e-12, "{line:?}");
            assert!((line.at_reference_us + 50e-6 * (9 * HOUR_US) as f64).abs() < 1e-3, "{line:?}");
            assert!(line.standard_error < 1e-12);
        }
    }

    #[test]
    fn a_pin_tilts_the_line_through_it() {
        // Flat history, but "now" is 100 µs higher: the pinned line rises to meet it.
        let points = drifting(10, 0.0);
        let pinned = fit(10 * HOUR_US, Some(100.0), &points).unwrap();
        assert!(pinned.slope > 0.0 && pinned.at_reference_us == 100.0, "{pinned:?}");
        assert_eq!(fit(10 * HOUR_US, None, &points).unwrap().slope, 0.0);
    }

    #[test]
    fn degenerate_inputs_give_no_fit() {
        assert_eq!(fit(5, None, &[]), None);
        assert_eq!(fit(5, Some(0.0), &[Point { device_us: 5, offset_us: 1.0, weight: 1.0 }]), None);
        assert_eq!(fit(5, Some(0.0), &[Point { device_us: 6, offset_us: 1.0, weight: f64::NAN }]), None);
    }

    #[test]
    fn envelope_start_ignores_a_late_outlier() {
        // Offset falls 100 µs per second; delays 20 ms, one batch 10 s late.
        let points: Vec<Point> = (0..60u64)
            .map(|index| {
                let device_us = index * 10_000_000;
                let late_us = if index == 59 { 10_000_000.0 } else { 20_000.0 + (index % 7) as f64 * 5_000.0 };
                Point { device_us, offset_us: -1e-4 * device_us as f64 + late_us, weight: 1.0 }
            })
            .collect();
        let start = envelope_start(600_000_000, None, &points).unwrap();
        assert!((start.slope + 1e-4).abs() < 1e-6, "{start:?}");
        let pinned = envelope_start(600_000_000, Some(5.0), &points).unwrap();
        assert_eq!(pinned.at_reference_us, 5.0);
        assert_eq!(envelope_start(0, None, &points[..1]), None);
    }

    #[test]
    fn envelope_weights_favour_the_lowest_points() {
        let mut points =
            [Point { device_us: 0, offset_us: 10.0, weight: 1.0 }, Point { device_us: 1, offset_us: 0.0, weight: 1.0 }];
        let flat = Line { at_reference_us: 0.0, slope: 0.0, standard_error: 0.0 };
        reweight_by_envelope(2, &flat, &mut points, 1.0);
        assert!(points[1].weight > 100.0 * points[0].weight);
    }
}
