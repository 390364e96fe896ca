//! A simulated device's buffer: the protocol's in-memory backlog, or the agent's real
//! outbox on a [`SimDisk`], reacting to storage errors the way the agent's driver does
//! (reload after a failed write, release records written out every second).

use crate::disk::{SimDisk, SimStore};
use driftlog_agent::outbox::{Outbox, OutboxConfig, OutboxError, OutboxStats, StreamBacklog};
use driftlog_protocol::sender::{Item, MemoryBacklog, OwnedEvent};
use driftlog_protocol::wire::DataWriter;
use driftlog_protocol::{Backlog, Epoch, Position, Seq, SeqRange, SplitMix64, StreamId};

/// The one stream each simulated device sends.
const STREAM: StreamId = 0;

/// What an input was told about one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Accepted at this position: it must reach the collector or be covered by a tombstone.
    Ok(Position),
    /// Refused before it got a sequence number (`block`, or the agent is down).
    Refused,
    /// The write failed: the input was told so, but the event may still be on disk at this
    /// position (a failed fsync leaves the data unknown).
    Failed(Position),
}

/// A disk-backed buffer: the agent's outbox and the disk under it, across crashes.
#[derive(Debug)]
pub struct DiskBuffer {
    pub disk: SimDisk,
    config: OutboxConfig,
    /// `None` while the agent is down (its outbox would not open).
    outbox: Option<Outbox<SimStore>>,
    /// Counters of earlier boots.
    past: OutboxStats,
    rng: SplitMix64,
    /// The epoch of the last boot that opened the outbox.
    epoch: Epoch,
}

#[derive(Debug)]
pub enum DeviceBuffer {
    Memory(MemoryBacklog),
    Disk(Box<DiskBuffer>),
}

