//! The collector side of the protocol for a whole fleet (feature `alloc`).
//!
//! Authenticates each datagram against the keyring, filters replays per key and epoch,
//! routes it to the [`Receiver`] of its `(device, stream, epoch)` (created on first sight, up
//! to `max_streams`), and schedules the ACKs and NAKs of all receivers. Still sans-IO: the
//! caller passes datagrams and `now` in, and takes sealed datagrams out with the device they
//! are for.

mod bounds;

pub use bounds::{Lookup, NoStore, StreamStore};

use crate::ids::StreamKey;
use crate::receiver::{Control, DedupState, Receiver, ReceiverConfig};
use crate::wire::{
    Body, ControlRef, DataFrame, Direction, DropReason, Event, Header, HeartbeatRepr, MacKey, Reject, RejectCounts,
    ReplayGuard, Sealer, open, seal_control,
};
use crate::{DeviceId, Epoch, Instant, KeyId, Seq, SeqRange};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::time::Duration;

/// Out-of-order ranges per receiver.
pub const RECEIVER_RANGES: usize = 32;
const REPLAY_EPOCHS: usize = 4;
const REPLAY_VALUES: usize = 256;

/// Looks up pre-shared keys by the id in a frame header.
pub trait Keyring {
    fn key(&self, key_id: KeyId) -> Option<(DeviceId, &MacKey)>;
}

impl Keyring for BTreeMap<KeyId, (DeviceId, MacKey)> {
    fn key(&self, key_id: KeyId) -> Option<(DeviceId, &MacKey)> {
        self.get(&key_id).map(|(device, key)| (*device, key))
    }
}

#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub max_datagram_bytes: usize,
    /// Bound on receivers held at once. Idle ones make room (see [`bounds`]); a frame for
    /// another stream while none is idle is rejected (`too_many_streams`) and the device
    /// retransmits later.
    pub max_streams: usize,
    /// Bound on one device's receivers: its least recently active idle one makes room, and
    /// without one the frame is rejected (`device_quota`).
    pub max_streams_per_device: usize,
    pub receiver: ReceiverConfig,
    /// Frames delayed more than this behind newer ones from the same key are replays.
    pub replay_window: Duration,
    /// The collector's own boot epoch, in the header of every ACK and NAK.
    pub epoch: Epoch,
    /// Seeds every receiver's NAK jitter.
    pub seed: u64,
}

impl EndpointConfig {
    pub fn new(epoch: Epoch, seed: u64) -> EndpointConfig {
        EndpointConfig {
            max_datagram_bytes: 1_472,
            max_streams: 100_000,
            max_streams_per_device: 256,
            receiver: ReceiverConfig::default(),
            replay_window: Duration::from_secs(10),
            epoch,
            seed,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub datagrams_accepted: u64,
    pub rejects: RejectCounts,
    pub events_new: u64,
    pub events_duplicate: u64,
    pub tombstoned: u64,
    pub unrecoverable: u64,
    pub acks_sent: u64,
    pub naks_sent: u64,
    /// Receivers dropped from memory (idle; their state is in the caller's log).
    pub streams_evicted: u64,
    /// Receivers brought back from the caller's log for a frame of their stream.
    pub streams_restored: u64,
    /// Frames of epochs the caller's log holds as finished (all duplicates).
    pub streams_finished: u64,
}

/// What an accepted datagram brought.
#[derive(Clone, Debug)]
pub struct Received<'a> {
    pub stream: StreamKey,
    pub header: Header,
    pub delivery: Delivery<'a>,
}

#[derive(Clone, Debug)]
pub enum Delivery<'a> {
    /// `new` lists the pieces of the frame's range seen for the first time: deliver exactly
    /// the events in them (see [`Received::new_events`]). The frame's events were validated
    /// when it was opened and are decoded again only if asked for: a collector that stores
    /// a wholly new frame's event bytes as they came never decodes them twice.
    Events {
        frame: DataFrame<'a>,
        new: Vec<SeqRange>,
    },
    Tombstone {
        new: Vec<SeqRange>,
        reason: DropReason,
    },
    Heartbeat {
        heartbeat: HeartbeatRepr,
        unrecoverable: Vec<SeqRange>,
    },
}

impl<'a> Received<'a> {
    /// The events to deliver: those of the frame not delivered before, with their seqs.
    pub fn new_events(&self) -> impl Iterator<Item = (Seq, Event<'a>)> + '_ {
        let (events, new) = match &self.delivery {
            Delivery::Events { frame, new } => (Some(frame.events()), new.as_slice()),
            _ => (None, &[][..]),
        };
        events.into_iter().flatten().filter(move |(seq, _)| new.iter().any(|r| r.contains(*seq)))
    }
}

/// A sealed ACK or NAK for `device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub device: DeviceId,
    pub len: usize,
}

