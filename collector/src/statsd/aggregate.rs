//! The aggregation core: a pure state machine over parsed samples, with no clock, no IO and
//! no lock. Samples go in with [`Aggregator::handle`]; [`Aggregator::take_flush`] hands out
//! the interval's raw values and resets the state exactly as the reference's
//! `clear_metrics` does (counters to 0 or deleted, timers emptied, sets emptied, gauges
//! kept, or aged out by their TTL under `delete_gauges`).
//!
//! The live collector runs one per shard (keys spread by hash); the event-time aggregation
//! of agent samples runs one per device and window (`windows::statsd`), stored as plain data
//! ([`StoredAggregator`]) when its device's state leaves memory. Bounds: distinct keys come from a
//! [`KeyBudget`] shared by every shard, stored timer values and set members per key are
//! capped; what a bound refuses is reported to the caller, which counts it.

use driftlog_protocol::statsd::{MetricKind, Sample, SampleValue};
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How a sample aggregates: the reference keeps a map per family, so one name can be a
/// counter and a timer at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    Counter,
    Timer,
    Gauge,
    Set,
}

impl Family {
    pub fn of(kind: MetricKind) -> Family {
        match kind {
            MetricKind::Counter => Family::Counter,
            MetricKind::Gauge => Family::Gauge,
            MetricKind::Timer | MetricKind::Histogram | MetricKind::Distribution => Family::Timer,
            MetricKind::Set => Family::Set,
        }
    }
}

/// The distinct keys every shard may hold together (`statsd.max_keys`).
#[derive(Debug)]
pub struct KeyBudget {
    used: AtomicUsize,
    max: usize,
}

impl KeyBudget {
    pub fn new(max: usize) -> KeyBudget {
        KeyBudget { used: AtomicUsize::new(0), max }
    }

    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| (used < self.max).then_some(used + 1))
            .is_ok()
    }

    fn give_back(&self, keys: usize) {
        self.used.fetch_sub(keys, Ordering::Relaxed);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A budget of which `used` keys are taken (one aggregator's own, restored).
    pub fn with_used(max: usize, used: usize) -> KeyBudget {
        KeyBudget { used: AtomicUsize::new(used), max }
    }
}

/// Per-key bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Timer values stored per key and interval; later values still add to `count`.
    pub max_timer_values: usize,
    /// Distinct members per set and interval.
    pub max_set_members: usize,
}

/// The reference's reset rules (`deleteCounters`, `deleteTimers`, `deleteSets`,
/// `deleteGauges`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ResetRules {
    pub delete_counters: bool,
    pub delete_timers: bool,
    pub delete_sets: bool,
    pub delete_gauges: bool,
    /// `gaugesMaxTTL`: flushes a gauge survives without an update under `delete_gauges`.
    pub gauges_max_ttl: u32,
}

/// What [`Aggregator::handle`] did with a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Aggregated,
    /// A new key over the key budget: the sample was dropped.
    KeyCapped,
    /// A timer value over `max_timer_values` (its count still went up).
    TimerValueDropped,
    /// A new set member over `max_set_members`.
    SetMemberDropped,
}

#[derive(Clone, Debug)]
enum State {
    Counter(f64),
    Timer { values: Vec<f64>, count: f64 },
    Gauge { value: f64, ttl: Option<u32> },
    Set(HashSet<Box<[u8]>>),
}

#[derive(Debug)]
struct Entry {
    hash: u64,
    family: Family,
    key: Box<str>,
    state: State,
}

