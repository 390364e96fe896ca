//! DogStatsD `|T` samples: lines that say when they happened. They are not aggregated by
//! arrival like the others; the receive threads hand them to a bounded [`TimedSink`], the
//! flush thread commits them to the log as `statsd_samples` records, and the window
//! pipeline aggregates them by their own time, per source address, in event-time windows
//! (`windows::statsd`): deterministic and replayable, as everything the pipeline computes.
//!
//! A line carries no device, so its source is the sender's IP address (`ip-10-0-0-5`, a
//! NATS subject token), or `unix` for the Unix sockets: one series of windows per sending
//! host, closed a bound after their end by the collector clock (the pipeline's processing
//! time), since nothing says when a source's samples are complete.

use super::aggregate::Family;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Mutex;

/// One `|T` sample as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimedSample {
    /// The canonical key (tags folded in as the dialect folds them).
    pub key: String,
    pub family: Family,
    /// The number (0 for a set member).
    pub value: f64,
    /// A set's member (empty for other families).
    pub member: Vec<u8>,
    pub gauge_delta: bool,
    pub sample_rate: f64,
    /// `|T`: Unix seconds.
    pub timestamp_s: i64,
}

/// A `statsd_samples` record: samples of one source received together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimedRecord {
    pub source: String,
    /// When the collector received them, µs since 1970.
    pub received_unix_us: i64,
    pub samples: Vec<TimedSample>,
}

/// The source name of a sender: `ip-` and its address with `.` and `:` made `-`, or `unix`.
pub fn source_name(address: Option<IpAddr>) -> String {
    match address {
        Some(ip) => {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            format!("ip-{}", ip.to_string().replace(['.', ':'], "-"))
        }
        None => "unix".to_string(),
    }
}

/// Samples waiting for the flush thread, bounded.
#[derive(Debug)]
pub struct TimedSink {
    /// The records waiting, and how many samples they hold.
    pending: Mutex<(Vec<TimedRecord>, usize)>,
    max_samples: usize,
}

impl TimedSink {
    pub fn new(max_samples: usize) -> TimedSink {
        TimedSink { pending: Mutex::new((Vec::new(), 0)), max_samples }
    }

    /// Adds `records`; returns how many samples did not fit the bound (dropped, the caller
    /// counts them).
    pub fn push(&self, records: Vec<TimedRecord>) -> u64 {
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (pending, held) = &mut *guard;
        let mut dropped = 0;
        for mut record in records {
            let room = self.max_samples.saturating_sub(*held);
            if record.samples.len() > room {
                dropped += (record.samples.len() - room) as u64;
                record.samples.truncate(room);
            }
            if record.samples.is_empty() {
                continue;
            }
            *held += record.samples.len();
            pending.push(record);
        }
        dropped
    }

    /// Everything waiting, oldest first.
    pub fn take(&self) -> Vec<TimedRecord> {
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        guard.1 = 0;
        std::mem::take(&mut guard.0)
    }

    /// Puts back what could not be committed, ahead of what arrived meanwhile, within the
    /// bound (the oldest beyond it are dropped); returns how many samples were dropped.
    pub fn put_back(&self, mut records: Vec<TimedRecord>) -> u64 {
        let newer = self.take();
        records.extend(newer);
        let total: usize = records.iter().map(|r| r.samples.len()).sum();
        let mut excess = total.saturating_sub(self.max_samples);
        let mut dropped = 0;
        records.retain_mut(|record| {
            if excess == 0 {
                return true;
            }
            let cut = excess.min(record.samples.len());
            record.samples.drain(..cut);
            excess -= cut;
            dropped += cut as u64;
            !record.samples.is_empty()
        });
        self.push(records) + dropped
    }
}

/// Splits records into pieces of at most about `max_bytes` encoded (a log block bounds a
/// record).
pub fn split_for_log(records: Vec<TimedRecord>, max_bytes: usize) -> Vec<TimedRecord> {
    let mut out = Vec::new();
    for TimedRecord { source, received_unix_us, samples } in records {
        let empty = || TimedRecord { source: source.clone(), received_unix_us, samples: Vec::new() };
        let mut piece = empty();
        let mut bytes = 0;
        for sample in samples {
            let size = sample.key.len() + sample.member.len() + 40;
            if !piece.samples.is_empty() && bytes + size > max_bytes {
                out.push(std::mem::replace(&mut piece, empty()));
                bytes = 0;
            }
            bytes += size;
            piece.samples.push(sample);
        }
        if !piece.samples.is_empty() {
            out.push(piece);
        }
    }
    out
}

/// A `statsd_samples` record's body (after the kind byte).
pub fn decode_record(bytes: &[u8]) -> Option<TimedRecord> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: &str, n: usize) -> TimedRecord {
        let sample = TimedSample {
            key: "k".into(),
            family: Family::Counter,
            value: 1.0,
            member: Vec::new(),
            gauge_delta: false,
            sample_rate: 1.0,
            timestamp_s: 1,
        };
        TimedRecord { source: source.into(), received_unix_us: 5, samples: vec![sample; n] }
    }

    #[test]
    fn sources_are_subject_tokens() {
        assert_eq!(source_name(Some("10.0.0.5".parse().unwrap())), "ip-10-0-0-5");
        assert_eq!(source_name(Some("::ffff:10.0.0.5".parse().unwrap())), "ip-10-0-0-5");
        assert_eq!(source_name(Some("2001:db8::1".parse().unwrap())), "ip-2001-db8--1");
        assert_eq!(source_name(None), "unix");
    }

    #[test]
    fn the_sink_is_bounded_and_keeps_the_newest_when_put_back() {
        let sink = TimedSink::new(10);
        assert_eq!(sink.push(vec![record("a", 6), record("b", 6)]), 2);
        let taken = sink.take();
        assert_eq!(taken.iter().map(|r| r.samples.len()).sum::<usize>(), 10);
        assert_eq!(sink.push(vec![record("c", 3)]), 0);
        // 10 taken and put back + 3 newer: the 3 oldest go.
        assert_eq!(sink.put_back(taken), 3);
        let back = sink.take();
        assert_eq!(back.iter().map(|r| r.samples.len()).sum::<usize>(), 10);
        assert_eq!(back.last().map(|r| r.source.as_str()), Some("c"));
    }

    #[test]
    fn records_are_split_to_fit_a_block_and_keep_their_source() {
        let pieces = split_for_log(vec![record("a", 100), record("b", 1)], 41 * 10);
        assert!(pieces.len() > 2);
        assert!(pieces.iter().all(|p| p.samples.len() <= 10));
        assert_eq!(pieces.iter().filter(|p| p.source == "a").map(|p| p.samples.len()).sum::<usize>(), 100);
        assert_eq!(pieces.last().map(|p| p.source.as_str()), Some("b"));
        let bytes = postcard::to_allocvec(&pieces[0]).unwrap();
        assert_eq!(decode_record(&bytes), Some(pieces[0].clone()));
    }
}
