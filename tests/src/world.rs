//! The simulated world: devices, links and the collector in virtual time.

use crate::buffer::{BufferRef, DeviceBuffer, DiskBuffer, Pushed};
use crate::checker::Checker;
use crate::clock::SimClock;
use crate::disk::{DiskStats, SimDisk};
use crate::link::{LinkStats, SimLink};
use crate::scenario::{Scenario, Storage};
use driftlog_agent::outbox::{OutboxConfig, OutboxError, OutboxStats};
use driftlog_protocol::endpoint::{Delivery, Endpoint, EndpointConfig};
use driftlog_protocol::sender::{Item, MemoryBacklog, OwnedEvent, OwnedPayload, SendError, SenderStats};
use driftlog_protocol::wire::{Body, DataWriter, Direction, DropReason, MacKey, ReplayGuard, Sealer, open};
use driftlog_protocol::{
    Backlog, ClockQuality, DeviceId, Epoch, Instant, KeyId, Position, Sender, SenderConfig, Seq, SeqRange, SplitMix64,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

const MAX_DATAGRAM_BYTES: usize = 1_200;
/// Frames in flight per device; the checker asserts the sender never exceeds it.
const FRAMES: usize = 64;
/// How often the agent's driver writes release records out (its status interval).
const TICK_MICROS: u64 = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Generate(usize),
    Reboot(usize),
    /// An agent whose outbox would not open tries again.
    Restart(usize),
    DiskFull(usize),
    DiskRoom(usize),
    BitFlip(usize),
    /// The driver's once-a-second housekeeping (release records written out).
    Tick(usize),
    DeviceWake(usize),
    ToCollector {
        bytes: Vec<u8>,
    },
    ToDevice {
        index: usize,
        bytes: Vec<u8>,
    },
    CollectorWake,
    CollectorCommit,
}

struct Device {
    id: DeviceId,
    key_id: KeyId,
    key: MacKey,
    clock: SimClock,
    config: SenderConfig,
    sender: Sender<FRAMES>,
    backlog: DeviceBuffer,
    sealer: Sealer,
    collector_replay: ReplayGuard<2, 64>,
    uplink: SimLink,
    downlink: SimLink,
    generated: u64,
    wake_at: Option<u64>,
    /// Sender counters of earlier boots (a reboot starts a fresh sender).
    past_stats: SenderStats,
}

/// The result of a run that passed every checker.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub trace_hash: u64,
    /// True time when the last event was acknowledged.
    pub finished_at: u64,
    /// True time from the first enqueue to the last delivery.
    pub delivery_span_micros: u64,
    pub steps: u64,
    pub enqueued: u64,
    pub delivered: u64,
    pub tombstoned: u64,
    /// Delivery latencies (enqueue to delivery at the collector), µs, sorted.
    pub latencies_micros: Vec<u64>,
    /// `(enqueued_at, delivered_at)` per delivered event, in delivery order.
    pub deliveries: Vec<(u64, u64)>,
    pub round_trip_micros: u64,
    pub sender: SenderStats,
    pub uplink: LinkStats,
    pub downlink: LinkStats,
    pub rejected_frames: u64,
    /// Summed over the devices on a simulated disk (all zero without one).
    pub disk: DiskStats,
    pub outbox: OutboxStats,
    /// Events an input was told failed (a write error) or refused.
    pub failed_pushes: u64,
    pub refused_pushes: u64,
    /// Blocks found damaged as they were read to be sent.
    pub corrupt_reads: u64,
}

/// A run that broke an invariant: the seed reproduces it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub violations: Vec<String>,
    pub violation_count: u64,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "simulation seed {} broke {} invariant(s):", self.seed, self.violation_count)?;
        for violation in &self.violations {
            writeln!(f, "  - {violation}")?;
        }
        write!(f, "replay with: SIM_SEED={} cargo nextest run -p driftlog-tests", self.seed)
    }
}

impl std::error::Error for Failure {}