/// An [`Aggregator`]'s state as plain data (see [`Aggregator::to_stored`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredAggregator {
    entries: Vec<StoredEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredEntry {
    family: Family,
    key: String,
    state: StoredState,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum StoredState {
    Counter(f64),
    Timer { values: Vec<f64>, count: f64 },
    Gauge { value: f64, ttl: Option<u32> },
    Set(Vec<Vec<u8>>),
}

/// One interval's raw values, before statistics (see [`super::flush::Flush::compute`]).
#[derive(Debug, Default)]
pub struct RawFlush {
    pub counters: Vec<(Box<str>, f64)>,
    /// Key, values in arrival order, count (the sum of `1/rate`).
    pub timers: Vec<(Box<str>, Vec<f64>, f64)>,
    pub gauges: Vec<(Box<str>, f64)>,
    pub sets: Vec<(Box<str>, u64)>,
}

impl RawFlush {
    pub fn append(&mut self, other: RawFlush) {
        self.counters.extend(other.counters);
        self.timers.extend(other.timers);
        self.gauges.extend(other.gauges);
        self.sets.extend(other.sets);
    }
}

/// The substrings that keep a counter under `delete_counters` (the reference's own
/// counters, matched as it does, anywhere in the key).
const KEPT_COUNTERS: [&str; 3] = ["packets_received", "metrics_received", "bad_lines_seen"];

#[derive(Debug)]
pub struct Aggregator {
    table: HashTable<Entry>,
    bounds: Bounds,
    rules: ResetRules,
}

/// The hash of a `(family, key)`: the caller computes it once, to pick the shard and to
/// look the key up. Keyed per process (SipHash with random keys), since keys come from
/// unauthenticated packets.
pub fn key_hash(hasher: &RandomState, family: Family, key: &[u8]) -> u64 {
    let mut state = hasher.build_hasher();
    state.write_u8(family as u8);
    state.write(key);
    state.finish()
}

impl Aggregator {
    pub fn new(bounds: Bounds, rules: ResetRules) -> Aggregator {
        Aggregator { table: HashTable::new(), bounds, rules }
    }

    /// Applies new per-key bounds (a restored aggregator's, or a config change).
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = bounds;
    }

    /// Distinct `(family, key)`s held.
    pub fn keys(&self) -> usize {
        self.table.len()
    }

    /// Aggregates `sample` under its canonical `key` (`hash` from [`key_hash`] over
    /// `Family::of(sample.kind)` and `key`). Keys are sanitized StatsD keys, always ASCII.
    pub fn handle(&mut self, hash: u64, key: &[u8], sample: &Sample<'_>, budget: &KeyBudget) -> Outcome {
        let family = Family::of(sample.kind);
        let found = self.table.find_mut(hash, |e| e.family == family && e.key.as_bytes() == key);
        let entry = match found {
            Some(entry) => entry,
            None => {
                if !budget.try_take() {
                    return Outcome::KeyCapped;
                }
                let state = match family {
                    Family::Counter => State::Counter(0.0),
                    Family::Timer => State::Timer { values: Vec::new(), count: 0.0 },
                    // A gauge is created by its first value, whatever the sign.
                    Family::Gauge => State::Gauge { value: 0.0, ttl: None },
                    Family::Set => State::Set(HashSet::new()),
                };
                let key = String::from_utf8_lossy(key).into_owned().into_boxed_str();
                self.table.insert_unique(hash, Entry { hash, family, key, state }, |e| e.hash).into_mut()
            }
        };
        // Under `delete_gauges` every update (re)arms the gauge's TTL.
        let gauge_ttl = self.rules.delete_gauges.then_some(self.rules.gauges_max_ttl);
        apply(&mut entry.state, sample, self.bounds, gauge_ttl)
    }

    /// Sets a gauge outright, outside the key budget: the flush's own `statsd.timestamp_lag`.
    pub fn set_gauge(&mut self, hash: u64, key: &str, value: f64) {
        match self.table.find_mut(hash, |e| e.family == Family::Gauge && &*e.key == key) {
            Some(Entry { state: State::Gauge { value: current, .. }, .. }) => *current = value,
            _ => {
                let entry =
                    Entry { hash, family: Family::Gauge, key: key.into(), state: State::Gauge { value, ttl: None } };
                self.table.insert_unique(hash, entry, |e| e.hash);
            }
        }
    }

    /// The interval's values as they stand, without the reset: what an event-time window
    /// that may still take late samples reports.
    pub fn peek_flush(&self) -> RawFlush {
        let mut raw = RawFlush::default();
        for entry in self.table.iter() {
            let key = entry.key.clone();
            match &entry.state {
                State::Counter(value) => raw.counters.push((key, *value)),
                State::Timer { values, count } => raw.timers.push((key, values.clone(), *count)),
                State::Gauge { value, .. } => raw.gauges.push((key, *value)),
                State::Set(members) => raw.sets.push((key, members.len() as u64)),
            }
        }
        raw
    }

    /// Every gauge and its value.
    pub fn gauges(&self) -> impl Iterator<Item = (&str, f64)> {
        self.table.iter().filter_map(|entry| match entry.state {
            State::Gauge { value, .. } => Some((&*entry.key, value)),
            _ => None,
        })
    }

    /// The state as plain data, ordered by family and key, for storing it.
    pub fn to_stored(&self) -> StoredAggregator {
        let mut entries: Vec<StoredEntry> = self
            .table
            .iter()
            .map(|entry| {
                let state = match &entry.state {
                    State::Counter(value) => StoredState::Counter(*value),
                    State::Timer { values, count } => StoredState::Timer { values: values.clone(), count: *count },
                    State::Gauge { value, ttl } => StoredState::Gauge { value: *value, ttl: *ttl },
                    State::Set(members) => {
                        let mut members: Vec<Vec<u8>> = members.iter().map(|m| m.to_vec()).collect();
                        members.sort();
                        StoredState::Set(members)
                    }
                };
                StoredEntry { family: entry.family, key: entry.key.to_string(), state }
            })
            .collect();
        entries.sort_by(|a, b| (a.family as u8, &a.key).cmp(&(b.family as u8, &b.key)));
        StoredAggregator { entries }
    }

    /// An aggregator holding `stored`, its keys hashed with `hasher` (the caller's, which
    /// it passes to [`key_hash`] for every later sample).
    pub fn from_stored(
        stored: StoredAggregator,
        hasher: &RandomState,
        bounds: Bounds,
        rules: ResetRules,
    ) -> Aggregator {
        let mut aggregator = Aggregator::new(bounds, rules);
        for StoredEntry { family, key, state } in stored.entries {
            let hash = key_hash(hasher, family, key.as_bytes());
            let state = match state {
                StoredState::Counter(value) => State::Counter(value),
                StoredState::Timer { values, count } => State::Timer { values, count },
                StoredState::Gauge { value, ttl } => State::Gauge { value, ttl },
                StoredState::Set(members) => State::Set(members.into_iter().map(Vec::into_boxed_slice).collect()),
            };
            let entry = Entry { hash, family, key: key.into_boxed_str(), state };
            // Stored from an aggregator: no key twice.
            aggregator.table.insert_unique(hash, entry, |e| e.hash);
        }
        aggregator
    }

    /// The interval's values, then the reset. Deleted keys go back to `budget`.
    pub fn take_flush(&mut self, budget: &KeyBudget) -> RawFlush {
        let mut raw = RawFlush::default();
        for entry in self.table.iter_mut() {
            let key = entry.key.clone();
            match &mut entry.state {
                State::Counter(value) => raw.counters.push((key, *value)),
                State::Timer { values, count } => raw.timers.push((key, std::mem::take(values), *count)),
                State::Gauge { value, .. } => raw.gauges.push((key, *value)),
                State::Set(members) => raw.sets.push((key, members.len() as u64)),
            }
        }
        let before = self.table.len();
        let rules = self.rules;
        self.table.retain(|entry| reset(entry, &rules));
        budget.give_back(before - self.table.len());
        raw
    }
}

