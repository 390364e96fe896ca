//! The device side of the [`World`]: inputs, reboots and power cuts, frames to and from
//! the collector. A device is either the protocol alone (a [`Sender`] over an in-memory
//! backlog) or the real agent ([`AgentNode`]: its core over the outbox on a simulated disk).

use super::{Action, CheckedBacklog, FRAMES, MAX_DATAGRAM_BYTES, World, fnv};
use crate::agent_node::{AgentNode, STREAM, Submitted};
use driftlog_agent::agent_core::{NotAccepted, Received};
use driftlog_protocol::sender::{MemoryBacklog, OwnedEvent, OwnedPayload, SenderStats};
use driftlog_protocol::wire::{Body, Direction, MacKey, ReplayGuard, Sealer, open};
use driftlog_protocol::{Backlog, ClockQuality, Instant, KeyId, Sender, SenderConfig, WallTime};

/// The protocol alone: what the agent's core does, minus the outbox and the group commit.
pub(super) struct MemoryNode {
    pub sender: Sender<FRAMES>,
    pub backlog: MemoryBacklog,
    pub sealer: Sealer,
    pub collector_replay: ReplayGuard<2, 64>,
    /// Sender counters of earlier boots (a reboot starts a fresh sender).
    pub past_stats: SenderStats,
}

pub(super) enum Node {
    Memory(Box<MemoryNode>),
    Agent(Box<AgentNode>),
}

impl MemoryNode {
    pub(super) fn new(config: &SenderConfig, backlog: MemoryBacklog, key_id: KeyId, key: &MacKey) -> MemoryNode {
        let epoch = backlog.head().epoch;
        MemoryNode {
            sender: Sender::new(config.clone(), &backlog),
            backlog,
            sealer: Sealer::new(key_id, key.clone(), epoch),
            collector_replay: ReplayGuard::new(60_000_000),
            past_stats: SenderStats::default(),
        }
    }
}

impl Node {
    pub(super) fn is_drained(&mut self) -> bool {
        match self {
            Node::Memory(node) => node.backlog.tail() == node.backlog.head(),
            Node::Agent(node) => node.is_drained(),
        }
    }

    pub(super) fn describe_held(&mut self) -> String {
        match self {
            Node::Memory(node) => format!("from {:?} to {:?}", node.backlog.tail(), node.backlog.head()),
            Node::Agent(node) => node.describe_held(),
        }
    }

    /// Sender counters over every boot.
    pub(super) fn sender_stats(&self) -> SenderStats {
        match self {
            Node::Memory(node) => super::stats::sum_stats(&node.past_stats, &node.sender.stats()),
            Node::Agent(node) => node.sender_stats(),
        }
    }
}

impl World {
    pub(super) fn device_now(&self, index: usize) -> Instant {
        Instant::from_micros(self.devices[index].clock.mono(self.now))
    }

    pub(super) fn generate(&mut self, index: usize) {
        let now = self.now;
        let mono = self.device_now(index);
        let value = self.rng.next_u64() as f64;
        let device = &mut self.devices[index];
        let mut event = OwnedEvent::gauge(mono, "sensor.temperature", value);
        if let OwnedPayload::Gauge { tags, .. } = &mut event.payload {
            tags.push(("room".into(), format!("r{}", index % 3)));
        }
        let event = event.with_wall(device.clock.wall(now), ClockQuality::Unsynchronized);
        device.generated += 1;
        let device_id = device.id;
        match &mut device.node {
            Node::Memory(node) => {
                let position = node.backlog.push(event);
                self.checker.enqueue(device_id, position.epoch, position.seq, now, value, mono.as_micros());
            }
            Node::Agent(node) => match node.core_mut() {
                Some(core) => {
                    let submitted = Submitted { at: now, value, mono: mono.as_micros() };
                    core.handle_submission(mono, STREAM, vec![event], submitted);
                }
                // The agent is down: the input's connection is refused.
                None => self.refused_pushes += 1,
            },
        }
        let scenario = &self.scenario.devices[index];
        if self.devices[index].generated < scenario.events {
            let interval = scenario.interval_micros;
            let gap = interval / 2 + self.rng.below_inclusive(interval);
            self.schedule(now + gap.max(1), Action::Generate(index));
        }
        self.pump_device(index);
    }

