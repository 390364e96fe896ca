//! The StatsD listener's counters: atomics the listeners add to, read by the driver into
//! `status.json` (and from there `status` and `/metrics`).

use driftlog_protocol::statsd::ErrorReason;
use driftlog_protocol::statsd::event::EventRefusal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why samples were dropped after they parsed (the `reason` of `dropped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dropped {
    /// A datagram longer than `max_packet_bytes` (all its samples).
    PacketTooLarge,
    /// The agent's queue to the outbox was full (`ingest.queue_events`).
    QueueFull,
    /// The agent was stopping.
    ShuttingDown,
}

impl Dropped {
    const ALL: [Dropped; 3] = [Dropped::PacketTooLarge, Dropped::QueueFull, Dropped::ShuttingDown];

    fn name(self) -> &'static str {
        match self {
            Dropped::PacketTooLarge => "packet_too_large",
            Dropped::QueueFull => "queue_full",
            Dropped::ShuttingDown => "shutting_down",
        }
    }
}

#[derive(Debug, Default)]
pub struct StatsdCounters {
    packets: AtomicU64,
    lines: AtomicU64,
    samples: AtomicU64,
    bad: [AtomicU64; ErrorReason::ALL.len()],
    refused: [AtomicU64; EventRefusal::ALL.len()],
    dropped: [AtomicU64; Dropped::ALL.len()],
}

/// The counters as `status.json` holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsdStatus {
    /// Datagrams received.
    pub packets: u64,
    /// Non-empty lines.
    pub lines: u64,
    /// Samples handed to the outbox (each one event).
    pub samples: u64,
    /// Samples refused, by reason: the parser's (as the collector's StatsD server names
    /// them) and what an event cannot carry (`empty_name`, `non_finite_value` ...).
    pub bad_samples: BTreeMap<String, u64>,
    /// Samples dropped after parsing, by reason.
    pub dropped: BTreeMap<String, u64>,
}

impl StatsdCounters {
    pub(super) fn packet(&self) {
        self.packets.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn line(&self) {
        self.lines.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn samples(&self, count: u64) {
        self.samples.fetch_add(count, Ordering::Relaxed);
    }

    pub(super) fn bad(&self, reason: ErrorReason) {
        self.bad[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn refused(&self, refusal: EventRefusal) {
        self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn dropped(&self, why: Dropped, count: u64) {
        self.dropped[why as usize].fetch_add(count, Ordering::Relaxed);
    }

    pub fn status(&self) -> StatsdStatus {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let nonzero = |(name, value): (&str, u64)| (value > 0).then(|| (name.to_string(), value));
        let bad = ErrorReason::ALL.iter().map(|r| (r.name(), load(&self.bad[r.index()])));
        let refused = EventRefusal::ALL.iter().map(|r| (r.name(), load(&self.refused[*r as usize])));
        StatsdStatus {
            packets: load(&self.packets),
            lines: load(&self.lines),
            samples: load(&self.samples),
            bad_samples: bad.chain(refused).filter_map(nonzero).collect(),
            dropped: Dropped::ALL
                .iter()
                .map(|d| (d.name(), load(&self.dropped[*d as usize])))
                .filter_map(nonzero)
                .collect(),
        }
    }
}
