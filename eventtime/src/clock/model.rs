//! One device epoch's clock model: samples in, a [`ClockFix`] out.

use serde::{Deserialize, Serialize};

use super::bound::{Bound, intersect, least_feasible_slope};
use super::exchange::{Exchange, ExchangeRegister};
use super::history::DriftHistory;
use super::min_filter::MinFilter;
use super::regression::{Line, Point, envelope_start, fit, reweight_by_envelope};
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

/// How fast bounds loosen with age before a drift is fitted, in offset µs per device µs:
/// NTP's PHI (RFC 5905: dispersion grows at 15 ppm), the tolerance it assumes of a clock it
/// knows nothing about. Without it, a fast clock's old lower bounds stay the tightest and the
/// first minutes of every boot come out late by up to ρ·window/2.
const UNFITTED_DRIFT_ERROR: f64 = 15e-6;

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
///   both sides, into windowed filters of each side, NTP's register and the drift history.
///
/// After each input the model reads the offset at the newest device time off the window's
/// bounds (intersected exchange intervals, else the one-way minimum), fits the drift through it
/// by weighted least squares over the history, and caches the result as an integer
/// [`ClockFix`]. Reading it is a copy; an update costs a refit over at most
/// `regression_samples` points (tens of µs at the default 256), which data frames trigger at
/// most every `batch_refit_interval_us`.
///
/// A reboot restarts the monotonic clock, so the collector starts a new model per epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockModel {
    /// The sample with the newest device time: "now" on the device, where the fix is anchored.
    newest: Option<Newest>,
    /// Device time of the last refit (see `ClockConfig::batch_refit_interval_us`).
    #[serde(default)]
    refit_at_device_us: Option<u64>,
    /// Tightest one-way bounds (`t3 - t2`) in the window ending at the newest device time.
    one_way: MinFilter,
    /// Tightest exchange up legs (`T2 - T1`) in the window.
    exchange_upper: MinFilter,
    /// Tightest exchange down legs (`T3 - T4`) in the window.
    exchange_lower: MinFilter,
    /// The last exchanges in arrival order: NTP's register. Its least δ is the δ_min metric,
    /// and it stands in for the window when acks are rarer than the window.
    exchanges: ExchangeRegister,
    /// Bucketed best samples over the model's whole life, for the drift fit.
    history: DriftHistory,
    /// Offset µs per device µs that detrended the last anchor (the free fit, or before one the
    /// least drift the window forces): the filters use it to compare samples.
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
            newest: None,
            refit_at_device_us: None,
            one_way: MinFilter::default(),
            exchange_upper: MinFilter::default(),
            exchange_lower: MinFilter::default(),
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
    /// ignore it. Values that do not fit in i64, and device times that jump implausibly far
    /// ahead (see [`SampleRejected::DeviceTimeJump`]), are counted in `batches_ignored`.
    pub fn handle_batch(&mut self, config: &ClockConfig, sent_device_us: u64, received_unix_us: i64) {
        let offset = i128::from(received_unix_us) - i128::from(sent_device_us);
        let in_range = i64::try_from(sent_device_us).is_ok();
        let (Ok(offset_us), true, true) =
            (i64::try_from(offset), in_range, self.plausible(config, sent_device_us, received_unix_us))
        else {
            self.stats.batches_ignored += 1;
            return;
        };
        self.stats.batches += 1;
        let newest_device_us = self.advance(sent_device_us, received_unix_us);
        let bound = MinFilter::bound(sent_device_us, offset_us);
        self.one_way.insert(config.min_filter_window_us, bound, self.slope);
        self.evict(config, newest_device_us);
        self.history.insert_one_way(config.regression_capacity(), bound, self.slope);
        let due = self
            .refit_at_device_us
            .is_none_or(|at| newest_device_us < at || newest_device_us - at >= config.batch_refit_interval_us);
        if due {
            self.refresh(config);
            self.refit_at_device_us = Some(newest_device_us);
        }
    }

    /// An ack exchange reported by the device: `t1_device_us` (T1, device send), `t2_unix_us`
    /// (T2, collector receive), `t3_unix_us` (T3, collector ack send), `t4_device_us` (T4,
    /// device ack receipt). The offset lies within θ ± δ/2 with
    /// θ = ((T2-T1)+(T3-T4))/2 and δ = (T4-T1)-(T3-T2).
    ///
    /// Inconsistent samples (T4 < T1, T3 < T2, δ < 0, out of range, an implausible jump of
    /// device time) are refused, counted in `exchanges_rejected`, and leave the model
    /// untouched. There is no spike gate: a high-delay sample only contributes loose bounds,
    /// which the intersection ignores, and a low weight in the drift fit.
    pub fn handle_exchange(
        &mut self,
        config: &ClockConfig,
        t1_device_us: u64,
        t2_unix_us: i64,
        t3_unix_us: i64,
        t4_device_us: u64,
    ) -> Result<(), SampleRejected> {
        let checked = Exchange::new(t1_device_us, t2_unix_us, t3_unix_us, t4_device_us).and_then(|exchange| {
            // T3 is the collector's time closest to T4.
            match self.plausible(config, t4_device_us, t3_unix_us) {
                true => Ok(exchange),
                false => Err(SampleRejected::DeviceTimeJump),
            }
        });
        let exchange = checked.inspect_err(|_| self.stats.exchanges_rejected += 1)?;
        self.stats.exchanges += 1;
        let newest_device_us = self.advance(t4_device_us, t3_unix_us);
        self.exchange_upper.insert(config.min_filter_window_us, exchange.upper(), self.slope);
        self.exchange_lower.insert(config.min_filter_window_us, exchange.lower(), self.slope);
        self.evict(config, newest_device_us);
        self.exchanges.push(config.exchange_capacity(), exchange);
        self.history.insert_exchange(config.regression_capacity(), exchange, self.slope);
        self.refresh(config);
        self.refit_at_device_us = Some(newest_device_us);
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

    fn evict(&mut self, config: &ClockConfig, newest_device_us: u64) {
        for filter in [&mut self.one_way, &mut self.exchange_upper, &mut self.exchange_lower] {
            filter.evict(config.min_filter_window_us, newest_device_us);
        }
    }

    /// Whether device time `device_us`, seen by the collector at `unix_us`, can follow the
    /// newest sample so far. Device time cannot run ahead of collector time by more than the
    /// drift allows, plus slack for delays (`future_tolerance_us`: how far ahead a device may
    /// be before its events are quarantined anyway). Without this gate one corrupt stamp far in
    /// the future would become "now" and push every later sample out of the window for good.
    fn plausible(&self, config: &ClockConfig, device_us: u64, unix_us: i64) -> bool {
        let Some(newest) = self.newest else {
            return true;
        };
        let Some(lead_us) = device_us.checked_sub(newest.device_us) else {
            return true;
        };
        // Saturating: a span beyond i64 (292 000 years) allows any lead anyway.
        let elapsed_us = unix_us.saturating_sub(newest.unix_us).max(0) as f64;
        let allowed_us = elapsed_us * (1.0 + config.max_slope()) + config.future_tolerance_us as f64;
        lead_us as f64 <= allowed_us
    }

    fn advance(&mut self, device_us: u64, unix_us: i64) -> u64 {
        match self.newest {
            Some(newest) if newest.device_us >= device_us => newest.device_us,
            _ => {
                self.newest = Some(Newest { device_us, unix_us });
                device_us
            }
        }
    }

    /// Recomputes the cached fix and estimate from the filters and the history.
    fn refresh(&mut self, config: &ClockConfig) {
        let Some(reference_device_us) = self.newest.map(|newest| newest.device_us) else {
            return;
        };
        let (bounds, source) = self.recent_bounds();
        // The newest sample is always among them, so there is a base whenever there is a reference.
        let Some(base_us) = bounds.first().map(|bound| bound.offset_us) else {
            return;
        };
        let max_slope = config.max_slope();
        let clamp = |line: Line| Line { slope: line.slope.clamp(-max_slope, max_slope), ..line };

        // See `regression.rs` for why the slope that detrends the recent bounds is fitted
        // free and the one the fix applies is pinned through the offset they give.
        let mut regression = self.regression(config, reference_device_us, base_us);
        let free = regression.as_mut().and_then(|regression| regression.fit(reference_device_us, None)).map(clamp);
        let detrend_slope =
            free.map_or_else(|| least_feasible_slope(&bounds, reference_device_us, max_slope), |line| line.slope);
        let detrend_error = free.map_or(UNFITTED_DRIFT_ERROR, |line| DRIFT_ERROR_SIGMAS * line.standard_error);
        let Some(anchor) =
            intersect(bounds.iter().copied(), reference_device_us, detrend_slope, detrend_error, base_us)
        else {
            return;
        };
        let pinned = regression
            .as_mut()
            .and_then(|regression| regression.fit(reference_device_us, Some(anchor.offset_us)))
            .map(clamp);
        self.slope = detrend_slope;

        let method = if pinned.is_some() {
            Method::Drift
        } else if source.is_exchanges() {
            Method::Exchange
        } else if self.one_way.samples() > 1 {
            Method::MinFilter
        } else {
            Method::Naive
        };
        let slope = pinned.map_or(0.0, |line| line.slope);
        let drift_uncertainty_ppm =
            pinned.map_or(max_slope * 1e6, |line| DRIFT_ERROR_SIGMAS * line.standard_error * 1e6);
        // Ties round towards +∞, as in `ClockFix::correct`; `as` saturates.
        let offset_us = i128::from(anchor.base_us) + (anchor.offset_us + 0.5).floor() as i128;
        self.fix = ClockFix {
            reference_device_us,
            offset_us: i64::try_from(offset_us).unwrap_or(if offset_us < 0 { i64::MIN } else { i64::MAX }),
            drift_ppb: (-slope * 1e9).round() as i64,
            uncertainty_us: anchor.half_width_us.ceil() as u64,
            // Plus half a ppb for rounding the slope into whole ppb (43 µs a day).
            drift_uncertainty_ppb: (drift_uncertainty_ppm * 1e3 + 0.5).ceil() as u64,
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
            samples_used: source.samples() + regression_points,
            exchange_samples: self.exchanges.len(),
            regression_span_us: regression.filter(|_| pinned.is_some()).map_or(0, |r| r.span_us),
            stats: ClockStats::default(),
        };
    }

    /// The bounds the current offset is read off, and where they came from.
    ///
    /// With exchanges in the window, the offset is where their intervals intersect: the NTP
    /// least-delay interval is one of them, so the intersection is never looser, and over a
    /// window of acks it is far tighter. The batches' one-way bounds are left out then, on
    /// purpose: the minimum of many upper bounds is tighter than the maximum of fewer lower
    /// bounds, and the midpoint would be biased by the difference. Each exchange gives one
    /// bound of each side, so both are order statistics of as many samples and the bias
    /// cancels; what is left is the path asymmetry.
    ///
    /// When acks are rarer than the window, the register's last exchanges stand in: moved
    /// along the drift and loosened by its uncertainty, an older interval still beats a
    /// one-way bound, which is late by the whole delay.
    fn recent_bounds(&self) -> (Vec<Bound>, BoundSource) {
        // Both legs: an exchange's up leg (at T1) leaves the window a round trip before its
        // down leg (at T4), and lower bounds alone would put the offset a whole delay low.
        if self.exchange_lower.samples() > 0 && self.exchange_upper.samples() > 0 {
            let bounds = self.exchange_upper.bounds().chain(self.exchange_lower.bounds()).collect();
            (bounds, BoundSource::WindowExchanges(self.exchange_lower.samples()))
        } else if self.exchanges.len() > 0 {
            let bounds = self.exchanges.iter().flat_map(|exchange| [exchange.upper(), exchange.lower()]).collect();
            (bounds, BoundSource::Register(self.exchanges.len()))
        } else {
            (self.one_way.bounds().collect(), BoundSource::OneWay(self.one_way.samples()))
        }
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

/// Where the bounds behind the current offset came from, with the number of samples.
#[derive(Clone, Copy, Debug)]
enum BoundSource {
    WindowExchanges(usize),
    Register(usize),
    OneWay(usize),
}

impl BoundSource {
    fn is_exchanges(self) -> bool {
        !matches!(self, BoundSource::OneWay(_))
    }

    fn samples(self) -> usize {
        match self {
            BoundSource::WindowExchanges(samples) | BoundSource::Register(samples) | BoundSource::OneWay(samples) => {
                samples
            }
        }
    }
}

/// The sample with the newest device time, and when the collector saw it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Newest {
    device_us: u64,
    unix_us: i64,
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
        let mut line = envelope_start(reference_device_us, pin_us, &self.points)?;
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