    /// The agent's answers to its inputs, as the inputs were told them.
    fn take_answers(&mut self, index: usize) {
        let device = &mut self.devices[index];
        let Node::Agent(node) = &mut device.node else { return };
        let Some(core) = node.core_mut() else { return };
        while let Some((submitted, answer)) = core.poll_reply() {
            let Submitted { at, value, mono } = submitted;
            match answer {
                Ok(accepted) => self.checker.enqueue(device.id, accepted.epoch, accepted.first_seq, at, value, mono),
                // The write failed: the input was told so, but the event may still be on
                // disk at this position (a failed fsync leaves the data unknown).
                Err(NotAccepted::Failed { epoch, first_seq, .. }) => {
                    self.failed_pushes += 1;
                    self.checker.attempt(device.id, epoch, first_seq, at, value, mono);
                }
                Err(NotAccepted::Full) => self.refused_pushes += 1,
            }
        }
    }

    pub(super) fn reboot(&mut self, index: usize) {
        match &mut self.devices[index].node {
            Node::Memory(node) => {
                let epoch = node.backlog.head().epoch + 1;
                node.backlog.start_epoch(epoch);
            }
            Node::Agent(node) => node.power_cut(),
        }
        self.restart(index);
    }

    /// RAM is gone: the sender's state and the replay window restart; the buffer is on disk.
    pub(super) fn restart(&mut self, index: usize) {
        let now = self.now;
        let device = &mut self.devices[index];
        device.clock.boot_at = now;
        let mono = Instant::from_micros(device.clock.mono(now));
        let epoch = match &mut device.node {
            Node::Memory(node) => {
                node.past_stats = super::stats::sum_stats(&node.past_stats, &node.sender.stats());
                let epoch = node.backlog.head().epoch;
                node.sender = Sender::new(device.config.clone(), &node.backlog);
                node.sealer = Sealer::new(device.key_id, device.key.clone(), epoch);
                node.collector_replay = ReplayGuard::new(60_000_000);
                epoch
            }
            Node::Agent(node) => {
                if !node.start(mono) {
                    // The outbox would not open (a full disk, a failing fsync): the agent
                    // exits and its supervisor starts it again a little later.
                    self.schedule(now + 100_000, Action::Restart(index));
                    return;
                }
                node.epoch()
            }
        };
        self.trace = fnv(self.trace, epoch);
        self.devices[index].wake_at = None;
        self.pump_device(index);
    }

    /// The buffer's bound: events for the in-memory backlog, bytes for the outbox.
    pub(super) fn check_bounds(&mut self, index: usize) {
        let device = &self.devices[index];
        let violation = match &device.node {
            Node::Memory(node) => {
                let capacity = self.scenario.devices[index].backlog_capacity_events;
                let held = node.backlog.held_events();
                (held > capacity).then(|| format!("device {} holds {held} events, bound {capacity}", device.id))
            }
            Node::Agent(node) => node.core().and_then(|core| {
                let outbox = core.outbox();
                let (held, bound) = (outbox.held_bytes(), outbox.max_bytes());
                (held > bound || bound > node.configured_max_bytes())
                    .then(|| format!("device {} outbox holds {held} bytes, bound {bound}", device.id))
            }),
        };
        if let Some(violation) = violation {
            self.checker.violation(violation);
        }
    }

    /// A device timer fired: the agent's core runs what is due (group commit,
    /// housekeeping, the sender's timers); the bare sender its timers.
    pub(super) fn device_wake(&mut self, index: usize) {
        let now = self.device_now(index);
        match &mut self.devices[index].node {
            Node::Memory(node) => node.sender.handle_timeout(now),
            Node::Agent(node) => {
                if let Some(core) = node.core_mut() {
                    core.handle_timeout(now);
                }
            }
        }
        self.pump_device(index);
    }

