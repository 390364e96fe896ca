//! The acceptor's view of the stream states in the log, as the protocol endpoint's
//! [`StreamStore`]: a receiver that is not in memory (evicted while idle, or not restored yet
//! after a restart: restores are lazy, so a restart's memory does not grow with the number of
//! states) comes back from its committed state on its stream's next frame.
//!
//! It also bounds the states: at most `limits.max_stream_states_per_device` per device and
//! `limits.max_stream_states` in total; a frame that would start another is refused
//! (`device_quota`, `too_many_streams`: counted, `/health` degraded) and the device
//! retransmits. Finished epochs are compacted into a floor per `(device, stream)` (see
//! [`crate::log::streams`]), so reboots do not use the bound up.

use crate::log::Log;
use crate::log::streams::Floors;
use driftlog_protocol::endpoint::{Delivery, Lookup, Received, StreamStore};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::{Header, Reject};
use driftlog_protocol::{DeviceId, Epoch, StreamId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bounds on the stream states the log holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLimits {
    pub max_states: u64,
    pub max_states_per_device: u32,
}

/// Counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateStats {
    /// States the log holds.
    pub states: u64,
    /// `(device, stream)` pairs with a floor.
    pub floors: u64,
    /// States deleted because their epoch finished.
    pub compacted: u64,
    /// Lookups that failed to read the log (the frame was refused).
    pub read_errors: u64,
}

#[derive(Debug)]
pub struct StreamStates {
    log: Arc<Log>,
    limits: StateLimits,
    per_device: BTreeMap<DeviceId, u32>,
    floors: Floors,
    /// Floors raised since the last commit was cut: they go with the next one.
    pending: Floors,
    stats: StateStats,
}

impl StreamStates {
    /// Counts what the log holds (keys only: nothing is loaded into memory).
    pub fn open(log: Arc<Log>, limits: StateLimits) -> Result<StreamStates, crate::log::LogError> {
        let census = log.stream_census()?;
        let stats = StateStats { states: census.total(), floors: census.floors.len() as u64, ..StateStats::default() };
        Ok(StreamStates {
            log,
            limits,
            per_device: census.per_device,
            floors: census.floors,
            pending: Floors::new(),
            stats,
        })
    }

    pub fn stats(&self) -> StateStats {
        self.stats
    }

    /// Learns from an accepted frame: a heartbeat whose oldest held sequence number is above
    /// 0 says the device holds nothing of the stream's other epochs.
    pub fn observe(&mut self, received: &Received<'_>) {
        let Delivery::Heartbeat { heartbeat, .. } = &received.delivery else { return };
        if heartbeat.oldest_available == 0 {
            return;
        }
        let key = (received.stream.device, received.stream.stream);
        let epoch = received.stream.epoch;
        let raise = match self.floors.get(&key) {
            None => true,
            Some(&floor) if epoch > floor => true,
            // A boot below the floor (the agent's boot counter started over on a fresh
            // disk): its epochs are not the ones the floor covers.
            Some(&floor) => epoch < floor && received.header.epoch < floor,
        };
        if raise {
            self.floors.insert(key, epoch);
            self.pending.insert(key, epoch);
        }
    }

    /// The floors to commit with the next commit.
    pub fn take_floors(&mut self) -> Vec<((DeviceId, StreamId), Epoch)> {
        std::mem::take(&mut self.pending).into_iter().collect()
    }

    /// A commit failed: its floors go with the next one.
    pub fn restore_floors(&mut self, floors: Vec<((DeviceId, StreamId), Epoch)>) {
        for (key, epoch) in floors {
            self.pending.entry(key).or_insert(epoch);
        }
    }

    /// A commit stored (or compacted away) states: `changes` per device.
    pub fn committed(&mut self, changes: &[(DeviceId, i64)]) {
        for &(device, change) in changes {
            let count = self.per_device.entry(device).or_insert(0);
            *count = (i64::from(*count) + change).max(0) as u32;
            if change < 0 {
                self.stats.compacted += change.unsigned_abs();
            }
            if *count == 0 {
                self.per_device.remove(&device);
            }
        }
        self.stats.states = self.per_device.values().map(|n| u64::from(*n)).sum();
        self.stats.floors = self.floors.len() as u64;
    }
}

impl StreamStore for StreamStates {
    fn lookup(&mut self, stream: &StreamKey, header: &Header) -> Lookup {
        match self.log.stream_state(stream) {
            Ok(Some((_, state))) => return Lookup::Restore(state),
            Ok(None) => {}
            Err(error) => {
                self.stats.read_errors += 1;
                tracing::warn!(%error, "cannot read a stream state; the frame is refused and will be retransmitted");
                return Lookup::Refuse(Reject::TooManyStreams);
            }
        }
        if let Some(&floor) = self.floors.get(&(stream.device, stream.stream))
            && stream.epoch < floor
            && header.epoch >= floor
        {
            return Lookup::Finished;
        }
        if self.per_device.get(&stream.device).is_some_and(|n| *n >= self.limits.max_states_per_device) {
            return Lookup::Refuse(Reject::DeviceQuota);
        }
        if self.stats.states >= self.limits.max_states {
            return Lookup::Refuse(Reject::TooManyStreams);
        }
        Lookup::New
    }
}

/// What the acceptor keeps for the stream bounds: the log's states, the sweep of idle
/// receivers, and when a bound last refused an authenticated frame (`/health`).
#[derive(Debug)]
pub struct StreamBounds {
    pub states: StreamStates,
    /// Receivers idle this long leave memory.
    idle_after: std::time::Duration,
    next_sweep: std::time::Instant,
    refused: u64,
    refused_at_unix_ms: Option<u64>,
}

/// How often idle receivers are swept out.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl StreamBounds {
    pub fn new(states: StreamStates, idle_after: std::time::Duration) -> StreamBounds {
        StreamBounds { states, idle_after, next_sweep: std::time::Instant::now(), refused: 0, refused_at_unix_ms: None }
    }

    /// Evicts idle receivers, once a second.
    pub fn sweep<K: driftlog_protocol::endpoint::Keyring>(
        &mut self,
        endpoint: &mut driftlog_protocol::endpoint::Endpoint<K>,
        now: driftlog_protocol::Instant,
    ) {
        if std::time::Instant::now() < self.next_sweep {
            return;
        }
        self.next_sweep = std::time::Instant::now() + SWEEP_INTERVAL;
        endpoint.evict_idle(now, self.idle_after);
    }

    /// When a bound (`too_many_streams`, `device_quota`) last refused a frame, from the
    /// endpoint's counters (called with every snapshot).
    pub fn refused_at(&mut self, rejects: &driftlog_protocol::wire::RejectCounts, now_unix_ms: u64) -> Option<u64> {
        let refused = rejects.get(Reject::TooManyStreams) + rejects.get(Reject::DeviceQuota);
        if refused > self.refused {
            self.refused = refused;
            self.refused_at_unix_ms = Some(now_unix_ms);
        }
        self.refused_at_unix_ms
    }
}
