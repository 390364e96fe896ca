//! One device epoch's clock model: samples in, a [`ClockFix`] out.

use serde::{Deserialize, Serialize};

use super::bound::{Bound, intersect};
use super::exchange::{Exchange, ExchangeRegister};
use super::history::DriftHistory;
use super::min_filter::MinFilter;
use super::regression::{Line, Point, fit, reweight_by_envelope};
use super::{ClockConfig, ClockFix, ClockStats, Estimate, Method, SampleRejected};

/// Regression points needed before a slope is believed: two define a line exactly, a third
/// leaves a residual.
const MIN_FIT_POINTS: usize = 3;

/// Floor of an exchange point's error scale in the weights, so that one lucky sub-millisecond
/// round trip does not outweigh the whole history.
const EXCHANGE_WEIGHT_FLOOR_US: f64 = 500.0;

/// Standard errors of the fitted slope taken as its error bound: about 99.7 % coverage for a
/// normal error, and the loosening of old bounds is not worth more.
const DRIFT_ERROR_SIGMAS: f64 = 3.0;

/// Softness of the one-way envelope weights, µs (see `regression::reweight_by_envelope`).
const ENVELOPE_SOFTNESS_US: f64 = 1_000.0;

/// Refits of the one-way envelope: the weights depend on the line, so iterate a little.
const ENVELOPE_PASSES: usize = 3;

/// The clock model of one (device, boot epoch): maps the device's monotonic µs to collector
/// Unix µs (`time-and-windows.md` §3).
///
/// Inputs, each cheap and bounded by the config:
/// - [`handle_batch`](Self::handle_batch): every data frame's `(t2, t3)`, an upper bound of the
///   offset, into a windowed minimum filter and the drift history;
/// - [`handle_exchange`](Self::handle_exchange): every ack's `(T1, T2, T3, T4)`, bounds from
///   both sides, into an NTP-style register and the drift history.
///
/// After each input the model reads the offset at the newest device time off the window's
/// bounds (minimum filter, exchanges), fits the drift through it by weighted least squares over
/// the history, and caches the result as an integer [`ClockFix`]. Reading it is a copy.
///
/// A reboot restarts the monotonic clock, so the collector starts a new model per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockModel {
    /// Newest device time of any sample: "now" on the device, where the fix is anchored.
    newest_device_us: Option<u64>,
    /// Tightest one-way bounds in the window ending at `newest_device_us`.
    min_filter: MinFilter,
    /// The last exchanges, in arrival order.
    exchanges: ExchangeRegister,
    /// Bucketed best samples over the model's whole life, for the drift fit.
    history: DriftHistory,
    /// Offset µs per device µs from the last fit (0 before one): used to detrend samples when
    /// the filters compare them.
    slope: f64,
    /// Cached result of the last input.
    fix: ClockFix,
    /// Cached result of the last input, without `stats`.
    estimate: Estimate,
    stats: ClockStats,
}

impl ClockModel {
    pub fn new(config: &ClockConfig) -> Self {
        ClockModel {
            newest_device_us: None,
            min_filter: MinFilter::default(),
            exchanges: ExchangeRegister::with_capacity(config.exchange_capacity()),
            history: DriftHistory::default(),
            slope: 0.0,
            fix: ClockFix::NONE,
            estimate: Estimate::NONE,
            stats: ClockStats::default(),
        }
    }

    /// A data frame sealed at device time `sent_device_us` (t2) and received at
    /// `received_unix_us` (t3). `t3 - t2` is the offset plus the one-way delay: an upper bound.
    ///
    /// A retransmitted frame that keeps its original t2 is just a loose bound; the filters
    /// ignore it. Values that do not fit in i64 are counted in `batches_ignored`.
    pub fn handle_batch(&mut self, config: &ClockConfig, sent_device_us: u64, received_unix_us: i64) {
        let offset = i128::from(received_unix_us) - i128::from(sent_device_us);
        let (Ok(offset_us), true) = (i64::try_from(offset), i64::try_from(sent_device_us).is_ok()) else {
            self.stats.batches_ignored += 1;
            return;
        };
        self.stats.batches += 1;
        let newest_device_us = self.advance(sent_device_us);
        let bound = MinFilter::bound(sent_device_us, offset_us);
        self.min_filter.insert(config.min_filter_window_us, newest_device_us, bound, self.slope);
        self.history.insert_one_way(config.regression_capacity(), bound, self.slope);
        self.refresh(config);
    }

