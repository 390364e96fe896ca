//! A small DDSketch: a mergeable quantile sketch with a relative-error guarantee.
//!
//! Why our own rather than the `sketches-ddsketch` crate: its `DDSketch` implements neither
//! `Debug` nor `PartialEq` (our [`Aggregate`](super::Aggregate) derives both), its dense store
//! overflows `i32` index arithmetic on infinite values, and its collapsing depends on the order of
//! inserts and merges, so merging is only approximately associative. This one keeps sparse buckets
//! in a `BTreeMap`, which makes merge exactly associative and commutative and its serialised form
//! deterministic.
//!
//! # Accuracy
//! A value `x > 0` goes to bucket `i = ceil(log_γ x)` with `γ = (1 + α) / (1 - α)`, and bucket `i`
//! reports `2γ^i / (γ + 1)`, which is within a relative error `α` of every value in
//! `(γ^(i-1), γ^i]` (Masson et al., "DDSketch", VLDB 2019). Negative values use a mirror store.
//! With [`RELATIVE_ACCURACY`] `α = 0.01`, the value returned for quantile `q` is within 1 % (up to
//! floating-point rounding) of the value of rank `floor(q · (n - 1))` among the non-NaN values
//! added, except that:
//! - magnitudes below `f64::MIN_POSITIVE` (subnormals and zeros) are counted as exactly 0;
//! - infinities are counted in the bucket of `±f64::MAX`; NaN is not counted at all;
//! - when one sign needs more than [`MAX_BUCKETS`] buckets (a dynamic range beyond
//!   `γ^2048 ≈ 6·10^17`), its lowest-magnitude buckets are folded into the lowest one kept, so
//!   only quantiles among the smallest magnitudes lose accuracy (they are over-estimated).
//!
//! The bucket index uses `f64::ln`, so the sketch is deterministic for a given platform's libm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The relative accuracy `α` of quantile estimates.
pub const RELATIVE_ACCURACY: f64 = 0.01;

/// The most buckets kept per sign; bounds the memory of every window's sketch.
pub const MAX_BUCKETS: usize = 2048;

/// A mergeable quantile sketch; see the [module docs](self) for its accuracy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantileSketch {
    /// Bucket index to count, for values > 0.
    positive: BTreeMap<i32, u64>,
    /// Bucket index of `|x|` to count, for values < 0.
    negative: BTreeMap<i32, u64>,
    /// Values whose magnitude is too small to index.
    zero_count: u64,
}

impl QuantileSketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one value. NaN is ignored (see the module docs).
    pub fn add(&mut self, value: f64) {
        if value.is_nan() {
            return;
        }
        let magnitude = value.abs();
        if magnitude < f64::MIN_POSITIVE {
            self.zero_count = self.zero_count.saturating_add(1);
            return;
        }
        let store = if value > 0.0 { &mut self.positive } else { &mut self.negative };
        let count = store.entry(bucket_index(magnitude)).or_insert(0);
        *count = count.saturating_add(1);
        collapse_lowest(store);
    }

    /// Adds every count of `other` into `self`. Exactly associative and commutative: the result
    /// depends only on the multiset of values added to both.
    pub fn merge(&mut self, other: &QuantileSketch) {
        for (store, other_store) in [(&mut self.positive, &other.positive), (&mut self.negative, &other.negative)] {
            for (&index, &count) in other_store {
                let mine = store.entry(index).or_insert(0);
                *mine = mine.saturating_add(count);
            }
            collapse_lowest(store);
        }
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
    }

    /// How many values are counted (NaN excluded).
    pub fn count(&self) -> u64 {
        let positive: u64 = self.positive.values().fold(0, |sum, &count| sum.saturating_add(count));
        let negative: u64 = self.negative.values().fold(0, |sum, &count| sum.saturating_add(count));
        positive.saturating_add(negative).saturating_add(self.zero_count)
    }

    /// How many buckets are in use, over both signs.
    pub fn bucket_count(&self) -> usize {
        self.positive.len() + self.negative.len()
    }

    /// The estimated value of rank `floor(q · (n - 1))`, or `None` if the sketch is empty or `q`
    /// is not in `[0, 1]`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        let total = self.count();
        if total == 0 {
            return None;
        }
        // `q * (total - 1)` is in [0, total - 1]; the cast truncates towards zero (= floor here)
        // and saturates, so it cannot leave that range.
        let rank = (q * (total - 1) as f64) as u64;
        let mut seen: u64 = 0;
        // Most negative first: the negative store's largest magnitudes.
        for (&index, &count) in self.negative.iter().rev() {
            seen = seen.saturating_add(count);
            if seen > rank {
                return Some(-bucket_value(index));
            }
        }
        seen = seen.saturating_add(self.zero_count);
        if seen > rank {
            return Some(0.0);
        }
        for (&index, &count) in &self.positive {
            seen = seen.saturating_add(count);
            if seen > rank {
                return Some(bucket_value(index));
            }
        }
        // Only reachable if counts saturated; the largest value is the honest answer then.
        self.positive.keys().next_back().map(|&index| bucket_value(index))
    }
}

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// `ceil(log_γ magnitude)` for a magnitude in `[f64::MIN_POSITIVE, +inf]`; infinity is clamped to
/// `f64::MAX`. The result lies in about ±35 500, far inside `i32`.
fn bucket_index(magnitude: f64) -> i32 {
    let finite = magnitude.min(f64::MAX);
    // The float-to-int cast saturates, so even a surprising libm result cannot wrap.
    (finite.ln() / gamma().ln()).ceil() as i32
}

