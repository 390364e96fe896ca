//! The endpoint's receivers are a bounded cache, per device and in total.
//!
//! A receiver holds a stream's dedup state in memory, but the caller's log holds the same
//! state durably (committed with the events). So a receiver with nothing in flight (no
//! admitted-but-uncommitted state, no ACK or NAK due) can leave memory at any time and come
//! back from the log on its stream's next frame: [`Endpoint::evict_idle`] drops those idle
//! for a while, and a new stream makes room by evicting its device's least recently active
//! idle receiver. When a frame's stream has no receiver, the caller's [`StreamStore`] says
//! whether the log knows it ([`Lookup`]); the endpoint never does IO itself.
//!
//! Bounds: at most `max_streams_per_device` receivers per device (one device cannot fill the
//! table, however many streams or epochs it makes up) and `max_streams` in total. A frame
//! that would need another receiver while every one of its device's (or, for the total,
//! any) is busy is rejected (`device_quota`, `too_many_streams`); the device retransmits.

use super::{Endpoint, Keyring, RECEIVER_RANGES, Slot, new_slot, receiver_seed};
use crate::ids::StreamKey;
use crate::receiver::{DedupState, Receiver};
use crate::wire::{Header, Reject};
use crate::{DeviceId, Instant, KeyId, Seq};
use core::time::Duration;

/// What the caller's log knows about a stream that has no receiver in memory.
// Returned once per restore and moved straight into a receiver: boxing would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Never seen: start from nothing.
    New,
    /// Its committed state.
    Restore(DedupState<RECEIVER_RANGES>),
    /// A finished epoch the log compacted away: everything the device could send of it was
    /// received, so every frame of it is a duplicate (and is acknowledged in full, so a
    /// device replaying it after a crash frees it).
    Finished,
    /// Refused by the caller's own bounds (persisted states per device, or in total).
    Refuse(Reject),
}

/// The caller's view of stream states that are not in memory (its log).
pub trait StreamStore {
    /// Called once an authenticated, non-replayed frame needs a receiver for `stream` that
    /// is not in memory. `header` is the frame's (its sending boot epoch, its key).
    fn lookup(&mut self, stream: &StreamKey, header: &Header) -> Lookup;
}

/// For callers that keep every receiver in memory (tests, the simulator): every stream the
/// endpoint does not hold is new.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStore;

impl StreamStore for NoStore {
    fn lookup(&mut self, _: &StreamKey, _: &Header) -> Lookup {
        Lookup::New
    }
}

/// Least time between two sweeps for room when the whole table is full (a sweep visits
/// every receiver).
const FULL_SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// A receiver idle this long may be evicted to make room in a full table.
const IDLE_FOR_ROOM: Duration = Duration::from_secs(1);

/// The dedup state of an epoch the log holds as finished: everything counts as received.
fn finished_state() -> DedupState<RECEIVER_RANGES> {
    let mut state = DedupState::default();
    state.cumulative = Seq::MAX;
    state
}

impl Slot {
    /// Nothing in flight: the log holds the state, and no ACK or NAK is due.
    fn is_evictable(&self) -> bool {
        !self.dirty && self.deadline.is_none()
    }
}

impl<K: Keyring> Endpoint<K> {
    /// Receivers held for `device`.
    pub fn device_stream_count(&self, device: DeviceId) -> usize {
        self.per_device.get(&device).map_or(0, |n| *n as usize)
    }

    /// Creates the receiver for `stream` (not in memory), making room first; `store` says
    /// what the log knows of it.
    pub(super) fn admit_stream(
        &mut self,
        now: Instant,
        stream: StreamKey,
        key_id: KeyId,
        header: &Header,
        store: &mut impl StreamStore,
    ) -> Result<(), Reject> {
        let state = match store.lookup(&stream, header) {
            Lookup::New => None,
            Lookup::Restore(state) => Some(state),
            Lookup::Finished => {
                self.stats.streams_finished += 1;
                Some(finished_state())
            }
            Lookup::Refuse(reason) => return Err(reason),
        };
        if self.device_stream_count(stream.device) >= self.config.max_streams_per_device
            && !self.evict_least_recent_of(stream.device)
        {
            return Err(Reject::DeviceQuota);
        }
        if self.slots.len() >= self.config.max_streams && !self.sweep_for_room(now) {
            return Err(Reject::TooManyStreams);
        }
        let mut slot = match state {
            None => new_slot(&self.config, stream, key_id),
            Some(state) => {
                self.stats.streams_restored += 1;
                let seed = receiver_seed(self.config.seed, &stream);
                let receiver =
                    Receiver::restore(self.config.receiver.clone(), stream.stream, stream.epoch, seed, state);
                Slot::new(receiver, key_id)
            }
        };
        slot.last_active = now;
        self.slots.insert(stream, slot);
        *self.per_device.entry(stream.device).or_insert(0) += 1;
        Ok(())
    }

    /// Drops every receiver idle for at least `idle_for` with nothing in flight (its state is
    /// in the caller's log); returns how many. Call it now and then (the collector: every
    /// second).
    pub fn evict_idle(&mut self, now: Instant, idle_for: Duration) -> usize {
        let idle: alloc::vec::Vec<StreamKey> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.is_evictable() && now.saturating_duration_since(slot.last_active) >= idle_for)
            .map(|(key, _)| *key)
            .collect();
        for stream in &idle {
            self.evict(*stream);
        }
        idle.len()
    }

    /// Evicts `device`'s least recently active evictable receiver, if it has one.
    fn evict_least_recent_of(&mut self, device: DeviceId) -> bool {
        let first = StreamKey { device, stream: 0, epoch: 0 };
        let last = StreamKey { device, stream: u32::MAX, epoch: u64::MAX };
        let oldest = self
            .slots
            .range(first..=last)
            .filter(|(_, slot)| slot.is_evictable())
            .min_by_key(|(_, slot)| slot.last_active)
            .map(|(key, _)| *key);
        oldest.map(|stream| self.evict(stream)).is_some()
    }

    /// A full table: evicts the receivers idle for a second or more (at most one sweep per
    /// [`FULL_SWEEP_INTERVAL`], since it visits them all). Whether there is room now.
    fn sweep_for_room(&mut self, now: Instant) -> bool {
        let due = self.last_full_sweep.is_none_or(|at| now.saturating_duration_since(at) >= FULL_SWEEP_INTERVAL);
        if due {
            self.last_full_sweep = Some(now);
            self.evict_idle(now, IDLE_FOR_ROOM);
        }
        self.slots.len() < self.config.max_streams
    }

    fn evict(&mut self, stream: StreamKey) {
        if let Some(slot) = self.slots.remove(&stream) {
            debug_assert!(slot.is_evictable(), "only receivers with nothing in flight leave memory");
            self.forget_device_slot(stream.device);
            self.stats.streams_evicted += 1;
        }
    }

    pub(super) fn forget_device_slot(&mut self, device: DeviceId) {
        if let Some(count) = self.per_device.get_mut(&device) {
            *count -= 1;
            if *count == 0 {
                self.per_device.remove(&device);
            }
        }
    }
}
