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

use crate::log::streams::{Floors, StateChanges};
use crate::log::{Dedup, Log, LogError};
use driftlog_protocol::endpoint::{Delivery, Lookup, Received, StreamStore};
use driftlog_protocol::ids::StreamKey;
use driftlog_protocol::wire::{Header, Reject};
use driftlog_protocol::{DeviceId, Epoch, KeyId, StreamId};
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

/// Where committed stream states are read from: the log (a disk read), or a map in the
/// ingest core's unit tests.
pub trait CommittedStates: Send + Sync + std::fmt::Debug {
    fn stream_state(&self, stream: &StreamKey) -> Result<Option<(KeyId, Dedup)>, LogError>;
}

impl CommittedStates for Log {
    fn stream_state(&self, stream: &StreamKey) -> Result<Option<(KeyId, Dedup)>, LogError> {
        Log::stream_state(self, stream)
    }
}

#[derive(Debug)]
pub struct StreamStates {
    log: Arc<dyn CommittedStates>,
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

    /// No states, no floors: a fresh log read through `log`.
    pub fn empty(log: Arc<dyn CommittedStates>, limits: StateLimits) -> StreamStates {
        StreamStates {
            log,
            limits,
            per_device: BTreeMap::new(),
            floors: Floors::new(),
            pending: Floors::new(),
            stats: StateStats::default(),
        }
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

    /// Whether raised floors wait for a commit (a commit is cut for them alone if need be).
    pub fn has_pending_floors(&self) -> bool {
        !self.pending.is_empty()
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

    /// A commit stored (or compacted away) states.
    pub fn committed(&mut self, changes: &StateChanges) {
        self.stats.compacted += changes.compacted;
        for &(device, change) in &changes.per_device {
            let count = self.per_device.entry(device).or_insert(0);
            *count = (i64::from(*count) + change).max(0) as u32;
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
    next_sweep: driftlog_protocol::Instant,
    refused: u64,
    refused_at_unix_ms: Option<u64>,
}

/// How often idle receivers are swept out.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl StreamBounds {
    pub fn new(states: StreamStates, idle_after: std::time::Duration) -> StreamBounds {
        StreamBounds {
            states,
            idle_after,
            next_sweep: driftlog_protocol::Instant::ZERO,
            refused: 0,
            refused_at_unix_ms: None,
        }
    }

    /// Evicts idle receivers, once a second.
    pub fn sweep<K: driftlog_protocol::endpoint::Keyring>(
        &mut self,
        endpoint: &mut driftlog_protocol::endpoint::Endpoint<K>,
        now: driftlog_protocol::Instant,
    ) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Commit, LogConfig};
    use driftlog_protocol::endpoint::{Endpoint, EndpointConfig};
    use driftlog_protocol::receiver::DedupState;
    use driftlog_protocol::wire::{ControlRef, HeartbeatRepr, MacKey, Sealer, seal_control};
    use std::collections::BTreeMap;

    const LIMITS: StateLimits = StateLimits { max_states: 100, max_states_per_device: 3 };

    fn log() -> (tempfile::TempDir, Arc<Log>) {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(&dir.path().join("log.redb"), LogConfig::default()).unwrap());
        (dir, log)
    }

    fn state(cumulative: u64) -> DedupState<32> {
        let mut state = DedupState::default();
        state.cumulative = cumulative;
        state
    }

    fn key(device: u64, stream: u32, epoch: u64) -> StreamKey {
        StreamKey { device, stream, epoch }
    }

    fn header(epoch: u64) -> Header {
        Header {
            kind: driftlog_protocol::wire::FrameKind::Data,
            key_id: 1,
            epoch,
            sent_at: driftlog_protocol::Instant::ZERO,
        }
    }

    /// Commits `streams` (and the floors `states` has pending) as the acceptor does.
    fn commit(log: &Log, states: &mut StreamStates, streams: &[StreamKey]) {
        let commit = Commit {
            streams: streams.iter().map(|k| (*k, 1, state(5))).collect(),
            floors: states.take_floors(),
            ..Commit::default()
        };
        let committed = log.commit(&commit, 0).unwrap();
        states.committed(&committed.stream_states);
    }

    /// A heartbeat of `(device 7, stream 0, epoch)` sent by boot `boot`, as the endpoint
    /// delivers it.
    fn heartbeat(states: &mut StreamStates, epoch: u64, boot: u64, oldest: u64) {
        let mut sealer = Sealer::new(1, MacKey::new(&[3; 32]), boot);
        let repr = HeartbeatRepr {
            stream: 0,
            epoch,
            oldest_available: oldest,
            next_seq: oldest,
            wall_now: None,
            ack_timing: None,
            assigned_end: oldest,
            held_epochs_back: 0,
            draining: false,
        };
        let mut buf = [0u8; 128];
        let len = seal_control(
            &mut sealer,
            driftlog_protocol::Instant::from_micros(boot),
            ControlRef::Heartbeat(&repr),
            &mut buf,
        )
        .unwrap();
        let keys: BTreeMap<u32, (u64, MacKey)> = BTreeMap::from([(1, (7, MacKey::new(&[3; 32])))]);
        let mut endpoint = Endpoint::new(EndpointConfig::new(1, 1), keys);
        let received = endpoint.handle_datagram(driftlog_protocol::Instant::from_micros(1), &buf[..len]).unwrap();
        states.observe(&received);
    }

    #[test]
    fn states_come_back_and_new_ones_are_bounded_per_device_and_in_total() {
        let (_dir, log) = log();
        let mut states = StreamStates::open(log.clone(), LIMITS).unwrap();
        commit(&log, &mut states, &[key(7, 0, 1), key(7, 1, 1), key(7, 2, 1)]);
        assert_eq!(states.stats().states, 3);
        assert_eq!(states.lookup(&key(7, 0, 1), &header(1)), Lookup::Restore(state(5)));
        assert_eq!(states.lookup(&key(7, 3, 1), &header(1)), Lookup::Refuse(Reject::DeviceQuota));
        assert_eq!(states.lookup(&key(8, 0, 1), &header(1)), Lookup::New, "another device is not affected");
        // The counts come back from the log after a restart.
        let reopened = StreamStates::open(log.clone(), LIMITS).unwrap();
        assert_eq!(reopened.stats().states, 3);
        let mut full = StreamStates::open(log, StateLimits { max_states: 3, max_states_per_device: 3 }).unwrap();
        assert_eq!(full.lookup(&key(9, 0, 1), &header(1)), Lookup::Refuse(Reject::TooManyStreams));
    }

    #[test]
    fn a_heartbeat_past_the_old_epochs_compacts_them_and_their_replays_are_finished() {
        let (_dir, log) = log();
        let mut states = StreamStates::open(log.clone(), LIMITS).unwrap();
        commit(&log, &mut states, &[key(7, 0, 10), key(7, 0, 11), key(7, 1, 10)]);
        // Boot 12's heartbeat with its oldest held sequence number at 0 says nothing yet.
        heartbeat(&mut states, 12, 12, 0);
        assert!(!states.has_pending_floors());
        // Above 0: the device holds nothing of stream 0's earlier epochs.
        heartbeat(&mut states, 12, 12, 4);
        assert!(states.has_pending_floors());
        commit(&log, &mut states, &[key(7, 0, 12)]);
        assert_eq!(states.stats().compacted, 2);
        assert_eq!(states.stats().states, 2, "stream 0 at epoch 12, stream 1 untouched");
        assert!(log.stream_state(&key(7, 0, 10)).unwrap().is_none());
        assert!(log.stream_state(&key(7, 1, 10)).unwrap().is_some(), "another stream keeps its epochs");
        // A boot at or above the floor resending epoch 10 (release records lost in a crash):
        // all duplicates. A device whose boot counter started over below the floor (a fresh
        // disk) starts new streams instead.
        assert_eq!(states.lookup(&key(7, 0, 10), &header(13)), Lookup::Finished);
        assert_eq!(states.lookup(&key(7, 0, 3), &header(3)), Lookup::New);
        // That reinstalled device's own heartbeat lowers the floor to its epochs.
        heartbeat(&mut states, 3, 3, 2);
        assert!(states.has_pending_floors());
        // A late heartbeat of an older epoch from a boot above the floor changes nothing.
        let mut again = StreamStates::open(log.clone(), LIMITS).unwrap();
        heartbeat(&mut again, 11, 12, 9);
        assert!(!again.has_pending_floors());
    }
}
