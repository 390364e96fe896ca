//! The per-window accumulator: exact count, sum, min, max and last value, plus a quantile sketch.
//!
//! Session windows merge their accumulators (R8), so every part of an [`Aggregate`] is mergeable.

use serde::{Deserialize, Serialize};

use super::Ticks;
use super::sketch::QuantileSketch;

/// What a window reports. Never empty: it is created from its first element.
///
/// Values follow IEEE semantics: a NaN value is counted, makes `sum` and `mean` NaN, and is
/// ignored by `min`, `max` (as `f64::min`/`f64::max` do) and the quantile sketch. Infinite values
/// are kept as they are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Number of elements.
    pub count: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// The value with the greatest event time. Among equal event times, the one added later
    /// wins, and in [`merge`](Aggregate::merge) `other` counts as added after `self`: this is what
    /// a device reporting a gauge twice in one tick means, and it keeps merge associative.
    pub last: f64,
    /// The event time of `last`.
    pub last_ts: Ticks,
    /// Quantile sketch of the values (relative accuracy 1 %, see [`QuantileSketch`]).
    pub sketch: QuantileSketch,
}

impl Aggregate {
    /// The aggregate of one element.
    pub fn new(ts: Ticks, value: f64) -> Self {
        let mut sketch = QuantileSketch::new();
        sketch.add(value);
        Aggregate { count: 1, sum: value, min: value, max: value, last: value, last_ts: ts, sketch }
    }

    /// Adds one element.
    pub fn add(&mut self, ts: Ticks, value: f64) {
        self.count = self.count.saturating_add(1);
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if ts >= self.last_ts {
            self.last = value;
            self.last_ts = ts;
        }
        self.sketch.add(value);
    }

    /// Adds every element of `other`, as if they were added after those of `self`.
    ///
    /// Associative for every field (for `sum` up to floating-point rounding), and commutative for
    /// every field except `last` when both have the same `last_ts`.
    pub fn merge(&mut self, other: &Aggregate) {
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.last_ts >= self.last_ts {
            self.last = other.last;
            self.last_ts = other.last_ts;
        }
        self.sketch.merge(&other.sketch);
    }

    /// `sum / count`; NaN for a (deserialised) aggregate with no elements.
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }

    /// The `q`-quantile, `q` in `[0, 1]`: exact for 0 (`min`) and 1 (`max`), otherwise the
    /// sketch's estimate, within 1 % relative error and clamped into `[min, max]` (clamping only
    /// moves it closer to the true value). `None` for `q` outside `[0, 1]` or when every value was
    /// NaN.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let estimate = self.sketch.quantile(q)?;
        if q == 0.0 {
            return Some(self.min);
        }
        if q == 1.0 {
            return Some(self.max);
        }
        // Not `f64::clamp`: it panics on NaN bounds, which a hand-built aggregate could have.
        Some(estimate.max(self.min).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_tracks_every_field() {
        let mut aggregate = Aggregate::new(5, 2.0);
        aggregate.add(3, 10.0);
        aggregate.add(5, -1.0);
        assert_eq!((aggregate.count, aggregate.sum, aggregate.min, aggregate.max), (3, 11.0, -1.0, 10.0));
        // ts 5 twice: the later-added value wins.
        assert_eq!((aggregate.last, aggregate.last_ts), (-1.0, 5));
        assert!((aggregate.mean() - 11.0 / 3.0).abs() < 1e-12);
        assert_eq!(aggregate.quantile(0.0), Some(-1.0));
        assert_eq!(aggregate.quantile(1.0), Some(10.0));
        assert!((aggregate.quantile(0.5).unwrap_or(0.0) - 2.0).abs() <= 0.02);
        assert_eq!(aggregate.quantile(-0.1), None);
    }

    #[test]
    fn merge_equals_adding_in_order() {
        let mut added = Aggregate::new(1, 1.0);
        added.add(7, 4.0);
        added.add(7, 8.0);
        added.add(2, 16.0);
        let mut merged = Aggregate::new(1, 1.0);
        let mut other = Aggregate::new(7, 4.0);
        merged.add(7, 8.0);
        other.add(2, 16.0);
        // Merging in the other order changes only which of the two ts-7 values is `last`.
        merged.merge(&other);
        assert_eq!(merged.last, 4.0);
        assert_eq!(Aggregate { last: added.last, ..merged }, added);
    }

    #[test]
    fn nan_and_infinity_do_not_panic() {
        let mut aggregate = Aggregate::new(0, f64::NAN);
        aggregate.add(1, f64::INFINITY);
        aggregate.add(2, 1.0);
        assert_eq!(aggregate.count, 3);
        assert!(aggregate.sum.is_nan());
        assert_eq!(aggregate.min, 1.0);
        assert_eq!(aggregate.quantile(1.0), Some(f64::INFINITY));
        assert!(Aggregate::new(0, f64::NAN).quantile(0.5).is_none());
    }
}
