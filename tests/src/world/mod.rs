//! The simulated world: devices, links and the collector in virtual time.

mod collector;
mod device;
mod stats;

pub use collector::CollectorStats;
use collector::SimCollector;

pub(crate) use stats::sum_stats as sum_sender_stats;
use stats::{add_disk_stats, add_link_stats, add_sender_stats};

use crate::agent_node::AgentNode;
use crate::checker::Checker;
use crate::clock::SimClock;
use crate::disk::{DiskStats, SimDisk};
use crate::link::{LinkStats, SimLink};
use crate::log_disk::SimLogDisk;
use crate::scenario::{Scenario, Storage};
use device::{MemoryNode, Node};
use driftlog_agent::agent_core::CoreConfig;
use driftlog_agent::outbox::{OutboxConfig, OutboxStats};
use driftlog_collector::config::CollectorConfig;
use driftlog_collector::keys::Keys;
use driftlog_protocol::sender::{Item, MemoryBacklog, SenderStats};
use driftlog_protocol::wire::{DataWriter, MacKey};
use driftlog_protocol::{Backlog, DeviceId, Epoch, Instant, KeyId, Position, SenderConfig, Seq, SeqRange, SplitMix64};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

const MAX_DATAGRAM_BYTES: usize = 1_200;
/// Frames in flight per device; the checker asserts the sender never exceeds it.
const FRAMES: usize = 64;
/// The agent's group commit in the simulator: a commit waits this long for company, or
/// starts at once with this many events pending (`agent.toml` defaults: 100 ms, 1024).
const FLUSH_INTERVAL: Duration = Duration::from_millis(2);
const FLUSH_MAX_EVENTS: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Generate(usize),
    Reboot(usize),
    /// An agent whose outbox would not open tries again.
    Restart(usize),
    DiskFull(usize),
    DiskRoom(usize),
    BitFlip(usize),
    DeviceWake(usize),
    ToCollector {
        from: usize,
        bytes: Vec<u8>,
    },
    ToDevice {
        index: usize,
        bytes: Vec<u8>,
    },
    CollectorWake,
    /// The simulated committer finished writing the core's commit.
    CommitDone,
    CollectorCrash,
    CollectorStart,
    CollectorDiskFull,
    CollectorDiskRoom,
}

struct Device {
    id: DeviceId,
    key_id: KeyId,
    key: MacKey,
    clock: SimClock,
    /// The sender's settings (the agent's core uses them for its one stream).
    config: SenderConfig,
    node: Node,
    uplink: SimLink,
    downlink: SimLink,
    generated: u64,
    wake_at: Option<u64>,
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
    pub collector: CollectorStats,
    /// The collector's log disk.
    pub log_disk: crate::log_disk::LogDiskStats,
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
    collector: SimCollector,
    checker: Checker,
    trace: u64,
    steps: u64,
    rng: SplitMix64,
    calm: bool,
    failed_pushes: u64,
    refused_pushes: u64,
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
    inner: &'a mut MemoryBacklog,
    checker: &'a mut Checker,
    device: DeviceId,
}