#[allow(missing_debug_implementations)] // Holds the whole simulation; its Debug output would be useless.
pub struct World {
    scenario: Scenario,
    now: u64,
    order: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Action)>>,
    devices: Vec<Device>,
    device_by_id: BTreeMap<DeviceId, usize>,
    endpoint: Endpoint<BTreeMap<KeyId, (DeviceId, MacKey)>>,
    commit_scheduled: bool,
    collector_wake_at: Option<u64>,
    checker: Checker,
    trace: u64,
    steps: u64,
    rng: SplitMix64,
    calm: bool,
    failed_pushes: u64,
    refused_pushes: u64,
    corrupt_reads: u64,
}

fn fnv(hash: u64, value: u64) -> u64 {
    let mut hash = hash;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01B3);
    }
    hash
}

/// The simulator's view of a device buffer: every `release` is checked against what the
/// collector committed, so a sender that frees too early fails the run.
struct CheckedBacklog<'a> {
    inner: BufferRef<'a>,
    checker: &'a mut Checker,
    device: DeviceId,
}

impl Backlog for CheckedBacklog<'_> {
    type Error = OutboxError;

    fn head(&self) -> Position {
        self.inner.head()
    }

    fn tail(&self) -> Position {
        self.inner.tail()
    }

    fn first_at_or_after(&mut self, from: Position, until: Position) -> Result<Option<(Position, Item)>, Self::Error> {
        self.inner.first_at_or_after(from, until)
    }

    fn fill(&mut self, from: Position, end: Seq, writer: &mut DataWriter<'_>) -> Result<(), Self::Error> {
        self.inner.fill(from, end, writer)
    }

    fn release(&mut self, epoch: Epoch, range: SeqRange) -> Result<(), Self::Error> {
        self.checker.release(self.device, epoch, range);
        self.inner.release(epoch, range)
    }
}

impl World {
    pub fn new(scenario: Scenario) -> World {
        let seed = scenario.seed;
        let mut rng = SplitMix64::new(seed);
        let mut keyring = BTreeMap::new();
        let mut devices = Vec::new();
        let mut device_by_id = BTreeMap::new();
        for (index, device) in scenario.devices.iter().enumerate() {
            let id = 1_000 + index as DeviceId;
            let key_id = 500 + index as KeyId;
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            let key = MacKey::new(&secret);
            keyring.insert(key_id, (id, key.clone()));
            let mut backlog = match &device.storage {
                Storage::Memory => {
                    DeviceBuffer::Memory(MemoryBacklog::new(1, device.backlog_capacity_events, device.drop_policy))
                }
                Storage::Disk(disk) => {
                    let sim_disk = SimDisk::new(rng.next_u64(), disk.faults);
                    let config = OutboxConfig { max_bytes: disk.max_bytes, policy: disk.policy };
                    DeviceBuffer::Disk(Box::new(DiskBuffer::new(sim_disk, config, rng.next_u64())))
                }
            };
            let epoch = backlog.epoch();
            let mut config = SenderConfig::new(0);
            config.max_datagram_bytes = MAX_DATAGRAM_BYTES;
            config.backlog_events_per_second = device.backlog_events_per_second;
            let sender = Sender::new(config.clone(), &backlog.backlog().expect("a fresh disk opens"));
            devices.push(Device {
                id,
                key_id,
                sealer: Sealer::new(key_id, key.clone(), epoch),
                key,
                clock: device.clock.clone(),
                config,
                sender,
                backlog,
                collector_replay: ReplayGuard::new(60_000_000),
                uplink: SimLink::new(device.uplink.clone(), rng.next_u64()),
                downlink: SimLink::new(device.downlink.clone(), rng.next_u64()),
                generated: 0,
                wake_at: None,
                past_stats: SenderStats::default(),
            });
            device_by_id.insert(id, index);
        }
        let mut endpoint_config = EndpointConfig::new(1, rng.next_u64());
        endpoint_config.max_datagram_bytes = MAX_DATAGRAM_BYTES;
        endpoint_config.max_streams = 64;
        let mut world = World {
            endpoint: Endpoint::new(endpoint_config, keyring),
            scenario,
            now: 0,
            order: 0,
            queue: BinaryHeap::new(),
            devices,
            device_by_id,
            commit_scheduled: false,
            collector_wake_at: None,
            checker: Checker::default(),
            trace: 0xCBF2_9CE4_8422_2325,
            steps: 0,
            rng,
            calm: false,
            failed_pushes: 0,
            refused_pushes: 0,
            corrupt_reads: 0,
        };
        for index in 0..world.devices.len() {
            let device = &world.scenario.devices[index];
            let (start, reboots) = (device.start_at, device.reboots.clone());
            world.schedule(start, Action::Generate(index));
            for at in reboots {
                world.schedule(at, Action::Reboot(index));
            }
            if let Storage::Disk(disk) = &world.scenario.devices[index].storage {
                let (full, bit_flips) = (disk.full.clone(), disk.bit_flips.clone());
                for (from, to) in full {
                    world.schedule(from, Action::DiskFull(index));
                    world.schedule(to, Action::DiskRoom(index));
                }
                for at in bit_flips {
                    world.schedule(at, Action::BitFlip(index));
                }
                world.schedule(start + TICK_MICROS, Action::Tick(index));
            }
        }
        world
    }

