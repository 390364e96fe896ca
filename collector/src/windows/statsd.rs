//! StatsD by event time: one owner's (a device's, or a `|T` source's) samples in tumbling
//! windows of the flush interval over corrected event time, each with the reference's
//! statistics (the StatsD server's own [`Aggregator`] and [`Flush`]), emitted as
//! `statsd_flush` records that name the owner and the window's bounds.
//!
//! # The rules
//! - A sample at time `t` belongs to the window `[k·I, (k+1)·I)` holding `t` (aligned to the
//!   Unix epoch, like the other windows; the reference aligns to its start-up instead).
//! - A window fires when its owner's watermark reaches its last microsecond (`end - 1`): a
//!   device's completeness watermark, so an offline device's windows wait for its backlog
//!   and fire once, complete; a source's `now - timestamp_bound`. The first result is an
//!   INSERT (revision 0).
//! - A fired window is kept for `allowed_lateness` past its end. A sample that still arrives
//!   for it updates it: at the end of the log block (however many samples it took) the
//!   window emits a RETRACT of its last result and an INSERT of the new one (revision + 1),
//!   as the other windows' changelog does. A sample for a window already dropped, or that
//!   would open more than `max_open_windows`, is a `late` record, never a silent loss.
//! - A window holds only its own samples: counters, timers and sets start empty in every
//!   window (so idle keys are not repeated, as with the reference's `delete_idle_stats`).
//!   Gauges persist, as the reference's do: a new window starts from the gauges of the
//!   owner's previous window (the latest earlier window held, or the last one dropped), and
//!   deltas add to them. A late update of one window does not flow into later windows'
//!   gauges.
//! - Samples apply in log order (a device's stream order), so gauge deltas and "last value"
//!   follow the order the device sequenced them.
//!
//! Pure and deterministic: no clock, no IO; the hash that finds keys in a window is keyed
//! per process but changes no output (results are built into ordered maps).

use crate::log::record::ClosedBy;
use crate::statsd::aggregate::{
    Aggregator, Bounds, Family, KeyBudget, Outcome, ResetRules, StoredAggregator, key_hash,
};
use crate::statsd::flush::{Flush, FlushWindow};
use driftlog_eventtime::window::{Change, Ticks};
use driftlog_protocol::statsd::Sample;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::hash::RandomState;
use std::sync::OnceLock;

/// The settings in force (`[statsd_event_time]`, resolved), times in µs.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsdSpec {
    pub interval: Ticks,
    pub thresholds: Vec<f64>,
    pub allowed_lateness: Ticks,
    /// `|T` sources: a window closes this long after its end, by processing time.
    pub timestamp_bound: Ticks,
    /// Distinct keys per window (carried gauges included).
    pub max_keys: usize,
    pub bounds: Bounds,
    /// Windows held per owner (open and kept for late samples).
    pub max_windows: usize,
    /// `|T` sources with windows at once.
    pub max_sources: usize,
}

/// Counters, checkpointed with the pipeline; they only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsdStats {
    /// Samples aggregated into a window.
    pub samples: u64,
    /// Results emitted (INSERT).
    pub results: u64,
    pub retractions: u64,
    /// Samples for a window already dropped (written as `late` records).
    pub late: u64,
    /// Samples refused because their window would exceed `max_open_windows`, or their
    /// source `max_sources` (written as `late` records too).
    pub over_limit: u64,
    pub key_capped: u64,
    pub timer_values_dropped: u64,
    pub set_members_dropped: u64,
    /// Events on the StatsD stream that are no StatsD sample (opaque payloads).
    pub not_samples: u64,
    /// `|T` samples read from the log.
    pub timestamped: u64,
}

impl StatsdStats {
    /// The counters by name (`driftlog_statsd_event_time_total{what}` on `/metrics`).
    pub fn series(&self) -> [(&'static str, u64); 10] {
        [
            ("samples", self.samples),
            ("results", self.results),
            ("retractions", self.retractions),
            ("late", self.late),
            ("over_limit", self.over_limit),
            ("key_capped", self.key_capped),
            ("timer_values_dropped", self.timer_values_dropped),
            ("set_members_dropped", self.set_members_dropped),
            ("not_samples", self.not_samples),
            ("timestamped", self.timestamped),
        ]
    }
}

/// Whose windows these are.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    pub device: Option<u64>,
    /// The flushes' `source`: `device-42`, or the `|T` source's name.
    pub source: &'a str,
}

