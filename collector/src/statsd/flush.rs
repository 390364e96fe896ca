//! A flush: the interval's values with the reference's statistics (`lib/process_metrics.js`),
//! stored as one `statsd_flush` log record and shown with the reference's names and shapes.
//!
//! Only what cannot be derived is stored (counters, gauges, timer statistics, set sizes);
//! rates, `count_ps` and `timer_counters` are computed when the record is shown, with the
//! reference's own arithmetic (`value / (flushInterval / 1000)`).

use super::aggregate::RawFlush;
use crate::log::record::{ClosedBy, RecordKind, change_name};
use driftlog_eventtime::window::Change;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// One flush.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Flush {
    /// Who aggregated: the collector's `statsd.source`, or for an event-time window the
    /// device (`device-42`) or the `|T` lines' source address (`ip-10-0-0-5`).
    pub source: String,
    /// The collector's wall clock at the flush, ms since 1970; for an event-time window,
    /// the window's end.
    pub flush_unix_ms: i64,
    /// The configured interval; rates divide by it, as the reference's do.
    pub interval_ms: u64,
    pub counters: BTreeMap<String, f64>,
    pub gauges: BTreeMap<String, f64>,
    pub timers: BTreeMap<String, TimerData>,
    /// Distinct members per set.
    pub sets: BTreeMap<String, u64>,
    /// `percent_threshold`, in order: the names of [`TimerStats::percentiles`].
    pub thresholds: Vec<f64>,
    /// How long computing the statistics took (`statsd.processing_time`), ms; 0 for an
    /// event-time window (the pipeline reads no clock).
    pub processing_time_ms: u64,
    /// Set for an event-time window's result; stored after the flush (see [`encode_record`]).
    #[serde(skip)]
    pub window: Option<FlushWindow>,
}

/// What an event-time window's flush adds: whose window, its bounds, and its place in the
/// window's changelog (as window results have).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushWindow {
    /// The device whose samples these are; `None` for `|T` lines aggregated per source.
    pub device: Option<u64>,
    pub start_unix_us: i64,
    pub end_unix_us: i64,
    pub change: Change,
    /// 0 for the window's first result; each late update retracts revision n and inserts
    /// n + 1.
    pub revision: u32,
    pub closed_by: ClosedBy,
    /// The watermark that emitted it (the device's, or the source's).
    pub watermark_unix_us: i64,
}

/// Appends a `statsd_flush` record: the kind byte, the flush, and for an event-time window
/// its [`FlushWindow`] after it. Builds that read only the flush (which ignore what follows
/// it) read these records too.
pub fn encode_record(flush: &Flush, out: &mut Vec<u8>) {
    crate::log::record::encode_head(RecordKind::StatsdFlush, flush, out);
    if let Some(window) = &flush.window
        && let Ok(bytes) = postcard::to_allocvec(window)
    {
        out.extend_from_slice(&bytes);
    }
}