/// One sample into its key's state, with the reference's arithmetic (`stats.js`
/// `handlePacket`).
fn apply(state: &mut State, sample: &Sample<'_>, bounds: Bounds, gauge_ttl: Option<u32>) -> Outcome {
    let number = match sample.value {
        SampleValue::Number(value) => value,
        SampleValue::Member(_) => 0.0,
    };
    match state {
        State::Counter(counter) => {
            // `if (!counters[key]) counters[key] = 0`: a NaN counter starts over.
            if counter.is_nan() {
                *counter = 0.0;
            }
            // `Number(value) * (1 / sampleRate)`, in that order: the reciprocal rounds.
            *counter += number * (1.0 / sample.sample_rate);
        }
        State::Timer { values, count } => {
            *count += 1.0 / sample.sample_rate;
            if values.len() >= bounds.max_timer_values {
                return Outcome::TimerValueDropped;
            }
            values.push(number);
        }
        State::Gauge { value, ttl } => {
            // Added only to a gauge that is truthy in JavaScript (non-zero, not NaN).
            let truthy = *value != 0.0 && !value.is_nan();
            *value = if truthy && sample.gauge_delta { *value + number } else { number };
            if gauge_ttl.is_some() {
                *ttl = gauge_ttl;
            }
        }
        State::Set(members) => {
            let SampleValue::Member(member) = sample.value else { return Outcome::Aggregated };
            if !members.contains(member) {
                if members.len() >= bounds.max_set_members {
                    return Outcome::SetMemberDropped;
                }
                members.insert(member.into());
            }
        }
    }
    Outcome::Aggregated
}