/// Where a window's results go: whose windows they are, the settings, the counters and the
/// output.
#[derive(Debug)]
pub struct Emit<'a> {
    pub spec: &'a StatsdSpec,
    pub owner: Owner<'a>,
    pub stats: &'a mut StatsdStats,
    pub out: &'a mut Vec<Flush>,
}

/// What [`StatsdWindows::handle`] did with a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    Aggregated,
    /// Into a window behind the watermark: its (updated) result is emitted by
    /// [`StatsdWindows::flush_late`] at the end of the block.
    Updated,
    /// Its window was dropped already: a `late` record.
    Late,
    /// Its window would exceed `max_open_windows`: a `late` record.
    OverLimit,
}

/// The hasher of every event-time window's keys (outputs do not depend on it).
fn hasher() -> &'static RandomState {
    static HASHER: OnceLock<RandomState> = OnceLock::new();
    HASHER.get_or_init(RandomState::new)
}

/// One window: its aggregation and its last result.
#[derive(Debug)]
struct Window {
    aggregator: Aggregator,
    emitted: Option<Emitted>,
    /// Took samples since its last result while behind the watermark.
    late: bool,
}

/// A result as emitted, kept to be retracted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Emitted {
    flush: Flush,
    window: FlushWindow,
}

#[derive(Serialize, Deserialize)]
struct StoredWindow {
    aggregator: StoredAggregator,
    emitted: Option<Emitted>,
    late: bool,
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredWindow { aggregator: self.aggregator.to_stored(), emitted: self.emitted.clone(), late: self.late }
            .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Window, D::Error> {
        let stored = StoredWindow::deserialize(deserializer)?;
        // Bounds are set from the spec before each use.
        let bounds = Bounds { max_timer_values: usize::MAX, max_set_members: usize::MAX };
        let aggregator = Aggregator::from_stored(stored.aggregator, hasher(), bounds, ResetRules::default());
        Ok(Window { aggregator, emitted: stored.emitted, late: stored.late })
    }
}

/// One owner's windows (see the [module docs](self)).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct StatsdWindows {
    /// By start.
    windows: BTreeMap<Ticks, Window>,
    /// The gauges of the newest window dropped, and its start.
    carried: Option<(Ticks, Vec<(String, f64)>)>,
}

impl StatsdWindows {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether a window has not had its first result yet.
    pub fn has_unfired(&self) -> bool {
        self.windows.values().any(|w| w.emitted.is_none())
    }

    /// The lowest watermark at which [`Self::advance`] would change something (fire a window,
    /// or drop one); `None` when nothing is held.
    pub fn next_due(&self, spec: &StatsdSpec) -> Option<Ticks> {
        self.windows
            .iter()
            .map(|(start, window)| {
                let last = last_of(*start, spec);
                if window.emitted.is_none() || window.late { last } else { last.saturating_add(spec.allowed_lateness) }
            })
            .min()
    }

    /// One sample at event time `ts` under its canonical `key`, judged against `watermark`.
    pub fn handle(
        &mut self,
        spec: &StatsdSpec,
        ts: Ticks,
        key: &[u8],
        sample: &Sample<'_>,
        watermark: Ticks,
        stats: &mut StatsdStats,
    ) -> Taken {
        let start = ts.div_euclid(spec.interval).saturating_mul(spec.interval);
        let last = last_of(start, spec);
        if let Some(window) = self.windows.get_mut(&start) {
            aggregate(window, spec, key, sample, stats);
            if window.emitted.is_some() || last <= watermark {
                window.late = true;
                return Taken::Updated;
            }
            return Taken::Aggregated;
        }
        if last.saturating_add(spec.allowed_lateness) <= watermark {
            stats.late += 1;
            return Taken::Late;
        }
        if self.windows.len() >= spec.max_windows {
            stats.over_limit += 1;
            return Taken::OverLimit;
        }
        let mut window = Window {
            aggregator: Aggregator::new(spec.bounds, ResetRules::default()),
            emitted: None,
            late: last <= watermark,
        };
        for (gauge, value) in self.gauges_before(start).into_iter().take(spec.max_keys) {
            window.aggregator.set_gauge(key_hash(hasher(), Family::Gauge, gauge.as_bytes()), &gauge, value);
        }
        aggregate(&mut window, spec, key, sample, stats);
        let taken = if window.late { Taken::Updated } else { Taken::Aggregated };
        self.windows.insert(start, window);
        taken
    }