    /// An ack exchange reported by the device: `t1_device_us` (T1, device send), `t2_unix_us`
    /// (T2, collector receive), `t3_unix_us` (T3, collector ack send), `t4_device_us` (T4,
    /// device ack receipt). The offset lies within θ ± δ/2 with
    /// θ = ((T2-T1)+(T3-T4))/2 and δ = (T4-T1)-(T3-T2).
    ///
    /// Inconsistent samples (T4 < T1, T3 < T2, δ < 0, out of range) are refused, counted in
    /// `exchanges_rejected`, and leave the model untouched. There is no spike gate: a
    /// high-delay sample only contributes loose bounds, which the intersection ignores.
    pub fn handle_exchange(
        &mut self,
        config: &ClockConfig,
        t1_device_us: u64,
        t2_unix_us: i64,
        t3_unix_us: i64,
        t4_device_us: u64,
    ) -> Result<(), SampleRejected> {
        let exchange = Exchange::new(t1_device_us, t2_unix_us, t3_unix_us, t4_device_us).inspect_err(|_| {
            self.stats.exchanges_rejected += 1;
        })?;
        self.stats.exchanges += 1;
        let newest_device_us = self.advance(t4_device_us);
        self.min_filter.evict(config.min_filter_window_us, newest_device_us);
        self.exchanges.push(config.exchange_capacity(), exchange);
        self.history.insert_exchange(config.regression_capacity(), exchange, self.slope);
        self.refresh(config);
        Ok(())
    }

    /// Snapshot of the current best mapping, cheap to store per log record.
    pub fn fix(&self) -> ClockFix {
        self.fix
    }

    /// The current estimate and input counters, for metrics.
    pub fn estimate(&self) -> Estimate {
        Estimate { stats: self.stats, ..self.estimate }
    }

    fn advance(&mut self, device_us: u64) -> u64 {
        let newest = self.newest_device_us.map_or(device_us, |newest| newest.max(device_us));
        self.newest_device_us = Some(newest);
        newest
    }

    /// Recomputes the cached fix and estimate from the filters and the history.
    fn refresh(&mut self, config: &ClockConfig) {
        let Some(reference_device_us) = self.newest_device_us else {
            return;
        };
        let window_us = config.min_filter_window_us;
        // Exchanges count as recent by their last stamp, so the newest one always does.
        let recent_exchanges = || {
            self.exchanges
                .iter()
                .filter(move |exchange| exchange.received_device_us.saturating_add(window_us) >= reference_device_us)
        };
        let recent_bounds = || {
            self.min_filter.bounds().chain(recent_exchanges().flat_map(|exchange| [exchange.upper(), exchange.lower()]))
        };
        // The newest sample is always recent, so there is a base whenever there is a reference.
        let Some(base_us) = recent_bounds().next().map(|bound| bound.offset_us) else {
            return;
        };
        let max_slope = config.max_slope();
        let clamp = |line: Line| Line { slope: line.slope.clamp(-max_slope, max_slope), ..line };

        // See `regression.rs` for why the slope that detrends the recent bounds is fitted
        // free and the one the fix applies is pinned through the offset they give.
        let mut regression = self.regression(config, reference_device_us, base_us);
        let free = regression.as_mut().and_then(|regression| regression.fit(reference_device_us, None)).map(clamp);
        let detrend_slope = free.map_or(0.0, |line| line.slope);
        // Before a drift is fitted the window is short enough to take the drift as zero; that
        // is also what makes vector C1 exact.
        let detrend_error = free.map_or(0.0, |line| DRIFT_ERROR_SIGMAS * line.standard_error);
        let Some(anchor) = intersect(recent_bounds(), reference_device_us, detrend_slope, detrend_error, base_us) else {
            return;
        };
        let pinned = regression
            .as_mut()
            .and_then(|regression| regression.fit(reference_device_us, Some(anchor.offset_us)))
            .map(clamp);
        let recent_exchange_count = recent_exchanges().count();
        self.slope = detrend_slope;

        let method = if pinned.is_some() {
            Method::Drift
        } else if anchor.lower_bounds > 0 {
            Method::Exchange
        } else if self.min_filter.samples() > 1 {
            Method::MinFilter
        } else {
            Method::Naive
        };
        let slope = pinned.map_or(0.0, |line| line.slope);
        let drift_uncertainty_ppm = pinned.map_or(max_slope * 1e6, |line| DRIFT_ERROR_SIGMAS * line.standard_error * 1e6);
        // Ties round towards +∞, as in `ClockFix::correct`; `as` saturates.
        let offset_us = i128::from(anchor.base_us) + (anchor.offset_us + 0.5).floor() as i128;
        self.fix = ClockFix {
            reference_device_us,
            offset_us: i64::try_from(offset_us).unwrap_or(if offset_us < 0 { i64::MIN } else { i64::MAX }),
            drift_ppb: (-slope * 1e9).round() as i64,
            uncertainty_us: anchor.half_width_us.ceil() as u64,
            drift_uncertainty_ppb: (drift_uncertainty_ppm * 1e3).ceil() as u64,
            method,
        };
        let regression_points = regression.as_ref().filter(|_| pinned.is_some()).map_or(0, |r| r.points.len());
        self.estimate = Estimate {
            method,
            reference_device_us,
            offset_us: anchor.base_us as f64 + anchor.offset_us,
            uncertainty_us: self.fix.uncertainty_us,
            drift_ppm: -slope * 1e6,
            drift_uncertainty_ppm,
            min_delay_us: self.exchanges.least_delay().map_or(0, Exchange::delay_us),
            samples_used: self.min_filter.samples() + recent_exchange_count + regression_points,
            exchange_samples: self.exchanges.len(),
            regression_span_us: regression.filter(|_| pinned.is_some()).map_or(0, |r| r.span_us),
            stats: ClockStats::default(),
        };
    }