/// The representative value `2γ^i / (γ + 1)` of bucket `index`.
fn bucket_value(index: i32) -> f64 {
    let gamma = gamma();
    (f64::from(index) * gamma.ln()).exp() * 2.0 / (gamma + 1.0)
}

/// Keeps the `MAX_BUCKETS` highest buckets and folds the counts of lower ones into the lowest
/// kept. Keeping "the top N indices of the union" is what makes merge associative: folding early
/// or late moves the same counts to the same bucket.
fn collapse_lowest(store: &mut BTreeMap<i32, u64>) {
    while store.len() > MAX_BUCKETS {
        let Some((_, folded)) = store.pop_first() else { return };
        if let Some(mut lowest_kept) = store.first_entry() {
            let count = lowest_kept.get_mut();
            *count = count.saturating_add(folded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative_error(estimate: f64, truth: f64) -> f64 {
        ((estimate - truth) / truth).abs()
    }

    #[test]
    fn quantiles_are_within_relative_accuracy() {
        let mut sketch = QuantileSketch::new();
        let values: Vec<f64> = (1..=1000).map(|i| f64::from(i) * 0.37).collect();
        for &value in &values {
            sketch.add(value);
        }
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
            let truth = values[(q * 999.0) as usize];
            let estimate = sketch.quantile(q).unwrap_or(f64::NAN);
            assert!(relative_error(estimate, truth) <= RELATIVE_ACCURACY * 1.000_001, "q={q}: {estimate} vs {truth}");
        }
    }

    #[test]
    fn signs_zero_and_special_values() {
        let mut sketch = QuantileSketch::new();
        for value in [-100.0, -1.0, 0.0, -0.0, 1e-320, 5.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            sketch.add(value);
        }
        assert_eq!(sketch.count(), 8);
        assert!(sketch.quantile(0.0).unwrap_or(0.0) < -1e300);
        assert!(relative_error(sketch.quantile(1.0 / 7.0).unwrap_or(0.0), -100.0) <= 0.0101);
        assert_eq!(sketch.quantile(3.0 / 7.0), Some(0.0));
        assert!(sketch.quantile(1.0).unwrap_or(0.0) > 1e300);
        assert_eq!(sketch.quantile(1.5), None);
        assert_eq!(sketch.quantile(f64::NAN), None);
        assert_eq!(QuantileSketch::new().quantile(0.5), None);
    }

    #[test]
    fn bucket_count_is_bounded_and_merge_is_order_independent() {
        let mut up = QuantileSketch::new();
        let mut down = QuantileSketch::new();
        let values: Vec<f64> = (0..5000).map(|i| 1.05f64.powi(i - 2500)).collect();
        for &value in &values {
            up.add(value);
        }
        for &value in values.iter().rev() {
            down.add(value);
        }
        assert_eq!(up.bucket_count(), MAX_BUCKETS);
        assert_eq!(up, down);
        let (left, right) = values.split_at(1234);
        let mut merged = QuantileSketch::new();
        let mut left_sketch = QuantileSketch::new();
        left.iter().for_each(|&value| left_sketch.add(value));
        right.iter().for_each(|&value| merged.add(value));
        merged.merge(&left_sketch);
        assert_eq!(merged, up);
        // Large values keep their accuracy after collapsing.
        let truth = values[4999];
        assert!(relative_error(up.quantile(1.0).unwrap_or(0.0), truth) <= 0.0101);
    }
}