    /// Answers the inputs, sends whatever the device has, checks the bounds, then arms the
    /// device's timer.
    pub(super) fn pump_device(&mut self, index: usize) {
        self.take_answers(index);
        let now_true = self.now;
        let now = self.device_now(index);
        let wall =
            WallTime { unix_micros: self.devices[index].clock.wall(now_true), quality: ClockQuality::Unsynchronized };
        let mut buf = [0u8; MAX_DATAGRAM_BYTES];
        let mut outgoing = Vec::new();
        let World { devices, checker, .. } = self;
        let device = &mut devices[index];
        let (stats, deadline) = match &mut device.node {
            Node::Memory(node) => {
                let mut backlog =
                    CheckedBacklog { inner: &mut node.backlog, checker: &mut *checker, device: device.id };
                // Bounded: each transmit consumes window or backlog; the cap guards a bug.
                for _ in 0..10_000 {
                    match node.sender.poll_transmit(now, &mut backlog, &mut node.sealer, &mut buf) {
                        Ok(Some(transmit)) => outgoing.push(buf[..transmit.len].to_vec()),
                        Ok(None) => break,
                        Err(error) => {
                            checker.violation(format!("device {}: sender failed: {error}", device.id));
                            break;
                        }
                    }
                }
                (node.sender.stats(), node.sender.poll_timeout())
            }
            Node::Agent(node) => {
                let Some(core) = node.core_mut() else { return };
                for _ in 0..10_000 {
                    match core.poll_transmit(now, wall, &mut buf) {
                        Some(len) => outgoing.push(buf[..len].to_vec()),
                        None => break,
                    }
                }
                if core.stats().encode_errors > 0 {
                    checker.violation(format!("device {}: a frame could not be encoded", device.id));
                }
                let stats = core.sender_stats(STREAM).unwrap_or_default();
                (stats, Some(core.poll_timeout()))
            }
        };
        if stats.in_flight_frames > FRAMES as u64 || stats.in_flight_bytes > device.config.max_in_flight_bytes as u64 {
            checker.violation(format!("device {}: in flight {stats:?} beyond its bounds", device.id));
        }
        for bytes in outgoing {
            let arrivals: Vec<u64> = self.devices[index].uplink.transmit(now_true, bytes.len()).collect();
            for at in arrivals {
                self.schedule(at, Action::ToCollector { from: index, bytes: bytes.clone() });
            }
        }
        self.check_bounds(index);
        if let Some(deadline) = deadline {
            let device = &self.devices[index];
            let at = device.clock.true_time_of(deadline.as_micros()).max(now_true + 1);
            if device.wake_at.is_none_or(|current| at < current || current < now_true) {
                self.devices[index].wake_at = Some(at);
                self.schedule(at, Action::DeviceWake(index));
            }
        }
    }

    pub(super) fn device_receive(&mut self, index: usize, bytes: &[u8]) {
        let now = self.device_now(index);
        let World { devices, checker, .. } = self;
        let device = &mut devices[index];
        match &mut device.node {
            Node::Memory(node) => {
                let (key, key_id) = (&device.key, device.key_id);
                let Ok(opened) =
                    open(bytes, Direction::FromCollector, MAX_DATAGRAM_BYTES, |id| (id == key_id).then_some(key))
                else {
                    checker.violation(format!("device {}: collector frame rejected", device.id));
                    return;
                };
                let header = opened.header;
                if node.collector_replay.check(header.epoch, header.sent_at.as_micros()).is_err() {
                    // A duplicated datagram: dropped, exactly as a real device would.
                    return;
                }
                node.collector_replay.accept(header.epoch, header.sent_at.as_micros());
                let mut backlog =
                    CheckedBacklog { inner: &mut node.backlog, checker: &mut *checker, device: device.id };
                match opened.body {
                    Body::Ack(ack) => {
                        if let Err(error) = node.sender.handle_ack(now, &header, &ack, &mut backlog) {
                            checker.violation(format!("device {}: ack failed: {error}", device.id));
                        }
                    }
                    Body::Nak(nak) => node.sender.handle_nak(now, &nak, &backlog),
                    other => checker.violation(format!("device {}: unexpected frame {other:?}", device.id)),
                }
            }
            Node::Agent(node) => {
                // Powered off: the datagram is lost.
                let Some(core) = node.core_mut() else { return };
                match core.handle_datagram(now, bytes) {
                    // Every range the agent frees must be committed at the collector.
                    Received::Ack { released, .. } => {
                        for (epoch, range) in released {
                            checker.release(device.id, epoch, range);
                        }
                    }
                    Received::Nak { .. } | Received::Replayed => {}
                    Received::Rejected(reason) => {
                        checker.violation(format!("device {}: collector frame rejected: {reason}", device.id))
                    }
                    Received::Unexpected => {
                        checker.violation(format!("device {}: unexpected frame from the collector", device.id))
                    }
                }
            }
        }
        self.pump_device(index);
    }
}
