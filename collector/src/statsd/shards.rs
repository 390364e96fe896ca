//! The live aggregation state: [`Aggregator`]s sharded by key hash, each behind its own
//! lock, so receive threads never share one lock. A receive thread parses a whole batch of
//! packets, sorts its samples by shard, and takes each shard's lock once per batch.
//!
//! The reference's own counters (`statsd.packets_received`, `metrics_received`,
//! `bad_lines_seen`) are atomics added into the flush; they land in the same `counters` map
//! as a user's counter of the same name, as in the reference.

use super::aggregate::{Aggregator, Bounds, Family, KeyBudget, Outcome, RawFlush, ResetRules, key_hash};
use super::telemetry::{Drop, Telemetry};
use super::timed::{TimedRecord, TimedSample, TimedSink, source_name};
use driftlog_protocol::statsd::{Dialect, ErrorReason, Sample, SampleValue, lines, parse_line};
use std::hash::RandomState;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Shards of the key space: enough that two receive threads rarely meet on one lock.
pub const SHARDS: usize = 16;

#[derive(Debug)]
pub struct Shards {
    shards: Box<[Mutex<Aggregator>]>,
    hasher: RandomState,
    budget: KeyBudget,
    dialect: Dialect,
    telemetry: Arc<Telemetry>,
    /// `|T` samples on their way to the log (aggregated by event time, not here).
    pub timed: TimedSink,
    packets_received: AtomicU64,
    metrics_received: AtomicU64,
    bad_lines_seen: AtomicU64,
}

/// A receive thread's scratch memory, reused from batch to batch.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Canonical keys that are not the packet's own bytes.
    arena: Vec<u8>,
}

/// Where a pending sample's key is.
#[derive(Clone, Copy, Debug)]
enum KeyAt<'a> {
    Packet(&'a [u8]),
    Arena(u32, u32),
}

#[derive(Debug)]
struct Pending<'a> {
    shard: u8,
    hash: u64,
    key: KeyAt<'a>,
    sample: Sample<'a>,
}

/// Appends a `|T` sample of `source` to `timed`, in a new record when the source changes.
fn push_timed(timed: &mut Vec<TimedRecord>, source: &str, family: Family, sample: &Sample<'_>, timestamp_s: i64) {
    let mut key = Vec::new();
    sample.key.write(&mut |piece| key.extend_from_slice(piece));
    let (value, member) = match sample.value {
        SampleValue::Number(value) => (value, Vec::new()),
        SampleValue::Member(member) => (0.0, member.to_vec()),
    };
    let stored = TimedSample {
        // Sanitized keys are ASCII.
        key: String::from_utf8_lossy(&key).into_owned(),
        family,
        value,
        member,
        gauge_delta: sample.gauge_delta,
        sample_rate: sample.sample_rate,
        timestamp_s,
    };
    match timed.last_mut() {
        Some(record) if record.source == source => record.samples.push(stored),
        _ => timed.push(TimedRecord {
            source: source.to_string(),
            received_unix_us: (crate::wall_clock::now_unix_ms() as i64).saturating_mul(1_000),
            samples: vec![stored],
        }),
    }
}