/// The buffer as the sender sees it, for one call.
#[derive(Debug)]
pub enum BufferRef<'a> {
    Memory(&'a mut MemoryBacklog),
    Disk(StreamBacklog<'a, SimStore>),
}

impl DiskBuffer {
    /// Starts the agent on `disk`; `None` if the outbox does not open.
    pub fn new(disk: SimDisk, config: OutboxConfig, seed: u64) -> DiskBuffer {
        let mut buffer = DiskBuffer {
            disk,
            config,
            outbox: None,
            past: OutboxStats::default(),
            rng: SplitMix64::new(seed),
            epoch: 0,
        };
        buffer.start();
        buffer
    }

    /// Opens the outbox (a new boot epoch); false if it would not open.
    pub fn start(&mut self) -> bool {
        if let Some(outbox) = self.outbox.take() {
            add_stats(&mut self.past, &outbox.stats());
        }
        match Outbox::open_store(self.disk.store(), self.config.clone(), self.rng.next_u64()) {
            Ok(outbox) => {
                self.epoch = outbox.epoch();
                self.outbox = Some(outbox);
                true
            }
            Err(_) => false,
        }
    }

    /// Every boot's counters.
    pub fn stats(&self) -> OutboxStats {
        let mut stats = self.past;
        if let Some(outbox) = &self.outbox {
            add_stats(&mut stats, &outbox.stats());
        }
        stats
    }

    pub fn outbox(&self) -> Option<&Outbox<SimStore>> {
        self.outbox.as_ref()
    }

    pub fn configured_max_bytes(&self) -> u64 {
        self.config.max_bytes
    }

    /// The driver's reaction to a failed write: reload the outbox from disk.
    fn recover(&mut self) {
        if let Some(outbox) = &mut self.outbox {
            // A failure here leaves the outbox as `load` left it, as in the driver.
            let _ = outbox.recover_from_storage_error();
        }
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

impl DeviceBuffer {
    /// The epoch events are written into now.
    pub fn epoch(&self) -> Epoch {
        match self {
            DeviceBuffer::Memory(backlog) => backlog.head().epoch,
            DeviceBuffer::Disk(disk) => disk.epoch,
        }
    }

    /// False while the agent is down.
    pub fn is_up(&self) -> bool {
        match self {
            DeviceBuffer::Memory(_) => true,
            DeviceBuffer::Disk(disk) => disk.outbox.is_some(),
        }
    }

    /// The sender's view; `None` while the agent is down.
    pub fn backlog(&mut self) -> Option<BufferRef<'_>> {
        match self {
            DeviceBuffer::Memory(backlog) => Some(BufferRef::Memory(backlog)),
            DeviceBuffer::Disk(disk) => disk.outbox.as_mut().map(|outbox| BufferRef::Disk(outbox.backlog(STREAM))),
        }
    }

    /// One event from an input, committed as the driver commits (one durable append).
    pub fn push(&mut self, event: OwnedEvent) -> Pushed {
        match self {
            DeviceBuffer::Memory(backlog) => Pushed::Ok(backlog.push(event)),
            DeviceBuffer::Disk(disk) => {
                let Some(outbox) = &mut disk.outbox else { return Pushed::Refused };
                let position = Position::new(outbox.epoch(), outbox.next_seq(STREAM));
                match outbox.append_owned(STREAM, std::slice::from_ref(&event)) {
                    Ok(appended) if appended.accepted == 1 => {
                        Pushed::Ok(Position::new(position.epoch, appended.first_seq))
                    }
                    Ok(_) => Pushed::Refused,
                    Err(OutboxError::Storage(_)) => {
                        disk.recover();
                        Pushed::Failed(position)
                    }
                    Err(_) => Pushed::Failed(position),
                }
            }
        }
    }

    /// After an ACK could not be recorded: the driver reloads the outbox.
    pub fn recover(&mut self) {
        if let DeviceBuffer::Disk(disk) = self {
            disk.recover();
        }
    }

    /// What the driver does every second: write release records out (errors ignored).
    pub fn tick(&mut self) {
        if let DeviceBuffer::Disk(disk) = self
            && let Some(outbox) = &mut disk.outbox
        {
            let _ = outbox.write_pending_releases(false);
        }
    }

    /// True when nothing is held: every event acknowledged, every tombstone delivered.
    pub fn is_drained(&mut self) -> bool {
        match self.backlog() {
            Some(backlog) => backlog.tail() == backlog.head(),
            None => false,
        }
    }

    /// What is held, from where to where and what lies at the tail, for a report.
    pub fn describe_held(&mut self) -> String {
        let Some(mut backlog) = self.backlog() else { return "down".into() };
        let (tail, head) = (backlog.tail(), backlog.head());
        let first = backlog.first_at_or_after(tail, head);
        format!("from {tail:?} to {head:?}, first {first:?}")
    }
}

impl Backlog for BufferRef<'_> {
    type Error = OutboxError;

    fn head(&self) -> Position {
        match self {
            BufferRef::Memory(backlog) => backlog.head(),
            BufferRef::Disk(backlog) => backlog.head(),
        }
    }

    fn tail(&self) -> Position {
        match self {
            BufferRef::Memory(backlog) => backlog.tail(),
            BufferRef::Disk(backlog) => backlog.tail(),
        }
    }

    fn first_at_or_after(&mut self, from: Position, until: Position) -> Result<Option<(Position, Item)>, OutboxError> {
        match self {
            BufferRef::Memory(backlog) => backlog.first_at_or_after(from, until).map_err(|never| match never {}),
            BufferRef::Disk(backlog) => backlog.first_at_or_after(from, until),
        }
    }

    fn fill(&mut self, from: Position, end: Seq, writer: &mut DataWriter<'_>) -> Result<(), OutboxError> {
        match self {
            BufferRef::Memory(backlog) => backlog.fill(from, end, writer).map_err(|never| match never {}),
            BufferRef::Disk(backlog) => backlog.fill(from, end, writer),
        }
    }

    fn release(&mut self, epoch: Epoch, range: SeqRange) -> Result<(), OutboxError> {
        match self {
            BufferRef::Memory(backlog) => backlog.release(epoch, range).map_err(|never| match never {}),
            BufferRef::Disk(backlog) => backlog.release(epoch, range),
        }
    }
}