#[derive(Debug)]
struct Slot {
    receiver: Receiver<RECEIVER_RANGES>,
    key_id: KeyId,
    /// The receiver's deadline as filed in `Endpoint::timers`.
    deadline: Option<Instant>,
    /// Whether the stream is in `Endpoint::dirty`.
    dirty: bool,
    /// The last frame for this stream (eviction picks the least recent).
    last_active: Instant,
}

impl Slot {
    fn new(receiver: Receiver<RECEIVER_RANGES>, key_id: KeyId) -> Slot {
        Slot { receiver, key_id, deadline: None, dirty: false, last_active: Instant::ZERO }
    }

    /// Files the receiver's next deadline in `timers` (a no-op when it did not move, which is
    /// the common case: one ACK delay covers many frames).
    fn reschedule(&mut self, stream: StreamKey, timers: &mut BTreeSet<(Instant, StreamKey)>) {
        let deadline = self.receiver.poll_timeout();
        if deadline == self.deadline {
            return;
        }
        if let Some(old) = self.deadline {
            timers.remove(&(old, stream));
        }
        if let Some(new) = deadline {
            timers.insert((new, stream));
        }
        self.deadline = deadline;
    }
}

/// A receiver for a stream seen for the first time. Out of line: built inline, its
/// temporaries made every datagram's stack frame 35 KB instead of 16 KB, and the stack probe
/// touches such a frame page by page.
#[cold]
#[inline(never)]
fn new_slot(config: &EndpointConfig, stream: StreamKey, key_id: KeyId) -> Slot {
    let seed = receiver_seed(config.seed, &stream);
    Slot::new(Receiver::new(config.receiver.clone(), stream.stream, stream.epoch, seed), key_id)
}

fn receiver_seed(config_seed: u64, stream: &StreamKey) -> u64 {
    let mut rng = crate::SplitMix64::new(
        config_seed ^ stream.device.rotate_left(17) ^ stream.epoch.rotate_left(41) ^ u64::from(stream.stream),
    );
    rng.next_u64()
}

#[derive(Debug)]
pub struct Endpoint<K: Keyring> {
    config: EndpointConfig,
    keyring: K,
    slots: BTreeMap<StreamKey, Slot>,
    replay: BTreeMap<KeyId, ReplayGuard<REPLAY_EPOCHS, REPLAY_VALUES>>,
    sealers: BTreeMap<KeyId, Sealer>,
    timers: BTreeSet<(Instant, StreamKey)>,
    /// Receivers whose admitted state is ahead of their durable state.
    dirty: BTreeSet<StreamKey>,
    /// Receivers held per device (see [`bounds`]).
    per_device: BTreeMap<DeviceId, u32>,
    last_full_sweep: Option<Instant>,
    stats: EndpointStats,
}

impl<K: Keyring> Endpoint<K> {
    pub fn new(config: EndpointConfig, keyring: K) -> Self {
        Endpoint {
            config,
            keyring,
            slots: BTreeMap::new(),
            replay: BTreeMap::new(),
            sealers: BTreeMap::new(),
            timers: BTreeSet::new(),
            dirty: BTreeSet::new(),
            per_device: BTreeMap::new(),
            last_full_sweep: None,
            stats: EndpointStats::default(),
        }
    }

    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    pub fn stream_count(&self) -> usize {
        self.slots.len()
    }

    /// The key id the stream's frames were last authenticated with.
    pub fn key_id(&self, stream: &StreamKey) -> Option<KeyId> {
        self.slots.get(stream).map(|slot| slot.key_id)
    }

    pub fn receiver(&self, stream: &StreamKey) -> Option<&Receiver<RECEIVER_RANGES>> {
        self.slots.get(stream).map(|slot| &slot.receiver)
    }

    /// Re-creates a receiver from its committed state (after a collector restart).
    pub fn restore(&mut self, stream: StreamKey, key_id: KeyId, state: DedupState<RECEIVER_RANGES>) {
        let seed = receiver_seed(self.config.seed, &stream);
        let receiver = Receiver::restore(self.config.receiver.clone(), stream.stream, stream.epoch, seed, state);
        match self.slots.insert(stream, Slot::new(receiver, key_id)) {
            Some(old) => {
                if let Some(deadline) = old.deadline {
                    self.timers.remove(&(deadline, stream));
                }
            }
            None => *self.per_device.entry(stream.device).or_insert(0) += 1,
        }
        self.dirty.remove(&stream);
    }

