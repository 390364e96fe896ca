//! Bounded history of filtered samples for the drift fit (`time-and-windows.md` §3.3 item 3).
//!
//! The fit needs hours or days of samples, but a device sending every 10 s makes 8640 a day.
//! Device time is cut into buckets that keep only their best sample of each kind (least-delay
//! exchange, tightest one-way bound): the same decimation as the design note's "hourly minima".
//! When there are more buckets than `regression_samples`, the bucket width doubles and
//! neighbours merge, so the points always spread over the whole history, whatever its length,
//! and memory never grows. Empty stretches (a device offline for a day) cost nothing.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::bound::Bound;
use super::exchange::Exchange;

/// First bucket width: one second keeps every batch apart while the history is young.
const INITIAL_BUCKET_US: u64 = 1_000_000;

/// Past this width buckets stop merging and the oldest are dropped instead, so the doubling
/// cannot overflow (2⁶² µs is 146 000 years: unreachable by a real device).
const MAX_BUCKET_US: u64 = 1 << 62;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Bucket {
    index: u64,
    one_way: Option<Bound>,
    exchange: Option<Exchange>,
}

impl Bucket {
    fn absorb(&mut self, other: Bucket, slope: f64) {
        if let Some(bound) = other.one_way {
            self.absorb_one_way(bound, slope);
        }
        if let Some(exchange) = other.exchange {
            self.absorb_exchange(exchange);
        }
    }

    fn absorb_one_way(&mut self, bound: Bound, slope: f64) {
        if self.one_way.is_none_or(|kept| bound.tighter_than(&kept, slope)) {
            self.one_way = Some(bound);
        }
    }

    /// Least delay wins, as in the NTP clock filter: the asymmetry error of an exchange is at
    /// most δ/2, so the smallest δ is the best-bounded point.
    fn absorb_exchange(&mut self, exchange: Exchange) {
        if self.exchange.is_none_or(|kept| exchange.delay_us() < kept.delay_us()) {
            self.exchange = Some(exchange);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct DriftHistory {
    bucket_us: u64,
    /// Sorted by `index`; only non-empty buckets are stored.
    buckets: VecDeque<Bucket>,
}

impl Default for DriftHistory {
    fn default() -> Self {
        DriftHistory { bucket_us: INITIAL_BUCKET_US, buckets: VecDeque::new() }
    }
}

impl DriftHistory {
    pub(crate) fn insert_one_way(&mut self, capacity: usize, bound: Bound, slope: f64) {
        self.bucket(bound.device_us).absorb_one_way(bound, slope);
        self.shrink(capacity, slope);
    }

    pub(crate) fn insert_exchange(&mut self, capacity: usize, exchange: Exchange, slope: f64) {
        self.bucket(exchange.midpoint_device_us()).absorb_exchange(exchange);
        self.shrink(capacity, slope);
    }

    pub(crate) fn one_way(&self) -> impl Iterator<Item = &Bound> {
        self.buckets.iter().filter_map(|bucket| bucket.one_way.as_ref())
    }

    pub(crate) fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.buckets.iter().filter_map(|bucket| bucket.exchange.as_ref())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    fn bucket(&mut self, device_us: u64) -> &mut Bucket {
        let index = device_us / self.bucket_us;
        let position = super::sorted::position(&self.buckets, index, |bucket| bucket.index);
        if self.buckets.get(position).is_none_or(|bucket| bucket.index != index) {
            self.buckets.insert(position, Bucket { index, one_way: None, exchange: None });
        }
        &mut self.buckets[position]
    }

    /// Doubles the bucket width until the buckets fit in `capacity`.
    fn shrink(&mut self, capacity: usize, slope: f64) {
        let capacity = capacity.max(1);
        while self.buckets.len() > capacity {
            if self.bucket_us >= MAX_BUCKET_US {
                self.buckets.pop_front();
                continue;
            }
            self.bucket_us *= 2;
            let mut merged: VecDeque<Bucket> = VecDeque::with_capacity(self.buckets.len() / 2 + 1);
            for mut bucket in self.buckets.drain(..) {
                bucket.index /= 2;
                match merged.back_mut() {
                    Some(last) if last.index == bucket.index => last.absorb(bucket, slope),
                    _ => merged.push_back(bucket),
                }
            }
            self.buckets = merged;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::min_filter::MinFilter;

    #[test]
    fn days_of_samples_fit_in_capacity_and_span_the_whole_history() {
        let mut history = DriftHistory::default();
        let day_us = 86_400_000_000;
        // Every 10 s for three days, with a delay pattern that repeats every 7 samples.
        for sample in 0..(3 * 8640u64) {
            let device_us = sample * 10_000_000;
            let offset_us = 1_000 + (sample % 7) as i64 * 10;
            history.insert_one_way(256, MinFilter::bound(device_us, offset_us), 0.0);
            let exchange = Exchange::new(device_us, offset_us, offset_us, device_us + 100 + sample % 5).unwrap();
            history.insert_exchange(256, exchange, 0.0);
        }
        assert!(history.len() <= 256);
        assert!(history.len() > 64, "merging must not over-shrink: {}", history.len());
        let first = history.one_way().next().unwrap().device_us;
        let last = history.one_way().last().unwrap().device_us;
        assert!(first < day_us / 2 && last > 3 * day_us - day_us / 2);
        // Each bucket kept its least-delay exchange and its tightest bound.
        assert!(history.exchanges().all(|exchange| exchange.delay_us() == 100));
        assert!(history.one_way().all(|bound| bound.offset_us == 1_000));
    }
}