impl Backlog for CheckedBacklog<'_> {
    type Error = <MemoryBacklog as Backlog>::Error;

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
        let mut keys = Keys::default();
        let mut devices = Vec::new();
        let mut device_by_id = BTreeMap::new();
        for (index, device) in scenario.devices.iter().enumerate() {
            let id = 1_000 + index as DeviceId;
            let key_id = 500 + index as KeyId;
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            let key = MacKey::new(&secret);
            keys.insert(key_id, id, &secret);
            let mut config = SenderConfig::new(0);
            config.max_datagram_bytes = MAX_DATAGRAM_BYTES;
            config.backlog_events_per_second = device.backlog_events_per_second;
            let node = match &device.storage {
                Storage::Memory => {
                    let backlog = MemoryBacklog::new(1, device.backlog_capacity_events, device.drop_policy);
                    Node::Memory(Box::new(MemoryNode::new(&config, backlog, key_id, &key)))
                }
                Storage::Disk(disk) => {
                    let sim_disk = SimDisk::new(rng.next_u64(), disk.faults);
                    let outbox = OutboxConfig { max_bytes: disk.max_bytes, policy: disk.policy };
                    let core = CoreConfig {
                        sender: config.clone(),
                        flush_interval: FLUSH_INTERVAL,
                        flush_max_events: FLUSH_MAX_EVENTS,
                        key_id,
                        key: key.clone(),
                    };
                    let boot = Instant::from_micros(device.clock.mono(0));
                    Node::Agent(Box::new(AgentNode::new(sim_disk, outbox, core, rng.next_u64(), boot)))
                }
            };
            devices.push(Device {
                id,
                key_id,
                key,
                clock: device.clock.clone(),
                config,
                node,
                uplink: SimLink::new(device.uplink.clone(), rng.next_u64()),
                downlink: SimLink::new(device.downlink.clone(), rng.next_u64()),
                generated: 0,
                wake_at: None,
            });
            device_by_id.insert(id, index);
        }
        let mut config = CollectorConfig::default();
        config.log.flush_interval_ms = (scenario.commit_interval_micros / 1_000).max(1);
        config.limits.max_datagram_bytes = MAX_DATAGRAM_BYTES;
        config.limits.max_streams = 64;
        let log_disk = SimLogDisk::new(rng.next_u64(), scenario.collector.sync_failure);
        let collector = SimCollector::new(config, keys, log_disk, scenario.collector.commit_latency_micros);
        let mut world = World {
            collector,
            scenario,
            now: 0,
            order: 0,
            queue: BinaryHeap::new(),
            devices,
            device_by_id,
            checker: Checker::default(),
            trace: 0xCBF2_9CE4_8422_2325,
            steps: 0,
            rng,
            calm: false,
            failed_pushes: 0,
            refused_pushes: 0,
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
            }
        }
        let collector = world.scenario.collector.clone();
        for at in collector.crashes {
            world.schedule(at, Action::CollectorCrash);
        }
        for (from, to) in collector.full {
            world.schedule(from, Action::CollectorDiskFull);
            world.schedule(to, Action::CollectorDiskRoom);
        }
        world.collector_start();
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
                    (!d.node.is_drained()).then(|| format!("device {} holds {}", d.id, d.node.describe_held()))
                })
                .collect();
            self.checker.violation(format!(
                "did not converge by t={}µs: {pending:?}; collector: {}",
                self.now,
                self.collector.describe()
            ));
        }
        let (mut dropped, mut disk, mut outbox) = (0, DiskStats::default(), OutboxStats::default());
        let mut corrupt_reads = 0;
        for device in &self.devices {
            match &device.node {
                Node::Memory(node) => dropped += node.backlog.stats().dropped,
                Node::Agent(node) => {
                    let stats = node.outbox_stats();
                    dropped += stats.dropped + stats.corrupt_events + stats.failed_append_events;
                    crate::agent_node::add_stats(&mut outbox, &stats);
                    add_disk_stats(&mut disk, &node.disk.stats());
                    corrupt_reads += node.driver_stats().corrupt_reads;
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
        let collector = self.collector.finish_stats();
        let mut latencies = self.checker.latencies_micros().to_vec();
        latencies.sort_unstable();
        let mut sender = SenderStats::default();
        let (mut uplink, mut downlink) = (LinkStats::default(), LinkStats::default());
        for device in &self.devices {
            add_sender_stats(&mut sender, &device.node.sender_stats());
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
            rejected_frames: collector.rejected_frames,
            collector,
            log_disk: self.collector.disk.stats(),
            disk,
            outbox,
            failed_pushes: self.failed_pushes,
            refused_pushes: self.refused_pushes,
            corrupt_reads,
        })
    }

    fn all_generated(&self) -> bool {
        self.devices.iter().zip(&self.scenario.devices).all(|(d, s)| d.generated >= s.events)
    }

    fn converged(&mut self) -> bool {
        self.all_generated() && self.devices.iter_mut().all(|d| d.node.is_drained())
    }

    fn step(&mut self, action: Action) {
        match action {
            Action::Generate(index) => self.generate(index),
            Action::Reboot(index) => self.reboot(index),
            Action::Restart(index) => self.restart(index),
            Action::DiskFull(index) => {
                if let Node::Agent(node) = &self.devices[index].node {
                    node.disk.fill(self.rng.below_inclusive(16 * 1024));
                }
            }
            Action::DiskRoom(index) => {
                if let Node::Agent(node) = &self.devices[index].node {
                    node.disk.make_room();
                }
            }
            Action::BitFlip(index) => {
                if let Node::Agent(node) = &self.devices[index].node {
                    node.disk.flip_bit();
                }
            }
            Action::DeviceWake(index) => {
                if self.devices[index].wake_at == Some(self.now) {
                    self.devices[index].wake_at = None;
                    self.device_wake(index);
                }
            }
            Action::ToCollector { from, bytes } => self.collector_receive(from, &bytes),
            Action::ToDevice { index, bytes } => self.device_receive(index, &bytes),
            Action::CollectorWake => {
                if self.collector.wake_at == Some(self.now) {
                    self.collector.wake_at = None;
                    self.collector_wake();
                }
            }
            Action::CommitDone => self.collector_commit_done(),
            Action::CollectorCrash => self.collector_crash(),
            Action::CollectorStart => {
                if !self.collector.is_up() {
                    self.collector_start();
                }
            }
            Action::CollectorDiskFull => self.collector.disk.fill(self.rng.below_inclusive(8 * 1024)),
            Action::CollectorDiskRoom => self.collector.disk.make_room(),
        }
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
        Action::DeviceWake(i) => 3 << 32 | *i as u64,
        Action::ToCollector { from, bytes } => 4 << 32 | (*from as u64) << 16 | bytes.len() as u64,
        Action::ToDevice { index, bytes } => 5 << 32 | (*index as u64) << 16 | bytes.len() as u64,
        Action::CollectorWake => 6 << 32,
        Action::CommitDone => 7 << 32,
        Action::CollectorCrash => 13 << 32,
        Action::CollectorStart => 14 << 32,
        Action::CollectorDiskFull => 15 << 32,
        Action::CollectorDiskRoom => 16 << 32,
    }
}