/// A `statsd_flush` record's body (after the kind byte); `None` if it does not decode.
pub fn decode_record(bytes: &[u8]) -> Option<Flush> {
    let (mut flush, rest) = postcard::take_from_bytes::<Flush>(bytes).ok()?;
    if !rest.is_empty() {
        flush.window = Some(postcard::from_bytes::<FlushWindow>(rest).ok()?);
    }
    Some(flush)
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerData {
    /// The sum of `1/rate` over the interval's samples.
    pub count: f64,
    /// `None` for a timer with no values this interval (it shows only `count` and
    /// `count_ps`, both 0).
    pub stats: Option<TimerStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerStats {
    pub lower: f64,
    pub upper: f64,
    pub sum: f64,
    pub sum_squares: f64,
    pub mean: f64,
    pub median: f64,
    /// Population standard deviation.
    pub std: f64,
    /// One per threshold; `None` where the reference emits nothing (k rounds to 0).
    pub percentiles: Vec<Option<PercentileStats>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PercentileStats {
    pub count: u64,
    pub mean: f64,
    /// `upper_p` for p > 0, `lower_p` (the boundary of the top |p| %) for p ≤ 0.
    pub bound: f64,
    pub sum: f64,
    pub sum_squares: f64,
}

impl Flush {
    /// The statistics of `raw`, as the reference computes them.
    pub fn compute(raw: RawFlush, thresholds: &[f64]) -> Flush {
        let timers = raw
            .timers
            .into_iter()
            .map(|(key, mut values, count)| {
                (key.into(), TimerData { count, stats: timer_stats(&mut values, thresholds) })
            })
            .collect();
        Flush {
            counters: raw.counters.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            gauges: raw.gauges.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            sets: raw.sets.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            timers,
            thresholds: thresholds.to_vec(),
            ..Flush::default()
        }
    }

    /// Seconds per interval as the reference divides by it.
    fn interval_s(&self) -> f64 {
        self.interval_ms as f64 / 1000.0
    }

    /// The record shown with the reference's names: `counters`, `counter_rates`, `gauges`,
    /// `timer_data`, `timer_counters`, `sets` and `statsd_metrics`.
    pub fn to_json(&self) -> Value {
        let interval_s = self.interval_s();
        let counter_rates: Map<String, Value> =
            self.counters.iter().map(|(k, v)| (k.clone(), json!(v / interval_s))).collect();
        let timer_counters: Map<String, Value> = self.timers.iter().map(|(k, t)| (k.clone(), json!(t.count))).collect();
        let timer_data: Map<String, Value> =
            self.timers.iter().map(|(k, t)| (k.clone(), Value::Object(self.timer_fields(t)))).collect();
        let mut json = json!({
            "kind": "statsd_flush",
            "source": self.source,
            "flush_unix_ms": self.flush_unix_ms,
            "interval_ms": self.interval_ms,
            "counters": self.counters,
            "counter_rates": counter_rates,
            "gauges": self.gauges,
            "timer_data": timer_data,
            "timer_counters": timer_counters,
            "sets": self.sets,
            "statsd_metrics": {"processing_time": self.processing_time_ms},
        });
        if let Some(window) = &self.window {
            json["device"] = json!(window.device);
            json["window_start_unix_ms"] = json!(window.start_unix_us.div_euclid(1_000));
            json["window_end_unix_ms"] = json!(window.end_unix_us.div_euclid(1_000));
            json["change"] = json!(change_name(window.change));
            json["revision"] = json!(window.revision);
            json["closed_by"] = json!(window.closed_by.name());
            json["watermark_unix_us"] = json!(window.watermark_unix_us);
        }
        json
    }

    /// One timer's fields, named as the reference names them.
    pub fn timer_fields(&self, timer: &TimerData) -> Map<String, Value> {
        let mut fields = Map::new();
        fields.insert("count".into(), json!(timer.count));
        fields.insert("count_ps".into(), json!(timer.count / self.interval_s()));
        let Some(stats) = &timer.stats else { return fields };
        for (name, value) in [
            ("lower", stats.lower),
            ("upper", stats.upper),
            ("sum", stats.sum),
            ("sum_squares", stats.sum_squares),
            ("mean", stats.mean),
            ("median", stats.median),
            ("std", stats.std),
        ] {
            fields.insert(name.into(), json!(value));
        }
        for (threshold, percentile) in self.thresholds.iter().zip(&stats.percentiles) {
            let Some(p) = percentile else { continue };
            let suffix = threshold_suffix(*threshold);
            let bound = if *threshold > 0.0 { "upper" } else { "lower" };
            fields.insert(format!("count_{suffix}"), json!(p.count));
            fields.insert(format!("mean_{suffix}"), json!(p.mean));
            fields.insert(format!("{bound}_{suffix}"), json!(p.bound));
            fields.insert(format!("sum_{suffix}"), json!(p.sum));
            fields.insert(format!("sum_squares_{suffix}"), json!(p.sum_squares));
        }
        fields
    }
}

/// The reference's field suffix for a threshold: JavaScript's `'' + p` with its first `.`
/// made `_` and its first `-` made `top` (`90`, `99_9`, `top10`). Thresholds are validated
/// to |p| in [1e-6, 100] (or 0), where Rust and JavaScript print numbers the same way.
pub fn threshold_suffix(threshold: f64) -> String {
    format!("{}", threshold + 0.0).replacen('.', "_", 1).replacen('-', "top", 1)
}

/// `process_metrics` for one timer: sorts `values` and computes every statistic, with the
/// reference's order of floating-point operations.
pub fn timer_stats(values: &mut [f64], thresholds: &[f64]) -> Option<TimerStats> {
    if values.is_empty() {
        return None;
    }
    // `sort((a, b) => a - b)`: stable, and equal for ±0 and for equal infinities.
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let count = values.len();
    let (min, max) = (values[0], values[count - 1]);
    let mut cumulative = Vec::with_capacity(count);
    let mut cumulative_squares = Vec::with_capacity(count);
    cumulative.push(min);
    cumulative_squares.push(min * min);
    for i in 1..count {
        cumulative.push(values[i] + cumulative[i - 1]);
        cumulative_squares.push(values[i] * values[i] + cumulative_squares[i - 1]);
    }
    let percentiles = thresholds
        .iter()
        .map(|&pct| {
            if count == 1 {
                return Some(PercentileStats { count: 1, mean: min, bound: max, sum: min, sum_squares: min * min });
            }
            // `Math.round(Math.abs(pct) / 100 * count)`: divide first, then multiply; for
            // non-negative numbers `f64::round` rounds ties up as `Math.round` does.
            let k = (pct.abs() / 100.0 * count as f64).round() as usize;
            if k == 0 {
                return None;
            }
            let (bound, sum, sum_squares) = if pct > 0.0 {
                (values[k - 1], cumulative[k - 1], cumulative_squares[k - 1])
            } else if k >= count {
                // `cumulativeValues[-1]` is undefined in JavaScript: the sums are NaN.
                (values[0], f64::NAN, f64::NAN)
            } else {
                (
                    values[count - k],
                    cumulative[count - 1] - cumulative[count - k - 1],
                    cumulative_squares[count - 1] - cumulative_squares[count - k - 1],
                )
            };
            Some(PercentileStats { count: k as u64, mean: sum / k as f64, bound, sum, sum_squares })
        })
        .collect();
    let sum = cumulative[count - 1];
    let sum_squares = cumulative_squares[count - 1];
    let mean = sum / count as f64;
    let mut sum_of_diffs = 0.0;
    for value in values.iter() {
        sum_of_diffs += (value - mean) * (value - mean);
    }
    let mid = count / 2;
    let median = if count % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 };
    Some(TimerStats {
        lower: min,
        upper: max,
        sum,
        sum_squares,
        mean,
        median,
        std: (sum_of_diffs / count as f64).sqrt(),
        percentiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(values: &[f64], thresholds: &[f64]) -> TimerStats {
        timer_stats(&mut values.to_vec(), thresholds).unwrap()
    }

    /// The worked checks of the design note (section 1.4) and the reference's own unit
    /// tests (`test/process_metrics_tests.js`).
    #[test]
    fn percentiles_follow_the_reference_algorithm() {
        let one_to_ten: Vec<f64> = (1..=10).map(f64::from).collect();
        let p90 = stats(&one_to_ten, &[90.0]).percentiles[0].unwrap();
        assert_eq!((p90.count, p90.bound, p90.mean), (9, 9.0, 5.0));
        assert_eq!(stats(&one_to_ten, &[95.0]).percentiles[0].unwrap().bound, 10.0);
        let one_to_five: Vec<f64> = (1..=5).map(f64::from).collect();
        assert_eq!(stats(&one_to_five, &[90.0]).percentiles[0].unwrap().bound, 5.0);

        let hundreds = stats(&[300.0, 100.0, 200.0], &[90.0, 80.0]);
        let p90 = hundreds.percentiles[0].unwrap();
        assert_eq!((p90.count, p90.mean, p90.bound), (3, 200.0, 300.0));
        assert_eq!(hundreds.percentiles[1].unwrap().count, 2);
        assert!((hundreds.std - 81.6497).abs() < 1e-4, "{}", hundreds.std);

        let mut top = vec![10.0; 8];
        top.extend([100.0, 200.0]);
        let top20 = stats(&top, &[-20.0]).percentiles[0].unwrap();
        assert_eq!((top20.mean, top20.bound), (150.0, 100.0));
    }

    #[test]
    fn corner_cases_match_the_reference() {
        // One value: every threshold gets it.
        let single = stats(&[7.0], &[90.0, -10.0, 0.5]);
        assert!(single.percentiles.iter().all(|p| p.unwrap() == PercentileStats {
            count: 1,
            mean: 7.0,
            bound: 7.0,
            sum: 7.0,
            sum_squares: 49.0
        }));
        // k rounds to 0: nothing for that threshold.
        assert_eq!(stats(&[1.0, 2.0], &[10.0]).percentiles[0], None);
        // A top percentile with k == n: NaN sums and mean.
        let all = stats(&[1.0, 2.0], &[-100.0]).percentiles[0].unwrap();
        assert!(all.sum.is_nan() && all.mean.is_nan() && all.sum_squares.is_nan());
        assert_eq!((all.count, all.bound), (2, 1.0));
        // Median of an even count is the mean of the middle two.
        assert_eq!(stats(&[4.0, 1.0, 3.0, 2.0], &[]).median, 2.5);
        // Ties at .5 round up: 50 % of 5 values is 3.
        assert_eq!(stats(&one_to(5), &[50.0]).percentiles[0].unwrap().count, 3);
    }

    fn one_to(n: u32) -> Vec<f64> {
        (1..=n).map(f64::from).collect()
    }

    #[test]
    fn threshold_suffixes_are_the_references() {
        assert_eq!(threshold_suffix(90.0), "90");
        assert_eq!(threshold_suffix(99.9), "99_9");
        assert_eq!(threshold_suffix(-10.0), "top10");
        assert_eq!(threshold_suffix(-0.5), "top0_5");
        assert_eq!(threshold_suffix(-0.0), "0");
        assert_eq!(threshold_suffix(0.001), "0_001");
    }

    #[test]
    fn json_has_the_references_names_and_shapes() {
        let raw = RawFlush {
            counters: vec![("c".into(), 25.0)],
            timers: vec![("t".into(), vec![3.0, 1.0, 2.0], 30.0), ("idle".into(), vec![], 0.0)],
            gauges: vec![("g".into(), -5.0)],
            sets: vec![("s".into(), 4)],
        };
        let mut flush = Flush::compute(raw, &[90.0, -10.0]);
        flush.interval_ms = 10_000;
        let json = flush.to_json();
        assert_eq!(json["counters"]["c"], 25.0);
        assert_eq!(json["counter_rates"]["c"], 2.5);
        assert_eq!(json["gauges"]["g"], -5.0);
        assert_eq!(json["sets"]["s"], 4);
        assert_eq!(json["timer_counters"]["t"], 30.0);
        let t = &json["timer_data"]["t"];
        assert_eq!((t["count"].as_f64(), t["count_ps"].as_f64()), (Some(30.0), Some(3.0)));
        assert_eq!((t["upper_90"].as_f64(), t["count_90"].as_u64()), (Some(3.0), Some(3)));
        assert!(t.get("lower_top10").is_none(), "k rounds to 0 for 10 % of 3 values");
        assert_eq!(json["timer_data"]["idle"], json!({"count": 0.0, "count_ps": 0.0}));
        let back: Flush = postcard::from_bytes(&postcard::to_allocvec(&flush).unwrap()).unwrap();
        assert_eq!(back, flush);
    }
}