    /// The points to fit the drift over: exchange points when there are enough of them, since
    /// they carry no +d bias; otherwise one-way points, weighted towards their lower envelope.
    /// `None` until the points span `regression_min_span_us`.
    fn regression(&self, config: &ClockConfig, reference_device_us: u64, base_us: i64) -> Option<Regression> {
        let base_us = i128::from(base_us);
        let exchange_points: Vec<Point> = self
            .history
            .exchanges()
            .map(|exchange| Point {
                device_us: exchange.midpoint_device_us(),
                offset_us: (exchange.offset_x2_us() - 2 * base_us) as f64 / 2.0,
                weight: (exchange.delay_us() as f64 / 2.0 + EXCHANGE_WEIGHT_FLOOR_US).powi(-2),
            })
            .collect();
        if let Some(span_us) = span_if_enough(config, reference_device_us, &exchange_points) {
            return Some(Regression { points: exchange_points, envelope: false, span_us });
        }
        let one_way_points: Vec<Point> = self.history.one_way().map(|bound| one_way_point(bound, base_us)).collect();
        let span_us = span_if_enough(config, reference_device_us, &one_way_points)?;
        Some(Regression { points: one_way_points, envelope: true, span_us })
    }
}

/// The drift fit's input.
#[derive(Clone, Debug)]
struct Regression {
    points: Vec<Point>,
    /// Whether the points are one-way upper bounds, to be weighted towards their envelope.
    envelope: bool,
    span_us: u64,
}

impl Regression {
    fn fit(&mut self, reference_device_us: u64, pin_us: Option<f64>) -> Option<Line> {
        if !self.envelope {
            return fit(reference_device_us, pin_us, &self.points);
        }
        self.points.iter_mut().for_each(|point| point.weight = 1.0);
        let mut line = fit(reference_device_us, pin_us, &self.points)?;
        for _ in 0..ENVELOPE_PASSES {
            reweight_by_envelope(reference_device_us, &line, &mut self.points, ENVELOPE_SOFTNESS_US);
            line = fit(reference_device_us, pin_us, &self.points)?;
        }
        Some(line)
    }
}

fn one_way_point(bound: &Bound, base_us: i128) -> Point {
    Point { device_us: bound.device_us, offset_us: (i128::from(bound.offset_us) - base_us) as f64, weight: 1.0 }
}

/// The span of `points` and the reference, if the points are enough to fit a drift over.
fn span_if_enough(config: &ClockConfig, reference_device_us: u64, points: &[Point]) -> Option<u64> {
    let earliest = points.iter().map(|point| point.device_us).min()?;
    let latest = points.iter().map(|point| point.device_us).max()?.max(reference_device_us);
    let span_us = latest - earliest.min(latest);
    (points.len() >= MIN_FIT_POINTS && span_us >= config.regression_min_span_us.max(1)).then_some(span_us)
}