    fn schedule(&mut self, at: u64, action: Action) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, action)));
    }

    /// Runs to completion: every event generated, the network calm, everything acknowledged.
    pub fn run(mut self) -> Result<Outcome, Failure> {
        let generation_end = self
            .scenario
            .devices
            .iter()
            .map(|d| d.start_at + d.events * d.interval_micros * 3 / 2)
            .chain(self.scenario.devices.iter().flat_map(|d| [d.uplink.healed_at(), d.downlink.healed_at()]))
            .max()
            .unwrap_or(0);
        let deadline = generation_end + self.scenario.drain_limit_micros;
        let healed_at = self
            .scenario
            .devices
            .iter()
            .flat_map(|d| [d.uplink.healed_at(), d.downlink.healed_at()])
            .max()
            .unwrap_or(0);
        let mut converged = false;
        while let Some(Reverse((at, _, action))) = self.queue.pop() {
            if at > deadline {
                break;
            }
            self.now = at;
            self.steps += 1;
            self.trace = fnv(fnv(self.trace, at), action_tag(&action));
            self.step(action);
            if !self.calm && self.now >= healed_at && self.all_generated() {
                self.calm = true;
                for device in &mut self.devices {
                    device.uplink.calm_down();
                    device.downlink.calm_down();
                }
            }
            if self.calm && self.converged() {
                converged = true;
                break;
            }
        }
        if !converged {
            let pending: Vec<String> = self
                .devices
                .iter_mut()
                .filter_map(|d| {
                    (!d.backlog.is_drained()).then(|| format!("device {} holds {}", d.id, d.backlog.describe_held()))
                })
                .collect();
            self.checker.violation(format!("did not converge by t={}µs: {pending:?}", self.now));
        }
        let (mut dropped, mut disk, mut outbox) = (0, DiskStats::default(), OutboxStats::default());
        for device in &self.devices {
            match &device.backlog {
                DeviceBuffer::Memory(backlog) => dropped += backlog.stats().dropped,
                DeviceBuffer::Disk(buffer) => {
                    let stats = buffer.stats();
                    dropped += stats.dropped + stats.corrupt_events + stats.failed_append_events;
                    crate::buffer::add_stats(&mut outbox, &stats);
                    add_disk_stats(&mut disk, &buffer.disk.stats());
                }
            }
        }
        self.checker.check_storage_failures(
            outbox.corrupt_events + outbox.failed_append_events,
            disk.bit_flips + disk.failed_syncs + disk.out_of_space,
        );
        self.checker.finish(dropped);
        if self.checker.violation_count() > 0 {
            return Err(Failure {
                seed: self.scenario.seed,
                violations: self.checker.violations().to_vec(),
                violation_count: self.checker.violation_count(),
            });
        }
        let mut latencies = self.checker.latencies_micros().to_vec();
        latencies.sort_unstable();
        let mut sender = SenderStats::default();
        let (mut uplink, mut downlink) = (LinkStats::default(), LinkStats::default());
        for device in &self.devices {
            add_sender_stats(&mut sender, &device.past_stats);
            add_sender_stats(&mut sender, &device.sender.stats());
            add_link_stats(&mut uplink, &device.uplink.stats());
            add_link_stats(&mut downlink, &device.downlink.stats());
        }
        Ok(Outcome {
            seed: self.scenario.seed,
            trace_hash: self.trace,
            finished_at: self.now,
            delivery_span_micros: self.checker.delivery_span_micros(),
            steps: self.steps,
            enqueued: self.checker.enqueued_events(),
            delivered: self.checker.delivered_events(),
            tombstoned: self.checker.tombstoned_seqs(),
            latencies_micros: latencies,
            deliveries: self.checker.deliveries().to_vec(),
            round_trip_micros: self.scenario.round_trip_micros(0),
            sender,
            uplink,
            downlink,
            rejected_frames: self.endpoint.stats().rejects.total(),
            disk,
            outbox,
            failed_pushes: self.failed_pushes,
            refused_pushes: self.refused_pushes,
            corrupt_reads: self.corrupt_reads,
        })
    }

    fn all_generated(&self) -> bool {
        self.devices.iter().zip(&self.scenario.devices).all(|(d, s)| d.generated >= s.events)
    }

    fn converged(&mut self) -> bool {
        self.all_generated() && self.devices.iter_mut().all(|d| d.backlog.is_drained())
    }

    fn step(&mut self, action: Action) {
        match action {
            Action::Generate(index) => self.generate(index),
            Action::Reboot(index) => self.reboot(index),
            Action::Restart(index) => self.restart(index),
            Action::DiskFull(index) => {
                if let DeviceBuffer::Disk(buffer) = &self.devices[index].backlog {
                    buffer.disk.fill(self.rng.below_inclusive(16 * 1024));
                }
            }
            Action::DiskRoom(index) => {
                if let DeviceBuffer::Disk(buffer) = &self.devices[index].backlog {
                    buffer.disk.make_room();
                }
            }
            Action::BitFlip(index) => {
                if let DeviceBuffer::Disk(buffer) = &self.devices[index].backlog {
                    buffer.disk.flip_bit();
                }
            }
            Action::Tick(index) => {
                self.devices[index].backlog.tick();
                if !self.calm || !self.devices[index].backlog.is_drained() {
                    self.schedule(self.now + TICK_MICROS, Action::Tick(index));
                }
                self.check_bounds(index);
            }
            Action::DeviceWake(index) => {
                if self.devices[index].wake_at == Some(self.now) {
                    self.devices[index].wake_at = None;
                    let now = self.device_now(index);
                    self.devices[index].sender.handle_timeout(now);
                    self.pump_device(index);
                }
            }
            Action::ToCollector { bytes } => self.collector_receive(&bytes),
            Action::ToDevice { index, bytes } => self.device_receive(index, &bytes),
            Action::CollectorWake => {
                if self.collector_wake_at == Some(self.now) {
                    self.collector_wake_at = None;
                    self.pump_collector();
                }
            }
            Action::CollectorCommit => {
                self.commit_scheduled = false;
                self.checker.commit();
                self.endpoint.commit_all(Instant::from_micros(self.now));
                self.pump_collector();
            }
        }
    }

    fn device_now(&self, index: usize) -> Instant {
        Instant::from_micros(self.devices[index].clock.mono(self.now))
    }

    fn generate(&mut self, index: usize) {
        let now = self.now;
        let mono = self.device_now(index);
        let value = self.rng.next_u64() as f64;
        let device = &mut self.devices[index];
        let mut event = OwnedEvent::gauge(mono, "sensor.temperature", value);
        if let OwnedPayload::Gauge { tags, .. } = &mut event.payload {
            tags.push(("room".into(), format!("r{}", index % 3)));
        }
        let event = event.with_wall(device.clock.wall(now), ClockQuality::Unsynchronized);
        let pushed = device.backlog.push(event);
        device.generated += 1;
        let device_id = device.id;
        match pushed {
            Pushed::Ok(position) => {
                self.checker.enqueue(device_id, position.epoch, position.seq, now, value, mono.as_micros())
            }
            Pushed::Failed(position) => {
                self.failed_pushes += 1;
                self.checker.attempt(device_id, position.epoch, position.seq, now, value, mono.as_micros());
            }
            Pushed::Refused => self.refused_pushes += 1,
        }
        self.check_bounds(index);
        let scenario = &self.scenario.devices[index];
        if self.devices[index].generated < scenario.events {
            let interval = scenario.interval_micros;
            let gap = interval / 2 + self.rng.below_inclusive(interval);
            self.schedule(now + gap.max(1), Action::Generate(index));
        }
        self.pump_device(index);
    }

    fn reboot(&mut self, index: usize) {
        let device = &mut self.devices[index];
        match &mut device.backlog {
            DeviceBuffer::Memory(backlog) => {
                let epoch = backlog.head().epoch + 1;
                backlog.start_epoch(epoch);
            }
            // A power cut: what was not synced is torn or gone.
            DeviceBuffer::Disk(buffer) => buffer.disk.crash(),
        }
        self.restart(index);
    }

    /// RAM is gone: the sender's state and the replay window restart; the buffer is on disk.
    fn restart(&mut self, index: usize) {
        let now = self.now;
        let device = &mut self.devices[index];
        if let DeviceBuffer::Disk(buffer) = &mut device.backlog
            && !buffer.start()
        {
            // The outbox would not open (a full disk, a failing fsync): the agent exits and
            // its supervisor starts it again a little later.
            self.schedule(now + 100_000, Action::Restart(index));
            return;
        }
        device.past_stats = sum_stats(&device.past_stats, &device.sender.stats());
        device.clock.boot_at = now;
        let epoch = device.backlog.epoch();
        self.trace = fnv(self.trace, epoch);
        device.sender = Sender::new(device.config.clone(), &device.backlog.backlog().expect("up"));
        device.sealer = Sealer::new(device.key_id, device.key.clone(), epoch);
        device.collector_replay = ReplayGuard::new(60_000_000);
        device.wake_at = None;
        self.pump_device(index);
    }

    /// The buffer's bound: events for the in-memory backlog, bytes for the outbox.
    fn check_bounds(&mut self, index: usize) {
        let device = &self.devices[index];
        let violation = match &device.backlog {
            DeviceBuffer::Memory(backlog) => {
                let capacity = self.scenario.devices[index].backlog_capacity_events;
                let held = backlog.held_events();
                (held > capacity).then(|| format!("device {} holds {held} events, bound {capacity}", device.id))
            }
            DeviceBuffer::Disk(buffer) => buffer.outbox().and_then(|outbox| {
                let (held, bound) = (outbox.held_bytes(), outbox.max_bytes());
                (held > bound || bound > buffer.configured_max_bytes())
                    .then(|| format!("device {} outbox holds {held} bytes, bound {bound}", device.id))
            }),
        };
        if let Some(violation) = violation {
            self.checker.violation(violation);
        }
    }

    /// Sends whatever the device's sender has, then arms its timer.
    fn pump_device(&mut self, index: usize) {
        let now_true = self.now;
        let now = self.device_now(index);
        let mut buf = [0u8; MAX_DATAGRAM_BYTES];
        let mut outgoing = Vec::new();
        if !self.devices[index].backlog.is_up() {
            return;
        }
        {
            let World { devices, checker, corrupt_reads, .. } = self;
            let device = &mut devices[index];
            let inner = device.backlog.backlog().expect("up");
            let mut backlog = CheckedBacklog { inner, checker, device: device.id };
            // Bounded: each transmit consumes window or backlog; the cap guards a bug.
            for _ in 0..10_000 {
                match device.sender.poll_transmit(now, &mut backlog, &mut device.sealer, &mut buf) {
                    Ok(Some(transmit)) => outgoing.push(buf[..transmit.len].to_vec()),
                    Ok(None) => break,
                    // A damaged block, quarantined as it was read: the driver logs it and
                    // the next pass goes on past it.
                    Err(SendError::Backlog(OutboxError::Corrupt { .. })) => {
                        *corrupt_reads += 1;
                        break;
                    }
                    Err(SendError::Backlog(OutboxError::Storage(_))) if device.backlog.is_up() => break,
                    Err(error) => {
                        checker.violation(format!("device {}: sender failed: {error}", device.id));
                        break;
                    }
                }
            }
            let stats = device.sender.stats();
            if stats.in_flight_frames > FRAMES as u64
                || stats.in_flight_bytes > device.config.max_in_flight_bytes as u64
            {
                checker.violation(format!("device {}: in flight {stats:?} beyond its bounds", device.id));
            }
        }
        for bytes in outgoing {
            let arrivals: Vec<u64> = self.devices[index].uplink.transmit(now_true, bytes.len()).collect();
            for at in arrivals {
                self.schedule(at, Action::ToCollector { bytes: bytes.clone() });
            }
        }
        if let Some(deadline) = self.devices[index].sender.poll_timeout() {
            let device = &self.devices[index];
            let at = device.clock.true_time_of(deadline.as_micros()).max(now_true + 1);
            if device.wake_at.is_none_or(|current| at < current || current < now_true) {
                self.devices[index].wake_at = Some(at);
                self.schedule(at, Action::DeviceWake(index));
            }
        }
    }

    fn collector_receive(&mut self, bytes: &[u8]) {
        let now = Instant::from_micros(self.now);
        let Ok(received) = self.endpoint.handle_datagram(now, bytes) else {
            // Rejections are counted by the endpoint; the simulator sends nothing forged, so
            // the only expected reason is a duplicated datagram caught by the replay window.
            return;
        };
        let stream = received.stream;
        match &received.delivery {
            Delivery::Events { .. } => {
                for (seq, event) in received.new_events() {
                    self.checker.deliver(stream, seq, &event, self.now);
                    self.trace = fnv(self.trace, seq);
                }
            }
            Delivery::Tombstone { new, reason } => {
                for range in new {
                    self.checker.tombstone(stream, *range, false);
                    if *reason == DropReason::StorageFailure {
                        self.checker.storage_failure(range.len());
                    }
                }
            }
            Delivery::Heartbeat { unrecoverable, .. } => {
                for range in unrecoverable {
                    self.checker.tombstone(stream, *range, true);
                }
            }
        }
        if !self.commit_scheduled {
            self.commit_scheduled = true;
            let at = self.now + self.scenario.commit_interval_micros;
            self.schedule(at, Action::CollectorCommit);
        }
        self.pump_collector();
    }

    fn pump_collector(&mut self) {
        let now = Instant::from_micros(self.now);
        let mut buf = [0u8; MAX_DATAGRAM_BYTES];
        while let Some(transmit) = self.endpoint.poll_transmit(now, &mut buf) {
            let Some(&index) = self.device_by_id.get(&transmit.device) else { continue };
            let bytes = buf[..transmit.len].to_vec();
            let arrivals: Vec<u64> = self.devices[index].downlink.transmit(self.now, bytes.len()).collect();
            for at in arrivals {
                self.schedule(at, Action::ToDevice { index, bytes: bytes.clone() });
            }
        }
        if let Some(deadline) = self.endpoint.poll_timeout() {
            let at = deadline.as_micros().max(self.now + 1);
            if self.collector_wake_at.is_none_or(|current| at < current || current < self.now) {
                self.collector_wake_at = Some(at);
                self.schedule(at, Action::CollectorWake);
            }
        }
    }

    fn device_receive(&mut self, index: usize, bytes: &[u8]) {
        let now = self.device_now(index);
        if !self.devices[index].backlog.is_up() {
            return;
        }
        {
            let World { devices, checker, .. } = self;
            let device = &mut devices[index];
            let key = &device.key;
            let key_id = device.key_id;
            let Ok(opened) =
                open(bytes, Direction::FromCollector, MAX_DATAGRAM_BYTES, |id| (id == key_id).then_some(key))
            else {
                checker.violation(format!("device {}: collector frame rejected", device.id));
                return;
            };
            let header = opened.header;
            if device.collector_replay.check(header.epoch, header.sent_at.as_micros()).is_err() {
                // A duplicated datagram: dropped, exactly as a real device would.
                return;
            }
            device.collector_replay.accept(header.epoch, header.sent_at.as_micros());
            let inner = device.backlog.backlog().expect("up");
            let mut backlog = CheckedBacklog { inner, checker, device: device.id };
            match opened.body {
                Body::Ack(ack) => {
                    match device.sender.handle_ack(now, &header, &ack, &mut backlog) {
                        Ok(()) => {}
                        // The release could not be recorded: the driver reloads the outbox.
                        Err(SendError::Backlog(OutboxError::Storage(_))) => device.backlog.recover(),
                        Err(error) => checker.violation(format!("device {}: ack failed: {error}", device.id)),
                    }
                }
                Body::Nak(nak) => device.sender.handle_nak(now, &nak, &backlog),
                other => checker.violation(format!("device {}: unexpected frame {other:?}", device.id)),
            }
        }
        self.pump_device(index);
    }
}