/// The reference's `clear_metrics` for one entry; false deletes it.
fn reset(entry: &mut Entry, rules: &ResetRules) -> bool {
    match &mut entry.state {
        State::Counter(value) => {
            *value = 0.0;
            !rules.delete_counters || KEPT_COUNTERS.iter().any(|kept| entry.key.contains(kept))
        }
        State::Timer { values, count } => {
            values.clear();
            *count = 0.0;
            !rules.delete_timers
        }
        State::Set(members) => {
            *members = HashSet::new();
            !rules.delete_sets
        }
        State::Gauge { ttl, .. } => {
            // Only gauges with a TTL (updated under `delete_gauges`) age: each flush counts
            // it down and deletes the gauge below 1 (`gaugesTTL` in the reference); others,
            // like the flush's own `timestamp_lag`, persist.
            match ttl {
                Some(left) if rules.delete_gauges => {
                    *left = left.saturating_sub(1);
                    *left >= 1
                }
                _ => true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftlog_protocol::statsd::{Dialect, parse_packet};

    /// Aggregates `packet` (Etsy dialect) into `aggregator`; returns the outcomes.
    fn feed(aggregator: &mut Aggregator, budget: &KeyBudget, packet: &str) -> Vec<Outcome> {
        let hasher = hasher();
        parse_packet(packet.as_bytes(), Dialect::Etsy)
            .filter_map(Result::ok)
            .map(|sample| {
                let mut key = Vec::new();
                sample.key.write(&mut |piece| key.extend_from_slice(piece));
                let hash = key_hash(hasher, Family::of(sample.kind), &key);
                aggregator.handle(hash, &key, &sample, budget)
            })
            .collect()
    }

    /// One hasher for every call, as the live shards have.
    fn hasher() -> &'static RandomState {
        static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        HASHER.get_or_init(RandomState::new)
    }

    const BOUNDS: Bounds = Bounds { max_timer_values: 1_000, max_set_members: 1_000 };

    fn sorted<T: Clone>(items: &[(Box<str>, T)]) -> Vec<(String, T)> {
        let mut out: Vec<(String, T)> = items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn counters_gauges_timers_and_sets_follow_the_reference() {
        let budget = KeyBudget::new(100);
        let mut a = Aggregator::new(BOUNDS, ResetRules::default());
        feed(
            &mut a,
            &budget,
            "c:1|c\nc:2|c|@0.5\ng:-5|g\ng:+3|g\nz:0|g\nz:+4|g\nt:3|ms:1|ms|@0.1\ns:a|s\ns:b|s\ns:a|s\ns:1|s\ns:1.0|s",
        );
        let raw = a.take_flush(&budget);
        assert_eq!(sorted(&raw.counters), [("c".into(), 5.0)]);
        // -5 on a missing gauge sets it; +3 adds; a delta on a zero gauge sets it.
        assert_eq!(sorted(&raw.gauges), [("g".into(), -2.0), ("z".into(), 4.0)]);
        let (_, values, count) = &raw.timers[0];
        assert_eq!((values.as_slice(), *count), ([3.0, 1.0].as_slice(), 11.0));
        assert_eq!(sorted(&raw.sets), [("s".into(), 4)]);
        // After the flush: counters 0, timers empty, sets empty, gauges kept.
        let raw = a.take_flush(&budget);
        assert_eq!(sorted(&raw.counters), [("c".into(), 0.0)]);
        assert!(raw.timers[0].1.is_empty() && raw.timers[0].2 == 0.0);
        assert_eq!(sorted(&raw.gauges), [("g".into(), -2.0), ("z".into(), 4.0)]);
        assert_eq!(sorted(&raw.sets), [("s".into(), 0)]);
        assert_eq!(budget.used(), 5);
    }

    #[test]
    fn a_nan_counter_starts_over_and_rate_zero_adds_infinity() {
        let budget = KeyBudget::new(100);
        let mut a = Aggregator::new(BOUNDS, ResetRules::default());
        feed(&mut a, &budget, "c:0|c|@0");
        assert!(a.take_flush(&budget).counters[0].1.is_nan(), "0 × (1/0) is NaN, as in JavaScript");
        feed(&mut a, &budget, "c:Infinity|c\nc:-Infinity|c\nc:2|c");
        assert_eq!(a.take_flush(&budget).counters[0].1, 2.0);
        feed(&mut a, &budget, "c:1|c|@0");
        assert_eq!(a.take_flush(&budget).counters[0].1, f64::INFINITY);
    }

    #[test]
    fn delete_rules_and_gauge_ttl() {
        let rules = ResetRules {
            delete_counters: true,
            delete_timers: true,
            delete_sets: true,
            delete_gauges: true,
            gauges_max_ttl: 2,
        };
        let budget = KeyBudget::new(100);
        let mut a = Aggregator::new(BOUNDS, rules);
        feed(&mut a, &budget, "c:1|c\nmy.packets_received:1|c\nt:1|ms\ns:x|s\ng:1|g");
        let lag = key_hash(hasher(), Family::Gauge, b"statsd.timestamp_lag");
        a.set_gauge(lag, "statsd.timestamp_lag", 0.5);
        assert_eq!(a.take_flush(&budget).counters.len(), 2);
        // Second flush: idle counters, timers and sets are gone but the kept counter; the
        // gauge has one flush of TTL left; the lag gauge has no TTL.
        let raw = a.take_flush(&budget);
        assert_eq!(sorted(&raw.counters), [("my.packets_received".into(), 0.0)]);
        assert!(raw.timers.is_empty() && raw.sets.is_empty());
        assert_eq!(raw.gauges.len(), 2);
        let raw = a.take_flush(&budget);
        assert_eq!(sorted(&raw.gauges), [("statsd.timestamp_lag".into(), 0.5)]);
        assert_eq!(budget.used(), 1, "deleted keys go back to the budget (the lag gauge is outside it)");
    }

    #[test]
    fn bounds_refuse_and_report() {
        let budget = KeyBudget::new(2);
        let mut a = Aggregator::new(Bounds { max_timer_values: 2, max_set_members: 1 }, ResetRules::default());
        let outcomes = feed(&mut a, &budget, "t:1|ms\nt:2|ms\nt:3|ms\ns:a|s\ns:b|s\ns:a|s\nnew:1|c");
        use Outcome::*;
        assert_eq!(
            outcomes,
            [Aggregated, Aggregated, TimerValueDropped, Aggregated, SetMemberDropped, Aggregated, KeyCapped]
        );
        let raw = a.take_flush(&budget);
        assert_eq!(raw.timers[0].2, 3.0, "a dropped timer value still counts");
        assert_eq!(raw.timers[0].1.len(), 2);
    }
}