    /// The gauges a window starting at `start` begins with.
    fn gauges_before(&self, start: Ticks) -> Vec<(String, f64)> {
        match self.windows.range(..start).next_back() {
            Some((_, previous)) => previous.aggregator.gauges().map(|(k, v)| (k.to_string(), v)).collect(),
            None => match &self.carried {
                Some((carried_start, gauges)) if *carried_start < start => gauges.clone(),
                _ => Vec::new(),
            },
        }
    }

    /// The watermark moved to `watermark`: windows it reached fire (`closed_by`), windows
    /// past their allowed lateness are dropped (with their pending update first).
    pub fn advance(&mut self, to: &mut Emit<'_>, watermark: Ticks, closed_by: ClosedBy) {
        let spec = to.spec;
        let mut dropped = Vec::new();
        for (start, window) in self.windows.iter_mut() {
            let last = last_of(*start, spec);
            if last > watermark {
                break;
            }
            let expired = last.saturating_add(spec.allowed_lateness) <= watermark;
            if window.emitted.is_none() || (window.late && expired) {
                emit(to, *start, window, closed_by, watermark);
            }
            if expired {
                dropped.push(*start);
            }
        }
        for start in dropped {
            if let Some(window) = self.windows.remove(&start)
                && self.carried.as_ref().is_none_or(|(carried, _)| *carried < start)
            {
                let gauges = window.aggregator.gauges().map(|(k, v)| (k.to_string(), v)).collect();
                self.carried = Some((start, gauges));
            }
        }
    }

    /// Emits the result of every window that took samples behind the watermark since its
    /// last one: RETRACT of that result and INSERT of the new, or the first INSERT.
    pub fn flush_late(&mut self, to: &mut Emit<'_>, watermark: Ticks, closed_by: ClosedBy) {
        for (start, window) in self.windows.iter_mut().filter(|(_, w)| w.late) {
            emit(to, *start, window, closed_by, watermark);
        }
    }

    pub fn late_pending(&self) -> bool {
        self.windows.values().any(|w| w.late)
    }

    /// The owner will not come back in time: every window without a result fires as it
    /// stands, marked as closed by timeout. Returns the last microsecond of the latest.
    pub fn time_out(&mut self, to: &mut Emit<'_>, watermark: Ticks) -> Option<Ticks> {
        let mut fired = None;
        for (start, window) in self.windows.iter_mut().filter(|(_, w)| w.emitted.is_none()) {
            emit(to, *start, window, ClosedBy::Timeout, watermark);
            fired = Some(last_of(*start, to.spec));
        }
        fired
    }
}

fn last_of(start: Ticks, spec: &StatsdSpec) -> Ticks {
    start.saturating_add(spec.interval).saturating_sub(1)
}

fn aggregate(window: &mut Window, spec: &StatsdSpec, key: &[u8], sample: &Sample<'_>, stats: &mut StatsdStats) {
    let hash = key_hash(hasher(), Family::of(sample.kind), key);
    let budget = KeyBudget::with_used(spec.max_keys, window.aggregator.keys());
    window.aggregator.set_bounds(spec.bounds);
    match window.aggregator.handle(hash, key, sample, &budget) {
        Outcome::Aggregated => stats.samples += 1,
        Outcome::KeyCapped => stats.key_capped += 1,
        Outcome::TimerValueDropped => {
            stats.samples += 1;
            stats.timer_values_dropped += 1;
        }
        Outcome::SetMemberDropped => stats.set_members_dropped += 1,
    }
}