impl Shards {
    pub fn new(
        dialect: Dialect,
        bounds: Bounds,
        rules: ResetRules,
        max_keys: usize,
        max_timed_samples: usize,
        telemetry: Arc<Telemetry>,
    ) -> Shards {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(Aggregator::new(bounds, rules))).collect(),
            hasher: RandomState::new(),
            budget: KeyBudget::new(max_keys),
            dialect,
            telemetry,
            timed: TimedSink::new(max_timed_samples),
            packets_received: AtomicU64::new(0),
            metrics_received: AtomicU64::new(0),
            bad_lines_seen: AtomicU64::new(0),
        }
    }

    fn shard_of(hash: u64) -> u8 {
        // Bits 32..48: hashbrown indexes by the low bits and tags by the top seven, so the
        // shard comes from neither.
        ((((hash >> 32) & 0xffff) * SHARDS as u64) >> 16) as u8
    }

    /// Parses and aggregates `packets` (each one datagram or a run of complete stream lines,
    /// with its sender's address) from `transport`. Samples with a `|T` go to [`Self::timed`]
    /// instead, to be aggregated by their time.
    pub fn ingest<'a>(
        &self,
        transport: &'static str,
        packets: impl Iterator<Item = (&'a [u8], Option<IpAddr>)>,
        scratch: &mut Scratch,
    ) {
        scratch.arena.clear();
        let mut pending: Vec<Pending<'a>> = Vec::new();
        let mut timed: Vec<TimedRecord> = Vec::new();
        let (mut packet_count, mut line_count) = (0u64, 0u64);
        let mut bad = [0u64; ErrorReason::ALL.len()];
        let mut unusual_rates = 0;
        for (packet, sender) in packets {
            packet_count += 1;
            let mut timed_source: Option<String> = None;
            for line in lines(packet) {
                line_count += 1;
                for result in parse_line(line, self.dialect) {
                    let sample = match result {
                        Ok(sample) => sample,
                        Err(error) => {
                            bad[error.reason.index()] += 1;
                            continue;
                        }
                    };
                    if !(sample.sample_rate > 0.0 && sample.sample_rate <= 1.0) {
                        unusual_rates += 1;
                    }
                    let family = Family::of(sample.kind);
                    if let Some(timestamp_s) = sample.timestamp_s {
                        let source = timed_source.get_or_insert_with(|| source_name(sender));
                        push_timed(&mut timed, source, family, &sample, timestamp_s);
                        continue;
                    }
                    let (key, bytes) = match sample.key.as_plain() {
                        Some(plain) => (KeyAt::Packet(plain), plain),
                        None => {
                            let start = scratch.arena.len();
                            sample.key.write(&mut |piece| scratch.arena.extend_from_slice(piece));
                            let at = KeyAt::Arena(start as u32, (scratch.arena.len() - start) as u32);
                            (at, &scratch.arena[start..])
                        }
                    };
                    let hash = key_hash(&self.hasher, family, bytes);
                    pending.push(Pending { shard: Self::shard_of(hash), hash, key, sample });
                }
            }
        }
        // The samples' order by shard, stable: samples of one key keep their arrival order
        // (gauges depend on it). Indices, so the sort moves 4 bytes per sample, not a sample.
        let mut order: Vec<u32> = (0..pending.len() as u32).collect();
        order.sort_by_key(|&i| pending[i as usize].shard);
        let mut counts = [0u64; 4];
        for run in order.chunk_by(|&a, &b| pending[a as usize].shard == pending[b as usize].shard) {
            let mut shard =
                self.shards[usize::from(pending[run[0] as usize].shard)].lock().unwrap_or_else(|p| p.into_inner());
            for p in run.iter().map(|&i| &pending[i as usize]) {
                let key = match p.key {
                    KeyAt::Packet(bytes) => bytes,
                    KeyAt::Arena(start, len) => &scratch.arena[start as usize..(start + len) as usize],
                };
                let outcome = shard.handle(p.hash, key, &p.sample, &self.budget);
                counts[outcome as usize] += 1;
            }
        }
        let timed_samples: u64 = timed.iter().map(|r| r.samples.len() as u64).sum();
        if timed_samples > 0 {
            let full = self.timed.push(timed);
            self.telemetry.timed_samples.inc_by(timed_samples - full);
            if full > 0 {
                self.telemetry.dropped(Drop::TimedQueueFull, full);
            }
        }
        let bad_total: u64 = bad.iter().sum();
        self.packets_received.fetch_add(packet_count, Ordering::Relaxed);
        self.metrics_received.fetch_add(line_count, Ordering::Relaxed);
        self.bad_lines_seen.fetch_add(bad_total, Ordering::Relaxed);
        let t = &self.telemetry;
        t.packets(transport, packet_count);
        t.lines(line_count);
        t.samples(counts[Outcome::Aggregated as usize] + counts[Outcome::TimerValueDropped as usize]);
        for (reason, count) in ErrorReason::ALL.iter().zip(bad) {
            if count > 0 {
                t.bad(*reason, count);
            }
        }
        for (outcome, why) in [
            (Outcome::KeyCapped, Drop::KeyCap),
            (Outcome::TimerValueDropped, Drop::TimerValueCap),
            (Outcome::SetMemberDropped, Drop::SetMemberCap),
        ] {
            if counts[outcome as usize] > 0 {
                t.dropped(why, counts[outcome as usize]);
            }
        }
        if unusual_rates > 0 {
            t.unusual_sample_rates(unusual_rates);
        }
        t.keys.set(self.budget.used() as i64);
    }

    /// Counts a packet that never reached the parser (too large, truncated).
    pub fn count_unparsed_packet(&self, transport: &'static str) {
        self.packets_received.fetch_add(1, Ordering::Relaxed);
        self.telemetry.packets(transport, 1);
    }

    /// Takes every shard's interval and resets it. `timestamp_lag` is set first (from the
    /// second flush on, as the reference does) so it is part of this flush; the server's
    /// own counters are added under `prefix`.
    pub fn take_flush(&self, prefix: &str, timestamp_lag: Option<f64>) -> RawFlush {
        if let Some(lag) = timestamp_lag {
            let key = format!("{prefix}.timestamp_lag");
            let hash = key_hash(&self.hasher, Family::Gauge, key.as_bytes());
            self.shards[usize::from(Self::shard_of(hash))]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .set_gauge(hash, &key, lag);
        }
        let mut raw = RawFlush::default();
        for shard in self.shards.iter() {
            let part = shard.lock().unwrap_or_else(|p| p.into_inner()).take_flush(&self.budget);
            raw.append(part);
        }
        for (name, counter) in [
            ("bad_lines_seen", &self.bad_lines_seen),
            ("packets_received", &self.packets_received),
            ("metrics_received", &self.metrics_received),
        ] {
            let key = format!("{prefix}.{name}");
            let value = counter.swap(0, Ordering::Relaxed) as f64;
            match raw.counters.iter_mut().find(|(k, _)| **k == *key) {
                Some((_, existing)) => *existing += value,
                None => raw.counters.push((key.into(), value)),
            }
        }
        self.telemetry.keys.set(self.budget.used() as i64);
        raw
    }
}