    /// Handles one datagram from a device. Rejections are counted and change nothing else.
    /// Every receiver stays in memory until evicted; a caller that evicts them passes its
    /// log to [`Self::handle_datagram_with`] instead.
    pub fn handle_datagram<'a>(&mut self, now: Instant, datagram: &'a [u8]) -> Result<Received<'a>, Reject> {
        self.handle_datagram_with(now, datagram, &mut NoStore)
    }

    /// [`Self::handle_datagram`], with `store` consulted for a stream that has no receiver in
    /// memory (evicted, or held by the log from before a restart).
    pub fn handle_datagram_with<'a>(
        &mut self,
        now: Instant,
        datagram: &'a [u8],
        store: &mut impl StreamStore,
    ) -> Result<Received<'a>, Reject> {
        let result = self.accept(now, datagram, store);
        match &result {
            Ok(_) => self.stats.datagrams_accepted += 1,
            Err(reason) => self.stats.rejects.record(*reason),
        }
        result
    }

    fn accept<'a>(
        &mut self,
        now: Instant,
        datagram: &'a [u8],
        store: &mut impl StreamStore,
    ) -> Result<Received<'a>, Reject> {
        let keyring = &self.keyring;
        // The key's device is noted while `open` looks the key up: one keyring lookup.
        let mut device = None;
        let opened = open(datagram, Direction::FromDevice, self.config.max_datagram_bytes, |id| {
            keyring.key(id).map(|(owner, key)| {
                device = Some(owner);
                key
            })
        })?;
        let header = opened.header;
        let device = device.ok_or(Reject::UnknownKey)?;
        let sent_at = header.sent_at.as_micros();
        let (stream_id, epoch) = match &opened.body {
            Body::Data(frame) => (frame.stream, frame.epoch),
            Body::Tombstone(t) => (t.stream, t.epoch),
            Body::Heartbeat(h) => (h.stream, h.epoch),
            // `open` with `FromDevice` never returns collector frames.
            Body::Ack(_) | Body::Nak(_) => return Err(Reject::UnexpectedKind),
        };
        let stream = StreamKey { device, stream: stream_id, epoch };
        let slot = match self.slots.get_mut(&stream) {
            Some(slot) => slot,
            None => {
                // A replay must not cost a lookup in the caller's log or evict anyone.
                if let Some(guard) = self.replay.get(&header.key_id) {
                    guard.check(header.epoch, sent_at)?;
                }
                self.admit_stream(now, stream, header.key_id, &header, store)?;
                self.slots.get_mut(&stream).ok_or(Reject::TooManyStreams)?
            }
        };
        // Looked up once: checked now, updated only once the frame is accepted.
        let guard = self.replay.get_mut(&header.key_id);
        if let Some(guard) = &guard {
            guard.check(header.epoch, sent_at)?;
        }
        slot.key_id = header.key_id;
        slot.last_active = now;
        let receiver = &mut slot.receiver;
        let before = receiver.stats();
        let delivery = match opened.body {
            Body::Data(frame) => {
                let mut new = Vec::new();
                receiver.handle_data(now, &header, frame.range(), |r| new.push(r))?;
                Delivery::Events { frame, new }
            }
            Body::Tombstone(tombstone) => {
                let mut new = Vec::new();
                receiver.handle_tombstone(now, &header, tombstone.range, |r| new.push(r))?;
                Delivery::Tombstone { new, reason: tombstone.reason }
            }
            Body::Heartbeat(heartbeat) => {
                let mut unrecoverable = Vec::new();
                receiver.handle_heartbeat(now, &header, &heartbeat, |r| unrecoverable.push(r));
                Delivery::Heartbeat { heartbeat, unrecoverable }
            }
            Body::Ack(_) | Body::Nak(_) => return Err(Reject::UnexpectedKind),
        };
        let after = receiver.stats();
        self.stats.events_new += after.events_new - before.events_new;
        self.stats.events_duplicate += after.events_duplicate - before.events_duplicate;
        self.stats.tombstoned += after.tombstoned - before.tombstoned;
        self.stats.unrecoverable += after.unrecoverable - before.unrecoverable;
        if !slot.dirty && receiver.state() != receiver.durable_state() {
            slot.dirty = true;
            self.dirty.insert(stream);
        }
        slot.reschedule(stream, &mut self.timers);
        match guard {
            Some(guard) => guard.accept(header.epoch, sent_at),
            None => {
                let window_micros = u64::try_from(self.config.replay_window.as_micros()).unwrap_or(u64::MAX);
                let mut guard = ReplayGuard::new(window_micros);
                guard.accept(header.epoch, sent_at);
                self.replay.insert(header.key_id, guard);
            }
        }
        Ok(Received { stream, header, delivery })
    }

    /// Snapshots of every receiver with admitted but uncommitted state. Commit each with the
    /// events it covers, then call [`Self::handle_durable`] with the same snapshot.
    pub fn uncommitted(&self) -> Vec<(StreamKey, DedupState<RECEIVER_RANGES>)> {
        self.dirty
            .iter()
            .filter_map(|key| self.slots.get(key).map(|slot| (*key, slot.receiver.state().clone())))
            .collect()
    }

    /// The snapshot `state` of `stream` is committed: ACKs may now cover it.
    pub fn handle_durable(&mut self, now: Instant, stream: StreamKey, state: &DedupState<RECEIVER_RANGES>) {
        if let Some(slot) = self.slots.get_mut(&stream) {
            slot.receiver.handle_durable(now, state);
            if slot.receiver.state() == slot.receiver.durable_state() {
                self.dirty.remove(&stream);
                slot.dirty = false;
            }
            slot.reschedule(stream, &mut self.timers);
        }
    }

    /// The commit of the uncommitted state failed and may still have reached the log (a
    /// storage error: after a failed fsync the written data is unknown): every receiver with
    /// uncommitted state leaves memory, and its stream's next frame restores what the log
    /// holds through the caller's [`StreamStore`]. Rolling back to the state last known
    /// durable would admit again what the log may already hold.
    pub fn forget_uncommitted(&mut self) {
        let dirty = core::mem::take(&mut self.dirty);
        for stream in dirty {
            if let Some(slot) = self.slots.remove(&stream) {
                if let Some(deadline) = slot.deadline {
                    self.timers.remove(&(deadline, stream));
                }
                self.forget_device_slot(stream.device);
                self.stats.streams_evicted += 1;
            }
        }
    }

    /// The commit of the uncommitted state failed (disk full, log at its bound): every
    /// receiver forgets what it admitted since its last durable state, so the retransmissions
    /// the devices will send are admitted again instead of being taken for duplicates.
    pub fn rollback_uncommitted(&mut self) {
        let dirty = core::mem::take(&mut self.dirty);
        for stream in dirty {
            let seed = receiver_seed(self.config.seed, &stream);
            if let Some(slot) = self.slots.get_mut(&stream) {
                let durable = slot.receiver.durable_state().clone();
                slot.receiver =
                    Receiver::restore(self.config.receiver.clone(), stream.stream, stream.epoch, seed, durable);
                slot.dirty = false;
                slot.reschedule(stream, &mut self.timers);
            }
        }
    }

    /// Installs a new keyring (keys added or revoked). Frames already admitted stay admitted.
    pub fn replace_keyring(&mut self, keyring: K) {
        self.keyring = keyring;
        self.sealers.clear();
    }

    pub fn keyring(&self) -> &K {
        &self.keyring
    }

    /// For callers without a separate commit step (tests, the simulator's in-memory log):
    /// everything admitted is durable now.
    pub fn commit_all(&mut self, now: Instant) {
        for (stream, state) in self.uncommitted() {
            self.handle_durable(now, stream, &state);
        }
    }

    fn reschedule(&mut self, stream: StreamKey) {
        if let Some(slot) = self.slots.get_mut(&stream) {
            slot.reschedule(stream, &mut self.timers);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Writes the next due ACK or NAK into `buf`; call until `None`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(&(at, stream)) = self.timers.first() {
            if at > now {
                return None;
            }
            let Some(slot) = self.slots.get_mut(&stream) else {
                // A receiver that left memory takes its timer with it; never spin on one left.
                self.timers.remove(&(at, stream));
                continue;
            };
            let control = slot.receiver.poll_transmit(now);
            self.reschedule(stream);
            let Some(control) = control else { continue };
            let slot = self.slots.get(&stream)?;
            let key_id = slot.key_id;
            let Some((device, key)) = self.keyring.key(key_id) else { continue };
            let epoch = self.config.epoch;
            let sealer = self.sealers.entry(key_id).or_insert_with(|| Sealer::new(key_id, key.clone(), epoch));
            let frame = match &control {
                Control::Ack(ack) => ControlRef::Ack(ack),
                Control::Nak(nak) => ControlRef::Nak(nak),
            };
            // A buffer too small for an ACK is the caller's bug; the receiver will ask again.
            let Ok(len) = seal_control(sealer, now, frame, buf) else { continue };
            match control {
                Control::Ack(_) => self.stats.acks_sent += 1,
                Control::Nak(_) => self.stats.naks_sent += 1,
            }
            return Some(Transmit { device, len });
        }
        None
    }
}
