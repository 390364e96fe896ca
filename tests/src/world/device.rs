//! The device side of the [`World`]: inputs, reboots and power cuts, the sender pumped over
//! the device's buffer, frames from the collector.

use super::{Action, CheckedBacklog, World, fnv};
use crate::buffer::{DeviceBuffer, Pushed};
use driftlog_agent::outbox::OutboxError;
use driftlog_protocol::sender::{OwnedEvent, OwnedPayload, SendError};
use driftlog_protocol::wire::{Body, Direction, ReplayGuard, Sealer, open};
use driftlog_protocol::{Backlog, ClockQuality, Instant, Sender};

use super::stats::sum_stats;
use super::{FRAMES, MAX_DATAGRAM_BYTES};

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

    pub(super) fn reboot(&mut self, index: usize) {
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
    pub(super) fn restart(&mut self, index: usize) {
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
    pub(super) fn check_bounds(&mut self, index: usize) {
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
    pub(super) fn pump_device(&mut self, index: usize) {
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
                self.schedule(at, Action::ToCollector { from: index, bytes: bytes.clone() });
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

    pub(super) fn device_receive(&mut self, index: usize, bytes: &[u8]) {
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