/// Emits `window`'s result: RETRACT of the last one first, if any.
fn emit(to: &mut Emit<'_>, start: Ticks, window: &mut Window, closed_by: ClosedBy, watermark: Ticks) {
    let (spec, owner) = (to.spec, to.owner);
    let (revision, closed_by) = match window.emitted.take() {
        Some(Emitted { mut flush, window: mut bounds }) => {
            bounds.change = Change::Retract;
            let next = (bounds.revision.saturating_add(1), bounds.closed_by);
            flush.window = Some(bounds);
            to.out.push(flush);
            to.stats.retractions += 1;
            next
        }
        None => (0, closed_by),
    };
    let end = start.saturating_add(spec.interval);
    let mut flush = Flush::compute(window.aggregator.peek_flush(), &spec.thresholds);
    flush.source = owner.source.to_string();
    flush.flush_unix_ms = end.div_euclid(1_000);
    flush.interval_ms = u64::try_from(spec.interval / 1_000).unwrap_or(0);
    let bounds = FlushWindow {
        device: owner.device,
        start_unix_us: start,
        end_unix_us: end,
        change: Change::Insert,
        revision,
        closed_by,
        watermark_unix_us: watermark,
    };
    flush.window = Some(bounds.clone());
    window.emitted = Some(Emitted { flush: Flush { window: None, ..flush.clone() }, window: bounds });
    window.late = false;
    to.stats.results += 1;
    to.out.push(flush);
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlog_protocol::statsd::{Dialect, parse_packet};

    const S: Ticks = 1_000_000;

    fn spec() -> StatsdSpec {
        StatsdSpec {
            interval: 10 * S,
            thresholds: vec![90.0],
            allowed_lateness: 20 * S,
            timestamp_bound: 2 * S,
            max_keys: 100,
            bounds: Bounds { max_timer_values: 100, max_set_members: 100 },
            max_windows: 4,
            max_sources: 4,
        }
    }

    const OWNER: Owner<'static> = Owner { device: Some(7), source: "device-7" };

    static SPEC: std::sync::LazyLock<StatsdSpec> = std::sync::LazyLock::new(spec);

    fn to<'a>(stats: &'a mut StatsdStats, out: &'a mut Vec<Flush>) -> Emit<'a> {
        Emit { spec: &SPEC, owner: OWNER, stats, out }
    }

    /// Feeds each `(seconds, line)` (Etsy) at `watermark` seconds; returns what each sample did.
    fn feed(windows: &mut StatsdWindows, stats: &mut StatsdStats, watermark: i64, items: &[(i64, &str)]) -> Vec<Taken> {
        let mut taken = Vec::new();
        for (at, line) in items {
            for sample in parse_packet(line.as_bytes(), Dialect::Etsy) {
                let sample = sample.unwrap();
                let mut key = Vec::new();
                sample.key.write(&mut |piece| key.extend_from_slice(piece));
                taken.push(windows.handle(&spec(), at * S, &key, &sample, watermark * S, stats));
            }
        }
        taken
    }

    fn summary(out: &[Flush]) -> Vec<(i64, Change, u32, f64, Option<f64>)> {
        out.iter()
            .map(|f| {
                let w = f.window.as_ref().unwrap();
                (
                    w.start_unix_us / S,
                    w.change,
                    w.revision,
                    f.counters.get("c").copied().unwrap_or(0.0),
                    f.gauges.get("g").copied(),
                )
            })
            .collect()
    }

    #[test]
    fn windows_fire_once_when_the_watermark_reaches_their_end_and_late_samples_retract() {
        let (mut windows, mut stats, mut out) = (StatsdWindows::default(), StatsdStats::default(), Vec::new());
        let taken = feed(
            &mut windows,
            &mut stats,
            -1,
            &[(1, "c:1|c\ng:5|g"), (9, "c:2|c"), (12, "c:4|c\ng:+1|g"), (25, "c:8|c")],
        );
        assert!(taken.iter().all(|t| *t == Taken::Aggregated));
        windows.advance(&mut to(&mut stats, &mut out), 8 * S, ClosedBy::Completeness);
        assert!(out.is_empty(), "the watermark has not reached 10 s - 1 µs");
        windows.advance(&mut to(&mut stats, &mut out), 10 * S - 1, ClosedBy::Completeness);
        windows.advance(&mut to(&mut stats, &mut out), 20 * S, ClosedBy::Completeness);
        // The gauge carries into [10, 20) and its delta adds to it.
        assert_eq!(summary(&out), [(0, Change::Insert, 0, 3.0, Some(5.0)), (10, Change::Insert, 0, 4.0, Some(6.0))]);
        out.clear();
        // Late for [0, 10) (kept 20 s past its end): one update per block, however many samples.
        assert_eq!(feed(&mut windows, &mut stats, 20, &[(3, "c:10|c"), (4, "c:20|c")]), [Taken::Updated; 2]);
        windows.flush_late(&mut to(&mut stats, &mut out), 20 * S, ClosedBy::Completeness);
        assert_eq!(summary(&out), [(0, Change::Retract, 0, 3.0, Some(5.0)), (0, Change::Insert, 1, 33.0, Some(5.0))]);
        out.clear();
        // Past its lateness the window is gone: a late sample is refused.
        windows.advance(&mut to(&mut stats, &mut out), 30 * S, ClosedBy::Completeness);
        assert_eq!(summary(&out), [(20, Change::Insert, 0, 8.0, Some(6.0))]);
        assert_eq!(feed(&mut windows, &mut stats, 30, &[(5, "c:1|c")]), [Taken::Late]);
        // A window kept for lateness takes another update.
        assert_eq!(feed(&mut windows, &mut stats, 30, &[(15, "c:1|c")]), [Taken::Updated]);
        out.clear();
        windows.flush_late(&mut to(&mut stats, &mut out), 30 * S, ClosedBy::Completeness);
        assert_eq!(summary(&out), [(10, Change::Retract, 0, 4.0, Some(6.0)), (10, Change::Insert, 1, 5.0, Some(6.0))]);
        assert_eq!((stats.results, stats.retractions, stats.late), (5, 2, 1));
    }

    #[test]
    fn bounds_refuse_and_count_and_a_time_out_fires_what_stands() {
        let (mut windows, mut stats, mut out) = (StatsdWindows::default(), StatsdStats::default(), Vec::new());
        let items: Vec<(i64, &str)> = (0..5).map(|w| (w * 10, "c:1|c")).collect();
        let taken = feed(&mut windows, &mut stats, -1, &items);
        assert_eq!(taken.last(), Some(&Taken::OverLimit), "max_windows = 4");
        assert_eq!(stats.over_limit, 1);
        assert!(windows.has_unfired());
        let fired = windows.time_out(&mut to(&mut stats, &mut out), -S);
        assert_eq!(fired, Some(40 * S - 1));
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|f| f.window.as_ref().unwrap().closed_by == ClosedBy::Timeout));
        assert!(!windows.has_unfired());
        // A new window behind the watermark (within its lateness) fires with the block.
        let mut fresh = StatsdWindows::default();
        assert_eq!(feed(&mut fresh, &mut stats, 15, &[(5, "c:1|c")]), [Taken::Updated]);
        out.clear();
        fresh.flush_late(&mut to(&mut stats, &mut out), 15 * S, ClosedBy::Completeness);
        assert_eq!(summary(&out), [(0, Change::Insert, 0, 1.0, None)]);
        assert!(!fresh.late_pending());
    }

    #[test]
    fn stored_windows_read_back_to_the_same_results() {
        let (mut windows, mut stats) = (StatsdWindows::default(), StatsdStats::default());
        feed(&mut windows, &mut stats, -1, &[(1, "c:1|c:5|ms:7|ms|@0.5\ns:a|s\ns:b|s\ng:3|g")]);
        let mut stored: StatsdWindows = postcard::from_bytes(&postcard::to_allocvec(&windows).unwrap()).unwrap();
        feed(&mut windows, &mut stats, -1, &[(2, "c:1|c\ns:a|s\ns:c|s")]);
        feed(&mut stored, &mut stats, -1, &[(2, "c:1|c\ns:a|s\ns:c|s")]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        windows.advance(&mut to(&mut stats, &mut a), 10 * S, ClosedBy::Completeness);
        stored.advance(&mut to(&mut stats, &mut b), 10 * S, ClosedBy::Completeness);
        assert_eq!(a, b);
        assert_eq!(a[0].sets.get("s"), Some(&3));
        assert_eq!(a[0].timers["c"].count, 3.0);
    }
}
