//! A simulated device running the real agent: [`AgentCore`] (group commit, senders, ACKs,
//! recovery from storage errors, housekeeping) over the real outbox on a [`SimDisk`],
//! across power cuts. Only the IO shell differs from `driftlog-agent run`: the world hands
//! datagrams and time in and carries datagrams and answers out.

use crate::disk::{SimDisk, SimStore};
use driftlog_agent::agent_core::{AgentCore, CoreConfig, DriverStats};
use driftlog_agent::outbox::{Outbox, OutboxConfig, OutboxStats};
use driftlog_protocol::sender::SenderStats;
use driftlog_protocol::{Backlog, Epoch, Instant, SplitMix64, StreamId};

/// The one stream each simulated device sends.
pub const STREAM: StreamId = 0;

/// What the world remembers about an event it submitted, to check it when answered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Submitted {
    /// True time of the submission.
    pub at: u64,
    pub value: f64,
    /// The event's device time, µs.
    pub mono: u64,
}

pub type Core = AgentCore<Submitted, SimStore>;

/// The agent and the disk under it.
#[derive(Debug)]
pub struct AgentNode {
    pub disk: SimDisk,
    outbox_config: OutboxConfig,
    core_config: CoreConfig,
    /// `None` while the agent is down (its outbox would not open, or the power is off).
    core: Option<Core>,
    /// Counters of earlier boots.
    past_outbox: OutboxStats,
    past_driver: DriverStats,
    past_sender: SenderStats,
    rng: SplitMix64,
    /// The epoch of the last boot that opened the outbox.
    epoch: Epoch,
}

impl AgentNode {
    /// Starts the agent on `disk`.
    pub fn new(
        disk: SimDisk,
        outbox_config: OutboxConfig,
        core_config: CoreConfig,
        seed: u64,
        now: Instant,
    ) -> AgentNode {
        let mut node = AgentNode {
            disk,
            outbox_config,
            core_config,
            core: None,
            past_outbox: OutboxStats::default(),
            past_driver: DriverStats::default(),
            past_sender: SenderStats::default(),
            rng: SplitMix64::new(seed),
            epoch: 0,
        };
        node.start(now);
        node
    }

    /// Opens the outbox (a new boot epoch) and starts the core; false if it would not open.
    pub fn start(&mut self, now: Instant) -> bool {
        self.stop();
        let opened = Outbox::open_store(self.disk.store(), self.outbox_config.clone(), self.rng.next_u64())
            .and_then(|outbox| AgentCore::new(self.core_config.clone(), outbox, now));
        match opened {
            Ok(core) => {
                self.epoch = core.outbox().epoch();
                self.core = Some(core);
                true
            }
            Err(_) => false,
        }
    }

    /// The power goes: RAM (the core, its pending submissions) is gone; what was not
    /// synced is torn or lost.
    pub fn power_cut(&mut self) {
        self.stop();
        self.disk.crash();
    }

    fn stop(&mut self) {
        if let Some(core) = self.core.take() {
            add_stats(&mut self.past_outbox, &core.outbox().stats());
            add_driver_stats(&mut self.past_driver, &core.stats());
            if let Some(sender) = core.sender_stats(STREAM) {
                self.past_sender = crate::world::sum_sender_stats(&self.past_sender, &sender);
            }
        }
    }

    pub fn core(&self) -> Option<&Core> {
        self.core.as_ref()
    }

    pub fn core_mut(&mut self) -> Option<&mut Core> {
        self.core.as_mut()
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn configured_max_bytes(&self) -> u64 {
        self.outbox_config.max_bytes
    }

    /// Every boot's outbox counters.
    pub fn outbox_stats(&self) -> OutboxStats {
        let mut stats = self.past_outbox;
        if let Some(core) = &self.core {
            add_stats(&mut stats, &core.outbox().stats());
        }
        stats
    }

    /// Every boot's driver counters.
    pub fn driver_stats(&self) -> DriverStats {
        let mut stats = self.past_driver;
        if let Some(core) = &self.core {
            add_driver_stats(&mut stats, &core.stats());
        }
        stats
    }

    /// Every boot's sender counters.
    pub fn sender_stats(&self) -> SenderStats {
        match self.core.as_ref().and_then(|core| core.sender_stats(STREAM)) {
            Some(current) => crate::world::sum_sender_stats(&self.past_sender, &current),
            None => self.past_sender,
        }
    }

    /// True when nothing is pending or held: every event answered, acknowledged or
    /// tombstoned and the tombstone delivered.
    pub fn is_drained(&mut self) -> bool {
        let Some(core) = &mut self.core else { return false };
        if core.pending_events() > 0 {
            return false;
        }
        let backlog = core.outbox_mut().backlog(STREAM);
        backlog.tail() == backlog.head()
    }

    /// What is held, from where to where and what lies at the tail, for a report.
    pub fn describe_held(&mut self) -> String {
        let Some(core) = &mut self.core else { return "down".into() };
        let pending = core.pending_events();
        let mut backlog = core.outbox_mut().backlog(STREAM);
        let (tail, head) = (backlog.tail(), backlog.head());
        let first = backlog.first_at_or_after(tail, head);
        format!("{pending} pending, held from {tail:?} to {head:?}, first {first:?}")
    }
}

/// Adds `add` to `total`, field by field.
pub fn add_stats(total: &mut OutboxStats, add: &OutboxStats) {
    total.appended += add.appended;
    total.dropped += add.dropped;
    total.refused += add.refused;
    total.released += add.released;
    total.commits += add.commits;
    total.storage_errors += add.storage_errors;
    total.corrupt_segments += add.corrupt_segments;
    total.corrupt_events += add.corrupt_events;
    total.tombstones_forgotten += add.tombstones_forgotten;
    total.failed_append_events += add.failed_append_events;
}

fn add_driver_stats(total: &mut DriverStats, add: &DriverStats) {
    total.datagrams_sent += add.datagrams_sent;
    total.send_errors += add.send_errors;
    total.datagrams_received += add.datagrams_received;
    total.datagrams_rejected += add.datagrams_rejected;
    total.commits += add.commits;
    total.corrupt_reads += add.corrupt_reads;
    total.read_errors += add.read_errors;
    total.encode_errors += add.encode_errors;
}