fn action_tag(action: &Action) -> u64 {
    match action {
        Action::Generate(i) => 1 << 32 | *i as u64,
        Action::Reboot(i) => 2 << 32 | *i as u64,
        Action::Restart(i) => 8 << 32 | *i as u64,
        Action::DiskFull(i) => 9 << 32 | *i as u64,
        Action::DiskRoom(i) => 10 << 32 | *i as u64,
        Action::BitFlip(i) => 11 << 32 | *i as u64,
        Action::Tick(i) => 12 << 32 | *i as u64,
        Action::DeviceWake(i) => 3 << 32 | *i as u64,
        Action::ToCollector { bytes } => 4 << 32 | bytes.len() as u64,
        Action::ToDevice { index, bytes } => 5 << 32 | (*index as u64) << 16 | bytes.len() as u64,
        Action::CollectorWake => 6 << 32,
        Action::CollectorCommit => 7 << 32,
    }
}

fn add_sender_stats(total: &mut SenderStats, add: &SenderStats) {
    *total = sum_stats(total, add);
}

fn sum_stats(a: &SenderStats, b: &SenderStats) -> SenderStats {
    SenderStats {
        data_frames_sent: a.data_frames_sent + b.data_frames_sent,
        events_sent: a.events_sent + b.events_sent,
        events_retransmitted: a.events_retransmitted + b.events_retransmitted,
        backlog_events_sent: a.backlog_events_sent + b.backlog_events_sent,
        tombstone_frames_sent: a.tombstone_frames_sent + b.tombstone_frames_sent,
        heartbeats_sent: a.heartbeats_sent + b.heartbeats_sent,
        acks_received: a.acks_received + b.acks_received,
        naks_received: a.naks_received + b.naks_received,
        nak_ranges_ignored: a.nak_ranges_ignored + b.nak_ranges_ignored,
        timeouts: a.timeouts + b.timeouts,
        frames_declared_lost: a.frames_declared_lost + b.frames_declared_lost,
        reconnects: a.reconnects + b.reconnects,
        smoothed_rtt: a.smoothed_rtt.max(b.smoothed_rtt),
        smoothed_ack_wait: a.smoothed_ack_wait.max(b.smoothed_ack_wait),
        in_flight_frames: 0,
        in_flight_bytes: 0,
    }
}

fn add_link_stats(total: &mut LinkStats, add: &LinkStats) {
    total.sent += add.sent;
    total.lost += add.lost;
    total.partitioned += add.partitioned;
    total.duplicated += add.duplicated;
    total.bytes += add.bytes;
}

fn add_disk_stats(total: &mut DiskStats, add: &DiskStats) {
    total.writes += add.writes;
    total.syncs += add.syncs;
    total.failed_syncs += add.failed_syncs;
    total.writes_lost_by_failed_sync += add.writes_lost_by_failed_sync;
    total.out_of_space += add.out_of_space;
    total.crashes += add.crashes;
    total.torn_writes += add.torn_writes;
    total.lost_unsynced += add.lost_unsynced;
    total.resurrected += add.resurrected;
    total.bit_flips += add.bit_flips;
    total.crash_points.extend(add.crash_points.iter().copied());
}
